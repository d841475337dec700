/* host_optim.c: the host optimizer of DESIGN section 6: validation and scalars of the fused host
 * AdamW / SGD updates (kernels/cpu/host_optim.c runs them), the code-path and thread switches, and
 * the updates overlapped with the backward: a gradient-complete callback registered with the
 * offload engine (runtime/offload.c) runs the update on the engine's host worker thread, in C,
 * as soon as a streamed parameter's last gradient of the step has been accumulated. */
#include "host_optim.h"
#include "adamw_coeffs.h"

#include "internal.h"
#include "offload_internal.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_int g_simd;    /* requested: RT_SIMD_AUTO.. */
static atomic_int g_threads; /* 0: OpenMP's default */

int rt_host_optim_set_simd(int level) {
    if (level < RT_SIMD_AUTO || level > RT_SIMD_AVX512)
        return RT_ERR(RT_ERR_INVALID,
                      "host_optim.set_simd: expected 0 (auto), 1 (scalar), 2 (avx2) or 3 "
                      "(avx512), got %d",
                      level);
    if (rt_host_optim_resolve_simd(level) < 0)
        return RT_ERR(RT_ERR_UNSUPPORTED, "host_optim.set_simd: this CPU does not support %s",
                      level == RT_SIMD_AVX2 ? "AVX2 with FMA" : "AVX-512 (F and BW)");
    atomic_store(&g_simd, level);
    return RT_OK;
}

int rt_host_optim_simd(void) {
    return rt_host_optim_resolve_simd(atomic_load(&g_simd));
}

int rt_host_optim_set_threads(int n) {
    if (n < 0)
        return RT_ERR(RT_ERR_INVALID, "host_optim.set_threads: expected >= 0 (0: default), got %d",
                      n);
    atomic_store(&g_threads, n);
    return RT_OK;
}

int rt_host_optim_threads(void) {
    return atomic_load(&g_threads);
}

/* ================================================================================================
 * Validation
 * ============================================================================================== */

static int check_host(const char *op, const char *what, const rt_tensor *param, const rt_tensor *t,
                      int dt_a, int dt_b) {
    char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF];
    if (!t) return RT_ERR(RT_ERR_INVALID, "%s: %s is NULL", op, what);
    if (t->meta.device != RT_DEVICE_CPU)
        return RT_ERR(RT_ERR_DEVICE,
                      "%s: %s is on cuda:%d; the host optimizer updates CPU (host) tensors", op,
                      what, t->meta.device);
    if (t != param && !rt_same_shape(t, param))
        return RT_ERR(RT_ERR_SHAPE, "%s: %s has shape %s but the parameter has shape %s", op, what,
                      rt_shape_str(b1, sizeof b1, t->meta.ndim, t->meta.shape),
                      rt_shape_str(b2, sizeof b2, param->meta.ndim, param->meta.shape));
    int dt = t->meta.dtype;
    if (dt != dt_a && dt != dt_b)
        return RT_ERR(RT_ERR_DTYPE, "%s: %s has dtype %s; expected %s%s%s", op, what,
                      rt_dtype_name(dt), rt_dtype_name(dt_a), dt_b != dt_a ? " or " : "",
                      dt_b != dt_a ? rt_dtype_name(dt_b) : "");
    if (!rt_tensor_is_contiguous(t))
        return RT_ERR(RT_ERR_INVALID, "%s: %s must be contiguous (call contiguous() first)", op,
                      what);
    return RT_OK;
}

static int check_shadow_of(const char *op, const rt_tensor *param, rt_offload_param *s) {
    if (s && rt_offload_param_host(s) != param)
        return RT_ERR(RT_ERR_INVALID, "%s: shadow_of is the offload handle of another tensor", op);
    return RT_OK;
}

