/* azbai.local.md5x: the MD5s of several buffers at once, one buffer per SIMD lane.
 *
 * MD5 is a chain of dependent steps, so one buffer cannot go faster than OpenSSL's ~4 cycles a byte; several
 * independent buffers can share the steps: 16 lanes of 32 bits with AVX-512, 8 with AVX2. A verified transfer
 * hashes many files at once (one per worker thread), and azbai.local.digests gathers them into one call.
 *
 *     md5_many([b"...", memoryview(...), ...]) -> [16-byte digest, ...]
 *     LANES: 16 (AVX-512), 8 (AVX2) or 0 (neither: md5_many raises, the caller uses hashlib)
 *
 * The buffers are hashed with the GIL released. Lanes whose buffers are shorter than the longest hash a zero block
 * once they are done, and their digest is taken when their last block is through.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define AZBAI_X86 1
#include <immintrin.h>
#endif

#define MAX_LANES 16

static const uint32_t K[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};

/* One lane's buffer: its whole 64-byte blocks in place, then one or two blocks of its tail and the padding. */
typedef struct {
    const unsigned char *data;
    Py_ssize_t full;  /* whole blocks of data */
    Py_ssize_t total; /* full + tail blocks */
    unsigned char tail[128];
    uint32_t state[4];
} Lane;

static void lane_init(Lane *lane, const unsigned char *data, Py_ssize_t len) {
    Py_ssize_t rest = len % 64;
    uint64_t bits = (uint64_t)len * 8;
    Py_ssize_t tail_blocks = rest < 56 ? 1 : 2;
    lane->data = data;
    lane->full = len / 64;
    lane->total = lane->full + tail_blocks;
    memset(lane->tail, 0, sizeof lane->tail);
    if (rest) memcpy(lane->tail, data + lane->full * 64, (size_t)rest);
    lane->tail[rest] = 0x80;
    for (int i = 0; i < 8; i++) lane->tail[tail_blocks * 64 - 8 + i] = (unsigned char)(bits >> (8 * i));
}

static const unsigned char ZERO_BLOCK[64];

static const unsigned char *lane_block(const Lane *lane, Py_ssize_t i) {
    if (i < lane->full) return lane->data + i * 64;
    if (i < lane->total) return lane->tail + (i - lane->full) * 64;
    return ZERO_BLOCK;
}

#ifdef AZBAI_X86

static int any_finished(const Lane *lanes, int count, Py_ssize_t i) {
    int done = 0;
    for (int l = 0; l < count; l++) done |= lanes[l].total == i + 1;
    return done;
}

/* The lanes whose last block was block i take their digests: out holds the state vectors a, b, c, d one after the
 * other, width words each. */
static void take_digests(Lane *lanes, int count, Py_ssize_t i, const uint32_t *out, int width) {
    for (int l = 0; l < count; l++)
        if (lanes[l].total == i + 1)
            for (int r = 0; r < 4; r++) lanes[l].state[r] = out[r * width + l];
}

/* The 64 steps, written once: S is the step (STEP for one group of lanes, STEP2 for two), V the vector type, and
 * the macros below give its operations. */
