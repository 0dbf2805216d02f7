//! The stage against a plain loop implementation of the spec (written here from the issue and
//! the reference worker's semantics, pair by pair in f64), and against hand-computed cases.

mod support;

use std::collections::{HashMap, HashSet};
use std::io::Write;

use precocity::engine::COS_CLAMP;
use precocity::{run, Distance, Filter, Grid, TrainDocs};
use support::*;

/// The plain loop: for each centre chunk, filter and comparison year, every distance in a list,
/// sorted, the ⌈f·N⌉ smallest averaged; novelty/transience as means of defined year means;
/// documents from chunks sorted by (precocity, novelty, transience) descending.
struct Oracle<'a> {
    chunks: Vec<Chunk>,
    train: &'a HashSet<String>,
    authors: &'a HashMap<String, HashSet<String>>,
    quotes: &'a HashMap<String, HashSet<(String, i32)>>,
    distance: Distance,
}

impl Oracle<'_> {
    /// The stage normalises in f64 and stores f32; so does the oracle, then works in f64.
    fn normalised(chunks: &[Chunk], distance: Distance) -> Vec<Chunk> {
        chunks
            .iter()
            .map(|c| {
                let norm = match distance {
                    Distance::Cosine => c
                        .vec
                        .iter()
                        .map(|&x| x as f64 * x as f64)
                        .sum::<f64>()
                        .sqrt(),
                    Distance::Kld => c.vec.iter().map(|&x| x as f64).sum::<f64>(),
                };
                let mut c = c.clone();
                c.vec
                    .iter_mut()
                    .for_each(|x| *x = (*x as f64 / norm) as f32);
                c
            })
            .collect()
    }

    fn dist(&self, p: &[f32], c: &[f32]) -> f64 {
        match self.distance {
            Distance::Cosine => {
                let s: f64 = p.iter().zip(c).map(|(&a, &b)| a as f64 * b as f64).sum();
                let lim = COS_CLAMP as f64;
                -s.clamp(-lim, lim).atanh()
            }
            Distance::Kld => p
                .iter()
                .zip(c)
                .map(|(&a, &b)| a as f64 * (a as f64 / b as f64).ln())
                .sum(),
        }
    }

    fn excluded(&self, filter: Filter, centre: &str, c: &Chunk) -> bool {
        (filter >= Filter::Train && self.train.contains(&c.doc))
            || (filter >= Filter::TrainAuth
                && self.authors.get(centre).is_some_and(|a| a.contains(&c.doc)))
            || (filter >= Filter::TrainAuthQuote
                && self
                    .quotes
                    .get(centre)
                    .is_some_and(|q| q.contains(&(c.doc.clone(), c.idx))))
    }

    /// (precocity, novelty, transience) of chunk `p` for one grid cell.
    fn chunk(&self, p: &Chunk, fraction: f64, filter: Filter, radius: i32) -> [Option<f64>; 3] {
        let year_mean = |d: i32| -> Option<f64> {
            let mut ds: Vec<f64> = self
                .chunks
                .iter()
                .filter(|c| c.year == p.year + d && !self.excluded(filter, &p.doc, c))
                .map(|c| self.dist(&p.vec, &c.vec))
                .collect();
            if ds.is_empty() {
                return None;
            }
            ds.sort_by(f64::total_cmp);
            let k = (ds.len() as f64 * fraction).ceil() as usize;
            Some(ds[..k].iter().sum::<f64>() / k as f64)
        };
        let side = |ds: Vec<i32>| {
            let means: Vec<f64> = ds.into_iter().filter_map(year_mean).collect();
            (!means.is_empty()).then(|| means.iter().sum::<f64>() / means.len() as f64)
        };
        let novelty = side((-radius..=-1).collect());
        let transience = side((1..=radius).collect());
        let precocity = novelty.zip(transience).map(|(n, t)| n - t);
        [precocity, novelty, transience]
    }

    fn document(
        &self,
        doc: &str,
        fraction: f64,
        filter: Filter,
        radius: i32,
        a: f64,
    ) -> [Option<f64>; 3] {
        let mut t: Vec<[f64; 3]> = self
            .chunks
            .iter()
            .filter(|c| c.doc == doc)
            .filter_map(|c| {
                let [p, n, t] = self.chunk(c, fraction, filter, radius);
                Some([p?, n?, t?])
            })
            .collect();
        if t.is_empty() {
            return [None; 3];
        }
        t.sort_by(|x, y| {
            y[0].total_cmp(&x[0])
                .then(y[1].total_cmp(&x[1]))
                .then(y[2].total_cmp(&x[2]))
        });
        let k = (t.len() as f64 * a).ceil() as usize;
        let mean = |j: usize| Some(t[..k].iter().map(|x| x[j]).sum::<f64>() / k as f64);
        [mean(0), mean(1), mean(2)]
    }
}

