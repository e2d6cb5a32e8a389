//! SReLU (Jin et al. 2016), the activation of the SET paper's MLPs, and an activation switch.

use crate::sparse_backend::has_native_kernel;
use crate::srelu_backend::srelu_fused;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, Relu};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

/// Configuration of an [`SRelu`] layer (Keras-contrib defaults).
#[derive(Config, Debug)]
pub struct SReluConfig {
    /// Number of neurons (size of the last axis).
    pub num_features: usize,
    /// Init of the left threshold t_l (default 0).
    #[config(default = "Initializer::Zeros")]
    pub t_left_init: Initializer,
    /// Init of the left slope a_l (default Glorot-uniform).
    #[config(default = "Initializer::XavierUniform { gain: 1.0 }")]
    pub a_left_init: Initializer,
    /// Init of the right threshold offset t_r (default Glorot-uniform; |t_r| is used).
    #[config(default = "Initializer::XavierUniform { gain: 1.0 }")]
    pub t_right_init: Initializer,
    /// Init of the right slope a_r (default 1).
    #[config(default = "Initializer::Ones")]
    pub a_right_init: Initializer,
}

/// S-shaped ReLU with four learnable parameters per neuron:
/// `f(x) = t_r + a_r (x − t_r)` for `x ≥ t_r`, `x` for `t_l < x < t_r`, `t_l + a_l (x − t_l)`
/// for `x ≤ t_l`, where the right threshold is `t_l + |t_r|` as in Keras-contrib.
#[derive(Module, Debug)]
pub struct SRelu {
    /// Left threshold, `[num_features]`.
    pub t_left: Param<Tensor<1>>,
    /// Left slope, `[num_features]`.
    pub a_left: Param<Tensor<1>>,
    /// Right threshold offset, `[num_features]`.
    pub t_right: Param<Tensor<1>>,
    /// Right slope, `[num_features]`.
    pub a_right: Param<Tensor<1>>,
}

impl SReluConfig {
    /// Initialize a new [`SRelu`].
    pub fn init(&self, device: &Device) -> SRelu {
        let n = self.num_features;
        let init = |i: &Initializer| i.init_with([n], Some(n), Some(n), device);
        SRelu {
            t_left: init(&self.t_left_init),
            a_left: init(&self.a_left_init),
            t_right: init(&self.t_right_init),
            a_right: init(&self.a_right_init),
        }
    }
}

impl SRelu {
    /// Applies SReLU per neuron.
    ///
    /// # Shapes
    /// - input: `[..., num_features]`
    /// - output: `[..., num_features]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if has_native_kernel(&x.device()) {
            let shape = x.shape();
            let f = self.t_left.dims()[0];
            let x2 = x.reshape([shape.num_elements() / f.max(1), f]);
            let params =
                [&self.t_left, &self.a_left, &self.t_right, &self.a_right].map(|p| p.val());
            return srelu_fused(x2, params).reshape(shape);
        }
        self.forward_composed(x)
    }

    /// SReLU composed of Burn tensor ops (any backend; what `forward` runs where there is no
    /// fused kernel).
    pub fn forward_composed<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let tl: Tensor<D> = self.t_left.val().unsqueeze();
        let al: Tensor<D> = self.a_left.val().unsqueeze();
        let tr: Tensor<D> = tl.clone() + self.t_right.val().abs().unsqueeze();
        let ar: Tensor<D> = self.a_right.val().unsqueeze();
        let z = x.clone() - tl.clone();
        // t_l + a_l·min(z, 0) + clamp(z, 0, t_r − t_l) + a_r·max(x − t_r, 0)
        let right = relu(x - tr);
        tl - relu(z.clone().neg()) * al + relu(z) - right.clone() + right * ar
    }
}

/// Which activation the hidden layers use.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum ActivationKind {
    /// SReLU (the paper's).
    SRelu,
    /// ReLU.
    Relu,
}

impl std::str::FromStr for ActivationKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "srelu" => Ok(Self::SRelu),
            "relu" => Ok(Self::Relu),
            other => Err(format!(
                "unknown activation '{other}' (expected srelu or relu)"
            )),
        }
    }
}

