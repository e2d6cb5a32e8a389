//! A plain-text renderer for Burn's `Learner` when stdout is not a terminal (logs, CI, pipes):
//! one line per split and epoch with each metric's epoch value, where Burn's own non-terminal
//! renderer prints a `ProgressSnapshot { … }` debug line for every batch. On a terminal Burn's
//! TUI dashboard stays.

use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::{MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};
use std::collections::HashMap;
use std::io::IsTerminal;

/// One line per finished split (`epoch 3/10 train: Loss 0.412, Accuracy 87.31 %`), each
/// metric's last value of the split (Burn sends the epoch's aggregate last), in the order Burn
/// registers the metrics; an evaluation's test splits print `test 'name': …`. Nothing is
/// printed while a split runs.
#[derive(Debug, Default)]
pub struct EpochLogRenderer {
    names: HashMap<MetricId, String>,
    order: Vec<MetricId>,
    values: HashMap<MetricId, String>,
    label: String,
    split: String,
    epoch: usize,
    epochs: usize,
    /// In an evaluation's test split (no epoch).
    testing: bool,
}

impl EpochLogRenderer {
    /// A renderer that writes to stdout.
    pub fn new() -> Self {
        Self::default()
    }

    fn record(&mut self, state: MetricState) {
        let entry = match state {
            MetricState::Generic(e) | MetricState::Numeric(e, _) => e,
        };
        if !self.names.contains_key(&entry.metric_id) {
            return;
        }
        self.values
            .insert(entry.metric_id, entry.serialized_entry.formatted);
    }

    /// The line for the split that just ended (`None` when no metric reported a value); clears
    /// the split's values.
    fn split_line(&mut self) -> Option<String> {
        let values: Vec<String> = self
            .order
            .iter()
            .filter_map(|id| {
                let v = self.values.get(id)?;
                Some(format!("{} {}", self.names[id], epoch_part(v)))
            })
            .collect();
        self.values.clear();
        let at = if self.testing {
            String::new()
        } else {
            format!("epoch {}/{} ", self.epoch, self.epochs)
        };
        (!values.is_empty()).then(|| format!("{at}{}: {}", self.split, values.join(", ")))
    }
}

impl MetricsRendererTraining for EpochLogRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.record(state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(state);
    }
}

impl TrainingProgressLogger for EpochLogRenderer {
    fn start(
        &mut self,
        total_epochs: usize,
        starting_epoch: usize,
        _total_items: Option<usize>,
        label: Option<&str>,
    ) {
        self.epochs = total_epochs;
        self.epoch = starting_epoch.max(1);
        self.label = label.unwrap_or("training").to_string();
        self.testing = false;
        if self.epoch <= total_epochs {
            println!("{}: epochs {}..={total_epochs}", self.label, self.epoch);
        } else {
            println!("{}: all {total_epochs} epochs already done", self.label);
        }
    }

    fn update_epoch(&mut self, epoch: usize) {
        self.epoch = epoch + 1;
    }

    fn start_split(&mut self, split: &str, _total_items: usize) {
        self.split = split.to_string();
        self.values.clear();
    }

    fn update_split(&mut self, _items_processed: usize) {}

    fn end_split(&mut self) {
        if let Some(line) = self.split_line() {
            println!("{line}");
        }
    }

    fn end(&mut self) {
        println!("{} ended", self.label);
    }

    fn log_event_training(&mut self, _event: String) {}
}

impl EvaluationProgressLogger for EpochLogRenderer {
    fn start_global_progress(&mut self, _total_tests: usize) {}

    fn start_test(&mut self, name: &str, _total_items: usize) {
        self.split = format!("test '{name}'");
        self.testing = true;
        self.values.clear();
    }

    fn update_test_progress(&mut self, _items_processed: usize) {}

    fn end_test(&mut self) {
        if let Some(line) = self.split_line() {
            println!("{line}");
        }
    }

    fn end_global_progress(&mut self) {}

    fn log_event_evaluation(&mut self, _event: String) {}
}

impl MetricsRendererEvaluation for EpochLogRenderer {
    fn update_test(&mut self, _name: EvaluationName, state: MetricState) {
        self.record(state);
    }
}

impl MetricsRenderer for EpochLogRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        if !self.names.contains_key(&definition.metric_id) {
            self.order.push(definition.metric_id.clone());
        }
        self.names
            .insert(definition.metric_id, definition.name.to_string());
    }
}

/// Burn formats a running metric as `epoch X - batch Y`; the line shows the epoch's `X`.
fn epoch_part(formatted: &str) -> &str {
    formatted
        .strip_prefix("epoch ")
        .and_then(|r| r.split(" - batch").next())
        .unwrap_or(formatted)
}

/// [`EpochLogRenderer`] when stdout is not a terminal, `None` on a terminal (Burn's TUI).
pub fn plain_renderer_unless_terminal() -> Option<Box<dyn MetricsRenderer>> {
    (!std::io::stdout().is_terminal())
        .then(|| Box::new(EpochLogRenderer::new()) as Box<dyn MetricsRenderer>)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::train::metric::{MetricAttributes, MetricEntry, SerializedEntry};

    fn definition(id: &str, name: &str) -> MetricDefinition {
        MetricDefinition {
            metric_id: MetricId::new(std::sync::Arc::new(id.to_string())),
            name: std::sync::Arc::new(name.to_string()),
            description: None,
            attributes: MetricAttributes::None,
        }
    }

    fn state(id: &str, formatted: &str) -> MetricState {
        MetricState::Generic(MetricEntry::new(
            MetricId::new(std::sync::Arc::new(id.to_string())),
            SerializedEntry::new(formatted.to_string(), formatted.to_string()),
        ))
    }

    /// The last value per metric, in registration order, numbered by epoch; unknown metrics
    /// and splits without values print nothing.
    #[test]
    fn one_line_per_split_with_each_metrics_last_value() {
        let mut r = EpochLogRenderer::new();
        r.register_metric(definition("a", "Accuracy"));
        r.register_metric(definition("l", "Loss"));
        r.start(10, 3, None, None);
        r.start_split("train", 100);
        r.update_train(state("l", "0.9"));
        r.update_train(state("x", "?"));
        r.update_train(state("l", "0.5"));
        r.update_train(state("a", "epoch 81.2 % - batch 79.0 %"));
        assert_eq!(
            r.split_line().as_deref(),
            Some("epoch 3/10 train: Accuracy 81.2 %, Loss 0.5")
        );
        r.start_split("valid", 10);
        assert_eq!(r.split_line(), None);
        r.update_epoch(3);
        r.start_split("train", 100);
        r.update_train(state("l", "0.4"));
        assert_eq!(
            r.split_line().as_deref(),
            Some("epoch 4/10 train: Loss 0.4")
        );
        r.start_test("mnist", 10);
        r.update_test(EvaluationName::new("mnist"), state("a", "90.0 %"));
        assert_eq!(
            r.split_line().as_deref(),
            Some("test 'mnist': Accuracy 90.0 %")
        );
    }
}
