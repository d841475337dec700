/* offload_accum.c: the offload engine's host gradient pass (DESIGN section 5): a gradient piece
 * that arrived from the device in a staging slice is written into the host gradient, converted (dst
 * = src) for the first gradient after zero_grad and accumulated (dst += src) after that, in f32
 * (f64 for f64). This pass sits on the critical path of every backward (the step ends when the last
 * gradient has landed), and it is memory-bound: a bf16 gradient of n elements reads 2n bytes and
 * writes 4n. So the common cases (bf16/f16/f32 into f32) get their own loops: AVX2 where the CPU
 * has it, non-temporal stores for a plain conversion (no read-for-ownership of a destination that
 * is overwritten anyway), split over OpenMP threads in blocks. Every element is computed the same
 * way on every path (a bf16 -> f32 widening is exact, one f32 add), so results do not depend on the
 * path or the thread count.
 *
 * A promotion (rt_offload_accumulate_from) writes dst = widen(base) + widen(src): the native
 * gradient path lands a first micro-batch's gradient in its own (bf16) dtype, and the second
 * gradient turns it into an f32 host gradient in this one pass (reads 2 + 2 bytes, writes 4). */
#include "offload_internal.h"

#include <string.h>

#include "half.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ACC_X86 1
#endif

#define ACC_BLOCK ((int64_t)1 << 16) /* elements per thread work item */

/* ---- scalar reference (every dtype pair) -------------------------------------------------------
 */

static void acc_scalar(void *dst, int ddt, const void *src, int sdt, int64_t i0, int64_t i1,
                       int add) {
    if (ddt == RT_F32) {
        float *d = dst;
        for (int64_t i = i0; i < i1; i++) {
            float v = sdt == RT_F32    ? ((const float *)src)[i]
                      : sdt == RT_BF16 ? rt_bf16_to_f32(((const uint16_t *)src)[i])
                      : sdt == RT_F16  ? rt_f16_to_f32(((const uint16_t *)src)[i])
                                       : (float)((const double *)src)[i];
            d[i] = add ? d[i] + v : v;
        }
        return;
    }
    for (int64_t i = i0; i < i1; i++) {
        double v = sdt == RT_F32    ? ((const float *)src)[i]
                   : sdt == RT_BF16 ? rt_bf16_to_f32(((const uint16_t *)src)[i])
                   : sdt == RT_F16  ? rt_f16_to_f32(((const uint16_t *)src)[i])
                                    : ((const double *)src)[i];
        if (ddt == RT_F64) {
            double *d = dst;
            d[i] = add ? d[i] + v : v;
        } else {
            uint16_t *d = dst;
            float old = add ? (ddt == RT_BF16 ? rt_bf16_to_f32(d[i]) : rt_f16_to_f32(d[i])) : 0.0f;
            float r = add ? old + (float)v : (float)v;
            d[i] = ddt == RT_BF16 ? rt_f32_to_bf16(r) : rt_f32_to_f16(r);
        }
    }
}

/* ---- AVX2: bf16 / f32 sources into an f32 destination ------------------------------------------
 */

#ifdef ACC_X86
#define T_AVX2 __attribute__((target("avx2")))

/* dst[i0..i1) = or += widen(src), bf16 or f32 src; i0 a multiple of 8 elements from an aligned dst
 * start keeps the streaming stores aligned (checked by the caller). */
T_AVX2 static void acc_avx2(float *d, int sdt, const void *src, int64_t i0, int64_t i1, int add,
                            int nt) {
    int64_t i = i0, end8 = i0 + (i1 - i0) / 8 * 8;
    if (sdt == RT_BF16) {
        const uint16_t *s = src;
        for (; i < end8; i += 8) {
            __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
            __m256 v = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
            if (add)
                _mm256_storeu_ps(d + i, _mm256_add_ps(_mm256_loadu_ps(d + i), v));
            else if (nt)
                _mm256_stream_ps(d + i, v);
            else
                _mm256_storeu_ps(d + i, v);
        }
    } else { /* f32 */
        const float *s = src;
        for (; i < end8; i += 8) {
            __m256 v = _mm256_loadu_ps(s + i);
            if (add)
                _mm256_storeu_ps(d + i, _mm256_add_ps(_mm256_loadu_ps(d + i), v));
            else if (nt)
                _mm256_stream_ps(d + i, v);
            else
                _mm256_storeu_ps(d + i, v);
        }
    }
    if (nt) _mm_sfence(); /* this thread's streaming stores land before the block is reported */
    acc_scalar(d, RT_F32, src, sdt, i, i1, add);
}

static int have_avx2(void) {
    static int cached = -1;
    if (cached < 0) cached = __builtin_cpu_supports("avx2") ? 1 : 0;
    return cached;
}
#endif

