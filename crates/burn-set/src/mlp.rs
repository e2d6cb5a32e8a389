//! The paper's MLPs: dense / FixProb / SET hidden layers, activation, dropout, dense output.

use crate::data::ClassificationBatch;
use crate::dropout::dropout_forward;
use crate::layers::Storage;
use crate::set_linear::{SetLinear, SetLinearConfig, Sparsity};
use crate::sparse_backend::has_native_kernel;
use crate::sparse_linear::SparseSetLinear;
use crate::srelu::{Activation, ActivationKind};
use crate::topology::TopologyError;
use burn::config::Config;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};
use burn::train::ClassificationOutput;
use std::fmt;

/// Configuration of a [`SetMlp`]: `d_input → hidden… → d_output`.
#[derive(Config, Debug)]
pub struct SetMlpConfig {
    /// Input features.
    pub d_input: usize,
    /// Hidden layer widths (the paper's MNIST net: 1000, 1000, 1000).
    pub hidden: Vec<usize>,
    /// Classes.
    pub d_output: usize,
    /// Variant of the hidden layers: dense, FixProb or SET.
    #[config(default = "Sparsity::Set")]
    pub sparsity: Sparsity,
    /// SET's ε for the sparse hidden layers.
    #[config(default = 20.0)]
    pub epsilon: f64,
    /// Activation after each hidden layer.
    #[config(default = "ActivationKind::SRelu")]
    pub activation: ActivationKind,
    /// Dropout after each hidden activation.
    #[config(default = 0.3)]
    pub dropout: f64,
    /// Seed of the sparse topologies (layer i uses seed + i).
    #[config(default = 42)]
    pub seed: u64,
    /// Storage of the sparse hidden layers: dense weight × mask, or values + indices. Dense
    /// layers are always stored dense.
    #[config(default = "None")]
    pub storage: Option<Storage>,
}

/// Why a [`SetMlpConfig`] (or a [`SetHeadConfig`](crate::head::SetHeadConfig) or
/// [`SetCnnConfig`](crate::cnn::SetCnnConfig) built on one) cannot be initialized.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfigError {
    /// A sparse layer's topology cannot be built (ε, layer shape).
    Topology(TopologyError),
    /// The dropout probability is not finite or not in `[0, 1)` (Burn's `Dropout` would panic).
    InvalidDropout(f64),
    /// Sparse storage was asked of a dense model, whose layers are dense matrices (ignoring it
    /// would misreport what ran; masked storage is how dense layers are stored anyway).
    SparseDense,
}

impl fmt::Display for ModelConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Topology(e) => e.fmt(f),
            Self::InvalidDropout(p) => {
                write!(f, "dropout must be finite and in [0, 1), got {p}")
            }
            Self::SparseDense => write!(
                f,
                "sparse storage needs sparse layers; the dense model's layers are dense matrices"
            ),
        }
    }
}

impl std::error::Error for ModelConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Topology(e) => Some(e),
            Self::InvalidDropout(_) | Self::SparseDense => None,
        }
    }
}

impl From<TopologyError> for ModelConfigError {
    fn from(e: TopologyError) -> Self {
        Self::Topology(e)
    }
}

/// Checks a dropout probability: finite and in `[0, 1)` (0 = no dropout). Shared by every
/// model config with a dropout rate.
pub fn check_dropout(p: f64) -> Result<(), ModelConfigError> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(ModelConfigError::InvalidDropout(p))
    }
}

/// A hidden layer's linear map, masked or truly sparse.
#[derive(Module, Debug)]
pub enum SetLayer {
    /// Dense weight × 0/1 mask (also the dense variant, without mask).
    Masked(SetLinear),
    /// Values + indices.
    Sparse(SparseSetLinear),
}

impl SetLayer {
    /// Forward pass; shapes `[..., d_input] → [..., d_output]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Masked(l) => l.forward(x),
            Self::Sparse(l) => l.forward(x),
        }
    }

    /// The masked layer, if this is one.
    pub fn as_masked(&self) -> Option<&SetLinear> {
        match self {
            Self::Masked(l) => Some(l),
            Self::Sparse(_) => None,
        }
    }

    /// The sparse layer, if this is one.
    pub fn as_sparse(&self) -> Option<&SparseSetLinear> {
        match self {
            Self::Sparse(l) => Some(l),
            Self::Masked(_) => None,
        }
    }

    /// Connections.
    pub fn nnz(&self) -> usize {
        match self {
            Self::Masked(l) => l.nnz(),
            Self::Sparse(l) => l.nnz(),
        }
    }
}

