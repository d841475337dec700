/* offload_migrate.c: residency by migration (DESIGN section 5, "the planner keeps some parameters
 * on the device for good"; section 6, "the update runs where the master weight lives").
 *
 * A parameter the residency plan keeps on the device used to stay a host tensor with a resident
 * copy in the engine's pool: its gradient still went to the host every backward (a full step's
 * worth of D2H traffic with an all-resident budget) and its update ran there, so the copy had to
 * be sent again. Here such a parameter moves: its tensor gets device storage (the same tensor, so
 * modules and optimizers holding it follow), autograd accumulates its gradient on the device, an
 * optimizer updates it there, and the engine stops fetching it. The streamed Linear asks for the
 * move before each forward (lua/ramtorch/linear.lua); the move happens only when nothing holds the
 * host master (rt_offload_migration_ok), so it is deferred rather than refused. */
#include "internal.h"
#include "offload_internal.h"

#include <stdatomic.h>

static atomic_int g_migration = 1;

int rt_offload_set_migration(int enabled) {
    return atomic_exchange(&g_migration, enabled != 0);
}

static int move_one(rt_offload_param *p, int device) {
    rt_tensor *t = rt_offload_param_host(p);
    int64_t bytes = t->meta.numel * (int64_t)rt_dtype_size(t->meta.dtype);
    RT_TRY(rt_tensor_move_storage_(t, device));
    rt_offload_note_migrated(device, p, bytes);
    return RT_OK;
}

int rt_offload_migrate(rt_offload_param *w, rt_offload_param *b, int device, int *moved) {
    *moved = 0;
    if (!w) return RT_ERR(RT_ERR_INVALID, "offload.migrate: expected a weight, got NULL");
    int ok = 0;
    if (rt_offload_param_migrated(w)) {
        /* a bias left behind (its move ran out of device memory last time) follows its weight */
        if (b && !rt_offload_param_migrated(b)) {
            RT_TRY(rt_offload_migration_ok(device, b, 0, &ok));
            if (!ok)
                return RT_ERR(RT_ERR_INVALID,
                              "offload.migrate: the bias is held on the host (a gradient or a "
                              "graph that uses it) while its weight lives on the device");
            RT_TRY(move_one(b, device));
        }
        *moved = 1;
        return RT_OK;
    }
    if (!atomic_load(&g_migration)) return RT_OK;
    RT_TRY(rt_offload_migration_ok(device, w, 1, &ok));
    if (ok && b && !rt_offload_param_migrated(b))
        RT_TRY(rt_offload_migration_ok(device, b, 0, &ok));
    if (!ok) return RT_OK;
    /* the weight first; should the bias's allocation then fail, the error is raised and the next
     * forward moves the bias (above) */
    RT_TRY(move_one(w, device));
    if (b && !rt_offload_param_migrated(b)) RT_TRY(move_one(b, device));
    *moved = 1;
    return RT_OK;
}

int rt_offload_unmigrate(rt_offload_param *p, rt_tensor *host) {
    static const char *op = "offload.unmigrate";
    if (!p || !host)
        return RT_ERR(RT_ERR_INVALID, "%s: expected a parameter and a host tensor", op);
    if (!rt_offload_param_migrated(p)) return RT_OK;
    if (host->meta.device != RT_DEVICE_CPU)
        return RT_ERR(RT_ERR_DEVICE, "%s: the new storage must be host memory", op);
    rt_tensor *t = rt_offload_param_host(p);
    /* a device gradient comes back with it: host parameters have host gradients */
    if (t->grad && t->grad->meta.device != RT_DEVICE_CPU) {
        if (!rt_tensor_is_contiguous(t->grad)) {
            rt_tensor *c = NULL;
            RT_TRY(rt_contiguous(t->grad, &c));
            rt_tensor_release(t->grad);
            t->grad = c;
        }
        RT_TRY(rt_tensor_move_storage_(t->grad, RT_DEVICE_CPU));
    }
    RT_TRY(rt_tensor_adopt_storage_(t, host));
    return rt_offload_note_unmigrated(p);
}
