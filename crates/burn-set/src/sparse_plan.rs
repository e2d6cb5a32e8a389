//! The connection plan of a truly sparse layer: its COO indices grouped the two ways the host
//! kernels read them (by output neuron for the forward pass, by input neuron for the backward
//! pass), built once per structure and cached; for the largest layers each grouping also
//! keeps its connections [tile by tile](Tiles) of the neurons the kernels gather from, built
//! on first use.
//!
//! A layer's structure changes only when SET evolves it (once an epoch), but the kernels ran a
//! counting sort of the indices on every step, as long as the product itself at 1,000 neurons
//! and most of it at 10,000. Two kinds of keys find a cached plan:
//! - **the indices' storage** ([`ConnectionPlan::cached_in_storage`]; flex, and ndarray's own
//!   arrays): the address and length of the two index slices, their element width and the
//!   layer's shape, while the cache holds a reference to that storage ([`IndexStorage`]).
//!   Held, the storage can neither be freed and reused for other indices nor written in place
//!   (both backends copy shared storage before writing to it), so the same address means the
//!   same indices. The reference must pin the very storage the slices are in: ndarray's
//!   storage borrowed from a loaded file is copied when cloned, so it takes the fingerprint
//!   instead, and a reference that does not point at the keyed addresses is not cached by
//!   storage. Evolution, loading a record or a user's edit makes new index tensors, hence new
//!   storage and a new plan. Each lookup first drops the entries whose storage nothing else
//!   refers to any more (their layer has moved on), so a stale structure's plan does not wait
//!   for the least-recently-used eviction. A step pays no read of the indices.
//! - **a 128-bit XXH3 fingerprint** of the indices and the layer's shape
//!   ([`ConnectionPlan::cached`]) otherwise: any change of structure gives a new fingerprint.
//!   Hashing the indices of a 10,000-neuron MLP took ~2 % of its step in a profile, on one core, which is
//!   why the storage key exists.

use crate::permutation::{self, BUCKETS_MIN_VALUES, Buckets};
use std::sync::{Arc, Mutex, OnceLock};
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

    /// Where the indices are stored.
    pub fn address(&self) -> usize {
        self.bytes().as_ptr() as usize
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
    /// The connection of every slot, unless the storage order is this grouping: a
    /// permutation of the slots (written by [`Grouping::by`] only; [`Grouping::restore`]
    /// relies on it).
    pub(crate) perm: Option<Vec<u32>>,
    /// The same slots tile by tile ([`Grouping::tiled`]), built on first use.
    tiles: OnceLock<Tiles>,
}

impl Grouping {
    /// The connections stably sorted by `keys` (each `< n`; [`radix_order`], unless they are
    /// sorted already).
    fn by(keys: Indices<'_>, n: usize, other: Indices<'_>) -> Self {
        let nnz = keys.len();
        let sorted = (1..nnz).all(|k| keys.get(k - 1) <= keys.get(k));
        let (sorted_keys, perm, other) = if sorted {
            let other = (0..nnz).map(|k| other.get(k) as u32).collect();
            (None, None, other)
        } else {
            let (key, perm, to) = radix_order(keys, n, other);
            (Some(key), Some(perm), to)
        };
        // the group sizes, counted along the keys in slot order (ascending)
        let mut offsets = vec![0usize; n + 1];
        match &sorted_keys {
            Some(key) => key.iter().for_each(|&k| offsets[k as usize + 1] += 1),
            None => (0..nnz).for_each(|k| offsets[keys.get(k) as usize + 1] += 1),
        }
        for g in 0..n {
            offsets[g + 1] += offsets[g];
        }
        Self {
            offsets,
            other,
            perm,
            tiles: OnceLock::new(),
        }
    }

    /// Number of groups.
    pub fn groups(&self) -> usize {
        self.offsets.len() - 1
    }

