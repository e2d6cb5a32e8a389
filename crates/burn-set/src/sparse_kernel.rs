//! Host kernels of the truly sparse layer: `y = x · W` for a COO `W` (connection `k` joins input
//! `rows[k]` to output `cols[k]` with weight `values[k]`) and its two gradients, in plain Rust on
//! slices (no tensors), multithreaded with rayon and vectorised (AVX2 + FMA when the CPU has
//! them, chosen at run time).
//!
//! Layout: the batch is transposed to feature-major (`xᵀ`: one contiguous row of `batch` values per
//! neuron), so every connection is one contiguous AXPY (`yᵀ[o] += w · xᵀ[i]`) or one dot product
//! (`∂w = xᵀ[i] · gᵀ[o]`) over the batch. Connections are grouped by the neuron written (a
//! counting sort, O(nnz + n), skipped when already grouped), so threads own disjoint output rows
//! and each output row stays in L1 while its connections stream past. Cost ∝ batch × nnz; memory
//! ∝ batch × (n_in + n_out) + nnz. Nothing of size `n_in × n_out` exists.

use rayon::prelude::*;
use std::borrow::Cow;

/// Connections grouped by the neuron they write: group `g` is `slots offsets[g]..offsets[g + 1]`,
/// and slot `s` reads source row `src[s]` with weight `w[s]`. Laid out in slot order so the
/// kernels stream through them (going through a permutation instead made two random reads per
/// connection, which dominated once the arrays outgrew the caches).
struct Grouped<'a> {
    offsets: Vec<usize>,
    src: Vec<u32>,
    /// Borrowed when the connections are already grouped.
    w: Cow<'a, [f32]>,
}

impl<'a> Grouped<'a> {
    /// Stable counting sort of the connections by `keys` (each `< n`); `other` (each `< n_src`)
    /// and `w` follow. Panics with a clear message on an out-of-range index.
    fn by(keys: &[i64], n: usize, other: &[i64], n_src: usize, w: &'a [f32], what: &str) -> Self {
        assert!(
            n_src <= u32::MAX as usize,
            "sparse layer: {n_src} neurons exceed the kernel's u32 indices"
        );
        let mut offsets = vec![0usize; n + 1];
        let mut sorted = true;
        let mut prev = 0i64;
        for &k in keys {
            assert!(
                k >= 0 && (k as usize) < n,
                "sparse layer: {what} index {k} out of range 0..{n}"
            );
            sorted &= k >= prev;
            prev = k;
            offsets[k as usize + 1] += 1;
        }
        if let Some(&bad) = other.iter().find(|&&s| s < 0 || s as usize >= n_src) {
            panic!("sparse layer: index {bad} out of range 0..{n_src}");
        }
        for g in 0..n {
            offsets[g + 1] += offsets[g];
        }
        let (src, w) = if sorted {
            (other.iter().map(|&s| s as u32).collect(), Cow::Borrowed(w))
        } else {
            let mut next = offsets.clone();
            let mut src = vec![0u32; keys.len()];
            let mut ws = vec![0f32; keys.len()];
            for (c, &k) in keys.iter().enumerate() {
                let slot = &mut next[k as usize];
                src[*slot] = other[c] as u32;
                ws[*slot] = w[c];
                *slot += 1;
            }
            (src, Cow::Owned(ws))
        };
        Self { offsets, src, w }
    }
}

/// `a` (`[r, c]`, row-major) transposed to `[c, r]`, in cache blocks, rows in parallel.
pub fn transpose(a: &[f32], r: usize, c: usize) -> Vec<f32> {
    assert_eq!(
        a.len(),
        r * c,
        "transpose: {} values for [{r}, {c}]",
        a.len()
    );
    let mut out = vec![0f32; r * c];
    if r == 0 || c == 0 {
        return out;
    }
    const TILE: usize = 32;
    out.par_chunks_mut(TILE * r)
        .enumerate()
        .for_each(|(bj, chunk)| {
            let j0 = bj * TILE;
            let nj = chunk.len() / r;
            for i0 in (0..r).step_by(TILE) {
                let i1 = (i0 + TILE).min(r);
                for dj in 0..nj {
                    let row = &mut chunk[dj * r..(dj + 1) * r];
                    for i in i0..i1 {
                        row[i] = a[i * c + j0 + dj];
                    }
                }
            }
        });
    out
}

/// Connections ahead whose rows are prefetched: the rows are scattered over arrays far larger
/// than the caches once layers have tens of thousands of neurons, so the kernels are bound by
/// memory latency unless the loads are issued early.
const PREFETCH_AHEAD: usize = 6;

