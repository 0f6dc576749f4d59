//! The model on burn's CUDA backend against the CPU: device-side augmentation against the f64
//! reference, the forward losses against ndarray with the same weights and batch, mixed
//! precision (bf16 autocast) against f32, and training steps that lower the loss in both
//! precisions. Built only with `--features cuda`; needs an NVIDIA GPU at run time. Prints the
//! measured errors (run with `--nocapture`; `BENCHMARKS.md` records them).
#![cfg(feature = "cuda")]

mod common;

use burn::backend::cuda::CudaDevice;
use burn::backend::{Autodiff, Cuda, NdArray};
use burn::module::Module;
use burn::optim::{GradientsParams, Optimizer};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use common::{cases, max_abs};
use ecamp_model::net::autocast;
use ecamp_model::reference::augment_reference;
use ecamp_model::train::TrainConfig;
use ecamp_model::train::inputs::synthetic;
use ecamp_model::train::optim::TimmAdamW;
use ecamp_model::{Ecamp, EcampConfig, Inputs, Losses, Precision, SIDE_BIG, augment};

type G = Cuda;
type C = NdArray<f32>;

fn gpu() -> CudaDevice {
    match ecamp_model::cuda::device(0) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    }
}

fn tiny() -> EcampConfig {
    EcampConfig::tiny().with_hidden_dropout(0.0).with_attn_dropout(0.0)
}

/// The same tensor on another backend.
fn moved<const D: usize, K, From: Backend, To: Backend>(t: Tensor<From, D, K>, dev: &To::Device) -> Tensor<To, D, K>
where
    K: burn::tensor::BasicOps<From> + burn::tensor::BasicOps<To>,
{
    Tensor::from_data(t.into_data(), dev)
}

fn move_inputs<From: Backend, To: Backend>(x: Inputs<From>, dev: &To::Device) -> Inputs<To> {
    Inputs {
        big: moved(x.big, dev),
        imgs: x.imgs.map(|t| moved(t, dev)),
        noise: moved(x.noise, dev),
        ids: moved(x.ids, dev),
        labels: moved(x.labels, dev),
        attention: moved(x.attention, dev),
        weights: moved(x.weights, dev),
        window: moved(x.window, dev),
    }
}

/// The same weights on another backend, through burn's full-precision record bytes.
fn move_model<From: Backend, To: Backend>(m: Ecamp<From>, config: &EcampConfig, dev: &To::Device) -> Ecamp<To> {
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let bytes = recorder.record(m.into_record(), ()).unwrap();
    config.init::<To>(dev).load_record(recorder.load(bytes, dev).unwrap())
}

fn values<Bk: Backend>(l: &Losses<Bk>) -> [f64; 4] {
    [&l.mim, &l.sr, &l.mlm, &l.mlm_masked].map(|t| t.clone().into_data().convert::<f64>().to_vec::<f64>().unwrap()[0])
}

fn max_rel(a: [f64; 4], b: [f64; 4]) -> f64 {
    a.iter().zip(&b).map(|(x, y)| (x - y).abs() / y.abs().max(1e-12)).fold(0.0, f64::max)
}

/// A model and a batch on one backend.
type Pair<Bk> = (Ecamp<Bk>, Inputs<Bk>);

/// A CPU model and batch (seeded), and the same on the GPU.
fn pair(n: usize) -> (Pair<C>, Pair<G>) {
    let c = tiny();
    let cpu = Default::default();
    C::seed(&cpu, 7);
    let model = c.init::<C>(&cpu);
    let inputs = synthetic::<C>(&c, n, &cpu);
    let on_gpu = (move_model::<C, G>(model.clone(), &c, &gpu()), move_inputs::<C, G>(inputs.clone(), &gpu()));
    ((model, inputs), on_gpu)
}

