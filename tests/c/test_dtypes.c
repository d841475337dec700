/* test_dtypes.c: bit-level checks of the reduced float types and of integer exactness: bf16 and f16
 * round-to-nearest-even on store (ties, subnormals, overflow to inf, NaN) through rt_from_host and
 * rt_to_dtype; every bf16/f16 bit pattern survives a round trip through f32; bf16/f16 arithmetic
 * equals the f32 result rounded once (checked against a reference rounding written here); int64
 * arithmetic, comparisons and sums stay exact beyond 2^53. */
#include "test_util.h"

#include <stdint.h>
#include <string.h>

static float f32_of_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t bits_of_f32(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Convert one f32 (given by its bits) to dtype through the library and return the stored bits. */
static uint16_t store_bits(uint32_t f32_bits, int dtype) {
    float f = f32_of_bits(f32_bits);
    int64_t shape[1] = {1};
    rt_tensor *t = NULL;
    uint16_t out = 0xdead;
    CHECK_OK(rt_from_host(1, shape, dtype, RT_DEVICE_CPU, &f, RT_F32, &t));
    if (t) CHECK_OK(rt_to_host(t, &out, dtype));
    rt_tensor_release(t);
    return out;
}

static int is_bf16_nan(uint16_t h) {
    return (h & 0x7f80) == 0x7f80 && (h & 0x7f);
}
static int is_f16_nan(uint16_t h) {
    return (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
}

#define CHECK_BITS(got, want)                                                                      \
    do {                                                                                           \
        unsigned g_ = (got), w_ = (want);                                                          \
        if (g_ != w_) {                                                                            \
            fprintf(stderr, "%s:%d: %s = 0x%04x, expected 0x%04x\n", __FILE__, __LINE__, #got, g_, \
                    w_);                                                                           \
            g_checks_failed++;                                                                     \
            g_cur_failed++;                                                                        \
        }                                                                                          \
    } while (0)

static void test_bf16_rounding(void) {
    CHECK_BITS(store_bits(0x3f800000u, RT_BF16), 0x3f80); /* 1.0 */
    CHECK_BITS(store_bits(0x3f808000u, RT_BF16), 0x3f80); /* tie, even below */
    CHECK_BITS(store_bits(0x3f818000u, RT_BF16), 0x3f82); /* tie, odd below: up */
    CHECK_BITS(store_bits(0x3f808001u, RT_BF16), 0x3f81); /* just above the tie */
    CHECK_BITS(store_bits(0x3f807fffu, RT_BF16), 0x3f80); /* just below the tie */
    CHECK_BITS(store_bits(0xbf818000u, RT_BF16), 0xbf82); /* negative tie */
    CHECK_BITS(store_bits(0x7f7fffffu, RT_BF16), 0x7f80); /* FLT_MAX overflows to inf */
    CHECK_BITS(store_bits(0x7f7f8000u, RT_BF16), 0x7f80); /* tie at the top: even is inf */
    CHECK_BITS(store_bits(0x7f7f7fffu, RT_BF16), 0x7f7f); /* largest finite stays */
    CHECK_BITS(store_bits(0x7f800000u, RT_BF16), 0x7f80); /* inf */
    CHECK_BITS(store_bits(0xff800000u, RT_BF16), 0xff80); /* -inf */
    CHECK_BITS(store_bits(0x80000000u, RT_BF16), 0x8000); /* -0 */
    CHECK_BITS(store_bits(0x00008000u, RT_BF16), 0x0000); /* subnormal tie to even (0) */
    CHECK_BITS(store_bits(0x00018000u, RT_BF16), 0x0002); /* subnormal tie to even (2) */
    CHECK_BITS(store_bits(0x80018000u, RT_BF16), 0x8002);
    CHECK_BITS(store_bits(0x00010001u, RT_BF16), 0x0001);
    CHECK(is_bf16_nan(store_bits(0x7fc00000u, RT_BF16)));
    CHECK(is_bf16_nan(store_bits(0x7f800001u, RT_BF16))); /* signalling NaN with low bits only */
    CHECK(is_bf16_nan(store_bits(0xffffffffu, RT_BF16)));
    CHECK(store_bits(0xffc00000u, RT_BF16) & 0x8000); /* NaN keeps its sign */
}

static void test_f16_rounding(void) {
    CHECK_BITS(store_bits(0x3f800000u, RT_F16), 0x3c00);          /* 1.0 */
    CHECK_BITS(store_bits(0x3f801000u, RT_F16), 0x3c00);          /* 1 + 2^-11: tie to even */
    CHECK_BITS(store_bits(0x3f803000u, RT_F16), 0x3c02);          /* 1 + 3*2^-11: tie up */
    CHECK_BITS(store_bits(0x3f801001u, RT_F16), 0x3c01);          /* above the tie */
    CHECK_BITS(store_bits(bits_of_f32(65504.f), RT_F16), 0x7bff); /* max half */
    CHECK_BITS(store_bits(0x477fefffu, RT_F16), 0x7bff);          /* just below 65520 */
    CHECK_BITS(store_bits(0x477ff000u, RT_F16), 0x7c00);          /* 65520: tie to even = inf */
    CHECK_BITS(store_bits(bits_of_f32(1e6f), RT_F16), 0x7c00);
    CHECK_BITS(store_bits(bits_of_f32(-1e6f), RT_F16), 0xfc00);
    CHECK_BITS(store_bits(0x7f800000u, RT_F16), 0x7c00);
    CHECK_BITS(store_bits(0x33800000u, RT_F16), 0x0001); /* 2^-24: smallest subnormal */
    CHECK_BITS(store_bits(0x33000000u, RT_F16), 0x0000); /* 2^-25: tie to even (0) */
    CHECK_BITS(store_bits(0x33000001u, RT_F16), 0x0001); /* above the tie */
    CHECK_BITS(store_bits(0x33c00000u, RT_F16), 0x0002); /* 1.5 * 2^-24: tie to even (2) */
    CHECK_BITS(store_bits(0xb3c00000u, RT_F16), 0x8002);
    CHECK_BITS(store_bits(0x387fc000u, RT_F16), 0x03ff); /* largest subnormal */
    CHECK_BITS(store_bits(0x387ff000u, RT_F16), 0x0400); /* rounds up into the normals */
    CHECK_BITS(store_bits(0x38800000u, RT_F16), 0x0400); /* 2^-14: smallest normal */
    CHECK_BITS(store_bits(0x2f800000u, RT_F16), 0x0000); /* far below: 0 */
    CHECK_BITS(store_bits(0xaf800000u, RT_F16), 0x8000); /* -tiny: -0 */
    CHECK_BITS(store_bits(0x80000000u, RT_F16), 0x8000);
    CHECK(is_f16_nan(store_bits(0x7fc00000u, RT_F16)));
    CHECK(is_f16_nan(store_bits(0x7f800001u, RT_F16)));
}

/* Every 16-bit pattern of bf16 and f16 comes back unchanged from f32 (NaNs stay NaN). */
static void test_roundtrip_all_patterns(void) {
    static uint16_t src[65536], back[65536];
    static float wide[65536];
    for (int i = 0; i < 65536; i++)
        src[i] = (uint16_t)i;
    int64_t shape[1] = {65536};
    int dts[2] = {RT_BF16, RT_F16};
    for (int k = 0; k < 2; k++) {
        int dt = dts[k];
        rt_tensor *h = NULL, *f = NULL, *h2 = NULL;
        CHECK_OK(rt_from_host(1, shape, dt, RT_DEVICE_CPU, src, dt, &h));
        CHECK_OK(rt_to_dtype(h, RT_F32, &f));
        CHECK_OK(rt_to_dtype(f, dt, &h2));
        CHECK_OK(rt_to_host(f, wide, RT_F32));
        CHECK_OK(rt_to_host(h2, back, dt));
        int bad = 0;
        for (int i = 0; i < 65536; i++) {
            int nan = dt == RT_BF16 ? is_bf16_nan(src[i]) : is_f16_nan(src[i]);
            if (nan)
                bad += !(wide[i] != wide[i]) ||
                       !(dt == RT_BF16 ? is_bf16_nan(back[i]) : is_f16_nan(back[i]));
            else
                bad += back[i] != src[i];
        }
        if (bad) fprintf(stderr, "%s: %d patterns did not round-trip\n", rt_dtype_name(dt), bad);
        CHECK(bad == 0);
        /* spot values of the widening */
        if (dt == RT_F16) {
            CHECK(wide[0x3c00] == 1.0f);
            CHECK(wide[0x0001] == 5.9604644775390625e-08f);
            CHECK(wide[0x7bff] == 65504.f);
            CHECK(wide[0xfc00] == -INFINITY);
        } else {
            CHECK(wide[0x3f80] == 1.0f);
            CHECK(wide[0x0001] == f32_of_bits(0x00010000u));
        }
        rt_tensor_release(h);
        rt_tensor_release(f);
        rt_tensor_release(h2);
    }
}

/* Reference RNE from f32 to bf16 / f16 written independently of the library (via double math on
 * the exact value: pick the nearer of the two neighbours, ties to the even one). */
static uint16_t ref_round(float x, int dtype) {
    /* search the 16-bit pattern space for the nearest representable value (monotone in magnitude)
     */
    if (x != x) return dtype == RT_BF16 ? 0x7fc0 : 0x7e00;
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    double a = fabs((double)x);
    uint16_t lo = 0, hi = dtype == RT_BF16 ? 0x7f80 : 0x7c00; /* +0 .. +inf */
    /* values as double */
    int64_t shape[1] = {1};
    (void)shape;
    while (hi - lo > 1) { /* largest pattern with value <= a */
        uint16_t mid = (uint16_t)((lo + hi) / 2);
        double v;
        if (dtype == RT_BF16) {
            v = f32_of_bits((uint32_t)mid << 16);
        } else {
            int e = (mid >> 10) & 31, m = mid & 1023;
            v = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
        }
        if (v <= a)
            lo = mid;
        else
            hi = mid;
    }
    double vlo, vhi;
    if (dtype == RT_BF16) {
        vlo = f32_of_bits((uint32_t)lo << 16);
        vhi = f32_of_bits((uint32_t)(lo + 1) << 16);
        if (lo + 1 == 0x7f80) vhi = ldexp(1.0, 128); /* the next step past the largest finite */
    } else {
        int e = (lo >> 10) & 31, m = lo & 1023;
        vlo = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
        int e2 = ((lo + 1) >> 10) & 31, m2 = (lo + 1) & 1023;
        vhi = e2 == 31 ? 65536.0 : (e2 ? ldexp(1024 + m2, e2 - 25) : ldexp(m2, -24));
    }
    if (a == vlo) return sign | lo;
    double dl = a - vlo, dh = vhi - a;
    uint16_t r = dl < dh ? lo : dh < dl ? (uint16_t)(lo + 1) : ((lo & 1) ? (uint16_t)(lo + 1) : lo);
    return sign | r;
}

static void test_reduced_arithmetic_rounds_once(void) {
    enum { N = 4096 };
    static float af[N], bf[N];
    static uint16_t out[N];
    rt_manual_seed(11);
    int64_t shape[1] = {N};
    int dts[2] = {RT_BF16, RT_F16};
    int ops[4] = {RT_ADD, RT_SUB, RT_MUL, RT_DIV};
    for (int k = 0; k < 2; k++) {
        int dt = dts[k];
        rt_tensor *a = NULL, *b = NULL;
        CHECK_OK(rt_randn(1, shape, dt, RT_DEVICE_CPU, &a));
        CHECK_OK(rt_randn(1, shape, dt, RT_DEVICE_CPU, &b));
        CHECK_OK(rt_to_host(a, af, RT_F32));
        CHECK_OK(rt_to_host(b, bf, RT_F32));
        for (int o = 0; o < 4; o++) {
            rt_tensor *c = NULL;
            CHECK_OK(rt_binary(ops[o], a, b, &c));
            CHECK(rt_tensor_meta_of(c)->dtype == dt);
            CHECK_OK(rt_to_host(c, out, dt));
            int bad = 0;
            for (int i = 0; i < N; i++) {
                float x = af[i], y = bf[i];
                float r = ops[o] == RT_ADD   ? x + y
                          : ops[o] == RT_SUB ? x - y
                          : ops[o] == RT_MUL ? x * y
                                             : x / y;
                if (out[i] != ref_round(r, dt)) {
                    if (bad < 3)
                        fprintf(stderr, "%s op %d: %a, %a -> 0x%04x, expected 0x%04x\n",
                                rt_dtype_name(dt), ops[o], (double)x, (double)y, out[i],
                                ref_round(r, dt));
                    bad++;
                }
            }
            CHECK(bad == 0);
            rt_tensor_release(c);
        }
        /* and with a scalar (the scalar is taken as f32, like PyTorch's opmath) */
        rt_tensor *c = NULL;
        CHECK_OK(rt_binary_scalar(RT_MUL, a, 0.1, 0, &c));
        CHECK_OK(rt_to_host(c, out, dt));
        int bad = 0;
        for (int i = 0; i < N; i++)
            bad += out[i] != ref_round(af[i] * 0.1f, dt);
        CHECK(bad == 0);
        rt_tensor_release(c);
        rt_tensor_release(a);
        rt_tensor_release(b);
    }
}

/* 2^53 + 1 is not a double; int64 paths must keep it. */
static void test_int64_exact(void) {
    int64_t big = ((int64_t)1 << 53) + 1;
    int64_t av[3] = {big, -big, INT64_MAX - 1}, bv[3] = {1, 2, 1}, out[3];
    int64_t shape[1] = {3};
    rt_tensor *a = NULL, *b = NULL, *c = NULL;
    CHECK_OK(rt_from_host(1, shape, RT_I64, RT_DEVICE_CPU, av, RT_I64, &a));
    CHECK_OK(rt_from_host(1, shape, RT_I64, RT_DEVICE_CPU, bv, RT_I64, &b));
    CHECK_OK(rt_to_host(a, out, RT_I64));
    CHECK(out[0] == big && out[1] == -big && out[2] == INT64_MAX - 1);
    CHECK_OK(rt_binary(RT_ADD, a, b, &c));
    CHECK_OK(rt_to_host(c, out, RT_I64));
    CHECK(out[0] == big + 1 && out[1] == -big + 2 && out[2] == INT64_MAX);
    rt_tensor_release(c);
    CHECK_OK(rt_binary(RT_MUL, a, b, &c));
    CHECK_OK(rt_to_host(c, out, RT_I64));
    CHECK(out[0] == big && out[1] == -2 * big);
    rt_tensor_release(c);
    CHECK_OK(rt_binary(RT_SUB, a, b, &c));
    CHECK_OK(rt_to_host(c, out, RT_I64));
    CHECK(out[0] == big - 1 && out[1] == -big - 2);
    rt_tensor_release(c);
    /* with a scalar */
    CHECK_OK(rt_binary_scalar(RT_ADD, a, 1.0, 0, &c));
    CHECK_OK(rt_to_host(c, out, RT_I64));
    CHECK(out[0] == big + 1 && out[2] == INT64_MAX);
    rt_tensor_release(c);
    CHECK_OK(rt_binary_scalar(RT_SUB, a, 3.0, 1, &c)); /* 3 - a */
    CHECK_OK(rt_to_host(c, out, RT_I64));
    CHECK(out[0] == 3 - big && out[1] == 3 + big);
    rt_tensor_release(c);
    /* comparisons see the last bit */
    int64_t pv[3] = {big - 1, -big, INT64_MAX - 2};
    rt_tensor *p = NULL;
    uint8_t eq[3];
    CHECK_OK(rt_from_host(1, shape, RT_I64, RT_DEVICE_CPU, pv, RT_I64, &p));
    CHECK_OK(rt_binary(RT_EQ, a, p, &c));
    CHECK_OK(rt_to_host(c, eq, RT_BOOL));
    CHECK(eq[0] == 0 && eq[1] == 1 && eq[2] == 0);
    rt_tensor_release(c);
    CHECK_OK(rt_binary(RT_GT, a, p, &c));
    CHECK_OK(rt_to_host(c, eq, RT_BOOL));
    CHECK(eq[0] == 1 && eq[1] == 0 && eq[2] == 1);
    rt_tensor_release(c);
    /* sum and max over int64 */
    rt_tensor *s = NULL;
    CHECK_OK(rt_reduce(RT_SUM, p, 0, NULL, 0, &s));
    int64_t sv;
    CHECK_OK(rt_to_host(s, &sv, RT_I64));
    CHECK(sv == (big - 1) + (-big) + (INT64_MAX - 2));
    CHECK(rt_tensor_meta_of(s)->dtype == RT_I64);
    rt_tensor_release(s);
    CHECK_OK(rt_reduce(RT_MAX, a, 0, NULL, 0, &s));
    CHECK_OK(rt_to_host(s, &sv, RT_I64));
    CHECK(sv == INT64_MAX - 1);
    rt_tensor_release(s);
    /* conversion i64 -> i32 keeps the low bits, i64 -> f64 rounds */
    rt_tensor *i32 = NULL;
    int32_t iv[3];
    CHECK_OK(rt_to_dtype(a, RT_I32, &i32));
    CHECK_OK(rt_to_host(i32, iv, RT_I32));
    CHECK(iv[0] == 1);
    rt_tensor_release(i32);
    rt_tensor_release(p);
    rt_tensor_release(a);
    rt_tensor_release(b);
}

/* Conversions between every pair of dtypes on small exact values. */
static void test_all_pairs(void) {
    double src[4] = {0, 1, 2, 3};
    int64_t shape[1] = {4};
    for (int from = 0; from < RT_NUM_DTYPES; from++)
        for (int to = 0; to < RT_NUM_DTYPES; to++) {
            rt_tensor *a = NULL, *b = NULL;
            CHECK_OK(rt_from_host(1, shape, from, RT_DEVICE_CPU, src, RT_F64, &a));
            CHECK_OK(rt_to_dtype(a, to, &b));
            double back[4];
            CHECK_OK(rt_to_host(b, back, RT_F64));
            for (int i = 0; i < 4; i++) {
                double want = src[i];
                if (from == RT_BOOL || to == RT_BOOL) want = src[i] != 0;
                if (back[i] != want) {
                    fprintf(stderr, "%s -> %s: element %d is %g, expected %g\n",
                            rt_dtype_name(from), rt_dtype_name(to), i, back[i], want);
                    CHECK(0);
                }
            }
            rt_tensor_release(a);
            rt_tensor_release(b);
        }
}

static void test_no_leaks(void) {
    CHECK(rt_live_tensors() == 0);
}

int main(void) {
    RUN(test_bf16_rounding);
    RUN(test_f16_rounding);
    RUN(test_roundtrip_all_patterns);
    RUN(test_reduced_arithmetic_rounds_once);
    RUN(test_int64_exact);
    RUN(test_all_pairs);
    RUN(test_no_leaks);
    return test_summary();
}
