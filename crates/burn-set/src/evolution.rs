//! SET's evolution rule on host data (pure Rust, no tensors): prune the weights closest to zero,
//! regrow as many connections at random empty positions.
//!
//! A layer is given as its sorted flat connection positions (see [`crate::topology`]) and the
//! weight value of each connection. The result keeps `nnz` constant (or, for the final
//! prune-only step, removes without regrowing), never duplicates a position, and costs
//! O(nnz log nnz) time and O(nnz) memory.

use crate::topology::{TopologyError, sample_excluding};
use burn::config::Config;
use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

/// Which connections an evolution step removes.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum PruneRule {
    /// The paper's rule and the reference code's: remove the fraction ζ of the *smallest positive*
    /// weights and, separately, ζ of the *largest negative* ones (each sign has its own
    /// threshold). Weights that are exactly zero (e.g. regrown on an input that never fires) are
    /// always removed, as in the reference code.
    SignedThresholds,
    /// Remove the fraction ζ of all connections with the smallest |w|.
    Magnitude,
}

/// The value a regrown connection starts with.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum RegrowInit {
    /// Zero, as in the reference Keras code.
    Zero,
    /// N(0, std²); the reference truly-sparse code uses std = 0.1.
    Normal {
        /// Standard deviation.
        std: f32,
    },
    /// U(-limit, limit).
    Uniform {
        /// Half-width of the interval.
        limit: f32,
    },
}

impl RegrowInit {
    fn sample(&self, rng: &mut StdRng) -> f32 {
        match *self {
            RegrowInit::Zero => 0.0,
            RegrowInit::Normal { std } => Normal::new(0.0f32, std)
                .map(|d| d.sample(rng))
                .unwrap_or(0.0),
            RegrowInit::Uniform { limit } => {
                if limit > 0.0 {
                    rng.random_range(-limit..limit)
                } else {
                    0.0
                }
            }
        }
    }
}

/// How ζ changes over the training.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum ZetaSchedule {
    /// ζ at every evolution (the paper).
    Constant,
    /// Cosine decay from ζ at the first evolution to `final_fraction · ζ` at the last one.
    Cosine {
        /// ζ at the end, as a fraction of the initial ζ (0 = no rewiring at the end).
        final_fraction: f64,
    },
}

