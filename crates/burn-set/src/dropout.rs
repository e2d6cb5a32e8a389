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

/// `n` mask values: `1 / keep` with probability `keep`, else 0; fixed by `seed`.
pub fn bernoulli_mask(n: usize, keep: f64, seed: u64) -> Vec<f32> {
    assert!(
        (0.0..=1.0).contains(&keep),
        "keep probability {keep} is not in [0, 1]"
    );
    // 16 random bits per value: `keep` is rounded to a multiple of 2⁻¹⁶ (the scale uses the
    // exact `keep`)
    let threshold = (keep * 65_536.0).round() as u32;
    let scale = if keep > 0.0 { (1.0 / keep) as f32 } else { 0.0 };
    written(n, |mask| {
        mask.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, chunk)| {
                let mut rng =
                    SmallRng::seed_from_u64(seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let mut bits = vec![0u16; chunk.len()];
                rng.fill(&mut bits[..]);
                for (m, &u) in chunk.iter_mut().zip(&bits) {
                    m.write(scale * (((u as u32) < threshold) as u32 as f32)); // branch-free
                }
            })
    })
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
}
