/* tensor.c: storage and tensor lifetime, geometry helpers, creation, host transfer and copies. */
#include "internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

atomic_llong rt_g_live_tensors;
atomic_llong rt_g_host_bytes;
/* Bytes of tensor storage allocated (any device) since Lua last reset the counter. Lua frees
 * tensors only when its garbage collector runs their finalizers, and it does not see the bytes
 * behind them; it reads this through rt_alloc_pressure() after each op and collects once enough was
 * allocated, so a training loop reuses memory instead of growing until the next natural collection.
 */
static int64_t g_alloc_pressure;
/* Bytes held by live tensor storages on every device (the GC pacing's notion of "live"). */
static int64_t g_live_storage_bytes;

int64_t rt_live_storage_bytes(void) {
    return __atomic_load_n(&g_live_storage_bytes, __ATOMIC_RELAXED);
}

int64_t *rt_alloc_pressure(void) {
    return &g_alloc_pressure;
}

int64_t rt_live_tensors(void) {
    return atomic_load(&rt_g_live_tensors);
}
int64_t rt_host_bytes_allocated(void) {
    return atomic_load(&rt_g_host_bytes);
}

/* ================================================================================================
 * dtypes
 * ============================================================================================== */

static const char *const k_dtype_names[RT_NUM_DTYPES] = {
    "float32", "bfloat16", "float16", "float64", "int64", "int32", "uint8", "bool"};
static const size_t k_dtype_sizes[RT_NUM_DTYPES] = {4, 2, 2, 8, 8, 4, 1, 1};

const char *rt_dtype_name(int dtype) {
    return dtype >= 0 && dtype < RT_NUM_DTYPES ? k_dtype_names[dtype] : "?";
}
size_t rt_dtype_size(int dtype) {
    return dtype >= 0 && dtype < RT_NUM_DTYPES ? k_dtype_sizes[dtype] : 0;
}
int rt_dtype_is_float(int dtype) {
    return dtype == RT_F32 || dtype == RT_BF16 || dtype == RT_F16 || dtype == RT_F64;
}

/* Rank of a dtype in PyTorch's promotion lattice (bool < u8 < i32 < i64 < f16/bf16 < f32 < f64). */
static int promo_rank(int d) {
    switch (d) {
    case RT_BOOL:
        return 0;
    case RT_U8:
        return 1;
    case RT_I32:
        return 2;
    case RT_I64:
        return 3;
    case RT_F16:
    case RT_BF16:
        return 4;
    case RT_F32:
        return 5;
    case RT_F64:
        return 6;
    }
    return -1;
}

int rt_promote_types(int a, int b) {
    if (a == b) return a;
    if ((a == RT_BF16 && b == RT_F16) || (a == RT_F16 && b == RT_BF16)) return RT_F32;
    return promo_rank(a) >= promo_rank(b) ? a : b;
}

/* PyTorch's result_type for two tensors: a 0-dim tensor takes part in the promotion only when its
 * category (bool < integer < floating) is above the other's, so float32 + a 0-dim float64 stays
 * float32, bfloat16 + a 0-dim float32 stays bfloat16, int32 + a 0-dim int64 stays int32, while
 * int64 + a 0-dim float32 is float32 (c10's combine_categories). */
int rt_result_type2(const rt_tensor *a, const rt_tensor *b) {
    int ta = a->meta.dtype, tb = b->meta.dtype;
    int da = a->meta.ndim > 0, db = b->meta.ndim > 0;
    if (da == db) return rt_promote_types(ta, tb);
    int dim = da ? ta : tb, zero = da ? tb : ta;
    if (rt_dtype_is_float(dim)) return dim;
    if (dim == RT_BOOL || rt_dtype_is_float(zero)) return rt_promote_types(dim, zero);
    return dim;
}

/* As c10::checked_convert: a float type takes inf and NaN but no finite value beyond its largest;
 * an integer type takes no NaN, inf or out-of-range value, except that an integral negative number
 * down to -255 wraps into uint8 (PyTorch allows that for two's-complement arithmetic); a fraction
 * that fits is truncated later. bool takes anything. Without the check the value would be wrapped,
 * saturated or turned into inf silently (full(300) as uint8 was 44). */
