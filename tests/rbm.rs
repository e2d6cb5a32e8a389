//! Integration tests of SET-RBM: AIS against the exact partition function, CD learning, masks
//! through CD updates, SET evolution on the RBM, Burn's Learner path and the binary data loader.

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use burn_set::callback::SetCallback;
use burn_set::data::{
    BinaryData, BinaryDatasetKind, BinarySplit, DataError, embedded_dna, load_binary_density,
    load_binary_file, parse_binary,
};
use burn_set::evolution::EvolutionConfig;
use burn_set::layers::snapshot_layers;
use burn_set::rbm::{
    AisConfig, FastRng, RbmTopology, RbmTrainConfig, SetRbm, SetRbmConfig, ais_log_z,
    average_log_likelihood, base_rate_visible_bias, beta_schedule, exact_log_z, log_sum_exp,
    train_rbm, train_rbm_with_learner,
};
use burn_set::set_linear::Sparsity;
use std::io::Write;

#[allow(deprecated)]
fn dev() -> Device {
    Device::ndarray()
}

fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec().unwrap()
}

/// Columns `cols` of the embedded dna training split, first `n` rows.
fn dna_columns(cols: std::ops::Range<usize>, n: usize) -> BinaryData {
    let d = embedded_dna(BinarySplit::Train).unwrap().limit(n);
    let mut values = Vec::new();
    for i in 0..d.len() {
        values.extend_from_slice(&d.row(i).unwrap()[cols.clone()]);
    }
    BinaryData::new(values, cols.len()).unwrap()
}

/// Replaces the parameters of `rbm` with N(0, w_std²) weights (masked) and N(0, bias_std²)
/// biases drawn from `seed`.
fn randomize(mut rbm: SetRbm, w_std: f32, bias_std: f32, seed: u64) -> SetRbm {
    let (nv, nh) = (rbm.n_visible(), rbm.n_hidden());
    let mut rng = FastRng::new(seed, &[1]);
    let mut normal = |n: usize, s: f32| -> Vec<f32> {
        rng.uniforms(2 * n)
            .chunks_exact(2)
            .map(|u| {
                let r = (-2.0 * (1.0 - u[0] as f64).ln()).sqrt();
                (s as f64 * r * (std::f64::consts::TAU * u[1] as f64).cos()) as f32
            })
            .collect()
    };
    let device = rbm.visible_bias.val().device();
    let w = Tensor::<2>::from_data(TensorData::new(normal(nv * nh, w_std), [nv, nh]), &device);
    let w = match &rbm.weights.mask {
        Some(m) => w * m.val(),
        None => w,
    };
    rbm.weights.weight = Param::from_tensor(w.detach());
    rbm.weights.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(normal(nh, bias_std), [nh]),
        &device,
    )));
    rbm.visible_bias = Param::from_tensor(Tensor::from_data(
        TensorData::new(normal(nv, bias_std), [nv]),
        &device,
    ));
    rbm
}

/// log Z by summing exp(−E(v, h)) over every joint state, on the host in f64.
#[allow(clippy::needless_range_loop)] // index arithmetic is the reference
fn brute_force_log_z(rbm: &SetRbm) -> f64 {
    let (w, b, c) = rbm.parameters();
    let [nv, nh] = w.dims();
    let (w, b, c) = (floats(w), floats(b), floats(c));
    let mut terms = Vec::new();
    for vs in 0..1usize << nv {
        for hs in 0..1usize << nh {
            let v = |i: usize| ((vs >> i) & 1) as f64;
            let h = |j: usize| ((hs >> j) & 1) as f64;
            let mut e = 0.0;
            for i in 0..nv {
                e += b[i] as f64 * v(i);
            }
            for j in 0..nh {
                e += c[j] as f64 * h(j);
                for i in 0..nv {
                    e += w[i * nh + j] as f64 * v(i) * h(j);
                }
            }
            terms.push(e);
        }
    }
    log_sum_exp(&terms)
}

