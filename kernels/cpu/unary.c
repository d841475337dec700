/* unary.c: CPU kernels for elementwise unary ops and their derivatives. Compute in f32 for
 * f32/bf16/f16 (rounded once on store) and in double for f64. The backward recomputes what it needs
 * from x (y may be NULL). */
#include "cpu_kernels.h"

static inline double fwd(int op, double x) {
    switch (op) {
    case RT_NEG: return -x;
    case RT_ABS: return fabs(x);
    case RT_EXP: return exp(x);
    case RT_LOG: return log(x);
    case RT_SQRT: return sqrt(x);
    case RT_RSQRT: return 1.0 / sqrt(x);
    case RT_TANH: return tanh(x);
    case RT_SIGMOID: return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
    case RT_RELU: return x > 0 ? x : (x != x ? x : 0.0);
    case RT_GELU: return 0.5 * x * (1.0 + erf(x * 0.7071067811865476));
    case RT_GELU_TANH: {
        double u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
        return 0.5 * x * (1.0 + tanh(u));
    }
    case RT_SILU: return x / (1.0 + exp(-x));
    case RT_SIN: return sin(x);
    case RT_COS: return cos(x);
    case RT_SQUARE: return x * x;
    case RT_RECIPROCAL: return 1.0 / x;
    }
    return 0;
}

static inline float fwd_f32(int op, float x) {
    switch (op) {
    case RT_NEG: return -x;
    case RT_ABS: return fabsf(x);
    case RT_EXP: return expf(x);
    case RT_LOG: return logf(x);
    case RT_SQRT: return sqrtf(x);
    case RT_RSQRT: return 1.0f / sqrtf(x);
    case RT_TANH: return tanhf(x);
    case RT_SIGMOID: return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
    case RT_RELU: return x > 0 ? x : (x != x ? x : 0.0f);
    case RT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678f));
    case RT_GELU_TANH: {
        float u = 0.79788456f * (x + 0.044715f * x * x * x);
        return 0.5f * x * (1.0f + tanhf(u));
    }
    case RT_SILU: return x / (1.0f + expf(-x));
    case RT_SIN: return sinf(x);
    case RT_COS: return cosf(x);
    case RT_SQUARE: return x * x;
    case RT_RECIPROCAL: return 1.0f / x;
    }
    return 0;
}

/* d op(x) / dx */
static inline double deriv(int op, double x) {
    switch (op) {
    case RT_NEG: return -1.0;
    case RT_ABS: return x > 0 ? 1.0 : x < 0 ? -1.0 : 0.0;
    case RT_EXP: return exp(x);
    case RT_LOG: return 1.0 / x;
    case RT_SQRT: return 0.5 / sqrt(x);
    case RT_RSQRT: return -0.5 / (x * sqrt(x));
    case RT_TANH: {
        double t = tanh(x);
        return 1.0 - t * t;
    }
    case RT_SIGMOID: {
        double s = fwd(RT_SIGMOID, x);
        return s * (1.0 - s);
    }
    case RT_RELU: return x > 0 ? 1.0 : 0.0;
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
    case RT_SIN: return cos(x);
    case RT_COS: return -sin(x);
    case RT_SQUARE: return 2.0 * x;
    case RT_RECIPROCAL: return -1.0 / (x * x);
    }
    return 0;
}

int rt_cpu_unary(int op, const rt_kview *out, const rt_kview *a) {
    const rt_kview *v[2] = {out, a};
    rt_iter it;
    rt_iter_init(&it, 2, v);
    int64_t rows = rt_iter_rows(&it), n = it.shape[it.ndim - 1];
    int64_t so = it.strides[0][it.ndim - 1], sa = it.strides[1][it.ndim - 1];
    int to = out->dtype, ta = a->dtype;
    bool f32 = to == RT_F32 && ta == RT_F32;
    bool reduced = to == RT_F32 || to == RT_BF16 || to == RT_F16;
#pragma omp parallel for if (rows * n > RT_PARALLEL_GRAIN / 4) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        char *p[2];
        rt_iter_row(&it, r, p);
        if (f32 && so == 4 && sa == 4 && op == RT_RELU) {
            float *o = (float *)p[0];
            const float *x = (const float *)p[1];
            for (int64_t i = 0; i < n; i++) o[i] = x[i] > 0 ? x[i] : (x[i] != x[i] ? x[i] : 0.0f);
        } else if (f32) {
            for (int64_t i = 0; i < n; i++)
                *(float *)(p[0] + i * so) = fwd_f32(op, *(float *)(p[1] + i * sa));
        } else {
            for (int64_t i = 0; i < n; i++) {
                double x = rt_load(p[1] + i * sa, ta);
                rt_store(p[0] + i * so, to, reduced ? (double)fwd_f32(op, (float)x) : fwd(op, x));
            }
        }
    }
    return RT_OK;
}

int rt_cpu_unary_backward(int op, const rt_kview *grad_in, const rt_kview *grad_out,
                          const rt_kview *x, const rt_kview *y) {
    (void)y;
    const rt_kview *v[3] = {grad_in, grad_out, x};
    rt_iter it;
    rt_iter_init(&it, 3, v);
    int64_t rows = rt_iter_rows(&it), n = it.shape[it.ndim - 1];
    int64_t s0 = it.strides[0][it.ndim - 1], s1 = it.strides[1][it.ndim - 1],
            s2 = it.strides[2][it.ndim - 1];
    int t0 = grad_in->dtype, t1 = grad_out->dtype, t2 = x->dtype;
    bool reduced = t0 == RT_F32 || t0 == RT_BF16 || t0 == RT_F16;
#pragma omp parallel for if (rows * n > RT_PARALLEL_GRAIN / 4) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        char *p[3];
        rt_iter_row(&it, r, p);
        for (int64_t i = 0; i < n; i++) {
            double g = rt_load(p[1] + i * s1, t1), xv = rt_load(p[2] + i * s2, t2);
            double d = g * deriv(op, xv);
            rt_store(p[0] + i * s0, t0, reduced ? (double)(float)d : d);
        }
    }
    return RT_OK;
}
