/*
 * ring/untether.c - slow subscribers of a lossless broadcast: a consumer
 * that holds the producer back without moving for the region's untether_ns
 * (Channel.create(slow_consumer_timeout=)) stops gating it, as Aeron
 * untethers a subscription that falls too far behind.
 *
 * Who decides: the gated producer itself, on its slow path (its claim does
 * not fit under the limit the cursors give). It is the one process that
 * knows it is held back and by whom; a waiting producer wakes every
 * ring_untether_slice_ns to look again. The hot path is unchanged: a claim
 * that fits never comes here.
 *
 * Why it is safe: on such a region the producer keeps `intent` before every
 * byte it writes (the seqlock of lossy broadcast) and every consumer
 * validates each copy against it (ring_validate), tethered or not. A
 * tethered consumer always passes (the producer is gated by its cursor); one
 * that was untethered and overwritten finds out after the copy, drops it,
 * jumps to the newest record, and counts the message numbers it skipped in
 * `missed`, exactly as a lossy reader does. So the consumer may resume at
 * any instruction: it never keeps bytes that were overwritten under it.
 *
 * Gating again: the resumed consumer (ring_peek sees its state
 * SLOT_UNTETHERED) stores its cursor - its own if nothing it had still to
 * read was overwritten, else the newest record - sets ACTIVE and bumps the
 * header's gate_epoch; the producer recomputes its limit before its next
 * claim once it sees the bump, so at most a claim already under way can
 * still overrun it (and that is validated and counted as above).
 */
#include <stdlib.h>
#include <string.h>

#include "atomics.h"
#include "ring/internal.h"
#include "wait.h"

#define SLICE_MIN_NS 1000000LL     /* a blocked producer looks at most every 1 ms */
#define SLICE_MAX_NS 1000000000LL  /* and at least every second */

int ring_untether_alloc(ring_t *r) {
    if (r->pattern != PATTERN_BROADCAST || r->untether_ns == 0) return 0;
    r->ut_cursor = calloc(r->slot_count, sizeof(*r->ut_cursor));
    r->ut_since = calloc(r->slot_count, sizeof(*r->ut_since));
    if (r->ut_cursor && r->ut_since) return 0;
    ring_untether_free(r);
    return -1;
}

void ring_untether_free(ring_t *r) {
    free(r->ut_cursor);
    free(r->ut_since);
    r->ut_cursor = NULL;
    r->ut_since = NULL;
}

int64_t ring_untether_slice_ns(const ring_t *r) {
    if (!r->untether_ns) return -1;
    int64_t s = (int64_t)(r->untether_ns / 4);
    if (s < SLICE_MIN_NS) s = SLICE_MIN_NS;
    if (s > SLICE_MAX_NS) s = SLICE_MAX_NS;
    return s;
}

uint64_t ring_untether(ring_t *r, uint64_t end, uint64_t limit) {
    int64_t now = mono_ns();
    /* Time counts only while the producer is held back: after a pause in
     * which it did not look (it was not sending), counting starts again. */
    if (!r->ut_since) return limit; /* not a producer's ring_t (ring_untether_alloc) */
    if (r->ut_seen && now - r->ut_seen > (int64_t)r->untether_ns)
        memset(r->ut_since, 0, r->slot_count * sizeof(*r->ut_since));
    r->ut_seen = now;
    int any = 0;
    uint32_t used = ring_slots_used(r->base, r->slot_count); /* slots past it are free */
    for (uint32_t i = 0; i < used; i++) {
        uint64_t so = SLOTS_OFFSET + (uint64_t)i * SLOT_SIZE;
        /* SYNC(slot-state): as in gate(): acquire of the slot's role and state. */
        if (ld32_acq(r->base, so + SLOT_ROLE) != ROLE_CONSUMER ||
            ld32_acq(r->base, so + SLOT_STATE) != SLOT_ACTIVE) {
            r->ut_since[i] = 0;
            continue;
        }
        /* SYNC(cursor): as in gate(): the consumer's release store of its cursor. */
        uint64_t c = ld_acq(r->base, so + SLOT_CURSOR);
        if (c + r->cap >= end) { /* not what holds this claim back */
            r->ut_since[i] = 0;
            continue;
        }
        if (!r->ut_since[i] || r->ut_cursor[i] != c) { /* moved, or newly in the way */
            r->ut_cursor[i] = c;
            r->ut_since[i] = now;
            continue;
        }
        if (now - r->ut_since[i] < (int64_t)r->untether_ns) continue;
        uint32_t st = SLOT_ACTIVE;
        /* SYNC(untether): the consumer stops gating; pairs with its acquire of its own state in
         * ring_peek and its compare-exchange back to ACTIVE in ring_retether. From ACTIVE only: a
         * slot closing or recovered meanwhile is left alone. */
        if (cas32_sc(r->base, so + SLOT_STATE, &st, SLOT_UNTETHERED)) any = 1;
        r->ut_since[i] = 0;
    }
    return any ? ring_gate(r) : limit;
}

void ring_retether(ring_t *r) {
    r->untethered++;
    uint64_t c = r->cursor;
    /* SYNC(intent): how far the producer has written; pairs with its seqlock store and fence in
     * ring_claim. Overwritten past our cursor: go on from the newest record (ring_release counts
     * what was skipped), so that gating again does not hold the producer at a position whose
     * bytes are gone. Written after this look is caught by ring_validate. */
    if (ld_acq(r->base, OFF_INTENT) > c + r->cap) {
        /* SYNC(latest): see ring_commit. */
        uint64_t latest = ld_acq(r->base, OFF_LATEST);
        if (latest > c) {
            r->cursor = latest;
            r->cached_tail = latest;
            c = latest;
        }
    }
    /* SYNC(cursor): the cursor to gate from; pairs with the producer's acquire of it in gate(). */
    st_sc(r->base, r->slot_off + SLOT_CURSOR, c);
    uint32_t st = SLOT_UNTETHERED;
    /* SYNC(untether), SYNC(slot-state): gating again; pairs with the producer's compare-exchange
     * in ring_untether and its acquire of the state in gate(). */
    cas32_sc(r->base, r->slot_off + SLOT_STATE, &st, SLOT_ACTIVE);
    /* SYNC(gate-epoch): the producer's limit may have been computed without us (it need not look
     * at the cursors again for up to a ring): it recomputes before its next claim once it sees
     * this. A claim it made before is caught by ring_validate. */
    fadd_sc(r->base, OFF_GATE_EPOCH, 1);
}
