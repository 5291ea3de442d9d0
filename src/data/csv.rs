//! CSV image datasets in the Kaggle MNIST layout: one image per line, the label first, then
//! `rows·cols` pixel values 0..=255, comma-separated; an optional header line (one that does
//! not start with a digit, e.g. `label,pixel0,…`) is skipped. Validated like the IDX reader:
//! every problem is an [`Error::Data`] naming the file, the line and the field.

use std::path::Path;

use super::Dataset;
use crate::error::{Error, Result};

/// Reads a CSV dataset of `rows × cols` images with labels `< classes`.
///
/// # Examples
///
/// ```
/// let path = std::env::temp_dir().join(format!("wgcnn-doc-{}.csv", std::process::id()));
/// std::fs::write(&path, "label,p0,p1,p2,p3\n3,0,255,255,0\n7,1,2,3,4\n")?;
/// let ds = wgcnn::data::read_csv(&path, "toy", 2, 2, 10)?;
/// assert_eq!((ds.n, ds.labels.clone(), ds.image(1).to_vec()), (2, vec![3, 7], vec![1, 2, 3, 4]));
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_csv(
    path: &Path,
    name: &str,
    rows: usize,
    cols: usize,
    classes: usize,
) -> Result<Dataset> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let err = |line: usize, msg: String| Error::Data {
        path: path.to_path_buf(),
        msg: format!("line {line}: {msg}"),
    };
    let want = rows * cols + 1;
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        let header = i == 0 && !line.starts_with(|c: char| c.is_ascii_digit());
        if line.is_empty() || header {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != want {
            let msg = format!(
                "expected {want} fields (a label and {rows}×{cols} pixels), got {}",
                fields.len()
            );
            return Err(err(line_no, msg));
        }
        let label: usize = fields[0].parse().map_err(|_| {
            err(
                line_no,
                format!("label '{}' is not a whole number", fields[0]),
            )
        })?;
        if label >= classes {
            return Err(err(
                line_no,
                format!("label {label} is out of range for {classes} classes"),
            ));
        }
        labels.push(label as u8);
        for (f, v) in fields[1..].iter().enumerate() {
            let px: u8 = v.parse().map_err(|_| {
                err(
                    line_no,
                    format!("field {}: '{v}' is not a pixel value 0..=255", f + 2),
                )
            })?;
            images.push(px);
        }
    }
    if labels.is_empty() {
        return Err(Error::Data {
            path: path.to_path_buf(),
            msg: "no images".into(),
        });
    }
    Dataset::new(name, images, labels, rows, cols, classes)
}
