/* index.c: CPU kernels of the gathers along one dim (runtime/ops_index.c): index_select copies
 * rows src[.., idx[j], ..] into out[.., j, ..] (optionally converting dtype and dividing, for data
 * loading); index_add adds rows back (the backward of the gather). Indices are i64 and checked
 * here, where they are read. */
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

/* Below this many output bytes a gather runs on one thread: data-loading batches are small and
 * run beside other work (or on the prefetch thread), where an OpenMP fork/join costs more than the
 * copy itself, and far more on a loaded machine. */
#define RT_GATHER_PARALLEL_BYTES ((int64_t)1 << 22)

static int64_t load_int(const char *p, int dt) {
    switch (dt) {
    case RT_I64:
        return *(const int64_t *)p;
    case RT_I32:
        return *(const int32_t *)p;
    default:
        return *(const uint8_t *)p; /* u8, bool */
    }
}

/* One slice: dst = src / divisor converted to dst's dtype (same shape). */
static void convert_slice(const rt_kview *dst, const rt_kview *src, double divisor) {
    const rt_kview *v[2] = {dst, src};
    rt_iter it;
    rt_iter_init(&it, 2, v);
    int64_t rows = rt_iter_rows(&it), n = it.shape[it.ndim - 1];
    int64_t sd = it.strides[0][it.ndim - 1], ss = it.strides[1][it.ndim - 1];
    int dt = dst->dtype, st = src->dtype;
    size_t es = rt_dtype_size(dt);
    int plain = dt == st && divisor == 1.0;
    int ints = !rt_dtype_is_float(dt) && !rt_dtype_is_float(st) && divisor == 1.0;
    float fdiv = (float)divisor;
    for (int64_t r = 0; r < rows; r++) {
        char *p[2];
        rt_iter_row(&it, r, p);
        if (plain && sd == (int64_t)es && ss == (int64_t)es) {
            memcpy(p[0], p[1], (size_t)n * es);
        } else if (plain) {
            for (int64_t i = 0; i < n; i++)
                memcpy(p[0] + i * sd, p[1] + i * ss, es);
        } else if (dt == RT_F32 && st == RT_U8) { /* images: x.float().div(d) */
            for (int64_t i = 0; i < n; i++)
                *(float *)(p[0] + i * sd) = (float)*(const uint8_t *)(p[1] + i * ss) / fdiv;
        } else if (ints) { /* integer to integer keeps all 64 bits */
            for (int64_t i = 0; i < n; i++) {
                int64_t x = load_int(p[1] + i * ss, st);
                char *d = p[0] + i * sd;
                if (dt == RT_I64)
                    *(int64_t *)d = x;
                else if (dt == RT_I32)
                    *(int32_t *)d = (int32_t)x;
                else if (dt == RT_U8)
                    *(uint8_t *)d = (uint8_t)x;
                else
                    *(uint8_t *)d = x != 0;
            }
        } else if (dt == RT_F64) {
            for (int64_t i = 0; i < n; i++)
                *(double *)(p[0] + i * sd) = rt_load(p[1] + i * ss, st) / divisor;
        } else if (rt_dtype_is_float(dt)) { /* f32 compute, one rounding on store */
            for (int64_t i = 0; i < n; i++)
                rt_store(p[0] + i * sd, dt, (float)rt_load(p[1] + i * ss, st) / fdiv);
        } else {
            for (int64_t i = 0; i < n; i++)
                rt_store(p[0] + i * sd, dt, rt_load(p[1] + i * ss, st));
        }
    }
}

int rt_cpu_index_select(const rt_kview *out, const rt_kview *src, int dim, const rt_kview *idx) {
    return rt_cpu_index_select_convert(out, src, dim, idx, 1.0);
}

typedef struct select_job {
    const rt_kview *out, *src;
    int dim;
    const int64_t *ix;
    int64_t st;
    double divisor;
} select_job;

static void select_rows(void *ctx, int64_t j0, int64_t j1) {
    const select_job *g = ctx;
    for (int64_t j = j0; j < j1; j++) { /* each output slice written by exactly one thread */
        rt_kview d = drop_dim(g->out, g->dim, j), s = drop_dim(g->src, g->dim, g->ix[j * g->st]);
        convert_slice(&d, &s, g->divisor);
    }
}

int rt_cpu_index_select_convert(const rt_kview *out, const rt_kview *src, int dim,
                                const rt_kview *idx, double divisor) {
    RT_TRY(check_indices("index_select", idx, src->shape[dim], dim));
    if (out->numel == 0) return RT_OK;
    select_job g = {out,    src, dim, (const int64_t *)idx->data, idx->ndim ? idx->strides[0] : 0,
                    divisor};
    int64_t bytes = out->numel * (int64_t)rt_dtype_size(out->dtype);
    rt_parallel_for(idx->numel, bytes > RT_GATHER_PARALLEL_BYTES ? bytes : 0, select_rows, &g);
    return RT_OK;
}

typedef struct add_job {
    rt_iter it;
    int dt;
    int64_t m, sd, ss;
} add_job;

static void add_rows(void *ctx, int64_t r0, int64_t r1) {
    const add_job *a = ctx;
    const int dt = a->dt;
    const int64_t m = a->m, sd = a->sd, ss = a->ss;
    for (int64_t r = r0; r < r1; r++) {
        char *p[2];
        rt_iter_row(&a->it, r, p);
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
                rt_store(
                    p[0] + i * sd, dt,
                    rt_round_compute(dt, rt_load(p[0] + i * sd, dt) + rt_load(p[1] + i * ss, dt)));
        }
    }
}

int rt_cpu_index_add(const rt_kview *out, const rt_kview *src, int dim, const rt_kview *idx) {
    RT_TRY(check_indices("index_add", idx, out->shape[dim], dim));
    const int64_t *ix = (const int64_t *)idx->data;
    int64_t st = idx->ndim ? idx->strides[0] : 0, n = idx->numel;
    /* Indices may repeat, so the rows go in order (deterministic sums); the work inside a row is
     * split over threads by element, each element owned by one thread. */
    for (int64_t j = 0; j < n; j++) {
        rt_kview d = drop_dim(out, dim, ix[j * st]), s = drop_dim(src, dim, j);
        if (!d.numel) continue;
        add_job a;
        const rt_kview *v[2] = {&d, &s};
        rt_iter_init(&a.it, 2, v);
        int last = a.it.ndim - 1;
        a.dt = out->dtype;
        a.m = a.it.shape[last];
        a.sd = a.it.strides[0][last];
        a.ss = a.it.strides[1][last];
        int64_t rows = rt_iter_rows(&a.it);
        rt_parallel_for(rows, rows * a.m, add_rows, &a);
    }
    return RT_OK;
}
