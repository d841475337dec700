/* backend_cuda.c: the CUDA backend table (libramtorch_cuda, DESIGN section 1): a caching device
 * allocator, pinned host memory, copies within and across devices, streams and events, cuBLASLt
 * GEMM, and the routing of every op to its launcher in kernels/cuda/ (.cu). Loaded by
 * runtime/backend.c on first use of a cuda device; every CUDA and cuBLAS status becomes an
 * RT_ERR_BACKEND (or RT_ERR_OOM) error, never an abort. */
#include "../../runtime/device_api.h"
#include "backend_nn.h"
#include "cuda_kernels.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(rtc_view) == sizeof(rt_kview), "rtc_view must mirror rt_kview");
_Static_assert(offsetof(rtc_view, numel) == offsetof(rt_kview, numel), "rtc_view layout");
_Static_assert(offsetof(rtc_view, strides) == offsetof(rt_kview, strides), "rtc_view layout");
#define CV(v) ((const rtc_view *)(v))

#define RT_CUDA_TRY(op, expr)                                                                      \
    do {                                                                                           \
        cudaError_t rt_cuda_err_ = (expr);                                                         \
        if (rt_cuda_err_ != cudaSuccess)                                                           \
            return RT_ERR(RT_ERR_BACKEND, "%s: CUDA error %s: %s (in %s)", (op),                   \
                          cudaGetErrorName(rt_cuda_err_), cudaGetErrorString(rt_cuda_err_),        \
                          #expr);                                                                  \
    } while (0)
#define RT_CUBLAS_TRY(op, expr)                                                                    \
    do {                                                                                           \
        cublasStatus_t rt_cublas_st_ = (expr);                                                     \
        if (rt_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                                \
            return RT_ERR(RT_ERR_BACKEND, "%s: cuBLAS error %s: %s (in %s)", (op),                 \
                          cublasLtGetStatusName(rt_cublas_st_),                                    \
                          cublasLtGetStatusString(rt_cublas_st_), #expr);                          \
    } while (0)

#define MAX_DEVICES 16
#define NCLASSES 256
#define HASH_BUCKETS 65536

struct rt_stream {
    cudaStream_t s;
    int device;
    int is_default;
};

struct rt_event {
    cudaEvent_t e;
    int device;
    int timing;
};

/* ---- per-device state ------------------------------------------------------------------------ */

typedef struct block {
    void *ptr;
    size_t size;
    cudaStream_t stream;
    int in_use;
    struct block *next_free; /* free list of its size class */
    struct block *hnext;     /* hash chain by ptr */
} block;

typedef struct dev_state {
    pthread_mutex_t lock;
    int ready;
    int sm_count;
    struct rt_stream default_stream;
    block *free_lists[NCLASSES];
    block **hash;
    int64_t allocated, max_allocated, reserved, budget, mallocs, ooms;
    cublasLtHandle_t lt;
    void *workspace;
    size_t workspace_size;
} dev_state;

static dev_state g_dev[MAX_DEVICES];
static int g_ndev;
static int g_poison;
static int g_tf32;
static pthread_mutex_t g_init_lock = PTHREAD_MUTEX_INITIALIZER;

static _Thread_local int tl_device;
static _Thread_local struct rt_stream *tl_stream[MAX_DEVICES];

static int dev_init(int device) {
    dev_state *d = &g_dev[device];
    if (d->ready) return RT_OK;
    pthread_mutex_lock(&g_init_lock);
    int rc = RT_OK;
    if (!d->ready) {
        pthread_mutex_init(&d->lock, NULL);
        d->hash = calloc(HASH_BUCKETS, sizeof *d->hash);
        if (!d->hash) rc = RT_ERR(RT_ERR_OOM, "cuda: out of host memory for allocator tables");
        cudaError_t e =
            cudaDeviceGetAttribute(&d->sm_count, cudaDevAttrMultiProcessorCount, device);
        if (rc == RT_OK && e != cudaSuccess)
            rc = RT_ERR(RT_ERR_BACKEND, "cuda:%d: CUDA error %s: %s (in cudaDeviceGetAttribute)",
                        device, cudaGetErrorName(e), cudaGetErrorString(e));
        d->default_stream.s = 0; /* the legacy default stream */
        d->default_stream.device = device;
        d->default_stream.is_default = 1;
        if (rc == RT_OK) d->ready = 1;
    }
    pthread_mutex_unlock(&g_init_lock);
    return rc;
}

static int cur_device(void) {
    return tl_device;
}

static struct rt_stream *cur_stream_obj(int device) {
    struct rt_stream *s = tl_stream[device];
    return s ? s : &g_dev[device].default_stream;
}

cudaStream_t rtc_stream(void) {
    return cur_stream_obj(cur_device())->s;
}

int rtc_current_device(void) {
    return cur_device();
}

int rtc_sm_count(void) {
    int s = g_dev[cur_device()].sm_count;
    return s > 0 ? s : 80;
}

/* Make `device` current for the calling thread (runtime and our thread-local). */
static int use_device(const char *op, int device) {
    if (device < 0 || device >= g_ndev)
        return RT_ERR(RT_ERR_DEVICE, "%s: no device cuda:%d (%d CUDA device%s visible)", op, device,
                      g_ndev, g_ndev == 1 ? "" : "s");
    RT_TRY(dev_init(device));
    int cur;
    RT_CUDA_TRY(op, cudaGetDevice(&cur));
    if (cur != device) RT_CUDA_TRY(op, cudaSetDevice(device));
    tl_device = device;
    return RT_OK;
}

/* ================================================================================================
 * Caching allocator
 * ============================================================================================== */

/* Size classes: 512 bytes, then four steps per power of two (at most 25% slack). */
static size_t round_size(size_t n, int *cls) {
    if (n <= 512) {
        *cls = 0;
        return 512;
    }
    int lg = 63 - __builtin_clzll((unsigned long long)(n - 1)); /* 2^lg < n <= 2^(lg+1) */
    size_t p = (size_t)1 << lg, step = p / 4;
    size_t k = (n - p + step - 1) / step; /* 1..4 */
    *cls = 1 + (lg - 9) * 4 + (int)(k - 1);
    if (*cls >= NCLASSES) *cls = NCLASSES - 1;
    return p + k * step;
}

static size_t hash_ptr(const void *p) {
    uintptr_t x = (uintptr_t)p >> 9;
    x ^= x >> 17;
    x *= 0x9E3779B97F4A7C15ull;
    return (size_t)(x >> 48) & (HASH_BUCKETS - 1);
}

static char *fmt_bytes(char *buf, size_t n, int64_t b) {
    if (b >= (int64_t)1 << 30)
        snprintf(buf, n, "%.2f GiB", (double)b / (double)(1 << 30));
    else if (b >= (int64_t)1 << 20)
        snprintf(buf, n, "%.2f MiB", (double)b / (double)(1 << 20));
    else
        snprintf(buf, n, "%lld bytes", (long long)b);
    return buf;
}

/* Return every cached free block to the driver. Caller holds d->lock. */
static int release_cached(int device, dev_state *d) {
    int any = 0;
    for (int c = 0; c < NCLASSES; c++)
        if (d->free_lists[c]) any = 1;
    if (!any) return RT_OK;
    /* blocks freed in stream order may still be read by queued kernels */
    RT_CUDA_TRY("cuda.empty_cache", cudaDeviceSynchronize());
    for (int c = 0; c < NCLASSES; c++) {
        block *b = d->free_lists[c];
        while (b) {
            block *next = b->next_free;
            block **pp = &d->hash[hash_ptr(b->ptr)];
            while (*pp && *pp != b)
                pp = &(*pp)->hnext;
            if (*pp) *pp = b->hnext;
            cudaError_t e = cudaFree(b->ptr);
            d->reserved -= (int64_t)b->size;
            free(b);
            if (e != cudaSuccess) {
                d->free_lists[c] = next;
                return RT_ERR(RT_ERR_BACKEND, "cuda:%d: CUDA error %s: %s (in cudaFree)", device,
                              cudaGetErrorName(e), cudaGetErrorString(e));
            }
            b = next;
        }
        d->free_lists[c] = NULL;
    }
    (void)device;
    return RT_OK;
}

static int oom_error(int device, dev_state *d, size_t nbytes, const char *why) {
    char b1[32], b2[32], b3[32], b4[32];
    d->ooms++;
    return RT_ERR(RT_ERR_OOM,
                  "alloc: CUDA out of memory on cuda:%d: tried to allocate %s (%zu bytes); %s "
                  "allocated in tensors, %s reserved by the caching allocator, budget %s (%s)",
                  device, fmt_bytes(b1, sizeof b1, (int64_t)nbytes), nbytes,
                  fmt_bytes(b2, sizeof b2, d->allocated), fmt_bytes(b3, sizeof b3, d->reserved),
                  d->budget ? fmt_bytes(b4, sizeof b4, d->budget) : "none", why);
}

static int device_alloc(int device, size_t nbytes, void **out) {
    RT_TRY(use_device("alloc", device));
    dev_state *d = &g_dev[device];
    int cls;
    size_t size = round_size(nbytes ? nbytes : 1, &cls);
    cudaStream_t stream = cur_stream_obj(device)->s;
    pthread_mutex_lock(&d->lock);
    block **pp = &d->free_lists[cls], *b = NULL;
    for (; *pp; pp = &(*pp)->next_free)
        if ((*pp)->stream == stream && (*pp)->size == size) {
            b = *pp;
            *pp = b->next_free;
            break;
        }
    int rc = RT_OK;
    if (!b) {
        if (d->budget && d->reserved + (int64_t)size > d->budget) {
            rc = release_cached(device, d);
            if (rc == RT_OK && d->reserved + (int64_t)size > d->budget)
                rc = oom_error(device, d, nbytes, "the request would exceed the memory budget");
        }
        void *p = NULL;
        if (rc == RT_OK) {
            cudaError_t e = cudaMalloc(&p, size);
            if (e == cudaErrorMemoryAllocation) {
                cudaGetLastError(); /* clear the sticky-free error state */
                rc = release_cached(device, d);
                if (rc == RT_OK) {
                    e = cudaMalloc(&p, size);
                    if (e != cudaSuccess) cudaGetLastError();
                }
            }
            if (rc == RT_OK && e == cudaErrorMemoryAllocation) {
                rc = oom_error(device, d, nbytes, "cudaMalloc failed after freeing the cache");
            } else if (rc == RT_OK && e != cudaSuccess) {
                rc = RT_ERR(RT_ERR_BACKEND, "alloc: CUDA error %s: %s (in cudaMalloc of %zu bytes)",
                            cudaGetErrorName(e), cudaGetErrorString(e), size);
            }
        }
        if (rc == RT_OK) {
            b = calloc(1, sizeof *b);
            if (!b) {
                cudaFree(p);
                rc = RT_ERR(RT_ERR_OOM, "alloc: out of host memory for a block header");
            } else {
                b->ptr = p;
                b->size = size;
                b->stream = stream;
                size_t h = hash_ptr(p);
                b->hnext = d->hash[h];
                d->hash[h] = b;
                d->reserved += (int64_t)size;
                d->mallocs++;
            }
        }
    }
    if (rc == RT_OK) {
        b->in_use = 1;
        d->allocated += (int64_t)b->size;
        if (d->allocated > d->max_allocated) d->max_allocated = d->allocated;
    }
    pthread_mutex_unlock(&d->lock);
    if (rc < 0) return rc;
    *out = b->ptr;
    if (g_poison) RT_TRY(rtc_memset(b->ptr, 0xff, b->size)); /* NaN in every float dtype */
    return RT_OK;
}

static void device_free(int device, void *ptr) {
    if (device < 0 || device >= g_ndev || !ptr) return;
    dev_state *d = &g_dev[device];
    pthread_mutex_lock(&d->lock);
    block *b = d->hash[hash_ptr(ptr)];
    while (b && b->ptr != ptr)
        b = b->hnext;
    if (b && b->in_use) {
        int cls;
        round_size(b->size, &cls);
        b->in_use = 0;
        b->next_free = d->free_lists[cls];
        d->free_lists[cls] = b;
        d->allocated -= (int64_t)b->size;
    }
    pthread_mutex_unlock(&d->lock);
}

static int cuda_alloc(int device, size_t nbytes, int memkind, void **out) {
    *out = NULL;
    if (memkind == RT_MEM_PINNED) {
        cudaError_t e = cudaHostAlloc(out, nbytes ? nbytes : 1, cudaHostAllocPortable);
        if (e == cudaErrorMemoryAllocation) {
            cudaGetLastError();
            return RT_ERR(RT_ERR_OOM,
                          "pin_memory: cudaHostAlloc of %zu bytes failed (out of "
                          "page-locked host memory)",
                          nbytes);
        }
        RT_CUDA_TRY("pin_memory", e);
        return RT_OK;
    }
    return device_alloc(device, nbytes, out);
}

static void cuda_free(int device, void *ptr, int memkind, size_t nbytes) {
    (void)nbytes;
    if (memkind == RT_MEM_PINNED) {
        cudaFreeHost(ptr);
        return;
    }
    device_free(device, ptr);
}

int rtc_scratch_alloc(size_t nbytes, void **out) {
    return device_alloc(cur_device(), nbytes, out);
}
void rtc_scratch_free(void *p, size_t nbytes) {
    (void)nbytes;
    device_free(cur_device(), p);
}

/* ================================================================================================
 * Copies
 * ============================================================================================== */

static int kview_contiguous(const rt_kview *v) {
    int64_t s = 1;
    for (int i = v->ndim - 1; i >= 0; i--) {
        if (v->shape[i] != 1 && v->strides[i] != s) return 0;
        s *= v->shape[i];
    }
    return 1;
}

static rt_kview contiguous_like(const rt_kview *v, void *data, int dtype) {
    rt_kview c = *v;
    c.data = data;
    c.dtype = dtype;
    rt_contiguous_strides(c.ndim, c.shape, c.strides);
    return c;
}

static int cuda_copy(const rt_kview *dst, const rt_kview *src) {
    return rtc_copy(CV(dst), CV(src));
}

static int sync_stream(const char *op) {
    RT_CUDA_TRY(op, cudaStreamSynchronize(rtc_stream()));
    return RT_OK;
}

static int copy_h2d(const rt_kview *dst, int ddev, const rt_kview *src, int smk) {
    static const char *op = "copy (host to device)";
    RT_TRY(use_device(op, ddev));
    int nb = rt_copy_is_non_blocking() && smk == RT_MEM_PINNED;
    size_t es = rt_dtype_size(src->dtype);
    size_t bytes = (size_t)dst->numel * es;
    if (dst->dtype == src->dtype && kview_contiguous(dst) && kview_contiguous(src) &&
        src->numel == dst->numel) {
        RT_CUDA_TRY(
            op, cudaMemcpyAsync(dst->data, src->data, bytes, cudaMemcpyHostToDevice, rtc_stream()));
        return nb ? RT_OK : sync_stream(op);
    }
    /* pack on the host when the source is strided or broadcast, upload, then cast/scatter on the
     * device */
    void *host = NULL, *dev = NULL;
    const void *up = src->data;
    int rc = RT_OK;
    if (!kview_contiguous(src) || src->numel != dst->numel) {
        host = malloc(bytes ? bytes : 1);
        if (!host)
            return RT_ERR(RT_ERR_OOM, "%s: out of host memory for a %zu-byte staging buffer", op,
                          bytes);
        rt_kview h = contiguous_like(dst, host, src->dtype);
        rt_kview s2 = *src;
        s2.ndim = dst->ndim;
        rc = rt_cpu_backend.copy(&h, &s2);
        up = host;
    }
    if (rc == RT_OK) rc = rtc_scratch_alloc(bytes, &dev);
    if (rc == RT_OK) {
        cudaError_t e = cudaMemcpyAsync(dev, up, bytes, cudaMemcpyHostToDevice, rtc_stream());
        if (e != cudaSuccess)
            rc = RT_ERR(RT_ERR_BACKEND, "%s: CUDA error %s: %s (in cudaMemcpyAsync)", op,
                        cudaGetErrorName(e), cudaGetErrorString(e));
    }
    if (rc == RT_OK) {
        rt_kview dv = contiguous_like(dst, dev, src->dtype);
        rc = rtc_copy(CV(dst), CV(&dv));
    }
    if (rc == RT_OK && (host || !nb)) rc = sync_stream(op);
    if (dev) rtc_scratch_free(dev, bytes);
    free(host);
    return rc;
}

/* Where a deferred bad-index report (deferred.c) surfaces when the host reads device memory. */
#define D2H_WHERE "a copy from the device to the host (item, to(\"cpu\"), totable)"

static int copy_d2h(const rt_kview *dst, int dmk, const rt_kview *src, int sdev) {
    static const char *op = "copy (device to host)";
    RT_TRY(use_device(op, sdev));
    int nb = rt_copy_is_non_blocking() && dmk == RT_MEM_PINNED;
    size_t es = rt_dtype_size(dst->dtype);
    size_t bytes = (size_t)dst->numel * es;
    int dcontig = kview_contiguous(dst);
    if (dst->dtype == src->dtype && dcontig && kview_contiguous(src) && src->numel == dst->numel) {
        RT_CUDA_TRY(
            op, cudaMemcpyAsync(dst->data, src->data, bytes, cudaMemcpyDeviceToHost, rtc_stream()));
        if (!nb) RT_TRY(sync_stream(op));
        return rtc_deferred_check(sdev, D2H_WHERE);
    }
    /* cast/gather on the device into a contiguous buffer of dst's dtype, download, scatter */
    void *dev = NULL, *host = NULL;
    int rc = rtc_scratch_alloc(bytes, &dev);
    if (rc == RT_OK) {
        rt_kview dv = contiguous_like(dst, dev, dst->dtype);
        rc = rtc_copy(CV(&dv), CV(src));
    }
    if (rc == RT_OK && !dcontig) {
        host = malloc(bytes ? bytes : 1);
        if (!host)
            rc = RT_ERR(RT_ERR_OOM, "%s: out of host memory for a %zu-byte staging buffer", op,
                        bytes);
    }
    if (rc == RT_OK) {
        cudaError_t e = cudaMemcpyAsync(dcontig ? dst->data : host, dev, bytes,
                                        cudaMemcpyDeviceToHost, rtc_stream());
        if (e != cudaSuccess)
            rc = RT_ERR(RT_ERR_BACKEND, "%s: CUDA error %s: %s (in cudaMemcpyAsync)", op,
                        cudaGetErrorName(e), cudaGetErrorString(e));
    }
    if (rc == RT_OK && (host || !nb)) rc = sync_stream(op);
    if (rc == RT_OK && host) {
        rt_kview h = contiguous_like(dst, host, dst->dtype);
        rc = rt_cpu_backend.copy(dst, &h);
    }
    if (dev) rtc_scratch_free(dev, bytes);
    free(host);
    if (rc == RT_OK) rc = rtc_deferred_check(sdev, D2H_WHERE);
    return rc;
}

static int cuda_copy_cross(const rt_kview *dst, int ddev, int dmk, const rt_kview *src, int sdev,
                           int smk) {
    if (dst->numel == 0) return RT_OK;
    if (ddev >= 0 && sdev == RT_DEVICE_CPU) return copy_h2d(dst, ddev, src, smk);
    if (ddev == RT_DEVICE_CPU && sdev >= 0) return copy_d2h(dst, dmk, src, sdev);
    if (ddev >= 0 && sdev >= 0) {
        /* between two GPUs: stage through the host (peer access is not set up) */
        size_t bytes = (size_t)dst->numel * rt_dtype_size(dst->dtype);
        void *host = malloc(bytes ? bytes : 1);
        if (!host) return RT_ERR(RT_ERR_OOM, "copy (device to device): out of host memory");
        rt_kview h = contiguous_like(dst, host, dst->dtype);
        int prev = tl_device;
        int rc = copy_d2h(&h, RT_MEM_HOST, src, sdev);
        if (rc == RT_OK) rc = copy_h2d(dst, ddev, &h, RT_MEM_HOST);
        free(host);
        if (rc == RT_OK) rc = use_device("copy", prev);
        return rc;
    }
    return RT_ERR(RT_ERR_DEVICE, "copy: expected one side on a CUDA device");
}

/* ================================================================================================
 * Elementwise, reductions, random: thin wrappers over the .cu launchers
 * ============================================================================================== */

static int cuda_fill(const rt_kview *dst, double value) {
    return rtc_fill(CV(dst), value);
}
static int cuda_binary(int op, const rt_kview *out, const rt_kview *a, const rt_kview *b) {
    return rtc_binary(op, CV(out), CV(a), CV(b));
}
static int cuda_binary_scalar(int op, const rt_kview *out, const rt_kview *a, double s,
                              int scalar_first) {
    return rtc_binary_scalar(op, CV(out), CV(a), s, scalar_first);
}
static int cuda_masked_copy(const rt_kview *out, const rt_kview *cond, const rt_kview *a) {
    return rtc_masked_copy(CV(out), CV(cond), CV(a));
}
static int cuda_unary(int op, const rt_kview *out, const rt_kview *a) {
    return rtc_unary(op, CV(out), CV(a));
}
static int cuda_unary_backward(int op, const rt_kview *grad_in, const rt_kview *grad_out,
                               const rt_kview *x, const rt_kview *y) {
    (void)y;
    return rtc_unary_backward(op, CV(grad_in), CV(grad_out), CV(x));
}
static int cuda_reduce(int op, const rt_kview *out, const rt_kview *a) {
    return rtc_reduce(op, CV(out), CV(a));
}
static int cuda_fill_uniform(const rt_kview *dst, uint64_t seed, uint64_t offset, double lo,
                             double hi) {
    return rtc_fill_random(CV(dst), 0, seed, offset, lo, hi, 0, 0);
}
static int cuda_fill_normal(const rt_kview *dst, uint64_t seed, uint64_t offset, double mean,
                            double std) {
    return rtc_fill_random(CV(dst), 1, seed, offset, mean, std, 0, 0);
}
static int cuda_fill_randint(const rt_kview *dst, uint64_t seed, uint64_t offset, int64_t low,
                             int64_t high) {
    return rtc_fill_random(CV(dst), 2, seed, offset, 0, 0, low, high);
}

/* ================================================================================================
 * GEMM through cuBLASLt (row-major mapped to column-major by swapping the operands)
 * ============================================================================================== */

typedef struct gemm_key {
    int device, dtype, ta, tb, tf32, align_a, align_b, align_c;
    int epi_bias, spare; /* 1: CUBLASLT_EPILOGUE_BIAS (the bias pointer is set per call) */
    int64_t m, n, k, lda, ldb, ldc, sa, sb, sc, batch;
} gemm_key;

typedef struct gemm_plan {
    gemm_key key;
    int valid;
    uint64_t used;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} gemm_plan;

#define PLAN_CACHE 64
static _Thread_local gemm_plan tl_plans[PLAN_CACHE];
static _Thread_local uint64_t tl_plan_clock;

static int lt_init(int device) {
    dev_state *d = &g_dev[device];
    if (d->lt) return RT_OK;
    pthread_mutex_lock(&d->lock);
    int rc = RT_OK;
    if (!d->lt) {
        cublasLtHandle_t h;
        cublasStatus_t st = cublasLtCreate(&h);
        if (st != CUBLAS_STATUS_SUCCESS) {
            rc = RT_ERR(RT_ERR_BACKEND, "matmul: cuBLAS error %s: %s (in cublasLtCreate)",
                        cublasLtGetStatusName(st), cublasLtGetStatusString(st));
        } else {
            d->workspace_size = (size_t)32 << 20;
            cudaError_t e = cudaMalloc(&d->workspace, d->workspace_size);
            if (e != cudaSuccess) {
                cudaGetLastError();
                d->workspace = NULL;
                d->workspace_size = 0;
            }
            d->lt = h;
        }
    }
    pthread_mutex_unlock(&d->lock);
    return rc;
}

static int align_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    int r = 256;
    while (r > 1 && (a % (uintptr_t)r))
        r >>= 1;
    return r;
}

static void plan_destroy(gemm_plan *p) {
    if (!p->valid) return;
    cublasLtMatrixLayoutDestroy(p->la);
    cublasLtMatrixLayoutDestroy(p->lb);
    cublasLtMatrixLayoutDestroy(p->lc);
    cublasLtMatmulDescDestroy(p->desc);
    p->valid = 0;
}

static int layout(cublasLtMatrixLayout_t *l, cudaDataType_t t, uint64_t rows, uint64_t cols,
                  int64_t ld, int64_t batch, int64_t stride) {
    RT_CUBLAS_TRY("matmul", cublasLtMatrixLayoutCreate(l, t, rows, cols, ld));
    if (batch > 1) {
        int32_t bc = (int32_t)batch;
        RT_CUBLAS_TRY("matmul", cublasLtMatrixLayoutSetAttribute(
                                    *l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc));
        RT_CUBLAS_TRY("matmul",
                      cublasLtMatrixLayoutSetAttribute(
                          *l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
    }
    return RT_OK;
}

static int plan_build(gemm_plan *p, const gemm_key *k, dev_state *d) {
    cudaDataType_t t;
    cublasComputeType_t ct;
    cudaDataType_t scale;
    switch (k->dtype) {
    case RT_F32:
        t = CUDA_R_32F;
        ct = k->tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
        scale = CUDA_R_32F;
        break;
    case RT_BF16:
        t = CUDA_R_16BF;
        ct = CUBLAS_COMPUTE_32F;
        scale = CUDA_R_32F;
        break;
    case RT_F16:
        t = CUDA_R_16F;
        ct = CUBLAS_COMPUTE_32F;
        scale = CUDA_R_32F;
        break;
    case RT_F64:
        t = CUDA_R_64F;
        ct = CUBLAS_COMPUTE_64F;
        scale = CUDA_R_64F;
        break;
    default:
        return RT_ERR(RT_ERR_DTYPE,
                      "matmul: no CUDA GEMM for %s (expected float32, bfloat16, "
                      "float16 or float64)",
                      rt_dtype_name(k->dtype));
    }
    memset(p, 0, sizeof *p);
    p->key = *k;
    RT_CUBLAS_TRY("matmul", cublasLtMatmulDescCreate(&p->desc, ct, scale));
    /* column-major C^T (n x m) = op(B^T) (n x k) op(A^T) (k x m) */
    cublasOperation_t opa = k->tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                      opb = k->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    RT_CUBLAS_TRY("matmul", cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                                           &opa, sizeof opa));
    RT_CUBLAS_TRY("matmul", cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB,
                                                           &opb, sizeof opb));
    if (k->epi_bias) {
        /* in the column-major view the bias runs along D's n rows and is broadcast over its m
         * columns: a row-major row vector of length n; added in the compute type before the
         * one rounding to D's type */
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        cudaDataType_t bt = t;
        cublasStatus_t est = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                            &epi, sizeof epi);
        if (est == CUBLAS_STATUS_SUCCESS)
            est = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt,
                                                 sizeof bt);
        if (est != CUBLAS_STATUS_SUCCESS) {
            cublasLtMatmulDescDestroy(p->desc);
            return RT_ERR(RT_ERR_BACKEND, "linear: cuBLAS error %s: %s (setting the bias epilogue)",
                          cublasLtGetStatusName(est), cublasLtGetStatusString(est));
        }
    }
    int rc = layout(&p->la, t, k->tb ? k->k : k->n, k->tb ? k->n : k->k, k->ldb, k->batch, k->sb);
    if (rc == RT_OK)
        rc = layout(&p->lb, t, k->ta ? k->m : k->k, k->ta ? k->k : k->m, k->lda, k->batch, k->sa);
    if (rc == RT_OK) rc = layout(&p->lc, t, k->n, k->m, k->ldc, k->batch, k->sc);
    if (rc < 0) {
        cublasLtMatmulDescDestroy(p->desc);
        return rc;
    }
    cublasLtMatmulPreference_t pref;
    RT_CUBLAS_TRY("matmul", cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = d->workspace_size;
    uint32_t al_a = (uint32_t)k->align_b, al_b = (uint32_t)k->align_a, al_c = (uint32_t)k->align_c;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                         sizeof ws);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a,
                                         sizeof al_a);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b,
                                         sizeof al_b);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c,
                                         sizeof al_c);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c,
                                         sizeof al_c);
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(d->lt, p->desc, p->la, p->lb, p->lc, p->lc,
                                                       pref, 1, &res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    p->valid = 1;
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
        plan_destroy(p);
        /* the bias epilogue is optional: "not supported" lets linear add the bias itself */
        if (st != CUBLAS_STATUS_SUCCESS && !(k->epi_bias && st == CUBLAS_STATUS_NOT_SUPPORTED))
            return RT_ERR(RT_ERR_BACKEND,
                          "matmul: cuBLAS error %s: %s (in "
                          "cublasLtMatmulAlgoGetHeuristic, m=%lld n=%lld k=%lld %s)",
                          cublasLtGetStatusName(st), cublasLtGetStatusString(st), (long long)k->m,
                          (long long)k->n, (long long)k->k, rt_dtype_name(k->dtype));
        return RT_ERR(RT_ERR_UNSUPPORTED,
                      "matmul: cuBLASLt has no algorithm for m=%lld n=%lld "
                      "k=%lld %s",
                      (long long)k->m, (long long)k->n, (long long)k->k, rt_dtype_name(k->dtype));
    }
    p->algo = res.algo;
    return RT_OK;
}