#[test]
fn augment_on_cuda_matches_the_reference() {
    // f32 on the GPU with fused multiply-adds: a little looser than the CPU's 4e-6, still three
    // orders of magnitude below one u8 step (0.0129).
    const TOLERANCE: f64 = 2e-5;
    for case in cases() {
        let (big, small) = augment::<G>(&gpu(), &case.canvases(), SIDE_BIG).unwrap();
        let (want_big, want_small) = augment_reference(&case.canvases(), SIDE_BIG).unwrap();
        let big = big.into_data().convert::<f32>().into_vec::<f32>().unwrap();
        let small = small.into_data().convert::<f32>().into_vec::<f32>().unwrap();
        let (eb, es) = (max_abs(&big, &want_big), max_abs(&small, &want_small));
        println!("cuda augment {}x{} n={}: max |err| big {eb:.3e}, imgs {es:.3e}", case.h, case.w, case.n);
        assert!(eb < TOLERANCE && es < TOLERANCE, "big {eb}, imgs {es}");
    }
}

#[test]
fn forward_on_cuda_matches_ndarray() {
    let ((cm, ci), (gm, gi)) = pair(4);
    let want = values(&cm.forward(ci));
    let got = values(&gm.forward(gi));
    let rel = max_rel(got, want);
    println!("cuda f32 forward vs ndarray: losses {got:?} vs {want:?}, max rel err {rel:.3e}");
    // cubecl may run f32 matmuls on tensor cores in TF32 (10-bit mantissa, ~5e-4 per product):
    // the bound allows that, and still catches a wrong kernel or layout (errors of order 1).
    assert!(rel < 5e-3, "{got:?} vs {want:?}");
}

#[test]
fn bf16_autocast_stays_close_to_f32_and_is_not_f32() {
    let (_, (gm, gi)) = pair(4);
    let f32_losses = values(&gm.forward(gi.clone()));
    for (precision, bound) in [(Precision::Bf16, 5e-2), (Precision::F16, 1e-2)] {
        let half = {
            let _scope = autocast::scope(precision);
            values(&gm.forward(gi.clone()))
        };
        let rel = max_rel(half, f32_losses);
        println!("cuda {} autocast vs f32: losses {half:?} vs {f32_losses:?}, max rel err {rel:.3e}", precision.name());
        assert!(half.iter().all(|v| v.is_finite()));
        assert!(rel < bound, "{} drifts: {rel}", precision.name());
        // The matmuls really ran in the half dtype: the losses moved.
        assert!(rel > 0.0, "{} gave bit-identical losses: the autocast did nothing", precision.name());
    }
}

#[test]
fn training_on_cuda_lowers_the_losses_in_f32_and_bf16() {
    type A = Autodiff<G>;
    let c = tiny();
    for precision in [Precision::F32, Precision::Bf16] {
        let dev = gpu();
        A::seed(&dev, 3);
        let mut model = c.init::<A>(&dev);
        let mut optim = TimmAdamW::new(&TrainConfig::tiny()).init::<A, Ecamp<A>>();
        let batches: Vec<_> = (0..2).map(|_| synthetic::<A>(&c, 8, &dev)).collect();
        let mut history = Vec::new();
        for step in 0..60 {
            let losses = {
                let _scope = autocast::scope(precision);
                model.forward(batches[step % 2].clone())
            };
            history.push(values(&losses));
            let grads = GradientsParams::from_grads(losses.total.backward(), &model);
            model = optim.step(2e-3, model, grads);
        }
        let mean =
            |r: std::ops::Range<usize>, k: usize| history[r.clone()].iter().map(|v| v[k]).sum::<f64>() / r.len() as f64;
        let (first, last) = ([0, 1, 2].map(|k| mean(0..4, k)), [0, 1, 2].map(|k| mean(56..60, k)));
        println!("cuda {} training, 60 steps: mim/sr/mlm {first:?} → {last:?}", precision.name());
        assert!(history.iter().flatten().all(|v| v.is_finite()));
        for (k, name) in ["mim", "sr", "mlm"].into_iter().enumerate() {
            assert!(last[k] < first[k], "{}: {name} did not fall ({} → {})", precision.name(), first[k], last[k]);
        }
    }
}

#[test]
fn cuda_supports_the_half_precisions() {
    for p in [Precision::F32, Precision::Bf16, Precision::F16] {
        assert!(p.supported::<G>(&gpu()), "{} unsupported", p.name());
    }
}
