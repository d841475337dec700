/* idx.c: reading idx files, the format of MNIST and Fashion-MNIST (Debian's dataset-fashion-mnist
 * installs them gzip'd under /usr/share/datasets/fashion-mnist). Layout: two zero bytes, a type
 * byte, the number of dims, each dim as a big-endian u32, then the data in big-endian order.
 * gzip and plain files are both read (zlib passes plain data through). Everything is validated:
 * a corrupt or truncated file is RT_ERR_FORMAT naming the file and what was wrong. */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define IDX_MAX_BYTES ((uint64_t)1 << 40)

/* Read exactly n bytes (gzread takes an unsigned int count). Returns bytes read, -1 on error. */
static int64_t read_n(gzFile gz, void *buf, uint64_t n) {
    uint64_t got = 0;
    while (got < n) {
        uint64_t chunk = n - got > (1u << 30) ? (1u << 30) : n - got;
        int k = gzread(gz, (char *)buf + got, (unsigned)chunk);
        if (k < 0) return -1;
        if (k == 0) break;
        got += (uint64_t)k;
    }
    return (int64_t)got;
}

static int gz_fail(gzFile gz, const char *path, const char *what) {
    int zerr = 0;
    const char *m = gzerror(gz, &zerr);
    if (zerr == Z_ERRNO)
        return RT_ERR(RT_ERR_IO, "read_idx: %s: reading %s failed: %s", path, what,
                      strerror(errno));
    return RT_ERR(RT_ERR_FORMAT, "read_idx: %s: corrupt gzip data while reading %s: %s", path, what,
                  m ? m : "unknown zlib error");
}

