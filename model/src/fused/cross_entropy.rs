//! The MLM head's last layer fused with its loss: logits, per-position cross-entropy and the
//! closed-form gradient, computed once in the forward pass.
//!
//! Autodiff through `log_softmax` and `gather` keeps half a dozen `[n·T, V]` tensors alive and
//! walks each of them again backwards: on the CPU the 5,000-way head and its loss cost ~110 ms
//! of a ~240 ms tiny step, against ~45 ms for PyTorch's fused kernels. The loss's gradient with
//! respect to the logits is known, `coef · (softmax − onehot)`.

use burn::nn::Linear;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData, backend::Backend};

use super::{constant, on_host, read, with_gradient};
use crate::net::autocast;

/// The loss's gradients, detached: per-position cross-entropy `ce [n, T]`, and with
/// `G = ∂loss/∂logits [n·T, V]`: `dh = G·Wᵀ [n·T, d]`, `dw = hᵀ·G [d, V]`, `db = Σ G [V]`.
struct Grads<B: Backend> {
    ce: Tensor<B, 2>,
    dh: Tensor<B, 2>,
    dw: Tensor<B, 2>,
    db: Tensor<B, 1>,
}

/// `decoder` applied to the transformed hidden states `h [n, T, d]`, the per-position
/// cross-entropy against `labels [n, T]`, and the loss `value(ce)` whose derivative with respect
/// to `ce` is `coef [n, T]` (see [`crate::loss::mlm_coefficients`]). Returns the loss, carrying
/// the gradient of `Σ coef · ce` to `h` and the decoder's parameters, and the detached `ce`.
///
/// The gradients reach `h`, `W` and `b` through the surrogate `Σ h·dh + Σ W·dw + Σ b·db` (see
/// [`with_gradient`]). Under autocast the logits and both products compute in the half dtype,
/// as torch's autocast backward would.
pub fn decoder_cross_entropy<B: Backend>(
    decoder: &Linear<B>,
    h: Tensor<B, 3>,
    labels: Tensor<B, 2, Int>,
    coef: Tensor<B, 2>,
    value: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 1>,
) -> (Tensor<B, 1>, Tensor<B, 2>) {
    let [n, t, d] = h.dims();
    let weight = decoder.weight.val();
    let bias = decoder.bias.as_ref().map(|b| b.val());
    let ops = Operands {
        h: constant(h.clone()).reshape([n * t, d]),
        w: constant(weight.clone()),
        b: bias.clone().map(constant),
        labels,
        coef: constant(coef),
    };
    let host = if on_host::<B>() { host(ops.clone()) } else { None };
    let Grads { ce, dh, dw, db } = host.unwrap_or_else(|| device(ops));

    let mut surrogate = (h * dh.reshape([n, t, d])).sum() + (weight * dw).sum();
    if let Some(b) = bias {
        surrogate = surrogate + (b * db).sum();
    }
    (with_gradient(value(ce.clone()), surrogate), ce)
}

/// The untracked inputs: `h [n·T, d]`, the decoder's `w [d, V]` and `b [V]`, `labels [n, T]`,
/// `coef [n, T]`.
#[derive(Clone)]
struct Operands<B: Backend> {
    h: Tensor<B, 2>,
    w: Tensor<B, 2>,
    b: Option<Tensor<B, 1>>,
    labels: Tensor<B, 2, Int>,
    coef: Tensor<B, 2>,
}

/// [`Grads`] from tensor ops on any backend.
fn device<B: Backend>(Operands { h, w, b, labels, coef }: Operands<B>) -> Grads<B> {
    let [n, t] = labels.dims();
    let logits = autocast::affine(h.clone(), w.clone(), b);
    let max = logits.clone().max_dim(1);
    let exp = (logits.clone() - max.clone()).exp();
    let sum = exp.clone().sum_dim(1);
    let idx = labels.reshape([n * t, 1]);
    let target = logits.gather(1, idx.clone());
    let ce = (sum.clone().log() + max - target).reshape([n, t]);
    let c = coef.reshape([n * t, 1]);
    let grad = (exp * c.clone().div(sum)).scatter(1, idx, c.neg(), IndexingUpdateOp::Add);
    let dh = autocast::matmul(grad.clone(), w.transpose());
    let dw = autocast::matmul(h.transpose(), grad.clone());
    Grads { ce, dh, dw, db: grad.sum_dim(0).squeeze_dim(0) }
}

