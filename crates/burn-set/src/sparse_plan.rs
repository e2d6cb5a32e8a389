//! The connection plan of a truly sparse layer: its COO indices grouped the two ways the host
//! kernels read them (by output neuron for the forward pass, by input neuron for the backward
//! pass), built once per structure and cached.
//!
//! A layer's structure changes only when SET evolves it (once an epoch), but the kernels ran a
//! counting sort of the indices on every step, as long as the product itself at 1,000 neurons
//! and most of it at 10,000. The cache is keyed by a 128-bit XXH3 fingerprint of the indices
//! (and the layer's shape), so any change of structure, by evolution, loading a record or a
//! user's edit, gives a new plan; a step pays one sequential read of the indices, from the
//! tensors' own storage on ndarray and flex (no copy).

use std::sync::{Arc, Mutex};
use xxhash_rust::xxh3::Xxh3;

/// Borrowed connection indices, in the integer type the backend stores.
#[derive(Debug, Clone, Copy)]
pub enum Indices<'a> {
    /// 32-bit indices.
    I32(&'a [i32]),
    /// 64-bit indices.
    I64(&'a [i64]),
}

impl Indices<'_> {
    fn len(&self) -> usize {
        match self {
            Self::I32(v) => v.len(),
            Self::I64(v) => v.len(),
        }
    }

    fn get(&self, k: usize) -> i64 {
        match self {
            Self::I32(v) => v[k] as i64,
            Self::I64(v) => v[k],
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Self::I32(v) => bytemuck::cast_slice(v),
            Self::I64(v) => bytemuck::cast_slice(v),
        }
    }

    fn width(&self) -> u8 {
        match self {
            Self::I32(_) => 4,
            Self::I64(_) => 8,
        }
    }
}

/// Connections grouped by one of their two neurons: group `g` holds slots
/// `offsets[g]..offsets[g + 1]`; slot `s` joins `g` to neuron `other[s]` on the other side and
/// is connection `perm[s]` of the layer's storage order (`perm` is `None` when the storage is
/// already grouped this way: slot = connection).
#[derive(Debug)]
pub struct Grouping {
    /// `n_groups + 1` slot offsets.
    pub offsets: Vec<usize>,
    /// The neuron on the other side, per slot.
    pub other: Vec<u32>,
    /// The connection of every slot, unless the storage order is this grouping.
    pub perm: Option<Vec<u32>>,
}

impl Grouping {
    /// Stable counting sort of the connections by `keys` (each `< n`).
    fn by(keys: Indices<'_>, n: usize, other: Indices<'_>) -> Self {
        let nnz = keys.len();
        let mut offsets = vec![0usize; n + 1];
        let mut sorted = true;
        let mut prev = 0i64;
        for k in 0..nnz {
            let key = keys.get(k);
            sorted &= key >= prev;
            prev = key;
            offsets[key as usize + 1] += 1;
        }
        for g in 0..n {
            offsets[g + 1] += offsets[g];
        }
        if sorted {
            let other = (0..nnz).map(|k| other.get(k) as u32).collect();
            return Self {
                offsets,
                other,
                perm: None,
            };
        }
        let mut next = offsets[..n].to_vec();
        let mut perm = vec![0u32; nnz];
        let mut to = vec![0u32; nnz];
        for k in 0..nnz {
            let slot = &mut next[keys.get(k) as usize];
            perm[*slot] = k as u32;
            to[*slot] = other.get(k) as u32;
            *slot += 1;
        }
        Self {
            offsets,
            other: to,
            perm: Some(perm),
        }
    }

    /// Number of groups.
    pub fn groups(&self) -> usize {
        self.offsets.len() - 1
    }

    /// `values` (storage order) in slot order: borrowed when they already are.
    pub fn arrange<'v>(&self, values: &'v [f32]) -> std::borrow::Cow<'v, [f32]> {
        use rayon::prelude::*;
        match &self.perm {
            None => std::borrow::Cow::Borrowed(values),
            Some(p) => std::borrow::Cow::Owned(
                p.par_iter()
                    .with_min_len(1 << 14)
                    .map(|&k| values[k as usize])
                    .collect(),
            ),
        }
    }

    /// Per-slot `v` back in storage order.
    pub fn restore(&self, v: Vec<f32>) -> Vec<f32> {
        match &self.perm {
            None => v,
            Some(p) => {
                let mut out = vec![0f32; v.len()];
                for (&k, x) in p.iter().zip(v) {
                    out[k as usize] = x;
                }
                out
            }
        }
    }
}

/// The two groupings of one layer's connections.
#[derive(Debug)]
pub struct ConnectionPlan {
    /// Input neurons.
    pub n_in: usize,
    /// Output neurons.
    pub n_out: usize,
    /// Grouped by output neuron; `other` is the input neuron (forward pass).
    pub by_output: Grouping,
    /// Grouped by input neuron; `other` is the output neuron (backward pass).
    pub by_input: Grouping,
}

