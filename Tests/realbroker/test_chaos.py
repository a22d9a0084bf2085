"""Chaos on the real broker: several instances of one group serve a stream while instances are
killed (-9), stopped (SIGTERM), restarted and scaled 1 -> 3 -> 2 -> 1, and the broker restarts.
Afterwards every input has an answer or a dead letter, every stored session equals the truth read
back from the input topic, and duplicates stay within one micro-batch per partition per kill.

`make test` runs the short version; `make test-chaos` the full one (STREAMREC_CHAOS_EVENTS=200000,
STREAMREC_CHAOS_USERS=20000). The counts are printed (pytest -s) and written to
var/chaos/<delivery>.json."""
import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, ROOT, Deployment, SteadyProducer, broker, child_env, event, run_cli

EVENTS = int(os.environ.get("STREAMREC_CHAOS_EVENTS", "12000"))
USERS = int(os.environ.get("STREAMREC_CHAOS_USERS", "1500"))
RATE = float(os.environ.get("STREAMREC_CHAOS_RATE", "300"))
SEED = int(os.environ.get("STREAMREC_CHAOS_SEED", "7"))
PARTITIONS = 6
MAX_BATCH = 500


def chaos_records():
    """Valid events with distinct items (a replay shows as a duplicate) and 1 in 200 malformed."""
    now = int(time.time() * 1000)
    records = []
    for n in range(EVENTS):
        user = f"u{(n * 7919) % USERS}"
        records.append((user.encode(), event(user, f"x{n}", now + n)))
        if n % 200 == 199:
            records.append((user.encode(), b'{"user": "' + user.encode() + b'", "item": '))
    return records


def truth(d):
    """Per user, the items of its valid events in input order, read back from the input topic
    (what the broker kept is the truth, not what the producer sent)."""
    messages = d.read(d.input, lambda ms: False, timeout=20)
    per_user, valid = {}, set()
    for m in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        try:
            body = json.loads(m.value())
        except ValueError:
            continue
        per_user.setdefault(body["user"], []).append(body["item"])
        valid.add((m.partition(), m.offset()))
    return per_user, valid, len(messages)


class Fleet:
    """Named instances of one deployment, each with its own state directory and instance id."""

    def __init__(self, d, delivery, standby):
        self.d, self.delivery, self.standby = d, delivery, standby
        self.running = {}
        self.events = []

    def start(self, name):
        state = self.d.tmp / f"state-{name}"
        self.running[name] = self.d.serve("--instance-id", name, "--delivery", self.delivery,
                                          "--standby-replicas", str(self.standby), state=state)
        self.events.append((time.time(), "start", name))

    def kill9(self, name):
        self.running.pop(name).kill9()
        self.events.append((time.time(), "kill -9", name))

    def terminate(self, name):
        self.running.pop(name).terminate(timeout=120)
        self.events.append((time.time(), "SIGTERM", name))


def sessions_of(state):
    out = run_cli("inspect", "sessions", "--state", str(state))
    return {s["user"]: s["items"] for s in map(json.loads, out.splitlines())}


