//! The page: sections of HTML text, tables and inline SVG figures, with one stylesheet in the
//! head and nothing loaded from elsewhere. The markup is well-formed XML (self-closed void
//! elements, numeric entities only), so it opens in any browser and parses with an XML parser.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use common::provenance::Provenance;

use crate::inputs::RunInputs;
use crate::map::MapFile;
use crate::{Error, Options, Report, Result, STAGE};

/// One SVG figure: written inline and as `<name>.svg`.
#[derive(Debug, Clone)]
pub struct Figure {
    /// File stem, also the element id (`fig-<name>`).
    pub name: String,
    pub svg: String,
    pub caption: String,
}

/// A section of the page, shown or replaced by a note.
#[derive(Debug, Clone)]
pub struct Section {
    /// Element id (`corpus`, `pairs`, …).
    pub id: &'static str,
    pub title: &'static str,
    pub content: Content,
}

#[derive(Debug, Clone)]
pub enum Content {
    /// `html` holds the text and tables, with `{fig:NAME}` where figure NAME goes.
    Shown {
        html: String,
        figures: Vec<Figure>,
        maps: Vec<MapFile>,
    },
    /// Why the section is not shown (which input is missing).
    Missing(String),
}

impl Section {
    pub fn missing(id: &'static str, title: &'static str, note: impl Into<String>) -> Self {
        Section {
            id,
            title,
            content: Content::Missing(note.into()),
        }
    }

    /// The note of a section that is not shown.
    pub fn note(&self) -> Option<&str> {
        match &self.content {
            Content::Missing(n) => Some(n),
            Content::Shown { .. } => None,
        }
    }
}

/// Escapes text for HTML/XML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML; corpus text may hold them.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A table: a header row and rows of plain-text cells (escaped here). `marked` rows get
/// class `chosen` (bold, with a marker), e.g. the checkpoint that was saved.
pub fn table(class: &str, header: &[&str], rows: &[Vec<String>], marked: &[usize]) -> String {
    let mut s = format!("<table class=\"{}\">\n<thead><tr>", esc(class));
    for h in header {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    for (i, row) in rows.iter().enumerate() {
        if marked.contains(&i) {
            s.push_str("<tr class=\"chosen\">");
        } else {
            s.push_str("<tr>");
        }
        for cell in row {
            let _ = write!(s, "<td>{}</td>", esc(cell));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody></table>\n");
    s
}

/// A table of per-figure data, folded away under the figure (also what tests compare).
pub fn data_table(summary: &str, class: &str, header: &[&str], rows: &[Vec<String>]) -> String {
    format!(
        "<details><summary>{}</summary>\n{}</details>\n",
        esc(summary),
        table(class, header, rows, &[])
    )
}

/// `x` with `digits` decimals, or an en dash for a missing value.
pub fn num(x: Option<f64>, digits: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        Some(v) => format!("{v}"),
        None => "\u{2013}".into(),
    }
}

/// A share as a percentage with one decimal.
pub fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "\u{2013}".into();
    }
    format!("{:.1} %", 100.0 * part as f64 / whole as f64)
}

