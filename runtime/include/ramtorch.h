/* ramtorch.h: the one public contract of libramtorch.
 *
 * Every exported name starts with rt_. Objects are opaque reference-counted handles. Every fallible
 * call returns int (RT_OK = 0, or a negative rt_status) and writes results through out pointers;
 * the message is in rt_last_error() (thread-local). The library never aborts, exits or prints on
 * bad input.
 *
 * This header is also the FFI contract: the build runs the C preprocessor over it with RT_CDEF
 * defined and writes the result as the cdef that lua/ramtorch/ffi.lua loads. So: plain C
 * declarations only, no inline code, no system headers when RT_CDEF is defined (LuaJIT knows
 * int64_t, size_t and friends), and macros only for constants used inside this file.
 */
#ifndef RAMTORCH_H
#define RAMTORCH_H

#ifndef RT_CDEF
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
#endif

#define RT_MAX_DIMS 8

/* ------------------------------------------------------------------------------------------------
 * Status codes and errors
 * ---------------------------------------------------------------------------------------------- */

typedef enum rt_status {
    RT_OK = 0,
    RT_ERR_INVALID = -1,      /* bad argument value */
    RT_ERR_SHAPE = -2,        /* shapes do not fit */
    RT_ERR_DTYPE = -3,        /* dtype not supported or mismatched */
    RT_ERR_DEVICE = -4,       /* tensors on different devices, or device unavailable */
    RT_ERR_OOM = -5,          /* allocation failed (host, pinned or device) */
    RT_ERR_INDEX = -6,        /* index out of range */
    RT_ERR_IO = -7,           /* file system error */
    RT_ERR_BACKEND = -8,      /* CUDA / cuBLAS / NCCL call failed */
    RT_ERR_AUTOGRAD = -9,     /* graph misuse (second backward, no grad_fn, ...) */
    RT_ERR_UNSUPPORTED = -10, /* combination not implemented on this backend */
    RT_ERR_FORMAT = -11       /* malformed file or data */
} rt_status;

/* The message of the last failed call on this thread: "op: what was wrong (shapes, dtypes,
 * devices) at file:line". Valid until the next failing call on the same thread. */
const char *rt_last_error(void);
int rt_last_error_code(void);
void rt_clear_error(void);
const char *rt_version(void);

/* ------------------------------------------------------------------------------------------------
 * dtypes and devices
 * ---------------------------------------------------------------------------------------------- */

typedef enum rt_dtype {
    RT_F32 = 0,
    RT_BF16 = 1,
    RT_F16 = 2,
    RT_F64 = 3,
    RT_I64 = 4,
    RT_I32 = 5,
    RT_U8 = 6,
    RT_BOOL = 7,
    RT_NUM_DTYPES = 8
} rt_dtype;

const char *rt_dtype_name(int dtype); /* "float32", "bfloat16", ... ; "?" if unknown */
size_t rt_dtype_size(int dtype);      /* 0 if unknown */
int rt_dtype_is_float(int dtype);

/* A device is an int: RT_DEVICE_CPU (-1) or a CUDA ordinal (0, 1, ...). */
enum { RT_DEVICE_CPU = -1 };

/* Storage kinds of host memory (device memory is always RT_MEM_DEVICE). */
typedef enum rt_memkind {
    RT_MEM_HOST = 0,   /* pageable malloc */
    RT_MEM_PINNED = 1, /* page-locked */
    RT_MEM_SHARED = 2, /* slice of the shared-memory arena */
    RT_MEM_DEVICE = 3  /* memory of an accelerator */
} rt_memkind;

/* ------------------------------------------------------------------------------------------------
 * Tensors
 *
 * An rt_tensor* points at its rt_tensor_meta: Lua casts the handle to const rt_tensor_meta* to read
 * shape and dtype without a call. The struct is read-only for callers.
 * ---------------------------------------------------------------------------------------------- */

typedef struct rt_tensor rt_tensor;

typedef struct rt_tensor_meta {
    int32_t dtype;  /* rt_dtype */
    int32_t device; /* RT_DEVICE_CPU or CUDA ordinal */
    int32_t ndim;
    int32_t requires_grad;
    int64_t numel;
    int64_t offset; /* in elements, into the storage */
    int64_t shape[RT_MAX_DIMS];
    int64_t strides[RT_MAX_DIMS]; /* in elements */
    int32_t is_leaf;              /* no grad_fn */
    int32_t memkind;              /* rt_memkind of the storage */
} rt_tensor_meta;

/* The by-value handle that FFI users hold (Lua's Tensor). A struct rather than a bare pointer so
 * that `a + 1` and `a[1]` reach the metatable instead of LuaJIT's built-in pointer arithmetic. The
 * release function is the handle's finalizer; it clears p, so releasing twice is safe. */
typedef struct rt_tensor_ref {
    rt_tensor *p;
} rt_tensor_ref;
void rt_tensor_ref_release(rt_tensor_ref *ref);

void rt_tensor_retain(rt_tensor *t);
void rt_tensor_release(rt_tensor *t); /* NULL is fine */
const rt_tensor_meta *rt_tensor_meta_of(const rt_tensor *t);
void *rt_tensor_data_ptr(const rt_tensor *t); /* first element (storage + offset) */
int rt_tensor_is_contiguous(const rt_tensor *t);
int64_t rt_tensor_storage_nbytes(const rt_tensor *t);
/* Live tensor count and host bytes held by tensors, for leak tests and memory accounting. */
int64_t rt_live_tensors(void);
int64_t rt_host_bytes_allocated(void);
/* A counter of tensor bytes allocated (any device) that the caller may read and reset through the
 * pointer (no call needed): the Lua layer paces its garbage collector with it. */
int64_t *rt_alloc_pressure(void);
/* Bytes held by live tensor storages on every device (host, pinned, device). */
int64_t rt_live_storage_bytes(void);

/* Creation. shape may be NULL when ndim == 0 (a scalar). */
int rt_empty(int ndim, const int64_t *shape, int dtype, int device, rt_tensor **out);
int rt_full(int ndim, const int64_t *shape, double value, int dtype, int device, rt_tensor **out);
int rt_arange(double start, double end, double step, int dtype, int device, rt_tensor **out);
/* Copy n elements of src_dtype from host memory into a new tensor of dtype (converted). */
int rt_from_host(int ndim, const int64_t *shape, int dtype, int device, const void *src,
                 int src_dtype, rt_tensor **out);
