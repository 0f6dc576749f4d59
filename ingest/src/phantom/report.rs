//! Radiology-style report text for a sampled case.
//!
//! Each statement has several phrasings. Entity words appear only in sentences about that finding, in the singular
//! (the ECAMP entity list matches single tokens, so `effusions` would not count), and every sentence naming a
//! finding carries its polarity: a negation (`no`, `without`) when absent, a hedge (`possible`, `may`,
//! `cannot exclude`, `questionable`, `borderline`) when uncertain, neither when present.

use super::findings::Case;
use super::{Finding, FindingKind, Presence, Side};
use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;

/// Picks one template.
fn choose<'a>(rng: &mut ChaCha8Rng, options: &[&'a str]) -> &'a str {
    options.choose(rng).copied().unwrap_or_default()
}

/// Upper-cases the first letter.
fn cap(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Fills `{size}`, `{side}`, `{loc}`, `{n}`, `{cm}` and `{deg}`, then capitalises.
fn fill(t: &str, f: &Finding, ctr: f32) -> String {
    let side = f.side.map(Side::as_str).unwrap_or("");
    let size = f.size.as_deref().unwrap_or("");
    let mm: f32 = size.trim_end_matches(" mm").parse().unwrap_or(0.0);
    let deg = if ctr < 0.58 {
        "mild"
    } else if ctr < 0.62 {
        "moderate"
    } else {
        "marked"
    };
    let s = t
        .replace("{size}", size)
        .replace("{side}", side)
        .replace("{loc}", f.location.as_deref().unwrap_or("lung"))
        .replace("{n}", &format!("{mm:.0}"))
        .replace("{cm}", &format!("{:.1}", mm / 10.0))
        .replace("{deg}", deg);
    cap(&s)
}

/// Templates for a finding stated as present or uncertain; the first one is also used in the impression.
fn positive_templates(f: &Finding) -> &'static [&'static str] {
    let both = f.side == Some(Side::Bilateral);
    match (f.kind, f.presence) {
        (FindingKind::Effusion, Presence::Present) if both => &[
            "{size} bilateral pleural effusion.",
            "There is {size} bilateral pleural effusion.",
            "{size} bilateral pleural effusion with blunting of both costophrenic angles.",
        ],
        (FindingKind::Effusion, Presence::Present) => &[
            "{size} {side} pleural effusion.",
            "There is a {size} {side} pleural effusion.",
            "{size} {side} pleural effusion with blunting of the costophrenic angle.",
            "{size} {side} pleural effusion layering at the base.",
        ],
        (FindingKind::Effusion, _) if both => &[
            "Possible small bilateral pleural effusion.",
            "Blunting of both costophrenic angles may represent small bilateral effusion.",
        ],
        (FindingKind::Effusion, _) => &[
            "Possible small {side} effusion.",
            "Blunting of the {side} costophrenic angle may represent a small effusion.",
            "Questionable trace {side} pleural effusion.",
        ],
        (FindingKind::Pneumothorax, Presence::Present) => &[
            "{size} {side} pneumothorax.",
            "There is a {size} {side} pneumothorax.",
            "{size} {side} apical pneumothorax with a visible pleural line.",
            "A {size} {side} pneumothorax is present.",
        ],
        (FindingKind::Pneumothorax, _) => &[
            "Possible small {side} apical pneumothorax.",
            "A faint {side} apical pleural line may represent a small pneumothorax.",
            "Cannot exclude a small {side} pneumothorax.",
        ],
        (FindingKind::Cardiomegaly, Presence::Present) => &[
            "{deg} cardiomegaly.",
            "The heart is enlarged, consistent with cardiomegaly.",
            "There is {deg} cardiomegaly.",
            "The cardiac silhouette is enlarged, compatible with {deg} cardiomegaly.",
        ],
        (FindingKind::Cardiomegaly, _) => &[
            "Borderline cardiomegaly.",
            "The heart size is at the upper limits of normal; mild cardiomegaly cannot be excluded.",
            "Possible mild cardiomegaly.",
        ],
        (FindingKind::Nodule, Presence::Present) => &[
            "{n} mm nodule in the {loc}.",
            "There is a {n} mm nodule in the {loc}.",
            "A {n} mm pulmonary nodule is seen in the {loc}.",
            "{n} mm noncalcified nodule projecting over the {loc}.",
        ],
        (FindingKind::Nodule, _) => &[
            "Possible {n} mm nodule in the {loc}.",
            "A questionable nodule in the {loc} may represent a nipple shadow.",
            "Possible small nodule in the {loc}, which could be a vessel seen end-on.",
        ],
        (FindingKind::Mass, Presence::Present) => &[
            "{cm} cm mass in the {loc}.",
            "There is a {cm} cm mass in the {loc}, concerning for malignancy.",
            "A lobulated mass measuring {cm} cm is present in the {loc}.",
        ],
        (FindingKind::Mass, _) => &[
            "Possible mass in the {loc}.",
            "Ill-defined density in the {loc} may represent a mass.",
            "Cannot exclude an underlying mass in the {loc}.",
        ],
        (FindingKind::Consolidation, Presence::Present) => &[
            "Focal consolidation in the {loc}.",
            "There is consolidation in the {loc}, compatible with pneumonia.",
            "Dense airspace consolidation in the {loc}.",
        ],
        (FindingKind::Consolidation, _) => &[
            "Possible early consolidation in the {loc}; cannot exclude early pneumonia.",
            "Questionable consolidation in the {loc}.",
            "Consolidation in the {loc} cannot be excluded.",
        ],
        (FindingKind::Opacity, Presence::Present) => &[
            "Patchy opacity in the {loc}.",
            "There is a patchy airspace opacity in the {loc}.",
            "Hazy opacity in the {loc}.",
        ],
        (FindingKind::Opacity, _) => &[
            "Possible faint opacity in the {loc}, which may represent atelectasis.",
            "Questionable subtle opacity in the {loc}.",
            "Mild opacity in the {loc} may represent atelectasis.",
        ],
    }
}

