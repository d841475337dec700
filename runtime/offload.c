/* offload.c: the offload engine of DESIGN section 5, one per compute device, written once against
 * rt_device_api (runtime/device_api.h) so the same code drives the CUDA backend and the CPU
 * streams of kernels/cpu/cpu_streams.c.
 *
 * Per engine: an H2D and a D2H copy stream (the compute stream is the caller's current stream,
 * named NULL), a pool of device buffers ("slots") under a byte budget, the access schedule, a
 * residency plan, and a host worker thread that finishes gradient copies on the host.
 *
 * Ordering, with no host synchronisation in the steady state:
 *   load:    H2D waits slot.free (the compute stream is done reading the old contents), copies,
 *            records slot.ready;
 *   fetch:   the compute stream waits slot.ready;
 *   release: slot.free is recorded on the compute stream;
 *   grad:    an event recorded on the compute stream after the gradient is computed; D2H waits it,
 *            copies into the host gradient (or a staging slice), records done; the host worker
 *            waits done and accumulates in f32 into param->grad.
 * rt_offload_synchronize (the end of a backward) waits for the host worker to drain.
 *
 * The schedule: the (parameter, dtype, phase) requests of the first step, recorded until the first
 * forward request repeats; later steps follow it with a cursor and prefetch from the cursor to the
 * end of the step (never past it: the optimizer step changes the masters in between), as far as
 * buffers allow. A slot's contents stay cached after release, so the forward-to-backward
 * turnaround finds the last layers still on the device; eviction takes the cached copy whose next
 * use is farthest (Belady, as the schedule is known). A cached copy is valid while its master's
 * storage version is unchanged (the optimizer bumps it). With a budget larger than the streaming
 * window, the planner makes the earliest-used parameters resident: their slots are never evicted
 * and are reloaded only when the master changes. */
#include "offload_internal.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "half.h"

#define MAX_ENGINES 17 /* cpu + 16 CUDA ordinals */
#define MAX_PAIRS 1024 /* stall timing pairs kept before they are folded into wait_ms */
#define LOOKAHEAD 256  /* schedule entries examined per prefetch pass */
#define STAGING_CAP 8  /* staging slices of a gradient's size before routing waits for one */

/* ================================================================================================
 * Global switches
 * ============================================================================================== */

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int g_cpu_streams;
static atomic_int g_debug_flags;
static pthread_once_t g_env_once = PTHREAD_ONCE_INIT;
static int64_t g_budget[MAX_ENGINES];
static _Thread_local int tl_autocast = -1;
static atomic_int g_profiling;

/* How a gradient reaches its host gradient (RAMTORCH_OFFLOAD_GRAD_PATH or
 * rt_offload_set_grad_path). "native" (default): a first bf16 gradient after zero_grad lands by
 * D2H straight into a bf16 host gradient (no staging, no host pass, the bus bytes the device
 * computed; an f16 gradient is widened to f32 as on the host path, since a GradScaler must unscale
 * it in f32); a second one promotes it: the host worker writes an f32 host
 * gradient = widen(first) + widen(second), and later ones accumulate into that f32 gradient.
 * "host": host gradients are always f32 (f64 for f64 masters); a narrow gradient is copied into a
 * staging slice and widened by the host worker. "device": like host, but a first narrow gradient
 * is widened to f32 on the device and copied straight into the host gradient (twice the bus bytes,
 * no host pass); "skip": the host worker does not write the host gradient at all (wrong gradients:
 * a timing experiment only); "auto": "device" for a first gradient while the host worker's backlog
 * exceeds two gradients, else "host". */
enum {
    GRAD_PATH_NATIVE = 0,
    GRAD_PATH_HOST = 1,
    GRAD_PATH_DEVICE = 2,
    GRAD_PATH_SKIP = 3,
    GRAD_PATH_AUTO = 4
};
static int g_grad_path;
static _Atomic int64_t g_grad_chunk = (int64_t)16
                                      << 20; /* D2H piece size the worker pipelines on */
static int g_acc_fast = 1; /* RAMTORCH_OFFLOAD_ACC=ref: the original scalar host pass */

static void read_env(void) {
    const char *s = getenv("RAMTORCH_OFFLOAD_DEBUG_SKIP_WAIT");
    if (s) {
        int f = 0;
        if (strstr(s, "h2d")) f |= RT_OFFLOAD_SKIP_H2D_WAIT;
        if (strstr(s, "d2h")) f |= RT_OFFLOAD_SKIP_D2H_WAIT;
        atomic_store(&g_debug_flags, f);
    }
    s = getenv("RAMTORCH_OFFLOAD_PROFILE");
    if (s && *s && strcmp(s, "0") != 0) atomic_store(&g_profiling, 1);
    s = getenv("RAMTORCH_OFFLOAD_GRAD_PATH");
    if (s)
        g_grad_path = !strcmp(s, "device") ? GRAD_PATH_DEVICE
                      : !strcmp(s, "skip") ? GRAD_PATH_SKIP
                      : !strcmp(s, "auto") ? GRAD_PATH_AUTO
                      : !strcmp(s, "host") ? GRAD_PATH_HOST
                                           : GRAD_PATH_NATIVE;
    s = getenv("RAMTORCH_OFFLOAD_GRAD_CHUNK_MB");
    if (s) atomic_store(&g_grad_chunk, (int64_t)(atof(s) * (double)(1 << 20)));
    s = getenv("RAMTORCH_OFFLOAD_ACC");
    if (s && !strcmp(s, "ref")) g_acc_fast = 0;
}

static int profiling(void) {
    pthread_once(&g_env_once, read_env);
    return atomic_load(&g_profiling);
}

static const char *const g_grad_path_names[] = {"native", "host", "device", "skip", "auto"};

int rt_offload_set_grad_path(const char *name) {
    static const char *op = "offload.set_grad_path";
    pthread_once(&g_env_once, read_env);
    int path = -1;
    for (int i = 0; name && i < (int)(sizeof g_grad_path_names / sizeof *g_grad_path_names); i++)
        if (!strcmp(name, g_grad_path_names[i])) path = i;
    if (path < 0)
        return RT_ERR(
            RT_ERR_INVALID,
            "%s: unknown gradient path '%s' (expected native, host, device, auto or skip)", op,
            name ? name : "(null)");
    RT_TRY(rt_offload_synchronize()); /* gradients in flight finish on the path they took */
    g_grad_path = path;
    return RT_OK;
}

const char *rt_offload_grad_path(void) {
    pthread_once(&g_env_once, read_env);
    return g_grad_path_names[g_grad_path];
}

int rt_offload_set_profiling(int enabled) {
    pthread_once(&g_env_once, read_env);
    return atomic_exchange(&g_profiling, enabled != 0);
}

int64_t rt_offload_set_grad_chunk_bytes(int64_t bytes) {
    pthread_once(&g_env_once, read_env);
    int64_t prev = atomic_exchange(&g_grad_chunk, bytes > 0 ? bytes : 0);
    return prev;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int debug_flags(void) {
    pthread_once(&g_env_once, read_env);
    return atomic_load(&g_debug_flags);
}

int rt_offload_set_debug_flags(int flags) {
    pthread_once(&g_env_once, read_env);
    return atomic_exchange(&g_debug_flags, flags);
}

int rt_offload_set_copy_delay_us(int us) {
    if (us < 0)
        return RT_ERR(RT_ERR_INVALID, "offload.set_copy_delay_us: expected >= 0, got %d", us);
    rt_cpu_streams_set_copy_delay_us(us);
    return RT_OK;
}

int rt_offload_set_cpu_streams(int enabled) {
    atomic_store(&g_cpu_streams, enabled != 0);
    return RT_OK;
}

int rt_offload_cpu_streams_enabled(void) {
    return atomic_load(&g_cpu_streams);
}

int rt_autocast_set_dtype(int dtype) {
    int prev = tl_autocast;
    tl_autocast = (dtype == RT_BF16 || dtype == RT_F16) ? dtype : -1;
    return prev;
}

int rt_autocast_get_dtype(void) {
    return tl_autocast;
}

/* ================================================================================================
 * Parameters
 * ============================================================================================== */

struct rt_offload_param {
    atomic_int refcount;
    rt_tensor *host;   /* the master, retained */
    rt_tensor *shadow; /* narrower transfer copy (arena), or NULL */
    int shadow_dtype;
    int shadow_version;    /* master version the shadow was made from */
    rt_event *shadow_busy; /* recorded after each copy that reads the shadow */
    const rt_device_api *shadow_api;
    /* gradient-complete callback of an overlapped optimizer update (runtime/host_optim.c), and
     * the gradient counts since the last reset; under g_ov_lock */
    rt_offload_grad_cb on_grad;
    void *on_grad_ctx;
    int expected, routed, arrived, fired, late;
    /* The one-step-delayed update (runtime/host_optim_delay.c; compute thread only). While front[0]
     * or front[1] is set, transfers read them (the weights before the pending update: [0] in the
     * master's dtype, [1] in the narrow dtype front_sdtype) instead of the master, which the update
     * writes with back[] on another thread; slot versions follow front_version. sent_mask: the
     * dtypes p has been sent in (1: master's, 2: narrow sent_sdtype), the fronts a delay starts. */
    rt_tensor *front[2], *back[2];
    int front_sdtype, front_version, sent_mask, sent_sdtype;
    /* Residency by migration (runtime/offload_migrate.c): live_nodes counts streamed-op graph nodes
     * that will fetch p in their backward (p cannot move while one exists); keep_host is set by
     * optimizers whose update needs the host master (bf16 states, overlap, delay); migrated: the
     * master now lives on the compute device and the engine no longer fetches it. */
    atomic_int live_nodes;
    int keep_host, migrated;
    int migrated_device;     /* where it went, and its bytes there (the engine's migrated_bytes */
    int64_t migrated_nbytes; /* counts them until this handle dies) */
};

static pthread_mutex_t g_ov_lock = PTHREAD_MUTEX_INITIALIZER;

static int version_of(const rt_tensor *t) {
    return atomic_load(&t->storage->version);
}

static int delayed(const rt_offload_param *p) {
    return p->front[0] != NULL || p->front[1] != NULL;
}

/* The version of what p's transfers read: the master's, or under a delayed update its fronts'. */
static int param_version(const rt_offload_param *p) {
    return delayed(p) ? p->front_version : version_of(p->host);
}

int rt_offload_param_version(const rt_offload_param *p) {
    return param_version(p);
}

int rt_offload_param_new(rt_tensor *host, rt_offload_param **out) {
    *out = NULL;
    if (!host) return RT_ERR(RT_ERR_INVALID, "offload.param: expected a tensor, got NULL");
    if (host->meta.device != RT_DEVICE_CPU)
        return RT_ERR(RT_ERR_DEVICE,
                      "offload.param: expected a CPU (host) tensor, got one on "
                      "cuda:%d",
                      host->meta.device);
    if (!rt_tensor_is_contiguous(host))
        return RT_ERR(RT_ERR_INVALID, "offload.param: the host parameter must be contiguous");
    if (!rt_dtype_is_float(host->meta.dtype))
        return RT_ERR(RT_ERR_DTYPE, "offload.param: expected a floating-point parameter, got %s",
                      rt_dtype_name(host->meta.dtype));
    rt_offload_param *p = calloc(1, sizeof *p);
    if (!p) return RT_ERR(RT_ERR_OOM, "offload.param: out of host memory");
    atomic_init(&p->refcount, 1);
    rt_tensor_retain(host);
    p->host = host;
    p->shadow_dtype = -1;
    p->front_sdtype = p->sent_sdtype = -1;
    *out = p;
    return RT_OK;
}

void rt_offload_param_retain(rt_offload_param *p) {
    if (p) atomic_fetch_add(&p->refcount, 1);
}

static void forget_migrated(rt_offload_param *p);
static void drop_if_only_scheduled(rt_offload_param *p, int left);

void rt_offload_param_release(rt_offload_param *p) {
    if (!p) return;
    int left = atomic_fetch_sub(&p->refcount, 1) - 1;
    if (left > 0) {
        if (p->migrated) drop_if_only_scheduled(p, left);
        return;
    }
    forget_migrated(p);
    if (p->shadow_busy) {
        p->shadow_api->event_synchronize(p->shadow_busy);
        p->shadow_api->event_destroy(p->shadow_busy);
    }
    rt_tensor_release(p->shadow);
    for (int i = 0; i < 2; i++) {
        rt_tensor_release(p->front[i]);
        rt_tensor_release(p->back[i]);
    }
    rt_tensor_release(p->host);
    free(p);
}

rt_tensor *rt_offload_param_host(const rt_offload_param *p) {
    return p->host;
}

static void convert_f32(void *dst, int ddt, const float *src, int64_t n) {
    uint16_t *d = dst;
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++)
        d[i] = ddt == RT_BF16 ? rt_f32_to_bf16(src[i]) : rt_f32_to_f16(src[i]);
}

