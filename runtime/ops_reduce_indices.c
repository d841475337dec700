/* ops_reduce_indices.c: max/min along one dim with the i64 indices of the winners, argmax and
 * argmin (along a dim, or over the flattened tensor), with autograd for the values: the gradient
 * goes to the winning position only (PyTorch's max(dim) backward), built from arange == index and
 * where, so every backend that has those ops has this backward too. */
#include "internal.h"

#include <limits.h>

/* iargs: [0] dim, [1] ndim of the input (1 for a scalar), [2..9] its shape, [10] its true ndim;
 * saved: indices in keepdim form. */
static int max_dim_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    rt_tensor *idx;
    RT_TRY(rt_node_saved(n, 0, &idx));
    int dim = (int)n->iargs[0], nd = (int)n->iargs[1];
    int64_t shape[RT_MAX_DIMS], kshape[RT_MAX_DIMS], ashape[RT_MAX_DIMS];
    for (int i = 0; i < nd; i++) {
        shape[i] = n->iargs[2 + i];
        kshape[i] = i == dim ? 1 : shape[i];
        ashape[i] = i == dim ? shape[i] : 1;
    }
    rt_tensor *gk = NULL, *ar = NULL, *ar2 = NULL, *mask = NULL, *zero = NULL;
    int rc = rt_reshape(g, nd, kshape, &gk);
    if (rc == RT_OK) rc = rt_arange(0, (double)shape[dim], 1, RT_I64, g->meta.device, &ar);
    if (rc == RT_OK) rc = rt_reshape(ar, nd, ashape, &ar2);
    if (rc == RT_OK) rc = rt_binary(RT_EQ, ar2, idx, &mask); /* (shape): the winners */
    if (rc == RT_OK) rc = rt_full(0, NULL, 0.0, g->meta.dtype, g->meta.device, &zero);
    rt_tensor *r = NULL;
    if (rc == RT_OK) rc = rt_where(mask, gk, zero, &r);
    if (rc == RT_OK && n->iargs[10] == 0) { /* the input was a scalar */
        rc = rt_reshape(r, 0, NULL, &gi[0]);
        rt_tensor_release(r);
    } else if (rc == RT_OK) {
        gi[0] = r;
    }
    rt_tensor_release(gk);
    rt_tensor_release(ar);
    rt_tensor_release(ar2);
    rt_tensor_release(mask);
    rt_tensor_release(zero);
    return rc;
}

/* Drop dim d from t (a keepdim result) as a view. */
static int squeeze_dim_view(rt_tensor *t, int d, rt_tensor **out) {
    int64_t shape[RT_MAX_DIMS], strides[RT_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < t->meta.ndim; i++)
        if (i != d) {
            shape[nd] = t->meta.shape[i];
            strides[nd++] = t->meta.strides[i];
        }
    return rt_tensor_new_view(t, nd, shape, strides, t->meta.offset, out);
}

