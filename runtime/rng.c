/* rng.c: the global counter-based generator. A draw of n numbers reserves counters
 * [offset, offset + n); element i is a pure function of (seed, offset + i) computed by the kernel
 * (Philox-style mixing in kernels/cpu/random.c and its CUDA twin), so results do not depend on the
 * thread count or the device. */
#include "internal.h"

#include <pthread.h>

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t g_seed = 0x853c49e6748fea9bULL;
static uint64_t g_offset;

void rt_manual_seed(uint64_t seed) {
    rt_rng_set_state(seed, 0);
}

void rt_rng_get_state(uint64_t *seed, uint64_t *offset) {
    pthread_mutex_lock(&g_lock);
    *seed = g_seed;
    *offset = g_offset;
    pthread_mutex_unlock(&g_lock);
}

void rt_rng_set_state(uint64_t seed, uint64_t offset) {
    pthread_mutex_lock(&g_lock);
    g_seed = seed;
    g_offset = offset;
    pthread_mutex_unlock(&g_lock);
}

uint64_t rt_rng_seed(void) {
    pthread_mutex_lock(&g_lock);
    uint64_t s = g_seed;
    pthread_mutex_unlock(&g_lock);
    return s;
}

uint64_t rt_rng_reserve(uint64_t n) {
    pthread_mutex_lock(&g_lock);
    uint64_t o = g_offset;
    g_offset += (n + 3) & ~(uint64_t)3; /* keep draws aligned to 4 for vectorised generators */
    pthread_mutex_unlock(&g_lock);
    return o;
}

/* ---- creation through the backend's counter-based fills ------------------------------------ */

typedef enum { DRAW_UNIFORM, DRAW_NORMAL, DRAW_INT } draw_kind;

/* lo/hi: randint's bounds, kept as int64 (a double holds them exactly only up to 2^53) */
static int draw(const char *op, rt_tensor *t, draw_kind kind, double a, double b, int64_t lo,
                int64_t hi) {
    const rt_backend *be = t->storage->backend;
    rt_kview v = rt_kview_of(t);
    if (t->meta.numel == 0) return RT_OK;
    RT_TRY(rt_check_no_internal_overlap(op, t));
    RT_TRY(rt_check_inplace_autograd(op, t));
    if (kind != DRAW_INT && !rt_dtype_is_float(t->meta.dtype))
        return RT_ERR(RT_ERR_DTYPE, "%s: expected a floating-point dtype, got %s", op,
                      rt_dtype_name(t->meta.dtype));
    uint64_t seed = rt_rng_seed(), off = rt_rng_reserve((uint64_t)t->meta.numel);
    int rc;
    if (kind == DRAW_UNIFORM)
        rc = RT_BE_CALL(be, fill_uniform, op, &v, seed, off, a, b);
    else if (kind == DRAW_NORMAL)
        rc = RT_BE_CALL(be, fill_normal, op, &v, seed, off, a, b);
    else
        rc = RT_BE_CALL(be, fill_randint, op, &v, seed, off, lo, hi);
    if (rc == RT_OK) rt_tensor_bump_version(t);
    return rc;
}

static int new_and_draw(const char *op, int ndim, const int64_t *shape, int dtype, int device,
                        draw_kind kind, double a, double b, int64_t lo, int64_t hi,
                        rt_tensor **out) {
    RT_TRY(rt_tensor_new(ndim, shape, dtype, device, out));
    int rc = draw(op, *out, kind, a, b, lo, hi);
    if (rc < 0) {
        rt_tensor_release(*out);
        *out = NULL;
    }
    return rc;
}

int rt_rand(int ndim, const int64_t *shape, int dtype, int device, rt_tensor **out) {
    return new_and_draw("rand", ndim, shape, dtype, device, DRAW_UNIFORM, 0.0, 1.0, 0, 0, out);
}

int rt_randn(int ndim, const int64_t *shape, int dtype, int device, rt_tensor **out) {
    return new_and_draw("randn", ndim, shape, dtype, device, DRAW_NORMAL, 0.0, 1.0, 0, 0, out);
}

int rt_randint(int64_t low, int64_t high, int ndim, const int64_t *shape, int dtype, int device,
               rt_tensor **out) {
    *out = NULL;
    if (high <= low)
        return RT_ERR(RT_ERR_INVALID, "randint: expected low < high, got low=%lld high=%lld",
                      (long long)low, (long long)high);
    /* as PyTorch's random_(from, to): both ends must fit the dtype (floats: integers exact in it)
     */
    int64_t dmin = 0, dmax = 0;
    switch (dtype) {
    case RT_U8:
        dmax = 255;
        break;
    case RT_BOOL:
        dmax = 1;
        break;
    case RT_I32:
        dmin = INT32_MIN, dmax = INT32_MAX;
        break;
    case RT_F32:
        dmin = -((int64_t)1 << 24), dmax = (int64_t)1 << 24;
        break;
    case RT_BF16:
        dmin = -((int64_t)1 << 8), dmax = (int64_t)1 << 8;
        break;
    case RT_F16:
        dmin = -((int64_t)1 << 11), dmax = (int64_t)1 << 11;
        break;
    case RT_F64:
        dmin = -((int64_t)1 << 53), dmax = (int64_t)1 << 53;
        break;
    default:
        dmin = INT64_MIN, dmax = INT64_MAX;
    }
    if (low < dmin || low > dmax || high - 1 > dmax)
        return RT_ERR(RT_ERR_INVALID,
                      "randint: [low, high) = [%lld, %lld) is out of bounds for %s (expected "
                      "values in [%lld, %lld])",
                      (long long)low, (long long)high, rt_dtype_name(dtype), (long long)dmin,
                      (long long)dmax);
    return new_and_draw("randint", ndim, shape, dtype, device, DRAW_INT, 0.0, 0.0, low, high, out);
}

int rt_uniform_(rt_tensor *t, double lo, double hi) {
    return draw("uniform_", t, DRAW_UNIFORM, lo, hi, 0, 0);
}

int rt_normal_(rt_tensor *t, double mean, double std) {
    return draw("normal_", t, DRAW_NORMAL, mean, std, 0, 0);
}
