//! The chunks to compare: an index of every document (year, chunk numbers) read from the
//! inputs' key columns, and a window of years whose vectors are loaded, so memory follows the
//! ±radius window rather than the corpus.
//!
//! Inputs: apply-model's `embeddings` Parquet (a file, or a folder of shards: `*.parquet`
//! except its `.ids.parquet` exports and hidden temp files; `.parts/` folders and TSV/npy
//! exports are ignored), or the reference layout (`{decade}.tsv` files of `paperId,
//! chunknumber, embedding_1…D` plus a metadata TSV with `paperId` and `year`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use common::parquet_io::{ColumnKind, ColumnSpec, TableReader};
use common::schema;
use common::tables::EmbeddingsReader;
use common::{Error, Result};

use crate::Distance;

/// Where the vectors come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// An `embeddings` Parquet file or a folder of them.
    Embeddings(PathBuf),
    /// The reference layout: a folder of `{decade}.tsv` and the metadata TSV.
    Reference { dir: PathBuf, metadata: PathBuf },
}

/// One document of the index.
#[derive(Debug, Clone)]
pub struct DocInfo {
    pub year: i32,
    /// Number of chunks (any numbering: gaps are kept, see `Options`).
    pub chunks: usize,
}

/// Every document and which input file holds which years, from a pass over the key columns.
pub struct Corpus {
    pub input: Input,
    pub files: Vec<PathBuf>,
    /// Years each file holds rows of.
    file_years: Vec<BTreeSet<i32>>,
    pub docs: HashMap<String, DocInfo>,
    /// year → chunks.
    pub year_chunks: BTreeMap<i32, usize>,
    /// Reference layout only: paperId → year.
    metadata: HashMap<String, i32>,
    /// Reference layout: chunk rows whose paperId is not in the metadata (skipped).
    pub rows_without_metadata: u64,
    pub distance: Distance,
}

