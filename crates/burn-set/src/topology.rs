//! Erdős–Rényi initialisation of a sparse layer's connectivity (pure Rust, no tensors).
//!
//! A layer between `n_in` inputs and `n_out` outputs is described by the sorted list of its
//! connections' *flat positions* `row * n_out + col` (row = input neuron, col = output neuron),
//! the same row-major layout as Burn's `[d_input, d_output]` linear weight. Nothing of size
//! `n_in × n_out` is ever allocated here, so layers with 10¹² possible connections are fine.

use rand::SeedableRng;
use rand::rngs::StdRng;
use std::fmt;

/// Why a sparse topology cannot be built.
#[derive(Debug, Clone, PartialEq)]
pub enum TopologyError {
    /// ε must be finite and positive.
    InvalidEpsilon(f64),
    /// A layer needs at least one input and one output.
    EmptyLayer {
        /// Inputs.
        n_in: usize,
        /// Outputs.
        n_out: usize,
    },
    /// p = ε(n_in + n_out)/(n_in·n_out) exceeds 1: the layer would have to be denser than dense.
    ProbabilityAboveOne {
        /// ε asked for.
        epsilon: f64,
        /// Inputs.
        n_in: usize,
        /// Outputs.
        n_out: usize,
        /// The resulting probability.
        probability: f64,
    },
    /// A truly sparse layer was asked for with `Sparsity::Dense`.
    DenseSparse,
    /// More connections asked for than the layer has positions.
    TooManyConnections {
        /// Connections asked for.
        requested: u64,
        /// Positions available.
        positions: u64,
    },
    /// Connection positions that are not sorted, distinct and inside the layer.
    InvalidPositions {
        /// Index in the position list of the first offending entry.
        index: usize,
        /// Its position.
        position: u64,
        /// Positions of the layer (`n_in · n_out`).
        capacity: u64,
    },
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidEpsilon(e) => write!(f, "epsilon must be finite and > 0, got {e}"),
            Self::EmptyLayer { n_in, n_out } => {
                write!(
                    f,
                    "a layer needs d_input > 0 and d_output > 0, got {n_in}×{n_out}"
                )
            }
            Self::ProbabilityAboveOne {
                epsilon,
                n_in,
                n_out,
                probability,
            } => write!(
                f,
                "epsilon = {epsilon} gives connection probability ε(n_in+n_out)/(n_in·n_out) = \
                 {probability:.3} > 1 for a {n_in}×{n_out} layer; use epsilon ≤ {:.3} or a dense layer",
                (*n_in as f64 * *n_out as f64) / (*n_in as f64 + *n_out as f64)
            ),
            Self::DenseSparse => write!(
                f,
                "a truly sparse layer needs Sparsity::Set or Sparsity::FixProb, not Dense"
            ),
            Self::TooManyConnections {
                requested,
                positions,
            } => write!(
                f,
                "{requested} connections requested but the layer has only {positions} positions"
            ),
            Self::InvalidPositions {
                index,
                position,
                capacity,
            } => write!(
                f,
                "connection {index} is at position {position}: positions must be sorted, \
                 distinct and below n_in · n_out = {capacity}"
            ),
        }
    }
}

impl std::error::Error for TopologyError {}

/// Connection probability of SET's Erdős–Rényi graph: `p = ε (n_in + n_out) / (n_in · n_out)`.
pub fn er_probability(epsilon: f64, n_in: usize, n_out: usize) -> Result<f64, TopologyError> {
    if !(epsilon.is_finite() && epsilon > 0.0) {
        return Err(TopologyError::InvalidEpsilon(epsilon));
    }
    if n_in == 0 || n_out == 0 {
        return Err(TopologyError::EmptyLayer { n_in, n_out });
    }
    let p = epsilon * (n_in as f64 + n_out as f64) / (n_in as f64 * n_out as f64);
    if p > 1.0 {
        return Err(TopologyError::ProbabilityAboveOne {
            epsilon,
            n_in,
            n_out,
            probability: p,
        });
    }
    Ok(p)
}

/// The exact number of connections SET's init gives a layer: `round(p · n_in · n_out)`, i.e.
/// `round(ε (n_in + n_out))`, at least 1.
pub fn er_connection_count(epsilon: f64, n_in: usize, n_out: usize) -> Result<u64, TopologyError> {
    let p = er_probability(epsilon, n_in, n_out)?;
    let total = n_in as u64 * n_out as u64;
    Ok(((p * total as f64).round() as u64).clamp(1, total))
}

