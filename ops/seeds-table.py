#!/usr/bin/env python3
"""Mean ± std over seeds of the test metrics that `streamrec evaluate --json` wrote, one table per
protocol. Files are OUT/DATA-NAME-sSEED.eval.json (ops/seeds.sh, ops/diffurec-seeds.sh).
Usage: seeds-table.py OUT DATA [NAME ...] [--vs BASE:OTHER ...]
  names: the order of the rows (default all, sorted);
  --vs BASE:OTHER: OTHER against BASE on the seeds both have (history excluded): the mean of the
  per-seed differences, its sample std, and whether the gain exceeds both models' seed std."""
import glob, json, os, re, statistics, sys

args = sys.argv[3:]
pairs = [args[i + 1].split(":") for i, a in enumerate(args) if a == "--vs"]
order = [a for i, a in enumerate(args) if a != "--vs" and (i == 0 or args[i - 1] != "--vs")]
out, data = sys.argv[1], sys.argv[2]
rows = {}
for path in sorted(glob.glob(f"{out}/{data}-*-s*.eval.json")):
    m = re.fullmatch(rf"{re.escape(data)}-(.+)-s(\d+)\.eval\.json", os.path.basename(path))
    if not m:
        continue  # another evaluation's file (e.g. SNAP.eval.json from a by-hand evaluate)
    r = json.load(open(path))
    if "historyExcluded" not in r:
        continue  # not an evaluation report (e.g. a stage marked as skipped)
    rows.setdefault(m.group(1), []).append((int(m.group(2)), r))
names = [n for n in order if n in rows] or sorted(rows)
cols = [("hitRate", 5), ("hitRate", 10), ("hitRate", 20), ("ndcg", 5), ("ndcg", 10), ("ndcg", 20)]
for proto, title in (("historyExcluded", "history excluded"), ("all", "all items")):
    print(f"\n{data}, {title}: mean ± std over seeds (sample std)")
    print("| model | seeds | " + " | ".join(f"{'HR' if n == 'hitRate' else 'NDCG'}@{k}" for n, k in cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for name in names:
        runs = rows[name]
        cells = []
        for n, k in cols:
            v = [next(c for c in r[proto]["cutoffs"] if c["k"] == k)[n] for _, r in runs]
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(f"{statistics.mean(v):.4f} ± {sd:.4f}")
        print(f"| {name} | {','.join(str(s) for s, _ in runs)} | " + " | ".join(cells) + " |")

def metric(r, n, k, proto="historyExcluded"):
    return next(c for c in r[proto]["cutoffs"] if c["k"] == k)[n]

for base, other in pairs:
    if base not in rows or other not in rows:
        continue
    a, b = dict(rows[base]), dict(rows[other])
    seeds = sorted(set(a) & set(b))
    print(f"\n{data}: {other} against {base}, seeds {','.join(map(str, seeds))} (history excluded)")
    print("| metric | " + base + " | " + other + " | gain (mean ± std of per-seed differences) | relative | gain > both seed stds |")
    print("|---|---|---|---|---|---|")
    for k in (10, 20):
        va = [metric(a[s], "ndcg", k) for s in seeds]
        vb = [metric(b[s], "ndcg", k) for s in seeds]
        d = [y - x for x, y in zip(va, vb)]
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
        gain = statistics.mean(d)
        beats = gain > max(sd(va), sd(vb)) and all(x > 0 for x in d)
        print(f"| NDCG@{k} | {statistics.mean(va):.4f} ± {sd(va):.4f} | {statistics.mean(vb):.4f} ± {sd(vb):.4f} | "
              f"{gain:+.4f} ± {sd(d):.4f} | {100 * gain / statistics.mean(va):+.1f}% | {'yes' if beats else 'no'} |")
