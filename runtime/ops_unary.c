/* ops_unary.c: elementwise unary ops, clamp and where, with autograd. */
#include "internal.h"

#include <math.h>

static const char *const k_unary_names[RT_NUM_UNARY_OPS] = {
    "neg",  "abs",  "exp",       "log",  "sqrt", "rsqrt", "tanh",   "sigmoid",
    "relu", "gelu", "gelu_tanh", "silu", "sin",  "cos",   "square", "reciprocal"};

/* Node names as PyTorch prints them in grad_fn=<...0> (square is pow(x, 2) there). */
static const char *const k_unary_node_names[RT_NUM_UNARY_OPS] = {
    "NegBackward",  "AbsBackward",   "ExpBackward",  "LogBackward",
    "SqrtBackward", "RsqrtBackward", "TanhBackward", "SigmoidBackward",
    "ReluBackward", "GeluBackward",  "GeluBackward", "SiluBackward",
    "SinBackward",  "CosBackward",   "PowBackward",  "ReciprocalBackward"};

static int unary_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    rt_tensor *x;
    RT_TRY(rt_node_saved(n, 0, &x));
    RT_TRY(rt_tensor_new(x->meta.ndim, x->meta.shape, x->meta.dtype, x->meta.device, &gi[0]));
    rt_kview vi = rt_kview_of(gi[0]), vg = rt_kview_of(g), vx = rt_kview_of(x);
    int rc = RT_BE_CALL(x->storage->backend, unary_backward, "unary_backward", (int)n->iargs[0],
                        &vi, &vg, &vx, NULL);
    if (rc < 0) {
        rt_tensor_release(gi[0]);
        gi[0] = NULL;
    }
    return rc;
}

int rt_unary(int op, rt_tensor *a, rt_tensor **out) {
    *out = NULL;
    if (op < 0 || op >= RT_NUM_UNARY_OPS)
        return RT_ERR(RT_ERR_INVALID, "unary: unknown op code %d", op);
    if (!a) return RT_ERR(RT_ERR_INVALID, "%s: expected a tensor, got NULL", k_unary_names[op]);
    const char *name = k_unary_node_names[op];
    int dtype = a->meta.dtype;
    if (op == RT_NEG && dtype == RT_BOOL) /* PyTorch's rule and message */
        return RT_ERR(RT_ERR_DTYPE,
                      "neg: negation, the `-` operator, on a bool tensor is not supported; to "
                      "invert a mask use mask:eq(false) (PyTorch's logical_not())");
    if (op == RT_RELU && dtype == RT_BOOL) /* PyTorch's check and message */
        return RT_ERR(RT_ERR_DTYPE, "relu: Boolean inputs not supported for relu (convert the "
                                    "tensor with :long() or :float() first)");
    if (!rt_dtype_is_float(dtype) && op != RT_NEG && op != RT_ABS && op != RT_RELU &&
        op != RT_SQUARE)
        dtype = RT_F32; /* exp of an int tensor is a float tensor, as in PyTorch */
    if (dtype == RT_BOOL) dtype = RT_I64;
    RT_TRY(rt_tensor_new(a->meta.ndim, a->meta.shape, dtype, a->meta.device, out));
    rt_kview vo = rt_kview_of(*out), va = rt_kview_of(a);
    int rc = a->meta.numel ? RT_BE_CALL(a->storage->backend, unary, "unary", op, &vo, &va) : RT_OK;
    if (rc == RT_OK && rt_needs_grad1(a)) {
        /* relu's backward needs only where x > 0, which is where y > 0 (and NaN gives 0 either
         * way): it keeps the output, through a view (so the output does not own its own node),
         * and the input can die with the forward. A Linear + ReLU stack then keeps one activation
         * per layer alive for the backward instead of two. */
        rt_tensor *keep = a, *y = NULL;
        if (op == RT_RELU && rt_dtype_is_float(dtype)) {
            rc = rt_tensor_new_view(*out, (*out)->meta.ndim, (*out)->meta.shape,
                                    (*out)->meta.strides, (*out)->meta.offset, &y);
            keep = y;
        }
        rt_node *node;
        if (rc == RT_OK) rc = rt_node_attach(*out, name, unary_backward, 1, &a, &node);
        if (rc == RT_OK) {
            node->iargs[0] = op;
            rt_node_save(node, keep);
        }
        rt_tensor_release(y);
    }
    if (rc < 0) {
        rt_tensor_release(*out);
        *out = NULL;
    }
    return rc;
}

