//! Where samples come from. Each source lists its items cheaply (ids, report text, where the
//! image is); the heavy part (reading and decoding the image) happens later on worker threads.

pub mod dicom;
pub mod iu_xray;
pub mod manifest;
pub mod mimic;
pub mod phantom_source;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::IngestError;

/// Where an item's image is, before it is read.
#[derive(Debug, Clone)]
pub enum ImageInput {
    /// A JPEG or PNG file on local disk.
    File(PathBuf),
    /// A JPEG or PNG object in any supported object store (`s3://…`, `file://…`).
    Url(String),
    /// A DICOM file; pixels and ids come from its header.
    Dicom(PathBuf),
    /// A phantom to render.
    Phantom {
        /// Generator seed.
        seed: u64,
        /// Study index.
        index: u64,
        /// Rendered size.
        size: u32,
    },
}

/// The report of an item.
#[derive(Debug, Clone)]
pub enum ReportInput {
    /// The text, read at listing time.
    Text(String),
    /// Known once the image is produced: looked up by the DICOM header's StudyInstanceUID or
    /// AccessionNumber, or written by the phantom generator with its image.
    FromImage,
    /// The report could not be read; the item is rejected with this reason.
    Bad(Reject),
}

/// One sample to ingest.
#[derive(Debug, Clone)]
pub struct Item {
    /// Source kind (`phantom`, `mimic-cxr`, `dicom`, `manifest`, `iu-xray`).
    pub source: &'static str,
    /// Stable key of the item in its source's listing (path or row), used for partitioning.
    pub key: String,
    /// Stable unique sample id.
    pub sample_id: String,
    /// Patient id.
    pub subject_id: Option<String>,
    /// Study id.
    pub study_id: Option<String>,
    /// View position.
    pub view: Option<String>,
    /// The image.
    pub image: ImageInput,
    /// The image's name as stored in the HF image struct's `path`.
    pub image_name: Option<String>,
    /// The report.
    pub report: ReportInput,
    /// Ground truth to keep in the labels table, if the source has any.
    pub labels: Option<serde_json::Value>,
}

/// An input refused, with where it came from and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reject {
    /// Source kind (`phantom`, `manifest`, …).
    pub source: String,
    /// Path, URL or `FILE:row N` of the input.
    pub input: String,
    /// Sample id, when known.
    pub sample_id: Option<String>,
    /// Stable reason code (`corrupt-image`, `missing-file`, `empty-report`, …; all listed in the
    /// README's "Ingesting").
    pub reason: String,
    /// Human-readable detail.
    pub detail: String,
}

impl Reject {
    /// A reject of `input` from `source` with a reason code and detail.
    pub fn new(source: &str, input: impl Into<String>, reason: &str, detail: impl Into<String>) -> Self {
        Reject {
            source: source.to_string(),
            input: input.into(),
            sample_id: None,
            reason: reason.to_string(),
            detail: detail.into(),
        }
    }

    /// The same reject, naming the sample.
    pub fn with_sample(mut self, id: &str) -> Self {
        self.sample_id = Some(id.to_string());
        self
    }
}

/// Options shared by the sources that need them.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// MIMIC-CXR reports tree, or the DICOM reports CSV.
    pub reports: Option<PathBuf>,
    /// View positions to keep (upper-case), empty = all.
    pub views: Vec<String>,
    /// Image size for phantoms.
    pub phantom_size: u32,
}

/// A parsed `--source KIND:ARG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// `phantom:COUNT[:SEED]`.
    Phantom {
        /// Number of studies.
        count: u64,
        /// Seed.
        seed: u64,
    },
    /// `mimic-cxr:ROOT`.
    Mimic(PathBuf),
    /// `dicom:DIR`.
    Dicom(PathBuf),
    /// `manifest:FILE`.
    Manifest(PathBuf),
    /// `iu-xray:DIR`.
    IuXray(PathBuf),
}

impl SourceSpec {
    /// The source kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Phantom { .. } => "phantom",
            SourceSpec::Mimic(_) => "mimic-cxr",
            SourceSpec::Dicom(_) => "dicom",
            SourceSpec::Manifest(_) => "manifest",
            SourceSpec::IuXray(_) => "iu-xray",
        }
    }

    /// Lists every item (or reject) of the source.
    pub fn list(&self, opts: &SourceOptions) -> Result<Vec<Result<Item, Reject>>, IngestError> {
        match self {
            SourceSpec::Phantom { count, seed } => Ok(phantom_source::list(*count, *seed, opts.phantom_size)),
            SourceSpec::Mimic(root) => mimic::list(root, opts),
            SourceSpec::Dicom(dir) => dicom_list(dir, opts),
            SourceSpec::Manifest(file) => manifest::list(file),
            SourceSpec::IuXray(dir) => iu_list(dir),
        }
    }
}

