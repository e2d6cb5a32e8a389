//! In-memory classification data, its Burn [`Dataset`] wrapper and batcher.

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::DataError;

/// A dense classification data set held in memory.
///
/// `features` is row-major: sample `i` occupies `features[i * n_features..(i + 1) * n_features]`.
/// Labels are class indices in `0..n_classes`.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassificationData {
    /// Row-major feature matrix of shape `[len(), n_features]`.
    pub features: Vec<f32>,
    /// One class index per sample.
    pub labels: Vec<usize>,
    /// Number of features per sample.
    pub n_features: usize,
    /// Number of classes; labels lie in `0..n_classes`.
    pub n_classes: usize,
}

/// Per-feature statistics used by [`ClassificationData::standardize`].
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureStats {
    /// Per-feature mean over the training samples.
    pub mean: Vec<f32>,
    /// Per-feature population standard deviation over the training samples
    /// (features with zero spread get 1.0, so they map to 0 after centring).
    pub std: Vec<f32>,
}

impl ClassificationData {
    /// Builds a data set after checking that the shapes and labels are consistent.
    pub fn new(
        features: Vec<f32>,
        labels: Vec<usize>,
        n_features: usize,
        n_classes: usize,
    ) -> Result<Self, DataError> {
        let data = Self {
            features,
            labels,
            n_features,
            n_classes,
        };
        data.validate()?;
        Ok(data)
    }

    /// Checks that `features.len() == len() * n_features` and every label is `< n_classes`.
    pub fn validate(&self) -> Result<(), DataError> {
        let expected = self.labels.len().checked_mul(self.n_features);
        if expected != Some(self.features.len()) {
            return Err(DataError::Mismatch {
                message: format!(
                    "{} labels with {} features each need {} feature values, found {}",
                    self.labels.len(),
                    self.n_features,
                    expected
                        .map_or_else(|| "an overflowing number of".to_string(), |e| e.to_string()),
                    self.features.len()
                ),
            });
        }
        if let Some((index, &label)) = self
            .labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l >= self.n_classes)
        {
            return Err(DataError::Mismatch {
                message: format!(
                    "label {label} of sample {index} is out of range: expected a class in 0..{}",
                    self.n_classes
                ),
            });
        }
        Ok(())
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Keeps only the first `n` samples (all of them if `n >= len()`).
    pub fn limit(mut self, n: usize) -> Self {
        self.truncate(n);
        self
    }

    /// Keeps only the first `n` samples in place (no-op if `n >= len()`).
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.labels.truncate(n);
            self.features.truncate(n * self.n_features);
        }
    }

    /// The features of sample `i`, or `None` if `i >= len()`.
    pub fn row(&self, i: usize) -> Option<&[f32]> {
        if i < self.len() {
            let start = i * self.n_features;
            Some(&self.features[start..start + self.n_features])
        } else {
            None
        }
    }

    /// Sample `i` as an owned item, or `None` if `i >= len()`.
    pub fn item(&self, i: usize) -> Option<ClassificationItem> {
        Some(ClassificationItem {
            features: self.row(i)?.to_vec(),
            label: self.labels[i],
        })
    }

    /// Number of samples per class (length `n_classes`).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.n_classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l) {
                *c += 1;
            }
        }
        counts
    }

    /// Per-feature mean and (population) standard deviation, computed in f64.
    ///
    /// Features with zero spread (or an empty data set) get a standard deviation of 1.
    pub fn feature_stats(&self) -> FeatureStats {
        let d = self.n_features;
        let n = self.len();
        let mut sum = vec![0f64; d];
        let mut sum_sq = vec![0f64; d];
        for row in self.features.chunks_exact(d.max(1)).take(n) {
            for (j, &x) in row.iter().enumerate() {
                let x = x as f64;
                sum[j] += x;
                sum_sq[j] += x * x;
            }
        }
        let mut mean = vec![0f32; d];
        let mut std = vec![1f32; d];
        if n > 0 {
            let nf = n as f64;
            for j in 0..d {
                let m = sum[j] / nf;
                let var = (sum_sq[j] / nf - m * m).max(0.0);
                mean[j] = m as f32;
                let s = var.sqrt();
                std[j] = if s > 1e-12 && s.is_finite() {
                    s as f32
                } else {
                    1.0
                };
            }
        }
        FeatureStats { mean, std }
    }

    /// Applies `(x - mean) / std` per feature using the given statistics.
    pub fn apply_stats(&mut self, stats: &FeatureStats) -> Result<(), DataError> {
        if stats.mean.len() != self.n_features || stats.std.len() != self.n_features {
            return Err(DataError::Mismatch {
                message: format!(
                    "feature statistics for {} features cannot be applied to data with {} features",
                    stats.mean.len(),
                    self.n_features
                ),
            });
        }
        for row in self.features.chunks_exact_mut(self.n_features.max(1)) {
            for ((x, &m), &s) in row.iter_mut().zip(&stats.mean).zip(&stats.std) {
                *x = (*x - m) / s;
            }
        }
        Ok(())
    }

    /// Z-scores the features of `train` and `test` with the statistics of `train`
    /// (so no information leaks from the test split). Returns the statistics used.
    pub fn standardize(
        train: &mut ClassificationData,
        test: &mut ClassificationData,
    ) -> Result<FeatureStats, DataError> {
        if train.n_features != test.n_features {
            return Err(DataError::Mismatch {
                message: format!(
                    "cannot standardize: train has {} features, test has {}",
                    train.n_features, test.n_features
                ),
            });
        }
        let stats = train.feature_stats();
        train.apply_stats(&stats)?;
        test.apply_stats(&stats)?;
        Ok(stats)
    }
}

