//! `SetRbm`: a Bernoulli–Bernoulli restricted Boltzmann machine whose visible×hidden weights are
//! a [`SetLinear`] (so SET's mask, init, evolution and topology tools apply unchanged), and its
//! contrastive-divergence step.

use super::rng::FastRng;
use crate::data::BinaryBatch;
use crate::set_linear::{SetLinear, SetLinearConfig, Sparsity};
use crate::topology::TopologyError;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use std::sync::{Arc, Mutex};

/// Configuration of a [`SetRbm`].
#[derive(Config, Debug)]
pub struct SetRbmConfig {
    /// Visible units.
    pub n_visible: usize,
    /// Hidden units.
    pub n_hidden: usize,
    /// SET's ε: `round(ε (n_visible + n_hidden))` connections (ignored for `Dense`).
    #[config(default = 11.0)]
    pub epsilon: f64,
    /// Dense ("RBM"), fixed Erdős–Rényi ("RBMFixProb") or evolving ("SET-RBM") weights.
    #[config(default = "Sparsity::Set")]
    pub sparsity: Sparsity,
    /// Seed of the topology, the initial weights' draw order and the Gibbs sampler.
    #[config(default = 42)]
    pub seed: u64,
    /// Gibbs steps per update (CD-k; the paper uses 1, 3 and 10).
    #[config(default = 1)]
    pub cd_k: usize,
    /// Persistent CD: the negative chain continues from the previous update's fantasy
    /// particles instead of restarting at the data.
    #[config(default = false)]
    pub persistent: bool,
    /// Standard deviation of the initial weights, N(0, σ²) on the connections. The default 0.05
    /// is the authors' SET-RBM reference code (`randn / 20`); Hinton's practical guide uses 0.01.
    #[config(default = 0.05)]
    pub init_std: f64,
}

/// The Gibbs sampler state a [`SetRbm`] carries: CD-k settings, the random stream and the
/// persistent chain. Not saved in records; clones of a model share it.
#[derive(Clone)]
pub struct CdSampler {
    /// Gibbs steps per update.
    pub k: usize,
    /// Persistent CD.
    pub persistent: bool,
    state: Arc<Mutex<SamplerState>>,
}

struct SamplerState {
    rng: FastRng,
    chain: Option<Tensor<2>>,
    steps: u64,
}

impl std::fmt::Debug for CdSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CdSampler {{ k: {}, persistent: {} }}",
            self.k, self.persistent
        )
    }
}

impl CdSampler {
    /// A sampler for CD-`k` (PCD-`k` when `persistent`) seeded with `seed`.
    pub fn new(k: usize, persistent: bool, seed: u64) -> Self {
        Self {
            k: k.max(1),
            persistent,
            state: Arc::new(Mutex::new(SamplerState {
                rng: FastRng::new(seed, &[0xCD]),
                chain: None,
                steps: 0,
            })),
        }
    }

    /// The current persistent chain (fantasy particles), if any.
    pub fn chain(&self) -> Option<Tensor<2>> {
        self.state.lock().unwrap().chain.clone()
    }
}

/// A Bernoulli–Bernoulli RBM with SET-style sparse weights.
///
/// Energy `E(v, h) = −bᵀv − cᵀh − vᵀ(W ⊙ M)h` with `W ⊙ M` = [`SetLinear::masked_weight`]:
/// positions outside the mask are exactly zero and receive exactly zero update. Because the
/// weights are a `SetLinear`, `SetCallback::evolve` / `final_prune`, `layers::snapshot_layers`
/// and `layers::topology_summary` work on a `SetRbm` unchanged.
#[derive(Module, Debug)]
pub struct SetRbm {
    /// Visible→hidden weights `[n_visible, n_hidden]` (mask = SET topology); its bias is the
    /// hidden bias `c`.
    pub weights: SetLinear,
    /// Visible bias `b`, `[n_visible]`.
    pub visible_bias: Param<Tensor<1>>,
    /// CD settings, random stream and persistent chain.
    #[module(skip)]
    pub sampler: CdSampler,
}

