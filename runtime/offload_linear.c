/* offload_linear.c: the streamed linear op (DESIGN section 5), y = x @ w^T + b with w and b
 * offloaded parameters that the engine of x's device brings over just for the op.
 *
 * Forward fetches w and b, runs the same GEMM and broadcast add as rt_linear on the device buffers
 * and releases them. Backward fetches w again (the engine reuses the copy still on the device at
 * the forward-to-backward turnaround), computes grad_x = g @ w, grad_w = g^T @ x and
 * grad_b = sum(g), and sends the parameter gradients to the host through the engine; the autograd
 * graph has no edge to the host parameters, so the engine is the only route to param->grad. When
 * a parameter has Lua gradient hooks, its gradient is handed instead to the hook carrier (a tensor
 * whose grad_fn is a Lua custom function, an input of this node): the autograd engine gives control
 * back to Lua there (C never calls Lua), the hooks run on the device gradient, and Lua passes the
 * result on with rt_offload_grad_to_host. */
#include "offload_internal.h"

#include <stdint.h>

#include <stdlib.h>

typedef struct lin_ctx {
    rt_offload_param *w, *b; /* retained */
    int cd;                  /* compute and transfer dtype */
    int x_dtype;             /* grad_x goes back in the input's dtype */
    int device;
    int w_needs, b_needs; /* parameter requires grad */
    /* w's version (rt_offload_param_version) and delayed-update mode when the forward read it */
    int w_version, w_delayed;
    /* the backward (autograd task id) that sent w's / b's gradient to the host: see lin_backward */
    int64_t w_sent, b_sent;
    int holds; /* counted in w's and b's live_nodes (rt_offload_migrate waits for 0) */
} lin_ctx;

/* The node will not fetch w and b again (its graph was freed by a backward): they may migrate. */
static void lin_ctx_released(void *p) {
    lin_ctx *c = p;
    if (!c->holds) return;
    c->holds = 0;
    rt_offload_param_node_ref(c->w, -1);
    rt_offload_param_node_ref(c->b, -1);
}

static void lin_ctx_free(void *p) {
    lin_ctx *c = p;
    lin_ctx_released(c);
    rt_offload_param_release(c->w);
    rt_offload_param_release(c->b);
    free(c);
}

static int gemm(const rt_backend *be, int ta, int tb, int64_t m, int64_t n, int64_t k,
                const void *a, int64_t lda, const void *b, int64_t ldb, rt_tensor *c, int dtype) {
    if (m == 0 || n == 0) return RT_OK;
    if (k == 0) return rt_fill_(c, 0.0);
    return RT_BE_CALL(be, gemm, "offload_linear", ta, tb, m, n, k, 1.0, a, lda, 0, b, ldb, 0, 0.0,
                      rt_tensor_data_ptr(c), n, m * n, 1, dtype);
}

/* g in the compute dtype, contiguous (new reference). */
static int as_compute(rt_tensor *t, int cd, rt_tensor **out) {
    if (t->meta.dtype == cd) return rt_contiguous(t, out);
    rt_tensor *c;
    RT_TRY(rt_to_dtype(t, cd, &c));
    int rc = rt_contiguous(c, out);
    rt_tensor_release(c);
    return rc;
}

/* The autograd engine runs a backward again when it failed out of memory (once Lua has collected
 * garbage: runtime/autograd.c, retry_node), so a failed run must leave no side effects behind.
 * grad_x and the gradients handed to Lua hooks are outputs in gi, which the engine drops; sending
 * a parameter gradient to the host is the one effect, and rt_offload_route_grad undoes its own
 * failure, but a failure after it (the bias after the weight) would send the weight's gradient a
 * second time on the rerun: w_sent / b_sent record the backward (task) that sent each, and the
 * rerun skips it. The fetch of w simply repeats (its one trace: a request more in the engine's
 * schedule while it is being learned, which costs a prefetch at most). */
