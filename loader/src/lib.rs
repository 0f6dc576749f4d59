//! ecamp-loader: turns a dataset snapshot into ordered, prefetched, decoded, masked training
//! batches.
//!
//! - [`order`]: the epoch order, a pure function of (snapshot, seed, epoch), sliced per rank and
//!   resumable on another world size;
//! - [`sample`]: per-sample CPU work (hash check, strict JPEG decode, torchvision's
//!   RandomResizedCrop box and flip bit);
//! - [`region`]: decoding only the restart segments of a JPEG that a crop needs;
//! - [`text`]: the official ECAMP text preparation (spec §2.3–§2.8);
//! - [`Loader`] / [`Epoch`]: the pipeline that streams batches from the store with a byte budget,
//!   lock-free queues and pooled buffers, and its [`Telemetry`].
#![warn(missing_docs)]

mod batch;
mod config;
mod error;
mod loader;
pub mod order;
mod plan;
pub mod region;
pub mod sample;
mod schedule;
mod stages;
mod telemetry;
pub mod text;

pub use batch::{Batch, Skipped};
pub use config::{BadSamplePolicy, LoaderConfig};
pub use error::LoaderError;
pub use loader::{Epoch, Loader};
pub use order::Cursor;
pub use telemetry::Telemetry;
