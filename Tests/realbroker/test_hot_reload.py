"""Hot reload with the real binary and a real broker: `serve --registry` follows
`streamrec models promote|rollback --brokers` announcements on a compacted model-updates topic,
between micro-batches, with exactly one answer per event."""
import json
import time

from conftest import event, run_cli, source


def versions_by_source(messages):
    return {source(m): json.loads(m.value())["model"]["version"] for m in messages}


def wait_for_swap(service, version, timeout=60):
    """Seconds until the service logs that it swapped `version` in."""
    start = time.time()
    while time.time() - start < timeout:
        if any("model swapped" in line and f"version={version}" in line for line in service.log_text().splitlines()):
            return time.time() - start
        assert service.alive(), f"serve exited; log:\n{service.log_text()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"{version} never swapped in within {timeout} s; log:\n{service.log_text()[-3000:]}")


def test_promote_and_rollback_are_announced_and_followed(deployment):
    d = deployment
    registry = d.tmp / "registry"
    updates = f"model-updates-{d.id}"
    topology = d.tmp / "updates.yaml"
    topology.write_text(
        f"consumer_group: {d.group}\n"
        "topics:\n"
        f"  - {{name: {updates}, role: model-updates, partitions: 1, replication: 1, config: {{cleanup.policy: compact}}}}\n")
    run_cli("topics", "apply", "--brokers", d.brokers, "--topology", str(topology))

    # v1: the deployment's model; v2: trained on other walks, so another version.
    v1 = run_cli("models", "publish", "--registry", str(registry), "--snapshot", str(d.snapshot), "--data-window", "day 1").strip()
    run_cli("models", "promote", v1, "--registry", str(registry))
    seqs = d.tmp / "train-v2.txt"
    seqs.write_text("".join(f"t{u} " + " ".join(f"i{(u + 60 - 2 * k) % 60}" for k in range(15)) + "\n" for u in range(40)))
    run_cli("train", "--model", "transition", "--data", str(seqs), "--out", str(d.tmp / "v2.snap"), "--holdout", "none")
    v2 = run_cli("models", "publish", "--registry", str(registry), "--snapshot", str(d.tmp / "v2.snap"), "--data-window", "day 2").strip()
    assert v1 != v2
    listing = run_cli("models", "list", "--registry", str(registry))
    assert f"* {v1}" in listing and v2 in listing, listing

    # Announcements only: the pointer poll is too slow to pass this test on its own.
    service = d.serve("--registry", str(registry), snapshot=False,
                      env={"STREAMREC_KAFKA_MODEL_UPDATES_TOPIC": updates, "STREAMREC_MODEL_REGISTRY_POLL_MS": "600000"})
    now = int(time.time() * 1000)
    users = [f"u{n}" for n in range(15)]

    def stream(start, count):
        d.produce([(users[n % 15].encode(), event(users[n % 15], f"i{(n * 7) % 60}", now + n, type="click")) for n in range(start, start + count)])

    stream(0, 100)
    first = d.answers(d.input_offsets())
    assert set(versions_by_source(first).values()) == {v1}

    run_cli("models", "promote", v2, "--registry", str(registry), "--brokers", d.brokers, "--topic", updates)
    wait_for_swap(service, v2)
    before = d.input_offsets()
    stream(100, 100)
    after_promote = d.input_offsets() - before
    answers = versions_by_source(d.answers(d.input_offsets()))
    assert {answers[s] for s in after_promote} == {v2}

    rolled = run_cli("models", "rollback", "--registry", str(registry), "--brokers", d.brokers, "--topic", updates)
    assert f"current: {v1}" in rolled, rolled
    seconds = wait_for_swap(service, v1, timeout=30)
    assert seconds < 30
    before = d.input_offsets()
    stream(200, 100)
    after_rollback = d.input_offsets() - before
    messages = d.answers(d.input_offsets())
    answers = versions_by_source(messages)
    assert {answers[s] for s in after_rollback} == {v1}

    # Exactly one answer per event across both swaps.
    assert len(messages) == 300 and len(answers) == 300, f"{len(messages)} answers for 300 events"
    status, metrics = service.http("/metrics")
    assert status == 200
    assert 'streamrec_model_reloads_total{result="ok"} 2' in metrics, [l for l in metrics.splitlines() if "reload" in l]
    service.terminate()
