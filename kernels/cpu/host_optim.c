/* host_optim.c: the fused host optimizer kernels (DESIGN section 6) for parameters that live in
 * host memory: AdamW and SGD in one pass over parameter, gradient and state (and the bf16/f16
 * transfer shadow of an offloaded f32 master), with a scalar path and AVX2 / AVX-512 paths that
 * runtime/host_optim.c picks at run time (__builtin_cpu_supports). The SIMD functions carry their
 * own target attributes, so the default build stays portable.
 *
 * Bit-identical paths: every path performs the same IEEE operations in the same order as the
 * scalar path (which is kernels/cpu/optim.c's f32 arithmetic, PyTorch's single-tensor order): no
 * FMA (this file is compiled with -ffp-contract=off), no reciprocal approximations; sqrt and
 * division are correctly rounded in every path.
 *
 * bf16 optimizer state is stored with stochastic rounding: the f32 bits plus 16 random bits,
 * truncated. The random bits come from Philox4x32-10 (rt_philox4x32) keyed by a per-parameter,
 * per-step key, with the element index choosing counter and word: element i lies in block
 * b = i / 64 at r = i % 64; its bits are word r / 16 of counter b * 16 + r % 16 (low half for
 * exp_avg, high half for exp_avg_sq). A 16-lane (or two 8-lane) Philox over one block's counters
 * thus yields the random bits of 16 consecutive elements per word, and every path and every thread
 * split (tiles are whole blocks) draws the same bits for the same element. */
#include "cpu_kernels.h"

#include "../../runtime/host_optim.h"

#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RT_HAVE_X86 1
#endif

#define BLK 64    /* elements per random block */
#define TILE 4096 /* elements per OpenMP work item (whole blocks) */

/* RT_SIMD_* of ramtorch.h, repeated here to keep the kernels free of the public header's order */
enum { SIMD_SCALAR = 1, SIMD_AVX2 = 2, SIMD_AVX512 = 3 };

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* f -> bf16 by adding 16 random bits r16 and truncating; NaN stays a quiet NaN (as
 * rt_f32_to_bf16 does). Infinities stay infinite; the largest finite values may round up to inf
 * with the probability stochastic rounding gives them. */
static inline uint16_t sr_bf16(float f, uint32_t r16) {
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + r16) >> 16);
}

int rt_host_optim_resolve_simd(int requested) {
#ifdef RT_HAVE_X86
    int has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    int has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    int has512 = 0, has2 = 0;
#endif
    switch (requested) {
    case 0:
        return has512 ? SIMD_AVX512 : has2 ? SIMD_AVX2 : SIMD_SCALAR;
    case SIMD_SCALAR:
        return SIMD_SCALAR;
    case SIMD_AVX2:
        return has2 ? SIMD_AVX2 : -1;
    case SIMD_AVX512:
        return has512 ? SIMD_AVX512 : -1;
    }
    return -1;
}

/* ================================================================================================
 * Scalar path (also the tail of every tile and the f16-gradient path)
 * ============================================================================================== */

static void philox_block(uint64_t key, int64_t blk, uint32_t w[4][16]) {
    for (int k = 0; k < 16; k++) {
        uint32_t o[4];
        rt_philox4x32(key, (uint64_t)blk * 16 + (uint64_t)k, o);
        for (int q = 0; q < 4; q++)
            w[q][k] = o[q];
    }
}

/* A gradient element in its landing dtype (f32, bf16 or f16), widened exactly to f32. */
static inline float ld_grad(const void *g, int dt, int64_t i) {
    return dt == RT_BF16  ? rt_bf16_to_f32(((const uint16_t *)g)[i])
           : dt == RT_F16 ? rt_f16_to_f32(((const uint16_t *)g)[i])
                          : ((const float *)g)[i];
}

static inline void store_shadow(void *shadow, int dt, int64_t i, float v) {
    if (dt == RT_BF16)
        ((uint16_t *)shadow)[i] = rt_f32_to_bf16(v);
    else
        ((uint16_t *)shadow)[i] = rt_f32_to_f16(v);
}