#define MD5_ROUNDS(S)                                                                 \
    S(F, a, b, c, d, 0, 7) S(F, d, a, b, c, 1, 12) S(F, c, d, a, b, 2, 17) \
    S(F, b, c, d, a, 3, 22) S(F, a, b, c, d, 4, 7) S(F, d, a, b, c, 5, 12) \
    S(F, c, d, a, b, 6, 17) S(F, b, c, d, a, 7, 22) S(F, a, b, c, d, 8, 7) \
    S(F, d, a, b, c, 9, 12) S(F, c, d, a, b, 10, 17) S(F, b, c, d, a, 11, 22) \
    S(F, a, b, c, d, 12, 7) S(F, d, a, b, c, 13, 12) S(F, c, d, a, b, 14, 17) \
    S(F, b, c, d, a, 15, 22) \
    S(G, a, b, c, d, 1, 5) S(G, d, a, b, c, 6, 9) S(G, c, d, a, b, 11, 14) \
    S(G, b, c, d, a, 0, 20) S(G, a, b, c, d, 5, 5) S(G, d, a, b, c, 10, 9) \
    S(G, c, d, a, b, 15, 14) S(G, b, c, d, a, 4, 20) S(G, a, b, c, d, 9, 5) \
    S(G, d, a, b, c, 14, 9) S(G, c, d, a, b, 3, 14) S(G, b, c, d, a, 8, 20) \
    S(G, a, b, c, d, 13, 5) S(G, d, a, b, c, 2, 9) S(G, c, d, a, b, 7, 14) \
    S(G, b, c, d, a, 12, 20) \
    S(H, a, b, c, d, 5, 4) S(H, d, a, b, c, 8, 11) S(H, c, d, a, b, 11, 16) \
    S(H, b, c, d, a, 14, 23) S(H, a, b, c, d, 1, 4) S(H, d, a, b, c, 4, 11) \
    S(H, c, d, a, b, 7, 16) S(H, b, c, d, a, 10, 23) S(H, a, b, c, d, 13, 4) \
    S(H, d, a, b, c, 0, 11) S(H, c, d, a, b, 3, 16) S(H, b, c, d, a, 6, 23) \
    S(H, a, b, c, d, 9, 4) S(H, d, a, b, c, 12, 11) S(H, c, d, a, b, 15, 16) \
    S(H, b, c, d, a, 2, 23) \
    S(I, a, b, c, d, 0, 6) S(I, d, a, b, c, 7, 10) S(I, c, d, a, b, 14, 15) \
    S(I, b, c, d, a, 5, 21) S(I, a, b, c, d, 12, 6) S(I, d, a, b, c, 3, 10) \
    S(I, c, d, a, b, 10, 15) S(I, b, c, d, a, 1, 21) S(I, a, b, c, d, 8, 6) \
    S(I, d, a, b, c, 15, 10) S(I, c, d, a, b, 6, 15) S(I, b, c, d, a, 13, 21) \
    S(I, a, b, c, d, 4, 6) S(I, d, a, b, c, 11, 10) S(I, c, d, a, b, 2, 15) \
    S(I, b, c, d, a, 9, 21)

/* a + K + M does not wait for the step before: OPAQUE keeps the compiler from folding it back into the chain, which
 * is then f, one add, the rotation and the last add. */
#define OPAQUE(x) __asm__("" : "+v"(x))
#define STEP(f, a, b, c, d, g, s)                       \
    {                                                   \
        V t = ADD(a, ADD(m[g], SET1(K[step])));         \
        OPAQUE(t);                                      \
        a = ADD(b, ROTL(ADD(f(b, c, d), t), s));        \
        step++;                                         \
    }

/* A pass over one group of W lanes, with the instruction set's LOAD (a block's words as columns) and TAKE (the
 * digests of the lanes that finished). */
#define PASS(W, LOAD, TAKE)                                                                       \
    {                                                                                             \
        V a = SET1(0x67452301), b = SET1(0xefcdab89), c = SET1(0x98badcfe), d = SET1(0x10325476); \
        for (Py_ssize_t i = 0; i < blocks; i++) {                                                 \
            V m[16];                                                                              \
            LOAD(lanes, count, i, m);                                                             \
            V a0 = a, b0 = b, c0 = c, d0 = d;                                                     \
            int step = 0;                                                                         \
            MD5_ROUNDS(STEP)                                                                      \
            a = ADD(a, a0), b = ADD(b, b0), c = ADD(c, c0), d = ADD(d, d0);                       \
            TAKE(lanes, count, i, a, b, c, d);                                                    \
        }                                                                                         \
    }

