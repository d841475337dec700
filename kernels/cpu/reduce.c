/* reduce.c: CPU sum/mean/max/min over the dims where the output (keepdim form) has size 1.
 * Accumulates in double (so f32 sums of many elements stay accurate), stores in the output dtype.
 * Each output element is computed by one thread: results do not depend on the thread count. */
#include "cpu_kernels.h"

typedef struct reduce_job {
    const rt_kview *out, *a;
    int op, ta, nk, nr;
    int64_t kshape[RT_MAX_DIMS], kstride[RT_MAX_DIMS], ostride[RT_MAX_DIMS];
    int64_t rshape[RT_MAX_DIMS], rstride[RT_MAX_DIMS];
    int64_t count;
    size_t ea, eo;
    bool inner_contig, int_acc;
} reduce_job;

static inline int64_t load_int(const char *q, int ta) {
    return ta == RT_I64   ? *(const int64_t *)q
           : ta == RT_I32 ? *(const int32_t *)q
           : ta == RT_U8  ? *(const uint8_t *)q
                          : (*(const uint8_t *)q != 0);
}

/* Output elements [o0, o1): each is reduced entirely by the calling thread. */
static void reduce_range(void *ctx, int64_t o0, int64_t o1) {
    const reduce_job *j = ctx;
    const int op = j->op, ta = j->ta, nk = j->nk, nr = j->nr;
    const int64_t count = j->count, ea = (int64_t)j->ea, eo = (int64_t)j->eo;
    for (int64_t o = o0; o < o1; o++) {
        int64_t rem = o, aoff = 0, ooff = 0;
        for (int k = nk - 1; k >= 0; k--) {
            int64_t i = rem % j->kshape[k];
            rem /= j->kshape[k];
            aoff += i * j->kstride[k];
            ooff += i * j->ostride[k];
        }
        double acc = op == RT_MAX ? -INFINITY : op == RT_MIN ? INFINITY : 0.0;
        int64_t iacc = op == RT_MAX ? INT64_MIN : op == RT_MIN ? INT64_MAX : 0;
        bool nan = false;
        int64_t inner = nr ? j->rshape[nr - 1] : 1, outer = count / (inner ? inner : 1);
        int64_t rs = nr ? j->rstride[nr - 1] : 0;
        for (int64_t jj = 0; jj < outer && inner; jj++) {
            int64_t rem2 = jj, off = aoff;
            for (int k = nr - 2; k >= 0; k--) {
                int64_t i = rem2 % j->rshape[k];
                rem2 /= j->rshape[k];
                off += i * j->rstride[k];
            }
            const char *base = j->a->data + off * ea;
            if (j->int_acc) {
                for (int64_t i = 0; i < inner; i++) {
                    int64_t x = load_int(base + i * rs * ea, ta);
                    if (op == RT_SUM)
                        iacc = (int64_t)((uint64_t)iacc + (uint64_t)x);
                    else if (op == RT_MAX ? x > iacc : x < iacc)
                        iacc = x;
                }
            } else if (ta == RT_F32 && j->inner_contig && (op == RT_SUM || op == RT_MEAN)) {
                const float *f = (const float *)base;
                double s = 0;
                for (int64_t i = 0; i < inner; i++)
                    s += f[i];
                acc += s;
            } else {
                for (int64_t i = 0; i < inner; i++) {
                    double x = rt_load(base + i * rs * ea, ta);
                    if (op == RT_SUM || op == RT_MEAN)
                        acc += x;
                    else if (x != x)
                        nan = true;
                    else if (op == RT_MAX ? x > acc : x < acc)
                        acc = x;
                }
            }
        }
        char *q = j->out->data + ooff * eo;
        if (j->int_acc) {
            if (j->out->dtype == RT_I64)
                *(int64_t *)q = iacc;
            else
                rt_store(q, j->out->dtype, (double)iacc); /* max/min of i32/u8/bool: fits */
            continue;
        }
        if (op == RT_MEAN) acc /= (double)count;
        if (nan) acc = NAN;
        rt_store(q, j->out->dtype, acc);
    }
}

int rt_cpu_reduce(int op, const rt_kview *out, const rt_kview *a) {
    reduce_job j;
    int nd = a->ndim;
    j.out = out;
    j.a = a;
    j.op = op;
    j.ta = a->dtype;
    j.nk = j.nr = 0;
    j.count = 1;
    /* Split dims into kept (outer, one per output element) and reduced (inner). */
    for (int d = 0; d < nd; d++) {
        if (out->shape[d] == 1 && a->shape[d] != 1) {
            j.rshape[j.nr] = a->shape[d];
            j.rstride[j.nr++] = a->strides[d];
            j.count *= a->shape[d];
        } else if (a->shape[d] != 1 || out->shape[d] != 1) {
            j.kshape[j.nk] = a->shape[d];
            j.kstride[j.nk] = a->strides[d];
            j.ostride[j.nk++] = out->strides[d];
        }
    }
    j.ea = rt_dtype_size(a->dtype);
    j.eo = rt_dtype_size(out->dtype);
    j.inner_contig = j.nr > 0 && j.rstride[j.nr - 1] == 1;
    /* integer inputs reduce exactly in int64 (sums promote to int64; max/min keep the dtype) */
    j.int_acc = !rt_dtype_is_float(j.ta) && op != RT_MEAN;
    rt_parallel_for(out->numel, out->numel * j.count, reduce_range, &j);
    return RT_OK;
}
