/* test_util.h: a tiny check harness for the C unit tests (no dependency): CHECK, CHECK_OK (shows
 * rt_last_error on failure), CHECK_NEAR, CHECK_MSG_HAS, RUN, and a closing "N passed, N failed". */
#ifndef RT_TEST_UTIL_H
#define RT_TEST_UTIL_H

#include "ramtorch.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int g_checks_failed, g_tests_passed, g_tests_failed, g_cur_failed;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            g_checks_failed++;                                                                     \
            g_cur_failed++;                                                                        \
        }                                                                                          \
    } while (0)

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != 0) {                                                                            \
            fprintf(stderr, "%s:%d: %s returned %d: %s\n", __FILE__, __LINE__, #expr, rc_,         \
                    rt_last_error());                                                              \
            g_checks_failed++;                                                                     \
            g_cur_failed++;                                                                        \
        }                                                                                          \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        if (!(fabs(a_ - b_) <= (tol))) {                                                           \
            fprintf(stderr, "%s:%d: %s = %.17g, expected %.17g (tol %g)\n", __FILE__, __LINE__,    \
                    #a, a_, b_, (double)(tol));                                                    \
            g_checks_failed++;                                                                     \
            g_cur_failed++;                                                                        \
        }                                                                                          \
    } while (0)

#define CHECK_MSG_HAS(s)                                                                           \
    do {                                                                                           \
        if (!strstr(rt_last_error(), (s))) {                                                       \
            fprintf(stderr, "%s:%d: error message \"%s\" lacks \"%s\"\n", __FILE__, __LINE__,      \
                    rt_last_error(), (s));                                                         \
            g_checks_failed++;                                                                     \
            g_cur_failed++;                                                                        \
        }                                                                                          \
    } while (0)

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        g_cur_failed = 0;                                                                          \
        fn();                                                                                      \
        if (g_cur_failed) {                                                                        \
            g_tests_failed++;                                                                      \
            fprintf(stderr, "FAIL %s\n", #fn);                                                     \
        } else {                                                                                   \
            g_tests_passed++;                                                                      \
        }                                                                                          \
    } while (0)

static inline int test_summary(void) {
    printf("%d passed, %d failed\n", g_tests_passed, g_tests_failed);
    return g_tests_failed ? 1 : 0;
}

#endif
