//! The plan: a tape made concrete for one device. From the device-neutral [`Tape`] and the
//! adapter's [`Capabilities`] it decides every kernel variant, every buffer and texture (with its
//! label, size and contents) and every command of an iteration, in order. The engine allocates
//! exactly the plan's resources and binds its commands in a loop, so the memory the plan reports
//! ([`Plan::memory`], used by `nst info`, the size checks and the engine) is by construction what
//! the engine allocates.
//!
//! Adding a kernel variant means one `ops/` file (the kernel, its twin, its planned commands) and
//! one decision here.

use std::collections::HashMap;

use super::tape::{BackOp, Op, Tape, TensorId, TensorKind};
use super::vgg::CONVS;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Kernel, KernelLibrary, KernelRef, Planned};
use crate::ops::conv3x3::{self, Conv3x3Params};
use crate::ops::gram::{self, GramParams};
use crate::ops::gram_subgroup::{self, GramSliceParams};
use crate::ops::image::{self, ImageParams, NETWORK_CHANNELS};
use crate::ops::maxpool2::Pool2Params;
use crate::ops::relu::ReluParams;
use crate::ops::sqdiff::SqDiffParams;
use crate::ops::transpose::TransposeParams;
use crate::ops::{
    avgpool2, conv3x3_subgroup, maxpool2, partial_count, reduce, relu, sqdiff, tv, winograd, REDUCE_BLOCK,
};

/// What a device can run, as far as the plan's decisions go. [`Capabilities::of`] is the one place
/// that asks the adapter and the kernel library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The largest 2D texture side, when the subgroup conv kernels with texture operands were built
    /// (and `NST_NO_TEXTURES` is not set).
    pub texture_conv: Option<u32>,
    /// Whether the subgroup conv kernels with storage operands were built.
    pub subgroup_conv: bool,
    /// Whether the Gram backward (and, without `subgroup_gram`, forward) can run as a pointwise
    /// subgroup conv.
    pub pointwise_gram: bool,
    /// Whether the fast Gram forward (`gram_subgroup`, reading the features' texture) was built:
    /// subgroups of at least 4 lanes, and texture operands (`texture_conv`).
    pub subgroup_gram: bool,
    /// The adapter's storage binding limit in bytes: every buffer bound whole must fit it.
    pub binding_limit: u64,
    /// The most bytes of a feature map one binding holds: a map larger than this is bound in bands
    /// of rows. The binding limit, unless `NST_BAND_BYTES` (or a test) sets it lower.
    pub band_limit: u64,
    /// The adapter's largest buffer in bytes: every tensor must fit one.
    pub buffer_limit: u64,
    /// The alignment in bytes of a binding's offset into its buffer.
    pub offset_alignment: u64,
    /// The adapter's memory in bytes, where it is known ([`Gpu::memory`]).
    pub memory_limit: Option<u64>,
    /// Which 3x3 conv kernels to use (`nst render --conv`).
    pub conv: ConvChoice,
    /// Whether the Winograd products with subgroup broadcasts were built.
    pub winograd_subgroup: bool,
    /// The largest 2D texture side, where the Winograd products read U and V from textures (every
    /// adapter builds those kernels; not with `NST_NO_TEXTURES`).
    pub winograd_textures: Option<u32>,
}

/// Which 3x3 conv kernels a plan uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConvChoice {
    /// The rule of [`Capabilities::winograd`]: Winograd wherever the shape suits it, for forward
    /// convs from 128 input channels and input gradients from 64 (from any, on an adapter without
    /// subgroups), else direct.
    #[default]
    Auto,
    /// The direct conv everywhere: the baseline.
    Direct,
    /// Winograd wherever the shape suits it (input channels a multiple of 4, output channels of
    /// the products' channel tile), else direct.
    Winograd,
}

impl std::str::FromStr for ConvChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(ConvChoice::Auto),
            "direct" => Ok(ConvChoice::Direct),
            "winograd" => Ok(ConvChoice::Winograd),
            other => Err(format!("unknown conv choice '{other}': use auto, direct or winograd")),
        }
    }
}

impl std::fmt::Display for ConvChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConvChoice::Auto => "auto",
            ConvChoice::Direct => "direct",
            ConvChoice::Winograd => "winograd",
        })
    }
}

/// The most bytes of each Winograd scratch buffer or texture (V, M): larger convs run in bands of
/// rows. 64 MiB keeps the two near a 512 px map's first layer (2 x 64 MiB against 2 x 151) at a
/// few more dispatches.
pub const WINOGRAD_SCRATCH_BYTES: u64 = 64 << 20;

impl Capabilities {
    /// What this device runs: texture operands where the subgroup texture kernels exist (unless
    /// `NST_NO_TEXTURES` is set), else storage; subgroup kernels where they were built.
    pub fn of(gpu: &Gpu, library: &KernelLibrary) -> Capabilities {
        let no_textures = std::env::var("NST_NO_TEXTURES").is_ok_and(|v| !v.is_empty() && v != "0");
        let textures = conv3x3_subgroup::texture_kernels_built(library);
        Capabilities {
            texture_conv: (textures && !no_textures).then_some(gpu.limits.max_texture_dimension_2d),
            subgroup_conv: library.has::<conv3x3_subgroup::Forward16>() && library.has::<conv3x3_subgroup::Forward4>(),
            pointwise_gram: library.has::<conv3x3_subgroup::Pointwise32>() && library.has::<gram::Symmetrize>(),
            subgroup_gram: gram_subgroup::built(gpu, library),
            binding_limit: gpu.limits.max_storage_buffer_binding_size,
            band_limit: std::env::var("NST_BAND_BYTES")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
                .min(gpu.limits.max_storage_buffer_binding_size),
            buffer_limit: gpu.limits.max_buffer_size,
            offset_alignment: gpu.limits.min_storage_buffer_offset_alignment as u64,
            memory_limit: gpu.memory,
            conv: ConvChoice::Auto,
            winograd_subgroup: library.has::<winograd::GemmSubgroup>()
                && library.has::<winograd::GemmSubgroupTex>()
                && library.has::<winograd::GemmSubgroupNarrow>()
                && library.has::<winograd::GemmSubgroupTexNarrow>(),
            winograd_textures: (library.has::<winograd::GemmTex>() && !no_textures)
                .then_some(gpu.limits.max_texture_dimension_2d),
        }
    }

    /// The same device with the 3x3 convs chosen by `conv`.
    pub fn with_conv(self, conv: ConvChoice) -> Capabilities {
        Capabilities { conv, ..self }
    }

    /// The same device with feature maps bound in bands of at most `bytes` (tests force small
    /// bands with it).
    pub fn with_band_limit(self, bytes: u64) -> Capabilities {
        Capabilities { band_limit: bytes.min(self.binding_limit), ..self }
    }

    /// The portable kernels only (no subgroups, no textures), with no binding limit: what any
    /// adapter runs.
    pub fn portable() -> Capabilities {
        Capabilities {
            texture_conv: None,
            subgroup_conv: false,
            pointwise_gram: false,
            subgroup_gram: false,
            binding_limit: u64::MAX,
            band_limit: u64::MAX,
            buffer_limit: u64::MAX,
            offset_alignment: 256,
            memory_limit: None,
            conv: ConvChoice::Auto,
            winograd_subgroup: false,
            winograd_textures: None,
        }
    }