impl Corpus {
    /// Lists the input files and reads their keys: documents, years, chunk counts. Duplicate
    /// chunks and a document in two years are errors naming the file and row.
    pub fn open(input: &Input, distance: Distance) -> Result<Corpus> {
        let (files, metadata) = match input {
            Input::Embeddings(path) => (embedding_files(path)?, HashMap::new()),
            Input::Reference { dir, metadata } => (tsv_files(dir)?, read_metadata(metadata)?),
        };
        let mut corpus = Corpus {
            input: input.clone(),
            files,
            file_years: Vec::new(),
            docs: HashMap::new(),
            year_chunks: BTreeMap::new(),
            metadata,
            rows_without_metadata: 0,
            distance,
        };
        let mut seen: HashMap<(String, i32), (usize, u64)> = HashMap::new();
        for fi in 0..corpus.files.len() {
            let mut years = BTreeSet::new();
            let mut keys = Vec::new();
            corpus.read_keys(fi, |doc, idx, year, row| {
                keys.push((doc.to_string(), idx, year, row));
                Ok(())
            })?;
            for (doc, idx, year, row) in keys {
                let path = &corpus.files[fi];
                if let Some((pf, prow)) = seen.insert((doc.clone(), idx), (fi, row)) {
                    return Err(bad_row(
                        path,
                        row,
                        format!(
                            "chunk {idx} of document {doc:?} appears twice (first in {} row {prow})",
                            corpus.files[pf].display()
                        ),
                    ));
                }
                let info = corpus
                    .docs
                    .entry(doc.clone())
                    .or_insert(DocInfo { year, chunks: 0 });
                if info.year != year {
                    return Err(bad_row(
                        path,
                        row,
                        format!(
                            "document {doc:?} has year {year} here and {} elsewhere",
                            info.year
                        ),
                    ));
                }
                info.chunks += 1;
                *corpus.year_chunks.entry(year).or_default() += 1;
                years.insert(year);
            }
            corpus.file_years.push(years);
        }
        if corpus.docs.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: no chunks to compare",
                input_name(input).display()
            )));
        }
        Ok(corpus)
    }

    /// Calls `f(doc, chunk_idx, year, file_row)` for every row of file `fi`.
    fn read_keys(
        &mut self,
        fi: usize,
        mut f: impl FnMut(&str, i32, i32, u64) -> Result<()>,
    ) -> Result<()> {
        let path = self.files[fi].clone();
        match self.input {
            Input::Embeddings(_) => {
                use schema::embeddings::*;
                let specs = [
                    ColumnSpec {
                        name: DOC_ID,
                        kind: ColumnKind::Utf8,
                        optional: false,
                    },
                    ColumnSpec {
                        name: CHUNK_IDX,
                        kind: ColumnKind::Int32,
                        optional: false,
                    },
                    ColumnSpec {
                        name: YEAR,
                        kind: ColumnKind::Int32,
                        optional: false,
                    },
                ];
                let mut reader = TableReader::open(&path, TABLE, &specs)?;
                while let Some(b) = reader.next_batch()? {
                    for i in 0..b.len() {
                        f(
                            b.text(DOC_ID, i)?,
                            b.i32(CHUNK_IDX, i)?,
                            b.i32(YEAR, i)?,
                            b.file_row(i),
                        )?;
                    }
                }
            }
            Input::Reference { .. } => {
                let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
                for (line_no, line) in BufReader::new(file).lines().enumerate() {
                    let line = line.map_err(|e| Error::io(&path, e))?;
                    let mut fields = line.split('\t');
                    let doc = fields.next().unwrap_or("").trim_matches('\0');
                    if doc == "paperId" || line.trim().is_empty() {
                        continue;
                    }
                    let idx = parse_chunk_number(&path, line_no, fields.next())?;
                    match self.metadata.get(doc) {
                        Some(&year) => f(doc, idx, year, line_no as u64 + 1)?,
                        None => self.rows_without_metadata += 1,
                    }
                }
            }
        }
        Ok(())
    }

    /// Corpus years, ascending.
    pub fn years(&self) -> Vec<i32> {
        self.year_chunks.keys().copied().collect()
    }

    /// Loads the vectors of `years` (those the corpus has) into blocks, reading only the files
    /// that hold them. Vectors are checked (finite; non-zero; for KL, positive) and normalised
    /// (unit L2 for cosine, unit sum for KL); `renormalised` counts those that were not already.
    pub fn load(
        &self,
        years: &BTreeSet<i32>,
        dim: &mut Option<(usize, PathBuf)>,
        renormalised: &mut u64,
    ) -> Result<Vec<YearBlock>> {
        let mut rows: BTreeMap<i32, Vec<(String, i32, Vec<f32>)>> = BTreeMap::new();
        for (fi, path) in self.files.iter().enumerate() {
            if self.file_years[fi].is_disjoint(years) {
                continue;
            }
            self.read_vectors(fi, |doc, idx, year, v, row| {
                if !years.contains(&year) {
                    return Ok(());
                }
                match dim {
                    None => *dim = Some((v.len(), path.clone())),
                    Some((d, first)) if *d != v.len() => {
                        return Err(bad_row(
                            path,
                            row,
                            format!(
                                "{}-dimensional vector, but {} has {d}",
                                v.len(),
                                first.display()
                            ),
                        ))
                    }
                    _ => {}
                }
                let mut v = v.to_vec();
                if normalise(&mut v, self.distance).map_err(|reason| bad_row(path, row, reason))? {
                    *renormalised += 1;
                }
                rows.entry(year)
                    .or_default()
                    .push((doc.to_string(), idx, v));
                Ok(())
            })?;
        }
        Ok(rows
            .into_iter()
            .map(|(year, rows)| YearBlock::new(year, rows, self.distance))
            .collect())
    }

    fn read_vectors(
        &self,
        fi: usize,
        mut f: impl FnMut(&str, i32, i32, &[f32], u64) -> Result<()>,
    ) -> Result<()> {
        let path = &self.files[fi];
        match self.input {
            Input::Embeddings(_) => {
                let mut reader = EmbeddingsReader::open(path)?;
                let mut row = 0u64;
                while let Some((keys, matrix)) = reader.next_rows()? {
                    let dim = matrix.len() / keys.len().max(1);
                    for (k, v) in keys.iter().zip(matrix.chunks_exact(dim.max(1))) {
                        f(&k.doc_id, k.chunk_idx, k.year, v, row)?;
                        row += 1;
                    }
                }
            }
            Input::Reference { .. } => {
                let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
                let mut v = Vec::new();
                for (line_no, line) in BufReader::new(file).lines().enumerate() {
                    let line = line.map_err(|e| Error::io(path, e))?;
                    let line = line.replace('\0', "");
                    let mut fields = line.trim_end_matches(['\r', '\n']).split('\t');
                    let doc = fields.next().unwrap_or("");
                    if doc == "paperId" || line.trim().is_empty() {
                        continue;
                    }
                    let idx = parse_chunk_number(path, line_no, fields.next())?;
                    let Some(&year) = self.metadata.get(doc) else {
                        continue;
                    };
                    v.clear();
                    for (j, x) in fields.enumerate() {
                        let x: f32 = x.trim().parse().map_err(|_| Error::BadLine {
                            path: path.clone(),
                            line: line_no as u64 + 1,
                            reason: format!("embedding_{}: {x:?} is not a number", j + 1),
                        })?;
                        v.push(x);
                    }
                    f(doc, idx, year, &v, line_no as u64 + 1)?;
                }
            }
        }
        Ok(())
    }
}

