//! `SparseSetLinear`: the truly sparse storage of a SET layer. Values are a trainable 1-D
//! parameter of length nnz; the structure is two saved, never-trained index tensors (COO:
//! input row and output column of every connection, sorted by flat position
//! `row · d_output + col`). Nothing of size `d_input × d_output` is ever allocated — not in
//! init, forward, backward, evolution, saving or loading.
//!
//! The forward pass costs ∝ batch × nnz on every backend. On the CPU backends (ndarray, flex) it
//! is a native multithreaded, vectorised kernel with its own backward pass (a Burn backend
//! extension: [`sparse_backend`](crate::sparse_backend)); elsewhere (wgpu, …) it is Burn's
//! portable gather/scatter in a feature-major layout, `xᵀ.select(0, rows) * values` then
//! `zeros.select_assign(0, cols, …, Add)`, which has autodiff on every backend. Both compute what
//! a [`SetLinear`](crate::set_linear::SetLinear) with the same topology and weights computes.

use crate::block_backend::{BlockDropout, sparse_srelu_block};
use crate::dropout::{dropout_forward, host_mask_seed};
use crate::set_linear::{SetLinearConfig, Sparsity, float_data};
use crate::sparse_backend::{has_native_kernel, sparse_linear};
use crate::srelu::SRelu;
use crate::topology::{SparseTopology, TopologyError, er_probability};
use burn::module::{Module, Param, ParamId};
use burn::nn::Dropout;
use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor, TensorData};

/// The connection indices of a sparse layer. The variant tells SET whether to evolve it.
#[derive(Module, Debug)]
pub enum SparseStructure {
    /// Evolved by SET.
    Evolving(SparseIndex),
    /// Fixed Erdős–Rényi topology (FixProb).
    Fixed(SparseIndex),
}

/// COO indices of the connections, sorted by flat position.
#[derive(Module, Debug)]
pub struct SparseIndex {
    /// Input neuron of every connection, `[nnz]`.
    pub rows: Param<Tensor<1, Int>>,
    /// Output neuron of every connection, `[nnz]`.
    pub cols: Param<Tensor<1, Int>>,
    /// `[d_input, d_output]`, saved with the indices (and visible to module visitors).
    pub dims: Param<Tensor<1, Int>>,
}

impl SparseStructure {
    /// The indices.
    pub fn index(&self) -> &SparseIndex {
        match self {
            Self::Evolving(i) | Self::Fixed(i) => i,
        }
    }
}

/// A sparse linear layer stored as (values, indices): memory and compute ∝ connections.
///
/// Should be created with [`SetLinearConfig::init_sparse`].
#[derive(Module, Debug)]
pub struct SparseSetLinear {
    /// Weight of every connection, `[nnz]`.
    pub values: Param<Tensor<1>>,
    /// Vector of size `d_output`.
    pub bias: Option<Param<Tensor<1>>>,
    /// Which connections exist.
    pub structure: SparseStructure,
    /// Input features.
    pub d_input: usize,
    /// Output features.
    pub d_output: usize,
}

fn index_tensors(topo: &SparseTopology, device: &Device) -> SparseIndex {
    let nnz = topo.nnz();
    let rows = crate::topology::row_indices(&topo.positions, topo.n_out);
    let cols = crate::topology::col_indices(&topo.positions, topo.n_out);
    SparseIndex {
        rows: Param::initialized(
            ParamId::new(),
            Tensor::from_data(TensorData::new(rows, [nnz]), device),
        ),
        cols: Param::initialized(
            ParamId::new(),
            Tensor::from_data(TensorData::new(cols, [nnz]), device),
        ),
        dims: Param::initialized(
            ParamId::new(),
            Tensor::from_data(
                TensorData::new(vec![topo.n_in as i64, topo.n_out as i64], [2]),
                device,
            ),
        ),
    }
}