impl SetRbmConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if self.n_visible == 0 || self.n_hidden == 0 {
            return Err(format!(
                "an RBM needs visible and hidden units, got {}×{}",
                self.n_visible, self.n_hidden
            ));
        }
        if self.cd_k == 0 {
            return Err("cd_k must be at least 1".into());
        }
        if !(self.init_std.is_finite() && self.init_std >= 0.0) {
            return Err(format!(
                "init_std must be finite and ≥ 0, got {}",
                self.init_std
            ));
        }
        Ok(())
    }

    /// Initialize a [`SetRbm`].
    ///
    /// # Panics
    /// On an invalid configuration (see [`try_init`](Self::try_init)).
    pub fn init(&self, device: &Device) -> SetRbm {
        self.try_init(device)
            .unwrap_or_else(|e| panic!("invalid SetRbmConfig: {e}"))
    }

    /// Initialize a [`SetRbm`]: weights N(0, `init_std`²) on the connections, biases zero (see
    /// [`SetRbm::with_visible_marginals`] for the usual data-dependent visible bias).
    pub fn try_init(&self, device: &Device) -> Result<SetRbm, String> {
        self.validate()?;
        let mut weights = SetLinearConfig::new(self.n_visible, self.n_hidden)
            .with_epsilon(self.epsilon)
            .with_sparsity(self.sparsity)
            .with_initializer(Initializer::Zeros)
            .with_seed(Some(self.seed))
            .try_init(device)
            .map_err(|e: TopologyError| e.to_string())?;
        // Weights drawn on the host from the seed (Burn's initializers use the backend's global
        // RNG, shared by every model in the process), then masked.
        let [nv, nh] = [self.n_visible, self.n_hidden];
        let mut rng = FastRng::new(self.seed, &[0x1417]);
        let values: Vec<f32> = rng
            .uniforms(2 * nv * nh)
            .chunks_exact(2)
            .map(|u| {
                // Box–Muller.
                let r = (-2.0 * (1.0 - u[0] as f64).ln()).sqrt();
                (self.init_std * r * (std::f64::consts::TAU * u[1] as f64).cos()) as f32
            })
            .collect();
        let w = Tensor::<2>::from_data(TensorData::new(values, [nv, nh]), device);
        let w = match &weights.mask {
            Some(m) => w * m.val(),
            None => w,
        };
        weights.weight = Param::from_tensor(w.detach());
        weights.bias = Some(Param::from_tensor(Tensor::zeros([nh], device)));
        Ok(SetRbm {
            weights,
            visible_bias: Param::from_tensor(Tensor::zeros([nv], device)),
            sampler: CdSampler::new(self.cd_k, self.persistent, self.seed),
        })
    }
}

/// The logistic function `σ(x) = 1 / (1 + e^−x)` as four elementwise ops (exact limits 0 and 1
/// for large |x|). On Burn's CPU backends this is 2–3× faster than
/// `burn::tensor::activation::sigmoid`, which goes through a numerically guarded log-space
/// formula that sampling does not need.
pub fn sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    (x.neg().exp() + 1.0).recip()
}

/// Numerically stable `softplus(x) = log(1 + eˣ) = max(x, 0) + log1p(e^−|x|)`.
pub fn softplus<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone().clamp_min(0.0) + x.abs().neg().exp().log1p()
}

/// Burn's autodiff frees graph entries that no tensor references any more only when a backward
/// pass runs (`cleanup_orphaned_entries`). CD training runs none, so the parameter leaves Burn's
/// optimizer creates at every update would pile up (about 4 KB per update, 0.6 MB per dna epoch;
/// measured). A backward pass through a fresh one-element tensor triggers that sweep;
/// [`SetRbm::cd_step`] runs it every 64 updates (a few microseconds).
pub fn release_orphaned_autodiff_nodes(device: &Device) {
    if device.is_autodiff() {
        let t = Tensor::<1>::zeros([1], device).require_grad();
        let _ = t.sum().backward();
    }
}

