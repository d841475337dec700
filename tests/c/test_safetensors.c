/* test_safetensors.c: the safetensors reader and writer: the regression corpus of tests/fuzz/corpus
 * (each ok_* file opens and reads, each bad_* file is rejected with RT_ERR_FORMAT and a message
 * naming the file), exact values of a hand-made file, round trips of every dtype and layout, clear
 * errors from the writer, and atomic saves (a save failing midway leaves the old file intact). */
#include "serial_internal.h"
#include "test_util.h"

#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_src[1024]; /* repository root, from this file's path */
static char g_tmp[256];  /* scratch folder */

static void init_paths(void) {
    snprintf(g_src, sizeof g_src, "%s", __FILE__);
    char *p = strstr(g_src, "tests/c/test_safetensors.c");
    if (p)
        *p = 0;
    else
        snprintf(g_src, sizeof g_src, "./");
    snprintf(g_tmp, sizeof g_tmp, "/tmp/rt_test_safetensors_XXXXXX");
    if (!mkdtemp(g_tmp)) snprintf(g_tmp, sizeof g_tmp, "/tmp");
}

/* Expected substrings of the messages of some malformed files. */
static const char *expected_message(const char *file) {
    static const char *const table[][2] = {
        {"bad_unknown_dtype", "unknown dtype \"F128\""},
        {"bad_offsets_overlap", "overlap tensor \"a\""},
        {"bad_offsets_gap", "not contiguous"},
        {"bad_offsets_out_of_range", "out of range"},
        {"bad_strict_too_many_dims", "at most 8 supported"},
        {"bad_duplicate_name", "tensor \"x\" given twice"},
        {"bad_header_beyond_file", "beyond the end of the file"},
        {"bad_json_trailing_comma", "bad JSON in the header: trailing comma"},
        {"bad_byte_length_mismatch", "hold 20 bytes, but F32 of shape [2, 3] needs 24"},
        {"bad_truncated_data", "truncated"},
        {"bad_short_file", "too short"},
        {"bad_metadata_not_string", "values must be strings"},
        {"bad_json_deep_nesting", "nesting deeper"},
        {"bad_json_invalid_utf8", "invalid UTF-8"},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (!strncmp(file, table[i][0], strlen(table[i][0]))) return table[i][1];
    return NULL;
}

static void test_corpus(void) {
    char dir[1200];
    snprintf(dir, sizeof dir, "%stests/fuzz/corpus", g_src);
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    if (!d) return;
    int n_ok = 0, n_bad = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[1600];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        int expect_ok = !strncmp(e->d_name, "ok_", 3);
        CHECK(expect_ok || !strncmp(e->d_name, "bad_", 4));
        rt_safetensors *f = NULL;
        int rc = rt_safetensors_open(path, &f);
        if (expect_ok) {
            if (rc != 0) fprintf(stderr, "%s: expected ok, got: %s\n", e->d_name, rt_last_error());
            CHECK(rc == 0);
            for (int64_t i = 0; f && i < rt_safetensors_count(f); i++) {
                int dt, nd;
                int64_t shape[RT_MAX_DIMS];
                CHECK_OK(rt_safetensors_info(f, i, &dt, &nd, shape));
                rt_tensor *t = NULL;
                int grc = rt_safetensors_get(f, i, &t);
                CHECK(dt >= 0 ? grc == 0 : grc == RT_ERR_DTYPE);
                rt_tensor_release(t);
            }
            n_ok++;
        } else {
            if (rc != RT_ERR_FORMAT)
                fprintf(stderr, "%s: expected RT_ERR_FORMAT, got %d (%s)\n", e->d_name, rc,
                        rc ? rt_last_error() : "opened");
            CHECK(rc == RT_ERR_FORMAT);
            CHECK_MSG_HAS(e->d_name); /* the message names the file */
            const char *want = expected_message(e->d_name);
            if (want) CHECK_MSG_HAS(want);
            n_bad++;
        }
        rt_safetensors_close(f);
        /* the same bytes through the in-memory reader give the same verdict */
        FILE *fp = fopen(path, "rb");
        CHECK(fp != NULL);
        if (fp) {
            static unsigned char buf[1 << 16];
            size_t k = fread(buf, 1, sizeof buf, fp);
            fclose(fp);
            rt_safetensors *g = NULL;
            int rc2 = rt_safetensors_open_memory(buf, k, e->d_name, &g);
            CHECK((rc2 == 0) == expect_ok);
            rt_safetensors_close(g);
        }
    }
    closedir(d);
    CHECK(n_ok >= 10 && n_bad >= 40);
}

