/* offload_internal.h: private interfaces of the offload engine (DESIGN section 5) shared by
 * runtime/offload.c (the engine), runtime/offload_linear.c (the streamed linear op),
 * runtime/arena.c (the host arena, DESIGN section 3) and kernels/cpu/cpu_streams.c (streams and
 * events of the CPU backend). The engine drives every backend through an rt_device_api
 * (runtime/device_api.h): the CUDA backend's, or rt_cpu_stream_api below, so one engine code path
 * runs on both and a missing event wait shows up on the CPU as a wrong answer. */
#ifndef RT_OFFLOAD_INTERNAL_H
#define RT_OFFLOAD_INTERNAL_H

#include "device_api.h"

/* ================================================================================================
 * CPU streams (kernels/cpu/cpu_streams.c)
 *
 * A stream is a worker thread with a FIFO of tasks (copies, event records, event waits). The
 * compute stream on the CPU is the calling thread, named by a NULL stream: work "enqueued" on it
 * runs at once, an event recorded on it completes at once, and waiting on an event blocks the
 * caller. Only the stream, event and copy entries of the table are filled.
 * ============================================================================================== */

extern const rt_device_api rt_cpu_stream_api;
/* Debugging races: sleep this many microseconds before each chunk (256 KiB) a CPU copy stream
 * moves, so a consumer that does not wait for the copy reads stale data for certain. */
void rt_cpu_streams_set_copy_delay_us(int us);

/* ================================================================================================
 * Host arena (runtime/arena.c)
 * ============================================================================================== */

/* Page-lock every arena chunk, now and later, through api->host_register (the CUDA backend's).
 * Idempotent; a NULL host_register entry is not an error (the copies are then synchronous). */
int rt_arena_register(const rt_device_api *api);
/* Allocate nbytes (64-byte aligned) from the arena: *ptr and the byte offset in the segment. */
int rt_arena_alloc(size_t nbytes, void **ptr, int64_t *offset);
void rt_arena_free(int64_t offset, size_t nbytes);

/* A tensor over foreign memory: its storage calls deleter(ctx, data) when the last reference
 * dies (instead of the backend's free). The tensor is contiguous with the given geometry. */
int rt_tensor_wrap(int ndim, const int64_t *shape, int dtype, int device, void *data, size_t nbytes,
                   int memkind, void (*deleter)(void *ctx, void *data), void *ctx, rt_tensor **out);

/* ================================================================================================
 * The engine (runtime/offload.c), as used by the streamed ops (runtime/offload_linear.c)
 * ============================================================================================== */

typedef struct rt_offload_engine rt_offload_engine;

enum { RT_OFFLOAD_FWD = 0, RT_OFFLOAD_BWD = 1 };

/* The engine of a compute device (RT_DEVICE_CPU only while CPU streams are enabled). op names
 * the caller in errors. */
int rt_offload_engine_for(const char *op, int device, rt_offload_engine **out);
/* Bring param p to the device as dtype (its master, or its shadow in that dtype) for use on the
 * compute stream: returns a lease and the device pointer. The compute stream is ordered after the
 * copy; the buffer stays the caller's until rt_offload_release. */
int rt_offload_fetch(rt_offload_engine *e, rt_offload_param *p, int dtype, int phase, int *lease,
                     void **dev_ptr);
/* Residency by migration, the engine's side (runtime/offload_migrate.c does the move): graph nodes
 * that fetch p count themselves in (delta +1 / -1); the check that p may move now; the note that
 * it did (drops its cached copies, moves its budget share to the migrated bytes). */
void rt_offload_param_node_ref(rt_offload_param *p, int delta);
int rt_offload_migration_ok(int device, rt_offload_param *p, int need_plan, int *ok);
void rt_offload_note_migrated(int device, rt_offload_param *p, int64_t dev_bytes);
int rt_offload_note_unmigrated(rt_offload_param *p);
/* Give the buffer back once the work that reads it has been enqueued on the compute stream. */
void rt_offload_release(rt_offload_engine *e, int lease);
/* Send a gradient computed on the device (contiguous, p's shape) to p's host gradient: D2H on
 * the D2H stream after the compute stream has produced it, then f32 accumulation on the host by
 * the engine's host worker. grad is retained until its copy is done. */
int rt_offload_route_grad(rt_offload_engine *e, rt_offload_param *p, rt_tensor *grad);
/* Block until no engine still copies or adds a gradient into leaf's host .grad (runtime/autograd.c
 * calls it before accumulating into a CPU leaf's .grad; a no-op for other leaves). */