/* cuda_gemm, and with bias != NULL linear's GEMM with the bias epilogue (cuda_gemm_bias). */
static int gemm_run(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                    const void *a, int64_t lda, int64_t stride_a, const void *b, int64_t ldb,
                    int64_t stride_b, double beta, void *c, int64_t ldc, int64_t stride_c,
                    int64_t batch, int dtype, const void *bias) {
    int device = cur_device();
    RT_TRY(dev_init(device));
    RT_TRY(lt_init(device));
    dev_state *d = &g_dev[device];
    gemm_key key;
    memset(&key, 0, sizeof key);
    key.device = device;
    key.dtype = dtype;
    key.ta = trans_a != 0;
    key.tb = trans_b != 0;
    key.tf32 = dtype == RT_F32 && g_tf32;
    key.align_a = align_of(a);
    key.align_b = align_of(b);
    key.align_c = align_of(c);
    key.m = m;
    key.n = n;
    key.k = k;
    key.lda = lda;
    key.ldb = ldb;
    key.ldc = ldc;
    key.batch = batch;
    key.sa = batch > 1 ? stride_a : 0;
    key.sb = batch > 1 ? stride_b : 0;
    key.sc = batch > 1 ? stride_c : 0;
    key.epi_bias = bias != NULL;
    gemm_plan *p = NULL, *victim = &tl_plans[0];
    for (int i = 0; i < PLAN_CACHE; i++) {
        gemm_plan *q = &tl_plans[i];
        if (q->valid && memcmp(&q->key, &key, sizeof key) == 0) {
            p = q;
            break;
        }
        if (!q->valid || (victim->valid && q->used < victim->used)) victim = q;
    }
    if (!p) {
        plan_destroy(victim);
        RT_TRY(plan_build(victim, &key, d));
        p = victim;
    }
    p->used = ++tl_plan_clock;
    float af = (float)alpha, bf = (float)beta;
    const void *pa = dtype == RT_F64 ? (const void *)&alpha : (const void *)&af;
    const void *pb = dtype == RT_F64 ? (const void *)&beta : (const void *)&bf;
    if (bias) /* per call: the plan (and its descriptor) is this thread's, reused across biases */
        RT_CUBLAS_TRY("linear",
                      cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                     &bias, sizeof bias));
    cublasStatus_t mst =
        cublasLtMatmul(d->lt, p->desc, pa, b, p->la, a, p->lb, pb, c, p->lc, c, p->lc, &p->algo,
                       d->workspace, d->workspace_size, rtc_stream());
    if (bias && mst == CUBLAS_STATUS_NOT_SUPPORTED)
        return RT_ERR(RT_ERR_UNSUPPORTED, "linear: cuBLASLt cannot run the bias epilogue here");
    if (mst != CUBLAS_STATUS_SUCCESS)
        return RT_ERR(RT_ERR_BACKEND, "%s: cuBLAS error %s: %s (in cublasLtMatmul)",
                      bias ? "linear" : "matmul", cublasLtGetStatusName(mst),
                      cublasLtGetStatusString(mst));
    return RT_OK;
}