/// [`Grads`] computed on the host: the logits, one pass per row for the softmax, and both
/// products straight from the gradient buffer (strided, so no transposed copies), without
/// the `[n·T, V]` tensors ever becoming tensors. For backends that keep tensors in host memory,
/// where reading them costs a copy at most. `None` if a tensor does not read back as the
/// expected element type; the caller then takes the tensor-op path.
fn host<B: Backend>(Operands { h, w, b, labels, coef }: Operands<B>) -> Option<Grads<B>> {
    let device = h.device();
    let ([n, t], [rows, d], v) = (labels.dims(), h.dims(), w.dims()[1]);
    let hv = read(h)?;
    let wv = read(w)?;
    let bias = match b {
        Some(b) => Some(read(b)?),
        None => None,
    };
    let labels = labels.into_data().convert::<i64>().into_vec::<i64>().ok()?;
    let coef = coef.into_data().into_vec::<f32>().ok()?;
    let mut z = vec![0.0f32; rows * v];
    gemm([rows, d, v], (&hv, [d, 1]), (&wv, [v, 1]), &mut z);
    let (ce, db) = softmax_cross_entropy_rows(&mut z, v, bias.as_deref(), &labels, &coef);
    let mut dh = vec![0.0f32; rows * d];
    gemm([rows, v, d], (&z, [v, 1]), (&wv, [1, v]), &mut dh);
    // dwᵀ = Gᵀ·h, so that the split runs over the long side.
    let mut dw_t = vec![0.0f32; v * d];
    gemm([v, rows, d], (&z, [1, v]), (&hv, [d, 1]), &mut dw_t);
    let tensor = |x: Vec<f32>, shape: [usize; 2]| Tensor::from_data(TensorData::new(x, shape), &device);
    Some(Grads {
        ce: tensor(ce, [n, t]),
        dh: tensor(dh, [rows, d]),
        dw: tensor(dw_t, [v, d]).transpose(),
        db: Tensor::from_data(TensorData::new(db, [v]), &device),
    })
}

/// `c [m, n] = a [m, k] · b [k, n]` with matrixmultiply (the kernel burn-ndarray uses), `a` and
/// `b` given with their (row, column) strides so that transposes cost nothing. Large products
/// are split by rows of `c` over [`gemm_threads`] threads: each element
/// is still accumulated by the same kernel in the same order, so the bits do not depend on
/// the split.
fn gemm(dims: [usize; 3], a: (&[f32], [usize; 2]), b: (&[f32], [usize; 2]), c: &mut [f32]) {
    let threads = if dims.iter().product::<usize>() < MIN_SPLIT_MACS { 1 } else { gemm_threads() };
    gemm_split(threads, dims, a, b, c);
}

/// [`gemm`] over `threads` row chunks.
fn gemm_split(
    threads: usize,
    [m, k, n]: [usize; 3],
    (a, sa): (&[f32], [usize; 2]),
    (b, sb): (&[f32], [usize; 2]),
    c: &mut [f32],
) {
    let span = |rows: usize, cols: usize, s: [usize; 2]| (rows - 1) * s[0] + (cols - 1) * s[1] + 1;
    assert!(m > 0 && k > 0 && n > 0, "gemm with an empty dimension");
    assert!(a.len() >= span(m, k, sa) && b.len() >= span(k, n, sb) && c.len() >= m * n, "gemm operands too short");
    let rows = m.div_ceil(threads.max(1));
    std::thread::scope(|scope| {
        let mut chunks = c[..m * n].chunks_mut(rows * n).enumerate();
        let first = chunks.next();
        for (i, c) in chunks {
            scope.spawn(move || gemm_rows(i * rows, c.len() / n, [k, n], (a, sa), (b, sb), c));
        }
        if let Some((_, c)) = first {
            gemm_rows(0, c.len() / n, [k, n], (a, sa), (b, sb), c);
        }
    });
}

