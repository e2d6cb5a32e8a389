//! Training a [`SetRbm`]: a plain epoch loop (CLI, tests, benchmarks) and the Burn Learner path
//! (dashboard). Both call [`SetRbm::cd_step`] and hand its update to the same Burn SGD optimizer;
//! both evolve with a [`SetCallback`] at the end of every epoch but the last and prune without
//! regrowing after the last, and reset the optimizer state after an evolution (a regrown
//! connection must not inherit the momentum of its position).

use super::metrics::{HiddenDegreeMetric, HiddenDegreeStat};
use super::model::SetRbm;
use super::rng::FastRng;
use crate::callback::SetCallback;
use crate::data::{BinaryBatcher, BinaryData, BinaryDataset};
use crate::set_linear::float_data;
use crate::strategy::SetTrainingExt;
use burn::config::Config;
use burn::data::dataloader::DataLoaderBuilder;
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::{Tensor, TensorData};
use burn::train::metric::LossMetric;
use burn::train::{Learner, SupervisedTraining};
use std::path::Path;
use std::time::Instant;

/// Optimisation settings of RBM training (the paper's defaults).
#[derive(Config, Debug)]
pub struct RbmTrainConfig {
    /// Epochs.
    #[config(default = 10)]
    pub epochs: usize,
    /// Mini-batch size.
    #[config(default = 10)]
    pub batch_size: usize,
    /// Learning rate.
    #[config(default = 0.01)]
    pub lr: f64,
    /// Momentum (no dampening).
    #[config(default = 0.9)]
    pub momentum: f64,
    /// L2 weight decay.
    #[config(default = 0.0002)]
    pub weight_decay: f64,
    /// Seed of the shuffling.
    #[config(default = 42)]
    pub seed: u64,
}

impl RbmTrainConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if self.epochs == 0 {
            return Err("epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return Err("batch size must be at least 1".into());
        }
        crate::experiment::check_sgd(self.lr, self.momentum, self.weight_decay)
    }

    /// Burn's SGD with this momentum (dampening 0) and weight decay: with the negated CD
    /// update as gradient it performs `Δθ ← μ Δθ + lr (CD − λθ)`, `θ ← θ + Δθ`.
    pub fn optimizer(&self) -> ModuleOptimizer {
        crate::experiment::paper_sgd(self.momentum, self.weight_decay)
    }
}

/// One epoch of the plain loop.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean reconstruction error of the epoch's batches (before their update).
    pub reconstruction_error: f64,
    /// Seconds of training (CD steps, optimizer, evolution; no evaluation).
    pub seconds: f64,
    /// Connections after the epoch (after its evolution or final prune).
    pub connections: u64,
    /// Whether the topology changed at the end of the epoch.
    pub evolved: bool,
}

