/* optim.c: fused optimizer updates on the CPU (DESIGN section 6): AdamW and SGD, one pass over
 * param, grad and optimizer state per parameter, OpenMP over elements.
 *
 * The arithmetic follows PyTorch's single-tensor (non-fused) CPU path op by op, in the same order
 * and in the same precision: f32 for f32/bf16/f16 parameters (states are f32; a reduced-precision
 * parameter is loaded to f32, updated, and rounded once on store) and f64 for f64 parameters. Each
 * element is independent, so results do not depend on the thread count.
 *
 * runtime/optim.c has checked that every view is contiguous with the same number of elements. */
#include "adamw_coeffs.h"
#include "cpu_kernels.h"

#include <stdint.h>

#define OPTIM_GRAIN 16384

/* ---- element access ----------------------------------------------------------------------------
 */

static inline float ldf(const char *base, int dtype, int64_t i) {
    switch (dtype) {
    case RT_F32:
        return ((const float *)base)[i];
    case RT_BF16:
        return rt_bf16_to_f32(((const uint16_t *)base)[i]);
    case RT_F16:
        return rt_f16_to_f32(((const uint16_t *)base)[i]);
    case RT_F64:
        return (float)((const double *)base)[i];
    }
    return 0.0f;
}

static inline void stf(char *base, int dtype, int64_t i, float v) {
    switch (dtype) {
    case RT_F32:
        ((float *)base)[i] = v;
        break;
    case RT_BF16:
        ((uint16_t *)base)[i] = rt_f32_to_bf16(v);
        break;
    case RT_F16:
        ((uint16_t *)base)[i] = rt_f32_to_f16(v);
        break;
    case RT_F64:
        ((double *)base)[i] = v;
        break;
    }
}

static inline double ldd(const char *base, int dtype, int64_t i) {
    return dtype == RT_F64 ? ((const double *)base)[i] : (double)ldf(base, dtype, i);
}

static inline void std_(char *base, int dtype, int64_t i, double v) {
    if (dtype == RT_F64)
        ((double *)base)[i] = v;
    else
        stf(base, dtype, i, (float)v);
}

/* ================================================================================================
 * AdamW
 *
 * PyTorch (torch/optim/adam.py, _single_tensor_adam with decoupled weight decay):
 *   param.mul_(1 - lr * wd)
 *   exp_avg.lerp_(grad, 1 - beta1)
 *   exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value = 1 - beta2)
 *   denom = (exp_avg_sq.sqrt() / sqrt(1 - beta2^step)).add_(eps)
 *   param.addcdiv_(exp_avg, denom, value = -lr / (1 - beta1^step))
 * Scalars are computed in double (Python floats) and used in the compute precision.
 * ============================================================================================== */

/* lerp as ATen computes it: the formula switches at weight 0.5 to stay exact at both ends. */
#define RT_LERP(a, b, w, one)                                                                      \
    ((w) < 0.5 && (w) > -0.5 ? (a) + (w) * ((b) - (a)) : (b) - ((b) - (a)) * ((one) - (w)))

int rt_cpu_adamw_step(const rt_kview *param, const rt_kview *grad, const rt_kview *exp_avg,
                      const rt_kview *exp_avg_sq, double lr, double beta1, double beta2, double eps,
                      double weight_decay, int64_t step) {
    const int64_t n = param->numel;
    const rt_adamw_coeffs c = rt_adamw_coeffs_of(lr, beta1, beta2, weight_decay, step);
    const double decay = c.decay, w1 = c.w1, w2 = c.w2, bc2_sqrt = c.bc2_sqrt;
    const double step_size = c.step_size;
    const int do_decay = c.do_decay;
    char *pp = param->data, *pm = exp_avg->data, *pv = exp_avg_sq->data;
    const char *pg = grad->data;
    const int pd = param->dtype, gd = grad->dtype, md = exp_avg->dtype, vd = exp_avg_sq->dtype;

    if (pd == RT_F64) {
        /* f64 parameters (gradient checks, references): everything in double */
#pragma omp parallel for if (n > OPTIM_GRAIN) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            double p = ldd(pp, pd, i), g = ldd(pg, gd, i);
            double m = ldd(pm, md, i), v = ldd(pv, vd, i);
            if (do_decay) p = p * decay;
            m = RT_LERP(m, g, w1, 1.0);
            v = v * beta2;
            v = v + w2 * g * g;
            double denom = sqrt(v) / bc2_sqrt + eps;
            p = p + -step_size * m / denom;
            std_(pp, pd, i, p);
            std_(pm, md, i, m);
            std_(pv, vd, i, v);
        }
        return RT_OK;
    }

    const float fdecay = (float)decay, fw1 = (float)w1, fw2 = (float)w2, fb2 = (float)beta2;
    /* f32: times the reciprocal instead of PyTorch's division by sqrt(1 - beta2^step) (within an
     * ulp of it in denom), as the fused host kernel does, which must match these bits: a division
     * per element is what bounds that kernel on AVX-512 */
    const float finv_bc2 = (float)(1.0 / bc2_sqrt), feps = (float)eps,
                fneg_step = (float)-step_size;
    if (pd == RT_F32 && gd == RT_F32 && md == RT_F32 && vd == RT_F32) {
        /* the common case: plain pointers so the loop vectorises */
        float *p = (float *)pp, *m = (float *)pm, *v = (float *)pv;
        const float *g = (const float *)pg;
#pragma omp parallel for if (n > OPTIM_GRAIN) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            float pi = p[i], gi = g[i], mi = m[i], vi = v[i];
            if (do_decay) pi = pi * fdecay;
            mi = RT_LERP(mi, gi, fw1, 1.0f);
            vi = vi * fb2;
            vi = vi + fw2 * gi * gi;
            float denom = sqrtf(vi) * finv_bc2 + feps;
            p[i] = pi + fneg_step * mi / denom;
            m[i] = mi;
            v[i] = vi;
        }
        return RT_OK;
    }

