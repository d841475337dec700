/* reduce.c: CPU sum/mean/max/min over the dims where the output (keepdim form) has size 1.
 * Accumulates in double (so f32 sums of many elements stay accurate), stores in the output dtype.
 * Each output element is computed by one thread: results do not depend on the thread count. */
#include "cpu_kernels.h"

int rt_cpu_reduce(int op, const rt_kview *out, const rt_kview *a) {
    int nd = a->ndim;
    /* Split dims into kept (outer, one per output element) and reduced (inner). */
    int64_t kshape[RT_MAX_DIMS], kstride[RT_MAX_DIMS], rshape[RT_MAX_DIMS], rstride[RT_MAX_DIMS];
    int nk = 0, nr = 0;
    int64_t count = 1;
    for (int d = 0; d < nd; d++) {
        if (out->shape[d] == 1 && a->shape[d] != 1) {
            rshape[nr] = a->shape[d];
            rstride[nr++] = a->strides[d];
            count *= a->shape[d];
        } else if (a->shape[d] != 1 || out->shape[d] != 1) {
            kshape[nk] = a->shape[d];
            kstride[nk++] = a->strides[d];
        }
    }
    /* output strides for kept dims in the same order */
    int64_t ostride[RT_MAX_DIMS];
    for (int d = 0, k = 0; d < nd; d++)
        if (!(out->shape[d] == 1 && a->shape[d] != 1) && (a->shape[d] != 1 || out->shape[d] != 1))
            ostride[k++] = out->strides[d];
    int64_t nout = out->numel;
    size_t ea = rt_dtype_size(a->dtype), eo = rt_dtype_size(out->dtype);
    int ta = a->dtype;
    bool inner_contig = nr > 0 && rstride[nr - 1] == 1;
    /* integer inputs reduce exactly in int64 (sums promote to int64; max/min keep the dtype) */
    bool int_acc = !rt_dtype_is_float(ta) && op != RT_MEAN;
#pragma omp parallel for if (nout * count > RT_PARALLEL_GRAIN) schedule(static)
    for (int64_t o = 0; o < nout; o++) {
        int64_t rem = o, aoff = 0, ooff = 0;
        for (int k = nk - 1; k >= 0; k--) {
            int64_t i = rem % kshape[k];
            rem /= kshape[k];
            aoff += i * kstride[k];
            ooff += i * ostride[k];
        }
        double acc = op == RT_MAX ? -INFINITY : op == RT_MIN ? INFINITY : 0.0;
        int64_t iacc = op == RT_MAX ? INT64_MIN : op == RT_MIN ? INT64_MAX : 0;
        bool nan = false;
        int64_t inner = nr ? rshape[nr - 1] : 1, outer = count / (inner ? inner : 1);
        for (int64_t j = 0; j < outer && inner; j++) {
            int64_t rem2 = j, off = aoff;
            for (int k = nr - 2; k >= 0; k--) {
                int64_t i = rem2 % rshape[k];
                rem2 /= rshape[k];
                off += i * rstride[k];
            }
            const char *base = a->data + off * (int64_t)ea;
            int64_t rs = nr ? rstride[nr - 1] : 0;
            if (int_acc) {
                for (int64_t i = 0; i < inner; i++) {
                    const char *q = base + i * rs * (int64_t)ea;
                    int64_t x = ta == RT_I64   ? *(const int64_t *)q
                                : ta == RT_I32 ? *(const int32_t *)q
                                : ta == RT_U8  ? *(const uint8_t *)q
                                               : (*(const uint8_t *)q != 0);
                    if (op == RT_SUM)
                        iacc = (int64_t)((uint64_t)iacc + (uint64_t)x);
                    else if (op == RT_MAX ? x > iacc : x < iacc)
                        iacc = x;
                }
            } else if (ta == RT_F32 && inner_contig && (op == RT_SUM || op == RT_MEAN)) {
                const float *f = (const float *)base;
                double s = 0;
                for (int64_t i = 0; i < inner; i++)
                    s += f[i];
                acc += s;
            } else {
                for (int64_t i = 0; i < inner; i++) {
                    double x = rt_load(base + i * rs * (int64_t)ea, ta);
                    if (op == RT_SUM || op == RT_MEAN)
                        acc += x;
                    else if (x != x)
                        nan = true;
                    else if (op == RT_MAX ? x > acc : x < acc)
                        acc = x;
                }
            }
        }
        if (int_acc) {
            char *q = out->data + ooff * (int64_t)eo;
            if (out->dtype == RT_I64)
                *(int64_t *)q = iacc;
            else
                rt_store(q, out->dtype, (double)iacc); /* max/min of i32/u8/bool: fits */
            continue;
        }
        if (op == RT_MEAN) acc /= (double)count;
        if (nan) acc = NAN;
        rt_store(out->data + ooff * (int64_t)eo, out->dtype, acc);
    }
    return RT_OK;
}
