//! ecamp-loader: turns a dataset snapshot into ordered, prefetched, decoded, masked training
//! batches. Today it holds the text preparation of the official ECAMP code (spec §2.3–§2.8):
//! LLM-context insertion, WordPiece encoding, entity/descriptor masking and loss weights.
#![warn(missing_docs)]

pub mod text;