    /// Whether the Gram backward with `params` runs as symmetrize + pointwise conv (and the
    /// forward, where the sliced forward does not run, as transposed chunks + pointwise conv +
    /// scale).
    pub fn gram_as_pointwise(&self, params: &GramParams) -> bool {
        self.pointwise_gram && params.channels.is_multiple_of(32)
    }

    /// The slicing of the fast Gram forward for a feature map of `(height, width, channels)`, where
    /// this device runs it for that map: channels a multiple of 32, a texture that fits the adapter
    /// and rows a buffer-to-texture copy can write. The features' texture has the layout (and the
    /// size) of a conv input texture of that map, and is shared with it.
    pub fn gram_slices(&self, (height, width, channels): (usize, usize, usize)) -> Option<GramSliceParams> {
        let max = self.texture_conv.filter(|_| self.subgroup_gram)?;
        Some(GramSliceParams::new(height, width, channels)).filter(|p| p.fits(max))
    }

    /// Whether a conv pass with `params` reads its input and weights through textures.
    pub fn textured(&self, params: &Conv3x3Params) -> bool {
        self.texture_conv.is_some_and(|max| {
            conv3x3_subgroup::tile_for(params).is_some() && conv3x3_subgroup::textures_fit(params, max)
        })
    }

    /// The Winograd tile and operands of a conv pass with `params`, where it runs as a Winograd
    /// conv: when `conv` allows it, the shape suits the kernels, and the tile is
    /// the one with fewer products over the map padded to whole tiles (F(2x2) on a tie: it rounds
    /// less). Texture operands where `winograd_textures` allows them, U and V's texture fit the
    /// texture limit (V's height is split in bands) and V's rows suit a copy; else buffers.
    ///
    /// Auto: forward convs from 128 input channels, input gradients (`input_gradient`: a pass
    /// with flipped, transposed weights) from 64. On a 64 px render's loss trajectory against the
    /// direct conv's over 20 iterations, the Winograd conv from 128 channels stays 3.1e-4 apart,
    /// as far as changing only the Gram kernels' summation order moves it (3.0e-4); with the first
    /// block's forward convs (64 channels) too, 1.0e-3 to 1.35e-3, and F(2x2) there did no better
    /// (1.8e-3). A forward conv's rounding reaches discrete choices: in flat parts of a picture
    /// neighbouring pixels' features are nearly equal, so which one wins a 2x2 max pool (and
    /// whether a ReLU near 0 opens) is decided in the last bits, and any other summation order
    /// decides some of them otherwise; the gradient then takes another path. The first block's maps
    /// are the largest and nearest the image. An input gradient decides nothing of the kind. Speed
    /// (`nst bench`, lavapipe at 256 bits, V and M written to buffers): at 256x256x64 the Winograd
    /// conv took 77 ms against the direct conv's 80, from 128 channels it is 1.3-2x faster
    /// (`docs/measurements.md`).
    ///
    /// Where the adapter has no subgroups, auto takes Winograd wherever it suits: the direct conv
    /// there is the portable kernel (0.6 GFLOP/s on lavapipe), and an iteration at 64 px took 0.66 s
    /// so against 1.49 s with the rule above and 6.80 s direct (`NST_NO_SUBGROUPS=1 nst bench`).
    pub fn winograd(&self, params: &Conv3x3Params, input_gradient: bool) -> Option<(usize, winograd::Operands)> {
        let from = if input_gradient { 64 } else { 128 };
        let wanted = match self.conv {
            ConvChoice::Direct => false,
            // Without subgroups the direct conv is the portable one, 10-50x slower.
            ConvChoice::Auto => params.in_channels >= from || !self.subgroup_conv,
            ConvChoice::Winograd => true,
        };
        if !wanted || !winograd::suits(params) {
            return None;
        }
        let m = winograd::tile_for(params);
        let p = winograd::WinogradParams::new(params, m);
        let operands = match self.winograd_textures {
            Some(max) if winograd::textures_fit(&p, max) => winograd::Operands::Texture,
            _ => winograd::Operands::Storage,
        };
        Some((m, operands))
    }

    /// The storage-operand kernel of a conv pass that does not read textures: the subgroup kernel
    /// for its output-channel tile where there is one, else the portable kernel.
    pub fn storage_conv(&self, params: &Conv3x3Params) -> KernelRef {
        conv3x3_subgroup::storage_kernel(params)
            .filter(|_| self.subgroup_conv)
            .unwrap_or_else(KernelRef::of::<conv3x3::Forward>)
    }
}

/// Which line of [`MemoryReport`] a resource counts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryClass {
    Weights,
    Activations,
    Gradients,
    Targets,
    Other,
}

/// Bytes of GPU memory an engine for one tape needs, computed before anything is allocated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryReport {
    pub weights: u64,
    pub activations: u64,
    pub gradients: u64,
    pub targets: u64,
    /// Shared buffers (pool outputs, masked gradients, loss partials), map textures, Adam's
    /// image I/O. The optimiser's buffers are its own (`optim::Adam::bytes`).
    pub other: u64,
    /// The largest single buffer, which must fit the adapter's storage binding limit.
    pub largest_buffer: u64,
}

impl MemoryReport {
    pub fn total(&self) -> u64 {
        self.weights + self.activations + self.gradients + self.targets + self.other
    }
}

/// What a resource holds when the engine makes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    Zero,
    /// Conv `conv`'s bias.
    Bias {
        conv: usize,
    },
    /// Conv `conv`'s weights as the tape runs them ([`Tape::conv_weights`] padded to
    /// `in_channels`); flipped and transposed for the input gradient when `transposed`
    /// ([`conv3x3_subgroup::transpose_weights`]); in the weights-texture layout of `texture` when
    /// given.
    ConvWeights {
        conv: usize,
        in_channels: usize,
        out_channels: usize,
        transposed: bool,
        texture: Option<Conv3x3Params>,
    },
    /// Conv `conv`'s weights (as for `ConvWeights`) transformed for the Winograd conv of tile
    /// `tile` ([`winograd::transform_weights`]); in the U-texture layout when `texture`.
    WinogradWeights {
        conv: usize,
        in_channels: usize,
        out_channels: usize,
        transposed: bool,
        tile: usize,
        texture: bool,
    },
}

/// A buffer (of `bytes`) or an rgba32float texture (of `(width, height)` texels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Buffer(u64),
    Texture(u32, u32),
}

/// One buffer or texture of the plan.
#[derive(Clone, Debug)]
pub struct ResourcePlan {
    pub label: String,
    pub shape: Shape,
    pub class: MemoryClass,
    pub fill: Fill,
}

impl ResourcePlan {
    /// Bytes it occupies.
    pub fn bytes(&self) -> u64 {
        match self.shape {
            Shape::Buffer(bytes) => bytes,
            Shape::Texture(w, h) => 16 * w as u64 * h as u64,
        }
    }
}

/// Index of a resource in [`Plan::resources`].
pub type ResourceId = usize;

