/* host_stream.c: the host's own memory bandwidth, to put issue 6's host AdamW figures beside the
 * machine's limit (a STREAM-style measurement: McCalpin's copy, scale, add and triad on f32
 * arrays, plus the access pattern of an f32 AdamW step: four arrays read, three written, and of the
 * bf16-state step). Not a test: prints GB/s counting the bytes the loop names (a store that misses
 * the cache also reads its line first unless the compiler emits streaming stores, so "named" bytes
 * understate the traffic of the write-allocate kind).
 *
 * Build: cmake --build build --target bench_host_stream
 * Run:   build/bin/bench_host_stream [log2 elements = 27] [reps = 10]   (OMP_NUM_THREADS threads)
 */
#define _POSIX_C_SOURCE 199309L
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

enum { COPY, SCALE, ADD, TRIAD, ADAMW4R3W, BF16STATE, READ4, NKERNEL };
static const char *names[NKERNEL] = {
    "copy", "scale", "add", "triad", "4r3w (f32 AdamW)", "4r3w bf16 states", "read 4"};
/* bytes per element each kernel names: reads + writes */
static const double bytes[NKERNEL] = {8, 8, 12, 12, 28, 20, 16};

static double run(int k, int64_t n, float *a, float *b, float *c, float *d, uint16_t *m,
                  uint16_t *v) {
    float sum = 0;
    double t0 = now();
    switch (k) {
    case COPY:
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++)
            a[i] = b[i];
        break;
    case SCALE:
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++)
            a[i] = 3.f * b[i];
        break;
    case ADD:
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++)
            a[i] = b[i] + c[i];
        break;
    case TRIAD:
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++)
            a[i] = b[i] + 3.f * c[i];
        break;
    case ADAMW4R3W: /* p, m, v updated from g: the f32 AdamW traffic without its arithmetic */
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) {
            float g = d[i], mm = 0.9f * b[i] + 0.1f * g, vv = 0.999f * c[i] + 0.001f * g * g;
            b[i] = mm, c[i] = vv, a[i] -= 1e-3f * mm / (vv + 1e-8f);
        }
        break;
    case BF16STATE: /* f32 p and g, bf16 m and v (as raw halves of f32 bit patterns) */
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) {
            union {
                uint32_t u;
                float f;
            } mm = {.u = (uint32_t)m[i] << 16}, vv = {.u = (uint32_t)v[i] << 16};
            float g = d[i];
            mm.f = 0.9f * mm.f + 0.1f * g, vv.f = 0.999f * vv.f + 0.001f * g * g;
            a[i] -= 1e-3f * mm.f / (vv.f + 1e-8f);
            m[i] = (uint16_t)(mm.u >> 16), v[i] = (uint16_t)(vv.u >> 16);
        }
        break;
    case READ4:
#pragma omp parallel for simd schedule(static) reduction(+ : sum) /* simd: may reorder the sum */
        for (int64_t i = 0; i < n; i++)
            sum += a[i] + b[i] + c[i] + d[i];
        break;
    }
    double t = now() - t0;
    if (sum == 1.2345) printf("(unlikely)\n"); /* keeps the read loop */
    return t;
}

int main(int argc, char **argv) {
    int lg = argc > 1 ? atoi(argv[1]) : 27;
    int reps = argc > 2 ? atoi(argv[2]) : 10;
    if (lg < 10 || lg > 32 || reps < 1) {
        fprintf(stderr, "usage: bench_host_stream [log2 elements 10..32] [reps]\n");
        return 2;
    }
    int64_t n = (int64_t)1 << lg;
    float *a = malloc(n * 4), *b = malloc(n * 4), *c = malloc(n * 4), *d = malloc(n * 4);
    uint16_t *m = malloc(n * 2), *v = malloc(n * 2);
    if (!a || !b || !c || !d || !m || !v) {
        fprintf(stderr, "bench_host_stream: out of memory for 2^%d elements\n", lg);
        return 1;
    }
#pragma omp parallel for schedule(static) /* first touch by the threads that use the pages */
    for (int64_t i = 0; i < n; i++) {
        a[i] = 1.f, b[i] = 2.f, c[i] = 0.5f, d[i] = 0.25f;
        m[i] = 0x3f80, v[i] = 0x3f80;
    }
    printf("host_stream: 2^%d f32 elements per array, %d threads, best of %d\n", lg,
           omp_get_max_threads(), reps);
    for (int k = 0; k < NKERNEL; k++) {
        double best = 1e30;
        for (int r = 0; r < reps + 1; r++) {
            double t = run(k, n, a, b, c, d, m, v);
            if (r > 0 && t < best) best = t; /* the first pass warms up */
        }
        printf("RESULT host_stream %-18s %7.2f ms %8.1f GB/s (%2.0f B/elem named)\n", names[k],
               best * 1e3, bytes[k] * (double)n / best / 1e9, bytes[k]);
    }
    free(a), free(b), free(c), free(d), free(m), free(v);
    return 0;
}