static int cuda_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                     const void *a, int64_t lda, int64_t stride_a, const void *b, int64_t ldb,
                     int64_t stride_b, double beta, void *c, int64_t ldc, int64_t stride_c,
                     int64_t batch, int dtype) {
    return gemm_run(trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c,
                    ldc, stride_c, batch, dtype, NULL);
}

/* rt_backend.gemm_bias: linear's y = x w^T + b in one cuBLASLt call (CUBLASLT_EPILOGUE_BIAS), so
 * the output is written once instead of written, read and written again by a separate add. */
static int cuda_gemm_bias(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const void *a,
                          int64_t lda, const void *b, int64_t ldb, const void *bias, void *c,
                          int64_t ldc, int dtype) {
    if (dtype != RT_F32 && dtype != RT_BF16 && dtype != RT_F16)
        return RT_ERR(RT_ERR_UNSUPPORTED, "linear: no bias epilogue for %s", rt_dtype_name(dtype));
    return gemm_run(trans_a, trans_b, m, n, k, 1.0, a, lda, 0, b, ldb, 0, 0.0, c, ldc, 0, 1, dtype,
                    bias);
}

/* ================================================================================================
 * Devices, memory statistics, streams and events (runtime/device_api.h)
 * ============================================================================================== */

static int api_device_count(void) {
    return g_ndev;
}
static int api_set_device(int device) {
    return use_device("cuda.set_device", device);
}
static int api_get_device(int *out) {
    *out = tl_device;
    return RT_OK;
}
static int api_synchronize(int device) {
    int prev = tl_device;
    RT_TRY(use_device("cuda.synchronize", device < 0 ? prev : device));
    RT_CUDA_TRY("cuda.synchronize", cudaDeviceSynchronize());
    return use_device("cuda.synchronize", prev);
}
static int check_dev(const char *op, int device) {
    if (device < 0 || device >= g_ndev)
        return RT_ERR(RT_ERR_DEVICE, "%s: no device cuda:%d (%d visible)", op, device, g_ndev);
    return dev_init(device);
}
static int api_memory_stats(int device, int64_t s[6]) {
    RT_TRY(check_dev("cuda.memory_stats", device));
    dev_state *d = &g_dev[device];
    pthread_mutex_lock(&d->lock);
    s[0] = d->allocated;
    s[1] = d->max_allocated;
    s[2] = d->reserved;
    s[3] = d->budget;
    s[4] = d->mallocs;
    s[5] = d->ooms;
    pthread_mutex_unlock(&d->lock);
    return RT_OK;
}
static int api_reset_peak(int device) {
    RT_TRY(check_dev("cuda.reset_peak_memory_stats", device));
    dev_state *d = &g_dev[device];
    pthread_mutex_lock(&d->lock);
    d->max_allocated = d->allocated;
    pthread_mutex_unlock(&d->lock);
    return RT_OK;
}
static int api_empty_cache(int device) {
    RT_TRY(check_dev("cuda.empty_cache", device));
    int prev = tl_device;
    RT_TRY(use_device("cuda.empty_cache", device));
    dev_state *d = &g_dev[device];
    pthread_mutex_lock(&d->lock);
    int rc = release_cached(device, d);
    pthread_mutex_unlock(&d->lock);
    RT_TRY(rc);
    return use_device("cuda.empty_cache", prev);
}
static int api_set_memory_budget(int device, int64_t bytes) {
    RT_TRY(check_dev("cuda.set_memory_budget", device));
    dev_state *d = &g_dev[device];
    pthread_mutex_lock(&d->lock);
    d->budget = bytes;
    pthread_mutex_unlock(&d->lock);
    return RT_OK;
}
static int api_set_tf32(int enabled) {
    g_tf32 = enabled != 0;
    return RT_OK;
}

