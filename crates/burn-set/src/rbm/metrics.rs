//! Topology statistics of an RBM: connections, density and the hidden-degree summary, as a plain
//! struct (for reports) and as a Burn dashboard metric.

use super::model::{RbmOutput, SetRbm};
use crate::set_linear::float_data;
use burn::tensor::Tensor;
use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Adaptor, Metric, MetricAttributes, MetricMetadata, MetricName, NumericAttributes,
    SerializedEntry,
};
use std::sync::Arc;

/// Summary of a degree distribution.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct DegreeSummary {
    /// Smallest degree.
    pub min: f64,
    /// Largest degree.
    pub max: f64,
    /// Mean degree.
    pub mean: f64,
    /// Standard deviation (population).
    pub std: f64,
    /// Units with no connection at all.
    pub isolated: usize,
}

impl DegreeSummary {
    /// Summarises `degrees`.
    pub fn of(degrees: &[f32]) -> Self {
        if degrees.is_empty() {
            return Self::default();
        }
        let n = degrees.len() as f64;
        let mean = degrees.iter().map(|&d| d as f64).sum::<f64>() / n;
        let var = degrees
            .iter()
            .map(|&d| (d as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        Self {
            min: degrees.iter().cloned().fold(f32::INFINITY, f32::min) as f64,
            max: degrees.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64,
            mean,
            std: var.sqrt(),
            isolated: degrees.iter().filter(|&&d| d == 0.0).count(),
        }
    }
}

/// Topology of an RBM's visible×hidden weights.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RbmTopology {
    /// Connections.
    pub connections: u64,
    /// `connections / (n_visible · n_hidden)`.
    pub density: f64,
    /// Connections per hidden unit.
    pub hidden_degree: DegreeSummary,
    /// Connections per visible unit.
    pub visible_degree: DegreeSummary,
}

impl RbmTopology {
    /// Reads the topology of `rbm` (one host round trip of the mask).
    pub fn of(rbm: &SetRbm) -> Self {
        let t = rbm.weights.topology();
        let hid: Vec<f32> = t.out_degrees().into_iter().map(|d| d as f32).collect();
        let vis: Vec<f32> = t.in_degrees().into_iter().map(|d| d as f32).collect();
        Self {
            connections: t.nnz() as u64,
            density: t.density(),
            hidden_degree: DegreeSummary::of(&hid),
            visible_degree: DegreeSummary::of(&vis),
        }
    }
}

/// Input of a [`HiddenDegreeMetric`]: the hidden units' degrees.
pub struct HiddenDegreeInput {
    degrees: Tensor<1>,
}

impl Adaptor<HiddenDegreeInput> for RbmOutput {
    fn adapt(&self) -> HiddenDegreeInput {
        HiddenDegreeInput {
            degrees: self.hidden_degrees.clone(),
        }
    }
}

/// Which statistic of the hidden degrees a [`HiddenDegreeMetric`] shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenDegreeStat {
    /// Largest degree.
    Max,
    /// Standard deviation.
    Std,
    /// Hidden units without connections.
    Isolated,
}

/// Dashboard metric: a statistic of the RBM's hidden-unit degrees (SET makes the degree
/// distribution drift from the Erdős–Rényi binomial towards a heavy tail).
#[derive(Clone)]
pub struct HiddenDegreeMetric {
    stat: HiddenDegreeStat,
    name: MetricName,
    state: NumericMetricState,
}

impl HiddenDegreeMetric {
    /// A metric for `stat`.
    pub fn new(stat: HiddenDegreeStat) -> Self {
        let name = match stat {
            HiddenDegreeStat::Max => "hidden degree max",
            HiddenDegreeStat::Std => "hidden degree std",
            HiddenDegreeStat::Isolated => "isolated hidden units",
        };
        Self {
            stat,
            name: Arc::new(name.to_string()),
            state: NumericMetricState::new(),
        }
    }

    fn format(&self) -> FormatOptions {
        FormatOptions::new(self.name()).precision(if self.stat == HiddenDegreeStat::Std {
            2
        } else {
            0
        })
    }
}

impl Metric for HiddenDegreeMetric {
    type Input = HiddenDegreeInput;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: None,
            higher_is_better: false,
        }
        .into()
    }

    fn update(
        &mut self,
        input: &HiddenDegreeInput,
        _: &MetricMetadata,
    ) -> Result<SerializedEntry, burn::tensor::TensorReadError> {
        let s = DegreeSummary::of(&float_data(input.degrees.clone()));
        let v = match self.stat {
            HiddenDegreeStat::Max => s.max,
            HiddenDegreeStat::Std => s.std,
            HiddenDegreeStat::Isolated => s.isolated as f64,
        };
        self.state.update(v, 1);
        Ok(self.state.compute_update(self.format()))
    }

    fn compute(&mut self) -> Result<SerializedEntry, burn::tensor::TensorReadError> {
        Ok(self.state.compute_final(self.format()))
    }

    fn clear(&mut self) {
        self.state.reset()
    }
}

crate::metrics::numeric_from_state!(HiddenDegreeMetric);