/// Prefetches `len` floats from `src[at..]` (clamped to `src`) into the caches.
#[inline(always)]
fn prefetch(src: &[f32], at: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let end = (at + len).min(src.len());
        let mut i = at;
        while i < end {
            // SAFETY: `i < src.len()`, so the address is inside `src`; prefetching has no
            // architectural effect.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(src.as_ptr().add(i) as *const i8) };
            i += 16; // one 64-byte cache line
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (src, at, len);
}

#[inline(always)]
fn axpy<const FMA: bool>(y: &mut [f32], a: f32, x: &[f32]) {
    if FMA {
        for (y, x) in y.iter_mut().zip(x) {
            *y = x.mul_add(a, *y);
        }
    } else {
        for (y, x) in y.iter_mut().zip(x) {
            *y += a * x;
        }
    }
}

#[inline(always)]
fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..16 {
            acc[j] = if FMA {
                x[j].mul_add(y[j], acc[j])
            } else {
                acc[j] + x[j] * y[j]
            };
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Batch columns accumulated in registers at a time (8 AVX registers).
const BLOCK: usize = 64;

/// For every group `g` of `out` rows (`[n_groups, b]`, zero on entry):
/// `out[g] = Σ_{k ∈ g} w[k] · src[other[k]]`. Each block of 64 batch columns of an output row is
/// accumulated in registers over all the row's connections, then stored once.
#[inline(always)]
fn gather_axpy<const FMA: bool>(
    out: &mut [f32],
    first_group: usize,
    b: usize,
    groups: &Grouped<'_>,
    src: &[f32],
) {
    for (dg, row) in out.chunks_exact_mut(b).enumerate() {
        let g = first_group + dg;
        let slots = groups.offsets[g]..groups.offsets[g + 1];
        let mut j0 = 0;
        while j0 + BLOCK <= b {
            let mut acc = [0f32; BLOCK];
            for slot in slots.clone() {
                if slot + PREFETCH_AHEAD < slots.end {
                    let ahead = groups.src[slot + PREFETCH_AHEAD] as usize;
                    prefetch(src, ahead * b + j0, BLOCK);
                }
                let at = groups.src[slot] as usize * b + j0;
                let xs: &[f32; BLOCK] = src[at..at + BLOCK].try_into().expect("block");
                let wk = groups.w[slot];
                for j in 0..BLOCK {
                    acc[j] = if FMA {
                        xs[j].mul_add(wk, acc[j])
                    } else {
                        acc[j] + wk * xs[j]
                    };
                }
            }
            row[j0..j0 + BLOCK].copy_from_slice(&acc);
            j0 += BLOCK;
        }
        if j0 < b {
            for slot in slots {
                let at = groups.src[slot] as usize * b;
                axpy::<FMA>(&mut row[j0..], groups.w[slot], &src[at + j0..at + b]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gather_axpy_avx2(
    out: &mut [f32],
    first_group: usize,
    b: usize,
    groups: &Grouped<'_>,
    src: &[f32],
) {
    gather_axpy::<true>(out, first_group, b, groups, src)
}

#[inline(always)]
fn dots<const FMA: bool>(out: &mut [f32], first: usize, b: usize, at: Pair<'_>) {
    let n = at.rows.len();
    for (dk, o) in out.iter_mut().enumerate() {
        let k = first + dk;
        if k + PREFETCH_AHEAD < n {
            let ahead = k + PREFETCH_AHEAD;
            prefetch(at.gt, at.cols[ahead] as usize * b, b);
            prefetch(at.xt, at.rows[ahead] as usize * b, b);
        }
        let (i, j) = (at.rows[k] as usize, at.cols[k] as usize);
        *o += dot::<FMA>(&at.xt[i * b..(i + 1) * b], &at.gt[j * b..(j + 1) * b]);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dots_avx2(out: &mut [f32], first: usize, b: usize, at: Pair<'_>) {
    dots::<true>(out, first, b, at)
}

/// `out[k] += xt[rows[k]] · gt[cols[k]]` over rows of `b` values, connections split over the
/// threads.
fn dots_all(out: &mut [f32], b: usize, at: Pair<'_>) {
    let fma = has_fma();
    let per = (out.len() / (rayon::current_num_threads() * 8)).max(256);
    out.par_chunks_mut(per).enumerate().for_each(|(t, chunk)| {
        #[cfg(target_arch = "x86_64")]
        if fma {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            unsafe { dots_avx2(chunk, t * per, b, at) };
            return;
        }
        let _ = fma;
        dots::<false>(chunk, t * per, b, at);
    });
}

#[derive(Clone, Copy)]
struct Pair<'a> {
    rows: &'a [i64],
    cols: &'a [i64],
    xt: &'a [f32],
    gt: &'a [f32],
}

fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows of output per parallel task: enough tasks to balance 2–64 threads, few enough to keep
/// the per-task overhead small.
fn groups_per_task(n: usize) -> usize {
    (n / (rayon::current_num_threads() * 8)).max(1)
}

/// `outᵀ` (`[n_out_groups, b]`) with `outᵀ[g] = Σ_{k: key[k] = g} w[k] · srcᵀ[other[k]]`.
fn accumulate(
    srct: &[f32],
    b: usize,
    keys: &[i64],
    other: &[i64],
    w: &[f32],
    n_groups: usize,
    what: &str,
) -> Vec<f32> {
    let n_src = srct.len() / b.max(1);
    let groups = Grouped::by(keys, n_groups, other, n_src, w, what);
    let mut outt = vec![0f32; n_groups * b];
    if b == 0 {
        return outt;
    }
    gather_rows(&mut outt, b, &groups, srct);
    outt
}

/// `out` (`[n_groups, b]`, zero) ← the grouped AXPYs, output rows split over the threads.
fn gather_rows(out: &mut [f32], b: usize, groups: &Grouped<'_>, src: &[f32]) {
    let n_groups = out.len() / b;
    let per = groups_per_task(n_groups);
    let fma = has_fma();
    out.par_chunks_mut(per * b)
        .enumerate()
        .for_each(|(t, chunk)| {
            let first = t * per;
            #[cfg(target_arch = "x86_64")]
            if fma {
                // SAFETY: the CPU has AVX2 and FMA (checked above).
                unsafe { gather_axpy_avx2(chunk, first, b, groups, src) };
                return;
            }
            let _ = fma;
            gather_axpy::<false>(chunk, first, b, groups, src);
        });
}

fn check_coo(values: &[f32], rows: &[i64], cols: &[i64]) {
    assert!(
        values.len() == rows.len() && rows.len() == cols.len(),
        "sparse layer: {} values, {} rows, {} cols (one of each per connection)",
        values.len(),
        rows.len(),
        cols.len()
    );
}

/// Forward pass in the feature-major layout: `yᵀ[o, s] = Σ_{k: cols[k] = o} values[k] · xᵀ[rows[k], s]`.
/// `xt` is `[d_in, batch]` row-major; returns `yt`, `[d_out, batch]`.
pub fn forward_t(
    xt: &[f32],
    batch: usize,
    values: &[f32],
    rows: &[i64],
    cols: &[i64],
    d_out: usize,
) -> Vec<f32> {
    check_coo(values, rows, cols);
    accumulate(xt, batch, cols, rows, values, d_out, "output")
}

/// Backward pass in the feature-major layout for `gt = (∂L/∂y)ᵀ` (`[d_out, batch]`):
/// `(∂L/∂x)ᵀ` (`[d_in, batch]`, when `want_input`) and `∂L/∂values` (`[nnz]`, when
/// `want_values`).
#[allow(clippy::too_many_arguments)]
pub fn backward_t(
    xt: &[f32],
    gt: &[f32],
    batch: usize,
    d_in: usize,
    values: &[f32],
    rows: &[i64],
    cols: &[i64],
    want_input: bool,
    want_values: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    check_coo(values, rows, cols);
    let grad_input = want_input.then(|| accumulate(gt, batch, rows, cols, values, d_in, "input"));
    let grad_values = want_values.then(|| {
        let mut out = vec![0f32; values.len()];
        if batch == 0 {
            return out;
        }
        dots_all(&mut out, batch, Pair { rows, cols, xt, gt });
        out
    });
    (grad_input, grad_values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    struct Case {
        x: Vec<f32>,
        g: Vec<f32>,
        w: Vec<f32>,
        rows: Vec<i64>,
        cols: Vec<i64>,
        b: usize,
        n_in: usize,
        n_out: usize,
    }

    fn case(b: usize, n_in: usize, n_out: usize, nnz: usize, shuffled: bool, seed: u64) -> Case {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut pos: Vec<usize> = rand::seq::index::sample(&mut rng, n_in * n_out, nnz).into_vec();
        if !shuffled {
            pos.sort_unstable();
        }
        let r = |rng: &mut StdRng, n: usize| (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        Case {
            x: r(&mut rng, b * n_in),
            g: r(&mut rng, b * n_out),
            w: r(&mut rng, nnz),
            rows: pos.iter().map(|&p| (p / n_out) as i64).collect(),
            cols: pos.iter().map(|&p| (p % n_out) as i64).collect(),
            b,
            n_in,
            n_out,
        }
    }

    fn dense(c: &Case) -> Vec<f64> {
        let mut w = vec![0f64; c.n_in * c.n_out];
        for k in 0..c.w.len() {
            w[c.rows[k] as usize * c.n_out + c.cols[k] as usize] = c.w[k] as f64;
        }
        w
    }

    fn close(a: &[f32], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x as f64 - y).abs() < 1e-4 * (1.0 + y.abs()),
                "{i}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn matches_dense_reference_forward_and_backward() {
        // batch sizes around the 16-wide dot and 8-wide AXPY, sorted and shuffled COO
        for (b, shuffled) in [
            (1, false),
            (7, true),
            (17, false),
            (128, true),
            (33, true),
            (64, false),
            (150, true),
        ] {
            let c = case(b, 23, 19, 90, shuffled, b as u64);
            let w = dense(&c);
            let xt = transpose(&c.x, c.b, c.n_in);
            let y = transpose(
                &forward_t(&xt, c.b, &c.w, &c.rows, &c.cols, c.n_out),
                c.n_out,
                c.b,
            );
            let mut want = vec![0f64; c.b * c.n_out];
            for s in 0..c.b {
                for i in 0..c.n_in {
                    for o in 0..c.n_out {
                        want[s * c.n_out + o] += c.x[s * c.n_in + i] as f64 * w[i * c.n_out + o];
                    }
                }
            }
            close(&y, &want);
            let gt = transpose(&c.g, c.b, c.n_out);
            let (gxt, gw) = backward_t(&xt, &gt, c.b, c.n_in, &c.w, &c.rows, &c.cols, true, true);
            let gx = gxt.map(|g| transpose(&g, c.n_in, c.b));
            let mut want_gx = vec![0f64; c.b * c.n_in];
            for s in 0..c.b {
                for i in 0..c.n_in {
                    for o in 0..c.n_out {
                        want_gx[s * c.n_in + i] += c.g[s * c.n_out + o] as f64 * w[i * c.n_out + o];
                    }
                }
            }
            close(&gx.unwrap(), &want_gx);
            let want_gw: Vec<f64> = (0..c.w.len())
                .map(|k| {
                    (0..c.b)
                        .map(|s| {
                            c.x[s * c.n_in + c.rows[k] as usize] as f64
                                * c.g[s * c.n_out + c.cols[k] as usize] as f64
                        })
                        .sum()
                })
                .collect();
            close(&gw.unwrap(), &want_gw);
        }
    }

    /// Wider layers, an odd batch: against a connection-by-connection reference.
    #[test]
    fn wide_layers_match_a_connectionwise_reference() {
        let (b, n_in, n_out) = (150, 1400, 1300);
        let c = case(b, n_in, n_out, 5000, true, 9);
        let xt = transpose(&c.x, b, n_in);
        let gt = transpose(&c.g, b, n_out);
        let yt = forward_t(&xt, b, &c.w, &c.rows, &c.cols, n_out);
        let (gxt, gw) = backward_t(&xt, &gt, b, n_in, &c.w, &c.rows, &c.cols, true, true);
        let (gxt, gw) = (gxt.unwrap(), gw.unwrap());
        let mut want_y = vec![0f64; n_out * b];
        let mut want_gx = vec![0f64; n_in * b];
        for k in 0..c.w.len() {
            let (i, o, w) = (c.rows[k] as usize, c.cols[k] as usize, c.w[k] as f64);
            let mut dw = 0f64;
            for s in 0..b {
                want_y[o * b + s] += w * xt[i * b + s] as f64;
                want_gx[i * b + s] += w * gt[o * b + s] as f64;
                dw += xt[i * b + s] as f64 * gt[o * b + s] as f64;
            }
            assert!(
                (gw[k] as f64 - dw).abs() < 1e-4 * (1.0 + dw.abs()),
                "dw[{k}]"
            );
        }
        close(&yt, &want_y);
        close(&gxt, &want_gx);
    }

    #[test]
    fn backward_computes_only_what_is_asked() {
        let c = case(4, 5, 6, 10, false, 1);
        let (gx, gw) = backward_t(&c.x, &c.g, c.b, c.n_in, &c.w, &c.rows, &c.cols, false, true);
        assert!(gx.is_none() && gw.is_some());
    }

    #[test]
    fn transpose_round_trips() {
        let a: Vec<f32> = (0..37 * 70).map(|v| v as f32).collect();
        let t = transpose(&a, 37, 70);
        assert_eq!(t[5 * 37 + 3], a[3 * 70 + 5]);
        assert_eq!(transpose(&t, 70, 37), a);
    }

    #[test]
    #[should_panic(expected = "output index 9 out of range 0..9")]
    fn out_of_range_index_is_a_clear_error() {
        forward_t(&[1.0; 4], 1, &[1.0], &[0], &[9], 9);
    }

    #[test]
    #[should_panic(expected = "one of each per connection")]
    fn mismatched_lengths_are_a_clear_error() {
        forward_t(&[1.0; 4], 1, &[1.0, 2.0], &[0], &[0], 3);
    }
}
