/*
 * ring/feed.c - fed rings: a producer commits records that carry keys
 * (epoch, seq) and keeps, in the FEED words of the header, which key was
 * committed last, so that whoever comes after it knows exactly where to
 * resume whatever instant it died at. The words and the rule that reads them
 * are in layout.h (FEED); docs/design.md, "Fed rings", says why each store
 * comes where it does.
 */
#include <signal.h>
#include <time.h>

#include "atomics.h"
#include "ring/internal.h"
#include "wait.h"

#define X_POS(x) ((x) & ~(uint64_t)FEED_FLAGS)

int ring_feed_trap;

void ring_feed_stop(void) {
    if (--ring_feed_trap == 0) raise(SIGSTOP);
}

static void pause_ms(long ms) {
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* A live claim at pos that its producer has won and not yet committed. */
static int confirmed_claim_at(ring_t *r, uint64_t pos) {
    uint32_t used = ring_slots_used(r->base, r->slot_count);
    for (uint32_t i = 0; i < used; i++) {
        uint64_t so = SLOTS_OFFSET + (uint64_t)i * SLOT_SIZE;
        /* SYNC(slot-pid): acquire of a slot's pid; pairs with its compare-exchange by _core.cas. */
        if (ld_acq(r->base, so + SLOT_PID) == 0) continue;
        /* SYNC(claim-intent): pairs with the release stores of the claim position and length in
         * ring_claim (the flag is dropped before the commit). */
        if (ld_acq(r->base, so + SLOT_CLAIM_POS) != pos) continue;
        if (ld_acq(r->base, so + SLOT_CLAIM_LEN) & CLAIM_CONFIRMED) return 1;
    }
    return 0;
}

/* mpsc, mpmc: whether the pending commit X names happened. */
static int mp_done(ring_t *r, uint64_t x) {
    uint64_t pos = X_POS(x);
    if (x & FEED_VOID) return 0;
    for (int attempt = 0;; attempt++) {
        /* SYNC(head): pairs with the seq-cst stores of head (free_to, sweep): past pos, the record
         * was consumed, which only a committed one can be unless FEED_VOID was set first. */
        if (ld_acq(r->base, OFF_HEAD) > pos) return 1;
        /* SYNC(commit), SYNC(zero): acquire of the record word; pairs with the producer's commit
         * and a consumer's release of a zero (zero_record). */
        uint64_t w = ld_acq(r->base, WORD_OFF(r, pos));
        if (w != 0) {
            if (rec_len(w) <= 0 || rec_lap(w) != LAP(r, pos)) return 0;
            if (ld_rlx(r->base, SEQ_OFF(r, pos)) != pos) return 0;
            if (x & FEED_NEW) return rec_type(w) == REC_PAD && rec_len(w) == (int32_t)FEED_NOTE;
            return rec_type(w) == REC_MSG;
        }
        /* A zero word: not claimed yet, claimed and not written, or consumed and being zeroed
         * (head moves just after). SYNC(tail-claim): pairs with the claims' exchange of tail. */
        if (ld_acq(r->base, OFF_TAIL) <= pos) return 0;
        if (confirmed_claim_at(r, pos) || attempt == 3) return 0;
        pause_ms(2);
    }
}

static int done(ring_t *r, uint64_t x) {
    if (r->multi_producer) return mp_done(r, x);
    /* SYNC(tail): pairs with the producer's seq-cst store of tail in ring_flush. */
    return ld_acq(r->base, OFF_TAIL) >= X_POS(x);
}

/* The key in the note at pos (a PAD record's body), read plainly: nothing
 * writes it while the words refer to it. */
static void read_note(ring_t *r, uint64_t pos, uint64_t *e, uint64_t *s) {
    uint64_t idx = pos & r->mask & ~(uint64_t)(RECORD_ALIGN - 1);
    if (idx + FEED_NOTE > r->cap) {
        *e = *s = 0;
        return;
    }
    uint64_t off = (uint64_t)(r->data - r->base) + idx + RECORD_HEADER;
    *e = ld_rlx(r->base, off);
    *s = ld_rlx(r->base, off + 8);
}

/* The rule of layout.h, FEED, for a mark x already read. */
static void resolve(ring_t *r, uint64_t x, uint64_t *e, uint64_t *s) {
    /* SYNC(feed): acquire of the words after the mark; pairs with the producer's release stores
     * (ring_feed_claim, ring_feed_publish, settle). */
    *e = ld_acq(r->base, HDR_FEED_EPOCH);
    uint64_t S = ld_acq(r->base, HDR_FEED_SEQ), P = ld_acq(r->base, HDR_FEED_PENDING);
    if (!(x & FEED_PEND) || done(r, x)) {
        *s = P;
        return;
    }
    if (x & FEED_NEW) {
        read_note(r, S, e, s);
        return;
    }
    *s = S;
}

void ring_feed_state(ring_t *r, uint64_t *epoch, uint64_t *seq) {
    /* SYNC(feed): the mark first; pairs with its release stores. */
    resolve(r, ld_acq(r->base, HDR_FEED_MARK), epoch, seq);
}

/* A pending commit that did not happen and never will: settled to the key
 * before it. P and E first (the rule still reads the same answer while the
 * mark is pending and not done), then the mark. 1 settled, 0 the mark
 * changed under us (mpsc, mpmc: another settler). */
static int settle(ring_t *r, uint64_t x) {
    uint64_t e, s;
    resolve(r, x, &e, &s);
    if (x & FEED_NEW) {
        if (r->multi_producer && !(x & FEED_VOID)) {
            /* Claim the settling: a recovery or another producer that looks now sees VOID
             * (done never) and leaves it to us. SYNC(feed): against their exchange of it. */
            uint64_t want = x;
            if (!cas_sc(r->base, HDR_FEED_MARK, &want, x | FEED_VOID)) return 0;
            FEED_STEP();
        }
        /* SYNC(feed): the answer's words, then the mark (below); pairs with resolve. */
        st_rel(r->base, HDR_FEED_PENDING, s);
        FEED_STEP();
        st_rel(r->base, HDR_FEED_EPOCH, e);
        FEED_STEP();
    } else {
        /* SYNC(feed): as above. */
        st_rel(r->base, HDR_FEED_PENDING, s);
        FEED_STEP();
    }
    if (r->multi_producer) {
        uint64_t want = (x & FEED_NEW) ? x | FEED_VOID : x;
        /* SYNC(feed): settled; fails if a recovery set VOID meanwhile (then we look again). */
        return cas_sc(r->base, HDR_FEED_MARK, &want, 0);
    }
    /* SYNC(feed): settled; pairs with the acquire of the mark in ring_feed_state. */
    st_rel(r->base, HDR_FEED_MARK, 0);
    FEED_STEP();
    return 1;
}

int ring_feed_begin(ring_t *r, feed_t *f, uint64_t epoch, uint64_t first_seq) {
    for (int waited = 0;;) {
        /* SYNC(feed): the mark; pairs with its release stores and exchanges. */
        uint64_t x = ld_acq(r->base, HDR_FEED_MARK);
        if (!(x & FEED_PEND) || done(r, x)) break;
        if ((x & (FEED_NEW | FEED_VOID)) == (FEED_NEW | FEED_VOID) && waited < 500) {
            /* A recovery is settling it (feed_claim_lost): a few stores. */
            pause_ms(2);
            waited++;
            continue;
        }
        if (settle(r, x)) break;
    }
    /* SYNC(feed): the settled words; pairs with settle's and the producer's release stores. */
    f->e = ld_acq(r->base, HDR_FEED_EPOCH);
    f->p = ld_acq(r->base, HDR_FEED_PENDING);
    f->s = ld_acq(r->base, HDR_FEED_SEQ);
    if (epoch == f->e && first_seq <= f->p) return FEED_STALE;
    f->epoch = epoch;
    f->next = first_seq;
    f->fresh = epoch != f->e;
    f->first = f->marked = f->unpublished = f->pub_new = 0;
    return RING_OK;
}

/* spsc, broadcast: pads the rest of the lap and publishes the padding alone
 * (the FEED words are settled: it changes no answer), so that a note and its
 * message, one claim, never wait for more than half the ring plus a note. */
static int pad_lap(ring_t *r) {
    uint64_t t = r->tail_local, idx = t & r->mask, pad = r->cap - idx, end = t + pad;
    r->want = pad;
    if (r->untether_ns) {
        /* SYNC(gate-epoch): as in ring_claim; pairs with the add in ring_retether. */
        uint64_t ge = ld_acq(r->base, OFF_GATE_EPOCH);
        if (ge != r->gate_epoch) {
            r->gate_epoch = ge;
            r->limit = 0;
        }
    }
    if (end > r->limit) {
        r->limit = ring_gate(r);
        if (end > r->limit && r->untether_ns) r->limit = ring_untether(r, end, r->limit);
        if (end > r->limit) return RING_AGAIN;
    }
    if (r->validating) {
        if (end > ld_rlx(r->base, OFF_INTENT)) st_rlx(r->base, OFF_INTENT, end);
        /* SYNC(intent): as in ring_claim: the intent before the bytes it covers. */
        fence_rel();
    }
    st_rlx(r->base, SEQ_OFF(r, t), t);
    st_rlx(r->base, WORD_OFF(r, t), rec_word((int32_t)pad, REC_PAD, 0, 0, LAP(r, t)));
    r->tail_local = end;
    r->pending = 1;
    ring_flush(r);
    FEED_STEP();
    return RING_OK;
}

/* The first record of a new epoch: one claim of FEED_NOTE more bytes, the
 * note (the key before it) at its start, the message after. */
static int claim_first(ring_t *r, feed_t *f, uint64_t len, char **payload) {
    if (len > r->max_message) return RING_TOOBIG;
    uint64_t reclen = align_up(len + FEED_NOTE + RECORD_HEADER, RECORD_ALIGN);
    if (!r->multi_producer && (r->tail_local & r->mask) + reclen > r->cap) {
        int rc = pad_lap(r);
        if (rc != RING_OK) return rc;
    }
    r->max_message += FEED_NOTE;
    int rc = ring_claim(r, len + FEED_NOTE, payload);
    r->max_message -= FEED_NOTE;
    if (rc != RING_OK) return rc;
    FEED_STEP();
    uint64_t p = r->claim_pos;
    char *body = *payload;
    memcpy(body, &f->e, 8);
    memcpy(body + 8, &f->p, 8);
    *payload = body + FEED_NOTE;
    f->first = 1;
    f->note = p;
    if (!r->multi_producer) return RING_OK; /* the words change at publish */
    /* SYNC(feed): S names the note (settled: no answer reads S), then the mark, then the new
     * key; each a release, so the note's bytes come before the mark. Pairs with resolve. */
    st_rel(r->base, HDR_FEED_SEQ, p);
    FEED_STEP();
    f->s = p;
    st_rel(r->base, HDR_FEED_MARK, p | FEED_PEND | FEED_NEW); /* SYNC(feed) */
    FEED_STEP();
    st_rel(r->base, HDR_FEED_EPOCH, f->epoch);
    FEED_STEP();
    st_rel(r->base, HDR_FEED_PENDING, f->next); /* SYNC(feed) */
    FEED_STEP();
    f->marked = 1;
    /* SYNC(revoke): revoked before the mark was stored (revocation did not see it)? */
    if (ld_acq(r->base, WORD_OFF(r, p)) != r->claim_word) return claim_revoked(r, p);
    return RING_OK;
}

int ring_feed_claim(ring_t *r, feed_t *f, uint64_t len, char **payload) {
    if (f->fresh) return claim_first(r, f, len, payload);
    if (!r->multi_producer) return ring_claim(r, len, payload);
    if (len > r->max_message) return RING_TOOBIG;
    /* Mark where the claim will land before making it, so that recovery and revocation, which
     * act on claims, always find the mark naming it. SYNC(tail-claim): pairs with the claims'
     * exchange of tail. */
    uint64_t t = ld_acq(r->base, OFF_TAIL), idx = t & r->mask;
    uint64_t reclen = align_up(len + RECORD_HEADER, RECORD_ALIGN);
    uint64_t pos = idx + reclen > r->cap ? t + (r->cap - idx) : t;
    if (f->s != f->p) {
        /* SYNC(feed): S = P while settled (no answer reads S); pairs with resolve. */
        st_rel(r->base, HDR_FEED_SEQ, f->p);
        FEED_STEP();
        f->s = f->p;
    }
    /* SYNC(feed): the mark (pending, not done: the answer is (E, S)), then the new key. */
    st_rel(r->base, HDR_FEED_MARK, pos | FEED_PEND);
    FEED_STEP();
    st_rel(r->base, HDR_FEED_PENDING, f->next);
    FEED_STEP();
    f->marked = 1;
    int rc = ring_claim(r, len, payload);
    if (rc == RING_OK) FEED_STEP();
    if (rc == RING_OK && r->claim_pos != pos) {
        /* Another producer claimed first: the mark follows our claim (a window, design.md). */
        /* SYNC(feed): as above. */
        st_rel(r->base, HDR_FEED_MARK, r->claim_pos | FEED_PEND);
        FEED_STEP();
    }
    return rc;
}

/* The claim of claim_first, committed: the message inside it first, then
 * the note's word, which is the commit (mpsc, mpmc) or is published with the
 * batch (spsc, broadcast). */
static int commit_first(ring_t *r, uint64_t len) {
    uint64_t p = r->claim_pos, q = p + FEED_NOTE;
    uint64_t mw = rec_word((int32_t)(len + RECORD_HEADER), REC_MSG, 0, 0, LAP(r, q));
    uint64_t nw = rec_word((int32_t)FEED_NOTE, REC_PAD, 0, 0, LAP(r, p));
    r->claimed = 0;
    if (!r->multi_producer) {
        if (r->pattern == PATTERN_BROADCAST) {
            r->msgno++;
            st_rlx(r->base, SEQ_OFF(r, q), r->msgno);
            st_rlx(r->base, OFF_LATEST, q);
            /* SYNC(msgno): as in ring_commit; pairs with the acquire in ring_consumer_join. */
            st_rel(r->base, OFF_MSGNO, r->msgno);
        } else {
            st_rlx(r->base, SEQ_OFF(r, q), q);
        }
        st_rlx(r->base, WORD_OFF(r, q), mw);
        st_rlx(r->base, WORD_OFF(r, p), nw);
        r->tail_local = r->claim_end;
    } else {
        st_rlx(r->base, SEQ_OFF(r, q), q);
        /* SYNC(commit): the message's word before the note's (the commit, below): a consumer
         * reads it only after it acquired the note's word. */
        st_rel(r->base, WORD_OFF(r, q), mw);
        FEED_STEP();
        st_rlx(r->base, r->slot_off + SLOT_CLAIM_LEN, r->claim_end - r->claim_start);
        uint64_t cw = r->claim_word;
        /* SYNC(commit), SYNC(revoke): the commit, as in ring_commit; fails against a
         * revocation. */
        if (!cas_sc(r->base, WORD_OFF(r, p), &cw, nw)) return claim_revoked(r, r->claim_start);
        /* SYNC(claim-intent): committed: no claim in flight. */
        st_rel(r->base, r->slot_off + SLOT_CLAIM_POS, CLAIM_NONE);
    }
    r->messages++;
    r->bytes += len;
    r->pending = 1;
    return RING_OK;
}

int ring_feed_commit(ring_t *r, feed_t *f, uint64_t len) {
    int rc = f->first ? commit_first(r, len) : ring_commit(r, len);
    int was_first = f->first;
    f->first = 0;
    if (rc != RING_OK) return rc;
    FEED_STEP();
    if (r->multi_producer) {
        f->e = f->epoch;
        f->p = f->next;
        f->marked = 0;
    } else {
        if (was_first) f->pub_new = 1;
        f->unpublished = 1;
        f->last = f->next;
    }
    f->fresh = 0;
    f->next++;
    return RING_OK;
}

void ring_feed_publish(ring_t *r, feed_t *f) {
    if (r->multi_producer || !f->unpublished) {
        ring_flush(r);
        return;
    }
    uint64_t end = r->tail_local;
    if (f->pub_new) {
        /* SYNC(feed): S names the note (settled), the mark (not done: the note), the new key,
         * then tail (ring_flush): done. Pairs with resolve and ring_feed_state. */
        st_rel(r->base, HDR_FEED_SEQ, f->note);
        FEED_STEP();
        f->s = f->note;
        st_rel(r->base, HDR_FEED_MARK, end | FEED_PEND | FEED_NEW); /* SYNC(feed) */
        FEED_STEP();
        st_rel(r->base, HDR_FEED_EPOCH, f->epoch);
        FEED_STEP();
    } else {
        if (f->s != f->p) {
            /* SYNC(feed): as above. */
            st_rel(r->base, HDR_FEED_SEQ, f->p);
            FEED_STEP();
            f->s = f->p;
        }
        /* SYNC(feed): as above. */
        st_rel(r->base, HDR_FEED_MARK, end | FEED_PEND);
        FEED_STEP();
    }
    /* SYNC(feed): as above. */
    st_rel(r->base, HDR_FEED_PENDING, f->last);
    FEED_STEP();
    ring_flush(r);
    FEED_STEP();
    f->e = f->epoch;
    f->p = f->last;
    f->unpublished = f->pub_new = 0;
}

void ring_feed_end(ring_t *r, feed_t *f) {
    ring_feed_publish(r, f);
    if (!r->multi_producer || !f->marked) return;
    /* Our mark names a claim that failed (full, closed, revoked before we marked) or was
     * never made: the key before it, as settle would (we are alive: nobody else settles it). */
    f->marked = 0;
    /* SYNC(feed): the mark; pairs with its release stores. */
    uint64_t x = ld_acq(r->base, HDR_FEED_MARK);
    if ((x & FEED_PEND) && !done(r, x)) settle(r, x);
}

void feed_claim_lost(ring_t *r, uint64_t pos) {
    if (!r->multi_producer || pos == CLAIM_NONE) return;
    /* SYNC(feed): the mark; pairs with its release stores and exchanges. */
    uint64_t x = ld_acq(r->base, HDR_FEED_MARK);
    if (!(x & FEED_PEND) || (x & FEED_VOID) || X_POS(x) != pos) return;
    if (done(r, x)) return; /* committed before its producer died (or was revoked) */
    if (x & FEED_NEW) {
        /* The note dies with the padding (consumers zero it): settle from it now. */
        (void)settle(r, x);
        return;
    }
    uint64_t want = x;
    /* SYNC(feed): never done from now on; pairs with the acquire of the mark in resolve. */
    (void)cas_sc(r->base, HDR_FEED_MARK, &want, x | FEED_VOID);
}
