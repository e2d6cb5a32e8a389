//! SET-CNN: CIFAR10 loaders (good and corrupt inputs), augmentation, SetHead weight counts,
//! the paper's conv backbone, SET evolving a SetHead on a user's backbone inside Burn's
//! training, and a tiny end-to-end `run_cnn`.

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::optim::SgdConfig;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{
    ClassificationOutput, InferenceStep, Learner, SupervisedTraining, TrainOutput, TrainStep,
};
use burn_set::callback::SetCallback;
use burn_set::cnn::{CIFAR10_CONV_WEIGHTS, CnnRun, SetCnnConfig, run_cnn};
use burn_set::data::{
    AugmentingBatcher, CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, ClassificationBatch,
    ClassificationBatcher, ClassificationDataset, DataError, Split, embedded_cifar10, load_cifar10,
    parse_cifar10_batch,
};
use burn_set::evolution::EvolutionConfig;
use burn_set::head::{SetHead, SetHeadConfig};
use burn_set::layers::{snapshot_layers, topology_summary};
use burn_set::set_linear::Sparsity;
use std::io::Write;
use std::path::Path;

#[allow(deprecated)]
fn dev() -> Device {
    Device::ndarray()
}

/// A 32×32 RGB PNG whose pixel (x, y) is (label·20, x·8, y·8).
fn png(label: u8, side: u32, gray: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let enc = image::codecs::png::PngEncoder::new(&mut out);
    use image::ImageEncoder;
    if gray {
        let px = vec![label; (side * side) as usize];
        enc.write_image(&px, side, side, image::ExtendedColorType::L8)
            .unwrap();
    } else {
        let mut px = Vec::new();
        for y in 0..side {
            for x in 0..side {
                px.extend([label * 20, (x * 8) as u8, (y * 8) as u8]);
            }
        }
        enc.write_image(&px, side, side, image::ExtendedColorType::Rgb8)
            .unwrap();
    }
    out
}

/// A .tar.gz with `per_class` PNGs per class in each split; `edit` may change the entries.
fn tar_gz(per_class: usize, edit: impl Fn(&mut Vec<(String, Vec<u8>)>)) -> Vec<u8> {
    let mut entries = Vec::new();
    for split in ["train", "test"] {
        for (label, class) in CIFAR10_CLASSES.iter().enumerate() {
            for i in 0..per_class {
                entries.push((
                    format!("{split}/{class}/{i:04}.png"),
                    png(label as u8, 32, false),
                ));
            }
        }
    }
    edit(&mut entries);
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, bytes) in &entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, bytes.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

#[test]
fn tar_gz_loader_reads_exact_pixels_in_chw_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "c.tar.gz", &tar_gz(2, |_| {}));
    let train = load_cifar10(Some(&p), Split::Train, None).unwrap();
    assert_eq!(train.len(), 20);
    assert_eq!(train.n_features, 3072);
    assert_eq!(train.class_counts(), vec![2; 10]);
    // round-robin over classes
    assert_eq!(&train.labels[..10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let norm = |v: u8, c: usize| (v as f32 / 255.0 - CIFAR10_MEAN[c]) / CIFAR10_STD[c];
    let r = train.row(3).unwrap(); // label 3
    // pixel (x=5, y=2): R plane, G plane, B plane
    let i = 2 * 32 + 5;
    assert!((r[i] - norm(60, 0)).abs() < 1e-5);
    assert!((r[1024 + i] - norm(40, 1)).abs() < 1e-5);
    assert!((r[2048 + i] - norm(16, 2)).abs() < 1e-5);
    let test = load_cifar10(Some(&p), Split::Test, Some(7)).unwrap();
    assert_eq!(test.labels, vec![0, 1, 2, 3, 4, 5, 6]);
}

#[test]
fn image_folder_loader_matches_archive() {
    let dir = tempfile::tempdir().unwrap();
    for (label, class) in CIFAR10_CLASSES.iter().enumerate() {
        let d = dir.path().join("train").join(class);
        std::fs::create_dir_all(&d).unwrap();
        write(&d, "0000.png", &png(label as u8, 32, false));
        write(&d, "notes.txt", b"ignored");
    }
    let d = load_cifar10(Some(dir.path()), Split::Train, None).unwrap();
    let p = write(dir.path(), "c.tar.gz", &tar_gz(1, |_| {}));
    assert_eq!(d, load_cifar10(Some(&p), Split::Train, None).unwrap());
    // no test/ folder: the missing class folder is named
    let e = load_cifar10(Some(dir.path()), Split::Test, None).unwrap_err();
    assert!(matches!(e, DataError::Missing { .. }), "{e}");
    assert!(e.to_string().contains("test/airplane"), "{e}");
}

#[test]
fn archive_errors_name_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.tar.gz",
        &tar_gz(1, |e| e[2].1 = b"not an image".to_vec()),
    );
    let e = load_cifar10(Some(&bad), Split::Train, None).unwrap_err();
    let s = e.to_string();
    assert!(s.contains("bad.tar.gz/train/bird/0000.png"), "{s}");
    assert!(s.contains("decode"), "{s}");

    let small = write(
        dir.path(),
        "small.tar.gz",
        &tar_gz(1, |e| e[4].1 = png(4, 16, false)),
    );
    let s = load_cifar10(Some(&small), Split::Train, None)
        .unwrap_err()
        .to_string();
    assert!(
        s.contains("train/deer/0000.png") && s.contains("16×16"),
        "{s}"
    );
    assert!(s.contains("32×32 RGB"), "{s}");

    let gray = write(
        dir.path(),
        "gray.tar.gz",
        &tar_gz(1, |e| e[5].1 = png(5, 32, true)),
    );
    let s = load_cifar10(Some(&gray), Split::Train, None)
        .unwrap_err()
        .to_string();
    assert!(s.contains("train/dog/0000.png") && s.contains("RGB"), "{s}");

    let no_cat = write(
        dir.path(),
        "nocat.tar.gz",
        &tar_gz(1, |e| e.retain(|(n, _)| !n.starts_with("train/cat/"))),
    );
    let e = load_cifar10(Some(&no_cat), Split::Train, None).unwrap_err();
    assert!(matches!(e, DataError::Missing { .. }), "{e}");
    assert!(e.to_string().contains("train/cat"), "{e}");
    // the test split of the same archive is fine
    assert_eq!(
        load_cifar10(Some(&no_cat), Split::Test, None)
            .unwrap()
            .len(),
        10
    );

    let mut cut = tar_gz(1, |_| {});
    cut.truncate(cut.len() / 2);
    let cut = write(dir.path(), "cut.tar.gz", &cut);
    let s = load_cifar10(Some(&cut), Split::Train, None)
        .unwrap_err()
        .to_string();
    assert!(s.contains("cut.tar.gz"), "{s}");
}

