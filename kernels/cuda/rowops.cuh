/* rowops.cuh: what the row-wise kernels of kernels/cuda/ share (softmax.cu, cross_entropy.cu,
 * layer_norm.cu, reduce_indices.cu, index.cu, embedding.cu, dropout.cu, optim.cu): typed loads in
 * every float dtype (f64 included), 16-byte vectors, warp and block reductions, the geometry of
 * "rows along one dim" (kernels/cpu/dim_rows.h), the Philox generator of random.cu, and a device
 * word through which a kernel reports the first bad index it met (read back after the launch, so
 * the error is an RT_ERR_INDEX naming the index as the CPU backend's is, never a device assert). */
#ifndef RT_CUDA_ROWOPS_CUH
#define RT_CUDA_ROWOPS_CUH

#include "cuda_common.cuh"

#include <math.h>

/* ---- typed access ------------------------------------------------------------------------------
 */

/* accumulation type: f32 for f32/bf16/f16, f64 for f64 */
template <typename T> struct racc { typedef float type; };
template <> struct racc<double> { typedef double type; };

template <typename T> struct rio;
template <> struct rio<float> {
    __device__ static float ld(float x) { return x; }
    __device__ static float st(float x) { return x; }
};
template <> struct rio<double> {
    __device__ static double ld(double x) { return x; }
    __device__ static double st(double x) { return x; }
};
template <> struct rio<__nv_bfloat16> {
    __device__ static float ld(__nv_bfloat16 x) { return __bfloat162float(x); }
    __device__ static __nv_bfloat16 st(float x) { return __float2bfloat16_rn(x); }
};
template <> struct rio<__half> {
    __device__ static float ld(__half x) { return __half2float(x); }
    __device__ static __half st(float x) { return __float2half_rn(x); }
};

template <typename T, int N> struct alignas(16) rvec { T v[N]; };

/* Load / store in the accumulation type A from a dtype known only at run time. */
template <typename A> __device__ __forceinline__ A rld(const char *p, int dt) {
    if (sizeof(A) == 8) return (A)rtc_ldd(p, dt);
    return (A)rtc_ldf(p, dt);
}
template <typename A> __device__ __forceinline__ void rst(char *p, int dt, A v) {
    if (sizeof(A) == 8)
        rtc_std(p, dt, (double)v);
    else
        rtc_stf(p, dt, (float)v);
}

/* ---- reductions
 * ---------------------------------------------------------------------------------- */

template <typename A> __device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
    for (int s = 16; s > 0; s >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, s);
    return v;
}
/* max ignoring NaN (NaN propagates through the sums that follow, as on the CPU) */
template <typename A> __device__ __forceinline__ A nmax(A a, A b) {
    return b > a ? b : a;
}
template <typename A> __device__ __forceinline__ A warp_max(A v) {
#pragma unroll
    for (int s = 16; s > 0; s >>= 1)
        v = nmax(v, __shfl_xor_sync(0xffffffffu, v, s));
    return v;
}

/* Every thread of the block gets the block's sum / max. smem: 32 slots. blockDim a multiple of
 * 32. */
template <typename A> __device__ __forceinline__ A block_sum(A v, A *smem) {
    v = warp_sum(v);
    if (blockDim.x == 32) return v;
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) smem[wid] = v;
    __syncthreads();
    v = lane < nw ? smem[lane] : A(0);
    return warp_sum(v);
}
template <typename A> __device__ __forceinline__ A block_max(A v, A *smem) {
    v = warp_max(v);
    if (blockDim.x == 32) return v;
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) smem[wid] = v;
    __syncthreads();
    v = lane < nw ? smem[lane] : A(-INFINITY);
    return warp_max(v);
}

/* Online log-sum-exp state: running max m and sum s of exp(x - m). -inf entries add nothing; a
 * NaN makes s NaN (as the CPU's sum of exp does). */