/* clamp: gradient flows where lo <= x <= hi (PyTorch passes it at the bounds too). */
static int clamp_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    rt_tensor *x, *m1 = NULL, *m2 = NULL, *mask = NULL, *mf = NULL;
    RT_TRY(rt_node_saved(n, 0, &x));
    int rc = RT_OK;
    if (n->iargs[0]) rc = rt_binary_scalar(RT_GE, x, n->dargs[0], 0, &m1);
    if (rc == RT_OK && n->iargs[1]) rc = rt_binary_scalar(RT_LE, x, n->dargs[1], 0, &m2);
    if (rc == RT_OK) {
        if (m1 && m2)
            rc = rt_binary(RT_MUL, m1, m2, &mask);
        else {
            mask = m1 ? m1 : m2;
            rt_tensor_retain(mask);
        }
    }
    if (rc == RT_OK && mask) rc = rt_to_dtype(mask, g->meta.dtype, &mf);
    if (rc == RT_OK) {
        if (mf)
            rc = rt_binary(RT_MUL, g, mf, &gi[0]);
        else {
            rt_tensor_retain(g);
            gi[0] = g;
        }
    }
    rt_tensor_release(m1);
    rt_tensor_release(m2);
    rt_tensor_release(mask);
    rt_tensor_release(mf);
    return rc;
}

int rt_clamp(rt_tensor *a, double lo, double hi, int has_lo, int has_hi, rt_tensor **out) {
    *out = NULL;
    if (!has_lo && !has_hi)
        return RT_ERR(RT_ERR_INVALID, "clamp: at least one of min and max must be given");
    /* PyTorch's result type: a number bound promotes across categories only (a bool tensor's
     * result is int64, a fractional bound makes an integer one float32); an integral result takes
     * only bounds that fit its dtype (clamp(300) of a uint8 tensor would wrap to 44). */
    int dtype = a->meta.dtype == RT_BOOL ? RT_I64 : a->meta.dtype;
    if (!rt_dtype_is_float(dtype) && ((has_lo && lo != floor(lo)) || (has_hi && hi != floor(hi))))
        dtype = RT_F32;
    if (!rt_dtype_is_float(dtype)) {
        if (has_lo) RT_TRY(rt_check_scalar_fits("clamp", lo, dtype));
        if (has_hi) RT_TRY(rt_check_scalar_fits("clamp", hi, dtype));
    }
    rt_tensor *t = a, *tmp = NULL;
    int prev = rt_set_grad_enabled(0);
    int rc = RT_OK;
    if (a->meta.dtype == RT_BOOL) /* maximum with a number keeps bool; clamp does not */
        rc = rt_to_dtype(a, RT_I64, &t);
    else
        rt_tensor_retain(t);
    if (rc == RT_OK && has_lo) {
        rc = rt_binary_scalar(RT_MAXIMUM, t, lo, 0, &tmp);
        rt_tensor_release(t);
        t = tmp;
    }
    if (rc == RT_OK && has_hi) {
        rc = rt_binary_scalar(RT_MINIMUM, t, hi, 0, &tmp);
        rt_tensor_release(t);
        t = tmp;
    }
    rt_set_grad_enabled(prev);
    if (rc < 0) return rc;
    *out = t;
    if (rt_needs_grad1(a)) {
        rt_node *node;
        rc = rt_node_attach(t, "ClampBackward", clamp_backward, 1, &a, &node);
        if (rc < 0) {
            rt_tensor_release(t);
            *out = NULL;
            return rc;
        }
        node->iargs[0] = has_lo;
        node->iargs[1] = has_hi;
        node->dargs[0] = lo;
        node->dargs[1] = hi;
        rt_node_save(node, a);
    }
    return RT_OK;
}

