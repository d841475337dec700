/* cross_entropy.cu: fused log-softmax + NLL with ignore_index and label smoothing, and its
 * backward, on the GPU (the rules of kernels/cpu/cross_entropy.c). Logits are (N, C, S), targets
 * and losses (N, S); per row (n, s), with lse = logsumexp over classes and eps = label_smoothing:
 *   loss = lse - (1 - eps) * x[target] - eps / C * sum_c x[c]      (0 and valid 0 where ignored)
 *   grad[c] = g * (softmax_c - eps / C - (1 - eps) * [c == target])  (0 where ignored)
 * The forward reads the logits once (an online log-sum-exp); when classes are contiguous a warp
 * takes a row (16-byte loads when aligned), otherwise a thread takes a row (then neighbouring rows
 * are neighbouring addresses). A target outside [0, C) that is not ignore_index is reported as
 * RT_ERR_INDEX naming the first such position, like the CPU; the forward waits for that check. The
 * backward trusts the targets the forward checked (it never reads x[target]). */
#include "rowops.cuh"

#define CE_WARPS 8

struct ce_geo {
    int64_t N, C, S;
    int64_t xs0, xs1, xs2; /* logits strides (elements) */
    int64_t ts0, ts1;      /* target */
    int64_t ls0, ls1;      /* loss, or grad_loss in the backward */
    int64_t vs0, vs1;      /* valid */
    int64_t gs0, gs1, gs2; /* grad_logits */
};

/* One row's online state over classes [lane, C) stepping by `step` (scalar loads). */
template <typename T, typename A>
__device__ __forceinline__ void ce_scan(const T *xr, int64_t cst, int64_t C, int64_t first,
                                        int64_t step, lse_state<A> &st, A &sx) {
    for (int64_t c = first; c < C; c += step) {
        A v = rio<T>::ld(xr[c * cst]);
        lse_add(st, v);
        sx += v;
    }
}

/* The same with 16-byte vectors (classes contiguous, C % V == 0, row 16-byte aligned). */
template <typename T, typename A>
__device__ __forceinline__ void ce_scan_vec(const T *xr, int64_t C, int lane, lse_state<A> &st,
                                            A &sx) {
    constexpr int V = 16 / sizeof(T);
    for (int64_t c = (int64_t)lane * V; c < C; c += 32 * V) {
        rvec<T, V> t = *(const rvec<T, V> *)(xr + c);
        A v[V], m = st.m;
#pragma unroll
        for (int k = 0; k < V; k++) {
            v[k] = rio<T>::ld(t.v[k]);
            m = nmax(m, v[k]);
            sx += v[k];
        }
        A s = st.m == m ? st.s : st.s * exp(st.m - m);
#pragma unroll
        for (int k = 0; k < V; k++)
            s += v[k] == A(-INFINITY) ? A(0) : exp(v[k] - m);
        st.m = m;
        st.s = s;
    }
}

