/* embedding.cu: embedding lookup (rows of a (V, D) weight gathered by i64/i32 indices) and its
 * backward (scatter-add of the output gradient into the weight gradient) on the GPU, with the rules
 * of kernels/cpu/embedding.c. The forward copies rows in 16-byte pieces when rows are contiguous
 * and aligned, and reports the first index outside [0, V) as RT_ERR_INDEX (it waits for that
 * check). The backward adds the output-gradient rows into the weight gradient in index order per
 * row, as the CPU does (grad_weight[k][j] = ((grad_weight[k][j] + go[i1][j]) + go[i2][j]) + ... for
 * i1 < i2 < ... the positions holding k): a stable radix sort (CUB) groups the positions by index
 * value, and a thread per (group, column) sums its group in order. Repeated indices never race,
 * the sums are the CPU's sums bit for bit (no atomics), and all n x D elements work in parallel
 * (the earlier kernel gave each thread one column and walked all n positions: 1024 threads for a
 * GPT's 16384 x 1024 gradient, tens of milliseconds). */
#include "rowops.cuh"

#include <cub/device/device_radix_sort.cuh>

struct emb_geo {
    int64_t n, V, D;
    int64_t ws0, ws1, os0, os1, is;
    int idt, es;
};

__global__ void k_emb_vec(emb_geo g, const char *w, char *o, const char *idx,
                          unsigned long long *bad) {
    int64_t dv = g.D * g.es / 16; /* 16-byte pieces per row */
    RTC_GRID_STRIDE(e, g.n * dv) {
        int64_t i = e / dv, c = e - i * dv;
        int64_t k = rtc_ld_index(idx + i * g.is * rtc_dtype_size(g.idt), g.idt);
        if (k < 0 || k >= g.V) {
            if (c == 0) atomicMin(bad, (unsigned long long)i);
            continue;
        }
        const uint4 *src = (const uint4 *)(w + k * g.ws0 * g.es) + c;
        uint4 *dst = (uint4 *)(o + i * g.os0 * g.es) + c;
        *dst = *src;
    }
}

__global__ void k_emb_gen(emb_geo g, const char *w, char *o, const char *idx,
                          unsigned long long *bad) {
    RTC_GRID_STRIDE(e, g.n * g.D) {
        int64_t i = e / g.D, j = e - i * g.D;
        int64_t k = rtc_ld_index(idx + i * g.is * rtc_dtype_size(g.idt), g.idt);
        if (k < 0 || k >= g.V) {
            if (j == 0) atomicMin(bad, (unsigned long long)i);
            continue;
        }
        const char *src = w + (k * g.ws0 + j * g.ws1) * g.es;
        char *dst = o + (i * g.os0 + j * g.os1) * g.es;
        switch (g.es) {
        case 1:
            *(uint8_t *)dst = *(const uint8_t *)src;
            break;
        case 2:
            *(uint16_t *)dst = *(const uint16_t *)src;
            break;
        case 4:
            *(uint32_t *)dst = *(const uint32_t *)src;
            break;
        default:
            *(uint64_t *)dst = *(const uint64_t *)src;
        }
    }
}

extern "C" int rtc_embedding(const rtc_view *out, const rtc_view *weight, const rtc_view *indices) {
    emb_geo g;
    g.n = indices->shape[0], g.V = weight->shape[0], g.D = weight->shape[1];
    if (g.n == 0 || g.D == 0) return RT_OK;
    if (out->dtype != weight->dtype)
        return RTC_ERR(RT_ERR_DTYPE, "embedding: output dtype differs from the weight's");
    g.ws0 = weight->strides[0], g.ws1 = weight->strides[1];
    g.os0 = out->strides[0], g.os1 = out->strides[1];
    g.is = indices->strides[0];
    g.idt = indices->dtype;
    g.es = rtc_dtype_size(weight->dtype);
    unsigned long long *bad;
    RTC_TRY(rtc_bad_alloc("embedding", &bad));
    bool vec = g.ws1 == 1 && g.os1 == 1 && (g.D * g.es) % 16 == 0 && (g.ws0 * g.es) % 16 == 0 &&
               (g.os0 * g.es) % 16 == 0 && rtc_aligned16(weight->data) && rtc_aligned16(out->data);
    cudaStream_t st = rtc_stream();
    if (vec)
        k_emb_vec<<<rtc_grid(g.n * (g.D * g.es / 16), RTC_BLOCK), RTC_BLOCK, 0, st>>>(
            g, weight->data, out->data, indices->data, bad);
    else
        k_emb_gen<<<rtc_grid(g.n * g.D, RTC_BLOCK), RTC_BLOCK, 0, st>>>(g, weight->data, out->data,
                                                                        indices->data, bad);
    cudaError_t le = cudaGetLastError();
    unsigned long long pos;
    int rc = rtc_bad_read("embedding", bad, &pos);
    RTC_CUDA_TRY("embedding", le);
    RTC_TRY(rc);
    if (pos != RTC_NO_BAD) {
        int64_t k =
            rtc_peek_index(indices->data + (int64_t)pos * g.is * rtc_dtype_size(g.idt), g.idt);
        return RTC_ERR(RT_ERR_INDEX,
                       "embedding: index %lld is out of range for an embedding of %lld rows "
                       "(expected 0..%lld), at flat position %lld",
                       (long long)k, (long long)g.V, (long long)g.V - 1, (long long)pos);
    }
    return RT_OK;
}