/// A tape on one device: every resource and every command, before anything is allocated.
#[derive(Clone, Debug)]
pub struct Plan {
    pub capabilities: Capabilities,
    pub resources: Vec<ResourcePlan>,
    /// The resource of each tensor of the tape (pool outputs that only the next conv reads share
    /// one, and so do all masked gradients).
    pub tensors: Vec<ResourceId>,
    /// The forward ops and loss heads of one iteration.
    pub forward: Vec<Planned<Operand>>,
    /// The backward ops, down to d loss / d image.
    pub backward: Vec<Planned<Operand>>,
    /// RGBA8 image (packed) -> the image tensor in the network's convention, and back.
    pub to_network: Planned<Operand>,
    pub from_network: Planned<Operand>,
    pub losses: ResourceId,
    pub rgba: ResourceId,
    /// d loss / d image, or a zero buffer when no loss reaches the image.
    pub grad: ResourceId,
    height: usize,
    width: usize,
    /// Why the plan cannot run on this device (a map that cannot be banded), if it cannot.
    refusal: Option<String>,
    banded: usize,
}

/// Builds the resource list; textures of one shape (conv inputs and Gram features of one map) are
/// shared.
struct Resources {
    list: Vec<ResourcePlan>,
    map_textures: HashMap<(u32, u32), ResourceId>,
    /// The Winograd scratch (V, M) shared by every Winograd conv pass, by (texture?, which).
    winograd: HashMap<(bool, usize), ResourceId>,
}

impl Resources {
    fn add(&mut self, label: impl Into<String>, shape: Shape, class: MemoryClass, fill: Fill) -> ResourceId {
        self.list.push(ResourcePlan { label: label.into(), shape, class, fill });
        self.list.len() - 1
    }

    fn zeroed(&mut self, label: impl Into<String>, floats: usize, class: MemoryClass) -> ResourceId {
        self.add(label, Shape::Buffer(4 * floats.max(1) as u64), class, Fill::Zero)
    }

    /// Scratch `which` (0: V, 1: M) of the Winograd conv, shared by every pass and grown to hold
    /// `shape`.
    fn winograd_scratch(&mut self, which: usize, shape: Shape) -> ResourceId {
        let texture = matches!(shape, Shape::Texture(..));
        let id = *self.winograd.entry((texture, which)).or_insert_with(|| {
            let label = format!(
                "winograd {}{}",
                ["transformed inputs", "products"][which],
                if texture { " texture" } else { "" }
            );
            self.list.push(ResourcePlan { label, shape, class: MemoryClass::Other, fill: Fill::Zero });
            self.list.len() - 1
        });
        let grown = match (self.list[id].shape, shape) {
            (Shape::Buffer(a), Shape::Buffer(b)) => Shape::Buffer(a.max(b)),
            (Shape::Texture(w, h), Shape::Texture(w2, h2)) => Shape::Texture(w.max(w2), h.max(h2)),
            _ => unreachable!("scratch kinds are keyed apart"),
        };
        self.list[id].shape = grown;
        id
    }

    fn map_texture(&mut self, (w, h): (u32, u32)) -> ResourceId {
        if let Some(&id) = self.map_textures.get(&(w, h)) {
            return id;
        }
        let id = self.add(format!("map texture {w}x{h}"), Shape::Texture(w, h), MemoryClass::Other, Fill::Zero);
        self.map_textures.insert((w, h), id);
        id
    }
}

/// An operand of a planned command: a whole resource, or `size` bytes of a buffer from byte
/// `offset` (a band of a feature map too large for one binding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operand {
    pub id: ResourceId,
    pub range: Option<(u64, u64)>,
}

impl From<ResourceId> for Operand {
    fn from(id: ResourceId) -> Operand {
        Operand { id, range: None }
    }
}

/// Where each tensor lives, and how a band of its rows is bound: the plan's one place for bands.
struct Layout<'a> {
    tape: &'a Tape,
    tensors: &'a [ResourceId],
    caps: &'a Capabilities,
    /// Bytes of each resource.
    sizes: Vec<u64>,
    /// Why the plan cannot run, when something cannot be banded.
    refusal: Option<String>,
    /// Ops split into more than one band.
    banded: usize,
}

impl Layout<'_> {
    fn bytes(&self, t: TensorId) -> u64 {
        4 * self.tape.tensors[t].len as u64
    }

    /// Whether tensor `t` is too large for one binding.
    fn banded(&self, t: TensorId) -> bool {
        self.bytes(t) > self.caps.band_limit
    }

    /// The whole of tensor `t`; a range of its resource's first bytes when the resource is shared
    /// with a larger tensor, so that the binding stays within the limit.
    fn whole(&self, t: TensorId) -> Operand {
        let id = self.tensors[t];
        match self.sizes[id] > self.caps.band_limit {
            true => Operand { id, range: Some((0, self.bytes(t))) },
            false => id.into(),
        }
    }

    /// Bytes `offset..offset + size` of tensor `t`, which must be aligned for a binding.
    fn span(&mut self, t: TensorId, offset: u64, size: u64) -> Operand {
        let name = self.tape.tensors[t].name.clone();
        self.span_of(self.tensors[t], &name, offset, size)
    }

    /// Bytes `offset..offset + size` of resource `id` (holding `what`), which must be aligned for
    /// a binding.
    fn span_of(&mut self, id: ResourceId, what: &str, offset: u64, size: u64) -> Operand {
        if !offset.is_multiple_of(self.caps.offset_alignment) && self.refusal.is_none() {
            self.refusal = Some(format!(
                "{what} would be bound in bands at offsets this adapter cannot bind (byte {offset}, not a multiple of {})",
                self.caps.offset_alignment
            ));
        }
        Operand { id, range: Some((offset, size)) }
    }

    /// Rows `first..first + rows` of map `t`, whose rows are `row` bytes (the shape comes from the
    /// op: the masked-gradient tensor is one flat buffer shared by maps of every shape).
    fn rows(&mut self, t: TensorId, row: u64, first: usize, rows: usize) -> Operand {
        self.span(t, first as u64 * row, rows as u64 * row)
    }

    /// The most rows per band such that, for each `(row bytes, extra rows)` of `maps`, a band and
    /// its extra rows fit one binding (at least 1; a refusal when not even that fits).
    fn band_rows(&mut self, maps: &[(u64, usize)]) -> usize {
        let limit = self.caps.band_limit;
        let rows = maps.iter().map(|&(row, extra)| (limit / row).saturating_sub(extra as u64)).min();
        let rows = rows.unwrap_or(u64::MAX) as usize;
        if rows == 0 && self.refusal.is_none() {
            let widest = maps.iter().map(|m| m.0).max().unwrap_or(0);
            self.refusal = Some(format!("a band of one row ({widest} bytes) does not fit one binding"));
        }
        rows.max(1)
    }

    /// Refuses the plan when tensor `t`, which the op `what` reads or writes whole, is too large.
    fn unbanded(&mut self, t: TensorId, what: &str) -> Operand {
        if self.banded(t) && self.refusal.is_none() {
            self.refusal = Some(format!(
                "{what} reads {} whole ({} MiB), over the {} MiB one binding holds",
                self.tape.tensors[t].name,
                self.bytes(t) >> 20,
                self.caps.band_limit >> 20
            ));
        }
        self.whole(t)
    }

    /// Counts an op run in `bands` bands.
    fn count(&mut self, bands: usize) {
        self.banded += (bands > 1) as usize;
    }
}

