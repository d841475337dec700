/* ops_binary.c: elementwise binary ops between tensors and with scalars (broadcasting, type
 * promotion, autograd), their in-place forms, and sum_to_shape which undoes broadcasting. */
#include "half.h"
#include "internal.h"

#include <math.h>
#include <stdio.h>

static const char *const k_binary_names[RT_NUM_BINARY_OPS] = {
    "add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge"};
/* the in-place forms' names, for their error messages (formatting them per call cost tens of ns on
 * every in-place op) */
static const char *const k_inplace_names[RT_NUM_BINARY_OPS] = {
    "add_", "sub_", "mul_", "div_", "pow_", "maximum_", "minimum_",
    "eq_",  "ne_",  "lt_",  "le_",  "gt_",  "ge_"};

static bool is_comparison(int op) {
    return op >= RT_EQ && op <= RT_GE;
}

static int check_op(int op) {
    if (op < 0 || op >= RT_NUM_BINARY_OPS)
        return RT_ERR(RT_ERR_INVALID, "binary: unknown op code %d", op);
    return RT_OK;
}

static int release_on_error(int rc, rt_tensor **out) {
    if (rc < 0 && *out) {
        rt_tensor_release(*out);
        *out = NULL;
    }
    return rc;
}

/* ================================================================================================
 * Undo broadcasting
 * ============================================================================================== */

int rt_sum_to_shape(rt_tensor *t, int ndim, const int64_t *shape, rt_tensor **out) {
    *out = NULL;
    int lead = t->meta.ndim - ndim;
    int dims[RT_MAX_DIMS], nd = 0;
    if (lead < 0) {
        char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF];
        return RT_ERR(RT_ERR_SHAPE, "sum_to_shape: cannot reduce %s to %s",
                      rt_shape_str(b1, sizeof b1, t->meta.ndim, t->meta.shape),
                      rt_shape_str(b2, sizeof b2, ndim, shape));
    }
    for (int i = 0; i < t->meta.ndim; i++)
        if (i < lead || (shape[i - lead] == 1 && t->meta.shape[i] != 1)) dims[nd++] = i;
    if (nd == 0) {
        if (t->meta.ndim == ndim) {
            rt_tensor_retain(t);
            *out = t;
            return RT_OK;
        }
        return rt_reshape(t, ndim, shape, out);
    }
    rt_tensor *s;
    RT_TRY(rt_reduce(RT_SUM, t, nd, dims, 1, &s));
    int rc = rt_reshape(s, ndim, shape, out);
    rt_tensor_release(s);
    return rc;
}

/* ================================================================================================
 * Backward
 * ============================================================================================== */

/* grad for one input: reduce to its shape, convert to its dtype. Takes ownership of g. */
static int fit_grad(rt_tensor *g, const rt_tensor_meta *like, rt_tensor **out) {
    rt_tensor *s;
    int rc = rt_sum_to_shape(g, like->ndim, like->shape, &s);
    rt_tensor_release(g);
    RT_TRY(rc);
    rc = rt_to_dtype(s, like->dtype, out);
    rt_tensor_release(s);
    return rc;
}

/* A small expression helper: r = x op y, releasing nothing. */
#define BIN(op, x, y, r) RT_TRY(rt_binary((op), (x), (y), (r)))

