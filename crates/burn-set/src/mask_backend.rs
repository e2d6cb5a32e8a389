//! The masked layer's ops as Burn ops (backend extension), for the CPU backends (ndarray,
//! flex): the masked weight `W ⊙ M`, and the product `x · (W ⊙ M)` whose weight gradient is
//! computed at the connections only.
//!
//! - `W ⊙ M` (ndarray; flex uses its own product): Burn-ndarray runs an elementwise product
//!   on one thread into a freshly allocated array; here the forward product runs on all cores
//!   and the backward one multiplies the (uniquely owned) gradient in place.
//! - `x · (W ⊙ M)`: the weight gradient `(xᵀ g) ⊙ M` is zero off the mask, so at SET's
//!   densities (a few %) computing the dense `xᵀ g` and masking it wastes nearly all of its
//!   `d_in · d_out · batch` multiply-adds. Below [`SAMPLED_MAX_DENSITY`] it is computed at the
//!   connections only ([`sparse_kernel::sampled_product`]); the forward product and the input
//!   gradient stay dense matrix products. The results are those of the masked dense product
//!   within float rounding (the sums run in another order), with one difference: off the mask
//!   the sampled gradient is exactly 0 even where `xᵀ g` overflows, where the dense product
//!   masked gives `inf · 0 = NaN`.
//!
//! Other backends use the tensor ops.

#![allow(deprecated)] // burn-ndarray is deprecated upstream but still one of our CPU backends

use crate::sparse_backend::{HostFloats, dims2, f32_slice};
use crate::sparse_kernel;
#[cfg(feature = "flex")]
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ndarray::NdArrayTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, Backend, DispatchDevice, NdArray, TensorMetadata, backend_extension,
};
use burn::tensor::module::linear;
use burn::tensor::{DType, Tensor, TensorData, assert_shape};
use rayon::prelude::*;

/// Elements per parallel task (256 KiB of `f32`).
const CHUNK: usize = 1 << 16;

