/* softmax.cu: softmax and log_softmax along any dim, and their backwards, on the GPU (the rules of
 * kernels/cpu/softmax.c: the row max is subtracted before exp; log_softmax is (x - m) - log(sum);
 * a NaN in a row makes the row NaN; an all -inf row is NaN). Two shapes of work:
 *  - rows contiguous along dim, 16-byte aligned, at most 32 * 8 vectors long (1024 f32, 2048
 *    bf16/f16, 512 f64): one warp per row, the row held in registers, so x is read once and the
 *    output written once (the memory-bound minimum);
 *  - anything else: one block per row (32..1024 threads by length), an online max/sum pass then a
 *    write pass, any strides.
 * f32 math for f32/bf16/f16 (rounded once on store), f64 for f64. */
#include "rowops.cuh"

#define WARP_ROWS_PER_BLOCK 8

/* ================================================================================================
 * forward
 * ============================================================================================== */

template <typename T, int IT>
__global__ void __launch_bounds__(32 * WARP_ROWS_PER_BLOCK)
    k_softmax_warp(int64_t nrows, int64_t n, const T *__restrict__ x, int64_t rsx,
                   T *__restrict__ o, int64_t rso, int log_) {
    typedef typename racc<T>::type A;
    constexpr int V = 16 / sizeof(T);
    int lane = threadIdx.x & 31;
    int64_t r = (int64_t)blockIdx.x * WARP_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    if (r >= nrows) return;
    const T *xr = x + r * rsx;
    T *orow = o + r * rso;
    A v[IT][V];
    A m = A(-INFINITY);
#pragma unroll
    for (int it = 0; it < IT; it++) {
        int64_t j = ((int64_t)it * 32 + lane) * V;
        if (j < n) {
            rvec<T, V> t = *(const rvec<T, V> *)(xr + j);
#pragma unroll
            for (int k = 0; k < V; k++) {
                v[it][k] = rio<T>::ld(t.v[k]);
                m = nmax(m, v[it][k]);
            }
        }
    }
    m = warp_max(m);
    A s = 0;
#pragma unroll
    for (int it = 0; it < IT; it++) {
        int64_t j = ((int64_t)it * 32 + lane) * V;
        if (j < n) {
#pragma unroll
            for (int k = 0; k < V; k++) {
                A e = exp(v[it][k] - m);
                s += e;
                if (!log_) v[it][k] = e;
            }
        }
    }
    s = warp_sum(s);
    A ls = log(s), inv = A(1) / s;
#pragma unroll
    for (int it = 0; it < IT; it++) {
        int64_t j = ((int64_t)it * 32 + lane) * V;
        if (j < n) {
            rvec<T, V> t;
#pragma unroll
            for (int k = 0; k < V; k++)
                t.v[k] = rio<T>::st(log_ ? (v[it][k] - m) - ls : v[it][k] * inv);
            *(rvec<T, V> *)(orow + j) = t;
        }
    }
}

template <typename T>
__global__ void k_softmax_gen(rtc_rows g, const T *__restrict__ x, T *__restrict__ o, int log_) {
    typedef typename racc<T>::type A;
    __shared__ A sm[32], ss[32];
    int64_t xs = g.dst[0], os = g.dst[1];
    for (int64_t r = blockIdx.x; r < g.nrows; r += gridDim.x) {
        int64_t off[2];
        rtc_row_offsets<2>(g, r, off);
        const T *xr = x + off[0];
        T *orow = o + off[1];
        lse_state<A> st = {A(-INFINITY), A(0)};
        bool nan = false;
        for (int64_t j = threadIdx.x; j < g.n; j += blockDim.x) {
            A v = rio<T>::ld(xr[j * xs]);
            nan |= v != v;
            lse_add(st, v);
        }
        st = block_lse(st, sm, ss);
        /* an all -inf row: exp(x - m) is NaN as on the CPU; a NaN anywhere: NaN row */
        A m = st.m;
        A ls = log(st.s); /* log of the sum of exp(x - m): y = (x - m) - ls, as on the CPU */
        nan = __syncthreads_or(nan);
        if (nan) ls = A(NAN);
        for (int64_t j = threadIdx.x; j < g.n; j += blockDim.x) {
            A v = rio<T>::ld(xr[j * xs]);
            A y = log_ ? (v - m) - ls : exp((v - m) - ls);
            orow[j * os] = rio<T>::st(y);
        }
        __syncthreads();
    }
}

static int block_for(int64_t n) {
    int b = 32;
    while (b < 1024 && b < n / 4)
        b *= 2;
    return b;
}

static unsigned grid_rows(int64_t nrows) {
    int64_t cap = (int64_t)rtc_sm_count() * 32;
    return (unsigned)(nrows < cap ? nrows : cap);
}

