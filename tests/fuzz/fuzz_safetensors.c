/* fuzz_safetensors.c: libFuzzer target of the safetensors reader. Any byte string must give either
 * a valid file whose every tensor reads, or an RT_ERR_FORMAT error; never a crash, a leak or an
 * out-of-bounds read (built with ASan/UBSan under RT_FUZZ).
 * Build: cmake -B build-fuzz -DCMAKE_C_COMPILER=clang -DRT_FUZZ=ON && cmake --build build-fuzz
 * Run:   build-fuzz/tests/fuzz/fuzz_safetensors -max_total_time=300 /tmp/corpus tests/fuzz/corpus
 */
#include "ramtorch.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    rt_safetensors *f = NULL;
    int rc = rt_safetensors_open_memory(data, size, "fuzz", &f);
    if (rc != 0) {
        /* a rejected input must say why and use the format (or allocation) status */
        if (rc != RT_ERR_FORMAT && rc != RT_ERR_OOM) abort();
        if (!strstr(rt_last_error(), "fuzz")) abort();
        return 0;
    }
    int64_t n = rt_safetensors_count(f);
    for (int64_t i = 0; i < n; i++) {
        const char *name = rt_safetensors_name(f, i);
        int64_t j = -1;
        if (!name || rt_safetensors_find(f, name, &j) != 0 || j != i) abort();
        int dtype, ndim;
        int64_t shape[RT_MAX_DIMS];
        if (rt_safetensors_info(f, i, &dtype, &ndim, shape) != 0) abort();
        rt_tensor *t = NULL;
        rc = rt_safetensors_get(f, i, &t);
        if (dtype >= 0 && rc != 0 && rc != RT_ERR_OOM) abort();
        if (dtype < 0 && rc != RT_ERR_DTYPE) abort();
        if (t) {
            const rt_tensor_meta *m = rt_tensor_meta_of(t);
            if (m->ndim != ndim || m->dtype != dtype) abort();
            rt_tensor_release(t);
        }
    }
    for (int64_t i = 0; i < rt_safetensors_metadata_count(f); i++)
        if (!rt_safetensors_metadata_key(f, i) || !rt_safetensors_metadata_value(f, i)) abort();
    rt_safetensors_close(f);
    return 0;
}
