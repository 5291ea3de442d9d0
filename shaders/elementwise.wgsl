// elementwise.wgsl — activations, their derivatives, and the sum of two tensors.
//
//   activation_forward:   y[i]  = f(x[i])
//   activation_backward:  dx[i] = dy[i] · f'(x[i])
//   add:                  c[i]  = a[i] + b[i]      (residual connections; summing gradients)
//
// f is picked by `act` (codes in common.wgsl) with parameter `alpha` (LeakyReLU slope, ELU α).
// Dispatch: one invocation per element, 64 per workgroup, grid folded past 65,535 workgroups.
// Bindings:
//   activation_forward:   0 x, 1 y, 2 p
//   activation_backward:  0 x, 1 dy, 2 dx, 3 p
//   add:                  0 a, 1 b, 2 c, 3 p

struct EwParams {
    len: u32, act: u32, alpha: f32, _pad: u32,
}

@group(0) @binding(0) var<storage, read> af_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> af_y: array<f32>;
@group(0) @binding(2) var<uniform> af_p: EwParams;

@compute @workgroup_size(64)
fn activation_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) li: u32) {
    let i = flat_id(wid, nwg, li);
    if (i >= af_p.len) { return; }
    af_y[i] = act_fwd(af_x[i], af_p.act, af_p.alpha);
}

@group(0) @binding(0) var<storage, read> ab_x: array<f32>;
@group(0) @binding(1) var<storage, read> ab_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> ab_dx: array<f32>;
@group(0) @binding(3) var<uniform> ab_p: EwParams;

@compute @workgroup_size(64)
fn activation_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) li: u32) {
    let i = flat_id(wid, nwg, li);
    if (i >= ab_p.len) { return; }
    ab_dx[i] = ab_dy[i] * act_grad_x(ab_x[i], ab_p.act, ab_p.alpha);
}

@group(0) @binding(0) var<storage, read> ad_a: array<f32>;
@group(0) @binding(1) var<storage, read> ad_b: array<f32>;
@group(0) @binding(2) var<storage, read_write> ad_c: array<f32>;
@group(0) @binding(3) var<uniform> ad_p: EwParams;

@compute @workgroup_size(64)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) li: u32) {
    let i = flat_id(wid, nwg, li);
    if (i >= ad_p.len) { return; }
    ad_c[i] = ad_a[i] + ad_b[i];
}
