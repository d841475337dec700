/* cross_entropy.c: CPU fused log-softmax + negative log-likelihood with ignore_index and label
 * smoothing, and its backward (softmax - smoothed one-hot, scaled by the incoming gradient).
 *
 * Logits are viewed as (N, C, S): the class dim in the middle, S = product of the trailing dims (1
 * for (N, C) input). Per row (n, s), with lse = logsumexp over classes and eps = label_smoothing:
 *   loss = lse - (1 - eps) * x[target] - eps / C * sum_c x[c]
 * which is PyTorch's (1 - eps) * nll + eps / C * sum_c(-log p_c). Rows whose target equals
 * ignore_index get loss 0 and valid 0. Computed in double per row; one row per thread. */
#include "cpu_kernels.h"

#include <limits.h>

/* log-sum-exp of a row of n logits at byte stride st. */
static inline double row_lse(const char *p, int64_t n, int64_t st, int dtype, double *sum_x) {
    double m = -INFINITY, sx = 0;
    if (dtype == RT_F32) {
        for (int64_t c = 0; c < n; c++) {
            double v = *(const float *)(p + c * st);
            m = v > m ? v : m;
            sx += v;
        }
    } else {
        for (int64_t c = 0; c < n; c++) {
            double v = rt_load(p + c * st, dtype);
            m = v > m ? v : m;
            sx += v;
        }
    }
    if (m == -INFINITY) m = 0; /* all -inf: the sum below is 0 and the lse -inf */
    double s = 0;
    if (dtype == RT_F32)
        for (int64_t c = 0; c < n; c++)
            s += exp(*(const float *)(p + c * st) - m);
    else
        for (int64_t c = 0; c < n; c++)
            s += exp(rt_load(p + c * st, dtype) - m);
    *sum_x = sx;
    return m + log(s);
}

/* Checks every non-ignored target lies in [0, C); returns RT_ERR_INDEX naming the first bad one. */
static int check_targets(const rt_kview *target, int64_t n_cls, int64_t ignore_index) {
    int64_t N = target->shape[0], S = target->shape[1], bad_at = INT64_MAX;
#pragma omp parallel for if (N * S > RT_PARALLEL_GRAIN) schedule(static) reduction(min : bad_at)
    for (int64_t r = 0; r < N * S; r++) {
        int64_t t =
            *(const int64_t *)(target->data +
                               ((r / S) * target->strides[0] + (r % S) * target->strides[1]) * 8);
        if (t != ignore_index && (t < 0 || t >= n_cls) && r < bad_at) bad_at = r;
    }
    if (bad_at == INT64_MAX) return RT_OK;
    int64_t t = *(const int64_t *)(target->data + ((bad_at / S) * target->strides[0] +
                                                   (bad_at % S) * target->strides[1]) *
                                                      8);
    return RT_ERR(RT_ERR_INDEX,
                  "cross_entropy: target %lld is out of bounds for %lld classes (expected 0..%lld "
                  "or ignore_index %lld), at flat target position %lld",
                  (long long)t, (long long)n_cls, (long long)n_cls - 1, (long long)ignore_index,
                  (long long)bad_at);
}

int rt_cpu_cross_entropy(const rt_kview *loss, const rt_kview *valid, const rt_kview *logits,
                         const rt_kview *target, int64_t ignore_index, double label_smoothing) {
    int64_t N = logits->shape[0], C = logits->shape[1], S = logits->shape[2];
    RT_TRY(check_targets(target, C, ignore_index));
    size_t el = rt_dtype_size(logits->dtype), eo = rt_dtype_size(loss->dtype);
    int64_t cst = logits->strides[1] * (int64_t)el;
    double eps = label_smoothing;
#pragma omp parallel for if (N * S * C > RT_PARALLEL_GRAIN) schedule(static)
    for (int64_t r = 0; r < N * S; r++) {
        int64_t n = r / S, s = r % S;
        int64_t t = *(const int64_t *)(target->data +
                                       (n * target->strides[0] + s * target->strides[1]) * 8);
        char *lp = loss->data + (n * loss->strides[0] + s * loss->strides[1]) * (int64_t)eo;
        bool ok = t != ignore_index;
        double v = 0;
        if (ok) {
            const char *p =
                logits->data + (n * logits->strides[0] + s * logits->strides[2]) * (int64_t)el;
            double sx, lse = row_lse(p, C, cst, logits->dtype, &sx);
            double xt = rt_load(p + t * cst, logits->dtype);
            v = lse - (1.0 - eps) * xt;
            if (eps != 0) v -= eps / (double)C * sx;
        }
        rt_store(lp, loss->dtype, v);
        if (valid)
            rt_store(valid->data + (n * valid->strides[0] + s * valid->strides[1]) *
                                       (int64_t)rt_dtype_size(valid->dtype),
                     valid->dtype, ok ? 1.0 : 0.0);
    }
    return RT_OK;
}

/* grad_logits[n, c, s] = g[n, s] * (softmax_c - (1 - eps) * [c == t] - eps / C), 0 where ignored.
 */
int rt_cpu_cross_entropy_backward(const rt_kview *grad_logits, const rt_kview *grad_loss,
                                  const rt_kview *logits, const rt_kview *target,
                                  int64_t ignore_index, double label_smoothing) {
    int64_t N = logits->shape[0], C = logits->shape[1], S = logits->shape[2];
    RT_TRY(check_targets(target, C, ignore_index));
    size_t el = rt_dtype_size(logits->dtype), eg = rt_dtype_size(grad_logits->dtype),
           ew = rt_dtype_size(grad_loss->dtype);
    int64_t cst = logits->strides[1] * (int64_t)el, gst = grad_logits->strides[1] * (int64_t)eg;
    double eps = label_smoothing;
#pragma omp parallel for if (N * S * C > RT_PARALLEL_GRAIN) schedule(static)
    for (int64_t r = 0; r < N * S; r++) {
        int64_t n = r / S, s = r % S;
        int64_t t = *(const int64_t *)(target->data +
                                       (n * target->strides[0] + s * target->strides[1]) * 8);
        char *gp = grad_logits->data +
                   (n * grad_logits->strides[0] + s * grad_logits->strides[2]) * (int64_t)eg;
        if (t == ignore_index) {
            for (int64_t c = 0; c < C; c++)
                rt_store(gp + c * gst, grad_logits->dtype, 0.0);
            continue;
        }
        double g = rt_load(
            grad_loss->data + (n * grad_loss->strides[0] + s * grad_loss->strides[1]) * (int64_t)ew,
            grad_loss->dtype);
        const char *p =
            logits->data + (n * logits->strides[0] + s * logits->strides[2]) * (int64_t)el;
        double sx, lse = row_lse(p, C, cst, logits->dtype, &sx);
        double base = eps / (double)C;
        if (logits->dtype == RT_F32 && grad_logits->dtype == RT_F32) {
            for (int64_t c = 0; c < C; c++) {
                double pc = exp(*(const float *)(p + c * cst) - lse);
                *(float *)(gp + c * gst) = (float)(g * (pc - base - (c == t ? 1.0 - eps : 0.0)));
            }
        } else {
            for (int64_t c = 0; c < C; c++) {
                double pc = exp(rt_load(p + c * cst, logits->dtype) - lse);
                rt_store(gp + c * gst, grad_logits->dtype,
                         g * (pc - base - (c == t ? 1.0 - eps : 0.0)));
            }
        }
    }
    return RT_OK;
}