/// Most studies one `phantom:` source lists.
const MAX_PHANTOMS: u64 = 10_000_000;

impl std::str::FromStr for SourceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, arg) = s.split_once(':').ok_or_else(|| format!("'{s}': expected KIND:ARG"))?;
        let path = || -> Result<PathBuf, String> {
            if arg.is_empty() { Err(format!("'{s}': missing path")) } else { Ok(PathBuf::from(arg)) }
        };
        match kind {
            "phantom" => {
                let mut parts = arg.split(':');
                let count = parts
                    .next()
                    .and_then(|c| c.parse::<u64>().ok())
                    .ok_or_else(|| format!("'{s}': expected phantom:COUNT[:SEED]"))?;
                if count > MAX_PHANTOMS {
                    // The listing holds every study at once.
                    return Err(format!("'{s}': at most {MAX_PHANTOMS} phantom studies per source"));
                }
                let seed = match parts.next() {
                    None => 0,
                    Some(v) => v.parse::<u64>().map_err(|_| format!("'{s}': seed '{v}' is not a number"))?,
                };
                Ok(SourceSpec::Phantom { count, seed })
            }
            "mimic-cxr" | "mimic" => Ok(SourceSpec::Mimic(path()?)),
            "dicom" => Ok(SourceSpec::Dicom(path()?)),
            "manifest" => Ok(SourceSpec::Manifest(path()?)),
            "iu-xray" | "iu" => Ok(SourceSpec::IuXray(path()?)),
            other => Err(format!("unknown source kind '{other}' (phantom, mimic-cxr, dicom, manifest, iu-xray)")),
        }
    }
}

/// Which partition an item belongs to: a hash of its key, so it is stable when the listing grows.
pub fn partition_of(key: &str, n: u32) -> u32 {
    // FNV-1a: tiny, stable across versions and platforms (unlike std's hasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n.max(1) as u64) as u32
}

/// Reads a text file that must be UTF-8 and non-empty; the error is a reject reason and detail.
pub fn read_report(path: &Path) -> Result<String, (&'static str, String)> {
    let bytes = crate::files::read_regular(path, crate::files::MAX_FILE_BYTES)
        .map_err(|e| ("missing-report", format!("{}: {e}", path.display())))?;
    let text = String::from_utf8(bytes).map_err(|e| ("non-utf8-report", format!("{}: {e}", path.display())))?;
    check_report(&text).map_err(|r| (r, path.display().to_string()))
}

/// Normalises report text; refuses empty reports.
pub fn check_report(text: &str) -> Result<String, &'static str> {
    let t = text.trim().replace('\r', "");
    if t.is_empty() { Err("empty-report") } else { Ok(t) }
}

/// One CSV record and the line it starts on.
pub type CsvRecord = (usize, csv::ByteRecord);

/// A CSV file's header and its records (or rejects), as [`csv_records`] reads them.
pub type CsvTable = (Vec<String>, Vec<Result<CsvRecord, Reject>>);

/// The header of a CSV file (`shown` in messages) and its records; a record that cannot be read
/// (a wrong number of fields, a broken quote) is a `malformed-row` reject of `kind` naming
/// `FILE:LINE`, so one bad row costs that row only. `Err` when the header cannot be read.
pub fn csv_records(text: &[u8], shown: &str, kind: &str) -> Result<CsvTable, String> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(text);
    let headers = reader.headers().map_err(|e| e.to_string())?.iter().map(str::to_string).collect();
    let starts = line_starts(text);
    let records = reader
        .byte_records()
        .enumerate()
        .map(|(i, rec)| {
            // The reader knows where a record starts (also for errors and multi-line quoted
            // fields) as a byte offset; its own line count is off for CRLF and CR-only files.
            let pos = match &rec {
                Ok(r) => r.position().cloned(),
                Err(e) => e.position().cloned(),
            };
            let line = pos.map_or(i + 2, |p| starts.partition_point(|&s| s <= p.byte() as usize));
            rec.map(|r| (line, r))
                .map_err(|e| Reject::new(kind, format!("{shown}:{line}"), "malformed-row", e.to_string()))
        })
        .collect();
    Ok((headers, records))
}

/// Byte offsets where each line of `text` starts (the first is 0), as an editor counts lines:
/// LF, CRLF and a lone CR each end one. The LF of a CRLF counts with its CR's line ending, so an
/// offset pointing at it still maps to the next line.
fn line_starts(text: &[u8]) -> Vec<usize> {
    let mut starts = vec![0];
    for (i, &b) in text.iter().enumerate() {
        let after_cr = i > 0 && text[i - 1] == b'\r';
        if b == b'\r' || (b == b'\n' && !after_cr) {
            starts.push(i + 1);
        }
    }
    starts
}

