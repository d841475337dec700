/* rope.c: CPU rotary position embedding (RoPE) over the last dim of a view of any rank.
 *
 * The position of an element is offset + its index along seq_dim. Pair p (0 <= p < D/2) is the
 * elements (p, p + D/2) (rotate-half, Hugging Face Llama / GPT-NeoX) or (2p, 2p + 1) (interleaved,
 * GPT-J / Meta's reference) and is rotated by the angle pos * theta^(-2p/D):
 *   y1 = x1 cos - x2 sin,  y2 = x2 cos + x1 sin.
 * inverse rotates by the opposite angle, which is the backward (a rotation's transpose). For the
 * f32/bf16/f16 path the frequency and angle are rounded to f32 as Hugging Face computes them, so
 * logits match PyTorch models; f64 computes in double. */
#include "cpu_kernels.h"

int rt_cpu_rope(const rt_kview *out, const rt_kview *x, int seq_dim, double theta, int64_t offset,
                int interleaved, int inverse) {
    int nd = x->ndim;
    int64_t D = x->shape[nd - 1], half = D / 2, rows = D ? x->numel / D : 0;
    size_t ex = rt_dtype_size(x->dtype), eo = rt_dtype_size(out->dtype);
    bool f64 = x->dtype == RT_F64;
    int64_t xs = x->strides[nd - 1], os = out->strides[nd - 1];
#pragma omp parallel for if (x->numel > RT_PARALLEL_GRAIN / 4) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t xo = 0, oo = 0, rr = r, pos = 0;
        for (int d = nd - 2; d >= 0; d--) {
            int64_t i = rr % x->shape[d];
            rr /= x->shape[d];
            xo += i * x->strides[d];
            oo += i * out->strides[d];
            if (d == seq_dim) pos = i;
        }
        pos += offset;
        const char *xp = x->data + xo * (int64_t)ex;
        char *op = out->data + oo * (int64_t)eo;
        for (int64_t p = 0; p < half; p++) {
            int64_t i1 = interleaved ? 2 * p : p, i2 = interleaved ? 2 * p + 1 : p + half;
            double c, s;
            if (f64) {
                double ang = (double)pos * pow(theta, -2.0 * (double)p / (double)D);
                c = cos(ang), s = sin(ang);
            } else {
                float inv = (float)(1.0 / pow(theta, (double)(2 * p) / (double)D));
                float ang = (float)pos * inv;
                c = cosf(ang), s = sinf(ang);
            }
            if (inverse) s = -s;
            double x1 = rt_load(xp + i1 * xs * (int64_t)ex, x->dtype);
            double x2 = rt_load(xp + i2 * xs * (int64_t)ex, x->dtype);
            double y1 = x1 * c - x2 * s, y2 = x2 * c + x1 * s;
            if (!f64)
                y1 = (float)((float)x1 * (float)c - (float)x2 * (float)s),
                y2 = (float)((float)x2 * (float)c + (float)x1 * (float)s);
            rt_store(op + i1 * os * (int64_t)eo, out->dtype, y1);
            rt_store(op + i2 * os * (int64_t)eo, out->dtype, y2);
        }
    }
    return RT_OK;
}