    /// `values` (storage order) in slot order: borrowed when they already are.
    pub fn arrange<'v>(&self, values: &'v [f32]) -> std::borrow::Cow<'v, [f32]> {
        arrange(self.perm.as_deref(), None, values)
    }

    /// Per-slot `v` back in storage order.
    pub fn restore(&self, v: Vec<f32>) -> Vec<f32> {
        restore(self.perm.as_deref(), None, v)
    }

    /// These slots [tile by tile](Tiles) of the `n_other` neurons on the other side, in as
    /// few tiles of at most `max_rows` neurons as there can be, of equal size (but the
    /// last); built on the first call and kept with the grouping.
    ///
    /// # Panics
    /// If an earlier call asked for another tile size (a grouping keeps one).
    pub fn tiled(&self, n_other: usize, max_rows: usize) -> &Tiles {
        let rows = n_other.div_ceil(n_other.div_ceil(max_rows).max(1)).max(1);
        let tiles = self.tiles.get_or_init(|| Tiles::new(self, n_other, rows));
        assert_eq!(tiles.rows, rows, "one tile size per grouping");
        tiles
    }
}

/// Key bits per pass of [`radix_order`]: 2,048 buckets, whose write positions in the three
/// arrays a pass moves stay in the L2 cache.
const RADIX_BITS: u32 = 11;

/// The connections stably sorted by `keys` (each `< n`): the key, the connection and its
/// neuron in `other` of each slot. Least-significant-digit radix passes of at most [`RADIX_BITS`]
/// key bits (one pass, a counting sort, up to 2,048 groups; two up to 4,194,304). A single
/// counting sort over all `n` keys wrote each connection to one of `n` places at random, and
/// the forward grouping of a layer of 333,334 × 333,334 neurons, rebuilt after every
/// evolution, took 0.6–0.8 s in `bench scale`; 0.43–0.45 s with these passes (timed on
/// mimalloc, the CLI's allocator, once it has memory to reuse). The passes hold three more
/// arrays of `nnz` `u32` while they run.
fn radix_order(keys: Indices<'_>, n: usize, other: Indices<'_>) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let nnz = keys.len();
    let bits = usize::BITS - n.saturating_sub(1).leading_zeros();
    let passes = bits.div_ceil(RADIX_BITS).max(1);
    let per = bits.div_ceil(passes);
    // (key, connection, other neuron) of each slot, moved together pass by pass
    let mut key: Vec<u32> = (0..nnz).map(|k| keys.get(k) as u32).collect();
    let mut perm: Vec<u32> = (0..nnz as u32).collect();
    let mut to: Vec<u32> = (0..nnz).map(|k| other.get(k) as u32).collect();
    let (mut key2, mut perm2, mut to2) = (vec![0u32; nnz], vec![0u32; nnz], vec![0u32; nnz]);
    for pass in 0..passes {
        let (shift, mask) = (pass * per, (1u32 << per) - 1);
        let digit = |k: u32| ((k >> shift) & mask) as usize;
        let mut next = vec![0usize; 1 << per];
        for &k in &key {
            next[digit(k)] += 1;
        }
        let mut at = 0;
        for c in &mut next {
            (*c, at) = (at, at + *c);
        }
        for ((&k, &p), &o) in key.iter().zip(&perm).zip(&to) {
            let slot = &mut next[digit(k)];
            (key2[*slot], perm2[*slot], to2[*slot]) = (k, p, o);
            *slot += 1;
        }
        std::mem::swap(&mut key, &mut key2);
        std::mem::swap(&mut perm, &mut perm2);
        std::mem::swap(&mut to, &mut to2);
    }
    (key, perm, to)
}

/// `values` (storage order) in the order of `perm` (the connection of each slot; `None`:
/// the same order, borrowed), through `buckets` (`perm`'s) when there are; in parallel.
fn arrange<'v>(
    perm: Option<&[u32]>,
    buckets: Option<&Buckets>,
    values: &'v [f32],
) -> std::borrow::Cow<'v, [f32]> {
    use std::borrow::Cow;
    match (perm, buckets) {
        (None, _) => Cow::Borrowed(values),
        (Some(_), Some(b)) => Cow::Owned(b.gather(values)),
        (Some(p), None) => Cow::Owned(permutation::gather(values, p)),
    }
}

/// Per-slot `v` back in storage order (the inverse of [`arrange`]), in parallel.
fn restore(perm: Option<&[u32]>, buckets: Option<&Buckets>, v: Vec<f32>) -> Vec<f32> {
    match (perm, buckets) {
        (None, _) => v,
        (Some(_), Some(b)) => b.scatter(&v),
        // SAFETY: a grouping's or its tiles' `perm` is a permutation of the slots: the
        // counting sorts of `Grouping::by` and `Tiles::new` place each slot once, and nothing
        // else writes the (crate-private) fields.
        (Some(p), None) => unsafe { permutation::scatter(&v, p) },
    }
}

