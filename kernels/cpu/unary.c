/* unary.c: CPU kernels for elementwise unary ops and their derivatives. Compute in f32 for
 * f32/bf16/f16 (rounded once on store) and in double for f64. The backward recomputes what it needs
 * from x (y may be NULL). */
#include "cpu_kernels.h"

static inline double fwd(int op, double x) {
    switch (op) {
    case RT_NEG:
        return -x;
    case RT_ABS:
        return fabs(x);
    case RT_EXP:
        return exp(x);
    case RT_LOG:
        return log(x);
    case RT_SQRT:
        return sqrt(x);
    case RT_RSQRT:
        return 1.0 / sqrt(x);
    case RT_TANH:
        return tanh(x);
    case RT_SIGMOID:
        return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
    case RT_RELU:
        return x > 0 ? x : (x != x ? x : 0.0);
    case RT_GELU:
        return 0.5 * x * (1.0 + erf(x * 0.7071067811865476));
    case RT_GELU_TANH: {
        double u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
        return 0.5 * x * (1.0 + tanh(u));
    }
    case RT_SILU:
        return x / (1.0 + exp(-x));
    case RT_SIN:
        return sin(x);
    case RT_COS:
        return cos(x);
    case RT_SQUARE:
        return x * x;
    case RT_RECIPROCAL:
        return 1.0 / x;
    }
    return 0;
}

static inline float fwd_f32(int op, float x) {
    switch (op) {
    case RT_NEG:
        return -x;
    case RT_ABS:
        return fabsf(x);
    case RT_EXP:
        return expf(x);
    case RT_LOG:
        return logf(x);
    case RT_SQRT:
        return sqrtf(x);
    case RT_RSQRT:
        return 1.0f / sqrtf(x);
    case RT_TANH:
        return tanhf(x);
    case RT_SIGMOID:
        return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
    case RT_RELU:
        return x > 0 ? x : (x != x ? x : 0.0f);
    case RT_GELU:
        return 0.5f * x * (1.0f + erff(x * 0.70710678f));
    case RT_GELU_TANH: {
        float u = 0.79788456f * (x + 0.044715f * x * x * x);
        return 0.5f * x * (1.0f + tanhf(u));
    }
    case RT_SILU:
        return x / (1.0f + expf(-x));
    case RT_SIN:
        return sinf(x);
    case RT_COS:
        return cosf(x);
    case RT_SQUARE:
        return x * x;
    case RT_RECIPROCAL:
        return 1.0f / x;
    }
    return 0;
}

/* d op(x) / dx */
static inline double deriv(int op, double x) {
    switch (op) {
    case RT_NEG:
        return -1.0;
    case RT_ABS:
        return x > 0 ? 1.0 : x < 0 ? -1.0 : 0.0;
    case RT_EXP:
        return exp(x);
    case RT_LOG:
        return 1.0 / x;
    case RT_SQRT:
        return 0.5 / sqrt(x);
    case RT_RSQRT:
        return -0.5 / (x * sqrt(x));
    case RT_TANH: {
        double t = tanh(x);
        return 1.0 - t * t;
    }
    case RT_SIGMOID: {
        double s = fwd(RT_SIGMOID, x);
        return s * (1.0 - s);
    }
    case RT_RELU:
        return x > 0 ? 1.0 : 0.0;
    case RT_GELU: {
        double cdf = 0.5 * (1.0 + erf(x * 0.7071067811865476));
        double pdf = 0.3989422804014327 * exp(-0.5 * x * x);
        return cdf + x * pdf;
    }
    case RT_GELU_TANH: {
        double k = 0.7978845608028654, u = k * (x + 0.044715 * x * x * x), t = tanh(u);
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x);
    }
    case RT_SILU: {
        double s = fwd(RT_SIGMOID, x);
        return s * (1.0 + x * (1.0 - s));
    }
    case RT_SIN:
        return cos(x);
    case RT_COS:
        return -sin(x);
    case RT_SQUARE:
        return 2.0 * x;
    case RT_RECIPROCAL:
        return -1.0 / (x * x);
    }
    return 0;
}

/* Integer inputs with an integer result (neg, abs, relu, square of int64/int32/uint8): exact in
 * int64, wrapping like PyTorch (unsigned arithmetic keeps it defined behaviour). */
static inline int64_t fwd_int(int op, int64_t x) {
    switch (op) {
    case RT_NEG:
        return (int64_t)(0 - (uint64_t)x);
    case RT_ABS:
        return x < 0 ? (int64_t)(0 - (uint64_t)x) : x;
    case RT_RELU:
        return x > 0 ? x : 0;
    case RT_SQUARE:
        return (int64_t)((uint64_t)x * (uint64_t)x);
    }
    return 0;
}

static inline int64_t load_i(const char *p, int dt) {
    return dt == RT_I64   ? *(const int64_t *)p
           : dt == RT_I32 ? *(const int32_t *)p
                          : *(const uint8_t *)p;
}

