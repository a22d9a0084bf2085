"""Real-broker suite: drives the real `streamrec` binary as a separate process against tansu
(a Kafka-protocol broker) started by ops/broker.sh, with confluent-kafka as the test client."""
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("STREAMREC_BIN", ROOT / ".build" / "debug" / "streamrec"))
BROKER_PORT = os.environ.get("STREAMREC_BROKER_PORT", "19092")
BROKERS = f"127.0.0.1:{BROKER_PORT}"
# STREAMREC_VENV: the venv with tansu and librdkafka 2.16 when it is not ROOT/.venv (a worktree).
LIBRDKAFKA = Path(os.environ.get("STREAMREC_VENV", ROOT / ".venv")) / "librdkafka"


def child_env():
    env = dict(os.environ)
    # Debian's librdkafka 2.0.2 cannot handshake with tansu; 2.16 (from the confluent-kafka
    # wheel) is ABI-compatible, so the same binary runs with it.
    env["LD_LIBRARY_PATH"] = str(LIBRDKAFKA)
    # tansu 0.6's read_committed fetches can stop below the high watermark (docs/operations.md).
    env.setdefault("STREAMREC_STATE_CHANGELOG_ISOLATION", "read_uncommitted")
    return env


def broker(cmd):
    subprocess.run([str(ROOT / "ops" / "broker.sh"), cmd], check=True, cwd=ROOT, timeout=120)


@pytest.fixture(scope="session")
def brokers():
    if not BIN.exists():
        pytest.skip(f"streamrec binary not found at {BIN}; run `swift build` (make test does)")
    broker("start")
    yield BROKERS
    broker("stop")