/* Copy a tensor's elements, in logical (row-major) order, to host memory as dst_dtype. dst must
 * hold numel elements. */
int rt_to_host(const rt_tensor *t, void *dst, int dst_dtype);
int rt_item(const rt_tensor *t, double *out); /* numel must be 1 */

/* Random numbers: a counter-based generator (seed, offset). Element i of a draw is a pure function
 * of (seed, offset + i), so results do not depend on the thread count or the device. */
void rt_manual_seed(uint64_t seed);
void rt_rng_get_state(uint64_t *seed, uint64_t *offset);
void rt_rng_set_state(uint64_t seed, uint64_t offset);
int rt_rand(int ndim, const int64_t *shape, int dtype, int device, rt_tensor **out);
int rt_randn(int ndim, const int64_t *shape, int dtype, int device, rt_tensor **out);
int rt_randint(int64_t low, int64_t high, int ndim, const int64_t *shape, int dtype, int device,
               rt_tensor **out);
/* Fill a tensor in place with U(lo, hi) (used by parameter initialisation). No autograd. */
int rt_uniform_(rt_tensor *t, double lo, double hi);
int rt_normal_(rt_tensor *t, double mean, double std);

/* Views share storage. reshape copies when a view is impossible. */
int rt_view(rt_tensor *t, int ndim, const int64_t *shape, rt_tensor **out);
int rt_reshape(rt_tensor *t, int ndim, const int64_t *shape, rt_tensor **out);
int rt_permute(rt_tensor *t, int ndim, const int *dims, rt_tensor **out);
int rt_transpose(rt_tensor *t, int dim0, int dim1, rt_tensor **out);
int rt_narrow(rt_tensor *t, int dim, int64_t start, int64_t length, rt_tensor **out);
int rt_select(rt_tensor *t, int dim, int64_t index, rt_tensor **out);
int rt_expand(rt_tensor *t, int ndim, const int64_t *shape, rt_tensor **out);
int rt_squeeze(rt_tensor *t, int dim, rt_tensor **out); /* dim < -ndim: all size-1 dims */
int rt_unsqueeze(rt_tensor *t, int dim, rt_tensor **out);
int rt_contiguous(rt_tensor *t, rt_tensor **out); /* returns t itself (retained) if contiguous */
int rt_clone(rt_tensor *t, rt_tensor **out);
int rt_to_dtype(rt_tensor *t, int dtype, rt_tensor **out);
int rt_to_device(rt_tensor *t, int device, rt_tensor **out);

/* In-place, no autograd (parameter updates, initialisation, data loading). */
int rt_copy_(rt_tensor *dst, rt_tensor *src); /* src broadcast to dst's shape, dtype converted */
int rt_fill_(rt_tensor *t, double value);

/* ------------------------------------------------------------------------------------------------
 * Autograd (DESIGN section 4)
 * ---------------------------------------------------------------------------------------------- */

int rt_grad_enabled(void);
int rt_set_grad_enabled(int enabled); /* returns the previous setting */
int rt_set_requires_grad(rt_tensor *t, int requires_grad);
/* *out is NULL (and RT_OK returned) when t has no grad. */
int rt_tensor_grad(rt_tensor *t, rt_tensor **out);
int rt_tensor_set_grad(rt_tensor *t, rt_tensor *grad); /* grad may be NULL to clear */
int rt_detach(rt_tensor *t, rt_tensor **out);
const char *rt_tensor_grad_fn_name(const rt_tensor *t); /* NULL for leaves */

/* Backward runs as a task that hands control back to the caller when it reaches a node whose
 * backward is written in Lua (custom functions): rt_autograd_run returns 1 with the node's id and
 * incoming gradient; the caller computes input gradients, gives each with rt_autograd_supply, and
 * calls rt_autograd_run again. It returns 0 when the graph is done.
 * It returns 2 when an allocation of the engine ran out of memory (a node's backward, or adding a
 * gradient into what a node or leaf has accumulated) for the first time: nothing of the failed
 * step was applied, and the caller frees memory (Lua: a full garbage collection, as for every
 * RT_ERR_OOM, DESIGN section 2; C never calls Lua) and calls rt_autograd_run again, which retries
 * that step once. A second failure of the same allocation is returned as RT_ERR_OOM. */
enum { RT_AUTOGRAD_CUSTOM = 1, RT_AUTOGRAD_RETRY_OOM = 2 };
typedef struct rt_autograd_task rt_autograd_task;
int rt_autograd_begin(rt_tensor *root, rt_tensor *grad_root, int retain_graph,
                      rt_autograd_task **out);
int rt_autograd_run(rt_autograd_task *task, int64_t *custom_id, rt_tensor **grad_out);
int rt_autograd_supply(rt_autograd_task *task, int input_index, rt_tensor *grad);
void rt_autograd_task_free(rt_autograd_task *task);
/* Convenience: begin + run to completion; fails if a Lua custom node is reached. */
int rt_backward(rt_tensor *root, rt_tensor *grad_root, int retain_graph);

/* Custom (Lua) functions: attach a node with id `custom_id` to `output`, whose inputs are
 * inputs[0..n). Gradients for those inputs are asked for through rt_autograd_run. */
int rt_custom_attach(rt_tensor *output, int n, rt_tensor *const *inputs, int64_t custom_id);
/* Ids of custom nodes freed since the last call (at most cap written), so Lua can drop the contexts
 * it keeps for them. Returns the count written. */
int rt_custom_take_freed(int64_t *ids, int cap);

/* ------------------------------------------------------------------------------------------------
 * Elementwise ops (broadcasting like PyTorch; type promotion: float beats int, wider beats
 * narrower, bf16 with f16 gives f32)
 * ---------------------------------------------------------------------------------------------- */

typedef enum rt_binary_op {
    RT_ADD = 0,
    RT_SUB,
    RT_MUL,
    RT_DIV,
    RT_POW,
    RT_MAXIMUM,
    RT_MINIMUM,
    /* comparisons: result bool, no gradient */
    RT_EQ,
    RT_NE,
    RT_LT,
    RT_LE,
    RT_GT,
    RT_GE,
    RT_NUM_BINARY_OPS
} rt_binary_op;

int rt_binary(int op, rt_tensor *a, rt_tensor *b, rt_tensor **out);
/* a (op) s, or s (op) a when scalar_first. The result keeps a's dtype unless a is an integer tensor
 * and s is not integral (then f32), or op is a comparison (then bool). */
