/* cpu_gemm.c: f32 GEMM through rt_matmul against cblas_sgemm called directly (issue 2, Performance:
 * rt_matmul within 80% of OpenBLAS on the same machine). Not a test: prints GFLOP/s for both and
 * their ratio, best of R repetitions after a warm-up.
 *
 * Build: cmake --build build --target bench_cpu_gemm
 * Run:   build/bin/bench_cpu_gemm [n=1024] [reps=10] [threads=all]
 */
#define _POSIX_C_SOURCE 199309L
#include "ramtorch.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int die(const char *what) {
    fprintf(stderr, "bench_cpu_gemm: %s: %s\n", what, rt_last_error());
    return 1;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1024;
    int reps = argc > 2 ? atoi(argv[2]) : 10;
    if (argc > 3 && rt_set_num_threads(atoi(argv[3])) != 0) return die("set_num_threads");
    if (n < 1 || reps < 1) {
        fprintf(stderr, "usage: bench_cpu_gemm [n] [reps] [threads]\n");
        return 2;
    }
    int64_t shape[2] = {n, n};
    rt_tensor *a, *b, *c = NULL;
    rt_manual_seed(0);
    if (rt_randn(2, shape, RT_F32, RT_DEVICE_CPU, &a) ||
        rt_randn(2, shape, RT_F32, RT_DEVICE_CPU, &b))
        return die("randn");
    float *pa = rt_tensor_data_ptr(a), *pb = rt_tensor_data_ptr(b);
    float *pc = aligned_alloc(64, sizeof(float) * (size_t)n * (size_t)n);
    if (!pc) return 1;
    double flop = 2.0 * n * (double)n * n;

    /* warm up both (thread pools, page faults) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, pa, n, pb, n, 0.f, pc, n);
    if (rt_matmul(a, b, &c)) return die("matmul");

    double best_blas = 1e30, best_rt = 1e30;
    for (int r = 0; r < reps; r++) { /* interleave so both see the same machine state */
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, pa, n, pb, n, 0.f, pc,
                    n);
        double t1 = now();
        rt_tensor_release(c);
        if (rt_matmul(a, b, &c)) return die("matmul");
        double t2 = now();
        if (t1 - t0 < best_blas) best_blas = t1 - t0;
        if (t2 - t1 < best_rt) best_rt = t2 - t1;
    }
    /* same numbers from both */
    const float *rc = rt_tensor_data_ptr(c);
    double maxdiff = 0;
    for (int64_t i = 0; i < (int64_t)n * n; i++) {
        double d = fabs((double)rc[i] - (double)pc[i]);
        if (d > maxdiff) maxdiff = d;
    }
    printf("f32 GEMM %dx%dx%d, %d threads, best of %d\n", n, n, n, rt_get_num_threads(), reps);
    printf("cblas_sgemm : %8.3f ms  %8.2f GFLOP/s\n", best_blas * 1e3, flop / best_blas * 1e-9);
    printf("rt_matmul   : %8.3f ms  %8.2f GFLOP/s\n", best_rt * 1e3, flop / best_rt * 1e-9);
    printf("ratio rt/blas: %.1f%% (target >= 80%%), max |diff| %.3g\n", 100.0 * best_blas / best_rt,
           maxdiff);
    rt_tensor_release(a);
    rt_tensor_release(b);
    rt_tensor_release(c);
    free(pc);
    return 0;
}
