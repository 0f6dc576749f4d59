//! Binary segmentation masks stored as row-major runs, so a 1024² SIIM mask costs a few hundred bytes
//! instead of a megabyte.

/// Why a mask could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    /// A run-length list has an odd number of values.
    #[error("run-length list has an odd number of values ({0})")]
    OddCount(usize),
    /// A run-length token is not a non-negative integer.
    #[error("run-length value '{0}' is not a non-negative integer")]
    NotANumber(String),
    /// A run reaches past the last pixel.
    #[error("run starting at pixel {start} with length {len} ends past the {width}x{height} image")]
    PastEnd {
        /// First pixel of the run (row-major, or column-major for SIIM input).
        start: u64,
        /// Run length.
        len: u64,
        /// Image width.
        width: u32,
        /// Image height.
        height: u32,
    },
    /// Two masks have different sizes.
    #[error("size mismatch: {0}x{1} vs {2}x{3}")]
    SizeMismatch(u32, u32, u32, u32),
    /// A bitmap's length is not `width · height`.
    #[error("bitmap has {got} pixels, expected {expected}")]
    BitmapLength {
        /// `width · height`.
        expected: u64,
        /// Length of the bitmap.
        got: usize,
    },
}

/// A binary mask of `width × height` pixels as sorted, disjoint, non-adjacent row-major runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mask {
    width: u32,
    height: u32,
    runs: Vec<(u64, u64)>,
}

impl Mask {
    /// An empty mask of the given size.
    pub fn empty(width: u32, height: u32) -> Mask {
        Mask { width, height, runs: Vec::new() }
    }

    /// Number of pixels, `width · height`.
    fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// Builds a mask from row-major `(start, len)` runs in any order; overlaps are merged, empty runs dropped.
    pub fn from_runs(width: u32, height: u32, runs: impl IntoIterator<Item = (u64, u64)>) -> Result<Mask, MaskError> {
        let n = u64::from(width) * u64::from(height);
        let mut v = Vec::new();
        for (start, len) in runs {
            if start.checked_add(len).is_none_or(|end| end > n) {
                return Err(MaskError::PastEnd { start, len, width, height });
            }
            if len > 0 {
                v.push((start, len));
            }
        }
        Ok(Mask { width, height, runs: normalise(v) })
    }

    /// Builds a mask from a flattened row-major list of absolute `start, len, start, len, ...` (phantom labels).
    pub fn from_rle(width: u32, height: u32, rle: &[u64]) -> Result<Mask, MaskError> {
        if !rle.len().is_multiple_of(2) {
            return Err(MaskError::OddCount(rle.len()));
        }
        Mask::from_runs(width, height, rle.chunks_exact(2).map(|r| (r[0], r[1])))
    }

    /// Decodes the SIIM-ACR / Kaggle run-length text: space-separated `start length` pairs, each start relative
    /// to the end of the previous run (the first absolute), pixels counted in column-major order. `-1` or an
    /// empty string is an empty mask. The result is row-major like every [`Mask`].
    pub fn from_siim_rle(text: &str, width: u32, height: u32) -> Result<Mask, MaskError> {
        let text = text.trim();
        if text.is_empty() || text == "-1" {
            return Ok(Mask::empty(width, height));
        }
        let values = text
            .split_whitespace()
            .map(|t| t.parse::<u64>().map_err(|_| MaskError::NotANumber(t.to_string())))
            .collect::<Result<Vec<u64>, MaskError>>()?;
        if !values.len().is_multiple_of(2) {
            return Err(MaskError::OddCount(values.len()));
        }
        let (w, h) = (u64::from(width), u64::from(height));
        let n = w * h;
        let mut bits = vec![false; n as usize];
        let mut pos = 0u64;
        for pair in values.chunks_exact(2) {
            let (rel, len) = (pair[0], pair[1]);
            let start = pos.checked_add(rel);
            let end = start.and_then(|s| s.checked_add(len));
            let (Some(start), Some(end)) = (start, end) else {
                return Err(MaskError::PastEnd { start: u64::MAX, len, width, height });
            };
            if end > n {
                return Err(MaskError::PastEnd { start, len, width, height });
            }
            for p in start..end {
                // Column-major pixel p lies at x = p / height, y = p % height.
                let (x, y) = (p / h, p % h);
                bits[(y * w + x) as usize] = true;
            }
            pos = end;
        }
        Mask::from_bitmap(width, height, &bits)
    }

