/*
 * layout.h - the byte layout of a shmring region. The single source of truth:
 * the Python side reads every offset and size below from the extension
 * (shmring._core.LAYOUT) and never restates a number.
 *
 * A region is one named POSIX shared-memory segment:
 *
 *   0                                                        REGION_HEADER_SIZE
 *   +---------+------+------+------+-------+-------+------+-------+------------+
 *   | HEADER  | TAIL | HEAD | READ | DATA  | SPACE | CTRL | STATS | QUARANTINE |
 *   | line 0  | line | line | line | futex | futex | line | line  | line       |
 *   +---------+------+------+------+-------+-------+------+-------+------------+
 *   SLOTS_OFFSET: slot_count attach slots, SLOT_SIZE bytes each
 *   data_offset (page aligned): the ring, capacity bytes (a power of two)
 *
 * Every counter lives on its own LINE-byte line (128: two 64-byte lines, so
 * the adjacent-line prefetcher does not make neighbours share) so a producer
 * and a consumer never write the same cache line.
 *
 * HEADER (line 0), written by the creator before MAGIC, which is stored last
 * with release order (the publication an attacher waits for):
 *
 *   0  magic        u64  "SHMRING\x01" once the header is complete
 *   8  version      u32  LAYOUT_VERSION
 *   12 pattern      u32  PATTERN_*
 *   16 total_size   u64  bytes of the whole segment
 *   24 capacity     u64  ring bytes, a power of two
 *   32 max_message  u64  largest payload accepted
 *   40 slot_count   u32  attach slots
 *   44 flags        u32  FLAG_*
 *   48 created_ns   u64  CLOCK_REALTIME at creation
 *   56 data_offset  u64  offset of the ring bytes
 *   64 creator_pid  u64
 *   72 untether_ns  u64  lossless broadcast: slow_consumer_timeout in ns, 0 =
 *                        never. A consumer whose cursor gates the producer
 *                        and has not moved for this long is untethered (its
 *                        state becomes SLOT_UNTETHERED, so it gates no more;
 *                        ring/untether.c). Nonzero also makes the producer
 *                        keep `intent` (as lossy broadcast does), so every
 *                        reader validates its copies
 *   80 lease_ms     u64  mpmc: how long a consumer may hold one record before
 *                        the supervisor hands it to the other consumers
 *                        (ring/lease.c), in milliseconds; 0 = the supervisor's
 *                        default (--lease-timeout), LEASE_NEVER = never
 *   88 slot_high    u64  attach slots ever taken: every slot at or above it is
 *                        free and untouched (all zeros). Raised, by compare-
 *                        exchange, *before* the slot's pid word is taken, so a
 *                        walk that reads it first misses only slots taken after
 *                        it started; never lowered. Walks of the table stop
 *                        there, so the pages of a large table that nobody used
 *                        are never read, hence never allocated (tmpfs allocates
 *                        a page on its first fault, a read fault included)
 *   96 feed_epoch   u64  FEED words: a fed ring (ProducerCore._send_fed, ring/
 *  104 feed_seq     u64  feed.c) keeps here which keyed record (epoch, seq) was
 *  112 feed_pending u64  committed last, exact whatever instant its producer
 *  120 feed_mark    u64  died at. Zero on a ring never fed. The rule below.
 *
 * FEED (words E, S, P, X at 96..120; X's low four bits are flags, the rest a
 * ring position, record-aligned). The last committed key is:
 *
 *   X without FEED_PEND                  (E, P)   "settled"
 *   X with FEED_PEND, its record done    (E, P)
 *   not done, FEED_NEW                   the note's (epoch, seq): 16 bytes
 *                                        at the body of the PAD record at S
 *   not done otherwise                   (E, S)
 *
 * "Done" says whether the pending commit happened. spsc and broadcast (the
 * producer publishes with tail): X is the end of the pending publication,
 * done when tail >= X. mpsc and mpmc (tail is the claim pointer): X is the
 * start of the pending record, done when its word is committed (a message;
 * for FEED_NEW the note's PAD word, committed after the message inside the
 * same claim) or head is past it (consumed); FEED_VOID: never (recovery or
 * revocation turned the claim into padding; set before the padding exists,
 * so a consumed padding never reads as a consumed record).
 *
 * A producer changes the words one store at a time, each leaving a state the
 * rule reads right: from settled (E, P = last committed) it stores S = P, then
 * X = end|PEND (not done: (E, S)), then P = new last, then commits (done:
 * (E, P)). A batch of another epoch than E begins with a note: one claim
 * holding a FEED_NOTE-byte PAD record whose body is (E, P), then the first
 * message; the producer stores S = the note's position (still settled), then
 * X |= FEED_NEW (not done: the note), then E and P, then commits. A producer
 * that finds a pending, not done X settles it before its first claim (P and
 * E from the answer, then X = 0). Exact for a ring whose fed producer is its
 * only producer; docs/design.md, "Fed rings", lists the instants at which a
 * multi-producer answer can still be wrong.
 *
 * Counters are 64-bit sequence numbers (byte positions in an unbounded
 * stream), never wrapped indices; position p lives at ring[p & (capacity-1)].
 *
 *   TAIL  tail        next position a producer claims (or, for single-producer
 *                     patterns, the end of the last committed record)
 *   HEAD  head        everything before it is free again; producers are gated
 *                     by head + capacity (broadcast: by the slowest cursor)
 *   READ  read_claim  mpmc: next record a consumer may take
 *         +8 latest   broadcast: start of the newest record (lapped readers
 *                     jump there)
 *         +16 intent  lossy broadcast, and lossless broadcast with untether_ns:
 *                     end of the record being written
 *                     (a seqlock: readers validate against it)
 *         +24 redeliver mpmc: records handed back by recovery, not yet retaken
 *   DATA  futex u32 (bumped when data arrives), +8 waiters u32
 *   SPACE futex u32 (bumped when space is freed), +8 waiters u32
 *   CTRL  eos u32, +4 broken u32, +8 producer_owner u64 (slot+1 or 0),
 *         +16 consumer_owner u64 (slot+1 or 0), +24 msgno u64 (broadcast),
 *         +32 gate_epoch u64 (broadcast with untether_ns: bumped by a
 *         consumer that gates again after it was untethered; a producer that
 *         sees it change recomputes its limit before its next claim)
 *   STATS totals of endpoints that are gone (closed, or recovered after their
 *         process died), folded in when their slot is freed; live endpoints
 *         count in their own slots. Cold path only (`shmring ls`):
 *         in_msgs u64, +8 in_bytes, +16 out_msgs, +24 out_bytes
 *   QUARANTINE (mpsc, mpmc) claims the supervisor revoked from a producer
 *         that held them too long (stopped, or stuck): count u64 of entries
 *         in use, then QUAR_ENTRIES entries of QUAR_ENTRY bytes:
 *           0 pos u64  start of the revoked claim (as its slot's claim_pos)
 *           8 len u64  its length (as claim_len), 0 = entry free
 *          16 flags u64 QUAR_DONE once its producer is done writing (it saw
 *                      the revocation, or died); bits 8-20 owner slot+1
 *                      (QUAR_OWNER_SHIFT, QUAR_OWNER_MASK)
 *         Producers are gated by min(head, pos) + capacity while an entry is
 *         in use: the claim's bytes are not reused until the supervisor
 *         lifts the entry (QUAR_DONE and head past the claim: it zeroes the
 *         bytes, then frees the entry). See ring/revoke.c.
 *
 * ATTACH SLOT (SLOT_SIZE bytes, one per attached channel or endpoint):
 *
 *   0  pid         u64   0 = free; taken with compare-exchange. The top bit
 *                        (SLOT_RECOVERING) is set, by compare-exchange, by
 *                        whoever recovers the slot of a dead process, so
 *                        two recoverers never run on one slot
 *   8  start_time  u64   field 22 of /proc/<pid>/stat (tells pid reuse apart)
 *   16 role        u32   ROLE_*
 *   20 state       u32   SLOT_* (SLOT_UNTETHERED: a broadcast consumer the
 *                        producer stopped waiting for; it sets ACTIVE again
 *                        itself when it next reads)
 *   24 claim_pos   u64   producer: position of the claim in flight, or NONE
 *   32 claim_len   u64   its length including any padding before it; the
 *                        top bit (CLAIM_CONFIRMED) once the claim is won
 *   40 cursor      u64   broadcast consumer: next position it reads
 *   48 messages    u64   messages sent or received through this endpoint
 *   56 bytes       u64   payload bytes sent or received
 *   64 missed      u64   lossy (or untethered) broadcast: messages this
 *                        consumer never saw
 *   72 last_msgno  u64   lossy broadcast, and broadcast with untether_ns:
 *                        number of the last message read
 *   80 link_in     u64   mpmc consumer (a pipeline worker): 1 + position of the
 *                        input record whose outputs it is sending (a linked
 *                        commit, ring/link.c), 0 = none. Producer: 1 + position
 *                        of its linked claim in flight, 0 = none: recovery of
 *                        the producer waits while it is set (the input's
 *                        recovery decides and clears it), revocation skips it
 *   88 link_out    u64   consumer: 1 + position of the output record claimed
 *                        for that input (in the output region), 0 = none;
 *                        LINK_RESOLVING (bit 63) while a recovery decides on
 *                        it. Producer: 1 + the input's consumer slot
 *   96 link_region u64   consumer: the output region's id (its segment's
 *                        inode); producer: the input region's
 *   104 link_done  u64   consumer: outputs of the input committed (bits 0-31);
 *                        bits 32-44 the output endpoint's slot+1; LINK_COUNTED
 *                        (the output at link_out is in the count), LINK_SINGLE
 *                        (one output completes the input: map), LINK_COMPLETE
 *   The link words are mpmc (and mpsc/mpmc producer) words only. A broadcast
 *   consumer uses 88..104 for its durable subscription instead (DURABLE
 *   below; 80 stays 0, so links_input never mistakes it for a pipeline's):
 *   88 durable_tag   u64 the subscription's tag (any 64-bit value)
 *   96 durable_hold  u64 nanoseconds its slot outlives its holder; 0 = not
 *                        durable (an ordinary subscriber). Both stored by the
 *                        holder before it joins, never changed while taken
 *   104 durable_until u64 0 while its holder lives; once the holder died,
 *                        the CLOCK_MONOTONIC ns at which the orphan expires
 *                        (stored by recovery before the pid word says orphan)
 *   112 pidns      u64   the holder's PID namespace: the inode of its
 *                        /proc/self/ns/pid (0 = not known yet: stored after
 *                        the pid, before the start time). The pid and start
 *                        time mean something only in that namespace: nobody
 *                        judges the holder from a /proc of another one
 *                        (_proc.py holder_alive, Census)
 *   120 lease      u64   mpmc consumer: leases the supervisor revoked from it
 *                        (bits 0-62, counted after each); LEASE_BUSY (bit 63)
 *                        while one is being handed back (ring/lease.c): a
 *                        worker waits for it to clear before it starts a new
 *                        linked item, so its link words stay readable
 *
 * DURABLE (a lossless broadcast consumer made by Channel._durable_consumer;
 * ring/recover.c, shmring/_region/slots.py, shmring/_channel/durable.py):
 *   A durable slot whose holder dies and that had joined (state ACTIVE or
 *   UNTETHERED) is not freed by recovery: ring_recover_slot stores
 *   durable_until = now + hold and answers RECOVER_ORPHANED, and the
 *   recoverer (who holds pid | SLOT_RECOVERING) stores the pid word
 *   SLOT_RECOVERING | SLOT_ORPHAN | dead pid (low 32 bits). The slot keeps
 *   its role, state and cursor, so it gates the producer as a live slow
 *   consumer does; every walk that skips SLOT_RECOVERING skips it.
 *   Adoption: a process asking for the same tag compare-exchanges the orphan
 *   word to SLOT_RECOVERING | its pid (walks still skip it), stores its PID
 *   namespace, its start time, durable_until 0, then its pid (release): the
 *   cursor is kept, it reads on from the oldest record the dead holder had
 *   not settled. Expiry: once durable_until has passed, whoever expires it
 *   (the supervisor, reap_dead) compare-exchanges the orphan word to
 *   SLOT_RECOVERING | dead pid, recovers it as any dead slot (its state
 *   CLOSING: it gates no more) and frees it. Exactly one of adopters and
 *   expirers wins the orphan word.
 *
 * RECORD (RECORD_ALIGN-aligned; a record never straddles the end of the ring,
 * a PAD record fills the end instead):
 *
 *   0  word   u64  bits 0-31  length (int32: header + payload, unaligned);
 *                              negative while claimed, positive once committed
 *                  bits 32-35 type   (REC_MSG, REC_PAD, REC_REVOKED: a
 *                                     claim the supervisor revoked; read as
 *                                     padding, never zeroed by consumers)
 *                  bits 36-39 state  (mpmc: 0 ready, TAKEN, DONE, SWEEP,
 *                                     LEASED: its lease was revoked and the
 *                                     supervisor is handing it back)
 *                  bits 40-52 owner  (mpmc: slot+1 of the consumer holding it;
 *                                     13 bits: MAX_SLOTS 8191)
 *                  bits 53-63 lap    (position / capacity, low 11 bits)
 *
 *   What the lap is for. The word is compare-exchanged from a value read
 *   earlier (an mpmc take, a sweep, a recovery's pad). Were a reader
 *   stalled between its load and its exchange while the ring went round and
 *   the same index came to hold a word equal in every other field (same
 *   length, type, state and owner), the exchange would act on a record of a
 *   later lap: an ABA. The lap makes such words differ unless the ring went
 *   round a multiple of 2^11 = 2048 times meanwhile (2 MiB of records
 *   through the smallest, 1 KiB ring; 32 MiB through a Queue's first 16 KiB
 *   ring). It is not the only guard: every exchange that can act on a stale
 *   word (peek_mpmc and take_redelivered taking a record, sweep marking one)
 *   checks the record's seq word (its full 64-bit position, written before
 *   the word is published and not rewritten while the record is taken or
 *   being swept) right after winning, and gives the record back unchanged if
 *   it is of another lap. So the lap only keeps such rare losers rare; a
 *   narrower lap cannot make a wrong record taken or swept. The reads that
 *   compare a lap without exchanging (a sweep's stop test, the revoked-claim
 *   test, link.c's "consumed since" test, ring_has_data's hint) either check
 *   seq too or only decide whether to look again. Recovery and revocation
 *   exchange words of claims in flight, which no lap can pass (head, hence
 *   the next lap, waits for a claim). Sixteen bits of lap bought nothing
 *   these checks do not already give; the owner needs 13 bits for 4,096 and
 *   more processes on one queue (12 would give 4,095 slots).
 *   8  seq    u64  the record's own position (broadcast: its message number);
 *                  a reader checks it, so corrupt counters are caught
 *   16 payload
 *
 * LINKED RECORD (the payload of a record sent by a linked commit begins with
 * LINK_HDR bytes; the rest is the sender's):
 *
 *   0  item     u64  the item's id, assigned once at the pipeline's source
 *   8  attempts u32  times a consumer took it to pass it on (ring_link_begin)
 *   12 done     u32  outputs of it committed by earlier attempts (recovery
 *                    writes it when it hands the record back)
 *
 * QUEUE CONTROL BLOCK (shmring.Queue, CTL_BYTES at a LINE-aligned offset of
 * the ring bytes of the queue's second, ".ctl" region; csrc/py/queue.c and
 * shmring/_queue both use it). Words that change often sit on lines of
 * their own, so a putter and a getter do not pass one line back and forth:
 *
 *   0    puts             u64  items put (counted before they are written)
 *   128  gets             u64  items taken (counted after), and puts undone
 *   256  notfull_seq      u32  futex word: bumped when an item is taken
 *                              (maxsize > 0)
 *   264  notfull_waiters  u64  putters asleep on notfull_seq
 *   384  unfinished       u64  JoinableQueue: items put and not task_done()
 *   512  join_seq         u32  futex word: bumped when unfinished reaches 0
 *   520  join_waiters     u64  join() callers asleep on join_seq
 *   640  maxsize          u64  maxsize in items (0: unbounded), at creation
 *   648  magic            u64  CTL_MAGIC_VALUE once the block is initialised
 */
