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
 * On the H200 benchmark (B 8, H 16, T 2048, causal) these kernels reach 0.74x of PyTorch's SDPA
 * forward + backward and 0.75x of its forward (BENCHMARKS.md). The steps there: with CTA-wide
 * barriers between the two warpgroups (commit 8206a18) 0.55x / 0.57x (forward / forward +
 * backward), Nsight Compute showing the tensor pipe 32% busy and one of 2 warps per scheduler
 * eligible in 38% of cycles; with mbarrier-staged stages and warpgroups drifting apart 0.60x /
 * 0.63x; then with the tiles copied by the tensor memory accelerator (TMA) from a producer warp
 * (a measurement with the consumers' cp.async refills switched off had run the forward 18% faster:
 * the copies' address arithmetic and issue sat on the consumers' critical path). Measured and not
 * kept: issuing the next S before the softmax (with barriers, commit 8a850b0); dQ added with
 * atomics inside the dK/dV kernel (per-warpgroup vector reductions, 2.2 GB of them here: 219
 * against 244 TFLOP/s). Not built: warpgroups taking turns on the tensor cores (ping-pong).
 *
 * Shared-memory tiles: R rows x 128 elements, stored as two 64-column halves (128 bytes per row)
 * with the 128-byte swizzle (16-byte chunk c of row r at chunk c ^ (r % 8)), every tile 1024-byte
 * aligned. The same tile serves as a K-major operand (rows = M or N, head dim = reduction: Q K^T,
 * dO V^T) and as an MN-major B operand (rows = reduction: P V, dS K, P^T dO, dS^T Q).
 *
 * Kernels: k_s9_ws (the forward, or dQ) and k_s9_dkdv_ws. The backward recomputes S in both (7
 * products instead of FlashAttention-2's 5) so that no gradient is summed with atomics: results
 * repeat bit for bit. Tiles arrive through TMA descriptors (s9_map) built per launch; a view the
 * TMA cannot describe (a dim broadcast with stride 0) makes the launchers decline, and attention.cu
 * runs its portable kernels. */
#include "attention_frag.cuh"
#include "attention_params.cuh"
#include "rowops.cuh"

#include <cuda.h> /* CUtensorMap (the encoder is reached through the runtime: no libcuda link) */
#include <cudaTypedefs.h>
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

/* rows [r0, r0 + R) of the (b, h) slice of a tensor map's view into a swizzled tile at shared
 * address `tile`, as two 64-column boxes, completing `bar`'s transaction count; the tensor memory
 * accelerator (TMA) zero-fills rows past the end (so that P V never meets garbage) and writes the
 * 128-byte swizzle itself */
template <int R>
__device__ __forceinline__ void s9_tma_tile(uint32_t tile, const CUtensorMap *m, int ord,
                                            int64_t r0, int64_t h, int64_t b, uint32_t bar) {
    int c[4] = {0, 0, 0, 0}; /* the descriptor's dim order (s9_map) */
#pragma unroll
    for (int d = 1; d < 4; d++)
        c[d] = (ord & 3) == d ? (int)r0 : ((ord >> 2) & 3) == d ? (int)h : (int)b;
#pragma unroll
    for (int half = 0; half < 2; half++)
        asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes"
                     " [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(tile + half * R * 128),
                     "l"((uint64_t)m), "r"(half * 64), "r"(c[1]), "r"(c[2]), "r"(c[3]), "r"(bar)
                     : "memory");
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
/* arrives and adds `bytes` to the phase's expected transaction count (the TMA copies that follow
 * complete it) */
__device__ __forceinline__ void mb_arrive_tx(uint32_t bar, uint32_t bytes) {
    asm volatile(
        "{\n.reg .b64 st;\nmbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}\n" ::"r"(bar),
        "r"(bytes)
        : "memory");
}
/* barrier initialisation visible to the async proxy (the TMA) before any copy signals it */
__device__ __forceinline__ void mb_init_fence() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

#endif /* SM90_BODY */

/* The dK/dV kernel's register split (setmaxnreg): a block of 384 threads gets 168 registers per
 * thread at launch (the most that 12 warps may have), a pool of 384 x 168 that setmaxnreg only
 * redistributes; an "inc" the pool cannot cover waits forever. The producer warpgroup gives up
 * registers first, then the two consumer warpgroups take them. */
#define S9_REG_PRODUCER 40
#define S9_REG_CONSUMER 232
static_assert(128 * S9_REG_PRODUCER + 256 * S9_REG_CONSUMER <= 384 * 168,
              "setmaxnreg: the consumers would wait for registers the block does not have");
static_assert(S9_REG_PRODUCER % 8 == 0 && S9_REG_CONSUMER % 8 == 0 && S9_REG_PRODUCER >= 24 &&
                  S9_REG_CONSUMER <= 256 && S9_REG_PRODUCER <= 168 && S9_REG_CONSUMER >= 168,
              "setmaxnreg counts: multiples of 8 in [24, 256], dec below and inc above 168");

/* the tensor maps of one launch (TMA descriptors live in kernel parameter space) */
struct s9_maps {
    CUtensorMap q, k, v, go;
    int ord[4]; /* q, k, v, go: where s9_map put the row, head and batch dims */
};

/* ---- forward and dQ ---- */
/* CTA: 2 consumer warpgroups, 128 queries (64 each), and one producer warp. Forward, per key tile:
 * S = Q K^T (ss), the online softmax, O += P V (rs). dQ, per key tile: S, dP = dO V^T, dS = P (dP
 * - Dl), dQ += dS K; then scale. A warpgroup whose rows all precede a (causal) key tile skips it;
 * tiles that cross the diagonal or the end of the keys are masked element by element. There are
 * no CTA-wide barriers: the key tiles go through NS shared-memory stages handed over by mbarriers.
 * One thread of the producer warp issues the TMA copies of a stage (its "full" barrier completes
 * when their bytes have landed) once the stage's "empty" barrier says that the 8 consumer warps
 * are done with the tile it held. Measured before (the consumers loading with cp.async): with the
 * refills switched off the forward ran 18% faster, so the address arithmetic and copy issue on the
 * consumers' critical path cost that much. A ninth warp leaves 224 registers per thread. */
template <typename T, int BN, int NS, bool DQ>
__global__ void __launch_bounds__(288, 1)
    k_s9_ws(const __grid_constant__ s9_maps tm, attn_p p, int nqt) {
#if SM90_BODY
    constexpr bool BF = __is_same(T, __nv_bfloat16);
    constexpr int BM = 128, TQ = BM * 256, TK = BN * 256;
    extern __shared__ char s9_dyn[];
    uint32_t sQ = s9_smem_base(s9_dyn), sO = sQ + TQ, sK = sO + (DQ ? TQ : 0), sV = sK + NS * TK;
    uint32_t bars = sV + NS * TK, qbar = bars + 16 * NS; /* full[NS], empty[NS], Q */
    int tid = threadIdx.x, lane = tid & 31;
    int64_t BH = p.B * p.H;
    int64_t qt = nqt - 1 - blockIdx.x / BH, bh = blockIdx.x % BH, b = bh / p.H, h = bh % p.H;
    int64_t i0 = qt * BM;
    int64_t kend = p.causal ? (i0 + BM < p.S ? i0 + BM : p.S) : p.S;
    int nt = (int)((kend + BN - 1) / BN);
    if (tid == 0) {
        for (int i = 0; i < NS; i++) {
            mb_init(bars + 8 * i, 1);
            mb_init(bars + 8 * (NS + i), 8);
        }
        mb_init(qbar, 1);
        mb_init_fence();
    }
    __syncthreads();
    if (tid >= 256) { /* the producer warp */
        if (lane == 0) {
            mb_arrive_tx(qbar, (DQ ? 2 : 1) * TQ);
            s9_tma_tile<BM>(sQ, &tm.q, tm.ord[0], i0, h, b, qbar);
            if (DQ) s9_tma_tile<BM>(sO, &tm.go, tm.ord[3], i0, h, b, qbar);
            for (int it = 0; it < nt; it++) {
                int st = it % NS;
                if (it >= NS) mb_wait(bars + 8 * (NS + st), ((it / NS) - 1) & 1);
                mb_arrive_tx(bars + 8 * st, 2 * TK);
                uint32_t full = bars + 8 * st;
                s9_tma_tile<BN>(sK + st * TK, &tm.k, tm.ord[1], (int64_t)it * BN, h, b, full);
                s9_tma_tile<BN>(sV + st * TK, &tm.v, tm.ord[2], (int64_t)it * BN, h, b, full);
            }
        }
        return;
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
    mb_wait(qbar, 0);
    for (int it = 0; it < nt; it++) {
        int64_t j0 = (int64_t)it * BN;
        int st = it % NS;
        mb_wait(bars + 8 * st, (it / NS) & 1);
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
    }
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
    (void)tm, (void)p, (void)nqt;
#endif
}

/* ---- dK, dV ---- */
/* CTA: 2 consumer warpgroups of 64 keys and a producer warp; per query tile of 64: S^T = K Q^T,
 * dP^T = V dO^T (keys as rows, so that P^T and dS^T come out of the accumulators in the A layout
 * of the next products), dV += P^T dO, dK += dS^T Q. The warpgroups share the query-side tiles (Q,
 * dO and their lse / Dl rows), which go through NS stages handed over by mbarriers as in k_s9_ws.
 * Causal: query tiles start at the diagonal. The producer warp copies a stage's lse / Dl rows with
 * plain loads and stores (64 + 64 floats; the TMA would need rows 16-byte aligned) and turns them
 * into base-2 units, then its lane 0 arrives on the stage's "full" barrier (a release: the
 * consumers' wait sees the stores) with the TMA bytes of Q and dO to come. */
template <typename T, int NS>
__global__ void __launch_bounds__(384, 1)
    k_s9_dkdv_ws(const __grid_constant__ s9_maps tm, attn_p p) {
#if SM90_BODY
    constexpr bool BF = __is_same(T, __nv_bfloat16);
    constexpr int BN = 128, BM = 64, TT = BM * 256, TS = TT * 2 + 1024; /* 1024-aligned */
    extern __shared__ char s9_dyn[];
    uint32_t sK = s9_smem_base(s9_dyn), sV = sK + BN * 256, st0 = sV + BN * 256;
    uint32_t bars = st0 + NS * TS, kbar = bars + 16 * NS; /* full[NS], empty[NS], K and V */
    /* stage s: Q tile, dO tile, lse[64] (base 2), Dl[64] */
    int tid = threadIdx.x, lane = tid & 31;
    int64_t BH = p.B * p.H;
    int64_t kt = blockIdx.x / BH, bh = blockIdx.x % BH, b = bh / p.H, h = bh % p.H;
    int64_t j0 = kt * BN;
    int64_t ifirst = p.causal ? (j0 / BM) * BM : 0;
    int nt = ifirst < p.T ? (int)((p.T - ifirst + BM - 1) / BM) : 0;
    if (tid == 0) {
        for (int i = 0; i < NS; i++) {
            mb_init(bars + 8 * i, 1);
            mb_init(bars + 8 * (NS + i), 8);
        }
        mb_init(kbar, 1);
        mb_init_fence();
    }
    __syncthreads();
    float *sdyn = (float *)(s9_dyn + (st0 - s9_addr(s9_dyn))); /* generic view of the stages */
    if (tid >= 256) { /* the producer warpgroup: its first warp works, with few registers */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(S9_REG_PRODUCER) : "memory");
        if (tid >= 288) return;
        const float *lse = (const float *)p.lse + bh * p.T, *dlg = (const float *)p.dl + bh * p.T;
        if (lane == 0) {
            mb_arrive_tx(kbar, 2 * BN * 256);
            s9_tma_tile<BN>(sK, &tm.k, tm.ord[1], j0, h, b, kbar);
            s9_tma_tile<BN>(sV, &tm.v, tm.ord[2], j0, h, b, kbar);
        }
        for (int it = 0; it < nt; it++) {
            int st = it % NS;
            int64_t i0 = ifirst + (int64_t)it * BM;
            if (it >= NS) mb_wait(bars + 8 * (NS + st), ((it / NS) - 1) & 1);
            float *L = sdyn + (st * TS + 2 * TT) / 4;
#pragma unroll
            for (int r = lane; r < BM; r += 32) {
                bool ok = i0 + r < p.T;
                float lv = ok ? lse[i0 + r] : 0.f;
                L[r] = lv == -INFINITY ? INFINITY : lv * S9_LOG2E; /* no keys: P = 2^-inf = 0 */
                L[BM + r] = ok ? dlg[i0 + r] : 0.f;
            }
            __syncwarp();
            if (lane == 0) {
                uint32_t bar = bars + 8 * st, base = st0 + st * TS;
                mb_arrive_tx(bar, 2 * TT);
                s9_tma_tile<BM>(base, &tm.q, tm.ord[0], i0, h, b, bar);
                s9_tma_tile<BM>(base + TT, &tm.go, tm.ord[3], i0, h, b, bar);
            }
        }
        return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(S9_REG_CONSUMER) : "memory");
    int wg = tid >> 7, t = tid & 127, w = t >> 5, g = lane >> 2, q = lane & 3;
    int64_t jw = j0 + 64 * wg, ja = jw + 16 * w + g;
    float sl2 = (float)p.scale * S9_LOG2E;
    float dk[64], dv[64];
#pragma unroll
    for (int i = 0; i < 64; i++)
        dk[i] = dv[i] = 0.f;
    mb_wait(kbar, 0);
    for (int it = 0; it < nt; it++) {
        int64_t i0 = ifirst + (int64_t)it * BM;
        int st = it % NS;
        uint32_t sQ = st0 + st * TS, sO = sQ + TT;
        mb_wait(bars + 8 * st, (it / NS) & 1);
        if (!(p.causal && i0 + BM - 1 < jw)) { /* else every query of the tile precedes our keys */
            const float *L = sdyn + (st * TS + 2 * TT) / 4;
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
                    float pr = ex2f(s[4 * n + e] * sl2 - L[c]);
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
    }
    s9_store_rows<T>(dv, p.gv, b, h, ja, p.S, 1.f, 1.f, q);
    float sc = (float)p.scale;
    s9_store_rows<T>(dk, p.gk, b, h, ja, p.S, sc, sc, q);
#else
    (void)tm, (void)p;
#endif
}

/* ---- host side ---- */

template <typename K> int s9_set_smem(K kern, size_t bytes, const char *op) {
    RTC_CUDA_TRY(
        op, cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return RT_OK;
}

/* cuTensorMapEncodeTiled, reached through the runtime (the library links cudart, not libcuda) */
PFN_cuTensorMapEncodeTiled_v12000 s9_encoder(void) {
    static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
        void *f = NULL;
        cudaDriverEntryPointQueryResult q;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                             &q) != cudaSuccess ||
            q != cudaDriverEntryPointSuccess)
            f = NULL;
        (void)cudaGetLastError();
        return (PFN_cuTensorMapEncodeTiled_v12000)f;
    }();
    return fn;
}