static void test_all_dtypes_values(void) {
    char path[1200];
    snprintf(path, sizeof path, "%stests/fuzz/corpus/ok_all_dtypes.safetensors", g_src);
    rt_safetensors *f;
    CHECK_OK(rt_safetensors_open(path, &f));
    if (!f) return;
    CHECK(rt_safetensors_count(f) == 8);
    CHECK(!strcmp(rt_safetensors_name(f, 0), "bf16")); /* sorted by name */
    static const struct {
        const char *name;
        int dtype;
        double v0, v1;
    } want[] = {{"f64", RT_F64, 1.5, -2}, {"i64", RT_I64, 3, -4},   {"f32", RT_F32, 0.25, 8},
                {"i32", RT_I32, -9, 10},  {"bf16", RT_BF16, 1, -2}, {"f16", RT_F16, 1, -2},
                {"u8", RT_U8, 7, 255},    {"bool", RT_BOOL, 1, 0}};
    for (int k = 0; k < 8; k++) {
        int64_t i;
        CHECK_OK(rt_safetensors_find(f, want[k].name, &i));
        rt_tensor *t;
        CHECK_OK(rt_safetensors_get(f, i, &t));
        CHECK(rt_tensor_meta_of(t)->dtype == want[k].dtype);
        double v[2];
        CHECK_OK(rt_to_host(t, v, RT_F64));
        CHECK_NEAR(v[0], want[k].v0, 0);
        CHECK_NEAR(v[1], want[k].v1, 0);
        rt_tensor_release(t);
    }
    int64_t i;
    CHECK(rt_safetensors_find(f, "nope", &i) == RT_ERR_INDEX);
    CHECK_MSG_HAS("no tensor named \"nope\"");
    rt_tensor *t;
    CHECK(rt_safetensors_get(f, 8, &t) == RT_ERR_INDEX);
    rt_safetensors_close(f);
}

static int64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

static void test_round_trip(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/rt.safetensors", g_tmp);
    int64_t shape[3] = {2, 3, 4};
    rt_tensor *src[RT_NUM_DTYPES], *views[RT_NUM_DTYPES];
    const char *names[RT_NUM_DTYPES + 2];
    rt_tensor *ts[RT_NUM_DTYPES + 2];
    static char namebuf[RT_NUM_DTYPES][32];
    for (int d = 0; d < RT_NUM_DTYPES; d++) {
        rt_tensor *ar;
        CHECK_OK(rt_arange(0, 24, 1, RT_F64, RT_DEVICE_CPU, &ar));
        rt_tensor *shaped, *conv;
        CHECK_OK(rt_view(ar, 3, shape, &shaped));
        CHECK_OK(rt_to_dtype(shaped, d, &conv));
        src[d] = conv;
        CHECK_OK(rt_transpose(conv, 0, 2, &views[d])); /* (4, 3, 2), not contiguous */
        CHECK(!rt_tensor_is_contiguous(views[d]));
        snprintf(namebuf[d], sizeof namebuf[d], "layer.%s", rt_dtype_name(d));
        names[d] = namebuf[d];
        ts[d] = views[d];
        rt_tensor_release(ar);
        rt_tensor_release(shaped);
    }
    rt_tensor *scalar, *empty;
    CHECK_OK(rt_full(0, NULL, -3.25, RT_F32, RT_DEVICE_CPU, &scalar));
    int64_t ez[2] = {0, 5};
    CHECK_OK(rt_empty(2, ez, RT_F16, RT_DEVICE_CPU, &empty));
    names[RT_NUM_DTYPES] = "scalar";
    ts[RT_NUM_DTYPES] = scalar;
    names[RT_NUM_DTYPES + 1] = "empty";
    ts[RT_NUM_DTYPES + 1] = empty;
    const char *mk[2] = {"format", "note"}, *mv[2] = {"pt", "quote \" backslash \\ newline \n é"};
    CHECK_OK(rt_safetensors_save(path, RT_NUM_DTYPES + 2, names, ts, 2, mk, mv));
    CHECK(file_size(path) > 0);
    rt_safetensors *f;
    CHECK_OK(rt_safetensors_open(path, &f));
    if (!f) return;
    CHECK(rt_safetensors_count(f) == RT_NUM_DTYPES + 2);
    CHECK(rt_safetensors_metadata_count(f) == 2);
    CHECK(!strcmp(rt_safetensors_metadata_key(f, 1), "note"));
    CHECK(!strcmp(rt_safetensors_metadata_value(f, 1), mv[1]));
    for (int d = 0; d < RT_NUM_DTYPES; d++) {
        int64_t i;
        CHECK_OK(rt_safetensors_find(f, names[d], &i));
        rt_tensor *t;
        CHECK_OK(rt_safetensors_get(f, i, &t));
        const rt_tensor_meta *m = rt_tensor_meta_of(t);
        CHECK(m->dtype == d && m->ndim == 3 && m->shape[0] == 4 && m->shape[2] == 2);
        double a[24], b[24];
        CHECK_OK(rt_to_host(t, a, RT_F64));
        CHECK_OK(rt_to_host(views[d], b, RT_F64));
        for (int k = 0; k < 24; k++)
            CHECK(a[k] == b[k]);
        rt_tensor_release(t);
    }
    int64_t i;
    rt_tensor *t;
    CHECK_OK(rt_safetensors_find(f, "scalar", &i));
    CHECK_OK(rt_safetensors_get(f, i, &t));
    double v;
    CHECK(rt_tensor_meta_of(t)->ndim == 0);
    CHECK_OK(rt_item(t, &v));
    CHECK(v == -3.25);
    rt_tensor_release(t);
    CHECK_OK(rt_safetensors_find(f, "empty", &i));
    CHECK_OK(rt_safetensors_get(f, i, &t));
    CHECK(rt_tensor_meta_of(t)->numel == 0 && rt_tensor_meta_of(t)->shape[1] == 5);
    rt_tensor_release(t);
    rt_safetensors_close(f);
    for (int d = 0; d < RT_NUM_DTYPES; d++) {
        rt_tensor_release(src[d]);
        rt_tensor_release(views[d]);
    }
    rt_tensor_release(scalar);
    rt_tensor_release(empty);
    unlink(path);
}

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' || (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))) n++;
    closedir(d);
    return n;
}