/// Mixes a seed with a stream of identifiers into an independent RNG (SplitMix64 finaliser):
/// `(seed, epoch, layer)` always gives the same stream, on every machine and replica.
pub fn derived_rng(seed: u64, ids: &[u64]) -> StdRng {
    let mut h = seed ^ 0x9E37_79B9_7F4A_7C15;
    for &id in ids {
        h = splitmix(h ^ splitmix(id.wrapping_add(0x632B_E59B_D9B4_E019)));
    }
    StdRng::seed_from_u64(h)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The first index `≥ from` of the sorted `s` whose value is `≥ v` (`s.len()` if none), by a
/// galloping search from `from`: cheap both when the next match is near and far.
fn first_at_least(s: &[u64], from: usize, v: u64) -> usize {
    if from >= s.len() || s[from] >= v {
        return from;
    }
    // s[lo] < v
    let (mut lo, mut step) = (from, 1);
    while lo + step < s.len() && s[lo + step] < v {
        lo += step;
        step *= 2;
    }
    let hi = (lo + step).min(s.len());
    lo + 1 + s[lo + 1..hi].partition_point(|&x| x < v)
}

/// The union of two sorted lists without common values, sorted.
fn merge_sorted(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] < b[j] {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// `count` distinct positions drawn uniformly from `0..total`, sorted ascending.
/// Memory is O(count), never O(total).
pub fn sample_distinct(
    rng: &mut StdRng,
    total: u64,
    count: u64,
) -> Result<Vec<u64>, TopologyError> {
    sample_excluding(rng, total, count, &[])
}

/// `count` distinct positions drawn uniformly from `0..total` minus the sorted slice `taken`,
/// sorted ascending. Rejection sampling for sparse layers; enumeration of the free positions
/// when the layer is more than half full (only then is memory O(total)).
pub fn sample_excluding(
    rng: &mut StdRng,
    total: u64,
    count: u64,
    taken: &[u64],
) -> Result<Vec<u64>, TopologyError> {
    use rand::Rng;
    let free = total - taken.len() as u64;
    if count > free {
        return Err(TopologyError::TooManyConnections {
            requested: count + taken.len() as u64,
            positions: total,
        });
    }
    if count == 0 {
        return Ok(Vec::new());
    }
    let occupied = taken.len() as u64 + count;
    if occupied * 2 > total {
        // Dense regime: list the free positions and pick `count` of them.
        let mut free_pos = Vec::with_capacity(free as usize);
        let mut t = taken.iter().peekable();
        for p in 0..total {
            if t.peek() == Some(&&p) {
                t.next();
            } else {
                free_pos.push(p);
            }
        }
        let picked = rand::seq::index::sample(rng, free_pos.len(), count as usize);
        let mut out: Vec<u64> = picked.into_iter().map(|i| free_pos[i]).collect();
        out.sort_unstable();
        return Ok(out);
    }
    // Rejection sampling in rounds of exactly as many draws as positions still missing.
    // A round can only complete the sample if every one of its draws is accepted, so the
    // draws, the accepted set and the generator's state afterwards are exactly those of
    // drawing one position at a time until `count` distinct free ones are found; but each
    // round is judged by one sort and merges against the sorted `taken` and accepted
    // lists, not by a hash-set insert and a binary search per draw.
    let mut out = Vec::with_capacity(count as usize);
    let mut round: Vec<u64> = Vec::with_capacity(count as usize);
    while (out.len() as u64) < count {
        let need = count as usize - out.len();
        round.clear();
        round.extend((0..need).map(|_| rng.random_range(0..total)));
        round.sort_unstable();
        round.dedup();
        let (mut t, mut a) = (0, 0);
        round.retain(|&p| {
            t = first_at_least(taken, t, p);
            a = first_at_least(&out, a, p);
            taken.get(t) != Some(&p) && out.get(a) != Some(&p)
        });
        out = merge_sorted(&out, &round);
    }
    Ok(out)
}

/// The input neuron (row) of every flat position `row * n_out + col`, as COO indices.
pub fn row_indices(positions: &[u64], n_out: usize) -> Vec<i64> {
    positions
        .iter()
        .map(|&p| (p / n_out as u64) as i64)
        .collect()
}

/// The output neuron (column) of every flat position `row * n_out + col`, as COO indices.
pub fn col_indices(positions: &[u64], n_out: usize) -> Vec<i64> {
    positions
        .iter()
        .map(|&p| (p % n_out as u64) as i64)
        .collect()
}

/// Checks that `positions` are strictly increasing and below `capacity`.
pub fn validate_positions(positions: &[u64], capacity: u64) -> Result<(), TopologyError> {
    let mut prev: Option<u64> = None;
    for (index, &position) in positions.iter().enumerate() {
        if position >= capacity || prev.is_some_and(|p| p >= position) {
            return Err(TopologyError::InvalidPositions {
                index,
                position,
                capacity,
            });
        }
        prev = Some(position);
    }
    Ok(())
}

/// The connectivity of one sparse layer: sorted flat positions `row * n_out + col`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseTopology {
    /// Number of input neurons (rows of the `[d_input, d_output]` weight).
    pub n_in: usize,
    /// Number of output neurons (columns).
    pub n_out: usize,
    /// Sorted, distinct flat positions of the connections.
    pub positions: Vec<u64>,
}

impl SparseTopology {
    /// SET's Erdős–Rényi init: exactly [`er_connection_count`] distinct connections drawn
    /// uniformly, reproducible from `seed`.
    pub fn erdos_renyi(
        n_in: usize,
        n_out: usize,
        epsilon: f64,
        seed: u64,
    ) -> Result<Self, TopologyError> {
        let count = er_connection_count(epsilon, n_in, n_out)?;
        let mut rng = derived_rng(seed, &[0x7090]);
        let positions = sample_distinct(&mut rng, n_in as u64 * n_out as u64, count)?;
        Ok(Self {
            n_in,
            n_out,
            positions,
        })
    }

    /// Every position connected (a dense layer expressed as a topology).
    pub fn dense(n_in: usize, n_out: usize) -> Self {
        Self {
            n_in,
            n_out,
            positions: (0..n_in as u64 * n_out as u64).collect(),
        }
    }

    /// Builds a topology from a row-major boolean mask of `n_in × n_out` entries.
    pub fn from_mask(n_in: usize, n_out: usize, mask: &[bool]) -> Self {
        assert_eq!(mask.len(), n_in * n_out, "mask length must be n_in * n_out");
        let positions = mask
            .iter()
            .enumerate()
            .filter_map(|(i, &m)| m.then_some(i as u64))
            .collect();
        Self {
            n_in,
            n_out,
            positions,
        }
    }

    /// Builds a topology from a row-major 0/1 float mask (non-zero = connected).
    pub fn from_mask_f32(n_in: usize, n_out: usize, mask: &[f32]) -> Self {
        assert_eq!(mask.len(), n_in * n_out, "mask length must be n_in * n_out");
        let positions = mask
            .iter()
            .enumerate()
            .filter_map(|(i, &m)| (m != 0.0).then_some(i as u64))
            .collect();
        Self {
            n_in,
            n_out,
            positions,
        }
    }

    /// The row-major 0/1 float mask (allocates `n_in · n_out`: for masked layers only).
    pub fn to_mask_f32(&self) -> Vec<f32> {
        let mut m = vec![0.0; self.capacity() as usize];
        for &p in &self.positions {
            m[p as usize] = 1.0;
        }
        m
    }

    /// Checks that the positions are strictly increasing and inside the layer (what evolution
    /// and the sparse layers rely on; the fields are public, so a hand-built topology may not
    /// be).
    pub fn validate(&self) -> Result<(), TopologyError> {
        validate_positions(&self.positions, self.capacity())
    }

    /// Number of connections.
    pub fn nnz(&self) -> usize {
        self.positions.len()
    }

    /// Number of possible connections, `n_in · n_out`.
    pub fn capacity(&self) -> u64 {
        self.n_in as u64 * self.n_out as u64
    }

    /// Fraction of possible connections present.
    pub fn density(&self) -> f64 {
        self.nnz() as f64 / self.capacity() as f64
    }

    /// The row-major boolean mask (allocates `n_in · n_out`: for masked layers only).
    pub fn to_mask(&self) -> Vec<bool> {
        let mut m = vec![false; self.capacity() as usize];
        for &p in &self.positions {
            m[p as usize] = true;
        }
        m
    }

    /// Degree of every input neuron (connections leaving it).
    pub fn in_degrees(&self) -> Vec<u32> {
        let mut d = vec![0u32; self.n_in];
        for &p in &self.positions {
            d[(p / self.n_out as u64) as usize] += 1;
        }
        d
    }

    /// Degree of every output neuron (connections reaching it).
    pub fn out_degrees(&self) -> Vec<u32> {
        let mut d = vec![0u32; self.n_out];
        for &p in &self.positions {
            d[(p % self.n_out as u64) as usize] += 1;
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn probability_matches_paper_formula_and_rejects_above_one() {
        let p = er_probability(20.0, 784, 1000).unwrap();
        assert!((p - 20.0 * 1784.0 / 784_000.0).abs() < 1e-12);
        assert_eq!(er_connection_count(20.0, 784, 1000).unwrap(), 35_680);
        let err = er_probability(20.0, 10, 10).unwrap_err();
        assert!(matches!(err, TopologyError::ProbabilityAboveOne { .. }));
        assert!(err.to_string().contains("> 1"), "{err}");
        assert!(er_probability(0.0, 10, 10).is_err());
        assert!(er_probability(f64::NAN, 10, 10).is_err());
        assert!(er_probability(1.0, 0, 10).is_err());
    }

    #[test]
    fn invalid_positions_are_rejected() {
        let t = |positions: Vec<u64>| SparseTopology {
            n_in: 3,
            n_out: 4,
            positions,
        };
        assert!(t(vec![0, 5, 11]).validate().is_ok());
        assert!(t(vec![]).validate().is_ok());
        for (bad, index) in [(vec![7, 2, 5], 1), (vec![1, 4, 4], 2), (vec![0, 12], 1)] {
            match t(bad).validate() {
                Err(TopologyError::InvalidPositions { index: i, .. }) => assert_eq!(i, index),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn erdos_renyi_is_exact_and_reproducible() {
        let a = SparseTopology::erdos_renyi(784, 1000, 20.0, 7).unwrap();
        let b = SparseTopology::erdos_renyi(784, 1000, 20.0, 7).unwrap();
        let c = SparseTopology::erdos_renyi(784, 1000, 20.0, 8).unwrap();
        assert_eq!(a.nnz(), 35_680);
        assert_eq!(a, b);
        assert_ne!(a.positions, c.positions);
        assert!(a.positions.windows(2).all(|w| w[0] < w[1]));
        assert!(*a.positions.last().unwrap() < a.capacity());
    }

    #[test]
    fn huge_layer_needs_no_dense_memory() {
        // 10^6 × 10^6 = 10^12 positions, ε = 2 → 4·10^6 connections.
        let t = SparseTopology::erdos_renyi(1_000_000, 1_000_000, 2.0, 1).unwrap();
        assert_eq!(t.nnz(), 4_000_000);
        assert!(t.positions.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn mask_round_trip_and_degrees() {
        let t = SparseTopology::erdos_renyi(30, 20, 3.0, 3).unwrap();
        let m = t.to_mask();
        assert_eq!(SparseTopology::from_mask(30, 20, &m), t);
        assert_eq!(
            t.in_degrees().iter().map(|&d| d as usize).sum::<usize>(),
            t.nnz()
        );
        assert_eq!(
            t.out_degrees().iter().map(|&d| d as usize).sum::<usize>(),
            t.nnz()
        );
    }

    /// The rejection sampler drawn one position at a time (what the rounds must equal).
    fn one_at_a_time(rng: &mut StdRng, total: u64, count: u64, taken: &[u64]) -> Vec<u64> {
        use rand::Rng;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        while (out.len() as u64) < count {
            let p = rng.random_range(0..total);
            if taken.binary_search(&p).is_err() && seen.insert(p) {
                out.push(p);
            }
        }
        out.sort_unstable();
        out
    }

    proptest! {
        #[test]
        fn sampling_in_rounds_equals_one_draw_at_a_time(
            total in 10u64..5_000,
            taken_frac in 0.0f64..0.25,
            count_frac in 0.0f64..0.2,
            seed in any::<u64>(),
        ) {
            let mut rng = derived_rng(seed, &[2]);
            let taken = sample_distinct(&mut rng, total, (total as f64 * taken_frac) as u64).unwrap();
            let count = (total as f64 * count_frac) as u64;
            let (mut r1, mut r2) = (rng.clone(), rng);
            let got = sample_excluding(&mut r1, total, count, &taken).unwrap();
            prop_assert_eq!(got, one_at_a_time(&mut r2, total, count, &taken));
            // the generator is left in the same state (callers draw new weights from it next)
            use rand::Rng;
            prop_assert_eq!(r1.random::<u64>(), r2.random::<u64>());
        }

        #[test]
        fn sample_excluding_avoids_taken(total in 1u64..400, frac in 0.0f64..1.0, seed in any::<u64>()) {
            let mut rng = derived_rng(seed, &[1]);
            let n_taken = (total as f64 * frac * 0.5) as u64;
            let taken = sample_distinct(&mut rng, total, n_taken).unwrap();
            let free = total - n_taken;
            let count = free / 2 + (free % 2);
            let got = sample_excluding(&mut rng, total, count, &taken).unwrap();
            prop_assert_eq!(got.len() as u64, count);
            prop_assert!(got.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(got.iter().all(|p| *p < total && taken.binary_search(p).is_err()));
            prop_assert!(sample_excluding(&mut rng, total, free + 1, &taken).is_err());
        }
    }
}
