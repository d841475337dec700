/* attention_tmpl.h: the body of the CPU scaled-dot-product attention kernels, included twice by
 * attention.c with AT (the compute type: float for f32/bf16/f16, double for f64) and AF(name) (the
 * name with a type suffix) defined. Not a header of its own: no include guard on purpose. */

/* q, k, v ... as contiguous AT arrays: the view's own memory when it already is one, else a copy
 * (*owned set; the caller frees it). NULL on allocation failure. */
static AT *AF(gather)(const rt_kview *v, bool *owned) {
    int cdt = sizeof(AT) == 8 ? RT_F64 : RT_F32;
    bool contig = v->dtype == cdt;
    int64_t s = 1;
    for (int d = v->ndim - 1; d >= 0 && contig; d--) {
        if (v->shape[d] != 1 && v->strides[d] != s) contig = false;
        s *= v->shape[d];
    }
    *owned = false;
    if (contig) return (AT *)v->data;
    AT *buf = malloc((size_t)(v->numel ? v->numel : 1) * sizeof(AT));
    if (!buf) return NULL;
    size_t es = rt_dtype_size(v->dtype);
    for (int64_t i = 0; i < v->numel; i++)
        buf[i] = (AT)rt_load(v->data + rt_logical_offset(v, i) * (int64_t)es, v->dtype);
    *owned = true;
    return buf;
}

static inline AT AF(dot)(const AT *a, const AT *b, int64_t n) {
    AT s = 0;
    for (int64_t d = 0; d < n; d++)
        s += a[d] * b[d];
    return s;
}

/* Score of query i against key j (b, h fixed): scale * q.k plus the additive mask, or -inf where
 * the mask or causality excludes the pair. */
static inline AT AF(score)(const sdpa_geom *g, const AT *qi, const AT *kj, int64_t b, int64_t h,
                           int64_t i, int64_t j) {
    if (g->causal && j > i) return (AT)-INFINITY;
    AT s = AF(dot)(qi, kj, g->D) * (AT)g->scale;
    if (g->mask) {
        double m;
        if (!mask_at(g, b, h, i, j, &m)) return (AT)-INFINITY;
        s += (AT)m;
    }
    return s;
}

/* Forward: one work item is a block of QB query rows of one (b, h); each row keeps only its S
 * scores (no T x S matrix). */
static int AF(sdpa_fwd)(const sdpa_geom *g, const rt_kview *out, AT *lse, const AT *q, const AT *k,
                        const AT *v) {
    int64_t B = g->B, H = g->H, T = g->T, S = g->S, D = g->D, Dv = g->Dv;
    int64_t nqb = (T + QB - 1) / QB, items = B * H * nqb;
    size_t eo = rt_dtype_size(out->dtype);
    int failed = 0;
#pragma omp parallel for if (B * H * T * S * (D + Dv) > RT_PARALLEL_GRAIN) schedule(dynamic)
    for (int64_t it = 0; it < items; it++) {
        int64_t bh = it / nqb, qb = it % nqb, b = bh / H, h = bh % H;
        AT *sc = malloc((size_t)(S + Dv + 1) * sizeof(AT));
        if (!sc) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        AT *acc = sc + S;
        const AT *kbh = k + bh * S * D, *vbh = v + bh * S * Dv;
        int64_t i1 = (qb + 1) * QB < T ? (qb + 1) * QB : T;
        for (int64_t i = qb * QB; i < i1; i++) {
            const AT *qi = q + (bh * T + i) * D;
            AT mx = (AT)-INFINITY;
            for (int64_t j = 0; j < S; j++) {
                sc[j] = AF(score)(g, qi, kbh + j * D, b, h, i, j);
                /* a NaN score makes the max NaN, so the row comes out NaN (as softmax does)
                 * instead of passing for a fully masked row */
                if (sc[j] > mx || sc[j] != sc[j]) mx = sc[j];
            }
            char *orow =
                out->data +
                (b * out->strides[0] + h * out->strides[1] + i * out->strides[2]) * (int64_t)eo;
            if (mx == (AT)-INFINITY) { /* every key masked: output 0, like flash attention */
                for (int64_t d = 0; d < Dv; d++)
                    rt_store(orow + d * out->strides[3] * (int64_t)eo, out->dtype, 0.0);
                lse[bh * T + i] = (AT)-INFINITY;
                continue;
            }
            AT l = 0;
            for (int64_t j = 0; j < S; j++) {
                sc[j] = sc[j] == (AT)-INFINITY ? (AT)0 : (AT)exp(sc[j] - mx);
                l += sc[j];
            }
            for (int64_t d = 0; d < Dv; d++)
                acc[d] = 0;
            uint64_t base = (uint64_t)((bh * T + i) * S);
            for (int64_t j = 0; j < S; j++) {
                AT pj = sc[j];
                if (pj == 0) continue;
                if (g->p > 0) {
                    if (!attn_keep(g, base + (uint64_t)j)) continue;
                    pj *= (AT)g->keep_scale;
                }
                const AT *vj = vbh + j * Dv;
                for (int64_t d = 0; d < Dv; d++)
                    acc[d] += pj * vj[d];
            }
            for (int64_t d = 0; d < Dv; d++)
                rt_store(orow + d * out->strides[3] * (int64_t)eo, out->dtype, acc[d] / l);
            lse[bh * T + i] = mx + (AT)log(l);
        }
        free(sc);
    }
    if (failed) return RT_ERR(RT_ERR_OOM, "scaled_dot_product_attention: out of host memory");
    return RT_OK;
}