/* Make p's shadow in dtype current. Returns 1 when it was rewritten. */
static int refresh_shadow(rt_offload_param *p, int dtype, int *refreshed) {
    *refreshed = 0;
    rt_tensor *h = p->host;
    if (h->meta.dtype != RT_F32 || (dtype != RT_BF16 && dtype != RT_F16))
        return RT_ERR(RT_ERR_DTYPE,
                      "offload: cannot send a %s parameter as %s (a shadow is made "
                      "for float32 masters in bfloat16 or float16)",
                      rt_dtype_name(h->meta.dtype), rt_dtype_name(dtype));
    int ver = version_of(h);
    if (p->shadow && p->shadow_dtype == dtype && p->shadow_version == ver) return RT_OK;
    /* a copy still reading the old shadow must finish before it is rewritten */
    if (p->shadow_busy) RT_TRY(p->shadow_api->event_synchronize(p->shadow_busy));
    if (!p->shadow || p->shadow_dtype != dtype) {
        rt_tensor *s;
        RT_TRY(rt_arena_empty(h->meta.ndim, h->meta.shape, dtype, &s));
        rt_tensor_release(p->shadow);
        p->shadow = s;
        p->shadow_dtype = dtype;
    }
    convert_f32(rt_tensor_data_ptr(p->shadow), dtype, rt_tensor_data_ptr(h), h->meta.numel);
    p->shadow_version = ver;
    *refreshed = 1;
    return RT_OK;
}

int rt_offload_refresh_shadow(rt_offload_param *p, int dtype) {
    int r;
    return refresh_shadow(p, dtype, &r);
}

/* The optimizer writes the shadow in its own pass over the master: wait for copies still reading
 * the old shadow, hand out its pointer (NULL when p has none yet: the lazy refresh makes it when
 * first needed); after the update and the master's version bump, mark it fresh. */
int rt_offload_param_shadow_for_write(rt_offload_param *p, void **ptr, int *dtype) {
    *ptr = NULL;
    *dtype = -1;
    if (!p->shadow || p->host->meta.dtype != RT_F32) return RT_OK;
    if (p->shadow_busy) RT_TRY(p->shadow_api->event_synchronize(p->shadow_busy));
    *ptr = rt_tensor_data_ptr(p->shadow);
    *dtype = p->shadow_dtype;
    return RT_OK;
}

void rt_offload_param_shadow_written(rt_offload_param *p) {
    p->shadow_version = version_of(p->host);
}

/* ================================================================================================
 * The one-step-delayed update's front and back copies (runtime/host_optim_delay.c). All on the
 * compute thread; the update thread only writes the master and the back copies it was handed.
 * ============================================================================================== */

static int busy_wait(rt_offload_param *p) { /* copies still reading a shadow or front */
    return p->shadow_busy ? p->shadow_api->event_synchronize(p->shadow_busy) : RT_OK;
}

/* Copy i (0: master's dtype, 1: front_sdtype) in the arena, page-locked for the H2D copies. */
static int delay_buf(rt_offload_param *p, int i, rt_tensor **slot) {
    if (*slot) return RT_OK;
    rt_tensor *h = p->host;
    return rt_arena_empty(h->meta.ndim, h->meta.shape, i == 0 ? h->meta.dtype : p->front_sdtype,
                          slot);
}

/* front i := the master as it is now (no update of p may be running). */
static void fill_from_master(rt_offload_param *p, int i) {
    rt_tensor *h = p->host;
    if (i == 0)
        memcpy(rt_tensor_data_ptr(p->front[0]), rt_tensor_data_ptr(h),
               (size_t)h->meta.numel * rt_dtype_size(h->meta.dtype));
    else
        convert_f32(rt_tensor_data_ptr(p->front[1]), p->front_sdtype, rt_tensor_data_ptr(h),
                    h->meta.numel);
}

/* Transfer source under a delayed update: the front in dtype. A narrow front missing while the
 * update runs is made from the master-dtype front (the same weights); the master cannot be read. */
static int delayed_src(rt_offload_param *p, int dtype, const void **src) {
    rt_tensor *h = p->host;
    int i = dtype == h->meta.dtype ? 0 : 1;
    if (i == 1 && (h->meta.dtype != RT_F32 || (dtype != RT_BF16 && dtype != RT_F16)))
        return RT_ERR(RT_ERR_DTYPE,
                      "offload: cannot send a %s parameter as %s (a shadow is made "
                      "for float32 masters in bfloat16 or float16)",
                      rt_dtype_name(h->meta.dtype), rt_dtype_name(dtype));
    if (i == 1 && p->front[1] && p->front_sdtype != dtype)
        return RT_ERR(RT_ERR_UNSUPPORTED,
                      "offload: a parameter under a delayed optimizer update is sent as %s and as "
                      "%s; it keeps its weights before the update in one narrow dtype (call "
                      "optimizer:flush() before switching)",
                      rt_dtype_name(p->front_sdtype), rt_dtype_name(dtype));
    if (!p->front[i]) {
        if (i == 0 || !p->front[0])
            return RT_ERR(RT_ERR_INVALID,
                          "offload: a parameter under a delayed optimizer update is sent as %s for "
                          "the first time while its update may be running (its weights before "
                          "the update are kept as %s only); call optimizer:flush() first",
                          rt_dtype_name(dtype),
                          rt_dtype_name(i == 0 ? p->front_sdtype : h->meta.dtype));
        p->front_sdtype = dtype;
        RT_TRY(delay_buf(p, 1, &p->front[1])); /* its back is made at the next prepare */
        convert_f32(rt_tensor_data_ptr(p->front[1]), dtype, rt_tensor_data_ptr(p->front[0]),
                    h->meta.numel);
    }
    *src = rt_tensor_data_ptr(p->front[i]);
    return RT_OK;
}

int rt_offload_param_delay_prepare(rt_offload_param *p, void **back0, void **back1,
                                   int *back1_dtype) {
    *back0 = *back1 = NULL;
    *back1_dtype = -1;
    const int entered = !delayed(p);
    if (entered) { /* fronts in the dtypes p has been sent in, from the master as it is */
        int mask = p->sent_mask ? p->sent_mask : 1;
        if ((mask & 2) && p->host->meta.dtype != RT_F32) mask = 1;
        if (mask & 2) p->front_sdtype = p->sent_sdtype;
        for (int i = 0; i < 2; i++) {
            if (!(mask & (1 << i))) continue;
            int rc = delay_buf(p, i, &p->front[i]);
            if (rc < 0) {
                rt_tensor_release(p->front[0]);
                p->front[0] = NULL;
                p->front_sdtype = -1;
                return rc;
            }
            fill_from_master(p, i);
        }
        p->front_version = version_of(p->host);
    }
    for (int i = 0; i < 2; i++) {
        int rc = p->front[i] ? delay_buf(p, i, &p->back[i]) : RT_OK;
        if (rc < 0) {
            /* a back that cannot be made: leave p as it was (entered here: not in delayed mode,
             * which no optimizer would track, so that nothing could take it out again) */
            if (entered) {
                for (int k = 0; k < 2; k++) {
                    rt_tensor_release(p->front[k]);
                    rt_tensor_release(p->back[k]);
                    p->front[k] = p->back[k] = NULL;
                }
                p->front_sdtype = -1;
            }
            return rc;
        }
    }
    if (p->front[0]) *back0 = rt_tensor_data_ptr(p->back[0]);
    if (p->front[1]) {
        *back1 = rt_tensor_data_ptr(p->back[1]);
        *back1_dtype = p->front_sdtype;
    }
    return RT_OK;
}

int rt_offload_param_delay_swap(rt_offload_param *p, int wrote0, int wrote1) {
    if (!delayed(p)) return RT_OK;
    RT_TRY(busy_wait(p)); /* the old fronts are the next update's backs */
    for (int i = 0; i < 2; i++) {
        if (!p->front[i]) continue;
        if ((i == 0 ? wrote0 : wrote1) && p->back[i]) {
            rt_tensor *t = p->front[i];
            p->front[i] = p->back[i];
            p->back[i] = t;
        } else {
            fill_from_master(p, i);
        }
    }
    p->front_version = version_of(p->host);
    return RT_OK;
}

int rt_offload_param_delay_end(rt_offload_param *p) {
    if (!delayed(p)) return RT_OK;
    RT_TRY(busy_wait(p));
    if (p->front[1]) { /* the narrow front is the shadow of the master at front_version */
        rt_tensor_release(p->shadow);
        p->shadow = p->front[1];
        p->shadow_dtype = p->front_sdtype;
        p->shadow_version = p->front_version;
        p->front[1] = NULL;
    }
    rt_tensor_release(p->front[0]);
    for (int i = 0; i < 2; i++)
        rt_tensor_release(p->back[i]);
    p->front[0] = p->back[0] = p->back[1] = NULL;
    p->front_sdtype = -1;
    return RT_OK;
}

int rt_offload_param_delayed(const rt_offload_param *p) {
    return delayed(p);
}

void *rt_offload_param_set_grad_cb(rt_offload_param *p, rt_offload_grad_cb cb, void *ctx,
                                   int expected) {
    pthread_mutex_lock(&g_ov_lock);
    void *prev = p->on_grad_ctx;
    p->on_grad = cb;
    p->on_grad_ctx = ctx;
    p->expected = expected;
    pthread_mutex_unlock(&g_ov_lock);
    return prev;
}

void rt_offload_param_grad_counts(rt_offload_param *p, int *routed, int *arrived, int *fired,
                                  int *late) {
    pthread_mutex_lock(&g_ov_lock);
    *routed = p->routed;
    *arrived = p->arrived;
    *fired = p->fired;
    *late = p->late;
    pthread_mutex_unlock(&g_ov_lock);
}

void rt_offload_param_reset_grad_counts(rt_offload_param *p) {
    pthread_mutex_lock(&g_ov_lock);
    p->routed = p->arrived = p->fired = p->late = 0;
    pthread_mutex_unlock(&g_ov_lock);
}

