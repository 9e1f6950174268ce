/*
 * ring/link.c - the linked commit: a consumer of an mpmc ring (a pipeline
 * worker) passes a record it holds on to another ring (mpsc or mpmc) so that
 * the item moves on exactly once, whatever instruction the worker dies at.
 *
 * The input is released only after its outputs are committed, and the
 * worker's attach slot of the input ring records, before each output is
 * claimed, where that output lies (link_in, link_out, link_region,
 * link_done: layout.h, ATTACH SLOT). Committing the output (the release
 * store of its record word) is the single moment the output exists. When the
 * worker dies, recovery of its input slot reads the output record's state:
 *
 *   - committed, or consumed since (the word is zero, or of a later lap):
 *     the output counts;
 *   - claimed and not committed, or padding (an abort): it does not.
 *
 * With the count (link_done) it decides: every output sent (LINK_COMPLETE,
 * or LINK_SINGLE and one output) means the input is done, so it is marked
 * done instead of handed back; otherwise the input goes back to the queue
 * carrying the count in its header (LINKED RECORD, done), and the next worker
 * skips that many outputs (flat_map). The count and the one output in flight
 * are told apart by LINK_COUNTED, stored with the count after the commit and
 * cleared before the next claim, so no state is counted twice.
 *
 * Two rules keep the output's state readable until that decision:
 *
 *   - a linked claim is marked in the worker's producer slot of the output
 *     ring (link_in of a producer slot); while the mark is set, recovery of
 *     that producer slot waits (RECOVER_DEFERRED) instead of padding the
 *     claim, because padding that a consumer then zeroes would read as
 *     "consumed". The input's recovery clears the mark once it has decided.
 *   - the claim watch never revokes a linked claim (ring_revoke_claim): a
 *     stuck worker is killed by its pipeline instead, and recovered as
 *     above, or loses its input's lease (ring/lease.c), which settles the
 *     linked claim by compare-exchange while the worker may still run: it
 *     publishes link_out (seq-cst) and then checks that its input is still
 *     its own (still_held), and its commit and finish fail once it is not.
 *
 * A worker's aborted output clears link_out before it becomes padding.
 */
#include <string.h>
#include <time.h>

#include "atomics.h"
#include "ring/internal.h"
#include "wait.h"

#define IN_SLOT(r, f) ((r)->slot_off + (f))

static char *held_payload(ring_t *in) {
    return in->data + (in->held_pos & in->mask) + RECORD_HEADER;
}

/* Is the record we hold still ours? The supervisor revokes a lease by
 * compare-exchange of its word (ring/lease.c). Seq-cst: pairs with that
 * exchange after our own seq-cst store of link_out (ring_link_claim). */
static int still_held(ring_t *in) {
    /* SYNC(lease): our record's word; pairs with ring_revoke_lease's compare-exchange of it. */
    return ld_sc(in->base, WORD_OFF(in, in->held_pos)) == in->held_word;
}

static int lease_lost(ring_t *in) {
    in->held = 0;
    return RING_LEASE;
}

/* A hand-back of a lease of ours is under way (LEASE_BUSY): it reads our
 * link words, so a new item must not overwrite them until it is done. Bounded
 * (a supervisor killed half-way never clears it): 5 s. */
