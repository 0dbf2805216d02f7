"""The settings sweep behind the main job's tuning defaults (issue 16: defaults by measurement).

Every setting trains tune-embeddings on the bundled sample with the document split (the same 50
held-out documents for all: select-pairs --held-out-docs, seed 42) and reads the held-out
corpus measures from its metrics log: the evaluation before training (the base model, the first
row) and the one after the last step (the final weights, whatever checkpoint would be saved).
Nothing here picks a setting on the held-out documents automatically: the table is printed, and
the choice (and the caveat that 50 documents are few) is written up in the README.

Needs only the release binaries (no torch): cargo build --release -p select-pairs -p tune-embeddings
Usage: python3 bench/tuning_sweep.py [--only NAME ...] [--seeds 42 ...]
Outputs: runs/tuning-sweep/<setting>-s<seed>/ (pairs, model, metrics.jsonl) and results.json.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

BIN = Path("target/release")
CHUNKS = "data/sample/chunks.parquet"
BASE = "models/all-MiniLM-L6-v2"
OUT = Path("runs/tuning-sweep")

# select-pairs variants: the reference's pair selection (370 pairs on the sample: one pair per 8
# chunks, then a per-year cap), and as many non-touching successive pairs as the sample holds.
PAIRS = {
    "ref": [],
    "dense": ["--chunks-per-pair", "1", "--cap-rank", "100000"],
}
# name → (pairs variant, tune-embeddings arguments)
SETTINGS = {
    "ref-e2-lr5e-5-b32": ("ref", ["--epochs", "2", "--lr", "5e-5", "--batch-size", "32"]),
    "dense-e1-lr5e-5-b32": ("dense", ["--epochs", "1", "--lr", "5e-5", "--batch-size", "32"]),
    "dense-e2-lr5e-5-b32": ("dense", ["--epochs", "2", "--lr", "5e-5", "--batch-size", "32"]),
    "dense-e4-lr5e-5-b32": ("dense", ["--epochs", "4", "--lr", "5e-5", "--batch-size", "32"]),
    "dense-e2-lr2e-5-b32": ("dense", ["--epochs", "2", "--lr", "2e-5", "--batch-size", "32"]),
    "dense-e2-lr1e-4-b32": ("dense", ["--epochs", "2", "--lr", "1e-4", "--batch-size", "32"]),
    "dense-e2-lr5e-5-b64": ("dense", ["--epochs", "2", "--lr", "5e-5", "--batch-size", "64",
                                      "--mini-batch-size", "32"]),
}
KEYS = ["successive_mrr@10", "successive_recall@1", "successive_recall@10", "knn_year_error",
        "knn_same_decade"]


def pairs(variant):
    out = OUT / f"pairs-{variant}"
    if not (out / "pairs.parquet").exists():
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(BIN / "select-pairs"), "--chunks", CHUNKS, "--no-paraphrase", "--seed", "42",
                        "--out", str(out / "pairs.parquet"), "--held-out-docs", str(out / "held-out-docs.txt"),
                        *PAIRS[variant]], check=True)
    return out


def run(name, seed):
    variant, args = SETTINGS[name]
    p = pairs(variant)
    out = OUT / f"{name}-s{seed}"
    log = out / "metrics.jsonl"
    if not (out / "model" / "modules.json").exists():
        subprocess.run([str(BIN / "tune-embeddings"), "--base-model", BASE, "--pairs", str(p / "pairs.parquet"),
                        "--held-out-docs", str(p / "held-out-docs.txt"), "--chunks", CHUNKS,
                        "--out", str(out / "model"), "--checkpoint-dir", str(out), "--seed", str(seed), *args],
                       check=True)
    evals = [l for l in map(json.loads, log.read_text().splitlines()) if l["kind"] == "eval"]
    return {"setting": name, "seed": seed, "base": evals[0]["metrics"], "final": evals[-1]["metrics"],
            "steps": evals[-1]["step"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[42])
    a = ap.parse_args()
    results = [run(n, s) for n in a.only for s in a.seeds]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    print("| setting | seed | steps | " + " | ".join(KEYS) + " |")
    print("|---|---|---|" + "---|" * len(KEYS))
    b = results[0]["base"]
    print("| base model | — | 0 | " + " | ".join(f"{b[k]:.4f}" for k in KEYS) + " |")
    for r in results:
        print(f"| {r['setting']} | {r['seed']} | {r['steps']} | " + " | ".join(f"{r['final'][k]:.4f}" for k in KEYS) + " |")


if __name__ == "__main__":
    sys.exit(main())
