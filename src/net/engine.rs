//! The GPU engine: one tape's buffers, pipelines and bind groups, made once per image size, and
//! one iteration recorded into one command encoder whose only readback is the loss values.

use std::collections::HashMap;

use super::tape::{BackOp, KernelProfile, LossKind, MemoryReport, Op, Tape, TensorId};
use super::vgg::CONVS;
use super::weights::Vgg19Weights;
use crate::error::{Error, Result};
use crate::gpu::library::submit;
use crate::gpu::{submit_commands, Command, Gpu, KernelLibrary, Resource, Step};
use crate::ops::adam::{self, AdamParams};
use crate::ops::conv3x3::Conv3x3Params;
use crate::ops::image::{self, ImageParams};
use crate::ops::{avgpool2, conv3x3, conv3x3_subgroup, gram, gram_subgroup, maxpool2, reduce, relu, sqdiff, tv};

/// Which conv kernels this device runs: texture operands where the subgroup texture kernels exist
/// (unless `NST_NO_TEXTURES` is set), else storage.
pub fn kernel_profile(gpu: &Gpu, library: &KernelLibrary) -> KernelProfile {
    let no_textures = std::env::var("NST_NO_TEXTURES").is_ok_and(|v| !v.is_empty() && v != "0");
    let textures = conv3x3_subgroup::texture_kernels_built(library);
    KernelProfile {
        texture_conv: (textures && !no_textures).then_some(gpu.limits.max_texture_dimension_2d),
        pointwise_gram: library.has::<conv3x3_subgroup::Pointwise32>() && library.has::<gram::Symmetrize>(),
        subgroup_gram: gram_subgroup::built(gpu, library),
    }
}

/// The map texture of `size`, shared by every conv input and Gram forward of that shape: made (and
/// its bytes added to `allocated`) the first time.
fn map_texture<'t>(
    gpu: &Gpu,
    textures: &'t mut HashMap<(u32, u32), wgpu::Texture>,
    size: (u32, u32),
    allocated: &mut u64,
) -> &'t wgpu::Texture {
    textures.entry(size).or_insert_with(|| {
        *allocated += 16 * size.0 as u64 * size.1 as u64;
        conv3x3_subgroup::create_texture(gpu, &format!("map texture {}x{}", size.0, size.1), size)
    })
}

/// A conv pass (a layer's forward, or its input gradient as a forward conv with flipped, transposed
/// weights) with the fastest kernel this device has for its shape: the subgroup kernel reading
/// textures, or reading buffers, or the portable kernel. Creates the pass's weights (as a texture or
/// a buffer) and, for texture operands, copies the input into the shared texture of its shape
/// first. Adds the bytes it allocates to `allocated`.
#[allow(clippy::too_many_arguments)]
fn conv_pass(
    gpu: &Gpu,
    library: &KernelLibrary,
    profile: &KernelProfile,
    label: &str,
    params: &Conv3x3Params,
    weights: &[f32],
    [bias, input, output]: [&wgpu::Buffer; 3],
    input_textures: &mut HashMap<(u32, u32), wgpu::Texture>,
    allocated: &mut u64,
) -> Result<Vec<Command>> {
    *allocated += 4 * weights.len() as u64;
    if profile.textured(params) {
        let wt = conv3x3_subgroup::weights_texture(gpu, label, params, weights);
        let it = map_texture(gpu, input_textures, conv3x3_subgroup::input_texture_size(params), allocated);
        let resources =
            [Resource::Texture(&wt), Resource::Buffer(bias), Resource::Texture(it), Resource::Buffer(output)];
        let (step, _) = conv3x3_subgroup::bind_textured(gpu, library, params, &resources)?;
        let copy = conv3x3_subgroup::map_copy(input, it, params.height, params.width, params.in_channels);
        return Ok(vec![copy, Command::Dispatch(step)]);
    }
    let wb = gpu.buffer_from(label, bytemuck::cast_slice(weights));
    let buffers = [&wb, bias, input, output];
    let fast = library.has::<conv3x3_subgroup::Forward16>();
    let step = match conv3x3_subgroup::tile_for(params) {
        Some(16) if fast => Step::new::<conv3x3_subgroup::Forward16>(gpu, library, params, &buffers)?,
        Some(4) if fast => Step::new::<conv3x3_subgroup::Forward4>(gpu, library, params, &buffers)?,
        _ => Step::new::<conv3x3::Forward>(gpu, library, params, &buffers)?,
    };
    Ok(vec![Command::Dispatch(step)])
}

