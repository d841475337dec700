/* embedding.c: CPU embedding lookup (rows of a (V, D) weight gathered by i64/i32 indices) and its
 * backward (scatter-add of the output gradient into the weight gradient).
 *
 * Indices are checked before anything is read: an index outside [0, V) is RT_ERR_INDEX naming it,
 * its position and V. The backward splits the D columns between threads (each thread adds every
 * index's row for its columns, in index order), so repeated indices never race and the result does
 * not depend on the thread count. */
#include "cpu_kernels.h"

#include <omp.h>
#include <string.h>

static inline int64_t load_index(const rt_kview *idx, int64_t i) {
    const char *p = idx->data + i * idx->strides[0] * (int64_t)rt_dtype_size(idx->dtype);
    return idx->dtype == RT_I64 ? *(const int64_t *)p : (int64_t) * (const int32_t *)p;
}

static int check_indices(const rt_kview *idx, int64_t V) {
    int64_t n = idx->shape[0];
    for (int64_t i = 0; i < n; i++) {
        int64_t k = load_index(idx, i);
        if (k < 0 || k >= V)
            return RT_ERR(RT_ERR_INDEX,
                          "embedding: index %lld is out of range for an embedding of %lld rows "
                          "(expected 0..%lld), at flat position %lld",
                          (long long)k, (long long)V, (long long)V - 1, (long long)i);
    }
    return RT_OK;
}

int rt_cpu_embedding(const rt_kview *out, const rt_kview *weight, const rt_kview *indices) {
    int64_t n = indices->shape[0], V = weight->shape[0], D = weight->shape[1];
    RT_TRY(check_indices(indices, V));
    size_t ew = rt_dtype_size(weight->dtype), eo = rt_dtype_size(out->dtype);
    bool rows_contig =
        weight->strides[1] == 1 && out->strides[1] == 1 && weight->dtype == out->dtype;
#pragma omp parallel for if (n * D > RT_PARALLEL_GRAIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        int64_t k = load_index(indices, i);
        const char *src = weight->data + k * weight->strides[0] * (int64_t)ew;
        char *dst = out->data + i * out->strides[0] * (int64_t)eo;
        if (rows_contig) {
            memcpy(dst, src, (size_t)D * ew);
        } else {
            for (int64_t j = 0; j < D; j++)
                rt_store(dst + j * out->strides[1] * (int64_t)eo, out->dtype,
                         rt_load(src + j * weight->strides[1] * (int64_t)ew, weight->dtype));
        }
    }
    return RT_OK;
}

int rt_cpu_embedding_backward(const rt_kview *grad_weight, const rt_kview *grad_out,
                              const rt_kview *indices) {
    int64_t n = indices->shape[0], V = grad_weight->shape[0], D = grad_weight->shape[1];
    RT_TRY(check_indices(indices, V));
    if (D == 0) return RT_OK; /* nothing to add (and the column blocking below divides by D) */
    size_t ew = rt_dtype_size(grad_weight->dtype), eg = rt_dtype_size(grad_out->dtype);
    bool f32 = grad_weight->dtype == RT_F32 && grad_out->dtype == RT_F32 &&
               grad_weight->strides[1] == 1 && grad_out->strides[1] == 1;
    /* One column block per thread (at least 16 columns): each pass over the indices touches whole
     * cache lines of each row. Every column is summed in index order whatever the blocking, so
     * the result does not depend on the thread count. */
    int nt = n * D > RT_PARALLEL_GRAIN ? omp_get_max_threads() : 1;
    int64_t BLK = ((D + nt - 1) / nt + 15) / 16 * 16;
    int64_t nblk = (D + BLK - 1) / BLK;
#pragma omp parallel for if (n * D > RT_PARALLEL_GRAIN) schedule(static)
    for (int64_t b = 0; b < nblk; b++) {
        int64_t j0 = b * BLK, j1 = j0 + BLK < D ? j0 + BLK : D;
        for (int64_t i = 0; i < n; i++) {
            int64_t k = load_index(indices, i);
            char *dst = grad_weight->data + k * grad_weight->strides[0] * (int64_t)ew;
            const char *src = grad_out->data + i * grad_out->strides[0] * (int64_t)eg;
            if (f32) {
                float *d = (float *)dst;
                const float *s = (const float *)src;
                for (int64_t j = j0; j < j1; j++)
                    d[j] += s[j];
            } else {
                for (int64_t j = j0; j < j1; j++) {
                    char *dp = dst + j * grad_weight->strides[1] * (int64_t)ew;
                    rt_store(
                        dp, grad_weight->dtype,
                        rt_load(dp, grad_weight->dtype) +
                            rt_load(src + j * grad_out->strides[1] * (int64_t)eg, grad_out->dtype));
                }
            }
        }
    }
    return RT_OK;
}
