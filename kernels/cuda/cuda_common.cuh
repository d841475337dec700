/* cuda_common.cuh: what the .cu kernels share: element load/store in any dtype (compute in f32 for
 * f32/bf16/f16 with round-to-nearest-even on store, f64 for f64; integer casts truncate like the
 * CPU backend's rt_store), the strided geometry (dims merged where every view is contiguous, like
 * kernels/cpu/cpu_common.h's rt_iter) and launch-size helpers. */
#ifndef RT_CUDA_COMMON_CUH
#define RT_CUDA_COMMON_CUH

#include "cuda_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#define RTC_BLOCK 256

__host__ __device__ static inline int rtc_dtype_size(int dt) {
    switch (dt) {
    case RT_F32:
        return 4;
    case RT_BF16:
    case RT_F16:
        return 2;
    case RT_F64:
    case RT_I64:
        return 8;
    case RT_I32:
        return 4;
    default:
        return 1;
    }
}

__host__ __device__ static inline bool rtc_is_float(int dt) {
    return dt == RT_F32 || dt == RT_BF16 || dt == RT_F16 || dt == RT_F64;
}

__device__ __forceinline__ float rtc_ldf(const char *p, int dt) {
    switch (dt) {
    case RT_F32:
        return *(const float *)p;
    case RT_BF16:
        return __bfloat162float(*(const __nv_bfloat16 *)p);
    case RT_F16:
        return __half2float(*(const __half *)p);
    case RT_F64:
        return (float)*(const double *)p;
    case RT_I64:
        return (float)*(const int64_t *)p;
    case RT_I32:
        return (float)*(const int32_t *)p;
    case RT_U8:
        return (float)*(const uint8_t *)p;
    case RT_BOOL:
        return *(const uint8_t *)p ? 1.0f : 0.0f;
    }
    return 0.0f;
}

__device__ __forceinline__ double rtc_ldd(const char *p, int dt) {
    switch (dt) {
    case RT_F32:
        return *(const float *)p;
    case RT_BF16:
        return __bfloat162float(*(const __nv_bfloat16 *)p);
    case RT_F16:
        return __half2float(*(const __half *)p);
    case RT_F64:
        return *(const double *)p;
    case RT_I64:
        return (double)*(const int64_t *)p;
    case RT_I32:
        return *(const int32_t *)p;
    case RT_U8:
        return *(const uint8_t *)p;
    case RT_BOOL:
        return *(const uint8_t *)p ? 1.0 : 0.0;
    }
    return 0.0;
}

__device__ __forceinline__ int64_t rtc_ldi(const char *p, int dt) {
    switch (dt) {
    case RT_I64:
        return *(const int64_t *)p;
    case RT_I32:
        return *(const int32_t *)p;
    case RT_U8:
    case RT_BOOL:
        return *(const uint8_t *)p;
    }
    return (int64_t)rtc_ldd(p, dt);
}

/* Store a double like the CPU's rt_store: reduced floats round from (float)v. */
__device__ __forceinline__ void rtc_std(char *p, int dt, double v) {
    switch (dt) {
    case RT_F32:
        *(float *)p = (float)v;
        break;
    case RT_BF16:
        *(__nv_bfloat16 *)p = __float2bfloat16_rn((float)v);
        break;
    case RT_F16:
        *(__half *)p = __float2half_rn((float)v);
        break;
    case RT_F64:
        *(double *)p = v;
        break;
    case RT_I64:
        *(int64_t *)p = (int64_t)v;
        break;
    case RT_I32:
        *(int32_t *)p = (int32_t)v;
        break;
    case RT_U8:
        *(uint8_t *)p = (uint8_t)(int64_t)v;
        break;
    case RT_BOOL:
        *(uint8_t *)p = v != 0;
        break;
    }
}

__device__ __forceinline__ void rtc_stf(char *p, int dt, float v) {
    switch (dt) {
    case RT_F32:
        *(float *)p = v;
        break;
    case RT_BF16:
        *(__nv_bfloat16 *)p = __float2bfloat16_rn(v);
        break;
    case RT_F16:
        *(__half *)p = __float2half_rn(v);
        break;
    default:
        rtc_std(p, dt, (double)v);
    }
}

