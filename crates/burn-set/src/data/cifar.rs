//! CIFAR10 loaders and training-time augmentation.
//!
//! Three on-disk layouts are read, all giving the same [`ClassificationData`]:
//!
//! * the canonical **binary** format: `data_batch_1.bin` … `data_batch_5.bin` (train) and
//!   `test_batch.bin` (test), records of 1 label byte + 3,072 pixel bytes (the R, G and B
//!   planes of a 32×32 image, each row-major), in the folder itself or in its
//!   `cifar-10-batches-bin/` subfolder;
//! * an **image folder**: `train/<class>/*.jpg|jpeg|png` and `test/<class>/…`, with the ten
//!   class folders `airplane automobile bird cat deer dog frog horse ship truck`;
//! * the same image layout inside a **`.tar.gz`** (or plain `.tar`) archive, streamed entry by
//!   entry (nothing is extracted to disk).
//!
//! Features are the 3,072 pixels in CHW order (channel, row, column), scaled to `[0, 1]` and
//! normalised per channel with the **fixed CIFAR10 training-set statistics**
//! [`CIFAR10_MEAN`] / [`CIFAR10_STD`] (not the statistics of whatever subset is loaded, so
//! that a limited or embedded sample is normalised exactly like the full data set).
//!
//! Sample order: binary batches keep the file order (the batches are already shuffled); image
//! folders and archives are ordered round-robin over the classes (the k-th file, by name, of
//! every class in class order), so `limit` keeps the classes balanced.
//!
//! Augmentation ([`AugmentingBatcher`], [`augment_chw`]): random crop of a zero-padded (4 pixels,
//! i.e. padded with the mean after normalisation) image plus random horizontal flip, seedable and
//! deterministic.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::Device;
use rand::Rng;

use super::{
    ClassificationBatch, ClassificationBatcher, ClassificationData, ClassificationItem, DataError,
    Split, is_gzip,
};

/// The ten CIFAR10 classes, in label order (label `i` is `CIFAR10_CLASSES[i]`).
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
/// Image side in pixels.
pub const CIFAR10_SIDE: usize = 32;
/// Features per image: 3 × 32 × 32, CHW order.
pub const CIFAR10_FEATURES: usize = 3 * CIFAR10_SIDE * CIFAR10_SIDE;
/// Bytes per record of the binary format: 1 label byte + 3,072 pixel bytes.
pub const CIFAR10_RECORD_BYTES: usize = 1 + CIFAR10_FEATURES;
/// Per-channel (R, G, B) mean of the CIFAR10 training set, pixels in `[0, 1]`.
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// Per-channel (R, G, B) standard deviation of the CIFAR10 training set, pixels in `[0, 1]`.
pub const CIFAR10_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];
/// Training images in the embedded sample (50 per class).
pub const EMBEDDED_CIFAR10_TRAIN_LEN: usize = 500;
/// Test images in the embedded sample (20 per class).
pub const EMBEDDED_CIFAR10_TEST_LEN: usize = 200;

const EMBEDDED_SAMPLE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/cifar10/cifar10-sample.tar.gz"
));
const EMBEDDED_NAME: &str = "<embedded>/cifar10/cifar10-sample.tar.gz";

/// Raw CIFAR10 images: `pixels` holds `labels.len()` images of 3,072 bytes each (CHW).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CifarImages {
    /// CHW bytes, image after image.
    pub pixels: Vec<u8>,
    /// Class index of each image.
    pub labels: Vec<usize>,
}

impl CifarImages {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Keeps the first `n` images.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.labels.truncate(n);
            self.pixels.truncate(n * CIFAR10_FEATURES);
        }
    }

    /// Normalised features (see [`normalize_cifar10`]) as [`ClassificationData`].
    pub fn into_data(self) -> ClassificationData {
        let features = normalize_cifar10(&self.pixels);
        ClassificationData {
            features,
            labels: self.labels,
            n_features: CIFAR10_FEATURES,
            n_classes: CIFAR10_CLASSES.len(),
        }
    }
}

