-------------------------------- MODULE mpmc --------------------------------
(***************************************************************************)
(* Lapwing ring-core: the multi-producer claim protocol with lapping        *)
(* readers and messages that span several slots.                           *)
(*                                                                         *)
(* Geometry as in ring-core (ARCHITECTURE.md "ring-core: the design"):      *)
(*   header ring of H slots: message s has its header in slot s % H;       *)
(*   arena of C slots: position q lives in slot q % C.                     *)
(* Every message here is an arena message of K chunks (K >= 1): its header *)
(* holds w0 = length (modelled as a tag that identifies the seq) and       *)
(* w1 = the arena position of its first chunk; each chunk holds one data   *)
(* word.  Stamps: 2n+1 while writing n, 2n+2 when done, 0 never written;   *)
(* n is the seq for header slots and the arena position for chunk slots.   *)
(*                                                                         *)
(* Producers (MpPublisher::publish -> Ring::claim, Ring::write):           *)
(*   seq := fetch_add(head, 1); pos := fetch_add(arena_head, K)            *)
(*   (two separate atomics: the two orders need not agree), then for each  *)
(*   chunk and finally the header: CAS stamp prev_done -> odd (spinning    *)
(*   while an older writer of that slot is not done), payload words, stamp *)
(*   := even.  Chunks first, header last.                                  *)
(* Readers (Reader::try_read -> Reader::step):                             *)
(*   Ring::read_header (stamp, w0, w1, fence + re-check), then             *)
(*   Ring::copy_arena (each chunk: stamp must be exactly done(pos+k),      *)
(*   word, re-check).  Any mismatch: lapped -> Ring::resume_after_lap:     *)
(*   from = max(next+1, head-H), to = max(head, from); first seq in        *)
(*   [from, to) whose Ring::probe is not Gone, else `to`.                  *)
(*                                                                         *)
(* Readers never write shared state, so one reader's behaviours with N     *)
(* producers are exactly the projections of the behaviours of any number   *)
(* of readers: the configs use one reader (Readers may be larger).         *)
(*                                                                         *)
(* Mutants (same spec, one guarded difference):                            *)
(*   "none"           the real protocol                                   *)
(*   "no_cas"         claim by fetch_add, then a plain odd-stamp store      *)
(*                    (no CAS from the previous lap's done value)          *)
(*   "header_first"   the writer commits the header before its chunks      *)
(*   "no_chunk_check" copy_arena trusts the header and skips the exact     *)
(*                    chunk stamp checks                                   *)
(*   "lapped_as_empty" read_header treats every stamp other than done(seq)  *)
(*                    as NotYet (`!=` where `<` is meant): a lapped reader *)
(*                    waits forever instead of reporting the lag           *)
(***************************************************************************)
EXTENDS Integers, FiniteSets

CONSTANTS
    H,          \* header slots
    C,          \* arena (chunk) slots
    K,          \* chunks per message
    MaxSeq,     \* producers claim seqs 0 .. MaxSeq-1 in total
    Producers,  \* set of producer ids
    Readers,    \* set of reader ids
    Mutant

ASSUME H >= 1 /\ C >= K /\ K >= 1 /\ MaxSeq >= 1
ASSUME Mutant \in {"none", "no_cas", "header_first", "no_chunk_check", "lapped_as_empty"}

HSlots == 0 .. H - 1
ASlots == 0 .. C - 1
Seqs   == 0 .. MaxSeq - 1
Chunks == 0 .. K - 1
NoPos  == -1

Writing(n)     == 2 * n + 1
Done(n)        == 2 * n + 2
PrevDone(n, S) == IF n >= S THEN Done(n - S) ELSE 0
Max(a, b)      == IF a > b THEN a ELSE b

\* Payload values: injective in (seq, part), so any mixed or stale read is
\* visible.  Tag(s) stands for the length word of message s.
Tag(s)      == 100 + s
Val(s, k)   == 1000 + s * K + k

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
    \* reader-local
    next,    \* [Readers -> Nat]
    rpc,     \* [Readers -> {"hstamp","empty","hw0","hw1","hrecheck","cstamp","cword",
             \*              "crecheck","lagstart","pstamp","pw1","precheck","pchunk"}]
    rtag, rpos, rk, rdata,  \* header copy, chunk index, chunk copy
    from, to, cand, ppos,   \* lag scan (resume_after_lap / probe)
    \* ghost / history
    posOf,      \* [Seqs -> Int] arena position claimed for each seq
    delivered, missed, last,
    intact,     \* every delivery equalled what was written for its seq
    orderOk,    \* delivered seqs strictly increase
    lagGone,    \* every lag report happened at a seq that was really gone
    lagDoomed,  \* every skipped seq was gone, or its slot claimed by a later lap
    lagStrict,  \* every skipped seq was gone (see the finding in README)
    monotone    \* no stamp ever decreased

vars == <<hstamp, hw0, hw1, astamp, adata, head, arenaHead, wpc, wseq, wpos, wk,
          next, rpc, rtag, rpos, rk, rdata, from, to, cand, ppos,
          posOf, delivered, missed, last, intact, orderOk, lagGone, lagDoomed,
          lagStrict, monotone>>
mem   == <<hstamp, hw0, hw1, astamp, adata>>
wloc  == <<head, arenaHead, wpc, wseq, wpos, wk, posOf>>
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
    /\ next = [r \in Readers |-> 0]
    /\ rpc = [r \in Readers |-> "hstamp"]
    /\ rtag = [r \in Readers |-> 0]
    /\ rpos = [r \in Readers |-> 0]
    /\ rk = [r \in Readers |-> 0]
    /\ rdata = [r \in Readers |-> [k \in Chunks |-> 0]]
    /\ from = [r \in Readers |-> 0]
    /\ to = [r \in Readers |-> 0]
    /\ cand = [r \in Readers |-> 0]
    /\ ppos = [r \in Readers |-> 0]
    /\ posOf = [s \in Seqs |-> NoPos]
    /\ delivered = [r \in Readers |-> 0]
    /\ missed = [r \in Readers |-> 0]
    /\ last = [r \in Readers |-> -1]
    /\ intact = [r \in Readers |-> TRUE]
    /\ orderOk = [r \in Readers |-> TRUE]
    /\ lagGone = [r \in Readers |-> TRUE]
    /\ lagDoomed = [r \in Readers |-> TRUE]
    /\ lagStrict = [r \in Readers |-> TRUE]
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

\* Ring::claim, first half: seq := head.fetch_add(1)
PClaim(p) ==
    /\ wpc[p] = "idle" /\ head < MaxSeq
    /\ wseq' = [wseq EXCEPT ![p] = head]
    /\ head' = head + 1
    /\ wpc' = [wpc EXCEPT ![p] = "claimarena"]
    /\ UNCHANGED <<mem, monotone, arenaHead, wpos, wk, posOf>> /\ UNCHANGED rloc

\* Ring::claim, second half: pos := arena_head.fetch_add(K)
PClaimArena(p) ==
    /\ wpc[p] = "claimarena"
    /\ wpos' = [wpos EXCEPT ![p] = arenaHead]
    /\ posOf' = [posOf EXCEPT ![wseq[p]] = arenaHead]
    /\ arenaHead' = arenaHead + K
    /\ wk' = [wk EXCEPT ![p] = 0]
    /\ wpc' = [wpc EXCEPT ![p] = FirstPart]
    /\ UNCHANGED <<mem, monotone, head, wseq>> /\ UNCHANGED rloc

\* slot::begin_write on chunk pos+k: CAS stamp prev_done -> odd (Acquire),
\* fence(Release).  Disabled (the writer spins) while the slot does not hold
\* the previous lap's done stamp.  MUTANT no_cas: a plain store.
PCBegin(p) ==
    /\ wpc[p] = "cbegin"
    /\ LET n == wpos[p] + wk[p] IN
         /\ Mutant = "no_cas" \/ astamp[n % C] = PrevDone(n, C)
         /\ SetA(n % C, Writing(n))
    /\ wpc' = [wpc EXCEPT ![p] = "cword"]
    /\ UNCHANGED <<hstamp, hw0, hw1, adata>>
    /\ UNCHANGED <<head, arenaHead, wseq, wpos, wk, posOf>> /\ UNCHANGED rloc

PCWord(p) ==
    /\ wpc[p] = "cword"
    /\ LET n == wpos[p] + wk[p] IN
         adata' = [adata EXCEPT ![n % C] = Val(wseq[p], wk[p])]
    /\ wpc' = [wpc EXCEPT ![p] = "cend"]
    /\ UNCHANGED <<hstamp, hw0, hw1, astamp, monotone>>
    /\ UNCHANGED <<head, arenaHead, wseq, wpos, wk, posOf>> /\ UNCHANGED rloc

\* slot::end_write: stamp := done (Release)
PCEnd(p) ==
    /\ wpc[p] = "cend"
    /\ LET n == wpos[p] + wk[p] IN SetA(n % C, Done(n))
    /\ IF wk[p] = K - 1
         THEN /\ wpc' = [wpc EXCEPT ![p] = AfterChunks]
              /\ UNCHANGED wk
         ELSE /\ wk' = [wk EXCEPT ![p] = wk[p] + 1]
              /\ wpc' = [wpc EXCEPT ![p] = "cbegin"]
    /\ UNCHANGED <<hstamp, hw0, hw1, adata>>
    /\ UNCHANGED <<head, arenaHead, wseq, wpos, posOf>> /\ UNCHANGED rloc

\* begin_write on the header slot (same CAS rule, with H)
PHBegin(p) ==
    /\ wpc[p] = "hbegin"
    /\ LET s == wseq[p] IN
         /\ Mutant = "no_cas" \/ hstamp[s % H] = PrevDone(s, H)
         /\ SetH(s % H, Writing(s))
    /\ wpc' = [wpc EXCEPT ![p] = "hw0"]
    /\ UNCHANGED <<hw0, hw1, astamp, adata>>
    /\ UNCHANGED <<head, arenaHead, wseq, wpos, wk, posOf>> /\ UNCHANGED rloc

PHW0(p) ==
    /\ wpc[p] = "hw0"
    /\ hw0' = [hw0 EXCEPT ![wseq[p] % H] = Tag(wseq[p])]
    /\ wpc' = [wpc EXCEPT ![p] = "hw1"]
    /\ UNCHANGED <<hstamp, hw1, astamp, adata, monotone>>
    /\ UNCHANGED <<head, arenaHead, wseq, wpos, wk, posOf>> /\ UNCHANGED rloc

PHW1(p) ==
    /\ wpc[p] = "hw1"
    /\ hw1' = [hw1 EXCEPT ![wseq[p] % H] = wpos[p]]
    /\ wpc' = [wpc EXCEPT ![p] = "hend"]
    /\ UNCHANGED <<hstamp, hw0, astamp, adata, monotone>>
    /\ UNCHANGED <<head, arenaHead, wseq, wpos, wk, posOf>> /\ UNCHANGED rloc

PHEnd(p) ==
    /\ wpc[p] = "hend"
    /\ SetH(wseq[p] % H, Done(wseq[p]))
    /\ wpc' = [wpc EXCEPT ![p] = IF Mutant = "header_first" THEN "cbegin" ELSE "idle"]
    /\ UNCHANGED <<hw0, hw1, astamp, adata>>
    /\ UNCHANGED <<head, arenaHead, wseq, wpos, wk, posOf>> /\ UNCHANGED rloc

Producer(p) ==
    \/ PClaim(p) \/ PClaimArena(p)
    \/ PCBegin(p) \/ PCWord(p) \/ PCEnd(p)
    \/ PHBegin(p) \/ PHW0(p) \/ PHW1(p) \/ PHEnd(p)

(***************************************************************************)
(* Readers                                                                 *)
(***************************************************************************)

\* The state of message x right now, as the ghost sees it.
ChunksIntact(x) ==
    \A k \in Chunks : astamp[(posOf[x] + k) % C] = Done(posOf[x] + k)
Gone(x) ==
    \/ hstamp[x % H] > Done(x)
    \/ hstamp[x % H] = Done(x) /\ ~ChunksIntact(x)
\* x cannot be delivered any more, or a later lap has already claimed its
\* header slot or one of its chunk positions.
Doomed(x) ==
    \/ Gone(x)
    \/ head > x + H
    \/ posOf[x] # NoPos /\ arenaHead > posOf[x] + C

RUn == UNCHANGED mem /\ UNCHANGED monotone /\ UNCHANGED wloc

\* Ring::read_header: stamp load (Acquire), three-way decision
RHStamp(r) ==
    /\ rpc[r] = "hstamp"
    /\ LET st == hstamp[next[r] % H] IN
       rpc' = [rpc EXCEPT ![r] = IF st = Done(next[r]) THEN "hw0"
                                 ELSE IF st < Done(next[r]) \/ Mutant = "lapped_as_empty"
                                      THEN "empty"                         \* Header::NotYet
                                 ELSE "lagstart"]                          \* Header::Gone
    /\ RUn
    /\ UNCHANGED <<next, rtag, rpos, rk, rdata, from, to, cand, ppos, delivered,
                   missed, last, intact, orderOk, lagGone, lagDoomed, lagStrict>>

\* Step::Empty returned; the caller polls again.
RRetry(r) ==
    /\ rpc[r] = "empty"
    /\ rpc' = [rpc EXCEPT ![r] = "hstamp"]
    /\ RUn
    /\ UNCHANGED <<next, rtag, rpos, rk, rdata, from, to, cand, ppos, delivered,
                   missed, last, intact, orderOk, lagGone, lagDoomed, lagStrict>>

RHW0(r) ==
    /\ rpc[r] = "hw0"
    /\ rtag' = [rtag EXCEPT ![r] = hw0[next[r] % H]]
    /\ rpc' = [rpc EXCEPT ![r] = "hw1"]
    /\ RUn
    /\ UNCHANGED <<next, rpos, rk, rdata, from, to, cand, ppos, delivered,
                   missed, last, intact, orderOk, lagGone, lagDoomed, lagStrict>>

RHW1(r) ==
    /\ rpc[r] = "hw1"
    /\ rpos' = [rpos EXCEPT ![r] = hw1[next[r] % H]]
    /\ rpc' = [rpc EXCEPT ![r] = "hrecheck"]
    /\ RUn
    /\ UNCHANGED <<next, rtag, rk, rdata, from, to, cand, ppos, delivered,
                   missed, last, intact, orderOk, lagGone, lagDoomed, lagStrict>>

\* slot::still_stamped on the header: fence(Acquire), stamp load, compare
RHRecheck(r) ==
    /\ rpc[r] = "hrecheck"
    /\ rpc' = [rpc EXCEPT ![r] = IF hstamp[next[r] % H] = Done(next[r]) THEN "cstamp"
                                 ELSE "lagstart"]
    /\ rk' = [rk EXCEPT ![r] = 0]
    /\ RUn
    /\ UNCHANGED <<next, rtag, rpos, rdata, from, to, cand, ppos, delivered,
                   missed, last, intact, orderOk, lagGone, lagDoomed, lagStrict>>

\* Ring::copy_arena, per chunk: stamp load (Acquire) must be exactly done(pos+k).
\* MUTANT no_chunk_check: go straight to the data word.
RCStamp(r) ==
    /\ rpc[r] = "cstamp"
    /\ LET n == rpos[r] + rk[r] IN
       rpc' = [rpc EXCEPT ![r] = IF Mutant = "no_chunk_check" \/ astamp[n % C] = Done(n)
                                 THEN "cword" ELSE "lagstart"]
    /\ RUn
    /\ UNCHANGED <<next, rtag, rpos, rk, rdata, from, to, cand, ppos, delivered,
                   missed, last, intact, orderOk, lagGone, lagDoomed, lagStrict>>

