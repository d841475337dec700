/* ops_nn.c: embedding, layer_norm and dropout, with autograd.
 *
 * embedding saves only the indices (the weight's gradient is a scatter-add of the output gradient,
 * accumulated in f32 for bf16/f16 weights and rounded once). layer_norm saves the contiguous input
 * and the per-row mean and rstd its fused kernel wrote. dropout saves nothing: the mask is a pure
 * function of the generator's (seed, offset) reserved by the forward, and the backward reruns the
 * same kernel on the gradient. */
#include "internal.h"

static int compute_dtype(int dtype) {
    return dtype == RT_F64 ? RT_F64 : RT_F32;
}

/* Kernel views of a contiguous tensor reshaped to (m, n) or (n). */
static rt_kview kview2d(const rt_tensor *t, int64_t m, int64_t n) {
    rt_kview v = rt_kview_of(t);
    v.ndim = 2;
    v.shape[0] = m, v.shape[1] = n;
    v.strides[0] = n, v.strides[1] = 1;
    return v;
}
static rt_kview kview1d(const rt_tensor *t) {
    rt_kview v = rt_kview_of(t);
    v.ndim = 1;
    v.shape[0] = t->meta.numel;
    v.strides[0] = 1;
    return v;
}

/* ================================================================================================
 * embedding
 * ============================================================================================== */

/* iargs: [0] V, [1] D, [2] weight dtype; saved: indices (contiguous). */
static int embedding_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    rt_tensor *idx, *gw = NULL, *gc = NULL;
    RT_TRY(rt_node_saved(n, 0, &idx));
    int64_t V = n->iargs[0], D = n->iargs[1];
    int wdt = (int)n->iargs[2];
    int64_t shape[2] = {V, D};
    int rc = rt_full(2, shape, 0.0, compute_dtype(wdt), g->meta.device, &gw);
    if (rc == RT_OK) rc = rt_contiguous(g, &gc);
    if (rc == RT_OK && idx->meta.numel) {
        rt_kview vw = rt_kview_of(gw), vg = kview2d(gc, idx->meta.numel, D), vi = kview1d(idx);
        const rt_backend *be = g->storage->backend;
        rc = RT_BE_CALL(be, embedding_backward, "embedding backward", &vw, &vg, &vi);
    }
    if (rc == RT_OK) rc = rt_to_dtype(gw, wdt, &gi[0]);
    rt_tensor_release(gw);
    rt_tensor_release(gc);
    return rc;
}

int rt_embedding(rt_tensor *weight, rt_tensor *indices, rt_tensor **out) {
    *out = NULL;
    char b1[RT_SHAPE_BUF];
    if (weight->meta.ndim != 2)
        return RT_ERR(RT_ERR_SHAPE,
                      "embedding: weight must be 2-d (num_embeddings, embedding_dim), got %s",
                      rt_shape_str(b1, sizeof b1, weight->meta.ndim, weight->meta.shape));
    if (indices->meta.dtype != RT_I64 && indices->meta.dtype != RT_I32)
        return RT_ERR(RT_ERR_DTYPE,
                      "embedding: expected indices of dtype int64 or int32, got %s (convert with "
                      ":long())",
                      rt_dtype_name(indices->meta.dtype));
    RT_TRY(rt_check_same_device("embedding", weight, indices));
    if (indices->meta.ndim >= RT_MAX_DIMS)
        return RT_ERR(RT_ERR_SHAPE, "embedding: indices have %d dims; the result would exceed %d",
                      indices->meta.ndim, RT_MAX_DIMS);
    int64_t D = weight->meta.shape[1], shape[RT_MAX_DIMS];
    int nd = indices->meta.ndim;
    for (int i = 0; i < nd; i++)
        shape[i] = indices->meta.shape[i];
    shape[nd] = D;
    rt_tensor *idx = NULL;
    RT_TRY(rt_contiguous(indices, &idx));
    int rc = rt_tensor_new(nd + 1, shape, weight->meta.dtype, weight->meta.device, out);
    if (rc == RT_OK && idx->meta.numel) {
        rt_kview vo = kview2d(*out, idx->meta.numel, D), vw = rt_kview_of(weight),
                 vi = kview1d(idx);
        const rt_backend *be = weight->storage->backend;
        rc = RT_BE_CALL(be, embedding, "embedding", &vo, &vw, &vi);
    }
    if (rc == RT_OK && rt_needs_grad1(weight)) {
        rt_node *node;
        rc = rt_node_attach(*out, "EmbeddingBackward", embedding_backward, 1, &weight, &node);
        if (rc == RT_OK) {
            node->iargs[0] = weight->meta.shape[0];
            node->iargs[1] = D;
            node->iargs[2] = weight->meta.dtype;
            rt_node_save(node, idx);
        }
    }
    rt_tensor_release(idx);
    if (rc < 0) {
        rt_tensor_release(*out);
        *out = NULL;
    }
    return rc;
}

/* ================================================================================================
 * layer_norm
 * ============================================================================================== */

/* iargs: [0] M, [1] N, [2] nnorm, [3] weight dtype, [4] bias dtype; saved: x (contiguous), mean,
 * rstd, weight (contiguous or NULL). */
