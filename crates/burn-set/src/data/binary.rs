//! Binary data for density estimation (the RBM experiments): the `.data` format of the
//! binary density-estimation suite (Larochelle & Murray 2011) and binarized MNIST.
//!
//! A `.data` file is a CSV of `0`/`1` values, one sample per line, no header, raw or gzip
//! (detected by the `1f 8b` magic bytes). Lines that are empty (or only whitespace) are
//! ignored; anything else that is not a `0` or a `1` is an error naming the file, the line
//! and the column, as are rows of different lengths and files without samples.
//!
//! The suite's files are named `{name}.{split}.data[.gz]` with splits `train`, `valid`
//! and `test`. The copy in `../shared/data/binary-density/` lacks some splits (adult and
//! connect4: train + valid; ocr_letters: valid + test; rcv1: valid only). [`load_binary_density`]
//! fills the gaps with a documented rule and records which file each role came from
//! (`train_source`, `test_source`), so a report can say "test = valid":
//!
//! * test missing → the valid split is the test split;
//! * train missing and valid not already the test split → valid is the training split;
//! * train and test both missing (rcv1) → the valid split is cut: its first 80% (in file
//!   order) train, the last 20% test.
//!
//! MNIST is binarized from the IDX files (pixel/255 > 0.5 → 1, i.e. pixel ≥ 128: a fixed
//! threshold, not stochastic binarization); without a data directory the embedded
//! 2,000/500-image sample is used. The dna data set (train 1,600 / valid 400 / test 1,186,
//! 180 variables) is embedded and is the default.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::tensor::{Device, Tensor, TensorData};

use super::{DataError, DatasetKind, Split, decompress_if_gzip, load_classification, read_file};

/// A binary data set held in memory: `n_samples × n_features` values, each 0.0 or 1.0.
#[derive(Clone, Debug, PartialEq)]
pub struct BinaryData {
    /// Row-major values, sample `i` at `values[i * n_features..(i + 1) * n_features]`.
    pub values: Vec<f32>,
    /// Number of variables per sample.
    pub n_features: usize,
}