/// Scales CHW bytes to `[0, 1]` and normalises each channel with [`CIFAR10_MEAN`] and
/// [`CIFAR10_STD`]. `pixels.len()` must be a multiple of 3,072.
pub fn normalize_cifar10(pixels: &[u8]) -> Vec<f32> {
    let plane = CIFAR10_SIDE * CIFAR10_SIDE;
    pixels
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let c = (i % CIFAR10_FEATURES) / plane;
            (p as f32 / 255.0 - CIFAR10_MEAN[c]) / CIFAR10_STD[c]
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Binary format.

/// The binary batch files of a split: `data_batch_1.bin` … `data_batch_5.bin` or
/// `test_batch.bin`.
pub fn cifar10_binary_files(split: Split) -> Vec<String> {
    match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".to_string()],
    }
}

/// Parses one binary batch file (any number of whole 3,073-byte records).
pub fn parse_cifar10_batch(bytes: &[u8], name: impl AsRef<Path>) -> Result<CifarImages, DataError> {
    let name = name.as_ref();
    if bytes.is_empty() {
        return Err(DataError::Empty {
            path: name.to_path_buf(),
            hint: format!(
                "a CIFAR10 binary batch holds records of {CIFAR10_RECORD_BYTES} bytes \
                 (1 label byte + 3,072 pixel bytes)"
            ),
        });
    }
    if !bytes.len().is_multiple_of(CIFAR10_RECORD_BYTES) {
        let records = bytes.len().div_ceil(CIFAR10_RECORD_BYTES);
        return Err(DataError::Truncated {
            path: name.to_path_buf(),
            what: format!(
                "CIFAR10 binary batch (record {records} of {CIFAR10_RECORD_BYTES} bytes: \
                 1 label byte + 3,072 pixel bytes, is cut short)"
            ),
            expected_bytes: (records * CIFAR10_RECORD_BYTES) as u64,
            found_bytes: bytes.len() as u64,
        });
    }
    let n = bytes.len() / CIFAR10_RECORD_BYTES;
    let mut out = CifarImages {
        pixels: Vec::with_capacity(n * CIFAR10_FEATURES),
        labels: Vec::with_capacity(n),
    };
    for (index, rec) in bytes.chunks_exact(CIFAR10_RECORD_BYTES).enumerate() {
        let label = rec[0] as usize;
        if label >= CIFAR10_CLASSES.len() {
            return Err(DataError::LabelOutOfRange {
                path: name.to_path_buf(),
                index,
                label,
                n_classes: CIFAR10_CLASSES.len(),
            });
        }
        out.labels.push(label);
        out.pixels.extend_from_slice(&rec[1..]);
    }
    Ok(out)
}

/// Whether `dir` (or its `cifar-10-batches-bin/` subfolder) holds a binary batch of `split`.
fn binary_dir(dir: &Path, split: Split) -> Option<PathBuf> {
    let first = &cifar10_binary_files(split)[0];
    [dir.to_path_buf(), dir.join("cifar-10-batches-bin")]
        .into_iter()
        .find(|d| d.join(first).is_file())
}

/// The folder of `dir`'s binary batches when it evidently uses the binary layout for `split`:
/// it holds a batch of `split`, or, without a `split/` image folder, one of the other split (then
/// [`load_cifar10_binary`] names the missing batch file, e.g. `test_batch.bin`, instead of the
/// image layout's missing class folders).
fn binary_layout(dir: &Path, split: Split) -> Option<PathBuf> {
    let other = match split {
        Split::Train => Split::Test,
        Split::Test => Split::Train,
    };
    binary_dir(dir, split).or_else(|| {
        (!dir.join(split.name()).is_dir())
            .then(|| binary_dir(dir, other))
            .flatten()
    })
}

/// Loads a split from the binary batch files in `dir` (or `dir/cifar-10-batches-bin`).
pub fn load_cifar10_binary(
    dir: &Path,
    split: Split,
    limit: Option<usize>,
) -> Result<ClassificationData, DataError> {
    let base = binary_layout(dir, split).unwrap_or_else(|| dir.to_path_buf());
    let mut all = CifarImages::default();
    for file in cifar10_binary_files(split) {
        if limit.is_some_and(|n| all.len() >= n) {
            break;
        }
        let path = base.join(&file);
        if !path.is_file() {
            return Err(DataError::Missing {
                path,
                hint: format!(
                    "CIFAR10 binary {split} split needs {}",
                    cifar10_binary_files(split).join(", ")
                ),
            });
        }
        let bytes = super::read_file(&path)?;
        let part = parse_cifar10_batch(&bytes, &path)?;
        all.pixels.extend(part.pixels);
        all.labels.extend(part.labels);
    }
    if let Some(n) = limit {
        all.truncate(n);
    }
    Ok(all.into_data())
}

