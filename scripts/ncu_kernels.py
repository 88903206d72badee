#!/usr/bin/env python3
"""Per-kernel time table from `ncu --csv --metrics gpu__time_duration.sum` output (a file).

Groups launches by kernel name (template arguments kept, parameters dropped) and grid size,
prints count, mean and total microseconds, largest total first. With --per N, the totals are
also divided by N (e.g. the number of decoded tokens) to give microseconds per token.
"""
import argparse
import csv
import collections
import re
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv_file")
    ap.add_argument("--per", type=float, default=0)
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    with open(a.csv_file, newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    rows = csv.DictReader(lines)
    groups = collections.defaultdict(list)
    for r in rows:
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        name = re.sub(r"\(.*$", "", r["Kernel Name"]).replace("lockstep::cuda_ops::", "")
        name = re.sub(r"\(anonymous namespace\)::", "", name)
        scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}.get(r["Metric Unit"], 1e-3)
        groups[(name[:90], r["Grid Size"])].append(float(r["Metric Value"].replace(",", "")) * scale)
    total = sum(sum(v) for v in groups.values())
    print(f"{'kernel':90} {'grid':>16} {'count':>6} {'mean us':>9} {'total us':>10}" +
          (f" {'us/token':>9}" if a.per else ""))
    for (name, grid), v in sorted(groups.items(), key=lambda kv: -sum(kv[1]))[:a.top]:
        line = f"{name:90} {grid:>16} {len(v):6d} {sum(v)/len(v):9.2f} {sum(v):10.1f}"
        if a.per:
            line += f" {sum(v)/a.per:9.2f}"
        print(line)
    print(f"all kernels: {sum(len(v) for v in groups.values())} launches, {total:.1f} us" +
          (f", {total/a.per:.1f} us per token" if a.per else ""))


if __name__ == "__main__":
    sys.exit(main())