/// One contrastive-divergence step computed from a batch (see [`SetRbm::cd_step`]).
pub struct CdStep {
    /// The negated CD update `−ΔW ⊙ M, −Δb, −Δc` (batch means), keyed by the model's
    /// parameter ids: what Burn's optimizer takes as gradients.
    pub grads: GradientsParams,
    /// `p(v | h₀)` with `h₀` sampled from the data, `[batch, n_visible]`.
    pub reconstruction: Tensor<2>,
    /// Squared reconstruction error summed over the visible units, averaged over the batch,
    /// shape `[1]`.
    pub reconstruction_error: Tensor<1>,
}

impl SetRbm {
    /// Visible units.
    pub fn n_visible(&self) -> usize {
        self.weights.dims()[0]
    }

    /// Hidden units.
    pub fn n_hidden(&self) -> usize {
        self.weights.dims()[1]
    }

    /// Dense, FixProb or SET.
    pub fn sparsity(&self) -> Sparsity {
        self.weights.sparsity()
    }

    /// Connections (weights that may be non-zero).
    pub fn nnz(&self) -> usize {
        self.weights.nnz()
    }

    /// The hidden bias `c`.
    pub fn hidden_bias(&self) -> Tensor<1> {
        self.weights
            .bias
            .as_ref()
            .expect("a SetRbm's SetLinear has a bias")
            .val()
    }

    /// `(W ⊙ M, b, c)` without autodiff: what sampling and evaluation use.
    ///
    /// `W ⊙ M` is [`SetLinear::masked_weight`] computed on the non-autodiff tensors: on an
    /// autodiff device `masked_weight` records a graph node, and a node that is never consumed
    /// by a backward pass is never freed (CD runs no backward pass: one such node per update
    /// grew a 1,000-epoch run to 23 GB).
    pub fn parameters(&self) -> (Tensor<2>, Tensor<1>, Tensor<1>) {
        let w = self.weights.weight.val().inner();
        let w = match &self.weights.mask {
            Some(m) => w * m.val().inner(),
            None => w,
        };
        (
            w,
            self.visible_bias.val().inner(),
            self.hidden_bias().inner(),
        )
    }

    /// Sets the visible bias to `log(p / (1 − p))` of the given marginals (clamped to
    /// `[1e-3, 1 − 1e-3]`), as Hinton's practical guide recommends.
    pub fn with_visible_marginals(mut self, marginals: &[f64]) -> Self {
        assert_eq!(
            marginals.len(),
            self.n_visible(),
            "one marginal per visible unit"
        );
        let b: Vec<f32> = marginals
            .iter()
            .map(|&p| {
                let p = p.clamp(1e-3, 1.0 - 1e-3);
                (p / (1.0 - p)).ln() as f32
            })
            .collect();
        let n = b.len();
        self.visible_bias = self.visible_bias.map(|old| {
            let rg = old.is_require_grad();
            Tensor::from_data(TensorData::new(b, [n]), &old.device()).set_require_grad(rg)
        });
        self
    }

    /// `p(h = 1 | v) = σ(c + v(W ⊙ M))`, `[batch, n_hidden]`.
    pub fn hidden_probs(&self, v: Tensor<2>) -> Tensor<2> {
        let (w, _, c) = self.parameters();
        sigmoid(v.inner().matmul(w) + c.unsqueeze())
    }

    /// `p(v = 1 | h) = σ(b + h(W ⊙ M)ᵀ)`, `[batch, n_visible]`.
    pub fn visible_probs(&self, h: Tensor<2>) -> Tensor<2> {
        let (w, b, _) = self.parameters();
        sigmoid(h.inner().matmul(w.transpose()) + b.unsqueeze())
    }

    /// Free energy `F(v) = −bᵀv − Σⱼ softplus(cⱼ + (v(W ⊙ M))ⱼ)`, `[batch]`; `p(v) = e^−F(v) / Z`.
    pub fn free_energy(&self, v: Tensor<2>) -> Tensor<1> {
        let (w, b, c) = self.parameters();
        let v = v.inner();
        let n = v.dims()[0];
        let vis = v.clone().matmul(b.unsqueeze_dim(1)).reshape([n]);
        let hid = softplus(v.matmul(w) + c.unsqueeze())
            .sum_dim(1)
            .reshape([n]);
        (vis + hid).neg()
    }

