//! HIGGS reader.
//!
//! One event per line: the label (0 or 1) then 28 features. Fields are separated either
//! by commas (UCI `HIGGS.csv`, where the label is written as a float such as
//! `1.000000000000000000e+00`) or by whitespace (the LightGBM example files
//! `binary.train` / `binary.test`, label `1` or `0`). Blank lines are skipped. Input may
//! be raw or gzip (detected by the `1f 8b` magic bytes). Files are streamed, so a `limit`
//! on the full 11M-row UCI file only reads the rows it keeps.

use std::io::BufRead;
use std::path::Path;

use super::{ClassificationData, DataError, Split, find_in_dir, is_gzip, open_maybe_gzip};

/// Number of features per HIGGS event.
pub const HIGGS_FEATURES: usize = 28;
const HIGGS_CLASSES: usize = 2;

/// Parses HIGGS text from bytes (raw or gzip). `name` is used in error messages.
/// `limit` keeps the first `limit` events (and stops reading there).
pub fn parse_higgs(
    bytes: &[u8],
    name: impl AsRef<Path>,
    limit: Option<usize>,
) -> Result<ClassificationData, DataError> {
    let name = name.as_ref();
    if is_gzip(bytes) {
        let decoder = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(bytes));
        parse_lines(decoder, name, limit, true)
    } else {
        parse_lines(bytes, name, limit, false)
    }
}

/// Parses already decompressed HIGGS text from a reader. `name` is used in error messages.
pub fn parse_higgs_reader<R: BufRead>(
    reader: R,
    name: impl AsRef<Path>,
    limit: Option<usize>,
) -> Result<ClassificationData, DataError> {
    parse_lines(reader, name.as_ref(), limit, false)
}

/// Loads a HIGGS file (raw or gzip, comma or whitespace separated).
pub fn load_higgs(
    path: impl AsRef<Path>,
    limit: Option<usize>,
) -> Result<ClassificationData, DataError> {
    let path = path.as_ref();
    let (reader, gz) = open_maybe_gzip(path)?;
    parse_lines(reader, path, limit, gz)
}

/// The accepted file names of a split in a HIGGS directory, in lookup order.
pub fn higgs_file_candidates(split: Split) -> &'static [&'static str] {
    match split {
        Split::Train => &["binary.train", "binary.train.gz"],
        Split::Test => &["binary.test", "binary.test.gz"],
    }
}

/// Loads a split of HIGGS from a directory laid out like the LightGBM example
/// (`binary.train[.gz]`, `binary.test[.gz]`).
///
/// The full UCI `HIGGS.csv.gz` is a single file: load it with [`load_higgs`] and split it
/// (the usual protocol keeps the last 500,000 events for testing).
pub fn load_higgs_dir(
    dir: impl AsRef<Path>,
    split: Split,
    limit: Option<usize>,
) -> Result<ClassificationData, DataError> {
    let path = find_in_dir(
        dir.as_ref(),
        higgs_file_candidates(split),
        &format!(
            "HIGGS {split} split (one event per line: label 0/1 then 28 features; a single \
             UCI HIGGS.csv[.gz] is not split automatically, load it with load_higgs)"
        ),
    )?;
    load_higgs(path, limit)
}

/// Stores the first `out.len()` items in `out`; returns the total number of items.
fn split_into<'a>(items: impl Iterator<Item = &'a str>, out: &mut [&'a str]) -> usize {
    let mut count = 0;
    for item in items {
        if let Some(slot) = out.get_mut(count) {
            *slot = item;
        }
        count += 1;
    }
    count
}

