/* views.c: views onto shared storage (view, permute, narrow, select, expand, squeeze) and the
 * copying conversions (clone, to_dtype, to_device), each with its backward. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* ================================================================================================
 * Backward functions
 * ============================================================================================== */

/* view / reshape / squeeze / unsqueeze: the gradient takes the input's shape back. iargs[0] = the
 * input's ndim, iargs[1..] its shape. */
static int reshape_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    int64_t shape[RT_MAX_DIMS];
    int nd = (int)n->iargs[0];
    for (int i = 0; i < nd; i++)
        shape[i] = n->iargs[1 + i];
    return rt_reshape(g, nd, shape, &gi[0]);
}

static int permute_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    int nd = g->meta.ndim, inv[RT_MAX_DIMS];
    for (int i = 0; i < nd; i++)
        inv[n->iargs[i]] = i;
    return rt_permute(g, nd, inv, &gi[0]);
}

/* narrow / select: scatter the gradient into zeros of the input's shape. iargs: dim, start,
 * length (-1 for select), ndim, shape... (shape from the saved input geometry). */
static int slice_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    int dim = (int)n->iargs[0];
    int nd = (int)n->iargs[3];
    int64_t shape[RT_MAX_DIMS];
    memcpy(shape, n->ctx, sizeof(int64_t) * (size_t)nd);
    rt_tensor *z, *slot;
    RT_TRY(rt_full(nd, shape, 0.0, g->meta.dtype, g->meta.device, &z));
    int rc = n->iargs[2] < 0 ? rt_select(z, dim, n->iargs[1], &slot)
                             : rt_narrow(z, dim, n->iargs[1], n->iargs[2], &slot);
    if (rc == RT_OK) rc = rt_copy_(slot, g);
    rt_tensor_release(slot);
    if (rc < 0) {
        rt_tensor_release(z);
        return rc;
    }
    gi[0] = z;
    return RT_OK;
}

static int expand_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    int64_t shape[RT_MAX_DIMS];
    int nd = (int)n->iargs[0];
    for (int i = 0; i < nd; i++)
        shape[i] = n->iargs[1 + i];
    return rt_sum_to_shape(g, nd, shape, &gi[0]);
}

static int identity_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    (void)n;
    rt_tensor_retain(g);
    gi[0] = g;
    return RT_OK;
}

static int to_dtype_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    return rt_to_dtype(g, (int)n->iargs[0], &gi[0]);
}

static int to_device_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    return rt_to_device(g, (int)n->iargs[0], &gi[0]);
}

/* Record a node whose backward needs the input's shape in iargs[1..] (iargs[0] = ndim). */
static int attach_with_shape(rt_tensor *out, const char *name, rt_backward_fn fn, rt_tensor *in) {
    rt_node *node;
    RT_TRY(rt_node_attach(out, name, fn, 1, &in, &node));
    node->iargs[0] = in->meta.ndim;
    for (int i = 0; i < in->meta.ndim; i++)
        node->iargs[1 + i] = in->meta.shape[i];
    return RT_OK;
}

static int finish(int rc, rt_tensor **out) {
    if (rc < 0 && *out) {
        rt_tensor_release(*out);
        *out = NULL;
    }
    return rc;
}

/* ================================================================================================
 * Views
 * ============================================================================================== */

/* Can t be viewed as `shape` without copying? Computes the new strides (PyTorch's computeStride).
 */