int rt_binary_scalar(int op, rt_tensor *a, double s, int scalar_first, rt_tensor **out);
/* In place, no autograd: a = a (op) b, b broadcast to a. */
int rt_binary_(int op, rt_tensor *a, rt_tensor *b);
int rt_binary_scalar_(int op, rt_tensor *a, double s);

typedef enum rt_unary_op {
    RT_NEG = 0,
    RT_ABS,
    RT_EXP,
    RT_LOG,
    RT_SQRT,
    RT_RSQRT,
    RT_TANH,
    RT_SIGMOID,
    RT_RELU,
    RT_GELU,      /* exact, erf */
    RT_GELU_TANH, /* tanh approximation */
    RT_SILU,
    RT_SIN,
    RT_COS,
    RT_SQUARE,
    RT_RECIPROCAL,
    RT_NUM_UNARY_OPS
} rt_unary_op;

int rt_unary(int op, rt_tensor *a, rt_tensor **out);
int rt_clamp(rt_tensor *a, double lo, double hi, int has_lo, int has_hi, rt_tensor **out);
int rt_where(rt_tensor *cond, rt_tensor *a, rt_tensor *b, rt_tensor **out);

/* ------------------------------------------------------------------------------------------------
 * Reductions
 * ---------------------------------------------------------------------------------------------- */

typedef enum rt_reduce_op { RT_SUM = 0, RT_MEAN, RT_MAX, RT_MIN, RT_NUM_REDUCE_OPS } rt_reduce_op;

/* Reduce over dims[0..ndims); ndims == 0 reduces over every dim. Negative dims count from the end.
 */
int rt_reduce(int op, rt_tensor *a, int ndims, const int *dims, int keepdim, rt_tensor **out);
/* max/min along one dim with the indices (i64) of the winners. */
int rt_reduce_dim_with_indices(int op, rt_tensor *a, int dim, int keepdim, rt_tensor **values,
                               rt_tensor **indices);
int rt_argmax(rt_tensor *a, int dim, int keepdim, rt_tensor **out); /* dim = INT32_MIN: flat */
int rt_argmin(rt_tensor *a, int dim, int keepdim, rt_tensor **out);

/* ------------------------------------------------------------------------------------------------
 * Linear algebra
 * ---------------------------------------------------------------------------------------------- */

/* PyTorch matmul semantics (1-d, 2-d, batched with broadcasting of batch dims). */
int rt_matmul(rt_tensor *a, rt_tensor *b, rt_tensor **out);
/* y = x @ w^T + b; w is (out, in), b (out) or NULL. */
int rt_linear(rt_tensor *x, rt_tensor *w, rt_tensor *b, rt_tensor **out);

/* ------------------------------------------------------------------------------------------------
 * Neural-network ops
 * ---------------------------------------------------------------------------------------------- */

typedef enum rt_reduction {
    RT_REDUCTION_NONE = 0,
    RT_REDUCTION_MEAN,
    RT_REDUCTION_SUM
} rt_reduction;

int rt_softmax(rt_tensor *x, int dim, rt_tensor **out);
int rt_log_softmax(rt_tensor *x, int dim, rt_tensor **out);
/* logits (N, C) or (N, C, d1...), target i64 (N) or (N, d1...). */
int rt_cross_entropy(rt_tensor *logits, rt_tensor *target, int64_t ignore_index, int reduction,
                     double label_smoothing, rt_tensor **out);
int rt_mse_loss(rt_tensor *input, rt_tensor *target, int reduction, rt_tensor **out);
int rt_embedding(rt_tensor *weight, rt_tensor *indices, rt_tensor **out);
/* Normalise over the last `nnorm` dims; weight and bias (shape of those dims) may be NULL. */
int rt_layer_norm(rt_tensor *x, int nnorm, rt_tensor *weight, rt_tensor *bias, double eps,
                  rt_tensor **out);
int rt_dropout(rt_tensor *x, double p, int training, rt_tensor **out);
int rt_cat(int n, rt_tensor *const *tensors, int dim, rt_tensor **out);
int rt_stack(int n, rt_tensor *const *tensors, int dim, rt_tensor **out);

/* ------------------------------------------------------------------------------------------------
 * Optimizer kernels (fused, in place, no autograd; the update runs where the parameter lives)
 * ---------------------------------------------------------------------------------------------- */

/* PyTorch AdamW (decoupled weight decay, amsgrad off); step is the 1-based step count after this
 * update. param, exp_avg and exp_avg_sq share a shape; grad too. */
int rt_adamw_step(rt_tensor *param, rt_tensor *grad, rt_tensor *exp_avg, rt_tensor *exp_avg_sq,
                  double lr, double beta1, double beta2, double eps, double weight_decay,
                  int64_t step);
/* PyTorch SGD; momentum_buf may be NULL when momentum == 0. first_step: buffer initialised from
 * the gradient as PyTorch does. */
int rt_sgd_step(rt_tensor *param, rt_tensor *grad, rt_tensor *momentum_buf, double lr,
                double momentum, double dampening, double weight_decay, int nesterov,
                int first_step);

/* ------------------------------------------------------------------------------------------------
 * Transformer ops (runtime/ops_attention.c): RMS norm, rotary embedding, attention. All with
 * autograd; f32, f64, bf16 and f16 (reduced types computed in f32).
 * ---------------------------------------------------------------------------------------------- */

/* x * rsqrt(mean(x^2 over the last nnorm dims) + eps) * weight; weight (those dims) may be NULL. */
int rt_rms_norm(rt_tensor *x, int nnorm, rt_tensor *weight, double eps, rt_tensor **out);
/* Rotary position embedding over the last dim (even size D) of x. Positions are offset + the index
 * along seq_dim: seq_dim 1 for (B, T, H, D), 2 for (B, H, T, D). Pair p of the last dim, (p, p+D/2)
 * (rotate-half, Hugging Face Llama) or (2p, 2p+1) when interleaved (GPT-J), is rotated by the angle
 * pos * theta^(-2p/D). The backward is the inverse rotation. */
int rt_rope(rt_tensor *x, int seq_dim, double theta, int64_t offset, int interleaved,
            rt_tensor **out);