    /// Mean-field reconstruction `p(v | p(h | v))` and its squared error (summed over the
    /// visible units, averaged over the batch; shape `[1]`). Deterministic.
    pub fn reconstruct(&self, v: Tensor<2>) -> (Tensor<2>, Tensor<1>) {
        let v = v.inner();
        let n = v.dims()[0].max(1);
        let r = self.visible_probs(self.hidden_probs(v.clone()));
        let err = (v - r.clone()).square().sum().div_scalar(n as f64);
        (r, err)
    }

    /// Replaces the CD settings and reseeds the sampler (the persistent chain is dropped).
    pub fn with_cd(mut self, k: usize, persistent: bool, seed: u64) -> Self {
        self.sampler = CdSampler::new(k, persistent, seed);
        self
    }

    /// One contrastive-divergence step (CD-k, or persistent CD-k) on the batch `v0`
    /// (`[batch, n_visible]`, values 0/1). The one CD implementation of the crate: the plain loop
    /// and Burn's `TrainStep` both call it.
    ///
    /// Positive phase: `p(h | v₀)`. Negative phase: `k` steps of block Gibbs sampling
    /// (sampled binary hidden and visible states) starting from `h₀ ~ p(h | v₀)` (CD) or from the
    /// persistent chain (PCD); the statistics use the final visible sample `v_k` and the hidden
    /// probabilities `p(h | v_k)`, as is standard. The update is
    /// `ΔW = (v₀ᵀp(h|v₀) − v_kᵀp(h|v_k)) / batch ⊙ M`, `Δb = mean(v₀ − v_k)`,
    /// `Δc = mean(p(h|v₀) − p(h|v_k))`; it is returned negated as gradients, so Burn's SGD with
    /// momentum and weight decay performs the paper's update `θ += lr·(Δθ − λθ) + μ·previous`.
    /// Masked positions get exactly zero (hence no momentum and, their weight being zero, no
    /// weight decay either).
    pub fn cd_step(&self, v0: Tensor<2>) -> CdStep {
        let (w, b, c) = self.parameters();
        let v0 = v0.inner();
        let [n, nv] = v0.dims();
        let wt = w.clone().transpose();
        let b2 = b.unsqueeze::<2>();
        let c2 = c.unsqueeze::<2>();
        let k = self.sampler.k.max(1);
        let mut st = self.sampler.state.lock().unwrap();
        st.steps += 1;
        if st.steps.is_multiple_of(64) {
            release_orphaned_autodiff_nodes(&self.visible_bias.val().device());
        }

        let ph0 = sigmoid(v0.clone().matmul(w.clone()) + c2.clone());
        let h0 = st.rng.bernoulli(ph0.clone());
        let recon = sigmoid(h0.clone().matmul(wt.clone()) + b2.clone());

        // Where the negative chain starts.
        let (mut h, mut first_pv, old_chain) = if self.sampler.persistent {
            let old = st.chain.take().map(|t| t.to_device(&v0.device()));
            let start = match &old {
                Some(ch) if ch.dims()[0] >= n => ch.clone().slice([0..n, 0..nv]),
                Some(ch) => {
                    let m = ch.dims()[0];
                    Tensor::cat(vec![ch.clone(), v0.clone().slice([m..n, 0..nv])], 0)
                }
                None => v0.clone(),
            };
            let ph = sigmoid(start.matmul(w.clone()) + c2.clone());
            (st.rng.bernoulli(ph), None, old)
        } else {
            (h0, Some(recon.clone()), None)
        };
        let mut vk = v0.clone();
        let mut phk = ph0.clone();
        for step in 0..k {
            let pv = match first_pv.take() {
                Some(p) => p,
                None => sigmoid(h.clone().matmul(wt.clone()) + b2.clone()),
            };
            vk = st.rng.bernoulli(pv);
            phk = sigmoid(vk.clone().matmul(w.clone()) + c2.clone());
            if step + 1 < k {
                h = st.rng.bernoulli(phk.clone());
            }
        }
        if self.sampler.persistent {
            st.chain = Some(match old_chain {
                Some(old) if old.dims()[0] > n => old.slice_assign([0..n, 0..nv], vk.clone()),
                _ => vk.clone(),
            });
        }
        drop(st);

        let scale = 1.0 / n.max(1) as f64;
        // −ΔW = (v_kᵀ p(h|v_k) − v₀ᵀ p(h|v₀)) / n as one matmul: [v_k; v₀]ᵀ [p_k; −p₀] / n.
        let lhs = Tensor::cat(vec![vk.clone(), v0.clone()], 0);
        let rhs = Tensor::cat(
            vec![
                phk.clone().mul_scalar(scale),
                ph0.clone().mul_scalar(-scale),
            ],
            0,
        );
        let gw = lhs.transpose().matmul(rhs);
        let gw = match &self.weights.mask {
            Some(m) => gw * m.val().inner(),
            None => gw,
        };
        let gb = (vk - v0.clone()).mean_dim(0).reshape([nv]);
        let gc = (phk - ph0).mean_dim(0).reshape([self.n_hidden()]);
        let err = (v0 - recon.clone()).square().sum().mul_scalar(scale);

        let mut grads = GradientsParams::new();
        grads.register(self.weights.weight.id, gw);
        grads.register(self.weights.bias.as_ref().expect("hidden bias").id, gc);
        grads.register(self.visible_bias.id, gb);
        CdStep {
            grads,
            reconstruction: recon,
            reconstruction_error: err,
        }
    }

