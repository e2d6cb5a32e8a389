//! The paper's hidden block `dropout(SReLU(x · W + b))` for a sparse `W` as one fused Burn op
//! on the CPU backends (a backend extension, like the sparse product it contains).
//!
//! Chained as separate ops, the sparse product, the bias, SReLU and dropout each crossed
//! between Burn's tensors and the host (a copy each way, a strided transpose of the
//! feature-major kernel output, a broadcast bias op and its reduction, a reshape backward that
//! copied a transposed gradient). Fused, the block reads its input, the weights and the
//! parameters once, runs the kernels of [`sparse_kernel`], adds the bias,
//! applies SReLU (the formula of [`srelu_backend`](crate::srelu_backend), per neuron row) and
//! the dropout mask, and writes one feature-major output `[d_output, batch]`, which is what
//! the next block's kernel reads. Its backward reads one gradient and writes the seven.
//! Results are those of the chained ops (tests in `tests/sparse.rs` check it).

#![allow(deprecated)] // burn-ndarray is deprecated upstream but still one of our CPU backends

use crate::dropout::HostMask;
use crate::sparse_backend::{HostFloats, connection_plan, dims2, floats, write_feature_major};
use crate::sparse_kernel::{self, rows_per_task};
use crate::sparse_plan::ConnectionPlan;
use crate::srelu_backend::{SRELU_TASKS_PER_THREAD, srelu_grads, srelu_value};
#[cfg(feature = "flex")]
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, NdArray, TensorMetadata, backend_extension};
use burn::tensor::{DType, Int, Tensor, TensorData};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::Arc;

/// Backends with the fused sparse SReLU block.
#[backend_extension(NdArray, Flex: cfg(feature = "flex"), Autodiff)]
pub trait SparseBlockBackend: Backend {
    /// `dropout(SReLU(x · W + b))`, feature-major, for the COO `W` (`values` at
    /// `(rows, cols)`) and SReLU's per-neuron parameters (`t_right` is the offset of the
    /// right threshold from `t_left`).
    ///
    /// # Shapes
    /// - xt: `[d_input, batch]`; values / rows / cols: `[nnz]`
    /// - bias, t_left, a_left, t_right, a_right: `[d_output]`
    /// - output: `[d_output, batch]`
    #[allow(clippy::too_many_arguments)]
    fn sparse_srelu_block(
        xt: FloatTensor<Self>,
        values: FloatTensor<Self>,
        rows: IntTensor<Self>,
        cols: IntTensor<Self>,
        bias: FloatTensor<Self>,
        t_left: FloatTensor<Self>,
        a_left: FloatTensor<Self>,
        t_right: FloatTensor<Self>,
        a_right: FloatTensor<Self>,
        dropout: Option<BlockDropout>,
    ) -> FloatTensor<Self>;
}

/// Dropout of a block: the Bernoulli mask's seed and keep probability (see
/// [`bernoulli_mask`](crate::dropout::bernoulli_mask)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockDropout {
    /// Seed of the mask.
    pub seed: u64,
    /// Probability of keeping a value (kept values are scaled by `1 / keep`).
    pub keep: f64,
}

/// What the forward pass computed on the host, kept for the backward pass. Feature-major: one
/// row of `batch` values per neuron.
#[derive(Debug)]
pub struct BlockHost {
    /// Pre-activation `(x · W + b)ᵀ`, `[d_output, batch]`.
    pub zt: Vec<f32>,
    /// Dropout mask `[d_output, batch]` (values `0` or `1 / keep`), if any.
    pub mask: Option<HostMask>,
    /// Output `(dropout(SReLU(z)))ᵀ`, `[d_output, batch]`.
    pub yt: Vec<f32>,
}

/// SReLU's thresholds of neuron `o`: `(t_l, a_l, t_r, a_r, sign of the t_r offset)`.
fn srelu_at(p: &[Vec<f32>; 4], o: usize) -> (f32, f32, f32, f32, f32) {
    let [tl, al, trp, ar] = p;
    (tl[o], al[o], tl[o] + trp[o].abs(), ar[o], trp[o].signum())
}

