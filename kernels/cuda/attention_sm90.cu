/* attention_sm90.cu: scaled-dot-product attention on Hopper (compute capability 9.0) with warpgroup
 * MMA (wgmma, sm_90a), for the common training case: bf16/f16, head dim 128, causal or no mask, no
 * dropout. Semantics are attention.cu's (which runs everything else): natural-log LSE in f32,
 * causal masks key j > query i, rows past the ends are ignored.
 *
 * Why a second kernel family: mma.sync (attention.cu) issues a 16x8x16 product per warp and feeds
 * it from registers that ldmatrix fills, so shared-memory traffic and issue slots bound it at about
 * half of the H200's tensor throughput. wgmma lets a warpgroup (128 threads) multiply 64 x N x 16
 * with both operands read by the tensor cores straight from shared memory (or A from registers).
 *
 * On the H200 benchmark (B 8, H 16, T 2048, causal) these kernels reach 60% of PyTorch's SDPA
 * forward and 63% of its forward + backward (BENCHMARKS.md). With CTA-wide barriers between the two
 * warpgroups (commit 8206a18) they reached 55% and 57%: Nsight Compute showed the tensor pipe 32%
 * busy, 2 warps per scheduler, and one of them eligible in 38% of cycles. Issuing the next S before
 * the softmax (tried with barriers, commit 8a850b0) was not faster. Not built: the rest of
 * FlashAttention-3 (TMA loads from a producer warpgroup with setmaxnreg, warpgroups taking turns on
 * the tensor cores, dQ by atomics inside the dK/dV kernel).
 *
 * Shared-memory tiles: R rows x 128 elements, stored as two 64-column halves (128 bytes per row)
 * with the 128-byte swizzle (16-byte chunk c of row r at chunk c ^ (r % 8)), every tile 1024-byte
 * aligned. The same tile serves as a K-major operand (rows = M or N, head dim = reduction: Q K^T,
 * dO V^T) and as an MN-major B operand (rows = reduction: P V, dS K, P^T dO, dS^T Q).
 *
 * Kernels: k_s9_ws (the forward, or dQ) and k_s9_dkdv_ws. The backward recomputes S in both (7
 * products instead of FlashAttention-2's 5) so that no gradient is summed with atomics: results
 * repeat bit for bit. */
#include "attention_frag.cuh"
#include "attention_params.cuh"
#include "rowops.cuh"

#include <stdlib.h>
#include <string.h>

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SM90_BODY 1
#include "wgmma.cuh"
#else
#define SM90_BODY 0
#endif

#define S9_LOG2E 1.4426950408889634f
#define S9_LN2 0.6931471805599453f
#define S9_D 128

namespace {

/* ---- device helpers (compiled into the sm_90a image only) ---- */
#if SM90_BODY

__device__ __forceinline__ uint32_t s9_addr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void s9_cp16(uint32_t dst, const void *src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(valid ? 16 : 0));
}
/* cp.async writes are generic-proxy writes; wgmma reads shared memory through the async proxy */
__device__ __forceinline__ void s9_fence_async() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
/* rows [r0, r0 + R) of the (b, h) slice of a view into a swizzled tile at shared address `tile`;
 * rows at or past nrows are zero-filled (so that P V never meets garbage) */
template <int R, int NT, typename T>
__device__ __forceinline__ void s9_load(uint32_t tile, const av4 &v, int64_t b, int64_t h,
                                        int64_t r0, int64_t nrows, int tid) {
    const T *base = (const T *)v.p + b * v.s[0] + h * v.s[1];
#pragma unroll
    for (int c = tid; c < R * 16; c += NT) {
        int r = c >> 4, ch = c & 15, half = ch >> 3, cc = ch & 7;
        bool ok = r0 + r < nrows;
        const T *src = ok ? base + (r0 + r) * v.s[2] + ch * 8 : base;
        s9_cp16(tile + half * (R * 128) + r * 128 + ((cc ^ (r & 7)) << 4), src, ok);
    }
}

/* matrix descriptors, 128-byte swizzle: K-major (8-row groups 1024 bytes apart) and MN-major (the
 * two 64-column halves `half_bytes` apart, 8-row groups of the reduction dim 1024 bytes apart) */
