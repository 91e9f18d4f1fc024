#!/usr/bin/env python3
"""How many clusters and sequences recur reports on null logs and on real ones.

A null log is a log whose reason column has been permuted at random across
rows: every customer keeps its times, no reason can predict another, so
whatever is reported is false. For each case this prints the clusters and
sequences reported at the default settings, and for generated logs with a
truth file the precision of the clusters (`recur evaluate`).

Cases (--cases, comma separated; default all):
  servicenow   tests/data/servicenow_incidents.parquet as is, and with its
               category permuted (seeds 1..5)
  generated    `recur generate` logs of about 1.2M contacts: default, and
               with heavy-tailed customers (--rate-spread 1 --bursts 0.3);
               each as is and permuted
  large        a 5.6M-contact log (--customers 1500000), placeholders
               excluded: reported clusters and precision

Logs are generated with $RECUR_GENERATE (default: the binary under test), so
that two builds can be compared on the same files:

  RECUR=/tmp/recur-before RECUR_GENERATE=target/release/recur \\
      python3 benches/calibration.py --work /tmp/recur-calibration

Needs the duckdb Python package (pip install duckdb) to permute columns.
"""

import argparse
import json
import os
import subprocess
import sys

from layout import run_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECUR = os.environ.get("RECUR") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release", "recur")
GENERATE = os.environ.get("RECUR_GENERATE") or RECUR
SERVICENOW = os.path.join(ROOT, "tests", "data", "servicenow_incidents.parquet")
SERVICENOW_FLAGS = ["--customer-col", "caller_id", "--time-col", "opened_at",
                    "--channel-col", "contact_type", "--reason-col", "category",
                    "--contact-id-col", "number"]
PLACEHOLDERS = ["--exclude-customer", "UNKNOWN", "--exclude-customer", "0"]


def permuted(src, column, seed, dst):
    """`src` with `column` permuted across rows (seeded), written to `dst`."""
    import duckdb
    if os.path.exists(dst):
        return dst
    con = duckdb.connect()
    con.execute(f"SELECT setseed({(seed % 1000) / 1000.0})")
    con.execute(f"""
        COPY (
          WITH rows AS (SELECT *, row_number() OVER () AS _pos FROM read_parquet('{src}')),
               keyed AS (SELECT {column} AS _v, random() AS _r FROM rows),
               dealt AS (SELECT _v, row_number() OVER (ORDER BY _r) AS _pos FROM keyed)
          SELECT rows.* EXCLUDE ({column}, _pos), dealt._v AS {column}
          FROM rows JOIN dealt USING (_pos)
        ) TO '{dst}' (FORMAT parquet)""")
    return dst


def run(log, out, flags):
    """Runs recur; returns (clusters, sequences, top cluster lines)."""
    p = subprocess.run([RECUR, "run", log, "--out", out] + flags,
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"recur failed on {log}: {p.stderr}")
    manifest = json.load(open(os.path.join(run_dir(out), "manifest.json")))
    tables = manifest["tables"]
    return tables["clusters"]["rows"], tables["sequences"]["rows"], p.stdout


def generate(path, flags):
    if not os.path.exists(path):
        subprocess.run([GENERATE, "generate", "--out", path] + flags, check=True,
                       capture_output=True)
    return path


def evaluate(log, out):
    p = subprocess.run([RECUR, "evaluate", "--truth", log + ".truth.json", out],
                       capture_output=True, text=True)
    if p.returncode != 0:
        return "(evaluate failed)"
    e = json.load(open(os.path.join(run_dir(out), "evaluation.json")))
    at = {k["k"]: k for k in e["clusters"]}
    extra = e.get("precision")
    text = f"precision@20 {at[20]['precision']:.2f}, recall@10 {at[10]['recall']:.2f}"
    if extra is not None:
        text += f", precision {extra:.2f}, not planted {len(e['not_planted'])}"
    return text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/recur-calibration")
    ap.add_argument("--cases", default="servicenow,generated,large")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    w = lambda name: os.path.join(args.work, name)
    cases = args.cases.split(",")
    print(f"recur: {RECUR}")
    if "servicenow" in cases:
        c, s, _ = run(SERVICENOW, w("out-sn"), SERVICENOW_FLAGS)
        print(f"servicenow as is: {c} clusters, {s} sequences")
        for seed in range(1, 6):
            log = permuted(SERVICENOW, "category", seed, w(f"sn-perm{seed}.parquet"))
            c, s, _ = run(log, w(f"out-sn{seed}"), SERVICENOW_FLAGS)
            print(f"servicenow permuted seed {seed}: {c} clusters, {s} sequences")
    if "generated" in cases:
        for name, flags in [("default", []),
                            ("heavy-tailed", ["--rate-spread", "1", "--bursts", "0.3"])]:
            log = generate(w(f"gen-{name}.parquet"),
                           ["--customers", "320000", "--seed", "7"] + flags)
            c, s, _ = run(log, w(f"out-gen-{name}"), PLACEHOLDERS)
            print(f"generated {name} as is: {c} clusters, {s} sequences; "
                  f"{evaluate(log, w(f'out-gen-{name}'))}")
            for seed in (1, 2):
                perm = permuted(log, "reason", seed, w(f"gen-{name}-perm{seed}.parquet"))
                c, s, _ = run(perm, w(f"out-gen-{name}{seed}"), PLACEHOLDERS)
                print(f"generated {name} permuted seed {seed}: {c} clusters, {s} sequences")
    if "large" in cases:
        log = generate(w("gen-large.parquet"), ["--customers", "1500000", "--seed", "8"])
        c, s, _ = run(log, w("out-large"), PLACEHOLDERS)
        print(f"generated 5.6M as is: {c} clusters, {s} sequences; "
              f"{evaluate(log, w('out-large'))}")


if __name__ == "__main__":
    main()
