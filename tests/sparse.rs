//! Truly sparse storage (`SparseSetLinear`) against the masked `SetLinear`.

use burn::module::{Module, Param};
use burn::nn::DropoutConfig;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use burn_set::callback::SetCallback;
use burn_set::evolution::EvolutionConfig;
use burn_set::layers::{Storage, snapshot_layers};
use burn_set::set_linear::{SetLinear, SetLinearConfig, Sparsity};
use burn_set::sparse_backend::{has_native_kernel, sparse_linear};
use burn_set::sparse_linear::SparseSetLinear;
use burn_set::srelu::{SRelu, SReluConfig};

#[allow(deprecated)]
fn dev() -> Device {
    Device::ndarray()
}

fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec().unwrap()
}

/// A masked layer and the sparse layer with the same topology and weights.
fn twins(device: &Device) -> (SetLinear, SparseSetLinear) {
    let masked = SetLinearConfig::new(50, 30)
        .with_epsilon(4.0)
        .with_seed(Some(7))
        .init(device);
    let topo = masked.topology();
    let w = floats(masked.weight.val());
    let values: Vec<f32> = topo.positions.iter().map(|&p| w[p as usize]).collect();
    let bias = floats(masked.bias.as_ref().unwrap().val());
    let sparse = SparseSetLinear::from_topology(&topo, values, Some(bias), Sparsity::Set, device);
    (masked, sparse)
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(a, b)| (a - b).abs() <= 1e-5 + 1e-5 * b.abs())
}

#[test]
fn init_sparse_matches_masked_topology_for_the_same_seed() {
    let cfg = SetLinearConfig::new(120, 80)
        .with_epsilon(5.0)
        .with_seed(Some(3));
    let masked = cfg.init(&dev());
    let sparse = cfg.init_sparse(&dev()).unwrap();
    assert_eq!(sparse.topology(), masked.topology());
    assert_eq!(sparse.nnz(), masked.nnz());
    assert!(
        cfg.clone()
            .with_sparsity(Sparsity::Dense)
            .init_sparse(&dev())
            .is_err()
    );
}

/// Both CPU backends run the native kernel (ndarray always, flex with the default feature).
fn cpu_devices() -> Vec<Device> {
    #[allow(unused_mut)]
    let mut v = vec![dev()];
    #[cfg(feature = "flex")]
    v.push(Device::flex());
    v
}

#[test]
fn forward_and_gradients_match_masked() {
    for device in cpu_devices() {
        assert!(has_native_kernel(&device) && has_native_kernel(&device.clone().autodiff()));
        forward_and_gradients_match_masked_on(device.autodiff());
    }
}