fn input_name(input: &Input) -> &Path {
    match input {
        Input::Embeddings(p) => p,
        Input::Reference { dir, .. } => dir,
    }
}

fn bad_row(path: &Path, row: u64, reason: String) -> Error {
    Error::BadValue {
        path: path.into(),
        row,
        column: schema::embeddings::EMBEDDING,
        reason,
    }
}

fn parse_chunk_number(path: &Path, line_no: usize, field: Option<&str>) -> Result<i32> {
    field
        .and_then(|f| f.trim().parse().ok())
        .ok_or_else(|| Error::BadLine {
            path: path.into(),
            line: line_no as u64 + 1,
            reason: format!("chunknumber {:?} is not an integer", field.unwrap_or("")),
        })
}

/// Checks and normalises one vector in place; returns whether it needed normalising.
fn normalise(v: &mut [f32], distance: Distance) -> std::result::Result<bool, String> {
    if let Some(j) = v.iter().position(|x| !x.is_finite()) {
        return Err(format!("value {j} is {}", v[j]));
    }
    let norm = match distance {
        Distance::Cosine => v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt(),
        Distance::Kld => {
            if let Some(j) = v.iter().position(|&x| x <= 0.0) {
                return Err(format!(
                    "value {j} is {}: KL divergence needs strictly positive probabilities (topic models' smoothed distributions are)",
                    v[j]
                ));
            }
            v.iter().map(|&x| x as f64).sum::<f64>()
        }
    };
    if norm == 0.0 {
        return Err("zero vector (no direction to compare)".into());
    }
    v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
    Ok((norm - 1.0).abs() > 1e-3)
}

fn embedding_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        return Ok(vec![path.into()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
        let entry = entry.map_err(|e| Error::io(path, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file
            && name.ends_with(".parquet")
            && !name.starts_with('.')
            && !name.ends_with(".ids.parquet")
        {
            files.push(entry.path());
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no embeddings *.parquet files",
            path.display()
        )));
    }
    Ok(files)
}

fn tsv_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name
            .strip_suffix(".tsv")
            .is_some_and(|s| s.parse::<i32>().is_ok())
        {
            files.push(entry.path());
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no {{decade}}.tsv files",
            dir.display()
        )));
    }
    Ok(files)
}

/// paperId → year from a TSV with `paperId` and `year` columns (others ignored).
fn read_metadata(path: &Path) -> Result<HashMap<String, i32>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut lines = BufReader::new(file).lines();
    let header = match lines.next() {
        Some(h) => h.map_err(|e| Error::io(path, e))?,
        None => {
            return Err(Error::Invalid(format!(
                "{}: empty metadata file",
                path.display()
            )))
        }
    };
    let cols: Vec<&str> = header.split('\t').map(str::trim).collect();
    let find = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .ok_or_else(|| Error::BadLine {
                path: path.into(),
                line: 1,
                reason: format!("no `{name}` column (found: {})", cols.join(", ")),
            })
    };
    let (id_col, year_col) = (find("paperId")?, find("year")?);
    let mut out = HashMap::new();
    for (i, line) in lines.enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let bad = |reason: String| Error::BadLine {
            path: path.into(),
            line: i as u64 + 2,
            reason,
        };
        let id = fields
            .get(id_col)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty());
        let Some(id) = id else {
            return Err(bad("empty paperId".into()));
        };
        let year = fields.get(year_col).map(|s| s.trim()).unwrap_or("");
        // pandas writes float years (1950.0) when a column has gaps.
        let year = year.parse::<i32>().ok().or_else(|| {
            year.parse::<f64>()
                .ok()
                .filter(|y| y.fract() == 0.0)
                .map(|y| y as i32)
        });
        let Some(year) = year else {
            return Err(bad(format!(
                "year {:?} is not an integer",
                fields.get(year_col)
            )));
        };
        out.insert(id.to_string(), year);
    }
    Ok(out)
}

/// The vectors of one year, documents sorted by id and chunks by number.
pub struct YearBlock {
    pub year: i32,
    pub dim: usize,
    /// rows × dim, row-major: unit vectors (cosine) or probabilities (KL).
    pub centre: Vec<f32>,
    /// KL only: ln of the probabilities, the comparison side of the product.
    log: Option<Vec<f32>>,
    /// KL only: Σ p ln p per row.
    neg_entropy: Vec<f64>,
    pub chunk_idx: Vec<i32>,
    /// (doc id, first row, rows).
    docs: Vec<(String, usize, usize)>,
    doc_of_row: Vec<u32>,
    doc_index: HashMap<String, usize>,
}

