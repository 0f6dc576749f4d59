//! The super-resolution head fused with the SR loss.
//!
//! The head is tiny (two 3×3 convolutions over 3 channels, 168 parameters) but runs at the big
//! resolution: through burn-ndarray's autodiff its forward and backward took ~45 ms of a ~160 ms
//! tiny CPU step (nine sliced copies per convolution, each with a zero-filled gradient buffer
//! of the padded image backwards). On the host the same arithmetic, forward and backward, is a
//! few contiguous multiply-add loops per sample.

use burn::tensor::{Tensor, TensorData, backend::Backend};

use super::{constant, on_host, read, with_gradient};
use crate::loss::sr_loss;
use crate::net::sr::SuperResolution;

/// `head` applied to `rec [n, C, S, S]` and the SR loss of its output against
/// `big [n, C, 2S, 2S]` inside `window [n, g, g]` (see [`sr_loss`]). Returns the loss, carrying
/// its gradients to `rec` and the head's parameters, and the (untracked on the host path)
/// super-resolved image.
pub fn super_resolution_loss<B: Backend>(
    head: &SuperResolution<B>,
    rec: Tensor<B, 4>,
    big: Tensor<B, 4>,
    window: Tensor<B, 3>,
) -> (Tensor<B, 1>, Tensor<B, 4>) {
    if on_host::<B>()
        && let Some(out) = host(head, rec.clone(), big.clone(), window.clone())
    {
        return out;
    }
    let sr = head.forward(rec);
    (sr_loss(sr.clone(), big, window), sr)
}

/// The host path; `None` for shapes it does not handle (then autodiff does the work).
fn host<B: Backend>(
    head: &SuperResolution<B>,
    rec: Tensor<B, 4>,
    big: Tensor<B, 4>,
    window: Tensor<B, 3>,
) -> Option<(Tensor<B, 1>, Tensor<B, 4>)> {
    let device = rec.device();
    let [n, c, s, sw] = rec.dims();
    let [_, g, gw] = window.dims();
    let (w1, w2) = (head.conv1.weight.val(), head.conv2.weight.val());
    let side = 2 * s;
    let shapes_ok = s == sw
        && big.dims() == [n, c, side, side]
        && window.dims()[0] == n
        && g == gw
        && g > 0
        && side.is_multiple_of(g)
        && w1.dims() == [c, c, 3, 3]
        && w2.dims() == [c, c, 3, 3];
    if !shapes_ok {
        return None;
    }
    let bias = |b: &Option<burn::module::Param<Tensor<B, 1>>>| match b {
        Some(b) => read(b.val()),
        None => Some(vec![0.0; c]),
    };
    let net = Net {
        c,
        w1: read(w1.clone())?,
        b1: bias(&head.conv1.bias)?,
        w2: read(w2.clone())?,
        b2: bias(&head.conv2.bias)?,
        final_relu: head.final_relu,
    };
    let (rv, bv, wv) = (read(rec.clone())?, read(big)?, read(window)?);
    let out = net.run(&rv, &bv, &wv, [n, s, g]);

    let tensor4 = |x: Vec<f32>, shape: [usize; 4]| Tensor::<B, 4>::from_data(TensorData::new(x, shape), &device);
    let tensor1 = |x: Vec<f32>| Tensor::<B, 1>::from_data(TensorData::new(x, [c]), &device);
    let mut surrogate = (rec * tensor4(out.d_rec, [n, c, s, s])).sum()
        + (w1 * tensor4(out.d_w1, [c, c, 3, 3])).sum()
        + (w2 * tensor4(out.d_w2, [c, c, 3, 3])).sum();
    for (b, d) in [(&head.conv1.bias, out.d_b1), (&head.conv2.bias, out.d_b2)] {
        if let Some(b) = b {
            surrogate = surrogate + (b.val() * tensor1(d)).sum();
        }
    }
    let value = Tensor::<B, 1>::from_data(TensorData::new(vec![out.loss], [1]), &device);
    Some((with_gradient(value, surrogate), constant(tensor4(out.sr, [n, c, side, side]))))
}

/// The head's parameters on the host: `C → C` 3×3 convolutions, weights `[o][i][ky][kx]`.
struct Net {
    c: usize,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    final_relu: bool,
}