#[test]
fn binary_batches_good_and_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let rec = |label: u8| {
        let mut r = vec![label.wrapping_mul(25); 3073];
        r[0] = label;
        r
    };
    let batch: Vec<u8> = (0..10).flat_map(rec).collect();
    for i in 1..=5 {
        write(dir.path(), &format!("data_batch_{i}.bin"), &batch);
    }
    let mut cut = batch.clone();
    cut.truncate(3073 * 3 + 1000);
    write(dir.path(), "test_batch.bin", &cut);
    let train = load_cifar10(Some(dir.path()), Split::Train, None).unwrap();
    assert_eq!(train.len(), 50);
    assert_eq!(train.class_counts(), vec![5; 10]);
    let e = load_cifar10(Some(dir.path()), Split::Test, None).unwrap_err();
    assert!(matches!(e, DataError::Truncated { .. }), "{e}");
    let s = e.to_string();
    assert!(s.contains("test_batch.bin"), "{s}");
    assert!(
        s.contains(&(3073 * 4).to_string()) && s.contains("10219"),
        "{s}"
    );
    assert!(parse_cifar10_batch(&batch, "ok.bin").is_ok());
}

#[test]
fn augmentation_keeps_shapes_is_deterministic_and_label_preserving() {
    let data = embedded_cifar10(Split::Train).unwrap().limit(32);
    let items: Vec<_> = (0..32).map(|i| data.item(i).unwrap()).collect();
    let a = AugmentingBatcher::new(3);
    let b = AugmentingBatcher::new(3);
    let (x, y) = (
        a.batch(items.clone(), &dev()),
        b.batch(items.clone(), &dev()),
    );
    assert_eq!(x.inputs.dims(), [32, 3072]);
    let plain = ClassificationBatcher::new().batch(items, &dev());
    assert_eq!(
        x.targets.into_data().try_to_vec::<i64>().unwrap(),
        plain.targets.into_data().try_to_vec::<i64>().unwrap()
    );
    let xv = x.inputs.into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(xv, y.inputs.into_data().try_to_vec::<f32>().unwrap());
    assert_ne!(xv, plain.inputs.into_data().try_to_vec::<f32>().unwrap());
}

#[test]
fn head_weight_counts_match_the_paper() {
    let device = dev();
    let dense = SetHeadConfig::new(2048, vec![2048, 2048], 10)
        .with_sparsity(Sparsity::Dense)
        .init(&device);
    assert_eq!(dense.trainable_weights(), 8_413_194);
    assert_eq!(dense.connections(), 2 * 2048 * 2048);
    let sparse = SetHeadConfig::new(2048, vec![2048, 2048], 10)
        .with_epsilon(20.0)
        .init(&device);
    let n = sparse.trainable_weights() as f64;
    assert!(
        (n / 184_842.0 - 1.0).abs() < 0.05,
        "sparse head has {n} weights"
    );
    // two sparse layers of ≈ ε (n_in + n_out) connections each
    let c = sparse.connections() as f64;
    assert!((c / 163_840.0 - 1.0).abs() < 0.02, "{c}");
    // forward flattens all but the batch axis
    let x = Tensor::<4>::zeros([3, 128, 4, 4], &device);
    assert_eq!(sparse.forward(x).dims(), [3, 10]);
}