/// The slots of a [`Grouping`] reordered tile by tile of the neurons on the other side (the
/// rows a product gathers): tile `t` holds the connections to other-side neurons
/// `t·rows..(t + 1)·rows`, and within a tile they keep the grouping's order. A product then
/// runs tile by tile, gathering from one tile's rows at a time: few enough to stay in the
/// cache where all the rows do not.
///
/// A tile's slots come in *runs*, one per group with connections in the tile. Tile 0 has a
/// run for every group, empty or not (so that a product writes every row there and adds to
/// it in the later tiles). The runs take at most `nnz + n_groups` entries: the memory stays
/// linear in the layer's size.
#[derive(Debug)]
pub struct Tiles {
    /// Other-side neurons per tile.
    pub rows: usize,
    /// Tile `t`'s runs are `tile_runs[t]..tile_runs[t + 1]`.
    pub tile_runs: Vec<usize>,
    /// The group of each run (ascending within a tile).
    pub run_group: Vec<u32>,
    /// The slot end of each run: run `r` holds slots `run_end[r - 1]..run_end[r]` (from 0
    /// for the first).
    pub run_end: Vec<usize>,
    /// The neuron on the other side, per slot.
    pub other: Vec<u32>,
    /// The connection (storage order) of every slot: a permutation of the slots (written by
    /// [`Tiles::new`] only; [`Tiles::restore`] relies on it).
    pub(crate) perm: Vec<u32>,
    /// `perm`'s [`Buckets`] where they pay (a forward pass's tiles, whose order is unrelated
    /// to the storage's).
    buckets: Option<Buckets>,
    /// `perm`'s inverse (the slot of every connection) for [`arrange`](Tiles::arrange) and
    /// [`restore`](Tiles::restore), where the grouping is in storage order (a backward pass's
    /// tiles of a layer stored by input) and there are enough values for it to pay.
    inverse: Option<Vec<u32>>,
}

impl Tiles {
    /// `groups` (whose other-side neurons are `< n_other`) in tiles of `rows` neurons.
    pub fn new(groups: &Grouping, n_other: usize, rows: usize) -> Self {
        assert!(rows > 0, "tiles of no rows");
        let n_tiles = n_other.div_ceil(rows).max(1);
        let tile = |s: usize| groups.other[s] as usize / rows;
        let mut next = vec![0usize; n_tiles + 1];
        for s in 0..groups.other.len() {
            assert!(
                (groups.other[s] as usize) < n_other,
                "sparse layer: a connection outside the rows it gathers from"
            );
            next[tile(s) + 1] += 1;
        }
        for t in 0..n_tiles {
            next[t + 1] += next[t];
        }
        let nnz = groups.other.len();
        let (mut other, mut perm) = (vec![0u32; nnz], vec![0u32; nnz]);
        // written in order, as the slots are visited in storage order
        let mut inverse =
            (groups.perm.is_none() && nnz >= BUCKETS_MIN_VALUES).then(|| vec![0u32; nnz]);
        let mut runs: Vec<(Vec<u32>, Vec<usize>)> = vec![(Vec::new(), Vec::new()); n_tiles];
        for g in 0..groups.groups() {
            // tile 0: a run for every group, empty until its slots come
            runs[0].0.push(g as u32);
            runs[0].1.push(next[0]);
            for s in groups.offsets[g]..groups.offsets[g + 1] {
                let t = tile(s);
                let at = next[t];
                next[t] += 1;
                other[at] = groups.other[s];
                perm[at] = groups.perm.as_ref().map_or(s as u32, |p| p[s]);
                if let Some(inverse) = inverse.as_mut() {
                    inverse[s] = at as u32;
                }
                let (gs, ends) = &mut runs[t];
                if gs.last() == Some(&(g as u32)) {
                    *ends.last_mut().expect("a run") = at + 1;
                } else {
                    gs.push(g as u32);
                    ends.push(at + 1);
                }
            }
        }
        let mut tile_runs = vec![0];
        let (mut run_group, mut run_end) = (Vec::new(), Vec::new());
        for (gs, ends) in runs {
            run_group.extend(gs);
            run_end.extend(ends);
            tile_runs.push(run_group.len());
        }
        Self {
            rows,
            tile_runs,
            run_group,
            run_end,
            other,
            // the inverse's passes run in order where buckets would be built for nothing
            buckets: inverse
                .is_none()
                .then(|| Buckets::for_perm(&perm))
                .flatten(),
            inverse,
            perm,
        }
    }

