/* autograd_saved_offload.c: save_on_cpu, PyTorch's torch.autograd.graph.save_on_cpu: the tensors
 * autograd saves for backward go to host memory, so that peak device memory does not grow with
 * the depth of a model whose weights are streamed (issue 5).
 *
 * rt_node_save (runtime/autograd.c) hands each saved tensor to rt_saved_offload_pack while the mode
 * is on. A pack record ("record") holds a host copy of the tensor's bytes:
 *   pack:     an event recorded on the compute stream (the caller's current stream, NULL) after the
 *             op that produced the tensor; a side stream of the device waits for it and copies the
 *             tensor's bytes into a host buffer (pinned, from a small cache), then records `done`.
 *             The record holds the device tensor only until `done` completes: every later
 *             pack/unpack polls the pending records and lets go of the finished ones, so their
 *             device memory is freed as soon as nothing else holds it. At most MAX_PENDING records
 *             are in flight; beyond that the host waits for the oldest (bounded device memory).
 *   in-place: when a record lets go of its tensor, the storage version is compared with the one at
 *             pack time: a change marks the record and its unpack raises rt_node_saved's "modified
 *             in place" error (a change after that cannot alter the host copy).
 *   unpack:   a new device tensor, H2D on the compute stream (no host wait), cached in the record
 *             for every node that shares it, freed with the record. A record still in flight is
 *             served by the device tensor it still holds.
 *   sharing:  a tensor saved twice (a ReLU's output that the next Linear saves as its input) is
 *             packed once: live records are looked up by (storage uid, offset, shape, strides,
 *             dtype, version); the storage uid outlives the storage, unlike its address.
 * The bytes copied are the storage span the tensor covers when that is no larger than the tensor
 * (contiguous, permuted or expanded views keep their strides, so backward computes exactly as
 * without the mode); other views are made contiguous first.
 *
 * Backends: CUDA tensors through the backend's rt_device_api; CPU tensors through the CPU copy
 * streams (kernels/cpu/cpu_streams.c) when rt_offload_set_cpu_streams is on, so CI runs this same
 * asynchronous path with a real copy thread, else as a plain synchronous copy. Parameters (leaves
 * that require grad) and tensors under RT_SAVE_ON_CPU_MIN_BYTES are saved as usual. A pack that
 * fails (out of pinned memory, ...) keeps the tensor on its device (the error stays in
 * rt_last_error and stats.fallbacks counts it): rt_node_save cannot fail. */
#include "internal.h"
#include "offload_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PENDING 4  /* copies in flight before the host waits for the oldest (bounds memory) */
#define MAX_DEVICES 17 /* cpu + 16 CUDA ordinals */
#define CACHE_LIMIT ((size_t)8 << 30) /* pinned bytes kept for reuse */

typedef struct rt_saved_pack rt_saved_pack;

struct rt_saved_pack {
    atomic_int refcount;
    struct rt_saved_pack *prev, *next; /* live list (lookup for sharing) */
    struct rt_saved_pack *pnext;       /* pending FIFO; the FIFO holds a reference */
    /* key */
    uint64_t uid;
    int64_t offset;
    int ndim, dtype, version, device;
    int64_t shape[RT_MAX_DIMS], strides[RT_MAX_DIMS];
    /* the copy: span elements, restored with geometry (cshape, cstrides) at offset 0 */
    int64_t span;
    int64_t cstrides[RT_MAX_DIMS];
    size_t nbytes;
    void *host;
    size_t host_cap;
    int pinned;
    const rt_backend *be; /* frees a pinned buffer */
    /* in flight (until done): api NULL for the synchronous CPU copy */
    const rt_device_api *api;
    int in_flight;
    rt_tensor *orig;     /* the saved tensor */
    rt_tensor *src_copy; /* its contiguous copy that the side stream reads, or NULL */
    rt_event *computed, *done, *reuse_ev;
    /* results */
    int modified, modified_version;
    rt_tensor *unpacked;
    rt_event *h2d_ev; /* after the last H2D out of a pinned buffer */
};

typedef struct cached_buf {
    void *ptr;
    size_t cap;
    const rt_backend *be;
    const rt_device_api *api;
    rt_event *ev; /* the last H2D out of it, or NULL */
} cached_buf;

static _Thread_local int tl_mode;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static rt_saved_pack *g_live;
static rt_saved_pack *g_phead, *g_ptail;
static int g_npending;
static rt_stream *g_side[MAX_DEVICES];
static cached_buf *g_cache;
static int g_ncache, g_cache_cap;
static rt_save_on_cpu_stats g_st;

