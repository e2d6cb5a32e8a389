//! The paper's CIFAR10 backbone with a [`SetHead`].

use crate::data::ClassificationBatch;
use crate::head::{SetHead, SetHeadConfig};
use crate::mlp::{ModelConfigError, classification_output, classification_steps};
use crate::set_linear::Sparsity;
use crate::srelu::ActivationKind;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use burn::train::ClassificationOutput;

/// Weights (with biases) of the paper's six CIFAR10 conv layers:
/// `3·3·(3·32 + 32·32 + 32·64 + 64·64 + 64·128 + 128·128) + (32+32+64+64+128+128)`.
pub const CIFAR10_CONV_WEIGHTS: u64 = 287_008;

/// Channels of the six 3×3 conv layers.
const CHANNELS: [[usize; 2]; 6] = [[3, 32], [32, 32], [32, 64], [64, 64], [64, 128], [128, 128]];

/// Configuration of a [`SetCnn`] for 32×32 RGB images.
#[derive(Config, Debug)]
pub struct SetCnnConfig {
    /// Variant of the head's hidden layers: SET-CNN, CNNFixProb or the dense CNN.
    #[config(default = "Sparsity::Set")]
    pub sparsity: Sparsity,
    /// SET's ε of the head's sparse layers.
    #[config(default = 20.0)]
    pub epsilon: f64,
    /// Hidden widths of the head. The paper does not state them; 2048, 2048 reproduce its
    /// counts exactly (8,413,194 dense head weights; 188,426 sparse at ε = 20).
    #[config(default = "vec![2048, 2048]")]
    pub head_widths: Vec<usize>,
    /// Dropout after conv layers 1, 3, 5 and after each hidden head layer.
    #[config(default = 0.3)]
    pub dropout: f64,
    /// Seed of the head's topologies.
    #[config(default = 42)]
    pub seed: u64,
    /// Classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Storage of the head's sparse layers; `None` picks the faster one for the shape and
    /// device (see [`SetHeadConfig::storage`]).
    #[config(default = "None")]
    pub storage: Option<crate::layers::Storage>,
}

/// conv32-dropout-conv32-maxpool-conv64-dropout-conv64-maxpool-conv128-dropout-conv128-maxpool
/// (3×3, same padding, ReLU), then a [`SetHead`] on the 4·4·128 = 2,048 features.
#[derive(Module, Debug)]
pub struct SetCnn {
    /// The six conv layers.
    pub convs: Vec<Conv2d>,
    /// 2×2 max pooling after conv layers 2, 4 and 6.
    pub pool: MaxPool2d,
    /// Dropout after conv layers 1, 3 and 5.
    pub dropout: Dropout,
    /// The fully-connected head.
    pub head: SetHead,
}

impl SetCnnConfig {
    /// Initialize a new [`SetCnn`].
    ///
    /// # Panics
    /// If the head or the dropout is misconfigured (see [`try_init`](Self::try_init)).
    pub fn init(&self, device: &Device) -> SetCnn {
        self.try_init(device)
            .unwrap_or_else(|e| panic!("invalid SetCnnConfig: {e}"))
    }

    /// Initialize a new [`SetCnn`], or say why the head or the dropout (of the backbone and the
    /// head) is misconfigured.
    pub fn try_init(&self, device: &Device) -> Result<SetCnn, ModelConfigError> {
        let convs = CHANNELS
            .iter()
            .map(|&ch| {
                Conv2dConfig::new(ch, [3, 3])
                    .with_padding(PaddingConfig2d::Same)
                    .init(device)
            })
            .collect();
        let head = SetHeadConfig::new(SetCnn::FEATURES, self.head_widths.clone(), self.num_classes)
            .with_sparsity(self.sparsity)
            .with_epsilon(self.epsilon)
            .with_dropout(self.dropout)
            .with_activation(ActivationKind::Relu)
            .with_seed(self.seed)
            .with_storage(self.storage)
            .try_init(device)?;
        Ok(SetCnn {
            convs,
            pool: MaxPool2dConfig::new([2, 2]).init(),
            dropout: DropoutConfig::new(self.dropout).init(),
            head,
        })
    }
}

impl SetCnn {
    /// Features the backbone hands to the head: 128 channels × 4 × 4.
    pub const FEATURES: usize = 128 * 4 * 4;

    /// The backbone's features, `[batch, 3, 32, 32] → [batch, 128, 4, 4]`.
    pub fn backbone(&self, x: Tensor<4>) -> Tensor<4> {
        self.convs.iter().enumerate().fold(x, |x, (i, conv)| {
            let x = relu(conv.forward(x));
            if i % 2 == 0 {
                crate::dropout::dropout_forward(&self.dropout, x)
            } else {
                self.pool.forward(x)
            }
        })
    }

    /// Logits of images `[batch, 3, 32, 32]`.
    pub fn forward_images(&self, x: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.backbone(x))
    }

    /// Logits of CHW pixel rows `[batch, 3072]` (reshaped to `[batch, 3, 32, 32]`).
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let [b, _] = x.dims();
        self.forward_images(x.reshape([b, 3, 32, 32]))
    }

    /// Weights (with biases) of the conv layers.
    pub fn conv_weights(&self) -> u64 {
        self.convs.iter().map(|c| c.num_params() as u64).sum()
    }

    /// Logits, cross-entropy loss and targets of a batch.
    pub fn forward_classification(&self, batch: ClassificationBatch) -> ClassificationOutput {
        classification_output(self.forward(batch.inputs), batch.targets)
    }
}

classification_steps!(SetCnn);
