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
 * (RT_BF16 or RT_F16, rounded to nearest even like the engine's lazy refresh); copy, when not NULL,
 * receives the updated parameter in p's own dtype, the same bits as p (the delayed update's
 * master-dtype back copy, written in the pass instead of a memcpy after it). Scalars are in the
 * compute precision, computed as kernels/cpu/optim.c does. */
typedef struct rt_host_adamw_job {
    void *p;
    const void *g;
    void *m, *v;
    void *shadow;
    void *copy;
    int64_t n;
    int param_bf16, state_bf16, shadow_dtype; /* shadow_dtype -1 when shadow is NULL */
    int grad_dtype;                           /* RT_F32, RT_BF16 or RT_F16 */
    int do_decay, lerp_small, maximize;
    /* inv_bc2 = 1 / sqrt(1 - beta2^step): the kernels multiply by it (a division per element costs
     * the AVX-512 divider as much as the rest of the update) */
    float decay, w1, one_minus_w1, beta2, w2, inv_bc2, eps, neg_step;
    uint64_t key;
} rt_host_adamw_job;

/* One SGD update: p, buf f32 (buf NULL without momentum); g f32, bf16 or f16 (grad_dtype, as
 * above); shadow and copy (f32) as above. */
typedef struct rt_host_sgd_job {
    float *p;
    float *copy;
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

/* The delayed update (runtime/host_optim_delay.c; runtime/host_optim.c implements these): the
 * checks of rt_host_adamw_step / rt_host_sgd_step (op names the caller), and the checked update
 * writing the transfer copies in the same pass: copy in the parameter's dtype and shadow in
 * shadow_dtype (NULL: none). The types come from ramtorch.h, which the including file has
 * included. */
struct rt_tensor;
struct rt_adamw_hparams;
struct rt_sgd_hparams;
int rt_host_adamw_check(const char *op, struct rt_tensor *param, struct rt_tensor *grad,
                        struct rt_tensor *m, struct rt_tensor *v, const struct rt_adamw_hparams *h);
int rt_host_sgd_check(const char *op, struct rt_tensor *param, struct rt_tensor *grad,
                      struct rt_tensor *buf, const struct rt_sgd_hparams *h);
int rt_host_adamw_apply(struct rt_tensor *param, struct rt_tensor *grad, struct rt_tensor *m,
                        struct rt_tensor *v, void *copy, void *shadow, int shadow_dtype,
                        const struct rt_adamw_hparams *h);
int rt_host_sgd_apply(struct rt_tensor *param, struct rt_tensor *grad, struct rt_tensor *buf,
                      void *copy, void *shadow, int shadow_dtype, const struct rt_sgd_hparams *h);

#endif /* RT_HOST_OPTIM_H */
