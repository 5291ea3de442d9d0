//! Portability of the WGSL kernels, checked statically with naga (no GPU needed).
//!
//! Every shader family (with the common prelude, exactly as the device compiles it) must
//! parse, validate with no optional capability (plain WebGPU), and translate to every
//! language a wgpu backend feeds its driver: SPIR-V (Vulkan), MSL (Metal), HLSL (DX12)
//! and GLSL (GL / GLES). The back-end options mirror what wgpu-hal passes: explicit
//! binding maps built from the pipeline layout of `src/gpu/kernels.rs` (inputs, outputs,
//! then the uniform) and no fake bindings, so a resource the layout does not provide is
//! an error here as it would be on that backend.
//!
//! The table `wgcnn::gpu::KERNELS` is also checked against the WGSL: each kernel is a
//! compute entry point of its family with `@workgroup_size(64)`, binding exactly
//! `inputs + outputs + 1` resources in group 0, read-only storage first, then
//! read-write storage, then one uniform.
//!
//! The families that need an optional device feature (`feature_shader_sources`: f16,
//! cooperative matrices) are validated with exactly the capabilities that feature grants —
//! and must fail without them, or the gate would be a fiction — and translated to SPIR-V (fed
//! to `spirv-val`) and MSL, the languages of the backends that offer the features.

mod common;

use std::collections::BTreeMap;

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use naga::{AddressSpace, Module, ResourceBinding, ShaderStage, StorageAccess};
use wgcnn::gpu::kernels::KernelSpec;
use wgcnn::gpu::{feature_shader_sources, shader_sources, subgroup_shader_sources, KERNELS};

/// With `WGCNN_NAGA_DUMP=<dir>`, every translation is also written there for inspection.
fn dump(file: &str, text: &[u8]) {
    if let Some(dir) = std::env::var_os("WGCNN_NAGA_DUMP") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("create WGCNN_NAGA_DUMP");
        std::fs::write(dir.join(file), text).expect("write WGCNN_NAGA_DUMP file");
    }
}

/// A parsed and validated family.
struct Family {
    name: &'static str,
    module: Module,
    info: ModuleInfo,
}

fn families() -> Vec<Family> {
    let sources = shader_sources();
    assert!(!sources.is_empty(), "shader_sources() is empty");
    sources
        .into_iter()
        .map(|(name, src)| parse_and_validate(name, &src, Capabilities::empty()))
        .collect()
}

/// The naga capabilities a device feature grants (what wgpu-core's validator gets).
fn capabilities_of(feature: &str) -> Capabilities {
    match feature {
        "shader-f16" => Capabilities::SHADER_FLOAT16,
        "wgpu-cooperative-matrix" => {
            Capabilities::SHADER_FLOAT16 | Capabilities::COOPERATIVE_MATRIX
        }
        other => panic!("unknown device feature {other}"),
    }
}

/// The feature-gated families, validated with their feature's capabilities.
fn feature_families() -> Vec<(Family, &'static str)> {
    let sources = feature_shader_sources();
    assert!(!sources.is_empty(), "feature_shader_sources() is empty");
    sources
        .into_iter()
        .map(|(name, src, feature)| {
            (
                parse_and_validate(name, &src, capabilities_of(feature)),
                feature,
            )
        })
        .collect()
}

/// The workgroup size the host dispatches `k` with: 64, except the cooperative-matrix
/// kernel (one subgroup; the WGSL default of its `SG` is 32, specialised per adapter).
fn workgroup_of(k: &KernelSpec) -> u32 {
    if k.name == "gemm_coop" {
        32
    } else {
        64
    }
}

fn parse_and_validate(name: &'static str, src: &str, caps: Capabilities) -> Family {
    let module = naga::front::wgsl::parse_str(src).unwrap_or_else(|e| {
        panic!(
            "{name}.wgsl does not parse:\n{}",
            e.emit_to_string_with_path(src, &format!("{name}.wgsl"))
        )
    });
    // The portable families get no optional capability: they must run on any WebGPU adapter.
    let info = Validator::new(ValidationFlags::default(), caps)
        .validate(&module)
        .unwrap_or_else(|e| {
            panic!(
                "{name}.wgsl does not validate with {caps:?}:\n{}",
                e.emit_to_string_with_path(src, &format!("{name}.wgsl"))
            )
        });
    Family { name, module, info }
}

