//! The paper's RBM comparison as one call: RBM (dense) vs RBMFixProb vs SET-RBM trained by
//! CD-k, judged by the average test log-probability estimated with AIS. What `burn-set rbm` runs.

use super::ais::{AisConfig, AisEstimate, ais_log_z, base_rate_visible_bias, mean_neg_free_energy};
use super::metrics::{DegreeSummary, RbmTopology};
use super::model::{SetRbm, SetRbmConfig};
use super::train::{EpochRecord, RbmTrainConfig, train_rbm, train_rbm_with_learner};
use crate::backend::BackendKind;
use crate::callback::SetCallback;
use crate::data::BinaryDensitySet;
use crate::evolution::{EvolutionConfig, RegrowInit};
use crate::set_linear::Sparsity;
use std::path::PathBuf;
use std::time::Instant;

/// Everything that defines one RBM run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RbmRun {
    /// Dense / FixProb / SET.
    pub model: Sparsity,
    /// Hidden units.
    pub hidden: usize,
    /// Gibbs steps per update.
    pub cd_k: usize,
    /// Persistent CD.
    pub persistent: bool,
    /// Epochs.
    pub epochs: usize,
    /// SET's ε.
    pub epsilon: f64,
    /// SET's ζ.
    pub zeta: f64,
    /// Standard deviation of the initial (and regrown) weights.
    pub init_std: f64,
    /// Learning rate.
    pub lr: f64,
    /// Momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Mini-batch size.
    pub batch_size: usize,
    /// AIS runs.
    pub ais_runs: usize,
    /// AIS annealing steps.
    pub ais_betas: usize,
    /// Evaluate by AIS every this many epochs (0: only after the last epoch).
    pub eval_every: usize,
    /// Also evaluate after these epochs (e.g. early ones, where a dense RBM peaks).
    pub eval_epochs: Vec<usize>,
    /// Seed of topology, weights, sampling, shuffling, evolution and AIS.
    pub seed: u64,
    /// Backend.
    pub backend: BackendKind,
    /// Train through Burn's Learner (dashboard) with artifacts in this folder instead of the
    /// plain loop.
    pub learner_artifacts: Option<PathBuf>,
}

impl RbmRun {
    /// The paper's settings for `model`: 250 hidden units, CD-3, ε = 11, ζ = 0.3, lr 0.01,
    /// momentum 0.9, weight decay 0.0002, batch 10, AIS 100 runs × 14,500 βs; initial weights
    /// N(0, 0.05²) as in the authors' reference code; Burn's flex backend (the fastest CPU
    /// backend for these small matrices).
    pub fn paper(model: Sparsity) -> Self {
        Self {
            model,
            hidden: 250,
            cd_k: 3,
            persistent: false,
            epochs: 10,
            epsilon: 11.0,
            zeta: 0.3,
            init_std: 0.05,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 0.0002,
            batch_size: 10,
            ais_runs: 100,
            ais_betas: 14_500,
            eval_every: 0,
            eval_epochs: Vec::new(),
            seed: 42,
            backend: BackendKind::Flex,
            learner_artifacts: None,
        }
    }
}

/// One AIS evaluation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RbmEvaluation {
    /// After this epoch (after its evolution / final prune).
    pub epoch: usize,
    /// Average test log-probability, nats.
    pub test_log_likelihood: f64,
    /// Average training log-probability, nats.
    pub train_log_likelihood: f64,
    /// The AIS estimate.
    pub ais: AisEstimate,
    /// Connections of the evaluated model.
    pub connections: u64,
}

