//! The loader's output: one rank's share of a global batch, pixels still u8 in a fixed canvas
//! (the device resizes, flips and normalises them) and the text tensors ready to upload. Its
//! buffers go back to a pool when it is dropped, so steady-state training allocates nothing here.

use crossbeam_channel::Sender;

use crate::order::Cursor;
use crate::sample::CropBox;

/// A sample left out of its batch under `BadSamplePolicy::Skip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The sample's id.
    pub sample_id: String,
    /// Why it was left out.
    pub reason: String,
}

/// The reusable allocations of a batch.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    pub pixels: Vec<u8>,
    pub input_ids: Vec<i64>,
    pub labels: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub loss_weights: Vec<f32>,
}

impl Buffers {
    fn clear(&mut self) {
        self.pixels.clear();
        self.input_ids.clear();
        self.labels.clear();
        self.attention_mask.clear();
        self.loss_weights.clear();
    }
}

/// One rank's slice of one global batch, row-major, `len()` samples.
#[derive(Debug)]
pub struct Batch {
    /// Epoch this batch belongs to.
    pub epoch: u64,
    /// Index of the global batch within the epoch.
    pub index: u64,
    /// Where to resume after training on this batch (the same on every rank).
    pub cursor: Cursor,
    /// Sample ids, in order.
    pub sample_ids: Vec<String>,
    /// Each sample's index in the epoch's global sequence.
    pub sample_indices: Vec<u64>,
    /// Canvas width in pixels (row stride of `pixels`).
    pub canvas_width: usize,
    /// Canvas height in pixels.
    pub canvas_height: usize,
    /// `len() × canvas_height × canvas_width` grayscale pixels; each image sits top-left in its
    /// canvas, the rest is zero.
    pub pixels: Vec<u8>,
    /// Each image's valid (width, height) in its canvas: the whole stored image, or the
    /// restart-aligned region around its crop that the loader decoded (see `region`).
    pub sizes: Vec<(u32, u32)>,
    /// Where each canvas image starts in the stored image, (left, top): `(0, 0)` for a whole
    /// image; a crop plus its origin is the crop in the stored image.
    pub origins: Vec<(u32, u32)>,
    /// RandomResizedCrop boxes, in the canvas image's pixels (relative to its origin).
    pub crops: Vec<CropBox>,
    /// Horizontal-flip bits.
    pub flips: Vec<bool>,
    /// Super-resolution window offsets (label_i, label_j) on the 14×14 patch grid; (1, 1), the
    /// centre, when the annotations have none.
    pub sr_windows: Vec<(i32, i32)>,
    /// Token positions per sample (`L`).
    pub seq_len: usize,
    /// Masked token ids, `len() × seq_len`.
    pub input_ids: Vec<i64>,
    /// Unmasked ids, the MLM targets, `len() × seq_len`.
    pub labels: Vec<i64>,
    /// 1 for tokens, 0 for padding, `len() × seq_len`.
    pub attention_mask: Vec<i64>,
    /// Per-token loss weights, `len() × seq_len`.
    pub loss_weights: Vec<f32>,
    /// Samples of this slice left out as bad.
    pub skipped: Vec<Skipped>,
    recycle: Option<Sender<Buffers>>,
}

impl Batch {
    /// An empty batch drawing its allocations from `buffers`.
    pub(crate) fn new(
        epoch: u64,
        index: u64,
        cursor: Cursor,
        canvas: (usize, usize),
        seq_len: usize,
        mut buffers: Buffers,
        recycle: Sender<Buffers>,
    ) -> Self {
        buffers.clear();
        Batch {
            epoch,
            index,
            cursor,
            sample_ids: Vec::new(),
            sample_indices: Vec::new(),
            canvas_width: canvas.0,
            canvas_height: canvas.1,
            pixels: buffers.pixels,
            sizes: Vec::new(),
            origins: Vec::new(),
            crops: Vec::new(),
            flips: Vec::new(),
            sr_windows: Vec::new(),
            seq_len,
            input_ids: buffers.input_ids,
            labels: buffers.labels,
            attention_mask: buffers.attention_mask,
            loss_weights: buffers.loss_weights,
            skipped: Vec::new(),
            recycle: Some(recycle),
        }
    }

    /// Samples in the batch.
    pub fn len(&self) -> usize {
        self.sample_ids.len()
    }

    /// Whether every sample of the slice was skipped.
    pub fn is_empty(&self) -> bool {
        self.sample_ids.is_empty()
    }

    /// The canvas of sample `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.canvas_width * self.canvas_height;
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Appends a tight `width × height` image into a fresh canvas, zero-padded.
    pub(crate) fn push_image(&mut self, pixels: &[u8], width: usize, height: usize) {
        let (cw, ch) = (self.canvas_width, self.canvas_height);
        self.pixels.reserve(cw * ch);
        for row in pixels.chunks_exact(width).take(height.min(ch)) {
            self.pixels.extend_from_slice(&row[..width.min(cw)]);
            self.pixels.resize(self.pixels.len() + cw.saturating_sub(width), 0);
        }
        self.pixels.resize(self.pixels.len() + cw * ch.saturating_sub(height), 0);
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(pool) = self.recycle.take() {
            let buffers = Buffers {
                pixels: std::mem::take(&mut self.pixels),
                input_ids: std::mem::take(&mut self.input_ids),
                labels: std::mem::take(&mut self.labels),
                attention_mask: std::mem::take(&mut self.attention_mask),
                loss_weights: std::mem::take(&mut self.loss_weights),
            };
            // A full or closed pool (the epoch is over) just frees the buffers.
            let _ = pool.try_send(buffers);
        }
    }
}
