/* reduce_indices.cu: max/min along one dim with the i64 index of the winner (max(dim), argmax) on
 * the GPU, with the rules of kernels/cpu/reduce_indices.c: the first occurrence wins ties, a NaN
 * wins over every number (the first NaN). Rows contiguous along dim go one warp per row (lanes
 * stride the row, then a (value, index) shuffle reduction that keeps the smaller index on ties);
 * other rows one thread per row, so neighbouring rows are neighbouring addresses. int64 compares as
 * integers (exact), everything else as double. */
#include "rowops.cuh"

#define RI_WARPS 8

/* true when candidate (v, i) beats the current best (b, bi) */
template <typename K>
__device__ __forceinline__ bool ri_better(bool is_max, K v, int64_t i, K b, int64_t bi) {
    bool vn = v != v, bn = b != b;
    if (vn || bn) return vn && (!bn || i < bi);
    if (v == b) return i < bi;
    return is_max ? v > b : v < b;
}

template <typename K> __device__ __forceinline__ K ri_load(const char *p, int dt) {
    if (sizeof(K) == 8 && dt == RT_I64) return (K) * (const int64_t *)p;
    return (K)rtc_ldd(p, dt);
}

template <typename K, bool WARP>
__global__ void k_reduce_idx(rtc_rows g, int is_max, const char *a, int ta, char *vals,
                             int64_t *idx) {
    int ea = rtc_dtype_size(ta);
    int lane = WARP ? (threadIdx.x & 31) : 0;
    int step = WARP ? 32 : 1;
    int64_t r0 = WARP ? (int64_t)blockIdx.x * RI_WARPS + (threadIdx.x >> 5)
                      : (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t rstep = WARP ? (int64_t)gridDim.x * RI_WARPS : (int64_t)gridDim.x * blockDim.x;
    int64_t st = g.dst[0];
    for (int64_t r = r0; r < g.nrows; r += rstep) {
        int64_t off[3];
        rtc_row_offsets<3>(g, r, off);
        const char *p = a + off[0] * ea;
        K best = 0;
        int64_t bi = -1;
        for (int64_t i = lane; i < g.n; i += step) {
            K v = ri_load<K>(p + i * st * ea, ta);
            if (bi < 0 || ri_better<K>(is_max, v, i, best, bi)) {
                best = v;
                bi = i;
            }
        }
        if (WARP) {
#pragma unroll
            for (int s = 16; s > 0; s >>= 1) {
                K ov = __shfl_xor_sync(0xffffffffu, best, s);
                int64_t oi = __shfl_xor_sync(0xffffffffu, bi, s);
                if (oi >= 0 && (bi < 0 || ri_better<K>(is_max, ov, oi, best, bi))) {
                    best = ov;
                    bi = oi;
                }
            }
        }
        if (lane == 0) {
            idx[off[1]] = bi;
            if (vals) {
                const char *src = p + bi * st * ea;
                char *dst = vals + off[2] * ea;
                for (int b = 0; b < ea; b++)
                    dst[b] = src[b];
            }
        }
    }
}

extern "C" int rtc_reduce_with_indices(int op, const rtc_view *values, const rtc_view *indices,
                                       const rtc_view *a, int dim) {
    if (op != RT_MAX && op != RT_MIN)
        return RTC_ERR(RT_ERR_INVALID, "reduce_with_indices: op must be max or min, got %d", op);
    if (a->numel == 0 || a->shape[dim] == 0) return RT_OK;
    if (values && values->dtype != a->dtype)
        return RTC_ERR(RT_ERR_DTYPE, "reduce_with_indices: values dtype differs from the input's");
    const rtc_view *v[3] = {a, indices, values ? values : indices};
    rtc_rows g = rtc_rows_make(3, v, dim);
    bool warp = g.dst[0] == 1 && g.n >= 32;
    cudaStream_t st = rtc_stream();
    int is_max = op == RT_MAX;
    char *vp = values ? values->data : NULL;
    int64_t *ip = (int64_t *)indices->data;
    bool i64 = a->dtype == RT_I64;
    if (warp) {
        int64_t nb = (g.nrows + RI_WARPS - 1) / RI_WARPS, cap = (int64_t)rtc_sm_count() * 64;
        unsigned grid = (unsigned)(nb < cap ? nb : cap);
        if (i64)
            k_reduce_idx<int64_t, true>
                <<<grid, 32 * RI_WARPS, 0, st>>>(g, is_max, a->data, a->dtype, vp, ip);
        else
            k_reduce_idx<double, true>
                <<<grid, 32 * RI_WARPS, 0, st>>>(g, is_max, a->data, a->dtype, vp, ip);
    } else {
        unsigned grid = rtc_grid(g.nrows, RTC_BLOCK);
        if (i64)
            k_reduce_idx<int64_t, false>
                <<<grid, RTC_BLOCK, 0, st>>>(g, is_max, a->data, a->dtype, vp, ip);
        else
            k_reduce_idx<double, false>
                <<<grid, RTC_BLOCK, 0, st>>>(g, is_max, a->data, a->dtype, vp, ip);
    }
    RTC_LAUNCH_CHECK(is_max ? "max (with indices)" : "min (with indices)");
    return RT_OK;
}
