/* test_host_optim.c: the fused host AdamW / SGD (runtime/host_optim.c, kernels/cpu/host_optim.c):
 * the scalar, AVX2 and AVX-512 paths agree bit for bit (f32 and bf16 state, both lerp branches,
 * weight decay on and off, maximize, SGD variants), results do not depend on the thread count,
 * the f32 path matches the generic CPU kernel (rt_adamw_step / rt_sgd_step) bit for bit,
 * stochastic rounding is deterministic and unbiased with uniform, uncorrelated random offsets, and
 * bad arguments give messages. Gradients in the dtypes the offload engine lands them in (bf16, f16)
 * give the same bits as their exact f32 widening on every path, and a bf16 parameter is the f32
 * update rounded to nearest even. */
#include "test_util.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define N (4096 * 3 + 77) /* several tiles and a partial block */

static int64_t g_shape[1] = {N};

static rt_tensor *randn_t(int dtype) {
    rt_tensor *t = NULL, *c = NULL;
    CHECK_OK(rt_randn(1, g_shape, RT_F32, RT_DEVICE_CPU, &t));
    if (dtype == RT_F32) return t;
    CHECK_OK(rt_to_dtype(t, dtype, &c));
    rt_tensor_release(t);
    return c;
}

static rt_tensor *clone_t(rt_tensor *t) {
    rt_tensor *c = NULL;
    CHECK_OK(rt_clone(t, &c));
    return c;
}

static int bits_equal(rt_tensor *a, rt_tensor *b) {
    int da = rt_tensor_meta_of(a)->dtype, db = rt_tensor_meta_of(b)->dtype;
    size_t n = (size_t)N * rt_dtype_size(da);
    return da == db && memcmp(rt_tensor_data_ptr(a), rt_tensor_data_ptr(b), n) == 0;
}

/* Run 3 AdamW steps on copies of (p, m, v) under the given path/threads; outputs in out[3]. */
static void adamw_run(rt_tensor *p0, rt_tensor *g, rt_tensor *m0, rt_tensor *v0,
                      const rt_adamw_hparams *h0, int simd, int threads, rt_tensor *out[3]) {
    CHECK_OK(rt_host_optim_set_simd(simd));
    CHECK_OK(rt_host_optim_set_threads(threads));
    out[0] = clone_t(p0);
    out[1] = clone_t(m0);
    out[2] = clone_t(v0);
    rt_adamw_hparams h = *h0;
    for (int s = 1; s <= 3; s++) {
        h.step = s;
        CHECK_OK(rt_host_adamw_step(out[0], g, out[1], out[2], NULL, &h));
    }
    rt_host_optim_set_simd(RT_SIMD_AUTO);
    rt_host_optim_set_threads(0);
}

static void release3(rt_tensor *t[3]) {
    for (int i = 0; i < 3; i++)
        rt_tensor_release(t[i]);
}

static int simd_available(int level) {
    int ok = rt_host_optim_set_simd(level) == RT_OK;
    rt_host_optim_set_simd(RT_SIMD_AUTO);
    rt_clear_error();
    return ok;
}

static void test_adamw_paths_agree(void) {
    rt_manual_seed(7);
    for (int sd = 0; sd < 2; sd++) {
        int st = sd ? RT_BF16 : RT_F32;
        rt_tensor *p = randn_t(RT_F32), *g = randn_t(RT_F32);
        rt_tensor *m = randn_t(st), *v0 = randn_t(RT_F32), *v = NULL;
        CHECK_OK(rt_binary(RT_MUL, v0, v0, &v)); /* exp_avg_sq >= 0 */
        if (st == RT_BF16) {
            rt_tensor *c;
            CHECK_OK(rt_to_dtype(v, RT_BF16, &c));
            rt_tensor_release(v);
            v = c;
        }
        rt_adamw_hparams hs[3] = {
            {1e-2, 0.9, 0.999, 1e-8, 1e-2, 1, 11, 0},
            {3e-3, 0.3, 0.99, 1e-6, 0.0, 1, 12, 1}, /* the other lerp branch, maximize, no decay */
            {0.0, 0.0, 0.0, 0.0, 0.5, 1, 13, 0},    /* degenerate betas */
        };
        for (int k = 0; k < 3; k++) {
            rt_tensor *ref[3], *alt[3];
            adamw_run(p, g, m, v, &hs[k], RT_SIMD_SCALAR, 1, ref);
            for (int level = RT_SIMD_AVX2; level <= RT_SIMD_AVX512; level++) {
                if (!simd_available(level)) continue;
                for (int th = 1; th <= 3; th++) {
                    adamw_run(p, g, m, v, &hs[k], level, th, alt);
                    for (int i = 0; i < 3; i++)
                        if (!bits_equal(ref[i], alt[i])) {
                            fprintf(stderr,
                                    "state dtype %s, hparams %d, simd %d, threads %d, "
                                    "output %d differs\n",
                                    rt_dtype_name(st), k, level, th, i);
                            CHECK(0);
                        }
                    release3(alt);
                }
            }
            /* scalar with 2 threads */
            adamw_run(p, g, m, v, &hs[k], RT_SIMD_SCALAR, 2, alt);
            for (int i = 0; i < 3; i++)
                CHECK(bits_equal(ref[i], alt[i]));
            release3(alt);
            release3(ref);
        }
        rt_tensor_release(p);
        rt_tensor_release(g);
        rt_tensor_release(m);
        rt_tensor_release(v);
        rt_tensor_release(v0);
    }
}