impl YearBlock {
    fn new(year: i32, mut rows: Vec<(String, i32, Vec<f32>)>, distance: Distance) -> YearBlock {
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let dim = rows.first().map_or(0, |r| r.2.len());
        let mut block = YearBlock {
            year,
            dim,
            centre: Vec::with_capacity(rows.len() * dim),
            log: None,
            neg_entropy: Vec::new(),
            chunk_idx: Vec::with_capacity(rows.len()),
            docs: Vec::new(),
            doc_of_row: Vec::with_capacity(rows.len()),
            doc_index: HashMap::new(),
        };
        for (i, (doc, idx, v)) in rows.into_iter().enumerate() {
            if block.docs.last().is_none_or(|d| d.0 != doc) {
                block.doc_index.insert(doc.clone(), block.docs.len());
                block.docs.push((doc, i, 0));
            }
            block.docs.last_mut().expect("pushed").2 += 1;
            block.doc_of_row.push((block.docs.len() - 1) as u32);
            block.chunk_idx.push(idx);
            block.centre.extend_from_slice(&v);
        }
        if distance == Distance::Kld {
            block.log = Some(block.centre.iter().map(|&p| p.ln()).collect());
            block.neg_entropy = block
                .centre
                .chunks_exact(dim.max(1))
                .map(|p| p.iter().map(|&x| x as f64 * (x as f64).ln()).sum())
                .collect();
        }
        block
    }

    pub fn rows(&self) -> usize {
        self.chunk_idx.len()
    }

    /// The comparison side of the product.
    pub fn compare(&self) -> &[f32] {
        self.log.as_deref().unwrap_or(&self.centre)
    }

    pub fn neg_entropy(&self, row: usize) -> f64 {
        self.neg_entropy.get(row).copied().unwrap_or(0.0)
    }

    pub fn doc_of_row(&self, row: usize) -> usize {
        self.doc_of_row[row] as usize
    }

    pub fn doc_id(&self, doc: usize) -> &str {
        &self.docs[doc].0
    }

    /// (doc id, first row, rows) of every document, sorted by id.
    pub fn docs(&self) -> &[(String, usize, usize)] {
        &self.docs
    }

    /// Rows of document `id`, if it is in this year.
    pub fn doc_rows(&self, id: &str) -> Option<std::ops::Range<usize>> {
        self.doc_index
            .get(id)
            .map(|&d| self.docs[d].1..self.docs[d].1 + self.docs[d].2)
    }

    /// Row of chunk `idx` of document `id`, if present.
    pub fn chunk_row(&self, id: &str, idx: i32) -> Option<usize> {
        let rows = self.doc_rows(id)?;
        let start = rows.start;
        self.chunk_idx[rows]
            .binary_search(&idx)
            .ok()
            .map(|i| start + i)
    }
}

/// Loaded years, slid forward as centre years advance.
#[derive(Default)]
pub struct Window {
    years: BTreeMap<i32, YearBlock>,
}

impl Window {
    pub fn get(&self, year: i32) -> Option<&YearBlock> {
        self.years.get(&year)
    }

    /// Makes the window hold exactly the corpus years in `lo..=hi` (loading what is missing,
    /// dropping the rest). Missing years are loaded up to `ahead` (≥ hi) so files are not
    /// re-read for every centre year.
    pub fn slide(
        &mut self,
        corpus: &Corpus,
        lo: i32,
        hi: i32,
        ahead: i32,
        loader: &mut Loader,
    ) -> Result<()> {
        self.years.retain(|&y, _| y >= lo);
        let have = |y: &i32| self.years.contains_key(y);
        let missing = corpus.year_chunks.range(lo..=hi).any(|(y, _)| !have(y));
        if missing {
            let want: BTreeSet<i32> = corpus
                .year_chunks
                .range(lo..=ahead.max(hi))
                .map(|(y, _)| *y)
                .filter(|y| !have(y))
                .collect();
            for block in corpus.load(&want, &mut loader.dim, &mut loader.renormalised)? {
                self.years.insert(block.year, block);
            }
        }
        Ok(())
    }
}

/// What loading has learned so far: the vectors' dimension (and the file it came from) and how
/// many vectors were normalised.
#[derive(Default)]
pub struct Loader {
    pub dim: Option<(usize, PathBuf)>,
    pub renormalised: u64,
}
