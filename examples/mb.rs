#![allow(deprecated)]
use burn::tensor::module::linear;
use burn::tensor::{Bool, Device, Distribution, Tensor};
use std::time::Instant;
fn main() {
    let device = Device::ndarray().autodiff();
    let w =
        Tensor::<2>::random([1000, 1000], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let m: Tensor<2, Bool> = Tensor::<2>::random(
        [1000, 1000],
        Distribution::Uniform(0.0, 1.0),
        &device.clone().inner(),
    )
    .lower_elem(0.04);
    let m = Tensor::<2, Bool>::from_data(m.into_data(), &device);
    let inv = m.clone().bool_not();
    let mf = m.clone().float();
    let x = Tensor::<2>::random([128, 1000], Distribution::Normal(0.0, 1.0), &device);
    let variants: Vec<(&str, Box<dyn Fn() -> Tensor<2>>)> = vec![
        ("raw", Box::new(|| linear(x.clone(), w.clone(), None))),
        (
            "notfill",
            Box::new(|| {
                linear(
                    x.clone(),
                    w.clone().mask_fill(m.clone().bool_not(), 0.0),
                    None,
                )
            }),
        ),
        (
            "invfill",
            Box::new(|| linear(x.clone(), w.clone().mask_fill(inv.clone(), 0.0), None)),
        ),
        (
            "mulf",
            Box::new(|| linear(x.clone(), w.clone() * mf.clone(), None)),
        ),
        (
            "mulconv",
            Box::new(|| linear(x.clone(), w.clone() * m.clone().float(), None)),
        ),
        (
            "where",
            Box::new(|| {
                linear(
                    x.clone(),
                    w.clone().zeros_like().mask_where(m.clone(), w.clone()),
                    None,
                )
            }),
        ),
    ];
    for round in 0..2 {
        for (name, f) in &variants {
            let mut ts = vec![];
            for _ in 0..25 {
                let t0 = Instant::now();
                let g = f().sum().backward();
                drop(g);
                ts.push(t0.elapsed().as_secs_f64());
            }
            ts.sort_by(f64::total_cmp);
            if round == 1 {
                println!("{name}: {:.3} ms", ts[12] * 1e3);
            }
        }
    }
}