// ---------------------------------------------------------------------------------------
// Image folders and archives.

/// Decodes one encoded (JPEG/PNG) image into CHW bytes; it must be 32×32 with RGB(A) colour.
pub fn decode_cifar10_image(bytes: &[u8], name: &Path) -> Result<Vec<u8>, DataError> {
    let img = image::load_from_memory(bytes).map_err(|e| DataError::Io {
        path: name.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("cannot decode image: {e}"),
        ),
    })?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let channels = img.color().channel_count();
    if w != CIFAR10_SIDE || h != CIFAR10_SIDE || channels < 3 {
        return Err(DataError::Mismatch {
            message: format!(
                "{}: image is {w}×{h} with {channels} channel(s) ({:?}); CIFAR10 images must be \
                 32×32 RGB",
                name.display(),
                img.color()
            ),
        });
    }
    let rgb = img.to_rgb8();
    let plane = CIFAR10_SIDE * CIFAR10_SIDE;
    let mut chw = vec![0u8; CIFAR10_FEATURES];
    for (i, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            chw[c * plane + i] = px.0[c];
        }
    }
    Ok(chw)
}

fn is_image_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".jpg") || lower.ends_with(".jpeg") || lower.ends_with(".png")
}

/// Encoded images of one split, grouped by class: `files[class]` = (display name, bytes).
type ClassFiles = Vec<Vec<(PathBuf, Vec<u8>)>>;

/// Orders round-robin over classes, applies `limit`, decodes.
fn decode_balanced(
    mut files: ClassFiles,
    limit: Option<usize>,
) -> Result<ClassificationData, DataError> {
    for f in &mut files {
        f.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let total: usize = files.iter().map(Vec::len).sum();
    let n = limit.map_or(total, |l| l.min(total));
    let mut out = CifarImages {
        pixels: Vec::with_capacity(n * CIFAR10_FEATURES),
        labels: Vec::with_capacity(n),
    };
    let mut iters: Vec<_> = files.into_iter().map(|f| f.into_iter()).collect();
    'outer: loop {
        let mut any = false;
        for (label, it) in iters.iter_mut().enumerate() {
            if out.len() >= n {
                break 'outer;
            }
            if let Some((name, bytes)) = it.next() {
                any = true;
                out.pixels.extend(decode_cifar10_image(&bytes, &name)?);
                out.labels.push(label);
            }
        }
        if !any {
            break;
        }
    }
    Ok(out.into_data())
}

/// Loads a split from an image folder: `dir/<split>/<class>/*.jpg|jpeg|png`.
pub fn load_cifar10_image_dir(
    dir: &Path,
    split: Split,
    limit: Option<usize>,
) -> Result<ClassificationData, DataError> {
    let mut files: ClassFiles = vec![Vec::new(); CIFAR10_CLASSES.len()];
    for (label, class) in CIFAR10_CLASSES.iter().enumerate() {
        let class_dir = dir.join(split.name()).join(class);
        if !class_dir.is_dir() {
            return Err(DataError::Missing {
                path: class_dir,
                hint: format!(
                    "missing class folder: a CIFAR10 image folder needs {}/<class>/ for every \
                     class of {}",
                    split.name(),
                    CIFAR10_CLASSES.join(" ")
                ),
            });
        }
        let entries = std::fs::read_dir(&class_dir).map_err(|source| DataError::Io {
            path: class_dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| DataError::Io {
                path: class_dir.clone(),
                source,
            })?;
            let path = entry.path();
            let name = entry.file_name();
            if !path.is_file() || !is_image_name(&name.to_string_lossy()) {
                continue;
            }
            // Reading is cheap (the images are ~1 KB); decoding waits for the limit.
            let bytes = super::read_file(&path)?;
            files[label].push((path, bytes));
        }
        if files[label].is_empty() {
            return Err(DataError::Empty {
                path: class_dir,
                hint: "no .jpg/.jpeg/.png images in this class folder".to_string(),
            });
        }
    }
    decode_balanced(files, limit)
}

