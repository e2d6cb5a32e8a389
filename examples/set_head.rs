//! A SET head on your own `#[derive(Module)]` CNN, trained with SET inside Burn's own
//! `SupervisedTraining`, on the embedded CIFAR10 sample.
//!
//! `cargo run --release -p burn-set-examples --example set_head`

use burn::data::dataloader::DataLoaderBuilder;
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::optim::SgdConfig;
use burn::tensor::{Device, Tensor, activation::relu};
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{
    ClassificationOutput, InferenceStep, Learner, SupervisedTraining, TrainOutput, TrainStep,
};
use burn_set::callback::SetCallback;
use burn_set::data::{
    AugmentingBatcher, ClassificationBatch, ClassificationBatcher, ClassificationDataset, Split,
    embedded_cifar10,
};
use burn_set::evolution::EvolutionConfig;
use burn_set::head::{SetHead, SetHeadConfig};
use burn_set::strategy::SetTrainingExt;

/// The user's own CNN: any backbone, then a `SetHead` instead of `Linear` layers.
#[derive(Module, Debug)]
struct MyCnn {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    head: SetHead, // flatten → SET(512) → ReLU → dropout → dense(10)
}

impl MyCnn {
    fn new(device: &Device) -> Self {
        let conv = |c: [usize; 2]| {
            Conv2dConfig::new(c, [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(device)
        };
        Self {
            conv1: conv([3, 16]),
            conv2: conv([16, 32]),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            head: SetHeadConfig::new(32 * 8 * 8, vec![512], 10).init(device), // ε = 20
        }
    }
    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.pool.forward(relu(self.conv1.forward(x)));
        let x = self.pool.forward(relu(self.conv2.forward(x)));
        self.head.forward(x) // flattens [B, 32, 8, 8]
    }
    fn classify(&self, b: ClassificationBatch) -> ClassificationOutput {
        let [n, _] = b.inputs.dims();
        let logits = self.forward(b.inputs.reshape([n, 3, 32, 32]));
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), b.targets.clone());
        ClassificationOutput::new(loss, logits, b.targets)
    }
}

impl TrainStep for MyCnn {
    type Input = ClassificationBatch;
    type Output = ClassificationOutput;
    fn step(&self, b: ClassificationBatch) -> TrainOutput<ClassificationOutput> {
        let out = self.classify(b);
        TrainOutput::new(self, out.loss.backward(), out)
    }
}

impl InferenceStep for MyCnn {
    type Input = ClassificationBatch;
    type Output = ClassificationOutput;
    fn step(&self, b: ClassificationBatch) -> ClassificationOutput {
        self.classify(b)
    }
}

#[allow(deprecated)] // ndarray is always built (`Device::flex()`, the default feature, is faster)
fn main() {
    let device = Device::ndarray().autodiff();
    let train = embedded_cifar10(Split::Train).expect("embedded CIFAR10 sample");
    let test = embedded_cifar10(Split::Test).expect("embedded CIFAR10 sample");
    let dl_train = DataLoaderBuilder::new(AugmentingBatcher::new(1)) // crop + flip
        .batch_size(64)
        .shuffle(1)
        .build(ClassificationDataset::new(train));
    let dl_test = DataLoaderBuilder::new(ClassificationBatcher::new())
        .batch_size(100)
        .build(ClassificationDataset::new(test));
    let set = SetCallback::new(EvolutionConfig::new()); // ζ = 0.3, every epoch
    let result = SupervisedTraining::new("artifacts/set_head", dl_train, dl_test)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .with_set(&set) // ← evolves every SetLinear in the head, wherever it sits
        .num_epochs(3)
        .summary()
        .launch(Learner::new(
            MyCnn::new(&device),
            SgdConfig::new().init(),
            0.01,
        ));
    println!(
        "head connections: {} (dense: {}); evolutions: {}",
        result.model.head.connections(),
        32 * 8 * 8 * 512,
        set.history().len()
    );
}
