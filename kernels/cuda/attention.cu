/* attention.cu: scaled-dot-product attention forward and backward on the GPU in the flash-attention
 * style, with the rules of kernels/cpu/attention.c: no T x S matrix in device memory; the forward
 * tiles over keys with an online softmax and writes the per-row log-sum-exp (natural log, f32; f64
 * for f64 inputs); the backward recomputes the probabilities from it. Causal masks key j > query i
 * (top-left aligned); the optional mask (broadcast strides) is bool (true = attend) or float (added
 * to the scores); rows with every key masked give output 0, lse -inf and zero gradients. Dropout on
 * the probabilities keeps element n = ((b H + h) T + i) S + j when the top 24 bits of lane n % 4 of
 * Philox4x32-10(seed, offset + n / 4) are >= ceil(p 2^24) (the CPU's rule, so masks match).
 *
 * Fast path (bf16/f16, head dim 64 or 128 for both q/k and v, unit stride on the head dim, 16-byte
 * aligned rows): tensor cores through mma.sync m16n8k16 with f32 accumulation, ldmatrix from
 * padded shared-memory tiles filled by cp.async (double-buffered). Each warp owns 16 or 32 rows;
 * the probabilities go from the score accumulators straight into the A operand of the next product
 * (the register layouts coincide). Causal blocks stop at the diagonal and only tiles crossing it
 * (or the sequence end, or with a user mask) pay for masking; the scale is folded into exp2.
 * Forward: a block of 128 queries walks the key tiles with an online softmax.
 * Backward: Dl_i = dO_i . O_i first, then a key-tile kernel for dK, dV (and the mask gradient).
 * dQ comes either from the same kernel, each block adding its part in f32 with atomics into a
 * scratch buffer that a last kernel scales and casts (FlashAttention-2's scheme; the summation
 * order varies between runs), or, in the deterministic mode (RAMTORCH_ATTN_DETERMINISTIC=1), from
 * a query-tile kernel that recomputes the scores and sums each element in a fixed order.
 * Generic path (any float dtype, any head dims, any strides): one warp per row in the compute type
 * (f32 for f32/bf16/f16, f64 for f64), the same passes as the CPU kernel. */
#include "attention_frag.cuh"
#include "attention_params.cuh"
#include "rowops.cuh"

#include <float.h>
#include <stdlib.h>
#include <string.h>

#define LOG2E_F 1.4426950408889634f
#define LN2_F 0.6931471805599453f

/* ================================================================================================
 * parameters and shared helpers
 * ============================================================================================== */

static av4 av_of(const rtc_view *v) {
    av4 a;
    a.p = v ? v->data : NULL;
    a.dt = v ? v->dtype : RT_F32;
    for (int d = 0; d < 4; d++)
        a.s[d] = v ? v->strides[d] : 0;
    return a;
}

__device__ __forceinline__ bool attn_keep(const attn_p &p, uint64_t n) {
    uint32_t r[4];
    rtc_philox(p.seed, p.offset + n / 4, r);
    return (r[n % 4] >> 8) >= p.thresh;
}

/* keep flags of elements n0 and n0 + 1 (one Philox call when they share a group) */
__device__ __forceinline__ void attn_keep2(const attn_p &p, uint64_t n0, bool *k0, bool *k1) {
    uint32_t r[4];
    rtc_philox(p.seed, p.offset + n0 / 4, r);
    *k0 = (r[n0 % 4] >> 8) >= p.thresh;
    uint64_t n1 = n0 + 1;
    if (n1 % 4 == 0) rtc_philox(p.seed, p.offset + n1 / 4, r);
    *k1 = (r[n1 % 4] >> 8) >= p.thresh;
}

/* false where the mask excludes (b, h, i, j); *add gets the additive part otherwise */
template <typename A>
__device__ __forceinline__ bool attn_mask_at(const attn_p &p, int64_t b, int64_t h, int64_t i,
                                             int64_t j, A *add) {
    const char *q = p.m.p + (b * p.m.s[0] + h * p.m.s[1] + i * p.m.s[2] + j * p.m.s[3]) *
                                rtc_dtype_size(p.m.dt);
    if (p.m.dt == RT_BOOL) {
        *add = 0;
        return *(const uint8_t *)q != 0;
    }
    *add = rld<A>(q, p.m.dt);
    return *add != A(-INFINITY);
}

template <typename A>
__device__ __forceinline__ A av_ld(const av4 &v, int64_t b, int64_t h, int64_t n, int64_t e) {
    return rld<A>(v.p + (b * v.s[0] + h * v.s[1] + n * v.s[2] + e * v.s[3]) * rtc_dtype_size(v.dt),
                  v.dt);
}
template <typename A>
__device__ __forceinline__ void av_st(const av4 &v, int64_t b, int64_t h, int64_t n, int64_t e,
                                      A x) {
    rst<A>(v.p + (b * v.s[0] + h * v.s[1] + n * v.s[2] + e * v.s[3]) * rtc_dtype_size(v.dt), v.dt,
           x);
}

/* Dl[bh T + i] = dO_i . O_i, one warp per row */
template <typename A> __global__ void k_attn_dl(attn_p p) {
    int64_t rows = p.B * p.H * p.T;
    int lane = threadIdx.x & 31;
    for (int64_t r = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < rows;
         r += ((int64_t)gridDim.x * blockDim.x) >> 5) {
        int64_t i = r % p.T, bh = r / p.T, b = bh / p.H, h = bh % p.H;
        A s = 0;
        for (int d = lane; d < p.Dv; d += 32)
            s += av_ld<A>(p.go, b, h, i, d) * av_ld<A>(p.o, b, h, i, d);
        s = warp_sum(s);
        if (lane == 0) ((A *)p.dl)[r] = s;
    }
}

/* ================================================================================================
 * generic path: one warp per row
 * ============================================================================================== */

#define GW 4 /* warps per block */

template <typename A> __global__ void __launch_bounds__(32 * GW) k_gen_fwd(attn_p p) {
    extern __shared__ __align__(16) char gsm[];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    A *qr = (A *)gsm + (size_t)w * (p.D + p.Dv), *acc = qr + p.D;
    int64_t rows = p.B * p.H * p.T;
    A scale = (A)p.scale, ks = (A)p.keep_scale;
    for (int64_t r = (int64_t)blockIdx.x * GW + w; r < rows; r += (int64_t)gridDim.x * GW) {
        int64_t i = r % p.T, bh = r / p.T, b = bh / p.H, h = bh % p.H;
        for (int d = lane; d < p.D; d += 32)
            qr[d] = av_ld<A>(p.q, b, h, i, d);
        for (int d = lane; d < p.Dv; d += 32)
            acc[d] = 0;
        __syncwarp();
        A m = A(-INFINITY), l = 0;
        int64_t jend = p.causal ? (i + 1 < p.S ? i + 1 : p.S) : p.S;
        for (int64_t j = 0; j < jend; j++) {
            A part = 0;
            for (int d = lane; d < p.D; d += 32)
                part += qr[d] * av_ld<A>(p.k, b, h, j, d);
            A s = warp_sum(part) * scale;
            if (p.m.p) {
                A add;
                if (!attn_mask_at<A>(p, b, h, i, j, &add)) continue;
                s += add;
            }
            if (s == A(-INFINITY)) continue;
            A mn = s > m ? s : m;
            A alpha = m == A(-INFINITY) ? A(0) : exp(m - mn), pj = exp(s - mn);
            l = l * alpha + pj;
            m = mn;
            if (p.dp > 0) pj = attn_keep(p, (uint64_t)(r * p.S + j)) ? pj * ks : A(0);
            for (int d = lane; d < p.Dv; d += 32)
                acc[d] = acc[d] * alpha + pj * av_ld<A>(p.v, b, h, j, d);
        }
        for (int d = lane; d < p.Dv; d += 32)
            av_st<A>(p.o, b, h, i, d, l > 0 ? acc[d] / l : A(0));
        if (lane == 0) ((A *)p.lse)[r] = l > 0 ? m + log(l) : A(-INFINITY);
        __syncwarp();
    }
}

