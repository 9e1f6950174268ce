/*
 * value/format.h - the type bytes of the value record format (the table in
 * value.h) and little-endian helpers, shared by encode.c and decode.c only:
 * the names are short and would clash elsewhere (structmember.h has T_NONE).
 */
#ifndef SHMRING_VALUE_FORMAT_H
#define SHMRING_VALUE_FORMAT_H

#include <stdint.h>

/* Type bytes (see the table above). */
#define T_FIXSTR 0x80u
#define T_FIXTUPLE 0xa0u
#define T_FIXLIST 0xb0u
#define T_FIXDICT 0xc0u
#define T_NONE 0xd0u
#define T_FALSE 0xd1u
#define T_TRUE 0xd2u
#define T_I8 0xd3u
#define T_I16 0xd4u
#define T_I32 0xd5u
#define T_I64 0xd6u
#define T_F64 0xd7u
#define T_STR 0xd8u
#define T_BYTES 0xd9u
#define T_TUPLE 0xdau
#define T_LIST 0xdbu
#define T_DICT 0xdcu
#define FIXSTR_MAX 31u
#define FIXSEQ_MAX 15u

static inline uint16_t le16(uint16_t v) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return __builtin_bswap16(v);
#else
    return v;
#endif
}
static inline uint32_t le32(uint32_t v) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return __builtin_bswap32(v);
#else
    return v;
#endif
}
static inline uint64_t le64(uint64_t v) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return __builtin_bswap64(v);
#else
    return v;
#endif
}

#endif
