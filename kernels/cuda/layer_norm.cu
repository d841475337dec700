/* layer_norm.cu: fused layer norm over the rows of a contiguous (M, N) view, and its backward, on
 * the GPU (the rules of kernels/cpu/layer_norm.c): two-pass mean and biased variance, rstd =
 * 1 / sqrt(var + eps), y = (x - mean) * rstd * w + b, mean and rstd written per row in the compute
 * dtype; backward grad_x = rstd * (d - mean(d) - xhat * mean(d * xhat)) with d = g * w, and
 * grad_w = sum_rows g * xhat, grad_b = sum_rows g.
 * Rows of at most 32 * 8 vectors (1024 f32, 2048 bf16/f16) go one warp per row with the row in
 * registers (x read once, y written once); longer or unaligned rows one block per row, re-reading
 * the row (from L2). grad_w / grad_b: per chunk of rows a partial sum per column, then the chunks
 * summed in order: no atomics, results independent of timing. f32 math for f32/bf16/f16, f64 for
 * f64. */
#include "rowops.cuh"

#define LN_WARPS 8

template <typename T> struct dtype_of;
template <> struct dtype_of<float> { static const int v = RT_F32; };
template <> struct dtype_of<double> { static const int v = RT_F64; };
template <> struct dtype_of<__nv_bfloat16> { static const int v = RT_BF16; };
template <> struct dtype_of<__half> { static const int v = RT_F16; };

struct ln_param {
    const char *p; /* NULL when absent */
    int dt;
};

/* V consecutive parameter values starting at column j, as A (1 / 0 when absent) */
template <typename T, typename A, int V>
__device__ __forceinline__ void ln_load_param(const ln_param &w, int64_t j, A absent, A *out) {
    if (!w.p) {
#pragma unroll
        for (int k = 0; k < V; k++)
            out[k] = absent;
    } else if (w.dt == dtype_of<T>::v && V > 1) {
        rvec<T, V> t = *(const rvec<T, V> *)((const T *)w.p + j);
#pragma unroll
        for (int k = 0; k < V; k++)
            out[k] = rio<T>::ld(t.v[k]);
    } else {
        int es = rtc_dtype_size(w.dt);
#pragma unroll
        for (int k = 0; k < V; k++)
            out[k] = rld<A>(w.p + (j + k) * es, w.dt);
    }
}

template <typename A> __device__ __forceinline__ A ln_rstd(A var, double eps) {
    return A(1) / sqrt(var + (A)eps);
}

/* ================================================================================================
 * forward
 * ============================================================================================== */

template <typename T, int IT>
__global__ void __launch_bounds__(32 * LN_WARPS)
    k_ln_warp(int64_t M, int64_t N, const T *__restrict__ x, T *__restrict__ y, char *mean,
              char *rstd, int sdt, int64_t ms, int64_t rs, ln_param w, ln_param b, double eps) {
    typedef typename racc<T>::type A;
    constexpr int V = 16 / sizeof(T);
    int lane = threadIdx.x & 31;
    int64_t r = (int64_t)blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    if (r >= M) return;
    const T *xr = x + r * N;
    T *yr = y + r * N;
    A v[IT][V];
    A s = 0;
#pragma unroll
    for (int it = 0; it < IT; it++) {
        int64_t j = ((int64_t)it * 32 + lane) * V;
        if (j < N) {
            rvec<T, V> t = *(const rvec<T, V> *)(xr + j);
#pragma unroll
            for (int k = 0; k < V; k++) {
                v[it][k] = rio<T>::ld(t.v[k]);
                s += v[it][k];
            }
        }
    }
    A mu = warp_sum(s) / (A)N;
    A q = 0;
#pragma unroll
    for (int it = 0; it < IT; it++) {
        int64_t j = ((int64_t)it * 32 + lane) * V;
        if (j < N) {
#pragma unroll
            for (int k = 0; k < V; k++) {
                A d = v[it][k] - mu;
                q += d * d;
            }
        }
    }
    A rr = ln_rstd(warp_sum(q) / (A)N, eps);
#pragma unroll
    for (int it = 0; it < IT; it++) {
        int64_t j = ((int64_t)it * 32 + lane) * V;
        if (j < N) {
            A wv[V], bv[V];
            ln_load_param<T, A, V>(w, j, A(1), wv);
            ln_load_param<T, A, V>(b, j, A(0), bv);
            rvec<T, V> t;
#pragma unroll
            for (int k = 0; k < V; k++) {
                A o = (v[it][k] - mu) * rr;
                if (w.p) o *= wv[k];
                if (b.p) o += bv[k];
                t.v[k] = rio<T>::st(o);
            }
            *(rvec<T, V> *)(yr + j) = t;
        }
    }
    if (lane == 0) {
        int es = rtc_dtype_size(sdt);
        rst<A>(mean + r * ms * es, sdt, mu);
        rst<A>(rstd + r * rs * es, sdt, rr);
    }
}

