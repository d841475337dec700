/* autograd.c: the tape (nodes recorded by ops) and the backward engine (DESIGN section 4).
 *
 * Each op run in grad mode with an input that requires grad attaches a node to its output. A node
 * holds edges to its inputs' nodes (or to leaves), the tensors its backward needs, and small
 * arguments. The engine walks the graph from the root in dependency order, accumulating incoming
 * gradients per node, and hands control back to the caller at nodes written in Lua. */
#include "internal.h"
#include "autograd_profile.h"
#include "offload_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local int g_grad_disabled; /* grad mode is on unless a no_grad scope is active */

int rt_grad_enabled(void) {
    return !g_grad_disabled;
}

int rt_set_grad_enabled(int enabled) {
    int prev = !g_grad_disabled;
    g_grad_disabled = !enabled;
    return prev;
}

/* ================================================================================================
 * Nodes
 * ============================================================================================== */

static rt_edge *edge_at(rt_node *n, int i) {
    return i < RT_NODE_MAX_INPUTS ? &n->inputs[i] : &n->extra[i - RT_NODE_MAX_INPUTS];
}

static bool tensor_requires_grad(const rt_tensor *t) {
    return t && t->meta.requires_grad;
}

bool rt_needs_grad1(const rt_tensor *a) {
    return !g_grad_disabled && tensor_requires_grad(a);
}
bool rt_needs_grad2(const rt_tensor *a, const rt_tensor *b) {
    return !g_grad_disabled && (tensor_requires_grad(a) || tensor_requires_grad(b));
}
bool rt_needs_grad3(const rt_tensor *a, const rt_tensor *b, const rt_tensor *c) {
    return !g_grad_disabled &&
           (tensor_requires_grad(a) || tensor_requires_grad(b) || tensor_requires_grad(c));
}

static void release_saved(rt_node *n) {
    for (int i = 0; i < n->nsaved; i++) {
        if (n->saved[i]) atomic_fetch_sub(&n->saved[i]->saved_refs, 1);
        rt_tensor_release(n->saved[i]);
        n->saved[i] = NULL;
        rt_saved_offload_release(n->saved_pack[i]);
        n->saved_pack[i] = NULL;
    }
}

/* Freed custom-node ids waiting for Lua to collect (a small growable list under a lock). */
static pthread_mutex_t g_freed_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t *g_freed;
static int g_nfreed, g_freed_cap;

static void note_custom_freed(int64_t id) {
    pthread_mutex_lock(&g_freed_lock);
    if (g_nfreed == g_freed_cap) {
        int cap = g_freed_cap ? g_freed_cap * 2 : 256;
        int64_t *p = realloc(g_freed, sizeof(int64_t) * (size_t)cap);
        if (p) {
            g_freed = p;
            g_freed_cap = cap;
        }
    }
    if (g_nfreed < g_freed_cap) g_freed[g_nfreed++] = id;
    pthread_mutex_unlock(&g_freed_lock);
}

int rt_custom_take_freed(int64_t *ids, int cap) {
    pthread_mutex_lock(&g_freed_lock);
    int n = g_nfreed < cap ? g_nfreed : cap;
    for (int i = 0; i < n; i++)
        ids[i] = g_freed[g_nfreed - 1 - i];
    g_nfreed -= n;
    pthread_mutex_unlock(&g_freed_lock);
    return n;
}

void rt_node_release(rt_node *n) {
    if (!n || atomic_fetch_sub(&n->refcount, 1) != 1) return;
    if (n->custom_id >= 0) note_custom_freed(n->custom_id);
    for (int i = 0; i < n->ninputs; i++) {
        rt_edge *e = edge_at(n, i);
        rt_node_release(e->node);
        rt_tensor_release(e->leaf);
    }
    free(n->extra);
    release_saved(n);
    if (n->ctx_free) n->ctx_free(n->ctx);
    rt_tensor_release(n->grad_accum);
    free(n);
}