/// Products smaller than this many multiply-adds stay on one thread (a spawn costs ~20 µs).
const MIN_SPLIT_MACS: usize = 1 << 24;

/// The most threads one product is split over.
const MAX_GEMM_THREADS: usize = 4;

/// Threads for one large product: `RAYON_NUM_THREADS` when set (the knob that sizes ndarray's
/// pool and that `ecamp bench model --threads` sets, so a comparison at N threads stays one),
/// else the machine's cores; at most [`MAX_GEMM_THREADS`].
fn gemm_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        let cores = || std::thread::available_parallelism().map_or(1, |n| n.get());
        let set = std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.trim().parse::<usize>().ok());
        set.filter(|&n| n > 0).unwrap_or_else(cores).clamp(1, MAX_GEMM_THREADS)
    })
}

/// Rows `r0 .. r0 + m` of the product into `c [m, n]` (bounds checked by [`gemm`]).
fn gemm_rows(
    r0: usize,
    m: usize,
    [k, n]: [usize; 2],
    (a, sa): (&[f32], [usize; 2]),
    (b, sb): (&[f32], [usize; 2]),
    c: &mut [f32],
) {
    let st = |s: usize| s as isize;
    // SAFETY: `gemm` checked that `a` holds rows up to its `m` with strides `sa`, `b` all of
    // `[k, n]` with `sb`, and `c` is this chunk's own `m · n` elements, exclusively borrowed.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr().add(r0 * sa[0]),
            st(sa[0]),
            st(sa[1]),
            b.as_ptr(),
            st(sb[0]),
            st(sb[1]),
            0.0,
            c.as_mut_ptr(),
            st(n),
            1,
        );
    }
}

/// Lanes of the row loops: independent accumulators the compiler keeps in one vector register,
/// summed in a fixed order (so results do not depend on alignment or threads).
const LANES: usize = 8;

/// For each row `i` of `z [rows, v]` (plus `bias`): the cross-entropy against `labels[i]`, and
/// in place the gradient `coef[i] · (softmax − onehot)`. Returns the cross-entropies and the
/// gradient's column sums. A label outside `0..v` makes that row's cross-entropy NaN.
///
/// With AVX2 the same code is compiled 8 lanes wide. Rust never contracts `a·b + c` into an
/// FMA, so both builds round identically and give the same bits.
fn softmax_cross_entropy_rows(
    z: &mut [f32],
    v: usize,
    bias: Option<&[f32]>,
    labels: &[i64],
    coef: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked on the line above.
        return unsafe { rows_avx2(z, v, bias, labels, coef) };
    }
    rows(z, v, bias, labels, coef)
}

/// [`rows`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn rows_avx2(z: &mut [f32], v: usize, bias: Option<&[f32]>, labels: &[i64], coef: &[f32]) -> (Vec<f32>, Vec<f32>) {
    rows(z, v, bias, labels, coef)
}

/// The body of [`softmax_cross_entropy_rows`].
#[inline(always)]
fn rows(z: &mut [f32], v: usize, bias: Option<&[f32]>, labels: &[i64], coef: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut ce = Vec::with_capacity(labels.len());
    let mut colsum = vec![0.0f32; v];
    for ((row, &label), &c) in z.chunks_exact_mut(v).zip(labels).zip(coef) {
        if let Some(bias) = bias {
            row.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
        }
        let target = usize::try_from(label).ok().and_then(|y| row.get(y).copied()).unwrap_or(f32::NAN);
        let max = lane_max(row);
        let sum = exp_shifted_sum(row, max);
        ce.push(sum.ln() + max - target);
        let scale = c / sum;
        for (x, s) in row.iter_mut().zip(colsum.iter_mut()) {
            *x *= scale;
            *s += *x;
        }
        if let Ok(y) = usize::try_from(label)
            && y < v
        {
            row[y] -= c;
            colsum[y] -= c;
        }
    }
    (ce, colsum)
}

