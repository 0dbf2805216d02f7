//! Text files as people's tools save them. Excel, Notepad and PowerShell start UTF-8 files
//! with a byte-order mark (U+FEFF, bytes EF BB BF); it is invisible in editors and in error
//! messages, so every text file the pipeline reads (metadata TSV, chunk files, JSONL, CSV,
//! prompt sets, configs, model-folder JSON) goes through this module, which drops it.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::error::{Error, Result};

/// The UTF-8 encoding of U+FEFF, the byte-order mark.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// `text` without a leading byte-order mark (a BOM elsewhere is content and stays).
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Skips a leading byte-order mark of `reader`, if there is one.
pub fn skip_bom<R: BufRead>(mut reader: R) -> std::io::Result<R> {
    let buf = reader.fill_buf()?;
    // A BOM split over two reads would need a reader that returns under 3 bytes before EOF;
    // files and BufReader never do.
    if buf.starts_with(UTF8_BOM) {
        reader.consume(UTF8_BOM.len());
    }
    Ok(reader)
}

/// Opens a text file for buffered reading, past a leading byte-order mark.
pub fn open(path: &Path) -> Result<BufReader<File>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    skip_bom(BufReader::new(file)).map_err(|e| Error::io(path, e))
}

/// Reads a whole text file as UTF-8, without a leading byte-order mark.
pub fn read_to_string(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// Reads a whole file's bytes without a leading byte-order mark (for JSON parsers, which
/// refuse one).
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.starts_with(UTF8_BOM) {
        bytes.drain(..UTF8_BOM.len());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bom_is_dropped_only_at_the_start() {
        assert_eq!(strip_bom("\u{feff}a\u{feff}b"), "a\u{feff}b");
        assert_eq!(strip_bom("ab"), "ab");
        let r = skip_bom(&b"\xEF\xBB\xBFpaperId\tyear\n"[..]).unwrap();
        assert_eq!(r, b"paperId\tyear\n");
        let r = skip_bom(&b"paperId"[..]).unwrap();
        assert_eq!(r, b"paperId");
    }
}