def run_cli(*args, timeout=120):
    result = subprocess.run([str(BIN), *args], env=child_env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"streamrec {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


class Deployment:
    """One test's topics, group, model and state directory."""

    def __init__(self, brokers, tmp_path, partitions=3):
        self.id = uuid.uuid4().hex[:8]
        self.brokers = brokers
        self.tmp = tmp_path
        self.input = f"interactions-{self.id}"
        self.output = f"recommendations-{self.id}"
        self.dlq = f"interactions-{self.id}.dlq"
        self.changelog = f"sessions-{self.id}.changelog"
        self.group = f"streamrec-{self.id}"
        self.state = tmp_path / "state"
        topology = tmp_path / "topics.yaml"
        topology.write_text(
            f"consumer_group: {self.group}\n"
            "topics:\n"
            f"  - {{name: {self.input}, role: input, partitions: {partitions}, replication: 1, config: {{retention.ms: '604800000'}}}}\n"
            f"  - {{name: {self.output}, role: output, partitions: {partitions}, replication: 1}}\n"
            f"  - {{name: {self.dlq}, role: dlq, partitions: 1, replication: 1}}\n"
            f"  - {{name: {self.changelog}, role: changelog, partitions: {partitions}, replication: 1, config: {{cleanup.policy: compact}}}}\n"
        )
        report = run_cli("topics", "apply", "--brokers", brokers, "--topology", str(topology))
        assert f"created {self.input}" in report, report
        seqs = tmp_path / "train.txt"
        seqs.write_text("".join(f"t{u} " + " ".join(f"i{(u + k) % 60}" for k in range(15)) + "\n" for u in range(40)))
        self.snapshot = tmp_path / "model.snap"
        run_cli("train", "--model", "transition", "--data", str(seqs), "--out", str(self.snapshot), "--holdout", "none")
        self.services = []

    def serve(self, *extra_args, snapshot=True, env=None, state=None):
        """`streamrec serve` for this deployment; snapshot=False serves from --registry in extra_args.
        state: this instance's LevelDB directory (a second instance of the group needs its own)."""
        service = Service(self, extra_args, snapshot, env, state)
        self.services.append(service)
        return service

    def producer(self):
        return Producer({"bootstrap.servers": self.brokers, "enable.idempotence": True, "linger.ms": 5, "log_level": 3})

    def produce(self, records):
        p = self.producer()
        for key, value in records:
            p.produce(self.input, key=key, value=value)
            p.poll(0)
        assert p.flush(60) == 0, "test producer could not deliver"

    def read(self, topic, until, timeout=120):
        """Reads a topic from the start until until(messages) holds; returns the messages."""
        consumer = Consumer({"bootstrap.servers": self.brokers, "group.id": f"reader-{uuid.uuid4().hex}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False, "log_level": 3})
        # assign(), not subscribe(): a reader needs no group membership (joins on tansu are slow).
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        messages = []
        deadline = time.time() + timeout
        try:
            while time.time() < deadline and not until(messages):
                for m in consumer.consume(num_messages=1000, timeout=0.5):
                    if m.error() is None:
                        messages.append(m)
        finally:
            consumer.close()
        return messages

    def answers(self, until_sources, timeout=180):
        """Recommendation records until every (partition, offset) in until_sources is answered."""
        wanted = set(until_sources)

        def done(messages):
            return wanted <= {source(m) for m in messages}

        messages = self.read(self.output, done, timeout)
        missing = wanted - {source(m) for m in messages}
        assert not missing, f"{len(missing)} of {len(wanted)} inputs never got a recommendation, e.g. {sorted(missing)[:5]}"
        return messages

    def sessions(self):
        out = run_cli("inspect", "sessions", "--state", str(self.state))
        return {s["user"]: s["items"] for s in map(json.loads, out.splitlines())}

    def offsets(self):
        return json.loads(run_cli("inspect", "offsets", "--state", str(self.state), "--json"))

    def input_offsets(self):
        """(partition, offset) of every record now in the input topic."""
        return {(m.partition(), m.offset()) for m in self.read(self.input, lambda ms: False, timeout=5)}


def source(message):
    body = json.loads(message.value())
    return body["source"]["partition"], body["source"]["offset"]


class Service:
    def __init__(self, deployment, extra_args=(), snapshot=True, env=None, state=None):
        self.d = deployment
        self.log = deployment.tmp / f"serve-{len(deployment.services)}.log"
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--brokers", deployment.brokers, "--state", str(state or deployment.state),
             "--input-topic", deployment.input, "--output-topic", deployment.output,
             "--dlq-topic", deployment.dlq, "--changelog-topic", deployment.changelog, "--group", deployment.group, "--metrics-port", "0"]
            + (["--snapshot", str(deployment.snapshot)] if snapshot else []) + list(extra_args)
            + (["--config", os.environ["STREAMREC_SERVE_CONFIG"]] if os.environ.get("STREAMREC_SERVE_CONFIG") else []),
            env={**child_env(), **(env or {})}, cwd=ROOT, stdout=open(self.log, "w"), stderr=subprocess.STDOUT)

    def terminate(self, timeout=60):
        """SIGTERM: drain, commit, leave the group; must exit 0."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        assert code == 0, f"serve exited {code} on SIGTERM; log:\n{self.log.read_text()[-3000:]}"

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def alive(self):
        return self.proc.poll() is None

    def log_text(self):
        return self.log.read_text()

    def http(self, path, timeout=30):
        """GET on the metrics/health endpoint, whose port (0 = any) the service logs."""
        deadline = time.time() + timeout
        while True:
            match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", self.log_text())
            if match:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{match.group(1)}{path}", timeout=5) as r:
                        return r.status, r.read().decode()
                except urllib.error.HTTPError as e:
                    return e.code, e.read().decode()
            assert time.time() < deadline, "serve never logged its metrics endpoint"
            time.sleep(0.2)


@pytest.fixture
def deployment(brokers, tmp_path):
    d = Deployment(brokers, tmp_path)
    yield d
    for s in d.services:
        if s.alive():
            s.kill9()


def event(user, item, ts, **extra):
    return json.dumps({"user": user, "item": item, "ts": ts, **extra}).encode()


class SteadyProducer(threading.Thread):
    """Produces (key, value) pairs at a fixed rate in the background; records what it sent."""

    def __init__(self, deployment, records, rate):
        super().__init__(daemon=True)
        self.d, self.records, self.rate = deployment, records, rate
        self.error = None

    def run(self):
        try:
            p = self.d.producer()
            start = time.time()
            for i, (key, value) in enumerate(self.records):
                delay = start + i / self.rate - time.time()
                if delay > 0:
                    time.sleep(delay)
                p.produce(self.d.input, key=key, value=value)
                p.poll(0)
            left = p.flush(120)
            if left:
                self.error = f"{left} records undelivered"
        except Exception as e:  # surfaced by the test
            self.error = repr(e)


def assert_sessions_exact(deployment, expected):
    """Every user's stored session is exactly its produced items, in order: no duplicate, no gap."""
    sessions = deployment.sessions()
    problems = []
    for user, items in sorted(expected.items()):
        got = sessions.get(user, [])
        if got != items:
            missing = [i for i in items if i not in got]
            dups = sorted({i for i in got if got.count(i) > 1})
            problems.append(f"{user}: stored {len(got)} of {len(items)}; missing {missing[:6]}; duplicated {dups[:6]}"
                            + ("; order differs" if not missing and not dups else ""))
    assert not problems, f"{len(problems)} sessions differ:\n" + "\n".join(problems[:10])