/// A conv pass (a layer's forward, or its input gradient as a forward conv with flipped,
/// transposed weights) with the fastest kernel the device has for its shape: the Winograd conv
/// where [`Capabilities::winograd`] chooses it, else the direct conv ([`direct_pass`]). Adds the
/// pass's weights to `r`. An input or output map too large for one binding is bound in bands of
/// rows, one dispatch per band, top to bottom. With a `mask` (an input gradient that is the last
/// writer of a ReLU's output gradient, `BackOp::ConvInput`), ReLU's gradient is applied to what
/// it writes: in the Winograd output transform, or by `relu.mask` after the direct conv.
#[allow(clippy::too_many_arguments)]
fn conv_pass(
    r: &mut Resources,
    layout: &mut Layout,
    conv: usize,
    params: &Conv3x3Params,
    transposed: bool,
    bias: ResourceId,
    [input, output]: [TensorId; 2],
    mask: Option<TensorId>,
) -> Vec<Planned<Operand>> {
    let caps = layout.caps;
    if let Some((m, operands)) = caps.winograd(params, transposed) {
        // Where a band of the maps cannot hold m rows, F(2x2); where not even 2, the direct conv.
        for m in [m, 2].into_iter().filter(|&t| t <= m) {
            if let Some(rows) = winograd_rows(layout, params, m, operands, [input, output]) {
                let maps = [input, output];
                return winograd_pass(r, layout, conv, params, transposed, bias, maps, mask, (m, rows), operands);
            }
        }
    }
    let mut plan = direct_pass(r, layout, conv, params, transposed, bias, [input, output]);
    // The direct conv has no masked epilogue: ReLU's gradient follows in place.
    if let Some(mask) = mask {
        let height = params.height as usize;
        for (n, operands) in flat_bands(layout, &[mask, output], params.output_len(), height) {
            let band = ReluParams::new(n);
            plan.push(match relu::Mask4::suits(&band) {
                true => Planned::dispatch::<relu::Mask4>(&band, operands),
                false => Planned::dispatch::<relu::Mask>(&band, operands),
            });
        }
    }
    plan
}

/// A conv pass as the direct conv: the subgroup kernel reading textures (after copying its input
/// into the shared texture of its shape), or reading buffers, or the portable kernel, in bands of
/// rows where a map is too large for one binding.
fn direct_pass(
    r: &mut Resources,
    layout: &mut Layout,
    conv: usize,
    params: &Conv3x3Params,
    transposed: bool,
    bias: ResourceId,
    [input, output]: [TensorId; 2],
) -> Vec<Planned<Operand>> {
    let caps = layout.caps;
    let name = CONVS[conv].name;
    let label = if transposed { format!("{name} weights transposed") } else { format!("{name} weights") };
    // The weights as the forward conv holds them: [out][3][3][in] of the layer, not of the pass.
    let (in_channels, out_channels) = if transposed {
        (params.out_channels as usize, params.in_channels as usize)
    } else {
        (params.in_channels as usize, params.out_channels as usize)
    };
    let bytes = 4 * params.weights_len() as u64;
    let textured = caps.textured(params);
    let (band_input, band_output) = (layout.banded(input) && !textured, layout.banded(output));
    let width = params.width as u64;
    let (row_in, row_out) = (4 * width * params.in_channels as u64, 4 * width * params.out_channels as u64);
    let rows = match (band_input, band_output) {
        (false, false) => params.height as usize,
        (true, false) => layout.band_rows(&[(row_in, 2)]),
        (false, true) => layout.band_rows(&[(row_out, 0)]),
        (true, true) => layout.band_rows(&[(row_in, 2), (row_out, 0)]),
    };
    let bands = params.bands(rows, 1);
    layout.count(bands.len());
    let band =
        |layout: &mut Layout, b: &Conv3x3Params| band_operands(layout, b, [input, output], [band_input, band_output]);
    if textured {
        let (w, h) = conv3x3_subgroup::weights_texture_size(params);
        let fill = Fill::ConvWeights { conv, in_channels, out_channels, transposed, texture: Some(*params) };
        debug_assert_eq!(16 * w as u64 * h as u64, bytes);
        let weights: Operand = r.add(label, Shape::Texture(w, h), MemoryClass::Weights, fill).into();
        let texture: Operand = r.map_texture(conv3x3_subgroup::input_texture_size(params)).into();
        // The copy into the texture is not a binding: it takes the whole map.
        let source = Operand::from(layout.tensors[input]);
        let mut plan =
            vec![conv3x3_subgroup::planned_map_copy(source, texture, params.height, params.width, params.in_channels)];
        for b in &bands {
            let (b, operands) = band(layout, b);
            let kernel = conv3x3_subgroup::textured_kernel(&b);
            let operands = vec![weights, bias.into(), texture, operands[1]];
            plan.push(Planned::Dispatch { kernel, params: bytemuck::bytes_of(&b).to_vec(), operands });
        }
        return plan;
    }
    let fill = Fill::ConvWeights { conv, in_channels, out_channels, transposed, texture: None };
    let weights: Operand = r.add(label, Shape::Buffer(bytes), MemoryClass::Weights, fill).into();
    let kernel = caps.storage_conv(params);
    bands
        .iter()
        .map(|b| {
            let (b, operands) = band(layout, b);
            let operands = vec![weights, bias.into(), operands[0], operands[1]];
            Planned::Dispatch { kernel, params: bytemuck::bytes_of(&b).to_vec(), operands }
        })
        .collect()
}

/// The operands of one band of a conv pass: the rows it reads and writes of the maps that are
/// `banded`, else the whole map (with the params binding it whole).
fn band_operands(
    layout: &mut Layout,
    b: &Conv3x3Params,
    [input, output]: [TensorId; 2],
    [band_input, band_output]: [bool; 2],
) -> (Conv3x3Params, Vec<Operand>) {
    let width = b.width as u64;
    let (row_in, row_out) = (4 * width * b.in_channels as u64, 4 * width * b.out_channels as u64);
    let (mut b, mut operands) = (*b, Vec::new());
    if band_input {
        operands.push(layout.rows(input, row_in, b.input_start as usize, b.band_input_rows(1)));
    } else {
        b = b.with_whole_input();
        operands.push(layout.whole(input));
    }
    if band_output {
        operands.push(layout.rows(output, row_out, b.band_start as usize, b.band_rows as usize));
    } else {
        b = b.with_whole_output();
        operands.push(layout.whole(output));
    }
    (b, operands)
}

