/* cross_entropy.cu: fused log-softmax + NLL with ignore_index and label smoothing, and its
 * backward, on the GPU (the rules of kernels/cpu/cross_entropy.c). Logits are (N, C, S), targets
 * and losses (N, S); per row (n, s), with lse = logsumexp over classes and eps = label_smoothing:
 *   loss = lse - (1 - eps) * x[target] - eps / C * sum_c x[c]      (0 and valid 0 where ignored)
 *   grad[c] = g * (softmax_c - eps / C - (1 - eps) * [c == target])  (0 where ignored)
 * The forward reads the logits once; when classes are contiguous a warp takes a row, otherwise a
 * thread takes a row (then neighbouring rows are neighbouring addresses). With 16-byte loads
 * (aligned rows) a row of at most 8 vectors per lane (1024 f32, 2048 bf16/f16, 512 f64) is held in
 * registers and folded in two passes (k_ce_fwd_reg, the fastest measured: its comment has the
 * numbers); longer rows stream through k_ce_fwd_pipe (an online log-sum-exp over double-buffered
 * chunks); unaligned rows use scalar loads (k_ce_fwd).
 *
 * One launch per forward: for reduction mean/sum each block sums its rows' losses and valid counts
 * (in double) into a per-block partial, and the last block to finish (a ticket counter in the
 * stream's workspace, deferred.c) adds the partials in block order (deterministic for a given
 * grid) and writes the 0-d result in the logits' dtype and the count.
 *
 * Bad targets: a target outside [0, C) that is not ignore_index contributes nothing (x[target] is
 * never read, its loss is 0 and it does not count as valid), and the first such flat
 * position is reported through the device's error slot (deferred.c) instead of the host waiting for
 * the check: the RT_ERR_INDEX, with the CPU backend's message plus a note that it was deferred, is
 * raised at the next synchronize / stream or event synchronize / copy to the host (item(),
 * to("cpu"), totable) or at the start of the next cross_entropy call or backward. A backward that
 * runs before the report gives such a row no gradient, as the forward gave it no loss. */
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

/* exp for the vector scan: the hardware ex2 for f32 accumulation (two instructions instead of
 * about fifteen, so the 16-byte path stays memory-bound; relative error a few ulp near the row
 * maximum, where the sum's terms matter), exp for f64. exp(-inf) is 0, NaN stays NaN. */
__device__ __forceinline__ float ce_exp(float x) {
    return __expf(x);
}
__device__ __forceinline__ double ce_exp(double x) {
    return exp(x);
}

/* One 16-byte vector of a row into the online state. */
template <typename T, typename A, int V>
__device__ __forceinline__ void ce_vec_add(const rvec<T, V> &t, lse_state<A> &st, A &sx) {
    A v[V], m = st.m;
#pragma unroll
    for (int k = 0; k < V; k++) {
        v[k] = rio<T>::ld(t.v[k]);
        m = nmax(m, v[k]);
        sx += v[k];
    }
    A s = st.m == m ? st.s : st.s * ce_exp(st.m - m);
#pragma unroll
    for (int k = 0; k < V; k++)
        s += v[k] == A(-INFINITY) ? A(0) : ce_exp(v[k] - m);
    st.m = m;
    st.s = s;
}

/* The same with 16-byte vectors (classes contiguous, C % V == 0, row 16-byte aligned). CE_UNROLL
 * vectors per lane are loaded before any is folded in, so a warp keeps several requests in flight
 * (a row of 1024 f32 is two rounds instead of eight); each lane still folds its vectors in
 * ascending order, so the result is the same as one vector at a time. */
#define CE_UNROLL 4
template <typename T, typename A>
__device__ __forceinline__ void ce_scan_vec(const T *xr, int64_t C, int lane, lse_state<A> &st,
                                            A &sx) {
    constexpr int V = 16 / sizeof(T);
    constexpr int64_t W = 32 * V; /* elements per warp step */
    int64_t c = (int64_t)lane * V;
    for (; c + (CE_UNROLL - 1) * W < C; c += CE_UNROLL * W) {
        rvec<T, V> t[CE_UNROLL];
#pragma unroll
        for (int u = 0; u < CE_UNROLL; u++)
            t[u] = *(const rvec<T, V> *)(xr + c + u * W);
#pragma unroll
        for (int u = 0; u < CE_UNROLL; u++)
            ce_vec_add<T, A, V>(t[u], st, sx);
    }
    for (; c < C; c += W) {
        rvec<T, V> t = *(const rvec<T, V> *)(xr + c);
        ce_vec_add<T, A, V>(t, st, sx);
    }
}

