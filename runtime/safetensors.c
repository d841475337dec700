/* safetensors.c: reading and writing the safetensors format (huggingface/safetensors).
 *
 * File layout: 8 bytes little-endian u64 N, N bytes of JSON header (UTF-8, padded with spaces to a
 * multiple of 8 by writers), then the data buffer. The header maps tensor names to
 * {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]} (offsets relative to the data
 * buffer) plus an optional "__metadata__" map of strings to strings.
 *
 * The reader treats the file as untrusted: the header is validated completely on open, with the
 * rules of the reference implementation (offsets sorted must tile the data buffer exactly from 0 to
 * its end, byte length == numel * itemsize) and a few of ours (duplicate names, at most RT_MAX_DIMS
 * dims). The writer is atomic: temporary file in the same folder, fsync, rename, fsync the folder.
 */
#include "internal.h"
#include "serial_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000) /* the reference's limit (100 MB) */

int64_t rt_safetensors_fail_after_bytes = -1;

/* ================================================================================================
 * dtypes
 * ============================================================================================== */

typedef struct st_dtype {
    const char *name;
    size_t size;
    int rt; /* rt_dtype, or -1 when ramtorch has no such dtype */
} st_dtype;

/* Every dtype of the reference implementation, so that valid files of other dtypes open (their
 * tensors can be listed; reading them is RT_ERR_DTYPE). F8 types are one byte. */
static const st_dtype k_dtypes[] = {
    {"F32", 4, RT_F32}, {"BF16", 2, RT_BF16}, {"F16", 2, RT_F16}, {"F64", 8, RT_F64},
    {"I64", 8, RT_I64}, {"I32", 4, RT_I32},   {"U8", 1, RT_U8},   {"BOOL", 1, RT_BOOL},
    {"I8", 1, -1},      {"I16", 2, -1},       {"U16", 2, -1},     {"U32", 4, -1},
    {"U64", 8, -1},     {"F8_E4M3", 1, -1},   {"F8_E5M2", 1, -1}, {"C64", 8, -1},
};
#define ST_NUM_DTYPES ((int)(sizeof k_dtypes / sizeof k_dtypes[0]))

static const char *st_name_of_rt(int dtype) {
    for (int i = 0; i < ST_NUM_DTYPES; i++)
        if (k_dtypes[i].rt == dtype) return k_dtypes[i].name;
    return NULL;
}

/* ================================================================================================
 * The reader
 * ============================================================================================== */

typedef struct st_entry {
    char *name;
    int st; /* index into k_dtypes */
    int ndim;
    int64_t shape[RT_MAX_DIMS];
    uint64_t begin, end; /* relative to the data buffer */
} st_entry;

struct rt_safetensors {
    char *path; /* for messages */
    const unsigned char *base;
    size_t size;
    int mapped;                /* base is an mmap (else a malloc copy) */
    const unsigned char *data; /* the data buffer */
    uint64_t data_len;
    int64_t n;
    st_entry *entries; /* sorted by name */
    int64_t n_meta;
    char **meta_keys, **meta_values; /* sorted by key */
};

/* Names in messages: at most 80 bytes, so one long name cannot crowd out the rest. */
#define QN(s) (int)(strlen(s) > 80 ? 80 : strlen(s)), (s)
/* Paths in messages: whole up to 300 bytes, else their last 300 (the file name end matters). */
static const char *path_tail(const char *p) {
    size_t n = strlen(p);
    return n > 300 ? p + n - 300 : p;
}