const STYLE: &str = "
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 1em auto; padding: 0 1em; color: #111; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #333; padding-top: 0.8em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.15em 0.5em; text-align: right; vertical-align: top; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
table.text td { text-align: left; max-width: 40em; }
tr.chosen td { font-weight: bold; background: #f3f3f3; } tr.chosen td:first-child::before { content: \"\\2605  \"; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #333; }
p.note { background: #f6f6f6; border-left: 4px solid #888; padding: 0.4em 0.8em; }
nav li.missing { color: #666; } details { margin: 0.4em 0; } summary { cursor: pointer; }
code { font-size: 0.95em; }
@media print { details { display: block; } figure { break-inside: avoid; } }
";

/// The whole page. Deterministic: no clock, no absolute path but the run folder's name.
pub fn page(inputs: &RunInputs, sections: &[Section]) -> String {
    let run_name = run_name(&inputs.run_dir);
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n\
         <title>strata report: {name}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <header>\n<h1>strata report: {name}</h1>\n",
        name = esc(&run_name),
    );
    s.push_str("<nav><ul>\n");
    for sec in sections {
        match sec.note() {
            None => {
                let _ = writeln!(s, "<li><a href=\"#{}\">{}</a></li>", sec.id, esc(sec.title));
            }
            Some(note) => {
                let _ = writeln!(
                    s,
                    "<li class=\"missing\"><a href=\"#{}\">{}</a>: not shown ({})</li>",
                    sec.id,
                    esc(sec.title),
                    esc(note)
                );
            }
        }
    }
    s.push_str("</ul></nav>\n");
    if !inputs.stages.is_empty() {
        let rows: Vec<Vec<String>> = inputs
            .stages
            .iter()
            .map(|(f, st, v)| vec![format!("{f}/"), st.clone(), v.clone()])
            .collect();
        s.push_str(&data_table(
            "Provenance: the stage outputs this page reads (from each folder's MANIFEST.json)",
            "provenance",
            &["folder", "stage", "version"],
            &rows,
        ));
    }
    s.push_str("</header>\n");
    for sec in sections {
        let _ = writeln!(
            s,
            "<section id=\"{}\">\n<h2>{}</h2>",
            sec.id,
            esc(sec.title)
        );
        match &sec.content {
            Content::Missing(note) => {
                let _ = writeln!(
                    s,
                    "<p class=\"note missing-input\">Not shown: {}.</p>",
                    esc(note)
                );
            }
            Content::Shown { html, figures, .. } => {
                let mut body = html.clone();
                for f in figures {
                    let fig = format!(
                        "<figure id=\"fig-{name}\">\n{svg}\n<figcaption>{cap} \
                         (<a href=\"{name}.svg\">{name}.svg</a>)</figcaption>\n</figure>\n",
                        name = f.name,
                        svg = strip_xml_declaration(&f.svg),
                        cap = esc(&f.caption),
                    );
                    body = body.replace(&format!("{{fig:{}}}", f.name), &fig);
                }
                s.push_str(&body);
            }
        }
        s.push_str("</section>\n");
    }
    let _ = write!(
        s,
        "<footer><p>Written by strata {STAGE} {}. Every figure is also a standalone SVG file \
         beside this page; the embedding maps' coordinates are in map-*.parquet.</p></footer>\n\
         </body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    );
    s
}

fn strip_xml_declaration(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

fn run_name(dir: &Path) -> String {
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    canon
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| canon.display().to_string())
}

/// Writes the page, the figures, the map tables and MANIFEST.json into a fresh folder beside
/// `opts.out`, then swaps it into place: OUT is the old report or the new one, never a mix.
pub fn write_outputs(
    opts: &Options,
    inputs: &RunInputs,
    page: &str,
    sections: &[Section],
) -> Result<Report> {
    let out = &opts.out;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::Invalid(format!("--out {} has no folder name", out.display())))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| common::Error::io(&parent, e))?;
    // A run killed before its swap leaves its folder; the page is rebuilt whole, so a rerun
    // removes such leftovers rather than resuming them.
    if let Ok(entries) = std::fs::read_dir(&parent) {
        let prefix = format!(".{name}.tmp-");
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| common::Error::io(&tmp, e))?;
    let result = (|| {
        let provenance = provenance(opts, inputs)?;
        let mut files = Vec::new();
        let mut put = |file: &str, bytes: &[u8]| -> Result<()> {
            let path = tmp.join(file);
            std::fs::write(&path, bytes).map_err(|e| common::Error::io(&path, e))?;
            common::manifest::record(&tmp, &path, None, &provenance)?;
            files.push(file.to_string());
            Ok(())
        };
        put("index.html", page.as_bytes())?;
        for sec in sections {
            if let Content::Shown { figures, .. } = &sec.content {
                for f in figures {
                    put(&format!("{}.svg", f.name), f.svg.as_bytes())?;
                }
            }
        }
        for sec in sections {
            if let Content::Shown { maps, .. } = &sec.content {
                for m in maps {
                    let path = tmp.join(&m.file);
                    let rows = m.write(&path, &provenance)?;
                    common::manifest::record(&tmp, &path, Some(rows), &provenance)?;
                    files.push(m.file.clone());
                }
            }
        }
        Ok::<_, Error>(files)
    })();
    let files = match result {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    swap_into_place(&tmp, out)?;
    let index = out.join("index.html");
    Ok(Report {
        page_bytes: page.len() as u64,
        index,
        sections: sections
            .iter()
            .map(|s| (s.id.to_string(), s.note().map(str::to_string)))
            .collect(),
        files,
    })
}

/// The report's provenance: its options (paths as given) and the sha256 of every input file.
fn provenance(opts: &Options, inputs: &RunInputs) -> Result<Provenance> {
    let params = serde_json::json!({
        "map_sample": opts.map_sample,
        "length_sample": opts.length_sample,
        "seed": opts.seed,
        "corpus": opts.corpus,
        "base_model": opts.base_model,
    });
    let mut p = Provenance::new(STAGE, env!("CARGO_PKG_VERSION"), params);
    let mut files: Vec<&PathBuf> = Vec::new();
    files.extend(inputs.pairs.iter());
    files.extend(inputs.pairs_report.iter());
    files.extend(inputs.pairs_filled.iter());
    files.extend(inputs.embeddings.iter());
    if let Some((d, c)) = &inputs.precocity {
        files.push(d);
        files.push(c);
    }
    files.extend(inputs.corpus.iter());
    for f in files {
        p = p.with_input(f)?;
    }
    if let Some(m) = &inputs.model {
        p = p.with_input(&m.join("metrics.jsonl"))?;
    }
    Ok(p)
}

/// Replaces `out` by `tmp`: the old folder is moved aside, the new one renamed in, the old
/// one removed. A kill in between leaves either folder under `out`'s name, or the new one
/// beside it (the next run starts afresh).
fn swap_into_place(tmp: &Path, out: &Path) -> Result<()> {
    let old = tmp.with_file_name(format!(
        "{}.old",
        tmp.file_name().unwrap_or_default().to_string_lossy()
    ));
    let had_old = out.exists();
    if had_old {
        std::fs::rename(out, &old).map_err(|e| common::Error::io(out, e))?;
    }
    if let Err(e) = std::fs::rename(tmp, out) {
        if had_old {
            let _ = std::fs::rename(&old, out);
        }
        return Err(common::Error::io(out, e).into());
    }
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}
