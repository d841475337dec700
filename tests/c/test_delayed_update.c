/* test_delayed_update.c: error paths of the one-step-delayed host update
 * (runtime/host_optim_delay.c with the front/back copies of runtime/offload.c) that the Lua specs
 * cannot reach: a back copy that cannot be allocated (the arena cannot grow: RLIMIT_FSIZE on its
 * memfd) must leave the parameter as it was (not in delayed mode, so a later add or another
 * optimizer can take it), and the update that then runs must equal the synchronous fused step bit
 * for bit. And the copies the fused pass writes for the delayed update (kernels/cpu/host_optim.c:
 * the master-dtype copy, the narrow shadow) hold exactly the parameter it stored, rounded to
 * nearest even for the shadow, on every SIMD path this CPU has, aligned (streaming stores) or not,
 * through tiles and tails. */
#include "host_optim.h"
#include "offload_internal.h"
#include "test_util.h"

#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>

#define N 1024 /* f32: 4096 bytes, one arena chunk of the size set below */

static int64_t g_shape[1] = {N};

static rt_tensor *randn_t(void) {
    rt_tensor *t = NULL;
    CHECK_OK(rt_randn(1, g_shape, RT_F32, RT_DEVICE_CPU, &t));
    return t;
}

static rt_tensor *clone_t(rt_tensor *t) {
    rt_tensor *c = NULL;
    CHECK_OK(rt_clone(t, &c));
    return c;
}

/* Let the arena map at most `chunks` more 4096-byte chunks (RLIMIT_FSIZE on its file). */
static int limit_arena(int chunks, struct rlimit *old) {
    int64_t mapped = 0, used = 0, peak = 0, nch = 0;
    if (rt_arena_stats(&mapped, &used, &peak, &nch) != 0) return -1;
    if (getrlimit(RLIMIT_FSIZE, old) != 0) return -1;
    struct rlimit r = *old;
    r.rlim_cur = (rlim_t)(mapped + 4096 * chunks);
    return setrlimit(RLIMIT_FSIZE, &r);
}

static void test_back_alloc_failure_rolls_back(void) {
    signal(SIGXFSZ, SIG_IGN); /* ftruncate past the limit then fails with EFBIG */
    CHECK_OK(rt_arena_set_chunk_size(4096));
    rt_tensor *w = randn_t(), *g = randn_t();
    rt_tensor *w_ref = clone_t(w);
    rt_offload_param *p = NULL;
    CHECK_OK(rt_offload_param_new(w, &p));
    rt_delayed_update *d = NULL, *d2 = NULL;
    CHECK_OK(rt_delayed_update_new(&d));
    CHECK_OK(rt_delayed_update_new(&d2));
    rt_sgd_hparams h;
    memset(&h, 0, sizeof h);
    h.lr = 0.1;

    /* room for the front copy only: the back copy's allocation fails */
    struct rlimit old;
    CHECK(limit_arena(1, &old) == 0);
    int rc = rt_delayed_update_add_sgd(d, p, g, NULL, &h);
    CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
    CHECK(rc == RT_ERR_OOM);
    CHECK_MSG_HAS("arena");
    /* nothing changed: not in delayed mode, nothing to wait for */
    CHECK(rt_offload_param_delayed(p) == 0);
    CHECK(rt_delayed_update_pending(d) == 0);
    CHECK_OK(rt_delayed_update_launch(d)); /* an empty batch: a no-op */
    CHECK(rt_delayed_update_pending(d) == 0);

    /* another object can take it now, and its update is the synchronous one */
    CHECK_OK(rt_delayed_update_add_sgd(d2, p, g, NULL, &h));
    CHECK(rt_offload_param_delayed(p) == 1);
    CHECK_OK(rt_delayed_update_launch(d2));
    CHECK_OK(rt_delayed_update_wait(d2));
    CHECK_OK(rt_host_sgd_step(w_ref, g, NULL, NULL, &h));
    CHECK(memcmp(rt_tensor_data_ptr(w), rt_tensor_data_ptr(w_ref), N * sizeof(float)) == 0);
    CHECK_OK(rt_delayed_update_flush(d2));
    CHECK(rt_offload_param_delayed(p) == 0);

    rt_delayed_update_free(d);
    rt_delayed_update_free(d2);
    rt_offload_param_release(p);
    rt_tensor_release(w);
    rt_tensor_release(w_ref);
    rt_tensor_release(g);
}

#define NC (4096 * 3 + 77) /* several tiles, a partial block */

static rt_tensor *rand_of(int dtype, int64_t n) {
    rt_tensor *t = NULL, *c = NULL;
    int64_t shape[1] = {n};
    CHECK_OK(rt_randn(1, shape, RT_F32, RT_DEVICE_CPU, &t));
    if (dtype == RT_F32) return t;
    CHECK_OK(rt_to_dtype(t, dtype, &c));
    rt_tensor_release(t);
    return c;
}