/* One block [i0, i1). */
static void acc_block(void *dst, int ddt, const void *src, int sdt, int64_t i0, int64_t i1, int add,
                      int simd) {
#ifdef ACC_X86
    if (simd && ddt == RT_F32 && (sdt == RT_BF16 || sdt == RT_F32)) {
        float *d = dst;
        int nt = !add && ((uintptr_t)(d + i0) & 31) == 0;
        acc_avx2(d, sdt, src, i0, i1, add, nt);
        return;
    }
#else
    (void)simd;
#endif
    acc_scalar(dst, ddt, src, sdt, i0, i1, add);
}

void rt_offload_accumulate(void *dst, int ddt, const void *src, int sdt, int64_t n, int add,
                           int fast) {
    if (ddt == sdt && !add) { /* a plain copy (f32 into f32, ...) */
        memcpy(dst, src, (size_t)n * rt_dtype_size(ddt));
        return;
    }
    int simd = 0;
#ifdef ACC_X86
    simd = fast && have_avx2();
#endif
    if (!fast) { /* the original single loop (kept for before/after measurements) */
#pragma omp parallel for if (n > 65536)
        for (int64_t b = 0; b < n; b += ACC_BLOCK)
            acc_scalar(dst, ddt, src, sdt, b, b + ACC_BLOCK < n ? b + ACC_BLOCK : n, add);
        return;
    }
    int64_t nb = (n + ACC_BLOCK - 1) / ACC_BLOCK;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (int64_t b = 0; b < nb; b++) {
        int64_t i0 = b * ACC_BLOCK, i1 = i0 + ACC_BLOCK < n ? i0 + ACC_BLOCK : n;
        acc_block(dst, ddt, src, sdt, i0, i1, add, simd);
    }
}

/* ---- promotion: dst (f32/f64) = widen(base) + widen(src) ---------------------------------------
 */

static inline double widen_at(const void *p, int dt, int64_t i) {
    return dt == RT_F32    ? ((const float *)p)[i]
           : dt == RT_BF16 ? rt_bf16_to_f32(((const uint16_t *)p)[i])
           : dt == RT_F16  ? rt_f16_to_f32(((const uint16_t *)p)[i])
                           : ((const double *)p)[i];
}

static void from_scalar(void *dst, int ddt, const void *base, int bdt, const void *src, int sdt,
                        int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
        if (ddt == RT_F64)
            ((double *)dst)[i] = widen_at(base, bdt, i) + widen_at(src, sdt, i);
        else /* one f32 add of two exactly widened values, as acc_avx2 does */
            ((float *)dst)[i] = (float)widen_at(base, bdt, i) + (float)widen_at(src, sdt, i);
    }
}

#ifdef ACC_X86
T_AVX2 static inline __m256 widen8(const void *p, int dt, int64_t i) {
    if (dt == RT_BF16) {
        __m256i w =
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
    }
    return _mm256_loadu_ps((const float *)p + i);
}

/* bf16/f32 base and src into an f32 dst; streaming stores when dst + i0 is 32-byte aligned */
T_AVX2 static void from_avx2(float *d, const void *base, int bdt, const void *src, int sdt,
                             int64_t i0, int64_t i1) {
    int64_t i = i0, end8 = i0 + (i1 - i0) / 8 * 8;
    int nt = ((uintptr_t)(d + i0) & 31) == 0;
    for (; i < end8; i += 8) {
        __m256 v = _mm256_add_ps(widen8(base, bdt, i), widen8(src, sdt, i));
        if (nt)
            _mm256_stream_ps(d + i, v);
        else
            _mm256_storeu_ps(d + i, v);
    }
    if (nt) _mm_sfence();
    from_scalar(d, RT_F32, base, bdt, src, sdt, i, i1);
}
#endif

void rt_offload_accumulate_from(void *dst, int ddt, const void *base, int bdt, const void *src,
                                int sdt, int64_t n) {
    int simd = 0;
#ifdef ACC_X86
    simd = ddt == RT_F32 && (bdt == RT_BF16 || bdt == RT_F32) &&
           (sdt == RT_BF16 || sdt == RT_F32) && have_avx2();
#endif
    int64_t nb = (n + ACC_BLOCK - 1) / ACC_BLOCK;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (int64_t b = 0; b < nb; b++) {
        int64_t i0 = b * ACC_BLOCK, i1 = i0 + ACC_BLOCK < n ? i0 + ACC_BLOCK : n;
#ifdef ACC_X86
        if (simd) {
            from_avx2(dst, base, bdt, src, sdt, i0, i1);
            continue;
        }
#endif
        from_scalar(dst, ddt, base, bdt, src, sdt, i0, i1);
    }
    (void)simd;
}