int rt_check_scalar_fits(const char *op, double v, int dtype) {
    double lo, hi;
    switch (dtype) {
    case RT_F32:
        hi = 3.4028234663852886e38;
        break;
    case RT_BF16:
        hi = 3.3895313892515355e38;
        break;
    case RT_F16:
        hi = 65504.0;
        break;
    case RT_I64:
        hi = 9223372036854775807.0; /* rounds to 2^63, which itself does not fit: compared >= */
        break;
    case RT_I32:
        hi = 2147483647.0;
        break;
    case RT_U8:
        hi = 255.0;
        break;
    default: /* f64, bool */
        return RT_OK;
    }
    bool fits;
    if (rt_dtype_is_float(dtype)) {
        fits = isnan(v) || isinf(v) || (v >= -hi && v <= hi);
    } else {
        lo = dtype == RT_U8 ? (v == floor(v) ? -255.0 : 0.0) : -hi - 1.0;
        fits = !isnan(v) && v >= lo && (dtype == RT_I64 ? v < hi : v <= hi);
    }
    if (fits) return RT_OK;
    char buf[64];
    if (isnan(v))
        snprintf(buf, sizeof buf, "nan"); /* 0/0 is -nan on x86; the sign means nothing here */
    else if (v == floor(v) && fabs(v) < 1e18)
        snprintf(buf, sizeof buf, "%.0f", v);
    else
        snprintf(buf, sizeof buf, "%g", v);
    return RT_ERR(RT_ERR_INVALID, "%s: value %s cannot be converted to type %s without overflow",
                  op, buf, rt_dtype_name(dtype));
}

/* ================================================================================================
 * Geometry
 * ============================================================================================== */

int64_t rt_shape_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

void rt_contiguous_strides(int ndim, const int64_t *shape, int64_t *strides) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

int rt_same_shape(const rt_tensor *a, const rt_tensor *b) {
    if (a->meta.ndim != b->meta.ndim) return 0;
    for (int i = 0; i < a->meta.ndim; i++)
        if (a->meta.shape[i] != b->meta.shape[i]) return 0;
    return 1;
}

int rt_wrap_dim(const char *op, int dim, int ndim, int *out) {
    int n = ndim > 0 ? ndim : 1; /* a scalar accepts dim 0 / -1, like PyTorch */
    if (dim < -n || dim >= n)
        return RT_ERR(RT_ERR_INDEX,
                      "%s: dimension %d out of range for a tensor of %d dims "
                      "(expected %d to %d)",
                      op, dim, ndim, -n, n - 1);
    *out = dim < 0 ? dim + n : dim;
    return RT_OK;
}

static const char *device_str(char *buf, size_t n, int device) {
    if (device == RT_DEVICE_CPU) return "cpu";
    snprintf(buf, n, "cuda:%d", device);
    return buf;
}

int rt_check_no_internal_overlap(const char *op, const rt_tensor *t) {
    for (int d = 0; d < t->meta.ndim; d++)
        if (t->meta.shape[d] > 1 && t->meta.strides[d] == 0) {
            char b[RT_SHAPE_BUF];
            return RT_ERR(RT_ERR_INVALID,
                          "%s: unsupported operation: more than one element of the written-to "
                          "tensor refers to a single memory location (dim %d of the %s tensor is "
                          "expanded); clone() it first",
                          op, d, rt_shape_str(b, sizeof b, t->meta.ndim, t->meta.shape));
        }
    return RT_OK;
}

/* PyTorch's is_non_overlapping_and_dense: the elements tile one contiguous block in some dim order
 * (size-1 dims ignored). */
static int non_overlapping_and_dense(const rt_tensor *t) {
    int nd = t->meta.ndim, perm[RT_MAX_DIMS], n = 0;
    for (int d = 0; d < nd; d++)
        if (t->meta.shape[d] != 1) perm[n++] = d;
    for (int i = 1; i < n; i++) /* insertion sort by stride, smallest first */
        for (int j = i; j > 0 && t->meta.strides[perm[j]] < t->meta.strides[perm[j - 1]]; j--) {
            int tmp = perm[j];
            perm[j] = perm[j - 1];
            perm[j - 1] = tmp;
        }
    int64_t expect = 1;
    for (int i = 0; i < n; i++) {
        if (t->meta.strides[perm[i]] != expect) return 0;
        expect *= t->meta.shape[perm[i]];
    }
    return 1;
}

enum { OVERLAP_NO, OVERLAP_FULL, OVERLAP_PARTIAL };

/* PyTorch's get_overlap_status; "too hard" (a non-dense side) counts as no overlap, as there. */
static int overlap_status(const rt_tensor *a, const rt_tensor *b) {
    if (a == b) return OVERLAP_FULL;
    if (a->meta.numel == 0 || b->meta.numel == 0 || a->meta.device != b->meta.device)
        return OVERLAP_NO;
    if (!non_overlapping_and_dense(a) || !non_overlapping_and_dense(b)) return OVERLAP_NO;
    /* byte ranges, so that two storages over one buffer (arena slices) are seen too */
    const char *ab = (const char *)rt_kview_of(a).data, *bb = (const char *)rt_kview_of(b).data;
    const char *ae = ab + a->meta.numel * (int64_t)rt_dtype_size(a->meta.dtype);
    const char *be = bb + b->meta.numel * (int64_t)rt_dtype_size(b->meta.dtype);
    if (ab == bb && ae == be) {
        if (a->meta.ndim != b->meta.ndim) return OVERLAP_PARTIAL;
        for (int d = 0; d < a->meta.ndim; d++)
            if (a->meta.strides[d] != b->meta.strides[d]) return OVERLAP_PARTIAL;
        return OVERLAP_FULL;
    }
    return ab < be && bb < ae ? OVERLAP_PARTIAL : OVERLAP_NO;
}

