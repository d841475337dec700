/* arena.c: the host arena of DESIGN section 3. One memfd segment (shm_open + unlink where memfd is
 * missing), grown by chunks: each chunk is a new range of the file, mapped on its own. Slices are
 * allocated first-fit from a free list kept in offset order, else from the end of the newest
 * chunk, with 64-byte alignment, and never span two chunks (each chunk is a separate mapping and
 * is page-locked on its own). The same sequence of allocations and frees gives the same offsets in
 * every process, so a later issue can map the segment in several workers and find each parameter
 * at the same offset. Slices become tensors with memkind RT_MEM_SHARED whose storage deleter gives
 * the slice back. When the offload engine of a CUDA device starts it registers every chunk
 * (cudaHostRegister through rt_device_api.host_register), and chunks added later too. */
#include "offload_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define ARENA_ALIGN 64
#define DEFAULT_CHUNK ((size_t)64 << 20)

typedef struct chunk {
    char *base;
    int64_t off; /* file offset of the chunk */
    size_t size;
    int registered;
} chunk;

typedef struct span {
    int64_t off;
    size_t size;
} span;

static struct {
    pthread_mutex_t mu;
    int fd;
    int ready;
    size_t chunk_size;
    int64_t file_size;
    chunk *chunks;
    int nchunks, chunks_cap;
    size_t tail_used; /* bytes used at the end of the newest chunk */
    span *free;       /* sorted by offset, coalesced within a chunk */
    int nfree, free_cap;
    int64_t used, peak;
    const rt_device_api *reg_api;
    int64_t registers; /* page-lock registrations, and their time (profiling) */
    double register_ms;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .fd = -1};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* Page-lock [p, p + size) through the registered API, timed. Caller holds g.mu. */
static int register_range(const rt_device_api *api, void *p, size_t size) {
    double t0 = now_ms();
    int rc = api->host_register(p, size);
    g.register_ms += now_ms() - t0;
    g.registers++;
    return rc;
}

void rt_arena_profile(int64_t *chunks, int64_t *registers, double *register_ms) {
    pthread_mutex_lock(&g.mu);
    *chunks = g.nchunks;
    *registers = g.registers;
    *register_ms = g.register_ms;
    pthread_mutex_unlock(&g.mu);
}

static size_t page_size(void) {
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

static int open_segment(void) {
    char name[64];
    snprintf(name, sizeof name, "ramtorch-arena-%d", (int)getpid());
#ifdef MFD_CLOEXEC
    int fd = memfd_create(name, MFD_CLOEXEC);
    if (fd >= 0) return fd;
#endif
    /* fallback: a POSIX shm object, unlinked at once so nothing is left in /dev/shm on a crash */
    char path[80];
    snprintf(path, sizeof path, "/%s", name);
    int fd2 = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd2 < 0) return -1;
    shm_unlink(path);
    return fd2;
}

/* Caller holds g.mu. */
static int add_chunk(size_t min_bytes) {
    if (g.fd < 0) {
        g.fd = open_segment();
        if (g.fd < 0)
            return RT_ERR(RT_ERR_OOM, "arena: cannot create the shared-memory segment (%s)",
                          strerror(errno));
    }
    size_t ps = page_size();
    size_t size = g.chunk_size ? g.chunk_size : DEFAULT_CHUNK;
    if (size < min_bytes) size = min_bytes;
    size = (size + ps - 1) / ps * ps;
    if (g.nchunks == g.chunks_cap) {
        int cap = g.chunks_cap ? g.chunks_cap * 2 : 16;
        chunk *c = realloc(g.chunks, sizeof *c * (size_t)cap);
        if (!c) return RT_ERR(RT_ERR_OOM, "arena: out of host memory for the chunk table");
        g.chunks = c;
        g.chunks_cap = cap;
    }
    int64_t off = g.file_size;
    if (ftruncate(g.fd, (off_t)(off + (int64_t)size)) != 0)
        return RT_ERR(RT_ERR_OOM, "arena: cannot grow the segment to %lld bytes (%s)",
                      (long long)(off + (int64_t)size), strerror(errno));
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, g.fd, (off_t)off);
    if (p == MAP_FAILED) {
        int err = errno;
        if (ftruncate(g.fd, (off_t)off) != 0) { /* best effort: the size is restored below */
        }
        return RT_ERR(RT_ERR_OOM, "arena: cannot map a %zu-byte chunk (%s)", size, strerror(err));
    }
    g.file_size = off + (int64_t)size;
    chunk *c = &g.chunks[g.nchunks++];
    c->base = p;
    c->off = off;
    c->size = size;
    c->registered = 0;
    g.tail_used = 0;
    if (g.reg_api && g.reg_api->host_register) {
        int rc = register_range(g.reg_api, p, size);
        if (rc < 0) return rc;
        c->registered = 1;
    }
    return RT_OK;
}