/// What a run measured (the CLI prints it as JSON).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RbmReport {
    /// `dense`, `fixprob` or `set`.
    pub model: String,
    /// The paper's name: `RBM`, `RBMFixProb` or `SET-RBM`.
    pub model_name: String,
    /// Data set.
    pub dataset: String,
    /// Visible units.
    pub visible: usize,
    /// Hidden units.
    pub hidden: usize,
    /// CD-k.
    pub cd_k: usize,
    /// Persistent CD.
    pub persistent: bool,
    /// Epochs trained.
    pub epochs: usize,
    /// Connections after training (after the final prune for SET-RBM).
    pub connections: u64,
    /// `n_visible · n_hidden`.
    pub dense_connections: u64,
    /// `connections / dense_connections`.
    pub density: f64,
    /// Average test log-probability after the last epoch, nats (AIS log Z).
    pub test_log_likelihood: f64,
    /// Best average test log-probability over the AIS evaluations (every `eval_every` epochs,
    /// after the `eval_epochs` and after the last; equal to `test_log_likelihood` when only the
    /// last is evaluated). Like the paper's Table 2 it picks the best on the test data itself.
    pub best_test_log_likelihood: f64,
    /// Epoch of the best evaluation.
    pub best_epoch: usize,
    /// Average training log-probability after the last epoch, nats.
    pub train_log_likelihood: f64,
    /// Final AIS estimate of log Z.
    pub log_z: f64,
    /// Larger magnitude of the final estimate's ±3σ interval in log space (`null` in JSON
    /// when the lower bound does not exist). The test log-likelihood carries the same
    /// uncertainty, mirrored.
    pub log_z_uncertainty: f64,
    /// `log(mean(w) − 3σ/√M) − log mean(w)`.
    pub log_z_uncertainty_low: Option<f64>,
    /// `log(mean(w) + 3σ/√M) − log mean(w)`.
    pub log_z_uncertainty_high: f64,
    /// Mean wall-clock seconds of a training epoch (CD, optimizer, evolution; no evaluation).
    pub seconds_per_epoch: f64,
    /// Seconds spent in SET evolution (all epochs, included in `seconds_per_epoch`).
    pub evolution_seconds: f64,
    /// Seconds of the final AIS estimate.
    pub ais_seconds: f64,
    /// Seconds of all AIS estimates.
    pub ais_seconds_total: f64,
    /// AIS runs.
    pub ais_runs: usize,
    /// AIS annealing steps.
    pub ais_betas: usize,
    /// Training samples.
    pub train_samples: usize,
    /// Test samples.
    pub test_samples: usize,
    /// Where the training samples came from (e.g. `train`, or `valid` when missing).
    pub train_split: String,
    /// Where the test samples came from (`test`, or `valid` when the suite has no test split).
    pub test_split: String,
    /// Where the data was read.
    pub data_origin: String,
    /// Substitutions made by the loader.
    pub notes: Vec<String>,
    /// Hidden-unit degrees after training.
    pub hidden_degree: DegreeSummary,
    /// Visible-unit degrees after training.
    pub visible_degree: DegreeSummary,
    /// Mean reconstruction error of every epoch.
    pub reconstruction_error_per_epoch: Vec<f64>,
    /// Every AIS evaluation.
    pub evaluations: Vec<RbmEvaluation>,
    /// SET evolutions run (excluding the final prune).
    pub evolutions: usize,
    /// Trained with Burn's Learner (else the plain loop).
    pub learner: bool,
    /// Backend.
    pub backend: BackendKind,
    /// Seed.
    pub seed: u64,
}

/// The paper's name of a variant.
pub fn paper_name(s: Sparsity) -> &'static str {
    match s {
        Sparsity::Dense => "RBM",
        Sparsity::FixProb => "RBMFixProb",
        Sparsity::Set => "SET-RBM",
    }
}

fn evaluate(
    rbm: &SetRbm,
    data: &BinaryDensitySet,
    base: &[f32],
    ais: &AisConfig,
    epoch: usize,
) -> RbmEvaluation {
    let est = ais_log_z(rbm, base, ais);
    RbmEvaluation {
        epoch,
        test_log_likelihood: mean_neg_free_energy(rbm, &data.test) - est.log_z,
        train_log_likelihood: mean_neg_free_energy(rbm, &data.train) - est.log_z,
        connections: rbm.nnz() as u64,
        ais: est,
    }
}

