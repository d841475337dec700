/* index.c: CPU kernels of the gathers along one dim (runtime/ops_index.c): index_select copies
 * rows src[.., idx[j], ..] into out[.., j, ..]; index_add adds rows back (the backward of the
 * gather). Indices are i64 and checked here, where they are read. */
#include "cpu_kernels.h"

#include <string.h>

/* The view v with dimension dim removed, starting at position pos along it. */
static rt_kview drop_dim(const rt_kview *v, int dim, int64_t pos) {
    rt_kview s = *v;
    s.data = v->data + pos * v->strides[dim] * (int64_t)rt_dtype_size(v->dtype);
    s.ndim = v->ndim - 1;
    s.numel = 1;
    for (int d = dim; d < v->ndim - 1; d++) {
        s.shape[d] = v->shape[d + 1];
        s.strides[d] = v->strides[d + 1];
    }
    for (int d = 0; d < s.ndim; d++)
        s.numel *= s.shape[d];
    return s;
}

static int check_indices(const char *op, const rt_kview *idx, int64_t size, int dim) {
    const int64_t *ix = (const int64_t *)idx->data;
    int64_t st = idx->ndim ? idx->strides[0] : 0;
    for (int64_t j = 0; j < idx->numel; j++) {
        int64_t i = ix[j * st];
        if (i < 0 || i >= size)
            return RT_ERR(RT_ERR_INDEX,
                          "%s: index %lld (at position %lld) is out of range for "
                          "dimension %d of size %lld",
                          op, (long long)i, (long long)j, dim, (long long)size);
    }
    return RT_OK;
}

/* Copy one slice (same dtype, same shape) with the iterator's merged rows. */
static void copy_slice(const rt_kview *dst, const rt_kview *src) {
    const rt_kview *v[2] = {dst, src};
    rt_iter it;
    rt_iter_init(&it, 2, v);
    int64_t rows = rt_iter_rows(&it), n = it.shape[it.ndim - 1];
    int64_t sd = it.strides[0][it.ndim - 1], ss = it.strides[1][it.ndim - 1];
    size_t es = rt_dtype_size(dst->dtype);
    for (int64_t r = 0; r < rows; r++) {
        char *p[2];
        rt_iter_row(&it, r, p);
        if (sd == (int64_t)es && ss == (int64_t)es)
            memcpy(p[0], p[1], (size_t)n * es);
        else
            for (int64_t i = 0; i < n; i++)
                memcpy(p[0] + i * sd, p[1] + i * ss, es);
    }
}

int rt_cpu_index_select(const rt_kview *out, const rt_kview *src, int dim, const rt_kview *idx) {
    RT_TRY(check_indices("index_select", idx, src->shape[dim], dim));
    const int64_t *ix = (const int64_t *)idx->data;
    int64_t st = idx->ndim ? idx->strides[0] : 0, n = idx->numel;
    int64_t slice = out->numel / (n ? n : 1);
    /* one slice per iteration: each output row is written by exactly one thread */
#pragma omp parallel for if (out->numel > RT_PARALLEL_GRAIN && n > 1) schedule(static)
    for (int64_t j = 0; j < n; j++) {
        rt_kview d = drop_dim(out, dim, j), s = drop_dim(src, dim, ix[j * st]);
        if (slice) copy_slice(&d, &s);
    }
    return RT_OK;
}

int rt_cpu_index_add(const rt_kview *out, const rt_kview *src, int dim, const rt_kview *idx) {
    RT_TRY(check_indices("index_add", idx, out->shape[dim], dim));
    const int64_t *ix = (const int64_t *)idx->data;
    int64_t st = idx->ndim ? idx->strides[0] : 0, n = idx->numel;
    int dt = out->dtype;
    /* Indices may repeat, so the rows go in order (deterministic sums); the work inside a row is
     * split over threads by element, each element owned by one thread. */
    for (int64_t j = 0; j < n; j++) {
        rt_kview d = drop_dim(out, dim, ix[j * st]), s = drop_dim(src, dim, j);
        if (!d.numel) continue;
        const rt_kview *v[2] = {&d, &s};
        rt_iter it;
        rt_iter_init(&it, 2, v);
        int64_t rows = rt_iter_rows(&it), m = it.shape[it.ndim - 1];
        int64_t sd = it.strides[0][it.ndim - 1], ss = it.strides[1][it.ndim - 1];
#pragma omp parallel for if (rows * m > RT_PARALLEL_GRAIN) schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            char *p[2];
            rt_iter_row(&it, r, p);
            if (dt == RT_F32) {
                for (int64_t i = 0; i < m; i++)
                    *(float *)(p[0] + i * sd) += *(const float *)(p[1] + i * ss);
            } else if (dt == RT_F64) {
                for (int64_t i = 0; i < m; i++)
                    *(double *)(p[0] + i * sd) += *(const double *)(p[1] + i * ss);
            } else if (dt == RT_I64) {
                for (int64_t i = 0; i < m; i++)
                    *(int64_t *)(p[0] + i * sd) += *(const int64_t *)(p[1] + i * ss);
            } else {
                for (int64_t i = 0; i < m; i++)
                    rt_store(p[0] + i * sd, dt,
                             rt_round_compute(dt, rt_load(p[0] + i * sd, dt) +
                                                      rt_load(p[1] + i * ss, dt)));
            }
        }
    }
    return RT_OK;
}
