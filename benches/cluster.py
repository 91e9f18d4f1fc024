#!/usr/bin/env python3
"""The per-customer passes on a loopback Ballista cluster, against one machine.

Starts `recur scheduler` and N `recur executor`s (one task at a time each)
on this machine, runs `recur cluster-check` on each log given, and prints
per pass the seconds on the cluster and here, and for the whole check the
peak bytes of shuffle files in the executors' work folders (sampled every
50 ms) and each executor's peak resident memory. The processes are stopped
at the end.

    python3 benches/cluster.py --logs /tmp/log-1M.parquet,/tmp/log-10M.parquet

The binary is `$RECUR`, else `$CARGO_TARGET_DIR/release/recur`, else
`target/release/recur` (built with `--features ballista`).
"""

import argparse
import os
import socket
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


def check(recur, port, log, work, partitions):
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], tree_bytes(work))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.time()
    out = subprocess.run(
        [recur, "cluster-check", "--cluster", f"df://localhost:{port}",
         "--partitions", str(partitions), log],
        capture_output=True, text=True,
    )
    wall = time.time() - started
    done.set()
    sampler.join()
    if out.returncode != 0:
        sys.exit(f"cluster-check failed on {log}:\n{out.stdout}{out.stderr}")
    return out.stdout, wall, peak[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--logs", required=True, help="comma-separated Parquet logs")
    p.add_argument("--executors", type=int, default=2)
    p.add_argument("--partitions", type=int, default=4)
    args = p.parse_args()
    recur = binary()
    with tempfile.TemporaryDirectory() as work:
        port, scheduler, executors = start(recur, args.executors, work)
        try:
            for log in args.logs.split(","):
                text, wall, shuffle = check(recur, port, log, work, args.partitions)
                print(f"## {log}: {args.executors} executors x 1 task, "
                      f"{args.partitions} partitions; check {wall:.1f} s wall")
                print(text, end="")
                print(f"peak shuffle files: {shuffle / 2**20:.0f} MiB; executors' peak RSS: "
                      + ", ".join(f"{peak_rss_kib(e.pid) / 2**20:.2f} GiB" for e in executors))
                print()
        finally:
            for proc in executors + [scheduler]:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
