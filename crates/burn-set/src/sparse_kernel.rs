//! Host kernels of the truly sparse layer: `y = x · W` for a sparse `W` (connection `k` joins
//! input `rows[k]` to output `cols[k]` with weight `values[k]`) and its two gradients, in plain
//! Rust on slices (no tensors), multithreaded with rayon and vectorised (AVX2 + FMA when the CPU
//! has them, chosen at run time).
//!
//! Layout: the batch is feature-major (`xᵀ`: one contiguous row of `batch` values per neuron),
//! so every connection is one contiguous AXPY (`yᵀ[o] += w · xᵀ[i]`) or one dot product
//! (`∂w = xᵀ[i] · gᵀ[o]`) over the batch. The connections come grouped by the neuron written
//! (a [`ConnectionPlan`], built once per structure), so threads own disjoint output rows and
//! each output row stays in registers while its connections stream past:
//! - forward: grouped by output neuron, `yᵀ[o] = Σ w · xᵀ[i]`;
//! - backward, one pass grouped by input neuron: `(∂x)ᵀ[i] = Σ w · gᵀ[o]` and the dot
//!   products `∂w = xᵀ[i] · gᵀ[o]` of the same connections; with AVX2 and a batch that is a
//!   multiple of 64 both come from one sweep per 64-column block (each `gᵀ[o]` value loaded
//!   once), otherwise the dot products follow the `∂x` sweep while the rows are in L1.
//!
//! When the rows gathered from (`xᵀ` forward, `gᵀ` backward) outgrow the cache (> 12 MB: more
//! than 24,576 neurons at batch 128), they are first copied into panels (`Panels`) of 32 batch
//! columns and the product runs once per panel, both threads on the same panel: 1.2× faster
//! per epoch at 30,000 and 100,000 neurons per layer than gathering whole rows. Beyond 50,000
//! rows a panel no longer stays in the cache either, and each panel's product runs tile by
//! tile of the gathered rows ([`Tiles`]; the rows written are added to from the second tile on):
//! 0.75–0.79× the epoch at 100,000 and 333,334 neurons.
//!
//! Cost ∝ batch × nnz; memory ∝ batch × (n_in + n_out) + nnz. Nothing of size `n_in × n_out`
//! exists.

use crate::sparse_plan::{ConnectionPlan, Grouping, Tiles};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `a` (`[r, c]`, row-major) transposed to `[c, r]`, in cache blocks, rows in parallel; 8 × 8
/// blocks transposed in AVX registers where the CPU has AVX2.
pub fn transpose(a: &[f32], r: usize, c: usize) -> Vec<f32> {
    assert_eq!(
        a.len(),
        r * c,
        "transpose: {} values for [{r}, {c}]",
        a.len()
    );
    if r == 0 || c == 0 {
        return vec![0f32; r * c];
    }
    const TILE: usize = 32;
    let fma = has_fma();
    written(r * c, |out| {
        out.par_chunks_mut(TILE * r)
            .enumerate()
            .for_each(|(bj, chunk)| {
                let j0 = bj * TILE;
                let nj = chunk.len() / r;
                #[cfg(target_arch = "x86_64")]
                if fma {
                    // SAFETY: the CPU has AVX2 (checked above).
                    unsafe { transpose_tile_avx2(a, r, c, j0, nj, chunk) };
                    return;
                }
                let _ = fma;
                transpose_tile(a, r, c, j0, nj, 0, chunk);
            })
    })
}

/// Rows `j0..j0 + nj` of `aᵀ` (`chunk`, `[nj, r]`) from columns `i_from..` of each: all of it
/// written.
fn transpose_tile(
    a: &[f32],
    r: usize,
    c: usize,
    j0: usize,
    nj: usize,
    i_from: usize,
    chunk: &mut [MaybeUninit<f32>],
) {
    const TILE: usize = 32;
    for i0 in (i_from..r).step_by(TILE) {
        let i1 = (i0 + TILE).min(r);
        for dj in 0..nj {
            let row = &mut chunk[dj * r..(dj + 1) * r];
            for i in i0..i1 {
                row[i].write(a[i * c + j0 + dj]);
            }
        }
    }
}

/// [`transpose_tile`] in 8 × 8 register blocks (the standard unpack / shuffle / permute
/// sequence); the edges that are not whole blocks go through the scalar tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn transpose_tile_avx2(
    a: &[f32],
    r: usize,
    c: usize,
    j0: usize,
    nj: usize,
    chunk: &mut [MaybeUninit<f32>],
) {
    use core::arch::x86_64::*;
    let (r8, nj8) = (r / 8 * 8, nj / 8 * 8);
    for dj in (0..nj8).step_by(8) {
        for i in (0..r8).step_by(8) {
            let src = &a[i * c + j0 + dj..];
            let dst = &mut chunk[dj * r + i..];
            assert!(
                src.len() >= 7 * c + 8 && dst.len() >= 7 * r + 8,
                "transpose block"
            );
            // SAFETY: the 8 loads read `src[k·c..k·c + 8]` and the 8 stores write
            // `dst[k·r..k·r + 8]`, k < 8, inside the slices (asserted above).
            unsafe {
                let (s, d) = (src.as_ptr(), dst.as_mut_ptr() as *mut f32);
                let row = |k: usize| _mm256_loadu_ps(s.add(k * c));
                let t0 = _mm256_unpacklo_ps(row(0), row(1));
                let t1 = _mm256_unpackhi_ps(row(0), row(1));
                let t2 = _mm256_unpacklo_ps(row(2), row(3));
                let t3 = _mm256_unpackhi_ps(row(2), row(3));
                let t4 = _mm256_unpacklo_ps(row(4), row(5));
                let t5 = _mm256_unpackhi_ps(row(4), row(5));
                let t6 = _mm256_unpacklo_ps(row(6), row(7));
                let t7 = _mm256_unpackhi_ps(row(6), row(7));
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let out = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                for (k, v) in out.into_iter().enumerate() {
                    _mm256_storeu_ps(d.add(k * r), v);
                }
            }
        }
    }
    // right edge (columns r8.. of the whole rows) and the rows that are not a whole block
    if r8 < r {
        transpose_tile(a, r, c, j0, nj8, r8, &mut chunk[..nj8 * r]);
    }
    if nj8 < nj {
        transpose_tile(a, r, c, j0 + nj8, nj - nj8, 0, &mut chunk[nj8 * r..]);
    }
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
        if at >= end {
            return;
        }
        // every cache line that holds one of the values, wherever the slice starts
        let base = src.as_ptr() as usize;
        let last = (base + 4 * (end - 1)) & !63;
        let mut line = (base + 4 * at) & !63;
        while line <= last {
            // SAFETY: prefetching has no architectural effect and cannot fault; the lines
            // are those of `src[at..end]`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line as *const i8) };
            line += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (src, at, len);
}

#[inline(always)]
fn axpy<const FMA: bool>(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = if FMA { x.mul_add(a, *y) } else { *y + a * x };
    }
}

/// `a · b`, portable.
#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `a · b` with AVX2 + FMA: four independent 8-lane FMA chains, one horizontal sum. (Written
/// with intrinsics: LLVM vectorised the portable loop two lanes wide.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use core::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut j = 0;
    // SAFETY: every load reads 8 floats at `j + 8q < n` from `a` and `b`.
    unsafe {
        while j + 32 <= n {
            for (q, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_loadu_ps(pa.add(j + 8 * q));
                let y = _mm256_loadu_ps(pb.add(j + 8 * q));
                *acc = _mm256_fmadd_ps(x, y, *acc);
            }
            j += 32;
        }
        while j + 8 <= n {
            let (x, y) = (_mm256_loadu_ps(pa.add(j)), _mm256_loadu_ps(pb.add(j)));
            acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
            j += 8;
        }
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum_avx2(v);
    for k in j..n {
        s += a[k] * b[k];
    }
    s
}

/// The sum of the eight lanes of `v`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum_avx2(v: core::arch::x86_64::__m256) -> f32 {
    use core::arch::x86_64::*;
    let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_add_ss(h, _mm_movehdup_ps(h));
    _mm_cvtss_f32(h)
}

/// `a · b`; `FMA` only inside the `*_avx2` entry points (AVX2 and FMA checked).
#[inline(always)]
fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: FMA = true is only instantiated by the `*_avx2` functions, which run after
        // `has_fma()` found AVX2 and FMA.
        return unsafe { dot_avx2(a, b) };
    }
    dot_portable(a, b)
}

/// Batch columns accumulated in registers at a time (8 AVX registers).
const BLOCK: usize = 64;

/// For every group `g` of `out` rows (`[n, b]`; groups `first..first + n` of `groups`):
/// `out[g] = Σ_{s ∈ g} w[s] · src[other[s]]`, `w` in slot order. Each block of 64 batch
/// columns of an output row is accumulated in registers over all the row's connections, then
/// stored once.
#[inline(always)]
fn gather_axpy<const FMA: bool>(
    out: &mut [MaybeUninit<f32>],
    first: usize,
    b: usize,
    groups: &Grouping,
    w: &[f32],
    src: &[f32],
) {
    for (dg, row) in out.chunks_exact_mut(b).enumerate() {
        let g = first + dg;
        let slots = groups.offsets[g]..groups.offsets[g + 1];
        let mut j0 = 0;
        while j0 + BLOCK <= b {
            let mut acc = [0f32; BLOCK];
            for slot in slots.clone() {
                if slot + PREFETCH_AHEAD < slots.end {
                    let ahead = groups.other[slot + PREFETCH_AHEAD] as usize;
                    prefetch(src, ahead * b + j0, BLOCK);
                }
                let at = groups.other[slot] as usize * b + j0;
                let xs: &[f32; BLOCK] = src[at..at + BLOCK].try_into().expect("block");
                let wk = w[slot];
                for j in 0..BLOCK {
                    acc[j] = if FMA {
                        xs[j].mul_add(wk, acc[j])
                    } else {
                        acc[j] + wk * xs[j]
                    };
                }
            }
            row[j0..j0 + BLOCK].write_copy_of_slice(&acc);
            j0 += BLOCK;
        }
        if j0 < b {
            let mut acc = [0f32; BLOCK];
            let tail = &mut acc[..b - j0];
            for slot in slots {
                let at = groups.other[slot] as usize * b;
                axpy::<FMA>(tail, w[slot], &src[at + j0..at + b]);
            }
            row[j0..].write_copy_of_slice(tail);
        }
    }
}

