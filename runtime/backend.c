/* backend.c: picks the backend table for a device. The CPU table is linked in; the CUDA backend
 * (libramtorch_cuda) is a separate library loaded on first use of a cuda device, so libramtorch
 * itself never depends on CUDA. */
#include "device_api.h"

#include <dlfcn.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static pthread_once_t g_cuda_once = PTHREAD_ONCE_INIT;
static const rt_backend *g_cuda;
static int g_cuda_count;
static char g_cuda_error[512];

/* libramtorch_cuda.so is installed (and built) beside libramtorch.so: look there first, through the
 * path of the library that holds this function, then let the dynamic loader search. */
static void *open_cuda_library(void) {
    Dl_info info;
    char dir[1024], path[1100];
    char first_error[400] = "";
    if (dladdr((void *)rt_backend_for, &info) && info.dli_fname &&
        strlen(info.dli_fname) < sizeof dir) {
        snprintf(dir, sizeof dir, "%s", info.dli_fname);
        snprintf(path, sizeof path, "%s/libramtorch_cuda.so", dirname(dir));
        void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (h) return h;
        const char *e = dlerror();
        snprintf(first_error, sizeof first_error, "%.399s", e ? e : path);
    }
    void *h = dlopen("libramtorch_cuda.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        /* prefer the error about the library next to us unless it simply is not there */
        snprintf(g_cuda_error, sizeof g_cuda_error, "%s",
                 first_error[0] && !strstr(first_error, "No such file")
                     ? first_error
                     : (e ? e : "dlopen failed"));
    }
    return h;
}

/* The CUDA library exports rt_cuda_backend_get(); it returns NULL (and explains in rt_last_error)
 * when no device or driver is usable. */
static void load_cuda(void) {
    void *h = open_cuda_library();
    if (!h) return;
    const rt_backend *(*get)(void) = (const rt_backend *(*)(void))dlsym(h, "rt_cuda_backend_get");
    if (!get) {
        snprintf(g_cuda_error, sizeof g_cuda_error,
                 "libramtorch_cuda.so has no rt_cuda_backend_get");
        return;
    }
    rt_clear_error();
    const rt_backend *be = get();
    if (!be) {
        snprintf(g_cuda_error, sizeof g_cuda_error, "%s",
                 rt_last_error_code() ? rt_last_error() : "no usable CUDA device");
        return;
    }
    g_cuda_count = be->device_api ? be->device_api->device_count() : 1;
    g_cuda = be;
}

const rt_backend *rt_cuda_backend_loaded(int *count) {
    pthread_once(&g_cuda_once, load_cuda);
    if (count) *count = g_cuda ? g_cuda_count : 0;
    return g_cuda;
}

const char *rt_cuda_unavailable_reason(void) {
    return g_cuda_error;
}

const rt_backend *rt_backend_for(int device) {
    if (device == RT_DEVICE_CPU) return &rt_cpu_backend;
    if (device < 0) {
        RT_ERR(RT_ERR_DEVICE,
               "device: invalid device code %d (expected -1 for cpu or a CUDA "
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
    if (device >= g_cuda_count) {
        RT_ERR(RT_ERR_DEVICE, "device cuda:%d: no such device (%d CUDA device%s visible)", device,
               g_cuda_count, g_cuda_count == 1 ? "" : "s");
        return NULL;
    }
    return g_cuda;
}

int rt_backend_unsupported(const rt_backend *be, const char *entry, const char *op) {
    return RT_ERR(RT_ERR_UNSUPPORTED, "%s: not implemented on the %s backend (entry %s)", op,
                  be->name, entry);
}
