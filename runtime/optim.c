/* optim.c: the fused optimizer updates (DESIGN section 6). Validate the parameter, its gradient
 * and its optimizer state (devices, dtypes, shapes, contiguity, hyper-parameters), then run the
 * backend's one-pass kernel where the parameter lives. In place, no autograd: the parameter's
 * storage version is bumped like any in-place write. */
#include "internal.h"

#include <math.h>

/* One tensor of the update: present, on the parameter's device, contiguous, same shape. */
static int check_operand(const char *op, const char *what, const rt_tensor *param,
                         const rt_tensor *t, int state) {
    char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF];
    if (!t) return RT_ERR(RT_ERR_INVALID, "%s: %s is NULL", op, what);
    if (t->meta.device != param->meta.device)
        return RT_ERR(RT_ERR_DEVICE, "%s: %s is on device %d but the parameter is on device %d", op,
                      what, t->meta.device, param->meta.device);
    if (!rt_same_shape(t, param))
        return RT_ERR(RT_ERR_SHAPE, "%s: %s has shape %s but the parameter has shape %s", op, what,
                      rt_shape_str(b1, sizeof b1, t->meta.ndim, t->meta.shape),
                      rt_shape_str(b2, sizeof b2, param->meta.ndim, param->meta.shape));
    int dt = t->meta.dtype;
    if (state ? (dt != RT_F32 && dt != RT_F64)
              : (dt != RT_F32 && dt != RT_BF16 && dt != RT_F16 && dt != RT_F64))
        return RT_ERR(RT_ERR_DTYPE, "%s: %s has dtype %s; expected %s", op, what, rt_dtype_name(dt),
                      state ? "float32 or float64 (optimizer state)"
                            : "a floating dtype (float32, bfloat16, float16, float64)");
    if (!rt_tensor_is_contiguous(t))
        return RT_ERR(RT_ERR_INVALID, "%s: %s must be contiguous (call contiguous() first)", op,
                      what);
    return RT_OK;
}

static int check_param(const char *op, const rt_tensor *param) {
    if (!param) return RT_ERR(RT_ERR_INVALID, "%s: param is NULL", op);
    return check_operand(op, "param", param, param, 0);
}

static const rt_backend *backend_of(const rt_tensor *param) {
    return param->storage->backend;
}

/* ================================================================================================
 * AdamW
 * ============================================================================================== */

int rt_adamw_step(rt_tensor *param, rt_tensor *grad, rt_tensor *exp_avg, rt_tensor *exp_avg_sq,
                  double lr, double beta1, double beta2, double eps, double weight_decay,
                  int64_t step) {
    static const char *op = "adamw_step";
    RT_TRY(check_param(op, param));
    RT_TRY(check_operand(op, "grad", param, grad, 0));
    RT_TRY(check_operand(op, "exp_avg", param, exp_avg, 1));
    RT_TRY(check_operand(op, "exp_avg_sq", param, exp_avg_sq, 1));
    if (!(lr >= 0))
        return RT_ERR(RT_ERR_INVALID, "%s: invalid learning rate %g (expected >= 0)", op, lr);
    if (!(beta1 >= 0 && beta1 < 1))
        return RT_ERR(RT_ERR_INVALID, "%s: invalid beta1 %g (expected 0 <= beta1 < 1)", op, beta1);
    if (!(beta2 >= 0 && beta2 < 1))
        return RT_ERR(RT_ERR_INVALID, "%s: invalid beta2 %g (expected 0 <= beta2 < 1)", op, beta2);
    if (!(eps >= 0)) return RT_ERR(RT_ERR_INVALID, "%s: invalid eps %g (expected >= 0)", op, eps);
    if (!(weight_decay >= 0))
        return RT_ERR(RT_ERR_INVALID, "%s: invalid weight_decay %g (expected >= 0)", op,
                      weight_decay);
    if (step < 1)
        return RT_ERR(RT_ERR_INVALID,
                      "%s: step must be >= 1 (the count after this update), got %lld", op,
                      (long long)step);
    if (param->meta.numel == 0) return RT_OK;
    const rt_backend *be = backend_of(param);
    rt_kview vp = rt_kview_of(param), vg = rt_kview_of(grad), vm = rt_kview_of(exp_avg),
             vv = rt_kview_of(exp_avg_sq);
    RT_TRY(RT_BE_CALL(be, adamw_step, op, &vp, &vg, &vm, &vv, lr, beta1, beta2, eps, weight_decay,
                      step));
    rt_tensor_bump_version(param);
    rt_tensor_bump_version(exp_avg);
    rt_tensor_bump_version(exp_avg_sq);
    return RT_OK;
}

/* ================================================================================================
 * SGD
 * ============================================================================================== */

int rt_sgd_step(rt_tensor *param, rt_tensor *grad, rt_tensor *momentum_buf, double lr,
                double momentum, double dampening, double weight_decay, int nesterov,
                int first_step) {
    static const char *op = "sgd_step";
    RT_TRY(check_param(op, param));
    RT_TRY(check_operand(op, "grad", param, grad, 0));
    if (!(lr >= 0))
        return RT_ERR(RT_ERR_INVALID, "%s: invalid learning rate %g (expected >= 0)", op, lr);
    if (!(momentum >= 0))
        return RT_ERR(RT_ERR_INVALID, "%s: invalid momentum %g (expected >= 0)", op, momentum);
    if (!(weight_decay >= 0))
        return RT_ERR(RT_ERR_INVALID, "%s: invalid weight_decay %g (expected >= 0)", op,
                      weight_decay);
    if (!isfinite(dampening))
        return RT_ERR(RT_ERR_INVALID, "%s: invalid dampening %g", op, dampening);
    if (nesterov && (momentum <= 0 || dampening != 0))
        return RT_ERR(RT_ERR_INVALID,
                      "%s: nesterov momentum requires a momentum > 0 and zero dampening (got "
                      "momentum %g, dampening %g)",
                      op, momentum, dampening);
    if (momentum != 0) {
        if (!momentum_buf)
            return RT_ERR(RT_ERR_INVALID, "%s: momentum %g needs a momentum buffer (got NULL)", op,
                          momentum);
        RT_TRY(check_operand(op, "momentum_buf", param, momentum_buf, 1));
    }
    if (param->meta.numel == 0) return RT_OK;
    const rt_backend *be = backend_of(param);
    rt_kview vp = rt_kview_of(param), vg = rt_kview_of(grad), vb;
    const rt_kview *pb = NULL;
    if (momentum != 0) {
        vb = rt_kview_of(momentum_buf);
        pb = &vb;
    }
    RT_TRY(RT_BE_CALL(be, sgd_step, op, &vp, &vg, pb, lr, momentum, dampening, weight_decay,
                      nesterov ? 1 : 0, first_step ? 1 : 0));
    rt_tensor_bump_version(param);
    if (momentum != 0) rt_tensor_bump_version(momentum_buf);
    return RT_OK;
}
