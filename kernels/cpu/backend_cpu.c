/* backend_cpu.c: the CPU backend table (DESIGN section 1): host memory, copies, fills, and the
 * routing of every op to its kernel in kernels/cpu/. */
#include "cpu_kernels.h"

#include <malloc.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* ---- memory --------------------------------------------------------------------------------- */

/* A training loop allocates and frees the same activation and gradient sizes every step. With
 * glibc's defaults, blocks above the (dynamic, at most 32 MiB) mmap threshold are mapped and
 * unmapped each time, and freed heap tops are trimmed, so every step pays page faults on fresh
 * memory (measured: 17% of a Fashion-MNIST step on one thread). Keeping blocks below 256 MiB on the
 * heap and trimming only above 1 GiB of free top makes steady-state allocations reuse warm pages,
 * like a caching allocator. Set RAMTORCH_KEEP_MALLOC_DEFAULTS=1 to leave the process's malloc
 * settings alone. */
__attribute__((constructor)) static void tune_malloc(void) {
    const char *keep = getenv("RAMTORCH_KEEP_MALLOC_DEFAULTS");
    if (keep && *keep && *keep != '0') return;
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

static int cpu_alloc(int device, size_t nbytes, int memkind, void **out) {
    (void)device;
    (void)memkind;
    /* 64-byte alignment for vector loads; never a zero-size request (aligned_alloc(64, 0) may
     * return NULL, which would read as OOM). */
    size_t n = (nbytes + 63) & ~(size_t)63;
    *out = aligned_alloc(64, n ? n : 64);
    if (!*out)
        return RT_ERR(RT_ERR_OOM,
                      "alloc: out of host memory allocating %zu bytes (%lld bytes held "
                      "by tensors)",
                      nbytes, (long long)rt_host_bytes_allocated());
    return RT_OK;
}

static void cpu_free(int device, void *ptr, int memkind, size_t nbytes) {
    (void)device;
    (void)memkind;
    (void)nbytes;
    free(ptr);
}

/* ---- copy and fill ----------------------------------------------------------------------------
 */

typedef struct copy_job {
    rt_iter it;
    int dt, st;
    int64_t n, sd, ss;
    size_t es;
} copy_job;

static void copy_rows(void *ctx, int64_t r0, int64_t r1) {
    const copy_job *j = ctx;
    const int dt = j->dt, st = j->st;
    const int64_t n = j->n, sd = j->sd, ss = j->ss;
    const size_t es = j->es;
    for (int64_t r = r0; r < r1; r++) {
        char *p[2];
        rt_iter_row(&j->it, r, p);
        if (dt == st && sd == (int64_t)es && ss == (int64_t)es) {
            memcpy(p[0], p[1], (size_t)n * es);
        } else if (dt == st) {
            for (int64_t i = 0; i < n; i++)
                memcpy(p[0] + i * sd, p[1] + i * ss, es);
        } else if (dt == RT_F32 && st == RT_BF16) {
            for (int64_t i = 0; i < n; i++)
                *(float *)(p[0] + i * sd) = rt_bf16_to_f32(*(uint16_t *)(p[1] + i * ss));
        } else if (dt == RT_BF16 && st == RT_F32) {
            for (int64_t i = 0; i < n; i++)
                *(uint16_t *)(p[0] + i * sd) = rt_f32_to_bf16(*(float *)(p[1] + i * ss));
        } else if (!rt_dtype_is_float(dt) && !rt_dtype_is_float(st) && st != RT_BOOL) {
            /* integer to integer without a trip through double (keeps all 64 bits) */
            for (int64_t i = 0; i < n; i++) {
                int64_t x = st == RT_I64   ? *(int64_t *)(p[1] + i * ss)
                            : st == RT_I32 ? *(int32_t *)(p[1] + i * ss)
                                           : *(uint8_t *)(p[1] + i * ss);
                char *d = p[0] + i * sd;
                if (dt == RT_I64)
                    *(int64_t *)d = x;
                else if (dt == RT_I32)
                    *(int32_t *)d = (int32_t)(uint32_t)(uint64_t)x;
                else if (dt == RT_U8)
                    *(uint8_t *)d = (uint8_t)(uint64_t)x;
                else
                    *(uint8_t *)d = x != 0;
            }
        } else {
            for (int64_t i = 0; i < n; i++)
                rt_store(p[0] + i * sd, dt, rt_load(p[1] + i * ss, st));
        }
    }
}

static int cpu_copy(const rt_kview *dst, const rt_kview *src) {
    copy_job j;
    const rt_kview *v[2] = {dst, src};
    rt_iter_init(&j.it, 2, v);
    int64_t rows = rt_iter_rows(&j.it);
    int last = j.it.ndim - 1;
    j.n = j.it.shape[last];
    j.sd = j.it.strides[0][last];
    j.ss = j.it.strides[1][last];
    j.dt = dst->dtype;
    j.st = src->dtype;
    j.es = rt_dtype_size(j.dt);
    rt_parallel_for(rows, rows * j.n, copy_rows, &j);
    return RT_OK;
}

typedef struct fill_job {
    rt_iter it;
    int dtype;
    int64_t n, s;
    size_t es;
    float f;
    _Alignas(8) char pattern[8]; /* rt_store writes an aligned double or int64 */
} fill_job;

static void fill_rows(void *ctx, int64_t r0, int64_t r1) {
    const fill_job *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        char *p[1];
        rt_iter_row(&j->it, r, p);
        if (j->dtype == RT_F32 && j->s == 4) {
            for (int64_t i = 0; i < j->n; i++)
                ((float *)p[0])[i] = j->f;
        } else {
            for (int64_t i = 0; i < j->n; i++)
                memcpy(p[0] + i * j->s, j->pattern, j->es);
        }
    }
}

