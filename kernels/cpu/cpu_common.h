/* cpu_common.h: what every CPU kernel shares: element load/store in any dtype (compute happens in
 * double for f64 and integers, float for f32/bf16/f16, rounded on store), and a strided iterator
 * that walks up to three same-shaped views row by row so the inner loop is a plain strided loop. */
#ifndef RT_CPU_COMMON_H
#define RT_CPU_COMMON_H

#include "../../runtime/half.h"
#include "../../runtime/internal.h"

#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdint.h>

static inline double rt_load(const char *p, int dtype) {
    switch (dtype) {
    case RT_F32:
        return *(const float *)p;
    case RT_BF16:
        return rt_bf16_to_f32(*(const uint16_t *)p);
    case RT_F16:
        return rt_f16_to_f32(*(const uint16_t *)p);
    case RT_F64:
        return *(const double *)p;
    case RT_I64:
        return (double)*(const int64_t *)p;
    case RT_I32:
        return *(const int32_t *)p;
    case RT_U8:
        return *(const uint8_t *)p;
    case RT_BOOL:
        return *(const uint8_t *)p ? 1.0 : 0.0;
    }
    return 0;
}

/* Float-to-integer stores truncate toward zero like PyTorch's casts; the reduced float types round
 * to nearest even from f32 (bf16/f16 results are computed in f32 first). */
static inline void rt_store(char *p, int dtype, double v) {
    switch (dtype) {
    case RT_F32:
        *(float *)p = (float)v;
        break;
    case RT_BF16:
        *(uint16_t *)p = rt_f32_to_bf16((float)v);
        break;
    case RT_F16:
        *(uint16_t *)p = rt_f32_to_f16((float)v);
        break;
    case RT_F64:
        *(double *)p = v;
        break;
    case RT_I64:
        *(int64_t *)p = (int64_t)v;
        break;
    case RT_I32:
        *(int32_t *)p = (int32_t)v;
        break;
    case RT_U8:
        *(uint8_t *)p = (uint8_t)(int64_t)v;
        break;
    case RT_BOOL:
        *(uint8_t *)p = v != 0;
        break;
    }
}

/* Compute in f32 for reduced float types (then round once on store), double otherwise. */
static inline double rt_round_compute(int dtype, double v) {
    return (dtype == RT_F32 || dtype == RT_BF16 || dtype == RT_F16) ? (double)(float)v : v;
}

/* ---- strided row iteration ----------------------------------------------------------------- */

/* Merge adjacent dims that are contiguous in every view and drop size-1 dims, so the inner loop is
 * as long as possible. Views must share a shape. nv in 1..3. */
typedef struct rt_iter {
    int ndim;
    int64_t shape[RT_MAX_DIMS];
    int64_t strides[3][RT_MAX_DIMS]; /* bytes */
    char *data[3];
    int nv;
} rt_iter;

static inline void rt_iter_init(rt_iter *it, int nv, const rt_kview *const *v) {
    it->nv = nv;
    it->ndim = 0;
    for (int k = 0; k < nv; k++)
        it->data[k] = v[k]->data;
    const rt_kview *s = v[0];
    for (int d = 0; d < s->ndim; d++) {
        if (s->shape[d] == 1) continue;
        int n = it->ndim;
        bool merge = n > 0;
        for (int k = 0; k < nv && merge; k++) {
            int64_t es = (int64_t)rt_dtype_size(v[k]->dtype);
            merge = it->strides[k][n - 1] == v[k]->strides[d] * es * s->shape[d];
        }
        if (merge) {
            it->shape[n - 1] *= s->shape[d];
            for (int k = 0; k < nv; k++)
                it->strides[k][n - 1] = v[k]->strides[d] * (int64_t)rt_dtype_size(v[k]->dtype);
        } else {
            it->shape[n] = s->shape[d];
            for (int k = 0; k < nv; k++)
                it->strides[k][n] = v[k]->strides[d] * (int64_t)rt_dtype_size(v[k]->dtype);
            it->ndim++;
        }
    }
    if (it->ndim == 0) { /* scalar or all-ones shape: one row of one element */
        it->ndim = 1;
        it->shape[0] = 1;
        for (int k = 0; k < nv; k++)
            it->strides[k][0] = 0;
    }
}

/* Number of rows (product of all but the innermost dim). */
static inline int64_t rt_iter_rows(const rt_iter *it) {
    int64_t r = 1;
    for (int d = 0; d < it->ndim - 1; d++)
        r *= it->shape[d];
    return r;
}

/* Pointers to the start of row `row` in each view. */
static inline void rt_iter_row(const rt_iter *it, int64_t row, char **p) {
    for (int k = 0; k < it->nv; k++)
        p[k] = it->data[k];
    for (int d = it->ndim - 2; d >= 0; d--) {
        int64_t i = row % it->shape[d];
        row /= it->shape[d];
        for (int k = 0; k < it->nv; k++)
            p[k] += i * it->strides[k][d];
    }
}

/* Parallelise over rows when there is enough work. */
#define RT_PARALLEL_GRAIN 32768

/* fn(ctx, begin, end) over [0, n): split into one contiguous range per thread when work exceeds
 * RT_PARALLEL_GRAIN, else called directly on this thread. Prefer this to `omp parallel for if(...)`
 * for ops that are often small: entering an OpenMP region costs a futex round trip even when its
 * if clause is false (about a third of a small op's time). Ranges are split by a fixed rule, so
 * each element is computed by one thread and results do not depend on the thread count. */
typedef void (*rt_range_fn)(void *ctx, int64_t begin, int64_t end);
static inline void rt_parallel_for(int64_t n, int64_t work, rt_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (work <= RT_PARALLEL_GRAIN || n == 1 || omp_get_max_threads() == 1) {
        fn(ctx, 0, n);
        return;
    }
#pragma omp parallel
    {
        int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t b = n * t / nt, e = n * (t + 1) / nt;
        if (b < e) fn(ctx, b, e);
    }
}

#endif /* RT_CPU_COMMON_H */
