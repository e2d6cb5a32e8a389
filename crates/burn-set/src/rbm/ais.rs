//! Log-likelihood of an RBM: the exact log-partition function of small models (enumerating the
//! smaller layer) and annealed importance sampling (AIS; Salakhutdinov & Murray 2008) for the
//! others.
//!
//! AIS anneals from a base-rate RBM `A` (no weights, no hidden bias, visible biases `b_A` from
//! the training data's marginals) to the target RBM `B` through the tempered distributions
//!
//! `f_β(v) = exp((1−β) b_Aᵀv + β b_Bᵀv) · Πⱼ (1 + exp(β (cⱼ + (vW)ⱼ)))`
//!
//! (`f_0 ∝ p_A`, `Z_0 = 2^{n_h} Πᵢ (1 + e^{b_Aᵢ})`; `f_1 = e^{−F_B}`, `Z_1 = Z_B`). Each of the
//! `M` runs starts with an exact sample of `A`, adds `log f_{β_k}(v) − log f_{β_{k−1}}(v)` to its
//! log-weight, and moves `v` with one Gibbs sweep that leaves `p_{β_k}` invariant. Then
//! `log Z_B ≈ log Z_0 + log mean(w)`. The `M` runs are one batch of tensor operations. The
//! per-step increments use `softplus(x) − softplus(x − δ) = −log1p(σ(x)(e^{−δ} − 1))`, which
//! stays accurate in f32 for the tiny δ of the 10⁻⁵ steps (a difference of two softplus values
//! would not); `e^{−δ} − 1` and `log1p` are 5th-order power series whenever
//! `|δ| ≤ Δβ · max_j(|c_j| + Σ_i |W_ij|) ≤ 0.05` (elementwise multiply-adds instead of
//! transcendental functions, which dominate the cost on CPU backends). Log-weights are moved to
//! f64 on the host every 256 steps.

use super::model::{SetRbm, sigmoid, softplus};
use super::rng::FastRng;
use crate::data::BinaryData;
use crate::set_linear::float_data;
use burn::config::Config;
use burn::tensor::{Tensor, TensorData};
use std::time::Instant;

/// Configuration of an AIS estimate.
#[derive(Config, Debug)]
pub struct AisConfig {
    /// Independent runs `M` (the paper: 100).
    #[config(default = 100)]
    pub runs: usize,
    /// Number of annealing steps (intervals between consecutive βs); the default 14,500 is
    /// Salakhutdinov & Murray's schedule (see [`beta_schedule`]).
    #[config(default = 14_500)]
    pub betas: usize,
    /// Seed of the runs' random stream.
    #[config(default = 7)]
    pub seed: u64,
}

/// The annealing schedule with `steps` intervals, `steps + 1` values from 0 to 1.
///
/// Its shape is Salakhutdinov & Murray's: uniform spacing on `[0, 0.5]`, `[0.5, 0.9]` and
/// `[0.9, 1]` with 500 / 4,000 / 10,000 of every 14,500 steps (steps 10⁻³, 10⁻⁴, 10⁻⁵ at the
/// default 14,500). Other counts keep those proportions (each segment gets at least one step).
pub fn beta_schedule(steps: usize) -> Vec<f64> {
    let steps = steps.max(3);
    let n1 = ((steps as f64 * 500.0 / 14_500.0).round() as usize).max(1);
    let n2 = ((steps as f64 * 4_000.0 / 14_500.0).round() as usize).max(1);
    let n3 = steps.saturating_sub(n1 + n2).max(1);
    let mut b = Vec::with_capacity(n1 + n2 + n3 + 1);
    for (lo, hi, n) in [(0.0, 0.5, n1), (0.5, 0.9, n2), (0.9, 1.0, n3)] {
        for i in 0..n {
            b.push(lo + (hi - lo) * i as f64 / n as f64);
        }
    }
    b.push(1.0);
    b
}