/* Where the forward writes (any pointer may be NULL). */
struct ce_out {
    char *loss; /* per-row losses (N, S), reduction none */
    int ldt;
    char *valid; /* per-row 1 / 0 (N, S) */
    int vdt;
    char *red; /* 0-d sum or mean, in the logits' dtype */
    int rdt;
    char *cnt; /* 0-d count of valid rows, in the compute dtype */
    int cdt;
    int mean;
};

/* The stream's reduction workspace and the device's error slot (deferred.c). */
struct ce_fin {
    rtc_red_hdr *hdr;
    double *part;
    rtc_err_slot *slot;
};

/* Publish the first bad target to the mapped error slot; the host reads it without a CUDA call
 * (deferred.c), so the fields are written before the flag with a system-scope fence between. An
 * earlier report the host has not raised yet is kept (it surfaces first). */
__device__ void ce_report(const ce_geo &g, const int64_t *tgt, unsigned long long pos,
                          int64_t ignore_index, rtc_err_slot *slot) {
    volatile rtc_err_slot *s = slot;
    if (s->flag) return;
    int64_t n = (int64_t)pos / g.S, sp = (int64_t)pos - n * g.S;
    s->op = RTC_ERR_OP_CROSS_ENTROPY;
    s->pos = (long long)pos;
    s->value = (long long)tgt[n * g.ts0 + sp * g.ts1];
    s->bound = (long long)g.C;
    s->extra = (long long)ignore_index;
    __threadfence_system();
    s->flag = 1;
}

/* Row r's (n, s): no 64-bit division in the common 2-d case (S == 1). */
__device__ __forceinline__ void ce_split(const ce_geo &g, int64_t r, int64_t &n, int64_t &s) {
    if (g.S == 1) {
        n = r;
        s = 0;
    } else {
        n = r / g.S;
        s = r - n * g.S;
    }
}

/* The end of a forward launch: the block sums its threads' losses and valid counts into its
 * partial (warp sums, then thread 0 over the warps in order: one barrier, not a tree of them), and
 * the last block to take a ticket (the threadfence reduction) adds the partials in block order,
 * writes the 0-d results, publishes the first bad target and leaves the workspace ready for the
 * next launch. Every thread of the block calls it. The last block reads the partials CE_FIN_U per
 * thread at a time, so a grid of thousands of blocks costs a few L2 round trips, not one per 256
 * blocks. The order of every sum is fixed for a given grid, so the result is deterministic. */
