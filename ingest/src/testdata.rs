//! Real test data, read at test time from the wheels `.ci/run` downloads (never committed):
//! `pydicom-data` (DICOM films) and `torchxrayvision` (IU X-ray reports).

use std::io::Read;
use std::path::{Path, PathBuf};

/// Bytes of `member` inside the wheel `file_name` from `ECAMP_TEST_WHEELS` (default
/// `.cache/wheels`); `None` after a note when the wheel is absent outside CI, a panic under CI.
pub(crate) fn wheel_member(file_name: &str, member: &str) -> Option<Vec<u8>> {
    let dir = std::env::var_os("ECAMP_TEST_WHEELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/wheels"));
    let wheel = dir.join(file_name);
    if !wheel.is_file() {
        let msg = format!("test data {} is missing (set ECAMP_TEST_WHEELS to the folder holding it)", wheel.display());
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("note: skipping: {msg}");
        return None;
    }
    let file = std::fs::File::open(&wheel).expect("open wheel");
    let mut zip = zip::ZipArchive::new(file).expect("wheel is a zip");
    let mut entry = zip.by_name(member).unwrap_or_else(|e| panic!("{member} in {}: {e}", wheel.display()));
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes).expect("read wheel member");
    Some(bytes)
}
