/* binary.c: CPU kernels for elementwise binary ops, tensor-tensor and tensor-scalar. Inputs arrive
 * broadcast to the output's shape (stride 0 on broadcast dims). f32 has a direct loop; every other
 * dtype goes through rt_load/rt_store (f32 compute for bf16/f16, double for f64 and integers). */
#include "cpu_kernels.h"

static inline double apply(int op, double x, double y) {
    switch (op) {
    case RT_ADD: return x + y;
    case RT_SUB: return x - y;
    case RT_MUL: return x * y;
    case RT_DIV: return x / y;
    case RT_POW: return pow(x, y);
    case RT_MAXIMUM: return (x != x || x > y) ? x : y; /* NaN propagates */
    case RT_MINIMUM: return (x != x || x < y) ? x : y;
    case RT_EQ: return x == y;
    case RT_NE: return x != y;
    case RT_LT: return x < y;
    case RT_LE: return x <= y;
    case RT_GT: return x > y;
    case RT_GE: return x >= y;
    }
    return 0;
}

static inline float apply_f32(int op, float x, float y) {
    switch (op) {
    case RT_ADD: return x + y;
    case RT_SUB: return x - y;
    case RT_MUL: return x * y;
    case RT_DIV: return x / y;
    case RT_POW: return powf(x, y);
    case RT_MAXIMUM: return (x != x || x > y) ? x : y;
    case RT_MINIMUM: return (x != x || x < y) ? x : y;
    }
    return 0;
}

/* Integer division and pow follow the float path; integer add/sub/mul stay exact in int64. */
static inline int64_t apply_i64(int op, int64_t x, int64_t y) {
    switch (op) {
    case RT_ADD: return x + y;
    case RT_SUB: return x - y;
    case RT_MUL: return x * y;
    case RT_MAXIMUM: return x > y ? x : y;
    case RT_MINIMUM: return x < y ? x : y;
    }
    return 0;
}

int rt_cpu_binary(int op, const rt_kview *out, const rt_kview *a, const rt_kview *b) {
    const rt_kview *v[3] = {out, a, b};
    rt_iter it;
    rt_iter_init(&it, 3, v);
    int64_t rows = rt_iter_rows(&it), n = it.shape[it.ndim - 1];
    int64_t so = it.strides[0][it.ndim - 1], sa = it.strides[1][it.ndim - 1],
            sb = it.strides[2][it.ndim - 1];
    int to = out->dtype, ta = a->dtype, tb = b->dtype;
    bool all_f32 = to == RT_F32 && ta == RT_F32 && tb == RT_F32;
    bool all_i64 = to == RT_I64 && ta == RT_I64 && tb == RT_I64 && op != RT_DIV && op != RT_POW;
    bool reduced = to == RT_BF16 || to == RT_F16 || to == RT_F32;
#pragma omp parallel for if (rows * n > RT_PARALLEL_GRAIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        char *p[3];
        rt_iter_row(&it, r, p);
        if (all_f32 && so == 4 && sa == 4 && sb == 4) {
            float *o = (float *)p[0];
            const float *x = (const float *)p[1], *y = (const float *)p[2];
            switch (op) { /* separate loops so the compiler vectorises each */
            case RT_ADD:
                for (int64_t i = 0; i < n; i++) o[i] = x[i] + y[i];
                break;
            case RT_SUB:
                for (int64_t i = 0; i < n; i++) o[i] = x[i] - y[i];
                break;
            case RT_MUL:
                for (int64_t i = 0; i < n; i++) o[i] = x[i] * y[i];
                break;
            case RT_DIV:
                for (int64_t i = 0; i < n; i++) o[i] = x[i] / y[i];
                break;
            default:
                for (int64_t i = 0; i < n; i++) o[i] = apply_f32(op, x[i], y[i]);
            }
        } else if (all_f32) {
            for (int64_t i = 0; i < n; i++)
                *(float *)(p[0] + i * so) =
                    apply_f32(op, *(float *)(p[1] + i * sa), *(float *)(p[2] + i * sb));
        } else if (all_i64) {
            for (int64_t i = 0; i < n; i++)
                *(int64_t *)(p[0] + i * so) =
                    apply_i64(op, *(int64_t *)(p[1] + i * sa), *(int64_t *)(p[2] + i * sb));
        } else {
            for (int64_t i = 0; i < n; i++) {
                double x = rt_load(p[1] + i * sa, ta), y = rt_load(p[2] + i * sb, tb);
                double z = reduced && op < RT_EQ ? (double)apply_f32(op, (float)x, (float)y)
                                                 : apply(op, x, y);
                rt_store(p[0] + i * so, to, z);
            }
        }
    }
    return RT_OK;
}

