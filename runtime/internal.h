/* internal.h: private structures of libramtorch shared by runtime/ and kernels/.
 *
 * Nothing here is part of the public contract (runtime/include/ramtorch.h). Kernels include this
 * for rt_kview and the backend table; they know nothing of autograd.
 */
#ifndef RT_INTERNAL_H
#define RT_INTERNAL_H

#include "ramtorch.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ================================================================================================
 * Errors
 * ============================================================================================== */

/* Record an error for rt_last_error(): "op: message at file:line". Returns code. */
int rt_error_set(int code, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define RT_ERR(code, ...) rt_error_set((code), __FILE__, __LINE__, __VA_ARGS__)
/* Propagate a failing status unchanged (the callee already set the message). */
#define RT_TRY(expr)                                                                               \
    do {                                                                                           \
        int rt_try_rc_ = (expr);                                                                   \
        if (rt_try_rc_ < 0) return rt_try_rc_;                                                     \
    } while (0)

/* Format "[2, 3]" into buf (for error messages). */
const char *rt_shape_str(char *buf, size_t n, int ndim, const int64_t *shape);
#define RT_SHAPE_BUF 96

/* ================================================================================================
 * Kernel views and the backend table (DESIGN section 1)
 * ============================================================================================== */

/* What a kernel sees of a tensor: a pointer to its first element, dtype, shape and strides in
 * elements. No refcounts, no autograd. */
typedef struct rt_kview {
    char *data;
    int dtype;
    int ndim;
    int64_t numel;
    int64_t shape[RT_MAX_DIMS];
    int64_t strides[RT_MAX_DIMS];
} rt_kview;

/* A backend is a table of function pointers plus private state. Kernels take views whose shapes
 * have already been checked and broadcast by runtime/ (a broadcast input has stride 0). Each entry
 * returns RT_OK or a negative status with the error set. An entry left NULL means "not on this
 * backend" and runtime/ reports RT_ERR_UNSUPPORTED. */
typedef struct rt_backend {
    const char *name;
    /* memory */
    int (*alloc)(int device, size_t nbytes, int memkind, void **out);
    void (*free)(int device, void *ptr, int memkind, size_t nbytes);
    /* dst = src (same shape; dtype converted; strided either side) */
    int (*copy)(const rt_kview *dst, const rt_kview *src);
    int (*fill)(const rt_kview *dst, double value);
    /* elementwise */
    int (*binary)(int op, const rt_kview *out, const rt_kview *a, const rt_kview *b);
    int (*binary_scalar)(int op, const rt_kview *out, const rt_kview *a, double s,
                         int scalar_first);
    int (*unary)(int op, const rt_kview *out, const rt_kview *a);
    /* grad_in = d op(x)/dx * grad_out, given x and y = op(x) */
    int (*unary_backward)(int op, const rt_kview *grad_in, const rt_kview *grad_out,
                          const rt_kview *x, const rt_kview *y);
    /* out has a's shape with reduced dims of size 1 (keepdim form); reduce over those dims. */
    int (*reduce)(int op, const rt_kview *out, const rt_kview *a);
    /* C (m, n) = alpha * op(A) op(B) + beta * C, batched: count matrices at the given element
     * strides between consecutive batch entries. Leading dims in elements. f32/f64 at least. */
    int (*gemm)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                const void *a, int64_t lda, int64_t stride_a, const void *b, int64_t ldb,
                int64_t stride_b, double beta, void *c, int64_t ldc, int64_t stride_c,
                int64_t batch, int dtype);
    /* random fills: element i gets a value from counter (seed, offset + i) */
    int (*fill_uniform)(const rt_kview *dst, uint64_t seed, uint64_t offset, double lo, double hi);
    int (*fill_normal)(const rt_kview *dst, uint64_t seed, uint64_t offset, double mean,
                       double std);
    int (*fill_randint)(const rt_kview *dst, uint64_t seed, uint64_t offset, int64_t low,
                        int64_t high);
    /* out = a where cond (cond bool, all broadcast to out's shape), out unchanged elsewhere */
    int (*masked_copy)(const rt_kview *out, const rt_kview *cond, const rt_kview *a);
    /* ---- entries added by the op families (softmax, losses, norms, ...) go below ---- */
    /* CUDA (kernels/cuda/backend_cuda.c): copies between host and device memory (one side on the
     * host, its memkind says pageable or pinned), and the device/stream/event/memory-stats API
     * (runtime/device_api.h) behind the public rt_cuda_* calls. NULL on the CPU backend. */
    int (*copy_cross)(const rt_kview *dst, int dst_device, int dst_memkind, const rt_kview *src,
                      int src_device, int src_memkind);
    const struct rt_device_api *device_api;
    /* optimizer updates, in place (runtime/optim.c): views contiguous, same numel; buf may be
     * NULL for SGD without momentum */
    int (*adamw_step)(const rt_kview *param, const rt_kview *grad, const rt_kview *exp_avg,
                      const rt_kview *exp_avg_sq, double lr, double beta1, double beta2, double eps,
                      double weight_decay, int64_t step);
    int (*sgd_step)(const rt_kview *param, const rt_kview *grad, const rt_kview *buf, double lr,
                    double momentum, double dampening, double weight_decay, int nesterov,
                    int first_step);
    /* neural-network ops (runtime/ops_softmax.c, ops_loss.c, ops_nn.c, ops_reduce_indices.c) */
    /* out = softmax(x) along dim, or log_softmax when log_ != 0; same shapes */
    int (*softmax)(const rt_kview *out, const rt_kview *x, int dim, int log_);
    /* grad_in from grad_out and y, the forward's output */
    int (*softmax_backward)(const rt_kview *grad_in, const rt_kview *grad_out, const rt_kview *y,
                            int dim, int log_);
    /* logits (N, C, S), target i64 (N, S) -> loss (N, S) and valid (N, S; 1 where target !=
     * ignore_index; may be NULL), both in the compute dtype. RT_ERR_INDEX for a target outside
     * [0, C) that is not ignore_index (CUDA: deferred to the next synchronisation point; the bad
     * row contributes nothing meanwhile). */
    int (*cross_entropy)(const rt_kview *loss, const rt_kview *valid, const rt_kview *logits,
                         const rt_kview *target, int64_t ignore_index, double label_smoothing);
    /* grad_logits (N, C, S) = grad_loss (N, S) * (softmax - smoothed one-hot); 0 where ignored */
    int (*cross_entropy_backward)(const rt_kview *grad_logits, const rt_kview *grad_loss,
                                  const rt_kview *logits, const rt_kview *target,
                                  int64_t ignore_index, double label_smoothing);
    /* out (n, D) = rows of weight (V, D) at indices (n; i64 or i32); RT_ERR_INDEX outside [0, V) */
    int (*embedding)(const rt_kview *out, const rt_kview *weight, const rt_kview *indices);
    /* grad_weight (V, D) += grad_out (n, D) scattered to the rows at indices (n) */
    int (*embedding_backward)(const rt_kview *grad_weight, const rt_kview *grad_out,
                              const rt_kview *indices);
    /* x (M, N) normalised per row: out (M, N), mean and rstd (M) in the compute dtype; weight and
     * bias (N) may be NULL */
    int (*layer_norm)(const rt_kview *out, const rt_kview *mean, const rt_kview *rstd,
                      const rt_kview *x, const rt_kview *weight, const rt_kview *bias, double eps);
    /* grad_x (M, N), grad_weight and grad_bias (N) written (each may be NULL) */
    int (*layer_norm_backward)(const rt_kview *grad_x, const rt_kview *grad_weight,
                               const rt_kview *grad_bias, const rt_kview *grad_out,
                               const rt_kview *x, const rt_kview *mean, const rt_kview *rstd,
                               const rt_kview *weight);
    /* out = x * keep / (1 - p); element i (logical order) is kept when the top 24 bits of lane
     * i % 4 of rt_philox4x32(seed, offset + i / 4), as an integer, are >= ceil(p * 2^24) */
    int (*dropout)(const rt_kview *out, const rt_kview *x, double p, uint64_t seed,
                   uint64_t offset);
    /* RT_MAX / RT_MIN along dim: values (may be NULL; a's dtype) and i64 indices, both a's shape
     * with size 1 at dim; first occurrence wins ties, NaN wins over numbers */
    int (*reduce_with_indices)(int op, const rt_kview *values, const rt_kview *indices,
                               const rt_kview *a, int dim);
    /* gathers along dim (runtime/ops_index.c); idx is 1-d i64, checked in range by the kernel
     * (RT_ERR_INDEX). index_select: out[.., j, ..] = src[.., idx[j], ..] (same dtype);
     * index_add: out[.., idx[j], ..] += src[.., j, ..], duplicates summed in order */
    int (*index_select)(const rt_kview *out, const rt_kview *src, int dim, const rt_kview *idx);
    int (*index_add)(const rt_kview *out, const rt_kview *src, int dim, const rt_kview *idx);
    /* transformer ops (runtime/ops_attention.c; CPU kernels kernels/cpu/rms_norm.c, rope.c,
     * attention.c, whose header comments give the exact rules a CUDA version must follow) */
    /* x (M, N) per row: out = x * rstd * weight, rstd (M) = 1/sqrt(mean(x^2) + eps) in the compute
     * dtype; weight (N) may be NULL */
    int (*rms_norm)(const rt_kview *out, const rt_kview *rstd, const rt_kview *x,
                    const rt_kview *weight, double eps);
    /* grad_x (M, N) and grad_weight (N) written (either may be NULL) */
    int (*rms_norm_backward)(const rt_kview *grad_x, const rt_kview *grad_weight,
                             const rt_kview *grad_out, const rt_kview *x, const rt_kview *rstd,
                             const rt_kview *weight);
    /* rotary embedding over the last dim (even) at positions offset + index along seq_dim;
     * interleaved: pairs (2p, 2p+1) instead of (p, p + D/2); inverse: rotate back (backward) */
    int (*rope)(const rt_kview *out, const rt_kview *x, int seq_dim, double theta, int64_t offset,
                int interleaved, int inverse);
    /* attention: q (B,H,T,D), k (B,H,S,D), v (B,H,S,Dv) -> out (B,H,T,Dv) and lse (B,H,T,
     * contiguous, f32 or f64 for f64 inputs); mask NULL or broadcast to (B,H,T,S), bool or float;
     * dropout on the probabilities with the philox rule of kernels/cpu/attention.c */
    int (*sdpa)(const rt_kview *out, const rt_kview *lse, const rt_kview *q, const rt_kview *k,
                const rt_kview *v, const rt_kview *mask, int is_causal, double scale,
                double dropout_p, uint64_t seed, uint64_t offset);
    /* grads of q, k, v (their shapes); grad_mask NULL or contiguous (B,H,T,S) in lse's dtype */
    int (*sdpa_backward)(const rt_kview *grad_q, const rt_kview *grad_k, const rt_kview *grad_v,
                         const rt_kview *grad_mask, const rt_kview *grad_out, const rt_kview *q,
                         const rt_kview *k, const rt_kview *v, const rt_kview *out,
                         const rt_kview *lse, const rt_kview *mask, int is_causal, double scale,
                         double dropout_p, uint64_t seed, uint64_t offset);
    /* the data-loading gather (rt_gather_rows): index_select converting to out's dtype and
     * dividing by divisor (a float out divides in its compute precision, like x.float().div(d));
     * CPU only (NULL elsewhere) */
    int (*index_select_convert)(const rt_kview *out, const rt_kview *src, int dim,
                                const rt_kview *idx, double divisor);
    /* cross_entropy with reduction mean (1) or sum (2) in one pass (runtime/ops_loss.c uses it when
     * present, else the cross_entropy entry and separate sums): out 0-d in logits' dtype, count
     * 0-d in the compute dtype (non-ignored targets; may be NULL). A backend may report a bad
     * target late (CUDA: at the next sync point, kernels/cuda/deferred.c). NULL on the CPU. */
    int (*cross_entropy_reduce)(const rt_kview *out, const rt_kview *count, const rt_kview *logits,
                                const rt_kview *target, int64_t ignore_index, int reduction,
                                double label_smoothing);
    /* linear's GEMM with the bias added in the GEMM's epilogue (one 2-d product, no batch):
     * row-major c (m, n) with row stride ldc >= n, = op(a) (m, k) @ op(b) (k, n) + bias, bias n
     * contiguous elements of dtype (f32/bf16/f16) added to every row before the single rounding
     * to dtype. RT_ERR_UNSUPPORTED when the library has no algorithm for the case (the caller then
     * adds the bias itself). NULL on the CPU (runtime/ops_matmul.c's rt_linear uses gemm + add). */
    int (*gemm_bias)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const void *a,
                     int64_t lda, const void *b, int64_t ldb, const void *bias, void *c,
                     int64_t ldc, int dtype);
    /* AdamW over n parameters at once (runtime/optim.c): element for element the update of
     * adamw_step, bit for bit; views contiguous, non-empty, param numel = the others', written
     * ranges disjoint, on one device. NULL: the runtime loops over adamw_step (the CPU). */
    int (*adamw_step_multi)(int n, const rt_kview *params, const rt_kview *grads,
                            const rt_kview *exp_avgs, const rt_kview *exp_avg_sqs, double lr,
                            double beta1, double beta2, double eps, double weight_decay,
                            int64_t step);
} rt_backend;

