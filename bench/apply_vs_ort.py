#!/usr/bin/env python3
"""apply-model against ONNX Runtime on the same texts, in one run, on CPU.

No package ships an fp32 ONNX export of all-MiniLM-L6-v2, so the graph is built here from
model.safetensors with the `onnx` package (BERT encoder + attention-masked mean pooling + L2
normalisation) and checked against apply-model's embeddings before anything is timed.

Both sides include tokenization (ORT: the `tokenizers` package on the model's tokenizer.json,
truncation at sentence_bert_config's max_seq_length), sort texts by length and run batches of
32 on 2 threads. Prints texts/s for both and the ratio, for short sentences and for passages,
twice: embedding alone (apply-model's own timing, which starts after the model is loaded and
still includes reading and writing Parquet; ORT's session.run calls after a warm-up) and end
to end (the whole apply-model process; ORT's session creation from the serialized graph,
tokenizer load and the runs).

Usage: bench/run-ort-bench.sh   (installs the Python packages, builds, runs this)
"""
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")
THREADS = 2
BATCH = 32
TRIALS = 5


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dtype = {"F32": np.float32, "I64": np.int64}[meta["dtype"]]
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=dtype).reshape(meta["shape"])
    return out


def build_graph(w, cfg):
    """BERT → mean pooling → L2 normalisation, as an ONNX graph (opset 17)."""
    h, heads, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
    d = h // heads
    nodes, inits = [], []
    counter = [0]

    def name(prefix):
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def init(key, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), key))
        return key

    def node(op, inputs, **attrs):
        out = name(op)
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def const(value, dtype=np.float32):
        return init(name("c"), np.array(value, dtype=dtype))

    def linear(x, prefix):
        y = node("MatMul", [x, init(prefix + ".wT", w[prefix + ".weight"].T)])
        return node("Add", [y, init(prefix + ".b", w[prefix + ".bias"])])

    def layer_norm(x, prefix):
        return node("LayerNormalization", [x, init(prefix + ".g", w[prefix + ".weight"]), init(prefix + ".beta", w[prefix + ".bias"])], axis=-1, epsilon=eps)

    ids, mask = "input_ids", "attention_mask"  # [b, t] int64
    # Positions 0..t-1 per row, as a cumulative sum of ones (no shape arithmetic to fold).
    ones = node("ConstantOfShape", [node("Shape", [ids])], value=helper.make_tensor("one", TensorProto.INT64, [1], [1]))
    positions = node("Sub", [node("CumSum", [ones, const(1, np.int64)]), const(1, np.int64)])
    x = node("Gather", [init("word", w["embeddings.word_embeddings.weight"]), ids], axis=0)
    x = node("Add", [x, node("Gather", [init("pos", w["embeddings.position_embeddings.weight"]), positions], axis=0)])
    x = node("Add", [x, init("type0", w["embeddings.token_type_embeddings.weight"][0])])
    x = layer_norm(x, "embeddings.LayerNorm")
    maskf = node("Cast", [mask], to=TensorProto.FLOAT)
    bias = node("Mul", [node("Sub", [const(1.0), maskf]), const(-1e4)])
    bias = node("Unsqueeze", [bias, const([1, 2], np.int64)])  # [b, 1, 1, t]
    split_shape = const([0, 0, heads, d], np.int64)
    merge_shape = const([0, 0, h], np.int64)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        def heads_of(v):
            return node("Transpose", [node("Reshape", [v, split_shape])], perm=[0, 2, 1, 3])
        q = heads_of(linear(x, f"{p}.attention.self.query"))
        k = heads_of(linear(x, f"{p}.attention.self.key"))
        v = heads_of(linear(x, f"{p}.attention.self.value"))
        scores = node("Mul", [node("MatMul", [q, node("Transpose", [k], perm=[0, 1, 3, 2])]), const(1.0 / np.sqrt(d))])
        probs = node("Softmax", [node("Add", [scores, bias])], axis=-1)
        ctx = node("Reshape", [node("Transpose", [node("MatMul", [probs, v])], perm=[0, 2, 1, 3]), merge_shape])
        x = layer_norm(node("Add", [linear(ctx, f"{p}.attention.output.dense"), x]), f"{p}.attention.output.LayerNorm")
        inter = linear(x, f"{p}.intermediate.dense")
        gelu = node("Mul", [node("Mul", [inter, node("Add", [node("Erf", [node("Div", [inter, const(np.sqrt(2.0))])]), const(1.0)])]), const(0.5)])
        x = layer_norm(node("Add", [linear(gelu, f"{p}.output.dense"), x]), f"{p}.output.LayerNorm")
    m3 = node("Unsqueeze", [maskf, const([2], np.int64)])
    summed = node("ReduceSum", [node("Mul", [x, m3]), const([1], np.int64)], keepdims=0)
    count = node("Max", [node("ReduceSum", [m3, const([1], np.int64)], keepdims=0), const(1e-9)])
    mean = node("Div", [summed, count])
    norm = node("Max", [node("Sqrt", [node("ReduceSum", [node("Mul", [mean, mean]), const([1], np.int64)], keepdims=1)]), const(1e-12)])
    out = node("Div", [mean, norm])
    nodes.append(helper.make_node("Identity", [out], ["embedding"]))
    graph = helper.make_graph(
        nodes, "minilm",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "t"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "t"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["b", h])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def ort_embed(session, tokenizer, texts):
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for s in range(0, len(texts), BATCH):
        idx = order[s:s + BATCH]
        enc = tokenizer.encode_batch([texts[i] for i in idx])
        longest = max(len(e.ids) for e in enc)
        ids = np.zeros((len(idx), longest), dtype=np.int64)
        mask = np.zeros((len(idx), longest), dtype=np.int64)
        for r, e in enumerate(enc):
            ids[r, :len(e.ids)] = e.ids
            mask[r, :len(e.ids)] = 1
        out[idx] = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    return out


