/* backend.c: picks the backend table for a device. The CPU table is linked in; the CUDA backend
 * (libramtorch_cuda) is a separate library loaded on first use of a cuda device. */
#include "internal.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

static pthread_once_t g_cuda_once = PTHREAD_ONCE_INIT;
static const rt_backend *g_cuda;
static char g_cuda_error[512];

/* The CUDA library exports rt_cuda_backend_get(); it returns NULL (and explains in its own
 * rt_last_error) when no device is usable. */
static void load_cuda(void) {
    void *h = dlopen("libramtorch_cuda.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(g_cuda_error, sizeof g_cuda_error, "%s", dlerror());
        return;
    }
    const rt_backend *(*get)(void) = (const rt_backend *(*)(void))dlsym(h, "rt_cuda_backend_get");
    if (!get) {
        snprintf(g_cuda_error, sizeof g_cuda_error, "libramtorch_cuda.so has no rt_cuda_backend_get");
        return;
    }
    g_cuda = get();
    if (!g_cuda) snprintf(g_cuda_error, sizeof g_cuda_error, "no usable CUDA device");
}

const rt_backend *rt_backend_for(int device) {
    if (device == RT_DEVICE_CPU) return &rt_cpu_backend;
    if (device < 0) {
        RT_ERR(RT_ERR_DEVICE, "device: invalid device code %d (expected -1 for cpu or a CUDA "
                              "ordinal)",
               device);
        return NULL;
    }
    pthread_once(&g_cuda_once, load_cuda);
    if (!g_cuda) {
        RT_ERR(RT_ERR_DEVICE, "device cuda:%d: the CUDA backend is not available (%s)", device,
               g_cuda_error);
        return NULL;
    }
    return g_cuda;
}