impl BinaryData {
    /// Builds a data set, checking the length and that every value is 0 or 1.
    pub fn new(values: Vec<f32>, n_features: usize) -> Result<Self, DataError> {
        if n_features == 0 || !values.len().is_multiple_of(n_features) {
            return Err(DataError::Mismatch {
                message: format!(
                    "{} values cannot be split into rows of {n_features} features",
                    values.len()
                ),
            });
        }
        if let Some(i) = values.iter().position(|&x| x != 0.0 && x != 1.0) {
            return Err(DataError::Mismatch {
                message: format!(
                    "value {} of sample {} (feature {}) is not binary",
                    values[i],
                    i / n_features,
                    i % n_features
                ),
            });
        }
        Ok(Self { values, n_features })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.values.len() / self.n_features.max(1)
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Sample `i`, or `None` past the end.
    pub fn row(&self, i: usize) -> Option<&[f32]> {
        (i < self.len()).then(|| &self.values[i * self.n_features..(i + 1) * self.n_features])
    }

    /// Rows `range` as a new data set.
    pub fn rows(&self, range: std::ops::Range<usize>) -> Self {
        let d = self.n_features;
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        Self {
            values: self.values[start * d..end * d].to_vec(),
            n_features: d,
        }
    }

    /// Keeps the first `n` samples.
    pub fn limit(self, n: usize) -> Self {
        if n >= self.len() {
            self
        } else {
            self.rows(0..n)
        }
    }

    /// Fraction of ones of every variable, computed in f64.
    pub fn marginals(&self) -> Vec<f64> {
        let d = self.n_features;
        let mut sum = vec![0f64; d];
        for row in self.values.chunks_exact(d.max(1)) {
            for (s, &x) in sum.iter_mut().zip(row) {
                *s += x as f64;
            }
        }
        let n = self.len().max(1) as f64;
        sum.iter().map(|s| s / n).collect()
    }

    /// All samples as a `[len, n_features]` tensor.
    pub fn to_tensor(&self, device: &Device) -> Tensor<2> {
        Tensor::from_data(
            TensorData::new(self.values.clone(), [self.len(), self.n_features]),
            device,
        )
    }
}

/// Parses a `.data` buffer (raw or gzip). `name` is used in error messages.
pub fn parse_binary(bytes: &[u8], name: impl AsRef<Path>) -> Result<BinaryData, DataError> {
    let name = name.as_ref();
    let text = decompress_if_gzip(bytes, name)?;
    let text = std::str::from_utf8(&text).map_err(|e| DataError::Parse {
        path: name.to_path_buf(),
        line: 1 + text[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
        message: format!("not UTF-8 text: {e}"),
    })?;
    let mut values = Vec::new();
    let mut n_features = 0usize;
    let mut first_line = 0usize;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let before = values.len();
        for (col, field) in line.split(',').enumerate() {
            match field.trim() {
                "0" => values.push(0.0f32),
                "1" => values.push(1.0f32),
                other => {
                    return Err(DataError::Parse {
                        path: name.to_path_buf(),
                        line: line_no,
                        message: format!(
                            "column {}: expected 0 or 1, found {:?}",
                            col + 1,
                            truncate_for_message(other)
                        ),
                    });
                }
            }
        }
        let width = values.len() - before;
        if n_features == 0 {
            n_features = width;
            first_line = line_no;
        } else if width != n_features {
            return Err(DataError::Parse {
                path: name.to_path_buf(),
                line: line_no,
                message: format!(
                    "ragged row: {width} values, but line {first_line} has {n_features}"
                ),
            });
        }
    }
    if values.is_empty() {
        return Err(DataError::Empty {
            path: name.to_path_buf(),
            hint: "expected lines of comma-separated 0/1 values".to_string(),
        });
    }
    Ok(BinaryData { values, n_features })
}

fn truncate_for_message(s: &str) -> String {
    if s.chars().count() > 20 {
        format!("{}…", s.chars().take(20).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Reads a `.data` file (raw or gzip).
pub fn load_binary_file(path: impl AsRef<Path>) -> Result<BinaryData, DataError> {
    let path = path.as_ref();
    parse_binary(&read_file(path)?, path)
}

/// A split of the density-estimation suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BinarySplit {
    /// `train`.
    Train,
    /// `valid`.
    Valid,
    /// `test`.
    Test,
}

impl BinarySplit {
    /// `"train"`, `"valid"` or `"test"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Valid => "valid",
            Self::Test => "test",
        }
    }
}

impl fmt::Display for BinarySplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The data sets of the RBM experiments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryDatasetKind {
    /// DNA (180 variables); embedded.
    Dna,
    /// Adult (123).
    Adult,
    /// Connect4 (126).
    Connect4,
    /// OCR letters (128).
    OcrLetters,
    /// RCV1 (150).
    Rcv1,
    /// MNIST binarized at 0.5 (784).
    Mnist,
}

impl BinaryDatasetKind {
    /// All kinds.
    pub const ALL: [Self; 6] = [
        Self::Dna,
        Self::Adult,
        Self::Connect4,
        Self::OcrLetters,
        Self::Rcv1,
        Self::Mnist,
    ];

    /// The name used on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Dna => "dna",
            Self::Adult => "adult",
            Self::Connect4 => "connect4",
            Self::OcrLetters => "ocr_letters",
            Self::Rcv1 => "rcv1",
            Self::Mnist => "mnist",
        }
    }

    /// Number of variables (Table 1 of the SET paper).
    pub fn n_features(self) -> usize {
        match self {
            Self::Dna => 180,
            Self::Adult => 123,
            Self::Connect4 => 126,
            Self::OcrLetters => 128,
            Self::Rcv1 => 150,
            Self::Mnist => 784,
        }
    }
}

impl fmt::Display for BinaryDatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BinaryDatasetKind {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s || (s == "ocr" && *k == Self::OcrLetters))
            .ok_or_else(|| DataError::UnknownDataset {
                name: s.to_string(),
                expected: Self::ALL.map(|k| k.name()).join(", "),
            })
    }
}

