//! `mimic-cxr:ROOT`: the MIMIC-CXR-JPG 2.0 layout (`files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg`,
//! `mimic-cxr-2.0.0-metadata.csv[.gz]` for the view position, `mimic-cxr-2.0.0-split.csv[.gz]`),
//! with report text from the MIMIC-CXR reports tree (`--reports DIR`:
//! `files/pXX/pSUBJECT/sSTUDY.txt`), reduced to its FINDINGS and IMPRESSION sections.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{ImageInput, Item, Reject, ReportInput, SourceOptions, csv_fields, csv_records};
use crate::error::IngestError;

const KIND: &str = "mimic-cxr";

fn err(detail: String) -> IngestError {
    IngestError::Source { source_kind: KIND, detail }
}

/// A side CSV of the layout: its columns, its rows by column, and a reject for each row that
/// could not be read (that row is left out, the others are used).
struct Table {
    headers: Vec<String>,
    rows: Vec<HashMap<String, String>>,
    rejects: Vec<Reject>,
}

/// Reads `name` or `name.gz` under `root`; `None` when neither exists.
fn read_csv(root: &Path, name: &str) -> Result<Option<Table>, IngestError> {
    let plain = root.join(name);
    let gz = root.join(format!("{name}.gz"));
    let (text, path) = if plain.exists() {
        (crate::files::read_regular(&plain, crate::files::MAX_FILE_BYTES), plain)
    } else if gz.exists() {
        let raw = crate::files::read_regular(&gz, crate::files::MAX_FILE_BYTES);
        let text = raw.and_then(|raw| {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(raw.as_slice()).read_to_end(&mut out).map(|_| out)
        });
        (text, gz)
    } else {
        return Ok(None);
    };
    let shown = path.display().to_string();
    let text = text.map_err(|e| err(format!("{shown}: {e}")))?;
    let (headers, records) = csv_records(&text, &shown, KIND).map_err(|e| err(format!("{shown}: {e}")))?;
    let mut table = Table { headers, rows: Vec::new(), rejects: Vec::new() };
    for rec in records {
        match rec.and_then(|r| csv_fields(&table.headers, &r, &shown, KIND, |_| "malformed-row")) {
            Ok(row) => table.rows.push(row),
            Err(reject) => table.rejects.push(reject),
        }
    }
    Ok(Some(table))
}

/// The `value` column of a side CSV by `dicom_id` (empty without the file); its rejects go to `out`.
fn by_dicom_id(table: Option<Table>, value: &str, out: &mut Vec<Result<Item, Reject>>) -> HashMap<String, String> {
    let Some(table) = table else { return HashMap::new() };
    out.extend(table.rejects.into_iter().map(Err));
    table.rows.into_iter().filter_map(|mut r| Some((r.remove("dicom_id")?, r.remove(value)?))).collect()
}

/// Section headers of MIMIC-CXR reports. Only these end a section: sub-headers inside FINDINGS
/// (`LUNGS:`, `HEART:`, `PLEURA:`) belong to it.
const HEADERS: [&str; 21] = [
    "FINDINGS AND IMPRESSION",
    "FINDINGS",
    "IMPRESSION",
    "INDICATION",
    "CLINICAL HISTORY",
    "HISTORY",
    "COMPARISONS",
    "COMPARISON",
    "TECHNIQUE",
    "EXAMINATION",
    "EXAM",
    "REASON FOR EXAMINATION",
    "REASON FOR EXAM",
    "WET READ",
    "RECOMMENDATION(S)",
    "RECOMMENDATIONS",
    "RECOMMENDATION",
    "NOTIFICATION",
    "ADDENDUM",
    "FINAL REPORT",
    "PROCEDURE",
];

