/* Row-sparse kernels of a TopK sparse autoencoder on the CPU (loaded by zspace/nn/sparse_rows.py).

   torch.topk spends ~0.7 us of per-row bookkeeping (a copy into an index/value buffer and a
   partial sort) even when the row is 64 wide, and the gather/scatter products of the sparse
   backward go through (B, k, d) temporaries; both dominated an SAE step once its one matrix
   product ran in bf16. These loops touch each input once (the forward's sparse decode is
   torch's embedding_bag, already as fast):

   topk_rows      the k largest of each row. With AVX-512: one pass takes the maxima of up to
                  128 disjoint column groups, whose k-th largest bounds the row's k-th largest
                  from below; a second pass compresses the entries above that bound into a
                  short candidate list (about k plus a few), and a k-entry heap finishes.
                  Elsewhere (and for rows holding NaN): the heap and one scan that compares
                  16 values at a time against the heap's minimum.
   gather_dot     out[b, j] = <G[b, :], W[idx[b, j], :]>
   scatter_outer  out[idx[b, j], c0:c1] += v[b, j] X[b, c0:c1]        (column range: one thread
                  owns its columns, so threads never write the same memory)

   Each function handles a range of rows (or columns); the Python side splits the work over
   torch's thread count. NaN counts as larger than every number, as in torch.topk. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define LANES 16

typedef struct { float v; int64_t i; } entry;

/* NaN is the largest key, as in torch.topk */
static inline int greater(float a, float b) { return (a > b) || (isnan(a) && !isnan(b)); }

static void sift_down(entry *h, int k, int pos) {
    entry e = h[pos];
    for (;;) {
        int c = 2 * pos + 1;
        if (c >= k) break;
        if (c + 1 < k && greater(h[c].v, h[c + 1].v)) c++;
        if (!greater(e.v, h[c].v)) break;
        h[pos] = h[c];
        pos = c;
    }
    h[pos] = e;
}

static inline float bf16_to_f32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

#define TOPK_BODY(LOAD)                                                                      \
    for (int64_t r = r0; r < r1; r++) {                                                      \
        const TYPE *x = X + r * ld;                                                          \
        entry *h = heap;                                                                     \
        for (int j = 0; j < k; j++) { h[j].v = LOAD(x[j]); h[j].i = j; }                     \
        for (int j = k / 2 - 1; j >= 0; j--) sift_down(h, k, j);                             \
        float thr = h[0].v;                                                                  \
        int64_t c = k;                                                                       \
        for (; c < width && (c & (LANES - 1)); c++) {                                        \
            float v = LOAD(x[c]);                                                            \
            if (greater(v, thr)) { h[0].v = v; h[0].i = c; sift_down(h, k, 0); thr = h[0].v; } \
        }                                                                                    \
        for (; c + LANES <= width; c += LANES) {                                             \
            int any = 0;                                                                     \
            if (isnan(thr)) any = 1;                                                         \
            else for (int l = 0; l < LANES; l++) any |= !(LOAD(x[c + l]) <= thr);            \
            if (!any) continue;                                                              \
            for (int l = 0; l < LANES; l++) {                                                \
                float v = LOAD(x[c + l]);                                                    \
                if (greater(v, thr)) { h[0].v = v; h[0].i = c + l; sift_down(h, k, 0); thr = h[0].v; } \
            }                                                                                \
        }                                                                                    \
        for (; c < width; c++) {                                                             \
            float v = LOAD(x[c]);                                                            \
            if (greater(v, thr)) { h[0].v = v; h[0].i = c; sift_down(h, k, 0); thr = h[0].v; } \
        }                                                                                    \
        for (int j = 0; j < k; j++) { vals[r * k + j] = h[j].v; idx[r * k + j] = h[j].i; }  \
    }

#define IDENT(a) (a)

/* the heap scan: portable, and the path for rows holding NaN */
static void topk_scan_f32(const float *X, int64_t r0, int64_t r1, int64_t width, int64_t ld, int k,
                          float *vals, int64_t *idx, entry *heap) {
#define TYPE float
    TOPK_BODY(IDENT)
#undef TYPE
}

static void topk_scan_bf16(const uint16_t *X, int64_t r0, int64_t r1, int64_t width, int64_t ld, int k,
                           float *vals, int64_t *idx, entry *heap) {
#define TYPE uint16_t
    TOPK_BODY(bf16_to_f32)
#undef TYPE
}

