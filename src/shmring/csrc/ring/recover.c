/*
 * ring/recover.c - recovery of a dead endpoint's slot (ring_recover_slot):
 * a producer's claim in flight becomes padding, a consumer's taken records
 * go back to the queue, a sweep it started is finished. Run by whoever has
 * the region mapped, once the slot's process is known dead.
 */
#include <time.h>

#include "atomics.h"
#include "ring/internal.h"
#include "wait.h"

static int other_live_claim(char *base, uint32_t nslots, uint32_t dead, uint64_t pos) {
    for (uint32_t i = 0; i < nslots; i++) {
        if (i == dead) continue;
        uint64_t so = SLOTS_OFFSET + (uint64_t)i * SLOT_SIZE;
        /* SYNC(slot-pid): acquire of a slot's pid; pairs with its compare-exchange by _core.cas
         * (py/module.c m_cas) in shmring/_region (attach, recovery). */
        if (ld_acq(base, so + SLOT_PID) == 0) continue;
        /* SYNC(claim-intent): pairs with the release stores of the slot's claim position and
         * length in ring_claim (and their reset on commit, abort and revocation). */
        if (ld_acq(base, so + SLOT_CLAIM_POS) == pos) return 1;
    }
    return 0;
}

static void pause_ms(long ms) {
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* Pads [q, end) of a dead producer's claim: the first word by
 * compare-exchange from what we saw (so a record written meanwhile is left
 * alone), the rest plainly (inside the claim nobody else writes), cut at
 * the end of the ring. */
static int pad_rest(ring_t *r, uint64_t q, uint64_t end, uint64_t seen) {
    uint64_t room = r->cap - (q & r->mask);
    uint64_t n = end - q < room ? end - q : room;
    st_rlx(r->base, SEQ_OFF(r, q), q);
    /* SYNC(pad), SYNC(revoke): the padding's word, from what we saw; pairs with the consumers'
     * acquire of the word. */
    if (!cas_sc(r->base, WORD_OFF(r, q), &seen,
                rec_word((int32_t)n, REC_PAD, 0, 0, LAP(r, q))))
        return 0;
    for (q += n; q < end; q += n) {
        room = r->cap - (q & r->mask);
        n = end - q < room ? end - q : room;
        put_pad(r, q, n);
    }
    return 1;
}

/* A dead producer's claim in flight (mpsc, mpmc). Its slot says where:
 * position and length, confirmed once its exchange of tail won. The part of
 * the claim not committed becomes padding so consumers go on.
 *
 * A zero word is ambiguous for a moment: it may be a claim nobody wrote, or
 * a record a consumer has just read and zeroed before advancing head, or
 * (unconfirmed claim) the position another producer won and is about to
 * write. Those last a few instructions; a zero that is still there after a
 * short pause, with head not past it, is the dead claim's. */
static int recover_claim(ring_t *r, uint32_t slot) {
    char *base = r->base;
    uint64_t so = r->slot_off;
    /* SYNC(claim-intent): pairs with the release stores of the slot's claim position and length in
     * ring_claim (and their reset on commit, abort and revocation). */
    uint64_t p = ld_acq(base, so + SLOT_CLAIM_POS);
    uint64_t raw = ld_acq(base, so + SLOT_CLAIM_LEN);
    int confirmed = (raw & CLAIM_CONFIRMED) != 0;
    uint64_t L = raw & ~CLAIM_CONFIRMED, end = p + L;
    if (p == CLAIM_NONE || L < RECORD_HEADER || L > r->cap || L % RECORD_ALIGN) return 0;
    /* SYNC(tail-claim): acquire of tail; pairs with the claims' compare-exchange of tail in
     * ring_claim. */
    if (ld_acq(base, OFF_TAIL) < end) return 0; /* the exchange never happened */
    for (int attempt = 0; attempt < 4; attempt++) {
        /* SYNC(head): acquire of head; pairs with the seq-cst stores of head by the consumer
         * (free_to) or a sweeper (sweep, recovery), made after the freed bytes were read and
         * zeroed. */
        uint64_t h = ld_acq(base, OFF_HEAD);
        if (h >= end) return 0; /* all of it consumed */
        uint64_t q = h > p ? h : p;
        uint64_t w = 0;
        while (q < end) { /* step over what is committed */
            /* SYNC(commit), SYNC(claim-word): acquire of the record word; pairs with the dead
             * producer's compare-exchanges of it in ring_claim and ring_commit. */
            w = ld_acq(base, WORD_OFF(r, q));
            if (w == 0 || rec_len(w) < 0) break;
            uint64_t a = align_up((uint64_t)rec_len(w), RECORD_ALIGN);
            if (rec_lap(w) != LAP(r, q) || q + a > end) return 0; /* not our claim */
            q += a;
        }
        if (q >= end) return 0; /* committed in full */
        if (rec_len(w) < 0) {
            /* A claimed, uncommitted record: the claimer writes it only
             * after confirming, so it is ours if we confirmed, or if we
             * dropped the flag to commit and nobody else claims it. */
            if (!confirmed && other_live_claim(base, ring_slots_used(base, r->slot_count), slot, p)) return 0;
            return pad_rest(r, q, end, w);
        }
        if (attempt < 3) {
            pause_ms(2);
            continue;
        }
        if (!confirmed && other_live_claim(base, ring_slots_used(base, r->slot_count), slot, p)) return 0;
        /* SYNC(head): acquire of head; pairs with the seq-cst stores of head by the consumer
         * (free_to) or a sweeper (sweep, recovery), made after the freed bytes were read and
         * zeroed. */
        if (ld_acq(base, OFF_HEAD) > q) return 0;
        return pad_rest(r, q, end, 0);
    }
    return 0;
}

static uint64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A durable subscription (layout.h, DURABLE) that had joined outlives its
 * holder until durable_until: set now (now + hold) if this is the first
 * recovery since it was taken. True while that deadline has not passed: the
 * slot is left as it is, gating the producer with its cursor. */
static int held_durable(ring_t *r) {
    char *base = r->base;
    uint64_t so = r->slot_off;
    /* SYNC(slot-pid): the hold was stored by its holder before it joined (and the pid we won
     * by compare-exchange was stored before that). */
    uint64_t hold = ld_acq(base, so + SLOT_DURABLE_HOLD);
    /* SYNC(slot-state): pairs with the seq-cst stores of the state (join, untether). */
    uint32_t st = ld32_acq(base, so + SLOT_STATE);
    if (!hold || r->lossy || (st != SLOT_ACTIVE && st != SLOT_UNTETHERED)) return 0;
    uint64_t now = monotonic_ns();
    /* SYNC(durable): only the recoverer (holding SLOT_RECOVERING) writes it; pairs with the
     * acquire loads of it by expirers after the orphan word was published. */
    uint64_t until = ld_acq(base, so + SLOT_DURABLE_UNTIL);
    if (until == 0) {
        until = now + hold < now ? UINT64_MAX : now + hold;
        /* SYNC(durable): before the orphan word (the caller's seq-cst store of the pid). */
        st_sc(base, so + SLOT_DURABLE_UNTIL, until);
    }
    return now < until;
}

int ring_recover_slot(char *base, uint64_t size, uint32_t slot, char *out_base,
                      uint64_t out_size, int force) {
    ring_t rr, *r = &rr;
    if (ring_init(r, base, size, slot, 0) != RING_OK) return -1;
    uint64_t so = r->slot_off;
    /* SYNC(slot-state): acquire of a slot's role and state; pairs with the seq-cst stores of the
     * state in ring_consumer_join and recovery, and of role and state by _core.store32
     * (py/module.c m_store32) in shmring/_region and shmring/_channel. */
    uint32_t role = ld32_acq(base, so + SLOT_ROLE);
    int fixed = 0;
    /* SYNC(link-mark): a linked claim waits for its input's recovery (ring/link.c); pairs with
     * its release in ring_link_claim and its clearing in link_recover. */
    if (role == ROLE_PRODUCER && r->multi_producer && ld_acq(base, so + SLOT_LINK_IN) != 0) {
        if (!force || link_force(r, out_base, out_size) == RECOVER_DEFERRED)
            return RECOVER_DEFERRED;
    }
    if (role == ROLE_PRODUCER && r->multi_producer) {
        /* A fed ring whose words wait for this claim learns first that it will not commit.
         * SYNC(claim-intent): pairs with the release of the position in ring_claim. */
        feed_claim_lost(r, ld_acq(base, so + SLOT_CLAIM_POS));
        fixed += recover_claim(r, slot);
        /* SYNC(claim-intent), SYNC(sweep-intent): the dead endpoint has nothing in flight any
         * more: pairs with the acquire loads of the position (recovery, revocation). */
        st_rel(base, so + SLOT_CLAIM_POS, CLAIM_NONE);
        /* Dead, it writes no more into claims revoked from it. */
        for (uint32_t i = 0; i < QUAR_ENTRIES; i++) {
            uint64_t e = OFF_QUAR_ENTRIES + (uint64_t)i * QUAR_ENTRY;
            /* SYNC(quar-entry): acquire of an entry's length before its other words; pairs with
             * its release in ring_revoke_claim (published after position and flags). */
            if (ld_acq(base, e + QUAR_LEN) &&
                ((ld_acq(base, e + QUAR_FLAGS) >> QUAR_OWNER_SHIFT) & QUAR_OWNER_MASK) ==
                    slot + 1) {
                quar_set_done(base, e);
                fixed++;
            }
        }
        if (fixed) shm_notify(base, OFF_DATA_FUTEX, OFF_DATA_WAITERS);
    }
    if (role == ROLE_CONSUMER && r->pattern == PATTERN_MPMC) {
        /* SYNC(sweep-intent): acquire of the dead consumer's sweep intent; pairs with its release
         * in sweep(). Finish a sweep the dead consumer started. */
        uint64_t p = ld_acq(base, so + SLOT_CLAIM_POS);
        uint64_t L = ld_acq(base, so + SLOT_CLAIM_LEN);
        /* SYNC(head): acquire of head; pairs with the seq-cst stores of head by the consumer
         * (free_to) or a sweeper (sweep, recovery), made after the freed bytes were read and
         * zeroed. */
        if (p != CLAIM_NONE && ld_acq(base, OFF_HEAD) == p && L >= RECORD_HEADER &&
            (p & r->mask) + L <= r->cap) {
            /* SYNC(mpmc-take): the word the dead sweeper marked by compare-exchange. */
            if (rec_type(ld_acq(base, WORD_OFF(r, p))) != REC_REVOKED) zero_record(r, p, L);
            /* SYNC(head): as sweep() stores it; pairs with the acquire loads of head (gate). */
            st_sc(base, OFF_HEAD, p + L);
            fixed++;
        }
        /* SYNC(claim-intent), SYNC(sweep-intent): the dead endpoint has nothing in flight any
         * more: pairs with the acquire loads of the position (recovery, revocation). */
        st_rel(base, so + SLOT_CLAIM_POS, CLAIM_NONE);
        /* SYNC(read-claim): read_claim moves by compare-exchange only (peek_mpmc,
         * ring_recover_slot); this pairs with those. It may have died between taking the record at
         * read_claim and moving read_claim on: move it on for it (as any consumer's help step
         * would), so that record is below read_claim like every other taken one. The lap check
         * rejects a word of another lap. */
        uint64_t rc0 = ld_acq(base, OFF_READ_CLAIM);
        /* SYNC(mpmc-take): the record word is handed between consumers, sweepers and recovery by
         * compare-exchange (mpmc); pairs with the other compare-exchanges of it (peek_mpmc,
         * take_redelivered, sweep, ring_unhold, ring_recover_slot). */
        uint64_t w0 = ld_acq(base, WORD_OFF(r, rc0));
        if (rec_len(w0) > 0 && check_record(r, rc0, w0, 0) == RING_OK &&
            rec_owner(w0) == slot + 1 && rec_state(w0) == ST_TAKEN) {
            uint64_t e = rc0;
            /* SYNC(read-claim): as peek_mpmc's help step. */
            cas_sc(base, OFF_READ_CLAIM, &e, rc0 + align_up((uint64_t)rec_len(w0), RECORD_ALIGN));
        }
        /* SYNC(head), SYNC(read-claim): the records between head and read_claim. Hand back every
         * record it had taken and not finished. */
        uint64_t q = ld_acq(base, OFF_HEAD), end = ld_acq(base, OFF_READ_CLAIM);
        while (q < end) {
            /* SYNC(mpmc-take): the record word is handed between consumers, sweepers and recovery
             * by compare-exchange (mpmc); pairs with the other compare-exchanges of it (peek_mpmc,
             * take_redelivered, sweep, ring_unhold, ring_recover_slot). */
            uint64_t w = ld_acq(base, WORD_OFF(r, q));
            if (rec_len(w) <= 0 || check_record(r, q, w, 0) != RING_OK) break;
            uint64_t a = align_up((uint64_t)rec_len(w), RECORD_ALIGN);
            uint32_t st = rec_state(w);
            if (rec_owner(w) == slot + 1 && (st == ST_TAKEN || st == ST_SWEEP)) {
                int link = LINK_NONE;
                if (st == ST_TAKEN && rec_type(w) == REC_MSG &&
                    (uint64_t)rec_len(w) >= RECORD_HEADER + LINK_HDR)
                    link = link_recover(r, slot, q, out_base, out_size);
                if (rec_type(w) != REC_MSG || st == ST_SWEEP || link == LINK_DONE) {
                    uint64_t nw = rec_with_state(w, ST_DONE, slot + 1);
                    /* SYNC(mpmc-take): hand it back (or finish it) by compare-exchange. */
                    if (cas_sc(base, WORD_OFF(r, q), &w, nw)) fixed++;
                } else {
                    uint64_t nw = rec_with_state(w, ST_READY, 0);
                    /* SYNC(mpmc-take): hand it back (or finish it) by compare-exchange. */
                    if (cas_sc(base, WORD_OFF(r, q), &w, nw)) {
                        /* SYNC(redeliver): see take_redelivered. */
                        fadd_sc(base, OFF_REDELIVER, 1);
                        fixed++;
                    }
                }
            }
            q += a;
        }
        /* Records now done at head need a sweep; do it as this slot. */
        ring_sweep(r);
        /* SYNC(claim-intent), SYNC(sweep-intent): the dead endpoint has nothing in flight any
         * more: pairs with the acquire loads of the position (recovery, revocation). */
        st_rel(base, so + SLOT_CLAIM_POS, CLAIM_NONE);
        shm_notify(base, OFF_DATA_FUTEX, OFF_DATA_WAITERS);
    }
    /* force: an expired orphan (its expirer decided by its own clock). */
    if (role == ROLE_CONSUMER && r->pattern == PATTERN_BROADCAST && !force && held_durable(r))
        return RECOVER_ORPHANED;
    if (role == ROLE_CONSUMER && r->pattern == PATTERN_BROADCAST) {
        /* SYNC(slot-state): pairs with gate()'s acquire of the state. Its cursor stops gating the
         * producer. */
        st32_sc(base, so + SLOT_STATE, SLOT_CLOSING);
        shm_notify(base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS);
        fixed++;
    }
    uint64_t owner = slot + 1;
    uint64_t e = owner;
    /* SYNC(owner): the dead endpoint's role is free again; pairs with the compare-exchange that
     * took it, _core.cas (py/module.c m_cas) in shmring/_channel. */
    if (cas_sc(base, OFF_PRODUCER_OWNER, &e, 0)) fixed++;
    e = owner;
    if (cas_sc(base, OFF_CONSUMER_OWNER, &e, 0)) fixed++;
    return fixed;
}
