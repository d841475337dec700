/* cpu_streams.c: streams and events of the CPU backend, so the offload engine (runtime/offload.c)
 * runs on the CPU through the same rt_device_api as on CUDA (runtime/offload_internal.h).
 *
 * A stream is a worker thread with a FIFO of tasks: copies, event records and event waits, run in
 * order. The compute stream is the calling thread (a NULL stream): copies on it run at once, an
 * event recorded on it completes at once, and waiting on an event blocks the caller. Events follow
 * CUDA's rules: a record gets the next sequence number; a wait (by a stream or the host) waits for
 * the record that was the latest when the wait was issued; waiting on a never-recorded event
 * returns at once. Because every copy stream is a real thread, a wait the engine forgets is a race
 * that CI sees as a wrong answer (rt_cpu_streams_set_copy_delay_us makes it certain). */
#include "../../runtime/offload_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct rt_event {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t recorded;  /* sequence number of the latest record */
    int64_t completed; /* highest sequence number reached by its stream */
    double t_ms;       /* monotonic time when `completed` was last raised */
    int timing;
};

typedef enum { TASK_COPY, TASK_RECORD, TASK_WAIT } task_kind;

typedef struct task {
    struct task *next;
    task_kind kind;
    void *dst;
    const void *src;
    size_t nbytes;
    rt_event *ev;
    int64_t seq;
} task;

struct rt_stream {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* work queued or stop */
    pthread_cond_t idle_cv; /* queue drained */
    task *head, *tail;
    int busy, stop;
};

static atomic_int g_delay_us;

