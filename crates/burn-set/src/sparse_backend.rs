//! The sparse layer's custom Burn op, through Burn's backend-extension mechanism
//! (`#[backend_extension]`, burn feature `extension`): `y = x · W` for a COO `W`, run by the host
//! kernels of [`sparse_kernel`](crate::sparse_kernel) on the CPU backends (ndarray, flex), with a
//! hand-written backward pass for Autodiff. Other backends (wgpu, …) take the portable
//! gather/scatter path of [`SparseSetLinear`](crate::sparse_linear::SparseSetLinear).

#![allow(deprecated)] // burn-ndarray is deprecated upstream but still one of our CPU backends

use crate::sparse_kernel;
#[cfg(feature = "flex")]
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{
    Autodiff, Backend, DispatchDevice, NdArray, TensorMetadata, backend_extension,
};
use burn::tensor::{Device, Int, Tensor, TensorData, read_sync};
use std::sync::Arc;

/// Backends with a native sparse linear kernel.
#[backend_extension(NdArray, Flex: cfg(feature = "flex"), Autodiff)]
pub trait SparseLinearBackend: Backend {
    /// Feature-major sparse product: `yᵀ[o, s] = Σ_{k: cols[k] = o} values[k] · xᵀ[rows[k], s]`.
    ///
    /// # Shapes
    /// - xt: `[d_input, batch]`, values / rows / cols: `[nnz]`
    /// - output: `[d_output, batch]`
    fn sparse_linear(
        xt: FloatTensor<Self>,
        values: FloatTensor<Self>,
        rows: IntTensor<Self>,
        cols: IntTensor<Self>,
        d_output: usize,
    ) -> FloatTensor<Self>;
}

/// The CPU backends run the host kernel (one impl per backend: the extension's dispatch
/// needs one).
macro_rules! host_sparse_linear {
    ($backend:ty) => {
        impl SparseLinearBackend for $backend {
            fn sparse_linear(
                xt: FloatTensor<Self>,
                values: FloatTensor<Self>,
                rows: IntTensor<Self>,
                cols: IntTensor<Self>,
                d_output: usize,
            ) -> FloatTensor<Self> {
                forward_via_host::<Self>(xt, values, rows, cols, d_output)
            }
        }
    };
}

host_sparse_linear!(NdArray);
#[cfg(feature = "flex")]
host_sparse_linear!(Flex);

/// Whether `device` (with or without autodiff) has the native kernel.
pub fn has_native_kernel(device: &Device) -> bool {
    match device.clone().inner().as_dispatch() {
        DispatchDevice::NdArray(_) => true,
        #[cfg(feature = "flex")]
        DispatchDevice::Flex(_) => true,
        _ => false,
    }
}

/// `x · W` through the native kernel (the device must have one: [`has_native_kernel`]).
///
/// # Shapes
/// - x: `[batch, d_input]`, values / rows / cols: `[nnz]`
/// - output: `[batch, d_output]`
pub fn sparse_linear(
    x: Tensor<2>,
    values: Tensor<1>,
    rows: Tensor<1, Int>,
    cols: Tensor<1, Int>,
    d_output: usize,
) -> Tensor<2> {
    // The kernel works feature-major (one contiguous row of `batch` values per neuron); the
    // transposes are views, made contiguous by the reads the kernel does anyway.
    Tensor::<2>::from_dispatch(
        <burn::backend::Dispatch as SparseLinearBackend>::sparse_linear(
            x.transpose().into_dispatch(),
            values.into_dispatch(),
            rows.into_dispatch(),
            cols.into_dispatch(),
            d_output,
        ),
    )
    .transpose()
}

pub(crate) fn floats<B: Backend>(t: FloatTensor<B>) -> Vec<f32> {
    read_sync(B::float_into_data(t))
        .expect("reading a CPU tensor")
        .try_into_vec_as::<f32>()
        .expect("f32 data")
}

pub(crate) fn ints<B: Backend>(t: IntTensor<B>) -> Vec<i64> {
    read_sync(B::int_into_data(t))
        .expect("reading a CPU tensor")
        .try_into_vec_as::<i64>()
        .expect("i64 data")
}

/// Burn's ndarray backend reads strided tensors element by element (slow), flex copies them in
/// tiles. The feature-major tensors crossing the op are transposed views of batch-major storage,
/// so for ndarray they are transposed back (a free view), read contiguously and transposed on
/// the host, and written the mirror way.
fn host_transposes<B: 'static>() -> bool {
    core::any::TypeId::of::<B>() == core::any::TypeId::of::<NdArray>()
}

/// Reads a feature-major `[r, c]` tensor.
pub(crate) fn read_feature_major<B: Backend>(t: FloatTensor<B>) -> Vec<f32> {
    if host_transposes::<B>() {
        let (r, c) = dims2(&t.shape());
        sparse_kernel::transpose(&floats::<B>(B::float_transpose(t)), c, r)
    } else {
        floats::<B>(t)
    }
}