/* softmax(q k^T * scale + mask) v with q (B, H, T, D), k (B, H, S, D), v (B, H, S, Dv) -> (B, H, T,
 * Dv). attn_mask may be NULL, bool (true = take part) or float (added), broadcastable to (B, H, T,
 * S). is_causal masks keys after the query (top-left aligned like PyTorch; may be combined with a
 * mask). scale <= 0 means 1/sqrt(D). dropout_p applies to the probabilities (counter-based RNG).
 * Rows whose keys are all masked give 0. No T x S matrix is kept: the backward recomputes it from
 * the saved log-sum-exp. */
int rt_scaled_dot_product_attention(rt_tensor *q, rt_tensor *k, rt_tensor *v, rt_tensor *attn_mask,
                                    double dropout_p, int is_causal, double scale, rt_tensor **out);

/* ------------------------------------------------------------------------------------------------
 * Threads
 * ---------------------------------------------------------------------------------------------- */

int rt_get_num_threads(void);
int rt_set_num_threads(int n);

/* ------------------------------------------------------------------------------------------------
 * Serialization: safetensors files (runtime/safetensors.c, format of huggingface/safetensors)
 *
 * A reader validates the whole header on open (header length, strict JSON, dtypes, shapes, offsets
 * contiguous and in range, byte lengths, duplicate names); any defect is RT_ERR_FORMAT with a
 * message naming the file, the tensor and what was wrong. Tensors are listed sorted by name.
 * ---------------------------------------------------------------------------------------------- */

typedef struct rt_safetensors rt_safetensors;

/* Open and validate a file (mapped read-only until close). */
int rt_safetensors_open(const char *path, rt_safetensors **out);
/* The same over bytes in memory (copied); name is used in messages and may be NULL. */
int rt_safetensors_open_memory(const void *data, size_t nbytes, const char *name,
                               rt_safetensors **out);
void rt_safetensors_close(rt_safetensors *f); /* NULL is fine */
int64_t rt_safetensors_count(const rt_safetensors *f);
/* Name of tensor i (0 <= i < count), NULL when out of range. Valid until close. */
const char *rt_safetensors_name(const rt_safetensors *f, int64_t i);
/* Index of a tensor by name; RT_ERR_INDEX naming the file when absent. */
int rt_safetensors_find(const rt_safetensors *f, const char *name, int64_t *index);
/* dtype (an rt_dtype, or -1 for a safetensors dtype that ramtorch cannot hold such as I16), ndim
 * and shape (RT_MAX_DIMS entries) of tensor i, without reading its data. */
int rt_safetensors_info(const rt_safetensors *f, int64_t i, int *dtype, int *ndim, int64_t *shape);
/* The safetensors dtype string of tensor i ("F32", "BF16", ...), NULL when out of range. */
const char *rt_safetensors_dtype_str(const rt_safetensors *f, int64_t i);
/* Copy tensor i into a new contiguous CPU tensor. */
int rt_safetensors_get(const rt_safetensors *f, int64_t i, rt_tensor **out);
/* The __metadata__ string map, sorted by key. */
int64_t rt_safetensors_metadata_count(const rt_safetensors *f);
const char *rt_safetensors_metadata_key(const rt_safetensors *f, int64_t i);
const char *rt_safetensors_metadata_value(const rt_safetensors *f, int64_t i);
/* Write n tensors (any dtype, layout or device; stored contiguous little-endian) and n_meta
 * metadata pairs. Atomic: the data goes to a temporary file in the target's folder, is fsynced and
 * renamed over path, then the folder is fsynced; on any failure the previous file is untouched
 * and the temporary file removed. Names must be unique UTF-8 strings other than "__metadata__". */
int rt_safetensors_save(const char *path, int n, const char *const *names,
                        rt_tensor *const *tensors, int n_meta, const char *const *meta_keys,
                        const char *const *meta_values);

/* ------------------------------------------------------------------------------------------------
 * Data loading: idx files, row gathers and their background variant (runtime/idx.c,
 * runtime/ops_index.c)
 * ---------------------------------------------------------------------------------------------- */

/* Read an idx file (MNIST format; gzip-compressed or plain) into a new CPU tensor: u8 for type
 * 0x08, i32 for 0x0C, f32 for 0x0D, f64 for 0x0E. Magic, dims and the exact data size are checked:
 * a missing file is RT_ERR_IO, a corrupt one RT_ERR_FORMAT, both naming the file. */
int rt_read_idx(const char *path, rt_tensor **out);

/* out = t indexed along dim by indices (1-d, i64 or i32, values in [0, size)), like PyTorch's
 * index_select. Backward scatter-adds the gradient into the selected rows. */
int rt_index_select(rt_tensor *t, int dim, rt_tensor *indices, rt_tensor **out);
/* In place, no autograd: t[..., indices[j], ...] += src[..., j, ...] along dim (duplicates add). */
int rt_index_add_(rt_tensor *t, int dim, rt_tensor *indices, rt_tensor *src);

/* The data-loading gather: rows of a CPU tensor t (dim 0) at indices, converted to out_dtype (-1
 * keeps t's dtype) and divided by divisor (1: no division; a float output divides in its compute
 * precision, as x.float().div(d) does, so uint8 images become [0, 1] floats in the same pass). No
 * autograd. A non-float out_dtype needs divisor 1. */
int rt_gather_rows(rt_tensor *t, rt_tensor *indices, int out_dtype, double divisor,
                   rt_tensor **out);
/* The same on a background thread, so that the next batch is built while the caller works on the
 * current one (LuaJIT is single-threaded; this is the DataLoader's prefetch). Arguments are
 * checked before it starts; inputs are retained until it finishes. rt_async_wait blocks and hands
 * over the result (once); rt_async_free waits if needed and frees (NULL is fine). A failure inside
 * the job (an index out of range) is reported by rt_async_wait with the job's message. */
typedef struct rt_async rt_async;
int rt_gather_rows_async(rt_tensor *t, rt_tensor *indices, int out_dtype, double divisor,
                         rt_async **out);
int rt_async_wait(rt_async *job, rt_tensor **out);
void rt_async_free(rt_async *job);

/* ------------------------------------------------------------------------------------------------
 * CUDA: devices, memory, pinned host memory, streams and events (libramtorch_cuda, loaded on first
 * use; every call fails with RT_ERR_DEVICE and a message saying why when CUDA is unavailable)
 * ---------------------------------------------------------------------------------------------- */

typedef struct rt_stream rt_stream;
typedef struct rt_event rt_event;

