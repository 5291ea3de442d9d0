//! Register-tile limits per adapter class, and the cache that keeps a layer's tile the same
//! at every batch size (so the smaller last batch of an epoch compiles nothing).

use super::device::GpuContext;
use crate::error::{Error, Result};

/// Tile extents a pipeline may be specialised with: few values, so that arbitrary shapes
/// share pipelines (each costs ~0.05–0.3 s to compile on a CPU adapter), yet the channel
/// counts of common layers (1, 3, 6, 16, 32, 64…) split without waste.
const EXTENTS: &[u32] = &[1, 2, 3, 4, 6, 8, 12, 16, 24, 32];

/// `len` split into `parts` as evenly as possible, the part rounded up to an allowed extent.
pub(crate) fn split(len: u32, parts: u32) -> u32 {
    let part = len.div_ceil(parts.max(1)).max(1);
    EXTENTS.iter().copied().find(|&e| e >= part).unwrap_or(part)
}

/// `len` split into the fewest parts of at most `max` (an allowed extent): the part size.
pub(crate) fn balanced(len: u32, max: u32) -> u32 {
    split(len, len.div_ceil(max.max(1)))
}

/// Register-tile limits for one adapter class. Each candidate list is tried in order and the
/// first tile that still gives the dispatch `min_groups` workgroups wins.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tiles {
    /// Conv forward: at most this many output channels per invocation (balanced over O) …
    pub(crate) fwd_channels: u32,
    /// … times one of these position counts per invocation.
    pub(crate) fwd_positions: &'static [u32],
    /// Conv backward-input (general kernel): input channels, position counts.
    pub(crate) bwd_in_channels: u32,
    pub(crate) bwd_in_positions: &'static [u32],
    /// Conv backward-input, stride-1 rows variant: input channels × row-segment width.
    pub(crate) bwd_in_rows: (u32, u32),
    /// Conv backward-weight (general kernel): output channels × (c,a,b) columns per
    /// workgroup tile (columns split further while there are too few tiles).
    pub(crate) bwd_w: (u32, u32),
    /// Conv backward-weight, stride-1 rows variant: (c,a) kernel rows per tile (the output
    /// channels as `bwd_w.0`).
    pub(crate) bwd_w_rows: u32,
    /// Depthwise conv forward and backward-input (sliding-window variants): at most this many
    /// consecutive outputs per invocation.
    pub(crate) dw_run: u32,
    /// … on each of at most this many consecutive rows (a block of rows shares the input
    /// rows its windows overlap on: (DR − 1)·sh + kh row loads instead of DR·kh).
    pub(crate) dw_rows: u32,
    /// GEMM: rows × columns per invocation.
    pub(crate) gemm: &'static [(u32, u32)],
    /// The scalar pointwise forward and backward-input passes (`conv_forward_pointwise`,
    /// `conv_backward_input_pointwise`): rows × positions per invocation.
    pub(crate) pointwise: &'static [(u32, u32)],
    /// The vec4 pointwise forward and backward-input passes (`conv_forward_pointwise_v4`,
    /// `conv_backward_input_pointwise_v4`): rows × positions per invocation.
    pub(crate) pointwise_v4: &'static [(u32, u32)],
    /// The pointwise weight gradients (`conv_backward_weight_pointwise(_v4)`): rows ×
    /// columns per invocation, the largest that fits taken (a plan splits the sum where it
    /// leaves too few workgroups).
    pub(crate) pointwise_w: &'static [(u32, u32)],
    /// GEMM through panels staged in workgroup memory (`gemm_shared`): its rows × columns
    /// per invocation; empty: the register-only `gemm` instead.
    pub(crate) shared_gemm: &'static [(u32, u32)],
    /// Workgroups a dispatch should have to occupy the device.
    pub min_groups: u64,
    /// A weight gradient whose largest register tiles number fewer workgroups than this is
    /// split into row partitions (`ops::conv::weight_parts`).
    pub split_groups: u64,
    /// Workgroup reductions without a barrier per tree level: batch norm's tree walked by
    /// one invocation between two barriers, the conv weight gradients' trees in registers
    /// by one invocation per value (`SERIAL_SUM`); the same order, the same bits.
    pub(crate) serial_tree: bool,
    /// Register-tile rows loaded once per subgroup of 8 and shared by `subgroupBroadcast`
    /// (`GpuContext::subgroup8`), in the pointwise kernels.
    pub(crate) sg_rows: bool,
}

