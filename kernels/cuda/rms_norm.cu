/* rms_norm.cu: fused RMS norm over the rows of an (M, N) view and its backward on the GPU, with the
 * rules of kernels/cpu/rms_norm.c: per row rstd = 1 / sqrt(mean(x^2) + eps) (the sum of squares in
 * double, as on the CPU, then rstd rounded to the compute dtype), y = x * rstd * w, rstd written
 * per row in the compute dtype; backward grad_x = rstd * (d - xhat * mean(d * xhat)) with
 * d = g * w and xhat = x * rstd, grad_w = sum_rows g * xhat. One block per row (grid-stride over
 * rows); grad_w as per-chunk partial column sums then the chunks summed in order, so no atomics
 * and results do not depend on timing. f32 math for f32/bf16/f16, f64 for f64. */
#include "rowops.cuh"

struct rms_view {
    char *p;
    int dt;
    int64_t s0, s1; /* element strides of (row, column); s0 unused for 1-d views */
};

static rms_view rms_of(const rtc_view *v) {
    rms_view r;
    r.p = v ? v->data : NULL;
    r.dt = v ? v->dtype : RT_F32;
    r.s0 = v && v->ndim >= 2 ? v->strides[0] : 0;
    r.s1 = v ? v->strides[v->ndim - 1] : 0;
    return r;
}

template <typename A> __device__ __forceinline__ A rms_ld(const rms_view &v, int64_t i, int64_t j) {
    return rld<A>(v.p + (i * v.s0 + j * v.s1) * rtc_dtype_size(v.dt), v.dt);
}
template <typename A>
__device__ __forceinline__ void rms_st(const rms_view &v, int64_t i, int64_t j, A x) {
    rst<A>(v.p + (i * v.s0 + j * v.s1) * rtc_dtype_size(v.dt), v.dt, x);
}

template <typename A>
__global__ void k_rms_fwd(int64_t M, int64_t N, rms_view out, rms_view rstd, rms_view x, rms_view w,
                          double eps) {
    __shared__ double sm[32];
    for (int64_t r = blockIdx.x; r < M; r += gridDim.x) {
        double ss = 0;
        for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
            double v = rms_ld<A>(x, r, j);
            ss += v * v;
        }
        ss = block_sum(ss, sm);
        A rr = (A)(1.0 / sqrt(ss / (double)N + eps));
        for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
            A v = rms_ld<A>(x, r, j) * rr;
            if (w.p) v = v * rms_ld<A>(w, 0, j);
            rms_st<A>(out, r, j, v);
        }
        if (threadIdx.x == 0) rms_st<A>(rstd, 0, r, rr);
        __syncthreads();
    }
}

template <typename A>
__global__ void k_rms_bwd_x(int64_t M, int64_t N, rms_view gx, rms_view g, rms_view x,
                            rms_view rstd, rms_view w) {
    __shared__ double sm[32];
    for (int64_t r = blockIdx.x; r < M; r += gridDim.x) {
        double rr = rms_ld<A>(rstd, 0, r), s = 0;
        for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
            double d = rms_ld<A>(g, r, j);
            if (w.p) d *= (double)rms_ld<A>(w, 0, j);
            s += d * (double)rms_ld<A>(x, r, j) * rr;
        }
        s = block_sum(s, sm) / (double)N;
        for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
            double d = rms_ld<A>(g, r, j);
            if (w.p) d *= (double)rms_ld<A>(w, 0, j);
            rms_st<A>(gx, r, j, (A)(rr * (d - (double)rms_ld<A>(x, r, j) * rr * s)));
        }
        __syncthreads();
    }
}

/* part[chunk][j] = sum over the chunk's rows of g * x * rstd */
template <typename A>
__global__ void k_rms_bwd_w_part(int64_t M, int64_t N, int64_t per, rms_view g, rms_view x,
                                 rms_view rstd, A *part) {
    int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, c = blockIdx.y;
    if (j >= N) return;
    int64_t r0 = c * per, r1 = r0 + per < M ? r0 + per : M;
    A acc = 0;
    for (int64_t r = r0; r < r1; r++)
        acc += rms_ld<A>(g, r, j) * rms_ld<A>(x, r, j) * rms_ld<A>(rstd, 0, r);
    part[c * N + j] = acc;
}