/* The f32 host path is the generic CPU kernel's arithmetic, bit for bit. */
static void test_adamw_matches_generic_kernel(void) {
    rt_manual_seed(8);
    rt_tensor *p = randn_t(RT_F32), *g = randn_t(RT_F32), *z = NULL;
    CHECK_OK(rt_full(1, g_shape, 0.0, RT_F32, RT_DEVICE_CPU, &z));
    rt_tensor *p1 = clone_t(p), *m1 = clone_t(z), *v1 = clone_t(z);
    rt_tensor *p2 = clone_t(p), *m2 = clone_t(z), *v2 = clone_t(z);
    rt_adamw_hparams h = {1e-3, 0.9, 0.999, 1e-8, 1e-2, 1, 5, 0};
    for (int s = 1; s <= 5; s++) {
        h.step = s;
        CHECK_OK(rt_host_adamw_step(p1, g, m1, v1, NULL, &h));
        CHECK_OK(rt_adamw_step(p2, g, m2, v2, 1e-3, 0.9, 0.999, 1e-8, 1e-2, s));
    }
    CHECK(bits_equal(p1, p2));
    CHECK(bits_equal(m1, m2));
    CHECK(bits_equal(v1, v2));
    rt_tensor *t[] = {p, g, z, p1, m1, v1, p2, m2, v2};
    for (int i = 0; i < 9; i++)
        rt_tensor_release(t[i]);
}

static void test_sgd_paths_agree(void) {
    rt_manual_seed(9);
    rt_tensor *p = randn_t(RT_F32), *g = randn_t(RT_F32), *b = randn_t(RT_F32);
    rt_sgd_hparams hs[4] = {
        {0.1, 0.0, 0.0, 0.0, 0, 0, 0},
        {0.1, 0.9, 0.1, 1e-2, 0, 0, 1},
        {0.05, 0.9, 0.0, 1e-3, 1, 0, 0},
        {0.05, 0.8, 0.0, 0.0, 0, 1, 0},
    };
    for (int k = 0; k < 4; k++) {
        rt_tensor *rp = clone_t(p), *rb = clone_t(b), *gp = clone_t(p), *gb = clone_t(b);
        CHECK_OK(rt_host_optim_set_simd(RT_SIMD_SCALAR));
        CHECK_OK(rt_host_sgd_step(rp, g, rb, NULL, &hs[k]));
        /* the generic kernel */
        CHECK_OK(rt_sgd_step(gp, g, hs[k].momentum != 0 ? gb : NULL, hs[k].lr, hs[k].momentum,
                             hs[k].dampening, hs[k].weight_decay, hs[k].nesterov,
                             hs[k].first_step));
        if (!hs[k].maximize) {
            CHECK(bits_equal(rp, gp));
            CHECK(bits_equal(rb, gb));
        }
        for (int level = RT_SIMD_AVX2; level <= RT_SIMD_AVX512; level++) {
            if (!simd_available(level)) continue;
            for (int th = 1; th <= 2; th++) {
                rt_tensor *ap = clone_t(p), *ab = clone_t(b);
                CHECK_OK(rt_host_optim_set_simd(level));
                CHECK_OK(rt_host_optim_set_threads(th));
                CHECK_OK(rt_host_sgd_step(ap, g, ab, NULL, &hs[k]));
                CHECK(bits_equal(rp, ap));
                CHECK(bits_equal(rb, ab));
                rt_tensor_release(ap);
                rt_tensor_release(ab);
            }
        }
        rt_host_optim_set_simd(RT_SIMD_AUTO);
        rt_host_optim_set_threads(0);
        rt_tensor *t[] = {rp, rb, gp, gb};
        for (int i = 0; i < 4; i++)
            rt_tensor_release(t[i]);
    }
    rt_tensor_release(p);
    rt_tensor_release(g);
    rt_tensor_release(b);
}

