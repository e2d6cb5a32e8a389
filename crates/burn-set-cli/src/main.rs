//! `burn-set`: reproduces the SET paper's comparisons on top of the burn-set library.
//! A thin shell: parse flags, load data, call the library, print the report.

use burn_set::backend::BackendKind;
use burn_set::bench;
use burn_set::data::{ClassificationData, DatasetKind, Split, load_classification};
use burn_set::experiment::{MlpRun, run_mlp};
use burn_set::layers::Storage;
use burn_set::set_linear::Sparsity;
use burn_set::srelu::ActivationKind;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// A comma-separated list of counts (`1000,1000,1000`), parsed as one value, so that a repeated
/// flag replaces the list (`args_override_self`) instead of appending to it.
pub(crate) fn counts(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .map(|v| {
            let v = v.trim();
            v.parse::<usize>().map_err(|_| match v {
                "" => format!("an empty entry in '{s}' (counts are comma separated)"),
                _ => format!("'{v}' is not a count (a whole number ≥ 0)"),
            })
        })
        .collect()
}

mod cnn;
mod rbm;

/// mimalloc keeps freed blocks for reuse: a training step allocates and frees many tensors of
/// a few hundred KB, which glibc's allocator hands back to the kernel and faults in again
/// (15–25 % of a sparse SET-MLP step at 1,000 neurons on 2 cores, in two measurements).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its index in `mi_option_e` of mimalloc 3.3, the version
/// libmimalloc-sys 0.1.49 builds (a test checks that it still names the purge delay).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

// mimalloc's option API, in the static library that libmimalloc-sys links.
unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Keeps the memory a step frees for the next step (unless `MIMALLOC_PURGE_DELAY` says
/// otherwise). mimalloc hands freed memory back to the kernel 1 s after it is freed, and a step
/// of a SET-MLP with 100,000 neurons per layer or more takes longer than that: each step's
/// large buffers were faulted in again, zeroed and on small pages. `bench scale --hidden
/// 100000 --samples 2560`: 74,000–88,000 page faults and 29–30 s of CPU against 1,100 and
/// 24–25 s; peak memory 1.19 → 1.34 GB. (No change at 30,000 neurons and fewer.)
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options; any value is valid (-1: never purge).
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

/// The paper's SGD settings, shared by `mlp`, `cnn` and `rbm`.
#[derive(Args, Debug, Clone, Copy)]
pub struct SgdArgs {
    /// SGD learning rate (the paper's 0.01).
    #[arg(long, default_value_t = 0.01, allow_negative_numbers = true)]
    pub lr: f64,
    /// SGD momentum (no dampening).
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    pub momentum: f64,
    /// L2 weight decay.
    #[arg(long, default_value_t = 0.0002, allow_negative_numbers = true)]
    pub weight_decay: f64,
}

/// Sparse Evolutionary Training (Mocanu et al. 2018) with Burn.
#[derive(Parser)]
#[command(name = "burn-set", version, about, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train an MLP (SET-MLP, MLPFixProb or dense MLP) with Burn's Learner.
    Mlp(MlpArgs),
    /// Train the CIFAR10 CNN with a SET / FixProb / dense head (SET-CNN, CNNFixProb, CNN).
    Cnn(cnn::CnnArgs),
    /// Train an RBM (SET-RBM, RBMFixProb or dense RBM) by CD-k; test log-likelihood by AIS.
    Rbm(rbm::RbmArgs),
    /// Benchmarks printed as ratios against a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        which: BenchCmd,
    },
    /// Draw the Scale chart (SVG) from `bench scale --json` lines.
    PlotScale {
        /// File of `burn-set bench scale --json` output lines (other lines are skipped).
        input: PathBuf,
        /// SVG to write (`.svg`; other extensions are refused).
        #[arg(long, default_value = "scale.svg")]
        out: PathBuf,
    },
}

