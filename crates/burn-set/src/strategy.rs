//! The training loop: a Burn `SupervisedLearningStrategy` that runs the usual epoch loop (train
//! split, validation split, checkpoints, early stopping, the dashboard's events) and calls a
//! [`SetCallback`] where SET needs to change the model. Burn 0.22 has no model-mutating epoch
//! hook; this strategy, plugged in with `TrainingStrategy::Custom`, is that hook. It is the only
//! training loop of the crate.

use crate::callback::SetCallback;
use crate::metrics::{TopologyMetric, TopologyStat};
use burn::optim::{GradientsAccumulator, OptimizerRecord};
use burn::tensor::Device;
use burn::train::{
    EventProcessorTraining, InferenceStep, Learner, LearnerEvent, LearnerModel,
    SupervisedLearningStrategy, SupervisedTraining, SupervisedTrainingEventProcessor, TrainLoader,
    TrainingComponents, TrainingItem, TrainingStrategy, ValidLoader,
};
use std::sync::Arc;

/// Burn training strategy that evolves the model with SET.
pub struct SetStrategy {
    callback: SetCallback,
    device: Option<Device>,
}

impl SetStrategy {
    /// Trains on the device of the model's parameters.
    pub fn new(callback: SetCallback) -> Self {
        Self {
            callback,
            device: None,
        }
    }

    /// Trains on `device` (made autodiff if it is not).
    pub fn with_device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
    }
}

/// Replaces the learner's model after an evolution (a no-op when `changed` is false). The optimizer state is reset: a regrown
/// connection must not inherit the momentum its position had before it was pruned (Burn keeps
/// optimizer state per parameter, not per element). The reference Keras SET code does the same
/// (it rebuilds and recompiles the model every epoch). With the state reset, pruned positions
/// keep exactly zero weight, gradient and momentum until they are regrown.
///
/// Burn's `Learner` can only take a model through a record of the same shapes. Truly sparse
/// layers ([`SparseSetLinear`](crate::sparse_linear::SparseSetLinear)) change shape when the
/// final prune removes connections: then the learner is left as it is and the evolved model is
/// returned, for the caller to use in its place (the training is over by then).
pub fn apply_evolution<M: LearnerModel>(
    learner: &mut Learner<M>,
    (model, changed): (M, bool),
) -> Option<M> {
    if !changed {
        return None;
    }
    if model.num_params() != learner.model().num_params() {
        return Some(model);
    }
    learner.load_model(model.into_record());
    learner.load_optim(OptimizerRecord::default());
    None
}

/// [`apply_evolution`] for an evolution in the middle of training, which keeps the number of
/// connections (every pruned connection is regrown).
fn apply_training_evolution<M: LearnerModel>(learner: &mut Learner<M>, evolved: (M, bool)) {
    if apply_evolution(learner, evolved).is_some() {
        panic!(
            "SET changed the number of connections of a truly sparse layer during training \
             (a layer too dense to regrow every pruned connection?): lower ε or use masked storage"
        );
    }
}

