/* cuda_api.c: the public rt_cuda_* / rt_stream_* / rt_event_* calls and rt_pin_memory. libramtorch
 * has no CUDA dependency: each call loads the CUDA backend (runtime/backend.c) and forwards to its
 * rt_device_api; without CUDA it fails with RT_ERR_DEVICE and the reason. */
#include "device_api.h"

#include <stdlib.h>
#include <string.h>

static const rt_device_api *api(const char *op) {
    int n = 0;
    const rt_backend *be = rt_cuda_backend_loaded(&n);
    if (!be || !be->device_api) {
        RT_ERR(RT_ERR_DEVICE, "%s: the CUDA backend is not available (%s)", op,
               rt_cuda_unavailable_reason());
        return NULL;
    }
    return be->device_api;
}

#define API_OR_FAIL(op)                                                                            \
    const rt_device_api *a = api(op);                                                              \
    if (!a) return RT_ERR_DEVICE

int rt_cuda_is_available(void) {
    int n = 0;
    return rt_cuda_backend_loaded(&n) && n > 0;
}

int rt_cuda_device_count(void) {
    int n = 0;
    return rt_cuda_backend_loaded(&n) ? n : 0;
}

int rt_cuda_set_device(int device) {
    API_OR_FAIL("cuda.set_device");
    return a->set_device(device);
}

int rt_cuda_get_device(int *out) {
    API_OR_FAIL("cuda.current_device");
    return a->get_device(out);
}

/* After a public wait, a bad index that a kernel recorded instead of stalling the host (CUDA
 * cross_entropy targets, kernels/cuda/deferred.c) is raised here, in the caller's thread. */
static int deferred(const rt_device_api *a, int device, const char *where) {
    return a->deferred_check ? a->deferred_check(device, where) : RT_OK;
}

int rt_cuda_synchronize(int device) {
    API_OR_FAIL("cuda.synchronize");
    RT_TRY(a->synchronize(device));
    int d = device;
    if (d < 0) RT_TRY(a->get_device(&d));
    return deferred(a, d, "cuda.synchronize");
}

int rt_cuda_memory_stats(int device, int64_t *allocated, int64_t *max_allocated,
                         int64_t *reserved) {
    API_OR_FAIL("cuda.memory_stats");
    int64_t s[6];
    RT_TRY(a->memory_stats(device, s));
    if (allocated) *allocated = s[0];
    if (max_allocated) *max_allocated = s[1];
    if (reserved) *reserved = s[2];
    return RT_OK;
}

int rt_cuda_reset_peak_memory_stats(int device) {
    API_OR_FAIL("cuda.reset_peak_memory_stats");
    return a->reset_peak(device);
}

int rt_cuda_empty_cache(int device) {
    API_OR_FAIL("cuda.empty_cache");
    return a->empty_cache(device);
}

int rt_cuda_set_memory_budget(int device, int64_t bytes) {
    API_OR_FAIL("cuda.set_memory_budget");
    if (bytes < 0)
        return RT_ERR(RT_ERR_INVALID,
                      "cuda.set_memory_budget: expected bytes >= 0 (0: no cap), "
                      "got %lld",
                      (long long)bytes);
    return a->set_memory_budget(device, bytes);
}

int rt_cuda_get_memory_budget(int device, int64_t *out) {
    API_OR_FAIL("cuda.get_memory_budget");
    int64_t s[6];
    RT_TRY(a->memory_stats(device, s));
    *out = s[3];
    return RT_OK;
}

int rt_cuda_set_tf32(int enabled) {
    API_OR_FAIL("cuda.set_tf32");
    return a->set_tf32(enabled);
}

/* ---- non-blocking copies -----------------------------------------------------------------------
 */

/* Read by the CUDA backend's copy_cross (through rt_copy_is_non_blocking) while a non-blocking
 * copy runs on this thread. */
static _Thread_local int tl_non_blocking;
int rt_copy_is_non_blocking(void) {
    return tl_non_blocking;
}

int rt_to_device_ex(rt_tensor *t, int device, int non_blocking, rt_tensor **out) {
    int prev = tl_non_blocking;
    tl_non_blocking = non_blocking != 0;
    int rc = rt_to_device(t, device, out);
    tl_non_blocking = prev;
    return rc;
}

int rt_copy_ex_(rt_tensor *dst, rt_tensor *src, int non_blocking) {
    int prev = tl_non_blocking;
    tl_non_blocking = non_blocking != 0;
    int rc = rt_copy_(dst, src);
    tl_non_blocking = prev;
    return rc;
}

/* ---- pinned host memory ------------------------------------------------------------------------
 */

typedef struct pinned_ctx {
    const rt_backend *be;
    size_t nbytes;
} pinned_ctx;

static void pinned_free(void *ctx, void *data) {
    pinned_ctx *c = ctx;
    c->be->free(RT_DEVICE_CPU, data, RT_MEM_PINNED, c->nbytes);
    free(c);
}

