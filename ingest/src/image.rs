//! Image validation and preparation: every input is fully decoded (zune-jpeg, zune-png),
//! checked against a pixel and a decoded-byte budget before decoding, converted to 8-bit
//! grayscale, resized so its short side is the training resolution (Lanczos3, fast_image_resize), and stored as a
//! quality-95 JPEG. A grayscale JPEG already at size is passed through byte for byte.

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_core::result::DecodingResult;
use zune_jpeg::JpegDecoder;
use zune_png::PngDecoder;

/// How images are prepared for the samples table.
#[derive(Debug, Clone)]
pub struct ImageConfig {
    /// Target length of the short side, in pixels.
    pub size: u32,
    /// JPEG quality of re-encoded images.
    pub quality: u8,
    /// Largest accepted width × height of an input (decompression-bomb guard).
    pub max_pixels: u64,
    /// Largest accepted decoded size of an input in bytes (width × height × channels × bytes
    /// per sample): a small PNG of 16-bit RGBA within the pixel budget still decodes to 8 bytes
    /// a pixel.
    pub max_decoded_bytes: u64,
}

impl Default for ImageConfig {
    fn default() -> Self {
        // 4 bytes a pixel at the full pixel budget: 8-bit RGBA or CMYK, or 16-bit grey and alpha.
        ImageConfig { size: 512, quality: 95, max_pixels: 100_000_000, max_decoded_bytes: 400_000_000 }
    }
}

/// Why an image was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Zero bytes.
    #[error("empty image file")]
    Empty,
    /// Neither JPEG nor PNG magic.
    #[error("not a JPEG or PNG image (unrecognised magic bytes)")]
    UnknownFormat,
    /// The decoder failed (truncated or corrupt data).
    #[error("corrupt or truncated image: {0}")]
    Corrupt(String),
    /// Larger than the pixel budget.
    #[error("image of {width}x{height} exceeds the {max} pixel limit")]
    TooLarge {
        /// Declared width.
        width: u64,
        /// Declared height.
        height: u64,
        /// The limit.
        max: u64,
    },
    /// Within the pixel budget, but its decoded samples exceed the byte budget.
    #[error("image of {width}x{height} would decode to {bytes} bytes, over the limit of {max}")]
    DecodedTooLarge {
        /// Declared width.
        width: u64,
        /// Declared height.
        height: u64,
        /// Decoded size: width × height × channels × bytes per sample.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// A zero or tiny dimension.
    #[error("image of {width}x{height} is too small")]
    TooSmall {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// Encoding or resizing failed.
    #[error("cannot encode image: {0}")]
    Encode(String),
}

impl ImageError {
    /// A short stable code for summaries and reject files.
    pub fn code(&self) -> &'static str {
        match self {
            ImageError::Empty => "empty-image",
            ImageError::UnknownFormat => "unknown-image-format",
            ImageError::Corrupt(_) => "corrupt-image",
            ImageError::TooLarge { .. } | ImageError::DecodedTooLarge { .. } => "image-too-large",
            ImageError::TooSmall { .. } => "image-too-small",
            ImageError::Encode(_) => "image-encode-failed",
        }
    }
}

/// An 8-bit grayscale raster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gray {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major pixels, `width * height` bytes.
    pub pixels: Vec<u8>,
}

/// An image ready for the samples table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedImage {
    /// The stored JPEG bytes.
    pub jpeg: Vec<u8>,
    /// Stored width.
    pub width: u32,
    /// Stored height.
    pub height: u32,
    /// Width of the input.
    pub orig_width: u32,
    /// Height of the input.
    pub orig_height: u32,
    /// Whether the input bytes were kept as they were.
    pub passthrough: bool,
}

/// Smallest accepted side, in pixels (of inputs, and of the stored short side).
pub const MIN_SIDE: u32 = 16;

fn is_jpeg(b: &[u8]) -> bool {
    b.len() >= 3 && b[..3] == [0xFF, 0xD8, 0xFF]
}

fn is_png(b: &[u8]) -> bool {
    b.len() >= 8 && b[..8] == [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]
}