/* On the host worker, after a gradient of p has been accumulated: run p's callback when this was
 * the last gradient it waits for; a gradient after that is late (the update has used an incomplete
 * gradient) and is reported by rt_offload_param_grad_counts. */
static void grad_arrived(rt_offload_param *p, rt_tensor *host_grad) {
    rt_offload_grad_cb cb = NULL;
    void *ctx = NULL;
    pthread_mutex_lock(&g_ov_lock);
    p->arrived++;
    if (p->on_grad) {
        if (p->fired)
            p->late = 1;
        else if (p->arrived == p->expected) {
            cb = p->on_grad;
            ctx = p->on_grad_ctx;
            p->fired = 1;
        }
    }
    pthread_mutex_unlock(&g_ov_lock);
    if (cb) cb(ctx, p, host_grad);
}

static size_t transfer_bytes(const rt_offload_param *p, int dtype) {
    return (size_t)p->host->meta.numel * rt_dtype_size(dtype);
}

/* ================================================================================================
 * Engine state
 * ============================================================================================== */

typedef struct slot {
    void *ptr;
    size_t cap;
    rt_offload_param *p; /* cached contents (retained), NULL when empty */
    int dtype, version;
    int users;
    int resident;
    int dead; /* buffer freed; the entry is reused by slot_new (entries never move: leases are
                 indices) */
    rt_event *ready, *free_ev;
    int free_recorded;
    int64_t last_use;
} slot;

typedef struct sched_entry {
    rt_offload_param *p; /* retained */
    int dtype, phase;
} sched_entry;

typedef struct plan_entry {
    rt_offload_param *p; /* borrowed from the schedule */
    int dtype;
    size_t bytes;
    int resident;
} plan_entry;

typedef struct grad_task {
    struct grad_task *next;
    rt_event *done;
    rt_tensor *grad; /* device gradient, kept alive until its copy is done */
    rt_tensor *host_grad;
    rt_tensor
        *base; /* NULL, or the narrow host gradient this one promotes: host_grad = base + src */
    rt_offload_param *param; /* retained: its gradient counts and callback */
    int staging; /* index in the staging pool, or -1 when copied straight into host_grad */
    int src_dtype;
    int64_t off, numel; /* the piece of the gradient this task covers (elements) */
    int add;
    int owner;       /* the last piece: holds the references above and reports the gradient; earlier
                        pieces (queued before it, finished before it) borrow them */
    int64_t backlog; /* host gradient bytes this task's host pass writes */
    int64_t dev_bytes; /* owner: bytes of the device gradient it keeps alive */
} grad_task;

/* Timing event pairs of one kind, summed into a profile field when folded. */
enum { TP_H2D, TP_D2H, TP_GEMM_FWD, TP_GEMM_BWD, TP_KINDS };
typedef struct tpairs {
    rt_event *(*v)[2];
    int n, cap;
} tpairs;

typedef struct staging {
    void *ptr;
    int64_t off;
    size_t cap;
    int busy;
} staging;

struct rt_offload_engine {
    int device;
    const rt_device_api *api;
    const rt_backend *be;
    int buf_memkind;
    rt_stream *h2d, *d2h;
    /* buffer pool */
    slot *slots;
    int nslots, slots_cap;
    int64_t budget, pool_bytes, pool_peak;
    size_t max_bytes; /* largest transfer seen */
    /* schedule and plan */
    sched_entry *sched;
    int nsched, sched_cap, learned, pos;
    int last_phase; /* of the latest request */
    /* recording: a repeat of the first request is not a step boundary (the program trains, and a
     * schedule cut at such a repeat missed its backward) */
    int ignore_repeat;
    plan_entry *plan;
    int nplan;
    int64_t planned_resident; /* bytes of planned-resident copies the pool holds (not migrated) */
    /* device bytes of parameters migrated for good (in the budget) while their handles live;
     * a dying handle on another thread takes its bytes off */
    _Atomic int64_t migrated_bytes;
    int64_t tick;
    /* stall timing */
    rt_event *pairs[MAX_PAIRS][2];
    int npairs;
    /* shared with the host worker (under mu) */
    pthread_mutex_t mu;
    pthread_cond_t cv, idle_cv;
    grad_task *head, *tail;
    int pending, stop;
    /* the host parameter whose task the worker has taken off the queue and is finishing (NULL
     * between tasks): rt_offload_wait_grads_of waits for it as for the queued ones */
    const rt_tensor *busy_host;
    pthread_t worker;
    rt_event **ev_free;
    int nev_free, ev_free_cap;
    staging *stg;
    int nstg, stg_cap;
    int64_t host_backlog;   /* host gradient bytes queued for a conversion pass */
    int64_t grad_dev_bytes; /* device gradients routed whose D2H copy is not done yet */
    int64_t grad_dev_max;   /* the largest device gradient routed so far */
    /* statistics (compute thread) */
    rt_offload_stats st;
    /* profile: compute-thread fields written by it, worker fields under mu; timing event pairs
     * per stream phase, folded into prof at engine_sync */
    rt_offload_profile prof;
    tpairs tp[TP_KINDS];
};

static rt_offload_engine *g_engines[MAX_ENGINES];

int rt_offload_engine_device(const rt_offload_engine *e) {
    return e->device;
}
const rt_backend *rt_offload_engine_backend(const rt_offload_engine *e) {
    return e->be;
}

static const char *dev_str(char *buf, size_t n, int device) {
    if (device == RT_DEVICE_CPU)
        snprintf(buf, n, "cpu");
    else
        snprintf(buf, n, "cuda:%d", device);
    return buf;
}

static char *fmt_bytes(char *buf, size_t n, int64_t b) {
    if (b >= (int64_t)1 << 30)
        snprintf(buf, n, "%.2f GiB", (double)b / (double)(1 << 30));
    else if (b >= (int64_t)1 << 20)
        snprintf(buf, n, "%.2f MiB", (double)b / (double)(1 << 20));
    else
        snprintf(buf, n, "%lld bytes", (long long)b);
    return buf;
}

/* ---- profiling: timing events around work on a stream ------------------------------------------
 */

#define TP_MAX 4096 /* pairs kept per kind before they are folded (a host sync: profiling only) */

static double *tp_field(rt_offload_engine *e, int kind) {
    switch (kind) {
    case TP_H2D:
        return &e->prof.h2d_ms;
    case TP_D2H:
        return &e->prof.d2h_ms;
    case TP_GEMM_FWD:
        return &e->prof.gemm_fwd_ms;
    default:
        return &e->prof.gemm_bwd_ms;
    }
}

static void tp_fold(rt_offload_engine *e, int kind) {
    tpairs *t = &e->tp[kind];
    for (int i = 0; i < t->n; i++) {
        double ms = 0;
        if (e->api->event_synchronize(t->v[i][1]) == RT_OK &&
            e->api->event_elapsed_time(t->v[i][0], t->v[i][1], &ms) == RT_OK && ms > 0)
            *tp_field(e, kind) += ms;
        e->api->event_destroy(t->v[i][0]);
        e->api->event_destroy(t->v[i][1]);
    }
    t->n = 0;
    rt_clear_error();
}

/* Start a timed span on stream s (NULL: the compute stream); *t0 stays NULL when profiling is off
 * or the event cannot be made, and rt_offload_prof_end then does nothing. */
static void tp_begin(rt_offload_engine *e, rt_stream *s, rt_event **t0) {
    *t0 = NULL;
    if (!profiling()) return;
    if (e->api->event_create(1, t0) != RT_OK) {
        *t0 = NULL;
        rt_clear_error();
        return;
    }
    if (e->api->event_record(*t0, s) != RT_OK) {
        e->api->event_destroy(*t0);
        *t0 = NULL;
        rt_clear_error();
    }
}

static void tp_end(rt_offload_engine *e, int kind, rt_stream *s, rt_event *t0) {
    if (!t0) return;
    tpairs *t = &e->tp[kind];
    rt_event *t1 = NULL;
    if (t->n == t->cap && t->cap < TP_MAX) {
        int cap = t->cap ? t->cap * 2 : 64;
        void *v = realloc(t->v, sizeof *t->v * (size_t)cap);
        if (v) {
            t->v = v;
            t->cap = cap;
        }
    }
    if (t->n == t->cap) tp_fold(e, kind);
    if (t->n == t->cap || e->api->event_create(1, &t1) != RT_OK ||
        e->api->event_record(t1, s) != RT_OK) {
        if (t1) e->api->event_destroy(t1);
        e->api->event_destroy(t0);
        rt_clear_error();
        return;
    }
    t->v[t->n][0] = t0;
    t->v[t->n][1] = t1;
    t->n++;
}

void rt_offload_prof_begin(rt_offload_engine *e, rt_event **t0) {
    tp_begin(e, NULL, t0);
}

void rt_offload_prof_end(rt_offload_engine *e, int phase, rt_event *t0) {
    tp_end(e, phase == RT_OFFLOAD_BWD ? TP_GEMM_BWD : TP_GEMM_FWD, NULL, t0);
}

/* A host synchronisation on the compute thread in the middle of a step, counted and timed. */
static int host_sync_event(rt_offload_engine *e, rt_event *ev) {
    double t0 = now_ms();
    int rc = e->api->event_synchronize(ev);
    e->prof.sync_ms += now_ms() - t0;
    e->prof.syncs++;
    return rc;
}

/* ---- event pool (shared with the worker) ----------------------------------------------------- */

static int ev_get(rt_offload_engine *e, int timing, rt_event **out) {
    if (!timing) {
        pthread_mutex_lock(&e->mu);
        if (e->nev_free > 0) {
            *out = e->ev_free[--e->nev_free];
            pthread_mutex_unlock(&e->mu);
            return RT_OK;
        }
        pthread_mutex_unlock(&e->mu);
    }
    return e->api->event_create(timing, out);
}

static void ev_put(rt_offload_engine *e, rt_event *ev) {
    pthread_mutex_lock(&e->mu);
    if (e->nev_free == e->ev_free_cap) {
        int cap = e->ev_free_cap ? e->ev_free_cap * 2 : 32;
        rt_event **p = realloc(e->ev_free, sizeof *p * (size_t)cap);
        if (!p) {
            pthread_mutex_unlock(&e->mu);
            e->api->event_destroy(ev);
            return;
        }
        e->ev_free = p;
        e->ev_free_cap = cap;
    }
    e->ev_free[e->nev_free++] = ev;
    pthread_mutex_unlock(&e->mu);
}

/* ---- staging slices for gradients that need a conversion on the host --------------------------
 */

