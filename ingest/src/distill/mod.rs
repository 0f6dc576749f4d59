//! Report distillation: from a radiology report to ECAMP's entity-centred context
//! ("There is pleural effusion. There may be atelectasis. There is no pneumothorax.") and
//! structured entities, with provenance.

pub mod evaluate;
pub mod lexicon;
pub mod openai;

pub mod rules;

use ecamp_store::{Entity, Producer};

/// A distiller's answer for one report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distilled {
    /// The context sentences.
    pub context: String,
    /// The structured entities.
    pub entities: Vec<Entity>,
}

/// Turns reports into contexts and entities.
pub trait Distiller: Send + Sync {
    /// Provenance recorded with every annotation this distiller writes.
    fn producer(&self) -> Producer;

    /// Distils many reports; one result per report, in order. A failed report is an error
    /// message and is never stored as context.
    fn distill_batch(&self, reports: &[&str]) -> Vec<Result<Distilled, String>>;
}

/// The offline, deterministic rules distiller.
pub struct Rules(rules::RulesDistiller);

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(rules::RULES_VERSION)
    }
}

impl Rules {
    /// Builds the distiller (compiles its patterns once).
    pub fn new() -> Self {
        Rules(rules::RulesDistiller::new())
    }

    /// The underlying rules engine.
    pub fn engine(&self) -> &rules::RulesDistiller {
        &self.0
    }
}

impl Default for Rules {
    fn default() -> Self {
        Self::new()
    }
}

impl Distiller for Rules {
    fn producer(&self) -> Producer {
        Producer { distiller: "rules".into(), model: Some(rules::RULES_VERSION.into()), prompt_hash: None }
    }

    fn distill_batch(&self, reports: &[&str]) -> Vec<Result<Distilled, String>> {
        reports
            .iter()
            .map(|r| {
                let d = self.0.distill(r);
                Ok(Distilled {
                    context: d.context,
                    entities: d
                        .entities
                        .into_iter()
                        .map(|e| Entity {
                            name: e.name,
                            status: e.status.as_str().to_string(),
                            descriptors: e.descriptors,
                        })
                        .collect(),
                })
            })
            .collect()
    }
}
