//! SIIM-ACR Pneumothorax Segmentation (stage 1) `train-rle.csv`: Kaggle run-length masks per image.

use super::table::Table;
use super::{Item, LabelSet, Task};
use crate::error::Result;
use crate::mask::Mask;
use std::collections::HashMap;
use std::io::Read;

/// Edge length of every SIIM-ACR image (1024 × 1024), the frame the run-lengths are counted in.
pub const SIIM_IMAGE_SIZE: u32 = 1024;

/// Parses `train-rle.csv` (`ImageId, EncodedPixels`; header names are compared trimmed) from `reader` (`file`
/// names it in errors). `EncodedPixels` is `-1` or Kaggle run-lengths (see [`Mask::from_siim_rle`]); rows of one
/// ImageId are unioned. One [`Item`] per ImageId in order of first appearance, one class `Pneumothorax` (1 iff
/// the mask is non-empty), an always-present row-major mask (empty for negatives), size 1024 × 1024.
pub fn siim<R: Read>(reader: R, file: &str) -> Result<LabelSet> {
    let mut table = Table::new(reader, file)?;
    let id = table.column("ImageId")?;
    let pixels = table.column("EncodedPixels")?;
    let mut items: Vec<Item> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    while let Some(row) = table.next_row()? {
        let key = row.get(&id)?;
        if key.is_empty() {
            return Err(row.error("empty 'ImageId'"));
        }
        let mask = Mask::from_siim_rle(row.get(&pixels)?, SIIM_IMAGE_SIZE, SIIM_IMAGE_SIZE)
            .map_err(|e| row.error(format!("EncodedPixels of '{key}': {e}")))?;
        match index.get(key) {
            None => {
                index.insert(key.to_string(), items.len());
                items.push(Item {
                    key: key.to_string(),
                    patient: None,
                    targets: vec![0.0],
                    boxes: Vec::new(),
                    mask: Some(mask),
                    size: Some((SIIM_IMAGE_SIZE, SIIM_IMAGE_SIZE)),
                });
            }
            Some(&i) => {
                let item = &mut items[i];
                let merged = match &item.mask {
                    Some(m) => m.union(&mask).map_err(|e| row.error(e.to_string()))?,
                    None => mask,
                };
                item.mask = Some(merged);
            }
        }
    }
    for item in &mut items {
        let positive = item.mask.as_ref().is_some_and(|m| !m.is_empty());
        item.targets = vec![if positive { 1.0 } else { 0.0 }];
    }
    Ok(LabelSet { name: "siim".into(), task: Task::MultiLabel, classes: vec!["Pneumothorax".into()], items })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EvalError;

    /// Kaggle-encodes a row-major 1024² bitmap the way the SIIM `mask2rle` does: column-major, relative starts.
    fn encode(bits: &[bool]) -> String {
        let n = SIIM_IMAGE_SIZE as usize;
        let mut out = Vec::new();
        let (mut last_end, mut run_start) = (0usize, None::<usize>);
        for p in 0..=n * n {
            let on = p < n * n && bits[(p % n) * n + p / n];
            match (on, run_start) {
                (true, None) => run_start = Some(p),
                (false, Some(s)) => {
                    out.push(format!("{} {}", s - last_end, p - s));
                    last_end = p;
                    run_start = None;
                }
                _ => {}
            }
        }
        out.join(" ")
    }

    #[test]
    fn hand_encoded_mask_is_transposed_to_row_major() {
        // Pixels (x=5, y=0..3) form a vertical line: one column-major run starting at 5·1024.
        // A horizontal pair (x=0..2, y=10) is two column-major runs: 10 and 1024 + 10.
        let text = "ImageId, EncodedPixels\n\
                    1.2.3, 5120 3\n\
                    1.2.4, -1\n\
                    1.2.5, 10 1 1023 1\n";
        let set = siim(text.as_bytes(), "train-rle.csv").unwrap();
        assert_eq!(set.classes, vec!["Pneumothorax"]);
        let line = set.items[0].mask.as_ref().unwrap();
        assert_eq!(line.area(), 3);
        assert!(line.get(5, 0) && line.get(5, 1) && line.get(5, 2) && !line.get(0, 5));
        assert_eq!(line.bbox(), Some([5, 0, 6, 3]));
        assert_eq!(set.items[0].targets, vec![1.0]);
        assert_eq!(set.items[1].targets, vec![0.0]);
        assert!(set.items[1].mask.as_ref().unwrap().is_empty());
        let pair = set.items[2].mask.as_ref().unwrap();
        assert_eq!(pair.runs(), &[(10 * 1024, 2)]);
    }

    #[test]
    fn rows_of_one_image_are_unioned_and_match_an_encoder() {
        let n = SIIM_IMAGE_SIZE as usize;
        let mut a = vec![false; n * n];
        let mut b = vec![false; n * n];
        for y in 100..140 {
            for x in 300..320 {
                a[y * n + x] = true;
            }
        }
        for y in 130..150 {
            for x in 310..400 {
                b[y * n + x] = true;
            }
        }
        let text = format!("ImageId,EncodedPixels\nimg,{}\nother,-1\nimg,{}\n", encode(&a), encode(&b));
        let set = siim(text.as_bytes(), "train-rle.csv").unwrap();
        assert_eq!(set.len(), 2);
        let union: Vec<bool> = a.iter().zip(&b).map(|(x, y)| *x || *y).collect();
        let m = set.items[0].mask.as_ref().unwrap();
        assert_eq!(m.to_bitmap(), union);
        assert_eq!(m.bbox(), Some([300, 100, 400, 150]));
    }

    #[test]
    fn bad_run_lengths_name_the_line() {
        for (rle, want) in [("5 3 2", "odd"), ("1048570 10", "past"), ("3 x", "not a non-negative integer")] {
            let text = format!("ImageId, EncodedPixels\nok, -1\nbad, {rle}\n");
            match siim(text.as_bytes(), "train-rle.csv") {
                Err(EvalError::Row { line: 3, message, .. }) => assert!(message.contains(want), "{message}"),
                other => panic!("{rle}: unexpected {other:?}"),
            }
        }
    }
}