/* ================================================================================================
 * Mode and statistics
 * ============================================================================================== */

int rt_autograd_set_save_on_cpu(int mode) {
    if (mode != 0 && mode != RT_SAVE_ON_CPU_PINNED && mode != RT_SAVE_ON_CPU_PAGEABLE)
        return RT_ERR(RT_ERR_INVALID,
                      "autograd.graph.set_save_on_cpu: mode must be 0 (off), 1 (pinned) or 2 "
                      "(pageable), got %d",
                      mode);
    int prev = tl_mode;
    tl_mode = mode;
    return prev;
}

int rt_autograd_get_save_on_cpu(void) {
    return tl_mode;
}

int rt_autograd_save_on_cpu_stats(rt_save_on_cpu_stats *out) {
    pthread_mutex_lock(&g_mu);
    *out = g_st;
    pthread_mutex_unlock(&g_mu);
    return RT_OK;
}

/* ================================================================================================
 * Host buffers: pinned ones are cached (cudaHostAlloc is slow and cudaFreeHost synchronises the
 * device); a cached buffer carries the event of the last H2D that read it, which its next D2H
 * waits for on the side stream.
 * ============================================================================================== */

static void buf_free_now(cached_buf b) {
    if (b.ev) {
        b.api->event_synchronize(b.ev);
        b.api->event_destroy(b.ev);
    }
    b.be->free(RT_DEVICE_CPU, b.ptr, RT_MEM_PINNED, b.cap);
}

int rt_autograd_save_on_cpu_empty_cache(void) {
    pthread_mutex_lock(&g_mu);
    cached_buf *c = g_cache;
    int n = g_ncache;
    g_cache = NULL;
    g_ncache = g_cache_cap = 0;
    g_st.cached_bytes = 0;
    pthread_mutex_unlock(&g_mu);
    for (int i = 0; i < n; i++)
        buf_free_now(c[i]);
    free(c);
    return RT_OK;
}

static size_t round_cap(size_t n) {
    size_t p = 1;
    while (p < n)
        p <<= 1;
    size_t q = p / 8 > 65536 ? p / 8 : 65536; /* at most 1/8 wasted, reusable across sizes */
    return (n + q - 1) / q * q;
}

static int pinned_get(const rt_backend *be, const rt_device_api *api, size_t n, void **ptr,
                      size_t *cap, rt_event **ev) {
    pthread_mutex_lock(&g_mu);
    int best = -1;
    for (int i = 0; i < g_ncache; i++)
        if (g_cache[i].be == be && g_cache[i].cap >= n && g_cache[i].cap <= 2 * n &&
            (best < 0 || g_cache[i].cap < g_cache[best].cap))
            best = i;
    if (best >= 0) {
        *ptr = g_cache[best].ptr;
        *cap = g_cache[best].cap;
        *ev = g_cache[best].ev;
        g_st.cached_bytes -= (int64_t)g_cache[best].cap;
        g_cache[best] = g_cache[--g_ncache];
        pthread_mutex_unlock(&g_mu);
        return RT_OK;
    }
    pthread_mutex_unlock(&g_mu);
    (void)api;
    *ev = NULL;
    *cap = round_cap(n);
    int rc = be->alloc(RT_DEVICE_CPU, *cap, RT_MEM_PINNED, ptr);
    if (rc == RT_ERR_OOM) { /* cached buffers of other sizes may be what holds the memory */
        rt_autograd_save_on_cpu_empty_cache();
        rc = be->alloc(RT_DEVICE_CPU, *cap, RT_MEM_PINNED, ptr);
    }
    return rc;
}

static void pinned_put(const rt_backend *be, const rt_device_api *api, void *ptr, size_t cap,
                       rt_event *ev) {
    cached_buf b = {ptr, cap, be, api, ev};
    pthread_mutex_lock(&g_mu);
    if ((size_t)g_st.cached_bytes + cap <= CACHE_LIMIT) {
        if (g_ncache == g_cache_cap) {
            int nc = g_cache_cap ? 2 * g_cache_cap : 32;
            cached_buf *p = realloc(g_cache, sizeof *p * (size_t)nc);
            if (p) {
                g_cache = p;
                g_cache_cap = nc;
            }
        }
        if (g_ncache < g_cache_cap) {
            g_cache[g_ncache++] = b;
            g_st.cached_bytes += (int64_t)cap;
            pthread_mutex_unlock(&g_mu);
            return;
        }
    }
    pthread_mutex_unlock(&g_mu);
    buf_free_now(b);
}

