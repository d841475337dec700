/* ops_matmul.c: matmul with PyTorch semantics and linear, built on one primitive: a batched
 * (B, m, k) @ (B, k, n) product with autograd. Everything else (1-d operands, batch broadcasting,
 * folding batch dims of a 2-d right operand into m) is views, which carry their own gradients. */
#include "internal.h"

#include <stdint.h>
#include <stdio.h>

/* Describe a 2-d or 3-d operand for GEMM without copying when one of its two matrix dims is unit
 * stride. Returns 0 if a copy is needed. */
static int gemm_operand(const rt_tensor *t, int *trans, int64_t *ld, int64_t *bstride) {
    int nd = t->meta.ndim;
    int64_t r = t->meta.shape[nd - 2], c = t->meta.shape[nd - 1];
    int64_t sr = t->meta.strides[nd - 2], sc = t->meta.strides[nd - 1];
    *bstride = nd == 3 ? t->meta.strides[0] : 0;
    if ((sc == 1 || c == 1) && sr >= (c > 1 ? c : 1)) {
        *trans = 0;
        *ld = sr > 0 ? sr : 1;
        return 1;
    }
    if ((sr == 1 || r == 1) && sc >= (r > 1 ? r : 1)) {
        *trans = 1;
        *ld = sc > 0 ? sc : 1;
        return 1;
    }
    return 0;
}

static int bmm(rt_tensor *a, rt_tensor *b, rt_tensor **out);
static int bmm_ex(rt_tensor *a, rt_tensor *b, rt_tensor *bias, rt_tensor **out);

static int bmm_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    rt_tensor *a, *b, *t = NULL;
    RT_TRY(rt_node_saved(n, 0, &a));
    RT_TRY(rt_node_saved(n, 1, &b));
    int nd = g->meta.ndim, rc = RT_OK;
    if (n->input_needs_grad[0]) { /* dA = G B^T */
        rc = rt_transpose(b, nd - 2, nd - 1, &t);
        if (rc == RT_OK) rc = bmm(g, t, &gi[0]);
        rt_tensor_release(t);
        t = NULL;
    }
    if (rc == RT_OK && n->input_needs_grad[1]) {
        if (nd == 2 && b->meta.strides[0] == 1 && b->meta.shape[1] > 1 &&
            b->meta.strides[1] >= b->meta.shape[0]) {
            /* B is stored transposed (linear's weight w read as w^T): dB = (G^T A)^T, PyTorch's
             * grad_weight = grad_output^T input, made in w's own layout, so the transpose back to
             * w's gradient is a view, not a strided copy of the whole weight */
            rt_tensor *gt = NULL, *r = NULL;
            rc = rt_transpose(g, 0, 1, &gt);
            if (rc == RT_OK) rc = bmm(gt, a, &r);
            if (rc == RT_OK) rc = rt_transpose(r, 0, 1, &gi[1]);
            rt_tensor_release(gt);
            rt_tensor_release(r);
        } else { /* dB = A^T G */
            rc = rt_transpose(a, nd - 2, nd - 1, &t);
            if (rc == RT_OK) rc = bmm(t, g, &gi[1]);
            rt_tensor_release(t);
        }
    }
    return rc;
}

/* linear with the bias fused into the GEMM (inputs a (m, k), b (k, n), bias (n)): the product's
 * gradients as MmBackward's, the bias's the output gradient summed over rows (what AddBackward
 * of the unfused y + bias gives). */
static int addmm_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    RT_TRY(bmm_backward(n, g, gi));
    if (!n->input_needs_grad[2]) return RT_OK;
    int64_t bshape[1] = {g->meta.shape[1]};
    return rt_sum_to_shape(g, 1, bshape, &gi[2]);
}

/* a (B, m, k) or (m, k), b likewise; same batch size (a batch stride of 0 is fine). With bias
 * (2-d a and b only, bias (n) contiguous, one dtype), the bias is added in the GEMM's epilogue
 * through the backend's gemm_bias (the caller checks that it exists); RT_ERR_UNSUPPORTED from it
 * passes up so that the caller can add the bias itself. */
