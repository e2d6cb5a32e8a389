//! The paper's CNN comparison as a library call: data → SET-CNN / CNNFixProb / CNN → Burn
//! training with SET → report. Same training path as
//! [`run_mlp`](crate::experiment::run_mlp): `SupervisedTraining` with
//! [`SetTrainingExt::with_set`](crate::strategy::SetTrainingExt::with_set). The CLI's `burn-set cnn` is a thin shell over [`run_cnn`].

use super::model::SetCnnConfig;
use crate::backend::BackendKind;
use crate::callback::EvolutionRecord;
use crate::data::{AugmentingBatcher, CIFAR10_FEATURES, ClassificationBatcher, ClassificationData};
use crate::experiment::{
    Trained, best_accuracy, check_run, check_sgd, experiment_callback, final_accuracy, paper_sgd,
    test_loader, train_loader, train_with_set,
};
use crate::layers::topology_summary;
use crate::set_linear::Sparsity;
use std::path::PathBuf;

/// Everything that defines one CNN training run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CnnRun {
    /// Dataset name (reported only).
    pub dataset: String,
    /// Head variant: dense / FixProb / SET.
    pub model: Sparsity,
    /// Epochs.
    pub epochs: usize,
    /// Head hidden widths.
    pub head_widths: Vec<usize>,
    /// ε.
    pub epsilon: f64,
    /// ζ.
    pub zeta: f64,
    /// Dropout rate (backbone and head).
    pub dropout: f64,
    /// Mini-batch size.
    pub batch_size: usize,
    /// SGD learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Random crop (padding 4) + horizontal flip of the training images.
    pub augment: bool,
    /// Seed of topology, initial weights, shuffling, augmentation and evolution.
    pub seed: u64,
    /// Backend.
    pub backend: BackendKind,
    /// Where Burn writes logs and checkpoints.
    pub artifacts: PathBuf,
    /// Data loader worker threads (1 keeps augmentation reproducible).
    pub num_workers: usize,
    /// Storage of the head's sparse layers (`None`: the faster one for the shape and device).
    pub storage: Option<crate::layers::Storage>,
}

impl CnnRun {
    /// The paper's CIFAR10 settings for `model` (epochs: 10 here, 1000 in the paper).
    pub fn paper(model: Sparsity) -> Self {
        Self {
            dataset: "cifar10".into(),
            model,
            epochs: 10,
            head_widths: vec![2048, 2048],
            epsilon: 20.0,
            zeta: 0.3,
            dropout: 0.3,
            batch_size: 128,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 0.0002,
            augment: true,
            seed: 42,
            backend: BackendKind::Ndarray,
            artifacts: std::env::temp_dir().join("burn-set-artifacts-cnn"),
            num_workers: 1,
            storage: None,
        }
    }
}

/// What a CNN run measured (the CLI prints it as JSON).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CnnReport {
    /// dense / fixprob / set.
    pub model: String,
    /// Dataset name.
    pub dataset: String,
    /// Epochs trained.
    pub epochs: usize,
    /// Test accuracy (%) after the last epoch (after SET's final prune).
    pub test_accuracy: f64,
    /// Best test accuracy (%) over the epochs.
    pub best_test_accuracy: f64,
    /// Test accuracy (%) of every epoch.
    pub test_accuracy_per_epoch: Vec<f64>,
    /// Weights in the head's sparse (hidden) layers after training, biases excluded.
    pub connections: u64,
    /// Weights the same layers have when dense.
    pub dense_connections: u64,
    /// Trainable weights of the whole head (hidden connections + biases + output layer); the
    /// paper's "8,413,194 vs 184,842".
    pub head_weights: u64,
    /// The same head's weights when dense.
    pub dense_head_weights: u64,
    /// Weights (with biases) of the conv layers (287,008).
    pub conv_weights: u64,
    /// Wall-clock seconds per epoch (training, validation and evolution).
    pub seconds_per_epoch: f64,
    /// Total seconds spent in SET evolution.
    pub evolution_seconds: f64,
    /// Training samples.
    pub train_samples: usize,
    /// Test samples.
    pub test_samples: usize,
    /// Whether training images were augmented.
    pub augment: bool,
    /// Backend used.
    pub backend: BackendKind,
    /// Storage of the head's sparse layers (`null` for the dense head; `mixed` when the
    /// default picked sparse storage for some layers and masked for others).
    pub storage: Option<crate::layers::ModelStorage>,
    /// Every evolution step.
    pub evolutions: Vec<EvolutionRecord>,
}

