//! `phantom:COUNT[:SEED]`: the built-in synthetic studies; rendering happens on the workers.

use super::{ImageInput, Item, Reject, ReportInput};

/// Lists `count` phantom studies of `seed`; the same seed always lists the same studies first.
pub fn list(count: u64, seed: u64, size: u32) -> Vec<Result<Item, Reject>> {
    (0..count)
        .map(|index| {
            let id = sample_id(seed, index);
            Ok(Item {
                source: "phantom",
                key: id.clone(),
                sample_id: id.clone(),
                subject_id: None,
                study_id: None,
                view: Some("PA".into()),
                image: ImageInput::Phantom { seed, index, size },
                image_name: Some(format!("{id}.jpg")),
                report: ReportInput::FromImage,
                labels: None,
            })
        })
        .collect()
}

/// The sample id of phantom study `index` of `seed` (the generator uses the same form).
pub fn sample_id(seed: u64, index: u64) -> String {
    format!("phantom-{seed}-{index:08}")
}
