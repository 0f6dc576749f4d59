//! Ground truth of ecamp's built-in phantoms: the JSON document each sample has in the dataset's labels table.

use super::{Item, LabelSet, Task, Uncertain};
use crate::error::{EvalError, Result};
use crate::mask::Mask;
use serde::Deserialize;
use std::collections::HashSet;

/// The phantom finding entities in label order (as the generator's `FindingKind::ALL`).
pub const PHANTOM_CLASSES: [&str; 7] =
    ["effusion", "pneumothorax", "cardiomegaly", "nodule", "mass", "consolidation", "opacity"];

#[derive(Deserialize)]
struct Doc {
    sample_id: String,
    subject_id: String,
    width: u32,
    height: u32,
    findings: Vec<DocFinding>,
}

#[derive(Deserialize)]
struct DocFinding {
    entity: String,
    presence: String,
    #[serde(default)]
    bbox: Option<[f64; 4]>,
    #[serde(default)]
    mask: Option<DocMask>,
}

#[derive(Deserialize)]
struct DocMask {
    width: u32,
    height: u32,
    rle: Vec<u64>,
}

/// How a report states a finding, ordered so that the strongest statement of an entity wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Presence {
    Absent,
    Uncertain,
    Present,
}

/// Builds a label set from `(sample_id, labels JSON)` rows of a dataset's labels table.
///
/// Classes are [`PHANTOM_CLASSES`], or only `focus` when given; a class is 1.0 when a finding of that entity is `present`,
/// [`Uncertain::target`] when it is `uncertain`, 0.0 when `absent` or not mentioned. Boxes and the mask come
/// from the findings counted positive (present, and uncertain under [`Uncertain::Ones`]) of every entity, or
/// only of `focus` when given; the mask is always present (empty when nothing is positive). key = sample_id,
/// patient = subject_id, size = (width, height). Malformed JSON, an unknown entity or presence, a mask of the
/// wrong size or bad run-lengths, a sample id that differs from the row's, or a repeated sample is an error
/// naming the sample; an unknown `focus` is [`EvalError::Invalid`].
pub fn phantom_labels<I, K, V>(rows: I, policy: Uncertain, focus: Option<&str>) -> Result<LabelSet>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let focus = match focus {
        None => None,
        Some(f) => Some(PHANTOM_CLASSES.iter().position(|c| *c == f).ok_or_else(|| {
            EvalError::Invalid(format!("phantom focus '{f}' is not one of {}", PHANTOM_CLASSES.join(", ")))
        })?),
    };
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    for (id, json) in rows {
        let id = id.as_ref();
        let err = |message: String| EvalError::Sample { sample_id: id.to_string(), message };
        let doc: Doc = serde_json::from_str(json.as_ref()).map_err(|e| err(format!("malformed JSON: {e}")))?;
        if doc.sample_id != id {
            return Err(err(format!("document is for sample '{}'", doc.sample_id)));
        }
        if !seen.insert(id.to_string()) {
            return Err(err("sample listed twice".into()));
        }
        let mut state: [Option<Presence>; 7] = [None; 7];
        let mut boxes = Vec::new();
        let mut mask = Mask::empty(doc.width, doc.height);
        for f in &doc.findings {
            let class = PHANTOM_CLASSES
                .iter()
                .position(|c| *c == f.entity)
                .ok_or_else(|| err(format!("unknown entity '{}'", f.entity)))?;
            let presence = match f.presence.as_str() {
                "present" => Presence::Present,
                "uncertain" => Presence::Uncertain,
                "absent" => Presence::Absent,
                other => return Err(err(format!("{}: unknown presence '{other}'", f.entity))),
            };
            state[class] = state[class].max(Some(presence));
            let positive =
                presence == Presence::Present || (presence == Presence::Uncertain && policy == Uncertain::Ones);
            if !positive || focus.is_some_and(|c| c != class) {
                continue;
            }
            if let Some(b) = f.bbox {
                boxes.push(b.map(|v| v as f32));
            }
            if let Some(m) = &f.mask {
                if (m.width, m.height) != (doc.width, doc.height) {
                    return Err(err(format!(
                        "{} mask is {}x{} on a {}x{} image",
                        f.entity, m.width, m.height, doc.width, doc.height
                    )));
                }
                let m =
                    Mask::from_rle(m.width, m.height, &m.rle).map_err(|e| err(format!("{} mask: {e}", f.entity)))?;
                mask = mask.union(&m).map_err(|e| err(format!("{} mask: {e}", f.entity)))?;
            }
        }
        let target = |s: &Option<Presence>| match s {
            Some(Presence::Present) => 1.0,
            Some(Presence::Uncertain) => policy.target(),
            Some(Presence::Absent) | None => 0.0,
        };
        let targets = match focus {
            Some(c) => vec![target(&state[c])],
            None => state.iter().map(target).collect(),
        };
        items.push(Item {
            key: doc.sample_id,
            patient: Some(doc.subject_id),
            targets,
            boxes,
            mask: Some(mask),
            size: Some((doc.width, doc.height)),
        });
    }
    let (name, classes) = match focus {
        Some(c) => (format!("phantom:{}", PHANTOM_CLASSES[c]), vec![PHANTOM_CLASSES[c].to_string()]),
        None => ("phantom".to_string(), PHANTOM_CLASSES.iter().map(|c| c.to_string()).collect()),
    };
    Ok(LabelSet { name, task: Task::MultiLabel, classes, items })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(id: &str, findings: serde_json::Value) -> (String, String) {
        let v = json!({
            "sample_id": id, "subject_id": "phantom-0-p00000000", "study_id": "s", "view": "PA",
            "width": 8, "height": 4, "normal": false, "cardiothoracic_ratio": 0.55, "findings": findings,
        });
        (id.to_string(), v.to_string())
    }

    fn rows() -> Vec<(String, String)> {
        vec![
            doc(
                "phantom-0-00000001",
                json!([
                    {"entity": "effusion", "presence": "present", "side": "left", "size": "small", "location": null,
                     "bbox": [1, 0, 3, 2], "mask": {"width": 8, "height": 4, "rle": [1, 2, 9, 2]}},
                    {"entity": "nodule", "presence": "uncertain", "side": null, "size": "8 mm", "location": "right upper lobe",
                     "bbox": [6, 3, 7, 4], "mask": {"width": 8, "height": 4, "rle": [30, 1]}},
                    {"entity": "mass", "presence": "absent", "side": null, "size": null, "location": null, "bbox": null, "mask": null},
                ]),
            ),
            doc("phantom-0-00000002", json!([])),
        ]
    }

    #[test]
    fn targets_follow_presence_and_policy() {
        let ones = phantom_labels(rows(), Uncertain::Ones, None).unwrap();
        assert_eq!(ones.classes, PHANTOM_CLASSES);
        let a = &ones.items[0];
        assert_eq!(a.targets, vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
        assert_eq!(a.patient.as_deref(), Some("phantom-0-p00000000"));
        assert_eq!(a.size, Some((8, 4)));
        assert_eq!(a.boxes, vec![[1.0, 0.0, 3.0, 2.0], [6.0, 3.0, 7.0, 4.0]]);
        let m = a.mask.as_ref().unwrap();
        assert_eq!(m.area(), 5);
        assert!(m.get(1, 0) && m.get(2, 1) && m.get(6, 3));
        assert!(ones.items[1].mask.as_ref().unwrap().is_empty());
        assert_eq!(ones.items[1].targets, vec![0.0; 7]);

        let zeros = phantom_labels(rows(), Uncertain::Zeros, None).unwrap();
        assert_eq!(zeros.items[0].targets[3], 0.0);
        assert_eq!(zeros.items[0].boxes.len(), 1, "an uncertain finding is not a positive box under zeros");
        let ignore = phantom_labels(rows(), Uncertain::Ignore, None).unwrap();
        assert!(ignore.items[0].targets[3].is_nan());
    }

    #[test]
    fn focus_restricts_boxes_and_masks() {
        let set = phantom_labels(rows(), Uncertain::Ones, Some("nodule")).unwrap();
        assert_eq!(set.name, "phantom:nodule");
        assert_eq!(set.items[0].boxes, vec![[6.0, 3.0, 7.0, 4.0]]);
        assert_eq!(set.items[0].mask.as_ref().unwrap().area(), 1);
        assert_eq!(
            (set.classes.as_slice(), set.items[0].targets.as_slice()),
            (["nodule".to_string()].as_slice(), [1.0].as_slice())
        );
        assert!(matches!(phantom_labels(rows(), Uncertain::Ones, Some("fracture")), Err(EvalError::Invalid(_))));
    }

    #[test]
    fn malformed_documents_name_the_sample() {
        let bad = |rows: Vec<(String, String)>, want: &str| match phantom_labels(rows, Uncertain::Ones, None) {
            Err(EvalError::Sample { sample_id, message }) => {
                assert_eq!(sample_id, "s1");
                assert!(message.contains(want), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        };
        bad(vec![("s1".into(), "{not json".into())], "malformed JSON");
        bad(vec![doc("s2", json!([])).clone()].into_iter().map(|(_, j)| ("s1".to_string(), j)).collect(), "s2");
        bad(vec![doc("s1", json!([{"entity": "fracture", "presence": "present"}]))], "fracture");
        bad(vec![doc("s1", json!([{"entity": "mass", "presence": "likely"}]))], "likely");
        bad(
            vec![doc(
                "s1",
                json!([{"entity": "mass", "presence": "present", "mask": {"width": 8, "height": 4, "rle": [31, 2]}}]),
            )],
            "past",
        );
        bad(
            vec![doc(
                "s1",
                json!([{"entity": "mass", "presence": "present", "mask": {"width": 4, "height": 4, "rle": []}}]),
            )],
            "4x4",
        );
        bad(vec![doc("s1", json!([])), doc("s1", json!([]))], "twice");
    }
}
