//! IDX reader for MNIST and Fashion-MNIST.
//!
//! Format (all integers big-endian): a 4-byte magic `0x00000803` (unsigned bytes, 3
//! dimensions) then the image count, rows and columns as `u32`, then `n * rows * cols`
//! pixel bytes; label files have magic `0x00000801`, a `u32` count and `n` label bytes.
//! Files may be raw or gzip (detected by the `1f 8b` magic bytes, not by extension).

use std::path::{Path, PathBuf};

use super::{ClassificationData, DataError, Split, decompress_if_gzip, find_in_dir, read_file};

/// Magic number of an IDX file of unsigned-byte images (3 dimensions).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned-byte labels (1 dimension).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;
/// Number of classes of MNIST and Fashion-MNIST.
pub const MNIST_CLASSES: usize = 10;

/// Images read from an IDX file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub n: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// Pixels, `n * rows * cols` bytes, image-major then row-major.
    pub pixels: Vec<u8>,
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Checks the header (magic + `dims` sizes) and total length of a decompressed IDX buffer.
/// Returns the dimension sizes.
fn check_idx(
    data: &[u8],
    name: &Path,
    magic: u32,
    dims: usize,
    what: &str,
) -> Result<Vec<usize>, DataError> {
    let header = 4 + 4 * dims;
    if data.len() < 4 {
        return Err(DataError::Truncated {
            path: name.to_path_buf(),
            what: format!("{what} header"),
            expected_bytes: header as u64,
            found_bytes: data.len() as u64,
        });
    }
    let found = be_u32(data, 0);
    if found != magic {
        return Err(DataError::BadMagic {
            path: name.to_path_buf(),
            expected: magic,
            found,
        });
    }
    if data.len() < header {
        return Err(DataError::Truncated {
            path: name.to_path_buf(),
            what: format!("{what} header"),
            expected_bytes: header as u64,
            found_bytes: data.len() as u64,
        });
    }
    let sizes: Vec<usize> = (0..dims)
        .map(|d| be_u32(data, 4 + 4 * d) as usize)
        .collect();
    let described = format!(
        "{what} ({})",
        sizes
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(" x ")
    );
    let expected = sizes
        .iter()
        .try_fold(1u64, |acc, &s| acc.checked_mul(s as u64))
        .and_then(|body| body.checked_add(header as u64))
        .ok_or_else(|| DataError::Parse {
            path: name.to_path_buf(),
            line: 1,
            message: format!("{described}: header sizes overflow"),
        })?;
    let len = data.len() as u64;
    if len < expected {
        return Err(DataError::Truncated {
            path: name.to_path_buf(),
            what: described,
            expected_bytes: expected,
            found_bytes: len,
        });
    }
    if len > expected {
        return Err(DataError::TrailingBytes {
            path: name.to_path_buf(),
            what: described,
            expected_bytes: expected,
            found_bytes: len,
        });
    }
    Ok(sizes)
}

/// Parses an IDX image file (raw or gzip bytes). `name` is used in error messages.
pub fn parse_idx_images(bytes: &[u8], name: impl AsRef<Path>) -> Result<IdxImages, DataError> {
    let name = name.as_ref();
    let data = decompress_if_gzip(bytes, name)?;
    let sizes = check_idx(&data, name, IDX_IMAGES_MAGIC, 3, "IDX image file")?;
    let (n, rows, cols) = (sizes[0], sizes[1], sizes[2]);
    let pixels = match data {
        std::borrow::Cow::Owned(mut v) => {
            v.drain(..16);
            v
        }
        std::borrow::Cow::Borrowed(b) => b[16..].to_vec(),
    };
    Ok(IdxImages {
        n,
        rows,
        cols,
        pixels,
    })
}

/// Parses an IDX label file (raw or gzip bytes). `name` is used in error messages.
pub fn parse_idx_labels(bytes: &[u8], name: impl AsRef<Path>) -> Result<Vec<u8>, DataError> {
    let name = name.as_ref();
    let data = decompress_if_gzip(bytes, name)?;
    check_idx(&data, name, IDX_LABELS_MAGIC, 1, "IDX label file")?;
    Ok(data[8..].to_vec())
}

