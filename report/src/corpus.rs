//! The corpus section, and the one streaming pass over the corpus that every section needing
//! texts shares: documents and chunks per year, token lengths of a seeded sample, the embedding
//! map's seeded sample (with texts, for the base model), and the texts of named chunks
//! (precocity's top documents). Memory: the per-year counts, the set of document ids, and the
//! two samples — never the corpus.

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use common::chunk_files::ChunkFileLayout;
use common::corpus::{Corpus, EmptyTexts};
use encoder::{ModelFolder, TextTokenizer};

use crate::html::{self, Content, Figure, Section};
use crate::inputs::RunInputs;
use crate::{figures, Error, Options, Result};

/// A chunk's identity: (doc_id, chunk_idx).
pub type ChunkId = (String, i32);

/// One chunk of the embedding map's sample.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SampledChunk {
    /// The sampling key (smallest keys are kept).
    pub key: u64,
    pub doc_id: String,
    pub chunk_idx: i32,
    pub year: i32,
    pub text: String,
}

/// Token lengths of (a sample of) the corpus under the base model's tokenizer.
#[derive(Debug, Clone)]
pub struct TokenLengths {
    /// Untruncated lengths, special tokens included, of the chunks tokenized.
    pub lengths: Vec<u32>,
    /// The base model's `max_seq_length` (longer chunks are truncated when embedded).
    pub max_seq_length: usize,
    /// The base model folder's name.
    pub model: String,
}

/// What one pass over the corpus collected.
#[derive(Debug, Clone)]
pub struct CorpusScan {
    pub path: PathBuf,
    pub chunks: u64,
    pub documents: u64,
    /// year → (documents whose first chunk has this year, chunks).
    pub per_year: BTreeMap<i32, (u64, u64)>,
    pub lengths: Option<TokenLengths>,
    /// The map sample, in key order.
    pub sample: Vec<SampledChunk>,
    /// Texts of the chunks asked for.
    pub texts: HashMap<ChunkId, String>,
}

