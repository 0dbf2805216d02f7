"""tune-embeddings vs sentence-transformers, trained on the same pairs with the same settings,
and a bag-of-words baseline (TF-IDF + truncated SVD, scikit-learn), on the same held-out
measures: the corpus measures of `tune-embeddings evaluate` (successive-passage MRR@10 among
all held-out chunks, kNN median-year error and same-decade share over the 10 nearest chunks of
OTHER held-out documents), computed here with the same definitions in numpy.

Both trainers: MultipleNegativesRankingLoss (scale 20), no-duplicates batches, AdamW with
weight decay 0.01, linear warm-up then decay, clipping at 1.0, the given epochs / batch / lr /
training length, every model embedding at the base model's max_seq_length. Each runs once per
seed; the final weights are evaluated (no checkpoint picked on the held-out set). Printed: per
seed values, mean and spread (max − min), and the base model's and TF-IDF + SVD's values.

Run through bench/run-tuning-bench.sh (needs torch: not part of the test command).
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

K = 10


def held_out_chunks(chunks_path, docs):
    t = pq.read_table(chunks_path, columns=["doc_id", "year", "chunk_idx", "text"]).to_pylist()
    rows = sorted((r for r in t if r["doc_id"] in docs), key=lambda r: (r["doc_id"], r["chunk_idx"]))
    train_rows = [r for r in t if r["doc_id"] not in docs]
    return rows, train_rows


def corpus_metrics(emb, rows):
    """The definitions of tune-embeddings' corpus_eval.rs."""
    emb = np.asarray(emb, dtype=np.float64)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    sim = emb @ emb.T
    doc = np.array([r["doc_id"] for r in rows])
    year = np.array([r["year"] for r in rows])
    n = len(rows)
    queries = [i for i in range(n - 1) if doc[i] == doc[i + 1]]
    rr, r1, r10 = [], 0, 0
    for q in queries:
        own = sim[q, q + 1]
        mask = np.ones(n, bool)
        mask[[q, q + 1]] = False
        rank = 1 + int((sim[q, mask] > own).sum())
        rr.append(1.0 / rank if rank <= 10 else 0.0)
        r1 += rank == 1
        r10 += rank <= 10
    errs, dec = [], []
    for i in range(n):
        others = np.where(doc != doc[i])[0]
        order = others[np.lexsort((others, -sim[i, others]))][:K]
        ys = year[order]
        errs.append(abs(float(np.median(ys)) - year[i]))
        dec.append(float(np.mean(ys // 10 == year[i] // 10)))
    return {
        "successive_mrr@10": float(np.mean(rr)),
        "successive_recall@1": r1 / len(queries),
        "successive_recall@10": r10 / len(queries),
        "knn_year_error": float(np.mean(errs)),
        "knn_same_decade": float(np.mean(dec)),
    }


def tfidf_svd(rows, train_rows, dims, seed):
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(sublinear_tf=True, min_df=2, stop_words="english")
    x_train = vec.fit_transform([r["text"] for r in train_rows])
    svd = TruncatedSVD(n_components=dims, random_state=seed).fit(x_train)
    return svd.transform(vec.transform([r["text"] for r in rows]))


def st_train(args, seed, out):
    import torch
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments, losses)
    from sentence_transformers.training_args import BatchSamplers

    torch.manual_seed(seed)
    pairs = pq.read_table(args.pairs, columns=["anchor", "positive"]).to_pydict()
    model = SentenceTransformer(str(args.base_model), device="cpu")
    embed_length = model.max_seq_length
    model.max_seq_length = args.max_seq_length or embed_length
    targs = SentenceTransformerTrainingArguments(
        output_dir=str(out), num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, warmup_ratio=args.warmup_ratio, weight_decay=0.01, max_grad_norm=1.0,
        lr_scheduler_type="linear", batch_sampler=BatchSamplers.NO_DUPLICATES, seed=seed,
        save_strategy="no", report_to=[], logging_steps=10**9, dataloader_drop_last=False)
    trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=Dataset.from_dict(pairs),
                                         loss=losses.MultipleNegativesRankingLoss(model, scale=20.0))
    trainer.train()
    model.max_seq_length = embed_length
    return model


def ours_train(args, seed, out):
    cmd = [str(args.tune_embeddings), "--base-model", str(args.base_model), "--pairs", str(args.pairs),
           "--out", str(out), "--held-out-docs", str(args.held_out_docs), "--chunks", str(args.chunks),
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
           "--warmup-ratio", str(args.warmup_ratio), "--seed", str(seed)]
    if args.max_seq_length:
        cmd += ["--max-seq-length", str(args.max_seq_length)]
    subprocess.run(cmd, check=True)
    # The final weights' evaluation: the last eval line of the log (the saved model is the
    # best evaluation, which may be the base model's).
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    return [l for l in lines if l["kind"] == "eval"][-1]["metrics"]


def summary(values):
    return f"{statistics.mean(values):.4f} (spread {max(values) - min(values):.4f})"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=Path, required=True)
    p.add_argument("--held-out-docs", type=Path, required=True)
    p.add_argument("--chunks", type=Path, required=True)
    p.add_argument("--base-model", type=Path, required=True)
    p.add_argument("--tune-embeddings", type=Path, default=Path("target/release/tune-embeddings"))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--max-seq-length", type=int, default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--svd-dims", type=int, default=100)
    p.add_argument("--max-pairs", type=int, default=None,
                   help="train both on the same seeded random subset of this many pairs (to fit a CPU budget)")
    p.add_argument("--skip-st", action="store_true", help="only tune-embeddings and the baselines")
    p.add_argument("--json", type=Path, help="write all values here")
    args = p.parse_args()

    docs = {l.strip() for l in args.held_out_docs.read_text().splitlines() if l.strip()}
    rows, train_rows = held_out_chunks(args.chunks, docs)
    texts = [r["text"] for r in rows]
    print(f"{len(docs)} held-out documents, {len(rows)} chunks; kNN pool: held-out chunks of other documents", flush=True)
    from sentence_transformers import SentenceTransformer
    base = SentenceTransformer(str(args.base_model), device="cpu")
    results = {"base": corpus_metrics(base.encode(texts, batch_size=32), rows),
               "tfidf_svd": corpus_metrics(tfidf_svd(rows, train_rows, args.svd_dims, 0), rows),
               "tune_embeddings": [], "sentence_transformers": []}
    with tempfile.TemporaryDirectory() as tmp:
        if args.max_pairs:
            table = pq.read_table(args.pairs)
            if args.max_pairs < table.num_rows:
                keep = np.sort(np.random.default_rng(0).choice(table.num_rows, args.max_pairs, replace=False))
                args.pairs = Path(tmp) / "pairs-subset.parquet"
                pq.write_table(table.take(keep), args.pairs)
            print(f"training pairs: {min(args.max_pairs, table.num_rows)} of {table.num_rows} (seeded subset)", flush=True)
        for seed in args.seeds:
            results["tune_embeddings"].append(ours_train(args, seed, Path(tmp) / f"ours-{seed}"))
            if not args.skip_st:
                model = st_train(args, seed, Path(tmp) / f"st-{seed}")
                results["sentence_transformers"].append(corpus_metrics(model.encode(texts, batch_size=32), rows))
            print(json.dumps({k: v for k, v in results.items()}, indent=1), flush=True)
    keys = ["successive_mrr@10", "knn_year_error", "knn_same_decade"]
    print(f"\nsettings: epochs {args.epochs}, batch {args.batch_size}, lr {args.lr}, warm-up {args.warmup_ratio}, "
          f"training length {args.max_seq_length or 'base'}, seeds {args.seeds}, "
          f"pairs {args.max_pairs or 'all'}")
    print("| model | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name in ["base", "tfidf_svd"]:
        print(f"| {name} | " + " | ".join(f"{results[name][k]:.4f}" for k in keys) + " |")
    for name in ["tune_embeddings", "sentence_transformers"]:
        if results[name]:
            print(f"| {name} | " + " | ".join(summary([r[k] for r in results[name]]) for k in keys) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
