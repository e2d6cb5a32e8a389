//! Finds the [`SetLinear`](crate::set_linear::SetLinear) layers inside *any* Burn module and
//! rewrites them: what lets SET evolve a user's model with no per-layer plumbing.
//!
//! Burn's derived `Module::visit`/`Module::map` walk every parameter with the field path and the
//! container type; a `SetLinear` shows up as a `weight` and a `mask` float param
//! under a `Struct:SetLinear` container. Layers are keyed by their path (e.g. `hidden.1`) and
//! numbered in visiting order, which is stable for a given model type.

use crate::evolution::{EvolutionOutcome, PruneRule, RegrowInit, evolve_layer};
use crate::set_linear::{Sparsity, float_data};
use crate::sparse_linear::int_data;
use crate::topology::{SparseTopology, TopologyError, derived_rng};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Int, Tensor, TensorData};
use std::collections::BTreeMap;

const SET_LINEAR: &str = "Struct:SetLinear";
const SPARSE_LINEAR: &str = "Struct:SparseSetLinear";
const SET_MASK: &str = "Enum:SetMask";
const SPARSE_STRUCTURE: &str = "Enum:SparseStructure";

/// Where a module walk is: the `(name, container type)` of every level entered (Burn's derive
/// passes the type of the struct or enum that owns the field being entered).
#[derive(Default)]
pub(crate) struct PathStack(Vec<(String, String)>);

impl PathStack {
    pub(crate) fn enter(&mut self, name: &str, container_type: &str) {
        self.0.push((name.to_string(), container_type.to_string()));
    }

    pub(crate) fn exit(&mut self) {
        self.0.pop();
    }

    /// The module path of the current level (`hidden.0.linear.Sparse.values`), as records
    /// name their tensors.
    pub(crate) fn path(&self) -> String {
        self.0
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The field of a `SparseSetLinear` the walk is at (`values`, `rows`, `cols`, `dims`,
    /// `bias`), if it is inside one.
    pub(crate) fn sparse_field(&self) -> Option<&str> {
        let i = self
            .0
            .iter()
            .rposition(|(_, c)| c == SET_LINEAR || c == SPARSE_LINEAR)?;
        (self.0[i].1 == SPARSE_LINEAR).then(|| self.0.last().unwrap().0.as_str())
    }

    /// The layer key and the field name inside the layer, if the walk is inside a SetLinear
    /// or a SparseSetLinear (for the latter, the innermost field name: `rows`, `cols`, …).
    fn layer_field(&self) -> Option<(String, &str)> {
        let i = self
            .0
            .iter()
            .rposition(|(_, c)| c == SET_LINEAR || c == SPARSE_LINEAR)?;
        if self.0[i].1 == SPARSE_LINEAR {
            let key = self.0[..i]
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(".");
            return Some((key, self.0.last().unwrap().0.as_str()));
        }
        let key = self.0[..i]
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(".");
        Some((key, self.0[i].0.as_str()))
    }
    fn mask_variant(&self) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(_, c)| c == SET_MASK || c == SPARSE_STRUCTURE)
            .map(|(n, _)| n.as_str())
    }
}

/// A snapshot of one SET layer on the host.
#[derive(Debug, Clone)]
pub struct LayerSnapshot {
    /// Path of the layer in the module tree (e.g. `hidden.0`).
    pub path: String,
    /// Dense, FixProb or SET.
    pub sparsity: Sparsity,
    /// Connectivity.
    pub topology: SparseTopology,
    /// Weight values aligned with `topology.positions` (only when asked for).
    pub values: Vec<f32>,
    /// How the layer stores its weights.
    pub storage: Storage,
}

/// How a SET layer stores its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// Dense weight × 0/1 mask ([`SetLinear`](crate::set_linear::SetLinear)).
    Masked,
    /// Values + indices ([`SparseSetLinear`](crate::sparse_linear::SparseSetLinear)).
    Sparse,
}

/// The storage of a model's sparse layers, as its reports give it: one [`Storage`] for all of
/// them, or `mixed` when the default ([`default_storage`](crate::mlp::default_storage), by each
/// layer's density) picked sparse storage for some and masked for others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelStorage {
    /// Every sparse layer is masked.
    Masked,
    /// Every sparse layer is truly sparse.
    Sparse,
    /// Some of each (the per-layer storage is in each evolution record's layer paths).
    Mixed,
}

impl Storage {
    /// `"masked"` or `"sparse"` (the CLI's names).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Masked => "masked",
            Self::Sparse => "sparse",
        }
    }
}

impl std::str::FromStr for Storage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "masked" => Ok(Self::Masked),
            "sparse" => Ok(Self::Sparse),
            other => Err(format!(
                "unknown storage '{other}' (expected sparse or masked)"
            )),
        }
    }
}

