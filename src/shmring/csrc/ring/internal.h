/*
 * ring/internal.h - what the .c files of ring/ call in one another, beyond
 * the API of ring.h. Only cold paths cross a file: a revoked claim, the
 * quarantine's done flag, and recovery's sweep of a dead consumer's records.
 */
#ifndef SHMRING_RING_INTERNAL_H
#define SHMRING_RING_INTERNAL_H

#include "ring/record.h"

/* revoke.c: our claim at start lost its record word (the supervisor revoked
 * it): RING_REVOKED, or RING_CORRUPT if no quarantine entry names it. */
int claim_revoked(ring_t *r, uint64_t start);
/* revoke.c: sets QUAR_DONE in the quarantine entry at offset e. */
void quar_set_done(char *base, uint64_t e);
/* consume.c: mpmc, advances head over every done record at it. */
void ring_sweep(ring_t *r);

#endif
