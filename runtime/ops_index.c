/* ops_index.c: gathers along one dim. rt_index_select (with autograd: the backward scatter-adds the
 * gradient into the selected rows), rt_index_add_ (in place), and the data-loading gather
 * rt_gather_rows (dtype conversion and division fused in) with rt_gather_rows_async, the same on a
 * background thread so a data loader builds batch i+1 while batch i is in use. */
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

/* The gather itself, no autograd: out = t[.., idx, ..] / divisor as out_dtype. */
static int gather(const char *op, rt_tensor *t, int dim, rt_tensor *idx, int out_dtype,
                  double divisor, rt_tensor **out) {
    *out = NULL;
    const rt_backend *be = t->storage->backend;
    int plain = out_dtype == t->meta.dtype && divisor == 1.0;
    if (plain ? !be->index_select : !be->index_select_convert)
        return RT_ERR(RT_ERR_UNSUPPORTED, "%s: not implemented on backend %s", op, be->name);
    int64_t shape[RT_MAX_DIMS];
    for (int d = 0; d < t->meta.ndim; d++)
        shape[d] = t->meta.shape[d];
    shape[dim] = idx->meta.numel;
    RT_TRY(rt_tensor_new(t->meta.ndim, shape, out_dtype, t->meta.device, out));
    rt_kview vo = rt_kview_of(*out), vs = rt_kview_of(t), vi = rt_kview_of(idx);
    if (vi.ndim == 0) { /* a scalar index acts as one index */
        vi.ndim = 1;
        vi.shape[0] = 1;
        vi.strides[0] = 1;
    }
    int rc = plain ? be->index_select(&vo, &vs, dim, &vi)
                   : be->index_select_convert(&vo, &vs, dim, &vi, divisor);
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
    for (int d = 0; d < ndim; d++)
        shape[d] = n->iargs[2 + d];
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
    int rc = gather("index_select", t, d, idx, t->meta.dtype, 1.0, out);
    if (rc == RT_OK && rt_needs_grad1(t)) {
        rt_node *node;
        rc = rt_node_attach(*out, "IndexSelectBackward", index_select_backward, 1, &t, &node);
        if (rc == RT_OK) {
            node->iargs[0] = d;
            node->iargs[1] = t->meta.ndim; /* 2 + RT_MAX_DIMS <= 16 iargs */
            for (int k = 0; k < t->meta.ndim; k++)
                node->iargs[2 + k] = t->meta.shape[k];
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
    RT_TRY(rt_check_no_internal_overlap("index_add_", t));
    RT_TRY(rt_check_inplace_autograd("index_add_", t));
    RT_TRY(prepare("index_add_", t, dim, indices, &d, &idx));
    int rc = rt_check_same_device("index_add_", t, src);
    /* PyTorch's assert_no_overlap: rows of src (or the indices) would be read after being added to
     */
    if (rc == RT_OK) rc = rt_check_no_overlap("index_add_", t, src);
    if (rc == RT_OK) rc = rt_check_no_overlap("index_add_", t, idx);
    /* src must have t's shape with dim replaced by the number of indices */
    int ok = rc == RT_OK && src->meta.ndim == t->meta.ndim;
    for (int k = 0; ok && k < t->meta.ndim; k++)
        ok = src->meta.shape[k] == (k == d ? idx->meta.numel : t->meta.shape[k]);
    if (rc == RT_OK && !ok) {
        char bs[RT_SHAPE_BUF], bt[RT_SHAPE_BUF];
        rc = RT_ERR(RT_ERR_SHAPE,
                    "index_add_: source of shape %s does not fit a target of shape "
                    "%s with %lld indices along dim %d",
                    rt_shape_str(bs, sizeof bs, src->meta.ndim, src->meta.shape),
                    rt_shape_str(bt, sizeof bt, t->meta.ndim, t->meta.shape),
                    (long long)idx->meta.numel, d);
    }
    /* src is converted to t's dtype within a category (float64 into float32 and the like; PyTorch
     * wants one dtype), but not across (PyTorch's canCast): a float source into an integer tensor
     * or a number source into a bool one would be truncated or saturated silently, row by row. */
    int st = rc == RT_OK ? src->meta.dtype : 0, tt = t->meta.dtype;
    if (rc == RT_OK &&
        ((rt_dtype_is_float(st) && !rt_dtype_is_float(tt)) || (st != RT_BOOL && tt == RT_BOOL)))
        rc = RT_ERR(RT_ERR_DTYPE,
                    "index_add_: source dtype %s can't be cast to the desired output type %s "
                    "(convert the source, or the tensor, first)",
                    rt_dtype_name(st), rt_dtype_name(tt));
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
 * The data-loading gather and its background variant
 * ============================================================================================== */

static int prepare_rows(const char *op, rt_tensor *t, rt_tensor *indices, int *out_dtype,
                        double divisor, rt_tensor **idx64) {
    int d;
    RT_TRY(prepare(op, t, 0, indices, &d, idx64));
    int rc = RT_OK;
    if (t->meta.device != RT_DEVICE_CPU)
        rc = RT_ERR(RT_ERR_UNSUPPORTED,
                    "%s: expected a CPU tensor, got one on cuda:%d (use "
                    "index_select)",
                    op, t->meta.device);
    else if (*out_dtype == -1)
        *out_dtype = t->meta.dtype;
    if (rc == RT_OK && rt_dtype_size(*out_dtype) == 0)
        rc = RT_ERR(RT_ERR_DTYPE, "%s: unknown output dtype code %d", op, *out_dtype);
    else if (rc == RT_OK && !(divisor == divisor && divisor != 0))
        rc = RT_ERR(RT_ERR_INVALID, "%s: divisor must be a non-zero number, got %g", op, divisor);
    else if (rc == RT_OK && divisor != 1.0 && !rt_dtype_is_float(*out_dtype))
        rc = RT_ERR(RT_ERR_DTYPE, "%s: dividing by %g needs a float output dtype, got %s", op,
                    divisor, rt_dtype_name(*out_dtype));
    if (rc < 0) {
        rt_tensor_release(*idx64);
        *idx64 = NULL;
    }
    return rc;
}

int rt_gather_rows(rt_tensor *t, rt_tensor *indices, int out_dtype, double divisor,
                   rt_tensor **out) {
    *out = NULL;
    rt_tensor *idx;
    RT_TRY(prepare_rows("gather_rows", t, indices, &out_dtype, divisor, &idx));
    int rc = gather("gather_rows", t, 0, idx, out_dtype, divisor, out);
    rt_tensor_release(idx);
    return rc;
}

/* Background jobs run on one persistent worker thread, started on first use and fed through a
 * FIFO queue: creating a thread per batch would cost about as much as the gather itself. */
enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

struct rt_async {
    rt_async *next; /* queue link */
    int state;      /* JOB_*, under g_mu */
    int taken;
    rt_tensor *t, *idx, *out;
    int out_dtype;
    double divisor;
    int rc;
    char msg[1024];
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER; /* new work or a finished job */
static rt_async *g_head, *g_tail, *g_running;
static int g_started, g_atfork;

static void *worker_main(void *arg) {
    (void)arg;
    /* One thread: the caller keeps the cores busy with the current batch meanwhile. The setting
     * is per thread (an OpenMP ICV of this thread only). */
    omp_set_num_threads(1);
    pthread_mutex_lock(&g_mu);
    for (;;) {
        while (!g_head)
            pthread_cond_wait(&g_cv, &g_mu);
        rt_async *job = g_head;
        g_head = job->next;
        if (!g_head) g_tail = NULL;
        job->state = JOB_RUNNING;
        g_running = job;
        pthread_mutex_unlock(&g_mu);
        rt_tensor *out = NULL;
        int rc =
            gather("gather_rows_async", job->t, 0, job->idx, job->out_dtype, job->divisor, &out);
        pthread_mutex_lock(&g_mu);
        job->rc = rc;
        job->out = out;
        if (rc < 0) snprintf(job->msg, sizeof job->msg, "%s", rt_last_error());
        job->state = JOB_DONE;
        g_running = NULL;
        pthread_cond_broadcast(&g_cv);
    }
    return NULL;
}

/* In a forked child the worker does not exist: fail the jobs it held and start afresh. */
static void atfork_child(void) {
    pthread_mutex_init(&g_mu, NULL);
    pthread_cond_init(&g_cv, NULL);
    for (rt_async *j = g_head; j; j = j->next) {
        j->state = JOB_DONE;
        j->rc = RT_ERR_BACKEND;
        snprintf(j->msg, sizeof j->msg, "gather_rows_async: the job was lost in fork()");
    }
    if (g_running) {
        g_running->state = JOB_DONE;
        g_running->rc = RT_ERR_BACKEND;
        snprintf(g_running->msg, sizeof g_running->msg,
                 "gather_rows_async: the job was lost in fork()");
    }
    g_head = g_tail = g_running = NULL;
    g_started = 0;
}

/* Queue a job, starting the worker if needed. Called with g_mu held. */
static int submit_locked(rt_async *job) {
    if (!g_started) {
        if (!g_atfork) {
            pthread_atfork(NULL, NULL, atfork_child);
            g_atfork = 1;
        }
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int e = pthread_create(&th, &attr, worker_main, NULL);
        pthread_attr_destroy(&attr);
        if (e)
            return RT_ERR(RT_ERR_BACKEND, "gather_rows_async: cannot start the worker thread: %s",
                          strerror(e));
        g_started = 1;
    }
    job->state = JOB_QUEUED;
    job->next = NULL;
    if (g_tail)
        g_tail->next = job;
    else
        g_head = job;
    g_tail = job;
    pthread_cond_broadcast(&g_cv);
    return RT_OK;
}

int rt_gather_rows_async(rt_tensor *t, rt_tensor *indices, int out_dtype, double divisor,
                         rt_async **out) {
    *out = NULL;
    rt_tensor *idx;
    RT_TRY(prepare_rows("gather_rows_async", t, indices, &out_dtype, divisor, &idx));
    rt_async *job = calloc(1, sizeof *job);
    if (!job) {
        rt_tensor_release(idx);
        return RT_ERR(RT_ERR_OOM, "gather_rows_async: out of host memory");
    }
    rt_tensor_retain(t);
    job->t = t;
    job->idx = idx;
    job->out_dtype = out_dtype;
    job->divisor = divisor;
    pthread_mutex_lock(&g_mu);
    int rc = submit_locked(job);
    pthread_mutex_unlock(&g_mu);
    if (rc < 0) {
        rt_tensor_release(job->t);
        rt_tensor_release(job->idx);
        free(job);
        return rc;
    }
    *out = job;
    return RT_OK;
}

int rt_async_wait(rt_async *job, rt_tensor **out) {
    *out = NULL;
    if (!job) return RT_ERR(RT_ERR_INVALID, "async_wait: job is NULL");
    pthread_mutex_lock(&g_mu);
    while (job->state != JOB_DONE)
        pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
    if (job->rc < 0) {
        /* re-raise on this thread; drop the worker's " (at file:line)" as RT_ERR adds ours */
        char msg[sizeof job->msg];
        snprintf(msg, sizeof msg, "%s", job->msg);
        char *at = NULL;
        for (char *p = strstr(msg, " (at "); p; p = strstr(p + 1, " (at "))
            at = p;
        if (at) *at = 0;
        return RT_ERR(job->rc, "%s", msg);
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
    pthread_mutex_lock(&g_mu);
    if (job->state == JOB_QUEUED) { /* not started: take it out of the queue */
        rt_async *prev = NULL;
        for (rt_async *j = g_head; j; prev = j, j = j->next)
            if (j == job) {
                if (prev)
                    prev->next = j->next;
                else
                    g_head = j->next;
                if (g_tail == j) g_tail = prev;
                break;
            }
        job->state = JOB_DONE;
    }
    while (job->state != JOB_DONE)
        pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
    rt_tensor_release(job->out);
    rt_tensor_release(job->t);
    rt_tensor_release(job->idx);
    free(job);
}