int rt_pin_memory(rt_tensor *t, rt_tensor **out) {
    *out = NULL;
    if (t->meta.device != RT_DEVICE_CPU)
        return RT_ERR(RT_ERR_DEVICE, "pin_memory: expected a cpu tensor, got one on cuda:%d",
                      t->meta.device);
    if (t->meta.memkind == RT_MEM_PINNED) {
        rt_tensor_retain(t);
        *out = t;
        return RT_OK;
    }
    int n = 0;
    const rt_backend *be = rt_cuda_backend_loaded(&n);
    if (!be)
        return RT_ERR(RT_ERR_DEVICE, "pin_memory: the CUDA backend is not available (%s)",
                      rt_cuda_unavailable_reason());
    /* a CPU tensor (CPU kernels run on it) whose storage memory comes from cudaHostAlloc */
    rt_tensor *r;
    RT_TRY(rt_tensor_new(t->meta.ndim, t->meta.shape, t->meta.dtype, RT_DEVICE_CPU, &r));
    rt_storage *s = r->storage;
    size_t nbytes = s->nbytes;
    void *pinned = NULL;
    pinned_ctx *ctx = malloc(sizeof *ctx);
    int rc = ctx ? be->alloc(RT_DEVICE_CPU, nbytes, RT_MEM_PINNED, &pinned)
                 : RT_ERR(RT_ERR_OOM, "pin_memory: out of host memory");
    if (rc < 0) {
        free(ctx);
        rt_tensor_release(r);
        return rc;
    }
    /* swap the pageable block for the pinned one */
    s->backend->free(RT_DEVICE_CPU, s->data, s->memkind, s->nbytes);
    rt_storage_untrack(s);
    ctx->be = be;
    ctx->nbytes = nbytes;
    s->data = pinned;
    s->memkind = RT_MEM_PINNED;
    s->deleter = pinned_free;
    s->deleter_ctx = ctx;
    r->meta.memkind = RT_MEM_PINNED;
    rc = t->meta.numel ? rt_copy_(r, t) : RT_OK;
    if (rc < 0) {
        rt_tensor_release(r);
        return rc;
    }
    *out = r;
    return RT_OK;
}

/* ---- streams and events ---------------------------------------------------------------------- */

int rt_stream_create(int device, rt_stream **out) {
    *out = NULL;
    API_OR_FAIL("cuda.Stream");
    return a->stream_create(device, out);
}

void rt_stream_destroy(rt_stream *s) {
    int n;
    const rt_backend *be = rt_cuda_backend_loaded(&n);
    if (s && be && be->device_api) be->device_api->stream_destroy(s);
}

int rt_current_stream(int device, rt_stream **out) {
    *out = NULL;
    API_OR_FAIL("cuda.current_stream");
    return a->current_stream(device, out);
}

int rt_set_current_stream(rt_stream *s) {
    API_OR_FAIL("cuda.set_stream");
    return a->set_current_stream(s);
}

int rt_stream_synchronize(rt_stream *s) {
    API_OR_FAIL("Stream.synchronize");
    RT_TRY(a->stream_synchronize(s));
    return deferred(a, a->stream_device(s), "Stream.synchronize");
}

int rt_stream_wait_event(rt_stream *s, rt_event *e) {
    API_OR_FAIL("Stream.wait_event");
    if (!e) return RT_ERR(RT_ERR_INVALID, "Stream.wait_event: expected an event, got NULL");
    return a->stream_wait_event(s, e);
}

int rt_event_create(int enable_timing, rt_event **out) {
    *out = NULL;
    API_OR_FAIL("cuda.Event");
    return a->event_create(enable_timing, out);
}

void rt_event_destroy(rt_event *e) {
    int n;
    const rt_backend *be = rt_cuda_backend_loaded(&n);
    if (e && be && be->device_api) be->device_api->event_destroy(e);
}

int rt_event_record(rt_event *e, rt_stream *s) {
    API_OR_FAIL("Event.record");
    if (!e) return RT_ERR(RT_ERR_INVALID, "Event.record: expected an event, got NULL");
    return a->event_record(e, s);
}

int rt_event_synchronize(rt_event *e) {
    API_OR_FAIL("Event.synchronize");
    if (!e) return RT_ERR(RT_ERR_INVALID, "Event.synchronize: expected an event, got NULL");
    RT_TRY(a->event_synchronize(e));
    return deferred(a, -1, "Event.synchronize"); /* the event's device is the backend's secret */
}

int rt_event_query(rt_event *e) {
    API_OR_FAIL("Event.query");
    if (!e) return RT_ERR(RT_ERR_INVALID, "Event.query: expected an event, got NULL");
    return a->event_query(e);
}

int rt_event_elapsed_time(rt_event *start, rt_event *end, double *ms) {
    API_OR_FAIL("Event.elapsed_time");
    if (!start || !end)
        return RT_ERR(RT_ERR_INVALID, "Event.elapsed_time: expected two events, got NULL");
    return a->event_elapsed_time(start, end, ms);
}