impl ZetaSchedule {
    /// ζ for evolution number `index` (0-based) out of `total` evolutions.
    pub fn zeta(&self, zeta: f64, index: usize, total: usize) -> f64 {
        match *self {
            ZetaSchedule::Constant => zeta,
            ZetaSchedule::Cosine { final_fraction } => {
                let t = if total <= 1 {
                    0.0
                } else {
                    index.min(total - 1) as f64 / (total - 1) as f64
                };
                let lo = zeta * final_fraction;
                lo + (zeta - lo) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// When evolution runs.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum EvolutionPeriod {
    /// At the end of every epoch (the paper).
    Epoch,
    /// Every `n` optimizer steps (and not at epoch ends).
    Steps {
        /// Steps between two evolutions.
        n: usize,
    },
}

/// Configuration of SET's evolution, shared by every sparse layer of a model.
#[derive(Config, Debug)]
pub struct EvolutionConfig {
    /// Fraction ζ of connections removed (and regrown) at each evolution.
    #[config(default = 0.3)]
    pub zeta: f64,
    /// Which connections are removed.
    #[config(default = "PruneRule::SignedThresholds")]
    pub prune_rule: PruneRule,
    /// Value of regrown connections.
    #[config(default = "RegrowInit::Zero")]
    pub regrow_init: RegrowInit,
    /// ζ over time.
    #[config(default = "ZetaSchedule::Constant")]
    pub schedule: ZetaSchedule,
    /// When to evolve.
    #[config(default = "EvolutionPeriod::Epoch")]
    pub period: EvolutionPeriod,
    /// After the last epoch, prune without regrowing (the paper).
    #[config(default = true)]
    pub final_prune: bool,
    /// Seed of the evolution RNG; with (epoch, layer) it fixes every draw.
    #[config(default = 42)]
    pub seed: u64,
}

impl EvolutionConfig {
    /// Checks the values; returns a message naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..1.0).contains(&self.zeta) {
            return Err(format!("zeta must be in [0, 1), got {}", self.zeta));
        }
        if let EvolutionPeriod::Steps { n: 0 } = self.period {
            return Err("evolution period must be at least one step".into());
        }
        if let ZetaSchedule::Cosine { final_fraction } = self.schedule
            && !(0.0..=1.0).contains(&final_fraction)
        {
            return Err(format!(
                "cosine final_fraction must be in [0, 1], got {final_fraction}"
            ));
        }
        match self.regrow_init {
            RegrowInit::Normal { std } if !(std.is_finite() && std >= 0.0) => {
                Err(format!("regrow std must be finite and ≥ 0, got {std}"))
            }
            RegrowInit::Uniform { limit } if !(limit.is_finite() && limit >= 0.0) => {
                Err(format!("regrow limit must be finite and ≥ 0, got {limit}"))
            }
            _ => Ok(()),
        }
    }
}

/// Which connections survive pruning: `keep[i]` for connection `i`.
pub fn select_survivors(values: &[f32], zeta: f64, rule: PruneRule) -> Vec<bool> {
    let n = values.len();
    let mut keep = vec![true; n];
    match rule {
        PruneRule::Magnitude => {
            let k = (zeta * n as f64).floor() as usize;
            remove_k_smallest(&mut keep, (0..n).collect(), k, |i| values[i].abs());
        }
        PruneRule::SignedThresholds => {
            let mut pos = Vec::new();
            let mut neg = Vec::new();
            for (i, &v) in values.iter().enumerate() {
                if v > 0.0 {
                    pos.push(i);
                } else if v < 0.0 {
                    neg.push(i);
                } else {
                    keep[i] = false; // exactly zero (or NaN): closest to zero of all
                }
            }
            let kp = (zeta * pos.len() as f64).floor() as usize;
            let kn = (zeta * neg.len() as f64).floor() as usize;
            remove_k_smallest(&mut keep, pos, kp, |i| values[i]);
            remove_k_smallest(&mut keep, neg, kn, |i| -values[i]);
        }
    }
    keep
}

/// Marks as removed the `k` indices with the smallest key (ties broken by index: deterministic).
fn remove_k_smallest(keep: &mut [bool], mut idx: Vec<usize>, k: usize, key: impl Fn(usize) -> f32) {
    if k == 0 {
        return;
    }
    let cmp = |a: &usize, b: &usize| key(*a).total_cmp(&key(*b)).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
    }
    for &i in idx.iter().take(k) {
        keep[i] = false;
    }
}

/// One layer after an evolution step.
#[derive(Debug, Clone, PartialEq)]
pub struct EvolutionOutcome {
    /// Sorted positions after the step.
    pub positions: Vec<u64>,
    /// Values aligned with `positions`.
    pub values: Vec<f32>,
    /// Connections removed.
    pub pruned: usize,
    /// Sorted positions that were added (empty for a prune-only step).
    pub regrown: Vec<u64>,
}

impl EvolutionOutcome {
    /// Connections that differ from before (removed ones that were not re-added + added ones
    /// that were not there): what the dashboard shows as "changed".
    pub fn changed(&self, before: &[u64]) -> usize {
        let (mut i, mut j, mut common) = (0, 0, 0);
        while i < before.len() && j < self.positions.len() {
            match before[i].cmp(&self.positions[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    common += 1;
                    i += 1;
                    j += 1;
                }
            }
        }
        (before.len() - common) + (self.positions.len() - common)
    }
}

