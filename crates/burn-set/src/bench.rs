//! Benchmarks printed as ratios against a baseline measured in the same run (never timed
//! assertions in tests): `burn-set bench masked-linear | evolve | sparse-mlp | scale`.

use crate::callback::SetCallback;
use crate::data::ClassificationBatch;
use crate::evolution::EvolutionConfig;
use crate::layers::Storage;
use crate::mlp::{SetMlp, SetMlpConfig};
use crate::set_linear::{SetLinearConfig, Sparsity};
use burn::module::Module;
use burn::nn::LinearConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Int, Tensor};
use std::time::Instant;

/// Result of `bench masked-linear`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MaskedLinearBench {
    /// Forward+backward time of `SetLinear` over `burn::nn::Linear` (same shape).
    pub ratio: f64,
    /// Milliseconds per forward+backward of `SetLinear`.
    pub set_linear_ms: f64,
    /// Milliseconds per forward+backward of `Linear`.
    pub linear_ms: f64,
    /// Layer shape and batch.
    pub d_input: usize,
    /// Output width.
    pub d_output: usize,
    /// Batch size.
    pub batch: usize,
    /// Timed repetitions of each (after warm-up).
    pub iterations: usize,
    /// Whether the masked layer's weight gradient was computed at its connections only (CPU
    /// backends, f32 — the bench's — and a density, estimated as the op estimates it, of at
    /// most [`SAMPLED_MAX_DENSITY`](crate::mask_backend::SAMPLED_MAX_DENSITY)) rather than as
    /// the dense product masked: why the ratio can be below 1.
    pub sampled_weight_gradient: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times forward+backward of a 1000×1000 `SetLinear` (ε = 20) against `Linear`, batch 128,
/// interleaved so both see the same machine load; reports medians.
pub fn masked_linear(device: &Device, iterations: usize) -> MaskedLinearBench {
    let (d_in, d_out, batch) = (1000, 1000, 128);
    let device = device.clone().autodiff();
    let set = SetLinearConfig::new(d_in, d_out)
        .with_seed(Some(1))
        .init(&device);
    let dense = LinearConfig::new(d_in, d_out).init(&device);
    let x = Tensor::<2>::random([batch, d_in], Distribution::Normal(0.0, 1.0), &device);
    let time = |f: &dyn Fn() -> Tensor<2>| {
        let t0 = Instant::now();
        let y = f();
        let grads = y.sum().backward();
        drop(grads);
        t0.elapsed().as_secs_f64()
    };
    let run_set = || set.forward(x.clone());
    let run_dense = || dense.forward(x.clone());
    for _ in 0..3 {
        time(&run_set);
        time(&run_dense);
    }
    let (mut ts, mut td) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        ts.push(time(&run_set));
        td.push(time(&run_dense));
    }
    let (s, d) = (median(ts), median(td));
    MaskedLinearBench {
        ratio: s / d,
        set_linear_ms: s * 1e3,
        linear_ms: d * 1e3,
        d_input: d_in,
        d_output: d_out,
        batch,
        iterations,
        sampled_weight_gradient: crate::sparse_backend::has_native_kernel(&device)
            && set.mask.as_ref().is_some_and(|m| {
                let m = m.val().into_data().convert::<f32>();
                let m = m.as_slice::<f32>().expect("f32 mask");
                crate::mask_backend::takes_sampled_gradient(m, d_out)
            }),
    }
}

/// Result of `bench evolve`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvolveBench {
    /// Seconds of one SET evolution over the seconds of one training epoch.
    pub evolve_fraction_of_epoch: f64,
    /// Seconds per evolution (mean).
    pub evolve_seconds: f64,
    /// Seconds per epoch, extrapolated from timed SGD steps to `steps_per_epoch`.
    pub epoch_seconds: f64,
    /// Seconds per SGD step (mean of the timed ones).
    pub step_seconds: f64,
    /// Steps in an epoch of 60,000 samples at batch 128.
    pub steps_per_epoch: usize,
    /// Steps timed.
    pub timed_steps: usize,
    /// Evolutions timed.
    pub timed_evolutions: usize,
    /// Note on inputs.
    pub inputs: &'static str,
}