    /// Encodes a row-major bitmap of exactly `width · height` pixels.
    pub fn from_bitmap(width: u32, height: u32, bits: &[bool]) -> Result<Mask, MaskError> {
        let expected = u64::from(width) * u64::from(height);
        if bits.len() as u64 != expected {
            return Err(MaskError::BitmapLength { expected, got: bits.len() });
        }
        let mut runs = Vec::new();
        let mut start: Option<usize> = None;
        for (i, &b) in bits.iter().enumerate() {
            match (b, start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    runs.push((s as u64, (i - s) as u64));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            runs.push((s as u64, (bits.len() - s) as u64));
        }
        Ok(Mask { width, height, runs })
    }

    /// Rasterises boxes `[x0, y0, x1, y1]` as filled rectangles over pixels `int(x0)..int(x1)` ×
    /// `int(y0)..int(y1)` (numpy slicing of truncated coordinates), clipped to the image.
    pub fn from_boxes(width: u32, height: u32, boxes: &[[f32; 4]]) -> Mask {
        let clip =
            |v: f32, hi: u32| -> u64 { if v.is_nan() || v <= 0.0 { 0 } else { (v.trunc() as u64).min(u64::from(hi)) } };
        let mut runs = Vec::new();
        for b in boxes {
            let (x0, x1) = (clip(b[0], width), clip(b[2], width));
            let (y0, y1) = (clip(b[1], height), clip(b[3], height));
            if x1 > x0 {
                runs.extend((y0..y1).map(|y| (y * u64::from(width) + x0, x1 - x0)));
            }
        }
        Mask { width, height, runs: normalise(runs) }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The row-major `(start, len)` runs: sorted, disjoint, non-adjacent, non-empty.
    pub fn runs(&self) -> &[(u64, u64)] {
        &self.runs
    }

    /// Decodes to a row-major bitmap of `width · height` pixels.
    pub fn to_bitmap(&self) -> Vec<bool> {
        let mut bits = vec![false; self.pixels() as usize];
        for &(s, l) in &self.runs {
            bits[s as usize..(s + l) as usize].fill(true);
        }
        bits
    }

    /// Number of set pixels.
    pub fn area(&self) -> u64 {
        self.runs.iter().map(|r| r.1).sum()
    }

    /// True when no pixel is set.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Whether pixel `(x, y)` is set; false outside the image.
    pub fn get(&self, x: u32, y: u32) -> bool {
        if x >= self.width || y >= self.height {
            return false;
        }
        let p = u64::from(y) * u64::from(self.width) + u64::from(x);
        let i = self.runs.partition_point(|&(s, _)| s <= p);
        i > 0 && p < self.runs[i - 1].0 + self.runs[i - 1].1
    }

    /// Half-open bounding box `[x0, y0, x1, y1]` of the set pixels, None when empty.
    pub fn bbox(&self) -> Option<[u32; 4]> {
        let w = u64::from(self.width);
        let mut b: Option<[u64; 4]> = None;
        for &(s, l) in &self.runs {
            let (first, last) = (s, s + l - 1);
            let (y0, y1) = (first / w, last / w);
            // A run that wraps a row covers the full width in between.
            let (x0, x1) = if y0 == y1 { (first % w, last % w) } else { (0, w - 1) };
            b = Some(match b {
                None => [x0, y0, x1 + 1, y1 + 1],
                Some(c) => [c[0].min(x0), c[1].min(y0), c[2].max(x1 + 1), c[3].max(y1 + 1)],
            });
        }
        b.map(|c| c.map(|v| v as u32))
    }

    /// Pixels set in either mask; the masks must have the same size.
    pub fn union(&self, other: &Mask) -> Result<Mask, MaskError> {
        if (self.width, self.height) != (other.width, other.height) {
            return Err(MaskError::SizeMismatch(self.width, self.height, other.width, other.height));
        }
        let runs = normalise(self.runs.iter().chain(&other.runs).copied().collect());
        Ok(Mask { width: self.width, height: self.height, runs })
    }

    /// Nearest-neighbour resize to `width × height`: destination pixel `(x, y)` takes source pixel
    /// `(⌊x·w/W⌋, ⌊y·h/H⌋)`, as OpenCV `INTER_NEAREST` and PyTorch `nearest` do.
    pub fn resize_nearest(&self, width: u32, height: u32) -> Mask {
        let (sw, sh) = (u64::from(self.width), u64::from(self.height));
        let (dw, dh) = (u64::from(width), u64::from(height));
        if sw == 0 || sh == 0 || dw == 0 || dh == 0 {
            return Mask::empty(width, height);
        }
        // Split the runs into per-source-row x intervals.
        let mut rows: Vec<Vec<(u64, u64)>> = vec![Vec::new(); sh as usize];
        for &(s, l) in &self.runs {
            let mut p = s;
            let end = s + l;
            while p < end {
                let (y, x) = (p / sw, p % sw);
                let stop = (end - y * sw).min(sw);
                rows[y as usize].push((x, stop));
                p = y * sw + stop;
            }
        }
        // Source interval [a, b) covers destination columns [⌈a·W/w⌉, ⌈b·W/w⌉).
        let ceil_div = |a: u64, b: u64| a.div_ceil(b);
        let mut runs = Vec::new();
        for dy in 0..dh {
            let sy = dy * sh / dh;
            for &(a, b) in &rows[sy as usize] {
                let (x0, x1) = (ceil_div(a * dw, sw), ceil_div(b * dw, sw).min(dw));
                if x1 > x0 {
                    runs.push((dy * dw + x0, x1 - x0));
                }
            }
        }
        Mask { width, height, runs: normalise(runs) }
    }
}

/// Sorts runs and merges overlapping or touching ones.
fn normalise(mut runs: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    runs.retain(|r| r.1 > 0);
    runs.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
    for (s, l) in runs {
        match out.last_mut() {
            Some(last) if s <= last.0 + last.1 => {
                let end = (last.0 + last.1).max(s + l);
                last.1 = end - last.0;
            }
            _ => out.push((s, l)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitmap(w: u32, h: u32, set: &[(u32, u32)]) -> Vec<bool> {
        let mut bits = vec![false; (w * h) as usize];
        for &(x, y) in set {
            bits[(y * w + x) as usize] = true;
        }
        bits
    }

    #[test]
    fn bitmap_round_trip_area_bbox_get() {
        let bits = bitmap(5, 4, &[(1, 1), (2, 1), (3, 2), (4, 3), (0, 3)]);
        let m = Mask::from_bitmap(5, 4, &bits).unwrap();
        assert_eq!(m.to_bitmap(), bits);
        assert_eq!(m.area(), 5);
        assert_eq!(m.bbox(), Some([0, 1, 5, 4]));
        assert!(m.get(3, 2) && !m.get(2, 2) && !m.get(9, 0));
        // (4,3) and (0,3) are separate runs: 19 and 15.
        assert_eq!(m.runs(), &[(6, 2), (13, 1), (15, 1), (19, 1)]);
        assert_eq!(Mask::empty(5, 4).bbox(), None);
        assert!(Mask::from_bitmap(5, 4, &bits[1..]).is_err());
    }

    #[test]
    fn bbox_of_a_row_wrapping_run_covers_full_width() {
        let m = Mask::from_rle(4, 4, &[3, 2]).unwrap(); // (3,0) and (0,1)
        assert_eq!(m.bbox(), Some([0, 0, 4, 2]));
    }

    #[test]
    fn rle_validation_and_merging() {
        assert_eq!(Mask::from_rle(4, 4, &[1, 2, 3]), Err(MaskError::OddCount(3)));
        assert!(matches!(Mask::from_rle(4, 4, &[15, 2]), Err(MaskError::PastEnd { .. })));
        assert!(Mask::from_rle(4, 4, &[15, 1]).is_ok());
        let m = Mask::from_rle(4, 4, &[6, 2, 0, 3, 2, 2, 4, 2, 9, 0]).unwrap();
        assert_eq!(m.runs(), &[(0, 8)]);
    }

    #[test]
    fn siim_rle_is_relative_and_column_major() {
        // A 4x3 image (width 4, height 3). Set pixels (x, y): (0,1), (0,2), (1,0), (2,2), (3,2).
        // Column-major index p = x·3 + y: 1, 2, 3, 8, 11.
        // Runs (absolute): [1,4) and [8,9) and [11,12) → relative: 1 3, 4 1, 2 1.
        let m = Mask::from_siim_rle("1 3 4 1 2 1", 4, 3).unwrap();
        let want = bitmap(4, 3, &[(0, 1), (0, 2), (1, 0), (2, 2), (3, 2)]);
        assert_eq!(m.to_bitmap(), want);
        assert_eq!(Mask::from_siim_rle(" -1 ", 4, 3).unwrap(), Mask::empty(4, 3));
        assert_eq!(Mask::from_siim_rle("1 3 4", 4, 3), Err(MaskError::OddCount(3)));
        assert!(matches!(Mask::from_siim_rle("1 3 8 1", 4, 3), Err(MaskError::PastEnd { start: 12, .. })));
        assert_eq!(Mask::from_siim_rle("1 x", 4, 3), Err(MaskError::NotANumber("x".into())));
    }

    #[test]
    fn union_and_boxes() {
        let a = Mask::from_boxes(6, 4, &[[1.0, 1.0, 3.0, 3.0]]);
        assert_eq!(a.area(), 4);
        assert_eq!(a.bbox(), Some([1, 1, 3, 3]));
        let b = Mask::from_boxes(6, 4, &[[2.9, 0.0, 10.0, 1.5]]); // x 2..6, y 0..1
        let u = a.union(&b).unwrap();
        assert_eq!(u.area(), 8);
        assert_eq!(u.bbox(), Some([1, 0, 6, 3]));
        assert!(a.union(&Mask::empty(3, 3)).is_err());
    }

    #[test]
    fn resize_matches_brute_force_nearest() {
        let bits = bitmap(7, 5, &[(0, 0), (1, 0), (6, 0), (0, 1), (3, 2), (4, 2), (5, 2), (6, 4), (2, 3)]);
        let m = Mask::from_bitmap(7, 5, &bits).unwrap();
        for (dw, dh) in [(7u32, 5u32), (14, 10), (3, 2), (10, 3), (1, 1), (16, 16)] {
            let mut want = vec![false; (dw * dh) as usize];
            for y in 0..dh {
                for x in 0..dw {
                    let (sx, sy) = (x * 7 / dw, y * 5 / dh);
                    want[(y * dw + x) as usize] = bits[(sy * 7 + sx) as usize];
                }
            }
            assert_eq!(m.resize_nearest(dw, dh).to_bitmap(), want, "{dw}x{dh}");
        }
        assert!(m.resize_nearest(0, 4).is_empty());
    }
}