/* ================================================================================================
 * Records
 * ============================================================================================== */

/* The copy of r is done: check the version, let go of the device tensor and the events. */
static void complete(rt_saved_pack *r) {
    int cur = atomic_load(&r->orig->storage->version);
    rt_tensor *orig = r->orig, *copy = r->src_copy;
    r->orig = r->src_copy = NULL;
    if (r->api) { /* `done` completed: the side stream is past every event it waited for */
        r->api->event_destroy(r->computed);
        r->api->event_destroy(r->done);
        if (r->reuse_ev) r->api->event_destroy(r->reuse_ev);
        r->computed = r->done = r->reuse_ev = NULL;
    }
    pthread_mutex_lock(&g_mu);
    if (cur != r->version) {
        r->modified = 1;
        r->modified_version = cur;
        g_st.modified++;
    }
    r->in_flight = 0;
    pthread_mutex_unlock(&g_mu);
    /* (released outside the lock: a release can free nodes that release records) */
    rt_tensor_release(copy);
    rt_tensor_release(orig);
}

void rt_saved_offload_release(rt_saved_pack *r) {
    if (!r || atomic_fetch_sub(&r->refcount, 1) != 1) return;
    pthread_mutex_lock(&g_mu);
    if (r->prev)
        r->prev->next = r->next;
    else
        g_live = r->next;
    if (r->next) r->next->prev = r->prev;
    g_st.live--;
    g_st.host_bytes -= (int64_t)r->nbytes;
    pthread_mutex_unlock(&g_mu);
    rt_tensor_release(r->unpacked);
    if (r->pinned)
        pinned_put(r->be, r->api, r->host, r->host_cap, r->h2d_ev);
    else
        free(r->host);
    free(r);
}

/* Take the finished records off the pending FIFO (all of them, or with `all` wait for each). */
static void drain(int all) {
    for (;;) {
        rt_saved_pack *done = NULL, **tail = &done;
        pthread_mutex_lock(&g_mu);
        rt_saved_pack **pp = &g_phead;
        g_ptail = NULL;
        while (*pp) {
            rt_saved_pack *r = *pp;
            if (all || !r->api || r->api->event_query(r->done) == 1) {
                *pp = r->pnext;
                r->pnext = NULL;
                *tail = r;
                tail = &r->pnext;
                g_npending--;
            } else {
                g_ptail = r;
                pp = &r->pnext;
            }
        }
        g_st.pending = g_npending;
        pthread_mutex_unlock(&g_mu);
        if (!done) return;
        while (done) {
            rt_saved_pack *r = done;
            done = r->pnext;
            r->pnext = NULL;
            if (all && r->api) r->api->event_synchronize(r->done);
            complete(r);
            rt_saved_offload_release(r); /* the FIFO's reference */
        }
        if (!all) return;
    }
}

int rt_autograd_save_on_cpu_synchronize(void) {
    drain(1);
    return RT_OK;
}

/* Beyond MAX_PENDING copies in flight, wait for the oldest. */
static void bound_pending(void) {
    for (;;) {
        pthread_mutex_lock(&g_mu);
        rt_saved_pack *r = NULL;
        if (g_npending > MAX_PENDING) {
            r = g_phead;
            g_phead = r->pnext;
            if (!g_phead) g_ptail = NULL;
            r->pnext = NULL;
            g_st.pending = --g_npending;
        }
        pthread_mutex_unlock(&g_mu);
        if (!r) return;
        if (r->api) r->api->event_synchronize(r->done);
        complete(r);
        rt_saved_offload_release(r);
    }
}

static int same_key(const rt_saved_pack *r, const rt_tensor *t) {
    const rt_tensor_meta *m = &t->meta;
    return r->uid == t->storage->uid && r->offset == m->offset && r->ndim == m->ndim &&
           r->dtype == m->dtype && r->version == atomic_load(&t->storage->version) &&
           !memcmp(r->shape, m->shape, sizeof(int64_t) * (size_t)m->ndim) &&
           !memcmp(r->strides, m->strides, sizeof(int64_t) * (size_t)m->ndim);
}

static int side_stream(const rt_device_api *api, int device, rt_stream **out) {
    pthread_mutex_lock(&g_mu);
    int rc = RT_OK;
    if (!g_side[device + 1]) rc = api->stream_create(device, &g_side[device + 1]);
    *out = g_side[device + 1];
    pthread_mutex_unlock(&g_mu);
    return rc;
}