/// What one task of the forward SReLU pass reads: its first neuron, the batch, the bias, the
/// SReLU parameters and the dropout mask.
#[derive(Clone, Copy)]
struct ForwardRows<'a> {
    first: usize,
    batch: usize,
    bias: &'a [f32],
    params: &'a [Vec<f32>; 4],
    mask: Option<&'a HostMask>,
}

/// `z += b`, `y = SReLU(z) · mask` for the rows of one task (`yc`, `zc`: whole rows).
#[inline(always)]
fn forward_rows(yc: &mut [MaybeUninit<f32>], zc: &mut [f32], at: ForwardRows<'_>) {
    let ForwardRows {
        first,
        batch,
        bias,
        params,
        mask,
    } = at;
    // a row of the mask as values, where it is bits
    let mut mr = Vec::new();
    for (i, (yr, zr)) in yc
        .chunks_exact_mut(batch)
        .zip(zc.chunks_exact_mut(batch))
        .enumerate()
    {
        let o = first + i;
        let (tl, al, tr, ar, _) = srelu_at(params, o);
        let b = bias[o];
        // branch-free: vectorises over the batch
        let value = |z: &mut f32| {
            let v = *z + b;
            *z = v;
            srelu_value(v, tl, al, tr, ar)
        };
        match mask {
            Some(m) => {
                let mr = m.window(o * batch, batch, &mut mr);
                for ((y, z), m) in yr.iter_mut().zip(zr.iter_mut()).zip(mr) {
                    y.write(value(z) * m);
                }
            }
            None => {
                for (y, z) in yr.iter_mut().zip(zr.iter_mut()) {
                    y.write(value(z));
                }
            }
        }
    }
}

/// [`forward_rows`] compiled for AVX2 + FMA (eight lanes instead of SSE2's four).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn forward_rows_avx2(yc: &mut [MaybeUninit<f32>], zc: &mut [f32], at: ForwardRows<'_>) {
    forward_rows(yc, zc, at)
}

/// Host forward pass, feature-major: `xt` is `[d_input, batch]`; `bias` and the SReLU
/// parameters `params = [t_left, a_left, t_right offset, a_right]` have `d_output` values each.
#[allow(clippy::too_many_arguments)]
pub fn block_forward_host(
    xt: &[f32],
    batch: usize,
    values: &[f32],
    plan: &ConnectionPlan,
    bias: &[f32],
    params: &[Vec<f32>; 4],
    dropout: Option<BlockDropout>,
) -> BlockHost {
    let d_output = bias.len();
    let mask = dropout.map(|d| HostMask::new(d_output * batch, d.keep, d.seed));
    let fma = sparse_kernel::has_fma();
    // bias, SReLU and dropout on each task's rows right after the product
    let (zt, yt) = sparse_kernel::forward_t_then(xt, batch, values, plan, |first, zc, yc| {
        let rows = ForwardRows {
            first,
            batch,
            bias,
            params,
            mask: mask.as_ref(),
        };
        #[cfg(target_arch = "x86_64")]
        if fma {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            unsafe { forward_rows_avx2(yc, zc, rows) };
            return;
        }
        let _ = fma;
        forward_rows(yc, zc, rows);
    });
    BlockHost { zt, mask, yt }
}

/// Gradients of a block for `gt = (∂L/∂y)ᵀ` (`[d_output, batch]`).
#[derive(Debug)]
pub struct BlockGrads {
    /// `(∂L/∂x)ᵀ`, `[d_input, batch]` (when asked for).
    pub xt: Option<Vec<f32>>,
    /// `∂L/∂values`, `[nnz]` (when asked for).
    pub values: Option<Vec<f32>>,
    /// `∂L/∂b`, `[d_output]`.
    pub bias: Vec<f32>,
    /// SReLU's parameter gradients, in `params` order.
    pub params: [Vec<f32>; 4],
}

/// What one task of the backward SReLU pass reads.
#[derive(Clone, Copy)]
struct BackwardRows<'a> {
    first: usize,
    batch: usize,
    params: &'a [Vec<f32>; 4],
    mask: Option<&'a HostMask>,
}