/// Templates negating a single finding.
fn negative_templates(kind: FindingKind) -> &'static [&'static str] {
    match kind {
        FindingKind::Effusion => &[
            "No pleural effusion.",
            "There is no evidence of pleural effusion.",
            "No effusion is seen.",
            "There is no pleural effusion.",
        ],
        FindingKind::Pneumothorax => &[
            "No pneumothorax.",
            "There is no evidence of pneumothorax.",
            "No pneumothorax is identified.",
            "There is no pneumothorax.",
        ],
        FindingKind::Cardiomegaly => {
            &["No cardiomegaly.", "Heart size is normal without cardiomegaly.", "There is no cardiomegaly."]
        }
        FindingKind::Nodule => {
            &["No pulmonary nodule.", "There is no suspicious pulmonary nodule.", "No nodule is seen."]
        }
        FindingKind::Mass => &["No pulmonary mass.", "There is no evidence of mass.", "No mass is identified."],
        FindingKind::Consolidation => {
            &["No focal consolidation.", "There is no evidence of consolidation.", "No consolidation."]
        }
        FindingKind::Opacity => &["No focal opacity.", "There is no airspace opacity.", "No focal airspace opacity."],
    }
}

/// Noun phrase used inside a combined negation.
fn negation_item(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::Consolidation => "focal consolidation",
        FindingKind::Effusion => "pleural effusion",
        _ => "pneumothorax",
    }
}

/// Joins `a`, `a or b`, `a, b, or c`.
fn or_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [a] => a.to_string(),
        [a, b] => format!("{a} or {b}"),
        [init @ .., last] => format!("{}, or {last}", init.join(", ")),
    }
}