static int node_new(rt_tensor *out, const char *name, int n, rt_tensor *const *inputs,
                    rt_node **node) {
    rt_node *nd = calloc(1, sizeof *nd);
    if (!nd) return RT_ERR(RT_ERR_OOM, "%s: out of host memory for an autograd node", name);
    atomic_init(&nd->refcount, 1);
    nd->name = name;
    nd->custom_id = -1;
    nd->ninputs = n;
    if (n > RT_NODE_MAX_INPUTS) {
        nd->nextra = n - RT_NODE_MAX_INPUTS;
        nd->extra = calloc((size_t)nd->nextra, sizeof(rt_edge));
        if (!nd->extra) {
            free(nd);
            return RT_ERR(RT_ERR_OOM, "%s: out of host memory for autograd edges", name);
        }
    }
    for (int i = 0; i < n && i < RT_NODE_MAX_INPUTS; i++)
        if (inputs[i]) nd->in_meta[i] = inputs[i]->meta;
    for (int i = 0; i < n; i++) {
        rt_tensor *in = inputs[i];
        if (!in || !in->meta.requires_grad) continue;
        rt_edge *e = edge_at(nd, i);
        if (in->grad_fn) {
            e->node = in->grad_fn;
            atomic_fetch_add(&in->grad_fn->refcount, 1);
        } else {
            e->leaf = in;
            rt_tensor_retain(in);
        }
        if (i < RT_NODE_MAX_INPUTS) nd->input_needs_grad[i] = true;
    }
    nd->out_dtype = out->meta.dtype;
    nd->out_device = out->meta.device;
    nd->out_ndim = out->meta.ndim;
    memcpy(nd->out_shape, out->meta.shape, sizeof nd->out_shape);
    rt_node_release(out->grad_fn);
    out->grad_fn = nd;
    out->meta.requires_grad = 1;
    out->meta.is_leaf = 0;
    *node = nd;
    return RT_OK;
}

int rt_node_attach(rt_tensor *out, const char *name, rt_backward_fn backward, int n,
                   rt_tensor *const *inputs, rt_node **node) {
    RT_TRY(node_new(out, name, n, inputs, node));
    (*node)->backward = backward;
    return RT_OK;
}

void rt_node_save(rt_node *node, rt_tensor *t) {
    int i = node->nsaved++;
    node->saved_version[i] = t ? atomic_load(&t->storage->version) : 0;
    /* under save_on_cpu the tensor may go to host memory instead (autograd_saved_offload.c) */
    if (t && rt_saved_offload_pack(t, &node->saved_pack[i]) == 1) return;
    node->saved[i] = t;
    rt_tensor_retain(t);
    if (t) atomic_fetch_add(&t->saved_refs, 1);
}

int rt_node_saved(rt_node *node, int i, rt_tensor **out) {
    if (node->released)
        return RT_ERR(RT_ERR_AUTOGRAD,
                      "backward: trying to backward through %s a second time; its saved tensors "
                      "were freed (pass retain_graph=true to the first backward)",
                      node->name);
    if (node->saved_pack[i]) return rt_saved_offload_unpack(node->saved_pack[i], node->name, out);
    rt_tensor *t = node->saved[i];
    if (t && atomic_load(&t->storage->version) != node->saved_version[i])
        return RT_ERR(RT_ERR_AUTOGRAD,
                      "backward: a tensor saved by %s was modified in place after it was saved "
                      "(version %d, expected %d)",
                      node->name, atomic_load(&t->storage->version), node->saved_version[i]);
    *out = t;
    return RT_OK;
}

int rt_custom_attach(rt_tensor *output, int n, rt_tensor *const *inputs, int64_t custom_id) {
    if (custom_id < 0)
        return RT_ERR(RT_ERR_INVALID, "custom function: id must be >= 0, got %lld",
                      (long long)custom_id);
    if (n < 0) return RT_ERR(RT_ERR_INVALID, "custom function: negative input count %d", n);
    bool any = false;
    for (int i = 0; i < n; i++)
        any = any || tensor_requires_grad(inputs[i]);
    if (!any || g_grad_disabled) return RT_OK;
    rt_node *node;
    RT_TRY(node_new(output, "CustomFunctionBackward", n, inputs, &node));
    node->custom_id = custom_id;
    return RT_OK;
}

/* ================================================================================================
 * Tensor-level autograd state
 * ============================================================================================== */

