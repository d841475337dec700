/* embedding.cu: embedding lookup (rows of a (V, D) weight gathered by i64/i32 indices) and its
 * backward (scatter-add of the output gradient into the weight gradient) on the GPU, with the rules
 * of kernels/cpu/embedding.c. The forward copies rows in 16-byte pieces when rows are contiguous
 * and aligned, and reports the first index outside [0, V) as RT_ERR_INDEX (it waits for that
 * check). The backward gives each thread one column and adds the rows in index order, as the CPU
 * does per column: repeated indices never race, and the sums are the CPU's sums in the same order
 * (deterministic, no atomics). */
#include "rowops.cuh"

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

/* one thread per column; rows added in index order (the CPU's order per column) */
template <typename A>
__global__ void k_emb_bwd(emb_geo g, char *gw, int tgw, int64_t gws0, int64_t gws1, const char *go,
                          int tgo, const char *idx) {
    int ew = rtc_dtype_size(tgw), eg = rtc_dtype_size(tgo), ei = rtc_dtype_size(g.idt);
    RTC_GRID_STRIDE(j, g.D) {
        for (int64_t i = 0; i < g.n; i++) {
            int64_t k = rtc_ld_index(idx + i * g.is * ei, g.idt);
            if (k < 0 || k >= g.V) continue; /* the forward checked these indices */
            char *d = gw + (k * gws0 + j * gws1) * ew;
            A v = rld<A>(d, tgw) + rld<A>(go + (i * g.os0 + j * g.os1) * eg, tgo);
            rst<A>(d, tgw, v);
        }
    }
}

__global__ void k_emb_bwd_f32(int64_t n, int64_t V, int64_t D, float *__restrict__ gw,
                              const float *__restrict__ go, const char *idx, int idt, int64_t is) {
    int ei = rtc_dtype_size(idt);
    RTC_GRID_STRIDE(j, D) {
        for (int64_t i = 0; i < n; i++) {
            int64_t k = rtc_ld_index(idx + i * is * ei, idt);
            if (k < 0 || k >= V) continue;
            gw[k * D + j] += go[i * D + j];
        }
    }
}

extern "C" int rtc_embedding_backward(const rtc_view *grad_weight, const rtc_view *grad_out,
                                      const rtc_view *indices) {
    emb_geo g;
    g.n = indices->shape[0], g.V = grad_weight->shape[0], g.D = grad_weight->shape[1];
    if (g.n == 0 || g.D == 0) return RT_OK;
    g.os0 = grad_out->strides[0], g.os1 = grad_out->strides[1];
    g.is = indices->strides[0];
    g.idt = indices->dtype;
    g.es = 0;
    g.ws0 = g.ws1 = 0;
    cudaStream_t st = rtc_stream();
    unsigned grid = (unsigned)((g.D + 127) / 128);
    if (grad_weight->dtype == RT_F32 && grad_out->dtype == RT_F32 && grad_weight->strides[1] == 1 &&
        grad_weight->strides[0] == g.D && g.os1 == 1 && g.os0 == g.D)
        k_emb_bwd_f32<<<grid, 128, 0, st>>>(g.n, g.V, g.D, (float *)grad_weight->data,
                                            (const float *)grad_out->data, indices->data, g.idt,
                                            g.is);
    else if (grad_weight->dtype == RT_F64)
        k_emb_bwd<double><<<grid, 128, 0, st>>>(g, grad_weight->data, grad_weight->dtype,
                                                grad_weight->strides[0], grad_weight->strides[1],
                                                grad_out->data, grad_out->dtype, indices->data);
    else
        k_emb_bwd<float><<<grid, 128, 0, st>>>(g, grad_weight->data, grad_weight->dtype,
                                               grad_weight->strides[0], grad_weight->strides[1],
                                               grad_out->data, grad_out->dtype, indices->data);
    RTC_LAUNCH_CHECK("embedding backward");
    return RT_OK;
}
