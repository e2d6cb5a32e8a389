//! `burn-set cnn`: SET-CNN / CNNFixProb / CNN on CIFAR10. A thin shell over
//! `burn_set::cnn::run_cnn`.

use burn_set::backend::BackendKind;
use burn_set::cnn::{CnnRun, run_cnn};
use burn_set::data::{Split, load_cifar10};
use burn_set::set_linear::Sparsity;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct CnnArgs {
    /// cifar10
    #[arg(long, default_value = "cifar10")]
    dataset: String,
    /// CIFAR10 folder (binary batches or train/<class>/ images) or .tar.gz archive
    /// (default: the embedded 500/200-image sample).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// set | fixprob | dense (the head's hidden layers)
    #[arg(long, default_value = "set")]
    model: Sparsity,
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    epochs: usize,
    /// Head hidden widths, comma separated.
    #[arg(long, default_value = "2048,2048", value_parser = crate::counts, allow_negative_numbers = true)]
    head_widths: ::std::vec::Vec<usize>,
    #[arg(long, default_value_t = 20.0, allow_negative_numbers = true)]
    epsilon: f64,
    #[arg(long, default_value_t = 0.3, allow_negative_numbers = true)]
    zeta: f64,
    #[arg(long, default_value_t = 0.3, allow_negative_numbers = true)]
    dropout: f64,
    #[arg(long, default_value_t = 128, allow_negative_numbers = true)]
    batch_size: usize,
    #[command(flatten)]
    sgd: crate::SgdArgs,
    /// Random crop (padding 4) + horizontal flip of training images (default on).
    #[arg(long, overrides_with = "no_augment")]
    augment: bool,
    /// Train on the images as they are.
    #[arg(long)]
    no_augment: bool,
    /// Keep only the first N training samples (classes stay balanced for image layouts).
    #[arg(long, allow_negative_numbers = true)]
    train_limit: Option<usize>,
    /// Keep only the first N test samples.
    #[arg(long, allow_negative_numbers = true)]
    test_limit: Option<usize>,
    /// flex | ndarray | wgpu (flex by default: its conv2d is ~45× faster than ndarray's here)
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// sparse | masked storage of the head's sparse layers (default: the faster one for the
    /// shape and backend)
    #[arg(long)]
    storage: Option<burn_set::layers::Storage>,
    #[arg(long, default_value_t = 42, allow_negative_numbers = true)]
    seed: u64,
    /// Where Burn writes logs and checkpoints.
    #[arg(long, default_value = "artifacts/cnn")]
    artifacts: PathBuf,
    /// Print one JSON summary as the last stdout line.
    #[arg(long)]
    json: bool,
}

pub fn cnn(a: CnnArgs) -> Result<(), String> {
    if !a.dataset.eq_ignore_ascii_case("cifar10") {
        return Err(format!(
            "unknown data set '{}' for cnn (expected cifar10)",
            a.dataset
        ));
    }
    let dir = a.data_dir.as_deref();
    let train = load_cifar10(dir, Split::Train, a.train_limit).map_err(|e| e.to_string())?;
    let test = load_cifar10(dir, Split::Test, a.test_limit).map_err(|e| e.to_string())?;
    let source = match &a.data_dir {
        Some(d) => d.display().to_string(),
        None => "embedded sample".into(),
    };
    let augment = !a.no_augment || a.augment;
    eprintln!(
        "burn-set cnn: cifar10 ({source}): {} train / {} test samples, model {}, head {:?}, augment {augment}",
        train.len(),
        test.len(),
        a.model.name(),
        a.head_widths
    );
    let run = CnnRun {
        dataset: "cifar10".into(),
        model: a.model,
        epochs: a.epochs,
        head_widths: a.head_widths,
        epsilon: a.epsilon,
        zeta: a.zeta,
        dropout: a.dropout,
        batch_size: a.batch_size,
        lr: a.sgd.lr,
        momentum: a.sgd.momentum,
        weight_decay: a.sgd.weight_decay,
        augment,
        seed: a.seed,
        backend: a.backend,
        storage: a.storage,
        artifacts: a.artifacts,
        num_workers: 1,
    };
    let report = run_cnn(&run, train, test)?;
    if a.json {
        crate::print(&report, true)?;
    } else {
        println!(
            "{} CNN on {}: test accuracy {:.2}% (best {:.2}%), head {} of {} weights ({} of {} in its sparse layers), conv {} weights, {:.1} s/epoch",
            report.model,
            report.dataset,
            report.test_accuracy,
            report.best_test_accuracy,
            report.head_weights,
            report.dense_head_weights,
            report.connections,
            report.dense_connections,
            report.conv_weights,
            report.seconds_per_epoch
        );
    }
    Ok(())
}
