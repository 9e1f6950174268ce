/*
 * ring/ring.h - the ring operations a message needs, free of Python: claim,
 * commit, abort, peek, release, and recovery of what a dead endpoint left.
 *
 * One ring_t per endpoint (a producer or a consumer handle) in one process.
 * It caches the gating position and the tail it last saw, so the common
 * send or receive touches the other side's cache line only when it must.
 *
 * Patterns (DESIGN.md, "Ring"):
 *   spsc       one producer publishes with a release store of tail; one
 *              consumer releases with a release store of head. No RMW.
 *   mpsc       producers claim with compare-exchange on tail and commit by
 *              flipping the record length positive (Agrona's protocol); the
 *              consumer zeroes what it consumed, so a zero word always means
 *              "not written yet".
 *   mpmc       as mpsc, and consumers take a record by compare-exchange on
 *              its header (owner recorded in it, so recovery can hand it
 *              back); read_claim is a shared hint, head is advanced by
 *              whoever finds the oldest record done (the sweep).
 *   broadcast  one producer; every consumer has a cursor in its attach slot.
 *              Lossless: the producer is gated by the slowest live cursor.
 *              Lossy: never gated; readers validate each copy against the
 *              intent word (a seqlock) and count what they missed.
 *              Lossless with a slow_consumer_timeout (untether_ns): gated,
 *              but a consumer that holds the producer back without moving
 *              for that long stops gating (ring/untether.c); readers then
 *              validate as lossy readers do.
 */
#ifndef SHMRING_RING_H
#define SHMRING_RING_H

#include <stddef.h>
#include <stdint.h>

#include "layout.h"

enum {
    RING_OK = 0,
    RING_AGAIN = 1,   /* full (producer) or empty (consumer) */
    RING_EOS = 2,     /* empty and the channel was closed for sending */
    RING_BROKEN = 3,  /* marked broken (by recovery or the supervisor) */
    RING_CORRUPT = 4, /* bytes in the segment break an invariant */
    RING_TOOBIG = 5,  /* message larger than max_message */
    RING_LAPPED = 6,  /* lossy broadcast: the copy was overwritten; retry */
    RING_REVOKED = 7, /* the supervisor revoked this producer's claim */
    RING_LEASE = 8,   /* the supervisor revoked this consumer's lease on its record */
};

typedef struct {
    char *base;
    char *data;
    uint64_t size, cap, mask, max_message;
    uint32_t pattern, flags, slot_count, slot;
    uint64_t slot_off;
    int multi_producer, lossy;
    uint64_t untether_ns; /* lossless broadcast: slow_consumer_timeout, 0 = never */
    int validating;       /* lossy, or untether_ns: copies are checked against intent */
    /* producer */
    uint64_t limit;      /* cached: claims must end at or before this */
    uint64_t tail_local; /* single-producer patterns own the tail */
    uint64_t msgno;      /* broadcast: number of the last message sent */
    int claimed;
    uint64_t claim_start, claim_pos, claim_end, claim_len;
    uint64_t claim_word; /* multi-producer: the claimed record word we wrote */
    /* consumer */
    uint64_t cursor, cached_tail;
    int held;
    uint64_t held_pos, held_alen, held_word, held_len;
    uint64_t held_seq; /* read with the record, so lossy validation covers it */
    uint64_t last_msgno;
    int have_baseline;
    uint64_t untethered; /* times this consumer found itself untethered */
    uint64_t messages, bytes; /* mirrored into this endpoint's slot */
    uint64_t link_region; /* consumer: this region's id, for the linked commit (link.c) */
    int batch;           /* defer publication and wake-ups to ring_flush */
    int pending;         /* a deferred publication is waiting */
    uint64_t want;       /* record bytes a waiting producer needs */
    /* Room to wake (spsc, mpsc; ring/produce.c): a waiting producer asks
     * for a quarter of the ring until room_until (CLOCK_MONOTONIC ns; 0:
     * not waiting so), the consumer wakes producers only once that much is
     * free, and at most once per eighth of the ring it frees (woke_at: its
     * head at the last wake-up). */
    int64_t room_until;
    uint64_t woke_at;
    volatile int *cancel; /* set when the endpoint is closed under a waiter */
    char *err; /* static description of the last RING_CORRUPT */
    /* producer with untether_ns: since when each consumer slot, at the
     * cursor noted, has held a claim back (0: not now); when it last looked */
    int64_t ut_seen;
    uint64_t gate_epoch; /* OFF_GATE_EPOCH when the limit was last computed */
    /* One entry per attach slot (slot_count), on the heap: a table may have
     * thousands of slots, and a ring_t is copied (py/endpoint.c's waits).
     * Allocated by ring_untether_alloc for a producer on such a region only
     * (NULL otherwise), freed by ring_untether_free. */
    uint64_t *ut_cursor;
    int64_t *ut_since;
    /* consumer reading ahead (ring/ahead.c): the records read and not yet
     * settled, in the order read (ahead_buf[ahead_first..+ahead_n), on the
     * heap, ahead_cap entries; NULL until the first). While any are, cursor
     * is where reading ahead goes on; head (spsc, mpsc) or the slot's
     * cursor (broadcast) stays at the oldest unsettled record. */
    struct ring_ahead *ahead_buf;
    uint64_t ahead_first, ahead_n, ahead_cap;
    int ahead; /* inside ring_ahead_peek: padding moves the cursor only */
} ring_t;

