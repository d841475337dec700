/* optim.c: the fused optimizer updates (DESIGN section 6). Validate the parameter, its gradient
 * and its optimizer state (devices, dtypes, shapes, contiguity, hyper-parameters), then run the
 * backend's one-pass kernel where the parameter lives. In place, no autograd: the parameter's
 * storage version is bumped like any in-place write. rt_adamw_step_multi updates n parameters
 * in one backend call (a few launches on a GPU: kernels/cuda/optim_multi.cu). */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static int check_adamw_hparams(const char *op, double lr, double beta1, double beta2, double eps,
                               double weight_decay, int64_t step) {
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
    return RT_OK;
}

int rt_adamw_step(rt_tensor *param, rt_tensor *grad, rt_tensor *exp_avg, rt_tensor *exp_avg_sq,
                  double lr, double beta1, double beta2, double eps, double weight_decay,
                  int64_t step) {
    static const char *op = "adamw_step";
    RT_TRY(check_param(op, param));
    RT_TRY(check_operand(op, "grad", param, grad, 0));
    RT_TRY(check_operand(op, "exp_avg", param, exp_avg, 1));
    RT_TRY(check_operand(op, "exp_avg_sq", param, exp_avg_sq, 1));
    RT_TRY(check_adamw_hparams(op, lr, beta1, beta2, eps, weight_decay, step));
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
 * AdamW over many parameters (rt_adamw_step_multi)
 *
 * Everything is checked before any tensor is touched, so a bad entry leaves all n unchanged. The
 * written tensors (params, exp_avgs, exp_avg_sqs) must not overlap: the GPU updates them all at
 * once, so a parameter listed twice would race instead of taking two updates in turn.
 * ============================================================================================== */

typedef struct written_range {
    uintptr_t lo, hi; /* [lo, hi) bytes */
    int index;
    const char *what;
} written_range;

static int cmp_range(const void *a, const void *b) {
    const written_range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo ? 1 : (x->index > y->index) - (x->index < y->index);
}

static written_range range_of(const rt_tensor *t, int index, const char *what) {
    uintptr_t lo = (uintptr_t)((char *)t->storage->data +
                               t->meta.offset * (int64_t)rt_dtype_size(t->meta.dtype));
    written_range r = {lo, lo + (uintptr_t)t->meta.numel * rt_dtype_size(t->meta.dtype), index,
                       what};
    return r;
}

static int check_disjoint(const char *op, written_range *r, int nr) {
    qsort(r, (size_t)nr, sizeof *r, cmp_range);
    int far = 0; /* the range reaching furthest so far */
    for (int k = 1; k < nr; k++) {
        if (r[k].lo < r[far].hi) {
            const written_range *a = r[far].index <= r[k].index ? &r[far] : &r[k];
            const written_range *b = a == &r[far] ? &r[k] : &r[far];
            return RT_ERR(RT_ERR_INVALID,
                          "%s: tensor %d's %s overlaps tensor %d's %s in memory (every parameter "
                          "and state tensor must appear once and not share memory)",
                          op, a->index, a->what, b->index, b->what);
        }
        if (r[k].hi > r[far].hi) far = k;
    }
    return RT_OK;
}

/* A gradient is read while the other entries' tensors are written, in one launch on a GPU: one
 * that shares memory with a written range of the batch would race (the per-tensor calls ran one
 * after another). Only its own parameter's exact range is allowed (each element is read before the
 * same element is written). w: the written ranges, sorted and disjoint (check_disjoint). */
static int check_grad_reads(const char *op, const written_range *w, int nw, rt_tensor **params,
                            rt_tensor **grads, int n) {
    for (int i = 0; i < n; i++) {
        if (params[i]->meta.numel == 0) continue;
        written_range g = range_of(grads[i], i, "grad");
        int lo = 0, hi = nw; /* the first written range ending after g.lo */
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (w[mid].hi <= g.lo)
                lo = mid + 1;
            else
                hi = mid;
        }
        for (int k = lo; k < nw && w[k].lo < g.hi; k++) {
            if (w[k].index == i && w[k].lo == g.lo && w[k].hi == g.hi &&
                strcmp(w[k].what, "param") == 0)
                continue;
            return RT_ERR(RT_ERR_INVALID,
                          "%s: tensor %d's grad overlaps tensor %d's %s in memory (a gradient "
                          "may not share memory with a tensor the step writes, other than its own "
                          "parameter exactly)",
                          op, i, w[k].index, w[k].what);
        }
    }
    return RT_OK;
}