#[derive(Args)]
struct MlpArgs {
    /// mnist | fashion-mnist | higgs
    #[arg(long, default_value = "mnist")]
    dataset: DatasetKind,
    /// Folder with the full data set (default: $BURN_SET_DATA_DIR, else the embedded sample).
    #[arg(long, env = "BURN_SET_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// set | fixprob | dense
    #[arg(long, default_value = "set")]
    model: Sparsity,
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    epochs: usize,
    /// Hidden widths, comma separated.
    #[arg(long, default_value = "1000,1000,1000", value_parser = counts, allow_negative_numbers = true)]
    hidden: ::std::vec::Vec<usize>,
    #[arg(long, default_value_t = 20.0, allow_negative_numbers = true)]
    epsilon: f64,
    #[arg(long, default_value_t = 0.3, allow_negative_numbers = true)]
    zeta: f64,
    /// srelu | relu
    #[arg(long, default_value = "srelu")]
    activation: ActivationKind,
    #[arg(long, default_value_t = 0.3, allow_negative_numbers = true)]
    dropout: f64,
    #[arg(long, default_value_t = 128, allow_negative_numbers = true)]
    batch_size: usize,
    #[command(flatten)]
    sgd: crate::SgdArgs,
    #[arg(long, default_value_t = 42, allow_negative_numbers = true)]
    seed: u64,
    /// Keep only the first N training samples.
    #[arg(long, allow_negative_numbers = true)]
    train_limit: Option<usize>,
    /// Keep only the first N test samples.
    #[arg(long, allow_negative_numbers = true)]
    test_limit: Option<usize>,
    /// flex | ndarray | wgpu (flex by default: the faster CPU backend here, with the native
    /// sparse and SReLU kernels)
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// sparse | masked storage of the sparse layers (default: the faster one for the shape)
    #[arg(long)]
    storage: Option<Storage>,
    /// Where Burn writes logs and checkpoints.
    #[arg(long, default_value = "artifacts/mlp")]
    artifacts: PathBuf,
    /// Print one JSON summary as the last stdout line.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Forward+backward of SetLinear vs burn's Linear, 1000×1000, batch 128.
    MaskedLinear {
        #[arg(long, default_value_t = 30, value_parser = positive, allow_negative_numbers = true)]
        iterations: usize,
        #[arg(long, default_value = "ndarray")]
        backend: BackendKind,
        #[arg(long)]
        json: bool,
    },
    /// SET-MLP epoch time with sparse vs masked storage vs the dense MLP (MNIST shape).
    SparseMlp {
        #[arg(long, default_value_t = 50, value_parser = positive, allow_negative_numbers = true)]
        steps: usize,
        #[arg(long, default_value = "flex")]
        backend: BackendKind,
        #[arg(long)]
        json: bool,
    },
    /// One epoch time and peak memory of a 784-N-N-N-10 SET-MLP (timed after a warm-up of one
    /// step and an evolution, reported as `warmup_seconds`).
    Scale {
        /// Neurons per hidden layer.
        #[arg(long, default_value_t = 1000, allow_negative_numbers = true)]
        hidden: usize,
        /// Samples in the epoch.
        #[arg(
            long,
            default_value_t = 10_000,
            value_parser = positive,
            allow_negative_numbers = true
        )]
        samples: usize,
        /// sparse | masked
        #[arg(long, default_value = "sparse")]
        storage: Storage,
        #[arg(long, default_value = "flex")]
        backend: BackendKind,
        #[arg(long)]
        json: bool,
    },
    /// One SET evolution of the MNIST SET-MLP vs one training epoch.
    Evolve {
        #[arg(long, default_value_t = 20, value_parser = positive, allow_negative_numbers = true)]
        steps: usize,
        #[arg(long, default_value_t = 3, value_parser = positive, allow_negative_numbers = true)]
        evolutions: usize,
        #[arg(long, default_value = "ndarray")]
        backend: BackendKind,
        #[arg(long)]
        json: bool,
    },
}

/// Parses a count that must be at least 1 (clap rejects 0 with this message instead of the
/// benchmark silently using 1).
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn load(a: &MlpArgs) -> Result<(ClassificationData, ClassificationData), String> {
    let dir = a.data_dir.as_deref();
    let train = load_classification(a.dataset, dir, Split::Train, a.train_limit)
        .map_err(|e| e.to_string())?;
    let test = load_classification(a.dataset, dir, Split::Test, a.test_limit)
        .map_err(|e| e.to_string())?;
    Ok((train, test))
}

fn mlp(a: MlpArgs) -> Result<(), String> {
    let (mut train, mut test) = load(&a)?;
    if a.dataset == DatasetKind::Higgs {
        ClassificationData::standardize(&mut train, &mut test).map_err(|e| e.to_string())?;
    }
    let source = match &a.data_dir {
        Some(d) => d.display().to_string(),
        None => "embedded sample".into(),
    };
    eprintln!(
        "burn-set mlp: {} ({source}): {} train / {} test samples, model {}, hidden {:?}",
        a.dataset,
        train.len(),
        test.len(),
        a.model.name(),
        a.hidden
    );
    let run = MlpRun {
        dataset: a.dataset.to_string(),
        model: a.model,
        epochs: a.epochs,
        hidden: a.hidden,
        epsilon: a.epsilon,
        zeta: a.zeta,
        activation: a.activation,
        dropout: a.dropout,
        batch_size: a.batch_size,
        lr: a.sgd.lr,
        momentum: a.sgd.momentum,
        weight_decay: a.sgd.weight_decay,
        seed: a.seed,
        backend: a.backend,
        artifacts: a.artifacts,
        num_workers: 1,
        storage: a.storage,
    };
    let report = run_mlp(&run, train, test)?;
    if a.json {
        crate::print(&report, true)?;
    } else {
        println!(
            "{} on {}: test accuracy {:.2}% (best {:.2}%), {} of {} hidden-layer weights ({:.2}%), {:.1} s/epoch, evolution {:.2} s in all",
            report.model,
            report.dataset,
            report.test_accuracy,
            report.best_test_accuracy,
            report.connections,
            report.dense_connections,
            100.0 * report.connections as f64 / report.dense_connections as f64,
            report.seconds_per_epoch,
            report.evolution_seconds
        );
    }
    Ok(())
}

