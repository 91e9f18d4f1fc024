#!/usr/bin/env python3
"""A nightly run costs what its window holds, not what the history holds.

Generates (once) a daily log of DAYS days (`recur generate --daily`: one
folder per day, date=YYYY-MM-DD/), and a copy that holds only the last
LOOKBACK days of it (hard links), then times as whole processes, alternated
run by run:
  history  `recur run LOG --as-of LAST_DAY --lookback LOOKBACK`
  window   the same over the copy of the window's days only
and prints the medians, the peaks and history / window (the target: at
most 1.2). Both runs must write the same tables, row for row
(benches/same_outputs.py, tables only: the manifests list different files).
Both start from an empty output folder, so each writes the contacts of all
its window's days.

It also times the same history run as the second night of an output folder
("night"): the folder holds a run as of the day before (made once, untimed),
and the index of its contact days is put back before each timed run, so
that each writes the two days that can still change instead of the
window's 90.

usage: python3 benches/nightly.py [--customers 9600000] [--days 365]
                                  [--lookback 90] [--runs 3] [--work /tmp/recur-nightly]

Needs a release build, GNU time at /usr/bin/time and the duckdb Python
package. The recur binary: $RECUR, else $CARGO_TARGET_DIR/release/recur,
else target/release/recur.
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys

from compare import RECUR, timed
from layout import run_dir


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=9_600_000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--lookback", type=int, default=90, help="days")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default="/tmp/recur-nightly")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    log = os.path.join(args.work, f"log-{args.days}d")
    if not os.path.isdir(log):
        subprocess.run([RECUR, "generate", "--daily", "--out", log, "--customers",
                        str(args.customers), "--days", str(args.days), "--seed", "9"],
                       check=True)
    days = sorted(d for d in os.listdir(log) if d.startswith("date="))
    last = datetime.date.fromisoformat(days[-1].split("=")[1])
    first = last - datetime.timedelta(days=args.lookback - 1)
    window = os.path.join(args.work, f"window-{args.lookback}d")
    shutil.rmtree(window, ignore_errors=True)
    for d in days:
        if datetime.date.fromisoformat(d.split("=")[1]) >= first:
            os.makedirs(os.path.join(window, d))
            for f in os.listdir(os.path.join(log, d)):
                os.link(os.path.join(log, d, f), os.path.join(window, d, f))
    flags = ["--as-of", str(last), "--lookback", f"{args.lookback}d",
             "--exclude-customer", "UNKNOWN", "--exclude-customer", "0"]
    night_out = os.path.join(args.work, "out-night")
    shutil.rmtree(night_out, ignore_errors=True)
    before = last - datetime.timedelta(days=1)
    subprocess.run([RECUR, "run", log, "--out", night_out, "--as-of", str(before), "--lookback",
                    f"{args.lookback}d", "--exclude-customer", "UNKNOWN",
                    "--exclude-customer", "0"], check=True, capture_output=True)
    index = os.path.join(night_out, "contacts", "_written.json")
    night_index = open(index).read()
    cmds = {
        "history": [RECUR, "run", log, "--out", os.path.join(args.work, "out-history")] + flags,
        "window": [RECUR, "run", window, "--out", os.path.join(args.work, "out-window")] + flags,
        "night": [RECUR, "run", log, "--out", night_out] + flags,
    }
    times = {k: [] for k in cmds}
    peaks = {k: [] for k in cmds}
    for _ in range(args.runs):
        for name, cmd in cmds.items():
            if name == "night":
                with open(index, "w") as f:
                    f.write(night_index)
            wall, rss, _ = timed(cmd, fresh=name != "night")
            times[name].append(wall)
            peaks[name].append(rss)
    from same_outputs import compare
    a, b = (run_dir(os.path.join(args.work, f"out-{k}")) for k in ("history", "window"))
    _, problems = compare(a, b)
    problems = [p for p in problems if not p.startswith("manifest")]
    rows = {}
    for name in cmds:
        m = json.load(open(os.path.join(run_dir(os.path.join(args.work, f"out-{name}")),
                                        "manifest.json")))
        rows[name] = (len(m["inputs"]), len(m["skipped_inputs"]), m["rows"]["read"],
                      m["rows"]["used"], len(m.get("contact_days_written", [])),
                      m["stage_seconds"].get("write.contacts", 0.0))
    print(f"log: {len(days)} days in {log}; window: the last {args.lookback} days, "
          f"as of {last}")
    print("| run | files read | files skipped | rows read | contacts used | contact days "
          "written | write.contacts s | median s (runs) | peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in cmds:
        f, s, r, u, d, w = rows[name]
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"| {name} | {f} | {s} | {r:,} | {u:,} | {d} | {w:.2f} | "
              f"{statistics.median(times[name]):.2f} ({runs}) | "
              f"{statistics.median(peaks[name]):,.0f} |")
    ratio = statistics.median(times["history"]) / statistics.median(times["window"])
    print(f"history / window: {ratio:.3f} (target at most 1.2)")
    ratio = statistics.median(times["night"]) / statistics.median(times["history"])
    print(f"night / history (two contact days written instead of {args.lookback}): {ratio:.3f}")
    if problems:
        print("tables differ:\n  " + "\n  ".join(problems))
        sys.exit(1)
    print("same tables, row for row")


if __name__ == "__main__":
    main()
