// augment.wgsl — the input pipeline on the device: u8 images in, normalised (and augmented)
// f32 images out, so batches cross the bus as bytes (4× less than f32).
//
//   augment:  y[n,c,i,j] = lut[c·256 + byte(x[n,c, i + oy − pad, j' + ox − pad])]
//             j' = W − 1 − j when the sample is flipped, else j;  oy, ox ∈ [0, 2·pad]
//             Outside the image: byte 0 (zero padding, as torchvision pads before
//             normalising), or with REFLECT the mirror index without repeating the edge
//             (−1 → 1, W → W − 2; PyTorch/NumPy `reflect`).
//             Per sample s = sample[n] (its index in the dataset), the draws are a pure
//             function of (seed, epoch, s): r_k = rnd(seed, epoch, s, k);
//             oy = r_0 mod (2·pad + 1), ox = r_1 mod (2·pad + 1), flipped = FLIP and r_2 odd.
//             lut[c·256 + b] is the host's normalisation of byte b for channel c, so the
//             values are bit-identical to the CPU loader's.
//
// Shapes: x [N,C,H,W] bytes packed four to a u32 (little-endian, byte k of the tensor in
// word k/4), sample [N], lut [C·256], y [N,C,H,W].
// Dispatch: one invocation per output element, 64 per workgroup.
// Bindings: augment: 0 x (u32), 1 sample (u32), 2 lut, 3 y, 4 p

struct AugmentUniform {
    n: u32, c: u32, h: u32, w: u32,
    pad: u32, seed_lo: u32, seed_hi: u32, epoch: u32,
}

// Specialised per pipeline: reflect padding, random horizontal flip.
const REFLECT: u32 = 0u;
const FLIP: u32 = 0u;

@group(0) @binding(0) var<storage, read> a_x: array<u32>;
@group(0) @binding(1) var<storage, read> a_sample: array<u32>;
@group(0) @binding(2) var<storage, read> a_lut: array<f32>;
@group(0) @binding(3) var<storage, read_write> a_y: array<f32>;
@group(0) @binding(4) var<uniform> a_p: AugmentUniform;

// A 32-bit integer mixer (lowbias32: xor-shift, multiply, xor-shift, multiply, xor-shift).
fn mix32(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

// Draw k of sample s in this epoch (cpu::augment::draw).
fn rnd(s: u32, k: u32) -> u32 {
    let h = mix32(a_p.seed_lo ^ mix32(a_p.seed_hi ^ mix32(a_p.epoch ^ mix32(s))));
    return mix32(h ^ (k * 0x9e3779b9u));
}

// The source row/column of output position `o` shifted by `off − pad`, or −1 outside.
fn source(o: i32, off: i32, pad: i32, len: i32) -> i32 {
    var t = o + off - pad;
    if (REFLECT == 1u) {
        if (t < 0) { t = -t; }
        if (t >= len) { t = 2 * (len - 1) - t; }
    }
    return select(-1, t, t >= 0 && t < len);
}

@compute @workgroup_size(64)
fn augment(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let p = a_p;
    let id = flat_id(wid, nwg, li);
    if (id >= p.n * p.c * p.h * p.w) { return; }
    let j = id % p.w;
    let i = (id / p.w) % p.h;
    let c = (id / (p.w * p.h)) % p.c;
    let n = id / (p.w * p.h * p.c);
    let s = a_sample[n];
    let span = 2u * p.pad + 1u;
    let oy = i32(rnd(s, 0u) % span);
    let ox = i32(rnd(s, 1u) % span);
    var jj = j;
    if (FLIP == 1u && (rnd(s, 2u) & 1u) == 1u) { jj = p.w - 1u - j; }
    let si = source(i32(i), oy, i32(p.pad), i32(p.h));
    let sj = source(i32(jj), ox, i32(p.pad), i32(p.w));
    var b = 0u;
    if (si >= 0 && sj >= 0) {
        let k = ((n * p.c + c) * p.h + u32(si)) * p.w + u32(sj);
        b = (a_x[k / 4u] >> (8u * (k % 4u))) & 0xffu;
    }
    a_y[id] = a_lut[c * 256u + b];
}
