//! Integration tests of the core: SetLinear, evolution inside models, SetCallback inside Burn's
//! own `SupervisedTraining`.

use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::module::Module;
use burn::nn::Initializer;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining};
use burn_set::callback::SetCallback;
use burn_set::data::{
    ClassificationBatch, ClassificationBatcher, ClassificationDataset, Split, embedded_mnist,
};
use burn_set::evolution::EvolutionConfig;
use burn_set::layers::Storage;
use burn_set::layers::{snapshot_layers, topology_summary};
use burn_set::mlp::{SetLayer, SetMlp, SetMlpConfig};
use burn_set::set_linear::{SetLinear, SetLinearConfig, Sparsity};
use burn_set::strategy::{SetTrainingExt, apply_evolution};
use burn_set::topology::er_connection_count;
use std::sync::Arc;

#[allow(deprecated)]
fn dev() -> Device {
    Device::ndarray()
}

fn floats(t: Tensor<2>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec().unwrap()
}

fn mask_of(l: &SetLinear) -> Vec<bool> {
    let m = l.mask.as_ref().unwrap();
    let b: Vec<bool> = m.bool().into_data().try_to_vec().unwrap();
    // the float mask holds only 0 and 1
    let f = floats(m.val());
    assert!(
        f.iter()
            .zip(&b)
            .all(|(f, b)| *f == if *b { 1.0 } else { 0.0 })
    );
    b
}

#[test]
fn init_has_exact_reproducible_connection_count() {
    let cfg = SetLinearConfig::new(300, 200)
        .with_epsilon(10.0)
        .with_seed(Some(5));
    let a = cfg.init(&dev());
    let b = cfg.init(&dev());
    assert_eq!(a.nnz() as u64, er_connection_count(10.0, 300, 200).unwrap());
    assert_eq!(a.nnz(), 5000);
    assert_eq!(mask_of(&a), mask_of(&b));
    assert!((a.density() - 5000.0 / 60000.0).abs() < 1e-12);
    // weights outside the mask are exactly zero from the start
    let w = floats(a.weight.val());
    assert!(w.iter().zip(mask_of(&a)).all(|(w, m)| m || *w == 0.0));
    // dense and FixProb variants
    let d = SetLinearConfig::new(30, 20)
        .with_sparsity(Sparsity::Dense)
        .init(&dev());
    assert!(d.mask.is_none());
    assert_eq!(d.nnz(), 600);
    let f = SetLinearConfig::new(30, 20)
        .with_epsilon(2.0)
        .with_sparsity(Sparsity::FixProb)
        .init(&dev());
    assert_eq!(f.sparsity(), Sparsity::FixProb);
    assert_eq!(f.nnz(), 100);
}

#[test]
fn epsilon_too_large_is_a_clear_error() {
    let err = SetLinearConfig::new(10, 10)
        .with_epsilon(20.0)
        .try_init(&dev())
        .unwrap_err();
    assert!(err.to_string().contains("> 1"), "{err}");
}

#[test]
fn forward_matches_linear_and_accepts_batched_shapes() {
    let l = SetLinearConfig::new(6, 4)
        .with_epsilon(1.0)
        .with_seed(Some(1))
        .init(&dev());
    let x = Tensor::<3>::random([2, 3, 6], Distribution::Normal(0.0, 1.0), &dev());
    let y = l.forward(x.clone());
    assert_eq!(y.dims(), [2, 3, 4]);
    let w = l.masked_weight();
    let want = x.matmul(w.unsqueeze()) + l.bias.as_ref().unwrap().val().unsqueeze();
    let (a, b): (Vec<f32>, Vec<f32>) = (
        y.into_data().try_to_vec().unwrap(),
        want.into_data().try_to_vec().unwrap(),
    );
    assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-5));
}

#[test]
fn mask_respected_through_forward_backward_and_optimizer() {
    // density 0.23 (weight gradient: the dense product masked) and 0.047 (computed at the
    // connections only, below `mask_backend::SAMPLED_MAX_DENSITY`)
    for (d_in, d_out) in [(40, 30), (200, 150)] {
        mask_respected(d_in, d_out);
    }
}

