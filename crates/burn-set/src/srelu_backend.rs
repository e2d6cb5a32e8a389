//! SReLU as one fused op on the CPU backends (a Burn backend extension, like the sparse
//! product): one pass forward and one pass backward instead of the ~11 elementwise tensor ops
//! (and their backward ops) of the composed formula. On a SET-MLP with sparse layers those ops
//! were a large part of a training step. Other backends use the composed formula
//! ([`SRelu::forward`](crate::srelu::SRelu::forward)).
//!
//! With `t_r = t_l + |t_r'|` (the right threshold is parameterised as an offset), per neuron:
//! `y = t_l + a_l (x − t_l)` for `x < t_l`, `y = t_r + a_r (x − t_r)` for `x > t_r`, else `y = x`.

#![allow(deprecated)] // burn-ndarray is deprecated upstream but still one of our CPU backends

use crate::sparse_backend::{dims2, floats};
use crate::sparse_kernel::rows_per_task;
#[cfg(feature = "flex")]
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, NdArray, TensorMetadata, backend_extension};
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

/// Tasks per thread of the elementwise SReLU passes (rows of even cost).
pub(crate) const SRELU_TASKS_PER_THREAD: usize = 4;

/// SReLU of `v` for one neuron (`tr` is the right threshold itself, `t_l + |t_r'|`).
/// Branch-free (the regions are unpredictable), so loops over it vectorise.
#[inline(always)]
pub(crate) fn srelu_value(v: f32, tl: f32, al: f32, tr: f32, ar: f32) -> f32 {
    let l = (v < tl) as u32 as f32;
    let r = (v > tr) as u32 as f32;
    v + l * (1.0 - al) * (tl - v) + r * (ar - 1.0) * (v - tr)
}

/// For `g = ∂L/∂y` at input `v` of one neuron: `∂L/∂x` and this element's share of
/// `[∂t_l, ∂a_l, ∂t_r, ∂a_r]` (`∂t_r` with respect to the threshold itself: times the sign of
/// the offset `t_r'` for the parameter). Branch-free, like [`srelu_value`].
#[inline(always)]
pub(crate) fn srelu_grads(v: f32, g: f32, tl: f32, al: f32, tr: f32, ar: f32) -> (f32, [f32; 4]) {
    let l = (v < tl) as u32 as f32;
    let r = (v > tr) as u32 as f32;
    let (gl, gr) = (g * l, g * r);
    (
        g * (l * al + r * ar + (1.0 - l - r)),
        [
            gl * (1.0 - al) + gr * (1.0 - ar),
            gl * (v - tl),
            gr * (1.0 - ar),
            gr * (v - tr),
        ],
    )
}

/// Host forward: `x` is `[n, f]` row-major, parameters `[f]` (`t_right` = the offset `t_r'`).
pub fn srelu_forward_host(x: &[f32], f: usize, p: &[Vec<f32>; 4]) -> Vec<f32> {
    let [tl, al, trp, ar] = p;
    let tr: Vec<f32> = tl.iter().zip(trp).map(|(l, o)| l + o.abs()).collect();
    let mut y = vec![0f32; x.len()];
    if f == 0 {
        return y;
    }
    let per = rows_per_task(x.len() / f, SRELU_TASKS_PER_THREAD) * f;
    y.par_chunks_mut(per)
        .zip(x.par_chunks(per))
        .for_each(|(yc, xc)| {
            let (tl, al, tr, ar) = (&tl[..f], &al[..f], &tr[..f], &ar[..f]);
            for (yr, xr) in yc.chunks_exact_mut(f).zip(xc.chunks_exact(f)) {
                let (yr, xr) = (&mut yr[..f], &xr[..f]);
                // branch-free (the regions are unpredictable), so it vectorises over neurons
                for j in 0..f {
                    yr[j] = srelu_value(xr[j], tl[j], al[j], tr[j], ar[j]);
                }
            }
        });
    y
}