#if defined(__AVX512F__)
#include <immintrin.h>
#define MAX_ACC 32                 /* up to 32 vectors of 16 running maxima: 512 disjoint groups */

static inline __m512 load16_f32(const float *p) { return _mm512_loadu_ps(p); }
static inline __m512 load16_bf16(const uint16_t *p) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
static inline float load1_f32(const float *p) { return *p; }
static inline float load1_bf16(const uint16_t *p) { return bf16_to_f32(*p); }

/* order-preserving integer keys of floats (no NaN): a < b exactly when key(a) < key(b) */
static inline __m512i float_keys(__m512 v) {
    __m512i b = _mm512_castps_si512(v);
    __m512i neg = _mm512_srai_epi32(b, 31);                       /* all ones where negative */
    return _mm512_xor_si512(b, _mm512_or_si512(neg, _mm512_set1_epi32((int)0x80000000)));
}

static inline float key_to_float(uint32_t key) {
    uint32_t b = (key & 0x80000000u) ? (key ^ 0x80000000u) : ~key;
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* A value t <= the k-th largest of the 16 m values in acc (no NaN): bisection on the top 16 bits of
   their integer keys, branch-free; t is within 2^-7 (relative) of that k-th largest, which is
   all the candidate pass needs. */
static float kth_largest_bound(const __m512 *acc, int m, int k) {
    __m512i keys[MAX_ACC];
    for (int a = 0; a < m; a++) keys[a] = float_keys(acc[a]);
    uint32_t lo = 0;
    for (int bit = 31; bit >= 16; bit--) {
        uint32_t mid = lo | (1u << bit);
        __m512i t = _mm512_set1_epi32((int)mid);
        int count = 0;
        for (int a = 0; a < m; a++) count += __builtin_popcount(_mm512_cmpge_epu32_mask(keys[a], t));
        lo = count >= k ? mid : lo;
    }
    return key_to_float(lo);
}

/* Two passes over a row. (1) The maxima of G = 16 m disjoint groups (m vectors of running
   maxima over interleaved 16-wide blocks): the k-th largest of those G maxima is a lower bound
   t of the row's k-th largest value, since G distinct entries reach their group's maximum.
   (2) Every entry >= t is compressed into a candidate list (AVX-512 compress stores, no
   branches), typically k plus a few; a k-entry heap over the candidates finishes. */
#define TOPK_TWO_PASS(NAME, TYPE, LOAD16, LOAD1, SCAN)                                          \
void NAME(const TYPE *X, int64_t r0, int64_t r1, int64_t width, int64_t ld, int k,               \
          float *vals, int64_t *idx, entry *heap, float *cand_v, int32_t *cand_i) {              \
    int m = (4 * k + 15) / 16;                                                                   \
    if (m > MAX_ACC) m = MAX_ACC;                                                                \
    while (m > 1 && 16 * m * 2 > width) m--;                                                     \
    if (16 * m < k || width < 32) { SCAN(X, r0, r1, width, ld, k, vals, idx, heap); return; }    \
    const int G = 16 * m;                                                                        \
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); \
    float gmax[16 * MAX_ACC];                                                                    \
    for (int64_t r = r0; r < r1; r++) {                                                          \
        const TYPE *x = X + r * ld;                                                              \
        __m512 acc[MAX_ACC];                                                                     \
        for (int a = 0; a < m; a++) acc[a] = _mm512_set1_ps(-INFINITY);                          \
        __mmask16 nan = 0;                                                                       \
        int64_t c = 0;                                                                           \
        for (; c + G <= width; c += G)                                                           \
            for (int a = 0; a < m; a++) {                                                        \
                __m512 v = LOAD16(x + c + 16 * a);                                               \
                nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);                                   \
                acc[a] = _mm512_max_ps(acc[a], v);                                               \
            }                                                                                    \
        if (c < width) {           /* the tail: entry t joins group t - c */                     \
            for (int a = 0; a < m; a++) _mm512_storeu_ps(gmax + 16 * a, acc[a]);                 \
            for (int64_t t = c; t < width; t++) {                                                \
                float v = LOAD1(x + t);                                                          \
                if (isnan(v)) nan = 1;                                                           \
                if (v > gmax[t - c]) gmax[t - c] = v;                                            \
            }                                                                                    \
            for (int a = 0; a < m; a++) acc[a] = _mm512_loadu_ps(gmax + 16 * a);                \
        }                                                                                        \
        if (nan) { SCAN(X, r, r + 1, width, ld, k, vals, idx, heap); continue; }                 \
        const float tk = kth_largest_bound(acc, m, k);                                           \
        const __m512 t = _mm512_set1_ps(tk);                                                     \
        int n = 0;                                                                               \
        for (c = 0; c + 16 <= width; c += 16) {                                                  \
            __m512 v = LOAD16(x + c);                                                            \
            __mmask16 keep = _mm512_cmp_ps_mask(v, t, _CMP_GE_OQ);                               \
            /* compress in registers, then a full store, with no branch: compress-to-memory is   \
               microcoded and ~40x slower on AMD Zen 4 (the buffers have 16 entries of slack) */ \
            _mm512_storeu_ps(cand_v + n, _mm512_maskz_compress_ps(keep, v));                     \
            _mm512_storeu_si512(cand_i + n, _mm512_maskz_compress_epi32(                         \
                keep, _mm512_add_epi32(lane, _mm512_set1_epi32((int)c))));                       \
            n += __builtin_popcount(keep);                                                       \
        }                                                                                        \
        for (; c < width; c++) {                                                                 \
            float v = LOAD1(x + c);                                                              \
            if (v >= tk) { cand_v[n] = v; cand_i[n] = (int32_t)c; n++; }               \
        }                                                                                        \
        entry *h = heap;                                                                         \
        for (int j = 0; j < k; j++) { h[j].v = cand_v[j]; h[j].i = cand_i[j]; }                  \
        for (int j = k / 2 - 1; j >= 0; j--) sift_down(h, k, j);                                 \
        for (int j = k; j < n; j++)                                                              \
            if (cand_v[j] > h[0].v) { h[0].v = cand_v[j]; h[0].i = cand_i[j]; sift_down(h, k, 0); } \
        for (int j = 0; j < k; j++) { vals[r * k + j] = h[j].v; idx[r * k + j] = h[j].i; }      \
    }                                                                                            \
}