fn mask_respected(d_in: usize, d_out: usize) {
    let device = dev().autodiff();
    let mut layer = SetLinearConfig::new(d_in, d_out)
        .with_epsilon(4.0)
        .with_seed(Some(3))
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: 1.0,
        })
        .init(&device);
    let mask = mask_of(&layer);
    // off-mask weight values do not influence the output
    let x = Tensor::<2>::random([8, d_in], Distribution::Normal(0.0, 1.0), &device);
    let y0 = floats(layer.forward(x.clone()));
    let polluted = layer.clone().map_weight_for_test(&mask);
    let y1 = floats(polluted.forward(x.clone()));
    assert_eq!(y0, y1, "weights outside the mask changed the output");
    // off-mask gradient is exactly zero
    let grads = layer.forward(x.clone()).powf_scalar(2.0).sum().backward();
    let g = floats(layer.weight.grad(&grads).unwrap());
    assert!(g.iter().zip(&mask).all(|(g, m)| *m || *g == 0.0));
    assert!(g.iter().zip(&mask).any(|(g, m)| *m && *g != 0.0));
    // SGD with momentum and weight decay keeps off-mask weights exactly zero
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
        .with_weight_decay(Some(WeightDecayConfig::new(0.01)))
        .init();
    for _ in 0..5 {
        let loss = layer.forward(x.clone()).powf_scalar(2.0).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &layer);
        layer = optim.step(0.05, layer, grads);
    }
    let w = floats(layer.weight.val());
    assert!(w.iter().zip(&mask).all(|(w, m)| *m || *w == 0.0));
    assert_eq!(mask_of(&layer), mask);
}

trait Pollute {
    fn map_weight_for_test(self, mask: &[bool]) -> Self;
}
impl Pollute for SetLinear {
    fn map_weight_for_test(mut self, mask: &[bool]) -> Self {
        let [a, b] = self.dims();
        let noise: Vec<f32> = mask.iter().map(|m| if *m { 0.0 } else { 7.0 }).collect();
        let device = self.weight.device();
        self.weight = self
            .weight
            .map(|w| w + Tensor::<2>::from_data(TensorData::new(noise, [a, b]), &device));
        self
    }
}

#[test]
fn record_round_trip_keeps_the_mask() {
    let a = SetLinearConfig::new(50, 20)
        .with_epsilon(3.0)
        .with_seed(Some(9))
        .init(&dev());
    let b = SetLinearConfig::new(50, 20)
        .with_epsilon(3.0)
        .with_seed(Some(10))
        .init(&dev());
    assert_ne!(mask_of(&a), mask_of(&b));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer.bpk");
    a.clone().save_file(&path).unwrap();
    let loaded = b.load_file(&path);
    assert_eq!(mask_of(&loaded), mask_of(&a));
    assert_eq!(floats(loaded.weight.val()), floats(a.weight.val()));
    assert_eq!(loaded.sparsity(), Sparsity::Set);
}

fn tiny_mlp(device: &Device, sparsity: Sparsity) -> SetMlp {
    tiny_mlp_with(device, sparsity, Storage::Masked)
}

fn tiny_mlp_with(device: &Device, sparsity: Sparsity, storage: Storage) -> SetMlp {
    SetMlpConfig::new(784, vec![64, 32], 10)
        .with_storage(Some(storage))
        .with_sparsity(sparsity)
        .with_epsilon(4.0)
        .with_seed(11)
        .init(device)
}

