#!/usr/bin/env python3
"""The GPU check (see bench/gpu/run.sh): parity, training and embedding of our CUDA build,
beside sentence-transformers, in one run; every number also goes to OUT/gpu-check.json.

Our side runs the stage binaries as a user would; the sentence-transformers side runs in this
process (imported only when present: CI has no torch, and --dry still runs all of ours).
Exit status 1 when a check fails (f32 parity below 0.9999, a binary that fails); the JSON is
written either way, so a failed run still brings its numbers back.
"""
import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFERENCE = os.path.join(ROOT, "encoder/tests/data/all-MiniLM-L6-v2.embeddings.json")
CORPUS = os.path.join(ROOT, "data/sample/chunks.parquet")
PARITY_MIN_COS = 0.9999

# Full run (GPU) and --dry (CPU, tiny): what each part does.
FULL = dict(device="cuda:0", precisions=["f32", "bf16", "f16"], train_precisions=["f32", "bf16"],
            steps=50, batch=64, seq=256, corpus_rows=None, embed_precisions=["f16", "f32"])
DRY = dict(device="cpu", precisions=["f32"], train_precisions=["f32"],
           steps=3, batch=8, seq=64, corpus_rows=200, embed_precisions=["f32"])


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class GpuMemory:
    """Peak memory of a child process on the GPU, polled with nvidia-smi (our binaries do not
    report it). None where there is no nvidia-smi (the dry run on CPU)."""

    def __init__(self, pid):
        self.pid, self.peak_mib, self._stop = pid, None, threading.Event()
        if shutil.which("nvidia-smi"):
            self._t = threading.Thread(target=self._poll, daemon=True)
            self._t.start()

    def _poll(self):
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=5).stdout
                for line in out.splitlines():
                    pid, mib = (x.strip() for x in line.split(","))
                    if int(pid) == self.pid:
                        self.peak_mib = max(self.peak_mib or 0, int(mib))
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            self._stop.wait(0.2)

    def stop(self):
        self._stop.set()


def run(cmd, cwd=None):
    """Runs one of our binaries; returns (seconds, peak GPU MiB, stderr tail). Raises on failure."""
    log("$", " ".join(cmd))
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mem = GpuMemory(p.pid)
    out, err = p.communicate()
    mem.stop()
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {p.returncode}: {err.strip()[-2000:]}")
    return secs, mem.peak_mib, err.strip().splitlines()[-3:]


def write_chunks(path, rows):
    """A `chunks` table (doc_id, chunk_idx, year, text) as pyarrow writes it."""
    doc, idx, year, text = zip(*rows)
    pq.write_table(pa.table({
        "doc_id": pa.array(doc, pa.string()), "chunk_idx": pa.array(idx, pa.int32()),
        "year": pa.array(year, pa.int32()), "text": pa.array(text, pa.string())}), path)


def read_embeddings(folder):
    """(doc_id, chunk_idx) → vector, over every shard apply-model wrote into `folder`."""
    out = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".parquet"):
            t = pq.read_table(os.path.join(folder, name)).to_pydict()
            for d, c, e in zip(t["doc_id"], t["chunk_idx"], t["embedding"]):
                out[(d, c)] = np.asarray(e, dtype=np.float64)
    return out


def cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def parity(cfg, args, work):
    """The reference texts (blank ones are not valid chunks) with apply-model, per precision."""
    ref = json.load(open(REFERENCE))
    items = [it for it in ref["items"] if it["text"].strip()]
    chunks = os.path.join(work, "reference.parquet")
    write_chunks(chunks, [(f"ref{i:02}", 0, 1900, it["text"]) for i, it in enumerate(items)])
    results = {}
    for prec in cfg["precisions"]:
        dest = os.path.join(work, f"parity-{prec}")
        secs, _, _ = run([os.path.join(args.bin, "apply-model"), "--model", args.model, "--chunks", chunks,
                          "--out", dest, "--device", cfg["device"], "--precision", prec])
        got = read_embeddings(dest)
        c = [cos(got[(f"ref{i:02}", 0)], np.asarray(it["embedding"])) for i, it in enumerate(items)]
        results[prec] = {"texts": len(items), "min_cosine": min(c), "mean_cosine": float(np.mean(c)),
                         "seconds": secs}
    ok = results["f32"]["min_cosine"] >= PARITY_MIN_COS
    return {"by_precision": results, "f32_required": PARITY_MIN_COS, "f32_ok": ok}, ok