/// What one pass gives: the loss, the output image and every gradient.
struct Pass {
    loss: f32,
    sr: Vec<f32>,
    d_rec: Vec<f32>,
    d_w1: Vec<f32>,
    d_b1: Vec<f32>,
    d_w2: Vec<f32>,
    d_b2: Vec<f32>,
}

impl Net {
    /// Forward and backward over the batch: `rec [n, C, S, S]`, `big [n, C, 2S, 2S]`,
    /// `window [n, g, g]`. Samples run one after another and add into the parameter gradients in
    /// order, so the result does not depend on anything but the inputs.
    fn run(&self, rec: &[f32], big: &[f32], window: &[f32], [n, s, g]: [usize; 3]) -> Pass {
        let (c, side) = (self.c, 2 * s);
        let (plane, cells) = (side * side, side / g);
        let count = (n * c * plane) as f32;
        let mut pass = Pass {
            loss: 0.0,
            sr: vec![0.0; n * c * plane],
            d_rec: vec![0.0; n * c * s * s],
            d_w1: vec![0.0; c * c * 9],
            d_b1: vec![0.0; c],
            d_w2: vec![0.0; c * c * 9],
            d_b2: vec![0.0; c],
        };
        let mut buf = Buffers::new(c, side);
        let mut loss = 0.0f64;
        for i in 0..n {
            let rec = &rec[i * c * s * s..(i + 1) * c * s * s];
            // Forward: up = bilinear ×2, a1 = conv1(up), r1 = relu(a1), x = conv2(r1) + up.
            for ch in 0..c {
                let out = &mut buf.up[ch * plane..(ch + 1) * plane];
                upsample2x(&rec[ch * s * s..(ch + 1) * s * s], s, &mut buf.wide, out);
            }
            pad(&buf.up, c, side, &mut buf.up_pad);
            conv(&buf.up_pad, c, side, &self.w1, &self.b1, &mut buf.a1);
            buf.r1.iter_mut().zip(&buf.a1).for_each(|(r, &a)| *r = a.max(0.0));
            pad(&buf.r1, c, side, &mut buf.r1_pad);
            conv(&buf.r1_pad, c, side, &self.w2, &self.b2, &mut buf.x);
            buf.x.iter_mut().zip(&buf.up).for_each(|(x, u)| *x += u);

            // The loss and its gradient with respect to the output.
            let sr = &mut pass.sr[i * c * plane..(i + 1) * c * plane];
            let big = &big[i * c * plane..(i + 1) * c * plane];
            let win = &window[i * g * g..(i + 1) * g * g];
            for (k, ((out, &x), &target)) in sr.iter_mut().zip(&buf.x).zip(big).enumerate() {
                let (y, xx) = ((k % plane) / side / cells, (k % side) / cells);
                let wgt = win[y * g + xx];
                *out = if self.final_relu { x.max(0.0) } else { x };
                let diff = (*out - target) * wgt;
                loss += f64::from(diff * diff);
                let d_out = 2.0 * diff * wgt / count;
                // The final ReLU passes the gradient where its input was positive.
                buf.d_x[k] = if self.final_relu && x <= 0.0 { 0.0 } else { d_out };
            }

            // Backward through conv2 (its input r1), the ReLU, conv1 (its input up), and the
            // residual; then through the upsampling to `rec`.
            bias_grad(&buf.d_x, c, plane, &mut pass.d_b2);
            weight_grad(&buf.d_x, &buf.r1_pad, c, side, &mut pass.d_w2);
            input_grad(&buf.d_x, &self.w2, c, side, &mut buf.d_pad);
            for (k, d) in buf.d_a1.iter_mut().enumerate() {
                *d = if buf.a1[k] > 0.0 { buf.d_pad[padded_index(k, side)] } else { 0.0 };
            }
            bias_grad(&buf.d_a1, c, plane, &mut pass.d_b1);
            weight_grad(&buf.d_a1, &buf.up_pad, c, side, &mut pass.d_w1);
            input_grad(&buf.d_a1, &self.w1, c, side, &mut buf.d_pad);
            for (k, d) in buf.d_up.iter_mut().enumerate() {
                *d = buf.d_x[k] + buf.d_pad[padded_index(k, side)];
            }
            let d_rec = &mut pass.d_rec[i * c * s * s..(i + 1) * c * s * s];
            for ch in 0..c {
                let d = &mut d_rec[ch * s * s..(ch + 1) * s * s];
                upsample2x_adjoint(&buf.d_up[ch * plane..(ch + 1) * plane], s, &mut buf.wide, d);
            }
        }
        pass.loss = (loss / f64::from(count)) as f32;
        pass
    }
}