static int binary_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    int op = (int)n->iargs[0];
    rt_tensor *a = NULL, *b = NULL;
    if (op != RT_ADD && op != RT_SUB) { /* add and sub need only the shapes (n->in_meta) */
        RT_TRY(rt_node_saved(n, 0, &a));
        RT_TRY(rt_node_saved(n, 1, &b));
    }
    rt_tensor *ga = NULL, *gb = NULL, *t1 = NULL, *t2 = NULL;
    int rc = RT_OK;
    switch (op) {
    case RT_ADD:
        rt_tensor_retain(g);
        rt_tensor_retain(g);
        ga = g;
        gb = g;
        break;
    case RT_SUB:
        rt_tensor_retain(g);
        ga = g;
        rc = rt_binary_scalar(RT_MUL, g, -1.0, 0, &gb);
        break;
    case RT_MUL:
        rc = rt_binary(RT_MUL, g, b, &ga);
        if (rc == RT_OK) rc = rt_binary(RT_MUL, g, a, &gb);
        break;
    case RT_DIV: /* d/da = 1/b, d/db = -a/b^2 */
        rc = rt_binary(RT_DIV, g, b, &ga);
        if (rc == RT_OK) rc = rt_binary(RT_DIV, ga, b, &t1);
        if (rc == RT_OK) rc = rt_binary(RT_MUL, t1, a, &t2);
        if (rc == RT_OK) rc = rt_binary_scalar(RT_MUL, t2, -1.0, 0, &gb);
        break;
    case RT_POW: { /* d/da = b a^(b-1), d/db = a^b log a */
        rt_tensor *bm1 = NULL, *p = NULL, *y = NULL, *la = NULL;
        rc = rt_binary_scalar(RT_SUB, b, 1.0, 0, &bm1);
        if (rc == RT_OK) rc = rt_binary(RT_POW, a, bm1, &p);
        if (rc == RT_OK) rc = rt_binary(RT_MUL, p, b, &t1);
        if (rc == RT_OK) rc = rt_binary(RT_MUL, t1, g, &ga);
        if (rc == RT_OK && n->input_needs_grad[1]) {
            rc = rt_binary(RT_POW, a, b, &y);
            if (rc == RT_OK) rc = rt_unary(RT_LOG, a, &la);
            if (rc == RT_OK) rc = rt_binary(RT_MUL, y, la, &t2);
            if (rc == RT_OK) rc = rt_binary(RT_MUL, t2, g, &gb);
        }
        rt_tensor_release(bm1);
        rt_tensor_release(p);
        rt_tensor_release(y);
        rt_tensor_release(la);
        break;
    }
    case RT_MAXIMUM:
    case RT_MINIMUM: { /* the winner takes the gradient; ties split it evenly, as PyTorch does */
        rt_tensor *win = NULL, *tie = NULL, *half = NULL, *wa = NULL, *wb = NULL;
        rc = rt_binary(op == RT_MAXIMUM ? RT_GT : RT_LT, a, b, &win);
        if (rc == RT_OK) rc = rt_binary(RT_EQ, a, b, &tie);
        if (rc == RT_OK) rc = rt_binary_scalar(RT_MUL, tie, 0.5, 0, &half);
        if (rc == RT_OK) rc = rt_binary(RT_ADD, win, half, &wa);         /* weight for a */
        if (rc == RT_OK) rc = rt_binary_scalar(RT_SUB, wa, 1.0, 1, &wb); /* 1 - wa */
        if (rc == RT_OK) rc = rt_binary(RT_MUL, g, wa, &ga);
        if (rc == RT_OK) rc = rt_binary(RT_MUL, g, wb, &gb);
        rt_tensor_release(win);
        rt_tensor_release(tie);
        rt_tensor_release(half);
        rt_tensor_release(wa);
        rt_tensor_release(wb);
        break;
    }
    default:
        rc = RT_ERR(RT_ERR_AUTOGRAD, "%s has no gradient", k_binary_names[op]);
    }
    rt_tensor_release(t1);
    rt_tensor_release(t2);
    if (rc < 0) {
        rt_tensor_release(ga);
        rt_tensor_release(gb);
        return rc;
    }
    rc = ga && n->input_needs_grad[0] ? fit_grad(ga, &n->in_meta[0], &gi[0])
                                      : (rt_tensor_release(ga), RT_OK);
    if (rc == RT_OK)
        rc = gb && n->input_needs_grad[1] ? fit_grad(gb, &n->in_meta[1], &gi[1])
                                          : (rt_tensor_release(gb), RT_OK);
    else
        rt_tensor_release(gb);
    return rc;
}

