// StreamRec's own native code: what the CPU can do (cpuid), and the elementwise kernels built
// for AVX-512, AVX2+FMA and baseline x86-64, chosen once at run time (kernels.c).
#ifndef STREAMREC_CKERNELS_H
#define STREAMREC_CKERNELS_H
#include <stdint.h>

// Feature bits of sr_cpu_info.features. AVX and AVX-512 bits are set only when the OS saves
// their registers too (XCR0), so a bit means "usable", not only "present".
enum {
    SR_CPU_SSE3 = 1 << 0, SR_CPU_SSSE3 = 1 << 1, SR_CPU_SSE41 = 1 << 2, SR_CPU_SSE42 = 1 << 3,
    SR_CPU_AVX = 1 << 4, SR_CPU_AVX2 = 1 << 5, SR_CPU_FMA = 1 << 6, SR_CPU_F16C = 1 << 7,
    SR_CPU_AVX512F = 1 << 8, SR_CPU_AVX512CD = 1 << 9, SR_CPU_AVX512BW = 1 << 10, SR_CPU_AVX512DQ = 1 << 11,
    SR_CPU_AVX512VL = 1 << 12, SR_CPU_AVX512BF16 = 1 << 13, SR_CPU_AVX512FP16 = 1 << 14,
    SR_CPU_AVX512VNNI = 1 << 15, SR_CPU_AMXTILE = 1 << 16, SR_CPU_AMXBF16 = 1 << 17,
};

typedef struct {
    char vendor[13];   // "GenuineIntel", "AuthenticAMD"
    char brand[49];    // the marketing name, trimmed
    int family;        // display family (base + extended)
    int model;         // display model (base + extended where the vendor uses it)
    int stepping;
    uint32_t features; // SR_CPU_* bits
} sr_cpu_info;

/// Reads cpuid and XCR0 (zeroes on a non-x86 build).
void sr_cpu_read(sr_cpu_info *out);

// ---- Elementwise kernels, one entry per ISA level ----------------------------------------
// Level: 0 = baseline x86-64 (SSE2), 1 = AVX2 + FMA, 2 = AVX-512 (F, BW, DQ, VL).
// Conventions as Kernels.swift: row-major `rows` x `dim`; backward kernels accumulate (+=).
typedef struct {
    int level;
    const char *name;
    /// out = (x - mean) * rstd * gamma + beta per row; mean and rstd saved when non-null.
    void (*layer_norm_forward)(const float *x, const float *gamma, const float *beta, float *out,
                               float *mean, float *rstd, int64_t rows, int64_t dim, float eps);
    void (*layer_norm_backward)(const float *dout, const float *x, const float *mean, const float *rstd,
                                const float *gamma, float *dx, float *dgamma, float *dbeta,
                                int64_t rows, int64_t dim);
    /// out[i] = x[i] Phi(x[i]) (erf GELU); out may equal x.
    void (*gelu_forward)(const float *x, float *out, int64_t n);
    /// dx[i] += dout[i] (Phi(x) + x phi(x)).
    void (*gelu_backward)(const float *x, const float *dout, float *dx, int64_t n);
    /// Row softmax in place over n entries; -inf entries become 0, an all -inf row all 0.
    void (*softmax_row)(float *x, int64_t n);
    /// x[i] = exp(x[i] - shift); returns the sum.
    float (*exp_shift_sum)(float *x, int64_t n, float shift);
    /// One Adam(W) step over n parameters, then g = 0:
    ///   grad = g + l2 w;  m = b1 m + (1-b1) grad;  v = b2 v + (1-b2) grad^2
    ///   w -= decay w;     w -= step_size m / (sqrt(v / b2t) + eps)
    void (*adam_step)(float *w, float *g, float *m, float *v, int64_t n, float b1, float b2,
                      float b2t, float step_size, float eps, float l2, float decay);
    /// The first index i in [0, n) with x[i] > floor, or n: the top-K scan's skip (16 at a time).
    int64_t (*first_above)(const float *x, int64_t n, float floor);
    /// The largest of x[0..n) (-inf for n = 0).
    float (*max_value)(const float *x, int64_t n);
} sr_kernel_table;

/// The table for the best level this CPU runs (chosen once, thread-safe).
const sr_kernel_table *sr_kernels(void);
/// The table for one level, or null if the CPU cannot run it (tests compare every level).
const sr_kernel_table *sr_kernels_level(int level);

#endif