/// Where a role (train or test) of a [`BinaryDensitySet`] came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SplitSource {
    /// The split of the suite the rows come from.
    pub split: BinarySplit,
    /// `Some((start, end))` when only rows `start..end` of that split are used.
    pub rows: Option<(usize, usize)>,
}

impl SplitSource {
    fn whole(split: BinarySplit) -> Self {
        Self { split, rows: None }
    }
}

impl fmt::Display for SplitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rows {
            None => write!(f, "{}", self.split),
            Some((a, b)) => write!(f, "{}[{a}..{b}]", self.split),
        }
    }
}

/// Train / (valid) / test data of one density-estimation data set, with where each came from.
#[derive(Clone, Debug)]
pub struct BinaryDensitySet {
    /// The data set.
    pub kind: BinaryDatasetKind,
    /// Training samples.
    pub train: BinaryData,
    /// The valid split when it is neither the training nor the test data.
    pub valid: Option<BinaryData>,
    /// Test samples.
    pub test: BinaryData,
    /// Where the training samples came from (`train` unless that split is missing).
    pub train_source: SplitSource,
    /// Where the test samples came from (`test` unless that split is missing).
    pub test_source: SplitSource,
    /// Where the files were read (`<embedded>` for the built-in sample).
    pub origin: String,
    /// Human-readable notes on substitutions (e.g. "no test split: valid used as test").
    pub notes: Vec<String>,
}

macro_rules! dna_fixture {
    ($split:literal) => {
        (
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/fixtures/binary-density/dna.",
                $split,
                ".data.gz"
            ))
            .as_slice(),
            concat!("<embedded>/binary-density/dna.", $split, ".data.gz"),
        )
    };
}

const DNA_TRAIN: (&[u8], &str) = dna_fixture!("train");
const DNA_VALID: (&[u8], &str) = dna_fixture!("valid");
const DNA_TEST: (&[u8], &str) = dna_fixture!("test");

/// Samples in the embedded dna train / valid / test splits.
pub const EMBEDDED_DNA_LENS: [usize; 3] = [1600, 400, 1186];

/// The embedded dna data set (the suite's files, byte for byte).
pub fn embedded_dna(split: BinarySplit) -> Result<BinaryData, DataError> {
    let (bytes, name) = match split {
        BinarySplit::Train => DNA_TRAIN,
        BinarySplit::Valid => DNA_VALID,
        BinarySplit::Test => DNA_TEST,
    };
    parse_binary(bytes, name)
}

/// The file names tried for `{name}.{split}`: `.data.gz`, then `.data`.
pub fn binary_file_candidates(kind: BinaryDatasetKind, split: BinarySplit) -> [String; 2] {
    [
        format!("{}.{}.data.gz", kind.name(), split.name()),
        format!("{}.{}.data", kind.name(), split.name()),
    ]
}

/// Checks that `data` read from `source` has the kind's number of variables
/// ([`BinaryDatasetKind::n_features`]): a file whose rows are all one variable short (or long)
/// is consistent in itself but is not that data set.
fn check_width(kind: BinaryDatasetKind, data: &BinaryData, source: &str) -> Result<(), DataError> {
    if data.n_features == kind.n_features() {
        return Ok(());
    }
    Err(DataError::Mismatch {
        message: format!(
            "{source}: the rows have {} variables but {} has {}",
            data.n_features,
            kind.name(),
            kind.n_features()
        ),
    })
}

