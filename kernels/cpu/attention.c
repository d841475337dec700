/* attention.c: CPU scaled-dot-product attention, forward and backward, in the flash-attention
 * shape: the forward keeps one row of S scores per query (never a T x S matrix) and writes the
 * log-sum-exp of each row; the backward recomputes the probabilities from it.
 *
 * Layouts: q (B, H, T, D), k (B, H, S, D), v (B, H, S, Dv), out (B, H, T, Dv), any strides and any
 * float dtype (bf16/f16 are computed in f32, f64 in f64); lse (B, H, T) contiguous in the compute
 * dtype. mask (optional) is broadcast to (B, H, T, S): bool (true = attend) or float (added to the
 * scores). is_causal masks key j > query i (top-left aligned, as PyTorch). Rows with every key
 * masked give output 0 and lse -inf (and zero gradients).
 *
 * Dropout on the probabilities: element (b, h, i, j), numbered n = ((b H + h) T + i) S + j, is
 * kept when the top 24 bits of lane n % 4 of rt_philox4x32(seed, offset + n / 4) are >=
 * ceil(p 2^24), the rule of kernels/cpu/dropout.c, so the backward (and a CUDA kernel) regenerate
 * the same mask. The body is attention_tmpl.h, instantiated for float and double. */
#include "cpu_kernels.h"
#include "dim_rows.h"

#include <stdlib.h>

enum { QB = 32 }; /* rows per work item */

typedef struct sdpa_geom {
    int64_t B, H, T, S, D, Dv;
    int causal;
    double scale, p, keep_scale;
    uint64_t seed, offset;
    uint32_t thresh;
    const rt_kview *mask;
} sdpa_geom;

/* false where the mask excludes (b, h, i, j); *add the additive part otherwise */
static inline bool mask_at(const sdpa_geom *g, int64_t b, int64_t h, int64_t i, int64_t j,
                           double *add) {
    const rt_kview *m = g->mask;
    const char *p =
        m->data + (b * m->strides[0] + h * m->strides[1] + i * m->strides[2] + j * m->strides[3]) *
                      (int64_t)rt_dtype_size(m->dtype);
    if (m->dtype == RT_BOOL) {
        *add = 0;
        return *(const uint8_t *)p != 0;
    }
    *add = rt_load(p, m->dtype);
    return *add != -INFINITY;
}

static inline bool attn_keep(const sdpa_geom *g, uint64_t n) {
    uint32_t r[4];
    rt_philox4x32(g->seed, g->offset + n / 4, r);
    return (r[n % 4] >> 8) >= g->thresh;
}

#define AT float
#define AF(name) name##_f32
#include "attention_tmpl.h"
#undef AT
#undef AF
#define AT double
#define AF(name) name##_f64
#include "attention_tmpl.h"
#undef AT
#undef AF

static void geom_init(sdpa_geom *g, const rt_kview *q, const rt_kview *k, const rt_kview *v,
                      const rt_kview *mask, int is_causal, double scale, double dropout_p,
                      uint64_t seed, uint64_t offset) {
    g->B = q->shape[0], g->H = q->shape[1], g->T = q->shape[2], g->S = k->shape[2];
    g->D = q->shape[3], g->Dv = v->shape[3];
    g->causal = is_causal;
    g->scale = scale;
    g->p = dropout_p;
    g->keep_scale = dropout_p < 1 ? 1.0 / (1.0 - dropout_p) : 0.0;
    g->seed = seed, g->offset = offset;
    g->thresh = (uint32_t)ceil(dropout_p * 16777216.0);
    g->mask = mask;
}

int rt_cpu_sdpa(const rt_kview *out, const rt_kview *lse, const rt_kview *q, const rt_kview *k,
                const rt_kview *v, const rt_kview *mask, int is_causal, double scale,
                double dropout_p, uint64_t seed, uint64_t offset) {
    sdpa_geom g;
    geom_init(&g, q, k, v, mask, is_causal, scale, dropout_p, seed, offset);
    bool oq, ok, ov;
    int rc = RT_OK;
    if (lse->dtype == RT_F64) {
        double *qb = gather_f64(q, &oq), *kb = gather_f64(k, &ok), *vb = gather_f64(v, &ov);
        rc = qb && kb && vb ? sdpa_fwd_f64(&g, out, (double *)lse->data, qb, kb, vb)
                            : RT_ERR(RT_ERR_OOM, "scaled_dot_product_attention: out of memory");
        if (oq) free(qb);
        if (ok) free(kb);
        if (ov) free(vb);
    } else {
        float *qb = gather_f32(q, &oq), *kb = gather_f32(k, &ok), *vb = gather_f32(v, &ov);
        rc = qb && kb && vb ? sdpa_fwd_f32(&g, out, (float *)lse->data, qb, kb, vb)
                            : RT_ERR(RT_ERR_OOM, "scaled_dot_product_attention: out of memory");
        if (oq) free(qb);
        if (ok) free(kb);
        if (ov) free(vb);
    }
    return rc;
}

int rt_cpu_sdpa_backward(const rt_kview *grad_q, const rt_kview *grad_k, const rt_kview *grad_v,
                         const rt_kview *grad_mask, const rt_kview *grad_out, const rt_kview *q,
                         const rt_kview *k, const rt_kview *v, const rt_kview *out,
                         const rt_kview *lse, const rt_kview *mask, int is_causal, double scale,
                         double dropout_p, uint64_t seed, uint64_t offset) {
    sdpa_geom g;
    geom_init(&g, q, k, v, mask, is_causal, scale, dropout_p, seed, offset);
    bool own[5];
    int rc;
    if (lse->dtype == RT_F64) {
        double *b[5] = {gather_f64(grad_out, &own[0]), gather_f64(q, &own[1]),
                        gather_f64(k, &own[2]), gather_f64(v, &own[3]), gather_f64(out, &own[4])};
        rc = b[0] && b[1] && b[2] && b[3] && b[4]
                 ? sdpa_bwd_f64(&g, grad_q, grad_k, grad_v,
                                grad_mask ? (double *)grad_mask->data : NULL, b[0], b[1], b[2],
                                b[3], b[4], (const double *)lse->data)
                 : RT_ERR(RT_ERR_OOM, "scaled_dot_product_attention backward: out of memory");
        for (int i = 0; i < 5; i++)
            if (own[i]) free(b[i]);
    } else {
        float *b[5] = {gather_f32(grad_out, &own[0]), gather_f32(q, &own[1]),
                       gather_f32(k, &own[2]), gather_f32(v, &own[3]), gather_f32(out, &own[4])};
        rc = b[0] && b[1] && b[2] && b[3] && b[4]
                 ? sdpa_bwd_f32(&g, grad_q, grad_k, grad_v,
                                grad_mask ? (float *)grad_mask->data : NULL, b[0], b[1], b[2], b[3],
                                b[4], (const float *)lse->data)
                 : RT_ERR(RT_ERR_OOM, "scaled_dot_product_attention backward: out of memory");
        for (int i = 0; i < 5; i++)
            if (own[i]) free(b[i]);
    }
    return rc;
}