/// A chunk's pseudo-random sampling key: FNV-1a over (seed, doc_id, chunk_idx), finished with
/// splitmix64 so nearby ids spread. Independent of file order and thread count.
pub fn sample_key(seed: u64, doc_id: &str, chunk_idx: i32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = seed
        .to_le_bytes()
        .into_iter()
        .chain(doc_id.bytes())
        .chain([0xff])
        .chain(chunk_idx.to_le_bytes());
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Salt that makes the length sample independent of the map sample.
const LENGTH_SALT: u64 = 0x6c65_6e67_7468;

/// Reads the corpus once (streamed); see the module docs for what is kept.
pub fn scan(
    path: &Path,
    base_model: Option<&Path>,
    wanted: &HashSet<ChunkId>,
    opts: &Options,
) -> Result<CorpusScan> {
    let tokenizer = base_model.map(untruncated_tokenizer).transpose()?;
    // A folder is the chunk-file layout (metadata.tsv + <id>.txt), as in the other stages.
    let corpus = if path.is_dir() {
        Corpus::ChunkFiles(ChunkFileLayout::in_dir(path))
    } else {
        Corpus::Chunks(path.into())
    };
    // Unknown without a read for a chunk-file layout: then every chunk's length is counted.
    let total = corpus.known_rows();
    // Keep a chunk's length iff its key falls under this share of the key space.
    let share = total.map_or(1.0, |t| {
        (opts.length_sample as f64 / t.max(1) as f64).min(1.0)
    });
    let threshold = if share >= 1.0 {
        u64::MAX
    } else {
        (share * u64::MAX as f64) as u64
    };
    let bar = common::progress::bar(total.unwrap_or(0), "chunks");
    let mut seen_docs: HashSet<String> = HashSet::new();
    let mut per_year: BTreeMap<i32, (u64, u64)> = BTreeMap::new();
    let mut heap: BinaryHeap<SampledChunk> = BinaryHeap::new();
    let mut texts = HashMap::new();
    let mut lengths = Vec::new();
    let mut chunks = 0u64;
    // Every chunk counts, empty texts too: the page describes the corpus as it is, whatever
    // rule apply-model was given for them.
    corpus.for_each_batch_with::<Error>(4096, EmptyTexts::Embed, |rows| {
        let mut to_tokenize: Vec<&str> = Vec::new();
        for r in &rows {
            chunks += 1;
            let entry = per_year.entry(r.year).or_default();
            entry.1 += 1;
            if !seen_docs.contains(&r.doc_id) {
                seen_docs.insert(r.doc_id.clone());
                entry.0 += 1;
            }
            if tokenizer.is_some()
                && sample_key(opts.seed ^ LENGTH_SALT, &r.doc_id, r.chunk_idx) <= threshold
            {
                to_tokenize.push(&r.text);
            }
            let key = sample_key(opts.seed, &r.doc_id, r.chunk_idx);
            if heap.len() < opts.map_sample || heap.peek().is_some_and(|top| key < top.key) {
                heap.push(SampledChunk {
                    key,
                    doc_id: r.doc_id.clone(),
                    chunk_idx: r.chunk_idx,
                    year: r.year,
                    text: r.text.clone(),
                });
                if heap.len() > opts.map_sample {
                    heap.pop();
                }
            }
            let id = (r.doc_id.clone(), r.chunk_idx);
            if wanted.contains(&id) {
                texts.insert(id, r.text.clone());
            }
        }
        if let Some((tok, lower)) = &tokenizer {
            let inputs: Vec<String> = to_tokenize
                .iter()
                .map(|t| {
                    if *lower {
                        t.to_lowercase()
                    } else {
                        t.to_string()
                    }
                })
                .collect();
            let enc = tok.0.encode_batch(inputs, true).map_err(|e| Error::Input {
                path: base_model.unwrap_or(Path::new("")).into(),
                reason: format!("tokenizer: {e}"),
            })?;
            lengths.extend(enc.iter().map(|e| e.get_ids().len() as u32));
        }
        bar.set_position(chunks);
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(CorpusScan {
        path: path.into(),
        chunks,
        documents: seen_docs.len() as u64,
        per_year,
        lengths: tokenizer.map(|(t, _)| TokenLengths {
            lengths,
            max_seq_length: t.1,
            model: t.2,
        }),
        sample: heap.into_sorted_vec(),
        texts,
    })
}

/// (tokenizer without truncation, max_seq_length, model name), and whether to lowercase.
type Untruncated = ((tokenizers::Tokenizer, usize, String), bool);

fn untruncated_tokenizer(model: &Path) -> Result<Untruncated> {
    let folder = ModelFolder::load(model)?;
    let max = folder.sbert.max_seq_length;
    let tok = TextTokenizer::load(&folder.tokenizer_path(), max, folder.sbert.do_lower_case)?;
    let mut inner = tok.inner().clone();
    inner
        .with_truncation(None)
        .map_err(|e| Error::input(model, format!("tokenizer: {e}")))?;
    let name = model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(((inner, max, name), folder.sbert.do_lower_case))
}

/// Width in years of the bins of per-year figures: decades for a long corpus, else years.
pub fn year_bin_width(years: impl Iterator<Item = i32>) -> i32 {
    let (lo, hi) = years.fold((i32::MAX, i32::MIN), |(a, b), y| (a.min(y), b.max(y)));
    if lo <= hi && hi - lo >= 40 {
        10
    } else {
        1
    }
}

/// The start of `year`'s bin.
pub fn bin_of(year: i32, width: i32) -> i32 {
    year.div_euclid(width) * width
}

/// "decade" or "year", for labels.
pub fn bin_name(width: i32) -> &'static str {
    if width == 10 {
        "decade"
    } else {
        "year"
    }
}

/// Wilson score interval (95 %) of a proportion `k / n`.
pub fn wilson(k: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n, z) = (k as f64, n as f64, 1.959_964);
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The `q` quantile (nearest rank) of sorted values.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// The corpus section: documents and chunks per year, token lengths against max_seq_length.
pub fn section(scan: Option<&CorpusScan>, inputs: &RunInputs) -> Result<Section> {
    const ID: &str = "corpus";
    const TITLE: &str = "Corpus";
    let Some(scan) = scan else {
        return Ok(Section::missing(
            ID,
            TITLE,
            "no corpus given (--corpus chunks.parquet)",
        ));
    };
    let width = year_bin_width(scan.per_year.keys().copied());
    let mut bins: BTreeMap<i32, (u64, u64)> = BTreeMap::new();
    for (&y, &(d, c)) in &scan.per_year {
        let b = bins.entry(bin_of(y, width)).or_default();
        b.0 += d;
        b.1 += c;
    }
    let docs: Vec<(i32, u64)> = bins.iter().map(|(&k, v)| (k, v.0)).collect();
    let chunks: Vec<(i32, u64)> = bins.iter().map(|(&k, v)| (k, v.1)).collect();
    let per = bin_name(width);
    let first = scan.per_year.keys().next().copied().unwrap_or(0);
    let last = scan.per_year.keys().next_back().copied().unwrap_or(0);
    let mut h = String::new();
    let _ = writeln!(
        h,
        "<p><span class=\"documents\">{}</span> documents, <span class=\"chunks\">{}</span> chunks, \
         years {first}\u{2013}{last} (<code>{}</code>).</p>",
        scan.documents,
        scan.chunks,
        html::esc(&inputs.show(&scan.path)),
    );
    let mut figures = vec![Figure {
        name: "corpus-per-year".into(),
        svg: figures::count_panels(
            "corpus-per-year",
            &format!("Documents and chunks per {per}"),
            &format!("{per} (start year)"),
            width,
            &[
                ("documents", docs.as_slice()),
                ("chunks", chunks.as_slice()),
            ],
        )?,
        caption: format!("Documents (by the year of their first chunk) and chunks per {per}."),
    }];
    h.push_str("{fig:corpus-per-year}");
    let rows: Vec<Vec<String>> = bins
        .iter()
        .map(|(k, v)| vec![k.to_string(), v.0.to_string(), v.1.to_string()])
        .collect();
    h.push_str(&html::data_table(
        &format!("Data: documents and chunks per {per}"),
        "corpus-per-year",
        &[per, "documents", "chunks"],
        &rows,
    ));
    match &scan.lengths {
        None => {
            let _ = writeln!(
                h,
                "<p class=\"note\">Token lengths not shown: they need the base model's tokenizer \
                 (--base-model).</p>"
            );
        }
        Some(t) => {
            let (text, fig) = lengths_part(t, scan.chunks)?;
            h.push_str(&text);
            figures.push(fig);
        }
    }
    Ok(Section {
        id: ID,
        title: TITLE,
        content: Content::Shown {
            html: h,
            figures,
            maps: Vec::new(),
        },
    })
}

fn lengths_part(t: &TokenLengths, chunks: u64) -> Result<(String, Figure)> {
    let mut sorted = t.lengths.clone();
    sorted.sort_unstable();
    let n = sorted.len() as u64;
    let max_len = t.max_seq_length as u32;
    let truncated = sorted.iter().filter(|&&l| l > max_len).count() as u64;
    let sampled = n < chunks;
    let mut h = String::new();
    let (lo, hi) = wilson(truncated, n);
    let interval = if sampled {
        format!(
            " (95 % interval {:.1}\u{2013}{:.1} %)",
            100.0 * lo,
            100.0 * hi
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        h,
        "<p>Token lengths under the base model's tokenizer ({model}; special tokens included, \
         before truncation) of <span class=\"tokenized\">{n}</span> chunks{of}: median {med}, \
         90th percentile {p90}, longest {longest}. <span class=\"truncated\">{truncated}</span> \
         chunks (<span class=\"truncated-share\">{share}</span>{interval}) are longer than \
         max_seq_length <span class=\"max-seq-length\">{max_len}</span> and lose their end when \
         embedded.</p>",
        model = html::esc(&t.model),
        of = if sampled {
            format!(" (a seeded sample of the {chunks})")
        } else {
            String::new()
        },
        med = quantile(&sorted, 0.5).unwrap_or(0),
        p90 = quantile(&sorted, 0.9).unwrap_or(0),
        longest = sorted.last().copied().unwrap_or(0),
        share = html::pct(truncated, n),
    );
    let longest = sorted.last().copied().unwrap_or(0).max(max_len);
    let bw: u32 = if longest <= 1024 { 16 } else { 64 };
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    for &l in &sorted {
        *counts.entry(l / bw * bw).or_default() += 1;
    }
    let bins: Vec<(f64, f64, u64)> = counts
        .iter()
        .map(|(&a, &c)| (a as f64, (a + bw) as f64, c))
        .collect();
    let label = format!("max_seq_length = {max_len}");
    let fig = Figure {
        name: "corpus-token-lengths".into(),
        svg: figures::histogram(
            "corpus-token-lengths",
            "Chunk length in tokens",
            "tokens per chunk (before truncation)",
            "chunks",
            &bins,
            Some((max_len as f64, &label)),
        )?,
        caption: format!(
            "Chunk lengths in {bw}-token bins; the dashed line is the model's max_seq_length."
        ),
    };
    h.push_str("{fig:corpus-token-lengths}");
    let rows: Vec<Vec<String>> = counts
        .iter()
        .map(|(&a, &c)| vec![format!("{a}\u{2013}{}", a + bw - 1), c.to_string()])
        .collect();
    h.push_str(&html::data_table(
        "Data: chunks per token-length bin",
        "corpus-token-lengths",
        &["tokens", "chunks"],
        &rows,
    ));
    Ok((h, fig))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_matches_hand_computed_values() {
        // 10 of 100: 0.0552–0.1744 (Wilson 1927, z = 1.96).
        let (lo, hi) = wilson(10, 100);
        assert!(
            (lo - 0.0552).abs() < 1e-4 && (hi - 0.1744).abs() < 1e-4,
            "{lo} {hi}"
        );
        assert_eq!(wilson(0, 0), (0.0, 1.0));
        assert_eq!(wilson(0, 50).0, 0.0);
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(quantile(&v, 0.5), Some(5));
        assert_eq!(quantile(&v, 0.9), Some(9));
        assert_eq!(quantile(&v, 1.0), Some(10));
        assert_eq!(quantile(&v, 0.0), Some(1));
        assert_eq!(quantile::<i32>(&[], 0.5), None);
    }

    #[test]
    fn sample_keys_depend_on_seed_and_id_only() {
        assert_eq!(sample_key(42, "a", 1), sample_key(42, "a", 1));
        assert_ne!(sample_key(42, "a", 1), sample_key(43, "a", 1));
        assert_ne!(sample_key(42, "a", 1), sample_key(42, "a", 2));
        // The separator keeps ("a1", 0) and ("a", …) apart.
        assert_ne!(sample_key(42, "ab", 0), sample_key(42, "a", 0));
    }

    #[test]
    fn year_bins() {
        assert_eq!(year_bin_width([1790, 2026].into_iter()), 10);
        assert_eq!(year_bin_width([2000, 2010].into_iter()), 1);
        assert_eq!(bin_of(1799, 10), 1790);
        assert_eq!(bin_of(-5, 10), -10);
    }
}