fn dense(nv: usize, nh: usize, seed: u64) -> SetRbm {
    SetRbmConfig::new(nv, nh)
        .with_sparsity(Sparsity::Dense)
        .with_seed(seed)
        .init(&dev())
}

#[test]
fn exact_log_z_and_free_energy_match_brute_force() {
    for (nv, nh, seed) in [(8, 5, 1), (5, 8, 2)] {
        let rbm = randomize(dense(nv, nh, seed), 1.0, 0.5, seed);
        let exact = exact_log_z(&rbm).unwrap();
        let brute = brute_force_log_z(&rbm);
        assert!(
            (exact - brute).abs() < 1e-3,
            "{nv}x{nh}: {exact} vs {brute}"
        );
        // Σ_v exp(−F(v)) = Z: the free energy of every visible state.
        let states: Vec<f32> = (0..1usize << nv)
            .flat_map(|s| (0..nv).map(move |i| ((s >> i) & 1) as f32))
            .collect();
        let v = Tensor::<2>::from_data(TensorData::new(states, [1 << nv, nv]), &dev());
        let neg_f: Vec<f64> = floats(rbm.free_energy(v))
            .iter()
            .map(|&f| -(f as f64))
            .collect();
        assert!((log_sum_exp(&neg_f) - brute).abs() < 1e-3);
    }
    let big = dense(30, 30, 3);
    assert!(exact_log_z(&big).unwrap_err().contains("AIS"));
}

#[test]
fn beta_schedule_has_the_papers_shape() {
    let b = beta_schedule(14_500);
    assert_eq!(b.len(), 14_501);
    assert_eq!((b[0], *b.last().unwrap()), (0.0, 1.0));
    assert!(b.windows(2).all(|w| w[1] > w[0]));
    assert!((b[1] - 1e-3).abs() < 1e-12);
    assert!((b[600] - b[599] - 1e-4).abs() < 1e-12);
    assert!((b[14_500] - b[14_499] - 1e-5).abs() < 1e-12);
    let s = beta_schedule(1450);
    assert_eq!(s.len(), 1451);
    assert!((s[1] - 1e-2).abs() < 1e-12 && (s[1450] - s[1449] - 1e-4).abs() < 1e-12);
}

#[test]
fn ais_matches_exact_log_z_on_random_rbms() {
    // Several random settings, both enumeration branches; base rates from random data.
    for (nv, nh, w_std, seed) in [(20, 10, 0.5, 11), (20, 10, 1.0, 12), (12, 16, 0.8, 13)] {
        let rbm = randomize(dense(nv, nh, seed), w_std, 0.5, seed);
        let exact = exact_log_z(&rbm).unwrap();
        let data = BinaryData::new(
            FastRng::new(seed, &[9])
                .uniforms(500 * nv)
                .into_iter()
                .map(|u| if u < 0.3 { 1.0 } else { 0.0 })
                .collect(),
            nv,
        )
        .unwrap();
        let base = base_rate_visible_bias(&data);
        let est = ais_log_z(&rbm, &base, &AisConfig::new().with_seed(seed));
        eprintln!(
            "{nv}x{nh} w_std {w_std}: AIS {} exact {exact} (+{} {:?})",
            est.log_z, est.uncertainty_high, est.uncertainty_low
        );
        assert!(
            (est.log_z - exact).abs() < 0.1,
            "{nv}x{nh} w_std {w_std}: AIS {} vs exact {exact} (±{:?}/{})",
            est.log_z,
            est.uncertainty_low,
            est.uncertainty_high
        );
        assert!(est.uncertainty().is_finite() && est.uncertainty_high > 0.0);
        assert_eq!((est.runs, est.betas), (100, 14_500));
    }
}

