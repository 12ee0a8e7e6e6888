-------------------------------- MODULE edge --------------------------------
(***************************************************************************)
(* Lapwing server edge: the delivery contract of one subscription.         *)
(*                                                                         *)
(* A topic (epoch, head) publishes seqs 0, 1, ... into a ring that holds   *)
(* the last N of them.  The ring is abstract here: a read is one atomic    *)
(* step that returns Message(seq), Lagged{missed, resume} or nothing; the  *)
(* slot protocol that makes that true is checked by seqlock.tla and        *)
(* mpmc.tla.  This model is about what happens around it:                  *)
(*                                                                         *)
(*  server  Drain::new (start position: oldest, or after{epoch, seq} with  *)
(*          replay, NOT_RETAINED or EPOCH_CHANGED) and Drain::next_batch   *)
(*          (ring events -> Message / Resync{missed, resume_seq, reason},   *)
(*          in order) writing into one ordered stream with flow control;   *)
(*  network the stream may be lost (connection drop, bounded), the server  *)
(*          may restart (new ring, new epoch, seqs from 0, bounded);       *)
(*  client  lapwing-client: remembers {epoch, next seq}, resubscribes      *)
(*          after{epoch, next-1} on every reconnect (or `oldest` plus the   *)
(*          "from zero" rebase when next = 0), and hands events to the     *)
(*          application in order;                                          *)
(*  checker the application's accounting (PROTOCOL.md "Accounting          *)
(*          invariant"): a Message has seq = next; a Resync has resume =   *)
(*          next + missed (missed >= 1), or for EPOCH_CHANGED resume =     *)
(*          missed in a new epoch; a same-epoch gap is NOT_RETAINED only   *)
(*          as the first event after a resume (and must be when the resume *)
(*          position was gone), LAPPED otherwise.  The first violation is  *)
(*          recorded.                                                      *)
(*                                                                         *)
(* Mutants (same spec, one guarded difference):                            *)
(*   "none"                 the real protocol                              *)
(*   "no_resync_on_lag"     the drain skips a lap without emitting Resync  *)
(*   "no_epoch_resync"      a resume into another epoch gets no            *)
(*                          EPOCH_CHANGED resync                           *)
(*   "resume_at_seq"        after{epoch, seq} replays from seq, not seq+1  *)
(*   "client_resume_last_delivered" the client resumes after the last      *)
(*                          seq DELIVERED, forgetting a resync after it    *)
(*   "no_rebase"            the client resumes a next = 0 position with    *)
(*                          `oldest` but does not restate the gap          *)
(*   "always_lapped"        every gap is reported LAPPED, also the first   *)
(*                          gap of a same-epoch resume (NOT_RETAINED)      *)
(*   "no_clamp"             after{epoch, seq} starts at seq+1 even when    *)
(*                          seq >= head (Drain::new clamps to head)        *)
(***************************************************************************)
EXTENDS Integers, Sequences

CONSTANTS
    N,         \* messages the ring holds
    MaxSeq,    \* messages published per epoch
    MaxEpoch,  \* epochs 1 .. MaxEpoch (MaxEpoch - 1 server restarts)
    MaxDrops,  \* connection losses without restart
    Cap,       \* events in flight on the subscription stream (flow control)
    Mutant

ASSUME N >= 1 /\ MaxSeq >= 1 /\ MaxEpoch >= 1 /\ MaxDrops >= 0 /\ Cap >= 1
ASSUME Mutant \in {"none", "no_resync_on_lag", "no_epoch_resync", "resume_at_seq",
                   "client_resume_last_delivered", "no_rebase", "always_lapped",
                   "no_clamp"}

Min(a, b) == IF a < b THEN a ELSE b

\* Events on the stream.  e = epoch; for a Message s = seq; for a Resync
\* s = resume_seq, m = missed, why = reason.
Msg(e, s) == [k |-> "msg", e |-> e, s |-> s, m |-> 0, why |-> "-"]
Resync(e, m, s, why) == [k |-> "resync", e |-> e, s |-> s, m |-> m, why |-> why]
NoEv == [k |-> "none", e |-> 0, s |-> 0, m |-> 0, why |-> "-"]

VARIABLES
    epoch, head,        \* the topic: current epoch (1..), next seq to publish
    restarts, drops,    \* environment counters (bounded)
    conn,               \* the connection (and the subscription on it) is up
    chan,               \* the subscription stream: events in flight, in order
    \* server: the subscription's Drain
    rnext,              \* its ring reader's cursor
    pending,            \* a resync to emit before anything else (EPOCH_CHANGED)
    firstReason,        \* "not_retained" until the first ring event of a resume
    \* client library
    cepoch, cnext,      \* position: epoch and next seq expected (0/-1: none yet)
    fromZero,           \* epoch of a "resume from seq 0" in progress, or 0
    lastDel,            \* (only for the client_resume_last_delivered mutant)
    \* application-level checker (ghost)
    aepoch, anext, bad,
    gapRule             \* reason the next gap may have (see Check)

vars == <<epoch, head, restarts, drops, conn, chan, rnext, pending, firstReason,
          cepoch, cnext, fromZero, lastDel, aepoch, anext, bad, gapRule>>

Oldest == IF head > N THEN head - N ELSE 0   \* oldest seq the ring holds

Init ==
    /\ epoch = 1 /\ head = 0 /\ restarts = 0 /\ drops = 0
    /\ conn = FALSE /\ chan = <<>>
    /\ rnext = 0 /\ pending = NoEv /\ firstReason = "none"
    /\ cepoch = 0 /\ cnext = -1 /\ fromZero = 0 /\ lastDel = -1
    /\ aepoch = 0 /\ anext = -1 /\ bad = "none" /\ gapRule = "lapped"

(***************************************************************************)
(* Topic and environment                                                   *)
(***************************************************************************)

\* Topic::publish (the ring write itself is seqlock.tla / mpmc.tla)
Publish ==
    /\ head < MaxSeq
    /\ head' = head + 1
    /\ UNCHANGED <<epoch, restarts, drops, conn, chan, rnext, pending, firstReason,
                   cepoch, cnext, fromZero, lastDel, aepoch, anext, bad, gapRule>>

\* Server restart (or topic re-creation): new ring, new epoch, seqs from 0.
\* Every connection is lost with whatever was in flight.
Restart ==
    /\ epoch < MaxEpoch
    /\ epoch' = epoch + 1 /\ head' = 0 /\ restarts' = restarts + 1
    /\ conn' = FALSE /\ chan' = <<>>
    /\ rnext' = 0 /\ pending' = NoEv /\ firstReason' = "none"
    /\ UNCHANGED <<drops, cepoch, cnext, fromZero, lastDel, aepoch, anext, bad, gapRule>>

\* Connection loss: the subscription and its in-flight events are gone.
Drop ==
    /\ conn /\ drops < MaxDrops
    /\ conn' = FALSE /\ chan' = <<>> /\ drops' = drops + 1
    /\ rnext' = 0 /\ pending' = NoEv /\ firstReason' = "none"
    /\ UNCHANGED <<epoch, head, restarts, cepoch, cnext, fromZero, lastDel, aepoch, anext, bad, gapRule>>

(***************************************************************************)
(* (Re)subscribe: client SubEntry::resume_start + server Drain::new        *)
(***************************************************************************)

\* What the client asks for: [kind, e, s] and whether it is "from zero".
\* The first subscribe is the application's choice: `oldest`, `latest` (the
\* client's default) or an explicit after{epoch, seq} with seq >= head (a
\* position the topic has not reached: Drain::new clamps it to head).
FirstStarts ==
    { [kind |-> "oldest", e |-> 0, s |-> 0, fz |-> 0],
      [kind |-> "latest", e |-> 0, s |-> 0, fz |-> 0],
      [kind |-> "after", e |-> epoch, s |-> head, fz |-> 0] }

ClientStart ==
    IF Mutant = "client_resume_last_delivered" /\ lastDel >= 0
         THEN [kind |-> "after", e |-> cepoch, s |-> lastDel, fz |-> 0]
    ELSE IF cnext > 0 THEN [kind |-> "after", e |-> cepoch, s |-> cnext - 1, fz |-> 0]
    ELSE [kind |-> "oldest", e |-> 0, s |-> 0,
          fz |-> IF Mutant = "no_rebase" THEN 0 ELSE cepoch]              \* `after` cannot say -1

Connect ==
    /\ ~conn
    /\ \E st \in IF cepoch = 0 THEN FirstStarts ELSE {ClientStart} :
       LET sameEpoch == st.kind = "after" /\ st.e = epoch
           otherEpoch == st.kind = "after" /\ st.e # epoch
           after == IF Mutant = "resume_at_seq" THEN st.s ELSE st.s + 1
           \* Drain::new: no ring yet (head = 0) -> Cursor::Waiting at 0;
           \* else Start::At(min(seq + 1, head)).
           start == IF sameEpoch
                      THEN IF head = 0 THEN 0
                           ELSE IF Mutant = "no_clamp" THEN after ELSE Min(after, head)
                    ELSE IF st.kind = "latest" THEN head
                    ELSE Oldest
       IN /\ rnext' = start
          \* first_lag_reason = NotRetained is set only when the ring exists
          /\ firstReason' = IF sameEpoch /\ head > 0 THEN "not_retained" ELSE "none"
          \* ghost: the reason the first gap after this (re)subscribe must
          \* have. A same-epoch resume from a seq the ring no longer holds
          \* must say NOT_RETAINED; a same-epoch resume (or the client's
          \* "from zero" rebase) may say it for its first gap; every other
          \* gap is LAPPED.
          /\ gapRule' = IF sameEpoch /\ start < Oldest THEN "must_nr"
                        ELSE IF sameEpoch \/ st.fz # 0 THEN "may_nr"
                        ELSE "lapped"
          /\ pending' = IF otherEpoch /\ Mutant # "no_epoch_resync"
                          THEN Resync(epoch, Oldest, Oldest, "EPOCH_CHANGED")
                          ELSE NoEv
          /\ fromZero' = st.fz
          \* SubscribeOk{epoch, start_seq}: the client takes its position from
          \* the first one only; so does the application's accounting.
          /\ IF cepoch = 0
               THEN /\ cepoch' = epoch /\ cnext' = start
                    /\ aepoch' = epoch /\ anext' = start
               ELSE UNCHANGED <<cepoch, cnext, aepoch, anext>>
    /\ conn' = TRUE /\ chan' = <<>>
    /\ UNCHANGED <<epoch, head, restarts, drops, lastDel, bad>>

(***************************************************************************)
(* Server: Drain::next_batch, one ring event at a time                     *)
(***************************************************************************)

Emit(ev) == chan' = Append(chan, ev)

DrainStep ==
    /\ conn /\ Len(chan) < Cap
    /\ IF pending # NoEv THEN
            /\ Emit(pending) /\ pending' = NoEv
            /\ UNCHANGED <<rnext, firstReason>>
       ELSE IF rnext < Oldest THEN
            \* Reader::lag -> Lagged{missed, resume_seq = oldest held}
            LET res == Oldest
                why == IF firstReason = "not_retained" /\ Mutant # "always_lapped"
                         THEN "NOT_RETAINED" ELSE "LAPPED"
            IN /\ IF Mutant = "no_resync_on_lag" THEN UNCHANGED chan
                  ELSE Emit(Resync(epoch, res - rnext, res, why))
               /\ rnext' = res /\ firstReason' = "none" /\ UNCHANGED pending
       ELSE IF rnext < head THEN
            /\ Emit(Msg(epoch, rnext))
            /\ rnext' = rnext + 1 /\ firstReason' = "none" /\ UNCHANGED pending
       ELSE FALSE                                   \* Step::Idle: wait
    /\ UNCHANGED <<epoch, head, restarts, drops, conn, cepoch, cnext, fromZero,
                   lastDel, aepoch, anext, bad, gapRule>>

(***************************************************************************)
(* Client: the subscription stream reader                                  *)
(***************************************************************************)

\* rebase_from_zero: a resubscription at `oldest` standing for after{fz, -1}.
Rebase(fz, ev) ==
    IF ev.k = "msg" THEN
        IF ev.e = fz /\ ev.s = 0 THEN <<ev>>
        ELSE << Resync(ev.e, ev.s, ev.s, IF ev.e = fz THEN "NOT_RETAINED" ELSE "EPOCH_CHANGED"), ev >>
    ELSE << [ev EXCEPT !.m = ev.s, !.why = IF ev.e = fz THEN ev.why ELSE "EPOCH_CHANGED"] >>

\* The application's accounting, one event.  a = [e, n, bad, g] (g: gapRule).
Check1(a, ev) ==
    IF a.bad # "none" THEN a
    ELSE IF ev.k = "msg" THEN
        IF ev.e # a.e THEN [a EXCEPT !.bad = "message of another epoch without EPOCH_CHANGED"]
        ELSE IF ev.s < a.n THEN [a EXCEPT !.bad = "duplicate or reordered message"]
        ELSE IF ev.s > a.n THEN [a EXCEPT !.bad = "silent gap before a message"]
        ELSE [a EXCEPT !.n = ev.s + 1]
    ELSE IF ev.why = "EPOCH_CHANGED" THEN
        IF ev.e = a.e THEN [a EXCEPT !.bad = "EPOCH_CHANGED within the same epoch"]
        ELSE IF ev.s # ev.m THEN [a EXCEPT !.bad = "EPOCH_CHANGED with resume_seq # missed"]
        ELSE [e |-> ev.e, n |-> ev.s, bad |-> "none", g |-> a.g]
    ELSE
        IF ev.e # a.e THEN [a EXCEPT !.bad = "resync of another epoch"]
        ELSE IF ev.m < 1 THEN [a EXCEPT !.bad = "resync that reports nothing missed"]
        ELSE IF ev.s # a.n + ev.m THEN [a EXCEPT !.bad = "resync does not cover the gap exactly"]
        ELSE IF ev.why = "NOT_RETAINED" /\ a.g = "lapped"
            THEN [a EXCEPT !.bad = "NOT_RETAINED that is not the first gap of a resume"]
        ELSE IF ev.why = "LAPPED" /\ a.g = "must_nr"
            THEN [a EXCEPT !.bad = "LAPPED for a resume position that was not retained"]
        ELSE IF ev.why \notin {"NOT_RETAINED", "LAPPED"}
            THEN [a EXCEPT !.bad = "unknown resync reason"]
        ELSE [a EXCEPT !.n = ev.s]

\* Every event ends the "first event after a (re)subscribe" window.
Check(a, ev) == [Check1(a, ev) EXCEPT !.g = "lapped"]

RECURSIVE CheckAll(_, _)
CheckAll(a, evs) == IF evs = <<>> THEN a ELSE CheckAll(Check(a, Head(evs)), Tail(evs))

Receive ==
    /\ chan # <<>>
    /\ LET ev == Head(chan)
           evs == IF fromZero # 0 THEN Rebase(fromZero, ev) ELSE <<ev>>
           lastEv == evs[Len(evs)]
           a == CheckAll([e |-> aepoch, n |-> anext, bad |-> bad, g |-> gapRule], evs)
       IN /\ chan' = Tail(chan)
          /\ fromZero' = 0
          \* Event::next_position of the last event
          /\ cepoch' = lastEv.e
          /\ cnext' = IF lastEv.k = "msg" THEN lastEv.s + 1 ELSE lastEv.s
          /\ lastDel' = IF Mutant = "client_resume_last_delivered" /\ ev.k = "msg"
                          THEN ev.s ELSE lastDel
          /\ aepoch' = a.e /\ anext' = a.n /\ bad' = a.bad /\ gapRule' = a.g
    /\ UNCHANGED <<epoch, head, restarts, drops, conn, rnext, pending, firstReason>>

\* Everything published has been drained and received: stutter (so that a
\* state with nothing left to do is not reported as a deadlock, while any
\* other stuck state still is).
Finished ==
    /\ head = MaxSeq /\ conn /\ chan = <<>> /\ pending = NoEv /\ rnext = head
    /\ UNCHANGED vars

Next == Publish \/ Restart \/ Drop \/ Connect \/ DrainStep \/ Receive \/ Finished

Spec == Init /\ [][Next]_vars

\* Publishing, (re)connecting, draining and receiving are fair; drops and
\* restarts may happen (a bounded number of times) but need not.
FairSpec == Spec /\ WF_vars(Publish) /\ WF_vars(Connect)
                 /\ WF_vars(DrainStep) /\ WF_vars(Receive)

(***************************************************************************)
(* Properties                                                              *)
(***************************************************************************)

TypeOK ==
    /\ epoch \in 1 .. MaxEpoch /\ head \in 0 .. MaxSeq
    /\ Len(chan) <= Cap
    /\ rnext \in 0 .. MaxSeq

\* The contract, as the application checks it: in every epoch the client's
\* log of Messages and Resyncs tiles the published range exactly: each
\* Message is the seq expected next (no duplicate, no reordering, no silent
\* gap), and every gap between two delivered seqs is covered by resyncs whose
\* `missed` add up to exactly that gap (each missed seq counted once).
Contract == bad = "none"

\* The client never accounts for a seq that was not published.
NothingInvented == (aepoch = epoch) => anext <= head

\* Liveness: once publishing, drops and restarts are over, the client ends
\* up connected, in the current epoch, with every published seq accounted for.
CatchesUp == <>[](conn /\ aepoch = epoch /\ anext = MaxSeq /\ chan = <<>>)
=============================================================================