__device__ __forceinline__ uint64_t s9_desc_k(uint32_t a) {
    return (uint64_t)((a & 0x3FFFF) >> 4) | (1ull << 16) | (64ull << 32) | (1ull << 62);
}
__device__ __forceinline__ uint64_t s9_desc_mn(uint32_t a, uint32_t half_bytes) {
    return (uint64_t)((a & 0x3FFFF) >> 4) | ((uint64_t)(half_bytes >> 4) << 16) | (64ull << 32) |
           (1ull << 62);
}

/* acc (64 x N) = A B^T over the head dim: A rows at a (a tile of ra rows, this warpgroup's 64
 * starting there), B the N rows of a tile of rb rows at b; both K-major */
template <bool BF, int N>
__device__ __forceinline__ void s9_gemm_ss(float *acc, uint32_t a, int ra, uint32_t b, int rb) {
#pragma unroll
    for (int kk = 0; kk < S9_D / 16; kk++) {
        uint32_t off = (uint32_t)(kk & 3) * 32;
        uint64_t da = s9_desc_k(a + (kk >> 2) * (ra * 128) + off);
        uint64_t db = s9_desc_k(b + (kk >> 2) * (rb * 128) + off);
        wgmma_ss<BF, N>(acc, da, db, kk > 0 ? 1 : 0);
    }
}

/* acc (64 x 128) += A B: A (64 x KR) in registers (pa[kk], the m16n8k16 A layout per warp), B the
 * first KR rows of a tile of rb rows at b, read MN-major (rows = the reduction dim) */
template <bool BF, int KR>
__device__ __forceinline__ void s9_gemm_rs(float *acc, const uint32_t (*pa)[4], uint32_t b,
                                           int rb) {
#pragma unroll
    for (int kk = 0; kk < KR / 16; kk++)
        wgmma_rs<BF, 128>(acc, pa[kk], s9_desc_mn(b + kk * 16 * 128, (uint32_t)rb * 128));
}

/* A fragments of a 64 x KR accumulator (the wgmma and mma.sync layouts coincide per warp) */
template <typename T, int KR>
__device__ __forceinline__ void s9_pack_a(uint32_t (*a)[4], const float *s) {
#pragma unroll
    for (int kk = 0; kk < KR / 16; kk++) {
        a[kk][0] = pack2<T>(s[8 * kk + 0], s[8 * kk + 1]);
        a[kk][1] = pack2<T>(s[8 * kk + 2], s[8 * kk + 3]);
        a[kk][2] = pack2<T>(s[8 * kk + 4], s[8 * kk + 5]);
        a[kk][3] = pack2<T>(s[8 * kk + 6], s[8 * kk + 7]);
    }
}

template <int N> __device__ __forceinline__ void s9_fence_acc(float *a) {
#pragma unroll
    for (int i = 0; i < N; i++)
        wg_reg_fence(a[i]);
}

/* 1024-byte aligned start of the dynamic shared memory (the launch adds 1 KiB of slack) */
__device__ __forceinline__ uint32_t s9_smem_base(char *dyn) {
    return (s9_addr(dyn) + 1023u) & ~1023u;
}

/* store a 64 x 128 accumulator block (rows row0 + the fragment rows) times `mul` into a view */
template <typename T>
__device__ __forceinline__ void s9_store_rows(const float *acc, const av4 &v, int64_t b, int64_t h,
                                              int64_t ra, int64_t nrows, float mul0, float mul1,
                                              int q) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int64_t i = ra + 8 * r;
        if (i >= nrows) continue;
        float mul = r ? mul1 : mul0;
        T *row = (T *)v.p + b * v.s[0] + h * v.s[1] + i * v.s[2];
#pragma unroll
        for (int d = 0; d < S9_D / 8; d++)
            *(uint32_t *)(row + d * 8 + 2 * q) =
                pack2<T>(acc[4 * d + 2 * r] * mul, acc[4 * d + 2 * r + 1] * mul);
    }
}

/* the forward's online softmax of a 64 x BN score block (in place: 2^(scaled score - new max)),
 * with the running max m, sum l and the factor alpha that rescales what O holds so far */
