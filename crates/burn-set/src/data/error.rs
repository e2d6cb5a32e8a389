//! Errors raised while loading data sets.
//!
//! Every variant that concerns a file names it (for embedded data the "path" is a
//! display name such as `<embedded>/mnist/train-images-idx3-ubyte.gz`) and says what was
//! expected, so that a failing run can be fixed without reading the source.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Error raised by the data loaders.
///
/// The loaders never panic on malformed input and never silently return fewer samples
/// than the file describes: any inconsistency is reported through one of these variants.
#[derive(Debug)]
pub enum DataError {
    /// A required file or directory does not exist; `hint` says what was looked for.
    Missing {
        /// The file or directory that was searched.
        path: PathBuf,
        /// What was expected there (for example the candidate file names).
        hint: String,
    },
    /// Reading the file failed at the operating-system level.
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file starts with gzip magic bytes but does not decompress cleanly.
    Decompress {
        /// The file being decompressed.
        path: PathBuf,
        /// The underlying error reported by the decoder.
        source: io::Error,
    },
    /// The file does not start with the magic number of the expected format.
    BadMagic {
        /// The file being parsed.
        path: PathBuf,
        /// The expected magic number.
        expected: u32,
        /// The magic number found in the file.
        found: u32,
    },
    /// The file holds fewer bytes than its header promises.
    Truncated {
        /// The file being parsed.
        path: PathBuf,
        /// What was being read, e.g. "IDX image file (60000 images of 28x28)".
        what: String,
        /// Number of (decompressed) bytes the header promises.
        expected_bytes: u64,
        /// Number of (decompressed) bytes actually present.
        found_bytes: u64,
    },
    /// The file holds more bytes than its header describes.
    TrailingBytes {
        /// The file being parsed.
        path: PathBuf,
        /// What was being read.
        what: String,
        /// Number of (decompressed) bytes the header describes.
        expected_bytes: u64,
        /// Number of (decompressed) bytes actually present.
        found_bytes: u64,
    },
    /// A text record could not be parsed.
    Parse {
        /// The file being parsed.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A label is outside the valid range of classes.
    LabelOutOfRange {
        /// The file holding the label.
        path: PathBuf,
        /// 0-based index of the sample.
        index: usize,
        /// The label found.
        label: usize,
        /// Number of classes; valid labels are `0..n_classes`.
        n_classes: usize,
    },
    /// The file is well formed but holds no samples.
    Empty {
        /// The file being parsed.
        path: PathBuf,
        /// What was expected.
        hint: String,
    },
    /// Two pieces of data that must agree do not (e.g. image and label counts).
    Mismatch {
        /// Description of the disagreement, naming the files involved.
        message: String,
    },
    /// A data set has no embedded sample and no data directory was given.
    NotEmbedded {
        /// The data set name.
        dataset: String,
        /// What to do instead.
        hint: String,
    },
    /// An unknown data set name was given.
    UnknownDataset {
        /// The name given.
        name: String,
        /// The accepted names.
        expected: String,
    },
    /// An item index beyond the end of a data set was requested.
    OutOfBounds {
        /// The index requested.
        index: usize,
        /// The number of items in the data set.
        len: usize,
    },
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Missing { path, hint } => {
                write!(f, "{}: not found: {hint}", path.display())
            }
            DataError::Io { path, source } => {
                write!(f, "{}: cannot read file: {source}", path.display())
            }
            DataError::Decompress { path, source } => write!(
                f,
                "{}: file starts with gzip magic bytes but is not a valid gzip stream \
                 (corrupt or truncated download?): {source}",
                path.display()
            ),
            DataError::BadMagic {
                path,
                expected,
                found,
            } => write!(
                f,
                "{}: bad magic number: expected {expected:#010x}, found {found:#010x}",
                path.display()
            ),
            DataError::Truncated {
                path,
                what,
                expected_bytes,
                found_bytes,
            } => write!(
                f,
                "{}: truncated {what}: expected {expected_bytes} bytes (after decompression), \
                 found only {found_bytes} bytes",
                path.display()
            ),
            DataError::TrailingBytes {
                path,
                what,
                expected_bytes,
                found_bytes,
            } => write!(
                f,
                "{}: unexpected trailing data after {what}: expected exactly {expected_bytes} \
                 bytes (after decompression), found {found_bytes} bytes",
                path.display()
            ),
            DataError::Parse {
                path,
                line,
                message,
            } => write!(f, "{}:{line}: {message}", path.display()),
            DataError::LabelOutOfRange {
                path,
                index,
                label,
                n_classes,
            } => write!(
                f,
                "{}: label {label} of sample {index} is out of range: expected a class in 0..{n_classes}",
                path.display()
            ),
            DataError::Empty { path, hint } => {
                write!(f, "{}: contains no samples: {hint}", path.display())
            }
            DataError::Mismatch { message } => write!(f, "inconsistent data: {message}"),
            DataError::NotEmbedded { dataset, hint } => {
                write!(f, "no embedded sample of {dataset}: {hint}")
            }
            DataError::UnknownDataset { name, expected } => {
                write!(f, "unknown data set {name:?}: expected one of {expected}")
            }
            DataError::OutOfBounds { index, len } => write!(
                f,
                "item index {index} out of bounds for a data set of {len} items"
            ),
        }
    }
}

impl std::error::Error for DataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DataError::Io { source, .. } | DataError::Decompress { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl DataError {
    /// The file this error concerns, if any.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            DataError::Missing { path, .. }
            | DataError::Io { path, .. }
            | DataError::Decompress { path, .. }
            | DataError::BadMagic { path, .. }
            | DataError::Truncated { path, .. }
            | DataError::TrailingBytes { path, .. }
            | DataError::Parse { path, .. }
            | DataError::LabelOutOfRange { path, .. }
            | DataError::Empty { path, .. } => Some(path),
            DataError::Mismatch { .. }
            | DataError::NotEmbedded { .. }
            | DataError::UnknownDataset { .. }
            | DataError::OutOfBounds { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_and_expectation() {
        let e = DataError::Truncated {
            path: PathBuf::from("/data/train-images-idx3-ubyte.gz"),
            what: "IDX image file".into(),
            expected_bytes: 100,
            found_bytes: 10,
        };
        let s = e.to_string();
        assert!(s.contains("/data/train-images-idx3-ubyte.gz"), "{s}");
        assert!(s.contains("100") && s.contains("10"), "{s}");
        assert_eq!(
            e.path(),
            Some(std::path::Path::new("/data/train-images-idx3-ubyte.gz"))
        );

        let e = DataError::BadMagic {
            path: PathBuf::from("x"),
            expected: 0x803,
            found: 0x801,
        };
        assert!(e.to_string().contains("0x00000803"), "{e}");
    }

    #[test]
    fn io_error_has_source() {
        use std::error::Error;
        let e = DataError::Io {
            path: PathBuf::from("x"),
            source: io::Error::new(io::ErrorKind::NotFound, "gone"),
        };
        assert!(e.source().is_some());
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<DataError>();
    }
}
