//! NIH ChestX-ray14 `Data_Entry_2017.csv`: 14 multi-label findings per image.

use super::table::{Col, Table};
use super::{Item, LabelSet, Task};
use crate::error::Result;
use std::collections::HashSet;
use std::io::Read;

/// The 14 ChestX-ray14 classes in the standard order.
pub const CHESTXRAY14_CLASSES: [&str; 14] = [
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
];

/// Where the original image size is in the file.
enum SizeColumns {
    /// The real file's unquoted header splits `OriginalImage[Width,Height]` into two columns.
    Split(Col, Col),
    /// A quoted header keeps it as one column holding `W,H`.
    Joined(Col),
    /// Not present.
    None,
}

/// Parses `Data_Entry_2017.csv` from `reader` (`file` names it in errors). `Finding Labels` is `|`-separated
/// or `No Finding`; an unknown name or a repeated `Image Index` is an error. key = `Image Index`,
/// patient = `Patient ID`, size = `OriginalImage[Width,Height]` when present.
pub fn chestxray14<R: Read>(reader: R, file: &str) -> Result<LabelSet> {
    let mut table = Table::new(reader, file)?;
    let image = table.column("Image Index")?;
    let findings = table.column("Finding Labels")?;
    let patient = table.column("Patient ID")?;
    let size =
        match (table.find("OriginalImage[Width"), table.find("Height]"), table.find("OriginalImage[Width,Height]")) {
            (Some(w), Some(h), _) => SizeColumns::Split(w, h),
            (_, _, Some(j)) => SizeColumns::Joined(j),
            _ => SizeColumns::None,
        };
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    while let Some(row) = table.next_row()? {
        let key = row.get(&image)?;
        if key.is_empty() {
            return Err(row.error("empty 'Image Index'"));
        }
        if !seen.insert(key.to_string()) {
            return Err(row.error(format!("image '{key}' listed twice")));
        }
        let labels = row.get(&findings)?;
        let mut targets = vec![0.0f32; CHESTXRAY14_CLASSES.len()];
        if labels != "No Finding" {
            for name in labels.split('|').map(str::trim) {
                match CHESTXRAY14_CLASSES.iter().position(|c| *c == name) {
                    Some(i) => targets[i] = 1.0,
                    None if name == "No Finding" => {
                        return Err(row.error(format!("'No Finding' together with other labels in '{labels}'")));
                    }
                    None => return Err(row.error(format!("unknown finding label '{name}' in '{labels}'"))),
                }
            }
        }
        let patient_id = row.get(&patient)?;
        if patient_id.is_empty() {
            return Err(row.error("empty 'Patient ID'"));
        }
        let dims = |w: &str, h: &str| -> Result<(u32, u32)> {
            match (w.trim().parse::<u32>(), h.trim().parse::<u32>()) {
                (Ok(w), Ok(h)) => Ok((w, h)),
                _ => Err(row.error(format!("original image size '{w},{h}' is not two whole numbers"))),
            }
        };
        let size = match &size {
            SizeColumns::Split(w, h) => Some(dims(row.get(w)?, row.get(h)?)?),
            SizeColumns::Joined(j) => {
                let v = row.get(j)?;
                let (w, h) = v.split_once(',').unwrap_or((v, ""));
                Some(dims(w, h)?)
            }
            SizeColumns::None => None,
        };
        items.push(Item {
            key: key.to_string(),
            patient: Some(patient_id.to_string()),
            targets,
            boxes: Vec::new(),
            mask: None,
            size,
        });
    }
    Ok(LabelSet {
        name: "chestxray14".into(),
        task: Task::MultiLabel,
        classes: CHESTXRAY14_CLASSES.iter().map(|c| c.to_string()).collect(),
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EvalError;

    const HEADER: &str = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n";

    #[test]
    fn parses_the_real_header_with_split_size_columns() {
        let text = format!(
            "{HEADER}00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143,\n\
             00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143,\n\
             00000002_000.png,No Finding,0,2,81,M,PA,2500,2048,0.171,0.171,\n\
             00000003_000.png,Hernia|Pleural_Thickening,0,3,81,F,PA,2582,2991,0.143,0.143,\n"
        );
        let set = chestxray14(text.as_bytes(), "Data_Entry_2017.csv").unwrap();
        assert_eq!(set.classes.len(), 14);
        assert_eq!(set.task, Task::MultiLabel);
        assert_eq!(set.len(), 4);
        let a = &set.items[1];
        assert_eq!(a.key, "00000001_001.png");
        assert_eq!(a.patient.as_deref(), Some("1"));
        assert_eq!(a.size, Some((2894, 2729)));
        let positives: Vec<usize> = (0..14).filter(|&i| a.targets[i] == 1.0).collect();
        assert_eq!(positives, vec![1, 10]);
        assert!(set.items[2].targets.iter().all(|&t| t == 0.0));
        assert_eq!(set.items[3].targets[12], 1.0);
        assert_eq!(set.items[3].targets[13], 1.0);
    }

    #[test]
    fn quoted_joined_size_column_is_read() {
        let text = "Image Index,Finding Labels,Patient ID,\"OriginalImage[Width,Height]\"\na.png,Mass,7,\"100,200\"\n";
        let set = chestxray14(text.as_bytes(), "x.csv").unwrap();
        assert_eq!(set.items[0].size, Some((100, 200)));
        assert_eq!(set.items[0].targets[4], 1.0);
    }

    #[test]
    fn unknown_label_names_file_and_line() {
        let text =
            format!("{HEADER}a.png,Mass,0,1,58,M,PA,10,10,0.1,0.1,\nb.png,Mass|Covid,0,1,58,M,PA,10,10,0.1,0.1,\n");
        let err = chestxray14(text.as_bytes(), "entries.csv").unwrap_err();
        match &err {
            EvalError::Row { file, line, message } => {
                assert_eq!((file.as_str(), *line), ("entries.csv", 3));
                assert!(message.contains("Covid"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().starts_with("entries.csv line 3:"));
    }

    #[test]
    fn bad_rows_are_errors() {
        let bad_size = format!("{HEADER}a.png,Mass,0,1,58,M,PA,wide,10,0.1,0.1,\n");
        assert!(matches!(chestxray14(bad_size.as_bytes(), "f"), Err(EvalError::Row { line: 2, .. })));
        let dup = format!("{HEADER}a.png,Mass,0,1,58,M,PA,1,1,0,0,\na.png,Mass,0,1,58,M,PA,1,1,0,0,\n");
        assert!(matches!(chestxray14(dup.as_bytes(), "f"), Err(EvalError::Row { line: 3, .. })));
        let short = format!("{HEADER}a.png,Mass\n");
        assert!(matches!(chestxray14(short.as_bytes(), "f"), Err(EvalError::Row { line: 2, .. })));
        let mixed = format!("{HEADER}a.png,No Finding|Mass,0,1,58,M,PA,1,1,0,0,\n");
        assert!(matches!(chestxray14(mixed.as_bytes(), "f"), Err(EvalError::Row { line: 2, .. })));
        assert!(matches!(chestxray14("Image Index,Patient ID\n".as_bytes(), "f"), Err(EvalError::Header { .. })));
        assert!(matches!(chestxray14("".as_bytes(), "f"), Err(EvalError::Header { .. })));
    }
}
