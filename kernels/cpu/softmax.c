/* softmax.c: CPU softmax and log_softmax along one dim, and their backwards.
 *
 * Numerically stable (the row max is subtracted before exp). f32 rows that are contiguous along the
 * dim take a float fast path; everything else is computed in double per row and rounded once on
 * store (bf16/f16 therefore accumulate in more than f32). One row is handled by one thread, so
 * results do not depend on the thread count. */
#include "cpu_kernels.h"
#include "dim_rows.h"

#include <omp.h>
#include <stdlib.h>

/* One double buffer of n elements per thread (NULL on failure). */
static double *thread_buffers(int64_t n, int *nthreads) {
    *nthreads = omp_get_max_threads();
    return malloc(sizeof(double) * (size_t)(n > 0 ? n : 1) * (size_t)*nthreads);
}

static void softmax_row_f32(float *o, const float *x, int64_t n, int log_) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        m = x[i] > m ? x[i] : m;
    if (m != m || m == -INFINITY) m = x[0]; /* NaN or all -inf: let the NaN propagate */
    double s = 0;
    if (log_) {
        for (int64_t i = 0; i < n; i++)
            s += expf(x[i] - m);
        float ls = (float)log(s); /* (x - m) - ls: the exact difference first, as PyTorch */
        for (int64_t i = 0; i < n; i++)
            o[i] = (x[i] - m) - ls;
    } else {
        for (int64_t i = 0; i < n; i++) {
            float e = expf(x[i] - m);
            o[i] = e;
            s += e;
        }
        float inv = (float)(1.0 / s);
        for (int64_t i = 0; i < n; i++)
            o[i] *= inv;
    }
}

int rt_cpu_softmax(const rt_kview *out, const rt_kview *x, int dim, int log_) {
    if (x->numel == 0) return RT_OK;
    int64_t n = x->shape[dim], rows = x->numel / n;
    int64_t xs = x->strides[dim], os = out->strides[dim];
    size_t ex = rt_dtype_size(x->dtype), eo = rt_dtype_size(out->dtype);
    bool fast = x->dtype == RT_F32 && out->dtype == RT_F32 && xs == 1 && os == 1;
    int nt = 1;
    double *bufs = fast ? NULL : thread_buffers(n, &nt);
    if (!fast && !bufs)
        return RT_ERR(RT_ERR_OOM, "softmax: out of host memory for %d row buffers of %lld", nt,
                      (long long)n);
#pragma omp parallel for if (x->numel > RT_PARALLEL_GRAIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const char *xp = x->data + rt_dim_row_offset(x, dim, r) * (int64_t)ex;
        char *op = out->data + rt_dim_row_offset(out, dim, r) * (int64_t)eo;
        if (fast) {
            softmax_row_f32((float *)op, (const float *)xp, n, log_);
            continue;
        }
        double *b = bufs + (size_t)omp_get_thread_num() * (size_t)n;
        double m = -INFINITY;
        for (int64_t i = 0; i < n; i++) {
            b[i] = rt_load(xp + i * xs * (int64_t)ex, x->dtype);
            m = b[i] > m ? b[i] : m;
        }
        if (m != m || m == -INFINITY) m = b[0];
        double s = 0;
        for (int64_t i = 0; i < n; i++)
            s += exp(b[i] - m);
        double ls = log(s);
        for (int64_t i = 0; i < n; i++) {
            double y = log_ ? (b[i] - m) - ls : exp((b[i] - m) - ls);
            rt_store(op + i * os * (int64_t)eo, out->dtype, y);
        }
    }
    free(bufs);
    return RT_OK;
}

/* softmax:     grad_in = y * (g - sum(g * y))
 * log_softmax: grad_in = g - exp(y) * sum(g) */
int rt_cpu_softmax_backward(const rt_kview *grad_in, const rt_kview *grad_out, const rt_kview *y,
                            int dim, int log_) {
    if (y->numel == 0) return RT_OK;
    int64_t n = y->shape[dim], rows = y->numel / n;
    int64_t is = grad_in->strides[dim], gs = grad_out->strides[dim], ys = y->strides[dim];
    size_t ei = rt_dtype_size(grad_in->dtype), eg = rt_dtype_size(grad_out->dtype),
           ey = rt_dtype_size(y->dtype);
    bool fast = grad_in->dtype == RT_F32 && grad_out->dtype == RT_F32 && y->dtype == RT_F32 &&
                is == 1 && gs == 1 && ys == 1;
#pragma omp parallel for if (y->numel > RT_PARALLEL_GRAIN) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        char *ip = grad_in->data + rt_dim_row_offset(grad_in, dim, r) * (int64_t)ei;
        const char *gp = grad_out->data + rt_dim_row_offset(grad_out, dim, r) * (int64_t)eg;
        const char *yp = y->data + rt_dim_row_offset(y, dim, r) * (int64_t)ey;
        if (fast) {
            float *gi = (float *)ip;
            const float *g = (const float *)gp, *yy = (const float *)yp;
            double s = 0;
            if (log_) {
                for (int64_t i = 0; i < n; i++)
                    s += g[i];
                for (int64_t i = 0; i < n; i++)
                    gi[i] = g[i] - expf(yy[i]) * (float)s;
            } else {
                for (int64_t i = 0; i < n; i++)
                    s += (double)g[i] * yy[i];
                for (int64_t i = 0; i < n; i++)
                    gi[i] = yy[i] * (g[i] - (float)s);
            }
            continue;
        }
        double s = 0;
        for (int64_t i = 0; i < n; i++) {
            double g = rt_load(gp + i * gs * (int64_t)eg, grad_out->dtype);
            s += log_ ? g : g * rt_load(yp + i * ys * (int64_t)ey, y->dtype);
        }
        for (int64_t i = 0; i < n; i++) {
            double g = rt_load(gp + i * gs * (int64_t)eg, grad_out->dtype);
            double yy = rt_load(yp + i * ys * (int64_t)ey, y->dtype);
            double v = log_ ? g - exp(yy) * s : yy * (g - s);
            rt_store(ip + i * is * (int64_t)ei, grad_in->dtype, v);
        }
    }
    return RT_OK;
}
