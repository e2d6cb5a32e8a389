//! Micro-benchmark of the truly sparse layer's host kernels (no Burn tensors): one
//! `n × n` layer at ε = 20, batch `b`, forward, fused backward (∂x and ∂w) and the ∂w-only
//! backward (a first layer), medians of `reps` runs, in ms and ns per connection.
//!
//! `cargo run --release --example kernel_bench -- N [reps = 5] [batch = 128] [inputs = N]`
//! (`inputs` = 784: a first layer, whose ∂w-only backward is the one a training step runs)
//!
//! The time per connection shows where the kernels leave the caches: on the 2-core machine
//! of the README the forward grows from ~6 ns at N = 1,000 to ~19 ns at 30,000 and ~33 ns
//! at 100,000 (panels of 32 batch columns from 24,577 neurons on, tiles of the gathered rows
//! beyond 50,000).
use burn_set::sparse_kernel::{backward_t, forward_t};
use burn_set::sparse_plan::ConnectionPlan;
use burn_set::topology::{SparseTopology, col_indices, row_indices};
use std::time::Instant;

/// The CLI's allocator, which keeps freed blocks for reuse: with the system allocator each
/// call's large buffers are new mappings, and their page faults were a third of a call at
/// N = 100,000.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("usage: kernel_bench N [reps] [batch] [inputs]")
        })
        .collect();
    assert!(
        !args.is_empty(),
        "usage: kernel_bench N [reps] [batch] [inputs]"
    );
    let (n, reps) = (args[0], args.get(1).copied().unwrap_or(5));
    let b = args.get(2).copied().unwrap_or(128);
    let n_in = args.get(3).copied().unwrap_or(n);
    let t = SparseTopology::erdos_renyi(n_in, n, 20.0, 1).unwrap();
    let (rows, cols) = (row_indices(&t.positions, n), col_indices(&t.positions, n));
    let plan = ConnectionPlan::from_i64(&rows, &cols, n_in, n);
    let nnz = plan.nnz();
    let values: Vec<f32> = (0..nnz)
        .map(|k| ((k * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    let (xs, x0) = aligned(n_in * b, |k| ((k * 31) % 97) as f32 * 0.01);
    let (gs, g0) = aligned(n * b, |k| ((k * 17) % 89) as f32 * 0.01);
    let (xt, gt) = (&xs[x0..x0 + n_in * b], &gs[g0..g0 + n * b]);
    let mut f = vec![];
    let mut bw = vec![];
    let mut bwo = vec![];
    let pool = rayon::ThreadPoolBuilder::new().build().unwrap();
    pool.install(|| {
        for _ in 0..reps {
            let t0 = Instant::now();
            let y = forward_t(xt, b, &values, &plan);
            f.push(t0.elapsed().as_secs_f64());
            std::hint::black_box(y);
            let t0 = Instant::now();
            let g = backward_t(xt, gt, b, &values, &plan, true, true);
            bw.push(t0.elapsed().as_secs_f64());
            std::hint::black_box(g);
            let t0 = Instant::now();
            let g = backward_t(xt, gt, b, &values, &plan, false, true);
            bwo.push(t0.elapsed().as_secs_f64());
            std::hint::black_box(g);
        }
    });
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (f, bw, bwo) = (med(&mut f), med(&mut bw), med(&mut bwo));
    println!(
        "n {n_in} x {n} b {b} nnz {nnz}: fwd {:.2} ms ({:.2} ns/conn)  bwd {:.2} ms ({:.2} ns/conn)  dw-only {:.2} ms ({:.2} ns/conn)",
        f * 1e3,
        f * 1e9 / nnz as f64,
        bw * 1e3,
        bw * 1e9 / nnz as f64,
        bwo * 1e3,
        bwo * 1e9 / nnz as f64
    );
}

/// `n` values `f(k)` in a slice starting on a 64-byte boundary (the vector and the offset of
/// the slice in it), as the CLI's allocator gives the layers' activations: the system
/// allocator's large blocks start 16 bytes past a page, which splits every batch row over one
/// more cache line than it needs.
fn aligned(n: usize, f: impl Fn(usize) -> f32) -> (Vec<f32>, usize) {
    let mut v = vec![0f32; n + 16];
    let off = (64 - v.as_ptr() as usize % 64) % 64 / 4;
    for (k, x) in v[off..off + n].iter_mut().enumerate() {
        *x = f(k);
    }
    (v, off)
}