/* Checks the header against the mapping; 0 or RING_CORRUPT (err set). */
int ring_init(ring_t *r, char *base, uint64_t size, uint32_t slot, int consumer);

int ring_claim(ring_t *r, uint64_t len, char **payload);
int ring_commit(ring_t *r, uint64_t used);
void ring_abort(ring_t *r);
void ring_flush(ring_t *r); /* end of a batch: publish and wake once */
int ring_has_space(ring_t *r, uint64_t len);

int ring_peek(ring_t *r, const char **payload, uint64_t *len);
int ring_validate(ring_t *r); /* lossy broadcast: RING_OK or RING_LAPPED */
int ring_release(ring_t *r); /* RING_OK, or RING_LEASE (mpmc: no longer ours) */
void ring_unhold(ring_t *r); /* closing while holding: give the record back */
void ring_consumer_flush(ring_t *r); /* end of a batch of releases */
int ring_has_data(ring_t *r);
int ring_consumer_join(ring_t *r);
/* Broadcast: go on from the slot's cursor (an adopted durable subscription,
 * layout.h DURABLE) instead of joining at the tail; RING_OK, or RING_AGAIN
 * on another pattern. */
int ring_consumer_resume(ring_t *r);

/* Reading ahead (ring/ahead.c): a consumer holds many records at once and
 * releases them later, by key (the record's position), so they stay in the
 * ring until settled. peek: the next record after those read ahead, held as
 * ring_peek holds one (RING_OK, or ring_peek's codes); the caller copies it,
 * validates (ring_validate) and then keeps it (keep: 0, or -1 out of
 * memory: it is put back) or puts it back (not taken this time). settle:
 * releases every record read ahead whose key is at most key (*count of
 * them); RING_OK, or RING_LEASE (mpmc: one or more had their lease
 * revoked; the others are settled). drop: the consumer goes away: mpmc
 * records go back to the queue, other patterns' stay where they are; frees
 * the list. free: frees the list only (the mapping is not touched). */
int ring_ahead_peek(ring_t *r, const char **payload, uint64_t *len);
int ring_ahead_keep(ring_t *r);
void ring_ahead_putback(ring_t *r);
int ring_ahead_settle(ring_t *r, uint64_t key, uint64_t *count);
void ring_ahead_drop(ring_t *r);
void ring_ahead_free(ring_t *r);

