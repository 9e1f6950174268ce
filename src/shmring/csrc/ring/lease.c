/*
 * ring/lease.c - consumer leases on mpmc rings: the supervisor's look at
 * which consumer holds which record (ring_lease_scan) and the hand-back of a
 * record held too long by a live consumer (ring_revoke_lease).
 *
 * A consumer stopped (SIGSTOP, a debugger, a deadlock) while it holds a
 * taken record keeps head behind it: the producers stop a ring later and the
 * other consumers starve. Its process sends no event, so the supervisor
 * looks, and a record held by the same slot at the same position for longer
 * than the lease is taken from it:
 *
 *   1. LEASE_BUSY goes up in the holder's slot (SLOT_LEASE), then the word
 *      goes from TAKEN to LEASED by compare-exchange from the word it saw.
 *      From then on the holder's every store to the word fails: its release
 *      (mark_done_and_sweep) and its linked commit are compare-exchanges from
 *      the word it took, so it learns of the revocation (RING_LEASE) and
 *      never marks done, nor damages, a record another consumer holds. A
 *      recv() copying the payload meanwhile finds out at the release that
 *      ends the copy and drops the copy.
 *   2. A pipeline worker's input (its slot's link_in names it) carries the
 *      count of its outputs already committed, as recovery of a dead worker
 *      does (link.c), but the worker is alive and may resume at any
 *      instruction. Its output claim in flight is settled by compare-exchange
 *      of the output's word: revoked (quarantined, as ring_revoke_claim does)
 *      if not committed, counted if committed. The worker publishes link_out
 *      with a seq-cst store and then looks at its input's word (link.c,
 *      ring_link_claim); we exchange the word and then read link_out: one of
 *      the two sees the other, so a claim the worker makes after step 1 is
 *      aborted by the worker itself, and one made before is seen here.
 *   3. The record goes back to the queue (READY, redeliver counted) with the
 *      count in its header, or is done (every output was sent: LINK_COMPLETE,
 *      or LINK_SINGLE and one), then the holder's count of revoked leases
 *      goes up and LEASE_BUSY down: a worker that found its lease revoked
 *      waits for that before it starts a new item (ring_link_begin), so the
 *      link words read in step 2 are still its old item's.
 *
 * A LEASED record found by a later look (a supervisor killed half-way, or a
 * settlement that had to wait) is taken up again from step 2.
 */
#include <string.h>

#include "atomics.h"
#include "ring/internal.h"
#include "wait.h"

#define SETTLE_LATER (-2)

int ring_lease_scan(char *base, uint64_t size, uint64_t *pos, uint64_t *word, int max) {
    ring_t rr, *r = &rr;
    if (ring_init(r, base, size, 0, 0) != RING_OK) return -1;
    if (r->pattern != PATTERN_MPMC) return 0;
    /* SYNC(head), SYNC(read-claim): the records between head and read_claim, as recovery walks
     * them; a record swept meanwhile ends the walk (its word is zero or of another lap). */
    uint64_t q = ld_acq(base, OFF_HEAD), end = ld_acq(base, OFF_READ_CLAIM);
    if (end < q || end - q > r->cap) return 0; /* moving under us: look next time */
    int n = 0;
    while (q < end && n < max) {
        /* SYNC(mpmc-take): acquire of a word consumers take and release by compare-exchange. */
        uint64_t w = ld_acq(base, WORD_OFF(r, q));
        if (rec_len(w) <= 0 || check_record(r, q, w, 0) != RING_OK) break;
        uint32_t st = rec_state(w), owner = rec_owner(w);
        if ((st == ST_TAKEN || st == ST_LEASED) && rec_type(w) == REC_MSG && owner >= 1 &&
            owner <= r->slot_count) {
            pos[n] = q;
            word[n] = w;
            n++;
        }
        q += align_up((uint64_t)rec_len(w), RECORD_ALIGN);
    }
    return n;
}

/* Was the output at q committed (or consumed since)? As link.c's
 * out_committed: called only while the claim cannot change any more. */