static int overlap_error(const char *op) {
    return RT_ERR(RT_ERR_INVALID,
                  "%s: unsupported operation: some elements of the input tensor and the written-to "
                  "tensor refer to a single memory location; clone() the input first",
                  op);
}

int rt_check_no_partial_overlap(const char *op, const rt_tensor *dst, const rt_tensor *src) {
    return overlap_status(dst, src) == OVERLAP_PARTIAL ? overlap_error(op) : RT_OK;
}

int rt_check_no_overlap(const char *op, const rt_tensor *dst, const rt_tensor *src) {
    return overlap_status(dst, src) != OVERLAP_NO ? overlap_error(op) : RT_OK;
}

int rt_check_same_device(const char *op, const rt_tensor *a, const rt_tensor *b) {
    if (a->meta.device == b->meta.device) return RT_OK;
    char da[16], db[16];
    return RT_ERR(RT_ERR_DEVICE, "%s: expected tensors on one device, got %s and %s", op,
                  device_str(da, sizeof da, a->meta.device),
                  device_str(db, sizeof db, b->meta.device));
}

int rt_broadcast_shapes(const char *op, int na, const int64_t *sa, int nb, const int64_t *sb,
                        int *nout, int64_t *out) {
    int n = na > nb ? na : nb;
    for (int i = 0; i < n; i++) {
        int ia = na - n + i, ib = nb - n + i;
        int64_t da = ia >= 0 ? sa[ia] : 1, db = ib >= 0 ? sb[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char ba[RT_SHAPE_BUF], bb[RT_SHAPE_BUF];
            return RT_ERR(RT_ERR_SHAPE,
                          "%s: shapes %s and %s cannot be broadcast (dimension %d: %lld vs %lld)",
                          op, rt_shape_str(ba, sizeof ba, na, sa),
                          rt_shape_str(bb, sizeof bb, nb, sb), i - n, (long long)da, (long long)db);
        }
        out[i] = da == 1 ? db : da;
    }
    *nout = n;
    return RT_OK;
}

rt_kview rt_kview_of(const rt_tensor *t) {
    rt_kview v;
    v.data = (char *)t->storage->data + t->meta.offset * (int64_t)rt_dtype_size(t->meta.dtype);
    v.dtype = t->meta.dtype;
    v.ndim = t->meta.ndim;
    v.numel = t->meta.numel;
    for (int i = 0; i < RT_MAX_DIMS; i++) {
        v.shape[i] = i < v.ndim ? t->meta.shape[i] : 1;
        v.strides[i] = i < v.ndim ? t->meta.strides[i] : 0;
    }
    return v;
}

int rt_kview_broadcast(const rt_tensor *t, int ndim, const int64_t *shape, rt_kview *out) {
    rt_kview v = rt_kview_of(t);
    int nt = t->meta.ndim;
    if (nt > ndim) {
        char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF];
        return RT_ERR(RT_ERR_SHAPE, "broadcast: cannot broadcast %s to %s",
                      rt_shape_str(b1, sizeof b1, nt, t->meta.shape),
                      rt_shape_str(b2, sizeof b2, ndim, shape));
    }
    for (int i = 0; i < ndim; i++) {
        int it = nt - ndim + i;
        int64_t d = it >= 0 ? t->meta.shape[it] : 1;
        int64_t s = it >= 0 ? t->meta.strides[it] : 0;
        if (d != shape[i]) {
            if (d != 1) {
                char b1[RT_SHAPE_BUF], b2[RT_SHAPE_BUF];
                return RT_ERR(RT_ERR_SHAPE, "broadcast: cannot broadcast %s to %s",
                              rt_shape_str(b1, sizeof b1, nt, t->meta.shape),
                              rt_shape_str(b2, sizeof b2, ndim, shape));
            }
            s = 0;
        }
        v.shape[i] = shape[i];
        v.strides[i] = s;
    }
    v.ndim = ndim;
    v.numel = rt_shape_numel(ndim, shape);
    *out = v;
    return RT_OK;
}

/* ================================================================================================
 * Storage and tensor lifetime
 * ============================================================================================== */