/// The kernels of a family, from `KERNELS`.
fn kernels_of(family: &str) -> Vec<KernelSpec> {
    let v: Vec<KernelSpec> = KERNELS
        .iter()
        .filter(|k| k.family == family)
        .copied()
        .collect();
    assert!(!v.is_empty(), "family {family} has no kernel in KERNELS");
    v
}

fn entry_index(f: &Family, name: &str) -> usize {
    f.module
        .entry_points
        .iter()
        .position(|ep| ep.name == name)
        .unwrap_or_else(|| panic!("{}.wgsl has no entry point `{name}`", f.name))
}

/// The resource kind a binding of the host-side layout has (see `KernelCache::kernel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    ReadOnly,
    ReadWrite,
    Uniform,
}

/// The bind group layout `src/gpu/kernels.rs` creates for a kernel, binding by binding.
fn host_layout(k: &KernelSpec) -> Vec<Slot> {
    let mut v = vec![Slot::ReadOnly; k.inputs as usize];
    v.extend(std::iter::repeat_n(Slot::ReadWrite, k.outputs as usize));
    v.push(Slot::Uniform);
    v
}

/// The resources entry point `ep` statically uses: `(group, binding) → kind`, failing on
/// a global the kernel does not bind at all or on two used globals sharing a binding.
fn used_resources(f: &Family, ep: usize) -> BTreeMap<(u32, u32), Slot> {
    let uses = f.info.get_entry_point(ep);
    let ep_name = &f.module.entry_points[ep].name;
    let mut out = BTreeMap::new();
    for (h, var) in f.module.global_variables.iter() {
        if uses[h].is_empty() {
            continue;
        }
        let var_name = var.name.as_deref().unwrap_or("?");
        let kind = match var.space {
            AddressSpace::Storage { access } if access.contains(StorageAccess::STORE) => {
                Slot::ReadWrite
            }
            AddressSpace::Storage { .. } => Slot::ReadOnly,
            AddressSpace::Uniform => Slot::Uniform,
            // workgroup memory and private globals are not bound
            _ => continue,
        };
        let b = var
            .binding
            .as_ref()
            .unwrap_or_else(|| panic!("{ep_name}: resource {var_name} has no binding"));
        let prev = out.insert((b.group, b.binding), kind);
        assert!(
            prev.is_none(),
            "{ep_name}: two used globals at @group({}) @binding({}) (one is {var_name})",
            b.group,
            b.binding
        );
    }
    out
}

#[test]
fn every_family_parses_and_validates() {
    let fams = families();
    let mut names: Vec<&str> = fams.iter().map(|f| f.name).collect();
    names.sort_unstable();
    let gated: Vec<&str> = feature_shader_sources().iter().map(|f| f.0).collect();
    let mut want: Vec<&str> = KERNELS
        .iter()
        .map(|k| k.family)
        .filter(|f| !gated.contains(f))
        .collect();
    want.sort_unstable();
    want.dedup();
    assert_eq!(names, want, "families in shader_sources() vs KERNELS");
    for f in &fams {
        assert!(
            !f.module.entry_points.is_empty(),
            "{}.wgsl has no entry point",
            f.name
        );
        // every entry point of the file is a kernel of the table (no dead kernels)
        for ep in &f.module.entry_points {
            assert!(
                KERNELS
                    .iter()
                    .any(|k| k.name == ep.name && k.family == f.name),
                "{}.wgsl: entry point {} is not in KERNELS",
                f.name,
                ep.name
            );
        }
    }
}