impl ConnectionPlan {
    /// The plan of the connections `rows[k] → cols[k]` of an `n_in × n_out` layer.
    ///
    /// # Panics
    /// With a clear message if `rows` and `cols` differ in length, an index is out of range,
    /// or the layer has more neurons or connections than the kernels' 32-bit indices hold.
    pub fn new(rows: Indices<'_>, cols: Indices<'_>, n_in: usize, n_out: usize) -> Self {
        assert_eq!(
            rows.len(),
            cols.len(),
            "sparse layer: {} rows, {} cols (one of each per connection)",
            rows.len(),
            cols.len()
        );
        assert!(
            n_in.max(n_out).max(rows.len()) <= u32::MAX as usize,
            "sparse layer: {n_in} × {n_out} with {} connections exceeds the kernels' u32 indices",
            rows.len()
        );
        for (idx, n, what) in [(rows, n_in, "input"), (cols, n_out, "output")] {
            let bad = match idx {
                Indices::I32(v) => v
                    .iter()
                    .map(|&i| i as i64)
                    .find(|&i| i < 0 || i as usize >= n),
                Indices::I64(v) => v.iter().copied().find(|&i| i < 0 || i as usize >= n),
            };
            if let Some(i) = bad {
                panic!("sparse layer: {what} index {i} out of range 0..{n}");
            }
        }
        Self {
            n_in,
            n_out,
            by_output: Grouping::by(cols, n_out, rows),
            by_input: Grouping::by(rows, n_in, cols),
        }
    }

    /// [`new`](Self::new) for 64-bit indices.
    pub fn from_i64(rows: &[i64], cols: &[i64], n_in: usize, n_out: usize) -> Self {
        Self::new(Indices::I64(rows), Indices::I64(cols), n_in, n_out)
    }

    /// Number of connections.
    pub fn nnz(&self) -> usize {
        self.by_output.other.len()
    }

    /// The plan of these indices from the cache, built (and cached) on a miss.
    pub fn cached(rows: Indices<'_>, cols: Indices<'_>, n_in: usize, n_out: usize) -> Arc<Self> {
        let key = fingerprint(rows, cols, n_in, n_out);
        {
            let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(at) = cache.iter().position(|(k, _)| *k == key) {
                let hit = cache.remove(at);
                let plan = hit.1.clone();
                cache.insert(0, hit);
                return plan;
            }
        }
        let plan = Arc::new(Self::new(rows, cols, n_in, n_out));
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(0, (key, plan.clone()));
        cache.truncate(CACHED_PLANS);
        plan
    }
}

/// Plans kept, most recently used first: a few layers' current structures (an evolution makes
/// new ones; the old ones fall out).
const CACHED_PLANS: usize = 8;

static CACHE: Mutex<Vec<(u128, Arc<ConnectionPlan>)>> = Mutex::new(Vec::new());

fn fingerprint(rows: Indices<'_>, cols: Indices<'_>, n_in: usize, n_out: usize) -> u128 {
    let mut h = Xxh3::new();
    h.update(&(n_in as u64).to_le_bytes());
    h.update(&(n_out as u64).to_le_bytes());
    h.update(&(rows.len() as u64).to_le_bytes());
    h.update(&[rows.width(), cols.width()]);
    h.update(rows.bytes());
    h.update(cols.bytes());
    h.digest128()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_both_ways_and_keeps_storage_order_when_sorted() {
        // 3 × 4 layer, storage sorted by input row
        let rows = [0i64, 0, 1, 2, 2];
        let cols = [1i64, 3, 0, 0, 3];
        let p = ConnectionPlan::from_i64(&rows, &cols, 3, 4);
        assert_eq!(p.by_input.offsets, vec![0, 2, 3, 5]);
        assert!(p.by_input.perm.is_none());
        assert_eq!(p.by_input.other, vec![1, 3, 0, 0, 3]);
        assert_eq!(p.by_output.offsets, vec![0, 2, 3, 3, 5]);
        assert_eq!(p.by_output.perm, Some(vec![2, 3, 0, 1, 4]));
        assert_eq!(p.by_output.other, vec![1, 2, 0, 0, 2]);
        let v = [10.0, 11.0, 12.0, 13.0, 14.0];
        let arranged = p.by_output.arrange(&v);
        assert_eq!(&arranged[..], &[12.0, 13.0, 10.0, 11.0, 14.0]);
        assert_eq!(p.by_output.restore(arranged.into_owned()), v.to_vec());
    }

    #[test]
    fn the_cache_gives_the_same_plan_for_the_same_indices_only() {
        let rows = [0i32, 1, 1];
        let a = ConnectionPlan::cached(Indices::I32(&rows), Indices::I32(&[2, 0, 1]), 2, 3);
        let b = ConnectionPlan::cached(Indices::I32(&rows), Indices::I32(&[2, 0, 1]), 2, 3);
        assert!(Arc::ptr_eq(&a, &b));
        let c = ConnectionPlan::cached(Indices::I32(&rows), Indices::I32(&[2, 0, 2]), 2, 3);
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.by_output.offsets, vec![0, 1, 1, 3]);
        // same indices, other shape: another plan
        let d = ConnectionPlan::cached(Indices::I32(&rows), Indices::I32(&[2, 0, 1]), 2, 4);
        assert!(!Arc::ptr_eq(&a, &d));
    }

    #[test]
    #[should_panic(expected = "output index 9 out of range 0..9")]
    fn out_of_range_index_is_a_clear_error() {
        ConnectionPlan::from_i64(&[0], &[9], 1, 9);
    }

    #[test]
    #[should_panic(expected = "one of each per connection")]
    fn mismatched_lengths_are_a_clear_error() {
        ConnectionPlan::from_i64(&[0, 0], &[0], 1, 1);
    }
}
