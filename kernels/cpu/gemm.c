/* gemm.c: CPU matrix multiply through OpenBLAS (Debian's libopenblas) for f32 and f64; bf16/f16
 * are widened to f32, multiplied, and rounded once on store. Row-major, batched by a loop over
 * matrices (a batch stride of 0 reuses one matrix). */
#include "cpu_kernels.h"

#include <cblas.h>
#include <limits.h>
#include <stdlib.h>

static void widen(const uint16_t *src, float *dst, int64_t n, int dtype) {
    for (int64_t i = 0; i < n; i++)
        dst[i] = dtype == RT_BF16 ? rt_bf16_to_f32(src[i]) : rt_f16_to_f32(src[i]);
}

/* Number of elements a (rows x cols, leading dim ld) matrix spans in memory. */
static int64_t span(bool trans, int64_t rows, int64_t cols, int64_t ld) {
    int64_t r = trans ? cols : rows, c = trans ? rows : cols;
    return r ? (r - 1) * ld + c : 0;
}

int rt_cpu_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                const void *a, int64_t lda, int64_t stride_a, const void *b, int64_t ldb,
                int64_t stride_b, double beta, void *c, int64_t ldc, int64_t stride_c,
                int64_t batch, int dtype) {
    /* cblas takes int dims and leading dims: a larger one would reach it truncated */
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX || lda > INT_MAX || ldb > INT_MAX ||
        ldc > INT_MAX)
        return RT_ERR(RT_ERR_INVALID,
                      "matmul: CPU GEMM (cblas) takes dims up to INT_MAX (%d), got m=%lld n=%lld "
                      "k=%lld lda=%lld ldb=%lld ldc=%lld",
                      INT_MAX, (long long)m, (long long)n, (long long)k, (long long)lda,
                      (long long)ldb, (long long)ldc);
    CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
    CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
    if (dtype == RT_F32) {
        for (int64_t i = 0; i < batch; i++)
            cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, (float)alpha,
                        (const float *)a + i * stride_a, (int)lda, (const float *)b + i * stride_b,
                        (int)ldb, (float)beta, (float *)c + i * stride_c, (int)ldc);
        return RT_OK;
    }
    if (dtype == RT_F64) {
        for (int64_t i = 0; i < batch; i++)
            cblas_dgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, alpha,
                        (const double *)a + i * stride_a, (int)lda,
                        (const double *)b + i * stride_b, (int)ldb, beta,
                        (double *)c + i * stride_c, (int)ldc);
        return RT_OK;
    }
    if (dtype != RT_BF16 && dtype != RT_F16)
        return RT_ERR(RT_ERR_DTYPE, "matmul: no CPU GEMM for %s (expected a floating-point dtype)",
                      rt_dtype_name(dtype));
    int64_t na = span(trans_a, m, k, lda), nb = span(trans_b, k, n, ldb),
            nc = span(false, m, n, ldc);
    float *fa = malloc(sizeof(float) * (size_t)(na + nb + nc + 1));
    if (!fa)
        return RT_ERR(RT_ERR_OOM, "matmul: out of host memory widening %s operands",
                      rt_dtype_name(dtype));
    float *fb = fa + na, *fc = fb + nb;
    for (int64_t i = 0; i < batch; i++) {
        widen((const uint16_t *)a + i * stride_a, fa, na, dtype);
        widen((const uint16_t *)b + i * stride_b, fb, nb, dtype);
        uint16_t *ci = (uint16_t *)c + i * stride_c;
        if (beta != 0) widen(ci, fc, nc, dtype);
        cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, (float)alpha, fa, (int)lda, fb,
                    (int)ldb, (float)beta, fc, (int)ldc);
        for (int64_t r = 0; r < m; r++)
            for (int64_t j = 0; j < n; j++) {
                float v = fc[r * ldc + j];
                ci[r * ldc + j] = dtype == RT_BF16 ? rt_f32_to_bf16(v) : rt_f32_to_f16(v);
            }
    }
    free(fa);
    return RT_OK;
}