/* 1 when the CUDA backend loads and sees at least one device, else 0 (never an error). */
int rt_cuda_is_available(void);
int rt_cuda_device_count(void); /* 0 when unavailable */
int rt_cuda_set_device(int device);
int rt_cuda_get_device(int *out);
int rt_cuda_synchronize(int device); /* device < 0: the current device */
/* The caching allocator of a device: bytes in tensors, their peak, bytes held from the driver. */
int rt_cuda_memory_stats(int device, int64_t *allocated, int64_t *max_allocated, int64_t *reserved);
int rt_cuda_reset_peak_memory_stats(int device);
int rt_cuda_empty_cache(int device); /* return cached free blocks to the driver */
/* Cap on the bytes the allocator holds from the driver (0: no cap). */
int rt_cuda_set_memory_budget(int device, int64_t bytes);
int rt_cuda_get_memory_budget(int device, int64_t *out);
/* f32 GEMM through TF32 tensor cores (off by default). */
int rt_cuda_set_tf32(int enabled);
/* A page-locked copy of a CPU tensor (meta.memkind == RT_MEM_PINNED); copies from or to it can be
 * asynchronous. A pinned tensor is returned retained as is. */
int rt_pin_memory(rt_tensor *t, rt_tensor **out);

/* rt_to_device / rt_copy_ with PyTorch's non_blocking: when the host side is pinned, the copy is
 * only enqueued on the current stream (synchronise with an event or rt_cuda_synchronize before
 * reading or reusing the host memory); otherwise these are the same as the blocking calls. */
int rt_to_device_ex(rt_tensor *t, int device, int non_blocking, rt_tensor **out);
int rt_copy_ex_(rt_tensor *dst, rt_tensor *src, int non_blocking);

/* Streams. The current stream is per thread and per device; every kernel and copy a thread issues
 * goes to it. rt_current_stream returns a borrowed handle (the default stream is never freed). */
int rt_stream_create(int device, rt_stream **out);
void rt_stream_destroy(rt_stream *s); /* NULL and default streams are ignored */
int rt_current_stream(int device, rt_stream **out);
int rt_set_current_stream(rt_stream *s); /* NULL: the current device's default stream */
int rt_stream_synchronize(rt_stream *s);
int rt_stream_wait_event(rt_stream *s, rt_event *e);
int rt_event_create(int enable_timing, rt_event **out);
void rt_event_destroy(rt_event *e);
int rt_event_record(rt_event *e, rt_stream *s); /* s NULL: the current stream */
int rt_event_synchronize(rt_event *e);
int rt_event_query(rt_event *e); /* 1 completed, 0 pending, < 0 error */
int rt_event_elapsed_time(rt_event *start, rt_event *end, double *ms);

/* ------------------------------------------------------------------------------------------------
 * Host arena (DESIGN section 3; runtime/arena.c)
 *
 * One memfd (or shm_open + unlink) segment per process for now, grown chunk by chunk; offloaded
 * parameters, their host gradients and staging buffers are sliced from it in program order with
 * 64-byte alignment, so the same program finds the same tensor at the same offset (a later issue
 * maps the segment in several workers). Chunks are page-locked for a CUDA device once the
 * offload engine of a CUDA device starts.
 * ---------------------------------------------------------------------------------------------- */

/* An uninitialised contiguous CPU tensor whose storage is an arena slice (meta.memkind ==
 * RT_MEM_SHARED); the slice returns to the arena when the storage dies. */
int rt_arena_empty(int ndim, const int64_t *shape, int dtype, rt_tensor **out);
/* Byte offset of t's storage slice in the arena segment; RT_ERR_INVALID for other tensors. */
int rt_arena_offset(const rt_tensor *t, int64_t *offset);
/* Bytes mapped, bytes in live slices, their peak, chunks mapped (any out pointer may be NULL). */
int rt_arena_stats(int64_t *mapped, int64_t *used, int64_t *peak_used, int64_t *chunks);
/* Size of the chunks added when the arena grows (before or after the first allocation; a request
 * larger than a chunk gets a chunk of its own). */
int rt_arena_set_chunk_size(int64_t bytes);

/* ------------------------------------------------------------------------------------------------
 * The offload engine (DESIGN section 5; runtime/offload.c, runtime/offload_linear.c)
 *
 * An offloaded parameter lives in host memory; streamed ops fetch a device copy through the engine
 * of the compute device just before use and give it back right after. Per device: H2D and D2H copy
 * streams and the compute stream (the caller's current stream), ordered by events; a pool of device
 * buffers under a byte budget; the access schedule learned on the first step and used to prefetch;
 * residency for what the budget holds beyond the streaming window. Gradients are computed on the
 * device and copied to the host gradient (param->grad) on the D2H stream; from the second
 * micro-batch on, a host worker accumulates them there in f32. On the CPU backend the engine runs
 * when CPU streams are enabled: the "device" buffers are separate host allocations and each copy
 * stream is a thread.
 * ---------------------------------------------------------------------------------------------- */

typedef struct rt_offload_param rt_offload_param;

/* A handle on a host parameter (a contiguous CPU tensor, retained). */
int rt_offload_param_new(rt_tensor *host, rt_offload_param **out);
void rt_offload_param_release(rt_offload_param *p); /* NULL is fine */
/* Rewrite p's transfer copy in dtype (bf16/f16 shadow of an f32 master) from the master now (the
 * optimizer step calls this after updating the master; a stale shadow is also refreshed on fetch).
 */
int rt_offload_refresh_shadow(rt_offload_param *p, int dtype);

/* y = x @ w^T + b with w (out, in) and b (out) or NULL offloaded parameters, computed on x's
 * device. Under autocast (rt_autocast_set_dtype) the compute and transfer dtype is the autocast
 * dtype; otherwise x and w share a dtype. Backward fetches w again (or reuses it at the
 * forward-to-backward turnaround) and sends the parameter gradients to the host, unless w_hook /
 * b_hook (tensors whose grad_fn is a Lua custom function, or NULL) are given: the gradient is then
 * handed to that function (its hooks run on the device), which passes it on with
 * rt_offload_grad_to_host. */
int rt_offload_linear(rt_tensor *x, rt_offload_param *w, rt_offload_param *b, rt_tensor *w_hook,
                      rt_tensor *b_hook, rt_tensor **out);
/* Send a device gradient of p (p's shape) to p's host gradient. On the default path ("native") a
 * first bf16 gradient after zero_grad lands by D2H as a bf16 host gradient (no host pass); a second
 * one turns the host gradient into f32 (widen(first) + widen(second)) and later ones accumulate
 * into it in f32 (f64 for f64 masters). f16 gradients are widened to f32 from the first (a
 * GradScaler unscales them, which f16's range does not survive). */
