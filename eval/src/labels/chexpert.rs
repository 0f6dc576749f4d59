//! CheXpert `train.csv` / `valid.csv`: 14 observations labelled 1.0, 0.0, -1.0 (uncertain) or blank.

use super::table::{Col, Table};
use super::{Item, LabelSet, Task, Uncertain};
use crate::error::Result;
use std::collections::HashSet;
use std::io::Read;

/// The 5 competition classes used by ECAMP (spec §7.1), in evaluation order.
pub const CHEXPERT_COMPETITION: [&str; 5] =
    ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"];

/// All 14 CheXpert observations in the order of the file's columns.
pub const CHEXPERT_ALL: [&str; 14] = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
];

/// Which CheXpert observations become classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChexpertClasses {
    /// [`CHEXPERT_COMPETITION`], the 5 classes of the ECAMP protocol.
    #[default]
    Competition,
    /// [`CHEXPERT_ALL`], all 14 observations.
    All,
}

impl ChexpertClasses {
    /// The class names in target order.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            ChexpertClasses::Competition => &CHEXPERT_COMPETITION,
            ChexpertClasses::All => &CHEXPERT_ALL,
        }
    }
}

/// How a CheXpert file becomes a label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChexpertOptions {
    /// What `-1.0` (uncertain) becomes. Blank (not mentioned) is always 0.0, under every policy.
    pub uncertain: Uncertain,
    /// Which observations become classes.
    pub classes: ChexpertClasses,
    /// Keep only rows whose `Frontal/Lateral` is `Frontal`.
    pub frontal_only: bool,
}

/// Parses a CheXpert label CSV from `reader` (`file` names it in errors). key = `Path`, patient = the
/// `patientNNNNN` component of the path (an error when there is none). Values must be `1.0`, `0.0`, `-1.0`
/// (or `1`, `0`, `-1`) or blank: 1 → 1.0, 0 → 0.0, blank → 0.0 (common practice: not mentioned counts as
/// negative), -1 → [`Uncertain::target`].
pub fn chexpert<R: Read>(reader: R, file: &str, options: &ChexpertOptions) -> Result<LabelSet> {
    let mut table = Table::new(reader, file)?;
    let path = table.column("Path")?;
    let view = if options.frontal_only { Some(table.column("Frontal/Lateral")?) } else { None };
    let names = options.classes.names();
    let columns = names.iter().map(|n| table.column(n)).collect::<Result<Vec<Col>>>()?;
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    while let Some(row) = table.next_row()? {
        let key = row.get(&path)?;
        if key.is_empty() {
            return Err(row.error("empty 'Path'"));
        }
        if let Some(view) = &view
            && row.get(view)? != "Frontal"
        {
            continue;
        }
        if !seen.insert(key.to_string()) {
            return Err(row.error(format!("path '{key}' listed twice")));
        }
        let patient = key
            .split(['/', '\\'])
            .find(|c| {
                c.len() > "patient".len() && c.starts_with("patient") && c[7..].bytes().all(|b| b.is_ascii_digit())
            })
            .ok_or_else(|| row.error(format!("no 'patientNNNNN' component in path '{key}'")))?;
        let mut targets = Vec::with_capacity(columns.len());
        for (col, name) in columns.iter().zip(names) {
            let v = row.get(col)?;
            let t = match v {
                "" => 0.0,
                _ => match v.parse::<f32>() {
                    Ok(1.0) => 1.0,
                    Ok(0.0) => 0.0,
                    Ok(-1.0) => options.uncertain.target(),
                    _ => return Err(row.error(format!("'{name}' is '{v}' (expected 1.0, 0.0, -1.0 or blank)"))),
                },
            };
            targets.push(t);
        }
        items.push(Item {
            key: key.to_string(),
            patient: Some(patient.to_string()),
            targets,
            boxes: Vec::new(),
            mask: None,
            size: None,
        });
    }
    Ok(LabelSet {
        name: "chexpert".into(),
        task: Task::MultiLabel,
        classes: names.iter().map(|c| c.to_string()).collect(),
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EvalError;

    const HEADER: &str = "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,Support Devices\n";
    // Columns after AP/PA: NF, EC, Cardiomegaly, LO, LL, Edema, Consolidation, Pn, Atelectasis, Ptx, PE, PO, Fr, SD.
    const ROWS: &str = "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0\n\
        CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg,Female,87,Frontal,AP,,,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,\n\
        CheXpert-v1.0-small/train/patient00002/study1/view2_lateral.jpg,Female,83,Lateral,,,,,1.0,,,0.0,,,,,,1.0,\n";

    fn parse(options: ChexpertOptions) -> Result<LabelSet> {
        chexpert(format!("{HEADER}{ROWS}").as_bytes(), "train.csv", &options)
    }

    #[test]
    fn competition_classes_with_each_uncertain_policy() {
        let ones = parse(ChexpertOptions::default()).unwrap();
        assert_eq!(ones.classes, CHEXPERT_COMPETITION);
        assert_eq!(ones.len(), 3);
        assert_eq!(ones.items[0].targets, vec![0.0; 5]);
        assert_eq!(ones.items[1].targets, vec![1.0, 1.0, 1.0, 1.0, 1.0]);
        assert_eq!(ones.items[1].patient.as_deref(), Some("patient00002"));
        assert_eq!(ones.items[2].targets, vec![0.0; 5]);
        let zeros = parse(ChexpertOptions { uncertain: Uncertain::Zeros, ..Default::default() }).unwrap();
        assert_eq!(zeros.items[1].targets, vec![0.0; 5]);
        let ignore = parse(ChexpertOptions { uncertain: Uncertain::Ignore, ..Default::default() }).unwrap();
        assert!(ignore.items[1].targets.iter().all(|t| t.is_nan()));
        assert_eq!(ignore.items[0].targets, vec![0.0; 5], "blank stays 0 under ignore");
    }

    #[test]
    fn all_classes_and_frontal_filter() {
        let options = ChexpertOptions { classes: ChexpertClasses::All, frontal_only: true, ..Default::default() };
        let set = parse(options).unwrap();
        assert_eq!(set.classes.len(), 14);
        assert_eq!(set.len(), 2);
        assert_eq!(set.items[0].targets[0], 1.0); // No Finding
        assert_eq!(set.items[0].targets[13], 1.0); // Support Devices
        assert_eq!(set.items[1].targets[3], 1.0); // Lung Opacity
        assert_eq!(set.items[1].targets[12], 1.0); // Fracture
    }

    #[test]
    fn bad_values_and_paths_name_the_line() {
        let bad = format!(
            "{HEADER}{ROWS}CheXpert/train/patient00003/study1/view1_frontal.jpg,F,1,Frontal,AP,,,2.0,,,,,,,,,,,\n"
        );
        match parse_text(&bad) {
            Err(EvalError::Row { line: 5, message, .. }) => assert!(message.contains("Cardiomegaly"), "{message}"),
            other => panic!("unexpected {other:?}"),
        }
        let no_patient = format!("{HEADER}CheXpert/train/study1/view1_frontal.jpg,F,1,Frontal,AP,,,,,,,,,,,,,,\n");
        assert!(matches!(parse_text(&no_patient), Err(EvalError::Row { line: 2, .. })));
        assert!(matches!(parse_text("Path,Edema\n"), Err(EvalError::Header { .. })));
    }

    fn parse_text(text: &str) -> Result<LabelSet> {
        chexpert(text.as_bytes(), "valid.csv", &ChexpertOptions::default())
    }
}
