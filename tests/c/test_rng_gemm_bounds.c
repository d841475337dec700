/* test_rng_gemm_bounds.c: review regressions for randint's integer range (bounds beyond 2^53 must
 * not round through double: randint(2^53, 2^53 + 1) divided by a zero range and crashed; a range
 * wider than INT64_MAX must draw over all of it) and for the CPU GEMM refusing dims above INT_MAX
 * (they reached cblas truncated to int) with a clear error. */
#include "test_util.h"

#include <limits.h>
#include <stdint.h>

/* The CPU GEMM entry (kernels/cpu/cpu_kernels.h; that header needs OpenMP flags this test lacks).
 */
int rt_cpu_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                const void *a, int64_t lda, int64_t stride_a, const void *b, int64_t ldb,
                int64_t stride_b, double beta, void *c, int64_t ldc, int64_t stride_c,
                int64_t batch, int dtype);

static void randint_beyond_2p53(void) {
    int64_t shape[1] = {64}, lo = (int64_t)1 << 53, v[64];
    rt_tensor *t = NULL;
    CHECK_OK(rt_randint(lo, lo + 1, 1, shape, RT_I64, RT_DEVICE_CPU, &t));
    if (!t) return;
    CHECK_OK(rt_to_host(t, v, RT_I64));
    for (int i = 0; i < 64; i++)
        CHECK(v[i] == lo);
    rt_tensor_release(t);
    /* [2^53 + 1, 2^53 + 3): both values must occur, never 2^53 or 2^53 + 4 */
    CHECK_OK(rt_randint(lo + 1, lo + 3, 1, shape, RT_I64, RT_DEVICE_CPU, &t));
    if (!t) return;
    CHECK_OK(rt_to_host(t, v, RT_I64));
    int seen1 = 0, seen2 = 0;
    for (int i = 0; i < 64; i++) {
        CHECK(v[i] == lo + 1 || v[i] == lo + 2);
        seen1 |= v[i] == lo + 1;
        seen2 |= v[i] == lo + 2;
    }
    CHECK(seen1 && seen2);
    rt_tensor_release(t);
}

static void randint_full_int64_range(void) {
    int64_t shape[1] = {256}, v[256];
    rt_tensor *t = NULL;
    CHECK_OK(rt_randint(INT64_MIN, INT64_MAX, 1, shape, RT_I64, RT_DEVICE_CPU, &t));
    if (!t) return;
    CHECK_OK(rt_to_host(t, v, RT_I64));
    int neg = 0, pos = 0;
    for (int i = 0; i < 256; i++) {
        CHECK(v[i] != INT64_MAX);
        neg += v[i] < 0;
        pos += v[i] > 0;
    }
    CHECK(neg > 64 && pos > 64); /* spread over the whole range, not a wrapped sliver */
    rt_tensor_release(t);
}

static void randint_out_of_dtype_range(void) {
    int64_t shape[1] = {4};
    rt_tensor *t = NULL;
    CHECK(rt_randint(0, 300, 1, shape, RT_U8, RT_DEVICE_CPU, &t) == RT_ERR_INVALID);
    CHECK(t == NULL);
    CHECK_MSG_HAS("uint8");
    CHECK(rt_randint(-1, 2, 1, shape, RT_U8, RT_DEVICE_CPU, &t) == RT_ERR_INVALID);
    CHECK(rt_randint(0, ((int64_t)1 << 31) + 1, 1, shape, RT_I32, RT_DEVICE_CPU, &t) ==
          RT_ERR_INVALID);
    CHECK(rt_randint(0, 3, 1, shape, RT_BOOL, RT_DEVICE_CPU, &t) == RT_ERR_INVALID);
    /* the edges themselves are fine */
    CHECK_OK(rt_randint(0, 256, 1, shape, RT_U8, RT_DEVICE_CPU, &t));
    rt_tensor_release(t);
    t = NULL;
    CHECK_OK(rt_randint(INT32_MIN, (int64_t)INT32_MAX + 1, 1, shape, RT_I32, RT_DEVICE_CPU, &t));
    rt_tensor_release(t);
    t = NULL;
    CHECK_OK(rt_randint(0, 2, 1, shape, RT_BOOL, RT_DEVICE_CPU, &t));
    rt_tensor_release(t);
}

/* Dims are refused before cblas sees them, so no memory behind the pointers is touched. */
static void gemm_dims_above_int_max(void) {
    float a[4] = {0}, b[4] = {0}, c[4] = {0};
    int64_t big = (int64_t)INT_MAX + 1;
    CHECK(rt_cpu_gemm(0, 0, big, 1, 1, 1.0, a, 1, 0, b, 1, 0, 0.0, c, 1, 0, 1, RT_F32) ==
          RT_ERR_INVALID);
    CHECK_MSG_HAS("INT_MAX");
    CHECK(rt_cpu_gemm(0, 0, 1, 1, big + 1, 1.0, a, big + 1, 0, b, 1, 0, 0.0, c, 1, 0, 1, RT_F64) ==
          RT_ERR_INVALID);
    CHECK(rt_cpu_gemm(0, 0, 1, 1, 1, 1.0, a, big, 0, b, 1, 0, 0.0, c, 1, 0, 1, RT_BF16) ==
          RT_ERR_INVALID);
    /* small ones still work */
    float x[4] = {1, 2, 3, 4}, y[4] = {1, 0, 0, 1}, z[4] = {0};
    CHECK_OK(rt_cpu_gemm(0, 0, 2, 2, 2, 1.0, x, 2, 0, y, 2, 0, 0.0, z, 2, 0, 1, RT_F32));
    CHECK(z[0] == 1 && z[1] == 2 && z[2] == 3 && z[3] == 4);
}

int main(void) {
    RUN(randint_beyond_2p53);
    RUN(randint_full_int64_range);
    RUN(randint_out_of_dtype_range);
    RUN(gemm_dims_above_int_max);
    return test_summary();
}