#define CE_FIN_U 8
__device__ __forceinline__ void ce_finish(double acc, double nvalid, const ce_geo &g,
                                          const int64_t *tgt, const ce_out &o, int64_t ignore_index,
                                          const ce_fin &f) {
    __shared__ double sa[32], sc[32];
    __shared__ bool last;
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    if (o.red) {
        acc = warp_sum(acc);
        nvalid = warp_sum(nvalid);
        if (lane == 0) {
            sa[wid] = acc;
            sc[wid] = nvalid;
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        if (o.red) {
            double a = 0, c = 0;
            for (int w = 0; w < (int)(blockDim.x >> 5); w++) {
                a += sa[w];
                c += sc[w];
            }
            f.part[2 * blockIdx.x] = a;
            f.part[2 * blockIdx.x + 1] = c;
        }
        __threadfence();
        last = atomicAdd(&f.hdr->counter, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    if (o.red) {
        double a = 0, c = 0;
        for (unsigned b0 = threadIdx.x; b0 < gridDim.x; b0 += CE_FIN_U * blockDim.x) {
            double pa[CE_FIN_U], pc[CE_FIN_U];
#pragma unroll
            for (int u = 0; u < CE_FIN_U; u++) {
                unsigned b = b0 + u * blockDim.x;
                pa[u] = b < gridDim.x ? __ldcg(&f.part[2 * b]) : 0.0;
                pc[u] = b < gridDim.x ? __ldcg(&f.part[2 * b + 1]) : 0.0;
            }
#pragma unroll
            for (int u = 0; u < CE_FIN_U; u++) {
                a += pa[u];
                c += pc[u];
            }
        }
        a = block_sum(a, sa);
        c = block_sum(c, sc);
        if (threadIdx.x == 0) {
            rtc_std(o.red, o.rdt, o.mean ? a / c : a); /* mean over no valid row: NaN, as 0/0 */
            if (o.cnt) rtc_std(o.cnt, o.cdt, c);
        }
    }
    if (threadIdx.x == 0) {
        /* leave the workspace ready for the next launch on this stream */
        unsigned long long bad = atomicExch(&f.hdr->bad, RTC_NO_BAD);
        if (bad != RTC_NO_BAD) ce_report(g, tgt, bad, ignore_index, f.slot);
        atomicExch(&f.hdr->counter, 0u);
    }
}

/* MODE 0: thread per row, 1: warp per row (scalar loads); the 16-byte cases are k_ce_fwd_reg and
 * k_ce_fwd_pipe */
template <typename T, int MODE>
__global__ void __launch_bounds__(256, 6) /* 40 registers: 48 warps per SM in flight */
    k_ce_fwd(ce_geo g, const T *__restrict__ x, const int64_t *__restrict__ tgt, ce_out o,
             int64_t ignore_index, double eps_d, ce_fin f) {
    typedef typename racc<T>::type A;
    int64_t rows = g.N * g.S;
    int lane = MODE ? (threadIdx.x & 31) : 0;
    int64_t r0 = MODE ? (int64_t)blockIdx.x * CE_WARPS + (threadIdx.x >> 5)
                      : (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t rstep = MODE ? (int64_t)gridDim.x * CE_WARPS : (int64_t)gridDim.x * blockDim.x;
    A eps = (A)eps_d;
    double acc = 0, nvalid = 0; /* this thread's rows (lane 0 of a warp in the warp modes) */
    for (int64_t r = r0; r < rows; r += rstep) {
        int64_t n = r / g.S, s = r - n * g.S;
        int64_t t = tgt[n * g.ts0 + s * g.ts1];
        bool ignored = t == ignore_index;
        bool ok = !ignored && t >= 0 && t < g.C; /* uniform over a warp's row */
        /* the row is scanned whatever its target (it is in bounds either way), so its loads are
         * issued together with the target's instead of after it; only x[t] waits for t */
        const T *xr = x + n * g.xs0 + s * g.xs2;
        lse_state<A> st = {A(-INFINITY), A(0)};
        A sx = 0;
        ce_scan<T, A>(xr, g.xs1, g.C, lane, MODE ? 32 : 1, st, sx);
        if (MODE) {
            st = warp_lse(st);
            sx = warp_sum(sx);
        }
        A v = 0;
        if (ok) {
            v = lse_value(st) - (A(1) - eps) * rio<T>::ld(xr[t * g.xs1]);
            if (eps != A(0)) v -= eps / (A)g.C * sx;
        } else if (!ignored && lane == 0) {
            atomicMin(&f.hdr->bad, (unsigned long long)r);
            __threadfence(); /* before this block's ticket below */
        }
        if (lane == 0) {
            if (o.loss) rst<A>(o.loss + (n * g.ls0 + s * g.ls1) * rtc_dtype_size(o.ldt), o.ldt, v);
            if (o.valid)
                rst<A>(o.valid + (n * g.vs0 + s * g.vs1) * rtc_dtype_size(o.vdt), o.vdt,
                       ok ? A(1) : A(0));
            acc += (double)v;
            nvalid += ok ? 1.0 : 0.0;
        }
    }
    ce_finish(acc, nvalid, g, tgt, o, ignore_index, f);
}

/* ---- the streaming forward (classes contiguous, 16-byte vectors, rows longer than
 * k_ce_fwd_reg holds) -----------------------------------------------------------------------------
 *
 * Why this shape streams: HBM only reaches its bandwidth when enough bytes are in flight per SM
 * to cover the DRAM latency (Little's law: ~4.8 TB/s x ~0.7 us is ~3.4 MB over 132 SMs, ~26 KB
 * per SM). The earlier one-row-per-warp launch had a warp issue its row's loads, wait, reduce,
 * and exit, with 8192 short blocks: each warp had loads outstanding only part of its life, and
 * block starts, the block reduction and the ticket atomic left gaps between waves. Here
 *  - the grid is persistent (the blocks that fit on the SMs at once, never more), and each warp
 *    walks rows gw, gw + nwarps, ... (neighbouring warps read neighbouring rows, so DRAM pages stay
 *    open), so there are no waves, and the reduction and ticket happen once per block at the end;
 *  - a warp walks its rows as a stream of chunks of CE_U 16-byte vectors per lane (a 1024-float
 *    row is one chunk), double-buffered: the next chunk's CE_U loads (and at a row start its
 * target) are issued before the current chunk's math, so each lane has CE_U x 16 bytes in flight
 * while it computes; 16 warps per SM x 32 lanes x 8 x 16 B = 64 KB per SM, over twice the ~26 KB
 * needed;
 *  - the logits are read exactly once with streaming (evict-first) loads, the online max / sum
 *    runs over registers (one rescale per chunk: max of the chunk first, then its exps), x[target]
 *    is picked out of the registers as they pass (no dependent load after the row), and only the
 *    final per-block reduction touches shared memory;
 *  - the math per element (max, add, sub, ex2, add, a compare-select for the target) is a few
 *    instructions against ~3 elements per clock per SM that the bandwidth delivers, so the SM
 *    stays memory-bound.
 * In practice (H200, 2026-11-28) it reached 2790 GB/s on 1024-float rows, where k_ce_fwd_reg
 * reaches ~3390: at 113 registers only 16 warps fit per SM, and each warp's fold is a latency
 * chain that the double buffer does not hide. It stays for rows longer than registers hold. */
#define CE_U 8

/* 16 bytes as V values of the accumulation type (bit operations; no memory round trip). */
template <typename T> struct ce_dec;
template <> struct ce_dec<float> {
    __device__ static void run(uint4 w, float *o) {
        o[0] = __uint_as_float(w.x), o[1] = __uint_as_float(w.y);
        o[2] = __uint_as_float(w.z), o[3] = __uint_as_float(w.w);
    }
};
template <> struct ce_dec<double> {
    __device__ static void run(uint4 w, double *o) {
        o[0] = __hiloint2double((int)w.y, (int)w.x);
        o[1] = __hiloint2double((int)w.w, (int)w.z);
    }
};
template <> struct ce_dec<__nv_bfloat16> { /* bf16 is the top half of an f32 */
    __device__ static void run(uint4 w, float *o) {
        unsigned u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int k = 0; k < 4; k++) {
            o[2 * k] = __uint_as_float(u[k] << 16);
            o[2 * k + 1] = __uint_as_float(u[k] & 0xffff0000u);
        }
    }
};
template <> struct ce_dec<__half> {
    __device__ static void run(uint4 w, float *o) {
        unsigned u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int k = 0; k < 4; k++) {
            o[2 * k] = __half2float(__ushort_as_half((unsigned short)(u[k] & 0xffffu)));
            o[2 * k + 1] = __half2float(__ushort_as_half((unsigned short)(u[k] >> 16)));
        }
    }
};

/* One chunk of a row for this lane: vector u covers elements e0 + u * W .. + V - 1; vectors past
 * the row's end are not loaded (lim: how many are in the row, the same u < lim rule at fold). */
template <typename T>
__device__ __forceinline__ void ce_chunk_load(const T *xr, int64_t e0, int64_t C, uint4 *buf) {
    constexpr int V = 16 / sizeof(T);
    constexpr int64_t W = 32 * V;
#pragma unroll
    for (int u = 0; u < CE_U; u++)
        if (e0 + u * W < C) buf[u] = __ldcs((const uint4 *)(xr + e0 + u * W));
}

template <typename T>
__global__ void __launch_bounds__(32 * CE_WARPS, 2)
    k_ce_fwd_pipe(ce_geo g, const T *__restrict__ x, const int64_t *__restrict__ tgt, ce_out o,
                  int64_t ignore_index, double eps_d, ce_fin f) {
    typedef typename racc<T>::type A;
    constexpr int V = 16 / sizeof(T);
    constexpr int64_t W = 32 * V, CH = CE_U * W; /* elements per warp vector step, per chunk */
    const int64_t rows = g.N * g.S, C = g.C, nch = (C + CH - 1) / CH;
    const int lane = threadIdx.x & 31;
    const int64_t nw = (int64_t)gridDim.x * CE_WARPS;
    int64_t r = (int64_t)blockIdx.x * CE_WARPS + (threadIdx.x >> 5), j = 0;
    const A eps = (A)eps_d;
    double acc = 0, nvalid = 0; /* lane 0's rows */
    uint4 cur[CE_U] = {}, nxt[CE_U] = {};
    int64_t t = 0, tn = 0;
    const T *xr = NULL, *xn = NULL;
    if (r < rows) {
        int64_t n, s;
        ce_split(g, r, n, s);
        t = tgt[n * g.ts0 + s * g.ts1];
        xr = x + n * g.xs0 + s * g.xs2;
        ce_chunk_load<T>(xr, (int64_t)lane * V, C, cur);
    }
    lse_state<A> st = {A(-INFINITY), A(0)};
    A sx = 0, xt = 0;
    while (r < rows) {
        /* issue the next chunk (of this row, or the first of the warp's next row) */
        int64_t rn = r, jn = j + 1;
        xn = xr;
        if (jn == nch) {
            jn = 0;
            rn = r + nw;
            if (rn < rows) {
                int64_t n, s;
                ce_split(g, rn, n, s);
                tn = tgt[n * g.ts0 + s * g.ts1];
                xn = x + n * g.xs0 + s * g.xs2;
            }
        }
        if (rn < rows) ce_chunk_load<T>(xn, jn * CH + (int64_t)lane * V, C, nxt);
        /* fold the current chunk: max first, one rescale, then the exps */
        const int64_t e0 = j * CH + (int64_t)lane * V;
        const int64_t d64 = t - e0; /* x[t] is vector u's element k when d == u * W + k */
        const int d = d64 >= 0 && d64 < CH ? (int)d64 : -1;
        A m = st.m;
#pragma unroll
        for (int u = 0; u < CE_U; u++) {
            if (e0 + u * W < C) {
                A v[V];
                ce_dec<T>::run(cur[u], v);
#pragma unroll
                for (int k = 0; k < V; k++)
                    m = nmax(m, v[k]);
            }
        }
        /* m = -inf only when every value so far is -inf (or NaN): then exp(v - 0) gives 0 for
         * -inf and NaN for NaN, as the scalar online rule does */
        const A mz = m == A(-INFINITY) ? A(0) : m;
        A s = st.m == m ? st.s : st.s * ce_exp(st.m - m);
#pragma unroll
        for (int u = 0; u < CE_U; u++) {
            if (e0 + u * W < C) {
                A v[V];
                ce_dec<T>::run(cur[u], v);
#pragma unroll
                for (int k = 0; k < V; k++) {
                    s += ce_exp(v[k] - mz);
                    sx += v[k];
                    xt = d == (int)(u * W) + k ? v[k] : xt;
                }
            }
        }
        st.m = m;
        st.s = s;
        if (jn == 0) { /* the row is complete */
            lse_state<A> w = warp_lse(st);
            A wsx = warp_sum(sx), wxt = warp_sum(xt); /* one lane holds x[t] (none if t is bad) */
            bool ignored = t == ignore_index, ok = !ignored && t >= 0 && t < C;
            A v = 0;
            if (ok) {
                v = lse_value(w) - (A(1) - eps) * wxt;
                if (eps != A(0)) v -= eps / (A)C * wsx;
            } else if (!ignored && lane == 0) {
                atomicMin(&f.hdr->bad, (unsigned long long)r);
                __threadfence(); /* before this block's ticket */
            }
            if (lane == 0) {
                int64_t n, sp;
                ce_split(g, r, n, sp);
                if (o.loss)
                    rst<A>(o.loss + (n * g.ls0 + sp * g.ls1) * rtc_dtype_size(o.ldt), o.ldt, v);
                if (o.valid)
                    rst<A>(o.valid + (n * g.vs0 + sp * g.vs1) * rtc_dtype_size(o.vdt), o.vdt,
                           ok ? A(1) : A(0));
                acc += (double)v;
                nvalid += ok ? 1.0 : 0.0;
            }
            st.m = A(-INFINITY);
            st.s = A(0);
            sx = 0;
            xt = 0;
            t = tn;
        }
#pragma unroll
        for (int u = 0; u < CE_U; u++)
            cur[u] = nxt[u];
        r = rn;
        j = jn;
        xr = xn;
    }
    ce_finish(acc, nvalid, g, tgt, o, ignore_index, f);
}

/* The persistent grid of k_ce_fwd_pipe: as many blocks as are resident at once on one SM (asked of
 * the occupancy calculator once per dtype; 2 if it cannot say), times the SMs. */
template <typename T> static int ce_pipe_per_sm(void) {
    int nb = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, k_ce_fwd_pipe<T>, 32 * CE_WARPS, 0) !=
            cudaSuccess ||
        nb < 1) {
        cudaGetLastError();
        nb = 2;
    }
    return nb;
}