/// An AIS estimate of `log Z`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AisEstimate {
    /// `log Z_A + log mean(w)`.
    pub log_z: f64,
    /// `log Z` of the base-rate model.
    pub log_z_base: f64,
    /// `log(mean(w) − 3·std(w)/√M) − log mean(w)` (≤ 0; `None` when the bound is ≤ 0, i.e.
    /// the estimate is unreliable).
    pub uncertainty_low: Option<f64>,
    /// `log(mean(w) + 3·std(w)/√M) − log mean(w)` (≥ 0).
    pub uncertainty_high: f64,
    /// Runs.
    pub runs: usize,
    /// Annealing steps.
    pub betas: usize,
    /// Effective sample size of the importance weights, `(Σw)² / Σw²`.
    pub effective_runs: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// The runs' final log-weights.
    #[serde(skip)]
    pub log_weights: Vec<f64>,
}

impl AisEstimate {
    /// The larger magnitude of the ±3σ interval in log space (`+∞` when the lower bound does
    /// not exist).
    pub fn uncertainty(&self) -> f64 {
        match self.uncertainty_low {
            Some(lo) => lo.abs().max(self.uncertainty_high),
            None => f64::INFINITY,
        }
    }
}

/// Visible biases of the base-rate model: `log(p / (1 − p))` of the smoothed marginals
/// `p = (count + 0.5) / (n + 1)` of `data`, so no bias is infinite.
pub fn base_rate_visible_bias(data: &BinaryData) -> Vec<f32> {
    let n = data.len() as f64;
    data.marginals()
        .iter()
        .map(|&m| {
            let p = (m * n + 0.5) / (n + 1.0);
            (p / (1.0 - p)).ln() as f32
        })
        .collect()
}