/// Runs `warmup` then `steps` SGD steps (momentum 0.9, weight decay 2e-4, lr 0.01) of `model`
/// on synthetic batches; returns the model and the mean seconds per timed step.
fn time_sgd_steps(
    mut model: SetMlp,
    d_input: usize,
    batch: usize,
    warmup: usize,
    steps: usize,
    device: &Device,
) -> (SetMlp, f64) {
    let mut optim = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
        ))
        .with_weight_decay(Some(WeightDecayConfig::new(2e-4)))
        .init();
    // A few synthetic batches drawn before the clock starts: a data loader's work is not the
    // model's, and drawing 100k random numbers per step would be timed as training otherwise.
    let batches: Vec<(Tensor<2>, Tensor<1, Int>)> = (0..4)
        .map(|_| {
            (
                Tensor::<2>::random([batch, d_input], Distribution::Uniform(0.0, 1.0), device),
                Tensor::<1, Int>::random([batch], Distribution::Uniform(0.0, 10.0), device),
            )
        })
        .collect();
    let mut next = 0usize;
    let mut step = |model: SetMlp| {
        let (x, y) = batches[next % batches.len()].clone();
        next += 1;
        let out = model.forward_classification(ClassificationBatch {
            inputs: x,
            targets: y,
        });
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        optim.step(0.01, model, grads)
    };
    for _ in 0..warmup {
        model = step(model);
    }
    let t0 = Instant::now();
    for _ in 0..steps {
        model = step(model);
    }
    // wait for lazy work to finish
    let _ = model.output.weight.val().sum().into_scalar::<f32>();
    (model, t0.elapsed().as_secs_f64() / steps.max(1) as f64)
}

/// Median seconds per SGD step of each model, timed in interleaved rounds of a few steps so
/// that every variant sees the same machine state (a one-off stall moves a median little).
fn interleaved_step_seconds(
    mut models: Vec<SetMlp>,
    rounds: usize,
    steps_per_round: usize,
    device: &Device,
) -> Vec<f64> {
    let mut times = vec![Vec::new(); models.len()];
    for _ in 0..rounds {
        for (m, t) in models.iter_mut().zip(&mut times) {
            let (next, s) = time_sgd_steps(m.clone(), 784, 128, 1, steps_per_round, device);
            *m = next;
            t.push(s);
        }
    }
    times.into_iter().map(median).collect()
}

/// The 784-N-N-N-10 MLP of the benchmarks (ε = 20), or why it cannot be built (e.g. N = 0, or
/// N so small that ε = 20 asks for more connections than a dense layer has).
fn mnist_mlp(
    sparsity: Sparsity,
    storage: Option<Storage>,
    hidden: usize,
    device: &Device,
) -> Result<SetMlp, String> {
    SetMlpConfig::new(784, vec![hidden; 3], 10)
        .with_sparsity(sparsity)
        .with_storage(storage)
        .try_init(device)
        .map_err(|e| format!("cannot build the 784-{hidden}-{hidden}-{hidden}-10 MLP: {e}"))
}

/// Times one SET evolution of the MNIST SET-MLP 784-1000-1000-1000-10 (ε = 20, masked storage)
/// against an epoch of training (SGD steps at batch 128 on synthetic inputs, extrapolated to
/// 469 steps).
pub fn evolve(
    device: &Device,
    timed_steps: usize,
    timed_evolutions: usize,
) -> Result<EvolveBench, String> {
    let device = device.clone().autodiff();
    let batch = 128;
    let model = mnist_mlp(Sparsity::Set, Some(Storage::Masked), 1000, &device)?;
    let (mut model, step_seconds) = time_sgd_steps(model, 784, batch, 3, timed_steps, &device);
    let steps_per_epoch = 60_000usize.div_ceil(batch);
    let epoch_seconds = step_seconds * steps_per_epoch as f64;

    let cb = SetCallback::new(EvolutionConfig::new());
    let t0 = Instant::now();
    for e in 0..timed_evolutions {
        // what the training strategy does: evolve, then write the model back through a record
        let (evolved, _) = cb.evolve(model.clone(), e + 1, 0, timed_evolutions);
        model = model.load_record(evolved.into_record());
    }
    let evolve_seconds = t0.elapsed().as_secs_f64() / timed_evolutions as f64;
    Ok(EvolveBench {
        evolve_fraction_of_epoch: evolve_seconds / epoch_seconds,
        evolve_seconds,
        epoch_seconds,
        step_seconds,
        steps_per_epoch,
        timed_steps,
        timed_evolutions,
        inputs: "synthetic uniform inputs and random labels (timing only)",
    })
}