/* ---- the register forward (classes contiguous, 16-byte vectors, a row of at most 8 vectors per
 * lane: 1024 f32, 2048 bf16/f16, 512 f64) -------------------------------------------------------
 *
 * A warp takes a row held in registers (IT 16-byte vectors per lane) and folds it in two passes
 * over the registers: the row max (one warp_max), then the sum of exp(x - max), the sum of x and
 * x[target] (picked out of the registers by a compile-time position compare). No online
 * rescaling. ce_row_reg is that fold plus the row's bookkeeping (loss, valid, bad target, lane 0's
 * running sums); k_ce_fwd_reg below brings the rows to it. */
template <typename T, int IT>
__device__ __forceinline__ void ce_row_reg(const uint4 *buf, const ce_geo &g, int64_t r, int64_t t,
                                           const ce_out &o, int64_t ignore_index,
                                           typename racc<T>::type eps, const ce_fin &f, int lane,
                                           double &acc, double &nvalid) {
    typedef typename racc<T>::type A;
    constexpr int V = 16 / sizeof(T), W = 32 * V;
    const int64_t C = g.C;
    A m = A(-INFINITY);
#pragma unroll
    for (int it = 0; it < IT; it++) {
        if ((int64_t)(it * 32 + lane) * V < C) {
            A v[V];
            ce_dec<T>::run(buf[it], v);
#pragma unroll
            for (int k = 0; k < V; k++)
                m = nmax(m, v[k]);
        }
    }
    m = warp_max(m);
    /* m = -inf only when every value is -inf (or NaN): exp(v - 0) is then 0 for -inf and NaN for
     * NaN, as the online rule gives */
    const A mz = m == A(-INFINITY) ? A(0) : m;
    const int64_t d64 = t - (int64_t)lane * V; /* x[t] is (it, k) when d == it * W + k */
    const int d = d64 >= 0 && d64 < (int64_t)IT * W ? (int)d64 : -1;
    A s = 0, sx = 0, xt = 0;
#pragma unroll
    for (int it = 0; it < IT; it++) {
        if ((int64_t)(it * 32 + lane) * V < C) {
            A v[V];
            ce_dec<T>::run(buf[it], v);
#pragma unroll
            for (int k = 0; k < V; k++) {
                s += ce_exp(v[k] - mz);
                sx += v[k];
                xt = d == it * W + k ? v[k] : xt;
            }
        }
    }
    s = warp_sum(s);
    sx = warp_sum(sx);
    xt = warp_sum(xt); /* one lane holds x[t] (none if t is bad) */
    const bool ignored = t == ignore_index, ok = !ignored && t >= 0 && t < C;
    A v = 0;
    if (ok) {
        v = (m + log(s)) - (A(1) - eps) * xt;
        if (eps != A(0)) v -= eps / (A)C * sx;
    } else if (!ignored && lane == 0) {
        atomicMin(&f.hdr->bad, (unsigned long long)r);
        __threadfence(); /* before this block's ticket */
    }
    if (lane == 0) {
        int64_t n, sp;
        ce_split(g, r, n, sp);
        if (o.loss) rst<A>(o.loss + (n * g.ls0 + sp * g.ls1) * rtc_dtype_size(o.ldt), o.ldt, v);
        if (o.valid)
            rst<A>(o.valid + (n * g.vs0 + sp * g.vs1) * rtc_dtype_size(o.vdt), o.vdt,
                   ok ? A(1) : A(0));
        acc += (double)v;
        nvalid += ok ? 1.0 : 0.0;
    }
}

