/* cpu_kernels.h: the launchers of kernels/cpu/, one per op family, routed by backend_cpu.c. Each
 * has the signature of its rt_backend entry (runtime/internal.h). */
#ifndef RT_CPU_KERNELS_H
#define RT_CPU_KERNELS_H

#include "cpu_common.h"

/* binary.c */
int rt_cpu_binary(int op, const rt_kview *out, const rt_kview *a, const rt_kview *b);
int rt_cpu_binary_scalar(int op, const rt_kview *out, const rt_kview *a, double s,
                         int scalar_first);
int rt_cpu_masked_copy(const rt_kview *out, const rt_kview *cond, const rt_kview *a);
/* unary.c */
int rt_cpu_unary(int op, const rt_kview *out, const rt_kview *a);
int rt_cpu_unary_backward(int op, const rt_kview *grad_in, const rt_kview *grad_out,
                          const rt_kview *x, const rt_kview *y);
/* reduce.c */
int rt_cpu_reduce(int op, const rt_kview *out, const rt_kview *a);
/* gemm.c */
int rt_cpu_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                const void *a, int64_t lda, int64_t stride_a, const void *b, int64_t ldb,
                int64_t stride_b, double beta, void *c, int64_t ldc, int64_t stride_c,
                int64_t batch, int dtype);
/* random.c */
int rt_cpu_fill_uniform(const rt_kview *dst, uint64_t seed, uint64_t offset, double lo, double hi);
int rt_cpu_fill_normal(const rt_kview *dst, uint64_t seed, uint64_t offset, double mean,
                       double std);
int rt_cpu_fill_randint(const rt_kview *dst, uint64_t seed, uint64_t offset, int64_t low,
                        int64_t high);
/* Counter-based generator: 4 x 32 random bits for counter c under key (seed). Philox4x32-10. */
void rt_philox4x32(uint64_t seed, uint64_t counter, uint32_t out[4]);

/* ---- kernels added by op families go below (one header block per file) ---- */

/* optim.c: fused optimizer updates (contiguous views, checked by runtime/optim.c) */
int rt_cpu_adamw_step(const rt_kview *param, const rt_kview *grad, const rt_kview *exp_avg,
                      const rt_kview *exp_avg_sq, double lr, double beta1, double beta2, double eps,
                      double weight_decay, int64_t step);
int rt_cpu_sgd_step(const rt_kview *param, const rt_kview *grad, const rt_kview *buf, double lr,
                    double momentum, double dampening, double weight_decay, int nesterov,
                    int first_step);

/* softmax.c */
int rt_cpu_softmax(const rt_kview *out, const rt_kview *x, int dim, int log_);
int rt_cpu_softmax_backward(const rt_kview *grad_in, const rt_kview *grad_out, const rt_kview *y,
                            int dim, int log_);
/* cross_entropy.c */
int rt_cpu_cross_entropy(const rt_kview *loss, const rt_kview *valid, const rt_kview *logits,
                         const rt_kview *target, int64_t ignore_index, double label_smoothing);
int rt_cpu_cross_entropy_backward(const rt_kview *grad_logits, const rt_kview *grad_loss,
                                  const rt_kview *logits, const rt_kview *target,
                                  int64_t ignore_index, double label_smoothing);
/* embedding.c */
int rt_cpu_embedding(const rt_kview *out, const rt_kview *weight, const rt_kview *indices);
int rt_cpu_embedding_backward(const rt_kview *grad_weight, const rt_kview *grad_out,
                              const rt_kview *indices);
/* layer_norm.c */
int rt_cpu_layer_norm(const rt_kview *out, const rt_kview *mean, const rt_kview *rstd,
                      const rt_kview *x, const rt_kview *weight, const rt_kview *bias, double eps);
int rt_cpu_layer_norm_backward(const rt_kview *grad_x, const rt_kview *grad_weight,
                               const rt_kview *grad_bias, const rt_kview *grad_out,
                               const rt_kview *x, const rt_kview *mean, const rt_kview *rstd,
                               const rt_kview *weight);
/* dropout.c */
int rt_cpu_dropout(const rt_kview *out, const rt_kview *x, double p, uint64_t seed,
                   uint64_t offset);
/* reduce_indices.c */
int rt_cpu_reduce_with_indices(int op, const rt_kview *values, const rt_kview *indices,
                               const rt_kview *a, int dim);
/* index.c */
int rt_cpu_index_select(const rt_kview *out, const rt_kview *src, int dim, const rt_kview *idx);
int rt_cpu_index_select_convert(const rt_kview *out, const rt_kview *src, int dim,
                                const rt_kview *idx, double divisor);
int rt_cpu_index_add(const rt_kview *out, const rt_kview *src, int dim, const rt_kview *idx);
/* rms_norm.c, rope.c, attention.c (transformer ops) */
int rt_cpu_rms_norm(const rt_kview *out, const rt_kview *rstd, const rt_kview *x,
                    const rt_kview *weight, double eps);
int rt_cpu_rms_norm_backward(const rt_kview *grad_x, const rt_kview *grad_weight,
                             const rt_kview *grad_out, const rt_kview *x, const rt_kview *rstd,
                             const rt_kview *weight);
int rt_cpu_rope(const rt_kview *out, const rt_kview *x, int seq_dim, double theta, int64_t offset,
                int interleaved, int inverse);
int rt_cpu_sdpa(const rt_kview *out, const rt_kview *lse, const rt_kview *q, const rt_kview *k,
                const rt_kview *v, const rt_kview *mask, int is_causal, double scale,
                double dropout_p, uint64_t seed, uint64_t offset);
int rt_cpu_sdpa_backward(const rt_kview *grad_q, const rt_kview *grad_k, const rt_kview *grad_v,
                         const rt_kview *grad_mask, const rt_kview *grad_out, const rt_kview *q,
                         const rt_kview *k, const rt_kview *v, const rt_kview *out,
                         const rt_kview *lse, const rt_kview *mask, int is_causal, double scale,
                         double dropout_p, uint64_t seed, uint64_t offset);

#endif /* RT_CPU_KERNELS_H */
