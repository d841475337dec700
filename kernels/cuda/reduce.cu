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
        for (int s = 16; s > 0; s >>= 1)
            acc = red_combine<A>(op, acc, __shfl_down_sync(0xffffffffu, acc, s));
        int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
        if (lane == 0) part[warp] = acc;
        __syncthreads();
        if (warp == 0) {
            int nw = blockDim.x >> 5;
            acc = lane < nw ? part[lane] : red_init<A>(op);
            for (int s = 16; s > 0; s >>= 1)
                acc = red_combine<A>(op, acc, __shfl_down_sync(0xffffffffu, acc, s));
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
    for (int64_t base_out = (int64_t)blockIdx.x * 32; base_out < g.nout;
         base_out += (int64_t)gridDim.x * 32) {
        int64_t out = base_out + threadIdx.x;
        A acc = red_init<A>(op);
        int64_t aoff = 0, ooff = 0;
        if (out < g.nout) {
            red_outer_offsets(g, out, &aoff, &ooff);
            for (int64_t j = threadIdx.y; j < g.count; j += blockDim.y)
                acc = red_combine<A>(op, acc,
                                     red_load<A>(a + (aoff + red_inner_offset(g, j)) * ea, ta));
        }
        part[threadIdx.y][threadIdx.x] = acc;
        __syncthreads();
        if (threadIdx.y == 0 && out < g.nout) {
            for (int y = 1; y < (int)blockDim.y; y++)
                acc = red_combine<A>(op, acc, part[y][threadIdx.x]);
            red_store<A>(op, o + ooff * eo, to, acc, g.count);
        }
        __syncthreads();
    }
}

/* k_reduce_cols with the reduced dim split into parts: block (tile, part) reduces 32 outputs over
 * the part's rows into partials, and k_reduce_split_final combines each output's partials in
 * order (no atomics: results independent of timing). For column sums over many rows with few
 * columns (a Linear's bias gradient: 16384 rows x 1024-4096 columns), where one block per 32
 * columns left most SMs idle and each thread a latency-bound chain of thousands of loads (1 ms for
 * 16384 x 3072 f32 on the H200, 20x PyTorch). */
template <typename A>
__global__ void k_reduce_cols_split(red_geo g, int op, const char *a, int ta, int64_t chunk,
                                    A *part) {
    __shared__ A sh[8][33];
    const int ea = rtc_dtype_size(ta);
    const int64_t out = (int64_t)blockIdx.x * 32 + threadIdx.x, pi = blockIdx.y;
    const int64_t j0 = pi * chunk, j1 = j0 + chunk < g.count ? j0 + chunk : g.count;
    A acc = red_init<A>(op);
    if (out < g.nout) {
        int64_t aoff, ooff;
        red_outer_offsets(g, out, &aoff, &ooff);
        if (g.nr == 1) {
            const int64_t rs = g.rstride[0];
#pragma unroll 4
            for (int64_t j = j0 + threadIdx.y; j < j1; j += blockDim.y)
                acc = red_combine<A>(op, acc, red_load<A>(a + (aoff + j * rs) * ea, ta));
        } else {
            for (int64_t j = j0 + threadIdx.y; j < j1; j += blockDim.y)
                acc = red_combine<A>(op, acc,
                                     red_load<A>(a + (aoff + red_inner_offset(g, j)) * ea, ta));
        }
    }
    sh[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && out < g.nout) {
        for (int y = 1; y < (int)blockDim.y; y++)
            acc = red_combine<A>(op, acc, sh[y][threadIdx.x]);
        part[out * gridDim.y + pi] = acc;
    }
}

/* one warp per output when the reduced elements are one unit-stride run (sum over the last dim):
 * 16-byte loads when aligned, 8 rows per block (a block per short row left the last-dim sum at 22%
 * of PyTorch's speed) */
template <typename T> struct red_ld;
template <> struct red_ld<float> {
    __device__ static float f(float x) { return x; }
};
template <> struct red_ld<double> {
    __device__ static double f(double x) { return x; }
};
template <> struct red_ld<__nv_bfloat16> {
    __device__ static float f(__nv_bfloat16 x) { return __bfloat162float(x); }
};
template <> struct red_ld<__half> {
    __device__ static float f(__half x) { return __half2float(x); }
};

