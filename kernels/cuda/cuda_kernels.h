/* cuda_kernels.h: the interface between the CUDA backend table (backend_cuda.c, C11) and the kernel
 * launchers in kernels/cuda/ (.cu) (C++). Plain C types only: runtime/internal.h uses C11 atomics
 * that nvcc's C++ does not take, so views cross this boundary as rtc_view, which has rt_kview's
 * layout (checked with static asserts in backend_cuda.c). Every launcher enqueues on the calling
 * thread's current stream (rtc_stream()), checks the launch, and returns RT_OK or a negative
 * status with the error set through rt_error_set. */
#ifndef RT_CUDA_KERNELS_H
#define RT_CUDA_KERNELS_H

#include "../../runtime/include/ramtorch.h"

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rtc_view {
    char *data;
    int dtype;
    int ndim;
    int64_t numel;
    int64_t shape[RT_MAX_DIMS];
    int64_t strides[RT_MAX_DIMS];
} rtc_view;

/* From libramtorch (runtime/error.c). */
int rt_error_set(int code, const char *file, int line, const char *fmt, ...);

/* The current stream of the calling thread on the current device (backend_cuda.c). */
cudaStream_t rtc_stream(void);
int rtc_sm_count(void);
/* Device scratch from the caching allocator, freed in stream order. */
int rtc_scratch_alloc(size_t nbytes, void **out);
void rtc_scratch_free(void *p, size_t nbytes);