/// The fields of a CSV record by header name; a field that is not UTF-8 is a reject of `kind`
/// naming `FILE:LINE` and the column, with `reason(column)` as its reason code.
pub fn csv_fields(
    headers: &[String],
    (line, rec): &CsvRecord,
    shown: &str,
    kind: &str,
    reason: impl Fn(&str) -> &'static str,
) -> Result<HashMap<String, String>, Reject> {
    headers
        .iter()
        .zip(rec.iter())
        .map(|(h, v)| {
            let v = String::from_utf8(v.to_vec()).map_err(|_| {
                Reject::new(kind, format!("{shown}:{line}"), reason(h), format!("column '{h}' is not UTF-8"))
            })?;
            Ok((h.clone(), v))
        })
        .collect()
}

fn dicom_list(dir: &Path, opts: &SourceOptions) -> Result<Vec<Result<Item, Reject>>, IngestError> {
    let files = dicom::list_dicom_files(dir).map_err(|e| IngestError::Source {
        source_kind: "dicom",
        detail: format!("cannot list {}: {e}", dir.display()),
    })?;
    if opts.reports.is_none() {
        return Err(IngestError::Source {
            source_kind: "dicom",
            detail: "--reports CSV (StudyInstanceUID or AccessionNumber, report) is required".into(),
        });
    }
    Ok(files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(dir).unwrap_or(&f).display().to_string();
            Ok(Item {
                source: "dicom",
                key: rel.clone(),
                // Replaced by the SOPInstanceUID once the header is read.
                sample_id: format!("dicom-{rel}"),
                subject_id: None,
                study_id: None,
                view: None,
                image: ImageInput::Dicom(f),
                image_name: Some(rel),
                report: ReportInput::FromImage,
                labels: None,
            })
        })
        .collect())
}

/// Image file extensions the folder sources look for (in any case), in order of preference.
pub const IMAGE_EXTS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The files of `dir` by `stem.ext` with the extension lower-cased, so `X.JPG` is found as `X.jpg`;
/// empty if `dir` cannot be read (every image is then missing, and rejected as such).
fn image_index(dir: &Path) -> HashMap<String, PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return HashMap::new() };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let stem = p.file_stem()?.to_str()?;
            let ext = p.extension()?.to_str()?.to_ascii_lowercase();
            Some((format!("{stem}.{ext}"), p))
        })
        .collect()
}