/// CPU adapters (lavapipe/llvmpipe, SwiftShader, WARP: a workgroup runs on one thread, SIMD
/// across invocations). Tuned on lavapipe (LLVM 15, 8-wide AVX2), where a storage load costs
/// ~20 multiply-adds: the larger the tile, the fewer loads per multiply-add, as long as the
/// tile is fully unrolled (`/*unroll*/`) so it stays in registers; spilling the extra
/// accumulators to the stack is cheap next to the loads. Measured alternatives are in
/// docs/PERFORMANCE.md. `min_groups` is set to the host's cores.
const CPU_TILES: Tiles = Tiles {
    fwd_channels: 16,
    fwd_positions: &[12, 8, 4, 2, 1],
    bwd_in_channels: 8,
    bwd_in_positions: &[12, 8, 4, 2, 1],
    bwd_in_rows: (8, 16),
    bwd_w: (16, 32),
    // 8 measured best for 5×5 and 3×3 kernels (6 rows ran 1.6× slower, 16 no faster)
    bwd_w_rows: 8,
    dw_run: 16,
    dw_rows: 4,
    gemm: &[(8, 16), (8, 8), (4, 8), (4, 4), (2, 4), (1, 4)],
    // 8 × 4 too: Xception-mini's 64 × 32 weight gradient in one tile of 64 × 32 (4 × 4:
    // two, each loading 8 units per 64 multiply-adds instead of 12 per 128); 16 rows where
    // 128+ output channels fill them
    pointwise_w: &[
        (16, 16),
        (16, 8),
        (8, 16),
        (8, 8),
        (8, 4),
        (4, 8),
        (4, 4),
        (2, 4),
        (1, 4),
    ],
    // 16 rows too where 128+ channels fill them: a load of x serves 16 multiply-adds
    pointwise: &[
        (16, 16),
        (16, 8),
        (8, 16),
        (8, 8),
        (4, 8),
        (4, 4),
        (2, 4),
        (1, 4),
    ],
    // 4 × 32 too: 32 channels (Xception-mini's first backward-input) fill 8·4 rows, and
    // 8 vec4 units of positions per invocation keep 4·32 accumulators as 8 × 16 does
    pointwise_v4: &[
        (16, 16),
        (8, 16),
        (4, 32),
        (8, 8),
        (4, 16),
        (4, 8),
        (4, 4),
        (2, 4),
        (1, 4),
    ],
    // a workgroup runs on one thread: staging panels only adds copies and barriers
    shared_gemm: &[],
    min_groups: 2,
    split_groups: 2,
    serial_tree: true,
    sg_rows: false,
};

/// Hardware GPUs: registers are per invocation and few, so tiles of at most 16–40
/// accumulators (not measured here — no hardware GPU was available; see
/// docs/PERFORMANCE.md), and enough workgroups to spread over the compute units.
const GPU_TILES: Tiles = Tiles {
    fwd_channels: 4,
    fwd_positions: &[4, 2, 1],
    bwd_in_channels: 4,
    bwd_in_positions: &[4, 2, 1],
    bwd_in_rows: (4, 8),
    bwd_w: (4, 8),
    bwd_w_rows: 2,
    dw_run: 4,
    dw_rows: 1,
    gemm: &[(4, 4), (2, 4), (1, 4)],
    pointwise_w: &[(4, 4), (2, 4), (1, 4)],
    pointwise: &[(4, 4), (2, 4), (1, 4)],
    pointwise_v4: &[(4, 4), (2, 4), (1, 4)],
    // 64×64 tiles per workgroup where the product is large enough; not measured — no
    // hardware GPU was available (the register-only `gemm` reached 14 % of an H100's fp32
    // peak at 1024³, docs/results/h100-bench.md)
    shared_gemm: &[(8, 8), (4, 8), (4, 4), (2, 4), (1, 4)],
    min_groups: 32,
    // two workgroups per streaming multiprocessor of a large GPU (an H100 has 132); not
    // measured — no hardware GPU was available
    split_groups: 256,
    serial_tree: false,
    sg_rows: false,
};

