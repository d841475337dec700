/* deferred.c: errors that CUDA kernels find on the device and the host learns of later, and the
 * per-stream workspaces of single-launch (last-block-finalises) reductions.
 *
 * Why deferred: reading a "bad index" word back after each launch makes the host wait for the
 * device on every call (the queue drains, and the host time of the launches that follow is no
 * longer hidden). Instead a kernel records the first bad input in its device's error slot, a small
 * page-locked host block mapped into the device, and carries on without reading out of bounds. The
 * host looks at the slot (a plain memory read, no CUDA call) where it waits for the device anyway
 * (the public rt_cuda_synchronize / rt_stream_synchronize / rt_event_synchronize in
 * runtime/cuda_api.c through rt_device_api.deferred_check, and backend_cuda.c's copies to the host
 * such as item()) and at the start of the op's next call, and raises the report there as
 * RT_ERR_INDEX. Internal waits (the offload engine's) do not look, so they cannot swallow a
 * report. A report is never dropped, only late; the message says so. With several streams
 * reporting at once the first complete report wins (a slot holds one); the kernel never overwrites
 * a report the host has not raised yet. Workspaces of streams that are destroyed are not freed
 * (one small block per stream that ever ran such a kernel). */
#include "cuda_kernels.h"

#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>

#define RTC_MAX_DEVICES 16 /* backend_cuda.c's MAX_DEVICES */

static rtc_err_slot *g_slot[RTC_MAX_DEVICES]; /* host address; the device's under UVA */
static rtc_err_slot *g_slot_dev[RTC_MAX_DEVICES];
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

int rtc_err_slot_get(const char *op, rtc_err_slot **dev) {
    int d = rtc_current_device();
    if (d < 0 || d >= RTC_MAX_DEVICES)
        return rt_error_set(RT_ERR_DEVICE, __FILE__, __LINE__, "%s: no error slot for cuda:%d", op,
                            d);
    rtc_err_slot *p = __atomic_load_n(&g_slot_dev[d], __ATOMIC_ACQUIRE);
    if (p) {
        *dev = p;
        return RT_OK;
    }
    pthread_mutex_lock(&g_lock);
    int rc = RT_OK;
    if (!g_slot_dev[d]) {
        void *h = NULL, *dp = NULL;
        cudaError_t e =
            cudaHostAlloc(&h, sizeof(rtc_err_slot), cudaHostAllocMapped | cudaHostAllocPortable);
        if (e == cudaSuccess) {
            ((rtc_err_slot *)h)->flag = 0;
            e = cudaHostGetDevicePointer(&dp, h, 0);
            if (e != cudaSuccess) cudaFreeHost(h);
        }
        if (e != cudaSuccess) {
            cudaGetLastError();
            rc = rt_error_set(RT_ERR_BACKEND, __FILE__, __LINE__,
                              "%s: CUDA error %s: %s (allocating the mapped page-locked error slot "
                              "of cuda:%d)",
                              op, cudaGetErrorName(e), cudaGetErrorString(e), d);
        } else {
            __atomic_store_n(&g_slot[d], (rtc_err_slot *)h, __ATOMIC_RELEASE);
            __atomic_store_n(&g_slot_dev[d], (rtc_err_slot *)dp, __ATOMIC_RELEASE);
        }
    }
    if (rc == RT_OK) *dev = g_slot_dev[d];
    pthread_mutex_unlock(&g_lock);
    return rc;
}