static int ferr(const rt_safetensors *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int ferr(const rt_safetensors *f, const char *fmt, ...) {
    char body[480];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    return RT_ERR(RT_ERR_FORMAT, "load_safetensors: %s: %s", path_tail(f->path), body);
}

void rt_safetensors_close(rt_safetensors *f) {
    if (!f) return;
    if (f->base) {
        if (f->mapped)
            munmap((void *)f->base, f->size);
        else
            free((void *)f->base);
    }
    for (int64_t i = 0; i < f->n; i++)
        free(f->entries[i].name);
    free(f->entries);
    for (int64_t i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    free(f->path);
    free(f);
}

static int cmp_entry_name(const void *a, const void *b) {
    return strcmp(((const st_entry *)a)->name, ((const st_entry *)b)->name);
}

static _Thread_local const st_entry *g_sort_entries; /* qsort has no context argument */
static int cmp_entry_offset(const void *a, const void *b) {
    const st_entry *x = &g_sort_entries[*(const int64_t *)a],
                   *y = &g_sort_entries[*(const int64_t *)b];
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* "a string", "an array", ... for messages. */
static const char *a_type(int type) {
    switch (type) {
    case RT_JSON_NULL:
        return "null";
    case RT_JSON_BOOL:
        return "a boolean";
    case RT_JSON_NUMBER:
        return "a number";
    case RT_JSON_STRING:
        return "a string";
    case RT_JSON_ARRAY:
        return "an array";
    case RT_JSON_OBJECT:
        return "an object";
    }
    return "?";
}

/* Read a non-negative integer array of at most cap entries. Returns the count, or -1 on error with
 * what[] describing it. */
static int int_array(const rt_json *v, int64_t *out, int cap, const char *noun, char *what,
                     size_t wn) {
    if (v->type != RT_JSON_ARRAY) {
        snprintf(what, wn, "expected an array, got %s", a_type(v->type));
        return -1;
    }
    if (v->count > (size_t)cap) {
        snprintf(what, wn, "%zu %s, at most %d supported", v->count, noun, cap);
        return -1;
    }
    int k = 0;
    for (const rt_json *e = v->child; e; e = e->next, k++) {
        if (e->type != RT_JSON_NUMBER || !e->is_int || e->ival < 0) {
            snprintf(what, wn, "entry %d is not a non-negative integer (within int64)", k);
            return -1;
        }
        out[k] = e->ival;
    }
    return k;
}

/* Validate one tensor entry of the header into e. */
static int parse_entry(rt_safetensors *f, const rt_json *m, st_entry *e) {
    const char *nm = m->key;
    if (m->type != RT_JSON_OBJECT)
        return ferr(f,
                    "tensor \"%.*s\": expected an object with dtype, shape and data_offsets, "
                    "got %s",
                    QN(nm), a_type(m->type));
    const rt_json *dt = NULL, *shape = NULL, *offs = NULL;
    for (const rt_json *k = m->child; k; k = k->next) {
        const rt_json **slot = !strcmp(k->key, "dtype")          ? &dt
                               : !strcmp(k->key, "shape")        ? &shape
                               : !strcmp(k->key, "data_offsets") ? &offs
                                                                 : NULL;
        if (!slot) continue; /* unknown fields are ignored, as the reference does */
        if (*slot) return ferr(f, "tensor \"%.*s\": field \"%s\" given twice", QN(nm), k->key);
        *slot = k;
    }
    if (!dt || !shape || !offs)
        return ferr(f, "tensor \"%.*s\": missing field \"%s\"", QN(nm),
                    !dt      ? "dtype"
                    : !shape ? "shape"
                             : "data_offsets");
    if (dt->type != RT_JSON_STRING)
        return ferr(f, "tensor \"%.*s\": dtype must be a string, got %s", QN(nm), a_type(dt->type));
    e->st = -1;
    for (int i = 0; i < ST_NUM_DTYPES; i++)
        if (strlen(k_dtypes[i].name) == dt->len && !strcmp(k_dtypes[i].name, dt->str)) e->st = i;
    if (e->st < 0)
        return ferr(f,
                    "tensor \"%.*s\": unknown dtype \"%.*s\" (expected F32, BF16, F16, F64, "
                    "I64, I32, U8, BOOL, I8, I16, U16, U32, U64, F8_E4M3, F8_E5M2 or C64)",
                    QN(nm), QN(dt->str));
    char what[128];
    int nd = int_array(shape, e->shape, RT_MAX_DIMS, "dimensions", what, sizeof what);
    if (nd < 0) return ferr(f, "tensor \"%.*s\": bad shape: %s", QN(nm), what);
    e->ndim = nd;
    int64_t o[2];
    int no = int_array(offs, o, 2, "entries", what, sizeof what);
    if (no < 0) return ferr(f, "tensor \"%.*s\": bad data_offsets: %s", QN(nm), what);
    if (no != 2)
        return ferr(f, "tensor \"%.*s\": data_offsets must hold 2 integers, got %d", QN(nm), no);
    e->begin = (uint64_t)o[0];
    e->end = (uint64_t)o[1];
    if (e->end < e->begin)
        return ferr(f, "tensor \"%.*s\": data_offsets [%llu, %llu] end before they begin", QN(nm),
                    (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > f->data_len)
        return ferr(f,
                    "tensor \"%.*s\": data_offsets [%llu, %llu] out of range: the data buffer "
                    "holds %llu bytes",
                    QN(nm), (unsigned long long)e->begin, (unsigned long long)e->end,
                    (unsigned long long)f->data_len);
    /* numel * itemsize without overflow */
    uint64_t bytes = k_dtypes[e->st].size;
    char sb[RT_SHAPE_BUF];
    for (int i = 0; i < nd; i++) {
        uint64_t d = (uint64_t)e->shape[i];
        if (d && bytes > UINT64_MAX / d)
            return ferr(f, "tensor \"%.*s\": shape %s is too large", QN(nm),
                        rt_shape_str(sb, sizeof sb, nd, e->shape));
        bytes *= d;
    }
    if (bytes != e->end - e->begin)
        return ferr(f,
                    "tensor \"%.*s\": data_offsets [%llu, %llu] hold %llu bytes, but %s of "
                    "shape %s needs %llu",
                    QN(nm), (unsigned long long)e->begin, (unsigned long long)e->end,
                    (unsigned long long)(e->end - e->begin), k_dtypes[e->st].name,
                    rt_shape_str(sb, sizeof sb, nd, e->shape), (unsigned long long)bytes);
    return RT_OK;
}

static int parse_metadata(rt_safetensors *f, const rt_json *m) {
    if (m->type == RT_JSON_NULL) return RT_OK;
    if (m->type != RT_JSON_OBJECT)
        return ferr(f, "__metadata__ must be an object of strings, got %s", a_type(m->type));
    size_t n = m->count;
    f->meta_keys = calloc(n ? n : 1, sizeof(char *));
    f->meta_values = calloc(n ? n : 1, sizeof(char *));
    if (!f->meta_keys || !f->meta_values)
        return RT_ERR(RT_ERR_OOM, "load_safetensors: out of memory for metadata");
    for (const rt_json *k = m->child; k; k = k->next) {
        if (k->type != RT_JSON_STRING)
            return ferr(f, "__metadata__ \"%.*s\": values must be strings, got %s", QN(k->key),
                        a_type(k->type));
        if (strlen(k->key) != k->key_len || strlen(k->str) != k->len)
            return ferr(f, "__metadata__ \"%.*s\": NUL character in a key or value", QN(k->key));
        /* insertion sort keeps keys ordered and finds duplicates (metadata maps are small) */
        int64_t pos = f->n_meta;
        while (pos > 0) {
            int c = strcmp(f->meta_keys[pos - 1], k->key);
            if (c == 0) return ferr(f, "__metadata__: key \"%.*s\" given twice", QN(k->key));
            if (c < 0) break;
            pos--;
        }
        char *key = strdup(k->key), *val = strdup(k->str);
        if (!key || !val) {
            free(key);
            free(val);
            return RT_ERR(RT_ERR_OOM, "load_safetensors: out of memory for metadata");
        }
        memmove(f->meta_keys + pos + 1, f->meta_keys + pos,
                (size_t)(f->n_meta - pos) * sizeof(char *));
        memmove(f->meta_values + pos + 1, f->meta_values + pos,
                (size_t)(f->n_meta - pos) * sizeof(char *));
        f->meta_keys[pos] = key;
        f->meta_values[pos] = val;
        f->n_meta++;
    }
    return RT_OK;
}

/* Validate the header and build the entry table. f->base/size/path are set. */
static int parse_file(rt_safetensors *f) {
    if (f->size < 8)
        return ferr(f, "file of %zu bytes is too short for the 8-byte header length", f->size);
    uint64_t hn = 0;
    for (int i = 7; i >= 0; i--)
        hn = (hn << 8) | f->base[i];
    if (hn > f->size - 8)
        return ferr(f,
                    "header length %llu goes beyond the end of the file (%zu bytes after the "
                    "length field)",
                    (unsigned long long)hn, f->size - 8);
    if (hn > ST_MAX_HEADER)
        return ferr(f, "header length %llu is over the limit of %llu bytes", (unsigned long long)hn,
                    (unsigned long long)ST_MAX_HEADER);
    if (hn < 2)
        return ferr(f, "header of %llu bytes cannot hold a JSON object", (unsigned long long)hn);
    const char *hdr = (const char *)f->base + 8;
    size_t lead = 0;
    while (lead < hn &&
           (hdr[lead] == ' ' || hdr[lead] == '\t' || hdr[lead] == '\n' || hdr[lead] == '\r'))
        lead++;
    if (lead == hn || hdr[lead] != '{')
        return ferr(f, "header does not start with '{' (got %s): not a safetensors file",
                    lead == hn ? "only whitespace" : "another byte");
    f->data = f->base + 8 + hn;
    f->data_len = f->size - 8 - hn;
    char jerr[200];
    rt_json *root = rt_json_parse(hdr, (size_t)hn, jerr, sizeof jerr);
    if (!root) return ferr(f, "bad JSON in the header: %s", jerr);
    int rc = RT_OK;
    if (root->type != RT_JSON_OBJECT) {
        rc = ferr(f, "header must be a JSON object, got %s", a_type(root->type));
        goto done;
    }
    f->entries = calloc(root->count ? root->count : 1, sizeof(st_entry));
    if (!f->entries) {
        rc = RT_ERR(RT_ERR_OOM, "load_safetensors: out of memory for %zu header entries",
                    root->count);
        goto done;
    }
    int seen_meta = 0;
    for (const rt_json *m = root->child; m; m = m->next) {
        if (strlen(m->key) != m->key_len) {
            rc = ferr(f, "tensor name \"%.*s\" holds a NUL character", QN(m->key));
            goto done;
        }
        if (!strcmp(m->key, "__metadata__")) {
            if (seen_meta++) {
                rc = ferr(f, "__metadata__ given twice");
                goto done;
            }
            rc = parse_metadata(f, m);
            if (rc < 0) goto done;
            continue;
        }
        st_entry *e = &f->entries[f->n];
        e->name = strdup(m->key);
        if (!e->name) {
            rc = RT_ERR(RT_ERR_OOM, "load_safetensors: out of memory");
            goto done;
        }
        f->n++;
        rc = parse_entry(f, m, e);
        if (rc < 0) goto done;
    }
    /* duplicates: sorted by name, neighbours */
    qsort(f->entries, (size_t)f->n, sizeof(st_entry), cmp_entry_name);
    for (int64_t i = 1; i < f->n; i++)
        if (!strcmp(f->entries[i - 1].name, f->entries[i].name)) {
            rc = ferr(f, "tensor \"%.*s\" given twice", QN(f->entries[i].name));
            goto done;
        }
    /* offsets: sorted by begin, they must tile [0, data_len) exactly */
    int64_t *order = malloc((size_t)(f->n ? f->n : 1) * sizeof(int64_t));
    if (!order) {
        rc = RT_ERR(RT_ERR_OOM, "load_safetensors: out of memory");
        goto done;
    }
    for (int64_t i = 0; i < f->n; i++)
        order[i] = i;
    g_sort_entries = f->entries;
    qsort(order, (size_t)f->n, sizeof(int64_t), cmp_entry_offset);
    uint64_t pos = 0;
    const char *prev = NULL;
    for (int64_t i = 0; i < f->n && rc == RT_OK; i++) {
        const st_entry *e = &f->entries[order[i]];
        if (e->begin < pos)
            rc = ferr(f,
                      "tensor \"%.*s\": data_offsets [%llu, %llu] overlap tensor \"%.*s\", "
                      "which ends at %llu",
                      QN(e->name), (unsigned long long)e->begin, (unsigned long long)e->end,
                      QN(prev), (unsigned long long)pos);
        else if (e->begin > pos)
            rc = ferr(f,
                      "tensor \"%.*s\": data_offsets [%llu, %llu] are not contiguous: %llu "
                      "unused bytes before them (at %llu)",
                      QN(e->name), (unsigned long long)e->begin, (unsigned long long)e->end,
                      (unsigned long long)(e->begin - pos), (unsigned long long)pos);
        pos = e->end;
        prev = e->name;
    }
    free(order);
    if (rc == RT_OK && pos != f->data_len)
        rc = ferr(f,
                  "the tensors cover %llu bytes of the data buffer, but it holds %llu "
                  "(truncated or trailing bytes)",
                  (unsigned long long)pos, (unsigned long long)f->data_len);
done:
    rt_json_free(root);
    return rc;
}

static rt_safetensors *st_new(const char *name) {
    rt_safetensors *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->path = strdup(name ? name : "<memory>");
    if (!f->path) {
        free(f);
        return NULL;
    }
    return f;
}

int rt_safetensors_open(const char *path, rt_safetensors **out) {
    *out = NULL;
    if (!path) return RT_ERR(RT_ERR_INVALID, "load_safetensors: path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return RT_ERR(RT_ERR_IO, "load_safetensors: cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return RT_ERR(RT_ERR_IO, "load_safetensors: cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return RT_ERR(RT_ERR_IO, "load_safetensors: %s is not a regular file%s", path,
                      S_ISDIR(st.st_mode) ? " (it is a directory)" : "");
    }
    rt_safetensors *f = st_new(path);
    if (!f) {
        close(fd);
        return RT_ERR(RT_ERR_OOM, "load_safetensors: out of memory");
    }
    f->size = (size_t)st.st_size;
    if (f->size > 0) {
        void *p = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            rt_safetensors_close(f);
            return RT_ERR(RT_ERR_IO, "load_safetensors: cannot map %s: %s", path, strerror(e));
        }
        f->base = p;
        f->mapped = 1;
    }
    close(fd);
    int rc = parse_file(f);
    if (rc < 0) {
        rt_safetensors_close(f);
        return rc;
    }
    *out = f;
    return RT_OK;
}

int rt_safetensors_open_memory(const void *data, size_t nbytes, const char *name,
                               rt_safetensors **out) {
    *out = NULL;
    if (!data && nbytes) return RT_ERR(RT_ERR_INVALID, "load_safetensors: data is NULL");
    rt_safetensors *f = st_new(name);
    if (!f) return RT_ERR(RT_ERR_OOM, "load_safetensors: out of memory");
    unsigned char *copy = malloc(nbytes ? nbytes : 1);
    if (!copy) {
        rt_safetensors_close(f);
        return RT_ERR(RT_ERR_OOM, "load_safetensors: out of memory copying %zu bytes", nbytes);
    }
    if (nbytes) memcpy(copy, data, nbytes);
    f->base = copy;
    f->size = nbytes;
    int rc = parse_file(f);
    if (rc < 0) {
        rt_safetensors_close(f);
        return rc;
    }
    *out = f;
    return RT_OK;
}

int64_t rt_safetensors_count(const rt_safetensors *f) {
    return f ? f->n : 0;
}

const char *rt_safetensors_name(const rt_safetensors *f, int64_t i) {
    return f && i >= 0 && i < f->n ? f->entries[i].name : NULL;
}

const char *rt_safetensors_dtype_str(const rt_safetensors *f, int64_t i) {
    return f && i >= 0 && i < f->n ? k_dtypes[f->entries[i].st].name : NULL;
}

int rt_safetensors_find(const rt_safetensors *f, const char *name, int64_t *index) {
    *index = -1;
    if (!name) return RT_ERR(RT_ERR_INVALID, "safetensors: name is NULL");
    int64_t lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->entries[mid].name, name);
        if (c == 0) {
            *index = mid;
            return RT_OK;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return RT_ERR(RT_ERR_INDEX, "safetensors: %s has no tensor named \"%.*s\" (%lld tensors)",
                  path_tail(f->path), QN(name), (long long)f->n);
}

static int check_index(const rt_safetensors *f, int64_t i) {
    if (i < 0 || i >= f->n)
        return RT_ERR(RT_ERR_INDEX,
                      "safetensors: tensor index %lld out of range for %s (%lld "
                      "tensors)",
                      (long long)i, path_tail(f->path), (long long)f->n);
    return RT_OK;
}

int rt_safetensors_info(const rt_safetensors *f, int64_t i, int *dtype, int *ndim, int64_t *shape) {
    RT_TRY(check_index(f, i));
    const st_entry *e = &f->entries[i];
    *dtype = k_dtypes[e->st].rt;
    *ndim = e->ndim;
    for (int d = 0; d < RT_MAX_DIMS; d++)
        shape[d] = d < e->ndim ? e->shape[d] : 0;
    return RT_OK;
}

int rt_safetensors_get(const rt_safetensors *f, int64_t i, rt_tensor **out) {
    *out = NULL;
    RT_TRY(check_index(f, i));
    const st_entry *e = &f->entries[i];
    const st_dtype *d = &k_dtypes[e->st];
    if (d->rt < 0)
        return RT_ERR(RT_ERR_DTYPE,
                      "load_safetensors: %s: tensor \"%.*s\" has dtype %s, which "
                      "ramtorch does not support",
                      path_tail(f->path), QN(e->name), d->name);
    RT_TRY(rt_tensor_new(e->ndim, e->shape, d->rt, RT_DEVICE_CPU, out));
    unsigned char *dst = rt_tensor_data_ptr(*out);
    size_t nb = (size_t)(e->end - e->begin);
    if (nb) memcpy(dst, f->data + e->begin, nb);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    if (d->size > 1)
        for (size_t k = 0; k < nb; k += d->size)
            for (size_t a = 0, b = d->size - 1; a < b; a++, b--) {
                unsigned char t = dst[k + a];
                dst[k + a] = dst[k + b];
                dst[k + b] = t;
            }
#endif
    if (d->rt == RT_BOOL) /* keep the 0/1 invariant of bool storage whatever the file holds */
        for (size_t k = 0; k < nb; k++)
            dst[k] = dst[k] != 0;
    return RT_OK;
}

int64_t rt_safetensors_metadata_count(const rt_safetensors *f) {
    return f ? f->n_meta : 0;
}
const char *rt_safetensors_metadata_key(const rt_safetensors *f, int64_t i) {
    return f && i >= 0 && i < f->n_meta ? f->meta_keys[i] : NULL;
}
const char *rt_safetensors_metadata_value(const rt_safetensors *f, int64_t i) {
    return f && i >= 0 && i < f->n_meta ? f->meta_values[i] : NULL;
}

/* ================================================================================================
 * The writer
 * ============================================================================================== */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_str(sbuf *b, const char *s) {
    sb_put(b, s, strlen(s));
}

/* A JSON string literal: quotes, backslashes and control characters escaped; the rest is UTF-8 as
 * given (validated by the caller). */
static void sb_json_string(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char esc[8];
        if (*c == '"' || *c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*c;
            sb_put(b, esc, 2);
        } else if (*c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *c);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

typedef struct save_item {
    const char *name;
    rt_tensor *t;
    size_t nbytes;
} save_item;

/* Data order of the reference writer: larger items first (so each tensor is aligned to its item
 * size given the 8-byte-aligned data buffer), then by name. */
static int cmp_save(const void *a, const void *b) {
    const save_item *x = a, *y = b;
    size_t sx = rt_dtype_size(x->t->meta.dtype), sy = rt_dtype_size(y->t->meta.dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}
static int cmp_cstr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

typedef struct writer {
    int fd;
    const char *tmp;
    int64_t written;
} writer;

static int write_all(writer *w, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        size_t chunk = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n;
        if (rt_safetensors_fail_after_bytes >= 0 &&
            w->written + (int64_t)chunk > rt_safetensors_fail_after_bytes) {
            /* write what the hook allows, then fail as a full disk would */
            size_t allowed = (size_t)(rt_safetensors_fail_after_bytes - w->written);
            if (allowed && write(w->fd, c, allowed) < 0) { /* result irrelevant: failing anyway */
            }
            errno = ENOSPC;
            return -1;
        }
        ssize_t k = write(w->fd, c, chunk);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        c += k;
        n -= (size_t)k;
        w->written += k;
    }
    return 0;
}

/* Write one tensor's elements contiguously in little-endian order. */
static int write_tensor(writer *w, rt_tensor *t, size_t nbytes) {
    if (!nbytes) return 0;
    int little = 1;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    little = 0;
#endif
    if (little && t->meta.device == RT_DEVICE_CPU && rt_tensor_is_contiguous(t))
        return write_all(w, rt_tensor_data_ptr(t), nbytes);
    unsigned char *tmp = malloc(nbytes);
    if (!tmp) {
        errno = ENOMEM;
        return -1;
    }
    if (rt_to_host(t, tmp, t->meta.dtype) < 0) {
        free(tmp);
        errno = EIO;
        return -2; /* the error is already set */
    }
    size_t es = rt_dtype_size(t->meta.dtype);
    if (!little && es > 1)
        for (size_t k = 0; k < nbytes; k += es)
            for (size_t a = 0, b = es - 1; a < b; a++, b--) {
                unsigned char x = tmp[k + a];
                tmp[k + a] = tmp[k + b];
                tmp[k + b] = x;
            }
    int rc = write_all(w, tmp, nbytes);
    free(tmp);
    return rc;
}

static int save_err(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int save_err(const char *path, const char *fmt, ...) {
    char body[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    return RT_ERR(RT_ERR_INVALID, "save_safetensors: %s: %s", path, body);
}

/* Validate everything and build the header before the file system is touched, so that a bad
 * argument never leaves a trace on disk. */
static int build_header(const char *path, int n, const char *const *names,
                        rt_tensor *const *tensors, int n_meta, const char *const *meta_keys,
                        const char *const *meta_values, save_item *items, sbuf *hb) {
    for (int i = 0; i < n; i++) {
        const char *nm = names[i];
        if (!nm) return save_err(path, "name %d is NULL", i);
        if (!rt_utf8_valid(nm, strlen(nm)))
            return save_err(path, "tensor name \"%.*s\" is not valid UTF-8", QN(nm));
        if (!strcmp(nm, "__metadata__"))
            return save_err(path, "\"__metadata__\" is reserved and cannot name a tensor");
        rt_tensor *t = tensors[i];
        if (!t) return save_err(path, "tensor \"%.*s\" is NULL", QN(nm));
        if (!st_name_of_rt(t->meta.dtype))
            return save_err(path, "tensor \"%.*s\" has an unknown dtype code %d", QN(nm),
                            t->meta.dtype);
        items[i].name = nm;
        items[i].t = t;
        items[i].nbytes = (size_t)t->meta.numel * rt_dtype_size(t->meta.dtype);
    }
    const char **sorted = malloc((size_t)(n > n_meta ? n : n_meta) * sizeof(char *) + 1);
    if (!sorted) return RT_ERR(RT_ERR_OOM, "save_safetensors: out of memory");
    for (int i = 0; i < n; i++)
        sorted[i] = names[i];
    qsort(sorted, (size_t)n, sizeof(char *), cmp_cstr);
    for (int i = 1; i < n; i++)
        if (!strcmp(sorted[i - 1], sorted[i])) {
            int rc = save_err(path, "tensor name \"%.*s\" given twice", QN(sorted[i]));
            free(sorted);
            return rc;
        }
    for (int i = 0; i < n_meta; i++) {
        const char *k = meta_keys[i], *v = meta_values[i];
        if (!k || !v) {
            free(sorted);
            return save_err(path, "metadata %s %d is NULL", !k ? "key" : "value", i);
        }
        if (!rt_utf8_valid(k, strlen(k)) || !rt_utf8_valid(v, strlen(v))) {
            free(sorted);
            return save_err(path, "metadata \"%.*s\": key and value must be valid UTF-8", QN(k));
        }
        sorted[i] = k;
    }
    qsort(sorted, (size_t)n_meta, sizeof(char *), cmp_cstr);
    for (int i = 1; i < n_meta; i++)
        if (!strcmp(sorted[i - 1], sorted[i])) {
            int rc = save_err(path, "metadata key \"%.*s\" given twice", QN(sorted[i]));
            free(sorted);
            return rc;
        }
    free(sorted);
    qsort(items, (size_t)n, sizeof(save_item), cmp_save);

    sb_str(hb, "{");
    int first = 1;
    if (n_meta > 0) {
        sb_str(hb, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) sb_str(hb, ",");
            sb_json_string(hb, meta_keys[i]);
            sb_str(hb, ":");
            sb_json_string(hb, meta_values[i]);
        }
        sb_str(hb, "}");
        first = 0;
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const rt_tensor *t = items[i].t;
        char num[64];
        if (!first) sb_str(hb, ",");
        first = 0;
        sb_json_string(hb, items[i].name);
        sb_str(hb, ":{\"dtype\":\"");
        sb_str(hb, st_name_of_rt(t->meta.dtype));
        sb_str(hb, "\",\"shape\":[");
        for (int d = 0; d < t->meta.ndim; d++) {
            snprintf(num, sizeof num, d ? ",%lld" : "%lld", (long long)t->meta.shape[d]);
            sb_str(hb, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + items[i].nbytes));
        sb_str(hb, num);
        off += items[i].nbytes;
    }
    sb_str(hb, "}");
    while (!hb->oom && hb->n % 8)
        sb_str(hb, " "); /* data aligned to 8, like the reference */
    if (hb->oom) return RT_ERR(RT_ERR_OOM, "save_safetensors: out of memory building the header");
    return RT_OK;
}

int rt_safetensors_save(const char *path, int n, const char *const *names,
                        rt_tensor *const *tensors, int n_meta, const char *const *meta_keys,
                        const char *const *meta_values) {
    if (!path || !*path) return RT_ERR(RT_ERR_INVALID, "save_safetensors: path is empty");
    if (n < 0 || n_meta < 0 || (n && (!names || !tensors)) ||
        (n_meta && (!meta_keys || !meta_values)))
        return save_err(path, "bad counts or NULL arrays (n = %d, n_meta = %d)", n, n_meta);
    save_item *items = calloc((size_t)n + 1, sizeof(save_item));
    if (!items) return RT_ERR(RT_ERR_OOM, "save_safetensors: out of memory");
    sbuf hb = {0};
    int rc = build_header(path, n, names, tensors, n_meta, meta_keys, meta_values, items, &hb);
    if (rc < 0) {
        free(items);
        free(hb.p);
        return rc;
    }

    /* the folder and the temporary name beside the target */
    size_t plen = strlen(path);
    char *dir = malloc(plen + 2), *tmp = malloc(plen + 64);
    if (!dir || !tmp) {
        free(dir);
        free(tmp);
        free(items);
        free(hb.p);
        return RT_ERR(RT_ERR_OOM, "save_safetensors: out of memory");
    }
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (slash) {
        size_t dl = (size_t)(slash - path);
        memcpy(dir, path, dl ? dl : 1); /* "/name" lives in "/" */
        dir[dl ? dl : 1] = 0;
    } else {
        strcpy(dir, ".");
    }
    struct stat st;
    int have_old = stat(path, &st) == 0;
    if (have_old && S_ISDIR(st.st_mode)) {
        rc = RT_ERR(RT_ERR_IO, "save_safetensors: %s is a directory", path);
        goto out;
    }
    static atomic_uint counter;
    int fd = -1;
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        snprintf(tmp, plen + 64, "%.*s.%s.tmp-%ld-%u", (int)(base - path), path, base,
                 (long)getpid(), atomic_fetch_add(&counter, 1));
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        rc = RT_ERR(RT_ERR_IO, "save_safetensors: cannot create a temporary file in %s for %s: %s",
                    dir, path, strerror(errno));
        goto out;
    }
    if (have_old && S_ISREG(st.st_mode)) (void)fchmod(fd, st.st_mode & 07777); /* keep its mode */
    writer w = {fd, tmp, 0};
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)hb.n >> (8 * i));
    int wrc = write_all(&w, len8, 8);
    if (!wrc) wrc = write_all(&w, hb.p, hb.n);
    int which = -1;
    for (int i = 0; i < n && !wrc; i++) {
        wrc = write_tensor(&w, items[i].t, items[i].nbytes);
        which = i;
    }
    if (wrc == -2) {
        rc = rt_last_error_code();
        close(fd);
        unlink(tmp);
        goto out;
    }
    if (wrc) {
        int e = errno;
        close(fd);
        unlink(tmp);
        const char *at = which >= 0 ? items[which].name : "(header)";
        rc = RT_ERR(RT_ERR_IO,
                    "save_safetensors: writing %s failed at %.*s: %s (the previous file "
                    "is unchanged)",
                    path, QN(at), strerror(e));
        goto out;
    }
    if (fsync(fd) < 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        rc = RT_ERR(RT_ERR_IO,
                    "save_safetensors: fsync of %s failed: %s (the previous file is "
                    "unchanged)",
                    tmp, strerror(e));
        goto out;
    }
    if (close(fd) < 0) {
        int e = errno;
        unlink(tmp);
        rc = RT_ERR(RT_ERR_IO, "save_safetensors: closing %s failed: %s", tmp, strerror(e));
        goto out;
    }
    if (rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        rc = RT_ERR(RT_ERR_IO, "save_safetensors: cannot rename %s to %s: %s", tmp, path,
                    strerror(e));
        goto out;
    }
    /* make the rename itself durable */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync(dfd) < 0 && errno != EINVAL && errno != EROFS)
            rc = RT_ERR(RT_ERR_IO,
                        "save_safetensors: fsync of folder %s after writing %s failed: "
                        "%s",
                        dir, path, strerror(errno));
        close(dfd);
    }
out:
    free(dir);
    free(tmp);
    free(items);
    free(hb.p);
    return rc;
}
