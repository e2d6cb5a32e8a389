//! `SetLinear`: a masked linear layer that swaps in for [`burn::nn::Linear`].

use crate::topology::{SparseTopology, TopologyError};
use burn::config::Config;
use burn::module::{Module, Param, ParamId};
use burn::nn::Initializer;
use burn::tensor::module::linear;
use burn::tensor::{Bool, Device, Tensor, TensorData, assert_shape};

/// Which of the paper's three variants a layer is.
#[derive(Config, Debug, PartialEq, Eq, Copy, Hash)]
pub enum Sparsity {
    /// Fully connected (the paper's "MLP"/"CNN" baseline); no mask at all.
    Dense,
    /// Erdős–Rényi sparse topology that is never evolved ("MLPFixProb").
    FixProb,
    /// Erdős–Rényi sparse topology evolved by SET.
    Set,
}

impl std::str::FromStr for Sparsity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "dense" => Ok(Self::Dense),
            "fixprob" | "fix-prob" | "fixed" => Ok(Self::FixProb),
            "set" => Ok(Self::Set),
            other => Err(format!(
                "unknown model variant '{other}' (expected set, fixprob or dense)"
            )),
        }
    }
}

impl Sparsity {
    /// `"dense"`, `"fixprob"` or `"set"` (the CLI's names).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Dense => "dense",
            Self::FixProb => "fixprob",
            Self::Set => "set",
        }
    }
}

/// Configuration to create a [`SetLinear`] layer using the [init function](SetLinearConfig::init).
#[derive(Config, Debug)]
pub struct SetLinearConfig {
    /// The size of the input features.
    pub d_input: usize,
    /// The size of the output features.
    pub d_output: usize,
    /// SET's ε: the layer starts with `round(ε (d_input + d_output))` connections.
    #[config(default = 20.0)]
    pub epsilon: f64,
    /// Dense, fixed sparse (FixProb) or evolving sparse (SET).
    #[config(default = "Sparsity::Set")]
    pub sparsity: Sparsity,
    /// If a bias should be applied during the linear transformation.
    #[config(default = true)]
    pub bias: bool,
    /// Initializer of the weights (masked afterwards) and bias; the same default as `Linear`.
    #[config(default = "Initializer::KaimingUniform{gain:1.0/3.0f64.sqrt(), fan_out_only:false}")]
    pub initializer: Initializer,
    /// Initialise a sparse layer as if its fan-in and fan-out were the Erdős–Rényi graph's
    /// expected degrees (`p·d_input`, `p·d_output`) instead of `d_input`, `d_output`, so that
    /// the signal keeps the variance it would have in a dense layer. Without it (the reference
    /// Keras code's behaviour) a 4%-dense layer shrinks activations ~5× per layer and a deep
    /// SET-MLP barely trains in its first epochs.
    #[config(default = true)]
    pub sparse_fan: bool,
    /// Seed of the Erdős–Rényi topology (None: a random one).
    #[config(default = "None")]
    pub seed: Option<u64>,
}

/// The connectivity mask of a sparse layer: `1.0` where a connection exists, `0.0` elsewhere.
///
/// A `Param` so that it is saved in records and moves with the device. It is stored as a float
/// 0/1 tensor because multiplying by it is the cheapest masking op on Burn's CPU backends
/// (`mask_fill` with a boolean mask costs ~30% of a 1000×1000 layer's forward+backward, the
/// multiplication almost nothing); it is detached in `forward`, so it never receives a gradient
/// and no optimizer ever changes it. The variant tells SET whether to evolve it.
#[derive(Module, Debug)]
pub enum SetMask {
    /// Evolved by SET at every evolution step.
    Evolving(Param<Tensor<2>>),
    /// Fixed Erdős–Rényi topology (FixProb).
    Fixed(Param<Tensor<2>>),
}

impl SetMask {
    /// The 0/1 mask tensor `[d_input, d_output]` (detached: never part of a gradient).
    pub fn val(&self) -> Tensor<2> {
        match self {
            Self::Evolving(p) | Self::Fixed(p) => p.val().detach(),
        }
    }

    /// The mask as booleans, `true` where connected.
    pub fn bool(&self) -> Tensor<2, Bool> {
        self.val().greater_elem(0.5)
    }

    /// Whether SET evolves this mask.
    pub fn is_evolving(&self) -> bool {
        matches!(self, Self::Evolving(_))
    }
}

/// Applies a sparse linear transformation `O = I (W ⊙ M) + b` to the input tensor.
///
/// Should be created with [`SetLinearConfig`]. Weights outside the mask are exactly zero, never
/// influence the output and never receive gradient.
#[derive(Module, Debug)]
pub struct SetLinear {
    /// Matrix of shape `[d_input, d_output]`, zero outside the mask.
    pub weight: Param<Tensor<2>>,
    /// Vector of size `d_output`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Connectivity; `None` for a dense layer.
    pub mask: Option<SetMask>,
}

impl SetLinearConfig {
    /// Initialize a new [`SetLinear`] module.
    ///
    /// # Panics
    /// If the configuration is invalid (use [`try_init`](Self::try_init) to get the error
    /// instead): a zero `d_input` or `d_output`, or, for a sparse layer, ε not finite and > 0 or
    /// giving a connection probability above 1.
    pub fn init(&self, device: &Device) -> SetLinear {
        self.try_init(device)
            .unwrap_or_else(|e| panic!("invalid SetLinearConfig: {e}"))
    }

