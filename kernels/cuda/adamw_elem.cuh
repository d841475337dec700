/* adamw_elem.cuh: the AdamW update of one element on the GPU and its scalars, shared by the
 * per-tensor kernels (optim.cu) and the multi-tensor kernel (optim_multi.cu) so that one
 * rt_adamw_step_multi call updates every element exactly as n rt_adamw_step calls do, bit for bit.
 * The arithmetic is kernels/cpu/optim.c's op by op in the same order and precision (f32 for
 * f32/bf16/f16 parameters, rounded once on store; f64 for f64); every multiply, add, divide and
 * square root is an explicit round-to-nearest intrinsic so nvcc cannot fuse them into FMAs. */
#ifndef RT_CUDA_ADAMW_ELEM_CUH
#define RT_CUDA_ADAMW_ELEM_CUH

#include "adamw_coeffs.h"
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

/* The scalars of runtime/adamw_coeffs.h, as every AdamW kernel takes them (f32 for the f32
 * compute path). */
static inline void adamw_scalars(double lr, double beta1, double beta2, double eps,
                                 double weight_decay, int64_t step, adamw_f *cf, adamw_d *cd) {
    const rt_adamw_coeffs c = rt_adamw_coeffs_of(lr, beta1, beta2, weight_decay, step);
    *cd = adamw_d{c.decay, c.w1, c.w2, beta2, c.bc2_sqrt, eps, -c.step_size, c.do_decay};
    *cf = adamw_f{(float)c.decay,    (float)c.w1, (float)c.w2,         (float)beta2,
                  (float)c.bc2_sqrt, (float)eps,  (float)-c.step_size, c.do_decay};
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