static char *slurp(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    *n = fread(buf, 1, (size_t)len, fp);
    fclose(fp);
    return buf;
}

static void test_atomic_save(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/atomic.safetensors", g_tmp);
    rt_tensor *a, *b;
    int64_t s1 = 3, s2 = 1000;
    CHECK_OK(rt_full(1, &s1, 1.0, RT_F32, RT_DEVICE_CPU, &a));
    CHECK_OK(rt_full(1, &s2, 2.0, RT_F64, RT_DEVICE_CPU, &b));
    const char *n1[1] = {"a"};
    CHECK_OK(rt_safetensors_save(path, 1, n1, &a, 0, NULL, NULL));
    size_t old_n, cur_n;
    char *old = slurp(path, &old_n);
    int entries = count_entries(g_tmp);
    /* fail after the header and part of the data: the old file must survive byte for byte */
    const char *n2[2] = {"a", "b"};
    rt_tensor *ts[2] = {a, b};
    int64_t fail_points[3] = {0, 5, 200};
    for (int k = 0; k < 3; k++) {
        rt_safetensors_fail_after_bytes = fail_points[k];
        CHECK(rt_safetensors_save(path, 2, n2, ts, 0, NULL, NULL) == RT_ERR_IO);
        CHECK_MSG_HAS("previous file is unchanged");
        rt_safetensors_fail_after_bytes = -1;
        char *cur = slurp(path, &cur_n);
        CHECK(cur && cur_n == old_n && !memcmp(cur, old, old_n));
        free(cur);
        CHECK(count_entries(g_tmp) == entries); /* no temporary file left behind */
    }
    /* a failing save of bad arguments touches nothing either */
    const char *dup[2] = {"a", "a"};
    CHECK(rt_safetensors_save(path, 2, dup, ts, 0, NULL, NULL) == RT_ERR_INVALID);
    CHECK_MSG_HAS("given twice");
    char *cur = slurp(path, &cur_n);
    CHECK(cur && cur_n == old_n && !memcmp(cur, old, old_n));
    free(cur);
    /* and a successful one replaces it */
    CHECK_OK(rt_safetensors_save(path, 2, n2, ts, 0, NULL, NULL));
    CHECK(file_size(path) == (int64_t)(old_n + 8000) || file_size(path) > (int64_t)old_n);
    rt_safetensors *f;
    CHECK_OK(rt_safetensors_open(path, &f));
    CHECK(rt_safetensors_count(f) == 2);
    rt_safetensors_close(f);
    CHECK(count_entries(g_tmp) == entries);
    free(old);
    unlink(path);
    rt_tensor_release(a);
    rt_tensor_release(b);
}