static int view_strides(const rt_tensor *t, int ndim, const int64_t *shape, int64_t *strides) {
    if (t->meta.numel == 0 || rt_tensor_is_contiguous(t)) {
        rt_contiguous_strides(ndim, shape, strides);
        return 1;
    }
    int view_d = ndim - 1;
    int64_t chunk_base_stride = t->meta.strides[t->meta.ndim - 1];
    int64_t tensor_numel = 1, view_numel = 1;
    for (int td = t->meta.ndim - 1; td >= 0; td--) {
        tensor_numel *= t->meta.shape[td];
        if (td == 0 || (t->meta.shape[td - 1] != 1 &&
                        t->meta.strides[td - 1] != tensor_numel * chunk_base_stride)) {
            while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
                strides[view_d] = view_numel * chunk_base_stride;
                view_numel *= shape[view_d];
                view_d--;
            }
            if (view_numel != tensor_numel) return 0;
            if (td > 0) {
                chunk_base_stride = t->meta.strides[td - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    return view_d == -1;
}

static int check_numel(const char *op, const rt_tensor *t, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > RT_MAX_DIMS)
        return RT_ERR(RT_ERR_SHAPE, "%s: %d dimensions requested, at most %d supported", op, ndim,
                      RT_MAX_DIMS);
    if (rt_shape_numel(ndim, shape) != t->meta.numel) {
        char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF];
        return RT_ERR(RT_ERR_SHAPE, "%s: shape %s is invalid for input of shape %s (%lld elements)",
                      op, rt_shape_str(b1, sizeof b1, ndim, shape),
                      rt_shape_str(b2, sizeof b2, t->meta.ndim, t->meta.shape),
                      (long long)t->meta.numel);
    }
    return RT_OK;
}

/* view, reshape, squeeze and unsqueeze share this; `name` is the node PyTorch would record. */
static int view_named(rt_tensor *t, int ndim, const int64_t *shape, const char *name,
                      rt_tensor **out) {
    *out = NULL;
    RT_TRY(check_numel("view", t, ndim, shape));
    int64_t strides[RT_MAX_DIMS];
    if (!view_strides(t, ndim, shape, strides)) {
        char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF];
        return RT_ERR(RT_ERR_SHAPE,
                      "view: shape %s is incompatible with the strides of the input (shape %s); "
                      "use reshape or contiguous first",
                      rt_shape_str(b1, sizeof b1, ndim, shape),
                      rt_shape_str(b2, sizeof b2, t->meta.ndim, t->meta.shape));
    }
    RT_TRY(rt_tensor_new_view(t, ndim, shape, strides, t->meta.offset, out));
    if (rt_needs_grad1(t)) return finish(attach_with_shape(*out, name, reshape_backward, t), out);
    return RT_OK;
}

int rt_view(rt_tensor *t, int ndim, const int64_t *shape, rt_tensor **out) {
    return view_named(t, ndim, shape, "ViewBackward", out);
}

static int reshape_named(rt_tensor *t, int ndim, const int64_t *shape, const char *name,
                         rt_tensor **out) {
    *out = NULL;
    RT_TRY(check_numel("reshape", t, ndim, shape));
    int64_t strides[RT_MAX_DIMS];
    if (view_strides(t, ndim, shape, strides)) return view_named(t, ndim, shape, name, out);
    rt_tensor *c;
    RT_TRY(rt_clone(t, &c)); /* records CloneBackward when needed */
    int rc = view_named(c, ndim, shape, name, out);
    rt_tensor_release(c);
    return rc;
}

int rt_reshape(rt_tensor *t, int ndim, const int64_t *shape, rt_tensor **out) {
    return reshape_named(t, ndim, shape, "ViewBackward", out);
}

static int permute_named(rt_tensor *t, int ndim, const int *dims, const char *name,
                         rt_tensor **out) {
    *out = NULL;
    if (ndim != t->meta.ndim) {
        char b[RT_SHAPE_BUF];
        return RT_ERR(RT_ERR_SHAPE, "permute: got %d dims for a tensor of shape %s (%d dims)", ndim,
                      rt_shape_str(b, sizeof b, t->meta.ndim, t->meta.shape), t->meta.ndim);
    }
    /* zeroed: gcc -O2 cannot see that a 0-d permute reads none of them */
    int64_t shape[RT_MAX_DIMS] = {0}, strides[RT_MAX_DIMS] = {0};
    int seen[RT_MAX_DIMS] = {0}, wrapped[RT_MAX_DIMS];
    for (int i = 0; i < ndim; i++) {
        int d;
        RT_TRY(rt_wrap_dim("permute", dims[i], ndim, &d));
        if (seen[d]++) return RT_ERR(RT_ERR_INVALID, "permute: dimension %d repeated", d);
        wrapped[i] = d;
        shape[i] = t->meta.shape[d];
        strides[i] = t->meta.strides[d];
    }
    RT_TRY(rt_tensor_new_view(t, ndim, shape, strides, t->meta.offset, out));
    if (rt_needs_grad1(t)) {
        rt_node *node;
        int rc = rt_node_attach(*out, name, permute_backward, 1, &t, &node);
        if (rc < 0) return finish(rc, out);
        for (int i = 0; i < ndim; i++)
            node->iargs[i] = wrapped[i];
    }
    return RT_OK;
}

int rt_permute(rt_tensor *t, int ndim, const int *dims, rt_tensor **out) {
    return permute_named(t, ndim, dims, "PermuteBackward", out);
}