RCWord(r) ==
    /\ rpc[r] = "cword"
    /\ rdata' = [rdata EXCEPT ![r][rk[r]] = adata[(rpos[r] + rk[r]) % C]]
    /\ rpc' = [rpc EXCEPT ![r] = IF Mutant = "no_chunk_check" THEN "cnext" ELSE "crecheck"]
    /\ RUn
    /\ UNCHANGED <<next, rtag, rpos, rk, from, to, cand, ppos, delivered,
                   missed, last, intact, orderOk, lagGone, lagDoomed, lagStrict>>

Deliver(r) ==
    /\ intact' = [intact EXCEPT ![r] = @ /\ rtag[r] = Tag(next[r])
                                         /\ \A k \in Chunks : rdata[r][k] = Val(next[r], k)]
    /\ orderOk' = [orderOk EXCEPT ![r] = @ /\ next[r] > last[r]]
    /\ last' = [last EXCEPT ![r] = next[r]]
    /\ delivered' = [delivered EXCEPT ![r] = @ + 1]
    /\ next' = [next EXCEPT ![r] = @ + 1]
    /\ rpc' = [rpc EXCEPT ![r] = "hstamp"]

\* still_stamped on the chunk; after the last chunk the message is delivered
\* (copy_arena needs no header re-check: position pos+k is written by one
\* writer only, ever, so the exact stamp proves the word is this message's).
ChunkDone(r) ==
    IF rk[r] = K - 1
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
    /\ RUn
    /\ UNCHANGED <<rtag, rpos, from, to, cand, ppos, missed, lagGone, lagDoomed, lagStrict>>

\* MUTANT no_chunk_check: no re-check either.
RCNext(r) ==
    /\ rpc[r] = "cnext"
    /\ ChunkDone(r)
    /\ RUn
    /\ UNCHANGED <<rtag, rpos, from, to, cand, ppos, missed, lagGone, lagDoomed, lagStrict>>

\* Ring::resume_after_lap: head load (Acquire); from = max(next+1, head-H);
\* to = max(head, from).
RLagStart(r) ==
    /\ rpc[r] = "lagstart"
    /\ LET f == Max(next[r] + 1, head - H) IN
         /\ from' = [from EXCEPT ![r] = f]
         /\ to' = [to EXCEPT ![r] = Max(head, f)]
         /\ cand' = [cand EXCEPT ![r] = f]
    /\ rpc' = [rpc EXCEPT ![r] = "pstamp"]
    /\ rtag' = [rtag EXCEPT ![r] = 0]   \* (model only: forget the copy)
    /\ rpos' = [rpos EXCEPT ![r] = 0]
    /\ rdata' = [rdata EXCEPT ![r] = [k \in Chunks |-> 0]]
    /\ RUn
    /\ UNCHANGED <<next, rk, ppos, delivered, missed, last, intact, orderOk,
                   lagGone, lagDoomed, lagStrict>>

\* Reader::lag: report Lagged{missed: c - next, resume_seq: c}, cursor := c.
\* The ghosts record whether the report was justified.
Report(r, c) ==
    /\ missed' = [missed EXCEPT ![r] = @ + (c - next[r])]
    /\ lagGone' = [lagGone EXCEPT ![r] = @ /\ Gone(next[r])]
    /\ lagDoomed' = [lagDoomed EXCEPT ![r] = @ /\ \A x \in next[r] + 1 .. c - 1 : Doomed(x)]
    /\ lagStrict' = [lagStrict EXCEPT ![r] = @ /\ \A x \in next[r] .. c - 1 : Gone(x)]
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
           /\ UNCHANGED <<next, missed, lagGone, lagDoomed, lagStrict, from, to>>

ScanRest == <<rtag, rpos, rk, rdata, delivered, last, intact, orderOk>>

\* Ring::first_retained over [from, to), one Ring::probe at a time.  probe =
\* read_header (stamp, w1, re-check) + the first chunk's stamp.  An empty
\* range resumes at `to` at once.
RPStamp(r) ==
    /\ rpc[r] = "pstamp"
    /\ IF cand[r] >= to[r] THEN Report(r, to[r])
       ELSE LET c == cand[r] IN
            IF hstamp[c % H] < Done(c) THEN Report(r, c)           \* Pending: wait there
            ELSE IF hstamp[c % H] > Done(c) THEN ProbeGone(r)
            ELSE /\ rpc' = [rpc EXCEPT ![r] = "pw1"]
                 /\ UNCHANGED <<next, missed, lagGone, lagDoomed, lagStrict, from, to, cand, ppos>>
    /\ RUn /\ UNCHANGED ScanRest

RPW1(r) ==
    /\ rpc[r] = "pw1"
    /\ ppos' = [ppos EXCEPT ![r] = hw1[cand[r] % H]]
    /\ rpc' = [rpc EXCEPT ![r] = "precheck"]
    /\ RUn /\ UNCHANGED ScanRest
    /\ UNCHANGED <<next, missed, lagGone, lagDoomed, lagStrict, from, to, cand>>

RPRecheck(r) ==
    /\ rpc[r] = "precheck"
    /\ IF hstamp[cand[r] % H] = Done(cand[r])
         THEN /\ rpc' = [rpc EXCEPT ![r] = "pchunk"]
              /\ UNCHANGED <<next, missed, lagGone, lagDoomed, lagStrict, from, to, cand, ppos>>
         ELSE ProbeGone(r)
    /\ RUn /\ UNCHANGED ScanRest

RPChunk(r) ==
    /\ rpc[r] = "pchunk"
    /\ IF astamp[ppos[r] % C] = Done(ppos[r])
         THEN Report(r, cand[r])                                   \* Retained
         ELSE ProbeGone(r)
    /\ RUn /\ UNCHANGED ScanRest

Reader(r) ==
    \/ RHStamp(r) \/ RRetry(r) \/ RHW0(r) \/ RHW1(r) \/ RHRecheck(r)
    \/ RCStamp(r) \/ RCWord(r) \/ RCRecheck(r) \/ RCNext(r)
    \/ RLagStart(r) \/ RPStamp(r) \/ RPW1(r) \/ RPRecheck(r) \/ RPChunk(r)

Next == (\E p \in Producers : Producer(p)) \/ (\E r \in Readers : Reader(r))

Spec == Init /\ [][Next]_vars

\* Per-process weak fairness (every thread eventually runs again).
FairSpec == Spec /\ \A p \in Producers : WF_vars(Producer(p))
                 /\ \A r \in Readers : WF_vars(Reader(r))

(***************************************************************************)
(* Properties                                                              *)
(***************************************************************************)

TypeOK ==
    /\ head \in 0 .. MaxSeq /\ arenaHead \in 0 .. MaxSeq * K
    /\ next \in [Readers -> 0 .. MaxSeq]

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
            \A k \in Chunks : astamp[(posOf[s] + k) % C] >= Done(posOf[s] + k)

DeliveredIncrease == \A r \in Readers : orderOk[r]
Accounting == \A r \in Readers : delivered[r] + missed[r] = next[r]

\* A reader reports a lag only when the message at its cursor is really gone.
LagOnlyWhenGone == \A r \in Readers : lagGone[r]
\* Everything else it skips was gone or already claimed by a newer lap.
LagSkipsOnlyDoomed == \A r \in Readers : lagDoomed[r]
\* FINDING (see README): the stronger "everything skipped was gone" does NOT
\* hold with several producers, because head is the claim counter: seqs
\* below head-H may still be readable while their slot's next writer has
\* claimed but not yet stamped it.
LagSkipsOnlyGone == \A r \in Readers : lagStrict[r]

\* Liveness: every claim is eventually finished; every reader eventually
\* reaches the end of the (bounded) stream, i.e. it is never stuck while
\* messages are still being published.
ClaimsFinish == \A p \in Producers : (wpc[p] # "idle") ~> (wpc[p] = "idle")
ReaderProgress == \A r \in Readers : <>(next[r] = MaxSeq)
=============================================================================
