//! Swapping `burn::nn::Linear` for `SetLinear` in your own model and training it with SET inside
//! Burn's own `SupervisedTraining` (dashboard, checkpoints and all).
//!
//! `cargo run --release -p burn-set-examples --example swap_linear`

use burn::data::dataloader::DataLoaderBuilder;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::SgdConfig;
use burn::optim::momentum::MomentumConfig;
use burn::tensor::{Device, Tensor, activation::relu};
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{
    ClassificationOutput, InferenceStep, Learner, SupervisedTraining, TrainOutput, TrainStep,
};
use burn_set::data::{
    ClassificationBatch, ClassificationBatcher, ClassificationDataset, Split, embedded_mnist,
};
use burn_set::prelude::*; // SetLinear(Config), SetCallback, EvolutionConfig, SetTrainingExt…

/// The user's own model: only the layer type changed (`Linear` → `SetLinear`).
#[derive(Module, Debug)]
struct MyNet {
    fc1: SetLinear,
    fc2: SetLinear,
    out: burn::nn::Linear,
}

impl MyNet {
    fn new(device: &Device) -> Self {
        Self {
            fc1: SetLinearConfig::new(784, 300).init(device), // ε = 20 by default
            fc2: SetLinearConfig::new(300, 100).init(device),
            out: burn::nn::LinearConfig::new(100, 10).init(device),
        }
    }
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.out
            .forward(relu(self.fc2.forward(relu(self.fc1.forward(x)))))
    }
    fn classify(&self, b: ClassificationBatch) -> ClassificationOutput {
        let logits = self.forward(b.inputs);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), b.targets.clone());
        ClassificationOutput::new(loss, logits, b.targets)
    }
}

impl TrainStep for MyNet {
    type Input = ClassificationBatch;
    type Output = ClassificationOutput;
    fn step(&self, b: ClassificationBatch) -> TrainOutput<ClassificationOutput> {
        let out = self.classify(b);
        TrainOutput::new(self, out.loss.backward(), out)
    }
}

impl InferenceStep for MyNet {
    type Input = ClassificationBatch;
    type Output = ClassificationOutput;
    fn step(&self, b: ClassificationBatch) -> ClassificationOutput {
        self.classify(b)
    }
}

#[allow(deprecated)] // ndarray is always built (`Device::flex()`, the default feature, is faster)
fn main() {
    let device = Device::ndarray().autodiff();
    let train = embedded_mnist(Split::Train).expect("embedded MNIST sample");
    let test = embedded_mnist(Split::Test).expect("embedded MNIST sample");
    let loader = |d, shuffle| {
        let b = DataLoaderBuilder::new(ClassificationBatcher::new()).batch_size(64);
        let b = if shuffle { b.shuffle(1) } else { b };
        b.build(ClassificationDataset::new(d))
    };
    let set = SetCallback::new(EvolutionConfig::new()); // ζ = 0.3, every epoch
    let optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new()))
        .init();
    let result = SupervisedTraining::new(
        "artifacts/swap_linear",
        loader(train, true),
        loader(test, false),
    )
    .metrics((AccuracyMetric::new(), LossMetric::new()))
    .with_set(&set) // ← SET: evolution at every epoch end + topology metrics on the dashboard
    .num_epochs(3)
    .summary()
    .launch(Learner::new(MyNet::new(&device), optim, 0.01));
    let m = result.model;
    println!(
        "connections: fc1 {} fc2 {}; evolutions: {}",
        m.fc1.nnz(),
        m.fc2.nnz(),
        set.history().len()
    );
}