template <typename A> struct lse_state { A m, s; };
template <typename A> __device__ __forceinline__ void lse_add(lse_state<A> &st, A x) {
    if (x > st.m) {
        st.s = (st.m == A(-INFINITY) ? A(0) : st.s * exp(st.m - x)) + A(1);
        st.m = x;
    } else if (x != A(-INFINITY)) {
        st.s += exp(x - st.m);
    }
}
template <typename A>
__device__ __forceinline__ lse_state<A> lse_merge(lse_state<A> a, lse_state<A> b) {
    A m = nmax(a.m, b.m);
    lse_state<A> r;
    r.m = m;
    A sa = a.m == m ? a.s : a.s * exp(a.m - m), sb = b.m == m ? b.s : b.s * exp(b.m - m);
    r.s = sa + sb;
    return r;
}
template <typename A> __device__ __forceinline__ lse_state<A> warp_lse(lse_state<A> st) {
#pragma unroll
    for (int s = 16; s > 0; s >>= 1) {
        lse_state<A> o;
        o.m = __shfl_xor_sync(0xffffffffu, st.m, s);
        o.s = __shfl_xor_sync(0xffffffffu, st.s, s);
        st = lse_merge(st, o);
    }
    return st;
}
template <typename A>
__device__ __forceinline__ lse_state<A> block_lse(lse_state<A> st, A *sm, A *ss) {
    st = warp_lse(st);
    if (blockDim.x == 32) return st;
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) {
        sm[wid] = st.m;
        ss[wid] = st.s;
    }
    __syncthreads();
    st.m = lane < nw ? sm[lane] : A(-INFINITY);
    st.s = lane < nw ? ss[lane] : A(0);
    return warp_lse(st);
}
/* log(sum exp) of the state: -inf for an all -inf row */
template <typename A> __device__ __forceinline__ A lse_value(lse_state<A> st) {
    return st.m + log(st.s);
}

/* ---- rows along one dim ------------------------------------------------------------------------
 */

/* The rows of up to 3 same-shaped views along dim (dim removed; size-1 dims dropped): row r's first
 * element sits at sum_k coord_k * st[v][k]. */
struct rtc_rows {
    int nd;
    int64_t nrows, n; /* rows and the length along dim */
    int64_t dst[3];   /* stride along dim per view */
    int64_t shape[RT_MAX_DIMS];
    int64_t st[3][RT_MAX_DIMS];
};

static inline rtc_rows rtc_rows_make(int nv, const rtc_view *const *v, int dim) {
    rtc_rows g;
    g.nd = 0;
    g.n = v[0]->shape[dim];
    g.nrows = g.n ? v[0]->numel / g.n : 0;
    for (int k = 0; k < nv; k++)
        g.dst[k] = v[k]->strides[dim];
    for (int d = 0; d < v[0]->ndim; d++) {
        if (d == dim || v[0]->shape[d] == 1) continue;
        /* merge with the previous outer dim when contiguous over it in every view */
        bool merge = g.nd > 0;
        for (int k = 0; k < nv && merge; k++)
            merge = g.st[k][g.nd - 1] == v[k]->strides[d] * v[0]->shape[d];
        if (merge) {
            g.shape[g.nd - 1] *= v[0]->shape[d];
            for (int k = 0; k < nv; k++)
                g.st[k][g.nd - 1] = v[k]->strides[d];
            continue;
        }
        g.shape[g.nd] = v[0]->shape[d];
        for (int k = 0; k < nv; k++)
            g.st[k][g.nd] = v[k]->strides[d];
        g.nd++;
    }
    return g;
}

/* Rows are equally spaced in every view (one outer dim, or none): row r at r * stride. */
static inline bool rtc_rows_flat(const rtc_rows &g, int nv, int64_t *rstride) {
    if (g.nd > 1) return false;
    for (int k = 0; k < nv; k++)
        rstride[k] = g.nd ? g.st[k][0] : 0;
    return true;
}

