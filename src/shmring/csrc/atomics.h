/*
 * atomics.h - 64- and 32-bit atomic operations on words of a shared mapping.
 *
 * Python has no atomics: a memoryview store is a plain memcpy, ordered by
 * accident on x86-64 and not at all on aarch64. Everything that publishes or
 * observes data across processes goes through these wrappers, which name
 * their C11 memory order. Callers say, at each use, which operation the
 * acquire or release pairs with.
 */
#ifndef SHMRING_ATOMICS_H
#define SHMRING_ATOMICS_H

#include <stdatomic.h>
#include <stdint.h>

typedef _Atomic uint64_t a64;
typedef _Atomic uint32_t a32;

#define A64(base, off) ((a64 *)((char *)(base) + (off)))
#define A32(base, off) ((a32 *)((char *)(base) + (off)))

static inline uint64_t ld_acq(void *b, uint64_t off) {
    return atomic_load_explicit(A64(b, off), memory_order_acquire);
}
static inline uint64_t ld_rlx(void *b, uint64_t off) {
    return atomic_load_explicit(A64(b, off), memory_order_relaxed);
}
static inline uint64_t ld_sc(void *b, uint64_t off) {
    return atomic_load_explicit(A64(b, off), memory_order_seq_cst);
}
static inline void st_rel(void *b, uint64_t off, uint64_t v) {
    atomic_store_explicit(A64(b, off), v, memory_order_release);
}
static inline void st_rlx(void *b, uint64_t off, uint64_t v) {
    atomic_store_explicit(A64(b, off), v, memory_order_relaxed);
}
static inline void st_sc(void *b, uint64_t off, uint64_t v) {
    atomic_store_explicit(A64(b, off), v, memory_order_seq_cst);
}
static inline int cas_sc(void *b, uint64_t off, uint64_t *expected, uint64_t desired) {
    return atomic_compare_exchange_strong_explicit(A64(b, off), expected, desired,
                                                   memory_order_seq_cst,
                                                   memory_order_seq_cst);
}
static inline uint64_t fadd_sc(void *b, uint64_t off, uint64_t v) {
    return atomic_fetch_add_explicit(A64(b, off), v, memory_order_seq_cst);
}
static inline uint32_t ld32_acq(void *b, uint64_t off) {
    return atomic_load_explicit(A32(b, off), memory_order_acquire);
}
static inline uint32_t ld32_sc(void *b, uint64_t off) {
    return atomic_load_explicit(A32(b, off), memory_order_seq_cst);
}
static inline int cas32_sc(void *b, uint64_t off, uint32_t *expected, uint32_t desired) {
    return atomic_compare_exchange_strong_explicit(A32(b, off), expected, desired,
                                                   memory_order_seq_cst,
                                                   memory_order_seq_cst);
}
static inline void st32_sc(void *b, uint64_t off, uint32_t v) {
    atomic_store_explicit(A32(b, off), v, memory_order_seq_cst);
}
static inline uint32_t fadd32_sc(void *b, uint64_t off, uint32_t v) {
    return atomic_fetch_add_explicit(A32(b, off), v, memory_order_seq_cst);
}
static inline uint32_t fsub32_sc(void *b, uint64_t off, uint32_t v) {
    return atomic_fetch_sub_explicit(A32(b, off), v, memory_order_seq_cst);
}
static inline void fence_sc(void) { atomic_thread_fence(memory_order_seq_cst); }
static inline void fence_acq(void) { atomic_thread_fence(memory_order_acquire); }
static inline void fence_rel(void) { atomic_thread_fence(memory_order_release); }

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

#endif
