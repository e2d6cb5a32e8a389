//! The sparse layer's custom Burn op, through Burn's backend-extension mechanism
//! (`#[backend_extension]`, burn feature `extension`): `y = x · W` for a COO `W`, run by the host
//! kernels of [`sparse_kernel`] on the CPU backends (ndarray, flex), with a
//! hand-written backward pass for Autodiff. Other backends (wgpu, …) take the portable
//! gather/scatter path of [`SparseSetLinear`](crate::sparse_linear::SparseSetLinear).

#![allow(deprecated)] // burn-ndarray is deprecated upstream but still one of our CPU backends

use crate::sparse_kernel;
use crate::sparse_plan::{ConnectionPlan, IndexStorage, Indices};
#[cfg(feature = "flex")]
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
#[cfg(feature = "flex")]
use burn::backend::flex::FlexTensor;
use burn::backend::ndarray::NdArrayTensor;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{
    Autodiff, Backend, DispatchDevice, NdArray, TensorMetadata, backend_extension,
};
use burn::tensor::{Device, Int, Tensor, TensorData, read_sync};
use std::any::Any;
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

fn as_any<T: Any>(t: &T) -> &dyn Any {
    t
}

/// An ndarray index tensor's values, read in place, and whether its storage is its own array
/// (not borrowed from a loaded file's bytes, which a clone copies elsewhere).
fn ndarray_indices(t: &NdArrayTensor) -> Option<(Indices<'_>, bool)> {
    match t {
        NdArrayTensor::I64(s) => s.view().to_slice().map(|v| (Indices::I64(v), s.is_owned())),
        NdArrayTensor::I32(s) => s.view().to_slice().map(|v| (Indices::I32(v), s.is_owned())),
        _ => None,
    }
}

/// The index tensors of a layer on ndarray (their own arrays), held by the plan cache.
struct NdArrayIndices(NdArrayTensor, NdArrayTensor);

impl IndexStorage for NdArrayIndices {
    fn only_reference(&self) -> bool {
        let unique = |t: &NdArrayTensor| match t {
            NdArrayTensor::I64(s) => s.is_unique(),
            NdArrayTensor::I32(s) => s.is_unique(),
            _ => false,
        };
        unique(&self.0) && unique(&self.1)
    }

    fn addresses(&self) -> [usize; 2] {
        let at = |t| ndarray_indices(t).map_or(0, |(i, _)| i.address());
        [at(&self.0), at(&self.1)]
    }
}

/// A flex index tensor's values, read in place.
#[cfg(feature = "flex")]
fn flex_indices(t: &FlexTensor) -> Option<Indices<'_>> {
    t.as_slice::<i64>()
        .map(Indices::I64)
        .or_else(|| t.as_slice::<i32>().map(Indices::I32))
}

/// The index tensors of a layer on flex, held by the plan cache (a clone shares the storage).
#[cfg(feature = "flex")]
struct FlexIndices(FlexTensor, FlexTensor);

#[cfg(feature = "flex")]
impl IndexStorage for FlexIndices {
    fn only_reference(&self) -> bool {
        self.0.is_unique() && self.1.is_unique()
    }

    fn addresses(&self) -> [usize; 2] {
        let at = |t| flex_indices(t).map_or(0, |i| i.address());
        [at(&self.0), at(&self.1)]
    }
}

/// The cached [`ConnectionPlan`] of the indices `rows → cols` of an `n_in × n_out` layer:
/// found by the tensors' storage on flex and for ndarray's own arrays (no read of the
/// indices), by a fingerprint of the indices elsewhere (read in place for ndarray storage
/// borrowed from a loaded file, through a host copy on other backends).
pub(crate) fn connection_plan<B: Backend>(
    rows: &IntTensor<B>,
    cols: &IntTensor<B>,
    n_in: usize,
    n_out: usize,
) -> Arc<ConnectionPlan> {
    if let (Some(r), Some(c)) = (
        as_any(rows).downcast_ref::<NdArrayTensor>(),
        as_any(cols).downcast_ref::<NdArrayTensor>(),
    ) && let (Some((ri, r_own)), Some((ci, c_own))) = (ndarray_indices(r), ndarray_indices(c))
    {
        if r_own && c_own {
            let held = || Box::new(NdArrayIndices(r.clone(), c.clone())) as Box<dyn IndexStorage>;
            return ConnectionPlan::cached_in_storage(ri, ci, n_in, n_out, held);
        }
        return ConnectionPlan::cached(ri, ci, n_in, n_out);
    }
    #[cfg(feature = "flex")]
    if let (Some(r), Some(c)) = (
        as_any(rows).downcast_ref::<FlexTensor>(),
        as_any(cols).downcast_ref::<FlexTensor>(),
    ) && let (Some(ri), Some(ci)) = (flex_indices(r), flex_indices(c))
    {
        let held = || Box::new(FlexIndices(r.clone(), c.clone())) as Box<dyn IndexStorage>;
        return ConnectionPlan::cached_in_storage(ri, ci, n_in, n_out, held);
    }
    let plan = |r: Indices<'_>, c: Indices<'_>| ConnectionPlan::cached(r, c, n_in, n_out);
    let host = |t: &IntTensor<B>| -> Vec<i64> {
        read_sync(B::int_into_data(t.clone()))
            .expect("reading a CPU tensor")
            .convert::<i64>()
            .into_vec::<i64>()
            .expect("i64 data")
    };
    plan(Indices::I64(&host(rows)), Indices::I64(&host(cols)))
}