/// For the rows of one task: `g` (∂L/∂y) becomes ∂L/∂z in place (through the dropout mask and
/// SReLU), and `sums` gets each neuron's ∂b, ∂t_l, ∂a_l, ∂t_r, ∂a_r.
#[inline(always)]
fn srelu_backward_rows(gc: &mut [f32], zc: &[f32], sums: &mut [[f32; 5]], at: BackwardRows<'_>) {
    let BackwardRows {
        first,
        batch,
        params,
        mask,
    } = at;
    // a row of the mask as values, where it is bits
    let mut mr = Vec::new();
    let rows = gc.chunks_exact_mut(batch).zip(zc.chunks_exact(batch));
    for (i, ((gr, zr), s)) in rows.zip(sums.iter_mut()).enumerate() {
        let o = first + i;
        if let Some(m) = mask {
            let mr = m.window(o * batch, batch, &mut mr);
            gr.iter_mut().zip(mr).for_each(|(g, m)| *g *= m);
        }
        let (tl, al, tr, ar, sign) = srelu_at(params, o);
        // LANES partial sums per quantity, so that the loop vectorises
        let mut acc = [[0f32; LANES]; 5];
        let mut step = |g: &mut f32, v: f32, lane: usize| {
            let (gz, [a, b, c, d]) = srelu_grads(v, *g, tl, al, tr, ar);
            *g = gz;
            acc[0][lane] += gz;
            acc[1][lane] += a;
            acc[2][lane] += b;
            acc[3][lane] += c * sign;
            acc[4][lane] += d;
        };
        let mut gch = gr.chunks_exact_mut(LANES);
        let mut zch = zr.chunks_exact(LANES);
        for (gc, zc) in (&mut gch).zip(&mut zch) {
            for lane in 0..LANES {
                step(&mut gc[lane], zc[lane], lane);
            }
        }
        for (g, &v) in gch.into_remainder().iter_mut().zip(zch.remainder()) {
            step(g, v, 0);
        }
        *s = acc.map(|a| a.iter().sum::<f32>());
    }
}

/// [`srelu_backward_rows`] compiled for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn srelu_backward_rows_avx2(
    gc: &mut [f32],
    zc: &[f32],
    sums: &mut [[f32; 5]],
    at: BackwardRows<'_>,
) {
    srelu_backward_rows(gc, zc, sums, at)
}

/// Host backward pass of [`block_forward_host`] (`xt` as given to it).
#[allow(clippy::too_many_arguments)]
pub fn block_backward_host(
    h: &BlockHost,
    xt: &[f32],
    mut gt: Vec<f32>,
    batch: usize,
    values: &[f32],
    plan: &ConnectionPlan,
    params: &[Vec<f32>; 4],
    want_x: bool,
    want_values: bool,
) -> BlockGrads {
    let d_output = params[0].len();
    // per neuron: ∂b, ∂t_l, ∂a_l, ∂t_r, ∂a_r; gt becomes ∂L/∂z in place
    let mut sums = vec![[0f32; 5]; d_output];
    if batch > 0 {
        let per = rows_per_task(d_output, SRELU_TASKS_PER_THREAD);
        let fma = sparse_kernel::has_fma();
        gt.par_chunks_mut(per * batch)
            .zip(h.zt.par_chunks(per * batch))
            .zip(sums.par_chunks_mut(per))
            .enumerate()
            .for_each(|(t, ((gc, zc), sc))| {
                let rows = BackwardRows {
                    first: t * per,
                    batch,
                    params,
                    mask: h.mask.as_ref(),
                };
                #[cfg(target_arch = "x86_64")]
                if fma {
                    // SAFETY: the CPU has AVX2 and FMA (checked above).
                    unsafe { srelu_backward_rows_avx2(gc, zc, sc, rows) };
                    return;
                }
                let _ = fma;
                srelu_backward_rows(gc, zc, sc, rows);
            });
    }
    let (gxt, gv) = sparse_kernel::backward_t(xt, &gt, batch, values, plan, want_x, want_values);
    let col = |k: usize| sums.iter().map(|s| s[k]).collect::<Vec<f32>>();
    BlockGrads {
        xt: gxt,
        values: gv,
        bias: col(0),
        params: [col(1), col(2), col(3), col(4)],
    }
}