static void wait_lease_settled(ring_t *in) {
    for (int i = 0; i < 5000; i++) {
        /* SYNC(lease-busy): pairs with ring_revoke_lease's stores of the flag. */
        if (!(ld_sc(in->base, IN_SLOT(in, SLOT_LEASE)) & LEASE_BUSY)) return;
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
}

int ring_link_begin(ring_t *in, int single, uint64_t *item, uint32_t *attempts, uint32_t *done) {
    if (!in->held || in->pattern != PATTERN_MPMC) return RING_AGAIN;
    if (in->held_len < LINK_HDR) return corrupt(in, "linked record shorter than its header");
    wait_lease_settled(in);
    if (!still_held(in)) return lease_lost(in);
    char *p = held_payload(in);
    uint32_t a, d;
    memcpy(item, p + LINK_HDR_ITEM, 8);
    memcpy(&a, p + LINK_HDR_ATTEMPTS, 4);
    memcpy(&d, p + LINK_HDR_DONE, 4);
    /* Counted before anything of this attempt runs: a worker killed by the
     * item still counts it. We hold the record, so nobody else writes it;
     * recovery reads it after our death. */
    a += 1;
    memcpy(p + LINK_HDR_ATTEMPTS, &a, 4);
    *attempts = a;
    *done = d;
    st_rlx(in->base, IN_SLOT(in, SLOT_LINK_OUT), 0);
    /* single 2: one output completes the input on its first attempt only (a
     * pipeline's chunk: later attempts send one output per item). */
    int one = single == 2 ? a == 1 : single != 0;
    st_rlx(in->base, IN_SLOT(in, SLOT_LINK_DONE), (uint64_t)d | (one ? LINK_SINGLE : 0));
    /* SYNC(link): release of link_in after the header and the link's other words; pairs with
     * ring_recover_slot's acquire of it (link_recover). */
    st_rel(in->base, IN_SLOT(in, SLOT_LINK_IN), in->held_pos + 1);
    return RING_OK;
}

int ring_link_claim(ring_t *out, ring_t *in, uint64_t len, uint64_t item, uint64_t region,
                    char **payload) {
    if (!out->multi_producer) return corrupt(out, "a linked commit needs an mpsc or mpmc ring");
    /* SYNC(link): our own link word, read back. */
    if (!in->held || ld_acq(in->base, IN_SLOT(in, SLOT_LINK_IN)) != in->held_pos + 1)
        return RING_AGAIN;
    uint64_t d = ld_rlx(in->base, IN_SLOT(in, SLOT_LINK_DONE));
    d = (d & ~(LINK_COUNTED | (LINK_SLOT_MASK << LINK_SLOT_SHIFT))) |
        ((uint64_t)(out->slot + 1) << LINK_SLOT_SHIFT);
    /* Nothing in flight is counted any more, and recovery is told which
     * region and slot the next output is in, before it is claimed. */
    st_rlx(in->base, IN_SLOT(in, SLOT_LINK_OUT), 0);
    st_rlx(in->base, IN_SLOT(in, SLOT_LINK_REGION), region);
    /* SYNC(link): release of the count without LINK_COUNTED; pairs with link_recover's acquire. */
    st_rel(in->base, IN_SLOT(in, SLOT_LINK_DONE), d);
    char *p;
    int rc = ring_claim(out, len + LINK_HDR, &p);
    if (rc != RING_OK) return rc;
    /* Where the input is, for a forced recovery of this slot (link_force). */
    st_rlx(out->base, out->slot_off + SLOT_LINK_OUT, in->slot + 1);
    st_rlx(out->base, out->slot_off + SLOT_LINK_REGION, in->link_region);
    /* SYNC(link-mark): the claim is linked: pairs with ring_recover_slot's acquire of the mark
     * (it defers) and ring_revoke_claim's (it skips). */
    st_rel(out->base, out->slot_off + SLOT_LINK_IN, out->claim_pos + 1);
    /* SYNC(link), SYNC(lease): where the output lies; pairs with link_recover's acquire, and
     * (seq-cst, then our look at the input's word) with ring_revoke_lease's exchange of the word
     * and then its look at link_out: either we see the lease revoked, or it sees this claim and
     * settles it (revokes it, or counts it committed). */
    st_sc(in->base, IN_SLOT(in, SLOT_LINK_OUT), out->claim_pos + 1);
    if (!still_held(in)) {
        /* Our input went back to the queue meanwhile: no output of it from us. */
        ring_link_abort(out, in);
        return lease_lost(in);
    }
    uint32_t zero = 0;
    memcpy(p + LINK_HDR_ITEM, &item, 8);
    memcpy(p + LINK_HDR_ATTEMPTS, &zero, 4);
    memcpy(p + LINK_HDR_DONE, &zero, 4);
    *payload = p + LINK_HDR;
    return RING_OK;
}

int ring_link_commit(ring_t *out, ring_t *in, uint64_t used, int last) {
    int rc = ring_commit(out, used + LINK_HDR);
    if (rc != RING_OK) {
        /* SYNC(link-mark): nothing of ours is in flight there any more. */
        st_rel(out->base, out->slot_off + SLOT_LINK_IN, 0);
        /* Revoked with our input's lease (ring/lease.c): say so. */
        if (rc == RING_REVOKED && !still_held(in)) return lease_lost(in);
        return rc;
    }
    uint64_t d = ld_rlx(in->base, IN_SLOT(in, SLOT_LINK_DONE));
    d = (d & ~LINK_COUNT_MASK) | (((d & LINK_COUNT_MASK) + 1) & LINK_COUNT_MASK) | LINK_COUNTED;
    /* SYNC(link): the count now includes the output just committed; pairs with link_recover. */
    st_rel(in->base, IN_SLOT(in, SLOT_LINK_DONE), d);
    /* SYNC(link-mark): committed: the producer slot's recovery need not wait. */
    st_rel(out->base, out->slot_off + SLOT_LINK_IN, 0);
    if (last) return ring_link_finish(in);
    return RING_OK;
}

void ring_link_abort(ring_t *out, ring_t *in) {
    /* SYNC(link): the output will be padding: it must not read as consumed. */
    st_rel(in->base, IN_SLOT(in, SLOT_LINK_OUT), 0);
    ring_abort(out);
    /* SYNC(link-mark): as ring_link_commit. */
    st_rel(out->base, out->slot_off + SLOT_LINK_IN, 0);
}

void ring_link_many(ring_t *in) {
    if (!in->held) return;
    uint64_t d = ld_rlx(in->base, IN_SLOT(in, SLOT_LINK_DONE));
    /* SYNC(link): no output is committed yet (the caller says so): the flag goes before any is;
     * pairs with link_recover's acquire. */
    st_rel(in->base, IN_SLOT(in, SLOT_LINK_DONE), d & ~LINK_SINGLE);
}

int ring_link_finish(ring_t *in) {
    if (!in->held) return RING_OK;
    uint64_t d = ld_rlx(in->base, IN_SLOT(in, SLOT_LINK_DONE));
    /* SYNC(link): every output sent; pairs with link_recover's acquire. */
    st_rel(in->base, IN_SLOT(in, SLOT_LINK_DONE), d | LINK_COMPLETE);
    /* A lease revoked meanwhile: the supervisor decided already (every
     * output was committed, so it found the input done, or it counted them
     * into the input it handed back); the link words stay for it to read. */
    if (ring_release(in) != RING_OK) return RING_LEASE;
    /* SYNC(link): no link; the input is done. */
    st_rel(in->base, IN_SLOT(in, SLOT_LINK_IN), 0);
    return RING_OK;
}

/* Was the record claimed at q of the output ring committed? Only called
 * while its producer slot's mark keeps recovery from padding it. */
static int out_committed(ring_t *o, uint64_t q) {
    /* SYNC(commit), SYNC(zero): acquire of the output's word; pairs with its publication in
     * ring_commit and with a consumer's zeroing of it (zero_record). */
    uint64_t w = ld_acq(o->base, WORD_OFF(o, q));
    if (w == 0) return 1;                  /* consumed, and zeroed */
    if (rec_lap(w) != LAP(o, q)) return 1; /* consumed: its bytes hold a later lap */
    if (rec_len(w) < 0) return 0;          /* claimed, not committed */
    return rec_type(w) == REC_MSG;         /* padding: aborted */
}

int link_recover(ring_t *in, uint32_t slot, uint64_t pos, char *out_base, uint64_t out_size) {
    char *base = in->base;
    uint64_t so = in->slot_off;
    /* SYNC(link): acquire of the dead worker's link; pairs with its release stores above. */
    if (ld_acq(base, so + SLOT_LINK_IN) != pos + 1) return LINK_NONE;
    uint64_t d = ld_acq(base, so + SLOT_LINK_DONE);
    uint64_t q1 = ld_acq(base, so + SLOT_LINK_OUT);
    uint64_t count = d & LINK_COUNT_MASK;
    uint32_t oslot = (uint32_t)((d >> LINK_SLOT_SHIFT) & LINK_SLOT_MASK);
    ring_t o;
    int have_out = out_base && ring_init(&o, out_base, out_size, 0, 0) == RING_OK &&
                   oslot >= 1 && oslot <= o.slot_count && o.multi_producer;
    if (q1 && !(d & LINK_COUNTED)) {
        /* The decision is ours, unless a forced recovery of the output's
         * slot padded the claim first (it zeroes link_out: link_force). */
        /* SYNC(link-resolve): pairs with link_force's compare-exchange of link_out. */
        if (!cas_sc(base, so + SLOT_LINK_OUT, &q1, q1 | LINK_RESOLVING)) q1 = 0;
    }
    if (q1 && !(d & LINK_COUNTED)) {
        /* Without the output region (gone, or not found) its state cannot
         * be read; it is taken as not committed: the input goes back. */
        if (have_out && out_committed(&o, (q1 & ~LINK_RESOLVING) - 1)) count++;
    }
    if (have_out) {
        uint64_t os = SLOTS_OFFSET + (uint64_t)(oslot - 1) * SLOT_SIZE;
        /* SYNC(slot-pid): acquire of both pid words; the mark is cleared only in the dead worker's
         * own producer slot. */
        uint64_t mine = ld_acq(base, so + SLOT_PID) & ~SLOT_RECOVERING;
        if ((ld_acq(out_base, os + SLOT_PID) & ~SLOT_RECOVERING) == mine)
            /* SYNC(link-mark): decided: the producer slot may now be recovered (its claim, if not
             * committed, becomes padding). */
            st_rel(out_base, os + SLOT_LINK_IN, 0);
    }
    int complete = (d & LINK_COMPLETE) || ((d & LINK_SINGLE) && count >= 1);
    if (!complete) {
        uint32_t c = (uint32_t)count;
        memcpy(in->data + (pos & in->mask) + RECORD_HEADER + LINK_HDR_DONE, &c, 4);
    }
    /* SYNC(link): resolved. */
    st_rel(base, so + SLOT_LINK_IN, 0);
    return complete ? LINK_DONE : LINK_REDELIVER;
}

int link_force(ring_t *out, char *in_base, uint64_t in_size) {
    uint64_t so = out->slot_off;
    /* SYNC(link-mark): the mark of the dead producer's linked claim. */
    uint64_t mark = ld_acq(out->base, so + SLOT_LINK_IN);
    if (!mark) return 0;
    ring_t in;
    uint64_t islot = ld_rlx(out->base, so + SLOT_LINK_OUT);
    if (in_base && ring_init(&in, in_base, in_size, 0, 0) == RING_OK && islot >= 1 &&
        islot <= in.slot_count) {
        uint64_t is = SLOTS_OFFSET + (islot - 1) * SLOT_SIZE;
        /* SYNC(slot-pid): the input slot is the same dead process's. */
        uint64_t mine = ld_acq(out->base, so + SLOT_PID) & ~SLOT_RECOVERING;
        if ((ld_acq(in_base, is + SLOT_PID) & ~SLOT_RECOVERING) == mine) {
            uint64_t e = mark;
            /* SYNC(link-resolve): the claim is about to be padded: the input's recovery must not
             * take it for a consumed output. Pairs with link_recover's compare-exchange. */
            if (!cas_sc(in_base, is + SLOT_LINK_OUT, &e, 0) && e == (mark | LINK_RESOLVING))
                return RECOVER_DEFERRED; /* that recovery is deciding now */
        }
    }
    /* SYNC(link-mark): no longer waiting. */
    st_rel(out->base, so + SLOT_LINK_IN, 0);
    return 0;
}
