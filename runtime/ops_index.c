/* ops_index.c: gathers along one dim. rt_index_select (with autograd: the backward scatter-adds the
 * gradient into the selected rows), rt_index_add_ (in place), and rt_index_select_async, the same
 * gather on a background thread so a data loader builds batch i+1 while batch i is in use. */
#include "internal.h"

#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Checks shared by the gathers: t has dim, indices are 1-d (or 0-d) integers on t's device.
 * Writes the wrapped dim and an i64 version of the indices (a new reference). */
static int prepare(const char *op, rt_tensor *t, int dim, rt_tensor *indices, int *wdim,
                   rt_tensor **idx64) {
    *idx64 = NULL;
    if (!t || !indices) return RT_ERR(RT_ERR_INVALID, "%s: tensor or indices is NULL", op);
    if (t->meta.ndim < 1)
        return RT_ERR(RT_ERR_SHAPE, "%s: expected a tensor with at least 1 dim, got a scalar", op);
    RT_TRY(rt_wrap_dim(op, dim, t->meta.ndim, wdim));
    if (indices->meta.ndim > 1) {
        char b[RT_SHAPE_BUF];
        return RT_ERR(RT_ERR_SHAPE, "%s: expected 1-d indices, got shape %s", op,
                      rt_shape_str(b, sizeof b, indices->meta.ndim, indices->meta.shape));
    }
    if (indices->meta.dtype != RT_I64 && indices->meta.dtype != RT_I32)
        return RT_ERR(RT_ERR_DTYPE, "%s: expected int64 or int32 indices, got %s", op,
                      rt_dtype_name(indices->meta.dtype));
    RT_TRY(rt_check_same_device(op, t, indices));
    if (indices->meta.dtype == RT_I64) {
        rt_tensor_retain(indices);
        *idx64 = indices;
        return RT_OK;
    }
    int prev = rt_set_grad_enabled(0);
    int rc = rt_to_dtype(indices, RT_I64, idx64);
    rt_set_grad_enabled(prev);
    return rc;
}

/* The gather itself, no autograd. */
static int gather(const char *op, rt_tensor *t, int dim, rt_tensor *idx, rt_tensor **out) {
    *out = NULL;
    const rt_backend *be = t->storage->backend;
    if (!be->index_select)
        return RT_ERR(RT_ERR_UNSUPPORTED, "%s: not implemented on backend %s", op, be->name);
    int64_t shape[RT_MAX_DIMS];
    for (int d = 0; d < t->meta.ndim; d++) shape[d] = t->meta.shape[d];
    shape[dim] = idx->meta.numel;
    RT_TRY(rt_tensor_new(t->meta.ndim, shape, t->meta.dtype, t->meta.device, out));
    rt_kview vo = rt_kview_of(*out), vs = rt_kview_of(t), vi = rt_kview_of(idx);
    if (vi.ndim == 0) { /* a scalar index acts as one index */
        vi.ndim = 1;
        vi.shape[0] = 1;
        vi.strides[0] = 1;
    }
    int rc = be->index_select(&vo, &vs, dim, &vi);
    if (rc < 0) {
        rt_tensor_release(*out);
        *out = NULL;
    }
    return rc;
}

static int add_rows(const char *op, rt_tensor *t, int dim, rt_tensor *idx, rt_tensor *src) {
    const rt_backend *be = t->storage->backend;
    if (!be->index_add)
        return RT_ERR(RT_ERR_UNSUPPORTED, "%s: not implemented on backend %s", op, be->name);
    rt_kview vo = rt_kview_of(t), vs = rt_kview_of(src), vi = rt_kview_of(idx);
    if (vi.ndim == 0) {
        vi.ndim = 1;
        vi.shape[0] = 1;
        vi.strides[0] = 1;
    }
    RT_TRY(be->index_add(&vo, &vs, dim, &vi));
    rt_tensor_bump_version(t);
    return RT_OK;
}

/* ================================================================================================
 * index_select and its backward
 * ============================================================================================== */

static int index_select_backward(rt_node *n, rt_tensor *g, rt_tensor **gi) {
    rt_tensor *idx;
    RT_TRY(rt_node_saved(n, 0, &idx));
    int dim = (int)n->iargs[0];
    int64_t shape[RT_MAX_DIMS];
    int ndim = (int)n->iargs[1];
    for (int d = 0; d < ndim; d++) shape[d] = n->iargs[2 + d];
    RT_TRY(rt_full(ndim, shape, 0.0, g->meta.dtype, g->meta.device, &gi[0]));
    int rc = add_rows("index_select backward", gi[0], dim, idx, g);
    if (rc < 0) {
        rt_tensor_release(gi[0]);
        gi[0] = NULL;
    }
    return rc;
}