template <int NV>
__device__ __forceinline__ void rtc_row_offsets(const rtc_rows &g, int64_t r, int64_t *off) {
#pragma unroll
    for (int k = 0; k < NV; k++)
        off[k] = 0;
    for (int d = g.nd - 1; d >= 0; d--) {
        int64_t q = r / g.shape[d], c = r - q * g.shape[d];
        r = q;
#pragma unroll
        for (int k = 0; k < NV; k++)
            off[k] += c * g.st[k][d];
    }
}

/* ---- Philox4x32-10 (the same generator as random.cu and kernels/cpu/random.c) ------------------
 */

__device__ __forceinline__ void rtc_philox(uint64_t seed, uint64_t counter, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
#pragma unroll
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* ---- bad-index reports -------------------------------------------------------------------------
 */

#define RTC_NO_BAD 0xffffffffffffffffull

/* A device word set to RTC_NO_BAD; kernels atomicMin the position of a bad index into it. */
static inline int rtc_bad_alloc(const char *op, unsigned long long **dev) {
    *dev = NULL;
    int rc = rtc_scratch_alloc(sizeof(unsigned long long), (void **)dev);
    if (rc < 0) return rc;
    cudaError_t e = cudaMemsetAsync(*dev, 0xff, sizeof(unsigned long long), rtc_stream());
    if (e != cudaSuccess) {
        rtc_scratch_free(*dev, sizeof(unsigned long long));
        *dev = NULL;
        RTC_CUDA_TRY(op, e);
    }
    return RT_OK;
}

/* A page-locked host word per thread for the read-back (a pageable copy costs a staging pass);
 * NULL when page-locked memory cannot be had (the read-back then goes to pageable memory). */
static inline unsigned long long *rtc_bad_host(void) {
    static thread_local unsigned long long *h;
    static thread_local int tried;
    if (!h && !tried) {
        tried = 1;
        if (cudaHostAlloc((void **)&h, sizeof *h, cudaHostAllocPortable) != cudaSuccess) {
            cudaGetLastError();
            h = NULL;
        }
    }
    return h;
}

/* Read the word back (waits for the stream) and free it; *pos = RTC_NO_BAD when all were good. */
static inline int rtc_bad_read(const char *op, unsigned long long *dev, unsigned long long *pos) {
    *pos = RTC_NO_BAD;
    unsigned long long *h = rtc_bad_host();
    cudaError_t e =
        cudaMemcpyAsync(h ? h : pos, dev, sizeof *pos, cudaMemcpyDeviceToHost, rtc_stream());
    if (e == cudaSuccess) e = cudaStreamSynchronize(rtc_stream());
    if (e == cudaSuccess && h) *pos = *h;
    rtc_scratch_free(dev, sizeof(unsigned long long));
    RTC_CUDA_TRY(op, e);
    return RT_OK;
}

/* One integer element of a device tensor, read to the host (error messages only). */
static inline int64_t rtc_peek_index(const char *p, int dtype) {
    int64_t v = 0;
    if (dtype == RT_I32) {
        int32_t w = 0;
        if (cudaMemcpy(&w, p, 4, cudaMemcpyDeviceToHost) != cudaSuccess) cudaGetLastError();
        return w;
    }
    if (cudaMemcpy(&v, p, 8, cudaMemcpyDeviceToHost) != cudaSuccess) cudaGetLastError();
    return v;
}

__device__ __forceinline__ int64_t rtc_ld_index(const char *p, int dtype) {
    return dtype == RT_I32 ? (int64_t) * (const int32_t *)p : *(const int64_t *)p;
}

#define RTC_ERR(code, ...) rt_error_set((code), __FILE__, __LINE__, __VA_ARGS__)
#define RTC_TRY(expr)                                                                              \
    do {                                                                                           \
        int rtc_try_rc_ = (expr);                                                                  \
        if (rtc_try_rc_ < 0) return rtc_try_rc_;                                                   \
    } while (0)

#endif /* RT_CUDA_ROWOPS_CUH */