/* A pass over two groups, W lanes and count - W, whose steps interleave (STEP2, below). */
#define PASS2(W, LOAD, TAKE)                                                                           \
    {                                                                                                  \
        Lane *second = lanes + (W);                                                                    \
        int count2 = count - (W);                                                                      \
        V a1 = SET1(0x67452301), b1 = SET1(0xefcdab89), c1 = SET1(0x98badcfe), d1 = SET1(0x10325476);  \
        V a2 = a1, b2 = b1, c2 = c1, d2 = d1;                                                          \
        for (Py_ssize_t i = 0; i < blocks; i++) {                                                      \
            V m1[16], m2[16];                                                                          \
            LOAD(lanes, (W), i, m1);                                                                   \
            LOAD(second, count2, i, m2);                                                               \
            V a10 = a1, b10 = b1, c10 = c1, d10 = d1, a20 = a2, b20 = b2, c20 = c2, d20 = d2;          \
            int step = 0;                                                                              \
            MD5_ROUNDS(STEP2)                                                                          \
            a1 = ADD(a1, a10), b1 = ADD(b1, b10), c1 = ADD(c1, c10), d1 = ADD(d1, d10);                \
            a2 = ADD(a2, a20), b2 = ADD(b2, b20), c2 = ADD(c2, c20), d2 = ADD(d2, d20);                \
            TAKE(lanes, (W), i, a1, b1, c1, d1);                                                       \
            TAKE(second, count2, i, a2, b2, c2, d2);                                                   \
        }                                                                                              \
    }

/* ---- AVX-512: 16 lanes */

/* Each lane's block is a row of 16 words; m[w] is column w (word w of every lane): a 16 x 16 transpose in three
 * rounds of shuffles, which costs less than 32 gathers. Lanes from count on read a zero block. */
__attribute__((target("avx512f"))) static inline void load_columns(const Lane *lanes, int count, Py_ssize_t i,
                                                                   __m512i m[16]) {
    __m512i r[16], t[16], u[16];
    for (int l = 0; l < 16; l++)
        r[l] = _mm512_loadu_si512((const void *)(l < count ? lane_block(&lanes[l], i) : ZERO_BLOCK));
    for (int l = 0; l < 16; l += 2) {
        t[l] = _mm512_unpacklo_epi32(r[l], r[l + 1]);
        t[l + 1] = _mm512_unpackhi_epi32(r[l], r[l + 1]);
    }
    for (int g = 0; g < 16; g += 4) {
        u[g] = _mm512_unpacklo_epi64(t[g], t[g + 2]);
        u[g + 1] = _mm512_unpackhi_epi64(t[g], t[g + 2]);
        u[g + 2] = _mm512_unpacklo_epi64(t[g + 1], t[g + 3]);
        u[g + 3] = _mm512_unpackhi_epi64(t[g + 1], t[g + 3]);
    }
    for (int k = 0; k < 4; k++) {
        __m512i v0 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0x44), v1 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0xEE);
        __m512i v2 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0x44);
        __m512i v3 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0xEE);
        m[k] = _mm512_shuffle_i32x4(v0, v2, 0x88);
        m[k + 4] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
        m[k + 8] = _mm512_shuffle_i32x4(v1, v3, 0x88);
        m[k + 12] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
    }
}

/* The lanes whose last block was block i take their digests from the state vectors. */
__attribute__((target("avx512f"))) static inline void take_finished(Lane *lanes, int count, Py_ssize_t i, __m512i a,
                                                                    __m512i b, __m512i c, __m512i d) {
    if (!any_finished(lanes, count, i)) return;
    uint32_t out[4][16] __attribute__((aligned(64)));
    _mm512_store_si512((void *)out[0], a), _mm512_store_si512((void *)out[1], b);
    _mm512_store_si512((void *)out[2], c), _mm512_store_si512((void *)out[3], d);
    take_digests(lanes, count, i, out[0], 16);
}

#define V __m512i
#define ADD _mm512_add_epi32
#define SET1(x) _mm512_set1_epi32((int)(x))
#define ROTL(x, s) _mm512_rol_epi32((x), (s))
/* z first: the instruction overwrites its first operand, and z is ready before x (the previous step's result), so
 * the copy that keeps z is not in the chain. The truth tables are for (z, x, y). */
#define F(x, y, z) _mm512_ternarylogic_epi32((z), (x), (y), 0xB8)
#define G(x, y, z) _mm512_ternarylogic_epi32((z), (x), (y), 0xCA)
#define H(x, y, z) _mm512_ternarylogic_epi32((z), (x), (y), 0x96)
#define I(x, y, z) _mm512_ternarylogic_epi32((z), (x), (y), 0x65)

/* ---- AVX-512: 16 lanes */

__attribute__((target("avx512f"))) static void md5_avx512(Lane *lanes, int count, Py_ssize_t blocks) {
    PASS(16, load_columns, take_finished)
}