    /// Number of tiles.
    pub fn count(&self) -> usize {
        self.tile_runs.len() - 1
    }

    /// `values` (storage order) in slot order. With the inverse permutation (a backward
    /// pass's tiles) as a scatter: its reads are in order and its writes go to one run after
    /// another of each tile, where a gather read every cache line of `values` once per tile.
    pub fn arrange<'v>(&self, values: &'v [f32]) -> std::borrow::Cow<'v, [f32]> {
        match &self.inverse {
            // SAFETY: `inverse` is the inverse of `perm`, a permutation of the slots (see
            // `restore`), written by `Tiles::new` only.
            Some(inverse) => {
                std::borrow::Cow::Owned(unsafe { permutation::scatter(values, inverse) })
            }
            None => arrange(Some(&self.perm), self.buckets.as_ref(), values),
        }
    }

    /// Per-slot `v` back in storage order. Without buckets (a backward pass's tiles, whose
    /// order is the storage's cut into runs, one per row and tile) as a gather through the
    /// inverse permutation: its writes are in order and its reads come from one run after
    /// another of each tile, where a scatter wrote every cache line of the output once per tile.
    pub fn restore(&self, v: Vec<f32>) -> Vec<f32> {
        match &self.inverse {
            // `out[k] = v[inverse[k]]`, i.e. `out[perm[s]] = v[s]`
            Some(inverse) => permutation::gather(&v, inverse),
            None => restore(Some(&self.perm), self.buckets.as_ref(), v),
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

    /// The plan of these indices from the cache, keyed by a fingerprint of their contents;
    /// built (and cached) on a miss.
    pub fn cached(rows: Indices<'_>, cols: Indices<'_>, n_in: usize, n_out: usize) -> Arc<Self> {
        let key = Key::Content(fingerprint(rows, cols, n_in, n_out));
        lookup(key, || None, || Self::new(rows, cols, n_in, n_out))
    }

    /// The plan of these indices from the cache, keyed by where they are stored: `rows` and
    /// `cols` must be slices of the storage that `storage` holds a reference to (it is only
    /// called on a miss, and kept with the plan; if its
    /// [`addresses`](IndexStorage::addresses) are not those of `rows` and `cols`, the plan is
    /// built but not cached). See the [module docs](self) for why the address identifies the
    /// indices. Built (and cached) on a miss.
    pub fn cached_in_storage(
        rows: Indices<'_>,
        cols: Indices<'_>,
        n_in: usize,
        n_out: usize,
        storage: impl FnOnce() -> Box<dyn IndexStorage>,
    ) -> Arc<Self> {
        let key = Key::Storage {
            at: [rows.address(), cols.address()],
            len: [rows.len(), cols.len()],
            width: [rows.width(), cols.width()],
            shape: [n_in, n_out],
        };
        lookup(
            key,
            || Some(storage()),
            || Self::new(rows, cols, n_in, n_out),
        )
    }
}

/// A reference to the storage of a layer's index tensors, kept by the plan cache with a
/// storage-keyed plan ([`ConnectionPlan::cached_in_storage`]).
pub trait IndexStorage: Send + Sync {
    /// Whether this is the only reference left to the storage (so nothing can look the plan
    /// up any more).
    fn only_reference(&self) -> bool;

    /// The addresses of the rows and the columns this reference keeps alive.
    fn addresses(&self) -> [usize; 2];
}

/// What finds a cached plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// A fingerprint of the indices and the layer's shape.
    Content(u128),
    /// Where the indices are stored (kept alive by the entry), and the layer's shape.
    Storage {
        at: [usize; 2],
        len: [usize; 2],
        width: [u8; 2],
        shape: [usize; 2],
    },
}

