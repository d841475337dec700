/* binary.c: CPU kernels for elementwise binary ops, tensor-tensor and tensor-scalar. Inputs arrive
 * broadcast to the output's shape (stride 0 on broadcast dims). f32 has a direct loop; every other
 * dtype goes through rt_load/rt_store (f32 compute for bf16/f16, double for f64 and integers). */
#include "cpu_kernels.h"

static inline double apply(int op, double x, double y) {
    switch (op) {
    case RT_ADD:
        return x + y;
    case RT_SUB:
        return x - y;
    case RT_MUL:
        return x * y;
    case RT_DIV:
        return x / y;
    case RT_POW:
        return pow(x, y);
    case RT_MAXIMUM:
        return (x != x || x > y) ? x : y; /* NaN propagates */
    case RT_MINIMUM:
        return (x != x || x < y) ? x : y;
    case RT_EQ:
        return x == y;
    case RT_NE:
        return x != y;
    case RT_LT:
        return x < y;
    case RT_LE:
        return x <= y;
    case RT_GT:
        return x > y;
    case RT_GE:
        return x >= y;
    }
    return 0;
}

static inline float apply_f32(int op, float x, float y) {
    switch (op) {
    case RT_ADD:
        return x + y;
    case RT_SUB:
        return x - y;
    case RT_MUL:
        return x * y;
    case RT_DIV:
        return x / y;
    case RT_POW:
        return powf(x, y);
    case RT_MAXIMUM:
        return (x != x || x > y) ? x : y;
    case RT_MINIMUM:
        return (x != x || x < y) ? x : y;
    }
    return 0;
}

/* PyTorch's powi: an integer to an integer power by squaring, wrapping like its multiplication (a
 * trip through double pow lost bits beyond 2^53 and saturated instead of wrapping); a negative
 * power is 0 but for the bases 1 and -1. */
static inline int64_t int_pow(int64_t x, int64_t y) {
    if (y < 0) return x == 1 ? 1 : x == -1 ? ((y & 1) ? -1 : 1) : 0;
    uint64_t r = 1, b = (uint64_t)x;
    for (uint64_t e = (uint64_t)y; e; e >>= 1) {
        if (e & 1) r *= b;
        b *= b;
    }
    return (int64_t)r;
}

/* Integer division follows the float path; integer add/sub/mul/pow/max/min and comparisons stay
 * exact in int64 (values beyond 2^53 too). Arithmetic wraps on overflow like PyTorch's (done in
 * unsigned so it is defined behaviour). */
static inline int64_t apply_int(int op, int64_t x, int64_t y) {
    switch (op) {
    case RT_POW:
        return int_pow(x, y);
    case RT_ADD:
        return (int64_t)((uint64_t)x + (uint64_t)y);
    case RT_SUB:
        return (int64_t)((uint64_t)x - (uint64_t)y);
    case RT_MUL:
        return (int64_t)((uint64_t)x * (uint64_t)y);
    case RT_MAXIMUM:
        return x > y ? x : y;
    case RT_MINIMUM:
        return x < y ? x : y;
    case RT_EQ:
        return x == y;
    case RT_NE:
        return x != y;
    case RT_LT:
        return x < y;
    case RT_LE:
        return x <= y;
    case RT_GT:
        return x > y;
    case RT_GE:
        return x >= y;
    }
    return 0;
}

static inline bool is_int_dtype(int d) {
    return d == RT_I64 || d == RT_I32 || d == RT_U8 || d == RT_BOOL;
}

static inline int64_t load_int(const char *p, int dtype) {
    switch (dtype) {
    case RT_I64:
        return *(const int64_t *)p;
    case RT_I32:
        return *(const int32_t *)p;
    case RT_U8:
        return *(const uint8_t *)p;
    default:
        return *(const uint8_t *)p != 0;
    }
}

static inline void store_int(char *p, int dtype, int64_t v) {
    switch (dtype) {
    case RT_I64:
        *(int64_t *)p = v;
        break;
    case RT_I32:
        *(int32_t *)p = (int32_t)(uint32_t)(uint64_t)v;
        break;
    case RT_U8:
        *(uint8_t *)p = (uint8_t)(uint64_t)v;
        break;
    default:
        *(uint8_t *)p = v != 0;
        break;
    }
}

/* The exact integer path: integer inputs, integer (or bool) output, an op that stays integral. */
static inline bool int_path(int op, int to, int ta, int tb) {
    return is_int_dtype(to) && is_int_dtype(ta) && is_int_dtype(tb) && op != RT_DIV;
}