static void adamw_scalar(const rt_host_adamw_job *j, int64_t i0, int64_t i1) {
    uint32_t w[4][16];
    int64_t have = -1;
    for (int64_t i = i0; i < i1; i++) {
        uint32_t rnd = 0;
        if (j->state_bf16) {
            int64_t b = i / BLK;
            if (b != have) {
                philox_block(j->key, b, w);
                have = b;
            }
            int r = (int)(i % BLK);
            rnd = w[r >> 4][r & 15];
        }
        float pi =
            j->param_bf16 ? rt_bf16_to_f32(((const uint16_t *)j->p)[i]) : ((const float *)j->p)[i];
        float gi = ld_grad(j->g, j->grad_dtype, i);
        if (j->maximize) gi = -gi;
        float mi, vi;
        if (j->state_bf16) {
            mi = rt_bf16_to_f32(((const uint16_t *)j->m)[i]);
            vi = rt_bf16_to_f32(((const uint16_t *)j->v)[i]);
        } else {
            mi = ((const float *)j->m)[i];
            vi = ((const float *)j->v)[i];
        }
        if (j->do_decay) pi = pi * j->decay;
        mi = j->lerp_small ? mi + j->w1 * (gi - mi) : gi - (gi - mi) * j->one_minus_w1;
        vi = vi * j->beta2;
        vi = vi + j->w2 * gi * gi;
        float denom = sqrtf(vi) / j->bc2_sqrt + j->eps;
        pi = pi + j->neg_step * mi / denom;
        if (j->param_bf16)
            ((uint16_t *)j->p)[i] = rt_f32_to_bf16(pi);
        else
            ((float *)j->p)[i] = pi;
        if (j->state_bf16) {
            ((uint16_t *)j->m)[i] = sr_bf16(mi, rnd & 0xffffu);
            ((uint16_t *)j->v)[i] = sr_bf16(vi, rnd >> 16);
        } else {
            ((float *)j->m)[i] = mi;
            ((float *)j->v)[i] = vi;
        }
        if (j->shadow) store_shadow(j->shadow, j->shadow_dtype, i, pi);
    }
}

static void sgd_scalar(const rt_host_sgd_job *j, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
        float p = j->p[i], d = ld_grad(j->g, j->grad_dtype, i);
        if (j->maximize) d = -d;
        if (j->do_wd) d = d + j->wd * p;
        if (j->buf) {
            float b;
            if (j->first_step) {
                b = d;
            } else {
                b = j->buf[i] * j->momentum;
                b = b + j->damp * d;
            }
            j->buf[i] = b;
            d = j->nesterov ? d + j->momentum * b : b;
        }
        p = p + j->neg_lr * d;
        j->p[i] = p;
        if (j->shadow) store_shadow(j->shadow, j->shadow_dtype, i, p);
    }
}

#ifdef RT_HAVE_X86
/* ================================================================================================
 * AVX2 path: 8 lanes; Philox over a block's 16 counters in two halves
 * ============================================================================================== */

#define T_AVX2 __attribute__((target("avx2,fma")))

T_AVX2 static inline void mulhilo8(__m256i a, __m256i m, __m256i *hi, __m256i *lo) {
    __m256i ev = _mm256_mul_epu32(a, m);
    __m256i od = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    *lo = _mm256_blend_epi32(ev, _mm256_slli_epi64(od, 32), 0xAA);
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(ev, 32), od, 0xAA);
}

/* Philox4x32-10 on counters base + 0..7 (base a multiple of 8): out[q] lane k = word q. */
T_AVX2 static inline void philox8(uint64_t key, uint64_t base, __m256i out[4]) {
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)base),
                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256i c1 = _mm256_set1_epi32((int)(uint32_t)(base >> 32));
    __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    const __m256i m0 = _mm256_set1_epi32((int)PHILOX_M0), m1 = _mm256_set1_epi32((int)PHILOX_M1);
    for (int r = 0; r < 10; r++) {
        __m256i h0, l0, h1, l1;
        mulhilo8(c0, m0, &h0, &l0);
        mulhilo8(c2, m1, &h1, &l1);
        __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(h1, c1), _mm256_set1_epi32((int)k0));
        __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(h0, c3), _mm256_set1_epi32((int)k1));
        c1 = l1;
        c3 = l0;
        c0 = n0;
        c2 = n2;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

T_AVX2 static inline __m256 ld_bf16_8(const uint16_t *s) {
    __m256i x = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)s));
    return _mm256_castsi256_ps(_mm256_slli_epi32(x, 16));
}