/* Attach slots (ring/slots.c). used: how many slots a walk of a table of
 * count slots looks at (slot_high, at most count). take: take a free slot
 * for pid by compare-exchange of its pid word; its index, -1 if every slot
 * below limit is taken, -2 for a corrupt slot count (the caller makes sure
 * the pages of the slots below limit are allocated: tmpfs). slots_of: the slots (at most max)
 * whose pid and start time are these; how many. */
uint32_t ring_slots_used(char *base, uint32_t count);
int64_t ring_slot_take(char *base, uint64_t size, uint64_t pid, uint32_t limit);
int ring_slots_of(char *base, uint64_t size, uint64_t pid, uint64_t start, uint32_t *out,
                  int max);

int ring_ready_data(void *r);
int ring_ready_space(void *r);

/* A producer about to wait for room: how often it looks again once asleep
 * (shm_wait's nap_ns; 0: only when woken), and the start of its wait (the
 * quarter it asks for first). ring_space_wait_ends after it. */
int ring_room_to_wake(const ring_t *r); /* spsc, mpsc */
int64_t ring_space_nap_ns(const ring_t *r);
void ring_space_wait_begins(ring_t *r);
void ring_space_wait_ends(ring_t *r);
/* Consumer of spsc or mpsc, after its seq-cst store of head at `head`: wake
 * the producers waiting for room, if any and if enough is free now. */
void ring_notify_room(ring_t *r, uint64_t head);

/* Untethering (ring/untether.c): how often a producer blocked on a lossless
 * broadcast with untether_ns should look again (it decides on its slow
 * path, so it must wake to decide); -1 for never. */
int ring_untether_alloc(ring_t *r); /* after ring_init, for a producer: 0, or -1 (no memory) */
void ring_untether_free(ring_t *r);
int64_t ring_untether_slice_ns(const ring_t *r);

/* Recovery of a dead endpoint's slot, run by any process that has the
 * region mapped, after the slot's process is known to be dead and before
 * the slot is freed. Returns the number of records repaired or handed back,
 * -1 for a corrupt header, or RECOVER_DEFERRED: a producer slot whose linked
 * claim waits for the recovery of its input (ring/link.c); nothing was done,
 * try again later, or with force (its claim is then padded regardless).
 * out_base/out_size: the mapping of the region its slot's link_region names
 * (a dead pipeline worker's: for an input slot, the region its linked outputs
 * went to; for a producer slot, the region of the input), or NULL. */
#define RECOVER_DEFERRED (-3)
/* A durable broadcast subscription (layout.h, DURABLE) within its hold:
 * nothing was done; the caller makes the slot an orphan instead of freeing
 * it (its durable_until is set). With force, an orphan is recovered
 * regardless (its expirer found its hold passed). */
#define RECOVER_ORPHANED (-4)
int ring_recover_slot(char *base, uint64_t size, uint32_t slot, char *out_base,
                      uint64_t out_size, int force);

/* The linked commit (ring/link.c), for a pipeline worker holding a record
 * of an mpmc ring (in) and sending its outputs to out (mpsc or mpmc).
 * begin: counts the attempt in the record's header and starts the link
 * (single: one output completes it; 2: on its first attempt only); item,
 * attempts and done are read from
 * the header. claim/commit/abort: one output, of len payload bytes after its
 * LINK_HDR header (region: the output region's id, for recovery). finish:
 * every output is sent: the input is released. */
int ring_link_begin(ring_t *in, int single, uint64_t *item, uint32_t *attempts, uint32_t *done);
int ring_link_claim(ring_t *out, ring_t *in, uint64_t len, uint64_t item, uint64_t region,
                    char **payload);
int ring_link_commit(ring_t *out, ring_t *in, uint64_t used, int last);
void ring_link_abort(ring_t *out, ring_t *in);
int ring_link_finish(ring_t *in); /* RING_OK or RING_LEASE */
/* Before any output of the input is sent: one output no longer completes it. */
void ring_link_many(ring_t *in);

