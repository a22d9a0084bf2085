// cpuid and XCR0: which instruction sets this CPU and OS let us use.
#include "ckernels.h"
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static uint64_t read_xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

void sr_cpu_read(sr_cpu_info *out) {
    memset(out, 0, sizeof *out);
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return;
    unsigned max_leaf = a;
    memcpy(out->vendor + 0, &b, 4);
    memcpy(out->vendor + 4, &d, 4);
    memcpy(out->vendor + 8, &c, 4);

    __get_cpuid(1, &a, &b, &c, &d);
    int base_family = (a >> 8) & 0xf, base_model = (a >> 4) & 0xf;
    out->stepping = a & 0xf;
    out->family = base_family == 0xf ? base_family + ((a >> 20) & 0xff) : base_family;
    out->model = (base_family == 0x6 || base_family == 0xf) ? base_model + (((a >> 16) & 0xf) << 4) : base_model;
    uint32_t f = 0;
    if (c & bit_SSE3) f |= SR_CPU_SSE3;
    if (c & bit_SSSE3) f |= SR_CPU_SSSE3;
    if (c & bit_SSE4_1) f |= SR_CPU_SSE41;
    if (c & bit_SSE4_2) f |= SR_CPU_SSE42;
    int osxsave = (c & bit_OSXSAVE) != 0;
    uint64_t xcr0 = osxsave ? read_xcr0() : 0;
    int os_avx = (xcr0 & 0x6) == 0x6;            // XMM and YMM state
    int os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0; // opmask, ZMM_Hi256, Hi16_ZMM
    int os_amx = (xcr0 & 0x60000) == 0x60000;     // XTILECFG, XTILEDATA
    if (os_avx && (c & bit_AVX)) f |= SR_CPU_AVX;
    if (os_avx && (c & bit_FMA)) f |= SR_CPU_FMA;
    if (os_avx && (c & bit_F16C)) f |= SR_CPU_F16C;
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        unsigned max_sub = a;
        if (os_avx && (b & bit_AVX2)) f |= SR_CPU_AVX2;
        if (os_avx512) {
            if (b & bit_AVX512F) f |= SR_CPU_AVX512F;
            if (b & bit_AVX512CD) f |= SR_CPU_AVX512CD;
            if (b & bit_AVX512BW) f |= SR_CPU_AVX512BW;
            if (b & bit_AVX512DQ) f |= SR_CPU_AVX512DQ;
            if (b & bit_AVX512VL) f |= SR_CPU_AVX512VL;
            if (c & (1u << 11)) f |= SR_CPU_AVX512VNNI;
            if (d & (1u << 23)) f |= SR_CPU_AVX512FP16;
        }
        if (os_amx && (d & (1u << 24))) f |= SR_CPU_AMXTILE;
        if (os_amx && (d & (1u << 22))) f |= SR_CPU_AMXBF16;
        if (max_sub >= 1) {
            __cpuid_count(7, 1, a, b, c, d);
            if (os_avx512 && (a & (1u << 5))) f |= SR_CPU_AVX512BF16;
        }
    }
    out->features = f;

    __get_cpuid(0x80000000, &a, &b, &c, &d);
    if (a >= 0x80000004) {
        unsigned *brand = (unsigned *)out->brand;
        for (unsigned leaf = 0; leaf < 3; leaf++) {
            __get_cpuid(0x80000002 + leaf, &brand[leaf * 4 + 0], &brand[leaf * 4 + 1], &brand[leaf * 4 + 2], &brand[leaf * 4 + 3]);
        }
        out->brand[48] = 0;
        // Trim the padding some vendors put around the name.
        char *s = out->brand;
        while (*s == ' ') s++;
        memmove(out->brand, s, strlen(s) + 1);
        for (size_t n = strlen(out->brand); n > 0 && out->brand[n - 1] == ' '; n--) out->brand[n - 1] = 0;
    }
}
#else
void sr_cpu_read(sr_cpu_info *out) { memset(out, 0, sizeof *out); }
#endif