/* ---- tensor (op) tensor ------------------------------------------------------------------------
 */

typedef struct binary_job {
    rt_iter it;
    int op, to, ta, tb;
    int64_t n, so, sa, sb;
    bool all_f32, all_int, reduced;
} binary_job;

static void binary_rows(void *ctx, int64_t r0, int64_t r1) {
    const binary_job *j = ctx;
    const int op = j->op, to = j->to, ta = j->ta, tb = j->tb;
    const int64_t n = j->n, so = j->so, sa = j->sa, sb = j->sb;
    for (int64_t r = r0; r < r1; r++) {
        char *p[3];
        rt_iter_row(&j->it, r, p);
        if (j->all_f32 && so == 4 && sa == 4 && sb == 4) {
            float *o = (float *)p[0];
            const float *x = (const float *)p[1], *y = (const float *)p[2];
            switch (op) { /* separate loops so the compiler vectorises each */
            case RT_ADD:
                for (int64_t i = 0; i < n; i++)
                    o[i] = x[i] + y[i];
                break;
            case RT_SUB:
                for (int64_t i = 0; i < n; i++)
                    o[i] = x[i] - y[i];
                break;
            case RT_MUL:
                for (int64_t i = 0; i < n; i++)
                    o[i] = x[i] * y[i];
                break;
            case RT_DIV:
                for (int64_t i = 0; i < n; i++)
                    o[i] = x[i] / y[i];
                break;
            default:
                for (int64_t i = 0; i < n; i++)
                    o[i] = apply_f32(op, x[i], y[i]);
            }
        } else if (j->all_f32) {
            for (int64_t i = 0; i < n; i++)
                *(float *)(p[0] + i * so) =
                    apply_f32(op, *(float *)(p[1] + i * sa), *(float *)(p[2] + i * sb));
        } else if (j->all_int) {
            for (int64_t i = 0; i < n; i++)
                store_int(p[0] + i * so, to,
                          apply_int(op, load_int(p[1] + i * sa, ta), load_int(p[2] + i * sb, tb)));
        } else {
            for (int64_t i = 0; i < n; i++) {
                double x = rt_load(p[1] + i * sa, ta), y = rt_load(p[2] + i * sb, tb);
                double z = j->reduced && op < RT_EQ ? (double)apply_f32(op, (float)x, (float)y)
                                                    : apply(op, x, y);
                rt_store(p[0] + i * so, to, z);
            }
        }
    }
}

int rt_cpu_binary(int op, const rt_kview *out, const rt_kview *a, const rt_kview *b) {
    binary_job j;
    const rt_kview *v[3] = {out, a, b};
    rt_iter_init(&j.it, 3, v);
    int64_t rows = rt_iter_rows(&j.it);
    int last = j.it.ndim - 1;
    j.n = j.it.shape[last];
    j.so = j.it.strides[0][last];
    j.sa = j.it.strides[1][last];
    j.sb = j.it.strides[2][last];
    j.op = op;
    j.to = out->dtype;
    j.ta = a->dtype;
    j.tb = b->dtype;
    j.all_f32 = j.to == RT_F32 && j.ta == RT_F32 && j.tb == RT_F32;
    j.all_int = int_path(op, j.to, j.ta, j.tb);
    j.reduced = j.to == RT_BF16 || j.to == RT_F16 || j.to == RT_F32;
    rt_parallel_for(rows, rows * j.n, binary_rows, &j);
    return RT_OK;
}

/* ---- tensor (op) scalar -------------------------------------------------------------------------
 */

typedef struct scalar_job {
    rt_iter it;
    int op, to, ta, scalar_first;
    int64_t n, so, sa;
    double s;
    float sf;
    int64_t si;
    bool f32, reduced, all_int;
} scalar_job;

