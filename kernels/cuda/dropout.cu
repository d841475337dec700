/* dropout.cu: dropout on the GPU with the counter-based mask of kernels/cpu/dropout.c, so a CUDA
 * mask equals the CPU's for the same (seed, offset): element i (logical row-major order) is kept
 * when the top 24 bits of lane i % 4 of Philox4x32-10(seed, offset + i / 4), as an integer, are
 * >= ceil(p * 2^24); kept elements are scaled by 1 / (1 - p) (f32 math for f32/bf16/f16, f64 for
 * f64). One thread per group of 4 elements: one Philox call feeds 4 elements. The backward is this
 * kernel applied to the gradient. */
#include "rowops.cuh"

template <typename T>
__global__ void k_dropout_contig(int64_t n, const T *__restrict__ x, T *__restrict__ o,
                                 uint32_t thresh, float fscale, double scale, uint64_t seed,
                                 uint64_t offset) {
    int64_t ngroups = (n + 3) / 4;
    RTC_GRID_STRIDE(g, ngroups) {
        uint32_t r[4];
        rtc_philox(seed, offset + (uint64_t)g, r);
        int64_t i0 = g * 4;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            int64_t i = i0 + k;
            if (i < n) {
                bool keep = (r[k] >> 8) >= thresh;
                if (sizeof(T) == 8)
                    o[i] = keep ? rio<T>::st((typename racc<T>::type)(rio<T>::ld(x[i]) * scale))
                                : rio<T>::st(0);
                else
                    o[i] = rio<T>::st(keep ? (float)rio<T>::ld(x[i]) * fscale : 0.0f);
            }
        }
    }
}

__global__ void k_dropout_gen(rtc_geo geo, char *o, int to, const char *x, int tx, uint32_t thresh,
                              float fscale, double scale, uint64_t seed, uint64_t offset) {
    int64_t n = geo.numel, ngroups = (n + 3) / 4;
    int eo = rtc_dtype_size(to), ex = rtc_dtype_size(tx);
    RTC_GRID_STRIDE(g, ngroups) {
        uint32_t r[4];
        rtc_philox(seed, offset + (uint64_t)g, r);
        for (int k = 0; k < 4 && g * 4 + k < n; k++) {
            int64_t off[2];
            rtc_offsets<2>(geo, g * 4 + k, off);
            bool keep = (r[k] >> 8) >= thresh;
            double v = 0.0;
            if (keep) {
                double xv = rtc_ldd(x + off[1] * ex, tx);
                v = to == RT_F64 ? xv * scale : (double)((float)xv * fscale);
            }
            rtc_std(o + off[0] * eo, to, v);
        }
    }
}

extern "C" int rtc_dropout(const rtc_view *out, const rtc_view *x, double p, uint64_t seed,
                           uint64_t offset) {
    int64_t n = x->numel;
    if (n == 0) return RT_OK;
    double scale = 1.0 / (1.0 - p);
    uint32_t thresh = (uint32_t)ceil(p * 16777216.0);
    float fscale = (float)scale;
    const rtc_view *v[2] = {out, x};
    rtc_geo g = rtc_geo_make(2, v);
    cudaStream_t st = rtc_stream();
    unsigned grid = rtc_grid((n + 3) / 4, RTC_BLOCK);
    if (rtc_geo_contig(g) && out->dtype == x->dtype) {
        switch (x->dtype) {
        case RT_F32:
            k_dropout_contig<float><<<grid, RTC_BLOCK, 0, st>>>(
                n, (const float *)x->data, (float *)out->data, thresh, fscale, scale, seed, offset);
            break;
        case RT_BF16:
            k_dropout_contig<__nv_bfloat16><<<grid, RTC_BLOCK, 0, st>>>(
                n, (const __nv_bfloat16 *)x->data, (__nv_bfloat16 *)out->data, thresh, fscale,
                scale, seed, offset);
            break;
        case RT_F16:
            k_dropout_contig<__half><<<grid, RTC_BLOCK, 0, st>>>(n, (const __half *)x->data,
                                                                 (__half *)out->data, thresh,
                                                                 fscale, scale, seed, offset);
            break;
        case RT_F64:
            k_dropout_contig<double><<<grid, RTC_BLOCK, 0, st>>>(n, (const double *)x->data,
                                                                 (double *)out->data, thresh,
                                                                 fscale, scale, seed, offset);
            break;
        default:
            k_dropout_gen<<<grid, RTC_BLOCK, 0, st>>>(g, out->data, out->dtype, x->data, x->dtype,
                                                      thresh, fscale, scale, seed, offset);
        }
    } else {
        k_dropout_gen<<<grid, RTC_BLOCK, 0, st>>>(g, out->data, out->dtype, x->data, x->dtype,
                                                  thresh, fscale, scale, seed, offset);
    }
    RTC_LAUNCH_CHECK("dropout");
    return RT_OK;
}
