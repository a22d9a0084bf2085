// The kernel bodies, included once per ISA level by kernels.c with that level's target
// attribute in force, so the compiler vectorises each copy for its own registers. KFN(name)
// gives each copy its own symbol. Formulas match Kernels.swift's scalar references.

#define REASSOC _Pragma("clang fp reassociate(on)")

static inline float KFN(exp_poly)(float raw) {
    // Cody-Waite reduction and a degree-6 polynomial (relative error ~2e-7); integer bit work
    // only, so the loops that call it vectorise. 0 below e^-87.3, saturating above e^88.3.
    float v = raw < -87.3f ? -87.3f : (raw > 88.3f ? 88.3f : raw);
    float fx = (v * 1.44269504f + 12582912.0f) - 12582912.0f;
    v = v - fx * 0.693359375f + fx * 2.1219444e-4f;
    float z = v * v;
    float y = 1.98756915e-4f;
    y = y * v + 1.3981999507e-3f;
    y = y * v + 8.3334519073e-3f;
    y = y * v + 4.1665795894e-2f;
    y = y * v + 1.6666665459e-1f;
    y = y * v + 5.0000001201e-1f;
    y = y * z + v + 1.0f;
    union { float f; int32_t i; } b = { .f = fx + 8388735.0f };
    union { int32_t i; float f; } p = { .i = (b.i - 0x4B000000) << 23 };
    return raw < -87.3f ? 0.0f : y * p.f;
}

// Phi(x) and phi(x) sharing one exp; erf by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7).
static inline void KFN(normal_cdf_pdf)(float x, float *cdf, float *pdf) {
    float a = fabsf(x) * 0.7071067811865475f;
    float t = 1.0f / (1.0f + 0.3275911f * a);
    float p = 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    float g = KFN(exp_poly)(-0.5f * x * x);
    float erf_abs = 1.0f - p * t * g;
    float erf = x < 0 ? -erf_abs : erf_abs;
    *cdf = 0.5f * (1.0f + erf);
    *pdf = g * 0.3989422804014327f;
}

static float KFN(sum)(const float *x, int64_t n) {
    REASSOC
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    return s;
}

static void KFN(layer_norm_forward)(const float *x, const float *gamma, const float *beta, float *out,
                                    float *mean, float *rstd, int64_t rows, int64_t dim, float eps) {
    REASSOC
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float *or_ = out + r * dim;
        float m = KFN(sum)(xr, dim) / (float)dim;
        float ss = 0;
        for (int64_t i = 0; i < dim; i++) { float d = xr[i] - m; ss += d * d; }
        float s = 1.0f / sqrtf(ss / (float)dim + eps);
        for (int64_t i = 0; i < dim; i++) or_[i] = (xr[i] - m) * s * gamma[i] + beta[i];
        if (mean) mean[r] = m;
        if (rstd) rstd[r] = s;
    }
}

static void KFN(layer_norm_backward)(const float *dout, const float *x, const float *mean, const float *rstd,
                                     const float *gamma, float *dx, float *dgamma, float *dbeta,
                                     int64_t rows, int64_t dim) {
    REASSOC
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim, *dr = dout + r * dim;
        float m = mean[r], s = rstd[r];
        float sum_d = 0, sum_dx = 0;
        for (int64_t i = 0; i < dim; i++) {
            float xhat = (xr[i] - m) * s;
            float dn = dr[i] * gamma[i];
            sum_d += dn;
            sum_dx += dn * xhat;
        }
        if (dgamma) for (int64_t i = 0; i < dim; i++) dgamma[i] += dr[i] * (xr[i] - m) * s;
        if (dbeta) for (int64_t i = 0; i < dim; i++) dbeta[i] += dr[i];
        if (!dx) continue;
        float mean_d = sum_d / (float)dim, mean_dx = sum_dx / (float)dim;
        float *dxr = dx + r * dim;
        for (int64_t i = 0; i < dim; i++) {
            float xhat = (xr[i] - m) * s;
            dxr[i] += s * (dr[i] * gamma[i] - mean_d - xhat * mean_dx);
        }
    }
}

static void KFN(gelu_forward)(const float *x, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float cdf, pdf;
        KFN(normal_cdf_pdf)(x[i], &cdf, &pdf);
        out[i] = x[i] * cdf;
    }
}

static void KFN(gelu_backward)(const float *x, const float *dout, float *dx, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float cdf, pdf;
        KFN(normal_cdf_pdf)(x[i], &cdf, &pdf);
        dx[i] += dout[i] * (cdf + x[i] * pdf);
    }
}

static float KFN(exp_shift_sum)(float *x, int64_t n, float shift) {
    REASSOC
    float s = 0;
    for (int64_t i = 0; i < n; i++) { float e = KFN(exp_poly)(x[i] - shift); x[i] = e; s += e; }
    return s;
}

static float KFN(max_value)(const float *x, int64_t n) {
    REASSOC
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

static int64_t KFN(first_above)(const float *x, int64_t n, float floor) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        // One vector compare per chunk: any lane above the floor? (NaN loses every comparison,
        // so it is skipped like a masked row.) An integer OR, so no reassociation is needed.
        int any = 0;
        for (int j = 0; j < 16; j++) any |= x[i + j] > floor;
        if (any) break;
    }
    for (; i < n; i++) if (x[i] > floor) return i;
    return n;
}

static void KFN(softmax_row)(float *x, int64_t n) {
    float m = KFN(max_value)(x, n);
    if (!(m > -INFINITY)) { for (int64_t i = 0; i < n; i++) x[i] = 0; return; }
    float inv = 1.0f / KFN(exp_shift_sum)(x, n, m);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

static void KFN(adam_step)(float *restrict w, float *restrict g, float *restrict m, float *restrict v, int64_t n, float b1, float b2,
                           float b2t, float step_size, float eps, float l2, float decay) {
    float c1 = 1.0f - b1, c2 = 1.0f - b2;
    for (int64_t i = 0; i < n; i++) {
        float grad = g[i] + l2 * w[i];
        float mi = b1 * m[i] + c1 * grad;
        float vi = b2 * v[i] + c2 * grad * grad;
        m[i] = mi;
        v[i] = vi;
        float wi = w[i] - decay * w[i];
        w[i] = wi - step_size * mi / (sqrtf(vi / b2t) + eps);
        g[i] = 0;
    }
}

static const sr_kernel_table KFN(table) = {
    .level = KLEVEL,
    .name = KNAME,
    .layer_norm_forward = KFN(layer_norm_forward),
    .layer_norm_backward = KFN(layer_norm_backward),
    .gelu_forward = KFN(gelu_forward),
    .gelu_backward = KFN(gelu_backward),
    .softmax_row = KFN(softmax_row),
    .exp_shift_sum = KFN(exp_shift_sum),
    .adam_step = KFN(adam_step),
    .max_value = KFN(max_value),
    .first_above = KFN(first_above),
};

#undef REASSOC