#[test]
fn ais_matches_exact_log_z_after_training_and_cd_raises_the_likelihood() {
    // 16 variables of dna, 12 hidden units: small enough for the exact log Z.
    let data = dna_columns(80..96, 800);
    let rbm = SetRbmConfig::new(16, 12)
        .with_sparsity(Sparsity::Dense)
        .with_cd_k(1)
        .with_seed(5)
        .init(&dev())
        .with_visible_marginals(&data.marginals());
    let ll0 = average_log_likelihood(&rbm, &data, exact_log_z(&rbm).unwrap());
    let cfg = RbmTrainConfig::new().with_epochs(6).with_lr(0.05);
    let cb = SetCallback::new(EvolutionConfig::new());
    let (rbm, records) = train_rbm(rbm, &data, &cfg, &cb, |_, _| {}).unwrap();
    let exact = exact_log_z(&rbm).unwrap();
    let ll = average_log_likelihood(&rbm, &data, exact);
    let first = records[0].reconstruction_error;
    let last = records.last().unwrap().reconstruction_error;
    eprintln!("CD-1: recon {first} -> {last}, exact LL {ll0} -> {ll}");
    assert!(last < 0.9 * first, "reconstruction error {first} -> {last}");
    assert!(ll > ll0 + 0.3, "exact log-likelihood {ll0} -> {ll}");
    let est = ais_log_z(&rbm, &base_rate_visible_bias(&data), &AisConfig::new());
    eprintln!("trained: AIS {} exact {exact}", est.log_z);
    assert!(
        (est.log_z - exact).abs() < 0.1,
        "trained RBM: AIS {} vs exact {exact}",
        est.log_z
    );
}

#[test]
fn cd_gradient_approaches_the_exact_likelihood_gradient() {
    // With many chains and enough Gibbs steps the CD statistics become the exact gradient
    // E_data[v σ(c + vW)ᵀ] − E_model[v σ(c + vW)ᵀ]: checks signs, transposes and scaling.
    let (nv, nh) = (6, 4);
    let rbm = randomize(dense(nv, nh, 21), 0.7, 0.5, 21).with_cd(25, false, 4);
    let (w, b, c) = rbm.parameters();
    let (w, b, c) = (floats(w), floats(b), floats(c));
    let sig = |v: &[f64], j: usize| {
        let x = c[j] as f64 + (0..nv).map(|i| v[i] * w[i * nh + j] as f64).sum::<f64>();
        1.0 / (1.0 + (-x).exp())
    };
    let neg_f = |v: &[f64]| {
        (0..nv).map(|i| b[i] as f64 * v[i]).sum::<f64>()
            + (0..nh)
                .map(|j| {
                    let x = c[j] as f64 + (0..nv).map(|i| v[i] * w[i * nh + j] as f64).sum::<f64>();
                    x.max(0.0) + (-x.abs()).exp().ln_1p()
                })
                .sum::<f64>()
    };
    // Statistics of a set of visible vectors with weights.
    let stats = |vs: &[(Vec<f64>, f64)]| {
        let (mut gw, mut gb, mut gc) = (vec![0.0; nv * nh], vec![0.0; nv], vec![0.0; nh]);
        for (v, p) in vs {
            for j in 0..nh {
                let s = sig(v, j);
                gc[j] += p * s;
                for i in 0..nv {
                    gw[i * nh + j] += p * v[i] * s;
                }
            }
            for i in 0..nv {
                gb[i] += p * v[i];
            }
        }
        (gw, gb, gc)
    };
    let states: Vec<Vec<f64>> = (0..1usize << nv)
        .map(|s| (0..nv).map(|i| ((s >> i) & 1) as f64).collect())
        .collect();
    let lz = log_sum_exp(&states.iter().map(|v| neg_f(v)).collect::<Vec<_>>());
    let model: Vec<(Vec<f64>, f64)> = states
        .iter()
        .map(|v| (v.clone(), (neg_f(v) - lz).exp()))
        .collect();
    let data_rows: Vec<Vec<f64>> = (0..50)
        .map(|k| states[(k * 37 + 11) % 64].clone())
        .collect();
    let data: Vec<(Vec<f64>, f64)> = data_rows.iter().map(|v| (v.clone(), 1.0 / 50.0)).collect();
    let (dw, db, dc) = stats(&data);
    let (mw, mb, mc) = stats(&model);
    // 20,000 chains: the data repeated 400 times.
    let batch: Vec<f32> = (0..400)
        .flat_map(|_| data_rows.iter().flatten().map(|&x| x as f32))
        .collect();
    let v = Tensor::<2>::from_data(TensorData::new(batch, [20_000, nv]), &dev());
    let g = rbm.cd_step(v).grads;
    let gw = floats(g.get::<2>(rbm.weights.weight.id).unwrap());
    let gb = floats(g.get::<1>(rbm.visible_bias.id).unwrap());
    let gc = floats(g.get::<1>(rbm.weights.bias.as_ref().unwrap().id).unwrap());
    let check = |got: &[f32], d: &[f64], m: &[f64], what: &str| {
        for k in 0..got.len() {
            let want = -(d[k] - m[k]);
            assert!(
                (got[k] as f64 - want).abs() < 0.025,
                "{what}[{k}]: CD {} vs exact {want}",
                got[k]
            );
        }
    };
    check(&gw, &dw, &mw, "W");
    check(&gb, &db, &mb, "b");
    check(&gc, &dc, &mc, "c");
    // The gradient is not trivially small: the check above has teeth.
    assert!(gw.iter().any(|g| g.abs() > 0.05), "{gw:?}");
}