#[test]
fn cnn_backbone_has_the_papers_conv_weights() {
    let device = dev();
    let model = SetCnnConfig::new()
        .with_head_widths(vec![256, 256])
        .init(&device);
    assert_eq!(model.conv_weights(), CIFAR10_CONV_WEIGHTS);
    assert_eq!(CIFAR10_CONV_WEIGHTS, 287_008);
    let x = Tensor::<2>::zeros([2, 3072], &device);
    assert_eq!(model.forward(x).dims(), [2, 10]);
    assert_eq!(topology_summary(&model).layers, 2);
}

/// A user's own backbone with a SET head: what the README shows.
#[derive(Module, Debug)]
struct ToyCnn {
    conv: Conv2d,
    pool: MaxPool2d,
    head: SetHead,
}

impl ToyCnn {
    fn new(device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new([3, 4], [3, 3]).init(device),
            pool: MaxPool2dConfig::new([5, 5]).init(),
            head: SetHeadConfig::new(4 * 6 * 6, vec![64], 10)
                .with_epsilon(4.0)
                .init(device),
        }
    }
    fn classify(&self, b: ClassificationBatch) -> ClassificationOutput {
        let [n, _] = b.inputs.dims();
        let x = self
            .pool
            .forward(relu(self.conv.forward(b.inputs.reshape([n, 3, 32, 32]))));
        let logits = self.head.forward(x);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), b.targets.clone());
        ClassificationOutput::new(loss, logits, b.targets)
    }
}

impl TrainStep for ToyCnn {
    type Input = ClassificationBatch;
    type Output = ClassificationOutput;
    fn step(&self, b: ClassificationBatch) -> TrainOutput<ClassificationOutput> {
        let out = self.classify(b);
        TrainOutput::new(self, out.loss.backward(), out)
    }
}

impl InferenceStep for ToyCnn {
    type Input = ClassificationBatch;
    type Output = ClassificationOutput;
    fn step(&self, b: ClassificationBatch) -> ClassificationOutput {
        self.classify(b)
    }
}

#[test]
fn set_callback_evolves_a_set_head_on_a_user_backbone() {
    use burn_set::strategy::SetTrainingExt;
    let device = dev().autodiff();
    let model = ToyCnn::new(&device);
    let before = snapshot_layers(&model, false);
    assert_eq!(before.len(), 1);
    assert!(
        before[0].path.starts_with("head.hidden.0"),
        "{}",
        before[0].path
    );
    let train = embedded_cifar10(Split::Train).unwrap().limit(64);
    let test = embedded_cifar10(Split::Test).unwrap().limit(32);
    let dl_train = DataLoaderBuilder::new(AugmentingBatcher::new(1))
        .batch_size(32)
        .build(ClassificationDataset::new(train));
    let dl_test = DataLoaderBuilder::new(ClassificationBatcher::new())
        .batch_size(32)
        .build(ClassificationDataset::new(test));
    let cb = SetCallback::new(EvolutionConfig::new().with_seed(2));
    let dir = tempfile::tempdir().unwrap();
    let result = SupervisedTraining::new(dir.path(), dl_train, dl_test)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .with_set(&cb)
        .with_application_logger(None)
        .num_epochs(2)
        .launch(Learner::new(model, SgdConfig::new().init(), 0.01));
    let history = cb.history();
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(history[0].layers[0].pruned > 0);
    assert_eq!(history[0].layers[0].pruned, history[0].layers[0].regrown);
    let after = snapshot_layers(&result.model, false);
    assert_ne!(after[0].topology.positions, before[0].topology.positions);
    assert_eq!(
        after[0].topology.nnz(),
        before[0].topology.nnz() - history[1].layers[0].pruned
    );
}

#[test]
fn run_cnn_end_to_end_on_a_tiny_sample() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = CnnRun::paper(Sparsity::Set);
    run.epochs = 1;
    run.head_widths = vec![64, 64];
    run.epsilon = 5.0;
    run.batch_size = 16;
    run.artifacts = dir.path().join("a");
    let train = embedded_cifar10(Split::Train).unwrap().limit(32);
    let test = embedded_cifar10(Split::Test).unwrap().limit(16);
    let r = run_cnn(&run, train, test).unwrap();
    assert_eq!(r.epochs, 1);
    assert_eq!(r.conv_weights, 287_008);
    assert_eq!(r.dense_connections, 2048 * 64 + 64 * 64);
    assert!(r.connections > 0 && r.connections < r.dense_connections);
    assert!((0.0..=100.0).contains(&r.test_accuracy));
    assert_eq!(
        r.dense_head_weights,
        2048 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10
    );
    // wrong feature count is a clear error
    let mnist = burn_set::data::embedded_mnist(Split::Test)
        .unwrap()
        .limit(4);
    let e = run_cnn(&run, mnist.clone(), mnist).unwrap_err();
    assert!(e.contains("3072"), "{e}");
}