/// Partial sums per reduction in the backward pass (two AVX registers of `f32`).
const LANES: usize = 16;

/// The host copies of one block's inputs.
#[derive(Debug)]
struct BlockInputs<B: Backend> {
    host: BlockHost,
    xt: HostFloats<B>,
    values: HostFloats<B>,
    plan: Arc<ConnectionPlan>,
    params: [Vec<f32>; 4],
    batch: usize,
    /// dtypes of x, values, bias and the four parameters.
    dtypes: [DType; 7],
    device: B::Device,
}

#[allow(clippy::too_many_arguments)]
fn run_forward<B: Backend>(
    xt: FloatTensor<B>,
    values: FloatTensor<B>,
    rows: IntTensor<B>,
    cols: IntTensor<B>,
    bias: FloatTensor<B>,
    params: [FloatTensor<B>; 4],
    dropout: Option<BlockDropout>,
) -> (BlockInputs<B>, FloatTensor<B>) {
    let (device, shape) = (xt.device(), xt.shape());
    let (d_input, batch) = dims2(&shape);
    let [tl, al, tr, ar] = &params;
    let dtypes = [&xt, &values, &bias, tl, al, tr, ar].map(|t| t.dtype());
    let plan = connection_plan::<B>(&rows, &cols, d_input, bias.shape()[0]);
    let (xt, values, bias) = (
        HostFloats::feature_major(xt),
        HostFloats::read(values),
        floats::<B>(bias),
    );
    let params = params.map(floats::<B>);
    let mut host = block_forward_host(
        xt.as_slice(),
        batch,
        values.as_slice(),
        &plan,
        &bias,
        &params,
        dropout,
    );
    let yt = std::mem::take(&mut host.yt);
    let out = write_feature_major::<B>(yt, [bias.len(), batch], dtypes[0], &device);
    let inputs = BlockInputs {
        host,
        xt,
        values,
        plan,
        params,
        batch,
        dtypes,
        device,
    };
    (inputs, out)
}

/// The CPU backends run the host code (one impl per backend: the extension's dispatch needs
/// one).
macro_rules! host_block {
    ($backend:ty) => {
        impl SparseBlockBackend for $backend {
            fn sparse_srelu_block(
                xt: FloatTensor<Self>,
                values: FloatTensor<Self>,
                rows: IntTensor<Self>,
                cols: IntTensor<Self>,
                bias: FloatTensor<Self>,
                t_left: FloatTensor<Self>,
                a_left: FloatTensor<Self>,
                t_right: FloatTensor<Self>,
                a_right: FloatTensor<Self>,
                dropout: Option<BlockDropout>,
            ) -> FloatTensor<Self> {
                let params = [t_left, a_left, t_right, a_right];
                run_forward::<Self>(xt, values, rows, cols, bias, params, dropout).1
            }
        }
    };
}

host_block!(NdArray);
#[cfg(feature = "flex")]
host_block!(Flex);

#[derive(Debug)]
struct BlockBackward;

impl<B: Backend> Backward<B, 7> for BlockBackward {
    type State = Arc<BlockInputs<B>>;

    fn backward(self, ops: Ops<Self::State, 7>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let [node_x, node_values, rest @ ..] = ops.parents;
        let g = block_backward_host(
            &s.host,
            s.xt.as_slice(),
            HostFloats::<B>::feature_major(grad).into_vec(),
            s.batch,
            s.values.as_slice(),
            &s.plan,
            &s.params,
            node_x.is_some(),
            node_values.is_some(),
        );
        let d_output = s.params[0].len();
        let [p0, p1, p2, p3] = g.params;
        if let (Some(node), Some(gxt)) = (node_x, g.xt) {
            let shape = [s.plan.n_in, s.batch];
            let t = write_feature_major::<B>(gxt, shape, s.dtypes[0], &s.device);
            grads.register::<B>(node.id, t);
        }
        if let (Some(node), Some(gv)) = (node_values, g.values) {
            let data = TensorData::new(gv, [s.values.as_slice().len()]).convert_dtype(s.dtypes[1]);
            grads.register::<B>(node.id, B::float_from_data(data, &s.device));
        }
        let per_neuron = [g.bias, p0, p1, p2, p3];
        for ((parent, v), dtype) in rest.into_iter().zip(per_neuron).zip(&s.dtypes[2..]) {
            if let Some(node) = parent {
                let data = TensorData::new(v, [d_output]).convert_dtype(*dtype);
                grads.register::<B>(node.id, B::float_from_data(data, &s.device));
            }
        }
    }
}