/// One classification sample.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassificationItem {
    /// The feature vector (length `n_features`).
    pub features: Vec<f32>,
    /// The class index.
    pub label: usize,
}

/// A cheaply clonable, thread-safe [`Dataset`] over shared [`ClassificationData`].
#[derive(Clone, Debug)]
pub struct ClassificationDataset {
    data: Arc<ClassificationData>,
}

impl ClassificationDataset {
    /// Wraps the data in an `Arc`.
    pub fn new(data: ClassificationData) -> Self {
        Self {
            data: Arc::new(data),
        }
    }

    /// Wraps already shared data.
    pub fn from_arc(data: Arc<ClassificationData>) -> Self {
        Self { data }
    }

    /// The underlying data.
    pub fn data(&self) -> &ClassificationData {
        &self.data
    }

    /// Number of features per sample.
    pub fn n_features(&self) -> usize {
        self.data.n_features
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.data.n_classes
    }
}

impl From<ClassificationData> for ClassificationDataset {
    fn from(data: ClassificationData) -> Self {
        Self::new(data)
    }
}

impl Dataset<ClassificationItem> for ClassificationDataset {
    /// Returns the item, or an error wrapping [`DataError::OutOfBounds`] for a bad index.
    fn get(&self, index: usize) -> Result<ClassificationItem, DatasetError> {
        self.data.item(index).ok_or_else(|| {
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

/// A batch of classification samples.
#[derive(Clone, Debug)]
pub struct ClassificationBatch {
    /// Inputs of shape `[batch, n_features]`.
    pub inputs: Tensor<2>,
    /// Class indices of shape `[batch]`.
    pub targets: Tensor<1, Int>,
}

/// Stacks [`ClassificationItem`]s into a [`ClassificationBatch`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ClassificationBatcher;

impl ClassificationBatcher {
    /// Creates the batcher.
    pub fn new() -> Self {
        Self
    }

    /// Batches the items, failing if their feature lengths differ.
    ///
    /// An empty `items` gives tensors of shape `[0, 0]` and `[0]`.
    pub fn try_batch(
        &self,
        items: Vec<ClassificationItem>,
        device: &Device,
    ) -> Result<ClassificationBatch, DataError> {
        let batch = items.len();
        let n_features = items.first().map_or(0, |it| it.features.len());
        let mut inputs = Vec::with_capacity(batch * n_features);
        let mut targets = Vec::with_capacity(batch);
        for (i, item) in items.into_iter().enumerate() {
            if item.features.len() != n_features {
                return Err(DataError::Mismatch {
                    message: format!(
                        "batch item {i} has {} features, item 0 has {n_features}",
                        item.features.len()
                    ),
                });
            }
            let label = i64::try_from(item.label).map_err(|_| DataError::Mismatch {
                message: format!("batch item {i} has a label too large for i64"),
            })?;
            inputs.extend_from_slice(&item.features);
            targets.push(label);
        }
        Ok(ClassificationBatch {
            inputs: Tensor::from_data(TensorData::new(inputs, [batch, n_features]), device),
            targets: Tensor::from_data(TensorData::new(targets, [batch]), device),
        })
    }
}

impl Batcher<ClassificationItem, ClassificationBatch> for ClassificationBatcher {
    /// # Panics
    ///
    /// Panics if the items have different feature lengths, which cannot happen for items
    /// drawn from one [`ClassificationDataset`] (its data is validated on load).
    fn batch(&self, items: Vec<ClassificationItem>, device: &Device) -> ClassificationBatch {
        match self.try_batch(items, device) {
            Ok(batch) => batch,
            Err(e) => panic!("ClassificationBatcher: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> ClassificationData {
        ClassificationData::new(
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
            vec![0, 2, 1],
            3,
            3,
        )
        .unwrap()
    }

    #[allow(deprecated)] // Device::ndarray is deprecated in Burn 0.22 but still the reference CPU backend.
    fn device() -> Device {
        Device::ndarray()
    }

    #[test]
    fn new_validates_shapes_and_labels() {
        assert!(matches!(
            ClassificationData::new(vec![1.0; 5], vec![0, 1], 3, 2),
            Err(DataError::Mismatch { .. })
        ));
        let e = ClassificationData::new(vec![1.0; 6], vec![0, 2], 3, 2).unwrap_err();
        assert!(e.to_string().contains("label 2 of sample 1"), "{e}");
    }

    #[test]
    fn len_limit_item() {
        let d = toy();
        assert_eq!(d.len(), 3);
        assert!(!d.is_empty());
        assert_eq!(d.row(1), Some(&[4.0, 5.0, 6.0][..]));
        assert_eq!(
            d.item(2),
            Some(ClassificationItem {
                features: vec![7.0, 8.0, 9.0],
                label: 1
            })
        );
        assert_eq!(d.item(3), None);
        assert_eq!(d.class_counts(), vec![1, 1, 1]);
        let l = d.clone().limit(2);
        assert_eq!(l.len(), 2);
        assert_eq!(l.features, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(d.clone().limit(10), d);
        assert!(d.limit(0).is_empty());
    }

    #[test]
    fn standardize_uses_train_statistics() {
        let mut train =
            ClassificationData::new(vec![1.0, 5.0, 3.0, 5.0], vec![0, 1], 2, 2).unwrap();
        let mut test = ClassificationData::new(vec![5.0, 7.0], vec![1], 2, 2).unwrap();
        let stats = ClassificationData::standardize(&mut train, &mut test).unwrap();
        assert_eq!(stats.mean, vec![2.0, 5.0]);
        // Second feature is constant: std falls back to 1.
        assert_eq!(stats.std, vec![1.0, 1.0]);
        assert_eq!(train.features, vec![-1.0, 0.0, 1.0, 0.0]);
        assert_eq!(test.features, vec![3.0, 2.0]);

        let mut other = ClassificationData::new(vec![1.0], vec![0], 1, 2).unwrap();
        assert!(ClassificationData::standardize(&mut train, &mut other).is_err());
    }

    #[test]
    fn dataset_get_and_out_of_bounds() {
        let ds = ClassificationDataset::new(toy());
        let ds2 = ds.clone();
        assert_eq!(ds2.len(), 3);
        assert_eq!(ds2.get(1).unwrap().label, 2);
        let err = ds.get(3).unwrap_err();
        assert!(err.to_string().contains("out of bounds"), "{err}");
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ClassificationDataset>();
    }

    #[test]
    fn batcher_shapes_and_values() {
        let ds = ClassificationDataset::new(toy());
        let items = vec![ds.get(2).unwrap(), ds.get(0).unwrap()];
        let batch = ClassificationBatcher::new().batch(items, &device());
        assert_eq!(batch.inputs.dims(), [2, 3]);
        assert_eq!(batch.targets.dims(), [2]);
        let inputs = batch.inputs.into_data().try_to_vec_as::<f32>().unwrap();
        assert_eq!(inputs, vec![7.0, 8.0, 9.0, 1.0, 2.0, 3.0]);
        let targets = batch.targets.into_data().try_to_vec_as::<i64>().unwrap();
        assert_eq!(targets, vec![1, 0]);
    }

    #[test]
    fn works_with_burn_data_loader() {
        use burn::data::dataloader::DataLoaderBuilder;
        let data = crate::data::embedded_mnist(crate::data::Split::Test)
            .unwrap()
            .limit(10);
        let expected_labels: Vec<i64> = data.labels.iter().map(|&l| l as i64).collect();
        let loader = DataLoaderBuilder::new(ClassificationBatcher::new())
            .batch_size(4)
            .set_device(device())
            .build(ClassificationDataset::new(data));
        assert_eq!(loader.num_items(), 10);
        let mut sizes = Vec::new();
        let mut labels = Vec::new();
        for batch in loader.iter() {
            let batch = batch.unwrap();
            let [b, d] = batch.inputs.dims();
            assert_eq!(d, 784);
            sizes.push(b);
            labels.extend(batch.targets.into_data().try_to_vec_as::<i64>().unwrap());
        }
        assert_eq!(sizes, vec![4, 4, 2]);
        assert_eq!(labels, expected_labels);
    }

    #[test]
    fn try_batch_rejects_ragged_items() {
        let items = vec![
            ClassificationItem {
                features: vec![1.0, 2.0],
                label: 0,
            },
            ClassificationItem {
                features: vec![1.0],
                label: 1,
            },
        ];
        assert!(matches!(
            ClassificationBatcher.try_batch(items, &device()),
            Err(DataError::Mismatch { .. })
        ));
    }
}
