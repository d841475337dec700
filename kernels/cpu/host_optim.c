/* host_optim.c: the fused host optimizer kernels (DESIGN section 6) for parameters that live in
 * host memory: AdamW and SGD in one pass over parameter, gradient and state (and the bf16/f16
 * transfer shadow of an offloaded f32 master, and the delayed update's back copy in the parameter's
 * own dtype: one more store per element, not a copy pass reading the parameter again), with a
 * scalar path and AVX2 / AVX-512 paths that runtime/host_optim.c picks at run time
 * (__builtin_cpu_supports). The SIMD functions carry their own target attributes, so the default
 * build stays portable.
 *
 * Bit-identical paths: every path performs the same IEEE operations in the same order as the
 * scalar path (which is kernels/cpu/optim.c's f32 arithmetic, PyTorch's single-tensor order): no
 * FMA (this file is compiled with -ffp-contract=off), no reciprocal approximations; sqrt and
 * division are correctly rounded in every path.
 *
 * bf16 optimizer state is stored with stochastic rounding: the f32 bits plus 16 random bits,
 * truncated. Element i draws 32 bits, sr_hash(key words, i) below (low half for exp_avg, high half
 * for exp_avg_sq): a counter-based hash of (per-parameter, per-step key, element index), so every
 * path and every thread split computes the same bits for the same element from its index alone.
 *
 * Why a hash and not Philox: the bits used to come from Philox4x32-10, 4 elements per call with all
 * 128 bits used (2 x 16 per element: one call cannot serve 8 elements). Measured on the 2-core
 * CI-class Xeon, one thread, 16 AVX-512 lanes: Philox4x32-10 0.49-0.56 ns per element,
 * Philox4x32-7 (Salmon et al. 2011: Crush-resistant from 7 rounds, 10 being their safety margin)
 * 0.31-0.38 ns, this hash 0.15 ns (0.13 with two rounds), against about 1.2 ns for the rest of a
 * bf16-state update. scripts/bench/host_adamw.lua 24 1 (AVX-512): f32 parameters with bf16
 * states 0.60-0.65 -> 0.77-0.81 Gparam/s, all-bf16 0.73-0.75 -> 0.90-0.91 (BENCHMARKS.md).
 * Stochastic rounding needs 16-bit offsets that are uniform and independent of the value rounded,
 * of the other elements and of the other steps, not cryptographic strength. The rounds are
 * Wellons' lowbias32 (hash-prospector constants) with the second key word injected after the
 * first, plus a third: with two, the stream over the elements of one step passed dieharder 3.31
 * -a except dab_bytedistrib (p = 1 - 2e-7: too even over consecutive counters), which the third
 * round passes (p = 0.08; AES_OFB 0.69), as it passes 8 other tests (2 WEAK at 100 p-samples
 * passed at 300). The stream over the steps of one element had no FAILED in
 * the 102 of -a's 114 results run with two rounds (its keys are splitmix64 outputs).
 * tests/c/test_host_optim.c checks each half's round-up rate and the absence of correlation across
 * steps, neighbours and the tensor. */
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

#define BLK 64 /* elements per SIMD block */
/* Software prefetch distance (elements) of the AVX2 and AVX-512 loops. One thread's AdamW streams
 * from memory are latency-bound: on the 2-core CI-class Xeon (2 threads, 2^25 parameters, three
 * runs each) prefetching 1024 elements ahead raised bf16 states 1.35-1.41 -> 1.84-1.98 Gparam/s,
 * f32 parameters with bf16 gradients and states 1.34-1.45 -> 2.11-2.23, all-bf16 1.37-1.49 ->
 * 2.17-2.28, f32 1.22-1.31 -> 1.26-1.41. On the H200's 16-core host (one call, a noisy one: PyTorch
 * ran 25% below its usual) the same change moved the five configurations between -17% and +32%.
 * The AVX2 loop, forced on the same machine under load from other builds (three runs each), went
 * from 0.28-0.47 to 0.38-0.54 Gparam/s in every configuration. */