def ours_embed(texts, workdir):
    chunks = os.path.join(workdir, "chunks.parquet")
    table = pa.table({"doc_id": [f"t{i}" for i in range(len(texts))], "year": pa.array([2000] * len(texts), pa.int32()),
                      "chunk_idx": pa.array([0] * len(texts), pa.int32()), "text": texts})
    pq.write_table(table, chunks)
    out = os.path.join(workdir, "emb")
    cmd = [os.path.join(ROOT, "target", "release", "apply-model"), "--model", MODEL, "--chunks", chunks, "--out", out,
           "--shard-by", "equal:1", "--batch-size", str(BATCH), "--part-rows", "100000"]
    env = dict(os.environ, RAYON_NUM_THREADS=str(THREADS))
    env.pop("SLURM_ARRAY_TASK_ID", None)
    start = time.perf_counter()
    run = subprocess.run(cmd, check=True, env=env, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    # The summary line: "embedded N chunks ... in S s (R chunks/s) → OUT".
    rate = float(re.search(r"\(([0-9.]+) chunks/s\)", run.stderr).group(1))
    emb = pq.read_table(os.path.join(out, "part-00000-of-00001.parquet")).column("embedding").to_pylist()
    return np.array(emb, dtype=np.float32), seconds, rate


def ort_session(graph, max_len):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_len)
    return session, tokenizer


def ort_end_to_end(graph, max_len, texts):
    start = time.perf_counter()
    session, tokenizer = ort_session(graph, max_len)
    ort_embed(session, tokenizer, texts)
    return time.perf_counter() - start


def main():
    cfg = json.load(open(os.path.join(MODEL, "config.json")))
    max_len = json.load(open(os.path.join(MODEL, "sentence_bert_config.json")))["max_seq_length"]
    graph = build_graph(load_safetensors(os.path.join(MODEL, "model.safetensors")), cfg).SerializeToString()
    session, tokenizer = ort_session(graph, max_len)

    chunks = pq.read_table(os.path.join(ROOT, "data", "sample", "chunks.parquet")).column("text").to_pylist()
    sentences = [s for c in chunks for s in c.split(". ") if 6 <= len(s.split()) <= 40][:1024]
    passages = [c for c in chunks if len(c.split()) >= 170][:160]
    print(f"best of {TRIALS} trials each; ratio = apply-model texts/s ÷ ONNX Runtime texts/s")
    for name, texts in [("sentences", sentences), ("passages", passages)]:
        tokens = sum(len(e.ids) for e in tokenizer.encode_batch(texts)) / len(texts)
        ort_embed(session, tokenizer, texts[:64])  # warm-up
        ours_total, ours_rate, ort_run, ort_total = float("inf"), 0.0, float("inf"), float("inf")
        # Trials alternate between the two sides, so a machine that slows down for a while
        # (shared hosts do) slows both rather than one.
        for _ in range(TRIALS):
            with tempfile.TemporaryDirectory() as d:
                ours, total, rate = ours_embed(texts, d)
            ours_total, ours_rate = min(ours_total, total), max(ours_rate, rate)
            start = time.perf_counter()
            theirs = ort_embed(session, tokenizer, texts)
            ort_run = min(ort_run, time.perf_counter() - start)
            ort_total = min(ort_total, ort_end_to_end(graph, max_len, texts))
        cos = np.sum(ours * theirs, axis=1)
        assert cos.min() > 0.9999, f"ONNX graph and apply-model disagree: min cosine {cos.min()}"
        n = len(texts)
        print(f"{name:>9} ({n} texts, {tokens:.0f} tokens avg; min cosine {cos.min():.6f})\n"
              f"    embedding:  apply-model {ours_rate:6.1f} texts/s, ONNX Runtime {n / ort_run:6.1f} texts/s, "
              f"ratio {ours_rate * ort_run / n:.2f}x\n"
              f"    end to end: apply-model {n / ours_total:6.1f} texts/s, ONNX Runtime {n / ort_total:6.1f} texts/s, "
              f"ratio {ort_total / ours_total:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