#[test]
fn persistent_cd_learns_and_keeps_its_chain() {
    let data = dna_columns(80..96, 400);
    let rbm = SetRbmConfig::new(16, 10)
        .with_sparsity(Sparsity::Dense)
        .with_cd_k(1)
        .with_persistent(true)
        .with_seed(8)
        .init(&dev())
        .with_visible_marginals(&data.marginals());
    let ll0 = average_log_likelihood(&rbm, &data, exact_log_z(&rbm).unwrap());
    // PCD needs a small learning rate (with 0.05 and momentum 0.9 it diverges here).
    let cfg = RbmTrainConfig::new().with_epochs(10);
    let cb = SetCallback::new(EvolutionConfig::new());
    let (rbm, _) = train_rbm(rbm, &data, &cfg, &cb, |_, _| {}).unwrap();
    let ll = average_log_likelihood(&rbm, &data, exact_log_z(&rbm).unwrap());
    eprintln!("PCD-1: exact LL {ll0} -> {ll}");
    assert!(ll > ll0 + 0.1, "PCD exact log-likelihood {ll0} -> {ll}");
    // 10 fantasy particles (the batch size), binary.
    let chain = rbm.sampler.chain().expect("persistent chain");
    assert_eq!(chain.dims(), [10, 16]);
    assert!(floats(chain).iter().all(|&x| x == 0.0 || x == 1.0));
}

fn outside_mask_is_zero(rbm: &SetRbm) -> (bool, usize) {
    let w = floats(rbm.weights.weight.val());
    let m = floats(rbm.weights.mask.as_ref().unwrap().val());
    let ok = w.iter().zip(&m).all(|(w, m)| *m != 0.0 || *w == 0.0);
    let nonzero_inside = w
        .iter()
        .zip(&m)
        .filter(|(w, m)| **m != 0.0 && **w != 0.0)
        .count();
    (ok, nonzero_inside)
}

