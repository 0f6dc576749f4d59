//! DICOM image reader: decodes one DICOM file (native or compressed) into an 8-bit grayscale picture.
//!
//! The conversion follows what a radiologist's viewer shows: Modality LUT, then the VOI transform
//! (first window, else VOI LUT table, else min–max), MONOCHROME1 inverted so that air is dark,
//! first frame only, colour reduced to ITU-R 601 luma.

use std::any::Any;
use std::io::Read;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions, ReadError, Tag};
use dicom_pixeldata::{
    DecodedPixelData, Lut, PhotometricInterpretation, PixelDecoder, PixelRepresentation, PlanarConfiguration, Rescale,
    VoiLutFunction, WindowLevelTransform,
};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

/// Largest image (rows × columns) that is decoded; larger ones are refused before any pixel is decoded.
pub const MAX_PIXELS: u64 = 100_000_000;

/// Offset of the "DICM" magic: it follows the 128-byte preamble of a DICOM Part 10 file.
const MAGIC_OFFSET: usize = 128;
const MAGIC: &[u8; 4] = b"DICM";

/// One DICOM image converted for ingestion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DicomImage {
    /// Columns of the image.
    pub width: u32,
    /// Rows of the image.
    pub height: u32,
    /// 8-bit grayscale, row-major, `width * height` bytes, higher = brighter.
    pub pixels: Vec<u8>,
    /// (0020,000D) Study Instance UID.
    pub study_instance_uid: Option<String>,
    /// (0008,0050) Accession Number.
    pub accession_number: Option<String>,
    /// (0010,0020) Patient ID.
    pub patient_id: Option<String>,
    /// (0008,0018) SOP Instance UID.
    pub sop_instance_uid: Option<String>,
    /// (0018,5101) View Position, e.g. "PA".
    pub view_position: Option<String>,
    /// (0028,0004) Photometric Interpretation as found in the file, e.g. "MONOCHROME1".
    pub photometric: String,
}

/// Why a DICOM input could not be turned into a [`DicomImage`]; every message starts with the input's name.
#[derive(Debug, thiserror::Error)]
pub enum DicomError {
    /// The file could not be read from disk.
    #[error("{name}: cannot read file: {error}")]
    Io {
        /// Name of the input.
        name: String,
        /// Underlying I/O error (kept as a field, not a source, because the message already shows it).
        error: std::io::Error,
    },
    /// The input lacks the "DICM" magic at offset 128.
    #[error("{name}: not a DICOM file (no \"DICM\" magic at offset 128)")]
    NotDicom {
        /// Name of the input.
        name: String,
    },
    /// The data set is malformed or truncated.
    #[error("{name}: malformed or truncated DICOM data: {detail}")]
    Malformed {
        /// Name of the input.
        name: String,
        /// Parser error chain.
        detail: String,
    },
    /// The transfer syntax is unknown or its pixel data cannot be decoded by this build.
    #[error("{name}: unsupported transfer syntax {uid}")]
    UnsupportedTransferSyntax {
        /// Name of the input.
        name: String,
        /// Transfer syntax UID (with its name when known).
        uid: String,
    },
    /// The data set has no (7FE0,0010) Pixel Data element.
    #[error("{name}: no pixel data")]
    NoPixelData {
        /// Name of the input.
        name: String,
    },
    /// Rows or Columns is zero.
    #[error("{name}: empty image ({width}x{height})")]
    ZeroSized {
        /// Name of the input.
        name: String,
        /// Declared columns.
        width: u32,
        /// Declared rows.
        height: u32,
    },
    /// Rows × Columns exceeds [`MAX_PIXELS`].
    #[error("{name}: image of {width}x{height} exceeds the limit of {MAX_PIXELS} pixels")]
    TooLarge {
        /// Name of the input.
        name: String,
        /// Declared columns.
        width: u32,
        /// Declared rows.
        height: u32,
    },
    /// A required image attribute is missing or has an invalid value.
    #[error("{name}: invalid image attributes: {detail}")]
    Invalid {
        /// Name of the input.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// A valid image of a kind this reader does not convert (e.g. PALETTE COLOR, 32-bit samples).
    #[error("{name}: unsupported image: {detail}")]
    Unsupported {
        /// Name of the input.
        name: String,
        /// What is not supported.
        detail: String,
    },
    /// The pixel data could not be decoded.
    #[error("{name}: cannot decode pixel data: {detail}")]
    Decode {
        /// Name of the input.
        name: String,
        /// Decoder error chain.
        detail: String,
    },
    /// A third-party parser or codec panicked on this input; the panic was contained.
    #[error("{name}: DICOM decoder failed unexpectedly: {detail}")]
    DecoderPanic {
        /// Name of the input.
        name: String,
        /// Panic message.
        detail: String,
    },
}

impl DicomError {
    /// The stable reject reason code, the same as JPEG and PNG inputs get for the same problem.
    pub fn code(&self) -> &'static str {
        match self {
            DicomError::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound => "missing-file",
            DicomError::Io { .. } => "unreadable-file",
            DicomError::NotDicom { .. } => "unknown-image-format",
            DicomError::Malformed { .. } | DicomError::Invalid { .. } | DicomError::Decode { .. } => "corrupt-image",
            DicomError::UnsupportedTransferSyntax { .. } => "unsupported-encoding",
            DicomError::Unsupported { .. } => "unsupported-image",
            DicomError::NoPixelData { .. } => "no-pixel-data",
            DicomError::ZeroSized { .. } => "image-too-small",
            DicomError::TooLarge { .. } => "image-too-large",
            DicomError::DecoderPanic { .. } => "decoder-panic",
        }
    }
}