/// Host backward for `g = ∂L/∂y` (`[n, f]`): `∂L/∂x` and the four parameter gradients
/// (summed over the rows).
pub fn srelu_backward_host(
    x: &[f32],
    g: &[f32],
    f: usize,
    p: &[Vec<f32>; 4],
) -> (Vec<f32>, [Vec<f32>; 4]) {
    let [tl, al, trp, ar] = p;
    let tr: Vec<f32> = tl.iter().zip(trp).map(|(l, o)| l + o.abs()).collect();
    let sign: Vec<f32> = trp.iter().map(|o| o.signum()).collect();
    let mut gx = vec![0f32; x.len()];
    if f == 0 {
        return (gx, Default::default());
    }
    let per = rows_per_task(x.len() / f, SRELU_TASKS_PER_THREAD) * f;
    let zero = || vec![0f32; 4 * f];
    let acc = gx
        .par_chunks_mut(per)
        .zip(x.par_chunks(per).zip(g.par_chunks(per)))
        .fold(zero, |mut acc, (gxc, (xc, gc))| {
            let (d_tl, rest) = acc.split_at_mut(f);
            let (d_al, rest) = rest.split_at_mut(f);
            let (d_tr, d_ar) = rest.split_at_mut(f);
            let (d_tr, d_ar) = (&mut d_tr[..f], &mut d_ar[..f]);
            let (tl, al, tr, ar, sign) = (&tl[..f], &al[..f], &tr[..f], &ar[..f], &sign[..f]);
            for ((gxr, xr), gr) in gxc
                .chunks_exact_mut(f)
                .zip(xc.chunks_exact(f))
                .zip(gc.chunks_exact(f))
            {
                let (gxr, xr, gr) = (&mut gxr[..f], &xr[..f], &gr[..f]);
                // branch-free, bounds checks hoisted: vectorises over neurons
                for j in 0..f {
                    let (gx, [a, b, c, d]) = srelu_grads(xr[j], gr[j], tl[j], al[j], tr[j], ar[j]);
                    gxr[j] = gx;
                    d_tl[j] += a;
                    d_al[j] += b;
                    d_tr[j] += c * sign[j];
                    d_ar[j] += d;
                }
            }
            acc
        })
        .reduce(zero, |mut a, b| {
            a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
            a
        });
    let part = |i: usize| acc[i * f..(i + 1) * f].to_vec();
    (gx, [part(0), part(1), part(2), part(3)])
}

/// Backends with a fused SReLU.
#[backend_extension(NdArray, Flex: cfg(feature = "flex"), Autodiff)]
pub trait SReluBackend: Backend {
    /// SReLU of `x` (`[n, f]`) with per-feature parameters (`[f]` each; `t_right` is the
    /// offset of the right threshold from `t_left`).
    fn srelu(
        x: FloatTensor<Self>,
        t_left: FloatTensor<Self>,
        a_left: FloatTensor<Self>,
        t_right: FloatTensor<Self>,
        a_right: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

fn host_srelu<B: Backend>(x: FloatTensor<B>, p: [FloatTensor<B>; 4]) -> FloatTensor<B> {
    let (device, dtype, shape) = (x.device(), x.dtype(), x.shape());
    let (_, f) = dims2(&shape);
    let y = srelu_forward_host(&floats::<B>(x), f, &p.map(floats::<B>));
    B::float_from_data(TensorData::new(y, shape).convert_dtype(dtype), &device)
}

/// The CPU backends run the host kernel (one impl per backend: the extension's dispatch
/// needs one).
macro_rules! host_srelu {
    ($backend:ty) => {
        impl SReluBackend for $backend {
            fn srelu(
                x: FloatTensor<Self>,
                t_left: FloatTensor<Self>,
                a_left: FloatTensor<Self>,
                t_right: FloatTensor<Self>,
                a_right: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                host_srelu::<Self>(x, [t_left, a_left, t_right, a_right])
            }
        }
    };
}

host_srelu!(NdArray);
#[cfg(feature = "flex")]
host_srelu!(Flex);

#[derive(Debug)]
struct SReluBackward;

impl<B: Backend> Backward<B, 5> for SReluBackward {
    /// x and the four parameters.
    type State = [FloatTensor<B>; 5];

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let [x, tl, al, tr, ar] = ops.state;
        let (device, shape) = (x.device(), x.shape());
        let dtypes = [&x, &tl, &al, &tr, &ar].map(|t| t.dtype());
        let (_, f) = dims2(&shape);
        let (gx, [gtl, gal, gtr, gar]) = srelu_backward_host(
            &floats::<B>(x),
            &floats::<B>(grad),
            f,
            &[tl, al, tr, ar].map(floats::<B>),
        );
        let outs = [
            TensorData::new(gx, shape),
            TensorData::new(gtl, [f]),
            TensorData::new(gal, [f]),
            TensorData::new(gtr, [f]),
            TensorData::new(gar, [f]),
        ];
        for ((parent, data), dtype) in ops.parents.into_iter().zip(outs).zip(dtypes) {
            if let Some(node) = parent {
                let t = B::float_from_data(data.convert_dtype(dtype), &device);
                grads.register::<B>(node.id, t);
            }
        }
    }
}

impl<B: SReluBackend, C: CheckpointStrategy> SReluBackend for Autodiff<B, C> {
    fn srelu(
        x: FloatTensor<Self>,
        t_left: FloatTensor<Self>,
        a_left: FloatTensor<Self>,
        t_right: FloatTensor<Self>,
        a_right: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let nodes = [&x, &t_left, &a_left, &t_right, &a_right].map(|t| t.node());
        match SReluBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let state = [x, t_left, a_left, t_right, a_right].map(|t| t.primitive().clone());
                let [x, tl, al, tr, ar] = state.clone();
                prep.finish(state, B::srelu(x, tl, al, tr, ar))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::srelu(
                x.into_primitive(),
                t_left.into_primitive(),
                a_left.into_primitive(),
                t_right.into_primitive(),
                a_right.into_primitive(),
            )),
        }
    }
}