/// The rows per band of a Winograd conv pass of tile `m`: V and M within
/// [`WINOGRAD_SCRATCH_BYTES`] (and a texture's height within the limit), and a map too large for
/// one binding bound in rows as for the direct conv; a multiple of m. None where a band of the
/// maps cannot hold m rows.
fn winograd_rows(
    layout: &mut Layout,
    params: &Conv3x3Params,
    m: usize,
    operands: winograd::Operands,
    [input, output]: [TensorId; 2],
) -> Option<usize> {
    let caps = layout.caps;
    let whole = winograd::WinogradParams::new(params, m);
    let texture = operands == winograd::Operands::Texture;
    let tile_row_floats =
        (whole.points() * whole.tiles_x as usize) as u64 * params.in_channels.max(params.out_channels) as u64;
    let mut tile_rows = caps.band_limit.min(WINOGRAD_SCRATCH_BYTES) / (4 * tile_row_floats);
    if let (true, Some(max)) = (texture, caps.winograd_textures) {
        tile_rows = tile_rows.min((max as usize / whole.points()) as u64);
    }
    let mut rows = (tile_rows.max(1) as usize * m).min(params.height as usize);
    let (band_input, band_output) = (layout.banded(input), layout.banded(output));
    let width = params.width as u64;
    let (row_in, row_out) = (4 * width * params.in_channels as u64, 4 * width * params.out_channels as u64);
    let fit = match (band_input, band_output) {
        (false, false) => usize::MAX,
        (true, false) => layout.band_rows(&[(row_in, 2)]),
        (false, true) => layout.band_rows(&[(row_out, 0)]),
        (true, true) => layout.band_rows(&[(row_in, 2), (row_out, 0)]),
    };
    if fit < m {
        return None;
    }
    if fit < rows {
        rows = fit / m * m;
    }
    Some(rows)
}

/// A conv pass as a Winograd conv F(m x m, 3x3) in bands of `rows` ([`winograd_rows`]) with V, M
/// and U in `operands`: per band, the input transform, the products and the output transform
/// (`winograd::plan`).
#[allow(clippy::too_many_arguments)]
fn winograd_pass(
    r: &mut Resources,
    layout: &mut Layout,
    conv: usize,
    params: &Conv3x3Params,
    transposed: bool,
    bias: ResourceId,
    [input, output]: [TensorId; 2],
    mask: Option<TensorId>,
    (m, rows): (usize, usize),
    operands: winograd::Operands,
) -> Vec<Planned<Operand>> {
    let caps = layout.caps;
    let name = CONVS[conv].name;
    let (in_channels, out_channels) = if transposed {
        (params.out_channels as usize, params.in_channels as usize)
    } else {
        (params.in_channels as usize, params.out_channels as usize)
    };
    let whole = winograd::WinogradParams::new(params, m);
    let texture = operands == winograd::Operands::Texture;
    let (band_input, band_output) = (layout.banded(input), layout.banded(output));
    let bands = params.bands(rows, 1);
    layout.count(bands.len());

    let label = format!("{name} winograd F({m}x{m}) weights{}", if transposed { " transposed" } else { "" });
    let fill = Fill::WinogradWeights { conv, in_channels, out_channels, transposed, tile: m, texture };
    let shape = match texture {
        true => {
            let (w, h) = winograd::weights_texture_size(&whole);
            Shape::Texture(w, h)
        }
        false => Shape::Buffer(4 * whole.transformed_weights_len() as u64),
    };
    let u: Operand = r.add(label, shape, MemoryClass::Weights, fill).into();
    // The first band is the largest: the shared scratch grows to hold it.
    let first = winograd::WinogradParams::new(&bands[0], m);
    // V and M in buffers; with texture operands V also in its texture, filled by a copy.
    let [v, product] = [(0, first.transformed_input_len()), (1, first.product_len())]
        .map(|(which, floats)| Operand::from(r.winograd_scratch(which, Shape::Buffer(4 * floats as u64))));
    let v_texture: Option<Operand> = texture.then(|| {
        let (w, h) = winograd::transformed_texture_size(&first);
        r.winograd_scratch(0, Shape::Texture(w, h)).into()
    });
    // With texture operands the input transform reads the input's map texture where it fits
    // (shared with the direct texture conv's of that shape; the copy is not a binding).
    let map_input = texture && caps.winograd_textures.is_some_and(|max| winograd::map_input_fits(params, max));
    let mut plan = Vec::new();
    let map: Option<Operand> = map_input.then(|| {
        let texture = r.map_texture(conv3x3_subgroup::input_texture_size(params)).into();
        let source = Operand::from(layout.tensors[input]);
        plan.push(conv3x3_subgroup::planned_map_copy(source, texture, params.height, params.width, params.in_channels));
        texture
    });
    for b in &bands {
        let (b, maps) = band_operands(layout, b, [input, output], [band_input && !map_input, band_output]);
        let p = winograd::WinogradParams::new(&b, m);
        let input = map.unwrap_or(maps[0]);
        // The mask has the output's shape: the same rows.
        let mask = mask.map(|t| match band_output {
            true => {
                layout.rows(t, 4 * b.width as u64 * b.out_channels as u64, b.band_start as usize, b.band_rows as usize)
            }
            false => layout.whole(t),
        });
        let operands_of_band = winograd::ConvOperands {
            input,
            weights: u,
            transformed: v,
            transformed_texture: v_texture,
            product,
            bias: bias.into(),
            output: maps[1],
            mask,
        };
        plan.extend(winograd::plan(&p, operands, caps.winograd_subgroup, map_input, operands_of_band));
    }
    plan
}

/// Bands of at most `rows` rows of a map of `height` rows: (first row, rows), top to bottom.
fn row_bands(height: usize, rows: usize) -> Vec<(usize, usize)> {
    (0..height).step_by(rows.max(1)).map(|start| (start, rows.max(1).min(height - start))).collect()
}

/// A 2x2 pool (forward or backward) over `maps` in binding order, each marked `true` when it has
/// the input's shape (else the output's), in bands of output rows when any map is too large for
/// one binding: each band pools input rows `2 * first..2 * (first + rows)` (and the odd last row,
/// in the last band) as a map of its own, which is the same arithmetic.
fn pool_pass<K: Kernel<Params = Pool2Params>>(
    layout: &mut Layout,
    params: &Pool2Params,
    maps: &[(TensorId, bool)],
) -> Vec<Planned<Operand>> {
    if !maps.iter().any(|&(t, _)| layout.banded(t)) {
        let operands = maps.iter().map(|&(t, _)| layout.whole(t)).collect();
        return vec![Planned::dispatch::<K>(params, operands)];
    }
    let (c, w) = (params.channels as u64, params.width as u64);
    let (row_in, row_out) = (4 * w * c, 4 * (w / 2) * c);
    // An input band of `rows` output rows holds 2 * rows + 1 rows at most.
    let rows = layout.band_rows(&[(row_out, 0)]).min((layout.band_rows(&[(row_in, 1)]) - 1) / 2).max(1);
    let (height, out_height) = (params.height as usize, params.out_height());
    let bands = row_bands(out_height, rows);
    layout.count(bands.len());
    bands
        .into_iter()
        .map(|(first, rows)| {
            let last = first + rows == out_height;
            let in_rows = if last { height - 2 * first } else { 2 * rows };
            let band = Pool2Params { height: in_rows as u32, ..*params };
            let operands = maps
                .iter()
                .map(|&(t, input)| match input {
                    true => layout.rows(t, row_in, 2 * first, in_rows),
                    false => layout.rows(t, row_out, first, rows),
                })
                .collect();
            Planned::dispatch::<K>(&band, operands)
        })
        .collect()
}

