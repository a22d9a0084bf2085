"""Chaos on the real broker: several instances of one group serve a stream while instances are
killed (-9), stopped (SIGTERM), restarted and scaled 1 -> 3 -> 2 -> 1, and the broker restarts.
Afterwards every input has an answer or a dead letter, every stored session equals the truth read
back from the input topic, and duplicates stay within one micro-batch per partition per kill.

`make test` runs the short version; `make test-chaos` the full one (STREAMREC_CHAOS_EVENTS=200000,
STREAMREC_CHAOS_USERS=20000). The counts are printed (pytest -s) and written to
var/chaos/<delivery>.json."""
import json
import re
import os
import random
import subprocess
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from conftest import BIN, ROOT, Deployment, SteadyProducer, broker, child_env, event, run_cli

EVENTS = int(os.environ.get("STREAMREC_CHAOS_EVENTS", "8000"))
USERS = int(os.environ.get("STREAMREC_CHAOS_USERS", "1000"))
RATE = float(os.environ.get("STREAMREC_CHAOS_RATE", "100"))
SEED = int(os.environ.get("STREAMREC_CHAOS_SEED", "7"))
# Seconds of records per produce burst, and the instances' pipeline.max_batch. tansu stores every
# produced batch as an S3 object and its fetch returns one stored batch per partition, so the
# full size needs larger bursts and micro-batches to keep pace (docs/benchmarks.md).
BURST_SECONDS = float(os.environ.get("STREAMREC_CHAOS_BURST_SECONDS", "1"))
MAX_BATCH = int(os.environ.get("STREAMREC_CHAOS_MAX_BATCH", "500"))
PARTITIONS = 6


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
        # tansu 0.6 never expires a static member that stopped, so its partitions would stay
        # assigned to it: dynamic membership here (docs/operations.md).
        self.running[name] = self.d.serve("--instance-id", name, "--delivery", self.delivery,
                                          "--standby-replicas", str(self.standby), state=state,
                                          env={"STREAMREC_KAFKA_STATIC_MEMBERSHIP": "false",
                                               "STREAMREC_PIPELINE_MAX_BATCH": str(MAX_BATCH)})
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
    if delivery == "exactly_once" and os.environ.get("STREAMREC_BROKER_TRANSACTIONS", "0") != "1":
        # tansu 0.6 accepts transactions but its read_committed readers see aborted records, so
        # no exactly-once claim can be checked on it; the mock-cluster tests cover this mode.
        # STREAMREC_BROKER_TRANSACTIONS=1 runs it against a broker that has them (Apache Kafka).
        pytest.skip("the local broker (tansu 0.6) does not hide aborted transactions from read_committed readers (docs/operations.md)")
    rng = random.Random(SEED)
    fleet = Fleet(d, delivery, standby=1)
    records = chaos_records()
    duration = len(records) / RATE

    fleet.start("a")
    producer = BurstProducer(d, records, RATE, BURST_SECONDS)
    start = time.time()
    producer.start()

    # One membership change at a time, each after the group has settled (every partition owned
    # by a running instance): tansu 0.6 never completes a rebalance that starts while a killed
    # member has not expired yet (Apache Kafka expires it after session.timeout.ms).
    kills = 0
    plan = ["scale-up", "kill9", "restart", "broker", "sigterm", "kill9", "restart", "sigterm", "sigterm"]
    stopped = []
    consumer_errors_seen = 0.0
    settle_seconds = []
    for action in plan:
        settle_seconds.append(round(settle(fleet), 1))
        if action == "scale-up":
            fleet.start("b")
            settle(fleet)
            fleet.start("c")                                            # 1 -> 3
        elif action == "kill9":
            name = rng.choice(sorted(fleet.running))
            fleet.kill9(name)
            stopped.append(name)
            kills += 1
        elif action == "restart":
            fleet.start(stopped.pop())
        elif action == "broker":
            # tansu 0.6 loses records it acknowledged shortly before a restart (inputs in session
            # 15, a micro-batch of answers in session 16): no client can keep what the broker drops
            # after acknowledging it. So the stream pauses and drains, tansu gets time to store it,
            # and then the broker restarts under the running instances (their consumer errors and
            # reconnects are what this step tests). Apache Kafka needs no pause.
            producer.pause()
            drained(fleet)
            time.sleep(5)
            fleet.events.append((time.time(), "broker restart", ""))
            broker("restart")
            time.sleep(5)
            producer.resume()
            for service in fleet.running.values():
                consumer_errors_seen += metric(service, "streamrec_consumer_errors_total")
        elif action == "sigterm" and len(fleet.running) > 1:
            fleet.terminate(rng.choice(sorted(fleet.running)))          # 3 -> 2 -> 1
        # The steps are spread over the stream (8 s apart in the short version).
        time.sleep(max(0.0, min(duration / (len(plan) + 1), start + duration - time.time())))
    settle_seconds.append(round(settle(fleet), 1))

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
        "settle_seconds": settle_seconds, "stream_seconds": round(duration, 1),
        "timeline": [(round(t - start, 1), what, who) for t, what, who in fleet.events],
    }
    out = ROOT / "var" / "chaos"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{delivery}.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


