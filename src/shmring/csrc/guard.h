/*
 * guard.h - a SIGBUS guard for the mappings of shmring regions.
 *
 * A segment in /dev/shm can be truncated by any process of its owner while
 * others map it; touching a mapped page past the new end of the file raises
 * SIGBUS, which kills the process. The guard keeps a table of the mappings
 * shmring made (guard_watch, guard_unwatch) and a SIGBUS handler: a fault
 * inside one of them maps a private zero page over the faulting page and
 * counts the fault, so the instruction resumes and the process lives. Code
 * that touched the mapping then sees guard_faults() change and reports the
 * region as broken (a Broken or CorruptRegion error), never trusting what it
 * read. A fault anywhere else goes to the handler that was there before
 * (faulthandler, say), or kills the process as SIGBUS always did.
 *
 * The hot path pays one relaxed load of a process-local counter per call
 * (guard_faults), which stays 0 unless a region was truncated.
 */
#ifndef SHMRING_GUARD_H
#define SHMRING_GUARD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Installs the handler, unless it is installed and on top (0, or errno).
 * guard_watch calls it again, so a handler set since (faulthandler) is
 * chained behind ours instead of seeing our faults first. */
int guard_install(void);

/* Records [base, base+len) as a shmring mapping; 0, or -1 if the table is
 * full (the mapping is then unguarded: a fault in it kills as before). */
int guard_watch(void *base, size_t len);

/* Forgets the mapping at base (before it is unmapped). */
void guard_unwatch(void *base);

/* Faults caught in all guarded mappings so far (process-wide): inline, so
 * that the check at every call is one relaxed load. */
extern _Atomic uint64_t guard_fault_count;
static inline uint64_t guard_faults(void) {
    /* SYNC(guard-faults): relaxed: a hint; guard_faults_at acquires the entry's own count. */
    return atomic_load_explicit(&guard_fault_count, memory_order_relaxed);
}

/* Faults caught in the mapping that contains addr (0 if none or unknown). */
uint64_t guard_faults_at(const void *addr);

#endif
