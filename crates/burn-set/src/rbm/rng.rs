//! A small, fast, seedable random source for Gibbs sampling.
//!
//! Bernoulli samples are drawn as `u < p` with `u` uniform in `[0, 1)`. The uniforms come from a
//! host-side xoshiro256++ generator owned by the caller (not from Burn's global backend RNG), so
//! a run is reproducible from its seed even when several models sample at the same time (e.g.
//! tests running in parallel threads). On Burn's CPU backends `Tensor::random` also generates on
//! the host, so this costs the same.

use crate::topology::derived_rng;
use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng;

/// xoshiro256++ (Blackman & Vigna), seeded through [`derived_rng`].
#[derive(Clone, Debug)]
pub struct FastRng {
    s: [u64; 4],
}

impl FastRng {
    /// A generator for the stream `(seed, ids…)`.
    pub fn new(seed: u64, ids: &[u64]) -> Self {
        let mut r = derived_rng(seed, ids);
        let mut s = [0u64; 4];
        for x in &mut s {
            *x = r.random();
        }
        if s == [0; 4] {
            s[0] = 1;
        }
        Self { s }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = (s[0].wrapping_add(s[3])).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// `n` uniforms in `[0, 1)` with 24 random bits each (two per 64-bit draw).
    pub fn uniforms(&mut self, n: usize) -> Vec<f32> {
        const SCALE: f32 = 1.0 / (1u32 << 24) as f32;
        let mut out = vec![0f32; n];
        let mut pairs = out.chunks_exact_mut(2);
        for pair in &mut pairs {
            let x = self.next_u64();
            pair[0] = (x >> 40) as f32 * SCALE;
            pair[1] = ((x >> 8) & 0xFF_FFFF) as f32 * SCALE;
        }
        if let [last] = pairs.into_remainder() {
            *last = (self.next_u64() >> 40) as f32 * SCALE;
        }
        out
    }

    /// A `[rows, cols]` tensor of uniforms in `[0, 1)`.
    pub fn uniform_tensor(&mut self, rows: usize, cols: usize, device: &Device) -> Tensor<2> {
        Tensor::from_data(
            TensorData::new(self.uniforms(rows * cols), [rows, cols]),
            device,
        )
    }

    /// Independent Bernoulli samples (0.0 / 1.0) with the probabilities `p`.
    pub fn bernoulli(&mut self, p: Tensor<2>) -> Tensor<2> {
        let [r, c] = p.dims();
        let u = self.uniform_tensor(r, c, &p.device());
        u.lower(p).float()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniforms_are_uniform_and_reproducible() {
        let a = FastRng::new(3, &[1]).uniforms(100_001);
        let b = FastRng::new(3, &[1]).uniforms(100_001);
        let c = FastRng::new(3, &[2]).uniforms(100_001);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|&u| (0.0..1.0).contains(&u)));
        let mean = a.iter().map(|&u| u as f64).sum::<f64>() / a.len() as f64;
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
        let below = a.iter().filter(|&&u| u < 0.1).count() as f64 / a.len() as f64;
        assert!((below - 0.1).abs() < 0.005, "{below}");
    }
}