int rt_index_select(rt_tensor *t, int dim, rt_tensor *indices, rt_tensor **out) {
    *out = NULL;
    int d;
    rt_tensor *idx;
    RT_TRY(prepare("index_select", t, dim, indices, &d, &idx));
    int rc = gather("index_select", t, d, idx, out);
    if (rc == RT_OK && rt_needs_grad1(t)) {
        rt_node *node;
        rc = rt_node_attach(*out, "IndexSelectBackward", index_select_backward, 1, &t, &node);
        if (rc == RT_OK) {
            node->iargs[0] = d;
            node->iargs[1] = t->meta.ndim; /* 2 + RT_MAX_DIMS <= 16 iargs */
            for (int k = 0; k < t->meta.ndim; k++) node->iargs[2 + k] = t->meta.shape[k];
            rt_node_save(node, idx);
        }
        if (rc < 0) {
            rt_tensor_release(*out);
            *out = NULL;
        }
    }
    rt_tensor_release(idx);
    return rc;
}

int rt_index_add_(rt_tensor *t, int dim, rt_tensor *indices, rt_tensor *src) {
    int d;
    rt_tensor *idx, *conv = NULL;
    RT_TRY(prepare("index_add_", t, dim, indices, &d, &idx));
    int rc = rt_check_same_device("index_add_", t, src);
    /* src must have t's shape with dim replaced by the number of indices */
    int ok = rc == RT_OK && src->meta.ndim == t->meta.ndim;
    for (int k = 0; ok && k < t->meta.ndim; k++)
        ok = src->meta.shape[k] == (k == d ? idx->meta.numel : t->meta.shape[k]);
    if (rc == RT_OK && !ok) {
        char bs[RT_SHAPE_BUF], bt[RT_SHAPE_BUF];
        rc = RT_ERR(RT_ERR_SHAPE, "index_add_: source of shape %s does not fit a target of shape "
                                  "%s with %lld indices along dim %d",
                    rt_shape_str(bs, sizeof bs, src->meta.ndim, src->meta.shape),
                    rt_shape_str(bt, sizeof bt, t->meta.ndim, t->meta.shape),
                    (long long)idx->meta.numel, d);
    }
    if (rc == RT_OK && src->meta.dtype != t->meta.dtype) {
        int prev = rt_set_grad_enabled(0);
        rc = rt_to_dtype(src, t->meta.dtype, &conv);
        rt_set_grad_enabled(prev);
        src = conv;
    }
    if (rc == RT_OK) rc = add_rows("index_add_", t, d, idx, src);
    rt_tensor_release(conv);
    rt_tensor_release(idx);
    return rc;
}

/* ================================================================================================
 * Background gathers
 * ============================================================================================== */

struct rt_async {
    pthread_t thread;
    int joined, taken;
    rt_tensor *t, *idx, *out;
    int dim;
    int rc;
    char msg[1024];
};

static void *async_main(void *arg) {
    rt_async *job = arg;
    /* One thread: the caller keeps the cores busy with the current batch meanwhile. The setting
     * is per thread (an OpenMP ICV of this thread only). */
    omp_set_num_threads(1);
    job->rc = gather("index_select_async", job->t, job->dim, job->idx, &job->out);
    if (job->rc < 0) snprintf(job->msg, sizeof job->msg, "%s", rt_last_error());
    return NULL;
}

int rt_index_select_async(rt_tensor *t, int dim, rt_tensor *indices, rt_async **out) {
    *out = NULL;
    int d;
    rt_tensor *idx;
    RT_TRY(prepare("index_select_async", t, dim, indices, &d, &idx));
    if (t->meta.device != RT_DEVICE_CPU) {
        rt_tensor_release(idx);
        return RT_ERR(RT_ERR_UNSUPPORTED, "index_select_async: expected a CPU tensor, got one on "
                                          "cuda:%d (use index_select)",
                      t->meta.device);
    }
    rt_async *job = calloc(1, sizeof *job);
    if (!job) {
        rt_tensor_release(idx);
        return RT_ERR(RT_ERR_OOM, "index_select_async: out of host memory");
    }
    rt_tensor_retain(t);
    job->t = t;
    job->idx = idx;
    job->dim = d;
    int e = pthread_create(&job->thread, NULL, async_main, job);
    if (e) {
        rt_tensor_release(job->t);
        rt_tensor_release(job->idx);
        free(job);
        return RT_ERR(RT_ERR_BACKEND, "index_select_async: cannot start a thread: %s", strerror(e));
    }
    *out = job;
    return RT_OK;
}

static void async_join(rt_async *job) {
    if (!job->joined) {
        pthread_join(job->thread, NULL);
        job->joined = 1;
    }
}

int rt_async_wait(rt_async *job, rt_tensor **out) {
    *out = NULL;
    if (!job) return RT_ERR(RT_ERR_INVALID, "async_wait: job is NULL");
    async_join(job);
    if (job->rc < 0) {
        /* re-raise on this thread; drop the worker's " (at file:line)" as RT_ERR adds ours */
        char *at = strstr(job->msg, " (at ");
        if (at) *at = 0;
        return RT_ERR(job->rc, "%s", job->msg);
    }
    if (job->taken)
        return RT_ERR(RT_ERR_INVALID, "async_wait: the result of this job was already taken");
    job->taken = 1;
    *out = job->out;
    job->out = NULL;
    return RT_OK;
}

void rt_async_free(rt_async *job) {
    if (!job) return;
    async_join(job);
    rt_tensor_release(job->out);
    rt_tensor_release(job->t);
    rt_tensor_release(job->idx);
    free(job);
}
