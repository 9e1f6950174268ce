/*
 * ring/ring.c - a ring_t over a mapped region: the header checked against
 * the mapping (a corrupt or foreign segment is refused before any pointer
 * into it is formed), and the positions a new endpoint continues from.
 * The record protocol is in produce.c, consume.c, recover.c and revoke.c.
 */
#include "ring/ring.h"

#include <string.h>

#include "atomics.h"
#include "ring/record.h"

static int is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

int ring_init(ring_t *r, char *base, uint64_t size, uint32_t slot, int consumer) {
    memset(r, 0, sizeof(*r));
    r->base = base;
    r->size = size;
    if (size < REGION_HEADER_SIZE) return corrupt(r, "segment smaller than its header");
    /* SYNC(magic): acquire of the magic; pairs with the creator's seq-cst store of it, last of the
     * header, by _core.store (py/module.c m_store) in shmring/_region. */
    if (ld_acq(base, HDR_MAGIC) != SHMRING_MAGIC) return corrupt(r, "bad magic");
    r->pattern = *(uint32_t *)(base + HDR_PATTERN);
    r->flags = *(uint32_t *)(base + HDR_FLAGS);
    r->cap = *(uint64_t *)(base + HDR_CAPACITY);
    r->max_message = *(uint64_t *)(base + HDR_MAX_MESSAGE);
    r->slot_count = *(uint32_t *)(base + HDR_SLOT_COUNT);
    uint64_t doff = *(uint64_t *)(base + HDR_DATA_OFFSET);
    if (r->pattern < PATTERN_SPSC || r->pattern > PATTERN_BROADCAST)
        return corrupt(r, "unknown pattern");
    if (!is_pow2(r->cap) || r->cap < MIN_CAPACITY || r->cap > MAX_CAPACITY)
        return corrupt(r, "capacity is not a power of two in range");
    if (r->slot_count == 0 || r->slot_count > MAX_SLOTS) return corrupt(r, "bad slot count");
    if (doff < SLOTS_OFFSET + (uint64_t)r->slot_count * SLOT_SIZE || doff % RECORD_ALIGN)
        return corrupt(r, "data offset overlaps the attach table");
    if (doff > size || size - doff < r->cap) return corrupt(r, "ring extends past the segment");
    /* Written so that no sum can wrap (cap >= MIN_CAPACITY was checked). */
    if (r->max_message == 0 || r->max_message > r->cap / 2 - RECORD_HEADER)
        return corrupt(r, "max_message does not fit half the ring");
    if (slot >= r->slot_count) return corrupt(r, "slot out of range");
    r->data = base + doff;
    r->mask = r->cap - 1;
    r->slot = slot;
    r->slot_off = SLOTS_OFFSET + (uint64_t)slot * SLOT_SIZE;
    r->multi_producer = r->pattern == PATTERN_MPSC || r->pattern == PATTERN_MPMC;
    r->lossy = r->pattern == PATTERN_BROADCAST && (r->flags & FLAG_LOSSY);
    if (r->pattern == PATTERN_BROADCAST && !r->lossy)
        r->untether_ns = *(uint64_t *)(base + HDR_UNTETHER_NS);
    r->validating = r->lossy || r->untether_ns != 0;
    /* SYNC(gate-epoch): see ring_claim. */
    r->gate_epoch = ld_acq(base, OFF_GATE_EPOCH);
    /* SYNC(tail), SYNC(head), SYNC(msgno): Pairs with the release stores of tail/head by the
     * previous owner of this role (or by recovery): we continue from what they published. */
    r->tail_local = ld_acq(base, OFF_TAIL);
    r->msgno = ld_acq(base, OFF_MSGNO);
    r->cursor = ld_acq(base, OFF_HEAD);
    r->cached_tail = r->cursor;
    (void)consumer;
    return RING_OK;
}
