//! The paper's MLP comparison as a library call: data → model → Burn training with SET → report.
//! The CLI is a thin shell over [`run_mlp`].

use crate::backend::BackendKind;
use crate::callback::{EvolutionRecord, SetCallback};
use crate::data::{
    ClassificationBatch, ClassificationBatcher, ClassificationData, ClassificationDataset,
    ClassificationItem,
};
use crate::evolution::EvolutionConfig;
use crate::layers::{ModelStorage, topology_summary};
use crate::mlp::SetMlpConfig;
use crate::set_linear::Sparsity;
use crate::srelu::ActivationKind;
use crate::strategy::SetTrainingExt;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{ModuleOptimizer, SgdConfig};
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{
    ClassificationOutput, InferenceStep, Learner, LearnerModel, LearnerSummary, SupervisedTraining,
    TrainStep,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Everything that defines one MLP training run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MlpRun {
    /// Dataset name (reported only).
    pub dataset: String,
    /// Dense / FixProb / SET.
    pub model: Sparsity,
    /// Epochs.
    pub epochs: usize,
    /// Hidden widths.
    pub hidden: Vec<usize>,
    /// ε.
    pub epsilon: f64,
    /// ζ.
    pub zeta: f64,
    /// Hidden activation.
    pub activation: ActivationKind,
    /// Dropout rate.
    pub dropout: f64,
    /// Mini-batch size.
    pub batch_size: usize,
    /// SGD learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Seed of topology, initial weights, shuffling and evolution.
    pub seed: u64,
    /// Backend.
    pub backend: BackendKind,
    /// Where Burn writes logs and checkpoints.
    pub artifacts: PathBuf,
    /// Data loader worker threads.
    pub num_workers: usize,
    /// Storage of the sparse layers (None: the faster one for the shape).
    pub storage: Option<crate::layers::Storage>,
}

impl MlpRun {
    /// The paper's MNIST defaults for `model`.
    pub fn paper(model: Sparsity) -> Self {
        Self {
            dataset: "mnist".into(),
            model,
            epochs: 10,
            hidden: vec![1000, 1000, 1000],
            epsilon: 20.0,
            zeta: 0.3,
            activation: ActivationKind::SRelu,
            dropout: 0.3,
            batch_size: 128,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 0.0002,
            seed: 42,
            backend: BackendKind::Ndarray,
            artifacts: std::env::temp_dir().join("burn-set-artifacts"),
            num_workers: 1,
            storage: None,
        }
    }
}

/// What a run measured (the CLI prints it as JSON).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MlpReport {
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
    /// Weights in the hidden (sparse) layers after training.
    pub connections: u64,
    /// Weights the same layers have when dense.
    pub dense_connections: u64,
    /// All trainable parameters of the model after training (masked-out weights excluded).
    pub trainable_weights: u64,
    /// Wall-clock seconds per epoch (training, validation and evolution).
    pub seconds_per_epoch: f64,
    /// Total seconds spent in SET evolution.
    pub evolution_seconds: f64,
    /// Training samples.
    pub train_samples: usize,
    /// Test samples.
    pub test_samples: usize,
    /// Backend used.
    pub backend: BackendKind,
    /// Storage of the sparse layers (`null` for the dense MLP; `mixed` when the default picked
    /// sparse storage for some layers and masked for others).
    pub storage: Option<ModelStorage>,
    /// Every evolution step.
    pub evolutions: Vec<EvolutionRecord>,
}

/// Trains the MLP `run` describes on `train`, validating on `test` after every epoch, through
/// Burn's `SupervisedTraining` with [`SetTrainingExt::with_set`] (dashboard included).
pub fn run_mlp(
    run: &MlpRun,
    train: ClassificationData,
    test: ClassificationData,
) -> Result<MlpReport, String> {
    check_run(run.epochs, run.batch_size, &train, &test)?;
    check_sgd(run.lr, run.momentum, run.weight_decay)?;
    let device = run.backend.device()?.autodiff();
    device.seed(run.seed);
    let model = SetMlpConfig::new(
        train.n_features,
        run.hidden.clone(),
        train.n_classes.max(test.n_classes),
    )
    .with_sparsity(run.model)
    .with_epsilon(run.epsilon)
    .with_activation(run.activation)
    .with_dropout(run.dropout)
    .with_seed(run.seed)
    .with_storage(run.storage)
    .try_init(&device)
    .map_err(|e| e.to_string())?;
    let optim = paper_sgd(run.momentum, run.weight_decay);
    let callback = experiment_callback(run.zeta, run.seed)?;
    let (n_train, n_test) = (train.len(), test.len());
    let dl_train = train_loader(
        ClassificationBatcher::new(),
        train,
        run.batch_size,
        run.seed,
        run.num_workers,
    );
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
    let summary = topology_summary(&model);
    let trainable = model.trainable_weights();
    let storage = sparse_storage(&model);
    Ok(MlpReport {
        model: run.model.name().to_string(),
        dataset: run.dataset.clone(),
        epochs,
        test_accuracy: final_accuracy(&acc),
        best_test_accuracy: best_accuracy(&acc),
        test_accuracy_per_epoch: acc,
        connections: summary.connections,
        dense_connections: summary.dense_connections,
        trainable_weights: trainable,
        seconds_per_epoch: seconds / epochs as f64,
        evolution_seconds: callback.evolution_seconds(),
        train_samples: n_train,
        test_samples: n_test,
        backend: run.backend,
        storage,
        evolutions: callback.history(),
    })
}

