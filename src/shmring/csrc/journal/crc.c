/* journal/crc.c - CRC-32 as zlib computes it: slice-by-8 tables for short inputs and the
 * ends of long ones, carry-less multiply folding (PCLMULQDQ) for runs of 64 bytes and more
 * on x86-64, zlib itself elsewhere (see crc.h for why not zlib alone). */
#include "journal/crc.h"

#include <string.h>
#include <zlib.h>

/* Slice-by-8 tables of the reflected polynomial 0xEDB88320 (jcrc32_init):
 * zlib 1.2's crc32 costs a few hundred ns of set-up per call, which is most
 * of the time of a record of 64 bytes; these do short inputs, and the head
 * and tail of the folded path, at about a byte per cycle or better. */
static uint32_t T[8][256];
static int tables_ready;

void jcrc32_init(void) {
    if (tables_ready) return;
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0xEDB88320u : c >> 1;
        T[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int s = 1; s < 8; s++) T[s][i] = (T[s - 1][i] >> 8) ^ T[0][T[s - 1][i] & 0xff];
    tables_ready = 1;
}

/* The register (not inverted) after n bytes at p. */
static uint32_t crc_slice8(uint32_t reg, const unsigned char *p, size_t n) {
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= reg;
        reg = T[7][w & 0xff] ^ T[6][(w >> 8) & 0xff] ^ T[5][(w >> 16) & 0xff] ^
              T[4][(w >> 24) & 0xff] ^ T[3][(w >> 32) & 0xff] ^ T[2][(w >> 40) & 0xff] ^
              T[1][(w >> 48) & 0xff] ^ T[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) reg = T[0][(reg ^ *p++) & 0xff] ^ (reg >> 8);
    return reg;
}

/* zlib's crc32 takes a uInt length: feed it in chunks below 4 GiB. */
static uint32_t crc_zlib(uint32_t crc, const unsigned char *p, size_t n) {
    uLong c = crc;
    while (n) {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, p, k);
        p += k;
        n -= k;
    }
    return (uint32_t)c;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <emmintrin.h>
#include <wmmintrin.h>

#define FOLD_TARGET __attribute__((target("pclmul,sse2")))

/* x * k, folded: the low half of x times k's low, the high half times k's high. */
FOLD_TARGET static inline __m128i fold(__m128i x, __m128i k) {
    return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

/* The CRC register (not inverted) after n bytes at p, n >= 64 and a
 * multiple of 16. Constants for the reflected polynomial 0xEDB88320, each a
 * power of x modulo P (bit-reflected, shifted by one), as in the paper:
 * k1 = x^(4*128+32), k2 = x^(4*128-32) for the 4-lane loop, k3, k4 for
 * 128 bits, k5 for the 64-to-32 fold, and P' and u' for Barrett's
 * reduction. */
FOLD_TARGET static uint32_t crc_fold(uint32_t reg, const unsigned char *p, size_t n) {
    const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596LL, 0x0154442bd4LL);
    const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009eLL, 0x01751997d0LL);
    const __m128i k5 = _mm_set_epi64x(0, 0x0163cd6124LL);
    const __m128i poly = _mm_set_epi64x(0x01f7011641LL, 0x01db710641LL);
    const __m128i mask32 = _mm_set_epi32(0, 0, 0, -1);
    __m128i x1 = _mm_loadu_si128((const __m128i *)p);
    __m128i x2 = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(p + 32));
    __m128i x4 = _mm_loadu_si128((const __m128i *)(p + 48));
    x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)reg));
    p += 64;
    n -= 64;
    while (n >= 64) {
        x1 = _mm_xor_si128(fold(x1, k1k2), _mm_loadu_si128((const __m128i *)p));
        x2 = _mm_xor_si128(fold(x2, k1k2), _mm_loadu_si128((const __m128i *)(p + 16)));
        x3 = _mm_xor_si128(fold(x3, k1k2), _mm_loadu_si128((const __m128i *)(p + 32)));
        x4 = _mm_xor_si128(fold(x4, k1k2), _mm_loadu_si128((const __m128i *)(p + 48)));
        p += 64;
        n -= 64;
    }
    /* Four lanes into one, then the 16-byte blocks left. */
    x1 = _mm_xor_si128(fold(x1, k3k4), x2);
    x1 = _mm_xor_si128(fold(x1, k3k4), x3);
    x1 = _mm_xor_si128(fold(x1, k3k4), x4);
    while (n >= 16) {
        x1 = _mm_xor_si128(fold(x1, k3k4), _mm_loadu_si128((const __m128i *)p));
        p += 16;
        n -= 16;
    }
    /* 128 bits to 64: the low half times k4, added to the high half (and 32
     * zero bits appended). */
    x1 = _mm_xor_si128(_mm_clmulepi64_si128(x1, k3k4, 0x10), _mm_srli_si128(x1, 8));
    /* 64 to 32 bits. */
    x2 = _mm_srli_si128(x1, 4);
    x1 = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, mask32), k5, 0x00), x2);
    /* Barrett reduction to the 32-bit remainder. */
    x2 = x1;
    x1 = _mm_clmulepi64_si128(_mm_and_si128(x1, mask32), poly, 0x10);
    x1 = _mm_clmulepi64_si128(_mm_and_si128(x1, mask32), poly, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    return (uint32_t)_mm_cvtsi128_si32(_mm_srli_si128(x1, 4));
}

static int have_pclmul = -1;

int jcrc32_accelerated(void) {
    if (have_pclmul < 0) {
        __builtin_cpu_init();
        have_pclmul = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse2");
    }
    return have_pclmul;
}

uint32_t jcrc32(uint32_t crc, const void *buf, size_t n) {
    const unsigned char *p = (const unsigned char *)buf;
    /* zlib's crc is the register inverted before and after. */
    if (n < 64) return ~crc_slice8(~crc, p, n);
    if (!jcrc32_accelerated()) return crc_zlib(crc, p, n);
    size_t body = n & ~(size_t)15;
    return ~crc_slice8(crc_fold(~crc, p, body), p + body, n - body);
}

#else

int jcrc32_accelerated(void) { return 0; }

uint32_t jcrc32(uint32_t crc, const void *p, size_t n) {
    if (n < 256) return ~crc_slice8(~crc, (const unsigned char *)p, n);
    return crc_zlib(crc, (const unsigned char *)p, n);
}

#endif