/// Loads one split of a `.data` data set from `dir`, or `Ok(None)` when neither candidate
/// file exists (a missing directory is an error). The rows must have the kind's number of
/// variables ([`BinaryDatasetKind::n_features`]).
pub fn load_binary_split(
    kind: BinaryDatasetKind,
    dir: &Path,
    split: BinarySplit,
) -> Result<Option<BinaryData>, DataError> {
    if !dir.is_dir() {
        return Err(DataError::Missing {
            path: dir.to_path_buf(),
            hint: format!(
                "data directory does not exist or is not a directory; expected it to hold {}",
                binary_file_candidates(kind, split).join(" or ")
            ),
        });
    }
    for name in binary_file_candidates(kind, split) {
        let p = dir.join(&name);
        if p.is_file() {
            let d = load_binary_file(&p)?;
            check_width(kind, &d, &p.display().to_string())?;
            return Ok(Some(d));
        }
    }
    Ok(None)
}

/// Loads a density-estimation data set: from `data_dir` when given, otherwise the embedded
/// sample (dna; MNIST's 2,000/500 images). Missing splits are substituted as described in
/// the [module docs](self) and recorded in `train_source` / `test_source` / `notes`.
pub fn load_binary_density(
    kind: BinaryDatasetKind,
    data_dir: Option<&Path>,
) -> Result<BinaryDensitySet, DataError> {
    if kind == BinaryDatasetKind::Mnist {
        return load_binarized_mnist(data_dir);
    }
    let (train, valid, test, origin) = match data_dir {
        None if kind == BinaryDatasetKind::Dna => (
            Some(embedded_dna(BinarySplit::Train)?),
            Some(embedded_dna(BinarySplit::Valid)?),
            Some(embedded_dna(BinarySplit::Test)?),
            "<embedded>".to_string(),
        ),
        None => {
            return Err(DataError::NotEmbedded {
                dataset: kind.name().to_string(),
                hint: format!(
                    "only dna is embedded: pass --data-dir DIR where DIR holds {} (and the \
                     valid/test files)",
                    binary_file_candidates(kind, BinarySplit::Train).join(" or ")
                ),
            });
        }
        Some(dir) => (
            load_binary_split(kind, dir, BinarySplit::Train)?,
            load_binary_split(kind, dir, BinarySplit::Valid)?,
            load_binary_split(kind, dir, BinarySplit::Test)?,
            dir.display().to_string(),
        ),
    };
    assemble(kind, train, valid, test, origin, data_dir)
}

fn assemble(
    kind: BinaryDatasetKind,
    train: Option<BinaryData>,
    valid: Option<BinaryData>,
    test: Option<BinaryData>,
    origin: String,
    dir: Option<&Path>,
) -> Result<BinaryDensitySet, DataError> {
    let mut notes = Vec::new();
    let (train, valid, test, train_source, test_source) = match (train, valid, test) {
        (Some(tr), va, Some(te)) => (
            tr,
            va,
            te,
            SplitSource::whole(BinarySplit::Train),
            SplitSource::whole(BinarySplit::Test),
        ),
        (Some(tr), Some(va), None) => {
            notes.push("no test split: the valid split is used as the test split".to_string());
            (
                tr,
                None,
                va,
                SplitSource::whole(BinarySplit::Train),
                SplitSource::whole(BinarySplit::Valid),
            )
        }
        (None, Some(va), Some(te)) => {
            notes.push("no train split: the valid split is used as the training split".to_string());
            (
                va,
                None,
                te,
                SplitSource::whole(BinarySplit::Valid),
                SplitSource::whole(BinarySplit::Test),
            )
        }
        (None, Some(va), None) => {
            let n = va.len();
            let cut = n * 4 / 5;
            if cut == 0 || cut == n {
                return Err(DataError::Mismatch {
                    message: format!(
                        "{}: only a valid split of {n} samples exists, too few to cut into \
                         train and test",
                        kind.name()
                    ),
                });
            }
            notes.push(format!(
                "no train and no test split: the valid split is cut, rows 0..{cut} train, \
                 rows {cut}..{n} test"
            ));
            (
                va.rows(0..cut),
                None,
                va.rows(cut..n),
                SplitSource {
                    split: BinarySplit::Valid,
                    rows: Some((0, cut)),
                },
                SplitSource {
                    split: BinarySplit::Valid,
                    rows: Some((cut, n)),
                },
            )
        }
        (Some(_), None, None) | (None, None, _) => {
            let path = dir.map(Path::to_path_buf).unwrap_or_default();
            return Err(DataError::Missing {
                path,
                hint: format!(
                    "{} needs a train or valid split and a test or valid split; looked for {}, {} \
                     and {}",
                    kind.name(),
                    binary_file_candidates(kind, BinarySplit::Train).join(" / "),
                    binary_file_candidates(kind, BinarySplit::Valid).join(" / "),
                    binary_file_candidates(kind, BinarySplit::Test).join(" / ")
                ),
            });
        }
    };
    for (role, d) in [
        ("train", Some(&train)),
        ("valid", valid.as_ref()),
        ("test", Some(&test)),
    ] {
        if let Some(d) = d
            && d.n_features != train.n_features
        {
            return Err(DataError::Mismatch {
                message: format!(
                    "{}: the {role} data has {} variables but the training data has {}",
                    kind.name(),
                    d.n_features,
                    train.n_features
                ),
            });
        }
    }
    Ok(BinaryDensitySet {
        kind,
        train,
        valid,
        test,
        train_source,
        test_source,
        origin,
        notes,
    })
}