static int layer_norm_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    rt_tensor *x, *mean, *rstd, *w, *gc = NULL;
    RT_TRY(rt_node_saved(n, 0, &x));
    RT_TRY(rt_node_saved(n, 1, &mean));
    RT_TRY(rt_node_saved(n, 2, &rstd));
    RT_TRY(rt_node_saved(n, 3, &w));
    int64_t M = n->iargs[0], N = n->iargs[1];
    int rc = rt_contiguous(g, &gc);
    if (rc == RT_OK && n->input_needs_grad[0])
        rc = rt_tensor_new(x->meta.ndim, x->meta.shape, x->meta.dtype, x->meta.device, &gi[0]);
    /* weight and bias have the normalized shape: x's last nnorm dims */
    int nnorm = (int)n->iargs[2];
    const int64_t *ps = x->meta.shape + (x->meta.ndim - nnorm);
    if (rc == RT_OK && n->input_needs_grad[1])
        rc = rt_tensor_new(nnorm, ps, (int)n->iargs[3], x->meta.device, &gi[1]);
    if (rc == RT_OK && n->input_needs_grad[2])
        rc = rt_tensor_new(nnorm, ps, (int)n->iargs[4], x->meta.device, &gi[2]);
    if (rc == RT_OK && M * N > 0) {
        rt_kview vgx, vgw, vgb, vg = kview2d(gc, M, N), vx = kview2d(x, M, N), vm = kview1d(mean),
                                vr = kview1d(rstd), vw;
        if (gi[0]) vgx = kview2d(gi[0], M, N);
        if (gi[1]) vgw = kview1d(gi[1]);
        if (gi[2]) vgb = kview1d(gi[2]);
        if (w) vw = kview1d(w);
        const rt_backend *be = x->storage->backend;
        rc = RT_BE_CALL(be, layer_norm_backward, "layer_norm backward", gi[0] ? &vgx : NULL,
                        gi[1] ? &vgw : NULL, gi[2] ? &vgb : NULL, &vg, &vx, &vm, &vr,
                        w ? &vw : NULL);
    } else if (rc == RT_OK) { /* empty input: zero gradients for the parameters */
        for (int i = 1; i < 3 && rc == RT_OK; i++)
            if (gi[i]) rc = rt_fill_(gi[i], 0.0);
    }
    rt_tensor_release(gc);
    if (rc < 0)
        for (int i = 0; i < 3; i++) {
            rt_tensor_release(gi[i]);
            gi[i] = NULL;
        }
    return rc;
}

static int check_norm_param(const char *what, const rt_tensor *p, const rt_tensor *x, int nnorm) {
    char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF], b3[RT_SHAPE_BUF];
    const int64_t *ns = x->meta.shape + (x->meta.ndim - nnorm);
    bool ok = p->meta.ndim == nnorm;
    for (int i = 0; ok && i < nnorm; i++)
        ok = p->meta.shape[i] == ns[i];
    if (!ok)
        return RT_ERR(RT_ERR_SHAPE,
                      "layer_norm: %s of shape %s does not match normalized_shape %s (the last %d "
                      "dims of input %s)",
                      what, rt_shape_str(b1, sizeof b1, p->meta.ndim, p->meta.shape),
                      rt_shape_str(b2, sizeof b2, nnorm, ns), nnorm,
                      rt_shape_str(b3, sizeof b3, x->meta.ndim, x->meta.shape));
    if (!rt_dtype_is_float(p->meta.dtype))
        return RT_ERR(RT_ERR_DTYPE, "layer_norm: expected a floating-point %s, got %s", what,
                      rt_dtype_name(p->meta.dtype));
    return rt_check_same_device("layer_norm", x, p);
}

