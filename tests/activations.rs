//! Feature maps (issue 14 item 1): `Executor::activations` reads intermediate activations
//! after one forward pass, each right after the step computing it. Checked against the
//! functional API layer by layer (conv + fused ReLU, max-pooling), against `predict` for the
//! output, on both executors, and for typed errors.

mod common;

use common::{assert_close, backends, values};
use wgcnn::exec::Executor;
use wgcnn::ndarray::{Array1, Array4};
use wgcnn::{nn, Activation, Backend, Conv2dParams, Error, Optimizer, Pool2dParams};

fn param(ex: &mut Executor, name: &str) -> (Vec<usize>, Vec<f32>) {
    let p = ex.parameters().unwrap();
    let (_, s, v) = p.into_iter().find(|t| t.0 == name).unwrap();
    (s, v)
}

#[test]
fn feature_maps_equal_the_layers_computed_one_by_one() {
    let n = 3;
    let images: Vec<f32> = values(5, n * 784).iter().map(|v| v.abs()).collect();
    let mut per_backend = Vec::new();
    for (name, be) in backends() {
        let mut ex = Executor::new(&be, &nn::lenet5().unwrap(), 4, Optimizer::sgd(0.1), 7).unwrap();
        let maps = ex
            .activations(&images, &["input", "c1", "s2", "f7"])
            .unwrap();
        let shapes: Vec<Vec<usize>> = maps.iter().map(|m| m.1.clone()).collect();
        assert_eq!(
            shapes,
            [
                vec![3, 1, 28, 28],
                vec![3, 6, 28, 28],
                vec![3, 6, 14, 14],
                vec![3, 10]
            ]
        );
        assert_eq!(maps[0].2, images, "{name}: the input");
        // c1 = relu(conv(x)) (the ReLU is fused into the conv's output), s2 its 2×2 max
        let cpu = Backend::cpu();
        let x = Array4::from_shape_vec((3, 1, 28, 28), images.clone()).unwrap();
        let (ws, wv) = param(&mut ex, "c1.weight");
        let w = Array4::from_shape_vec((ws[0], ws[1], ws[2], ws[3]), wv).unwrap();
        let b = Array1::from(param(&mut ex, "c1.bias").1);
        let c1 = cpu
            .conv2d(&x, &w, Some(&b), Conv2dParams::new(1, 2))
            .unwrap();
        let c1 = cpu.activation(Activation::Relu, &c1.into_dyn()).unwrap();
        let c1v: Vec<f32> = c1.iter().copied().collect();
        assert_close(&format!("{name} c1"), &maps[1].2, &c1v, 1e-5, 1e-5);
        let c1a = Array4::from_shape_vec((3, 6, 28, 28), maps[1].2.clone()).unwrap();
        let (s2, _) = cpu.max_pool2d(&c1a, Pool2dParams::new(2)).unwrap();
        assert_eq!(
            maps[2].2,
            s2.iter().copied().collect::<Vec<_>>(),
            "{name} s2"
        );
        // the output equals predict's
        let logits = ex.predict(&images).unwrap();
        assert_eq!(
            maps[3].2,
            logits.iter().copied().collect::<Vec<_>>(),
            "{name} f7"
        );
        per_backend.push(maps);
    }
    if let [c, g] = &per_backend[..] {
        for (mc, mg) in c.iter().zip(g) {
            assert_close(&format!("gpu vs cpu {}", mc.0), &mg.2, &mc.2, 1e-5, 1e-4);
        }
    }
}

#[test]
fn unknown_nodes_and_the_loss_are_typed_errors() {
    let mut ex = Executor::new(
        &Backend::cpu(),
        &nn::lenet5().unwrap(),
        2,
        Optimizer::sgd(0.1),
        0,
    )
    .unwrap();
    let x = vec![0.5; 784];
    let e = ex.activations(&x, &["nope"]).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { .. })
            && e.to_string().contains("no node named 'nope'"),
        "{e}"
    );
    let e = ex.activations(&x, &["loss"]).unwrap_err();
    assert!(e.to_string().contains("the loss"), "{e}");
    assert!(
        ex.activations(&x[..100], &["c1"]).is_err(),
        "a partial sample is refused"
    );
}