#ifndef SHMRING_LAYOUT_H
#define SHMRING_LAYOUT_H

#include <stdint.h>

#define SHMRING_MAGIC 0x01474e49524d4853ULL /* "SHMRING\x01" little-endian */
#define LAYOUT_VERSION 3u

#define LINE 128u

#define HDR_MAGIC 0u
#define HDR_VERSION 8u
#define HDR_PATTERN 12u
#define HDR_TOTAL_SIZE 16u
#define HDR_CAPACITY 24u
#define HDR_MAX_MESSAGE 32u
#define HDR_SLOT_COUNT 40u
#define HDR_FLAGS 44u
#define HDR_CREATED_NS 48u
#define HDR_DATA_OFFSET 56u
#define HDR_CREATOR_PID 64u
#define HDR_UNTETHER_NS 72u
#define HDR_LEASE_MS 80u
#define LEASE_NEVER UINT64_MAX
#define HDR_SLOT_HIGH 88u
#define HDR_FEED_EPOCH 96u
#define HDR_FEED_SEQ 104u
#define HDR_FEED_PENDING 112u
#define HDR_FEED_MARK 120u
#define FEED_PEND 1u  /* in HDR_FEED_MARK: a commit is pending at its position */
#define FEED_NEW 2u   /* it begins a new epoch: the key before it is in the note at S */
#define FEED_VOID 4u  /* mpsc, mpmc: its claim was padded or revoked: never done */
#define FEED_FLAGS 15u
#define FEED_NOTE 32u /* the note: a PAD record, its body (epoch u64, seq u64) */

