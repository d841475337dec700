/* ops_attention.c: the transformer ops with autograd: rms_norm, rope (rotary position embedding)
 * and scaled_dot_product_attention.
 *
 * rms_norm saves the contiguous input, the per-row rstd its kernel wrote and the weight. rope saves
 * nothing: its backward is the inverse rotation of the gradient. Attention saves q, k, v and a
 * second header on its output (as softmax does, to avoid an output -> node -> output cycle), and
 * keeps the per-row log-sum-exp and the mask in the node's ctx (a node has four saved slots); the
 * backward recomputes the probabilities from the log-sum-exp as flash attention does, so memory
 * stays O(T) per head instead of O(T x S). Dropout reserves counters of the global generator in the
 * forward and the backward regenerates the same mask from them. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>

static int compute_dtype(int dtype) {
    return dtype == RT_F64 ? RT_F64 : RT_F32;
}

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
 * rms_norm
 * ============================================================================================== */

/* iargs: [0] M, [1] N, [2] nnorm, [3] weight dtype; saved: x (contiguous), rstd, weight. */
static int rms_norm_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    rt_tensor *x, *rstd, *w, *gc = NULL;
    RT_TRY(rt_node_saved(n, 0, &x));
    RT_TRY(rt_node_saved(n, 1, &rstd));
    RT_TRY(rt_node_saved(n, 2, &w));
    int64_t M = n->iargs[0], N = n->iargs[1];
    int nnorm = (int)n->iargs[2];
    int rc = rt_contiguous(g, &gc);
    if (rc == RT_OK && n->input_needs_grad[0])
        rc = rt_tensor_new(x->meta.ndim, x->meta.shape, x->meta.dtype, x->meta.device, &gi[0]);
    if (rc == RT_OK && n->input_needs_grad[1])
        rc = rt_tensor_new(nnorm, x->meta.shape + (x->meta.ndim - nnorm), (int)n->iargs[3],
                           x->meta.device, &gi[1]);
    if (rc == RT_OK && M * N > 0) {
        rt_kview vgx, vgw, vw, vg = kview2d(gc, M, N), vx = kview2d(x, M, N), vr = kview1d(rstd);
        if (gi[0]) vgx = kview2d(gi[0], M, N);
        if (gi[1]) vgw = kview1d(gi[1]);
        if (w) vw = kview1d(w);
        rc = RT_BE_CALL(x->storage->backend, rms_norm_backward, "rms_norm backward",
                        gi[0] ? &vgx : NULL, gi[1] ? &vgw : NULL, &vg, &vx, &vr, w ? &vw : NULL);
    } else if (rc == RT_OK && gi[1]) {
        rc = rt_fill_(gi[1], 0.0);
    }
    rt_tensor_release(gc);
    if (rc < 0)
        for (int i = 0; i < 2; i++) {
            rt_tensor_release(gi[i]);
            gi[i] = NULL;
        }
    return rc;
}

