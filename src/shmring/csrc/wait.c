/* wait.c - spin, yield, futex: see wait.h for the protocol. */
#define _GNU_SOURCE
#include "wait.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "atomics.h"
#include "guard.h"

/* Spinning pays only while the peer runs on another core; on this machine
 * class a round trip is ~0.5 us, so a few tens of microseconds of spinning
 * catch nearly every reply, and yielding covers a peer that shares our core.
 * After that we sleep: an idle consumer costs nothing. */
#define SPIN_NS 20000
#define YIELD_NS 100000
/* A sleeper wakes at least this often and returns WAIT_CHECK, so that its
 * caller can check its segment was not truncated meanwhile (a futex word
 * past the new end is one nobody can wake). One wake-up a second costs
 * nothing. */
#define SLICE_NS 1000000000LL
/* shm_wait's nap_ns doubles after each nap that passed, up to this factor. */
#define NAP_GROWTH 16

int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int futex_wait_word(void *addr, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts, *tp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000LL);
        ts.tv_nsec = (long)(timeout_ns % 1000000000LL);
        tp = &ts;
    }
    /* Not FUTEX_PRIVATE: the word is shared between processes. A relative
     * timeout on FUTEX_WAIT is measured against CLOCK_MONOTONIC. */
    long r = syscall(SYS_futex, addr, FUTEX_WAIT, expected, tp, NULL, 0);
    if (r == 0) return 0;
    return errno;
}

int futex_wake_word(void *addr, int count) {
    return (int)syscall(SYS_futex, addr, FUTEX_WAKE, count, NULL, NULL, 0);
}

int shm_wait(void *base, uint64_t futex_off, uint64_t waiters_off, ready_fn ready,
             void *ctx, int64_t deadline_ns, int64_t nap_ns) {
    int64_t start = mono_ns(), now = start;
    int64_t nap = nap_ns > 0 && nap_ns < SLICE_NS ? nap_ns : SLICE_NS;
    uint64_t faults0 = guard_faults();
    unsigned n = 0;
    while (now - start < SPIN_NS) {
        if (ready(ctx)) return WAIT_READY;
        cpu_relax();
        if ((++n & 63u) == 0) {
            if (guard_faults() != faults0) return WAIT_CHECK;
            now = mono_ns();
            if (deadline_ns >= 0 && now >= deadline_ns) return WAIT_TIMEOUT;
        }
    }
    while (now - start < SPIN_NS + YIELD_NS) {
        if (ready(ctx)) return WAIT_READY;
        if (guard_faults() != faults0) return WAIT_CHECK;
        sched_yield();
        now = mono_ns();
        if (deadline_ns >= 0 && now >= deadline_ns) return WAIT_TIMEOUT;
    }
    int64_t slice_start = mono_ns();
    for (;;) {
        /* SYNC(waiters): raise the waiter count, then a fence: pairs with the fence and the load
         * of the count in shm_notify. */
        fadd32_sc(base, waiters_off, 1);
        /* SYNC(waiters): Pairs with the fence in shm_notify: either the publisher sees our count,
         * or our look at the ring below sees what it published. */
        fence_sc();
        /* SYNC(futex): the futex word before the last look; pairs with shm_notify's bump of it: a
         * bump after this load makes the wait below return at once. */
        uint32_t seq = ld32_acq(base, futex_off);
        if (ready(ctx)) {
            /* SYNC(waiters): no longer waiting. */
            fsub32_sc(base, waiters_off, 1);
            return WAIT_READY;
        }
        if (guard_faults() != faults0) {
            /* SYNC(waiters): no longer waiting. */
            fsub32_sc(base, waiters_off, 1);
            return WAIT_CHECK;
        }
        int64_t left = nap;
        if (deadline_ns >= 0) {
            left = deadline_ns - mono_ns();
            if (left <= 0) {
                /* SYNC(waiters): no longer waiting. */
                fsub32_sc(base, waiters_off, 1);
                return WAIT_TIMEOUT;
            }
            if (left > nap) left = nap;
        }
        /* SYNC(futex): sleeps while the word is seq; pairs with the bump and wake in shm_notify,
         * endpoint_close (py/endpoint.c) and _core.wake (py/module.c m_wake). */
        int err = futex_wait_word((char *)base + futex_off, seq, left);
        /* SYNC(waiters): no longer waiting. */
        fsub32_sc(base, waiters_off, 1);
        if (err == EINTR) return ready(ctx) ? WAIT_READY : WAIT_SIGNAL;
        if (ready(ctx)) return WAIT_READY;
        if (deadline_ns >= 0 && mono_ns() >= deadline_ns) return WAIT_TIMEOUT;
        if (err == ETIMEDOUT && mono_ns() - slice_start >= SLICE_NS)
            return WAIT_CHECK; /* a slice passed */
        /* A nap passed (or a spurious wake-up): look again, without spinning. A long wait
         * naps longer and longer, up to NAP_GROWTH times the first: a producer blocked for
         * minutes costs a few wake-ups a second, not hundreds. */
        if (err == ETIMEDOUT && nap < SLICE_NS && nap < nap_ns * NAP_GROWTH) nap *= 2;
    }
}

static void wake_all(void *base, uint64_t futex_off) {
    /* SYNC(futex): bump, then wake: pairs with the load of the word and the futex wait in
     * shm_wait. */
    fadd32_sc(base, futex_off, 1);
    futex_wake_word((char *)base + futex_off, INT_MAX);
}

void shm_wake(void *base, uint64_t futex_off) { wake_all(base, futex_off); }

void shm_notify(void *base, uint64_t futex_off, uint64_t waiters_off) {
    /* SYNC(waiters): Pairs with the fence in shm_wait after the waiter count is raised: our release
     * store of the data is ordered before this load of the count. */
    fence_sc();
    if (ld32_acq(base, waiters_off) != 0) wake_all(base, futex_off);
}

/* Why no fence here. Publisher: W, a seq-cst store (or RMW) of what it
 * publishes, then R, this seq-cst load of the count. Waiter (shm_wait): U, its
 * seq-cst add to the count, then F, a seq-cst fence, then L, its look at what W
 * stores. Suppose R reads the count from before U. A seq-cst load reads the
 * last seq-cst modification before it in the single total order S, so R
 * precedes U in S; W precedes R and U precedes F (sequenced before, all
 * seq-cst), so W precedes F in S. Then L, sequenced after F, observes W or a
 * later store (C11 7.17.3p10 / C++11 [atomics.order]p5: a modification that
 * precedes a seq-cst fence in S is seen by loads sequenced after the fence).
 * So either R sees the waiter or L sees the data: no wake-up is lost. */
void shm_notify_sc(void *base, uint64_t futex_off, uint64_t waiters_off) {
    /* SYNC(waiters): pairs with the seq-cst add and fence in shm_wait (see above): our seq-cst
     * publication precedes this seq-cst load of the count in S. */
    if (ld32_sc(base, waiters_off) != 0) wake_all(base, futex_off);
}