#define OFF_TAIL (1u * LINE)
#define OFF_HEAD (2u * LINE)
#define OFF_READ_CLAIM (3u * LINE)
#define OFF_LATEST (3u * LINE + 8u)
#define OFF_INTENT (3u * LINE + 16u)
#define OFF_REDELIVER (3u * LINE + 24u)
#define OFF_DATA_FUTEX (4u * LINE)
#define OFF_DATA_WAITERS (4u * LINE + 8u)
#define OFF_SPACE_FUTEX (5u * LINE)
#define OFF_SPACE_WAITERS (5u * LINE + 8u)
#define OFF_EOS (6u * LINE)
#define OFF_BROKEN (6u * LINE + 4u)
#define OFF_PRODUCER_OWNER (6u * LINE + 8u)
#define OFF_CONSUMER_OWNER (6u * LINE + 16u)
#define OFF_MSGNO (6u * LINE + 24u)
#define OFF_GATE_EPOCH (6u * LINE + 32u)
#define OFF_STATS_IN_MSGS (7u * LINE)
#define OFF_STATS_IN_BYTES (7u * LINE + 8u)
#define OFF_STATS_OUT_MSGS (7u * LINE + 16u)
#define OFF_STATS_OUT_BYTES (7u * LINE + 24u)

#define OFF_QUAR_COUNT (8u * LINE)
#define OFF_QUAR_ENTRIES (8u * LINE + 8u)
#define QUAR_ENTRY 24u
#define QUAR_ENTRIES 5u
#define QUAR_POS 0u
#define QUAR_LEN 8u
#define QUAR_FLAGS 16u
#define QUAR_DONE 1u
#define QUAR_OWNER_SHIFT 8u   /* in QUAR_FLAGS: owner slot+1 */
#define QUAR_OWNER_MASK 0x1FFFu