fn parse_lines<R: BufRead>(
    mut reader: R,
    name: &Path,
    limit: Option<usize>,
    gz: bool,
) -> Result<ClassificationData, DataError> {
    let max = limit.unwrap_or(usize::MAX);
    let mut features: Vec<f32> = Vec::new();
    let mut labels: Vec<usize> = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let mut line_no = 0usize;

    while labels.len() < max {
        buf.clear();
        let read = reader.read_until(b'\n', &mut buf).map_err(|source| {
            if gz {
                DataError::Decompress {
                    path: name.to_path_buf(),
                    source,
                }
            } else {
                DataError::Io {
                    path: name.to_path_buf(),
                    source,
                }
            }
        })?;
        if read == 0 {
            break;
        }
        line_no += 1;
        let parse_err = |message: String| DataError::Parse {
            path: name.to_path_buf(),
            line: line_no,
            message,
        };
        let text = std::str::from_utf8(&buf)
            .map_err(|e| parse_err(format!("not valid UTF-8 text ({e})")))?
            .trim();
        if text.is_empty() {
            continue;
        }

        let mut fields = [""; HIGGS_FEATURES + 1];
        let n_fields = if text.contains(',') {
            split_into(text.split(',').map(str::trim), &mut fields)
        } else {
            split_into(text.split_whitespace(), &mut fields)
        };
        if n_fields != HIGGS_FEATURES + 1 {
            return Err(parse_err(format!(
                "expected {} fields (label then {HIGGS_FEATURES} features, separated by \
                 whitespace or commas), found {}",
                HIGGS_FEATURES + 1,
                n_fields
            )));
        }

        let label_field = fields[0];
        let label = match label_field.parse::<f64>() {
            Ok(0.0) => 0,
            Ok(1.0) => 1,
            Ok(_) => {
                return Err(parse_err(format!("label {label_field:?} is not 0 or 1")));
            }
            Err(_) => {
                return Err(parse_err(format!(
                    "label {label_field:?} is not a number (expected 0 or 1)"
                )));
            }
        };
        for (j, field) in fields[1..].iter().enumerate() {
            match field.parse::<f32>() {
                Ok(v) if v.is_finite() => features.push(v),
                Ok(_) => {
                    return Err(parse_err(format!(
                        "feature {} ({field:?}) is not a finite number",
                        j + 1
                    )));
                }
                Err(_) if field.is_empty() => {
                    return Err(parse_err(format!("feature {} is empty", j + 1)));
                }
                Err(_) => {
                    return Err(parse_err(format!(
                        "feature {} ({field:?}) is not a number",
                        j + 1
                    )));
                }
            }
        }
        labels.push(label);
    }

    if labels.is_empty() && max > 0 {
        return Err(DataError::Empty {
            path: name.to_path_buf(),
            hint: format!("expected lines of a label (0/1) then {HIGGS_FEATURES} features"),
        });
    }
    ClassificationData::new(features, labels, HIGGS_FEATURES, HIGGS_CLASSES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

    fn row(label: &str, sep: &str) -> String {
        let mut s = label.to_string();
        for j in 0..HIGGS_FEATURES {
            s.push_str(sep);
            s.push_str(&format!("{}.5", j));
        }
        s
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn parse_err(text: &str) -> (usize, String) {
        match parse_higgs(text.as_bytes(), "h.txt", None) {
            Err(DataError::Parse {
                path,
                line,
                message,
            }) => {
                assert_eq!(path, PathBuf::from("h.txt"));
                (line, message)
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn comma_space_and_tab_formats_agree() {
        let spaces = format!("{}\n{}\n", row("1", " "), row("0", "  "));
        let tabs = format!("{}\n{}\n", row("1", "\t"), row("0", "\t"));
        let commas = format!(
            "{}\r\n{}\r\n",
            row("1.000000000000000000e+00", ","),
            row("0.000000000000000000e+00", ", ")
        );
        let a = parse_higgs(spaces.as_bytes(), "s", None).unwrap();
        let b = parse_higgs(tabs.as_bytes(), "t", None).unwrap();
        let c = parse_higgs(commas.as_bytes(), "c", None).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a.labels, vec![1, 0]);
        assert_eq!(a.n_features, HIGGS_FEATURES);
        assert_eq!(a.n_classes, 2);
        assert_eq!(a.features[..3], [0.5, 1.5, 2.5]);
        assert_eq!(a, b);
        assert_eq!(a, c);
        // gzip bytes parse the same.
        assert_eq!(
            parse_higgs(&gzip(commas.as_bytes()), "c.gz", None).unwrap(),
            a
        );
        assert_eq!(
            parse_higgs_reader(spaces.as_bytes(), "r", Some(1))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn bad_field_count_names_line() {
        let text = format!("{}\n\n{} 9.0\n", row("1", " "), row("0", " "));
        let (line, msg) = parse_err(&text);
        assert_eq!(line, 3);
        assert!(
            msg.contains("expected 29 fields") && msg.contains("found 30"),
            "{msg}"
        );
        let e = parse_higgs(text.as_bytes(), "h.txt", None).unwrap_err();
        assert!(e.to_string().starts_with("h.txt:3:"), "{e}");

        let short = "1 2 3\n";
        assert_eq!(parse_err(short).0, 1);
        // An empty field between commas is a wrong value, not a silently merged one.
        let (line, msg) = parse_err(&row("1", ",").replacen(",0.5", ",", 1));
        assert_eq!(line, 1);
        assert!(msg.contains("feature 1 is empty"), "{msg}");
    }

    #[test]
    fn non_numeric_and_bad_labels_name_line() {
        let text = format!(
            "{}\n{}\n",
            row("0", " "),
            row("1", " ").replace("3.5", "abc")
        );
        let (line, msg) = parse_err(&text);
        assert_eq!(line, 2);
        assert!(msg.contains("feature 4") && msg.contains("abc"), "{msg}");

        let (line, msg) = parse_err(&row("2", " "));
        assert_eq!(line, 1);
        assert!(msg.contains("not 0 or 1"), "{msg}");
        let (_, msg) = parse_err(&row("0.5", ","));
        assert!(msg.contains("not 0 or 1"), "{msg}");
        let (_, msg) = parse_err(&row("yes", " "));
        assert!(msg.contains("not a number"), "{msg}");
        let (_, msg) = parse_err(&row("1", " ").replace("5.5", "nan"));
        assert!(msg.contains("not a finite number"), "{msg}");
        let mut bytes = format!("{}\n", row("1", " ")).into_bytes();
        bytes.extend_from_slice(b"1 \xff\xfe\n");
        match parse_higgs(&bytes, "bin", None) {
            Err(DataError::Parse { line, message, .. }) => {
                assert_eq!(line, 2);
                assert!(message.contains("UTF-8"), "{message}");
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn empty_file_is_an_error_but_limit_zero_is_not() {
        assert!(matches!(
            parse_higgs(b"\n\n", "empty", None),
            Err(DataError::Empty { .. })
        ));
        assert!(parse_higgs(b"", "empty", Some(0)).unwrap().is_empty());
    }

    #[test]
    fn limit_stops_before_bad_lines() {
        let text = format!("{}\n{}\ngarbage\n", row("1", " "), row("0", " "));
        assert_eq!(parse_higgs(text.as_bytes(), "h", Some(2)).unwrap().len(), 2);
        assert!(parse_higgs(text.as_bytes(), "h", Some(3)).is_err());
    }

    #[test]
    fn load_files_raw_and_gzip_by_magic() {
        let tmp = tempfile::tempdir().unwrap();
        let text = format!("{}\n{}\n", row("1", " "), row("0", " "));
        // Gzip content under a name without ".gz", raw content under a ".gz" name.
        let gz_path = tmp.path().join("binary.train");
        std::fs::write(&gz_path, gzip(text.as_bytes())).unwrap();
        let raw_path = tmp.path().join("binary.test.gz");
        std::fs::write(&raw_path, text.as_bytes()).unwrap();
        let a = load_higgs(&gz_path, None).unwrap();
        let b = load_higgs(&raw_path, None).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a, b);
        assert_eq!(load_higgs_dir(tmp.path(), Split::Train, None).unwrap(), a);
        assert_eq!(
            load_higgs_dir(tmp.path(), Split::Test, Some(1))
                .unwrap()
                .len(),
            1
        );

        // A truncated gzip stream is a decompression error naming the file.
        let full = gzip(text.repeat(50).as_bytes());
        let cut = tmp.path().join("cut.gz");
        std::fs::write(&cut, &full[..full.len() - 10]).unwrap();
        let e = load_higgs(&cut, None).unwrap_err();
        assert!(
            matches!(&e, DataError::Decompress { path, .. } if path == &cut),
            "{e:?}"
        );
    }

    #[test]
    fn missing_dir_lists_candidates() {
        let tmp = tempfile::tempdir().unwrap();
        let e = load_higgs_dir(tmp.path(), Split::Test, None).unwrap_err();
        assert!(matches!(e, DataError::Missing { .. }));
        let s = e.to_string();
        assert!(
            s.contains("binary.test") && s.contains("binary.test.gz"),
            "{s}"
        );
        let e = load_higgs(tmp.path().join("HIGGS.csv.gz"), None).unwrap_err();
        assert!(e.to_string().contains("HIGGS.csv.gz"), "{e}");
    }

    #[test]
    fn real_fixture_files() {
        let dir = crate::data::fixtures_dir().join("higgs");
        let train = load_higgs_dir(&dir, Split::Train, None).unwrap();
        let test = load_higgs_dir(&dir, Split::Test, None).unwrap();
        assert_eq!(train.len(), 1000);
        assert_eq!(test.len(), 200);
        // First line of the HIGGS sample.
        assert_eq!(train.labels[0], 1);
        assert_eq!(train.features[..3], [0.869, -0.635, 0.226]);
        let counts = train.class_counts();
        assert!(counts[0] > 300 && counts[1] > 300, "{counts:?}");
    }
}
