/* elementwise.cu: CUDA kernels for copies and casts, fills, binary ops (tensor-tensor and
 * tensor-scalar), masked copies, unary ops and their derivatives. Semantics follow kernels/cpu/
 * (binary.c, unary.c, backend_cpu.c): f32 compute for f32/bf16/f16 outputs rounded once on store,
 * f64 for f64, exact int64 for i64 add/sub/mul/max/min. Each op has a generic strided kernel and a
 * contiguous same-dtype fast path with 16-byte vector loads. */
#include "cuda_common.cuh"

#include <math.h>
#include <string.h>

/* ================================================================================================
 * op definitions (device)
 * ============================================================================================== */

__device__ __forceinline__ float bin_f(int op, float x, float y) {
    switch (op) {
    case RT_ADD:
        return x + y;
    case RT_SUB:
        return x - y;
    case RT_MUL:
        return x * y;
    case RT_DIV:
        return x / y;
    case RT_POW:
        return powf(x, y);
    case RT_MAXIMUM:
        return (x != x || x > y) ? x : y;
    case RT_MINIMUM:
        return (x != x || x < y) ? x : y;
    }
    return 0.0f;
}

__device__ __forceinline__ double bin_d(int op, double x, double y) {
    switch (op) {
    case RT_ADD:
        return x + y;
    case RT_SUB:
        return x - y;
    case RT_MUL:
        return x * y;
    case RT_DIV:
        return x / y;
    case RT_POW:
        return pow(x, y);
    case RT_MAXIMUM:
        return (x != x || x > y) ? x : y;
    case RT_MINIMUM:
        return (x != x || x < y) ? x : y;
    case RT_EQ:
        return x == y;
    case RT_NE:
        return x != y;
    case RT_LT:
        return x < y;
    case RT_LE:
        return x <= y;
    case RT_GT:
        return x > y;
    case RT_GE:
        return x >= y;
    }
    return 0.0;
}

__device__ __forceinline__ int64_t bin_i(int op, int64_t x, int64_t y) {
    switch (op) {
    case RT_ADD:
        return x + y;
    case RT_SUB:
        return x - y;
    case RT_MUL:
        return x * y;
    case RT_MAXIMUM:
        return x > y ? x : y;
    case RT_MINIMUM:
        return x < y ? x : y;
    }
    return 0;
}