__device__ __forceinline__ void rtc_sti(char *p, int dt, int64_t v) {
    switch (dt) {
    case RT_I64:
        *(int64_t *)p = v;
        break;
    case RT_I32:
        *(int32_t *)p = (int32_t)v;
        break;
    case RT_U8:
        *(uint8_t *)p = (uint8_t)v;
        break;
    case RT_BOOL:
        *(uint8_t *)p = v != 0;
        break;
    default:
        rtc_std(p, dt, (double)v);
    }
}

/* Typed access for the contiguous fast paths. */
template <typename T> struct rtc_io;
template <> struct rtc_io<float> {
    __device__ static float ld(float x) { return x; }
    __device__ static float st(float x) { return x; }
};
template <> struct rtc_io<__nv_bfloat16> {
    __device__ static float ld(__nv_bfloat16 x) { return __bfloat162float(x); }
    __device__ static __nv_bfloat16 st(float x) { return __float2bfloat16_rn(x); }
};
template <> struct rtc_io<__half> {
    __device__ static float ld(__half x) { return __half2float(x); }
    __device__ static __half st(float x) { return __float2half_rn(x); }
};

/* ---- strided geometry --------------------------------------------------------------------- */

/* Up to 3 same-shaped views; dims merged where contiguous in every view, size-1 dims dropped.
 * Strides in elements. */
struct rtc_geo {
    int ndim;
    int nv;
    int64_t numel;
    int64_t shape[RT_MAX_DIMS];
    int64_t st[3][RT_MAX_DIMS];
};

static inline rtc_geo rtc_geo_make(int nv, const rtc_view *const *v) {
    rtc_geo g;
    g.nv = nv;
    g.ndim = 0;
    g.numel = v[0]->numel;
    const rtc_view *s = v[0];
    for (int d = 0; d < s->ndim; d++) {
        if (s->shape[d] == 1) continue;
        int n = g.ndim;
        bool merge = n > 0;
        for (int k = 0; k < nv && merge; k++)
            merge = g.st[k][n - 1] == v[k]->strides[d] * s->shape[d];
        if (merge) {
            g.shape[n - 1] *= s->shape[d];
            for (int k = 0; k < nv; k++)
                g.st[k][n - 1] = v[k]->strides[d];
        } else {
            g.shape[n] = s->shape[d];
            for (int k = 0; k < nv; k++)
                g.st[k][n] = v[k]->strides[d];
            g.ndim++;
        }
    }
    if (g.ndim == 0) {
        g.ndim = 1;
        g.shape[0] = 1;
        for (int k = 0; k < nv; k++)
            g.st[k][0] = 1;
    }
    return g;
}

/* All views one dense run with unit stride. */
static inline bool rtc_geo_contig(const rtc_geo &g) {
    if (g.ndim != 1) return false;
    for (int k = 0; k < g.nv; k++)
        if (g.st[k][0] != 1 && g.shape[0] != 1) return false;
    return true;
}

template <int NV>
__device__ __forceinline__ void rtc_offsets(const rtc_geo &g, int64_t i, int64_t *off) {
#pragma unroll
    for (int k = 0; k < NV; k++)
        off[k] = 0;
    for (int d = g.ndim - 1; d >= 0; d--) {
        int64_t n = g.shape[d];
        int64_t q = i / n, r = i - q * n;
        i = q;
#pragma unroll
        for (int k = 0; k < NV; k++)
            off[k] += r * g.st[k][d];
    }
}

static inline unsigned rtc_grid(int64_t work, int block) {
    int64_t b = (work + block - 1) / block;
    int64_t cap = (int64_t)rtc_sm_count() * 32;
    if (b > cap) b = cap;
    return (unsigned)(b < 1 ? 1 : b);
}

#define RTC_GRID_STRIDE(i, n)                                                                      \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                      \
         i += (int64_t)gridDim.x * blockDim.x)

static inline bool rtc_aligned16(const void *p) {
    return ((uintptr_t)p & 15) == 0;
}

#endif /* RT_CUDA_COMMON_CUH */
