//! `manifest:FILE`: CSV (with a header) or JSONL rows naming an image (a path relative to the
//! manifest, an absolute path, or a URL in any supported object store) and its report.
//!
//! Columns: `image` (also `image_path` or `path`), `report`, and optionally `sample_id`,
//! `subject_id`, `study_id`, `view`. Without `sample_id`, the id is where the image resolves to:
//! its absolute path for a local file, its URL for an object-store image. (The reference as
//! written would make `images/0001.jpg` of `week-48/manifest.csv` and of `week-49/manifest.csv`
//! one sample, and drop the second as a duplicate.)

use std::collections::HashMap;
use std::path::Path;

use super::{ImageInput, Item, Reject, ReportInput, check_report, csv_fields, csv_records};
use crate::error::IngestError;

const KIND: &str = "manifest";

/// Lists the rows of a manifest; a malformed row is a reject naming its line.
pub fn list(file: &Path) -> Result<Vec<Result<Item, Reject>>, IngestError> {
    let text = crate::files::read_regular(file, crate::files::MAX_FILE_BYTES).map_err(|e| IngestError::Source {
        source_kind: KIND,
        detail: format!("cannot read {}: {e}", file.display()),
    })?;
    let base = file.parent().unwrap_or(Path::new("."));
    let shown = file.display().to_string();
    let jsonl = file.extension().is_some_and(|e| e == "jsonl" || e == "ndjson");
    let rows = if jsonl { jsonl_rows(&text, &shown) } else { csv_rows(&text, &shown) };
    Ok(rows.into_iter().map(|r| r.and_then(|(line, fields)| item(base, &shown, line, &fields))).collect())
}

type Row = (usize, HashMap<String, String>);

fn csv_rows(text: &[u8], shown: &str) -> Vec<Result<Row, Reject>> {
    let (headers, records) = match csv_records(text, shown, KIND) {
        Ok(h) => h,
        Err(e) => return vec![Err(Reject::new(KIND, format!("{shown}:1"), "malformed-row", e))],
    };
    let headers: Vec<String> = headers.iter().map(|h| h.trim().to_ascii_lowercase()).collect();
    records
        .into_iter()
        .map(|rec| {
            let rec = rec?;
            Ok((rec.0, csv_fields(&headers, &rec, shown, KIND, |_| "non-utf8-report")?))
        })
        .collect()
}

fn jsonl_rows(text: &[u8], shown: &str) -> Vec<Result<Row, Reject>> {
    text.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .map(|(i, l)| {
            let line = i + 1;
            let at = || format!("{shown}:{line}");
            let s = std::str::from_utf8(l).map_err(|e| Reject::new(KIND, at(), "non-utf8-report", e.to_string()))?;
            let v: serde_json::Value =
                serde_json::from_str(s).map_err(|e| Reject::new(KIND, at(), "malformed-row", e.to_string()))?;
            let obj = v.as_object().ok_or_else(|| Reject::new(KIND, at(), "malformed-row", "not a JSON object"))?;
            let fields = obj
                .iter()
                .filter_map(|(k, v)| match v {
                    serde_json::Value::String(s) => Some((k.to_ascii_lowercase(), s.clone())),
                    serde_json::Value::Number(n) => Some((k.to_ascii_lowercase(), n.to_string())),
                    _ => None,
                })
                .collect();
            Ok((line, fields))
        })
        .collect()
}

fn item(base: &Path, shown: &str, line: usize, f: &HashMap<String, String>) -> Result<Item, Reject> {
    let at = format!("{shown}:{line}");
    let get = |k: &str| f.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let image = get("image")
        .or_else(|| get("image_path"))
        .or_else(|| get("path"))
        .ok_or_else(|| Reject::new(KIND, &at, "malformed-row", "no image column (image, image_path or path)"))?;
    let input = if image.contains("://") {
        ImageInput::Url(image.clone())
    } else {
        let p = Path::new(&image);
        let p = if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        // Only fails without a working directory; the joined path is then the best id there is.
        ImageInput::File(std::path::absolute(&p).unwrap_or(p))
    };
    let sample_id = get("sample_id").unwrap_or_else(|| match &input {
        ImageInput::File(p) => p.display().to_string(),
        _ => image.clone(),
    });
    let report = match f.get("report") {
        None => return Err(Reject::new(KIND, &at, "malformed-row", "no report column").with_sample(&sample_id)),
        Some(r) => match check_report(r) {
            Ok(t) => ReportInput::Text(t),
            Err(reason) => return Err(Reject::new(KIND, &at, reason, "report is empty").with_sample(&sample_id)),
        },
    };
    Ok(Item {
        source: KIND,
        key: image.clone(),
        sample_id,
        subject_id: get("subject_id"),
        study_id: get("study_id"),
        view: get("view").map(|v| v.to_ascii_uppercase()),
        image_name: Some(image),
        image: input,
        report,
        labels: None,
    })
}