/* 8 x f32 -> bf16: add (stochastic: r16 random bits; nearest even: r16 NULL-like flag) */
T_AVX2 static inline __m128i to_bf16_8(__m256 x, __m256i add) {
    __m256i u = _mm256_castps_si256(x);
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                     _mm256_set1_epi32(0x7f800000));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, add), 16);
    __m256i q = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    r = _mm256_blendv_epi8(r, q, nan);
    return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

T_AVX2 static inline __m256i rne_add8(__m256 x) {
    __m256i u = _mm256_castps_si256(x);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    return _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd);
}

/* whole blocks [b0, b1) */
/* pbf, gbf: bf16 parameter / gradient; constants in each instantiation below, so the loop has no
 * per-element dtype branches */
T_AVX2 static inline __attribute__((always_inline)) void
adamw_avx2_body(const rt_host_adamw_job *j, int64_t b0, int64_t b1, const int pbf, const int gbf) {
    const __m256 decay = _mm256_set1_ps(j->decay), w1 = _mm256_set1_ps(j->w1),
                 omw1 = _mm256_set1_ps(j->one_minus_w1), beta2 = _mm256_set1_ps(j->beta2),
                 w2 = _mm256_set1_ps(j->w2), bc2 = _mm256_set1_ps(j->bc2_sqrt),
                 eps = _mm256_set1_ps(j->eps), nstep = _mm256_set1_ps(j->neg_step),
                 sign = _mm256_set1_ps(-0.0f);
    const __m256i lo16 = _mm256_set1_epi32(0xffff);
    float *P = j->p;
    const float *G = j->g;
    const uint16_t *PB = j->p, *GB = j->g;
    /* the shadow is only written: streaming stores spare the read-for-ownership of its lines */
    const int nt_shadow = j->shadow_dtype == RT_BF16 && ((uintptr_t)j->shadow & 15) == 0;
    for (int64_t b = b0; b < b1; b++) {
        __m256i rw[2][4];
        if (j->state_bf16) {
            philox8(j->key, (uint64_t)b * 16, rw[0]);
            philox8(j->key, (uint64_t)b * 16 + 8, rw[1]);
        }
        for (int q = 0; q < 8; q++) {
            int64_t i = b * BLK + q * 8;
            __m256 p = pbf ? ld_bf16_8(PB + i) : _mm256_loadu_ps(P + i);
            __m256 g = gbf ? ld_bf16_8(GB + i) : _mm256_loadu_ps(G + i), m, v;
            if (j->maximize) g = _mm256_xor_ps(g, sign);
            if (j->state_bf16) {
                m = ld_bf16_8((const uint16_t *)j->m + i);
                v = ld_bf16_8((const uint16_t *)j->v + i);
            } else {
                m = _mm256_loadu_ps((const float *)j->m + i);
                v = _mm256_loadu_ps((const float *)j->v + i);
            }
            if (j->do_decay) p = _mm256_mul_ps(p, decay);
            __m256 gm = _mm256_sub_ps(g, m);
            m = j->lerp_small ? _mm256_add_ps(m, _mm256_mul_ps(w1, gm))
                              : _mm256_sub_ps(g, _mm256_mul_ps(gm, omw1));
            v = _mm256_mul_ps(v, beta2);
            v = _mm256_add_ps(v, _mm256_mul_ps(_mm256_mul_ps(w2, g), g));
            __m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(v), bc2), eps);
            p = _mm256_add_ps(p, _mm256_div_ps(_mm256_mul_ps(nstep, m), den));
            if (pbf)
                _mm_storeu_si128((__m128i *)((uint16_t *)j->p + i), to_bf16_8(p, rne_add8(p)));
            else
                _mm256_storeu_ps(P + i, p);
            if (j->state_bf16) {
                /* element r = q * 8 + l: word (q * 8) / 16 = q / 2, lane (q % 2) * 8 + l */
                __m256i bits = rw[q & 1][q >> 1];
                _mm_storeu_si128((__m128i *)((uint16_t *)j->m + i),
                                 to_bf16_8(m, _mm256_and_si256(bits, lo16)));
                _mm_storeu_si128((__m128i *)((uint16_t *)j->v + i),
                                 to_bf16_8(v, _mm256_srli_epi32(bits, 16)));
            } else {
                _mm256_storeu_ps((float *)j->m + i, m);
                _mm256_storeu_ps((float *)j->v + i, v);
            }
            if (j->shadow_dtype == RT_BF16) {
                __m128i sh = to_bf16_8(p, rne_add8(p));
                __m128i *dst = (__m128i *)((uint16_t *)j->shadow + i);
                if (nt_shadow)
                    _mm_stream_si128(dst, sh);
                else
                    _mm_storeu_si128(dst, sh);
            }
        }
    }
    if (nt_shadow) _mm_sfence();
}

