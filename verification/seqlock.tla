------------------------------- MODULE seqlock -------------------------------
(***************************************************************************)
(* Lapwing ring-core: the single-producer seqlock slot protocol.           *)
(*                                                                         *)
(* One writer (`Publisher::publish`, `&mut self`) publishes seqs           *)
(* 0 .. MaxSeq-1 into a ring of N slots; seq s lives in slot s % N.  Each   *)
(* slot is a stamp plus W payload words, written ONE WORD PER STEP, so a   *)
(* reader that mixes two writes is representable.  Stamp of a slot holding *)
(* seq s: 2s+1 while being written, 2s+2 when done, 0 = never written.     *)
(*                                                                         *)
(* Readers each own a cursor `next` and follow the Boehm recipe: load the  *)
(* stamp, load the words, load the stamp again, compare.  A lapped reader  *)
(* scans forward from max(next+1, head-N) for the oldest message still     *)
(* held and reports Lagged{missed, resume}.                                *)
(*                                                                         *)
(* Memory is sequentially consistent here; the Acquire/Release placement   *)
(* of the real code is checked by loom (ring-core/tests/loom.rs), not by   *)
(* this model.  See README.md for the action -> Rust correspondence.       *)
(*                                                                         *)
(* Mutant selects a deliberately broken variant (the same spec, one       *)
(* guarded difference), so a mutant run checks the code of the real model: *)
(*   "none"        the real protocol                                       *)
(*   "no_recheck"  reader commits without the second stamp load/compare    *)
(*   "lag_to_head" lag path resumes at head instead of the oldest message  *)
(*   "scan_to_head" the lag scan ends at the loaded head, not               *)
(*                 max(head, from): a stale head load makes the reader      *)
(*                 resume at or behind its own cursor                       *)
(*                 still held (skips retained messages)                    *)
(***************************************************************************)
EXTENDS Integers, FiniteSets

CONSTANTS
    N,        \* slots in the ring (header ring size H in ring-core)
    MaxSeq,   \* the writer publishes seqs 0 .. MaxSeq-1
    W,        \* payload words per slot (>= 2 so that tearing is expressible)
    Readers,  \* set of reader ids
    Mutant

ASSUME N >= 1 /\ MaxSeq >= 1 /\ W >= 2 /\ Readers # {}
ASSUME Mutant \in {"none", "no_recheck", "lag_to_head", "scan_to_head"}

Slots == 0 .. N - 1
Words == 1 .. W
Seqs  == 0 .. MaxSeq - 1

\* The payload word w of the message with seq s.  Any injective choice works:
\* a read that mixes two writes, or reads the right slot of the wrong lap,
\* yields a word that is not Val(s, w) for the seq s the reader aimed at.
Val(s, w) == s * W + w

Slot(s)    == s % N
Writing(s) == 2 * s + 1
Done(s)    == 2 * s + 2
Max(a, b)  == IF a > b THEN a ELSE b

VARIABLES
    \* shared memory
    stamp,     \* [Slots -> Nat]
    data,      \* [Slots -> [Words -> Int]]
    head,      \* published head: every seq < head is committed (Release store)
    \* writer-local
    wseq,      \* seq being / next to be written
    wpc,       \* "begin" | "word" | "commit" | "publish" | "done"
    wword,     \* next payload word to write
    \* reader-local
    next,      \* [Readers -> Nat]  the seq the reader wants
    rpc,       \* [Readers -> {"stamp1","empty","word","recheck","lagstart","scan"}]
    rword,     \* [Readers -> Words] next word to copy
    buf,       \* [Readers -> [Words -> Int]] the copy-out buffer
    cand,      \* [Readers -> Nat]  lag scan candidate
    to,        \* [Readers -> Nat]  end of the lag scan range
    hseen,     \* [Readers -> Nat]  lower bound of the reader's next head load:
               \* the head value it last synchronised with (C11, not SC)
    \* ghost / history (not part of the protocol, used by the invariants)
    last,      \* [Readers -> Int]  seq of the last delivery (-1: none yet)
    intact,    \* [Readers -> BOOLEAN] every delivery so far equalled Val(seq, .) word for word
    delivered, \* [Readers -> Nat]  number of messages delivered
    missed,    \* [Readers -> Nat]  sum of Lagged.missed reported
    lagOk,     \* [Readers -> BOOLEAN] every lag skip so far landed on the oldest held seq
    fwdOk,     \* [Readers -> BOOLEAN] every lag report so far moved the cursor forward
    orderOk    \* [Readers -> BOOLEAN] every delivery so far had a larger seq than the last