template <int BN>
__device__ __forceinline__ void fwd_softmax(float *s, float *m, float *l, float *alpha,
                                            const attn_p &p, int64_t j0, int64_t iw, int64_t ra,
                                            int q, float sl2) {
    bool edge = j0 + BN > p.S || (p.causal && j0 + BN - 1 > iw);
    if (edge) {
#pragma unroll
        for (int n = 0; n < BN / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int64_t i = ra + 8 * (e >> 1), j = j0 + 8 * n + 2 * q + (e & 1);
                bool out = j >= p.S || (p.causal && j > i);
                s[4 * n + e] = out ? -INFINITY : s[4 * n + e] * sl2;
            }
    } else {
#pragma unroll
        for (int n = 0; n < BN / 2; n++)
            s[n] *= sl2;
    }
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int n = 0; n < BN / 8; n++) {
        mx[0] = fmaxf(mx[0], fmaxf(s[4 * n], s[4 * n + 1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[4 * n + 2], s[4 * n + 3]));
    }
    float mu[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        mu[r] = mx[r] == -INFINITY ? 0.f : mx[r];
        alpha[r] = ex2f(m[r] - mu[r]);
        m[r] = mx[r];
    }
    float ls[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < BN / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float v = ex2f(s[4 * n + e] - mu[e >> 1]);
            s[4 * n + e] = v;
            ls[e >> 1] += v;
        }
    l[0] = l[0] * alpha[0] + ls[0];
    l[1] = l[1] * alpha[1] + ls[1];
}

/* dS = P (dP - Dl) of a 64 x 64 block into s, P = 2^(S sl2 - lse2) (0 where masked) */
template <int BN>
__device__ __forceinline__ void dq_ds(float *s, const float *dp, const float *lse2, const float *dl,
                                      const attn_p &p, int64_t j0, int64_t iw, int64_t ra, int q,
                                      float sl2) {
    bool edge = j0 + BN > p.S || (p.causal && j0 + BN - 1 > iw);
#pragma unroll
    for (int n = 0; n < BN / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float pr = ex2f(s[4 * n + e] * sl2 - lse2[e >> 1]);
            if (edge) {
                int64_t i = ra + 8 * (e >> 1), j = j0 + 8 * n + 2 * q + (e & 1);
                if (j >= p.S || (p.causal && j > i)) pr = 0.f;
            }
            s[4 * n + e] = pr * (dp[4 * n + e] - dl[e >> 1]);
        }
}

/* mbarriers: a stage's "full" barrier completes a phase when every thread's copies into it have
 * landed (cp.async arrive-on); its "empty" barrier when every warp is done reading it */
