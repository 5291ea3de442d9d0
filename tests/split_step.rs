//! The split training step data-parallel training is built on: `forward_backward`, the flat
//! gradient buffer read back and written again, then `apply_update`, is bitwise one
//! `train_step`, on both backends (LeNet-5 with momentum; a batch-norm + dropout model with
//! Adam and gradient clipping).

mod common;

use wgcnn::exec::{Executor, Targets};
use wgcnn::nn::{self, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, Relu, Sequential};
use wgcnn::plan::Mode;
use wgcnn::{Backend, Graph, Optimizer};

fn bn_dropout() -> Graph {
    Sequential::new(&[1, 8, 8])
        .add("conv", Conv2d::new(1, 4, 3))
        .add("bn", BatchNorm2d::new(4))
        .add("relu", Relu)
        .add("flat", Flatten)
        .add("drop", Dropout::new(0.3))
        .add("fc", Linear::new(4 * 6 * 6, 5))
        .cross_entropy()
        .expect("valid graph")
}

/// Trains `steps` steps with `train_step` and with the split step, comparing parameters,
/// optimizer state, buffers and metrics bitwise.
fn split_equals_whole(name: &str, backend: &Backend, g: &Graph, opt: Optimizer, per: usize) {
    let (n, steps) = (6, 4);
    let mut whole = Executor::new(backend, g, n, opt, 7).expect("executor");
    let mut split = Executor::new(backend, g, n, opt, 7).expect("executor");
    for s in 0..steps {
        let x = common::rand01(100 + s, n * per);
        let y = common::labels(200 + s, n, 5);
        whole
            .train_step(&x, Targets::Classes(&y))
            .expect("train_step");
        split
            .forward_backward(&x, Targets::Classes(&y))
            .expect("fwd/bwd");
        let grads = split.read_flat_gradients().expect("read");
        assert_eq!(grads.len(), split.flat_len());
        split.write_flat_gradients(&grads).expect("write");
        split.apply_update().expect("update");
    }
    assert_eq!(whole.step_count(), split.step_count(), "{name}: steps");
    let pairs = [
        (whole.parameters().unwrap(), split.parameters().unwrap()),
        (
            whole.optimizer_state().unwrap(),
            split.optimizer_state().unwrap(),
        ),
        (whole.buffers().unwrap(), split.buffers().unwrap()),
        (whole.gradients().unwrap(), split.gradients().unwrap()),
    ];
    for (a, b) in pairs {
        for ((na, _, va), (_, _, vb)) in a.iter().zip(&b) {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(va), bits(vb), "{name}: {na} differs");
        }
    }
    let (mw, ms) = (
        whole.take_metrics(Mode::Train),
        split.take_metrics(Mode::Train),
    );
    assert_eq!(mw.unwrap(), ms.unwrap(), "{name}: metrics");
}

#[test]
fn split_step_is_bitwise_train_step() {
    for (dev, b) in common::backends() {
        let lenet = nn::lenet5().expect("lenet5");
        let momentum = Optimizer::momentum(0.05, 0.9).weight_decay(5e-4);
        split_equals_whole(&format!("{dev} lenet5"), &b, &lenet, momentum, 784);
        let adam = Optimizer::adam(1e-3).clip_grad_norm(0.5);
        split_equals_whole(&format!("{dev} bn+dropout"), &b, &bn_dropout(), adam, 64);
    }
}

#[test]
fn split_step_misuse_is_an_error() {
    let g = nn::lenet5().expect("lenet5");
    let mut ex = Executor::new(&Backend::cpu(), &g, 2, Optimizer::sgd(0.1), 0).unwrap();
    let e = ex.apply_update().unwrap_err().to_string();
    assert!(e.contains("no forward_backward"), "{e}");
    let e = ex.write_flat_gradients(&[0.0; 3]).unwrap_err().to_string();
    assert!(
        e.contains("3 values") && e.contains(&ex.flat_len().to_string()),
        "{e}"
    );
    let x = vec![0.5; 2 * 784];
    ex.forward_backward(&x, Targets::Classes(&[1, 2])).unwrap();
    let e = ex
        .train_step(&x, Targets::Classes(&[1, 2]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("awaits its apply_update"), "{e}");
    ex.apply_update().unwrap();
    ex.train_step(&x, Targets::Classes(&[1, 2])).unwrap();
    assert_eq!(ex.step_count(), 2);
}
