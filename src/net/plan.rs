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
use crate::gpu::{Gpu, KernelLibrary, KernelRef, Planned};
use crate::ops::conv3x3::{self, Conv3x3Params};
use crate::ops::gram::{self, GramParams};
use crate::ops::gram_subgroup::{self, GramSliceParams};
use crate::ops::image::{self, ImageParams, NETWORK_CHANNELS};
use crate::ops::{avgpool2, conv3x3_subgroup, maxpool2, reduce, relu, sqdiff, tv};

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
    /// The adapter's storage binding limit in bytes: every buffer must fit it.
    pub binding_limit: u64,
}

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
        }
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
        }
    }

    /// Whether the Gram backward with `params` runs as symmetrize + pointwise conv (and the
    /// forward, where the sliced forward does not run, as transposed chunks + pointwise conv +
    /// scale).
    pub fn gram_as_pointwise(&self, params: &GramParams) -> bool {
        self.pointwise_gram && params.channels.is_multiple_of(32)
    }

    /// The slicing of the fast Gram forward for a feature map of `(height, width, channels)`, where
    /// this device runs it for that map: channels a multiple of 16, a texture that fits the adapter
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
    pub forward: Vec<Planned<ResourceId>>,
    /// The backward ops, down to d loss / d image.
    pub backward: Vec<Planned<ResourceId>>,
    /// RGBA8 image (packed) -> the image tensor in the network's convention, and back.
    pub to_network: Planned<ResourceId>,
    pub from_network: Planned<ResourceId>,
    pub losses: ResourceId,
    pub rgba: ResourceId,
    /// d loss / d image, or a zero buffer when no loss reaches the image.
    pub grad: ResourceId,
    height: usize,
    width: usize,
}

/// Builds the resource list; textures of one shape (conv inputs and Gram features of one map) are
/// shared.
struct Resources {
    list: Vec<ResourcePlan>,
    map_textures: HashMap<(u32, u32), ResourceId>,
}

impl Resources {
    fn add(&mut self, label: impl Into<String>, shape: Shape, class: MemoryClass, fill: Fill) -> ResourceId {
        self.list.push(ResourcePlan { label: label.into(), shape, class, fill });
        self.list.len() - 1
    }