/// The widest kernel the stride-1 rows variants are specialised for: 7 keeps the
/// weight-gradient reduction buffer (64 × (8 rows · KW + 1) floats) within the 16 KiB of
/// workgroup memory every WebGPU adapter offers.
pub(crate) const ROWS_MAX_KW: u32 = 7;

/// The first candidate whose workgroup count reaches `min_groups`, else the one with the most.
pub(crate) fn pick<T: Copy>(cands: &[T], groups: impl Fn(T) -> u64, min_groups: u64) -> (T, u64) {
    let mut best = (cands[0], groups(cands[0]));
    for &c in cands {
        let g = groups(c);
        if g >= min_groups {
            return (c, g);
        }
        if g > best.1 {
            best = (c, g);
        }
    }
    best
}

/// A channel tile for `len` channels in groups of `group` (`group == len`: no groups): as
/// [`balanced`] without groups; with groups, the largest allowed extent up to `max` that
/// divides the group, so no tile straddles two groups.
pub(crate) fn channel_tile(len: u32, group: u32, max: u32) -> u32 {
    if group == len {
        return balanced(len, max);
    }
    EXTENTS
        .iter()
        .copied()
        .filter(|&e| e <= max.max(1) && group.is_multiple_of(e))
        .max()
        .unwrap_or(1)
}

impl GpuContext {
    /// The register-tile limits for this adapter's class: [`CPU_TILES`] on a CPU adapter
    /// (with one workgroup per host core to keep), [`GPU_TILES`] otherwise — and in the
    /// browser, whose fallback adapter (SwiftShader) did not finish compiling LeNet-5's
    /// fully unrolled CPU tiles in minutes.
    pub(crate) fn tiles(&self) -> Tiles {
        if self.summary.device_type == "Cpu" && self.summary.backend != "BrowserWebGpu" {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u64);
            Tiles {
                min_groups: cores,
                split_groups: cores,
                sg_rows: self.subgroup8,
                // llvmpipe through GL compiles the 4-row depthwise blocks' unrolled code many
                // times slower than lavapipe does (CI's GL pass: minutes per test): rows there
                dw_rows: if self.summary.backend == "Gl" {
                    1
                } else {
                    CPU_TILES.dw_rows
                },
                ..CPU_TILES
            }
        } else {
            Tiles {
                sg_rows: self.subgroup8,
                ..GPU_TILES
            }
        }
    }

    /// The register tile for a launch whose batch-independent description is `key`: chosen
    /// by `choose` the first time, then reused, so that the same layer at another batch size
    /// (the smaller last batch of an epoch) uses the same pipeline and compiles nothing.
    pub(crate) fn tile_for(
        &self,
        key: String,
        choose: impl FnOnce() -> (u32, u32),
    ) -> Result<(u32, u32)> {
        let mut tiles = self
            .kernels
            .tiles
            .lock()
            .map_err(|_| Error::Device("tile cache lock poisoned".into()))?;
        Ok(*tiles.entry(key).or_insert_with(choose))
    }

    /// Sets the register tile of launch key `key` ([`crate::ops::Launch::tile_choices`] gives
    /// a launch's key and candidates): the autotuner's choice (`gpu::tune`), or a tool's or
    /// test's. Launches recorded afterwards use it; a key no launch asks for has no effect.
    pub fn set_tile(&self, key: &str, tile: (u32, u32)) -> Result<()> {
        self.kernels
            .tiles
            .lock()
            .map_err(|_| Error::Device("tile cache lock poisoned".into()))?
            .insert(key.to_string(), tile);
        Ok(())
    }
}