/* Whether the gradient of a (op) s needs a's values (otherwise only its dtype, from n->in_meta). */
static bool scalar_grad_needs_input(int op, int scalar_first) {
    return !(op == RT_ADD || op == RT_SUB || op == RT_MUL || (op == RT_DIV && !scalar_first));
}

/* grad of a (op) s or s (op) a with respect to a. iargs: op, scalar_first; dargs[0] = s. */
static int binary_scalar_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    int op = (int)n->iargs[0], sf = (int)n->iargs[1];
    double s = n->dargs[0];
    rt_tensor *a = NULL;
    if (scalar_grad_needs_input(op, sf)) RT_TRY(rt_node_saved(n, 0, &a));
    rt_tensor *r = NULL, *t1 = NULL, *t2 = NULL;
    int rc = RT_OK;
    switch (op) {
    case RT_ADD:
        rt_tensor_retain(g);
        r = g;
        break;
    case RT_SUB:
        if (sf)
            rc = rt_binary_scalar(RT_MUL, g, -1.0, 0, &r);
        else {
            rt_tensor_retain(g);
            r = g;
        }
        break;
    case RT_MUL:
        rc = rt_binary_scalar(RT_MUL, g, s, 0, &r);
        break;
    case RT_DIV:
        if (!sf)
            rc = rt_binary_scalar(RT_DIV, g, s, 0, &r);
        else { /* s / a: -s / a^2 */
            rc = rt_binary(RT_MUL, a, a, &t1);
            if (rc == RT_OK) rc = rt_binary(RT_DIV, g, t1, &t2);
            if (rc == RT_OK) rc = rt_binary_scalar(RT_MUL, t2, -s, 0, &r);
        }
        break;
    case RT_POW:
        if (!sf) { /* a^s: s a^(s-1) */
            rc = rt_binary_scalar(RT_POW, a, s - 1.0, 0, &t1);
            if (rc == RT_OK) rc = rt_binary_scalar(RT_MUL, t1, s, 0, &t2);
            if (rc == RT_OK) rc = rt_binary(RT_MUL, t2, g, &r);
        } else { /* s^a: s^a log s */
            rc = rt_binary_scalar(RT_POW, a, s, 1, &t1);
            if (rc == RT_OK) rc = rt_binary_scalar(RT_MUL, t1, log(s), 0, &t2);
            if (rc == RT_OK) rc = rt_binary(RT_MUL, t2, g, &r);
        }
        break;
    case RT_MAXIMUM:
    case RT_MINIMUM: {
        rt_tensor *win = NULL, *tie = NULL, *half = NULL;
        rc = rt_binary_scalar(op == RT_MAXIMUM ? RT_GT : RT_LT, a, s, 0, &win);
        if (rc == RT_OK) rc = rt_binary_scalar(RT_EQ, a, s, 0, &tie);
        if (rc == RT_OK) rc = rt_binary_scalar(RT_MUL, tie, 0.5, 0, &half);
        if (rc == RT_OK) rc = rt_binary(RT_ADD, win, half, &t1);
        if (rc == RT_OK) rc = rt_binary(RT_MUL, g, t1, &r);
        rt_tensor_release(win);
        rt_tensor_release(tie);
        rt_tensor_release(half);
        break;
    }
    default:
        rc = RT_ERR(RT_ERR_AUTOGRAD, "%s has no gradient", k_binary_names[op]);
    }
    rt_tensor_release(t1);
    rt_tensor_release(t2);
    if (rc < 0) {
        rt_tensor_release(r);
        return rc;
    }
    rc = rt_to_dtype(r, n->in_meta[0].dtype, &gi[0]);
    rt_tensor_release(r);
    return rc;
}

/* ================================================================================================
 * Forward
 * ============================================================================================== */

/* PyTorch refuses subtraction with a bool operand (it would silently be xor-like on two masks, or
 * turn a mask into -1/0/1 integers); `name` is the op's name as called (sub or sub_). A number
 * operand counts as not bool. */