template <typename T, int MODE> /* MODE 0: thread per row, 1: warp per row, 2: warp + vectors */
__global__ void k_ce_fwd(ce_geo g, const T *__restrict__ x, const int64_t *__restrict__ tgt,
                         char *loss, int ldt, char *valid, int vdt, int64_t ignore_index,
                         double eps_d, unsigned long long *bad) {
    typedef typename racc<T>::type A;
    int64_t rows = g.N * g.S;
    int lane = MODE ? (threadIdx.x & 31) : 0;
    int64_t r0 = MODE ? (int64_t)blockIdx.x * CE_WARPS + (threadIdx.x >> 5)
                      : (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t rstep = MODE ? (int64_t)gridDim.x * CE_WARPS : (int64_t)gridDim.x * blockDim.x;
    A eps = (A)eps_d;
    for (int64_t r = r0; r < rows; r += rstep) {
        int64_t n = r / g.S, s = r - n * g.S;
        int64_t t = tgt[n * g.ts0 + s * g.ts1];
        bool ok = t != ignore_index;
        bool in_range = t >= 0 && t < g.C;
        A v = 0;
        if (ok) {
            const T *xr = x + n * g.xs0 + s * g.xs2;
            lse_state<A> st = {A(-INFINITY), A(0)};
            A sx = 0;
            if (MODE == 2)
                ce_scan_vec<T, A>(xr, g.C, lane, st, sx);
            else
                ce_scan<T, A>(xr, g.xs1, g.C, lane, MODE ? 32 : 1, st, sx);
            if (MODE) {
                st = warp_lse(st);
                sx = warp_sum(sx);
            }
            A xt = in_range ? rio<T>::ld(xr[t * g.xs1]) : A(NAN);
            v = lse_value(st) - (A(1) - eps) * xt;
            if (eps != A(0)) v -= eps / (A)g.C * sx;
            if (!in_range && lane == 0) atomicMin(bad, (unsigned long long)r);
        }
        if (lane == 0) {
            rst<A>(loss + (n * g.ls0 + s * g.ls1) * rtc_dtype_size(ldt), ldt, v);
            if (valid)
                rst<A>(valid + (n * g.vs0 + s * g.vs1) * rtc_dtype_size(vdt), vdt,
                       ok ? A(1) : A(0));
        }
    }
}

template <typename T, int MODE>
__global__ void k_ce_bwd(ce_geo g, T *__restrict__ gx, const char *gl, int gdt,
                         const T *__restrict__ x, const int64_t *__restrict__ tgt,
                         int64_t ignore_index, double eps_d) {
    typedef typename racc<T>::type A;
    int64_t rows = g.N * g.S;
    int lane = MODE ? (threadIdx.x & 31) : 0;
    int step = MODE ? 32 : 1;
    int64_t r0 = MODE ? (int64_t)blockIdx.x * CE_WARPS + (threadIdx.x >> 5)
                      : (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t rstep = MODE ? (int64_t)gridDim.x * CE_WARPS : (int64_t)gridDim.x * blockDim.x;
    A eps = (A)eps_d, base = eps / (A)g.C, hit = A(1) - eps;
    for (int64_t r = r0; r < rows; r += rstep) {
        int64_t n = r / g.S, s = r - n * g.S;
        int64_t t = tgt[n * g.ts0 + s * g.ts1];
        T *gr = gx + n * g.gs0 + s * g.gs2;
        if (t == ignore_index) {
            for (int64_t c = lane; c < g.C; c += step)
                gr[c * g.gs1] = rio<T>::st(A(0));
            continue;
        }
        const T *xr = x + n * g.xs0 + s * g.xs2;
        lse_state<A> st = {A(-INFINITY), A(0)};
        A sx = 0;
        if (MODE == 2)
            ce_scan_vec<T, A>(xr, g.C, lane, st, sx);
        else
            ce_scan<T, A>(xr, g.xs1, g.C, lane, step, st, sx);
        if (MODE) st = warp_lse(st);
        A lse = lse_value(st);
        A gv = rld<A>(gl + (n * g.ls0 + s * g.ls1) * rtc_dtype_size(gdt), gdt);
        for (int64_t c = lane; c < g.C; c += step) {
            A p = exp(rio<T>::ld(xr[c * g.xs1]) - lse);
            gr[c * g.gs1] = rio<T>::st(gv * (p - base - (c == t ? hit : A(0))));
        }
    }
}

static ce_geo ce_geo_of(const rtc_view *x, const rtc_view *t, const rtc_view *l, const rtc_view *v,
                        const rtc_view *gx) {
    ce_geo g;
    g.N = x->shape[0], g.C = x->shape[1], g.S = x->shape[2];
    g.xs0 = x->strides[0], g.xs1 = x->strides[1], g.xs2 = x->strides[2];
    g.ts0 = t->strides[0], g.ts1 = t->strides[1];
    g.ls0 = l->strides[0], g.ls1 = l->strides[1];
    g.vs0 = v ? v->strides[0] : 0, g.vs1 = v ? v->strides[1] : 0;
    g.gs0 = gx ? gx->strides[0] : 0, g.gs1 = gx ? gx->strides[1] : 0,
    g.gs2 = gx ? gx->strides[2] : 0;
    return g;
}

/* 0: thread per row, 1: warp per row, 2: warp per row with 16-byte loads */
static int ce_mode(const ce_geo &g, const rtc_view *x, int esize) {
    if (g.xs1 != 1) return 0;
    int V = 16 / esize;
    bool vec = g.C % V == 0 && rtc_aligned16(x->data) && (g.N == 1 || (g.xs0 * esize) % 16 == 0) &&
               (g.S == 1 || (g.xs2 * esize) % 16 == 0);
    return vec ? 2 : 1;
}

template <typename T>
static int ce_fwd_t(const rtc_view *loss, const rtc_view *valid, const rtc_view *logits,
                    const rtc_view *target, int64_t ignore_index, double eps) {
    ce_geo g = ce_geo_of(logits, target, loss, valid, NULL);
    int64_t rows = g.N * g.S;
    if (rows == 0) return RT_OK;
    unsigned long long *bad;
    RTC_TRY(rtc_bad_alloc("cross_entropy", &bad));
    int mode = ce_mode(g, logits, sizeof(T));
    cudaStream_t st = rtc_stream();
    const T *xp = (const T *)logits->data;
    const int64_t *tp = (const int64_t *)target->data;
    char *vp = valid ? valid->data : NULL;
    int vdt = valid ? valid->dtype : RT_F32;
    if (mode == 0) {
        k_ce_fwd<T, 0><<<rtc_grid(rows, RTC_BLOCK), RTC_BLOCK, 0, st>>>(
            g, xp, tp, loss->data, loss->dtype, vp, vdt, ignore_index, eps, bad);
    } else {
        int64_t nb = (rows + CE_WARPS - 1) / CE_WARPS, cap = (int64_t)rtc_sm_count() * 64;
        unsigned grid = (unsigned)(nb < cap ? nb : cap);
        if (mode == 2)
            k_ce_fwd<T, 2><<<grid, 32 * CE_WARPS, 0, st>>>(g, xp, tp, loss->data, loss->dtype, vp,
                                                           vdt, ignore_index, eps, bad);
        else
            k_ce_fwd<T, 1><<<grid, 32 * CE_WARPS, 0, st>>>(g, xp, tp, loss->data, loss->dtype, vp,
                                                           vdt, ignore_index, eps, bad);
    }
    cudaError_t le = cudaGetLastError();
    unsigned long long pos;
    int rc = rtc_bad_read("cross_entropy", bad, &pos);
    RTC_CUDA_TRY("cross_entropy", le);
    RTC_TRY(rc);
    if (pos != RTC_NO_BAD) {
        int64_t n = (int64_t)pos / g.S, s = (int64_t)pos - n * g.S;
        int64_t tv = rtc_peek_index((const char *)(tp + n * g.ts0 + s * g.ts1), RT_I64);
        return RTC_ERR(RT_ERR_INDEX,
                       "cross_entropy: target %lld is out of bounds for %lld classes (expected "
                       "0..%lld or ignore_index %lld), at flat target position %lld",
                       (long long)tv, (long long)g.C, (long long)g.C - 1, (long long)ignore_index,
                       (long long)pos);
    }
    return RT_OK;
}

template <typename T>
static int ce_bwd_t(const rtc_view *gx, const rtc_view *gl, const rtc_view *logits,
                    const rtc_view *target, int64_t ignore_index, double eps) {
    ce_geo g = ce_geo_of(logits, target, gl, NULL, gx);
    int64_t rows = g.N * g.S;
    if (rows == 0) return RT_OK;
    int mode = g.gs1 == 1 ? ce_mode(g, logits, sizeof(T)) : 0;
    cudaStream_t st = rtc_stream();
    T *gp = (T *)gx->data;
    const T *xp = (const T *)logits->data;
    const int64_t *tp = (const int64_t *)target->data;
    if (mode == 0) {
        k_ce_bwd<T, 0><<<rtc_grid(rows, RTC_BLOCK), RTC_BLOCK, 0, st>>>(g, gp, gl->data, gl->dtype,
                                                                        xp, tp, ignore_index, eps);
    } else {
        int64_t nb = (rows + CE_WARPS - 1) / CE_WARPS, cap = (int64_t)rtc_sm_count() * 64;
        unsigned grid = (unsigned)(nb < cap ? nb : cap);
        if (mode == 2)
            k_ce_bwd<T, 2><<<grid, 32 * CE_WARPS, 0, st>>>(g, gp, gl->data, gl->dtype, xp, tp,
                                                           ignore_index, eps);
        else
            k_ce_bwd<T, 1><<<grid, 32 * CE_WARPS, 0, st>>>(g, gp, gl->data, gl->dtype, xp, tp,
                                                           ignore_index, eps);
    }
    RTC_LAUNCH_CHECK("cross_entropy backward");
    return RT_OK;
}

static int ce_dtype_err(const char *op, int dt) {
    return RTC_ERR(RT_ERR_DTYPE, "%s: no CUDA kernel for logits of dtype %d", op, dt);
}

extern "C" int rtc_cross_entropy(const rtc_view *loss, const rtc_view *valid,
                                 const rtc_view *logits, const rtc_view *target,
                                 int64_t ignore_index, double label_smoothing) {
    if (target->dtype != RT_I64)
        return RTC_ERR(RT_ERR_DTYPE, "cross_entropy: expected int64 targets");
    switch (logits->dtype) {
    case RT_F32:
        return ce_fwd_t<float>(loss, valid, logits, target, ignore_index, label_smoothing);
    case RT_BF16:
        return ce_fwd_t<__nv_bfloat16>(loss, valid, logits, target, ignore_index, label_smoothing);
    case RT_F16:
        return ce_fwd_t<__half>(loss, valid, logits, target, ignore_index, label_smoothing);
    case RT_F64:
        return ce_fwd_t<double>(loss, valid, logits, target, ignore_index, label_smoothing);
    }
    return ce_dtype_err("cross_entropy", logits->dtype);
}

extern "C" int rtc_cross_entropy_backward(const rtc_view *grad_logits, const rtc_view *grad_loss,
                                          const rtc_view *logits, const rtc_view *target,
                                          int64_t ignore_index, double label_smoothing) {
    if (grad_logits->dtype != logits->dtype)
        return RTC_ERR(RT_ERR_DTYPE, "cross_entropy backward: gradient dtype differs from logits'");
    switch (logits->dtype) {
    case RT_F32:
        return ce_bwd_t<float>(grad_logits, grad_loss, logits, target, ignore_index,
                               label_smoothing);
    case RT_BF16:
        return ce_bwd_t<__nv_bfloat16>(grad_logits, grad_loss, logits, target, ignore_index,
                                       label_smoothing);
    case RT_F16:
        return ce_bwd_t<__half>(grad_logits, grad_loss, logits, target, ignore_index,
                                label_smoothing);
    case RT_F64:
        return ce_bwd_t<double>(grad_logits, grad_loss, logits, target, ignore_index,
                                label_smoothing);
    }
    return ce_dtype_err("cross_entropy backward", logits->dtype);
}