template <typename T>
__global__ void k_ln_gen(int64_t M, int64_t N, const T *__restrict__ x, int64_t xs0, int64_t xs1,
                         T *__restrict__ y, int64_t ys0, int64_t ys1, char *mean, char *rstd,
                         int sdt, int64_t ms, int64_t rs, ln_param w, int64_t ws, ln_param b,
                         int64_t bs, double eps) {
    typedef typename racc<T>::type A;
    __shared__ A sm[32];
    int ew = w.p ? rtc_dtype_size(w.dt) : 0, eb = b.p ? rtc_dtype_size(b.dt) : 0;
    for (int64_t r = blockIdx.x; r < M; r += gridDim.x) {
        const T *xr = x + r * xs0;
        T *yr = y + r * ys0;
        A s = 0;
        for (int64_t j = threadIdx.x; j < N; j += blockDim.x)
            s += rio<T>::ld(xr[j * xs1]);
        A mu = block_sum(s, sm) / (A)N;
        A q = 0;
        for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
            A d = rio<T>::ld(xr[j * xs1]) - mu;
            q += d * d;
        }
        A rr = ln_rstd(block_sum(q, sm) / (A)N, eps);
        for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
            A o = (rio<T>::ld(xr[j * xs1]) - mu) * rr;
            if (w.p) o *= rld<A>(w.p + j * ws * ew, w.dt);
            if (b.p) o += rld<A>(b.p + j * bs * eb, b.dt);
            yr[j * ys1] = rio<T>::st(o);
        }
        if (threadIdx.x == 0) {
            int es = rtc_dtype_size(sdt);
            rst<A>(mean + r * ms * es, sdt, mu);
            rst<A>(rstd + r * rs * es, sdt, rr);
        }
        __syncthreads();
    }
}

static int ln_block(int64_t n) {
    int b = 32;
    while (b < 1024 && b < n / 8)
        b *= 2;
    return b;
}

template <typename T>
static int ln_fwd_t(const rtc_view *out, const rtc_view *mean, const rtc_view *rstd,
                    const rtc_view *x, const rtc_view *weight, const rtc_view *bias, double eps) {
    int64_t M = x->shape[0], N = x->shape[1];
    if (M == 0 || N == 0) return RT_OK;
    constexpr int V = 16 / sizeof(T);
    ln_param w = {weight ? weight->data : NULL, weight ? weight->dtype : RT_F32};
    ln_param b = {bias ? bias->data : NULL, bias ? bias->dtype : RT_F32};
    bool params_ok = (!weight || (weight->strides[0] == 1 && rtc_aligned16(weight->data))) &&
                     (!bias || (bias->strides[0] == 1 && rtc_aligned16(bias->data)));
    bool vec = x->strides[1] == 1 && out->strides[1] == 1 && x->strides[0] == N &&
               out->strides[0] == N && N % V == 0 && N <= 32 * V * 8 && rtc_aligned16(x->data) &&
               rtc_aligned16(out->data) && params_ok;
    cudaStream_t st = rtc_stream();
    if (vec) {
        unsigned grid = (unsigned)((M + LN_WARPS - 1) / LN_WARPS);
        const T *xp = (const T *)x->data;
        T *yp = (T *)out->data;
        int64_t per = 32 * V, ms = mean->strides[0], rs = rstd->strides[0];
        int sdt = mean->dtype;
#define LN_LAUNCH(IT)                                                                              \
    k_ln_warp<T, IT><<<grid, 32 * LN_WARPS, 0, st>>>(M, N, xp, yp, mean->data, rstd->data, sdt,    \
                                                     ms, rs, w, b, eps)
        if (N <= per)
            LN_LAUNCH(1);
        else if (N <= 2 * per)
            LN_LAUNCH(2);
        else if (N <= 4 * per)
            LN_LAUNCH(4);
        else
            LN_LAUNCH(8);
#undef LN_LAUNCH
    } else {
        int64_t cap = (int64_t)rtc_sm_count() * 32;
        unsigned grid = (unsigned)(M < cap ? M : cap);
        k_ln_gen<T><<<grid, ln_block(N), 0, st>>>(
            M, N, (const T *)x->data, x->strides[0], x->strides[1], (T *)out->data, out->strides[0],
            out->strides[1], mean->data, rstd->data, mean->dtype, mean->strides[0],
            rstd->strides[0], w, weight ? weight->strides[0] : 0, b, bias ? bias->strides[0] : 0,
            eps);
    }
    RTC_LAUNCH_CHECK("layer_norm");
    return RT_OK;
}