/// What every task of the backward pass reads: batch `b`, the connections grouped by input
/// neuron, their weights in slot order, `xᵀ` and `gᵀ`.
#[derive(Clone, Copy)]
struct BackwardInputs<'a> {
    b: usize,
    groups: &'a Grouping,
    w: &'a [f32],
    xt: &'a [f32],
    gt: &'a [f32],
}

/// The backward pass of the input-neuron groups `first..first + n`, into `gx` (`[n, b]`, when
/// the input gradient is wanted) and `dw` (their slots, when the weight gradient is wanted):
/// `gx[i] = Σ_{s ∈ i} w[s] · gt[other[s]]`, then `dw[s] = xt[i] · gt[other[s]]` while those
/// rows are hot.
#[inline(always)]
fn backward_rows<const FMA: bool>(
    mut gx: Option<&mut [MaybeUninit<f32>]>,
    mut dw: Option<&mut [MaybeUninit<f32>]>,
    first: usize,
    n: usize,
    at: BackwardInputs<'_>,
) {
    let BackwardInputs {
        b,
        groups,
        w,
        xt,
        gt,
    } = at;
    let slot0 = groups.offsets[first];
    let gathered = gx.is_some();
    for i in first..first + n {
        if let Some(gx) = gx.as_deref_mut() {
            let di = i - first;
            gather_axpy::<FMA>(&mut gx[di * b..(di + 1) * b], i, b, groups, w, gt);
        }
        if let Some(dw) = dw.as_deref_mut() {
            let x = &xt[i * b..(i + 1) * b];
            let slots = groups.offsets[i]..groups.offsets[i + 1];
            for slot in slots.clone() {
                // the gather above has just read these rows; without it, prefetch them (half
                // the time of a layer whose input gradient is not wanted, at 30,000 neurons)
                if !gathered && slot + PREFETCH_AHEAD < slots.end {
                    let ahead = groups.other[slot + PREFETCH_AHEAD] as usize;
                    prefetch(gt, ahead * b, b);
                }
                let o = groups.other[slot] as usize;
                dw[slot - slot0].write(dot::<FMA>(x, &gt[o * b..(o + 1) * b]));
            }
        }
    }
}

/// The slots of groups `first..first + n`: their other-side neurons and weights, after one
/// check that every row they gather (`b` values each) lies within `src_len` values (a
/// [`Grouping`]'s fields are public, and the AVX2 kernels then read without bounds checks);
/// `None` when the groups have no connections.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn task_slots<'a>(
    groups: &'a Grouping,
    w: &'a [f32],
    first: usize,
    n: usize,
    b: usize,
    src_len: usize,
) -> Option<(&'a [u32], &'a [f32])> {
    let slots = groups.offsets[first]..groups.offsets[first + n];
    let (other, w) = (&groups.other[slots.clone()], &w[slots]);
    let max = *other.iter().max()? as usize;
    assert!(
        (max + 1) * b <= src_len,
        "sparse layer: a connection outside the rows it gathers from"
    );
    Some((other, w))
}

/// The 64-column block `j0..j0 + 64` of slot `s`'s gathered row in `src` (`b` values a
/// row, from `ps`), after prefetching the same block of the slot [`PREFETCH_AHEAD`] on
/// (clamped to `last`) as four fixed cache lines.
///
/// # Safety
/// `s <= last` and `last` is below the number of slots at `po`; every index `o` there has
/// `(o + 1)·b` within `src`; `j0 + 64 <= b`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block_row(
    po: *const u32,
    ps: *const f32,
    (s, last): (usize, usize),
    b: usize,
    j0: usize,
) -> *const f32 {
    use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    const { assert!(BLOCK == 64 && FUSED_BLOCK == BLOCK) };
    // SAFETY: the caller's guarantees: both slots are read within `po`, both blocks lie
    // within `src`.
    unsafe {
        let ahead = *po.add((s + PREFETCH_AHEAD).min(last)) as usize;
        let pf = ps.add(ahead * b + j0).cast::<i8>();
        for line in 0..BLOCK / 16 {
            _mm_prefetch::<_MM_HINT_T0>(pf.add(64 * line));
        }
        ps.add(*po.add(s) as usize * b + j0)
    }
}