impl<B: SparseBlockBackend, C: CheckpointStrategy> SparseBlockBackend for Autodiff<B, C> {
    fn sparse_srelu_block(
        xt: FloatTensor<Self>,
        values: FloatTensor<Self>,
        rows: IntTensor<Self>,
        cols: IntTensor<Self>,
        bias: FloatTensor<Self>,
        t_left: FloatTensor<Self>,
        a_left: FloatTensor<Self>,
        t_right: FloatTensor<Self>,
        a_right: FloatTensor<Self>,
        dropout: Option<BlockDropout>,
    ) -> FloatTensor<Self> {
        let tracked = [&xt, &values, &bias, &t_left, &a_left, &t_right, &a_right];
        match BlockBackward
            .prepare::<C>(tracked.map(|t| t.node()))
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let [x, values, bias, tl, al, tr, ar] = tracked.map(|t| t.primitive().clone());
                let (inputs, y) =
                    run_forward::<B>(x, values, rows, cols, bias, [tl, al, tr, ar], dropout);
                prep.finish(Arc::new(inputs), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::sparse_srelu_block(
                xt.into_primitive(),
                values.into_primitive(),
                rows,
                cols,
                bias.into_primitive(),
                t_left.into_primitive(),
                a_left.into_primitive(),
                t_right.into_primitive(),
                a_right.into_primitive(),
                dropout,
            )),
        }
    }
}

/// `dropout(SReLU(x · W + b))` through the fused op, feature-major (the device must have the
/// native kernels: [`has_native_kernel`](crate::sparse_backend::has_native_kernel)).
///
/// # Shapes
/// - xt: `[d_input, batch]`; values / rows / cols: `[nnz]`
/// - bias and the four SReLU parameters: `[d_output]`
/// - output: `[d_output, batch]`
pub fn sparse_srelu_block(
    xt: Tensor<2>,
    values: Tensor<1>,
    rows: Tensor<1, Int>,
    cols: Tensor<1, Int>,
    bias: Tensor<1>,
    params: [Tensor<1>; 4],
    dropout: Option<BlockDropout>,
) -> Tensor<2> {
    let [tl, al, tr, ar] = params.map(|t| t.into_dispatch());
    Tensor::from_dispatch(
        <burn::backend::Dispatch as SparseBlockBackend>::sparse_srelu_block(
            xt.into_dispatch(),
            values.into_dispatch(),
            rows.into_dispatch(),
            cols.into_dispatch(),
            bias.into_dispatch(),
            tl,
            al,
            tr,
            ar,
            dropout,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_batch_gives_empty_outputs_and_one_sample_the_formula() {
        // 3 inputs → 2 outputs, connections (0→1), (2→0)
        let plan = ConnectionPlan::from_i64(&[0, 2], &[1, 0], 3, 2);
        let params = [vec![0.0; 2], vec![0.2; 2], vec![1.0; 2], vec![1.0; 2]];
        let dropout = Some(BlockDropout { seed: 3, keep: 0.7 });
        let h = block_forward_host(&[], 0, &[0.5, -1.0], &plan, &[0.1, 0.2], &params, dropout);
        assert!(h.zt.is_empty() && h.yt.is_empty());
        assert!(h.mask.as_ref().is_some_and(|m| m.is_empty()));
        // and a batch of one against the formula: z = x·W + b, SReLU identity in [0, 1]
        let h = block_forward_host(
            &[0.4, 9.0, 0.2],
            1,
            &[0.5, -1.0],
            &plan,
            &[0.1, 0.2],
            &params,
            None,
        );
        let z = [0.1 - 1.0 * 0.2, 0.2 + 0.5 * 0.4];
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-6);
        assert!(close(&h.zt, &z), "{:?}", h.zt);
        assert!(close(&h.yt, &[0.2 * z[0], z[1]]), "{:?}", h.yt);
    }
}
