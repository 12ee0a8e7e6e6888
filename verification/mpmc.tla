-------------------------------- MODULE mpmc --------------------------------
(***************************************************************************)
(* Lapwing ring-core: the multi-producer claim protocol with lapping        *)
(* readers and messages that span several slots.                           *)
(*                                                                         *)
(* Geometry as in ring-core (ARCHITECTURE.md "ring-core: the design"):      *)
(*   header ring of H slots: message s has its header in slot s % H;       *)
(*   arena of C slots: position q lives in slot q % C.                     *)
(* Each message chooses its size: k chunks, k \in Sizes.  k = 0 is an      *)
(* inline message (no arena claim; w1 holds its one data word); k >= 1 is  *)
(* an arena message: w1 = the arena position of its first chunk, and each  *)
(* chunk holds one data word.  w0 = the length, modelled as a tag naming   *)
(* the seq and k (the reader derives the chunk count from it, as the code  *)
(* derives it from len; since slot layout v2 the code carries an inline    *)
(* length in the done stamp's tag bits and an arena length in w0, and the  *)
(* model's separate w0 step over-approximates both).                       *)
(* Stamps (their phase; the code adds 6 tag bits): 2n+1 while writing n,   *)
(* 2n+2 when done, 0                                                       *)
(* never written; n is the seq for header slots and the arena position for *)
(* chunk slots.                                                            *)
(*                                                                         *)
(* Producers (MpPublisher::publish -> Ring::claim, Ring::write):           *)
(*   seq := fetch_add(head, 1); pos := fetch_add(arena_head, k) if k > 0   *)
(*   (two separate atomics: the two orders need not agree), then for each  *)
(*   chunk and finally the header: CAS stamp prev_done -> odd (spinning    *)
(*   while an older writer of that slot is not done), payload words, stamp *)
(*   := even.  Chunks first, header last.                                  *)
(* Readers (Reader::try_read -> Reader::step):                             *)
(*   Ring::read_header (stamp, w0, w1, fence + re-check), then             *)
(*   Ring::copy_arena (each chunk: stamp must be exactly done(pos+k),      *)
(*   word, re-check).  Any mismatch: lapped -> Ring::resume_after_lap:     *)
(*   h := head (a load that may return an older value than the current     *)
(*   one, see RLagStart), floor = max(h-H, g) where g is a load of the     *)
(*   ring's shared gone_below word, from = max(next+1, floor),             *)
(*   to = max(h, from); first seq c in [from, to) whose Ring::probe is not *)
(*   Gone, else `to`.  If the scan began at the floor (from = floor), every *)
(*   seq below c is gone or doomed, and the reader raises gone_below to c  *)
(*   (fetch_max), so that other lapped readers need not probe them again.  *)
(*                                                                         *)
(* Single = TRUE models the single-producer path instead (Publisher::      *)
(* publish_parts -> Ring::write with owned = true, then publish_head): one *)
(* producer takes seq = head without advancing it, stamps each slot odd    *)
(* with a plain store (it owns every slot, no CAS), and stores head := s+1 *)
(* (Release) only after the header's done stamp.  A reader's Acquire load  *)
(* of done(s) then tells it head >= s (the head store comes after), and an *)
(* odd stamp tells it nothing.  Since head counts published seqs here, the *)
(* strict LagSkipsOnlyGone must hold as well.                              *)
(*                                                                         *)
(* The one shared word a reader writes is gone_below; apart from it a      *)
(* reader's behaviours with N producers are the projections of those of    *)
(* any number of readers.  Most configs use one reader; mpmc_floor and     *)
(* mpmc_long_floor use two, so that one reader's scan feeds the other.     *)
(*                                                                         *)
(* Mutants (same spec, one guarded difference):                            *)
(*   "none"           the real protocol                                    *)
(*   "no_cas"         claim by fetch_add, then a plain odd-stamp store      *)
(*                    (no CAS from the previous lap's done value)          *)
(*   "header_first"   the writer commits the header before its chunks      *)
(*   "no_chunk_check" copy_arena trusts the header and skips the exact     *)
(*                    chunk stamp checks                                   *)
(*   "lapped_as_empty" read_header treats every stamp other than done(seq)  *)
(*                    as NotYet (`!=` where `<` is meant): a lapped reader *)
(*                    waits forever instead of reporting the lag           *)
(*   "scan_to_head"   the lag scan ends at the loaded head h, not          *)
(*                    max(h, from)                                         *)
(*   "probe_no_chunk" Ring::probe trusts a committed header and skips the  *)
(*                    first chunk's stamp check                            *)
(*   "floor_from_cursor" a scan that began at next+1 (above the floor)     *)
(*                    raises gone_below too, although the seqs below       *)
(*                    next were never shown gone                           *)
(***************************************************************************)
EXTENDS Integers, FiniteSets

CONSTANTS
    H,          \* header slots
    C,          \* arena (chunk) slots
    Sizes,      \* chunk counts a message may have (0 = inline)
    MaxSeq,     \* producers claim seqs 0 .. MaxSeq-1 in total
    Producers,  \* set of producer ids
    Readers,    \* set of reader ids
    Late,       \* readers that start at seq LateAt (Start::At); the rest at 0
    LateAt,
    RelSeq,     \* TRUE: credit the claim CAS with continuing the release
                \* sequence of the previous lap's done stamp (C11 does)
    Single,     \* TRUE: the single-producer path (see above)
    Mutant

MaxK == CHOOSE m \in Sizes : \A x \in Sizes : x <= m

ASSUME H >= 1 /\ Sizes \subseteq 0 .. 9 /\ Sizes # {} /\ C >= MaxK /\ MaxSeq >= 1
ASSUME Late \subseteq Readers /\ LateAt \in 0 .. MaxSeq - 1
ASSUME RelSeq \in BOOLEAN
ASSUME Single \in BOOLEAN /\ (Single => Cardinality(Producers) = 1)
ASSUME Mutant \in {"none", "no_cas", "header_first", "no_chunk_check", "lapped_as_empty",
                   "scan_to_head", "probe_no_chunk", "floor_from_cursor"}

HSlots == 0 .. H - 1
ASlots == 0 .. C - 1
Seqs   == 0 .. MaxSeq - 1
Chunks == 0 .. MaxK - 1
NoPos  == -1

Writing(n)     == 2 * n + 1
Done(n)        == 2 * n + 2
PrevDone(n, S) == IF n >= S THEN Done(n - S) ELSE 0
Max(a, b)      == IF a > b THEN a ELSE b
StartOf(r)     == IF r \in Late THEN LateAt ELSE 0

\* Payload values: injective in (seq, part), so any mixed or stale read is
\* visible.  Tag(s, k) stands for the length word of message s of k chunks;
\* SizeOf(tag) is what the reader derives from it.  Inline(s) is the data
\* word of an inline message.
Tag(s, k)   == 100 + 10 * s + k
SizeOf(t)   == (t - 100) % 10
Val(s, k)   == 1000 + s * 10 + k
Inline(s)   == 5000 + s

VARIABLES
    \* shared memory
    hstamp, hw0, hw1,   \* header slots: stamp, w0 (length/tag), w1 (arena pos)
    astamp, adata,      \* arena slots: stamp, one data word
    head,               \* claim counter for seqs (Ring::head)
    arenaHead,          \* claim counter for arena positions
    \* producer-local
    wpc,     \* [Producers -> {"idle","claimarena","cbegin","cword","cend",
             \*                "hbegin","hw0","hw1","hend"}]
    wseq, wpos, wk,
    wn,      \* [Producers -> Sizes] chunk count of the message being written
    \* reader-local
    next,    \* [Readers -> Nat]
    rpc,     \* [Readers -> {"hstamp","empty","hw0","hw1","hrecheck","cstamp","cword",
             \*              "crecheck","lagstart","pstamp","pw1","precheck","pchunk"}]
    rtag, rpos, rk, rdata,  \* header copy, chunk index, chunk copy
    from, to, cand, ppos,   \* lag scan (resume_after_lap / probe)
    ptag,                   \* the probed header's length word
    hseen,   \* [Readers -> Nat] lower bound of the reader's next head load
    fromFloor, \* [Readers -> BOOLEAN] the current scan began at the floor
    goneBelow, \* shared: Ring::gone_below, every seq below it gone or doomed
    \* ghost / history
    posOf,      \* [Seqs -> Int] arena position claimed for each seq
    kOf,        \* [Seqs -> Int] chunk count chosen for each seq (-1: unclaimed)
    delivered, missed, last,
    intact,     \* every delivery equalled what was written for its seq
    orderOk,    \* delivered seqs strictly increase
    lagGone,    \* every lag report happened at a seq that was really gone
    lagDoomed,  \* every skipped seq was gone, or its slot claimed by a later lap
    lagStrict,  \* every skipped seq was gone (see the finding in README)
    lagFwd,     \* every lag report moved the cursor forward (missed >= 1)
    resumeOk,   \* every lag resumed at `to` or at a seq not yet written, inline,
                \* or with its first chunk intact when reported
    monotone    \* no stamp ever decreased

vars == <<hstamp, hw0, hw1, astamp, adata, head, arenaHead, wpc, wseq, wpos, wk, wn,
          next, rpc, rtag, rpos, rk, rdata, from, to, cand, ppos, ptag, hseen,
          fromFloor, goneBelow, posOf, kOf, delivered, missed, last, intact, orderOk, lagGone, lagDoomed,
          lagStrict, lagFwd, resumeOk, monotone>>
mem   == <<hstamp, hw0, hw1, astamp, adata>>
wloc  == <<head, arenaHead, wpc, wseq, wpos, wk, wn, posOf, kOf>>
\* reader variables that only the lag scan and the ghosts of Report change
floorv == <<fromFloor, goneBelow>>
lagv  == <<ptag, hseen, lagFwd, resumeOk, fromFloor, goneBelow>>
rloc  == <<next, rpc, rtag, rpos, rk, rdata, from, to, cand, ppos,
           delivered, missed, last, intact, orderOk, lagGone, lagDoomed, lagStrict>>

Init ==
    /\ hstamp = [i \in HSlots |-> 0]
    /\ hw0 = [i \in HSlots |-> 0]
    /\ hw1 = [i \in HSlots |-> 0]
    /\ astamp = [i \in ASlots |-> 0]
    /\ adata = [i \in ASlots |-> 0]
    /\ head = 0 /\ arenaHead = 0
    /\ wpc = [p \in Producers |-> "idle"]
    /\ wseq = [p \in Producers |-> 0]
    /\ wpos = [p \in Producers |-> 0]
    /\ wk = [p \in Producers |-> 0]
    /\ wn = [p \in Producers |-> 0]
    /\ next = [r \in Readers |-> StartOf(r)]
    /\ rpc = [r \in Readers |-> "hstamp"]
    /\ rtag = [r \in Readers |-> 0]
    /\ rpos = [r \in Readers |-> 0]
    /\ rk = [r \in Readers |-> 0]
    /\ rdata = [r \in Readers |-> [k \in Chunks |-> 0]]
    /\ from = [r \in Readers |-> 0]
    /\ to = [r \in Readers |-> 0]
    /\ cand = [r \in Readers |-> 0]
    /\ ppos = [r \in Readers |-> 0]
    /\ ptag = [r \in Readers |-> 0]
    /\ hseen = [r \in Readers |-> 0]
    /\ fromFloor = [r \in Readers |-> FALSE]
    /\ goneBelow = 0
    /\ posOf = [s \in Seqs |-> NoPos]
    /\ kOf = [s \in Seqs |-> -1]
    /\ delivered = [r \in Readers |-> 0]
    /\ missed = [r \in Readers |-> 0]
    /\ last = [r \in Readers |-> -1]
    /\ intact = [r \in Readers |-> TRUE]
    /\ orderOk = [r \in Readers |-> TRUE]
    /\ lagGone = [r \in Readers |-> TRUE]
    /\ lagDoomed = [r \in Readers |-> TRUE]
    /\ lagStrict = [r \in Readers |-> TRUE]
    /\ lagFwd = [r \in Readers |-> TRUE]
    /\ resumeOk = [r \in Readers |-> TRUE]
    /\ monotone = TRUE

(***************************************************************************)
(* Producers                                                               *)
(***************************************************************************)

\* Stamp update with the monotonicity ghost.
SetH(i, v) == /\ hstamp' = [hstamp EXCEPT ![i] = v]
              /\ monotone' = (monotone /\ v >= hstamp[i])
SetA(i, v) == /\ astamp' = [astamp EXCEPT ![i] = v]
              /\ monotone' = (monotone /\ v >= astamp[i])

AfterChunks == IF Mutant = "header_first" THEN "idle" ELSE "hbegin"
FirstPart   == IF Mutant = "header_first" THEN "hbegin" ELSE "cbegin"

\* Ring::claim, first half: seq := head.fetch_add(1), for a message of
\* k \in Sizes chunks.  An inline message (k = 0) claims no arena position
\* (the code's `pos` is 0 and unused) and goes straight to its header.
PClaim(p) ==
    /\ wpc[p] = "idle" /\ head < MaxSeq
    /\ \E k \in Sizes :
         /\ wn' = [wn EXCEPT ![p] = k]
         /\ kOf' = [kOf EXCEPT ![head] = k]
         /\ wpc' = [wpc EXCEPT ![p] = IF k = 0 THEN "hbegin" ELSE "claimarena"]
         /\ wpos' = [wpos EXCEPT ![p] = 0]
    /\ wseq' = [wseq EXCEPT ![p] = head]
    \* Single: head is published after the write (PHEnd), not claimed here.
    /\ head' = IF Single THEN head ELSE head + 1
    /\ UNCHANGED <<mem, monotone, arenaHead, wk, posOf>> /\ UNCHANGED rloc /\ UNCHANGED lagv

\* Ring::claim, second half: pos := arena_head.fetch_add(k)
PClaimArena(p) ==
    /\ wpc[p] = "claimarena"
    /\ wpos' = [wpos EXCEPT ![p] = arenaHead]
    /\ posOf' = [posOf EXCEPT ![wseq[p]] = arenaHead]
    /\ arenaHead' = arenaHead + wn[p]
    /\ wk' = [wk EXCEPT ![p] = 0]
    /\ wpc' = [wpc EXCEPT ![p] = FirstPart]
    /\ UNCHANGED <<mem, monotone, head, wseq, wn, kOf>> /\ UNCHANGED rloc /\ UNCHANGED lagv

\* slot::begin_write on chunk pos+k: CAS stamp prev_done -> odd (Acquire),
\* fence(Release).  Disabled (the writer spins) while the slot does not hold
\* the previous lap's done stamp.  MUTANT no_cas: a plain store.
PCBegin(p) ==
    /\ wpc[p] = "cbegin"
    /\ LET n == wpos[p] + wk[p] IN
         /\ Mutant = "no_cas" \/ Single \/ astamp[n % C] = PrevDone(n, C)
         /\ SetA(n % C, Writing(n))
    /\ wpc' = [wpc EXCEPT ![p] = "cword"]
    /\ UNCHANGED <<hstamp, hw0, hw1, adata>>
    /\ UNCHANGED <<head, arenaHead, wseq, wpos, wk, wn, posOf, kOf>> /\ UNCHANGED rloc /\ UNCHANGED lagv

PCWord(p) ==
    /\ wpc[p] = "cword"
    /\ LET n == wpos[p] + wk[p] IN
         adata' = [adata EXCEPT ![n % C] = Val(wseq[p], wk[p])]
    /\ wpc' = [wpc EXCEPT ![p] = "cend"]
    /\ UNCHANGED <<hstamp, hw0, hw1, astamp, monotone>>
    /\ UNCHANGED <<head, arenaHead, wseq, wpos, wk, wn, posOf, kOf>> /\ UNCHANGED rloc /\ UNCHANGED lagv

\* slot::end_write: stamp := done (Release)
PCEnd(p) ==
    /\ wpc[p] = "cend"
    /\ LET n == wpos[p] + wk[p] IN SetA(n % C, Done(n))
    /\ IF wk[p] = wn[p] - 1
         THEN /\ wpc' = [wpc EXCEPT ![p] = AfterChunks]
              /\ UNCHANGED wk
         ELSE /\ wk' = [wk EXCEPT ![p] = wk[p] + 1]
              /\ wpc' = [wpc EXCEPT ![p] = "cbegin"]
    /\ UNCHANGED <<hstamp, hw0, hw1, adata>>
    /\ UNCHANGED <<head, arenaHead, wseq, wpos, wn, posOf, kOf>> /\ UNCHANGED rloc /\ UNCHANGED lagv

\* begin_write on the header slot (same CAS rule, with H)
PHBegin(p) ==
    /\ wpc[p] = "hbegin"
    /\ LET s == wseq[p] IN
         /\ Mutant = "no_cas" \/ Single \/ hstamp[s % H] = PrevDone(s, H)
         /\ SetH(s % H, Writing(s))
    /\ wpc' = [wpc EXCEPT ![p] = "hw0"]
    /\ UNCHANGED <<hw0, hw1, astamp, adata>>
    /\ UNCHANGED <<head, arenaHead, wseq, wpos, wk, wn, posOf, kOf>> /\ UNCHANGED rloc /\ UNCHANGED lagv

PHW0(p) ==
    /\ wpc[p] = "hw0"
    /\ hw0' = [hw0 EXCEPT ![wseq[p] % H] = Tag(wseq[p], wn[p])]
    /\ wpc' = [wpc EXCEPT ![p] = "hw1"]
    /\ UNCHANGED <<hstamp, hw1, astamp, adata, monotone>>
    /\ UNCHANGED <<head, arenaHead, wseq, wpos, wk, wn, posOf, kOf>> /\ UNCHANGED rloc /\ UNCHANGED lagv

PHW1(p) ==
    /\ wpc[p] = "hw1"
    /\ hw1' = [hw1 EXCEPT ![wseq[p] % H] = IF wn[p] = 0 THEN Inline(wseq[p]) ELSE wpos[p]]
    /\ wpc' = [wpc EXCEPT ![p] = "hend"]
    /\ UNCHANGED <<hstamp, hw0, astamp, adata, monotone>>
    /\ UNCHANGED <<head, arenaHead, wseq, wpos, wk, wn, posOf, kOf>> /\ UNCHANGED rloc /\ UNCHANGED lagv

\* Single: Ring::publish_head (head := s+1, Release) right after the header's
\* done stamp, one step later in the code (no reader can tell the
\* difference between "just after" and "in the same step").
PHEnd(p) ==
    /\ wpc[p] = "hend"
    /\ SetH(wseq[p] % H, Done(wseq[p]))
    /\ wpc' = [wpc EXCEPT ![p] = IF Mutant = "header_first" /\ wn[p] > 0 THEN "cbegin" ELSE "idle"]
    /\ head' = IF Single THEN wseq[p] + 1 ELSE head
    /\ UNCHANGED <<hw0, hw1, astamp, adata>>
    /\ UNCHANGED <<arenaHead, wseq, wpos, wk, wn, posOf, kOf>> /\ UNCHANGED rloc /\ UNCHANGED lagv

Producer(p) ==
    \/ PClaim(p) \/ PClaimArena(p)
    \/ PCBegin(p) \/ PCWord(p) \/ PCEnd(p)
    \/ PHBegin(p) \/ PHW0(p) \/ PHW1(p) \/ PHEnd(p)

(***************************************************************************)
(* Readers                                                                 *)
(***************************************************************************)

\* The state of message x right now, as the ghost sees it.
ChunksIntact(x) ==
    \A k \in 0 .. kOf[x] - 1 : astamp[(posOf[x] + k) % C] = Done(posOf[x] + k)
Gone(x) ==
    \/ hstamp[x % H] > Done(x)
    \/ hstamp[x % H] = Done(x) /\ ~ChunksIntact(x)
\* x cannot be delivered any more, or a later lap has already claimed its
\* header slot or one of its chunk positions.
\* The claim counter: head, or with a single producer head plus the seq it
\* is writing (taken but not published yet).
Claimed == IF Single THEN head + Cardinality({p \in Producers : wpc[p] # "idle"}) ELSE head
Doomed(x) ==
    \/ Gone(x)
    \/ Claimed > x + H
    \/ posOf[x] # NoPos /\ arenaHead > posOf[x] + C

\* x's header was not yet written for x (the reader waits there), or x is
\* inline, or its first arena chunk is intact.  (The header itself may have
\* been overwritten since the probe checked it: the next read then reports
\* another lag, which Accounting covers.)
HeldOrPending(x) ==
    \/ hstamp[x % H] < Done(x)
    \/ kOf[x] = 0
    \/ astamp[posOf[x] % C] = Done(posOf[x])

RUn == UNCHANGED mem /\ UNCHANGED monotone /\ UNCHANGED wloc

\* What an Acquire load of header stamp st tells the reader about head (the
\* claim counter): a done stamp Done(s) is a Release store by the writer of
\* s, which had claimed s, so head >= s+1 from then on.  An odd stamp
\* Writing(s) is written by the claim CAS; C11 makes that CAS continue the
\* release sequence of the previous lap's Done(s-H), so (RelSeq) it tells
\* head >= s-H+1.  Without RelSeq the model credits odd stamps with nothing,
\* which allows more (older) head values than C11 does.
HeadKnown(st) ==
    IF st = 0 THEN 0
    ELSE IF Single THEN (IF st % 2 = 0 THEN st \div 2 - 1 ELSE 0)
    ELSE IF st % 2 = 0 THEN st \div 2
    ELSE IF RelSeq /\ (st - 1) \div 2 >= H THEN (st - 1) \div 2 - H + 1
    ELSE 0
Sync(r, st) == hseen' = [hseen EXCEPT ![r] = Max(@, HeadKnown(st))]

\* Ring::read_header: stamp load (Acquire), three-way decision
RHStamp(r) ==
    /\ rpc[r] = "hstamp"
    /\ LET st == hstamp[next[r] % H] IN
       rpc' = [rpc EXCEPT ![r] = IF st = Done(next[r]) THEN "hw0"
                                 ELSE IF st < Done(next[r]) \/ Mutant = "lapped_as_empty"
                                      THEN "empty"                         \* Header::NotYet
                                 ELSE "lagstart"]                          \* Header::Gone
    /\ Sync(r, hstamp[next[r] % H])
    /\ RUn /\ UNCHANGED <<ptag, lagFwd, resumeOk>> /\ UNCHANGED floorv
    /\ UNCHANGED <<next, rtag, rpos, rk, rdata, from, to, cand, ppos, delivered,
                   missed, last, intact, orderOk, lagGone, lagDoomed, lagStrict>>

\* Step::Empty returned; the caller polls again.
RRetry(r) ==
    /\ rpc[r] = "empty"
    /\ rpc' = [rpc EXCEPT ![r] = "hstamp"]
    /\ RUn /\ UNCHANGED lagv
    /\ UNCHANGED <<next, rtag, rpos, rk, rdata, from, to, cand, ppos, delivered,
                   missed, last, intact, orderOk, lagGone, lagDoomed, lagStrict>>

RHW0(r) ==
    /\ rpc[r] = "hw0"
    /\ rtag' = [rtag EXCEPT ![r] = hw0[next[r] % H]]
    /\ rpc' = [rpc EXCEPT ![r] = "hw1"]
    /\ RUn /\ UNCHANGED lagv
    /\ UNCHANGED <<next, rpos, rk, rdata, from, to, cand, ppos, delivered,
                   missed, last, intact, orderOk, lagGone, lagDoomed, lagStrict>>

RHW1(r) ==
    /\ rpc[r] = "hw1"
    /\ rpos' = [rpos EXCEPT ![r] = hw1[next[r] % H]]
    /\ rpc' = [rpc EXCEPT ![r] = "hrecheck"]
    /\ RUn /\ UNCHANGED lagv
    /\ UNCHANGED <<next, rtag, rk, rdata, from, to, cand, ppos, delivered,
                   missed, last, intact, orderOk, lagGone, lagDoomed, lagStrict>>

\* slot::still_stamped on the header: fence(Acquire), stamp load, compare
Deliver(r) ==
    /\ intact' = [intact EXCEPT ![r] =
                    @ /\ rtag[r] = Tag(next[r], kOf[next[r]])
                      /\ (kOf[next[r]] = 0 => rpos[r] = Inline(next[r]))
                      /\ \A k \in 0 .. kOf[next[r]] - 1 : rdata[r][k] = Val(next[r], k)]
    /\ orderOk' = [orderOk EXCEPT ![r] = @ /\ next[r] > last[r]]
    /\ last' = [last EXCEPT ![r] = next[r]]
    /\ delivered' = [delivered EXCEPT ![r] = @ + 1]
    /\ next' = [next EXCEPT ![r] = @ + 1]
    /\ rpc' = [rpc EXCEPT ![r] = "hstamp"]

\* A consistent header of an inline message (length <= INLINE_MAX) is the
\* whole message: Reader::step delivers it.  Otherwise copy_arena.
RHRecheck(r) ==
    /\ rpc[r] = "hrecheck"
    /\ IF hstamp[next[r] % H] # Done(next[r])
         THEN /\ rpc' = [rpc EXCEPT ![r] = "lagstart"]
              /\ UNCHANGED <<rk, next, rdata, delivered, last, intact, orderOk>>
       ELSE IF SizeOf(rtag[r]) = 0
         THEN /\ Deliver(r)
              /\ UNCHANGED <<rk, rdata>>
       ELSE /\ rpc' = [rpc EXCEPT ![r] = "cstamp"]
            /\ rk' = [rk EXCEPT ![r] = 0]
            /\ UNCHANGED <<next, rdata, delivered, last, intact, orderOk>>
    /\ RUn /\ UNCHANGED lagv
    /\ UNCHANGED <<rtag, rpos, from, to, cand, ppos, missed, lagGone, lagDoomed, lagStrict>>

\* Ring::copy_arena, per chunk: stamp load (Acquire) must be exactly done(pos+k).
\* MUTANT no_chunk_check: go straight to the data word.
RCStamp(r) ==
    /\ rpc[r] = "cstamp"
    /\ LET n == rpos[r] + rk[r] IN
       rpc' = [rpc EXCEPT ![r] = IF Mutant = "no_chunk_check" \/ astamp[n % C] = Done(n)
                                 THEN "cword" ELSE "lagstart"]
    /\ RUn /\ UNCHANGED lagv
    /\ UNCHANGED <<next, rtag, rpos, rk, rdata, from, to, cand, ppos, delivered,
                   missed, last, intact, orderOk, lagGone, lagDoomed, lagStrict>>

RCWord(r) ==
    /\ rpc[r] = "cword"
    /\ rdata' = [rdata EXCEPT ![r][rk[r]] = adata[(rpos[r] + rk[r]) % C]]
    /\ rpc' = [rpc EXCEPT ![r] = IF Mutant = "no_chunk_check" THEN "cnext" ELSE "crecheck"]
    /\ RUn /\ UNCHANGED lagv
    /\ UNCHANGED <<next, rtag, rpos, rk, from, to, cand, ppos, delivered,
                   missed, last, intact, orderOk, lagGone, lagDoomed, lagStrict>>

\* still_stamped on the chunk; after the last chunk the message is delivered
\* (copy_arena needs no header re-check: position pos+k is written by one
\* writer only, ever, so the exact stamp proves the word is this message's).
ChunkDone(r) ==
    IF rk[r] = SizeOf(rtag[r]) - 1
      THEN /\ Deliver(r)
           /\ rdata' = [rdata EXCEPT ![r] = [k \in Chunks |-> 0]]  \* (model only)
           /\ UNCHANGED rk
      ELSE /\ rk' = [rk EXCEPT ![r] = rk[r] + 1]
           /\ rpc' = [rpc EXCEPT ![r] = "cstamp"]
           /\ UNCHANGED <<rdata, next, delivered, last, intact, orderOk>>

RCRecheck(r) ==
    /\ rpc[r] = "crecheck"
    /\ LET n == rpos[r] + rk[r] IN
       IF astamp[n % C] = Done(n)
         THEN ChunkDone(r)
         ELSE /\ rpc' = [rpc EXCEPT ![r] = "lagstart"]
              /\ UNCHANGED <<rk, rdata, next, delivered, last, intact, orderOk>>
    /\ RUn /\ UNCHANGED lagv
    /\ UNCHANGED <<rtag, rpos, from, to, cand, ppos, missed, lagGone, lagDoomed, lagStrict>>

\* MUTANT no_chunk_check: no re-check either.
RCNext(r) ==
    /\ rpc[r] = "cnext"
    /\ ChunkDone(r)
    /\ RUn /\ UNCHANGED lagv
    /\ UNCHANGED <<rtag, rpos, from, to, cand, ppos, missed, lagGone, lagDoomed, lagStrict>>

\* Ring::resume_after_lap: h := head (Acquire); g := gone_below (Acquire);
\* floor = max(h-H, g); from = max(next+1, floor); to = max(h, from).  Not
\* sequentially consistent: the head load returns any value between the one
\* the reader last synchronised with (hseen: its previous head loads and
\* the stamps it read, see HeadKnown) and the current head, so the guard
\* max(h, from) is exercised; the gone_below load returns any value up to
\* the current one (a stale floor only lengthens the scan).
RLagStart(r) ==
    /\ rpc[r] = "lagstart"
    /\ \E h \in hseen[r] .. head, g \in 0 .. goneBelow :
       LET fl == Max(h - H, g)
           f == Max(next[r] + 1, fl) IN
         /\ from' = [from EXCEPT ![r] = f]
         /\ fromFloor' = [fromFloor EXCEPT ![r] = (f = fl \/ Mutant = "floor_from_cursor")]
         /\ to' = [to EXCEPT ![r] = IF Mutant = "scan_to_head" THEN h ELSE Max(h, f)]
         /\ cand' = [cand EXCEPT ![r] = f]
         /\ hseen' = [hseen EXCEPT ![r] = h]
    /\ rpc' = [rpc EXCEPT ![r] = "pstamp"]
    /\ rtag' = [rtag EXCEPT ![r] = 0]   \* (model only: forget the copy)
    /\ rpos' = [rpos EXCEPT ![r] = 0]
    /\ rdata' = [rdata EXCEPT ![r] = [k \in Chunks |-> 0]]
    /\ RUn /\ UNCHANGED <<ptag, lagFwd, resumeOk, goneBelow>>
    /\ UNCHANGED <<next, rk, ppos, delivered, missed, last, intact, orderOk,
                   lagGone, lagDoomed, lagStrict>>

\* Reader::lag: report Lagged{missed: c - next, resume_seq: c}, cursor := c.
\* The ghosts record whether the report was justified.  A scan that began at
\* the floor raises gone_below to c (Ring::first_retained's fetch_max; one
\* step with the report, which no other thread can tell apart from "just
\* before it", and a stale load in RLagStart covers "not yet").
Report(r, c) ==
    /\ goneBelow' = IF fromFloor[r] /\ c > from[r] THEN Max(goneBelow, c) ELSE goneBelow
    /\ UNCHANGED fromFloor
    /\ missed' = [missed EXCEPT ![r] = @ + (c - next[r])]
    /\ lagGone' = [lagGone EXCEPT ![r] = @ /\ Gone(next[r])]
    /\ lagDoomed' = [lagDoomed EXCEPT ![r] = @ /\ \A x \in next[r] + 1 .. c - 1 : Doomed(x)]
    /\ lagStrict' = [lagStrict EXCEPT ![r] = @ /\ \A x \in next[r] .. c - 1 : Gone(x)]
    /\ lagFwd' = [lagFwd EXCEPT ![r] = @ /\ c > next[r]]
    /\ resumeOk' = [resumeOk EXCEPT ![r] = @ /\ (c = to[r] \/ HeldOrPending(c))]
    /\ next' = [next EXCEPT ![r] = c]
    /\ rpc' = [rpc EXCEPT ![r] = "hstamp"]
    /\ from' = [from EXCEPT ![r] = 0]   \* (model only)
    /\ to' = [to EXCEPT ![r] = 0]
    /\ cand' = [cand EXCEPT ![r] = 0]
    /\ ppos' = [ppos EXCEPT ![r] = 0]

ProbeGone(r) ==   \* candidate is Gone: try the next one, or resume at `to`
    IF cand[r] + 1 >= to[r]
      THEN Report(r, to[r])
      ELSE /\ cand' = [cand EXCEPT ![r] = @ + 1]
           /\ rpc' = [rpc EXCEPT ![r] = "pstamp"]
           /\ ppos' = [ppos EXCEPT ![r] = 0]
           /\ UNCHANGED <<next, missed, lagGone, lagDoomed, lagStrict, lagFwd, resumeOk, from, to>>
           /\ UNCHANGED floorv

ScanRest == <<rtag, rpos, rk, rdata, delivered, last, intact, orderOk>>

\* Ring::first_retained over [from, to), one Ring::probe at a time.  probe =
\* read_header (stamp, w1, re-check) + the first chunk's stamp.  An empty
\* range resumes at `to` at once.
\* (Its stamp loads synchronise like RHStamp's; the scan's range is already
\* fixed, so only a later lag's head load would notice.  Not modelled: it
\* only allows more behaviours.)
RPStamp(r) ==
    /\ rpc[r] = "pstamp"
    /\ IF cand[r] >= to[r] THEN Report(r, to[r])
       ELSE LET c == cand[r] IN
            IF hstamp[c % H] < Done(c) THEN Report(r, c)           \* Pending: wait there
            ELSE IF hstamp[c % H] > Done(c) THEN ProbeGone(r)
            ELSE /\ rpc' = [rpc EXCEPT ![r] = "pw0"]
                 /\ UNCHANGED <<next, missed, lagGone, lagDoomed, lagStrict, lagFwd, resumeOk, from, to,
                                cand, ppos>> /\ UNCHANGED floorv
    /\ RUn /\ UNCHANGED ScanRest /\ UNCHANGED <<ptag, hseen>>

RPW0(r) ==
    /\ rpc[r] = "pw0"
    /\ ptag' = [ptag EXCEPT ![r] = hw0[cand[r] % H]]
    /\ rpc' = [rpc EXCEPT ![r] = "pw1"]
    /\ RUn /\ UNCHANGED ScanRest /\ UNCHANGED <<hseen, lagFwd, resumeOk>> /\ UNCHANGED floorv
    /\ UNCHANGED <<next, missed, lagGone, lagDoomed, lagStrict, from, to, cand, ppos>>

RPW1(r) ==
    /\ rpc[r] = "pw1"
    /\ ppos' = [ppos EXCEPT ![r] = hw1[cand[r] % H]]
    /\ rpc' = [rpc EXCEPT ![r] = "precheck"]
    /\ RUn /\ UNCHANGED ScanRest /\ UNCHANGED lagv
    /\ UNCHANGED <<next, missed, lagGone, lagDoomed, lagStrict, from, to, cand>>

\* A consistent inline header is Retained; an arena one is Retained only if
\* its first chunk still carries exactly its done stamp (MUTANT
\* probe_no_chunk: trusted without looking).
RPRecheck(r) ==
    /\ rpc[r] = "precheck"
    /\ IF hstamp[cand[r] % H] # Done(cand[r]) THEN ProbeGone(r)
       ELSE IF SizeOf(ptag[r]) = 0 \/ Mutant = "probe_no_chunk" THEN Report(r, cand[r])
       ELSE /\ rpc' = [rpc EXCEPT ![r] = "pchunk"]
            /\ UNCHANGED <<next, missed, lagGone, lagDoomed, lagStrict, lagFwd, resumeOk, from, to, cand,
                           ppos>> /\ UNCHANGED floorv
    /\ RUn /\ UNCHANGED ScanRest /\ UNCHANGED <<ptag, hseen>>

RPChunk(r) ==
    /\ rpc[r] = "pchunk"
    /\ IF astamp[ppos[r] % C] = Done(ppos[r])
         THEN Report(r, cand[r])                                   \* Retained
         ELSE ProbeGone(r)
    /\ RUn /\ UNCHANGED ScanRest /\ UNCHANGED <<ptag, hseen>>

Reader(r) ==
    \/ RHStamp(r) \/ RRetry(r) \/ RHW0(r) \/ RHW1(r) \/ RHRecheck(r)
    \/ RCStamp(r) \/ RCWord(r) \/ RCRecheck(r) \/ RCNext(r)
    \/ RLagStart(r) \/ RPStamp(r) \/ RPW0(r) \/ RPW1(r) \/ RPRecheck(r) \/ RPChunk(r)

Next == (\E p \in Producers : Producer(p)) \/ (\E r \in Readers : Reader(r))

Spec == Init /\ [][Next]_vars

\* Per-process weak fairness (every thread eventually runs again).
FairSpec == Spec /\ \A p \in Producers : WF_vars(Producer(p))
                 /\ \A r \in Readers : WF_vars(Reader(r))

(***************************************************************************)
(* Properties                                                              *)
(***************************************************************************)

TypeOK ==
    /\ head \in 0 .. MaxSeq /\ arenaHead \in 0 .. MaxSeq * MaxK
    /\ next \in [Readers -> 0 .. MaxSeq]
    /\ goneBelow \in 0 .. MaxSeq

\* A delivered message equals what was written for exactly the seq the
\* reader aimed at: header tag and every chunk word.
NoTornRead == \A r \in Readers : intact[r]

\* One writer per slot: no two producers between the odd and the even stamp
\* of the same header slot or the same arena slot, across laps.
InHeader(p) == wpc[p] \in {"hw0", "hw1", "hend"}
InChunk(p)  == wpc[p] \in {"cword", "cend"}
OneWriter ==
    \A p, q \in Producers : p # q =>
        /\ ~(InHeader(p) /\ InHeader(q) /\ wseq[p] % H = wseq[q] % H)
        /\ ~(InChunk(p) /\ InChunk(q) /\ (wpos[p] + wk[p]) % C = (wpos[q] + wk[q]) % C)

\* Stamps never decrease.
StampsMonotone == monotone

\* No half-written multi-slot message is ever visible: a header stamped done
\* for s implies every chunk of s was stamped done (and may since have been
\* overwritten by a later lap, never be still unwritten or in progress).
NoHalfMessage ==
    \A i \in HSlots :
        LET st == hstamp[i] IN
        (st > 0 /\ st % 2 = 0) =>
            LET s == st \div 2 - 1 IN
            \A k \in 0 .. kOf[s] - 1 : astamp[(posOf[s] + k) % C] >= Done(posOf[s] + k)

DeliveredIncrease == \A r \in Readers : orderOk[r]
Accounting == \A r \in Readers : delivered[r] + missed[r] = next[r] - StartOf(r)

\* A reader reports a lag only when the message at its cursor is really gone.
LagOnlyWhenGone == \A r \in Readers : lagGone[r]
\* Everything else it skips was gone or already claimed by a newer lap.
LagSkipsOnlyDoomed == \A r \in Readers : lagDoomed[r]
\* FINDING (see README): the stronger "everything skipped was gone" does NOT
\* hold with several producers, because head is the claim counter: seqs
\* below head-H may still be readable while their slot's next writer has
\* claimed but not yet stamped it.
LagSkipsOnlyGone == \A r \in Readers : lagStrict[r]
\* Ring::gone_below is a true floor: every seq below it is gone or doomed.
\* (LagSkipsOnlyDoomed is what a reader would notice; this is why it holds
\* for a scan that starts at another reader's floor.)
FloorSound == \A x \in Seqs : x < goneBelow => Doomed(x)
\* Every Lagged report has missed >= 1: the cursor moves forward.
LagMovesForward == \A r \in Readers : lagFwd[r]
\* A lag resumes at the end of its scan range, at a seq not yet written, at
\* an inline seq, or at an arena seq whose first chunk was intact when the
\* lag was reported: what Ring::probe's chunk check is for.
LagResumesAtHeld == \A r \in Readers : resumeOk[r]

\* Liveness: every claim is eventually finished; every reader eventually
\* reaches the end of the (bounded) stream, i.e. it is never stuck while
\* messages are still being published.
ClaimsFinish == \A p \in Producers : (wpc[p] # "idle") ~> (wpc[p] = "idle")
ReaderProgress == \A r \in Readers : <>(next[r] = MaxSeq)
=============================================================================
