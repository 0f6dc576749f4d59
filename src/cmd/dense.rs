//! What `ecamp segment` and `ecamp detect` share: the frozen encoder's patch tokens of every
//! labelled sample, and the ground truth (masks, boxes) carried from the original image into the
//! encoder's input (stored image → centre square crop → resized to the model's side).

use anyhow::Context;
use burn::tensor::backend::Backend;
use ecamp_eval::labels::{Item, LabelSet};
use ecamp_model::eval::features::{CanvasBatch, GrayImage, centre_crop, encoder_inputs, patch_tokens};
use ecamp_model::eval::probe::Rows;
use ecamp_store::{Dataset, Snapshot};

use super::downstream::{LoadedModel, SplitArgs, for_each_image_batch, split_found};
use super::join::KeyIndex;

/// How an original image's pixels land in the encoder input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    /// Original `(width, height)` the labels refer to.
    pub original: (u32, u32),
    /// Stored `(width, height)` in the dataset.
    pub stored: (u32, u32),
    /// Encoder input side.
    pub side: usize,
}

impl View {
    /// Stored-pixels-per-original-pixel on each axis, the crop `(top, left, size)` and the
    /// input-pixels-per-stored-pixel scale.
    fn geometry(&self) -> ((f32, f32), (f32, f32, f32), f32) {
        let s = (
            self.stored.0 as f32 / self.original.0.max(1) as f32,
            self.stored.1 as f32 / self.original.1.max(1) as f32,
        );
        let (top, left, size, _) = centre_crop(self.stored.0, self.stored.1);
        ((s.0, s.1), (top as f32, left as f32, size as f32), self.side as f32 / size.max(1) as f32)
    }

    /// A box `[x0, y0, x1, y1]` in original pixels → input pixels, clipped to the input.
    pub fn map_box(&self, b: [f32; 4]) -> [f32; 4] {
        let ((sx, sy), (top, left, _), k) = self.geometry();
        let side = self.side as f32;
        let x = |v: f32| ((v * sx - left) * k).clamp(0.0, side);
        let y = |v: f32| ((v * sy - top) * k).clamp(0.0, side);
        [x(b[0]), y(b[1]), x(b[2]), y(b[3])]
    }

    /// The mask (original pixels) sampled at the centre of every input pixel: `side²` of 0/1.
    pub fn map_mask(&self, mask: &ecamp_eval::Mask) -> Vec<f32> {
        let ((sx, sy), (top, left, _), k) = self.geometry();
        let mut out = Vec::with_capacity(self.side * self.side);
        for i in 0..self.side {
            for j in 0..self.side {
                let x = ((left + (j as f32 + 0.5) / k) / sx).floor();
                let y = ((top + (i as f32 + 0.5) / k) / sy).floor();
                let on = x >= 0.0 && y >= 0.0 && mask.get(x as u32, y as u32);
                out.push(f32::from(u8::from(on)));
            }
        }
        out
    }
}

/// The labelled samples found in a snapshot, with their tokens, views and split.
pub struct DenseSet {
    /// The found items (label order).
    pub items: Vec<Item>,
    /// Patch tokens `[n, L·d]`, one row per item.
    pub tokens: Rows,
    /// Where each item's original pixels land.
    pub views: Vec<View>,
    /// Train / validation / test indices into `items`.
    pub split: ecamp_eval::Split,
    /// The training part after `--fraction`.
    pub train: Vec<usize>,
    /// Label rows without a sample.
    pub unmatched: usize,
}

/// Encodes every labelled sample of `snap` with the frozen encoder and splits them by patient.
pub async fn dense_set<B: Backend>(
    ds: &Dataset,
    snap: &Snapshot,
    labels: &LabelSet,
    model: &LoadedModel<B>,
    p: &SplitArgs,
) -> anyhow::Result<DenseSet> {
    let wanted = KeyIndex::for_labels(labels);
    // Per label item: its tokens and the stored image's (width, height).
    type Encoded = (Vec<f32>, (u32, u32));
    let mut rows: Vec<Option<Encoded>> = vec![None; labels.items.len()];
    let device: B::Device = Default::default();
    let side = model.config.img_size;
    let mut each = |idx: Vec<usize>, imgs: Vec<GrayImage>| -> anyhow::Result<()> {
        let values = tokio::task::block_in_place(|| -> anyhow::Result<Vec<f32>> {
            let batch = CanvasBatch::new(&imgs);
            let x = encoder_inputs::<B>(&device, &batch.canvases(), side)?;
            let t = patch_tokens(&model.model.encoder, x);
            t.into_data().into_vec::<f32>().map_err(|e| anyhow::anyhow!("token tensor: {e:?}"))
        })?;
        let width = values.len() / idx.len().max(1);
        for (k, (i, img)) in idx.into_iter().zip(&imgs).enumerate() {
            rows[i] = Some((values[k * width..(k + 1) * width].to_vec(), (img.width, img.height)));
        }
        Ok(())
    };
    for_each_image_batch(ds, snap, &wanted, p.feature_batch.max(1), &mut each).await?;
    let found: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].is_some()).collect();
    let (items, split, train) = split_found(labels, &found, p, &snap.id)?;
    let width = rows[found[0]].as_ref().map_or(0, |r| r.0.len());
    let mut values = Vec::with_capacity(found.len() * width);
    let mut views = Vec::with_capacity(found.len());
    for (&i, item) in found.iter().zip(&items) {
        let (v, stored) = rows[i].take().context("a found sample lost its tokens")?;
        values.extend(v);
        views.push(View { original: item.size.unwrap_or(stored), stored, side });
    }
    let tokens = Rows::new(found.len(), width, values).context("tokens of unequal width")?;
    Ok(DenseSet { items, tokens, views, split, train, unmatched: labels.len() - found.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_and_masks_follow_resize_and_centre_crop() {
        // A 1024² original stored at 512 wide × 640 high, encoder side 32: crop rows 64..576.
        let v = View { original: (1024, 1280), stored: (512, 640), side: 32 };
        // Original (0,128)-(1024,1280) → stored (0,64)-(512,640) → input (0,0)-(32,36) → clipped.
        assert_eq!(v.map_box([0.0, 128.0, 1024.0, 1280.0]), [0.0, 0.0, 32.0, 32.0]);
        assert_eq!(v.map_box([512.0, 640.0, 768.0, 896.0]), [16.0, 16.0, 24.0, 24.0]);
        let mask = ecamp_eval::Mask::from_boxes(1024, 1280, &[[512.0, 640.0, 768.0, 896.0]]);
        let m = v.map_mask(&mask);
        let on: Vec<usize> = (0..m.len()).filter(|&i| m[i] > 0.5).collect();
        assert_eq!(on.len(), 64);
        assert!(on.iter().all(|&i| (16..24).contains(&(i / 32)) && (16..24).contains(&(i % 32))));
    }
}