/* k_ce_fwd_reg: softmax.cu's shape on a persistent grid (the blocks resident at once, never
 * more; one block reduction and ticket per block). A warp issues a row's loads (and its target)
 * at once, then folds it; the bytes in flight come from occupancy (64 registers for a 1024-float
 * row: 32 warps per SM x 4 KB), not from prefetching. Warp w takes rows w, w + nwarps, ...
 * Measured on the H200 (2026-11-28, 65536 x 1024 f32, mean): 3369-3397 GB/s, against 2790 for
 * k_ce_fwd_pipe (16 warps per SM at 113 registers), 2340-3306 for the same kernel with 2 rows per
 * warp or a non-persistent grid, and 2130-2922 for a cp.async ring in shared memory (2 to 6
 * stages, 4 or 8 warps per block: fewer warps, and the fold's latency is what binds). */
template <typename T, int IT>
__global__ void __launch_bounds__(32 * CE_WARPS)
    k_ce_fwd_reg(ce_geo g, const T *__restrict__ x, const int64_t *__restrict__ tgt, ce_out o,
                 int64_t ignore_index, double eps_d, ce_fin f) {
    typedef typename racc<T>::type A;
    constexpr int V = 16 / sizeof(T);
    const int64_t rows = g.N * g.S, C = g.C;
    const int lane = threadIdx.x & 31;
    const int64_t nw = (int64_t)gridDim.x * CE_WARPS;
    double acc = 0, nvalid = 0; /* lane 0's rows */
    for (int64_t r = (int64_t)blockIdx.x * CE_WARPS + (threadIdx.x >> 5); r < rows; r += nw) {
        int64_t n, s;
        ce_split(g, r, n, s);
        const int64_t t = tgt[n * g.ts0 + s * g.ts1];
        const T *xr = x + n * g.xs0 + s * g.xs2;
        uint4 buf[IT];
#pragma unroll
        for (int it = 0; it < IT; it++) {
            const int64_t e = (int64_t)(it * 32 + lane) * V;
            buf[it] = e < C ? __ldcs((const uint4 *)(xr + e)) : make_uint4(0, 0, 0, 0);
        }
        ce_row_reg<T, IT>(buf, g, r, t, o, ignore_index, (A)eps_d, f, lane, acc, nvalid);
    }
    ce_finish(acc, nvalid, g, tgt, o, ignore_index, f);
}

