/* dim_rows.h: walking a view "along one dim": the rows are every index combination of the other
 * dims in row-major order, each row being the shape[dim] elements at stride strides[dim]. Views of
 * the same shape (or the same shape but for a size-1 at dim: keepdim results) share the row
 * numbering, so one row index addresses matching rows of input and output. Used by the kernels
 * of softmax, cross_entropy, and max/min with indices. */
#ifndef RT_CPU_DIM_ROWS_H
#define RT_CPU_DIM_ROWS_H

#include "cpu_common.h"

/* Element offset of the first element of row r of v (dim excluded from the numbering). */
static inline int64_t rt_dim_row_offset(const rt_kview *v, int dim, int64_t r) {
    int64_t off = 0;
    for (int d = v->ndim - 1; d >= 0; d--) {
        if (d == dim) continue;
        int64_t i = r % v->shape[d];
        r /= v->shape[d];
        off += i * v->strides[d];
    }
    return off;
}

/* Element offset of logical (row-major) element i of v. */
static inline int64_t rt_logical_offset(const rt_kview *v, int64_t i) {
    int64_t off = 0;
    for (int d = v->ndim - 1; d >= 0; d--) {
        off += (i % v->shape[d]) * v->strides[d];
        i /= v->shape[d];
    }
    return off;
}

#endif /* RT_CPU_DIM_ROWS_H */
