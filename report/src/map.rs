//! The "embeddings over time" section: a fixed-size seeded sample of chunks, embedded by the
//! base model (here, with the encoder) and by the tuned model (read from apply-model's
//! shards), each projected to 2-D by PCA (linfa), coloured by year, with the path of the
//! per-decade centroids on top.
//!
//! Axes convention, the same for both maps: each principal component's sign is chosen so that
//! it correlates non-negatively with the year (later chunks to the right and up where the
//! component tracks time at all), so two maps of one corpus can be compared by eye.

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Int32Array, StringArray};
use common::parquet_io::TableWriter;
use common::provenance::Provenance;
use common::schema;
use common::tables::EmbeddingsReader;
use encoder::SentenceEncoder;
use linfa::traits::{Fit, Predict};
use linfa::DatasetBase;
use linfa_reduction::Pca;
use ndarray::{Array2, Axis};

use crate::corpus::{bin_name, bin_of, sample_key, year_bin_width, ChunkId, CorpusScan};
use crate::html::{self, Content, Figure, Section};
use crate::inputs::{RunInputs, EMBEDDINGS};
use crate::{figures, Error, Options, Result};

/// One row of a map table.
#[derive(Debug, Clone, PartialEq)]
pub struct MapRow {
    pub doc_id: String,
    pub chunk_idx: i32,
    pub year: i32,
    pub x: f32,
    pub y: f32,
}

/// A map table to write beside the page (`map-base.parquet`, `map-tuned.parquet`).
#[derive(Debug, Clone)]
pub struct MapFile {
    pub file: String,
    pub rows: Vec<MapRow>,
}

impl MapFile {
    /// Writes the table (atomically, with provenance); returns the row count.
    pub fn write(&self, path: &Path, provenance: &Provenance) -> Result<u64> {
        let mut w =
            TableWriter::create(path, schema::map_schema(), schema::map::TABLE, provenance)?;
        let r = &self.rows;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                r.iter().map(|m| m.doc_id.as_str()),
            )),
            Arc::new(Int32Array::from_iter_values(r.iter().map(|m| m.chunk_idx))),
            Arc::new(Int32Array::from_iter_values(r.iter().map(|m| m.year))),
            Arc::new(Float32Array::from_iter_values(r.iter().map(|m| m.x))),
            Arc::new(Float32Array::from_iter_values(r.iter().map(|m| m.y))),
        ];
        w.write_columns(cols)?;
        Ok(w.finish()?)
    }
}

/// A model's 2-D projection of the sample.
#[derive(Debug, Clone)]
pub struct Projection {
    /// (x, y, year) per sampled chunk, in sample order.
    pub points: Vec<(f64, f64, i32)>,
    /// Share of the total variance along each axis.
    pub explained: [f64; 2],
    /// (bin start, x, y, chunks) per year bin.
    pub centroids: Vec<(i32, f64, f64, usize)>,
}

/// PCA to 2-D of `rows × dim` vectors, signs fixed by correlation with `years`.
pub fn project(vectors: &[f32], dim: usize, years: &[i32], width: i32) -> Result<Projection> {
    let n = years.len();
    let x = Array2::from_shape_vec((n, dim), vectors.iter().map(|&v| v as f64).collect())
        .map_err(|e| Error::Pca(e.to_string()))?;
    let pca = Pca::params(2)
        .fit(&DatasetBase::from(x.clone()))
        .map_err(|e| Error::Pca(e.to_string()))?;
    let mut proj: Array2<f64> = pca.predict(&x);
    // Explained share against the total variance of all dimensions (linfa's ratio is relative
    // to the two components kept).
    let centred = &x - &x.mean_axis(Axis(0)).expect("n > 0");
    let total: f64 = centred.iter().map(|v| v * v).sum();
    let mut explained = [0.0; 2];
    let year_mean = years.iter().map(|&y| y as f64).sum::<f64>() / n as f64;
    for (k, e) in explained.iter_mut().enumerate() {
        let mut col = proj.column_mut(k);
        let mean = col.mean().unwrap_or(0.0);
        col.mapv_inplace(|v| v - mean);
        let cov: f64 = col
            .iter()
            .zip(years)
            .map(|(v, &y)| v * (y as f64 - year_mean))
            .sum();
        if cov < 0.0 {
            col.mapv_inplace(|v| -v);
        }
        *e = if total > 0.0 {
            col.iter().map(|v| v * v).sum::<f64>() / total
        } else {
            0.0
        };
    }
    let points: Vec<(f64, f64, i32)> = (0..n)
        .map(|i| (proj[[i, 0]], proj[[i, 1]], years[i]))
        .collect();
    let mut sums: BTreeMap<i32, (f64, f64, usize)> = BTreeMap::new();
    for &(px, py, y) in &points {
        let s = sums.entry(bin_of(y, width)).or_default();
        s.0 += px;
        s.1 += py;
        s.2 += 1;
    }
    let centroids = sums
        .into_iter()
        .map(|(b, (sx, sy, c))| (b, sx / c as f64, sy / c as f64, c))
        .collect();
    Ok(Projection {
        points,
        explained,
        centroids,
    })
}

