/* optim_multi.cu: AdamW over many device-resident parameters in a few launches (the multi-tensor
 * apply of PyTorch's _foreach / apex's multi_tensor_apply). A model of ~150 parameter tensors
 * otherwise pays ~150 launches per step, most of them on tensors too small to fill the GPU.
 *
 * A launch's work list (mta_table) travels by value as the kernel's argument: pointers, sizes,
 * dtypes and the first chunk of up to MTA_CAP tensors, kept under the classic 4 KB kernel
 * parameter limit (no device buffer, no host-to-device copy, nothing to keep alive between
 * steps). Each block takes one MTA_CHUNK-element chunk of one tensor, found by a binary search of
 * the table's chunk prefix. Lists longer than MTA_CAP, and tensors of a different dtype
 * combination, take further launches: ceil(n / MTA_CAP) per combination (~150 f32 tensors: 2).
 *
 * Per element the arithmetic is adamw_elem.cuh's, with the same loads and stores as the
 * per-tensor kernels in optim.cu, so one multi call equals n rt_adamw_step calls bit for bit.
 * The common combinations (f32, bf16 or f16 parameter; its dtype or f32 gradient; f32 states) are
 * compiled per type with 4-element vector loads where the chunk is aligned for them (16 bytes for
 * f32); the rest (f64 anywhere, other mixes) take one kernel reading each tensor's dtypes from
 * the table. Views are contiguous, non-empty, on the current device and written ranges disjoint
 * (runtime/optim_multi.c checked). */
#include "adamw_elem.cuh"
#include "rowops.cuh"

#include <limits.h>

#define MTA_CAP 80
#define MTA_CHUNK 8192
#define MTA_ILP 4

struct mta_table {
    char *p[MTA_CAP];
    const char *g[MTA_CAP];
    char *m[MTA_CAP];
    char *v[MTA_CAP];
    int64_t n[MTA_CAP];
    int chunk0[MTA_CAP + 1];      /* first chunk of tensor t; chunk0[count]: the launch's chunks */
    unsigned char dt[MTA_CAP][4]; /* p, g, m, v dtypes (read by the run-time-dtype kernel) */
    int count;
};
static_assert(sizeof(mta_table) + sizeof(adamw_d) <= 4096,
              "the multi-tensor table must fit the 4 KB kernel parameter limit");

/* The tensor whose chunks hold chunk c: the last t with chunk0[t] <= c (tensors with no chunk
 * are never in a table, but the search would step over them anyway). */