/// The checks every experiment run makes before building anything: at least one epoch, a
/// positive batch size, non-empty train and test sets with the same number of features.
pub fn check_run(
    epochs: usize,
    batch_size: usize,
    train: &ClassificationData,
    test: &ClassificationData,
) -> Result<(), String> {
    if epochs == 0 {
        return Err("epochs must be at least 1".into());
    }
    if batch_size == 0 {
        return Err("batch size must be at least 1".into());
    }
    if train.is_empty() || test.is_empty() {
        return Err("training and test sets must not be empty".into());
    }
    if train.n_features != test.n_features {
        return Err(format!(
            "train has {} features but test has {}",
            train.n_features, test.n_features
        ));
    }
    Ok(())
}

/// The checks of the paper's SGD settings, shared by every experiment (MLP, CNN, RBM): a
/// finite learning rate > 0, a momentum in `[0, 1)` (0 = plain SGD) and a finite weight decay
/// ≥ 0 (0 = none). [`paper_sgd`] turns 0 into "off"; anything else out of range is an error
/// rather than silently disabled.
pub fn check_sgd(lr: f64, momentum: f64, weight_decay: f64) -> Result<(), String> {
    if !(lr.is_finite() && lr > 0.0) {
        return Err(format!(
            "learning rate (lr) must be finite and > 0, got {lr}"
        ));
    }
    if !(0.0..1.0).contains(&momentum) {
        return Err(format!(
            "momentum must be finite and in [0, 1), got {momentum}"
        ));
    }
    if !(weight_decay.is_finite() && weight_decay >= 0.0) {
        return Err(format!(
            "weight decay must be finite and ≥ 0, got {weight_decay}"
        ));
    }
    Ok(())
}

/// Takes the lock of an artifacts folder (`.burn-set.lock` inside it), or says that another run
/// holds it.
pub fn lock_artifacts(artifacts: &Path) -> Result<std::fs::File, String> {
    let path = artifacts.join(".burn-set.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "artifacts folder {} is in use by another run (its figures are read back from the \
             logs there): wait for it or pass another --artifacts folder",
            artifacts.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// The experiments' SET callback: the paper's rule with a constant ζ, seeded.
pub fn experiment_callback(zeta: f64, seed: u64) -> Result<SetCallback, String> {
    SetCallback::try_new(EvolutionConfig::new().with_zeta(zeta).with_seed(seed))
}

/// Test accuracy after the last epoch (NaN when there is none).
pub fn final_accuracy(per_epoch: &[f64]) -> f64 {
    per_epoch.last().copied().unwrap_or(f64::NAN)
}

/// Best test accuracy over the epochs (NaN when there is none).
pub fn best_accuracy(per_epoch: &[f64]) -> f64 {
    per_epoch
        .iter()
        .copied()
        .reduce(f64::max)
        .unwrap_or(f64::NAN)
}

/// The training loader of the experiments: `batcher` over `train`, shuffled with `seed`.
pub fn train_loader<B>(
    batcher: B,
    train: ClassificationData,
    batch_size: usize,
    seed: u64,
    num_workers: usize,
) -> Arc<dyn DataLoader<ClassificationBatch>>
where
    B: Batcher<ClassificationItem, ClassificationBatch> + 'static,
{
    DataLoaderBuilder::new(batcher)
        .batch_size(batch_size)
        .shuffle(seed)
        .num_workers(num_workers)
        .build(ClassificationDataset::new(train))
}

/// The paper's optimizer: SGD with momentum (no dampening) and L2 weight decay; a momentum or
/// weight decay of 0 leaves it out (values checked by [`check_sgd`]).
pub fn paper_sgd(momentum: f64, weight_decay: f64) -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum((momentum > 0.0).then(|| {
            MomentumConfig::new()
                .with_momentum(momentum)
                .with_dampening(0.0)
        }))
        .with_weight_decay(
            (weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32)),
        )
        .init()
}