int rt_offload_grad_to_host(rt_offload_param *p, rt_tensor *grad);
/* Order the caller's current stream on `device` after every gradient copy to the host queued so
 * far, so that work enqueued next (a post-accumulate hook changing a device gradient in place)
 * cannot reach what is being copied. */
int rt_offload_after_grad_copies(int device);
/* How gradients reach the host: "native" (above, the default), "host" (host gradients always f32:
 * staged and widened by a host pass), "device" (a first narrow gradient widened to f32 on the
 * device), "auto" (device while the host pass lags), "skip" (no host pass: wrong gradients, for
 * timing only). Also RAMTORCH_OFFLOAD_GRAD_PATH. Waits for pending gradients first. */
int rt_offload_set_grad_path(const char *name);
const char *rt_offload_grad_path(void);
/* Wait until every engine's pending copies and host accumulations are done (the end of a backward
 * calls this before anyone reads a host gradient). */
int rt_offload_synchronize(void);

/* Residency by migration (DESIGN section 5: the planner keeps some parameters "on the device for
 * good"). Under a budget, once the schedule is learned, a parameter the plan keeps resident moves
 * to the compute device: its storage becomes a device allocation (same tensor, version bumped), so
 * its gradient, its accumulation and its optimizer update stay on the device and nothing of it
 * crosses the bus again. rt_offload_migrate moves w and b (b may be NULL) together when w is
 * planned resident on device and neither is held on the host (a graph node that fetches it, a
 * pending gradient copy, a host gradient, an optimizer that keeps it there: keep_host); *moved
 * says whether it did. On the CPU engine the "device" copy is a separate host allocation. */
int rt_offload_migrate(rt_offload_param *w, rt_offload_param *b, int device, int *moved);
int rt_offload_param_migrated(const rt_offload_param *p);
/* Bring a migrated p back to the host (model:to("cpu")): it takes host's storage (contiguous, p's
 * shape and dtype, holding its values: an arena slice, so it streams fast again); a device gradient
 * comes back too. No-op when p is on the host. */
int rt_offload_unmigrate(rt_offload_param *p, rt_tensor *host);
/* Optimizers whose update needs the host master (bf16 states, overlap, delayed update) pin it. */
int rt_offload_param_set_keep_host(rt_offload_param *p, int keep);
/* Migration on or off for every engine (default on); returns the previous setting. */
int rt_offload_set_migration(int enabled);

/* The CPU engine: off by default (then CPU inputs take the plain path). */
int rt_offload_set_cpu_streams(int enabled);
int rt_offload_cpu_streams_enabled(void);
/* Byte budget of a device's buffer pool (0: none, stream everything through a small window).
 * Fails with RT_ERR_INVALID naming the largest parameter when the budget cannot hold it. */
int rt_offload_set_memory_budget(int device, int64_t bytes);
int rt_offload_get_memory_budget(int device, int64_t *out);
/* Forget the learned access schedule (and the residency plan) of a device. */
int rt_offload_reset_schedule(int device);

typedef struct rt_offload_stats {
    int64_t h2d_bytes, h2d_copies; /* parameter copies to the device */
    int64_t d2h_bytes, d2h_copies; /* gradient copies to the host */
    int64_t fetches;               /* parameter requests by streamed ops */
    int64_t hits;                  /* requests served by a copy already on the device */
    int64_t prefetches;            /* copies started ahead of their request */
    int64_t stalls;                /* requests where the compute stream had to wait for a copy */
    double wait_ms;                /* time the compute stream waited on copies */
    int64_t evictions;             /* cached copies dropped to make room */
    int64_t resident_bytes;        /* parameter bytes kept on the device for good */
    int64_t streamed_bytes;        /* parameter bytes (per step's schedule) streamed instead */
    int64_t pool_bytes, pool_peak_bytes; /* device bytes held by the buffer pool */
    int64_t budget;
    int64_t schedule_length; /* requests per step (0 while learning) */
    int64_t shadow_refreshes;
    int64_t migrated_bytes; /* of resident_bytes: parameters moved to the device for good */
} rt_offload_stats;
int rt_offload_get_stats(int device, rt_offload_stats *out);
int rt_offload_reset_stats(int device);

/* Testing the engine's ordering: flags that drop one event wait (RT_OFFLOAD_SKIP_H2D_WAIT: the
 * compute stream does not wait for a parameter copy; RT_OFFLOAD_SKIP_D2H_WAIT: the host worker
 * does not wait for a gradient copy). Also read once from RAMTORCH_OFFLOAD_DEBUG_SKIP_WAIT
 * ("h2d", "d2h" or "h2d,d2h"). Returns the previous flags. */
enum { RT_OFFLOAD_SKIP_H2D_WAIT = 1, RT_OFFLOAD_SKIP_D2H_WAIT = 2 };
int rt_offload_set_debug_flags(int flags);
/* CPU copy streams sleep this long before each 256 KiB chunk (0: off), making races certain. */
int rt_offload_set_copy_delay_us(int us);

/* Mixed precision (ramtorch.amp.autocast): the compute dtype of streamed ops on this thread
 * (RT_BF16 or RT_F16), or -1 for none. Returns the previous setting. */
int rt_autocast_set_dtype(int dtype);
int rt_autocast_get_dtype(void);

/* ------------------------------------------------------------------------------------------------
 * Host optimizer (DESIGN section 6; runtime/host_optim.c, kernels/cpu/host_optim.c)
 *
 * Fused AdamW / SGD for parameters in host memory: one pass over parameter, gradient and state
 * (and the bf16/f16 transfer shadow of an offloaded f32 master), scalar / AVX2 / AVX-512 paths
 * chosen at run time with bit-identical results, OpenMP over whole 64-element blocks (results do
 * not depend on the thread count). AdamW state may be bfloat16, stored with stochastic rounding
 * (a counter-based hash of seed, step and element index: deterministic). The update can also run on
 * the offload engine's host worker as soon as a streamed parameter's last gradient has landed
 * (overlap with the backward): arm it before the last backward of a step, finish it after.
 * ---------------------------------------------------------------------------------------------- */

