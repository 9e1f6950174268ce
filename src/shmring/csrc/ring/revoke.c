/*
 * ring/revoke.c - revocation of a stuck producer's claim and the quarantine
 * of its bytes (mpsc, mpmc): the supervisor's ring_revoke_claim and
 * ring_lift_quarantine, and the producer's side when it finds its claim
 * revoked.
 */
#include <string.h>

#include "atomics.h"
#include "ring/internal.h"
#include "wait.h"

/*
 * A producer stopped (SIGSTOP, a debugger, a deadlock) while holding a claim
 * blocks every consumer of an mpsc or mpmc ring at that claim. After a
 * timeout the supervisor revokes it (ring_revoke_claim): it writes a
 * REC_REVOKED record over the claim, which consumers skip as padding. The
 * stopped process may resume at any instruction of its claim, copy or
 * commit, so two rules keep it harmless:
 *
 * - every store it makes to the record word is a compare-exchange from the
 *   value it expects (zero, then its claimed word): against REC_REVOKED both
 *   fail, and it learns of the revocation (RING_REVOKED, raised as
 *   ClaimRevoked) instead of committing into bytes consumers have passed;
 * - the claim's bytes are quarantined: producers are gated at the claim's
 *   start plus one ring, and consumers never zero a REC_REVOKED word, until
 *   the producer is done writing (it saw the revocation and set QUAR_DONE,
 *   or it died and recovery set it) and head has passed the record. Then the
 *   supervisor zeroes the bytes and frees the entry (ring_lift_quarantine).
 *   Without the quarantine, a later lap could reuse the bytes and the
 *   resumed copy would overwrite another message, or its compare-exchange
 *   would find a zero word again and succeed.
 *
 * Consumers go on at once; producers go on for up to one more ring of data
 * while the stopped process stays stopped.
 */
static uint64_t quar_entry(char *base, uint64_t pos, uint32_t owner) {
    for (uint32_t i = 0; i < QUAR_ENTRIES; i++) {
        uint64_t e = OFF_QUAR_ENTRIES + (uint64_t)i * QUAR_ENTRY;
        /* SYNC(quar-entry): acquire of an entry's length before its other words; pairs with its
         * release in ring_revoke_claim (published after position and flags). */
        if (!ld_acq(base, e + QUAR_LEN) || ld_acq(base, e + QUAR_POS) != pos) continue;
        if (((ld_acq(base, e + QUAR_FLAGS) >> QUAR_OWNER_SHIFT) & QUAR_OWNER_MASK) != owner)
            continue;
        return e;
    }
    return 0;
}

void quar_set_done(char *base, uint64_t e) {
    /* SYNC(quar-done): QUAR_DONE by compare-exchange (the owner bits stay); pairs with the acquire
     * of the flags in ring_lift_quarantine: the producer writes nothing into the claim after
     * this. */
    uint64_t f = ld_acq(base, e + QUAR_FLAGS);
    while (!(f & QUAR_DONE) && !cas_sc(base, e + QUAR_FLAGS, &f, f | QUAR_DONE)) {
    }
}


/* Our claim at start lost its record word: the supervisor revoked it. We
 * write nothing more into it; saying so lets the supervisor lift it. */
int claim_revoked(ring_t *r, uint64_t start) {
    r->claimed = 0;
    feed_claim_lost(r, start); /* before the supervisor may lift (zero) it */
    uint64_t e = quar_entry(r->base, start, r->slot + 1);
    /* SYNC(claim-intent): no claim in flight any more. */
    st_rel(r->base, r->slot_off + SLOT_CLAIM_POS, CLAIM_NONE);
    if (!e) return corrupt(r, "a claimed record word was overwritten");
    quar_set_done(r->base, e);
    return RING_REVOKED;
}

int ring_revoke_claim(char *base, uint64_t size, uint32_t slot) {
    return revoke_claim_in(base, size, slot, CLAIM_NONE);
}