/// Reads a split from a tar stream (gzip-compressed or not, detected by magic) holding the
/// image-folder layout (`[./]<split>/<class>/<file>`); `name` is used in error messages
/// (entries are named `name/<entry path>`).
pub fn cifar10_from_tar<R: Read>(
    reader: R,
    name: &Path,
    split: Split,
    limit: Option<usize>,
) -> Result<ClassificationData, DataError> {
    let mut reader = std::io::BufReader::new(reader);
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        match reader.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(source) => {
                return Err(DataError::Io {
                    path: name.to_path_buf(),
                    source,
                });
            }
        }
    }
    let stream = std::io::Cursor::new(magic[..got].to_vec()).chain(reader);
    if is_gzip(&magic[..got]) {
        read_tar(
            flate2::read::MultiGzDecoder::new(stream),
            name,
            split,
            limit,
        )
    } else {
        read_tar(stream, name, split, limit)
    }
}

fn read_tar<R: Read>(
    reader: R,
    name: &Path,
    split: Split,
    limit: Option<usize>,
) -> Result<ClassificationData, DataError> {
    let io_err = |source: std::io::Error| DataError::Io {
        path: name.to_path_buf(),
        source: std::io::Error::new(
            source.kind(),
            format!("not a readable tar(.gz) archive: {source}"),
        ),
    };
    let class_index: BTreeMap<&str, usize> = CIFAR10_CLASSES
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, i))
        .collect();
    let mut files: ClassFiles = vec![Vec::new(); CIFAR10_CLASSES.len()];
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(io_err)?.into_owned();
        let parts: Vec<String> = path
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        // `<split>/<class>/<file>`, at the root or under one folder (`cifar10/train/…`);
        // macOS resource forks (`__MACOSX/`, `._*`) are not images
        let [s, class, file] = match parts.as_slice() {
            [_, rest @ ..] | rest if rest.len() == 3 => [&rest[0], &rest[1], &rest[2]],
            _ => continue,
        };
        if s != split.name()
            || !is_image_name(file)
            || file.starts_with("._")
            || parts.iter().any(|p| p == "__MACOSX")
        {
            continue;
        }
        let Some(&label) = class_index.get(class.as_str()) else {
            continue;
        };
        // the header's size is only a hint (a damaged header must not abort the allocation)
        let mut bytes = Vec::with_capacity((entry.size() as usize).min(1 << 20));
        entry.read_to_end(&mut bytes).map_err(io_err)?;
        files[label].push((name.join(&path), bytes));
    }
    if let Some(missing) = files.iter().position(Vec::is_empty) {
        return Err(DataError::Missing {
            path: name.join(split.name()).join(CIFAR10_CLASSES[missing]),
            hint: format!(
                "missing class folder: the archive has no {}/{}/ images; it needs \
                 {}/<class>/*.jpg|png for every class of {}",
                split.name(),
                CIFAR10_CLASSES[missing],
                split.name(),
                CIFAR10_CLASSES.join(" ")
            ),
        });
    }
    decode_balanced(files, limit)
}

