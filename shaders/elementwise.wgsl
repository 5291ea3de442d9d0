// elementwise.wgsl — activations, their derivatives, the sum of two tensors, and the sum of
// a split reduction's partitions (sum_parts, at the end).
//
//   activation_forward:   y[i]  = f(x[i])
//   activation_backward:  dx[i] = dy[i] · f'(x[i])
//   add:                  c[i]  = a[i] + b[i]      (residual connections; summing gradients)
//
// f is the pipeline constant ACT (codes in common.wgsl; the host specialises it and it must
// equal the uniform's `act` — a branch on a uniform value makes lavapipe recompile the shader
// at every bind) with parameter `alpha` (LeakyReLU slope, ELU α).
// Dispatch: one invocation per element, 64 per workgroup, grid folded past 65,535 workgroups.
// The `_v4` twins take 4 consecutive elements per invocation (tensors bound as vec4 arrays,
// len/4 invocations; the host picks them when a sample's length is a multiple of 4, so every
// batch size runs the same pipeline): the same function per element, the same bits. A CPU
// adapter gathers a storage access lane by lane, and a vec4 costs about what a float does.
// Bindings:
//   activation_forward(_v4):   0 x, 1 y, 2 p
//   activation_backward(_v4):  0 x, 1 dy, 2 dx, 3 p
//   add(_v4):                  0 a, 1 b, 2 c, 3 p

struct EwUniform {
    len: u32, act: u32, alpha: f32, _pad: u32,
}

const ACT: u32 = 0u;   // activation code, specialised per pipeline

@group(0) @binding(0) var<storage, read> af_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> af_y: array<f32>;
@group(0) @binding(2) var<uniform> af_p: EwUniform;

@compute @workgroup_size(64)
fn activation_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) li: u32) {
    let i = flat_id(wid, nwg, li);
    if (i >= af_p.len) { return; }
    af_y[i] = act_fwd(af_x[i], ACT, af_p.alpha);
}

@group(0) @binding(0) var<storage, read> ab_x: array<f32>;
@group(0) @binding(1) var<storage, read> ab_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> ab_dx: array<f32>;
@group(0) @binding(3) var<uniform> ab_p: EwUniform;

@compute @workgroup_size(64)
fn activation_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) li: u32) {
    let i = flat_id(wid, nwg, li);
    if (i >= ab_p.len) { return; }
    ab_dx[i] = ab_dy[i] * act_grad_x(ab_x[i], ACT, ab_p.alpha);
}

@group(0) @binding(0) var<storage, read> ad_a: array<f32>;
@group(0) @binding(1) var<storage, read> ad_b: array<f32>;
@group(0) @binding(2) var<storage, read_write> ad_c: array<f32>;
@group(0) @binding(3) var<uniform> ad_p: EwUniform;

@compute @workgroup_size(64)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) li: u32) {
    let i = flat_id(wid, nwg, li);
    if (i >= ad_p.len) { return; }
    ad_c[i] = ad_a[i] + ad_b[i];
}

// ---- vec4 twins ----------------------------------------------------------------------------
@group(0) @binding(0) var<storage, read> af_x4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> af_y4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn activation_forward_v4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) li: u32) {
    let i = flat_id(wid, nwg, li);
    if (i >= af_p.len / 4u) { return; }
    let x = af_x4[i];
    let a = af_p.alpha;
    af_y4[i] = vec4<f32>(act_fwd(x.x, ACT, a), act_fwd(x.y, ACT, a), act_fwd(x.z, ACT, a),
                         act_fwd(x.w, ACT, a));
}

@group(0) @binding(0) var<storage, read> ab_x4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> ab_dy4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> ab_dx4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn activation_backward_v4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) li: u32) {
    let i = flat_id(wid, nwg, li);
    if (i >= ab_p.len / 4u) { return; }
    let x = ab_x4[i];
    let a = ab_p.alpha;
    ab_dx4[i] = ab_dy4[i] * vec4<f32>(act_grad_x(x.x, ACT, a), act_grad_x(x.y, ACT, a),
                                      act_grad_x(x.z, ACT, a), act_grad_x(x.w, ACT, a));
}

@group(0) @binding(0) var<storage, read> ad_a4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> ad_b4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> ad_c4: array<vec4<f32>>;

@compute @workgroup_size(64)
fn add_v4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let i = flat_id(wid, nwg, li);
    if (i >= ad_p.len / 4u) { return; }
    ad_c4[i] = ad_a4[i] + ad_b4[i];
}