/// A hidden-layer activation module.
// SReLU's four parameter tensors make it the larger variant; one per layer, so not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Activation {
    /// SReLU.
    SRelu(SRelu),
    /// ReLU.
    Relu(Relu),
}

impl ActivationKind {
    /// The activation module for `num_features` neurons.
    pub fn init(&self, num_features: usize, device: &Device) -> Activation {
        match self {
            Self::SRelu => Activation::SRelu(SReluConfig::new(num_features).init(device)),
            Self::Relu => Activation::Relu(Relu::new()),
        }
    }
}

impl Activation {
    /// Applies the activation; shapes as the input.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::SRelu(s) => s.forward(x),
            Self::Relu(r) => r.forward(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    #[allow(deprecated)]
    fn srelu_piecewise_matches_definition() {
        let device = Device::ndarray();
        let p = |v: Vec<f32>| {
            Param::from_tensor(Tensor::<1>::from_data(TensorData::new(v, [2]), &device))
        };
        let s = SRelu {
            t_left: p(vec![-1.0, 0.0]),
            a_left: p(vec![0.1, 0.2]),
            t_right: p(vec![2.0, -1.0]), // right thresholds: 1.0 and 1.0
            a_right: p(vec![0.5, 2.0]),
        };
        let x = Tensor::<2>::from_data(
            TensorData::new(vec![-3.0f32, -3.0, 0.5, 0.5, 3.0, 3.0], [3, 2]),
            &device,
        );
        let y: Vec<f32> = s.forward(x.clone()).into_data().try_to_vec().unwrap();
        let y_composed: Vec<f32> = s.forward_composed(x).into_data().try_to_vec().unwrap();
        for (a, b) in y.iter().zip(&y_composed) {
            assert!(
                (a - b).abs() < 1e-6,
                "fused {y:?} vs composed {y_composed:?}"
            );
        }
        let want = [
            -1.0 + 0.1 * (-3.0 + 1.0),
            0.2 * -3.0, // left
            0.5,
            0.5, // identity
            1.0 + 0.5 * 2.0,
            1.0 + 2.0 * 2.0, // right
        ];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?} vs {want:?}");
        }
    }

    fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec().unwrap()
    }

    /// The fused kernel (ndarray, flex) gives the composed formula's output and gradients.
    #[test]
    #[allow(deprecated)]
    fn fused_matches_composed_forward_and_gradients() {
        #[allow(unused_mut)]
        let mut devices = vec![Device::ndarray()];
        #[cfg(feature = "flex")]
        devices.push(Device::flex());
        for device in devices {
            assert!(has_native_kernel(&device));
            let device = device.autodiff();
            let s = SReluConfig::new(7)
                .with_t_left_init(Initializer::Uniform {
                    min: -0.5,
                    max: 0.0,
                })
                .with_a_left_init(Initializer::Uniform { min: 0.0, max: 0.4 })
                .with_t_right_init(Initializer::Uniform {
                    min: -1.0,
                    max: 1.0,
                })
                .with_a_right_init(Initializer::Uniform { min: 0.5, max: 1.5 })
                .init(&device);
            let x = Tensor::<3>::random(
                [3, 5, 7],
                burn::tensor::Distribution::Normal(0.0, 1.5),
                &device,
            )
            .require_grad();
            let w = Tensor::<3>::random([3, 5, 7], burn::tensor::Distribution::Default, &device);
            let (yf, yc) = (s.forward(x.clone()), s.forward_composed(x.clone()));
            let close = |a: Vec<f32>, b: Vec<f32>| {
                assert_eq!(a.len(), b.len());
                for (p, q) in a.iter().zip(&b) {
                    assert!((p - q).abs() < 1e-4 * (1.0 + q.abs()), "{a:?} vs {b:?}");
                }
            };
            close(floats(yf.clone()), floats(yc.clone()));
            let gf = (yf * w.clone()).sum().backward();
            let gc = (yc * w).sum().backward();
            close(floats(x.grad(&gf).unwrap()), floats(x.grad(&gc).unwrap()));
            for p in [&s.t_left, &s.a_left, &s.t_right, &s.a_right] {
                close(floats(p.grad(&gf).unwrap()), floats(p.grad(&gc).unwrap()));
            }
        }
    }
}