#define REGION_HEADER_SIZE (9u * LINE)
#define SLOTS_OFFSET REGION_HEADER_SIZE
#define SLOT_SIZE LINE
#define MAX_SLOTS 8191u /* the record owner field is 13 bits: slot+1 <= 8191 */

#define SLOT_PID 0u
#define SLOT_START_TIME 8u
#define SLOT_ROLE 16u
#define SLOT_STATE 20u
#define SLOT_CLAIM_POS 24u
#define SLOT_CLAIM_LEN 32u
#define SLOT_CURSOR 40u
#define SLOT_MESSAGES 48u
#define SLOT_BYTES 56u
#define SLOT_MISSED 64u
#define SLOT_LAST_MSGNO 72u

#define SLOT_LINK_IN 80u
#define SLOT_LINK_OUT 88u
#define SLOT_LINK_REGION 96u
#define SLOT_LINK_DONE 104u
#define SLOT_PIDNS 112u
#define SLOT_LEASE 120u
#define LEASE_BUSY (1ULL << 63) /* in SLOT_LEASE */
#define LEASE_COUNT_MASK (LEASE_BUSY - 1)

#define LINK_COUNT_MASK 0xFFFFFFFFull
#define LINK_SLOT_SHIFT 32u
#define LINK_SLOT_MASK 0x1FFFull
#define LINK_COUNTED (1ULL << 61)
#define LINK_SINGLE (1ULL << 62)
#define LINK_COMPLETE (1ULL << 63)
#define LINK_RESOLVING (1ULL << 63) /* in link_out */