extern "C" int rtc_layer_norm(const rtc_view *out, const rtc_view *mean, const rtc_view *rstd,
                              const rtc_view *x, const rtc_view *weight, const rtc_view *bias,
                              double eps) {
    if (out->dtype != x->dtype)
        return RTC_ERR(RT_ERR_DTYPE, "layer_norm: output dtype differs from the input's");
    switch (x->dtype) {
    case RT_F32:
        return ln_fwd_t<float>(out, mean, rstd, x, weight, bias, eps);
    case RT_BF16:
        return ln_fwd_t<__nv_bfloat16>(out, mean, rstd, x, weight, bias, eps);
    case RT_F16:
        return ln_fwd_t<__half>(out, mean, rstd, x, weight, bias, eps);
    case RT_F64:
        return ln_fwd_t<double>(out, mean, rstd, x, weight, bias, eps);
    }
    return RTC_ERR(RT_ERR_DTYPE, "layer_norm: no CUDA kernel for dtype %d", x->dtype);
}

/* ================================================================================================
 * backward
 * ============================================================================================== */

/* grad_x, one block (blockDim threads) per row; the row re-read for the second pass */
template <typename A>
__global__ void k_ln_bwd_x(int64_t M, int64_t N, char *gx, int tgx, int64_t gxs0, int64_t gxs1,
                           const char *go, int tgo, int64_t gos0, int64_t gos1, const char *x,
                           int tx, int64_t xs0, int64_t xs1, const char *mean, const char *rstd,
                           int sdt, int64_t ms, int64_t rs, ln_param w, int64_t ws) {
    __shared__ A sm[32];
    int egx = rtc_dtype_size(tgx), ego = rtc_dtype_size(tgo), ex = rtc_dtype_size(tx),
        es = rtc_dtype_size(sdt), ew = w.p ? rtc_dtype_size(w.dt) : 0;
    for (int64_t r = blockIdx.x; r < M; r += gridDim.x) {
        A mu = rld<A>(mean + r * ms * es, sdt), rr = rld<A>(rstd + r * rs * es, sdt);
        const char *xr = x + r * xs0 * ex, *gr = go + r * gos0 * ego;
        A sd = 0, sdx = 0;
        for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
            A d = rld<A>(gr + j * gos1 * ego, tgo);
            if (w.p) d *= rld<A>(w.p + j * ws * ew, w.dt);
            A xh = (rld<A>(xr + j * xs1 * ex, tx) - mu) * rr;
            sd += d;
            sdx += d * xh;
        }
        sd = block_sum(sd, sm) / (A)N;
        sdx = block_sum(sdx, sm) / (A)N;
        char *ir = gx + r * gxs0 * egx;
        for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
            A d = rld<A>(gr + j * gos1 * ego, tgo);
            if (w.p) d *= rld<A>(w.p + j * ws * ew, w.dt);
            A xh = (rld<A>(xr + j * xs1 * ex, tx) - mu) * rr;
            rst<A>(ir + j * gxs1 * egx, tgx, rr * (d - sd - xh * sdx));
        }
        __syncthreads();
    }
}

/* grad_x, one warp per contiguous row held in registers */
template <typename T, int IT>
__global__ void __launch_bounds__(32 * LN_WARPS)
    k_ln_bwd_x_warp(int64_t M, int64_t N, T *__restrict__ gx, const T *__restrict__ go,
                    const T *__restrict__ x, const char *mean, const char *rstd, int sdt,
                    int64_t ms, int64_t rs, ln_param w) {
    typedef typename racc<T>::type A;
    constexpr int V = 16 / sizeof(T);
    int lane = threadIdx.x & 31;
    int64_t r = (int64_t)blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    if (r >= M) return;
    int es = rtc_dtype_size(sdt);
    A mu = rld<A>(mean + r * ms * es, sdt), rr = rld<A>(rstd + r * rs * es, sdt);
    A dv[IT][V], xh[IT][V];
    A sd = 0, sdx = 0;
#pragma unroll
    for (int it = 0; it < IT; it++) {
        int64_t j = ((int64_t)it * 32 + lane) * V;
        if (j < N) {
            rvec<T, V> a = *(const rvec<T, V> *)(go + r * N + j);
            rvec<T, V> b = *(const rvec<T, V> *)(x + r * N + j);
            A wv[V];
            ln_load_param<T, A, V>(w, j, A(1), wv);
#pragma unroll
            for (int k = 0; k < V; k++) {
                A d = rio<T>::ld(a.v[k]);
                if (w.p) d *= wv[k];
                dv[it][k] = d;
                xh[it][k] = (rio<T>::ld(b.v[k]) - mu) * rr;
                sd += d;
                sdx += d * xh[it][k];
            }
        }
    }
    sd = warp_sum(sd) / (A)N;
    sdx = warp_sum(sdx) / (A)N;
#pragma unroll
    for (int it = 0; it < IT; it++) {
        int64_t j = ((int64_t)it * 32 + lane) * V;
        if (j < N) {
            rvec<T, V> t;
#pragma unroll
            for (int k = 0; k < V; k++)
                t.v[k] = rio<T>::st(rr * (dv[it][k] - sd - xh[it][k] * sdx));
            *(rvec<T, V> *)(gx + r * N + j) = t;
        }
    }
}

