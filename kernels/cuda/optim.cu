/* optim.cu: fused AdamW and SGD updates on the GPU, one pass over param, grad and state, with the
 * arithmetic of kernels/cpu/optim.c op by op in the same order and precision (f32 for f32/bf16/f16
 * parameters, rounded once on store; f64 for f64). Every multiply, add, divide and square root is
 * an explicit round-to-nearest intrinsic so nvcc cannot fuse them into FMAs: the GPU update is the
 * CPU's, bit for bit. Views are contiguous with the same numel (runtime/optim.c checked). */
#include "adamw_elem.cuh"
#include "rowops.cuh"

/* ---- AdamW
 * --------------------------------------------------------------------------------------- */

/* adamw_f / adamw_d, adamw_scalars and the element update adamw_elem_f / adamw_elem_d are in
 * adamw_elem.cuh, shared with the multi-tensor kernel (optim_multi.cu). */

__global__ void k_adamw_f32(int64_t n, float *__restrict__ p, const float *__restrict__ g,
                            float *__restrict__ m, float *__restrict__ v, adamw_f c) {
    RTC_GRID_STRIDE(i, n) {
        float pi = p[i], mi = m[i], vi = v[i];
        adamw_elem_f(c, pi, g[i], mi, vi);
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
    }
}

__global__ void k_adamw_mixed(int64_t n, char *p, int pd, const char *g, int gd, char *m, int md,
                              char *v, int vd, adamw_f c) {
    int ep = rtc_dtype_size(pd), eg = rtc_dtype_size(gd), em = rtc_dtype_size(md),
        ev = rtc_dtype_size(vd);
    RTC_GRID_STRIDE(i, n) {
        float pi = rtc_ldf(p + i * ep, pd), gi = rtc_ldf(g + i * eg, gd);
        float mi = rtc_ldf(m + i * em, md), vi = rtc_ldf(v + i * ev, vd);
        adamw_elem_f(c, pi, gi, mi, vi);
        rtc_stf(p + i * ep, pd, pi);
        rtc_stf(m + i * em, md, mi);
        rtc_stf(v + i * ev, vd, vi);
    }
}

__global__ void k_adamw_f64(int64_t n, char *p, int pd, const char *g, int gd, char *m, int md,
                            char *v, int vd, adamw_d c) {
    int ep = rtc_dtype_size(pd), eg = rtc_dtype_size(gd), em = rtc_dtype_size(md),
        ev = rtc_dtype_size(vd);
    RTC_GRID_STRIDE(i, n) {
        double pi = rtc_ldd(p + i * ep, pd), gi = rtc_ldd(g + i * eg, gd);
        double mi = rtc_ldd(m + i * em, md), vi = rtc_ldd(v + i * ev, vd);
        adamw_elem_d(c, pi, gi, mi, vi);
        rtc_std(p + i * ep, pd, pi);
        rtc_std(m + i * em, md, mi);
        rtc_std(v + i * ev, vd, vi);
    }
}

extern "C" int rtc_adamw_step(const rtc_view *param, const rtc_view *grad, const rtc_view *exp_avg,
                              const rtc_view *exp_avg_sq, double lr, double beta1, double beta2,
                              double eps, double weight_decay, int64_t step) {
    int64_t n = param->numel;
    if (n == 0) return RT_OK;
    adamw_f cf;
    adamw_d cd;
    adamw_scalars(lr, beta1, beta2, eps, weight_decay, step, &cf, &cd);
    unsigned grid = rtc_grid(n, RTC_BLOCK);
    cudaStream_t st = rtc_stream();
    int pd = param->dtype, gd = grad->dtype, md = exp_avg->dtype, vd = exp_avg_sq->dtype;
    if (pd == RT_F64) {
        k_adamw_f64<<<grid, RTC_BLOCK, 0, st>>>(n, param->data, pd, grad->data, gd, exp_avg->data,
                                                md, exp_avg_sq->data, vd, cd);
    } else {
        if (pd == RT_F32 && gd == RT_F32 && md == RT_F32 && vd == RT_F32)
            k_adamw_f32<<<grid, RTC_BLOCK, 0, st>>>(
                n, (float *)param->data, (const float *)grad->data, (float *)exp_avg->data,
                (float *)exp_avg_sq->data, cf);
        else
            k_adamw_mixed<<<grid, RTC_BLOCK, 0, st>>>(n, param->data, pd, grad->data, gd,
                                                      exp_avg->data, md, exp_avg_sq->data, vd, cf);
    }
    RTC_LAUNCH_CHECK("adamw_step");
    return RT_OK;
}