int rt_rms_norm(rt_tensor *x, int nnorm, rt_tensor *weight, double eps, rt_tensor **out) {
    *out = NULL;
    char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF], b3[RT_SHAPE_BUF];
    if (!rt_dtype_is_float(x->meta.dtype))
        return RT_ERR(RT_ERR_DTYPE, "rms_norm: expected a floating-point input, got %s",
                      rt_dtype_name(x->meta.dtype));
    if (nnorm < 1 || nnorm > x->meta.ndim)
        return RT_ERR(RT_ERR_SHAPE,
                      "rms_norm: normalized_shape must cover 1..%d trailing dims of input %s, got "
                      "%d dims",
                      x->meta.ndim, rt_shape_str(b1, sizeof b1, x->meta.ndim, x->meta.shape),
                      nnorm);
    if (!(eps >= 0)) return RT_ERR(RT_ERR_INVALID, "rms_norm: eps must be >= 0, got %g", eps);
    const int64_t *ns = x->meta.shape + (x->meta.ndim - nnorm);
    if (weight) {
        bool ok = weight->meta.ndim == nnorm;
        for (int i = 0; ok && i < nnorm; i++)
            ok = weight->meta.shape[i] == ns[i];
        if (!ok)
            return RT_ERR(RT_ERR_SHAPE,
                          "rms_norm: weight of shape %s does not match normalized_shape %s (the "
                          "last %d dims of input %s)",
                          rt_shape_str(b1, sizeof b1, weight->meta.ndim, weight->meta.shape),
                          rt_shape_str(b2, sizeof b2, nnorm, ns), nnorm,
                          rt_shape_str(b3, sizeof b3, x->meta.ndim, x->meta.shape));
        if (!rt_dtype_is_float(weight->meta.dtype))
            return RT_ERR(RT_ERR_DTYPE, "rms_norm: expected a floating-point weight, got %s",
                          rt_dtype_name(weight->meta.dtype));
        RT_TRY(rt_check_same_device("rms_norm", x, weight));
    }
    int64_t N = rt_shape_numel(nnorm, ns), M = N ? x->meta.numel / N : 0;
    rt_tensor *xc = NULL, *wc = NULL, *rstd = NULL;
    int rc = rt_contiguous(x, &xc);
    if (rc == RT_OK && weight) rc = rt_contiguous(weight, &wc);
    if (rc == RT_OK) rc = rt_tensor_new(1, &M, compute_dtype(x->meta.dtype), x->meta.device, &rstd);
    if (rc == RT_OK)
        rc = rt_tensor_new(x->meta.ndim, x->meta.shape, x->meta.dtype, x->meta.device, out);
    if (rc == RT_OK && M * N > 0) {
        rt_kview vo = kview2d(*out, M, N), vr = kview1d(rstd), vx = kview2d(xc, M, N), vw;
        if (wc) vw = kview1d(wc);
        rc = RT_BE_CALL(x->storage->backend, rms_norm, "rms_norm", &vo, &vr, &vx, wc ? &vw : NULL,
                        eps);
    }
    if (rc == RT_OK && rt_needs_grad2(x, weight)) {
        rt_node *node;
        rt_tensor *inputs[2] = {x, weight};
        rc = rt_node_attach(*out, "RmsNormBackward", rms_norm_backward, 2, inputs, &node);
        if (rc == RT_OK) {
            node->iargs[0] = M;
            node->iargs[1] = N;
            node->iargs[2] = nnorm;
            node->iargs[3] = weight ? weight->meta.dtype : x->meta.dtype;
            rt_node_save(node, xc);
            rt_node_save(node, rstd);
            rt_node_save(node, wc);
        }
    }
    rt_tensor_release(xc);
    rt_tensor_release(wc);
    rt_tensor_release(rstd);
    if (rc < 0) {
        rt_tensor_release(*out);
        *out = NULL;
    }
    return rc;
}

/* ================================================================================================
 * rope
 * ============================================================================================== */

static int rope_apply(rt_tensor *x, int seq_dim, double theta, int64_t offset, int interleaved,
                      int inverse, rt_tensor **out) {
    RT_TRY(rt_tensor_new(x->meta.ndim, x->meta.shape, x->meta.dtype, x->meta.device, out));
    rt_kview vo = rt_kview_of(*out), vx = rt_kview_of(x);
    int rc = x->meta.numel
                 ? RT_BE_CALL(x->storage->backend, rope, inverse ? "rope backward" : "rope", &vo,
                              &vx, seq_dim, theta, offset, interleaved, inverse)
                 : RT_OK;
    if (rc < 0) {
        rt_tensor_release(*out);
        *out = NULL;
    }
    return rc;
}

/* iargs: [0] seq_dim, [1] offset, [2] interleaved; dargs[0] theta */
static int rope_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    return rope_apply(g, (int)n->iargs[0], n->dargs[0], n->iargs[1], (int)n->iargs[2], 1, &gi[0]);
}

