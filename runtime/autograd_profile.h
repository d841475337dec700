/* autograd_profile.h: per-node backward timing behind RAMTORCH_AUTOGRAD_PROFILE
 * (autograd_profile.c). */
#ifndef RT_AUTOGRAD_PROFILE_H
#define RT_AUTOGRAD_PROFILE_H
#include "internal.h"

int rt_autograd_profile_enabled(void);
/* device: a CUDA ordinal to synchronize, or < 0 for the CPU */
double rt_autograd_profile_begin(int device);
void rt_autograd_profile_end(const char *name, int device, double t0);
/* print the table to stderr and start a new one */
void rt_autograd_profile_report(void);

#endif