/* ---- per-thread caches of tensor headers, storage headers and small host blocks -----------------
 * A small op (an add of two 16-element tensors) allocates a tensor header, a storage header and a
 * data block, and frees three when the result dies; through malloc that was a third of its time.
 * Freed blocks wait in bounded per-thread lists instead and are reused by the next allocation on
 * that thread (a block freed on another thread just joins that thread's list). Data blocks are kept
 * by their allocated size (64-byte multiples up to RT_SMALL_BLOCK), exactly as cpu_alloc made them,
 * so whoever frees one with free() (rt_pin_memory swapping a storage's memory) stays correct.
 * Under AddressSanitizer the caches are off so use-after-free is still caught. */
#if defined(__SANITIZE_ADDRESS__)
#define RT_NO_CACHE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RT_NO_CACHE 1
#endif
#endif

#define RT_SMALL_BLOCK 1024 /* bytes: data blocks up to this size are cached */
#define RT_SMALL_CLASSES (RT_SMALL_BLOCK / 64)
/* Blocks kept per list. Lua's collector frees results in bursts (one sweep finalizes every tensor
 * that died since the last: about 8000 in a loop of small ops), so a list must hold a burst's worth
 * to be of use: at most 16384 blocks and 2 MiB per header list, 1 MiB per data list (at most about
 * 20 MiB per thread, and only what a program actually cycled through). */
#define RT_CACHE_HEADER_BYTES (2 * 1024 * 1024)
#define RT_CACHE_DATA_BYTES (1024 * 1024)
#define RT_CACHE_MAX_BLOCKS 16384

typedef struct rt_free_block {
    struct rt_free_block *next;
} rt_free_block;

typedef struct rt_block_list {
    rt_free_block *head;
    int n;
    int cap; /* set on first use from the block size */
} rt_block_list;

#ifndef RT_NO_CACHE
static _Thread_local rt_block_list tl_tensors, tl_storages, tl_data[RT_SMALL_CLASSES];
#endif

#ifndef RT_NO_CACHE
#define TENSOR_LIST (&tl_tensors)
#define STORAGE_LIST (&tl_storages)
#else
static rt_block_list g_no_list;
#define TENSOR_LIST (&g_no_list)
#define STORAGE_LIST (&g_no_list)
#endif

static void *cache_pop(rt_block_list *l) {
#ifndef RT_NO_CACHE
    rt_free_block *b = l->head;
    if (b) {
        l->head = b->next;
        l->n--;
    }
    return b;
#else
    (void)l;
    return NULL;
#endif
}

/* Keep p (a block of `size` bytes) for reuse, or free it when the list is full. */
static void cache_push(rt_block_list *l, void *p, size_t size) {
#ifndef RT_NO_CACHE
    if (!l->cap) {
        size_t budget = size <= RT_SMALL_BLOCK && l != TENSOR_LIST && l != STORAGE_LIST
                            ? RT_CACHE_DATA_BYTES
                            : RT_CACHE_HEADER_BYTES;
        size_t cap = budget / (size < 64 ? 64 : size);
        l->cap = (int)(cap < RT_CACHE_MAX_BLOCKS ? cap : RT_CACHE_MAX_BLOCKS);
    }
    if (l->n < l->cap) {
        rt_free_block *b = p;
        b->next = l->head;
        l->head = b;
        l->n++;
        return;
    }
#else
    (void)l;
    (void)size;
#endif
    free(p);
}

/* The data-block list for an allocation of nbytes on the CPU backend, or NULL when not cached. */
static rt_block_list *data_list(const rt_backend *be, size_t nbytes, int memkind) {
#ifndef RT_NO_CACHE
    if (be == &rt_cpu_backend && memkind == RT_MEM_HOST && nbytes <= RT_SMALL_BLOCK) {
        size_t rounded = (nbytes + 63) & ~(size_t)63; /* what cpu_alloc allocates */
        return &tl_data[(rounded ? rounded : 64) / 64 - 1];
    }
#else
    (void)be;
    (void)nbytes;
    (void)memkind;
#endif
    return NULL;
}

/* Drop one reference; true when it was the last. A count of 1 means no other holder exists who
 * could race with us, so the atomic read-modify-write is skipped in that (common) case. */
static inline bool drop_ref(atomic_int *rc) {
    if (atomic_load_explicit(rc, memory_order_acquire) == 1) return true;
    return atomic_fetch_sub_explicit(rc, 1, memory_order_acq_rel) == 1;
}

static uint64_t g_storage_uid; /* rt_storage.uid */