#[test]
fn mask_is_respected_through_cd_updates() {
    let data = dna_columns(0..180, 300);
    for sparsity in [Sparsity::FixProb, Sparsity::Set] {
        let rbm = SetRbmConfig::new(180, 60)
            .with_epsilon(5.0)
            .with_sparsity(sparsity)
            .with_cd_k(3)
            .init(&dev())
            .with_visible_marginals(&data.marginals());
        let mask0 = floats(rbm.weights.mask.as_ref().unwrap().val());
        // The CD step's gradient is exactly zero outside the mask.
        let v = data.rows(0..10).to_tensor(&dev());
        let g = rbm.cd_step(v).grads;
        let gw: Vec<f32> = floats(g.get::<2>(rbm.weights.weight.id).unwrap());
        assert!(gw.iter().zip(&mask0).all(|(g, m)| *m != 0.0 || *g == 0.0));
        assert!(gw.iter().any(|g| *g != 0.0));
        let cfg = RbmTrainConfig::new().with_epochs(3);
        let cb = SetCallback::new(EvolutionConfig::new().with_final_prune(false));
        let mut checked = 0;
        let (rbm, _) = train_rbm(rbm, &data, &cfg, &cb, |_, m| {
            let (ok, _) = outside_mask_is_zero(m);
            assert!(ok, "{sparsity:?}: a weight outside the mask is non-zero");
            checked += 1;
        })
        .unwrap();
        assert_eq!(checked, 3);
        let (_, inside) = outside_mask_is_zero(&rbm);
        assert!(inside > rbm.nnz() / 2, "the connections did learn");
        let mask1 = floats(rbm.weights.mask.as_ref().unwrap().val());
        match sparsity {
            Sparsity::FixProb => assert_eq!(mask0, mask1, "FixProb never changes its mask"),
            _ => assert_ne!(mask0, mask1, "SET evolved the mask"),
        }
    }
}

#[test]
fn nnz_is_constant_across_evolutions_and_the_final_prune_removes_zeta() {
    let data = dna_columns(0..180, 400);
    let rbm = SetRbmConfig::new(180, 100)
        .with_sparsity(Sparsity::Set)
        .with_cd_k(1)
        .with_seed(3)
        .init(&dev())
        .with_visible_marginals(&data.marginals());
    let nnz0 = rbm.nnz();
    assert_eq!(nnz0, 11 * 280); // round(ε (n_v + n_h))
    let mut topologies = vec![snapshot_layers(&rbm, false)[0].topology.positions.clone()];
    let cb = SetCallback::new(EvolutionConfig::new());
    let cfg = RbmTrainConfig::new().with_epochs(4);
    let (rbm, records) = train_rbm(rbm, &data, &cfg, &cb, |rec, m| {
        if rec.epoch < 4 {
            assert_eq!(m.nnz(), nnz0, "epoch {}: nnz changed", rec.epoch);
        }
        topologies.push(snapshot_layers(m, false)[0].topology.positions.clone());
    })
    .unwrap();
    assert!(records.iter().all(|r| r.evolved));
    assert!(
        topologies.windows(2).all(|w| w[0] != w[1]),
        "every epoch rewires"
    );
    let history = cb.history();
    assert_eq!(history.len(), 4);
    assert_eq!(history.iter().filter(|h| h.final_prune).count(), 1);
    for h in &history[..3] {
        assert_eq!(h.layers[0].before, nnz0);
        assert_eq!(h.layers[0].after, nnz0);
        assert!(h.layers[0].pruned > nnz0 / 5, "ζ = 0.3 removes about 30%");
    }
    let last = &history[3].layers[0];
    assert_eq!(last.regrown, 0);
    assert_eq!(rbm.nnz(), nnz0 - last.pruned);
    let topo = RbmTopology::of(&rbm);
    assert_eq!(topo.connections as usize, rbm.nnz());
    assert!((topo.hidden_degree.mean - rbm.nnz() as f64 / 100.0).abs() < 1e-9);
}