__device__ __forceinline__ void mb_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mb_wait(uint32_t bar, uint32_t parity) {
    uint32_t done;
    do {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                     "selp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(bar), "r"(parity)
                     : "memory");
    } while (!done);
}
__device__ __forceinline__ void mb_arrive(uint32_t bar) {
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(bar)
                 : "memory");
}
/* arrives when every cp.async this thread issued so far has landed */
__device__ __forceinline__ void mb_arrive_cp(uint32_t bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void s9_cp_wait_all() {
    asm volatile("cp.async.wait_all;\n" ::: "memory");
}

#endif /* SM90_BODY */

/* ---- forward and dQ ---- */
/* CTA: 2 warpgroups, 128 queries (64 each). Forward, per key tile: S = Q K^T (ss), the online
 * softmax, O += P V (rs). dQ, per key tile: S, dP = dO V^T, dS = P (dP - Dl), dQ += dS K; then
 * scale. A warpgroup whose rows all precede a (causal) key tile skips it; tiles that cross the
 * diagonal or the end of the keys are masked element by element. There are no CTA-wide barriers:
 * the key tiles go through NS shared-memory stages whose hand-over is tracked by mbarriers. Every
 * thread loads its share of a stage with cp.async and arrives on the stage's "full" barrier when
 * its copies land (256 arrivals complete a phase); each warp arrives on the stage's "empty" barrier
 * when its products are done with it; a stage is refilled (tile it + NS - 1, after tile it) once
 * both warpgroups have released it. So the two warpgroups drift apart by up to a tile and one's
 * softmax overlaps the other's products. (A separate producer warp would cost registers: 9 warps
 * per CTA leave 168 per thread.) */
template <typename T, int BN, int NS, bool DQ>
__global__ void __launch_bounds__(256, 1) k_s9_ws(attn_p p, int nqt) {
#if SM90_BODY
    constexpr bool BF = __is_same(T, __nv_bfloat16);
    constexpr int BM = 128, TQ = BM * 256, TK = BN * 256;
    extern __shared__ char s9_dyn[];
    uint32_t sQ = s9_smem_base(s9_dyn), sO = sQ + TQ, sK = sO + (DQ ? TQ : 0), sV = sK + NS * TK;
    uint32_t bars = sV + NS * TK; /* full[NS], empty[NS] */
    int tid = threadIdx.x, lane = tid & 31;
    int64_t BH = p.B * p.H;
    int64_t qt = nqt - 1 - blockIdx.x / BH, bh = blockIdx.x % BH, b = bh / p.H, h = bh % p.H;
    int64_t i0 = qt * BM;
    int64_t kend = p.causal ? (i0 + BM < p.S ? i0 + BM : p.S) : p.S;
    int nt = (int)((kend + BN - 1) / BN);
    if (tid == 0) {
        for (int i = 0; i < NS; i++) {
            mb_init(bars + 8 * i, 256);
            mb_init(bars + 8 * (NS + i), 8);
        }
    }
    __syncthreads();
    s9_load<BM, 256, T>(sQ, p.q, b, h, i0, p.T, tid);
    if (DQ) s9_load<BM, 256, T>(sO, p.go, b, h, i0, p.T, tid);
    for (int j = 0; j < NS - 1 && j < nt; j++) { /* Q (and dO) land with tile 0 */
        s9_load<BN, 256, T>(sK + j * TK, p.k, b, h, (int64_t)j * BN, p.S, tid);
        s9_load<BN, 256, T>(sV + j * TK, p.v, b, h, (int64_t)j * BN, p.S, tid);
        mb_arrive_cp(bars + 8 * j);
    }
    int wg = tid >> 7, t = tid & 127, w = t >> 5, g = lane >> 2, q = lane & 3;
    int64_t iw = i0 + 64 * wg, ra = iw + 16 * w + g;
    float sl2 = (float)p.scale * S9_LOG2E;
    float acc[64], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, lse2[2], dl[2];
#pragma unroll
    for (int i = 0; i < 64; i++)
        acc[i] = 0.f;
    if (DQ) {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int64_t i = ra + 8 * r;
            float L = i < p.T ? ((const float *)p.lse)[bh * p.T + i] : -INFINITY;
            lse2[r] = L == -INFINITY ? INFINITY : L * S9_LOG2E;
            dl[r] = i < p.T ? ((const float *)p.dl)[bh * p.T + i] : 0.f;
        }
    }
    for (int it = 0; it < nt; it++) {
        int64_t j0 = (int64_t)it * BN;
        int st = it % NS;
        mb_wait(bars + 8 * st, (it / NS) & 1);
        s9_fence_async();
        if (!(p.causal && j0 > iw + 63)) {
            if (!DQ) {
                float s[BN / 2], alpha[2];
                uint32_t pa[BN / 16][4];
                wg_fence();
                s9_gemm_ss<BF, BN>(s, sQ + wg * 64 * 128, BM, sK + st * TK, BN);
                wg_commit();
                wg_wait<0>();
                s9_fence_acc<BN / 2>(s);
                fwd_softmax<BN>(s, m, l, alpha, p, j0, iw, ra, q, sl2);
                s9_pack_a<T, BN>(pa, s);
#pragma unroll
                for (int d = 0; d < 16; d++) {
                    acc[4 * d + 0] *= alpha[0], acc[4 * d + 1] *= alpha[0];
                    acc[4 * d + 2] *= alpha[1], acc[4 * d + 3] *= alpha[1];
                }
                s9_fence_acc<64>(acc);
                wg_fence();
                s9_gemm_rs<BF, BN>(acc, pa, sV + st * TK, BN);
                wg_commit();
                wg_wait<0>();
                s9_fence_acc<64>(acc);
            } else {
                float s[BN / 2], dp[BN / 2];
                uint32_t da[BN / 16][4];
                wg_fence();
                s9_gemm_ss<BF, BN>(s, sQ + wg * 64 * 128, BM, sK + st * TK, BN);
                s9_gemm_ss<BF, BN>(dp, sO + wg * 64 * 128, BM, sV + st * TK, BN);
                wg_commit();
                wg_wait<0>();
                s9_fence_acc<BN / 2>(s);
                s9_fence_acc<BN / 2>(dp);
                dq_ds<BN>(s, dp, lse2, dl, p, j0, iw, ra, q, sl2);
                s9_pack_a<T, BN>(da, s);
                s9_fence_acc<64>(acc);
                wg_fence();
                s9_gemm_rs<BF, BN>(acc, da, sK + st * TK, BN);
                wg_commit();
                wg_wait<0>();
                s9_fence_acc<64>(acc);
            }
        }
        __syncwarp();
        if (lane == 0) mb_arrive(bars + 8 * (NS + st)); /* this warp is done with the stage */
        int jn = it + NS - 1; /* refill the stage of tile it - 1 with tile it + NS - 1 */
        if (jn < nt) {
            int sn = jn % NS;
            if (jn >= NS) mb_wait(bars + 8 * (NS + sn), ((jn / NS) - 1) & 1);
            s9_load<BN, 256, T>(sK + sn * TK, p.k, b, h, (int64_t)jn * BN, p.S, tid);
            s9_load<BN, 256, T>(sV + sn * TK, p.v, b, h, (int64_t)jn * BN, p.S, tid);
            mb_arrive_cp(bars + 8 * sn);
        }
    }
    s9_cp_wait_all();
    if (DQ) {
        float sc = (float)p.scale;
        s9_store_rows<T>(acc, p.gq, b, h, ra, p.T, sc, sc, q);
    } else {
        float inv[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float lr = l[r];
            lr += __shfl_xor_sync(0xffffffffu, lr, 1);
            lr += __shfl_xor_sync(0xffffffffu, lr, 2);
            inv[r] = lr > 0.f ? 1.f / lr : 0.f;
            int64_t i = ra + 8 * r;
            if (q == 0 && i < p.T)
                ((float *)p.lse)[bh * p.T + i] = lr > 0.f ? (m[r] + log2f(lr)) * S9_LN2 : -INFINITY;
        }
        s9_store_rows<T>(acc, p.o, b, h, ra, p.T, inv[0], inv[1], q);
    }
#else
    (void)p, (void)nqt;
#endif
}