/// [`gather_axpy`] with AVX2 + FMA for batches of whole 64-column blocks: raw pointers after
/// one check that every gathered row lies in `src` (a pass over the task's indices; a
/// [`Grouping`]'s fields are public), and the prefetch of a row [`PREFETCH_AHEAD`]
/// connections on as four fixed cache lines, across the ends of rows. Bounds checks and the
/// prefetch's line loop made the generic loop's ~45 instructions per connection and block
/// (8 of them FMAs).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gather_axpy_avx2(
    out: &mut [MaybeUninit<f32>],
    first: usize,
    b: usize,
    groups: &Grouping,
    w: &[f32],
    src: &[f32],
) {
    use core::arch::x86_64::*;
    let n = out.len() / b;
    if n == 0 || !b.is_multiple_of(BLOCK) {
        return gather_axpy::<true>(out, first, b, groups, w, src);
    }
    let base = groups.offsets[first];
    let Some((other, w)) = task_slots(groups, w, first, n, b, src.len()) else {
        out[..n * b].fill(MaybeUninit::new(0.0));
        return;
    };
    let last = other.len() - 1;
    let (po, pw, ps) = (other.as_ptr(), w.as_ptr(), src.as_ptr());
    for (dg, row) in out.chunks_exact_mut(b).enumerate() {
        let g = first + dg;
        let (s0, s1) = (groups.offsets[g] - base, groups.offsets[g + 1] - base);
        for j0 in (0..b).step_by(BLOCK) {
            let mut acc = [_mm256_setzero_ps(); BLOCK / 8];
            for s in s0..s1 {
                // SAFETY: `s` and the slot ahead (clamped) are below `other.len() = w.len()`;
                // every `other` value `o` has `(o + 1)·b <= src.len()` (asserted) and
                // `j0 + 64 <= b`, so each row read (and line prefetched) lies in `src`.
                unsafe {
                    let x = block_row(po, ps, (s, last), b, j0);
                    let wk = _mm256_broadcast_ss(&*pw.add(s));
                    for (q, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm256_fmadd_ps(wk, _mm256_loadu_ps(x.add(8 * q)), *acc);
                    }
                }
            }
            let dst = row[j0..j0 + BLOCK].as_mut_ptr().cast::<f32>();
            for (q, acc) in acc.iter().enumerate() {
                // SAFETY: `dst` is 64 floats of `row`; `8q + 8 <= 64`.
                unsafe { _mm256_storeu_ps(dst.add(8 * q), *acc) };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn backward_rows_avx2(
    gx: Option<&mut [MaybeUninit<f32>]>,
    dw: Option<&mut [MaybeUninit<f32>]>,
    first: usize,
    n: usize,
    at: BackwardInputs<'_>,
) {
    match (gx, dw) {
        (gx, Some(dw)) if at.b.is_multiple_of(FUSED_BLOCK) => {
            fused_backward_rows_avx2(gx, dw, first, n, at)
        }
        (gx, dw) => backward_rows::<true>(gx, dw, first, n, at),
    }
}

/// Batch columns per pass of the fused backward (eight AVX registers of `∂x` accumulators).
const FUSED_BLOCK: usize = 64;

/// [`backward_rows`] with both gradients in one sweep over each row's connections per block of
/// 64 batch columns: each `gᵀ[o]` vector just loaded feeds the `∂x` accumulation (in registers)
/// and, against `xᵀ[i]` (in L1), the connection's partial `∂w` (an 8-lane sum per connection,
/// reduced at the end). That loads each `gᵀ[o]` value once instead of twice. Without `gx`
/// (a first layer's input gradient is not wanted) only `∂w`. Needs `b` a multiple of 64.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fused_backward_rows_avx2(
    mut gx: Option<&mut [MaybeUninit<f32>]>,
    dw: &mut [MaybeUninit<f32>],
    first: usize,
    n: usize,
    at: BackwardInputs<'_>,
) {
    use core::arch::x86_64::*;
    const V: usize = FUSED_BLOCK / 8;
    let BackwardInputs {
        b,
        groups,
        w,
        xt,
        gt,
    } = at;
    assert!(b.is_multiple_of(FUSED_BLOCK) && xt.len() >= (first + n) * b);
    assert!(gx.as_ref().is_none_or(|gx| gx.len() == n * b));
    let with_gx = gx.is_some();
    let slot0 = groups.offsets[first];
    let Some((other, ws)) = task_slots(groups, w, first, n, b, gt.len()) else {
        if let Some(gx) = gx {
            gx.fill(MaybeUninit::new(0.0));
        }
        return;
    };
    let last = other.len() - 1;
    let (po, pw, pg) = (other.as_ptr(), ws.as_ptr(), gt.as_ptr());
    let mut partial: Vec<__m256> = Vec::new();
    for i in first..first + n {
        let slots = groups.offsets[i]..groups.offsets[i + 1];
        let (s0, s1) = (slots.start - slot0, slots.end - slot0);
        let x = &xt[i * b..(i + 1) * b];
        partial.clear();
        partial.resize(slots.len(), _mm256_setzero_ps());
        for j0 in (0..b).step_by(FUSED_BLOCK) {
            let xs = x[j0..j0 + FUSED_BLOCK].as_ptr();
            let mut acc = [_mm256_setzero_ps(); V];
            for (part, s) in partial.iter_mut().zip(s0..s1) {
                // SAFETY: `s` and the slot ahead (clamped) are below `other.len() = ws.len()`;
                // every `other` value `o` has `(o + 1)·b <= gt.len()` (asserted) and
                // `j0 + 64 <= b`, so each row read (and line prefetched) lies in `gt`; `xs`
                // is 64 floats of `x`.
                unsafe {
                    let gs = block_row(po, pg, (s, last), b, j0);
                    let wk = _mm256_broadcast_ss(&*pw.add(s));
                    // two chains for the partial dot product (half the FMA latency per
                    // connection)
                    let mut d = [_mm256_setzero_ps(); 2];
                    for q in 0..V {
                        let g = _mm256_loadu_ps(gs.add(8 * q));
                        if with_gx {
                            acc[q] = _mm256_fmadd_ps(wk, g, acc[q]);
                        }
                        d[q % 2] = _mm256_fmadd_ps(_mm256_loadu_ps(xs.add(8 * q)), g, d[q % 2]);
                    }
                    *part = _mm256_add_ps(*part, _mm256_add_ps(d[0], d[1]));
                }
            }
            if let Some(gx) = gx.as_deref_mut() {
                let at = (i - first) * b + j0;
                let dst = gx[at..at + FUSED_BLOCK].as_mut_ptr().cast::<f32>();
                for (q, a) in acc.iter().enumerate() {
                    // SAFETY: `dst` is 64 floats of `gx`; `8q + 8 <= 64`.
                    unsafe { _mm256_storeu_ps(dst.add(8 * q), *a) };
                }
            }
        }
        // eight connections' sums at a time, then the rest one by one
        let row_dw = &mut dw[slots.start - slot0..slots.end - slot0];
        let mut eights = row_dw.chunks_exact_mut(8);
        let mut parts = partial.chunks_exact(8);
        for (dst, d) in (&mut eights).zip(&mut parts) {
            // SAFETY: `add` is false (nothing is read).
            unsafe { sum8_into(dst, d.try_into().expect("eight"), false) };
        }
        for (v, d) in eights.into_remainder().iter_mut().zip(parts.remainder()) {
            v.write(hsum_avx2(*d));
        }
    }
}

/// Writes the indices of the non-zero entries of `m` to the front of `cols` (at least as long
/// as `m`); returns how many.
#[inline(always)]
fn connected_columns<const FMA: bool>(m: &[f32], cols: &mut [u32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        // SAFETY: FMA = true is only instantiated by the `*_avx2` functions, which run after
        // `has_fma()` found AVX2 and FMA.
        return unsafe { connected_columns_avx2(m, cols) };
    }
    let mut k = 0;
    for (j, &mk) in m.iter().enumerate() {
        cols[k] = j as u32;
        k += (mk != 0.0) as usize;
    }
    k
}

/// [`connected_columns`] 32 entries at a time: one bit mask per 32 entries (four compares),
/// then one write per set bit. (A mask is mostly zeros; the scalar loop that writes every
/// index and advances on non-zeros cost more than the dot products.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn connected_columns_avx2(m: &[f32], cols: &mut [u32]) -> usize {
    use core::arch::x86_64::*;
    assert!(cols.len() >= m.len());
    let n = m.len();
    let zero = _mm256_setzero_ps();
    let (mut k, mut j) = (0, 0);
    while j + 32 <= n {
        let mut bits = 0u32;
        for q in 0..4 {
            // SAFETY: `j + 8q + 8 <= j + 32 <= n`.
            let v = unsafe { _mm256_loadu_ps(m.as_ptr().add(j + 8 * q)) };
            let set = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(v, zero)) as u32;
            bits |= set << (8 * q);
        }
        while bits != 0 {
            // SAFETY: `k` counts the set entries before `j + 32`, so `k < j + 32 <= n <=
            // cols.len()`.
            unsafe { *cols.get_unchecked_mut(k) = (j + bits.trailing_zeros() as usize) as u32 };
            k += 1;
            bits &= bits - 1;
        }
        j += 32;
    }
    for (jj, &mk) in m.iter().enumerate().skip(j) {
        cols[k] = jj as u32;
        k += (mk != 0.0) as usize;
    }
    k
}

/// The rows `first..first + n` of the sampled product into `out` (`[n, d_out]`):
/// `out[i, j] = mask[i, j] · (xᵀ[i] · gᵀ[j])` where `mask[i, j] ≠ 0`, else `0`. Each row's
/// connected columns are listed without branches (the mask's zeros are unpredictable), the
/// row is zeroed, then one dot product is written per connection.
#[inline(always)]
fn sampled_rows<const FMA: bool>(
    out: &mut [MaybeUninit<f32>],
    first: usize,
    d_out: usize,
    b: usize,
    (xt, gt, mask): (&[f32], &[f32], &[f32]),
) {
    let mut cols: Vec<u32> = vec![0; d_out];
    for (di, row) in out.chunks_exact_mut(d_out).enumerate() {
        let i = first + di;
        let m = &mask[i * d_out..(i + 1) * d_out];
        let k = connected_columns::<FMA>(m, &mut cols);
        row.fill(MaybeUninit::new(0.0));
        let x = &xt[i * b..(i + 1) * b];
        for (q, &j) in cols[..k].iter().enumerate() {
            if let Some(&ahead) = cols[..k].get(q + PREFETCH_AHEAD) {
                prefetch(gt, ahead as usize * b, b);
            }
            let j = j as usize;
            row[j].write(m[j] * dot::<FMA>(x, &gt[j * b..(j + 1) * b]));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sampled_rows_avx2(
    out: &mut [MaybeUninit<f32>],
    first: usize,
    d_out: usize,
    b: usize,
    inputs: (&[f32], &[f32], &[f32]),
) {
    sampled_rows::<true>(out, first, d_out, b, inputs)
}

/// The weight gradient `(xᵀ g) ⊙ mask` of a masked layer, computed at its connections only (a
/// sampled dense-dense product): `out[i, j] = mask[i, j] · Σ_s xᵀ[i, s] gᵀ[j, s]` where
/// `mask[i, j] ≠ 0` and `0` elsewhere, from the feature-major `xt` (`[d_in, b]`) and `gt`
/// (`[d_out, b]`). Costs `nnz · b` multiply-adds and one write of the `[d_in, d_out]` result,
/// where the dense product `xᵀ g` costs `d_in · d_out · b`.
pub fn sampled_product(
    xt: &[f32],
    gt: &[f32],
    b: usize,
    mask: &[f32],
    [d_in, d_out]: [usize; 2],
) -> Vec<f32> {
    assert_eq!(
        mask.len(),
        d_in * d_out,
        "sampled product: mask is not [{d_in}, {d_out}]"
    );
    assert_eq!(
        xt.len(),
        d_in * b,
        "sampled product: xᵀ is not [{d_in}, {b}]"
    );
    assert_eq!(
        gt.len(),
        d_out * b,
        "sampled product: gᵀ is not [{d_out}, {b}]"
    );
    if d_out == 0 {
        return Vec::new();
    }
    let per = rows_per_task(d_in, KERNEL_TASKS_PER_THREAD);
    let fma = has_fma();
    let inputs = (xt, gt, mask);
    written(d_in * d_out, |out| {
        out.par_chunks_mut(per * d_out)
            .enumerate()
            .for_each(|(t, chunk)| {
                #[cfg(target_arch = "x86_64")]
                if fma {
                    // SAFETY: the CPU has AVX2 and FMA (checked above).
                    unsafe { sampled_rows_avx2(chunk, t * per, d_out, b, inputs) };
                    return;
                }
                let _ = fma;
                sampled_rows::<false>(chunk, t * per, d_out, b, inputs);
            })
    })
}

/// Whether the CPU has AVX2 and FMA (the `*_avx2` entry points need both).
pub(crate) fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows per parallel task when `n` rows are split into about `tasks_per_thread` tasks per
/// thread: more tasks balance rows of uneven cost, fewer keep the per-task overhead small.
pub(crate) fn rows_per_task(n: usize, tasks_per_thread: usize) -> usize {
    (n / (rayon::current_num_threads() * tasks_per_thread)).max(1)
}

/// Tasks per thread of the kernels (their rows' costs vary with the neurons' degrees).
const KERNEL_TASKS_PER_THREAD: usize = 8;

fn check_shapes(xt: &[f32], batch: usize, values: &[f32], plan: &ConnectionPlan) {
    assert_eq!(
        values.len(),
        plan.nnz(),
        "sparse layer: {} values for {} connections",
        values.len(),
        plan.nnz()
    );
    assert_eq!(
        xt.len(),
        plan.n_in * batch,
        "sparse layer: input of {} values is not [{}, {batch}]",
        xt.len(),
        plan.n_in
    );
}

/// Forward pass in the feature-major layout: `yᵀ[o, s] = Σ_{k: cols[k] = o} values[k] · xᵀ[rows[k], s]`.
/// `xt` is `[n_in, batch]` row-major, `values` in the plan's storage order; returns `yt`,
/// `[n_out, batch]`.
pub fn forward_t(xt: &[f32], batch: usize, values: &[f32], plan: &ConnectionPlan) -> Vec<f32> {
    forward_t_in(
        xt,
        batch,
        values,
        plan,
        Layout::for_source(plan.n_in, batch),
    )
}

/// [`forward_t`] in `layout`.
fn forward_t_in(
    xt: &[f32],
    batch: usize,
    values: &[f32],
    plan: &ConnectionPlan,
    layout: Layout,
) -> Vec<f32> {
    let Some(f) = Forward::new(xt, batch, values, plan, layout) else {
        return vec![0f32; plan.n_out * batch];
    };
    written(plan.n_out * batch, |out| f.product(out))
}

/// [`forward_t`] followed, in each parallel task while its rows are still in the cache, by
/// `then(first, z, y)`: `z` is the task's rows of the product (from row `first`), which
/// `then` may change in place, and `y` the same rows of a second `[n_out, batch]` output,
/// every value of which `then` must write. Returns both outputs. (A separate pass over the
/// product re-read it from memory on large layers, and was one more fork-join of the
/// threads per call. On [`Panels`] a row is finished only by the last panel, so there `then`
/// runs in such a pass after the product.)
pub(crate) fn forward_t_then(
    xt: &[f32],
    batch: usize,
    values: &[f32],
    plan: &ConnectionPlan,
    then: impl Fn(usize, &mut [f32], &mut [MaybeUninit<f32>]) + Sync,
) -> (Vec<f32>, Vec<f32>) {
    let layout = Layout::for_source(plan.n_in, batch);
    forward_t_then_in(xt, batch, values, plan, layout, then)
}

/// [`forward_t_then`] in `layout`.
fn forward_t_then_in(
    xt: &[f32],
    batch: usize,
    values: &[f32],
    plan: &ConnectionPlan,
    layout: Layout,
    then: impl Fn(usize, &mut [f32], &mut [MaybeUninit<f32>]) + Sync,
) -> (Vec<f32>, Vec<f32>) {
    let Some(f) = Forward::new(xt, batch, values, plan, layout) else {
        return (Vec::new(), Vec::new());
    };
    let n = plan.n_out * batch;
    let rows = f.per * batch;
    if f.panels.is_some() {
        // panel by panel, then `then` over the finished rows
        let mut z = written(n, |z| f.product(z));
        let y = written(n, |y| {
            z.par_chunks_mut(rows)
                .zip(y.par_chunks_mut(rows))
                .enumerate()
                .for_each(|(t, (zc, yc))| then(t * f.per, zc, yc))
        });
        return (z, y);
    }
    let mut second = Vec::new();
    let first = written(n, |z| {
        second = written(n, |y| {
            z.par_chunks_mut(rows)
                .zip(y.par_chunks_mut(rows))
                .enumerate()
                .for_each(|(t, (zc, yc))| {
                    f.rows(zc, t * f.per);
                    // SAFETY: `rows` has written every value of `zc` (its rows' blocks and
                    // tails), so it is an initialised `[f32]` of the same length.
                    let zc = unsafe {
                        std::slice::from_raw_parts_mut(zc.as_mut_ptr().cast::<f32>(), zc.len())
                    };
                    then(t * f.per, zc, yc);
                })
        })
    });
    (first, second)
}

/// Above this size (bytes) the rows a product gathers from no longer stay in this kind of
/// machine's cache (2-core EPYC VM: a random 512-byte row read costs ~20 ns in a 5 MB array
/// and 60–120 ns in 15–50 MB ones), and the product runs on [`Panels`]. (At 10,000 neurons,
/// 5 MB, whole rows are faster: 1.49–1.68 against 1.74–1.93 s per 3,000 samples of `bench
/// scale`; at 20,000, 10 MB, they are even in `bench scale` (median ratio 1.03 over four
/// interleaved pairs) and faster in a real MNIST run (11.1–12.7 against 12.7–15.5 s per
/// epoch); at 30,000, 15 MB, panels are 1.2× faster.)
const WHOLE_ROWS_MAX_BYTES: usize = 12 << 20;

/// The panel width (batch columns) for a product that gathers from `n_src` rows of `batch`
/// values, or `None` for whole rows: sources that fit the cache as they are, batches that are
/// no multiple of 16 (or no wider than one panel), CPUs without AVX2 + FMA.
///
/// 32 columns (two cache lines per row) where the batch allows: narrower panels pay the
/// per-connection work (index, weight, prefetch) once per panel for less data, wider ones
/// hold more lines. `bench scale`, seconds per 2,000 samples at 30,000 neurons: 32 columns
/// 3.57–3.82, 16 columns 4.60–5.14, 64 columns 3.92–4.27; per 1,280 samples at 100,000:
/// 32 columns 12.2–12.5, 16 columns 14.9–15.6, 64 columns 14.0–15.8, whole rows 13.8–16.3;
/// per 640 samples at 333,334: 32 columns 32.9–35.9, whole rows 38.0–38.8.
pub(crate) fn panel_width(n_src: usize, batch: usize) -> Option<usize> {
    if n_src * batch * 4 <= WHOLE_ROWS_MAX_BYTES || !has_fma() {
        return None;
    }
    [32, 16]
        .into_iter()
        .find(|&w| w < batch && batch.is_multiple_of(w))
}

/// The most gathered rows per tile of a product on panels (6.4 MB of 32-column panel rows):
/// with more rows than this, the product runs tile by tile ([`Tiles`], of equal sizes), and
/// the rows it gathers from in a pass stay in the cache (a 12.8 MB panel of 100,000 rows
/// shares this machine's 32 MB L3 with everything else a step streams through it; on 4 KB
/// pages it would also outgrow the L2 TLB's 2,048 entries, but mimalloc, which these figures
/// ran on, backs large blocks with huge pages).
/// `kernel_bench` at N = 100,000 (forward / backward / ∂w-only, ms): whole panels
/// 174 / 193 / 225, tiles of 50,000 rows 75–80 / 98 / 88–92, of 33,334 86 / 115 / 98, of
/// 25,000 92 / 142 / 118. `bench scale` (interleaved pairs, medians): 0.75× the epoch of whole
/// panels at 100,000 neurons (0.92× that of 25,000-row tiles), 0.79× at 333,334 (seven tiles
/// of 47,620 rows).
const TILE_ROWS: usize = 50_000;

/// How a product lays out the rows it gathers from: on panels of `width` batch columns
/// (`None`: whole rows), in tiles of at most `tile_rows` rows where there are more.
#[derive(Clone, Copy, Debug)]
struct Layout {
    width: Option<usize>,
    tile_rows: usize,
}

impl Layout {
    /// The layout for gathering from `n_src` rows of `batch` values.
    fn for_source(n_src: usize, batch: usize) -> Self {
        Self {
            width: panel_width(n_src, batch),
            tile_rows: TILE_ROWS,
        }
    }

    /// `src` (`[n_src, batch]`) packed as [`Panels`], with the order of `groups`' slots on
    /// them; `None` for whole rows (also when there are no source rows: whole rows write the
    /// zeros).
    fn panels<'a>(
        self,
        groups: &'a Grouping,
        src: &[f32],
        n_src: usize,
        batch: usize,
    ) -> Option<(Panels, Order<'a>)> {
        self.width.filter(|_| n_src > 0).map(|width| {
            assert!(has_fma(), "panels need AVX2 and FMA");
            let order = Order::new(groups, n_src, self.tile_rows);
            (Panels::pack(src, n_src, batch, width), order)
        })
    }
}

/// The slot order of a product: that of its panels, or its grouping's on whole rows.
fn slot_order<'a>(panels: &Option<(Panels, Order<'a>)>, groups: &'a Grouping) -> Order<'a> {
    panels
        .as_ref()
        .map_or(Order::Groups(groups), |(_, order)| *order)
}

/// The rows of `src` (`[rows, b]`) into `parts`, the same rows of each panel (`[rows, W]`):
/// fixed-size copies, which compile to vector moves (a `memmove` call per panel row was
/// ~5 % of a step at 333,334 neurons).
fn pack_rows<const W: usize>(src: &[f32], b: usize, parts: &mut [&mut [MaybeUninit<f32>]]) {
    for (i, row) in src.chunks_exact(b).enumerate() {
        for (part, cols) in parts.iter_mut().zip(row.chunks_exact(W)) {
            let cols: &[f32; W] = cols.try_into().expect("panel columns");
            let dst: &mut [MaybeUninit<f32>; W] = (&mut part[i * W..(i + 1) * W])
                .try_into()
                .expect("panel row");
            for (d, v) in dst.iter_mut().zip(cols) {
                d.write(*v);
            }
        }
    }
}

/// A feature-major `[n, b]` array cut into `b / width` panels of `width` batch columns, each
/// stored as its own contiguous `[n, width]` array: a product that gathers rows from a
/// source larger than the cache runs once per panel, all threads on the same panel, whose
/// rows take a quarter of the memory the whole rows do. (Reading the same columns in place
/// touches as many cache lines but scatters them over all the source's pages: twice as slow
/// as the packed copy in a C test, from TLB misses.)
struct Panels {
    /// The panels from `data[start]` on, a 64-byte boundary (`start < 16`).
    data: Vec<f32>,
    start: usize,
    n: usize,
    width: usize,
}

impl Panels {
    /// `src` (`[n, b]`, `n > 0`) cut into panels of `width` columns, one task per panel,
    /// each panel row on whole cache lines. (Tasks of whole rows that write every panel were
    /// no faster. An allocator's block may start anywhere on a 16-byte boundary: a 128-byte
    /// panel row 16 bytes off a line spans three lines, and gathers of such rows took 1.2–1.5×
    /// as long in a C test.)
    fn pack(src: &[f32], n: usize, b: usize, width: usize) -> Self {
        assert!(
            n > 0 && b.is_multiple_of(width) && src.len() == n * b,
            "panels"
        );
        let mut data: Vec<f32> = Vec::with_capacity(n * b + 15);
        let start = data.as_ptr().align_offset(64);
        assert!(start < 16, "panels: a 64-byte boundary within 16 floats");
        // tasks of consecutive rows, each read once and written to every panel
        let rows = n.div_ceil(4 * rayon::current_num_threads()).clamp(1, 4096);
        let mut tasks: Vec<Vec<&mut [MaybeUninit<f32>]>> =
            (0..n.div_ceil(rows)).map(|_| Vec::new()).collect();
        for panel in data.spare_capacity_mut()[start..start + n * b].chunks_mut(n * width) {
            for (task, part) in tasks.iter_mut().zip(panel.chunks_mut(rows * width)) {
                task.push(part);
            }
        }
        tasks
            .into_par_iter()
            .enumerate()
            .for_each(|(t, mut parts)| {
                let src = &src[t * rows * b..][..parts[0].len() / width * b];
                match width {
                    16 => pack_rows::<16>(src, b, &mut parts),
                    32 => pack_rows::<32>(src, b, &mut parts),
                    other => unreachable!("panel width {other}"),
                }
            });
        // the floats before `start` are never read: zero them so that `data` is initialised
        data.spare_capacity_mut()[..start].fill(MaybeUninit::new(0.0));
        // SAFETY: the floats `..start` were just written and the panels `start..start + n·b`
        // by the tasks above (each writes its panel's `n` rows of `width`).
        unsafe { data.set_len(start + n * b) };
        Self {
            data,
            start,
            n,
            width,
        }
    }

    fn count(&self) -> usize {
        (self.data.len() - self.start) / (self.n * self.width)
    }

    /// Panel `p`: `[n, width]`.
    fn panel(&self, p: usize) -> &[f32] {
        let len = self.n * self.width;
        &self.data[self.start + p * len..][..len]
    }
}

/// A task's share of one pass of a product on panels: runs of slots, each for one of the
/// task's rows (groups `first..`), in order. Without tiles run `r` is group `first + r` with
/// its slots; with tiles, the groups with connections in the tile (every group in tile 0).
#[derive(Clone, Copy)]
struct Runs<'a> {
    /// The group of each run; `None`: run `r` is group `first + r`.
    groups: Option<&'a [u32]>,
    first: usize,
    /// Run `r`'s slots end at `ends[r]` and start where run `r - 1`'s end (`start` for the
    /// first).
    ends: &'a [usize],
    start: usize,
    /// Whether the runs add to the rows (a later tile) instead of writing them.
    add: bool,
}

impl Runs<'_> {
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Run `r`'s row, counted from the task's first.
    #[inline(always)]
    fn row(&self, r: usize) -> usize {
        self.groups.map_or(r, |g| g[r] as usize - self.first)
    }

    #[inline(always)]
    fn slots(&self, r: usize) -> std::ops::Range<usize> {
        (if r == 0 { self.start } else { self.ends[r - 1] })..self.ends[r]
    }

    /// The slot after the last run's.
    fn end(&self) -> usize {
        self.ends.last().copied().unwrap_or(self.start)
    }

    /// How many slots ahead the kernels prefetch the gathered rows.
    fn prefetch_ahead(&self) -> usize {
        if self.groups.is_some() {
            TILED_PREFETCH_AHEAD
        } else {
            PANEL_PREFETCH_AHEAD
        }
    }
}

