/*
 * wait.h - how a blocked producer or consumer waits: spin briefly, then
 * sched_yield, then sleep on a futex in the shared segment.
 *
 * Every ring direction has a futex word and a waiters count (layout.h:
 * DATA and SPACE lines). A waiter announces itself in the count before its
 * last look at the ring; a publisher looks at the count after publishing, so
 * one of the two always sees the other (see shm_wait and shm_notify). When
 * nobody waits, publishing costs no system call.
 *
 * Called with the GIL released. A signal interrupts the sleep: the caller
 * takes the GIL back, runs Python's signal handlers, and calls again.
 */
#ifndef SHMRING_WAIT_H
#define SHMRING_WAIT_H

#include <stdint.h>

/* WAIT_CHECK: a mapping of this process faulted while waiting (a truncated
 * segment, see guard.h), or a sleep slice passed without news: the caller
 * checks that its own mapping is intact (touching its last page), then
 * waits again. */
enum { WAIT_READY = 0, WAIT_TIMEOUT = 1, WAIT_SIGNAL = 2, WAIT_CHECK = 3 };

/* Returns non-zero when waiting should stop (data, space, end-of-stream,
 * broken ring...). Must only read shared memory. */
typedef int (*ready_fn)(void *ctx);

int64_t mono_ns(void);

/* Wait until ready(ctx) or the CLOCK_MONOTONIC deadline (ns; <0: none).
 * nap_ns > 0: once asleep, look at ready(ctx) again at least that often
 * even if nobody wakes us (a producer waiting for room in a ring whose
 * consumer wakes producers only once a quarter of it is free: ring/produce.c,
 * "room to wake"; the nap doubles while the wait goes on, up to 16 times
 * nap_ns); <= 0: only on a wake-up or once a slice. */
int shm_wait(void *base, uint64_t futex_off, uint64_t waiters_off, ready_fn ready,
             void *ctx, int64_t deadline_ns, int64_t nap_ns);

/* Wake every waiter of a direction, if any. Call after the release store
 * that published the data or the space. */
void shm_notify(void *base, uint64_t futex_off, uint64_t waiters_off);

/* The same, for a caller whose publication was itself a seq-cst store or
 * read-modify-write (spsc tail and head, a broadcast cursor, a multi-producer
 * commit's compare-exchange): the look at the count is then a seq-cst load and
 * needs no fence before it (see shm_notify_sc in wait.c for why). One full
 * barrier per call instead of two on the consumer's side, and on x86 a locked
 * exchange in place of a store and a locked fence on the producer's. */
void shm_notify_sc(void *base, uint64_t futex_off, uint64_t waiters_off);

/* Wake every waiter of a direction unconditionally: for a caller that has
 * looked at the count itself (ring/consume.c, ring_notify_room). */
void shm_wake(void *base, uint64_t futex_off);

/* Raw futex calls on a 32-bit word of a shared mapping. */
int futex_wait_word(void *addr, uint32_t expected, int64_t timeout_ns);
int futex_wake_word(void *addr, int count);

#endif