// ---- dropout and rescaling ----------------------------------------------------------------
//
//   dropout_forward:   y[i]  = keep(i) ? x[i] · scale : 0,   scale = 1/(1−p) (computed on the host in f32)
//   dropout_backward:  dx[i] = keep(i) ? dy[i] · scale : 0   (the same mask, recomputed)
//     keep(i) = u(i) ≥ p,  u(i) = (h >> 8) / 2²⁴ ∈ [0, 1),
//     h = pcg(i ^ pcg(seed ^ pcg(step)))   — a counter-based hash (PCG-RXS-M-XS 32), so the
//     mask needs no stored state; `step` is read from the 1-element buffer `counter` (the
//     executor writes its training step there once per step, in the same upload as the
//     batch: one submit, no readback) and the CPU twin computes the same bits.
//   rescale:           y[i]  = x[i] · scale + offset          (Keras Rescaling; its backward is
//                      rescale with offset = 0: dx = dy · scale)
// Dispatch: one invocation per element, 64 per workgroup, grid folded past 65,535 workgroups.
// Bindings:
//   dropout_forward:   0 x, 1 counter (u32), 2 y, 3 p
//   dropout_backward:  0 dy, 1 counter (u32), 2 dx, 3 p
//   rescale:           0 x, 1 y, 2 p

struct DropoutUniform {
    len: u32, seed: u32, p: f32, scale: f32,
}

fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn dropout_keep(i: u32, seed: u32, step: u32, p: f32) -> bool {
    let h = pcg(i ^ pcg(seed ^ pcg(step)));
    let u = f32(h >> 8u) * (1.0 / 16777216.0);
    return u >= p;
}

@group(0) @binding(0) var<storage, read> df_x: array<f32>;
@group(0) @binding(1) var<storage, read> df_counter: array<u32>;
@group(0) @binding(2) var<storage, read_write> df_y: array<f32>;
@group(0) @binding(3) var<uniform> df_p: DropoutUniform;

@compute @workgroup_size(64)
fn dropout_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let i = flat_id(wid, nwg, li);
    if (i >= df_p.len) { return; }
    df_y[i] = select(0.0, df_x[i] * df_p.scale, dropout_keep(i, df_p.seed, df_counter[0], df_p.p));
}

@group(0) @binding(0) var<storage, read> db_dy: array<f32>;
@group(0) @binding(1) var<storage, read> db_counter: array<u32>;
@group(0) @binding(2) var<storage, read_write> db_dx: array<f32>;
@group(0) @binding(3) var<uniform> db_p: DropoutUniform;

@compute @workgroup_size(64)
fn dropout_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) li: u32) {
    let i = flat_id(wid, nwg, li);
    if (i >= db_p.len) { return; }
    db_dx[i] = select(0.0, db_dy[i] * db_p.scale, dropout_keep(i, db_p.seed, db_counter[0], db_p.p));
}

struct RescaleUniform {
    len: u32, scale: f32, offset: f32, _pad: u32,
}

@group(0) @binding(0) var<storage, read> rs_x: array<f32>;
@group(0) @binding(1) var<storage, read_write> rs_y: array<f32>;
@group(0) @binding(2) var<uniform> rs_p: RescaleUniform;

@compute @workgroup_size(64)
fn rescale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let i = flat_id(wid, nwg, li);
    if (i >= rs_p.len) { return; }
    rs_y[i] = rs_x[i] * rs_p.scale + rs_p.offset;
}

// ---- sum of partial reductions ---------------------------------------------------------------
//   sum_parts:  v[i] = Σ_{q=0}^{parts−1} parts[q·(LA+LB) + i], added in the order q = 0, 1, …
//               (so the same bits every run), then a[i] = v[i] for i < LA, b[i−LA] = v[i] after
//               (the second pass of a split reduction: conv.wgsl's SPLIT weight gradients).
// Shapes: parts [parts, LA + LB], a [LA], b [LB] (LB = 0: b unused).
// Dispatch: one invocation per element of a and b, 64 per workgroup, grid folded.
// Bindings: 0 parts, 1 a, 2 b, 3 p

struct PartsUniform {
    len_a: u32, len_b: u32, parts: u32, _pad: u32,
}

@group(0) @binding(0) var<storage, read> sp_parts: array<f32>;
@group(0) @binding(1) var<storage, read_write> sp_a: array<f32>;
@group(0) @binding(2) var<storage, read_write> sp_b: array<f32>;
@group(0) @binding(3) var<uniform> sp_p: PartsUniform;

@compute @workgroup_size(64)
fn sum_parts(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let i = flat_id(wid, nwg, li);
    let len = sp_p.len_a + sp_p.len_b;
    if (i >= len) { return; }
    var v = 0.0;
    for (var q = 0u; q < sp_p.parts; q++) { v += sp_parts[q * len + i]; }
    if (i < sp_p.len_a) { sp_a[i] = v; } else { sp_b[i - sp_p.len_a] = v; }
}