/* Blocks of k_ce_fwd_reg<T, IT> resident at once on one SM (asked of the occupancy calculator once
 * per instance; 4 if it cannot say). */
template <typename T, int IT> static int ce_reg_per_sm(void) {
    int nb = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, k_ce_fwd_reg<T, IT>, 32 * CE_WARPS, 0) !=
            cudaSuccess ||
        nb < 1) {
        cudaGetLastError();
        nb = 4;
    }
    return nb;
}

template <typename T, int IT>
static void ce_launch_reg(const ce_geo &g, const T *xp, const int64_t *tp, const ce_out &o,
                          int64_t ignore_index, double eps, const ce_fin &f, int64_t cap,
                          cudaStream_t st) {
    static const int per_sm = ce_reg_per_sm<T, IT>();
    const int64_t rows = g.N * g.S, need = (rows + CE_WARPS - 1) / CE_WARPS;
    int64_t nb = (int64_t)rtc_sm_count() * per_sm;
    if (nb > need) nb = need;
    if (nb > cap) nb = cap;
    k_ce_fwd_reg<T, IT><<<(unsigned)nb, 32 * CE_WARPS, 0, st>>>(g, xp, tp, o, ignore_index, eps, f);
}

/* The register forward when the row fits in 8 vectors per lane (false: take the pipe). */
template <typename T>
static bool ce_try_reg(const ce_geo &g, const T *xp, const int64_t *tp, const ce_out &o,
                       int64_t ignore_index, double eps, const ce_fin &f, int64_t cap,
                       cudaStream_t st) {
    constexpr int64_t W = 32 * (16 / sizeof(T));
    if (g.C <= W)
        ce_launch_reg<T, 1>(g, xp, tp, o, ignore_index, eps, f, cap, st);
    else if (g.C <= 2 * W)
        ce_launch_reg<T, 2>(g, xp, tp, o, ignore_index, eps, f, cap, st);
    else if (g.C <= 4 * W)
        ce_launch_reg<T, 4>(g, xp, tp, o, ignore_index, eps, f, cap, st);
    else if (g.C <= 8 * W)
        ce_launch_reg<T, 8>(g, xp, tp, o, ignore_index, eps, f, cap, st);
    else
        return false;
    return true;
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
        /* ignored, or a bad target the forward left out (and reported): no gradient */
        if (t == ignore_index || t < 0 || t >= g.C) {
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
    g.ls0 = l ? l->strides[0] : 0, g.ls1 = l ? l->strides[1] : 0;
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
static int ce_fwd_t(const ce_geo &g, const rtc_view *logits, const rtc_view *target,
                    const ce_out &o, int64_t ignore_index, double eps) {
    int64_t rows = g.N * g.S;
    ce_fin f;
    int64_t cap;
    RTC_TRY(rtc_red_workspace("cross_entropy", &f.hdr, &f.part, &cap));
    RTC_TRY(rtc_err_slot_get("cross_entropy", &f.slot));
    int mode = ce_mode(g, logits, sizeof(T));
    if (mode == 2 && g.C == 0) mode = 1; /* the chunk stream needs a chunk per row */
    cudaStream_t st = rtc_stream();
    const T *xp = (const T *)logits->data;
    const int64_t *tp = (const int64_t *)target->data;
    if (mode == 0) {
        int64_t grid = rtc_grid(rows, RTC_BLOCK);
        k_ce_fwd<T, 0><<<(unsigned)(grid < cap ? grid : cap), RTC_BLOCK, 0, st>>>(
            g, xp, tp, o, ignore_index, eps, f);
    } else if (mode == 2) {
        /* rows of at most 8 vectors per lane in registers; longer ones through the pipe, on a
         * persistent grid (the blocks resident at once, never more) */
        if (!ce_try_reg<T>(g, xp, tp, o, ignore_index, eps, f, cap, st)) {
            static const int per_sm = ce_pipe_per_sm<T>();
            int64_t nb = (rows + CE_WARPS - 1) / CE_WARPS, lim = (int64_t)rtc_sm_count() * per_sm;
            if (lim > cap) lim = cap;
            unsigned grid = (unsigned)(nb < lim ? nb : lim);
            k_ce_fwd_pipe<T><<<grid, 32 * CE_WARPS, 0, st>>>(g, xp, tp, o, ignore_index, eps, f);
        }
    } else {
        int64_t nb = (rows + CE_WARPS - 1) / CE_WARPS, lim = (int64_t)rtc_sm_count() * 64;
        if (lim > cap) lim = cap;
        unsigned grid = (unsigned)(nb < lim ? nb : lim);
        k_ce_fwd<T, 1><<<grid, 32 * CE_WARPS, 0, st>>>(g, xp, tp, o, ignore_index, eps, f);
    }
    RTC_LAUNCH_CHECK("cross_entropy");
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

static int ce_fwd_dispatch(const ce_geo &g, const rtc_view *logits, const rtc_view *target,
                           const ce_out &o, int64_t ignore_index, double eps) {
    switch (logits->dtype) {
    case RT_F32:
        return ce_fwd_t<float>(g, logits, target, o, ignore_index, eps);
    case RT_BF16:
        return ce_fwd_t<__nv_bfloat16>(g, logits, target, o, ignore_index, eps);
    case RT_F16:
        return ce_fwd_t<__half>(g, logits, target, o, ignore_index, eps);
    case RT_F64:
        return ce_fwd_t<double>(g, logits, target, o, ignore_index, eps);
    }
    return ce_dtype_err("cross_entropy", logits->dtype);
}

/* A bad target of an earlier call on this device is raised before this call's work is queued. */
static int ce_pending(const char *where) {
    return rtc_deferred_check(rtc_current_device(), where);
}

extern "C" int rtc_cross_entropy(const rtc_view *loss, const rtc_view *valid,
                                 const rtc_view *logits, const rtc_view *target,
                                 int64_t ignore_index, double label_smoothing) {
    RTC_TRY(ce_pending("the start of the next cross_entropy"));
    if (target->dtype != RT_I64)
        return RTC_ERR(RT_ERR_DTYPE, "cross_entropy: expected int64 targets");
    ce_geo g = ce_geo_of(logits, target, loss, valid, NULL);
    if (g.N * g.S == 0) return RT_OK;
    ce_out o = {loss->data,
                loss->dtype,
                valid ? valid->data : NULL,
                valid ? valid->dtype : RT_F32,
                NULL,
                RT_F32,
                NULL,
                RT_F32,
                0};
    return ce_fwd_dispatch(g, logits, target, o, ignore_index, label_smoothing);
}

extern "C" int rtc_cross_entropy_reduce(const rtc_view *out, const rtc_view *count,
                                        const rtc_view *logits, const rtc_view *target,
                                        int64_t ignore_index, int reduction,
                                        double label_smoothing) {
    RTC_TRY(ce_pending("the start of the next cross_entropy"));
    if (target->dtype != RT_I64)
        return RTC_ERR(RT_ERR_DTYPE, "cross_entropy: expected int64 targets");
    if (reduction != 1 && reduction != 2)
        return RTC_ERR(RT_ERR_INVALID,
                       "cross_entropy: the fused CUDA reduction takes mean (1) or sum (2), got %d",
                       reduction);
    ce_geo g = ce_geo_of(logits, target, NULL, NULL, NULL);
    if (g.N * g.S == 0) { /* no rows: sum 0, mean 0/0 */
        RTC_TRY(rtc_fill(out, reduction == 1 ? (double)NAN : 0.0));
        return count ? rtc_fill(count, 0.0) : RT_OK;
    }
    ce_out o = {NULL,
                RT_F32,
                NULL,
                RT_F32,
                out->data,
                out->dtype,
                count ? count->data : NULL,
                count ? count->dtype : RT_F32,
                reduction == 1};
    return ce_fwd_dispatch(g, logits, target, o, ignore_index, label_smoothing);
}

extern "C" int rtc_cross_entropy_backward(const rtc_view *grad_logits, const rtc_view *grad_loss,
                                          const rtc_view *logits, const rtc_view *target,
                                          int64_t ignore_index, double label_smoothing) {
    RTC_TRY(ce_pending("the start of cross_entropy backward"));
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