#define PFD 1024
#define TILE 4096 /* elements per OpenMP work item (whole blocks) */

/* RT_SIMD_* of ramtorch.h, repeated here to keep the kernels free of the public header's order */
enum { SIMD_SCALAR = 1, SIMD_AVX2 = 2, SIMD_AVX512 = 3 };

/* sr_hash constants: Wellons' lowbias32 multipliers (hash-prospector, shifts 16 / 15 / 15), and a
 * third round with lowbias32's first published multiplier */
#define SR_M1 0x21f0aaadu
#define SR_M2 0x735a2d97u
#define SR_M3 0x846ca68bu

/* The key words of elements [hi * 2^32, (hi + 1) * 2^32): the (hi + 1)-th splitmix64 output from
 * the step's key, so that tensors beyond 2^32 elements do not repeat bits. A tile never straddles
 * such a boundary (TILE divides 2^32), so each kernel call computes them once. */
typedef struct sr_keys {
    uint32_t a, b;
} sr_keys;

static inline sr_keys sr_keys_for(uint64_t key, int64_t i) {
    uint64_t x = key + ((uint64_t)i >> 32) * 0x9E3779B97F4A7C15ull + 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    x ^= x >> 31;
    return (sr_keys){(uint32_t)x, (uint32_t)(x >> 32)};
}

/* 32 random bits of element i (c = its low 32 bits): key word a added to the counter, three
 * multiply-xorshift rounds with key word b xored in after the first (so the two key words do not
 * act as a mere shift of the counter). The SIMD versions below are the same operations lane-wise.
 */
static inline uint32_t sr_hash(sr_keys k, uint32_t c) {
    uint32_t x = c + k.a;
    x ^= x >> 16;
    x *= SR_M1;
    x ^= x >> 15;
    x ^= k.b;
    x *= SR_M2;
    x ^= x >> 15;
    x *= SR_M3;
    return x ^ (x >> 16);
}

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
    const sr_keys k = sr_keys_for(j->key, i0);
    for (int64_t i = i0; i < i1; i++) {
        uint32_t rnd = j->state_bf16 ? sr_hash(k, (uint32_t)i) : 0;
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
        float denom = sqrtf(vi) * j->inv_bc2 + j->eps;
        pi = pi + j->neg_step * mi / denom;
        if (j->param_bf16) {
            uint16_t pb = rt_f32_to_bf16(pi);
            ((uint16_t *)j->p)[i] = pb;
            if (j->copy) ((uint16_t *)j->copy)[i] = pb;
        } else {
            ((float *)j->p)[i] = pi;
            if (j->copy) ((float *)j->copy)[i] = pi;
        }
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
        if (j->copy) j->copy[i] = p;
        if (j->shadow) store_shadow(j->shadow, j->shadow_dtype, i, p);
    }
}

#ifdef RT_HAVE_X86
/* ================================================================================================
 * AVX2 path: 8 lanes
 * ============================================================================================== */

#define T_AVX2 __attribute__((target("avx2,fma")))