/// A tape on the GPU.
pub struct Engine<'g> {
    gpu: &'g Gpu,
    pub tape: Tape,
    of_tensor: Vec<usize>,
    buffers: Vec<wgpu::Buffer>,
    losses: wgpu::Buffer,
    rgba: wgpu::Buffer,
    /// Copies of the image into two backups, taken before Adam steps alternately (the last image
    /// whose loss was finite survives a step that produces NaN), and back; recorded once.
    backup: [Command; 2],
    restore: [Command; 2],
    forward: Vec<Command>,
    backward: Vec<Command>,
    to_network: Step,
    from_network: Step,
    adam: Command,
    /// Adam's moments.
    moments: [wgpu::Buffer; 2],
    /// d loss / d image (a zero buffer when no loss reaches the image).
    grad: wgpu::Buffer,
    profile: KernelProfile,
    allocated: u64,
}

impl<'g> Engine<'g> {
    /// Allocates every buffer and builds every step for `tape`. Refuses, before allocating, a size
    /// whose largest buffer exceeds the adapter's storage binding limit.
    pub fn new(gpu: &'g Gpu, library: &KernelLibrary, weights: &Vgg19Weights, tape: Tape) -> Result<Engine<'g>> {
        let profile = kernel_profile(gpu, library);
        let memory = Self::check_fits(gpu, library, &tape)?;
        // Allocation failures (out of memory) surface through the error scope as a typed error.
        let (height, width) = (tape.spec.height, tape.spec.width);
        let during = format!("allocating {} MiB for {width}x{height}", memory.total() >> 20);
        match gpu.scoped(&during, || Self::build(gpu, library, weights, tape, profile)) {
            Ok(built) => built,
            Err(Error::Gpu { message, .. }) => Err(Error::ImageSize {
                height,
                width,
                message: format!(
                    "the adapter could not allocate the {} MiB this size needs ({message}); use a smaller size",
                    memory.total() >> 20
                ),
            }),
            Err(e) => Err(e),
        }
    }

    fn build(
        gpu: &'g Gpu,
        library: &KernelLibrary,
        weights: &Vgg19Weights,
        tape: Tape,
        profile: KernelProfile,
    ) -> Result<Engine<'g>> {
        let (of_tensor, lens) = tape.buffer_plan();
        let buffers: Vec<wgpu::Buffer> = lens
            .iter()
            .enumerate()
            .map(|(b, &len)| {
                let names: Vec<&str> = tape
                    .tensors
                    .iter()
                    .zip(&of_tensor)
                    .filter(|(_, &tb)| tb == b)
                    .map(|(t, _)| t.name.as_str())
                    .take(3)
                    .collect();
                gpu.buffer_zeroed(&names.join(", "), 4 * len.max(1) as u64)
            })
            .collect();
        let buf = |t: TensorId| &buffers[of_tensor[t]];

        let mut allocated: u64 = buffers.iter().map(|b| b.size()).sum();
        let mut input_textures = HashMap::new();
        // Weights as the tape runs them (padded, with the average-pool gain), and the biases (the
        // gradient conv's is zero).
        let conv_weights: HashMap<usize, (Vec<f32>, wgpu::Buffer, wgpu::Buffer)> = tape
            .conv_params()
            .map(|(conv, p)| {
                let c = &weights.convs[conv];
                let bias = gpu.buffer_from(&format!("{} bias", c.name), bytemuck::cast_slice(&c.bias));
                let zero = gpu.buffer_zeroed(&format!("{} zero bias", c.name), 4 * p.in_channels as u64);
                allocated += bias.size() + zero.size();
                (conv, (tape.conv_weights(weights, conv, p.in_channels as usize), bias, zero))
            })
            .collect();
        let partials = gpu.buffer_zeroed("loss partials", 4 * tape.partials_len() as u64);
        let losses = gpu.buffer_zeroed("losses", 4 * tape.losses.len().max(1) as u64);

        // One transposed chunk and one zero bias, shared by every Gram forward run as a pointwise conv.
        let gram_scratch = tape.gram_forward_scratch(&profile).map(|(scratch, channels)| {
            let t = gpu.buffer_zeroed("gram transposed features", 4 * scratch as u64);
            let zero = gpu.buffer_zeroed("gram zero bias", 4 * channels as u64);
            allocated += t.size() + zero.size();
            (t, zero)
        });

        // One buffer of partial Gram matrices, shared by every fast Gram forward.
        let gram_partials = tape.gram_partials_len(&profile).map(|len| {
            allocated += 4 * len as u64;
            gpu.buffer_zeroed("gram partials", 4 * len as u64)
        });

        let mut forward: Vec<Command> = Vec::new();
        for op in &tape.forward {
            let mut step = |s: Result<Step>| s.map(|s| forward.push(Command::Dispatch(s)));
            match *op {
                Op::Conv { conv, input, output, params } => {
                    let (w, bias, _) = &conv_weights[&conv];
                    let label = format!("{} weights", CONVS[conv].name);
                    let buffers = [bias, buf(input), buf(output)];
                    let pass = conv_pass(
                        gpu,
                        library,
                        &profile,
                        &label,
                        &params,
                        w,
                        buffers,
                        &mut input_textures,
                        &mut allocated,
                    )?;
                    forward.extend(pass);
                }
                Op::MaxPool { input, output, params } if maxpool2::vec4_suits(&params) => {
                    step(Step::new::<maxpool2::Forward4>(gpu, library, &params, &[buf(input), buf(output)]))?
                }
                Op::MaxPool { input, output, params } => {
                    step(Step::new::<maxpool2::Forward>(gpu, library, &params, &[buf(input), buf(output)]))?
                }
                Op::AvgPool { input, output, params } => {
                    step(Step::new::<avgpool2::Forward>(gpu, library, &params, &[buf(input), buf(output)]))?
                }
                Op::Gram { input, output, .. } if profile.gram_slices(tape.tensors[input].shape).is_some() => {
                    let p = profile.gram_slices(tape.tensors[input].shape).expect("checked by the guard");
                    let texture = map_texture(gpu, &mut input_textures, p.texture_size(), &mut allocated);
                    let partials = gram_partials.as_ref().expect("partials made for every fast Gram");
                    let commands =
                        gram_subgroup::forward_commands(gpu, library, &p, buf(input), texture, partials, buf(output))?;
                    forward.extend(commands);
                }
                Op::Gram { input, output, params } if profile.gram_as_pointwise(&params) => {
                    let (scratch, zero) = gram_scratch.as_ref().expect("scratch made for every pointwise Gram");
                    let buffers = [buf(input), buf(output), scratch, zero];
                    let steps =
                        gram::pointwise_forward_steps(gpu, library, &params, gram::MAX_CHUNK_POSITIONS, buffers)?;
                    forward.extend(steps.into_iter().map(Command::Dispatch));
                }
                Op::Gram { input, output, params } if gram::ForwardBlocked::suits(&params) => {
                    step(Step::new::<gram::ForwardBlocked>(gpu, library, &params, &[buf(input), buf(output)]))?
                }
                Op::Gram { input, output, params } => {
                    step(Step::new::<gram::Forward>(gpu, library, &params, &[buf(input), buf(output)]))?
                }
                Op::SqDiff { input, target, slot, params } => {
                    let first = [buf(input), buf(target), &partials];
                    step(Step::new::<sqdiff::Forward>(gpu, library, &params, &first))?;
                    let sum = reduce::ReduceParams::new(params.partials(), slot);
                    step(Step::new::<reduce::Sum>(gpu, library, &sum, &[&partials, &losses]))?;
                }
                Op::Tv { input, slot, params } => {
                    step(Step::new::<tv::Forward>(gpu, library, &params, &[buf(input), &partials]))?;
                    let sum = reduce::ReduceParams::new(params.partials(), slot);
                    step(Step::new::<reduce::Sum>(gpu, library, &sum, &[&partials, &losses]))?;
                }
            }
        }

        let mut backward: Vec<Command> = Vec::new();
        for op in &tape.backward {
            let step = match *op {
                BackOp::SqDiff { input, target, grad, params } => {
                    Step::new::<sqdiff::Backward>(gpu, library, &params, &[buf(input), buf(target), buf(grad)])?
                }
                BackOp::Tv { input, grad, params } => {
                    Step::new::<tv::Backward>(gpu, library, &params, &[buf(input), buf(grad)])?
                }
                BackOp::Gram { features, grad_gram, grad_features, params } if profile.gram_as_pointwise(&params) => {
                    // dF = F x sym with sym = scale * (dG + dGᵀ): a pointwise conv.
                    let c = params.channels as usize;
                    let sym = gpu.buffer_zeroed("gram symmetrized gradient", 4 * params.gram_len() as u64);
                    let zero = gpu.buffer_zeroed("gram zero bias", 4 * c as u64);
                    allocated += sym.size() + zero.size();
                    let first = Step::new::<gram::Symmetrize>(gpu, library, &params, &[buf(grad_gram), &sym])?;
                    backward.push(Command::Dispatch(first));
                    let (positions, h) = (params.positions as usize, tape.tensors[features].shape.0);
                    let conv = Conv3x3Params::new(h, positions / h, c, c).with_accumulate(params.accumulate != 0);
                    let buffers = [&sym, &zero, buf(features), buf(grad_features)];
                    Step::new::<conv3x3_subgroup::Pointwise32>(gpu, library, &conv, &buffers)?
                }
                BackOp::Gram { features, grad_gram, grad_features, params } => {
                    let buffers = [buf(features), buf(grad_gram), buf(grad_features)];
                    Step::new::<gram::Backward>(gpu, library, &params, &buffers)?
                }
                BackOp::MaxPool { input, grad_output, grad_input, params } if maxpool2::vec4_suits(&params) => {
                    let buffers = [buf(input), buf(grad_output), buf(grad_input)];
                    Step::new::<maxpool2::Backward4>(gpu, library, &params, &buffers)?
                }
                BackOp::MaxPool { input, grad_output, grad_input, params } => {
                    let buffers = [buf(input), buf(grad_output), buf(grad_input)];
                    Step::new::<maxpool2::Backward>(gpu, library, &params, &buffers)?
                }
                BackOp::AvgPool { grad_output, grad_input, params } => {
                    Step::new::<avgpool2::Backward>(gpu, library, &params, &[buf(grad_output), buf(grad_input)])?
                }
                BackOp::Relu { output, grad_output, masked, params } if relu::Backward4::suits(&params) => {
                    Step::new::<relu::Backward4>(gpu, library, &params, &[buf(output), buf(grad_output), buf(masked)])?
                }
                BackOp::Relu { output, grad_output, masked, params } => {
                    Step::new::<relu::Backward>(gpu, library, &params, &[buf(output), buf(grad_output), buf(masked)])?
                }
                BackOp::ConvInput { conv, masked, grad_input, params } => {
                    // The input gradient is a forward conv with flipped, transposed weights.
                    let (w, _, zero) = &conv_weights[&conv];
                    let (cin, cout) = (params.in_channels as usize, params.out_channels as usize);
                    let transposed = conv3x3_subgroup::transpose_weights(cin, cout, w);
                    let gradient = params.input_gradient();
                    let label = format!("{} weights transposed", CONVS[conv].name);
                    let pass = conv_pass(
                        gpu,
                        library,
                        &profile,
                        &label,
                        &gradient,
                        &transposed,
                        [zero, buf(masked), buf(grad_input)],
                        &mut input_textures,
                        &mut allocated,
                    )?;
                    backward.extend(pass);
                    continue;
                }
            };
            backward.push(Command::Dispatch(step));
        }

        let pixels = tape.spec.height * tape.spec.width;
        let rgba = gpu.buffer_zeroed("image rgba", 4 * pixels as u64);
        let image_params = ImageParams::new(pixels);
        let to_network = Step::new::<image::ToNetwork>(gpu, library, &image_params, &[&rgba, buf(tape.image)])?;
        let from_network = Step::new::<image::FromNetwork>(gpu, library, &image_params, &[buf(tape.image), &rgba])?;

        let image_len = tape.tensors[tape.image].len;
        let backups = [0, 1].map(|i| gpu.buffer_zeroed(&format!("image backup {i}"), 4 * image_len as u64));
        allocated += backups.iter().map(|b| b.size()).sum::<u64>();
        let image = buf(tape.image);
        let backup = backups.clone().map(|to| Command::CopyBuffer { from: image.clone(), to });
        let restore = backups.map(|from| Command::CopyBuffer { from, to: image.clone() });
        let m = gpu.buffer_zeroed("adam m", 4 * image_len as u64);
        let v = gpu.buffer_zeroed("adam v", 4 * image_len as u64);
        // The image gradient exists when any loss reaches the image; otherwise Adam reads a zero buffer.
        allocated += partials.size() + losses.size() + rgba.size() + m.size() + v.size();
        let grad_buffer = match tape.image_grad() {
            Some(g) => buf(g).clone(),
            None => {
                let zero = gpu.buffer_zeroed("zero gradient", 4 * image_len as u64);
                allocated += zero.size();
                zero
            }
        };
        let adam_params = AdamParams::at_step(image_len, &adam::AdamConfig::default(), 1);
        let adam = Command::Dispatch(Step::new::<adam::Step>(
            gpu,
            library,
            &adam_params,
            &[&grad_buffer, buf(tape.image), &m, &v],
        )?);
        let moments = [m, v];

        Ok(Engine {
            gpu,
            tape,
            of_tensor,
            buffers,
            losses,
            rgba,
            backup,
            restore,
            forward,
            backward,
            to_network,
            from_network,
            adam,
            moments,
            grad: grad_buffer,
            profile,
            allocated,
        })
    }