int rt_set_requires_grad(rt_tensor *t, int requires_grad) {
    if (!t->meta.is_leaf && !requires_grad)
        return RT_ERR(
            RT_ERR_AUTOGRAD,
            "requires_grad_: cannot turn off requires_grad of a non-leaf tensor (from %s); "
            "use detach()",
            t->grad_fn ? t->grad_fn->name : "?");
    if (requires_grad && !rt_dtype_is_float(t->meta.dtype))
        return RT_ERR(RT_ERR_DTYPE,
                      "requires_grad_: only floating-point tensors can require grad, got %s",
                      rt_dtype_name(t->meta.dtype));
    t->meta.requires_grad = requires_grad != 0;
    return RT_OK;
}

int rt_tensor_grad(rt_tensor *t, rt_tensor **out) {
    *out = t->grad;
    rt_tensor_retain(t->grad);
    return RT_OK;
}

int rt_tensor_set_grad(rt_tensor *t, rt_tensor *grad) {
    if (grad && (!rt_same_shape(t, grad) || grad->meta.device != t->meta.device)) {
        char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF];
        return RT_ERR(RT_ERR_SHAPE,
                      "set grad: gradient of shape %s on device %d does not fit a "
                      "tensor of shape %s on device %d",
                      rt_shape_str(b1, sizeof b1, grad->meta.ndim, grad->meta.shape),
                      grad->meta.device, rt_shape_str(b2, sizeof b2, t->meta.ndim, t->meta.shape),
                      t->meta.device);
    }
    rt_tensor_retain(grad);
    rt_tensor_release(t->grad);
    t->grad = grad;
    return RT_OK;
}

int rt_check_inplace_autograd(const char *op, const rt_tensor *t) {
    if (!g_grad_disabled && t->meta.requires_grad && t->grad_fn)
        return RT_ERR(RT_ERR_AUTOGRAD,
                      "%s: in-place operations on a tensor that requires grad (from %s) are not "
                      "recorded by autograd; use the out-of-place form (or no_grad)",
                      op, t->grad_fn->name);
    return RT_OK;
}

int rt_tensor_version(const rt_tensor *t) {
    return atomic_load(&t->storage->version);
}

int rt_detach(rt_tensor *t, rt_tensor **out) {
    return rt_tensor_new_view(t, t->meta.ndim, t->meta.shape, t->meta.strides, t->meta.offset, out);
}

const char *rt_tensor_grad_fn_name(const rt_tensor *t) {
    return t->grad_fn ? t->grad_fn->name : NULL;
}

/* ================================================================================================
 * The engine
 * ============================================================================================== */

struct rt_autograd_task {
    int64_t id;
    int retain_graph;
    int nnodes, cap;
    rt_node **nodes; /* every node reached, retained */
    int nready;
    rt_node **ready;  /* nodes whose incoming gradient is complete */
    rt_node *pending; /* custom node waiting for rt_autograd_supply */
    rt_tensor **pending_grads;
    int prev_grad_mode;
    /* Out of memory (rt_autograd_run returned RT_AUTOGRAD_RETRY_OOM): the allocation that failed,
     * as (node, step) with step OOM_STEP_BACKWARD, OOM_STEP_ZERO_GRAD or the index of the input
     * whose gradient could not be accumulated, so that a second failure of it is the error; and
     * the input gradients of a node whose routing stopped at input fin_next, resumed there. */
    rt_node *oom_node;
    int oom_step;
    rt_node *fin_node;
    rt_tensor **fin_grads; /* fin_node->ninputs entries on the heap, owned */
    int fin_next;
};

enum { OOM_STEP_BACKWARD = -1, OOM_STEP_ZERO_GRAD = -2 };

static atomic_llong g_task_ids = 1;

static int push_node(rt_autograd_task *t, rt_node *n) {
    if (t->nnodes == t->cap) {
        int cap = t->cap ? t->cap * 2 : 64;
        rt_node **p = realloc(t->nodes, sizeof(rt_node *) * (size_t)cap);
        rt_node **r = realloc(t->ready, sizeof(rt_node *) * (size_t)cap);
        if (p) t->nodes = p;
        if (r) t->ready = r;
        if (!p || !r) return RT_ERR(RT_ERR_OOM, "backward: out of host memory for the graph");
        t->cap = cap;
    }
    atomic_fetch_add(&n->refcount, 1);
    n->task_id = t->id;
    n->deps = 0;
    rt_tensor_release(n->grad_accum);
    n->grad_accum = NULL;
    t->nodes[t->nnodes++] = n;
    return RT_OK;
}