#[derive(Default)]
struct Collector {
    stack: PathStack,
    with_values: bool,
    weights: BTreeMap<String, (usize, usize, Vec<f32>)>,
    masks: BTreeMap<String, (bool, Vec<f32>)>,
    sparse: BTreeMap<String, SparseParts>,
    order: Vec<String>,
}

/// The pieces of a SparseSetLinear as the visitor meets them.
#[derive(Default)]
struct SparseParts {
    values: Vec<f32>,
    rows: Vec<i64>,
    cols: Vec<i64>,
    dims: Vec<i64>,
    evolving: bool,
}

impl Collector {
    fn note(&mut self, key: &str) {
        if !self.order.iter().any(|k| k == key) {
            self.order.push(key.to_string());
        }
    }
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.exit();
    }
    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<D, Int>>) {
        let Some((key, field)) = self.stack.layer_field() else {
            return;
        };
        if !matches!(field, "rows" | "cols" | "dims") {
            return;
        }
        let field = field.to_string();
        let evolving = self.stack.mask_variant() == Some("Evolving");
        let data = int_data(param.val());
        self.note(&key);
        let parts = self.sparse.entry(key).or_default();
        parts.evolving = evolving;
        match field.as_str() {
            "rows" => parts.rows = data,
            "cols" => parts.cols = data,
            _ => parts.dims = data,
        }
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if D == 1
            && let Some((key, "values")) = self.stack.layer_field()
        {
            self.note(&key);
            let vals = if self.with_values {
                float_data(param.val())
            } else {
                Vec::new()
            };
            self.sparse.entry(key).or_default().values = vals;
            return;
        }
        if D != 2 {
            return;
        }
        match self.stack.layer_field() {
            Some((key, "weight")) => {
                let dims = param.shape().dims::<D>();
                let vals = if self.with_values {
                    float_data(param.val())
                } else {
                    Vec::new()
                };
                self.note(&key);
                self.weights.insert(key, (dims[0], dims[1], vals));
            }
            Some((key, "mask")) => {
                let evolving = self.stack.mask_variant() == Some("Evolving");
                self.masks.insert(key, (evolving, float_data(param.val())));
            }
            _ => {}
        }
    }
}

/// Reads every `SetLinear` of `model` (in a stable order); `with_values` also reads the weights
/// of the connections.
pub fn snapshot_layers<M: Module>(model: &M, with_values: bool) -> Vec<LayerSnapshot> {
    let mut c = Collector {
        with_values,
        ..Default::default()
    };
    model.visit(&mut c);
    c.order
        .iter()
        .map(|key| {
            if let Some(parts) = c.sparse.remove(key) {
                let (n_in, n_out) = (parts.dims[0] as usize, parts.dims[1] as usize);
                let positions = parts
                    .rows
                    .iter()
                    .zip(&parts.cols)
                    .map(|(&r, &c)| r as u64 * n_out as u64 + c as u64)
                    .collect();
                return LayerSnapshot {
                    path: key.clone(),
                    sparsity: if parts.evolving {
                        Sparsity::Set
                    } else {
                        Sparsity::FixProb
                    },
                    topology: SparseTopology {
                        n_in,
                        n_out,
                        positions,
                    },
                    values: parts.values,
                    storage: Storage::Sparse,
                };
            }
            let (n_in, n_out, w) = c.weights.remove(key).expect("weight seen");
            let (sparsity, topology) = match c.masks.remove(key) {
                Some((evolving, mask)) => (
                    if evolving {
                        Sparsity::Set
                    } else {
                        Sparsity::FixProb
                    },
                    SparseTopology::from_mask_f32(n_in, n_out, &mask),
                ),
                None => (Sparsity::Dense, SparseTopology::dense(n_in, n_out)),
            };
            let values = if with_values {
                topology.positions.iter().map(|&p| w[p as usize]).collect()
            } else {
                Vec::new()
            };
            LayerSnapshot {
                path: key.clone(),
                sparsity,
                topology,
                values,
                storage: Storage::Masked,
            }
        })
        .collect()
}

/// Connection counts of a model's SET layers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TopologySummary {
    /// Number of `SetLinear` layers (of any variant).
    pub layers: usize,
    /// Connections in those layers (weights that may be non-zero; biases excluded).
    pub connections: u64,
    /// What the same layers hold when dense.
    pub dense_connections: u64,
    /// Entries of the masks of the masked (FixProb / SET) layers: `Module::num_params` counts
    /// them although they are not trainable.
    pub mask_entries: u64,
}

impl TopologySummary {
    /// `connections / dense_connections`.
    pub fn density(&self) -> f64 {
        if self.dense_connections == 0 {
            0.0
        } else {
            self.connections as f64 / self.dense_connections as f64
        }
    }
}