#pragma omp parallel for if (n > OPTIM_GRAIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float pi = ldf(pp, pd, i), gi = ldf(pg, gd, i), mi = ldf(pm, md, i), vi = ldf(pv, vd, i);
        if (do_decay) pi = pi * fdecay;
        mi = RT_LERP(mi, gi, fw1, 1.0f);
        vi = vi * fb2;
        vi = vi + fw2 * gi * gi;
        float denom = sqrtf(vi) * finv_bc2 + feps;
        stf(pp, pd, i, pi + fneg_step * mi / denom);
        stf(pm, md, i, mi);
        stf(pv, vd, i, vi);
    }
    return RT_OK;
}

/* ================================================================================================
 * SGD
 *
 * PyTorch (torch/optim/sgd.py, _single_tensor_sgd):
 *   d_p = grad (+ wd * param)
 *   buf = clone(d_p) on the first step, else buf.mul_(momentum).add_(d_p, alpha = 1 - dampening)
 *   d_p = d_p + momentum * buf (nesterov) or buf
 *   param.add_(d_p, alpha = -lr)
 * ============================================================================================== */

int rt_cpu_sgd_step(const rt_kview *param, const rt_kview *grad, const rt_kview *buf, double lr,
                    double momentum, double dampening, double weight_decay, int nesterov,
                    int first_step) {
    const int64_t n = param->numel;
    const int has_buf = buf != NULL && momentum != 0.0;
    const int do_wd = weight_decay != 0.0;
    char *pp = param->data, *pb = has_buf ? buf->data : NULL;
    const char *pg = grad->data;
    const int pd = param->dtype, gd = grad->dtype, bd = has_buf ? buf->dtype : RT_F32;

    if (pd == RT_F64) {
        const double damp = 1.0 - dampening;
#pragma omp parallel for if (n > OPTIM_GRAIN) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            double p = ldd(pp, pd, i), d = ldd(pg, gd, i);
            if (do_wd) d = d + weight_decay * p;
            if (has_buf) {
                double b;
                if (first_step)
                    b = d;
                else {
                    b = ldd(pb, bd, i) * momentum;
                    b = b + damp * d;
                }
                std_(pb, bd, i, b);
                d = nesterov ? d + momentum * b : b;
            }
            std_(pp, pd, i, p + -lr * d);
        }
        return RT_OK;
    }

    const float fwd_ = (float)weight_decay, fmom = (float)momentum,
                fdamp = (float)(1.0 - dampening);
    const float fneg_lr = (float)-lr;
#pragma omp parallel for if (n > OPTIM_GRAIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float p = ldf(pp, pd, i), d = ldf(pg, gd, i);
        if (do_wd) d = d + fwd_ * p;
        if (has_buf) {
            float b;
            if (first_step)
                b = d;
            else {
                b = ldf(pb, bd, i) * fmom;
                b = b + fdamp * d;
            }
            stf(pb, bd, i, b);
            d = nesterov ? d + fmom * b : b;
        }
        stf(pp, pd, i, p + fneg_lr * d);
    }
    return RT_OK;
}