/// Every way the kernel `k` disagrees with its entry point in `f` (empty when they agree).
fn table_errors(f: &Family, k: &KernelSpec) -> Vec<String> {
    let mut errs = Vec::new();
    let Some(i) = f
        .module
        .entry_points
        .iter()
        .position(|ep| ep.name == k.name)
    else {
        return vec![format!(
            "{}: no entry point of that name in {}.wgsl",
            k.name, f.name
        )];
    };
    let ep = &f.module.entry_points[i];
    if ep.stage != ShaderStage::Compute {
        errs.push(format!(
            "{}: {:?} entry point, not compute",
            k.name, ep.stage
        ));
    }
    let wg = workgroup_of(k);
    if ep.workgroup_size != [wg, 1, 1] {
        errs.push(format!(
            "{}: @workgroup_size{:?}, the host dispatches {wg} invocations per workgroup",
            k.name, ep.workgroup_size
        ));
    }
    let used = used_resources(f, i);
    let layout = host_layout(k);
    if used.len() != layout.len() {
        errs.push(format!(
            "{}: the WGSL uses {} resources {used:?}, KERNELS says {} inputs + {} outputs + 1 uniform",
            k.name,
            used.len(),
            k.inputs,
            k.outputs
        ));
    }
    for (b, want) in layout.iter().enumerate() {
        let got = used.get(&(0, b as u32));
        if got != Some(want) {
            errs.push(format!(
                "{}: @group(0) @binding({b}) is {got:?} in the WGSL, the host layout binds {want:?}",
                k.name
            ));
        }
    }
    errs
}

#[test]
fn kernel_table_matches_the_wgsl() {
    let mut fams = families();
    fams.extend(feature_families().into_iter().map(|(f, _)| f));
    let mut errs = Vec::new();
    for k in KERNELS {
        match fams.iter().find(|f| f.name == k.family) {
            Some(f) => errs.extend(table_errors(f, k)),
            None => errs.push(format!("{}: unknown family {}", k.name, k.family)),
        }
    }
    assert!(errs.is_empty(), "KERNELS vs WGSL:\n{}", errs.join("\n"));
}

/// The check above on a module with known mistakes: it must report each of them.
#[test]
fn kernel_table_check_catches_mismatches() {
    let src = r#"
        struct P { n: u32 }
        @group(0) @binding(0) var<storage, read> a_x: array<f32>;
        @group(0) @binding(1) var<storage, read_write> a_y: array<f32>;
        @group(0) @binding(2) var<uniform> a_p: P;
        @compute @workgroup_size(64)
        fn good(@builtin(global_invocation_id) id: vec3<u32>) {
            if (id.x < a_p.n) { a_y[id.x] = a_x[id.x]; }
        }
        @compute @workgroup_size(32)
        fn narrow(@builtin(global_invocation_id) id: vec3<u32>) {
            if (id.x < a_p.n) { a_y[id.x] = a_x[id.x]; }
        }
        @group(0) @binding(0) var<storage, read> b_x: array<f32>;
        @group(0) @binding(1) var<storage, read> b_z: array<f32>;
        @group(0) @binding(2) var<storage, read_write> b_y: array<f32>;
        @group(0) @binding(3) var<uniform> b_p: P;
        @compute @workgroup_size(64)
        fn two_inputs(@builtin(global_invocation_id) id: vec3<u32>) {
            if (id.x < b_p.n) { b_y[id.x] = b_x[id.x] + b_z[id.x]; }
        }
    "#;
    let module = naga::front::wgsl::parse_str(src).expect("test module parses");
    let info = Validator::new(ValidationFlags::default(), Capabilities::empty())
        .validate(&module)
        .expect("test module validates");
    let f = Family {
        name: "test",
        module,
        info,
    };
    let spec = |name, inputs, outputs| KernelSpec {
        name,
        family: "test",
        inputs,
        outputs,
    };
    assert_eq!(table_errors(&f, &spec("good", 1, 1)), Vec::<String>::new());
    assert_eq!(
        table_errors(&f, &spec("two_inputs", 2, 1)),
        Vec::<String>::new()
    );
    // wrong workgroup size
    assert_eq!(table_errors(&f, &spec("narrow", 1, 1)).len(), 1);
    // no such entry point
    assert_eq!(table_errors(&f, &spec("missing", 1, 1)).len(), 1);
    // the table claims one input too few: counts differ, and bindings 1 and 2 have the
    // wrong kind (and 3 is missing from the host's view)
    let e = table_errors(&f, &spec("two_inputs", 1, 1));
    assert!(e.iter().any(|m| m.contains("uses 4 resources")), "{e:?}");
    assert!(e.iter().any(|m| m.contains("@binding(1)")), "{e:?}");
    // one output too many
    let e = table_errors(&f, &spec("good", 1, 2));
    assert!(e.iter().any(|m| m.contains("uses 3 resources")), "{e:?}");
    assert!(e.iter().any(|m| m.contains("@binding(2)")), "{e:?}");
}