/* Turn a CUDA error into a status: "op: CUDA error <name>: <string> (in <expr>) at file:line". */
#define RTC_CUDA_TRY(op, expr)                                                                     \
    do {                                                                                           \
        cudaError_t rtc_err_ = (expr);                                                             \
        if (rtc_err_ != cudaSuccess)                                                               \
            return rt_error_set(RT_ERR_BACKEND, __FILE__, __LINE__,                                \
                                "%s: CUDA error %s: %s (in %s)", (op), cudaGetErrorName(rtc_err_), \
                                cudaGetErrorString(rtc_err_), #expr);                              \
    } while (0)
/* After a kernel launch. */
#define RTC_LAUNCH_CHECK(op) RTC_CUDA_TRY(op, cudaGetLastError())

/* elementwise.cu */
int rtc_copy(const rtc_view *dst, const rtc_view *src);
int rtc_fill(const rtc_view *dst, double value);
int rtc_binary(int op, const rtc_view *out, const rtc_view *a, const rtc_view *b);
int rtc_binary_scalar(int op, const rtc_view *out, const rtc_view *a, double s, int scalar_first);
int rtc_masked_copy(const rtc_view *out, const rtc_view *cond, const rtc_view *a);
int rtc_unary(int op, const rtc_view *out, const rtc_view *a);
int rtc_unary_backward(int op, const rtc_view *grad_in, const rtc_view *grad_out,
                       const rtc_view *x);
/* random.cu */
int rtc_fill_random(const rtc_view *dst, int kind, uint64_t seed, uint64_t offset, double a,
                    double b, int64_t lo, int64_t hi);
/* reduce.cu */
int rtc_reduce(int op, const rtc_view *out, const rtc_view *a);
/* fill with a byte (poisoning new allocations) */
int rtc_memset(void *p, int byte, size_t nbytes);

/* ---- neural-network ops and optimizer updates (one family per .cu file; semantics in
 * runtime/internal.h's struct rt_backend and kernels/cpu/) ---- */
/* softmax.cu */
int rtc_softmax(const rtc_view *out, const rtc_view *x, int dim, int log_);
int rtc_softmax_backward(const rtc_view *grad_in, const rtc_view *grad_out, const rtc_view *y,
                         int dim, int log_);
/* cross_entropy.cu */
int rtc_cross_entropy(const rtc_view *loss, const rtc_view *valid, const rtc_view *logits,
                      const rtc_view *target, int64_t ignore_index, double label_smoothing);
int rtc_cross_entropy_backward(const rtc_view *grad_logits, const rtc_view *grad_loss,
                               const rtc_view *logits, const rtc_view *target, int64_t ignore_index,
                               double label_smoothing);
/* embedding.cu */
int rtc_embedding(const rtc_view *out, const rtc_view *weight, const rtc_view *indices);
int rtc_embedding_backward(const rtc_view *grad_weight, const rtc_view *grad_out,
                           const rtc_view *indices);
/* layer_norm.cu */
int rtc_layer_norm(const rtc_view *out, const rtc_view *mean, const rtc_view *rstd,
                   const rtc_view *x, const rtc_view *weight, const rtc_view *bias, double eps);
int rtc_layer_norm_backward(const rtc_view *grad_x, const rtc_view *grad_weight,
                            const rtc_view *grad_bias, const rtc_view *grad_out, const rtc_view *x,
                            const rtc_view *mean, const rtc_view *rstd, const rtc_view *weight);
/* dropout.cu */
int rtc_dropout(const rtc_view *out, const rtc_view *x, double p, uint64_t seed, uint64_t offset);
/* reduce_indices.cu */
int rtc_reduce_with_indices(int op, const rtc_view *values, const rtc_view *indices,
                            const rtc_view *a, int dim);
/* index.cu */
int rtc_index_select(const rtc_view *out, const rtc_view *src, int dim, const rtc_view *idx);
int rtc_index_add(const rtc_view *out, const rtc_view *src, int dim, const rtc_view *idx);
/* optim.cu */
int rtc_adamw_step(const rtc_view *param, const rtc_view *grad, const rtc_view *exp_avg,
                   const rtc_view *exp_avg_sq, double lr, double beta1, double beta2, double eps,
                   double weight_decay, int64_t step);
int rtc_sgd_step(const rtc_view *param, const rtc_view *grad, const rtc_view *buf, double lr,
                 double momentum, double dampening, double weight_decay, int nesterov,
                 int first_step);
/* optim_multi.cu: n parameters (arrays of n views each) in ceil(n / 80) launches per dtype
 * combination; the tensors are non-empty */
int rtc_adamw_step_multi(int n, const rtc_view *params, const rtc_view *grads,
                         const rtc_view *exp_avgs, const rtc_view *exp_avg_sqs, double lr,
                         double beta1, double beta2, double eps, double weight_decay, int64_t step);

/* ---- transformer ops (semantics in kernels/cpu/rms_norm.c, rope.c, attention.c) ---- */
/* rms_norm.cu */
int rtc_rms_norm(const rtc_view *out, const rtc_view *rstd, const rtc_view *x,
                 const rtc_view *weight, double eps);
int rtc_rms_norm_backward(const rtc_view *grad_x, const rtc_view *grad_weight,
                          const rtc_view *grad_out, const rtc_view *x, const rtc_view *rstd,
                          const rtc_view *weight);
/* rope.cu */
int rtc_rope(const rtc_view *out, const rtc_view *x, int seq_dim, double theta, int64_t offset,
             int interleaved, int inverse);
/* attention.cu */
int rtc_sdpa(const rtc_view *out, const rtc_view *lse, const rtc_view *q, const rtc_view *k,
             const rtc_view *v, const rtc_view *mask, int is_causal, double scale, double dropout_p,
             uint64_t seed, uint64_t offset);
int rtc_sdpa_backward(const rtc_view *grad_q, const rtc_view *grad_k, const rtc_view *grad_v,
                      const rtc_view *grad_mask, const rtc_view *grad_out, const rtc_view *q,
                      const rtc_view *k, const rtc_view *v, const rtc_view *out,
                      const rtc_view *lse, const rtc_view *mask, int is_causal, double scale,
                      double dropout_p, uint64_t seed, uint64_t offset);

/* ---- deferred device-side error reports and single-launch reduction workspaces (deferred.c) ----
 * A kernel that finds a bad input (e.g. an out-of-range cross_entropy target) does not make the
 * host wait for it: it skips the bad element (no out-of-bounds read) and records the first offender
 * in its device's error slot, page-locked host memory mapped into the device. The host reads the
 * slot (no synchronisation) wherever it waits for the device anyway (rt_cuda_synchronize, stream
 * and event synchronize, copies to the host) and at the start of the next call of the op, and turns
 * a report into an RT_ERR_INDEX there: the error is deferred, never dropped. */
#define RTC_ERR_OP_CROSS_ENTROPY 1
typedef struct rtc_err_slot {
    int flag; /* 0: empty; 1: a report is there (written last, after a system fence) */
    int op;   /* RTC_ERR_OP_* */
    long long pos, value, bound, extra; /* cross_entropy: flat target position, target, classes,
                                           ignore_index */
} rtc_err_slot;
/* The calling thread's current device (backend_cuda.c). */
int rtc_current_device(void);
/* The current device's slot as the device addresses it (allocated on first use). */
int rtc_err_slot_get(const char *op, rtc_err_slot **dev);
/* RT_OK when device's slot is empty; else the report as an RT_ERR_INDEX whose message says it was
 * deferred and where it surfaced (`where`), and the slot is emptied (the device stays usable). */
int rtc_deferred_check(int device, const char *where);

/* The header of a reduction workspace: kernels whose last block finalises (the threadfence
 * reduction) count finished blocks in `counter` and atomicMin the first bad position into `bad`;
 * the last block resets both (0 and RTC_NO_BAD) so the next launch on the stream finds them
 * ready. `part` holds `cap` pairs of doubles (one pair per block). */
typedef struct rtc_red_hdr {
    unsigned int counter;
    unsigned int spare;
    unsigned long long bad;
} rtc_red_hdr;
/* The workspace of the current (device, stream), allocated and initialised on first use; it is
 * never shared between streams, so concurrent streams do not race on the counter. */
int rtc_red_workspace(const char *op, rtc_red_hdr **hdr, double **part, int64_t *cap);

/* cross_entropy.cu: mean (reduction 1) or sum (2) in one launch: out 0-d in logits' dtype, count
 * 0-d (compute dtype; number of non-ignored targets; may be NULL). */
int rtc_cross_entropy_reduce(const rtc_view *out, const rtc_view *count, const rtc_view *logits,
                             const rtc_view *target, int64_t ignore_index, int reduction,
                             double label_smoothing);

#ifdef __cplusplus
}
#endif

#endif /* RT_CUDA_KERNELS_H */