/* ---- SGD
 * ------------------------------------------------------------------------------------------ */

__global__ void k_sgd_f(int64_t n, char *p, int pd, const char *g, int gd, char *b, int bd,
                        float wd, float mom, float damp, float neg_lr, int do_wd, int has_buf,
                        int nesterov, int first) {
    int ep = rtc_dtype_size(pd), eg = rtc_dtype_size(gd), eb = rtc_dtype_size(bd);
    RTC_GRID_STRIDE(i, n) {
        float pv = rtc_ldf(p + i * ep, pd), d = rtc_ldf(g + i * eg, gd);
        if (do_wd) d = __fadd_rn(d, __fmul_rn(wd, pv));
        if (has_buf) {
            float bv;
            if (first)
                bv = d;
            else {
                bv = __fmul_rn(rtc_ldf(b + i * eb, bd), mom);
                bv = __fadd_rn(bv, __fmul_rn(damp, d));
            }
            rtc_stf(b + i * eb, bd, bv);
            d = nesterov ? __fadd_rn(d, __fmul_rn(mom, bv)) : bv;
        }
        rtc_stf(p + i * ep, pd, __fadd_rn(pv, __fmul_rn(neg_lr, d)));
    }
}

__global__ void k_sgd_d(int64_t n, char *p, int pd, const char *g, int gd, char *b, int bd,
                        double wd, double mom, double damp, double neg_lr, int do_wd, int has_buf,
                        int nesterov, int first) {
    int ep = rtc_dtype_size(pd), eg = rtc_dtype_size(gd), eb = rtc_dtype_size(bd);
    RTC_GRID_STRIDE(i, n) {
        double pv = rtc_ldd(p + i * ep, pd), d = rtc_ldd(g + i * eg, gd);
        if (do_wd) d = __dadd_rn(d, __dmul_rn(wd, pv));
        if (has_buf) {
            double bv;
            if (first)
                bv = d;
            else {
                bv = __dmul_rn(rtc_ldd(b + i * eb, bd), mom);
                bv = __dadd_rn(bv, __dmul_rn(damp, d));
            }
            rtc_std(b + i * eb, bd, bv);
            d = nesterov ? __dadd_rn(d, __dmul_rn(mom, bv)) : bv;
        }
        rtc_std(p + i * ep, pd, __dadd_rn(pv, __dmul_rn(neg_lr, d)));
    }
}

extern "C" int rtc_sgd_step(const rtc_view *param, const rtc_view *grad, const rtc_view *buf,
                            double lr, double momentum, double dampening, double weight_decay,
                            int nesterov, int first_step) {
    int64_t n = param->numel;
    if (n == 0) return RT_OK;
    int has_buf = buf != NULL && momentum != 0.0;
    int do_wd = weight_decay != 0.0;
    char *bp = has_buf ? buf->data : NULL;
    int bd = has_buf ? buf->dtype : RT_F32;
    unsigned grid = rtc_grid(n, RTC_BLOCK);
    cudaStream_t st = rtc_stream();
    if (param->dtype == RT_F64)
        k_sgd_d<<<grid, RTC_BLOCK, 0, st>>>(n, param->data, param->dtype, grad->data, grad->dtype,
                                            bp, bd, weight_decay, momentum, 1.0 - dampening, -lr,
                                            do_wd, has_buf, nesterov, first_step);
    else
        k_sgd_f<<<grid, RTC_BLOCK, 0, st>>>(n, param->data, param->dtype, grad->data, grad->dtype,
                                            bp, bd, (float)weight_decay, (float)momentum,
                                            (float)(1.0 - dampening), (float)-lr, do_wd, has_buf,
                                            nesterov, first_step);
    RTC_LAUNCH_CHECK("sgd_step");
    return RT_OK;
}