#[test]
fn evolution_changes_set_layers_only_and_keeps_nnz() {
    let device = dev();
    let mut model = tiny_mlp(&device, Sparsity::Set);
    // add a FixProb layer alongside: it must not evolve
    model.hidden[1].linear = SetLayer::Masked(
        SetLinearConfig::new(64, 32)
            .with_epsilon(4.0)
            .with_sparsity(Sparsity::FixProb)
            .with_seed(Some(2))
            .init(&device),
    );
    let before = snapshot_layers(&model, false);
    let cb = SetCallback::new(EvolutionConfig::new().with_seed(1));
    let (evolved, changed) = cb.evolve(model, 1, 0, 9);
    assert!(changed);
    let after = snapshot_layers(&evolved, true);
    assert_eq!(after.len(), 2);
    assert_eq!(after[0].topology.nnz(), before[0].topology.nnz());
    assert_ne!(after[0].topology.positions, before[0].topology.positions);
    assert_eq!(
        after[1].topology, before[1].topology,
        "FixProb layer evolved"
    );
    let rec = &cb.history()[0];
    assert_eq!(rec.layers.len(), 1);
    assert!(rec.layers[0].pruned > 0 && rec.layers[0].pruned == rec.layers[0].regrown);
    // regrown weights start at zero (the default RegrowInit::Zero)
    let w = floats(evolved.hidden[0].linear.as_masked().unwrap().weight.val());
    let new: Vec<u64> = after[0]
        .topology
        .positions
        .iter()
        .copied()
        .filter(|p| before[0].topology.positions.binary_search(p).is_err())
        .collect();
    assert!(!new.is_empty());
    assert!(new.iter().all(|&p| w[p as usize] == 0.0));
    // a dense model has nothing to evolve
    let (_, changed) = cb.evolve(tiny_mlp(&device, Sparsity::Dense), 1, 0, 9);
    assert!(!changed);
}

/// An evolution's ζ follows from its epoch (or step), not from how many evolutions this
/// callback has run: a training resumed from a checkpoint continues the schedule, and the
/// same evolution removes as many connections in both.
#[test]
fn zeta_schedule_follows_the_epoch_and_the_step() {
    use burn_set::evolution::{EvolutionPeriod, ZetaSchedule};
    let device = dev();
    let schedule = ZetaSchedule::Cosine {
        final_fraction: 0.1,
    };
    let fresh = || SetCallback::new(EvolutionConfig::new().with_seed(1).with_schedule(schedule));
    // a fresh callback evolving after epoch 3 of a 5-epoch training (4 evolutions)
    let cb = fresh();
    cb.evolve(tiny_mlp(&device, Sparsity::Set), 3, 0, 4);
    let expected = schedule.zeta(0.3, 2, 4);
    assert!((cb.history()[0].zeta - expected).abs() < 1e-12);
    assert!(expected < 0.3 - 1e-3, "the schedule has decayed by then");
    // the same evolution in an uninterrupted run, after evolutions at epochs 1 and 2
    let cb2 = fresh();
    let mut m = tiny_mlp(&device, Sparsity::Set);
    for epoch in 1..=3 {
        m = cb2.evolve(m, epoch, 0, 4).0;
    }
    assert_eq!(cb2.history()[2].zeta, cb.history()[0].zeta);
    // with a step period: the evolution after step 9 of period 3 is the third (index 2)
    let cb3 = SetCallback::new(
        EvolutionConfig::new()
            .with_seed(1)
            .with_schedule(schedule)
            .with_period(EvolutionPeriod::Steps { n: 3 }),
    );
    cb3.evolve(tiny_mlp(&device, Sparsity::Set), 1, 9, 4);
    assert!((cb3.history()[0].zeta - expected).abs() < 1e-12);
    // the schedule's length: evolutions at steps 3, 6, 9, 12 of 5 epochs × 3 steps (none at
    // the last step, where the final prune runs); one per epoch but the last
    assert_eq!(cb3.total_evolutions(3, 5), 4);
    assert_eq!(cb.total_evolutions(3, 5), 4);
    assert_eq!(cb3.total_evolutions(4, 2), 2);
}