/* S9_DECLINED: the views cannot be described to the TMA (a broadcast dim, or a layout the encoder
 * refuses); the caller runs the portable kernels instead */
#define S9_DECLINED RTC_SM90_DECLINED
/* RTC_TRY passes positive codes on; a decline must return as well */
#define S9_TRY(expr)                                                                               \
    do {                                                                                           \
        int s9_rc_ = (expr);                                                                       \
        if (s9_rc_ != RT_OK) return s9_rc_;                                                        \
    } while (0)

/* the TMA descriptor of a (B, H, N, 128) bf16/f16 view read in boxes of 64 columns x `rows` rows
 * with the 128-byte swizzle; rows past N read as zeros. The descriptor's dims 1..3 are the view's
 * row, head and batch dims in the order of their strides, as the encoder's documentation lays
 * them out (a model's (B, T, H, D) activations transposed to (B, H, T, D) have the head stride
 * below the row stride; descriptors with unsorted strides were not tried), and *ord says where
 * each went (bits 2d..2d+1: the descriptor dim of view dim d, 0 row, 1 head, 2 batch). A dim of
 * extent 1 is never stepped along and goes last with a nominal stride. The views reaching here
 * have the last dim contiguous, the others' strides multiples of 8 elements and a 16-byte aligned
 * start (fast_view in attention.cu). Returns RT_OK, or S9_DECLINED for overlapping or broadcast
 * (stride 0) dims. */