/* partial column sums over a chunk of rows: part_w[chunk][j], part_b[chunk][j] */
template <typename A>
__global__ void k_ln_bwd_wb_part(int64_t M, int64_t N, int64_t rows_per_chunk, const char *go,
                                 int tgo, int64_t gos0, int64_t gos1, const char *x, int tx,
                                 int64_t xs0, int64_t xs1, const char *mean, const char *rstd,
                                 int sdt, int64_t ms, int64_t rs, A *part_w, A *part_b) {
    __shared__ A sw[8][33], sb[8][33];
    int ego = rtc_dtype_size(tgo), ex = rtc_dtype_size(tx), es = rtc_dtype_size(sdt);
    int64_t j = (int64_t)blockIdx.x * 32 + threadIdx.x;
    int64_t chunk = blockIdx.y;
    int64_t r0 = chunk * rows_per_chunk, r1 = r0 + rows_per_chunk < M ? r0 + rows_per_chunk : M;
    A aw = 0, ab = 0;
    if (j < N) {
        for (int64_t r = r0 + threadIdx.y; r < r1; r += blockDim.y) {
            A mu = rld<A>(mean + r * ms * es, sdt), rr = rld<A>(rstd + r * rs * es, sdt);
            A g = rld<A>(go + (r * gos0 + j * gos1) * ego, tgo);
            A xv = rld<A>(x + (r * xs0 + j * xs1) * ex, tx);
            aw += g * ((xv - mu) * rr);
            ab += g;
        }
    }
    sw[threadIdx.y][threadIdx.x] = aw;
    sb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && j < N) {
        for (int k = 1; k < (int)blockDim.y; k++) {
            aw += sw[k][threadIdx.x];
            ab += sb[k][threadIdx.x];
        }
        part_w[chunk * N + j] = aw;
        part_b[chunk * N + j] = ab;
    }
}

template <typename A>
__global__ void k_ln_bwd_wb_final(int64_t N, int64_t nchunks, const A *part_w, const A *part_b,
                                  char *gw, int tgw, int64_t gws, char *gb, int tgb, int64_t gbs) {
    RTC_GRID_STRIDE(j, N) {
        A aw = 0, ab = 0;
        for (int64_t c = 0; c < nchunks; c++) {
            aw += part_w[c * N + j];
            ab += part_b[c * N + j];
        }
        if (gw) rst<A>(gw + j * gws * rtc_dtype_size(tgw), tgw, aw);
        if (gb) rst<A>(gb + j * gbs * rtc_dtype_size(tgb), tgb, ab);
    }
}