/* Revocation (mpsc, mpmc), run by the supervisor only. ring_revoke_claim
 * turns the claim in flight of a live producer that has held it too long
 * into a REC_REVOKED record consumers skip, and quarantines its bytes: 1
 * revoked, 0 nothing to revoke (committed, consumed, not blocking, or not
 * surely its own), -2 the quarantine table is full, -1 corrupt header.
 * ring_lift_quarantine frees every entry whose producer is done writing and
 * whose record head has passed, zeroing its bytes: the number freed. */
int ring_revoke_claim(char *base, uint64_t size, uint32_t slot);
int ring_lift_quarantine(char *base, uint64_t size);

/* Leases (mpmc consumers; ring/lease.c), run by the supervisor only.
 * ring_lease_scan lists the records consumers hold (taken, or leased: being
 * handed back) between head and read_claim: up to max positions and words;
 * the count, or -1 for a corrupt header. ring_revoke_lease takes the record
 * at pos from its holder if its word is still word and hands it back to the
 * other consumers (its holder gets RING_LEASE when it resumes): 1 handed
 * back, 2 done (a linked input whose outputs were all sent), 0 not (the word
 * changed: released or taken again), -2 not yet (the holder's output claim
 * cannot be settled now: look again later), -1 corrupt. out_base/out_size:
 * the region the holder's linked outputs go to (a pipeline worker), or NULL. */
int ring_lease_scan(char *base, uint64_t size, uint64_t *pos, uint64_t *word, int max);
int ring_revoke_lease(char *base, uint64_t size, uint64_t pos, uint64_t word, char *out_base,
                      uint64_t out_size);

/* Fed rings (ring/feed.c; layout.h, FEED): a producer that commits keyed
 * records (epoch, seq) and leaves in the header which was committed last.
 * One feed_t per call of _send_fed: begin settles what a dead producer left
 * and says whether the batch is of a new epoch; claim and commit are
 * ring_claim and ring_commit with the FEED words kept; publish makes the
 * batch so far visible (spsc, broadcast: one tail store and one wake-up);
 * end, on the way out, puts the words back if a claim failed. */
typedef struct {
    uint64_t epoch, next; /* this batch's epoch; the key of its next record */
    uint64_t e, p, s;     /* the words E, P (the last committed) and S as we left them */
    int fresh;            /* the next record begins the epoch: it carries a note */
    int first;            /* the claim open is that one (note, then the message) */
    uint64_t note;        /* its note's position */
    int marked;           /* mpsc, mpmc: X names a claim of ours not yet committed */
    int unpublished;      /* spsc, broadcast: records committed since the last publish */
    int pub_new;          /* ... the first of them begins the epoch */
    uint64_t last;        /* ... the key of the last of them */
} feed_t;
#define FEED_STALE (-2) /* ring_feed_begin: first_seq is not past the last committed */
int ring_feed_begin(ring_t *r, feed_t *f, uint64_t epoch, uint64_t first_seq);
int ring_feed_claim(ring_t *r, feed_t *f, uint64_t len, char **payload);
int ring_feed_commit(ring_t *r, feed_t *f, uint64_t len);
void ring_feed_publish(ring_t *r, feed_t *f);
void ring_feed_end(ring_t *r, feed_t *f);
/* A fault injection point for tests (_core._feed_trap): when nonzero, the
 * process stops itself (SIGSTOP) at the ring_feed_trap-th step of the fed
 * protocol from the moment it was set (a step: each store of a FEED word,
 * of tail, of a record word, a claim, a copy), so a test can SIGKILL it at
 * every instant in turn. Zero (never) unless a test sets it. */
extern int ring_feed_trap;
void ring_feed_stop(void);
#define FEED_STEP()                                                                            \
    do {                                                                                       \
        if (ring_feed_trap) ring_feed_stop();                                                  \
    } while (0)
/* The last committed key ((0, 0): never fed). May pause a few milliseconds
 * (mpsc, mpmc: a record being zeroed by a consumer). */
void ring_feed_state(ring_t *r, uint64_t *epoch, uint64_t *seq);

#endif