/* Sort keys: the index value (V for an out-of-range one, which the forward has reported; it sorts
 * last and adds nothing), with the position as the value. */
__global__ void k_emb_keys(int64_t n, int64_t V, const char *idx, int idt, int64_t is,
                           unsigned *keys, unsigned *pos) {
    int ei = rtc_dtype_size(idt);
    RTC_GRID_STRIDE(i, n) {
        int64_t k = rtc_ld_index(idx + i * is * ei, idt);
        keys[i] = (k < 0 || k >= V) ? (unsigned)V : (unsigned)k;
        pos[i] = (unsigned)i;
    }
}

/* v rounded to dtype t and back (bf16/f16 gradients round after every addition, as the CPU's
 * per-element store does; f32 and f64 are unchanged) */
template <typename A> __device__ __forceinline__ A emb_round(A v, int t) {
    if (t == RT_F32 || t == RT_F64) return v;
    unsigned long long b = 0;
    rst<A>((char *)&b, t, v);
    return rld<A>((const char *)&b, t);
}

/* Threads (column j, sorted slot u): the first slot of each group of equal keys sums the group's
 * rows in position order into grad_weight[k][j]; other slots have nothing to do. */
template <typename A>
__global__ void k_emb_bwd_sorted(int64_t n, int64_t V, int64_t D, const unsigned *keys,
                                 const unsigned *pos, char *gw, int tgw, int64_t gws0, int64_t gws1,
                                 const char *go, int tgo, int64_t os0, int64_t os1) {
    int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= D) return;
    int ew = rtc_dtype_size(tgw), eg = rtc_dtype_size(tgo);
    for (int64_t u = blockIdx.y; u < n; u += gridDim.y) {
        unsigned k = keys[u];
        if (k >= (unsigned)V || (u > 0 && keys[u - 1] == k)) continue;
        char *d = gw + ((int64_t)k * gws0 + j * gws1) * ew;
        A acc = rld<A>(d, tgw);
        for (int64_t w = u; w < n && keys[w] == k; w++)
            acc = emb_round<A>(acc + rld<A>(go + ((int64_t)pos[w] * os0 + j * os1) * eg, tgo), tgw);
        rst<A>(d, tgw, acc);
    }
}

extern "C" int rtc_embedding_backward(const rtc_view *grad_weight, const rtc_view *grad_out,
                                      const rtc_view *indices) {
    static const char *op = "embedding backward";
    int64_t n = indices->shape[0], V = grad_weight->shape[0], D = grad_weight->shape[1];
    if (n == 0 || D == 0) return RT_OK;
    if (n > INT32_MAX || V >= INT32_MAX)
        return RTC_ERR(RT_ERR_UNSUPPORTED,
                       "%s: at most 2^31 - 1 indices and rows on the GPU (got %lld indices, "
                       "%lld rows)",
                       op, (long long)n, (long long)V);
    cudaStream_t st = rtc_stream();
    int end_bit = 1;
    while (end_bit < 32 && ((int64_t)1 << end_bit) <= V) /* keys go up to V (the sentinel) */
        end_bit++;
    size_t temp = 0;
    RTC_CUDA_TRY(op, cub::DeviceRadixSort::SortPairs(nullptr, temp, (const unsigned *)nullptr,
                                                     (unsigned *)nullptr, (const unsigned *)nullptr,
                                                     (unsigned *)nullptr, (int)n, 0, end_bit, st));
    size_t arr = ((size_t)n * sizeof(unsigned) + 255) / 256 * 256, bytes = 4 * arr + temp;
    char *buf = NULL;
    RTC_TRY(rtc_scratch_alloc(bytes, (void **)&buf));
    unsigned *k_in = (unsigned *)buf, *p_in = (unsigned *)(buf + arr),
             *k_out = (unsigned *)(buf + 2 * arr), *p_out = (unsigned *)(buf + 3 * arr);
    void *tmp = buf + 4 * arr;
    unsigned blocks = (unsigned)((n + 255) / 256 < 4096 ? (n + 255) / 256 : 4096);
    k_emb_keys<<<blocks, 256, 0, st>>>(n, V, indices->data, indices->dtype, indices->strides[0],
                                       k_in, p_in);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess)
        e = cub::DeviceRadixSort::SortPairs(tmp, temp, k_in, k_out, p_in, p_out, (int)n, 0, end_bit,
                                            st);
    if (e == cudaSuccess) {
        dim3 grid((unsigned)((D + 127) / 128), (unsigned)(n < 65535 ? n : 65535));
        if (grad_weight->dtype == RT_F64)
            k_emb_bwd_sorted<double><<<grid, 128, 0, st>>>(
                n, V, D, k_out, p_out, grad_weight->data, grad_weight->dtype,
                grad_weight->strides[0], grad_weight->strides[1], grad_out->data, grad_out->dtype,
                grad_out->strides[0], grad_out->strides[1]);
        else
            k_emb_bwd_sorted<float><<<grid, 128, 0, st>>>(
                n, V, D, k_out, p_out, grad_weight->data, grad_weight->dtype,
                grad_weight->strides[0], grad_weight->strides[1], grad_out->data, grad_out->dtype,
                grad_out->strides[0], grad_out->strides[1]);
        e = cudaGetLastError();
    }
    rtc_scratch_free(buf, bytes); /* freed in stream order: the kernels above finish first */
    RTC_CUDA_TRY(op, e);
    return RT_OK;
}
