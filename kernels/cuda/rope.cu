/* rope.cu: rotary position embedding on the GPU over the last dim of a view of any rank, with the
 * rules of kernels/cpu/rope.c: the position of an element is offset + its index along seq_dim;
 * pair p is (p, p + D/2) (rotate-half) or (2p, 2p + 1) (interleaved), rotated by the angle
 * pos * theta^(-2p/D) (by its opposite when inverse, the backward). For f32/bf16/f16 the frequency
 * and the angle are rounded to f32 as on the CPU and the rotation is done in f32 without fused
 * multiply-adds (so it rounds as the CPU's does); f64 computes in double. One thread per pair. */
#include "rowops.cuh"

struct rope_geo {
    int nd, seq_dim;
    int64_t shape[RT_MAX_DIMS];
    int64_t xs[RT_MAX_DIMS], os[RT_MAX_DIMS];
    int tx, to;
};

template <bool F64>
__global__ void k_rope(int64_t npairs, int64_t half, rope_geo g, const char *x, char *o,
                       double theta, int64_t offset, int interleaved, int inverse) {
    int ex = rtc_dtype_size(g.tx), eo = rtc_dtype_size(g.to);
    int nd = g.nd;
    int64_t D = half * 2;
    RTC_GRID_STRIDE(idx, npairs) {
        int64_t p = idx % half, rr = idx / half, xo = 0, oo = 0, pos = 0;
        for (int d = nd - 2; d >= 0; d--) {
            int64_t i = rr % g.shape[d];
            rr /= g.shape[d];
            xo += i * g.xs[d];
            oo += i * g.os[d];
            if (d == g.seq_dim) pos = i;
        }
        pos += offset;
        int64_t i1 = interleaved ? 2 * p : p, i2 = interleaved ? 2 * p + 1 : p + half;
        const char *x1p = x + (xo + i1 * g.xs[nd - 1]) * ex,
                   *x2p = x + (xo + i2 * g.xs[nd - 1]) * ex;
        char *o1p = o + (oo + i1 * g.os[nd - 1]) * eo, *o2p = o + (oo + i2 * g.os[nd - 1]) * eo;
        if (F64) {
            double ang = (double)pos * pow(theta, -2.0 * (double)p / (double)D);
            double c = cos(ang), s = sin(ang);
            if (inverse) s = -s;
            double x1 = rtc_ldd(x1p, g.tx), x2 = rtc_ldd(x2p, g.tx);
            rtc_std(o1p, g.to, x1 * c - x2 * s);
            rtc_std(o2p, g.to, x2 * c + x1 * s);
        } else {
            float inv = (float)(1.0 / pow(theta, (double)(2 * p) / (double)D));
            float ang = __fmul_rn((float)pos, inv);
            float c = cosf(ang), s = sinf(ang);
            if (inverse) s = -s;
            float x1 = rtc_ldf(x1p, g.tx), x2 = rtc_ldf(x2p, g.tx);
            rtc_stf(o1p, g.to, __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s)));
            rtc_stf(o2p, g.to, __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s)));
        }
    }
}

extern "C" int rtc_rope(const rtc_view *out, const rtc_view *x, int seq_dim, double theta,
                        int64_t offset, int interleaved, int inverse) {
    int nd = x->ndim;
    int64_t D = x->shape[nd - 1], half = D / 2;
    if (half == 0 || x->numel == 0) return RT_OK;
    rope_geo g;
    g.nd = nd;
    g.seq_dim = seq_dim;
    g.tx = x->dtype;
    g.to = out->dtype;
    for (int d = 0; d < nd; d++) {
        g.shape[d] = x->shape[d];
        g.xs[d] = x->strides[d];
        g.os[d] = out->strides[d];
    }
    int64_t npairs = x->numel / 2;
    unsigned grid = rtc_grid(npairs, RTC_BLOCK);
    if (x->dtype == RT_F64)
        k_rope<true><<<grid, RTC_BLOCK, 0, rtc_stream()>>>(npairs, half, g, x->data, out->data,
                                                           theta, offset, interleaved, inverse);
    else
        k_rope<false><<<grid, RTC_BLOCK, 0, rtc_stream()>>>(npairs, half, g, x->data, out->data,
                                                            theta, offset, interleaved, inverse);
    RTC_LAUNCH_CHECK(inverse ? "rope backward" : "rope");
    return RT_OK;
}
