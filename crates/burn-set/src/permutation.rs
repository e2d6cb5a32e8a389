//! A sparse layer's values moved between their storage order and a connection plan's slot
//! order, every step and in parallel: the weights into the kernels' order ([`gather`]), `∂w`
//! back (`scatter`); for large scattered permutations, through [`Buckets`]: two passes
//! whose random accesses stay in the cache, instead of one pass of random reads from memory.
//!
//! A tiled forward pass reads its weights in an order unrelated to the storage's (by output
//! neuron within a tile of inputs, where the storage is sorted by input). At 100,000 neurons
//! per layer (`bench scale`, timers around the calls, 10 steps; medians of 2 runs each):
//! - the two tiled forward products' weights, 8 million values a step: 30–45 ms a step
//!   gathered directly, 23–32 ms through buckets (a C test of the same shape: 43–64 ms
//!   against 18–28 ms per 4 million values);
//! - `∂w` of the three tiled backward products back in storage order, 10 million values:
//!   25–35 ms a step in one thread, 16 ms in parallel.
//!
//! Buckets take 6 bytes per connection and are built with the tiles, once per structure:
//! 0.17–0.24 s per layer at 100,000 neurons (4 million connections), 0.6 s at 333,334 (13.3
//! million), against ~10 ms a step saved per layer.

use rayon::prelude::*;

/// Slots per block: a bucket holds 256 KB of values, which stay in the L2 while its block is
/// gathered; a place in a bucket fits a `u16`.
const BLOCK: usize = 1 << 16;

/// Permutations of fewer values go direct (they fit the caches well enough).
pub const BUCKETS_MIN_VALUES: usize = 1 << 20;

/// Values per parallel task of a scatter or gather.
const CHUNK: usize = 1 << 14;

/// `v` in slot order for `perm` (the storage index of each slot): `out[s] = v[perm[s]]`.
///
/// # Panics
/// If `perm` holds an index out of `v`'s range.
pub fn gather(v: &[f32], perm: &[u32]) -> Vec<f32> {
    perm.par_iter()
        .with_min_len(CHUNK)
        .map(|&k| v[k as usize])
        .collect()
}

/// `v` (slot order) back in storage order for `perm`: `out[perm[s]] = v[s]`, in parallel.
///
/// # Safety
/// `perm` must be a permutation of `0..v.len()` (not checked: a check would be a pass of
/// random writes as long as the scatter). Indices out of range panic.
pub(crate) unsafe fn scatter(v: &[f32], perm: &[u32]) -> Vec<f32> {
    // SAFETY: the caller's contract.
    unsafe { permuted(v, perm) }
}

/// Whether `p` holds every index of `0..p.len()` once.
fn is_permutation(p: &[u32]) -> bool {
    let mut seen = vec![false; p.len()];
    p.iter().all(|&k| {
        let k = k as usize;
        k < seen.len() && !std::mem::replace(&mut seen[k], true)
    })
}

/// A raw pointer the tasks of a parallel scatter share (each writes other places).
struct Shared<T>(*mut T);

// SAFETY: the tasks write through the pointer at disjoint places (the callers' contract).
unsafe impl<T: Send> Sync for Shared<T> {}

/// `out[at[i]] = v[i]` for every `i`, in parallel.
///
/// # Safety
/// `at` must be a permutation of `0..v.len()`: every place of the output is written once, by
/// one task. (Indices out of range panic.)
unsafe fn permuted<T: Copy + Send + Sync>(v: &[T], at: &[u32]) -> Vec<T> {
    assert_eq!(v.len(), at.len(), "permuted: one place per value");
    let n = v.len();
    let mut out: Vec<T> = Vec::with_capacity(n);
    let base = Shared(out.as_mut_ptr());
    v.par_chunks(CHUNK)
        .zip(at.par_chunks(CHUNK))
        .for_each(|(v, at)| {
            let base = &base;
            for (&x, &i) in v.iter().zip(at) {
                let i = i as usize;
                assert!(i < n, "permuted: place {i} of {n}");
                // SAFETY: `i < n` (the capacity), and no other task writes place `i`.
                unsafe { base.0.add(i).write(x) };
            }
        });
    // SAFETY: all `n` places were written (`at` is a permutation).
    unsafe { out.set_len(n) };
    out
}

/// A fixed permutation of many scattered values split into blocks of 65,536 slots, each
/// with its *bucket*: the values of the block's slots, in storage order. Gathering then runs
/// in two passes: the values in storage order into the buckets (read in order; each bucket is
/// written in order), then each block from its bucket, which is in the cache. Scattering back
/// runs the two passes the other way.
#[derive(Debug)]
pub struct Buckets {
    /// The place in the buckets of every value (storage order); block `j`'s bucket is places
    /// `j·BLOCK..`.
    to_bucket: Vec<u32>,
    /// The place of each slot's value in its block's bucket.
    in_bucket: Vec<u16>,
}

impl Buckets {
    /// The buckets of `perm` (the storage index of each slot, a permutation of
    /// `0..perm.len()`) where they pay: at least [`BUCKETS_MIN_VALUES`] values, more than one
    /// slot in 16 of which is far (over 1 KB) from the one before. (A tiled backward pass
    /// reads the storage in order within each tile, skipping only other tiles' parts: a
    /// direct gather streams.)
    ///
    /// # Panics
    /// If `perm` is not a permutation (checked).
    pub fn for_perm(perm: &[u32]) -> Option<Self> {
        if perm.len() < BUCKETS_MIN_VALUES {
            return None;
        }
        let far = (perm.par_windows(2))
            .filter(|w| w[1].abs_diff(w[0]) > 256)
            .count();
        (far > perm.len() / 16).then(|| Self::new(perm))
    }

