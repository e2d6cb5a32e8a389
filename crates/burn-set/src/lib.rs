//! # burn-set
//!
//! Sparse Evolutionary Training (SET; Mocanu et al., Nature Communications 2018) for Burn.
#![warn(missing_docs)]

pub mod backend;
pub mod bench;
pub mod block_backend;
pub mod callback;
pub mod cnn;
pub mod data;
pub mod dropout;
pub mod evolution;
pub mod experiment;
pub mod head;
pub mod layers;
pub mod load;
pub mod mask_backend;
pub mod metrics;
pub mod mlp;
pub mod permutation;
pub mod plot;
pub mod rbm;
pub mod renderer;
pub mod set_linear;
pub mod sparse_backend;
pub mod sparse_kernel;
pub mod sparse_linear;
pub mod sparse_plan;
pub mod srelu;
pub mod srelu_backend;
pub mod strategy;
pub mod topology;

/// What a Burn training with SET needs in scope: `use burn_set::prelude::*;`.
pub mod prelude {
    pub use crate::callback::SetCallback;
    pub use crate::evolution::EvolutionConfig;
    pub use crate::layers::Storage;
    pub use crate::mlp::{SetMlp, SetMlpConfig};
    pub use crate::set_linear::{SetLinear, SetLinearConfig, Sparsity};
    pub use crate::sparse_linear::SparseSetLinear;
    pub use crate::strategy::SetTrainingExt;
}