/* dK, dV (and the mask gradient): one warp per key row */
template <typename A> __global__ void __launch_bounds__(32 * GW) k_gen_dkdv(attn_p p) {
    extern __shared__ __align__(16) char gsm[];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    A *dk = (A *)gsm + (size_t)w * (p.D + p.Dv), *dv = dk + p.D;
    int64_t rows = p.B * p.H * p.S;
    A scale = (A)p.scale, ks = (A)p.keep_scale;
    const A *lse = (const A *)p.lse, *Dl = (const A *)p.dl;
    A *gm = (A *)p.gm;
    for (int64_t r = (int64_t)blockIdx.x * GW + w; r < rows; r += (int64_t)gridDim.x * GW) {
        int64_t j = r % p.S, bh = r / p.S, b = bh / p.H, h = bh % p.H;
        for (int d = lane; d < p.D; d += 32)
            dk[d] = 0;
        for (int d = lane; d < p.Dv; d += 32)
            dv[d] = 0;
        __syncwarp();
        for (int64_t i = p.causal ? j : 0; i < p.T; i++) {
            A li = lse[bh * p.T + i];
            if (li == A(-INFINITY)) continue;
            A part = 0;
            for (int d = lane; d < p.D; d += 32)
                part += av_ld<A>(p.q, b, h, i, d) * av_ld<A>(p.k, b, h, j, d);
            A s = warp_sum(part) * scale;
            if (p.m.p) {
                A add;
                if (!attn_mask_at<A>(p, b, h, i, j, &add))
                    s = A(-INFINITY);
                else
                    s += add;
            }
            A ds = 0;
            if (s != A(-INFINITY)) {
                A pr = exp(s - li), kf = 1;
                if (p.dp > 0) kf = attn_keep(p, (uint64_t)((bh * p.T + i) * p.S + j)) ? ks : A(0);
                A dpart = 0;
                for (int d = lane; d < p.Dv; d += 32)
                    dpart += av_ld<A>(p.go, b, h, i, d) * av_ld<A>(p.v, b, h, j, d);
                ds = pr * (warp_sum(dpart) * kf - Dl[bh * p.T + i]);
                A pk = pr * kf, dss = ds * scale;
                for (int d = lane; d < p.Dv; d += 32)
                    dv[d] += pk * av_ld<A>(p.go, b, h, i, d);
                for (int d = lane; d < p.D; d += 32)
                    dk[d] += dss * av_ld<A>(p.q, b, h, i, d);
            }
            if (gm && lane == 0) gm[(bh * p.T + i) * p.S + j] = ds;
        }
        for (int d = lane; d < p.D; d += 32)
            av_st<A>(p.gk, b, h, j, d, dk[d]);
        for (int d = lane; d < p.Dv; d += 32)
            av_st<A>(p.gv, b, h, j, d, dv[d]);
        __syncwarp();
    }
}

/* dQ: one warp per query row */
template <typename A> __global__ void __launch_bounds__(32 * GW) k_gen_dq(attn_p p) {
    extern __shared__ __align__(16) char gsm[];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    A *dq = (A *)gsm + (size_t)w * p.D;
    int64_t rows = p.B * p.H * p.T;
    A scale = (A)p.scale, ks = (A)p.keep_scale;
    const A *lse = (const A *)p.lse, *Dl = (const A *)p.dl;
    for (int64_t r = (int64_t)blockIdx.x * GW + w; r < rows; r += (int64_t)gridDim.x * GW) {
        int64_t i = r % p.T, bh = r / p.T, b = bh / p.H, h = bh % p.H;
        for (int d = lane; d < p.D; d += 32)
            dq[d] = 0;
        __syncwarp();
        A li = lse[r];
        int64_t jend = li == A(-INFINITY) ? 0 : p.causal ? (i + 1 < p.S ? i + 1 : p.S) : p.S;
        for (int64_t j = 0; j < jend; j++) {
            A part = 0;
            for (int d = lane; d < p.D; d += 32)
                part += av_ld<A>(p.q, b, h, i, d) * av_ld<A>(p.k, b, h, j, d);
            A s = warp_sum(part) * scale;
            if (p.m.p) {
                A add;
                if (!attn_mask_at<A>(p, b, h, i, j, &add)) continue;
                s += add;
            }
            if (s == A(-INFINITY)) continue;
            A pr = exp(s - li), kf = 1;
            if (p.dp > 0) kf = attn_keep(p, (uint64_t)(r * p.S + j)) ? ks : A(0);
            A dpart = 0;
            for (int d = lane; d < p.Dv; d += 32)
                dpart += av_ld<A>(p.go, b, h, i, d) * av_ld<A>(p.v, b, h, j, d);
            A dss = pr * (warp_sum(dpart) * kf - Dl[r]) * scale;
            for (int d = lane; d < p.D; d += 32)
                dq[d] += dss * av_ld<A>(p.k, b, h, j, d);
        }
        for (int d = lane; d < p.D; d += 32)
            av_st<A>(p.gq, b, h, i, d, dq[d]);
        __syncwarp();
    }
}

/* ================================================================================================
 * fast path: tensor cores
 * ============================================================================================== */

template <typename T>
__device__ __forceinline__ void mma16816(float *c, const uint32_t *a, uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float *c, const uint32_t *a, uint32_t b0,
                                                        uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__half>(float *c, const uint32_t *a, uint32_t b0,
                                                 uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldsm4(uint32_t *r, const void *p) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
__device__ __forceinline__ void ldsm4t(uint32_t *r, const void *p) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
__device__ __forceinline__ void cp16(void *s, const void *g, bool valid) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(s);
    int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(a), "l"(g), "r"(n));
}
__device__ __forceinline__ void cp_commit() {
    asm volatile("cp.async.commit_group;\n" ::);
}
template <int N> __device__ __forceinline__ void cp_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/* ---- fast-path building blocks ------------------------------------------------------------------
 * A warp owns 16 * WM rows of the row side of its products (queries in the forward, keys in the
 * dK/dV kernel). Each B fragment that ldmatrix brings from shared memory feeds 2 * WM mma, so
 * WM = 2 halves the shared-memory traffic per mma, which is what bounds these kernels. */

/* rows [r0, r0 + R) of a (b, h) slice of a view into a padded tile (pitch D + 8), by NT threads;
 * rows at or past nrows are zero-filled */
template <typename T, int D, int R, int NT>
__device__ __forceinline__ void load_tile(T *sm, const av4 &v, int64_t b, int64_t h, int64_t r0,
                                          int64_t nrows) {
    constexpr int CPR = D / 8, P = D + 8;
    const T *base = (const T *)v.p + b * v.s[0] + h * v.s[1];
#pragma unroll
    for (int c = threadIdx.x; c < R * CPR; c += NT) {
        int r = c / CPR, col = (c % CPR) * 8;
        bool ok = r0 + r < nrows;
        const T *src = ok ? base + (r0 + r) * v.s[2] + col : base;
        cp16(sm + r * P + col, src, ok);
    }
}