/* sr_hash on 8 counters; ka, kb: the key words broadcast */
T_AVX2 static inline __m256i sr_hash8(__m256i c, __m256i ka, __m256i kb) {
    __m256i x = _mm256_add_epi32(c, ka);
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)SR_M1));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
    x = _mm256_xor_si256(x, kb);
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)SR_M2));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)SR_M3));
    return _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
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
                 w2 = _mm256_set1_ps(j->w2), ibc2 = _mm256_set1_ps(j->inv_bc2),
                 eps = _mm256_set1_ps(j->eps), nstep = _mm256_set1_ps(j->neg_step),
                 sign = _mm256_set1_ps(-0.0f);
    const __m256i lo16 = _mm256_set1_epi32(0xffff),
                  iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const sr_keys k = sr_keys_for(j->key, b0 * BLK);
    const __m256i ka = _mm256_set1_epi32((int)k.a), kb = _mm256_set1_epi32((int)k.b);
    float *P = j->p;
    const float *G = j->g;
    const uint16_t *PB = j->p, *GB = j->g;
    /* the shadow is only written: streaming stores spare the read-for-ownership of its lines */
    const int nt_shadow = j->shadow_dtype == RT_BF16 && ((uintptr_t)j->shadow & 15) == 0;
    /* so is the copy (8 elements: 16 bytes bf16, 32 bytes f32) */
    const int nt_copy = j->copy && ((uintptr_t)j->copy & (pbf ? 15 : 31)) == 0;
    const int ssz = j->state_bf16 ? 2 : 4;
    for (int64_t b = b0; b < b1; b++) {
        for (int q = 0; q < 8; q++) {
            int64_t i = b * BLK + q * 8;
            if (!(q & 1)) { /* a line of f32 every 16 elements (past the end: a harmless hint) */
                _mm_prefetch((const char *)j->p + (i + PFD) * (pbf ? 2 : 4), _MM_HINT_T0);
                _mm_prefetch((const char *)j->g + (i + PFD) * (gbf ? 2 : 4), _MM_HINT_T0);
                _mm_prefetch((const char *)j->m + (i + PFD) * ssz, _MM_HINT_T0);
                _mm_prefetch((const char *)j->v + (i + PFD) * ssz, _MM_HINT_T0);
            }
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
            __m256 den = _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(v), ibc2), eps);
            p = _mm256_add_ps(p, _mm256_div_ps(_mm256_mul_ps(nstep, m), den));
            if (pbf) {
                __m128i pb = to_bf16_8(p, rne_add8(p));
                _mm_storeu_si128((__m128i *)((uint16_t *)j->p + i), pb);
                if (nt_copy)
                    _mm_stream_si128((__m128i *)((uint16_t *)j->copy + i), pb);
                else if (j->copy)
                    _mm_storeu_si128((__m128i *)((uint16_t *)j->copy + i), pb);
            } else {
                _mm256_storeu_ps(P + i, p);
                if (nt_copy)
                    _mm256_stream_ps((float *)j->copy + i, p);
                else if (j->copy)
                    _mm256_storeu_ps((float *)j->copy + i, p);
            }
            if (j->state_bf16) {
                __m256i bits =
                    sr_hash8(_mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)i), iota), ka, kb);
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
    if (nt_shadow || nt_copy) _mm_sfence();
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
    /* the copy is only written: streaming stores spare the read-for-ownership of its lines */
    const int nt_copy = j->copy && ((uintptr_t)j->copy & 31) == 0;
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
        if (nt_copy)
            _mm256_stream_ps(j->copy + i, p);
        else if (j->copy)
            _mm256_storeu_ps(j->copy + i, p);
        if (j->shadow_dtype == RT_BF16)
            _mm_storeu_si128((__m128i *)((uint16_t *)j->shadow + i), to_bf16_8(p, rne_add8(p)));
    }
    if (nt_copy) _mm_sfence();
}

/* ================================================================================================
 * AVX-512 path: 16 lanes
 * ============================================================================================== */

#define T_AVX512 __attribute__((target("avx512f,avx512bw")))

/* sr_hash on 16 counters */
T_AVX512 static inline __m512i sr_hash16(__m512i c, __m512i ka, __m512i kb) {
    __m512i x = _mm512_add_epi32(c, ka);
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)SR_M1));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_xor_si512(x, kb);
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)SR_M2));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)SR_M3));
    return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
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

/* the update's constants, broadcast, and its arithmetic on 16 lanes (the scalar path's operations
 * in its order): maximize, decoupled decay, the m lerp, v and the step; p, m and v updated in place
 */
