/* guard.c - the SIGBUS guard of shmring's mappings: see guard.h.
 *
 * The table is a fixed array of entries written by guard_watch and
 * guard_unwatch (with the GIL held, so one writer at a time) and read by the
 * signal handler, which may run on any thread at any moment: every field is
 * an atomic, an entry is published by storing its base last and retired by
 * clearing its base first. Nothing here allocates, so the handler never
 * sees a table being moved. */
#define _GNU_SOURCE
#include "guard.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define GUARD_ENTRIES 16384

typedef struct {
    _Atomic uintptr_t base; /* 0: free */
    _Atomic size_t len;
    _Atomic uint64_t faults;
} entry_t;

static entry_t table[GUARD_ENTRIES];
static _Atomic size_t top;      /* entries in use are below top */
_Atomic uint64_t guard_fault_count; /* all caught faults */
static struct sigaction previous;
static _Atomic uintptr_t last_foreign; /* SYNC(guard-foreign): see chain */
static volatile sig_atomic_t chaining; /* inside the previous handler */
static uintptr_t page_mask;

static entry_t *find(uintptr_t a) {
    /* SYNC(guard-table): the high-water mark, then each base before its length: pairs with
     * the stores in guard_watch (length first, then base, then the mark). */
    size_t n = atomic_load_explicit(&top, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        uintptr_t b = atomic_load_explicit(&table[i].base, memory_order_acquire);
        /* SYNC(guard-table): the length, ordered by the acquire of base above. */
        if (b && a >= b && a - b < atomic_load_explicit(&table[i].len, memory_order_relaxed))
            return &table[i];
    }
    return NULL;
}

static void die_of(int sig, siginfo_t *si) {
    /* As without the guard: a fault re-executes the instruction and faults
     * again under SIG_DFL; a SIGBUS sent by kill() is raised again,
     * delivered when this handler returns. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGBUS, &dfl, NULL);
    if (si->si_code <= 0) raise(sig);
}

static void chain(int sig, siginfo_t *si, void *uc) {
    if (si->si_code > 0) {
        /* The same foreign fault twice in a row: whoever had it before us
         * returned without mending it (faulthandler, once it has dumped,
         * hands SIGBUS back to us): end it as SIG_DFL would. */
        uintptr_t a = (uintptr_t)si->si_addr;
        /* SYNC(guard-foreign): relaxed: only this handler reads and writes it. */
        if (atomic_exchange_explicit(&last_foreign, a, memory_order_relaxed) == a) {
            die_of(sig, si);
            return;
        }
    }
    /* Re-entered from the handler we chain to (faulthandler raises SIGBUS
     * again once it has dumped, and ours may be what it restores): stop
     * there, or the two would call each other until the stack overflows. */
    if (chaining) {
        die_of(sig, si);
        return;
    }
    chaining = 1;
    if (previous.sa_flags & SA_SIGINFO) {
        if (previous.sa_sigaction) {
            previous.sa_sigaction(sig, si, uc);
            chaining = 0;
            return;
        }
    } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
        chaining = 0;
        return;
    }
    chaining = 0;
    die_of(sig, si);
}

static void on_sigbus(int sig, siginfo_t *si, void *uc) {
    int saved = errno;
    if (si->si_code > 0) { /* a fault of this thread, not a signal someone sent */
        uintptr_t a = (uintptr_t)si->si_addr;
        entry_t *e = find(a);
        if (e) {
            void *page = (void *)(a & page_mask);
            void *p = mmap(page, page_mask ? ~page_mask + 1 : 4096, PROT_READ | PROT_WRITE,
                           MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p != MAP_FAILED) {
                /* SYNC(guard-faults): counted before the faulting code resumes: pairs with the
                 * loads in guard_faults and guard_faults_at. */
                atomic_fetch_add_explicit(&e->faults, 1, memory_order_seq_cst);
                atomic_fetch_add_explicit(&guard_fault_count, 1, memory_order_seq_cst);
                errno = saved;
                return;
            }
        }
    }
    errno = saved;
    chain(sig, si, uc);
}

int guard_install(void) {
    long ps = sysconf(_SC_PAGESIZE);
    page_mask = ~((uintptr_t)(ps > 0 ? ps : 4096) - 1);
    struct sigaction now;
    if (sigaction(SIGBUS, NULL, &now) < 0) return errno;
    if ((now.sa_flags & SA_SIGINFO) && now.sa_sigaction == on_sigbus) return 0; /* ours */
    /* Someone took SIGBUS after us (faulthandler.enable(), say): take it
     * back, chaining to them; they chain to whoever was before. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    previous = now;
    if (sigaction(SIGBUS, &sa, NULL) < 0) return errno;
    return 0;
}

int guard_watch(void *base, size_t len) {
    uintptr_t b = (uintptr_t)base;
    if (!b || !len) return 0;
    guard_install(); /* on top again, should another handler have come since */
    /* SYNC(guard-writer): relaxed: only guard_watch and guard_unwatch write the table, one
     * at a time (the GIL); the handler reads it (SYNC(guard-table)). */
    size_t n = atomic_load_explicit(&top, memory_order_relaxed);
    size_t i = 0;
    while (i < n && atomic_load_explicit(&table[i].base, memory_order_relaxed)) i++;
    if (i == GUARD_ENTRIES) return -1;
    /* SYNC(guard-writer): the entry's fields, published by the release of base below. */
    atomic_store_explicit(&table[i].len, len, memory_order_relaxed);
    atomic_store_explicit(&table[i].faults, 0, memory_order_relaxed);
    /* SYNC(guard-table): publish the entry (length before base, base before the mark): pairs
     * with the acquire loads in find. */
    atomic_store_explicit(&table[i].base, b, memory_order_release);
    if (i == n) atomic_store_explicit(&top, n + 1, memory_order_release);
    return 0;
}

void guard_unwatch(void *base) {
    uintptr_t b = (uintptr_t)base;
    /* SYNC(guard-writer): the writer reads its own stores. */
    size_t n = atomic_load_explicit(&top, memory_order_relaxed);
    for (size_t i = 0; i < n; i++)
        if (atomic_load_explicit(&table[i].base, memory_order_relaxed) == b) {
            /* SYNC(guard-table): retire it before the unmap; pairs with find. */
            atomic_store_explicit(&table[i].base, 0, memory_order_release);
            return;
        }
}

uint64_t guard_faults_at(const void *addr) {
    entry_t *e = find((uintptr_t)addr);
    /* SYNC(guard-faults): pairs with the count in on_sigbus. */
    return e ? atomic_load_explicit(&e->faults, memory_order_acquire) : 0;
}
