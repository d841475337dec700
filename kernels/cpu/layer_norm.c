/* layer_norm.c: CPU fused layer norm over the last dim of a contiguous (M, N) view, and its
 * backward.
 *
 * Forward per row: mean, biased variance (two passes, in double), rstd = 1 / sqrt(var + eps),
 * y = (x - mean) * rstd * w + b; mean and rstd are written (compute dtype) for the backward.
 * Backward per row, with xhat = (x - mean) * rstd and d = g * w:
 *   grad_x = rstd * (d - mean(d) - xhat * mean(d * xhat))
 * and per column grad_w = sum_rows g * xhat, grad_b = sum_rows g. Rows are split between threads
 * for grad_x and columns for grad_w / grad_b, so no two threads add into one element and results
 * do not depend on the thread count. */
#include "cpu_kernels.h"

#include <stdlib.h>

static inline double ld(const rt_kview *v, int64_t i) {
    return rt_load(v->data + i * v->strides[v->ndim - 1] * (int64_t)rt_dtype_size(v->dtype),
                   v->dtype);
}

int rt_cpu_layer_norm(const rt_kview *out, const rt_kview *mean, const rt_kview *rstd,
                      const rt_kview *x, const rt_kview *weight, const rt_kview *bias, double eps) {
    int64_t M = x->shape[0], N = x->shape[1];
    if (M == 0) return RT_OK;
    size_t ex = rt_dtype_size(x->dtype), eo = rt_dtype_size(out->dtype);
    size_t es = rt_dtype_size(mean->dtype);
    bool f32 = x->dtype == RT_F32 && out->dtype == RT_F32 && x->strides[1] == 1 &&
               out->strides[1] == 1 &&
               (!weight || (weight->dtype == RT_F32 && weight->strides[0] == 1)) &&
               (!bias || (bias->dtype == RT_F32 && bias->strides[0] == 1));
#pragma omp parallel for if (M * N > RT_PARALLEL_GRAIN / 4) schedule(static)
    for (int64_t i = 0; i < M; i++) {
        const char *xp = x->data + i * x->strides[0] * (int64_t)ex;
        char *op = out->data + i * out->strides[0] * (int64_t)eo;
        double mu = 0, var = 0, r;
        if (f32) {
            const float *xf = (const float *)xp;
            float *of = (float *)op;
            for (int64_t j = 0; j < N; j++)
                mu += xf[j];
            mu /= (double)N;
            for (int64_t j = 0; j < N; j++)
                var += (xf[j] - mu) * (xf[j] - mu);
            r = 1.0 / sqrt(var / (double)N + eps);
            const float *wf = weight ? (const float *)weight->data : NULL;
            const float *bf = bias ? (const float *)bias->data : NULL;
            float fm = (float)mu, fr = (float)r;
            for (int64_t j = 0; j < N; j++) {
                float v = (xf[j] - fm) * fr;
                if (wf) v *= wf[j];
                if (bf) v += bf[j];
                of[j] = v;
            }
        } else {
            int64_t xs = x->strides[1] * (int64_t)ex, os = out->strides[1] * (int64_t)eo;
            for (int64_t j = 0; j < N; j++)
                mu += rt_load(xp + j * xs, x->dtype);
            mu /= (double)N;
            for (int64_t j = 0; j < N; j++) {
                double d = rt_load(xp + j * xs, x->dtype) - mu;
                var += d * d;
            }
            r = 1.0 / sqrt(var / (double)N + eps);
            for (int64_t j = 0; j < N; j++) {
                double v = (rt_load(xp + j * xs, x->dtype) - mu) * r;
                if (weight) v *= ld(weight, j);
                if (bias) v += ld(bias, j);
                rt_store(op + j * os, out->dtype, v);
            }
        }
        rt_store(mean->data + i * mean->strides[0] * (int64_t)es, mean->dtype, mu);
        rt_store(rstd->data + i * rstd->strides[0] * (int64_t)es, rstd->dtype, r);
    }
    return RT_OK;
}

