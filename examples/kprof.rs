// SCRATCH profiling harness (not to be committed): times each kernel of a LeNet step.
use std::time::Instant;

struct Case {
    label: String,
    family: &'static str,
    entry: String,
    bufs: Vec<(usize, u32)>, // (len, kind: 0 rand, k>0 ints mod k)
    inputs: usize,
    uni: Vec<u32>,
    groups: [u32; 3],
}

fn rnd(seed: u64, len: usize, kind: u32) -> Vec<u32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            if kind == 0 {
                (((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0).to_bits()
            } else {
                ((s >> 33) % kind as u64) as u32
            }
        })
        .collect()
}

fn g64(n: usize) -> [u32; 3] {
    [n.div_ceil(64) as u32, 1, 1]
}

#[allow(clippy::too_many_arguments)]
fn conv(
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    o: u32,
    k: u32,
    pad: u32,
    act: u32,
) -> (Vec<u32>, [usize; 4]) {
    let oh = h + 2 * pad - k + 1;
    let ow = w + 2 * pad - k + 1;
    (
        vec![n, c, h, w, o, k, k, 1, 1, pad, pad, oh, ow, 1, act, 0],
        [n as usize, o as usize, oh as usize, ow as usize],
    )
}

fn cpu_ns() -> u64 {
    let mut t = 0;
    for e in std::fs::read_dir("/proc/self/task").unwrap() {
        let p = e.unwrap().path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(p) {
            t += s.split_whitespace().next().unwrap().parse::<u64>().unwrap();
        }
    }
    t
}