/// The used resources of `ep` resolved against the kernel's host layout (bindings that the
/// layout has, with the right kind), as the backends' binding maps are built from it.
fn layout_of(f: &Family, ep: usize) -> Vec<((u32, u32), Slot)> {
    let name = &f.module.entry_points[ep].name;
    let k = KERNELS
        .iter()
        .find(|k| k.name == name.as_str())
        .unwrap_or_else(|| panic!("{name} is not in KERNELS"));
    host_layout(k)
        .into_iter()
        .enumerate()
        .map(|(b, s)| ((0, b as u32), s))
        .collect()
}

fn rb(group: u32, binding: u32) -> ResourceBinding {
    ResourceBinding { group, binding }
}

/// The SPIR-V words as the bytes of its literal strings, to look for the entry point name.
fn spv_bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn spv_names(words: &[u32], name: &str) -> bool {
    let mut pat = name.as_bytes().to_vec();
    pat.push(0);
    spv_bytes(words).windows(pat.len()).any(|w| w == pat)
}

fn check_spirv(f: &Family, words: &[u32], names: &[String], what: &str) {
    assert!(words.len() > 5, "{what}: empty SPIR-V");
    assert_eq!(words[0], 0x0723_0203, "{what}: SPIR-V magic number");
    for n in names {
        assert!(
            spv_names(words, n),
            "{what}: no OpEntryPoint named {n} ({})",
            f.name
        );
    }
}

/// SPIR-V options as wgpu-hal/vulkan builds them for one pipeline: real bindings only,
/// from the kernel's layout (descriptor set 0, bindings numbered in layout order).
fn spv_options(f: &Family, ep: Option<usize>) -> spv::Options<'static> {
    let Some(ep) = ep else {
        // the whole module has no single layout: keep the WGSL bindings as they are
        return spv::Options {
            lang_version: (1, 0),
            ..spv::Options::default()
        };
    };
    let binding_map = layout_of(f, ep)
        .into_iter()
        .map(|((g, b), _)| {
            (
                rb(g, b),
                spv::BindingInfo {
                    descriptor_set: g,
                    binding: b,
                    binding_array_size: None,
                },
            )
        })
        .collect();
    spv::Options {
        lang_version: (1, 0),
        fake_missing_bindings: false,
        binding_map,
        ..spv::Options::default()
    }
}

/// The SPIR-V of entry point `ep` (or of the whole module), checked for the magic number
/// and the `OpEntryPoint` names.
fn spirv_of(f: &Family, ep: Option<usize>) -> Vec<u32> {
    spirv_of_version(f, ep, (1, 0))
}

/// [`spirv_of`] in SPIR-V `version` (wgpu's Vulkan backend writes 1.3 where subgroups are on).
fn spirv_of_version(f: &Family, ep: Option<usize>, version: (u8, u8)) -> Vec<u32> {
    let po = ep.map(|i| spv::PipelineOptions {
        shader_stage: ShaderStage::Compute,
        entry_point: f.module.entry_points[i].name.clone(),
    });
    let (what, names): (String, Vec<String>) = match ep {
        Some(i) => {
            let n = f.module.entry_points[i].name.clone();
            (n.clone(), vec![n])
        }
        None => (
            format!("{} (whole module)", f.name),
            f.module
                .entry_points
                .iter()
                .map(|e| e.name.clone())
                .collect(),
        ),
    };
    let opts = spv::Options {
        lang_version: version,
        ..spv_options(f, ep)
    };
    let words = spv::write_vec(&f.module, &f.info, &opts, po.as_ref())
        .unwrap_or_else(|e| panic!("{what}: SPIR-V: {e}"));
    check_spirv(f, &words, &names, &what);
    words
}

