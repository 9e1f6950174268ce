/*
 * ring/internal.h - what the .c files of ring/ call in one another, beyond
 * the API of ring.h. Only cold paths cross a file: a revoked claim, the
 * quarantine's done flag, recovery's sweep of a dead consumer's records,
 * and the sweep after a consumer settles records it read ahead (plus, inline,
 * a lossy reader's count of what it missed).
 */
#ifndef SHMRING_RING_INTERNAL_H
#define SHMRING_RING_INTERNAL_H

#include "ring/record.h"

/* revoke.c: our claim at start lost its record word (the supervisor revoked
 * it): RING_REVOKED, or RING_CORRUPT if no quarantine entry names it. */
int claim_revoked(ring_t *r, uint64_t start);
/* revoke.c: ring_revoke_claim; linked_at CLAIM_NONE skips a linked claim,
 * otherwise only a claim at linked_at is revoked, linked or not (a lease). */
int revoke_claim_in(char *base, uint64_t size, uint32_t slot, uint64_t linked_at);
/* revoke.c: sets QUAR_DONE in the quarantine entry at offset e. */
void quar_set_done(char *base, uint64_t e);
/* produce.c: the limit claims must end at or before, from the cursors. */
uint64_t ring_gate(ring_t *r);
/* untether.c, lossless broadcast with untether_ns only. ring_untether: the
 * producer's claim ending at end does not fit under limit; consumers that
 * have held it back from one cursor for untether_ns stop gating. Returns the
 * new limit. ring_retether: a consumer that finds itself untethered gates
 * again (from its own cursor if nothing it had still to read was
 * overwritten, else from the newest record). */
uint64_t ring_untether(ring_t *r, uint64_t end, uint64_t limit);
void ring_retether(ring_t *r);
/* consume.c: mpmc, advances head over every done record at it. */
void ring_sweep(ring_t *r);
/* Validating broadcast, the held record is read (its copy validated): count
 * in missed the message numbers skipped before it (ring_release, and
 * ring_ahead_keep). Inline: on the per-message path of lossy readers. */
static inline void ring_count_missed(ring_t *r) {
    uint64_t m = r->held_seq; /* validated with the copy, unlike the ring now */
    if (r->have_baseline && m > r->last_msgno + 1)
        st_rlx(r->base, r->slot_off + SLOT_MISSED,
               ld_rlx(r->base, r->slot_off + SLOT_MISSED) + (m - r->last_msgno - 1));
    r->last_msgno = m;
    r->have_baseline = 1;
    st_rlx(r->base, r->slot_off + SLOT_LAST_MSGNO, m);
}

/* link.c: what recovery does with the record at pos that a dead worker
 * held while passing it on (a linked commit), given the output region's
 * mapping (or NULL): LINK_NONE (no link names it: hand it back as usual),
 * LINK_DONE (every output is committed: it is done), LINK_REDELIVER (hand
 * it back; its header now says how many outputs were committed). */
enum { LINK_NONE = 0, LINK_DONE = 1, LINK_REDELIVER = 2 };
int link_recover(ring_t *in, uint32_t slot, uint64_t pos, char *out_base, uint64_t out_size);
/* link.c: a forced recovery of a producer slot whose linked claim waits
 * (the supervisor's LINK_WAIT passed): tells the input's slot (in the region
 * mapped at in_base, or NULL) that the claim was not committed, and clears
 * the mark; RECOVER_DEFERRED if that input's recovery is deciding now. */
int link_force(ring_t *out, char *in_base, uint64_t in_size);

/* feed.c: the claim at pos can no longer commit (its producer is dead and
 * recovery is about to pad it, or it was revoked): if the FEED words wait
 * for it and it did not commit, they are made to say so before any padding
 * exists (layout.h, FEED). pos may be CLAIM_NONE (nothing is done). */
void feed_claim_lost(ring_t *r, uint64_t pos);

#endif