int rt_read_idx(const char *path, rt_tensor **out) {
    *out = NULL;
    if (!path) return RT_ERR(RT_ERR_INVALID, "read_idx: path is NULL");
    struct stat st;
    if (stat(path, &st) < 0)
        return RT_ERR(RT_ERR_IO, "read_idx: cannot open %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return RT_ERR(RT_ERR_IO, "read_idx: %s is not a regular file", path);
    gzFile gz = gzopen(path, "rb");
    if (!gz) return RT_ERR(RT_ERR_IO, "read_idx: cannot open %s: %s", path, strerror(errno));
    int rc = RT_OK;
    unsigned char head[4];
    int64_t k = read_n(gz, head, 4);
    if (k < 0) {
        rc = gz_fail(gz, path, "the header");
        goto done;
    }
    if (k < 4) {
        rc = RT_ERR(RT_ERR_FORMAT, "read_idx: %s: truncated header (%lld of 4 bytes)", path,
                    (long long)k);
        goto done;
    }
    if (head[0] || head[1]) {
        rc = RT_ERR(RT_ERR_FORMAT,
                    "read_idx: %s: bad magic 0x%02X%02X%02X%02X (an idx file starts "
                    "with two zero bytes, a type and the number of dims)",
                    path, head[0], head[1], head[2], head[3]);
        goto done;
    }
    int type = head[2], ndim = head[3], dtype;
    size_t es;
    switch (type) {
    case 0x08:
        dtype = RT_U8, es = 1;
        break;
    case 0x09:
        dtype = RT_I32, es = 1;
        break; /* i8, widened */
    case 0x0B:
        dtype = RT_I32, es = 2;
        break; /* i16, widened */
    case 0x0C:
        dtype = RT_I32, es = 4;
        break;
    case 0x0D:
        dtype = RT_F32, es = 4;
        break;
    case 0x0E:
        dtype = RT_F64, es = 8;
        break;
    default:
        rc = RT_ERR(RT_ERR_FORMAT,
                    "read_idx: %s: unknown element type 0x%02X (expected 0x08, "
                    "0x09, 0x0B, 0x0C, 0x0D or 0x0E)",
                    path, type);
        goto done;
    }
    if (ndim < 1 || ndim > RT_MAX_DIMS) {
        rc = RT_ERR(RT_ERR_FORMAT, "read_idx: %s: %d dims (expected 1 to %d)", path, ndim,
                    RT_MAX_DIMS);
        goto done;
    }
    unsigned char dims[4 * RT_MAX_DIMS];
    k = read_n(gz, dims, (uint64_t)ndim * 4);
    if (k < 0) {
        rc = gz_fail(gz, path, "the dims");
        goto done;
    }
    if (k < ndim * 4) {
        rc = RT_ERR(RT_ERR_FORMAT, "read_idx: %s: truncated header (the dims)", path);
        goto done;
    }
    int64_t shape[RT_MAX_DIMS];
    uint64_t bytes = es;
    for (int d = 0; d < ndim; d++) {
        const unsigned char *p = dims + 4 * d;
        shape[d] = (int64_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
                             ((uint32_t)p[2] << 8) | p[3]);
        if (shape[d] && bytes > IDX_MAX_BYTES / (uint64_t)shape[d]) {
            char b[RT_SHAPE_BUF];
            rc = RT_ERR(RT_ERR_FORMAT, "read_idx: %s: implausible shape %s (over %llu bytes)", path,
                        rt_shape_str(b, sizeof b, d + 1, shape), (unsigned long long)IDX_MAX_BYTES);
            goto done;
        }
        bytes *= (uint64_t)shape[d];
    }
    rt_tensor *t;
    rc = rt_tensor_new(ndim, shape, dtype, RT_DEVICE_CPU, &t);
    if (rc < 0) goto done;
    unsigned char *data = rt_tensor_data_ptr(t);
    /* narrower file types are read into the tail of the buffer and widened in place, front to
     * back reading ahead of writing */
    size_t out_es = rt_dtype_size(dtype);
    unsigned char *raw = data + (size_t)t->meta.numel * (out_es - es);
    k = read_n(gz, raw, bytes);
    if (k < 0) {
        rc = gz_fail(gz, path, "the data");
    } else if ((uint64_t)k < bytes) {
        char b[RT_SHAPE_BUF];
        rc = RT_ERR(RT_ERR_FORMAT,
                    "read_idx: %s: truncated data: shape %s needs %llu bytes, the "
                    "file holds %lld",
                    path, rt_shape_str(b, sizeof b, ndim, shape), (unsigned long long)bytes,
                    (long long)k);
    } else {
        unsigned char extra;
        int64_t more = read_n(gz, &extra, 1);
        if (more < 0)
            rc = gz_fail(gz, path, "the end of the data");
        else if (more > 0)
            rc = RT_ERR(RT_ERR_FORMAT,
                        "read_idx: %s: trailing bytes after the data of shape %s "
                        "(dims or file corrupt)",
                        path, rt_shape_str((char[RT_SHAPE_BUF]){0}, RT_SHAPE_BUF, ndim, shape));
    }
    if (rc == RT_OK) {
        int64_t n = t->meta.numel;
        if (type == 0x09) {
            for (int64_t i = 0; i < n; i++)
                ((int32_t *)data)[i] = (int8_t)raw[i];
        } else if (type == 0x0B) {
            for (int64_t i = 0; i < n; i++)
                ((int32_t *)data)[i] = (int16_t)(((uint16_t)raw[2 * i] << 8) | raw[2 * i + 1]);
        } else if (es > 1) { /* big-endian to host (little-endian) order */
            for (int64_t i = 0; i < n; i++)
                for (size_t a = 0, b = es - 1; a < b; a++, b--) {
                    unsigned char x = data[i * (int64_t)es + (int64_t)a];
                    data[i * (int64_t)es + (int64_t)a] = data[i * (int64_t)es + (int64_t)b];
                    data[i * (int64_t)es + (int64_t)b] = x;
                }
        }
        *out = t;
    } else {
        rt_tensor_release(t);
    }
done:
    gzclose(gz);
    return rc;
}
