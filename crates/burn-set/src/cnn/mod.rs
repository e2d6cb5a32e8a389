//! SET-CNN (the paper's CIFAR10 convolutional network with a SET / FixProb / dense
//! fully-connected head) and its training run.
//!
//! The model takes [`ClassificationBatch`](crate::data::ClassificationBatch)es whose inputs
//! are `[batch, 3072]` CHW pixel rows (what the CIFAR10 loaders in
//! [`data::cifar`](crate::data::cifar) produce) and reshapes them to `[batch, 3, 32, 32]`
//! inside `forward`, so all of the crate's data plumbing is reused unchanged.

pub mod experiment;
pub mod model;

pub use experiment::{CnnReport, CnnRun, run_cnn};
pub use model::{CIFAR10_CONV_WEIGHTS, SetCnn, SetCnnConfig};
