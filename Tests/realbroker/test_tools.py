"""The command-line tools against a real broker: replay a dataset into the input topic."""
import json

from conftest import run_cli


def test_replay_loads_a_dataset_in_user_order(deployment, tmp_path):
    d = deployment
    data = tmp_path / "data"
    data.mkdir()
    sequences = {str(u): [str(100 + (u * 7 + k) % 50) for k in range(3 + u % 5)] for u in range(1, 41)}
    (data / "sequences.txt").write_text("".join(f"{u} {' '.join(items)}\n" for u, items in sequences.items()))
    (data / "items.tsv").write_text("item_id\ttitle\textra\n" + "".join(f"{i}\tItem {i}\tx\n" for i in range(100, 150)))
    total = sum(len(v) for v in sequences.values())
    out = run_cli("replay", "--data", str(data), "--brokers", d.brokers, "--topic", d.input)
    assert f"replayed {total} events" in out

    messages = d.read(d.input, lambda ms: len(ms) >= total, timeout=60)
    assert len(messages) == total
    seen, last_ts = {}, {}
    for m in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        body = json.loads(m.value())
        assert m.key().decode() == body["user"], "key = user id, as the event contract requires"
        assert body["ts"] > last_ts.get(body["user"], 0), "timestamps increase per user"
        last_ts[body["user"]] = body["ts"]
        seen.setdefault(body["user"], []).append(body["item"])
    assert seen == sequences, "each user's items arrive in dataset order"

    # --limit stops early.
    out = run_cli("replay", "--data", str(data), "--brokers", d.brokers, "--topic", d.dlq, "--limit", "25")
    assert "replayed 25 events" in out