    /// Initialize a new [`SetLinear`] module, or say why the configuration is invalid.
    pub fn try_init(&self, device: &Device) -> Result<SetLinear, TopologyError> {
        let (d_in, d_out) = (self.d_input, self.d_output);
        let (fan_in, fan_out) = if self.sparsity != Sparsity::Dense && self.sparse_fan {
            let p = crate::topology::er_probability(self.epsilon, d_in, d_out)?;
            let fan = |d: usize| ((p * d as f64).round() as usize).max(1);
            (fan(d_in), fan(d_out))
        } else {
            (d_in, d_out)
        };
        let mut weight =
            self.initializer
                .init_with([d_in, d_out], Some(fan_in), Some(fan_out), device);
        let bias = self.bias.then(|| {
            self.initializer
                .init_with([d_out], Some(fan_in), Some(fan_out), device)
        });
        let mask = match self.sparsity {
            Sparsity::Dense => {
                if d_in == 0 || d_out == 0 {
                    return Err(TopologyError::EmptyLayer {
                        n_in: d_in,
                        n_out: d_out,
                    });
                }
                None
            }
            Sparsity::FixProb | Sparsity::Set => {
                let seed = self.seed.unwrap_or_else(rand::random);
                let topo = SparseTopology::erdos_renyi(d_in, d_out, self.epsilon, seed)?;
                let mask = mask_tensor(&topo, device);
                // Zero the weights outside the mask; the result must be a fresh leaf so that it
                // is tracked as a parameter.
                let masked = (weight.val() * mask.clone()).detach();
                weight = Param::from_tensor(masked);
                let p = Param::initialized(ParamId::new(), mask);
                Some(if self.sparsity == Sparsity::Set {
                    SetMask::Evolving(p)
                } else {
                    SetMask::Fixed(p)
                })
            }
        };
        Ok(SetLinear { weight, bias, mask })
    }
}

/// A `[n_in, n_out]` 0/1 float mask from a topology.
pub fn mask_tensor(topo: &SparseTopology, device: &Device) -> Tensor<2> {
    Tensor::from_data(
        TensorData::new(topo.to_mask_f32(), [topo.n_in, topo.n_out]),
        device,
    )
}

impl SetLinear {
    /// Applies the forward pass on the input tensor.
    ///
    /// # Shapes
    /// - input: `[..., d_input]`
    /// - output: `[..., d_output]`
    ///
    /// # Panics
    /// Panics if the last axis of `input` is not `d_input`.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        let [d_input, _] = self.dims();
        assert_shape!(input, [.., d_input]);
        let bias = self.bias.as_ref().map(|b| b.val());
        match &self.mask {
            Some(m) => crate::mask_backend::masked_linear(input, self.weight.val(), m.val(), bias),
            None => linear(input, self.weight.val(), bias),
        }
    }

    /// The weight times the mask: masked positions are zero and, through the multiplication's
    /// backward, get exactly zero gradient.
    pub fn masked_weight(&self) -> Tensor<2> {
        let w = self.weight.val();
        match &self.mask {
            Some(m) => crate::mask_backend::apply_mask(w, m.val()),
            None => w,
        }
    }

    /// `[d_input, d_output]`.
    pub fn dims(&self) -> [usize; 2] {
        self.weight.shape().dims()
    }

    /// The variant of this layer.
    pub fn sparsity(&self) -> Sparsity {
        match &self.mask {
            None => Sparsity::Dense,
            Some(SetMask::Fixed(_)) => Sparsity::FixProb,
            Some(SetMask::Evolving(_)) => Sparsity::Set,
        }
    }

    /// Number of connections (weights that may be non-zero), bias excluded.
    pub fn nnz(&self) -> usize {
        match &self.mask {
            Some(m) => m.val().sum().into_scalar::<f64>().round() as usize,
            None => {
                let [a, b] = self.dims();
                a * b
            }
        }
    }

    /// Fraction of the `d_input · d_output` positions that are connected.
    pub fn density(&self) -> f64 {
        let [a, b] = self.dims();
        self.nnz() as f64 / (a as f64 * b as f64)
    }

    /// The layer's current connectivity, read back to the host.
    pub fn topology(&self) -> SparseTopology {
        let [a, b] = self.dims();
        match &self.mask {
            Some(m) => SparseTopology::from_mask_f32(a, b, &float_data(m.val())),
            None => SparseTopology::dense(a, b),
        }
    }
}

/// Reads a float tensor back to the host as `f32`.
pub(crate) fn float_data<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    // Burn's ndarray backend copies a tensor whose storage is shared (a parameter's value
    // is) element by element through a dynamic-rank iterator, ~20 ns a value: reading the
    // weights and masks of the MNIST SET-MLP took 0.3 s of each evolution. A (detached)
    // elementwise op gives a uniquely owned tensor, which it hands over without a copy;
    // `x · 1` is exact.
    let t = match t.device().inner().as_dispatch() {
        burn::backend::DispatchDevice::NdArray(_) => t.detach().mul_scalar(1.0),
        _ => t,
    };
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("float tensor data")
}