/// Per-sample scratch space, reused across the batch.
struct Buffers {
    up: Vec<f32>,
    up_pad: Vec<f32>,
    a1: Vec<f32>,
    r1: Vec<f32>,
    r1_pad: Vec<f32>,
    x: Vec<f32>,
    d_x: Vec<f32>,
    d_pad: Vec<f32>,
    d_a1: Vec<f32>,
    d_up: Vec<f32>,
    /// The half-upsampled `[s, 2s]` image of one channel.
    wide: Vec<f32>,
}

impl Buffers {
    fn new(c: usize, side: usize) -> Self {
        let (plane, padded) = (c * side * side, c * (side + 2) * (side + 2));
        Self {
            up: vec![0.0; plane],
            up_pad: vec![0.0; padded],
            a1: vec![0.0; plane],
            r1: vec![0.0; plane],
            r1_pad: vec![0.0; padded],
            x: vec![0.0; plane],
            d_x: vec![0.0; plane],
            d_pad: vec![0.0; padded],
            d_a1: vec![0.0; plane],
            d_up: vec![0.0; plane],
            wide: vec![0.0; side * side / 2],
        }
    }
}

/// Where element `k` of a `[c, side, side]` image sits in its padded `[c, side+2, side+2]` copy.
fn padded_index(k: usize, side: usize) -> usize {
    let (ch, y, x) = (k / (side * side), k / side % side, k % side);
    (ch * (side + 2) + y + 1) * (side + 2) + x + 1
}

/// `x [c, side, side]` into the interior of `out [c, side+2, side+2]` (the border stays zero).
fn pad(x: &[f32], c: usize, side: usize, out: &mut [f32]) {
    let wide = side + 2;
    for ch in 0..c {
        for y in 0..side {
            let at = ch * wide * wide + (y + 1) * wide + 1;
            out[at..at + side].copy_from_slice(&x[(ch * side + y) * side..][..side]);
        }
    }
}

/// `out[o][y][x] = b[o] + Σ_{i,ky,kx} w[o][i][ky][kx] · inp[i][y+ky][x+kx]` with `inp` padded
/// (`[c, side+2, side+2]`): the 3×3, padding-1 convolution, each tap a contiguous row update.
fn conv(inp: &[f32], c: usize, side: usize, w: &[f32], b: &[f32], out: &mut [f32]) {
    let wide = side + 2;
    for o in 0..c {
        let out = &mut out[o * side * side..(o + 1) * side * side];
        out.fill(b[o]);
        for i in 0..c {
            for (tap, &k) in w[(o * c + i) * 9..][..9].iter().enumerate() {
                let (ky, kx) = (tap / 3, tap % 3);
                for y in 0..side {
                    let src = &inp[i * wide * wide + (y + ky) * wide + kx..][..side];
                    out[y * side..(y + 1) * side].iter_mut().zip(src).for_each(|(o, s)| *o += k * s);
                }
            }
        }
    }
}

/// `db[o] += Σ_{y,x} g[o][y][x]`.
fn bias_grad(g: &[f32], c: usize, plane: usize, db: &mut [f32]) {
    for (o, d) in db.iter_mut().enumerate().take(c) {
        *d += lanes_sum(&g[o * plane..(o + 1) * plane]);
    }
}

/// `dw[o][i][ky][kx] += Σ_{y,x} g[o][y][x] · inp[i][y+ky][x+kx]` (`inp` padded).
fn weight_grad(g: &[f32], inp: &[f32], c: usize, side: usize, dw: &mut [f32]) {
    let wide = side + 2;
    for o in 0..c {
        for i in 0..c {
            for tap in 0..9 {
                let (ky, kx) = (tap / 3, tap % 3);
                let mut acc = 0.0f32;
                for y in 0..side {
                    let grow = &g[(o * side + y) * side..][..side];
                    let irow = &inp[i * wide * wide + (y + ky) * wide + kx..][..side];
                    acc += lanes_dot(grow, irow);
                }
                dw[(o * c + i) * 9 + tap] += acc;
            }
        }
    }
}