/* Add g into *slot (a new reference is stored; g is borrowed). */
static int accumulate(rt_tensor **slot, rt_tensor *g) {
    if (!*slot) {
        rt_tensor_retain(g);
        *slot = g;
        return RT_OK;
    }
    rt_tensor *sum;
    RT_TRY(rt_binary(RT_ADD, *slot, g, &sum));
    rt_tensor_release(*slot);
    *slot = sum;
    return RT_OK;
}

/* Parameter gradients accumulate (+=) in the leaf's dtype, never overwrite. */
static int accumulate_leaf(rt_tensor *leaf, rt_tensor *g) {
    if (!rt_same_shape(leaf, g)) {
        char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF];
        return RT_ERR(RT_ERR_SHAPE, "backward: gradient of shape %s for a leaf of shape %s",
                      rt_shape_str(b1, sizeof b1, g->meta.ndim, g->meta.shape),
                      rt_shape_str(b2, sizeof b2, leaf->meta.ndim, leaf->meta.shape));
    }
    /* a streamed parameter's .grad may still be written by the offload engine's copy of the
     * gradient of a streamed op that used it: wait for that before adding to it */
    rt_offload_wait_grads_of(leaf);
    if (leaf->grad) return rt_binary_(RT_ADD, leaf->grad, g);
    /* First gradient. When the engine holds the only reference to it and to its storage, and it is
     * a plain contiguous tensor of the leaf's dtype and device, nobody else can see it: keep it as
     * the gradient instead of copying (PyTorch steals such gradients too; the copy was 5% of a
     * Fashion-MNIST step). */
    if (atomic_load(&g->refcount) == 1 && atomic_load(&g->storage->refcount) == 1 &&
        g->meta.dtype == leaf->meta.dtype && g->meta.device == leaf->meta.device &&
        g->meta.offset == 0 && !g->grad_fn && rt_tensor_is_contiguous(g) &&
        (size_t)g->meta.numel * rt_dtype_size(g->meta.dtype) == g->storage->nbytes) {
        rt_tensor_retain(g);
        leaf->grad = g;
        return RT_OK;
    }
    /* Otherwise store a private copy so later in-place accumulation never writes into a tensor
     * some other part of the graph still uses. */
    rt_tensor *copy;
    RT_TRY(rt_tensor_new(leaf->meta.ndim, leaf->meta.shape, leaf->meta.dtype, leaf->meta.device,
                         &copy));
    int rc = rt_copy_(copy, g);
    if (rc < 0) {
        rt_tensor_release(copy);
        return rc;
    }
    leaf->grad = copy;
    return RT_OK;
}

/* A gradient a custom (Lua) function returns for an input computed by node c must have c's output
 * shape: a node downstream would otherwise sum a wrong-shaped one down to its input's shape
 * (undoing a broadcast) and hand on a silently wrong gradient. Leaves are checked by
 * accumulate_leaf. Built-in nodes are trusted: the offload engine deliberately routes a
 * parameter's gradient to its hook carrier's empty anchor (lua/ramtorch/offload.lua). */
static int check_grad_shape(const rt_node *n, int i, const rt_node *c, const rt_tensor *g) {
    if (g->meta.ndim == c->out_ndim &&
        !memcmp(g->meta.shape, c->out_shape, sizeof(int64_t) * (size_t)c->out_ndim))
        return RT_OK;
    char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF];
    return RT_ERR(RT_ERR_SHAPE,
                  "backward: %s returned a gradient of shape %s for input %d of shape %s", n->name,
                  rt_shape_str(b1, sizeof b1, g->meta.ndim, g->meta.shape), i,
                  rt_shape_str(b2, sizeof b2, c->out_ndim, c->out_shape));
}

/* Route the gradients grad_in[*next .. ninputs) of node n's inputs (owned: each is released and
 * cleared once routed), then free what the graph no longer needs. When one cannot be accumulated,
 * the routing stops there with *next = its index: those before it were applied and the rest are
 * still in grad_in, so the caller can resume at *next once memory is freed. This is safe because
 * accumulate and accumulate_leaf leave everything as it was when they fail (the sum is a new
 * tensor stored only on success, the in-place add into a leaf's .grad allocates nothing), so no
 * gradient is applied twice and none is lost. */
