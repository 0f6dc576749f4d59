//! Binary masks stored as row-major run-lengths, the compact form used in labels.

use serde::{Deserialize, Serialize};

/// Binary mask as row-major `(start, len)` run pairs over `width * height` pixels, starts 0-based and increasing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mask {
    /// Mask width in pixels.
    pub width: u32,
    /// Mask height in pixels.
    pub height: u32,
    /// Flattened `(start, len)` pairs.
    pub rle: Vec<u32>,
}

impl Mask {
    /// Encodes a row-major bitmap; pixels beyond `bits` count as unset.
    pub fn from_bitmap(width: u32, height: u32, bits: &[bool]) -> Mask {
        let n = (width as usize * height as usize).min(bits.len());
        let mut rle = Vec::new();
        let mut start: Option<usize> = None;
        for (i, &b) in bits[..n].iter().enumerate() {
            match (b, start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    rle.extend([s as u32, (i - s) as u32]);
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            rle.extend([s as u32, (n - s) as u32]);
        }
        Mask { width, height, rle }
    }

    /// Decodes to a row-major bitmap; runs reaching past the image are clipped.
    pub fn to_bitmap(&self) -> Vec<bool> {
        let n = self.width as usize * self.height as usize;
        let mut bits = vec![false; n];
        for run in self.rle.chunks_exact(2) {
            let s = (run[0] as usize).min(n);
            let e = (run[0] as usize).saturating_add(run[1] as usize).min(n);
            bits[s..e].fill(true);
        }
        bits
    }

    /// Number of set pixels.
    pub fn area(&self) -> u64 {
        self.rle.chunks_exact(2).map(|r| u64::from(r[1])).sum()
    }

    /// Half-open bounding box `[x0, y0, x1, y1]` of the set pixels, None when empty.
    pub fn bbox(&self) -> Option<[u32; 4]> {
        if self.width == 0 {
            return None;
        }
        let w = self.width;
        let mut b: Option<[u32; 4]> = None;
        for run in self.rle.chunks_exact(2).filter(|r| r[1] > 0) {
            let (first, last) = (run[0], run[0] + (run[1] - 1));
            let (y0, y1) = (first / w, last / w);
            // A run that wraps a row covers the full width in between.
            let (x0, x1) = if y0 == y1 { (first % w, last % w) } else { (0, w - 1) };
            let nb = match b {
                None => [x0, y0, x1 + 1, y1 + 1],
                Some(o) => [o[0].min(x0), o[1].min(y0), o[2].max(x1 + 1), o[3].max(y1 + 1)],
            };
            b = Some(nb);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_area() {
        let (w, h) = (7u32, 5u32);
        let bits: Vec<bool> = (0..w * h).map(|i| (i * 7 + i / 3) % 5 < 2 || i == w * h - 1).collect();
        let m = Mask::from_bitmap(w, h, &bits);
        assert_eq!(m.to_bitmap(), bits);
        assert_eq!(m.area(), bits.iter().filter(|&&b| b).count() as u64);
        assert!(m.rle.chunks_exact(2).all(|r| r[1] > 0));
    }

    #[test]
    fn bbox_is_tight() {
        let (w, h) = (10u32, 8u32);
        let mut bits = vec![false; (w * h) as usize];
        for (x, y) in [(3, 2), (6, 2), (4, 5)] {
            bits[(y * w + x) as usize] = true;
        }
        let m = Mask::from_bitmap(w, h, &bits);
        assert_eq!(m.bbox(), Some([3, 2, 7, 6]));
        assert_eq!(Mask::from_bitmap(w, h, &[false; 80]).bbox(), None);
    }
}