void rt_cpu_streams_set_copy_delay_us(int us) {
    atomic_store(&g_delay_us, us > 0 ? us : 0);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* ================================================================================================
 * Events
 * ============================================================================================== */

static void event_complete(rt_event *e, int64_t seq) {
    pthread_mutex_lock(&e->mu);
    if (seq > e->completed) {
        e->completed = seq;
        e->t_ms = now_ms();
    }
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

static void event_wait_seq(rt_event *e, int64_t seq) {
    pthread_mutex_lock(&e->mu);
    while (e->completed < seq)
        pthread_cond_wait(&e->cv, &e->mu);
    pthread_mutex_unlock(&e->mu);
}

static int64_t event_latest(rt_event *e) {
    pthread_mutex_lock(&e->mu);
    int64_t s = e->recorded;
    pthread_mutex_unlock(&e->mu);
    return s;
}

static int cpu_event_create(int enable_timing, rt_event **out) {
    *out = NULL;
    rt_event *e = calloc(1, sizeof *e);
    if (!e) return RT_ERR(RT_ERR_OOM, "cpu stream: out of host memory for an event");
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->timing = enable_timing != 0;
    *out = e;
    return RT_OK;
}

static void cpu_event_destroy(rt_event *e) {
    if (!e) return;
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e);
}

static int cpu_event_synchronize(rt_event *e) {
    event_wait_seq(e, event_latest(e));
    return RT_OK;
}

static int cpu_event_query(rt_event *e) {
    pthread_mutex_lock(&e->mu);
    int done = e->completed >= e->recorded;
    pthread_mutex_unlock(&e->mu);
    return done;
}

static int cpu_event_elapsed_time(rt_event *a, rt_event *b, double *ms) {
    if (!a->timing || !b->timing)
        return RT_ERR(RT_ERR_INVALID, "Event.elapsed_time: both events need enable_timing=true");
    if (!cpu_event_query(a) || !cpu_event_query(b) || a->recorded == 0 || b->recorded == 0)
        return RT_ERR(RT_ERR_INVALID, "Event.elapsed_time: both events must be recorded and done");
    *ms = b->t_ms - a->t_ms;
    return RT_OK;
}

/* ================================================================================================
 * Streams
 * ============================================================================================== */

static void run_copy(void *dst, const void *src, size_t n) {
    const size_t chunk = (size_t)256 << 10;
    int delay = atomic_load(&g_delay_us);
    for (size_t off = 0; off < n || (n == 0 && off == 0); off += chunk) {
        if (delay) usleep((useconds_t)delay);
        if (n == 0) break;
        size_t len = n - off < chunk ? n - off : chunk;
        memcpy((char *)dst + off, (const char *)src + off, len);
    }
}

static void *stream_main(void *arg) {
    rt_stream *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->head && !s->stop)
            pthread_cond_wait(&s->cv, &s->mu);
        if (!s->head && s->stop) break;
        task *t = s->head;
        s->head = t->next;
        if (!s->head) s->tail = NULL;
        s->busy = 1;
        pthread_mutex_unlock(&s->mu);
        switch (t->kind) {
        case TASK_COPY:
            run_copy(t->dst, t->src, t->nbytes);
            break;
        case TASK_RECORD:
            event_complete(t->ev, t->seq);
            break;
        case TASK_WAIT:
            event_wait_seq(t->ev, t->seq);
            break;
        }
        free(t);
        pthread_mutex_lock(&s->mu);
        s->busy = 0;
        if (!s->head) pthread_cond_broadcast(&s->idle_cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static int enqueue(rt_stream *s, task_kind kind, void *dst, const void *src, size_t n, rt_event *e,
                   int64_t seq) {
    task *t = calloc(1, sizeof *t);
    if (!t) return RT_ERR(RT_ERR_OOM, "cpu stream: out of host memory for a task");
    t->kind = kind;
    t->dst = dst;
    t->src = src;
    t->nbytes = n;
    t->ev = e;
    t->seq = seq;
    pthread_mutex_lock(&s->mu);
    if (s->tail)
        s->tail->next = t;
    else
        s->head = t;
    s->tail = t;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return RT_OK;
}

static int cpu_stream_create(int device, rt_stream **out) {
    (void)device;
    *out = NULL;
    rt_stream *s = calloc(1, sizeof *s);
    if (!s) return RT_ERR(RT_ERR_OOM, "cpu stream: out of host memory");
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_cond_init(&s->idle_cv, NULL);
    if (pthread_create(&s->thread, NULL, stream_main, s) != 0) {
        free(s);
        return RT_ERR(RT_ERR_BACKEND, "cpu stream: could not start a thread");
    }
    *out = s;
    return RT_OK;
}

static int cpu_stream_synchronize(rt_stream *s) {
    if (!s) return RT_OK; /* the compute stream is the caller: nothing pending */
    pthread_mutex_lock(&s->mu);
    while (s->head || s->busy)
        pthread_cond_wait(&s->idle_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    return RT_OK;
}

static void cpu_stream_destroy(rt_stream *s) {
    if (!s) return;
    cpu_stream_synchronize(s);
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_cond_destroy(&s->idle_cv);
    free(s);
}

static int cpu_event_record(rt_event *e, rt_stream *s) {
    pthread_mutex_lock(&e->mu);
    int64_t seq = ++e->recorded;
    pthread_mutex_unlock(&e->mu);
    if (!s) {
        event_complete(e, seq);
        return RT_OK;
    }
    return enqueue(s, TASK_RECORD, NULL, NULL, 0, e, seq);
}

static int cpu_stream_wait_event(rt_stream *s, rt_event *e) {
    int64_t seq = event_latest(e);
    if (!s) {
        event_wait_seq(e, seq);
        return RT_OK;
    }
    return enqueue(s, TASK_WAIT, NULL, NULL, 0, e, seq);
}

static int cpu_memcpy_async(void *dst, const void *src, size_t nbytes, rt_stream *s) {
    if (!s) {
        run_copy(dst, src, nbytes);
        return RT_OK;
    }
    return enqueue(s, TASK_COPY, dst, src, nbytes, NULL, 0);
}

static int cpu_stream_device(rt_stream *s) {
    (void)s;
    return RT_DEVICE_CPU;
}

const rt_device_api rt_cpu_stream_api = {
    .stream_create = cpu_stream_create,
    .stream_destroy = cpu_stream_destroy,
    .stream_synchronize = cpu_stream_synchronize,
    .stream_wait_event = cpu_stream_wait_event,
    .stream_device = cpu_stream_device,
    .event_create = cpu_event_create,
    .event_destroy = cpu_event_destroy,
    .event_record = cpu_event_record,
    .event_synchronize = cpu_event_synchronize,
    .event_query = cpu_event_query,
    .event_elapsed_time = cpu_event_elapsed_time,
    .memcpy_async = cpu_memcpy_async,
};
