/* ops_join.c: cat and stack, with autograd.
 *
 * cat copies each input into its slice of the output through the backend's copy entry (which
 * converts dtypes, so inputs are promoted like PyTorch); the backward hands each input the
 * matching narrow of the gradient (converted back to its dtype). stack is cat of the inputs each
 * unsqueezed at dim. As in PyTorch, 1-d empty tensors (shape [0]) are skipped by cat. */
#include "internal.h"

#include <stdlib.h>

/* per input: start and length along dim, dtype; -1 length for a skipped input */
typedef struct cat_ctx {
    int n;
    int64_t *start, *len;
    int *dtype;
} cat_ctx;

static void cat_ctx_free(void *p) {
    cat_ctx *c = p;
    if (!c) return;
    free(c->start);
    free(c->len);
    free(c->dtype);
    free(c);
}

static bool is_skipped(const rt_tensor *t) {
    return t->meta.ndim == 1 && t->meta.numel == 0;
}

/* iargs[0] = dim; ctx: cat_ctx */
static int cat_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    cat_ctx *c = n->ctx;
    int dim = (int)n->iargs[0];
    for (int i = 0; i < c->n; i++) {
        rt_edge *e = i < RT_NODE_MAX_INPUTS ? &n->inputs[i] : &n->extra[i - RT_NODE_MAX_INPUTS];
        if ((!e->node && !e->leaf) || c->len[i] < 0) continue;
        rt_tensor *v = NULL;
        RT_TRY(rt_narrow(g, dim, c->start[i], c->len[i], &v));
        if (v->meta.dtype == c->dtype[i]) {
            gi[i] = v;
            continue;
        }
        int rc = rt_to_dtype(v, c->dtype[i], &gi[i]);
        rt_tensor_release(v);
        RT_TRY(rc);
    }
    return RT_OK;
}

int rt_cat(int n, rt_tensor *const *tensors, int dim, rt_tensor **out) {
    *out = NULL;
    char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF];
    if (n < 1)
        return RT_ERR(RT_ERR_INVALID, "cat: expected a non-empty list of tensors, got %d", n);
    const rt_tensor *ref = NULL;
    int dtype = -1, ref_i = 0;
    for (int i = 0; i < n; i++) {
        if (!tensors[i]) return RT_ERR(RT_ERR_INVALID, "cat: tensor at position %d is NULL", i);
        if (tensors[i]->meta.ndim == 0)
            return RT_ERR(RT_ERR_SHAPE,
                          "cat: zero-dimensional tensor (at position %d) cannot be concatenated",
                          i);
        RT_TRY(rt_check_same_device("cat", tensors[0], tensors[i]));
        if (!is_skipped(tensors[i]) && !ref) {
            ref = tensors[i];
            ref_i = i;
        }
        dtype =
            dtype < 0 ? tensors[i]->meta.dtype : rt_promote_types(dtype, tensors[i]->meta.dtype);
    }
    if (!ref) ref = tensors[0]; /* all empty 1-d: the result is empty 1-d */
    int nd = ref->meta.ndim, d;
    RT_TRY(rt_wrap_dim("cat", dim, nd, &d));
    int64_t shape[RT_MAX_DIMS];
    for (int i = 0; i < nd; i++)
        shape[i] = ref->meta.shape[i];
    shape[d] = 0;
    for (int i = 0; i < n; i++) {
        const rt_tensor *t = tensors[i];
        if (is_skipped(t) && t != ref) continue;
        if (t->meta.ndim != nd)
            return RT_ERR(RT_ERR_SHAPE,
                          "cat: tensors must have the same number of dims: got %s at position %d "
                          "and %s at position %d",
                          rt_shape_str(b1, sizeof b1, nd, ref->meta.shape), ref_i,
                          rt_shape_str(b2, sizeof b2, t->meta.ndim, t->meta.shape), i);
        for (int k = 0; k < nd; k++)
            if (k != d && t->meta.shape[k] != ref->meta.shape[k])
                return RT_ERR(RT_ERR_SHAPE,
                              "cat: sizes of tensors must match except in dim %d: expected size "
                              "%lld but got size %lld in dim %d for the tensor at position %d "
                              "(shapes %s and %s)",
                              d, (long long)ref->meta.shape[k], (long long)t->meta.shape[k], k, i,
                              rt_shape_str(b1, sizeof b1, nd, ref->meta.shape),
                              rt_shape_str(b2, sizeof b2, nd, t->meta.shape));
        shape[d] += t->meta.shape[d];
    }
    cat_ctx *c = calloc(1, sizeof *c);
    if (c) {
        c->n = n;
        c->start = calloc((size_t)n, sizeof(int64_t));
        c->len = calloc((size_t)n, sizeof(int64_t));
        c->dtype = calloc((size_t)n, sizeof(int));
    }
    if (!c || !c->start || !c->len || !c->dtype) {
        cat_ctx_free(c);
        return RT_ERR(RT_ERR_OOM, "cat: out of host memory for %d inputs", n);
    }
    int rc = rt_tensor_new(nd, shape, dtype, ref->meta.device, out);
    int64_t off = 0;
    const rt_backend *be = ref->storage->backend;
    size_t es = rt_dtype_size(dtype);
    for (int i = 0; i < n && rc == RT_OK; i++) {
        rt_tensor *t = tensors[i];
        c->dtype[i] = t->meta.dtype;
        if (is_skipped(t) && t != ref) {
            c->len[i] = -1;
            continue;
        }
        int64_t len = t->meta.shape[d];
        c->start[i] = off;
        c->len[i] = len;
        if (len > 0 && t->meta.numel > 0) {
            rt_kview dst = rt_kview_of(*out), src = rt_kview_of(t);
            dst.data += off * dst.strides[d] * (int64_t)es;
            dst.shape[d] = len;
            dst.numel = t->meta.numel;
            rc = RT_BE_CALL(be, copy, "cat", &dst, &src);
        }
        off += len;
    }
    if (rc == RT_OK) {
        bool any = false;
        for (int i = 0; i < n; i++)
            any = any || tensors[i]->meta.requires_grad;
        if (any && rt_grad_enabled()) {
            rt_node *node;
            rc = rt_node_attach(*out, "CatBackward", cat_backward, n, tensors, &node);
            if (rc == RT_OK) {
                node->iargs[0] = d;
                node->ctx = c;
                node->ctx_free = cat_ctx_free;
                c = NULL;
            }
        }
    }
    cat_ctx_free(c);
    if (rc < 0) {
        rt_tensor_release(*out);
        *out = NULL;
    }
    return rc;
}

