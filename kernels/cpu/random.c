/* random.c: counter-based random fills (Philox4x32-10). Element i of a draw uses counter
 * offset + i, so any thread split gives the same numbers. Normal draws use Box-Muller on the pair
 * of uniforms of counter (offset + i), one value per element. */
#include "cpu_kernels.h"

void rt_philox4x32(uint64_t seed, uint64_t counter, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* Uniform in [0, 1) with as many random bits as the dtype's significand holds (53 for f64, 24 for
 * f32, 11 for f16, 8 for bf16, as PyTorch's uniform_real does), so the value is exact in the dtype
 * and rounding on store can never reach 1. */
static inline double u01(uint32_t hi, uint32_t lo, int bits) {
    if (bits > 32) return (double)(((uint64_t)hi << 21) ^ (lo >> 11)) * (1.0 / 9007199254740992.0);
    return ldexp((double)(hi >> (32 - bits)), -bits);
}

static int significand_bits(int dtype) {
    switch (dtype) {
    case RT_F64:
        return 53;
    case RT_BF16:
        return 8;
    case RT_F16:
        return 11;
    default:
        return 24;
    }
}

typedef enum { K_UNIFORM, K_NORMAL, K_INT } kind;

typedef struct fill_job {
    const rt_kview *dst;
    uint64_t seed, offset;
    kind k;
    double a, b;
    int64_t lo, hi;
    int bits;
    size_t es;
} fill_job;

static void fill_range(void *ctx, int64_t i0, int64_t i1) {
    const fill_job *j = ctx;
    const rt_kview *dst = j->dst;
    for (int64_t i = i0; i < i1; i++) {
        uint32_t r[4];
        rt_philox4x32(j->seed, j->offset + (uint64_t)i, r);
        double v;
        uint64_t x = ((uint64_t)r[0] << 32) | r[1];
        int64_t iv = 0;
        if (j->k == K_UNIFORM) {
            v = j->a + (j->b - j->a) * u01(r[0], r[1], j->bits);
        } else if (j->k == K_NORMAL) {
            double u1 = u01(r[0], r[1], 53), u2 = u01(r[2], r[3], 53);
            v = j->a + j->b * sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
        } else {
            /* unsigned difference: high - low can exceed INT64_MAX (randint(INT64_MIN, INT64_MAX))
             */
            iv = (int64_t)((uint64_t)j->lo + x % ((uint64_t)j->hi - (uint64_t)j->lo));
            v = (double)iv;
        }
        /* element i in logical order -> memory offset */
        int64_t rem = i, off = 0;
        for (int d = dst->ndim - 1; d >= 0; d--) {
            off += (rem % dst->shape[d]) * dst->strides[d];
            rem /= dst->shape[d];
        }
        char *p = dst->data + off * (int64_t)j->es;
        if (j->k == K_INT && dst->dtype == RT_I64)
            *(int64_t *)p = iv;
        else
            rt_store(p, dst->dtype, v);
    }
}

static int fill(const rt_kview *dst, uint64_t seed, uint64_t offset, kind k, double a, double b,
                int64_t lo, int64_t hi) {
    fill_job j = {dst,
                  seed,
                  offset,
                  k,
                  a,
                  b,
                  lo,
                  hi,
                  significand_bits(dst->dtype),
                  rt_dtype_size(dst->dtype)};
    /* element i depends only on (seed, offset + i): any split gives the same numbers */
    rt_parallel_for(dst->numel, dst->numel * 8, fill_range, &j);
    return RT_OK;
}

int rt_cpu_fill_uniform(const rt_kview *dst, uint64_t seed, uint64_t offset, double lo, double hi) {
    return fill(dst, seed, offset, K_UNIFORM, lo, hi, 0, 0);
}
int rt_cpu_fill_normal(const rt_kview *dst, uint64_t seed, uint64_t offset, double mean,
                       double std) {
    return fill(dst, seed, offset, K_NORMAL, mean, std, 0, 0);
}
int rt_cpu_fill_randint(const rt_kview *dst, uint64_t seed, uint64_t offset, int64_t low,
                        int64_t high) {
    return fill(dst, seed, offset, K_INT, 0, 0, low, high);
}
