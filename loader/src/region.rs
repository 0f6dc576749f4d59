//! Decoding only the part of a JPEG that a crop needs, through its restart markers.
//!
//! A baseline JPEG with a restart interval is a grid of entropy-coded segments, each decodable on
//! its own (the DC predictors restart at every marker). When the interval divides an MCU row, the
//! segments tile the image in rectangles of `interval · 8` by 8 pixels (single-component images),
//! so the segments under a crop box, with a patched frame size and renumbered markers, form a
//! valid JPEG of just that region. zune-jpeg decodes it to exactly the pixels the full image has
//! there: every 8×8 block goes through the same entropy decoding, dequantisation and IDCT, and a
//! grayscale image has no chroma upsampling that could reach across a region's edge.
//!
//! This is TensorFlow's `decode_and_crop_jpeg` idea, taken further because the markers let the
//! decoder skip the entropy decoding of the rows and columns outside the crop too. The integrity
//! of the skipped segments is still checked: the loader verifies `image_sha256` of the whole
//! stored image, whose every pixel `ecamp ingest` decoded and validated (for JPEGs from another
//! writer, a corrupt segment outside a crop goes unnoticed until a crop needs it). `ecamp ingest` writes the
//! markers into every JPEG it encodes (`ecamp_ingest::image::restart_interval`); JPEGs without
//! them (passed through untouched, or from other writers) are decoded whole.

use std::ops::Range;

/// MCU edge of a single-component JPEG, in pixels.
const BLOCK: u32 = 8;

/// Where the restart segments of a JPEG lie; `None` from [`Layout::parse`] when the image cannot
/// be cut into regions (no or uneven restart markers, progressive, colour, malformed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Offset of the frame header's height and width fields.
    dims_at: usize,
    /// Offset of the first entropy-coded byte (everything before it is the header).
    data_start: usize,
    /// Width of a segment in pixels.
    segment_width: u32,
    /// Segments per MCU row.
    columns: u32,
    /// MCU rows.
    rows: u32,
    /// Each segment's entropy-coded bytes (markers excluded), row-major.
    segments: Vec<Range<usize>>,
}

/// A restart-aligned rectangle of the image: what [`Layout::write_region`] makes decodable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// First column in the image.
    pub left: u32,
    /// First row in the image.
    pub top: u32,
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Segment columns `c0..c1` and MCU rows `r0..r1`.
    cells: (Range<u32>, Range<u32>),
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

impl Layout {
    /// Reads the header and finds every restart segment; `None` when the JPEG is not a
    /// single-component sequential image whose restart interval divides its MCU rows.
    pub fn parse(jpeg: &[u8]) -> Option<Layout> {
        if jpeg.get(..2)? != [0xFF, 0xD8] {
            return None;
        }
        let (mut pos, mut frame, mut interval) = (2usize, None, 0u16);
        let data_start = loop {
            while jpeg.get(pos)? == &0xFF && jpeg.get(pos + 1)? == &0xFF {
                pos += 1;
            }
            if jpeg.get(pos)? != &0xFF {
                return None;
            }
            let marker = *jpeg.get(pos + 1)?;
            let at = pos + 2;
            let len = usize::from(be16(jpeg, at)?);
            if len < 2 || at + len > jpeg.len() {
                return None;
            }
            match marker {
                // Baseline and extended sequential Huffman frames, 8-bit, one component (whose
                // frame header is 11 bytes long).
                0xC0 | 0xC1 => {
                    let (h, w) = (be16(jpeg, at + 3)?, be16(jpeg, at + 5)?);
                    if len != 11 || *jpeg.get(at + 2)? != 8 || *jpeg.get(at + 7)? != 1 || h == 0 || w == 0 {
                        return None;
                    }
                    frame = Some((at + 3, u32::from(w), u32::from(h)));
                }
                // Any other frame type (progressive, lossless, arithmetic, hierarchical): whole.
                0xC2..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF | 0xDE | 0xDF => return None,
                0xDD if len == 4 => interval = be16(jpeg, at + 2)?,
                0xDD => return None,
                0xDA => break at + len,
                0x01 | 0xD0..=0xD9 => return None,
                _ => {}
            }
            pos = at + len;
        };
        let (dims_at, width, height) = frame?;
        let (mcus, rows) = (width.div_ceil(BLOCK), height.div_ceil(BLOCK));
        let k = u32::from(interval);
        if k == 0 || mcus % k != 0 {
            return None;
        }
        let (columns, count) = (mcus / k, (mcus / k) as usize * rows as usize);
        // Every segment but the last ends in a 2-byte marker: a header asking for more segments
        // than the bytes can hold is not worth scanning (nor allocating for).
        if count > (jpeg.len() - data_start) / 2 + 1 {
            return None;
        }
        let segments = scan_segments(jpeg, data_start, count)?;
        Some(Layout { width, height, dims_at, data_start, segment_width: k * BLOCK, columns, rows, segments })
    }

