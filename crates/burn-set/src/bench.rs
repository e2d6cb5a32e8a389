//! Benchmarks printed as ratios against a baseline measured in the same run (never timed
//! assertions in tests): `burn-set bench masked-linear` and `burn-set bench evolve`.

use crate::callback::SetCallback;
use crate::evolution::EvolutionConfig;
use crate::mlp::SetMlpConfig;
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

/// Times one SET evolution of the MNIST SET-MLP 784-1000-1000-1000-10 (ε = 20) against an epoch
/// of training (SGD steps at batch 128 on synthetic inputs, extrapolated to 469 steps).
pub fn evolve(device: &Device, timed_steps: usize, timed_evolutions: usize) -> EvolveBench {
    let device = device.clone().autodiff();
    let mut model = SetMlpConfig::new(784, vec![1000, 1000, 1000], 10)
        .with_sparsity(Sparsity::Set)
        .init(&device);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
        ))
        .with_weight_decay(Some(WeightDecayConfig::new(2e-4)))
        .init();
    let batch = 128;
    let mut step = |model: crate::mlp::SetMlp| {
        let x = Tensor::<2>::random([batch, 784], Distribution::Uniform(0.0, 1.0), &device);
        let y = Tensor::<1, Int>::random([batch], Distribution::Uniform(0.0, 10.0), &device);
        let out = model.forward_classification(crate::data::ClassificationBatch {
            inputs: x,
            targets: y,
        });
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        optim.step(0.01, model, grads)
    };
    for _ in 0..3 {
        model = step(model);
    }
    let t0 = Instant::now();
    for _ in 0..timed_steps {
        model = step(model);
    }
    // make sure the lazy work is done
    let _ = model.output.weight.val().sum().into_scalar::<f32>();
    let step_seconds = t0.elapsed().as_secs_f64() / timed_steps as f64;
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
    EvolveBench {
        evolve_fraction_of_epoch: evolve_seconds / epoch_seconds,
        evolve_seconds,
        epoch_seconds,
        step_seconds,
        steps_per_epoch,
        timed_steps,
        timed_evolutions,
        inputs: "synthetic uniform inputs and random labels (timing only)",
    }
}