/// The storage `burn-set` picks when none is given: the faster one for the shape and device.
/// On the CPU backends (native sparse kernel) truly sparse storage is ~6–7× faster than
/// masked storage at the MNIST SET-MLP's 4 % density (2.5–2.8 vs 16–19 s per epoch, `burn-set
/// bench sparse-mlp`, flex, 2 cores); its cost grows with the density while the masked
/// layer's forward and input-gradient products do not, so it is picked up to 10 % density.
/// Elsewhere (wgpu: Burn's portable gather/scatter) masked storage is faster.
pub fn default_storage(density: f64, device: &Device) -> Storage {
    if density <= 0.1 && has_native_kernel(device) {
        Storage::Sparse
    } else {
        Storage::Masked
    }
}

/// One hidden block: sparse (or dense) linear → activation → dropout.
#[derive(Module, Debug)]
pub struct HiddenBlock {
    /// The linear map.
    pub linear: SetLayer,
    /// The activation.
    pub activation: Activation,
    /// Dropout.
    pub dropout: Dropout,
}

/// A multilayer perceptron with SET hidden layers and a dense output layer (as in the
/// reference code: the output layer is too small to sparsify at ε = 20).
#[derive(Module, Debug)]
pub struct SetMlp {
    /// Hidden blocks.
    pub hidden: Vec<HiddenBlock>,
    /// Dense output layer (logits).
    pub output: Linear,
}

impl SetMlpConfig {
    /// Initialize a new [`SetMlp`].
    ///
    /// # Panics
    /// If a sparse layer's ε gives a probability above 1 or the dropout is not in `[0, 1)`
    /// (see [`try_init`](Self::try_init)).
    pub fn init(&self, device: &Device) -> SetMlp {
        self.try_init(device)
            .unwrap_or_else(|e| panic!("invalid SetMlpConfig: {e}"))
    }

    /// Initialize a new [`SetMlp`], or say which layer (or the dropout) is misconfigured.
    pub fn try_init(&self, device: &Device) -> Result<SetMlp, ModelConfigError> {
        let (hidden, output) = self.init_layers(device)?;
        Ok(SetMlp { hidden, output })
    }

    /// The hidden blocks and the dense output layer this config describes (Xavier-uniform
    /// weights; sparse layer `i` seeded with `seed + i`). Shared by [`SetMlp`] and
    /// [`SetHead`](crate::head::SetHead). The dropout is checked even without hidden layers (a
    /// CNN's backbone uses its head's rate).
    pub(crate) fn init_layers(
        &self,
        device: &Device,
    ) -> Result<(Vec<HiddenBlock>, Linear), ModelConfigError> {
        check_dropout(self.dropout)?;
        if (self.sparsity, self.storage) == (Sparsity::Dense, Some(Storage::Sparse)) {
            return Err(ModelConfigError::SparseDense);
        }
        let init = Initializer::XavierUniform { gain: 1.0 };
        let mut d_in = self.d_input;
        let mut hidden = Vec::with_capacity(self.hidden.len());
        for (i, &width) in self.hidden.iter().enumerate() {
            let cfg = SetLinearConfig::new(d_in, width)
                .with_epsilon(self.epsilon)
                .with_sparsity(self.sparsity)
                .with_initializer(init.clone())
                .with_seed(Some(self.seed.wrapping_add(i as u64)));
            let storage = match self.sparsity {
                Sparsity::Dense => Storage::Masked,
                _ => self.storage.unwrap_or_else(|| {
                    default_storage(
                        crate::topology::er_probability(self.epsilon, d_in, width).unwrap_or(1.0),
                        device,
                    )
                }),
            };
            let linear = match storage {
                Storage::Masked => SetLayer::Masked(cfg.try_init(device)?),
                Storage::Sparse => SetLayer::Sparse(cfg.init_sparse(device)?),
            };
            hidden.push(HiddenBlock {
                linear,
                activation: self.activation.init(width, device),
                dropout: DropoutConfig::new(self.dropout).init(),
            });
            d_in = width;
        }
        let output = LinearConfig::new(d_in, self.d_output)
            .with_initializer(init)
            .init(device);
        Ok((hidden, output))
    }
}

