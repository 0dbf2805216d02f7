//! The pairs section: select-pairs' counts per category and per year before and after the
//! per-year cap (its `--report` JSON and the pairs table), and paraphrase-gen's provenance
//! (models, temperature range, finish reasons, tokens, pairs left out after failures).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use common::schema::Category;
use common::tables::PairsReader;
use serde_json::Value;

use crate::corpus::{bin_name, bin_of, year_bin_width};
use crate::html::{self, Content, Figure, Section};
use crate::inputs::{RunInputs, PAIRS, PAIRS_FILLED};
use crate::{figures, Error, Result};

/// Counts from one pass over a pairs table.
#[derive(Debug, Default)]
struct PairCounts {
    rows: u64,
    /// category → year → pairs.
    per_category_year: BTreeMap<String, BTreeMap<i32, u64>>,
    /// Rows with a side still to paraphrase.
    awaiting: u64,
    /// Rows with paraphrase provenance.
    paraphrased: u64,
    models: BTreeMap<String, u64>,
    finish_reasons: BTreeMap<String, u64>,
    temperature: Option<(f32, f32)>,
    prompt_tokens: u64,
    completion_tokens: u64,
}

fn count(path: &Path) -> Result<PairCounts> {
    let mut reader = PairsReader::open(path)?;
    let mut c = PairCounts::default();
    while let Some(rows) = reader.next_rows()? {
        for r in rows {
            c.rows += 1;
            *c.per_category_year
                .entry(r.category.as_str().to_string())
                .or_default()
                .entry(r.year)
                .or_default() += 1;
            if r.paraphrase_side.is_some() {
                c.awaiting += 1;
            }
            let p = &r.provenance;
            if let Some(m) = &p.model {
                c.paraphrased += 1;
                *c.models.entry(m.clone()).or_default() += 1;
                let reason = p.finish_reason.clone().unwrap_or_else(|| "(none)".into());
                *c.finish_reasons.entry(reason).or_default() += 1;
                if let Some(t) = p.temperature {
                    c.temperature = Some(match c.temperature {
                        None => (t, t),
                        Some((a, b)) => (a.min(t), b.max(t)),
                    });
                }
                c.prompt_tokens += p.prompt_tokens.unwrap_or(0).max(0) as u64;
                c.completion_tokens += p.completion_tokens.unwrap_or(0).max(0) as u64;
            }
        }
    }
    Ok(c)
}

/// select-pairs' report: per_year {year: {before_cap, after_cap}}, per_category, cap.
struct SelectReport {
    per_year: BTreeMap<i32, (u64, u64)>,
    cap: Option<u64>,
    skipped: BTreeMap<String, u64>,
}

fn read_report(path: &Path) -> Result<SelectReport> {
    let bytes = std::fs::read(path).map_err(|e| common::Error::io(path, e))?;
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::input(path, format!("not JSON: {e}")))?;
    let mut per_year = BTreeMap::new();
    if let Some(years) = v.get("per_year").and_then(Value::as_object) {
        for (y, c) in years {
            let year: i32 = y
                .parse()
                .map_err(|_| Error::input(path, format!("per_year: {y:?} is not a year")))?;
            let get = |k: &str| c.get(k).and_then(Value::as_u64).unwrap_or(0);
            per_year.insert(year, (get("before_cap"), get("after_cap")));
        }
    }
    let skipped = v
        .get("skipped_documents")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    Ok(SelectReport {
        per_year,
        cap: v.get("cap").and_then(Value::as_u64),
        skipped,
    })
}