/// Trains the CNN `run` describes on `train` (CIFAR10-shaped: 3,072 CHW features), validating
/// on `test` after every epoch, through Burn's `SupervisedTraining` with
/// [`SetTrainingExt::with_set`](crate::strategy::SetTrainingExt::with_set).
pub fn run_cnn(
    run: &CnnRun,
    train: ClassificationData,
    test: ClassificationData,
) -> Result<CnnReport, String> {
    check_run(run.epochs, run.batch_size, &train, &test)?;
    check_sgd(run.lr, run.momentum, run.weight_decay)?;
    for (name, d) in [("train", &train), ("test", &test)] {
        if d.n_features != CIFAR10_FEATURES {
            return Err(format!(
                "{name} has {} features per sample; the CNN needs 3×32×32 = {CIFAR10_FEATURES}",
                d.n_features
            ));
        }
    }
    let device = run.backend.device()?.autodiff();
    device.seed(run.seed);
    let config = SetCnnConfig::new()
        .with_sparsity(run.model)
        .with_epsilon(run.epsilon)
        .with_head_widths(run.head_widths.clone())
        .with_dropout(run.dropout)
        .with_seed(run.seed)
        .with_storage(run.storage)
        .with_num_classes(train.n_classes.max(test.n_classes));
    let model = config.try_init(&device).map_err(|e| e.to_string())?;
    let dense_head_weights = dense_head_weights(
        crate::cnn::SetCnn::FEATURES,
        &run.head_widths,
        config.num_classes,
    );
    let optim = paper_sgd(run.momentum, run.weight_decay);
    let callback = experiment_callback(run.zeta, run.seed)?;
    let (n_train, n_test) = (train.len(), test.len());
    let (bs, seed, workers) = (run.batch_size, run.seed, run.num_workers);
    let dl_train = if run.augment {
        train_loader(AugmentingBatcher::new(seed), train, bs, seed, workers)
    } else {
        train_loader(ClassificationBatcher::new(), train, bs, seed, workers)
    };
    let dl_test = test_loader(test, run.batch_size, run.num_workers);
    let Trained {
        model,
        accuracy_per_epoch: acc,
        seconds,
    } = train_with_set(
        model,
        optim,
        run.lr,
        dl_train,
        dl_test,
        &callback,
        run.epochs,
        &run.artifacts,
    )?;
    let epochs = acc.len();
    let summary = topology_summary(&model.head);
    Ok(CnnReport {
        model: run.model.name().to_string(),
        dataset: run.dataset.clone(),
        epochs,
        test_accuracy: final_accuracy(&acc),
        best_test_accuracy: best_accuracy(&acc),
        test_accuracy_per_epoch: acc,
        connections: summary.connections,
        dense_connections: summary.dense_connections,
        head_weights: model.head.trainable_weights(),
        dense_head_weights,
        conv_weights: model.conv_weights(),
        seconds_per_epoch: seconds / epochs as f64,
        evolution_seconds: callback.evolution_seconds(),
        train_samples: n_train,
        test_samples: n_test,
        augment: run.augment,
        backend: run.backend,
        storage: crate::experiment::sparse_storage(&model),
        evolutions: callback.history(),
    })
}

/// Weights (with biases) of a dense head `d_input → hidden… → d_output`.
pub fn dense_head_weights(d_input: usize, hidden: &[usize], d_output: usize) -> u64 {
    let mut d_in = d_input as u64;
    let mut n = 0;
    for &w in hidden.iter().chain(std::iter::once(&d_output)) {
        n += d_in * w as u64 + w as u64;
        d_in = w as u64;
    }
    n
}