/// Trains `model` on `data` with the plain loop: per epoch, shuffle, CD step per mini-batch,
/// optimizer step; then SET through `callback` (an evolution at the end of every epoch but the
/// last, the final prune after the last; nothing for FixProb and dense models). `on_epoch` sees
/// every finished epoch and the model (e.g. to evaluate it); its time is not counted.
///
/// The model is moved to the autodiff twin of its device if it is not on one (Burn's optimizer
/// needs autodiff parameters); the returned model stays there.
pub fn train_rbm(
    mut model: SetRbm,
    data: &BinaryData,
    cfg: &RbmTrainConfig,
    callback: &SetCallback,
    mut on_epoch: impl FnMut(&EpochRecord, &SetRbm),
) -> Result<(SetRbm, Vec<EpochRecord>), String> {
    cfg.validate()?;
    if data.is_empty() {
        return Err("no training data".into());
    }
    if data.n_features != model.n_visible() {
        return Err(format!(
            "the data has {} variables but the RBM has {} visible units",
            data.n_features,
            model.n_visible()
        ));
    }
    // Burn's optimizer works on autodiff parameters (the CD step itself runs without autodiff).
    let device = model.visible_bias.val().device();
    if !device.is_autodiff() {
        model = model.train();
    }
    let inner = device.clone().inner();
    let d = data.n_features;
    let n = data.len();
    let mut optim = cfg.optimizer();
    let mut order: Vec<usize> = (0..n).collect();
    let mut batch = Vec::with_capacity(cfg.batch_size * d);
    let mut records = Vec::with_capacity(cfg.epochs);
    let total_evolutions = callback.total_evolutions(n.div_ceil(cfg.batch_size), cfg.epochs);
    let mut global_step = 0usize;
    callback.observe(&model);
    for epoch in 1..=cfg.epochs {
        let t0 = Instant::now();
        let last = epoch == cfg.epochs;
        shuffle(
            &mut order,
            &mut FastRng::new(cfg.seed, &[0x5F, epoch as u64]),
        );
        let mut err_sum = Tensor::<1>::zeros([1], &inner);
        let mut batches = 0usize;
        for idx in order.chunks(cfg.batch_size) {
            batch.clear();
            for &i in idx {
                batch.extend_from_slice(&data.values[i * d..(i + 1) * d]);
            }
            let v = Tensor::<2>::from_data(TensorData::new(batch.clone(), [idx.len(), d]), &inner);
            let cd = model.cd_step(v);
            err_sum = err_sum + cd.reconstruction_error;
            model = optim.step(cfg.lr, model, cd.grads);
            batches += 1;
            global_step += 1;
            let end_of_training = last && batches * cfg.batch_size >= n;
            if callback.evolves_at_step(global_step) && !end_of_training {
                let (m, changed) = callback.evolve(model, epoch, global_step, total_evolutions);
                model = m;
                if changed {
                    optim = cfg.optimizer();
                }
            }
        }
        let (m, evolved) = if last {
            callback.final_prune(model, epoch, global_step, total_evolutions)
        } else if callback.evolves_at_epoch_end() {
            callback.evolve(model, epoch, global_step, total_evolutions)
        } else {
            (model, false)
        };
        model = m;
        if evolved {
            // Fresh optimizer state, as strategy::apply_evolution does in the Learner path.
            optim = cfg.optimizer();
        }
        let seconds = t0.elapsed().as_secs_f64();
        let rec = EpochRecord {
            epoch,
            reconstruction_error: float_data(err_sum)[0] as f64 / batches.max(1) as f64,
            seconds,
            connections: if evolved {
                callback.stats().connections
            } else {
                model.nnz() as u64
            },
            evolved,
        };
        on_epoch(&rec, &model);
        records.push(rec);
    }
    Ok((model, records))
}

fn shuffle(order: &mut [usize], rng: &mut FastRng) {
    for i in (1..order.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
}

/// Trains `model` through Burn's `SupervisedTraining` + `Learner` with SET (`with_set`): the
/// dashboard shows the reconstruction error (loss), connections, density, changed connections
/// and the hidden-degree max / std. `model` must live on an autodiff device; `valid` is used for
/// the validation split. Returns the trained model (after the final prune).
pub fn train_rbm_with_learner(
    model: SetRbm,
    train: BinaryData,
    valid: BinaryData,
    cfg: &RbmTrainConfig,
    callback: &SetCallback,
    artifacts: &Path,
    application_logger: bool,
) -> Result<SetRbm, String> {
    cfg.validate()?;
    std::fs::create_dir_all(artifacts)
        .map_err(|e| format!("cannot create {}: {e}", artifacts.display()))?;
    // another run's logs in this folder must not be wiped (held for the whole training)
    let _lock = crate::experiment::lock_artifacts(artifacts)?;
    for split in ["train", "valid"] {
        let _ = std::fs::remove_dir_all(artifacts.join(split));
    }
    let dl_train = DataLoaderBuilder::new(BinaryBatcher)
        .batch_size(cfg.batch_size)
        .shuffle(cfg.seed)
        .num_workers(1)
        .build(BinaryDataset::new(train));
    let dl_valid = DataLoaderBuilder::new(BinaryBatcher)
        .batch_size(cfg.batch_size.max(256))
        .num_workers(1)
        .build(BinaryDataset::new(valid));
    let mut training = SupervisedTraining::new(artifacts, dl_train, dl_valid)
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .metric_train_numeric(HiddenDegreeMetric::new(HiddenDegreeStat::Max))
        .metric_train_numeric(HiddenDegreeMetric::new(HiddenDegreeStat::Std))
        .with_set(callback)
        .num_epochs(cfg.epochs)
        .summary();
    if !application_logger {
        training = training.with_application_logger(None);
    }
    if let Some(r) = crate::renderer::plain_renderer_unless_terminal() {
        training = training.renderer(r);
    }
    let result = training.launch(Learner::new(model, cfg.optimizer(), cfg.lr));
    if let Some(e) = result.error {
        return Err(format!("training failed: {e}"));
    }
    Ok(result.model)
}
