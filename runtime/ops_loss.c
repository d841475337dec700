/* ops_loss.c: cross_entropy (fused log-softmax + NLL with ignore_index and label smoothing) and
 * mse_loss, with autograd.
 *
 * cross_entropy views logits as (N, C, S) and targets as (N, S) (S = product of the dims after the
 * class dim, 1 for (N, C)); the kernel writes per-element losses and a "valid" mask in the compute
 * dtype (f32, or f64 for f64 logits) so the mean (sum over non-ignored / count of non-ignored, as
 * PyTorch defines it) is summed before rounding to bf16/f16. The count stays a tensor (no device
 * sync); the backward recomputes softmax from the saved logits instead of keeping it.
 *
 * A backend with the cross_entropy_reduce entry (CUDA) does mean/sum in one pass instead: it writes
 * the 0-d result and the count itself, with no per-element loss tensor and no separate sums. CUDA
 * also defers the out-of-range target error to the next point where the host waits for the device
 * (synchronize, item(), to("cpu"), the next cross_entropy; kernels/cuda/deferred.c), so a forward
 * never stalls the queue; the message then says it was deferred. The CPU reports it here. */
#include "internal.h"

static int compute_dtype(int dtype) {
    return dtype == RT_F64 ? RT_F64 : RT_F32;
}

/* (N, C, S) view of logits that are 1-d (C), or (N, C, ...) with at most one trailing dim or
 * contiguous trailing dims. */
static rt_kview logits_view(const rt_tensor *x) {
    rt_kview v = rt_kview_of(x);
    const rt_tensor_meta *m = &x->meta;
    if (m->ndim == 1) {
        v.shape[0] = 1, v.strides[0] = 0;
        v.shape[1] = m->shape[0], v.strides[1] = m->strides[0];
        v.shape[2] = 1, v.strides[2] = 0;
    } else if (m->ndim == 2) {
        v.shape[2] = 1, v.strides[2] = 0;
    } else if (m->ndim > 3) { /* contiguous: the trailing dims merge */
        int64_t nc = m->shape[0] * m->shape[1];
        v.shape[2] = nc ? m->numel / nc : 1;
        v.strides[2] = 1;
    }
    v.ndim = 3;
    return v;
}

/* (N, S) view of a target (or a per-element loss) of shape (), (N), (N, d1) or contiguous
 * (N, d1, d2, ...). */
static rt_kview target_view(const rt_tensor *t) {
    rt_kview v = rt_kview_of(t);
    const rt_tensor_meta *m = &t->meta;
    if (m->ndim == 0) {
        v.shape[0] = v.shape[1] = 1;
        v.strides[0] = v.strides[1] = 0;
    } else if (m->ndim == 1) {
        v.shape[1] = 1, v.strides[1] = 0;
    } else if (m->ndim > 2) {
        v.shape[1] = m->numel / (m->shape[0] ? m->shape[0] : 1);
        v.strides[1] = 1;
    }
    v.ndim = 2;
    return v;
}

/* iargs: [0] reduction, [1] ignore_index; dargs[0] label_smoothing.
 * saved: logits (as used by the kernel), target, count (mean only). */
static int cross_entropy_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    rt_tensor *x, *t, *count = NULL;
    RT_TRY(rt_node_saved(n, 0, &x));
    RT_TRY(rt_node_saved(n, 1, &t));
    int reduction = (int)n->iargs[0];
    if (reduction == RT_REDUCTION_MEAN) RT_TRY(rt_node_saved(n, 2, &count));
    rt_tensor *gl = NULL; /* the incoming gradient per element, as an (N, S) view */
    int rc;
    if (reduction == RT_REDUCTION_NONE) {
        rc = rt_contiguous(g, &gl);
    } else if (reduction == RT_REDUCTION_MEAN) {
        rc = rt_binary(RT_DIV, g, count, &gl);
    } else {
        rt_tensor_retain(g);
        gl = g;
        rc = RT_OK;
    }
    if (rc == RT_OK)
        rc = rt_tensor_new(x->meta.ndim, x->meta.shape, x->meta.dtype, x->meta.device, &gi[0]);
    if (rc == RT_OK) {
        rt_kview vgl = target_view(gl), vt = target_view(t);
        if (reduction != RT_REDUCTION_NONE) { /* a scalar broadcast over (N, S) */
            vgl.shape[0] = vt.shape[0], vgl.shape[1] = vt.shape[1];
            vgl.strides[0] = vgl.strides[1] = 0;
        }
        rt_kview vgx = logits_view(gi[0]), vx = logits_view(x);
        const rt_backend *be = x->storage->backend;
        rc = x->meta.numel ? RT_BE_CALL(be, cross_entropy_backward, "cross_entropy backward", &vgx,
                                        &vgl, &vx, &vt, n->iargs[1], n->dargs[0])
                           : RT_OK;
    }
    rt_tensor_release(gl);
    if (rc < 0) {
        rt_tensor_release(gi[0]);
        gi[0] = NULL;
    }
    return rc;
}