fn iu_list(dir: &Path) -> Result<Vec<Result<Item, Reject>>, IngestError> {
    let reports = dir.join("ecgen-radiology");
    let images = dir.join("images");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&reports)
        .map_err(|e| IngestError::Source { source_kind: "iu-xray", detail: format!("{}: {e}", reports.display()) })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    names.sort();
    let index = image_index(&images);
    let mut out = Vec::new();
    for xml_path in names {
        let shown = xml_path.display().to_string();
        let parsed = crate::files::read_regular(&xml_path, crate::files::MAX_FILE_BYTES)
            .map_err(|e| Reject::new("iu-xray", &shown, "unreadable-report", e.to_string()))
            .and_then(|b| {
                String::from_utf8(b).map_err(|e| Reject::new("iu-xray", &shown, "non-utf8-report", e.to_string()))
            })
            .and_then(|x| {
                iu_xray::parse_iu_report(&x).map_err(|e| Reject::new("iu-xray", &shown, "malformed-xml", e.to_string()))
            });
        let report = match parsed {
            Ok(r) => r,
            Err(rej) => {
                out.push(Err(rej));
                continue;
            }
        };
        // A report without images cannot become a sample, but must not vanish uncounted.
        if report.image_ids.is_empty() {
            out.push(Err(Reject::new("iu-xray", &shown, "no-image", "the report names no <parentImage>")));
            continue;
        }
        let text = report
            .report_text()
            .ok_or_else(|| Reject::new("iu-xray", &shown, "empty-report", "no findings or impression"));
        for id in &report.image_ids {
            // An id is a file name inside images/, never a path out of it ("../../x").
            let plain = !id.is_empty() && !id.contains(['/', '\\']) && id != ".." && id != ".";
            let found = IMAGE_EXTS.iter().find_map(|e| index.get(&format!("{id}.{e}")).filter(|_| plain)).cloned();
            let sample_id = format!("iu-{id}");
            let item = match (&text, found) {
                (Err(r), _) => Err(r.clone().with_sample(&sample_id)),
                (_, None) if !plain => Err(Reject::new(
                    "iu-xray",
                    shown.clone(),
                    "malformed-xml",
                    format!("parentImage id {id:?} is not a file name"),
                )
                .with_sample(&sample_id)),
                (_, None) => Err(Reject::new(
                    "iu-xray",
                    images.join(id).display().to_string(),
                    "missing-file",
                    "no PNG or JPEG for this image id",
                )
                .with_sample(&sample_id)),
                (Ok(t), Some(path)) => Ok(Item {
                    source: "iu-xray",
                    key: id.clone(),
                    sample_id,
                    subject_id: Some(report.uid.clone()),
                    study_id: Some(report.uid.clone()),
                    view: None,
                    image_name: path.file_name().map(|n| n.to_string_lossy().to_string()),
                    image: ImageInput::File(path),
                    report: ReportInput::Text(t.clone()),
                    labels: Some(
                        serde_json::json!({ "mesh_major": report.mesh_major, "mesh_minor": report.mesh_minor }),
                    ),
                }),
            };
            out.push(item);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lines_are_an_editors_for_every_line_ending() {
        for eol in ["\n", "\r\n", "\r"] {
            // Line 3 holds a quoted field over two lines, line 5 a row with too many fields.
            let text = ["a,b", "1,2", "3,\"x", "y\"", "4,5,6", "7,8"].join(eol) + eol;
            let (_, records) = csv_records(text.as_bytes(), "m.csv", "manifest").expect("header");
            let lines: Vec<String> = records
                .iter()
                .map(|r| match r {
                    Ok((line, _)) => line.to_string(),
                    Err(rej) => format!("bad {}", rej.input),
                })
                .collect();
            assert_eq!(lines, ["2", "3", "bad m.csv:5", "6"], "{eol:?}");
        }
    }

    #[test]
    fn specs_parse() {
        assert_eq!("phantom:500".parse::<SourceSpec>(), Ok(SourceSpec::Phantom { count: 500, seed: 0 }));
        assert_eq!("phantom:5:7".parse::<SourceSpec>(), Ok(SourceSpec::Phantom { count: 5, seed: 7 }));
        assert!("phantom:x".parse::<SourceSpec>().is_err());
        assert!("phantom:100000000000000".parse::<SourceSpec>().is_err(), "a listing that cannot fit in memory");
        assert!("ftp:x".parse::<SourceSpec>().is_err());
        assert_eq!("manifest:a.csv".parse::<SourceSpec>(), Ok(SourceSpec::Manifest("a.csv".into())));
    }

    /// An IU X-ray report naming `images` as its parent images.
    fn iu_xml(uid: &str, images: &[&str]) -> String {
        let parents: String =
            images.iter().map(|i| format!("<parentImage id=\"{i}\"><figureId>F1</figureId></parentImage>")).collect();
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><eCitation><uId id=\"{uid}\"/><MedlineCitation><Article>\
             <Abstract><AbstractText Label=\"FINDINGS\">The heart is normal in size.</AbstractText>\
             <AbstractText Label=\"IMPRESSION\">Normal chest.</AbstractText></Abstract></Article>\
             </MedlineCitation><MeSH><major>normal</major></MeSH>{parents}</eCitation>"
        )
    }

    #[test]
    fn iu_images_are_found_in_any_case_and_imageless_reports_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (reports, images) = (dir.path().join("ecgen-radiology"), dir.path().join("images"));
        std::fs::create_dir_all(&reports).expect("mkdir");
        std::fs::create_dir_all(&images).expect("mkdir");
        std::fs::write(reports.join("1.xml"), iu_xml("CXR1", &["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]))
            .expect("xml");
        std::fs::write(images.join("CXR1_1_IM-0001-3001.JPG"), b"listed, not decoded").expect("jpg");
        std::fs::write(images.join("CXR1_1_IM-0001-4001.Png"), b"listed, not decoded").expect("png");
        std::fs::write(reports.join("2.xml"), iu_xml("CXR2", &[])).expect("xml");
        let listed = iu_list(dir.path()).expect("list");
        assert_eq!(listed.len(), 3, "{listed:?}");
        let found: Vec<String> = listed
            .iter()
            .filter_map(|e| match &e.as_ref().ok()?.image {
                ImageInput::File(p) => Some(p.file_name()?.to_string_lossy().to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(found, ["CXR1_1_IM-0001-3001.JPG", "CXR1_1_IM-0001-4001.Png"]);
        let reject = listed.iter().find_map(|e| e.as_ref().err()).expect("a reject");
        assert_eq!(reject.reason, "no-image");
        assert!(reject.input.ends_with("2.xml"), "{reject:?}");
    }

    #[test]
    fn partitions_are_stable_and_cover() {
        let keys: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
        let mut counts = [0usize; 4];
        for k in &keys {
            counts[partition_of(k, 4) as usize] += 1;
            assert_eq!(partition_of(k, 4), partition_of(k, 4));
        }
        assert_eq!(counts.iter().sum::<usize>(), 1000);
        assert!(counts.iter().all(|c| *c > 150), "{counts:?}");
    }
}