/// Counts the connections of every `SetLinear` in `model`.
pub fn topology_summary<M: Module>(model: &M) -> TopologySummary {
    snapshot_layers(model, false)
        .iter()
        .fold(TopologySummary::default(), |mut s, l| {
            s.layers += 1;
            s.connections += l.topology.nnz() as u64;
            s.dense_connections += l.topology.capacity();
            if l.sparsity != Sparsity::Dense && l.storage == Storage::Masked {
                s.mask_entries += l.topology.capacity();
            }
            s
        })
}

/// One evolution step for a whole model.
#[derive(Debug, Clone, Copy)]
pub struct EvolutionStep {
    /// ζ for this step.
    pub zeta: f64,
    /// Prune rule.
    pub rule: PruneRule,
    /// `Some(init)`: regrow with this init; `None`: prune only (the final step).
    pub regrow: Option<RegrowInit>,
    /// Seed; with `counter` and the layer index it fixes every draw.
    pub seed: u64,
    /// Which evolution this is (epoch or step number).
    pub counter: u64,
}

/// What one evolution step did to one layer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerEvolution {
    /// Layer path.
    pub path: String,
    /// Connections before.
    pub before: usize,
    /// Connections removed.
    pub pruned: usize,
    /// Connections added.
    pub regrown: usize,
    /// Positions that changed (removed and not re-added, plus added and new).
    pub changed: usize,
    /// Connections after.
    pub after: usize,
}

/// Evolves every *evolving* (`Sparsity::Set`) `SetLinear` of `model`; FixProb and dense layers
/// are left alone. ParamIds are kept.
pub fn evolve_model<M: Module>(
    model: M,
    step: &EvolutionStep,
) -> Result<(M, Vec<LayerEvolution>), TopologyError> {
    let layers = snapshot_layers(&model, true);
    let mut updates = BTreeMap::new();
    let mut report = Vec::new();
    for (index, layer) in layers.into_iter().enumerate() {
        if layer.sparsity != Sparsity::Set {
            continue;
        }
        let t = &layer.topology;
        let mut rng = derived_rng(step.seed, &[step.counter, index as u64]);
        let out = evolve_layer(
            &t.positions,
            &layer.values,
            t.capacity(),
            step.zeta,
            step.rule,
            step.regrow,
            &mut rng,
        )?;
        report.push(LayerEvolution {
            path: layer.path.clone(),
            before: t.nnz(),
            pruned: out.pruned,
            regrown: out.regrown.len(),
            changed: out.changed(&t.positions),
            after: out.positions.len(),
        });
        updates.insert(layer.path, (t.n_in, t.n_out, out));
    }
    let mut writer = Writer {
        stack: PathStack::default(),
        updates,
    };
    let model = model.map(&mut writer);
    Ok((model, report))
}

struct Writer {
    stack: PathStack,
    updates: BTreeMap<String, (usize, usize, EvolutionOutcome)>,
}

impl ModuleMapper for Writer {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack
            .0
            .push((name.to_string(), container_type.to_string()));
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.0.pop();
    }
    fn map_int<const D: usize>(&mut self, param: Param<Tensor<D, Int>>) -> Param<Tensor<D, Int>> {
        let Some((key, field)) = self.stack.layer_field() else {
            return param;
        };
        let Some((_, n_out, out)) = self.updates.get(&key) else {
            return param;
        };
        let data = match field {
            "rows" => crate::topology::row_indices(&out.positions, *n_out),
            "cols" => crate::topology::col_indices(&out.positions, *n_out),
            _ => return param,
        };
        let n = data.len();
        param.map(|old| {
            let device = old.device();
            Tensor::<D, Int>::from_data(TensorData::new(data, [n]), &device)
        })
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some((key, field)) = self.stack.layer_field() else {
            return param;
        };
        let Some((n_in, n_out, out)) = self.updates.get(&key) else {
            return param;
        };
        if field == "values" && D == 1 {
            let n = out.values.len();
            let values = out.values.clone();
            return param.map(|old| {
                let rg = old.is_require_grad();
                let device = old.device();
                Tensor::<D>::from_data(TensorData::new(values, [n]), &device).set_require_grad(rg)
            });
        }
        if field != "weight" && field != "mask" {
            return param;
        }
        let mut dense = vec![0f32; n_in * n_out];
        match field {
            "weight" => {
                for (&p, &v) in out.positions.iter().zip(&out.values) {
                    dense[p as usize] = v;
                }
            }
            "mask" => {
                for &p in &out.positions {
                    dense[p as usize] = 1.0;
                }
            }
            _ => return param,
        }
        let shape = param.shape();
        param.map(|old| {
            let rg = old.is_require_grad();
            let device = old.device();
            Tensor::<D>::from_data(TensorData::new(dense, shape), &device).set_require_grad(rg)
        })
    }
}