@pytest.fixture
def chaos_deployment(brokers, tmp_path):
    d = Deployment(brokers, tmp_path, partitions=PARTITIONS)
    yield d
    for s in d.services:
        if s.alive():
            s.kill9()


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_chaos(chaos_deployment, delivery):
    d = chaos_deployment
    if delivery == "exactly_once" and os.environ.get("STREAMREC_BROKER_TRANSACTIONS", "1") == "0":
        pytest.skip("the broker under test has no transactions (docs/operations.md)")
    rng = random.Random(SEED)
    fleet = Fleet(d, delivery, standby=1)
    records = chaos_records()
    duration = len(records) / RATE

    fleet.start("a")
    time.sleep(8)                                   # the first member owns every partition
    producer = SteadyProducer(d, records, RATE)
    start = time.time()
    producer.start()

    kills = 0
    plan = [
        (0.10, lambda: (fleet.start("b"), fleet.start("c"))),          # scale 1 -> 3
        (0.25, "kill9"),
        (0.35, "restart"),
        (0.45, "broker"),
        (0.60, "sigterm"),                                              # 3 -> 2
        (0.70, "kill9"),
        (0.78, "restart"),
        (0.86, "sigterm"),                                              # -> 2
        (0.92, "sigterm"),                                              # -> 1
    ]
    stopped = []
    consumer_errors_seen = 0.0
    for at, action in plan:
        delay = start + at * duration - time.time()
        if delay > 0:
            time.sleep(delay)
        if callable(action):
            action()
        elif action == "kill9":
            name = rng.choice(sorted(fleet.running))
            fleet.kill9(name)
            stopped.append(name)
            kills += 1
        elif action == "restart":
            fleet.start(stopped.pop())
        elif action == "broker":
            fleet.events.append((time.time(), "broker restart", ""))
            broker("restart")
            time.sleep(5)
            for service in fleet.running.values():
                consumer_errors_seen += metric(service, "streamrec_consumer_errors_total")
        elif action == "sigterm" and len(fleet.running) > 1:
            fleet.terminate(rng.choice(sorted(fleet.running)))

    producer.join(timeout=duration + 300)
    assert producer.error is None, producer.error
    per_user, valid, input_records = truth(d)

    # Every input has an output record (streamrec audit: answers and dead letters by source offset).
    deadline = time.time() + 600
    while True:
        audit = subprocess.run([str(BIN), "audit", "--once", "--brokers", d.brokers, "--input-topic", d.input,
                                "--output-topic", d.output, "--dlq-topic", d.dlq]
                               + (["--read-committed"] if delivery == "exactly_once" else []),
                               env=child_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
        report = json.loads(audit.stdout) if audit.stdout.strip() else {}
        if audit.returncode == 0 or time.time() > deadline:
            break
        time.sleep(10)
    assert audit.returncode == 0, f"inputs without any output record: {audit.stdout[:2000]} {audit.stderr[-2000:]}"
    last = next(iter(fleet.running))
    fleet.terminate(last)

    # Answers: each valid input at least once; duplicates bounded (none for read_committed).
    answers = d.read(d.output, lambda ms: False, timeout=30) if delivery == "at_least_once" else read_committed(d)
    counts = {}
    for m in answers:
        body = json.loads(m.value())
        key = (body["source"]["partition"], body["source"]["offset"])
        counts[key] = counts.get(key, 0) + 1
    unanswered = valid - set(counts)
    duplicates = sum(c - 1 for c in counts.values())
    assert not unanswered, f"{len(unanswered)} valid inputs never answered, e.g. {sorted(unanswered)[:5]}"
    if delivery == "exactly_once":
        assert duplicates == 0, f"read_committed saw {duplicates} answers twice"
    else:
        assert duplicates <= kills * PARTITIONS * MAX_BATCH, f"{duplicates} duplicates after {kills} kills"

    # Sessions: the last instance (owner of everything) holds the truth for every user; every
    # other state directory holds, for each user it has, a prefix of the truth (no duplicate,
    # nothing skipped).
    final = sessions_of(d.tmp / f"state-{last}")
    wrong = [u for u, items in per_user.items() if final.get(u) != items[-200:]]
    assert not wrong, f"{len(wrong)} sessions of the last instance differ, e.g. {wrong[0]}: {final.get(wrong[0])} vs {per_user[wrong[0]]}"
    inconsistent = 0
    for name in {"a", "b", "c"} - {last}:
        for user, items in sessions_of(d.tmp / f"state-{name}").items():
            true = per_user.get(user, [])
            if not any(items == true[max(0, k - 200):k] for k in range(len(true) + 1)):
                inconsistent += 1
    assert inconsistent == 0, f"{inconsistent} stored sessions are not a prefix of their user's events"

    summary = {
        "delivery": delivery, "events": EVENTS, "users": USERS, "input_records": input_records,
        "valid_inputs": len(valid), "answers": len(answers), "duplicates": duplicates, "kills": kills,
        "unanswered": len(unanswered), "sessions_checked": len(per_user), "audit_missing": report.get("missing") if report else None,
        "consumer_errors_during_broker_restart": consumer_errors_seen,
        "timeline": [(round(t - start, 1), what, who) for t, what, who in fleet.events],
    }
    out = ROOT / "var" / "chaos"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{delivery}.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


def metric(service, name):
    status, text = service.http("/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split(" ")[1])
    return 0.0


def read_committed(d):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    import uuid
    consumer = Consumer({"bootstrap.servers": d.brokers, "group.id": f"reader-{uuid.uuid4().hex}",
                         "isolation.level": "read_committed", "enable.auto.commit": False, "log_level": 3})
    partitions = consumer.list_topics(d.output, timeout=30).topics[d.output].partitions
    consumer.assign([TopicPartition(d.output, p, OFFSET_BEGINNING) for p in partitions])
    messages, idle = [], time.time()
    while time.time() - idle < 10:
        batch = consumer.consume(num_messages=1000, timeout=0.5)
        for m in batch:
            if m.error() is None:
                messages.append(m)
        if batch:
            idle = time.time()
    consumer.close()
    return messages