/// Binarizes `[0, 1]` pixels: `x > 0.5 → 1`, else 0.
pub fn binarize(values: &[f32]) -> Vec<f32> {
    values
        .iter()
        .map(|&x| if x > 0.5 { 1.0 } else { 0.0 })
        .collect()
}

fn load_binarized_mnist(data_dir: Option<&Path>) -> Result<BinaryDensitySet, DataError> {
    let load = |split| -> Result<BinaryData, DataError> {
        let d = load_classification(DatasetKind::Mnist, data_dir, split, None)?;
        Ok(BinaryData {
            values: binarize(&d.features),
            n_features: d.n_features,
        })
    };
    let train = load(Split::Train)?;
    let test = load(Split::Test)?;
    // the IDX files may hold images of any size: both splits must be MNIST's 28 × 28
    let expected = BinaryDatasetKind::Mnist.n_features();
    for (split, d) in [("train", &train), ("test", &test)] {
        if d.n_features != expected {
            return Err(DataError::Mismatch {
                message: format!(
                    "binarized MNIST: the {split} images have {} pixels, MNIST has {expected} \
                     (28 × 28)",
                    d.n_features
                ),
            });
        }
    }
    let origin = data_dir.map_or_else(
        || "<embedded> (MNIST sample: 2,000 train / 500 test)".to_string(),
        |d| d.display().to_string(),
    );
    Ok(BinaryDensitySet {
        kind: BinaryDatasetKind::Mnist,
        train,
        valid: None,
        test,
        train_source: SplitSource::whole(BinarySplit::Train),
        test_source: SplitSource::whole(BinarySplit::Test),
        origin,
        notes: vec!["MNIST binarized with a fixed threshold: pixel/255 > 0.5 → 1".to_string()],
    })
}

/// A cheaply clonable [`Dataset`] of binary vectors (items are `Vec<f32>` of 0/1).
#[derive(Clone, Debug)]
pub struct BinaryDataset {
    data: Arc<BinaryData>,
}

impl BinaryDataset {
    /// Wraps the data.
    pub fn new(data: BinaryData) -> Self {
        Self {
            data: Arc::new(data),
        }
    }
}

impl Dataset<Vec<f32>> for BinaryDataset {
    fn get(&self, index: usize) -> Result<Vec<f32>, DatasetError> {
        self.data.row(index).map(<[f32]>::to_vec).ok_or_else(|| {
            DatasetError::new(DataError::OutOfBounds {
                index,
                len: self.data.len(),
            })
        })
    }

    fn len(&self) -> usize {
        self.data.len()
    }
}

/// A batch of binary vectors.
#[derive(Clone, Debug)]
pub struct BinaryBatch {
    /// `[batch, n_features]` values in {0, 1}.
    pub visible: Tensor<2>,
}

/// Stacks binary vectors into a [`BinaryBatch`].
#[derive(Clone, Copy, Debug, Default)]
pub struct BinaryBatcher;

