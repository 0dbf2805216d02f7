#!/usr/bin/env python3
"""The precocity stage against a plain loop implementation of the same spec, in one run.

The loop is written from the spec (issue 18 and the reference worker's semantics,
Historical-AI-Lab/novelty `calc_precocity_worker_for_embeddings.py`), in its style: a dict of
chunk vectors, and for every centre chunk × comparison chunk pair one np.dot, the distance
transform and the filter checks, distances appended to lists that are then sorted. It follows
the stage's documented decisions where the reference is undefined (nested filters for every
document, years without comparisons left out of the mean, cos clamped to ±(1 − 2⁻²⁰), every
chunk of a document used).

Both run on the same synthetic corpus (written here as an `embeddings` Parquet file, with
training documents and author overlaps so all four filters differ); their document tables
are compared (largest difference relative to the measure's scale), then the comparison rates
are printed and their ratio. The loop runs on a corpus small enough to finish; the stage also
runs on a corpus 40× larger, since on the small one its time is mostly start-up and I/O.

Usage: bench/precocity_loop.py [path/to/precocity]   (default target/release/precocity)
"""
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

RADII = [10, 20]
FRACTIONS = [1.0, 0.1, 0.05]
AGGREGATES = [1.0, 0.25]
FILTERS = ["no filter", "train", "trainauth", "trainauthquote"]
CLAMP = 1.0 - 2.0**-20
DIM = 384


def make_corpus(path, years, docs_per_year, chunks_per_doc, seed):
    """Writes an embeddings table; returns the training docs and author overlaps."""
    rng = np.random.default_rng(seed)
    ids, idxs, yrs, vecs = [], [], [], []
    docs = []
    drift = rng.normal(size=DIM)
    for y in years:
        for d in range(docs_per_year):
            doc = f"d{y}-{d}"
            docs.append(doc)
            topic = rng.normal(size=DIM)
            for c in range(chunks_per_doc):
                v = 2.0 * topic + rng.normal(size=DIM) + (y - years[0]) * 0.05 * drift
                ids.append(doc)
                idxs.append(c)
                yrs.append(y)
                vecs.append(v.astype(np.float32))
    flat = pa.array(np.concatenate(vecs), type=pa.float32())
    table = pa.table(
        {
            "doc_id": pa.array(ids),
            "chunk_idx": pa.array(idxs, type=pa.int32()),
            "year": pa.array(yrs, type=pa.int32()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, DIM),
        }
    )
    pq.write_table(table, path)
    train = set(docs[::7])
    authors = defaultdict(set)
    for i, doc in enumerate(docs[::5]):
        authors[doc].add(docs[(i * 5 + docs_per_year + 1) % len(docs)])
    return train, authors


def load(path):
    t = pq.read_table(path)
    emb = np.asarray(t.column("embedding").combine_chunks().flatten()).reshape(-1, DIM)
    data = {}
    for doc, idx, year, v in zip(
        t.column("doc_id").to_pylist(), t.column("chunk_idx").to_pylist(), t.column("year").to_pylist(), emb
    ):
        v = v.astype(np.float64)
        data.setdefault(doc, (year, {}))[1][idx] = (v / np.linalg.norm(v)).astype(np.float32).astype(np.float64)
    return data


def plain_loop(data, train, authors, centre_years):
    """The spec, pair by pair. Returns ({(doc, f, filter, r, a): (p, n, t)}, pairs, seconds)."""
    docs_by_year = defaultdict(list)
    for doc, (year, _) in data.items():
        docs_by_year[year].append(doc)
    R = max(RADII)
    pairs = 0
    start = time.process_time()
    out = {}
    for centre in centre_years:
        for doc in sorted(docs_by_year[centre]):
            pchunks = sorted(data[doc][1].items())
            excluded = {
                "no filter": set(),
                "train": set(train),
            }
            excluded["trainauth"] = excluded["train"] | authors.get(doc, set())
            excluded["trainauthquote"] = excluded["trainauth"]  # no quote file in this bench
            distances = defaultdict(list)
            for d in [x for x in range(-R, R + 1) if x != 0]:
                for other in docs_by_year.get(centre + d, []):
                    for _, cvec in sorted(data[other][1].items()):
                        for p_idx, (_, pvec) in enumerate(pchunks):
                            pairs += 1
                            s = float(np.dot(pvec, cvec))
                            s = min(max(s, -CLAMP), CLAMP)
                            dist = -0.5 * math.log((1 + s) / (1 - s))
                            for f in FILTERS:
                                if other not in excluded[f]:
                                    distances[(p_idx, f, d)].append(dist)
            chunk = {}
            for p_idx in range(len(pchunks)):
                for frac in FRACTIONS:
                    for f in FILTERS:
                        means = {}
                        for d in [x for x in range(-R, R + 1) if x != 0]:
                            ds = sorted(distances.get((p_idx, f, d), []))
                            if ds:
                                k = math.ceil(len(ds) * frac)
                                means[d] = sum(ds[:k]) / k
                        for r in RADII:
                            past = [means[d] for d in range(-r, 0) if d in means]
                            fut = [means[d] for d in range(1, r + 1) if d in means]
                            n = sum(past) / len(past) if past else None
                            t = sum(fut) / len(fut) if fut else None
                            p = n - t if n is not None and t is not None else None
                            chunk[(p_idx, frac, f, r)] = (p, n, t)
            for frac in FRACTIONS:
                for f in FILTERS:
                    for r in RADII:
                        trip = [chunk[(i, frac, f, r)] for i in range(len(pchunks))]
                        trip = sorted([x for x in trip if x[0] is not None], reverse=True)
                        for a in AGGREGATES:
                            if not trip:
                                out[(doc, frac, f, r, a)] = (None, None, None)
                                continue
                            k = math.ceil(len(trip) * a)
                            out[(doc, frac, f, r, a)] = tuple(sum(x[j] for x in trip[:k]) / k for j in range(3))
    return out, pairs, time.process_time() - start