/* Make the record for t and start its copy. */
static int pack_new(rt_tensor *t, int mode, rt_saved_pack **out) {
    static const char *op = "save_on_cpu";
    const rt_tensor_meta *m = &t->meta;
    int device = m->device;
    if (device < RT_DEVICE_CPU || device >= MAX_DEVICES - 1)
        return RT_ERR(RT_ERR_DEVICE, "%s: invalid device code %d", op, device);
    const rt_device_api *api = NULL;
    const rt_backend *be = t->storage->backend;
    if (device == RT_DEVICE_CPU) {
        if (rt_offload_cpu_streams_enabled()) api = &rt_cpu_stream_api;
    } else {
        api = be->device_api;
        if (!api || !api->memcpy_async || !api->stream_create || !api->event_query)
            return RT_ERR(RT_ERR_UNSUPPORTED,
                          "%s: the %s backend has no asynchronous copies, streams or events", op,
                          be->name);
    }
    rt_saved_pack *r = calloc(1, sizeof *r);
    if (!r) return RT_ERR(RT_ERR_OOM, "%s: out of host memory for a pack record", op);
    atomic_init(&r->refcount, 1);
    r->uid = t->storage->uid;
    r->offset = m->offset;
    r->ndim = m->ndim;
    r->dtype = m->dtype;
    r->device = device;
    r->version = atomic_load(&t->storage->version);
    memcpy(r->shape, m->shape, sizeof r->shape);
    memcpy(r->strides, m->strides, sizeof r->strides);
    r->api = api;
    r->be = be;
    size_t es = rt_dtype_size(m->dtype);
    /* the storage span the view covers; copied as is when no larger than the view */
    int64_t span = 1;
    int dense = 1;
    for (int d = 0; d < m->ndim; d++) {
        if (m->strides[d] < 0) dense = 0;
        span += (m->shape[d] - 1) * m->strides[d];
    }
    const char *src;
    int rc = RT_OK;
    if (dense && span <= m->numel) {
        src = (const char *)t->storage->data + m->offset * (int64_t)es;
        memcpy(r->cstrides, m->strides, sizeof r->cstrides);
    } else {
        int prev = rt_set_grad_enabled(0); /* no node for this internal copy */
        rc = rt_contiguous(t, &r->src_copy);
        rt_set_grad_enabled(prev);
        if (rc < 0) {
            free(r);
            return rc;
        }
        span = m->numel;
        src = rt_tensor_data_ptr(r->src_copy);
        rt_contiguous_strides(m->ndim, m->shape, r->cstrides);
    }
    r->span = span;
    r->nbytes = (size_t)span * es;
    r->pinned = api && api != &rt_cpu_stream_api && mode == RT_SAVE_ON_CPU_PINNED;
    if (r->pinned) {
        rc = pinned_get(be, api, r->nbytes, &r->host, &r->host_cap, &r->reuse_ev);
    } else {
        r->host = malloc(r->nbytes ? r->nbytes : 1);
        r->host_cap = r->nbytes;
        if (!r->host)
            rc = RT_ERR(RT_ERR_OOM, "%s: out of host memory for %zu bytes", op, r->nbytes);
    }
    if (rc == RT_OK && api) {
        rt_stream *side = NULL;
        rc = side_stream(api, device, &side);
        if (rc == RT_OK) rc = api->event_create(0, &r->computed);
        if (rc == RT_OK) rc = api->event_create(0, &r->done);
        if (rc == RT_OK) rc = api->event_record(r->computed, NULL);
        if (rc == RT_OK && r->reuse_ev) rc = api->stream_wait_event(side, r->reuse_ev);
        if (rc == RT_OK) rc = api->stream_wait_event(side, r->computed);
        if (rc == RT_OK) rc = api->memcpy_async(r->host, src, r->nbytes, side);
        if (rc == RT_OK) rc = api->event_record(r->done, side);
        if (rc < 0) {
            if (side) api->stream_synchronize(side); /* what was queued reads src, writes host */
            if (r->computed) api->event_destroy(r->computed);
            if (r->done) api->event_destroy(r->done);
            r->computed = r->done = NULL;
        }
    } else if (rc == RT_OK) {
        memcpy(r->host, src, r->nbytes);
    }
    if (rc < 0) {
        if (r->pinned && r->host)
            pinned_put(be, api, r->host, r->host_cap, r->reuse_ev);
        else if (r->reuse_ev)
            api->event_destroy(r->reuse_ev);
        if (!r->pinned) free(r->host);
        rt_tensor_release(r->src_copy);
        free(r);
        return rc;
    }
    rt_tensor_retain(t);
    r->orig = t;
    r->in_flight = 1;
    atomic_fetch_add(&r->refcount, 1); /* the pending FIFO's */
    pthread_mutex_lock(&g_mu);
    r->next = g_live;
    if (g_live) g_live->prev = r;
    g_live = r;
    if (g_ptail)
        g_ptail->pnext = r;
    else
        g_phead = r;
    g_ptail = r;
    g_st.pending = ++g_npending;
    g_st.live++;
    g_st.packed++;
    g_st.packed_bytes += (int64_t)r->nbytes;
    g_st.host_bytes += (int64_t)r->nbytes;
    pthread_mutex_unlock(&g_mu);
    *out = r;
    return RT_OK;
}