/* A fragments (16 x 16 per k-step) of rows [row0, row0 + 16) of a padded tile */
template <int D, typename T>
__device__ __forceinline__ void ld_a(uint32_t (*f)[4], const T *sm, int row0) {
    constexpr int P = D + 8;
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
        ldsm4(f[kk], sm + (row0 + (lane & 15)) * P + kk * 16 + (lane >> 4) * 8);
}

/* acc[NR/8][4] += A (16 x K, fragments af) times B^T where B is the first NR rows x K of a padded
 * tile (pitch K + 8): the "row-major [n][k]" operand (K in S = Q K^T). */
template <typename T, int K, int NR>
__device__ __forceinline__ void mma_abt(float (*acc)[4], const uint32_t (*af)[4], const T *sm) {
    constexpr int P = K + 8;
    int lane = threadIdx.x & 31, mi = lane >> 3, r = lane & 7;
#pragma unroll
    for (int kk = 0; kk < K / 16; kk++)
#pragma unroll
        for (int np = 0; np < NR / 16; np++) {
            uint32_t b[4];
            ldsm4(b, sm + (np * 16 + (mi >> 1) * 8 + r) * P + kk * 16 + (mi & 1) * 8);
            mma16816<T>(acc[2 * np], af[kk], b[0], b[1]);
            mma16816<T>(acc[2 * np + 1], af[kk], b[2], b[3]);
        }
}

/* The same for WM row blocks of 16 whose A fragments are read from a padded tile (rows arow0 +
 * 16 mt) one k-step at a time: holding them in registers would not fit beside the accumulators. */