TOPK_TWO_PASS(topk_rows_f32, float, load16_f32, load1_f32, topk_scan_f32)
TOPK_TWO_PASS(topk_rows_bf16, uint16_t, load16_bf16, load1_bf16, topk_scan_bf16)

#else

/* without AVX-512: the heap scan (the candidate buffers are not used) */
void topk_rows_f32(const float *X, int64_t r0, int64_t r1, int64_t width, int64_t ld, int k,
                   float *vals, int64_t *idx, entry *heap, float *cand_v, int32_t *cand_i) {
    (void)cand_v; (void)cand_i;
    topk_scan_f32(X, r0, r1, width, ld, k, vals, idx, heap);
}

void topk_rows_bf16(const uint16_t *X, int64_t r0, int64_t r1, int64_t width, int64_t ld, int k,
                    float *vals, int64_t *idx, entry *heap, float *cand_v, int32_t *cand_i) {
    (void)cand_v; (void)cand_i;
    topk_scan_bf16(X, r0, r1, width, ld, k, vals, idx, heap);
}
#endif

void gather_dot(const float *G, int64_t r0, int64_t r1, int64_t d, const float *W, const int64_t *idx,
                int k, float *out) {
    for (int64_t b = r0; b < r1; b++) {
        const float *g = G + b * d;
        for (int j = 0; j < k; j++) {
            const float *w = W + idx[b * k + j] * d;
            float s = 0.f;
#pragma omp simd reduction(+ : s)
            for (int64_t c = 0; c < d; c++) s += g[c] * w[c];
            out[b * k + j] = s;
        }
    }
}

void scatter_outer(float *out, int64_t d, const int64_t *idx, const float *v, const float *X, int64_t rows,
                   int k, int64_t c0, int64_t c1) {
    for (int64_t b = 0; b < rows; b++) {
        const float *x = X + b * d;
        for (int j = 0; j < k; j++) {
            float *o = out + idx[b * k + j] * d;
            const float a = v[b * k + j];
            for (int64_t c = c0; c < c1; c++) o[c] += a * x[c];
        }
    }
}
