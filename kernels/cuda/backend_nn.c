/* backend_nn.c: the CUDA backend's entries for the neural-network ops and optimizer updates
 * (softmax, cross_entropy, embedding, layer_norm, dropout, max/min with indices, index_select /
 * index_add, AdamW / SGD): thin wrappers turning rt_kview into rtc_view for the launchers in
 * softmax.cu, cross_entropy.cu, embedding.cu, layer_norm.cu, dropout.cu, reduce_indices.cu,
 * index.cu and optim.cu, and the transformer ops (rms_norm.cu, rope.cu, attention.cu).
 * backend_cuda.c puts them in its table. */
#include "../../runtime/internal.h"
#include "backend_nn.h"
#include "cuda_kernels.h"

#define CV(v) ((const rtc_view *)(v))
#define CVN(v) ((v) ? (const rtc_view *)(v) : NULL)

int rtc_be_softmax(const rt_kview *out, const rt_kview *x, int dim, int log_) {
    return rtc_softmax(CV(out), CV(x), dim, log_);
}
int rtc_be_softmax_backward(const rt_kview *grad_in, const rt_kview *grad_out, const rt_kview *y,
                            int dim, int log_) {
    return rtc_softmax_backward(CV(grad_in), CV(grad_out), CV(y), dim, log_);
}
int rtc_be_cross_entropy(const rt_kview *loss, const rt_kview *valid, const rt_kview *logits,
                         const rt_kview *target, int64_t ignore_index, double label_smoothing) {
    return rtc_cross_entropy(CV(loss), CVN(valid), CV(logits), CV(target), ignore_index,
                             label_smoothing);
}
int rtc_be_cross_entropy_backward(const rt_kview *grad_logits, const rt_kview *grad_loss,
                                  const rt_kview *logits, const rt_kview *target,
                                  int64_t ignore_index, double label_smoothing) {
    return rtc_cross_entropy_backward(CV(grad_logits), CV(grad_loss), CV(logits), CV(target),
                                      ignore_index, label_smoothing);
}
int rtc_be_cross_entropy_reduce(const rt_kview *out, const rt_kview *count, const rt_kview *logits,
                                const rt_kview *target, int64_t ignore_index, int reduction,
                                double label_smoothing) {
    return rtc_cross_entropy_reduce(CV(out), CVN(count), CV(logits), CV(target), ignore_index,
                                    reduction, label_smoothing);
}
int rtc_be_embedding(const rt_kview *out, const rt_kview *weight, const rt_kview *indices) {
    return rtc_embedding(CV(out), CV(weight), CV(indices));
}
int rtc_be_embedding_backward(const rt_kview *grad_weight, const rt_kview *grad_out,
                              const rt_kview *indices) {
    return rtc_embedding_backward(CV(grad_weight), CV(grad_out), CV(indices));
}
int rtc_be_layer_norm(const rt_kview *out, const rt_kview *mean, const rt_kview *rstd,
                      const rt_kview *x, const rt_kview *weight, const rt_kview *bias, double eps) {
    return rtc_layer_norm(CV(out), CV(mean), CV(rstd), CV(x), CVN(weight), CVN(bias), eps);
}
int rtc_be_layer_norm_backward(const rt_kview *grad_x, const rt_kview *grad_weight,
                               const rt_kview *grad_bias, const rt_kview *grad_out,
                               const rt_kview *x, const rt_kview *mean, const rt_kview *rstd,
                               const rt_kview *weight) {
    return rtc_layer_norm_backward(CVN(grad_x), CVN(grad_weight), CVN(grad_bias), CV(grad_out),
                                   CV(x), CV(mean), CV(rstd), CVN(weight));
}
int rtc_be_dropout(const rt_kview *out, const rt_kview *x, double p, uint64_t seed,
                   uint64_t offset) {
    return rtc_dropout(CV(out), CV(x), p, seed, offset);
}
int rtc_be_reduce_with_indices(int op, const rt_kview *values, const rt_kview *indices,
                               const rt_kview *a, int dim) {
    return rtc_reduce_with_indices(op, CVN(values), CV(indices), CV(a), dim);
}
int rtc_be_index_select(const rt_kview *out, const rt_kview *src, int dim, const rt_kview *idx) {
    return rtc_index_select(CV(out), CV(src), dim, CV(idx));
}
int rtc_be_index_add(const rt_kview *out, const rt_kview *src, int dim, const rt_kview *idx) {
    return rtc_index_add(CV(out), CV(src), dim, CV(idx));
}
int rtc_be_adamw_step(const rt_kview *param, const rt_kview *grad, const rt_kview *exp_avg,
                      const rt_kview *exp_avg_sq, double lr, double beta1, double beta2, double eps,
                      double weight_decay, int64_t step) {
    return rtc_adamw_step(CV(param), CV(grad), CV(exp_avg), CV(exp_avg_sq), lr, beta1, beta2, eps,
                          weight_decay, step);
}
/* rtc_view has rt_kview's layout (static asserts in backend_cuda.c), so arrays convert too. */
int rtc_be_adamw_step_multi(int n, const rt_kview *params, const rt_kview *grads,
                            const rt_kview *exp_avgs, const rt_kview *exp_avg_sqs, double lr,
                            double beta1, double beta2, double eps, double weight_decay,
                            int64_t step) {
    return rtc_adamw_step_multi(n, CV(params), CV(grads), CV(exp_avgs), CV(exp_avg_sqs), lr, beta1,
                                beta2, eps, weight_decay, step);
}
int rtc_be_sgd_step(const rt_kview *param, const rt_kview *grad, const rt_kview *buf, double lr,
                    double momentum, double dampening, double weight_decay, int nesterov,
                    int first_step) {
    return rtc_sgd_step(CV(param), CV(grad), CVN(buf), lr, momentum, dampening, weight_decay,
                        nesterov, first_step);
}
int rtc_be_rms_norm(const rt_kview *out, const rt_kview *rstd, const rt_kview *x,
                    const rt_kview *weight, double eps) {
    return rtc_rms_norm(CV(out), CV(rstd), CV(x), CVN(weight), eps);
}
int rtc_be_rms_norm_backward(const rt_kview *grad_x, const rt_kview *grad_weight,
                             const rt_kview *grad_out, const rt_kview *x, const rt_kview *rstd,
                             const rt_kview *weight) {
    return rtc_rms_norm_backward(CVN(grad_x), CVN(grad_weight), CV(grad_out), CV(x), CV(rstd),
                                 CVN(weight));
}
int rtc_be_rope(const rt_kview *out, const rt_kview *x, int seq_dim, double theta, int64_t offset,
                int interleaved, int inverse) {
    return rtc_rope(CV(out), CV(x), seq_dim, theta, offset, interleaved, inverse);
}
int rtc_be_sdpa(const rt_kview *out, const rt_kview *lse, const rt_kview *q, const rt_kview *k,
                const rt_kview *v, const rt_kview *mask, int is_causal, double scale,
                double dropout_p, uint64_t seed, uint64_t offset) {
    return rtc_sdpa(CV(out), CV(lse), CV(q), CV(k), CV(v), CVN(mask), is_causal, scale, dropout_p,
                    seed, offset);
}
int rtc_be_sdpa_backward(const rt_kview *grad_q, const rt_kview *grad_k, const rt_kview *grad_v,
                         const rt_kview *grad_mask, const rt_kview *grad_out, const rt_kview *q,
                         const rt_kview *k, const rt_kview *v, const rt_kview *out,
                         const rt_kview *lse, const rt_kview *mask, int is_causal, double scale,
                         double dropout_p, uint64_t seed, uint64_t offset) {
    return rtc_sdpa_backward(CV(grad_q), CV(grad_k), CV(grad_v), CVN(grad_mask), CV(grad_out),
                             CV(q), CV(k), CV(v), CV(out), CV(lse), CVN(mask), is_causal, scale,
                             dropout_p, seed, offset);
}