/// Decodes the DICOM file at `path` (its display form names it in errors).
pub fn decode_dicom_file(path: &Path) -> Result<DicomImage, DicomError> {
    let name = path.display().to_string();
    let bytes = crate::files::read_regular(path, crate::files::MAX_FILE_BYTES)
        .map_err(|error| DicomError::Io { name: name.clone(), error })?;
    decode_dicom_bytes(&name, &bytes)
}

/// Decodes a DICOM file held in memory; `name` identifies it in errors.
pub fn decode_dicom_bytes(name: &str, bytes: &[u8]) -> Result<DicomImage, DicomError> {
    if !is_dicom(bytes) {
        return Err(DicomError::NotDicom { name: name.to_owned() });
    }
    // The parser and the codecs (openjp2 is a machine translation of C) are third-party code fed
    // with untrusted bytes: a panic there must become an error for this file, not kill the ingest.
    panic::catch_unwind(AssertUnwindSafe(|| decode_unchecked(name, bytes))).unwrap_or_else(|payload| {
        Err(DicomError::DecoderPanic { name: name.to_owned(), detail: panic_message(payload.as_ref()) })
    })
}

/// True when `bytes` carries the "DICM" magic at offset 128 (DICOM Part 10 file).
pub fn is_dicom(bytes: &[u8]) -> bool {
    bytes.get(MAGIC_OFFSET..MAGIC_OFFSET + MAGIC.len()) == Some(MAGIC.as_slice())
}

