//! Reading CSV label files: gzip detection, header lookup by trimmed name, rows with 1-based line numbers.

use crate::error::{EvalError, Result};
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

/// Opens a label file for reading, decompressing it when the name ends in `.gz`.
pub fn open(path: &Path) -> Result<Box<dyn Read>> {
    // Only regular files: a FIFO would block the reader forever, /dev/zero fill memory.
    let meta = std::fs::metadata(path).map_err(|e| EvalError::io(path, e))?;
    if !meta.is_file() {
        let e = std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file");
        return Err(EvalError::io(path, e));
    }
    let file = std::fs::File::open(path).map_err(|e| EvalError::io(path, e))?;
    let gz = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    Ok(if gz {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    })
}

/// A CSV file being read row by row.
pub(crate) struct Table<R: Read> {
    file: Arc<str>,
    reader: csv::Reader<LineIndex<R>>,
    header: Vec<String>,
}

/// A reader that notes where each line starts, so that a record's byte offset gives the line a
/// text editor shows. The csv crate's own line count is off for CRLF and CR-only files, which
/// come from Windows and old Mac tools alike.
pub(crate) struct LineIndex<R> {
    inner: R,
    offset: u64,
    /// Byte offsets where lines 2, 3, … start.
    starts: Vec<u64>,
    after_cr: bool,
}

impl<R: Read> LineIndex<R> {
    fn new(inner: R) -> Self {
        LineIndex { inner, offset: 0, starts: Vec::new(), after_cr: false }
    }

    /// The 1-based line holding byte `byte` of the stream (already read).
    fn line_of(&self, byte: u64) -> u64 {
        1 + self.starts.partition_point(|&s| s <= byte) as u64
    }
}

impl<R: Read> Read for LineIndex<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for (i, &b) in buf[..n].iter().enumerate() {
            let next = self.offset + i as u64 + 1;
            match b {
                b'\r' => self.starts.push(next),
                // The LF of a CRLF belongs to the line its CR began: the csv reader may start the
                // next record on it.
                b'\n' if self.after_cr => {}
                b'\n' => self.starts.push(next),
                _ => {}
            }
            self.after_cr = b == b'\r';
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// A column found in the header.
pub(crate) struct Col {
    index: usize,
    name: String,
}

/// One data row with the line it starts on.
pub(crate) struct Row {
    file: Arc<str>,
    line: u64,
    record: csv::StringRecord,
}

impl<R: Read> Table<R> {
    /// Reads the header of `reader`; `file` names the file in errors.
    pub(crate) fn new(reader: R, file: &str) -> Result<Self> {
        let file: Arc<str> = Arc::from(file);
        let reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(LineIndex::new(reader));
        let mut table = Table { file, reader, header: Vec::new() };
        let mut record = csv::StringRecord::new();
        let got = table.reader.read_record(&mut record).map_err(|e| table.csv_error(e))?;
        if !got {
            return Err(EvalError::Header { file: table.file.to_string(), message: "empty file (no header)".into() });
        }
        table.header = record.iter().map(|h| h.trim_start_matches('\u{feff}').trim().to_string()).collect();
        Ok(table)
    }

    /// The column called `name` (compared after trimming), if present.
    pub(crate) fn find(&self, name: &str) -> Option<Col> {
        self.header.iter().position(|h| h == name).map(|index| Col { index, name: name.to_string() })
    }

    /// The column called `name`, or an error naming the file and the columns it has.
    pub(crate) fn column(&self, name: &str) -> Result<Col> {
        self.find(name).ok_or_else(|| EvalError::Header {
            file: self.file.to_string(),
            message: format!("missing column '{name}' (header: {})", self.header.join(",")),
        })
    }

    /// The next data row, None at the end of the file.
    pub(crate) fn next_row(&mut self) -> Result<Option<Row>> {
        let mut record = csv::StringRecord::new();
        if !self.reader.read_record(&mut record).map_err(|e| self.csv_error(e))? {
            return Ok(None);
        }
        let line = record.position().map_or(0, |p| self.reader.get_ref().line_of(p.byte()));
        Ok(Some(Row { file: self.file.clone(), line, record }))
    }

    /// A CSV reading error (bad UTF-8, I/O, decompression) with the line where it happened, when known.
    fn csv_error(&self, e: csv::Error) -> EvalError {
        let file = self.file.to_string();
        let line = e.position().map(|p| self.reader.get_ref().line_of(p.byte()));
        let message = e.to_string();
        if let csv::ErrorKind::Io(source) = e.into_kind() {
            return EvalError::Io { file, source };
        }
        match line {
            Some(line) => EvalError::Row { file, line, message },
            None => EvalError::Header { file, message },
        }
    }
}

impl Row {
    /// The trimmed value of `col`, or an error when the row is too short to have it.
    pub(crate) fn get(&self, col: &Col) -> Result<&str> {
        self.record
            .get(col.index)
            .map(str::trim)
            .ok_or_else(|| self.error(format!("missing field '{}' (row has {} fields)", col.name, self.record.len())))
    }

    /// An error about this row.
    pub(crate) fn error(&self, message: impl Into<String>) -> EvalError {
        EvalError::Row { file: self.file.to_string(), line: self.line, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line of the row with a bad value, for each line-ending style.
    fn bad_line(text: &str) -> u64 {
        let mut t = Table::new(text.as_bytes(), "t.csv").unwrap();
        let col = t.column("v").unwrap();
        while let Some(row) = t.next_row().unwrap() {
            if row.get(&col).unwrap() == "bad" {
                match row.error("x") {
                    EvalError::Row { line, .. } => return line,
                    other => panic!("{other:?}"),
                }
            }
        }
        panic!("no bad row in {text:?}")
    }

    #[test]
    fn lines_count_as_an_editor_shows_them_for_every_line_ending() {
        let rows = ["k,v", "a,1", "b,2", "", "c,\"multi\nline\"", "d,bad"];
        for eol in ["\n", "\r\n", "\r"] {
            let text = rows.map(|r| r.replace('\n', eol)).join(eol) + eol;
            assert_eq!(bad_line(&text), 7, "{eol:?}");
        }
        assert_eq!(bad_line("\u{feff}k,v\r\nd,bad\r\n"), 2);
    }
}
