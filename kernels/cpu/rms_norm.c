/* rms_norm.c: CPU fused RMS norm over the last dim of a contiguous (M, N) view, and its backward.
 *
 * Forward per row: rstd = 1 / sqrt(mean(x^2) + eps) (sum in double), y = x * rstd * w, computed in
 * f32 for f32/bf16/f16 (rounded once on store) and f64 for f64; rstd is written (compute dtype) for
 * the backward. Backward per row, with xhat = x * rstd and d = g * w:
 *   grad_x = rstd * (d - xhat * mean(d * xhat))
 * and per column grad_w = sum_rows g * xhat. Rows are split between threads for grad_x and column
 * blocks for grad_w, so no two threads add into one element and results do not depend on the
 * thread count. */
#include "cpu_kernels.h"

static inline double ld1(const rt_kview *v, int64_t j) {
    return rt_load(v->data + j * v->strides[v->ndim - 1] * (int64_t)rt_dtype_size(v->dtype),
                   v->dtype);
}
static inline double ld2(const rt_kview *v, int64_t i, int64_t j) {
    return rt_load(v->data +
                       (i * v->strides[0] + j * v->strides[1]) * (int64_t)rt_dtype_size(v->dtype),
                   v->dtype);
}
static inline void st2(const rt_kview *v, int64_t i, int64_t j, double x) {
    rt_store(v->data + (i * v->strides[0] + j * v->strides[1]) * (int64_t)rt_dtype_size(v->dtype),
             v->dtype, x);
}

int rt_cpu_rms_norm(const rt_kview *out, const rt_kview *rstd, const rt_kview *x,
                    const rt_kview *weight, double eps) {
    int64_t M = x->shape[0], N = x->shape[1];
    int cdt = x->dtype;
#pragma omp parallel for if (M * N > RT_PARALLEL_GRAIN / 4) schedule(static)
    for (int64_t i = 0; i < M; i++) {
        double ss = 0;
        for (int64_t j = 0; j < N; j++) {
            double v = ld2(x, i, j);
            ss += v * v;
        }
        double r = 1.0 / sqrt(ss / (double)N + eps);
        r = rt_round_compute(cdt, r);
        for (int64_t j = 0; j < N; j++) {
            double v = rt_round_compute(cdt, ld2(x, i, j) * r);
            if (weight) v = rt_round_compute(cdt, v * ld1(weight, j));
            st2(out, i, j, v);
        }
        rt_store(rstd->data + i * rstd->strides[0] * (int64_t)rt_dtype_size(rstd->dtype),
                 rstd->dtype, r);
    }
    return RT_OK;
}

int rt_cpu_rms_norm_backward(const rt_kview *grad_x, const rt_kview *grad_weight,
                             const rt_kview *grad_out, const rt_kview *x, const rt_kview *rstd,
                             const rt_kview *weight) {
    int64_t M = x->shape[0], N = x->shape[1];
    size_t er = rt_dtype_size(rstd->dtype);
#define RMS_R(i) rt_load(rstd->data + (i)*rstd->strides[0] * (int64_t)er, rstd->dtype)
    if (grad_x) {
#pragma omp parallel for if (M * N > RT_PARALLEL_GRAIN / 4) schedule(static)
        for (int64_t i = 0; i < M; i++) {
            double r = RMS_R(i), sdx = 0;
            for (int64_t j = 0; j < N; j++) {
                double d = ld2(grad_out, i, j);
                if (weight) d *= ld1(weight, j);
                sdx += d * ld2(x, i, j) * r;
            }
            sdx /= (double)N;
            for (int64_t j = 0; j < N; j++) {
                double d = ld2(grad_out, i, j);
                if (weight) d *= ld1(weight, j);
                st2(grad_x, i, j, r * (d - ld2(x, i, j) * r * sdx));
            }
        }
    }
    if (grad_weight) {
        enum { BLK = 64 };
        int64_t nblk = (N + BLK - 1) / BLK;
        size_t ew = rt_dtype_size(grad_weight->dtype);
#pragma omp parallel for if (M * N > RT_PARALLEL_GRAIN / 4) schedule(static)
        for (int64_t b = 0; b < nblk; b++) {
            double aw[BLK] = {0};
            int64_t j0 = b * BLK, j1 = j0 + BLK < N ? j0 + BLK : N;
            for (int64_t i = 0; i < M; i++) {
                double r = RMS_R(i);
                for (int64_t j = j0; j < j1; j++)
                    aw[j - j0] += ld2(grad_out, i, j) * ld2(x, i, j) * r;
            }
            for (int64_t j = j0; j < j1; j++)
                rt_store(grad_weight->data + j * grad_weight->strides[0] * (int64_t)ew,
                         grad_weight->dtype, aw[j - j0]);
        }
    }
#undef RMS_R
    return RT_OK;
}