template <typename T>
static int softmax_t(const rtc_view *out, const rtc_view *x, int dim, int log_) {
    const rtc_view *v[2] = {x, out};
    rtc_rows g = rtc_rows_make(2, v, dim);
    if (g.nrows == 0 || g.n == 0) return RT_OK;
    constexpr int V = 16 / sizeof(T);
    int64_t rs[2];
    cudaStream_t st = rtc_stream();
    const char *op = log_ ? "log_softmax" : "softmax";
    bool vec = rtc_rows_flat(g, 2, rs) && g.dst[0] == 1 && g.dst[1] == 1 && g.n % V == 0 &&
               rtc_aligned16(x->data) && rtc_aligned16(out->data) &&
               (g.nrows == 1 || ((rs[0] * sizeof(T)) % 16 == 0 && (rs[1] * sizeof(T)) % 16 == 0)) &&
               g.n <= 32 * V * 8;
    if (vec) {
        unsigned grid = (unsigned)((g.nrows + WARP_ROWS_PER_BLOCK - 1) / WARP_ROWS_PER_BLOCK);
        dim3 block(32 * WARP_ROWS_PER_BLOCK);
        const T *xp = (const T *)x->data;
        T *op_ = (T *)out->data;
        int64_t per = 32 * V;
        if (g.n <= per)
            k_softmax_warp<T, 1><<<grid, block, 0, st>>>(g.nrows, g.n, xp, rs[0], op_, rs[1], log_);
        else if (g.n <= 2 * per)
            k_softmax_warp<T, 2><<<grid, block, 0, st>>>(g.nrows, g.n, xp, rs[0], op_, rs[1], log_);
        else if (g.n <= 4 * per)
            k_softmax_warp<T, 4><<<grid, block, 0, st>>>(g.nrows, g.n, xp, rs[0], op_, rs[1], log_);
        else
            k_softmax_warp<T, 8><<<grid, block, 0, st>>>(g.nrows, g.n, xp, rs[0], op_, rs[1], log_);
    } else {
        k_softmax_gen<T><<<grid_rows(g.nrows), block_for(g.n), 0, st>>>(g, (const T *)x->data,
                                                                        (T *)out->data, log_);
    }
    RTC_LAUNCH_CHECK(op);
    return RT_OK;
}

extern "C" int rtc_softmax(const rtc_view *out, const rtc_view *x, int dim, int log_) {
    if (out->dtype != x->dtype)
        return RTC_ERR(RT_ERR_DTYPE, "softmax: output dtype differs from the input's");
    switch (x->dtype) {
    case RT_F32:
        return softmax_t<float>(out, x, dim, log_);
    case RT_BF16:
        return softmax_t<__nv_bfloat16>(out, x, dim, log_);
    case RT_F16:
        return softmax_t<__half>(out, x, dim, log_);
    case RT_F64:
        return softmax_t<double>(out, x, dim, log_);
    }
    return RTC_ERR(RT_ERR_DTYPE, "softmax: no CUDA kernel for dtype %d (expected a float dtype)",
                   x->dtype);
}

/* ================================================================================================
 * backward: softmax grad_in = y * (g - sum(g * y)); log_softmax grad_in = g - exp(y) * sum(g)
 * ============================================================================================== */

template <typename T, int IT>
__global__ void __launch_bounds__(32 * WARP_ROWS_PER_BLOCK)
    k_softmax_bwd_warp(int64_t nrows, int64_t n, T *__restrict__ gi, int64_t rsi,
                       const T *__restrict__ go, int64_t rsg, const T *__restrict__ y, int64_t rsy,
                       int log_) {
    typedef typename racc<T>::type A;
    constexpr int V = 16 / sizeof(T);
    int lane = threadIdx.x & 31;
    int64_t r = (int64_t)blockIdx.x * WARP_ROWS_PER_BLOCK + (threadIdx.x >> 5);
    if (r >= nrows) return;
    const T *gr = go + r * rsg, *yr = y + r * rsy;
    T *ir = gi + r * rsi;
    A gv[IT][V], yv[IT][V];
    A s = 0;
#pragma unroll
    for (int it = 0; it < IT; it++) {
        int64_t j = ((int64_t)it * 32 + lane) * V;
        if (j < n) {
            rvec<T, V> a = *(const rvec<T, V> *)(gr + j), b = *(const rvec<T, V> *)(yr + j);
#pragma unroll
            for (int k = 0; k < V; k++) {
                gv[it][k] = rio<T>::ld(a.v[k]);
                yv[it][k] = rio<T>::ld(b.v[k]);
                s += log_ ? gv[it][k] : gv[it][k] * yv[it][k];
            }
        }
    }
    s = warp_sum(s);
#pragma unroll
    for (int it = 0; it < IT; it++) {
        int64_t j = ((int64_t)it * 32 + lane) * V;
        if (j < n) {
            rvec<T, V> t;
#pragma unroll
            for (int k = 0; k < V; k++)
                t.v[k] =
                    rio<T>::st(log_ ? gv[it][k] - exp(yv[it][k]) * s : yv[it][k] * (gv[it][k] - s));
            *(rvec<T, V> *)(ir + j) = t;
        }
    }
}