template <typename T, typename A, int V>
__global__ void __launch_bounds__(256)
    k_reduce_warp(red_geo g, int op, const T *__restrict__ a, char *o, int to, bool vec) {
    int lane = threadIdx.x & 31;
    int64_t w0 = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5), ws = (int64_t)gridDim.x * 8;
    for (int64_t out = w0; out < g.nout; out += ws) {
        int64_t aoff, ooff;
        red_outer_offsets(g, out, &aoff, &ooff);
        const T *base = a + aoff;
        A acc = red_init<A>(op);
        if (vec) {
            struct alignas(16) pack {
                T v[V];
            };
#pragma unroll 4
            for (int64_t j = (int64_t)lane * V; j < g.count; j += 32 * V) {
                pack p = *(const pack *)(base + j);
#pragma unroll
                for (int k = 0; k < V; k++)
                    acc = red_combine<A>(op, acc, (A)red_ld<T>::f(p.v[k]));
            }
        } else {
#pragma unroll 4
            for (int64_t j = lane; j < g.count; j += 32)
                acc = red_combine<A>(op, acc, (A)red_ld<T>::f(base[j]));
        }
        for (int s = 16; s > 0; s >>= 1)
            acc = red_combine<A>(op, acc, __shfl_down_sync(0xffffffffu, acc, s));
        if (lane == 0) red_store<A>(op, o + ooff * rtc_dtype_size(to), to, acc, g.count);
    }
}

template <typename T, typename A>
static void launch_reduce_warp(const red_geo &g, int op, const rtc_view *out, const rtc_view *a,
                               cudaStream_t st) {
    constexpr int V = 16 / sizeof(T);
    bool vec = rtc_aligned16(a->data) && g.count % V == 0;
    for (int k = 0; k < g.nk && vec; k++)
        vec = (g.kstride[k] * (int64_t)sizeof(T)) % 16 == 0;
    int64_t nb = (g.nout + 7) / 8, cap = (int64_t)rtc_sm_count() * 16;
    unsigned grid = (unsigned)(nb < cap ? nb : cap);
    k_reduce_warp<T, A, V>
        <<<grid, 256, 0, st>>>(g, op, (const T *)a->data, out->data, out->dtype, vec);
}

/* few outputs over long unit-stride runs (a full sum, the mean of a loss): each output's run is
 * split into `parts` chunks reduced by separate blocks into partials, then one warp per output
 * combines its partials in order (no atomics: results independent of timing) */
template <typename T, typename A>
__global__ void __launch_bounds__(256)
    k_reduce_split(red_geo g, int op, const T *__restrict__ a, int64_t chunk, A *part) {
    __shared__ A sh[8];
    int64_t out = blockIdx.y, pi = blockIdx.x;
    int64_t aoff, ooff;
    red_outer_offsets(g, out, &aoff, &ooff);
    const T *base = a + aoff;
    int64_t j0 = pi * chunk, j1 = j0 + chunk < g.count ? j0 + chunk : g.count;
    A acc = red_init<A>(op);
#pragma unroll 4
    for (int64_t j = j0 + threadIdx.x; j < j1; j += blockDim.x)
        acc = red_combine<A>(op, acc, (A)red_ld<T>::f(base[j]));
    for (int s = 16; s > 0; s >>= 1)
        acc = red_combine<A>(op, acc, __shfl_down_sync(0xffffffffu, acc, s));
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) sh[w] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int k = 1; k < (int)(blockDim.x >> 5); k++)
            acc = red_combine<A>(op, acc, sh[k]);
        part[out * gridDim.x + pi] = acc;
    }
}

template <typename A>
__global__ void k_reduce_split_final(red_geo g, int op, const A *part, int64_t parts, char *o,
                                     int to) {
    int64_t out = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (out >= g.nout) return;
    A acc = red_init<A>(op);
    for (int64_t k = 0; k < parts; k++)
        acc = red_combine<A>(op, acc, part[out * parts + k]);
    int64_t aoff, ooff;
    red_outer_offsets(g, out, &aoff, &ooff);
    red_store<A>(op, o + ooff * rtc_dtype_size(to), to, acc, g.count);
}

/* The two-kernel split reductions: scratch for nout x parts partials, `first` launches the kernel
 * that writes them (given the scratch), k_reduce_split_final combines them in order. The scratch
 * goes back to the cache at once: it is reused only in this stream's order. */