/* Chunk holding file offset off (binary search), or -1. */
static int chunk_of(int64_t off) {
    int lo = 0, hi = g.nchunks - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        chunk *c = &g.chunks[mid];
        if (off < c->off)
            hi = mid - 1;
        else if (off >= c->off + (int64_t)c->size)
            lo = mid + 1;
        else
            return mid;
    }
    return -1;
}

static char *ptr_of(int64_t off) {
    int i = chunk_of(off);
    return i < 0 ? NULL : g.chunks[i].base + (off - g.chunks[i].off);
}

/* Insert a free span, merging with neighbours in the same chunk. Caller holds g.mu. */
static void free_insert(int64_t off, size_t size) {
    if (size == 0) return;
    int i = 0;
    while (i < g.nfree && g.free[i].off < off)
        i++;
    int ci = chunk_of(off);
    if (i > 0 && g.free[i - 1].off + (int64_t)g.free[i - 1].size == off &&
        chunk_of(g.free[i - 1].off) == ci) {
        g.free[i - 1].size += size;
        if (i < g.nfree && off + (int64_t)size == g.free[i].off && chunk_of(g.free[i].off) == ci) {
            g.free[i - 1].size += g.free[i].size;
            memmove(&g.free[i], &g.free[i + 1], sizeof(span) * (size_t)(g.nfree - i - 1));
            g.nfree--;
        }
        return;
    }
    if (i < g.nfree && off + (int64_t)size == g.free[i].off && chunk_of(g.free[i].off) == ci) {
        g.free[i].off = off;
        g.free[i].size += size;
        return;
    }
    if (g.nfree == g.free_cap) {
        int cap = g.free_cap ? g.free_cap * 2 : 64;
        span *f = realloc(g.free, sizeof *f * (size_t)cap);
        if (!f) return; /* the slice is leaked to the arena, never reused: safe */
        g.free = f;
        g.free_cap = cap;
    }
    memmove(&g.free[i + 1], &g.free[i], sizeof(span) * (size_t)(g.nfree - i));
    g.free[i].off = off;
    g.free[i].size = size;
    g.nfree++;
}

