/* autograd_profile.c: RAMTORCH_AUTOGRAD_PROFILE=1 times each backward node (its backward and the
 * accumulation of its input gradients), with the device synchronized before and after, and prints
 * the time per node name (sorted, with call counts) to stderr at the end of every backward. For
 * finding which op's backward is slow where no kernel profiler runs; the synchronizations make the
 * whole backward slower, so compare nodes with each other, not the total with an unprofiled run. */
#include "autograd_profile.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROF_MAX 128

/* one table per thread: a backward runs in the thread that called it, so two threads running
 * backwards at once each report their own nodes */
static _Thread_local struct {
    const char *name; /* node names are string literals */
    double ms;
    long calls;
} g_rows[PROF_MAX];
static _Thread_local int g_nrows;
static _Atomic int g_enabled = -1; /* from the environment, once (any thread may be first) */

int rt_autograd_profile_enabled(void) {
    if (g_enabled < 0) {
        const char *s = getenv("RAMTORCH_AUTOGRAD_PROFILE");
        g_enabled = s && *s && strcmp(s, "0") != 0;
    }
    return g_enabled;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

double rt_autograd_profile_begin(int device) {
    if (device >= 0) rt_cuda_synchronize(device);
    return now_ms();
}

void rt_autograd_profile_end(const char *name, int device, double t0) {
    if (device >= 0) rt_cuda_synchronize(device);
    double ms = now_ms() - t0;
    int i = 0;
    while (i < g_nrows && g_rows[i].name != name && strcmp(g_rows[i].name, name) != 0)
        i++;
    if (i == g_nrows) {
        if (g_nrows == PROF_MAX) return;
        g_rows[g_nrows].name = name;
        g_rows[g_nrows].ms = 0;
        g_rows[g_nrows++].calls = 0;
    }
    g_rows[i].ms += ms;
    g_rows[i].calls++;
}

static int by_time(const void *a, const void *b) {
    double x = ((const __typeof__(g_rows[0]) *)a)->ms, y = ((const __typeof__(g_rows[0]) *)b)->ms;
    return x < y ? 1 : x > y ? -1 : 0;
}

void rt_autograd_profile_report(void) {
    if (g_nrows == 0) return;
    qsort(g_rows, (size_t)g_nrows, sizeof g_rows[0], by_time);
    double total = 0;
    for (int i = 0; i < g_nrows; i++)
        total += g_rows[i].ms;
    fprintf(stderr, "autograd profile: %.2f ms in %d node kinds (device synchronized per node)\n",
            total, g_nrows);
    for (int i = 0; i < g_nrows; i++)
        fprintf(stderr, "  %-28s %9.3f ms %6ld calls %8.3f ms/call\n", g_rows[i].name, g_rows[i].ms,
                g_rows[i].calls, g_rows[i].ms / (double)g_rows[i].calls);
    g_nrows = 0;
}