template <typename A, class L>
static int run_split(const red_geo &g, int op, const rtc_view *out, int64_t parts, cudaStream_t st,
                     L first) {
    size_t bytes = (size_t)(g.nout * parts) * sizeof(A);
    void *buf;
    int rc = rtc_scratch_alloc(bytes, &buf);
    if (rc < 0) return rc;
    first((A *)buf);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) {
        k_reduce_split_final<A><<<(unsigned)((g.nout + 127) / 128), 128, 0, st>>>(
            g, op, (const A *)buf, parts, out->data, out->dtype);
        e = cudaGetLastError();
    }
    rtc_scratch_free(buf, bytes);
    RTC_CUDA_TRY("reduce", e);
    return RT_OK;
}

template <typename T, typename A>
static int launch_reduce_split(const red_geo &g, int op, const rtc_view *out, const rtc_view *a,
                               cudaStream_t st) {
    int64_t parts = (g.count + 8191) / 8192;
    int64_t maxp = ((int64_t)rtc_sm_count() * 8 + g.nout - 1) / g.nout;
    if (parts > maxp) parts = maxp;
    if (parts < 1) parts = 1;
    int64_t chunk = (g.count + parts - 1) / parts;
    parts = (g.count + chunk - 1) / chunk;
    return run_split<A>(g, op, out, parts, st, [&](A *buf) {
        dim3 grid((unsigned)parts, (unsigned)g.nout);
        k_reduce_split<T, A><<<grid, 256, 0, st>>>(g, op, (const T *)a->data, chunk, buf);
    });
}

/* k_reduce_cols_split for one contiguous kept dim of 16-byte-aligned rows (a bias gradient: sum
 * over the rows of a (tokens, features) gradient): each thread takes V = 16 / sizeof(T) adjacent
 * columns with one 16-byte load per row (2-byte loads of one column per thread ran at 0.5 TB/s). */
template <typename T, typename A>
__global__ void __launch_bounds__(256)
    k_reduce_cols_vec(int64_t ncols, int64_t pitch, int64_t count, int op, const T *__restrict__ a,
                      int64_t chunk, A *part) {
    constexpr int V = 16 / sizeof(T);
    __shared__ A sh[8][32][V];
    const int64_t c0 = ((int64_t)blockIdx.x * 32 + threadIdx.x) * V, pi = blockIdx.y;
    const int64_t j0 = pi * chunk, j1 = j0 + chunk < count ? j0 + chunk : count;
    A acc[V];
#pragma unroll
    for (int k = 0; k < V; k++)
        acc[k] = red_init<A>(op);
    if (c0 < ncols) {
#pragma unroll 2
        for (int64_t j = j0 + threadIdx.y; j < j1; j += 8) {
            uint4 raw = __ldcs((const uint4 *)(a + j * pitch + c0));
            const T *v = reinterpret_cast<const T *>(&raw);
#pragma unroll
            for (int k = 0; k < V; k++)
                acc[k] = red_combine<A>(op, acc[k], (A)red_ld<T>::f(v[k]));
        }
    }
#pragma unroll
    for (int k = 0; k < V; k++)
        sh[threadIdx.y][threadIdx.x][k] = acc[k];
    __syncthreads();
    if (threadIdx.y == 0 && c0 < ncols) {
        for (int y = 1; y < 8; y++)
#pragma unroll
            for (int k = 0; k < V; k++)
                acc[k] = red_combine<A>(op, acc[k], sh[y][threadIdx.x][k]);
        const int64_t parts = gridDim.y;
#pragma unroll
        for (int k = 0; k < V; k++)
            part[(c0 + k) * parts + pi] = acc[k];
    }
}

/* Column reductions split over the reduced dim when one block per 32 outputs would leave the GPU
 * mostly idle (false: not worth it; the caller takes k_reduce_cols). */