typedef struct adamw_c16 {
    __m512 decay, w1, omw1, beta2, w2, ibc2, eps, nstep;
    __m512i sign;
} adamw_c16;

T_AVX512 static inline adamw_c16 adamw_c16_of(const rt_host_adamw_job *j) {
    adamw_c16 c;
    c.decay = _mm512_set1_ps(j->decay), c.w1 = _mm512_set1_ps(j->w1);
    c.omw1 = _mm512_set1_ps(j->one_minus_w1), c.beta2 = _mm512_set1_ps(j->beta2);
    c.w2 = _mm512_set1_ps(j->w2), c.ibc2 = _mm512_set1_ps(j->inv_bc2);
    c.eps = _mm512_set1_ps(j->eps), c.nstep = _mm512_set1_ps(j->neg_step);
    c.sign = _mm512_set1_epi32((int)0x80000000u);
    return c;
}

T_AVX512 static inline __attribute__((always_inline)) void adamw_math16(const rt_host_adamw_job *j,
                                                                        const adamw_c16 *c,
                                                                        __m512 *p, __m512 g,
                                                                        __m512 *m, __m512 *v) {
    if (j->maximize) g = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(g), c->sign));
    if (j->do_decay) *p = _mm512_mul_ps(*p, c->decay);
    __m512 gm = _mm512_sub_ps(g, *m);
    *m = j->lerp_small ? _mm512_add_ps(*m, _mm512_mul_ps(c->w1, gm))
                       : _mm512_sub_ps(g, _mm512_mul_ps(gm, c->omw1));
    *v = _mm512_mul_ps(*v, c->beta2);
    *v = _mm512_add_ps(*v, _mm512_mul_ps(_mm512_mul_ps(c->w2, g), g));
    __m512 den = _mm512_add_ps(_mm512_mul_ps(_mm512_sqrt_ps(*v), c->ibc2), c->eps);
    *p = _mm512_add_ps(*p, _mm512_div_ps(_mm512_mul_ps(c->nstep, *m), den));
}

/* pbf, gbf: bf16 parameter / gradient; constants in each instantiation below, so the loop has no
 * per-element dtype branches */