/// The fused SReLU (the device must have the native kernels:
/// [`has_native_kernel`](crate::sparse_backend::has_native_kernel)).
///
/// # Shapes
/// - x: `[n, f]`; parameters: `[f]`
/// - output: `[n, f]`
pub fn srelu_fused(x: Tensor<2>, params: [Tensor<1>; 4]) -> Tensor<2> {
    let [tl, al, tr, ar] = params.map(|t| t.into_dispatch());
    Tensor::from_dispatch(<burn::backend::Dispatch as SReluBackend>::srelu(
        x.into_dispatch(),
        tl,
        al,
        tr,
        ar,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_backward_matches_finite_differences() {
        let f = 3;
        let p = [
            vec![-0.5f32, 0.0, 0.2],
            vec![0.1, 0.3, -0.2],
            vec![1.0, -0.7, 0.4],
            vec![0.6, 1.5, 0.9],
        ];
        let x: Vec<f32> = (0..6 * f).map(|i| (i as f32 * 0.37).sin() * 2.0).collect();
        let g: Vec<f32> = (0..6 * f).map(|i| (i as f32 * 0.11).cos()).collect();
        let loss = |x: &[f32], p: &[Vec<f32>; 4]| -> f64 {
            srelu_forward_host(x, f, p)
                .iter()
                .zip(&g)
                .map(|(y, g)| (*y as f64) * (*g as f64))
                .sum()
        };
        let (gx, gp) = srelu_backward_host(&x, &g, f, &p);
        let h = 1e-3f32;
        for i in 0..x.len() {
            let (mut a, mut b) = (x.clone(), x.clone());
            a[i] += h;
            b[i] -= h;
            let num = (loss(&a, &p) - loss(&b, &p)) / (2.0 * h as f64);
            assert!(
                (num - gx[i] as f64).abs() < 1e-2,
                "x[{i}]: {num} vs {}",
                gx[i]
            );
        }
        for k in 0..4 {
            for j in 0..f {
                let (mut a, mut b) = (p.clone(), p.clone());
                a[k][j] += h;
                b[k][j] -= h;
                let num = (loss(&x, &a) - loss(&x, &b)) / (2.0 * h as f64);
                assert!(
                    (num - gp[k][j] as f64).abs() < 1e-2,
                    "param {k}[{j}]: {num} vs {}",
                    gp[k][j]
                );
            }
        }
    }
}
