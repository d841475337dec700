/* ops_reduce.c: sum, mean, max and min over any set of dims, with keepdim and autograd. */
#include "internal.h"

static const char *const k_reduce_names[RT_NUM_REDUCE_OPS] = {"sum", "mean", "max", "min"};

/* Shape of the keepdim result; mask of reduced dims. */
static int reduced_shape(const char *op, const rt_tensor *a, int ndims, const int *dims,
                         int64_t *keep_shape, unsigned *mask) {
    *mask = 0;
    if (ndims == 0) *mask = (1u << a->meta.ndim) - 1;
    for (int i = 0; i < ndims; i++) {
        int d;
        RT_TRY(rt_wrap_dim(op, dims[i], a->meta.ndim, &d));
        if (a->meta.ndim == 0) continue;
        if (*mask & (1u << d)) return RT_ERR(RT_ERR_INVALID, "%s: dim %d appears twice", op, d);
        *mask |= 1u << d;
    }
    for (int i = 0; i < a->meta.ndim; i++)
        keep_shape[i] = (*mask & (1u << i)) ? 1 : a->meta.shape[i];
    return RT_OK;
}

/* The reduced result viewed with keepdim, for broadcasting the gradient back. */
static int keepdim_view(rt_tensor *r, const rt_tensor_meta *a, unsigned mask, rt_tensor **out) {
    int64_t shape[RT_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++)
        shape[i] = (mask & (1u << i)) ? 1 : a->shape[i];
    return rt_reshape(r, a->ndim, shape, out);
}

/* iargs[0] = op, iargs[1] = mask; saved: a for max/min only (sum and mean read its shape from
 * n->in_meta); out is never saved, which would make a cycle. */
static int reduce_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    int op = (int)n->iargs[0];
    unsigned mask = (unsigned)n->iargs[1];
    const rt_tensor_meta *am = &n->in_meta[0]; /* sum and mean need only the input's shape */
    rt_tensor *a = NULL;
    if (op == RT_MAX || op == RT_MIN) RT_TRY(rt_node_saved(n, 0, &a));
    rt_tensor *gk = NULL, *ge = NULL, *r = NULL;
    RT_TRY(keepdim_view(g, am, mask, &gk));
    int rc = rt_expand(gk, am->ndim, am->shape, &ge);
    if (rc == RT_OK) {
        if (op == RT_SUM) {
            rc = rt_contiguous(ge, &r);
        } else if (op == RT_MEAN) {
            double count = (double)am->numel / (double)(g->meta.numel ? g->meta.numel : 1);
            rc = rt_binary_scalar(RT_DIV, ge, count, 0, &r);
        } else { /* max/min: the gradient goes to the winners, split evenly between ties */
            rt_tensor *m = NULL, *mk = NULL, *eq = NULL, *cnt = NULL, *w = NULL;
            int dims[RT_MAX_DIMS], nd = 0;
            for (int i = 0; i < am->ndim; i++)
                if (mask & (1u << i)) dims[nd++] = i;
            rc = rt_reduce(op, a, nd, dims, 1, &m);
            if (rc == RT_OK) rc = rt_binary(RT_EQ, a, m, &eq);
            if (rc == RT_OK) rc = rt_to_dtype(eq, g->meta.dtype, &mk);
            if (rc == RT_OK) rc = rt_reduce(RT_SUM, mk, nd, dims, 1, &cnt);
            if (rc == RT_OK) rc = rt_binary(RT_DIV, mk, cnt, &w);
            if (rc == RT_OK) rc = rt_binary(RT_MUL, ge, w, &r);
            rt_tensor_release(m);
            rt_tensor_release(eq);
            rt_tensor_release(mk);
            rt_tensor_release(cnt);
            rt_tensor_release(w);
        }
    }
    rt_tensor_release(gk);
    rt_tensor_release(ge);
    if (rc < 0) {
        rt_tensor_release(r);
        return rc;
    }
    gi[0] = r;
    return RT_OK;
}

int rt_reduce(int op, rt_tensor *a, int ndims, const int *dims, int keepdim, rt_tensor **out) {
    *out = NULL;
    if (op < 0 || op >= RT_NUM_REDUCE_OPS)
        return RT_ERR(RT_ERR_INVALID, "reduce: unknown op code %d", op);
    const char *name = k_reduce_names[op];
    int64_t keep[RT_MAX_DIMS];
    unsigned mask;
    RT_TRY(reduced_shape(name, a, ndims, dims, keep, &mask));
    /* max/min have no identity: only a reduced dim of size 0 is an error (PyTorch's amax(1) of a
     * (0, 3) tensor is an empty (0,) result; amax(0) raises) */
    if ((op == RT_MAX || op == RT_MIN) && a->meta.numel == 0) {
        for (int i = 0; i < a->meta.ndim; i++)
            if ((mask & (1u << i)) && a->meta.shape[i] == 0) {
                char b[RT_SHAPE_BUF];
                return RT_ERR(RT_ERR_SHAPE,
                              "%s: cannot reduce an empty tensor (no identity): dim %d of the "
                              "input of shape %s has size 0",
                              name, i, rt_shape_str(b, sizeof b, a->meta.ndim, a->meta.shape));
            }
    }
    int dtype = a->meta.dtype;
    if (op == RT_SUM && !rt_dtype_is_float(dtype)) dtype = RT_I64; /* PyTorch sums ints as i64 */
    if (op == RT_MEAN && !rt_dtype_is_float(dtype))
        return RT_ERR(RT_ERR_DTYPE,
                      "mean: expected a floating-point tensor, got %s (convert first)",
                      rt_dtype_name(dtype));
    rt_tensor *k;
    RT_TRY(rt_tensor_new(a->meta.ndim, keep, dtype, a->meta.device, &k));
    rt_kview vo = rt_kview_of(k), va = rt_kview_of(a);
    int rc = RT_BE_CALL(a->storage->backend, reduce, "reduce", op, &vo, &va);
    if (rc < 0) {
        rt_tensor_release(k);
        return rc;
    }
    if (keepdim) {
        *out = k;
    } else {
        int64_t shape[RT_MAX_DIMS];
        int nd = 0;
        for (int i = 0; i < a->meta.ndim; i++)
            if (!(mask & (1u << i))) shape[nd++] = a->meta.shape[i];
        int64_t strides[RT_MAX_DIMS];
        rt_contiguous_strides(nd, shape, strides);
        rc = rt_tensor_new_view(k, nd, shape, strides, 0, out);
        rt_tensor_release(k);
        RT_TRY(rc);
    }
    if (rt_needs_grad1(a)) {
        rt_node *node;
        /* PyTorch's names: the full reduction and the one over dims are different overloads
         * (sum() SumBackward0, sum(dim) SumBackward1; max() MaxBackward1, amax(dim) AmaxBackward0)
         */
        static const char *const all_names[] = {"SumBackward", "MeanBackward", "MaxBackward1",
                                                "MinBackward1"};
        static const char *const dim_names[] = {"SumBackward1", "MeanBackward1", "AmaxBackward",
                                                "AminBackward"};
        rc = rt_node_attach(*out, ndims == 0 ? all_names[op] : dim_names[op], reduce_backward, 1,
                            &a, &node);
        if (rc < 0) {
            rt_tensor_release(*out);
            *out = NULL;
            return rc;
        }
        node->iargs[0] = op;
        node->iargs[1] = mask;
        if (op == RT_MAX || op == RT_MIN) rt_node_save(node, a);
    }
    return RT_OK;
}