int rtc_deferred_check(int device, const char *where) {
    if (device < 0 || device >= RTC_MAX_DEVICES) return RT_OK;
    rtc_err_slot *s = __atomic_load_n(&g_slot[device], __ATOMIC_ACQUIRE);
    /* the device writes the fields, fences (system scope), then sets flag */
    if (!s || !__atomic_load_n(&s->flag, __ATOMIC_ACQUIRE)) return RT_OK;
    rtc_err_slot r;
    r.op = __atomic_load_n(&s->op, __ATOMIC_RELAXED);
    r.pos = __atomic_load_n(&s->pos, __ATOMIC_RELAXED);
    r.value = __atomic_load_n(&s->value, __ATOMIC_RELAXED);
    r.bound = __atomic_load_n(&s->bound, __ATOMIC_RELAXED);
    r.extra = __atomic_load_n(&s->extra, __ATOMIC_RELAXED);
    /* empty the slot; when two threads race, one reports */
    if (!__atomic_exchange_n(&s->flag, 0, __ATOMIC_ACQ_REL)) return RT_OK;
    if (r.op == RTC_ERR_OP_CROSS_ENTROPY)
        return rt_error_set(
            RT_ERR_INDEX, __FILE__, __LINE__,
            "cross_entropy: target %lld is out of bounds for %lld classes (expected 0..%lld or "
            "ignore_index %lld), at flat target position %lld (a deferred report, raised at %s: "
            "on cuda:%d the targets are checked on the device without the host waiting, so the "
            "error of an earlier cross_entropy call surfaces at the next synchronize, copy to the "
            "host or cross_entropy call; that call's loss and gradients are not valid)",
            r.value, r.bound, r.bound - 1, r.extra, r.pos, where, device);
    return rt_error_set(RT_ERR_INDEX, __FILE__, __LINE__,
                        "%s: a CUDA kernel reported a bad index (op code %d, value %lld at "
                        "position %lld, bound %lld) on cuda:%d",
                        where, r.op, r.value, r.pos, r.bound, device);
}

/* ---- reduction workspaces, one per (device, stream) -------------------------------------------
 */

typedef struct red_ws {
    int device;
    cudaStream_t stream;
    rtc_red_hdr *hdr;
    int64_t cap;
    struct red_ws *next;
} red_ws;

static red_ws *g_ws;

int rtc_red_workspace(const char *op, rtc_red_hdr **hdr, double **part, int64_t *cap) {
    int d = rtc_current_device();
    cudaStream_t st = rtc_stream();
    pthread_mutex_lock(&g_lock);
    red_ws *w = g_ws;
    while (w && !(w->device == d && w->stream == st))
        w = w->next;
    int rc = RT_OK;
    if (!w) {
        int64_t n = (int64_t)rtc_sm_count() * 64; /* the largest grid a launcher uses */
        size_t bytes = sizeof(rtc_red_hdr) + (size_t)n * 2 * sizeof(double);
        void *p = NULL;
        cudaError_t e = cudaMalloc(&p, bytes);
        /* counter 0, bad = all ones (RTC_NO_BAD), in stream order before the first kernel */
        if (e == cudaSuccess) e = cudaMemsetAsync(p, 0, sizeof(rtc_red_hdr), st);
        if (e == cudaSuccess)
            e = cudaMemsetAsync((char *)p + offsetof(rtc_red_hdr, bad), 0xff,
                                sizeof(unsigned long long), st);
        w = e == cudaSuccess ? calloc(1, sizeof *w) : NULL;
        if (!w) {
            if (p) cudaFree(p);
            if (e != cudaSuccess) {
                cudaGetLastError();
                rc = rt_error_set(RT_ERR_BACKEND, __FILE__, __LINE__,
                                  "%s: CUDA error %s: %s (allocating a %zu-byte reduction "
                                  "workspace on cuda:%d)",
                                  op, cudaGetErrorName(e), cudaGetErrorString(e), bytes, d);
            } else {
                rc = rt_error_set(RT_ERR_OOM, __FILE__, __LINE__, "%s: out of host memory", op);
            }
        } else {
            w->device = d;
            w->stream = st;
            w->hdr = (rtc_red_hdr *)p;
            w->cap = n;
            w->next = g_ws;
            g_ws = w;
        }
    }
    pthread_mutex_unlock(&g_lock);
    if (rc < 0) return rc;
    *hdr = w->hdr;
    *part = (double *)(w->hdr + 1);
    *cap = w->cap;
    return RT_OK;
}
