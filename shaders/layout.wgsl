// layout.wgsl — axis permutation: channels-last samples to channels-first, and back.
//
//   permute:  y[i0,i1,i2,i3] = x[i0·s0 + i1·s1 + i2·s2 + i3·s3]
//             (d0..d3) are y's dims and s_k is the row-major stride in x of the axis that
//             becomes y's axis k: y = x.transpose(perm) with d_k = xd[perm[k]],
//             s_k = stride_x[perm[k]] (src/ops/layout.rs `Permute::uniform`).
//             Channels-last [N, S, C] → [N, C, S] is perm (0, 2, 1) (with a leading 1), and
//             its gradient the same transpose of [N, C, S].
//
// Shapes: x [xd0, xd1, xd2, xd3], y [d0, d1, d2, d3], both len = Π d elements.
// Dispatch: one invocation per output element, 64 per workgroup (a gather: every output is
// written once, no atomics); the grid is folded past 65,535 workgroups.
// Bindings:
//   permute:  0 x, 1 y, 2 p

struct PermuteUniform {
    d0: u32, d1: u32, d2: u32, d3: u32,
    s0: u32, s1: u32, s2: u32, s3: u32,
    len: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<storage, read> pm_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> pm_y: array<f32>;
@group(0) @binding(2) var<uniform> pm_p: PermuteUniform;

@compute @workgroup_size(64)
fn permute(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let p = pm_p;
    let id = flat_id(wid, nwg, li);
    if (id >= p.len) { return; }
    let i3 = id % p.d3;
    let r2 = id / p.d3;
    let i2 = r2 % p.d2;
    let r1 = r2 / p.d2;
    let i1 = r1 % p.d1;
    let i0 = r1 / p.d1;
    pm_y[id] = pm_x[i0 * p.s0 + i1 * p.s1 + i2 * p.s2 + i3 * p.s3];
}
