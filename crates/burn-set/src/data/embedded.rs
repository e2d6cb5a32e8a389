//! Small real-data samples compiled into the library, so examples and tests run without
//! downloads.
//!
//! * MNIST: the first 2,000 training and first 500 test images and labels (gzip IDX).
//! * HIGGS: the first 1,000 training and first 200 test events of the LightGBM HIGGS
//!   sample (gzip text, label then 28 features).
//!
//! The files live in `crates/burn-set/fixtures/` and are produced by
//! `fixtures/make_fixtures.py`, which documents their provenance. They are parsed by the
//! same code as files on disk.

use std::path::PathBuf;

use super::{ClassificationData, DataError, Split, mnist_from_bytes, parse_higgs};

/// Number of training samples in the embedded MNIST sample.
pub const EMBEDDED_MNIST_TRAIN_LEN: usize = 2000;
/// Number of test samples in the embedded MNIST sample.
pub const EMBEDDED_MNIST_TEST_LEN: usize = 500;
/// Number of training samples in the embedded HIGGS sample.
pub const EMBEDDED_HIGGS_TRAIN_LEN: usize = 1000;
/// Number of test samples in the embedded HIGGS sample.
pub const EMBEDDED_HIGGS_TEST_LEN: usize = 200;

macro_rules! fixture {
    ($rel:literal) => {
        (
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/", $rel)).as_slice(),
            concat!("<embedded>/", $rel),
        )
    };
}

type Fixture = (&'static [u8], &'static str);

const MNIST_TRAIN_IMAGES: Fixture = fixture!("mnist/train-images-idx3-ubyte.gz");
const MNIST_TRAIN_LABELS: Fixture = fixture!("mnist/train-labels-idx1-ubyte.gz");
const MNIST_TEST_IMAGES: Fixture = fixture!("mnist/t10k-images-idx3-ubyte.gz");
const MNIST_TEST_LABELS: Fixture = fixture!("mnist/t10k-labels-idx1-ubyte.gz");
const HIGGS_TRAIN: Fixture = fixture!("higgs/binary.train.gz");
const HIGGS_TEST: Fixture = fixture!("higgs/binary.test.gz");

/// The embedded MNIST sample: 2,000 train / 500 test images, pixels in `[0, 1]`.
pub fn embedded_mnist(split: Split) -> Result<ClassificationData, DataError> {
    let ((images, images_name), (labels, labels_name)) = match split {
        Split::Train => (MNIST_TRAIN_IMAGES, MNIST_TRAIN_LABELS),
        Split::Test => (MNIST_TEST_IMAGES, MNIST_TEST_LABELS),
    };
    mnist_from_bytes(images, images_name, labels, labels_name, None)
}

/// The embedded HIGGS sample: 1,000 train / 200 test events, features not standardised
/// (see [`ClassificationData::standardize`]).
pub fn embedded_higgs(split: Split) -> Result<ClassificationData, DataError> {
    let (bytes, name) = match split {
        Split::Train => HIGGS_TRAIN,
        Split::Test => HIGGS_TEST,
    };
    parse_higgs(bytes, name, None)
}

/// The directory holding the fixture files (`<crate>/fixtures`), for tests.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{load_higgs_dir, load_mnist_split};

    #[test]
    fn embedded_mnist_is_real_and_complete() {
        let train = embedded_mnist(Split::Train).unwrap();
        let test = embedded_mnist(Split::Test).unwrap();
        assert_eq!(train.len(), EMBEDDED_MNIST_TRAIN_LEN);
        assert_eq!(test.len(), EMBEDDED_MNIST_TEST_LEN);
        for d in [&train, &test] {
            assert_eq!(d.n_features, 784);
            assert_eq!(d.n_classes, 10);
            assert_eq!(d.features.len(), d.len() * 784);
            assert!(d.features.iter().all(|&x| (0.0..=1.0).contains(&x)));
            assert!(d.features.contains(&0.0) && d.features.contains(&1.0));
            // Every digit occurs.
            assert!(
                d.class_counts().iter().all(|&c| c > 0),
                "{:?}",
                d.class_counts()
            );
        }
        // The canonical first labels of MNIST.
        assert_eq!(train.labels[..10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
        assert_eq!(test.labels[..10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
        // Mean pixel of MNIST is about 0.13.
        let mean = train.features.iter().sum::<f32>() / train.features.len() as f32;
        assert!((0.11..0.15).contains(&mean), "{mean}");
    }

    #[test]
    fn embedded_higgs_is_real_and_complete() {
        let train = embedded_higgs(Split::Train).unwrap();
        let test = embedded_higgs(Split::Test).unwrap();
        assert_eq!(train.len(), EMBEDDED_HIGGS_TRAIN_LEN);
        assert_eq!(test.len(), EMBEDDED_HIGGS_TEST_LEN);
        assert_eq!(train.n_features, 28);
        assert!(train.labels.iter().all(|&l| l < 2));

        let (mut tr, mut te) = (train.clone(), test.clone());
        let stats = ClassificationData::standardize(&mut tr, &mut te).unwrap();
        assert_eq!(stats.mean.len(), 28);
        for j in 0..28 {
            let col: Vec<f32> = tr.features.iter().skip(j).step_by(28).copied().collect();
            let m = col.iter().sum::<f32>() / col.len() as f32;
            assert!(m.abs() < 1e-4, "feature {j} mean {m}");
        }
    }

    #[test]
    fn embedded_equals_on_disk_fixtures() {
        let dir = fixtures_dir();
        for split in [Split::Train, Split::Test] {
            assert_eq!(
                embedded_mnist(split).unwrap(),
                load_mnist_split(dir.join("mnist"), split, None).unwrap()
            );
            assert_eq!(
                embedded_higgs(split).unwrap(),
                load_higgs_dir(dir.join("higgs"), split, None).unwrap()
            );
        }
    }

    #[test]
    fn embedded_errors_use_embedded_names() {
        assert!(MNIST_TRAIN_IMAGES.1.starts_with("<embedded>/mnist/"));
        assert!(crate::data::is_gzip(MNIST_TRAIN_IMAGES.0));
    }
}