impl SetLinearConfig {
    /// Initialize a truly sparse [`SparseSetLinear`] with the same topology as
    /// [`init`](Self::init) gives for the same seed (FixProb or SET; a dense config is an error:
    /// use `init`). The values are drawn from the same initializer (and the device's generator),
    /// one per connection, so they are not the ones `init` draws for its dense weight.
    pub fn init_sparse(&self, device: &Device) -> Result<SparseSetLinear, TopologyError> {
        let (d_in, d_out) = (self.d_input, self.d_output);
        if self.sparsity == Sparsity::Dense {
            return Err(TopologyError::DenseSparse);
        }
        let p = er_probability(self.epsilon, d_in, d_out)?;
        let seed = self.seed.unwrap_or_else(rand::random);
        let topo = SparseTopology::erdos_renyi(d_in, d_out, self.epsilon, seed)?;
        let (fan_in, fan_out) = if self.sparse_fan {
            let fan = |d: usize| ((p * d as f64).round() as usize).max(1);
            (fan(d_in), fan(d_out))
        } else {
            (d_in, d_out)
        };
        let values = self
            .initializer
            .init_with([topo.nnz()], Some(fan_in), Some(fan_out), device);
        let bias = self.bias.then(|| {
            self.initializer
                .init_with([d_out], Some(fan_in), Some(fan_out), device)
        });
        let index = index_tensors(&topo, device);
        Ok(SparseSetLinear {
            values,
            bias,
            structure: if self.sparsity == Sparsity::Set {
                SparseStructure::Evolving(index)
            } else {
                SparseStructure::Fixed(index)
            },
            d_input: d_in,
            d_output: d_out,
        })
    }
}

impl SparseSetLinear {
    /// Builds a layer from a topology and the values of its connections (aligned with
    /// `topology.positions`).
    ///
    /// # Panics
    /// If `values` does not have one value per connection, or the positions are not sorted,
    /// distinct and inside the layer ([`SparseTopology::validate`]).
    pub fn from_topology(
        topology: &SparseTopology,
        values: Vec<f32>,
        bias: Option<Vec<f32>>,
        sparsity: Sparsity,
        device: &Device,
    ) -> Self {
        assert_eq!(values.len(), topology.nnz(), "one value per connection");
        if let Err(e) = topology.validate() {
            panic!("SparseSetLinear::from_topology: {e}");
        }
        let index = index_tensors(topology, device);
        let nnz = values.len();
        Self {
            values: Param::from_tensor(Tensor::from_data(TensorData::new(values, [nnz]), device)),
            bias: bias.map(|b| {
                let n = b.len();
                Param::from_tensor(Tensor::from_data(TensorData::new(b, [n]), device))
            }),
            structure: match sparsity {
                Sparsity::Set => SparseStructure::Evolving(index),
                _ => SparseStructure::Fixed(index),
            },
            d_input: topology.n_in,
            d_output: topology.n_out,
        }
    }

    /// For an input of shape `dims`: the rows it flattens to and the output's shape.
    ///
    /// # Panics
    /// If the last axis is not `d_input`.
    fn flat_shapes<const D: usize>(&self, dims: [usize; D]) -> (usize, [usize; D]) {
        assert_eq!(
            dims[D - 1],
            self.d_input,
            "SparseSetLinear expects last axis {} but got {:?}",
            self.d_input,
            dims
        );
        let mut out = dims;
        out[D - 1] = self.d_output;
        (dims[..D - 1].iter().product(), out)
    }

