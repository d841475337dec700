/* reduce.cu: sum/mean/max/min over the dims where the output (keepdim form) has size 1, like
 * kernels/cpu/reduce.c. Accumulates in double for f32/f64/integers (as the CPU does, so f32 sums
 * of many elements agree to rounding) and in f32 for bf16/f16; max/min propagate NaN. Two shapes of
 * work: when the reduced dims include the unit-stride one, a block per output element reads
 * coalesced rows; otherwise each output gets a column of 8 lanes and neighbouring outputs are
 * neighbouring threads. Each output is written by one block: results do not depend on timing. */
#include "cuda_common.cuh"

#include <math.h>

struct red_geo {
    int nk, nr;
    int64_t nout, count;
    int64_t kshape[RT_MAX_DIMS], kstride[RT_MAX_DIMS], ostride[RT_MAX_DIMS];
    int64_t rshape[RT_MAX_DIMS], rstride[RT_MAX_DIMS];
};

template <typename A> __device__ __forceinline__ A red_init(int op) {
    return op == RT_MAX ? A(-INFINITY) : op == RT_MIN ? A(INFINITY) : A(0);
}

template <typename A> __device__ __forceinline__ A red_combine(int op, A x, A y) {
    if (op == RT_SUM || op == RT_MEAN) return x + y;
    if (x != x) return x;
    if (y != y) return y;
    return op == RT_MAX ? (x > y ? x : y) : (x < y ? x : y);
}

template <typename A> __device__ __forceinline__ A red_load(const char *p, int dt) {
    return sizeof(A) == 4 ? (A)rtc_ldf(p, dt) : (A)rtc_ldd(p, dt);
}

__device__ __forceinline__ void red_outer_offsets(const red_geo &g, int64_t o, int64_t *aoff,
                                                  int64_t *ooff) {
    int64_t a = 0, b = 0;
    for (int k = g.nk - 1; k >= 0; k--) {
        int64_t q = o / g.kshape[k], r = o - q * g.kshape[k];
        o = q;
        a += r * g.kstride[k];
        b += r * g.ostride[k];
    }
    *aoff = a;
    *ooff = b;
}

__device__ __forceinline__ int64_t red_inner_offset(const red_geo &g, int64_t j) {
    if (g.nr == 1) return j * g.rstride[0];
    int64_t off = 0;
    for (int k = g.nr - 1; k >= 0; k--) {
        int64_t q = j / g.rshape[k], r = j - q * g.rshape[k];
        j = q;
        off += r * g.rstride[k];
    }
    return off;
}

template <typename A>
__device__ __forceinline__ void red_store(int op, char *p, int dt, A acc, int64_t count) {
    double v = (double)acc;
    if (op == RT_MEAN) v = sizeof(A) == 4 ? (double)((float)acc / (float)count) : v / (double)count;
    rtc_std(p, dt, v);
}

/* one block per output element (grid-stride over outputs); the block's threads split the row */
template <typename A>
__global__ void k_reduce_rows(red_geo g, int op, const char *a, int ta, char *o, int to) {
    __shared__ A part[32];
    int ea = rtc_dtype_size(ta), eo = rtc_dtype_size(to);
    for (int64_t out = blockIdx.x; out < g.nout; out += gridDim.x) {
        int64_t aoff, ooff;
        red_outer_offsets(g, out, &aoff, &ooff);
        const char *base = a + aoff * ea;
        A acc = red_init<A>(op);
        for (int64_t j = threadIdx.x; j < g.count; j += blockDim.x)
            acc = red_combine<A>(op, acc, red_load<A>(base + red_inner_offset(g, j) * ea, ta));
        for (int s = 16; s > 0; s >>= 1) acc = red_combine<A>(op, acc, __shfl_down_sync(0xffffffffu, acc, s));
        int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
        if (lane == 0) part[warp] = acc;
        __syncthreads();
        if (warp == 0) {
            int nw = blockDim.x >> 5;
            acc = lane < nw ? part[lane] : red_init<A>(op);
            for (int s = 16; s > 0; s >>= 1) acc = red_combine<A>(op, acc, __shfl_down_sync(0xffffffffu, acc, s));
            if (lane == 0) red_store<A>(op, o + ooff * eo, to, acc, g.count);
        }
        __syncthreads();
    }
}