static int cpu_fill(const rt_kview *dst, double value) {
    fill_job j;
    const rt_kview *v[1] = {dst};
    rt_iter_init(&j.it, 1, v);
    int64_t rows = rt_iter_rows(&j.it);
    int last = j.it.ndim - 1;
    j.n = j.it.shape[last];
    j.s = j.it.strides[0][last];
    j.dtype = dst->dtype;
    j.es = rt_dtype_size(dst->dtype);
    j.f = (float)value;
    rt_store(j.pattern, dst->dtype, value);
    rt_parallel_for(rows, rows * j.n, fill_rows, &j);
    return RT_OK;
}

/* ---- threads ----------------------------------------------------------------------------------
 */

extern void openblas_set_num_threads(int n);

int rt_get_num_threads(void) {
    return omp_get_max_threads();
}

int rt_set_num_threads(int n) {
    if (n < 1) return RT_ERR(RT_ERR_INVALID, "set_num_threads: expected n >= 1, got %d", n);
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
    return RT_OK;
}

/* ---- the table --------------------------------------------------------------------------------
 */

const rt_backend rt_cpu_backend = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .copy = cpu_copy,
    .fill = cpu_fill,
    .binary = rt_cpu_binary,
    .binary_scalar = rt_cpu_binary_scalar,
    .masked_copy = rt_cpu_masked_copy,
    .unary = rt_cpu_unary,
    .unary_backward = rt_cpu_unary_backward,
    .reduce = rt_cpu_reduce,
    .gemm = rt_cpu_gemm,
    .fill_uniform = rt_cpu_fill_uniform,
    .fill_normal = rt_cpu_fill_normal,
    .fill_randint = rt_cpu_fill_randint,
    .adamw_step = rt_cpu_adamw_step,
    .sgd_step = rt_cpu_sgd_step,
    .softmax = rt_cpu_softmax,
    .softmax_backward = rt_cpu_softmax_backward,
    .cross_entropy = rt_cpu_cross_entropy,
    .cross_entropy_backward = rt_cpu_cross_entropy_backward,
    .embedding = rt_cpu_embedding,
    .embedding_backward = rt_cpu_embedding_backward,
    .layer_norm = rt_cpu_layer_norm,
    .layer_norm_backward = rt_cpu_layer_norm_backward,
    .dropout = rt_cpu_dropout,
    .reduce_with_indices = rt_cpu_reduce_with_indices,
    .index_select = rt_cpu_index_select,
    .index_add = rt_cpu_index_add,
    .index_select_convert = rt_cpu_index_select_convert,
    .rms_norm = rt_cpu_rms_norm,
    .rms_norm_backward = rt_cpu_rms_norm_backward,
    .rope = rt_cpu_rope,
    .sdpa = rt_cpu_sdpa,
    .sdpa_backward = rt_cpu_sdpa_backward,
};