int rt_layer_norm(rt_tensor *x, int nnorm, rt_tensor *weight, rt_tensor *bias, double eps,
                  rt_tensor **out) {
    *out = NULL;
    char b1[RT_SHAPE_BUF];
    if (!rt_dtype_is_float(x->meta.dtype))
        return RT_ERR(RT_ERR_DTYPE, "layer_norm: expected a floating-point input, got %s",
                      rt_dtype_name(x->meta.dtype));
    if (nnorm < 1 || nnorm > x->meta.ndim)
        return RT_ERR(
            RT_ERR_SHAPE,
            "layer_norm: normalized_shape must cover 1..%d trailing dims of input %s, got "
            "%d dims",
            x->meta.ndim, rt_shape_str(b1, sizeof b1, x->meta.ndim, x->meta.shape), nnorm);
    if (!(eps >= 0)) return RT_ERR(RT_ERR_INVALID, "layer_norm: eps must be >= 0, got %g", eps);
    if (weight) RT_TRY(check_norm_param("weight", weight, x, nnorm));
    if (bias) RT_TRY(check_norm_param("bias", bias, x, nnorm));
    int64_t N = rt_shape_numel(nnorm, x->meta.shape + (x->meta.ndim - nnorm));
    int64_t M = N ? x->meta.numel / N : 0;
    int cdt = compute_dtype(x->meta.dtype);
    rt_tensor *xc = NULL, *wc = NULL, *bc = NULL, *mean = NULL, *rstd = NULL;
    int rc = rt_contiguous(x, &xc);
    if (rc == RT_OK && weight) rc = rt_contiguous(weight, &wc);
    if (rc == RT_OK && bias) rc = rt_contiguous(bias, &bc);
    if (rc == RT_OK) rc = rt_tensor_new(1, &M, cdt, x->meta.device, &mean);
    if (rc == RT_OK) rc = rt_tensor_new(1, &M, cdt, x->meta.device, &rstd);
    if (rc == RT_OK)
        rc = rt_tensor_new(x->meta.ndim, x->meta.shape, x->meta.dtype, x->meta.device, out);
    if (rc == RT_OK && M * N > 0) {
        rt_kview vo = kview2d(*out, M, N), vm = kview1d(mean), vr = kview1d(rstd),
                 vx = kview2d(xc, M, N), vw, vb;
        if (wc) vw = kview1d(wc);
        if (bc) vb = kview1d(bc);
        const rt_backend *be = x->storage->backend;
        rc = RT_BE_CALL(be, layer_norm, "layer_norm", &vo, &vm, &vr, &vx, wc ? &vw : NULL,
                        bc ? &vb : NULL, eps);
    }
    if (rc == RT_OK && rt_needs_grad3(x, weight, bias)) {
        rt_node *node;
        rt_tensor *inputs[3] = {x, weight, bias};
        rc = rt_node_attach(*out, "NativeLayerNormBackward", layer_norm_backward, 3, inputs, &node);
        if (rc == RT_OK) {
            node->iargs[0] = M;
            node->iargs[1] = N;
            node->iargs[2] = nnorm;
            node->iargs[3] = weight ? weight->meta.dtype : x->meta.dtype;
            node->iargs[4] = bias ? bias->meta.dtype : x->meta.dtype;
            rt_node_save(node, xc);
            rt_node_save(node, mean);
            rt_node_save(node, rstd);
            rt_node_save(node, wc);
        }
    }
    rt_tensor_release(xc);
    rt_tensor_release(wc);
    rt_tensor_release(bc);
    rt_tensor_release(mean);
    rt_tensor_release(rstd);
    if (rc < 0) {
        rt_tensor_release(*out);
        *out = NULL;
    }
    return rc;
}

/* ================================================================================================
 * dropout
 * ============================================================================================== */

/* iargs: [0] seed, [1] offset (the generator state the forward reserved); dargs[0] p. */
static int dropout_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    RT_TRY(rt_tensor_new(g->meta.ndim, g->meta.shape, g->meta.dtype, g->meta.device, &gi[0]));
    rt_kview vi = rt_kview_of(gi[0]), vg = rt_kview_of(g);
    const rt_backend *be = g->storage->backend;
    int rc = g->meta.numel ? RT_BE_CALL(be, dropout, "dropout backward", &vi, &vg, n->dargs[0],
                                        (uint64_t)n->iargs[0], (uint64_t)n->iargs[1])
                           : RT_OK;
    if (rc < 0) {
        rt_tensor_release(gi[0]);
        gi[0] = NULL;
    }
    return rc;
}

int rt_dropout(rt_tensor *x, double p, int training, rt_tensor **out) {
    *out = NULL;
    if (!(p >= 0.0 && p <= 1.0))
        return RT_ERR(RT_ERR_INVALID, "dropout: probability has to be between 0 and 1, but got %g",
                      p);
    if (!rt_dtype_is_float(x->meta.dtype))
        return RT_ERR(RT_ERR_DTYPE, "dropout: expected a floating-point tensor, got %s",
                      rt_dtype_name(x->meta.dtype));
    if (!training || p == 0.0) { /* the identity, as PyTorch returns the input itself */
        rt_tensor_retain(x);
        *out = x;
        return RT_OK;
    }
    if (p == 1.0) return rt_binary_scalar(RT_MUL, x, 0.0, 0, out); /* PyTorch: input * 0 */
    uint64_t seed = rt_rng_seed(), offset = rt_rng_reserve(((uint64_t)x->meta.numel + 3) / 4);
    RT_TRY(rt_tensor_new(x->meta.ndim, x->meta.shape, x->meta.dtype, x->meta.device, out));
    rt_kview vo = rt_kview_of(*out), vx = rt_kview_of(x);
    const rt_backend *be = x->storage->backend;
    int rc = x->meta.numel ? RT_BE_CALL(be, dropout, "dropout", &vo, &vx, p, seed, offset) : RT_OK;
    if (rc == RT_OK && rt_needs_grad1(x)) {
        rt_node *node;
        rc = rt_node_attach(*out, "NativeDropoutBackward", dropout_backward, 1, &x, &node);
        if (rc == RT_OK) {
            node->iargs[0] = (int64_t)seed;
            node->iargs[1] = (int64_t)offset;
            node->dargs[0] = p;
        }
    }
    if (rc < 0) {
        rt_tensor_release(*out);
        *out = NULL;
    }
    return rc;
}
