#!/usr/bin/env python3
"""Compares two runs' output folders: the same Parquet files, each with the
same schema and the same rows in the same order (floats to 12 significant
digits, NaN equal to NaN). Prints a line per file; exit 1 on a difference.

    python3 benches/compare_runs.py OUT_A OUT_B
"""

import glob
import math
import os
import sys

import pyarrow.parquet as pq

a, b = sys.argv[1], sys.argv[2]


def files(d):
    return sorted(os.path.relpath(p, d) for p in glob.glob(d + '/**/*.parquet', recursive=True))
fa, fb = files(a), files(b)
bad = 0
if fa != fb:
    print("file lists differ", set(fa) ^ set(fb)); bad += 1


def norm(v):
    if isinstance(v, float):
        if math.isnan(v): return 'nan'
        return float('%.12g' % v)
    if isinstance(v, list): return [norm(x) for x in v]
    if isinstance(v, dict): return {k: norm(x) for k, x in v.items()}
    return v


for f in sorted(set(fa) & set(fb)):
    ta, tb = pq.read_table(os.path.join(a, f)), pq.read_table(os.path.join(b, f))
    if ta.schema != tb.schema:
        print(f, "schema differs"); bad += 1; continue
    ra, rb = ta.to_pylist(), tb.to_pylist()
    if len(ra) != len(rb):
        print(f, "rows", len(ra), len(rb)); bad += 1; continue
    diff = [i for i, (x, y) in enumerate(zip(ra, rb)) if norm(x) != norm(y)]
    if diff:
        i = diff[0]
        print(f, len(diff), "rows differ; first", i, {k: (ra[i][k], rb[i][k]) for k in ra[i] if norm(ra[i][k]) != norm(rb[i][k])})
        bad += 1
    else:
        print(f, "equal", len(ra))
sys.exit(1 if bad else 0)