template <typename A>
__global__ void k_rms_bwd_w_final(int64_t N, int64_t nchunks, const A *part, rms_view gw) {
    RTC_GRID_STRIDE(j, N) {
        A acc = 0;
        for (int64_t c = 0; c < nchunks; c++)
            acc += part[c * N + j];
        rms_st<A>(gw, 0, j, acc);
    }
}

static int rms_block(int64_t n) {
    int b = 32;
    while (b < 512 && b < n / 4)
        b *= 2;
    return b;
}

template <typename A>
static int rms_fwd_t(const rtc_view *out, const rtc_view *rstd, const rtc_view *x,
                     const rtc_view *weight, double eps) {
    int64_t M = x->shape[0], N = x->shape[1];
    int64_t cap = (int64_t)rtc_sm_count() * 16;
    unsigned grid = (unsigned)(M < cap ? M : cap);
    k_rms_fwd<A><<<grid, rms_block(N), 0, rtc_stream()>>>(M, N, rms_of(out), rms_of(rstd),
                                                          rms_of(x), rms_of(weight), eps);
    RTC_LAUNCH_CHECK("rms_norm");
    return RT_OK;
}

template <typename A>
static int rms_bwd_t(const rtc_view *grad_x, const rtc_view *grad_weight, const rtc_view *grad_out,
                     const rtc_view *x, const rtc_view *rstd, const rtc_view *weight) {
    int64_t M = x->shape[0], N = x->shape[1];
    cudaStream_t st = rtc_stream();
    if (grad_x) {
        int64_t cap = (int64_t)rtc_sm_count() * 16;
        unsigned grid = (unsigned)(M < cap ? M : cap);
        k_rms_bwd_x<A><<<grid, rms_block(N), 0, st>>>(M, N, rms_of(grad_x), rms_of(grad_out),
                                                      rms_of(x), rms_of(rstd), rms_of(weight));
        RTC_LAUNCH_CHECK("rms_norm backward");
    }
    if (grad_weight) {
        int64_t colblocks = (N + 255) / 256;
        int64_t want = ((int64_t)rtc_sm_count() * 8 + colblocks - 1) / colblocks;
        int64_t nchunks = (M + 31) / 32;
        if (nchunks > want) nchunks = want;
        if (nchunks < 1) nchunks = 1;
        if (nchunks > 65535) nchunks = 65535;
        int64_t per = (M + nchunks - 1) / nchunks;
        nchunks = (M + per - 1) / per;
        size_t bytes = (size_t)nchunks * (size_t)N * sizeof(A);
        void *buf;
        RTC_TRY(rtc_scratch_alloc(bytes, &buf));
        dim3 grid((unsigned)colblocks, (unsigned)nchunks);
        k_rms_bwd_w_part<A>
            <<<grid, 256, 0, st>>>(M, N, per, rms_of(grad_out), rms_of(x), rms_of(rstd), (A *)buf);
        k_rms_bwd_w_final<A><<<rtc_grid(N, RTC_BLOCK), RTC_BLOCK, 0, st>>>(
            N, nchunks, (const A *)buf, rms_of(grad_weight));
        rtc_scratch_free(buf, bytes);
        RTC_LAUNCH_CHECK("rms_norm backward");
    }
    return RT_OK;
}

extern "C" int rtc_rms_norm(const rtc_view *out, const rtc_view *rstd, const rtc_view *x,
                            const rtc_view *weight, double eps) {
    if (x->shape[0] == 0 || x->shape[1] == 0) return RT_OK;
    return x->dtype == RT_F64 ? rms_fwd_t<double>(out, rstd, x, weight, eps)
                              : rms_fwd_t<float>(out, rstd, x, weight, eps);
}

extern "C" int rtc_rms_norm_backward(const rtc_view *grad_x, const rtc_view *grad_weight,
                                     const rtc_view *grad_out, const rtc_view *x,
                                     const rtc_view *rstd, const rtc_view *weight) {
    if (x->shape[0] == 0 || x->shape[1] == 0) return RT_OK;
    return x->dtype == RT_F64 ? rms_bwd_t<double>(grad_x, grad_weight, grad_out, x, rstd, weight)
                              : rms_bwd_t<float>(grad_x, grad_weight, grad_out, x, rstd, weight);
}
