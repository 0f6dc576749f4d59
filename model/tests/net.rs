//! Module tests on the tiny preset: shapes, MAE masking invariants, the losses' definitions,
//! parameter counts of `base`, and that every loss reaches the encoder.

use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use ecamp_model::loss::{mim_loss, mlm_loss, patchify, sr_loss, token_cross_entropy, window_mask};
use ecamp_model::net::vit::{random_masking, unpatchify};
use ecamp_model::{EcampConfig, Inputs};

type B = NdArray<f32>;
type A = Autodiff<B>;

fn tiny() -> EcampConfig {
    EcampConfig::tiny().with_hidden_dropout(0.0).with_attn_dropout(0.0)
}

/// A random tiny batch of `n` samples with a few masked tokens and padding.
fn batch<Bk: burn::tensor::backend::Backend>(c: &EcampConfig, n: usize, dev: &Bk::Device) -> Inputs<Bk> {
    let (s, t, l) = (c.img_size, c.max_len, c.num_patches());
    let big = Tensor::random([n, 3, 2 * s, 2 * s], Distribution::Normal(0.0, 1.0), dev);
    let noise = Tensor::random([n, l], Distribution::Default, dev);
    let labels: Vec<i64> = (0..n * t).map(|i| if i % t < t - 8 { 4 + (i as i64 * 37) % 900 } else { 0 }).collect();
    let ids: Vec<i64> = labels.iter().enumerate().map(|(i, &v)| if i % 5 == 1 { 3 } else { v }).collect();
    let attention: Vec<f32> = labels.iter().map(|&v| if v == 0 { 0.0 } else { 1.0 }).collect();
    let int = |v: Vec<i64>| Tensor::<Bk, 2, Int>::from_data(TensorData::new(v, [n, t]), dev);
    let model_grid = c.grid();
    Inputs {
        big,
        imgs: None,
        noise,
        ids: int(ids),
        labels: int(labels),
        attention: Tensor::from_data(TensorData::new(attention, [n, t]), dev),
        weights: Tensor::ones([n, t], dev),
        window: Tensor::from_data(
            TensorData::new(window_mask(&vec![(1, 2); n], model_grid, c.sr_window), [n, model_grid, model_grid]),
            dev,
        ),
    }
}

fn scalar<Bk: burn::tensor::backend::Backend>(t: Tensor<Bk, 1>) -> f64 {
    t.into_data().convert::<f64>().to_vec::<f64>().unwrap()[0]
}

#[test]
fn base_parameter_count_matches_the_spec() {
    let model = EcampConfig::base().init::<B>(&Default::default());
    let fixed = 197 * 768 + 197 * 512; // the sin-cos tables, frozen
    assert_eq!(model.num_params() - fixed, 183_173_080);
    assert_eq!(model.encoder.num_params() - 197 * 768, 85_647_360);
    assert_eq!(model.decoder.num_params() - 197 * 512, 13_398_784);
    assert_eq!(model.sr.num_params(), 168);
    assert_eq!(model.text.head.num_params(), 23_662_128);
    assert_eq!(model.text.fusion.num_params(), 7_681_536);
}