static int finish_node(rt_autograd_task *t, rt_node *n, rt_tensor **grad_in, int *next) {
    for (int i = *next; i < n->ninputs; i++) {
        rt_edge *e = edge_at(n, i);
        rt_tensor *g = grad_in[i];
        if (g) {
            int rc = RT_OK;
            if (e->leaf)
                rc = accumulate_leaf(e->leaf, g);
            else if (e->node && n->custom_id >= 0)
                rc = check_grad_shape(n, i, e->node, g);
            if (rc == RT_OK && !e->leaf && e->node) rc = accumulate(&e->node->grad_accum, g);
            if (rc < 0) {
                *next = i;
                return rc;
            }
        }
        if (e->node && e->node->task_id == t->id && --e->node->deps == 0)
            t->ready[t->nready++] = e->node;
        rt_tensor_release(g);
        grad_in[i] = NULL;
    }
    *next = n->ninputs;
    rt_tensor_release(n->grad_accum);
    n->grad_accum = NULL;
    if (!t->retain_graph && n->custom_id < 0) {
        release_saved(n);
        n->released = true;
        if (n->ctx_released) n->ctx_released(n->ctx);
    }
    return RT_OK;
}

/* The same allocation failed again after the caller collected garbage: name the node (and
 * input) around the allocator's message, which names the request. */
static int oom_again(const rt_node *n, int step) {
    char msg[768];
    snprintf(msg, sizeof msg, "%s", rt_last_error());
    if (step >= 0)
        return RT_ERR(RT_ERR_OOM,
                      "backward: out of memory adding up the gradient of input %d of %s, again "
                      "after a garbage collection: %s",
                      step, n->name, msg);
    return RT_ERR(RT_ERR_OOM,
                  "backward: %s ran out of memory, again after a garbage collection: %s", n->name,
                  msg);
}

/* finish_node from input `next` on, with gi (owned; on the heap when `heap`, else the caller's
 * array). When an accumulation runs out of memory and has not been retried yet, the gradients
 * still to route are parked in the task (copied to the heap if need be) and
 * RT_AUTOGRAD_RETRY_OOM is returned: the next rt_autograd_run resumes there. Any other failure
 * releases them and is returned. */
static int finish_or_park(rt_autograd_task *t, rt_node *n, rt_tensor **gi, bool heap, int next) {
    int rc = finish_node(t, n, gi, &next);
    if (rc == RT_ERR_OOM && t->oom_node == n && t->oom_step == next) {
        rc = oom_again(n, next);
    } else if (rc == RT_ERR_OOM) {
        rt_tensor **kept = gi;
        if (!heap) {
            kept = calloc((size_t)n->ninputs, sizeof(rt_tensor *));
            if (kept) memcpy(kept, gi, sizeof(rt_tensor *) * (size_t)n->ninputs);
        }
        if (kept) { /* (if not, the routing's own out-of-memory error stands) */
            t->fin_node = n;
            t->fin_grads = kept;
            t->fin_next = next;
            t->oom_node = n;
            t->oom_step = next;
            return RT_AUTOGRAD_RETRY_OOM;
        }
    }
    for (int i = next; rc < 0 && i < n->ninputs; i++)
        rt_tensor_release(gi[i]);
    if (heap) free(gi);
    return rc;
}

/* One of node n's own allocations (step: its backward, or the zero gradient made for it) failed
 * with rc. Out of memory the first time: put n back on the ready list exactly as it was (its
 * incoming gradient, grad_accum, kept) and return RT_AUTOGRAD_RETRY_OOM, so that the caller frees
 * memory and the next rt_autograd_run runs n again. A backward that fails leaves no side effects
 * (its outputs in gi are dropped by the engine; runtime/offload_linear.c records the parameter
 * gradients it already sent to the host so that a rerun does not send them twice). */
static int retry_node(rt_autograd_task *t, rt_node *n, int step, int rc) {
    if (rc != RT_ERR_OOM) return rc;
    if (t->oom_node == n && t->oom_step == step) return oom_again(n, step);
    t->ready[t->nready++] = n; /* n was just taken from there: the list has room */
    t->oom_node = n;
    t->oom_step = step;
    return RT_AUTOGRAD_RETRY_OOM;
}