int rt_rope(rt_tensor *x, int seq_dim, double theta, int64_t offset, int interleaved,
            rt_tensor **out) {
    *out = NULL;
    char b1[RT_SHAPE_BUF];
    if (!rt_dtype_is_float(x->meta.dtype))
        return RT_ERR(RT_ERR_DTYPE, "rope: expected a floating-point input, got %s",
                      rt_dtype_name(x->meta.dtype));
    int nd = x->meta.ndim;
    if (nd < 2)
        return RT_ERR(RT_ERR_SHAPE,
                      "rope: expected at least 2 dims (a sequence dim and a head dim), got %s",
                      rt_shape_str(b1, sizeof b1, nd, x->meta.shape));
    int sd;
    RT_TRY(rt_wrap_dim("rope", seq_dim, nd, &sd));
    if (sd == nd - 1)
        return RT_ERR(RT_ERR_SHAPE,
                      "rope: seq_dim must not be the last dim (the head dim) of input %s",
                      rt_shape_str(b1, sizeof b1, nd, x->meta.shape));
    if (x->meta.shape[nd - 1] % 2)
        return RT_ERR(RT_ERR_SHAPE, "rope: the head dim (last) must be even, got input %s",
                      rt_shape_str(b1, sizeof b1, nd, x->meta.shape));
    if (!(theta > 0)) return RT_ERR(RT_ERR_INVALID, "rope: theta must be > 0, got %g", theta);
    if (offset < 0)
        return RT_ERR(RT_ERR_INVALID, "rope: position offset must be >= 0, got %lld",
                      (long long)offset);
    RT_TRY(rope_apply(x, sd, theta, offset, interleaved != 0, 0, out));
    if (rt_needs_grad1(x)) {
        rt_node *node;
        int rc = rt_node_attach(*out, "RopeBackward", rope_backward, 1, &x, &node);
        if (rc < 0) {
            rt_tensor_release(*out);
            *out = NULL;
            return rc;
        }
        node->iargs[0] = sd;
        node->iargs[1] = offset;
        node->iargs[2] = interleaved != 0;
        node->dargs[0] = theta;
    }
    return RT_OK;
}

/* ================================================================================================
 * scaled_dot_product_attention
 * ============================================================================================== */

typedef struct sdpa_ctx {
    rt_tensor *lse;  /* (B, H, T) compute dtype */
    rt_tensor *mask; /* the user's mask or NULL */
} sdpa_ctx;

static void sdpa_ctx_free(void *p) {
    sdpa_ctx *c = p;
    if (!c) return;
    rt_tensor_release(c->lse);
    rt_tensor_release(c->mask);
    free(c);
}

/* iargs: [0] is_causal, [1] seed, [2] offset; dargs: [0] scale, [1] dropout_p;
 * saved: q, k, v, out (second header). */
static int sdpa_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    rt_tensor *q, *k, *v, *o, *gm = NULL, *gms = NULL;
    RT_TRY(rt_node_saved(n, 0, &q));
    RT_TRY(rt_node_saved(n, 1, &k));
    RT_TRY(rt_node_saved(n, 2, &v));
    RT_TRY(rt_node_saved(n, 3, &o));
    sdpa_ctx *c = n->ctx;
    if (!c || !c->lse)
        return RT_ERR(RT_ERR_AUTOGRAD, "scaled_dot_product_attention backward: the saved "
                                       "log-sum-exp was freed (backward through the graph a "
                                       "second time? use retain_graph)");
    rt_tensor *src[3] = {q, k, v};
    int rc = RT_OK;
    for (int i = 0; i < 3 && rc == RT_OK; i++)
        rc = rt_tensor_new(4, src[i]->meta.shape, src[i]->meta.dtype, src[i]->meta.device, &gi[i]);
    int64_t B = q->meta.shape[0], H = q->meta.shape[1], T = q->meta.shape[2], S = k->meta.shape[2];
    int64_t full[4] = {B, H, T, S};
    if (rc == RT_OK && n->input_needs_grad[3] && c->mask)
        rc = rt_full(4, full, 0.0, c->lse->meta.dtype, q->meta.device, &gm);
    if (rc == RT_OK && q->meta.numel && k->meta.numel) {
        rt_kview vgq = rt_kview_of(gi[0]), vgk = rt_kview_of(gi[1]), vgv = rt_kview_of(gi[2]),
                 vg = rt_kview_of(g), vq = rt_kview_of(q), vk = rt_kview_of(k), vv = rt_kview_of(v),
                 vo = rt_kview_of(o), vl = rt_kview_of(c->lse), vgm, vm;
        if (gm) vgm = rt_kview_of(gm);
        if (c->mask) rc = rt_kview_broadcast(c->mask, 4, full, &vm);
        if (rc == RT_OK)
            rc = RT_BE_CALL(q->storage->backend, sdpa_backward,
                            "scaled_dot_product_attention backward", &vgq, &vgk, &vgv,
                            gm ? &vgm : NULL, &vg, &vq, &vk, &vv, &vo, &vl, c->mask ? &vm : NULL,
                            (int)n->iargs[0], n->dargs[0], n->dargs[1], (uint64_t)n->iargs[1],
                            (uint64_t)n->iargs[2]);
    } else if (rc == RT_OK) {
        for (int i = 0; i < 3 && rc == RT_OK; i++)
            rc = rt_fill_(gi[i], 0.0);
    }
    if (rc == RT_OK && gm) {
        rc = rt_sum_to_shape(gm, c->mask->meta.ndim, c->mask->meta.shape, &gms);
        if (rc == RT_OK) rc = rt_to_dtype(gms, c->mask->meta.dtype, &gi[3]);
    }
    rt_tensor_release(gm);
    rt_tensor_release(gms);
    for (int i = 0; i < 3; i++)
        if (!n->input_needs_grad[i] || rc < 0) {
            rt_tensor_release(gi[i]);
            gi[i] = NULL;
        }
    if (rc < 0) {
        rt_tensor_release(gi[3]);
        gi[3] = NULL;
    }
    return rc;
}

