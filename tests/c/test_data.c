/* test_data.c: the C side of data loading: rt_read_idx over every idx element type (big-endian
 * decoding, widening of i8/i16) and its format errors, and the row gathers (rt_index_select in
 * every dtype, rt_index_add_ with repeated indices, rt_gather_rows with its fused conversion and
 * the background rt_gather_rows_async). */
#include "test_util.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

static char g_path[256];

static void write_file(const void *p, size_t n) {
    FILE *f = fopen(g_path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

static void test_idx_types(void) {
    /* type, element bytes (big-endian), expected values */
    static const unsigned char u8[] = {0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 255};
    static const unsigned char i8[] = {0, 0, 0x09, 1, 0, 0, 0, 3, 0x7F, 0x80, 0xFF};
    static const unsigned char i16[] = {0, 0, 0x0B, 1, 0, 0, 0, 2, 0x80, 0x00, 0x01, 0x02};
    static const unsigned char i32[] = {0,    0,    0x0C, 1,    0, 0, 0, 2,
                                        0xFF, 0xFF, 0xFF, 0xFE, 0, 1, 0, 0};
    static const unsigned char f32[] = {0,    0,    0x0D, 1, 0,    0,    0, 2,
                                        0x3F, 0xC0, 0,    0, 0xC0, 0x20, 0, 0};
    static const unsigned char f64[] = {0,    0,    0x0E, 1,    0,    0,    0,    1,
                                        0x40, 0x09, 0x21, 0xFB, 0x54, 0x44, 0x2D, 0x18};
    struct {
        const unsigned char *p;
        size_t n;
        int dtype, ndim;
        double v[6];
        int count;
    } cases[] = {
        {u8, sizeof u8, RT_U8, 2, {1, 2, 3, 4, 5, 255}, 6},
        {i8, sizeof i8, RT_I32, 1, {127, -128, -1}, 3},
        {i16, sizeof i16, RT_I32, 1, {-32768, 258}, 2},
        {i32, sizeof i32, RT_I32, 1, {-2, 65536}, 2},
        {f32, sizeof f32, RT_F32, 1, {1.5, -2.5}, 2},
        {f64, sizeof f64, RT_F64, 1, {3.141592653589793}, 1},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        write_file(cases[k].p, cases[k].n);
        rt_tensor *t;
        CHECK_OK(rt_read_idx(g_path, &t));
        if (!t) continue;
        const rt_tensor_meta *m = rt_tensor_meta_of(t);
        CHECK(m->dtype == cases[k].dtype && m->ndim == cases[k].ndim && m->numel == cases[k].count);
        double v[6];
        CHECK_OK(rt_to_host(t, v, RT_F64));
        for (int i = 0; i < cases[k].count; i++)
            CHECK_NEAR(v[i], cases[k].v[i], 0);
        rt_tensor_release(t);
    }
}

static void test_idx_errors(void) {
    rt_tensor *t = NULL;
    static const struct {
        const char *bytes;
        size_t n;
        const char *msg;
    } bad[] = {
        {"\0\0\x08", 3, "truncated header"},
        {"\0\1\x08\1\0\0\0\1x", 9, "bad magic 0x00010801"},
        {"\0\0\x07\1\0\0\0\1x", 9, "unknown element type 0x07"},
        {"\0\0\x08\0", 4, "0 dims"},
        {"\0\0\x08\x09", 4, "9 dims"},
        {"\0\0\x08\1\0\0", 6, "truncated header (the dims)"},
        {"\0\0\x08\1\0\0\0\3ab", 10, "truncated data: shape [3] needs 3 bytes, the file holds 2"},
        {"\0\0\x08\1\0\0\0\1ab", 10, "trailing bytes"},
        {"\0\0\x0E\3\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF", 16, "implausible shape"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        write_file(bad[k].bytes, bad[k].n);
        int rc = rt_read_idx(g_path, &t);
        CHECK(rc == RT_ERR_FORMAT && t == NULL);
        CHECK_MSG_HAS(bad[k].msg);
        CHECK_MSG_HAS(g_path);
    }
    CHECK(rt_read_idx("/nonexistent/x.gz", &t) == RT_ERR_IO);
    CHECK_MSG_HAS("cannot open /nonexistent/x.gz: No such file or directory");
    CHECK(rt_read_idx("/tmp", &t) == RT_ERR_IO);
    CHECK_MSG_HAS("not a regular file");
}

static void test_index_select_dtypes(void) {
    int64_t shape[2] = {4, 3}, ishape[1] = {3};
    int64_t idxv[3] = {3, 0, 3};
    rt_tensor *idx;
    CHECK_OK(rt_from_host(1, ishape, RT_I64, RT_DEVICE_CPU, idxv, RT_I64, &idx));
    for (int d = 0; d < RT_NUM_DTYPES; d++) {
        double src[12];
        for (int i = 0; i < 12; i++)
            src[i] = d == RT_BOOL ? (i % 3 == 0) : i;
        rt_tensor *t, *tt, *o, *o1;
        CHECK_OK(rt_from_host(2, shape, d, RT_DEVICE_CPU, src, RT_F64, &t));
        CHECK_OK(rt_index_select(t, 0, idx, &o));
        double v[9];
        CHECK_OK(rt_to_host(o, v, RT_F64));
        for (int j = 0; j < 3; j++)
            for (int c = 0; c < 3; c++)
                CHECK(v[j * 3 + c] == src[idxv[j] * 3 + c]);
        /* along dim 1 of the transpose (a strided source) */
        CHECK_OK(rt_transpose(t, 0, 1, &tt));
        CHECK_OK(rt_index_select(tt, 1, idx, &o1));
        CHECK_OK(rt_to_host(o1, v, RT_F64));
        for (int c = 0; c < 3; c++)
            for (int j = 0; j < 3; j++)
                CHECK(v[c * 3 + j] == src[idxv[j] * 3 + c]);
        rt_tensor_release(t);
        rt_tensor_release(tt);
        rt_tensor_release(o);
        rt_tensor_release(o1);
    }
    rt_tensor_release(idx);
}

static void test_index_add_and_async(void) {
    int64_t shape[2] = {3, 2}, sshape[2] = {4, 2}, ishape[1] = {4};
    int64_t idxv[4] = {2, 0, 2, 2};
    double srcv[8] = {1, 2, 3, 4, 5, 6, 0.5, 0.25};
    rt_tensor *idx, *t, *src;
    CHECK_OK(rt_from_host(1, ishape, RT_I64, RT_DEVICE_CPU, idxv, RT_I64, &idx));
    for (int d = 0; d < 2; d++) {
        int dt = d ? RT_BF16 : RT_F32;
        CHECK_OK(rt_full(2, shape, 1.0, dt, RT_DEVICE_CPU, &t));
        CHECK_OK(rt_from_host(2, sshape, RT_F64, RT_DEVICE_CPU, srcv, RT_F64, &src));
        CHECK_OK(rt_index_add_(t, 0, idx, src)); /* src converted to t's dtype */
        double v[6];
        CHECK_OK(rt_to_host(t, v, RT_F64));
        double want[6] = {1 + 3, 1 + 4, 1, 1, 1 + 1 + 5 + 0.5, 1 + 2 + 6 + 0.25};
        for (int i = 0; i < 6; i++)
            CHECK_NEAR(v[i], want[i], 0);
        rt_tensor_release(t);
        rt_tensor_release(src);
    }
    /* shape mismatch */
    CHECK_OK(rt_full(2, shape, 1.0, RT_F32, RT_DEVICE_CPU, &t));
    CHECK_OK(rt_full(2, shape, 1.0, RT_F32, RT_DEVICE_CPU, &src));
    CHECK(rt_index_add_(t, 0, idx, src) == RT_ERR_SHAPE);
    CHECK_MSG_HAS("does not fit a target of shape [3, 2] with 4 indices along dim 0");
    /* background gathers: many in flight at once, each equal to the synchronous result */
    rt_async *jobs[8];
    for (int k = 0; k < 8; k++)
        CHECK_OK(rt_gather_rows_async(t, idx, -1, 1.0, &jobs[k]));
    rt_tensor *sync;
    CHECK_OK(rt_index_select(t, 0, idx, &sync));
    double a[8], b[8];
    CHECK_OK(rt_to_host(sync, a, RT_F64));
    for (int k = 0; k < 8; k++) {
        rt_tensor *o = NULL;
        CHECK_OK(rt_async_wait(jobs[k], &o));
        CHECK_OK(rt_to_host(o, b, RT_F64));
        for (int i = 0; i < 8; i++)
            CHECK(a[i] == b[i]);
        rt_tensor_release(o);
        rt_async_free(jobs[k]);
    }
    /* freed without waiting: joins and releases */
    CHECK_OK(rt_gather_rows_async(t, idx, -1, 1.0, &jobs[0]));
    rt_async_free(jobs[0]);
    rt_async_free(NULL);
    rt_tensor_release(sync);
    rt_tensor_release(t);
    rt_tensor_release(src);
    rt_tensor_release(idx);
}

static void test_gather_rows(void) {
    /* uint8 images to [0, 1] floats in one pass, exactly as x.float().div(255) */
    int64_t shape[3] = {3, 2, 2}, ishape[1] = {2};
    double px[12] = {0, 1, 2, 3, 100, 101, 127, 128, 200, 254, 255, 7};
    int64_t idxv[2] = {2, 1};
    rt_tensor *img, *idx, *out, *ref, *f, *sel;
    CHECK_OK(rt_from_host(3, shape, RT_U8, RT_DEVICE_CPU, px, RT_F64, &img));
    CHECK_OK(rt_from_host(1, ishape, RT_I64, RT_DEVICE_CPU, idxv, RT_I64, &idx));
    CHECK_OK(rt_gather_rows(img, idx, RT_F32, 255.0, &out));
    CHECK(rt_tensor_meta_of(out)->dtype == RT_F32 && rt_tensor_meta_of(out)->shape[0] == 2);
    CHECK_OK(rt_index_select(img, 0, idx, &sel));
    CHECK_OK(rt_to_dtype(sel, RT_F32, &f));
    CHECK_OK(rt_binary_scalar(RT_DIV, f, 255.0, 0, &ref));
    float a[8], b[8];
    CHECK_OK(rt_to_host(out, a, RT_F32));
    CHECK_OK(rt_to_host(ref, b, RT_F32));
    for (int i = 0; i < 8; i++)
        CHECK(a[i] == b[i] && a[i] == (float)px[idxv[i / 4] * 4 + i % 4] / 255.0f);
    rt_tensor_release(out);
    /* the same in the background; bf16 and f64 outputs; integer widening */
    rt_async *job;
    CHECK_OK(rt_gather_rows_async(img, idx, RT_F32, 255.0, &job));
    CHECK_OK(rt_async_wait(job, &out));
    CHECK_OK(rt_to_host(out, a, RT_F32));
    for (int i = 0; i < 8; i++)
        CHECK(a[i] == b[i]);
    rt_tensor *again;
    CHECK(rt_async_wait(job, &again) == RT_ERR_INVALID);
    CHECK_MSG_HAS("already taken");
    rt_async_free(job);
    rt_tensor_release(out);
    double d[8];
    CHECK_OK(rt_gather_rows(img, idx, RT_F64, 2.0, &out));
    CHECK_OK(rt_to_host(out, d, RT_F64));
    CHECK(d[0] == 100.0 && d[3] == 3.5 && d[7] == 64.0);
    rt_tensor_release(out);
    CHECK_OK(rt_gather_rows(img, idx, RT_I64, 1.0, &out));
    CHECK_OK(rt_to_host(out, d, RT_F64));
    CHECK(d[2] == 255.0);
    rt_tensor_release(out);
    /* errors: checked before any thread starts, or reported by wait */
    CHECK(rt_gather_rows(img, idx, RT_I32, 255.0, &out) == RT_ERR_DTYPE);
    CHECK_MSG_HAS("dividing by 255 needs a float output dtype, got int32");
    CHECK(rt_gather_rows(img, idx, RT_F32, 0.0, &out) == RT_ERR_INVALID);
    CHECK(rt_gather_rows_async(img, idx, 99, 1.0, &job) == RT_ERR_DTYPE);
    int64_t badv[2] = {0, 3};
    rt_tensor *bad;
    CHECK_OK(rt_from_host(1, ishape, RT_I64, RT_DEVICE_CPU, badv, RT_I64, &bad));
    CHECK_OK(rt_gather_rows_async(img, bad, RT_F32, 255.0, &job));
    CHECK(rt_async_wait(job, &out) == RT_ERR_INDEX && out == NULL);
    CHECK_MSG_HAS("index 3 (at position 1) is out of range for dimension 0 of size 3");
    rt_async_free(job);
    rt_tensor_release(bad);
    rt_tensor_release(img);
    rt_tensor_release(idx);
    rt_tensor_release(ref);
    rt_tensor_release(f);
    rt_tensor_release(sel);
}

static void test_large_gather(void) {
    /* over the parallel threshold: every row lands where it belongs */
    int64_t n = 3000, m = 500, shape[2] = {3000, 500};
    rt_tensor *ar, *t, *idx, *out;
    CHECK_OK(rt_arange(0, (double)(n * m), 1, RT_F32, RT_DEVICE_CPU, &ar));
    CHECK_OK(rt_view(ar, 2, shape, &t));
    CHECK_OK(rt_arange((double)(n - 1), -1, -1, RT_I64, RT_DEVICE_CPU, &idx));
    CHECK_OK(rt_index_select(t, 0, idx, &out));
    const float *o = rt_tensor_data_ptr(out);
    int bad = 0;
    for (int64_t r = 0; r < n; r++)
        for (int64_t c = 0; c < m; c += 97)
            bad += o[r * m + c] != (float)((n - 1 - r) * m + c);
    CHECK(bad == 0);
    rt_tensor_release(ar);
    rt_tensor_release(t);
    rt_tensor_release(idx);
    rt_tensor_release(out);
}

int main(void) {
    snprintf(g_path, sizeof g_path, "/tmp/rt_test_data_%d.idx", (int)getpid());
    RUN(test_idx_types);
    RUN(test_idx_errors);
    RUN(test_index_select_dtypes);
    RUN(test_index_add_and_async);
    RUN(test_gather_rows);
    RUN(test_large_gather);
    unlink(g_path);
    CHECK(rt_live_tensors() == 0);
    if (rt_live_tensors() != 0) g_tests_failed++;
    return test_summary();
}
