#!/usr/bin/env python3
"""Are two runs' outputs the same, row for row?

Compares every Parquet table of two output folders (same tables, same
schema, same rows in the same order; the contacts table day by day) and the counts of their manifests (rows
read, used and excluded, table row counts, caps, buckets, frequent
contacters, notes, null check), leaving out what differs from run to run:
start time, stage seconds, the output path and measured memory.

A table whose files are byte for byte equal is equal; otherwise DuckDB
compares its rows with their row numbers in the file.

usage: python3 benches/same_outputs.py OLD_OUT NEW_OUT [OLD_OUT NEW_OUT ...]
Exit code 0 when every pair is the same, 1 otherwise. Needs the duckdb
Python package.
"""

import filecmp
import json
import os
import sys

import duckdb

from layout import run_dir

# manifest keys that are measurements of a run, not its results
VOLATILE = {"started_at", "stage_seconds"}
VOLATILE_MEMORY = {"held_bytes_peak"}


def manifest_counts(path):
    m = json.load(open(os.path.join(path, "manifest.json")))
    for k in VOLATILE:
        m.pop(k, None)
    m.get("parameters", {}).pop("out", None)
    m.get("parameters", {}).pop("history", None)
    for k in VOLATILE_MEMORY:
        m.get("memory", {}).pop(k, None)
    for t in m.get("tables", {}).values():
        t.pop("seconds", None)
    return m


def same_table(con, a, b):
    if filecmp.cmp(a, b, shallow=False):
        return None
    sa = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{a}')").fetchall()
    sb = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{b}')").fetchall()
    if sa != sb:
        return f"schemas differ: {sa} vs {sb}"
    q = "SELECT * FROM read_parquet('{}', file_row_number = true)"
    for x, y in ((a, b), (b, a)):
        n = con.execute(
            f"SELECT count(*) FROM ({q.format(x)} EXCEPT ALL {q.format(y)})").fetchone()[0]
        if n:
            row = con.execute(f"{q.format(x)} EXCEPT ALL {q.format(y)} LIMIT 1").fetchone()
            return f"{n} rows of {x} not in {y}, e.g. {row}"
    return None


def contact_days(root):
    """The day files of an output folder's contacts table (recur's layout of
    many runs: ROOT/contacts/date=D/part-0.parquet), by day."""
    store = os.path.join(root, "contacts")
    if not os.path.isdir(store):
        return {}
    return {d: os.path.join(store, d, "part-0.parquet")
            for d in os.listdir(store) if d.startswith("date=")}


def compare(old, new):
    problems = []
    con = duckdb.connect()
    da, db = contact_days(old), contact_days(new)
    if sorted(da) != sorted(db):
        problems.append(f"contact days differ: {sorted(da)} vs {sorted(db)}")
    for d in sorted(set(da) & set(db)):
        p = same_table(con, da[d], db[d])
        if p:
            problems.append(f"contacts/{d}: {p}")
    old, new = run_dir(old), run_dir(new)
    ta = sorted(f for f in os.listdir(old) if f.endswith(".parquet"))
    tb = sorted(f for f in os.listdir(new) if f.endswith(".parquet"))
    if ta != tb:
        problems.append(f"tables differ: {ta} vs {tb}")
    for t in sorted(set(ta) & set(tb)):
        p = same_table(con, os.path.join(old, t), os.path.join(new, t))
        if p:
            problems.append(f"{t}: {p}")
    ma, mb = manifest_counts(old), manifest_counts(new)
    for k in sorted(set(ma) | set(mb)):
        if ma.get(k) != mb.get(k):
            problems.append(f"manifest {k}: {ma.get(k)} vs {mb.get(k)}")
    return ta, problems


def main():
    args = sys.argv[1:]
    if not args or len(args) % 2:
        sys.exit(__doc__)
    failed = False
    for old, new in zip(args[::2], args[1::2]):
        tables, problems = compare(old, new)
        if problems:
            failed = True
            print(f"DIFFERENT {old} vs {new}:")
            for p in problems:
                print(f"  {p}")
        else:
            print(f"same      {old} vs {new}: {len(tables)} tables, {len(contact_days(old))} "
                  "contact days and the manifest's counts")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
