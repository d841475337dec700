/* arange_i64.c: rt_arange_i64, an arange computed in int64 so that integral ranges beyond 2^53 are
 * exact (rt_arange computes start + i * step in doubles, which rounds there). The values are made
 * on the host, then converted to the requested dtype (rounded once, per element) and moved to the
 * device, as rt_arange does. */
#include "internal.h"

#include <inttypes.h>

int rt_arange_i64(int64_t start, int64_t end, int64_t step, int dtype, int device,
                  rt_tensor **out) {
    *out = NULL;
    if (step == 0 || (step > 0 && start > end) || (step < 0 && start < end))
        return RT_ERR(RT_ERR_INVALID,
                      "arange: step %" PRId64 " cannot go from %" PRId64 " to %" PRId64
                      " (expected a non-zero step toward end)",
                      step, start, end);
    /* |end - start| and |step| in uint64: both fit there even when the signed difference overflows
     */
    uint64_t span = step > 0 ? (uint64_t)end - (uint64_t)start : (uint64_t)start - (uint64_t)end;
    uint64_t ustep = step > 0 ? (uint64_t)step : (uint64_t)0 - (uint64_t)step;
    uint64_t count = span / ustep + (span % ustep != 0);
    if (count > (uint64_t)INT64_MAX)
        return RT_ERR(RT_ERR_INVALID,
                      "arange: too many elements: start %" PRId64 ", end %" PRId64
                      ", step %" PRId64,
                      start, end, step);
    int64_t n = (int64_t)count;
    RT_TRY(rt_tensor_new(1, &n, RT_I64, RT_DEVICE_CPU, out));
    int64_t *p = rt_tensor_data_ptr(*out);
    /* modulo 2^64 arithmetic, then back: every value lies between start and end, so it fits */
    for (int64_t i = 0; i < n; i++)
        p[i] = (int64_t)((uint64_t)start + (uint64_t)i * (uint64_t)step);
    if (dtype == RT_I64 && device == RT_DEVICE_CPU) return RT_OK;
    rt_tensor *tmp = *out;
    int rc = rt_to_dtype(tmp, dtype, out);
    rt_tensor_release(tmp);
    if (rc < 0 || device == RT_DEVICE_CPU) return rc;
    tmp = *out;
    rc = rt_to_device(tmp, device, out);
    rt_tensor_release(tmp);
    return rc;
}