static inline void store_i(char *p, int dt, int64_t v) {
    if (dt == RT_I64)
        *(int64_t *)p = v;
    else if (dt == RT_I32)
        *(int32_t *)p = (int32_t)(uint32_t)(uint64_t)v;
    else
        *(uint8_t *)p = (uint8_t)(uint64_t)v;
}

typedef struct unary_job {
    rt_iter it;
    int op, to, ta;
    int64_t n, so, sa;
    bool f32, reduced, ints;
} unary_job;

static void unary_rows(void *ctx, int64_t r0, int64_t r1) {
    const unary_job *j = ctx;
    const int op = j->op, to = j->to, ta = j->ta;
    const int64_t n = j->n, so = j->so, sa = j->sa;
    for (int64_t r = r0; r < r1; r++) {
        char *p[2];
        rt_iter_row(&j->it, r, p);
        if (j->f32 && so == 4 && sa == 4 && op == RT_RELU) {
            float *o = (float *)p[0];
            const float *x = (const float *)p[1];
            for (int64_t i = 0; i < n; i++)
                o[i] = x[i] > 0 ? x[i] : (x[i] != x[i] ? x[i] : 0.0f);
        } else if (j->f32) {
            for (int64_t i = 0; i < n; i++)
                *(float *)(p[0] + i * so) = fwd_f32(op, *(float *)(p[1] + i * sa));
        } else if (j->ints) {
            for (int64_t i = 0; i < n; i++)
                store_i(p[0] + i * so, to, fwd_int(op, load_i(p[1] + i * sa, ta)));
        } else {
            for (int64_t i = 0; i < n; i++) {
                double x = rt_load(p[1] + i * sa, ta);
                rt_store(p[0] + i * so, to,
                         j->reduced ? (double)fwd_f32(op, (float)x) : fwd(op, x));
            }
        }
    }
}

/* Transcendentals cost several times an add: split across threads at a quarter of the usual grain.
 */
#define UNARY_WEIGHT 4

int rt_cpu_unary(int op, const rt_kview *out, const rt_kview *a) {
    unary_job j;
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
    j.f32 = j.to == RT_F32 && j.ta == RT_F32;
    j.reduced = j.to == RT_F32 || j.to == RT_BF16 || j.to == RT_F16;
    j.ints = (j.to == RT_I64 || j.to == RT_I32 || j.to == RT_U8) &&
             (j.ta == RT_I64 || j.ta == RT_I32 || j.ta == RT_U8) &&
             (op == RT_NEG || op == RT_ABS || op == RT_RELU || op == RT_SQUARE);
    rt_parallel_for(rows, rows * j.n * UNARY_WEIGHT, unary_rows, &j);
    return RT_OK;
}

typedef struct unary_bwd_job {
    rt_iter it;
    int op, t0, t1, t2;
    int64_t n, s0, s1, s2;
    bool reduced;
} unary_bwd_job;

static void unary_bwd_rows(void *ctx, int64_t r0, int64_t r1) {
    const unary_bwd_job *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        char *p[3];
        rt_iter_row(&j->it, r, p);
        if (j->op == RT_RELU && j->t0 == RT_F32 && j->t1 == RT_F32 && j->t2 == RT_F32 &&
            j->s0 == 4 && j->s1 == 4 && j->s2 == 4) {
            /* the MLP hot path: a branch-free, vectorisable mask */
            float *gi = (float *)p[0];
            const float *go = (const float *)p[1], *xv = (const float *)p[2];
            for (int64_t i = 0; i < j->n; i++)
                gi[i] = xv[i] > 0.0f ? go[i] : 0.0f;
            continue;
        }
        for (int64_t i = 0; i < j->n; i++) {
            double g = rt_load(p[1] + i * j->s1, j->t1), xv = rt_load(p[2] + i * j->s2, j->t2);
            double d = g * deriv(j->op, xv);
            rt_store(p[0] + i * j->s0, j->t0, j->reduced ? (double)(float)d : d);
        }
    }
}

int rt_cpu_unary_backward(int op, const rt_kview *grad_in, const rt_kview *grad_out,
                          const rt_kview *x, const rt_kview *y) {
    (void)y;
    unary_bwd_job j;
    const rt_kview *v[3] = {grad_in, grad_out, x};
    rt_iter_init(&j.it, 3, v);
    int64_t rows = rt_iter_rows(&j.it);
    int last = j.it.ndim - 1;
    j.n = j.it.shape[last];
    j.s0 = j.it.strides[0][last];
    j.s1 = j.it.strides[1][last];
    j.s2 = j.it.strides[2][last];
    j.op = op;
    j.t0 = grad_in->dtype;
    j.t1 = grad_out->dtype;
    j.t2 = x->dtype;
    j.reduced = j.t0 == RT_F32 || j.t0 == RT_BF16 || j.t0 == RT_F16;
    rt_parallel_for(rows, rows * j.n * UNARY_WEIGHT, unary_bwd_rows, &j);
    return RT_OK;
}