/// Reads an IDX image file (raw or gzip).
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<IdxImages, DataError> {
    let path = path.as_ref();
    parse_idx_images(&read_file(path)?, path)
}

/// Reads an IDX label file (raw or gzip).
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>, DataError> {
    let path = path.as_ref();
    parse_idx_labels(&read_file(path)?, path)
}

/// The accepted file names of the images and labels of a split, in lookup order.
pub fn mnist_file_candidates(split: Split) -> (&'static [&'static str], &'static [&'static str]) {
    match split {
        Split::Train => (
            &["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"],
            &["train-labels-idx1-ubyte", "train-labels-idx1-ubyte.gz"],
        ),
        Split::Test => (
            &["t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"],
            &["t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz"],
        ),
    }
}

/// Combines parsed images and labels into [`ClassificationData`], pixels scaled to `[0, 1]`.
fn combine(
    images: IdxImages,
    images_name: &Path,
    labels: Vec<u8>,
    labels_name: &Path,
    limit: Option<usize>,
) -> Result<ClassificationData, DataError> {
    if images.n != labels.len() {
        return Err(DataError::Mismatch {
            message: format!(
                "{} holds {} images but {} holds {} labels",
                images_name.display(),
                images.n,
                labels_name.display(),
                labels.len()
            ),
        });
    }
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= MNIST_CLASSES)
    {
        return Err(DataError::LabelOutOfRange {
            path: labels_name.to_path_buf(),
            index,
            label: label as usize,
            n_classes: MNIST_CLASSES,
        });
    }
    let n = limit.map_or(images.n, |l| l.min(images.n));
    let n_features = images.rows * images.cols;
    let features = images.pixels[..n * n_features]
        .iter()
        .map(|&p| p as f32 / 255.0)
        .collect();
    let labels = labels[..n].iter().map(|&l| l as usize).collect();
    ClassificationData::new(features, labels, n_features, MNIST_CLASSES)
}

/// Builds MNIST-style data from the bytes (raw or gzip) of an IDX image and label file.
///
/// The names are used in error messages. `limit` keeps the first `limit` samples; the
/// whole files are still validated.
pub fn mnist_from_bytes(
    images: &[u8],
    images_name: impl AsRef<Path>,
    labels: &[u8],
    labels_name: impl AsRef<Path>,
    limit: Option<usize>,
) -> Result<ClassificationData, DataError> {
    let (images_name, labels_name) = (images_name.as_ref(), labels_name.as_ref());
    let images = parse_idx_images(images, images_name)?;
    let labels = parse_idx_labels(labels, labels_name)?;
    combine(images, images_name, labels, labels_name, limit)
}

