/* backend_nn.h: the CUDA backend entries defined in backend_nn.c (neural-network ops and optimizer
 * updates), for the table in backend_cuda.c. Signatures are those of struct rt_backend
 * (runtime/internal.h). */
#ifndef RT_CUDA_BACKEND_NN_H
#define RT_CUDA_BACKEND_NN_H

#include "../../runtime/internal.h"

int rtc_be_softmax(const rt_kview *out, const rt_kview *x, int dim, int log_);
int rtc_be_softmax_backward(const rt_kview *grad_in, const rt_kview *grad_out, const rt_kview *y,
                            int dim, int log_);
int rtc_be_cross_entropy(const rt_kview *loss, const rt_kview *valid, const rt_kview *logits,
                         const rt_kview *target, int64_t ignore_index, double label_smoothing);
int rtc_be_cross_entropy_backward(const rt_kview *grad_logits, const rt_kview *grad_loss,
                                  const rt_kview *logits, const rt_kview *target,
                                  int64_t ignore_index, double label_smoothing);
int rtc_be_cross_entropy_reduce(const rt_kview *out, const rt_kview *count, const rt_kview *logits,
                                const rt_kview *target, int64_t ignore_index, int reduction,
                                double label_smoothing);
int rtc_be_embedding(const rt_kview *out, const rt_kview *weight, const rt_kview *indices);
int rtc_be_embedding_backward(const rt_kview *grad_weight, const rt_kview *grad_out,
                              const rt_kview *indices);
int rtc_be_layer_norm(const rt_kview *out, const rt_kview *mean, const rt_kview *rstd,
                      const rt_kview *x, const rt_kview *weight, const rt_kview *bias, double eps);
int rtc_be_layer_norm_backward(const rt_kview *grad_x, const rt_kview *grad_weight,
                               const rt_kview *grad_bias, const rt_kview *grad_out,
                               const rt_kview *x, const rt_kview *mean, const rt_kview *rstd,
                               const rt_kview *weight);
int rtc_be_dropout(const rt_kview *out, const rt_kview *x, double p, uint64_t seed,
                   uint64_t offset);
int rtc_be_reduce_with_indices(int op, const rt_kview *values, const rt_kview *indices,
                               const rt_kview *a, int dim);
int rtc_be_index_select(const rt_kview *out, const rt_kview *src, int dim, const rt_kview *idx);
int rtc_be_index_add(const rt_kview *out, const rt_kview *src, int dim, const rt_kview *idx);
int rtc_be_adamw_step(const rt_kview *param, const rt_kview *grad, const rt_kview *exp_avg,
                      const rt_kview *exp_avg_sq, double lr, double beta1, double beta2, double eps,
                      double weight_decay, int64_t step);
int rtc_be_sgd_step(const rt_kview *param, const rt_kview *grad, const rt_kview *buf, double lr,
                    double momentum, double dampening, double weight_decay, int nesterov,
                    int first_step);
int rtc_be_adamw_step_multi(int n, const rt_kview *params, const rt_kview *grads,
                            const rt_kview *exp_avgs, const rt_kview *exp_avg_sqs, double lr,
                            double beta1, double beta2, double eps, double weight_decay,
                            int64_t step);

/* transformer ops (rms_norm.cu, rope.cu, attention.cu) */
int rtc_be_rms_norm(const rt_kview *out, const rt_kview *rstd, const rt_kview *x,
                    const rt_kview *weight, double eps);
int rtc_be_rms_norm_backward(const rt_kview *grad_x, const rt_kview *grad_weight,
                             const rt_kview *grad_out, const rt_kview *x, const rt_kview *rstd,
                             const rt_kview *weight);
int rtc_be_rope(const rt_kview *out, const rt_kview *x, int seq_dim, double theta, int64_t offset,
                int interleaved, int inverse);
int rtc_be_sdpa(const rt_kview *out, const rt_kview *lse, const rt_kview *q, const rt_kview *k,
                const rt_kview *v, const rt_kview *mask, int is_causal, double scale,
                double dropout_p, uint64_t seed, uint64_t offset);
int rtc_be_sdpa_backward(const rt_kview *grad_q, const rt_kview *grad_k, const rt_kview *grad_v,
                         const rt_kview *grad_mask, const rt_kview *grad_out, const rt_kview *q,
                         const rt_kview *k, const rt_kview *v, const rt_kview *out,
                         const rt_kview *lse, const rt_kview *mask, int is_causal, double scale,
                         double dropout_p, uint64_t seed, uint64_t offset);

#endif /* RT_CUDA_BACKEND_NN_H */