T_AVX2 static void adamw_avx2(const rt_host_adamw_job *j, int64_t b0, int64_t b1) {
    const int pbf = j->param_bf16, gbf = j->grad_dtype == RT_BF16;
    if (pbf && gbf)
        adamw_avx2_body(j, b0, b1, 1, 1);
    else if (pbf)
        adamw_avx2_body(j, b0, b1, 1, 0);
    else if (gbf)
        adamw_avx2_body(j, b0, b1, 0, 1);
    else
        adamw_avx2_body(j, b0, b1, 0, 0);
}

T_AVX2 static void sgd_avx2(const rt_host_sgd_job *j, int64_t i0, int64_t i1) {
    const __m256 wd = _mm256_set1_ps(j->wd), mom = _mm256_set1_ps(j->momentum),
                 damp = _mm256_set1_ps(j->damp), nlr = _mm256_set1_ps(j->neg_lr),
                 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = i0; i < i1; i += 8) {
        __m256 p = _mm256_loadu_ps(j->p + i);
        __m256 d = j->grad_dtype == RT_BF16 ? ld_bf16_8((const uint16_t *)j->g + i)
                                            : _mm256_loadu_ps((const float *)j->g + i);
        if (j->maximize) d = _mm256_xor_ps(d, sign);
        if (j->do_wd) d = _mm256_add_ps(d, _mm256_mul_ps(wd, p));
        if (j->buf) {
            __m256 b = j->first_step
                           ? d
                           : _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(j->buf + i), mom),
                                           _mm256_mul_ps(damp, d));
            _mm256_storeu_ps(j->buf + i, b);
            d = j->nesterov ? _mm256_add_ps(d, _mm256_mul_ps(mom, b)) : b;
        }
        p = _mm256_add_ps(p, _mm256_mul_ps(nlr, d));
        _mm256_storeu_ps(j->p + i, p);
        if (j->shadow_dtype == RT_BF16)
            _mm_storeu_si128((__m128i *)((uint16_t *)j->shadow + i), to_bf16_8(p, rne_add8(p)));
    }
}

/* ================================================================================================
 * AVX-512 path: 16 lanes; one Philox call per block
 * ============================================================================================== */

#define T_AVX512 __attribute__((target("avx512f,avx512bw")))

T_AVX512 static inline void mulhilo16(__m512i a, __m512i m, __m512i *hi, __m512i *lo) {
    __m512i ev = _mm512_mul_epu32(a, m);
    __m512i od = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
    *lo = _mm512_mask_blend_epi32(0xAAAA, ev, _mm512_slli_epi64(od, 32));
    *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(ev, 32), od);
}

T_AVX512 static inline void philox16(uint64_t key, uint64_t base, __m512i out[4]) {
    __m512i c0 =
        _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)base),
                         _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    __m512i c1 = _mm512_set1_epi32((int)(uint32_t)(base >> 32));
    __m512i c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    const __m512i m0 = _mm512_set1_epi32((int)PHILOX_M0), m1 = _mm512_set1_epi32((int)PHILOX_M1);
    for (int r = 0; r < 10; r++) {
        __m512i h0, l0, h1, l1;
        mulhilo16(c0, m0, &h0, &l0);
        mulhilo16(c2, m1, &h1, &l1);
        __m512i n0 = _mm512_xor_si512(_mm512_xor_si512(h1, c1), _mm512_set1_epi32((int)k0));
        __m512i n2 = _mm512_xor_si512(_mm512_xor_si512(h0, c3), _mm512_set1_epi32((int)k1));
        c1 = l1;
        c3 = l0;
        c0 = n0;
        c2 = n2;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

T_AVX512 static inline __m512 ld_bf16_16(const uint16_t *s) {
    __m512i x = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)s));
    return _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
}

T_AVX512 static inline __m256i to_bf16_16(__m512 x, __m512i add) {
    __m512i u = _mm512_castps_si512(x);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, add), 16);
    __m512i q = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    r = _mm512_mask_blend_epi32(nan, r, q);
    return _mm512_cvtepi32_epi16(r);
}

T_AVX512 static inline __m512i rne_add16(__m512 x) {
    __m512i u = _mm512_castps_si512(x);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    return _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd);
}

