/* device_api.h: what an accelerator backend offers beyond kernels: devices, the caching allocator's
 * statistics and budget, streams and events. The CUDA backend (kernels/cuda/backend_cuda.c) fills
 * one of these and points rt_backend.device_api at it; runtime/cuda_api.c forwards the public
 * rt_cuda_* / rt_stream_* / rt_event_* calls to it. rt_stream and rt_event are defined by the
 * backend (opaque here). Every int-returning entry returns RT_OK or a negative status with the
 * error set. */
#ifndef RT_DEVICE_API_H
#define RT_DEVICE_API_H

#include "internal.h"

typedef struct rt_device_api {
    int (*device_count)(void);
    int (*set_device)(int device);
    int (*get_device)(int *out);
    int (*synchronize)(int device);
    /* stats[0] allocated, [1] max allocated, [2] reserved, [3] budget (0: none), [4] cudaMalloc
     * calls, [5] OOM events */
    int (*memory_stats)(int device, int64_t stats[6]);
    int (*reset_peak)(int device);
    int (*empty_cache)(int device);
    int (*set_memory_budget)(int device, int64_t bytes);
    int (*set_tf32)(int enabled);
    /* streams: the default stream of a device is a static object, destroy ignores it */
    int (*stream_create)(int device, rt_stream **out);
    void (*stream_destroy)(rt_stream *s);
    int (*current_stream)(int device, rt_stream **out);
    int (*set_current_stream)(rt_stream *s);
    int (*stream_synchronize)(rt_stream *s);
    int (*stream_wait_event)(rt_stream *s, rt_event *e);
    int (*stream_device)(rt_stream *s);
    int (*event_create)(int enable_timing, rt_event **out);
    void (*event_destroy)(rt_event *e);
    int (*event_record)(rt_event *e, rt_stream *s);
    int (*event_synchronize)(rt_event *e);
    int (*event_query)(rt_event *e); /* 1 done, 0 pending */
    int (*event_elapsed_time)(rt_event *start, rt_event *end, double *ms);
    /* ---- appended for the offload engine (runtime/offload.c); NULL where not provided ---- */
    /* Copy nbytes between host and device memory, either way or device to device (cudaMemcpyAsync
     * with cudaMemcpyDefault), enqueued on s (NULL: the calling thread's current stream). The host
     * side is page-locked (pinned, or a registered arena chunk), so the call only enqueues. */
    int (*memcpy_async)(void *dst, const void *src, size_t nbytes, rt_stream *s);
    /* Page-lock existing host memory for asynchronous copies (cudaHostRegister, portable) and
     * undo it; used by the host arena (runtime/arena.c) chunk by chunk. */
    int (*host_register)(void *ptr, size_t nbytes);
    int (*host_unregister)(void *ptr);
    /* ---- appended for deferred kernel error reports (kernels/cuda/deferred.c) ---- */
    /* Raise a bad index a kernel recorded on device (< 0: on any device) without making the host
     * wait, as RT_ERR_INDEX saying it surfaced at `where`; RT_OK when none is pending. Called by
     * the public synchronize calls (runtime/cuda_api.c) after they waited, never by the offload
     * engine's internal waits, so a report reaches the caller that can see it. */
    int (*deferred_check)(int device, const char *where);
} rt_device_api;

/* The loaded CUDA backend (NULL when unavailable; count gets the number of devices) and why it is
 * unavailable (runtime/backend.c). */
const rt_backend *rt_cuda_backend_loaded(int *count);
const char *rt_cuda_unavailable_reason(void);

/* True while rt_to_device_ex / rt_copy_ex_ run a non-blocking copy on this thread. */
int rt_copy_is_non_blocking(void);

#endif /* RT_DEVICE_API_H */
