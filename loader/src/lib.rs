//! ecamp-loader: turns a dataset snapshot into ordered, prefetched, decoded, masked training
//! batches. Today it holds the epoch order (`order`: a pure function of snapshot, seed and epoch,
//! sliced per rank, resumable on another world size), the per-sample CPU work (`sample`: hash
//! check, JPEG decode into a reused canvas, RandomResizedCrop box and flip bit as torchvision
//! draws them) and the text preparation of the official
//! ECAMP code (`text`, spec §2.3–§2.8): LLM-context insertion, WordPiece encoding,
//! entity/descriptor masking and loss weights.
#![warn(missing_docs)]

pub mod order;
pub mod sample;
pub mod text;
