//! Data loading: MNIST / Fashion-MNIST (IDX) and HIGGS (text) readers, a small embedded
//! real-data sample of each, and the Burn [`Dataset`](burn::data::dataset::Dataset) /
//! [`Batcher`](burn::data::dataloader::batcher::Batcher) glue.
//!
//! All parsers work on bytes (`&[u8]` plus a display name used in error messages) or on a
//! reader, with thin file-reading wrappers; gzip input is detected by its magic bytes
//! (`1f 8b`), not by the file extension. Malformed input gives a [`DataError`] naming the
//! file and what was expected; nothing panics and no samples are silently dropped.

pub mod binary;
pub mod cifar;
pub mod classification;
pub mod embedded;
pub mod error;
pub mod higgs;
pub mod idx;

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use binary::{
    BinaryBatch, BinaryBatcher, BinaryData, BinaryDataset, BinaryDatasetKind, BinaryDensitySet,
    BinarySplit, EMBEDDED_DNA_LENS, SplitSource, binarize, embedded_dna, load_binary_density,
    load_binary_file, load_binary_split, parse_binary,
};
pub use cifar::{
    AugmentingBatcher, CIFAR10_CLASSES, CIFAR10_FEATURES, CIFAR10_MEAN, CIFAR10_STD, CifarImages,
    EMBEDDED_CIFAR10_TEST_LEN, EMBEDDED_CIFAR10_TRAIN_LEN, augment_chw, embedded_cifar10,
    load_cifar10, load_cifar10_binary, load_cifar10_image_dir, load_cifar10_tar,
    parse_cifar10_batch,
};
pub use classification::{
    ClassificationBatch, ClassificationBatcher, ClassificationData, ClassificationDataset,
    ClassificationItem, FeatureStats,
};
pub use embedded::{
    EMBEDDED_HIGGS_TEST_LEN, EMBEDDED_HIGGS_TRAIN_LEN, EMBEDDED_MNIST_TEST_LEN,
    EMBEDDED_MNIST_TRAIN_LEN, embedded_higgs, embedded_mnist, fixtures_dir,
};
pub use error::DataError;
pub use higgs::{
    HIGGS_FEATURES, higgs_file_candidates, load_higgs, load_higgs_dir, parse_higgs,
    parse_higgs_reader,
};
pub use idx::{
    IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, IdxImages, MNIST_CLASSES, load_mnist_split,
    mnist_file_candidates, mnist_from_bytes, parse_idx_images, parse_idx_labels, read_idx_images,
    read_idx_labels,
};

/// Which split of a data set to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training split.
    Train,
    /// The test split.
    Test,
}

impl Split {
    /// `"train"` or `"test"`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The classification data sets this module can load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// MNIST handwritten digits (IDX files), 784 features, 10 classes.
    Mnist,
    /// Fashion-MNIST (IDX files with the MNIST file names), 784 features, 10 classes.
    FashionMnist,
    /// HIGGS (text: label then 28 features), 28 features, 2 classes.
    Higgs,
}

impl DatasetKind {
    /// All kinds, in display order.
    pub const ALL: [DatasetKind; 3] = [
        DatasetKind::Mnist,
        DatasetKind::FashionMnist,
        DatasetKind::Higgs,
    ];

    /// The canonical name accepted by [`FromStr`]: `mnist`, `fashion-mnist` or `higgs`.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Higgs => "higgs",
        }
    }

    /// Number of input features.
    pub fn n_features(self) -> usize {
        match self {
            DatasetKind::Mnist | DatasetKind::FashionMnist => 28 * 28,
            DatasetKind::Higgs => HIGGS_FEATURES,
        }
    }

    /// Number of classes.
    pub fn n_classes(self) -> usize {
        match self {
            DatasetKind::Mnist | DatasetKind::FashionMnist => MNIST_CLASSES,
            DatasetKind::Higgs => 2,
        }
    }

    /// Whether a small sample of this data set is embedded in the library.
    pub fn has_embedded_sample(self) -> bool {
        !matches!(self, DatasetKind::FashionMnist)
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = DataError;

    /// Parses `mnist`, `fashion-mnist` (also `fashion_mnist`, `fashionmnist`) or `higgs`,
    /// ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mnist" => Ok(DatasetKind::Mnist),
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" => Ok(DatasetKind::FashionMnist),
            "higgs" => Ok(DatasetKind::Higgs),
            _ => Err(DataError::UnknownDataset {
                name: s.to_string(),
                expected: "mnist, fashion-mnist, higgs".to_string(),
            }),
        }
    }
}