def make_pairs(cfg, args, work, corpus):
    dest = os.path.join(work, "pairs.parquet")
    run([os.path.join(args.cpu_bin, "select-pairs"), "--chunks", corpus, "--out", dest,
         "--report", os.path.join(work, "pairs-report.json"), "--no-paraphrase", "--seed", "42"])
    t = pq.read_table(dest).to_pydict()
    return dest, list(zip(t["anchor"], t["positive"]))


def train_ours(cfg, args, work, pairs, prec):
    ckpt = os.path.join(work, f"train-{prec}.checkpoints")
    # Enough epochs that the schedule is longer than the steps measured; the same schedule
    # (read back per step from the log) drives the sentence-transformers side.
    secs, peak, _ = run([os.path.join(args.bin, "tune-embeddings"), "--base-model", args.model,
                         "--pairs", pairs, "--out", os.path.join(work, f"train-{prec}"),
                         "--checkpoint-dir", ckpt, "--batch-size", str(cfg["batch"]),
                         "--max-seq-length", str(cfg["seq"]), "--epochs", "100", "--seed", "42",
                         "--eval-rows", "64", "--stop-after-steps", str(cfg["steps"]),
                         "--device", cfg["device"], "--precision", prec])
    steps = [json.loads(l) for l in open(os.path.join(ckpt, "metrics.jsonl"))]
    steps = [s for s in steps if s.get("kind") == "train"]
    rates = [s["pairs_per_second"] for s in steps[1:] if s.get("pairs_per_second")]
    return {"steps": len(steps), "seconds_total": secs, "pairs_per_second": float(np.median(rates)) if rates else None,
            "peak_gpu_mib": peak, "loss": [s["loss"] for s in steps], "lr": [s["lr"] for s in steps]}


def st_available():
    try:
        import sentence_transformers  # noqa: F401
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def train_st(cfg, args, pairs, lrs):
    """sentence-transformers: MultipleNegativesRankingLoss (scale 20, as ours), AdamW with our
    weight decay and our per-step learning rates, gradient clipping at 1.0, bf16 autocast on GPU,
    seed 42, the pairs in a seeded shuffled order."""
    import torch
    from sentence_transformers import SentenceTransformer
    try:  # sentence-transformers 6 moved the losses
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:
        from sentence_transformers.losses import MultipleNegativesRankingLoss
    torch.manual_seed(42)
    dev = "cuda" if cfg["device"].startswith("cuda") else "cpu"
    model = SentenceTransformer(args.model, device=dev)
    model.max_seq_length = cfg["seq"]
    loss_fn = MultipleNegativesRankingLoss(model, scale=20.0)
    opt = torch.optim.AdamW(model.parameters(), lr=lrs[0] if lrs else 2e-5, weight_decay=0.01)
    order = np.random.default_rng(42).permutation(len(pairs))
    b = cfg["batch"]
    model.train()
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    curve, t0, timed = [], None, 0
    for step in range(cfg["steps"]):
        batch = [pairs[i] for i in order[step * b:(step + 1) * b]]
        if len(batch) < b:
            break
        if step == 1:  # the first step warms up kernels and allocator, as for ours
            if dev == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lrs[step] if step < len(lrs) else lrs[-1]
        # sentence-transformers 6 renamed tokenize to preprocess.
        tokenize = getattr(model, "preprocess", None) or model.tokenize
        feats = [tokenize([p[k] for p in batch]) for k in (0, 1)]
        feats = [{k: v.to(dev) if hasattr(v, "to") else v for k, v in f.items()} for f in feats]
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            loss = loss_fn(feats, None)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        curve.append(loss.item())
        if t0 is not None:
            timed += len(batch)
    if dev == "cuda":
        torch.cuda.synchronize()
    rate = timed / (time.perf_counter() - t0) if t0 and timed else None
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else None
    return {"steps": len(curve), "pairs_per_second": rate, "peak_gpu_mib": peak, "loss": curve,
            "precision": "bf16 autocast" if dev == "cuda" else "f32"}