enum { RT_SIMD_AUTO = 0, RT_SIMD_SCALAR = 1, RT_SIMD_AVX2 = 2, RT_SIMD_AVX512 = 3 };
/* Force a code path (RT_SIMD_AUTO: the widest this CPU runs); RT_ERR_UNSUPPORTED if it lacks it. */
int rt_host_optim_set_simd(int level);
int rt_host_optim_simd(void); /* the path the next update takes (RT_SIMD_SCALAR..AVX512) */
/* Threads of the host updates (0: OpenMP's default). */
int rt_host_optim_set_threads(int n);
int rt_host_optim_threads(void);

typedef struct rt_adamw_hparams {
    double lr, beta1, beta2, eps, weight_decay;
    int64_t step;  /* the count after this update (>= 1) */
    uint64_t seed; /* per-parameter key of the stochastic rounding of bf16 state */
    int maximize;
} rt_adamw_hparams;

typedef struct rt_sgd_hparams {
    double lr, momentum, dampening, weight_decay;
    int nesterov, first_step, maximize;
} rt_sgd_hparams;

/* param: contiguous CPU float32 or bfloat16 tensor (bfloat16 rounded to nearest even on store);
 * grad: its shape, float32, or the bfloat16/float16 a first micro-batch's gradient lands in
 * (float16: scalar path); exp_avg, exp_avg_sq: both float32 or both bfloat16. shadow_of: NULL, or
 * param's offload handle, whose transfer shadow (if it has one) is rewritten in the same pass and
 * marked fresh. */
int rt_host_adamw_step(rt_tensor *param, rt_tensor *grad, rt_tensor *exp_avg, rt_tensor *exp_avg_sq,
                       rt_offload_param *shadow_of, const rt_adamw_hparams *h);
/* param, momentum_buf (NULL when momentum is 0): contiguous CPU float32 of one shape; grad the
 * same shape in float32, bfloat16 or float16. */
int rt_host_sgd_step(rt_tensor *param, rt_tensor *grad, rt_tensor *momentum_buf,
                     rt_offload_param *shadow_of, const rt_sgd_hparams *h);

/* Overlap with the backward. rt_host_optim_begin(p): count p's gradients from now on (call it,
 * after rt_offload_synchronize, before the backward that completes the step's gradients). arm:
 * once expected_grads gradients of p have been accumulated on the host, the engine's host worker
 * runs the update (the states and p's master are retained). rt_host_optim_finish(p) (after
 * rt_offload_synchronize): disarms; *updated = 1 when the update ran; *routed = gradients of p
 * routed since begin. It fails (the update is then suspect) when the update failed, when a
 * gradient of p arrived after the update ran, or when p's host gradient was changed after the
 * update used it (clipping needs every gradient first: do not arm such steps). */
int rt_host_optim_begin(rt_offload_param *p);
int rt_host_optim_arm_adamw(rt_offload_param *p, rt_tensor *exp_avg, rt_tensor *exp_avg_sq,
                            const rt_adamw_hparams *h, int expected_grads);
int rt_host_optim_arm_sgd(rt_offload_param *p, rt_tensor *momentum_buf, const rt_sgd_hparams *h,
                          int expected_grads);
int rt_host_optim_finish(rt_offload_param *p, int *updated, int *routed);

/* ------------------------------------------------------------------------------------------------
 * Offload engine profile (runtime/offload.c): where a training step's time goes, per phase, for
 * scripts/bench/streamed_mlp.lua. Off by default (it records timing events around every copy and
 * GEMM); on with rt_offload_set_profiling(1) or RAMTORCH_OFFLOAD_PROFILE=1. Device times come from
 * timing events on each stream, host times from the monotonic clock. rt_offload_reset_stats
 * clears it too.
 * ------------------------------------------------------------------------------------------------
 */
typedef struct rt_offload_profile {
    double h2d_ms;                   /* H2D stream busy copying parameters */
    double d2h_ms;                   /* D2H stream busy copying gradients */
    double gemm_fwd_ms, gemm_bwd_ms; /* compute stream in the GEMMs of streamed ops */
    double worker_wait_ms;           /* host worker blocked on gradient copies */
    double worker_acc_ms;            /* host worker converting / accumulating host gradients */
    double worker_cb_ms;             /* host worker in gradient-complete callbacks (optimizer) */
    int64_t worker_tasks;            /* gradient pieces the worker finished */
    int64_t worker_bytes;            /* host gradient bytes the worker wrote */
    int64_t max_pending;             /* deepest gradient queue seen */
    double fetch_host_ms;            /* compute thread inside fetch (scheduling, enqueueing) */
    double route_host_ms;            /* compute thread inside gradient routing */
    double sync_ms;                  /* compute thread blocked in engine host syncs mid-step */
    int64_t syncs;
    double end_sync_ms; /* compute thread waiting in rt_offload_synchronize (end of backward) */
    int64_t end_syncs;
    double shadow_ms;       /* compute thread refreshing bf16/f16 transfer shadows */
    int64_t slot_allocs;    /* device buffers allocated for the pool */
    int64_t staging_allocs; /* host staging slices allocated */
    int64_t direct_grads;   /* gradients copied straight into the host gradient (no worker pass) */
    int64_t promotions;     /* narrow host gradients turned into f32 by a second gradient */
    int64_t grad_waits;     /* gradient routings that waited for device memory (backpressure) */
    double grad_wait_ms;    /* compute thread waiting there */
    int64_t grad_dev_peak;  /* most device gradient bytes waiting for their D2H copy at once */
    int64_t device_casts;   /* gradients widened to f32 on the device before the copy */
    int64_t arena_chunks;   /* arena chunks mapped so far (process-wide) */
    int64_t arena_registers;
    double arena_register_ms; /* page-locking arena chunks (process-wide, since start) */
} rt_offload_profile;
int rt_offload_set_profiling(int enabled); /* returns the previous setting */
/* Gradients that need a host pass (conversion or accumulation) go down in pieces of this many
 * bytes (default 16 MiB; 0: whole), so the host worker converts one piece while the next is copied.
 * Also read once from RAMTORCH_OFFLOAD_GRAD_CHUNK_MB. Returns the previous size. */
int64_t rt_offload_set_grad_chunk_bytes(int64_t bytes);
int rt_offload_get_profile(int device, rt_offload_profile *out);

/* ------------------------------------------------------------------------------------------------
 * Multi-tensor AdamW (runtime/optim.c): n device-resident parameters in one call
 * ---------------------------------------------------------------------------------------------- */