/// The slot order of a product on panels: its grouping's, or [`Tiles`] of the gathered rows
/// when there are more than a tile's.
#[derive(Clone, Copy)]
enum Order<'a> {
    Groups(&'a Grouping),
    Tiles(&'a Tiles),
}

impl<'a> Order<'a> {
    /// The order for `groups`, which gather from `n_other` rows, in tiles of at most
    /// `tile_rows`.
    fn new(groups: &'a Grouping, n_other: usize, tile_rows: usize) -> Self {
        if n_other > tile_rows {
            Self::Tiles(groups.tiled(n_other, tile_rows))
        } else {
            Self::Groups(groups)
        }
    }

    /// The gathered row of each slot.
    fn other(&self) -> &'a [u32] {
        match self {
            Self::Groups(g) => &g.other,
            Self::Tiles(t) => &t.other,
        }
    }

    fn arrange<'v>(&self, values: &'v [f32]) -> std::borrow::Cow<'v, [f32]> {
        match self {
            Self::Groups(g) => g.arrange(values),
            Self::Tiles(t) => t.arrange(values),
        }
    }

    fn restore(&self, v: Vec<f32>) -> Vec<f32> {
        match self {
            Self::Groups(g) => g.restore(v),
            Self::Tiles(t) => t.restore(v),
        }
    }

    /// Passes per panel: one per tile.
    fn tiles(&self) -> usize {
        match self {
            Self::Groups(_) => 1,
            Self::Tiles(t) => t.count(),
        }
    }

    /// The runs of tile `tile` of each task of `per` groups (of `n`).
    fn tasks_runs(&self, tile: usize, per: usize, n: usize) -> Vec<Runs<'a>> {
        (0..n.div_ceil(per))
            .map(|t| self.task_runs(tile, t * per, per.min(n - t * per)))
            .collect()
    }

    /// The runs of tile `tile` in groups `first..first + n`.
    fn task_runs(&self, tile: usize, first: usize, n: usize) -> Runs<'a> {
        match *self {
            Self::Groups(g) => Runs {
                groups: None,
                first,
                ends: &g.offsets[first + 1..first + n + 1],
                start: g.offsets[first],
                add: false,
            },
            Self::Tiles(t) => {
                let (a, z) = (t.tile_runs[tile], t.tile_runs[tile + 1]);
                let groups = &t.run_group[a..z];
                let lo = a + groups.partition_point(|&g| (g as usize) < first);
                let hi = a + groups.partition_point(|&g| (g as usize) < first + n);
                Runs {
                    groups: Some(&t.run_group[lo..hi]),
                    first,
                    ends: &t.run_end[lo..hi],
                    start: if lo == 0 { 0 } else { t.run_end[lo - 1] },
                    add: tile > 0,
                }
            }
        }
    }
}