/// Loads a split of MNIST or Fashion-MNIST from `dir`.
///
/// Looks for `train-images-idx3-ubyte` / `train-labels-idx1-ubyte` (train) or
/// `t10k-images-idx3-ubyte` / `t10k-labels-idx1-ubyte` (test), each with or without
/// `.gz` (the content, not the name, decides whether it is decompressed). Pixels are
/// scaled to `[0, 1]`; labels must be `< 10`. `limit` keeps the first `limit` samples.
pub fn load_mnist_split(
    dir: impl AsRef<Path>,
    split: Split,
    limit: Option<usize>,
) -> Result<ClassificationData, DataError> {
    let dir = dir.as_ref();
    let (image_names, label_names) = mnist_file_candidates(split);
    if !dir.is_dir() {
        return Err(DataError::Missing {
            path: dir.to_path_buf(),
            hint: format!(
                "data directory does not exist or is not a directory; expected it to contain \
                 the MNIST-format {split} images ({}) and labels ({})",
                image_names.join(" or "),
                label_names.join(" or ")
            ),
        });
    }
    let images_path: PathBuf = find_in_dir(
        dir,
        image_names,
        &format!("MNIST-format {split} images (IDX)"),
    )?;
    let labels_path: PathBuf = find_in_dir(
        dir,
        label_names,
        &format!("MNIST-format {split} labels (IDX)"),
    )?;
    let images = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path)?;
    combine(images, &images_path, labels, &labels_path, limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn images_bytes(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [IDX_IMAGES_MAGIC, n, rows, cols] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(pixels);
        v
    }

    fn labels_bytes(labels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [IDX_LABELS_MAGIC, labels.len() as u32] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(labels);
        v
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn fixture(name: &str) -> PathBuf {
        crate::data::fixtures_dir().join("mnist").join(name)
    }

    #[test]
    fn parses_small_raw_and_gzip() {
        let raw = images_bytes(2, 1, 2, &[0, 255, 51, 102]);
        let a = parse_idx_images(&raw, "a").unwrap();
        assert_eq!((a.n, a.rows, a.cols), (2, 1, 2));
        assert_eq!(a.pixels, vec![0, 255, 51, 102]);
        assert_eq!(parse_idx_images(&gzip(&raw), "a.gz").unwrap(), a);

        let d = mnist_from_bytes(&raw, "i", &gzip(&labels_bytes(&[3, 9])), "l", None).unwrap();
        assert_eq!(d.n_features, 2);
        assert_eq!(d.n_classes, 10);
        assert_eq!(d.labels, vec![3, 9]);
        assert_eq!(d.features, vec![0.0, 1.0, 0.2, 0.4]);
        let d1 = mnist_from_bytes(&raw, "i", &labels_bytes(&[3, 9]), "l", Some(1)).unwrap();
        assert_eq!(d1.len(), 1);
        assert_eq!(d1.features, vec![0.0, 1.0]);
    }

    #[test]
    fn real_fixture_gzip_and_raw_agree() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
            let gz = std::fs::read(fixture(&format!("{name}.gz"))).unwrap();
            let raw = crate::data::decompress_if_gzip(&gz, Path::new(name))
                .unwrap()
                .into_owned();
            assert!(!crate::data::is_gzip(&raw));
            std::fs::write(tmp.path().join(name), raw).unwrap();
        }
        // Also a raw file with a misleading ".gz" name: content decides.
        std::fs::copy(
            tmp.path().join("t10k-labels-idx1-ubyte"),
            tmp.path().join("fake.gz"),
        )
        .unwrap();

        let from_gz = load_mnist_split(fixture(""), Split::Test, None).unwrap();
        let from_raw = load_mnist_split(tmp.path(), Split::Test, None).unwrap();
        assert_eq!(from_gz.len(), 500);
        assert_eq!(from_gz, from_raw);
        assert_eq!(
            read_idx_labels(tmp.path().join("fake.gz")).unwrap(),
            from_gz.labels.iter().map(|&l| l as u8).collect::<Vec<_>>()
        );
        let imgs = read_idx_images(tmp.path().join("t10k-images-idx3-ubyte")).unwrap();
        assert_eq!((imgs.n, imgs.rows, imgs.cols), (500, 28, 28));

        let limited = load_mnist_split(tmp.path(), Split::Test, Some(7)).unwrap();
        assert_eq!(limited.len(), 7);
        assert_eq!(limited, from_gz.limit(7));
    }

    #[test]
    fn truncated_file_names_file_and_sizes() {
        let raw = images_bytes(3, 2, 2, &[1; 12]);
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("train-images-idx3-ubyte");
        std::fs::write(&path, &raw[..raw.len() - 5]).unwrap();
        let e = read_idx_images(&path).unwrap_err();
        match &e {
            DataError::Truncated {
                path: p,
                expected_bytes,
                found_bytes,
                ..
            } => {
                assert_eq!(p, &path);
                assert_eq!(*expected_bytes, 28);
                assert_eq!(*found_bytes, 23);
            }
            other => panic!("expected Truncated, got {other:?}"),
        }
        let s = e.to_string();
        assert!(s.contains("train-images-idx3-ubyte") && s.contains("28") && s.contains("23"));

        // Truncated gzip stream of a real file: decompression error naming the file.
        let gz = std::fs::read(fixture("train-labels-idx1-ubyte.gz")).unwrap();
        let gzpath = tmp.path().join("train-labels-idx1-ubyte.gz");
        std::fs::write(&gzpath, &gz[..gz.len() / 2]).unwrap();
        let e = read_idx_labels(&gzpath).unwrap_err();
        assert!(
            matches!(&e, DataError::Decompress { path, .. } if path == &gzpath),
            "{e:?}"
        );

        // Header itself cut short.
        let e = parse_idx_labels(&labels_bytes(&[1])[..6], "short").unwrap_err();
        assert!(
            matches!(
                e,
                DataError::Truncated {
                    expected_bytes: 8,
                    found_bytes: 6,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(matches!(
            parse_idx_labels(&[], "empty").unwrap_err(),
            DataError::Truncated { .. }
        ));
    }

    #[test]
    fn trailing_garbage_is_an_error() {
        let mut raw = labels_bytes(&[1, 2, 3]);
        raw.push(0);
        let e = parse_idx_labels(&gzip(&raw), "labels.gz").unwrap_err();
        assert!(
            matches!(
                &e,
                DataError::TrailingBytes {
                    expected_bytes: 11,
                    found_bytes: 12,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("labels.gz"));
    }

    #[test]
    fn wrong_magic_is_bad_magic() {
        let labels = labels_bytes(&[1, 2]);
        let e = parse_idx_images(&labels, "swapped").unwrap_err();
        match e {
            DataError::BadMagic {
                path,
                expected,
                found,
            } => {
                assert_eq!(path, PathBuf::from("swapped"));
                assert_eq!(expected, IDX_IMAGES_MAGIC);
                assert_eq!(found, IDX_LABELS_MAGIC);
            }
            other => panic!("expected BadMagic, got {other:?}"),
        }
        let e = parse_idx_labels(b"hello world", "text").unwrap_err();
        assert!(matches!(e, DataError::BadMagic { .. }));
    }

    #[test]
    fn label_out_of_range_and_count_mismatch() {
        let imgs = images_bytes(2, 1, 1, &[0, 0]);
        let e = mnist_from_bytes(&imgs, "imgs", &labels_bytes(&[0, 10]), "lbls", None).unwrap_err();
        match &e {
            DataError::LabelOutOfRange {
                path,
                index,
                label,
                n_classes,
            } => {
                assert_eq!(path, &PathBuf::from("lbls"));
                assert_eq!((*index, *label, *n_classes), (1, 10, 10));
            }
            other => panic!("expected LabelOutOfRange, got {other:?}"),
        }
        let e = mnist_from_bytes(&imgs, "imgs", &labels_bytes(&[0]), "lbls", None).unwrap_err();
        assert!(matches!(e, DataError::Mismatch { .. }));
        let s = e.to_string();
        assert!(s.contains("imgs") && s.contains("lbls"), "{s}");
    }

    #[test]
    fn missing_dir_and_files_list_candidate_names() {
        let tmp = tempfile::tempdir().unwrap();
        let e = load_mnist_split(tmp.path().join("nope"), Split::Train, None).unwrap_err();
        assert!(matches!(e, DataError::Missing { .. }));
        let s = e.to_string();
        assert!(
            s.contains("nope")
                && s.contains("train-images-idx3-ubyte")
                && s.contains("train-images-idx3-ubyte.gz")
                && s.contains("train-labels-idx1-ubyte.gz"),
            "{s}"
        );

        // Images present, labels missing.
        std::fs::write(
            tmp.path().join("t10k-images-idx3-ubyte.gz"),
            gzip(&images_bytes(0, 28, 28, &[])),
        )
        .unwrap();
        let e = load_mnist_split(tmp.path(), Split::Test, None).unwrap_err();
        let s = e.to_string();
        assert!(matches!(e, DataError::Missing { .. }));
        assert!(
            s.contains("t10k-labels-idx1-ubyte") && s.contains("t10k-labels-idx1-ubyte.gz"),
            "{s}"
        );

        let e = read_idx_labels(tmp.path().join("absent")).unwrap_err();
        assert!(matches!(e, DataError::Missing { .. }));
    }
}