T_AVX512 static inline __attribute__((always_inline)) void
adamw_avx512_body(const rt_host_adamw_job *j, int64_t b0, int64_t b1, const int pbf,
                  const int gbf) {
    const adamw_c16 c = adamw_c16_of(j);
    const __m512i lo16 = _mm512_set1_epi32(0xffff),
                  iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const sr_keys k = sr_keys_for(j->key, b0 * BLK);
    const __m512i ka = _mm512_set1_epi32((int)k.a), kb = _mm512_set1_epi32((int)k.b);
    float *P = j->p;
    const float *G = j->g;
    const uint16_t *PB = j->p, *GB = j->g;
    /* the shadow is only written: streaming stores spare the read-for-ownership of its lines */
    const int nt_shadow = j->shadow_dtype == RT_BF16 && ((uintptr_t)j->shadow & 31) == 0;
    /* so is the copy (16 elements: 32 bytes bf16, 64 bytes f32) */
    const int nt_copy = j->copy && ((uintptr_t)j->copy & (pbf ? 31 : 63)) == 0;
    const int ssz = j->state_bf16 ? 2 : 4;
    for (int64_t b = b0; b < b1; b++) {
        for (int q = 0; q < 4; q++) {
            int64_t i = b * BLK + q * 16;
            /* prefetching past the end of an array is harmless (a hint; it does not fault) */
            _mm_prefetch((const char *)j->p + (i + PFD) * (pbf ? 2 : 4), _MM_HINT_T0);
            _mm_prefetch((const char *)j->g + (i + PFD) * (gbf ? 2 : 4), _MM_HINT_T0);
            _mm_prefetch((const char *)j->m + (i + PFD) * ssz, _MM_HINT_T0);
            _mm_prefetch((const char *)j->v + (i + PFD) * ssz, _MM_HINT_T0);
            __m512 p = pbf ? ld_bf16_16(PB + i) : _mm512_loadu_ps(P + i);
            __m512 g = gbf ? ld_bf16_16(GB + i) : _mm512_loadu_ps(G + i), m, v;
            if (j->state_bf16) {
                m = ld_bf16_16((const uint16_t *)j->m + i);
                v = ld_bf16_16((const uint16_t *)j->v + i);
            } else {
                m = _mm512_loadu_ps((const float *)j->m + i);
                v = _mm512_loadu_ps((const float *)j->v + i);
            }
            adamw_math16(j, &c, &p, g, &m, &v);
            if (pbf) {
                __m256i pb = to_bf16_16(p, rne_add16(p));
                _mm256_storeu_si256((__m256i *)((uint16_t *)j->p + i), pb);
                if (nt_copy)
                    _mm256_stream_si256((__m256i *)((uint16_t *)j->copy + i), pb);
                else if (j->copy)
                    _mm256_storeu_si256((__m256i *)((uint16_t *)j->copy + i), pb);
            } else {
                _mm512_storeu_ps(P + i, p);
                if (nt_copy)
                    _mm512_stream_ps((float *)j->copy + i, p);
                else if (j->copy)
                    _mm512_storeu_ps((float *)j->copy + i, p);
            }
            if (j->state_bf16) {
                __m512i bits =
                    sr_hash16(_mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)i), iota), ka, kb);
                _mm256_storeu_si256((__m256i *)((uint16_t *)j->m + i),
                                    to_bf16_16(m, _mm512_and_si512(bits, lo16)));
                _mm256_storeu_si256((__m256i *)((uint16_t *)j->v + i),
                                    to_bf16_16(v, _mm512_srli_epi32(bits, 16)));
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
    if (nt_shadow || nt_copy) _mm_sfence();
}

/* The all-bf16 update (bf16 parameter, gradient and states: issue 6's bf16 whole step) is bound by
 * the core, not by memory: on the 2-core Xeon, in cache, one thread updated 1.0 Gparam/s against
 * 2.1 for all-f32, the difference being the 16-bit conversions; this path does 1.2 (2^17-2^22
 * parameters) and, with the prefetch, 2.17-2.28 Gparam/s on 2 threads from memory against 1.86-1.96
 * for the general loop with the prefetch (BENCHMARKS.md). This path converts 32 elements at
 * a time with one unpack per 16 (bf16 -> f32 bits: the bf16 in the high half of a zeroed dword)
 * and packs with one packus per 32 (the exact inverse of the two unpacks, lane by lane), instead of
 * a widening move plus a shift per 16 loaded and a two-uop narrowing move per 16 stored; NaN is
 * found with one unordered compare. The lanes then hold the elements in the unpack order (per
 * 128-bit lane: 4 from the low half, then 4 from the high half), so the stochastic-rounding
 * counters follow that order: each element still draws sr_hash(key, its own index), and the bits
 * equal the other paths'. */
T_AVX512 static inline __m512i bf16_bits16(__m512 x, __m512i add) {
    __m512i u = _mm512_castps_si512(x);
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, add), 16);
    r = _mm512_mask_srli_epi32(r, nan, u, 16); /* NaN: its top half, quieted */
    return _mm512_mask_or_epi32(r, nan, r, _mm512_set1_epi32(0x40));
}