#[test]
fn native_kernel_matches_the_portable_path() {
    for device in cpu_devices() {
        let device = device.autodiff();
        let (_, sparse) = twins(&device);
        // odd batch, not a multiple of the SIMD width
        let x =
            Tensor::<2>::random([37, 50], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let w = Tensor::<2>::random([37, 30], Distribution::Normal(0.0, 1.0), &device);
        let yk = sparse_linear(
            x.clone(),
            sparse.values.val(),
            sparse.structure.index().rows.val(),
            sparse.structure.index().cols.val(),
            30,
        );
        let yp = sparse.forward_portable(x.clone());
        assert!(close(&floats(yk.clone()), &floats(yp.clone())));
        let gk = (yk * w.clone()).sum().backward();
        let gp = (yp * w).sum().backward();
        assert!(close(
            &floats(sparse.values.grad(&gk).unwrap()),
            &floats(sparse.values.grad(&gp).unwrap())
        ));
        assert!(close(
            &floats(x.grad(&gk).unwrap()),
            &floats(x.grad(&gp).unwrap())
        ));
    }
}

/// The fused sparse + bias + SReLU op gives the chained ops' output and all seven gradients.
#[test]
fn fused_srelu_block_matches_the_chained_ops() {
    for device in cpu_devices() {
        let device = device.autodiff();
        let (_, sparse) = twins(&device);
        let param = |lo: f64, hi: f64| {
            Param::from_tensor(Tensor::<1>::random(
                [30],
                Distribution::Uniform(lo, hi),
                &device,
            ))
        };
        // thresholds and slopes spread so that every SReLU region is hit
        let srelu = SRelu {
            t_left: param(-0.8, 0.2),
            a_left: param(-0.3, 0.5),
            t_right: param(-1.0, 1.0),
            a_right: param(0.5, 1.5),
        };
        let x =
            Tensor::<3>::random([7, 5, 50], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let w = Tensor::<3>::random([7, 5, 30], Distribution::Normal(0.0, 1.0), &device);
        let no_dropout = DropoutConfig::new(0.0).init();
        let yf = sparse.forward_srelu_dropout(x.clone(), &srelu, &no_dropout);
        let yc = srelu.forward_composed(sparse.forward(x.clone()));
        assert_eq!(yf.dims(), [7, 5, 30]);
        assert!(close(&floats(yf.clone()), &floats(yc.clone())));
        let gf = (yf * w.clone()).sum().backward();
        let gc = (yc * w).sum().backward();
        let both =
            |p: &Param<Tensor<1>>| (floats(p.grad(&gf).unwrap()), floats(p.grad(&gc).unwrap()));
        let bias = sparse.bias.as_ref().unwrap();
        for (name, p) in [
            ("values", &sparse.values),
            ("bias", bias),
            ("t_left", &srelu.t_left),
            ("a_left", &srelu.a_left),
            ("t_right", &srelu.t_right),
            ("a_right", &srelu.a_right),
        ] {
            let (f, c) = both(p);
            assert!(close(&f, &c), "{name}: {f:?} vs {c:?}");
            assert!(c.iter().any(|v| *v != 0.0), "{name}: no gradient");
        }
        assert!(close(
            &floats(x.grad(&gf).unwrap()),
            &floats(x.grad(&gc).unwrap())
        ));
    }
}

/// With dropout on, the fused block's outputs are the undropped ones, zeroed at the rate `p`
/// or scaled by `1 / (1 − p)`, and dropped outputs pass no gradient.
#[test]
fn fused_block_dropout_zeroes_and_scales() {
    for device in cpu_devices() {
        let device = device.autodiff();
        let (_, sparse) = twins(&device);
        let srelu = SReluConfig::new(30).init(&device);
        let x =
            Tensor::<2>::random([400, 50], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let plain = floats(sparse.forward_srelu_dropout(
            x.clone(),
            &srelu,
            &DropoutConfig::new(0.0).init(),
        ));
        let y = sparse.forward_srelu_dropout(x.clone(), &srelu, &DropoutConfig::new(0.3).init());
        let grads = y.clone().sum().backward();
        let y = floats(y);
        let (mut dropped, mut nonzero) = (0usize, 0usize);
        let mut mask = vec![0f32; y.len()];
        for ((d, p), m) in y.iter().zip(&plain).zip(mask.iter_mut()) {
            assert!(*p != 0.0);
            nonzero += 1;
            if *d == 0.0 {
                dropped += 1;
            } else {
                assert!((d - p / 0.7).abs() <= 1e-4 * (1.0 + p.abs()), "{d} vs {p}");
                *m = 1.0 / 0.7;
            }
        }
        let rate = dropped as f64 / nonzero as f64;
        assert!((rate - 0.3).abs() < 0.02, "dropped {rate}");
        // the gradients are the chained ops' under the same mask
        let mask = Tensor::<2>::from_data(TensorData::new(mask, [400, 30]), &device);
        let chained = srelu.forward_composed(sparse.forward(x.clone())) * mask;
        let gc = chained.sum().backward();
        for (name, p) in [
            ("values", &sparse.values),
            ("bias", sparse.bias.as_ref().unwrap()),
            ("a_left", &srelu.a_left),
            ("t_right", &srelu.t_right),
        ] {
            let (f, c) = (
                floats(p.grad(&grads).unwrap()),
                floats(p.grad(&gc).unwrap()),
            );
            assert!(close(&f, &c), "{name}: {f:?} vs {c:?}");
        }
        assert!(close(
            &floats(x.grad(&grads).unwrap()),
            &floats(x.grad(&gc).unwrap())
        ));
    }
}

fn forward_and_gradients_match_masked_on(device: Device) {
    let (masked, sparse) = twins(&device);
    let x = Tensor::<2>::random([6, 50], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let target = Tensor::<2>::random([6, 30], Distribution::Normal(0.0, 1.0), &device);
    let ym = masked.forward(x.clone());
    let ys = sparse.forward(x.clone());
    assert!(close(&floats(ys.clone()), &floats(ym.clone())));
    let gm = (ym - target.clone()).powf_scalar(2.0).sum().backward();
    let gs = (ys - target).powf_scalar(2.0).sum().backward();
    // weight gradients at the connections
    let dw = floats(masked.weight.grad(&gm).unwrap());
    let dv = floats(sparse.values.grad(&gs).unwrap());
    let topo = sparse.topology();
    let dw_at: Vec<f32> = topo.positions.iter().map(|&p| dw[p as usize]).collect();
    assert!(close(&dv, &dw_at));
    // input and bias gradients
    assert!(close(
        &floats(x.grad(&gs).unwrap()),
        &floats(x.grad(&gm).unwrap())
    ));
    let db_m = floats(masked.bias.as_ref().unwrap().grad(&gm).unwrap());
    let db_s = floats(sparse.bias.as_ref().unwrap().grad(&gs).unwrap());
    assert!(close(&db_s, &db_m));
}

#[derive(Module, Debug)]
struct Pair {
    a: SetLinear,
    b: SparseSetLinear,
}

/// A model whose SET layer is the masked twin.
#[derive(Module, Debug)]
struct M1 {
    l: SetLinear,
}

/// A model whose SET layer is the sparse twin.
#[derive(Module, Debug)]
struct M2 {
    l: SparseSetLinear,
}

#[test]
fn the_native_kernel_runs_the_evolved_structure() {
    // the kernels' connection plans are cached by the index tensors' storage: after evolution
    // the new structure must be the one computed
    for device in cpu_devices() {
        let (masked, sparse) = twins(&device);
        let before = sparse.topology();
        let x = Tensor::<2>::random([6, 50], Distribution::Normal(0.0, 1.0), &device);
        let y = |m: &M1, s: &M2| {
            (
                floats(m.l.forward(x.clone())),
                floats(s.l.forward(x.clone())),
            )
        };
        let (mut m1, mut m2) = (M1 { l: masked }, M2 { l: sparse });
        let (ym, ys) = y(&m1, &m2);
        assert!(close(&ys, &ym));
        let cb = SetCallback::new(EvolutionConfig::new().with_seed(9));
        // the models before each evolution stay alive (with their plans) and keep working
        let mut kept = vec![(m1.clone(), m2.clone(), ym)];
        for epoch in 1..=2 {
            m1 = cb.evolve(m1, epoch, 0, 5).0;
            m2 = cb.evolve(m2, epoch, 0, 5).0;
            assert_ne!(m2.l.topology(), before);
            let (ym, ys) = y(&m1, &m2);
            assert!(close(&ys, &ym), "{device:?}, after evolution {epoch}");
            for (k1, k2, yk) in &kept {
                let (ym, ys) = y(k1, k2);
                assert!(
                    close(&ys, &ym) && close(&ys, yk),
                    "{device:?}, an earlier model"
                );
            }
            kept.push((m1.clone(), m2.clone(), ym));
        }
    }
}

#[test]
fn loaded_models_run_their_own_structures() {
    // hidden layers of equal shapes and sizes, loaded from a file (ndarray borrows the file's
    // bytes, which a clone copies: no plan may be found by such a copy's address)
    use burn_set::load::load_file;
    use burn_set::mlp::SetMlpConfig;
    for device in cpu_devices() {
        let config = SetMlpConfig::new(20, vec![24, 24, 24], 4)
            .with_storage(Some(Storage::Sparse))
            .with_epsilon(3.0)
            .with_seed(5);
        let model = config.init(&device);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bpk");
        model.clone().save_file(&path).unwrap();
        let loaded = load_file(config.init(&device), &path).unwrap();
        let x = Tensor::<2>::random([5, 20], Distribution::Normal(0.0, 1.0), &device);
        let want = floats(model.forward(x.clone()));
        for step in 0..4 {
            let y = floats(loaded.forward(x.clone()));
            assert!(close(&y, &want), "{device:?}, forward {step}");
        }
    }
}

#[test]
fn evolution_matches_masked_for_the_same_seed() {
    let device = dev();
    let (masked, sparse) = twins(&device);
    let cb = SetCallback::new(EvolutionConfig::new().with_seed(9));
    let (m1, _) = cb.evolve(M1 { l: masked }, 1, 0, 5);
    let (m2, _) = cb.evolve(M2 { l: sparse }, 1, 0, 5);
    let s1 = snapshot_layers(&m1, true).remove(0);
    let s2 = snapshot_layers(&m2, true).remove(0);
    assert_eq!(s2.storage, Storage::Sparse);
    assert_eq!(s1.topology, s2.topology);
    assert!(close(&s2.values, &s1.values));
    // final prune shrinks the sparse tensors
    let (m2, _) = cb.final_prune(m2, 2, 0, 5);
    let (m1, _) = cb.final_prune(m1, 2, 0, 5);
    assert_eq!(m2.l.nnz(), m1.l.nnz());
    assert!(m2.l.nnz() < s2.topology.nnz());
    assert_eq!(m2.l.topology(), m1.l.topology());
    // a mixed model evolves both kinds
    let (masked, sparse) = twins(&device);
    let (p, rec) = cb.evolve(
        Pair {
            a: masked,
            b: sparse,
        },
        3,
        0,
        5,
    );
    assert!(rec);
    assert_eq!(snapshot_layers(&p, false).len(), 2);
}

#[test]
fn save_load_round_trip_keeps_the_sparse_structure() {
    let a = SetLinearConfig::new(40, 25)
        .with_epsilon(3.0)
        .with_seed(Some(1))
        .init_sparse(&dev())
        .unwrap();
    let b = SetLinearConfig::new(40, 25)
        .with_epsilon(3.0)
        .with_seed(Some(2))
        .init_sparse(&dev())
        .unwrap();
    assert_ne!(a.topology(), b.topology());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.bpk");
    a.clone().save_file(&path).unwrap();
    let loaded = b.load_file(&path);
    assert_eq!(loaded.topology(), a.topology());
    assert_eq!(loaded.values_host(), a.values_host());
    assert_eq!(loaded.sparsity(), Sparsity::Set);
}

#[test]
fn million_by_million_layer_needs_no_dense_memory() {
    // 10^6 × 10^6 = 10^12 positions (4 TB as a dense f32 matrix); ε = 2 → 4·10^6 connections.
    let device = dev();
    let layer = SetLinearConfig::new(1_000_000, 1_000_000)
        .with_epsilon(2.0)
        .with_seed(Some(5))
        .init_sparse(&device)
        .unwrap();
    assert_eq!(layer.nnz(), 4_000_000);
    let x = Tensor::<2>::random([2, 1_000_000], Distribution::Normal(0.0, 1.0), &device);
    let y = layer.forward(x);
    assert_eq!(y.dims(), [2, 1_000_000]);
    #[derive(Module, Debug)]
    struct Big {
        l: SparseSetLinear,
    }
    let cb = SetCallback::new(EvolutionConfig::new().with_seed(1));
    let (big, changed) = cb.evolve(Big { l: layer }, 1, 0, 2);
    assert!(changed);
    assert_eq!(big.l.nnz(), 4_000_000);
    let rec = &cb.history()[0].layers[0];
    assert!(rec.pruned > 1_000_000 && rec.regrown == rec.pruned);
}

#[test]
fn sparse_values_are_the_only_trainable_weights() {
    let layer = SetLinearConfig::new(30, 20)
        .with_epsilon(2.0)
        .with_seed(Some(1))
        .init_sparse(&dev())
        .unwrap();
    // values + bias; the index tensors are Int and not parameters to optimise
    assert_eq!(layer.num_params(), 100 + 20);
}

/// SET's final prune shrinks truly sparse layers, so Burn's own `load_file` refuses a trained
/// model in a fresh one of the same config; `load::load_file` resizes the sparse layers first,
/// and refuses a file whose layers have other shapes with a clear error.
#[test]
fn a_pruned_sparse_model_loads_into_a_fresh_one() {
    use burn_set::layers::topology_summary;
    use burn_set::load::{LoadError, load_file};
    use burn_set::mlp::SetMlpConfig;
    let device = dev();
    let config = |hidden: Vec<usize>| {
        SetMlpConfig::new(30, hidden, 4)
            .with_storage(Some(Storage::Sparse))
            .with_epsilon(3.0)
            .with_seed(9)
    };
    let cb = SetCallback::new(EvolutionConfig::new().with_seed(4));
    let (m, _) = cb.evolve(config(vec![20, 16]).init(&device), 1, 0, 1);
    let (trained, pruned) = cb.final_prune(m, 2, 0, 1);
    assert!(pruned);
    let fresh = config(vec![20, 16]).init(&device);
    let n = topology_summary(&trained).connections;
    assert!(n < topology_summary(&fresh).connections);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trained.bpk");
    trained.clone().save_file(&path).unwrap();
    assert!(
        fresh.clone().try_load_file(&path).is_err(),
        "Burn refuses other shapes"
    );

    let loaded = load_file(fresh, &path).unwrap();
    assert_eq!(topology_summary(&loaded).connections, n);
    let (a, b) = (
        snapshot_layers(&trained, true),
        snapshot_layers(&loaded, true),
    );
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(a.topology, b.topology, "{}", a.path);
    }
    let x = Tensor::<2>::random([5, 30], Distribution::Normal(0.0, 1.0), &device);
    assert_eq!(
        floats(trained.forward(x.clone())),
        floats(loaded.forward(x))
    );

    // and it trains: the loaded values get gradients of their (pruned) length
    let ad = device.clone().autodiff();
    let loaded = load_file(config(vec![20, 16]).init(&ad), &path).unwrap();
    let x = Tensor::<2>::random([5, 30], Distribution::Normal(0.0, 1.0), &ad);
    let grads = loaded.forward(x).sum().backward();
    let layer = loaded.hidden[0].linear.as_sparse().unwrap();
    let g = layer
        .values
        .val()
        .grad(&grads)
        .expect("a gradient for the loaded values");
    assert_eq!(g.dims(), [layer.nnz()]);
    assert_eq!(layer.nnz(), a[0].topology.nnz());

    match load_file(config(vec![16, 20]).init(&device), &path) {
        Err(e @ LoadError::LayerShape { .. }) => {
            assert!(e.to_string().contains("20"), "{e}");
        }
        other => panic!("expected a layer-shape error, got {:?}", other.map(|_| ())),
    }
    let missing = dir.path().join("missing.bpk");
    assert!(matches!(
        load_file(config(vec![20, 16]).init(&device), &missing),
        Err(LoadError::Read { .. })
    ));
}

/// A file whose connection indices are out of order loads as an error, not as a layer that
/// panics or silently duplicates connections later.
#[test]
fn a_file_with_unusable_indices_is_refused_on_load() {
    use burn_set::load::{LoadError, load_file};
    use burn_set::sparse_linear::SparseStructure;
    #[derive(Module, Debug)]
    struct Net {
        l: SparseSetLinear,
    }
    let device = dev();
    let config = SetLinearConfig::new(40, 25)
        .with_epsilon(3.0)
        .with_seed(Some(1));
    let mut bad = config.init_sparse(&device).unwrap();
    if let SparseStructure::Evolving(index) = &mut bad.structure {
        let rows = index.rows.val().flip([0]);
        let cols = index.cols.val().flip([0]);
        index.rows = Param::initialized(index.rows.id, rows);
        index.cols = Param::initialized(index.cols.id, cols);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.bpk");
    Net { l: bad }.save_file(&path).unwrap();
    let fresh = Net {
        l: config.init_sparse(&device).unwrap(),
    };
    match load_file(fresh, &path) {
        Err(e @ LoadError::Record(_)) => {
            assert!(e.to_string().contains("must be sorted"), "{e}")
        }
        other => panic!("expected an error, got {:?}", other.map(|_| ())),
    }
}
