#!/usr/bin/env python3
"""recur against DuckDB (the peer) on generated logs of several sizes.

For each size: generate a log with `recur generate`, then time as whole
processes, several runs each (median reported):
  scan    DuckDB reading the columns recur needs (the scan floor)
  recur   `recur run --cluster-window 7d` (repeats, clusters, sequences,
          outreach; every output written)
  duckdb  benches/peer.sql: repeat flags and rate, A->B counts with baseline
          and lift for the 7-day window
and check that both agree exactly: the number of repeats, and n_antecedent
and n_support of every cluster recur reports (recur's baseline is each
trigger's own chance, which the peer does not compute).

With --skew SIZE, also time recur on the SIZE log plus one customer id with a
million contacts over the same 90 days (a placeholder nobody excluded, in a
second file), against the log alone.

With --heavy, also time recur on a log of 100 customers with 10,000 contacts
each (`recur generate --heavy-customers 100 --heavy-contacts 10000`) against
an ordinary log of about the same size, per contact.

Needs: a release build (cargo build --release), GNU time at /usr/bin/time,
and the duckdb Python package (pip install duckdb).

With --baseline BINARY, also time another recur binary (an earlier build)
on each log, interleaved with this one run by run, and check that both write
the same outputs row for row (benches/same_outputs.py); --recur-only then
leaves out the scan and DuckDB.

usage: python3 benches/compare.py [--sizes 1M,10M] [--runs 3] [--work /tmp/recur-bench]
                                  [--skew 10M] [--heavy] [--baseline BINARY [--recur-only]]

The recur binary: $RECUR, else $CARGO_TARGET_DIR/release/recur, else
target/release/recur.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

from layout import run_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECUR = os.environ.get("RECUR") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release", "recur")
ROWS_PER_CUSTOMER = 3.72  # what `recur generate` yields with --days 90


def parse_size(s):
    s = s.strip().upper()
    mult = {"K": 1e3, "M": 1e6}.get(s[-1], 1)
    return int(float(s.rstrip("KM")) * mult)


def timed(cmd, fresh=True):
    """Runs cmd under GNU time; returns (seconds, peak RSS in MiB, stdout).
    With fresh, a recur run's output folder is removed first (untimed), so
    that every run writes its whole contacts table: into a folder of earlier
    runs recur writes only the contact days that can still change."""
    if fresh and "--out" in cmd and "run" in cmd:
        shutil.rmtree(cmd[cmd.index("--out") + 1], ignore_errors=True)
    t = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return wall, rss / 1024, p.stdout


def peer(sql_file, parquet, query):
    """Child-process mode: run the peer SQL (or the scan) in DuckDB."""
    import duckdb

    con = duckdb.connect()
    if query == "scan":
        con.execute(
            f"SELECT COUNT(contact_id), COUNT(customer_id), COUNT(ts), COUNT(channel), "
            f"COUNT(reason) FROM read_parquet('{parquet}')"
        ).fetchall()
        return
    sql = open(sql_file).read().replace("{input}", parquet)
    con.execute(sql)
    summary = con.execute("SELECT * FROM result_summary").fetchall()[0]
    pairs = con.execute("SELECT * FROM result_pairs").fetchall()
    print(json.dumps({"contacts": summary[0], "repeats": summary[1], "pairs": pairs}))


def check(out_dir, peer_result):
    import duckdb

    con = duckdb.connect()
    c = os.path.join(out_dir, "contacts", "*", "*.parquet")
    out_dir = run_dir(out_dir)
    contacts, repeats = con.execute(
        f"SELECT COUNT(*), SUM(is_repeat::INT) FROM read_parquet('{c}')"
    ).fetchall()[0]
    assert (contacts, repeats) == (peer_result["contacts"], peer_result["repeats"]), (
        contacts, repeats, peer_result["contacts"], peer_result["repeats"])
    pairs = {(a, b): (na, ns) for a, b, na, ns, _, _ in peer_result["pairs"]}
    k = os.path.join(out_dir, "clusters.parquet")
    rows = con.execute(
        f"SELECT antecedent, consequent, n_antecedent, n_support FROM '{k}'"
    ).fetchall()
    for a, b, na, ns in rows:
        assert (na, ns) == pairs[(a, b)], (a, b)
    return len(rows)


def make_heavy(log, path, n):
    """Writes n contacts of one customer id, spread over the log's time range,
    cycling through its reasons, with the log's column types."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"CREATE TABLE h AS SELECT * FROM read_parquet('{log}') LIMIT 0")
    lo, hi = con.execute(
        f"SELECT MIN(epoch_us(ts)), MAX(epoch_us(ts)) FROM read_parquet('{log}')").fetchone()
    reasons = [r for (r,) in con.execute(
        f"SELECT DISTINCT reason FROM read_parquet('{log}') WHERE reason IS NOT NULL "
        f"ORDER BY 1").fetchall()]
    con.execute(f"""
        INSERT INTO h (contact_id, customer_id, ts, channel, reason)
        SELECT 9000000000 + i, 'PLACEHOLDER', make_timestamp({lo} + i * {(hi - lo) // n}),
               'phone', list_extract({reasons!r}, 1 + (i % {len(reasons)})::INT)
        FROM range({n}) t(i)""")
    con.execute(f"COPY h TO '{path}' (FORMAT parquet)")


