/* host_optim_delay.c: the one-step-delayed update of streamed host parameters (issue 6; DeepSpeed
 * ZeRO-Offload's delayed parameter update). optim's step() hands a batch of fused host AdamW / SGD
 * updates (runtime/host_optim.c) to a thread of this object and returns; the forward and backward
 * of the next step read front copies of the weights that the offload engine keeps
 * (runtime/offload.c, rt_offload_param_delay_*), while the update writes the masters, the states
 * and back copies (in the same fused pass: kernels/cpu/host_optim.c's copy and shadow outputs). The
 * next step waits for it and swaps back and front, so what every step reads is fixed by the step
 * count, never by thread timing. Everything but the update itself runs on the compute thread. */
#include "host_optim.h"

#include "internal.h"
#include "offload_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { D_ADAMW = 0, D_SGD = 1 };

typedef struct entry {
    int kind;
    rt_offload_param *p;       /* retained */
    rt_tensor *grad, *s1, *s2; /* retained: the gradient read, the states written */
    rt_adamw_hparams ah;
    rt_sgd_hparams sh;
    void *back0, *back1; /* back copies to write (runtime/offload.c owns them) */
    int back1_dtype;
    int ver0; /* the master's version at launch: the update bumps it once */
    int rc;   /* the update's status (written by the thread) */
} entry;

typedef struct batch {
    entry *e;
    int n, cap;
} batch;

struct rt_delayed_update {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    int have_thread, quit;
    batch open;         /* being added to (compute thread) */
    batch run;          /* launched: the thread's until done */
    int launched, done; /* under mu */
    int rc;             /* the thread's first error, with its message */
    char msg[512];
    rt_offload_param **params; /* in delayed mode through this object (retained) */
    int nparams, cap_params;
};

static atomic_int g_test_delay_us;

int rt_delayed_update_set_test_delay_us(int us) {
    if (us < 0)
        return RT_ERR(RT_ERR_INVALID, "delayed_update.set_test_delay_us: expected >= 0, got %d",
                      us);
    atomic_store(&g_test_delay_us, us);
    return RT_OK;
}

static int version_of(const rt_tensor *t) {
    return atomic_load(&t->storage->version);
}

static void run_batch(rt_delayed_update *d) {
    int us = atomic_load(&g_test_delay_us);
    for (int i = 0; i < d->run.n; i++) {
        entry *x = &d->run.e[i];
        if (us > 0) {
            struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
            nanosleep(&ts, NULL);
        }
        rt_tensor *param = rt_offload_param_host(x->p);
        /* both back copies are stores of the fused pass (no copy of the master after it: for a
         * bf16 master with bf16 states that memcpy was 4 of 18 bytes per parameter) */
        int rc = x->kind == D_ADAMW ? rt_host_adamw_apply(param, x->grad, x->s1, x->s2, x->back0,
                                                          x->back1, x->back1_dtype, &x->ah)
                                    : rt_host_sgd_apply(param, x->grad, x->s1, x->back0, x->back1,
                                                        x->back1_dtype, &x->sh);
        x->rc = rc;
        if (rc < 0 && d->rc == RT_OK) {
            d->rc = rc;
            snprintf(d->msg, sizeof d->msg, "%s", rt_last_error());
        }
    }
}