template <typename A>
static int launch_reduce_cols_split(const red_geo &g, int op, const rtc_view *out,
                                    const rtc_view *a, cudaStream_t st, bool *done) {
    *done = false;
    /* the 16-byte path: one kept dim of unit stride, one reduced dim, aligned rows */
    const int es = rtc_dtype_size(a->dtype), V = 16 / es;
    const bool vec = rtc_is_float(a->dtype) && g.nk == 1 && g.kstride[0] == 1 && g.nr == 1 &&
                     g.nout % V == 0 && (g.rstride[0] * es) % 16 == 0 &&
                     ((uintptr_t)a->data & 15) == 0;
    const int64_t tiles = vec ? (g.nout / V + 31) / 32 : (g.nout + 31) / 32,
                  want = (int64_t)rtc_sm_count() * 8;
    if (tiles >= want || g.count < 512) return RT_OK;
    int64_t parts = (want + tiles - 1) / tiles;
    if (parts > g.count / 64) parts = g.count / 64; /* at least 8 rows per lane */
    if (parts < 2 || tiles > 65535) return RT_OK;
    int64_t chunk = (g.count + parts - 1) / parts;
    parts = (g.count + chunk - 1) / chunk;
    *done = true;
    return run_split<A>(g, op, out, parts, st, [&](A *buf) {
        dim3 grid((unsigned)tiles, (unsigned)parts), block(32, 8);
        if (vec) {
            const int64_t n = g.nout, p = g.rstride[0], c = g.count;
            switch (a->dtype) {
            case RT_F32:
                k_reduce_cols_vec<float, A>
                    <<<grid, block, 0, st>>>(n, p, c, op, (const float *)a->data, chunk, buf);
                return;
            case RT_F64:
                k_reduce_cols_vec<double, A>
                    <<<grid, block, 0, st>>>(n, p, c, op, (const double *)a->data, chunk, buf);
                return;
            case RT_BF16:
                k_reduce_cols_vec<__nv_bfloat16, A><<<grid, block, 0, st>>>(
                    n, p, c, op, (const __nv_bfloat16 *)a->data, chunk, buf);
                return;
            default:
                k_reduce_cols_vec<__half, A>
                    <<<grid, block, 0, st>>>(n, p, c, op, (const __half *)a->data, chunk, buf);
                return;
            }
        }
        k_reduce_cols_split<A><<<grid, block, 0, st>>>(g, op, a->data, a->dtype, chunk, buf);
    });
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
    bool warp_rows = g.nr == 1 && g.rstride[0] == 1 &&
                     (g.count <= 4096 || g.nout >= (int64_t)rtc_sm_count() * 64);
    bool split = g.nr == 1 && g.rstride[0] == 1 && g.count >= 16384 &&
                 g.nout < (int64_t)rtc_sm_count() && rtc_is_float(a->dtype);
    if (split) {
        switch (a->dtype) {
        case RT_F32:
            return launch_reduce_split<float, double>(g, op, out, a, st);
        case RT_F64:
            return launch_reduce_split<double, double>(g, op, out, a, st);
        case RT_BF16:
            return launch_reduce_split<__nv_bfloat16, float>(g, op, out, a, st);
        default:
            return launch_reduce_split<__half, float>(g, op, out, a, st);
        }
    }
    if (warp_rows && rtc_is_float(a->dtype)) {
        switch (a->dtype) {
        case RT_F32:
            launch_reduce_warp<float, double>(g, op, out, a, st);
            break;
        case RT_F64:
            launch_reduce_warp<double, double>(g, op, out, a, st);
            break;
        case RT_BF16:
            launch_reduce_warp<__nv_bfloat16, float>(g, op, out, a, st);
            break;
        default:
            launch_reduce_warp<__half, float>(g, op, out, a, st);
            break;
        }
    } else if (rows && g.count >= 64) {
        unsigned grid = (unsigned)(g.nout < cap ? g.nout : cap);
        int block = g.count >= 4096 ? 512 : g.count >= 512 ? 256 : 64;
        if (f32acc)
            k_reduce_rows<float>
                <<<grid, block, 0, st>>>(g, op, a->data, a->dtype, out->data, out->dtype);
        else
            k_reduce_rows<double>
                <<<grid, block, 0, st>>>(g, op, a->data, a->dtype, out->data, out->dtype);
    } else {
        bool done;
        int rc = f32acc ? launch_reduce_cols_split<float>(g, op, out, a, st, &done)
                        : launch_reduce_cols_split<double>(g, op, out, a, st, &done);
        if (rc < 0 || done) return rc;
        int64_t nb = (g.nout + 31) / 32;
        unsigned grid = (unsigned)(nb < cap ? nb : cap);
        dim3 block(32, 8);
        if (f32acc)
            k_reduce_cols<float>
                <<<grid, block, 0, st>>>(g, op, a->data, a->dtype, out->data, out->dtype);
        else
            k_reduce_cols<double>
                <<<grid, block, 0, st>>>(g, op, a->data, a->dtype, out->data, out->dtype);
    }
    RTC_LAUNCH_CHECK("reduce");
    return RT_OK;
}