#[test]
fn masking_keeps_len_keep_patches_and_unshuffle_restores_order() {
    let dev = Default::default();
    let (n, l, d) = (3, 64, 5);
    let x = Tensor::<B, 1, Int>::arange(0..(n * l * d) as i64, &dev).float().reshape([n, l, d]);
    let noise = Tensor::<B, 2>::random([n, l], Distribution::Default, &dev);
    let keep = EcampConfig::tiny().len_keep();
    assert_eq!(keep, 16, "int(64 · 0.25)");
    let (kept, m) = random_masking(x.clone(), noise.clone(), keep);
    assert_eq!(kept.dims(), [n, keep, d]);
    let mask = m.mask.clone().into_data().to_vec::<f32>().unwrap();
    let noise = noise.into_data().to_vec::<f32>().unwrap();
    let ids_keep = m.ids_keep.clone().into_data().convert::<i64>().to_vec::<i64>().unwrap();
    for s in 0..n {
        let row = &mask[s * l..(s + 1) * l];
        assert_eq!(row.iter().filter(|&&v| v == 0.0).count(), keep);
        // Kept = the smallest noise, in ascending-noise order, and exactly the mask's zeros.
        let mut order: Vec<usize> = (0..l).collect();
        order.sort_by(|&a, &b| noise[s * l + a].total_cmp(&noise[s * l + b]));
        let got: Vec<usize> = ids_keep[s * keep..(s + 1) * keep].iter().map(|&v| v as usize).collect();
        assert_eq!(got, order[..keep]);
        assert!(got.iter().all(|&p| row[p] == 0.0));
    }
    // Shuffle everything with ids_shuffle = argsort(ids_restore), then unshuffle with ids_restore.
    let ids_shuffle = m.ids_restore.clone().argsort(1);
    let shuffled = x.clone().gather(1, ids_shuffle.unsqueeze_dim::<3>(2).repeat_dim(2, d));
    let back = shuffled.gather(1, m.ids_restore.unsqueeze_dim::<3>(2).repeat_dim(2, d));
    back.into_data().assert_eq(&x.into_data(), true);
}

#[test]
fn forward_shapes_and_finite_losses() {
    let dev = Default::default();
    let c = tiny();
    let model = c.init::<B>(&dev);
    let out = model.forward_all(batch(&c, 2, &dev));
    assert_eq!(out.pred.dims(), [2, 64, 48]);
    assert_eq!(out.sr.dims(), [2, 3, 64, 64]);
    assert_eq!(out.cross_attention.dims(), [2, 2, 64, 16]);
    assert_eq!(out.masking.ids_keep.dims(), [2, 16]);
    for v in [out.losses.mim, out.losses.sr, out.losses.mlm, out.losses.total, out.losses.mlm_masked] {
        let v = scalar(v);
        assert!(v.is_finite() && v > 0.0, "{v}");
    }
}

#[test]
fn patchify_inverts_unpatchify() {
    let dev = Default::default();
    let pred = Tensor::<B, 3>::random([2, 64, 48], Distribution::Default, &dev);
    let back = patchify(unpatchify(pred.clone(), 4), 4);
    back.into_data().assert_eq(&pred.into_data(), true);
}

#[test]
fn mim_loss_is_the_official_mean_over_all_pixels() {
    let dev = Default::default();
    let (n, p, g) = (2, 4, 8);
    let pred = Tensor::<B, 3>::random([n, g * g, p * p * 3], Distribution::Default, &dev);
    let imgs = Tensor::<B, 4>::random([n, 3, g * p, g * p], Distribution::Default, &dev);
    let mask = Tensor::<B, 2>::random([n, g * g], Distribution::Bernoulli(0.75), &dev);
    let got = scalar(mim_loss(pred.clone(), patchify(imgs.clone(), p), mask.clone(), false));
    // Official: kron(mask, ones(p, p)) on the pixels, mean over N·3·S·S.
    let rec = unpatchify(pred, p).into_data().to_vec::<f32>().unwrap();
    let img = imgs.into_data().to_vec::<f32>().unwrap();
    let m = mask.into_data().to_vec::<f32>().unwrap();
    let s = g * p;
    let mut sum = 0.0f64;
    for i in 0..n * 3 * s * s {
        let (b, y, x) = (i / (3 * s * s), (i / s) % s, i % s);
        let pm = f64::from(m[b * g * g + (y / p) * g + x / p]);
        sum += (f64::from(rec[i]) * pm - f64::from(img[i]) * pm).powi(2);
    }
    let want = sum / (n * 3 * s * s) as f64;
    assert!((got - want).abs() < 1e-5 * want.max(1.0), "{got} vs {want}");
}