/// Loads a split from a `.tar.gz` / `.tar` archive file, streaming it.
pub fn load_cifar10_tar(
    path: &Path,
    split: Split,
    limit: Option<usize>,
) -> Result<ClassificationData, DataError> {
    let file = std::fs::File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing {
                path: path.to_path_buf(),
                hint: "no such CIFAR10 archive".to_string(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    cifar10_from_tar(file, path, split, limit)
}

/// The embedded real sample: the first 50 training and 20 test images of every class
/// (by file name) of the JPEG CIFAR10 copy, produced by
/// `fixtures/cifar10/make_cifar10_sample.py`.
pub fn embedded_cifar10(split: Split) -> Result<ClassificationData, DataError> {
    cifar10_from_tar(EMBEDDED_SAMPLE, Path::new(EMBEDDED_NAME), split, None)
}

/// Loads a CIFAR10 split from `source`:
/// * `None`: the embedded sample ([`embedded_cifar10`]);
/// * a file: a `.tar.gz` / `.tar` archive of the image-folder layout;
/// * a folder with binary batches (in it or in `cifar-10-batches-bin/`): the binary format
///   (also for a split whose batches are missing, unless it has a `<split>/` image folder: the
///   error then names the missing batch file);
/// * another folder: the image-folder layout.
///
/// `limit` keeps the first `limit` samples (see the module docs for the order).
pub fn load_cifar10(
    source: Option<&Path>,
    split: Split,
    limit: Option<usize>,
) -> Result<ClassificationData, DataError> {
    match source {
        None => {
            let mut d = embedded_cifar10(split)?;
            if let Some(n) = limit {
                d.truncate(n);
            }
            Ok(d)
        }
        Some(p) if p.is_file() => load_cifar10_tar(p, split, limit),
        Some(p) if p.is_dir() => {
            if binary_layout(p, split).is_some() {
                load_cifar10_binary(p, split, limit)
            } else {
                load_cifar10_image_dir(p, split, limit)
            }
        }
        Some(p) => Err(DataError::Missing {
            path: p.to_path_buf(),
            hint: "expected a CIFAR10 folder (binary batches or train/<class>/ images) or a \
                   .tar.gz archive"
                .to_string(),
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Augmentation.

/// Random crop + flip of one CHW image: the image is zero-padded by `pad` pixels on each side
/// and the `h × w` window at offset `(dy, dx)` (each in `0..=2·pad`) is taken, then flipped
/// left-right if `flip`. `(dy, dx) = (pad, pad)` without flip is the identity.
///
/// # Panics
/// If `src.len() != c·h·w` or an offset exceeds `2·pad`.
pub fn augment_chw(
    src: &[f32],
    [c, h, w]: [usize; 3],
    pad: usize,
    dy: usize,
    dx: usize,
    flip: bool,
) -> Vec<f32> {
    assert_eq!(src.len(), c * h * w, "augment_chw: image size");
    assert!(dy <= 2 * pad && dx <= 2 * pad, "augment_chw: offset");
    let mut out = vec![0f32; src.len()];
    for ch in 0..c {
        for y in 0..h {
            // Row y of the crop is row y + dy - pad of the image.
            let sy = (y + dy).wrapping_sub(pad);
            if sy >= h {
                continue;
            }
            for x in 0..w {
                let xo = if flip { w - 1 - x } else { x };
                let sx = (xo + dx).wrapping_sub(pad);
                if sx < w {
                    out[(ch * h + y) * w + x] = src[(ch * h + sy) * w + sx];
                }
            }
        }
    }
    out
}

/// A [`Batcher`] that augments CIFAR10-shaped items (3×32×32 CHW features) with a random
/// crop (padding `pad`, default 4) and a random horizontal flip (probability ½), then batches
/// them like [`ClassificationBatcher`].
///
/// Deterministic: batch number `k` (counted over the batcher and all its clones) draws from
/// an RNG seeded by `(seed, k)`, so with a single data-loader worker a run is reproducible.
#[derive(Clone, Debug)]
pub struct AugmentingBatcher {
    seed: u64,
    pad: usize,
    shape: [usize; 3],
    counter: Arc<AtomicU64>,
}

impl AugmentingBatcher {
    /// CIFAR10 shape (3×32×32), padding 4.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            pad: 4,
            shape: [3, CIFAR10_SIDE, CIFAR10_SIDE],
            counter: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Another crop padding.
    pub fn with_pad(mut self, pad: usize) -> Self {
        self.pad = pad;
        self
    }

    /// Another image shape `[channels, height, width]`.
    pub fn with_shape(mut self, shape: [usize; 3]) -> Self {
        self.shape = shape;
        self
    }

    /// Augments the items of batch number `k` (what [`Batcher::batch`] does with its counter).
    pub fn augment_items(&self, k: u64, items: &mut [ClassificationItem]) {
        let mut rng = crate::topology::derived_rng(self.seed, &[0xC1FA, k]);
        let span = 2 * self.pad + 1;
        for item in items {
            let dy = rng.random_range(0..span);
            let dx = rng.random_range(0..span);
            let flip = rng.random_bool(0.5);
            item.features = augment_chw(&item.features, self.shape, self.pad, dy, dx, flip);
        }
    }
}

impl Batcher<ClassificationItem, ClassificationBatch> for AugmentingBatcher {
    /// # Panics
    /// If an item does not have `c·h·w` features.
    fn batch(&self, mut items: Vec<ClassificationItem>, device: &Device) -> ClassificationBatch {
        let k = self.counter.fetch_add(1, Ordering::Relaxed);
        self.augment_items(k, &mut items);
        ClassificationBatcher::new().batch(items, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn record(label: u8, fill: u8) -> Vec<u8> {
        let mut r = vec![fill; CIFAR10_RECORD_BYTES];
        r[0] = label;
        r
    }

    #[test]
    fn binary_batch_parses_and_normalises() {
        let mut bytes = record(3, 255);
        bytes.extend(record(9, 0));
        let imgs = parse_cifar10_batch(&bytes, "x.bin").unwrap();
        assert_eq!(imgs.labels, vec![3, 9]);
        let d = imgs.into_data();
        assert_eq!(d.len(), 2);
        assert_eq!(d.n_features, 3072);
        let r = d.row(0).unwrap();
        // channel planes: R then G then B
        assert!((r[0] - (1.0 - 0.4914) / 0.2470).abs() < 1e-5);
        assert!((r[1024] - (1.0 - 0.4822) / 0.2435).abs() < 1e-5);
        assert!((r[3071] - (1.0 - 0.4465) / 0.2616).abs() < 1e-5);
        assert!((d.row(1).unwrap()[0] + 0.4914 / 0.2470).abs() < 1e-5);
    }

    #[test]
    fn binary_batch_errors() {
        let mut bytes = record(1, 7);
        bytes.extend(&record(2, 7)[..100]);
        let e = parse_cifar10_batch(&bytes, "data_batch_3.bin").unwrap_err();
        assert!(matches!(e, DataError::Truncated { .. }), "{e}");
        let s = e.to_string();
        assert!(s.contains("data_batch_3.bin"), "{s}");
        assert!(s.contains("6146") && s.contains("3173"), "{s}");
        let e = parse_cifar10_batch(&record(10, 0), "b.bin").unwrap_err();
        assert!(
            matches!(e, DataError::LabelOutOfRange { label: 10, .. }),
            "{e}"
        );
        assert!(matches!(
            parse_cifar10_batch(&[], "e.bin"),
            Err(DataError::Empty { .. })
        ));
    }

    #[test]
    fn binary_dir_loads_all_batches_and_names_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&sub).unwrap();
        for i in 1..=5u8 {
            let mut f = std::fs::File::create(sub.join(format!("data_batch_{i}.bin"))).unwrap();
            f.write_all(&record(i, i)).unwrap();
            f.write_all(&record(0, i)).unwrap();
        }
        let d = load_cifar10(Some(dir.path()), Split::Train, None).unwrap();
        assert_eq!(d.labels, vec![1, 0, 2, 0, 3, 0, 4, 0, 5, 0]);
        let d = load_cifar10(Some(dir.path()), Split::Train, Some(3)).unwrap();
        assert_eq!(d.labels, vec![1, 0, 2]);
        // the test batch is missing: the folder uses the binary layout, so the missing batch
        // file is named (not the image layout's class folders)
        let e = load_cifar10(Some(dir.path()), Split::Test, None).unwrap_err();
        assert!(matches!(e, DataError::Missing { .. }), "{e}");
        let s = e.to_string();
        assert!(
            s.contains("test_batch.bin") && !s.contains("airplane"),
            "{s}"
        );
        // the same with only the test batch present: the train batches are named
        let only_test = tempfile::tempdir().unwrap();
        std::fs::write(only_test.path().join("test_batch.bin"), record(1, 1)).unwrap();
        let e = load_cifar10(Some(only_test.path()), Split::Train, None).unwrap_err();
        assert!(e.to_string().contains("data_batch_1.bin"), "{e}");
        // an image folder for the missing split is still used
        for class in CIFAR10_CLASSES {
            std::fs::create_dir_all(dir.path().join("test").join(class)).unwrap();
        }
        let e = load_cifar10(Some(dir.path()), Split::Test, None).unwrap_err();
        assert!(matches!(e, DataError::Empty { .. }), "{e}");
        // a missing later batch is named
        std::fs::remove_file(sub.join("data_batch_4.bin")).unwrap();
        let e = load_cifar10_binary(dir.path(), Split::Train, None).unwrap_err();
        assert!(e.to_string().contains("data_batch_4.bin"), "{e}");
    }

    /// Archives often hold the splits under one top folder, and macOS adds resource forks.
    #[test]
    fn tar_under_a_top_folder_loads_and_skips_resource_forks() {
        let mut png = Vec::new();
        image::RgbImage::from_pixel(32, 32, image::Rgb([10, 20, 30]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |path: &str, bytes: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            builder.append_data(&mut h, path, bytes).unwrap();
        };
        for class in CIFAR10_CLASSES {
            add(&format!("cifar10/train/{class}/0001.png"), &png);
            add(
                &format!("cifar10/train/{class}/._0001.png"),
                b"resource fork",
            );
            add(&format!("__MACOSX/train/{class}/0002.png"), b"junk");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cifar.tar");
        std::fs::write(&path, builder.into_inner().unwrap()).unwrap();
        let d = load_cifar10_tar(&path, Split::Train, None).unwrap();
        assert_eq!(d.len(), 10);
        assert_eq!(d.class_counts(), vec![1; 10]);
    }

    #[test]
    fn embedded_sample_is_balanced_and_normalised() {
        let train = embedded_cifar10(Split::Train).unwrap();
        let test = embedded_cifar10(Split::Test).unwrap();
        assert_eq!(train.len(), EMBEDDED_CIFAR10_TRAIN_LEN);
        assert_eq!(test.len(), EMBEDDED_CIFAR10_TEST_LEN);
        assert_eq!(train.class_counts(), vec![50; 10]);
        assert_eq!(test.class_counts(), vec![20; 10]);
        // round-robin order: the first ten samples are one per class
        assert_eq!(&train.labels[..10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let l = load_cifar10(None, Split::Train, Some(25)).unwrap();
        assert_eq!(l.len(), 25);
        // real images normalised with the CIFAR10 statistics: mean near 0, std near 1
        let n = train.features.len() as f64;
        let mean = train.features.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = train
            .features
            .iter()
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 0.3, "mean {mean}");
        assert!((0.6..1.5).contains(&var.sqrt()), "std {}", var.sqrt());
    }

    #[test]
    fn augment_identity_shift_and_flip() {
        // 1 channel 2x3 image
        let img = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(augment_chw(&img, [1, 2, 3], 1, 1, 1, false), img.to_vec());
        assert_eq!(
            augment_chw(&img, [1, 2, 3], 1, 1, 1, true),
            vec![3.0, 2.0, 1.0, 6.0, 5.0, 4.0]
        );
        // window moved up-left by one: zero padding enters at the top and left
        assert_eq!(
            augment_chw(&img, [1, 2, 3], 1, 0, 0, false),
            vec![0.0, 0.0, 0.0, 0.0, 1.0, 2.0]
        );
        assert_eq!(
            augment_chw(&img, [1, 2, 3], 1, 2, 2, false),
            vec![5.0, 6.0, 0.0, 0.0, 0.0, 0.0]
        );
    }

    #[test]
    fn augmenting_batcher_shapes_and_determinism() {
        #[allow(deprecated)]
        let device = Device::ndarray();
        let data = embedded_cifar10(Split::Test).unwrap().limit(16);
        let items: Vec<_> = (0..16).map(|i| data.item(i).unwrap()).collect();
        let run = |seed: u64| {
            let b = AugmentingBatcher::new(seed);
            (0..2)
                .map(|_| {
                    let batch = b.batch(items.clone(), &device);
                    assert_eq!(batch.inputs.dims(), [16, 3072]);
                    assert_eq!(batch.targets.dims(), [16]);
                    batch.inputs.into_data().try_to_vec::<f32>().unwrap()
                })
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7), "same seed, same augmentation");
        assert_ne!(a, run(8), "another seed, another augmentation");
        assert_ne!(a[0], a[1], "successive batches draw new crops");
        let original: Vec<f32> = items.iter().flat_map(|i| i.features.clone()).collect();
        assert_ne!(a[0], original);
    }
}