void rt_autograd_task_free(rt_autograd_task *t) {
    if (!t) return;
    for (int i = 0; i < t->nnodes; i++) {
        rt_tensor_release(t->nodes[i]->grad_accum);
        t->nodes[i]->grad_accum = NULL;
        t->nodes[i]->task_id = 0;
        rt_node_release(t->nodes[i]);
    }
    if (t->pending_grads && t->pending)
        for (int i = 0; i < t->pending->ninputs; i++)
            rt_tensor_release(t->pending_grads[i]);
    free(t->pending_grads);
    if (t->fin_node)
        for (int i = t->fin_next; i < t->fin_node->ninputs; i++)
            rt_tensor_release(t->fin_grads[i]);
    free(t->fin_grads);
    free(t->nodes);
    free(t->ready);
    /* a backward that failed reports what it timed here, so its rows never join the next one's */
    if (rt_autograd_profile_enabled()) rt_autograd_profile_report();
    rt_set_grad_enabled(t->prev_grad_mode);
    free(t);
}

int rt_autograd_begin(rt_tensor *root, rt_tensor *grad_root, int retain_graph,
                      rt_autograd_task **out) {
    *out = NULL;
    if (!root->meta.requires_grad)
        return RT_ERR(RT_ERR_AUTOGRAD, "backward: the tensor does not require grad and has no "
                                       "grad_fn (was it computed under no_grad, or detached?)");
    rt_tensor *g0 = grad_root;
    if (!g0) {
        if (root->meta.numel != 1) {
            char b[RT_SHAPE_BUF];
            return RT_ERR(RT_ERR_AUTOGRAD,
                          "backward: grad can be implicitly created only for scalar outputs, got "
                          "shape %s (pass a gradient)",
                          rt_shape_str(b, sizeof b, root->meta.ndim, root->meta.shape));
        }
        RT_TRY(rt_full(root->meta.ndim, root->meta.shape, 1.0, root->meta.dtype, root->meta.device,
                       &g0));
    } else {
        if (!rt_same_shape(root, grad_root)) {
            char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF];
            return RT_ERR(RT_ERR_SHAPE, "backward: gradient of shape %s for an output of shape %s",
                          rt_shape_str(b1, sizeof b1, grad_root->meta.ndim, grad_root->meta.shape),
                          rt_shape_str(b2, sizeof b2, root->meta.ndim, root->meta.shape));
        }
        rt_tensor_retain(g0);
    }
    rt_autograd_task *t = calloc(1, sizeof *t);
    if (!t) {
        rt_tensor_release(g0);
        return RT_ERR(RT_ERR_OOM, "backward: out of host memory");
    }
    t->id = atomic_fetch_add(&g_task_ids, 1);
    t->retain_graph = retain_graph;
    t->prev_grad_mode = rt_set_grad_enabled(0);
    int rc = RT_OK;
    if (!root->grad_fn) { /* a leaf: its gradient is the seed */
        rc = accumulate_leaf(root, g0);
        rt_tensor_release(g0);
        if (rc < 0) {
            rt_autograd_task_free(t);
            return rc;
        }
        *out = t;
        return RT_OK;
    }
    /* Collect every reachable node (iterative DFS) and count its consumers. */
    rc = push_node(t, root->grad_fn);
    for (int i = 0; rc == RT_OK && i < t->nnodes; i++) {
        rt_node *n = t->nodes[i];
        for (int k = 0; k < n->ninputs; k++) {
            rt_node *c = edge_at(n, k)->node;
            if (!c) continue;
            if (c->task_id != t->id) rc = push_node(t, c);
            if (rc == RT_OK) c->deps++;
        }
    }
    if (rc < 0) {
        rt_tensor_release(g0);
        rt_autograd_task_free(t);
        return rc;
    }
    root->grad_fn->grad_accum = g0;
    t->ready[t->nready++] = root->grad_fn;
    *out = t;
    return RT_OK;
}

int rt_autograd_supply(rt_autograd_task *t, int input_index, rt_tensor *grad) {
    if (!t->pending)
        return RT_ERR(RT_ERR_AUTOGRAD, "backward: no custom function is waiting for gradients");
    if (input_index < 0 || input_index >= t->pending->ninputs)
        return RT_ERR(RT_ERR_INDEX, "backward: custom function has %d inputs, got input index %d",
                      t->pending->ninputs, input_index);
    rt_tensor_retain(grad);
    rt_tensor_release(t->pending_grads[input_index]);
    t->pending_grads[input_index] = grad;
    return RT_OK;
}