/// The convolution's input gradient, padded: `d[i][y+ky][x+kx] = Σ w[o][i][ky][kx] · g[o][y][x]`
/// into `d [c, side+2, side+2]` (overwritten).
fn input_grad(g: &[f32], w: &[f32], c: usize, side: usize, d: &mut [f32]) {
    let wide = side + 2;
    d.fill(0.0);
    for o in 0..c {
        for i in 0..c {
            for (tap, &k) in w[(o * c + i) * 9..][..9].iter().enumerate() {
                let (ky, kx) = (tap / 3, tap % 3);
                for y in 0..side {
                    let grow = &g[(o * side + y) * side..][..side];
                    let at = i * wide * wide + (y + ky) * wide + kx;
                    d[at..at + side].iter_mut().zip(grow).for_each(|(d, g)| *d += k * g);
                }
            }
        }
    }
}

/// Independent accumulators for the reductions, added in a fixed order: the compiler keeps them
/// in a vector register, and the result does not depend on alignment.
const LANES: usize = 8;

fn lanes_sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        acc.iter_mut().zip(chunk).for_each(|(a, v)| *a += v);
    }
    acc.iter().fold(rest, |s, a| s + a)
}

fn lanes_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let rest: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().fold(rest, |s, a| s + a)
}

/// One channel `x [s, s]` → `out [2s, 2s]` (`wide`: `[s, 2s]` scratch), as [`crate::net::sr::upsample2x_bilinear`] computes
/// it (width first, then height; `0.75·x[k] + 0.25·x[k∓1]`, the neighbour clamped), so the
/// values agree bit for bit.
fn upsample2x(x: &[f32], s: usize, wide: &mut [f32], out: &mut [f32]) {
    let side = 2 * s;
    for y in 0..s {
        let row = &x[y * s..(y + 1) * s];
        for k in 0..s {
            let base = row[k] * 0.75;
            wide[y * side + 2 * k] = base + row[k.saturating_sub(1)] * 0.25;
            wide[y * side + 2 * k + 1] = base + row[(k + 1).min(s - 1)] * 0.25;
        }
    }
    for k in 0..s {
        let (prev, next) = (k.saturating_sub(1), (k + 1).min(s - 1));
        for xx in 0..side {
            let base = wide[k * side + xx] * 0.75;
            out[2 * k * side + xx] = base + wide[prev * side + xx] * 0.25;
            out[(2 * k + 1) * side + xx] = base + wide[next * side + xx] * 0.25;
        }
    }
}

