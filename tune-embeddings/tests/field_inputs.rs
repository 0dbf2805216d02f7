//! tune-embeddings on data as people's tools write it (issue 17): a scored-pairs CSV from
//! Python's csv module (byte-order mark, CRLF, quoted newlines), question/context JSONL, and
//! the model card of the workflow's two-stage tuning.

mod support;

use common::testing::base_model;
use std::path::{Path, PathBuf};

use common::provenance::Provenance;
use common::schema::Category;
use common::tables::{write_pairs, PairRow};
use tune_embeddings::data::{self, Examples, JsonlFields, Pair, Scored, Source};
use tune_embeddings::{run, Loss, Options};

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

fn scored(s1: &str, s2: &str, score: f32) -> Scored {
    Scored {
        sentence1: s1.into(),
        sentence2: s2.into(),
        score,
    }
}

fn pairs_of(e: Examples) -> Vec<Pair> {
    match e {
        Examples::Pairs(p) => p,
        Examples::Scored(_) => panic!("expected pairs"),
    }
}

/// What `csv.writer(open(f, "w", encoding="utf-8-sig"))` writes: a BOM, CRLF records, quotes
/// around fields with commas, quotes or newlines.
#[test]
fn scored_csv_is_read_as_rfc_4180_with_rows_counting_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir.path().join("scored.csv"),
        "\u{feff}sentence1,sentence2,score\r\n\
         The tariff,Duties on imports,0.75\r\n\
         \"An address\r\nover two lines\",\"He said \"\"no\"\", twice\",0.5\r\n\
         plain,text,1\r\n",
    );
    let rows = match data::load(&Source::Scored(path.clone())).unwrap() {
        Examples::Scored(s) => s,
        Examples::Pairs(_) => panic!("expected scored pairs"),
    };
    assert_eq!(
        rows,
        vec![
            scored("The tariff", "Duties on imports", 0.75),
            scored("An address\r\nover two lines", "He said \"no\", twice", 0.5),
            scored("plain", "text", 1.0),
        ]
    );

    // Record 5 (the header is row 1) starts on line 6: errors count records.
    std::fs::write(
        &path,
        "sentence1,sentence2,score\n\
         a,b,0.1\n\
         \"c\nd\",e,0.2\n\
         f,g,0.3\n\
         h,i\n",
    )
    .unwrap();
    let msg = data::load(&Source::Scored(path)).unwrap_err().to_string();
    assert!(msg.contains("row 5: `score` is missing"), "{msg}");
}

#[test]
fn question_context_jsonl_is_read_with_common_or_named_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir.path().join("qa.jsonl"),
        "\u{feff}{\"query\": \"When was the treaty ratified?\", \"context\": \"The Senate ratified the treaty in 1803.\", \"answer\": \"1803\"}\n\
         {\"question\": \"Who spoke?\", \"passage\": \"The President addressed Congress.\", \"hard_negative\": \"It rained.\"}\n",
    );
    let pairs = pairs_of(data::load(&Source::Jsonl(path, JsonlFields::default())).unwrap());
    assert_eq!(
        pairs,
        vec![
            Pair {
                anchor: "When was the treaty ratified?".into(),
                positive: "The Senate ratified the treaty in 1803.".into(),
                negative: None,
            },
            Pair {
                anchor: "Who spoke?".into(),
                positive: "The President addressed Congress.".into(),
                negative: Some("It rained.".into()),
            },
        ]
    );

    // Names of the user's own.
    let path = write(
        &dir.path().join("own.jsonl"),
        "{\"q\": \"a question\", \"doc\": \"its document\", \"query\": \"ignored\"}\n",
    );
    let fields = JsonlFields {
        anchor: Some("q".into()),
        positive: Some("doc".into()),
        negative: None,
    };
    let pairs = pairs_of(data::load(&Source::Jsonl(path, fields)).unwrap());
    assert_eq!(
        (pairs[0].anchor.as_str(), pairs[0].positive.as_str()),
        ("a question", "its document")
    );

    // Two candidate names on one line: an error that says how to choose, not a guess.
    let path = write(
        &dir.path().join("both.jsonl"),
        "{\"query\": \"q\", \"question\": \"q2\", \"context\": \"c\"}\n",
    );
    let msg = data::load(&Source::Jsonl(path, JsonlFields::default()))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("both.jsonl:1") && msg.contains("--anchor-field"),
        "{msg}"
    );
    let path = write(
        &dir.path().join("none.jsonl"),
        "{\"query\": \"q\", \"answer\": \"a\"}\n",
    );
    let msg = data::load(&Source::Jsonl(path, JsonlFields::default()))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("none.jsonl:1")
            && msg.contains("`positive`, `context`, `passage`, `sentence2`")
            && msg.contains("--positive-field"),
        "{msg}"
    );
}