static int lin_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    static const char *op = "offload_linear backward";
    lin_ctx *c = n->ctx;
    rt_tensor *xc;
    RT_TRY(rt_node_saved(n, 0, &xc));
    rt_offload_engine *e;
    RT_TRY(rt_offload_engine_for(op, c->device, &e));
    const rt_tensor *W = rt_offload_param_host(c->w);
    int64_t out_f = W->meta.shape[0], in_f = W->meta.shape[1];
    /* grad_x needs the weight the forward used: one changed in place since (under no_grad) makes
     * nn.Linear's backward fail on its saved weight, and so this one, rather than mix two weights.
     * A delayed optimizer update ended in between (optimizer flush) is the library's own change
     * of what transfers read, not an in-place write: not checked. */
    if (n->input_needs_grad[0] && rt_offload_param_delayed(c->w) == c->w_delayed &&
        rt_offload_param_version(c->w) != c->w_version) {
        char b1[RT_SHAPE_BUF];
        return RT_ERR(RT_ERR_AUTOGRAD,
                      "backward: the weight of shape %s was modified in place after the forward of "
                      "OffloadLinearBackward read it (version %d, expected %d)",
                      rt_shape_str(b1, sizeof b1, W->meta.ndim, W->meta.shape),
                      rt_offload_param_version(c->w), c->w_version);
    }
    rt_tensor *gc = NULL;
    RT_TRY(as_compute(g, c->cd, &gc));
    const rt_backend *be = gc->storage->backend;
    int64_t M = out_f ? gc->meta.numel / out_f : 0;
    int rc = RT_OK;
    if (n->input_needs_grad[0]) { /* grad_x (M, in) = g (M, out) @ w (out, in) */
        int lease;
        void *wp;
        rt_tensor *gx = NULL;
        rc = rt_tensor_new(xc->meta.ndim, xc->meta.shape, c->cd, c->device, &gx);
        if (rc == RT_OK) {
            rc = rt_offload_fetch(e, c->w, c->cd, RT_OFFLOAD_BWD, &lease, &wp);
            if (rc == RT_OK) {
                rt_event *t0;
                rt_offload_prof_begin(e, &t0);
                rc = gemm(be, 0, 0, M, in_f, out_f, rt_tensor_data_ptr(gc), out_f, wp, in_f, gx,
                          c->cd);
                rt_offload_prof_end(e, RT_OFFLOAD_BWD, t0);
                rt_offload_release(e, lease);
            }
        }
        if (rc == RT_OK && c->x_dtype != c->cd) {
            rt_tensor *t = gx;
            rc = rt_to_dtype(t, c->x_dtype, &gx);
            rt_tensor_release(t);
        }
        if (rc == RT_OK)
            gi[0] = gx;
        else
            rt_tensor_release(gx);
    }
    if (rc == RT_OK && c->w_needs && (n->input_needs_grad[1] || c->w_sent != n->task_id)) {
        /* grad_w (out, in) = g^T (out, M) @ x (M, in) */
        int64_t shape[2] = {out_f, in_f};
        rt_tensor *gw = NULL;
        rc = rt_tensor_new(2, shape, c->cd, c->device, &gw);
        rt_event *t0;
        rt_offload_prof_begin(e, &t0);
        if (rc == RT_OK)
            rc = gemm(be, 1, 0, out_f, in_f, M, rt_tensor_data_ptr(gc), out_f,
                      rt_tensor_data_ptr(xc), in_f, gw, c->cd);
        rt_offload_prof_end(e, RT_OFFLOAD_BWD, t0);
        if (rc == RT_OK && n->input_needs_grad[1])
            gi[1] = gw, gw = NULL; /* to the Lua hooks */
        else if (rc == RT_OK && (rc = rt_offload_route_grad(e, c->w, gw)) == RT_OK)
            c->w_sent = n->task_id;
        rt_tensor_release(gw);
    }
    if (rc == RT_OK && c->b && c->b_needs && (n->input_needs_grad[2] || c->b_sent != n->task_id)) {
        /* grad_b (out) = g summed over the leading dims */
        rt_tensor *gb = NULL;
        rc = rt_sum_to_shape(gc, 1, &out_f, &gb);
        if (rc == RT_OK && n->input_needs_grad[2])
            gi[2] = gb, gb = NULL;
        else if (rc == RT_OK && (rc = rt_offload_route_grad(e, c->b, gb)) == RT_OK)
            c->b_sent = n->task_id;
        rt_tensor_release(gb);
    }
    rt_tensor_release(gc);
    return rc;
}

