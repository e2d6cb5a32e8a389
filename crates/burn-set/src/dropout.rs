//! Dropout with the mask drawn on the host by a fast PRNG on the CPU backends.
//!
//! Burn's `Dropout` draws its Bernoulli mask element by element through the backend's random
//! tensor (a ChaCha stream on the CPU backends): for the SET-MLP on MNIST that was about a quarter
//! of a training step once the sparse layers ran on their own kernel. Here one seed is drawn from
//! the backend's generator (so `Device::seed` still fixes every mask), and the mask is expanded
//! from it by Xoshiro256++ in parallel chunks. Same semantics as `burn::nn::Dropout`: only while
//! training (an autodiff device, `training` flag on), kept values scaled by `1 / (1 − p)`.
//! Other backends use Burn's own dropout.

use crate::sparse_backend::has_native_kernel;
use crate::sparse_kernel::written;
use burn::nn::Dropout;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use rayon::prelude::*;

/// Elements per independently seeded chunk of the mask.
const CHUNK: usize = 1 << 16;

/// The draws of a mask: `(threshold, scale)` for `keep`, and chunk `c`'s random values. A
/// value is kept when its 16 random bits are below the threshold: `keep` is rounded to a
/// multiple of 2⁻¹⁶ (the scale uses the exact `keep`).
fn draws(keep: f64) -> (u32, f32) {
    assert!(
        (0.0..=1.0).contains(&keep),
        "keep probability {keep} is not in [0, 1]"
    );
    let threshold = (keep * 65_536.0).round() as u32;
    let scale = if keep > 0.0 { (1.0 / keep) as f32 } else { 0.0 };
    (threshold, scale)
}

/// The 16-bit random values of chunk `c` (`len` of them) of the mask drawn from `seed`.
fn chunk_bits(seed: u64, c: usize, len: usize) -> Vec<u16> {
    let mut rng = SmallRng::seed_from_u64(seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut bits = vec![0u16; len];
    rng.fill(&mut bits[..]);
    bits
}

/// `n` mask values: `1 / keep` with probability `keep`, else 0; fixed by `seed`.
pub fn bernoulli_mask(n: usize, keep: f64, seed: u64) -> Vec<f32> {
    let (threshold, scale) = draws(keep);
    written(n, |mask| {
        mask.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| {
                let bits = chunk_bits(seed, c, chunk.len());
                for (m, &u) in chunk.iter_mut().zip(&bits) {
                    m.write(scale * (((u as u32) < threshold) as u32 as f32)); // branch-free
                }
            })
    })
}

/// Mask values from which [`HostMask`] packs them as bits: 16 MB of floats (a mask of
/// 4,194,304 values: 32,768 neurons at batch 128). Below it a mask stays in the caches and
/// the floats are faster (`bench scale` at 1,000 neurons, eight interleaved pairs: 0.36 s
/// per epoch on floats, 0.41 s on bits); above it the bits save memory and its traffic
/// (333,334 neurons, 2,560 samples, two pairs: 48.7 / 44.9 → 48.5 / 43.5 s, peak memory 4.45 /
/// 4.64 → 4.07 / 3.94 GB).
pub const MASK_BITS_MIN_VALUES: usize = 1 << 22;

/// A dropout mask drawn on the host, kept for a backward pass: the values of
/// [`bernoulli_mask`], or the same draws packed as [`BernoulliBits`] from
/// [`MASK_BITS_MIN_VALUES`] values on.
#[derive(Debug, Clone, PartialEq)]
pub enum HostMask {
    /// One float per value.
    Values(Vec<f32>),
    /// One bit per value.
    Bits(BernoulliBits),
}

