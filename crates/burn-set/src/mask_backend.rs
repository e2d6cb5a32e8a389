//! The masked weight `W ⊙ M` of a masked [`SetLinear`](crate::set_linear::SetLinear) as one
//! Burn op (backend extension), for Burn's ndarray backend.
//!
//! The mask multiplications (`W ⊙ M` forward, `∂W ⊙ M` backward) are all a masked layer adds to
//! `burn::nn::Linear`. Burn-ndarray runs an elementwise product on one thread into a freshly
//! allocated array; here the forward product runs on all cores and the backward one multiplies
//! the (uniquely owned) gradient in place. Other backends use the tensor product.

#![allow(deprecated)] // burn-ndarray is deprecated upstream but still one of our CPU backends

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ndarray::NdArrayTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, Backend, DispatchDevice, NdArray, TensorMetadata, backend_extension,
};
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

/// Elements per parallel task (256 KiB of `f32`).
const CHUNK: usize = 1 << 16;

/// Backends with a native masked-weight op.
#[backend_extension(NdArray, Autodiff)]
pub trait MaskBackend: Backend {
    /// `weight ⊙ mask`; only `weight` is differentiated (the mask is a constant).
    ///
    /// # Shapes
    /// - weight, mask: the same shape
    /// - output: that shape
    fn apply_mask(weight: FloatTensor<Self>, mask: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `a ⊙ b` into a new vector, on all cores (written once: no zero-fill first).
fn par_product(a: &[f32], b: &[f32]) -> Vec<f32> {
    let n = a.len();
    let mut out = Vec::<f32>::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| {
            o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (a, b))| {
                o.write(a * b);
            })
        });
    // SAFETY: the loop above wrote all `n` elements.
    unsafe { out.set_len(n) };
    out
}

/// `a ⊙= b` on all cores.
fn par_product_in_place(a: &mut [f32], b: &[f32]) {
    a.par_chunks_mut(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a *= b));
}

/// The backend's own elementwise product.
fn tensor_product<B: Backend>(a: FloatTensor<B>, b: FloatTensor<B>) -> FloatTensor<B> {
    B::float_mul(a, b)
}

impl MaskBackend for NdArray {
    fn apply_mask(weight: FloatTensor<Self>, mask: FloatTensor<Self>) -> FloatTensor<Self> {
        let NdArrayTensor::F32(m) = &mask else {
            return tensor_product::<NdArray>(weight, mask);
        };
        let m_view = m.view();
        let n = weight.shape().num_elements();
        let Some(m_slice) = m_view.as_slice().filter(|s| s.len() == n) else {
            return tensor_product::<NdArray>(weight, mask);
        };
        match weight {
            // A gradient nobody else holds: multiplied where it is.
            NdArrayTensor::F32(mut w) if w.is_unique() && w.view().is_standard_layout() => {
                let slice = w.ensure_owned().as_slice_mut().expect("standard layout");
                par_product_in_place(slice, m_slice);
                NdArrayTensor::F32(w)
            }
            NdArrayTensor::F32(w) => {
                let w_view = w.view();
                match w_view.as_slice() {
                    Some(w_slice) => {
                        let shape = w_view.shape().to_vec();
                        NdArrayTensor::from_data(TensorData::new(
                            par_product(w_slice, m_slice),
                            shape,
                        ))
                    }
                    None => {
                        drop(w_view);
                        tensor_product::<NdArray>(NdArrayTensor::F32(w), mask)
                    }
                }
            }
            other => tensor_product::<NdArray>(other, mask),
        }
    }
}

#[derive(Debug)]
struct MaskBackward;

impl<B: MaskBackend> Backward<B, 1> for MaskBackward {
    /// The mask.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let [parent] = ops.parents;
        if let Some(node) = parent {
            grads.register::<B>(node.id, B::apply_mask(grad, ops.state));
        }
    }
}

impl<B: MaskBackend, C: CheckpointStrategy> MaskBackend for Autodiff<B, C> {
    fn apply_mask(weight: FloatTensor<Self>, mask: FloatTensor<Self>) -> FloatTensor<Self> {
        let mask = mask.into_primitive();
        match MaskBackward
            .prepare::<C>([weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                prep.finish(mask.clone(), B::apply_mask(weight.into_primitive(), mask))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::apply_mask(weight.into_primitive(), mask)),
        }
    }
}

/// `weight ⊙ mask`, through the native op where the device has one (ndarray), else the
/// tensor product. Only `weight` gets a gradient.
///
/// # Shapes
/// - weight, mask: `[d_input, d_output]`
/// - output: `[d_input, d_output]`
pub fn apply_mask(weight: Tensor<2>, mask: Tensor<2>) -> Tensor<2> {
    match weight.device().inner().as_dispatch() {
        DispatchDevice::NdArray(_) => {
            Tensor::from_dispatch(<burn::backend::Dispatch as MaskBackend>::apply_mask(
                weight.into_dispatch(),
                mask.detach().into_dispatch(),
            ))
        }
        _ => weight * mask.detach(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    /// The native op and the tensor product agree, forward and backward, and the backward
    /// product does not touch tensors the caller still holds.
    #[test]
    #[allow(deprecated)]
    fn native_mask_matches_tensor_product() {
        let device = Device::ndarray().autodiff();
        let w =
            Tensor::<2>::random([70, 1100], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let m = Tensor::<2>::random([70, 1100], Distribution::Uniform(0.0, 1.0), &device)
            .greater_elem(0.7)
            .float();
        let g = Tensor::<2>::random([70, 1100], Distribution::Normal(0.0, 1.0), &device);
        let w_before = w.clone().into_data();
        let y = apply_mask(w.clone(), m.clone());
        let y_ref = w.clone().detach() * m.clone();
        y.to_data().assert_eq(&y_ref.into_data(), true);
        let grads = (y * g.clone()).sum().backward();
        let gw = w.grad(&grads).unwrap();
        let g_inner = g.inner() * m.inner();
        gw.into_data().assert_eq(&g_inner.into_data(), true);
        w.into_data().assert_eq(&w_before, true);
    }
}