/// Runs one SET step on a layer of `total` possible positions: prune with `zeta`/`rule`, then,
/// when `regrow` is `Some`, add exactly as many connections at random positions that are empty
/// after pruning (a just-pruned position may be drawn again, as in the reference code).
pub fn evolve_layer(
    positions: &[u64],
    values: &[f32],
    total: u64,
    zeta: f64,
    rule: PruneRule,
    regrow: Option<RegrowInit>,
    rng: &mut StdRng,
) -> Result<EvolutionOutcome, TopologyError> {
    assert_eq!(
        positions.len(),
        values.len(),
        "positions and values must align"
    );
    crate::topology::validate_positions(positions, total)?;
    let keep = select_survivors(values, zeta, rule);
    let mut kept_pos = Vec::with_capacity(positions.len());
    let mut kept_val = Vec::with_capacity(positions.len());
    for i in 0..positions.len() {
        if keep[i] {
            kept_pos.push(positions[i]);
            kept_val.push(values[i]);
        }
    }
    let pruned = positions.len() - kept_pos.len();
    let Some(init) = regrow else {
        return Ok(EvolutionOutcome {
            positions: kept_pos,
            values: kept_val,
            pruned,
            regrown: Vec::new(),
        });
    };
    let regrown = sample_excluding(rng, total, pruned as u64, &kept_pos)?;
    // Merge the two sorted lists.
    let mut out_pos = Vec::with_capacity(positions.len());
    let mut out_val = Vec::with_capacity(positions.len());
    let (mut i, mut j) = (0, 0);
    while i < kept_pos.len() || j < regrown.len() {
        if j == regrown.len() || (i < kept_pos.len() && kept_pos[i] < regrown[j]) {
            out_pos.push(kept_pos[i]);
            out_val.push(kept_val[i]);
            i += 1;
        } else {
            out_pos.push(regrown[j]);
            out_val.push(init.sample(rng));
            j += 1;
        }
    }
    Ok(EvolutionOutcome {
        positions: out_pos,
        values: out_val,
        pruned,
        regrown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{SparseTopology, derived_rng};
    use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest};

    #[test]
    fn signed_rule_removes_closest_to_zero_of_each_sign() {
        //            0     1     2    3    4     5     6     7    8    9
        let v = [0.1f32, 0.5, -0.2, -0.9, 0.3, -0.05, 0.0, 0.7, 0.2, -0.4];
        let keep = select_survivors(&v, 0.5, PruneRule::SignedThresholds);
        // positives 0.1,0.5,0.3,0.7,0.2 → floor(2.5)=2 smallest: 0.1 (0), 0.2 (8)
        // negatives -0.2,-0.9,-0.05,-0.4 → 2 largest: -0.05 (5), -0.2 (2); zero (6) removed
        let removed: Vec<usize> = (0..10).filter(|&i| !keep[i]).collect();
        assert_eq!(removed, vec![0, 2, 5, 6, 8]);
    }

    /// Unsorted positions would defeat the regrowth's exclusion of existing connections.
    #[test]
    fn unsorted_positions_are_an_error_not_duplicates() {
        let mut rng = derived_rng(1, &[1]);
        let r = evolve_layer(
            &[7, 2, 5],
            &[0.1, -0.2, 0.3],
            12,
            0.5,
            PruneRule::SignedThresholds,
            Some(RegrowInit::Zero),
            &mut rng,
        );
        assert!(
            matches!(r, Err(TopologyError::InvalidPositions { .. })),
            "{r:?}"
        );
    }

    #[test]
    fn magnitude_rule_removes_smallest_abs() {
        let v = [0.1f32, -0.5, 0.05, -0.01, 0.9];
        let keep = select_survivors(&v, 0.4, PruneRule::Magnitude);
        assert_eq!(keep, vec![true, true, false, false, true]);
    }

    #[test]
    fn cosine_schedule_decays() {
        let s = ZetaSchedule::Cosine {
            final_fraction: 0.0,
        };
        assert!((s.zeta(0.3, 0, 11) - 0.3).abs() < 1e-12);
        assert!((s.zeta(0.3, 5, 11) - 0.15).abs() < 1e-12);
        assert!(s.zeta(0.3, 10, 11).abs() < 1e-12);
        assert_eq!(ZetaSchedule::Constant.zeta(0.3, 7, 11), 0.3);
    }

    #[test]
    fn validate_rejects_bad_values() {
        assert!(EvolutionConfig::new().validate().is_ok());
        assert!(EvolutionConfig::new().with_zeta(1.0).validate().is_err());
        assert!(EvolutionConfig::new().with_zeta(-0.1).validate().is_err());
        assert!(
            EvolutionConfig::new()
                .with_period(EvolutionPeriod::Steps { n: 0 })
                .validate()
                .is_err()
        );
    }

    #[test]
    fn regrow_init_values() {
        let t = SparseTopology::erdos_renyi(50, 40, 5.0, 1).unwrap();
        let vals: Vec<f32> = (0..t.nnz()).map(|i| (i as f32 - 200.0) / 100.0).collect();
        let mut rng = derived_rng(1, &[2]);
        let out = evolve_layer(
            &t.positions,
            &vals,
            t.capacity(),
            0.3,
            PruneRule::SignedThresholds,
            Some(RegrowInit::Normal { std: 0.1 }),
            &mut rng,
        )
        .unwrap();
        let new_vals: Vec<f32> = out
            .positions
            .iter()
            .zip(&out.values)
            .filter(|(p, _)| out.regrown.binary_search(p).is_ok())
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(new_vals.len(), out.regrown.len());
        assert!(new_vals.iter().any(|v| *v != 0.0));
        assert!(new_vals.iter().all(|v| v.abs() < 1.0));
    }

    proptest! {
        #[test]
        fn evolution_invariants(n_in in 2usize..60, n_out in 2usize..60, eps in 0.2f64..1.0,
                                zeta in 0.0f64..0.99, seed in any::<u64>(), magnitude in any::<bool>(),
                                zeros in 0usize..5) {
            let eps = eps * (n_in * n_out) as f64 / (n_in + n_out) as f64; // p = eps-fraction
            let t = SparseTopology::erdos_renyi(n_in, n_out, eps, seed).unwrap();
            let mut rng = derived_rng(seed, &[9]);
            let mut vals: Vec<f32> = (0..t.nnz()).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            for v in vals.iter_mut().take(zeros) { *v = 0.0; }
            let rule = if magnitude { PruneRule::Magnitude } else { PruneRule::SignedThresholds };
            let out = evolve_layer(&t.positions, &vals, t.capacity(), zeta, rule, Some(RegrowInit::Zero), &mut rng).unwrap();
            // nnz constant, sorted, distinct, in range
            prop_assert_eq!(out.positions.len(), t.nnz());
            prop_assert!(out.positions.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(out.positions.iter().all(|&p| p < t.capacity()));
            prop_assert_eq!(out.regrown.len(), out.pruned);
            // survivors keep their values; regrown start at zero
            for (p, v) in out.positions.iter().zip(&out.values) {
                if out.regrown.binary_search(p).is_err() {
                    let i = t.positions.binary_search(p).unwrap();
                    prop_assert_eq!(*v, vals[i]);
                } else {
                    prop_assert_eq!(*v, 0.0);
                }
            }
            // no survivor is closer to zero (same sign) than a removed weight
            let keep = select_survivors(&vals, zeta, rule);
            for i in 0..vals.len() { for j in 0..vals.len() {
                if keep[i] && !keep[j] {
                    if magnitude { prop_assert!(vals[i].abs() >= vals[j].abs()); }
                    else if vals[i] > 0.0 && vals[j] > 0.0 { prop_assert!(vals[i] >= vals[j]); }
                    else if vals[i] < 0.0 && vals[j] < 0.0 { prop_assert!(vals[i] <= vals[j]); }
                }
            }}
            // deterministic from the seed
            let mut rng2 = derived_rng(seed, &[9]);
            let _: Vec<f32> = (0..t.nnz()).map(|_| rng2.random_range(-1.0f32..1.0)).collect();
            let out2 = evolve_layer(&t.positions, &vals, t.capacity(), zeta, rule, Some(RegrowInit::Zero), &mut rng2).unwrap();
            prop_assert_eq!(&out, &out2);
            // prune-only removes exactly `pruned` and adds nothing
            let po = evolve_layer(&t.positions, &vals, t.capacity(), zeta, rule, None, &mut rng).unwrap();
            prop_assert_eq!(po.positions.len(), t.nnz() - out.pruned);
            prop_assert!(po.regrown.is_empty());
            prop_assert_eq!(out.changed(&t.positions) % 2, 0);
        }
    }
}