    /// The buckets of `perm`.
    ///
    /// # Panics
    /// If `perm` is not a permutation (checked).
    pub fn new(perm: &[u32]) -> Self {
        assert!(is_permutation(perm), "buckets: not a permutation");
        let n = perm.len();
        let slots: Vec<u32> = (0..n as u32).collect();
        // SAFETY: `perm` is a permutation (checked above).
        let slot_of = unsafe { permuted(&slots, perm) };
        // each block's bucket filled in storage order
        let mut fill: Vec<u32> = (0..n.div_ceil(BLOCK)).map(|j| (j * BLOCK) as u32).collect();
        let to_bucket: Vec<u32> = (slot_of.iter())
            .map(|&s| {
                let place = &mut fill[s as usize / BLOCK];
                *place += 1;
                *place - 1
            })
            .collect();
        let in_bucket = (perm.par_iter())
            .map(|&k| (to_bucket[k as usize] as usize % BLOCK) as u16)
            .collect();
        Self {
            to_bucket,
            in_bucket,
        }
    }

    /// `v` (storage order) in slot order: [`gather`] in two passes.
    ///
    /// # Panics
    /// If `v` is not as long as the permutation.
    pub fn gather(&self, v: &[f32]) -> Vec<f32> {
        assert_eq!(v.len(), self.in_bucket.len(), "buckets: values per slot");
        // SAFETY: `to_bucket` is a permutation (built from one).
        let buckets = unsafe { permuted(v, &self.to_bucket) };
        let mut out = vec![0f32; v.len()];
        out.par_chunks_mut(BLOCK)
            .zip(self.in_bucket.par_chunks(BLOCK))
            .zip(buckets.par_chunks(BLOCK))
            .for_each(|((out, places), bucket)| {
                for (o, &p) in out.iter_mut().zip(places) {
                    *o = bucket[p as usize];
                }
            });
        out
    }

    /// `v` (slot order) back in storage order, the inverse of [`Buckets::gather`], in two
    /// passes.
    ///
    /// # Panics
    /// If `v` is not as long as the permutation.
    pub fn scatter(&self, v: &[f32]) -> Vec<f32> {
        assert_eq!(v.len(), self.in_bucket.len(), "buckets: values per slot");
        let mut buckets = vec![0f32; v.len()];
        buckets
            .par_chunks_mut(BLOCK)
            .zip(self.in_bucket.par_chunks(BLOCK))
            .zip(v.par_chunks(BLOCK))
            .for_each(|((bucket, places), v)| {
                for (&p, &x) in places.iter().zip(v) {
                    bucket[p as usize] = x;
                }
            });
        gather(&buckets, &self.to_bucket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{SeedableRng, rngs::StdRng};

    /// A permutation of `n` shuffled within `tiles` equal parts (a tiled forward pass's).
    fn tiled_shuffle(n: usize, tiles: usize, seed: u64) -> Vec<u32> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut p: Vec<u32> = (0..n as u32).collect();
        for part in p.chunks_mut(n.div_ceil(tiles)) {
            part.shuffle(&mut rng);
        }
        p
    }

    #[test]
    fn buckets_gather_and_scatter_like_the_direct_permutation() {
        // one short block, one block and a bit, several blocks with a short last one
        for (n, tiles) in [(5, 1), (BLOCK + 3, 1), (3 * BLOCK + 17, 2), (2 * BLOCK, 7)] {
            let perm = tiled_shuffle(n, tiles, n as u64);
            let v: Vec<f32> = (0..n).map(|k| k as f32 * 0.5 - 7.0).collect();
            let b = Buckets::new(&perm);
            let arranged = b.gather(&v);
            assert_eq!(arranged, gather(&v, &perm), "n {n}");
            assert_eq!(b.scatter(&arranged), v, "n {n}");
            // SAFETY: `perm` is a permutation (shuffled `0..n`).
            assert_eq!(unsafe { scatter(&arranged, &perm) }, v, "n {n}");
        }
    }

    #[test]
    fn buckets_only_for_large_scattered_permutations() {
        let n = BUCKETS_MIN_VALUES;
        assert!(Buckets::for_perm(&tiled_shuffle(n, 2, 1)).is_some());
        assert!(Buckets::for_perm(&tiled_shuffle(n - 1, 2, 1)).is_none());
        // in order within each of 7 tiles (a tiled backward pass's order)
        let per_tile: Vec<u32> = (0..7u32)
            .flat_map(|t| (0..n as u32).filter(move |k| k % 7 == t))
            .collect();
        assert!(Buckets::for_perm(&per_tile).is_none());
        // ascending, but a long way apart (the layer's storage read by output neuron)
        let strided: Vec<u32> = (0..1000u32)
            .flat_map(|o| (0..n as u32 / 1000).map(move |i| i * 1000 + o))
            .chain(n as u32 / 1000 * 1000..n as u32)
            .collect();
        assert!(Buckets::for_perm(&strided).is_some());
    }

    #[test]
    #[should_panic(expected = "not a permutation")]
    fn a_repeated_index_is_refused() {
        let _ = Buckets::new(&[0, 1, 1]);
    }
}