vars == <<stamp, data, head, wseq, wpc, wword, next, rpc, rword, buf, cand, to, hseen,
          last, intact, delivered, missed, lagOk, fwdOk, orderOk>>
wvars == <<stamp, data, head, wseq, wpc, wword>>
rvars == <<next, rpc, rword, buf, cand, to, hseen, last, intact, delivered, missed, lagOk,
           fwdOk, orderOk>>

Init ==
    /\ stamp = [i \in Slots |-> 0]
    /\ data  = [i \in Slots |-> [w \in Words |-> -1]]
    /\ head  = 0
    /\ wseq  = 0
    /\ wpc   = "begin"
    /\ wword = 1
    /\ next  = [r \in Readers |-> 0]
    /\ rpc   = [r \in Readers |-> "stamp1"]
    /\ rword = [r \in Readers |-> 1]
    /\ buf   = [r \in Readers |-> [w \in Words |-> -1]]
    /\ cand  = [r \in Readers |-> 0]
    /\ to    = [r \in Readers |-> 0]
    /\ hseen = [r \in Readers |-> 0]
    /\ last   = [r \in Readers |-> -1]
    /\ intact = [r \in Readers |-> TRUE]
    /\ delivered = [r \in Readers |-> 0]
    /\ missed    = [r \in Readers |-> 0]
    /\ lagOk     = [r \in Readers |-> TRUE]
    /\ fwdOk     = [r \in Readers |-> TRUE]
    /\ orderOk   = [r \in Readers |-> TRUE]

(***************************************************************************)
(* Writer: Publisher::publish -> slot write recipe                        *)
(***************************************************************************)

\* stamp := odd (Relaxed store) ; fence(Release).  The single producer knows
\* the slot holds prev_done(s): it wrote s-N itself (checked by OneWriter).
WBegin ==
    /\ wpc = "begin" /\ wseq < MaxSeq
    /\ stamp' = [stamp EXCEPT ![Slot(wseq)] = Writing(wseq)]
    /\ wpc' = "word" /\ wword' = 1
    /\ UNCHANGED <<data, head, wseq>>
    /\ UNCHANGED rvars

\* one payload word (Relaxed store)
WWord ==
    /\ wpc = "word"
    /\ data' = [data EXCEPT ![Slot(wseq)][wword] = Val(wseq, wword)]
    /\ IF wword = W THEN wpc' = "commit" /\ UNCHANGED wword
                    ELSE wword' = wword + 1 /\ UNCHANGED wpc
    /\ UNCHANGED <<stamp, head, wseq>>
    /\ UNCHANGED rvars

\* stamp := even (Release)
WCommit ==
    /\ wpc = "commit"
    /\ stamp' = [stamp EXCEPT ![Slot(wseq)] = Done(wseq)]
    /\ wpc' = "publish"
    /\ UNCHANGED <<data, head, wseq, wword>>
    /\ UNCHANGED rvars

\* head := s+1 (Release)
WPublish ==
    /\ wpc = "publish"
    /\ head' = wseq + 1
    /\ wseq' = wseq + 1
    /\ wpc' = IF wseq + 1 < MaxSeq THEN "begin" ELSE "done"
    /\ UNCHANGED <<stamp, data, wword>>
    /\ UNCHANGED rvars

Writer == WBegin \/ WWord \/ WCommit \/ WPublish

(***************************************************************************)
(* Reader r: Reader::try_read / Reader::read_batch                         *)
(***************************************************************************)

\* stamp load (Acquire) and the three-way decision on it.  (The code keeps
\* the loaded stamp s1 for the recheck; on the copy path s1 = Done(next), so
\* the model compares against Done(next) and does not store s1.)
RStamp1(r) ==
    /\ rpc[r] = "stamp1"
    /\ LET st == stamp[Slot(next[r])] IN
       rpc' = [rpc EXCEPT ![r] =
                 IF st = Done(next[r]) THEN "word"      \* committed for exactly our seq
                 ELSE IF st < Done(next[r]) THEN "empty" \* not published yet / in progress
                 ELSE "lagstart"]                        \* reused by a later lap: lapped
    /\ rword' = [rword EXCEPT ![r] = 1]
    \* An Acquire load that reads a done stamp Done(x) (a Release store)
    \* synchronises with the writer, which had stored head = x before it
    \* began x. An odd stamp is a Relaxed store: no synchronisation.
    /\ LET st == stamp[Slot(next[r])] IN
       hseen' = [hseen EXCEPT ![r] =
                   IF st > 0 /\ st % 2 = 0 THEN Max(@, st \div 2 - 1) ELSE @]
    /\ UNCHANGED <<next, buf, cand, to, last, intact, delivered, missed, lagOk, fwdOk,
                   orderOk>>
    /\ UNCHANGED wvars