#[test]
fn spirv() {
    for f in families() {
        // whole module, every entry point in one SPIR-V module (overlapping bindings of
        // different entry points are legal in SPIR-V)
        let words = spirv_of(&f, None);
        dump(&format!("{}.all.spv", f.name), &spv_bytes(&words));
        // one entry point at a time, as wgpu-hal/vulkan compiles a pipeline
        for k in kernels_of(f.name) {
            let words = spirv_of(&f, Some(entry_index(&f, k.name)));
            dump(&format!("{}.spv", k.name), &spv_bytes(&words));
        }
    }
}

/// MSL resources of one entry point: buffer slot = binding, as wgpu-hal/metal numbers
/// them for a single bind group, plus the runtime-array sizes buffer after them.
fn msl_resources(f: &Family, ep: usize) -> msl::EntryPointResources {
    let layout = layout_of(f, ep);
    let mut resources = msl::BindingMap::new();
    for ((g, b), s) in &layout {
        resources.insert(
            rb(*g, *b),
            msl::BindTarget {
                buffer: Some(*b as u8),
                mutable: *s == Slot::ReadWrite,
                ..Default::default()
            },
        );
    }
    msl::EntryPointResources {
        resources,
        immediates_buffer: None,
        sizes_buffer: Some(layout.len() as u8),
    }
}

fn msl_options(f: &Family, eps: &[usize]) -> msl::Options {
    let policy = naga::proc::BoundsCheckPolicy::ReadZeroSkipWrite;
    msl::Options {
        lang_version: (2, 0),
        fake_missing_bindings: false,
        per_entry_point_map: eps
            .iter()
            .map(|&i| (f.module.entry_points[i].name.clone(), msl_resources(f, i)))
            .collect(),
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: policy,
            buffer: policy,
            image_load: policy,
            binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
        },
        ..msl::Options::default()
    }
}

fn check_msl(src: &str, info: &msl::TranslationInfo, names: &[&str], what: &str) {
    assert!(!src.trim().is_empty(), "{what}: empty MSL");
    assert!(
        src.contains("kernel void"),
        "{what}: no kernel function in the MSL"
    );
    for r in &info.entry_point_names {
        if let Err(e) = r {
            panic!("{what}: MSL entry point failed: {e}");
        }
    }
    for n in names {
        assert!(src.contains(n), "{what}: MSL does not mention {n}");
    }
}