/// The bands of a flat op over maps of one shape (`maps` in binding order): one band of all
/// `elements` bound whole when they fit one binding, else bands of whole rows. Each band is its
/// element count and its operands.
fn flat_bands(layout: &mut Layout, maps: &[TensorId], elements: usize, height: usize) -> Vec<(usize, Vec<Operand>)> {
    if !maps.iter().any(|&t| layout.banded(t)) {
        return vec![(elements, maps.iter().map(|&t| layout.whole(t)).collect())];
    }
    let row = elements / height;
    let rows = layout.band_rows(&[(4 * row as u64, 0)]);
    let bands = row_bands(height, rows);
    layout.count(bands.len());
    bands
        .into_iter()
        .map(|(first, rows)| (rows * row, maps.iter().map(|&t| layout.rows(t, 4 * row as u64, first, rows)).collect()))
        .collect()
}

/// The most positions per chunk of a Gram forward as a pointwise conv on this device: at most
/// [`gram::MAX_CHUNK_POSITIONS`], and few enough that a chunk's transposed features (the scratch
/// buffer, bound whole) and a chunk of a banded map fit one binding; a multiple of 4.
fn pointwise_max_chunk(caps: &Capabilities, params: &GramParams) -> usize {
    let fit = (caps.band_limit / (4 * params.channels as u64)).min(usize::MAX as u64) as usize / 4 * 4;
    fit.clamp(4, gram::MAX_CHUNK_POSITIONS)
}

/// The bands (first element, elements) of a loss over a tensor of `len` elements too large for
/// one binding: whole blocks of the reduction, so each band's partial sums start at an aligned offset right
/// after the previous band's, and the partials of all bands sum in one reduction, in order.
fn loss_bands(layout: &Layout, len: usize) -> Vec<(usize, usize)> {
    let block = REDUCE_BLOCK * (layout.caps.offset_alignment as usize / 4).max(1);
    let fit = (layout.caps.band_limit / 4) as usize / block * block;
    let band = fit.max(block).min(len.next_multiple_of(block));
    (0..len).step_by(band).map(|start| (start, band.min(len - start))).collect()
}