\* try_read returned Empty; the caller polls again (a real step, as in the
\* code: this loop is what makes global fairness too weak, see README).
RRetry(r) ==
    /\ rpc[r] = "empty"
    /\ rpc' = [rpc EXCEPT ![r] = "stamp1"]
    /\ UNCHANGED <<next, rword, buf, cand, to, hseen, last, intact, delivered, missed, lagOk, fwdOk, orderOk>>
    /\ UNCHANGED wvars

\* copy one payload word (Relaxed load)
RWord(r) ==
    /\ rpc[r] = "word"
    /\ buf' = [buf EXCEPT ![r][rword[r]] = data[Slot(next[r])][rword[r]]]
    /\ IF rword[r] = W
         THEN /\ rpc' = [rpc EXCEPT ![r] = IF Mutant = "no_recheck" THEN "commit" ELSE "recheck"]
              /\ UNCHANGED rword
         ELSE /\ rword' = [rword EXCEPT ![r] = rword[r] + 1]
              /\ UNCHANGED rpc
    /\ UNCHANGED <<next, cand, to, hseen, last, intact, delivered, missed, lagOk, fwdOk, orderOk>>
    /\ UNCHANGED wvars

\* Commit the copy in buf as the message `next` (the seq the reader aimed at).
Deliver(r) ==
    /\ intact' = [intact EXCEPT ![r] = @ /\ \A w \in Words : buf[r][w] = Val(next[r], w)]
    /\ orderOk' = [orderOk EXCEPT ![r] = @ /\ next[r] > last[r]]
    /\ last' = [last EXCEPT ![r] = next[r]]
    /\ delivered' = [delivered EXCEPT ![r] = @ + 1]
    /\ next' = [next EXCEPT ![r] = @ + 1]
    /\ rpc' = [rpc EXCEPT ![r] = "stamp1"]
    /\ buf' = [buf EXCEPT ![r] = [w \in Words |-> -1]]   \* (model only: forget the copy)

\* fence(Acquire) ; stamp load (Relaxed) ; compare with s1.  A change means
\* the slot was reused for next+N while we copied: treat as lapped.
RRecheck(r) ==
    /\ rpc[r] = "recheck"
    /\ IF stamp[Slot(next[r])] = Done(next[r])
         THEN Deliver(r)
         ELSE /\ rpc' = [rpc EXCEPT ![r] = "lagstart"]
              /\ UNCHANGED <<last, intact, orderOk, delivered, next, buf>>
    /\ UNCHANGED <<rword, cand, to, hseen, missed, lagOk, fwdOk>>
    /\ UNCHANGED wvars

\* MUTANT no_recheck: commit the copy without looking at the stamp again.
RCommitNoRecheck(r) ==
    /\ rpc[r] = "commit"
    /\ Deliver(r)
    /\ UNCHANGED <<rword, cand, to, hseen, missed, lagOk, fwdOk>>
    /\ UNCHANGED wvars

\* Lapped: Ring::resume_after_lap.  head load (Acquire); the scan runs over
\* [from, to) with from = max(next+1, h-N) (every seq x < h-N is
\* overwritten, since x+N < h is committed) and to = max(h, from).
\* The load returns any h between the value the reader last synchronised
\* with and the current head (C11 coherence, not sequential consistency):
\* the reader may have seen a later lap's odd stamp (a Relaxed store) while
\* its head load still returns an older value, which is what the guard
\* max(h, from) is for.
RLagStart(r) ==
    /\ rpc[r] = "lagstart"
    /\ \E h \in hseen[r] .. head :
       LET f == IF Mutant = "lag_to_head" THEN Max(next[r] + 1, h)
                                         ELSE Max(next[r] + 1, h - N)
       IN /\ cand' = [cand EXCEPT ![r] = f]
          /\ to' = [to EXCEPT ![r] = IF Mutant = "scan_to_head" THEN h ELSE Max(h, f)]
          /\ hseen' = [hseen EXCEPT ![r] = h]
    /\ rpc' = [rpc EXCEPT ![r] = "scan"]
    /\ buf' = [buf EXCEPT ![r] = [w \in Words |-> -1]]   \* (model only: forget the copy)
    /\ UNCHANGED <<next, rword, last, intact, delivered, missed, lagOk, fwdOk, orderOk>>
    /\ UNCHANGED wvars