/* 32 outputs per block along x, 8 lanes along y splitting each output's reduction */
template <typename A>
__global__ void k_reduce_cols(red_geo g, int op, const char *a, int ta, char *o, int to) {
    __shared__ A part[8][33];
    int ea = rtc_dtype_size(ta), eo = rtc_dtype_size(to);
    for (int64_t base_out = (int64_t)blockIdx.x * 32; base_out < g.nout; base_out += (int64_t)gridDim.x * 32) {
        int64_t out = base_out + threadIdx.x;
        A acc = red_init<A>(op);
        int64_t aoff = 0, ooff = 0;
        if (out < g.nout) {
            red_outer_offsets(g, out, &aoff, &ooff);
            for (int64_t j = threadIdx.y; j < g.count; j += blockDim.y)
                acc = red_combine<A>(op, acc, red_load<A>(a + (aoff + red_inner_offset(g, j)) * ea, ta));
        }
        part[threadIdx.y][threadIdx.x] = acc;
        __syncthreads();
        if (threadIdx.y == 0 && out < g.nout) {
            for (int y = 1; y < (int)blockDim.y; y++) acc = red_combine<A>(op, acc, part[y][threadIdx.x]);
            red_store<A>(op, o + ooff * eo, to, acc, g.count);
        }
        __syncthreads();
    }
}

extern "C" int rtc_reduce(int op, const rtc_view *out, const rtc_view *a) {
    red_geo g;
    g.nk = g.nr = 0;
    g.count = 1;
    for (int d = 0; d < a->ndim; d++) {
        if (out->shape[d] == 1 && a->shape[d] != 1) {
            /* merge with the previous reduced dim when it is contiguous over both */
            if (g.nr > 0 && g.rstride[g.nr - 1] == a->strides[d] * a->shape[d]) {
                g.rshape[g.nr - 1] *= a->shape[d];
                g.rstride[g.nr - 1] = a->strides[d];
            } else {
                g.rshape[g.nr] = a->shape[d];
                g.rstride[g.nr++] = a->strides[d];
            }
            g.count *= a->shape[d];
        } else if (a->shape[d] != 1 || out->shape[d] != 1) {
            g.kshape[g.nk] = a->shape[d];
            g.kstride[g.nk] = a->strides[d];
            g.ostride[g.nk++] = out->strides[d];
        }
    }
    g.nout = out->numel;
    if (g.nout == 0) return RT_OK;
    bool rows = false;
    for (int k = 0; k < g.nr; k++)
        if (g.rstride[k] == 1) rows = true;
    if (g.nr == 0) rows = false;
    bool f32acc = a->dtype == RT_BF16 || a->dtype == RT_F16;
    cudaStream_t st = rtc_stream();
    int64_t cap = (int64_t)rtc_sm_count() * 16;
    if (rows && g.count >= 64) {
        unsigned grid = (unsigned)(g.nout < cap ? g.nout : cap);
        int block = g.count >= 4096 ? 512 : g.count >= 512 ? 256 : 64;
        if (f32acc) k_reduce_rows<float><<<grid, block, 0, st>>>(g, op, a->data, a->dtype, out->data, out->dtype);
        else k_reduce_rows<double><<<grid, block, 0, st>>>(g, op, a->data, a->dtype, out->data, out->dtype);
    } else {
        int64_t nb = (g.nout + 31) / 32;
        unsigned grid = (unsigned)(nb < cap ? nb : cap);
        dim3 block(32, 8);
        if (f32acc) k_reduce_cols<float><<<grid, block, 0, st>>>(g, op, a->data, a->dtype, out->data, out->dtype);
        else k_reduce_cols<double><<<grid, block, 0, st>>>(g, op, a->data, a->dtype, out->data, out->dtype);
    }
    RTC_LAUNCH_CHECK("reduce");
    return RT_OK;
}