    /// Hidden-unit degrees (connections per hidden unit), `[n_hidden]`.
    pub fn hidden_degrees(&self) -> Tensor<1> {
        let nh = self.n_hidden();
        match &self.weights.mask {
            Some(m) => m.val().inner().sum_dim(0).reshape([nh]),
            None => {
                Tensor::full([nh], self.n_visible() as f32, &self.visible_bias.device()).inner()
            }
        }
    }
}

/// What a training or validation step of a [`SetRbm`] reports to Burn's metrics: the
/// reconstruction error as the loss (so `LossMetric` works) and the hidden degrees (for
/// [`HiddenDegreeMetric`](super::HiddenDegreeMetric)).
pub struct RbmOutput {
    /// Reconstruction error, `[1]`.
    pub loss: Tensor<1>,
    /// Connections per hidden unit, `[n_hidden]`.
    pub hidden_degrees: Tensor<1>,
}

impl burn::train::ItemLazy for RbmOutput {
    fn sync(self) -> Result<Self, burn::tensor::ExecutionError> {
        self.loss.device().flush()?;
        Ok(Self {
            loss: self.loss.without_autodiff(),
            hidden_degrees: self.hidden_degrees.without_autodiff(),
        })
    }
}

impl burn::train::metric::Adaptor<burn::train::metric::LossInput> for RbmOutput {
    fn adapt(&self) -> burn::train::metric::LossInput {
        burn::train::metric::LossInput::new(self.loss.clone())
    }
}

impl TrainStep for SetRbm {
    type Input = BinaryBatch;
    type Output = RbmOutput;

    /// One CD step ([`SetRbm::cd_step`]) handed to Burn's optimizer as gradients.
    fn step(&self, batch: BinaryBatch) -> TrainOutput<RbmOutput> {
        let cd = self.cd_step(batch.visible);
        TrainOutput {
            grads: cd.grads,
            item: RbmOutput {
                loss: cd.reconstruction_error,
                hidden_degrees: self.hidden_degrees(),
            },
        }
    }
}

impl InferenceStep for SetRbm {
    type Input = BinaryBatch;
    type Output = RbmOutput;

    /// Mean-field reconstruction error ([`SetRbm::reconstruct`]).
    fn step(&self, batch: BinaryBatch) -> RbmOutput {
        let (_, err) = self.reconstruct(batch.visible);
        RbmOutput {
            loss: err,
            hidden_degrees: self.hidden_degrees(),
        }
    }
}