static int check_args(const char *op, rt_tensor *x, rt_offload_param *w, rt_offload_param *b,
                      int *cd) {
    char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF];
    if (!x || !w) return RT_ERR(RT_ERR_INVALID, "%s: expected an input and a weight, got NULL", op);
    const rt_tensor *W = rt_offload_param_host(w);
    if (W->meta.ndim != 2)
        return RT_ERR(RT_ERR_SHAPE, "%s: weight must be 2-d (out_features, in_features), got %s",
                      op, rt_shape_str(b1, sizeof b1, W->meta.ndim, W->meta.shape));
    if (x->meta.ndim == 0 || x->meta.shape[x->meta.ndim - 1] != W->meta.shape[1])
        return RT_ERR(RT_ERR_SHAPE,
                      "%s: input of shape %s does not match weight of shape %s (expected last "
                      "input dim %lld)",
                      op, rt_shape_str(b1, sizeof b1, x->meta.ndim, x->meta.shape),
                      rt_shape_str(b2, sizeof b2, 2, W->meta.shape), (long long)W->meta.shape[1]);
    const rt_tensor *B = b ? rt_offload_param_host(b) : NULL;
    if (B && (B->meta.ndim != 1 || B->meta.shape[0] != W->meta.shape[0]))
        return RT_ERR(RT_ERR_SHAPE, "%s: bias of shape %s does not match %lld out_features", op,
                      rt_shape_str(b1, sizeof b1, B->meta.ndim, B->meta.shape),
                      (long long)W->meta.shape[0]);
    int xd = x->meta.dtype;
    if (!rt_dtype_is_float(xd))
        return RT_ERR(RT_ERR_DTYPE, "%s: expected a floating-point input, got %s", op,
                      rt_dtype_name(xd));
    int ac = rt_autocast_get_dtype();
    *cd = ac >= 0 ? ac : xd;
    for (int i = 0; i < 2; i++) {
        const rt_tensor *P = i == 0 ? W : B;
        if (!P) continue;
        int pd = P->meta.dtype;
        if (pd == *cd || (pd == RT_F32 && ac >= 0)) continue;
        if (ac >= 0)
            return RT_ERR(RT_ERR_DTYPE,
                          "%s: under autocast to %s the %s must be float32 (sent as its %s shadow) "
                          "or %s, got %s",
                          op, rt_dtype_name(ac), i == 0 ? "weight" : "bias", rt_dtype_name(ac),
                          rt_dtype_name(ac), rt_dtype_name(pd));
        return RT_ERR(RT_ERR_DTYPE,
                      "%s: expected the input and the %s of one dtype, got %s and %s (convert "
                      "one, or run under ramtorch.amp.autocast)",
                      op, i == 0 ? "weight" : "bias", rt_dtype_name(xd), rt_dtype_name(pd));
    }
    return RT_OK;
}

