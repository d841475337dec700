/* random.cu: counter-based random fills on the GPU with the exact mapping of kernels/cpu/random.c:
 * element i (logical row-major order) draws Philox4x32-10 at counter
 * offset + i under key seed; uniform uses as many bits as the dtype's significand holds, normal
 * one Box-Muller value from the same four words, randint 64 bits modulo the range. So CPU and CUDA
 * produce the same stream of numbers. */
#include "cuda_common.cuh"

__device__ __forceinline__ void philox4x32(uint64_t seed, uint64_t counter, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
#pragma unroll
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* As many random bits as the dtype's significand holds (53 f64, 24 f32, 11 f16, 8 bf16), like
 * kernels/cpu/random.c, so the value is exact in the dtype and never rounds up to 1. */
__device__ __forceinline__ double u01(uint32_t hi, uint32_t lo, int bits) {
    if (bits > 32) return (double)(((uint64_t)hi << 21) ^ (lo >> 11)) * (1.0 / 9007199254740992.0);
    return ldexp((double)(hi >> (32 - bits)), -bits);
}

__device__ __forceinline__ int significand_bits(int dtype) {
    switch (dtype) {
    case RT_F64:
        return 53;
    case RT_BF16:
        return 8;
    case RT_F16:
        return 11;
    default:
        return 24;
    }
}

/* kind: 0 uniform(a, b), 1 normal(mean a, std b), 2 randint[lo, hi) */
__global__ void k_random(rtc_view d, int kind, uint64_t seed, uint64_t offset, double a, double b,
                         int64_t lo, int64_t hi) {
    int bits = significand_bits(d.dtype);
    int es = rtc_dtype_size(d.dtype);
    RTC_GRID_STRIDE(i, d.numel) {
        uint32_t r[4];
        philox4x32(seed, offset + (uint64_t)i, r);
        int64_t rem = i, off = 0;
        for (int k = d.ndim - 1; k >= 0; k--) {
            int64_t q = rem / d.shape[k];
            off += (rem - q * d.shape[k]) * d.strides[k];
            rem = q;
        }
        char *p = d.data + off * es;
        if (kind == 0) {
            rtc_std(p, d.dtype, a + (b - a) * u01(r[0], r[1], bits));
        } else if (kind == 1) {
            double u1 = u01(r[0], r[1], 53), u2 = u01(r[2], r[3], 53);
            rtc_std(p, d.dtype, a + b * sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2));
        } else {
            uint64_t x = ((uint64_t)r[0] << 32) | r[1];
            /* unsigned difference and sum, as the CPU (high - low can exceed INT64_MAX) */
            int64_t v = (int64_t)((uint64_t)lo + x % ((uint64_t)hi - (uint64_t)lo));
            if (d.dtype == RT_I64)
                *(int64_t *)p = v;
            else
                rtc_std(p, d.dtype, (double)v);
        }
    }
}

extern "C" int rtc_fill_random(const rtc_view *dst, int kind, uint64_t seed, uint64_t offset,
                               double a, double b, int64_t lo, int64_t hi) {
    if (dst->numel == 0) return RT_OK;
    k_random<<<rtc_grid(dst->numel, RTC_BLOCK), RTC_BLOCK, 0, rtc_stream()>>>(*dst, kind, seed,
                                                                              offset, a, b, lo, hi);
    RTC_LAUNCH_CHECK(kind == 0 ? "uniform_" : kind == 1 ? "normal_" : "randint");
    return RT_OK;
}