static int check_bool_sub(const char *name, int op, int ta, int tb) {
    if (op != RT_SUB || (ta != RT_BOOL && tb != RT_BOOL)) return RT_OK;
    if (ta == RT_BOOL && tb == RT_BOOL)
        return RT_ERR(RT_ERR_DTYPE,
                      "%s: subtraction, the `-` operator, with two bool tensors is not supported; "
                      "use a:ne(b) for exclusive or (PyTorch's ^ / logical_xor())",
                      name);
    return RT_ERR(RT_ERR_DTYPE,
                  "%s: subtraction, the `-` operator, with a bool tensor is not supported (got %s "
                  "and %s); to invert a mask use mask:eq(false) (PyTorch's ~ / logical_not()), "
                  "or convert the mask with :long() or :float() first",
                  name, ta < 0 ? "a number" : rt_dtype_name(ta),
                  tb < 0 ? "a number" : rt_dtype_name(tb));
}

int rt_binary(int op, rt_tensor *a, rt_tensor *b, rt_tensor **out) {
    *out = NULL;
    RT_TRY(check_op(op));
    const char *name = k_binary_names[op];
    RT_TRY(rt_check_same_device(name, a, b));
    RT_TRY(check_bool_sub(name, op, a->meta.dtype, b->meta.dtype));
    int nd;
    const int64_t *shape;
    int64_t bshape[RT_MAX_DIMS];
    rt_kview va, vb;
    if (rt_same_shape(a, b)) { /* the common case: no broadcasting to work out */
        nd = a->meta.ndim;
        shape = a->meta.shape;
        va = rt_kview_of(a);
        vb = rt_kview_of(b);
    } else {
        RT_TRY(rt_broadcast_shapes(name, a->meta.ndim, a->meta.shape, b->meta.ndim, b->meta.shape,
                                   &nd, bshape));
        shape = bshape;
        RT_TRY(rt_kview_broadcast(a, nd, shape, &va));
        RT_TRY(rt_kview_broadcast(b, nd, shape, &vb));
    }
    int dtype = is_comparison(op) ? RT_BOOL : rt_result_type2(a, b);
    if (op == RT_DIV && !rt_dtype_is_float(dtype)) dtype = RT_F32; /* true division */
    RT_TRY(rt_tensor_new(nd, shape, dtype, a->meta.device, out));
    rt_kview vo = rt_kview_of(*out);
    if ((*out)->meta.numel)
        RT_TRY(release_on_error(
            RT_BE_CALL(a->storage->backend, binary, "binary", op, &vo, &va, &vb), out));
    if (!is_comparison(op) && rt_needs_grad2(a, b)) {
        rt_node *node;
        rt_tensor *in[2] = {a, b};
        static const char *const names[] = {"AddBackward",    "SubBackward",  "MulBackward",
                                            "DivBackward",    "PowBackward1", "MaximumBackward",
                                            "MinimumBackward"};
        RT_TRY(
            release_on_error(rt_node_attach(*out, names[op], binary_backward, 2, in, &node), out));
        node->iargs[0] = op;
        if (op != RT_ADD && op != RT_SUB) {
            rt_node_save(node, a);
            rt_node_save(node, b);
        }
    }
    return RT_OK;
}

/* PyTorch refuses an integer tensor to a negative integer power (the result would be 0 for
 * every base but 1 and -1, silently). */
static int check_int_pow(const char *name, const rt_tensor *a, double s, int scalar_first) {
    if (scalar_first || rt_dtype_is_float(a->meta.dtype) || s >= 0 || s != floor(s)) return RT_OK;
    return RT_ERR(RT_ERR_INVALID,
                  "%s: integers to negative integer powers are not allowed (a %s tensor to the "
                  "power %g); convert the tensor to a float dtype first",
                  name, rt_dtype_name(a->meta.dtype), s);
}

