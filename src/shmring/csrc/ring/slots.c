/*
 * ring/slots.c - finding attach slots: taking a free one, and the slots a
 * process holds. Scanned here, not in Python, because a table may have
 * thousands of slots (MAX_SLOTS) and every attach and every death walks it.
 *
 * The walk stops at the header's slot_high (layout.h): slots at or above it
 * were never taken, their pages never touched, and reading them would make
 * tmpfs allocate those pages. A taker raises slot_high before it takes the
 * pid word of the slot (compare-exchange, never lowered), so any walk that
 * reads slot_high first and then sees a taken pid sees it below slot_high.
 */
#include "atomics.h"
#include "ring/ring.h"

/* The header's slot count, or 0 if the table would not fit the mapping. */
static uint32_t table_count(char *base, uint64_t size) {
    if (size < REGION_HEADER_SIZE) return 0;
    uint32_t n = *(volatile uint32_t *)(base + HDR_SLOT_COUNT);
    if (n > MAX_SLOTS || SLOTS_OFFSET + (uint64_t)n * SLOT_SIZE > size) return 0;
    return n;
}

uint32_t ring_slots_used(char *base, uint32_t count) {
    /* SYNC(slot-high): acquire of the high-water mark; pairs with its compare-exchange in
     * ring_slot_take, made before the slot's pid word is taken. */
    uint64_t high = ld_acq(base, HDR_SLOT_HIGH);
    return high < count ? (uint32_t)high : count;
}

int64_t ring_slot_take(char *base, uint64_t size, uint64_t pid, uint32_t limit) {
    uint32_t n = table_count(base, size);
    if (n == 0) return -2;
    if (limit < n) n = limit;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t so = SLOTS_OFFSET + (uint64_t)i * SLOT_SIZE;
        /* SYNC(slot-high): as in ring_slots_used. */
        uint64_t high = ld_acq(base, HDR_SLOT_HIGH);
        if (i >= high) {
            /* First use of slot i: raise the mark to i + 1 before the pid is taken (another
             * taker may have raised it past i meanwhile: then it stays). */
            while (high < (uint64_t)i + 1) {
                /* SYNC(slot-high): pairs with the acquire loads of the mark in ring_slots_used
                 * and above: a walk that sees the pid below sees the mark past it. */
                if (cas_sc(base, HDR_SLOT_HIGH, &high, (uint64_t)i + 1)) break;
            }
        } else {
            /* SYNC(slot-pid): acquire of a slot's pid; pairs with its compare-exchange by
             * _core.cas (py/module.c m_cas) in shmring/_region (attach, recovery). */
            if (ld_acq(base, so + SLOT_PID) != 0) continue;
        }
        uint64_t zero = 0;
        /* SYNC(slot-pid): the pid taken by compare-exchange, as by _core.cas in shmring/_region;
         * pairs with the acquire loads of the pid word (other_live_claim, walks). */
        if (cas_sc(base, so + SLOT_PID, &zero, pid)) return (int64_t)i;
    }
    return -1;
}

int ring_slots_of(char *base, uint64_t size, uint64_t pid, uint64_t start, uint32_t *out,
                  int max) {
    uint32_t n = ring_slots_used(base, table_count(base, size));
    int found = 0;
    for (uint32_t i = 0; i < n && found < max; i++) {
        uint64_t so = SLOTS_OFFSET + (uint64_t)i * SLOT_SIZE;
        /* SYNC(slot-pid): acquire of a slot's pid; pairs with its compare-exchange by _core.cas
         * (py/module.c m_cas) in shmring/_region (attach, recovery). */
        if (ld_acq(base, so + SLOT_PID) != pid) continue;
        /* SYNC(slot-pid): the start time, stored by _core.store after the pid was won. */
        if (ld_acq(base, so + SLOT_START_TIME) != start) continue;
        out[found++] = i;
    }
    return found;
}