impl HiddenBlock {
    /// linear → activation → dropout.
    ///
    /// # Shapes
    /// - input: `[..., d_input]`
    /// - output: `[..., width]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match (&self.linear, &self.activation) {
            (SetLayer::Sparse(l), Activation::SRelu(s)) => {
                l.forward_srelu_dropout(x, s, &self.dropout)
            }
            _ => dropout_forward(
                &self.dropout,
                self.activation.forward(self.linear.forward(x)),
            ),
        }
    }

    /// Trainable parameters: connections, bias and activation parameters (masks and
    /// masked-out positions excluded).
    pub fn trainable_weights(&self) -> u64 {
        let bias = match &self.linear {
            SetLayer::Masked(l) => l.bias.as_ref().map_or(0, |p| p.num_params()),
            SetLayer::Sparse(l) => l.bias.as_ref().map_or(0, |p| p.num_params()),
        };
        (self.linear.nnz() + bias + self.activation.num_params()) as u64
    }
}

/// Trainable weights of a hidden stack and its dense output layer: connections, biases and
/// activation parameters (masks, masked-out positions and index tensors excluded). Shared by
/// [`SetMlp`] and [`SetHead`](crate::head::SetHead).
pub(crate) fn stack_trainable_weights(hidden: &[HiddenBlock], output: &Linear) -> u64 {
    hidden
        .iter()
        .map(HiddenBlock::trainable_weights)
        .sum::<u64>()
        + output.num_params() as u64
}

impl SetMlp {
    /// Trainable weights of the whole MLP (masks, masked-out positions and index tensors
    /// excluded: `Module::num_params` would count them).
    pub fn trainable_weights(&self) -> u64 {
        stack_trainable_weights(&self.hidden, &self.output)
    }

    /// Logits.
    ///
    /// # Shapes
    /// - input: `[batch, d_input]`
    /// - output: `[batch, d_output]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = self.hidden.iter().fold(x, |x, b| b.forward(x));
        self.output.forward(x)
    }

    /// Logits, cross-entropy loss and targets of a batch.
    pub fn forward_classification(&self, batch: ClassificationBatch) -> ClassificationOutput {
        classification_output(self.forward(batch.inputs), batch.targets)
    }
}

/// Cross-entropy loss of `logits` against `targets`, as Burn's classification
/// output (what the accuracy and loss metrics read).
pub fn classification_output(logits: Tensor<2>, targets: Tensor<1, Int>) -> ClassificationOutput {
    let loss = CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits.clone(), targets.clone());
    ClassificationOutput::new(loss, logits, targets)
}

/// Burn's `TrainStep` and `InferenceStep` for a model with
/// `forward_classification(&self, ClassificationBatch) -> ClassificationOutput`.
macro_rules! classification_steps {
    ($model:ty) => {
        impl burn::train::TrainStep for $model {
            type Input = $crate::data::ClassificationBatch;
            type Output = burn::train::ClassificationOutput;

            fn step(
                &self,
                batch: $crate::data::ClassificationBatch,
            ) -> burn::train::TrainOutput<burn::train::ClassificationOutput> {
                let out = self.forward_classification(batch);
                burn::train::TrainOutput::new(self, out.loss.backward(), out)
            }
        }

        impl burn::train::InferenceStep for $model {
            type Input = $crate::data::ClassificationBatch;
            type Output = burn::train::ClassificationOutput;

            fn step(
                &self,
                batch: $crate::data::ClassificationBatch,
            ) -> burn::train::ClassificationOutput {
                self.forward_classification(batch)
            }
        }
    };
}
pub(crate) use classification_steps;

classification_steps!(SetMlp);

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(deprecated)]
    fn dev() -> Device {
        Device::ndarray()
    }

    #[test]
    fn try_init_rejects_dropout_outside_zero_one() {
        let mlp = |p: f64| {
            SetMlpConfig::new(20, vec![10], 3)
                .with_epsilon(1.0)
                .with_dropout(p)
                .try_init(&dev())
        };
        for p in [1.0, 1.5, -0.5, f64::NAN, f64::INFINITY] {
            let e = mlp(p).unwrap_err();
            assert!(matches!(e, ModelConfigError::InvalidDropout(_)), "{e}");
            assert!(
                e.to_string()
                    .contains("dropout must be finite and in [0, 1)"),
                "{e}"
            );
        }
        assert!(mlp(0.0).is_ok() && mlp(0.999).is_ok());
        // checked without hidden layers too: the CNN's backbone uses the head's rate
        let e = crate::cnn::SetCnnConfig::new()
            .with_head_widths(vec![])
            .with_dropout(1.0)
            .try_init(&dev())
            .unwrap_err();
        assert_eq!(e, ModelConfigError::InvalidDropout(1.0));
        // topology errors still come through
        let e = SetMlpConfig::new(10, vec![10], 3)
            .with_epsilon(20.0)
            .try_init(&dev())
            .unwrap_err();
        assert!(matches!(e, ModelConfigError::Topology(_)), "{e}");
    }
}