    /// Refuses, before anything is allocated (or any image resized to it), a tape whose largest
    /// buffer exceeds the adapter's storage binding limit; returns its memory report.
    pub fn check_fits(gpu: &Gpu, library: &KernelLibrary, tape: &Tape) -> Result<MemoryReport> {
        let memory = tape.memory_on(&kernel_profile(gpu, library));
        let limit = gpu.limits.max_storage_buffer_binding_size;
        if memory.largest_buffer > limit {
            return Err(Error::ImageSize {
                height: tape.spec.height,
                width: tape.spec.width,
                message: format!(
                    "needs a buffer of {} MiB, over this adapter's {} MiB per binding; use a smaller size",
                    memory.largest_buffer >> 20,
                    limit >> 20
                ),
            });
        }
        Ok(memory)
    }

    /// The conv kernels this engine runs.
    pub fn profile(&self) -> KernelProfile {
        self.profile
    }

    /// Bytes of every buffer this engine created; [`Tape::memory_on`] with this engine's
    /// [`Engine::profile`] predicts it.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated
    }

    fn buffer(&self, t: TensorId) -> &wgpu::Buffer {
        &self.buffers[self.of_tensor[t]]
    }

    /// Uploads an RGBA8 image (packed, red in the low byte) of the tape's size and converts it to
    /// the network's input convention in the image tensor.
    pub fn set_image_rgba(&self, rgba: &[u32]) -> Result<()> {
        self.check_pixels(rgba.len())?;
        self.gpu.queue.write_buffer(&self.rgba, 0, bytemuck::cast_slice(rgba));
        submit(self.gpu, "image to network", &[&self.to_network])
    }

    /// Writes the image tensor directly, in the network's convention (HWC, BGR minus the mean).
    pub fn set_image(&self, net: &[f32]) -> Result<()> {
        self.check_pixels(net.len() / crate::ops::image::NETWORK_CHANNELS)?;
        self.gpu.queue.write_buffer(self.buffer(self.tape.image), 0, bytemuck::cast_slice(net));
        Ok(())
    }

    /// The image as RGBA8, converted on the GPU; the only image readback of a render.
    pub fn image_rgba(&self) -> Result<Vec<u32>> {
        submit(self.gpu, "image from network", &[&self.from_network])?;
        let bytes = self.gpu.read_buffers(&[&self.rgba])?;
        Ok(bytemuck::cast_slice(&bytes[0]).to_vec())
    }

    fn check_pixels(&self, pixels: usize) -> Result<()> {
        let (h, w) = (self.tape.spec.height, self.tape.spec.width);
        if pixels != h * w {
            return Err(Error::ImageSize { height: h, width: w, message: format!("got an image of {pixels} pixels") });
        }
        Ok(())
    }

    /// Runs the forward ops and loss heads on the current image and returns the losses.
    pub fn forward(&self) -> Result<Vec<f32>> {
        let commands: Vec<&Command> = self.forward.iter().collect();
        submit_commands(self.gpu, "forward", &commands)?;
        self.read_losses()
    }

    /// After a forward run, copies each `kind` loss's source into its target on the GPU.
    pub fn capture_targets(&self, kind: LossKind) -> Result<()> {
        self.gpu.scoped("capturing loss targets", || {
            let mut encoder = self
                .gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("capture targets") });
            for term in self.tape.losses.iter().filter(|t| t.kind == kind) {
                if let Some(target) = term.target {
                    let bytes = 4 * self.tape.tensors[term.source].len as u64;
                    encoder.copy_buffer_to_buffer(self.buffer(term.source), 0, self.buffer(target), 0, bytes);
                }
            }
            self.gpu.queue.submit([encoder.finish()]);
        })
    }

    /// One iteration in one command encoder: forward, losses, backward to the image, and, when
    /// `adam` is given, the Adam step. Returns the loss of each slot.
    pub fn iterate(&self, adam: Option<&AdamParams>) -> Result<Vec<f32>> {
        let mut commands: Vec<&Command> = self.forward.iter().chain(&self.backward).collect();
        if let Some(params) = adam {
            self.set_adam(params);
            commands.push(&self.adam);
        }
        submit_commands(self.gpu, "iteration", &commands)?;
        self.read_losses()
    }

    /// One iteration in one command encoder: forward, losses, backward to the image, then `tail`
    /// (an optimiser's commands). Returns the loss of each slot and the contents of `reads`, read
    /// back together.
    pub fn iterate_then(&self, tail: &[&Command], reads: &[&wgpu::Buffer]) -> Result<(Vec<f32>, Vec<Vec<u8>>)> {
        let commands: Vec<&Command> = self.forward.iter().chain(&self.backward).chain(tail.iter().copied()).collect();
        submit_commands(self.gpu, "iteration", &commands)?;
        self.read_losses_and(reads)
    }

    /// [`Engine::iterate`] with the Adam step, which first copies the image (the one whose losses
    /// it returns) into backup `slot` (0 or 1). A render alternates the slots, so that when a step's
    /// losses are not finite, the other slot holds the last image whose losses were.
    /// `tail` (the moving average's update) follows the step in the same command encoder.
    pub fn iterate_adam_then(&self, adam: &AdamParams, slot: usize, tail: &[&Command]) -> Result<Vec<f32>> {
        self.set_adam(adam);
        let mut commands: Vec<&Command> =
            self.forward.iter().chain(&self.backward).chain([&self.backup[slot], &self.adam]).collect();
        commands.extend(tail.iter().copied());
        submit_commands(self.gpu, "iteration", &commands)?;
        self.read_losses()
    }

    /// The image tensor's buffer (HWC, 4 channels, the network's convention).
    pub fn image_buffer(&self) -> &wgpu::Buffer {
        self.buffer(self.tape.image)
    }

    /// The buffer backward leaves d loss / d image in (zero when no loss reaches the image).
    pub fn grad_buffer(&self) -> &wgpu::Buffer {
        &self.grad
    }

    /// The RGBA8 buffer [`Engine::image_rgba`] converts into, and the GPU's image conversion reads.
    pub fn rgba_buffer(&self) -> &wgpu::Buffer {
        &self.rgba
    }

    /// Elements of the image tensor (height x width x 4).
    pub fn image_len(&self) -> usize {
        self.tape.tensors[self.tape.image].len
    }

    /// Reads the RGBA8 buffer back (after a conversion into it).
    pub fn read_rgba(&self) -> Result<Vec<u32>> {
        let bytes = self.gpu.read_buffers(&[&self.rgba])?;
        Ok(bytemuck::cast_slice(&bytes[0]).to_vec())
    }

    /// Adam's first and second moments.
    pub fn adam_moments(&self) -> Result<[Vec<f32>; 2]> {
        let bytes = self.gpu.read_buffers(&[&self.moments[0], &self.moments[1]])?;
        Ok([0, 1].map(|i| bytemuck::cast_slice(&bytes[i]).to_vec()))
    }

    /// Writes Adam's moments (each of the image's length).
    pub fn set_adam_moments(&self, m: &[f32], v: &[f32]) -> Result<()> {
        let len = self.image_len();
        if m.len() != len || v.len() != len {
            return Err(Error::Shape {
                kernel: "adam.step".into(),
                message: format!("moments of {} and {} elements for an image of {len}", m.len(), v.len()),
            });
        }
        self.gpu.queue.write_buffer(&self.moments[0], 0, bytemuck::cast_slice(m));
        self.gpu.queue.write_buffer(&self.moments[1], 0, bytemuck::cast_slice(v));
        Ok(())
    }

    /// Copies backup `slot` back into the image.
    pub fn restore_backup(&self, slot: usize) -> Result<()> {
        submit_commands(self.gpu, "restoring the image", &[&self.restore[slot]])
    }

    /// Fills the image with NaN: lets tests drive a render into the path that handles a
    /// non-finite loss.
    pub fn poison_image(&self) {
        let nan = vec![f32::NAN; self.tape.tensors[self.tape.image].len];
        self.gpu.queue.write_buffer(self.buffer(self.tape.image), 0, bytemuck::cast_slice(&nan));
    }

    /// After a forward run, the value each `kind` loss compares with its target (a content
    /// layer's features, a style layer's Gram matrix), in the order of [`Tape::losses`].
    pub fn loss_sources(&self, kind: LossKind) -> Result<Vec<Vec<f32>>> {
        let terms: Vec<_> = self.tape.losses.iter().filter(|t| t.kind == kind).collect();
        terms.iter().map(|t| self.read(t.source)).collect()
    }

    /// The targets of the `kind` losses, in the order of [`Tape::losses`].
    pub fn targets(&self, kind: LossKind) -> Result<Vec<Vec<f32>>> {
        let terms: Vec<_> = self.tape.losses.iter().filter(|t| t.kind == kind).filter_map(|t| t.target).collect();
        terms.iter().map(|&t| self.read(t)).collect()
    }

    /// Writes the targets of the `kind` losses, in the order of [`Tape::losses`]; each must have
    /// its target's length.
    pub fn set_targets(&self, kind: LossKind, values: &[Vec<f32>]) -> Result<()> {
        let targets: Vec<TensorId> =
            self.tape.losses.iter().filter(|t| t.kind == kind).filter_map(|t| t.target).collect();
        if targets.len() != values.len() {
            return Err(Error::Shape {
                kernel: "targets".into(),
                message: format!("{} targets of this kind, got {} values", targets.len(), values.len()),
            });
        }
        for (&t, v) in targets.iter().zip(values) {
            let info = &self.tape.tensors[t];
            if info.len != v.len() {
                return Err(Error::Shape {
                    kernel: "targets".into(),
                    message: format!("{} has {} elements, got {}", info.name, info.len, v.len()),
                });
            }
            self.gpu.queue.write_buffer(self.buffer(t), 0, bytemuck::cast_slice(v));
        }
        Ok(())
    }

    /// Every command of one iteration (with the Adam step), in order, each submitted alone and
    /// timed with a device wait: where an iteration's time goes. Returns (command name, seconds).
    pub fn profile_iteration(&self, adam: &AdamParams) -> Result<Vec<(String, f64)>> {
        self.set_adam(adam);
        let mut out = Vec::new();
        for command in self.forward.iter().chain(&self.backward).chain([&self.adam]) {
            let start = std::time::Instant::now();
            submit_commands(self.gpu, command.name(), &[command])?;
            self.gpu.wait("profiling an iteration")?;
            out.push((command.name().to_string(), start.elapsed().as_secs_f64()));
        }
        Ok(out)
    }

    fn set_adam(&self, params: &AdamParams) {
        if let Command::Dispatch(step) = &self.adam {
            step.write_params(self.gpu, params);
        }
    }

    fn read_losses(&self) -> Result<Vec<f32>> {
        Ok(self.read_losses_and(&[])?.0)
    }

    fn read_losses_and(&self, reads: &[&wgpu::Buffer]) -> Result<(Vec<f32>, Vec<Vec<u8>>)> {
        let buffers: Vec<&wgpu::Buffer> = std::iter::once(&self.losses).chain(reads.iter().copied()).collect();
        let mut bytes = self.gpu.read_buffers(&buffers)?;
        let rest = bytes.split_off(1);
        let all: &[f32] = bytemuck::cast_slice(&bytes[0]);
        Ok((all[..self.tape.losses.len()].to_vec(), rest))
    }

    /// Reads a tensor back (tests and diagnostics; an iteration never does this).
    pub fn read(&self, t: TensorId) -> Result<Vec<f32>> {
        let bytes = self.gpu.read_buffers(&[self.buffer(t)])?;
        let all: &[f32] = bytemuck::cast_slice(&bytes[0]);
        Ok(all[..self.tape.tensors[t].len].to_vec())
    }
}
