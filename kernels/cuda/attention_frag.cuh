/* attention_frag.cuh: register-level helpers both attention kernel families share
 * (kernels/cuda/attention.cu, mma.sync; attention_sm90.cu, wgmma): two f32 values packed into one
 * 32-bit bf16x2 / f16x2 register (the A-operand layout of both MMA kinds), and 2^x in one MUFU.EX2.
 */
#ifndef RT_ATTENTION_FRAG_CUH
#define RT_ATTENTION_FRAG_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

template <typename T> __device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}
template <> __device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *(uint32_t *)&v;
}

/* 2^x in one MUFU.EX2 (flush-to-zero; 2^-inf = 0): exp2f adds range handling for denormal results,
 * which probabilities below 2^-126 do not need */
__device__ __forceinline__ float ex2f(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

#endif