/* The backend for a device: CPU for RT_DEVICE_CPU; CUDA (loaded on first use) for ordinals.
 * Returns NULL and sets the error when the device cannot be used. */
const rt_backend *rt_backend_for(int device);
extern const rt_backend rt_cpu_backend;
/* Call backend entry `entry` of `be` with the arguments that follow, or fail with
 * RT_ERR_UNSUPPORTED naming the op, the entry and the backend when the backend leaves it NULL. */
#define RT_BE_CALL(be, entry, opname, ...)                                                         \
    ((be)->entry ? (be)->entry(__VA_ARGS__) : rt_backend_unsupported((be), #entry, (opname)))
int rt_backend_unsupported(const rt_backend *be, const char *entry, const char *op);

/* ================================================================================================
 * Storage and tensors (torch7's THTensor: size, stride, storage, offset, refcount)
 * ============================================================================================== */

typedef struct rt_storage {
    atomic_int refcount;
    void *data;
    size_t nbytes;
    int device;
    int memkind;
    const rt_backend *backend;
    /* foreign memory (arena slices, mmap): freed by this instead of the backend, may be NULL */
    void (*deleter)(void *ctx, void *data);
    void *deleter_ctx;
    atomic_int version; /* bumped by in-place writes through any view; checked by saved tensors */
    /* unique per storage ever made (headers are recycled, so the pointer is not): a key that can
     * outlive the storage (runtime/autograd_saved_offload.c) */
    uint64_t uid;
} rt_storage;

typedef struct rt_node rt_node;

struct rt_tensor {
    rt_tensor_meta meta; /* first member: Lua reads it through the handle */
    atomic_int refcount;
    rt_storage *storage;
    rt_node *grad_fn; /* NULL for leaves */
    rt_tensor *grad;  /* accumulated gradient of a leaf */
    /* graph nodes that saved this very tensor (rt_node_save) and still hold it: the offload engine
     * does not move a parameter's storage to the device while one does (runtime/offload_migrate.c)
     */
    atomic_int saved_refs;
};

/* Offload migration (tensor.c): t takes src's storage (contiguous, same shape and dtype; version
 * bumped), or its own copy of its values on device. */
int rt_tensor_adopt_storage_(rt_tensor *t, rt_tensor *src);
int rt_tensor_move_storage_(rt_tensor *t, int device);
/* Allocate a contiguous tensor on a device (uninitialised). */
int rt_tensor_new(int ndim, const int64_t *shape, int dtype, int device, rt_tensor **out);
/* A new tensor header viewing t's storage with the given geometry. */
int rt_tensor_new_view(rt_tensor *t, int ndim, const int64_t *shape, const int64_t *strides,
                       int64_t offset, rt_tensor **out);
void rt_contiguous_strides(int ndim, const int64_t *shape, int64_t *strides);
int64_t rt_shape_numel(int ndim, const int64_t *shape);
int rt_same_shape(const rt_tensor *a, const rt_tensor *b);
/* Kernel view of t; with a broadcast target shape, a view with stride 0 on broadcast dims. */
rt_kview rt_kview_of(const rt_tensor *t);
int rt_kview_broadcast(const rt_tensor *t, int ndim, const int64_t *shape, rt_kview *out);
/* PyTorch broadcasting of two shapes; RT_ERR_SHAPE naming op on mismatch. */
int rt_broadcast_shapes(const char *op, int na, const int64_t *sa, int nb, const int64_t *sb,
                        int *nout, int64_t *out);
int rt_promote_types(int a, int b);
int rt_result_type2(const rt_tensor *a, const rt_tensor *b); /* with PyTorch's 0-dim rule */
/* dims, dtype and byte size of an allocation of (shape, dtype) fit (tensor.c) */
int rt_check_alloc_shape(const char *op, int ndim, const int64_t *shape, int dtype);
/* PyTorch's checked scalar conversion (c10::overflows): RT_ERR_INVALID "op: value V cannot be
 * converted to type T without overflow" when a fill value or a bound does not fit dtype. */
int rt_check_scalar_fits(const char *op, double v, int dtype);
/* Normalise a possibly negative dim against ndim; error names op. */
int rt_wrap_dim(const char *op, int dim, int ndim, int *out);
/* Same device check with a message naming op. */
/* An in-place write into t (copy_, add_, uniform_, ...): refuses a tensor whose elements share
 * memory through an expanded (stride 0) dim, as PyTorch does: the writes would race on the GPU and
 * depend on their order on the CPU. fill_ allows it (idempotent, as in PyTorch). */
int rt_check_no_internal_overlap(const char *op, const rt_tensor *t);
/* An in-place write into dst that reads src (add_, copy_, ...): refuses a src whose memory
 * partially overlaps dst's (a transposed or shifted view of it), as PyTorch's
 * assert_no_partial_overlap does: the kernel would read elements it has already overwritten. src
 * being dst's exact memory is fine (elementwise), and so is overlap PyTorch cannot decide (either
 * side not dense). */
int rt_check_no_partial_overlap(const char *op, const rt_tensor *dst, const rt_tensor *src);
/* The same, refusing full overlap too (PyTorch's assert_no_overlap: index_add_'s source). */
int rt_check_no_overlap(const char *op, const rt_tensor *dst, const rt_tensor *src);
/* An in-place write into t that autograd does not record (fill_, copy_, uniform_, index_add_, ...):
 * refuses, in grad mode, a t that has a grad_fn (an op's output or a view of a leaf), whose
 * gradient would silently ignore the write (runtime/autograd.c). */
int rt_check_inplace_autograd(const char *op, const rt_tensor *t);
int rt_check_same_device(const char *op, const rt_tensor *a, const rt_tensor *b);
/* Sum t down to shape (undo broadcasting), result new tensor. */
int rt_sum_to_shape(rt_tensor *t, int ndim, const int64_t *shape, rt_tensor **out);

extern atomic_llong rt_g_live_tensors;
extern atomic_llong rt_g_host_bytes;
/* Stop counting a storage's bytes (before pointing it at foreign memory with a deleter). */
void rt_storage_untrack(rt_storage *s);

/* Counter-based RNG state (global generator). rt_rng_reserve returns the offset to use for n draws
 * and advances the generator. */
uint64_t rt_rng_seed(void);
uint64_t rt_rng_reserve(uint64_t n);

/* ================================================================================================
 * Autograd nodes (DESIGN section 4)
 * ============================================================================================== */

#define RT_NODE_MAX_INPUTS 4
#define RT_NODE_MAX_SAVED 4

/* An edge to an input: its grad_fn node, or (for a leaf requiring grad) the leaf itself. */
typedef struct rt_edge {
    rt_node *node;
    rt_tensor *leaf;
} rt_edge;

/* backward: given grad of this node's output, write grads for each input edge into grad_in[i]
 * (new references, or NULL where an input needs none). Saved tensors and args are in the node. */
typedef int (*rt_backward_fn)(rt_node *node, rt_tensor *grad_out, rt_tensor **grad_in);

struct rt_node {
    atomic_int refcount;
    const char *name; /* "AddBackward", ... */
    rt_backward_fn backward;
    int64_t custom_id; /* >= 0: a Lua custom function (backward == NULL) */
    int ninputs;
    rt_edge inputs[RT_NODE_MAX_INPUTS];
    bool input_needs_grad[RT_NODE_MAX_INPUTS];
    /* geometry (shape, dtype, device) of inputs 0..3 when the op ran: a backward that only needs an
     * input's shape (add, sub, sum, mean, ...) reads it here instead of saving the tensor, so the
     * input's memory is not kept alive until the backward */
    rt_tensor_meta in_meta[RT_NODE_MAX_INPUTS];
    int nsaved;
    rt_tensor *saved[RT_NODE_MAX_SAVED];
    int saved_version[RT_NODE_MAX_SAVED];
    /* saved slot i packed to host memory by save_on_cpu (runtime/autograd_saved_offload.c):
     * saved[i] is then NULL and rt_node_saved unpacks this instead */
    struct rt_saved_pack *saved_pack[RT_NODE_MAX_SAVED];
    int64_t iargs[16];
    double dargs[4];
    /* for ops with more inputs (cat, stack): extra edges, owned */
    int nextra;
    rt_edge *extra;
    void *ctx; /* op-private data, freed with ctx_free */
    void (*ctx_free)(void *ctx);
    /* called once when a backward without retain_graph frees the saved tensors (the node cannot
     * run again): the streamed linear lets its parameters move from then on; may be NULL */
    void (*ctx_released)(void *ctx);
    bool released; /* saved tensors freed after a backward without retain_graph */
    /* output geometry, for building zero grads and checking incoming grads */
    int out_dtype;
    int out_device;
    int out_ndim;
    int64_t out_shape[RT_MAX_DIMS];
    /* scratch used by the engine during one task */
    int64_t task_id;
    int deps;
    rt_tensor *grad_accum;
};

/* True when grad mode is on and any input requires grad: the op must record a node. */
bool rt_needs_grad1(const rt_tensor *a);
bool rt_needs_grad2(const rt_tensor *a, const rt_tensor *b);
bool rt_needs_grad3(const rt_tensor *a, const rt_tensor *b, const rt_tensor *c);
/* Make a node for output `out` with inputs[0..n) (NULL entries allowed, e.g. an absent bias).
 * Sets out->grad_fn and out->meta.requires_grad. The node is returned borrowed (owned by out). */
int rt_node_attach(rt_tensor *out, const char *name, rt_backward_fn backward, int n,
                   rt_tensor *const *inputs, rt_node **node);
/* Save a tensor for backward (retained; its version is checked when backward runs). */
void rt_node_save(rt_node *node, rt_tensor *t);
/* Fetch saved tensor i, failing with RT_ERR_AUTOGRAD if the graph was freed or it was modified in
 * place since. */
int rt_node_saved(rt_node *node, int i, rt_tensor **out);
void rt_node_release(rt_node *node);

/* save_on_cpu (runtime/autograd_saved_offload.c), called by rt_node_save / rt_node_saved /
 * release_saved: pack returns 1 and sets *out when it took t (mode on, t eligible), 0 when the
 * caller must save t itself (on failure the error stays in rt_last_error and t stays on its
 * device). unpack hands out a borrowed tensor (owned by the record) or fails like rt_node_saved. */
int rt_saved_offload_pack(rt_tensor *t, struct rt_saved_pack **out);
int rt_saved_offload_unpack(struct rt_saved_pack *r, const char *node_name, rt_tensor **out);
void rt_saved_offload_release(struct rt_saved_pack *r);

/* Bump the version of a tensor's storage after an in-place write (all views see it). */
void rt_tensor_bump_version(rt_tensor *t);

#endif /* RT_INTERNAL_H */
