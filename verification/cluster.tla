------------------------------- MODULE cluster -------------------------------
(***************************************************************************)
(* Lapwing cluster mode: one topic served by several nodes through a       *)
(* backbone (a NATS JetStream stream), and one client that fails over      *)
(* between the nodes.                                                      *)
(*                                                                         *)
(*  backbone  a log of seqs 0 .. head-1 (Lapwing seq = stream seq - 1);    *)
(*            publishing appends at the head, retention advances `first`   *)
(*            (the oldest seq retained) up to the head, at any time.       *)
(*  node      follows the topic with a ring that holds the backbone seqs   *)
(*            [lo, fed), base <= lo, at most C of them (with VarSizes a    *)
(*            write may evict more than one): `base` is the backbone's     *)
(*            head when the node began to follow the topic (Topic::base),  *)
(*            the feed copies log[fed] into the ring one seq at a time, or *)
(*            a *hole* when the backbone no longer holds seq fed.  A node  *)
(*            may crash (its ring is lost) and start again (new base).     *)
(*  drain     a subscription on a node (Drain): a resume at a seq the ring *)
(*            holds reads the ring; an older one is first REPLAYED from    *)
(*            the backbone (a run the backbone no longer holds is one      *)
(*            NOT_RETAINED resync, exact, up to the backbone's first, or   *)
(*            with ResyncToRing up to min(first, lo)) until it reaches the *)
(*            ring's lo, then switches to the ring.  A ring that laps the  *)
(*            subscriber is a LAPPED resync; a hole a NOT_RETAINED resync. *)
(*  client    remembers the next seq it expects, and resumes there after   *)
(*            {epoch, next - 1} on any node after a crash or a reconnect.  *)
(*  checker   (ghost) the application's accounting, at each event: a      *)
(*            Message must be the seq expected next and carry the id the   *)
(*            backbone published at that seq; a Resync must cover exactly  *)
(*            the seqs from the one expected next (missed >= 1), and its   *)
(*            reason must be true at that moment.  Violations are recorded *)
(*            in flags, one per invariant.                                 *)
(*                                                                         *)
(* The stream between a drain and its client is collapsed: an event is     *)
(* accounted by the client in the step the drain emits it.  What a lost    *)
(* connection loses in flight, the resume position, the from-zero rebase,  *)
(* epochs and flow control are edge.tla's.  A resume here is "from next".  *)
(*                                                                         *)
(* Mutants (same spec, one guarded difference), see verification/README.md:*)
(*   "none"                     the protocol                               *)
(*   "resume_from_ring_head"    a resume older than the ring starts at the *)
(*                              ring's oldest, without a replay            *)
(*   "not_retained_from_ring"   the replay's NOT_RETAINED count runs up to *)
(*                              the ring's lo, not the backbone's first    *)
(*   "switch_early"             the replay hands over to the ring one seq  *)
(*                              early, and the ring starts at its oldest   *)
(*   "switch_stale_oldest"      the replay's switch test uses the ring's   *)
(*                              oldest as it was when the replay began     *)
(*   "replay_gap_silent"        the replay skips evicted seqs silently     *)
(*                              (as a JetStream consumer does)             *)
(*   "no_holes"                 the feed writes the next retained message  *)
(*                              into the next ring slot: no holes          *)
(*   "hole_as_message"          the drain delivers a hole as a message     *)
(*   "consumer_new"             the feed (re)creates its backbone consumer *)
(*                              with DeliverPolicy::New instead of by      *)
(*                              start sequence at `fed`                    *)
(*   "clamp_to_ring_head"       a resume is clamped to this node's ring    *)
(*                              head, not the backbone's head              *)
(*   "first_lag_not_retained"   a resume into the ring reports its first   *)
(*                              lap NOT_RETAINED (the one-node rule)       *)
(*   "switch_on_event"          the replay tests for the switch only with  *)
(*                              a replayed event in hand (liveness)        *)
(***************************************************************************)
EXTENDS Integers, TLC

CONSTANTS
    Nodes,        \* the nodes (model values)
    C,            \* ring capacity, in messages (its header slots)
    VarSizes,     \* a ring write may evict more than one older message (arena)
    MaxMsgs,      \* messages published to the backbone
    MaxCrashes,   \* node crashes (each loses that node's ring)
    MaxDrops,     \* client reconnects without a crash
    ResyncToRing, \* replay: NOT_RETAINED up to min(first, lo) (TRUE) or up to first (FALSE)
    Mutant

ASSUME C >= 1 /\ MaxMsgs >= 1 /\ MaxCrashes >= 0 /\ MaxDrops >= 0
ASSUME ResyncToRing \in BOOLEAN /\ VarSizes \in BOOLEAN
ASSUME Mutant \in {"none", "resume_from_ring_head", "not_retained_from_ring",
                   "switch_early", "switch_stale_oldest", "replay_gap_silent",
                   "no_holes", "hole_as_message", "consumer_new",
                   "clamp_to_ring_head", "first_lag_not_retained",
                   "switch_on_event"}

NoNode == "none"
Seqs == 0 .. MaxMsgs - 1
Max(a, b) == IF a > b THEN a ELSE b
Min(a, b) == IF a < b THEN a ELSE b

\* What a ring slot holds.  The message published at seq s carries the
\* unique id Id(s) (its payload).
Id(s) == 100 + s
EMPTY == -1      \* nothing (outside [lo, fed))
HOLE == -2       \* a hole
IsId(v) == v >= 100
\* Resync reasons.
LAPPED == "LAPPED"
NR == "NOT_RETAINED"

VARIABLES
    bfirst, bhead,        \* backbone: oldest seq retained, next seq to publish
    up,                   \* node -> follows the topic (has a ring)
    base,                 \* node -> Topic::base
    fed,                  \* node -> next seq its feed writes into the ring
    oldest,               \* node -> oldest seq its ring holds, `lo` (= fed when empty)
    cons,                 \* node -> where its backbone consumer is (= fed but for mutants)
    ring,                 \* node -> seq -> Id(s), HOLE or EMPTY
    crashes, drops,       \* environment counters (bounded)
    \* the subscription (drain) on the node the client is connected to
    cnode,                \* that node, or NoNode
    mode,                 \* "off", "replay" (from the backbone) or "ring"
    dnext,                \* the drain's next seq
    live,                 \* ghost: the drain's position was in the ring when it began reading it
    firstEv,              \* (first_lag_not_retained only) no event yet since the resume
    rlo,                  \* (switch_stale_oldest only) the ring's lo when the replay began
    \* client library and application (ghost)
    cnext,                \* next seq expected (-1: never subscribed)
    gap,                  \* an event did not start at cnext (or missed < 1)
    wrongId,              \* a Message whose id is not the backbone's at its seq
    nrFalse,              \* a NOT_RETAINED for a seq the backbone still held
    nrNeedless,           \* a NOT_RETAINED for a seq the node's ring held as a message
    lapFalse              \* a LAPPED for a seq the ring did not hold when the drain began reading it

nodeVars == <<up, base, fed, oldest, cons, ring>>
drainVars == <<cnode, mode, dnext, live, firstEv, rlo>>
clientVars == <<cnext, gap, wrongId, nrFalse, nrNeedless, lapFalse>>
vars == <<bfirst, bhead, nodeVars, crashes, drops, drainVars, clientVars>>

Lo(n) == oldest[n]

Init ==
    /\ bfirst = 0 /\ bhead = 0
    /\ up = [n \in Nodes |-> FALSE]
    /\ base = [n \in Nodes |-> 0] /\ fed = [n \in Nodes |-> 0]
    /\ oldest = [n \in Nodes |-> 0] /\ cons = [n \in Nodes |-> 0]
    /\ ring = [n \in Nodes |-> [s \in Seqs |-> EMPTY]]
    /\ crashes = 0 /\ drops = 0
    /\ cnode = NoNode /\ mode = "off" /\ dnext = 0 /\ live = FALSE
    /\ firstEv = FALSE /\ rlo = 0
    /\ cnext = -1 /\ gap = FALSE /\ wrongId = FALSE
    /\ nrFalse = FALSE /\ nrNeedless = FALSE /\ lapFalse = FALSE

(***************************************************************************)
(* Backbone                                                                *)
(***************************************************************************)

\* A publish through any node: the backbone appends it (bounded by MaxMsgs).
Publish ==
    /\ bhead < MaxMsgs
    /\ bhead' = bhead + 1
    /\ UNCHANGED <<bfirst, nodeVars, crashes, drops, drainVars, clientVars>>

\* Retention (max_msgs, max_bytes, age): the oldest seq goes.
Evict ==
    /\ bfirst < bhead
    /\ bfirst' = bfirst + 1
    /\ UNCHANGED <<bhead, nodeVars, crashes, drops, drainVars, clientVars>>

(***************************************************************************)
(* Nodes: following the topic, the feed, crashes                           *)
(***************************************************************************)

\* The node begins to follow the topic (first subscriber, or after a
\* crash): base = the backbone's head as the stream info it read said
\* (any head up to now: publishes may follow the read), and the feed's
\* consumer starts there (by start sequence: stream seq base + 1).
Start(n) ==
    /\ ~up[n]
    /\ up' = [up EXCEPT ![n] = TRUE]
    /\ \E b \in 0 .. bhead :
         /\ base' = [base EXCEPT ![n] = b]
         /\ fed' = [fed EXCEPT ![n] = b]
         /\ oldest' = [oldest EXCEPT ![n] = b]
         /\ cons' = [cons EXCEPT ![n] = b]
    /\ UNCHANGED <<bfirst, bhead, ring, crashes, drops, drainVars, clientVars>>

\* The feed (re)creates its backbone consumer: after reading base (the
\* consumer is created a moment later), or after losing its NATS
\* connection.  By start sequence at `fed` it changes nothing, so only the
\* mutant takes this step: consumer_new creates it with DeliverPolicy::New,
\* at the backbone's head of that moment.
Renew(n) ==
    /\ Mutant = "consumer_new"
    /\ up[n]
    /\ cons' = [cons EXCEPT ![n] = bhead]
    /\ UNCHANGED <<bfirst, bhead, up, base, fed, oldest, ring, crashes, drops,
                   drainVars, clientVars>>

Disconnect ==
    /\ cnode' = NoNode /\ mode' = "off" /\ dnext' = 0 /\ live' = FALSE
    /\ firstEv' = FALSE /\ rlo' = 0

\* The node crashes (or stops following the topic): its ring is gone, and
\* so is the client's connection if it was there.
Crash(n) ==
    /\ up[n] /\ crashes < MaxCrashes
    /\ crashes' = crashes + 1
    /\ up' = [up EXCEPT ![n] = FALSE]
    /\ base' = [base EXCEPT ![n] = 0] /\ fed' = [fed EXCEPT ![n] = 0]
    /\ oldest' = [oldest EXCEPT ![n] = 0]
    /\ cons' = [cons EXCEPT ![n] = 0]
    /\ ring' = [ring EXCEPT ![n] = [s \in Seqs |-> EMPTY]]
    /\ IF cnode = n THEN Disconnect ELSE UNCHANGED drainVars
    /\ UNCHANGED <<bfirst, bhead, drops, clientVars>>

\* backbone/feed.rs: the consumer hands over the oldest retained message at
\* or after `cons` (JetStream skips deleted messages silently); the feed
\* compares its stream seq with the seq it expects (fed) and writes a hole
\* for every seq in between, then the message.  One ring write per step.
\* The ring then holds at most C seqs; with VarSizes the write may evict
\* any number of older ones (a large message takes arena room), but the
\* ring always holds the one just written.
Feed(n) ==
    /\ up[n]
    /\ LET m == Max(cons[n], bfirst)     \* the message the feed has in hand
           f == fed[n]
           e == IF f < m THEN (IF Mutant = "no_holes" THEN Id(m) ELSE HOLE)
                ELSE Id(f)
           least == Max(oldest[n], f + 1 - C)
       IN \E newLo \in IF VarSizes THEN least .. f ELSE {least} :
          /\ m < bhead
          /\ oldest' = [oldest EXCEPT ![n] = newLo]
          /\ ring' = [ring EXCEPT ![n] = [s \in Seqs |->
                        IF s = f THEN e ELSE IF s < newLo THEN EMPTY ELSE @[s]]]
          /\ fed' = [fed EXCEPT ![n] = f + 1]
          /\ cons' = [cons EXCEPT ![n] =
                        IF f < m /\ Mutant = "no_holes" THEN m + 1 ELSE Max(cons[n], f + 1)]
    /\ UNCHANGED <<bfirst, bhead, up, base, crashes, drops, drainVars, clientVars>>

(***************************************************************************)
(* The client's accounting (ghost), one event                              *)
(***************************************************************************)

\* Message{seq = s} carrying id v.
Deliver(s, v) ==
    /\ cnext' = s + 1
    /\ gap' = (gap \/ s # cnext)
    /\ wrongId' = (wrongId \/ ~(s < bhead /\ v = Id(s)))
    /\ UNCHANGED <<nrFalse, nrNeedless, lapFalse>>

\* Resync{missed = m, resume_seq = r, reason}, sent by a drain on node n,
\* to a client that expects seq c next.  The truth of the reason is judged
\* now, when it is reported.
ResyncOn(n, c, m, r, why) ==
    /\ cnext' = r
    /\ gap' = (gap \/ m < 1 \/ r - m # c)
    /\ UNCHANGED wrongId
    /\ nrFalse' = (nrFalse \/ (why = NR /\ r > bfirst))
    /\ nrNeedless' = (nrNeedless \/ (why = NR /\
         \E s \in Seqs : r - m <= s /\ s < r /\ Lo(n) <= s /\ s < fed[n] /\ IsId(ring[n][s])))
    /\ lapFalse' = (lapFalse \/ (why = LAPPED /\ ~live))

(***************************************************************************)
(* A subscription: Drain::new on a node                                    *)
(***************************************************************************)

\* The clamp of a resume that asks for more than was ever published.
ClampHead(n) == IF Mutant = "clamp_to_ring_head" THEN fed[n] ELSE bhead

\* The client (re)subscribes on node n: its first subscription at any
\* position (after{seq}: 0 .. head, and head + 1 to exercise the clamp),
\* later ones resume at its next seq (failover after a crash, or a plain
\* reconnect).
Connect(n) ==
    /\ mode = "off" /\ up[n]
    /\ \E s \in IF cnext = -1 THEN 0 .. bhead + 1 ELSE {cnext} :
       LET p == Min(s, ClampHead(n))
           lo == Lo(n)
           \* the client's accounting starts at the first SubscribeOk
           cn == IF cnext = -1 THEN p ELSE cnext
       IN /\ cnode' = n
          /\ rlo' = IF Mutant = "switch_stale_oldest" THEN lo ELSE 0
          /\ IF p >= lo THEN
                  \* the ring holds p, or will (p >= fed: wait for the feed)
                  /\ mode' = "ring" /\ dnext' = p /\ live' = TRUE
                  /\ firstEv' = (Mutant = "first_lag_not_retained")
                  /\ cnext' = cn
                  /\ UNCHANGED <<gap, wrongId, nrFalse, nrNeedless, lapFalse>>
             ELSE IF Mutant = "resume_from_ring_head" THEN
                  /\ mode' = "ring" /\ dnext' = lo /\ live' = TRUE /\ firstEv' = FALSE
                  /\ cnext' = cn
                  /\ UNCHANGED <<gap, wrongId, nrFalse, nrNeedless, lapFalse>>
             ELSE IF Mutant = "not_retained_from_ring" /\ p < bfirst THEN
                  /\ mode' = "ring" /\ dnext' = lo /\ live' = TRUE /\ firstEv' = FALSE
                  /\ ResyncOn(n, cn, lo - p, lo, NR)
             ELSE
                  \* resume older than the ring: replay from the backbone
                  /\ mode' = "replay" /\ dnext' = p /\ live' = FALSE /\ firstEv' = FALSE
                  /\ cnext' = cn
                  /\ UNCHANGED <<gap, wrongId, nrFalse, nrNeedless, lapFalse>>
    /\ UNCHANGED <<bfirst, bhead, nodeVars, crashes, drops>>

\* The connection is lost, or the client moves on (a plain reconnect).
Drop ==
    /\ mode # "off" /\ drops < MaxDrops
    /\ drops' = drops + 1
    /\ Disconnect
    /\ UNCHANGED <<bfirst, bhead, nodeVars, crashes, clientVars>>

(***************************************************************************)
(* Drain::next_batch: one event (or the switch) per step                   *)
(***************************************************************************)

\* Drain::replay with backbone/replay.rs behind it: while next < lo, the
\* backbone's message at next, or one NOT_RETAINED resync for the run the
\* backbone no longer holds; at next >= lo (re-read every step: the feed
\* keeps moving it) the switch to the ring.
ReplayStep ==
    /\ mode = "replay"
    /\ LET n == cnode
           lo == Lo(n)
           switchAt == IF Mutant = "switch_stale_oldest" THEN rlo
                       ELSE IF Mutant = "switch_early" THEN lo - 1
                       ELSE lo
       IN IF dnext >= switchAt THEN
               \* the switch: a ring reader at Start::At(next - base).
               \* switch_on_event: only once the replay has another event
               \* (a message past next) for the drain.
               /\ Mutant = "switch_on_event" => dnext < bhead
               /\ mode' = "ring"
               /\ dnext' = IF Mutant = "switch_early" THEN Max(dnext, lo) ELSE dnext
               /\ live' = (dnext' >= lo)
               /\ UNCHANGED <<cnode, firstEv, rlo, clientVars>>
          ELSE IF dnext < bfirst THEN
               IF Mutant = "replay_gap_silent" THEN
                    \* the consumer's next message is the oldest retained one
                    /\ bfirst < bhead
                    /\ dnext' = bfirst + 1
                    /\ Deliver(bfirst, Id(bfirst))
                    /\ UNCHANGED <<cnode, mode, live, firstEv, rlo>>
               ELSE
                    LET r == IF ResyncToRing THEN Min(bfirst, lo) ELSE bfirst
                    IN /\ dnext' = r
                       /\ ResyncOn(n, cnext, r - dnext, r, NR)
                       /\ UNCHANGED <<cnode, mode, live, firstEv, rlo>>
          ELSE
               /\ dnext' = dnext + 1
               /\ Deliver(dnext, Id(dnext))
               /\ UNCHANGED <<cnode, mode, live, firstEv, rlo>>
    /\ UNCHANGED <<bfirst, bhead, nodeVars, crashes, drops>>

\* The ring reader: a lap is one LAPPED resync (exact: Reader::lag), a
\* hole a NOT_RETAINED resync (the drain folds a run of them into one),
\* anything else the message.  Nothing to read (next >= fed): wait.
RingStep ==
    /\ mode = "ring"
    /\ LET n == cnode
           lo == Lo(n)
       IN IF dnext < lo THEN
               /\ dnext' = lo
               /\ ResyncOn(n, cnext, lo - dnext, lo,
                           IF firstEv THEN NR ELSE LAPPED)
          ELSE
               /\ dnext < fed[n]
               /\ dnext' = dnext + 1
               /\ LET e == ring[n][dnext]
                  IN IF e = HOLE /\ Mutant # "hole_as_message"
                       THEN ResyncOn(n, cnext, 1, dnext + 1, NR)
                       ELSE Deliver(dnext, e)
    /\ firstEv' = FALSE
    /\ UNCHANGED <<cnode, mode, live, rlo>>
    /\ UNCHANGED <<bfirst, bhead, nodeVars, crashes, drops>>

\* Everything published is gone from the backbone and the drain's position
\* is at or past all its node's feed wrote: stutter (so that this is not a
\* deadlock, while any other stuck state still is).  A replay there can
\* always switch to the ring; whether it does is CatchesUp's business.
Finished ==
    /\ bhead = MaxMsgs /\ bfirst = bhead
    /\ mode # "off" /\ dnext >= fed[cnode]
    /\ UNCHANGED vars

Next ==
    \/ Publish \/ Evict
    \/ \E n \in Nodes : Start(n) \/ Renew(n) \/ Crash(n) \/ Feed(n) \/ Connect(n)
    \/ Drop \/ ReplayStep \/ RingStep \/ Finished

Spec == Init /\ [][Next]_vars

\* The nodes are interchangeable: safety configs check up to a permutation
\* of their names (not with liveness, where TLC's symmetry is unsound).
NodeSymmetry == Permutations(Nodes)

\* The nodes, their feeds and the client's steps are fair; publishing,
\* eviction, crashes and drops may happen (a bounded number of times) but
\* need not.
FairSpec ==
    /\ Spec
    /\ \A n \in Nodes : WF_vars(Start(n)) /\ WF_vars(Feed(n))
    /\ WF_vars(\E n \in Nodes : Connect(n))
    /\ WF_vars(ReplayStep) /\ WF_vars(RingStep)

(***************************************************************************)
(* Properties                                                              *)
(***************************************************************************)

TypeOK ==
    /\ 0 <= bfirst /\ bfirst <= bhead /\ bhead <= MaxMsgs
    /\ \A n \in Nodes : /\ base[n] <= Lo(n) /\ Lo(n) <= fed[n] /\ fed[n] - Lo(n) <= C
                        /\ fed[n] <= cons[n] /\ cons[n] <= bhead
                        /\ \A s \in Seqs : (ring[n][s] # EMPTY) => (Lo(n) <= s /\ s < fed[n])
    /\ mode \in {"off", "replay", "ring"} /\ (mode = "off") = (cnode = NoNode)
    /\ cnext \in -1 .. MaxMsgs /\ dnext \in 0 .. MaxMsgs

\* (1) The contract: every event starts at the seq the client expects
\* next (a Message has seq = next; a Resync has resume_seq - missed = next
\* and missed >= 1), so the client's delivered and missed seqs tile
\* [start, next) exactly: each seq once, no duplicate, no silent gap.
Contract == ~gap

\* (2) Every delivered message is the backbone's message at its seq (the
\* id it carries is the one published at that seq), whether it came from a
\* ring (any node's, any base) or from a replay; a hole is never one.
SameNumbering == ~wrongId

\* (3) Every seq reported NOT_RETAINED (by a replay, or as a hole) was
\* below the backbone's first when it was reported: with Contract, the
\* counts are exact against the backbone's first.
NotRetainedIsTrue == ~nrFalse

\* (4) LAPPED is reported only to a drain that the ring lapped while it was
\* reading it: every seq reported LAPPED was in the ring (>= lo) when the
\* drain began to read the ring (never a seq the replay should have served).
LappedWhileLive == ~lapFalse

\* (finding) Stricter than (3): NOT_RETAINED only for a seq that neither
\* the backbone nor the serving node's ring held as a message.
NotRetainedOnlyWhenGone == ~nrNeedless

\* Liveness: once crashes, drops, publishing and eviction are over, the
\* client ends up reading a ring and has read everything its node's feed
\* wrote, and the feed has written everything published (or everything
\* left is already gone from the backbone: the feed learns of the
\* trailing gap only from the next message).
CatchesUp ==
    <>[](/\ mode = "ring"
         /\ cnext >= fed[cnode]
         /\ (fed[cnode] = bhead \/ bfirst = bhead))
=============================================================================