def skew(args, size):
    n = parse_size(size)
    log = os.path.join(args.work, f"log-{size}.parquet")
    heavy = os.path.join(args.work, "heavy-1M.parquet")
    if not os.path.exists(heavy):
        make_heavy(log, heavy, 1_000_000)
    common = ["--cluster-window", "7d", "--exclude-customer", "UNKNOWN",
              "--exclude-customer", "0"]
    cmds = {
        "plain": [RECUR, "run", log, "--out", os.path.join(args.work, "out-plain")] + common,
        "skewed": [RECUR, "run", log, heavy, "--out",
                   os.path.join(args.work, "out-skewed")] + common,
    }
    res = {k: [] for k in cmds}
    for _ in range(args.runs):
        for name, cmd in cmds.items():
            wall, rss, _ = timed(cmd)
            res[name].append((wall, rss))
    caps = json.load(open(os.path.join(run_dir(os.path.join(args.work, "out-skewed")),
                                       "manifest.json")))["caps"]
    print()
    print(f"| run | contacts | recur s | recur peak MiB | µs per contact |")
    print("|---|---|---|---|---|")
    for name, rows in (("plain", n), ("skewed", n + 1_000_000)):
        med = statistics.median(w for w, _ in res[name])
        rss = max(r for _, r in res[name])
        print(f"| {size}{' + 1M of one id' if name == 'skewed' else ''} | ~{rows:,} | "
              f"{med:.2f} | {rss:,.0f} | {med / rows * 1e6:.2f} |")
    print(f"caps of the skewed run: {caps}")


