//! `SetHead`: a SET (or FixProb, or dense) fully-connected classifier head to put on any Burn
//! backbone — flatten → [sparse linear → activation → dropout]×k → dense output layer.
//!
//! ```ignore
//! #[derive(Module, Debug)]
//! struct MyCnn { conv: Conv2d, head: SetHead }
//! // forward: self.head.forward(relu(self.conv.forward(x)))   // [B, C, H, W] → [B, classes]
//! let head = SetHeadConfig::new(c * h * w, vec![512, 512], 10).init(&device);
//! ```
//!
//! The head's sparse layers are the same [`SetLayer`](crate::mlp::SetLayer)s as the MLP's
//! (masked [`SetLinear`](crate::set_linear::SetLinear)s or truly sparse
//! [`SparseSetLinear`](crate::sparse_linear::SparseSetLinear)s), so
//! [`SetCallback`](crate::callback::SetCallback) finds and evolves them wherever the head sits
//! in the user's model.

use crate::layers::Storage;
use crate::mlp::{HiddenBlock, ModelConfigError, SetMlpConfig};
use crate::set_linear::Sparsity;
use crate::srelu::ActivationKind;
use burn::config::Config;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};

/// Configuration of a [`SetHead`]: `d_input → hidden… → d_output`.
#[derive(Config, Debug)]
pub struct SetHeadConfig {
    /// Input features (the backbone's output, flattened).
    pub d_input: usize,
    /// Hidden widths (the paper's CIFAR10 SET-CNN: 2048, 2048).
    pub hidden: Vec<usize>,
    /// Classes.
    pub d_output: usize,
    /// Variant of the hidden layers: dense, FixProb or SET.
    #[config(default = "Sparsity::Set")]
    pub sparsity: Sparsity,
    /// SET's ε for the sparse hidden layers.
    #[config(default = 20.0)]
    pub epsilon: f64,
    /// Dropout after each hidden activation.
    #[config(default = 0.3)]
    pub dropout: f64,
    /// Activation after each hidden layer (ReLU, as in the paper's CNNs).
    #[config(default = "ActivationKind::Relu")]
    pub activation: ActivationKind,
    /// Seed of the sparse topologies (hidden layer i uses seed + i).
    #[config(default = 42)]
    pub seed: u64,
    /// Storage of the sparse hidden layers; `None` picks the faster one for the shape and
    /// device ([`default_storage`](crate::mlp::default_storage): truly sparse on the CPU
    /// backends up to 10 % density, masked elsewhere).
    #[config(default = "None")]
    pub storage: Option<Storage>,
}

/// A fully-connected head with SET hidden layers and a dense output layer.
#[derive(Module, Debug)]
pub struct SetHead {
    /// Hidden blocks: sparse linear → activation → dropout.
    pub hidden: Vec<HiddenBlock>,
    /// Dense output layer (logits).
    pub output: Linear,
}

impl SetHeadConfig {
    /// Initialize a new [`SetHead`].
    ///
    /// # Panics
    /// If a sparse layer's ε gives a probability above 1 or the dropout is not in `[0, 1)`
    /// (see [`try_init`](Self::try_init)).
    pub fn init(&self, device: &Device) -> SetHead {
        self.try_init(device)
            .unwrap_or_else(|e| panic!("invalid SetHeadConfig: {e}"))
    }

    /// Initialize a new [`SetHead`], or say which layer (or the dropout) is misconfigured.
    pub fn try_init(&self, device: &Device) -> Result<SetHead, ModelConfigError> {
        let (hidden, output) = SetMlpConfig::new(self.d_input, self.hidden.clone(), self.d_output)
            .with_sparsity(self.sparsity)
            .with_epsilon(self.epsilon)
            .with_activation(self.activation)
            .with_dropout(self.dropout)
            .with_seed(self.seed)
            .with_storage(self.storage)
            .init_layers(device)?;
        Ok(SetHead { hidden, output })
    }
}

impl SetHead {
    /// Logits of a batch of any rank: all axes but the first (batch) are flattened.
    ///
    /// # Shapes
    /// - input: `[batch, ...]` with `d_input` elements per sample
    /// - output: `[batch, d_output]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<2> {
        let x: Tensor<2> = x.flatten(1, D - 1);
        let x = self.hidden.iter().fold(x, |x, b| b.forward(x));
        self.output.forward(x)
    }

    /// Connections of the hidden (sparse) layers, biases excluded.
    pub fn connections(&self) -> u64 {
        self.hidden.iter().map(|b| b.linear.nnz() as u64).sum()
    }

    /// Trainable weights of the whole head: hidden connections, hidden biases, the output
    /// layer's weights and bias, and activation parameters (masked-out positions excluded).
    /// For the paper's dense head `2048 → 2048 → 2048 → 10` this is 8,413,194.
    pub fn trainable_weights(&self) -> u64 {
        crate::mlp::stack_trainable_weights(&self.hidden, &self.output)
    }
}