int rt_saved_offload_pack(rt_tensor *t, rt_saved_pack **out) {
    *out = NULL;
    int mode = tl_mode;
    if (!mode || !t) return 0;
    if (t->meta.is_leaf && t->meta.requires_grad) return 0; /* a parameter: on its device anyway */
    if ((size_t)t->meta.numel * rt_dtype_size(t->meta.dtype) < (size_t)RT_SAVE_ON_CPU_MIN_BYTES)
        return 0;
    drain(0);
    pthread_mutex_lock(&g_mu);
    rt_saved_pack *r = g_live;
    while (r && !same_key(r, t))
        r = r->next;
    if (r) {
        atomic_fetch_add(&r->refcount, 1);
        g_st.shared++;
    }
    pthread_mutex_unlock(&g_mu);
    if (r) {
        *out = r;
        return 1;
    }
    if (pack_new(t, mode, &r) < 0) {
        pthread_mutex_lock(&g_mu);
        g_st.fallbacks++;
        pthread_mutex_unlock(&g_mu);
        return 0;
    }
    bound_pending();
    *out = r;
    return 1;
}

int rt_saved_offload_unpack(rt_saved_pack *r, const char *node_name, rt_tensor **out) {
    *out = NULL;
    drain(0);
    pthread_mutex_lock(&g_mu);
    int in_flight = r->in_flight;
    if (in_flight) { /* still holds the device tensor: check it now */
        int cur = atomic_load(&r->orig->storage->version);
        if (cur != r->version) {
            r->modified = 1;
            r->modified_version = cur;
        }
    }
    int modified = r->modified, mv = r->modified_version;
    pthread_mutex_unlock(&g_mu);
    if (modified)
        return RT_ERR(RT_ERR_AUTOGRAD,
                      "backward: a tensor saved by %s was modified in place after it was saved "
                      "(version %d, expected %d)",
                      node_name, mv, r->version);
    if (r->unpacked) {
        *out = r->unpacked;
        return RT_OK;
    }
    if (in_flight) { /* (only this thread completes records while it runs autograd) */
        rt_tensor *d = r->src_copy ? r->src_copy : r->orig;
        rt_tensor_retain(d);
        r->unpacked = d;
        pthread_mutex_lock(&g_mu);
        g_st.unpacked_direct++;
        pthread_mutex_unlock(&g_mu);
        *out = d;
        return RT_OK;
    }
    rt_tensor *base, *v;
    RT_TRY(rt_tensor_new(1, &r->span, r->dtype, r->device, &base));
    int rc = rt_tensor_new_view(base, r->ndim, r->shape, r->cstrides, 0, &v);
    void *dst = rt_tensor_data_ptr(base);
    rt_tensor_release(base);
    if (rc < 0) return rc;
    if (r->api) {
        rc = r->api->memcpy_async(dst, r->host, r->nbytes, NULL); /* the compute stream */
        if (rc == RT_OK && r->pinned) {
            if (!r->h2d_ev) rc = r->api->event_create(0, &r->h2d_ev);
            if (rc == RT_OK) rc = r->api->event_record(r->h2d_ev, NULL);
            if (rc < 0) r->api->synchronize(r->device); /* the buffer must not be reused early */
        }
    } else {
        memcpy(dst, r->host, r->nbytes);
    }
    if (rc < 0) {
        rt_tensor_release(v);
        return rc;
    }
    r->unpacked = v;
    pthread_mutex_lock(&g_mu);
    g_st.unpacked++;
    pthread_mutex_unlock(&g_mu);
    *out = v;
    return RT_OK;
}