/// Backends with a native masked-weight op.
#[backend_extension(NdArray, Flex: cfg(feature = "flex"), Autodiff)]
pub trait MaskBackend: Backend {
    /// `weight ⊙ mask`; only `weight` is differentiated (the mask is a constant).
    ///
    /// # Shapes
    /// - weight, mask: the same shape
    /// - output: that shape
    fn apply_mask(weight: FloatTensor<Self>, mask: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `x · (weight ⊙ mask)`; `x` and `weight` are differentiated, the weight's gradient
    /// through [`masked_weight_grad`](MaskBackend::masked_weight_grad).
    ///
    /// # Shapes
    /// - x: `[n, d_input]`
    /// - weight, mask: `[d_input, d_output]`
    /// - output: `[n, d_output]`
    fn masked_matmul(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        mask: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// `(xᵀ · grad) ⊙ mask`, the weight gradient of [`masked_matmul`](MaskBackend::masked_matmul).
    ///
    /// # Shapes
    /// - x: `[n, d_input]`
    /// - grad: `[n, d_output]`
    /// - mask and output: `[d_input, d_output]`
    fn masked_weight_grad(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        mask: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// The highest mask density at which the CPU backends compute a masked layer's weight
/// gradient at the connections only. Above it the dense product and the mask are faster: a
/// sampled entry costs a `batch`-long dot product of rows gathered at random, about 4–5 times
/// a dense entry's share of an optimised matrix product (measured on a 1000×1000 layer).
pub const SAMPLED_MAX_DENSITY: f64 = 0.1;

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

/// The CPU backends' `masked_matmul` (the dense product of the masked weight) and
/// `masked_weight_grad` (sampled at the connections where it applies, else the dense product
/// masked), on top of each backend's `apply_mask`.
macro_rules! host_masked_matmul {
    () => {
        fn masked_matmul(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            mask: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            Self::float_matmul(x, Self::apply_mask(weight, mask))
        }

        fn masked_weight_grad(
            x: FloatTensor<Self>,
            grad: FloatTensor<Self>,
            mask: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            sampled_weight_grad::<Self>(x, grad, mask).unwrap_or_else(|(x, grad, mask)| {
                Self::apply_mask(Self::float_matmul(Self::float_transpose(x), grad), mask)
            })
        }
    };
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

    host_masked_matmul!();
}

#[cfg(feature = "flex")]
impl MaskBackend for Flex {
    fn apply_mask(weight: FloatTensor<Self>, mask: FloatTensor<Self>) -> FloatTensor<Self> {
        tensor_product::<Flex>(weight, mask)
    }

    host_masked_matmul!();
}

type Triple<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

/// `(xᵀ · grad) ⊙ mask` at the mask's connections only, on a CPU backend whose `f32` tensors
/// the host can read ([`f32_slice`]); gives the inputs back where that does not apply (another
/// float type, or a mask denser than [`SAMPLED_MAX_DENSITY`]).
fn sampled_weight_grad<B: Backend>(
    x: FloatTensor<B>,
    grad: FloatTensor<B>,
    mask: FloatTensor<B>,
) -> Result<FloatTensor<B>, Triple<B>> {
    let (d_in, d_out) = dims2(&mask.shape());
    let (n, _) = dims2(&x.shape());
    let f32s = x.dtype() == DType::F32 && grad.dtype() == DType::F32;
    let Some(m) = f32_slice::<B>(&mask).filter(|m| f32s && takes_sampled_gradient(m, d_out)) else {
        return Err((x, grad, mask));
    };
    // feature-major copies of both (x is batch-major, so its transposed view is read)
    let xt = HostFloats::<B>::feature_major(B::float_transpose(x));
    let gt = HostFloats::<B>::feature_major(B::float_transpose(grad));
    let out = sparse_kernel::sampled_product(xt.as_slice(), gt.as_slice(), n, m, [d_in, d_out]);
    let device = mask.device();
    Ok(B::float_from_data(
        TensorData::new(out, [d_in, d_out]),
        &device,
    ))
}

/// Whether a layer with this 0/1 mask (`[d_in, d_out]`, row-major) gets its weight gradient
/// as a sampled product (on a CPU backend, in `f32`): its [`density`] estimate is at most
/// [`SAMPLED_MAX_DENSITY`].
pub(crate) fn takes_sampled_gradient(mask: &[f32], d_out: usize) -> bool {
    density(mask, d_out) <= SAMPLED_MAX_DENSITY
}

/// Rows of the mask [`density`] reads at most.
const DENSITY_ROWS: usize = 64;

/// The fraction of non-zero entries of a `[rows, row_len]` mask, estimated from at most
/// [`DENSITY_ROWS`] evenly spaced rows (all of them in smaller masks). It only picks the faster
/// of two ways to the same gradient, so an estimate will do, and reading all of a 1000 × 1000
/// mask cost as much as a tenth of the sampled product.
fn density(mask: &[f32], row_len: usize) -> f64 {
    let rows = mask.len() / row_len.max(1);
    if rows == 0 {
        return 0.0;
    }
    let step = rows.div_ceil(DENSITY_ROWS);
    let read = (0..rows).step_by(step);
    let n = read.len() * row_len;
    let set: usize = read
        .map(|r| {
            mask[r * row_len..(r + 1) * row_len]
                .iter()
                .filter(|v| **v != 0.0)
                .count()
        })
        .sum();
    set as f64 / n as f64
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

    fn masked_matmul(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        mask: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let mask = mask.into_primitive();
        match MaskedMatmulBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                // keep what each wanted gradient reads: x for the weight's, W ⊙ M for x's
                let (x_tracked, w_tracked) = (x.is_tracked(), weight.is_tracked());
                let x = x.into_primitive();
                let wm = B::apply_mask(weight.into_primitive(), mask.clone());
                let y = B::float_matmul(x.clone(), wm.clone());
                let state = MaskedMatmulState {
                    x: w_tracked.then_some(x),
                    wm: x_tracked.then_some(wm),
                    mask,
                };
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::masked_matmul(
                x.into_primitive(),
                weight.into_primitive(),
                mask,
            )),
        }
    }

    /// Not differentiated (it is itself a gradient): the inner backend's op on the values.
    fn masked_weight_grad(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        mask: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let inner = B::masked_weight_grad(
            x.into_primitive(),
            grad.into_primitive(),
            mask.into_primitive(),
        );
        <FloatTensor<Self>>::new(inner)
    }
}

#[derive(Debug)]
struct MaskedMatmulBackward;

/// What the backward of [`MaskBackend::masked_matmul`] reads.
#[derive(Debug, Clone)]
struct MaskedMatmulState<B: MaskBackend> {
    /// The input, when the weight is tracked.
    x: Option<FloatTensor<B>>,
    /// `weight ⊙ mask`, when the input is tracked.
    wm: Option<FloatTensor<B>>,
    mask: FloatTensor<B>,
}

impl<B: MaskBackend> Backward<B, 2> for MaskedMatmulBackward {
    type State = MaskedMatmulState<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let MaskedMatmulState { x, wm, mask } = ops.state;
        let [node_x, node_w] = ops.parents;
        if let (Some(node), Some(x)) = (node_w, x) {
            grads.register::<B>(node.id, B::masked_weight_grad(x, grad.clone(), mask));
        }
        if let (Some(node), Some(wm)) = (node_x, wm) {
            grads.register::<B>(node.id, B::float_matmul(grad, B::float_transpose(wm)));
        }
    }
}

/// `input · (weight ⊙ mask) + bias`, the masked layer's forward pass: on ndarray and flex
/// through the native op (weight gradient at the connections only while the mask is sparse), elsewhere
/// Burn's `linear` of the masked weight. `weight` and `input` get gradients, the mask none.
///
/// # Shapes
/// - input: `[..., d_input]`
/// - weight, mask: `[d_input, d_output]`
/// - bias: `[d_output]`
/// - output: `[..., d_output]`
///
/// # Panics
/// If the mask's shape is not the weight's, or the last axis of `input` is not `d_input`.
pub fn masked_linear<const D: usize>(
    input: Tensor<D>,
    weight: Tensor<2>,
    mask: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    let [d_in, d_out] = weight.dims();
    assert_eq!(
        mask.dims(),
        [d_in, d_out],
        "masked_linear: the mask's shape is not the weight's"
    );
    // (an empty batch would reshape to `[0, d_in]` whatever its last axis)
    assert_shape!(input, [.., d_in]);
    if !crate::sparse_backend::has_native_kernel(&weight.device()) {
        return linear(input, apply_mask(weight, mask), bias);
    }
    let mut dims = input.dims();
    let n = dims[..D - 1].iter().product();
    let x = input.reshape([n, d_in]);
    let y = Tensor::<2>::from_dispatch(<burn::backend::Dispatch as MaskBackend>::masked_matmul(
        x.into_dispatch(),
        weight.into_dispatch(),
        mask.detach().into_dispatch(),
    ));
    dims[D - 1] = d_out;
    let y = y.reshape(dims);
    match bias {
        Some(b) => y + b.unsqueeze(),
        None => y,
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

    /// Exact up to 64 rows; from 64 evenly spaced rows beyond (a 1000-row mask with a
    /// 4 % row band: the estimate stays near 4 %).
    #[test]
    fn density_reads_at_most_64_rows() {
        let row = |on: usize| -> Vec<f32> { (0..100).map(|j| (j < on) as u8 as f32).collect() };
        let small: Vec<f32> = (0..64)
            .flat_map(|r| row(if r == 0 { 100 } else { 0 }))
            .collect();
        assert_eq!(density(&small, 100), 100.0 / 6400.0);
        let large: Vec<f32> = (0..1000).flat_map(|r| row(4 + r % 2)).collect();
        let d = density(&large, 100);
        assert!((0.04..=0.05).contains(&d), "{d}");
        assert_eq!(density(&[], 100), 0.0);
        assert_eq!(density(&[], 0), 0.0);
    }

    fn assert_close(a: Tensor<3>, b: Tensor<3>) {
        let (a, b) = (
            a.into_data().to_vec::<f32>().unwrap(),
            b.into_data().to_vec::<f32>().unwrap(),
        );
        assert_eq!(a.len(), b.len());
        for (k, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{k}: {x} vs {y}");
        }
    }

    /// The native masked product (ndarray, flex) is Burn's `linear` of the masked weight,
    /// forward and backward (input, weight and bias gradients), on a 3-D input, with a sparse
    /// mask (weight gradient sampled at the connections) and a dense one (masked dense
    /// product). The weight gradient is exactly zero off the mask.
    #[test]
    #[allow(deprecated)]
    fn masked_linear_is_linear_of_the_masked_weight() {
        #[allow(unused_mut)]
        let mut devices = vec![Device::ndarray()];
        #[cfg(feature = "flex")]
        devices.push(Device::flex());
        let (d_in, d_out) = (67, 45);
        for (device, (keep, sampled)) in devices
            .into_iter()
            .flat_map(|d| [(d.clone(), (0.05, true)), (d, (0.5, false))])
        {
            assert!(crate::sparse_backend::has_native_kernel(&device));
            let device = device.autodiff();
            let n = Distribution::Normal(0.0, 1.0);
            let m = Tensor::<2>::random([d_in, d_out], Distribution::Uniform(0.0, 1.0), &device)
                .lower_elem(keep)
                .float();
            let m_host = m.to_data().to_vec::<f32>().unwrap();
            assert_eq!(density(&m_host, d_out) <= SAMPLED_MAX_DENSITY, sampled);
            let w = Tensor::<2>::random([d_in, d_out], n, &device);
            let b = Tensor::<1>::random([d_out], n, &device);
            let x = Tensor::<3>::random([3, 5, d_in], n, &device);
            // a permuted view: the gradient reaching the op is not contiguous row-major
            let g = Tensor::<3>::random([d_out, 5, 3], n, &device).swap_dims(0, 2);
            let leaves = || {
                (
                    x.clone().detach().require_grad(),
                    w.clone().detach().require_grad(),
                    b.clone().detach().require_grad(),
                )
            };
            let (x1, w1, b1) = leaves();
            let y1 = masked_linear(x1.clone(), w1.clone(), m.clone(), Some(b1.clone()));
            let (x2, w2, b2) = leaves();
            let y2 = linear(x2.clone(), w2.clone() * m.clone(), Some(b2.clone()));
            assert_close(y1.clone(), y2.clone());
            let g1 = (y1 * g.clone()).sum().backward();
            let g2 = (y2 * g.clone()).sum().backward();
            let gx2 = x2.grad(&g2).unwrap();
            assert_close(x1.grad(&g1).unwrap(), gx2.clone());
            let (gw1, gw2) = (w1.grad(&g1).unwrap(), w2.grad(&g2).unwrap());
            assert_close(gw1.clone().unsqueeze(), gw2.clone().unsqueeze());
            // only the weight tracked (a first layer's input), then only the input
            let w3 = w.clone().detach().require_grad();
            let y3 = masked_linear(x.clone().detach(), w3.clone(), m.clone(), None);
            let g3 = (y3 * g.clone()).sum().backward();
            assert_close(w3.grad(&g3).unwrap().unsqueeze(), gw2.unsqueeze());
            let x4 = x.clone().detach().require_grad();
            let y4 = masked_linear(x4.clone(), w.clone().detach(), m.clone(), None);
            let g4 = (y4 * g.clone()).sum().backward();
            assert_close(x4.grad(&g4).unwrap(), gx2);
            // a 1-D input
            let x1d = x.clone().detach().slice([0..1, 0..1]).reshape([d_in]);
            let y1d = masked_linear(x1d.clone(), w.clone(), m.clone(), Some(b.clone()));
            let want = linear(x1d, w.clone() * m.clone(), Some(b.clone()));
            assert_close(y1d.unsqueeze(), want.unsqueeze());
            assert_close(
                b1.grad(&g1).unwrap().unsqueeze(),
                b2.grad(&g2).unwrap().unsqueeze(),
            );
            let off: f32 = gw1
                .mul(m.inner().neg().add_scalar(1.0))
                .abs()
                .max()
                .into_scalar();
            assert_eq!(off, 0.0, "weight gradient off the mask");
        }
    }
}
