//! The GPU code path (Burn's wgpu backend) against ndarray: the same tiny SET model, the same
//! batches, a few SGD steps and one SET evolution on each must give the same topology and close
//! losses. Built only with the `wgpu` feature:
//!
//! ```sh
//! cargo test --release -p burn-set --features wgpu --test wgpu
//! ```
//!
//! On a machine without a GPU, Mesa's software Vulkan (lavapipe: `apt-get install -y
//! mesa-vulkan-drivers libvulkan1`) runs it; where no Vulkan device exists at all the test is
//! skipped with a message saying so.

use burn::module::Module;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_set::callback::SetCallback;
use burn_set::data::{Split, embedded_mnist};
use burn_set::evolution::EvolutionConfig;
use burn_set::layers::{Storage, snapshot_layers};
use burn_set::mlp::{SetMlp, SetMlpConfig, classification_output};
use burn_set::set_linear::Sparsity;

#[allow(deprecated)]
fn ndarray() -> Device {
    Device::ndarray()
}

/// The wgpu device, or `None` (with the reason) where no adapter can be opened.
fn wgpu_device() -> Option<Device> {
    let probe = std::panic::catch_unwind(|| {
        let device = Device::wgpu(Default::default());
        let t = Tensor::<1>::from_floats([1.0, 2.0], &device);
        let v: Vec<f32> = (t * 2.0).into_data().convert::<f32>().try_to_vec().ok()?;
        (v == [2.0, 4.0]).then_some(device)
    });
    match probe {
        Ok(Some(device)) => Some(device),
        Ok(None) => {
            eprintln!("SKIPPED: the wgpu device computed 2·[1, 2] wrongly");
            None
        }
        Err(_) => {
            eprintln!(
                "SKIPPED: no wgpu/Vulkan adapter on this machine \
                 (on a CPU-only Linux box: apt-get install -y mesa-vulkan-drivers libvulkan1)"
            );
            None
        }
    }
}

/// Mean cross-entropy of each step and the model after `steps` SGD steps (momentum 0.9) on
/// `batches`, then one SET evolution.
fn train(
    model: SetMlp,
    batches: &[(Vec<f32>, Vec<i64>)],
    d_input: usize,
    device: &Device,
) -> (Vec<f32>, SetMlp) {
    let mut model = model;
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
        .init();
    let mut losses = Vec::new();
    for (x, y) in batches {
        let n = y.len();
        let inputs = Tensor::<2>::from_data(TensorData::new(x.clone(), [n, d_input]), device);
        let targets = Tensor::<1, Int>::from_data(TensorData::new(y.clone(), [n]), device);
        let out = classification_output(model.forward(inputs), targets);
        losses.push(out.loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = optim.step(0.05, model, grads);
    }
    let cb = SetCallback::new(EvolutionConfig::new().with_seed(3));
    let (model, changed) = cb.evolve(model, 1, batches.len(), 9);
    assert!(changed, "the evolution changed nothing");
    (losses, model)
}

/// Mean cross-entropy of `model` over all of `batches`.
fn mean_loss(
    model: &SetMlp,
    batches: &[(Vec<f32>, Vec<i64>)],
    d_input: usize,
    device: &Device,
) -> f32 {
    let losses: Vec<f32> = batches
        .iter()
        .map(|(x, y)| {
            let n = y.len();
            let inputs = Tensor::<2>::from_data(TensorData::new(x.clone(), [n, d_input]), device);
            let targets = Tensor::<1, Int>::from_data(TensorData::new(y.clone(), [n]), device);
            classification_output(model.forward(inputs), targets)
                .loss
                .into_scalar::<f32>()
        })
        .collect();
    losses.iter().sum::<f32>() / losses.len() as f32
}

#[test]
fn wgpu_trains_and_evolves_like_ndarray() {
    let Some(gpu) = wgpu_device() else { return };
    let gpu = gpu.autodiff();
    let data = embedded_mnist(Split::Train).expect("embedded MNIST");
    let d = data.n_features;
    let batches: Vec<(Vec<f32>, Vec<i64>)> = (0..8)
        .map(|b| {
            let rows = b * 32..(b + 1) * 32;
            let x = data.features[rows.start * d..rows.end * d].to_vec();
            let y = data.labels[rows].iter().map(|&l| l as i64).collect();
            (x, y)
        })
        .collect();
    // One initial model (weights drawn on ndarray), copied to the GPU: both runs start equal.
    // No dropout, so the two backends see the same function.
    // (Burn's ndarray RNG ignores Device::seed here, so the initial draw differs between
    // runs; the comparison holds for any draw.)
    let cpu_device = ndarray().autodiff();
    let model = SetMlpConfig::new(d, vec![128, 64], 10)
        .with_sparsity(Sparsity::Set)
        .with_storage(Some(Storage::Masked))
        .with_epsilon(8.0)
        .with_dropout(0.0)
        .with_seed(5)
        .init(&cpu_device);
    let on_gpu = model.clone().fork(&gpu);
    let topology0 = snapshot_layers(&model, false);

    let before = mean_loss(&model, &batches, d, &cpu_device);
    let (loss_cpu, cpu) = train(model, &batches, d, &ndarray().autodiff());
    let (loss_gpu, gpu_model) = train(on_gpu, &batches, d, &gpu);
    eprintln!("losses ndarray {loss_cpu:?}\nlosses wgpu    {loss_gpu:?}");
    // over all 256 training samples (one batch's loss against another's was noise enough to
    // fail for some initial draws)
    let after = mean_loss(&cpu, &batches, d, &cpu_device);
    eprintln!("mean loss over the batches, ndarray: {before} → {after}");
    assert!(
        after < before,
        "did not learn: mean loss {before} → {after}"
    );
    for (i, (a, b)) in loss_cpu.iter().zip(&loss_gpu).enumerate() {
        assert!(
            (a - b).abs() <= 1e-3 * a.abs().max(1.0),
            "step {i}: ndarray loss {a}, wgpu loss {b}"
        );
    }
    let (t_cpu, t_gpu) = (
        snapshot_layers(&cpu, true),
        snapshot_layers(&gpu_model, true),
    );
    assert_eq!(t_cpu.len(), 2);
    for ((c, g), before) in t_cpu.iter().zip(&t_gpu).zip(&topology0) {
        assert_eq!(c.topology.nnz(), before.topology.nnz(), "nnz changed");
        assert_ne!(
            c.topology.positions, before.topology.positions,
            "no evolution"
        );
        assert_eq!(
            c.topology.positions, g.topology.positions,
            "{}: wgpu evolved a different topology",
            c.path
        );
    }
}
