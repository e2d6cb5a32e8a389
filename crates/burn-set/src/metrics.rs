//! Dashboard metrics for SET: connections, density and connections changed by the last
//! evolution, read from a [`SetCallback`]'s shared statistics.

use crate::callback::SetCallback;
use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, NumericAttributes, SerializedEntry,
};
use std::sync::Arc;

/// Which statistic a [`TopologyMetric`] shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopologyStat {
    /// Connections in all SET layers.
    Connections,
    /// Density of the SET layers, in %.
    Density,
    /// Connections changed by the last evolution.
    Changed,
}

/// A numeric dashboard metric that shows one topology statistic of the model being trained.
#[derive(Clone)]
pub struct TopologyMetric {
    callback: SetCallback,
    stat: TopologyStat,
    name: MetricName,
    state: NumericMetricState,
}

impl TopologyMetric {
    /// A metric for `stat`, fed by `callback`.
    pub fn new(callback: &SetCallback, stat: TopologyStat) -> Self {
        let name = match stat {
            TopologyStat::Connections => "SET connections",
            TopologyStat::Density => "SET density %",
            TopologyStat::Changed => "SET changed",
        };
        Self {
            callback: callback.clone(),
            stat,
            name: Arc::new(name.to_string()),
            state: NumericMetricState::new(),
        }
    }

    fn current(&self) -> f64 {
        let s = self.callback.stats();
        match self.stat {
            TopologyStat::Connections => s.connections as f64,
            TopologyStat::Density => 100.0 * s.density,
            TopologyStat::Changed => s.changed_last as f64,
        }
    }

    fn format(&self) -> FormatOptions {
        let precision = if self.stat == TopologyStat::Density {
            3
        } else {
            0
        };
        FormatOptions::new(self.name()).precision(precision)
    }
}

impl Metric for TopologyMetric {
    type Input = ();

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
        _: &(),
        _: &MetricMetadata,
    ) -> Result<SerializedEntry, burn::tensor::TensorReadError> {
        let v = self.current();
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

/// Burn's `Numeric` for a metric whose numbers live in a `NumericMetricState` field `state`.
macro_rules! numeric_from_state {
    ($metric:ty) => {
        impl burn::train::metric::Numeric for $metric {
            fn value(&self) -> Option<burn::train::metric::NumericEntry> {
                Some(self.state.current_value())
            }
            fn running_value(&self) -> Option<burn::train::metric::NumericEntry> {
                Some(self.state.running_value())
            }
            fn final_value(&self) -> burn::train::metric::NumericEntry {
                self.state.final_value()
            }
        }
    };
}
pub(crate) use numeric_from_state;

numeric_from_state!(TopologyMetric);