int rt_arena_alloc(size_t nbytes, void **ptr, int64_t *offset) {
    size_t size = (nbytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    if (size == 0) size = ARENA_ALIGN;
    pthread_mutex_lock(&g.mu);
    int rc = RT_OK;
    int64_t off = -1;
    for (int i = 0; i < g.nfree; i++) /* first fit, in offset order: deterministic */
        if (g.free[i].size >= size) {
            off = g.free[i].off;
            g.free[i].off += (int64_t)size;
            g.free[i].size -= size;
            if (g.free[i].size == 0) {
                memmove(&g.free[i], &g.free[i + 1], sizeof(span) * (size_t)(g.nfree - i - 1));
                g.nfree--;
            }
            break;
        }
    if (off < 0) {
        chunk *last = g.nchunks ? &g.chunks[g.nchunks - 1] : NULL;
        if (!last || last->size - g.tail_used < size) {
            if (last) { /* the rest of the newest chunk becomes a free span */
                free_insert(last->off + (int64_t)g.tail_used, last->size - g.tail_used);
                g.tail_used = last->size;
            }
            rc = add_chunk(size);
            last = rc == RT_OK ? &g.chunks[g.nchunks - 1] : NULL;
        }
        if (rc == RT_OK) {
            off = last->off + (int64_t)g.tail_used;
            g.tail_used += size;
        }
    }
    if (rc == RT_OK) {
        g.used += (int64_t)size;
        if (g.used > g.peak) g.peak = g.used;
        *ptr = ptr_of(off);
        *offset = off;
    }
    pthread_mutex_unlock(&g.mu);
    return rc;
}

void rt_arena_free(int64_t offset, size_t nbytes) {
    size_t size = (nbytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    if (size == 0) size = ARENA_ALIGN;
    pthread_mutex_lock(&g.mu);
    g.used -= (int64_t)size;
    chunk *last = g.nchunks ? &g.chunks[g.nchunks - 1] : NULL;
    /* the newest slice of the newest chunk: give back the tail (a slice of the chunk before can end
     * where an empty newest chunk begins: it goes to the free list) */
    if (last && offset >= last->off && offset + (int64_t)size == last->off + (int64_t)g.tail_used)
        g.tail_used -= size;
    else
        free_insert(offset, size);
    pthread_mutex_unlock(&g.mu);
}

int rt_arena_register(const rt_device_api *api) {
    pthread_mutex_lock(&g.mu);
    int rc = RT_OK;
    if (api && api->host_register) {
        g.reg_api = api;
        for (int i = 0; rc == RT_OK && i < g.nchunks; i++)
            if (!g.chunks[i].registered) {
                rc = register_range(api, g.chunks[i].base, g.chunks[i].size);
                if (rc == RT_OK) g.chunks[i].registered = 1;
            }
    }
    pthread_mutex_unlock(&g.mu);
    return rc;
}

int rt_arena_set_chunk_size(int64_t bytes) {
    if (bytes < 4096)
        return RT_ERR(RT_ERR_INVALID,
                      "arena.set_chunk_size: expected at least 4096 bytes, got %lld",
                      (long long)bytes);
    pthread_mutex_lock(&g.mu);
    g.chunk_size = (size_t)bytes;
    pthread_mutex_unlock(&g.mu);
    return RT_OK;
}

int rt_arena_stats(int64_t *mapped, int64_t *used, int64_t *peak_used, int64_t *chunks) {
    pthread_mutex_lock(&g.mu);
    if (mapped) *mapped = g.file_size;
    if (used) *used = g.used;
    if (peak_used) *peak_used = g.peak;
    if (chunks) *chunks = g.nchunks;
    pthread_mutex_unlock(&g.mu);
    return RT_OK;
}

/* ================================================================================================
 * Tensors over foreign memory, and arena tensors
 * ============================================================================================== */

int rt_tensor_wrap(int ndim, const int64_t *shape, int dtype, int device, void *data, size_t nbytes,
                   int memkind, void (*deleter)(void *ctx, void *data), void *ctx,
                   rt_tensor **out) {
    /* Make a tensor with an empty storage through the normal path (header caches, counters), then
     * point its storage at the foreign memory. */
    int64_t zero = 0;
    RT_TRY(rt_tensor_new(1, &zero, dtype, device, out));
    rt_tensor *t = *out;
    rt_storage *s = t->storage;
    s->backend->free(s->device, s->data, s->memkind, s->nbytes);
    rt_storage_untrack(s);
    s->data = data;
    s->nbytes = nbytes;
    s->memkind = memkind;
    s->deleter = deleter;
    s->deleter_ctx = ctx;
    t->meta.memkind = memkind;
    t->meta.ndim = ndim;
    for (int i = 0; i < RT_MAX_DIMS; i++)
        t->meta.shape[i] = i < ndim ? shape[i] : 0;
    rt_contiguous_strides(ndim, shape, t->meta.strides);
    t->meta.numel = rt_shape_numel(ndim, shape);
    return RT_OK;
}

typedef struct slice_ctx {
    int64_t off;
    size_t nbytes;
} slice_ctx;

static void slice_free(void *ctx, void *data) {
    (void)data;
    slice_ctx *c = ctx;
    rt_arena_free(c->off, c->nbytes);
    free(c);
}

int rt_arena_empty(int ndim, const int64_t *shape, int dtype, rt_tensor **out) {
    *out = NULL;
    RT_TRY(rt_check_alloc_shape("arena.empty", ndim, shape, dtype));
    size_t nbytes = (size_t)rt_shape_numel(ndim, shape) * rt_dtype_size(dtype);
    slice_ctx *c = malloc(sizeof *c);
    if (!c) return RT_ERR(RT_ERR_OOM, "arena.empty: out of host memory");
    void *p;
    int rc = rt_arena_alloc(nbytes, &p, &c->off);
    if (rc < 0) {
        free(c);
        return rc;
    }
    c->nbytes = nbytes;
    rc = rt_tensor_wrap(ndim, shape, dtype, RT_DEVICE_CPU, p, nbytes, RT_MEM_SHARED, slice_free, c,
                        out);
    if (rc < 0) slice_free(c, p);
    return rc;
}

int rt_arena_offset(const rt_tensor *t, int64_t *offset) {
    if (!t->storage || t->storage->deleter != slice_free)
        return RT_ERR(RT_ERR_INVALID,
                      "arena.offset: the tensor's storage is not an arena slice "
                      "(memkind %d)",
                      t->meta.memkind);
    *offset = ((slice_ctx *)t->storage->deleter_ctx)->off;
    return RT_OK;
}