/* copy (param's dtype) == param bit for bit; shadow (bf16/f16 of an f32 param) == the param
 * rounded to nearest even by rt_to_dtype */
static int copies_match(rt_tensor *param, const void *copy, const void *shadow, int sdt) {
    int pdt = rt_tensor_meta_of(param)->dtype;
    int ok = memcmp(rt_tensor_data_ptr(param), copy, (size_t)NC * rt_dtype_size(pdt)) == 0;
    if (shadow) {
        rt_tensor *r = NULL;
        CHECK_OK(rt_to_dtype(param, sdt, &r));
        ok = ok && r && memcmp(rt_tensor_data_ptr(r), shadow, (size_t)NC * 2) == 0;
        rt_tensor_release(r);
    }
    return ok;
}

static void test_pass_copies_are_exact(void) {
    static const int pdts[] = {RT_F32, RT_BF16}, gdts[] = {RT_F32, RT_BF16, RT_F16};
    /* 64-byte aligned buffers (aligned_alloc wants the size a multiple of the alignment); +1
     * element makes them unaligned (plain stores) */
    size_t cbytes = ((size_t)NC * 4 + 128 + 63) / 64 * 64,
           sbytes = ((size_t)NC * 2 + 128 + 63) / 64 * 64;
    char *cbuf = aligned_alloc(64, cbytes), *sbuf = aligned_alloc(64, sbytes);
    for (int level = 1; level <= 3; level++) {
        if (rt_host_optim_set_simd(level) != 0) continue;
        for (int a = 0; a < 2; a++)
            for (int pi = 0; pi < 2; pi++)
                for (int sb = 0; sb < 2; sb++)
                    for (int gi = 0; gi < 3; gi++) {
                        int pdt = pdts[pi];
                        rt_tensor *p = rand_of(pdt, NC), *g = rand_of(gdts[gi], NC);
                        rt_tensor *m = rand_of(sb ? RT_BF16 : RT_F32, NC);
                        rt_tensor *v = NULL, *v0 = rand_of(sb ? RT_BF16 : RT_F32, NC);
                        CHECK_OK(rt_unary(RT_ABS, v0, &v)); /* exp_avg_sq >= 0 */
                        void *copy = cbuf + a * rt_dtype_size(pdt);
                        void *shadow = pdt == RT_F32 ? sbuf + a * 2 : NULL;
                        int sdt = gi == 2 ? RT_F16 : RT_BF16;
                        rt_adamw_hparams h;
                        memset(&h, 0, sizeof h);
                        h.lr = 1e-2, h.beta1 = 0.9, h.beta2 = 0.999, h.eps = 1e-8;
                        h.weight_decay = 0.01, h.step = 3, h.seed = 5;
                        CHECK_OK(rt_host_adamw_apply(p, g, m, v, copy, shadow, sdt, &h));
                        if (!copies_match(p, copy, shadow, sdt)) {
                            fprintf(stderr,
                                    "adamw copy differs: simd %d aligned %d %s param, %s "
                                    "states, %s grad\n",
                                    level, !a, rt_dtype_name(pdt), sb ? "bf16" : "f32",
                                    rt_dtype_name(gdts[gi]));
                            CHECK(0);
                        }
                        rt_tensor_release(p), rt_tensor_release(g), rt_tensor_release(m);
                        rt_tensor_release(v), rt_tensor_release(v0);
                    }
        for (int a = 0; a < 2; a++)
            for (int gi = 0; gi < 3; gi++) {
                rt_tensor *p = rand_of(RT_F32, NC), *g = rand_of(gdts[gi], NC);
                rt_tensor *b = rand_of(RT_F32, NC);
                void *copy = cbuf + a * 4, *shadow = sbuf + a * 2;
                int sdt = gi == 2 ? RT_F16 : RT_BF16;
                rt_sgd_hparams h;
                memset(&h, 0, sizeof h);
                h.lr = 0.1, h.momentum = 0.9, h.weight_decay = 0.01;
                CHECK_OK(rt_host_sgd_apply(p, g, b, copy, shadow, sdt, &h));
                if (!copies_match(p, copy, shadow, sdt)) {
                    fprintf(stderr, "sgd copy differs: simd %d aligned %d %s grad\n", level, !a,
                            rt_dtype_name(gdts[gi]));
                    CHECK(0);
                }
                rt_tensor_release(p), rt_tensor_release(g), rt_tensor_release(b);
            }
    }
    CHECK_OK(rt_host_optim_set_simd(0));
    free(cbuf);
    free(sbuf);
}

int main(void) {
    RUN(test_back_alloc_failure_rolls_back);
    RUN(test_pass_copies_are_exact);
    return test_summary();
}