static void test_save_errors(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/errors.safetensors", g_tmp);
    rt_tensor *a;
    int64_t s1 = 2;
    CHECK_OK(rt_full(1, &s1, 1.0, RT_F32, RT_DEVICE_CPU, &a));
    const char *meta[1] = {"__metadata__"};
    CHECK(rt_safetensors_save(path, 1, meta, &a, 0, NULL, NULL) == RT_ERR_INVALID);
    CHECK_MSG_HAS("reserved");
    const char *bad_utf8[1] = {"a\xff"};
    CHECK(rt_safetensors_save(path, 1, bad_utf8, &a, 0, NULL, NULL) == RT_ERR_INVALID);
    CHECK_MSG_HAS("not valid UTF-8");
    rt_tensor *nul = NULL;
    const char *nm[1] = {"x"};
    CHECK(rt_safetensors_save(path, 1, nm, &nul, 0, NULL, NULL) == RT_ERR_INVALID);
    CHECK_MSG_HAS("tensor \"x\" is NULL");
    const char *k2[2] = {"k", "k"}, *v2[2] = {"1", "2"};
    CHECK(rt_safetensors_save(path, 1, nm, &a, 2, k2, v2) == RT_ERR_INVALID);
    CHECK_MSG_HAS("metadata key \"k\" given twice");
    CHECK(file_size(path) < 0); /* nothing was written */
    CHECK(rt_safetensors_save(g_tmp, 1, nm, &a, 0, NULL, NULL) == RT_ERR_IO);
    CHECK_MSG_HAS("is a directory");
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no/such/dir/x.safetensors", g_tmp);
    CHECK(rt_safetensors_save(missing, 1, nm, &a, 0, NULL, NULL) == RT_ERR_IO);
    CHECK_MSG_HAS("cannot create a temporary file");
    rt_safetensors *f;
    CHECK(rt_safetensors_open(missing, &f) == RT_ERR_IO);
    CHECK_MSG_HAS("No such file");
    CHECK(rt_safetensors_open(g_tmp, &f) == RT_ERR_IO);
    CHECK_MSG_HAS("not a regular file");
    rt_tensor_release(a);
}

static void test_json(void) {
    char err[200];
    const char *good = "{\"a\": [1, -2, 3.5e1, true, null, \"\\u00e9\\ud83d\\ude00\"]}";
    rt_json *v = rt_json_parse(good, strlen(good), err, sizeof err);
    CHECK(v && v->type == RT_JSON_OBJECT && v->count == 1);
    if (v) {
        const rt_json *arr = v->child;
        CHECK(!strcmp(arr->key, "a") && arr->count == 6);
        const rt_json *e = arr->child;
        CHECK(e->is_int && e->ival == 1);
        e = e->next;
        CHECK(e->is_int && e->ival == -2);
        e = e->next;
        CHECK(!e->is_int && e->dval == 35.0);
        e = e->next->next->next;
        CHECK(e->type == RT_JSON_STRING && !strcmp(e->str, "\xc3\xa9\xf0\x9f\x98\x80"));
    }
    rt_json_free(v);
    const char *bad[] = {"",
                         "{",
                         "[1,]",
                         "01",
                         "1.",
                         "-",
                         "\"a",
                         "tru",
                         "{\"a\" 1}",
                         "[1 2]",
                         "9223372036854775808x",
                         "\"\\x\"",
                         "[] []"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = rt_json_parse(bad[i], strlen(bad[i]), err, sizeof err);
        if (v) fprintf(stderr, "accepted bad JSON: %s\n", bad[i]);
        CHECK(v == NULL && strstr(err, "at byte"));
        rt_json_free(v);
    }
    v = rt_json_parse("9223372036854775807", 19, err, sizeof err);
    CHECK(v && v->is_int && v->ival == INT64_MAX);
    rt_json_free(v);
    v = rt_json_parse("9223372036854775808", 19, err, sizeof err);
    CHECK(v && !v->is_int); /* a number, but not an int64 */
    rt_json_free(v);
}

int main(void) {
    init_paths();
    RUN(test_json);
    RUN(test_corpus);
    RUN(test_all_dtypes_values);
    RUN(test_round_trip);
    RUN(test_atomic_save);
    RUN(test_save_errors);
    rmdir(g_tmp);
    CHECK(rt_live_tensors() == 0);
    if (rt_live_tensors() != 0) g_tests_failed++;
    return test_summary();
}
