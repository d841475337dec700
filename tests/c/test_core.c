/* test_core.c: C unit tests of the tensor core: creation, views, copies, broadcasting arithmetic,
 * reductions, matmul and the autograd engine, each against values computed here in double. */
#include "test_util.h"

static void test_full_and_item(void) {
    rt_tensor *t;
    int64_t shape[2] = {2, 3};
    CHECK_OK(rt_full(2, shape, 2.5, RT_F32, RT_DEVICE_CPU, &t));
    const rt_tensor_meta *m = rt_tensor_meta_of(t);
    CHECK(m->numel == 6 && m->ndim == 2 && m->shape[1] == 3 && m->strides[0] == 3);
    double v[6];
    CHECK_OK(rt_to_host(t, v, RT_F64));
    for (int i = 0; i < 6; i++)
        CHECK_NEAR(v[i], 2.5, 0);
    double item;
    CHECK(rt_item(t, &item) == RT_ERR_SHAPE);
    CHECK_MSG_HAS("item");
    rt_tensor_release(t);
}

static void test_views_share_storage(void) {
    double src[6] = {0, 1, 2, 3, 4, 5};
    int64_t shape[2] = {2, 3};
    rt_tensor *t, *tr, *row, *c;
    CHECK_OK(rt_from_host(2, shape, RT_F32, RT_DEVICE_CPU, src, RT_F64, &t));
    CHECK_OK(rt_transpose(t, 0, 1, &tr));
    CHECK(!rt_tensor_is_contiguous(tr));
    CHECK_OK(rt_contiguous(tr, &c));
    double v[6];
    CHECK_OK(rt_to_host(c, v, RT_F64));
    double want[6] = {0, 3, 1, 4, 2, 5};
    for (int i = 0; i < 6; i++)
        CHECK_NEAR(v[i], want[i], 0);
    CHECK_OK(rt_select(t, 0, 1, &row));
    CHECK_OK(rt_fill_(row, 9));
    CHECK_OK(rt_to_host(t, v, RT_F64));
    CHECK_NEAR(v[3], 9, 0);
    CHECK_NEAR(v[2], 2, 0);
    rt_tensor *bad;
    CHECK(rt_select(t, 0, 2, &bad) == RT_ERR_INDEX);
    CHECK_MSG_HAS("out of range");
    rt_tensor_release(t);
    rt_tensor_release(tr);
    rt_tensor_release(row);
    rt_tensor_release(c);
}

static void test_broadcast_add_and_grad(void) {
    double av[6] = {1, 2, 3, 4, 5, 6}, bv[3] = {10, 20, 30};
    int64_t sa[2] = {2, 3}, sb[1] = {3};
    rt_tensor *a, *b, *c, *s;
    CHECK_OK(rt_from_host(2, sa, RT_F64, RT_DEVICE_CPU, av, RT_F64, &a));
    CHECK_OK(rt_from_host(1, sb, RT_F64, RT_DEVICE_CPU, bv, RT_F64, &b));
    CHECK_OK(rt_set_requires_grad(a, 1));
    CHECK_OK(rt_set_requires_grad(b, 1));
    CHECK_OK(rt_binary(RT_MUL, a, b, &c));
    CHECK_OK(rt_reduce(RT_SUM, c, 0, NULL, 0, &s));
    double total;
    CHECK_OK(rt_item(s, &total));
    CHECK_NEAR(total, 10 + 40 + 90 + 40 + 100 + 180, 1e-12);
    CHECK_OK(rt_backward(s, NULL, 0));
    rt_tensor *ga, *gb;
    CHECK_OK(rt_tensor_grad(a, &ga));
    CHECK_OK(rt_tensor_grad(b, &gb));
    double g[6];
    CHECK_OK(rt_to_host(ga, g, RT_F64));
    CHECK_NEAR(g[0], 10, 0);
    CHECK_NEAR(g[5], 30, 0);
    CHECK_OK(rt_to_host(gb, g, RT_F64));
    CHECK_NEAR(g[0], 1 + 4, 0);
    CHECK_NEAR(g[2], 3 + 6, 0);
    /* a second backward without retain_graph is an error, not a crash */
    CHECK(rt_backward(s, NULL, 0) == RT_ERR_AUTOGRAD);
    CHECK_MSG_HAS("second time");
    rt_tensor *bad;
    int64_t s4[1] = {4};
    rt_tensor *d;
    CHECK_OK(rt_full(1, s4, 1, RT_F64, RT_DEVICE_CPU, &d));
    CHECK(rt_binary(RT_ADD, a, d, &bad) == RT_ERR_SHAPE);
    CHECK_MSG_HAS("[2, 3]");
    CHECK_MSG_HAS("[4]");
    rt_tensor_release(d);
    rt_tensor_release(ga);
    rt_tensor_release(gb);
    rt_tensor_release(a);
    rt_tensor_release(b);
    rt_tensor_release(c);
    rt_tensor_release(s);
}

static void test_matmul_against_double(void) {
    int64_t sa[2] = {3, 4}, sb[2] = {4, 5};
    rt_tensor *a, *b, *c;
    rt_manual_seed(7);
    CHECK_OK(rt_randn(2, sa, RT_F64, RT_DEVICE_CPU, &a));
    CHECK_OK(rt_randn(2, sb, RT_F64, RT_DEVICE_CPU, &b));
    CHECK_OK(rt_matmul(a, b, &c));
    double A[12], B[20], Cv[15];
    CHECK_OK(rt_to_host(a, A, RT_F64));
    CHECK_OK(rt_to_host(b, B, RT_F64));
    CHECK_OK(rt_to_host(c, Cv, RT_F64));
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 5; j++) {
            double s = 0;
            for (int k = 0; k < 4; k++)
                s += A[i * 4 + k] * B[k * 5 + j];
            CHECK_NEAR(Cv[i * 5 + j], s, 1e-12);
        }
    rt_tensor_release(a);
    rt_tensor_release(b);
    rt_tensor_release(c);
}

static void test_no_leaks(void) {
    CHECK(rt_live_tensors() == 0);
}

int main(void) {
    RUN(test_full_and_item);
    RUN(test_views_share_storage);
    RUN(test_broadcast_add_and_grad);
    RUN(test_matmul_against_double);
    RUN(test_no_leaks);
    return test_summary();
}