T_AVX512 static void adamw_avx512_allbf16(const rt_host_adamw_job *j, int64_t b0, int64_t b1) {
    const adamw_c16 c = adamw_c16_of(j);
    const __m512i zero = _mm512_setzero_si512(), lo16 = _mm512_set1_epi32(0xffff);
    /* element offsets (within 32) of the unpacked halves' lanes */
    const __m512i off[2] = {
        _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27),
        _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31)};
    const sr_keys k = sr_keys_for(j->key, b0 * BLK);
    const __m512i ka = _mm512_set1_epi32((int)k.a), kb = _mm512_set1_epi32((int)k.b);
    uint16_t *P = j->p, *M = j->m, *V = j->v, *CP = j->copy;
    const uint16_t *G = j->g;
    const int nt_copy = CP && ((uintptr_t)CP & 63) == 0;
    for (int64_t i = b0 * BLK; i < b1 * BLK; i += 32) {
        _mm_prefetch((const char *)(P + i + PFD), _MM_HINT_T0);
        _mm_prefetch((const char *)(G + i + PFD), _MM_HINT_T0);
        _mm_prefetch((const char *)(M + i + PFD), _MM_HINT_T0);
        _mm_prefetch((const char *)(V + i + PFD), _MM_HINT_T0);
        __m512i praw = _mm512_loadu_si512(P + i), graw = _mm512_loadu_si512(G + i),
                mraw = _mm512_loadu_si512(M + i), vraw = _mm512_loadu_si512(V + i);
        __m512i pout[2], mout[2], vout[2];
        for (int h = 0; h < 2; h++) {
            __m512i pu = h ? _mm512_unpackhi_epi16(zero, praw) : _mm512_unpacklo_epi16(zero, praw);
            __m512i gu = h ? _mm512_unpackhi_epi16(zero, graw) : _mm512_unpacklo_epi16(zero, graw);
            __m512i mu = h ? _mm512_unpackhi_epi16(zero, mraw) : _mm512_unpacklo_epi16(zero, mraw);
            __m512i vu = h ? _mm512_unpackhi_epi16(zero, vraw) : _mm512_unpacklo_epi16(zero, vraw);
            __m512 p = _mm512_castsi512_ps(pu), m = _mm512_castsi512_ps(mu),
                   v = _mm512_castsi512_ps(vu);
            adamw_math16(j, &c, &p, _mm512_castsi512_ps(gu), &m, &v);
            pout[h] = bf16_bits16(p, rne_add16(p));
            __m512i bits =
                sr_hash16(_mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)i), off[h]), ka, kb);
            mout[h] = bf16_bits16(m, _mm512_and_si512(bits, lo16));
            vout[h] = bf16_bits16(v, _mm512_srli_epi32(bits, 16));
        }
        __m512i pb = _mm512_packus_epi32(pout[0], pout[1]);
        _mm512_storeu_si512(P + i, pb);
        _mm512_storeu_si512(M + i, _mm512_packus_epi32(mout[0], mout[1]));
        _mm512_storeu_si512(V + i, _mm512_packus_epi32(vout[0], vout[1]));
        if (nt_copy)
            _mm512_stream_si512((__m512i *)(CP + i), pb);
        else if (CP)
            _mm512_storeu_si512(CP + i, pb);
    }
    if (nt_copy) _mm_sfence();
}

T_AVX512 static void adamw_avx512(const rt_host_adamw_job *j, int64_t b0, int64_t b1) {
    const int pbf = j->param_bf16, gbf = j->grad_dtype == RT_BF16;
    if (pbf && gbf && j->state_bf16 && j->shadow_dtype != RT_BF16)
        adamw_avx512_allbf16(j, b0, b1);
    else if (pbf && gbf)
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
    /* the copy is only written: streaming stores spare the read-for-ownership of its lines */
    const int nt_copy = j->copy && ((uintptr_t)j->copy & 63) == 0;
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
        if (nt_copy)
            _mm512_stream_ps(j->copy + i, p);
        else if (j->copy)
            _mm512_storeu_ps(j->copy + i, p);
        if (j->shadow_dtype == RT_BF16)
            _mm256_storeu_si256((__m256i *)((uint16_t *)j->shadow + i),
                                to_bf16_16(p, rne_add16(p)));
    }
    if (nt_copy) _mm_sfence();
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
