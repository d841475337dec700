/* test_leaks.c: every tensor, storage and node made by a forward/backward, by failing calls, by
 * retained graphs and by custom-function nodes is freed: rt_live_tensors() and
 * rt_host_bytes_allocated() come back to their start values (and ASan's leak checker sees nothing).
 */
#include "test_util.h"

static int64_t g_tensors0, g_bytes0;

static void mark(void) {
    g_tensors0 = rt_live_tensors();
    g_bytes0 = rt_host_bytes_allocated();
}

static void check_back(void) {
    CHECK(rt_live_tensors() == g_tensors0);
    CHECK(rt_host_bytes_allocated() == g_bytes0);
    if (rt_live_tensors() != g_tensors0)
        fprintf(stderr, "live tensors %lld, expected %lld\n", (long long)rt_live_tensors(),
                (long long)g_tensors0);
}

/* y = sum(tanh(x @ w + b) * x2) over a small MLP-like graph with views and broadcasts. */
static void test_forward_backward(void) {
    mark();
    int64_t sx[2] = {5, 8}, sw[2] = {8, 4}, sb[1] = {4};
    rt_tensor *x, *w, *b;
    rt_manual_seed(1);
    CHECK_OK(rt_randn(2, sx, RT_F64, RT_DEVICE_CPU, &x));
    CHECK_OK(rt_randn(2, sw, RT_F64, RT_DEVICE_CPU, &w));
    CHECK_OK(rt_randn(1, sb, RT_F64, RT_DEVICE_CPU, &b));
    CHECK_OK(rt_set_requires_grad(w, 1));
    CHECK_OK(rt_set_requires_grad(b, 1));
    for (int step = 0; step < 3; step++) {
        rt_tensor *h, *h2, *t, *tt, *n, *s;
        CHECK_OK(rt_matmul(x, w, &h));
        CHECK_OK(rt_binary(RT_ADD, h, b, &h2));
        CHECK_OK(rt_unary(RT_TANH, h2, &t));
        CHECK_OK(rt_transpose(t, 0, 1, &tt));
        CHECK_OK(rt_narrow(tt, 1, 1, 3, &n));
        int dims[1] = {1};
        rt_tensor *m;
        CHECK_OK(rt_reduce(RT_MAX, n, 1, dims, 0, &m));
        CHECK_OK(rt_reduce(RT_SUM, m, 0, NULL, 0, &s));
        /* the graph keeps what it needs: drop our references before backward */
        rt_tensor_release(h);
        rt_tensor_release(h2);
        rt_tensor_release(t);
        rt_tensor_release(tt);
        rt_tensor_release(n);
        rt_tensor_release(m);
        CHECK_OK(rt_backward(s, NULL, step == 1)); /* once with retain_graph */
        rt_tensor_release(s);
    }
    rt_tensor *gw;
    CHECK_OK(rt_tensor_grad(w, &gw));
    CHECK(gw != NULL);
    rt_tensor_release(gw);
    rt_tensor_release(x);
    rt_tensor_release(w);
    rt_tensor_release(b);
    check_back();
}