int revoke_claim_in(char *base, uint64_t size, uint32_t slot, uint64_t linked_at) {
    ring_t rr, *r = &rr;
    if (ring_init(r, base, size, slot, 0) != RING_OK) return -1;
    uint64_t so = r->slot_off;
    /* SYNC(slot-state): acquire of a slot's role and state; pairs with the seq-cst stores of the
     * state in ring_consumer_join and recovery, and of role and state by _core.store32
     * (py/module.c m_store32) in shmring/_region and shmring/_channel. */
    if (!r->multi_producer || ld32_acq(base, so + SLOT_ROLE) != ROLE_PRODUCER) return 0;
    /* SYNC(link-mark): a linked claim is never revoked for its own sake (ring/link.c), only for
     * its input's lease (linked_at: ring/lease.c); pairs with its release in ring_link_claim. */
    if (linked_at == CLAIM_NONE && ld_acq(base, so + SLOT_LINK_IN) != 0) return 0;
    /* SYNC(claim-intent): pairs with the release stores of the slot's claim position and length in
     * ring_claim (and their reset on commit, abort and revocation). */
    uint64_t p = ld_acq(base, so + SLOT_CLAIM_POS);
    uint64_t raw = ld_acq(base, so + SLOT_CLAIM_LEN);
    uint64_t L = raw & ~CLAIM_CONFIRMED, end = p + L;
    if (linked_at != CLAIM_NONE && p != linked_at) return 0;
    /* Only a confirmed claim: its exchange of tail won, and it has not yet
     * committed (the flag is dropped first), so a zero word is one it has
     * not written, never one a consumer zeroed. A producer stopped in the
     * instruction before setting the flag or after dropping it keeps its
     * claim (documented). */
    if (!(raw & CLAIM_CONFIRMED) || p == CLAIM_NONE || p % RECORD_ALIGN ||
        L < RECORD_HEADER || L > r->cap || L % RECORD_ALIGN)
        return 0;
    /* SYNC(tail-claim): acquire of tail; pairs with the claims' compare-exchange of tail in
     * ring_claim. */
    if (ld_acq(base, OFF_TAIL) < end) return 0;  /* its exchange of tail never won */
    /* SYNC(head): acquire of head; pairs with the seq-cst stores of head by the consumer (free_to)
     * or a sweeper (sweep, recovery), made after the freed bytes were read and zeroed. */
    if (ld_acq(base, OFF_HEAD) >= end) return 0; /* consumed */
    if ((p & r->mask) + L > r->cap) return 0; /* claims never straddle the end */
    uint64_t prec = p;
    /* SYNC(claim-word), SYNC(zero): acquire of the claim's word; pairs with the producer's
     * compare-exchange of it in ring_claim, and with a consumer's release of a zero
     * (zero_record). */
    uint64_t w = ld_acq(base, WORD_OFF(r, prec));
    if (w != 0 && !(rec_len(w) < 0 && rec_type(w) == REC_MSG && rec_lap(w) == LAP(r, prec) &&
                    align_up((uint64_t)-rec_len(w), RECORD_ALIGN) == L))
        return 0; /* committed (or not this claim's) */
    /* SYNC(claim-intent): the slot's length and position again. Still the same confirmed claim
     * after reading the word: the flag and position are not a mix of two claims, and the word is
     * this claim's. */
    if (ld_acq(base, so + SLOT_CLAIM_LEN) != raw || ld_acq(base, so + SLOT_CLAIM_POS) != p)
        return 0;
    uint64_t e = 0;
    for (uint32_t i = 0; i < QUAR_ENTRIES && !e; i++) {
        uint64_t c = OFF_QUAR_ENTRIES + (uint64_t)i * QUAR_ENTRY;
        /* SYNC(quar-lift): a free entry; pairs with the release of its zero length in
         * ring_lift_quarantine. */
        if (!ld_acq(base, c + QUAR_LEN)) e = c;
    }
    if (!e) return -2;
    /* The entry is published before the record word changes (see gate). */
    st_rlx(base, e + QUAR_POS, p);
    st_rlx(base, e + QUAR_FLAGS, (uint64_t)(slot + 1) << QUAR_OWNER_SHIFT);
    /* SYNC(quar-entry): release of the length after position and flags; pairs with the acquire of
     * it in quarantine_floor, quar_entry, recovery and ring_lift_quarantine. */
    st_rel(base, e + QUAR_LEN, L);
    /* SYNC(quar-count): pairs with the acquire of the count in gate() and ring_lift_quarantine. */
    fadd_sc(base, OFF_QUAR_COUNT, 1);
    st_rlx(base, SEQ_OFF(r, prec), prec);
    uint64_t rw = rec_word((int32_t)(end - prec), REC_REVOKED, 0, 0, LAP(r, prec));
    /* SYNC(revoke): the revoked word, from the word we read: against the producer's compare-
     * exchanges of it in ring_claim, ring_commit and ring_abort exactly one wins. */
    if (!cas_sc(base, WORD_OFF(r, prec), &w, rw)) {
        /* It committed (or claimed) meanwhile: it was not stuck after all. */
        st_rlx(base, e + QUAR_FLAGS, 0);
        /* SYNC(quar-lift): the entry is free again. */
        st_rel(base, e + QUAR_LEN, 0);
        /* SYNC(quar-count): one entry fewer. */
        fadd_sc(base, OFF_QUAR_COUNT, (uint64_t)-1);
        shm_notify(base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS);
        return 0;
    }
    shm_notify(base, OFF_DATA_FUTEX, OFF_DATA_WAITERS);
    return 1;
}