    fn zeroed(&mut self, label: impl Into<String>, floats: usize, class: MemoryClass) -> ResourceId {
        self.add(label, Shape::Buffer(4 * floats.max(1) as u64), class, Fill::Zero)
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

/// A conv pass (a layer's forward, or its input gradient as a forward conv with flipped,
/// transposed weights) with the fastest kernel the device has for its shape: the subgroup kernel
/// reading textures (after copying its input into the shared texture of its shape), or reading
/// buffers, or the portable kernel. Adds the pass's weights to `r`.
fn conv_pass(
    r: &mut Resources,
    caps: &Capabilities,
    conv: usize,
    params: &Conv3x3Params,
    transposed: bool,
    [bias, input, output]: [ResourceId; 3],
) -> Vec<Planned<ResourceId>> {
    let name = CONVS[conv].name;
    let label = if transposed { format!("{name} weights transposed") } else { format!("{name} weights") };
    // The weights as the forward conv holds them: [out][3][3][in] of the layer, not of the pass.
    let (in_channels, out_channels) = if transposed {
        (params.out_channels as usize, params.in_channels as usize)
    } else {
        (params.in_channels as usize, params.out_channels as usize)
    };
    let bytes = 4 * params.weights_len() as u64;
    if caps.textured(params) {
        let (w, h) = conv3x3_subgroup::weights_texture_size(params);
        let fill = Fill::ConvWeights { conv, in_channels, out_channels, transposed, texture: Some(*params) };
        debug_assert_eq!(16 * w as u64 * h as u64, bytes);
        let weights = r.add(label, Shape::Texture(w, h), MemoryClass::Weights, fill);
        let texture = r.map_texture(conv3x3_subgroup::input_texture_size(params));
        return conv3x3_subgroup::textured_plan(params, [weights, bias, input, texture, output]);
    }
    let fill = Fill::ConvWeights { conv, in_channels, out_channels, transposed, texture: None };
    let weights = r.add(label, Shape::Buffer(bytes), MemoryClass::Weights, fill);
    let kernel = caps.storage_conv(params);
    vec![Planned::Dispatch {
        kernel,
        params: bytemuck::bytes_of(params).to_vec(),
        operands: vec![weights, bias, input, output],
    }]
}

impl Plan {
    /// Decides every resource and command of `tape` on a device with `caps`.
    pub fn new(tape: &Tape, caps: &Capabilities) -> Plan {
        let mut r = Resources { list: Vec::new(), map_textures: HashMap::new() };

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
        let buf = |t: TensorId| tensors[t];

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
                    Some((gram::pointwise_scratch_len(params, gram::MAX_CHUNK_POSITIONS), params.channels as usize))
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
            match *op {
                Op::Conv { conv, input, output, params } => {
                    let bias = biases[&conv].0;
                    forward.extend(conv_pass(&mut r, caps, conv, &params, false, [bias, buf(input), buf(output)]));
                }
                Op::MaxPool { input, output, params } if maxpool2::vec4_suits(&params) => {
                    forward.push(Planned::dispatch::<maxpool2::Forward4>(&params, vec![buf(input), buf(output)]))
                }
                Op::MaxPool { input, output, params } => {
                    forward.push(Planned::dispatch::<maxpool2::Forward>(&params, vec![buf(input), buf(output)]))
                }
                Op::AvgPool { input, output, params } => {
                    forward.push(Planned::dispatch::<avgpool2::Forward>(&params, vec![buf(input), buf(output)]))
                }
                Op::Gram { input, output, .. } if sliced(input).is_some() => {
                    let p = sliced(input).expect("checked by the guard");
                    let texture = r.map_texture(p.texture_size());
                    let partials = gram_partials.expect("partials planned for every sliced Gram");
                    forward.extend(gram_subgroup::forward_plan(&p, [buf(input), texture, partials, buf(output)]));
                }
                Op::Gram { input, output, params } if caps.gram_as_pointwise(&params) => {
                    let (scratch, zero) = pointwise_scratch.expect("scratch planned for every pointwise Gram");
                    let operands = [buf(input), buf(output), scratch, zero];
                    forward.extend(gram::pointwise_forward_plan(&params, gram::MAX_CHUNK_POSITIONS, operands));
                }
                Op::Gram { input, output, params } if gram::ForwardBlocked::suits(&params) => {
                    forward.push(Planned::dispatch::<gram::ForwardBlocked>(&params, vec![buf(input), buf(output)]))
                }
                Op::Gram { input, output, params } => {
                    forward.push(Planned::dispatch::<gram::Forward>(&params, vec![buf(input), buf(output)]))
                }
                Op::SqDiff { input, target, slot, params } => {
                    let operands = vec![buf(input), buf(target), partials];
                    forward.push(Planned::dispatch::<sqdiff::Forward>(&params, operands));
                    let sum = reduce::ReduceParams::new(params.partials(), slot);
                    forward.push(Planned::dispatch::<reduce::Sum>(&sum, vec![partials, losses]));
                }
                Op::Tv { input, slot, params } => {
                    forward.push(Planned::dispatch::<tv::Forward>(&params, vec![buf(input), partials]));
                    let sum = reduce::ReduceParams::new(params.partials(), slot);
                    forward.push(Planned::dispatch::<reduce::Sum>(&sum, vec![partials, losses]));
                }
            }
        }

        let mut backward = Vec::new();
        for op in &tape.backward {
            match *op {
                BackOp::SqDiff { input, target, grad, params } => {
                    let operands = vec![buf(input), buf(target), buf(grad)];
                    backward.push(Planned::dispatch::<sqdiff::Backward>(&params, operands));
                }
                BackOp::Tv { input, grad, params } => {
                    backward.push(Planned::dispatch::<tv::Backward>(&params, vec![buf(input), buf(grad)]));
                }
                BackOp::Gram { features, grad_gram, grad_features, params } if caps.gram_as_pointwise(&params) => {
                    // dF = F x sym with sym = scale * (dG + dGᵀ): a pointwise conv.
                    let c = params.channels as usize;
                    let sym = r.zeroed("gram symmetrized gradient", params.gram_len(), MemoryClass::Other);
                    let zero = r.zeroed("gram zero bias", c, MemoryClass::Other);
                    backward.push(Planned::dispatch::<gram::Symmetrize>(&params, vec![buf(grad_gram), sym]));
                    let (positions, h) = (params.positions as usize, tape.tensors[features].shape.0);
                    let conv = Conv3x3Params::new(h, positions / h, c, c).with_accumulate(params.accumulate != 0);
                    let operands = vec![sym, zero, buf(features), buf(grad_features)];
                    backward.push(Planned::dispatch::<conv3x3_subgroup::Pointwise32>(&conv, operands));
                }
                BackOp::Gram { features, grad_gram, grad_features, params } => {
                    let operands = vec![buf(features), buf(grad_gram), buf(grad_features)];
                    backward.push(Planned::dispatch::<gram::Backward>(&params, operands));
                }
                BackOp::MaxPool { input, grad_output, grad_input, params } => {
                    let operands = vec![buf(input), buf(grad_output), buf(grad_input)];
                    backward.push(if maxpool2::vec4_suits(&params) {
                        Planned::dispatch::<maxpool2::Backward4>(&params, operands)
                    } else {
                        Planned::dispatch::<maxpool2::Backward>(&params, operands)
                    });
                }
                BackOp::AvgPool { grad_output, grad_input, params } => {
                    let operands = vec![buf(grad_output), buf(grad_input)];
                    backward.push(Planned::dispatch::<avgpool2::Backward>(&params, operands));
                }
                BackOp::Relu { output, grad_output, masked, params } => {
                    let operands = vec![buf(output), buf(grad_output), buf(masked)];
                    backward.push(if relu::Backward4::suits(&params) {
                        Planned::dispatch::<relu::Backward4>(&params, operands)
                    } else {
                        Planned::dispatch::<relu::Backward>(&params, operands)
                    });
                }
                BackOp::ConvInput { conv, masked, grad_input, params } => {
                    // The input gradient is a forward conv with flipped, transposed weights.
                    let zero = biases[&conv].1.expect("a zero bias planned for every gradient conv");
                    let gradient = params.input_gradient();
                    backward.extend(conv_pass(
                        &mut r,
                        caps,
                        conv,
                        &gradient,
                        true,
                        [zero, buf(masked), buf(grad_input)],
                    ));
                }
            }
        }

        let pixels = tape.spec.height * tape.spec.width;
        let image_len = tape.tensors[tape.image].len;
        let rgba = r.zeroed("image rgba", pixels, MemoryClass::Other);
        let image_params = ImageParams::new(pixels);
        let to_network = Planned::dispatch::<image::ToNetwork>(&image_params, vec![rgba, buf(tape.image)]);
        let from_network = Planned::dispatch::<image::FromNetwork>(&image_params, vec![buf(tape.image), rgba]);
        // The optimiser reads a zero gradient where no loss reaches the image.
        let grad = match tape.image_grad() {
            Some(g) => buf(g),
            None => r.zeroed("zero gradient", image_len, MemoryClass::Other),
        };

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
        }
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

    /// Refuses a plan whose largest buffer exceeds the adapter's storage binding limit (before
    /// anything is allocated, or any image resized to its size); returns its memory report.
    pub fn check_fits(&self) -> Result<MemoryReport> {
        let memory = self.memory();
        let limit = self.capabilities.binding_limit;
        if memory.largest_buffer > limit {
            return Err(Error::ImageSize {
                height: self.height,
                width: self.width,
                message: format!(
                    "needs a buffer of {} MiB, over this adapter's {} MiB per binding; use a smaller size",
                    memory.largest_buffer >> 20,
                    limit >> 20
                ),
            });
        }
        Ok(memory)
    }

    /// (height, width) of the image.
    pub fn size(&self) -> (usize, usize) {
        (self.height, self.width)
    }
}