static int staging_get(rt_offload_engine *e, size_t n, int *idx) {
    pthread_mutex_lock(&e->mu);
    int best = -1;
    double t0 = -1;
    for (;;) {
        size_t total = 0, big = n;
        int busy = 0;
        best = -1;
        for (int i = 0; i < e->nstg; i++) {
            total += e->stg[i].cap;
            if (e->stg[i].cap > big) big = e->stg[i].cap;
            busy |= e->stg[i].busy;
            if (!e->stg[i].busy && e->stg[i].cap >= n &&
                (best < 0 || e->stg[i].cap < e->stg[best].cap))
                best = i;
        }
        /* A free slice of about the right size; else a new one while the pool holds fewer than
         * STAGING_CAP of the largest gradients (growing maps and page-locks arena memory, about
         * 0.1 s per 256 MiB, so it stops once the backlog is covered); else a larger free slice;
         * else wait for the host worker to free one (not per small gradient: small slices are
         * made rather than waited for). */
        if (best >= 0 && e->stg[best].cap <= 2 * n) break;
        if (total + n <= STAGING_CAP * big) {
            best = -1;
            break;
        }
        if (best >= 0 || !busy) break;
        if (t0 < 0) t0 = now_ms();
        pthread_cond_wait(&e->idle_cv, &e->mu);
    }
    if (t0 >= 0) {
        e->prof.sync_ms += now_ms() - t0;
        e->prof.syncs++;
    }
    int rc = RT_OK;
    if (best < 0) {
        if (e->nstg == e->stg_cap) {
            int cap = e->stg_cap ? e->stg_cap * 2 : 8;
            staging *s = realloc(e->stg, sizeof *s * (size_t)cap);
            if (!s)
                rc = RT_ERR(RT_ERR_OOM, "offload: out of host memory for staging buffers");
            else {
                e->stg = s;
                e->stg_cap = cap;
            }
        }
        if (rc == RT_OK) {
            staging *s = &e->stg[e->nstg];
            rc = rt_arena_alloc(n, &s->ptr, &s->off);
            if (rc == RT_OK) {
                e->prof.staging_allocs++;
                s->cap = n;
                best = e->nstg++;
            }
        }
    }
    if (rc == RT_OK) {
        e->stg[best].busy = 1;
        *idx = best;
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

/* ---- the host worker ----------------------------------------------------------------------------
 */

static void *worker_main(void *arg) {
    rt_offload_engine *e = arg;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (!e->head && !e->stop)
            pthread_cond_wait(&e->cv, &e->mu);
        if (!e->head) break;
        grad_task *t = e->head;
        e->head = t->next;
        if (!e->head) e->tail = NULL;
        e->busy_host = t->param->host;
        pthread_mutex_unlock(&e->mu);
        double t0 = now_ms();
        if (!(debug_flags() & RT_OFFLOAD_SKIP_D2H_WAIT)) e->api->event_synchronize(t->done);
        double t1 = now_ms(), t2 = t1, t3;
        int64_t wrote = 0;
        if (t->staging >= 0 && g_grad_path != GRAD_PATH_SKIP) {
            pthread_mutex_lock(&e->mu);
            char *src = e->stg[t->staging].ptr; /* the pool may be reallocated: read under mu */
            pthread_mutex_unlock(&e->mu);
            int hd = t->host_grad->meta.dtype;
            size_t hs = rt_dtype_size(hd), ss = rt_dtype_size(t->src_dtype);
            char *dst = (char *)rt_tensor_data_ptr(t->host_grad) + t->off * hs;
            if (t->base) {
                int bd = t->base->meta.dtype;
                rt_offload_accumulate_from(dst, hd,
                                           (const char *)rt_tensor_data_ptr(t->base) +
                                               t->off * (int64_t)rt_dtype_size(bd),
                                           bd, src + t->off * ss, t->src_dtype, t->numel);
            } else {
                rt_offload_accumulate(dst, hd, src + t->off * ss, t->src_dtype, t->numel, t->add,
                                      g_acc_fast);
            }
            wrote = t->numel * (int64_t)hs;
            t2 = now_ms();
        }
        if (t->owner) {
            grad_arrived(t->param, t->host_grad);
            rt_offload_param_release(t->param);
            rt_tensor_release(t->grad);
            rt_tensor_release(t->host_grad);
            rt_tensor_release(t->base);
        }
        t3 = now_ms();
        ev_put(e, t->done);
        pthread_mutex_lock(&e->mu);
        if (t->staging >= 0 && t->owner) {
            e->stg[t->staging].busy = 0;
            pthread_cond_broadcast(&e->idle_cv); /* staging_get may wait for a slice */
        }
        e->host_backlog -= t->backlog;
        if (t->owner && t->dev_bytes) {
            e->grad_dev_bytes -= t->dev_bytes;
            pthread_cond_broadcast(&e->idle_cv); /* route_grad may wait for device memory */
        }
        free(t);
        e->pending--;
        e->busy_host = NULL;
        pthread_cond_broadcast(&e->idle_cv); /* rt_offload_wait_grads_of waits per task */
        e->prof.worker_wait_ms += t1 - t0;
        e->prof.worker_acc_ms += t2 - t1;
        e->prof.worker_cb_ms += t3 - t2;
        e->prof.worker_tasks++;
        e->prof.worker_bytes += wrote;
        if (e->pending == 0) pthread_cond_broadcast(&e->idle_cv);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* ---- stall timing: pairs of timing events around each wait of the compute stream --------------
 */

static void fold_pairs(rt_offload_engine *e) {
    for (int i = 0; i < e->npairs; i++) {
        double ms = 0;
        if (e->api->event_synchronize(e->pairs[i][1]) == RT_OK &&
            e->api->event_elapsed_time(e->pairs[i][0], e->pairs[i][1], &ms) == RT_OK && ms > 0)
            e->st.wait_ms += ms;
        e->api->event_destroy(e->pairs[i][0]);
        e->api->event_destroy(e->pairs[i][1]);
    }
    e->npairs = 0;
    rt_clear_error();
}

static int engine_sync(rt_offload_engine *e) {
    pthread_mutex_lock(&e->mu);
    while (e->pending > 0)
        pthread_cond_wait(&e->idle_cv, &e->mu);
    pthread_mutex_unlock(&e->mu);
    /* normally idle here (the worker waited for every gradient copy and prefetching stops at the
     * end of a step); this also drains copies that a debug flag let run unwaited */
    RT_TRY(e->api->stream_synchronize(e->d2h));
    RT_TRY(e->api->stream_synchronize(e->h2d));
    fold_pairs(e);
    for (int k = 0; k < TP_KINDS; k++)
        tp_fold(e, k);
    return RT_OK;
}

int rt_offload_synchronize(void) {
    for (int i = 0; i < MAX_ENGINES; i++)
        if (g_engines[i]) {
            double t0 = now_ms();
            RT_TRY(engine_sync(g_engines[i]));
            g_engines[i]->prof.end_sync_ms += now_ms() - t0;
            g_engines[i]->prof.end_syncs++;
        }
    return RT_OK;
}

/* Whether the engine still writes host's gradient (a task for it queued or being finished). */
static int writes_grad_of(const rt_offload_engine *e, const rt_tensor *host) {
    if (e->busy_host == host) return 1;
    for (const grad_task *t = e->head; t; t = t->next)
        if (t->param->host == host) return 1;
    return 0;
}

/* Autograd calls this before it accumulates a gradient of its own into leaf->grad: a streamed
 * parameter that a plain op also uses (tied weights, a penalty on the weight) gets that op's
 * gradient from autograd while the engine may still be copying or adding the streamed op's
 * gradient into the same host .grad (route_grad set it up; a first one is a plain overwrite), and
 * the two writes would race. Waits only for that leaf's gradients, so other leaves keep their
 * overlap with the copies. */
void rt_offload_wait_grads_of(const rt_tensor *leaf) {
    if (!leaf || leaf->meta.device != RT_DEVICE_CPU) return; /* host parameters only */
    for (int i = 0; i < MAX_ENGINES; i++) {
        rt_offload_engine *e = g_engines[i];
        if (!e) continue;
        pthread_mutex_lock(&e->mu);
        while (e->pending > 0 && writes_grad_of(e, leaf))
            pthread_cond_wait(&e->idle_cv, &e->mu);
        pthread_mutex_unlock(&e->mu);
    }
}

/* ---- creation -----------------------------------------------------------------------------------
 */

static int engine_create(const char *op, int device, rt_offload_engine **out) {
    const rt_backend *be;
    const rt_device_api *api;
    char d[16];
    if (device == RT_DEVICE_CPU) {
        be = &rt_cpu_backend;
        api = &rt_cpu_stream_api;
    } else {
        be = rt_backend_for(device);
        if (!be) return rt_last_error_code();
        api = be->device_api;
        if (!api || !api->memcpy_async || !api->stream_create)
            return RT_ERR(RT_ERR_UNSUPPORTED,
                          "%s: the %s backend of %s has no asynchronous copies for the offload "
                          "engine (rt_device_api.memcpy_async)",
                          op, be->name, dev_str(d, sizeof d, device));
        if (api->set_device) RT_TRY(api->set_device(device));
        RT_TRY(rt_arena_register(api)); /* page-lock the arena for this device's copies */
    }
    rt_offload_engine *e = calloc(1, sizeof *e);
    if (!e) return RT_ERR(RT_ERR_OOM, "%s: out of host memory for the offload engine", op);
    e->device = device;
    e->api = api;
    e->be = be;
    e->buf_memkind = device == RT_DEVICE_CPU ? RT_MEM_HOST : RT_MEM_DEVICE;
    e->budget = g_budget[device + 1];
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    pthread_cond_init(&e->idle_cv, NULL);
    int rc = api->stream_create(device, &e->h2d);
    if (rc == RT_OK) rc = api->stream_create(device, &e->d2h);
    if (rc == RT_OK && pthread_create(&e->worker, NULL, worker_main, e) != 0)
        rc = RT_ERR(RT_ERR_BACKEND, "%s: could not start the offload host worker", op);
    if (rc < 0) {
        if (e->h2d) api->stream_destroy(e->h2d);
        if (e->d2h) api->stream_destroy(e->d2h);
        free(e);
        return rc;
    }
    *out = e;
    return RT_OK;
}

int rt_offload_engine_for(const char *op, int device, rt_offload_engine **out) {
    *out = NULL;
    if (device < RT_DEVICE_CPU || device >= MAX_ENGINES - 1)
        return RT_ERR(RT_ERR_DEVICE, "%s: invalid device code %d", op, device);
    if (device == RT_DEVICE_CPU && !rt_offload_cpu_streams_enabled())
        return RT_ERR(RT_ERR_DEVICE,
                      "%s: the input is on the CPU and the CPU offload engine is off (enable it "
                      "with torch.offload.enable_cpu_streams(true))",
                      op);
    pthread_mutex_lock(&g_lock);
    int rc = RT_OK;
    if (!g_engines[device + 1]) rc = engine_create(op, device, &g_engines[device + 1]);
    *out = g_engines[device + 1];
    pthread_mutex_unlock(&g_lock);
    if (rc == RT_OK && device >= 0 && (*out)->api->set_device) rc = (*out)->api->set_device(device);
    return rc;
}

/* ================================================================================================
 * Schedule and residency plan
 * ============================================================================================== */

static void sched_clear(rt_offload_engine *e) {
    /* emptied first: a release may look for the parameter in the schedules (drop_if_only_scheduled)
     */
    int n = e->nsched;
    e->nsched = 0;
    for (int i = 0; i < n; i++)
        rt_offload_param_release(e->sched[i].p);
    e->max_bytes = 0;
    e->learned = 0;
    e->pos = 0;
    free(e->plan);
    e->plan = NULL;
    e->nplan = 0;
    e->planned_resident = 0;
    for (int i = 0; i < e->nslots; i++)
        e->slots[i].resident = 0;
}

static int sched_push(rt_offload_engine *e, rt_offload_param *p, int dtype, int phase) {
    if (e->nsched == e->sched_cap) {
        int cap = e->sched_cap ? e->sched_cap * 2 : 64;
        sched_entry *s = realloc(e->sched, sizeof *s * (size_t)cap);
        if (!s) return RT_ERR(RT_ERR_OOM, "offload: out of host memory for the schedule");
        e->sched = s;
        e->sched_cap = cap;
    }
    rt_offload_param_retain(p);
    e->sched[e->nsched++] = (sched_entry){p, dtype, phase};
    return RT_OK;
}

static plan_entry *plan_find(rt_offload_engine *e, const rt_offload_param *p, int dtype) {
    for (int i = 0; i < e->nplan; i++)
        if (e->plan[i].p == p && e->plan[i].dtype == dtype) return &e->plan[i];
    return NULL;
}

static int is_resident_planned(rt_offload_engine *e, const rt_offload_param *p, int dtype) {
    plan_entry *pe = plan_find(e, p, dtype);
    return pe && pe->resident;
}

/* Decide which parameters stay on the device: none without a budget; all when the budget holds
 * them all; otherwise the earliest in forward order, leaving a streaming window of three of the
 * largest streamed transfers (two in use, one in flight). */
static int make_plan(rt_offload_engine *e) {
    free(e->plan);
    e->plan = calloc((size_t)(e->nsched > 0 ? e->nsched : 1), sizeof *e->plan);
    e->nplan = 0;
    e->planned_resident = 0;
    if (!e->plan) return RT_ERR(RT_ERR_OOM, "offload: out of host memory for the residency plan");
    size_t total = 0, maxb = 0;
    for (int i = 0; i < e->nsched; i++) {
        sched_entry *s = &e->sched[i];
        if (plan_find(e, s->p, s->dtype)) continue;
        size_t b = transfer_bytes(s->p, s->dtype);
        e->plan[e->nplan++] = (plan_entry){s->p, s->dtype, b, 0};
        if (s->p->migrated) continue; /* on the device already, in migrated_bytes */
        total += b;
        if (b > maxb) maxb = b;
    }
    if (e->budget > 0) {
        /* parameters migrated earlier are no longer requested (so not in this plan) but hold
         * their share of the budget */
        int64_t budget = e->budget - e->migrated_bytes;
        int64_t avail = (int64_t)total <= budget ? budget : budget - 3 * (int64_t)maxb;
        for (int i = 0; i < e->nplan && avail > 0; i++)
            if (!e->plan[i].p->migrated && (int64_t)e->plan[i].bytes <= avail) {
                e->plan[i].resident = 1;
                avail -= (int64_t)e->plan[i].bytes;
                e->planned_resident += (int64_t)e->plan[i].bytes;
            }
    }
    for (int i = 0; i < e->nslots; i++) {
        slot *s = &e->slots[i];
        s->resident = s->p && is_resident_planned(e, s->p, s->dtype);
    }
    e->st.schedule_length = e->nsched;
    return RT_OK;
}

/* Follow (or learn) the schedule with request (p, dtype, phase). A step begins with a forward
 * request that follows a backward one, or with the request the schedule begins with. Recording
 * starts afresh at such a boundary when it did not begin at one (the program changed, or the
 * engine started mid-step), so the learned schedule always runs from a step's first request. */
static int sched_note(rt_offload_engine *e, rt_offload_param *p, int dtype, int phase) {
    int after_bwd = e->last_phase == RT_OFFLOAD_BWD;
    e->last_phase = phase;
    int starts = e->nsched > 0 && e->sched[0].p == p && e->sched[0].dtype == dtype &&
                 e->sched[0].phase == phase;
    if (!e->learned) {
        if (e->nsched > 0 && phase == RT_OFFLOAD_FWD &&
            (after_bwd || (starts && !e->ignore_repeat))) {
            if (starts && e->sched[0].phase == RT_OFFLOAD_FWD) {
                e->learned = 1;
                e->ignore_repeat = 0;
                RT_TRY(make_plan(e));
                e->pos = 1;
                return RT_OK;
            }
            sched_clear(e); /* the recording began mid-step: begin again here */
        }
        return sched_push(e, p, dtype, phase);
    }
    if (starts && (phase == RT_OFFLOAD_BWD || after_bwd || e->pos >= e->nsched || e->pos == 0)) {
        e->pos = 1;
        return RT_OK;
    }
    if (e->pos < e->nsched && e->sched[e->pos].p == p && e->sched[e->pos].dtype == dtype &&
        e->sched[e->pos].phase == phase) {
        e->pos++;
        return RT_OK;
    }
    /* off the schedule: a skipped part, or a different program */
    for (int k = 0; k < 2; k++) {
        int from = k == 0 ? e->pos : 0, to = k == 0 ? e->nsched : e->pos;
        for (int i = from; i < to; i++)
            if (e->sched[i].p == p && e->sched[i].dtype == dtype && e->sched[i].phase == phase) {
                e->pos = i + 1;
                return RT_OK;
            }
    }
    /* A backward request that a schedule without any backward never saw: the schedule was cut at
     * a forward that uses its first parameter again (a layer applied twice), so the next recording
     * runs to the step boundary after the backward. */
    int cut = phase == RT_OFFLOAD_BWD;
    for (int i = 0; cut && i < e->nsched; i++)
        if (e->sched[i].phase == RT_OFFLOAD_BWD) cut = 0;
    sched_clear(e); /* a request the schedule never saw: learn again */
    e->ignore_repeat = cut;
    e->last_phase = phase;
    return sched_push(e, p, dtype, phase);
}

/* Distance from the cursor to the next use of (p, dtype); INT64_MAX when not used again this step.
 * Before the schedule is learned: the age since last use (older goes first). */
static int64_t evict_score(rt_offload_engine *e, const slot *s) {
    if (!e->learned) return e->tick - s->last_use;
    int end = e->pos + LOOKAHEAD < e->nsched ? e->pos + LOOKAHEAD : e->nsched;
    for (int i = e->pos; i < end; i++)
        if (e->sched[i].p == s->p && e->sched[i].dtype == s->dtype) return i - e->pos;
    return INT64_MAX;
}

/* ================================================================================================
 * The buffer pool
 * ============================================================================================== */

static int64_t stream_bytes(const rt_offload_engine *e) {
    int64_t b = 0;
    for (int i = 0; i < e->nslots; i++)
        if (!e->slots[i].resident) b += (int64_t)e->slots[i].cap;
    return b;
}

static int64_t stream_limit(const rt_offload_engine *e) {
    if (e->budget > 0) return e->budget - e->planned_resident - e->migrated_bytes;
    /* no budget: a window of four of the largest transfers, plus half of one for the small ones
     * (biases) so that they do not evict, free and reallocate large buffers every step */
    return 4 * (int64_t)e->max_bytes + (int64_t)e->max_bytes / 2;
}

static void slot_set_contents(slot *s, rt_offload_param *p) {
    if (p) rt_offload_param_retain(p);
    rt_offload_param_release(s->p);
    s->p = p;
}

/* Free slot i's buffer (unused) and remove it from the pool. */
static void slot_drop(rt_offload_engine *e, int i) {
    slot *s = &e->slots[i];
    /* the H2D stream may still be writing a prefetch into it */
    host_sync_event(e, s->ready);
    e->be->free(e->device, s->ptr, e->buf_memkind, s->cap);
    e->pool_bytes -= (int64_t)s->cap;
    slot_set_contents(s, NULL);
    ev_put(e, s->ready);
    ev_put(e, s->free_ev);
    memset(s, 0, sizeof *s);
    s->dtype = -1;
    s->dead = 1;
    e->st.evictions++;
}

static int slot_new(rt_offload_engine *e, size_t nbytes, int *idx) {
    int at = -1;
    for (int i = 0; i < e->nslots && at < 0; i++)
        if (e->slots[i].dead) at = i;
    if (at < 0 && e->nslots == e->slots_cap) {
        int cap = e->slots_cap ? e->slots_cap * 2 : 16;
        slot *s = realloc(e->slots, sizeof *s * (size_t)cap);
        if (!s) return RT_ERR(RT_ERR_OOM, "offload: out of host memory for the buffer pool");
        e->slots = s;
        e->slots_cap = cap;
    }
    slot s = {0};
    s.dtype = -1;
    int rc = e->be->alloc(e->device, nbytes ? nbytes : 1, e->buf_memkind, &s.ptr);
    if (rc < 0) return rc;
    s.cap = nbytes;
    /* CPU "device" buffers start as NaN bytes so that reading one before its copy shows */
    if (e->device == RT_DEVICE_CPU) memset(s.ptr, 0xff, nbytes);
    rc = ev_get(e, 0, &s.ready);
    if (rc == RT_OK) rc = ev_get(e, 0, &s.free_ev);
    if (rc < 0) {
        if (s.ready) ev_put(e, s.ready);
        e->be->free(e->device, s.ptr, e->buf_memkind, nbytes);
        return rc;
    }
    /* The buffer may be memory the compute stream still reads (a slot just dropped, returned to
     * the backend's stream-ordered cache) or has yet to poison: the first copy into it waits for
     * everything enqueued on the compute stream so far. */
    if (e->api->event_record(s.free_ev, NULL) == RT_OK) s.free_recorded = 1;
    if (!s.free_recorded) {
        ev_put(e, s.ready);
        ev_put(e, s.free_ev);
        e->be->free(e->device, s.ptr, e->buf_memkind, nbytes);
        return rt_last_error_code();
    }
    if (at < 0) at = e->nslots++;
    e->slots[at] = s;
    e->prof.slot_allocs++;
    *idx = at;
    e->pool_bytes += (int64_t)nbytes;
    if (e->pool_bytes > e->pool_peak) e->pool_peak = e->pool_bytes;
    return RT_OK;
}

/* A streaming buffer of at least nbytes. dist: for a prefetch, the distance of its use from the
 * cursor (only copies used later than that are evicted for it); -1 for a request now. Returns
 * RT_OK with *idx = -1 when nothing can be freed. */
static int acquire(rt_offload_engine *e, size_t nbytes, int64_t dist, int *idx) {
    *idx = -1;
    int best = -1;
    /* 1. an empty buffer that fits, the smallest */
    for (int i = 0; i < e->nslots; i++) {
        slot *s = &e->slots[i];
        if (!s->dead && !s->resident && !s->users && !s->p && s->cap >= nbytes &&
            (best < 0 || s->cap < e->slots[best].cap))
            best = i;
    }
    if (best >= 0) {
        *idx = best;
        return RT_OK;
    }
    /* 2. a new buffer within the limit */
    int64_t limit = stream_limit(e);
    if (stream_bytes(e) + (int64_t)nbytes <= limit) return slot_new(e, nbytes, idx);
    /* 3. evict the cached copy of a similar size used farthest ahead */
    int64_t best_score = -1;
    for (int pass = 0; pass < 2 && best < 0; pass++)
        for (int i = 0; i < e->nslots; i++) {
            slot *s = &e->slots[i];
            if (s->dead || s->resident || s->users || s->cap < nbytes) continue;
            if (pass == 0 && s->cap > 2 * nbytes) continue;
            int64_t sc = evict_score(e, s);
            if (dist >= 0 && sc <= dist) continue;
            if (sc > best_score) {
                best_score = sc;
                best = i;
            }
        }
    if (best >= 0 && e->slots[best].cap <= 2 * nbytes) {
        e->st.evictions++;
        slot_set_contents(&e->slots[best], NULL);
        *idx = best;
        return RT_OK;
    }
    /* 4. free unused buffers (farthest use first) until a new one fits */
    int64_t need = stream_bytes(e) + (int64_t)nbytes - limit;
    int64_t freeable = 0;
    for (int i = 0; i < e->nslots; i++) {
        slot *s = &e->slots[i];
        if (!s->dead && !s->resident && !s->users && (dist < 0 || evict_score(e, s) > dist))
            freeable += (int64_t)s->cap;
    }
    if (freeable >= need) {
        while (stream_bytes(e) + (int64_t)nbytes > limit) {
            int v = -1;
            int64_t vs = -1;
            for (int i = 0; i < e->nslots; i++) {
                slot *s = &e->slots[i];
                if (s->dead || s->resident || s->users) continue;
                int64_t sc = s->p ? evict_score(e, s) : INT64_MAX;
                if (dist >= 0 && sc <= dist) continue;
                if (sc > vs) {
                    vs = sc;
                    v = i;
                }
            }
            if (v < 0) break;
            slot_drop(e, v);
        }
        if (stream_bytes(e) + (int64_t)nbytes <= limit) return slot_new(e, nbytes, idx);
    }
    /* 5. a larger cached buffer than needed */
    if (best >= 0) {
        e->st.evictions++;
        slot_set_contents(&e->slots[best], NULL);
        *idx = best;
    }
    return RT_OK;
}

/* A resident buffer for (p, dtype), allocated outside the streaming limit. */
static int acquire_resident(rt_offload_engine *e, size_t nbytes, int *idx) {
    /* keep the pool within the budget: drop unused streaming buffers first if needed */
    while (e->budget > 0 && e->pool_bytes + (int64_t)nbytes > e->budget - e->migrated_bytes) {
        int v = -1;
        for (int i = 0; i < e->nslots; i++)
            if (!e->slots[i].dead && !e->slots[i].resident && !e->slots[i].users) v = i;
        if (v < 0) break;
        slot_drop(e, v);
    }
    RT_TRY(slot_new(e, nbytes, idx));
    e->slots[*idx].resident = 1;
    return RT_OK;
}

/* Source pointer of p's transfer as dtype, refreshing a stale shadow. */
static int transfer_src(rt_offload_engine *e, rt_offload_param *p, int dtype, const void **src) {
    if (dtype == p->host->meta.dtype)
        p->sent_mask |= 1;
    else {
        p->sent_mask |= 2;
        p->sent_sdtype = dtype;
    }
    if (delayed(p)) return delayed_src(p, dtype, src);
    if (dtype == p->host->meta.dtype) {
        *src = rt_tensor_data_ptr(p->host);
        return RT_OK;
    }
    int refreshed;
    double t0 = now_ms();
    RT_TRY(refresh_shadow(p, dtype, &refreshed));
    if (refreshed) {
        e->st.shadow_refreshes++;
        e->prof.shadow_ms += now_ms() - t0;
    }
    *src = rt_tensor_data_ptr(p->shadow);
    return RT_OK;
}

/* Enqueue the copy of (p, dtype) into slot i on the H2D stream. */
static int load(rt_offload_engine *e, int i, rt_offload_param *p, int dtype) {
    /* the version before the copy starts: an update that lands while the copy runs (the overlapped
     * optimizer on the host worker) then leaves the slot stale instead of marking torn data current
     */
    int ver = param_version(p);
    const void *src = NULL;
    RT_TRY(transfer_src(e, p, dtype, &src));
    slot *s = &e->slots[i];
    size_t n = transfer_bytes(p, dtype);
    const rt_device_api *a = e->api;
    if (s->free_recorded) RT_TRY(a->stream_wait_event(e->h2d, s->free_ev));
    rt_event *t0;
    tp_begin(e, e->h2d, &t0);
    int rc = a->memcpy_async(s->ptr, src, n, e->h2d);
    if (rc < 0) {
        if (t0) a->event_destroy(t0);
        return rc;
    }
    tp_end(e, TP_H2D, e->h2d, t0);
    RT_TRY(a->event_record(s->ready, e->h2d));
    if (src != rt_tensor_data_ptr(p->host)) { /* a shadow or front is read until this event */
        if (!p->shadow_busy) {
            RT_TRY(a->event_create(0, &p->shadow_busy));
            p->shadow_api = a;
        }
        if (p->shadow_api == a)
            RT_TRY(a->event_record(p->shadow_busy, e->h2d));
        else
            RT_TRY(a->stream_synchronize(e->h2d)); /* rare: a shadow shared by two engines */
    }
    slot_set_contents(s, p);
    s->dtype = dtype;
    s->version = ver;
    e->st.h2d_bytes += (int64_t)n;
    e->st.h2d_copies++;
    return RT_OK;
}

/* The slot holding (p, dtype) at its current version, or -1; *stale gets a slot holding an older
 * version (or -1). */
static int find_slot(rt_offload_engine *e, const rt_offload_param *p, int dtype, int *stale) {
    int ver = param_version(p);
    *stale = -1;
    for (int i = 0; i < e->nslots; i++) {
        slot *s = &e->slots[i];
        if (s->p != p || s->dtype != dtype) continue;
        if (s->version == ver) return i;
        *stale = i;
    }
    return -1;
}

/* Start copies for the requests after the cursor, in order, while buffers allow. */
static int prefetch(rt_offload_engine *e) {
    if (!e->learned) return RT_OK;
    int end = e->pos + LOOKAHEAD < e->nsched ? e->pos + LOOKAHEAD : e->nsched;
    for (int j = e->pos; j < end; j++) {
        sched_entry *q = &e->sched[j];
        if (q->p->migrated) continue; /* on the device for good: never fetched again */
        int stale, i = find_slot(e, q->p, q->dtype, &stale);
        if (i >= 0) continue;
        size_t n = transfer_bytes(q->p, q->dtype);
        if (stale >= 0 && !e->slots[stale].users)
            i = stale; /* refresh in place */
        else if (is_resident_planned(e, q->p, q->dtype))
            RT_TRY(acquire_resident(e, n, &i));
        else
            RT_TRY(acquire(e, n, j - e->pos, &i));
        if (i < 0) break;
        RT_TRY(load(e, i, q->p, q->dtype));
        e->st.prefetches++;
    }
    return RT_OK;
}

static int fetch(rt_offload_engine *e, rt_offload_param *p, int dtype, int phase, int *lease,
                 void **dev_ptr) {
    static const char *op = "offload.fetch";
    *lease = -1;
    if (p->migrated)
        return RT_ERR(RT_ERR_AUTOGRAD,
                      "%s: this parameter moved to the device for good (the residency plan of "
                      "ramtorch.set_memory_budget) after the graph that uses it was recorded; "
                      "run that graph's backward before the next forward",
                      op);
    size_t n = transfer_bytes(p, dtype);
    char b1[32], b2[32], b3[32], d[16];
    if (e->budget > 0 && (int64_t)n > e->budget)
        return RT_ERR(RT_ERR_OOM,
                      "%s: the offload memory budget of %s on %s cannot hold a parameter of %s "
                      "(%s); raise it with ramtorch.set_memory_budget",
                      op, fmt_bytes(b1, sizeof b1, e->budget), dev_str(d, sizeof d, e->device),
                      fmt_bytes(b2, sizeof b2, (int64_t)n), rt_dtype_name(dtype));
    RT_TRY(sched_note(e, p, dtype, phase)); /* may forget max_bytes with the old schedule */
    if (n > e->max_bytes) e->max_bytes = n;
    e->st.fetches++;
    int stale, i = find_slot(e, p, dtype, &stale);
    if (i >= 0) {
        e->st.hits++;
    } else {
        if (stale >= 0 && !e->slots[stale].users)
            i = stale;
        else if (e->learned && is_resident_planned(e, p, dtype))
            RT_TRY(acquire_resident(e, n, &i));
        else
            RT_TRY(acquire(e, n, -1, &i));
        if (i < 0) {
            int64_t in_use = 0;
            for (int k = 0; k < e->nslots; k++)
                if (e->slots[k].users) in_use += (int64_t)e->slots[k].cap;
            char b4[32], mig[96] = "";
            int64_t mb = atomic_load(&e->migrated_bytes);
            if (mb > 0)
                snprintf(mig, sizeof mig, ", after %s of parameters moved to the device for good",
                         fmt_bytes(b4, sizeof b4, mb));
            return RT_ERR(RT_ERR_OOM,
                          "%s: the offload memory budget of %s on %s cannot hold a parameter of "
                          "%s while %s are in use by the current op%s (raise it with "
                          "ramtorch.set_memory_budget)",
                          op, fmt_bytes(b1, sizeof b1, stream_limit(e)),
                          dev_str(d, sizeof d, e->device), fmt_bytes(b2, sizeof b2, (int64_t)n),
                          fmt_bytes(b3, sizeof b3, in_use), mig);
        }
        RT_TRY(load(e, i, p, dtype));
    }
    slot *s = &e->slots[i];
    const rt_device_api *a = e->api;
    if (!(debug_flags() & RT_OFFLOAD_SKIP_H2D_WAIT) && a->event_query(s->ready) != 1) {
        /* the compute stream has to wait for the copy: time it */
        rt_event *t0 = NULL, *t1 = NULL;
        if (e->npairs == MAX_PAIRS) fold_pairs(e);
        if (ev_get(e, 1, &t0) == RT_OK && ev_get(e, 1, &t1) == RT_OK) {
            a->event_record(t0, NULL);
            RT_TRY(a->stream_wait_event(NULL, s->ready));
            a->event_record(t1, NULL);
            e->pairs[e->npairs][0] = t0;
            e->pairs[e->npairs][1] = t1;
            e->npairs++;
        } else {
            if (t0) a->event_destroy(t0);
            RT_TRY(a->stream_wait_event(NULL, s->ready));
        }
        e->st.stalls++;
    }
    s->users++; /* after the waits above: a failed wait leaves no lease behind */
    s->last_use = ++e->tick;
    *lease = i;
    *dev_ptr = s->ptr;
    /* slot indices stay valid while the slot is in use (only unused slots are dropped) */
    int rc = prefetch(e);
    if (rc < 0) { /* no lease on error (callers release only what they got): give it back, or
                     the slot stays in use for good */
        rt_offload_release(e, i);
        *lease = -1;
        *dev_ptr = NULL;
    }
    return rc;
}

int rt_offload_fetch(rt_offload_engine *e, rt_offload_param *p, int dtype, int phase, int *lease,
                     void **dev_ptr) {
    double t0 = now_ms();
    int rc = fetch(e, p, dtype, phase, lease, dev_ptr);
    e->prof.fetch_host_ms += now_ms() - t0;
    return rc;
}

void rt_offload_release(rt_offload_engine *e, int lease) {
    if (lease < 0 || lease >= e->nslots) return;
    slot *s = &e->slots[lease];
    e->api->event_record(s->free_ev, NULL);
    s->free_recorded = 1;
    if (s->users > 0) s->users--;
    s->last_use = ++e->tick;
}

/* ================================================================================================
 * Gradients to the host
 * ============================================================================================== */

/* Undo a promotion (route_grad) whose gradient could not be queued: the narrow host gradient of
 * the earlier micro-batches becomes the parameter's gradient again (the f32 one was never written),
 * and route_grad's reference to it is dropped. */
static void unpromote(rt_tensor *host, rt_tensor *base) {
    if (!base) return;
    (void)rt_tensor_set_grad(host, base); /* same shape and device as before: cannot fail */
    rt_tensor_release(base);
}

/* Undo route_grad's change of the host gradient when its gradient could not be queued: a promotion
 * is undone, and a host gradient this call created (never written) is dropped, so that .grad is
 * what it was before (none) and a retry does not accumulate into uninitialised memory. */
static void undo_host_grad(rt_tensor *host, rt_tensor *base, int fresh) {
    if (fresh) (void)rt_tensor_set_grad(host, NULL);
    unpromote(host, base);
}

static int route_grad(rt_offload_engine *e, rt_offload_param *p, rt_tensor *grad) {
    static const char *op = "offload.grad_to_host";
    pthread_once(&g_env_once, read_env); /* g_grad_path */
    rt_tensor *host = p->host;
    if (!rt_same_shape(host, grad)) {
        char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF];
        return RT_ERR(RT_ERR_SHAPE, "%s: gradient of shape %s for a parameter of shape %s", op,
                      rt_shape_str(b1, sizeof b1, grad->meta.ndim, grad->meta.shape),
                      rt_shape_str(b2, sizeof b2, host->meta.ndim, host->meta.shape));
    }
    int gd = grad->meta.dtype;
    if (gd != RT_F32 && gd != RT_BF16 && gd != RT_F16 && gd != RT_F64)
        return RT_ERR(RT_ERR_DTYPE, "%s: expected a floating-point gradient, got %s", op,
                      rt_dtype_name(gd));
    if (!rt_tensor_is_contiguous(grad))
        return RT_ERR(RT_ERR_INVALID, "%s: the device gradient must be contiguous", op);
    rt_tensor *hg = host->grad;
    int add = hg != NULL;
    int fresh = !add;       /* hg is made here: dropped again when the copy cannot be queued */
    rt_tensor *base = NULL; /* a narrow host gradient promoted to f32 by this one (owned) */
    if (!hg) { /* sliced from the arena: f32 (f64 for f64 masters), or on the native path a
                  bf16 first gradient's own dtype, so that it lands with no host pass */
        int hd = host->meta.dtype == RT_F64 ? RT_F64 : RT_F32;
        /* bf16 only: an f16 gradient (f16 autocast) is scaled by a GradScaler, and unscaling it in
         * f16 would flush small values to zero, so it is widened to f32 as on the host path */
        if (g_grad_path == GRAD_PATH_NATIVE && gd == RT_BF16 && hd == RT_F32) hd = gd;
        RT_TRY(rt_arena_empty(host->meta.ndim, host->meta.shape, hd, &hg));
        int rc = rt_tensor_set_grad(host, hg);
        rt_tensor_release(hg);
        RT_TRY(rc);
    } else {
        int hd = hg->meta.dtype;
        if (hg->meta.device != RT_DEVICE_CPU || !rt_tensor_is_contiguous(hg) ||
            (hd != RT_F32 && hd != RT_BF16 && hd != RT_F16 && hd != RT_F64))
            return RT_ERR(RT_ERR_INVALID,
                          "%s: the host gradient must be a contiguous CPU float "
                          "tensor",
                          op);
        if (hd == RT_BF16 || hd == RT_F16) {
            /* accumulation happens in f32: the worker writes a new f32 host gradient =
             * widen(this narrow one) + widen(the new gradient) in one pass */
            rt_tensor *wide_hg;
            int wd = host->meta.dtype == RT_F64 ? RT_F64 : RT_F32;
            RT_TRY(rt_arena_empty(host->meta.ndim, host->meta.shape, wd, &wide_hg));
            rt_tensor_retain(hg);
            int rc = rt_tensor_set_grad(host, wide_hg);
            rt_tensor_release(wide_hg);
            if (rc < 0) {
                rt_tensor_release(hg);
                return rc;
            }
            base = hg;
            hg = wide_hg; /* held by host->grad */
            e->prof.promotions++;
        }
    }
    /* measurement mode "device": widen a first narrow gradient on the device and copy it
     * straight into the host gradient (no host pass, twice the bytes on the bus) */
    rt_tensor *wide = NULL;
    int cast = g_grad_path == GRAD_PATH_DEVICE;
    if (g_grad_path == GRAD_PATH_AUTO) { /* cast when the host worker lags two gradients behind */
        pthread_mutex_lock(&e->mu);
        cast = e->host_backlog > 2 * grad->meta.numel * 4;
        pthread_mutex_unlock(&e->mu);
    }
    if (cast && !add && hg->meta.dtype == RT_F32 && (gd == RT_BF16 || gd == RT_F16)) {
        int rc = rt_to_dtype(grad, RT_F32, &wide); /* (base is NULL: !add) */
        if (rc < 0) {
            undo_host_grad(host, base, fresh);
            return rc;
        }
        grad = wide;
        gd = RT_F32;
        e->prof.device_casts++;
    }
    int64_t numel = grad->meta.numel;
    size_t gs = rt_dtype_size(gd), nbytes = (size_t)numel * gs;
    int direct = !add && hg->meta.dtype == gd;
    /* Backpressure: a device gradient stays allocated until its D2H copy is done, and a backward
     * makes them faster than the bus drains them (a GEMM per layer against a copy per layer), so
     * without a limit they pile up and peak device memory grows with depth. Routing waits while
     * the gradients in flight would exceed three of the largest (which still overlaps one copy
     * with the next gradient's compute). */
    pthread_mutex_lock(&e->mu);
    if ((int64_t)nbytes > e->grad_dev_max) e->grad_dev_max = (int64_t)nbytes;
    int64_t cap = 3 * e->grad_dev_max;
    double tw = -1;
    while (e->grad_dev_bytes > 0 && e->grad_dev_bytes + (int64_t)nbytes > cap) {
        if (tw < 0) tw = now_ms();
        pthread_cond_wait(&e->idle_cv, &e->mu);
    }
    if (tw >= 0) {
        e->prof.grad_waits++;
        e->prof.grad_wait_ms += now_ms() - tw;
    }
    pthread_mutex_unlock(&e->mu);
    int stg = -1;
    char *dst = rt_tensor_data_ptr(hg);
    if (!direct) {
        int rc = staging_get(e, nbytes, &stg);
        if (rc < 0) {
            rt_tensor_release(wide);
            undo_host_grad(host, base, fresh);
            return rc;
        }
        pthread_mutex_lock(&e->mu);
        dst = e->stg[stg].ptr;
        pthread_mutex_unlock(&e->mu);
    } else {
        e->prof.direct_grads++;
    }
    /* A gradient that needs a host pass goes down in pieces, one worker task each, so the worker
     * converts piece k while the D2H stream copies piece k + 1 and the step's tail after the last
     * copy is one piece, not one gradient. */
    int64_t piece = numel, chunk = atomic_load(&g_grad_chunk);
    if (!direct && chunk > 0 && (int64_t)nbytes > chunk) {
        piece = chunk / (int64_t)gs;
        piece = piece < 256 ? 256 : piece / 256 * 256; /* keeps pieces 512-byte aligned */
    }
    int ntask = (int)((numel + piece - 1) / (piece > 0 ? piece : 1));
    if (ntask < 1) ntask = 1;
    const rt_device_api *a = e->api;
    grad_task *first = NULL, *last = NULL;
    rt_event *computed = NULL;
    int rc = ev_get(e, 0, &computed);
    if (rc == RT_OK) rc = a->event_record(computed, NULL);
    if (rc == RT_OK) rc = a->stream_wait_event(e->d2h, computed);
    if (computed) ev_put(e, computed); /* the wait above has captured it */
    rt_event *tt = NULL;
    tp_begin(e, e->d2h, &tt);
    for (int k = 0; rc == RT_OK && k < ntask; k++) {
        int64_t off = (int64_t)k * piece, cnt = numel - off < piece ? numel - off : piece;
        grad_task *t = calloc(1, sizeof *t);
        if (!t) {
            rc = RT_ERR(RT_ERR_OOM, "%s: out of host memory", op);
            break;
        }
        if (last)
            last->next = t;
        else
            first = t;
        last = t;
        t->staging = stg;
        t->src_dtype = gd;
        t->off = off;
        t->numel = cnt;
        t->add = add;
        if (!direct) t->backlog = cnt * (int64_t)rt_dtype_size(hg->meta.dtype);
        rc = ev_get(e, 0, &t->done);
        if (rc == RT_OK)
            rc = a->memcpy_async(dst + off * (int64_t)gs,
                                 (const char *)rt_tensor_data_ptr(grad) + off * (int64_t)gs,
                                 (size_t)cnt * gs, e->d2h);
        if (rc == RT_OK) rc = a->event_record(t->done, e->d2h);
    }
    if (rc < 0) {
        if (tt) a->event_destroy(tt);
        a->stream_synchronize(e->d2h); /* the pieces already queued read grad and write dst */
        while (first) {
            grad_task *n = first->next;
            if (first->done) ev_put(e, first->done);
            free(first);
            first = n;
        }
        if (stg >= 0) {
            pthread_mutex_lock(&e->mu);
            e->stg[stg].busy = 0;
            pthread_mutex_unlock(&e->mu);
        }
        rt_tensor_release(wide);
        undo_host_grad(host, base, fresh);
        return rc;
    }
    tp_end(e, TP_D2H, e->d2h, tt);
    /* every piece borrows the references the last one owns (the worker finishes them in order) */
    rt_tensor_retain(grad);
    rt_tensor_retain(hg);
    rt_offload_param_retain(p);
    for (grad_task *t = first; t; t = t->next) {
        t->grad = grad;
        t->host_grad = hg;
        t->base = base; /* the owner's reference (taken above) */
        t->param = p;
    }
    last->owner = 1;
    last->dev_bytes = (int64_t)nbytes;
    rt_tensor_release(wide); /* the task holds it now */
    pthread_mutex_lock(&g_ov_lock);
    p->routed++;
    pthread_mutex_unlock(&g_ov_lock);
    pthread_mutex_lock(&e->mu);
    if (e->tail)
        e->tail->next = first;
    else
        e->head = first;
    e->tail = last;
    e->pending += ntask;
    e->grad_dev_bytes += (int64_t)nbytes;
    if (e->grad_dev_bytes > e->prof.grad_dev_peak) e->prof.grad_dev_peak = e->grad_dev_bytes;
    if (!direct) e->host_backlog += numel * (int64_t)rt_dtype_size(hg->meta.dtype);
    if (e->pending > e->prof.max_pending) e->prof.max_pending = e->pending;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    e->st.d2h_bytes += (int64_t)nbytes;
    e->st.d2h_copies++;
    return RT_OK;
}

int rt_offload_route_grad(rt_offload_engine *e, rt_offload_param *p, rt_tensor *grad) {
    double t0 = now_ms();
    int rc = route_grad(e, p, grad);
    e->prof.route_host_ms += now_ms() - t0;
    return rc;
}

int rt_offload_after_grad_copies(int device) {
    static const char *op = "offload.after_grad_copies";
    rt_offload_engine *e;
    RT_TRY(rt_offload_engine_for(op, device, &e));
    /* one event at the D2H stream's current end orders the caller's stream after every gradient
     * copy queued so far (no host wait on CUDA; on the CPU streams the caller blocks) */
    rt_event *ev = NULL;
    int rc = ev_get(e, 0, &ev);
    if (rc == RT_OK) rc = e->api->event_record(ev, e->d2h);
    if (rc == RT_OK) rc = e->api->stream_wait_event(NULL, ev);
    if (ev) ev_put(e, ev); /* the wait has captured it */
    return rc;
}

int rt_offload_grad_to_host(rt_offload_param *p, rt_tensor *grad) {
    if (!p || !grad) return RT_ERR(RT_ERR_INVALID, "offload.grad_to_host: NULL argument");
    rt_offload_engine *e;
    RT_TRY(rt_offload_engine_for("offload.grad_to_host", grad->meta.device, &e));
    rt_tensor *c;
    RT_TRY(rt_contiguous(grad, &c));
    int rc = rt_offload_route_grad(e, p, c);
    rt_tensor_release(c);
    return rc;
}

/* ================================================================================================
 * Budget, statistics, schedule control
 * ============================================================================================== */

static int check_device(const char *op, int device) {
    if (device < RT_DEVICE_CPU || device >= MAX_ENGINES - 1)
        return RT_ERR(RT_ERR_DEVICE,
                      "%s: invalid device code %d (expected -1 for the cpu or a "
                      "CUDA ordinal below %d)",
                      op, device, MAX_ENGINES - 1);
    return RT_OK;
}

int rt_offload_set_memory_budget(int device, int64_t bytes) {
    static const char *op = "offload.set_memory_budget";
    RT_TRY(check_device(op, device));
    if (bytes < 0)
        return RT_ERR(RT_ERR_INVALID, "%s: expected bytes >= 0 (0: no budget), got %lld", op,
                      (long long)bytes);
    pthread_mutex_lock(&g_lock);
    rt_offload_engine *e = g_engines[device + 1];
    pthread_mutex_unlock(&g_lock);
    if (e && bytes > 0 && (int64_t)e->max_bytes > bytes) {
        char b1[32], b2[32];
        return RT_ERR(RT_ERR_INVALID,
                      "%s: a budget of %s cannot hold the largest offloaded parameter (%s); "
                      "expected at least that much",
                      op, fmt_bytes(b1, sizeof b1, bytes),
                      fmt_bytes(b2, sizeof b2, (int64_t)e->max_bytes));
    }
    g_budget[device + 1] = bytes;
    if (!e) return RT_OK;
    RT_TRY(engine_sync(e));
    e->budget = bytes;
    for (int i = 0; i < e->nslots; i++)
        e->slots[i].resident = 0;
    if (e->learned) RT_TRY(make_plan(e));
    /* shrink: drop unused buffers beyond the new limits */
    for (int i = e->nslots - 1; i >= 0; i--) {
        slot *s = &e->slots[i];
        if (s->dead || s->users) continue;
        int over = s->resident
                       ? 0
                       : (bytes > 0 ? e->pool_bytes > bytes : stream_bytes(e) > stream_limit(e));
        if (over) slot_drop(e, i);
    }
    return RT_OK;
}

int rt_offload_get_memory_budget(int device, int64_t *out) {
    RT_TRY(check_device("offload.get_memory_budget", device));
    *out = g_budget[device + 1];
    return RT_OK;
}

int rt_offload_reset_schedule(int device) {
    RT_TRY(check_device("offload.reset_schedule", device));
    rt_offload_engine *e = g_engines[device + 1];
    if (e) {
        RT_TRY(engine_sync(e));
        sched_clear(e);
        e->ignore_repeat = 0;
    }
    return RT_OK;
}

/* ================================================================================================
 * Residency by migration: the engine's side (runtime/offload_migrate.c moves the storage)
 * ============================================================================================== */

void rt_offload_param_node_ref(rt_offload_param *p, int delta) {
    if (p) atomic_fetch_add(&p->live_nodes, delta);
}

int rt_offload_param_set_keep_host(rt_offload_param *p, int keep) {
    if (!p) return RT_ERR(RT_ERR_INVALID, "offload.keep_on_host: expected a parameter, got NULL");
    p->keep_host = keep != 0;
    return RT_OK;
}

int rt_offload_param_migrated(const rt_offload_param *p) {
    return p && p->migrated;
}

/* *ok = 1 when p may move to device's memory now: the engine of that device planned it resident
 * (when need_plan), and nothing holds its host master: no graph node that fetches or saved it, no
 * buffer in use, no gradient copy or host-side update pending, no host gradient (a micro-batch in
 * progress: it moves after the next zero_grad), no optimizer that needs it on the host. */
int rt_offload_migration_ok(int device, rt_offload_param *p, int need_plan, int *ok) {
    *ok = 0;
    RT_TRY(check_device("offload.migrate", device));
    rt_offload_engine *e = g_engines[device + 1];
    if (!e || !p || p->migrated || p->keep_host || atomic_load(&p->live_nodes) > 0) return RT_OK;
    if (need_plan) {
        if (!e->learned || e->budget <= 0) return RT_OK;
        int planned = 0;
        for (int i = 0; i < e->nplan && !planned; i++)
            planned = e->plan[i].p == p && e->plan[i].resident;
        if (!planned) return RT_OK;
    }
    /* a graph node that saved the parameter itself (a plain op on it, e.g. a weight penalty
     * recorded before the forward) checks its version in the backward, which the move bumps */
    if (delayed(p) || p->host->grad || p->host->meta.device != RT_DEVICE_CPU ||
        !rt_tensor_is_contiguous(p->host) || atomic_load(&p->host->saved_refs) > 0)
        return RT_OK;
    pthread_mutex_lock(&g_ov_lock);
    int armed = p->on_grad != NULL;
    pthread_mutex_unlock(&g_ov_lock);
    if (armed) return RT_OK;
    for (int k = 0; k < MAX_ENGINES; k++) {
        rt_offload_engine *ek = g_engines[k];
        if (!ek) continue;
        for (int i = 0; i < ek->nslots; i++)
            if (!ek->slots[i].dead && ek->slots[i].p == p && ek->slots[i].users) return RT_OK;
        pthread_mutex_lock(&ek->mu);
        int writes = writes_grad_of(ek, p->host);
        pthread_mutex_unlock(&ek->mu);
        if (writes) return RT_OK;
    }
    *ok = 1;
    return RT_OK;
}

/* p's master now lives on device (dev_bytes there): drop its cached copies from every engine
 * (their copies are finished first by slot_drop) and move its share of the budget from the pool's
 * resident copies to the migrated parameters. */
void rt_offload_note_migrated(int device, rt_offload_param *p, int64_t dev_bytes) {
    for (int k = 0; k < MAX_ENGINES; k++) {
        rt_offload_engine *ek = g_engines[k];
        if (!ek) continue;
        for (int i = 0; i < ek->nslots; i++)
            if (!ek->slots[i].dead && ek->slots[i].p == p) slot_drop(ek, i);
        for (int i = 0; i < ek->nplan; i++)
            if (ek->plan[i].p == p && ek->plan[i].resident) {
                ek->planned_resident -= (int64_t)ek->plan[i].bytes;
                ek->plan[i].resident = 0;
            }
    }
    p->migrated = 1;
    p->migrated_device = device;
    p->migrated_nbytes = dev_bytes;
    rt_offload_engine *e = g_engines[device + 1];
    if (e) atomic_fetch_add(&e->migrated_bytes, dev_bytes);
}

/* p's master is back in host memory (model:to("cpu")): the engines plan again with it among the
 * parameters to stream or keep (it may move again if it is used on a device under a budget). */
int rt_offload_note_unmigrated(rt_offload_param *p) {
    if (!p->migrated) return RT_OK;
    forget_migrated(p);
    p->migrated = 0;
    p->migrated_nbytes = 0;
    for (int k = 0; k < MAX_ENGINES; k++) {
        rt_offload_engine *ek = g_engines[k];
        if (ek && ek->learned) RT_TRY(make_plan(ek));
    }
    return RT_OK;
}

/* A migrated parameter that only learned schedules still hold is dead: its layer was collected (the
 * Lua handle was the last other reference; a migrated parameter gets no graph nodes, buffers or
 * copies). A schedule that never sees a request it does not know would otherwise keep its device
 * storage and its share of the budget for good, so its bytes are forgotten now and those schedules
 * cleared (the program changed), which releases it. */
static void drop_if_only_scheduled(rt_offload_param *p, int left) {
    int held = 0, in[MAX_ENGINES] = {0};
    for (int k = 0; k < MAX_ENGINES; k++) {
        rt_offload_engine *e = g_engines[k];
        for (int i = 0; e && i < e->nsched; i++)
            if (e->sched[i].p == p) {
                held++;
                in[k] = 1;
            }
    }
    if (held != left) return;
    forget_migrated(p);
    p->migrated = 0; /* the releases below take the plain path; the last one frees p */
    for (int k = 0; k < MAX_ENGINES; k++) {
        rt_offload_engine *e = g_engines[k];
        if (!e || !in[k]) continue;
        (void)engine_sync(e);
        sched_clear(e);
        e->ignore_repeat = 0;
    }
}

/* A migrated parameter's handle dies (its layer is gone, or was never used again): its bytes stop
 * counting against the budget of the engine it moved to. */
static void forget_migrated(rt_offload_param *p) {
    if (!p->migrated) return;
    rt_offload_engine *e = g_engines[p->migrated_device + 1];
    if (e) atomic_fetch_sub(&e->migrated_bytes, p->migrated_nbytes);
}

int rt_offload_get_stats(int device, rt_offload_stats *out) {
    RT_TRY(check_device("offload.stats", device));
    memset(out, 0, sizeof *out);
    out->budget = g_budget[device + 1];
    rt_offload_engine *e = g_engines[device + 1];
    if (!e) return RT_OK;
    RT_TRY(engine_sync(e));
    *out = e->st;
    out->budget = e->budget;
    out->pool_bytes = e->pool_bytes;
    out->pool_peak_bytes = e->pool_peak;
    out->schedule_length = e->learned ? e->nsched : 0;
    int64_t resident = 0, streamed = 0;
    for (int i = 0; i < e->nslots; i++)
        if (e->slots[i].resident && e->slots[i].p) resident += (int64_t)e->slots[i].cap;
    for (int i = 0; i < e->nplan; i++)
        if (!e->plan[i].resident) streamed += (int64_t)e->plan[i].bytes;
    for (int i = 0; i < e->nplan; i++)
        if (!e->plan[i].resident && e->plan[i].p->migrated) streamed -= (int64_t)e->plan[i].bytes;
    out->resident_bytes = resident + e->migrated_bytes;
    out->migrated_bytes = e->migrated_bytes;
    out->streamed_bytes = streamed;
    return RT_OK;
}

int rt_offload_reset_stats(int device) {
    RT_TRY(check_device("offload.reset_stats", device));
    rt_offload_engine *e = g_engines[device + 1];
    if (e) {
        RT_TRY(engine_sync(e));
        int64_t sl = e->st.schedule_length;
        memset(&e->st, 0, sizeof e->st);
        pthread_mutex_lock(&e->mu);
        memset(&e->prof, 0, sizeof e->prof);
        pthread_mutex_unlock(&e->mu);
        e->st.schedule_length = sl;
        e->pool_peak = e->pool_bytes;
    }
    return RT_OK;
}

int rt_offload_get_profile(int device, rt_offload_profile *out) {
    RT_TRY(check_device("offload.profile", device));
    memset(out, 0, sizeof *out);
    rt_offload_engine *e = g_engines[device + 1];
    if (e) {
        RT_TRY(engine_sync(e));
        pthread_mutex_lock(&e->mu);
        *out = e->prof;
        pthread_mutex_unlock(&e->mu);
    }
    rt_arena_profile(&out->arena_chunks, &out->arena_registers, &out->arena_register_ms);
    return RT_OK;
}