static int reduce_indices(const char *name, int op, rt_tensor *a, int dim, int keepdim,
                          bool want_values, rt_tensor **values, rt_tensor **indices) {
    if (values) *values = NULL;
    *indices = NULL;
    if (op != RT_MAX && op != RT_MIN)
        return RT_ERR(RT_ERR_INVALID, "%s: op must be max (%d) or min (%d), got %d", name, RT_MAX,
                      RT_MIN, op);
    int nd = a->meta.ndim, d;
    RT_TRY(rt_wrap_dim(name, dim, nd > 0 ? nd : 1, &d));
    int64_t n = nd > 0 ? a->meta.shape[d] : 1;
    if (n == 0) {
        char b[RT_SHAPE_BUF];
        return RT_ERR(RT_ERR_SHAPE,
                      "%s: cannot reduce over dim %d of size 0 (input of shape %s has no identity "
                      "for max/min)",
                      name, d, rt_shape_str(b, sizeof b, nd, a->meta.shape));
    }
    int64_t kshape[RT_MAX_DIMS];
    for (int i = 0; i < nd; i++)
        kshape[i] = i == d ? 1 : a->meta.shape[i];
    rt_tensor *kv = NULL, *ki = NULL;
    int rc = RT_OK;
    if (want_values) rc = rt_tensor_new(nd, kshape, a->meta.dtype, a->meta.device, &kv);
    if (rc == RT_OK) rc = rt_tensor_new(nd, kshape, RT_I64, a->meta.device, &ki);
    if (rc == RT_OK && a->meta.numel) {
        rt_kview va = rt_kview_of(a), vv = kv ? rt_kview_of(kv) : va, vi = rt_kview_of(ki);
        if (nd == 0) va.ndim = vv.ndim = vi.ndim = 1; /* a scalar as shape [1] */
        const rt_backend *be = a->storage->backend;
        rc = RT_BE_CALL(be, reduce_with_indices, name, op, kv ? &vv : NULL, &vi, &va, d);
    }
    rt_tensor *rv = NULL, *ri = NULL;
    if (rc == RT_OK && !keepdim && nd > 0) {
        if (kv) rc = squeeze_dim_view(kv, d, &rv);
        if (rc == RT_OK) rc = squeeze_dim_view(ki, d, &ri);
    } else if (rc == RT_OK) {
        rv = kv;
        ri = ki;
        rt_tensor_retain(rv);
        rt_tensor_retain(ri);
    }
    if (rc == RT_OK && want_values && rt_needs_grad1(a)) {
        rt_node *node;
        static const char *const names[] = {"MaxBackward", "MinBackward"};
        rc = rt_node_attach(rv, names[op == RT_MIN], max_dim_backward, 1, &a, &node);
        if (rc == RT_OK) {
            node->iargs[0] = d;
            node->iargs[1] = nd > 0 ? nd : 1;
            node->iargs[10] = nd;
            for (int i = 0; i < (nd > 0 ? nd : 1); i++)
                node->iargs[2 + i] = nd > 0 ? a->meta.shape[i] : 1;
            rt_tensor *ks = ki;
            if (nd == 0) rc = rt_reshape(ki, 1, &n, &ks); /* keepdim form of a scalar: [1] */
            if (rc == RT_OK) rt_node_save(node, ks);
            if (ks != ki) rt_tensor_release(ks);
        }
    }
    rt_tensor_release(kv);
    rt_tensor_release(ki);
    if (rc < 0) {
        rt_tensor_release(rv);
        rt_tensor_release(ri);
        return rc;
    }
    if (values)
        *values = rv;
    else
        rt_tensor_release(rv);
    *indices = ri;
    return RT_OK;
}

int rt_reduce_dim_with_indices(int op, rt_tensor *a, int dim, int keepdim, rt_tensor **values,
                               rt_tensor **indices) {
    return reduce_indices(op == RT_MIN ? "min" : "max", op, a, dim, keepdim, true, values, indices);
}

static int arg_common(const char *name, int op, rt_tensor *a, int dim, int keepdim,
                      rt_tensor **out) {
    *out = NULL;
    if (dim != INT32_MIN) return reduce_indices(name, op, a, dim, keepdim, false, NULL, out);
    /* flattened */
    if (a->meta.numel == 0)
        return RT_ERR(RT_ERR_SHAPE, "%s: cannot take the %s of an empty tensor (no dim given)",
                      name, name);
    rt_tensor *flat = NULL, *r = NULL;
    int64_t numel = a->meta.numel;
    int prev = rt_set_grad_enabled(0);
    int rc = rt_reshape(a, 1, &numel, &flat);
    rt_set_grad_enabled(prev);
    if (rc == RT_OK) rc = reduce_indices(name, op, flat, 0, 0, false, NULL, &r);
    rt_tensor_release(flat);
    RT_TRY(rc);
    if (!keepdim) {
        *out = r;
        return RT_OK;
    }
    int64_t ones[RT_MAX_DIMS];
    for (int i = 0; i < a->meta.ndim; i++)
        ones[i] = 1;
    rc = rt_reshape(r, a->meta.ndim, ones, out);
    rt_tensor_release(r);
    return rc;
}

int rt_argmax(rt_tensor *a, int dim, int keepdim, rt_tensor **out) {
    return arg_common("argmax", RT_MAX, a, dim, keepdim, out);
}

int rt_argmin(rt_tensor *a, int dim, int keepdim, rt_tensor **out) {
    return arg_common("argmin", RT_MIN, a, dim, keepdim, out);
}