#[test]
fn msl() {
    for f in families() {
        let all: Vec<usize> = (0..f.module.entry_points.len()).collect();
        let names: Vec<&str> = f
            .module
            .entry_points
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        let (src, info) = msl::write_string(
            &f.module,
            &f.info,
            &msl_options(&f, &all),
            &msl::PipelineOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{}: MSL (whole module): {e}", f.name));
        check_msl(&src, &info, &names, &format!("{} (whole module)", f.name));
        for k in kernels_of(f.name) {
            let i = entry_index(&f, k.name);
            let po = msl::PipelineOptions {
                entry_point: Some((ShaderStage::Compute, k.name.into())),
                ..Default::default()
            };
            let (src, info) = msl::write_string(&f.module, &f.info, &msl_options(&f, &[i]), &po)
                .unwrap_or_else(|e| panic!("{}: MSL: {e}", k.name));
            check_msl(&src, &info, &[k.name], k.name);
            dump(&format!("{}.metal", k.name), src.as_bytes());
        }
    }
}

/// HLSL registers as wgpu-hal/dx12 assigns them: separate counters for SRVs (read-only
/// storage, `t`), UAVs (read-write storage, `u`) and CBVs (uniforms, `b`).
fn hlsl_options(f: &Family, ep: usize, model: hlsl::ShaderModel) -> hlsl::Options {
    let (mut t, mut u, mut c) = (0u32, 0u32, 0u32);
    let mut binding_map = hlsl::BindingMap::new();
    for ((g, b), s) in layout_of(f, ep) {
        let counter = match s {
            Slot::ReadOnly => &mut t,
            Slot::ReadWrite => &mut u,
            Slot::Uniform => &mut c,
        };
        binding_map.insert(
            rb(g, b),
            hlsl::BindTarget {
                space: g as u8,
                register: *counter,
                binding_array_size: None,
                dynamic_storage_buffer_offsets_index: None,
                restrict_indexing: true,
            },
        );
        *counter += 1;
    }
    hlsl::Options {
        shader_model: model,
        binding_map,
        fake_missing_bindings: false,
        zero_initialize_workgroup_memory: true,
        restrict_indexing: true,
        force_loop_bounding: true,
        ..hlsl::Options::default()
    }
}

#[test]
fn hlsl() {
    for model in [hlsl::ShaderModel::V5_1, hlsl::ShaderModel::V6_0] {
        for f in families() {
            for k in kernels_of(f.name) {
                let i = entry_index(&f, k.name);
                let what = format!("{} (HLSL sm {})", k.name, model.to_str());
                let opts = hlsl_options(&f, i, model);
                let po = hlsl::PipelineOptions {
                    entry_point: Some((ShaderStage::Compute, k.name.into())),
                };
                let mut src = String::new();
                let refl = hlsl::Writer::new(&mut src, &opts, &po)
                    .write(&f.module, &f.info, None)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(!src.trim().is_empty(), "{what}: empty HLSL");
                assert_eq!(
                    refl.entry_point_names.len(),
                    1,
                    "{what}: entry points written"
                );
                let ep_name = match &refl.entry_point_names[0] {
                    Ok(n) => n.clone(),
                    Err(e) => panic!("{what}: {e}"),
                };
                assert!(
                    ep_name.contains(k.name),
                    "{what}: HLSL entry point named {ep_name}"
                );
                assert!(
                    src.contains(&format!("void {ep_name}(")),
                    "{what}: no `void {ep_name}(` in the HLSL"
                );
                assert!(src.contains("[numthreads(64, 1, 1)]"), "{what}: numthreads");
                dump(
                    &format!("{}.sm{}.hlsl", k.name, model.to_str()),
                    src.as_bytes(),
                );
            }
        }
    }
}

const GLSL_VERSIONS: [glsl::Version; 2] = [
    glsl::Version::Embedded {
        version: 310,
        is_webgl: false,
    },
    glsl::Version::Desktop(430),
];

fn glsl_tag(version: glsl::Version) -> &'static str {
    if version.is_es() {
        "es310"
    } else {
        "core430"
    }
}

/// The GLSL compute shader of entry point `ep` (GLSL has one entry point per shader,
/// always called `main`), as wgpu-hal/gles writes it: one binding slot per buffer of
/// the layout.
fn glsl_of(f: &Family, ep: usize, version: glsl::Version) -> String {
    let name = &f.module.entry_points[ep].name;
    let what = format!("{name} (GLSL {version})");
    let binding_map: glsl::BindingMap = layout_of(f, ep)
        .into_iter()
        .map(|((g, b), _)| (rb(g, b), b as u8))
        .collect();
    let opts = glsl::Options {
        version,
        writer_flags: glsl::WriterFlags::empty(),
        binding_map,
        zero_initialize_workgroup_memory: true,
    };
    let po = glsl::PipelineOptions {
        shader_stage: ShaderStage::Compute,
        entry_point: name.clone(),
        multiview: None,
    };
    let mut src = String::new();
    glsl::Writer::new(
        &mut src,
        &f.module,
        &f.info,
        &opts,
        &po,
        naga::proc::BoundsCheckPolicies::default(),
    )
    .and_then(|mut w| w.write())
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(!src.trim().is_empty(), "{what}: empty GLSL");
    let header = if version.is_es() {
        "#version 310 es"
    } else {
        "#version 430 core"
    };
    assert!(
        src.starts_with(header),
        "{what}: does not start with {header}"
    );
    // The entry point becomes `main`; its name survives nowhere in the text.
    assert!(src.contains("void main()"), "{what}: no main");
    assert!(
        src.contains("layout(local_size_x = 64, local_size_y = 1, local_size_z = 1) in;"),
        "{what}: workgroup size 64 missing"
    );
    src
}