/// Writes `FINDINGS: ... IMPRESSION: ...` for the case.
pub(crate) fn write(case: &Case, rng: &mut ChaCha8Rng) -> String {
    let state = |k: FindingKind| case.planned.iter().find(|p| p.finding.kind == k).map(|p| &p.finding);
    let is = |k: FindingKind, p: Presence| state(k).is_some_and(|f| f.presence == p);
    let drawn = |k: FindingKind| state(k).is_some_and(|f| f.presence != Presence::Absent);
    let positive = |rng: &mut ChaCha8Rng, f: &Finding| fill(choose(rng, positive_templates(f)), f, case.ctr);
    let mut body: Vec<String> = Vec::new();

    // Heart and mediastinum.
    match state(FindingKind::Cardiomegaly) {
        Some(f) if f.presence != Presence::Absent => body.push(positive(rng, f)),
        Some(_) => body.push(choose(rng, negative_templates(FindingKind::Cardiomegaly)).to_string()),
        None => {
            if rng.random_bool(0.75) {
                body.push(
                    choose(
                        rng,
                        &[
                            "The cardiomediastinal silhouette is within normal limits.",
                            "Heart size and mediastinal contours are normal.",
                            "The cardiac and mediastinal silhouettes are unremarkable.",
                            "Normal heart size.",
                        ],
                    )
                    .to_string(),
                );
            }
        }
    }

    // Lung parenchyma.
    let parenchymal = [FindingKind::Consolidation, FindingKind::Opacity, FindingKind::Nodule, FindingKind::Mass];
    for &k in &parenchymal {
        if let Some(f) = state(k).filter(|f| f.presence != Presence::Absent) {
            body.push(positive(rng, f));
        }
    }
    if !parenchymal.iter().any(|&k| drawn(k)) && rng.random_bool(0.6) {
        let s = choose(
            rng,
            &["The lungs are clear.", "The lungs are well expanded and clear.", "Lungs are clear bilaterally."],
        );
        body.push(s.to_string());
    }

    // Pleura.
    for k in [FindingKind::Effusion, FindingKind::Pneumothorax] {
        if let Some(f) = state(k).filter(|f| f.presence != Presence::Absent) {
            body.push(positive(rng, f));
        }
    }

    // Negations, sometimes merged into one sentence.
    let mut negated: Vec<FindingKind> = FindingKind::ALL
        .iter()
        .copied()
        .filter(|&k| k != FindingKind::Cardiomegaly && is(k, Presence::Absent))
        .collect();
    let mergeable: Vec<FindingKind> = negated
        .iter()
        .copied()
        .filter(|k| matches!(k, FindingKind::Consolidation | FindingKind::Effusion | FindingKind::Pneumothorax))
        .collect();
    if mergeable.len() >= 2 && rng.random_bool(0.5) {
        let items: Vec<&str> = mergeable.iter().map(|&k| negation_item(k)).collect();
        let t = choose(rng, &["No {}.", "There is no {}.", "There is no evidence of {}."]);
        body.push(t.replace("{}", &or_list(&items)));
        negated.retain(|k| !mergeable.contains(k));
    }
    if negated.contains(&FindingKind::Nodule) && negated.contains(&FindingKind::Mass) && rng.random_bool(0.6) {
        let t = choose(
            rng,
            &[
                "No pulmonary nodule or mass.",
                "No suspicious nodule or mass is seen.",
                "There is no evidence of nodule or mass.",
            ],
        );
        body.push(t.to_string());
        negated.retain(|&k| k != FindingKind::Nodule && k != FindingKind::Mass);
    }
    for k in negated {
        body.push(choose(rng, negative_templates(k)).to_string());
    }
    if !drawn(FindingKind::Effusion) && rng.random_bool(0.3) {
        body.push("The costophrenic angles are sharp.".to_string());
    }
    if rng.random_bool(0.65) {
        let s = choose(
            rng,
            &[
                "No acute osseous abnormality.",
                "The osseous structures are intact.",
                "Visualized osseous structures are unremarkable.",
                "No acute osseous abnormality is seen.",
            ],
        );
        body.push(s.to_string());
    }

    // Impression: the drawn findings in their shortest phrasing, or a normal statement.
    let mut impression: Vec<String> = case
        .planned
        .iter()
        .filter(|p| p.finding.presence != Presence::Absent)
        .map(|p| fill(positive_templates(&p.finding)[0], &p.finding, case.ctr))
        .collect();
    if impression.is_empty() {
        let s = choose(
            rng,
            &[
                "No acute cardiopulmonary process.",
                "No acute cardiopulmonary abnormality.",
                "Normal chest radiograph.",
                "No acute intrathoracic process.",
            ],
        );
        impression.push(s.to_string());
    } else if (is(FindingKind::Nodule, Presence::Present) || is(FindingKind::Mass, Presence::Present))
        && rng.random_bool(0.5)
    {
        impression.push("Recommend CT of the chest for further characterization.".to_string());
    }
    format!("FINDINGS: {}\n\nIMPRESSION: {}", body.join(" "), impression.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_capitals() {
        assert_eq!(or_list(&["a", "b", "c"]), "a, b, or c");
        assert_eq!(or_list(&["a", "b"]), "a or b");
        assert_eq!(cap("small right"), "Small right");
    }
}
