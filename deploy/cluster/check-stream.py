#!/usr/bin/env python3
"""Checks what a `lapwing sub --json` printed against what was published.

Used by deploy/cluster/test:

    check-stream.py LEDGER SUB.jsonl [--retried FILE] [--same-as OTHER.jsonl] [--quiet]

LEDGER has one line per acknowledged publish, `epoch seq payload`, as the
publishers' `pub --ack` reported them. SUB.jsonl is the subscriber's output:
`{"event":"message",...}` and `{"event":"resync",...}` lines.

Checked (PROTOCOL.md, "Accounting invariant"):

- the subscriber's lines keep the accounting: within an epoch, a message
  has seq == next, a resync has resume_seq == next + missed;
- every acknowledged publish from the first the subscriber could see (the
  ledger's entries at or after its first position) is either delivered,
  with the same epoch, seq and payload, or counted in a resync's `missed`:
  nothing is lost silently;
- a delivered message whose seq is not in the ledger (a publish retried
  after an unclear failure may have been stored twice, once unacknowledged)
  must carry a payload in --retried (one per line);
- --same-as: the delivered (epoch, seq, payload) of both files are equal
  over the seqs both cover (every node reports the same message at a seq).

Prints one summary line: delivered, missed (announced), silently lost,
unacknowledged extras; exits 1 on any violation.
"""

import json
import sys


def load_sub(path):
    events = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                events.append(json.loads(line))
            except ValueError:
                raise SystemExit(f"{path}:{n}: not JSON: {line[:200]}")
    return events


def main(argv):
    args = list(argv)
    retried = set()
    same_as = None
    quiet = False
    while len(args) > 2:
        opt = args.pop(2)
        if opt == "--retried":
            with open(args.pop(2), encoding="utf-8") as f:
                retried = {l.rstrip("\n") for l in f if l.strip()}
        elif opt == "--same-as":
            same_as = args.pop(2)
        elif opt == "--quiet":
            quiet = True
        else:
            raise SystemExit(f"unknown option {opt}")
    if len(args) != 2:
        raise SystemExit(__doc__)
    ledger_path, sub_path = args
    ledger = {}
    with open(ledger_path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            epoch, seq, payload = line.rstrip("\n").split(" ", 2)
            key = (int(epoch), int(seq))
            if key in ledger and ledger[key] != payload:
                raise SystemExit(f"ledger: two payloads acknowledged at {key}: {ledger[key]!r}, {payload!r}")
            ledger[key] = payload

    errors = []
    delivered = {}          # (epoch, seq) -> payload
    missed_ranges = []      # (epoch, first seq, count)
    cur_epoch = next_seq = None
    first = None
    announced_missed = 0
    for ev in load_sub(sub_path):
        kind = ev.get("event")
        epoch = ev.get("epoch")
        if kind == "message":
            seq, payload = ev["seq"], ev.get("payload")
            if ev.get("payload_encoding") != "utf8":
                errors.append(f"non-UTF-8 payload at seq {seq}")
            if cur_epoch is None:
                cur_epoch, next_seq = epoch, seq
                first = (epoch, seq)
            if epoch != cur_epoch:
                errors.append(f"message in epoch {epoch} without a resync (in epoch {cur_epoch}): seq {seq}")
            elif seq != next_seq:
                errors.append(f"message seq {seq}, expected {next_seq} (a gap or a duplicate, unannounced)")
            if (epoch, seq) in delivered:
                errors.append(f"seq {seq} delivered twice")
            delivered[(epoch, seq)] = payload
            cur_epoch, next_seq = epoch, seq + 1
        elif kind == "resync":
            missed, resume, reason = ev["missed"], ev["resume_seq"], ev.get("reason")
            if reason == "epoch_changed":
                # A new epoch: the backbone lost the topic (not expected here,
                # but the accounting is still checked).
                if resume != missed:
                    errors.append(f"epoch_changed resync with resume_seq {resume} != missed {missed}")
                missed_ranges.append((epoch, 0, missed))
            else:
                if cur_epoch is None:
                    cur_epoch, next_seq = epoch, resume - missed
                    first = (epoch, next_seq)
                if epoch != cur_epoch or resume != next_seq + missed:
                    errors.append(f"resync breaks the accounting (epoch {cur_epoch}, next {next_seq}): {ev}")
                missed_ranges.append((epoch, resume - missed, missed))
            announced_missed += missed
            cur_epoch, next_seq = epoch, resume
        else:
            errors.append(f"unexpected line: {ev}")

    def is_missed(epoch, seq):
        return any(e == epoch and s <= seq < s + n for e, s, n in missed_ranges)

    lost = []
    wrong = []
    if first is not None:
        for (epoch, seq), payload in sorted(ledger.items()):
            if epoch < first[0] or (epoch == first[0] and seq < first[1]):
                continue        # before the subscriber's start
            if (epoch, seq) in delivered:
                if delivered[(epoch, seq)] != payload:
                    wrong.append(f"seq {seq}: delivered {delivered[(epoch, seq)]!r}, acknowledged {payload!r}")
            elif not is_missed(epoch, seq):
                lost.append(seq)
    elif ledger:
        errors.append("the subscriber printed nothing")
    extras = [(k, p) for k, p in sorted(delivered.items()) if k not in ledger]
    bad_extras = [f"seq {k[1]}: {p!r}" for k, p in extras if p not in retried]
    if lost:
        errors.append(f"{len(lost)} acknowledged message(s) silently lost, seqs {lost[:20]}")
    if wrong:
        errors.append(f"{len(wrong)} message(s) with the wrong payload: {wrong[:5]}")
    if bad_extras:
        errors.append(f"{len(bad_extras)} delivered message(s) nobody published: {bad_extras[:5]}")

    if same_as is not None:
        other = {(e["epoch"], e["seq"]): e.get("payload") for e in load_sub(same_as) if e.get("event") == "message"}
        common = set(other) & set(delivered)
        diff = [k for k in sorted(common) if other[k] != delivered[k]]
        if not common:
            errors.append(f"no message in common with {same_as}")
        if diff:
            errors.append(f"{len(diff)} seq(s) differ from {same_as}: {diff[:5]}")

    summary = (
        f"delivered={len(delivered)} missed={announced_missed} silently_lost={len(lost)} "
        f"unacked_extras={len(extras)} epochs={len({k[0] for k in delivered})}"
    )
    if first is not None:
        summary += f" first_seq={first[1]} last_seq={next_seq - 1}"
    if errors:
        print(f"{sub_path}: {summary}", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        return 1
    if not quiet:
        print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