impl Plan {
    /// Decides every resource and command of `tape` on a device with `caps`.
    pub fn new(tape: &Tape, caps: &Capabilities) -> Plan {
        let mut r = Resources { list: Vec::new(), map_textures: HashMap::new(), winograd: HashMap::new() };

        // One buffer per tensor, except that pool outputs only the next conv reads share one, and
        // so do all masked gradients: (class, floats, names of its tensors) per buffer.
        let mut groups: Vec<(MemoryClass, usize, Vec<&str>)> = Vec::new();
        let mut shared: HashMap<TensorKind, usize> = HashMap::new();
        let mut group_of = Vec::with_capacity(tape.tensors.len());
        for t in &tape.tensors {
            let class = match t.kind {
                TensorKind::Activation | TensorKind::Gram | TensorKind::Image => MemoryClass::Activations,
                TensorKind::Grad => MemoryClass::Gradients,
                TensorKind::Target => MemoryClass::Targets,
                TensorKind::Transient | TensorKind::Masked => MemoryClass::Other,
            };
            let mut fresh = || {
                groups.push((class, 0, Vec::new()));
                groups.len() - 1
            };
            let g = match t.kind {
                TensorKind::Transient | TensorKind::Masked => *shared.entry(t.kind).or_insert_with(fresh),
                _ => fresh(),
            };
            groups[g].1 = groups[g].1.max(t.len);
            groups[g].2.push(&t.name);
            group_of.push(g);
        }
        let ids: Vec<ResourceId> = groups
            .iter()
            .map(|(class, floats, names)| {
                r.zeroed(names.iter().take(3).copied().collect::<Vec<_>>().join(", "), *floats, *class)
            })
            .collect();
        let tensors: Vec<ResourceId> = group_of.iter().map(|&g| ids[g]).collect();
        let sizes = r.list.iter().map(ResourcePlan::bytes).collect();
        let mut layout = Layout { tape, tensors: &tensors, caps, sizes, refusal: None, banded: 0 };

        // Biases (and a zero bias for each gradient conv).
        let mut biases: HashMap<usize, (ResourceId, Option<ResourceId>)> = HashMap::new();
        let has_backward: Vec<usize> = tape
            .backward
            .iter()
            .filter_map(|op| match op {
                BackOp::ConvInput { conv, .. } => Some(*conv),
                _ => None,
            })
            .collect();
        for (conv, p) in tape.conv_params() {
            let c = &CONVS[conv];
            let bias = r.add(
                format!("{} bias", c.name),
                Shape::Buffer(4 * p.out_channels as u64),
                MemoryClass::Weights,
                Fill::Bias { conv },
            );
            let zero = has_backward
                .contains(&conv)
                .then(|| r.zeroed(format!("{} zero bias", c.name), p.in_channels as usize, MemoryClass::Weights));
            biases.insert(conv, (bias, zero));
        }
        let partials = r.zeroed("loss partials", tape.partials_len(), MemoryClass::Other);
        let losses = r.zeroed("losses", tape.losses.len(), MemoryClass::Other);

        // One transposed chunk and one zero bias, shared by every Gram forward run as a pointwise
        // conv; one buffer of partial Gram matrices, shared by every sliced Gram forward.
        let sliced = |input: TensorId| caps.gram_slices(tape.tensors[input].shape);
        let pointwise_scratch = tape
            .forward
            .iter()
            .filter_map(|op| match op {
                Op::Gram { input, params, .. } if caps.gram_as_pointwise(params) && sliced(*input).is_none() => {
                    let max_chunk = pointwise_max_chunk(caps, params);
                    Some((gram::pointwise_scratch_len(params, max_chunk), params.channels as usize))
                }
                _ => None,
            })
            .reduce(|a, b| (a.0.max(b.0), a.1.max(b.1)))
            .map(|(scratch, channels)| {
                let t = r.zeroed("gram transposed features", scratch, MemoryClass::Other);
                (t, r.zeroed("gram zero bias", channels, MemoryClass::Other))
            });
        let gram_partials = tape
            .forward
            .iter()
            .filter_map(|op| match op {
                Op::Gram { input, .. } => sliced(*input).map(|p| p.partials_len()),
                _ => None,
            })
            .max()
            .map(|len| r.zeroed("gram partials", len, MemoryClass::Other));

        let mut forward = Vec::new();
        for op in &tape.forward {
            let l = &mut layout;
            match *op {
                Op::Conv { conv, input, output, params } => {
                    let bias = biases[&conv].0;
                    forward.extend(conv_pass(&mut r, l, conv, &params, false, bias, [input, output], None));
                }
                Op::MaxPool { input, output, params } if maxpool2::vec4_suits(&params) => {
                    forward.extend(pool_pass::<maxpool2::Forward4>(l, &params, &[(input, true), (output, false)]))
                }
                Op::MaxPool { input, output, params } => {
                    forward.extend(pool_pass::<maxpool2::Forward>(l, &params, &[(input, true), (output, false)]))
                }
                Op::AvgPool { input, output, params } => {
                    forward.extend(pool_pass::<avgpool2::Forward>(l, &params, &[(input, true), (output, false)]))
                }
                Op::Gram { input, output, .. } if sliced(input).is_some() => {
                    // The features reach the texture by a copy, which is not a binding.
                    let p = sliced(input).expect("checked by the guard");
                    let texture = r.map_texture(p.texture_size()).into();
                    let partials = gram_partials.expect("partials planned for every sliced Gram").into();
                    let operands = [tensors[input].into(), texture, partials, l.whole(output)];
                    forward.extend(gram_subgroup::forward_plan(&p, operands));
                }
                Op::Gram { input, output, params } if caps.gram_as_pointwise(&params) => {
                    let (scratch, zero) = pointwise_scratch.expect("scratch planned for every pointwise Gram");
                    let operands = [l.whole(output), scratch.into(), zero.into()];
                    let (positions, c) = (params.positions as usize, params.channels as usize);
                    let max_chunk = pointwise_max_chunk(caps, &params);
                    if l.banded(input) {
                        // Each chunk binds its own positions: a whole number of vec4s, at offsets
                        // of a multiple of 4 positions of at least 32 channels.
                        let chunks = positions.div_ceil(params.chunk_len(max_chunk));
                        l.count(chunks);
                        let mut chunk = |start: usize, len: usize| {
                            let n = len.min(positions - start);
                            let span = l.span(input, 4 * (start * c) as u64, 4 * (n * c) as u64);
                            (span, TransposeParams::new(n, c, 0, len))
                        };
                        forward.extend(gram::pointwise_forward_plan(&params, max_chunk, &mut chunk, operands));
                    } else {
                        let whole = gram::whole_features(&params, l.whole(input));
                        forward.extend(gram::pointwise_forward_plan(&params, max_chunk, whole, operands));
                    }
                }
                Op::Gram { input, output, params } => {
                    // Summed band by band of rows: `=` for the first, `+=` for the others.
                    let c = params.channels as usize;
                    for (k, (n, mut operands)) in
                        flat_bands(l, &[input], params.features_len(), tape.tensors[input].shape.0)
                            .into_iter()
                            .enumerate()
                    {
                        let band = GramParams { positions: (n / c) as u32, accumulate: (k > 0) as u32, ..params };
                        operands.push(l.whole(output));
                        forward.push(match gram::ForwardBlocked::suits(&params) {
                            true => Planned::dispatch::<gram::ForwardBlocked>(&band, operands),
                            false => Planned::dispatch::<gram::Forward>(&band, operands),
                        });
                    }
                }
                Op::SqDiff { input, target, slot, params } => {
                    // Band by band of whole reduction blocks; the bands' partials lie end to end.
                    let banded = l.banded(input) || l.banded(target);
                    let bands = match banded {
                        true => loss_bands(l, params.len()),
                        false => vec![(0, params.len())],
                    };
                    l.count(bands.len());
                    for (start, n) in bands {
                        let p = SqDiffParams { len: n as u32, ..params };
                        let (first, count) = (partial_count(start), p.partials());
                        let operands = match banded {
                            true => vec![
                                l.span(input, 4 * start as u64, 4 * n as u64),
                                l.span(target, 4 * start as u64, 4 * n as u64),
                                l.span_of(partials, "the loss partials", 4 * first as u64, 4 * count as u64),
                            ],
                            false => vec![l.whole(input), l.whole(target), partials.into()],
                        };
                        forward.push(Planned::dispatch::<sqdiff::Forward>(&p, operands));
                    }
                    let sum = reduce::ReduceParams::new(params.partials(), slot);
                    forward.push(Planned::dispatch::<reduce::Sum>(&sum, vec![partials.into(), losses.into()]));
                }
                Op::Tv { input, slot, params } => {
                    let image = l.unbanded(input, "the total variation");
                    forward.push(Planned::dispatch::<tv::Forward>(&params, vec![image, partials.into()]));
                    let sum = reduce::ReduceParams::new(params.partials(), slot);
                    forward.push(Planned::dispatch::<reduce::Sum>(&sum, vec![partials.into(), losses.into()]));
                }
            }
        }

        let mut backward = Vec::new();
        for op in &tape.backward {
            let l = &mut layout;
            match *op {
                BackOp::SqDiff { input, target, grad, params } => {
                    if [input, target, grad].iter().any(|&t| l.banded(t)) {
                        let bands = loss_bands(l, params.len());
                        l.count(bands.len());
                        for (start, n) in bands {
                            let p = SqDiffParams { len: n as u32, ..params };
                            let operands =
                                [input, target, grad].map(|t| l.span(t, 4 * start as u64, 4 * n as u64)).to_vec();
                            backward.push(Planned::dispatch::<sqdiff::Backward>(&p, operands));
                        }
                    } else {
                        let operands = vec![l.whole(input), l.whole(target), l.whole(grad)];
                        backward.push(Planned::dispatch::<sqdiff::Backward>(&params, operands));
                    }
                }
                BackOp::Tv { input, grad, params } => {
                    let operands = vec![l.unbanded(input, "the total variation"), l.unbanded(grad, "its gradient")];
                    backward.push(Planned::dispatch::<tv::Backward>(&params, operands));
                }
                BackOp::Gram { features, grad_gram, grad_features, params } if caps.gram_as_pointwise(&params) => {
                    // dF = F x sym with sym = scale * (dG + dGᵀ): a pointwise conv, in bands of
                    // rows when the map is too large for one binding. Where the textures fit it
                    // reads the features from their map texture and sym from a texture (both
                    // filled by copies; on lavapipe 11-38% faster than from buffers, copies included).
                    let c = params.channels as usize;
                    let sym = r.zeroed("gram symmetrized gradient", params.gram_len(), MemoryClass::Other).into();
                    let zero = r.zeroed("gram zero bias", c, MemoryClass::Other).into();
                    let (positions, h) = (params.positions as usize, tape.tensors[features].shape.0);
                    let conv = Conv3x3Params::new(h, positions / h, c, c).with_accumulate(params.accumulate != 0);
                    let textured =
                        caps.texture_conv.is_some_and(|max| conv3x3_subgroup::pointwise_textures_fit(&conv, max));
                    // The weights and the input as the kernel reads them, with the copies that fill them.
                    let (weights, input) = match textured {
                        true => {
                            let grad = vec![l.whole(grad_gram), sym];
                            backward.push(Planned::dispatch::<gram::SymmetrizeTiled>(&params, grad));
                            let (w, wh) = gram::tiled_weights_texture_size(c);
                            let label = format!("gram symmetrized gradient texture {c}");
                            let texture: Operand =
                                r.add(label, Shape::Texture(w, wh), MemoryClass::Other, Fill::Zero).into();
                            backward.push(Planned::CopyToTexture {
                                buffer: sym,
                                texture,
                                origin: [0, 0],
                                extent: [w, wh],
                            });
                            let map: Operand = r.map_texture(conv3x3_subgroup::input_texture_size(&conv)).into();
                            let source = Operand::from(l.tensors[features]);
                            backward.push(conv3x3_subgroup::planned_map_copy(
                                source,
                                map,
                                conv.height,
                                conv.width,
                                conv.in_channels,
                            ));
                            (texture, Some(map))
                        }
                        false => {
                            backward
                                .push(Planned::dispatch::<gram::Symmetrize>(&params, vec![l.whole(grad_gram), sym]));
                            (sym, None)
                        }
                    };
                    let (band_features, band_grad) = (l.banded(features) && !textured, l.banded(grad_features));
                    let row = 4 * (positions / h * c) as u64;
                    let rows = if band_features || band_grad { l.band_rows(&[(row, 0)]) } else { h };
                    let bands = conv.bands(rows, 0);
                    l.count(bands.len());
                    for b in bands {
                        let (first, n) = (b.band_start as usize, b.band_rows as usize);
                        let (b, features) = match (input, band_features) {
                            (Some(map), _) => (b.with_whole_input(), map),
                            (None, true) => (b, l.rows(features, row, first, n)),
                            (None, false) => (b.with_whole_input(), l.whole(features)),
                        };
                        let (b, grad) = match band_grad {
                            true => (b, l.rows(grad_features, row, first, n)),
                            false => (b.with_whole_output(), l.whole(grad_features)),
                        };
                        let operands = vec![weights, zero, features, grad];
                        backward.push(match textured {
                            true => Planned::dispatch::<conv3x3_subgroup::Pointwise32Tex>(&b, operands),
                            false => Planned::dispatch::<conv3x3_subgroup::Pointwise32>(&b, operands),
                        });
                    }
                }
                BackOp::Gram { features, grad_gram, grad_features, params } => {
                    let c = params.channels as usize;
                    for (n, operands) in
                        flat_bands(l, &[features, grad_features], params.features_len(), tape.tensors[features].shape.0)
                    {
                        let band = GramParams { positions: (n / c) as u32, ..params };
                        // Bindings: features, grad_gram, grad_features.
                        let operands = vec![operands[0], l.whole(grad_gram), operands[1]];
                        backward.push(Planned::dispatch::<gram::Backward>(&band, operands));
                    }
                }
                BackOp::MaxPool { input, grad_output, grad_input, params } => {
                    let maps = [(input, true), (grad_output, false), (grad_input, true)];
                    backward.extend(if maxpool2::vec4_suits(&params) {
                        pool_pass::<maxpool2::Backward4>(l, &params, &maps)
                    } else {
                        pool_pass::<maxpool2::Backward>(l, &params, &maps)
                    });
                }
                BackOp::AvgPool { grad_output, grad_input, params } => {
                    let maps = [(grad_output, false), (grad_input, true)];
                    backward.extend(pool_pass::<avgpool2::Backward>(l, &params, &maps));
                }
                BackOp::Relu { output, grad_output, masked, params } => {
                    for (n, operands) in
                        flat_bands(l, &[output, grad_output, masked], params.len(), tape.tensors[output].shape.0)
                    {
                        let band = ReluParams { len: n as u32, ..params };
                        backward.push(match relu::Backward4::suits(&band) {
                            true => Planned::dispatch::<relu::Backward4>(&band, operands),
                            false => Planned::dispatch::<relu::Backward>(&band, operands),
                        });
                    }
                }
                BackOp::ConvInput { conv, masked, grad_input, mask, params } => {
                    // The input gradient is a forward conv with flipped, transposed weights.
                    let zero = biases[&conv].1.expect("a zero bias planned for every gradient conv");
                    let gradient = params.input_gradient();
                    let maps = [masked, grad_input];
                    backward.extend(conv_pass(&mut r, l, conv, &gradient, true, zero, maps, mask));
                }
            }
        }

        let pixels = tape.spec.height * tape.spec.width;
        let image_len = tape.tensors[tape.image].len;
        let rgba = r.zeroed("image rgba", pixels, MemoryClass::Other);
        let image_params = ImageParams::new(pixels);
        let image = layout.unbanded(tape.image, "the image conversion");
        let to_network = Planned::dispatch::<image::ToNetwork>(&image_params, vec![rgba.into(), image]);
        let from_network = Planned::dispatch::<image::FromNetwork>(&image_params, vec![image, rgba.into()]);
        // The optimiser reads a zero gradient where no loss reaches the image.
        let grad = match tape.image_grad() {
            Some(g) => layout.unbanded(g, "the optimiser").id,
            None => r.zeroed("zero gradient", image_len, MemoryClass::Other),
        };
        let (refusal, banded) = (layout.refusal, layout.banded);

        debug_assert_eq!(NETWORK_CHANNELS * pixels, image_len);
        Plan {
            capabilities: *caps,
            resources: r.list,
            tensors,
            forward,
            backward,
            to_network,
            from_network,
            losses,
            rgba,
            grad,
            height: tape.spec.height,
            width: tape.spec.width,
            refusal,
            banded,
        }
    }