pub fn section(inputs: &RunInputs) -> Result<Section> {
    const ID: &str = "pairs";
    const TITLE: &str = "Pairs";
    let Some(pairs_path) = &inputs.pairs else {
        return Ok(Section::missing(
            ID,
            TITLE,
            format!("no {PAIRS} in the run folder"),
        ));
    };
    let pairs = count(pairs_path)?;
    let report = inputs
        .pairs_report
        .as_deref()
        .map(read_report)
        .transpose()?;
    let mut h = String::new();
    let mut figures = Vec::new();
    let _ = writeln!(
        h,
        "<p><span class=\"pairs\">{}</span> training pairs (<code>{}</code>){}.</p>",
        pairs.rows,
        html::esc(&inputs.show(pairs_path)),
        match report.as_ref().and_then(|r| r.cap) {
            Some(cap) if cap > 0 => format!(", at most {cap} per year"),
            _ => String::new(),
        }
    );

    // Per category (rows) × year bin (columns would be too many): one row per category.
    let years = pairs
        .per_category_year
        .values()
        .flat_map(|m| m.keys().copied());
    let width = year_bin_width(years);
    let per = bin_name(width);
    let mut cat_rows = Vec::new();
    for cat in Category::ALL.iter().map(|c| c.as_str()) {
        let Some(by_year) = pairs.per_category_year.get(cat) else {
            continue;
        };
        let n: u64 = by_year.values().sum();
        cat_rows.push(vec![
            cat.to_string(),
            n.to_string(),
            html::pct(n, pairs.rows),
        ]);
    }
    h.push_str(&html::table(
        "pairs-per-category",
        &["category", "pairs", "share"],
        &cat_rows,
        &[],
    ));

    match &report {
        Some(r) if !r.per_year.is_empty() => {
            let mut bins: BTreeMap<i32, (u64, u64)> = BTreeMap::new();
            for (&y, &(b, a)) in &r.per_year {
                let e = bins.entry(bin_of(y, width)).or_default();
                e.0 += b;
                e.1 += a;
            }
            let before: Vec<(i32, u64)> = bins.iter().map(|(&k, v)| (k, v.0)).collect();
            let after: Vec<(i32, u64)> = bins.iter().map(|(&k, v)| (k, v.1)).collect();
            figures.push(Figure {
                name: "pairs-per-year".into(),
                svg: figures::paired_bars(
                    "pairs-per-year",
                    &format!("Pairs per {per}, before and after the per-year cap"),
                    &format!("{per} (start year)"),
                    "pairs",
                    width,
                    [
                        ("before the cap", before.as_slice()),
                        ("after the cap", after.as_slice()),
                    ],
                )?,
                caption: format!(
                    "Pairs selected per {per} before the per-year cap (light) and kept after it \
                     (dark), from {}.",
                    crate::inputs::PAIRS_REPORT
                ),
            });
            h.push_str("{fig:pairs-per-year}");
            let rows: Vec<Vec<String>> = bins
                .iter()
                .map(|(k, v)| vec![k.to_string(), v.0.to_string(), v.1.to_string()])
                .collect();
            h.push_str(&html::data_table(
                &format!("Data: pairs per {per} before and after the cap"),
                "pairs-per-year",
                &[per, "before cap", "after cap"],
                &rows,
            ));
            if !r.skipped.is_empty() {
                let rows: Vec<Vec<String>> = r
                    .skipped
                    .iter()
                    .map(|(k, n)| vec![k.clone(), n.to_string()])
                    .collect();
                h.push_str(&html::data_table(
                    "Documents that gave no pair, by reason",
                    "pairs-skipped",
                    &["reason", "documents"],
                    &rows,
                ));
            }
        }
        _ => {
            let _ = writeln!(
                h,
                "<p class=\"note\">Counts before the cap not shown: no {} in the run folder.</p>",
                crate::inputs::PAIRS_REPORT
            );
        }
    }

    // Per category × bin after the cap, from the table itself.
    let mut bins: Vec<i32> = pairs
        .per_category_year
        .values()
        .flat_map(|m| m.keys().map(|&y| bin_of(y, width)))
        .collect();
    bins.sort_unstable();
    bins.dedup();
    let mut rows = Vec::new();
    for b in &bins {
        let mut row = vec![b.to_string()];
        for cat in Category::ALL.iter().map(|c| c.as_str()) {
            let n: u64 = pairs.per_category_year.get(cat).map_or(0, |m| {
                m.iter()
                    .filter(|(&y, _)| bin_of(y, width) == *b)
                    .map(|(_, n)| n)
                    .sum()
            });
            row.push(n.to_string());
        }
        rows.push(row);
    }
    let mut header = vec![per];
    header.extend(Category::ALL.iter().map(|c| c.as_str()));
    h.push_str(&html::data_table(
        &format!("Data: pairs per {per} and category (after the cap)"),
        "pairs-per-category-year",
        &header,
        &rows,
    ));

    h.push_str(&paraphrase_part(inputs, &pairs)?);
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

fn paraphrase_part(inputs: &RunInputs, pairs: &PairCounts) -> Result<String> {
    let mut h = String::from("<h3>Paraphrases</h3>\n");
    let Some(path) = &inputs.pairs_filled else {
        let _ = writeln!(
            h,
            "<p class=\"note\">No {PAIRS_FILLED} in the run folder (paraphrase-gen did not \
             run); {} pairs ask for a paraphrase.</p>",
            pairs.awaiting
        );
        return Ok(h);
    };
    let filled = count(path)?;
    let left_out = pairs.awaiting.saturating_sub(filled.paraphrased);
    let _ = writeln!(
        h,
        "<p><span class=\"paraphrased\">{}</span> of <span class=\"awaiting\">{}</span> \
         flagged pairs were paraphrased (<code>{}</code>); <span class=\"failed\">{}</span> \
         were left out after failed requests (see paraphrase-gen's failures.jsonl).{}</p>",
        filled.paraphrased,
        pairs.awaiting,
        html::esc(&inputs.show(path)),
        left_out,
        match filled.temperature {
            Some((a, b)) => format!(" Temperatures {a:.2}\u{2013}{b:.2}."),
            None => String::new(),
        }
    );
    let mut rows: Vec<Vec<String>> = filled
        .models
        .iter()
        .map(|(m, n)| vec![format!("model {m}"), n.to_string()])
        .collect();
    rows.extend(
        filled
            .finish_reasons
            .iter()
            .map(|(r, n)| vec![format!("finish reason {r}"), n.to_string()]),
    );
    rows.push(vec![
        "prompt tokens".into(),
        filled.prompt_tokens.to_string(),
    ]);
    rows.push(vec![
        "completion tokens".into(),
        filled.completion_tokens.to_string(),
    ]);
    h.push_str(&html::table(
        "paraphrase-provenance",
        &["", "count"],
        &rows,
        &[],
    ));
    Ok(h)
}