__device__ __forceinline__ int mta_find(const mta_table &tab, int c) {
    int lo = 0, hi = tab.count;
    while (hi - lo > 1) {
        int mid = (lo + hi) >> 1;
        if (tab.chunk0[mid] <= c)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

template <typename T> struct alignas(sizeof(T) * MTA_ILP) mta_vec { T x[MTA_ILP]; };

template <typename T> __device__ __forceinline__ bool mta_aligned(const void *p) {
    return ((uintptr_t)p % (sizeof(T) * MTA_ILP)) == 0;
}

/* P parameter, G gradient, S state (f32) element types; f32 arithmetic. */
template <typename P, typename G, typename S>
__global__ void __launch_bounds__(RTC_BLOCK)
    k_adamw_multi(const __grid_constant__ mta_table tab, const adamw_f c) {
    const int t = mta_find(tab, (int)blockIdx.x);
    const int64_t start = (int64_t)(blockIdx.x - tab.chunk0[t]) * MTA_CHUNK;
    const int64_t rest = tab.n[t] - start;
    const int len = rest < MTA_CHUNK ? (int)rest : MTA_CHUNK;
    P *p = (P *)tab.p[t] + start;
    const G *g = (const G *)tab.g[t] + start;
    S *m = (S *)tab.m[t] + start;
    S *v = (S *)tab.v[t] + start;
    int done = 0;
    if (mta_aligned<P>(p) && mta_aligned<G>(g) && mta_aligned<S>(m) && mta_aligned<S>(v)) {
        const int nv = len / MTA_ILP;
        for (int j = threadIdx.x; j < nv; j += blockDim.x) {
            mta_vec<P> pv = ((const mta_vec<P> *)p)[j];
            mta_vec<G> gv = ((const mta_vec<G> *)g)[j];
            mta_vec<S> mv = ((const mta_vec<S> *)m)[j];
            mta_vec<S> vv = ((const mta_vec<S> *)v)[j];
#pragma unroll
            for (int k = 0; k < MTA_ILP; k++) {
                float pi = rio<P>::ld(pv.x[k]), mi = rio<S>::ld(mv.x[k]), vi = rio<S>::ld(vv.x[k]);
                adamw_elem_f(c, pi, rio<G>::ld(gv.x[k]), mi, vi);
                pv.x[k] = rio<P>::st(pi);
                mv.x[k] = rio<S>::st(mi);
                vv.x[k] = rio<S>::st(vi);
            }
            ((mta_vec<P> *)p)[j] = pv;
            ((mta_vec<S> *)m)[j] = mv;
            ((mta_vec<S> *)v)[j] = vv;
        }
        done = nv * MTA_ILP;
    }
    for (int i = done + threadIdx.x; i < len; i += blockDim.x) {
        float pi = rio<P>::ld(p[i]), mi = rio<S>::ld(m[i]), vi = rio<S>::ld(v[i]);
        adamw_elem_f(c, pi, rio<G>::ld(g[i]), mi, vi);
        p[i] = rio<P>::st(pi);
        m[i] = rio<S>::st(mi);
        v[i] = rio<S>::st(vi);
    }
}

/* Any other combination, dtypes read from the table: the loads and stores of optim.cu's
 * k_adamw_mixed (adamw_f) or k_adamw_f64 (adamw_d, f64 parameters), one element at p, g, m, v. */
__device__ __forceinline__ void mta_dyn_elem(const adamw_f &c, char *p, int pd, const char *g,
                                             int gd, char *m, int md, char *v, int vd) {
    float pi = rtc_ldf(p, pd), gi = rtc_ldf(g, gd), mi = rtc_ldf(m, md), vi = rtc_ldf(v, vd);
    adamw_elem_f(c, pi, gi, mi, vi);
    rtc_stf(p, pd, pi);
    rtc_stf(m, md, mi);
    rtc_stf(v, vd, vi);
}
__device__ __forceinline__ void mta_dyn_elem(const adamw_d &c, char *p, int pd, const char *g,
                                             int gd, char *m, int md, char *v, int vd) {
    double pi = rtc_ldd(p, pd), gi = rtc_ldd(g, gd), mi = rtc_ldd(m, md), vi = rtc_ldd(v, vd);
    adamw_elem_d(c, pi, gi, mi, vi);
    rtc_std(p, pd, pi);
    rtc_std(m, md, mi);
    rtc_std(v, vd, vi);
}

template <typename C>
__global__ void __launch_bounds__(RTC_BLOCK)
    k_adamw_multi_dyn(const __grid_constant__ mta_table tab, const C c) {
    const int t = mta_find(tab, (int)blockIdx.x);
    const int64_t start = (int64_t)(blockIdx.x - tab.chunk0[t]) * MTA_CHUNK;
    const int64_t rest = tab.n[t] - start;
    const int len = rest < MTA_CHUNK ? (int)rest : MTA_CHUNK;
    const int pd = tab.dt[t][0], gd = tab.dt[t][1], md = tab.dt[t][2], vd = tab.dt[t][3];
    const int ep = rtc_dtype_size(pd), eg = rtc_dtype_size(gd), em = rtc_dtype_size(md),
              ev = rtc_dtype_size(vd);
    char *p = tab.p[t] + start * ep, *m = tab.m[t] + start * em, *v = tab.v[t] + start * ev;
    const char *g = tab.g[t] + start * eg;
    for (int i = threadIdx.x; i < len; i += blockDim.x)
        mta_dyn_elem(c, p + i * ep, pd, g + i * eg, gd, m + i * em, md, v + i * ev, vd);
}

/* The kernel a tensor takes: one of the typed combinations, or a run-time-dtype one. */
enum {
    MTA_F32,      /* f32 param, f32 grad */
    MTA_BF16,     /* bf16 param, bf16 grad */
    MTA_BF16_G32, /* bf16 param, f32 grad */
    MTA_F16,      /* f16 param, f16 grad */
    MTA_F16_G32,  /* f16 param, f32 grad */
    MTA_DYN_F,    /* other f32/bf16/f16 params: f32 arithmetic */
    MTA_DYN_D,    /* f64 params: f64 arithmetic */
    MTA_KINDS
};

static int mta_kind(const rtc_view *p, const rtc_view *g, const rtc_view *m, const rtc_view *v) {
    if (p->dtype == RT_F64) return MTA_DYN_D;
    if (m->dtype != RT_F32 || v->dtype != RT_F32) return MTA_DYN_F;
    if (p->dtype == RT_F32 && g->dtype == RT_F32) return MTA_F32;
    if (p->dtype == RT_BF16 && g->dtype == RT_BF16) return MTA_BF16;
    if (p->dtype == RT_BF16 && g->dtype == RT_F32) return MTA_BF16_G32;
    if (p->dtype == RT_F16 && g->dtype == RT_F16) return MTA_F16;
    if (p->dtype == RT_F16 && g->dtype == RT_F32) return MTA_F16_G32;
    return MTA_DYN_F;
}

static void mta_launch(int kind, const mta_table &tab, const adamw_f &cf, const adamw_d &cd,
                       cudaStream_t st) {
    const unsigned grid = (unsigned)tab.chunk0[tab.count];
    switch (kind) {
    case MTA_F32:
        k_adamw_multi<float, float, float><<<grid, RTC_BLOCK, 0, st>>>(tab, cf);
        break;
    case MTA_BF16:
        k_adamw_multi<__nv_bfloat16, __nv_bfloat16, float><<<grid, RTC_BLOCK, 0, st>>>(tab, cf);
        break;
    case MTA_BF16_G32:
        k_adamw_multi<__nv_bfloat16, float, float><<<grid, RTC_BLOCK, 0, st>>>(tab, cf);
        break;
    case MTA_F16:
        k_adamw_multi<__half, __half, float><<<grid, RTC_BLOCK, 0, st>>>(tab, cf);
        break;
    case MTA_F16_G32:
        k_adamw_multi<__half, float, float><<<grid, RTC_BLOCK, 0, st>>>(tab, cf);
        break;
    case MTA_DYN_F:
        k_adamw_multi_dyn<adamw_f><<<grid, RTC_BLOCK, 0, st>>>(tab, cf);
        break;
    default:
        k_adamw_multi_dyn<adamw_d><<<grid, RTC_BLOCK, 0, st>>>(tab, cd);
        break;
    }
}

extern "C" int rtc_adamw_step_multi(int n, const rtc_view *params, const rtc_view *grads,
                                    const rtc_view *exp_avgs, const rtc_view *exp_avg_sqs,
                                    double lr, double beta1, double beta2, double eps,
                                    double weight_decay, int64_t step) {
    adamw_f cf;
    adamw_d cd;
    adamw_scalars(lr, beta1, beta2, eps, weight_decay, step, &cf, &cd);
    cudaStream_t st = rtc_stream();
    mta_table tab;
    /* One sweep over the list per kernel kind present (a handful at most), in list order. */
    unsigned present = 0;
    for (int i = 0; i < n; i++)
        present |= 1u << mta_kind(&params[i], &grads[i], &exp_avgs[i], &exp_avg_sqs[i]);
    for (int kind = 0; kind < MTA_KINDS; kind++) {
        if (!(present & (1u << kind))) continue;
        tab.count = 0;
        tab.chunk0[0] = 0;
        for (int i = 0; i < n; i++) {
            const rtc_view *p = &params[i], *g = &grads[i], *m = &exp_avgs[i], *v = &exp_avg_sqs[i];
            if (p->numel <= 0 || mta_kind(p, g, m, v) != kind) continue;
            const int64_t chunks = (p->numel + MTA_CHUNK - 1) / MTA_CHUNK;
            if (chunks > INT_MAX)
                return rt_error_set(RT_ERR_INVALID, __FILE__, __LINE__,
                                    "adamw_step_multi: tensor %d has %lld elements, more than "
                                    "one launch takes (%lld)",
                                    i, (long long)p->numel, (long long)INT_MAX * MTA_CHUNK);
            /* full, or this tensor's chunks would overflow the grid: launch what is there */
            if (tab.count == MTA_CAP || (int64_t)tab.chunk0[tab.count] + chunks > INT_MAX) {
                mta_launch(kind, tab, cf, cd, st);
                RTC_LAUNCH_CHECK("adamw_step_multi");
                tab.count = 0;
            }
            const int t = tab.count;
            if (t == 0) tab.chunk0[0] = 0;
            tab.p[t] = p->data;
            tab.g[t] = g->data;
            tab.m[t] = m->data;
            tab.v[t] = v->data;
            tab.n[t] = p->numel;
            tab.dt[t][0] = (unsigned char)p->dtype;
            tab.dt[t][1] = (unsigned char)g->dtype;
            tab.dt[t][2] = (unsigned char)m->dtype;
            tab.dt[t][3] = (unsigned char)v->dtype;
            tab.chunk0[t + 1] = tab.chunk0[t] + (int)chunks;
            tab.count = t + 1;
        }
        if (tab.count > 0) {
            mta_launch(kind, tab, cf, cd, st);
            RTC_LAUNCH_CHECK("adamw_step_multi");
        }
    }
    return RT_OK;
}