fn options(train: Source, base: PathBuf, out: PathBuf, loss: Loss) -> Options {
    Options {
        base_model: base,
        loss,
        ..support::options(train, out)
    }
}

/// The workflow's two stages: MNRL on pairs into `stage1/`, then CoSENT on scored pairs from
/// `stage1/`. The second card names the original base model and lists both stages.
#[test]
fn two_stage_tuning_keeps_the_base_model_and_every_stage_in_the_card() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rows: Vec<PairRow> = (0..30)
        .map(|i| PairRow {
            pair_id: format!("p{i}"),
            doc_id: format!("d{i}"),
            year: 1900,
            anchor: Some(format!(
                "The committee met on day {i} to discuss the tariff."
            )),
            positive: Some(format!(
                "On day {i} the tariff was debated by the committee."
            )),
            negative: None,
            category: Category::Successive,
            paraphrase_side: None,
            provenance: Default::default(),
        })
        .collect();
    let pairs = d.join("pairs.parquet");
    write_pairs(
        &pairs,
        &rows,
        &Provenance::new("t", "0", serde_json::Value::Null),
    )
    .unwrap();
    let stage1 = d.join("stage1");
    run(&options(
        Source::Pairs(pairs.clone()),
        base_model(),
        stage1.clone(),
        Loss::Mnrl { scale: 20.0 },
    ))
    .unwrap();

    let mut csv = String::from("sentence1,sentence2,score\n");
    for i in 0..30 {
        csv += &format!(
            "\"The tariff, part {i}\",duties on imports {i},{}\n",
            (i % 5) as f32 / 4.0
        );
    }
    let scored = write(&d.join("scored.csv"), &csv);
    let stage2 = d.join("stage2");
    run(&options(
        Source::Scored(scored.clone()),
        stage1.clone(),
        stage2.clone(),
        Loss::CoSent { scale: 20.0 },
    ))
    .unwrap();

    // Both asked for the document split; the scored CSV has no doc ids, so the second held
    // out single pairs, and says so.
    let split = |dir: &Path| {
        let args: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("training_args.json")).unwrap())
                .unwrap();
        args["held_out"]["split"].as_str().unwrap().to_string()
    };
    assert_eq!(
        (split(&stage1), split(&stage2)),
        ("document".into(), "pair".into())
    );

    let card = std::fs::read_to_string(stage2.join("README.md")).unwrap();
    let front_matter = card.split("---").nth(1).unwrap();
    assert!(
        front_matter.contains("\nbase_model: all-MiniLM-L6-v2\n"),
        "{front_matter}"
    );
    assert!(
        card.contains("# all-MiniLM-L6-v2 tuned with strata\n"),
        "{card}"
    );
    assert!(!card.contains("stage1 tuned"), "{card}");
    let one = card
        .find("### Stage 1: MultipleNegativesRankingLoss")
        .expect(&card);
    let two = card.find("### Stage 2: CoSENTLoss").expect(&card);
    assert!(one < two);
    let (first, second) = (&card[one..two], &card[two..]);
    assert!(
        first.contains(&base_model().display().to_string())
            && first.contains(&pairs.display().to_string())
            && first.contains("mrr@10"),
        "{first}"
    );
    assert!(
        second.contains(&stage1.display().to_string())
            && second.contains(&scored.display().to_string())
            && second.contains("spearman"),
        "{second}"
    );
}