    /// How many ops run in more than one band (0 when every map fits one binding).
    pub fn banded_ops(&self) -> usize {
        self.banded
    }

    /// The GPU memory of every resource, by class, and the largest buffer.
    pub fn memory(&self) -> MemoryReport {
        let mut report = MemoryReport::default();
        for r in &self.resources {
            let bytes = r.bytes();
            match r.class {
                MemoryClass::Weights => report.weights += bytes,
                MemoryClass::Activations => report.activations += bytes,
                MemoryClass::Gradients => report.gradients += bytes,
                MemoryClass::Targets => report.targets += bytes,
                MemoryClass::Other => report.other += bytes,
            }
            if let Shape::Buffer(bytes) = r.shape {
                report.largest_buffer = report.largest_buffer.max(bytes);
            }
        }
        report
    }

    /// Refuses, before anything is allocated (or any image resized to its size), a plan that
    /// cannot run on the adapter: a tensor larger than its largest buffer, memory beyond what it
    /// has (where known), or a map that cannot be banded. Returns its memory report.
    pub fn check_fits(&self) -> Result<MemoryReport> {
        self.check_fits_with(0)
    }

    /// [`Plan::check_fits`] for the plan and `extra` bytes of the optimiser's buffers.
    pub fn check_fits_with(&self, extra: u64) -> Result<MemoryReport> {
        let mut memory = self.memory();
        memory.other += extra;
        let caps = &self.capabilities;
        let mib = |bytes: u64| bytes >> 20;
        let message = if memory.largest_buffer > caps.buffer_limit {
            Some(format!(
                "needs a buffer of {} MiB, over this adapter's {} MiB buffer size limit",
                mib(memory.largest_buffer),
                mib(caps.buffer_limit)
            ))
        } else if let Some(limit) = caps.memory_limit.filter(|&m| memory.total() > m) {
            Some(format!(
                "needs {} MiB of GPU memory, over the {} MiB this adapter has",
                mib(memory.total()),
                mib(limit)
            ))
        } else {
            self.refusal.clone()
        };
        match message {
            Some(message) => Err(Error::ImageSize {
                height: self.height,
                width: self.width,
                message: format!("{message}; use a smaller size"),
            }),
            None => Ok(memory),
        }
    }

    /// (height, width) of the image.
    pub fn size(&self) -> (usize, usize) {
        (self.height, self.width)
    }
}
