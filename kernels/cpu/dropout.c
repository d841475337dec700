/* dropout.c: CPU dropout with a counter-based mask.
 *
 * Element i (logical row-major order) is kept when the uniform from lane i % 4 of
 * rt_philox4x32(seed, offset + i / 4) is >= p; kept elements are scaled by 1 / (1 - p). The mask is
 * a pure function of (seed, offset, i): independent of the thread count, identical on every
 * backend that implements the same rule, and recomputed for the backward instead of stored (the
 * backward is this kernel applied to the gradient). */
#include "cpu_kernels.h"
#include "dim_rows.h"

int rt_cpu_dropout(const rt_kview *out, const rt_kview *x, double p, uint64_t seed,
                   uint64_t offset) {
    int64_t n = x->numel, ngroups = (n + 3) / 4;
    size_t ex = rt_dtype_size(x->dtype), eo = rt_dtype_size(out->dtype);
    bool cx = true, co = true;
    int64_t s = 1;
    for (int d = x->ndim - 1; d >= 0; d--) { /* contiguous (ignoring size-1 dims)? */
        if (x->shape[d] != 1 && x->strides[d] != s) cx = false;
        if (out->shape[d] != 1 && out->strides[d] != s) co = false;
        s *= x->shape[d];
    }
    double scale = 1.0 / (1.0 - p);
    /* keep when u >= p, u = top 24 bits / 2^24; compare as integers */
    uint32_t thresh = (uint32_t)ceil(p * 16777216.0);
    bool f32 = cx && co && x->dtype == RT_F32 && out->dtype == RT_F32;
    float fscale = (float)scale;
#pragma omp parallel for if (n > RT_PARALLEL_GRAIN / 4) schedule(static)
    for (int64_t g = 0; g < ngroups; g++) {
        uint32_t r[4];
        rt_philox4x32(seed, offset + (uint64_t)g, r);
        int64_t i0 = g * 4;
        for (int k = 0; k < 4 && i0 + k < n; k++) {
            int64_t i = i0 + k;
            bool keep = (r[k] >> 8) >= thresh;
            if (f32) {
                ((float *)out->data)[i] = keep ? ((const float *)x->data)[i] * fscale : 0.0f;
                continue;
            }
            int64_t xo = cx ? i : rt_logical_offset(x, i), oo = co ? i : rt_logical_offset(out, i);
            double v = 0.0;
            if (keep) { /* f32 math for f32/bf16/f16, as the fast path, so all paths agree */
                double xv = rt_load(x->data + xo * (int64_t)ex, x->dtype);
                v = out->dtype == RT_F64 ? xv * scale : (double)((float)xv * fscale);
            }
            rt_store(out->data + oo * (int64_t)eo, out->dtype, v);
        }
    }
    return RT_OK;
}