/* Failing calls release what they allocated. */
static void test_error_paths(void) {
    mark();
    int64_t s23[2] = {2, 3}, s4[1] = {4}, s32[2] = {3, 2};
    rt_tensor *a, *b, *c, *out = (rt_tensor *)1;
    CHECK_OK(rt_full(2, s23, 1, RT_F32, RT_DEVICE_CPU, &a));
    CHECK_OK(rt_full(1, s4, 1, RT_F32, RT_DEVICE_CPU, &b));
    CHECK_OK(rt_full(2, s32, 1, RT_F64, RT_DEVICE_CPU, &c));
    CHECK(rt_binary(RT_ADD, a, b, &out) == RT_ERR_SHAPE);
    CHECK(out == NULL);
    CHECK(rt_matmul(a, c, &out) == RT_ERR_DTYPE);
    CHECK_MSG_HAS("float32 and float64");
    CHECK(out == NULL);
    CHECK(rt_matmul(a, b, &out) == RT_ERR_SHAPE);
    CHECK(rt_select(a, 0, 5, &out) == RT_ERR_INDEX);
    CHECK(rt_narrow(a, 1, 2, 5, &out) == RT_ERR_INDEX);
    CHECK(rt_view(a, 1, s4, &out) == RT_ERR_SHAPE);
    CHECK(rt_reduce(RT_MEAN, a, 1, (int[]){7}, 0, &out) == RT_ERR_INDEX);
    CHECK(rt_randint(3, 3, 1, s4, RT_I64, RT_DEVICE_CPU, &out) == RT_ERR_INVALID);
    CHECK(rt_rand(1, s4, RT_I64, RT_DEVICE_CPU, &out) == RT_ERR_DTYPE);
    CHECK(rt_set_requires_grad(b, 1) == RT_OK);
    rt_tensor *y;
    CHECK_OK(rt_unary(RT_EXP, b, &y));
    CHECK(rt_backward(y, NULL, 0) == RT_ERR_AUTOGRAD); /* non-scalar */
    CHECK_MSG_HAS("scalar outputs");
    rt_tensor_release(y);
    rt_tensor_release(a);
    rt_tensor_release(b);
    rt_tensor_release(c);
    check_back();
}

/* A custom node reached by the engine is handed back; the task can be freed mid-way without leaks,
 * and the node's id is reported as freed once its output dies. */
static void test_custom_node(void) {
    mark();
    int64_t s[1] = {3};
    rt_tensor *x, *y, *y2, *z;
    CHECK_OK(rt_full(1, s, 2, RT_F64, RT_DEVICE_CPU, &x));
    CHECK_OK(rt_set_requires_grad(x, 1));
    CHECK_OK(rt_full(1, s, 4, RT_F64, RT_DEVICE_CPU, &y));
    CHECK_OK(rt_custom_attach(y, 1, &x, 77));
    CHECK_OK(rt_binary_scalar(RT_MUL, y, 3, 0, &y2));
    CHECK_OK(rt_reduce(RT_SUM, y2, 0, NULL, 0, &z));
    rt_autograd_task *task;
    CHECK_OK(rt_autograd_begin(z, NULL, 0, &task));
    int64_t id = -1;
    rt_tensor *g = NULL;
    CHECK(rt_autograd_run(task, &id, &g) == 1);
    CHECK(id == 77);
    double gv[3];
    CHECK_OK(rt_to_host(g, gv, RT_F64));
    CHECK_NEAR(gv[0], 3, 0);
    CHECK_OK(rt_autograd_supply(task, 0, g)); /* pretend d(custom)/dx = identity */
    CHECK(rt_autograd_supply(task, 1, g) == RT_ERR_INDEX);
    rt_tensor_release(g);
    CHECK(rt_autograd_run(task, &id, &g) == 0);
    rt_autograd_task_free(task);
    rt_tensor *gx;
    CHECK_OK(rt_tensor_grad(x, &gx));
    CHECK_OK(rt_to_host(gx, gv, RT_F64));
    CHECK_NEAR(gv[2], 3, 0);
    rt_tensor_release(gx);
    /* abandon a second task at the custom node */
    rt_tensor_release(z);
    rt_tensor_release(y2);
    CHECK_OK(rt_reduce(RT_SUM, y, 0, NULL, 0, &y2)); /* y2 := sum(y) */
    CHECK_OK(rt_autograd_begin(y2, NULL, 0, &task));
    CHECK(rt_autograd_run(task, &id, &g) == 1);
    rt_tensor_release(g);
    rt_autograd_task_free(task);
    int64_t freed[4];
    CHECK(rt_custom_take_freed(freed, 4) == 0); /* y still alive */
    rt_tensor_release(y);
    rt_tensor_release(y2);
    CHECK(rt_custom_take_freed(freed, 4) == 1);
    CHECK(freed[0] == 77);
    rt_tensor_release(x);
    check_back();
}

static void test_nothing_left(void) {
    CHECK(rt_live_tensors() == 0);
}

int main(void) {
    RUN(test_forward_backward);
    RUN(test_error_paths);
    RUN(test_custom_node);
    RUN(test_nothing_left);
    return test_summary();
}