static int bmm_ex(rt_tensor *a, rt_tensor *b, rt_tensor *bias, rt_tensor **out) {
    *out = NULL;
    int nd = a->meta.ndim;
    int64_t m = a->meta.shape[nd - 2], k = a->meta.shape[nd - 1], nn = b->meta.shape[nd - 1];
    int64_t batch = nd == 3 ? a->meta.shape[0] : 1;
    int64_t shape[3] = {batch, m, nn};
    RT_TRY(rt_tensor_new(nd, nd == 3 ? shape : shape + 1, a->meta.dtype, a->meta.device, out));
    rt_tensor *ca = a, *cb = b;
    int ta = 0, tb = 0, rc = RT_OK;
    int64_t lda = 1, ldb = 1, sa = 0, sb = 0;
    int prev = rt_set_grad_enabled(0);
    rt_tensor_retain(ca);
    rt_tensor_retain(cb);
    if (!gemm_operand(ca, &ta, &lda, &sa)) {
        rt_tensor_release(ca);
        rc = rt_clone(a, &ca);
        if (rc == RT_OK) gemm_operand(ca, &ta, &lda, &sa);
    }
    if (rc == RT_OK && !gemm_operand(cb, &tb, &ldb, &sb)) {
        rt_tensor_release(cb);
        rc = rt_clone(b, &cb);
        if (rc == RT_OK) gemm_operand(cb, &tb, &ldb, &sb);
    }
    rt_set_grad_enabled(prev);
    if (rc == RT_OK) {
        if (k == 0)
            rc = rt_fill_(*out, 0.0);
        else if (bias)
            rc = RT_BE_CALL(a->storage->backend, gemm_bias, "linear", ta, tb, m, nn, k,
                            rt_tensor_data_ptr(ca), lda, rt_tensor_data_ptr(cb), ldb,
                            rt_tensor_data_ptr(bias), rt_tensor_data_ptr(*out), nn, a->meta.dtype);
        else if ((*out)->meta.numel)
            rc = RT_BE_CALL(a->storage->backend, gemm, "matmul", ta, tb, m, nn, k, 1.0,
                            rt_tensor_data_ptr(ca), lda, sa, rt_tensor_data_ptr(cb), ldb, sb, 0.0,
                            rt_tensor_data_ptr(*out), nn, m * nn, batch, a->meta.dtype);
    }
    rt_tensor_release(ca);
    rt_tensor_release(cb);
    if (rc == RT_OK && (bias ? rt_needs_grad3(a, b, bias) : rt_needs_grad2(a, b))) {
        rt_node *node;
        rt_tensor *in[3] = {a, b, bias};
        rc = bias ? rt_node_attach(*out, "AddmmBackward", addmm_backward, 3, in, &node)
                  : rt_node_attach(*out, "MmBackward", bmm_backward, 2, in, &node);
        if (rc == RT_OK) {
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

static int bmm(rt_tensor *a, rt_tensor *b, rt_tensor **out) {
    return bmm_ex(a, b, NULL, out);
}

static int shape_error(const rt_tensor *a, const rt_tensor *b, const char *why) {
    char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF];
    return RT_ERR(RT_ERR_SHAPE, "matmul: shapes %s and %s cannot be multiplied (%s)",
                  rt_shape_str(b1, sizeof b1, a->meta.ndim, a->meta.shape),
                  rt_shape_str(b2, sizeof b2, b->meta.ndim, b->meta.shape), why);
}

int rt_matmul(rt_tensor *a, rt_tensor *b, rt_tensor **out) {
    *out = NULL;
    RT_TRY(rt_check_same_device("matmul", a, b));
    int na = a->meta.ndim, nb = b->meta.ndim;
    if (na == 0 || nb == 0) return shape_error(a, b, "both arguments need at least 1 dimension");
    if (a->meta.dtype != b->meta.dtype)
        return RT_ERR(RT_ERR_DTYPE, "matmul: expected both operands of one dtype, got %s and %s",
                      rt_dtype_name(a->meta.dtype), rt_dtype_name(b->meta.dtype));
    if (!rt_dtype_is_float(a->meta.dtype))
        return RT_ERR(RT_ERR_DTYPE, "matmul: expected a floating-point dtype, got %s",
                      rt_dtype_name(a->meta.dtype));
    int64_t ka = a->meta.shape[na - 1], kb = b->meta.shape[nb >= 2 ? nb - 2 : 0];
    if (ka != kb) {
        char why[96];
        snprintf(why, sizeof why, "inner dimensions %lld and %lld differ", (long long)ka,
                 (long long)kb);
        return shape_error(a, b, why);
    }
    rt_tensor *a2 = NULL, *b2 = NULL, *r = NULL;
    int rc = RT_OK;
    /* 1-d operands become matrices; the added dim is removed from the result. */
    if (na == 1)
        rc = rt_unsqueeze(a, 0, &a2);
    else {
        rt_tensor_retain(a);
        a2 = a;
    }
    if (rc == RT_OK) {
        if (nb == 1)
            rc = rt_unsqueeze(b, 1, &b2);
        else {
            rt_tensor_retain(b);
            b2 = b;
        }
    }
    if (rc < 0) goto done;
    na = a2->meta.ndim;
    nb = b2->meta.ndim;
    int64_t m = a2->meta.shape[na - 2], n = b2->meta.shape[nb - 1];
    int64_t rshape[RT_MAX_DIMS];
    int rnd;
    if (nb == 2) { /* fold a's batch dims into m: one GEMM */
        int64_t s2[2] = {rt_shape_numel(na - 1, a2->meta.shape), ka};
        rt_tensor *af = NULL;
        rc = na == 2 ? (rt_tensor_retain(a2), af = a2, RT_OK) : rt_reshape(a2, 2, s2, &af);
        if (rc == RT_OK) rc = bmm(af, b2, &r);
        rt_tensor_release(af);
        rnd = na;
        for (int i = 0; i < na - 1; i++)
            rshape[i] = a2->meta.shape[i];
        rshape[na - 1] = n;
    } else { /* broadcast batch dims, flatten them to one, bmm */
        int nbatch;
        int64_t bshape[RT_MAX_DIMS];
        rc = rt_broadcast_shapes("matmul", na - 2, a2->meta.shape, nb - 2, b2->meta.shape, &nbatch,
                                 bshape);
        if (rc == RT_ERR_SHAPE) { /* name the operands, not just their batch dims */
            char why[2 * RT_SHAPE_BUF + 48], s1[RT_SHAPE_BUF], s2[RT_SHAPE_BUF];
            snprintf(why, sizeof why, "batch dimensions %s and %s cannot be broadcast",
                     rt_shape_str(s1, sizeof s1, na - 2, a2->meta.shape),
                     rt_shape_str(s2, sizeof s2, nb - 2, b2->meta.shape));
            rc = shape_error(a, b, why);
        }
        if (rc < 0) goto done;
        int64_t B = rt_shape_numel(nbatch, bshape);
        int64_t ea[RT_MAX_DIMS], eb[RT_MAX_DIMS];
        for (int i = 0; i < nbatch; i++)
            ea[i] = eb[i] = bshape[i];
        ea[nbatch] = m;
        ea[nbatch + 1] = ka;
        eb[nbatch] = ka;
        eb[nbatch + 1] = n;
        rt_tensor *xa = NULL, *xb = NULL, *fa = NULL, *fb = NULL;
        int64_t fa_s[3] = {B, m, ka}, fb_s[3] = {B, ka, n};
        rc = rt_expand(a2, nbatch + 2, ea, &xa);
        if (rc == RT_OK) rc = rt_expand(b2, nbatch + 2, eb, &xb);
        if (rc == RT_OK) rc = rt_reshape(xa, 3, fa_s, &fa);
        if (rc == RT_OK) rc = rt_reshape(xb, 3, fb_s, &fb);
        if (rc == RT_OK) rc = bmm(fa, fb, &r);
        rt_tensor_release(xa);
        rt_tensor_release(xb);
        rt_tensor_release(fa);
        rt_tensor_release(fb);
        rnd = nbatch + 2;
        for (int i = 0; i < nbatch; i++)
            rshape[i] = bshape[i];
        rshape[nbatch] = m;
        rshape[nbatch + 1] = n;
    }
    if (rc < 0) goto done;
    /* drop the dims added for 1-d operands */
    if (a->meta.ndim == 1) {
        for (int i = rnd - 2; i < rnd - 1; i++)
            rshape[i] = rshape[i + 1];
        rnd--;
    }
    if (b->meta.ndim == 1) rnd--;
    rc = rt_reshape(r, rnd, rshape, out);
done:
    rt_tensor_release(a2);
    rt_tensor_release(b2);
    rt_tensor_release(r);
    return rc;
}

/* Whether linear can add its bias in the GEMM's epilogue (the backend's gemm_bias; CUDA only):
 * one dtype among f32/bf16/f16 on one device, x at least 2-d (its batch dims fold into the GEMM's
 * rows), nothing empty, the bias contiguous and 16-byte aligned. Otherwise matmul + add. */
static int linear_fusable(const rt_tensor *x, const rt_tensor *w, const rt_tensor *b) {
    int dt = x->meta.dtype;
    if (x->meta.ndim < 2 || x->meta.numel == 0 || w->meta.numel == 0) return 0;
    if (w->meta.device != x->meta.device || b->meta.device != x->meta.device) return 0;
    if (!x->storage || !x->storage->backend->gemm_bias) return 0;
    if (w->meta.dtype != dt || b->meta.dtype != dt) return 0;
    if (dt != RT_F32 && dt != RT_BF16 && dt != RT_F16) return 0;
    if (b->meta.shape[0] > 1 && b->meta.strides[0] != 1) return 0;
    return ((uintptr_t)rt_tensor_data_ptr(b) % 16) == 0;
}

/* y = x wt + b with the bias in the GEMM's epilogue: x's batch dims folded into rows (as matmul
 * does), one (M, k) @ (k, n) product, reshaped back. RT_ERR_UNSUPPORTED when the backend has no
 * algorithm for it (rt_linear then takes matmul + add). */
static int linear_fused(rt_tensor *x, rt_tensor *wt, rt_tensor *b, rt_tensor **out) {
    int nd = x->meta.ndim;
    int64_t k = x->meta.shape[nd - 1], n = wt->meta.shape[1];
    int64_t s2[2] = {rt_shape_numel(nd - 1, x->meta.shape), k};
    int64_t rshape[RT_MAX_DIMS];
    for (int i = 0; i < nd - 1; i++)
        rshape[i] = x->meta.shape[i];
    rshape[nd - 1] = n;
    rt_tensor *xf = NULL, *r = NULL;
    int rc = nd == 2 ? (rt_tensor_retain(x), xf = x, RT_OK) : rt_reshape(x, 2, s2, &xf);
    if (rc == RT_OK) rc = bmm_ex(xf, wt, b, &r);
    if (rc == RT_OK)
        rc = nd == 2 ? (rt_tensor_retain(r), *out = r, RT_OK) : rt_reshape(r, nd, rshape, out);
    rt_tensor_release(xf);
    rt_tensor_release(r);
    return rc;
}

int rt_linear(rt_tensor *x, rt_tensor *w, rt_tensor *b, rt_tensor **out) {
    *out = NULL;
    if (w->meta.ndim != 2) {
        char b1[RT_SHAPE_BUF];
        return RT_ERR(RT_ERR_SHAPE,
                      "linear: weight must be 2-d (out_features, in_features), got %s",
                      rt_shape_str(b1, sizeof b1, w->meta.ndim, w->meta.shape));
    }
    if (x->meta.ndim == 0 || x->meta.shape[x->meta.ndim - 1] != w->meta.shape[1]) {
        char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF];
        return RT_ERR(RT_ERR_SHAPE,
                      "linear: input of shape %s does not match weight of shape %s (expected last "
                      "input dim %lld)",
                      rt_shape_str(b1, sizeof b1, x->meta.ndim, x->meta.shape),
                      rt_shape_str(b2, sizeof b2, 2, w->meta.shape), (long long)w->meta.shape[1]);
    }
    if (b && (b->meta.ndim != 1 || b->meta.shape[0] != w->meta.shape[0])) {
        char b1[RT_SHAPE_BUF];
        return RT_ERR(RT_ERR_SHAPE, "linear: bias of shape %s does not match %lld out_features",
                      rt_shape_str(b1, sizeof b1, b->meta.ndim, b->meta.shape),
                      (long long)w->meta.shape[0]);
    }
    rt_tensor *wt, *y;
    RT_TRY(rt_transpose(w, 0, 1, &wt));
    if (b && linear_fusable(x, w, b)) {
        int rc = linear_fused(x, wt, b, out);
        if (rc != RT_ERR_UNSUPPORTED) {
            rt_tensor_release(wt);
            return rc;
        }
    }
    int rc = rt_matmul(x, wt, &y);
    rt_tensor_release(wt);
    RT_TRY(rc);
    if (!b) {
        *out = y;
        return RT_OK;
    }
    rc = rt_binary(RT_ADD, y, b, out);
    rt_tensor_release(y);
    return rc;
}