int rt_offload_linear(rt_tensor *x, rt_offload_param *w, rt_offload_param *b, rt_tensor *w_hook,
                      rt_tensor *b_hook, rt_tensor **out) {
    static const char *op = "offload_linear";
    *out = NULL;
    int cd = -1;
    RT_TRY(check_args(op, x, w, b, &cd));
    rt_tensor *W = rt_offload_param_host(w), *B = b ? rt_offload_param_host(b) : NULL;
    int dev = x->meta.device;
    rt_offload_engine *e;
    RT_TRY(rt_offload_engine_for(op, dev, &e));
    int64_t out_f = W->meta.shape[0], in_f = W->meta.shape[1];
    int prev = rt_set_grad_enabled(0);
    rt_tensor *xc = NULL, *y = NULL;
    int rc = as_compute(x, cd, &xc);
    int64_t yshape[RT_MAX_DIMS];
    int nd = x->meta.ndim;
    for (int i = 0; i < nd - 1; i++)
        yshape[i] = x->meta.shape[i];
    yshape[nd - 1] = out_f;
    if (rc == RT_OK) rc = rt_tensor_new(nd, yshape, cd, dev, &y);
    int64_t M = in_f ? x->meta.numel / in_f : rt_shape_numel(nd - 1, x->meta.shape);
    int wl = -1, bl = -1;
    void *wp = NULL, *bp = NULL;
    /* what the fetch below reads: the backward checks that it is still current */
    int w_version = rt_offload_param_version(w), w_delayed = rt_offload_param_delayed(w);
    if (rc == RT_OK) rc = rt_offload_fetch(e, w, cd, RT_OFFLOAD_FWD, &wl, &wp);
    if (rc == RT_OK && b) rc = rt_offload_fetch(e, b, cd, RT_OFFLOAD_FWD, &bl, &bp);
    /* y (M, out) = x (M, in) @ w^T: the GEMM rt_linear runs (w read transposed, ld = in) */
    const rt_backend *be = rt_offload_engine_backend(e);
    rt_event *t0 = NULL;
    if (rc == RT_OK) rt_offload_prof_begin(e, &t0);
    /* With a bias, use the GEMM epilogue exactly when rt_linear does (linear_fusable in
     * ops_matmul.c: the backend has gemm_bias, x at least 2-d, nothing empty, f32/bf16/f16, the
     * bias 16-byte aligned), so a streamed layer rounds like the plain one it replaces. */
    int fused = 0;
    if (rc == RT_OK && b && be->gemm_bias && x->meta.ndim >= 2 && M > 0 && in_f > 0 && out_f > 0 &&
        (cd == RT_F32 || cd == RT_BF16 || cd == RT_F16) && ((uintptr_t)bp % 16) == 0) {
        int r2 = be->gemm_bias(0, 1, M, out_f, in_f, rt_tensor_data_ptr(xc), in_f, wp, in_f, bp,
                               rt_tensor_data_ptr(y), out_f, cd);
        if (r2 == RT_OK)
            fused = 1;
        else if (r2 != RT_ERR_UNSUPPORTED)
            rc = r2;
    }
    if (rc == RT_OK && !fused)
        rc = gemm(be, 0, 1, M, out_f, in_f, rt_tensor_data_ptr(xc), in_f, wp, in_f, y, cd);
    rt_offload_prof_end(e, RT_OFFLOAD_FWD, t0);
    if (rc == RT_OK && b && !fused && y->meta.numel) { /* y += b, broadcast over the rows */
        rt_kview yv = rt_kview_of(y), bv = yv;
        bv.data = bp;
        for (int i = 0; i < bv.ndim; i++)
            bv.strides[i] = i == bv.ndim - 1 ? 1 : 0;
        rc = RT_BE_CALL(be, binary, op, RT_ADD, &yv, &yv, &bv);
    }
    if (wl >= 0) rt_offload_release(e, wl);
    if (bl >= 0) rt_offload_release(e, bl);
    rt_set_grad_enabled(prev);
    if (rc == RT_OK && rt_needs_grad3(x, W, B)) {
        lin_ctx *c = calloc(1, sizeof *c);
        rt_node *node;
        rt_tensor *in[3] = {x, w_hook, b ? b_hook : NULL};
        if (!c) rc = RT_ERR(RT_ERR_OOM, "%s: out of host memory", op);
        if (rc == RT_OK)
            rc = rt_node_attach(y, "OffloadLinearBackward", lin_backward, 3, in, &node);
        if (rc == RT_OK) {
            rt_offload_param_retain(w);
            rt_offload_param_retain(b);
            rt_offload_param_node_ref(w, 1); /* w and b stay on the host while this node lives */
            rt_offload_param_node_ref(b, 1);
            c->holds = 1;
            c->w = w;
            c->b = b;
            c->cd = cd;
            c->x_dtype = x->meta.dtype;
            c->device = dev;
            c->w_needs = W->meta.requires_grad;
            c->w_version = w_version;
            c->w_delayed = w_delayed;
            c->b_needs = B && B->meta.requires_grad;
            node->ctx = c;
            node->ctx_free = lin_ctx_free;
            node->ctx_released = lin_ctx_released;
            rt_node_save(node, xc);
        } else {
            free(c);
        }
    }
    rt_tensor_release(xc);
    if (rc < 0) {
        rt_tensor_release(y);
        return rc;
    }
    *out = y;
    return RT_OK;
}
