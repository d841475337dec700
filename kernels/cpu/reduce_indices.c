/* reduce_indices.c: CPU max/min along one dim with the i64 index of the winner (max(dim), argmax).
 *
 * The first occurrence wins ties; a NaN wins over every number (the first NaN), as in PyTorch. One
 * output element per thread iteration: results do not depend on the thread count. */
#include "cpu_kernels.h"
#include "dim_rows.h"

#include <string.h>

int rt_cpu_reduce_with_indices(int op, const rt_kview *values, const rt_kview *indices,
                               const rt_kview *a, int dim) {
    if (op != RT_MAX && op != RT_MIN)
        return RT_ERR(RT_ERR_INVALID, "reduce_with_indices: op must be max or min, got %d", op);
    int64_t n = a->shape[dim];
    if (n == 0 || a->numel == 0) return RT_OK;
    int64_t rows = a->numel / n, st = a->strides[dim];
    size_t ea = rt_dtype_size(a->dtype), ev = values ? rt_dtype_size(values->dtype) : 0;
    bool is_max = op == RT_MAX, is_int = a->dtype == RT_I64;
#pragma omp parallel for if (a->numel > RT_PARALLEL_GRAIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const char *p = a->data + rt_dim_row_offset(a, dim, r) * (int64_t)ea;
        int64_t best = 0;
        if (is_int) { /* exact for all 64 bits */
            int64_t bv = *(const int64_t *)p;
            for (int64_t i = 1; i < n; i++) {
                int64_t v = *(const int64_t *)(p + i * st * 8);
                if (is_max ? v > bv : v < bv) {
                    bv = v;
                    best = i;
                }
            }
        } else if (a->dtype == RT_F32 && st == 1) {
            const float *f = (const float *)p;
            float bv = f[0];
            for (int64_t i = 1; i < n && bv == bv; i++) {
                float v = f[i];
                if (v != v || (is_max ? v > bv : v < bv)) {
                    bv = v;
                    best = i;
                }
            }
        } else {
            double bv = rt_load(p, a->dtype);
            for (int64_t i = 1; i < n && bv == bv; i++) {
                double v = rt_load(p + i * st * (int64_t)ea, a->dtype);
                if (v != v || (is_max ? v > bv : v < bv)) {
                    bv = v;
                    best = i;
                }
            }
        }
        if (values) {
            char *vp = values->data + rt_dim_row_offset(values, dim, r) * (int64_t)ev;
            memcpy(vp, p + best * st * (int64_t)ea, ea);
        }
        *(int64_t *)(indices->data + rt_dim_row_offset(indices, dim, r) * 8) = best;
    }
    return RT_OK;
}