int rt_stack(int n, rt_tensor *const *tensors, int dim, rt_tensor **out) {
    *out = NULL;
    char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF];
    if (n < 1)
        return RT_ERR(RT_ERR_INVALID, "stack: expected a non-empty list of tensors, got %d", n);
    for (int i = 0; i < n; i++)
        if (!tensors[i]) return RT_ERR(RT_ERR_INVALID, "stack: tensor at position %d is NULL", i);
    const rt_tensor *t0 = tensors[0];
    for (int i = 1; i < n; i++)
        if (!rt_same_shape(t0, tensors[i]))
            return RT_ERR(
                RT_ERR_SHAPE,
                "stack: expected each tensor to be equal size, but got %s at entry 0 and "
                "%s at entry %d",
                rt_shape_str(b1, sizeof b1, t0->meta.ndim, t0->meta.shape),
                rt_shape_str(b2, sizeof b2, tensors[i]->meta.ndim, tensors[i]->meta.shape), i);
    if (t0->meta.ndim >= RT_MAX_DIMS)
        return RT_ERR(RT_ERR_SHAPE, "stack: inputs have %d dims; the result would exceed %d",
                      t0->meta.ndim, RT_MAX_DIMS);
    int d;
    RT_TRY(rt_wrap_dim("stack", dim, t0->meta.ndim + 1, &d));
    rt_tensor **u = calloc((size_t)n, sizeof *u);
    if (!u) return RT_ERR(RT_ERR_OOM, "stack: out of host memory for %d inputs", n);
    int rc = RT_OK;
    for (int i = 0; i < n && rc == RT_OK; i++)
        rc = rt_unsqueeze(tensors[i], d, &u[i]);
    if (rc == RT_OK) rc = rt_cat(n, u, d, out);
    for (int i = 0; i < n; i++)
        rt_tensor_release(u[i]);
    free(u);
    return rc;
}