/// Checks the extra evaluation epochs: each must be one the run trains, `1..=epochs` (the last
/// one is evaluated anyway), or it would silently never be evaluated.
pub fn check_eval_epochs(eval_epochs: &[usize], epochs: usize) -> Result<(), String> {
    match eval_epochs.iter().find(|&&e| e == 0 || e > epochs) {
        Some(e) => Err(format!(
            "eval epochs must be in 1..={epochs} (the epochs trained), got {e}"
        )),
        None => Ok(()),
    }
}

/// Intermediate AIS evaluations run inside the plain training loop only: asked for together
/// with the Learner they would silently not happen (and "best" would be the final value).
fn check_learner_evaluations(run: &RbmRun) -> Result<(), String> {
    // the last epoch is evaluated anyway
    let extra_epochs = run.eval_epochs.iter().any(|&e| e != run.epochs);
    if run.learner_artifacts.is_some() && (run.eval_every > 0 || extra_epochs) {
        return Err(
            "--eval-every / --eval-epochs need the plain training loop: with --learner only \
             the final model is evaluated"
                .into(),
        );
    }
    Ok(())
}

/// Trains the RBM `run` describes on `data.train` and evaluates it on `data.test` by AIS.
pub fn run_rbm(run: &RbmRun, data: &BinaryDensitySet) -> Result<RbmReport, String> {
    if run.ais_runs == 0 || run.ais_betas == 0 {
        return Err("AIS needs at least one run and one annealing step".into());
    }
    let train_cfg = RbmTrainConfig::new()
        .with_epochs(run.epochs)
        .with_batch_size(run.batch_size)
        .with_lr(run.lr)
        .with_momentum(run.momentum)
        .with_weight_decay(run.weight_decay)
        .with_seed(run.seed);
    train_cfg.validate()?;
    check_eval_epochs(&run.eval_epochs, run.epochs)?;
    check_learner_evaluations(run)?;
    // Burn's optimizer needs autodiff parameters; CD and AIS run on the inner twin.
    let device = run.backend.device()?.autodiff();
    let nv = data.train.n_features;
    let rbm_cfg = SetRbmConfig::new(nv, run.hidden)
        .with_epsilon(run.epsilon)
        .with_sparsity(run.model)
        .with_seed(run.seed)
        .with_cd_k(run.cd_k)
        .with_persistent(run.persistent)
        .with_init_std(run.init_std);
    // Regrown connections start at N(0, 0.05²) like the initial ones, as in the authors'
    // SET-RBM reference code (`randn / 20`).
    let callback = SetCallback::try_new(
        EvolutionConfig::new()
            .with_zeta(run.zeta)
            .with_regrow_init(RegrowInit::Normal {
                std: rbm_cfg.init_std as f32,
            })
            .with_seed(run.seed),
    )?;
    let base = base_rate_visible_bias(&data.train);
    let ais = AisConfig::new()
        .with_runs(run.ais_runs)
        .with_betas(run.ais_betas)
        .with_seed(run.seed ^ 0xA1);
    let marginals = data.train.marginals();
    let mut evaluations = Vec::new();

    let (model, records, seconds_per_epoch) = match &run.learner_artifacts {
        None => {
            let model = rbm_cfg
                .try_init(&device)?
                .with_visible_marginals(&marginals);
            let (model, records) =
                train_rbm(model, &data.train, &train_cfg, &callback, |rec, m| {
                    let due = (run.eval_every > 0 && rec.epoch % run.eval_every == 0)
                        || run.eval_epochs.contains(&rec.epoch);
                    if due && rec.epoch < run.epochs {
                        evaluations.push(evaluate(m, data, &base, &ais, rec.epoch));
                    }
                })?;
            let spe = records.iter().map(|r| r.seconds).sum::<f64>() / records.len() as f64;
            (model, records, spe)
        }
        Some(dir) => {
            let model = rbm_cfg
                .try_init(&device)?
                .with_visible_marginals(&marginals);
            let valid = data.valid.clone().unwrap_or_else(|| data.test.clone());
            let t0 = Instant::now();
            let model = train_rbm_with_learner(
                model,
                data.train.clone(),
                valid,
                &train_cfg,
                &callback,
                dir,
                true,
            )?;
            let spe = t0.elapsed().as_secs_f64() / run.epochs as f64;
            (model, Vec::<EpochRecord>::new(), spe)
        }
    };
    let final_eval = evaluate(&model, data, &base, &ais, run.epochs);
    evaluations.push(final_eval.clone());
    let best = evaluations
        .iter()
        .max_by(|a, b| a.test_log_likelihood.total_cmp(&b.test_log_likelihood))
        .expect("at least the final evaluation");
    let topo = RbmTopology::of(&model);
    let est = &final_eval.ais;
    Ok(RbmReport {
        model: run.model.name().to_string(),
        model_name: paper_name(run.model).to_string(),
        dataset: data.kind.name().to_string(),
        visible: nv,
        hidden: run.hidden,
        cd_k: run.cd_k,
        persistent: run.persistent,
        epochs: run.epochs,
        connections: topo.connections,
        dense_connections: (nv * run.hidden) as u64,
        density: topo.density,
        test_log_likelihood: final_eval.test_log_likelihood,
        best_test_log_likelihood: best.test_log_likelihood,
        best_epoch: best.epoch,
        train_log_likelihood: final_eval.train_log_likelihood,
        log_z: est.log_z,
        log_z_uncertainty: est.uncertainty(),
        log_z_uncertainty_low: est.uncertainty_low,
        log_z_uncertainty_high: est.uncertainty_high,
        seconds_per_epoch,
        evolution_seconds: callback.evolution_seconds(),
        ais_seconds: est.seconds,
        ais_seconds_total: evaluations.iter().map(|e| e.ais.seconds).sum(),
        ais_runs: est.runs,
        ais_betas: est.betas,
        train_samples: data.train.len(),
        test_samples: data.test.len(),
        train_split: data.train_source.to_string(),
        test_split: data.test_source.to_string(),
        data_origin: data.origin.clone(),
        notes: data.notes.clone(),
        hidden_degree: topo.hidden_degree,
        visible_degree: topo.visible_degree,
        reconstruction_error_per_epoch: records.iter().map(|r| r.reconstruction_error).collect(),
        evaluations,
        evolutions: callback.history().iter().filter(|r| !r.final_prune).count(),
        learner: run.learner_artifacts.is_some(),
        backend: run.backend,
        seed: run.seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intermediate_evaluations_with_the_learner_are_refused() {
        let mut run = RbmRun::paper(Sparsity::Set);
        assert!(check_learner_evaluations(&run).is_ok());
        run.learner_artifacts = Some(PathBuf::from("artifacts/rbm"));
        assert!(check_learner_evaluations(&run).is_ok());
        run.eval_every = 5;
        assert!(check_learner_evaluations(&run).is_err());
        run.eval_every = 0;
        run.eval_epochs = vec![run.epochs];
        assert!(
            check_learner_evaluations(&run).is_ok(),
            "the last epoch is evaluated anyway"
        );
        run.eval_epochs = vec![3];
        let e = check_learner_evaluations(&run).unwrap_err();
        assert!(e.contains("--learner"), "{e}");
    }

    #[test]
    fn eval_epochs_outside_the_trained_ones_are_rejected() {
        assert!(check_eval_epochs(&[], 1).is_ok());
        assert!(check_eval_epochs(&[1, 5, 10], 10).is_ok());
        let e = check_eval_epochs(&[0, 5], 1).unwrap_err();
        assert_eq!(
            e,
            "eval epochs must be in 1..=1 (the epochs trained), got 0"
        );
        let e = check_eval_epochs(&[1, 5], 1).unwrap_err();
        assert!(e.ends_with("got 5"), "{e}");
    }
}