int rt_transpose(rt_tensor *t, int dim0, int dim1, rt_tensor **out) {
    *out = NULL;
    int nd = t->meta.ndim, d0, d1;
    /* a scalar accepts dims 0 and -1 (rt_wrap_dim), as in PyTorch; anything else is refused */
    RT_TRY(rt_wrap_dim("transpose", dim0, nd, &d0));
    RT_TRY(rt_wrap_dim("transpose", dim1, nd, &d1));
    if (nd == 0) return permute_named(t, 0, NULL, "TransposeBackward", out);
    int dims[RT_MAX_DIMS];
    for (int i = 0; i < nd; i++)
        dims[i] = i;
    dims[d0] = d1;
    dims[d1] = d0;
    return permute_named(t, nd, dims, "TransposeBackward", out);
}

static int slice_common(const char *op, rt_tensor *t, int dim, int64_t start, int64_t length,
                        int drop, rt_tensor **out) {
    *out = NULL;
    int d;
    if (t->meta.ndim == 0) return RT_ERR(RT_ERR_INDEX, "%s: cannot slice a 0-dim tensor", op);
    RT_TRY(rt_wrap_dim(op, dim, t->meta.ndim, &d));
    int64_t size = t->meta.shape[d];
    if (drop) {
        int64_t idx = start < 0 ? start + size : start;
        if (idx < 0 || idx >= size)
            return RT_ERR(RT_ERR_INDEX,
                          "%s: index %lld is out of range for dimension %d of size %lld", op,
                          (long long)start, d, (long long)size);
        start = idx;
        length = 1;
    } else {
        if (start < 0) start += size;
        /* length > size - start, not start + length > size: the sum can overflow int64 */
        if (start < 0 || start > size || length < 0 || length > size - start)
            return RT_ERR(RT_ERR_INDEX,
                          "%s: range start %lld length %lld is out of bounds for dimension %d of "
                          "size %lld",
                          op, (long long)start, (long long)length, d, (long long)size);
    }
    int64_t shape[RT_MAX_DIMS], strides[RT_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < t->meta.ndim; i++) {
        if (i == d && drop) continue;
        shape[nd] = i == d ? length : t->meta.shape[i];
        strides[nd] = t->meta.strides[i];
        nd++;
    }
    RT_TRY(rt_tensor_new_view(t, nd, shape, strides, t->meta.offset + start * t->meta.strides[d],
                              out));
    if (rt_needs_grad1(t)) {
        rt_node *node;
        int rc = rt_node_attach(*out, drop ? "SelectBackward" : "SliceBackward", slice_backward, 1,
                                &t, &node);
        if (rc < 0) return finish(rc, out);
        int64_t *in_shape = malloc(sizeof(int64_t) * RT_MAX_DIMS);
        if (!in_shape) return finish(RT_ERR(RT_ERR_OOM, "%s: out of host memory", op), out);
        memcpy(in_shape, t->meta.shape, sizeof(int64_t) * RT_MAX_DIMS);
        node->ctx = in_shape;
        node->ctx_free = free;
        node->iargs[0] = d;
        node->iargs[1] = start;
        node->iargs[2] = drop ? -1 : length;
        node->iargs[3] = t->meta.ndim;
    }
    return RT_OK;
}

int rt_narrow(rt_tensor *t, int dim, int64_t start, int64_t length, rt_tensor **out) {
    return slice_common("narrow", t, dim, start, length, 0, out);
}

int rt_select(rt_tensor *t, int dim, int64_t index, rt_tensor **out) {
    return slice_common("select", t, dim, index, 1, 1, out);
}

int rt_expand(rt_tensor *t, int ndim, const int64_t *shape, rt_tensor **out) {
    *out = NULL;
    if (ndim < t->meta.ndim || ndim > RT_MAX_DIMS) {
        char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF];
        return RT_ERR(RT_ERR_SHAPE, "expand: cannot expand shape %s to %s",
                      rt_shape_str(b1, sizeof b1, t->meta.ndim, t->meta.shape),
                      rt_shape_str(b2, sizeof b2, ndim, shape));
    }
    int64_t full[RT_MAX_DIMS];
    for (int i = 0; i < ndim; i++) {
        int it = i - (ndim - t->meta.ndim);
        full[i] = (shape[i] == -1 && it >= 0) ? t->meta.shape[it] : shape[i];
    }
    rt_kview v;
    int rc = rt_kview_broadcast(t, ndim, full, &v);
    if (rc < 0) {
        char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF];
        return RT_ERR(RT_ERR_SHAPE,
                      "expand: cannot expand shape %s to %s (only size-1 dims can be expanded)",
                      rt_shape_str(b1, sizeof b1, t->meta.ndim, t->meta.shape),
                      rt_shape_str(b2, sizeof b2, ndim, full));
    }
    RT_TRY(rt_tensor_new_view(t, ndim, full, v.strides, t->meta.offset, out));
    if (rt_needs_grad1(t))
        return finish(attach_with_shape(*out, "ExpandBackward", expand_backward, t), out);
    return RT_OK;
}