impl HostMask {
    /// `n` values, each kept (and scaled by `1 / keep`) with probability `keep`; fixed by
    /// `seed`, the same values in either form.
    pub fn new(n: usize, keep: f64, seed: u64) -> Self {
        if n >= MASK_BITS_MIN_VALUES {
            Self::Bits(BernoulliBits::new(n, keep, seed))
        } else {
            Self::Values(bernoulli_mask(n, keep, seed))
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Self::Values(v) => v.len(),
            Self::Bits(b) => b.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values `start..start + len`: borrowed from the floats, or written into `buf` (grown to
    /// `len` where it is shorter) from the bits.
    #[inline]
    pub fn window<'a>(&'a self, start: usize, len: usize, buf: &'a mut Vec<f32>) -> &'a [f32] {
        match self {
            Self::Values(v) => &v[start..start + len],
            Self::Bits(b) => {
                if buf.len() < len {
                    buf.resize(len, 0.0);
                }
                b.values_into(start, &mut buf[..len]);
                &buf[..len]
            }
        }
    }

    /// All values.
    pub fn values(&self) -> Vec<f32> {
        match self {
            Self::Values(v) => v.clone(),
            Self::Bits(b) => b.values(),
        }
    }
}

/// Bit `k` set where `u[k]` (of up to 8) is below `threshold`: eight compares into bytes,
/// gathered into one byte by a multiplication (byte `k`'s low bit lands on bit `56 + k`).
#[inline(always)]
fn pack8(u: &[u16], threshold: u32) -> u8 {
    let mut b = [0u8; 8];
    for (b, &u) in b.iter_mut().zip(u) {
        *b = ((u as u32) < threshold) as u8;
    }
    (u64::from_le_bytes(b).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8
}

/// The mask of [`bernoulli_mask`] (the same draws) packed one bit per value: bit `i` is set
/// where value `i` is kept (and is [`scale`](Self::scale) there). A fused block keeps its
/// mask for the backward pass: at 333,334 neurons per layer and batch 128, 5.3 MB per layer
/// instead of 171 MB of floats, written once and read twice per step.
#[derive(Debug, Clone, PartialEq)]
pub struct BernoulliBits {
    words: Vec<u64>,
    len: usize,
    scale: f32,
}

impl BernoulliBits {
    /// `n` values, each kept with probability `keep`; fixed by `seed`.
    pub fn new(n: usize, keep: f64, seed: u64) -> Self {
        let (threshold, scale) = draws(keep);
        let mut words = vec![0u64; n.div_ceil(64)];
        // CHUNK values are CHUNK / 64 whole words
        words
            .par_chunks_mut(CHUNK / 64)
            .enumerate()
            .for_each(|(c, chunk)| {
                let len = CHUNK.min(n - c * CHUNK);
                let bits = chunk_bits(seed, c, len);
                for (w, u) in chunk.iter_mut().zip(bits.chunks(64)) {
                    *w = u.chunks(8).enumerate().fold(0, |w, (j, eight)| {
                        w | (pack8(eight, threshold) as u64) << (8 * j)
                    });
                }
            });
        Self {
            words,
            len: n,
            scale,
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What a kept value is multiplied by: `1 / keep`.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Values `start..start + out.len()` into `out` (`0` or the scale).
    ///
    /// # Panics
    /// If they are not all in the mask.
    #[inline]
    pub fn values_into(&self, start: usize, out: &mut [f32]) {
        assert!(
            start + out.len() <= self.len,
            "mask values {start}..{} of {}",
            start + out.len(),
            self.len
        );
        let scale = self.scale;
        let bit = |at: usize| (self.words[at / 64] >> (at % 64)) & 1 == 1;
        if start.is_multiple_of(64) {
            // whole words, 32 bits at a time: a fixed pattern of bit tests, in vector lanes
            let done = out.len() / 32 * 32;
            let mut halves = out.chunks_exact_mut(32);
            for (i, half) in (&mut halves).enumerate() {
                let bits = (self.words[start / 64 + i / 2] >> (32 * (i % 2))) as u32;
                let half: &mut [f32; 32] = half.try_into().expect("32 values");
                for (k, v) in half.iter_mut().enumerate() {
                    *v = if bits & (1 << k) != 0 { scale } else { 0.0 };
                }
            }
            for (i, v) in halves.into_remainder().iter_mut().enumerate() {
                *v = if bit(start + done + i) { scale } else { 0.0 };
            }
        } else {
            for (i, v) in out.iter_mut().enumerate() {
                *v = if bit(start + i) { scale } else { 0.0 };
            }
        }
    }

    /// All values, as [`bernoulli_mask`] gives them.
    pub fn values(&self) -> Vec<f32> {
        let mut v = vec![0f32; self.len];
        self.values_into(0, &mut v);
        v
    }
}

/// The host mask `dropout` puts on a tensor on `device`: `(seed, keep probability)`, drawn
/// from the backend's generator; `None` where it puts none (not training, `p = 0`) or where
/// Burn's own dropout runs (backends without the native kernels).
pub fn host_mask_seed(dropout: &Dropout, device: &Device) -> Option<(u64, f64)> {
    if !dropout.training.is_enabled()
        || !device.is_autodiff()
        || dropout.prob == 0.0
        || !has_native_kernel(device)
    {
        return None;
    }
    // 3 × 30 bits (backends' int tensors may be i32)
    let seed = Tensor::<1, Int>::random([3], Distribution::Uniform(0.0, 1_073_741_824.0), device)
        .into_data()
        .iter::<i64>()
        .fold(0u64, |acc, v| acc.rotate_left(30) ^ v as u64);
    Some((seed, 1.0 - dropout.prob))
}

/// `dropout.forward(x)`, with the mask drawn on the host on the CPU backends.
pub fn dropout_forward<const D: usize>(dropout: &Dropout, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    let Some((seed, keep)) = host_mask_seed(dropout, &device) else {
        return dropout.forward(x);
    };
    let shape = x.shape();
    let mask = bernoulli_mask(shape.num_elements(), keep, seed);
    let mask = Tensor::<D>::from_data(TensorData::new(mask, shape), &device);
    x * mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_keeps_the_expected_fraction_and_scales() {
        let m = bernoulli_mask(200_001, 0.7, 3);
        let kept = m.iter().filter(|&&v| v != 0.0).count() as f64 / m.len() as f64;
        assert!((kept - 0.7).abs() < 0.005, "kept {kept}");
        assert!(m.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
        assert_eq!(m, bernoulli_mask(200_001, 0.7, 3));
        assert_ne!(m, bernoulli_mask(200_001, 0.7, 4));
        assert!(bernoulli_mask(100, 1.0, 1).iter().all(|&v| v == 1.0));
        assert!(bernoulli_mask(100, 0.0, 1).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn bits_are_the_mask_s_draws() {
        // several chunks, a partial last word; keep 0 and 1
        for (n, keep, seed) in [
            (200_001, 0.7, 3),
            (64, 0.5, 1),
            (70, 0.0, 2),
            (131_072, 1.0, 5),
        ] {
            let bits = BernoulliBits::new(n, keep, seed);
            let mask = bernoulli_mask(n, keep, seed);
            assert_eq!(bits.len(), n);
            assert_eq!(bits.values(), mask, "n {n} keep {keep}");
            // any window, on a word boundary or not
            let windows = [(0, 0), (64, 128), (3, 100), (n - 5, 5), (63, 1)];
            for (start, len) in windows.into_iter().filter(|&(s, l)| s + l <= n) {
                let mut out = vec![f32::NAN; len];
                bits.values_into(start, &mut out);
                assert_eq!(out, mask[start..start + len], "{start}..+{len}");
            }
        }
        assert!(BernoulliBits::new(0, 0.7, 1).is_empty());
    }

    #[test]
    fn host_masks_are_floats_or_bits_of_the_same_draws() {
        for n in [1000, MASK_BITS_MIN_VALUES - 1, MASK_BITS_MIN_VALUES + 100] {
            let m = HostMask::new(n, 0.7, 9);
            assert_eq!(
                matches!(m, HostMask::Bits(_)),
                n >= MASK_BITS_MIN_VALUES,
                "n {n}"
            );
            assert_eq!(m.len(), n);
            let want = bernoulli_mask(n, 0.7, 9);
            assert_eq!(m.values(), want);
            let mut buf = Vec::new();
            assert_eq!(m.window(n - 128, 128, &mut buf), &want[n - 128..]);
        }
    }

    #[test]
    #[should_panic(expected = "mask values 60..70 of 64")]
    fn bits_refuse_a_window_past_the_end() {
        BernoulliBits::new(64, 0.5, 1).values_into(60, &mut [0.0; 10]);
    }
}