/// |a − b| relative to the larger magnitude (absolute below 1e-3, where values are near 0).
fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-3)
}

fn write_lines(path: &std::path::Path, lines: &[String]) {
    let mut f = std::fs::File::create(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

/// Checks every chunk and document row against the oracle; returns the largest relative
/// difference.
fn compare(out: &std::path::Path, oracle: &Oracle, grid: &Grid) -> f64 {
    let chunks = chunk_table(out);
    let docs = doc_table(out);
    let per_chunk = grid.fractions.len() * grid.filters.len() * grid.radii.len();
    assert_eq!(chunks.len(), oracle.chunks.len() * per_chunk);
    let mut worst = 0f64;
    let mut check = |what: String, got: [Option<f64>; 3], want: [Option<f64>; 3]| {
        // Relative to the row's scale: precocity is a difference of near-equal means, so its own
        // magnitude says little about how precisely it was computed.
        let scale = want.iter().flatten().fold(0f64, |m, x| m.max(x.abs()));
        for j in 0..3 {
            match (got[j], want[j]) {
                (Some(g), Some(w)) => {
                    let r = rel(g, w).min((g - w).abs() / scale.max(1e-3));
                    worst = worst.max(r)
                }
                (None, None) => {}
                _ => panic!(
                    "{what}: measure {j}: stage {:?}, oracle {:?}",
                    got[j], want[j]
                ),
            }
        }
    };
    let doc_ids: HashSet<&str> = oracle.chunks.iter().map(|c| c.doc.as_str()).collect();
    for &fraction in &grid.fractions {
        for &filter in &grid.filters {
            for &radius in &grid.radii {
                for c in &oracle.chunks {
                    let key = (
                        c.doc.clone(),
                        c.idx,
                        format!("{fraction:?}"),
                        filter.as_str().to_string(),
                        radius as i32,
                    );
                    let got = chunks[&key];
                    check(
                        format!("{key:?}"),
                        got,
                        oracle.chunk(c, fraction, filter, radius as i32),
                    );
                }
                for &a in &grid.aggregates {
                    for &doc in &doc_ids {
                        let key = (
                            doc.to_string(),
                            format!("{fraction:?}"),
                            filter.as_str().to_string(),
                            radius as i32,
                            format!("{a:?}"),
                        );
                        let (date, n, got) = docs[&key];
                        let want: Vec<&Chunk> =
                            oracle.chunks.iter().filter(|c| c.doc == doc).collect();
                        assert_eq!((date, n as usize), (want[0].year, want.len()), "{key:?}");
                        check(
                            format!("{key:?}"),
                            got,
                            oracle.document(doc, fraction, filter, radius as i32, a),
                        );
                    }
                }
            }
        }
    }
    worst
}

type Authors = HashMap<String, HashSet<String>>;
type Quotes = HashMap<String, HashSet<(String, i32)>>;

/// Years with gaps (1903, 1906–1907 missing) so windows hold empty years and the corpus edges
/// leave novelty or transience undefined; chunk numbering with gaps; all four filters active.
fn exclusion_corpus(dir: &std::path::Path) -> (Vec<Chunk>, HashSet<String>, Authors, Quotes) {
    let years = [1900, 1901, 1902, 1904, 1905, 1908, 1909];
    let chunks = random_corpus(&years, 4, 8, 7);
    let train: HashSet<String> = ["d1901-0", "d1904-2", "d1908-1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut authors: HashMap<String, HashSet<String>> = HashMap::new();
    authors
        .entry("d1902-1".into())
        .or_default()
        .extend(["d1901-1".to_string(), "d1904-3".to_string()]);
    authors
        .entry("d1905-0".into())
        .or_default()
        .insert("d1904-1".into());
    let mut quotes: HashMap<String, HashSet<(String, i32)>> = HashMap::new();
    quotes
        .entry("d1902-1".into())
        .or_default()
        .extend([("d1904-0".to_string(), 0), ("d1905-2".to_string(), 0)]);
    quotes
        .entry("d1901-2".into())
        .or_default()
        .insert(("d1900-3".into(), 0));
    write_embeddings(&dir.join("emb.parquet"), &chunks);
    write_lines(
        &dir.join("train.txt"),
        &train.iter().cloned().collect::<Vec<_>>(),
    );
    let mut lines: Vec<String> = authors
        .iter()
        .flat_map(|(c, os)| os.iter().map(move |o| format!("{c}\t{o}")))
        .collect();
    lines.push("nosuchdoc\td1900-0".into());
    write_lines(&dir.join("authors.tsv"), &lines);
    let mut lines: Vec<String> = quotes
        .iter()
        .map(|(c, qs)| {
            format!(
                "{c}\t{}",
                qs.iter()
                    .map(|(d, i)| format!("{d}-{i}"))
                    .collect::<Vec<_>>()
                    .join("\t")
            )
        })
        .collect();
    lines.push("d1900-0\tghost-3".into());
    write_lines(&dir.join("quotes.tsv"), &lines);
    (chunks, train, authors, quotes)
}

#[test]
fn stage_agrees_with_the_plain_loop_on_every_grid_value() {
    let dir = tempfile::tempdir().unwrap();
    let (chunks, train, authors, quotes) = exclusion_corpus(dir.path());
    let grid = Grid {
        radii: vec![1, 2, 3],
        fractions: vec![1.0, 0.5, 0.1],
        aggregates: vec![1.0, 0.25, 0.5],
        filters: Filter::ALL.to_vec(),
    };
    let out = dir.path().join("out");
    let mut opts = options(&dir.path().join("emb.parquet"), &out, grid.clone());
    opts.train = Some(TrainDocs::List(dir.path().join("train.txt")));
    opts.authors = Some(dir.path().join("authors.tsv"));
    opts.quotes = Some(dir.path().join("quotes.tsv"));
    let report = run(&opts).unwrap();
    assert!(report.finished);
    assert_eq!(report.unknown_ids.author_centres, 1);
    assert_eq!(report.unknown_ids.quote_chunks, 1);
    assert!(
        report.renormalised > 0,
        "the test vectors are not unit length"
    );
    let oracle = Oracle {
        chunks: Oracle::normalised(&chunks, Distance::Cosine),
        train: &train,
        authors: &authors,
        quotes: &quotes,
        distance: Distance::Cosine,
    };
    let worst = compare(&out, &oracle, &grid);
    eprintln!("cosine: largest relative difference to the plain loop {worst:.2e}");
    assert!(worst < 1e-6, "stage vs plain loop: {worst:.2e}");
    // The filters changed something, and the corpus edges are undefined, not zero.
    let c = chunk_table(&out);
    let first = c[&(
        "d1900-0".to_string(),
        0,
        "1.0".to_string(),
        "no filter".to_string(),
        1,
    )];
    assert_eq!(first[1], None, "no past for the first year");
    assert!(first[2].is_some());
    assert!(common::manifest::verify(&out).unwrap().is_empty());
}

#[test]
fn kl_divergence_agrees_with_the_plain_loop() {
    let dir = tempfile::tempdir().unwrap();
    let chunks: Vec<Chunk> = random_corpus(&[1950, 1951, 1953, 1954], 3, 6, 11)
        .into_iter()
        .map(|mut c| {
            c.vec.iter_mut().for_each(|x| *x = x.abs() + 0.01);
            c
        })
        .collect();
    write_embeddings(&dir.path().join("emb.parquet"), &chunks);
    let grid = Grid {
        radii: vec![1, 3],
        fractions: vec![1.0, 0.3],
        aggregates: vec![1.0, 0.5],
        filters: vec![Filter::NoFilter],
    };
    let out = dir.path().join("out");
    let mut opts = options(&dir.path().join("emb.parquet"), &out, grid.clone());
    opts.distance = Distance::Kld;
    run(&opts).unwrap();
    let empty = (HashSet::new(), HashMap::new(), HashMap::new());
    let oracle = Oracle {
        chunks: Oracle::normalised(&chunks, Distance::Kld),
        train: &empty.0,
        authors: &empty.1,
        quotes: &empty.2,
        distance: Distance::Kld,
    };
    let worst = compare(&out, &oracle, &grid);
    eprintln!("kld: largest relative difference to the plain loop {worst:.2e}");
    // KL = Σ p ln p − p · ln c loses a few bits to cancellation in f32 (measured 1.4e-6).
    assert!(worst < 1e-5, "stage vs plain loop: {worst:.2e}");
}

#[track_caller]
fn close(got: Option<f64>, want: f64) {
    let g = got.expect("defined");
    assert!((g - want).abs() < 1e-6, "got {g}, want {want}");
}

fn unit(deg: f64) -> Vec<f32> {
    let r = deg.to_radians();
    vec![r.cos() as f32, r.sin() as f32]
}

/// cos = 0.6 ↔ distance −ln 2, cos = 0.8 ↔ −ln 3 (artanh(0.6) = ½ln4, artanh(0.8) = ½ln9).
#[test]
fn hand_computed_precocity() {
    let dir = tempfile::tempdir().unwrap();
    let (c06, c08) = ((0.6f64).acos().to_degrees(), (0.8f64).acos().to_degrees());
    let chunks = vec![
        chunk("past", 0, 1999, &unit(90.0)), // cos 0 with A: distance 0
        chunk("A", 0, 2000, &unit(0.0)),
        chunk("A", 3, 2000, &unit(0.0)), // gap in numbering: still used
        chunk("F1", 0, 2001, &unit(c08)), // closer future (cos 0.8)
        chunk("F2", 0, 2001, &unit(-c06)), // cos 0.6
        chunk("same", 0, 2000, &unit(c08)), // same year: never compared with A
    ];
    write_embeddings(&dir.path().join("emb.parquet"), &chunks);
    std::fs::write(dir.path().join("train.txt"), "F1\n").unwrap();
    std::fs::write(dir.path().join("authors.tsv"), "A\tF2\n").unwrap();
    let grid = Grid {
        radii: vec![1],
        fractions: vec![1.0, 0.5],
        aggregates: vec![1.0, 0.5],
        filters: Filter::ALL.to_vec(),
    };
    let out = dir.path().join("out");
    let mut opts = options(&dir.path().join("emb.parquet"), &out, grid);
    opts.train = Some(TrainDocs::List(dir.path().join("train.txt")));
    opts.authors = Some(dir.path().join("authors.tsv"));
    run(&opts).unwrap();
    let docs = doc_table(&out);
    let get = |f: &str, filter: &str, a: &str| {
        docs[&(
            "A".to_string(),
            f.to_string(),
            filter.to_string(),
            1,
            a.to_string(),
        )]
    };
    let (ln2, ln3) = (2f64.ln(), 3f64.ln());
    // no filter, f = 1: novelty 0 (past at cos 0), transience −(ln3 + ln2)/2.
    let (date, n, m) = get("1.0", "no filter", "1.0");
    assert_eq!((date, n), (2000, 2));
    close(m[1], 0.0);
    close(m[2], -(ln2 + ln3) / 2.0);
    close(m[0], (ln2 + ln3) / 2.0);
    // f = 0.5: only the closest future chunk (⌈0.5·2⌉ = 1): transience −ln 3.
    close(get("0.5", "no filter", "1.0").2[0], ln3);
    // train drops F1: transience −ln 2 whatever f.
    close(get("1.0", "train", "1.0").2[0], ln2);
    close(get("0.5", "train", "0.5").2[0], ln2);
    // trainauth also drops F2 (same author): no future left → undefined, not 0. Chunks cannot
    // be ranked without precocity, so the document row is undefined; the chunk rows keep the
    // novelty.
    assert_eq!(get("1.0", "trainauth", "1.0").2, [None; 3]);
    let chunks = chunk_table(&out);
    let ta = chunks[&(
        "A".to_string(),
        3,
        "1.0".to_string(),
        "trainauth".to_string(),
        1,
    )];
    assert_eq!((ta[0], ta[2]), (None, None));
    close(ta[1], 0.0);
    // F2's novelty: its past is A's two chunks and `same` (cos 0.6, 0.6 and cos(−c06 − c08)).
    let f2 = chunks[&(
        "F2".to_string(),
        0,
        "1.0".to_string(),
        "no filter".to_string(),
        1,
    )];
    let cos_same = ((-c06 - c08).to_radians()).cos();
    close(f2[1], -(2.0 * ln2 + cos_same.atanh()) / 3.0);
    assert_eq!((f2[0], f2[2]), (None, None), "no future year for 2001");
}

/// A comparison chunk identical to the centre one is at distance −artanh(1 − 2⁻²⁰) ≈ −7.28, not
/// at the reference's 0; and a document with no line in the author file keeps the `train`
/// exclusions under `trainauth` (nesting).
#[test]
fn identical_vectors_and_nesting_without_an_author_line() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = vec![
        chunk("P", 0, 1999, &unit(30.0)),
        chunk("A", 0, 2000, &unit(30.0)),
        chunk("T", 0, 2001, &unit(30.0)),
        chunk("F", 0, 2001, &unit(30.0 + (0.8f64).acos().to_degrees())),
    ];
    write_embeddings(&dir.path().join("emb.parquet"), &chunks);
    std::fs::write(dir.path().join("train.txt"), "T\n").unwrap();
    std::fs::write(dir.path().join("authors.tsv"), "P\tF\n").unwrap();
    let grid = Grid {
        radii: vec![1],
        fractions: vec![1.0],
        aggregates: vec![1.0],
        filters: Filter::ALL.to_vec(),
    };
    let out = dir.path().join("out");
    let mut opts = options(&dir.path().join("emb.parquet"), &out, grid);
    opts.train = Some(TrainDocs::List(dir.path().join("train.txt")));
    opts.authors = Some(dir.path().join("authors.tsv"));
    run(&opts).unwrap();
    let docs = doc_table(&out);
    let get = |filter: &str| {
        docs[&(
            "A".to_string(),
            "1.0".to_string(),
            filter.to_string(),
            1,
            "1.0".to_string(),
        )]
            .2
    };
    let lim = COS_CLAMP as f64;
    let identical = -lim.atanh();
    assert!((identical + 0.5 * ((2.0 - 2f64.powi(-20)) / 2f64.powi(-20)).ln()).abs() < 1e-12);
    let nf = get("no filter");
    assert!(
        (nf[1].unwrap() - identical).abs() < 1e-4,
        "novelty {:?} vs {identical}",
        nf[1]
    );
    assert!((nf[2].unwrap() - (identical - 3f64.ln()) / 2.0).abs() < 1e-4);
    // A has no author line: trainauth and trainauthquote still drop the training document T.
    for filter in ["train", "trainauth", "trainauthquote"] {
        let m = get(filter);
        assert!(
            (m[2].unwrap() + 3f64.ln()).abs() < 1e-6,
            "{filter}: transience {:?}",
            m[2]
        );
    }
}

/// `--pairs` (select-pairs' output) names the same training documents as a `--train-docs` list.
#[test]
fn training_documents_from_a_pairs_table() {
    use common::schema::Category;
    use common::tables::{write_pairs, PairRow, ParaphraseProvenance};
    let dir = tempfile::tempdir().unwrap();
    let chunks = random_corpus(&[1960, 1961, 1962], 4, 8, 21);
    write_embeddings(&dir.path().join("emb.parquet"), &chunks);
    let pair = |id: &str, doc: &str| PairRow {
        pair_id: id.into(),
        doc_id: doc.into(),
        year: 1961,
        anchor: Some("a".into()),
        positive: Some("b".into()),
        negative: None,
        category: Category::Successive,
        paraphrase_side: None,
        provenance: ParaphraseProvenance::default(),
    };
    let prov = common::provenance::Provenance::new("test", "0", serde_json::Value::Null);
    let rows = [
        pair("p0", "d1961-1"),
        pair("p1", "d1962-0"),
        pair("p2", "d1961-1"),
    ];
    write_pairs(&dir.path().join("pairs.parquet"), &rows, &prov).unwrap();
    std::fs::write(dir.path().join("train.txt"), "d1961-1\nd1962-0\n").unwrap();
    let grid = Grid::default();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let mut opts = options(&dir.path().join("emb.parquet"), &a, grid.clone());
    opts.train = Some(TrainDocs::Pairs(dir.path().join("pairs.parquet")));
    run(&opts).unwrap();
    let mut opts = options(&dir.path().join("emb.parquet"), &b, grid);
    opts.train = Some(TrainDocs::List(dir.path().join("train.txt")));
    run(&opts).unwrap();
    let (ta, tb) = (doc_table(&a), doc_table(&b));
    assert_eq!(ta, tb);
    // The filter mattered.
    let key = |f: &str| {
        (
            "d1961-0".to_string(),
            "1.0".to_string(),
            f.to_string(),
            10,
            "1.0".to_string(),
        )
    };
    assert_ne!(ta[&key("no filter")].2, ta[&key("train")].2);
}
