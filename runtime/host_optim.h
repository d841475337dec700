/* host_optim.h: private interface between runtime/host_optim.c (validation, the public entry
 * points, the overlapped updates) and kernels/cpu/host_optim.c (the fused host AdamW / SGD
 * kernels with scalar, AVX2 and AVX-512 code paths). DESIGN section 6. */
#ifndef RT_HOST_OPTIM_H
#define RT_HOST_OPTIM_H

#include <stdint.h>

/* One AdamW update over n elements. p is f32 (param_bf16 = 0) or bf16 (rounded to nearest even on
 * store); g is grad_dtype: f32 or bf16 (every path) or f16 (scalar path), the dtype in which the
 * offload engine lands a first micro-batch's gradient; m and v are f32 or bf16 (state_bf16:
 * stochastic rounding, 32 random bits per element from a counter-based hash of key and element
 * index, see the kernel); shadow, when not NULL, receives the updated parameter in shadow_dtype
 * (RT_BF16 or RT_F16, rounded to nearest even like the engine's lazy refresh). Scalars are in the
 * compute precision, computed as kernels/cpu/optim.c does. */
typedef struct rt_host_adamw_job {
    void *p;
    const void *g;
    void *m, *v;
    void *shadow;
    int64_t n;
    int param_bf16, state_bf16, shadow_dtype; /* shadow_dtype -1 when shadow is NULL */
    int grad_dtype;                           /* RT_F32, RT_BF16 or RT_F16 */
    int do_decay, lerp_small, maximize;
    float decay, w1, one_minus_w1, beta2, w2, bc2_sqrt, eps, neg_step;
    uint64_t key;
} rt_host_adamw_job;

/* One SGD update: p, buf f32 (buf NULL without momentum); g f32, bf16 or f16 (grad_dtype, as
 * above); shadow as above. */
typedef struct rt_host_sgd_job {
    float *p;
    const void *g;
    int grad_dtype;
    float *buf;
    void *shadow;
    int64_t n;
    int shadow_dtype;
    int do_wd, nesterov, first_step, maximize;
    float wd, momentum, damp, neg_lr;
} rt_host_sgd_job;

/* Code paths (values of RT_SIMD_* in ramtorch.h). */
int rt_host_optim_resolve_simd(int requested); /* AUTO -> the widest supported; -1 unsupported */
int rt_host_adamw_run(const rt_host_adamw_job *j, int simd, int threads);
int rt_host_sgd_run(const rt_host_sgd_job *j, int simd, int threads);

#endif /* RT_HOST_OPTIM_H */