\* Reader::lag: report Lagged{missed: c - next, resume_seq: c}, cursor := c.
Report(r, c) ==
    /\ missed' = [missed EXCEPT ![r] = @ + (c - next[r])]
    \* ghost: every skipped seq is really gone
    /\ lagOk' = [lagOk EXCEPT ![r] = @ /\ \A x \in next[r] .. c - 1 : stamp[Slot(x)] > Done(x)]
    \* ghost: missed >= 1, the cursor moves forward
    /\ fwdOk' = [fwdOk EXCEPT ![r] = @ /\ c > next[r]]
    /\ next' = [next EXCEPT ![r] = c]
    /\ rpc' = [rpc EXCEPT ![r] = "stamp1"]
    /\ cand' = [cand EXCEPT ![r] = 0]               \* (model only)
    /\ to' = [to EXCEPT ![r] = 0]

\* Ring::first_retained, one Ring::probe (stamp load, Acquire) per step.
\* Overwritten by a later lap (Gone) -> next candidate.  Otherwise (committed
\* for exactly this seq, or not yet written: Retained / Pending) it is the
\* oldest seq that can still be delivered.  Range exhausted -> resume at `to`.
RScan(r) ==
    /\ rpc[r] = "scan"
    /\ LET c == cand[r] IN
       IF c >= to[r] THEN Report(r, to[r])
       ELSE IF stamp[Slot(c)] > Done(c)
         THEN /\ cand' = [cand EXCEPT ![r] = c + 1]
              /\ UNCHANGED <<next, rpc, missed, lagOk, fwdOk, to>>
         ELSE Report(r, c)
    /\ UNCHANGED <<rword, buf, hseen, last, intact, delivered, orderOk>>
    /\ UNCHANGED wvars

Reader(r) ==
    \/ RStamp1(r) \/ RRetry(r) \/ RWord(r) \/ RRecheck(r)
    \/ RCommitNoRecheck(r) \/ RLagStart(r) \/ RScan(r)

Next == Writer \/ \E r \in Readers : Reader(r)

Spec == Init /\ [][Next]_vars

\* Per-process weak fairness: the writer and every reader each keep taking
\* steps while they can.  This is the scheduling assumption of the real code
\* (every thread eventually runs).
FairSpec == Spec /\ WF_vars(Writer) /\ \A r \in Readers : WF_vars(Reader(r))

\* PITFALL (reproduced, see README): fairness on Next as a whole.  A reader
\* that keeps polling an odd stamp satisfies it while the writer never runs.
GlobalFairSpec == Spec /\ WF_vars(Next)

(***************************************************************************)
(* Properties                                                              *)
(***************************************************************************)

TypeOK ==
    /\ stamp \in [Slots -> 0 .. Done(MaxSeq)]
    /\ head \in 0 .. MaxSeq /\ wseq \in 0 .. MaxSeq
    /\ next \in [Readers -> 0 .. MaxSeq]
    /\ cand \in [Readers -> 0 .. MaxSeq] /\ to \in [Readers -> 0 .. MaxSeq]
    /\ hseen \in [Readers -> 0 .. MaxSeq]

\* A committed read equals, word for word, what was written for exactly the
\* seq the reader aimed at (its cursor at commit time).
NoTornRead == \A r \in Readers : intact[r]

\* Delivered seqs strictly increase, per reader.
DeliveredIncrease == \A r \in Readers : orderOk[r]

\* Lag skips land on the oldest retained message: every seq skipped by a
\* Lagged report had been overwritten when it was reported, and (by RScan's
\* guard) the resume seq had not.
LagLandsOnOldest == \A r \in Readers : lagOk[r]

\* Every Lagged report has missed >= 1: the cursor moves forward.
LagMovesForward == \A r \in Readers : fwdOk[r]

\* Accounting: delivered + missed = seqs the cursor has passed (start 0).
Accounting == \A r \in Readers : delivered[r] + missed[r] = next[r]

\* One writer per slot: the single producer only ever stamps a slot that holds
\* the previous lap's done value (or 0).
PrevDone(s) == IF s >= N THEN Done(s - N) ELSE 0
WriterFindsPrevDone == wpc = "begin" /\ wseq < MaxSeq => stamp[Slot(wseq)] = PrevDone(wseq)

\* PITFALL (reproduced, see README): the photon-ring formulation ties the
\* last read value to the reader cursor.  A lag skip moves the cursor without
\* a read, so this "invariant" is false of a correct protocol.
CursorTiedRead == \A r \in Readers : last[r] # -1 => last[r] = next[r] - 1

\* Liveness.
WriterProgress == <>(head = MaxSeq)
ReaderProgress == \A r \in Readers : <>(next[r] = MaxSeq)
=============================================================================
