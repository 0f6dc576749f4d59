//! RSNA Pneumonia Detection (stage 2) `stage_2_train_labels.csv`: one row per box, grouped per image.

use super::table::Table;
use super::{Item, LabelSet, Task};
use crate::error::Result;
use std::collections::HashMap;
use std::io::Read;

/// Edge length of every RSNA Pneumonia image (the DICOMs are 1024 × 1024), used as [`Item::size`].
pub const RSNA_IMAGE_SIZE: u32 = 1024;

/// Parses `stage_2_train_labels.csv` (`patientId,x,y,width,height,Target`) from `reader` (`file` names it in
/// errors). One [`Item`] per patientId in order of first appearance, one class `Pneumonia`, boxes
/// `[x, y, x + width, y + height]`, size 1024 × 1024. A Target 1 row without a complete box, a Target 0 row
/// with any box value, a non-numeric or non-positive box or one leaving the image, a Target other than 0/1, an image with both Target 0
/// and Target 1 rows, or a repeated Target 0 row is an error naming the line.
pub fn rsna<R: Read>(reader: R, file: &str) -> Result<LabelSet> {
    let mut table = Table::new(reader, file)?;
    let id = table.column("patientId")?;
    let cols = [table.column("x")?, table.column("y")?, table.column("width")?, table.column("height")?];
    let target = table.column("Target")?;
    let mut items: Vec<Item> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    while let Some(row) = table.next_row()? {
        let key = row.get(&id)?;
        if key.is_empty() {
            return Err(row.error("empty 'patientId'"));
        }
        let values = cols.iter().map(|c| row.get(c)).collect::<Result<Vec<&str>>>()?;
        let positive = match row.get(&target)? {
            "1" => true,
            "0" => false,
            other => return Err(row.error(format!("Target is '{other}' (expected 0 or 1)"))),
        };
        let bbox = if positive {
            let mut v = [0.0f32; 4];
            for ((slot, text), col) in v.iter_mut().zip(&values).zip(["x", "y", "width", "height"]) {
                *slot = match text.parse::<f32>() {
                    Ok(x) if x.is_finite() => x,
                    _ if text.is_empty() => return Err(row.error(format!("Target 1 with empty '{col}'"))),
                    _ => return Err(row.error(format!("'{col}' is '{text}', not a number"))),
                };
            }
            if v[2] <= 0.0 || v[3] <= 0.0 {
                return Err(row.error(format!("box width/height must be positive, got {} x {}", v[2], v[3])));
            }
            let side = RSNA_IMAGE_SIZE as f32;
            if v[0] < 0.0 || v[1] < 0.0 || v[0] + v[2] > side || v[1] + v[3] > side {
                return Err(row.error(format!(
                    "box ({}, {}) + {} x {} leaves the {side} x {side} image",
                    v[0], v[1], v[2], v[3]
                )));
            }
            Some([v[0], v[1], v[0] + v[2], v[1] + v[3]])
        } else {
            if let Some(v) = values.iter().find(|v| !v.is_empty()) {
                return Err(row.error(format!("Target 0 with box value '{v}'")));
            }
            None
        };
        let t = if positive { 1.0 } else { 0.0 };
        match index.get(key) {
            None => {
                index.insert(key.to_string(), items.len());
                items.push(Item {
                    key: key.to_string(),
                    patient: Some(key.to_string()),
                    targets: vec![t],
                    boxes: bbox.into_iter().collect(),
                    mask: None,
                    size: Some((RSNA_IMAGE_SIZE, RSNA_IMAGE_SIZE)),
                });
            }
            Some(&i) => {
                let item = &mut items[i];
                if item.targets[0] != t {
                    return Err(row.error(format!("'{key}' has both Target 0 and Target 1 rows")));
                }
                match bbox {
                    // A repeated box would count as a second finding that no detector can match.
                    Some(b) if item.boxes.contains(&b) => {
                        return Err(row.error(format!("'{key}' repeats the box of an earlier row")));
                    }
                    Some(b) => item.boxes.push(b),
                    None => return Err(row.error(format!("'{key}' has a repeated Target 0 row"))),
                }
            }
        }
    }
    Ok(LabelSet { name: "rsna".into(), task: Task::MultiLabel, classes: vec!["Pneumonia".into()], items })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EvalError;

    const HEADER: &str = "patientId,x,y,width,height,Target\n";

    #[test]
    fn groups_boxes_per_image_in_first_appearance_order() {
        let text = format!(
            "{HEADER}0004cfab-14fd-4e49-80ba-63a80b6bddd6,,,,,0\n\
             00436515-870c-4b36-a041-de91049b9ab4,264.0,152.0,213.0,379.0,1\n\
             00322d4d-1c29-4943-afc9-b6754be640eb,,,,,0\n\
             00436515-870c-4b36-a041-de91049b9ab4,562.0,152.0,256.0,453.0,1\n"
        );
        let set = rsna(text.as_bytes(), "stage_2_train_labels.csv").unwrap();
        assert_eq!(set.classes, vec!["Pneumonia"]);
        let keys: Vec<&str> = set.items.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "0004cfab-14fd-4e49-80ba-63a80b6bddd6",
                "00436515-870c-4b36-a041-de91049b9ab4",
                "00322d4d-1c29-4943-afc9-b6754be640eb"
            ]
        );
        let pos = &set.items[1];
        assert_eq!(pos.targets, vec![1.0]);
        assert_eq!(pos.boxes, vec![[264.0, 152.0, 477.0, 531.0], [562.0, 152.0, 818.0, 605.0]]);
        assert_eq!(pos.size, Some((1024, 1024)));
        assert_eq!(set.items[0].targets, vec![0.0]);
        assert!(set.items[0].boxes.is_empty());
    }

    #[test]
    fn inconsistent_rows_name_the_line() {
        let cases = [
            ("a,,,,,1\n", 2),
            ("a,1,2,3,4,0\n", 2),
            ("a,1,2,three,4,1\n", 2),
            ("a,1,2,3,4,1\na,,,,,0\n", 3),
            ("a,,,,,0\na,,,,,0\n", 3),
            ("a,1,2,3,4,1\nb,,,,,0\na,1,2,3,4,1\n", 4),
            ("a,1,2,0,4,1\n", 2),
            ("a,1,2,3,4,yes\n", 2),
            ("a,5000,5000,100,100,1\n", 2),
            ("a,-1,2,3,4,1\n", 2),
            ("a,1,2,3e38,4,1\n", 2),
        ];
        for (rows, want) in cases {
            match rsna(format!("{HEADER}{rows}").as_bytes(), "labels.csv") {
                Err(EvalError::Row { line, file, .. }) => {
                    assert_eq!((line, file.as_str()), (want, "labels.csv"), "{rows}")
                }
                other => panic!("{rows}: unexpected {other:?}"),
            }
        }
    }
}