static int api_stream_create(int device, rt_stream **out) {
    int prev = tl_device;
    RT_TRY(use_device("cuda.Stream", device < 0 ? prev : device));
    struct rt_stream *s = calloc(1, sizeof *s);
    if (!s) return RT_ERR(RT_ERR_OOM, "cuda.Stream: out of host memory");
    cudaError_t e = cudaStreamCreateWithFlags(&s->s, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        free(s);
        RT_CUDA_TRY("cuda.Stream", e);
    }
    s->device = tl_device;
    *out = s;
    return use_device("cuda.Stream", prev);
}
static void api_stream_destroy(rt_stream *s) {
    if (!s || s->is_default) return;
    for (int d = 0; d < MAX_DEVICES; d++)
        if (tl_stream[d] == s) tl_stream[d] = NULL;
    cudaStreamDestroy(s->s);
    free(s);
}
static int api_current_stream(int device, rt_stream **out) {
    int dev = device < 0 ? tl_device : device;
    RT_TRY(check_dev("cuda.current_stream", dev));
    *out = cur_stream_obj(dev);
    return RT_OK;
}
static int api_set_current_stream(rt_stream *s) {
    if (!s) {
        tl_stream[tl_device] = NULL;
        return RT_OK;
    }
    RT_TRY(use_device("cuda.set_stream", s->device));
    tl_stream[s->device] = s->is_default ? NULL : s;
    return RT_OK;
}
static cudaStream_t stream_or_current(rt_stream *s) {
    return s ? s->s : rtc_stream();
}
static int api_stream_synchronize(rt_stream *s) {
    RT_CUDA_TRY("Stream.synchronize", cudaStreamSynchronize(stream_or_current(s)));
    return RT_OK;
}
static int api_stream_wait_event(rt_stream *s, rt_event *e) {
    RT_CUDA_TRY("Stream.wait_event", cudaStreamWaitEvent(stream_or_current(s), e->e, 0));
    return RT_OK;
}
static int api_stream_device(rt_stream *s) {
    return s ? s->device : tl_device;
}
static int api_event_create(int timing, rt_event **out) {
    RT_TRY(use_device("cuda.Event", tl_device));
    struct rt_event *e = calloc(1, sizeof *e);
    if (!e) return RT_ERR(RT_ERR_OOM, "cuda.Event: out of host memory");
    cudaError_t err =
        cudaEventCreateWithFlags(&e->e, timing ? cudaEventDefault : cudaEventDisableTiming);
    if (err != cudaSuccess) {
        free(e);
        RT_CUDA_TRY("cuda.Event", err);
    }
    e->device = tl_device;
    e->timing = timing != 0;
    *out = e;
    return RT_OK;
}
static void api_event_destroy(rt_event *e) {
    if (!e) return;
    cudaEventDestroy(e->e);
    free(e);
}
static int api_event_record(rt_event *e, rt_stream *s) {
    RT_CUDA_TRY("Event.record", cudaEventRecord(e->e, stream_or_current(s)));
    return RT_OK;
}
static int api_event_synchronize(rt_event *e) {
    RT_CUDA_TRY("Event.synchronize", cudaEventSynchronize(e->e));
    return RT_OK;
}
static int api_event_query(rt_event *e) {
    cudaError_t r = cudaEventQuery(e->e);
    if (r == cudaSuccess) return 1;
    if (r == cudaErrorNotReady) {
        cudaGetLastError();
        return 0;
    }
    RT_CUDA_TRY("Event.query", r);
    return 0;
}
static int api_event_elapsed_time(rt_event *a, rt_event *b, double *ms) {
    if (!a->timing || !b->timing)
        return RT_ERR(RT_ERR_INVALID, "Event.elapsed_time: both events need enable_timing=true");
    float f = 0;
    RT_CUDA_TRY("Event.elapsed_time", cudaEventElapsedTime(&f, a->e, b->e));
    *ms = f;
    return RT_OK;
}

