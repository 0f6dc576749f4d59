//! `manifest:FILE`: CSV (with a header) or JSONL rows naming an image (a path relative to the
//! manifest, an absolute path, or a URL in any supported object store) and its report.
//!
//! Columns: `image` (also `image_path` or `path`), `report`, and optionally `sample_id`,
//! `subject_id`, `study_id`, `view`. Without `sample_id`, the id is where the image resolves to:
//! its absolute path for a local file, its URL for an object-store image. (The reference as
//! written would make `images/0001.jpg` of `week-48/manifest.csv` and of `week-49/manifest.csv`
//! one sample, and drop the second as a duplicate.)
//!
//! A file whose extension is `.jsonl` or `.ndjson` (in any case) is JSONL, any other CSV; a
//! leading UTF-8 byte-order mark is ignored. In JSONL, paths, reports and views must be strings
//! and ids strings or integers; another type is a malformed row.

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
    let jsonl = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("ndjson"));
    // Editors on Windows start UTF-8 files with a byte-order mark; it is not part of row 1.
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&text);
    let rows = if jsonl { jsonl_rows(text, &shown) } else { csv_rows(text, &shown) };
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
            let mut fields = HashMap::new();
            for (k, v) in obj {
                let k = k.to_ascii_lowercase();
                if let Some(v) = json_field(&k, v).map_err(|e| Reject::new(KIND, at(), "malformed-row", e))? {
                    fields.insert(k, v);
                }
            }
            Ok((line, fields))
        })
        .collect()
}

/// The text of a known JSONL field, `None` for an unknown field or null. Paths, reports and views
/// must be strings (a number there is a mistake, not a name); ids may also be integers.
fn json_field(key: &str, v: &serde_json::Value) -> Result<Option<String>, String> {
    use serde_json::Value;
    let ids = ["sample_id", "subject_id", "study_id"];
    let texts = ["image", "image_path", "path", "report", "view"];
    if !ids.contains(&key) && !texts.contains(&key) {
        return Ok(None);
    }
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) if ids.contains(&key) && (n.is_u64() || n.is_i64()) => Ok(Some(n.to_string())),
        other => {
            let kind = match other {
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::Array(_) => "an array",
                _ => "an object",
            };
            let want = if ids.contains(&key) { "a string or an integer" } else { "a string" };
            Err(format!("field '{key}' must be {want}, not {kind}"))
        }
    }
}

/// An image reference with `.` and `x/..` path steps resolved on the text alone (URLs as given).
fn lexical(image: &str) -> String {
    if image.contains("://") {
        return image.to_string();
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in image.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    if image.starts_with('/') { format!("/{joined}") } else { joined }
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
    // The partition key must be the same on every machine (not the absolute path) and the same
    // for every row naming one sample (so that no two partitions both take it).
    let key = get("sample_id").unwrap_or_else(|| lexical(&image));
    Ok(Item {
        source: KIND,
        key,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_keys_resolve_dot_steps_on_the_text() {
        assert_eq!(lexical("./a.png"), "a.png");
        assert_eq!(lexical("img/./x/../a.png"), "img/a.png");
        assert_eq!(lexical("../shared/a.png"), "../shared/a.png");
        assert_eq!(lexical("/data//a.png"), "/data/a.png");
        assert_eq!(lexical("s3://b/./a.png"), "s3://b/./a.png");
    }

    /// The rows of `body` written to `dir/name` and listed: items by sample id, rejects by
    /// (line, reason, detail).
    fn listed(dir: &Path, name: &str, body: &[u8]) -> (Vec<Item>, Vec<(String, String, String)>) {
        let file = dir.join(name);
        std::fs::write(&file, body).expect("write");
        let (mut items, mut rejects) = (Vec::new(), Vec::new());
        for entry in list(&file).expect("list") {
            match entry {
                Ok(item) => items.push(item),
                Err(r) => {
                    rejects.push((r.input.rsplit(':').next().unwrap_or_default().to_string(), r.reason, r.detail))
                }
            }
        }
        (items, rejects)
    }

    #[test]
    fn a_jsonl_manifest_may_start_with_a_bom_and_end_in_upper_case() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = "\u{FEFF}{\"image\":\"a.jpg\",\"report\":\"Normal.\",\"sample_id\":\"a\"}\n{\"image\":\"b.jpg\",\"report\":\"Normal.\",\"sample_id\":\"b\"}\n";
        for name in ["rows.jsonl", "ROWS.JSONL", "rows.NDJSON"] {
            let (items, rejects) = listed(dir.path(), name, body.as_bytes());
            assert_eq!(rejects, [], "{name}");
            assert_eq!(items.iter().map(|i| i.sample_id.as_str()).collect::<Vec<_>>(), ["a", "b"], "{name}");
        }
        let (items, rejects) = listed(dir.path(), "rows.CSV", "\u{FEFF}image,report\na.jpg,Normal.\n".as_bytes());
        assert_eq!((items.len(), rejects), (1, vec![]));
    }

    #[test]
    fn jsonl_fields_of_the_wrong_type_are_malformed_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = br#"{"image":"a.jpg","report":12345}
{"image":7,"report":"Normal."}
{"image":"c.jpg","report":"Normal.","view":["PA"]}
{"image":"d.jpg","report":"Normal.","sample_id":true}
{"image":"e.jpg","report":"Normal.","sample_id":5,"subject_id":10000032,"study_id":null,"extra":[1]}
"#;
        let (items, rejects) = listed(dir.path(), "rows.jsonl", body);
        let expected = [
            ("1", "field 'report' must be a string, not a number"),
            ("2", "field 'image' must be a string, not a number"),
            ("3", "field 'view' must be a string, not an array"),
            ("4", "field 'sample_id' must be a string or an integer, not a boolean"),
        ];
        let got: Vec<(&str, &str, &str)> =
            rejects.iter().map(|(l, r, d)| (l.as_str(), r.as_str(), d.as_str())).collect();
        assert_eq!(got, expected.map(|(l, d)| (l, "malformed-row", d)));
        assert_eq!(items.len(), 1);
        assert_eq!((items[0].sample_id.as_str(), items[0].subject_id.as_deref()), ("5", Some("10000032")));
        assert_eq!(items[0].study_id, None);
    }
}
