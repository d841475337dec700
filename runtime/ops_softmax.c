/* ops_softmax.c: softmax and log_softmax along any dim, with autograd.
 *
 * The backward needs the forward's output y. Saving the output itself would make a reference
 * cycle (output -> node -> output), so the node saves a second header on the same storage: it has
 * no grad_fn, and in-place writes to the output are still caught by the storage version check. */
#include "internal.h"

/* Kernel view treating a 0-d tensor as shape [1] so "along dim 0" is meaningful. */
static rt_kview kview_atleast1d(const rt_tensor *t) {
    rt_kview v = rt_kview_of(t);
    if (v.ndim == 0) v.ndim = 1; /* rt_kview_of pads shape 1, stride 0 */
    return v;
}

static int softmax_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    rt_tensor *y;
    RT_TRY(rt_node_saved(n, 0, &y));
    RT_TRY(rt_tensor_new(y->meta.ndim, y->meta.shape, y->meta.dtype, y->meta.device, &gi[0]));
    rt_kview vi = kview_atleast1d(gi[0]), vg = kview_atleast1d(g), vy = kview_atleast1d(y);
    const rt_backend *be = y->storage->backend;
    int rc = y->meta.numel ? RT_BE_CALL(be, softmax_backward, n->name, &vi, &vg, &vy,
                                        (int)n->iargs[0], (int)n->iargs[1])
                           : RT_OK;
    if (rc < 0) {
        rt_tensor_release(gi[0]);
        gi[0] = NULL;
    }
    return rc;
}

static int softmax_common(const char *op, rt_tensor *x, int dim, int log_, rt_tensor **out) {
    *out = NULL;
    if (!rt_dtype_is_float(x->meta.dtype))
        return RT_ERR(RT_ERR_DTYPE,
                      "%s: expected a floating-point tensor, got %s (convert with "
                      "to(float32) first)",
                      op, rt_dtype_name(x->meta.dtype));
    int d;
    RT_TRY(rt_wrap_dim(op, dim, x->meta.ndim > 0 ? x->meta.ndim : 1, &d));
    RT_TRY(rt_tensor_new(x->meta.ndim, x->meta.shape, x->meta.dtype, x->meta.device, out));
    rt_kview vo = kview_atleast1d(*out), vx = kview_atleast1d(x);
    const rt_backend *be = x->storage->backend;
    int rc = x->meta.numel ? RT_BE_CALL(be, softmax, op, &vo, &vx, d, log_) : RT_OK;
    if (rc == RT_OK && rt_needs_grad1(x)) {
        rt_tensor *y = NULL;
        rc = rt_tensor_new_view(*out, (*out)->meta.ndim, (*out)->meta.shape, (*out)->meta.strides,
                                (*out)->meta.offset, &y);
        rt_node *node;
        if (rc == RT_OK)
            rc = rt_node_attach(*out, log_ ? "LogSoftmaxBackward" : "SoftmaxBackward",
                                softmax_backward, 1, &x, &node);
        if (rc == RT_OK) {
            node->iargs[0] = d;
            node->iargs[1] = log_;
            rt_node_save(node, y);
        }
        rt_tensor_release(y);
    }
    if (rc < 0) {
        rt_tensor_release(*out);
        *out = NULL;
    }
    return rc;
}

int rt_softmax(rt_tensor *x, int dim, rt_tensor **out) {
    return softmax_common("softmax", x, dim, 0, out);
}

int rt_log_softmax(rt_tensor *x, int dim, rt_tensor **out) {
    return softmax_common("log_softmax", x, dim, 1, out);
}