/* ---- dK, dV ---- */
/* CTA: 2 warpgroups of 64 keys; per query tile of 64: S^T = K Q^T, dP^T = V dO^T (keys as rows, so
 * that P^T and dS^T come out of the accumulators in the A layout of the next products), dV += P^T
 * dO, dK += dS^T Q. The warpgroups share the query-side tiles (Q, dO and their lse / Dl rows),
 * which go through NS stages handed over by mbarriers as in k_s9_ws: half the shared-memory fills
 * per product of a one-warpgroup CTA, two tiles of lookahead, and warpgroups that drift apart.
 * Causal: query tiles start at the diagonal. The lse / Dl rows are copied with 4-byte cp.async (so
 * that the stage's barrier covers them too) and turned into base-2 units where they are used. */
template <typename T, int NS>
__global__ void __launch_bounds__(256, 1) k_s9_dkdv_ws(attn_p p, int nkt) {
#if SM90_BODY
    constexpr bool BF = __is_same(T, __nv_bfloat16);
    constexpr int BN = 128, BM = 64, TT = BM * 256, TS = TT * 2 + 1024; /* 1024-aligned */
    extern __shared__ char s9_dyn[];
    uint32_t sK = s9_smem_base(s9_dyn), sV = sK + BN * 256, st0 = sV + BN * 256;
    uint32_t bars = st0 + NS * TS; /* full[NS], empty[NS] */
    /* stage s: Q tile, dO tile, lse[64], Dl[64] */
    int tid = threadIdx.x, lane = tid & 31;
    int64_t BH = p.B * p.H;
    int64_t kt = blockIdx.x / BH, bh = blockIdx.x % BH, b = bh / p.H, h = bh % p.H;
    (void)nkt;
    int64_t j0 = kt * BN;
    int64_t ifirst = p.causal ? (j0 / BM) * BM : 0;
    int nt = ifirst < p.T ? (int)((p.T - ifirst + BM - 1) / BM) : 0;
    if (tid == 0) {
        for (int i = 0; i < NS; i++) {
            mb_init(bars + 8 * i, 256);
            mb_init(bars + 8 * (NS + i), 8);
        }
    }
    __syncthreads();
    const float *lse = (const float *)p.lse + bh * p.T, *dlg = (const float *)p.dl + bh * p.T;
    auto fill = [&](int j, int s) {
        int64_t i0 = ifirst + (int64_t)j * BM;
        uint32_t base = st0 + s * TS;
        s9_load<BM, 256, T>(base, p.q, b, h, i0, p.T, tid);
        s9_load<BM, 256, T>(base + TT, p.go, b, h, i0, p.T, tid);
        if (tid < 2 * BM) {
            int r = tid & (BM - 1);
            bool ok = i0 + r < p.T;
            const float *src = (tid < BM ? lse : dlg) + (ok ? i0 + r : 0);
            asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(
                             base + 2 * TT + (tid < BM ? 0 : BM * 4) + r * 4),
                         "l"(src), "r"(ok ? 4 : 0));
        }
    };
    s9_load<BN, 256, T>(sK, p.k, b, h, j0, p.S, tid);
    s9_load<BN, 256, T>(sV, p.v, b, h, j0, p.S, tid);
    for (int j = 0; j < NS - 1 && j < nt; j++) { /* K and V land with stage 0 */
        fill(j, j);
        mb_arrive_cp(bars + 8 * j);
    }
    int wg = tid >> 7, t = tid & 127, w = t >> 5, g = lane >> 2, q = lane & 3;
    int64_t jw = j0 + 64 * wg, ja = jw + 16 * w + g;
    float sl2 = (float)p.scale * S9_LOG2E;
    float dk[64], dv[64];