int rt_squeeze(rt_tensor *t, int dim, rt_tensor **out) {
    int64_t shape[RT_MAX_DIMS] = {0};
    int nd = 0;
    if (dim < -RT_MAX_DIMS - 1) {
        for (int i = 0; i < t->meta.ndim; i++)
            if (t->meta.shape[i] != 1) shape[nd++] = t->meta.shape[i];
    } else {
        int d;
        *out = NULL;
        RT_TRY(rt_wrap_dim("squeeze", dim, t->meta.ndim, &d)); /* a scalar: 0 or -1 */
        if (t->meta.ndim == 0) return view_named(t, 0, shape, "SqueezeBackward1", out);
        for (int i = 0; i < t->meta.ndim; i++)
            if (i != d || t->meta.shape[i] != 1) shape[nd++] = t->meta.shape[i];
        return reshape_named(t, nd, shape, "SqueezeBackward1", out);
    }
    return reshape_named(t, nd, shape, "SqueezeBackward", out);
}

int rt_unsqueeze(rt_tensor *t, int dim, rt_tensor **out) {
    *out = NULL;
    int d;
    if (t->meta.ndim >= RT_MAX_DIMS)
        return RT_ERR(RT_ERR_SHAPE, "unsqueeze: tensor already has %d dims (the maximum)",
                      RT_MAX_DIMS);
    /* the new dim may go anywhere in 0..ndim (so the valid range is one wider than the input's) */
    if (dim < -(t->meta.ndim + 1) || dim > t->meta.ndim)
        return RT_ERR(
            RT_ERR_INDEX,
            "unsqueeze: dimension %d out of range for a tensor of %d dims (expected %d to "
            "%d)",
            dim, t->meta.ndim, -(t->meta.ndim + 1), t->meta.ndim);
    d = dim < 0 ? dim + t->meta.ndim + 1 : dim;
    int64_t shape[RT_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i <= t->meta.ndim; i++) {
        if (i == d) shape[nd++] = 1;
        if (i < t->meta.ndim) shape[nd++] = t->meta.shape[i];
    }
    return reshape_named(t, nd, shape, "UnsqueezeBackward", out);
}

/* ================================================================================================
 * Copying conversions
 * ============================================================================================== */

static int copy_into_new(rt_tensor *t, int dtype, int device, rt_tensor **out) {
    RT_TRY(rt_tensor_new(t->meta.ndim, t->meta.shape, dtype, device, out));
    int prev = rt_set_grad_enabled(0);
    int rc = rt_copy_(*out, t);
    rt_set_grad_enabled(prev);
    return finish(rc, out);
}

int rt_clone(rt_tensor *t, rt_tensor **out) {
    *out = NULL;
    RT_TRY(copy_into_new(t, t->meta.dtype, t->meta.device, out));
    if (rt_needs_grad1(t)) {
        rt_node *node;
        return finish(rt_node_attach(*out, "CloneBackward", identity_backward, 1, &t, &node), out);
    }
    return RT_OK;
}

int rt_to_dtype(rt_tensor *t, int dtype, rt_tensor **out) {
    *out = NULL;
    if (rt_dtype_size(dtype) == 0) return RT_ERR(RT_ERR_DTYPE, "to: unknown dtype code %d", dtype);
    if (dtype == t->meta.dtype) {
        rt_tensor_retain(t);
        *out = t;
        return RT_OK;
    }
    RT_TRY(copy_into_new(t, dtype, t->meta.device, out));
    if (rt_needs_grad1(t) && rt_dtype_is_float(dtype)) {
        rt_node *node;
        RT_TRY(
            finish(rt_node_attach(*out, "ToCopyBackward", to_dtype_backward, 1, &t, &node), out));
        node->iargs[0] = t->meta.dtype;
    }
    return RT_OK;
}

int rt_to_device(rt_tensor *t, int device, rt_tensor **out) {
    *out = NULL;
    if (device == t->meta.device) {
        rt_tensor_retain(t);
        *out = t;
        return RT_OK;
    }
    if (!rt_backend_for(device)) return rt_last_error_code();
    RT_TRY(copy_into_new(t, t->meta.dtype, device, out));
    if (rt_needs_grad1(t)) {
        rt_node *node;
        RT_TRY(
            finish(rt_node_attach(*out, "ToCopyBackward", to_device_backward, 1, &t, &node), out));
        node->iargs[0] = t->meta.device;
    }
    return RT_OK;
}
