/*
 * ring/ahead.c - reading ahead: a consumer that holds many records at once
 * and settles them later by key (the record's position in the stream), so
 * that each stays in the ring until it is settled. An exporting bridge reads
 * a window of records, sends them to the remote host, and settles what the
 * remote acknowledges: a cut link or a killed bridge loses nothing, since
 * the next consumer reads the unsettled records again.
 *
 * Per pattern:
 *   spsc, mpsc  head stays at the oldest unsettled record; the ring_t's
 *               cursor reads on past it. Padding read past is not zeroed
 *               (mpsc) until head passes it: a zero word at head would stop
 *               the consumer that reads from head after us. Settling moves
 *               head (zeroing what it passes, mpsc) and wakes producers.
 *   broadcast   likewise with the slot's cursor (the gate of a lossless
 *               producer). A validating reader (lossy, or untethered) keeps
 *               validated copies only, counts what it missed when it reads,
 *               and may have jumped ahead: the slot's cursor never moves
 *               back.
 *   mpmc        each record is taken (TAKEN, owned by this slot) as a held
 *               one is, many at once; settling marks them DONE and sweeps
 *               once. A record whose lease was revoked meanwhile fails its
 *               compare-exchange (RING_LEASE) and is left to its new holder.
 *               Recovery of a dead consumer hands back every record its slot
 *               owns, however many (ring/recover.c walks head..read_claim).
 *
 * Only the consumer's own thread (under the GIL) uses this list; the shared
 * words it moves are the ones a release moves, with the same orderings.
 */
#include <stdlib.h>
#include <string.h>

#include "atomics.h"
#include "ring/internal.h"
#include "wait.h"

struct ring_ahead {
    uint64_t pos;  /* the record's position: its key */
    uint64_t word; /* its record word as read (mpmc: as taken) */
    uint64_t len;  /* payload bytes (for the slot's statistics) */
};

#define AHEAD_MIN 64u

/* Room for one more entry at the end of the list: 0, or -1 (no memory). */
static int room(ring_t *r) {
    if (r->ahead_first + r->ahead_n < r->ahead_cap) return 0;
    if (r->ahead_first > 0) {
        memmove(r->ahead_buf, r->ahead_buf + r->ahead_first, r->ahead_n * sizeof(*r->ahead_buf));
        r->ahead_first = 0;
        return 0;
    }
    uint64_t cap = r->ahead_cap ? r->ahead_cap * 2 : AHEAD_MIN;
    struct ring_ahead *b = realloc(r->ahead_buf, cap * sizeof(*b));
    if (!b) return -1;
    r->ahead_buf = b;
    r->ahead_cap = cap;
    return 0;
}

/* spsc, mpsc, broadcast: everything before `to` is settled. Head (or the
 * slot's cursor) moves there and producers are woken once. */
static void settle_to(ring_t *r, uint64_t to) {
    if (r->pattern == PATTERN_SPSC || r->pattern == PATTERN_MPSC) {
        uint64_t h = ld_rlx(r->base, OFF_HEAD); /* ours: no one else moves it */
        if (h >= to) return;
        if (r->pattern == PATTERN_MPSC) {
            /* What head passes is zeroed, as peek_mpsc and ring_release do:
             * the records settled and the padding between them (a revoked
             * claim is left to the supervisor, see "revocation"). Their
             * words were read with acquire when they were read ahead. */
            for (uint64_t q = h; q < to;) {
                uint64_t w = ld_rlx(r->base, WORD_OFF(r, q));
                if (rec_len(w) < (int32_t)RECORD_HEADER) break; /* cannot be: read already */
                uint64_t alen = align_up((uint64_t)rec_len(w), RECORD_ALIGN);
                if (rec_type(w) != REC_REVOKED) zero_record(r, q, alen);
                q += alen;
            }
        }
        /* SYNC(head): Pairs with the producer's acquire load of head in gate(): our reads (and
         * zeroing) of the freed bytes happen before it reuses them. */
        st_sc(r->base, OFF_HEAD, to);
        /* SYNC(waiters): after the seq-cst store of head: no fence needed (shm_notify_sc). */
        shm_notify_sc(r->base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS);
    } else if (r->pattern == PATTERN_BROADCAST) {
        /* Ours too; a validating reader's jump (or its retether) may have
         * stored one past `to` already: never back. */
        if (ld_rlx(r->base, r->slot_off + SLOT_CURSOR) >= to) return;
        /* SYNC(cursor): Pairs with the producer's acquire load of our cursor in gate(). */
        st_sc(r->base, r->slot_off + SLOT_CURSOR, to);
        /* SYNC(waiters): after the seq-cst store of the cursor (shm_notify_sc). */
        if (!r->lossy) shm_notify_sc(r->base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS);
    }
}

