//! `SetCallback`: decides when and how a model evolves during training, keeps the history and
//! the live topology statistics shown on Burn's dashboard.

use crate::evolution::{EvolutionConfig, EvolutionPeriod};
use crate::layers::{EvolutionStep, LayerEvolution, evolve_model, topology_summary};
use burn::module::Module;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One evolution (or the final prune) of a model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvolutionRecord {
    /// Epoch at whose end (or during which) it ran, 1-based.
    pub epoch: usize,
    /// Global optimizer step when it ran.
    pub step: usize,
    /// ζ used.
    pub zeta: f64,
    /// `true` for the final prune-only step.
    pub final_prune: bool,
    /// Per-layer details.
    pub layers: Vec<LayerEvolution>,
    /// Connections in all SET layers afterwards.
    pub connections: u64,
    /// Wall-clock seconds spent (host round trip included).
    pub seconds: f64,
}

/// Live statistics of the model's sparse layers (what the dashboard shows).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct TopologyStats {
    /// Connections in all `SetLinear` layers.
    pub connections: u64,
    /// `connections` over what the same layers hold dense.
    pub density: f64,
    /// Connections changed by the last evolution.
    pub changed_last: u64,
}

#[derive(Debug, Default)]
struct State {
    history: Vec<EvolutionRecord>,
    stats: TopologyStats,
}

/// Runs SET on a model at the end of every epoch (or every N steps) of Burn's training.
///
/// Cheap to clone: clones share their history and statistics. Plug it into a
/// `SupervisedTraining` with [`SetTrainingExt::with_set`](crate::strategy::SetTrainingExt::with_set).
/// Every `SetLinear` built with `Sparsity::Set` in the model evolves; FixProb and dense layers
/// are left alone. No per-layer code is needed from the user.
#[derive(Clone, Debug)]
pub struct SetCallback {
    config: Arc<EvolutionConfig>,
    state: Arc<Mutex<State>>,
}

impl SetCallback {
    /// A callback with this evolution configuration.
    ///
    /// # Panics
    /// If the configuration is invalid ([`EvolutionConfig::validate`]).
    pub fn new(config: EvolutionConfig) -> Self {
        Self::try_new(config).unwrap_or_else(|e| panic!("invalid EvolutionConfig: {e}"))
    }

    /// A callback, or why the configuration is invalid.
    pub fn try_new(config: EvolutionConfig) -> Result<Self, String> {
        config.validate()?;
        Ok(Self {
            config: Arc::new(config),
            state: Arc::new(Mutex::new(State::default())),
        })
    }

    /// The evolution configuration.
    pub fn config(&self) -> &EvolutionConfig {
        &self.config
    }

    /// Every evolution so far, in order.
    pub fn history(&self) -> Vec<EvolutionRecord> {
        self.state.lock().unwrap().history.clone()
    }

    /// Total seconds spent evolving.
    pub fn evolution_seconds(&self) -> f64 {
        let st = self.state.lock().unwrap();
        st.history.iter().fold(0.0, |acc, r| acc + r.seconds)
    }

    /// Current topology statistics.
    pub fn stats(&self) -> TopologyStats {
        self.state.lock().unwrap().stats
    }

    /// Refreshes the statistics from a model (called by the strategy at the start).
    pub fn observe<M: Module>(&self, model: &M) {
        let s = topology_summary(model);
        let mut st = self.state.lock().unwrap();
        st.stats.connections = s.connections;
        st.stats.density = s.density();
    }

    /// Should the model evolve after global optimizer step `step` (1-based)?
    pub fn evolves_at_step(&self, step: usize) -> bool {
        matches!(self.config.period, EvolutionPeriod::Steps { n } if step.is_multiple_of(n))
    }

    /// How many (regrowing) evolutions a training of `epochs` epochs of `steps_per_epoch`
    /// optimizer steps runs: the `total_evolutions` that [`evolve`](Self::evolve) takes.
    pub fn total_evolutions(&self, steps_per_epoch: usize, epochs: usize) -> usize {
        match self.config.period {
            EvolutionPeriod::Epoch => epochs.saturating_sub(1),
            EvolutionPeriod::Steps { n } => (steps_per_epoch * epochs).saturating_sub(1) / n.max(1),
        }
    }

    /// Does the model evolve at epoch ends?
    pub fn evolves_at_epoch_end(&self) -> bool {
        self.config.period == EvolutionPeriod::Epoch
    }

    /// Runs one evolution (regrowing) on `model` after (1-based) `epoch`, or after global
    /// optimizer step `step` with a step period; that fixes its random draws and its place in
    /// the ζ schedule (evolution `epoch − 1`, or `step / n − 1`). `total_evolutions` is how many
    /// evolutions the whole training will run (for ζ schedules). The flag says whether any layer evolved (a
    /// model without `Sparsity::Set` layers is returned as it was, and nothing is recorded).
    pub fn evolve<M: Module>(
        &self,
        model: M,
        epoch: usize,
        step: usize,
        total_evolutions: usize,
    ) -> (M, bool) {
        // The evolution's place in the schedule follows from its epoch (or step), like its
        // random draws: a resumed training continues the ζ schedule where it stopped.
        let (index, counter) = match self.config.period {
            EvolutionPeriod::Epoch => (epoch.saturating_sub(1), epoch as u64),
            EvolutionPeriod::Steps { n } => ((step / n.max(1)).saturating_sub(1), step as u64),
        };
        let zeta = self
            .config
            .schedule
            .zeta(self.config.zeta, index, total_evolutions);
        self.run(model, epoch, step, zeta, false, counter)
    }

    /// The final prune-only step after the last epoch (no-op when `final_prune` is off).
    pub fn final_prune<M: Module>(
        &self,
        model: M,
        epoch: usize,
        step: usize,
        total_evolutions: usize,
    ) -> (M, bool) {
        if !self.config.final_prune {
            return (model, false);
        }
        let zeta =
            self.config
                .schedule
                .zeta(self.config.zeta, total_evolutions, total_evolutions + 1);
        self.run(model, epoch, step, zeta, true, u64::MAX)
    }

    fn run<M: Module>(
        &self,
        model: M,
        epoch: usize,
        step: usize,
        zeta: f64,
        final_prune: bool,
        counter: u64,
    ) -> (M, bool) {
        let t0 = Instant::now();
        let plan = EvolutionStep {
            zeta,
            rule: self.config.prune_rule,
            regrow: (!final_prune).then_some(self.config.regrow_init),
            seed: self.config.seed,
            counter,
        };
        let (model, layers) = evolve_model(model, &plan)
            .unwrap_or_else(|e| panic!("SET evolution failed at epoch {epoch}: {e}"));
        if layers.is_empty() {
            return (model, false);
        }
        let summary = topology_summary(&model);
        let seconds = t0.elapsed().as_secs_f64();
        let changed: usize = layers.iter().map(|l| l.changed).sum();
        let mut st = self.state.lock().unwrap();
        st.stats = TopologyStats {
            connections: summary.connections,
            density: summary.density(),
            changed_last: changed as u64,
        };
        st.history.push(EvolutionRecord {
            epoch,
            step,
            zeta,
            final_prune,
            layers,
            connections: summary.connections,
            seconds,
        });
        (model, true)
    }
}