/// The sample as (id, year, text if known): the corpus scan's, or drawn from the embedding
/// keys with the same sampling key when no corpus was given.
fn sample(
    scan: Option<&CorpusScan>,
    inputs: &RunInputs,
    opts: &Options,
) -> Result<Vec<(ChunkId, i32, Option<String>)>> {
    if let Some(scan) = scan {
        return Ok(scan
            .sample
            .iter()
            .map(|s| {
                (
                    (s.doc_id.clone(), s.chunk_idx),
                    s.year,
                    Some(s.text.clone()),
                )
            })
            .collect());
    }
    let mut heap: BinaryHeap<(u64, String, i32, i32)> = BinaryHeap::new();
    for file in &inputs.embeddings {
        let mut reader = EmbeddingsReader::open(file)?;
        while let Some((keys, _)) = reader.next_rows()? {
            for k in keys {
                let key = sample_key(opts.seed, &k.doc_id, k.chunk_idx);
                if heap.len() < opts.map_sample || heap.peek().is_some_and(|t| key < t.0) {
                    heap.push((key, k.doc_id, k.chunk_idx, k.year));
                    if heap.len() > opts.map_sample {
                        heap.pop();
                    }
                }
            }
        }
    }
    Ok(heap
        .into_sorted_vec()
        .into_iter()
        .map(|(_, d, c, y)| ((d, c), y, None))
        .collect())
}

/// (sample index, vector) of each sampled chunk found in the shards.
type Found = Vec<(usize, Vec<f32>)>;

/// The tuned model's vectors of the sampled chunks that the shards hold: (sample index, vector).
fn tuned_vectors(inputs: &RunInputs, index: &HashMap<ChunkId, usize>) -> Result<(Found, usize)> {
    let mut found = Vec::new();
    let mut dim = 0;
    for file in &inputs.embeddings {
        let mut reader = EmbeddingsReader::open(file)?;
        while let Some((keys, matrix)) = reader.next_rows()? {
            let d = reader.dim().unwrap_or(0);
            if dim != 0 && d != dim {
                return Err(Error::input(
                    file,
                    format!("embedding dimension {d}, other shards have {dim}"),
                ));
            }
            dim = d;
            for (i, k) in keys.into_iter().enumerate() {
                if let Some(&at) = index.get(&(k.doc_id, k.chunk_idx)) {
                    found.push((at, matrix[i * d..(i + 1) * d].to_vec()));
                }
            }
        }
    }
    found.sort_by_key(|f| f.0);
    found.dedup_by_key(|f| f.0);
    Ok((found, dim))
}

struct ModelMap {
    label: &'static str,
    file: &'static str,
    /// Sample indices drawn.
    members: Vec<usize>,
    projection: Projection,
}