#[test]
fn glsl() {
    for version in GLSL_VERSIONS {
        for f in families() {
            for k in kernels_of(f.name) {
                let src = glsl_of(&f, entry_index(&f, k.name), version);
                // only the kernel's own buffers are declared (unused globals are dropped)
                let blocks = src.matches(" buffer ").count() + src.matches(" uniform ").count();
                assert_eq!(
                    blocks as u32,
                    k.inputs + k.outputs + 1,
                    "{} (GLSL {version}): buffer/uniform blocks declared",
                    k.name
                );
                dump(
                    &format!("{}.{}.comp", k.name, glsl_tag(version)),
                    src.as_bytes(),
                );
            }
        }
    }
}

/// Runs a shader tool on `input` (written to a temp file named `file`); the tool's
/// output on failure.
fn run_tool(tool: &str, args: &[&str], file: &str, input: &[u8]) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("wgcnn-naga-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join(file);
    std::fs::write(&path, input).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(tool)
        .args(args)
        .arg(&path)
        .output()
        .map_err(|e| format!("{tool}: {e}"))?;
    let _ = std::fs::remove_file(&path);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{tool} {args:?} {file}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn have_tool(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The translations fed to the reference validators of their languages: `spirv-val`
/// (SPIRV-Tools, Vulkan 1.0 rules) and `glslangValidator` (Khronos GLSL/ESSL).
/// Skipped with a message when the tools are not installed, unless
/// `WGCNN_REQUIRE_SHADER_TOOLS=1` (set by `.ci/run`, which installs them).
#[test]
fn spirv_val_and_glslang_accept_the_translations() {
    let tools = ["spirv-val", "glslangValidator"];
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have_tool(t)).collect();
    if !missing.is_empty() {
        assert!(
            std::env::var("WGCNN_REQUIRE_SHADER_TOOLS").map_or(true, |v| v != "1"),
            "WGCNN_REQUIRE_SHADER_TOOLS=1 but {missing:?} not found (apt-get install spirv-tools glslang-tools)"
        );
        eprintln!("skipped: {missing:?} not installed (apt-get install spirv-tools glslang-tools)");
        return;
    }
    let mut failures = Vec::new();
    let mut checked = 0;
    for f in families() {
        let mut spirv = vec![(format!("{}.all.spv", f.name), spirv_of(&f, None))];
        for k in kernels_of(f.name) {
            spirv.push((
                format!("{}.spv", k.name),
                spirv_of(&f, Some(entry_index(&f, k.name))),
            ));
        }
        for (file, words) in spirv {
            checked += 1;
            if let Err(e) = run_tool(
                "spirv-val",
                &["--target-env", "vulkan1.0"],
                &file,
                &spv_bytes(&words),
            ) {
                failures.push(e);
            }
        }
        for version in GLSL_VERSIONS {
            for k in kernels_of(f.name) {
                let src = glsl_of(&f, entry_index(&f, k.name), version);
                let file = format!("{}.{}.comp", k.name, glsl_tag(version));
                checked += 1;
                if let Err(e) = run_tool("glslangValidator", &["-S", "comp"], &file, src.as_bytes())
                {
                    failures.push(e);
                }
            }
        }
    }
    assert!(checked > 0, "nothing was validated");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The feature-gated families: invalid without their capabilities (so the gate is real), valid
/// with them, and translated to SPIR-V and MSL (per kernel, with the host layout); the SPIR-V
/// also goes through `spirv-val` when it is installed (required under
/// `WGCNN_REQUIRE_SHADER_TOOLS=1`).
#[test]
fn feature_families_validate_with_their_capabilities() {
    let tools = have_tool("spirv-val");
    assert!(
        tools || std::env::var("WGCNN_REQUIRE_SHADER_TOOLS").map_or(true, |v| v != "1"),
        "WGCNN_REQUIRE_SHADER_TOOLS=1 but spirv-val not found"
    );
    let mut failures = Vec::new();
    for (name, src, feature) in feature_shader_sources() {
        let module = naga::front::wgsl::parse_str(&src).expect("parses (checked below)");
        let without = capabilities_of(feature) - Capabilities::SHADER_FLOAT16;
        for caps in [Capabilities::empty(), without] {
            if caps != capabilities_of(feature) {
                assert!(
                    Validator::new(ValidationFlags::default(), caps)
                        .validate(&module)
                        .is_err(),
                    "{name}.wgsl validates with {caps:?}, without {feature}"
                );
            }
        }
    }
    for (f, feature) in feature_families() {
        for k in kernels_of(f.name) {
            let i = entry_index(&f, k.name);
            let words = spirv_of(&f, Some(i));
            dump(&format!("{}.spv", k.name), &spv_bytes(&words));
            // f16 storage needs SPV_KHR_16bit_storage (core in Vulkan 1.1); cooperative
            // matrices need SPV_KHR_cooperative_matrix on Vulkan 1.3
            let env = if feature == "shader-f16" {
                "vulkan1.1"
            } else {
                "vulkan1.3"
            };
            if tools {
                if let Err(e) = run_tool(
                    "spirv-val",
                    &["--target-env", env],
                    &format!("{}.spv", k.name),
                    &spv_bytes(&words),
                ) {
                    // older SPIRV-Tools (e.g. 2023.1) do not know SPV_KHR_cooperative_matrix
                    if feature != "shader-f16" && e.contains("Invalid capability operand: 6022") {
                        common::did_not_run(
                            &format!("spirv-val of {}", k.name),
                            "this SPIRV-Tools release does not know \
                             SPV_KHR_cooperative_matrix; naga validated and translated it",
                        );
                    } else {
                        failures.push(e);
                    }
                }
            }
            let po = msl::PipelineOptions {
                entry_point: Some((ShaderStage::Compute, k.name.into())),
                ..Default::default()
            };
            let mut opts = msl_options(&f, &[i]);
            // f16 needs MSL 2.2+ (half in device buffers), simdgroup matrices MSL 2.3
            opts.lang_version = (2, 3);
            let (src, info) = msl::write_string(&f.module, &f.info, &opts, &po)
                .unwrap_or_else(|e| panic!("{}: MSL: {e}", k.name));
            check_msl(&src, &info, &[k.name], k.name);
            dump(&format!("{}.metal", k.name), src.as_bytes());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The families whose `SG_ROWS` specialisations share loads across a subgroup
/// (`subgroup_shader_sources`): invalid without the `SUBGROUP` capability (so the rename the
/// host applies without subgroups is what keeps the portable build valid), valid with it, and
/// translated per kernel to SPIR-V (through `spirv-val` for Vulkan 1.1 when installed) and MSL.
#[test]
fn subgroup_families_validate_with_the_subgroup_capability() {
    let sources = subgroup_shader_sources().expect("the shipped sources unroll");
    let names: Vec<&str> = sources.iter().map(|s| s.0).collect();
    assert!(
        names.contains(&"conv") && names.contains(&"matmul"),
        "the pointwise convolutions and the GEMM share rows across subgroups: {names:?}"
    );
    let tools = have_tool("spirv-val");
    let mut failures = Vec::new();
    for (name, src) in sources {
        let module = naga::front::wgsl::parse_str(&src).expect("parses");
        assert!(
            Validator::new(ValidationFlags::default(), Capabilities::empty())
                .validate(&module)
                .is_err(),
            "{name}.wgsl with its subgroup broadcasts validates without SUBGROUP"
        );
        let f = parse_and_validate(name, &src, Capabilities::SUBGROUP);
        for k in kernels_of(name) {
            let i = entry_index(&f, k.name);
            let words = spirv_of_version(&f, Some(i), (1, 3));
            if tools {
                let file = format!("{}.subgroup.spv", k.name);
                if let Err(e) = run_tool(
                    "spirv-val",
                    &["--target-env", "vulkan1.1"],
                    &file,
                    &spv_bytes(&words),
                ) {
                    failures.push(e);
                }
            }
            let po = msl::PipelineOptions {
                entry_point: Some((ShaderStage::Compute, k.name.into())),
                ..Default::default()
            };
            let mut opts = msl_options(&f, &[i]);
            // simdgroup functions need MSL 2.1+
            opts.lang_version = (2, 3);
            let (msl_src, info) = msl::write_string(&f.module, &f.info, &opts, &po)
                .unwrap_or_else(|e| panic!("{}: MSL with subgroups: {e}", k.name));
            check_msl(&msl_src, &info, &[k.name], k.name);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