/* Write an AT row into a (B, H, N, E) view at (b, h, n). */
static void AF(store_row)(const rt_kview *dst, int64_t b, int64_t h, int64_t n, const AT *src,
                          int64_t E) {
    size_t es = rt_dtype_size(dst->dtype);
    char *row =
        dst->data + (b * dst->strides[0] + h * dst->strides[1] + n * dst->strides[2]) * (int64_t)es;
    for (int64_t e = 0; e < E; e++)
        rt_store(row + e * dst->strides[3] * (int64_t)es, dst->dtype, src[e]);
}

/* Backward (flash-attention style, recomputing p from the saved log-sum-exp):
 *   p_ij = exp(s_ij - lse_i), kf_ij = keep_ij / (1 - p_drop) (1 without dropout),
 *   dV_j = sum_i p_ij kf_ij dO_i,  dp_ij = kf_ij dO_i.v_j,  Dl_i = dO_i.O_i,
 *   ds_ij = p_ij (dp_ij - Dl_i),  dQ_i = scale sum_j ds_ij k_j,  dK_j = scale sum_i ds_ij q_i.
 * Two passes so that every output element is summed by one thread in a fixed order: key blocks
 * (dK, dV and the mask gradient) then query blocks (dQ). */
static int AF(sdpa_bwd)(const sdpa_geom *g, const rt_kview *gq, const rt_kview *gk,
                        const rt_kview *gv, AT *gmask, const AT *go, const AT *q, const AT *k,
                        const AT *v, const AT *o, const AT *lse) {
    int64_t B = g->B, H = g->H, T = g->T, S = g->S, D = g->D, Dv = g->Dv;
    int64_t nrows = B * H * T;
    AT *Dl = malloc((size_t)(nrows > 0 ? nrows : 1) * sizeof(AT));
    if (!Dl) return RT_ERR(RT_ERR_OOM, "scaled_dot_product_attention backward: out of memory");
    for (int64_t r = 0; r < B * H * T; r++)
        Dl[r] = AF(dot)(go + r * Dv, o + r * Dv, Dv);
    bool par = B * H * T * S * (D + Dv) > RT_PARALLEL_GRAIN;
    int failed = 0;
    /* pass 1: key blocks */
    int64_t nkb = (S + QB - 1) / QB, items = B * H * nkb;
#pragma omp parallel for if (par) schedule(dynamic)
    for (int64_t it = 0; it < items; it++) {
        int64_t bh = it / nkb, kb = it % nkb, b = bh / H, h = bh % H;
        int64_t j0 = kb * QB, j1 = j0 + QB < S ? j0 + QB : S, nj = j1 - j0;
        AT *dk = calloc((size_t)(nj * (D + Dv) + 1), sizeof(AT));
        if (!dk) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        AT *dv = dk + nj * D;
        for (int64_t i = 0; i < T; i++) {
            const AT *qi = q + (bh * T + i) * D, *goi = go + (bh * T + i) * Dv;
            AT li = lse[bh * T + i];
            uint64_t base = (uint64_t)((bh * T + i) * S);
            for (int64_t j = j0; j < j1; j++) {
                AT s = li == (AT)-INFINITY ? (AT)-INFINITY
                                           : AF(score)(g, qi, k + (bh * S + j) * D, b, h, i, j);
                AT ds = 0;
                if (s != (AT)-INFINITY) {
                    AT p = (AT)exp(s - li), kf = 1;
                    if (g->p > 0) kf = attn_keep(g, base + (uint64_t)j) ? (AT)g->keep_scale : 0;
                    const AT *vj = v + (bh * S + j) * Dv;
                    AT pk = p * kf, *dvj = dv + (j - j0) * Dv, *dkj = dk + (j - j0) * D;
                    if (pk != 0)
                        for (int64_t d = 0; d < Dv; d++)
                            dvj[d] += pk * goi[d];
                    ds = p * (AF(dot)(goi, vj, Dv) * kf - Dl[bh * T + i]);
                    AT dss = ds * (AT)g->scale;
                    for (int64_t d = 0; d < D; d++)
                        dkj[d] += dss * qi[d];
                }
                if (gmask) gmask[(bh * T + i) * S + j] = ds;
            }
        }
        for (int64_t j = j0; j < j1; j++) {
            AF(store_row)(gk, b, h, j, dk + (j - j0) * D, D);
            AF(store_row)(gv, b, h, j, dv + (j - j0) * Dv, Dv);
        }
        free(dk);
    }
    /* pass 2: query blocks */
    int64_t nqb = (T + QB - 1) / QB;
    items = B * H * nqb;
#pragma omp parallel for if (par) schedule(dynamic)
    for (int64_t it = 0; it < items; it++) {
        int64_t bh = it / nqb, qb = it % nqb, b = bh / H, h = bh % H;
        AT *dq = malloc((size_t)(D + 1) * sizeof(AT));
        if (!dq) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        int64_t i1 = (qb + 1) * QB < T ? (qb + 1) * QB : T;
        for (int64_t i = qb * QB; i < i1; i++) {
            const AT *qi = q + (bh * T + i) * D, *goi = go + (bh * T + i) * Dv;
            AT li = lse[bh * T + i];
            uint64_t base = (uint64_t)((bh * T + i) * S);
            for (int64_t d = 0; d < D; d++)
                dq[d] = 0;
            for (int64_t j = 0; j < S && li != (AT)-INFINITY; j++) {
                const AT *kj = k + (bh * S + j) * D;
                AT s = AF(score)(g, qi, kj, b, h, i, j);
                if (s == (AT)-INFINITY) continue;
                AT p = (AT)exp(s - li), kf = 1;
                if (g->p > 0) kf = attn_keep(g, base + (uint64_t)j) ? (AT)g->keep_scale : 0;
                AT ds = p * (AF(dot)(goi, v + (bh * S + j) * Dv, Dv) * kf - Dl[bh * T + i]);
                AT dss = ds * (AT)g->scale;
                for (int64_t d = 0; d < D; d++)
                    dq[d] += dss * kj[d];
            }
            AF(store_row)(gq, b, h, i, dq, D);
        }
        free(dq);
    }
    free(Dl);
    if (failed) return RT_ERR(RT_ERR_OOM, "scaled_dot_product_attention backward: out of memory");
    return RT_OK;
}