/// The largest element (NaNs are passed over; they still poison the sum that follows).
#[inline(always)]
fn lane_max(row: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in m.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    rest.iter().chain(&m).fold(f32::NEG_INFINITY, |a, &x| if x > a { x } else { a })
}

/// Replaces each `x` by `exp(x − max)` and returns their sum.
#[inline(always)]
fn exp_shifted_sum(row: &mut [f32], max: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (a, x) in acc.iter_mut().zip(chunk.iter_mut()) {
            *x = exp(*x - max);
            *a += *x;
        }
    }
    let mut sum = 0.0;
    for x in chunks.into_remainder() {
        *x = exp(*x - max);
        sum += *x;
    }
    acc.iter().fold(sum, |s, a| s + a)
}

/// `eˣ` in f32 (Cephes' `expf`: rounding to the nearest power of two, a degree-6 polynomial on
/// `|r| ≤ ln2/2`), within 2 ulp of the exact value, written so the compiler vectorises it,
/// where the C library's `expf` is a scalar call. Results below 2⁻¹²⁶ are flushed to ~1.2e-38,
/// values above 88.7 saturate; NaN stays NaN.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LO: f32 = -87.3;
    const HI: f32 = 88.3;
    // 1.5 · 2²³: adding and subtracting it rounds to the nearest integer in the FPU.
    const ROUND: f32 = 12_582_912.0;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    let x = if x < LO { LO } else { x };
    let x = if x > HI { HI } else { x };
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let k = shifted - ROUND;
    let r = x - k * C1 - k * C2;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // `shifted`'s low mantissa bits hold k (two's complement); adding the exponent bias there
    // builds 2^k with integer ops, which vectorise where a float-to-int cast would not.
    let two_k = shifted.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23;
    y * f32::from_bits(two_k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::{mlm_coefficients, mlm_loss, token_cross_entropy};
    use burn::backend::{Autodiff, NdArray};
    use burn::nn::LinearConfig;
    use burn::tensor::Distribution;

    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let exact = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - exact).abs() / exact);
        }
        assert!(worst < 2.4e-7, "max relative error {worst:e}");
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-1e4) < 1.3e-38);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn split_products_are_bit_identical() {
        let (m, k, n) = (37, 301, 19);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 997.0 - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104_729) % 1000) as f32 / 991.0 - 0.5).collect();
        let product = |threads, a_strides| {
            let mut c = vec![0.0f32; m * n];
            gemm_split(threads, [m, k, n], (&a, a_strides), (&b, [n, 1]), &mut c);
            c
        };
        let one = product(1, [k, 1]);
        assert_eq!(one, product(3, [k, 1]));
        assert_eq!(one, product(8, [k, 1]));
        // `a` read transposed: element (r, j) at j·m + r.
        let (r, j) = (5, 17);
        let want: f32 = (0..k).map(|q| a[q * m + r] * b[q * n + j]).sum();
        let t = product(2, [1, m]);
        assert!((t[r * n + j] - want).abs() < 1e-4, "{} vs {want}", t[r * n + j]);
        let want: f32 = (0..k).map(|q| a[r * k + q] * b[q * n + j]).sum();
        assert!((one[r * n + j] - want).abs() < 1e-4);
    }

    #[test]
    fn row_max_and_sum_cover_the_remainder() {
        let mut row: Vec<f32> = (0..19).map(|i| (i as f32 * 0.37).sin()).collect();
        row[18] = 3.0;
        assert_eq!(lane_max(&row), 3.0);
        let want: f32 = row.iter().map(|x| (x - 3.0).exp()).sum();
        let got = exp_shifted_sum(&mut row, 3.0);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        assert_eq!(row[18], 1.0);
    }

    /// The fused loss must give the value and the gradients of the straightforward definition
    /// (log-softmax, gather, weighted mean), both with and without the masked-only correction,
    /// on the host path (ndarray) and on the tensor-op path.
    #[test]
    fn matches_autodiff_through_log_softmax() {
        type A = Autodiff<NdArray>;
        let dev = Default::default();
        let (n, t, d, v) = (3, 5, 8, 37);
        let decoder = LinearConfig::new(d, v).init::<A>(&dev);
        let h = Tensor::<A, 3>::random([n, t, d], Distribution::Normal(0.0, 2.0), &dev).require_grad();
        let labels: Vec<i64> = (0..n * t).map(|i| ((i * 11 + 3) % v) as i64).collect();
        let labels = Tensor::<A, 2, Int>::from_data(TensorData::new(labels, [n, t]), &dev);
        let weights = Tensor::<A, 2>::random([n, t], Distribution::Uniform(0.0, 2.0), &dev);
        let masked = Tensor::<A, 2>::from_data(
            TensorData::new((0..n * t).map(|i| (i % 3 == 0) as u8 as f32).collect::<Vec<_>>(), [n, t]),
            &dev,
        );
        for masked in [None, Some(masked)] {
            let reference = mlm_loss(
                token_cross_entropy(decoder.forward(h.clone()), labels.clone()),
                weights.clone(),
                masked.clone(),
            );
            let coef = mlm_coefficients(weights.clone(), masked.clone());
            let value = |ce| mlm_loss(ce, weights.clone(), masked.clone());
            let (fused, _) = decoder_cross_entropy(&decoder, h.clone(), labels.clone(), coef.clone(), value);
            // The tensor-op path (what CUDA takes) and the host path against the reference.
            let inputs = Operands {
                h: h.clone().inner().reshape([n * t, d]),
                w: decoder.weight.val().inner(),
                b: decoder.bias.as_ref().map(|b| b.val().inner()),
                labels: labels.clone().inner(),
                coef: coef.clone().inner(),
            };
            let ops = device(inputs.clone());
            let host = host(inputs).unwrap();
            let ce_ref = token_cross_entropy(decoder.forward(h.clone()), labels.clone()).inner();
            ops.ce.into_data().assert_approx_eq::<f32>(&ce_ref.clone().into_data(), Default::default());
            host.ce.into_data().assert_approx_eq::<f32>(&ce_ref.into_data(), Default::default());
            ops.dh.into_data().assert_approx_eq::<f32>(&host.dh.into_data(), Default::default());
            ops.dw.into_data().assert_approx_eq::<f32>(&host.dw.into_data(), Default::default());
            ops.db.into_data().assert_approx_eq::<f32>(&host.db.into_data(), Default::default());

            let (r, f) = (reference.clone().into_scalar(), fused.clone().into_scalar());
            assert!((r - f).abs() <= 1e-6 * r.abs(), "loss {f} vs {r}");
            let (gr, gf) = (reference.backward(), fused.backward());
            let close = |a: Tensor<NdArray, 2>, b: Tensor<NdArray, 2>| {
                let err = (a.clone() - b).abs().max().into_scalar();
                let scale = a.abs().max().into_scalar();
                assert!(err <= 1e-5 * scale, "gradient off by {err} (scale {scale})");
            };
            close(decoder.weight.grad(&gr).unwrap(), decoder.weight.grad(&gf).unwrap());
            close(h.grad(&gr).unwrap().reshape([n * t, d]), h.grad(&gf).unwrap().reshape([n * t, d]));
            let bias = decoder.bias.as_ref().unwrap();
            close(bias.grad(&gr).unwrap().unsqueeze(), bias.grad(&gf).unwrap().unsqueeze());
        }
    }
}