void rt_offload_wait_grads_of(const rt_tensor *leaf);
void rt_offload_param_retain(rt_offload_param *p);
rt_tensor *rt_offload_param_host(const rt_offload_param *p);
/* The version of what p's transfers read (the master's storage version, or under a delayed update
 * its fronts'): a streamed op compares it between its forward and its backward. */
int rt_offload_param_version(const rt_offload_param *p);
int rt_offload_engine_device(const rt_offload_engine *e);
const rt_backend *rt_offload_engine_backend(const rt_offload_engine *e);

/* ================================================================================================
 * Hooks for the host optimizer (runtime/host_optim.c; runtime/offload.c implements them)
 * ============================================================================================== */

/* p's bf16/f16 transfer shadow for the optimizer to write in its pass over the master (waits for
 * copies still reading it); *ptr NULL when p has no shadow. After the update (and the master's
 * version bump) rt_offload_param_shadow_written marks it fresh, so no lazy refresh follows. */
int rt_offload_param_shadow_for_write(rt_offload_param *p, void **ptr, int *dtype);
void rt_offload_param_shadow_written(rt_offload_param *p);

/* Gradient-complete callback: runs on the engine's host worker thread (never Lua) right after the
 * expected-th gradient of p since the last reset has been accumulated into host_grad. cb NULL
 * disarms. Counts: gradients routed to the host (compute thread), accumulated (worker), whether
 * the callback ran, and whether a gradient arrived after it ran. */
typedef void (*rt_offload_grad_cb)(void *ctx, rt_offload_param *p, rt_tensor *host_grad);
/* Returns the previous ctx. */
void *rt_offload_param_set_grad_cb(rt_offload_param *p, rt_offload_grad_cb cb, void *ctx,
                                   int expected);
void rt_offload_param_grad_counts(rt_offload_param *p, int *routed, int *arrived, int *fired,
                                  int *late);
void rt_offload_param_reset_grad_counts(rt_offload_param *p);

/* ---- The one-step-delayed update (runtime/host_optim_delay.c; compute thread only) ----
 * prepare: with no update of p running, put p in delayed mode if it is not (front copies of the
 * master in the dtypes p has been sent in; transfers read them from now on) and hand out the back
 * copies the next update writes: *back0 in the master's dtype, *back1 in *back1_dtype (NULL when
 * p has no such front). swap: after that update, the backs it wrote become the fronts (a front
 * whose back was not written is copied from the master). end: transfers read the master again
 * (the narrow front becomes p's shadow). delayed: 1 while p is in delayed mode. */
int rt_offload_param_delay_prepare(rt_offload_param *p, void **back0, void **back1,
                                   int *back1_dtype);
int rt_offload_param_delay_swap(rt_offload_param *p, int wrote0, int wrote1);
int rt_offload_param_delay_end(rt_offload_param *p);
int rt_offload_param_delayed(const rt_offload_param *p);

/* ================================================================================================
 * Host gradient pass and profiling helpers (runtime/offload_accum.c, runtime/arena.c)
 * ============================================================================================== */

/* dst (n elements of ddt) = src (add 0) or += src (add 1), src n elements of sdt, in f32 (f64 for
 * f64), OpenMP-parallel. fast 0 runs the original scalar loop (for before/after measurements). */
void rt_offload_accumulate(void *dst, int ddt, const void *src, int sdt, int64_t n, int add,
                           int fast);
/* dst (n elements, f32 or f64) = widen(base) + widen(src) (base, src: f32/bf16/f16/f64), in f32
 * (f64 for f64): the pass that promotes a narrow first gradient to an f32 host gradient. */
void rt_offload_accumulate_from(void *dst, int ddt, const void *base, int bdt, const void *src,
                                int sdt, int64_t n);
/* Profiling (rt_offload_set_profiling): a timed span of the compute stream around a streamed op's
 * GEMM. begin leaves *t0 NULL when profiling is off; end(NULL) does nothing. */
void rt_offload_prof_begin(rt_offload_engine *e, rt_event **t0);
void rt_offload_prof_end(rt_offload_engine *e, int phase, rt_event *t0);
/* Arena chunks mapped, page-lock registrations and the milliseconds they took, since start. */
void rt_arena_profile(int64_t *chunks, int64_t *registers, double *register_ms);

#endif /* RT_OFFLOAD_INTERNAL_H */