static int check_adamw(const char *op, rt_tensor *param, rt_tensor *grad, rt_tensor *m,
                       rt_tensor *v, const rt_adamw_hparams *h) {
    if (!h) return RT_ERR(RT_ERR_INVALID, "%s: hyper-parameters are NULL", op);
    if (!param) return RT_ERR(RT_ERR_INVALID, "%s: param is NULL", op);
    RT_TRY(check_host(op, "param", param, param, RT_F32, RT_BF16));
    /* f32, or the bf16/f16 dtype the offload engine lands a first gradient in */
    if (grad)
        RT_TRY(check_host(op, "grad", param, grad, RT_F32,
                          grad->meta.dtype == RT_F16 ? RT_F16 : RT_BF16));
    RT_TRY(check_host(op, "exp_avg", param, m, RT_F32, RT_BF16));
    RT_TRY(check_host(op, "exp_avg_sq", param, v, RT_F32, RT_BF16));
    if (m->meta.dtype != v->meta.dtype)
        return RT_ERR(RT_ERR_DTYPE, "%s: exp_avg is %s but exp_avg_sq is %s (expected one dtype)",
                      op, rt_dtype_name(m->meta.dtype), rt_dtype_name(v->meta.dtype));
    if (!(h->lr >= 0))
        return RT_ERR(RT_ERR_INVALID, "%s: invalid learning rate %g (expected >= 0)", op, h->lr);
    if (!(h->beta1 >= 0 && h->beta1 < 1))
        return RT_ERR(RT_ERR_INVALID, "%s: invalid beta1 %g (expected 0 <= beta1 < 1)", op,
                      h->beta1);
    if (!(h->beta2 >= 0 && h->beta2 < 1))
        return RT_ERR(RT_ERR_INVALID, "%s: invalid beta2 %g (expected 0 <= beta2 < 1)", op,
                      h->beta2);
    if (!(h->eps >= 0))
        return RT_ERR(RT_ERR_INVALID, "%s: invalid eps %g (expected >= 0)", op, h->eps);
    if (!(h->weight_decay >= 0))
        return RT_ERR(RT_ERR_INVALID, "%s: invalid weight_decay %g (expected >= 0)", op,
                      h->weight_decay);
    if (h->step < 1)
        return RT_ERR(RT_ERR_INVALID,
                      "%s: step must be >= 1 (the count after this update), got %lld", op,
                      (long long)h->step);
    return RT_OK;
}

static int check_sgd(const char *op, rt_tensor *param, rt_tensor *grad, rt_tensor *buf,
                     const rt_sgd_hparams *h) {
    if (!h) return RT_ERR(RT_ERR_INVALID, "%s: hyper-parameters are NULL", op);
    if (!param) return RT_ERR(RT_ERR_INVALID, "%s: param is NULL", op);
    RT_TRY(check_host(op, "param", param, param, RT_F32, RT_F32));
    /* f32, or the bf16/f16 dtype the offload engine lands a first gradient in */
    if (grad)
        RT_TRY(check_host(op, "grad", param, grad, RT_F32,
                          grad->meta.dtype == RT_F16 ? RT_F16 : RT_BF16));
    if (!(h->lr >= 0))
        return RT_ERR(RT_ERR_INVALID, "%s: invalid learning rate %g (expected >= 0)", op, h->lr);
    if (!(h->momentum >= 0))
        return RT_ERR(RT_ERR_INVALID, "%s: invalid momentum %g (expected >= 0)", op, h->momentum);
    if (!(h->weight_decay >= 0))
        return RT_ERR(RT_ERR_INVALID, "%s: invalid weight_decay %g (expected >= 0)", op,
                      h->weight_decay);
    if (!isfinite(h->dampening))
        return RT_ERR(RT_ERR_INVALID, "%s: invalid dampening %g", op, h->dampening);
    if (h->nesterov && (h->momentum <= 0 || h->dampening != 0))
        return RT_ERR(RT_ERR_INVALID,
                      "%s: nesterov momentum requires a momentum > 0 and zero dampening (got "
                      "momentum %g, dampening %g)",
                      op, h->momentum, h->dampening);
    if (h->momentum != 0) {
        if (!buf)
            return RT_ERR(RT_ERR_INVALID, "%s: momentum %g needs a momentum buffer (got NULL)", op,
                          h->momentum);
        RT_TRY(check_host(op, "momentum_buf", param, buf, RT_F32, RT_F32));
    }
    return RT_OK;
}

/* ================================================================================================
 * The updates
 * ============================================================================================== */