/// Loads one split of a classification data set.
///
/// With `data_dir = Some(dir)` the files are read from `dir` (see [`load_mnist_split`] and
/// [`load_higgs_dir`] for the expected names); with `None` the embedded sample is used
/// (MNIST: 2,000 train / 500 test; HIGGS: 1,000 train / 200 test). Fashion-MNIST has no
/// embedded sample and needs a directory. `limit` keeps the first `limit` samples.
pub fn load_classification(
    kind: DatasetKind,
    data_dir: Option<&Path>,
    split: Split,
    limit: Option<usize>,
) -> Result<ClassificationData, DataError> {
    match (kind, data_dir) {
        (DatasetKind::Mnist | DatasetKind::FashionMnist, Some(dir)) => {
            load_mnist_split(dir, split, limit)
        }
        (DatasetKind::Higgs, Some(dir)) => load_higgs_dir(dir, split, limit),
        (DatasetKind::Mnist, None) => Ok(apply_limit(embedded_mnist(split)?, limit)),
        (DatasetKind::Higgs, None) => Ok(apply_limit(embedded_higgs(split)?, limit)),
        (DatasetKind::FashionMnist, None) => {
            let (images, labels) = mnist_file_candidates(split);
            Err(DataError::NotEmbedded {
                dataset: "Fashion-MNIST".to_string(),
                hint: format!(
                    "pass --data-dir DIR where DIR holds the Fashion-MNIST IDX files \
                     (same names as MNIST: {} and {})",
                    images.join(" or "),
                    labels.join(" or ")
                ),
            })
        }
    }
}

fn apply_limit(data: ClassificationData, limit: Option<usize>) -> ClassificationData {
    match limit {
        Some(n) => data.limit(n),
        None => data,
    }
}

// ---------------------------------------------------------------------------------------
// Shared byte / file helpers.

/// The two magic bytes that open every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether `bytes` starts with the gzip magic bytes.
pub(crate) fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Decompresses `bytes` if they are gzip (by magic), otherwise borrows them unchanged.
/// Concatenated gzip members are all decoded.
pub(crate) fn decompress_if_gzip<'a>(
    bytes: &'a [u8],
    name: &Path,
) -> Result<Cow<'a, [u8]>, DataError> {
    if !is_gzip(bytes) {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4));
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|source| DataError::Decompress {
            path: name.to_path_buf(),
            source,
        })?;
    Ok(Cow::Owned(out))
}

/// Reads a whole file into memory.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| io_or_missing(path, source))
}