class BurstProducer(threading.Thread):
    """`burst_seconds` worth of records at a time, in large batches. tansu 0.6 stores each record
    batch as an object and answers a fetch with one batch per partition, about a second a round
    here: a stream of one-record batches would be served at a few events per second."""

    def __init__(self, d, records, rate, burst_seconds=1.0):
        super().__init__(daemon=True)
        self.d, self.records = d, records
        self.rate, self.burst = int(rate), max(1, int(rate * burst_seconds))
        self.error = None
        self.resumed = threading.Event()
        self.resumed.set()
        self.idle = threading.Event()

    def pause(self):
        """Stops after the current second's records are delivered; returns when they are."""
        self.idle.clear()
        self.resumed.clear()
        self.idle.wait(180)

    def resume(self):
        self.resumed.set()

    def run(self):
        try:
            p = Producer({"bootstrap.servers": self.d.brokers, "enable.idempotence": True, "linger.ms": 200,
                          "batch.num.messages": 100000, "log_level": 3})
            start = time.time()
            for i in range(0, len(self.records), self.burst):
                if not self.resumed.is_set():
                    paused = time.time()
                    self.idle.set()
                    self.resumed.wait()
                    start += time.time() - paused          # the schedule resumes where it stopped
                delay = start + i / self.rate - time.time()
                if delay > 0:
                    time.sleep(delay)
                for key, value in self.records[i:i + self.burst]:
                    p.produce(self.d.input, key=key, value=value)
                p.flush(120)
            if p.flush(120):
                self.error = "records undelivered"
        except Exception as e:  # surfaced by the test
            self.error = repr(e)
        finally:
            self.idle.set()


def drained(fleet, timeout=120):
    """Waits until the running instances have answered nothing new for 3 s."""
    last, quiet_since, began = None, time.time(), time.time()
    while time.time() - began < timeout:
        out = sum(metric(s, "streamrec_recommendations_out_total") + metric(s, "streamrec_events_dlq_total")
                  for s in fleet.running.values())
        if out != last:
            last, quiet_since = out, time.time()
        elif time.time() - quiet_since >= 3:
            return
        time.sleep(0.5)


def settle(fleet, timeout=180):
    """Waits until every running instance owns partitions and together they own them all; returns
    the seconds."""
    began = time.time()
    while time.time() - began < timeout:
        assigned = [metric(s, "streamrec_assigned_partitions") for s in fleet.running.values()]
        restoring = sum(metric(s, "streamrec_restoring_partitions") for s in fleet.running.values())
        # Every instance owns some partition (a member still joining would leave the group
        # mid-rebalance), and together they own them all.
        if sum(assigned) == PARTITIONS and min(assigned) >= 1 and restoring == 0:
            return time.time() - began
        time.sleep(0.5)
    raise AssertionError(f"the group did not settle in {timeout} s: {[(n, s.log_text()[-600:]) for n, s in fleet.running.items()]}")


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


@pytest.mark.skipif(os.environ.get("STREAMREC_FAILOVER") != "1", reason="a measurement: make test-chaos runs it")
@pytest.mark.parametrize("standby", [0, 1])
def test_failover_time(chaos_deployment, standby):
    """Time from kill -9 of an owner to the first answer of its successor for each of its
    partitions, with a preloaded state (STREAMREC_FAILOVER_USERS users), with and without a standby.
    The fixture stops the survivor afterwards."""
    d = chaos_deployment
    users = int(os.environ.get("STREAMREC_FAILOVER_USERS", "50000"))
    now = int(time.time() * 1000)
    preload = [(f"u{n % users}".encode(), event(f"u{n % users}", f"x{n}", now + n)) for n in range(users * 4)]
    d.produce(preload)
    fleet = Fleet(d, "at_least_once", standby=standby)
    fleet.start("a")
    fleet.start("b")
    settle(fleet, timeout=300)
    d.answers({(p, o) for p, o in d.input_offsets()}, timeout=600)      # the preload is served
    live = [(f"u{n % users}".encode(), event(f"u{n % users}", f"y{n}", now + 10_000_000 + n)) for n in range(100 * 120)]
    producer = BurstProducer(d, live, 100)
    producer.start()
    time.sleep(20)
    owned = [int(m) for m in re.findall(r"assigned interactions-\w+\[(\d+)\]", fleet.running["b"].log_text().split("revoked")[-1])]
    survivor = fleet.running["a"]
    rebalances = metric(survivor, "streamrec_rebalances_total")
    killed_at = time.time()
    fleet.kill9("b")
    # The survivor counts a rebalance when its new assignment arrives, before any restore: kill ->
    # assignment is the group's part (the broker expiring b, then the rebalance), the rest ours.
    while metric(survivor, "streamrec_rebalances_total") == rebalances and time.time() - killed_at < 300:
        time.sleep(0.1)
    assigned_after = round(time.time() - killed_at, 2)
    settle(fleet, timeout=300)
    time.sleep(5)
    first = {}
    for m in d.read(d.output, lambda ms: False, timeout=15):
        body = json.loads(m.value())
        p, produced = body["source"]["partition"], body["produced_at"] / 1000
        if p in owned and produced > killed_at:
            first[p] = min(first.get(p, produced), produced)
    producer.join(timeout=200)
    gaps = {p: round(first[p] - killed_at, 2) for p in owned if p in first}
    restore_lines = re.findall(r"records=(\d+) seconds=([\d.]+) sessions=(\d+) \[StreamRecService\] restored", "".join(s.log_text() for s in fleet.running.values()))
    summary = {"standby": standby, "users": users, "partitions_moved": owned, "failover_seconds": gaps,
               "worst": max(gaps.values()) if gaps else None, "kill_to_assignment_seconds": assigned_after,
               "restores": restore_lines[-len(owned):]}
    out = ROOT / "var" / "chaos"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"failover-standby{standby}.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    assert set(gaps) == set(owned), f"partitions never answered after the kill: {set(owned) - set(gaps)}"