/// Result of `bench sparse-mlp`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SparseMlpBench {
    /// Seconds per MNIST epoch (469 steps of 128) with truly sparse storage.
    pub sparse_seconds_per_epoch: f64,
    /// The same with masked storage.
    pub masked_seconds_per_epoch: f64,
    /// The dense MLP of the same shape.
    pub dense_seconds_per_epoch: f64,
    /// dense / sparse.
    pub sparse_vs_dense: f64,
    /// masked / sparse.
    pub sparse_vs_masked: f64,
    /// Steps timed per variant, in interleaved rounds of 5 (the epoch time is extrapolated from
    /// the median round).
    pub timed_steps: usize,
    /// Note on inputs.
    pub inputs: &'static str,
}

/// SET-MLP 784-1000-1000-1000-10 (ε = 20, batch 128) per-epoch time with sparse and masked
/// storage, against the dense MLP, measured in the same run.
pub fn sparse_mlp(device: &Device, timed_steps: usize) -> Result<SparseMlpBench, String> {
    let device = device.clone().autodiff();
    let steps_per_epoch = 60_000f64 / 128.0;
    let models = vec![
        mnist_mlp(Sparsity::Set, Some(Storage::Sparse), 1000, &device)?,
        mnist_mlp(Sparsity::Set, Some(Storage::Masked), 1000, &device)?,
        mnist_mlp(Sparsity::Dense, None, 1000, &device)?,
    ];
    let rounds = timed_steps.div_ceil(5).max(1);
    let t = interleaved_step_seconds(models, rounds, 5, &device);
    let (sparse, masked, dense) = (
        t[0] * steps_per_epoch,
        t[1] * steps_per_epoch,
        t[2] * steps_per_epoch,
    );
    Ok(SparseMlpBench {
        sparse_seconds_per_epoch: sparse,
        masked_seconds_per_epoch: masked,
        dense_seconds_per_epoch: dense,
        sparse_vs_dense: dense / sparse,
        sparse_vs_masked: masked / sparse,
        timed_steps: rounds * 5,
        inputs: "synthetic uniform inputs and random labels (timing only); epoch = 469 steps of 128",
    })
}

/// Result of `bench scale`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScaleBench {
    /// Neurons per hidden layer.
    pub hidden: usize,
    /// Connections in the three sparse layers.
    pub connections: u64,
    /// Samples in the epoch.
    pub samples: usize,
    /// Seconds for one epoch of `samples` (all steps run, plus one evolution), as every epoch
    /// after the first of a training: timed after [`warmup_seconds`](Self::warmup_seconds).
    pub epoch_seconds: f64,
    /// Seconds of the untimed warm-up before the epoch: one step and one evolution, what a
    /// training's first epoch pays once more than the later ones (the process's first touch
    /// of its memory: at 333,334 neurons the first step took 11.2 s against ~2 s for the later
    /// ones, of a 14–15 s warm-up, on this VM, whose kernel faults fresh memory in at 0.4–0.9
    /// GB/s). The epoch after it still builds its kernel plans afresh, for the evolved
    /// topology.
    pub warmup_seconds: f64,
    /// Seconds of the evolution at the end of the epoch.
    pub evolution_seconds: f64,
    /// Peak resident memory of the process (VmHWM), GB.
    pub peak_memory_gb: f64,
    /// Storage used.
    pub storage: Storage,
    /// The authors' truly sparse Python code (SciPy CSR + Cython) on this machine for the same
    /// net and samples: measured at 1,000 / 3,000 / 10,000 / 30,000 neurons (see
    /// [`PYTHON_REFERENCE`]), elsewhere its linear trend in connections (from the 30,000 point).
    pub python_reference_seconds: f64,
    /// `python_reference_seconds / epoch_seconds`, per sample.
    pub speedup_vs_python: f64,
}