impl<M: LearnerModel + 'static> SupervisedLearningStrategy<M> for SetStrategy {
    fn fit(
        &self,
        tc: TrainingComponents<M>,
        mut learner: Learner<M>,
        dl_train: TrainLoader<M>,
        dl_valid: ValidLoader<M>,
        starting_epoch: usize,
    ) -> (M, SupervisedTrainingEventProcessor<M>) {
        let device = self
            .device
            .clone()
            .or_else(|| learner.model().devices().into_iter().next())
            .unwrap_or_default();
        let device = if device.is_autodiff() {
            device
        } else {
            device.autodiff()
        };
        let dl_train = dl_train.to_device(&device);
        let dl_valid = dl_valid.to_device(&device.clone().inner());
        learner.fork(&device);
        let cb = &self.callback;
        cb.observe(&learner.model());

        let mut proc = tc.event_processor;
        let mut checkpointer = tc.checkpointer;
        let mut early_stopping = tc.early_stopping;
        let intr = tc.interrupter;
        let num_epochs = tc.num_epochs;
        let mut total_evolutions = num_epochs.saturating_sub(1);
        let mut global_step = 0usize;
        let mut estimated = false;
        let mut final_model: Option<M> = None;
        // whether the final prune has run, and the last epoch started
        let (mut pruned, mut last_epoch_run) = (false, starting_epoch);

        for epoch in starting_epoch..=num_epochs {
            let last_epoch = epoch == num_epochs;
            last_epoch_run = epoch;
            // ---- train split
            intr.fail_on_error(proc.process_train(LearnerEvent::StartSplit {
                epoch_number: epoch,
                total_items: dl_train.num_items(),
            }));
            let mut it = dl_train.iter();
            let (mut iteration, mut accumulator, mut accumulated) =
                (0usize, GradientsAccumulator::new(), 0usize);
            while let Some(item) = it.next() {
                let item = match item {
                    Ok(i) => i,
                    Err(e) => {
                        intr.fail(e);
                        break;
                    }
                };
                iteration += 1;
                let progress = it.progress();
                let out = learner.train_step(item);
                let stepped = match tc.grad_accumulation {
                    Some(n) => {
                        accumulator.accumulate(&learner.model(), out.grads);
                        accumulated += 1;
                        if n <= accumulated || progress.is_completed() {
                            learner.lr_step();
                            learner.optimizer_step(accumulator.grads());
                            accumulated = 0;
                            true
                        } else {
                            false
                        }
                    }
                    None => {
                        learner.lr_step();
                        learner.optimizer_step(out.grads);
                        true
                    }
                };
                if stepped {
                    global_step += 1;
                    // the first optimizer step of this run (after `grad_accumulation` items
                    // when gradients are accumulated) tells how many items a step takes
                    if !estimated {
                        let per_step = progress.items_processed.max(1);
                        let steps_per_epoch = progress.items_total.div_ceil(per_step);
                        // a resumed training counts the steps of the epochs before it, so its
                        // evolutions fall on the same steps as in one uninterrupted run
                        global_step += starting_epoch.saturating_sub(1) * steps_per_epoch;
                        total_evolutions = cb.total_evolutions(steps_per_epoch, num_epochs);
                        estimated = true;
                    }
                    let end_of_training = last_epoch && progress.is_completed();
                    if cb.evolves_at_step(global_step) && !end_of_training {
                        let evolved =
                            cb.evolve(learner.model(), epoch, global_step, total_evolutions);
                        apply_training_evolution(&mut learner, evolved);
                    }
                }
                let ti = TrainingItem::new(
                    out.item,
                    progress,
                    Some(iteration),
                    Some(learner.lr_current()),
                );
                intr.fail_on_error(proc.process_train(LearnerEvent::ProcessedItem(ti)));
                if intr.should_stop() {
                    break;
                }
            }
            intr.fail_on_error(proc.process_train(LearnerEvent::EndSplit(epoch)));
            if intr.should_stop() {
                break;
            }

            // ---- after the last epoch: prune without regrowing, then validate what is returned
            if last_epoch {
                let prune = cb.final_prune(learner.model(), epoch, global_step, total_evolutions);
                // Sparse layers shrink: the pruned model then replaces the learner's for the
                // validation and as the result (for them the last checkpoint keeps the unpruned
                // model; masked layers keep their shapes and the learner takes the pruned one).
                final_model = apply_evolution(&mut learner, prune);
                pruned = true;
            }

            // ---- valid split
            intr.fail_on_error(proc.process_valid(LearnerEvent::StartSplit {
                epoch_number: epoch,
                total_items: dl_valid.num_items(),
            }));
            let model_valid = final_model
                .clone()
                .unwrap_or_else(|| learner.model())
                .valid();
            let mut it = dl_valid.iter();
            let mut iteration = 0;
            while let Some(item) = it.next() {
                let item = match item {
                    Ok(i) => i,
                    Err(e) => {
                        intr.fail(e);
                        break;
                    }
                };
                iteration += 1;
                let progress = it.progress();
                let out = InferenceStep::step(&model_valid, item);
                intr.fail_on_error(proc.process_valid(LearnerEvent::ProcessedItem(
                    TrainingItem::new(out, progress, Some(iteration), None),
                )));
                if intr.should_stop() {
                    break;
                }
            }
            intr.fail_on_error(proc.process_valid(LearnerEvent::EndSplit(epoch)));
            intr.fail_on_error(proc.process_train(LearnerEvent::EndEpoch(epoch)));
            if checkpointer.is_some() || early_stopping.is_some() {
                intr.fail_on_error(proc.flush());
            }

            // ---- does the training end here? Decided before SET changes the model, so that a
            // training stopped early returns (the final prune of) the model just validated.
            let interrupted = intr.should_stop();
            let stopped_early = !interrupted
                && !last_epoch
                && early_stopping
                    .as_mut()
                    .is_some_and(|es| es.should_stop(epoch, &tc.event_store));

            // ---- SET at the end of every epoch but the last
            if !last_epoch && !interrupted && !stopped_early && cb.evolves_at_epoch_end() {
                let evolved = cb.evolve(learner.model(), epoch, global_step, total_evolutions);
                apply_training_evolution(&mut learner, evolved);
            }

            if interrupted {
                break;
            }
            // the learner's state to resume from: after this epoch's evolution (a training that
            // stops here, early or at its last epoch, has none: its checkpoint is the model
            // validated last)
            if let Some(c) = &mut checkpointer {
                c.checkpoint(&learner, epoch, &tc.event_store);
            }
            if stopped_early {
                break;
            }
        }
        // ---- a training that ended before its last epoch (interrupted, stopped early) gets
        // the final prune there; one that failed on an error is returned as it stands
        if !pruned && starting_epoch <= num_epochs && intr.error().is_none() {
            let (model, changed) = cb.final_prune(
                learner.model(),
                last_epoch_run,
                global_step,
                total_evolutions,
            );
            if changed {
                final_model = Some(model);
            }
        }
        (final_model.unwrap_or_else(|| learner.model()), proc)
    }
}

/// Adds SET to a Burn `SupervisedTraining` in one call.
pub trait SetTrainingExt {
    /// Evolves the model with `callback` (through [`SetStrategy`]) and shows connections,
    /// density and changed connections on the dashboard.
    ///
    /// SET runs as the training strategy (`TrainingStrategy::Custom`): this replaces a
    /// strategy set before, and setting one after (`with_training_strategy`) turns SET off.
    fn with_set(self, callback: &SetCallback) -> Self;
}

impl<M: LearnerModel + 'static> SetTrainingExt for SupervisedTraining<M> {
    fn with_set(self, callback: &SetCallback) -> Self {
        self.metric_train_numeric(TopologyMetric::new(callback, TopologyStat::Connections))
            .metric_train_numeric(TopologyMetric::new(callback, TopologyStat::Density))
            .metric_train_numeric(TopologyMetric::new(callback, TopologyStat::Changed))
            .with_training_strategy(TrainingStrategy::Custom(Arc::new(SetStrategy::new(
                callback.clone(),
            ))))
    }
}