#[test]
fn learner_path_trains_and_evolves_a_set_rbm() {
    let train = dna_columns(80..96, 800);
    let valid = dna_columns(80..96, 1600).rows(800..1600);
    let device = dev().autodiff();
    let rbm = SetRbmConfig::new(16, 40)
        .with_epsilon(4.0)
        .with_cd_k(1)
        .init(&device)
        .with_visible_marginals(&train.marginals());
    let nnz0 = rbm.nnz();
    // Sampling and evaluation work on non-autodiff tensors: an autodiff op that no backward
    // pass consumes is never freed (this leaked ~40 MB per epoch once).
    let (w, b, c) = rbm.parameters();
    assert!(!w.is_autodiff() && !b.is_autodiff() && !c.is_autodiff());
    assert!(rbm.weights.weight.val().is_autodiff());
    let (_, err0) = rbm.reconstruct(valid.to_tensor(&device));
    let cb = SetCallback::new(EvolutionConfig::new());
    let dir = tempfile::tempdir().unwrap();
    let cfg = RbmTrainConfig::new().with_epochs(3).with_lr(0.05);
    let rbm =
        train_rbm_with_learner(rbm, train, valid.clone(), &cfg, &cb, dir.path(), false).unwrap();
    let history = cb.history();
    assert_eq!(history.len(), 3, "two evolutions and the final prune");
    assert_eq!(history[0].layers[0].after, nnz0);
    assert_eq!(history[1].layers[0].after, nnz0);
    assert_eq!(rbm.nnz(), nnz0 - history[2].layers[0].pruned);
    let (ok, _) = outside_mask_is_zero(&rbm);
    assert!(ok);
    // It learned: lower mean-field reconstruction error on held-out data.
    let (_, err1) = rbm.reconstruct(valid.to_tensor(&dev()));
    let (e0, e1) = (floats(err0)[0], floats(err1)[0]);
    eprintln!("learner: valid reconstruction error {e0} -> {e1}");
    assert!(e1 < 0.95 * e0, "reconstruction error {e0} -> {e1}");
}

// ---------------------------------------------------------------- data loader

fn write(dir: &std::path::Path, name: &str, text: &str, gz: bool) {
    let mut f = std::fs::File::create(dir.join(name)).unwrap();
    if gz {
        let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap();
    } else {
        f.write_all(text.as_bytes()).unwrap();
    }
}

#[test]
fn loader_reads_raw_and_gzip_identically() {
    let dir = tempfile::tempdir().unwrap();
    let text = "0,1,1,0\n1,1,0,0\n0,0,0,1\n";
    write(dir.path(), "a.data", text, false);
    write(dir.path(), "a.data.gz", text, true);
    let raw = load_binary_file(dir.path().join("a.data")).unwrap();
    let gz = load_binary_file(dir.path().join("a.data.gz")).unwrap();
    assert_eq!(raw, gz);
    assert_eq!((raw.len(), raw.n_features), (3, 4));
    assert_eq!(raw.row(2).unwrap(), &[0., 0., 0., 1.]);
}

#[test]
fn loader_errors_name_the_file_and_the_problem() {
    // Non-binary value: file, line and column.
    let e = parse_binary(b"0,1\n1,0\n0,2\n", "bad.data").unwrap_err();
    assert!(matches!(e, DataError::Parse { line: 3, .. }), "{e:?}");
    let s = e.to_string();
    assert!(
        s.contains("bad.data") && s.contains(":3") && s.contains("\"2\""),
        "{s}"
    );
    let e = parse_binary(b"0,1\n0.5,1\n", "half.data").unwrap_err();
    assert!(e.to_string().contains("0.5"), "{e}");
    // Ragged rows.
    let e = parse_binary(b"0,1,1\n1,0\n", "ragged.data").unwrap_err();
    let s = e.to_string();
    assert!(s.contains("ragged") && s.contains("ragged.data:2"), "{s}");
    // Empty files (also only blank lines), raw and gzip.
    for bytes in [&b""[..], b"\n\n  \n"] {
        let e = parse_binary(bytes, "empty.data").unwrap_err();
        assert!(matches!(e, DataError::Empty { .. }), "{e:?}");
        assert!(e.to_string().contains("empty.data"));
    }
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "e.data.gz", "", true);
    assert!(matches!(
        load_binary_file(dir.path().join("e.data.gz")).unwrap_err(),
        DataError::Empty { .. }
    ));
    // Missing file and missing directory.
    let e = load_binary_file(dir.path().join("nope.data")).unwrap_err();
    assert!(matches!(e, DataError::Missing { .. }));
    let e =
        load_binary_density(BinaryDatasetKind::Adult, Some(&dir.path().join("nodir"))).unwrap_err();
    assert!(
        matches!(e, DataError::Missing { .. }) && e.to_string().contains("nodir"),
        "{e}"
    );
    // A directory without the data set's files lists what it looked for.
    let e = load_binary_density(BinaryDatasetKind::Connect4, Some(dir.path())).unwrap_err();
    assert!(e.to_string().contains("connect4.train.data.gz"), "{e}");
    // Only dna is embedded.
    let e = load_binary_density(BinaryDatasetKind::Adult, None).unwrap_err();
    assert!(matches!(e, DataError::NotEmbedded { .. }) && e.to_string().contains("--data-dir"));
    // Unknown names.
    assert!("cifar".parse::<BinaryDatasetKind>().is_err());
}