#[test]
fn sr_loss_ignores_pixels_outside_the_window() {
    let dev = Default::default();
    let (n, g, side) = (2, 8, 64);
    let windows = [(0, 0), (5, 2)]; // the second clips at the grid edge: rows 5..8
    let mask = window_mask(&windows, g, 6);
    assert_eq!(mask[..g * g].iter().sum::<f32>(), 36.0);
    assert_eq!(mask[g * g..].iter().sum::<f32>(), 18.0);
    let window = Tensor::<B, 3>::from_data(TensorData::new(mask.clone(), [n, g, g]), &dev);
    let sr = Tensor::<B, 4>::random([n, 3, side, side], Distribution::Default, &dev);
    let big = Tensor::<B, 4>::random([n, 3, side, side], Distribution::Default, &dev);
    let base = scalar(sr_loss(sr.clone(), big.clone(), window.clone()));
    let cell = side / g;
    let mut target = big.into_data().to_vec::<f32>().unwrap();
    let (mut inside, mut outside) = (None, None);
    for (i, v) in target.iter_mut().enumerate() {
        let (b, y, x) = (i / (3 * side * side), (i / side) % side, i % side);
        if mask[b * g * g + (y / cell) * g + x / cell] == 0.0 {
            *v += 10.0; // every pixel outside the windows
            outside.get_or_insert(i);
        } else {
            inside.get_or_insert(i);
        }
    }
    let moved = Tensor::<B, 4>::from_data(TensorData::new(target.clone(), [n, 3, side, side]), &dev);
    assert_eq!(scalar(sr_loss(sr.clone(), moved, window.clone())), base);
    target[inside.unwrap()] += 10.0;
    let moved = Tensor::<B, 4>::from_data(TensorData::new(target, [n, 3, side, side]), &dev);
    assert!(scalar(sr_loss(sr, moved, window)) > base + 1e-4);
    assert!(outside.is_some());
}

#[test]
fn mlm_weights_scale_each_positions_cross_entropy() {
    let dev = Default::default();
    let (n, t, v) = (2, 6, 11);
    let logits = Tensor::<B, 3>::random([n, t, v], Distribution::Normal(0.0, 2.0), &dev);
    let labels = Tensor::<B, 2, Int>::from_data(
        TensorData::new((0..(n * t) as i64).map(|i| i % 11).collect::<Vec<_>>(), [n, t]),
        &dev,
    );
    let ce = token_cross_entropy(logits.clone(), labels.clone());
    // Cross-entropy by hand at one position.
    let lg = logits.into_data().to_vec::<f32>().unwrap();
    let row = &lg[(t + 2) * v..(t + 3) * v];
    let lse = row.iter().map(|&x| f64::from(x).exp()).sum::<f64>().ln();
    let ce_pos = lse - f64::from(row[(t + 2) % 11]);
    let mut w = vec![0.0f32; n * t];
    w[t + 2] = 3.0;
    let weights = Tensor::<B, 2>::from_data(TensorData::new(w.clone(), [n, t]), &dev);
    let got = scalar(mlm_loss(ce.clone(), weights, None));
    assert!((got - 3.0 * ce_pos / (n * t) as f64).abs() < 1e-5, "{got} vs {ce_pos}");
    // Uniform weights 1 = plain mean; doubling every weight doubles the loss.
    let ones = scalar(mlm_loss(ce.clone(), Tensor::ones([n, t], &dev), None));
    let twos = scalar(mlm_loss(ce.clone(), Tensor::ones([n, t], &dev).mul_scalar(2.0), None));
    assert!((twos - 2.0 * ones).abs() < 1e-6 && (ones - scalar(ce.clone().mean())).abs() < 1e-6);
    // Masked-only: the weighted CE over the marked positions, divided by their number.
    let weights = Tensor::<B, 2>::from_data(TensorData::new(w, [n, t]), &dev);
    let marked = weights.clone().greater_elem(0.0).float();
    let got = scalar(mlm_loss(ce, weights, Some(marked)));
    assert!((got - 3.0 * ce_pos).abs() < 1e-4, "{got}");
}