int s9_map(CUtensorMap *m, int *ord, const av4 &v, bool bf16, int64_t B, int64_t H, int64_t N,
           int rows) {
    PFN_cuTensorMapEncodeTiled_v12000 enc = s9_encoder();
    if (!enc) return S9_DECLINED;
    int64_t ext[3] = {N > 0 ? N : 1, H, B}, st[3] = {v.s[2], v.s[1], v.s[0]};
    int idx[3] = {0, 1, 2};
    for (int i = 1; i < 3; i++) /* insertion sort: extent-1 dims last, the rest by stride */
        for (int j = i; j > 0; j--) {
            int a = idx[j - 1], c = idx[j];
            bool swap = (ext[a] == 1 && ext[c] > 1) || (ext[a] > 1 && ext[c] > 1 && st[c] < st[a]);
            if (!swap) break;
            idx[j - 1] = c, idx[j] = a;
        }
    cuuint64_t dim[4] = {128, 1, 1, 1}, stride[3];
    int64_t span = 128; /* elements one step of the next dim must clear */
    *ord = 0;
    for (int i = 0; i < 3; i++) {
        int d = idx[i];
        int64_t sd = ext[d] == 1 ? span : st[d];
        if (sd < span || ext[d] > 0x7fffffff) return S9_DECLINED;
        dim[i + 1] = (cuuint64_t)ext[d], stride[i] = (cuuint64_t)sd * 2;
        span = sd * ext[d];
        *ord |= (i + 1) << (2 * d);
    }
    cuuint32_t box[4] = {64, 1, 1, 1}, es[4] = {1, 1, 1, 1};
    box[*ord & 3] = (cuuint32_t)rows; /* the row dim's place */
    CUresult r =
        enc(m, bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 4, v.p,
            dim, stride, box, es, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return r == CUDA_SUCCESS ? RT_OK : S9_DECLINED;
}

/* the forward/dQ kernel's descriptors: Q (and dO) in 128-row boxes, K and V in BN-row ones */
template <typename T, int BN, bool DQ> int s9_ws_maps(const attn_p &p, s9_maps *tm) {
    constexpr bool BF = __is_same(T, __nv_bfloat16);
    memset(tm, 0, sizeof *tm);
    S9_TRY(s9_map(&tm->q, &tm->ord[0], p.q, BF, p.B, p.H, p.T, 128));
    S9_TRY(s9_map(&tm->k, &tm->ord[1], p.k, BF, p.B, p.H, p.S, BN));
    S9_TRY(s9_map(&tm->v, &tm->ord[2], p.v, BF, p.B, p.H, p.S, BN));
    if (DQ) S9_TRY(s9_map(&tm->go, &tm->ord[3], p.go, BF, p.B, p.H, p.T, 128));
    return RT_OK;
}

template <typename T, int BN, int NS, bool DQ>
int s9_ws_run(const attn_p &p, const s9_maps &tm, const char *op) {
    size_t smem = 1024 + (DQ ? 2 : 1) * 128 * 256 + 2 * NS * (size_t)BN * 256 + 16 * NS + 16;
    RTC_TRY(s9_set_smem(k_s9_ws<T, BN, NS, DQ>, smem, op));
    int nqt = (int)((p.T + 127) / 128);
    if (nqt == 0) return RT_OK; /* no queries (a grid of 0 blocks is a launch error) */
    k_s9_ws<T, BN, NS, DQ><<<(unsigned)(nqt * p.B * p.H), 288, smem, rtc_stream()>>>(tm, p, nqt);
    RTC_LAUNCH_CHECK(op);
    return RT_OK;
}

/* forward: 128-key tiles, three stages (Q 32 KiB + 6 x 32 KiB of the 227 KiB a CTA may have) */
template <typename T> int s9_fwd(const attn_p &p) {
    s9_maps tm;
    S9_TRY((s9_ws_maps<T, 128, false>(p, &tm)));
    return s9_ws_run<T, 128, 3, false>(p, tm, "scaled_dot_product_attention");
}

/* the backward: every descriptor of both kernels is built first, so that a decline comes before
 * anything runs. dQ: 64-key tiles, four stages (128-key tiles in two stages measured 229 against
 * 244 TFLOP/s forward + backward). */
template <typename T> int s9_bwd(const attn_p &p) {
    const char *op = "scaled_dot_product_attention backward";
    constexpr bool BF = __is_same(T, __nv_bfloat16);
    constexpr int NS = 3; /* K, V (128 keys), NS x (Q, dO, lse, Dl), barriers */
    s9_maps tm, tq;
    memset(&tm, 0, sizeof tm);
    S9_TRY(s9_map(&tm.q, &tm.ord[0], p.q, BF, p.B, p.H, p.T, 64));
    S9_TRY(s9_map(&tm.k, &tm.ord[1], p.k, BF, p.B, p.H, p.S, 128));
    S9_TRY(s9_map(&tm.v, &tm.ord[2], p.v, BF, p.B, p.H, p.S, 128));
    S9_TRY(s9_map(&tm.go, &tm.ord[3], p.go, BF, p.B, p.H, p.T, 64));
    S9_TRY((s9_ws_maps<T, 64, true>(p, &tq)));
    size_t sd = 1024 + 2 * 128 * 256 + NS * (2 * 64 * 256 + 1024) + 16 * NS + 16;
    RTC_TRY(s9_set_smem(k_s9_dkdv_ws<T, NS>, sd, op));
    int nkt = (int)((p.S + 127) / 128);
    if (nkt > 0) { /* no keys: dK, dV are empty (a grid of 0 blocks is a launch error) */
        k_s9_dkdv_ws<T, NS><<<(unsigned)(nkt * p.B * p.H), 384, sd, rtc_stream()>>>(tm, p);
        RTC_LAUNCH_CHECK(op);
    }
    return s9_ws_run<T, 64, 4, true>(p, tq, op);
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