/// Connections ahead whose panel rows are prefetched (a panel row is one or two cache lines,
/// so a connection takes less time than with whole rows and the prefetches go further
/// ahead; 4, 16 and 24 were no faster at 30,000 neurons).
const PANEL_PREFETCH_AHEAD: usize = 8;

/// [`PANEL_PREFETCH_AHEAD`] for a product in [`Tiles`], whose gathered rows come from a
/// tile in the L3 cache, further away than the rows of a whole panel that fits it.
/// `kernel_bench` (medians of 10–15 runs, the distances interleaved in one process), forward
/// / backward / ∂w-only in ms: at N = 333,334, 8 ahead 282 / 536 / 464, 16 ahead 265 / 491 /
/// 417 (24 and 32 level with 16, 48 slower); at N = 100,000, 8 ahead 62.6 / 100 / 127, 16
/// ahead 61.6 / 92.0 / 115.
const TILED_PREFETCH_AHEAD: usize = 16;

/// [`gather_axpy`] for batch columns `col..col + W` only, from `src`, that panel of the
/// source (`[n_src, W]`): `out[g, col..col + W] (+)= Σ_{s ∈ g} w[s] · src[other[s]]` for the
/// groups `g` of `runs` (`out` holds the task's whole rows of `b`; a run adds to its row when
/// `runs.add`). The row's `W` sums stay in registers; the prefetches run ahead across the
/// runs of the task.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn panel_gather_avx2<const W: usize>(
    out: &mut [MaybeUninit<f32>],
    b: usize,
    col: usize,
    runs: Runs<'_>,
    other: &[u32],
    w: &[f32],
    src: &[f32],
) {
    use core::arch::x86_64::*;
    const { assert!(W.is_multiple_of(8) && W <= 32) };
    let ahead = (runs.prefetch_ahead(), runs.end());
    for r in 0..runs.len() {
        let dst = &mut out[runs.row(r) * b + col..][..W];
        let mut acc = [_mm256_setzero_ps(); 4];
        if runs.add {
            // SAFETY: tile 0 wrote every row of the task (a run for each).
            unsafe { load_panel_row::<W>(&mut acc, dst) };
        }
        for slot in runs.slots(r) {
            let xs = panel_row::<W>(src, other, slot, ahead);
            let wk = _mm256_set1_ps(w[slot]);
            for (q, acc) in acc.iter_mut().enumerate().take(W / 8) {
                // SAFETY: `xs` holds W floats; `8q + 8 <= W`.
                let x = unsafe { _mm256_loadu_ps(xs.add(8 * q)) };
                *acc = _mm256_fmadd_ps(wk, x, *acc);
            }
        }
        store_panel_row::<W>(&acc, dst);
    }
}

/// The panel row of `slot`'s other neuron in `src` (`[n, W]`, `n > 0`, rows on cache-line
/// boundaries), after prefetching the one `ahead` slots on (clamped to the last slot before
/// `end`), its `W / 16` whole lines. (A slice with bounds checks and a
/// prefetch loop over the lines cost half the kernel's instructions.)
///
/// # Panics
/// If the row is outside the panel (a plan whose public fields were changed after
/// [`ConnectionPlan::new`] checked them), as the whole-row kernels do.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn panel_row<const W: usize>(
    src: &[f32],
    other: &[u32],
    slot: usize,
    (ahead, end): (usize, usize),
) -> *const f32 {
    let last_row = src.len() / W - 1;
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let ahead = (other[(slot + ahead).min(end - 1)] as usize).min(last_row);
        let line = src[ahead * W..].as_ptr().cast::<i8>();
        for k in 0..W / 16 {
            // SAFETY: prefetching cannot fault; the lines are those of row `ahead`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.wrapping_add(64 * k)) };
        }
    }
    let row = other[slot] as usize;
    assert!(
        row <= last_row,
        "sparse layer: a connection outside the rows it gathers from"
    );
    // SAFETY: `row <= last_row`, so the row's `W` floats lie in `src`.
    unsafe { src.as_ptr().add(row * W) }
}

/// The `W` values of `src` into the first `W / 8` of `acc`.
///
/// # Safety
/// `src` must be initialised.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn load_panel_row<const W: usize>(
    acc: &mut [core::arch::x86_64::__m256; 4],
    src: &[MaybeUninit<f32>],
) {
    use core::arch::x86_64::*;
    assert!(src.len() >= W && W <= 32, "panel row");
    for (q, a) in acc.iter_mut().enumerate().take(W / 8) {
        // SAFETY: `src` holds W floats (asserted), initialised (the caller's guarantee).
        *a = unsafe { _mm256_loadu_ps(src.as_ptr().add(8 * q).cast::<f32>()) };
    }
}

/// The first `W / 8` of `acc` into `dst` (`W` values).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn store_panel_row<const W: usize>(
    acc: &[core::arch::x86_64::__m256; 4],
    dst: &mut [MaybeUninit<f32>],
) {
    use core::arch::x86_64::*;
    let mut vals = [0f32; 32];
    for (q, a) in acc.iter().enumerate().take(W / 8) {
        // SAFETY: `vals` holds 32 floats; `8q + 8 <= W <= 32`.
        unsafe { _mm256_storeu_ps(vals.as_mut_ptr().add(8 * q), *a) };
    }
    dst.write_copy_of_slice(&vals[..W]);
}

/// [`backward_rows`] for batch columns `p·W..(p + 1)·W` only, gathering from that panel of
/// `gᵀ` (`panels`; `at.gt` is not read) for the input neurons `i` of `runs`:
/// `gx[i, cols] (+)= Σ_{s ∈ i} w[s] · g[other[s], cols]` (the row's sums in registers; a run
/// adds when `runs.add`) and `dw[s] += xᵀ[i, cols] · g[other[s], cols]` (`dw` holds the
/// runs' slots; panel 0 writes them, the later panels add).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn panel_backward_avx2<const W: usize>(
    mut gx: Option<&mut [MaybeUninit<f32>]>,
    mut dw: Option<&mut [MaybeUninit<f32>]>,
    (runs, p): (Runs<'_>, usize),
    at: BackwardInputs<'_>,
    other: &[u32],
    panels: &Panels,
) {
    use core::arch::x86_64::*;
    const { assert!(W.is_multiple_of(8) && W <= 32) };
    let BackwardInputs { b, w, xt, .. } = at;
    let src = panels.panel(p);
    let col = p * W;
    let (slot0, end) = (runs.start, runs.end());
    let ahead = (runs.prefetch_ahead(), end);
    // the partial ∂w of the last `count` slots (consecutive, across runs), summed 8 at a time
    let mut pending = [_mm256_setzero_ps(); 8];
    let mut count = 0;
    for r in 0..runs.len() {
        let i = runs.first + runs.row(r);
        let x: &[f32; W] = xt[i * b + col..][..W].try_into().expect("panel row");
        let mut xs = [_mm256_setzero_ps(); 4];
        for (q, xq) in xs.iter_mut().enumerate().take(W / 8) {
            // SAFETY: `x` holds W floats; `8q + 8 <= W`.
            *xq = unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * q)) };
        }
        let mut acc = [_mm256_setzero_ps(); 4];
        if let Some(gx) = gx.as_deref().filter(|_| runs.add) {
            // SAFETY: tile 0 wrote every row of the task (a run for each).
            unsafe { load_panel_row::<W>(&mut acc, &gx[runs.row(r) * b + col..][..W]) };
        }
        for slot in runs.slots(r) {
            let gs = panel_row::<W>(src, other, slot, ahead);
            let wk = _mm256_set1_ps(w[slot]);
            // two chains for the partial dot product (half the FMA latency per connection)
            let mut d = [_mm256_setzero_ps(); 2];
            for q in 0..W / 8 {
                // SAFETY: `gs` holds W floats; `8q + 8 <= W`.
                let g = unsafe { _mm256_loadu_ps(gs.add(8 * q)) };
                acc[q] = _mm256_fmadd_ps(wk, g, acc[q]);
                d[q % 2] = _mm256_fmadd_ps(xs[q], g, d[q % 2]);
            }
            if let Some(dw) = dw.as_deref_mut() {
                pending[count] = _mm256_add_ps(d[0], d[1]);
                count += 1;
                if count == 8 {
                    let eight = &mut dw[slot + 1 - 8 - slot0..slot + 1 - slot0];
                    // SAFETY: panel 0 wrote every slot of these runs before any later panel
                    // (`add` only from panel 1 on).
                    unsafe { sum8_into(eight, &pending, p > 0) };
                    count = 0;
                }
            }
        }
        if let Some(gx) = gx.as_deref_mut() {
            store_panel_row::<W>(&acc, &mut gx[runs.row(r) * b + col..][..W]);
        }
    }
    // the last slots, fewer than eight
    if let Some(dw) = dw {
        for (k, d) in pending[..count].iter().enumerate() {
            let v = &mut dw[end - count + k - slot0];
            let d = hsum_avx2(*d);
            // SAFETY: panel 0 wrote every slot of these runs before any later panel runs.
            v.write(if p == 0 {
                d
            } else {
                d + unsafe { v.assume_init() }
            });
        }
    }
}