/// The header `name` at the start of `s`, followed by optional blanks and a colon (or, for
/// `FINAL REPORT`, standing alone on its line); returns the length up to the body.
fn header_len(s: &str, name: &str, any_case: bool) -> Option<usize> {
    let head = s.as_bytes().get(..name.len())?;
    let same = if any_case { head.eq_ignore_ascii_case(name.as_bytes()) } else { head == name.as_bytes() };
    if !same {
        return None;
    }
    let rest = &s[name.len()..];
    let blanks = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    if rest[blanks..].starts_with(':') {
        return Some(name.len() + blanks + 1);
    }
    // MIMIC writes "FINAL REPORT" as a line of its own, without a colon.
    (name == "FINAL REPORT" && rest.lines().next().is_none_or(|l| l.trim().is_empty())).then_some(name.len())
}

/// Every known header of `text` as (start, body start, name). A header counts at the start of a
/// line in any case, or later on a line in capitals after a blank ("Clear lungs. IMPRESSION:
/// Normal."), never lower-case inside a sentence ("prior findings: nodule").
fn headers(text: &str) -> Vec<(usize, usize, &'static str)> {
    let mut found = Vec::new();
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let mut at = line.len() - line.trim_start().len();
        let mut first = true;
        while at < line.len() {
            let rest = &line[at..];
            // A name must be followed by its colon, so "FINDINGS" cannot match "FINDINGS AND IMPRESSION:".
            let hit = HEADERS.iter().find_map(|name| header_len(rest, name, first).map(|len| (len, *name)));
            match hit {
                Some((len, name)) => {
                    found.push((line_start + at, line_start + at + len, name));
                    at += len;
                }
                None => at += rest.chars().next().map_or(1, char::len_utf8),
            }
            // The next candidate is the next word after a blank.
            first = false;
            while at < line.len() {
                let before = line[..at].chars().next_back();
                if before.is_some_and(char::is_whitespace) && !line[at..].starts_with(char::is_whitespace) {
                    break;
                }
                at += line[at..].chars().next().map_or(1, char::len_utf8);
            }
        }
        line_start += line.len();
    }
    found
}