static int out_done(ring_t *o, uint64_t q) {
    /* SYNC(commit), SYNC(zero): acquire of the output's word; pairs with its publication in
     * ring_commit and with a consumer's zeroing of it (zero_record). */
    uint64_t w = ld_acq(o->base, WORD_OFF(o, q));
    if (w == 0 || rec_lap(w) != LAP(o, q)) return 1;
    if (rec_len(w) < 0) return 0;
    return rec_type(w) == REC_MSG;
}

/* The worker's output claimed at q, in producer slot oslot of the output
 * ring: 1 committed, 0 not (revoked here, or aborted), SETTLE_LATER when it
 * cannot be told now (the quarantine is full, or the worker is stopped in
 * the one instruction between dropping its confirmed flag and committing). */
static int settle_out(ring_t *o, uint32_t oslot, uint64_t q) {
    /* SYNC(claim-word): acquire of the output's word; pairs with the producer's compare-exchanges
     * of it in ring_claim and ring_commit. */
    uint64_t w = ld_acq(o->base, WORD_OFF(o, q));
    if (w != 0 && rec_len(w) < 0 && rec_lap(w) == LAP(o, q)) {
        int rc = revoke_claim_in(o->base, o->size, oslot, q);
        if (rc == 1) return 0;
        if (rc == -2) return SETTLE_LATER;
        /* SYNC(claim-word): not revoked: committed meanwhile, or not surely claimed. */
        w = ld_acq(o->base, WORD_OFF(o, q));
        if (w != 0 && rec_len(w) < 0 && rec_lap(w) == LAP(o, q)) return SETTLE_LATER;
    }
    return out_done(o, q);
}

/* Step 2 for a linked input at pos of slot so: the outputs committed, and
 * whether they complete it; SETTLE_LATER, or 0. */
static int settle_link(ring_t *r, uint64_t so, char *out_base, uint64_t out_size,
                       uint64_t *count, int *complete) {
    char *base = r->base;
    /* SYNC(lease): after our exchange of the input's word; pairs with ring_link_claim's seq-cst
     * store of link_out. */
    uint64_t q1 = ld_sc(base, so + SLOT_LINK_OUT) & ~LINK_RESOLVING;
    /* SYNC(link): pairs with the worker's release stores of its count (link.c). */
    uint64_t d0 = ld_acq(base, so + SLOT_LINK_DONE);
    uint32_t oslot = (uint32_t)((d0 >> LINK_SLOT_SHIFT) & LINK_SLOT_MASK);
    int c1 = 0;
    if (q1) {
        ring_t o;
        if (!out_base || ring_init(&o, out_base, out_size, 0, 0) != RING_OK || oslot < 1 ||
            oslot > o.slot_count || !o.multi_producer)
            return SETTLE_LATER; /* its state cannot be read: it could still be committed */
        c1 = settle_out(&o, oslot - 1, q1 - 1);
        if (c1 == SETTLE_LATER) return SETTLE_LATER;
    }
    /* The claim at q1 cannot change any more, and no later claim can be
     * committed (the worker sees its input gone first). Now the count: */
    /* SYNC(link): the count after the settlement, then link_out again. */
    uint64_t d = ld_acq(base, so + SLOT_LINK_DONE);
    /* SYNC(link): link_out again: if it moved, the worker went past q1 (committed and counted,
     * or aborted and not), and the count says which. */
    uint64_t q1b = ld_acq(base, so + SLOT_LINK_OUT) & ~LINK_RESOLVING;
    uint64_t n = d & LINK_COUNT_MASK;
    if (q1 && q1b == q1 && !(d & LINK_COUNTED)) n += (uint64_t)c1;
    *count = n;
    *complete = (d & LINK_COMPLETE) || ((d & LINK_SINGLE) && n >= 1);
    return 0;
}