/// The horizontal sums of the eight vectors `d` into `dst` (8 values), added to what `dst`
/// holds when `add`: one reduction tree for eight connections instead of a shuffle-and-add
/// sequence per connection.
///
/// # Safety
/// When `add`, all of `dst` must be initialised.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn sum8_into(dst: &mut [MaybeUninit<f32>], d: &[core::arch::x86_64::__m256; 8], add: bool) {
    use core::arch::x86_64::*;
    assert_eq!(dst.len(), 8, "eight sums");
    // hadd pairs within 128-bit lanes: u0 = [Σ_lo d0..d3 | Σ_hi d0..d3], u1 the same for d4..d7
    let u0 = _mm256_hadd_ps(_mm256_hadd_ps(d[0], d[1]), _mm256_hadd_ps(d[2], d[3]));
    let u1 = _mm256_hadd_ps(_mm256_hadd_ps(d[4], d[5]), _mm256_hadd_ps(d[6], d[7]));
    let sums = _mm256_add_ps(
        _mm256_permute2f128_ps::<0x20>(u0, u1),
        _mm256_permute2f128_ps::<0x31>(u0, u1),
    );
    let at = dst.as_mut_ptr().cast::<f32>();
    // SAFETY: `dst` holds 8 floats (asserted); when `add`, the caller guarantees they are
    // initialised.
    unsafe {
        let v = if add {
            _mm256_add_ps(sums, _mm256_loadu_ps(at))
        } else {
            sums
        };
        _mm256_storeu_ps(at, v);
    }
}

/// What every task of a forward product reads: the connections grouped by output neuron,
/// their weights in slot order, `xᵀ`, the batch, the rows per task and whether the CPU has
/// AVX2 + FMA.
struct Forward<'a> {
    groups: &'a Grouping,
    w: std::borrow::Cow<'a, [f32]>,
    xt: &'a [f32],
    batch: usize,
    per: usize,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fma: bool,
    /// `xᵀ` packed as [`Panels`] when the product runs panel by panel, and the slots' order
    /// there (`w` is in that order).
    panels: Option<(Panels, Order<'a>)>,
}

impl<'a> Forward<'a> {
    /// The forward product of `plan` (shapes checked) in `layout` (panels need AVX2 + FMA
    /// and a batch they divide); `None` when it has no values.
    fn new(
        xt: &'a [f32],
        batch: usize,
        values: &'a [f32],
        plan: &'a ConnectionPlan,
        layout: Layout,
    ) -> Option<Self> {
        check_shapes(xt, batch, values, plan);
        if batch == 0 || plan.n_out == 0 {
            return None;
        }
        let groups = &plan.by_output;
        let panels = layout.panels(groups, xt, plan.n_in, batch);
        let w = slot_order(&panels, groups).arrange(values);
        Some(Self {
            groups,
            w,
            xt,
            batch,
            per: rows_per_task(plan.n_out, KERNEL_TASKS_PER_THREAD),
            fma: has_fma(),
            panels,
        })
    }

    /// The whole product into `out` (`[n_out, batch]`): task by task, or panel by panel (and
    /// tile by tile) with every task of a pass before the next (the threads then share one
    /// panel, or tile, in the cache).
    fn product(&self, out: &mut [MaybeUninit<f32>]) {
        let rows = self.per * self.batch;
        match &self.panels {
            None => out
                .par_chunks_mut(rows)
                .enumerate()
                .for_each(|(t, chunk)| self.rows(chunk, t * self.per)),
            Some((panels, order)) => {
                for p in 0..panels.count() {
                    for tile in 0..order.tiles() {
                        out.par_chunks_mut(rows).enumerate().for_each(|(t, chunk)| {
                            let runs =
                                order.task_runs(tile, t * self.per, chunk.len() / self.batch);
                            self.panel_runs(chunk, runs, panels, order, p)
                        });
                    }
                }
            }
        }
    }

