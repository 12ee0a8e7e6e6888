"""Lapwing's gRPC edge from Python, knowing nothing but the server address.

Everything about the API comes from server reflection: the message classes
are built from the descriptors the server sends. Checks: services listed,
health, admin auth, a principal's denials (typed status plus the
lapwing-error-code metadata), a publish/subscribe round trip with contiguous
seqs, a slow subscriber that gets an exact resync (delivered + missed ==
published), and /metrics parsed by prometheus_client's text parser with the
counters matching what happened. Every wait is bounded.
"""

import argparse
import sys
import time
import urllib.request

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message_factory import GetMessageClass
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client.parser import text_string_to_metric_families

TIMEOUT = 60  # seconds, for every call and stream


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grpc", required=True)
    ap.add_argument("--http", required=True)
    ap.add_argument("--admin-token", required=True)
    ap.add_argument("--data-token", required=True)
    args = ap.parse_args()
    data_md = [("authorization", f"Bearer {args.data_token}")]

    channel = grpc.insecure_channel(args.grpc)
    grpc.channel_ready_future(channel).result(timeout=TIMEOUT)

    # --- reflection: the whole API from the server --------------------------
    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    for want in ("lapwing.v1.Bus", "lapwing.v1.Admin", "grpc.health.v1.Health"):
        assert want in services, f"{want} not in {services}"
    pool = descriptor_pool.DescriptorPool(db)

    def msg(name):
        return GetMessageClass(pool.FindMessageTypeByName(name))

    def method(service, name):
        m = pool.FindServiceByName(service).FindMethodByName(name)
        req, resp = GetMessageClass(m.input_type), GetMessageClass(m.output_type)
        path = f"/{service}/{name}"
        kind = (m.client_streaming, m.server_streaming)
        make = {
            (False, False): channel.unary_unary,
            (True, False): channel.stream_unary,
            (False, True): channel.unary_stream,
        }[kind]
        return req, make(path, request_serializer=req.SerializeToString,
                         response_deserializer=resp.FromString)

    # --- health ---------------------------------------------------------------
    HealthReq, check = method("grpc.health.v1.Health", "Check")
    for service in ("", "lapwing.v1.Bus"):
        r = check(HealthReq(service=service), timeout=TIMEOUT)
        assert r.status == 1, f"health of {service!r}: {r}"  # SERVING

    # --- admin auth -------------------------------------------------------------
    CreateTopic, create_topic = method("lapwing.v1.Admin", "CreateTopic")
    admin_md = [("authorization", f"Bearer {args.admin_token}")]
    try:
        create_topic(CreateTopic(name="py.denied"), timeout=TIMEOUT)
        raise AssertionError("admin call without a token succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
    try:
        create_topic(CreateTopic(name="py.denied"), timeout=TIMEOUT, metadata=data_md)
        raise AssertionError("admin call with a data token succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.PERMISSION_DENIED, e
    info = create_topic(CreateTopic(name="py.slow", ring_bytes=8192, max_message_bytes=1024),
                        timeout=TIMEOUT, metadata=admin_md)
    assert (info.ring_bytes, info.max_message_bytes) == (8192, 1024), info

    PublishRequest, publish = method("lapwing.v1.Bus", "Publish")
    _, publish_stream = method("lapwing.v1.Bus", "PublishStream")
    SubscribeRequest, subscribe = method("lapwing.v1.Bus", "Subscribe")

    def subscribed(topic):
        call = subscribe(SubscribeRequest(topic=topic), timeout=TIMEOUT, metadata=data_md)
        md = dict(call.initial_metadata())  # waits until the server set it up
        return call, int(md["lapwing-epoch"]), int(md["lapwing-start-seq"])

    # --- a principal's denials ------------------------------------------------------
    def denied(call):
        try:
            result = call()
            if hasattr(result, "initial_metadata"):
                next(result)  # a stream reports its status on the first read
            raise AssertionError("a denied call succeeded")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.PERMISSION_DENIED, e
            trailers = dict(e.trailing_metadata() or ())
            assert trailers.get("lapwing-error-code") == "12", trailers
            return e.details()

    why = denied(lambda: publish(PublishRequest(topic="other.t", payload=b"x"),
                                 timeout=TIMEOUT, metadata=data_md))
    assert "other.t" in why and "publish" in why, why
    why = denied(lambda: subscribe(SubscribeRequest(topic="py.secret"),
                                   timeout=TIMEOUT, metadata=data_md))
    assert "py.secret" in why, why
    try:
        publish(PublishRequest(topic="py.rt", payload=b"x"), timeout=TIMEOUT)
        raise AssertionError("a data call without a token succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
    print("denials: PERMISSION_DENIED with lapwing-error-code 12, naming action and topic")

    # --- round trip -------------------------------------------------------------
    call, epoch, start = subscribed("py.rt")
    assert start == 0
    for i in range(10):
        ack = publish(PublishRequest(topic="py.rt", payload=f"m{i}".encode()),
                      timeout=TIMEOUT, metadata=data_md)
        assert (ack.epoch, ack.seq) == (epoch, i), ack
    for i in range(10):
        d = next(call)
        assert d.WhichOneof("kind") == "message", d
        assert (d.message.seq, d.message.epoch, d.message.payload) == (i, epoch, f"m{i}".encode())
    call.cancel()
    print("round trip: 10 messages, seqs 0..9 in order")

    # --- a wildcard subscription: per-topic events, its own grant -------------------
    why = denied(lambda: next(subscribe(SubscribeRequest(topic="py.*"),
                                        timeout=TIMEOUT, metadata=data_md)))
    assert "py.*" in why, why  # py.* could reach the denied py.secret
    call, _, _ = subscribed("py.w.*")
    for topic in ("py.w.a", "py.w.b"):  # created after the subscribe
        for i in range(3):
            publish(PublishRequest(topic=topic, payload=f"{topic}/{i}".encode()),
                    timeout=TIMEOUT, metadata=data_md)
    nxt = {}
    while sum(nxt.values()) < 6:
        d = next(call)
        kind = d.WhichOneof("kind")
        if kind == "joined":
            assert d.joined.topic not in nxt and d.joined.start_seq == 0, d
            nxt[d.joined.topic] = 0
        else:
            assert kind == "message", d
            m = d.message
            assert m.topic in nxt, f"a message of {m.topic} before its joined"
            assert (m.seq, m.payload) == (nxt[m.topic], f"{m.topic}/{m.seq}".encode()), m
            nxt[m.topic] += 1
    call.cancel()
    assert nxt == {"py.w.a": 3, "py.w.b": 3}, nxt
    print("wildcard py.w.*: joined each new topic, 3 messages each in order; py.* denied")

    # --- slow subscriber: exact resync ------------------------------------------
    call, epoch, start = subscribed("py.slow")
    n = 20_000
    payload = b"x" * 1024
    summary = publish_stream(
        (PublishRequest(topic="py.slow", payload=payload) for _ in range(n)),
        timeout=TIMEOUT, metadata=data_md)
    assert summary.published == n, summary
    nxt, delivered, missed, resyncs = start, 0, 0, []
    deadline = time.monotonic() + TIMEOUT
    while nxt < n:
        assert time.monotonic() < deadline, "subscriber did not catch up in time"
        d = next(call)
        if d.WhichOneof("kind") == "message":
            assert d.message.seq == nxt, f"gap without resync: {d.message.seq} != {nxt}"
            delivered += 1
            nxt += 1
        else:
            r = d.resync
            assert r.resume_seq == nxt + r.missed, f"resync does not add up: {r}"
            assert r.reason == 1, f"expected LAPPED: {r}"
            missed += r.missed
            nxt = r.resume_seq
            resyncs.append(r)
    call.cancel()
    assert delivered + missed == n - start, (delivered, missed, n)
    assert resyncs and missed > 0, "a 20 MiB burst through an 8 KiB ring must lap"
    print(f"slow subscriber: delivered {delivered} + missed {missed} == published {n}, "
          f"{len(resyncs)} resync(s)")

    # --- metrics ------------------------------------------------------------------
    def get(path):
        with urllib.request.urlopen(f"http://{args.http}{path}", timeout=TIMEOUT) as r:
            return r.status, r.read().decode()

    assert get("/healthz")[0] == 200
    assert get("/readyz")[0] == 200
    # Counters are recorded per batch as subscription streams read; the
    # cancelled streams above already did. Poll (bounded) for the totals.
    deadline = time.monotonic() + TIMEOUT
    while True:
        _, text = get("/metrics")
        samples = {}
        types = {}
        for family in text_string_to_metric_families(text):
            types[family.name] = family.type
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        grpc_l = (("transport", "grpc"),)
        got = {
            "published": samples.get(("lapwing_messages_published_total", ())),
            "delivered": samples.get(("lapwing_messages_delivered_total", grpc_l)),
            "missed": samples.get(("lapwing_messages_missed_total", grpc_l)),
            "resyncs": samples.get(("lapwing_resyncs_total", grpc_l)),
        }
        # The round trip's 10 and the wildcard's 6 messages, then the burst.
        want = {"published": n + 10 + 6, "delivered": delivered + 10 + 6, "missed": missed,
                "resyncs": len(resyncs)}
        if got == want:
            break
        assert time.monotonic() < deadline, f"metrics {got} != {want}"
        time.sleep(0.1)
    assert types.get("lapwing_publish_to_deliver_seconds") == "histogram", types
    assert samples[("lapwing_topics", ())] >= 2
    laps = samples[("lapwing_ring_laps_total", grpc_l)]
    assert laps >= len(resyncs), laps
    print(f"metrics: {got} (parsed by prometheus_client)")
    print("python gRPC test: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        raise
