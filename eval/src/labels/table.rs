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
    reader: csv::Reader<R>,
    header: Vec<String>,
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
        let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(reader);
        let mut record = csv::StringRecord::new();
        let got = reader.read_record(&mut record).map_err(|e| csv_error(&file, e))?;
        if !got {
            return Err(EvalError::Header { file: file.to_string(), message: "empty file (no header)".into() });
        }
        let header = record.iter().map(|h| h.trim_start_matches('\u{feff}').trim().to_string()).collect();
        Ok(Table { file, reader, header })
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
        if !self.reader.read_record(&mut record).map_err(|e| csv_error(&self.file, e))? {
            return Ok(None);
        }
        let line = record.position().map_or(0, |p| p.line());
        Ok(Some(Row { file: self.file.clone(), line, record }))
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

/// A CSV reading error (bad UTF-8, I/O, decompression) with the line where it happened, when known.
fn csv_error(file: &str, e: csv::Error) -> EvalError {
    let line = e.position().map(|p| p.line());
    let message = e.to_string();
    if let csv::ErrorKind::Io(source) = e.into_kind() {
        return EvalError::Io { file: file.to_string(), source };
    }
    match line {
        Some(line) => EvalError::Row { file: file.to_string(), line, message },
        None => EvalError::Header { file: file.to_string(), message },
    }
}
