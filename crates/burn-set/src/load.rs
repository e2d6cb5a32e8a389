//! Loading a saved model whose truly sparse layers changed size.
//!
//! Burn loads a record only into a module whose parameters have the saved shapes. A truly
//! sparse layer ([`SparseSetLinear`](crate::sparse_linear::SparseSetLinear)) holds one value and
//! two indices per connection, and SET's final prune after the last epoch removes connections:
//! a trained model has fewer than a freshly initialised one of the same config, so
//! `Module::load_file` refuses it ("shape mismatch"). [`load_file`] first resizes every sparse
//! layer of the model to the number of connections saved for it, checks that each saved layer
//! has the shape of the one it is loaded into, then loads the file with Burn (which checks
//! everything else as usual). Masked layers never change shape and load either way.

use crate::layers::PathStack;
use burn::module::{Module, ModuleMapper, Param};
use burn::store::ModuleRecord;
use burn::tensor::{Int, Shape, Tensor};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why [`load_file`] failed.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read as a Burn record (burnpack).
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A sparse layer was saved with a different `[d_input, d_output]` than the model's.
    LayerShape {
        /// Module path of the layer's indices.
        layer: String,
        /// The model's shape.
        model: [i64; 2],
        /// The saved shape.
        saved: [i64; 2],
    },
    /// Burn refused the record (a missing, unused or mis-shaped parameter, …).
    Record(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, message } => {
                write!(
                    f,
                    "{}: cannot read the saved model: {message}",
                    path.display()
                )
            }
            Self::LayerShape {
                layer,
                model,
                saved,
            } => write!(
                f,
                "sparse layer `{layer}` is {}×{} in the model but {}×{} in the file",
                model[0], model[1], saved[0], saved[1]
            ),
            Self::Record(m) => write!(f, "cannot load the saved model: {m}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// Loads a model saved with `Module::save_file` into `model` (built from the same config),
/// resizing its truly sparse layers to the connections saved for them.
///
/// # Errors
/// If the file cannot be read, a sparse layer was saved with another `[d_input, d_output]`,
/// or Burn refuses the record (parameters missing, left over or of other shapes).
pub fn load_file<M: Module>(model: M, path: impl AsRef<Path>) -> Result<M, LoadError> {
    let path = path.as_ref();
    let read_err = |e: &dyn fmt::Display| LoadError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let tensors = burn_pack::Reader::from_file(path)
        .and_then(|r| r.into_tensors())
        .map_err(|e| read_err(&e))?;
    let mut saved = HashMap::new();
    for t in tensors {
        // the layer shapes (two integers each) are read now; other tensors stay on disk
        let dims = t.name.ends_with(".dims").then(|| t.clone());
        saved.insert(t.name.clone(), (t.shape.clone(), dims));
    }
    let mut resize = Resize {
        saved: &saved,
        stack: PathStack::default(),
        error: None,
    };
    let model = model.map(&mut resize);
    if let Some(e) = resize.error {
        return Err(e);
    }
    let record = ModuleRecord::load(path).map_err(|e| read_err(&e))?;
    let model = model
        .try_load_record(record)
        .map_err(|e| LoadError::Record(e.to_string()))?;
    // the loaded structures must be usable: one value per connection, positions sorted,
    // distinct and inside the layer
    for l in crate::layers::snapshot_layers(&model, true) {
        if l.storage != crate::layers::Storage::Sparse {
            continue;
        }
        if l.values.len() != l.topology.nnz() {
            return Err(LoadError::Record(format!(
                "sparse layer `{}`: {} values for {} connections",
                l.path,
                l.values.len(),
                l.topology.nnz()
            )));
        }
        l.topology
            .validate()
            .map_err(|e| LoadError::Record(format!("sparse layer `{}`: {e}", l.path)))?;
    }
    Ok(model)
}

type Saved = HashMap<String, (Shape, Option<burn_pack::Tensor>)>;

/// Resizes the per-connection tensors of sparse layers to their saved lengths and compares the
/// saved layer shapes with the model's.
struct Resize<'a> {
    saved: &'a Saved,
    stack: PathStack,
    error: Option<LoadError>,
}

impl Resize<'_> {
    /// The saved length of the current path's tensor when it is 1-D and differs from `len`.
    fn new_len(&self, len: usize) -> Option<usize> {
        let (shape, _) = self.saved.get(&self.stack.path())?;
        match shape.as_slice() {
            [n] if *n != len => Some(*n),
            _ => None,
        }
    }

    /// Compares the saved `[d_input, d_output]` of the current sparse layer with the model's.
    fn check_dims(&mut self, model: &[i64]) {
        let key = self.stack.path();
        let Some((_, Some(t))) = self.saved.get(&key) else {
            return;
        };
        let Ok(bytes) = t.to_bytes() else {
            return; // Burn's load reports an unreadable tensor
        };
        let data = burn::tensor::TensorData::from_bytes(bytes, t.shape.clone(), t.dtype);
        let Ok(saved) = data.convert::<i64>().try_into_vec::<i64>() else {
            return;
        };
        if let ([a, b], [c, d]) = (saved.as_slice(), model)
            && (a, b) != (c, d)
            && self.error.is_none()
        {
            self.error = Some(LoadError::LayerShape {
                layer: key.trim_end_matches(".dims").to_string(),
                model: [*c, *d],
                saved: [*a, *b],
            });
        }
    }
}

impl ModuleMapper for Resize<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if D != 1 || self.stack.sparse_field() != Some("values") {
            return param;
        }
        match self.new_len(param.lazy_shape()[0]) {
            Some(n) => param.map(|t| Tensor::zeros(Shape::new([n]), &t.device())),
            None => param,
        }
    }

    fn map_int<const D: usize>(&mut self, param: Param<Tensor<D, Int>>) -> Param<Tensor<D, Int>> {
        if D != 1 {
            return param;
        }
        match self.stack.sparse_field() {
            Some("rows" | "cols") => match self.new_len(param.lazy_shape()[0]) {
                Some(n) => param.map(|t| Tensor::zeros(Shape::new([n]), &t.device())),
                None => param,
            },
            Some("dims") => {
                let model = param
                    .val()
                    .into_data()
                    .convert::<i64>()
                    .try_into_vec::<i64>();
                self.check_dims(&model.unwrap_or_default());
                param
            }
            _ => param,
        }
    }
}