#[test]
fn missing_splits_are_substituted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    // `n` rows of the data set's width: `x`, then zeros
    let rows = |n: usize, kind: BinaryDatasetKind, x: &str| {
        let pad = ",0".repeat(kind.n_features() - x.split(',').count());
        (0..n).map(|_| format!("{x}{pad}\n")).collect::<String>()
    };
    use BinaryDatasetKind::{Adult, Connect4, OcrLetters, Rcv1};
    // adult / connect4 layout: train + valid → test = valid.
    write(
        dir.path(),
        "adult.train.data.gz",
        &rows(6, Adult, "1,0,1"),
        true,
    );
    write(
        dir.path(),
        "adult.valid.data",
        &rows(3, Adult, "0,0,1"),
        false,
    );
    let s = load_binary_density(BinaryDatasetKind::Adult, Some(dir.path())).unwrap();
    assert_eq!((s.train.len(), s.test.len()), (6, 3));
    assert_eq!(s.test_source.to_string(), "valid");
    assert_eq!(s.train_source.to_string(), "train");
    assert!(s.notes[0].contains("valid split is used as the test split"));
    // ocr_letters layout: valid + test → train = valid.
    write(
        dir.path(),
        "ocr_letters.valid.data.gz",
        &rows(4, OcrLetters, "1,1"),
        true,
    );
    write(
        dir.path(),
        "ocr_letters.test.data.gz",
        &rows(2, OcrLetters, "0,1"),
        true,
    );
    let s = load_binary_density(BinaryDatasetKind::OcrLetters, Some(dir.path())).unwrap();
    assert_eq!(s.train_source.to_string(), "valid");
    assert_eq!(s.test_source.to_string(), "test");
    // rcv1 layout: valid only → cut 80/20.
    write(
        dir.path(),
        "rcv1.valid.data.gz",
        &rows(10, Rcv1, "1,0"),
        true,
    );
    let s = load_binary_density(BinaryDatasetKind::Rcv1, Some(dir.path())).unwrap();
    assert_eq!((s.train.len(), s.test.len()), (8, 2));
    assert_eq!(s.train_source.to_string(), "valid[0..8]");
    assert_eq!(s.test_source.to_string(), "valid[8..10]");
    // Mismatched widths between splits are an error.
    write(
        dir.path(),
        "connect4.train.data",
        &rows(3, Connect4, "1,0,1"),
        false,
    );
    write(dir.path(), "connect4.valid.data", "1,0\n1,0\n", false);
    let e = load_binary_density(Connect4, Some(dir.path())).unwrap_err();
    assert!(matches!(e, DataError::Mismatch { .. }), "{e:?}");
    assert!(e.to_string().contains("connect4.valid.data"), "{e}");
}

#[test]
fn shared_suite_loads_with_the_documented_substitutions() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/binary-density");
    if !dir.is_dir() {
        eprintln!("skipped: {} not present", dir.display());
        return;
    }
    let dna = load_binary_density(BinaryDatasetKind::Dna, Some(&dir)).unwrap();
    let embedded = load_binary_density(BinaryDatasetKind::Dna, None).unwrap();
    assert_eq!(dna.train, embedded.train);
    assert_eq!(dna.test, embedded.test);
    let adult = load_binary_density(BinaryDatasetKind::Adult, Some(&dir)).unwrap();
    assert_eq!(
        (adult.train.len(), adult.test.len(), adult.train.n_features),
        (5000, 1414, 123)
    );
    assert_eq!(adult.test_source.to_string(), "valid");
}