int rt_scaled_dot_product_attention(rt_tensor *q, rt_tensor *k, rt_tensor *v, rt_tensor *attn_mask,
                                    double dropout_p, int is_causal, double scale,
                                    rt_tensor **out) {
    *out = NULL;
    const char *op = "scaled_dot_product_attention";
    char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF], b3[RT_SHAPE_BUF];
    rt_tensor *qkv[3] = {q, k, v};
    const char *names[3] = {"query", "key", "value"};
    for (int i = 0; i < 3; i++) {
        if (qkv[i]->meta.ndim != 4)
            return RT_ERR(
                RT_ERR_SHAPE, "%s: expected %s of 4 dims (batch, heads, seq, head_dim), got %s", op,
                names[i], rt_shape_str(b1, sizeof b1, qkv[i]->meta.ndim, qkv[i]->meta.shape));
        if (!rt_dtype_is_float(qkv[i]->meta.dtype))
            return RT_ERR(RT_ERR_DTYPE, "%s: expected a floating-point %s, got %s", op, names[i],
                          rt_dtype_name(qkv[i]->meta.dtype));
        if (qkv[i]->meta.dtype != q->meta.dtype)
            return RT_ERR(RT_ERR_DTYPE,
                          "%s: query, key and value must share a dtype, got %s, %s and %s", op,
                          rt_dtype_name(q->meta.dtype), rt_dtype_name(k->meta.dtype),
                          rt_dtype_name(v->meta.dtype));
        RT_TRY(rt_check_same_device(op, q, qkv[i]));
    }
    const int64_t *qs = q->meta.shape, *ks = k->meta.shape, *vs = v->meta.shape;
    if (ks[0] != qs[0] || ks[1] != qs[1] || ks[3] != qs[3] || vs[0] != ks[0] || vs[1] != ks[1] ||
        vs[2] != ks[2])
        return RT_ERR(RT_ERR_SHAPE,
                      "%s: shapes do not fit: query %s, key %s, value %s (expected query (B, H, "
                      "T, D), key (B, H, S, D), value (B, H, S, Dv))",
                      op, rt_shape_str(b1, sizeof b1, 4, qs), rt_shape_str(b2, sizeof b2, 4, ks),
                      rt_shape_str(b3, sizeof b3, 4, vs));
    if (!(dropout_p >= 0.0 && dropout_p <= 1.0))
        return RT_ERR(RT_ERR_INVALID, "%s: dropout_p has to be between 0 and 1, but got %g", op,
                      dropout_p);
    int64_t B = qs[0], H = qs[1], T = qs[2], S = ks[2], D = qs[3], Dv = vs[3];
    int64_t full[4] = {B, H, T, S};
    rt_kview vm;
    if (attn_mask) {
        int mdt = attn_mask->meta.dtype;
        if (mdt != RT_BOOL && !rt_dtype_is_float(mdt))
            return RT_ERR(RT_ERR_DTYPE,
                          "%s: attn_mask must be bool (true = take part in attention) or "
                          "floating point (added to the scores), got %s",
                          op, rt_dtype_name(mdt));
        RT_TRY(rt_check_same_device(op, q, attn_mask));
        if (rt_kview_broadcast(attn_mask, 4, full, &vm) < 0)
            return RT_ERR(RT_ERR_SHAPE,
                          "%s: attn_mask of shape %s is not broadcastable to (B, H, T, S) = %s", op,
                          rt_shape_str(b1, sizeof b1, attn_mask->meta.ndim, attn_mask->meta.shape),
                          rt_shape_str(b2, sizeof b2, 4, full));
    }
    if (!(scale > 0)) scale = D > 0 ? 1.0 / sqrt((double)D) : 1.0;
    uint64_t seed = 0, offset = 0;
    if (dropout_p > 0) {
        seed = rt_rng_seed();
        offset = rt_rng_reserve(((uint64_t)(B * H * T * S) + 3) / 4);
    }
    int64_t oshape[4] = {B, H, T, Dv};
    rt_tensor *lse = NULL;
    int rc = rt_tensor_new(3, full, compute_dtype(q->meta.dtype), q->meta.device, &lse);
    if (rc == RT_OK) rc = rt_tensor_new(4, oshape, q->meta.dtype, q->meta.device, out);
    if (rc == RT_OK && (*out)->meta.numel && S > 0) {
        rt_kview vo = rt_kview_of(*out), vl = rt_kview_of(lse), vq = rt_kview_of(q),
                 vk = rt_kview_of(k), vv = rt_kview_of(v);
        rc = RT_BE_CALL(q->storage->backend, sdpa, op, &vo, &vl, &vq, &vk, &vv,
                        attn_mask ? &vm : NULL, is_causal != 0, scale, dropout_p, seed, offset);
    } else if (rc == RT_OK) { /* no keys (or an empty output): zeros, like PyTorch's flash path */
        rc = rt_fill_(*out, 0.0);
        if (rc == RT_OK) rc = rt_fill_(lse, -INFINITY);
    }
    bool mask_grad = attn_mask && attn_mask->meta.dtype != RT_BOOL;
    if (rc == RT_OK && (rt_needs_grad3(q, k, v) || (mask_grad && rt_needs_grad1(attn_mask)))) {
        rt_tensor *y = NULL;
        rt_node *node;
        sdpa_ctx *c = calloc(1, sizeof *c);
        if (!c) rc = RT_ERR(RT_ERR_OOM, "%s: out of host memory", op);
        if (rc == RT_OK)
            rc = rt_tensor_new_view(*out, 4, (*out)->meta.shape, (*out)->meta.strides,
                                    (*out)->meta.offset, &y);
        rt_tensor *inputs[4] = {q, k, v, mask_grad ? attn_mask : NULL};
        if (rc == RT_OK)
            rc = rt_node_attach(*out, "ScaledDotProductAttentionBackward", sdpa_backward, 4, inputs,
                                &node);
        if (rc == RT_OK) {
            node->iargs[0] = is_causal != 0;
            node->iargs[1] = (int64_t)seed;
            node->iargs[2] = (int64_t)offset;
            node->dargs[0] = scale;
            node->dargs[1] = dropout_p;
            rt_node_save(node, q);
            rt_node_save(node, k);
            rt_node_save(node, v);
            rt_node_save(node, y);
            c->lse = lse;
            rt_tensor_retain(lse);
            c->mask = attn_mask;
            if (attn_mask) rt_tensor_retain(attn_mask);
            node->ctx = c;
            node->ctx_free = sdpa_ctx_free;
            c = NULL;
        }
        free(c);
        rt_tensor_release(y);
    }
    rt_tensor_release(lse);
    if (rc < 0) {
        rt_tensor_release(*out);
        *out = NULL;
    }
    return rc;
}