fn check_dims(width: u64, height: u64, cfg: &ImageConfig) -> Result<(), ImageError> {
    if width.saturating_mul(height) > cfg.max_pixels {
        return Err(ImageError::TooLarge { width, height, max: cfg.max_pixels });
    }
    if width < MIN_SIDE as u64 || height < MIN_SIDE as u64 {
        return Err(ImageError::TooSmall { width: width as u32, height: height as u32 });
    }
    Ok(())
}

/// Checks the declared size of an input against both budgets before it is decoded, with
/// `bytes_per_pixel` its channels × bytes per sample.
fn check_decode(width: u64, height: u64, bytes_per_pixel: u64, cfg: &ImageConfig) -> Result<(), ImageError> {
    check_dims(width, height, cfg)?;
    let bytes = width.saturating_mul(height).saturating_mul(bytes_per_pixel);
    if bytes > cfg.max_decoded_bytes {
        return Err(ImageError::DecodedTooLarge { width, height, bytes, max: cfg.max_decoded_bytes });
    }
    Ok(())
}

/// Decodes a JPEG or PNG to 8-bit grayscale, refusing it before the full decode if its declared
/// size exceeds the budget. Returns the raster and whether the input was a grayscale JPEG.
pub fn decode_gray(bytes: &[u8], cfg: &ImageConfig) -> Result<(Gray, bool), ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if is_jpeg(bytes) {
        let opts = DecoderOptions::new_safe()
            .set_strict_mode(true)
            .set_max_width(1 << 16)
            .set_max_height(1 << 16)
            .jpeg_set_out_colorspace(ColorSpace::Luma);
        let mut dec = JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
        dec.decode_headers().map_err(|e| ImageError::Corrupt(e.to_string()))?;
        let (w, h) = dec.dimensions().ok_or_else(|| ImageError::Corrupt("no frame header".into()))?;
        // The decoder holds every component of the input, whatever the output colour space.
        let components = dec.input_colorspace().map_or(4, |c| c.num_components());
        check_decode(w as u64, h as u64, components as u64, cfg)?;
        let gray_input = components == 1;
        // zune-jpeg maps only YCbCr and grey straight to luma. RGB, CMYK and YCCK (Adobe APP14)
        // go through RGB, which it derives from CMYK the Adobe way (inverted samples, as
        // Photoshop, libjpeg and Pillow write them).
        let via_rgb = matches!(dec.input_colorspace(), Some(ColorSpace::RGB | ColorSpace::CMYK | ColorSpace::YCCK));
        if via_rgb {
            dec.set_options(dec.options().jpeg_set_out_colorspace(ColorSpace::RGB));
        }
        let decoded = dec.decode().map_err(|e| ImageError::Corrupt(e.to_string()))?;
        let pixels = if via_rgb { to_luma(&decoded, ColorSpace::RGB, w * h)? } else { decoded };
        if pixels.len() != w * h {
            return Err(ImageError::Corrupt(format!("decoded {} bytes for {w}x{h}", pixels.len())));
        }
        return Ok((Gray { width: w as u32, height: h as u32, pixels }, gray_input));
    }
    if is_png(bytes) {
        let opts =
            DecoderOptions::new_safe().set_max_width(1 << 16).set_max_height(1 << 16).png_set_strip_to_8bit(true);
        let mut dec = PngDecoder::new_with_options(ZCursor::new(bytes), opts);
        dec.decode_headers().map_err(|e| ImageError::Corrupt(format!("{e:?}")))?;
        let (w, h) = dec.dimensions().ok_or_else(|| ImageError::Corrupt("no IHDR".into()))?;
        let colorspace = dec.colorspace().ok_or_else(|| ImageError::Corrupt("unknown colour type".into()))?;
        // 16-bit samples are decoded as such before they are stripped to 8 bits.
        let sample_bytes = if dec.depth() == Some(zune_core::bit_depth::BitDepth::Sixteen) { 2 } else { 1 };
        check_decode(w as u64, h as u64, (colorspace.num_components() * sample_bytes) as u64, cfg)?;
        let decoded = dec.decode().map_err(|e| ImageError::Corrupt(format!("{e:?}")))?;
        let data: Vec<u8> = match decoded {
            DecodingResult::U8(v) => v,
            // strip_to_8bit should have handled it; keep the high byte if it did not.
            DecodingResult::U16(v) => v.iter().map(|x| (x >> 8) as u8).collect(),
            _ => return Err(ImageError::Corrupt("unsupported PNG sample type".into())),
        };
        let pixels = to_luma(&data, colorspace, w * h)?;
        return Ok((Gray { width: w as u32, height: h as u32, pixels }, false));
    }
    Err(ImageError::UnknownFormat)
}

