/* attention_params.cuh: the parameter block of the attention kernels (kernels/cuda/attention.cu,
 * the portable mma.sync and generic paths, and attention_sm90.cu, the Hopper wgmma path), and the
 * entry points of the Hopper path. */
#ifndef RT_ATTENTION_PARAMS_CUH
#define RT_ATTENTION_PARAMS_CUH

#include <stdint.h>

struct av4 { /* a (B, H, N, E) view: data, dtype, element strides */
    char *p;
    int dt;
    int64_t s[4];
};

struct attn_p {
    int64_t B, H, T, S;
    int D, Dv;
    av4 q, k, v, o;      /* forward: o is the output; backward: o is the saved output */
    av4 go, gq, gk, gv;  /* backward only */
    av4 m;               /* mask (m.p NULL when none) */
    void *lse, *dl, *gm; /* (B,H,T) compute dtype; Dl the same; grad mask (B,H,T,S) or NULL */
    int causal;
    double scale, dp, keep_scale;
    uint32_t thresh;
    uint64_t seed, offset;
};

/* attention_sm90.cu: forward and backward with warpgroup MMA (wgmma) for bf16/f16, head dim 128,
 * no user mask and no dropout, on a compute capability 9.0 device running the sm_90a image.
 * rtc_sm90_attn_usable says whether the current device can run them (read once per device;
 * RAMTORCH_ATTN_SM90=0 turns the path off). The launchers return RT_OK, an rt_status error, or
 * RTC_SM90_DECLINED (1) before running anything when a view cannot be described to the tensor
 * memory accelerator (a broadcast dim): the caller then runs the portable kernels. The backward
 * needs p.dl (dO . O per query row) filled. */
#define RTC_SM90_DECLINED 1
bool rtc_sm90_attn_usable(void);
int rtc_sm90_attn_fwd(const attn_p &p, bool bf16);
int rtc_sm90_attn_bwd(const attn_p &p, bool bf16);

#endif
