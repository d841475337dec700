/* index.cu: the gathers along one dim on the GPU (runtime/ops_index.c; the rules of
 * kernels/cpu/index.c): index_select copies src[.., idx[j], ..] to out[.., j, ..]; index_add adds
 * src[.., j, ..] into out[.., idx[j], ..], duplicates summed in index order. Indices (1-d i64) are
 * checked first by a small kernel and the first bad one is reported as RT_ERR_INDEX with the CPU's
 * message (this waits for the check; nothing is written on error). index_add gives each thread one
 * position of the slice and walks the indices in order, so repeated indices never race and the
 * sums come in the CPU's order (no atomics). */
#include "rowops.cuh"

struct idx_geo {
    int nd, dim;
    int64_t shape[RT_MAX_DIMS]; /* the iterated view's shape (out for select, slice for add) */
    int64_t os[RT_MAX_DIMS], ss[RT_MAX_DIMS];
    int64_t ostd, sstd; /* strides along dim */
    int64_t n, istride;
};

__global__ void k_check_idx(const int64_t *idx, int64_t n, int64_t st, int64_t size,
                            unsigned long long *bad) {
    RTC_GRID_STRIDE(j, n) {
        int64_t i = idx[j * st];
        if (i < 0 || i >= size) atomicMin(bad, (unsigned long long)j);
    }
}

static int check_indices(const char *op, const rtc_view *idx, int64_t size, int dim) {
    int64_t n = idx->numel, st = idx->ndim ? idx->strides[0] : 0;
    if (n == 0) return RT_OK;
    unsigned long long *bad;
    RTC_TRY(rtc_bad_alloc(op, &bad));
    k_check_idx<<<rtc_grid(n, RTC_BLOCK), RTC_BLOCK, 0, rtc_stream()>>>((const int64_t *)idx->data,
                                                                        n, st, size, bad);
    cudaError_t le = cudaGetLastError();
    unsigned long long pos;
    int rc = rtc_bad_read(op, bad, &pos);
    RTC_CUDA_TRY(op, le);
    RTC_TRY(rc);
    if (pos == RTC_NO_BAD) return RT_OK;
    int64_t i = rtc_peek_index(idx->data + (int64_t)pos * st * 8, RT_I64);
    return RTC_ERR(RT_ERR_INDEX,
                   "%s: index %lld (at position %lld) is out of range for dimension %d of size "
                   "%lld",
                   op, (long long)i, (long long)pos, dim, (long long)size);
}

__device__ __forceinline__ void copy_elem(char *d, const char *s, int es) {
    switch (es) {
    case 1:
        *(uint8_t *)d = *(const uint8_t *)s;
        break;
    case 2:
        *(uint16_t *)d = *(const uint16_t *)s;
        break;
    case 4:
        *(uint32_t *)d = *(const uint32_t *)s;
        break;
    default:
        *(uint64_t *)d = *(const uint64_t *)s;
    }
}

/* thread per out element */
__global__ void k_index_select(idx_geo g, int64_t numel, char *o, const char *s, int es,
                               const int64_t *idx) {
    RTC_GRID_STRIDE(e, numel) {
        int64_t rem = e, oo = 0, so = 0;
        for (int d = g.nd - 1; d >= 0; d--) {
            int64_t q = rem / g.shape[d], c = rem - q * g.shape[d];
            rem = q;
            oo += c * g.os[d];
            so += (d == g.dim ? idx[c * g.istride] : c) * g.ss[d];
        }
        copy_elem(o + oo * es, s + so * es, es);
    }
}

extern "C" int rtc_index_select(const rtc_view *out, const rtc_view *src, int dim,
                                const rtc_view *idx) {
    RTC_TRY(check_indices("index_select", idx, src->shape[dim], dim));
    if (out->numel == 0) return RT_OK;
    if (out->dtype != src->dtype)
        return RTC_ERR(RT_ERR_DTYPE, "index_select: output dtype differs from the source's");
    idx_geo g;
    g.nd = out->ndim, g.dim = dim;
    for (int d = 0; d < out->ndim; d++) {
        g.shape[d] = out->shape[d];
        g.os[d] = out->strides[d];
        g.ss[d] = src->strides[d];
    }
    g.istride = idx->ndim ? idx->strides[0] : 0;
    k_index_select<<<rtc_grid(out->numel, RTC_BLOCK), RTC_BLOCK, 0, rtc_stream()>>>(
        g, out->numel, out->data, src->data, rtc_dtype_size(out->dtype),
        (const int64_t *)idx->data);
    RTC_LAUNCH_CHECK("index_select");
    return RT_OK;
}

/* thread per slice position p (out without dim); j = 0..n-1 in order */
__global__ void k_index_add(idx_geo g, int64_t npos, char *o, int dt, const char *s,
                            const int64_t *idx) {
    int es = rtc_dtype_size(dt);
    RTC_GRID_STRIDE(p, npos) {
        int64_t rem = p, oo = 0, so = 0;
        for (int d = g.nd - 1; d >= 0; d--) {
            if (d == g.dim) continue;
            int64_t q = rem / g.shape[d], c = rem - q * g.shape[d];
            rem = q;
            oo += c * g.os[d];
            so += c * g.ss[d];
        }
        for (int64_t j = 0; j < g.n; j++) {
            char *d = o + (oo + idx[j * g.istride] * g.ostd) * es;
            const char *sp = s + (so + j * g.sstd) * es;
            switch (dt) {
            case RT_F32:
                *(float *)d += *(const float *)sp;
                break;
            case RT_F64:
                *(double *)d += *(const double *)sp;
                break;
            case RT_I64:
                *(int64_t *)d += *(const int64_t *)sp;
                break;
            case RT_BF16:
            case RT_F16:
                rtc_std(d, dt, (double)(float)(rtc_ldd(d, dt) + rtc_ldd(sp, dt)));
                break;
            default:
                rtc_std(d, dt, rtc_ldd(d, dt) + rtc_ldd(sp, dt));
            }
        }
    }
}

extern "C" int rtc_index_add(const rtc_view *out, const rtc_view *src, int dim,
                             const rtc_view *idx) {
    RTC_TRY(check_indices("index_add", idx, out->shape[dim], dim));
    if (out->dtype != src->dtype)
        return RTC_ERR(RT_ERR_DTYPE, "index_add: source dtype differs from the output's");
    int64_t size = out->shape[dim];
    int64_t npos = size ? out->numel / size : 0;
    if (npos == 0 || idx->numel == 0) return RT_OK;
    idx_geo g;
    g.nd = out->ndim, g.dim = dim;
    for (int d = 0; d < out->ndim; d++) {
        g.shape[d] = out->shape[d];
        g.os[d] = out->strides[d];
        g.ss[d] = src->strides[d];
    }
    g.ostd = out->strides[dim], g.sstd = src->strides[dim];
    g.n = idx->numel;
    g.istride = idx->ndim ? idx->strides[0] : 0;
    k_index_add<<<rtc_grid(npos, RTC_BLOCK), RTC_BLOCK, 0, rtc_stream()>>>(
        g, npos, out->data, out->dtype, src->data, (const int64_t *)idx->data);
    RTC_LAUNCH_CHECK("index_add");
    return RT_OK;
}