/* pbf, gbf: bf16 parameter / gradient; constants in each instantiation below, so the loop has no
 * per-element dtype branches */
T_AVX512 static inline __attribute__((always_inline)) void
adamw_avx512_body(const rt_host_adamw_job *j, int64_t b0, int64_t b1, const int pbf,
                  const int gbf) {
    const __m512 decay = _mm512_set1_ps(j->decay), w1 = _mm512_set1_ps(j->w1),
                 omw1 = _mm512_set1_ps(j->one_minus_w1), beta2 = _mm512_set1_ps(j->beta2),
                 w2 = _mm512_set1_ps(j->w2), bc2 = _mm512_set1_ps(j->bc2_sqrt),
                 eps = _mm512_set1_ps(j->eps), nstep = _mm512_set1_ps(j->neg_step);
    const __m512i lo16 = _mm512_set1_epi32(0xffff), sign = _mm512_set1_epi32((int)0x80000000u);
    float *P = j->p;
    const float *G = j->g;
    const uint16_t *PB = j->p, *GB = j->g;
    /* the shadow is only written: streaming stores spare the read-for-ownership of its lines */
    const int nt_shadow = j->shadow_dtype == RT_BF16 && ((uintptr_t)j->shadow & 31) == 0;
    for (int64_t b = b0; b < b1; b++) {
        __m512i rw[4];
        if (j->state_bf16) philox16(j->key, (uint64_t)b * 16, rw);
        for (int q = 0; q < 4; q++) {
            int64_t i = b * BLK + q * 16;
            __m512 p = pbf ? ld_bf16_16(PB + i) : _mm512_loadu_ps(P + i);
            __m512 g = gbf ? ld_bf16_16(GB + i) : _mm512_loadu_ps(G + i), m, v;
            if (j->maximize)
                g = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(g), sign));
            if (j->state_bf16) {
                m = ld_bf16_16((const uint16_t *)j->m + i);
                v = ld_bf16_16((const uint16_t *)j->v + i);
            } else {
                m = _mm512_loadu_ps((const float *)j->m + i);
                v = _mm512_loadu_ps((const float *)j->v + i);
            }
            if (j->do_decay) p = _mm512_mul_ps(p, decay);
            __m512 gm = _mm512_sub_ps(g, m);
            m = j->lerp_small ? _mm512_add_ps(m, _mm512_mul_ps(w1, gm))
                              : _mm512_sub_ps(g, _mm512_mul_ps(gm, omw1));
            v = _mm512_mul_ps(v, beta2);
            v = _mm512_add_ps(v, _mm512_mul_ps(_mm512_mul_ps(w2, g), g));
            __m512 den = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(v), bc2), eps);
            p = _mm512_add_ps(p, _mm512_div_ps(_mm512_mul_ps(nstep, m), den));
            if (pbf)
                _mm256_storeu_si256((__m256i *)((uint16_t *)j->p + i), to_bf16_16(p, rne_add16(p)));
            else
                _mm512_storeu_ps(P + i, p);
            if (j->state_bf16) {
                _mm256_storeu_si256((__m256i *)((uint16_t *)j->m + i),
                                    to_bf16_16(m, _mm512_and_si512(rw[q], lo16)));
                _mm256_storeu_si256((__m256i *)((uint16_t *)j->v + i),
                                    to_bf16_16(v, _mm512_srli_epi32(rw[q], 16)));
            } else {
                _mm512_storeu_ps((float *)j->m + i, m);
                _mm512_storeu_ps((float *)j->v + i, v);
            }
            if (j->shadow_dtype == RT_BF16) {
                __m256i sh = to_bf16_16(p, rne_add16(p));
                __m256i *dst = (__m256i *)((uint16_t *)j->shadow + i);
                if (nt_shadow)
                    _mm256_stream_si256(dst, sh);
                else
                    _mm256_storeu_si256(dst, sh);
            }
        }
    }
    if (nt_shadow) _mm_sfence();
}

T_AVX512 static void adamw_avx512(const rt_host_adamw_job *j, int64_t b0, int64_t b1) {
    const int pbf = j->param_bf16, gbf = j->grad_dtype == RT_BF16;
    if (pbf && gbf)
        adamw_avx512_body(j, b0, b1, 1, 1);
    else if (pbf)
        adamw_avx512_body(j, b0, b1, 1, 0);
    else if (gbf)
        adamw_avx512_body(j, b0, b1, 0, 1);
    else
        adamw_avx512_body(j, b0, b1, 0, 0);
}