/// Lists, recursively and sorted, the files under `dir` with the DICM magic or a `.dcm` extension.
///
/// Symbolic links to directories are not followed, so link cycles cannot loop forever.
pub fn list_dicom_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current).map_err(|e| with_path(&current, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| with_path(&current, e))?;
            let path = entry.path();
            let file_type = entry.file_type().map_err(|e| with_path(&path, e))?;
            if file_type.is_dir() {
                pending.push(path);
            } else if (file_type.is_file() || (file_type.is_symlink() && path.is_file()))
                && (has_dcm_extension(&path) || sniff_magic(&path)?)
            {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn with_path(path: &Path, error: std::io::Error) -> std::io::Error {
    std::io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

fn has_dcm_extension(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("dcm"))
}

fn sniff_magic(path: &Path) -> std::io::Result<bool> {
    let file = std::fs::File::open(path).map_err(|e| with_path(path, e))?;
    let mut head = Vec::with_capacity(MAGIC_OFFSET + MAGIC.len());
    file.take((MAGIC_OFFSET + MAGIC.len()) as u64).read_to_end(&mut head).map_err(|e| with_path(path, e))?;
    Ok(is_dicom(&head))
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Flattens an error and its sources into one line, since snafu errors put the cause in the chain.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn decode_unchecked(name: &str, bytes: &[u8]) -> Result<DicomImage, DicomError> {
    let obj = parse(name, bytes)?;
    check_transfer_syntax(name, &obj)?;
    if obj.get(tags::PIXEL_DATA).is_none() {
        return Err(DicomError::NoPixelData { name: name.to_owned() });
    }
    let invalid = |detail: String| DicomError::Invalid { name: name.to_owned(), detail };
    let unsupported = |detail: String| DicomError::Unsupported { name: name.to_owned(), detail };

    let width = required_u32(&obj, tags::COLUMNS, "Columns").map_err(invalid)?;
    let height = required_u32(&obj, tags::ROWS, "Rows").map_err(invalid)?;
    if width == 0 || height == 0 {
        return Err(DicomError::ZeroSized { name: name.to_owned(), width, height });
    }
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(DicomError::TooLarge { name: name.to_owned(), width, height });
    }
    let fragment = obj.get(tags::PIXEL_DATA).and_then(|e| e.fragments()).and_then(|f| f.iter().find(|f| !f.is_empty()));
    if let Some((coded_width, coded_height)) = fragment.and_then(|f| codestream_dimensions(f))
        && u64::from(coded_width) * u64::from(coded_height) > MAX_PIXELS
    {
        return Err(DicomError::TooLarge { name: name.to_owned(), width: coded_width, height: coded_height });
    }
    let photometric = text(&obj, tags::PHOTOMETRIC_INTERPRETATION)
        .ok_or_else(|| invalid("missing Photometric Interpretation (0028,0004)".to_owned()))?;

    // dicom-pixeldata's LUT constructors assert on Bits Stored and its converters index by the
    // declared layout, so the layout is validated here, before anything reaches them.
    let samples_per_pixel = optional_u32(&obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    if samples_per_pixel != 1 && samples_per_pixel != 3 {
        return Err(unsupported(format!("Samples per Pixel {samples_per_pixel}")));
    }
    let bits_allocated = required_u32(&obj, tags::BITS_ALLOCATED, "Bits Allocated").map_err(invalid)?;
    if bits_allocated != 8 && bits_allocated != 16 {
        return Err(unsupported(format!("Bits Allocated {bits_allocated}")));
    }
    let bits_stored = required_u32(&obj, tags::BITS_STORED, "Bits Stored").map_err(invalid)?;
    if bits_stored == 0 || bits_stored > bits_allocated {
        return Err(invalid(format!("Bits Stored {bits_stored} with Bits Allocated {bits_allocated}")));
    }

    // Only the first frame is wanted: decoding it alone keeps multi-frame files cheap.
    let decoded = obj
        .decode_pixel_data_frame(0)
        .map_err(|e| DicomError::Decode { name: name.to_owned(), detail: error_chain(&e) })?;
    if decoded.columns() != width || decoded.rows() != height {
        return Err(invalid(format!(
            "decoded size {}x{} differs from declared {width}x{height}",
            decoded.columns(),
            decoded.rows()
        )));
    }

    let pixels = match decoded.samples_per_pixel() {
        1 => monochrome_to_gray(name, &decoded)?,
        _ => color_to_gray(name, &decoded)?,
    };
    Ok(DicomImage {
        width,
        height,
        pixels,
        study_instance_uid: text(&obj, tags::STUDY_INSTANCE_UID),
        accession_number: text(&obj, tags::ACCESSION_NUMBER),
        patient_id: text(&obj, tags::PATIENT_ID),
        sop_instance_uid: text(&obj, tags::SOP_INSTANCE_UID),
        view_position: text(&obj, tags::VIEW_POSITION),
        photometric,
    })
}

/// Image size declared inside a compressed fragment (JPEG 2000 SIZ, JPEG or JPEG-LS SOF).
///
/// Codecs allocate for the size in the codestream, not for Rows/Columns, so a small declared image
/// over a huge codestream would slip past the Rows × Columns check without this look.
fn codestream_dimensions(fragment: &[u8]) -> Option<(u32, u32)> {
    let be16 = |i: usize| fragment.get(i..i + 2).map(|b| u32::from(u16::from_be_bytes([b[0], b[1]])));
    let be32 = |i: usize| fragment.get(i..i + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    match fragment {
        // SOC, SIZ marker, Lsiz, Rsiz, then Xsiz, Ysiz, XOsiz, YOsiz.
        [0xFF, 0x4F, 0xFF, 0x51, ..] => {
            let (x, y, x0, y0) = (be32(8)?, be32(12)?, be32(16)?, be32(20)?);
            Some((x.saturating_sub(x0), y.saturating_sub(y0)))
        }
        [0xFF, 0xD8, ..] => {
            let mut at = 2;
            loop {
                if *fragment.get(at)? != 0xFF {
                    return None;
                }
                match *fragment.get(at + 1)? {
                    // Fill byte before a marker.
                    0xFF => at += 1,
                    // SOF0..SOF15 (not DHT C4, JPG C8, DAC CC) and JPEG-LS SOF55: P, Y, X.
                    0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF | 0xF7 => {
                        return Some((be16(at + 7)?, be16(at + 5)?));
                    }
                    // Start of scan before any frame header: nothing to learn.
                    0xDA => return None,
                    0x01 | 0xD0..=0xD8 => at += 2,
                    _ => at += 2 + usize::try_from(be16(at + 2)?).ok()?,
                }
            }
        }
        _ => None,
    }
}

fn parse(name: &str, bytes: &[u8]) -> Result<DefaultDicomObject, DicomError> {
    let body = bytes.get(MAGIC_OFFSET..).unwrap_or_default();
    OpenFileOptions::new().read_preamble(ReadPreamble::Never).from_reader(body).map_err(|e| match e {
        ReadError::ReadUnrecognizedTransferSyntax { uid, .. } => {
            DicomError::UnsupportedTransferSyntax { name: name.to_owned(), uid }
        }
        ReadError::ReadUnsupportedTransferSyntax { uid, name: ts_name, .. }
        | ReadError::ReadUnsupportedTransferSyntaxWithSuggestion { uid, name: ts_name, .. } => {
            DicomError::UnsupportedTransferSyntax { name: name.to_owned(), uid: format!("{uid} ({ts_name})") }
        }
        other => DicomError::Malformed { name: name.to_owned(), detail: error_chain(&other) },
    })
}

/// Refuses, before decoding, pixel encodings this build has no codec for (e.g. JPEG-LS without CharLS).
fn check_transfer_syntax(name: &str, obj: &DefaultDicomObject) -> Result<(), DicomError> {
    let uid = obj.meta().transfer_syntax();
    match TransferSyntaxRegistry.get(uid) {
        Some(ts) if ts.can_decode_all() => Ok(()),
        Some(ts) => Err(DicomError::UnsupportedTransferSyntax {
            name: name.to_owned(),
            uid: format!("{} ({})", ts.uid(), ts.name()),
        }),
        None => Err(DicomError::UnsupportedTransferSyntax { name: name.to_owned(), uid: uid.to_owned() }),
    }
}

/// A string attribute with DICOM padding (spaces, NULs) removed; empty or non-text values are absent.
fn text(obj: &DefaultDicomObject, tag: Tag) -> Option<String> {
    let value = obj.get(tag)?.to_str().ok()?;
    let trimmed = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

fn optional_u32(obj: &DefaultDicomObject, tag: Tag) -> Option<u32> {
    obj.get(tag)?.to_int::<u32>().ok()
}

fn required_u32(obj: &DefaultDicomObject, tag: Tag, label: &str) -> Result<u32, String> {
    let element = obj.get(tag).ok_or_else(|| format!("missing {label} {tag}"))?;
    element.to_int::<u32>().map_err(|e| format!("bad {label} {tag}: {e}"))
}

/// Grayscale images: Modality LUT, VOI (window, else VOI LUT table, else min–max), MONOCHROME1 inversion.
///
/// Everything is folded into one table indexed by the stored sample, as dicom-pixeldata itself does,
/// so each pixel costs a single lookup whatever the transform.
fn monochrome_to_gray(name: &str, decoded: &DecodedPixelData<'_>) -> Result<Vec<u8>, DicomError> {
    let decode_err = |e: dicom_pixeldata::Error| DicomError::Decode { name: name.to_owned(), detail: error_chain(&e) };
    let lut_err = |e: dicom_pixeldata::CreateLutError| DicomError::Decode {
        name: name.to_owned(),
        detail: format!("cannot build lookup table: {e}"),
    };
    let invert = match decoded.photometric_interpretation() {
        PhotometricInterpretation::Monochrome1 => true,
        PhotometricInterpretation::Monochrome2 => false,
        other => {
            return Err(DicomError::Unsupported {
                name: name.to_owned(),
                detail: format!("photometric interpretation {other} with one sample per pixel"),
            });
        }
    };
    let bits = decoded.bits_stored();
    let signed = decoded.pixel_representation() == PixelRepresentation::Signed;
    let samples: Vec<u16> = match decoded.bits_allocated() {
        8 => decoded.frame_data(0).map_err(decode_err)?.iter().map(|&b| u16::from(b)).collect(),
        _ => decoded.frame_data_ow(0).map_err(decode_err)?,
    };
    let rescale = match decoded.rescale().map_err(decode_err)?.first() {
        Some(r) if r.slope.is_finite() && r.intercept.is_finite() => *r,
        _ => Rescale::new(1.0, 0.0),
    };

    let window = decoded
        .window()
        .map_err(decode_err)?
        .and_then(|w| w.first().copied())
        .filter(|w| w.center.is_finite() && w.width.is_finite() && w.width > 0.0);
    let voi_lut =
        decoded.voi_lut_sequence().map_err(decode_err)?.and_then(|s| s.first()).filter(|l| !l.data.is_empty());

    let to_display = |y: f64| {
        let y = if y.is_nan() { 0.0 } else { y.round().clamp(0.0, 255.0) };
        if invert { 255.0 - y } else { y }
    };
    let lut: Lut<u8> = if let Some(window) = window {
        let function = decoded
            .voi_lut_function()
            .map_err(decode_err)?
            .and_then(|f| f.first().copied())
            .unwrap_or(VoiLutFunction::Linear);
        let transform = WindowLevelTransform::new(function, window);
        Lut::new_with_fn(bits, signed, |x| to_display(transform.apply(rescale.apply(x), 255.0)))
    } else if let Some(table) = voi_lut {
        // Some devices declare 16-bit entries holding 12-bit data (dicom-pixeldata notes Agfa CR);
        // scaling by the declared depth would render such images nearly black, so use the span
        // actually present unless the data exceeds the declaration.
        let declared = u32::from(table.bits_stored).clamp(1, 16);
        let used = table.data.iter().copied().max().map_or(0, |m| u16::BITS - m.leading_zeros());
        let entry_bits = if used == 0 || used > declared { declared } else { used };
        let top = f64::from((1u32 << entry_bits) - 1);
        let last = table.data.len() - 1;
        Lut::new_with_fn(bits, signed, |x| {
            let offset = (rescale.apply(x).round() - f64::from(table.min_pixel_value)).clamp(0.0, last as f64);
            let entry = table.data.get(offset as usize).copied().unwrap_or_default();
            to_display(f64::from(entry) / top * 255.0)
        })
    } else {
        let modality: Lut<f64> = Lut::new_rescale(bits, signed, rescale).map_err(lut_err)?;
        let (lo, hi) = samples.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &s| {
            let v = modality.get(s);
            (lo.min(v), hi.max(v))
        });
        let span = hi - lo;
        Lut::new_with_fn(bits, signed, |x| {
            let y = if span > 0.0 { (rescale.apply(x) - lo) / span * 255.0 } else { 0.0 };
            to_display(y)
        })
    }
    .map_err(lut_err)?;
    Ok(samples.iter().map(|&s| lut.get(s)).collect())
}

/// Colour images: ITU-R BT.601 luma, Y = 0.299 R + 0.587 G + 0.114 B, scaled to 8 bits.
fn color_to_gray(name: &str, decoded: &DecodedPixelData<'_>) -> Result<Vec<u8>, DicomError> {
    let unsupported = |detail: String| DicomError::Unsupported { name: name.to_owned(), detail };
    // Codecs hand back RGB for compressed data; native YBR_FULL already carries BT.601 luma in Y.
    let ybr = match decoded.photometric_interpretation() {
        PhotometricInterpretation::Rgb => false,
        PhotometricInterpretation::YbrFull => true,
        other => return Err(unsupported(format!("photometric interpretation {other} with three samples per pixel"))),
    };
    let frame =
        decoded.frame_data(0).map_err(|e| DicomError::Decode { name: name.to_owned(), detail: error_chain(&e) })?;
    let bits = u32::from(decoded.bits_stored()).clamp(1, 16);
    let mask = (1u32 << bits) - 1;
    let scale = 255.0 / f64::from(mask);
    let values: Vec<f64> = match decoded.bits_allocated() {
        8 => frame.iter().map(|&b| f64::from(u32::from(b) & mask) * scale).collect(),
        _ => frame
            .chunks_exact(2)
            .map(|c| f64::from(u32::from(u16::from_ne_bytes([c[0], c[1]])) & mask) * scale)
            .collect(),
    };
    let luma = |r: f64, g: f64, b: f64| {
        let y = if ybr { r } else { 0.299 * r + 0.587 * g + 0.114 * b };
        y.round().clamp(0.0, 255.0) as u8
    };
    let pixels = match decoded.planar_configuration() {
        PlanarConfiguration::Standard => values.chunks_exact(3).map(|p| luma(p[0], p[1], p[2])).collect(),
        PlanarConfiguration::PixelFirst => {
            let plane = values.len() / 3;
            let (r, rest) = values.split_at(plane);
            let (g, b) = rest.split_at(plane);
            r.iter().zip(g).zip(b).map(|((&r, &g), &b)| luma(r, g, b)).collect()
        }
    };
    Ok(pixels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceSpec;
    use dicom_core::value::{PixelFragmentSequence, Value};
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    use std::time::Instant;

    const WHEEL: &str = "pydicom_data-1.0.0-py3-none-any.whl";
    const UNCR: &str = "data_store/data/RG1_UNCR.dcm";
    const J2KR: &str = "data_store/data/RG1_J2KR.dcm";

    /// A file of the pydicom-data wheel, or None (after a note) when absent outside CI.
    fn member(name: &str) -> Option<Vec<u8>> {
        crate::testdata::wheel_member(WHEEL, name)
    }

    fn mean(img: &DicomImage, x0: f64, x1: f64, y0: f64, y1: f64) -> f64 {
        let (w, h) = (img.width as usize, img.height as usize);
        let (cx0, cx1) = ((x0 * w as f64) as usize, (x1 * w as f64) as usize);
        let (cy0, cy1) = ((y0 * h as f64) as usize, (y1 * h as f64) as usize);
        let mut sum = 0u64;
        for y in cy0..cy1 {
            sum += img.pixels[y * w + cx0..y * w + cx1].iter().map(|&p| u64::from(p)).sum::<u64>();
        }
        sum as f64 / ((cx1 - cx0) * (cy1 - cy0)) as f64
    }

    /// Re-encodes `bytes` with a different Photometric Interpretation.
    fn with_photometric(bytes: &[u8], photometric: &str) -> Vec<u8> {
        let mut obj = OpenFileOptions::new()
            .read_preamble(ReadPreamble::Never)
            .from_reader(&bytes[MAGIC_OFFSET..])
            .expect("parse");
        obj.put(DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from(photometric)));
        let mut out = Vec::new();
        obj.write_all(&mut out).expect("write");
        out
    }

    #[test]
    fn rg1_uncompressed_and_jpeg2000_decode_identically_to_a_chest_film() {
        let (Some(uncr), Some(j2kr)) = (member(UNCR), member(J2KR)) else { return };
        let t = Instant::now();
        let unc = decode_dicom_bytes("RG1_UNCR.dcm", &uncr).expect("decode RG1_UNCR");
        let t_unc = t.elapsed();
        let t = Instant::now();
        let j2k = decode_dicom_bytes("RG1_J2KR.dcm", &j2kr).expect("decode RG1_J2KR");
        let t_j2k = t.elapsed();
        println!(
            "RG1: {}x{} photometric={} view={:?} study={:?} sop={:?}; decode uncompressed {t_unc:?}, jpeg2000 {t_j2k:?}",
            unc.width, unc.height, unc.photometric, unc.view_position, unc.study_instance_uid, unc.sop_instance_uid
        );
        assert_eq!((unc.width, unc.height), (1841, 1955));
        assert_eq!(unc.pixels.len(), 1841 * 1955);
        assert_eq!(unc.photometric, "MONOCHROME1");
        assert_eq!((j2k.width, j2k.height, j2k.photometric.as_str()), (1841, 1955, "MONOCHROME1"));
        assert!(unc.pixels == j2k.pixels, "lossless JPEG 2000 must give the same pixels as uncompressed");
        assert!(unc.sop_instance_uid.is_some() && unc.study_instance_uid.is_some());

        let overall = mean(&unc, 0.0, 1.0, 0.0, 1.0);
        let right_lung = mean(&unc, 0.20, 0.35, 0.30, 0.60);
        let left_lung = mean(&unc, 0.65, 0.80, 0.30, 0.60);
        let mediastinum = mean(&unc, 0.45, 0.55, 0.30, 0.60);
        println!("RG1 means: overall {overall:.1}, lungs {right_lung:.1}/{left_lung:.1}, mediastinum {mediastinum:.1}");
        assert!((40.0..=210.0).contains(&overall), "overall mean {overall}");
        assert!(mediastinum > right_lung + 20.0 && mediastinum > left_lung + 20.0, "lungs must be darker");
    }

    #[test]
    fn monochrome1_is_inverted_relative_to_monochrome2() {
        let Some(uncr) = member(UNCR) else { return };
        let original = uncr.clone();
        let mono1 = decode_dicom_bytes("RG1_UNCR.dcm", &original).expect("decode MONOCHROME1");
        assert_eq!(mono1.photometric, "MONOCHROME1");
        let mono2 = decode_dicom_bytes("RG1_UNCR-m2.dcm", &with_photometric(&original, "MONOCHROME2")).expect("decode");
        assert_eq!(mono2.photometric, "MONOCHROME2");
        assert!(mono1.pixels.iter().zip(&mono2.pixels).all(|(&a, &b)| a == 255 - b));
        assert!(mono1.pixels.iter().any(|&p| p != 255 - p), "image must not be flat");
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_input() {
        let check = |name: &str, bytes: &[u8]| {
            let err = decode_dicom_bytes(name, bytes).expect_err(name);
            assert!(err.to_string().starts_with(name), "{err}");
            err
        };
        assert!(matches!(check("empty.dcm", &[]), DicomError::NotDicom { .. }));
        assert!(matches!(check("zeros.dcm", &[0u8; 4096]), DicomError::NotDicom { .. }));
        let mut wrong = vec![0u8; 512];
        wrong[128..132].copy_from_slice(b"DICX");
        assert!(matches!(check("wrong-magic.dcm", &wrong), DicomError::NotDicom { .. }));
        check("magic-only.dcm", &wrong[..128].iter().copied().chain(*b"DICM").collect::<Vec<_>>());
        let missing = Path::new("/nonexistent/ecamp/none.dcm");
        let err = decode_dicom_file(missing).expect_err("missing file");
        assert!(err.to_string().contains("/nonexistent/ecamp/none.dcm"), "{err}");

        let (Some(uncr), Some(j2kr)) = (member(UNCR), member(J2KR)) else { return };
        for (member_name, bytes) in [(UNCR, uncr), (J2KR, j2kr)] {
            for cut in [140, 400, 1200, bytes.len() / 2, bytes.len() - 200] {
                let name = format!("{member_name}[..{cut}]");
                let err = check(&name, &bytes[..cut]);
                println!("{err}");
            }
        }
    }

    /// A small Explicit VR Little Endian file built in memory.
    fn synthetic(rows: u16, cols: u16, photometric: &str, spp: u16, bits: u16, pixels: Vec<u8>) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
        obj.put(DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.7")));
        obj.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.4")));
        obj.put(DataElement::new(tags::VIEW_POSITION, VR::CS, PrimitiveValue::from("PA")));
        obj.put(DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from(photometric)));
        obj.put(us(tags::ROWS, rows));
        obj.put(us(tags::COLUMNS, cols));
        obj.put(us(tags::SAMPLES_PER_PIXEL, spp));
        obj.put(us(tags::BITS_ALLOCATED, bits));
        obj.put(us(tags::BITS_STORED, bits));
        obj.put(us(tags::HIGH_BIT, bits - 1));
        obj.put(us(tags::PIXEL_REPRESENTATION, 0));
        if spp == 3 {
            obj.put(us(tags::PLANAR_CONFIGURATION, 0));
        }
        let vr = if bits == 8 { VR::OB } else { VR::OW };
        obj.put(DataElement::new(tags::PIXEL_DATA, vr, PrimitiveValue::from(pixels)));
        obj
    }

    fn encode(obj: InMemDicomObject) -> Vec<u8> {
        encode_with(obj, "1.2.840.10008.1.2.1")
    }

    fn encode_with(obj: InMemDicomObject, transfer_syntax: &str) -> Vec<u8> {
        let file = obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(transfer_syntax)).expect("meta");
        let mut out = Vec::new();
        file.write_all(&mut out).expect("write");
        out
    }

    fn words(values: &[u16]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn synthetic_transforms_follow_the_viewer_rules() {
        // Min–max: no window, no VOI LUT.
        let img = decode_dicom_bytes("minmax", &encode(synthetic(1, 3, "MONOCHROME2", 1, 16, words(&[100, 150, 200]))))
            .expect("decode");
        assert_eq!(img.pixels, [0, 128, 255]);
        assert_eq!((img.view_position.as_deref(), img.sop_instance_uid.as_deref()), (Some("PA"), Some("1.2.3.4")));

        // Rescale then window (linear): center 0, width 101 → [-50, 50] on modality values.
        let mut obj = synthetic(1, 4, "MONOCHROME2", 1, 16, words(&[0, 950, 1000, 2000]));
        obj.put(DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, PrimitiveValue::from("-1000")));
        obj.put(DataElement::new(tags::RESCALE_SLOPE, VR::DS, PrimitiveValue::from("1")));
        obj.put(DataElement::new(tags::WINDOW_CENTER, VR::DS, PrimitiveValue::from("0\\500")));
        obj.put(DataElement::new(tags::WINDOW_WIDTH, VR::DS, PrimitiveValue::from("101\\10")));
        let img = decode_dicom_bytes("window", &encode(obj)).expect("decode");
        assert_eq!(img.pixels, [0, 1, 129, 255]);

        // The same with MONOCHROME1 is the negative.
        let mut obj = synthetic(1, 4, "MONOCHROME1", 1, 16, words(&[0, 950, 1000, 2000]));
        obj.put(DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, PrimitiveValue::from("-1000")));
        obj.put(DataElement::new(tags::WINDOW_CENTER, VR::DS, PrimitiveValue::from("0")));
        obj.put(DataElement::new(tags::WINDOW_WIDTH, VR::DS, PrimitiveValue::from("101")));
        let img = decode_dicom_bytes("window-m1", &encode(obj)).expect("decode");
        assert_eq!(img.pixels, [255, 254, 126, 0]);

        // RGB → BT.601 luma.
        let rgb = vec![255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255];
        let img = decode_dicom_bytes("rgb", &encode(synthetic(2, 2, "RGB", 3, 8, rgb))).expect("decode");
        assert_eq!(img.pixels, [76, 150, 29, 255]);
        assert_eq!(img.photometric, "RGB");

        // Multi-frame: only the first frame is returned.
        let mut obj = synthetic(1, 2, "MONOCHROME2", 1, 8, vec![10, 20, 200, 250]);
        obj.put(DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, PrimitiveValue::from("2")));
        let img = decode_dicom_bytes("multiframe", &encode(obj)).expect("decode");
        assert_eq!(img.pixels, [0, 255]);
    }

    #[test]
    fn synthetic_refusals() {
        // 60000 x 60000 declared over 8 bytes of data: refused before any decoding.
        let err = decode_dicom_bytes("bomb", &encode(synthetic(60000, 60000, "MONOCHROME2", 1, 8, vec![0; 8])))
            .expect_err("bomb");
        assert!(matches!(err, DicomError::TooLarge { .. }), "{err}");
        let err = decode_dicom_bytes("zero", &encode(synthetic(0, 4, "MONOCHROME2", 1, 8, vec![]))).expect_err("zero");
        assert!(matches!(err, DicomError::ZeroSized { .. }), "{err}");
        let mut obj = synthetic(2, 2, "MONOCHROME2", 1, 8, vec![0; 4]);
        obj.remove_element(tags::PIXEL_DATA);
        let err = decode_dicom_bytes("nopixels", &encode(obj)).expect_err("no pixel data");
        assert!(matches!(err, DicomError::NoPixelData { .. }), "{err}");
        let err = decode_dicom_bytes("short", &encode(synthetic(4, 4, "MONOCHROME2", 1, 16, vec![0; 6])))
            .expect_err("short pixel data");
        assert!(err.to_string().starts_with("short:"), "{err}");
        let mut obj = synthetic(2, 2, "MONOCHROME2", 1, 16, vec![0; 8]);
        obj.put(DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(0u16)));
        let err = decode_dicom_bytes("bits0", &encode(obj)).expect_err("bits stored 0");
        assert!(matches!(err, DicomError::Invalid { .. }), "{err}");
        let err = decode_dicom_bytes("palette", &encode(synthetic(2, 2, "PALETTE COLOR", 1, 8, vec![0; 4])))
            .expect_err("palette");
        assert!(matches!(err, DicomError::Unsupported { .. }), "{err}");
    }

    #[test]
    fn codestream_dimensions_are_read_before_decoding() {
        let mut siz = vec![0xFF, 0x4F, 0xFF, 0x51, 0x00, 0x29, 0x00, 0x00];
        for v in [50_000u32, 40_000, 0, 0] {
            siz.extend(v.to_be_bytes());
        }
        assert_eq!(codestream_dimensions(&siz), Some((50_000, 40_000)));
        let jpeg =
            [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x4A, 0x46, 0xFF, 0xC3, 0x00, 0x0B, 0x10, 0x07, 0x9A, 0x07, 0x31];
        assert_eq!(codestream_dimensions(&jpeg), Some((1841, 1946)));
        assert_eq!(codestream_dimensions(&[0xFF, 0xD8, 0xFF]), None);
        assert_eq!(codestream_dimensions(&siz[..20]), None);

        // Rows/Columns say 2x2 but the JPEG 2000 codestream says 50000x40000: refused, not decoded.
        let mut obj = synthetic(2, 2, "MONOCHROME2", 1, 8, vec![]);
        let fragments = PixelFragmentSequence::new(Vec::<u32>::new(), vec![siz.clone()]);
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, Value::from(fragments)));
        let err = decode_dicom_bytes("j2k-bomb", &encode_with(obj, "1.2.840.10008.1.2.4.90")).expect_err("bomb");
        assert!(matches!(err, DicomError::TooLarge { width: 50_000, height: 40_000, .. }), "{err}");

        let Some(j2kr) = member(J2KR) else { return };
        let bytes = j2kr.clone();
        let obj =
            OpenFileOptions::new().read_preamble(ReadPreamble::Never).from_reader(&bytes[MAGIC_OFFSET..]).unwrap();
        let fragments = obj.get(tags::PIXEL_DATA).and_then(|e| e.fragments()).expect("encapsulated");
        assert_eq!(codestream_dimensions(&fragments[0]), Some((1841, 1955)));
    }

    #[test]
    fn each_refusal_is_rejected_with_its_own_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let films = dir.path().join("films");
        std::fs::create_dir(&films).expect("mkdir");
        let mut nopixels = synthetic(2, 2, "MONOCHROME2", 1, 8, vec![0; 4]);
        nopixels.remove_element(tags::PIXEL_DATA);
        // JPEG-LS: a known transfer syntax this build has no codec for.
        let mut jpeg_ls = synthetic(2, 2, "MONOCHROME2", 1, 8, vec![]);
        let fragments = PixelFragmentSequence::new(Vec::<u32>::new(), vec![vec![0xFF, 0xD8, 0xFF, 0xF7]]);
        jpeg_ls.put(DataElement::new(tags::PIXEL_DATA, VR::OB, Value::from(fragments)));
        let unknown_syntax = encode_with(jpeg_ls, "1.2.840.10008.1.2.4.80");
        let files = [
            ("bomb.dcm", encode(synthetic(60000, 60000, "MONOCHROME2", 1, 8, vec![0; 8])), "image-too-large"),
            ("nopixels.dcm", encode(nopixels), "no-pixel-data"),
            ("syntax.dcm", unknown_syntax, "unsupported-encoding"),
            ("palette.dcm", encode(synthetic(2, 2, "PALETTE COLOR", 1, 8, vec![0; 4])), "unsupported-image"),
            ("zero.dcm", encode(synthetic(0, 4, "MONOCHROME2", 1, 8, vec![])), "image-too-small"),
            ("short.dcm", encode(synthetic(4, 4, "MONOCHROME2", 1, 16, vec![0; 6])), "corrupt-image"),
        ];
        for (name, bytes, _) in &files {
            std::fs::write(films.join(name), bytes).expect("write");
        }
        std::fs::write(dir.path().join("reports.csv"), "StudyInstanceUID,report\n1.2.3,Normal.\n").expect("csv");
        let spec = SourceSpec::Dicom(films.clone());
        let mut opts = crate::IngestOptions::new(format!("file://{}", dir.path().join("ds").display()), vec![spec]);
        opts.workers = 1;
        opts.source_opts.reports = Some(dir.path().join("reports.csv"));
        opts.rejects = Some(dir.path().join("rejects.jsonl"));
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let summary =
            crate::ingest(&opts, std::sync::Arc::new(crate::distill::Rules::new()), rt.handle()).expect("ingest");
        let rejects = std::fs::read_to_string(dir.path().join("rejects.jsonl")).expect("rejects");
        assert_eq!(summary.rejected_total(), files.len(), "{rejects}");
        for (name, _, reason) in files {
            let line = rejects.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("{name}: {rejects}"));
            let reject: serde_json::Value = serde_json::from_str(line).expect("json");
            assert_eq!(reject["reason"], reason, "{name}: {line}");
        }
    }

    #[test]
    fn list_dicom_files_finds_dicom_files_recursively() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nested = dir.path().join("a").join("b");
        std::fs::create_dir_all(&nested).expect("mkdir");
        let dicom = encode(synthetic(2, 2, "MONOCHROME2", 1, 8, vec![0, 1, 2, 3]));
        std::fs::write(nested.join("no_extension"), &dicom).expect("write");
        std::fs::write(dir.path().join("z.DCM"), b"named like DICOM").expect("write");
        std::fs::write(dir.path().join("notes.txt"), b"hello").expect("write");
        let mut real = vec![nested.join("no_extension"), dir.path().join("z.DCM")];
        if let (Some(uncr), Some(j2kr)) = (member(UNCR), member(J2KR)) {
            std::fs::write(dir.path().join("a").join("RG1_J2KR.dcm"), j2kr.clone()).expect("write");
            std::fs::write(dir.path().join("a").join("RG1_UNCR.dcm"), uncr.clone()).expect("write");
            real.extend([dir.path().join("a").join("RG1_J2KR.dcm"), dir.path().join("a").join("RG1_UNCR.dcm")]);
        }
        real.sort();
        let listed = list_dicom_files(dir.path()).expect("list");
        assert_eq!(listed, real);

        let img = decode_dicom_file(&nested.join("no_extension")).expect("decode from disk");
        assert_eq!((img.width, img.height, img.pixels.as_slice()), (2, 2, [0u8, 85, 170, 255].as_slice()));
        let err = decode_dicom_file(&dir.path().join("z.DCM")).expect_err("not DICOM");
        assert!(err.to_string().contains("z.DCM"), "{err}");
        assert!(list_dicom_files(&dir.path().join("missing")).is_err());
    }
}