static void scalar_rows(void *ctx, int64_t r0, int64_t r1) {
    const scalar_job *j = ctx;
    const int op = j->op, to = j->to, ta = j->ta, sfirst = j->scalar_first;
    const int64_t n = j->n, so = j->so, sa = j->sa;
    const float sf = j->sf;
    const double s = j->s;
    for (int64_t r = r0; r < r1; r++) {
        char *p[2];
        rt_iter_row(&j->it, r, p);
        if (j->f32 && so == 4 && sa == 4 && !sfirst && op == RT_MUL) {
            float *o = (float *)p[0];
            const float *x = (const float *)p[1];
            for (int64_t i = 0; i < n; i++)
                o[i] = x[i] * sf;
        } else if (j->f32 && so == 4 && sa == 4 && !sfirst && op == RT_ADD) {
            float *o = (float *)p[0];
            const float *x = (const float *)p[1];
            for (int64_t i = 0; i < n; i++)
                o[i] = x[i] + sf;
        } else if (j->all_int) {
            for (int64_t i = 0; i < n; i++) {
                int64_t x = load_int(p[1] + i * sa, ta);
                store_int(p[0] + i * so, to,
                          sfirst ? apply_int(op, j->si, x) : apply_int(op, x, j->si));
            }
        } else if (j->f32) {
            for (int64_t i = 0; i < n; i++) {
                float x = *(float *)(p[1] + i * sa);
                *(float *)(p[0] + i * so) = sfirst ? apply_f32(op, sf, x) : apply_f32(op, x, sf);
            }
        } else {
            for (int64_t i = 0; i < n; i++) {
                double x = rt_load(p[1] + i * sa, ta);
                double z = j->reduced ? (double)(sfirst ? apply_f32(op, sf, (float)x)
                                                        : apply_f32(op, (float)x, sf))
                                      : (sfirst ? apply(op, s, x) : apply(op, x, s));
                rt_store(p[0] + i * so, to, z);
            }
        }
    }
}

int rt_cpu_binary_scalar(int op, const rt_kview *out, const rt_kview *a, double s,
                         int scalar_first) {
    scalar_job j;
    const rt_kview *v[2] = {out, a};
    rt_iter_init(&j.it, 2, v);
    int64_t rows = rt_iter_rows(&j.it);
    int last = j.it.ndim - 1;
    j.n = j.it.shape[last];
    j.so = j.it.strides[0][last];
    j.sa = j.it.strides[1][last];
    j.op = op;
    j.to = out->dtype;
    j.ta = a->dtype;
    j.scalar_first = scalar_first;
    j.s = s;
    j.sf = (float)s;
    j.f32 = j.to == RT_F32 && j.ta == RT_F32 && op < RT_EQ;
    j.reduced = (j.to == RT_BF16 || j.to == RT_F16 || j.to == RT_F32) && op < RT_EQ;
    /* an integral scalar with an integer tensor: exact int64 arithmetic */
    j.all_int = int_path(op, j.to, j.ta, RT_I64) && s == floor(s) && fabs(s) < 9.2e18;
    j.si = j.all_int ? (int64_t)s : 0;
    rt_parallel_for(rows, rows * j.n, scalar_rows, &j);
    return RT_OK;
}

/* ---- masked copy (where)
 * ------------------------------------------------------------------------- */

typedef struct masked_job {
    rt_iter it;
    int to, tc, ta;
    int64_t n, so, sc, sa;
    bool ints;
} masked_job;

static void masked_rows(void *ctx, int64_t r0, int64_t r1) {
    const masked_job *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        char *p[3];
        rt_iter_row(&j->it, r, p);
        if (j->ints) /* integers stay exact (a trip through double lost bits beyond 2^53) */
            for (int64_t i = 0; i < j->n; i++) {
                if (rt_load(p[1] + i * j->sc, j->tc) != 0)
                    store_int(p[0] + i * j->so, j->to, load_int(p[2] + i * j->sa, j->ta));
            }
        else
            for (int64_t i = 0; i < j->n; i++)
                if (rt_load(p[1] + i * j->sc, j->tc) != 0)
                    rt_store(p[0] + i * j->so, j->to, rt_load(p[2] + i * j->sa, j->ta));
    }
}

int rt_cpu_masked_copy(const rt_kview *out, const rt_kview *cond, const rt_kview *a) {
    masked_job j;
    const rt_kview *v[3] = {out, cond, a};
    rt_iter_init(&j.it, 3, v);
    int64_t rows = rt_iter_rows(&j.it);
    int last = j.it.ndim - 1;
    j.n = j.it.shape[last];
    j.so = j.it.strides[0][last];
    j.sc = j.it.strides[1][last];
    j.sa = j.it.strides[2][last];
    j.to = out->dtype;
    j.tc = cond->dtype;
    j.ta = a->dtype;
    j.ints = is_int_dtype(j.to) && is_int_dtype(j.ta);
    rt_parallel_for(rows, rows * j.n, masked_rows, &j);
    return RT_OK;
}