/* The offload engine's raw copies (runtime/offload.c): host<->device or device<->device, direction
 * inferred from the pointers (unified addressing), ordered on stream s (NULL: the current one). */
static int api_memcpy_async(void *dst, const void *src, size_t nbytes, rt_stream *s) {
    RT_CUDA_TRY("offload.copy",
                cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, stream_or_current(s)));
    return RT_OK;
}

/* Page-lock host memory the engine did not allocate itself (arena chunks), so copies from it are
 * asynchronous DMA at full bus speed. Registering twice is not an error. */
static int api_host_register(void *ptr, size_t nbytes) {
    cudaError_t e = cudaHostRegister(ptr, nbytes, cudaHostRegisterPortable);
    if (e == cudaErrorHostMemoryAlreadyRegistered) {
        (void)cudaGetLastError();
        return RT_OK;
    }
    RT_CUDA_TRY("arena.host_register", e);
    return RT_OK;
}

static int api_host_unregister(void *ptr) {
    cudaError_t e = cudaHostUnregister(ptr);
    if (e == cudaErrorHostMemoryNotRegistered) {
        (void)cudaGetLastError();
        return RT_OK;
    }
    RT_CUDA_TRY("arena.host_unregister", e);
    return RT_OK;
}

/* Bad indices kernels recorded without the host waiting (deferred.c); device < 0: every device. */
static int api_deferred_check(int device, const char *where) {
    if (device >= 0) return rtc_deferred_check(device, where);
    for (int d = 0; d < g_ndev; d++)
        RT_TRY(rtc_deferred_check(d, where));
    return RT_OK;
}

