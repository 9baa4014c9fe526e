"""Sums Nsight Compute's per-kernel durations by kernel name.

Input: `ncu --metrics gpu__time_duration.sum --csv --log-file F ...` (one row per kernel launch
and metric). Prints the kernels that take the most time in all, with their launch counts, and
the total per training step (`--steps`: how many updates the profiled run made)."""

import argparse
import csv
import io
from collections import defaultdict

UNIT = {"nsecond": 1e-9, "ns": 1e-9, "usecond": 1e-6, "us": 1e-6, "msecond": 1e-3, "ms": 1e-3, "second": 1.0, "s": 1.0}


def rows(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    # ncu writes its own "==PROF==" lines before the CSV header.
    start = text.find('"ID"')
    if start < 0:
        raise SystemExit(f"{path}: no CSV header (did ncu run?)")
    return csv.DictReader(io.StringIO(text[start:]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    total = defaultdict(float)
    count = defaultdict(int)
    for r in rows(args.csv):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        name = r["Kernel Name"].split("(")[0]
        value = float(r["Metric Value"].replace(",", ""))
        total[name] += value * UNIT.get(r.get("Metric Unit", "nsecond"), 1e-9)
        count[name] += 1
    if not total:
        raise SystemExit("no kernel durations found")
    all_s = sum(total.values())
    launches = sum(count.values())
    print(f"{launches} kernel launches, {all_s:.4f} s of kernel time in all, "
          f"{all_s / args.steps:.4f} s and {launches / args.steps:.0f} launches per update (start-up included)")
    for name, s in sorted(total.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{s:9.4f} s {100 * s / all_s:5.1f}% {count[name]:7d}x  {name}")


if __name__ == "__main__":
    main()