template <typename T>
static int ln_bwd_t(const rtc_view *gx, const rtc_view *gw, const rtc_view *gb, const rtc_view *go,
                    const rtc_view *x, const rtc_view *mean, const rtc_view *rstd,
                    const rtc_view *weight) {
    typedef typename racc<T>::type A;
    int64_t M = x->shape[0], N = x->shape[1];
    if (M == 0 || N == 0) return RT_OK;
    constexpr int V = 16 / sizeof(T);
    cudaStream_t st = rtc_stream();
    ln_param w = {weight ? weight->data : NULL, weight ? weight->dtype : RT_F32};
    int sdt = mean->dtype;
    int64_t ms = mean->strides[0], rs = rstd->strides[0];
    if (gx) {
        bool vec = gx->dtype == x->dtype && go->dtype == x->dtype && x->strides[0] == N &&
                   x->strides[1] == 1 && go->strides[0] == N && go->strides[1] == 1 &&
                   gx->strides[0] == N && gx->strides[1] == 1 && N % V == 0 && N <= 32 * V * 8 &&
                   rtc_aligned16(x->data) && rtc_aligned16(go->data) && rtc_aligned16(gx->data) &&
                   (!weight || (weight->strides[0] == 1 && rtc_aligned16(weight->data)));
        if (vec) {
            unsigned grid = (unsigned)((M + LN_WARPS - 1) / LN_WARPS);
            int64_t per = 32 * V;
            T *gp = (T *)gx->data;
            const T *gop = (const T *)go->data, *xp = (const T *)x->data;
#define LNB_LAUNCH(IT)                                                                             \
    k_ln_bwd_x_warp<T, IT><<<grid, 32 * LN_WARPS, 0, st>>>(M, N, gp, gop, xp, mean->data,          \
                                                           rstd->data, sdt, ms, rs, w)
            if (N <= per)
                LNB_LAUNCH(1);
            else if (N <= 2 * per)
                LNB_LAUNCH(2);
            else if (N <= 4 * per)
                LNB_LAUNCH(4);
            else
                LNB_LAUNCH(8);
#undef LNB_LAUNCH
        } else {
            int64_t cap = (int64_t)rtc_sm_count() * 32;
            unsigned grid = (unsigned)(M < cap ? M : cap);
            k_ln_bwd_x<A><<<grid, ln_block(N), 0, st>>>(
                M, N, gx->data, gx->dtype, gx->strides[0], gx->strides[1], go->data, go->dtype,
                go->strides[0], go->strides[1], x->data, x->dtype, x->strides[0], x->strides[1],
                mean->data, rstd->data, sdt, ms, rs, w, weight ? weight->strides[0] : 0);
        }
        RTC_LAUNCH_CHECK("layer_norm backward");
    }
    if (gw || gb) {
        int64_t colblocks = (N + 31) / 32;
        int64_t want = (int64_t)rtc_sm_count() * 8 / colblocks;
        int64_t nchunks = (M + 63) / 64;
        if (nchunks > want) nchunks = want;
        if (nchunks < 1) nchunks = 1;
        if (nchunks > 65535) nchunks = 65535;
        int64_t per = (M + nchunks - 1) / nchunks;
        nchunks = (M + per - 1) / per;
        size_t bytes = (size_t)nchunks * (size_t)N * sizeof(A);
        void *buf;
        RTC_TRY(rtc_scratch_alloc(2 * bytes, &buf));
        A *pw = (A *)buf, *pb = (A *)((char *)buf + bytes);
        dim3 grid((unsigned)colblocks, (unsigned)nchunks), block(32, 8);
        k_ln_bwd_wb_part<A><<<grid, block, 0, st>>>(
            M, N, per, go->data, go->dtype, go->strides[0], go->strides[1], x->data, x->dtype,
            x->strides[0], x->strides[1], mean->data, rstd->data, sdt, ms, rs, pw, pb);
        cudaError_t e = cudaGetLastError();
        if (e == cudaSuccess) {
            k_ln_bwd_wb_final<A><<<rtc_grid(N, RTC_BLOCK), RTC_BLOCK, 0, st>>>(
                N, nchunks, pw, pb, gw ? gw->data : NULL, gw ? gw->dtype : RT_F32,
                gw ? gw->strides[0] : 0, gb ? gb->data : NULL, gb ? gb->dtype : RT_F32,
                gb ? gb->strides[0] : 0);
            e = cudaGetLastError();
        }
        rtc_scratch_free(buf, 2 * bytes);
        RTC_CUDA_TRY("layer_norm backward (weight and bias)", e);
    }
    return RT_OK;
}

extern "C" int rtc_layer_norm_backward(const rtc_view *grad_x, const rtc_view *grad_weight,
                                       const rtc_view *grad_bias, const rtc_view *grad_out,
                                       const rtc_view *x, const rtc_view *mean,
                                       const rtc_view *rstd, const rtc_view *weight) {
    switch (x->dtype) {
    case RT_F32:
        return ln_bwd_t<float>(grad_x, grad_weight, grad_bias, grad_out, x, mean, rstd, weight);
    case RT_BF16:
        return ln_bwd_t<__nv_bfloat16>(grad_x, grad_weight, grad_bias, grad_out, x, mean, rstd,
                                       weight);
    case RT_F16:
        return ln_bwd_t<__half>(grad_x, grad_weight, grad_bias, grad_out, x, mean, rstd, weight);
    case RT_F64:
        return ln_bwd_t<double>(grad_x, grad_weight, grad_bias, grad_out, x, mean, rstd, weight);
    }
    return RTC_ERR(RT_ERR_DTYPE, "layer_norm backward: no CUDA kernel for dtype %d", x->dtype);
}