/* where(cond, a, b) = cond * a + (1 - cond) * b, computed without the arithmetic so NaN and inf in
 * the unselected branch do not leak. Gradient: g masked by cond for a, by !cond for b. */
static int where_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    rt_tensor *c, *a, *b, *zero = NULL;
    RT_TRY(rt_node_saved(n, 0, &c));
    RT_TRY(rt_node_saved(n, 1, &a));
    RT_TRY(rt_node_saved(n, 2, &b));
    RT_TRY(rt_full(0, NULL, 0.0, g->meta.dtype, g->meta.device, &zero));
    rt_tensor *ga = NULL, *gb = NULL;
    int rc = RT_OK;
    if (n->input_needs_grad[1]) rc = rt_where(c, g, zero, &ga);
    if (rc == RT_OK && n->input_needs_grad[2]) rc = rt_where(c, zero, g, &gb);
    rt_tensor_release(zero);
    if (rc == RT_OK && ga) {
        rc = rt_sum_to_shape(ga, a->meta.ndim, a->meta.shape, &gi[1]);
    }
    if (rc == RT_OK && gb) rc = rt_sum_to_shape(gb, b->meta.ndim, b->meta.shape, &gi[2]);
    rt_tensor_release(ga);
    rt_tensor_release(gb);
    return rc;
}

int rt_where(rt_tensor *cond, rt_tensor *a, rt_tensor *b, rt_tensor **out) {
    *out = NULL;
    RT_TRY(rt_check_same_device("where", cond, a));
    RT_TRY(rt_check_same_device("where", a, b));
    if (cond->meta.dtype != RT_BOOL) /* PyTorch 2.x's check and message */
        return RT_ERR(RT_ERR_DTYPE,
                      "where: expected condition to be a boolean tensor, but got a tensor with "
                      "dtype %s (compare first, e.g. x:ne(0))",
                      rt_dtype_name(cond->meta.dtype));
    int n1, nd;
    int64_t s1[RT_MAX_DIMS], shape[RT_MAX_DIMS];
    RT_TRY(rt_broadcast_shapes("where", cond->meta.ndim, cond->meta.shape, a->meta.ndim,
                               a->meta.shape, &n1, s1));
    RT_TRY(rt_broadcast_shapes("where", n1, s1, b->meta.ndim, b->meta.shape, &nd, shape));
    int dtype = rt_result_type2(a, b);
    rt_kview vc, va, vb;
    RT_TRY(rt_kview_broadcast(cond, nd, shape, &vc));
    RT_TRY(rt_kview_broadcast(a, nd, shape, &va));
    RT_TRY(rt_kview_broadcast(b, nd, shape, &vb));
    RT_TRY(rt_tensor_new(nd, shape, dtype, a->meta.device, out));
    rt_kview vo = rt_kview_of(*out);
    const rt_backend *be = a->storage->backend;
    /* out = b, then out = a where cond: no arithmetic, so inf/NaN in the other branch stay out */
    int rc = (*out)->meta.numel ? RT_BE_CALL(be, copy, "where", &vo, &vb) : RT_OK;
    if (rc == RT_OK && (*out)->meta.numel) rc = RT_BE_CALL(be, masked_copy, "where", &vo, &vc, &va);
    if (rc == RT_OK && rt_needs_grad2(a, b)) {
        rt_node *node;
        rt_tensor *in[3] = {cond, a, b};
        rc = rt_node_attach(*out, "WhereBackward", where_backward, 3, in, &node);
        if (rc == RT_OK) {
            rt_node_save(node, cond);
            rt_node_save(node, a);
            rt_node_save(node, b);
        }
    }
    if (rc < 0) {
        rt_tensor_release(*out);
        *out = NULL;
    }
    return rc;
}