static int storage_new(int device, size_t nbytes, rt_storage **out) {
    const rt_backend *be = rt_backend_for(device);
    if (!be) return rt_last_error_code() ? rt_last_error_code() : RT_ERR_DEVICE;
    rt_storage *s = cache_pop(STORAGE_LIST);
    if (s)
        memset(s, 0, sizeof *s);
    else
        s = calloc(1, sizeof *s);
    if (!s) return RT_ERR(RT_ERR_OOM, "alloc: out of host memory for a storage header");
    int memkind = device == RT_DEVICE_CPU ? RT_MEM_HOST : RT_MEM_DEVICE;
    rt_block_list *dl = data_list(be, nbytes, memkind);
    s->data = dl ? cache_pop(dl) : NULL;
    int rc = s->data ? RT_OK : be->alloc(device, nbytes, memkind, &s->data);
    if (rc < 0) {
        cache_push(STORAGE_LIST, s, sizeof *s);
        return rc;
    }
    atomic_init(&s->refcount, 1);
    atomic_init(&s->version, 0);
    s->uid = __atomic_add_fetch(&g_storage_uid, 1, __ATOMIC_RELAXED);
    s->nbytes = nbytes;
    s->device = device;
    s->memkind = memkind;
    s->backend = be;
    if (device == RT_DEVICE_CPU) atomic_fetch_add(&rt_g_host_bytes, (long long)nbytes);
    __atomic_fetch_add(&g_alloc_pressure, (int64_t)nbytes, __ATOMIC_RELAXED);
    __atomic_fetch_add(&g_live_storage_bytes, (int64_t)nbytes, __ATOMIC_RELAXED);
    *out = s;
    return RT_OK;
}

/* A storage about to point at foreign memory (pinned, arena) stops counting its bytes as tensor
 * memory; its deleter frees it without touching the counters. */
void rt_storage_untrack(rt_storage *s) {
    if (s->device == RT_DEVICE_CPU) atomic_fetch_sub(&rt_g_host_bytes, (long long)s->nbytes);
    __atomic_fetch_sub(&g_live_storage_bytes, (int64_t)s->nbytes, __ATOMIC_RELAXED);
}

static void storage_release(rt_storage *s) {
    if (!s || !drop_ref(&s->refcount)) return;
    if (s->deleter) {
        s->deleter(s->deleter_ctx, s->data);
    } else {
        rt_block_list *dl = data_list(s->backend, s->nbytes, s->memkind);
        if (dl)
            cache_push(dl, s->data, (s->nbytes + 63) & ~(size_t)63);
        else
            s->backend->free(s->device, s->data, s->memkind, s->nbytes);
        if (s->device == RT_DEVICE_CPU) atomic_fetch_sub(&rt_g_host_bytes, (long long)s->nbytes);
        __atomic_fetch_sub(&g_live_storage_bytes, (int64_t)s->nbytes, __ATOMIC_RELAXED);
    }
    cache_push(STORAGE_LIST, s, sizeof *s);
}

static int check_shape(const char *op, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > RT_MAX_DIMS)
        return RT_ERR(RT_ERR_SHAPE, "%s: %d dimensions requested, at most %d supported", op, ndim,
                      RT_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) {
            char b[RT_SHAPE_BUF];
            return RT_ERR(RT_ERR_SHAPE, "%s: negative dimension in shape %s", op,
                          rt_shape_str(b, sizeof b, ndim, shape));
        }
    return RT_OK;
}

static rt_tensor *tensor_header(void) {
    rt_tensor *t = cache_pop(TENSOR_LIST);
    if (t)
        memset(t, 0, sizeof *t);
    else
        t = calloc(1, sizeof *t);
    if (!t) return NULL;
    atomic_init(&t->refcount, 1);
    t->meta.is_leaf = 1;
    atomic_fetch_add(&rt_g_live_tensors, 1);
    return t;
}

/* What any allocation of a (shape, dtype) must pass (rt_tensor_new, the host arena): at most
 * RT_MAX_DIMS dims, none negative, a known dtype, and numel * itemsize within int64 (a wrapped
 * product would hand out a small buffer for a huge shape, which a fill then overruns). A zero dim
 * makes the tensor empty whatever the others, as in PyTorch. */
int rt_check_alloc_shape(const char *op, int ndim, const int64_t *shape, int dtype) {
    RT_TRY(check_shape(op, ndim, shape));
    if (rt_dtype_size(dtype) == 0)
        return RT_ERR(RT_ERR_DTYPE, "%s: unknown dtype code %d", op, dtype);
    uint64_t nb = rt_dtype_size(dtype);
    bool zero = false, ovf = false;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] == 0)
            zero = true;
        else if (__builtin_mul_overflow(nb, (uint64_t)shape[i], &nb))
            ovf = true;
    }
    if (!zero && (ovf || nb > (uint64_t)INT64_MAX)) {
        char b[RT_SHAPE_BUF];
        return RT_ERR(RT_ERR_SHAPE, "%s: shape %s of %s is too large (its size in bytes overflows)",
                      op, rt_shape_str(b, sizeof b, ndim, shape), rt_dtype_name(dtype));
    }
    return RT_OK;
}