__device__ __forceinline__ float sigmoid_f(float x) {
    return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
}
__device__ __forceinline__ double sigmoid_d(double x) {
    return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

__device__ __forceinline__ float un_f(int op, float x) {
    switch (op) {
    case RT_NEG:
        return -x;
    case RT_ABS:
        return fabsf(x);
    case RT_EXP:
        return expf(x);
    case RT_LOG:
        return logf(x);
    case RT_SQRT:
        return sqrtf(x);
    case RT_RSQRT:
        return 1.0f / sqrtf(x);
    case RT_TANH:
        return tanhf(x);
    case RT_SIGMOID:
        return sigmoid_f(x);
    case RT_RELU:
        return x > 0 ? x : (x != x ? x : 0.0f);
    case RT_GELU:
        return 0.5f * x * (1.0f + erff(x * 0.70710678f));
    case RT_GELU_TANH: {
        float u = 0.79788456f * (x + 0.044715f * x * x * x);
        return 0.5f * x * (1.0f + tanhf(u));
    }
    case RT_SILU:
        return x / (1.0f + expf(-x));
    case RT_SIN:
        return sinf(x);
    case RT_COS:
        return cosf(x);
    case RT_SQUARE:
        return x * x;
    case RT_RECIPROCAL:
        return 1.0f / x;
    }
    return 0.0f;
}

__device__ __forceinline__ double un_d(int op, double x) {
    switch (op) {
    case RT_NEG:
        return -x;
    case RT_ABS:
        return fabs(x);
    case RT_EXP:
        return exp(x);
    case RT_LOG:
        return log(x);
    case RT_SQRT:
        return sqrt(x);
    case RT_RSQRT:
        return 1.0 / sqrt(x);
    case RT_TANH:
        return tanh(x);
    case RT_SIGMOID:
        return sigmoid_d(x);
    case RT_RELU:
        return x > 0 ? x : (x != x ? x : 0.0);
    case RT_GELU:
        return 0.5 * x * (1.0 + erf(x * 0.7071067811865476));
    case RT_GELU_TANH: {
        double u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
        return 0.5 * x * (1.0 + tanh(u));
    }
    case RT_SILU:
        return x / (1.0 + exp(-x));
    case RT_SIN:
        return sin(x);
    case RT_COS:
        return cos(x);
    case RT_SQUARE:
        return x * x;
    case RT_RECIPROCAL:
        return 1.0 / x;
    }
    return 0.0;
}

/* d op(x) / dx, in T (float or double) */
template <typename T> __device__ __forceinline__ T un_deriv(int op, T x) {
    switch (op) {
    case RT_NEG:
        return T(-1);
    case RT_ABS:
        return x > 0 ? T(1) : x < 0 ? T(-1) : T(0);
    case RT_EXP:
        return exp(x);
    case RT_LOG:
        return T(1) / x;
    case RT_SQRT:
        return T(0.5) / sqrt(x);
    case RT_RSQRT:
        return T(-0.5) / (x * sqrt(x));
    case RT_TANH: {
        T t = tanh(x);
        return T(1) - t * t;
    }
    case RT_SIGMOID: {
        T s = x >= 0 ? T(1) / (T(1) + exp(-x)) : exp(x) / (T(1) + exp(x));
        return s * (T(1) - s);
    }
    case RT_RELU:
        return x > 0 ? T(1) : T(0);
    case RT_GELU: {
        T cdf = T(0.5) * (T(1) + erf(x * T(0.7071067811865476)));
        T pdf = T(0.3989422804014327) * exp(T(-0.5) * x * x);
        return cdf + x * pdf;
    }
    case RT_GELU_TANH: {
        T k = T(0.7978845608028654), u = k * (x + T(0.044715) * x * x * x), t = tanh(u);
        return T(0.5) * (T(1) + t) +
               T(0.5) * x * (T(1) - t * t) * k * (T(1) + T(3.0 * 0.044715) * x * x);
    }
    case RT_SILU: {
        T s = x >= 0 ? T(1) / (T(1) + exp(-x)) : exp(x) / (T(1) + exp(x));
        return s * (T(1) + x * (T(1) - s));
    }
    case RT_SIN:
        return cos(x);
    case RT_COS:
        return -sin(x);
    case RT_SQUARE:
        return T(2) * x;
    case RT_RECIPROCAL:
        return T(-1) / (x * x);
    }
    return T(0);
}

/* ================================================================================================
 * contiguous same-dtype fast paths (16-byte vectors)
 * ============================================================================================== */

template <typename T, int N> struct alignas(16) vec_t { T v[N]; };

struct FAdd {
    __device__ float operator()(float x, float y) const { return x + y; }
};
struct FSub {
    __device__ float operator()(float x, float y) const { return x - y; }
};
struct FMul {
    __device__ float operator()(float x, float y) const { return x * y; }
};
struct FDiv {
    __device__ float operator()(float x, float y) const { return x / y; }
};
struct FBin {
    int op;
    __device__ float operator()(float x, float y) const { return bin_f(op, x, y); }
};
/* tensor-scalar as a binary functor with the scalar bound */
template <class F> struct FScal {
    F f;
    float s;
    int first;
    __device__ float operator()(float x, float) const { return first ? f(s, x) : f(x, s); }
};
struct FUn {
    int op;
    __device__ float operator()(float x, float) const { return un_f(op, x); }
};
/* FUn / FUnBwd with the op fixed at compile time: the switch folds away and the 8 elements of a
 * vector interleave (GELU's and ReLU's forwards ran at half of PyTorch's speed through the runtime
 * switch: ReLU on 16384 x 8192 bf16 0.245 vs 0.126 ms) */
template <int OP> struct FUnK {
    __device__ float operator()(float x, float) const { return un_f(OP, x); }
};
template <int OP> struct FUnBwdK {
    __device__ float operator()(float g, float x) const { return g * un_deriv<float>(OP, x); }
};

/* a unary op's backward, grad * f'(x), as k_unary_backward<float> computes it */
struct FUnBwd {
    int op;
    __device__ float operator()(float g, float x) const { return g * un_deriv<float>(op, x); }
};

/* out[i] = f(a[i], b[i]) (b may alias a when f ignores it) */
template <typename T, class F>
__global__ void k_map2_contig(T *__restrict__ o, const T *__restrict__ a, const T *__restrict__ b,
                              int64_t n, F f, bool vec) {
    constexpr int N = 16 / sizeof(T);
    int64_t nv = vec ? n / N : 0;
    const vec_t<T, N> *va = (const vec_t<T, N> *)a, *vb = (const vec_t<T, N> *)b;
    vec_t<T, N> *vo = (vec_t<T, N> *)o;
    RTC_GRID_STRIDE(i, nv) {
        vec_t<T, N> x = va[i], y = vb[i], z;
#pragma unroll
        for (int j = 0; j < N; j++)
            z.v[j] = rtc_io<T>::st(f(rtc_io<T>::ld(x.v[j]), rtc_io<T>::ld(y.v[j])));
        vo[i] = z;
    }
    RTC_GRID_STRIDE(i, n - nv * N) {
        int64_t k = nv * N + i;
        o[k] = rtc_io<T>::st(f(rtc_io<T>::ld(a[k]), rtc_io<T>::ld(b[k])));
    }
}

template <typename T, class F>
static int launch_map2(const char *op, void *o, const void *a, const void *b, int64_t n, F f) {
    bool vec = rtc_aligned16(o) && rtc_aligned16(a) && rtc_aligned16(b);
    int64_t work = vec ? n / (16 / (int64_t)sizeof(T)) + 16 : n;
    k_map2_contig<T, F><<<rtc_grid(work, RTC_BLOCK), RTC_BLOCK, 0, rtc_stream()>>>(
        (T *)o, (const T *)a, (const T *)b, n, f, vec);
    RTC_LAUNCH_CHECK(op);
    return RT_OK;
}

/* Dispatch on the storage type of a float dtype. */
template <class F>
static int map2_dtype(const char *op, int dt, void *o, const void *a, const void *b, int64_t n,
                      F f) {
    switch (dt) {
    case RT_F32:
        return launch_map2<float>(op, o, a, b, n, f);
    case RT_BF16:
        return launch_map2<__nv_bfloat16>(op, o, a, b, n, f);
    case RT_F16:
        return launch_map2<__half>(op, o, a, b, n, f);
    }
    return rt_error_set(RT_ERR_DTYPE, __FILE__, __LINE__, "%s: no fast path for this dtype", op);
}

__host__ __device__ static inline bool reduced(int dt) {
    return dt == RT_F32 || dt == RT_BF16 || dt == RT_F16;
}

/* ================================================================================================
 * copy / cast
 * ============================================================================================== */

__device__ __forceinline__ void convert(char *d, int dt, const char *s, int st) {
    if (dt == st) {
        switch (rtc_dtype_size(dt)) {
        case 1:
            *(uint8_t *)d = *(const uint8_t *)s;
            break;
        case 2:
            *(uint16_t *)d = *(const uint16_t *)s;
            break;
        case 4:
            *(uint32_t *)d = *(const uint32_t *)s;
            break;
        default:
            *(uint64_t *)d = *(const uint64_t *)s;
            break;
        }
    } else if (!rtc_is_float(dt) && !rtc_is_float(st) && st != RT_BOOL) {
        rtc_sti(d, dt, rtc_ldi(s, st)); /* keeps all 64 bits */
    } else if (reduced(dt) && reduced(st)) {
        rtc_stf(d, dt, rtc_ldf(s, st));
    } else {
        rtc_std(d, dt, rtc_ldd(s, st));
    }
}

__global__ void k_copy(rtc_geo g, char *d, int dt, const char *s, int st) {
    int ed = rtc_dtype_size(dt), es = rtc_dtype_size(st);
    RTC_GRID_STRIDE(i, g.numel) {
        int64_t off[2];
        rtc_offsets<2>(g, i, off);
        convert(d + off[0] * ed, dt, s + off[1] * es, st);
    }
}

/* Same-dtype copies whose innermost dim is unit-stride on both sides (the transposes around
 * attention, contiguous() of a split): each thread moves one VB-byte piece of a row, and only the
 * row's offset goes through the geometry (g here is the outer dims, in bytes: the per-element
 * k_copy divided its index by every dim for each 2-byte element, at a third of PyTorch's speed). */
template <typename V>
__global__ void k_copy_rows(rtc_geo g, int64_t pieces, char *__restrict__ d,
                            const char *__restrict__ s) {
    const int64_t total = g.numel * pieces;
    RTC_GRID_STRIDE(i, total) {
        int64_t row = i / pieces, pc = i - row * pieces;
        int64_t off[2];
        rtc_offsets<2>(g, row, off);
        ((V *)(d + off[0]))[pc] = ((const V *)(s + off[1]))[pc];
    }
}

/* k_copy_rows when it applies (false: it does not; take k_copy) */
static bool copy_rows(const rtc_geo &g, const rtc_view *dst, const rtc_view *src, int *rc) {
    const int last = g.ndim - 1;
    if (g.ndim < 2 || dst->dtype != src->dtype || g.st[0][last] != 1 || g.st[1][last] != 1)
        return false;
    const int64_t es = rtc_dtype_size(dst->dtype), row = g.shape[last] * es;
    uintptr_t mis = (uintptr_t)dst->data | (uintptr_t)src->data | (uintptr_t)row;
    rtc_geo o;
    o.nv = 2;
    o.ndim = last;
    o.numel = g.numel / g.shape[last];
    for (int k = 0; k < last; k++) {
        o.shape[k] = g.shape[k];
        o.st[0][k] = g.st[0][k] * es;
        o.st[1][k] = g.st[1][k] * es;
        mis |= (uintptr_t)o.st[0][k] | (uintptr_t)o.st[1][k];
    }
    const int vb = (mis & 15) == 0 ? 16 : (mis & 7) == 0 ? 8 : (mis & 3) == 0 ? 4 : 0;
    if (vb == 0) return false;
    const int64_t pieces = row / vb;
    unsigned grid = rtc_grid(o.numel * pieces, RTC_BLOCK);
    cudaStream_t st = rtc_stream();
    if (vb == 16)
        k_copy_rows<uint4><<<grid, RTC_BLOCK, 0, st>>>(o, pieces, dst->data, src->data);
    else if (vb == 8)
        k_copy_rows<uint2><<<grid, RTC_BLOCK, 0, st>>>(o, pieces, dst->data, src->data);
    else
        k_copy_rows<unsigned><<<grid, RTC_BLOCK, 0, st>>>(o, pieces, dst->data, src->data);
    cudaError_t e = cudaGetLastError();
    *rc = e == cudaSuccess ? RT_OK
                           : rt_error_set(RT_ERR_BACKEND, __FILE__, __LINE__,
                                          "copy: CUDA error %s: %s (launching k_copy_rows)",
                                          cudaGetErrorName(e), cudaGetErrorString(e));
    return true;
}

/* 8 elements per thread and step when both sides are 16-byte aligned: 16-byte loads and stores on
 * the 2-byte side, two of them on the 4-byte side (a scalar cast per element left the f32 -> bf16
 * cast at 64% of the copy bandwidth) */
template <typename D, typename S>
__global__ void k_cast_contig(D *__restrict__ d, const S *__restrict__ s, int64_t n, bool vec) {
    int64_t nv = vec ? n / 8 : 0;
    const vec_t<S, 8> *vs = (const vec_t<S, 8> *)s;
    vec_t<D, 8> *vd = (vec_t<D, 8> *)d;
    RTC_GRID_STRIDE(i, nv) {
        vec_t<S, 8> x = vs[i];
        vec_t<D, 8> y;
#pragma unroll
        for (int k = 0; k < 8; k++)
            y.v[k] = rtc_io<D>::st(rtc_io<S>::ld(x.v[k]));
        vd[i] = y;
    }
    RTC_GRID_STRIDE(i, n - nv * 8) {
        int64_t k = nv * 8 + i;
        d[k] = rtc_io<D>::st(rtc_io<S>::ld(s[k]));
    }
}

template <typename D>
static int cast_from(const char *op, void *d, int st, const void *s, int64_t n) {
    bool vec = rtc_aligned16(d) && rtc_aligned16(s);
    unsigned grid = rtc_grid(vec ? n / 8 + 8 : n, RTC_BLOCK);
    switch (st) {
    case RT_F32:
        k_cast_contig<D, float>
            <<<grid, RTC_BLOCK, 0, rtc_stream()>>>((D *)d, (const float *)s, n, vec);
        break;
    case RT_BF16:
        k_cast_contig<D, __nv_bfloat16>
            <<<grid, RTC_BLOCK, 0, rtc_stream()>>>((D *)d, (const __nv_bfloat16 *)s, n, vec);
        break;
    case RT_F16:
        k_cast_contig<D, __half>
            <<<grid, RTC_BLOCK, 0, rtc_stream()>>>((D *)d, (const __half *)s, n, vec);
        break;
    }
    RTC_LAUNCH_CHECK(op);
    return RT_OK;
}

extern "C" int rtc_copy(const rtc_view *dst, const rtc_view *src) {
    if (dst->numel == 0) return RT_OK;
    const rtc_view *v[2] = {dst, src};
    rtc_geo g = rtc_geo_make(2, v);
    bool contig = rtc_geo_contig(g);
    if (contig && dst->dtype == src->dtype) {
        RTC_CUDA_TRY("copy", cudaMemcpyAsync(dst->data, src->data,
                                             (size_t)g.numel * rtc_dtype_size(dst->dtype),
                                             cudaMemcpyDeviceToDevice, rtc_stream()));
        return RT_OK;
    }
    if (contig && reduced(dst->dtype) && reduced(src->dtype)) {
        switch (dst->dtype) {
        case RT_F32:
            return cast_from<float>("copy", dst->data, src->dtype, src->data, g.numel);
        case RT_BF16:
            return cast_from<__nv_bfloat16>("copy", dst->data, src->dtype, src->data, g.numel);
        case RT_F16:
            return cast_from<__half>("copy", dst->data, src->dtype, src->data, g.numel);
        }
    }
    int rc;
    if (copy_rows(g, dst, src, &rc)) return rc;
    k_copy<<<rtc_grid(g.numel, RTC_BLOCK), RTC_BLOCK, 0, rtc_stream()>>>(g, dst->data, dst->dtype,
                                                                         src->data, src->dtype);
    RTC_LAUNCH_CHECK("copy");
    return RT_OK;
}

/* ================================================================================================
 * fill
 * ============================================================================================== */

__global__ void k_fill(rtc_geo g, char *d, int es, uint64_t pattern) {
    RTC_GRID_STRIDE(i, g.numel) {
        int64_t off[1];
        rtc_offsets<1>(g, i, off);
        char *p = d + off[0] * es;
        switch (es) {
        case 1:
            *(uint8_t *)p = (uint8_t)pattern;
            break;
        case 2:
            *(uint16_t *)p = (uint16_t)pattern;
            break;
        case 4:
            *(uint32_t *)p = (uint32_t)pattern;
            break;
        default:
            *(uint64_t *)p = pattern;
            break;
        }
    }
}

template <typename U> __global__ void k_fill_contig(U *d, int64_t n, U v) {
    RTC_GRID_STRIDE(i, n) {
        d[i] = v;
    }
}

/* The bytes of value stored as dtype, computed as the CPU backend's rt_store does. */
static uint64_t fill_pattern(int dt, double v) {
    uint64_t p = 0;
    switch (dt) {
    case RT_F32: {
        float f = (float)v;
        memcpy(&p, &f, 4);
        break;
    }
    case RT_BF16: {
        __nv_bfloat16 h = __float2bfloat16_rn((float)v);
        memcpy(&p, &h, 2);
        break;
    }
    case RT_F16: {
        __half h = __float2half_rn((float)v);
        memcpy(&p, &h, 2);
        break;
    }
    case RT_F64:
        memcpy(&p, &v, 8);
        break;
    case RT_I64: {
        int64_t x = (int64_t)v;
        memcpy(&p, &x, 8);
        break;
    }
    case RT_I32: {
        int32_t x = (int32_t)v;
        memcpy(&p, &x, 4);
        break;
    }
    case RT_U8:
        p = (uint8_t)(int64_t)v;
        break;
    case RT_BOOL:
        p = v != 0;
        break;
    }
    return p;
}

extern "C" int rtc_fill(const rtc_view *dst, double value) {
    if (dst->numel == 0) return RT_OK;
    const rtc_view *v[1] = {dst};
    rtc_geo g = rtc_geo_make(1, v);
    int es = rtc_dtype_size(dst->dtype);
    uint64_t pat = fill_pattern(dst->dtype, value);
    if (rtc_geo_contig(g)) {
        bool bytes_equal = true;
        for (int b = 1; b < es; b++)
            if (((pat >> (8 * b)) & 0xff) != (pat & 0xff)) bytes_equal = false;
        if (bytes_equal) {
            RTC_CUDA_TRY("fill", cudaMemsetAsync(dst->data, (int)(pat & 0xff), (size_t)g.numel * es,
                                                 rtc_stream()));
            return RT_OK;
        }
        unsigned grid = rtc_grid(g.numel, RTC_BLOCK);
        cudaStream_t st = rtc_stream();
        switch (es) {
        case 1:
            k_fill_contig<uint8_t>
                <<<grid, RTC_BLOCK, 0, st>>>((uint8_t *)dst->data, g.numel, (uint8_t)pat);
            break;
        case 2:
            k_fill_contig<uint16_t>
                <<<grid, RTC_BLOCK, 0, st>>>((uint16_t *)dst->data, g.numel, (uint16_t)pat);
            break;
        case 4:
            k_fill_contig<uint32_t>
                <<<grid, RTC_BLOCK, 0, st>>>((uint32_t *)dst->data, g.numel, (uint32_t)pat);
            break;
        default:
            k_fill_contig<uint64_t>
                <<<grid, RTC_BLOCK, 0, st>>>((uint64_t *)dst->data, g.numel, pat);
            break;
        }
        RTC_LAUNCH_CHECK("fill");
        return RT_OK;
    }
    k_fill<<<rtc_grid(g.numel, RTC_BLOCK), RTC_BLOCK, 0, rtc_stream()>>>(g, dst->data, es, pat);
    RTC_LAUNCH_CHECK("fill");
    return RT_OK;
}

extern "C" int rtc_memset(void *p, int byte, size_t nbytes) {
    RTC_CUDA_TRY("alloc (poison)", cudaMemsetAsync(p, byte, nbytes, rtc_stream()));
    return RT_OK;
}

/* ================================================================================================
 * binary
 * ============================================================================================== */

enum { MODE_F = 0, MODE_D = 1, MODE_I = 2 };

template <int MODE>
__global__ void k_binary(rtc_geo g, int op, char *o, int to, const char *a, int ta, const char *b,
                         int tb) {
    int eo = rtc_dtype_size(to), ea = rtc_dtype_size(ta), eb = rtc_dtype_size(tb);
    RTC_GRID_STRIDE(i, g.numel) {
        int64_t off[3];
        rtc_offsets<3>(g, i, off);
        const char *pa = a + off[1] * ea, *pb = b + off[2] * eb;
        char *po = o + off[0] * eo;
        if (MODE == MODE_F)
            rtc_stf(po, to, bin_f(op, rtc_ldf(pa, ta), rtc_ldf(pb, tb)));
        else if (MODE == MODE_I)
            rtc_sti(po, to, bin_i(op, rtc_ldi(pa, ta), rtc_ldi(pb, tb)));
        else
            rtc_std(po, to, bin_d(op, rtc_ldd(pa, ta), rtc_ldd(pb, tb)));
    }
}

/* out (f32) = f(a, b) over contiguous operands of two different float dtypes (an f32 residual
 * stream plus a bf16 branch under autocast): 8 elements per thread when aligned, no index math
 * (k_binary's per-element offsets ran at a third of the bandwidth) */
template <typename TA, typename TB>
__global__ void k_map2_mixed(float *__restrict__ o, const TA *__restrict__ a,
                             const TB *__restrict__ b, int64_t n, FBin f, bool vec) {
    int64_t nv = vec ? n / 8 : 0;
    RTC_GRID_STRIDE(i, nv) {
        vec_t<TA, 8> x = ((const vec_t<TA, 8> *)a)[i];
        vec_t<TB, 8> y = ((const vec_t<TB, 8> *)b)[i];
        vec_t<float, 8> z;
#pragma unroll
        for (int j = 0; j < 8; j++)
            z.v[j] = f(rtc_io<TA>::ld(x.v[j]), rtc_io<TB>::ld(y.v[j]));
        ((vec_t<float, 8> *)o)[i] = z;
    }
    RTC_GRID_STRIDE(i, n - nv * 8) {
        int64_t k = nv * 8 + i;
        o[k] = f(rtc_io<TA>::ld(a[k]), rtc_io<TB>::ld(b[k]));
    }
}

template <typename TA, typename TB>
static int launch_mixed(int op, void *o, const void *a, const void *b, int64_t n) {
    bool vec = rtc_aligned16(o) && rtc_aligned16(a) && rtc_aligned16(b);
    k_map2_mixed<TA, TB><<<rtc_grid(vec ? n / 8 + 8 : n, RTC_BLOCK), RTC_BLOCK, 0, rtc_stream()>>>(
        (float *)o, (const TA *)a, (const TB *)b, n, FBin{op}, vec);
    RTC_LAUNCH_CHECK("binary");
    return RT_OK;
}

extern "C" int rtc_binary(int op, const rtc_view *out, const rtc_view *a, const rtc_view *b) {
    if (out->numel == 0) return RT_OK;
    const rtc_view *v[3] = {out, a, b};
    rtc_geo g = rtc_geo_make(3, v);
    int to = out->dtype, ta = a->dtype, tb = b->dtype;
    bool fmode = reduced(to) && op < RT_EQ;
    if (fmode && ta == to && tb == to && rtc_geo_contig(g)) {
        switch (op) {
        case RT_ADD:
            return map2_dtype("add", to, out->data, a->data, b->data, g.numel, FAdd{});
        case RT_SUB:
            return map2_dtype("sub", to, out->data, a->data, b->data, g.numel, FSub{});
        case RT_MUL:
            return map2_dtype("mul", to, out->data, a->data, b->data, g.numel, FMul{});
        case RT_DIV:
            return map2_dtype("div", to, out->data, a->data, b->data, g.numel, FDiv{});
        default:
            return map2_dtype("binary", to, out->data, a->data, b->data, g.numel, FBin{op});
        }
    }
    if (fmode && to == RT_F32 && rtc_geo_contig(g)) {
        if (ta == RT_F32 && tb == RT_BF16)
            return launch_mixed<float, __nv_bfloat16>(op, out->data, a->data, b->data, g.numel);
        if (ta == RT_BF16 && tb == RT_F32)
            return launch_mixed<__nv_bfloat16, float>(op, out->data, a->data, b->data, g.numel);
        if (ta == RT_F32 && tb == RT_F16)
            return launch_mixed<float, __half>(op, out->data, a->data, b->data, g.numel);
        if (ta == RT_F16 && tb == RT_F32)
            return launch_mixed<__half, float>(op, out->data, a->data, b->data, g.numel);
    }
    bool imode = to == RT_I64 && ta == RT_I64 && tb == RT_I64 && op != RT_DIV && op != RT_POW;
    unsigned grid = rtc_grid(g.numel, RTC_BLOCK);
    cudaStream_t st = rtc_stream();
    if (fmode)
        k_binary<MODE_F>
            <<<grid, RTC_BLOCK, 0, st>>>(g, op, out->data, to, a->data, ta, b->data, tb);
    else if (imode)
        k_binary<MODE_I>
            <<<grid, RTC_BLOCK, 0, st>>>(g, op, out->data, to, a->data, ta, b->data, tb);
    else
        k_binary<MODE_D>
            <<<grid, RTC_BLOCK, 0, st>>>(g, op, out->data, to, a->data, ta, b->data, tb);
    RTC_LAUNCH_CHECK("binary");
    return RT_OK;
}

template <int MODE>
__global__ void k_binary_scalar(rtc_geo g, int op, char *o, int to, const char *a, int ta, double s,
                                int first) {
    int eo = rtc_dtype_size(to), ea = rtc_dtype_size(ta);
    float sf = (float)s;
    RTC_GRID_STRIDE(i, g.numel) {
        int64_t off[2];
        rtc_offsets<2>(g, i, off);
        const char *pa = a + off[1] * ea;
        char *po = o + off[0] * eo;
        if (MODE == MODE_F) {
            float x = rtc_ldf(pa, ta);
            rtc_stf(po, to, first ? bin_f(op, sf, x) : bin_f(op, x, sf));
        } else {
            double x = rtc_ldd(pa, ta);
            rtc_std(po, to, first ? bin_d(op, s, x) : bin_d(op, x, s));
        }
    }
}

extern "C" int rtc_binary_scalar(int op, const rtc_view *out, const rtc_view *a, double s,
                                 int scalar_first) {
    if (out->numel == 0) return RT_OK;
    const rtc_view *v[2] = {out, a};
    rtc_geo g = rtc_geo_make(2, v);
    int to = out->dtype, ta = a->dtype;
    bool fmode = reduced(to) && op < RT_EQ;
    float sf = (float)s;
    if (fmode && ta == to && rtc_geo_contig(g)) {
        switch (op) {
        case RT_ADD:
            return map2_dtype("add", to, out->data, a->data, a->data, g.numel,
                              FScal<FAdd>{FAdd{}, sf, scalar_first});
        case RT_MUL:
            return map2_dtype("mul", to, out->data, a->data, a->data, g.numel,
                              FScal<FMul>{FMul{}, sf, scalar_first});
        default:
            return map2_dtype("binary_scalar", to, out->data, a->data, a->data, g.numel,
                              FScal<FBin>{FBin{op}, sf, scalar_first});
        }
    }
    unsigned grid = rtc_grid(g.numel, RTC_BLOCK);
    if (fmode)
        k_binary_scalar<MODE_F><<<grid, RTC_BLOCK, 0, rtc_stream()>>>(g, op, out->data, to, a->data,
                                                                      ta, s, scalar_first);
    else
        k_binary_scalar<MODE_D><<<grid, RTC_BLOCK, 0, rtc_stream()>>>(g, op, out->data, to, a->data,
                                                                      ta, s, scalar_first);
    RTC_LAUNCH_CHECK("binary_scalar");
    return RT_OK;
}

/* ================================================================================================
 * masked copy
 * ============================================================================================== */

__global__ void k_masked_copy(rtc_geo g, char *o, int to, const char *c, int tc, const char *a,
                              int ta) {
    int eo = rtc_dtype_size(to), ec = rtc_dtype_size(tc), ea = rtc_dtype_size(ta);
    RTC_GRID_STRIDE(i, g.numel) {
        int64_t off[3];
        rtc_offsets<3>(g, i, off);
        if (rtc_ldd(c + off[1] * ec, tc) != 0) convert(o + off[0] * eo, to, a + off[2] * ea, ta);
    }
}

extern "C" int rtc_masked_copy(const rtc_view *out, const rtc_view *cond, const rtc_view *a) {
    if (out->numel == 0) return RT_OK;
    const rtc_view *v[3] = {out, cond, a};
    rtc_geo g = rtc_geo_make(3, v);
    k_masked_copy<<<rtc_grid(g.numel, RTC_BLOCK), RTC_BLOCK, 0, rtc_stream()>>>(
        g, out->data, out->dtype, cond->data, cond->dtype, a->data, a->dtype);
    RTC_LAUNCH_CHECK("masked_copy");
    return RT_OK;
}

/* ================================================================================================
 * unary and its derivative
 * ============================================================================================== */

template <bool F32>
__global__ void k_unary(rtc_geo g, int op, char *o, int to, const char *a, int ta) {
    int eo = rtc_dtype_size(to), ea = rtc_dtype_size(ta);
    RTC_GRID_STRIDE(i, g.numel) {
        int64_t off[2];
        rtc_offsets<2>(g, i, off);
        if (F32)
            rtc_stf(o + off[0] * eo, to, un_f(op, rtc_ldf(a + off[1] * ea, ta)));
        else
            rtc_std(o + off[0] * eo, to, un_d(op, rtc_ldd(a + off[1] * ea, ta)));
    }
}

extern "C" int rtc_unary(int op, const rtc_view *out, const rtc_view *a) {
    if (out->numel == 0) return RT_OK;
    const rtc_view *v[2] = {out, a};
    rtc_geo g = rtc_geo_make(2, v);
    int to = out->dtype, ta = a->dtype;
    if (reduced(to) && ta == to && rtc_geo_contig(g)) {
        switch (op) { /* the activations of MLPs and transformers, specialised */
        case RT_RELU:
            return map2_dtype("unary", to, out->data, a->data, a->data, g.numel, FUnK<RT_RELU>{});
        case RT_GELU_TANH:
            return map2_dtype("unary", to, out->data, a->data, a->data, g.numel,
                              FUnK<RT_GELU_TANH>{});
        case RT_GELU:
            return map2_dtype("unary", to, out->data, a->data, a->data, g.numel, FUnK<RT_GELU>{});
        case RT_SILU:
            return map2_dtype("unary", to, out->data, a->data, a->data, g.numel, FUnK<RT_SILU>{});
        }
        return map2_dtype("unary", to, out->data, a->data, a->data, g.numel, FUn{op});
    }
    unsigned grid = rtc_grid(g.numel, RTC_BLOCK);
    if (reduced(to))
        k_unary<true><<<grid, RTC_BLOCK, 0, rtc_stream()>>>(g, op, out->data, to, a->data, ta);
    else
        k_unary<false><<<grid, RTC_BLOCK, 0, rtc_stream()>>>(g, op, out->data, to, a->data, ta);
    RTC_LAUNCH_CHECK("unary");
    return RT_OK;
}

template <typename T>
__global__ void k_unary_backward(rtc_geo g, int op, char *gi, int t0, const char *go, int t1,
                                 const char *x, int t2) {
    int e0 = rtc_dtype_size(t0), e1 = rtc_dtype_size(t1), e2 = rtc_dtype_size(t2);
    RTC_GRID_STRIDE(i, g.numel) {
        int64_t off[3];
        rtc_offsets<3>(g, i, off);
        T gv = (T)rtc_ldd(go + off[1] * e1, t1), xv = (T)rtc_ldd(x + off[2] * e2, t2);
        rtc_std(gi + off[0] * e0, t0, (double)(gv * un_deriv<T>(op, xv)));
    }
}

extern "C" int rtc_unary_backward(int op, const rtc_view *grad_in, const rtc_view *grad_out,
                                  const rtc_view *x) {
    if (grad_in->numel == 0) return RT_OK;
    const rtc_view *v[3] = {grad_in, grad_out, x};
    rtc_geo g = rtc_geo_make(3, v);
    /* contiguous operands of one reduced dtype (a GELU's backward in a bf16 MLP): 16-byte vectors
     * (the strided kernel ran at a seventh of the bandwidth on the H200) */
    int dt = grad_in->dtype;
    if (reduced(dt) && grad_out->dtype == dt && x->dtype == dt && rtc_geo_contig(g)) {
        const char *name = "unary_backward";
        void *o = grad_in->data;
        switch (op) {
        case RT_RELU:
            return map2_dtype(name, dt, o, grad_out->data, x->data, g.numel, FUnBwdK<RT_RELU>{});
        case RT_GELU_TANH:
            return map2_dtype(name, dt, o, grad_out->data, x->data, g.numel,
                              FUnBwdK<RT_GELU_TANH>{});
        case RT_GELU:
            return map2_dtype(name, dt, o, grad_out->data, x->data, g.numel, FUnBwdK<RT_GELU>{});
        case RT_SILU:
            return map2_dtype(name, dt, o, grad_out->data, x->data, g.numel, FUnBwdK<RT_SILU>{});
        }
        return map2_dtype(name, dt, o, grad_out->data, x->data, g.numel, FUnBwd{op});
    }
    unsigned grid = rtc_grid(g.numel, RTC_BLOCK);
    if (reduced(grad_in->dtype))
        k_unary_backward<float><<<grid, RTC_BLOCK, 0, rtc_stream()>>>(
            g, op, grad_in->data, grad_in->dtype, grad_out->data, grad_out->dtype, x->data,
            x->dtype);
    else
        k_unary_backward<double><<<grid, RTC_BLOCK, 0, rtc_stream()>>>(
            g, op, grad_in->data, grad_in->dtype, grad_out->data, grad_out->dtype, x->data,
            x->dtype);
    RTC_LAUNCH_CHECK("unary_backward");
    return RT_OK;
}