#define LINK_HDR 16u
#define LINK_HDR_ITEM 0u
#define LINK_HDR_ATTEMPTS 8u
#define LINK_HDR_DONE 12u

#define SLOT_RECOVERING (1ULL << 63) /* in SLOT_PID: a recoverer holds the slot */
#define SLOT_ORPHAN (1ULL << 62)     /* in SLOT_PID, with RECOVERING: a held orphan */
#define SLOT_ORPHAN_PID 0xFFFFFFFFull /* in an orphan's SLOT_PID: the dead holder's pid */

#define SLOT_DURABLE_TAG 88u   /* broadcast consumer: the durable subscription's tag */
#define SLOT_DURABLE_HOLD 96u  /* its hold in ns; 0 = not durable */
#define SLOT_DURABLE_UNTIL 104u /* CLOCK_MONOTONIC ns its orphan expires at; 0 = held */

#define CLAIM_NONE UINT64_MAX
#define CLAIM_CONFIRMED (1ULL << 63) /* in claim_len: our CAS of tail succeeded */

#define PATTERN_SPSC 1u
#define PATTERN_MPSC 2u
#define PATTERN_MPMC 3u
#define PATTERN_BROADCAST 4u

#define FLAG_PERSISTENT 1u
#define FLAG_LOSSY 2u