static const rt_device_api k_device_api = {
    .device_count = api_device_count,
    .set_device = api_set_device,
    .get_device = api_get_device,
    .synchronize = api_synchronize,
    .memory_stats = api_memory_stats,
    .reset_peak = api_reset_peak,
    .empty_cache = api_empty_cache,
    .set_memory_budget = api_set_memory_budget,
    .set_tf32 = api_set_tf32,
    .stream_create = api_stream_create,
    .stream_destroy = api_stream_destroy,
    .current_stream = api_current_stream,
    .set_current_stream = api_set_current_stream,
    .stream_synchronize = api_stream_synchronize,
    .stream_wait_event = api_stream_wait_event,
    .stream_device = api_stream_device,
    .event_create = api_event_create,
    .event_destroy = api_event_destroy,
    .event_record = api_event_record,
    .event_synchronize = api_event_synchronize,
    .event_query = api_event_query,
    .event_elapsed_time = api_event_elapsed_time,
    .memcpy_async = api_memcpy_async,
    .host_register = api_host_register,
    .host_unregister = api_host_unregister,
    .deferred_check = api_deferred_check,
};

/* ================================================================================================
 * The table
 * ============================================================================================== */

static const rt_backend k_cuda_backend = {
    .name = "cuda",
    .alloc = cuda_alloc,
    .free = cuda_free,
    .copy = cuda_copy,
    .fill = cuda_fill,
    .binary = cuda_binary,
    .binary_scalar = cuda_binary_scalar,
    .masked_copy = cuda_masked_copy,
    .unary = cuda_unary,
    .unary_backward = cuda_unary_backward,
    .reduce = cuda_reduce,
    .gemm = cuda_gemm,
    .fill_uniform = cuda_fill_uniform,
    .fill_normal = cuda_fill_normal,
    .fill_randint = cuda_fill_randint,
    .copy_cross = cuda_copy_cross,
    .device_api = &k_device_api,
    /* neural-network ops and optimizer updates (backend_nn.c) */
    .adamw_step = rtc_be_adamw_step,
    .sgd_step = rtc_be_sgd_step,
    .softmax = rtc_be_softmax,
    .softmax_backward = rtc_be_softmax_backward,
    .cross_entropy = rtc_be_cross_entropy,
    .cross_entropy_backward = rtc_be_cross_entropy_backward,
    .embedding = rtc_be_embedding,
    .embedding_backward = rtc_be_embedding_backward,
    .layer_norm = rtc_be_layer_norm,
    .layer_norm_backward = rtc_be_layer_norm_backward,
    .dropout = rtc_be_dropout,
    .reduce_with_indices = rtc_be_reduce_with_indices,
    .index_select = rtc_be_index_select,
    .index_add = rtc_be_index_add,
    /* transformer ops (backend_nn.c) */
    .rms_norm = rtc_be_rms_norm,
    .rms_norm_backward = rtc_be_rms_norm_backward,
    .rope = rtc_be_rope,
    .sdpa = rtc_be_sdpa,
    .sdpa_backward = rtc_be_sdpa_backward,
    .cross_entropy_reduce = rtc_be_cross_entropy_reduce,
    .gemm_bias = cuda_gemm_bias,
    .adamw_step_multi = rtc_be_adamw_step_multi,
};

/* Called once by runtime/backend.c. NULL (with the reason in rt_last_error) when no device or
 * driver is usable. */
__attribute__((visibility("default"))) const rt_backend *rt_cuda_backend_get(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        RT_ERR(RT_ERR_DEVICE, "%s: %s", cudaGetErrorName(e), cudaGetErrorString(e));
        return NULL;
    }
    if (n <= 0) {
        RT_ERR(RT_ERR_DEVICE, "no CUDA device found");
        return NULL;
    }
    g_ndev = n < MAX_DEVICES ? n : MAX_DEVICES;
    const char *poison = getenv("RAMTORCH_CUDA_POISON");
    g_poison = poison && poison[0] && strcmp(poison, "0") != 0;
    if (dev_init(0) < 0) return NULL;
    return &k_cuda_backend;
}