#[test]
fn cross_entropy_gradient_is_softmax_minus_onehot() {
    let dev = Default::default();
    let (n, t, v) = (2, 3, 7);
    // Large logits: the stabilising max must not change the value or the gradient.
    let raw = Tensor::<B, 3>::random([n, t, v], Distribution::Normal(40.0, 5.0), &dev);
    let lg = raw.to_data().to_vec::<f32>().unwrap();
    let labels_v: Vec<i64> = (0..(n * t) as i64).map(|i| (i * 3) % v as i64).collect();
    let labels = Tensor::<A, 2, Int>::from_data(TensorData::new(labels_v.clone(), [n, t]), &dev);
    let logits = Tensor::<A, 3>::from_data(raw.into_data(), &dev).require_grad();
    let ce = token_cross_entropy(logits.clone(), labels);
    let values = ce.clone().into_data().to_vec::<f32>().unwrap();
    let grads = ce.sum().backward();
    let grad = logits.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
    for (pos, &label) in labels_v.iter().enumerate() {
        let row: Vec<f64> = lg[pos * v..(pos + 1) * v].iter().map(|&x| f64::from(x)).collect();
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = row.iter().map(|x| (x - m).exp()).sum();
        let expect = z.ln() + m - row[label as usize];
        assert!((f64::from(values[pos]) - expect).abs() < 1e-4, "{} vs {expect}", values[pos]);
        for (k, x) in row.iter().enumerate() {
            let want = (x - m).exp() / z - if k == label as usize { 1.0 } else { 0.0 };
            let got = f64::from(grad[pos * v + k]);
            assert!((got - want).abs() < 1e-5, "position {pos}, class {k}: {got} vs {want}");
        }
    }
}

#[test]
fn every_loss_reaches_the_encoder() {
    let dev = Default::default();
    let c = tiny();
    let model = c.init::<A>(&dev);
    let x = batch(&c, 2, &dev);
    for name in ["mim", "sr", "mlm"] {
        // A graph is consumed by its backward pass: one forward per loss.
        let losses = model.forward(x.clone());
        let loss = match name {
            "mim" => losses.mim,
            "sr" => losses.sr,
            _ => losses.mlm,
        };
        let grads = loss.backward();
        let g = model.encoder.patch_embed.proj.weight.grad(&grads).expect("encoder gradient");
        let norm = scalar(g.abs().sum());
        assert!(norm > 0.0, "{name} does not reach the encoder");
        // The fixed position table never gets a gradient.
        assert!(model.encoder.pos_embed.grad(&grads).is_none(), "{name}");
    }
}

#[test]
fn forward_is_deterministic() {
    let dev = Default::default();
    let c = tiny();
    let model = c.init::<B>(&dev);
    let x = batch(&c, 2, &dev);
    let a = model.forward(x.clone());
    let b = model.forward(x);
    for (p, q) in [(a.mim, b.mim), (a.sr, b.sr), (a.mlm, b.mlm)] {
        assert_eq!(scalar(p).to_bits(), scalar(q).to_bits());
    }
}

#[test]
fn sr_upsampling_matches_torch_bilinear() {
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
    let dev = Default::default();
    let x = Tensor::<B, 4>::random([2, 3, 5, 7], Distribution::Default, &dev);
    let ours = ecamp_model::net::sr::upsample2x_bilinear(x.clone());
    let options = InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false);
    let theirs = interpolate(x, [10, 14], options);
    let diff = scalar((ours - theirs).abs().max().reshape([1]));
    assert!(diff < 1e-6, "{diff}");
}

#[test]
fn patch_embedding_matmul_equals_the_strided_convolution() {
    let dev = Default::default();
    let model = tiny().init::<B>(&dev);
    let imgs = Tensor::<B, 4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &dev);
    let ours = model.encoder.patch_embed.forward(imgs.clone());
    let conv = model.encoder.patch_embed.proj.forward(imgs); // [n, d, g, g]
    let [n, d, g, _] = conv.dims();
    let conv = conv.reshape([n, d, g * g]).swap_dims(1, 2);
    let diff = scalar((ours - conv).abs().max().reshape([1]));
    assert!(diff < 1e-5, "{diff}");
}