#define ROLE_ATTACH 1u
#define ROLE_PRODUCER 2u
#define ROLE_CONSUMER 3u

#define SLOT_FREE 0u
#define SLOT_ACTIVE 1u
#define SLOT_CLOSING 2u
#define SLOT_UNTETHERED 3u /* broadcast consumer dropped from gating */

#define RECORD_HEADER 16u
#define RECORD_ALIGN 16u
#define REC_WORD 0u /* offsets in a record */
#define REC_SEQ 8u

/* Fields of the record word: shift and mask (the mask of the field's
 * width, applied after the shift). */
#define REC_LEN_MASK 0xFFFFFFFFu
#define REC_TYPE_SHIFT 32u
#define REC_TYPE_MASK 0xFu
#define REC_STATE_SHIFT 36u
#define REC_STATE_MASK 0xFu
#define REC_OWNER_SHIFT 40u
#define REC_OWNER_MASK 0x1FFFu
#define REC_LAP_SHIFT 53u
#define REC_LAP_MASK 0x7FFu

#define REC_MSG 1u
#define REC_PAD 2u
#define REC_REVOKED 3u

#define ST_READY 0u
#define ST_TAKEN 1u
#define ST_DONE 2u
#define ST_SWEEP 3u
#define ST_LEASED 4u

#define CTL_PUTS 0u
#define CTL_GETS (1u * LINE)
#define CTL_NOTFULL_SEQ (2u * LINE)
#define CTL_NOTFULL_WAITERS (2u * LINE + 8u)
#define CTL_UNFINISHED (3u * LINE)
#define CTL_JOIN_SEQ (4u * LINE)
#define CTL_JOIN_WAITERS (4u * LINE + 8u)
#define CTL_MAXSIZE (5u * LINE)
#define CTL_MAGIC (5u * LINE + 8u)
#define CTL_BYTES (6u * LINE)
#define CTL_MAGIC_VALUE 0x3274634F51524853ULL /* "SHRQOct2" little-endian */

#define MIN_CAPACITY 1024u
#define MAX_CAPACITY (1ULL << 40)
#define PAGE_ALIGN 4096u

/* n rounded up to a multiple of a (a power of two): record sizes. */
static inline uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) & ~(a - 1); }

#endif
