//! Downstream use of a trained encoder: pooled image features ([`features`]), the linear probe
//! ([`probe`]), full fine-tuning ([`finetune`]) and the entity attention windows that guide super-resolution ([`windows`]).
//!
//! What the ground truth is and how predictions are scored belongs to `ecamp-eval`; this module
//! only computes (features, trained heads, attention maps), so it takes the scorer as a function.

pub mod detect;
pub mod features;
pub mod finetune;
pub mod probe;
pub mod schedule;
pub mod segment;
pub mod windows;
