//! SET-RBM: a Bernoulli–Bernoulli restricted Boltzmann machine whose visible×hidden weights are a
//! [`SetLinear`](crate::set_linear::SetLinear) (dense = "RBM", fixed Erdős–Rényi = "RBMFixProb",
//! evolved by SET = "SET-RBM"), trained by contrastive divergence and judged by the average
//! log-probability with annealed importance sampling, as in the SET paper's Table 2.
//!
//! * [`model`]: [`SetRbmConfig`] → [`SetRbm`]; [`SetRbm::cd_step`] is the one CD-k / PCD-k
//!   implementation; `TrainStep` / `InferenceStep` for Burn's Learner.
//! * [`ais`]: free energy, exact log Z of small models, AIS.
//! * [`train`]: the plain epoch loop and the Learner path, both with SET's evolution.
//! * [`metrics`]: topology statistics (connections, density, degree summaries) and the
//!   hidden-degree dashboard metric.
//! * [`experiment`]: one run of the paper's comparison (what `burn-set rbm` calls).

pub mod ais;
pub mod experiment;
pub mod metrics;
pub mod model;
pub mod rng;
pub mod train;

pub use ais::{
    AisConfig, AisEstimate, ais_log_z, average_log_likelihood, base_rate_visible_bias,
    beta_schedule, exact_log_z, log_sum_exp, mean_neg_free_energy,
};
pub use experiment::{RbmEvaluation, RbmReport, RbmRun, paper_name, run_rbm};
pub use metrics::{DegreeSummary, HiddenDegreeMetric, HiddenDegreeStat, RbmTopology};
pub use model::{CdSampler, CdStep, RbmOutput, SetRbm, SetRbmConfig, softplus};
pub use rng::FastRng;
pub use train::{EpochRecord, RbmTrainConfig, train_rbm, train_rbm_with_learner};
