//! Shared by the precocity tests: writing small corpora and reading the stage's tables back.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::provenance::Provenance;
use common::tables::{ChunkKey, EmbeddingsWriter};
use precocity::output::{read_chunks, ChunkMeasure};
use precocity::{Distance, Grid, Input, Options};

/// One chunk of a test corpus.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub doc: String,
    pub idx: i32,
    pub year: i32,
    pub vec: Vec<f32>,
}

pub fn chunk(doc: &str, idx: i32, year: i32, vec: &[f32]) -> Chunk {
    Chunk {
        doc: doc.into(),
        idx,
        year,
        vec: vec.to_vec(),
    }
}

/// Writes `chunks` as an apply-model `embeddings` file.
pub fn write_embeddings(path: &Path, chunks: &[Chunk]) {
    let dim = chunks[0].vec.len();
    let prov = Provenance::new("test", "0", serde_json::Value::Null);
    let mut w = EmbeddingsWriter::create(path, dim, &prov).unwrap();
    let keys: Vec<ChunkKey> = chunks
        .iter()
        .map(|c| ChunkKey {
            doc_id: c.doc.clone(),
            chunk_idx: c.idx,
            year: c.year,
        })
        .collect();
    let matrix: Vec<f32> = chunks.iter().flat_map(|c| c.vec.clone()).collect();
    w.write(&keys, &matrix).unwrap();
    w.finish().unwrap();
}

pub fn options(embeddings: &Path, out: &Path, grid: Grid) -> Options {
    Options {
        input: Input::Embeddings(embeddings.to_path_buf()),
        out_dir: out.to_path_buf(),
        train: None,
        authors: None,
        quotes: None,
        from_year: None,
        to_year: None,
        grid,
        distance: Distance::Cosine,
        task: None,
    }
}

/// Chunk rows keyed by (doc, chunk, fraction, filter, radius).
pub type ChunkKeyed = HashMap<(String, i32, String, String, i32), [Option<f64>; 3]>;

pub fn chunk_table(out: &Path) -> ChunkKeyed {
    read_chunks(&out.join("chunks.parquet"))
        .unwrap()
        .into_iter()
        .map(|r: ChunkMeasure| {
            (
                (
                    r.doc_id,
                    r.chunk_idx,
                    format!("{:?}", r.fraction),
                    r.filter,
                    r.radius,
                ),
                [r.precocity, r.novelty, r.transience],
            )
        })
        .collect()
}

/// documents.tsv rows keyed by (docid, fraction, filter, radius, chunks_used) →
/// (date, num_chunks, [precocity, novelty, transience]).
pub type DocKeyed = HashMap<(String, String, String, i32, String), (i32, i32, [Option<f64>; 3])>;

pub fn doc_table(out: &Path) -> DocKeyed {
    let text = std::fs::read_to_string(out.join("documents.tsv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "docid\tdate\tnum_chunks\tfraction_compared\tfiltered\ttime_radius\tchunks_used\tprecocity\tnovelty\ttransience"
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let num = |s: &str| (s != "nan").then(|| s.parse::<f64>().unwrap());
            (
                (
                    f[0].to_string(),
                    f[3].to_string(),
                    f[4].to_string(),
                    f[5].parse().unwrap(),
                    f[6].to_string(),
                ),
                (
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                    [num(f[7]), num(f[8]), num(f[9])],
                ),
            )
        })
        .collect()
}

/// Every file of `dir` (recursively, hidden lock files aside) with its bytes.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.file_name().unwrap().to_string_lossy().starts_with('.') {
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// A deterministic pseudo-random corpus: `docs_per_year` documents in each of `years`, 1–4
/// chunks each (numbering with gaps in some), `dim`-dimensional vectors around a shared
/// direction (so cosines spread over (−0.2, 0.95) rather than crowding at 0) drifting by year.
pub fn random_corpus(years: &[i32], docs_per_year: usize, dim: usize, seed: u64) -> Vec<Chunk> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) as f32 // [0, 1)
    };
    let mut out = Vec::new();
    for &y in years {
        for d in 0..docs_per_year {
            let doc = format!("d{y}-{d}");
            let n = 1 + (next() * 4.0) as i32;
            let gap = if d % 3 == 1 { 2 } else { 1 };
            for c in 0..n {
                let vec: Vec<f32> = (0..dim)
                    .map(|j| {
                        let base = if j == 0 { 1.5 } else { 0.0 };
                        let drift = if j == 1 {
                            (y - 1900) as f32 * 0.05
                        } else {
                            0.0
                        };
                        base + drift + (next() - 0.5) * 2.0
                    })
                    .collect();
                out.push(Chunk {
                    doc: doc.clone(),
                    idx: c * gap,
                    year: y,
                    vec,
                });
            }
        }
    }
    out
}