/// The values of a contiguous `f32` tensor of a CPU backend, borrowed from its storage.
pub(crate) fn f32_slice<B: Backend>(t: &FloatTensor<B>) -> Option<&[f32]> {
    #[cfg(feature = "flex")]
    if let Some(t) = as_any(t).downcast_ref::<FlexTensor>() {
        return t.as_slice::<f32>();
    }
    match as_any(t).downcast_ref::<NdArrayTensor>() {
        Some(NdArrayTensor::F32(s)) => s.view().to_slice(),
        _ => None,
    }
}

/// A float tensor's values on the host, row-major: the tensor itself when its storage can be
/// borrowed (contiguous `f32` on ndarray or flex: no copy), a host copy otherwise.
#[derive(Debug)]
pub(crate) enum HostFloats<B: Backend> {
    Borrowed(FloatTensor<B>),
    Owned(Vec<f32>),
}

impl<B: Backend> HostFloats<B> {
    /// The values of `t`.
    pub(crate) fn read(t: FloatTensor<B>) -> Self {
        if f32_slice::<B>(&t).is_some() {
            Self::Borrowed(t)
        } else {
            Self::Owned(floats::<B>(t))
        }
    }

    /// The values of a feature-major `[r, c]` tensor. Those crossing the sparse ops are often
    /// transposed views of batch-major storage: they are read through the (free) transposed
    /// view and transposed on the host, in parallel cache blocks (the backends' own strided
    /// reads are element by element on ndarray and single-threaded on flex).
    pub(crate) fn feature_major(t: FloatTensor<B>) -> Self {
        if f32_slice::<B>(&t).is_some() {
            return Self::Borrowed(t);
        }
        let (r, c) = dims2(&t.shape());
        let tt = B::float_transpose(t);
        match f32_slice::<B>(&tt) {
            Some(v) => Self::Owned(sparse_kernel::transpose(v, c, r)),
            None => Self::Owned(floats::<B>(B::float_transpose(tt))),
        }
    }

    pub(crate) fn as_slice(&self) -> &[f32] {
        match self {
            Self::Borrowed(t) => f32_slice::<B>(t).expect("a borrowable tensor"),
            Self::Owned(v) => v,
        }
    }

    pub(crate) fn into_vec(self) -> Vec<f32> {
        match self {
            Self::Borrowed(t) => f32_slice::<B>(&t).expect("a borrowable tensor").to_vec(),
            Self::Owned(v) => v,
        }
    }
}

/// Burn's ndarray backend reads strided tensors element by element (slow): feature-major
/// results are written to it transposed, as the transposed view of batch-major storage.
fn host_transposes<B: 'static>() -> bool {
    core::any::TypeId::of::<B>() == core::any::TypeId::of::<NdArray>()
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
struct HostInputs<B: Backend> {
    xt: HostFloats<B>,
    values: HostFloats<B>,
    plan: Arc<ConnectionPlan>,
    batch: usize,
    x_dtype: burn::tensor::DType,
    v_dtype: burn::tensor::DType,
    device: B::Device,
}

fn read_inputs<B: Backend>(
    xt: FloatTensor<B>,
    values: FloatTensor<B>,
    rows: IntTensor<B>,
    cols: IntTensor<B>,
    d_output: usize,
) -> HostInputs<B> {
    let (d_input, batch) = dims2(&xt.shape());
    HostInputs {
        plan: connection_plan::<B>(&rows, &cols, d_input, d_output),
        device: xt.device(),
        x_dtype: xt.dtype(),
        v_dtype: values.dtype(),
        xt: HostFloats::feature_major(xt),
        values: HostFloats::read(values),
        batch,
    }
}

fn host_forward<B: Backend>(h: &HostInputs<B>) -> FloatTensor<B> {
    let yt = sparse_kernel::forward_t(h.xt.as_slice(), h.batch, h.values.as_slice(), &h.plan);
    write_feature_major::<B>(yt, [h.plan.n_out, h.batch], h.x_dtype, &h.device)
}

fn forward_via_host<B: Backend>(
    xt: FloatTensor<B>,
    values: FloatTensor<B>,
    rows: IntTensor<B>,
    cols: IntTensor<B>,
    d_output: usize,
) -> FloatTensor<B> {
    host_forward::<B>(&read_inputs::<B>(xt, values, rows, cols, d_output))
}

#[derive(Debug)]
struct SparseLinearBackward;

impl<B: Backend> Backward<B, 2> for SparseLinearBackward {
    type State = Arc<HostInputs<B>>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_values] = ops.parents;
        let grad = grads.consume::<B>(&ops.node); // [d_output, batch]
        let h = ops.state;
        let values = h.values.as_slice();
        let (gxt, gv) = sparse_kernel::backward_t(
            h.xt.as_slice(),
            HostFloats::<B>::feature_major(grad).as_slice(),
            h.batch,
            values,
            &h.plan,
            node_x.is_some(),
            node_values.is_some(),
        );
        if let (Some(node), Some(gxt)) = (node_x, gxt) {
            let gxt = write_feature_major::<B>(gxt, [h.plan.n_in, h.batch], h.x_dtype, &h.device);
            grads.register::<B>(node.id, gxt);
        }
        if let (Some(node), Some(gv)) = (node_values, gv) {
            let data = TensorData::new(gv, [values.len()]).convert_dtype(h.v_dtype);
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
                    d_output,
                );
                let y = host_forward::<B>(&h);
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
