/* adamw_elem.cuh: the AdamW update of one element on the GPU and its scalars, shared by the
 * per-tensor kernels (optim.cu) and the multi-tensor kernel (optim_multi.cu) so that one
 * rt_adamw_step_multi call updates every element exactly as n rt_adamw_step calls do, bit for bit.
 * The arithmetic is kernels/cpu/optim.c's op by op in the same order and precision (f32 for
 * f32/bf16/f16 parameters, rounded once on store; f64 for f64); every multiply, add, divide and
 * square root is an explicit round-to-nearest intrinsic so nvcc cannot fuse them into FMAs. */
#ifndef RT_CUDA_ADAMW_ELEM_CUH
#define RT_CUDA_ADAMW_ELEM_CUH

#include "cuda_common.cuh"

#include <math.h>

struct adamw_f {
    float decay, w1, w2, b2, bc2, eps, neg_step;
    int do_decay;
};
struct adamw_d {
    double decay, w1, w2, b2, bc2, eps, neg_step;
    int do_decay;
};

/* The scalars exactly as kernels/cpu/optim.c computes them (host double, then f32 for the f32
 * compute path). */
static inline void adamw_scalars(double lr, double beta1, double beta2, double eps,
                                 double weight_decay, int64_t step, adamw_f *cf, adamw_d *cd) {
    const double decay = 1.0 - lr * weight_decay;
    const double w1 = 1.0 - beta1, w2 = 1.0 - beta2;
    const double bc1 = 1.0 - pow(beta1, (double)step);
    const double bc2_sqrt = sqrt(1.0 - pow(beta2, (double)step));
    const double step_size = lr / bc1;
    const int do_decay = weight_decay != 0.0;
    *cd = adamw_d{decay, w1, w2, beta2, bc2_sqrt, eps, -step_size, do_decay};
    *cf = adamw_f{(float)decay,    (float)w1,  (float)w2,         (float)beta2,
                  (float)bc2_sqrt, (float)eps, (float)-step_size, do_decay};
}

/* lerp as ATen computes it: the formula switches at weight 0.5 to stay exact at both ends. */
__device__ __forceinline__ float lerp_f(float a, float b, float w) {
    return (w < 0.5f && w > -0.5f) ? __fadd_rn(a, __fmul_rn(w, __fsub_rn(b, a)))
                                   : __fsub_rn(b, __fmul_rn(__fsub_rn(b, a), __fsub_rn(1.0f, w)));
}
__device__ __forceinline__ double lerp_d(double a, double b, double w) {
    return (w < 0.5 && w > -0.5) ? __dadd_rn(a, __dmul_rn(w, __dsub_rn(b, a)))
                                 : __dsub_rn(b, __dmul_rn(__dsub_rn(b, a), __dsub_rn(1.0, w)));
}

__device__ __forceinline__ void adamw_elem_f(const adamw_f &c, float &p, float g, float &m,
                                             float &v) {
    if (c.do_decay) p = __fmul_rn(p, c.decay);
    m = lerp_f(m, g, c.w1);
    v = __fmul_rn(v, c.b2);
    v = __fadd_rn(v, __fmul_rn(__fmul_rn(c.w2, g), g));
    float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), c.bc2), c.eps);
    p = __fadd_rn(p, __fdiv_rn(__fmul_rn(c.neg_step, m), denom));
}

__device__ __forceinline__ void adamw_elem_d(const adamw_d &c, double &p, double g, double &m,
                                             double &v) {
    if (c.do_decay) p = __dmul_rn(p, c.decay);
    m = lerp_d(m, g, c.w1);
    v = __dmul_rn(v, c.b2);
    v = __dadd_rn(v, __dmul_rn(__dmul_rn(c.w2, g), g));
    double denom = __dadd_rn(__ddiv_rn(__dsqrt_rn(v), c.bc2), c.eps);
    p = __dadd_rn(p, __ddiv_rn(__dmul_rn(c.neg_step, m), denom));
}

#endif /* RT_CUDA_ADAMW_ELEM_CUH */