def heavy(args):
    """100 customers of 10,000 contacts each against an ordinary 1M log."""
    logs = {
        "ordinary": (os.path.join(args.work, "ordinary-1M.parquet"),
                     ["--customers", str(int(1_000_000 / ROWS_PER_CUSTOMER))]),
        "100 x 10,000": (os.path.join(args.work, "heavy-100x10k.parquet"),
                         ["--customers", "1", "--heavy-customers", "100",
                          "--heavy-contacts", "10000"]),
    }
    res = {}
    for name, (log, flags) in logs.items():
        if not os.path.exists(log):
            subprocess.run([RECUR, "generate", "--out", log, "--seed", "3"] + flags,
                           check=True, capture_output=True)
        out = os.path.join(args.work, "out-heavy")
        cmd = [RECUR, "run", log, "--out", out, "--exclude-customer", "UNKNOWN",
               "--exclude-customer", "0"]
        walls = [timed(cmd)[0] for _ in range(args.runs)]
        rows = json.load(open(os.path.join(run_dir(out), "manifest.json")))["rows"]["used"]
        res[name] = (rows, statistics.median(walls))
    print()
    print("| log | contacts | recur s | s per million contacts | per contact vs ordinary |")
    print("|---|---|---|---|---|")
    base = res["ordinary"][1] / res["ordinary"][0]
    for name, (rows, wall) in res.items():
        print(f"| {name} | {rows:,} | {wall:.2f} | {wall / rows * 1e6:.2f} | "
              f"{wall / rows / base:.2f}x |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1M,10M")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default="/tmp/recur-bench")
    ap.add_argument("--skew", metavar="SIZE", help="also time a SIZE log plus 1M contacts of one id")
    ap.add_argument("--heavy", action="store_true",
                    help="also time 100 customers of 10,000 contacts against an ordinary log")
    ap.add_argument("--baseline", metavar="BINARY",
                    help="also time this recur binary, interleaved, and compare outputs")
    ap.add_argument("--recur-only", action="store_true",
                    help="with --baseline: time only the two recur binaries")
    ap.add_argument("--peer", nargs=3, metavar=("SQL", "PARQUET", "QUERY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:
        peer(*args.peer)
        return
    os.makedirs(args.work, exist_ok=True)
    sql_file = os.path.join(ROOT, "benches", "peer.sql")
    me = os.path.abspath(__file__)
    table = []
    for size in args.sizes.split(","):
        n = parse_size(size)
        log = os.path.join(args.work, f"log-{size}.parquet")
        if not os.path.exists(log):
            subprocess.run([RECUR, "generate", "--out", log, "--customers",
                            str(int(n / ROWS_PER_CUSTOMER)), "--days", "90", "--seed", "1"],
                           check=True, capture_output=True)
        out = os.path.join(args.work, f"out-{size}")
        flags = ["--cluster-window", "7d", "--exclude-customer", "UNKNOWN",
                 "--exclude-customer", "0"]
        cmds = {
            "scan": [sys.executable, me, "--peer", sql_file, log, "scan"],
            "recur": [RECUR, "run", log, "--out", out] + flags,
            "duckdb": [sys.executable, me, "--peer", sql_file, log, "pairs"],
        }
        base_out = os.path.join(args.work, f"out-{size}-baseline")
        if args.baseline:
            cmds["baseline"] = [args.baseline, "run", log, "--out", base_out] + flags
            if args.recur_only:
                del cmds["scan"], cmds["duckdb"]
        res = {k: [] for k in cmds}
        peer_out = None
        for _ in range(args.runs):
            for name, cmd in cmds.items():
                wall, rss, stdout = timed(cmd)
                res[name].append((wall, rss))
                if name == "duckdb":
                    peer_out = json.loads(stdout)
        if args.baseline:
            sys.path.insert(0, os.path.dirname(me))
            from same_outputs import compare
            _, problems = compare(base_out, out)
            assert not problems, problems
            print(f"{size}: the baseline's outputs are the same, row for row", flush=True)
            b = [w for w, _ in res["baseline"]]
            r = [w for w, _ in res["recur"]]
            print(f"{size}: recur {statistics.median(r):.2f} s (runs {', '.join(f'{x:.2f}' for x in r)}), "
                  f"peak {max(m for _, m in res['recur']):,.0f} MiB; baseline "
                  f"{statistics.median(b):.2f} s (runs {', '.join(f'{x:.2f}' for x in b)}), "
                  f"peak {max(m for _, m in res['baseline']):,.0f} MiB; "
                  f"ratio {statistics.median(r) / statistics.median(b):.3f}", flush=True)
        if peer_out is None:
            continue
        clusters = check(out, peer_out)
        rows = peer_out["contacts"]
        med = {k: statistics.median(w for w, _ in v) for k, v in res.items()}
        rss = {k: max(r for _, r in v) for k, v in res.items()}
        table.append((size, rows, med, rss, clusters))
        print(f"{size}: agree on {rows} contacts, {peer_out['repeats']} repeats, "
              f"{clusters} reported clusters", flush=True)
    if table:
        print()
        print("| log | contacts | scan floor s | recur s | recur rows/s | recur peak MiB "
              "| DuckDB s | DuckDB peak MiB | recur / DuckDB | recur / scan |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for size, rows, med, rss, _ in table:
            print(f"| {size} | {rows:,} | {med['scan']:.2f} | {med['recur']:.2f} | "
                  f"{rows / med['recur']:,.0f} | {rss['recur']:,.0f} | {med['duckdb']:.2f} | "
                  f"{rss['duckdb']:,.0f} | {med['recur'] / med['duckdb']:.2f} | "
                  f"{med['recur'] / med['scan']:.1f} |")
    if args.skew:
        skew(args, args.skew)
    if args.heavy:
        heavy(args)


if __name__ == "__main__":
    main()