/* ---- AVX-512: 32 lanes, two groups of 16 whose steps interleave. One group's step waits on its previous step
 * (about 8 cycles of dependent vector operations here); the other group's fills that wait, so a pass of 32 costs
 * little more than a pass of 16. */

#define STEP2(f, a, b, c, d, g, s)                                      \
    {                                                                   \
        V k_ = SET1(K[step]);                                           \
        V t1 = ADD(a##1, ADD(m1[g], k_)), t2 = ADD(a##2, ADD(m2[g], k_)); \
        OPAQUE(t1);                                                     \
        OPAQUE(t2);                                                     \
        a##1 = ADD(b##1, ROTL(ADD(f(b##1, c##1, d##1), t1), s));        \
        a##2 = ADD(b##2, ROTL(ADD(f(b##2, c##2, d##2), t2), s));        \
        step++;                                                         \
    }

__attribute__((target("avx512f"))) static void md5_avx512x2(Lane *lanes, int count, Py_ssize_t blocks) {
    PASS2(16, load_columns, take_finished)
}

#undef V
#undef ADD
#undef SET1
#undef ROTL
#undef F
#undef G
#undef H
#undef I

/* ---- AVX2: 8 lanes, or 16 in two groups whose steps interleave (as for AVX-512 above) */

#define V __m256i
#define ADD _mm256_add_epi32
#define SET1(x) _mm256_set1_epi32((int)(x))
#define ROTL(x, s) _mm256_or_si256(_mm256_slli_epi32((x), (s)), _mm256_srli_epi32((x), 32 - (s)))
#define F(x, y, z) _mm256_xor_si256(_mm256_and_si256(_mm256_xor_si256((y), (z)), (x)), (z))
#define G(x, y, z) _mm256_xor_si256(_mm256_and_si256(_mm256_xor_si256((x), (y)), (z)), (y))
#define H(x, y, z) _mm256_xor_si256(_mm256_xor_si256((x), (y)), (z))
#define I(x, y, z) _mm256_xor_si256((y), _mm256_or_si256((x), _mm256_xor_si256((z), ones)))

/* m[w] is word w of every lane's block i: each half of the 8 blocks (8 rows of 8 words) transposed with shuffles,
 * which costs less than the 32 gathers of 4 words it takes otherwise. Lanes from count on read a zero block. */
__attribute__((target("avx2"))) static inline void load_columns8(const Lane *lanes, int count, Py_ssize_t i,
                                                                 __m256i m[16]) {
    const unsigned char *block[8];
    for (int l = 0; l < 8; l++) block[l] = l < count ? lane_block(&lanes[l], i) : ZERO_BLOCK;
    for (int half = 0; half < 2; half++) {
        __m256i r[8], t[8], u[8];
        for (int l = 0; l < 8; l++) r[l] = _mm256_loadu_si256((const __m256i *)(block[l] + 32 * half));
        for (int l = 0; l < 8; l += 2) {
            t[l] = _mm256_unpacklo_epi32(r[l], r[l + 1]);
            t[l + 1] = _mm256_unpackhi_epi32(r[l], r[l + 1]);
        }
        for (int g = 0; g < 8; g += 4) {
            u[g] = _mm256_unpacklo_epi64(t[g], t[g + 2]);
            u[g + 1] = _mm256_unpackhi_epi64(t[g], t[g + 2]);
            u[g + 2] = _mm256_unpacklo_epi64(t[g + 1], t[g + 3]);
            u[g + 3] = _mm256_unpackhi_epi64(t[g + 1], t[g + 3]);
        }
        for (int k = 0; k < 4; k++) {
            m[8 * half + k] = _mm256_permute2x128_si256(u[k], u[4 + k], 0x20);
            m[8 * half + k + 4] = _mm256_permute2x128_si256(u[k], u[4 + k], 0x31);
        }
    }
}

__attribute__((target("avx2"))) static inline void take_finished8(Lane *lanes, int count, Py_ssize_t i, __m256i a,
                                                                  __m256i b, __m256i c, __m256i d) {
    if (!any_finished(lanes, count, i)) return;
    uint32_t out[4][8] __attribute__((aligned(32)));
    _mm256_store_si256((__m256i *)out[0], a), _mm256_store_si256((__m256i *)out[1], b);
    _mm256_store_si256((__m256i *)out[2], c), _mm256_store_si256((__m256i *)out[3], d);
    take_digests(lanes, count, i, out[0], 8);
}

__attribute__((target("avx2"))) static void md5_avx2(Lane *lanes, int count, Py_ssize_t blocks) {
    const V ones = _mm256_set1_epi32(-1); /* for I */
    PASS(8, load_columns8, take_finished8)
}

__attribute__((target("avx2"))) static void md5_avx2x2(Lane *lanes, int count, Py_ssize_t blocks) {
    const V ones = _mm256_set1_epi32(-1); /* for I */
    PASS2(8, load_columns8, take_finished8)
}

#undef V
#undef ADD
#undef SET1
#undef ROTL
#undef F
#undef G
#undef H
#undef I

#undef PASS
#undef PASS2
#undef STEP
#undef STEP2
#undef OPAQUE
#endif /* AZBAI_X86 */

static int detect_lanes(void) {
#ifdef AZBAI_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 16;
    if (__builtin_cpu_supports("avx2")) return 8;
#endif
    return 0;
}

static int LANES;

static PyObject *md5_many(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *arg;
    int width = LANES;
    if (!PyArg_ParseTuple(args, "O|i:md5_many", &arg, &width)) return NULL;
    if (LANES == 0) {
        PyErr_SetString(PyExc_RuntimeError, "this CPU has neither AVX-512 nor AVX2");
        return NULL;
    }
    if (width != LANES && !(width == 8 && LANES == 16)) {
        PyErr_Format(PyExc_ValueError, "lanes must be %d%s", LANES, LANES == 16 ? " or 8" : "");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(arg, "md5_many() takes a sequence of buffers");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *result = NULL;
    Py_buffer *views = PyMem_Calloc(n ? (size_t)n : 1, sizeof(Py_buffer));
    Lane *lanes = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Lane));
    Py_ssize_t got = 0;
    if (views == NULL || lanes == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < n; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &views[got], PyBUF_SIMPLE) < 0) goto done;
        lane_init(&lanes[got], views[got].buf, views[got].len);
    }
    Py_BEGIN_ALLOW_THREADS
    int pass = 2 * width; /* buffers a pass takes: two groups of lanes interleave */
    for (Py_ssize_t start = 0; start < n; start += pass) {
        int count = (int)(n - start < pass ? n - start : pass);
        Py_ssize_t blocks = 0;
        for (int l = 0; l < count; l++)
            if (lanes[start + l].total > blocks) blocks = lanes[start + l].total;
#ifdef AZBAI_X86
        if (width == 16 && count > 16)
            md5_avx512x2(lanes + start, count, blocks);
        else if (width == 16)
            md5_avx512(lanes + start, count, blocks);
        else if (count > 8)
            md5_avx2x2(lanes + start, count, blocks);
        else
            md5_avx2(lanes + start, count, blocks);
#endif
    }
    Py_END_ALLOW_THREADS
    result = PyList_New(n);
    if (result == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char digest[16];
        for (int r = 0; r < 4; r++)
            for (int k = 0; k < 4; k++) digest[4 * r + k] = (unsigned char)(lanes[i].state[r] >> (8 * k));
        PyObject *item = PyBytes_FromStringAndSize((const char *)digest, 16);
        if (item == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, item);
    }
done:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(lanes);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef METHODS[] = {
    {"md5_many", md5_many, METH_VARARGS,
     "md5_many(buffers[, lanes]) -> list of 16-byte MD5 digests, one per buffer.\n\n"
     "lanes: 8 takes the AVX2 code on an AVX-512 CPU (for tests); the default is LANES."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "azbai.local.md5x", "MD5s of several buffers at once, one per SIMD lane.", -1, METHODS,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_md5x(void) {
    LANES = detect_lanes();
    PyObject *module = PyModule_Create(&MODULE);
    if (module != NULL && PyModule_AddIntConstant(module, "LANES", LANES) < 0) Py_CLEAR(module);
    return module;
}