/// Converts interleaved samples to luma (ITU-R 601-2), dropping alpha.
fn to_luma(data: &[u8], cs: ColorSpace, n: usize) -> Result<Vec<u8>, ImageError> {
    let c = cs.num_components();
    if data.len() < n * c {
        return Err(ImageError::Corrupt(format!("{} samples for {n} pixels of {c} components", data.len())));
    }
    Ok(match c {
        1 => data[..n].to_vec(),
        2 => data.chunks_exact(2).take(n).map(|p| p[0]).collect(),
        _ => data
            .chunks_exact(c)
            .take(n)
            .map(|p| ((299 * p[0] as u32 + 587 * p[1] as u32 + 114 * p[2] as u32 + 500) / 1000) as u8)
            .collect(),
    })
}

/// The size whose short side is `short`, keeping the aspect ratio.
pub fn target_size(width: u32, height: u32, short: u32) -> (u32, u32) {
    if width <= height {
        (short, ((height as u64 * short as u64 + width as u64 / 2) / width as u64).max(1) as u32)
    } else {
        (((width as u64 * short as u64 + height as u64 / 2) / height as u64).max(1) as u32, short)
    }
}

/// Resizes a raster with Lanczos3.
pub fn resize(src: &Gray, width: u32, height: u32) -> Result<Gray, ImageError> {
    if (src.width, src.height) == (width, height) {
        return Ok(src.clone());
    }
    let img = Image::from_vec_u8(src.width, src.height, src.pixels.clone(), PixelType::U8)
        .map_err(|e| ImageError::Encode(e.to_string()))?;
    let mut dst = Image::new(width, height, PixelType::U8);
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    Resizer::new().resize(&img, &mut dst, &opts).map_err(|e| ImageError::Encode(e.to_string()))?;
    Ok(Gray { width, height, pixels: dst.into_vec() })
}

/// The restart interval (MCUs per segment) of the JPEGs ingest encodes for an image `width`
/// pixels wide: the largest divisor of the MCU row from 8 down to 4 (segments of 64 to 32 pixels,
/// ~1.5–3 % more bytes), else one segment per MCU row. The loader decodes only the segments under
/// a sample's crop (`ecamp_loader::region`), which needs segments that tile the image.
pub fn restart_interval(width: u32) -> u16 {
    let mcus = width.div_ceil(8).max(1);
    let k = (4..=8).rev().find(|&k| mcus.is_multiple_of(k)).unwrap_or(mcus);
    u16::try_from(k).unwrap_or(0)
}

/// Encodes a raster as a grayscale JPEG with restart markers (see [`restart_interval`]).
pub fn encode_jpeg(img: &Gray, quality: u8) -> Result<Vec<u8>, ImageError> {
    let (w, h) = (u16::try_from(img.width), u16::try_from(img.height));
    let (Ok(w), Ok(h)) = (w, h) else {
        return Err(ImageError::Encode(format!("{}x{} is too large for JPEG", img.width, img.height)));
    };
    let mut out = Vec::with_capacity(img.pixels.len() / 4);
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, quality);
    encoder.set_restart_interval(restart_interval(img.width));
    encoder.encode(&img.pixels, w, h, jpeg_encoder::ColorType::Luma).map_err(|e| ImageError::Encode(e.to_string()))?;
    Ok(out)
}