static void set_busy(char *base, uint64_t so) {
    /* SYNC(lease-busy): the flag goes up before the word is exchanged; pairs with the worker's
     * look at it in ring_link_begin. */
    uint64_t v = ld_sc(base, so + SLOT_LEASE);
    /* SYNC(lease-busy): as above. */
    while (!(v & LEASE_BUSY) && !cas_sc(base, so + SLOT_LEASE, &v, v | LEASE_BUSY)) {
    }
}

/* One more lease revoked from the slot, and the flag down. */
static void settled(char *base, uint64_t so, int counted) {
    /* SYNC(lease-busy): pairs with the worker's look at the flag in ring_link_begin. */
    uint64_t v = ld_sc(base, so + SLOT_LEASE);
    uint64_t nv;
    do {
        nv = ((v & LEASE_COUNT_MASK) + (counted ? 1 : 0)) & LEASE_COUNT_MASK;
        /* SYNC(lease-busy): as above. */
    } while (!cas_sc(base, so + SLOT_LEASE, &v, nv));
}

int ring_revoke_lease(char *base, uint64_t size, uint64_t pos, uint64_t word, char *out_base,
                      uint64_t out_size) {
    ring_t rr, *r = &rr;
    if (ring_init(r, base, size, 0, 0) != RING_OK) return -1;
    uint32_t owner = rec_owner(word), st = rec_state(word);
    if (r->pattern != PATTERN_MPMC || pos % RECORD_ALIGN || owner < 1 || owner > r->slot_count ||
        rec_type(word) != REC_MSG || rec_len(word) <= 0 || rec_lap(word) != LAP(r, pos) ||
        (st != ST_TAKEN && st != ST_LEASED))
        return 0;
    if (ring_init(r, base, size, owner - 1, 0) != RING_OK) return -1;
    uint64_t so = r->slot_off;
    uint64_t leased = rec_with_state(word, ST_LEASED, owner);
    set_busy(base, so);
    if (st == ST_TAKEN) {
        uint64_t w = word;
        /* SYNC(lease), SYNC(mpmc-take): the lease is ours from the word we saw; pairs with the
         * holder's compare-exchanges of it (mark_done_and_sweep) and its look at it
         * (ring_link_claim, ring_link_begin). */
        if (!cas_sc(base, WORD_OFF(r, pos), &w, leased)) {
            settled(base, so, 0); /* released or moved on meanwhile: not stuck */
            return 0;
        }
    }
    uint64_t count = 0;
    int complete = 0, linked = 0;
    /* SYNC(link): acquire of the holder's link; pairs with its release in ring_link_begin. */
    if (ld_acq(base, so + SLOT_LINK_IN) == pos + 1 &&
        (uint64_t)rec_len(word) >= RECORD_HEADER + LINK_HDR) {
        if (settle_link(r, so, out_base, out_size, &count, &complete) == SETTLE_LATER)
            return -2; /* stays LEASED and busy: the next look takes it up again */
        linked = 1;
    }
    uint64_t w = leased;
    if (linked && complete) {
        /* SYNC(mpmc-take): every output went out: the input is done. */
        if (cas_sc(base, WORD_OFF(r, pos), &w, rec_with_state(word, ST_DONE, owner))) {
            /* Swept as its holder: head moves on at once. A holder that
             * resumes inside a sweep of its own only races on its slot's
             * sweep intent, which matters if one of the two dies there. */
            ring_sweep(r);
        }
        settled(base, so, 1);
        shm_notify(base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS);
        return 2;
    }
    if (linked) {
        uint32_t c = (uint32_t)count;
        memcpy(r->data + (pos & r->mask) + RECORD_HEADER + LINK_HDR_DONE, &c, 4);
    }
    /* SYNC(mpmc-take): back to the queue, after the count (a taker's acquire of the word sees
     * it). */
    if (cas_sc(base, WORD_OFF(r, pos), &w, rec_with_state(word, ST_READY, 0))) {
        /* SYNC(redeliver): see take_redelivered. */
        fadd_sc(base, OFF_REDELIVER, 1);
    }
    settled(base, so, 1);
    shm_notify(base, OFF_DATA_FUTEX, OFF_DATA_WAITERS);
    return 1;
}
