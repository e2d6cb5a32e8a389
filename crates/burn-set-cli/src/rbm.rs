//! `burn-set rbm`: RBM / RBMFixProb / SET-RBM trained by CD-k, test log-likelihood by AIS.
//! A thin shell over `burn_set::rbm::run_rbm`.

use burn_set::backend::BackendKind;
use burn_set::data::{BinaryDatasetKind, load_binary_density};
use burn_set::rbm::{RbmRun, run_rbm};
use burn_set::set_linear::Sparsity;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct RbmArgs {
    /// dna | adult | connect4 | ocr_letters | rcv1 | mnist
    #[arg(long, default_value = "dna")]
    dataset: BinaryDatasetKind,
    /// Folder with `{dataset}.{train,valid,test}.data[.gz]` (or the MNIST IDX files); default:
    /// the embedded dna data set.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// set | fixprob | dense
    #[arg(long, default_value = "set")]
    model: Sparsity,
    /// Hidden units.
    #[arg(long, default_value_t = 250, allow_negative_numbers = true)]
    hidden: usize,
    /// Gibbs steps per update (the paper: 1, 3 or 10).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
    cd_k: usize,
    /// Persistent CD (fantasy particles kept between updates).
    #[arg(long)]
    persistent: bool,
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    epochs: usize,
    #[arg(long, default_value_t = 11.0, allow_negative_numbers = true)]
    epsilon: f64,
    #[arg(long, default_value_t = 0.3, allow_negative_numbers = true)]
    zeta: f64,
    /// Standard deviation of the initial and regrown weights.
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    init_std: f64,
    #[command(flatten)]
    sgd: crate::SgdArgs,
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    batch_size: usize,
    /// AIS runs.
    #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
    ais_runs: usize,
    /// AIS annealing steps (14,500 = Salakhutdinov & Murray's schedule; other counts keep its
    /// shape).
    #[arg(long, default_value_t = 14_500, allow_negative_numbers = true)]
    ais_betas: usize,
    /// Also evaluate by AIS every N epochs (0: only after the last); `best_test_log_likelihood`
    /// is the best of these evaluations.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    eval_every: usize,
    /// Also evaluate after these epochs, comma separated (e.g. 5,10,20).
    #[arg(long, value_parser = crate::counts, allow_negative_numbers = true)]
    eval_epochs: Option<::std::vec::Vec<usize>>,
    #[arg(long, default_value_t = 42, allow_negative_numbers = true)]
    seed: u64,
    /// flex | ndarray | wgpu (flex: about 1.7x faster than ndarray on these small matrices)
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// Train through Burn's Learner (dashboard) with artifacts in this folder, instead of the
    /// plain loop.
    #[arg(long)]
    learner: Option<PathBuf>,
    /// Print one JSON summary as the last stdout line.
    #[arg(long)]
    json: bool,
}

pub fn rbm(a: RbmArgs) -> Result<(), String> {
    let data = load_binary_density(a.dataset, a.data_dir.as_deref()).map_err(|e| e.to_string())?;
    eprintln!(
        "burn-set rbm: {} ({}): {} train (from {}) / {} test (from {}) samples, {} variables",
        data.kind,
        data.origin,
        data.train.len(),
        data.train_source,
        data.test.len(),
        data.test_source,
        data.train.n_features
    );
    for note in &data.notes {
        eprintln!("note: {note}");
    }
    let run = RbmRun {
        model: a.model,
        hidden: a.hidden,
        cd_k: a.cd_k,
        persistent: a.persistent,
        epochs: a.epochs,
        epsilon: a.epsilon,
        zeta: a.zeta,
        init_std: a.init_std,
        lr: a.sgd.lr,
        momentum: a.sgd.momentum,
        weight_decay: a.sgd.weight_decay,
        batch_size: a.batch_size,
        ais_runs: a.ais_runs,
        ais_betas: a.ais_betas,
        eval_every: a.eval_every,
        eval_epochs: a.eval_epochs.unwrap_or_default(),
        seed: a.seed,
        backend: a.backend,
        learner_artifacts: a.learner,
    };
    let r = run_rbm(&run, &data)?;
    if a.json {
        crate::print(&r, true)?;
    } else {
        let unc = |x: f64| {
            if x.is_finite() {
                format!("{x:.2}")
            } else {
                "unbounded".into()
            }
        };
        println!(
            "{} on {} ({}×{}, CD-{}{}): test log-likelihood {:.2} nats (best {:.2} at epoch {}; \
             log Z {:.2} ± {} by AIS, {} runs × {} βs), train {:.2}; {} of {} weights ({:.2}%); \
             {:.3} s/epoch, AIS {:.1} s; test = {} split",
            r.model_name,
            r.dataset,
            r.visible,
            r.hidden,
            r.cd_k,
            if r.persistent { " persistent" } else { "" },
            r.test_log_likelihood,
            r.best_test_log_likelihood,
            r.best_epoch,
            r.log_z,
            unc(r.log_z_uncertainty),
            r.ais_runs,
            r.ais_betas,
            r.train_log_likelihood,
            r.connections,
            r.dense_connections,
            100.0 * r.density,
            r.seconds_per_epoch,
            r.ais_seconds,
            r.test_split
        );
    }
    Ok(())
}