/// Prepares an encoded input (JPEG or PNG) for storage.
pub fn prepare(bytes: &[u8], cfg: &ImageConfig) -> Result<PreparedImage, ImageError> {
    let (gray, gray_jpeg) = decode_gray(bytes, cfg)?;
    let (w, h) = target_size(gray.width, gray.height, cfg.size);
    if gray_jpeg && (w, h) == (gray.width, gray.height) {
        return Ok(PreparedImage {
            jpeg: bytes.to_vec(),
            width: w,
            height: h,
            orig_width: gray.width,
            orig_height: gray.height,
            passthrough: true,
        });
    }
    prepare_gray(&gray, cfg)
}

/// Prepares an already decoded raster (phantoms, DICOM) for storage.
pub fn prepare_gray(gray: &Gray, cfg: &ImageConfig) -> Result<PreparedImage, ImageError> {
    check_dims(gray.width as u64, gray.height as u64, cfg)?;
    if gray.pixels.len() as u64 != gray.width as u64 * gray.height as u64 {
        return Err(ImageError::Corrupt(format!("{} pixels for {}x{}", gray.pixels.len(), gray.width, gray.height)));
    }
    let (w, h) = target_size(gray.width, gray.height, cfg.size);
    // An extreme aspect ratio would make the resized image itself the bomb.
    if w > u16::MAX as u32 || h > u16::MAX as u32 || w as u64 * h as u64 > cfg.max_pixels {
        return Err(ImageError::TooLarge { width: w as u64, height: h as u64, max: cfg.max_pixels });
    }
    let resized = resize(gray, w, h)?;
    Ok(PreparedImage {
        jpeg: encode_jpeg(&resized, cfg.quality)?,
        width: w,
        height: h,
        orig_width: gray.width,
        orig_height: gray.height,
        passthrough: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_interval_divides_the_mcu_row() {
        assert_eq!(restart_interval(512), 8);
        assert_eq!(restart_interval(448), 8);
        assert_eq!(restart_interval(40), 5);
        assert_eq!(restart_interval(500), 7); // 63 MCUs
        assert_eq!(restart_interval(8 * 61), 61); // a prime MCU row: one segment per row
        assert_eq!(restart_interval(1), 1);
        let jpeg = encode_jpeg(&gradient(96, 40), 90).expect("encode");
        assert!(jpeg.windows(6).any(|w| w == [0xFF, 0xDD, 0, 4, 0, 6]), "DRI of 6 MCUs (96 px)");
        assert!(jpeg.windows(2).any(|w| w == [0xFF, 0xD0]), "restart markers");
        assert_eq!(decode_gray(&jpeg, &ImageConfig::default()).expect("decodes").0.width, 96);
    }

    fn gradient(w: u32, h: u32) -> Gray {
        Gray { width: w, height: h, pixels: (0..w * h).map(|i| ((i % w) * 255 / w) as u8).collect() }
    }

    #[test]
    fn resizes_short_side_and_round_trips() {
        let cfg = ImageConfig { size: 64, ..Default::default() };
        let p = prepare_gray(&gradient(200, 100), &cfg).expect("prepare");
        assert_eq!((p.width, p.height, p.orig_width, p.orig_height), (128, 64, 200, 100));
        let (back, gray_jpeg) = decode_gray(&p.jpeg, &cfg).expect("decode");
        assert!(gray_jpeg);
        assert_eq!((back.width, back.height), (128, 64));
        // Already at size: the bytes pass through untouched.
        let again = prepare(&p.jpeg, &cfg).expect("again");
        assert!(again.passthrough);
        assert_eq!(again.jpeg, p.jpeg);
    }

    #[test]
    fn bad_inputs_are_refused_with_reasons() {
        let cfg = ImageConfig { size: 64, max_pixels: 10_000, ..Default::default() };
        assert_eq!(decode_gray(&[], &cfg).map(|_| ()), Err(ImageError::Empty));
        assert_eq!(decode_gray(b"GIF89a....", &cfg).map(|_| ()), Err(ImageError::UnknownFormat));
        let jpeg = encode_jpeg(&gradient(64, 64), 90).expect("encode");
        let cut = &jpeg[..jpeg.len() / 2];
        assert!(matches!(decode_gray(cut, &cfg), Err(ImageError::Corrupt(_))));
        let big = encode_jpeg(&gradient(200, 100), 90).expect("encode");
        assert!(matches!(decode_gray(&big, &cfg), Err(ImageError::TooLarge { .. })));
    }

    #[test]
    fn cmyk_and_ycck_jpegs_decode_to_luma() {
        // Ink: no colour, black rising left to right, so the luma falls from white to near black.
        let (w, h) = (64u16, 32u16);
        let ink: Vec<u8> =
            (0..w as usize * h as usize).flat_map(|i| [0, 0, 0, ((i % w as usize) * 255 / 64) as u8]).collect();
        let cfg = ImageConfig { size: 32, ..Default::default() };
        for color in [jpeg_encoder::ColorType::Cmyk, jpeg_encoder::ColorType::CmykAsYcck] {
            let mut bytes = Vec::new();
            jpeg_encoder::Encoder::new(&mut bytes, 95).encode(&ink, w, h, color).expect("encode");
            let (gray, gray_jpeg) = decode_gray(&bytes, &cfg).unwrap_or_else(|e| panic!("{color:?}: {e}"));
            assert!(!gray_jpeg);
            assert_eq!((gray.width, gray.height), (64, 32));
            for x in [0usize, 16, 32, 48, 63] {
                let want = 255 - (x * 255 / 64) as i32;
                let got = gray.pixels[16 * 64 + x] as i32;
                assert!((got - want).abs() <= 8, "{color:?} at x={x}: {got}, want {want}");
            }
            assert!(prepare(&bytes, &cfg).is_ok(), "{color:?}");
        }
    }

    /// A real PNG of `w`×`h` in `cs` at `depth`, every sample 0x40.
    fn png(w: usize, h: usize, cs: ColorSpace, depth: zune_core::bit_depth::BitDepth) -> Vec<u8> {
        let data = vec![0x40; w * h * cs.num_components() * depth.size_of()];
        let opts = zune_core::options::EncoderOptions::new(w, h, cs, depth);
        let mut out = Vec::new();
        zune_png::PngEncoder::new(&data, opts).encode(&mut out).expect("encode png");
        out
    }

    #[test]
    fn the_decoded_size_is_budgeted_before_decoding() {
        use zune_core::bit_depth::BitDepth;
        let cfg = ImageConfig { size: 64, max_pixels: 10_000, max_decoded_bytes: 20_000, ..Default::default() };
        // 4,096 pixels are within the pixel budget; 16-bit RGBA makes them 32,768 bytes.
        let err = decode_gray(&png(64, 64, ColorSpace::RGBA, BitDepth::Sixteen), &cfg).expect_err("over budget");
        assert_eq!(err, ImageError::DecodedTooLarge { width: 64, height: 64, bytes: 32_768, max: 20_000 });
        assert_eq!(err.code(), "image-too-large");
        assert!(err.to_string().contains("32768 bytes"), "{err}");
        let (gray, _) = decode_gray(&png(64, 64, ColorSpace::Luma, BitDepth::Sixteen), &cfg).expect("8,192 bytes");
        assert_eq!((gray.width, gray.height, gray.pixels[0]), (64, 64, 0x40));

        // The audit's bomb: 10000x10000 16-bit RGBA, 100 megapixels (within the default pixel
        // budget) and 800 MB decoded. Its header is enough to refuse it.
        let mut bomb = png(16, 16, ColorSpace::RGBA, BitDepth::Sixteen);
        bomb[16..24].copy_from_slice(&[0, 0, 0x27, 0x10, 0, 0, 0x27, 0x10]);
        let mut crc = flate2::Crc::new();
        crc.update(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        let err = decode_gray(&bomb, &ImageConfig::default()).expect_err("bomb");
        assert!(matches!(err, ImageError::DecodedTooLarge { bytes: 800_000_000, .. }), "{err}");
    }

    #[test]
    fn target_size_keeps_aspect() {
        assert_eq!(target_size(1000, 2000, 512), (512, 1024));
        assert_eq!(target_size(2000, 1000, 512), (1024, 512));
        assert_eq!(target_size(512, 512, 512), (512, 512));
    }
}