    /// Applies the forward pass on the input tensor.
    ///
    /// # Shapes
    /// - input: `[..., d_input]`
    /// - output: `[..., d_output]`
    ///
    /// # Panics
    /// If the last axis of `input` is not `d_input`.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        let dims = input.dims();
        let (batch, out) = self.flat_shapes(dims);
        let x = reshaped(input, [batch, self.d_input]);
        let mut y = if has_native_kernel(&x.device()) {
            let index = self.structure.index();
            sparse_linear(
                x,
                self.values.val(),
                index.rows.val(),
                index.cols.val(),
                self.d_output,
            )
        } else {
            self.forward_portable(x)
        };
        if let Some(b) = &self.bias {
            y = y + b.val().unsqueeze_dim::<2>(0);
        }
        reshaped(y, out)
    }

    /// `dropout(SReLU(forward(x)))`, the paper's hidden block, as one fused op on the CPU
    /// backends ([`block_backend`](crate::block_backend)); elsewhere, or without a bias, the
    /// three forwards chained. The same result either way (up to the dropout mask's draw).
    ///
    /// The output of the fused op is a transposed view of feature-major storage, which is
    /// what the next sparse layer's kernel reads: chained blocks pass activations without
    /// copies or transposes.
    ///
    /// # Shapes
    /// - input: `[..., d_input]`
    /// - output: `[..., d_output]`
    ///
    /// # Panics
    /// If the last axis of `input` is not `d_input`.
    pub fn forward_srelu_dropout<const D: usize>(
        &self,
        input: Tensor<D>,
        srelu: &SRelu,
        dropout: &Dropout,
    ) -> Tensor<D> {
        let dims = input.dims();
        let (Some(bias), true) = (&self.bias, has_native_kernel(&input.device())) else {
            return dropout_forward(dropout, srelu.forward(self.forward(input)));
        };
        let (batch, out) = self.flat_shapes(dims);
        let mask = host_mask_seed(dropout, &input.device())
            .map(|(seed, keep)| BlockDropout { seed, keep });
        let index = self.structure.index();
        let params =
            [&srelu.t_left, &srelu.a_left, &srelu.t_right, &srelu.a_right].map(|p| p.val());
        let yt = sparse_srelu_block(
            reshaped(input, [batch, self.d_input]).transpose(),
            self.values.val(),
            index.rows.val(),
            index.cols.val(),
            bias.val(),
            params,
            mask,
        );
        reshaped(yt.transpose(), out)
    }

    /// `x · W` without bias through Burn's portable gather/scatter (any backend, with autodiff);
    /// `forward` uses it where the backend has no native kernel.
    ///
    /// # Shapes
    /// - x: `[batch, d_input]`
    /// - output: `[batch, d_output]`
    pub fn forward_portable(&self, x: Tensor<2>) -> Tensor<2> {
        let batch = x.dims()[0];
        // Feature-major: every connection becomes a contiguous row of `batch` values, so the
        // gather and the scatter-add (and their backward passes) move whole rows.
        let xt = x.transpose(); // [d_in, B]
        let index = self.structure.index();
        let gathered = xt.select(0, index.rows.val()); // [nnz, B]
        let prod = gathered * self.values.val().unsqueeze_dim::<2>(1);
        let device = prod.device();
        Tensor::<2>::zeros([self.d_output, batch], &device)
            .select_assign(0, index.cols.val(), prod, IndexingUpdateOp::Add) // [d_out, B]
            .transpose()
    }

    /// Number of connections.
    pub fn nnz(&self) -> usize {
        self.values.shape().dims::<1>()[0]
    }

    /// Fraction of the `d_input · d_output` positions that are connected.
    pub fn density(&self) -> f64 {
        self.nnz() as f64 / (self.d_input as f64 * self.d_output as f64)
    }

    /// The variant.
    pub fn sparsity(&self) -> Sparsity {
        match self.structure {
            SparseStructure::Evolving(_) => Sparsity::Set,
            SparseStructure::Fixed(_) => Sparsity::FixProb,
        }
    }

    /// The topology, read back to the host (O(nnz)).
    pub fn topology(&self) -> SparseTopology {
        let index = self.structure.index();
        let rows = int_data(index.rows.val());
        let cols = int_data(index.cols.val());
        let n_out = self.d_output as u64;
        SparseTopology {
            n_in: self.d_input,
            n_out: self.d_output,
            positions: rows
                .iter()
                .zip(&cols)
                .map(|(&r, &c)| r as u64 * n_out + c as u64)
                .collect(),
        }
    }

    /// The connection values, aligned with [`topology`](Self::topology)`.positions`.
    pub fn values_host(&self) -> Vec<f32> {
        float_data(self.values.val())
    }
}

pub(crate) fn int_data<const D: usize>(t: Tensor<D, Int>) -> Vec<i64> {
    t.into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .expect("int tensor data")
}

/// `t` reshaped to `dims`; a tensor that already has `D2` axes is passed through untouched
/// (Burn's reshape, and its backward, would copy a transposed view even to the same shape).
fn reshaped<const D: usize, const D2: usize>(t: Tensor<D>, dims: [usize; D2]) -> Tensor<D2> {
    if D == D2 {
        debug_assert_eq!(t.dims()[..], dims[..]);
        Tensor::from_dispatch(t.into_dispatch())
    } else {
        t.reshape(dims)
    }
}