template <typename T>
__global__ void k_softmax_bwd_gen(rtc_rows g, T *__restrict__ gi, const T *__restrict__ go,
                                  const T *__restrict__ y, int log_) {
    typedef typename racc<T>::type A;
    __shared__ A sm[32];
    int64_t is = g.dst[0], gs = g.dst[1], ys = g.dst[2];
    for (int64_t r = blockIdx.x; r < g.nrows; r += gridDim.x) {
        int64_t off[3];
        rtc_row_offsets<3>(g, r, off);
        T *ir = gi + off[0];
        const T *gr = go + off[1], *yr = y + off[2];
        A s = 0;
        for (int64_t j = threadIdx.x; j < g.n; j += blockDim.x) {
            A gv = rio<T>::ld(gr[j * gs]);
            s += log_ ? gv : gv * rio<T>::ld(yr[j * ys]);
        }
        s = block_sum(s, sm);
        for (int64_t j = threadIdx.x; j < g.n; j += blockDim.x) {
            A gv = rio<T>::ld(gr[j * gs]), yv = rio<T>::ld(yr[j * ys]);
            ir[j * is] = rio<T>::st(log_ ? gv - exp(yv) * s : yv * (gv - s));
        }
        __syncthreads();
    }
}

template <typename T>
static int softmax_bwd_t(const rtc_view *gi, const rtc_view *go, const rtc_view *y, int dim,
                         int log_) {
    const rtc_view *v[3] = {gi, go, y};
    rtc_rows g = rtc_rows_make(3, v, dim);
    if (g.nrows == 0 || g.n == 0) return RT_OK;
    constexpr int V = 16 / sizeof(T);
    int64_t rs[3];
    cudaStream_t st = rtc_stream();
    bool vec = rtc_rows_flat(g, 3, rs) && g.dst[0] == 1 && g.dst[1] == 1 && g.dst[2] == 1 &&
               g.n % V == 0 && rtc_aligned16(gi->data) && rtc_aligned16(go->data) &&
               rtc_aligned16(y->data) && g.n <= 32 * V * 8;
    for (int k = 0; k < 3 && vec && g.nrows > 1; k++)
        vec = (rs[k] * sizeof(T)) % 16 == 0;
    if (vec) {
        unsigned grid = (unsigned)((g.nrows + WARP_ROWS_PER_BLOCK - 1) / WARP_ROWS_PER_BLOCK);
        dim3 block(32 * WARP_ROWS_PER_BLOCK);
        T *ip = (T *)gi->data;
        const T *gp = (const T *)go->data, *yp = (const T *)y->data;
        int64_t per = 32 * V;
        if (g.n <= per)
            k_softmax_bwd_warp<T, 1>
                <<<grid, block, 0, st>>>(g.nrows, g.n, ip, rs[0], gp, rs[1], yp, rs[2], log_);
        else if (g.n <= 2 * per)
            k_softmax_bwd_warp<T, 2>
                <<<grid, block, 0, st>>>(g.nrows, g.n, ip, rs[0], gp, rs[1], yp, rs[2], log_);
        else if (g.n <= 4 * per)
            k_softmax_bwd_warp<T, 4>
                <<<grid, block, 0, st>>>(g.nrows, g.n, ip, rs[0], gp, rs[1], yp, rs[2], log_);
        else
            k_softmax_bwd_warp<T, 8>
                <<<grid, block, 0, st>>>(g.nrows, g.n, ip, rs[0], gp, rs[1], yp, rs[2], log_);
    } else {
        k_softmax_bwd_gen<T><<<grid_rows(g.nrows), block_for(g.n), 0, st>>>(
            g, (T *)gi->data, (const T *)go->data, (const T *)y->data, log_);
    }
    RTC_LAUNCH_CHECK(log_ ? "log_softmax backward" : "softmax backward");
    return RT_OK;
}

extern "C" int rtc_softmax_backward(const rtc_view *grad_in, const rtc_view *grad_out,
                                    const rtc_view *y, int dim, int log_) {
    if (grad_in->dtype != y->dtype || grad_out->dtype != y->dtype)
        return RTC_ERR(RT_ERR_DTYPE,
                       "softmax backward: the gradient's dtype differs from the output's (%d, %d "
                       "vs %d)",
                       grad_in->dtype, grad_out->dtype, y->dtype);
    switch (y->dtype) {
    case RT_F32:
        return softmax_bwd_t<float>(grad_in, grad_out, y, dim, log_);
    case RT_BF16:
        return softmax_bwd_t<__nv_bfloat16>(grad_in, grad_out, y, dim, log_);
    case RT_F16:
        return softmax_bwd_t<__half>(grad_in, grad_out, y, dim, log_);
    case RT_F64:
        return softmax_bwd_t<double>(grad_in, grad_out, y, dim, log_);
    }
    return RTC_ERR(RT_ERR_DTYPE, "softmax backward: no CUDA kernel for dtype %d", y->dtype);
}