#pragma unroll
    for (int i = 0; i < 64; i++)
        dk[i] = dv[i] = 0.f;
    for (int it = 0; it < nt; it++) {
        int64_t i0 = ifirst + (int64_t)it * BM;
        int st = it % NS;
        uint32_t sQ = st0 + st * TS, sO = sQ + TT;
        mb_wait(bars + 8 * st, (it / NS) & 1);
        s9_fence_async();
        if (!(p.causal && i0 + BM - 1 < jw)) { /* else every query of the tile precedes our keys */
            const float *L = (const float *)(s9_dyn + (sQ + 2 * TT - s9_addr(s9_dyn)));
            const float *Dl = L + BM;
            float s[32], dp[32];
            uint32_t pa[4][4], da[4][4];
            bool edge = i0 + BM > p.T || jw + 64 > p.S || (p.causal && i0 < jw + 63);
            wg_fence();
            s9_gemm_ss<BF, 64>(s, sK + wg * 64 * 128, BN, sQ, BM);
            s9_gemm_ss<BF, 64>(dp, sV + wg * 64 * 128, BN, sO, BM);
            wg_commit();
            wg_wait<0>();
            s9_fence_acc<32>(s);
            s9_fence_acc<32>(dp);
#pragma unroll
            for (int n = 0; n < 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int c = 8 * n + 2 * q + (e & 1); /* query within the tile */
                    float pr = ex2f(s[4 * n + e] * sl2 - L[c] * S9_LOG2E);
                    if (edge) {
                        int64_t i = i0 + c, j = ja + 8 * (e >> 1);
                        if (i >= p.T || j >= p.S || (p.causal && j > i)) pr = 0.f;
                    }
                    s[4 * n + e] = pr;
                    dp[4 * n + e] = pr * (dp[4 * n + e] - Dl[c]);
                }
            s9_pack_a<T, 64>(pa, s);
            s9_pack_a<T, 64>(da, dp);
            s9_fence_acc<64>(dv);
            s9_fence_acc<64>(dk);
            wg_fence();
            s9_gemm_rs<BF, 64>(dv, pa, sO, BM);
            s9_gemm_rs<BF, 64>(dk, da, sQ, BM);
            wg_commit();
            wg_wait<0>();
            s9_fence_acc<64>(dv);
            s9_fence_acc<64>(dk);
        }
        __syncwarp();
        if (lane == 0) mb_arrive(bars + 8 * (NS + st));
        int jn = it + NS - 1;
        if (jn < nt) {
            int sn = jn % NS;
            if (jn >= NS) mb_wait(bars + 8 * (NS + sn), ((jn / NS) - 1) & 1);
            fill(jn, sn);
            mb_arrive_cp(bars + 8 * sn);
        }
    }
    s9_cp_wait_all();
    s9_store_rows<T>(dv, p.gv, b, h, ja, p.S, 1.f, 1.f, q);
    float sc = (float)p.scale;
    s9_store_rows<T>(dk, p.gk, b, h, ja, p.S, sc, sc, q);