/* Stochastic rounding: exp_avg after one step with beta1 = 0 is the gradient itself; stored in
 * bf16 its mean over many copies of one value is that value (round to nearest would be off by
 * up to half a bf16 ulp), and the same seed and step give the same bits. */
static void test_stochastic_rounding_unbiased(void) {
    const float x = 1.0f + 3.0f / 1024.0f; /* between bf16 neighbours 1 + 2^-7 * {0, 1} */
    rt_tensor *p, *g, *m, *v, *m2;
    CHECK_OK(rt_full(1, g_shape, 0.0, RT_F32, RT_DEVICE_CPU, &p));
    CHECK_OK(rt_full(1, g_shape, x, RT_F32, RT_DEVICE_CPU, &g));
    CHECK_OK(rt_full(1, g_shape, 0.0, RT_BF16, RT_DEVICE_CPU, &m));
    CHECK_OK(rt_full(1, g_shape, 0.0, RT_BF16, RT_DEVICE_CPU, &v));
    rt_adamw_hparams h = {0.0, 0.0, 0.5, 1e-8, 0.0, 1, 99, 0};
    CHECK_OK(rt_host_adamw_step(p, g, m, v, NULL, &h));
    m2 = clone_t(m);
    float *buf = malloc(sizeof(float) * N);
    CHECK_OK(rt_to_host(m, buf, RT_F32));
    double mean = 0;
    for (int i = 0; i < N; i++)
        mean += buf[i];
    mean /= N;
    /* std of the mean: ulp * sqrt(p (1 - p) / N) with ulp 2^-7 */
    CHECK_NEAR(mean, x, 5 * (1.0 / 128) * sqrt(0.25 / N));
    CHECK(fabs(mean - x) < fabs(1.0 + 4.0 / 1024.0 - x) / 4); /* far better than RNE's bias */
    /* deterministic: the same step again from the same state */
    CHECK_OK(rt_fill_(m, 0.0));
    CHECK_OK(rt_fill_(v, 0.0));
    CHECK_OK(rt_host_adamw_step(p, g, m, v, NULL, &h));
    CHECK(bits_equal(m, m2));
    free(buf);
    rt_tensor *t[] = {p, g, m, v, m2};
    for (int i = 0; i < 5; i++)
        rt_tensor_release(t[i]);
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Round-up statistics of one state half over S steps: ups[s * N + i] is 1 when element i rounded up
 * at step s; q the probability stochastic rounding gives (the value's distance above the bf16 below
 * it, in ulps). Checks the rate, that each element's count over the steps has the binomial
 * variance (no correlation across steps), that neighbours round up together at rate q^2 and that
 * the per-step totals have the binomial variance (no correlation across the tensor). */
static void check_round_ups(const unsigned char *ups, int S, double q, const char *what) {
    double total = 0, pairs = 0, var_el = 0, var_step = 0;
    for (int i = 0; i < N; i++) {
        int c = 0;
        for (int s = 0; s < S; s++) {
            c += ups[(size_t)s * N + i];
            if (i + 1 < N) pairs += ups[(size_t)s * N + i] & ups[(size_t)s * N + i + 1];
        }
        total += c;
        var_el += (c - S * q) * (c - S * q);
    }
    for (int s = 0; s < S; s++) {
        int c = 0;
        for (int i = 0; i < N; i++)
            c += ups[(size_t)s * N + i];
        var_step += (c - N * q) * (c - N * q);
    }
    double trials = (double)N * S, rate = total / trials, pair_rate = pairs / ((double)(N - 1) * S);
    double r_el = var_el / N / (S * q * (1 - q)), r_step = var_step / S / (N * q * (1 - q));
    if (!(fabs(rate - q) < 5 * sqrt(q * (1 - q) / trials) &&
          fabs(pair_rate - q * q) < 6 * sqrt(q * q * (1 - q * q) / trials) + 1e-9 && r_el > 0.8 &&
          r_el < 1.25 && r_step > 0.4 && r_step < 2.2)) {
        fprintf(stderr,
                "%s, q %.6f: rate %.6f, neighbour pairs %.6f (q^2 %.6f), per-element variance "
                "ratio %.3f, per-step variance ratio %.3f\n",
                what, q, rate, pair_rate, q * q, r_el, r_step);
        CHECK(0);
    }
}

/* The 16 random bits behind each rounding are uniform and independent: a value a fraction q of a
 * bf16 ulp above a bf16 number rounds up with probability q, in exp_avg (the low 16 bits of an
 * element's draw) and exp_avg_sq (the high 16), without correlation across steps (each step has
 * its own key), neighbouring elements or the tensor. q from 2^-8 to 1 - 2^-7 probes the offsets'
 * low and high bits. */
static void test_stochastic_rounding_offsets(void) {
    enum { S = 64 };
    const uint32_t lows[] = {0x0100, 0x1000, 0x5555, 0x8000, 0xc000, 0xfe00};
    rt_tensor *p, *g, *m, *v;
    CHECK_OK(rt_full(1, g_shape, 0.0, RT_F32, RT_DEVICE_CPU, &p));
    CHECK_OK(rt_full(1, g_shape, 0.0, RT_F32, RT_DEVICE_CPU, &g));
    CHECK_OK(rt_full(1, g_shape, 0.0, RT_BF16, RT_DEVICE_CPU, &m));
    CHECK_OK(rt_full(1, g_shape, 0.0, RT_BF16, RT_DEVICE_CPU, &v));
    float *buf = malloc(sizeof(float) * N);
    unsigned char *um = malloc((size_t)N * S), *uv = malloc((size_t)N * S);
    for (size_t k = 0; k < sizeof lows / sizeof lows[0]; k++) {
        uint32_t xb = 0x3f800000u | lows[k];
        float x;
        memcpy(&x, &xb, 4);
        /* beta1 = 0: exp_avg = g; beta2 = 0.5 from zero: exp_avg_sq = (0.5 g) g, as the kernel
         * computes it */
        float y = (0.5f * x) * x;
        uint32_t yb = f32_bits(y);
        CHECK_OK(rt_fill_(g, x));
        rt_adamw_hparams h = {0.0, 0.0, 0.5, 1e-8, 0.0, 1, 4242, 0};
        for (int s = 0; s < S; s++) {
            CHECK_OK(rt_fill_(m, 0.0));
            CHECK_OK(rt_fill_(v, 0.0));
            h.step = s + 1;
            CHECK_OK(rt_host_adamw_step(p, g, m, v, NULL, &h));
            CHECK_OK(rt_to_host(m, buf, RT_F32));
            for (int i = 0; i < N; i++) {
                uint32_t b = f32_bits(buf[i]);
                CHECK(b == (xb & 0xffff0000u) || b == (xb & 0xffff0000u) + 0x10000u);
                um[(size_t)s * N + i] = b != (xb & 0xffff0000u);
            }
            CHECK_OK(rt_to_host(v, buf, RT_F32));
            for (int i = 0; i < N; i++) {
                uint32_t b = f32_bits(buf[i]);
                CHECK(b == (yb & 0xffff0000u) || b == (yb & 0xffff0000u) + 0x10000u);
                uv[(size_t)s * N + i] = b != (yb & 0xffff0000u);
            }
        }
        check_round_ups(um, S, (xb & 0xffff) / 65536.0, "exp_avg");
        check_round_ups(uv, S, (yb & 0xffff) / 65536.0, "exp_avg_sq");
    }
    free(buf);
    free(um);
    free(uv);
    rt_tensor *t[] = {p, g, m, v};
    for (int i = 0; i < 4; i++)
        rt_tensor_release(t[i]);
}

static rt_tensor *as_dtype(rt_tensor *t, int dtype) {
    rt_tensor *c = NULL;
    CHECK_OK(rt_to_dtype(t, dtype, &c));
    return c;
}

/* Gradients of every landing dtype on every path, f32 and bf16 parameters and states. */
static void test_adamw_landing_dtypes(void) {
    rt_manual_seed(21);
    rt_tensor *g32 = randn_t(RT_F32), *p32 = randn_t(RT_F32), *v0 = randn_t(RT_F32), *vsq = NULL;
    CHECK_OK(rt_binary(RT_MUL, v0, v0, &vsq));
    rt_adamw_hparams h = {1e-2, 0.9, 0.999, 1e-8, 1e-2, 1, 31, 0};
    const int gdts[3] = {RT_F32, RT_BF16, RT_F16};
    for (int pd = 0; pd < 2; pd++) {
        int pdt = pd ? RT_BF16 : RT_F32;
        for (int sd = 0; sd < 2; sd++) {
            int sdt = sd ? RT_BF16 : RT_F32;
            rt_tensor *p = as_dtype(p32, pdt), *m = as_dtype(g32, sdt), *v = as_dtype(vsq, sdt);
            for (int gi = 0; gi < 3; gi++) {
                rt_tensor *g = as_dtype(g32, gdts[gi]);
                rt_tensor *gw = as_dtype(g, RT_F32); /* exact widening */
                rt_tensor *ref[3], *alt[3];
                adamw_run(p, gw, m, v, &h, RT_SIMD_SCALAR, 1, ref);
                for (int level = RT_SIMD_SCALAR; level <= RT_SIMD_AVX512; level++) {
                    if (!simd_available(level)) continue;
                    adamw_run(p, g, m, v, &h, level, 2, alt);
                    for (int i = 0; i < 3; i++)
                        if (!bits_equal(ref[i], alt[i])) {
                            fprintf(stderr,
                                    "param %s, state %s, grad %s, simd %d: output %d differs\n",
                                    rt_dtype_name(pdt), rt_dtype_name(sdt), rt_dtype_name(gdts[gi]),
                                    level, i);
                            CHECK(0);
                        }
                    release3(alt);
                }
                if (pdt == RT_BF16) { /* one step: the f32 update of the widened parameter,
                                         rounded once */
                    rt_tensor *pb = clone_t(p), *pw = as_dtype(p, RT_F32);
                    rt_tensor *m1 = clone_t(m), *v1 = clone_t(v), *m2 = clone_t(m),
                              *v2 = clone_t(v);
                    CHECK_OK(rt_host_adamw_step(pb, g, m1, v1, NULL, &h));
                    CHECK_OK(rt_host_adamw_step(pw, gw, m2, v2, NULL, &h));
                    rt_tensor *rounded = as_dtype(pw, RT_BF16);
                    CHECK(bits_equal(pb, rounded));
                    rt_tensor *t[] = {pb, pw, m1, v1, m2, v2, rounded};
                    for (int i = 0; i < 7; i++)
                        rt_tensor_release(t[i]);
                }
                release3(ref);
                rt_tensor_release(g);
                rt_tensor_release(gw);
            }
            rt_tensor_release(p);
            rt_tensor_release(m);
            rt_tensor_release(v);
        }
    }
    /* SGD: a bf16/f16 gradient is its f32 widening, on every path */
    rt_sgd_hparams sh = {0.05, 0.9, 0.0, 1e-3, 1, 0, 0}; /* nesterov, not the first step */
    for (int gi = 1; gi < 3; gi++) {
        rt_tensor *g = as_dtype(g32, gdts[gi]), *gw = as_dtype(g, RT_F32);
        for (int level = RT_SIMD_SCALAR; level <= RT_SIMD_AVX512; level++) {
            if (!simd_available(level)) continue;
            CHECK_OK(rt_host_optim_set_simd(level));
            rt_tensor *pa = clone_t(p32), *pb = clone_t(p32), *ba = clone_t(v0), *bb = clone_t(v0);
            CHECK_OK(rt_host_sgd_step(pa, g, ba, NULL, &sh));
            CHECK_OK(rt_host_sgd_step(pb, gw, bb, NULL, &sh));
            CHECK(bits_equal(pa, pb));
            CHECK(bits_equal(ba, bb));
            rt_tensor *t[] = {pa, pb, ba, bb};
            for (int i = 0; i < 4; i++)
                rt_tensor_release(t[i]);
        }
        rt_host_optim_set_simd(RT_SIMD_AUTO);
        rt_tensor_release(g);
        rt_tensor_release(gw);
    }
    rt_tensor *t[] = {g32, p32, v0, vsq};
    for (int i = 0; i < 4; i++)
        rt_tensor_release(t[i]);
}

static void test_errors(void) {
    rt_tensor *p, *g, *m, *v, *md;
    int64_t s2[1] = {3};
    CHECK_OK(rt_full(1, g_shape, 0.0, RT_F32, RT_DEVICE_CPU, &p));
    CHECK_OK(rt_full(1, g_shape, 0.0, RT_F32, RT_DEVICE_CPU, &g));
    CHECK_OK(rt_full(1, g_shape, 0.0, RT_F32, RT_DEVICE_CPU, &m));
    CHECK_OK(rt_full(1, s2, 0.0, RT_F32, RT_DEVICE_CPU, &v));
    CHECK_OK(rt_full(1, g_shape, 0.0, RT_F64, RT_DEVICE_CPU, &md));
    rt_adamw_hparams h = {1e-3, 0.9, 0.999, 1e-8, 0.0, 1, 0, 0};
    CHECK(rt_host_adamw_step(p, g, m, v, NULL, &h) == RT_ERR_SHAPE);
    CHECK_MSG_HAS("exp_avg_sq has shape [3] but the parameter has shape [12365]");
    CHECK(rt_host_adamw_step(p, g, md, m, NULL, &h) == RT_ERR_DTYPE);
    CHECK_MSG_HAS("exp_avg has dtype float64; expected float32 or bfloat16");
    CHECK(rt_host_adamw_step(p, md, m, m, NULL, &h) == RT_ERR_DTYPE);
    CHECK_MSG_HAS("grad has dtype float64; expected float32 or bfloat16");
    h.step = 0;
    CHECK(rt_host_adamw_step(p, g, m, m, NULL, &h) == RT_ERR_INVALID);
    CHECK_MSG_HAS("step must be >= 1");
    CHECK(rt_host_optim_set_simd(9) == RT_ERR_INVALID);
    CHECK_MSG_HAS("expected 0 (auto)");
    rt_sgd_hparams sh = {0.1, 0.9, 0.0, 0.0, 0, 0, 0};
    CHECK(rt_host_sgd_step(p, g, NULL, NULL, &sh) == RT_ERR_INVALID);
    CHECK_MSG_HAS("needs a momentum buffer");
    rt_tensor *t[] = {p, g, m, v, md};
    for (int i = 0; i < 5; i++)
        rt_tensor_release(t[i]);
}

/* NaN and infinity on every path, with bf16 parameter, gradient and states (the AVX-512 path has
 * a loop of its own for that case: its NaN quieting must give the scalar path's bits) and with f32
 * ones; a NaN gradient in each of the 32 positions of the first block and a few beyond. */
static void test_adamw_nonfinite_paths(void) {
    rt_manual_seed(5);
    rt_tensor *g32 = randn_t(RT_F32), *p32 = randn_t(RT_F32), *v0 = randn_t(RT_F32), *vsq = NULL;
    CHECK_OK(rt_binary(RT_MUL, v0, v0, &vsq));
    float *gd = rt_tensor_data_ptr(g32);
    for (int i = 0; i < 32; i += 3)
        gd[i] = (i & 1) ? INFINITY : NAN;
    gd[100] = -INFINITY, gd[4095] = NAN, gd[4096 + 31] = NAN;
    rt_adamw_hparams h = {1e-2, 0.9, 0.999, 1e-8, 1e-2, 1, 31, 0};
    for (int bf = 0; bf < 2; bf++) {
        int dt = bf ? RT_BF16 : RT_F32;
        rt_tensor *p = as_dtype(p32, dt), *g = as_dtype(g32, dt), *m = as_dtype(g32, dt),
                  *v = as_dtype(vsq, dt), *ref[3], *alt[3];
        adamw_run(p, g, m, v, &h, RT_SIMD_SCALAR, 1, ref);
        for (int level = RT_SIMD_AVX2; level <= RT_SIMD_AVX512; level++) {
            if (!simd_available(level)) continue;
            adamw_run(p, g, m, v, &h, level, 2, alt);
            for (int i = 0; i < 3; i++)
                if (!bits_equal(ref[i], alt[i])) {
                    fprintf(stderr, "%s, simd %d: output %d differs\n", rt_dtype_name(dt), level,
                            i);
                    CHECK(0);
                }
            release3(alt);
        }
        release3(ref);
        rt_tensor *t[] = {p, g, m, v};
        for (int i = 0; i < 4; i++)
            rt_tensor_release(t[i]);
    }
    rt_tensor_release(g32);
    rt_tensor_release(p32);
    rt_tensor_release(v0);
    rt_tensor_release(vsq);
}

int main(void) {
    printf("host optimizer paths available: scalar%s%s (auto picks %d)\n",
           simd_available(RT_SIMD_AVX2) ? ", avx2" : "",
           simd_available(RT_SIMD_AVX512) ? ", avx512" : "", rt_host_optim_simd());
    RUN(test_adamw_paths_agree);
    RUN(test_adamw_matches_generic_kernel);
    RUN(test_sgd_paths_agree);
    RUN(test_stochastic_rounding_unbiased);
    RUN(test_stochastic_rounding_offsets);
    RUN(test_adamw_landing_dtypes);
    RUN(test_adamw_nonfinite_paths);
    RUN(test_errors);
    return test_summary();
}