int rt_tensor_new(int ndim, const int64_t *shape, int dtype, int device, rt_tensor **out) {
    *out = NULL;
    RT_TRY(rt_check_alloc_shape("empty", ndim, shape, dtype));
    rt_tensor *t = tensor_header();
    if (!t) return RT_ERR(RT_ERR_OOM, "empty: out of host memory for a tensor header");
    t->meta.dtype = dtype;
    t->meta.device = device;
    t->meta.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->meta.shape[i] = shape[i];
    rt_contiguous_strides(ndim, shape, t->meta.strides);
    t->meta.numel = rt_shape_numel(ndim, shape);
    size_t nbytes = (size_t)t->meta.numel * rt_dtype_size(dtype);
    int rc = storage_new(device, nbytes, &t->storage);
    if (rc < 0) {
        atomic_fetch_sub(&rt_g_live_tensors, 1);
        cache_push(TENSOR_LIST, t, sizeof *t);
        return rc;
    }
    t->meta.memkind = t->storage->memkind;
    *out = t;
    return RT_OK;
}

int rt_tensor_new_view(rt_tensor *t, int ndim, const int64_t *shape, const int64_t *strides,
                       int64_t offset, rt_tensor **out) {
    *out = NULL;
    RT_TRY(check_shape("view", ndim, shape));
    rt_tensor *v = tensor_header();
    if (!v) return RT_ERR(RT_ERR_OOM, "view: out of host memory for a tensor header");
    v->meta = t->meta;
    v->meta.ndim = ndim;
    for (int i = 0; i < RT_MAX_DIMS; i++) {
        v->meta.shape[i] = i < ndim ? shape[i] : 0;
        v->meta.strides[i] = i < ndim ? strides[i] : 0;
    }
    v->meta.numel = rt_shape_numel(ndim, shape);
    v->meta.offset = offset;
    v->meta.requires_grad = 0;
    v->meta.is_leaf = 1;
    v->storage = t->storage;
    atomic_fetch_add(&t->storage->refcount, 1);
    *out = v;
    return RT_OK;
}

void rt_tensor_retain(rt_tensor *t) {
    if (t) atomic_fetch_add(&t->refcount, 1);
}

void rt_tensor_release(rt_tensor *t) {
    if (!t || !drop_ref(&t->refcount)) return;
    rt_node_release(t->grad_fn);
    rt_tensor_release(t->grad);
    storage_release(t->storage);
    atomic_fetch_sub(&rt_g_live_tensors, 1);
    cache_push(TENSOR_LIST, t, sizeof *t);
}

/* t takes src's storage (src contiguous, t's shape and dtype): the offload engine's migration of a
 * resident parameter to the device and back (the same tensor, so every holder of it, an optimizer
 * or a module, sees the move). Views made of the old storage keep it. The version continues past
 * the old one, so a graph that saved t before the move fails its backward instead of reading the
 * new storage as if it were the old. */
int rt_tensor_adopt_storage_(rt_tensor *t, rt_tensor *src) {
    if (!rt_tensor_is_contiguous(t) || !rt_tensor_is_contiguous(src) || !rt_same_shape(t, src) ||
        t->meta.dtype != src->meta.dtype)
        return RT_ERR(RT_ERR_INVALID,
                      "adopt_storage: expected contiguous tensors of one shape and dtype");
    rt_storage *old = t->storage;
    int ver = atomic_load(&old->version);
    t->storage = src->storage;
    atomic_fetch_add(&t->storage->refcount, 1);
    atomic_store(&t->storage->version, ver + 1);
    t->meta.device = src->meta.device;
    t->meta.offset = src->meta.offset;
    t->meta.memkind = src->meta.memkind;
    rt_contiguous_strides(t->meta.ndim, t->meta.shape, t->meta.strides);
    storage_release(old);
    return RT_OK;
}

/* t's values in storage of its own on device (rt_tensor_adopt_storage_ of a copy). */
int rt_tensor_move_storage_(rt_tensor *t, int device) {
    if (!rt_tensor_is_contiguous(t))
        return RT_ERR(RT_ERR_INVALID, "move_storage: the tensor must be contiguous");
    rt_tensor *d = NULL;
    RT_TRY(rt_tensor_new(t->meta.ndim, t->meta.shape, t->meta.dtype, device, &d));
    int rc = rt_copy_(d, t);
    if (rc == RT_OK) rc = rt_tensor_adopt_storage_(t, d);
    rt_tensor_release(d);
    return rc;
}