/// A cached plan: its key, the plan, and the storage a storage key refers to.
struct Entry {
    key: Key,
    plan: Arc<ConnectionPlan>,
    storage: Option<Box<dyn IndexStorage>>,
}

/// Plans kept, most recently used first: a few layers' current structures (an evolution makes
/// new ones; the old ones are dropped once their storage is, or fall out).
const CACHED_PLANS: usize = 8;

static CACHE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// The cached plan of `key`, else `build()`'s, cached with `storage()` (the storage a storage
/// key refers to).
/// Entries whose storage nothing else refers to are dropped first.
fn lookup(
    key: Key,
    storage: impl FnOnce() -> Option<Box<dyn IndexStorage>>,
    build: impl FnOnce() -> ConnectionPlan,
) -> Arc<ConnectionPlan> {
    let stale: Vec<Entry>;
    {
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        let all = std::mem::take(&mut *cache);
        let (released, live): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|e| e.storage.as_ref().is_some_and(|s| s.only_reference()));
        *cache = live;
        stale = released;
        if let Some(at) = cache.iter().position(|e| e.key == key) {
            let hit = cache.remove(at);
            let plan = hit.plan.clone();
            cache.insert(0, hit);
            drop(cache);
            drop(stale); // freed outside the lock
            return plan;
        }
    }
    drop(stale);
    let plan = Arc::new(build());
    let storage = storage();
    if let (Key::Storage { at, .. }, Some(s)) = (key, &storage)
        && s.addresses() != at
    {
        // not the storage the indices are in: the address would not stay theirs
        return plan;
    }
    let entry = Entry {
        key,
        plan: plan.clone(),
        storage,
    };
    let evicted = {
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(0, entry);
        let keep = CACHED_PLANS.min(cache.len());
        cache.split_off(keep)
    };
    drop(evicted);
    plan
}

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
    use rand::{Rng, SeedableRng, rngs::StdRng};

    #[test]
    fn radix_order_is_the_stable_counting_sort() {
        // the plain counting sort it replaces
        fn counting(keys: &[i64], n: usize, other: &[i64]) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
            let mut next = vec![0usize; n + 1];
            for &k in keys {
                next[k as usize + 1] += 1;
            }
            for g in 0..n {
                next[g + 1] += next[g];
            }
            let mut sorted = vec![[0u32; 3]; keys.len()];
            for (i, (&k, &o)) in keys.iter().zip(other).enumerate() {
                let slot = &mut next[k as usize];
                sorted[*slot] = [k as u32, i as u32, o as u32];
                *slot += 1;
            }
            let column = |c: usize| sorted.iter().map(|s| s[c]).collect::<Vec<u32>>();
            (column(0), column(1), column(2))
        }
        let mut rng = StdRng::seed_from_u64(3);
        // one pass, exactly 2^11 and one more key (two passes), two and three passes
        for n in [1usize, 2, 5, 2048, 2049, 333_334, (1 << 22) + 1] {
            let nnz = 5_000;
            let keys: Vec<i64> = (0..nnz).map(|_| rng.random_range(0..n as i64)).collect();
            let other: Vec<i64> = (0..nnz).map(|_| rng.random_range(0..1000)).collect();
            assert_eq!(
                radix_order(Indices::I64(&keys), n, Indices::I64(&other)),
                counting(&keys, n, &other),
                "n = {n}"
            );
        }
        // no connections
        assert_eq!(
            radix_order(Indices::I64(&[]), 10, Indices::I64(&[])),
            (vec![], vec![], vec![])
        );
    }

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

    /// Storage whose other references are counted by an `Arc`.
    struct Held(Arc<()>, [usize; 2]);

    impl IndexStorage for Held {
        fn only_reference(&self) -> bool {
            Arc::strong_count(&self.0) == 1
        }

        fn addresses(&self) -> [usize; 2] {
            self.1
        }
    }

    #[test]
    fn a_storage_keyed_plan_is_found_by_address_and_dropped_with_its_storage() {
        let rows = vec![0i64, 1, 1];
        let cols = vec![2i64, 0, 1];
        // each layer's reference to its index storage
        let layer = Arc::new(());
        let other = Arc::new(());
        let lookup = |r: &[i64], c: &[i64], n_out, layer: &Arc<()>| {
            let at = [r.as_ptr() as usize, c.as_ptr() as usize];
            let storage = || Box::new(Held(layer.clone(), at)) as Box<dyn IndexStorage>;
            ConnectionPlan::cached_in_storage(Indices::I64(r), Indices::I64(c), 2, n_out, storage)
        };
        let a = lookup(&rows, &cols, 3, &layer);
        assert!(Arc::ptr_eq(&a, &lookup(&rows, &cols, 3, &layer)));
        assert_eq!(a.by_output.offsets, vec![0, 1, 2, 3]);
        // the same values elsewhere, a part of the storage, another shape: other keys
        let copy = rows.clone();
        assert!(!Arc::ptr_eq(&a, &lookup(&copy, &cols, 3, &other)));
        assert!(!Arc::ptr_eq(&a, &lookup(&rows[..2], &cols[..2], 3, &other)));
        assert!(!Arc::ptr_eq(&a, &lookup(&rows, &cols, 4, &other)));
        // no content key finds it either
        assert!(!Arc::ptr_eq(
            &a,
            &ConnectionPlan::cached(Indices::I64(&rows), Indices::I64(&cols), 2, 3)
        ));
        // the layer lets go of its storage: the next lookup drops the entry that held it
        drop(layer);
        ConnectionPlan::cached(Indices::I64(&[0]), Indices::I64(&[0]), 1, 1);
        assert_eq!(
            Arc::strong_count(&a),
            1,
            "the cache did not release the plan"
        );
    }

    #[test]
    fn storage_that_is_not_where_the_indices_are_keys_nothing() {
        let (rows, cols) = (vec![0i64, 1], vec![1i64, 0]);
        let layer = Arc::new(());
        // a reference to a copy: the keyed address would not be pinned
        let lookup = || {
            ConnectionPlan::cached_in_storage(
                Indices::I64(&rows),
                Indices::I64(&cols),
                2,
                2,
                || Box::new(Held(layer.clone(), [1, 2])) as Box<dyn IndexStorage>,
            )
        };
        let a = lookup();
        assert_eq!(a.by_output.offsets, vec![0, 1, 2]);
        assert!(
            !Arc::ptr_eq(&a, &lookup()),
            "cached under an unpinned address"
        );
        assert_eq!(Arc::strong_count(&layer), 1, "the cache kept the reference");
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

    #[test]
    fn large_tiles_arrange_and_restore_like_their_permutation() {
        // a 1,100 × 1,100 layer with all but every 97th connection (1.2 million), storage
        // sorted by input as the layers' is
        let (n_in, n_out) = (1_100usize, 1_100usize);
        let (mut rows, mut cols) = (Vec::new(), Vec::new());
        for i in 0..n_in {
            for o in 0..n_out {
                if (i * 7919 + o * 104_729) % 97 != 0 {
                    rows.push(i as i64);
                    cols.push(o as i64);
                }
            }
        }
        for reversed in [false, true] {
            // reversed: storage in no grouping's order (the backward's grouping has a perm)
            if reversed {
                rows.reverse();
                cols.reverse();
            }
            let plan = ConnectionPlan::from_i64(&rows, &cols, n_in, n_out);
            assert!(plan.nnz() >= crate::permutation::BUCKETS_MIN_VALUES);
            let v: Vec<f32> = (0..plan.nnz()).map(|k| k as f32).collect();
            // forward: tiles of inputs, slots by output: scattered, through buckets
            let fwd = plan.by_output.tiled(n_in, 400);
            assert!(fwd.buckets.is_some() && fwd.inverse.is_none());
            // backward: tiles of outputs, slots by input: in storage order within each
            // tile, restored through the inverse permutation
            let bwd = plan.by_input.tiled(n_out, 400);
            assert!(bwd.buckets.is_none());
            assert_eq!(bwd.inverse.is_some(), !reversed);
            for tiles in [fwd, bwd] {
                let arranged = tiles.arrange(&v);
                let direct: Vec<f32> = tiles.perm.iter().map(|&k| v[k as usize]).collect();
                assert_eq!(&arranged[..], &direct[..]);
                assert_eq!(tiles.restore(arranged.into_owned()), v);
            }
        }
    }
}
