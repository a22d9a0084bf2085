// One copy of every elementwise kernel per x86 ISA level, chosen at run time from cpuid.
// The bodies are plain C in kernels_body.h; each copy is compiled under its level's target
// attribute, so one binary runs on any x86-64 and uses AVX-512 where the CPU has it.
#include "ckernels.h"
#include <math.h>
#include <stddef.h>

#define KLEVEL 0
#define KNAME "x86-64 (SSE2)"
#define KFN(name) base_##name
#include "kernels_body.h"
#undef KFN
#undef KNAME
#undef KLEVEL

#if defined(__x86_64__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#define KLEVEL 1
#define KNAME "AVX2+FMA"
#define KFN(name) avx2_##name
#include "kernels_body.h"
#undef KFN
#undef KNAME
#undef KLEVEL
#pragma clang attribute pop

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c"), \
                                            min_vector_width(512))), apply_to = function)
#define KLEVEL 2
#define KNAME "AVX-512"
#define KFN(name) avx512_##name
#include "kernels_body.h"
#undef KFN
#undef KNAME
#undef KLEVEL
#pragma clang attribute pop
#endif

static int level_supported(int level) {
    sr_cpu_info cpu;
    sr_cpu_read(&cpu);
    uint32_t f = cpu.features;
    switch (level) {
    case 0: return 1;
    case 1: return (f & SR_CPU_AVX2) && (f & SR_CPU_FMA) && (f & SR_CPU_F16C);
    case 2: {
        uint32_t need = SR_CPU_AVX512F | SR_CPU_AVX512BW | SR_CPU_AVX512DQ | SR_CPU_AVX512VL | SR_CPU_AVX2 | SR_CPU_FMA;
        return (f & need) == need;
    }
    default: return 0;
    }
}

const sr_kernel_table *sr_kernels_level(int level) {
    if (!level_supported(level)) return NULL;
    switch (level) {
    case 0: return &base_table;
#if defined(__x86_64__)
    case 1: return &avx2_table;
    case 2: return &avx512_table;
#endif
    default: return NULL;
    }
}

const sr_kernel_table *sr_kernels(void) {
    // Computed once; a race only computes the same pointer twice.
    static const sr_kernel_table *chosen;
    const sr_kernel_table *t = __atomic_load_n(&chosen, __ATOMIC_ACQUIRE);
    if (t) return t;
    for (int level = 2; level >= 0 && !t; level--) t = sr_kernels_level(level);
    __atomic_store_n(&chosen, t, __ATOMIC_RELEASE);
    return t;
}