    /// Columns `p·w..(p + 1)·w` of the rows of `runs` into `out` (the task's whole rows).
    fn panel_runs(
        &self,
        out: &mut [MaybeUninit<f32>],
        runs: Runs<'_>,
        panels: &Panels,
        order: &Order<'_>,
        p: usize,
    ) {
        let (b, w, other) = (self.batch, &self.w[..], order.other());
        let src = panels.panel(p);
        let col = p * panels.width;
        // SAFETY (all arms): `Panels` only exist where the CPU has AVX2 and FMA (asserted when
        // they are packed).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            match panels.width {
                16 => panel_gather_avx2::<16>(out, b, col, runs, other, w, src),
                32 => panel_gather_avx2::<32>(out, b, col, runs, other, w, src),
                other => unreachable!("panel width {other}"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (out, b, runs, other, w, src, col);
    }

    /// The product's rows `first..` into `out` (whole rows).
    fn rows(&self, out: &mut [MaybeUninit<f32>], first: usize) {
        let (b, groups, w, src) = (self.batch, self.groups, &self.w[..], self.xt);
        #[cfg(target_arch = "x86_64")]
        if self.fma {
            // SAFETY: `fma` is `has_fma()`: the CPU has AVX2 and FMA.
            unsafe { gather_axpy_avx2(out, first, b, groups, w, src) };
            return;
        }
        gather_axpy::<false>(out, first, b, groups, w, src);
    }
}

/// A vector of `n` floats, every one of which `write_all` writes (the kernels write each
/// output they own exactly once): no zeroing pass, which on large layers cost as much as a
/// tenth of a step (a `memset` and the kernel's first-touch page clearing).
pub(crate) fn written(n: usize, write_all: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(n);
    write_all(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: `write_all` initialised all `n` elements (each caller's kernel writes every
    // row / slot of the slices it is given, which cover the whole buffer; the tests compare
    // every output with a reference).
    unsafe { v.set_len(n) };
    v
}

/// Backward pass in the feature-major layout for `gt = (∂L/∂y)ᵀ` (`[n_out, batch]`):
/// `(∂L/∂x)ᵀ` (`[n_in, batch]`, when `want_input`) and `∂L/∂values` (`[nnz]`, storage order,
/// when `want_values`).
pub fn backward_t(
    xt: &[f32],
    gt: &[f32],
    batch: usize,
    values: &[f32],
    plan: &ConnectionPlan,
    want_input: bool,
    want_values: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let layout = Layout::for_source(plan.n_out, batch);
    backward_t_in(
        xt,
        gt,
        batch,
        values,
        plan,
        [want_input, want_values],
        layout,
    )
}

/// A task's part of an output: `None` where that output is not wanted.
type Part<'p> = Option<&'p mut [MaybeUninit<f32>]>;

/// [`backward_t`] gathering `gᵀ` in `layout`.
fn backward_t_in(
    xt: &[f32],
    gt: &[f32],
    batch: usize,
    values: &[f32],
    plan: &ConnectionPlan,
    [want_input, want_values]: [bool; 2],
    layout: Layout,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    check_shapes(xt, batch, values, plan);
    assert_eq!(
        gt.len(),
        plan.n_out * batch,
        "sparse layer: output gradient of {} values is not [{}, {batch}]",
        gt.len(),
        plan.n_out
    );
    if want_values
        && !want_input
        && plan.n_in < plan.n_out
        && batch > 0
        && batch.is_multiple_of(FUSED_BLOCK)
    {
        #[cfg(target_arch = "x86_64")]
        if has_fma() {
            return (
                None,
                Some(weight_gradient_by_output(xt, gt, batch, values, plan)),
            );
        }
    }
    let groups = &plan.by_input;
    let n_in = plan.n_in;
    if batch == 0 || n_in == 0 {
        let gx = want_input.then(|| vec![0f32; n_in * batch]);
        let dw = want_values.then(|| vec![0f32; plan.nnz()]);
        return (gx, dw);
    }
    let per = rows_per_task(n_in, KERNEL_TASKS_PER_THREAD);
    let tasks = n_in.div_ceil(per);
    let fma = has_fma();
    let panels = layout.panels(groups, gt, plan.n_out, batch);
    let order = slot_order(&panels, groups);
    let w = order.arrange(values);
    let at = BackwardInputs {
        b: batch,
        groups,
        w: &w,
        xt,
        gt,
    };
    let run = |gx: Part<'_>, mut dw: Part<'_>| {
        // each task's rows of ∂x
        let mut gx_parts: Vec<Part<'_>> = match gx {
            Some(g) => g.chunks_mut(per * batch).map(Some).collect(),
            None => (0..tasks).map(|_| None).collect(),
        };
        // each task's runs of a pass, and its slots of ∂w: consecutive, from the first's
        let mut each_task =
            |runs: &[Runs<'_>], task: &(dyn Fn(Runs<'_>, Part<'_>, Part<'_>) + Sync)| {
                let mut dw_parts: Vec<Part<'_>> = Vec::with_capacity(tasks);
                let mut rest = dw.as_deref_mut().map(|d| &mut d[runs[0].start..]);
                for r in runs {
                    dw_parts.push(rest.take().map(|d| {
                        let (head, tail) = d.split_at_mut(r.end() - r.start);
                        rest = Some(tail);
                        head
                    }));
                }
                gx_parts
                    .par_iter_mut()
                    .zip(dw_parts.par_iter_mut())
                    .zip(runs.par_iter())
                    .for_each(|((gx, dw), runs)| task(*runs, gx.as_deref_mut(), dw.as_deref_mut()))
            };
        let Some((panels, order)) = &panels else {
            let runs = order.tasks_runs(0, per, n_in);
            each_task(&runs, &|runs, gx, dw| {
                let (first, n) = (runs.first, runs.len());
                #[cfg(target_arch = "x86_64")]
                if fma {
                    // SAFETY: the CPU has AVX2 and FMA (checked above).
                    unsafe { backward_rows_avx2(gx, dw, first, n, at) };
                    return;
                }
                backward_rows::<false>(gx, dw, first, n, at);
            });
            return;
        };
        let other = order.other();
        // every task of a pass (panel and tile) before the next: the threads share the pass's
        // rows in the cache
        for p in 0..panels.count() {
            for tile in 0..order.tiles() {
                each_task(&order.tasks_runs(tile, per, n_in), &|runs, gx, dw| {
                    // SAFETY (both arms): `Panels` only exist where the CPU has AVX2 and FMA
                    // (asserted when they are packed).
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        match panels.width {
                            16 => panel_backward_avx2::<16>(gx, dw, (runs, p), at, other, panels),
                            32 => panel_backward_avx2::<32>(gx, dw, (runs, p), at, other, panels),
                            other => unreachable!("panel width {other}"),
                        }
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    let _ = (gx, dw, runs, other);
                });
            }
        }
    };
    let (gx, dw) = match (want_input, want_values) {
        (true, true) => {
            let mut dw = None;
            let gx = written(n_in * batch, |gx| {
                dw = Some(written(plan.nnz(), |dw| run(Some(gx), Some(dw))));
            });
            (Some(gx), dw)
        }
        (true, false) => (Some(written(n_in * batch, |gx| run(Some(gx), None))), None),
        (false, true) => (None, Some(written(plan.nnz(), |dw| run(None, Some(dw))))),
        (false, false) => (None, None),
    };
    (gx, dw.map(|d| order.restore(d)))
}

/// `∂w` alone for a layer with fewer inputs than outputs (a first layer: 784 inputs against
/// up to hundreds of thousands of neurons), grouped by output neuron: each output's gradient
/// row `gᵀ[o]` against the `xᵀ` rows of its inputs, which are few enough to stay in the
/// cache, instead of gathering the rows of the far larger `gᵀ` (the backward grouping);
/// then back to storage order. The same products, `∂w[s] = xᵀ[i] · gᵀ[o]`, in the same
/// 8-lane partial sums (only the final sum of a connection's eight lanes may be added in
/// another order). `b` must be a multiple of 64 and the CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
fn weight_gradient_by_output(
    xt: &[f32],
    gt: &[f32],
    b: usize,
    values: &[f32],
    plan: &ConnectionPlan,
) -> Vec<f32> {
    assert!(
        has_fma() && b.is_multiple_of(FUSED_BLOCK),
        "the AVX2 ∂w kernel"
    );
    let groups = &plan.by_output;
    let n = plan.n_out;
    // the kernel's own rows are those of `gᵀ`, its gathered rows those of `xᵀ`; the weights
    // are not read without `∂x`
    let at = BackwardInputs {
        b,
        groups,
        w: values,
        xt: gt,
        gt: xt,
    };
    let per = rows_per_task(n.max(1), KERNEL_TASKS_PER_THREAD);
    let dw = written(plan.nnz(), |dw| {
        let mut parts = Vec::with_capacity(n.div_ceil(per));
        let mut rest = dw;
        for first in (0..n).step_by(per) {
            let end = (first + per).min(n);
            let (part, tail) = rest.split_at_mut(groups.offsets[end] - groups.offsets[first]);
            parts.push((first, end - first, part));
            rest = tail;
        }
        parts.into_par_iter().for_each(|(first, count, part)| {
            // SAFETY: the CPU has AVX2 and FMA (asserted above).
            unsafe { fused_backward_rows_avx2(None, part, first, count, at) }
        });
    });
    groups.restore(dw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// Whole rows.
    const WHOLE: Layout = Layout {
        width: None,
        tile_rows: TILE_ROWS,
    };

    /// Panels of `width` columns in tiles of at most `tile_rows` rows.
    fn on_panels(width: usize, tile_rows: usize) -> Layout {
        Layout {
            width: Some(width),
            tile_rows,
        }
    }

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

    impl Case {
        fn plan(&self) -> ConnectionPlan {
            ConnectionPlan::from_i64(&self.rows, &self.cols, self.n_in, self.n_out)
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
            let y = transpose(&forward_t(&xt, c.b, &c.w, &c.plan()), c.n_out, c.b);
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
            let (gxt, gw) = backward_t(&xt, &gt, c.b, &c.w, &c.plan(), true, true);
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

    #[test]
    fn forward_then_sees_every_task_rows_once_from_its_first_row() {
        // one thread: tasks of several rows (where `first` matters), a tail batch, and empties
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        pool.install(|| {
            for (b, n_out) in [(3, 40), (70, 19), (64, 1)] {
                let c = case(b, 23, n_out, 3 * n_out, true, 5);
                let xt = transpose(&c.x, c.b, c.n_in);
                let want = forward_t(&xt, b, &c.w, &c.plan());
                let (z, y) = forward_t_then(&xt, b, &c.w, &c.plan(), |first, zc, yc| {
                    assert_eq!(zc.len(), yc.len());
                    assert_eq!(zc.len() % b, 0);
                    for (k, (z, y)) in zc.iter_mut().zip(yc.iter_mut()).enumerate() {
                        let row = first + k / b;
                        y.write(*z + 1000.0 * row as f32);
                        *z = -*z;
                    }
                });
                let back: Vec<f32> = want.iter().map(|v| -v).collect();
                assert_eq!(z, back, "b {b}, n_out {n_out}");
                for (k, (y, w)) in y.iter().zip(&want).enumerate() {
                    assert_eq!(*y, w + 1000.0 * (k / b) as f32, "b {b}, n_out {n_out}, {k}");
                }
            }
            for (b, n_out) in [(0, 5), (4, 0)] {
                let c = case(b, 3, n_out, 0, false, 1);
                let xt = vec![0f32; 3 * b];
                let (z, y) =
                    forward_t_then(&xt, b, &c.w, &c.plan(), |_, _, _| panic!("no rows to see"));
                assert!(z.is_empty() && y.is_empty());
            }
        });
    }

    #[test]
    fn panels_give_the_whole_rows_product_bit_for_bit() {
        if !has_fma() {
            return; // panels need AVX2 + FMA; `panel_width` never picks them without
        }
        // one and several tasks, rows without connections, widths 16 and 32, two batches
        for (b, width, n_in, n_out, nnz) in [
            (128, 16, 300, 257, 4000),
            (128, 32, 300, 40, 2000),
            (64, 32, 50, 7, 100),
            (32, 16, 5, 3, 0),
            (32, 16, 0, 3, 0),
            (32, 16, 4, 0, 0),
        ] {
            let c = case(b, n_in, n_out, nnz, true, width as u64);
            let xt = transpose(&c.x, b, n_in);
            let want = forward_t_in(&xt, b, &c.w, &c.plan(), WHOLE);
            let got = forward_t_in(&xt, b, &c.w, &c.plan(), on_panels(width, TILE_ROWS));
            assert_eq!(got, want, "b {b}, width {width}");
            let (z, y) = forward_t_then_in(
                &xt,
                b,
                &c.w,
                &c.plan(),
                on_panels(width, TILE_ROWS),
                |first, zc, yc| {
                    for (k, (z, y)) in zc.iter_mut().zip(yc.iter_mut()).enumerate() {
                        y.write(*z + 1000.0 * (first + k / b) as f32);
                        *z = -*z;
                    }
                },
            );
            for (k, w) in want.iter().enumerate() {
                assert_eq!(z[k], -w, "b {b}, width {width}, {k}");
                assert_eq!(
                    y[k],
                    w + 1000.0 * (k / b) as f32,
                    "b {b}, width {width}, {k}"
                );
            }
            // backward: the same ∂x sums (bit for bit), ∂w summed panel by panel; both, or
            // either alone
            let gt = transpose(&c.g, b, n_out);
            let whole = backward_t_in(
                &xt,
                &gt,
                b,
                &c.w,
                &c.plan(),
                [true, true],
                Layout {
                    width: None,
                    tile_rows: 1,
                },
            );
            let (gx, dw) = (whole.0.unwrap(), whole.1.unwrap());
            // (∂w of whole rows against the connection-wise sums: rows of 8+ connections)
            let want_dw: Vec<f64> = (0..nnz)
                .map(|k| {
                    let (i, o) = (c.rows[k] as usize, c.cols[k] as usize);
                    (0..b)
                        .map(|s| xt[i * b + s] as f64 * gt[o * b + s] as f64)
                        .sum()
                })
                .collect();
            close(&dw, &want_dw);
            for wanted in [[true, true], [true, false], [false, true]] {
                let (pgx, pdw) = backward_t_in(
                    &xt,
                    &gt,
                    b,
                    &c.w,
                    &c.plan(),
                    wanted,
                    on_panels(width, TILE_ROWS),
                );
                assert_eq!(pgx.is_some(), wanted[0]);
                assert_eq!(pdw.is_some(), wanted[1]);
                if let Some(pgx) = pgx {
                    assert_eq!(pgx, gx, "∂x, b {b}, width {width}");
                }
                if let Some(pdw) = pdw {
                    let dw: Vec<f64> = dw.iter().map(|&v| v as f64).collect();
                    close(&pdw, &dw);
                }
            }
        }
    }

    #[test]
    fn tiles_give_the_whole_rows_product() {
        if !has_fma() {
            return; // panels need AVX2 + FMA; `panel_width` never picks them without
        }
        let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        // storage grouped by input or not; tiles of one row, of a few, a last tile that is
        // short, tiles with no connections, one or several tasks
        for (b, width, n_in, n_out, nnz, shuffled) in [
            (128, 32, 300, 257, 4000, true),
            (64, 16, 120, 90, 3000, false),
            (32, 16, 40, 3, 30, true),
            (32, 16, 3, 50, 20, false),
        ] {
            let c = case(b, n_in, n_out, nnz, shuffled, n_in as u64);
            let plan = c.plan();
            let xt = transpose(&c.x, b, n_in);
            let gt = transpose(&c.g, b, n_out);
            let want = forward_t_in(&xt, b, &c.w, &plan, WHOLE);
            let (gx, dw) = backward_t_in(
                &xt,
                &gt,
                b,
                &c.w,
                &plan,
                [true, true],
                Layout {
                    width: None,
                    tile_rows: 1,
                },
            );
            let (gx, dw) = (gx.unwrap(), dw.unwrap());
            for tile_rows in [1, 7, 64] {
                // a grouping keeps one tile size: a fresh plan per size
                let plan = c.plan();
                let at = format!("b {b}, width {width}, tiles of {tile_rows}");
                let tiled = on_panels(width, tile_rows);
                let got = forward_t_in(&xt, b, &c.w, &plan, tiled);
                close(&got, &wide(&want));
                let (z, y) = forward_t_then_in(&xt, b, &c.w, &plan, tiled, {
                    |first, zc, yc| {
                        for (k, (z, y)) in zc.iter_mut().zip(yc.iter_mut()).enumerate() {
                            y.write(*z + (first + k / b) as f32);
                        }
                    }
                });
                assert_eq!(z, got, "{at}");
                let rows: Vec<f32> = (0..n_out * b).map(|k| got[k] + (k / b) as f32).collect();
                assert_eq!(y, rows, "{at}");
                for wanted in [[true, true], [true, false], [false, true]] {
                    let (tgx, tdw) = backward_t_in(&xt, &gt, b, &c.w, &plan, wanted, tiled);
                    assert_eq!(tgx.is_some(), wanted[0], "{at}");
                    assert_eq!(tdw.is_some(), wanted[1], "{at}");
                    if let Some(tgx) = tgx {
                        close(&tgx, &wide(&gx));
                    }
                    if let Some(tdw) = tdw {
                        close(&tdw, &wide(&dw));
                    }
                }
                // whole tiles of the gathered rows, in order, with the same connections
                let tiles = plan.by_output.tiled(n_in, tile_rows);
                assert_eq!(tiles.count(), n_in.div_ceil(tile_rows).max(1), "{at}");
                assert!(tiles.rows <= tile_rows, "{at}");
                assert_eq!(tiles.count(), n_in.div_ceil(tiles.rows).max(1), "{at}");
                let mut seen = vec![false; nnz];
                for t in 0..tiles.count() {
                    let runs = tiles.tile_runs[t]..tiles.tile_runs[t + 1];
                    if t == 0 {
                        assert_eq!(runs.len(), n_out, "tile 0 has every group: {at}");
                    }
                    for r in runs {
                        let start = if r == 0 { 0 } else { tiles.run_end[r - 1] };
                        assert!(t == 0 || start < tiles.run_end[r], "empty run: {at}");
                        for slot in start..tiles.run_end[r] {
                            let k = tiles.perm[slot] as usize;
                            assert!(!seen[k], "{at}");
                            seen[k] = true;
                            assert_eq!(tiles.other[slot] as i64, c.rows[k], "{at}");
                            assert_eq!(tiles.run_group[r] as i64, c.cols[k], "{at}");
                            assert_eq!(tiles.other[slot] as usize / tiles.rows, t, "{at}");
                        }
                    }
                }
                assert!(seen.iter().all(|&s| s), "every connection once: {at}");
            }
        }
    }

    #[test]
    fn panels_are_the_source_columns_on_cache_line_boundaries() {
        // large enough for the system allocator to map them (16 bytes past a page), and
        // small ones it serves from its heap
        for (n, b, width) in [(3_000, 128, 32), (1_100, 64, 16), (7, 32, 16), (1, 64, 32)] {
            let src: Vec<f32> = (0..n * b).map(|k| k as f32).collect();
            let panels = Panels::pack(&src, n, b, width);
            assert_eq!(panels.count(), b / width);
            for p in 0..panels.count() {
                let panel = panels.panel(p);
                assert_eq!(panel.as_ptr() as usize % 64, 0, "panel {p} of {n} × {b}");
                for i in 0..n {
                    assert_eq!(
                        panel[i * width..][..width],
                        src[i * b + p * width..][..width]
                    );
                }
            }
        }
    }

    #[test]
    fn panels_are_for_sources_larger_than_the_cache() {
        if !has_fma() {
            assert_eq!(panel_width(30_000, 128), None);
            return;
        }
        assert_eq!(panel_width(784, 128), None); // 0.4 MB: whole rows
        assert_eq!(panel_width(24_576, 128), None); // 12 MB: whole rows
        assert_eq!(panel_width(24_577, 128), Some(32));
        assert_eq!(panel_width(333_334, 128), Some(32));
        assert_eq!(panel_width(100_000, 48), Some(16)); // no multiple of 32
        assert_eq!(panel_width(100_000, 100), None); // no multiple of 16
        assert_eq!(panel_width(100_000, 32), Some(16)); // one panel would be the whole row
        assert_eq!(panel_width(100_000, 16), None);
    }

    /// Wider layers, an odd batch: against a connection-by-connection reference.
    #[test]
    #[allow(clippy::needless_range_loop)] // index arithmetic is the reference
    fn wide_layers_match_a_connectionwise_reference() {
        let (b, n_in, n_out) = (150, 1400, 1300);
        let c = case(b, n_in, n_out, 5000, true, 9);
        let xt = transpose(&c.x, b, n_in);
        let gt = transpose(&c.g, b, n_out);
        let yt = forward_t(&xt, b, &c.w, &c.plan());
        let (gxt, gw) = backward_t(&xt, &gt, b, &c.w, &c.plan(), true, true);
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
        // 128: the AVX2 kernels' whole 64-column blocks (with fewer inputs than outputs, ∂w
        // alone is grouped by output); 4: the generic loop; shuffled: storage order is
        // neither grouping's
        for (b, n_in, n_out, shuffled) in [
            (4, 5, 6, false),
            (128, 5, 6, false),
            (128, 5, 6, true),
            (128, 60, 7, true),
            (64, 7, 300, true),
        ] {
            let c = case(b, n_in, n_out, n_in * n_out / 3, shuffled, b as u64);
            let (gx, gw) = backward_t(&c.x, &c.g, c.b, &c.w, &c.plan(), false, true);
            assert!(gx.is_none());
            // the weight gradient alone is the one computed with the input gradient (bit for
            // bit in the same grouping; by output, the eight lanes of a connection's sum
            // may be added in another order)
            let (_, both) = backward_t(&c.x, &c.g, c.b, &c.w, &c.plan(), true, true);
            let (gw, both) = (gw.unwrap(), both.unwrap());
            if n_in < n_out && b.is_multiple_of(64) {
                for (a, z) in gw.iter().zip(&both) {
                    assert!((a - z).abs() <= 1e-5 * (1.0 + z.abs()), "{a} vs {z}");
                }
                assert_ne!(gw, vec![0.0; gw.len()]);
            } else {
                assert_eq!(gw, both);
            }
            let (gx, gw) = backward_t(&c.x, &c.g, c.b, &c.w, &c.plan(), true, false);
            assert!(gx.is_some() && gw.is_none());
        }
    }

    #[test]
    fn a_tampered_plan_is_refused_not_read_out_of_bounds() {
        // the plan's fields are public: the unchecked kernels check its indices first, on
        // whole rows, on panels and on tiles
        let c = case(128, 5, 6, 10, false, 1);
        let mut plan = c.plan();
        plan.by_output.other[0] = 1_000_000;
        let xt = transpose(&c.x, c.b, c.n_in);
        for layout in [WHOLE, on_panels(32, TILE_ROWS), on_panels(32, 2)] {
            let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                forward_t_in(&xt, c.b, &c.w, &plan, layout)
            }))
            .expect_err("a tampered plan");
            let message = refused
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| refused.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            assert!(
                message.contains("a connection outside the rows it gathers from"),
                "{message}"
            );
        }
    }

    /// The sampled product against the dense `xᵀ g` masked: mask widths around the 32-wide
    /// scan, empty and full rows, a non-binary mask value, a batch off the dot's widths.
    #[test]
    fn sampled_product_is_the_masked_dense_product() {
        for (b, d_in, d_out, density) in [
            (128, 40, 1000, 0.04),
            (7, 13, 31, 0.3),
            (33, 9, 64, 0.5),
            (1, 5, 33, 1.0),
            (20, 6, 70, 0.0),
        ] {
            let mut rng = StdRng::seed_from_u64(d_out as u64);
            let mut r =
                |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
            let (xt, gt) = (r(d_in * b), r(d_out * b));
            let mut mask: Vec<f32> = r(d_in * d_out)
                .iter()
                .map(|u| ((u + 1.0) / 2.0 < density) as u8 as f32)
                .collect();
            // an empty row and a full row
            mask[..d_out].fill(0.0);
            mask[d_out..2 * d_out].fill(1.0);
            mask[2 * d_out + 3] = 0.5;
            let got = sampled_product(&xt, &gt, b, &mask, [d_in, d_out]);
            for i in 0..d_in {
                for j in 0..d_out {
                    let m = mask[i * d_out + j];
                    let v = got[i * d_out + j];
                    if m == 0.0 {
                        assert_eq!(v.to_bits(), 0f32.to_bits(), "({i}, {j}) off the mask");
                        continue;
                    }
                    let want: f64 = m as f64
                        * (0..b)
                            .map(|s| xt[i * b + s] as f64 * gt[j * b + s] as f64)
                            .sum::<f64>();
                    assert!(
                        (v as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "({i}, {j})"
                    );
                }
            }
        }
    }

    #[test]
    fn transpose_round_trips() {
        // whole 8 × 8 blocks, edges of every width, and tiles split over tasks
        for (r, c) in [
            (37, 70),
            (64, 128),
            (128, 784),
            (9, 8),
            (8, 9),
            (1, 5),
            (130, 33),
        ] {
            let a: Vec<f32> = (0..r * c).map(|v| v as f32).collect();
            let t = transpose(&a, r, c);
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(t[j * r + i], a[i * c + j], "[{r}, {c}] at ({i}, {j})");
                }
            }
            assert_eq!(transpose(&t, c, r), a);
        }
    }
}