/// Opens a file as a buffered reader, transparently decompressing gzip (by magic).
///
/// Errors raised while decompressing later surface as `io::Error`s from the reader; use
/// [`DataError::Decompress`] for them when the file [`is_gzip`].
pub(crate) fn open_maybe_gzip(path: &Path) -> Result<(Box<dyn BufRead>, bool), DataError> {
    let mut file = File::open(path).map_err(|source| io_or_missing(path, source))?;
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < magic.len() {
        match file.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(DataError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    let head = std::io::Cursor::new(magic[..got].to_vec());
    let stream = head.chain(file);
    if is_gzip(&magic[..got]) {
        let decoder = flate2::read::MultiGzDecoder::new(BufReader::new(stream));
        Ok((Box::new(BufReader::with_capacity(1 << 16, decoder)), true))
    } else {
        Ok((Box::new(BufReader::with_capacity(1 << 16, stream)), false))
    }
}

fn io_or_missing(path: &Path, source: std::io::Error) -> DataError {
    if source.kind() == std::io::ErrorKind::NotFound {
        DataError::Missing {
            path: path.to_path_buf(),
            hint: "no such file".to_string(),
        }
    } else {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Returns the first of `candidates` that exists as a file in `dir`, or a
/// [`DataError::Missing`] listing all candidates.
pub(crate) fn find_in_dir(
    dir: &Path,
    candidates: &[&str],
    what: &str,
) -> Result<PathBuf, DataError> {
    if !dir.is_dir() {
        return Err(DataError::Missing {
            path: dir.to_path_buf(),
            hint: format!(
                "data directory does not exist or is not a directory; expected it to contain \
                 the {what} as one of: {}",
                candidates.join(", ")
            ),
        });
    }
    for name in candidates {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(DataError::Missing {
        path: dir.to_path_buf(),
        hint: format!(
            "no {what} in this directory; expected one of: {}",
            candidates.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_kind_from_str() {
        assert_eq!("mnist".parse::<DatasetKind>().unwrap(), DatasetKind::Mnist);
        assert_eq!(
            "Fashion-MNIST".parse::<DatasetKind>().unwrap(),
            DatasetKind::FashionMnist
        );
        assert_eq!("higgs".parse::<DatasetKind>().unwrap(), DatasetKind::Higgs);
        for k in DatasetKind::ALL {
            assert_eq!(k.to_string().parse::<DatasetKind>().unwrap(), k);
        }
        let e = "cifar".parse::<DatasetKind>().unwrap_err();
        assert!(e.to_string().contains("fashion-mnist"), "{e}");
    }

    #[test]
    fn load_classification_embedded_and_limit() {
        let d = load_classification(DatasetKind::Mnist, None, Split::Test, Some(10)).unwrap();
        assert_eq!(d.len(), 10);
        assert_eq!(d.n_features, DatasetKind::Mnist.n_features());
        let h = load_classification(DatasetKind::Higgs, None, Split::Train, None).unwrap();
        assert_eq!(h.len(), EMBEDDED_HIGGS_TRAIN_LEN);
        assert_eq!(h.n_classes, DatasetKind::Higgs.n_classes());
    }

    #[test]
    fn load_classification_from_fixture_dirs() {
        let dir = fixtures_dir();
        let d = load_classification(
            DatasetKind::FashionMnist,
            Some(&dir.join("mnist")),
            Split::Train,
            Some(5),
        )
        .unwrap();
        assert_eq!(d.len(), 5);
        let h = load_classification(
            DatasetKind::Higgs,
            Some(&dir.join("higgs")),
            Split::Test,
            None,
        )
        .unwrap();
        assert_eq!(h.len(), EMBEDDED_HIGGS_TEST_LEN);
    }

    #[test]
    fn fashion_mnist_without_dir_asks_for_data_dir() {
        let e =
            load_classification(DatasetKind::FashionMnist, None, Split::Train, None).unwrap_err();
        assert!(matches!(e, DataError::NotEmbedded { .. }));
        let s = e.to_string();
        assert!(s.contains("--data-dir"), "{s}");
        assert!(s.contains("train-images-idx3-ubyte"), "{s}");
    }

    #[test]
    fn gzip_detection_is_by_magic() {
        assert!(is_gzip(&[0x1f, 0x8b, 0x08]));
        assert!(!is_gzip(&[0x1f]));
        assert!(!is_gzip(b"plain"));
        let name = Path::new("x.gz");
        // A ".gz" name with plain content is passed through unchanged.
        assert_eq!(&*decompress_if_gzip(b"plain", name).unwrap(), b"plain");
        // Gzip magic followed by garbage is a decompression error naming the file.
        let e = decompress_if_gzip(&[0x1f, 0x8b, 0, 1, 2, 3], name).unwrap_err();
        assert!(matches!(e, DataError::Decompress { .. }));
        assert!(e.to_string().contains("x.gz"), "{e}");
    }
}