    /// The smallest restart-aligned region holding the crop `(top, left, height, width)`;
    /// `None` when that is the whole image (decode it as it is).
    pub fn region(&self, top: u32, left: u32, height: u32, width: u32) -> Option<Region> {
        let c = (left / self.segment_width)
            ..(left.saturating_add(width).div_ceil(self.segment_width)).clamp(1, self.columns);
        let r = (top / BLOCK)..(top.saturating_add(height).div_ceil(BLOCK)).clamp(1, self.rows);
        if c.start >= c.end || r.start >= r.end || (c == (0..self.columns) && r == (0..self.rows)) {
            return None;
        }
        let (left, top) = (c.start * self.segment_width, r.start * BLOCK);
        let width = (c.end * self.segment_width).min(self.width) - left;
        let height = (r.end * BLOCK).min(self.height) - top;
        Some(Region { left, top, width, height, cells: (c, r) })
    }

    /// Writes into `out` (cleared first) a JPEG of `region` alone: this image's header with the
    /// region's size, its segments in order with restart markers numbered afresh, and EOI.
    pub fn write_region(&self, jpeg: &[u8], region: &Region, out: &mut Vec<u8>) {
        let (cols, rows) = &region.cells;
        out.clear();
        out.extend_from_slice(&jpeg[..self.data_start]);
        // The frame's dimensions fit u16: they are at most the image's.
        out[self.dims_at..self.dims_at + 2].copy_from_slice(&(region.height as u16).to_be_bytes());
        out[self.dims_at + 2..self.dims_at + 4].copy_from_slice(&(region.width as u16).to_be_bytes());
        let mut n = 0u32;
        for r in rows.clone() {
            for c in cols.clone() {
                if n > 0 {
                    out.extend_from_slice(&[0xFF, 0xD0 + ((n - 1) % 8) as u8]);
                }
                out.extend_from_slice(&jpeg[self.segments[(r * self.columns + c) as usize].clone()]);
                n += 1;
            }
        }
        out.extend_from_slice(&[0xFF, 0xD9]);
    }
}