#else
    (void)p, (void)nkt;
#endif
}

/* ---- host side ---- */

template <typename K> int s9_set_smem(K kern, size_t bytes, const char *op) {
    RTC_CUDA_TRY(
        op, cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return RT_OK;
}

template <typename T, int BN, int NS, bool DQ> int s9_ws_launch(const attn_p &p, const char *op) {
    size_t smem = 1024 + (DQ ? 2 : 1) * 128 * 256 + 2 * NS * (size_t)BN * 256 + 16 * NS;
    RTC_TRY(s9_set_smem(k_s9_ws<T, BN, NS, DQ>, smem, op));
    int nqt = (int)((p.T + 127) / 128);
    k_s9_ws<T, BN, NS, DQ><<<(unsigned)(nqt * p.B * p.H), 256, smem, rtc_stream()>>>(p, nqt);
    RTC_LAUNCH_CHECK(op);
    return RT_OK;
}

/* forward: 128-key tiles, three stages (Q 32 KiB + 6 x 32 KiB of the 227 KiB a CTA may have) */
template <typename T> int s9_fwd(const attn_p &p) {
    return s9_ws_launch<T, 128, 3, false>(p, "scaled_dot_product_attention");
}

template <typename T> int s9_bwd(const attn_p &p) {
    const char *op = "scaled_dot_product_attention backward";
    constexpr int NS = 3; /* K, V (128 keys), NS x (Q, dO, lse, Dl), barriers */
    size_t sd = 1024 + 2 * 128 * 256 + NS * (2 * 64 * 256 + 1024) + 16 * NS;
    RTC_TRY(s9_set_smem(k_s9_dkdv_ws<T, NS>, sd, op));
    int nkt = (int)((p.S + 127) / 128);
    if (nkt > 0) { /* no keys: dK, dV are empty (a grid of 0 blocks is a launch error) */
        k_s9_dkdv_ws<T, NS><<<(unsigned)(nkt * p.B * p.H), 256, sd, rtc_stream()>>>(p, nkt);
        RTC_LAUNCH_CHECK(op);
    }
    /* dQ: 64-key tiles, four stages (128-key tiles in two stages measured 229 against 244 TFLOP/s
     * forward + backward) */
    return s9_ws_launch<T, 64, 4, true>(p, op);
}

} /* namespace */

/* Per device: compute capability 9.0 and a loadable sm_90a image of the kernels
 * (cudaFuncGetAttributes fails when the binary holds none for this device). RAMTORCH_ATTN_SM90=0
 * turns the path off. */
bool rtc_sm90_attn_usable(void) {
    static signed char known[64]; /* 0 unknown, 1 yes, -1 no */
    static const bool off = [] {
        const char *e = getenv("RAMTORCH_ATTN_SM90");
        return e && strcmp(e, "0") == 0;
    }();
    if (off) return false;
    int dev = rtc_current_device();
    if (dev < 0 || dev >= 64) return false;
    if (known[dev] == 0) {
        int major = 0, minor = 0;
        cudaFuncAttributes fa;
        bool ok =
            cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
            cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess &&
            major == 9 && minor == 0 &&
            cudaFuncGetAttributes(&fa, k_s9_ws<__nv_bfloat16, 128, 3, false>) == cudaSuccess;
        (void)cudaGetLastError(); /* a failed probe must not linger as the next launch's error */
        known[dev] = ok ? 1 : -1;
    }
    return known[dev] > 0;
}

int rtc_sm90_attn_fwd(const attn_p &p, bool bf16) {
    return bf16 ? s9_fwd<__nv_bfloat16>(p) : s9_fwd<__half>(p);
}

int rtc_sm90_attn_bwd(const attn_p &p, bool bf16) {
    return bf16 ? s9_bwd<__nv_bfloat16>(p) : s9_bwd<__half>(p);
}