T_AVX512 static void sgd_avx512(const rt_host_sgd_job *j, int64_t i0, int64_t i1) {
    const __m512 wd = _mm512_set1_ps(j->wd), mom = _mm512_set1_ps(j->momentum),
                 damp = _mm512_set1_ps(j->damp), nlr = _mm512_set1_ps(j->neg_lr);
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    for (int64_t i = i0; i < i1; i += 16) {
        __m512 p = _mm512_loadu_ps(j->p + i);
        __m512 d = j->grad_dtype == RT_BF16 ? ld_bf16_16((const uint16_t *)j->g + i)
                                            : _mm512_loadu_ps((const float *)j->g + i);
        if (j->maximize) d = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(d), sign));
        if (j->do_wd) d = _mm512_add_ps(d, _mm512_mul_ps(wd, p));
        if (j->buf) {
            __m512 b = j->first_step
                           ? d
                           : _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(j->buf + i), mom),
                                           _mm512_mul_ps(damp, d));
            _mm512_storeu_ps(j->buf + i, b);
            d = j->nesterov ? _mm512_add_ps(d, _mm512_mul_ps(mom, b)) : b;
        }
        p = _mm512_add_ps(p, _mm512_mul_ps(nlr, d));
        _mm512_storeu_ps(j->p + i, p);
        if (j->shadow_dtype == RT_BF16)
            _mm256_storeu_si256((__m256i *)((uint16_t *)j->shadow + i),
                                to_bf16_16(p, rne_add16(p)));
    }
}
#endif /* RT_HAVE_X86 */

/* ================================================================================================
 * Drivers: OpenMP over tiles of whole blocks; each element's result depends only on its index
 * ============================================================================================== */

static int team_size(int threads) {
#ifdef _OPENMP
    return threads > 0 ? threads : omp_get_max_threads();
#else
    (void)threads;
    return 1;
#endif
}

/* f16 shadows are written after the SIMD loop, per tile, while the tile is still in cache. */
static void f16_shadow(void *shadow, const float *p, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++)
        ((uint16_t *)shadow)[i] = rt_f32_to_f16(p[i]);
}

int rt_host_adamw_run(const rt_host_adamw_job *j, int simd, int threads) {
    const int64_t n = j->n, ntiles = (n + TILE - 1) / TILE;
    if (j->grad_dtype == RT_F16) simd = SIMD_SCALAR; /* rare: no vector f16 widening here */
    int nt = team_size(threads);
    (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (n > 2 * TILE)
    for (int64_t t = 0; t < ntiles; t++) {
        int64_t i0 = t * TILE, i1 = i0 + TILE < n ? i0 + TILE : n;
        int64_t full = i0 + (i1 - i0) / BLK * BLK;
        switch (simd) {
#ifdef RT_HAVE_X86
        case SIMD_AVX512:
            adamw_avx512(j, i0 / BLK, full / BLK);
            break;
        case SIMD_AVX2:
            adamw_avx2(j, i0 / BLK, full / BLK);
            break;
#endif
        default:
            full = i0;
            break;
        }
        if (full > i0 && j->shadow_dtype == RT_F16) f16_shadow(j->shadow, j->p, i0, full);
        adamw_scalar(j, full, i1);
    }
    return RT_OK;
}

int rt_host_sgd_run(const rt_host_sgd_job *j, int simd, int threads) {
    const int64_t n = j->n, ntiles = (n + TILE - 1) / TILE;
    if (j->grad_dtype == RT_F16) simd = SIMD_SCALAR;
    int nt = team_size(threads);
    (void)nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (n > 2 * TILE)
    for (int64_t t = 0; t < ntiles; t++) {
        int64_t i0 = t * TILE, i1 = i0 + TILE < n ? i0 + TILE : n;
        int64_t full = i0 + (i1 - i0) / BLK * BLK;
        switch (simd) {
#ifdef RT_HAVE_X86
        case SIMD_AVX512:
            sgd_avx512(j, i0, full);
            break;
        case SIMD_AVX2:
            sgd_avx2(j, i0, full);
            break;
#endif
        default:
            full = i0;
            break;
        }
        if (full > i0 && j->shadow_dtype == RT_F16) f16_shadow(j->shadow, j->p, i0, full);
        sgd_scalar(j, full, i1);
    }
    return RT_OK;
}
