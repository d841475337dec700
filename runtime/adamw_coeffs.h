/* adamw_coeffs.h: AdamW's per-step scalars, computed once in double (as PyTorch computes them from
 * Python floats) for every AdamW kernel: the CPU one (kernels/cpu/optim.c), the fused host one
 * (runtime/host_optim.c) and the CUDA ones (kernels/cuda/adamw_elem.cuh). One definition keeps the
 * kernels bit for bit equal to each other. Plain C, usable from nvcc's host code too. */
#ifndef RT_ADAMW_COEFFS_H
#define RT_ADAMW_COEFFS_H

#include <math.h>
#include <stdint.h>

typedef struct rt_adamw_coeffs {
    double decay;     /* 1 - lr * weight_decay */
    double w1, w2;    /* 1 - beta1, 1 - beta2 */
    double bc2_sqrt;  /* sqrt(1 - beta2^step) */
    double step_size; /* lr / (1 - beta1^step) */
    int do_decay;     /* weight_decay != 0 */
} rt_adamw_coeffs;

static inline rt_adamw_coeffs rt_adamw_coeffs_of(double lr, double beta1, double beta2,
                                                 double weight_decay, int64_t step) {
    rt_adamw_coeffs c;
    c.decay = 1.0 - lr * weight_decay;
    c.w1 = 1.0 - beta1;
    c.w2 = 1.0 - beta2;
    c.bc2_sqrt = sqrt(1.0 - pow(beta2, (double)step));
    c.step_size = lr / (1.0 - pow(beta1, (double)step));
    c.do_decay = weight_decay != 0.0;
    return c;
}

#endif