impl Batcher<Vec<f32>, BinaryBatch> for BinaryBatcher {
    fn batch(&self, items: Vec<Vec<f32>>, device: &Device) -> BinaryBatch {
        let n = items.len();
        let d = items.first().map_or(0, Vec::len);
        let mut values = Vec::with_capacity(n * d);
        for (i, it) in items.iter().enumerate() {
            assert_eq!(
                it.len(),
                d,
                "batch item {i} has {} values, item 0 has {d}",
                it.len()
            );
            values.extend_from_slice(it);
        }
        BinaryBatch {
            visible: Tensor::from_data(TensorData::new(values, [n, d]), device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_dna_is_complete() {
        for (split, n) in [BinarySplit::Train, BinarySplit::Valid, BinarySplit::Test]
            .into_iter()
            .zip(EMBEDDED_DNA_LENS)
        {
            let d = embedded_dna(split).unwrap();
            assert_eq!(d.len(), n);
            assert_eq!(d.n_features, 180);
            assert!(d.values.iter().all(|&x| x == 0.0 || x == 1.0));
        }
        let s = load_binary_density(BinaryDatasetKind::Dna, None).unwrap();
        assert_eq!(s.test_source.to_string(), "test");
        assert!(s.notes.is_empty());
    }

    #[test]
    fn kind_names_round_trip() {
        for k in BinaryDatasetKind::ALL {
            assert_eq!(k.name().parse::<BinaryDatasetKind>().unwrap(), k);
        }
        assert!("cifar".parse::<BinaryDatasetKind>().is_err());
    }

    #[test]
    fn parse_plain_and_blank_lines() {
        let d = parse_binary(b"0,1,1\r\n1,0,0\n\n", "x").unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d.values, vec![0., 1., 1., 1., 0., 0.]);
        assert_eq!(d.marginals(), vec![0.5, 0.5, 0.5]);
    }

    /// IDX files of another image size are refused before an RBM is built on them.
    #[test]
    fn binarized_mnist_needs_28_by_28_images() {
        fn idx(magic: u32, dims: &[u32], body: &[u8]) -> Vec<u8> {
            let mut v = magic.to_be_bytes().to_vec();
            for d in dims {
                v.extend(d.to_be_bytes());
            }
            v.extend(body);
            v
        }
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: Vec<u8>| std::fs::write(dir.path().join(name), bytes);
        write(
            "train-images-idx3-ubyte",
            idx(0x803, &[2, 28, 28], &[0; 2 * 784]),
        )
        .unwrap();
        write("train-labels-idx1-ubyte", idx(0x801, &[2], &[1, 2])).unwrap();
        write("t10k-images-idx3-ubyte", idx(0x803, &[2, 2, 2], &[0; 8])).unwrap();
        write("t10k-labels-idx1-ubyte", idx(0x801, &[2], &[3, 4])).unwrap();
        let e = load_binary_density(BinaryDatasetKind::Mnist, Some(dir.path())).unwrap_err();
        assert!(
            e.to_string().contains("the test images have 4 pixels"),
            "{e}"
        );
    }

    #[test]
    fn a_split_of_the_wrong_width_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, width: usize| {
            let row = vec!["1"; width].join(",");
            std::fs::write(dir.path().join(name), format!("{row}\n{row}\n")).unwrap();
        };
        // consistently 179 wide: consistent in itself, but not dna
        write("dna.train.data", 179);
        write("dna.test.data", 179);
        let e = load_binary_density(BinaryDatasetKind::Dna, Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dna.train.data"), "{e}");
        assert!(
            e.contains("the rows have 179 variables but dna has 180"),
            "{e}"
        );
        write("dna.train.data", 180);
        let e = load_binary_density(BinaryDatasetKind::Dna, Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dna.test.data"), "{e}");
        write("dna.test.data", 180);
        let s = load_binary_density(BinaryDatasetKind::Dna, Some(dir.path())).unwrap();
        assert_eq!(s.train.n_features, 180);
    }
}