static int check_ce_args(rt_tensor *x, rt_tensor *t, int reduction, double ls) {
    char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF], b3[RT_SHAPE_BUF];
    if (reduction < 0 || reduction > 2)
        return RT_ERR(RT_ERR_INVALID,
                      "cross_entropy: reduction must be none (0), mean (1) or sum (2), got %d",
                      reduction);
    if (!(ls >= 0.0 && ls <= 1.0))
        return RT_ERR(RT_ERR_INVALID, "cross_entropy: label_smoothing must be in [0, 1], got %g",
                      ls);
    if (!rt_dtype_is_float(x->meta.dtype))
        return RT_ERR(RT_ERR_DTYPE, "cross_entropy: expected floating-point logits, got %s",
                      rt_dtype_name(x->meta.dtype));
    if (t->meta.dtype != RT_I64)
        return RT_ERR(RT_ERR_DTYPE,
                      "cross_entropy: expected target of dtype int64 (class indices), got %s "
                      "(convert with :long())",
                      rt_dtype_name(t->meta.dtype));
    RT_TRY(rt_check_same_device("cross_entropy", x, t));
    if (x->meta.ndim == 0)
        return RT_ERR(RT_ERR_SHAPE, "cross_entropy: logits must have a class dim, got a 0-d "
                                    "tensor");
    /* expected target shape: logits' shape without the class dim (dim 1, or dim 0 for 1-d) */
    int64_t want[RT_MAX_DIMS];
    int nw = 0;
    for (int i = 0; i < x->meta.ndim; i++)
        if (i != (x->meta.ndim == 1 ? 0 : 1)) want[nw++] = x->meta.shape[i];
    bool ok = t->meta.ndim == nw;
    for (int i = 0; ok && i < nw; i++)
        ok = t->meta.shape[i] == want[i];
    if (!ok)
        return RT_ERR(RT_ERR_SHAPE,
                      "cross_entropy: target of shape %s does not fit logits of shape %s "
                      "(expected target shape %s: logits' shape without the class dim)",
                      rt_shape_str(b1, sizeof b1, t->meta.ndim, t->meta.shape),
                      rt_shape_str(b2, sizeof b2, x->meta.ndim, x->meta.shape),
                      rt_shape_str(b3, sizeof b3, nw, want));
    return RT_OK;
}

