#!/usr/bin/env python3
"""Mean ± std over seeds of the test metrics that `streamrec evaluate --json` wrote, one table per
protocol. Files are OUT/DATA-NAME-sSEED.eval.json (ops/seeds.sh, ops/diffurec-seeds.sh).
Usage: seeds-table.py OUT DATA [NAME ...]   (names: the order of the rows; default all, sorted)."""
import glob, json, os, re, statistics, sys

out, data, order = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = {}
for path in sorted(glob.glob(f"{out}/{data}-*-s*.eval.json")):
    m = re.fullmatch(rf"{re.escape(data)}-(.+)-s(\d+)\.eval\.json", os.path.basename(path))
    if not m:
        continue  # another evaluation's file (e.g. SNAP.eval.json from a by-hand evaluate)
    rows.setdefault(m.group(1), []).append((int(m.group(2)), json.load(open(path))))
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