void rt_tensor_ref_release(rt_tensor_ref *ref) {
    if (!ref) return;
    rt_tensor *t = ref->p;
    ref->p = NULL;
    rt_tensor_release(t);
}

const rt_tensor_meta *rt_tensor_meta_of(const rt_tensor *t) {
    return &t->meta;
}

void *rt_tensor_data_ptr(const rt_tensor *t) {
    return (char *)t->storage->data + t->meta.offset * (int64_t)rt_dtype_size(t->meta.dtype);
}

int rt_tensor_is_contiguous(const rt_tensor *t) {
    /* empty: contiguous, as in PyTorch (rt_contiguous_strides gives shape (8, 0) strides (1, 1)) */
    if (t->meta.numel == 0) return 1;
    int64_t s = 1;
    for (int i = t->meta.ndim - 1; i >= 0; i--) {
        if (t->meta.shape[i] != 1 && t->meta.strides[i] != s) return 0;
        s *= t->meta.shape[i];
    }
    return 1;
}

int64_t rt_tensor_storage_nbytes(const rt_tensor *t) {
    return (int64_t)t->storage->nbytes;
}

void rt_tensor_bump_version(rt_tensor *t) {
    atomic_fetch_add(&t->storage->version, 1);
}

/* ================================================================================================
 * Creation
 * ============================================================================================== */

int rt_empty(int ndim, const int64_t *shape, int dtype, int device, rt_tensor **out) {
    return rt_tensor_new(ndim, shape, dtype, device, out);
}

int rt_fill_(rt_tensor *t, double value) {
    RT_TRY(rt_check_scalar_fits("fill_", value, t->meta.dtype));
    RT_TRY(rt_check_inplace_autograd("fill_", t));
    if (t->meta.numel == 0) return RT_OK;
    rt_kview v = rt_kview_of(t);
    RT_TRY(RT_BE_CALL(t->storage->backend, fill, "fill_", &v, value));
    rt_tensor_bump_version(t);
    return RT_OK;
}

int rt_full(int ndim, const int64_t *shape, double value, int dtype, int device, rt_tensor **out) {
    *out = NULL;
    RT_TRY(rt_check_scalar_fits("full", value, dtype));
    RT_TRY(rt_tensor_new(ndim, shape, dtype, device, out));
    int rc = rt_fill_(*out, value);
    if (rc < 0) {
        rt_tensor_release(*out);
        *out = NULL;
    }
    return rc;
}

/* *out, made on the host in `have` dtype, converted to dtype (rounded once per element) and moved
 * to device; *out is released and replaced at each step */
static int arange_finish(int have, int dtype, int device, rt_tensor **out) {
    if (dtype == have && device == RT_DEVICE_CPU) return RT_OK;
    rt_tensor *tmp = *out;
    int rc = rt_to_dtype(tmp, dtype, out);
    rt_tensor_release(tmp);
    if (rc < 0 || device == RT_DEVICE_CPU) return rc;
    tmp = *out;
    rc = rt_to_device(tmp, device, out);
    rt_tensor_release(tmp);
    return rc;
}

int rt_arange(double start, double end, double step, int dtype, int device, rt_tensor **out) {
    *out = NULL;
    if (step == 0 || (step > 0 && start > end) || (step < 0 && start < end))
        return RT_ERR(
            RT_ERR_INVALID,
            "arange: step %g cannot go from %g to %g (expected a non-zero step toward end)", step,
            start, end);
    int64_t n = (int64_t)ceil((end - start) / step);
    RT_TRY(rt_tensor_new(1, &n, RT_F64, RT_DEVICE_CPU, out));
    double *p = rt_tensor_data_ptr(*out);
    for (int64_t i = 0; i < n; i++)
        p[i] = start + (double)i * step;
    return arange_finish(RT_F64, dtype, device, out);
}

/* rt_arange_i64: computed in int64, so that integral ranges beyond 2^53 are exact (rt_arange's
 * doubles round there) */
int rt_arange_i64(int64_t start, int64_t end, int64_t step, int dtype, int device,
                  rt_tensor **out) {
    *out = NULL;
    if (step == 0 || (step > 0 && start > end) || (step < 0 && start < end))
        return RT_ERR(RT_ERR_INVALID,
                      "arange: step %" PRId64 " cannot go from %" PRId64 " to %" PRId64
                      " (expected a non-zero step toward end)",
                      step, start, end);
    /* |end - start| and |step| in uint64: both fit there even when the signed difference overflows
     */
    uint64_t span = step > 0 ? (uint64_t)end - (uint64_t)start : (uint64_t)start - (uint64_t)end;
    uint64_t ustep = step > 0 ? (uint64_t)step : (uint64_t)0 - (uint64_t)step;
    uint64_t count = span / ustep + (span % ustep != 0);
    if (count > (uint64_t)INT64_MAX)
        return RT_ERR(RT_ERR_INVALID,
                      "arange: too many elements: start %" PRId64 ", end %" PRId64
                      ", step %" PRId64,
                      start, end, step);
    int64_t n = (int64_t)count;
    RT_TRY(rt_tensor_new(1, &n, RT_I64, RT_DEVICE_CPU, out));
    int64_t *p = rt_tensor_data_ptr(*out);
    /* modulo 2^64 arithmetic, then back: every value lies between start and end, so it fits */
    for (int64_t i = 0; i < n; i++)
        p[i] = (int64_t)((uint64_t)start + (uint64_t)i * (uint64_t)step);
    return arange_finish(RT_I64, dtype, device, out);
}