def embedding(cfg, args, work, corpus, texts):
    ours = {}
    for prec in cfg["embed_precisions"]:
        dest = os.path.join(work, f"embed-{prec}")
        secs, peak, _ = run([os.path.join(args.bin, "apply-model"), "--model", args.model, "--chunks", corpus,
                             "--out", dest, "--device", cfg["device"], "--precision", prec, "--shard-by", "equal:1"])
        ours[prec] = {"seconds": secs, "texts_per_second": len(texts) / secs, "peak_gpu_mib": peak,
                      "vectors": read_embeddings(dest)}
    result = {"texts": len(texts), "ours": {p: {k: v for k, v in r.items() if k != "vectors"} for p, r in ours.items()}}
    if st_available():
        import torch
        from sentence_transformers import SentenceTransformer
        dev = "cuda" if cfg["device"].startswith("cuda") else "cpu"
        model = SentenceTransformer(args.model, device=dev)
        if dev == "cuda":
            model.half()
        strings = [t for _, t in texts]
        model.encode(strings[:64], batch_size=32)  # warm-up
        if dev == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        st = model.encode(strings, batch_size=32, convert_to_numpy=True).astype(np.float64)
        if dev == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        result["sentence_transformers"] = {"seconds": secs, "texts_per_second": len(texts) / secs,
                                           "precision": "fp16" if dev == "cuda" else "f32"}
        for prec, r in ours.items():
            c = [cos(r["vectors"][key], st[i]) for i, (key, _) in enumerate(texts)]
            result["ours"][prec]["cosine_to_st"] = {"min": min(c), "mean": float(np.mean(c))}
    else:
        result["sentence_transformers"] = "skipped: sentence-transformers is not installed"
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dry", action="store_true", help="CPU, tiny configuration (checks the logic)")
    ap.add_argument("--bin", required=True)
    ap.add_argument("--cpu-bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cfg = DRY if args.dry else FULL
    report = {"mode": "dry (CPU, tiny: the numbers mean nothing)" if args.dry else "full",
              "config": cfg, "machine": {"host": platform.node(), "cpu": platform.processor(), "cores": os.cpu_count()},
              "versions": {}}
    if shutil.which("nvidia-smi"):
        report["machine"]["gpu"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True).stdout.strip()
    for b in ("apply-model", "tune-embeddings"):
        p = subprocess.run([os.path.join(args.bin, b), "--version"], capture_output=True, text=True)
        report["versions"][b] = (p.stdout or p.stderr).strip()
    if st_available():
        import sentence_transformers
        import torch
        report["versions"]["sentence-transformers"] = sentence_transformers.__version__
        report["versions"]["torch"] = torch.__version__
    ok = True
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        table = pq.read_table(CORPUS).to_pydict()
        rows = list(zip(table["doc_id"], table["chunk_idx"], table["year"], table["text"]))
        if cfg["corpus_rows"]:
            rows = rows[:cfg["corpus_rows"]]
        corpus = os.path.join(work, "corpus.parquet")
        write_chunks(corpus, rows)
        texts = [((d, c), t) for d, c, _, t in rows]
        parts = [("parity", lambda: parity(cfg, args, work))]

        def training():
            pairs_file, pairs = make_pairs(cfg, args, work, corpus)
            res = {"pairs": len(pairs), "batch": cfg["batch"], "max_seq_length": cfg["seq"], "ours": {}}
            for prec in cfg["train_precisions"]:
                res["ours"][prec] = train_ours(cfg, args, work, pairs_file, prec)
            lrs = res["ours"][cfg["train_precisions"][0]]["lr"]
            if not st_available():
                res["sentence_transformers"] = "skipped: sentence-transformers is not installed"
                return res, True
            try:  # our numbers stay in the report if the other side fails
                res["sentence_transformers"] = train_st(cfg, args, pairs, lrs)
                return res, True
            except Exception as e:  # noqa: BLE001
                res["sentence_transformers"] = {"error": repr(e)}
                return res, False

        parts += [("training", training), ("embedding", lambda: (embedding(cfg, args, work, corpus, texts), True))]
        for name, f in parts:
            t0 = time.perf_counter()
            try:
                report[name], good = f()
            except Exception as e:  # noqa: BLE001 - one part failing must not lose the others' numbers
                report[name], good = {"error": str(e)}, False
            report[name + "_seconds"] = time.perf_counter() - t0
            ok &= good
    report["seconds"] = time.perf_counter() - t_start
    report["peak_rss_children_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report["ok"] = ok
    path = os.path.join(args.out, "gpu-check.json")
    with open(path + ".tmp", "w") as f:
        json.dump(report, f, indent=1, default=float)
    os.replace(path + ".tmp", path)
    print_table(report)
    log(f"→ {path}")
    return 0 if ok else 1


def fmt(v, spec=".4f"):
    return "-" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)


def print_table(r):
    print(f"# GPU check ({r['mode']}) on {r['machine'].get('gpu', r['machine']['host'])}")
    for k, v in r["versions"].items():
        print(f"  {k}: {v}")
    p = r.get("parity", {})
    if "by_precision" in p:
        print("\n| parity (reference texts) | min cosine | mean cosine |\n|---|---|---|")
        for prec, v in p["by_precision"].items():
            print(f"| {prec} | {fmt(v['min_cosine'], '.6f')} | {fmt(v['mean_cosine'], '.6f')} |")
    t = r.get("training", {})
    if "ours" in t:
        st = t["sentence_transformers"]
        print(f"\n| training ({t['pairs']} pairs, batch {t['batch']} × {t['max_seq_length']} tokens) | pairs/s | peak GPU MiB |\n|---|---|---|")
        for prec, v in t["ours"].items():
            print(f"| strata {prec} | {fmt(v['pairs_per_second'], '.1f')} | {fmt(v['peak_gpu_mib'], '.0f')} |")
        st_ok = isinstance(st, dict) and "error" not in st
        if st_ok:
            print(f"| sentence-transformers {st['precision']} | {fmt(st['pairs_per_second'], '.1f')} | {fmt(st['peak_gpu_mib'], '.0f')} |")
        curves = {f"strata {p}": v["loss"] for p, v in t["ours"].items()}
        if st_ok:
            curves["sentence-transformers"] = st["loss"]
        print("\n| step | " + " | ".join(curves) + " |\n|---|" + "---|" * len(curves))
        for i in range(max(len(c) for c in curves.values())):
            print(f"| {i + 1} | " + " | ".join(fmt(c[i] if i < len(c) else None) for c in curves.values()) + " |")
    e = r.get("embedding", {})
    if "ours" in e:
        print(f"\n| embedding ({e['texts']} chunks) | texts/s | cosine to sentence-transformers (min / mean) |\n|---|---|---|")
        for prec, v in e["ours"].items():
            c = v.get("cosine_to_st")
            print(f"| strata {prec} | {fmt(v['texts_per_second'], '.1f')} | "
                  + (f"{c['min']:.5f} / {c['mean']:.5f}" if c else "-") + " |")
        st = e["sentence_transformers"]
        if isinstance(st, dict):
            print(f"| sentence-transformers {st['precision']} | {fmt(st['texts_per_second'], '.1f')} | - |")
    for name in ("parity", "training", "embedding"):
        if "error" in r.get(name, {}):
            print(f"\n{name} FAILED: {r[name]['error']}")
        elif isinstance(r.get(name, {}).get("sentence_transformers"), str):
            print(f"\n{name}: sentence-transformers {r[name]['sentence_transformers']}")
        elif "error" in (r.get(name, {}).get("sentence_transformers") or {}):
            print(f"\n{name}: sentence-transformers FAILED: {r[name]['sentence_transformers']['error']}")
    print(f"\n{'ok' if r['ok'] else 'FAILED'} in {r['seconds']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