pub fn section(inputs: &RunInputs, scan: Option<&CorpusScan>, opts: &Options) -> Result<Section> {
    const ID: &str = "embeddings";
    const TITLE: &str = "Embeddings over time";
    let have_base = inputs.base_model.is_some() && scan.is_some();
    if inputs.embeddings.is_empty() && !have_base {
        return Ok(Section::missing(
            ID,
            TITLE,
            format!(
                "no {EMBEDDINGS}/*.parquet in the run folder, and no base model with a corpus \
                 (--base-model, --corpus) to embed a sample"
            ),
        ));
    }
    let sample = sample(scan, inputs, opts)?;
    let width = year_bin_width(sample.iter().map(|s| s.1));
    let mut maps = Vec::new();
    if have_base {
        let base = inputs.base_model.as_deref().expect("checked");
        let texts: Vec<&str> = sample.iter().filter_map(|s| s.2.as_deref()).collect();
        tracing::info!(
            "embedding {} sampled chunks with the base model",
            texts.len()
        );
        let encoder = SentenceEncoder::load(base, &candle_core::Device::Cpu)?;
        let vectors = encoder.embed(&texts, 32)?;
        let years: Vec<i32> = sample.iter().map(|s| s.1).collect();
        maps.push(ModelMap {
            label: "base model",
            file: "map-base.parquet",
            members: (0..sample.len()).collect(),
            projection: project(&vectors, encoder.dim(), &years, width)?,
        });
    }
    let mut tuned_note = String::new();
    if !inputs.embeddings.is_empty() {
        let index: HashMap<ChunkId, usize> = sample
            .iter()
            .enumerate()
            .map(|(i, s)| (s.0.clone(), i))
            .collect();
        let (found, dim) = tuned_vectors(inputs, &index)?;
        if found.len() < sample.len() {
            tuned_note = format!(
                " The embedding shards hold {} of the {} sampled chunks; the tuned map shows \
                 those.",
                found.len(),
                sample.len()
            );
        }
        if found.len() >= 3 {
            let years: Vec<i32> = found.iter().map(|f| sample[f.0].1).collect();
            let flat: Vec<f32> = found.iter().flat_map(|f| f.1.iter().copied()).collect();
            maps.push(ModelMap {
                label: "tuned model",
                file: "map-tuned.parquet",
                members: found.iter().map(|f| f.0).collect(),
                projection: project(&flat, dim, &years, width)?,
            });
        }
    }
    if maps.is_empty() {
        return Ok(Section::missing(
            ID,
            TITLE,
            "fewer than 3 sampled chunks have embeddings",
        ));
    }

    let per = bin_name(width);
    let panels: Vec<figures::MapPanel> = maps
        .iter()
        .map(|m| figures::MapPanel {
            label: m.label,
            x_label: format!(
                "PC1 ({:.1} % of variance)",
                100.0 * m.projection.explained[0]
            ),
            y_label: format!(
                "PC2 ({:.1} % of variance)",
                100.0 * m.projection.explained[1]
            ),
            points: &m.projection.points,
            centroids: &[],
            centroid_label: format!("centroids per {per}"),
        })
        .collect();
    let centroid_paths: Vec<Vec<(i32, f64, f64)>> = maps
        .iter()
        .map(|m| {
            m.projection
                .centroids
                .iter()
                .map(|c| (c.0, c.1, c.2))
                .collect()
        })
        .collect();
    let panels: Vec<figures::MapPanel> = panels
        .into_iter()
        .zip(&centroid_paths)
        .map(|(p, c)| figures::MapPanel { centroids: c, ..p })
        .collect();
    let svg = figures::maps(
        "embeddings-map",
        &format!(
            "{} sampled chunks, PCA to 2-D, coloured by year",
            sample.len()
        ),
        &panels,
    )?;
    let mut h = String::new();
    let _ =
        writeln!(
        h,
        "<p>A seeded sample of <span class=\"map-sample\">{}</span> chunks (seed {}), embedded \
         by the {}, each projected to two dimensions by PCA. Each axis's sign is chosen so that it \
         grows with the year where it tracks time; the line joins the per-{per} centroids.{}</p>",
        sample.len(),
        opts.seed,
        maps.iter().map(|m| m.label).collect::<Vec<_>>().join(" and by the "),
        tuned_note
    );
    h.push_str("{fig:embeddings-map}");
    let mut rows = Vec::new();
    for m in &maps {
        for c in &m.projection.centroids {
            rows.push(vec![
                m.label.to_string(),
                c.0.to_string(),
                c.3.to_string(),
                format!("{:.4}", c.1),
                format!("{:.4}", c.2),
            ]);
        }
    }
    h.push_str(&html::data_table(
        &format!("Data: per-{per} centroids"),
        "embeddings-centroids",
        &["model", per, "chunks", "x", "y"],
        &rows,
    ));
    let files: Vec<String> = maps.iter().map(|m| m.file.to_string()).collect();
    let _ = writeln!(
        h,
        "<p>The coordinates are in {} (doc_id, chunk_idx, year, x, y), e.g. for \
         embedding-atlas.</p>",
        files
            .iter()
            .map(|f| format!("<code>{f}</code>"))
            .collect::<Vec<_>>()
            .join(" and ")
    );
    let map_files = maps
        .iter()
        .map(|m| MapFile {
            file: m.file.to_string(),
            rows: m
                .members
                .iter()
                .zip(&m.projection.points)
                .map(|(&i, p)| MapRow {
                    doc_id: sample[i].0 .0.clone(),
                    chunk_idx: sample[i].0 .1,
                    year: sample[i].1,
                    x: p.0 as f32,
                    y: p.1 as f32,
                })
                .collect(),
        })
        .collect();
    Ok(Section {
        id: ID,
        title: TITLE,
        content: Content::Shown {
            html: h,
            figures: vec![Figure {
                name: "embeddings-map".into(),
                svg,
                caption: format!(
                    "Left to right: {}. Colour: year (viridis, light = late); line: per-{per} \
                     centroids, first and last labelled.",
                    maps.iter().map(|m| m.label).collect::<Vec<_>>().join(", ")
                ),
            }],
            maps: map_files,
        },
    })
}