/// The authors' truly sparse Python SET (SciPy CSR + Cython), measured on this 2-core machine:
/// (neurons per hidden layer, seconds per epoch of 10,000 MNIST samples, peak memory GB), for
/// 784-N-N-N-10, ε = 20, batch 128, dropout 0.3.
pub const PYTHON_REFERENCE: [(usize, f64, f64); 4] = [
    (1_000, 4.2, 0.15),
    (3_000, 11.3, 0.19),
    (10_000, 42.0, 0.36),
    (30_000, 149.0, 0.87),
];

/// Connections of the reference's 784-N-N-N-10 at ε = 20 (its three sparse hidden layers).
fn reference_connections(hidden: usize) -> f64 {
    let p = |a: usize, b: usize| (20.0 * (a + b) as f64 / (a * b) as f64).min(1.0);
    let (h, i) = (hidden as f64, 784.0);
    p(784, hidden) * i * h + 2.0 * p(hidden, hidden) * h * h
}

/// The reference's seconds for `samples` samples at `hidden` neurons per layer.
pub fn python_reference_seconds(hidden: usize, samples: usize) -> f64 {
    let per_10k = match PYTHON_REFERENCE.iter().find(|r| r.0 == hidden) {
        Some(r) => r.1,
        None => {
            let (h, s, _) = PYTHON_REFERENCE[3];
            s * reference_connections(hidden) / reference_connections(h)
        }
    };
    per_10k * samples as f64 / 10_000.0
}

/// One epoch of a 784-N-N-N-10 SET-MLP (ε = 20, batch 128, synthetic inputs) and its peak
/// memory; an error when N cannot be built (N = 0, or too small for ε = 20). The epoch is timed
/// after a warm-up of one step and an evolution (a training's first epoch), as the second
/// epoch of a training: on an evolved topology, in a process that has touched its memory.
pub fn scale(
    device: &Device,
    hidden: usize,
    samples: usize,
    storage: Storage,
) -> Result<ScaleBench, String> {
    let device = device.clone().autodiff();
    let batch = 128;
    let model = mnist_mlp(Sparsity::Set, Some(storage), hidden, &device)?;
    let connections = crate::layers::topology_summary(&model).connections;
    let steps = samples.div_ceil(batch);
    let cb = SetCallback::new(EvolutionConfig::new());
    // the warm-up: a first epoch of one step, evolved (epoch 1 of a 3-epoch training)
    let t0 = Instant::now();
    let (model, _) = time_sgd_steps(model, 784, batch, 0, 1, &device);
    let (model, _) = cb.evolve(model, 1, 1, 2);
    let warmup_seconds = t0.elapsed().as_secs_f64();
    // the timed epoch: epoch 2, on the evolved topology (its plans built afresh)
    let t0 = Instant::now();
    let (model, _) = time_sgd_steps(model, 784, batch, 0, steps, &device);
    let t1 = Instant::now();
    let (model, _) = cb.evolve(model, 2, 1 + steps, 2);
    let evolution_seconds = t1.elapsed().as_secs_f64();
    drop(model);
    let epoch_seconds = t0.elapsed().as_secs_f64();
    let python_reference_seconds = python_reference_seconds(hidden, samples);
    Ok(ScaleBench {
        hidden,
        connections,
        samples,
        epoch_seconds,
        warmup_seconds,
        evolution_seconds,
        peak_memory_gb: peak_rss_gb(),
        storage,
        python_reference_seconds,
        speedup_vs_python: python_reference_seconds / epoch_seconds,
    })
}

/// Peak resident set size of this process in GB (Linux `VmHWM`; 0 elsewhere).
pub fn peak_rss_gb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_rejects_hidden_widths_it_cannot_build() {
        #[allow(deprecated)]
        let dev = Device::ndarray();
        for hidden in [0, 1] {
            let e = scale(&dev, hidden, 1, Storage::Sparse).unwrap_err();
            assert!(
                e.starts_with(&format!(
                    "cannot build the 784-{hidden}-{hidden}-{hidden}-10 MLP"
                )),
                "{e}"
            );
        }
    }
}
