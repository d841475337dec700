/* error.c: the thread-local last-error slot behind rt_last_error(). */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char g_msg[1024];
static _Thread_local int g_code;

int rt_error_set(int code, const char *file, int line, const char *fmt, ...) {
    char body[896];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    const char *base = strrchr(file, '/');
    snprintf(g_msg, sizeof g_msg, "%s (at %s:%d)", body, base ? base + 1 : file, line);
    g_code = code;
    return code;
}

const char *rt_last_error(void) {
    return g_msg[0] ? g_msg : "no error";
}
int rt_last_error_code(void) {
    return g_code;
}
void rt_clear_error(void) {
    g_msg[0] = 0;
    g_code = 0;
}

const char *rt_version(void) {
    return RT_VERSION_STRING;
}

const char *rt_shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t used = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (used < n) snprintf(buf + used, n - used, "]");
    return buf;
}