/// Writes a feature-major `[r, c]` tensor.
pub(crate) fn write_feature_major<B: Backend>(
    v: Vec<f32>,
    [r, c]: [usize; 2],
    dtype: burn::tensor::DType,
    device: &B::Device,
) -> FloatTensor<B> {
    if host_transposes::<B>() {
        let data = TensorData::new(sparse_kernel::transpose(&v, r, c), [c, r]).convert_dtype(dtype);
        B::float_transpose(B::float_from_data(data, device))
    } else {
        B::float_from_data(TensorData::new(v, [r, c]).convert_dtype(dtype), device)
    }
}

pub(crate) fn dims2(shape: &[usize]) -> (usize, usize) {
    assert_eq!(
        shape.len(),
        2,
        "sparse_linear expects a 2-D input, got {shape:?}"
    );
    (shape[0], shape[1])
}

/// The host copies one forward pass read, kept for its backward pass (so the backward reads
/// only the incoming gradient).
#[derive(Debug)]
struct HostInputs<D> {
    xt: Vec<f32>,
    values: Vec<f32>,
    rows: Vec<i64>,
    cols: Vec<i64>,
    d_input: usize,
    batch: usize,
    x_dtype: burn::tensor::DType,
    v_dtype: burn::tensor::DType,
    device: D,
}

fn read_inputs<B: Backend>(
    xt: FloatTensor<B>,
    values: FloatTensor<B>,
    rows: IntTensor<B>,
    cols: IntTensor<B>,
) -> HostInputs<B::Device> {
    let (d_input, batch) = dims2(&xt.shape());
    HostInputs {
        device: xt.device(),
        x_dtype: xt.dtype(),
        v_dtype: values.dtype(),
        xt: read_feature_major::<B>(xt),
        values: floats::<B>(values),
        rows: ints::<B>(rows),
        cols: ints::<B>(cols),
        d_input,
        batch,
    }
}

fn host_forward<B: Backend>(h: &HostInputs<B::Device>, d_output: usize) -> FloatTensor<B> {
    let yt = sparse_kernel::forward_t(&h.xt, h.batch, &h.values, &h.rows, &h.cols, d_output);
    write_feature_major::<B>(yt, [d_output, h.batch], h.x_dtype, &h.device)
}

fn forward_via_host<B: Backend>(
    xt: FloatTensor<B>,
    values: FloatTensor<B>,
    rows: IntTensor<B>,
    cols: IntTensor<B>,
    d_output: usize,
) -> FloatTensor<B> {
    host_forward::<B>(&read_inputs::<B>(xt, values, rows, cols), d_output)
}

#[derive(Debug)]
struct SparseLinearBackward;

impl<B: Backend> Backward<B, 2> for SparseLinearBackward {
    type State = Arc<HostInputs<B::Device>>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_values] = ops.parents;
        let grad = grads.consume::<B>(&ops.node); // [d_output, batch]
        let h = ops.state;
        let (gxt, gv) = sparse_kernel::backward_t(
            &h.xt,
            &read_feature_major::<B>(grad),
            h.batch,
            h.d_input,
            &h.values,
            &h.rows,
            &h.cols,
            node_x.is_some(),
            node_values.is_some(),
        );
        if let (Some(node), Some(gxt)) = (node_x, gxt) {
            let gxt = write_feature_major::<B>(gxt, [h.d_input, h.batch], h.x_dtype, &h.device);
            grads.register::<B>(node.id, gxt);
        }
        if let (Some(node), Some(gv)) = (node_values, gv) {
            let data = TensorData::new(gv, [h.values.len()]).convert_dtype(h.v_dtype);
            grads.register::<B>(node.id, B::float_from_data(data, &h.device));
        }
    }
}

impl<B: SparseLinearBackend, C: CheckpointStrategy> SparseLinearBackend for Autodiff<B, C> {
    fn sparse_linear(
        xt: FloatTensor<Self>,
        values: FloatTensor<Self>,
        rows: IntTensor<Self>,
        cols: IntTensor<Self>,
        d_output: usize,
    ) -> FloatTensor<Self> {
        let x = xt;
        match SparseLinearBackward
            .prepare::<C>([x.node(), values.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                // the backend's own op would read the same inputs: read them once, keep them
                let h = read_inputs::<B>(
                    x.primitive().clone(),
                    values.primitive().clone(),
                    rows,
                    cols,
                );
                let y = host_forward::<B>(&h, d_output);
                prep.finish(Arc::new(h), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::sparse_linear(
                x.into_primitive(),
                values.into_primitive(),
                rows,
                cols,
                d_output,
            )),
        }
    }
}