static void *thread_main(void *arg) {
    rt_delayed_update *d = arg;
    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (!d->quit && !(d->launched && !d->done))
            pthread_cond_wait(&d->cv, &d->mu);
        if (d->quit) break;
        pthread_mutex_unlock(&d->mu);
        run_batch(d); /* the batch is the thread's until done is set */
        pthread_mutex_lock(&d->mu);
        d->done = 1;
        pthread_cond_broadcast(&d->cv);
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

int rt_delayed_update_new(rt_delayed_update **out) {
    if (!out) return RT_ERR(RT_ERR_INVALID, "delayed_update.new: out is NULL");
    *out = NULL;
    rt_delayed_update *d = calloc(1, sizeof *d);
    if (!d) return RT_ERR(RT_ERR_OOM, "delayed_update.new: out of host memory");
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    *out = d;
    return RT_OK;
}

static void release_batch(batch *b) {
    for (int i = 0; i < b->n; i++) {
        entry *x = &b->e[i];
        rt_tensor_release(x->grad);
        rt_tensor_release(x->s1);
        rt_tensor_release(x->s2);
        rt_offload_param_release(x->p);
    }
    b->n = 0;
}

static int tracked(const rt_delayed_update *d, const rt_offload_param *p) {
    for (int i = 0; i < d->nparams; i++)
        if (d->params[i] == p) return 1;
    return 0;
}

static int add(rt_delayed_update *d, int kind, rt_offload_param *p, rt_tensor *grad, rt_tensor *s1,
               rt_tensor *s2, const rt_adamw_hparams *ah, const rt_sgd_hparams *sh) {
    const char *op = kind == D_ADAMW ? "delayed_update.add_adamw" : "delayed_update.add_sgd";
    if (!d || !p) return RT_ERR(RT_ERR_INVALID, "%s: NULL update or parameter handle", op);
    if (d->launched)
        return RT_ERR(RT_ERR_INVALID,
                      "%s: the previous update is still pending (wait for it before adding the "
                      "next step's)",
                      op);
    rt_tensor *param = rt_offload_param_host(p);
    if (kind == D_ADAMW)
        RT_TRY(rt_host_adamw_check(op, param, grad, s1, s2, ah));
    else
        RT_TRY(rt_host_sgd_check(op, param, grad, s1, sh));
    if (grad->storage == param->storage)
        return RT_ERR(RT_ERR_INVALID, "%s: the gradient shares memory with the parameter", op);
    for (int i = 0; i < d->open.n; i++)
        if (d->open.e[i].p == p)
            return RT_ERR(RT_ERR_INVALID, "%s: the parameter is already in this step's update", op);
    int mine = tracked(d, p);
    if (!mine && rt_offload_param_delayed(p))
        return RT_ERR(RT_ERR_INVALID,
                      "%s: the parameter is under another optimizer's delayed update (flush it "
                      "first)",
                      op);
    if (d->open.n == d->open.cap) {
        int cap = d->open.cap ? 2 * d->open.cap : 16;
        entry *e = realloc(d->open.e, (size_t)cap * sizeof *e);
        if (!e) return RT_ERR(RT_ERR_OOM, "%s: out of host memory", op);
        d->open.e = e;
        d->open.cap = cap;
    }
    if (!mine && d->nparams == d->cap_params) {
        int cap = d->cap_params ? 2 * d->cap_params : 16;
        rt_offload_param **a = realloc(d->params, (size_t)cap * sizeof *a);
        if (!a) return RT_ERR(RT_ERR_OOM, "%s: out of host memory", op);
        d->params = a;
        d->cap_params = cap;
    }
    entry x = {0};
    x.kind = kind;
    RT_TRY(rt_offload_param_delay_prepare(p, &x.back0, &x.back1, &x.back1_dtype));
    if (!mine) {
        rt_offload_param_retain(p);
        d->params[d->nparams++] = p;
    }
    rt_offload_param_retain(p);
    rt_tensor_retain(grad);
    if (s1) rt_tensor_retain(s1);
    if (s2) rt_tensor_retain(s2);
    x.p = p;
    x.grad = grad;
    x.s1 = s1;
    x.s2 = s2;
    if (ah) x.ah = *ah;
    if (sh) x.sh = *sh;
    d->open.e[d->open.n++] = x;
    return RT_OK;
}

int rt_delayed_update_add_adamw(rt_delayed_update *d, rt_offload_param *p, rt_tensor *grad,
                                rt_tensor *exp_avg, rt_tensor *exp_avg_sq,
                                const rt_adamw_hparams *h) {
    return add(d, D_ADAMW, p, grad, exp_avg, exp_avg_sq, h, NULL);
}

int rt_delayed_update_add_sgd(rt_delayed_update *d, rt_offload_param *p, rt_tensor *grad,
                              rt_tensor *momentum_buf, const rt_sgd_hparams *h) {
    return add(d, D_SGD, p, grad, h && h->momentum != 0 ? momentum_buf : NULL, NULL, NULL, h);
}

int rt_delayed_update_cancel(rt_delayed_update *d) {
    if (!d) return RT_ERR(RT_ERR_INVALID, "delayed_update.cancel: NULL update");
    release_batch(&d->open);
    return RT_OK;
}

int rt_delayed_update_launch(rt_delayed_update *d) {
    static const char *op = "delayed_update.launch";
    if (!d) return RT_ERR(RT_ERR_INVALID, "%s: NULL update", op);
    if (d->launched)
        return RT_ERR(RT_ERR_INVALID, "%s: the previous update is still pending (wait first)", op);
    if (d->open.n == 0) return RT_OK;
    if (!d->have_thread) {
        if (pthread_create(&d->th, NULL, thread_main, d) != 0)
            return RT_ERR(RT_ERR_OOM, "%s: cannot start the update thread", op);
        d->have_thread = 1;
    }
    for (int i = 0; i < d->open.n; i++)
        d->open.e[i].ver0 = version_of(rt_offload_param_host(d->open.e[i].p));
    pthread_mutex_lock(&d->mu);
    batch t = d->run; /* empty: its entries were released by the last wait */
    d->run = d->open;
    d->open = t;
    d->rc = RT_OK;
    d->msg[0] = 0;
    d->launched = 1;
    d->done = 0;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    return RT_OK;
}

int rt_delayed_update_pending(const rt_delayed_update *d) {
    return d && d->launched;
}

int rt_delayed_update_wait(rt_delayed_update *d) {
    static const char *op = "delayed_update.wait";
    if (!d) return RT_ERR(RT_ERR_INVALID, "%s: NULL update", op);
    if (!d->launched) return RT_OK;
    pthread_mutex_lock(&d->mu);
    while (!d->done)
        pthread_cond_wait(&d->cv, &d->mu);
    pthread_mutex_unlock(&d->mu);
    int rc = RT_OK;
    if (d->rc < 0) rc = RT_ERR(d->rc, "%s: the delayed optimizer update failed: %s", op, d->msg);
    for (int i = 0; i < d->run.n; i++) {
        entry *x = &d->run.e[i];
        rt_tensor *param = rt_offload_param_host(x->p);
        /* each update that ran bumped its storage's version once: parameters that are views of
         * one storage (adopted slices of a flat buffer) move it by one each */
        int bumps = 0;
        for (int k = 0; k < d->run.n && x->rc == RT_OK && param->meta.numel > 0; k++) {
            rt_tensor *q = rt_offload_param_host(d->run.e[k].p);
            bumps += q->storage == param->storage && d->run.e[k].rc == RT_OK && q->meta.numel > 0;
        }
        if (x->rc == RT_OK && param->meta.numel > 0 && version_of(param) != x->ver0 + bumps &&
            rc == RT_OK)
            rc = RT_ERR(RT_ERR_INVALID,
                        "%s: a parameter was changed while its delayed optimizer update was "
                        "running (call optimizer:flush() before writing parameters)",
                        op);
        int r2 = rt_offload_param_delay_swap(x->p, x->rc == RT_OK && x->back0 != NULL,
                                             x->rc == RT_OK && x->back1 != NULL);
        if (r2 < 0 && rc == RT_OK) rc = r2;
    }
    release_batch(&d->run);
    d->launched = 0;
    return rc;
}

int rt_delayed_update_flush(rt_delayed_update *d) {
    if (!d) return RT_ERR(RT_ERR_INVALID, "delayed_update.flush: NULL update");
    int rc = rt_delayed_update_wait(d);
    release_batch(&d->open);
    for (int i = 0; i < d->nparams; i++) {
        int r2 = rt_offload_param_delay_end(d->params[i]);
        if (r2 < 0 && rc == RT_OK) rc = r2;
        rt_offload_param_release(d->params[i]);
    }
    d->nparams = 0;
    return rc;
}

void rt_delayed_update_free(rt_delayed_update *d) {
    if (!d) return;
    (void)rt_delayed_update_flush(d);
    if (d->have_thread) {
        pthread_mutex_lock(&d->mu);
        d->quit = 1;
        pthread_cond_broadcast(&d->cv);
        pthread_mutex_unlock(&d->mu);
        pthread_join(d->th, NULL);
    }
    free(d->open.e);
    free(d->run.e);
    free(d->params);
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    free(d);
}