/* The dtype of `tensor op number`: a number promotes only across categories (a fractional one
 * makes an integer or bool tensor's result float32, as does true division; an integral one makes a
 * bool tensor's result int64), as PyTorch treats Python scalars. */
static int scalar_result_dtype(int op, int dtype, double s) {
    if (is_comparison(op)) return RT_BOOL;
    if (!rt_dtype_is_float(dtype) && (s != floor(s) || op == RT_DIV)) return RT_F32;
    if (dtype == RT_BOOL && op != RT_MAXIMUM && op != RT_MINIMUM) return RT_I64;
    return dtype;
}

/* PyTorch's canCast for an in-place op: its result may not lose its category in the target (no
 * float into an integer tensor, no number into a bool one), which would truncate silently. */
static int check_inplace_cast(const char *name, int result, int target) {
    if ((rt_dtype_is_float(result) && !rt_dtype_is_float(target)) ||
        (result != RT_BOOL && target == RT_BOOL))
        return RT_ERR(RT_ERR_DTYPE,
                      "%s: result type %s can't be cast to the desired output type %s (convert "
                      "the tensor first, or use the out-of-place form)",
                      name, rt_dtype_name(result), rt_dtype_name(target));
    return RT_OK;
}

int rt_binary_scalar(int op, rt_tensor *a, double s, int scalar_first, rt_tensor **out) {
    *out = NULL;
    RT_TRY(check_op(op));
    if (op == RT_POW) RT_TRY(check_int_pow("pow", a, s, scalar_first));
    RT_TRY(check_bool_sub("sub", op, scalar_first ? -1 : a->meta.dtype,
                          scalar_first ? a->meta.dtype : -1));
    int dtype = scalar_result_dtype(op, a->meta.dtype, s);
    /* PyTorch compares a float tensor with a number in the tensor's dtype (the number does not
     * promote): x == 0.1 is true where x holds float32(0.1). Round the number to that dtype. */
    if (is_comparison(op) && a->meta.dtype == RT_F32)
        s = (double)(float)s;
    else if (is_comparison(op) && a->meta.dtype == RT_BF16)
        s = rt_bf16_to_f32(rt_f32_to_bf16((float)s));
    else if (is_comparison(op) && a->meta.dtype == RT_F16)
        s = rt_f16_to_f32(rt_f32_to_f16((float)s));
    /* an integer or bool tensor against a fractional number compares in float32 (the number's
     * promotion type): x == 3.0000001 is true where x holds 3. Rounding the number suffices for
     * values below 2^24, which float32 holds exactly. */
    else if (is_comparison(op) && !rt_dtype_is_float(a->meta.dtype) && s != floor(s))
        s = (double)(float)s;
    RT_TRY(rt_tensor_new(a->meta.ndim, a->meta.shape, dtype, a->meta.device, out));
    rt_kview vo = rt_kview_of(*out), va = rt_kview_of(a);
    if (a->meta.numel)
        RT_TRY(release_on_error(RT_BE_CALL(a->storage->backend, binary_scalar, "binary_scalar", op,
                                           &vo, &va, s, scalar_first),
                                out));
    if (!is_comparison(op) && rt_needs_grad1(a)) {
        rt_node *node;
        /* PyTorch's names: x - s is SubBackward0 but s - x is RsubBackward1, s ^ x PowBackward2,
         * maximum/minimum with a number are clamps. */
        static const char *const names[] = {"AddBackward",     "SubBackward", "MulBackward",
                                            "DivBackward",     "PowBackward", "ClampMinBackward",
                                            "ClampMaxBackward"};
        const char *nm = names[op];
        if (scalar_first && op == RT_SUB) nm = "RsubBackward1";
        if (scalar_first && op == RT_POW) nm = "PowBackward2";
        RT_TRY(
            release_on_error(rt_node_attach(*out, nm, binary_scalar_backward, 1, &a, &node), out));
        node->iargs[0] = op;
        node->iargs[1] = scalar_first;
        node->dargs[0] = s;
        if (scalar_grad_needs_input(op, scalar_first)) rt_node_save(node, a);
    }
    return RT_OK;
}