int rt_adamw_step_multi(int n, rt_tensor **params, rt_tensor **grads, rt_tensor **exp_avgs,
                        rt_tensor **exp_avg_sqs, double lr, double beta1, double beta2, double eps,
                        double weight_decay, int64_t step) {
    static const char *op = "adamw_step_multi";
    if (n < 0) return RT_ERR(RT_ERR_INVALID, "%s: n must be >= 0, got %d", op, n);
    RT_TRY(check_adamw_hparams(op, lr, beta1, beta2, eps, weight_decay, step));
    if (n == 0) return RT_OK;
    if (!params || !grads || !exp_avgs || !exp_avg_sqs)
        return RT_ERR(RT_ERR_INVALID, "%s: %s array is NULL (n = %d)", op,
                      !params     ? "params"
                      : !grads    ? "grads"
                      : !exp_avgs ? "exp_avgs"
                                  : "exp_avg_sqs",
                      n);
    int nonempty = 0;
    for (int i = 0; i < n; i++) {
        char at[64];
        snprintf(at, sizeof at, "%s: tensor %d", op, i);
        RT_TRY(check_param(at, params[i]));
        if (params[i]->meta.device != params[0]->meta.device)
            return RT_ERR(RT_ERR_DEVICE,
                          "%s: param is on device %d but tensor 0's param is on device %d (one "
                          "call updates the parameters of one device)",
                          at, params[i]->meta.device, params[0]->meta.device);
        RT_TRY(check_operand(at, "grad", params[i], grads[i], 0));
        RT_TRY(check_operand(at, "exp_avg", params[i], exp_avgs[i], 1));
        RT_TRY(check_operand(at, "exp_avg_sq", params[i], exp_avg_sqs[i], 1));
        if (params[i]->meta.numel > 0) nonempty++;
    }
    if (nonempty == 0) return RT_OK;
    /* one block: the written ranges, then the kernel views of the non-empty entries */
    size_t bytes = (size_t)nonempty * (3 * sizeof(written_range) + 4 * sizeof(rt_kview));
    char *mem = malloc(bytes);
    if (!mem)
        return RT_ERR(RT_ERR_OOM, "%s: out of host memory for the work list of %d tensors", op, n);
    written_range *ranges = (written_range *)mem;
    rt_kview *vp = (rt_kview *)(mem + (size_t)nonempty * 3 * sizeof(written_range));
    rt_kview *vg = vp + nonempty, *vm = vg + nonempty, *vv = vm + nonempty;
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (params[i]->meta.numel == 0) continue;
        ranges[3 * k] = range_of(params[i], i, "param");
        ranges[3 * k + 1] = range_of(exp_avgs[i], i, "exp_avg");
        ranges[3 * k + 2] = range_of(exp_avg_sqs[i], i, "exp_avg_sq");
        vp[k] = rt_kview_of(params[i]);
        vg[k] = rt_kview_of(grads[i]);
        vm[k] = rt_kview_of(exp_avgs[i]);
        vv[k] = rt_kview_of(exp_avg_sqs[i]);
        k++;
    }
    int rc = check_disjoint(op, ranges, 3 * nonempty);
    if (rc == RT_OK) rc = check_grad_reads(op, ranges, 3 * nonempty, params, grads, n);
    const rt_backend *be = backend_of(params[0]);
    if (rc == RT_OK && be->adamw_step_multi) {
        rc = be->adamw_step_multi(nonempty, vp, vg, vm, vv, lr, beta1, beta2, eps, weight_decay,
                                  step);
    } else if (rc == RT_OK) {
        /* backends without a multi-tensor kernel (the CPU): the per-tensor one in turn */
        for (int j = 0; j < nonempty && rc == RT_OK; j++)
            rc = RT_BE_CALL(be, adamw_step, op, &vp[j], &vg[j], &vm[j], &vv[j], lr, beta1, beta2,
                            eps, weight_decay, step);
    }
    free(mem);
    if (rc != RT_OK) return rc;
    for (int i = 0; i < n; i++) {
        if (params[i]->meta.numel == 0) continue;
        rt_tensor_bump_version(params[i]);
        rt_tensor_bump_version(exp_avgs[i]);
        rt_tensor_bump_version(exp_avg_sqs[i]);
    }
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