/// The entropy-coded segments from `start` to EOI, split at restart markers; `None` unless there
/// are exactly `expected` of them with markers numbered RST0..RST7 in turn.
fn scan_segments(jpeg: &[u8], start: usize, expected: usize) -> Option<Vec<Range<usize>>> {
    let mut segments = Vec::with_capacity(expected);
    let (mut seg_start, mut i) = (start, start);
    // First of the 0xFF fill bytes right before the current position, if any (a data byte 0xFF is
    // always stuffed with 0x00, so a run of 0xFF before a marker is fill, not data).
    let mut fill: Option<usize> = None;
    loop {
        let p = i + memchr::memchr(0xFF, jpeg.get(i..)?)?;
        // `fill` is only kept while each next byte is 0xFF, so it always starts the run before `p`.
        let end = fill.unwrap_or(p);
        match *jpeg.get(p + 1)? {
            // A stuffed 0xFF data byte.
            0x00 => (i, fill) = (p + 2, None),
            // A fill byte before a marker.
            0xFF => (i, fill) = (p + 1, Some(end)),
            m @ 0xD0..=0xD7 => {
                if usize::from(m - 0xD0) != segments.len() % 8 || segments.len() + 1 >= expected {
                    return None;
                }
                segments.push(seg_start..end);
                seg_start = p + 2;
                (i, fill) = (seg_start, None);
            }
            0xD9 => {
                segments.push(seg_start..end);
                return (segments.len() == expected).then_some(segments);
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::decode_gray;

    /// A textured grayscale image, JPEG-encoded with the given restart interval.
    fn jpeg(w: u16, h: u16, interval: u16) -> (Vec<u8>, Vec<u8>) {
        let px: Vec<u8> = (0..u32::from(w) * u32::from(h))
            .map(|i| {
                let (x, y) = (i % u32::from(w), i / u32::from(w));
                ((x * 7 + y * 13 + (x * y) % 31) % 256) as u8
            })
            .collect();
        let mut out = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut out, 90);
        enc.set_restart_interval(interval);
        enc.encode(&px, w, h, jpeg_encoder::ColorType::Luma).expect("encode");
        let mut full = Vec::new();
        decode_gray(&out, 4096, 4096, &mut full).expect("decode");
        (out, full)
    }

    #[test]
    fn a_region_decodes_to_the_pixels_of_the_full_image() {
        // Widths and heights that are not multiples of 8 exercise the partial last MCUs.
        for (w, h, interval) in [(128u16, 96u16, 8), (125, 83, 4), (64, 64, 1), (61, 40, 8)] {
            let (bytes, full) = jpeg(w, h, interval);
            let layout = Layout::parse(&bytes).expect("restart layout");
            assert_eq!((layout.width, layout.height), (u32::from(w), u32::from(h)));
            let (mut sub, mut px) = (Vec::new(), Vec::new());
            let mut cut = 0;
            let (wf, hf) = (f64::from(w), f64::from(h));
            // Crops as fractions (top, left, height, width) of the image, then in pixels.
            for (t, l, fh, fw) in
                [(0.0, 0.0, 0.1, 0.1), (0.2, 0.3, 0.4, 0.4), (0.05, 0.0, 0.1, 1.0), (0.6, 0.5, 0.4, 0.5)]
            {
                let (top, left) = ((t * hf) as u32, (l * wf) as u32);
                let (ch, cw) = (((fh * hf) as u32).max(1), ((fw * wf) as u32).max(1));
                let Some(r) = layout.region(top, left, ch, cw) else {
                    continue;
                };
                cut += 1;
                assert!(r.left <= left && r.top <= top, "{r:?}");
                assert!(r.left + r.width >= left + cw && r.top + r.height >= top + ch, "{r:?}");
                layout.write_region(&bytes, &r, &mut sub);
                let (rw, rh) = decode_gray(&sub, 4096, 4096, &mut px).expect("region decodes");
                assert_eq!((rw as u32, rh as u32), (r.width, r.height));
                for y in 0..rh {
                    let src = (r.top as usize + y) * usize::from(w) + r.left as usize;
                    assert_eq!(&px[y * rw..(y + 1) * rw], &full[src..src + rw], "{w}x{h} region {r:?}, row {y}");
                }
            }
            assert!(cut >= 3, "{w}x{h}: most crops are regions ({cut})");
        }
    }

    #[test]
    fn comments_and_fill_bytes_are_skipped() {
        let (bytes, full) = jpeg(128, 64, 8);
        // A comment after SOI, and fill bytes before the first restart marker and before EOI.
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xFE, 0, 5, b'a', b'b', b'c'];
        let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]).expect("a scan");
        let rst = sos + bytes[sos..].windows(2).position(|w| w == [0xFF, 0xD0]).expect("a restart marker");
        b.extend_from_slice(&bytes[2..rst]);
        b.extend_from_slice(&[0xFF, 0xFF]);
        b.extend_from_slice(&bytes[rst..bytes.len() - 2]);
        b.extend_from_slice(&[0xFF, 0xFF, 0xD9]);
        let layout = Layout::parse(&b).expect("layout");
        let r = layout.region(0, 0, 30, 60).expect("a region");
        let (mut sub, mut px) = (Vec::new(), Vec::new());
        layout.write_region(&b, &r, &mut sub);
        assert!(!sub.windows(3).any(|w| w == [0xFF, 0xFF, 0xD0]), "fill bytes left out of the segments");
        let (rw, rh) = decode_gray(&sub, 4096, 4096, &mut px).expect("region decodes");
        assert_eq!((rw, rh), (64, 32));
        for y in 0..rh {
            assert_eq!(&px[y * rw..(y + 1) * rw], &full[y * 128..y * 128 + rw]);
        }
    }

    #[test]
    fn the_whole_image_is_not_a_region() {
        let (bytes, _) = jpeg(64, 64, 8);
        let layout = Layout::parse(&bytes).expect("layout");
        assert_eq!(layout.region(0, 0, 64, 64), None);
        assert_eq!(layout.region(3, 1, 60, 62), None);
        assert!(layout.region(8, 0, 56, 64).is_some());
    }

    #[test]
    fn images_that_cannot_be_cut_are_decoded_whole() {
        // No restart markers.
        assert_eq!(Layout::parse(&jpeg(64, 64, 0).0), None);
        // An interval that does not divide the MCU row (8 MCUs, interval 3).
        assert_eq!(Layout::parse(&jpeg(64, 64, 3).0), None);
        // Not a JPEG, truncated, or a marker out of sequence.
        assert_eq!(Layout::parse(b"not a jpeg"), None);
        let (bytes, _) = jpeg(64, 64, 8);
        for cut in [3, 40, bytes.len() / 2, bytes.len() - 2] {
            assert_eq!(Layout::parse(&bytes[..cut]), None, "cut at {cut}");
        }
        let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]).expect("a scan");
        let rst = sos + bytes[sos..].windows(2).position(|w| w == [0xFF, 0xD0]).expect("a restart marker");
        let mut swapped = bytes.clone();
        swapped[rst + 1] = 0xD3;
        assert_eq!(Layout::parse(&swapped), None);
        // A header that promises more segments than the bytes hold (65535² pixels, DRI 1).
        let mut huge = bytes.clone();
        let sof = huge.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a frame header");
        huge[sof + 5..sof + 9].copy_from_slice(&[0xFF; 4]);
        let dri = huge.windows(2).position(|w| w == [0xFF, 0xDD]).expect("DRI");
        huge[dri + 4..dri + 6].copy_from_slice(&[0, 1]);
        assert_eq!(Layout::parse(&huge), None);
        // A colour JPEG.
        let mut rgb = Vec::new();
        jpeg_encoder::Encoder::new(&mut rgb, 90)
            .encode(&[128u8; 16 * 16 * 3], 16, 16, jpeg_encoder::ColorType::Rgb)
            .expect("encode");
        assert_eq!(Layout::parse(&rgb), None);
    }
}
