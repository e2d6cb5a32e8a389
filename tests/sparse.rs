//! Truly sparse storage (`SparseSetLinear`) against the masked `SetLinear`.

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use burn_set::callback::SetCallback;
use burn_set::evolution::EvolutionConfig;
use burn_set::layers::{Storage, snapshot_layers};
use burn_set::set_linear::{SetLinear, SetLinearConfig, Sparsity};
use burn_set::sparse_backend::{has_native_kernel, sparse_linear};
use burn_set::sparse_linear::SparseSetLinear;

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

#[test]
fn evolution_matches_masked_for_the_same_seed() {
    let device = dev();
    let (masked, sparse) = twins(&device);
    // Two models whose first SET layer is the masked or the sparse twin.
    #[derive(Module, Debug)]
    struct M1 {
        l: SetLinear,
    }
    #[derive(Module, Debug)]
    struct M2 {
        l: SparseSetLinear,
    }
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