/// The test-set loader of the experiments (no shuffling, batches of at least 256).
pub fn test_loader(
    test: ClassificationData,
    batch_size: usize,
    num_workers: usize,
) -> Arc<dyn DataLoader<ClassificationBatch>> {
    DataLoaderBuilder::new(ClassificationBatcher::new())
        .batch_size(batch_size.max(256))
        .num_workers(num_workers)
        .build(ClassificationDataset::new(test))
}

/// A model trained by [`train_with_set`].
pub struct Trained<M> {
    /// The trained model (after SET's final prune).
    pub model: M,
    /// Test accuracy (%) after every epoch, as Burn logged it.
    pub accuracy_per_epoch: Vec<f64>,
    /// Wall-clock seconds of the whole training.
    pub seconds: f64,
}

/// Trains a classifier through Burn's `SupervisedTraining` with SET
/// ([`SetTrainingExt::with_set`]), validating on `dl_test` after every epoch, and reads the
/// per-epoch accuracies back from Burn's logs in `artifacts` (whose `train`/`valid` logs of an
/// earlier run are removed first, so that they do not mix).
#[allow(clippy::too_many_arguments)]
pub fn train_with_set<M>(
    model: M,
    optim: ModuleOptimizer,
    lr: f64,
    dl_train: Arc<dyn DataLoader<ClassificationBatch>>,
    dl_test: Arc<dyn DataLoader<ClassificationBatch>>,
    callback: &SetCallback,
    epochs: usize,
    artifacts: &Path,
) -> Result<Trained<M>, String>
where
    M: LearnerModel
        + TrainStep<Input = ClassificationBatch, Output = ClassificationOutput>
        + InferenceStep<Input = ClassificationBatch, Output = ClassificationOutput>,
{
    std::fs::create_dir_all(artifacts).map_err(|e| {
        format!(
            "cannot create artifacts folder {}: {e}",
            artifacts.display()
        )
    })?;
    // The run's accuracies are read back from Burn's logs in this folder: a second run writing
    // there at the same time would mix its figures into this one's. Held until the function
    // returns (the OS releases it if the process dies).
    let _lock = lock_artifacts(artifacts)?;
    for split in ["train", "valid"] {
        let _ = std::fs::remove_dir_all(artifacts.join(split));
    }
    let t0 = Instant::now();
    let mut training = SupervisedTraining::new(artifacts, dl_train, dl_test)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .with_set(callback)
        .num_epochs(epochs)
        .summary();
    if let Some(r) = crate::renderer::plain_renderer_unless_terminal() {
        training = training.renderer(r);
    }
    let result = training.launch(Learner::new(model, optim, lr));
    let seconds = t0.elapsed().as_secs_f64();
    if let Some(e) = &result.error {
        return Err(format!("training failed: {e}"));
    }
    let acc = LearnerSummary::new(artifacts, &["Accuracy"])
        .ok()
        .and_then(|s| s.metrics.valid.into_iter().find(|m| m.name == "Accuracy"))
        .map(|m| m.entries.iter().map(|e| e.value).collect::<Vec<_>>())
        .unwrap_or_default();
    if acc.is_empty() {
        return Err(format!(
            "no validation accuracy was logged in {}",
            artifacts.display()
        ));
    }
    Ok(Trained {
        model: result.model,
        accuracy_per_epoch: acc,
        seconds,
    })
}