/// `log Σ exp(x)` in f64.
pub fn log_sum_exp(x: &[f64]) -> f64 {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

/// Estimates `log Z` of `rbm` by AIS from the base-rate model with visible biases `base_bias`
/// (see [`base_rate_visible_bias`]). Runs on the device of the model (its non-autodiff twin).
pub fn ais_log_z(rbm: &SetRbm, base_bias: &[f32], cfg: &AisConfig) -> AisEstimate {
    let t0 = Instant::now();
    let (w, b, c) = rbm.parameters();
    let device = w.device();
    let [nv, nh] = w.dims();
    assert_eq!(base_bias.len(), nv, "one base-rate bias per visible unit");
    let m = cfg.runs.max(1);
    let ba = Tensor::<1>::from_data(TensorData::new(base_bias.to_vec(), [nv]), &device);
    let db = b - ba.clone();
    let db_col = db.clone().unsqueeze_dim::<2>(1);
    let db_row = db.unsqueeze::<2>();
    let ba_row = ba.unsqueeze::<2>();
    let c_row = c.unsqueeze::<2>();
    let wt = w.clone().transpose();
    let betas = beta_schedule(cfg.betas);
    let steps = betas.len() - 1;
    let mut rng = FastRng::new(cfg.seed, &[0xA15]);

    // |a_j| = |c_j + (vW)_j| ≤ c_j| + Σ_i |W_ij| =: bound, so |δ| = Δβ |a| ≤ Δβ · bound.
    let bound = {
        let (wv, cv) = (float_data(w.clone()), float_data(c_row.clone()));
        let mut col = cv.iter().map(|x| x.abs() as f64).collect::<Vec<_>>();
        for row in wv.chunks_exact(nh) {
            for (s, x) in col.iter_mut().zip(row) {
                *s += x.abs() as f64;
            }
        }
        col.into_iter().fold(0.0, f64::max)
    };

    let mut v = rng.bernoulli(sigmoid(ba_row.clone()).repeat_dim(0, m));
    let mut acc = Tensor::<2>::zeros([m, 1], &device);
    let mut log_w = vec![0f64; m];
    for k in 1..=steps {
        let (bk, d) = (betas[k], betas[k] - betas[k - 1]);
        let a = v.clone().matmul(w.clone()) + c_row.clone();
        let p = sigmoid(a.clone().mul_scalar(bk));
        // Σ_j softplus(x_j − δ_j) − softplus(x_j) = Σ_j log1p(p_j (e^{−δ_j} − 1)), x = β_k a,
        // δ = Δβ a.
        let dec = log_weight_decrement(a, p.clone(), d, d * bound <= TAYLOR_LIMIT).sum_dim(1);
        let inc_v = v.clone().matmul(db_col.clone()).mul_scalar(d);
        acc = acc + inc_v - dec;
        if k < steps {
            let h = rng.bernoulli(p);
            let pv =
                sigmoid((h.matmul(wt.clone()) + db_row.clone()).mul_scalar(bk) + ba_row.clone());
            v = rng.bernoulli(pv);
        }
        if k % 256 == 0 || k == steps {
            for (lw, x) in log_w.iter_mut().zip(float_data(acc)) {
                *lw += x as f64;
            }
            acc = Tensor::zeros([m, 1], &device);
        }
    }

    let log_z_base = nh as f64 * std::f64::consts::LN_2
        + base_bias
            .iter()
            .map(|&x| softplus_f64(x as f64))
            .sum::<f64>();
    let mx = log_w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let scaled: Vec<f64> = log_w.iter().map(|l| (l - mx).exp()).collect();
    let mean = scaled.iter().sum::<f64>() / m as f64;
    let var = if m > 1 {
        scaled.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (m - 1) as f64
    } else {
        0.0
    };
    let rel = 3.0 * var.sqrt() / (m as f64).sqrt() / mean;
    let sum_sq: f64 = scaled.iter().map(|x| x * x).sum();
    AisEstimate {
        log_z: log_z_base + mx + mean.ln(),
        log_z_base,
        uncertainty_low: (rel < 1.0).then(|| (1.0 - rel).ln()),
        uncertainty_high: (1.0 + rel).ln(),
        runs: m,
        betas: steps,
        effective_runs: (mean * m as f64).powi(2) / sum_sq,
        seconds: t0.elapsed().as_secs_f64(),
        log_weights: log_w,
    }
}

/// Largest |δ| for which the increments use power series instead of `exp` / `log1p`.
const TAYLOR_LIMIT: f64 = 0.05;

/// Per unit, `softplus(x − δ) − softplus(x) = log1p(p (e^{−δ} − 1))` with `p = σ(x)`,
/// `δ = d · a`: what one annealing step of size `d` takes off a run's log-weight. With `series`
/// (only valid when every `|δ| ≤ 0.05`) `e^{−δ} − 1` and `log1p` are 5th-order power series
/// (truncation ≤ 3·10⁻⁹), else `exp` and `log1p`.
fn log_weight_decrement(a: Tensor<2>, p: Tensor<2>, d: f64, series: bool) -> Tensor<2> {
    if series {
        let y = a.mul_scalar(-d);
        let em1 = horner(y, &[1.0, 1.0 / 2.0, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0]);
        horner(
            p * em1,
            &[1.0, -1.0 / 2.0, 1.0 / 3.0, -1.0 / 4.0, 1.0 / 5.0],
        )
    } else {
        (p * (a.mul_scalar(-d).exp() - 1.0)).log1p()
    }
}

/// `x · (c₀ + x (c₁ + x (c₂ + …)))`: a power series without constant term, by Horner's rule.
fn horner(x: Tensor<2>, coefficients: &[f64]) -> Tensor<2> {
    let mut acc: Option<Tensor<2>> = None;
    for &c in coefficients.iter().rev() {
        acc = Some(match acc {
            None => x.clone().mul_scalar(c),
            Some(t) => (t + c) * x.clone(),
        });
    }
    acc.expect("at least one coefficient")
}

fn softplus_f64(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Largest layer [`exact_log_z`] enumerates (2²⁴ states).
pub const EXACT_MAX_UNITS: usize = 24;

/// The exact `log Z` by enumerating all states of the smaller layer (≤ [`EXACT_MAX_UNITS`]
/// units): `log Σ_h exp(cᵀh + Σᵢ softplus(bᵢ + (W h)ᵢ))` or `log Σ_v exp(−F(v))`.
pub fn exact_log_z(rbm: &SetRbm) -> Result<f64, String> {
    let (w, b, c) = rbm.parameters();
    let [nv, nh] = w.dims();
    let n = nv.min(nh);
    if n > EXACT_MAX_UNITS {
        return Err(format!(
            "exact log Z enumerates the smaller layer: {n} units (2^{n} states) is more than \
             the {EXACT_MAX_UNITS} allowed; use AIS"
        ));
    }
    // Enumerating hidden states: swap the roles (W → Wᵀ, b ↔ c): same formula.
    let (w, bias_enum, bias_other) = if nh <= nv {
        (w.transpose(), c, b)
    } else {
        (w, b, c)
    };
    let device = w.device();
    let total = 1usize << n;
    let chunk = total.min(1 << 12);
    let mut terms = Vec::with_capacity(total);
    for start in (0..total).step_by(chunk) {
        let rows = chunk.min(total - start);
        let mut bits = Vec::with_capacity(rows * n);
        for s in start..start + rows {
            bits.extend((0..n).map(|i| ((s >> i) & 1) as f32));
        }
        let x = Tensor::<2>::from_data(TensorData::new(bits, [rows, n]), &device);
        let lin = x
            .clone()
            .matmul(bias_enum.clone().unsqueeze_dim(1))
            .reshape([rows]);
        let sp = softplus(x.matmul(w.clone()) + bias_other.clone().unsqueeze())
            .sum_dim(1)
            .reshape([rows]);
        terms.extend(float_data(lin + sp).into_iter().map(|x| x as f64));
    }
    Ok(log_sum_exp(&terms))
}

/// Mean of `−F(v)` over `data` (f64 accumulation; chunks of 2,048 rows).
pub fn mean_neg_free_energy(rbm: &SetRbm, data: &BinaryData) -> f64 {
    let (w, _, _) = rbm.parameters();
    let device = w.device();
    let d = data.n_features;
    let mut sum = 0f64;
    for chunk in data.values.chunks(2048 * d) {
        let rows = chunk.len() / d;
        let v = Tensor::<2>::from_data(TensorData::new(chunk.to_vec(), [rows, d]), &device);
        sum -= float_data(rbm.free_energy(v))
            .into_iter()
            .map(|x| x as f64)
            .sum::<f64>();
    }
    sum / data.len().max(1) as f64
}

/// Average log-probability of the samples of `data` in nats: `mean(−F(v)) − log Z`.
pub fn average_log_likelihood(rbm: &SetRbm, data: &BinaryData, log_z: f64) -> f64 {
    mean_neg_free_energy(rbm, data) - log_z
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn log_weight_decrement_matches_f64_on_both_paths() {
        #[allow(deprecated)]
        let dev = Device::ndarray();
        let mut rng = FastRng::new(1, &[2]);
        let u = rng.uniforms(2 * 4000);
        let a: Vec<f32> = u[..4000].iter().map(|x| (x - 0.5) * 100.0).collect();
        let p: Vec<f32> = u[4000..].to_vec();
        for (d, series) in [(1e-3, true), (1e-5, true), (1e-3, false), (2e-2, false)] {
            let got = float_data(log_weight_decrement(
                Tensor::from_data(TensorData::new(a.clone(), [40, 100]), &dev),
                Tensor::from_data(TensorData::new(p.clone(), [40, 100]), &dev),
                d,
                series,
            ));
            for i in 0..a.len() {
                let (a, p) = (a[i] as f64, p[i] as f64);
                let want = (p * (-d * a).exp_m1()).ln_1p();
                // The series path is accurate to f32 rounding; `exp(−δ) − 1` loses up to half
                // an ulp of 1 (3·10⁻⁸) absolutely.
                let tol = if series { 2e-9 } else { 1e-7 } + 2e-6 * want.abs();
                assert!(
                    (got[i] as f64 - want).abs() < tol,
                    "d {d} series {series}: a {a} p {p}: {} vs {want}",
                    got[i]
                );
            }
        }
    }
}