/* In-place writes are not recorded: they are for optimizer updates and gradient accumulation. A
 * leaf that requires grad may only be written in place under no_grad, as in PyTorch. */
static int check_inplace(int op, rt_tensor *a) {
    const char *name = k_binary_names[op];
    RT_TRY(rt_check_no_internal_overlap(k_inplace_names[op], a));
    if (rt_grad_enabled() && a->meta.requires_grad && a->meta.is_leaf)
        return RT_ERR(RT_ERR_AUTOGRAD,
                      "%s_: a leaf tensor that requires grad is being used in an in-place "
                      "operation (wrap it in no_grad)",
                      name);
    /* Not recorded, so on a tensor with a grad_fn (an op's output, or a view of a leaf) the
     * backward would silently use the wrong derivative or miss the write: refuse. */
    if (rt_grad_enabled() && a->meta.requires_grad)
        return RT_ERR(RT_ERR_AUTOGRAD,
                      "%s_: in-place operations on a tensor that requires grad (from %s) are not "
                      "recorded by autograd; use the out-of-place form (or no_grad)",
                      name, a->grad_fn ? a->grad_fn->name : "?");
    return RT_OK;
}

int rt_binary_(int op, rt_tensor *a, rt_tensor *b) {
    RT_TRY(check_op(op));
    const char *name = k_binary_names[op];
    RT_TRY(check_inplace(op, a));
    RT_TRY(rt_check_same_device(name, a, b));
    RT_TRY(rt_check_no_partial_overlap(k_inplace_names[op], a, b));
    if (is_comparison(op))
        return RT_ERR(RT_ERR_INVALID, "%s_: comparisons have no in-place form", name);
    RT_TRY(check_bool_sub(k_inplace_names[op], op, a->meta.dtype, b->meta.dtype));
    int res = rt_result_type2(a, b);
    if (op == RT_DIV && !rt_dtype_is_float(res)) res = RT_F32; /* true division */
    RT_TRY(check_inplace_cast(k_inplace_names[op], res, a->meta.dtype));
    rt_kview va = rt_kview_of(a), vb;
    int rc = rt_kview_broadcast(b, a->meta.ndim, a->meta.shape, &vb);
    if (rc < 0) {
        char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF];
        return RT_ERR(RT_ERR_SHAPE, "%s_: shape %s does not broadcast to the in-place target %s",
                      name, rt_shape_str(b1, sizeof b1, b->meta.ndim, b->meta.shape),
                      rt_shape_str(b2, sizeof b2, a->meta.ndim, a->meta.shape));
    }
    if (a->meta.numel)
        RT_TRY(RT_BE_CALL(a->storage->backend, binary, "binary_", op, &va, &va, &vb));
    rt_tensor_bump_version(a);
    return RT_OK;
}

int rt_binary_scalar_(int op, rt_tensor *a, double s) {
    RT_TRY(check_op(op));
    RT_TRY(check_inplace(op, a));
    if (is_comparison(op))
        return RT_ERR(RT_ERR_INVALID, "%s_: comparisons have no in-place form", k_binary_names[op]);
    RT_TRY(check_bool_sub(k_inplace_names[op], op, a->meta.dtype, -1));
    RT_TRY(check_inplace_cast(k_inplace_names[op], scalar_result_dtype(op, a->meta.dtype, s),
                              a->meta.dtype));
    if (op == RT_POW) RT_TRY(check_int_pow("pow_", a, s, 0));
    rt_kview va = rt_kview_of(a);
    if (a->meta.numel)
        RT_TRY(
            RT_BE_CALL(a->storage->backend, binary_scalar, "binary_scalar_", op, &va, &va, s, 0));
    rt_tensor_bump_version(a);
    return RT_OK;
}
