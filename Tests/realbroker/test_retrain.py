"""Retrain end to end with the real binaries and a real broker: two `serve --registry` instances
of one consumer group answer a steady stream with v1 while `streamrec retrain --config` (a
separate process) builds a training set from the input topic, trains a transition model, passes
the gate, publishes, promotes and announces v2; every instance switches between micro-batches,
with exactly one answer per event."""
import json
import subprocess
import time

from conftest import BIN, ROOT, SteadyProducer, child_env, event, run_cli, source
from test_hot_reload import wait_for_swap


def walk(n, now):
    """User u walks the items in steps of 3 (v1 was trained on steps of 1): v2 learns it."""
    u, step = n % 12, n // 12
    user = f"u{u}"
    return user.encode(), event(user, f"i{(u * 5 + 3 * step) % 60}", now + n, type="click")


def test_retrain_from_the_topic_is_gated_promoted_and_served(deployment):
    d = deployment
    registry = d.tmp / "registry"
    updates = f"model-updates-{d.id}"
    topology = d.tmp / "updates.yaml"
    topology.write_text(
        f"consumer_group: {d.group}\n"
        "topics:\n"
        f"  - {{name: {updates}, role: model-updates, partitions: 1, replication: 1, config: {{cleanup.policy: compact}}}}\n")
    run_cli("topics", "apply", "--brokers", d.brokers, "--topology", str(topology))
    v1 = run_cli("models", "publish", "--registry", str(registry), "--snapshot", str(d.snapshot), "--data-window", "initial").strip()
    run_cli("models", "promote", v1, "--registry", str(registry))

    env = {"STREAMREC_KAFKA_MODEL_UPDATES_TOPIC": updates, "STREAMREC_MODEL_REGISTRY_POLL_MS": "600000"}
    services = [d.serve("--registry", str(registry), snapshot=False, env=env, state=d.tmp / f"state-{i}") for i in range(2)]
    now = int(time.time() * 1000)
    d.produce([walk(n, now) for n in range(480)])
    history = d.answers(d.input_offsets())
    assert {json.loads(m.value())["model"]["version"] for m in history} == {v1}

    # A steady stream through the retrain and the swap.
    stream = SteadyProducer(d, [walk(n, now) for n in range(480, 1080)], rate=40)
    stream.start()
    time.sleep(1)

    config = d.tmp / "retrain.yaml"
    config.write_text(
        "kafka:\n"
        f"  brokers: {d.brokers}\n"
        f"  input_topic: {d.input}\n"
        f"  model_updates_topic: {updates}\n"
        "model:\n"
        f"  registry: {registry}\n"
        "retrain:\n"
        "  model: transition\n"
        "  window_hours: 1\n"
        "  max_regression: 0.02\n"
        "  min_events: 100\n"
        f"  work_dir: {d.tmp / 'retrain'}\n")
    result = subprocess.run([str(BIN), "retrain", "--config", str(config)], env=child_env(), cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"retrain exited {result.returncode}:\n{result.stdout}\n{result.stderr[-3000:]}"
    assert result.stdout.startswith("promoted "), result.stdout
    v2 = result.stdout.split()[1].rstrip(":")
    assert v2 != v1
    assert run_cli("models", "current", "--registry", str(registry)).strip() == v2
    assert (registry / "versions" / v2 / "model.snap.report.md").exists()
    # Every instance of the group follows the announcement (the pointer poll is off: 10 min).
    for service in services:
        wait_for_swap(service, v2)

    stream.join(timeout=60)
    assert stream.error is None, stream.error
    # tansu's visible high watermark lags what was written: wait for everything produced.
    inputs = {(m.partition(), m.offset()) for m in d.read(d.input, lambda ms: len(ms) >= 1080, timeout=90)}
    assert len(inputs) == 1080
    d.answers(inputs)
    time.sleep(1)
    messages = d.read(d.output, lambda ms: len(ms) > 1080, timeout=5)
    # Exactly one answer per event, every answer names its version, v1 then v2 per partition.
    sources = [source(m) for m in messages]
    assert len(sources) == len(set(sources)) == 1080, f"{len(sources)} answers ({len(set(sources))} distinct) for 1080 events"
    by_partition = {}
    for m in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        by_partition.setdefault(m.partition(), []).append(json.loads(m.value())["model"]["version"])
    for partition, versions in by_partition.items():
        switches = sum(1 for a, b in zip(versions, versions[1:]) if a != b)
        assert versions[0] == v1 and versions[-1] == v2 and switches == 1, f"partition {partition}: {switches} switches"
    # Both instances owned partitions (the group really was split) and swapped exactly once.
    for service in services:
        status, metrics = service.http("/metrics")
        assert status == 200
        assert 'streamrec_model_reloads_total{result="ok"} 1' in metrics, [l for l in metrics.splitlines() if "reload" in l]
        owned = [l for l in metrics.splitlines() if l.startswith("streamrec_assigned_partitions")]
        assert owned and float(owned[0].split()[-1]) > 0, owned
    # `models rollback` restores v1 on every instance within seconds.
    rolled = run_cli("models", "rollback", "--registry", str(registry), "--brokers", d.brokers, "--topic", updates)
    assert f"current: {v1}" in rolled, rolled
    for service in services:
        assert wait_for_swap(service, v1, timeout=30) < 30
    for service in services:
        service.terminate()