/// The adjoint of [`upsample2x`]: `d_out [2s, 2s]` → `d_x [s, s]` (overwritten; `wide` is
/// `[s, 2s]` scratch).
fn upsample2x_adjoint(d_out: &[f32], s: usize, wide: &mut [f32], d_x: &mut [f32]) {
    let side = 2 * s;
    wide.fill(0.0);
    for k in 0..s {
        let (prev, next) = (k.saturating_sub(1), (k + 1).min(s - 1));
        for xx in 0..side {
            let (even, odd) = (d_out[2 * k * side + xx], d_out[(2 * k + 1) * side + xx]);
            wide[k * side + xx] += 0.75 * (even + odd);
            wide[prev * side + xx] += 0.25 * even;
            wide[next * side + xx] += 0.25 * odd;
        }
    }
    d_x.fill(0.0);
    for y in 0..s {
        let row = &wide[y * side..(y + 1) * side];
        let d = &mut d_x[y * s..(y + 1) * s];
        for k in 0..s {
            let (even, odd) = (row[2 * k], row[2 * k + 1]);
            d[k] += 0.75 * (even + odd);
            d[k.saturating_sub(1)] += 0.25 * even;
            d[(k + 1).min(s - 1)] += 0.25 * odd;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::Distribution;

    type A = Autodiff<NdArray>;

    /// Loss, output and every gradient of the host path against autodiff through the head's
    /// tensor ops and `sr_loss`, with and without the final ReLU, on a window that leaves part
    /// of the image out.
    #[test]
    fn matches_autodiff_through_the_head() {
        let dev = Default::default();
        let (n, c, s, g) = (2, 3, 8, 4);
        let rec = Tensor::<A, 4>::random([n, c, s, s], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let big = Tensor::<A, 4>::random([n, c, 2 * s, 2 * s], Distribution::Normal(0.0, 1.0), &dev);
        let cells: Vec<f32> = (0..n * g * g).map(|k| ((k % g) < 3 && (k / g) % g >= 1) as u8 as f32).collect();
        let window = Tensor::<A, 3>::from_data(TensorData::new(cells, [n, g, g]), &dev);
        for final_relu in [true, false] {
            let head = SuperResolution::<A>::new(final_relu, &dev);
            // Each graph is built and differentiated before the next (a backward pass consumes it).
            let (lr, sr_r, gr) = {
                let sr = head.forward(rec.clone());
                let loss = sr_loss(sr.clone(), big.clone(), window.clone());
                (loss.clone().into_scalar(), sr.inner(), loss.backward())
            };
            let (lf, sr_f, gf) = {
                let (loss, sr) = host(&head, rec.clone(), big.clone(), window.clone()).expect("host path");
                (loss.clone().into_scalar(), sr.inner(), loss.backward())
            };
            assert!((lr - lf).abs() <= 1e-5 * lr.abs(), "loss {lf} vs {lr}");
            let err = (sr_r - sr_f).abs().max().into_scalar();
            assert!(err < 1e-5, "output off by {err}");
            let close = |a: Tensor<NdArray, 1>, b: Tensor<NdArray, 1>, what: &str| {
                let err = (a.clone() - b).abs().max().into_scalar();
                let scale = a.abs().max().into_scalar();
                assert!(scale > 0.0 && err <= 1e-4 * scale, "{what}: off by {err} (scale {scale})");
            };
            let flat = |t: Tensor<NdArray, 4>| t.reshape([-1]);
            close(flat(rec.grad(&gr).unwrap()), flat(rec.grad(&gf).unwrap()), "rec");
            for (conv, name) in [(&head.conv1, "conv1"), (&head.conv2, "conv2")] {
                close(flat(conv.weight.grad(&gr).unwrap()), flat(conv.weight.grad(&gf).unwrap()), name);
                let b = conv.bias.as_ref().unwrap();
                close(b.grad(&gr).unwrap(), b.grad(&gf).unwrap(), name);
            }
        }
    }

    #[test]
    fn upsampling_matches_the_tensor_version_bit_for_bit() {
        let dev = Default::default();
        let x = Tensor::<NdArray, 4>::random([1, 1, 5, 5], Distribution::Normal(0.0, 1.0), &dev);
        let want = crate::net::sr::upsample2x_bilinear(x.clone()).into_data().into_vec::<f32>().unwrap();
        let mut got = vec![0.0; 100];
        upsample2x(&x.into_data().into_vec::<f32>().unwrap(), 5, &mut [0.0; 50], &mut got);
        assert_eq!(got, want);
    }

    #[test]
    fn upsampling_adjoint_is_the_transpose() {
        // <U x, y> = <x, Uᵀ y> for random x, y.
        let s = 6;
        let x: Vec<f32> = (0..s * s).map(|k| ((k * 37) % 11) as f32 / 11.0 - 0.4).collect();
        let y: Vec<f32> = (0..4 * s * s).map(|k| ((k * 53) % 13) as f32 / 13.0 - 0.5).collect();
        let (mut ux, mut uty) = (vec![0.0; 4 * s * s], vec![0.0; s * s]);
        let mut wide = vec![0.0; 2 * s * s];
        upsample2x(&x, s, &mut wide, &mut ux);
        upsample2x_adjoint(&y, s, &mut wide, &mut uty);
        let lhs: f32 = ux.iter().zip(&y).map(|(a, b)| a * b).sum();
        let rhs: f32 = x.iter().zip(&uty).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-4, "{lhs} vs {rhs}");
    }
}