int rt_cpu_binary_scalar(int op, const rt_kview *out, const rt_kview *a, double s,
                         int scalar_first) {
    const rt_kview *v[2] = {out, a};
    rt_iter it;
    rt_iter_init(&it, 2, v);
    int64_t rows = rt_iter_rows(&it), n = it.shape[it.ndim - 1];
    int64_t so = it.strides[0][it.ndim - 1], sa = it.strides[1][it.ndim - 1];
    int to = out->dtype, ta = a->dtype;
    bool f32 = to == RT_F32 && ta == RT_F32 && op < RT_EQ;
    bool reduced = (to == RT_BF16 || to == RT_F16 || to == RT_F32) && op < RT_EQ;
    float sf = (float)s;
#pragma omp parallel for if (rows * n > RT_PARALLEL_GRAIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        char *p[2];
        rt_iter_row(&it, r, p);
        if (f32 && so == 4 && sa == 4 && !scalar_first && op == RT_MUL) {
            float *o = (float *)p[0];
            const float *x = (const float *)p[1];
            for (int64_t i = 0; i < n; i++) o[i] = x[i] * sf;
        } else if (f32 && so == 4 && sa == 4 && !scalar_first && op == RT_ADD) {
            float *o = (float *)p[0];
            const float *x = (const float *)p[1];
            for (int64_t i = 0; i < n; i++) o[i] = x[i] + sf;
        } else if (f32) {
            for (int64_t i = 0; i < n; i++) {
                float x = *(float *)(p[1] + i * sa);
                *(float *)(p[0] + i * so) = scalar_first ? apply_f32(op, sf, x) : apply_f32(op, x, sf);
            }
        } else {
            for (int64_t i = 0; i < n; i++) {
                double x = rt_load(p[1] + i * sa, ta);
                double z = reduced ? (double)(scalar_first ? apply_f32(op, sf, (float)x)
                                                           : apply_f32(op, (float)x, sf))
                                   : (scalar_first ? apply(op, s, x) : apply(op, x, s));
                rt_store(p[0] + i * so, to, z);
            }
        }
    }
    return RT_OK;
}

int rt_cpu_masked_copy(const rt_kview *out, const rt_kview *cond, const rt_kview *a) {
    const rt_kview *v[3] = {out, cond, a};
    rt_iter it;
    rt_iter_init(&it, 3, v);
    int64_t rows = rt_iter_rows(&it), n = it.shape[it.ndim - 1];
    int64_t so = it.strides[0][it.ndim - 1], sc = it.strides[1][it.ndim - 1],
            sa = it.strides[2][it.ndim - 1];
    int to = out->dtype, tc = cond->dtype, ta = a->dtype;
#pragma omp parallel for if (rows * n > RT_PARALLEL_GRAIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        char *p[3];
        rt_iter_row(&it, r, p);
        for (int64_t i = 0; i < n; i++)
            if (rt_load(p[1] + i * sc, tc) != 0)
                rt_store(p[0] + i * so, to, rt_load(p[2] + i * sa, ta));
    }
    return RT_OK;
}