/// The FINDINGS and IMPRESSION sections of a MIMIC-CXR report, joined; `None` if it has neither.
/// A "FINDINGS AND IMPRESSION:" section counts as impression. Each section runs to the next known
/// header.
pub fn findings_and_impression(text: &str) -> Option<String> {
    let found = headers(text);
    let (mut findings, mut impression) = (Vec::new(), Vec::new());
    for (i, &(_, body_start, name)) in found.iter().enumerate() {
        let into = match name {
            "FINDINGS" => &mut findings,
            "IMPRESSION" | "FINDINGS AND IMPRESSION" => &mut impression,
            _ => continue,
        };
        let end = found.get(i + 1).map_or(text.len(), |next| next.0);
        let body = text[body_start..end].split_whitespace().collect::<Vec<_>>().join(" ");
        if !body.is_empty() {
            into.push(body);
        }
    }
    let part = |name: &str, bodies: Vec<String>| (!bodies.is_empty()).then(|| format!("{name}: {}", bodies.join(" ")));
    let parts: Vec<String> =
        [part("FINDINGS", findings), part("IMPRESSION", impression)].into_iter().flatten().collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// Lists the JPEGs of the layout with their reports and view positions.
pub fn list(root: &Path, opts: &SourceOptions) -> Result<Vec<Result<Item, Reject>>, IngestError> {
    let reports_root =
        opts.reports.clone().ok_or_else(|| err("--reports DIR (the MIMIC-CXR reports tree) is required".into()))?;
    let meta = read_csv(root, "mimic-cxr-2.0.0-metadata.csv")?;
    // Filtering by view needs the metadata and its two columns: without them every image would
    // be filtered out without a word.
    if !opts.views.is_empty() {
        let Some(table) = &meta else {
            return Err(err(format!("--views needs {}", root.join("mimic-cxr-2.0.0-metadata.csv[.gz]").display())));
        };
        if !["dicom_id", "ViewPosition"].iter().all(|c| table.headers.iter().any(|h| h == c)) {
            return Err(err("mimic-cxr-2.0.0-metadata.csv lacks the dicom_id or ViewPosition column".into()));
        }
    }
    let split = read_csv(root, "mimic-cxr-2.0.0-split.csv")?;
    let mut out: Vec<Result<Item, Reject>> = Vec::new();
    // Stored and matched as the manifest source and --views have them: " pa " is PA.
    let views: HashMap<String, String> = by_dicom_id(meta, "ViewPosition", &mut out)
        .into_iter()
        .map(|(id, v)| (id, v.trim().to_ascii_uppercase()))
        .collect();
    let split = by_dicom_id(split, "split", &mut out);
    let mut images = Vec::new();
    walk(&root.join("files"), 0, &mut images).map_err(|e| err(format!("{}: {e}", root.join("files").display())))?;
    images.sort();
    for img in images {
        let shown = img.display().to_string();
        let (Some(study_dir), Some(dicom_id)) =
            (img.parent(), img.file_stem().map(|s| s.to_string_lossy().to_string()))
        else {
            continue;
        };
        let study = study_dir.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        let subject_dir = study_dir.parent();
        let subject =
            subject_dir.and_then(|p| p.file_name()).map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        let group =
            subject_dir.and_then(|p| p.parent()).and_then(|p| p.file_name()).map(|s| s.to_string_lossy().to_string());
        let view = views.get(&dicom_id).cloned().filter(|v| !v.is_empty());
        if !opts.views.is_empty()
            && !view.as_ref().is_some_and(|v| opts.views.iter().any(|w| w.eq_ignore_ascii_case(v)))
        {
            continue;
        }
        let sample_id = format!("mimic-{dicom_id}");
        let report_path = group.map(|g| reports_root.join("files").join(g).join(&subject).join(format!("{study}.txt")));
        let report = match report_path.as_deref().map(super::read_report) {
            None => Err(("missing-report", "cannot place the study in the reports tree".to_string())),
            Some(Err(e)) => Err(e),
            Some(Ok(text)) => {
                findings_and_impression(&text).ok_or(("empty-report", "no FINDINGS or IMPRESSION section".into()))
            }
        };
        let report = match report {
            Ok(t) => ReportInput::Text(t),
            Err((reason, detail)) => {
                ReportInput::Bad(Reject::new(KIND, &shown, reason, detail).with_sample(&sample_id))
            }
        };
        out.push(Ok(Item {
            source: KIND,
            key: format!("{subject}/{study}/{dicom_id}"),
            sample_id,
            subject_id: Some(subject.trim_start_matches('p').to_string()),
            study_id: Some(study.trim_start_matches('s').to_string()),
            view,
            image_name: img.file_name().map(|n| n.to_string_lossy().to_string()),
            labels: split.get(&dicom_id).map(|s| serde_json::json!({ "split": s })),
            image: ImageInput::File(img),
            report,
        }));
    }
    Ok(out)
}

/// Collects `files/pXX/pSUBJECT/sSTUDY/*.jpg` (depth 3 below `dir`).
fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() && depth < 3 {
            walk(&path, depth + 1, out)?;
        } else if depth == 3 && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg")) {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_extracted() {
        let r = "FINAL REPORT\n EXAMINATION: CHEST\n\n FINDINGS: Small right effusion.\n No pneumothorax.\n\n IMPRESSION: Effusion.\n";
        assert_eq!(
            findings_and_impression(r).as_deref(),
            Some("FINDINGS: Small right effusion. No pneumothorax. IMPRESSION: Effusion.")
        );
        assert_eq!(
            findings_and_impression("IMPRESSION:\n No acute process.").as_deref(),
            Some("IMPRESSION: No acute process.")
        );
        assert_eq!(findings_and_impression("INDICATION: cough"), None);
        // An all-caps line without a colon is text, not a header.
        assert_eq!(
            findings_and_impression("FINDINGS:\n PA AND LATERAL\n Lungs clear.\n IMPRESSION: Normal.").as_deref(),
            Some("FINDINGS: PA AND LATERAL Lungs clear. IMPRESSION: Normal.")
        );
    }

    #[test]
    fn structured_findings_keep_their_sub_headers() {
        let r = "                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ with cough, evaluate for pneumonia

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  ___

 FINDINGS:
 
 LUNGS: Clear without focal consolidation.
 PLEURA: No effusion or pneumothorax.
 HEART: Normal size.
 MEDIASTINUM: Normal contours.
 
 IMPRESSION:
 
 No acute cardiopulmonary process.
";
        assert_eq!(
            findings_and_impression(r).as_deref(),
            Some(
                "FINDINGS: LUNGS: Clear without focal consolidation. PLEURA: No effusion or pneumothorax. \
                 HEART: Normal size. MEDIASTINUM: Normal contours. IMPRESSION: No acute cardiopulmonary process."
            )
        );
    }

    #[test]
    fn headers_on_one_line_and_in_any_case_split_once() {
        assert_eq!(
            findings_and_impression("FINDINGS: Clear lungs. IMPRESSION: Normal chest.").as_deref(),
            Some("FINDINGS: Clear lungs. IMPRESSION: Normal chest.")
        );
        assert_eq!(
            findings_and_impression("Findings: Clear lungs.\nImpression: Normal chest.\n").as_deref(),
            Some("FINDINGS: Clear lungs. IMPRESSION: Normal chest.")
        );
        // A known header later on a header's own line ends the section there.
        assert_eq!(
            findings_and_impression("IMPRESSION: Small nodule. RECOMMENDATION(S): CT in 3 months.").as_deref(),
            Some("IMPRESSION: Small nodule.")
        );
    }

    #[test]
    fn only_known_headers_at_a_line_start_open_or_close_sections() {
        // "prior findings:" inside the indication is text, not the FINDINGS section.
        let r = "INDICATION: ___F with prior findings: nodule in the right upper lobe.\n\n\
                 FINDINGS: Stable 6 mm nodule in the right upper lobe.\n\n\
                 IMPRESSION: Stable nodule.\n\n\
                 RECOMMENDATION(S): Follow-up chest CT in 12 months.\n\n\
                 NOTIFICATION: The findings were discussed with Dr. ___ on ___.\n";
        assert_eq!(
            findings_and_impression(r).as_deref(),
            Some("FINDINGS: Stable 6 mm nodule in the right upper lobe. IMPRESSION: Stable nodule.")
        );
        // Before this fix "prior findings: nodule" became the FINDINGS of a report without any.
        assert_eq!(findings_and_impression("INDICATION: prior findings: nodule\nCOMPARISON: None."), None);
        let r = "WET READ: ___ 5:43 PM\n  No pneumonia.\n\nFINAL REPORT\nHISTORY: Fever.\n\n\
                 FINDINGS AND IMPRESSION:\n  Mild cardiomegaly. No edema.\n\nADDENDUM: Reviewed.\n";
        assert_eq!(findings_and_impression(r).as_deref(), Some("IMPRESSION: Mild cardiomegaly. No edema."));
    }

    /// A two-image MIMIC-CXR-JPG tree (a PA and a lateral film of one study) and its reports.
    fn tree(dir: &Path, metadata: Option<&str>) -> SourceOptions {
        let study = dir.join("jpg/files/p10/p10000032/s50414267");
        std::fs::create_dir_all(&study).expect("mkdir");
        for id in ["pa-1", "lat-1"] {
            std::fs::write(study.join(format!("{id}.jpg")), b"listed, not decoded").expect("jpg");
        }
        if let Some(csv) = metadata {
            std::fs::write(dir.join("jpg/mimic-cxr-2.0.0-metadata.csv"), csv).expect("csv");
        }
        let reports = dir.join("reports/files/p10/p10000032");
        std::fs::create_dir_all(&reports).expect("mkdir");
        std::fs::write(reports.join("s50414267.txt"), "FINDINGS: Clear lungs.\nIMPRESSION: Normal.").expect("txt");
        SourceOptions { reports: Some(dir.join("reports")), views: vec!["PA".into()], ..Default::default() }
    }

    #[test]
    fn a_malformed_side_csv_row_is_a_reject_and_the_rest_is_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Line 3 has too few fields, line 4 is not UTF-8; neither may stop the listing.
        let meta = b"dicom_id,subject_id,ViewPosition\npa-1,10000032,PA\nlat-1\nx-9,1,LAT\xe9RAL\n";
        let opts = tree(dir.path(), None);
        let root = dir.path().join("jpg");
        std::fs::write(root.join("mimic-cxr-2.0.0-metadata.csv"), meta).expect("csv");
        std::fs::write(root.join("mimic-cxr-2.0.0-split.csv"), "dicom_id,study_id,split\npa-1,1,train\nlat-1,1\n")
            .expect("csv");
        let listed = list(&root, &SourceOptions { views: vec![], ..opts }).expect("list");
        let mut rejects: Vec<(String, String)> = listed
            .iter()
            .filter_map(|e| e.as_ref().err())
            .map(|r| (r.input.rsplit('/').next().unwrap_or_default().to_string(), r.reason.clone()))
            .collect();
        rejects.sort();
        let malformed = |at: &str| (at.to_string(), "malformed-row".to_string());
        assert_eq!(
            rejects,
            [
                malformed("mimic-cxr-2.0.0-metadata.csv:3"),
                malformed("mimic-cxr-2.0.0-metadata.csv:4"),
                malformed("mimic-cxr-2.0.0-split.csv:3")
            ]
        );
        let items: Vec<&Item> = listed.iter().filter_map(|e| e.as_ref().ok()).collect();
        assert_eq!(items.len(), 2);
        let pa = items.iter().find(|i| i.sample_id == "mimic-pa-1").expect("pa-1");
        assert_eq!(pa.view.as_deref(), Some("PA"));
        assert_eq!(pa.labels, Some(serde_json::json!({ "split": "train" })));
    }

    #[test]
    fn view_positions_are_trimmed_and_upper_cased() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = tree(dir.path(), Some("dicom_id,ViewPosition\npa-1, PA \nlat-1,lateral\n"));
        let root = dir.path().join("jpg");
        let items: Vec<Item> = list(&root, &opts).expect("list").into_iter().map(|i| i.expect("item")).collect();
        assert_eq!(items.iter().map(|i| i.sample_id.as_str()).collect::<Vec<_>>(), ["mimic-pa-1"]);
        let all = list(&root, &SourceOptions { views: vec![], ..opts }).expect("list");
        let mut views: Vec<Option<String>> = all.into_iter().map(|i| i.expect("item").view).collect();
        views.sort();
        assert_eq!(views, [Some("LATERAL".to_string()), Some("PA".to_string())]);
    }

    #[test]
    fn views_filter_by_the_metadata_and_need_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = tree(dir.path(), Some("dicom_id,ViewPosition\npa-1,PA\nlat-1,LATERAL\n"));
        let root = dir.path().join("jpg");
        let items: Vec<Item> = list(&root, &opts).expect("list").into_iter().map(|i| i.expect("item")).collect();
        assert_eq!(items.len(), 1);
        assert_eq!((items[0].sample_id.as_str(), items[0].view.as_deref()), ("mimic-pa-1", Some("PA")));
        assert!(matches!(&items[0].report, ReportInput::Text(t) if t == "FINDINGS: Clear lungs. IMPRESSION: Normal."));
        assert_eq!(list(&root, &SourceOptions { views: vec![], ..opts.clone() }).expect("all views").len(), 2);

        std::fs::write(root.join("mimic-cxr-2.0.0-metadata.csv"), "dicomid,ViewPos\npa-1,PA\n").expect("csv");
        let err = list(&root, &opts).expect_err("wrong header").to_string();
        assert!(err.contains("ViewPosition"), "{err}");
        std::fs::remove_file(root.join("mimic-cxr-2.0.0-metadata.csv")).expect("rm");
        let err = list(&root, &opts).expect_err("no metadata").to_string();
        assert!(err.contains("--views needs") && err.contains("metadata.csv"), "{err}");
    }
}