int ring_ahead_peek(ring_t *r, const char **payload, uint64_t *len) {
    r->ahead = 1;
    int rc = ring_peek(r, payload, len);
    r->ahead = 0;
    /* Nothing kept and padding read past: head follows at once, so that
     * with nothing read ahead the ring is as a plain reader leaves it. */
    if (rc != RING_OK && r->ahead_n == 0) settle_to(r, r->cursor);
    return rc;
}

int ring_ahead_keep(ring_t *r) {
    if (!r->held) return 0;
    if (room(r) < 0) {
        ring_ahead_putback(r);
        return -1;
    }
    struct ring_ahead *e = &r->ahead_buf[r->ahead_first + r->ahead_n++];
    e->pos = r->held_pos;
    e->word = r->held_word;
    e->len = r->held_len;
    r->held = 0;
    if (r->pattern != PATTERN_MPMC) r->cursor = r->held_pos + r->held_alen;
    if (r->validating) ring_count_missed(r);
    return 0;
}

void ring_ahead_putback(ring_t *r) {
    if (!r->held) return;
    if (r->pattern == PATTERN_MPMC) ring_unhold(r); /* back to the queue */
    else r->held = 0;                               /* the cursor is still at it */
    if (r->ahead_n == 0) settle_to(r, r->cursor);
}

int ring_ahead_settle(ring_t *r, uint64_t key, uint64_t *count) {
    uint64_t n = 0;
    int lost = 0;
    struct ring_ahead *b = r->ahead_buf + r->ahead_first;
    if (r->pattern == PATTERN_MPMC) {
        /* Positions of records handed back (redelivered) may be below those
         * taken before them: every entry is looked at. */
        uint64_t kept = 0;
        for (uint64_t i = 0; i < r->ahead_n; i++) {
            if (b[i].pos > key) {
                b[kept++] = b[i];
                continue;
            }
            uint64_t w = b[i].word;
            /* SYNC(done-sweep), SYNC(mpmc-take): as mark_done_and_sweep (consume.c): a seq-cst
             * compare-exchange from the word we took, paired with the sweepers' seq-cst store of
             * head and load of this word; it fails if the supervisor revoked our lease. */
            if (cas_sc(r->base, WORD_OFF(r, b[i].pos), &w,
                       rec_with_state(b[i].word, ST_DONE, r->slot + 1))) {
                n++;
                r->messages++;
                r->bytes += b[i].len;
            } else {
                lost = 1; /* another consumer's now: not counted */
            }
        }
        r->ahead_n = kept;
        if (kept == 0) r->ahead_first = 0;
        if (n) ring_sweep(r); /* one sweep, one wake-up, for all of them */
    } else {
        uint64_t end = 0;
        while (n < r->ahead_n && b[n].pos <= key) {
            end = b[n].pos + align_up((uint64_t)rec_len(b[n].word), RECORD_ALIGN);
            r->messages++;
            r->bytes += b[n].len;
            n++;
        }
        r->ahead_first += n;
        r->ahead_n -= n;
        if (r->ahead_n == 0) {
            r->ahead_first = 0;
            end = r->cursor; /* the padding read past after the last one too */
        }
        if (n) settle_to(r, end);
    }
    if (n) {
        st_rlx(r->base, r->slot_off + SLOT_MESSAGES, r->messages);
        st_rlx(r->base, r->slot_off + SLOT_BYTES, r->bytes);
    }
    *count = n;
    return lost ? RING_LEASE : RING_OK;
}

void ring_ahead_drop(ring_t *r) {
    if (r->pattern == PATTERN_MPMC && r->ahead_n) {
        /* Handed back as ring_unhold hands back a held record. */
        int any = 0;
        struct ring_ahead *b = r->ahead_buf + r->ahead_first;
        for (uint64_t i = 0; i < r->ahead_n; i++) {
            uint64_t w = b[i].word;
            /* SYNC(mpmc-take): the record word is handed between consumers, sweepers and recovery
             * by compare-exchange (mpmc); pairs with the other compare-exchanges of it (peek_mpmc,
             * take_redelivered, sweep, ring_unhold, ring_recover_slot). */
            if (cas_sc(r->base, WORD_OFF(r, b[i].pos), &w, rec_with_state(w, ST_READY, 0))) {
                /* SYNC(redeliver): see take_redelivered (consume.c). */
                fadd_sc(r->base, OFF_REDELIVER, 1);
                any = 1;
            }
        }
        if (any) shm_notify(r->base, OFF_DATA_FUTEX, OFF_DATA_WAITERS);
    }
    ring_ahead_free(r);
}

void ring_ahead_free(ring_t *r) {
    free(r->ahead_buf);
    r->ahead_buf = NULL;
    r->ahead_first = r->ahead_n = r->ahead_cap = 0;
}