#[test]
fn regrown_weight_first_update_is_a_plain_gradient_step() {
    let device = dev().autodiff();
    // A dense-ish layer (p ≈ 0.68) so that many regrown positions were connected before the
    // evolution and so carry momentum history that must not leak into them.
    let mut model = SetMlpConfig::new(784, vec![64], 10)
        .with_storage(Some(Storage::Masked))
        .with_epsilon(40.0)
        .with_seed(11)
        .init(&device);
    for b in &mut model.hidden {
        b.dropout = burn::nn::DropoutConfig::new(0.0).init();
    }
    let optim = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
        ))
        .with_weight_decay(Some(WeightDecayConfig::new(0.0002)))
        .init();
    let lr = 0.05;
    let mut learner = Learner::new(model, optim, lr);
    let data = embedded_mnist(Split::Train).unwrap().limit(64);
    let batch = burn::data::dataloader::batcher::Batcher::batch(
        &ClassificationBatcher::new(),
        (0..64).map(|i| data.item(i).unwrap()).collect(),
        &device,
    );
    // build up momentum everywhere
    for _ in 0..5 {
        let out = learner.train_step(batch.clone());
        learner.lr_step();
        learner.optimizer_step(out.grads);
    }
    let before = snapshot_layers(&learner.model(), false)[0].topology.clone();
    let cb = SetCallback::new(EvolutionConfig::new().with_seed(3));
    let evolved = cb.evolve(learner.model(), 1, 5, 9);
    apply_evolution(&mut learner, evolved);
    let after = snapshot_layers(&learner.model(), true).remove(0);
    // regrown connections start at exactly zero; every survivor is non-zero (zeros are pruned)
    let regrown: Vec<u64> = after
        .topology
        .positions
        .iter()
        .zip(&after.values)
        .filter(|(_, v)| **v == 0.0)
        .map(|(p, _)| *p)
        .collect();
    let reused = regrown
        .iter()
        .filter(|p| before.positions.binary_search(p).is_ok())
        .count();
    assert!(
        reused > 0,
        "no regrown position was connected before: the test would not see stale momentum"
    );

    let model = learner.model();
    let w0 = floats(model.hidden[0].linear.as_masked().unwrap().weight.val());
    let out = learner.train_step(batch.clone());
    let g = floats(
        out.grads
            .get::<2>(model.hidden[0].linear.as_masked().unwrap().weight.id)
            .unwrap(),
    );
    learner.lr_step();
    learner.optimizer_step(out.grads);
    let w1 = floats(
        learner.model().hidden[0]
            .linear
            .as_masked()
            .unwrap()
            .weight
            .val(),
    );
    let mut moved = 0;
    for &p in &regrown {
        let p = p as usize;
        assert_eq!(w0[p], 0.0);
        let want = w0[p] - (lr as f32) * g[p];
        assert!(
            (w1[p] - want).abs() <= 1e-7 + 1e-5 * want.abs(),
            "pos {p}: {} vs {want}",
            w1[p]
        );
        moved += (g[p] != 0.0) as usize;
    }
    assert!(moved > 0, "no regrown weight received gradient");
}

/// Loaders over the embedded MNIST sample: the first `n_train` training images (shuffled with
/// `shuffle`, if any) and the first `n_test` test images, batches of 64.
fn mnist_loaders(
    n_train: usize,
    n_test: usize,
    shuffle: Option<u64>,
) -> (
    Arc<dyn DataLoader<ClassificationBatch>>,
    Arc<dyn DataLoader<ClassificationBatch>>,
) {
    let train = embedded_mnist(Split::Train).unwrap().limit(n_train);
    let test = embedded_mnist(Split::Test).unwrap().limit(n_test);
    let mut builder = DataLoaderBuilder::new(ClassificationBatcher::new()).batch_size(64);
    if let Some(seed) = shuffle {
        builder = builder.shuffle(seed);
    }
    let dl_train = builder.build(ClassificationDataset::new(train));
    let dl_test = DataLoaderBuilder::new(ClassificationBatcher::new())
        .batch_size(64)
        .build(ClassificationDataset::new(test));
    (dl_train, dl_test)
}

#[test]
fn set_callback_evolves_inside_a_real_supervised_training() {
    evolves_inside_a_real_supervised_training(Storage::Masked);
}

/// Truly sparse layers shrink at the final prune: the returned model is the pruned one.
#[test]
fn set_callback_evolves_sparse_storage_inside_a_real_supervised_training() {
    evolves_inside_a_real_supervised_training(Storage::Sparse);
}