int rt_cpu_layer_norm_backward(const rt_kview *grad_x, const rt_kview *grad_weight,
                               const rt_kview *grad_bias, const rt_kview *grad_out,
                               const rt_kview *x, const rt_kview *mean, const rt_kview *rstd,
                               const rt_kview *weight) {
    int64_t M = x->shape[0], N = x->shape[1];
    size_t ex = rt_dtype_size(x->dtype), eg = rt_dtype_size(grad_out->dtype),
           ei = grad_x ? rt_dtype_size(grad_x->dtype) : 0, es = rt_dtype_size(mean->dtype);
    int64_t xs = x->strides[1] * (int64_t)ex, gs = grad_out->strides[1] * (int64_t)eg,
            is = grad_x ? grad_x->strides[1] * (int64_t)ei : 0;
#define LN_X(i, j) rt_load(x->data + (i)*x->strides[0] * (int64_t)ex + (j)*xs, x->dtype)
#define LN_G(i, j)                                                                                 \
    rt_load(grad_out->data + (i)*grad_out->strides[0] * (int64_t)eg + (j)*gs, grad_out->dtype)
#define LN_MU(i) rt_load(mean->data + (i)*mean->strides[0] * (int64_t)es, mean->dtype)
#define LN_R(i) rt_load(rstd->data + (i)*rstd->strides[0] * (int64_t)es, rstd->dtype)
    /* f32 rows contiguous everywhere: plain float loads (the common training case) */
    bool f32 = x->dtype == RT_F32 && grad_out->dtype == RT_F32 && mean->dtype == RT_F32 &&
               x->strides[1] == 1 && grad_out->strides[1] == 1 &&
               (!weight || (weight->dtype == RT_F32 && weight->strides[0] == 1)) &&
               (!grad_x || (grad_x->dtype == RT_F32 && grad_x->strides[1] == 1));
    if (grad_x && f32) {
        const float *wf = weight ? (const float *)weight->data : NULL;
#pragma omp parallel for if (M * N > RT_PARALLEL_GRAIN / 4) schedule(static)
        for (int64_t i = 0; i < M; i++) {
            const float *xf = (const float *)(x->data + i * x->strides[0] * 4);
            const float *gf = (const float *)(grad_out->data + i * grad_out->strides[0] * 4);
            float *of = (float *)(grad_x->data + i * grad_x->strides[0] * 4);
            float mu = (float)LN_MU(i), r = (float)LN_R(i);
            double sd = 0, sdx = 0;
            for (int64_t j = 0; j < N; j++) {
                float d = wf ? gf[j] * wf[j] : gf[j];
                sd += d;
                sdx += d * ((xf[j] - mu) * r);
            }
            float a = (float)(sd / (double)N), c = (float)(sdx / (double)N);
            for (int64_t j = 0; j < N; j++) {
                float d = wf ? gf[j] * wf[j] : gf[j];
                of[j] = r * (d - a - (xf[j] - mu) * r * c);
            }
        }
    } else if (grad_x) {
#pragma omp parallel for if (M * N > RT_PARALLEL_GRAIN / 4) schedule(static)
        for (int64_t i = 0; i < M; i++) {
            double mu = LN_MU(i), r = LN_R(i), sd = 0, sdx = 0;
            for (int64_t j = 0; j < N; j++) {
                double xh = (LN_X(i, j) - mu) * r, d = LN_G(i, j);
                if (weight) d *= ld(weight, j);
                sd += d;
                sdx += d * xh;
            }
            sd /= (double)N;
            sdx /= (double)N;
            char *ip = grad_x->data + i * grad_x->strides[0] * (int64_t)ei;
            for (int64_t j = 0; j < N; j++) {
                double xh = (LN_X(i, j) - mu) * r, d = LN_G(i, j);
                if (weight) d *= ld(weight, j);
                rt_store(ip + j * is, grad_x->dtype, r * (d - sd - xh * sdx));
            }
        }
    }
    if (grad_weight || grad_bias) {
        /* columns in blocks, each block summed over all rows by one thread */
        enum { BLK = 64 };
        int64_t nblk = (N + BLK - 1) / BLK;
#pragma omp parallel for if (M * N > RT_PARALLEL_GRAIN / 4) schedule(static)
        for (int64_t b = 0; b < nblk; b++) {
            double aw[BLK] = {0}, ab[BLK] = {0};
            int64_t j0 = b * BLK, j1 = j0 + BLK < N ? j0 + BLK : N;
            for (int64_t i = 0; i < M; i++) {
                double mu = LN_MU(i), r = LN_R(i);
                if (f32) {
                    const float *xf = (const float *)(x->data + i * x->strides[0] * 4);
                    const float *gf =
                        (const float *)(grad_out->data + i * grad_out->strides[0] * 4);
                    float fm = (float)mu, fr = (float)r;
                    for (int64_t j = j0; j < j1; j++) {
                        aw[j - j0] += gf[j] * ((xf[j] - fm) * fr);
                        ab[j - j0] += gf[j];
                    }
                    continue;
                }
                for (int64_t j = j0; j < j1; j++) {
                    double g = LN_G(i, j);
                    aw[j - j0] += g * (LN_X(i, j) - mu) * r;
                    ab[j - j0] += g;
                }
            }
            for (int64_t j = j0; j < j1; j++) {
                if (grad_weight)
                    rt_store(grad_weight->data + j * grad_weight->strides[0] *
                                                     (int64_t)rt_dtype_size(grad_weight->dtype),
                             grad_weight->dtype, aw[j - j0]);
                if (grad_bias)
                    rt_store(grad_bias->data + j * grad_bias->strides[0] *
                                                   (int64_t)rt_dtype_size(grad_bias->dtype),
                             grad_bias->dtype, ab[j - j0]);
            }
        }
    }
#undef LN_X
#undef LN_G
#undef LN_MU
#undef LN_R
    return RT_OK;
}