def run_stage(exe, emb, out, train, authors, extra=()):
    tdir = os.path.dirname(out)
    with open(os.path.join(tdir, "train.txt"), "w") as f:
        f.write("\n".join(sorted(train)) + "\n")
    with open(os.path.join(tdir, "authors.tsv"), "w") as f:
        for c, others in sorted(authors.items()):
            for o in sorted(others):
                f.write(f"{c}\t{o}\n")
    cmd = [exe, "--embeddings", emb, "--out", out, "--train-docs", os.path.join(tdir, "train.txt"),
           "--authors", os.path.join(tdir, "authors.tsv"), *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if res.returncode != 0:
        sys.exit(f"precocity failed: {res.stderr}")
    m = re.search(r"([0-9.e+]+) chunk pairs compared in ([0-9.]+) s", res.stderr)
    return float(m.group(1)), float(m.group(2)), wall, cpu


def read_docs(out):
    rows = {}
    with open(os.path.join(out, "documents.tsv")) as f:
        next(f)
        for line in f:
            x = line.rstrip("\n").split("\t")
            num = lambda s: None if s == "nan" else float(s)
            rows[(x[0], float(x[3]), x[4], int(x[5]), float(x[6]))] = (num(x[7]), num(x[8]), num(x[9]))
    return rows


def main():
    exe = sys.argv[1] if len(sys.argv) > 1 else "target/release/precocity"
    with tempfile.TemporaryDirectory() as tmp:
        small = os.path.join(tmp, "small.parquet")
        years = list(range(1900, 1926))
        train, authors = make_corpus(small, years, 8, 3, seed=1)
        data = load(small)
        # Centre years in the middle, so both sides have 20 years of comparisons.
        centre = list(range(1910, 1916))
        want, loop_pairs, loop_cpu = plain_loop(data, train, authors, centre)
        out = os.path.join(tmp, "small-out")
        stage_pairs, _, _, stage_cpu = run_stage(
            exe, small, out, train, authors, ["--from-year", str(centre[0]), "--to-year", str(centre[-1])]
        )
        got = read_docs(out)
        worst = 0.0
        for key, w in want.items():
            g = got[key]
            scale = max([abs(v) for v in w if v is not None] + [1e-3])
            for gv, wv in zip(g, w):
                if (gv is None) != (wv is None):
                    sys.exit(f"{key}: stage {g} vs loop {w}")
                if gv is not None:
                    worst = max(worst, abs(gv - wv) / scale)
        assert stage_pairs == loop_pairs, (stage_pairs, loop_pairs)
        print(f"agreement on {len(want)} document rows: largest difference {worst:.2e} of the measure's scale")

        big = os.path.join(tmp, "big.parquet")
        btrain, bauthors = make_corpus(big, years, 40, 12, seed=2)
        big_pairs, big_s, big_wall, big_cpu = run_stage(exe, big, os.path.join(tmp, "big-out"), btrain, bauthors)
        # CPU time per comparison on both sides: fair on a shared machine, and per core (the
        # loop is single-threaded; the stage's CPU time sums its threads). The stage's is the
        # whole process: reading, checking, writing included.
        loop_ns = loop_cpu / loop_pairs * 1e9
        small_ns = stage_cpu / stage_pairs * 1e9
        big_ns = big_cpu / big_pairs * 1e9
        print(f"plain loop: {loop_pairs:.3g} pairs, {loop_cpu:.2f} s CPU = {loop_ns:.0f} ns CPU per pair")
        print(f"stage, same corpus: {small_ns:.0f} ns CPU per pair ({loop_ns / small_ns:.0f}x; mostly start-up and I/O)")
        print(f"stage, 40x larger corpus: {big_pairs:.3g} pairs, {big_cpu:.1f} s CPU (wall {big_wall:.1f} s) "
              f"= {big_ns:.1f} ns CPU per pair")
        print(f"speed-up per comparison (CPU time): {loop_ns / big_ns:.0f}x")


if __name__ == "__main__":
    main()