fn evolves_inside_a_real_supervised_training(storage: Storage) {
    let device = dev().autodiff();
    let model = tiny_mlp_with(&device, Sparsity::Set, storage);
    let initial = snapshot_layers(&model, false);
    let n0 = topology_summary(&model).connections;
    let (dl_train, dl_test) = mnist_loaders(256, 128, Some(1));
    let cb = SetCallback::new(EvolutionConfig::new().with_seed(5));
    let dir = tempfile::tempdir().unwrap();
    let optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
        .init();
    let result = SupervisedTraining::new(dir.path(), dl_train, dl_test)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .with_set(&cb)
        .with_application_logger(None)
        .num_epochs(2)
        .launch(Learner::new(model, optim, 0.01));
    let history = cb.history();
    // one evolution after epoch 1, the final prune after epoch 2
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!((history[0].epoch, history[0].final_prune), (1, false));
    assert_eq!((history[1].epoch, history[1].final_prune), (2, true));
    assert_eq!(history[0].connections, n0);
    let pruned: usize = history[1].layers.iter().map(|l| l.pruned).sum();
    assert!(pruned > 0);
    let model = result.model;
    let after = snapshot_layers(&model, true);
    assert_eq!(topology_summary(&model).connections, n0 - pruned as u64);
    for (a, b) in after.iter().zip(&initial) {
        assert_ne!(
            a.topology.positions, b.topology.positions,
            "layer {} did not evolve",
            a.path
        );
    }
    // masked weights are exactly zero in the returned model
    for (i, l) in model.hidden.iter().enumerate() {
        let Some(masked) = l.linear.as_masked() else {
            assert_eq!(storage, Storage::Sparse);
            continue;
        };
        let w = floats(masked.weight.val());
        let m = mask_of(masked);
        assert!(w.iter().zip(&m).all(|(w, m)| *m || *w == 0.0), "layer {i}");
    }
    assert_eq!(cb.stats().connections, n0 - pruned as u64);
}

/// Stops after a fixed epoch.
#[derive(Clone)]
struct StopAfter(usize);

impl burn::train::EarlyStoppingStrategy for StopAfter {
    fn should_stop(
        &mut self,
        epoch: usize,
        _: &burn::train::metric::store::EventStoreClient,
    ) -> bool {
        epoch >= self.0
    }
}

/// A training stopped early ends like one that ran its course: the model validated at the
/// stopping epoch gets the final prune (no regrowing evolution after it) and is returned.
#[test]
fn early_stopping_prunes_and_returns_the_validated_model() {
    for storage in [Storage::Masked, Storage::Sparse] {
        let device = dev().autodiff();
        let model = tiny_mlp_with(&device, Sparsity::Set, storage);
        let n0 = topology_summary(&model).connections;
        let (dl_train, dl_test) = mnist_loaders(128, 64, None);
        let cb = SetCallback::new(EvolutionConfig::new().with_seed(3));
        let dir = tempfile::tempdir().unwrap();
        let result = SupervisedTraining::new(dir.path(), dl_train, dl_test)
            .metrics((AccuracyMetric::new(), LossMetric::new()))
            .with_set(&cb)
            .with_application_logger(None)
            .early_stopping(StopAfter(2))
            .num_epochs(5)
            .launch(Learner::new(model, SgdConfig::new().init(), 0.01));
        let history = cb.history();
        let marks: Vec<(usize, bool)> = history.iter().map(|r| (r.epoch, r.final_prune)).collect();
        assert_eq!(marks, vec![(1, false), (2, true)], "{storage:?}");
        let pruned: usize = history[1].layers.iter().map(|l| l.pruned).sum();
        assert!(pruned > 0);
        assert_eq!(
            topology_summary(&result.model).connections,
            n0 - pruned as u64,
            "{storage:?}"
        );
    }
}

#[test]
fn step_period_evolves_inside_the_epoch() {
    use burn_set::evolution::EvolutionPeriod;
    let device = dev().autodiff();
    let model = tiny_mlp(&device, Sparsity::Set);
    let (dl_train, dl_test) = mnist_loaders(256, 64, None);
    let cb = SetCallback::new(
        EvolutionConfig::new()
            .with_period(EvolutionPeriod::Steps { n: 3 })
            .with_final_prune(false),
    );
    let dir = tempfile::tempdir().unwrap();
    let optim = SgdConfig::new().init();
    SupervisedTraining::new(dir.path(), dl_train, dl_test)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .with_set(&cb)
        .with_application_logger(None)
        .num_epochs(2)
        .launch(Learner::new(model, optim, 0.01));
    // 2 epochs × 4 steps: evolutions after global steps 3 and 6; none at epoch ends, no final prune
    let steps: Vec<usize> = cb.history().iter().map(|r| r.step).collect();
    assert_eq!(steps, vec![3, 6]);
    assert!(cb.history().iter().all(|r| !r.final_prune));
}
