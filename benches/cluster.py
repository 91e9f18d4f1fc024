#!/usr/bin/env python3
"""Runs on a loopback Ballista cluster, against one machine.

Starts `recur scheduler` and N `recur executor`s (one task at a time each)
on this machine. For each log given: `recur run --cluster` and `recur run`
on this machine, --runs times each, alternating, with the median
whole-process seconds of each and their ratio (the tables of the last two
runs are compared: they must be the same); then, unless --no-check, `recur
cluster-check`, per pass the seconds on the cluster and here; and for
everything on the cluster the peak bytes of shuffle files in the executors'
work folders (sampled every 50 ms) and each executor's peak resident
memory. The processes are stopped at the end.

    python3 benches/cluster.py --logs /tmp/log-1M.parquet,/tmp/log-10M.parquet --runs 3

The binary is `$RECUR`, else `$CARGO_TARGET_DIR/release/recur`, else
`target/release/recur` (built with `--features ballista`).
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def binary():
    if os.environ.get("RECUR"):
        return os.environ["RECUR"]
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    return os.path.join(target, "release", "recur")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_bytes(root):
    total = 0
    for folder, _, files in os.walk(root):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(folder, f))
            except OSError:
                pass  # removed while walked
    return total


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def start(recur, n, work):
    port = free_port()
    scheduler = subprocess.Popen(
        [recur, "scheduler", "--bind-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    executors = []
    for i in range(n):
        folder = os.path.join(work, f"executor-{i}")
        os.makedirs(folder)
        executors.append(
            subprocess.Popen(
                [recur, "executor", "--scheduler-port", str(port),
                 "--bind-port", str(free_port()), "--bind-grpc-port", str(free_port()),
                 "--work-dir", folder, "--concurrent-tasks", "1"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    want = f"{n} executor{'s' if n > 1 else ''} alive"
    deadline = time.time() + 60
    for line in scheduler.stderr:
        if want in line:
            break
        if time.time() > deadline:
            sys.exit(f"the scheduler never said '{want}'")
    # keep reading so that the scheduler never blocks on a full pipe
    threading.Thread(target=lambda: [None for _ in scheduler.stderr], daemon=True).start()
    return port, scheduler, executors


class ShufflePeak:
    """Samples the bytes under the executors' work folders while running."""

    def __init__(self, work):
        self.work, self.peak, self.done = work, 0, threading.Event()
        self.thread = threading.Thread(target=self.sample)
        self.thread.start()

    def sample(self):
        while not self.done.is_set():
            self.peak = max(self.peak, tree_bytes(self.work))
            time.sleep(0.05)

    def stop(self):
        self.done.set()
        self.thread.join()
        return self.peak


def timed(cmd, what):
    started = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - started
    if out.returncode != 0:
        sys.exit(f"{what} failed:\n{out.stdout}{out.stderr}")
    return out.stdout, wall


def check(recur, port, log, partitions):
    return timed(
        [recur, "cluster-check", "--cluster", f"df://localhost:{port}",
         "--partitions", str(partitions), log],
        f"cluster-check of {log}",
    )


def runs(recur, port, log, partitions, n, scratch):
    """Median seconds of `recur run` on the cluster and here, n each."""
    cluster, local = [], []
    for i in range(n):
        for where, times in (("cluster", cluster), ("local", local)):
            out = os.path.join(scratch, f"{where}-{i}")
            cmd = [recur, "run", log, "--out", out, "--no-report"]
            if where == "cluster":
                cmd += ["--cluster", f"df://localhost:{port}",
                        "--cluster-partitions", str(partitions)]
            times.append(timed(cmd, f"recur run ({where}) of {log}")[1])
    last = n - 1
    same = subprocess.run(
        [sys.executable, os.path.join(os.path.dirname(__file__), "compare_runs.py"),
         os.path.join(scratch, f"local-{last}"), os.path.join(scratch, f"cluster-{last}")],
        capture_output=True, text=True,
    )
    if same.returncode != 0:
        sys.exit(f"the runs' tables differ:\n{same.stdout}{same.stderr}")
    return statistics.median(cluster), statistics.median(local), cluster, local


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--logs", required=True, help="comma-separated Parquet logs")
    p.add_argument("--executors", type=int, default=2)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--runs", type=int, default=3, help="runs of each, 0: none")
    p.add_argument("--no-check", action="store_true", help="no cluster-check")
    args = p.parse_args()
    recur = binary()
    with tempfile.TemporaryDirectory() as work, tempfile.TemporaryDirectory() as scratch:
        port, scheduler, executors = start(recur, args.executors, work)
        try:
            for log in args.logs.split(","):
                print(f"## {log}: {args.executors} executors x 1 task, "
                      f"{args.partitions} partitions")
                peak = ShufflePeak(work)
                if args.runs > 0:
                    c, l, cs, ls = runs(recur, port, log, args.partitions, args.runs, scratch)
                    print(f"recur run --cluster: median {c:.2f} s "
                          f"({', '.join(f'{t:.2f}' for t in cs)}); on this machine: "
                          f"median {l:.2f} s ({', '.join(f'{t:.2f}' for t in ls)}); "
                          f"ratio {c / l:.2f}; the tables are the same")
                if not args.no_check:
                    text, wall = check(recur, port, log, args.partitions)
                    print(f"cluster-check: {wall:.1f} s wall")
                    print(text, end="")
                shuffle = peak.stop()
                print(f"peak shuffle files: {shuffle / 2**20:.0f} MiB; executors' peak RSS: "
                      + ", ".join(f"{peak_rss_kib(e.pid) / 2**20:.2f} GiB" for e in executors))
                print()
        finally:
            for proc in executors + [scheduler]:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