int rt_cross_entropy(rt_tensor *logits, rt_tensor *target, int64_t ignore_index, int reduction,
                     double label_smoothing, rt_tensor **out) {
    *out = NULL;
    RT_TRY(check_ce_args(logits, target, reduction, label_smoothing));
    rt_tensor *x = NULL, *t = NULL, *loss = NULL, *valid = NULL, *count = NULL, *r = NULL;
    int cdt = compute_dtype(logits->meta.dtype);
    int prev = rt_set_grad_enabled(0); /* the internal arithmetic records nothing */
    /* more dims than the (N, C, S) / (N, S) views can express by strides: make them contiguous */
    int rc = RT_OK;
    x = logits;
    t = target;
    rt_tensor_retain(x);
    rt_tensor_retain(t);
    if (logits->meta.ndim > 3) {
        rt_tensor_release(x);
        x = NULL;
        rc = rt_contiguous(logits, &x);
    }
    if (rc == RT_OK && target->meta.ndim > 2) {
        rt_tensor_release(t);
        t = NULL;
        rc = rt_contiguous(target, &t);
    }
    const rt_backend *be = logits->storage->backend;
    int fused = reduction != RT_REDUCTION_NONE && be->cross_entropy_reduce;
    if (rc == RT_OK && fused) {
        /* one pass: the backend writes the 0-d result (logits' dtype) and the count */
        int64_t none[1] = {0};
        rc = rt_tensor_new(0, none, logits->meta.dtype, logits->meta.device, &r);
        if (rc == RT_OK && reduction == RT_REDUCTION_MEAN)
            rc = rt_tensor_new(0, none, cdt, logits->meta.device, &count);
        if (rc == RT_OK) {
            rt_kview vr = rt_kview_of(r), vx = logits_view(x), vt = target_view(t), vc;
            if (count) vc = rt_kview_of(count);
            rc = be->cross_entropy_reduce(&vr, count ? &vc : NULL, &vx, &vt, ignore_index,
                                          reduction, label_smoothing);
        }
    }
    /* otherwise per-element losses (and valid flags), then sums on the tensor level */
    if (rc == RT_OK && !fused)
        rc = rt_tensor_new(target->meta.ndim, target->meta.shape, cdt, logits->meta.device, &loss);
    if (rc == RT_OK && !fused && reduction == RT_REDUCTION_MEAN)
        rc = rt_tensor_new(target->meta.ndim, target->meta.shape, cdt, logits->meta.device, &valid);
    if (rc == RT_OK && !fused && t->meta.numel) {
        rt_kview vl = target_view(loss), vx = logits_view(x), vt = target_view(t), vv;
        if (valid) vv = target_view(valid);
        rc = RT_BE_CALL(be, cross_entropy, "cross_entropy", &vl, valid ? &vv : NULL, &vx, &vt,
                        ignore_index, label_smoothing);
    }
    if (rc == RT_OK && !fused) {
        if (reduction == RT_REDUCTION_NONE) {
            rc = rt_to_dtype(loss, logits->meta.dtype, &r);
        } else {
            rt_tensor *s = NULL;
            rc = rt_reduce(RT_SUM, loss, 0, NULL, 0, &s);
            if (rc == RT_OK && reduction == RT_REDUCTION_MEAN) {
                rt_tensor *m = NULL;
                rc = rt_reduce(RT_SUM, valid, 0, NULL, 0, &count);
                if (rc == RT_OK) rc = rt_binary(RT_DIV, s, count, &m);
                rt_tensor_release(s);
                s = m;
            }
            if (rc == RT_OK) rc = rt_to_dtype(s, logits->meta.dtype, &r);
            rt_tensor_release(s);
        }
    }
    rt_set_grad_enabled(prev);
    if (rc == RT_OK && rt_needs_grad1(logits)) {
        rt_node *node;
        rc = rt_node_attach(r, "CrossEntropyBackward", cross_entropy_backward, 1, &logits, &node);
        if (rc == RT_OK) {
            node->iargs[0] = reduction;
            node->iargs[1] = ignore_index;
            node->dargs[0] = label_smoothing;
            rt_node_save(node, x);
            rt_node_save(node, t);
            if (count) rt_node_save(node, count);
        }
    }
    rt_tensor_release(x);
    rt_tensor_release(t);
    rt_tensor_release(loss);
    rt_tensor_release(valid);
    rt_tensor_release(count);
    if (rc < 0) {
        rt_tensor_release(r);
        return rc;
    }
    *out = r;
    return RT_OK;
}

/* ================================================================================================
 * mse_loss: mean/sum/none of (input - target)^2, composed of autograd ops (broadcasting as in
 * PyTorch).
 * ============================================================================================== */

int rt_mse_loss(rt_tensor *input, rt_tensor *target, int reduction, rt_tensor **out) {
    *out = NULL;
    if (reduction < 0 || reduction > 2)
        return RT_ERR(RT_ERR_INVALID,
                      "mse_loss: reduction must be none (0), mean (1) or sum (2), got %d",
                      reduction);
    if (!rt_dtype_is_float(input->meta.dtype) || !rt_dtype_is_float(target->meta.dtype))
        return RT_ERR(RT_ERR_DTYPE,
                      "mse_loss: expected floating-point input and target, got %s and %s",
                      rt_dtype_name(input->meta.dtype), rt_dtype_name(target->meta.dtype));
    RT_TRY(rt_check_same_device("mse_loss", input, target));
    int nd;
    int64_t shape[RT_MAX_DIMS];
    RT_TRY(rt_broadcast_shapes("mse_loss", input->meta.ndim, input->meta.shape, target->meta.ndim,
                               target->meta.shape, &nd, shape));
    rt_tensor *d = NULL, *sq = NULL;
    RT_TRY(rt_binary(RT_SUB, input, target, &d));
    int rc = rt_unary(RT_SQUARE, d, &sq);
    rt_tensor_release(d);
    RT_TRY(rc);
    if (reduction == RT_REDUCTION_NONE) {
        *out = sq;
        return RT_OK;
    }
    rc = rt_reduce(reduction == RT_REDUCTION_MEAN ? RT_MEAN : RT_SUM, sq, 0, NULL, 0, out);
    rt_tensor_release(sq);
    return rc;
}