fn print<T: serde::Serialize>(value: &T, json: bool) -> Result<(), String> {
    let s = if json {
        serde_json::to_string(value)
    } else {
        serde_json::to_string_pretty(value)
    };
    println!("{}", s.map_err(|e| e.to_string())?);
    Ok(())
}

/// An error when `out` names a file of another format than the SVG `plot-scale` writes.
fn svg_path(out: &std::path::Path) -> Result<(), String> {
    match out.extension().and_then(|e| e.to_str()) {
        Some(e) if !e.eq_ignore_ascii_case("svg") => Err(format!(
            "{}: plot-scale writes SVG only; name the output .svg (an SVG renderer such as \
             resvg turns it into a .{e})",
            out.display()
        )),
        _ => Ok(()),
    }
}

/// Reads `bench scale` JSON lines and writes the chart.
fn plot_scale(input: &std::path::Path, out: &std::path::Path) -> Result<(), String> {
    svg_path(out)?;
    let text = std::fs::read_to_string(input)
        .map_err(|e| format!("cannot read {}: {e}", input.display()))?;
    let mut points = burn_set::plot::parse_scale_lines(&text)
        .map_err(|e| format!("{}: {e}", input.display()))?;
    if points.is_empty() {
        return Err(format!(
            "{} has no `burn-set bench scale --json` lines",
            input.display()
        ));
    }
    points.sort_by_key(|p| p.0);
    std::fs::write(out, burn_set::plot::scale_chart(&points))
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!("wrote {} ({} points)", out.display(), points.len());
    Ok(())
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    // Everything runs on a worker of a rayon pool, so the host kernels' parallel loops start
    // on the calling thread and are stolen by the others, instead of being queued from
    // outside and waited for (about 10 % of a sparse MLP step at 1,000 neurons).
    match rayon::ThreadPoolBuilder::new().build() {
        Ok(pool) => pool.install(|| run(cli)),
        Err(_) => run(cli),
    }
}

fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Mlp(a) => mlp(a),
        Command::Cnn(a) => cnn::cnn(a),
        Command::Rbm(a) => rbm::rbm(a),
        Command::PlotScale { input, out } => plot_scale(&input, &out),
        Command::Bench { which } => match which {
            BenchCmd::MaskedLinear {
                iterations,
                backend,
                json,
            } => backend
                .device()
                .and_then(|d| print(&bench::masked_linear(&d, iterations), json)),
            BenchCmd::SparseMlp {
                steps,
                backend,
                json,
            } => backend
                .device()
                .and_then(|d| bench::sparse_mlp(&d, steps))
                .and_then(|r| print(&r, json)),
            BenchCmd::Scale {
                hidden,
                samples,
                storage,
                backend,
                json,
            } => backend
                .device()
                .and_then(|d| bench::scale(&d, hidden, samples, storage))
                .and_then(|r| print(&r, json)),
            BenchCmd::Evolve {
                steps,
                evolutions,
                backend,
                json,
            } => backend
                .device()
                .and_then(|d| bench::evolve(&d, steps, evolutions))
                .and_then(|r| print(&r, json)),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" {
        fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    }

    #[test]
    fn the_purge_delay_option_is_mimallocs_and_is_turned_off() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // the user's setting wins, and then the default is not known
        }
        // the purge delay's default, 1,000 ms (its neighbours in the list default to 1 and 0)
        // SAFETY (both): reads one of mimalloc's options.
        assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, 1000);
        keep_freed_memory();
        assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, -1);
    }

    #[test]
    fn plot_scale_refuses_to_write_svg_under_another_format_s_name() {
        use std::path::Path;
        assert!(svg_path(Path::new("docs/scale.svg")).is_ok());
        assert!(svg_path(Path::new("scale.SVG")).is_ok());
        assert!(svg_path(Path::new("scale")).is_ok());
        let e = svg_path(Path::new("docs/scale.png")).unwrap_err();
        assert!(e.contains("writes SVG only") && e.contains(".png"), "{e}");
    }
}
