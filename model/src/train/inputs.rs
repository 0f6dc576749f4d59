//! A loader [`Batch`] on the device: the augmentation, the MAE noise and the text tensors.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use ecamp_loader::Batch;
use ecamp_loader::text::sample_rng;
use rand::Rng;

use crate::augment::{AugmentError, Canvases, augment};
use crate::config::EcampConfig;
use crate::ecamp::Inputs;
use crate::loss::window_mask;

/// RNG stream of the MAE masking noise (the loader uses 0 for text and 1 for the image).
pub const NOISE_STREAM: u64 = 2;

/// The MAE noise `[n, L]` for the batch's samples: each row from the sample's own RNG
/// (`seed`, epoch, global index), so it does not depend on ranks, batch composition or resume.
pub fn masking_noise(seed: u64, batch: &Batch, patches: usize) -> Vec<f32> {
    let mut noise = Vec::with_capacity(batch.len() * patches);
    for &index in &batch.sample_indices {
        let mut rng = sample_rng(seed, batch.epoch, index);
        rng.set_stream(NOISE_STREAM);
        noise.extend((0..patches).map(|_| rng.random::<f32>()));
    }
    noise
}

/// Uploads a batch and runs the device-side augmentation; `seed` drives the masking noise.
pub fn to_inputs<B: Backend>(
    batch: &Batch,
    config: &EcampConfig,
    seed: u64,
    device: &B::Device,
) -> Result<Inputs<B>, AugmentError> {
    let n = batch.len();
    let crops: Vec<(u32, u32, u32, u32)> = batch.crops.iter().map(|c| (c.top, c.left, c.height, c.width)).collect();
    let canvases = Canvases {
        pixels: &batch.pixels,
        n,
        height: batch.canvas_height,
        width: batch.canvas_width,
        crops: &crops,
        flips: &batch.flips,
    };
    let (big, imgs) = augment::<B>(device, &canvases, config.big_size())?;
    let (t, l, g) = (batch.seq_len, config.num_patches(), config.grid());
    if t != config.max_len {
        return Err(AugmentError::Malformed(format!(
            "the loader's sequence length {t} differs from the model's max_len {}",
            config.max_len
        )));
    }
    let vocab = config.vocab_size as i64;
    if let Some(bad) = batch.input_ids.iter().chain(&batch.labels).find(|&&id| !(0..vocab).contains(&id)) {
        return Err(AugmentError::Malformed(format!("token id {bad} is outside the model's vocabulary of {vocab}")));
    }
    let int = |v: &[i64]| Tensor::<B, 2, Int>::from_data(TensorData::new(v.to_vec(), [n, t]), device);
    let attention: Vec<f32> = batch.attention_mask.iter().map(|&m| m as f32).collect();
    Ok(Inputs {
        big,
        imgs: Some(imgs),
        noise: Tensor::from_data(TensorData::new(masking_noise(seed, batch, l), [n, l]), device),
        ids: int(&batch.input_ids),
        labels: int(&batch.labels),
        attention: Tensor::from_data(TensorData::new(attention, [n, t]), device),
        weights: Tensor::from_data(TensorData::new(batch.loss_weights.clone(), [n, t]), device),
        window: Tensor::from_data(
            TensorData::new(window_mask(&batch.sr_windows, g, config.sr_window), [n, g, g]),
            device,
        ),
    })
}

/// Random inputs of the right shapes for benchmarks and smoke tests: N(0, 1) images, uniform
/// noise, ids in `[5, vocab)` with every fifth position masked (id 3), the last eighth padding,
/// unit weights and a centred SR window. Draws from the backend RNG (seed it first).
pub fn synthetic<B: Backend>(config: &EcampConfig, n: usize, device: &B::Device) -> Inputs<B> {
    use burn::tensor::Distribution;
    let (s2, t, l, g) = (config.big_size(), config.max_len, config.num_patches(), config.grid());
    let span = (config.vocab_size as i64 - 5).max(1);
    let labels: Vec<i64> =
        (0..n * t).map(|i| if i % t < t - t / 8 { 5 + (i as i64 * 7919) % span } else { 0 }).collect();
    let ids: Vec<i64> = labels.iter().enumerate().map(|(i, &v)| if i % 5 == 1 && v != 0 { 3 } else { v }).collect();
    let attention: Vec<f32> = labels.iter().map(|&v| f32::from(u8::from(v != 0))).collect();
    let int = |v: Vec<i64>| Tensor::<B, 2, Int>::from_data(TensorData::new(v, [n, t]), device);
    let centre = ((g - config.sr_window) / 2) as i32;
    Inputs {
        big: Tensor::random([n, 3, s2, s2], Distribution::Normal(0.0, 1.0), device),
        imgs: None,
        noise: Tensor::random([n, l], Distribution::Default, device),
        ids: int(ids),
        labels: int(labels),
        attention: Tensor::from_data(TensorData::new(attention, [n, t]), device),
        weights: Tensor::ones([n, t], device),
        window: Tensor::from_data(
            TensorData::new(window_mask(&vec![(centre, centre); n], g, config.sr_window), [n, g, g]),
            device,
        ),
    }
}