static uint64_t mix64(uint64_t x) { /* splitmix64's finaliser */
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Run the checked update; writes p's shadow when shadow_of has one, or the transfer copies the
 * delayed update hands in (runtime/host_optim_delay.c): copy in param's dtype, shadow in
 * shadow_dtype. */
static int run_adamw(rt_tensor *param, rt_tensor *grad, rt_tensor *m, rt_tensor *v,
                     rt_offload_param *shadow_of, void *copy, void *shadow, int shadow_dtype,
                     const rt_adamw_hparams *h) {
    if (param->meta.numel == 0) return RT_OK;
    /* the scalars every AdamW kernel takes, so that this one agrees with them bit for bit */
    const rt_adamw_coeffs c =
        rt_adamw_coeffs_of(h->lr, h->beta1, h->beta2, h->weight_decay, h->step);
    rt_host_adamw_job j = {0};
    j.p = rt_tensor_data_ptr(param);
    j.g = rt_tensor_data_ptr(grad);
    j.grad_dtype = grad->meta.dtype;
    j.m = rt_tensor_data_ptr(m);
    j.v = rt_tensor_data_ptr(v);
    j.copy = copy;
    j.n = param->meta.numel;
    j.param_bf16 = param->meta.dtype == RT_BF16;
    j.state_bf16 = m->meta.dtype == RT_BF16;
    j.shadow_dtype = -1;
    j.do_decay = c.do_decay;
    j.maximize = h->maximize != 0;
    j.decay = (float)c.decay;
    j.w1 = (float)c.w1;
    j.one_minus_w1 = 1.0f - j.w1;
    j.lerp_small = j.w1 < 0.5 && j.w1 > -0.5;
    j.beta2 = (float)h->beta2;
    j.w2 = (float)c.w2;
    j.inv_bc2 = (float)(1.0 / c.bc2_sqrt);
    j.eps = (float)h->eps;
    j.neg_step = (float)-c.step_size;
    j.key = mix64(h->seed ^ mix64((uint64_t)h->step));
    if (shadow && !j.param_bf16) {
        j.shadow = shadow;
        j.shadow_dtype = shadow_dtype;
    } else if (shadow_of && !j.param_bf16)
        RT_TRY(rt_offload_param_shadow_for_write(shadow_of, &j.shadow, &j.shadow_dtype));
    if (!j.shadow) j.shadow_dtype = -1;
    RT_TRY(rt_host_adamw_run(&j, rt_host_optim_simd(), rt_host_optim_threads()));
    rt_tensor_bump_version(param);
    rt_tensor_bump_version(m);
    rt_tensor_bump_version(v);
    if (j.shadow && shadow_of) rt_offload_param_shadow_written(shadow_of);
    return RT_OK;
}

static int run_sgd(rt_tensor *param, rt_tensor *grad, rt_tensor *buf, rt_offload_param *shadow_of,
                   void *copy, void *shadow, int shadow_dtype, const rt_sgd_hparams *h) {
    if (param->meta.numel == 0) return RT_OK;
    rt_host_sgd_job j = {0};
    j.p = rt_tensor_data_ptr(param);
    j.g = rt_tensor_data_ptr(grad);
    j.grad_dtype = grad->meta.dtype;
    j.buf = h->momentum != 0 ? rt_tensor_data_ptr(buf) : NULL;
    j.copy = copy;
    j.n = param->meta.numel;
    j.shadow_dtype = -1;
    j.do_wd = h->weight_decay != 0.0;
    j.nesterov = h->nesterov != 0;
    j.first_step = h->first_step != 0;
    j.maximize = h->maximize != 0;
    j.wd = (float)h->weight_decay;
    j.momentum = (float)h->momentum;
    j.damp = (float)(1.0 - h->dampening);
    j.neg_lr = (float)-h->lr;
    if (shadow) {
        j.shadow = shadow;
        j.shadow_dtype = shadow_dtype;
    } else if (shadow_of)
        RT_TRY(rt_offload_param_shadow_for_write(shadow_of, &j.shadow, &j.shadow_dtype));
    if (!j.shadow) j.shadow_dtype = -1;
    RT_TRY(rt_host_sgd_run(&j, rt_host_optim_simd(), rt_host_optim_threads()));
    rt_tensor_bump_version(param);
    if (j.buf) rt_tensor_bump_version(buf);
    if (j.shadow && shadow_of) rt_offload_param_shadow_written(shadow_of);
    return RT_OK;
}

int rt_host_adamw_step(rt_tensor *param, rt_tensor *grad, rt_tensor *exp_avg, rt_tensor *exp_avg_sq,
                       rt_offload_param *shadow_of, const rt_adamw_hparams *h) {
    static const char *op = "host_adamw_step";
    if (!grad) return RT_ERR(RT_ERR_INVALID, "%s: grad is NULL", op);
    RT_TRY(check_adamw(op, param, grad, exp_avg, exp_avg_sq, h));
    RT_TRY(check_shadow_of(op, param, shadow_of));
    return run_adamw(param, grad, exp_avg, exp_avg_sq, shadow_of, NULL, NULL, -1, h);
}

int rt_host_sgd_step(rt_tensor *param, rt_tensor *grad, rt_tensor *momentum_buf,
                     rt_offload_param *shadow_of, const rt_sgd_hparams *h) {
    static const char *op = "host_sgd_step";
    if (!grad) return RT_ERR(RT_ERR_INVALID, "%s: grad is NULL", op);
    RT_TRY(check_sgd(op, param, grad, momentum_buf, h));
    RT_TRY(check_shadow_of(op, param, shadow_of));
    return run_sgd(param, grad, momentum_buf, shadow_of, NULL, NULL, -1, h);
}

/* The delayed update (runtime/host_optim_delay.c): checks when it is handed an update, runs it
 * later on its own thread with the transfer copy to write in the same pass. */
int rt_host_adamw_check(const char *op, rt_tensor *param, rt_tensor *grad, rt_tensor *m,
                        rt_tensor *v, const rt_adamw_hparams *h) {
    if (!grad) return RT_ERR(RT_ERR_INVALID, "%s: grad is NULL", op);
    return check_adamw(op, param, grad, m, v, h);
}

int rt_host_sgd_check(const char *op, rt_tensor *param, rt_tensor *grad, rt_tensor *buf,
                      const rt_sgd_hparams *h) {
    if (!grad) return RT_ERR(RT_ERR_INVALID, "%s: grad is NULL", op);
    return check_sgd(op, param, grad, buf, h);
}

int rt_host_adamw_apply(rt_tensor *param, rt_tensor *grad, rt_tensor *m, rt_tensor *v, void *copy,
                        void *shadow, int shadow_dtype, const rt_adamw_hparams *h) {
    return run_adamw(param, grad, m, v, NULL, copy, shadow, shadow_dtype, h);
}

int rt_host_sgd_apply(rt_tensor *param, rt_tensor *grad, rt_tensor *buf, void *copy, void *shadow,
                      int shadow_dtype, const rt_sgd_hparams *h) {
    return run_sgd(param, grad, buf, NULL, copy, shadow, shadow_dtype, h);
}

/* ================================================================================================
 * Overlap with the backward
 * ============================================================================================== */

enum { OV_ADAMW = 0, OV_SGD = 1 };

typedef struct ov_ctx {
    int kind;
    rt_tensor *s1, *s2; /* retained states */
    rt_adamw_hparams ah;
    rt_sgd_hparams sh;
    /* written by the worker; read after rt_offload_synchronize */
    int ran, rc;
    char msg[512];
    rt_tensor *grad; /* retained: the host gradient the update used */
    int grad_version;
} ov_ctx;

static void ov_free(ov_ctx *c) {
    if (!c) return;
    rt_tensor_release(c->s1);
    rt_tensor_release(c->s2);
    rt_tensor_release(c->grad);
    free(c);
}

/* On the engine's host worker: the last gradient of p has landed in host_grad. */
static void ov_run(void *ctx, rt_offload_param *p, rt_tensor *host_grad) {
    ov_ctx *c = ctx;
    rt_tensor *param = rt_offload_param_host(p);
    int rc;
    if (c->kind == OV_ADAMW) {
        rc = check_adamw("overlapped adamw", param, host_grad, c->s1, c->s2, &c->ah);
        if (rc == RT_OK) rc = run_adamw(param, host_grad, c->s1, c->s2, p, NULL, NULL, -1, &c->ah);
    } else {
        rc = check_sgd("overlapped sgd", param, host_grad, c->s1, &c->sh);
        if (rc == RT_OK) rc = run_sgd(param, host_grad, c->s1, p, NULL, NULL, -1, &c->sh);
    }
    c->rc = rc;
    if (rc < 0) snprintf(c->msg, sizeof c->msg, "%s", rt_last_error());
    rt_tensor_retain(host_grad);
    c->grad = host_grad;
    c->grad_version = atomic_load(&host_grad->storage->version);
    c->ran = 1;
}

int rt_host_optim_begin(rt_offload_param *p) {
    if (!p) return RT_ERR(RT_ERR_INVALID, "host_optim.begin: NULL parameter handle");
    ov_free(rt_offload_param_set_grad_cb(p, NULL, NULL, 0));
    rt_offload_param_reset_grad_counts(p);
    return RT_OK;
}

static int arm(rt_offload_param *p, ov_ctx *c, int expected) {
    if (expected < 1) {
        ov_free(c);
        return RT_ERR(RT_ERR_INVALID, "host_optim.arm: expected_grads must be >= 1, got %d",
                      expected);
    }
    int routed, arrived, fired, late;
    rt_offload_param_grad_counts(p, &routed, &arrived, &fired, &late);
    if (routed > 0) {
        ov_free(c);
        return RT_ERR(RT_ERR_INVALID,
                      "host_optim.arm: %d gradient(s) of this parameter were already routed since "
                      "begin (arm before the backward)",
                      routed);
    }
    ov_free(rt_offload_param_set_grad_cb(p, ov_run, c, expected));
    return RT_OK;
}

int rt_host_optim_arm_adamw(rt_offload_param *p, rt_tensor *exp_avg, rt_tensor *exp_avg_sq,
                            const rt_adamw_hparams *h, int expected_grads) {
    static const char *op = "host_optim.arm_adamw";
    if (!p) return RT_ERR(RT_ERR_INVALID, "%s: NULL parameter handle", op);
    RT_TRY(check_adamw(op, rt_offload_param_host(p), NULL, exp_avg, exp_avg_sq, h));
    ov_ctx *c = calloc(1, sizeof *c);
    if (!c) return RT_ERR(RT_ERR_OOM, "%s: out of host memory", op);
    c->kind = OV_ADAMW;
    rt_tensor_retain(exp_avg);
    rt_tensor_retain(exp_avg_sq);
    c->s1 = exp_avg;
    c->s2 = exp_avg_sq;
    c->ah = *h;
    return arm(p, c, expected_grads);
}

int rt_host_optim_arm_sgd(rt_offload_param *p, rt_tensor *momentum_buf, const rt_sgd_hparams *h,
                          int expected_grads) {
    static const char *op = "host_optim.arm_sgd";
    if (!p) return RT_ERR(RT_ERR_INVALID, "%s: NULL parameter handle", op);
    RT_TRY(check_sgd(op, rt_offload_param_host(p), NULL, momentum_buf, h));
    ov_ctx *c = calloc(1, sizeof *c);
    if (!c) return RT_ERR(RT_ERR_OOM, "%s: out of host memory", op);
    c->kind = OV_SGD;
    if (h->momentum != 0) {
        rt_tensor_retain(momentum_buf);
        c->s1 = momentum_buf;
    }
    c->sh = *h;
    return arm(p, c, expected_grads);
}

int rt_host_optim_finish(rt_offload_param *p, int *updated, int *routed) {
    static const char *op = "host_optim.finish";
    *updated = 0;
    *routed = 0;
    if (!p) return RT_ERR(RT_ERR_INVALID, "%s: NULL parameter handle", op);
    int arrived, fired, late;
    rt_offload_param_grad_counts(p, routed, &arrived, &fired, &late);
    if (arrived != *routed)
        return RT_ERR(RT_ERR_INVALID,
                      "%s: %d gradient(s) routed but %d accumulated (call "
                      "offload.synchronize() first)",
                      op, *routed, arrived);
    ov_ctx *c = rt_offload_param_set_grad_cb(p, NULL, NULL, 0);
    int rc = RT_OK;
    if (c && c->ran) {
        *updated = 1;
        rt_tensor *hg = rt_offload_param_host(p)->grad;
        if (c->rc < 0)
            rc = RT_ERR(c->rc, "%s: the overlapped update failed: %s", op, c->msg);
        else if (late)
            rc = RT_ERR(RT_ERR_INVALID,
                        "%s: a gradient of the parameter arrived after its overlapped update ran "
                        "(%d gradients this backward, the update expected %d: the program "
                        "changed; the update used an incomplete gradient)",
                        op, *routed, *routed - 1);
        else if (hg != c->grad || atomic_load(&hg->storage->version) != c->grad_version)
            rc = RT_ERR(RT_ERR_INVALID,
                        "%s: the parameter's gradient was changed after its overlapped update "
                        "used it (gradient clipping or scaling needs every gradient before any "
                        "update: do not announce the last backward for such steps)",
                        op);
    }
    ov_free(c);
    return rc;
}
