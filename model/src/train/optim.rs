//! AdamW with timm's `add_weight_decay` groups, and torch's global-norm gradient clipping.

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, SimpleOptimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};

use super::TrainConfig;
use crate::ecamp::Ecamp;

/// AdamW whose weight decay skips 1-D parameters (biases, norms), as timm's
/// `add_weight_decay(skip ndim == 1 or *.bias)` does: in burn every bias is 1-D, and every
/// parameter with ≥ 2 dimensions (weights, tokens, embedding tables) is decayed.
#[derive(Clone)]
pub struct TimmAdamW {
    decay: AdamW,
    no_decay: AdamW,
}

impl TimmAdamW {
    /// The optimizer of `c` (β, ε, decay).
    pub fn new(c: &TrainConfig) -> Self {
        let base =
            AdamWConfig::new().with_beta_1(c.beta1 as f32).with_beta_2(c.beta2 as f32).with_epsilon(c.eps as f32);
        Self {
            decay: base.clone().with_weight_decay(c.weight_decay as f32).build(),
            no_decay: base.with_weight_decay(0.0).build(),
        }
    }

    /// Wrapped for a module, as burn's optimizers are used.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(self) -> OptimizerAdaptor<Self, M, B> {
        OptimizerAdaptor::from(self)
    }
}

impl<B: Backend> SimpleOptimizer<B> for TimmAdamW {
    type State<const D: usize> = <AdamW as SimpleOptimizer<B>>::State<D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let inner = if D >= 2 { &self.decay } else { &self.no_decay };
        inner.step(lr, tensor, grad, state)
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <AdamW as SimpleOptimizer<B>>::to_device(state, device)
    }
}

/// The optimizer of an [`Ecamp`] model.
pub type Optim<B> = OptimizerAdaptor<TimmAdamW, Ecamp<B>, B>;

/// Scales every gradient by `max_norm / (‖g‖₂ + 1e-6)` when the global norm exceeds `max_norm`
/// (torch `clip_grad_norm_`). Returns the norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let mut sum = SquaredSum::<B> { grads, total: None };
    module.visit(&mut sum);
    let norm = sum.total.map_or(0.0, |t| t.into_scalar().elem::<f64>()).sqrt();
    if norm > max_norm {
        let mut scale = Scale::<B> { grads, factor: max_norm / (norm + 1e-6), _b: Default::default() };
        module.visit(&mut scale);
    }
    norm
}

/// Sums the squares of every gradient (on the inner backend).
struct SquaredSum<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredSum<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s = g.powi_scalar(2).sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
}

/// Multiplies every gradient by a factor.
struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: f64,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let id: ParamId = param.id;
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(id) {
            self.grads.register(id, g.mul_scalar(self.factor));
        }
    }
}