/* rt_adamw_step on params[i], grads[i], exp_avgs[i], exp_avg_sqs[i] for i = 0 .. n-1, with one set
 * of hyper-parameters and one step count: the same result bit for bit, in a few kernel launches on
 * a GPU (the CPU loops over rt_adamw_step's kernel). Every tensor is checked first (rt_adamw_step's
 * checks, all on params[0]'s device, and no two written tensors overlapping); an error names the
 * index and leaves every tensor unchanged. n == 0 does nothing. */
int rt_adamw_step_multi(int n, rt_tensor **params, rt_tensor **grads, rt_tensor **exp_avgs,
                        rt_tensor **exp_avg_sqs, double lr, double beta1, double beta2, double eps,
                        double weight_decay, int64_t step);

/* ------------------------------------------------------------------------------------------------
 * One-step-delayed host update (issue 6; runtime/host_optim_delay.c): DeepSpeed ZeRO-Offload's
 * delayed parameter update for streamed host parameters, opt-in (optim's delay_update(true)).
 *
 * add_adamw / add_sgd (checked at once, as rt_host_adamw_step / rt_host_sgd_step) put a streamed
 * parameter's update into the next batch, with the gradient tensor it reads (retained: give the
 * parameter a fresh gradient). The first add of a parameter puts it in delayed mode: from then on
 * the engine sends front copies of its weights (made from the master then), not the master.
 * launch hands the batch to the update thread and returns; it writes the masters, the states and
 * back copies of the weights. wait (the next step) waits for it, and makes the backs the fronts:
 * so the forward/backward of step k + 1 read the weights before update k, whatever the timing.
 * flush waits and takes every parameter out of delayed mode (transfers read the master again).
 * free flushes. Errors of the update are returned by wait / flush (the first one).
 * ---------------------------------------------------------------------------------------------- */
typedef struct rt_delayed_update rt_delayed_update;
int rt_delayed_update_new(rt_delayed_update **out);
void rt_delayed_update_free(rt_delayed_update *d); /* NULL is fine */
int rt_delayed_update_add_adamw(rt_delayed_update *d, rt_offload_param *p, rt_tensor *grad,
                                rt_tensor *exp_avg, rt_tensor *exp_avg_sq,
                                const rt_adamw_hparams *h);
int rt_delayed_update_add_sgd(rt_delayed_update *d, rt_offload_param *p, rt_tensor *grad,
                              rt_tensor *momentum_buf, const rt_sgd_hparams *h);
int rt_delayed_update_cancel(rt_delayed_update *d); /* drops the batch not yet launched */
int rt_delayed_update_launch(rt_delayed_update *d);
int rt_delayed_update_wait(rt_delayed_update *d);
int rt_delayed_update_flush(rt_delayed_update *d);
int rt_delayed_update_pending(const rt_delayed_update *d); /* 1 between launch and wait */
/* Testing: the update thread sleeps this many microseconds before each parameter's update, so a
 * forward that read what the update writes would see it changed for certain. */
int rt_delayed_update_set_test_delay_us(int us);

/* ---- Exact int64 arange (arange_i64.c) --------------------------------------------------------
 * arange computed in int64: exact where rt_arange's doubles would round (beyond 2^53); the values
 * are then converted to dtype and moved to device. Errors as rt_arange (zero step, step away from
 * end), and RT_ERR_INVALID when the length does not fit in int64.
 * ---------------------------------------------------------------------------------------------- */
int rt_arange_i64(int64_t start, int64_t end, int64_t step, int dtype, int device, rt_tensor **out);

/* ---- Storage version (autograd.c) --------------------------------------------------------------
 * The in-place version counter of t's storage, bumped by every in-place write: custom autograd
 * Functions (lua/ramtorch/autograd.lua) compare it to refuse saved tensors changed after saving.
 * ---------------------------------------------------------------------------------------------- */
int rt_tensor_version(const rt_tensor *t);

/* ---- save_on_cpu: saved activations in host memory (autograd_saved_offload.c) ------------------
 * PyTorch's torch.autograd.graph.save_on_cpu. While the mode is on (per thread), every tensor an op
 * saves for backward that is at least RT_SAVE_ON_CPU_MIN_BYTES and is not a parameter (a leaf that
 * requires grad, which stays on its device anyway) is packed to host memory: a CUDA tensor by an
 * asynchronous D2H copy on a side stream (pinned host buffers unless the mode is
 * RT_SAVE_ON_CPU_PAGEABLE), its device memory released once the copy is done; a CPU tensor as a
 * copy (through the CPU copy streams when rt_offload_set_cpu_streams is on). Backward unpacks it
 * onto its device (H2D on the compute stream). Backward sees the value as it was when saved; an
 * in-place change of the tensor before its copy completed is the usual "modified in place" error.
 * set returns the previous mode (0 off, RT_SAVE_ON_CPU_PINNED, RT_SAVE_ON_CPU_PAGEABLE).
 * synchronize waits for every copy still in flight; empty_cache frees the cached host buffers.
 * ---------------------------------------------------------------------------------------------- */
enum { RT_SAVE_ON_CPU_PINNED = 1, RT_SAVE_ON_CPU_PAGEABLE = 2, RT_SAVE_ON_CPU_MIN_BYTES = 65536 };
typedef struct rt_save_on_cpu_stats {
    int64_t packed;          /* records made (one D2H copy each) */
    int64_t packed_bytes;    /* bytes they copied to the host */
    int64_t shared;          /* saves served by a live record of the same tensor (no copy) */
    int64_t unpacked;        /* H2D copies made by unpacks */
    int64_t unpacked_direct; /* unpacks served by the device tensor, its copy still in flight */
    int64_t pending;         /* records whose copy is not known done (now) */
    int64_t live;            /* records alive (now) */
    int64_t host_bytes;      /* host bytes the live records hold (now) */
    int64_t cached_bytes;    /* host buffers kept for reuse (now) */
    int64_t modified;        /* records found modified in place when their copy completed */
    int64_t fallbacks;       /* packs that failed and kept the tensor on its device */
} rt_save_on_cpu_stats;
int rt_autograd_set_save_on_cpu(int mode);
int rt_autograd_get_save_on_cpu(void);
int rt_autograd_save_on_cpu_synchronize(void);
int rt_autograd_save_on_cpu_empty_cache(void);
int rt_autograd_save_on_cpu_stats(rt_save_on_cpu_stats *out);

#ifndef RT_CDEF
#ifdef __cplusplus
}
#endif
#endif
#endif /* RAMTORCH_H */