int rt_autograd_run(rt_autograd_task *t, int64_t *custom_id, rt_tensor **grad_out) {
    *grad_out = NULL;
    if (t->fin_node) { /* the caller has freed memory: resume the routing that ran out of it */
        rt_node *n = t->fin_node;
        rt_tensor **gi = t->fin_grads;
        t->fin_node = NULL;
        t->fin_grads = NULL;
        int rc = finish_or_park(t, n, gi, true, t->fin_next);
        if (rc != RT_OK) return rc;
    }
    if (t->pending) { /* the caller has supplied the custom node's input gradients */
        rt_node *n = t->pending;
        rt_tensor **gi = t->pending_grads;
        t->pending = NULL;
        t->pending_grads = NULL;
        int rc = finish_or_park(t, n, gi, true, 0);
        if (rc != RT_OK) return rc;
    }
    while (t->nready > 0) {
        rt_node *n = t->ready[--t->nready];
        rt_tensor *g = n->grad_accum;
        if (!g) { /* no gradient flowed here (all consumers gave none): still release children */
            int rc = rt_full(n->out_ndim, n->out_shape, 0.0, n->out_dtype, n->out_device, &g);
            if (rc < 0) return retry_node(t, n, OOM_STEP_ZERO_GRAD, rc);
            n->grad_accum = g;
        }
        if (n->custom_id >= 0) {
            t->pending = n;
            t->pending_grads = calloc((size_t)n->ninputs + 1, sizeof(rt_tensor *));
            if (!t->pending_grads) return RT_ERR(RT_ERR_OOM, "backward: out of host memory");
            *custom_id = n->custom_id;
            rt_tensor_retain(g);
            *grad_out = g;
            return RT_AUTOGRAD_CUSTOM;
        }
        if (n->released)
            return RT_ERR(RT_ERR_AUTOGRAD,
                          "backward: trying to backward through the graph a second time (%s has "
                          "already been freed); pass retain_graph=true to the first backward",
                          n->name);
        rt_tensor *grad_in[RT_NODE_MAX_INPUTS] = {0};
        rt_tensor **gi = grad_in;
        if (n->ninputs > RT_NODE_MAX_INPUTS) {
            gi = calloc((size_t)n->ninputs, sizeof(rt_tensor *));
            if (!gi) return RT_ERR(RT_ERR_OOM, "backward: out of host memory");
        }
        const int prof = rt_autograd_profile_enabled();
        const double prof_t0 = prof ? rt_autograd_profile_begin(n->out_device) : 0;
        int rc = n->backward(n, g, gi);
        /* Inputs that need no gradient get none, whatever the backward computed. */
        for (int i = 0; i < n->ninputs; i++) {
            rt_edge *e = edge_at(n, i);
            if (!e->node && !e->leaf) {
                rt_tensor_release(gi[i]);
                gi[i] = NULL;
            }
        }
        if (rc == RT_OK) {
            rc = finish_or_park(t, n, gi, gi != grad_in, 0); /* takes gi */
        } else {
            for (int i = 0; i < n->ninputs; i++)
                rt_tensor_release(gi[i]);
            if (gi != grad_in) free(gi);
            rc = retry_node(t, n, OOM_STEP_BACKWARD, rc);
        }
        if (prof) rt_autograd_profile_end(n->name, n->out_device, prof_t0);
        if (rc != RT_OK) return rc;
    }
    if (rt_autograd_profile_enabled()) rt_autograd_profile_report();
    return 0;
}

int rt_backward(rt_tensor *root, rt_tensor *grad_root, int retain_graph) {
    rt_autograd_task *t;
    RT_TRY(rt_autograd_begin(root, grad_root, retain_graph, &t));
    int64_t id;
    rt_tensor *g;
    int rc = rt_autograd_run(t, &id, &g);
    if (rc == RT_AUTOGRAD_CUSTOM) {
        rt_tensor_release(g);
        rc = RT_ERR(RT_ERR_AUTOGRAD, "backward: the graph has a custom (Lua) function; call "
                                     "backward from Lua");
    }
    /* No Lua here to collect garbage before a retry: the out-of-memory error (its message is
     * rt_last_error already) is the result. */
    if (rc == RT_AUTOGRAD_RETRY_OOM) rc = RT_ERR_OOM;
    rt_autograd_task_free(t);
    return rc;
}
