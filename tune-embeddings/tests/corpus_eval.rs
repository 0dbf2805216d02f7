//! The document split and the corpus measures on the sample corpus: no document is on both
//! sides of the split, and the measures do not depend on the thread count.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use common::corpus::Corpus;
use common::tables::PairsReader;
use common::testing::{base_model, workspace_root};
use tune_embeddings::data::{self, Source};
use tune_embeddings::eval::evaluate_folder;
use tune_embeddings::{split, Options};

fn sample() -> Corpus {
    Corpus::Chunks(workspace_root().join("data/sample/chunks.parquet"))
}

/// select-pairs on the sample with `fraction` of the documents held out: (pairs, list).
fn select(dir: &Path, fraction: f64) -> (std::path::PathBuf, std::path::PathBuf) {
    let (pairs, list) = (dir.join("pairs.parquet"), dir.join("held-out-docs.txt"));
    let opts = select_pairs::Options {
        corpus: sample(),
        out: pairs.clone(),
        seed: 7,
        from_year: None,
        to_year: None,
        per_year: None,
        cap_rank: 25,
        params: select_pairs::Params::no_paraphrase(),
        held_out: Some(select_pairs::HeldOut {
            list: list.clone(),
            fraction,
        }),
    };
    let report = select_pairs::run(&opts).unwrap();
    assert_eq!(
        report.held_out_documents,
        (249.0 * fraction).round() as usize
    );
    (pairs, list)
}

fn options(pairs: &Path) -> Options {
    Options {
        max_seq_length: None,
        ..support::options(
            Source::Pairs(pairs.to_path_buf()),
            pairs.with_file_name("model"),
        )
    }
}

#[test]
fn no_document_is_on_both_sides_of_the_split() {
    let dir = tempfile::tempdir().unwrap();
    let (pairs, list) = select(dir.path(), 0.2);
    let held: BTreeSet<String> = common::split::read_doc_list(&list).unwrap();
    let rows = PairsReader::read_all(&pairs).unwrap();
    let trained: BTreeSet<&str> = rows.iter().map(|r| r.doc_id.as_str()).collect();
    assert!(!rows.is_empty());
    assert!(
        trained.iter().all(|d| !held.contains(*d)),
        "select-pairs took a pair from a held-out document"
    );

    // tune-embeddings' own document split of those pairs.
    let opts = options(&pairs);
    let examples = data::load(&opts.train).unwrap();
    let ids = data::doc_ids(&opts.train).unwrap().unwrap();
    let s = split(&opts, examples.len(), Some(&ids)).unwrap();
    let docs_of =
        |idx: &[usize]| -> BTreeSet<&str> { idx.iter().map(|&i| ids[i].as_str()).collect() };
    let (eval_docs, train_docs) = (docs_of(&s.eval_idx), docs_of(&s.train_idx));
    assert!(!eval_docs.is_empty() && !train_docs.is_empty());
    assert!(
        eval_docs.is_disjoint(&train_docs),
        "{:?}",
        eval_docs.intersection(&train_docs)
    );
    assert_eq!(s.eval_idx.len() + s.train_idx.len(), examples.len());
    assert_eq!(
        s.docs
            .as_ref()
            .unwrap()
            .iter()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        eval_docs
    );

    // Given the list, the listed documents are the held-out ones whatever their pairs.
    let mut listed = opts.clone();
    listed.held_out_docs = Some(list);
    let s = split(&listed, examples.len(), Some(&ids)).unwrap();
    assert_eq!(s.docs.as_ref(), Some(&held));
    assert!(s.eval_idx.is_empty(), "select-pairs left no pair of them");
}

#[test]
fn corpus_measures_are_the_same_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let (_, list) = select(dir.path(), 0.03);
    let docs = common::split::read_doc_list(&list).unwrap();
    let measure = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| evaluate_folder(&base_model(), &sample(), &docs, "cpu").unwrap())
    };
    let one = measure(1);
    let two = measure(2);
    eprintln!("base model on {} held-out documents: {one:?}", docs.len());
    for key in [
        "successive_mrr@10",
        "successive_recall@1",
        "successive_recall@10",
        "successive_accuracy",
        "knn_year_error",
        "knn_same_decade",
    ] {
        assert!(one.contains_key(key), "missing {key}");
    }
    assert_eq!(one, two, "1 thread vs 2 threads");
}