static void zero_span(ring_t *r, uint64_t pos, uint64_t len) {
    while (len) {
        uint64_t idx = pos & r->mask;
        uint64_t n = r->cap - idx < len ? r->cap - idx : len;
        memset(r->data + idx, 0, n);
        pos += n;
        len -= n;
    }
}

int ring_lift_quarantine(char *base, uint64_t size) {
    ring_t rr, *r = &rr;
    if (ring_init(r, base, size, 0, 0) != RING_OK) return -1;
    /* SYNC(quar-count): pairs with the seq-cst adds in ring_revoke_claim. */
    if (!r->multi_producer || !ld_acq(base, OFF_QUAR_COUNT)) return 0;
    int lifted = 0;
    for (uint32_t i = 0; i < QUAR_ENTRIES; i++) {
        uint64_t e = OFF_QUAR_ENTRIES + (uint64_t)i * QUAR_ENTRY;
        /* SYNC(quar-entry): acquire of an entry's length before its other words; pairs with its
         * release in ring_revoke_claim (published after position and flags). */
        uint64_t L = ld_acq(base, e + QUAR_LEN);
        if (!L) continue;
        uint64_t p = ld_acq(base, e + QUAR_POS), end = p + L;
        int sane = L >= RECORD_HEADER && !(p % RECORD_ALIGN) && (p & r->mask) + L <= r->cap;
        uint64_t prec = p;
        /* SYNC(revoke): acquire of the revoked word; pairs with its compare-exchange in
         * ring_revoke_claim. */
        uint64_t w = sane ? ld_acq(base, WORD_OFF(r, prec)) : 0;
        /* An entry without its revoked record was left by a supervisor that
         * died between publishing it and revoking (or between zeroing and
         * freeing it): nothing is quarantined, free it. */
        int live = sane && rec_type(w) == REC_REVOKED && rec_lap(w) == LAP(r, prec) &&
                   rec_len(w) > 0 && prec + (uint64_t)rec_len(w) == end;
        if (live) {
            /* SYNC(quar-done): pairs with quar_set_done. */
            if (!(ld_acq(base, e + QUAR_FLAGS) & QUAR_DONE)) continue; /* still writing */
            /* SYNC(head): acquire of head; pairs with the seq-cst stores of head by the consumer
             * (free_to) or a sweeper (sweep, recovery), made after the freed bytes were read and
             * zeroed. */
            if (ld_acq(base, OFF_HEAD) <= prec) continue; /* not yet passed */
            /* Done on both sides: nobody reads or writes these bytes until
             * the entry is free (producers are gated below them). */
            zero_span(r, p, L);
            /* SYNC(quar-lift): the zeroed bytes before the entry is freed below. */
            fence_rel();
        }
        st_rlx(base, e + QUAR_FLAGS, 0);
        st_rlx(base, e + QUAR_POS, 0);
        /* SYNC(quar-lift): the entry is free; pairs with the acquire of its length in
         * quarantine_floor and ring_revoke_claim. */
        st_rel(base, e + QUAR_LEN, 0);
        /* SYNC(quar-count): one entry fewer. */
        fadd_sc(base, OFF_QUAR_COUNT, (uint64_t)-1);
        lifted++;
    }
    if (lifted) shm_notify(base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS);
    return lifted;
}