template <typename T, int K, int NR, int WM>
__device__ __forceinline__ void mma_abt_s(float (*acc)[NR / 8][4], const T *sa, int arow0,
                                          const T *sm) {
    constexpr int P = K + 8;
    int lane = threadIdx.x & 31, mi = lane >> 3, r = lane & 7;
#pragma unroll
    for (int kk = 0; kk < K / 16; kk++) {
        uint32_t a[WM][4];
#pragma unroll
        for (int mt = 0; mt < WM; mt++)
            ldsm4(a[mt], sa + (arow0 + mt * 16 + (lane & 15)) * P + kk * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int np = 0; np < NR / 16; np++) {
            uint32_t b[4];
            ldsm4(b, sm + (np * 16 + (mi >> 1) * 8 + r) * P + kk * 16 + (mi & 1) * 8);
#pragma unroll
            for (int mt = 0; mt < WM; mt++) {
                mma16816<T>(acc[mt][2 * np], a[mt], b[0], b[1]);
                mma16816<T>(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
            }
        }
    }
}

/* A fragments of score accumulators s[KR/8][4] (16 x KR), packed to T: the layouts coincide */
template <typename T, int KR>
__device__ __forceinline__ void pack_a(uint32_t (*a)[4], const float (*s)[4]) {
#pragma unroll
    for (int kk = 0; kk < KR / 16; kk++) {
        a[kk][0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
        a[kk][1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
        a[kk][2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        a[kk][3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    }
}

/* acc[mt][N/8][4] += A_mt (16 x KR, packed fragments pa[mt]) times B, B the first KR rows x N of a
 * padded tile (pitch N + 8): the "row-major [k][n]" operand (V in P V). */
template <typename T, int KR, int N, int WM>
__device__ __forceinline__ void mma_ab(float (*acc)[N / 8][4], const uint32_t (*pa)[KR / 16][4],
                                       const T *sm) {
    constexpr int P = N + 8;
    int lane = threadIdx.x & 31, mi = lane >> 3, r = lane & 7;
#pragma unroll
    for (int kk = 0; kk < KR / 16; kk++)
#pragma unroll
        for (int dp = 0; dp < N / 16; dp++) {
            uint32_t b[4];
            ldsm4t(b, sm + (kk * 16 + (mi & 1) * 8 + r) * P + dp * 16 + (mi >> 1) * 8);
#pragma unroll
            for (int mt = 0; mt < WM; mt++) {
                mma16816<T>(acc[mt][2 * dp], pa[mt][kk], b[0], b[1]);
                mma16816<T>(acc[mt][2 * dp + 1], pa[mt][kk], b[2], b[3]);
            }
        }
}

/* the same with A the probabilities in score accumulators s (16 x KR) */
template <typename T, int KR, int N>
__device__ __forceinline__ void mma_pb(float (*acc)[N / 8][4], const float (*s)[4], const T *sm) {
    uint32_t a[1][KR / 16][4];
    pack_a<T, KR>(a[0], s);
    mma_ab<T, KR, N, 1>(acc, a, sm);
}

/* Mask (causal, bounds, user mask) applied to a 16 x NC score block in log2 units. Rows are
 * query/key indices per the caller: element (e) of s[n] sits at row ra (e < 2) or ra + 8 and
 * column c0 + n * 8 + 2 t + (e & 1). QROWS: rows are queries (forward, dQ), else keys (dK/dV). */
template <bool QROWS, bool EXTRA, int NC>
__device__ __forceinline__ void mask_block(const attn_p &p, float (*s)[4], int64_t b, int64_t h,
                                           int64_t ra, int64_t c0, float sl2) {
    int t = threadIdx.x & 3;
#pragma unroll
    for (int n = 0; n < NC / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            int64_t rr = ra + (e >> 1) * 8, cc = c0 + n * 8 + 2 * t + (e & 1);
            int64_t i = QROWS ? rr : cc, j = QROWS ? cc : rr;
            float v = s[n][e] * sl2;
            bool out = j >= p.S || i >= p.T || (p.causal && j > i);
            if (EXTRA && !out && p.m.p) {
                float add;
                if (!attn_mask_at<float>(p, b, h, i, j, &add))
                    out = true;
                else
                    v += add * LOG2E_F;
            }
            s[n][e] = out ? -INFINITY : v;
        }
}

/* Dropout factors of a 16 x NC block (same element placement as mask_block) multiplied into z */
template <bool QROWS, int NC>
__device__ __forceinline__ void drop_block(const attn_p &p, float (*z)[4], int64_t bh, int64_t ra,
                                           int64_t c0) {
    int t = threadIdx.x & 3;
    float ks = (float)p.keep_scale;
#pragma unroll
    for (int n = 0; n < NC / 8; n++)
#pragma unroll
        for (int hr = 0; hr < 2; hr++) {
            int64_t rr = ra + hr * 8, cc = c0 + n * 8 + 2 * t;
            if (QROWS) {
                if (rr >= p.T || cc >= p.S) continue;
                bool k0, k1;
                attn_keep2(p, (uint64_t)((bh * p.T + rr) * p.S + cc), &k0, &k1);
                z[n][2 * hr] *= k0 ? ks : 0.f;
                if (cc + 1 < p.S) z[n][2 * hr + 1] *= k1 ? ks : 0.f;
            } else {
                for (int e = 0; e < 2; e++) {
                    int64_t i = cc + e, j = rr;
                    if (i >= p.T || j >= p.S) continue;
                    z[n][2 * hr + e] *=
                        attn_keep(p, (uint64_t)((bh * p.T + i) * p.S + j)) ? ks : 0.f;
                }
            }
        }
}

/* ---- forward ------------------------------------------------------------------------------------
 * A block of BM = 16 WM NW queries walks the key tiles of BN keys (K, V double-buffered); causal
 * blocks stop at the diagonal, and a warp whose rows all precede a key tile skips it. Only tiles
 * that cross the diagonal or the sequence end (or any tile with a user mask) go through
 * mask_block; the others just take the scale (folded with log2 e into the exp2 argument). */

template <typename T, int D, int BN, int WM, int NW, bool EXTRA>
__global__ void __launch_bounds__(32 * NW) k_fa_fwd(attn_p p, int nqt) {
    constexpr int NT = 32 * NW, BM = 16 * WM * NW, P = D + 8;
    extern __shared__ __align__(16) char fsm[];
    T *sQ = (T *)fsm, *sK = sQ + BM * P, *sV = sK + 2 * BN * P;
    int64_t BH = p.B * p.H;
    int64_t qt = nqt - 1 - blockIdx.x / BH, bh = blockIdx.x % BH, b = bh / p.H, h = bh % p.H;
    int64_t i0 = qt * BM;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    int64_t kend = p.causal ? (i0 + BM < p.S ? i0 + BM : p.S) : p.S;
    int nt = (int)((kend + BN - 1) / BN);
    load_tile<T, D, BM, NT>(sQ, p.q, b, h, i0, p.T);
    if (nt > 0) {
        load_tile<T, D, BN, NT>(sK, p.k, b, h, 0, p.S);
        load_tile<T, D, BN, NT>(sV, p.v, b, h, 0, p.S);
    }
    cp_commit();
    float acc[WM][D / 8][4], m[WM][2], l[WM][2];
#pragma unroll
    for (int mt = 0; mt < WM; mt++) {
#pragma unroll
        for (int d = 0; d < D / 8; d++)
            acc[mt][d][0] = acc[mt][d][1] = acc[mt][d][2] = acc[mt][d][3] = 0.f;
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.f;
    }
    float sl2 = (float)p.scale * LOG2E_F;
    int64_t w0 = i0 + w * 16 * WM; /* first query row of this warp */
    for (int it = 0; it < nt; it++) {
        int64_t j0 = (int64_t)it * BN;
        if (it + 1 < nt) {
            load_tile<T, D, BN, NT>(sK + ((it + 1) & 1) * BN * P, p.k, b, h, j0 + BN, p.S);
            load_tile<T, D, BN, NT>(sV + ((it + 1) & 1) * BN * P, p.v, b, h, j0 + BN, p.S);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        const T *cK = sK + (it & 1) * BN * P, *cV = sV + (it & 1) * BN * P;
        if (!(p.causal && j0 > w0 + 16 * WM - 1)) {
            float s[WM][BN / 8][4];
            uint32_t pa[WM][BN / 16][4];
#pragma unroll
            for (int mt = 0; mt < WM; mt++)
#pragma unroll
                for (int n = 0; n < BN / 8; n++)
                    s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
            mma_abt_s<T, D, BN, WM>(s, sQ, w * 16 * WM, cK);
#pragma unroll
            for (int mt = 0; mt < WM; mt++) {
                int64_t r0 = w0 + mt * 16;
                bool edge = j0 + BN > p.S || (p.causal && j0 + BN - 1 > r0);
                if (EXTRA || edge) {
                    mask_block<true, EXTRA, BN>(p, s[mt], b, h, r0 + g, j0, sl2);
                } else {
#pragma unroll
                    for (int n = 0; n < BN / 8; n++)
#pragma unroll
                        for (int e = 0; e < 4; e++)
                            s[mt][n][e] *= sl2;
                }
                float mx[2] = {m[mt][0], m[mt][1]};
#pragma unroll
                for (int n = 0; n < BN / 8; n++) {
                    mx[0] = fmaxf(mx[0], fmaxf(s[mt][n][0], s[mt][n][1]));
                    mx[1] = fmaxf(mx[1], fmaxf(s[mt][n][2], s[mt][n][3]));
                }
                float alpha[2], mu[2];
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
                    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
                    mu[r] = mx[r] == -INFINITY ? 0.f : mx[r];
                    alpha[r] = ex2f(m[mt][r] - mu[r]);
                    m[mt][r] = mx[r];
                }
                float ls[2] = {0.f, 0.f};
#pragma unroll
                for (int n = 0; n < BN / 8; n++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        s[mt][n][e] = ex2f(s[mt][n][e] - mu[e >> 1]);
                        ls[e >> 1] += s[mt][n][e];
                    }
                l[mt][0] = l[mt][0] * alpha[0] + ls[0];
                l[mt][1] = l[mt][1] * alpha[1] + ls[1];
                if (EXTRA && p.dp > 0) drop_block<true, BN>(p, s[mt], bh, r0 + g, j0);
                pack_a<T, BN>(pa[mt], s[mt]); /* frees the f32 scores before acc is rescaled */
#pragma unroll
                for (int d = 0; d < D / 8; d++) {
                    acc[mt][d][0] *= alpha[0], acc[mt][d][1] *= alpha[0];
                    acc[mt][d][2] *= alpha[1], acc[mt][d][3] *= alpha[1];
                }
            }
            mma_ab<T, BN, D, WM>(acc, pa, cV);
        }
        __syncthreads();
    }
    if (nt == 0) cp_wait<0>();
#pragma unroll
    for (int mt = 0; mt < WM; mt++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float lr = l[mt][r];
            lr += __shfl_xor_sync(0xffffffffu, lr, 1);
            lr += __shfl_xor_sync(0xffffffffu, lr, 2);
            int64_t i = w0 + mt * 16 + g + r * 8;
            if (i >= p.T) continue;
            float inv = lr > 0.f ? 1.f / lr : 0.f;
            T *orow = (T *)p.o.p + b * p.o.s[0] + h * p.o.s[1] + i * p.o.s[2];
#pragma unroll
            for (int d = 0; d < D / 8; d++)
                *(uint32_t *)(orow + d * 8 + 2 * t) =
                    pack2<T>(acc[mt][d][2 * r] * inv, acc[mt][d][2 * r + 1] * inv);
            if (t == 0)
                ((float *)p.lse)[bh * p.T + i] =
                    lr > 0.f ? (m[mt][r] + log2f(lr)) * LN2_F : -INFINITY;
        }
}

/* ---- backward, deterministic mode: dQ over query tiles ------------------------------------------
 * A block of 64 queries (4 warps of 16 rows) walks the key tiles, recomputing the scores and dP,
 * so that each dQ element is summed by one thread in a fixed order. */

#define FT 128 /* threads per block of the dQ kernel */

template <typename T, int D, int BN, bool EXTRA>
__global__ void __launch_bounds__(FT) k_fa_dq(attn_p p, int nqt) {
    constexpr int BM = 64, P = D + 8;
    extern __shared__ __align__(16) char fsm[];
    T *sQ = (T *)fsm, *sO = sQ + BM * P, *sK = sO + BM * P, *sV = sK + 2 * BN * P;
    int64_t BH = p.B * p.H;
    int64_t qt = nqt - 1 - blockIdx.x / BH, bh = blockIdx.x % BH, b = bh / p.H, h = bh % p.H;
    int64_t i0 = qt * BM;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    int64_t kend = p.causal ? (i0 + BM < p.S ? i0 + BM : p.S) : p.S;
    int nt = (int)((kend + BN - 1) / BN);
    load_tile<T, D, BM, FT>(sQ, p.q, b, h, i0, p.T);
    load_tile<T, D, BM, FT>(sO, p.go, b, h, i0, p.T);
    if (nt > 0) {
        load_tile<T, D, BN, FT>(sK, p.k, b, h, 0, p.S);
        load_tile<T, D, BN, FT>(sV, p.v, b, h, 0, p.S);
    }
    cp_commit();
    int64_t ra = i0 + w * 16 + g;
    float lse2[2], dl[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int64_t i = ra + 8 * r;
        float lv = i < p.T ? ((const float *)p.lse)[bh * p.T + i] : -INFINITY;
        lse2[r] = lv == -INFINITY ? INFINITY : lv * LOG2E_F;
        dl[r] = i < p.T ? ((const float *)p.dl)[bh * p.T + i] : 0.f;
    }
    float acc[D / 8][4];
#pragma unroll
    for (int d = 0; d < D / 8; d++)
        acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.f;
    uint32_t qf[D / 16][4], of[D / 16][4];
    float sl2 = (float)p.scale * LOG2E_F;
    for (int it = 0; it < nt; it++) {
        int64_t j0 = (int64_t)it * BN;
        if (it + 1 < nt) {
            load_tile<T, D, BN, FT>(sK + ((it + 1) & 1) * BN * P, p.k, b, h, j0 + BN, p.S);
            load_tile<T, D, BN, FT>(sV + ((it + 1) & 1) * BN * P, p.v, b, h, j0 + BN, p.S);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        if (it == 0) {
            ld_a<D>(qf, sQ, w * 16);
            ld_a<D>(of, sO, w * 16);
        }
        const T *cK = sK + (it & 1) * BN * P, *cV = sV + (it & 1) * BN * P;
        float s[BN / 8][4], dp[BN / 8][4];
#pragma unroll
        for (int n = 0; n < BN / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                s[n][e] = dp[n][e] = 0.f;
        mma_abt<T, D, BN>(s, qf, cK);
        mma_abt<T, D, BN>(dp, of, cV);
        bool edge = j0 + BN > p.S || (p.causal && j0 + BN - 1 > i0 + w * 16);
        if (EXTRA || edge) {
            mask_block<true, EXTRA, BN>(p, s, b, h, ra, j0, sl2);
        } else {
#pragma unroll
            for (int n = 0; n < BN / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    s[n][e] *= sl2;
        }
        float z[BN / 8][4];
#pragma unroll
        for (int n = 0; n < BN / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                z[n][e] = 1.f;
        if (EXTRA && p.dp > 0) drop_block<true, BN>(p, z, bh, ra, j0);
#pragma unroll
        for (int n = 0; n < BN / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float pr = ex2f(s[n][e] - lse2[e >> 1]);
                s[n][e] = pr * (dp[n][e] * z[n][e] - dl[e >> 1]);
            }
        mma_pb<T, BN, D>(&acc, s, cK);
        __syncthreads();
    }
    if (nt == 0) cp_wait<0>();
    float sc = (float)p.scale;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int64_t i = ra + r * 8;
        if (i >= p.T) continue;
        T *row = (T *)p.gq.p + b * p.gq.s[0] + h * p.gq.s[1] + i * p.gq.s[2];
#pragma unroll
        for (int d = 0; d < D / 8; d++)
            *(uint32_t *)(row + d * 8 + 2 * t) =
                pack2<T>(acc[d][2 * r] * sc, acc[d][2 * r + 1] * sc);
    }
}

/* ---- backward: dK, dV (the mask gradient, and in atomic mode dQ) over key tiles -----------------
 * A block of BN = 16 NW keys (one 16-row block per warp) walks the query tiles of BM queries (Q,
 * dO, lse and Dl double-buffered), computing S^T and dP^T with the keys as rows, so that P^T and
 * dS^T go from the accumulators straight into the A operand of dV += P^T dO and dK += dS^T Q.
 * ATOMIC (FlashAttention-2's scheme): dS also goes through shared memory to form this tile's part
 * of dQ = dS K, which the warps add into an f32 buffer with atomics (summation order varies between
 * runs); otherwise k_fa_dq computes dQ separately. */

/* dqa rows [0, nrows) += dS^T K over this block's BN keys (sS: dS as [key][query], pitch BM + 8);
 * the warps split the BM x D product into WQ x WD pieces of QR x 32 */
template <typename T, int D, int BM, int NW>
__device__ __forceinline__ void dq_atomic(float *dqa, int64_t nrows, const T *sS, const T *sK) {
    constexpr int BN = 16 * NW, WD = D / 32, WQ = NW / WD, QR = BM / WQ, PS = BM + 8, P = D + 8;
    static_assert(WQ * WD == NW && QR % 16 == 0, "dQ warp layout");
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, mi = lane >> 3, r = lane & 7;
    int g = lane >> 2, t = lane & 3, q0 = (w / WD) * QR, c0 = (w % WD) * 32;
    float acc[QR / 16][4][4];
#pragma unroll
    for (int mt = 0; mt < QR / 16; mt++)
#pragma unroll
        for (int n = 0; n < 4; n++)
            acc[mt][n][0] = acc[mt][n][1] = acc[mt][n][2] = acc[mt][n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
        uint32_t a[QR / 16][4];
#pragma unroll
        for (int mt = 0; mt < QR / 16; mt++) /* dS^T fragments: transposed loads of [key][query] */
            ldsm4t(a[mt], sS + (kk * 16 + (mi >> 1) * 8 + r) * PS + q0 + mt * 16 + (mi & 1) * 8);
#pragma unroll
        for (int dp = 0; dp < 2; dp++) {
            uint32_t bb[4];
            ldsm4t(bb, sK + (kk * 16 + (mi & 1) * 8 + r) * P + c0 + dp * 16 + (mi >> 1) * 8);
#pragma unroll
            for (int mt = 0; mt < QR / 16; mt++) {
                mma16816<T>(acc[mt][2 * dp], a[mt], bb[0], bb[1]);
                mma16816<T>(acc[mt][2 * dp + 1], a[mt], bb[2], bb[3]);
            }
        }
    }
#pragma unroll
    for (int mt = 0; mt < QR / 16; mt++)
#pragma unroll
        for (int hr = 0; hr < 2; hr++) {
            int64_t i = q0 + mt * 16 + g + hr * 8;
            if (i >= nrows) continue;
            float *row = dqa + i * D + c0 + 2 * t;
#pragma unroll
            for (int n = 0; n < 4; n++) {
#if __CUDA_ARCH__ >= 900
                atomicAdd((float2 *)(row + n * 8),
                          make_float2(acc[mt][n][2 * hr], acc[mt][n][2 * hr + 1]));
#else
                atomicAdd(row + n * 8, acc[mt][n][2 * hr]);
                atomicAdd(row + n * 8 + 1, acc[mt][n][2 * hr + 1]);
#endif
            }
        }
}

template <typename T, int D, int BM, int NW, bool ATOMIC, bool EXTRA>
__global__ void __launch_bounds__(32 * NW) k_fa_dkdv(attn_p p, float *dqa) {
    constexpr int NT = 32 * NW, BN = 16 * NW, P = D + 8, PS = BM + 8;
    extern __shared__ __align__(16) char fsm[];
    T *sK = (T *)fsm, *sV = sK + BN * P, *sQ = sV + BN * P, *sO = sQ + 2 * BM * P;
    T *sS = sO + 2 * BM * P; /* dS staging for dq_atomic (ATOMIC only) */
    float *sL = (float *)(sS + (ATOMIC ? BN * PS : 0)), *sD = sL + 2 * BM;
    int64_t BH = p.B * p.H;
    int64_t kt = blockIdx.x / BH, bh = blockIdx.x % BH, b = bh / p.H, h = bh % p.H;
    int64_t j0 = kt * BN;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    int64_t nq = (p.T + BM - 1) / BM, q0 = p.causal ? j0 / BM : 0;
    int nt = (int)(nq > q0 ? nq - q0 : 0);
    const float *lse = (const float *)p.lse + bh * p.T, *Dl = (const float *)p.dl + bh * p.T;
    load_tile<T, D, BN, NT>(sK, p.k, b, h, j0, p.S);
    load_tile<T, D, BN, NT>(sV, p.v, b, h, j0, p.S);
    if (nt > 0) {
        load_tile<T, D, BM, NT>(sQ, p.q, b, h, q0 * BM, p.T);
        load_tile<T, D, BM, NT>(sO, p.go, b, h, q0 * BM, p.T);
        for (int c = threadIdx.x; c < BM; c += NT) {
            int64_t i = q0 * BM + c;
            float lv = i < p.T ? lse[i] : -INFINITY;
            sL[c] = lv == -INFINITY ? INFINITY : lv * LOG2E_F;
            sD[c] = i < p.T ? Dl[i] : 0.f;
        }
    }
    cp_commit();
    float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
    for (int d = 0; d < D / 8; d++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            dk[d][e] = dv[d][e] = 0.f;
    float sl2 = (float)p.scale * LOG2E_F;
    int64_t ra = j0 + w * 16 + g;
    float *gm = (float *)p.gm;
    for (int it = 0; it < nt; it++) {
        int64_t i0 = (q0 + it) * BM;
        if (it + 1 < nt) {
            int nb = (it + 1) & 1;
            load_tile<T, D, BM, NT>(sQ + nb * BM * P, p.q, b, h, i0 + BM, p.T);
            load_tile<T, D, BM, NT>(sO + nb * BM * P, p.go, b, h, i0 + BM, p.T);
            cp_commit();
            for (int c = threadIdx.x; c < BM; c += NT) {
                int64_t i = i0 + BM + c;
                float lv = i < p.T ? lse[i] : -INFINITY;
                sL[nb * BM + c] = lv == -INFINITY ? INFINITY : lv * LOG2E_F;
                sD[nb * BM + c] = i < p.T ? Dl[i] : 0.f;
            }
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        const T *cQ = sQ + (it & 1) * BM * P, *cO = sO + (it & 1) * BM * P;
        const float *cL = sL + (it & 1) * BM, *cD = sD + (it & 1) * BM;
        float s[1][BM / 8][4], dp[1][BM / 8][4];
#pragma unroll
        for (int n = 0; n < BM / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                s[0][n][e] = dp[0][n][e] = 0.f;
        mma_abt_s<T, D, BM, 1>(s, sK, w * 16, cQ);
        mma_abt_s<T, D, BM, 1>(dp, sV, w * 16, cO);
        bool edge = j0 + BN > p.S || i0 + BM > p.T || (p.causal && j0 + w * 16 + 15 > i0);
        if (EXTRA || edge) {
            mask_block<false, EXTRA, BM>(p, s[0], b, h, ra, i0, sl2);
        } else {
#pragma unroll
            for (int n = 0; n < BM / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    s[0][n][e] *= sl2;
        }
        float z[BM / 8][4];
#pragma unroll
        for (int n = 0; n < BM / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                z[n][e] = 1.f;
        if (EXTRA && p.dp > 0) drop_block<false, BM>(p, z, bh, ra, i0);
#pragma unroll
        for (int n = 0; n < BM / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int c = n * 8 + 2 * t + (e & 1);
                float pr = ex2f(s[0][n][e] - cL[c]);
                float ds = pr * (dp[0][n][e] * z[n][e] - cD[c]);
                s[0][n][e] = pr * z[n][e]; /* P o Z for dV */
                dp[0][n][e] = ds;          /* dS for dK */
                if (EXTRA && gm) {
                    int64_t i = i0 + c, j = ra + (e >> 1) * 8;
                    if (i < p.T && j < p.S) gm[(bh * p.T + i) * p.S + j] = ds;
                }
            }
        if constexpr (ATOMIC) {
#pragma unroll
            for (int n = 0; n < BM / 8; n++)
#pragma unroll
                for (int hr = 0; hr < 2; hr++)
                    *(uint32_t *)(sS + (w * 16 + g + hr * 8) * PS + n * 8 + 2 * t) =
                        pack2<T>(dp[0][n][2 * hr], dp[0][n][2 * hr + 1]);
        }
        mma_pb<T, BM, D>(&dv, s[0], cO);
        mma_pb<T, BM, D>(&dk, dp[0], cQ);
        if constexpr (ATOMIC) {
            __syncthreads();
            dq_atomic<T, D, BM, NW>(dqa + (bh * p.T + i0) * D, p.T - i0, sS, sK);
        }
        __syncthreads();
    }
    if (nt == 0) cp_wait<0>();
    float sc = (float)p.scale;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int64_t j = ra + r * 8;
        if (j >= p.S) continue;
        T *krow = (T *)p.gk.p + b * p.gk.s[0] + h * p.gk.s[1] + j * p.gk.s[2];
        T *vrow = (T *)p.gv.p + b * p.gv.s[0] + h * p.gv.s[1] + j * p.gv.s[2];
#pragma unroll
        for (int d = 0; d < D / 8; d++) {
            *(uint32_t *)(krow + d * 8 + 2 * t) =
                pack2<T>(dk[d][2 * r] * sc, dk[d][2 * r + 1] * sc);
            *(uint32_t *)(vrow + d * 8 + 2 * t) = pack2<T>(dv[d][2 * r], dv[d][2 * r + 1]);
        }
    }
}

/* gq = scale * dqa (the f32 sums of the atomic mode), two elements per thread */
template <typename T> __global__ void k_dq_store(attn_p p, const float *dqa) {
    int64_t half = p.D / 2, n = p.B * p.H * p.T * half;
    float sc = (float)p.scale;
    for (int64_t x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; x < n;
         x += (int64_t)gridDim.x * blockDim.x) {
        int64_t d = (x % half) * 2, row = x / half, i = row % p.T, bh = row / p.T;
        float2 v = ((const float2 *)dqa)[x];
        T *dst = (T *)p.gq.p + (bh / p.H) * p.gq.s[0] + (bh % p.H) * p.gq.s[1] + i * p.gq.s[2] + d;
        *(uint32_t *)dst = pack2<T>(v.x * sc, v.y * sc);
    }
}

/* Dl = rowsum(dO o O) for the fast path: D / 8 threads per row, 16-byte loads */
template <typename T> __device__ __forceinline__ float2 unpack2(uint32_t u);
template <> __device__ __forceinline__ float2 unpack2<__nv_bfloat16>(uint32_t u) {
    return __bfloat1622float2(*(__nv_bfloat162 *)&u);
}
template <> __device__ __forceinline__ float2 unpack2<__half>(uint32_t u) {
    return __half22float2(*(__half2 *)&u);
}
template <typename T, int D> __global__ void k_fa_dl(attn_p p) {
    constexpr int G = D / 8;
    int64_t rows = p.B * p.H * p.T;
    int64_t r = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / G;
    int c = threadIdx.x % G;
    float s = 0.f;
    if (r < rows) {
        int64_t i = r % p.T, bh = r / p.T, b = bh / p.H, h = bh % p.H;
        uint4 x = *(const uint4 *)((const T *)p.go.p + b * p.go.s[0] + h * p.go.s[1] +
                                   i * p.go.s[2] + c * 8);
        uint4 y =
            *(const uint4 *)((const T *)p.o.p + b * p.o.s[0] + h * p.o.s[1] + i * p.o.s[2] + c * 8);
        uint32_t xs[4] = {x.x, x.y, x.z, x.w}, ys[4] = {y.x, y.y, y.z, y.w};
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float2 a = unpack2<T>(xs[k]), o = unpack2<T>(ys[k]);
            s += a.x * o.x + a.y * o.y;
        }
    }
#pragma unroll
    for (int o = G / 2; o > 0; o >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, o);
    if (r < rows && c == 0) ((float *)p.dl)[r] = s;
}

/* ================================================================================================
 * launchers
 * ============================================================================================== */

static bool fast_view(const rtc_view *v) {
    if (!v) return true;
    return v->strides[3] == 1 && v->strides[0] % 8 == 0 && v->strides[1] % 8 == 0 &&
           v->strides[2] % 8 == 0 && rtc_aligned16(v->data);
}

static bool fast_ok(const rtc_view *q, const rtc_view *k, const rtc_view *v,
                    const rtc_view *const *more, int nmore) {
    int dt = q->dtype;
    if (dt != RT_BF16 && dt != RT_F16) return false;
    int64_t D = q->shape[3];
    if (v->shape[3] != D || (D != 64 && D != 128)) return false;
    if (!fast_view(q) || !fast_view(k) || !fast_view(v)) return false;
    for (int i = 0; i < nmore; i++)
        if (!fast_view(more[i])) return false;
    if (getenv("RAMTORCH_ATTN_GENERIC")) return false; /* testing: force the generic path */
    return true;
}

static attn_p params_of(const rtc_view *q, const rtc_view *k, const rtc_view *v,
                        const rtc_view *mask, int is_causal, double scale, double dropout_p,
                        uint64_t seed, uint64_t offset) {
    attn_p p;
    memset(&p, 0, sizeof p);
    p.B = q->shape[0], p.H = q->shape[1], p.T = q->shape[2], p.S = k->shape[2];
    p.D = (int)q->shape[3], p.Dv = (int)v->shape[3];
    p.q = av_of(q), p.k = av_of(k), p.v = av_of(v), p.m = av_of(mask);
    p.causal = is_causal;
    p.scale = scale;
    p.dp = dropout_p;
    p.keep_scale = dropout_p < 1 ? 1.0 / (1.0 - dropout_p) : 0.0;
    p.thresh = (uint32_t)ceil(dropout_p * 16777216.0);
    p.seed = seed, p.offset = offset;
    return p;
}

template <typename K> static int set_smem(K kern, size_t bytes) {
    if (bytes > 48 * 1024)
        RTC_CUDA_TRY(
            "scaled_dot_product_attention",
            cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return RT_OK;
}

static unsigned warp_grid(int64_t rows) {
    int64_t b = (rows + GW - 1) / GW, cap = (int64_t)rtc_sm_count() * 64;
    if (b > cap) b = cap;
    return (unsigned)(b < 1 ? 1 : b);
}

static int gen_smem(const char *op, size_t bytes, size_t *out) {
    if (bytes > 48 * 1024)
        return RTC_ERR(RT_ERR_UNSUPPORTED,
                       "%s: head dims too large for the CUDA generic path (%zu bytes of shared "
                       "memory per block, at most 49152)",
                       op, bytes);
    *out = bytes;
    return RT_OK;
}

/* RAMTORCH_ATTN_DETERMINISTIC=1 (read once): dQ by the query-tile kernel instead of atomics, for
 * results that repeat bit for bit (forward + backward took 13% longer on the H200 benchmark) */
static bool fa_deterministic(void) {
    static const bool det = [] {
        const char *e = getenv("RAMTORCH_ATTN_DETERMINISTIC");
        return e && *e && strcmp(e, "0") != 0;
    }();
    return det;
}

/* 128 queries per block, 4 warps of 32 rows, key tiles of 64: on the H200 benchmark this beat 64
 * queries of 4 x 16 rows by 1.2x, and 128 queries of 8 x 16 rows or with key tiles of 32 too */
template <typename T, int D, bool EXTRA> static int fa_fwd(const attn_p &p) {
    constexpr int BN = 64, WM = 2, NW = 4, BM = 16 * WM * NW;
    size_t smem = (size_t)(BM + 4 * BN) * (D + 8) * sizeof(T);
    RTC_TRY(set_smem(k_fa_fwd<T, D, BN, WM, NW, EXTRA>, smem));
    int nqt = (int)((p.T + BM - 1) / BM);
    unsigned grid = (unsigned)(nqt * p.B * p.H);
    k_fa_fwd<T, D, BN, WM, NW, EXTRA><<<grid, 32 * NW, smem, rtc_stream()>>>(p, nqt);
    RTC_LAUNCH_CHECK("scaled_dot_product_attention");
    return RT_OK;
}

template <typename T, int D, int BM, int NW, bool ATOMIC, bool EXTRA>
static int fa_dkdv(const attn_p &p, float *dqa) {
    constexpr int BN = 16 * NW;
    size_t smem = (size_t)(2 * BN + 4 * BM) * (D + 8) * sizeof(T) + 4 * BM * sizeof(float) +
                  (ATOMIC ? (size_t)BN * (BM + 8) * sizeof(T) : 0);
    RTC_TRY(set_smem(k_fa_dkdv<T, D, BM, NW, ATOMIC, EXTRA>, smem));
    int nkt = (int)((p.S + BN - 1) / BN);
    if (nkt == 0)
        return RT_OK; /* no keys: dK, dV are empty and dQ is 0 (a grid of 0 blocks is a
                       * launch error) */
    k_fa_dkdv<T, D, BM, NW, ATOMIC, EXTRA>
        <<<(unsigned)(nkt * p.B * p.H), 32 * NW, smem, rtc_stream()>>>(p, dqa);
    RTC_LAUNCH_CHECK("scaled_dot_product_attention backward");
    return RT_OK;
}

/* deterministic mode: dK/dV over key tiles, then dQ over query tiles */
template <typename T, int D, bool EXTRA> static int fa_bwd_det(const attn_p &p) {
    constexpr int BN = D == 128 ? 32 : 64; /* keys per step of the dQ kernel */
    constexpr int BM = D == 128 ? 32 : 64; /* queries per step of the dK/dV kernel */
    RTC_TRY((fa_dkdv<T, D, BM, 4, false, EXTRA>(p, NULL)));
    size_t s1 = (size_t)(2 * 64 + 4 * BN) * (D + 8) * sizeof(T);
    RTC_TRY(set_smem(k_fa_dq<T, D, BN, EXTRA>, s1));
    int nqt = (int)((p.T + 63) / 64);
    k_fa_dq<T, D, BN, EXTRA><<<(unsigned)(nqt * p.B * p.H), FT, s1, rtc_stream()>>>(p, nqt);
    RTC_LAUNCH_CHECK("scaled_dot_product_attention backward");
    return RT_OK;
}

/* atomic mode: one pass over key tiles adds dQ into an f32 buffer, then gq = scale * buffer */
template <typename T, int D, bool EXTRA> static int fa_bwd_atomic(const attn_p &p) {
    const char *op = "scaled_dot_product_attention backward";
    size_t bytes = (size_t)(p.B * p.H * p.T) * D * sizeof(float);
    void *dqa;
    RTC_TRY(rtc_scratch_alloc(bytes, &dqa));
    cudaStream_t st = rtc_stream();
    int rc = RT_OK;
    cudaError_t e = cudaMemsetAsync(dqa, 0, bytes, st);
    if (e != cudaSuccess)
        rc = RTC_ERR(RT_ERR_BACKEND, "%s: CUDA error %s: %s (clearing the dQ buffer)", op,
                     cudaGetErrorName(e), cudaGetErrorString(e));
    if (rc == RT_OK) rc = fa_dkdv<T, D, 64, 4, true, EXTRA>(p, (float *)dqa);
    if (rc == RT_OK) {
        k_dq_store<T>
            <<<rtc_grid(p.B * p.H * p.T * D / 2, 256), 256, 0, st>>>(p, (const float *)dqa);
        e = cudaGetLastError();
        if (e != cudaSuccess)
            rc = RTC_ERR(RT_ERR_BACKEND, "%s: CUDA error %s: %s (storing dQ)", op,
                         cudaGetErrorName(e), cudaGetErrorString(e));
    }
    rtc_scratch_free(dqa, bytes);
    return rc;
}

template <typename T, int D, bool EXTRA> static int fa_bwd(const attn_p &p) {
    return fa_deterministic() ? fa_bwd_det<T, D, EXTRA>(p) : fa_bwd_atomic<T, D, EXTRA>(p);
}

template <typename T> static int fa_fwd_d(const attn_p &p, bool extra) {
    if (p.D == 64) return extra ? fa_fwd<T, 64, true>(p) : fa_fwd<T, 64, false>(p);
    return extra ? fa_fwd<T, 128, true>(p) : fa_fwd<T, 128, false>(p);
}
template <typename T> static int fa_bwd_d(const attn_p &p, bool extra) {
    if (p.D == 64) return extra ? fa_bwd<T, 64, true>(p) : fa_bwd<T, 64, false>(p);
    return extra ? fa_bwd<T, 128, true>(p) : fa_bwd<T, 128, false>(p);
}

/* the Hopper wgmma kernels (attention_sm90.cu) take head dim 128 without mask or dropout */
static bool sm90_ok(const attn_p &p, bool extra) {
#ifdef RT_HAVE_SM90A
    return !extra && p.D == 128 && p.Dv == 128 && p.B * p.H * ((p.S + 63) / 64) < (1ll << 31) &&
           rtc_sm90_attn_usable();
#else
    (void)p, (void)extra;
    return false;
#endif
}

extern "C" int rtc_sdpa(const rtc_view *out, const rtc_view *lse, const rtc_view *q,
                        const rtc_view *k, const rtc_view *v, const rtc_view *mask, int is_causal,
                        double scale, double dropout_p, uint64_t seed, uint64_t offset) {
    const char *op = "scaled_dot_product_attention";
    attn_p p = params_of(q, k, v, mask, is_causal, scale, dropout_p, seed, offset);
    p.o = av_of(out);
    p.lse = lse->data;
    if (p.B * p.H * p.T == 0) return RT_OK;
    const rtc_view *more[1] = {out};
    if (fast_ok(q, k, v, more, 1) && p.B * p.H * ((p.T + 63) / 64) < (1ll << 31)) {
        bool extra = mask != NULL || dropout_p > 0;
        if (sm90_ok(p, extra)) {
            int rc = rtc_sm90_attn_fwd(p, q->dtype == RT_BF16);
            if (rc != RTC_SM90_DECLINED) return rc;
        }
        return q->dtype == RT_BF16 ? fa_fwd_d<__nv_bfloat16>(p, extra) : fa_fwd_d<__half>(p, extra);
    }
    int64_t rows = p.B * p.H * p.T;
    if (lse->dtype == RT_F64) {
        size_t sm = 0;
        RTC_TRY(gen_smem(op, (size_t)GW * (p.D + p.Dv) * sizeof(double), &sm));
        k_gen_fwd<double><<<warp_grid(rows), 32 * GW, sm, rtc_stream()>>>(p);
    } else {
        size_t sm = 0;
        RTC_TRY(gen_smem(op, (size_t)GW * (p.D + p.Dv) * sizeof(float), &sm));
        k_gen_fwd<float><<<warp_grid(rows), 32 * GW, sm, rtc_stream()>>>(p);
    }
    RTC_LAUNCH_CHECK(op);
    return RT_OK;
}

template <typename A> static int gen_bwd(attn_p &p, const char *op) {
    size_t s1 = 0, s2 = 0;
    RTC_TRY(gen_smem(op, (size_t)GW * (p.D + p.Dv) * sizeof(A), &s1));
    RTC_TRY(gen_smem(op, (size_t)GW * p.D * sizeof(A), &s2));
    cudaStream_t st = rtc_stream();
    k_gen_dkdv<A><<<warp_grid(p.B * p.H * p.S), 32 * GW, s1, st>>>(p);
    RTC_LAUNCH_CHECK(op);
    k_gen_dq<A><<<warp_grid(p.B * p.H * p.T), 32 * GW, s2, st>>>(p);
    RTC_LAUNCH_CHECK(op);
    return RT_OK;
}

extern "C" int rtc_sdpa_backward(const rtc_view *grad_q, const rtc_view *grad_k,
                                 const rtc_view *grad_v, const rtc_view *grad_mask,
                                 const rtc_view *grad_out, const rtc_view *q, const rtc_view *k,
                                 const rtc_view *v, const rtc_view *out, const rtc_view *lse,
                                 const rtc_view *mask, int is_causal, double scale,
                                 double dropout_p, uint64_t seed, uint64_t offset) {
    const char *op = "scaled_dot_product_attention backward";
    attn_p p = params_of(q, k, v, mask, is_causal, scale, dropout_p, seed, offset);
    p.o = av_of(out), p.go = av_of(grad_out);
    p.gq = av_of(grad_q), p.gk = av_of(grad_k), p.gv = av_of(grad_v);
    p.lse = lse->data;
    p.gm = grad_mask ? grad_mask->data : NULL;
    int64_t rows = p.B * p.H * p.T;
    if (rows == 0 && p.B * p.H * p.S == 0) return RT_OK;
    bool f64 = lse->dtype == RT_F64;
    size_t es = f64 ? 8 : 4, dbytes = (size_t)(rows > 0 ? rows : 1) * es;
    void *dl;
    RTC_TRY(rtc_scratch_alloc(dbytes, &dl));
    p.dl = dl;
    cudaStream_t st = rtc_stream();
    int rc = RT_OK;
    const rtc_view *more[5] = {grad_out, grad_q, grad_k, grad_v, out};
    bool fast = fast_ok(q, k, v, more, 5) && p.B * p.H * ((p.S + 63) / 64) < (1ll << 31) &&
                p.B * p.H * ((p.T + 63) / 64) < (1ll << 31);
    if (rows > 0) {
        if (fast) {
            unsigned grid = (unsigned)((rows * (p.D / 8) + 255) / 256);
            bool bf = q->dtype == RT_BF16;
            if (p.D == 64 && bf) k_fa_dl<__nv_bfloat16, 64><<<grid, 256, 0, st>>>(p);
            if (p.D == 128 && bf) k_fa_dl<__nv_bfloat16, 128><<<grid, 256, 0, st>>>(p);
            if (p.D == 64 && !bf) k_fa_dl<__half, 64><<<grid, 256, 0, st>>>(p);
            if (p.D == 128 && !bf) k_fa_dl<__half, 128><<<grid, 256, 0, st>>>(p);
        } else {
            unsigned grid = rtc_grid(rows * 32, 256);
            if (f64)
                k_attn_dl<double><<<grid, 256, 0, st>>>(p);
            else
                k_attn_dl<float><<<grid, 256, 0, st>>>(p);
        }
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess)
            rc = RTC_ERR(RT_ERR_BACKEND, "%s: CUDA error %s: %s (in the Dl kernel)", op,
                         cudaGetErrorName(e), cudaGetErrorString(e));
    }
    if (rc == RT_OK) {
        if (fast) {
            bool extra = mask != NULL || dropout_p > 0;
            rc = sm90_ok(p, extra) ? rtc_sm90_attn_bwd(p, q->dtype == RT_BF16) : RTC_SM90_DECLINED;
            if (rc == RTC_SM90_DECLINED)
                rc = q->dtype == RT_BF16 ? fa_bwd_d<__nv_bfloat16>(p, extra)
                                         : fa_bwd_d<__half>(p, extra);
        } else {
            rc = f64 ? gen_bwd<double>(p, op) : gen_bwd<float>(p, op);
        }
    }
    rtc_scratch_free(dl, dbytes);
    return rc;
}