fn rs(suf: &str) -> (usize, usize) {
    let v = std::env::var(format!("RS{suf}")).unwrap_or("8,4".into());
    let mut it = v.split(',').map(|x| x.parse::<usize>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

fn main() {
    let dir = std::env::var("KPROF_DIR").unwrap_or("shaders".into());
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let only = std::env::var("ONLY").ok();
    let n: u32 = std::env::var("BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let nu = n as usize;
    let common = std::fs::read_to_string(format!("{dir}/common.wgsl")).unwrap();
    let mut cases: Vec<Case> = Vec::new();
    let extra: Vec<String> = std::env::var("VARIANTS")
        .map(|v| v.split(',').map(String::from).collect())
        .unwrap_or_default();
    let suffixes: Vec<String> = std::iter::once(String::new()).chain(extra).collect();
    for suf in &suffixes {
        // conv forward
        for (lbl, c, h, o, pad) in [("c1", 1u32, 28u32, 6u32, 2u32), ("c3", 6, 14, 16, 0)] {
            let (u, yd) = conv(n, c, h, h, o, 5, pad, 1);
            let xl = (n * c * h * h) as usize;
            let wl = (o * c * 25) as usize;
            let yl: usize = yd.iter().product();
            cases.push(Case {
                label: format!("{lbl} fwd{suf}"),
                family: "conv2d",
                entry: format!("conv2d_forward{suf}"),
                bufs: vec![(xl, 0), (wl, 0), (o as usize, 0), (yl, 0)],
                inputs: 3,
                uni: u.clone(),
                groups: if suf.is_empty() {
                    g64(yl)
                } else {
                    let (r, s) = rs(suf);
                    [
                        ((yd[0] * yd[2] * yd[3]).div_ceil(64 * s) * (o as usize).div_ceil(r))
                            as u32,
                        1,
                        1,
                    ]
                },
            });
            if lbl == "c3" {
                cases.push(Case {
                    label: format!("{lbl} bwd_in{suf}"),
                    family: "conv2d",
                    entry: format!("conv2d_backward_input{suf}"),
                    bufs: vec![(yl, 0), (wl, 0), (yl, 0), (xl, 0)],
                    inputs: 3,
                    uni: u.clone(),
                    groups: g64(xl),
                });
            }
            cases.push(Case {
                label: format!("{lbl} bwd_w{suf}"),
                family: "conv2d",
                entry: format!("conv2d_backward_weight{suf}"),
                bufs: vec![(xl, 0), (yl, 0), (yl, 0), (wl, 0), (o as usize, 0)],
                inputs: 3,
                uni: u.clone(),
                groups: [(wl + o as usize) as u32, 1, 1],
            });
        }
        // gemms: (label, m, n, k, sam, sak, sbk, sbn, bias, act_out, act_in, ones)
        let gm = |label: &str,
                  m: u32,
                  nn: u32,
                  k: u32,
                  s: [u32; 4],
                  bias: u32,
                  ao: u32,
                  ai: u32,
                  ones: u32| Case {
            label: format!("{label}{suf}"),
            family: "matmul",
            entry: format!("gemm{suf}"),
            bufs: vec![
                ((m * k) as usize, 0),
                ((k * nn) as usize, 0),
                (nn as usize, 0),
                ((m * k) as usize, 0),
                ((m * nn) as usize, 0),
                (m as usize, 0),
            ],
            inputs: 4,
            uni: vec![
                m, nn, k, s[0], s[1], s[2], s[3], bias, ao, ai, ones, 0, 0, 0, 0, 0,
            ],
            groups: [((nn + ones).div_ceil(32) * m.div_ceil(32)), 1, 1],
        };
        for (l, i, o) in [("f5", 400u32, 120u32), ("f6", 120, 84), ("f7", 84, 10)] {
            cases.push(gm(&format!("{l} fwd"), n, o, i, [i, 1, 1, i], 1, 1, 0, 0));
            cases.push(gm(
                &format!("{l} bwd_in"),
                n,
                i,
                o,
                [o, 1, i, 1],
                0,
                0,
                1,
                0,
            ));
            cases.push(gm(&format!("{l} bwd_w"), o, i, n, [1, o, i, 1], 0, 0, 1, 1));
        }
        for sz in [256u32, 512] {
            cases.push(gm(
                &format!("mm{sz}"),
                sz,
                sz,
                sz,
                [sz, 1, sz, 1],
                0,
                0,
                0,
                0,
            ));
        }
    }
    // pools
    for (l, c, h) in [("p2", 6u32, 28u32), ("p4", 16, 10)] {
        let oh = h / 2;
        let u = vec![n, c, h, h, 2, 2, 2, 2, 0, 0, oh, oh, 0, 0, 0, 0];
        let xl = (n * c * h * h) as usize;
        let yl = (n * c * oh * oh) as usize;
        cases.push(Case {
            label: format!("{l} fwd"),
            family: "pool",
            entry: "max_pool2d_forward".into(),
            bufs: vec![(xl, 0), (yl, 0), (yl, 0)],
            inputs: 1,
            uni: u.clone(),
            groups: g64(yl),
        });
        cases.push(Case {
            label: format!("{l} bwd"),
            family: "pool",
            entry: "max_pool2d_backward".into(),
            bufs: vec![(yl, 0), (yl, 4), (xl, 0)],
            inputs: 2,
            uni: u,
            groups: g64(xl),
        });
    }
    cases.push(Case {
        label: "ce".into(),
        family: "loss",
        entry: "cross_entropy".into(),
        bufs: vec![(nu * 10, 0), (nu, 10), (nu * 10, 0), (4, 0)],
        inputs: 2,
        uni: vec![n, 10, 1, 1, (1.0f32 / n as f32).to_bits(), 0, 0, 0],
        groups: [1, 1, 1],
    });
    let flat = 61706usize + 1000;
    cases.push(Case {
        label: "optim".into(),
        family: "optim",
        entry: "optimizer_step".into(),
        bufs: vec![(flat, 0), (flat, 0), (flat, 0), (flat, 0)],
        inputs: 1,
        uni: vec![0, flat as u32, 0.01f32.to_bits(), 0, 0, 0, 0, 0, 0, 0, 0, 0],
        groups: g64(flat),
    });

    let inst = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(inst.request_adapter(&Default::default())).unwrap();
    println!("adapter: {:?}", adapter.get_info().name);
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .unwrap();
    let mut modules = std::collections::HashMap::new();
    let mut total = 0.0;
    let mut totc = 0.0;
    for c in &cases {
        if let Some(o) = &only {
            if !o.split(',').any(|s| c.label.contains(s)) {
                continue;
            }
        }
        let srcf = std::fs::read_to_string(format!("{dir}/{}.wgsl", c.family)).unwrap();
        if !srcf.contains(&format!("fn {}(", c.entry)) {
            continue;
        }
        let module = modules.entry(c.family).or_insert_with(|| {
            let mut src = std::fs::read_to_string(format!("{dir}/{}.wgsl", c.family)).unwrap();
            if let Ok(sub) = std::env::var("SUBST") {
                for kv in sub.split(',') {
                    let (k, v) = kv.split_once('=').unwrap();
                    let pat = format!("const {k}: u32 = ");
                    if let Some(at) = src.find(&pat) {
                        let end = at + src[at..].find(';').unwrap();
                        src.replace_range(at..end, &format!("const {k}: u32 = {v}u"));
                    }
                }
            }
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: None,
                source: wgpu::ShaderSource::Wgsl(format!("{common}\n{src}").into()),
            })
        });
        let t0 = Instant::now();
        let pipe = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: None,
            module,
            entry_point: Some(&c.entry),
            compilation_options: Default::default(),
            cache: None,
        });
        let tcomp = t0.elapsed().as_secs_f64();
        use wgpu::util::DeviceExt;
        let bufs: Vec<wgpu::Buffer> = c
            .bufs
            .iter()
            .enumerate()
            .map(|(i, &(len, kind))| {
                device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: None,
                    contents: bytemuck::cast_slice(&rnd(i as u64 + 1, len.max(1), kind)),
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                })
            })
            .collect();
        let ub = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(&c.uni),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let layout = pipe.get_bind_group_layout(0);
        // Only bind what the auto layout has: try all, skipping unused bindings is not
        // possible, so bind all (auto layout includes only used ones) -> use entries present.
        let mut entries = Vec::new();
        for (i, b) in bufs.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            });
        }
        entries.push(wgpu::BindGroupEntry {
            binding: bufs.len() as u32,
            resource: ub.as_entire_binding(),
        });
        let _ = c.inputs;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &entries,
        });
        let run = |reps: usize| {
            let mut enc = device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&pipe);
                pass.set_bind_group(0, &bg, &[]);
                for _ in 0..reps {
                    pass.dispatch_workgroups(c.groups[0], c.groups[1], c.groups[2]);
                }
            }
            queue.submit(Some(enc.finish()));
            device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
        };
        run(1);
        if let Some(e) = pollster::block_on(scope.pop()) {
            println!("{}: ERROR {e}", c.label);
            continue;
        }
        let trials: usize = std::env::var("TRIALS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        let mut dt = f64::MAX;
        let mut dc = f64::MAX;
        for _ in 0..trials {
            let c0 = cpu_ns();
            let t = Instant::now();
            run(reps);
            dt = dt.min(t.elapsed().as_secs_f64() / reps as f64);
            dc = dc.min((cpu_ns() - c0) as f64 * 1e-9 / reps as f64);
        }
        total += dt;
        totc += dc;
        println!(
            "{:<22} {:>9.3} ms  cpu {:>9.3} ms  (compile {:.0} ms)",
            c.label,
            dt * 1e3,
            dc * 1e3,
            tcomp * 1e3
        );
    }
    println!("total {:.3} ms  cpu {:.3} ms", total * 1e3, totc * 1e3);
}