int rt_from_host(int ndim, const int64_t *shape, int dtype, int device, const void *src,
                 int src_dtype, rt_tensor **out) {
    *out = NULL;
    if (rt_dtype_size(src_dtype) == 0)
        return RT_ERR(RT_ERR_DTYPE, "from_host: unknown source dtype code %d", src_dtype);
    rt_tensor *host;
    RT_TRY(rt_tensor_new(ndim, shape, src_dtype, RT_DEVICE_CPU, &host));
    memcpy(rt_tensor_data_ptr(host), src, (size_t)host->meta.numel * rt_dtype_size(src_dtype));
    rt_tensor *conv;
    int rc = rt_to_dtype(host, dtype, &conv);
    rt_tensor_release(host);
    if (rc < 0) return rc;
    if (device == RT_DEVICE_CPU) {
        *out = conv;
        return RT_OK;
    }
    rc = rt_to_device(conv, device, out);
    rt_tensor_release(conv);
    return rc;
}

int rt_to_host(const rt_tensor *t, void *dst, int dst_dtype) {
    if (rt_dtype_size(dst_dtype) == 0)
        return RT_ERR(RT_ERR_DTYPE, "to_host: unknown destination dtype code %d", dst_dtype);
    rt_tensor *src = (rt_tensor *)t, *on_host = NULL;
    if (t->meta.device != RT_DEVICE_CPU) {
        RT_TRY(rt_to_device(src, RT_DEVICE_CPU, &on_host));
        src = on_host;
    }
    rt_kview d = rt_kview_of(src);
    d.data = dst;
    d.dtype = dst_dtype;
    rt_contiguous_strides(d.ndim, d.shape, d.strides);
    rt_kview s = rt_kview_of(src);
    int rc = src->meta.numel ? rt_cpu_backend.copy(&d, &s) : RT_OK;
    rt_tensor_release(on_host);
    return rc;
}

int rt_item(const rt_tensor *t, double *out) {
    if (t->meta.numel != 1) {
        char b[RT_SHAPE_BUF];
        return RT_ERR(RT_ERR_SHAPE,
                      "item: expected a tensor with one element, got shape %s (%lld "
                      "elements)",
                      rt_shape_str(b, sizeof b, t->meta.ndim, t->meta.shape),
                      (long long)t->meta.numel);
    }
    return rt_to_host(t, out, RT_F64);
}

/* ================================================================================================
 * Copies between dtypes and devices
 * ============================================================================================== */

int rt_copy_(rt_tensor *dst, rt_tensor *src) {
    RT_TRY(rt_check_no_internal_overlap("copy_", dst));
    RT_TRY(rt_check_inplace_autograd("copy_", dst));
    RT_TRY(rt_check_no_partial_overlap("copy_", dst, src));
    rt_kview s;
    RT_TRY(rt_kview_broadcast(src, dst->meta.ndim, dst->meta.shape, &s));
    rt_kview d = rt_kview_of(dst);
    if (dst->meta.numel == 0) return RT_OK;
    if (dst->meta.device == src->meta.device) {
        RT_TRY(RT_BE_CALL(dst->storage->backend, copy, "copy_", &d, &s));
    } else {
        /* Cross-device: the accelerator backend's copy_cross handles host<->device pairs (it is
         * told which side is on the host and whether that memory is pinned). */
        const rt_backend *be =
            dst->meta.device != RT_DEVICE_CPU ? dst->storage->backend : src->storage->backend;
        RT_TRY(RT_BE_CALL(be, copy_cross, "copy_", &d, dst->meta.device, dst->storage->memkind, &s,
                          src->meta.device, src->storage->memkind));
    }
    rt_tensor_bump_version(dst);
    return RT_OK;
}

int rt_contiguous(rt_tensor *t, rt_tensor **out) {
    if (rt_tensor_is_contiguous(t)) {
        rt_tensor_retain(t);
        *out = t;
        return RT_OK;
    }
    return rt_clone(t, out);
}