/// The storage of a model's sparse layers (`None` when it has none).
pub(crate) fn sparse_storage<M: burn::module::Module>(model: &M) -> Option<ModelStorage> {
    use crate::layers::Storage;
    let mut kinds = crate::layers::snapshot_layers(model, false)
        .iter()
        .filter(|l| l.sparsity != Sparsity::Dense)
        .map(|l| l.storage)
        .collect::<Vec<_>>();
    kinds.dedup();
    match kinds.as_slice() {
        [] => None,
        [Storage::Masked] => Some(ModelStorage::Masked),
        [Storage::Sparse] => Some(ModelStorage::Sparse),
        _ => Some(ModelStorage::Mixed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 784-300-300-10 at ε = 20: the first layer (9.2 % dense) gets sparse storage by default,
    /// the second (13 %) masked; the report says `mixed`, not the first layer's.
    #[test]
    #[allow(deprecated)]
    fn the_storage_report_says_mixed_for_mixed_layers() {
        use crate::layers::Storage;
        let device = burn::tensor::Device::ndarray();
        let mixed = SetMlpConfig::new(784, vec![300, 300], 10).init(&device);
        assert_eq!(sparse_storage(&mixed), Some(ModelStorage::Mixed));
        for (storage, want) in [
            (Storage::Sparse, ModelStorage::Sparse),
            (Storage::Masked, ModelStorage::Masked),
        ] {
            let m = SetMlpConfig::new(784, vec![300, 300], 10)
                .with_storage(Some(storage))
                .init(&device);
            assert_eq!(sparse_storage(&m), Some(want));
        }
        let dense = SetMlpConfig::new(784, vec![300], 10)
            .with_sparsity(Sparsity::Dense)
            .init(&device);
        assert_eq!(sparse_storage(&dense), None);
        assert_eq!(
            serde_json::to_string(&ModelStorage::Mixed).unwrap(),
            "\"mixed\""
        );
    }

    /// A dense MLP or head with sparse storage is an error (masked storage is how its dense
    /// layers are stored anyway).
    #[test]
    #[allow(deprecated)]
    fn sparse_storage_needs_sparse_layers() {
        use crate::head::SetHeadConfig;
        use crate::layers::Storage;
        let device = burn::tensor::Device::ndarray();
        let mlp = |sparsity, storage| {
            SetMlpConfig::new(50, vec![40], 3)
                .with_epsilon(2.0)
                .with_sparsity(sparsity)
                .with_storage(storage)
                .try_init(&device)
                .map(|_| ())
        };
        let e = mlp(Sparsity::Dense, Some(Storage::Sparse)).unwrap_err();
        assert!(
            e.to_string().contains("sparse storage needs sparse layers"),
            "{e}"
        );
        assert!(mlp(Sparsity::Dense, None).is_ok());
        assert!(mlp(Sparsity::Dense, Some(Storage::Masked)).is_ok());
        assert!(mlp(Sparsity::Set, Some(Storage::Masked)).is_ok());
        assert!(mlp(Sparsity::FixProb, Some(Storage::Sparse)).is_ok());
        let head = SetHeadConfig::new(50, vec![40], 3)
            .with_sparsity(Sparsity::Dense)
            .with_storage(Some(Storage::Sparse))
            .try_init(&device);
        assert!(head.is_err());
    }

    #[test]
    fn an_artifacts_folder_in_use_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_artifacts(dir.path()).unwrap();
        let e = lock_artifacts(dir.path()).unwrap_err();
        assert!(e.contains("in use by another run"), "{e}");
        drop(held);
        assert!(lock_artifacts(dir.path()).is_ok());
    }

    #[test]
    fn check_sgd_rejects_out_of_range_hyperparameters() {
        assert!(check_sgd(0.01, 0.9, 0.0002).is_ok());
        // 0 momentum / weight decay = off; a huge finite lr is legal
        assert!(check_sgd(1e10, 0.0, 0.0).is_ok());
        for (lr, momentum, wd, want) in [
            (
                -1.0,
                0.9,
                0.0,
                "learning rate (lr) must be finite and > 0, got -1",
            ),
            (
                0.0,
                0.9,
                0.0,
                "learning rate (lr) must be finite and > 0, got 0",
            ),
            (
                f64::NAN,
                0.9,
                0.0,
                "learning rate (lr) must be finite and > 0, got NaN",
            ),
            (
                f64::INFINITY,
                0.9,
                0.0,
                "learning rate (lr) must be finite and > 0",
            ),
            (
                0.01,
                -1.0,
                0.0,
                "momentum must be finite and in [0, 1), got -1",
            ),
            (
                0.01,
                5.0,
                0.0,
                "momentum must be finite and in [0, 1), got 5",
            ),
            (
                0.01,
                1.0,
                0.0,
                "momentum must be finite and in [0, 1), got 1",
            ),
            (
                0.01,
                f64::NAN,
                0.0,
                "momentum must be finite and in [0, 1), got NaN",
            ),
            (
                0.01,
                0.9,
                -1.0,
                "weight decay must be finite and ≥ 0, got -1",
            ),
            (
                0.01,
                0.9,
                f64::INFINITY,
                "weight decay must be finite and ≥ 0, got inf",
            ),
        ] {
            let e = check_sgd(lr, momentum, wd).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        // the RBM's settings go through the same check
        let e = crate::rbm::RbmTrainConfig::new()
            .with_momentum(5.0)
            .validate()
            .unwrap_err();
        assert!(e.contains("momentum must be finite and in [0, 1)"), "{e}");
    }
}
