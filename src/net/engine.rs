//! The GPU engine: one tape's [`Plan`] made real (its buffers and textures allocated and filled,
//! its commands bound once per image size), and one iteration recorded into one command encoder
//! whose only readback is the loss values. Every decision (which kernel, which buffer) is the
//! plan's; the engine executes it in a loop.

use super::plan::{Capabilities, Fill, Operand, Plan, Shape};
use super::tape::{LossKind, Tape, TensorId};
use super::weights::Vgg19Weights;
use crate::error::{Error, Result};
use crate::gpu::library::submit;
use crate::gpu::{bind_planned, submit_commands, Command, Gpu, KernelLibrary, Planned, Resource, Step};
use crate::ops::{conv3x3_subgroup, winograd};

/// A buffer or a texture the engine made for one resource of its plan.
enum Allocated {
    Buffer(wgpu::Buffer),
    Texture(wgpu::Texture),
}

impl Allocated {
    fn resource(&self) -> Resource<'_> {
        match self {
            Allocated::Buffer(b) => Resource::Buffer(b),
            Allocated::Texture(t) => Resource::Texture(t),
        }
    }

    fn buffer(&self) -> &wgpu::Buffer {
        match self {
            Allocated::Buffer(b) => b,
            Allocated::Texture(_) => unreachable!("the plan names a buffer here"),
        }
    }

    fn bytes(&self) -> u64 {
        match self {
            Allocated::Buffer(b) => b.size(),
            Allocated::Texture(t) => 16 * t.width() as u64 * t.height() as u64,
        }
    }
}

/// A tape on the GPU.
pub struct Engine<'g> {
    gpu: &'g Gpu,
    pub tape: Tape,
    plan: Plan,
    resources: Vec<Allocated>,
    forward: Vec<Command>,
    backward: Vec<Command>,
    to_network: Step,
    from_network: Step,
}

fn step(command: Command) -> Step {
    match command {
        Command::Dispatch(step) => step,
        _ => unreachable!("the plan names a dispatch here"),
    }
}

impl<'g> Engine<'g> {
    /// Plans `tape` for this device, then allocates every resource and binds every command.
    /// Refuses, before allocating, a size the plan cannot run ([`Plan::check_fits`]: a tensor past
    /// the adapter's largest buffer, memory past what it has, a map that cannot be banded).
    pub fn new(gpu: &'g Gpu, library: &KernelLibrary, weights: &Vgg19Weights, tape: Tape) -> Result<Engine<'g>> {
        Self::with_capabilities(gpu, library, weights, tape, &Capabilities::of(gpu, library))
    }

    /// [`Engine::new`] planned for `caps` (what [`Capabilities::of`] says of this device, or less:
    /// tests force small bands with [`Capabilities::with_band_limit`]).
    pub fn with_capabilities(
        gpu: &'g Gpu,
        library: &KernelLibrary,
        weights: &Vgg19Weights,
        tape: Tape,
        caps: &Capabilities,
    ) -> Result<Engine<'g>> {
        let plan = Plan::new(&tape, caps);
        let memory = plan.check_fits()?;
        // Allocation failures (out of memory) surface through the error scope as a typed error.
        let (height, width) = (tape.spec.height, tape.spec.width);
        let during = format!("allocating {} MiB for {width}x{height}", memory.total() >> 20);
        match gpu.scoped(&during, || Self::build(gpu, library, weights, tape, plan)) {
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
        plan: Plan,
    ) -> Result<Engine<'g>> {
        // Weights as the tape runs them (padded, with the average-pool gain), made once per conv.
        let mut conv_weights: std::collections::HashMap<(usize, usize), Vec<f32>> = Default::default();
        let resources: Vec<Allocated> = plan
            .resources
            .iter()
            .map(|r| {
                let data: Option<Vec<f32>> = match r.fill {
                    Fill::Zero => None,
                    Fill::Bias { conv } => Some(weights.convs[conv].bias.clone()),
                    Fill::ConvWeights { conv, in_channels, out_channels, transposed, texture } => {
                        let w = conv_weights
                            .entry((conv, in_channels))
                            .or_insert_with(|| tape.conv_weights(weights, conv, in_channels));
                        let w = if transposed {
                            conv3x3_subgroup::transpose_weights(in_channels, out_channels, w)
                        } else {
                            w.clone()
                        };
                        Some(match texture {
                            Some(p) => conv3x3_subgroup::weights_texture_data(&p, &w),
                            None => w,
                        })
                    }
                    Fill::WinogradWeights { conv, in_channels, out_channels, transposed, tile, texture } => {
                        let w = conv_weights
                            .entry((conv, in_channels))
                            .or_insert_with(|| tape.conv_weights(weights, conv, in_channels));
                        // The pass's own weights, [pass out][3][3][pass in].
                        let (w, cin, cout) = match transposed {
                            true => (
                                conv3x3_subgroup::transpose_weights(in_channels, out_channels, w),
                                out_channels,
                                in_channels,
                            ),
                            false => (w.clone(), in_channels, out_channels),
                        };
                        let u = winograd::transform_weights(tile, cin, cout, &w);
                        Some(match texture {
                            true => winograd::weights_texture_data(tile, cin, cout, &u),
                            false => u,
                        })
                    }
                };
                match (r.shape, data) {
                    (Shape::Buffer(bytes), None) => Allocated::Buffer(gpu.buffer_zeroed(&r.label, bytes)),
                    (Shape::Buffer(_), Some(data)) => {
                        Allocated::Buffer(gpu.buffer_from(&r.label, bytemuck::cast_slice(&data)))
                    }
                    (Shape::Texture(w, h), data) => {
                        let texture = conv3x3_subgroup::create_texture(gpu, &r.label, (w, h));
                        if let Some(data) = data {
                            conv3x3_subgroup::write_texture(gpu, &texture, &data);
                        }
                        Allocated::Texture(texture)
                    }
                }
            })
            .collect();

        let bind = |planned: &Planned<Operand>| {
            let bound = planned.clone().map(|o| match (o.range, &resources[o.id]) {
                (Some((offset, size)), Allocated::Buffer(buffer)) => Resource::Range { buffer, offset, size },
                (_, allocated) => allocated.resource(),
            });
            bind_planned(gpu, library, &bound)
        };
        let bind_all = |planned: &[Planned<Operand>]| planned.iter().map(bind).collect::<Result<Vec<Command>>>();
        let forward = bind_all(&plan.forward)?;
        let backward = bind_all(&plan.backward)?;
        let to_network = step(bind(&plan.to_network)?);
        let from_network = step(bind(&plan.from_network)?);
        Ok(Engine { gpu, tape, plan, resources, forward, backward, to_network, from_network })
    }

    /// The plan this engine executes.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Bytes of every buffer and texture this engine created, measured on them; the plan's
    /// [`Plan::memory`] is the same by construction.
    pub fn allocated_bytes(&self) -> u64 {
        self.resources.iter().map(Allocated::bytes).sum()
    }

    fn buffer(&self, t: TensorId) -> &wgpu::Buffer {
        self.resources[self.plan.tensors[t]].buffer()
    }

    /// Uploads an RGBA8 image (packed, red in the low byte) of the tape's size and converts it to
    /// the network's input convention in the image tensor.
    pub fn set_image_rgba(&self, rgba: &[u32]) -> Result<()> {
        self.check_pixels(rgba.len())?;
        self.gpu.queue.write_buffer(self.rgba_buffer(), 0, bytemuck::cast_slice(rgba));
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
        let bytes = self.gpu.read_buffers(&[self.rgba_buffer()])?;
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

    /// One iteration in one command encoder: forward, losses, backward to the image. Returns the
    /// loss of each slot.
    pub fn iterate(&self) -> Result<Vec<f32>> {
        Ok(self.iterate_then(&[], &[])?.0)
    }

    /// One iteration in one command encoder: forward, losses, backward to the image, then `tail`
    /// (an optimiser's commands). Returns the loss of each slot and the contents of `reads`, read
    /// back together.
    pub fn iterate_then(&self, tail: &[&Command], reads: &[&wgpu::Buffer]) -> Result<(Vec<f32>, Vec<Vec<u8>>)> {
        let commands: Vec<&Command> = self.forward.iter().chain(&self.backward).chain(tail.iter().copied()).collect();
        submit_commands(self.gpu, "iteration", &commands)?;
        self.read_losses_and(reads)
    }

    /// The image tensor's buffer (HWC, 4 channels, the network's convention).
    pub fn image_buffer(&self) -> &wgpu::Buffer {
        self.buffer(self.tape.image)
    }

    /// The buffer backward leaves d loss / d image in (zero when no loss reaches the image).
    pub fn grad_buffer(&self) -> &wgpu::Buffer {
        self.resources[self.plan.grad].buffer()
    }

    /// The RGBA8 buffer [`Engine::image_rgba`] converts into, and the GPU's image conversion reads.
    pub fn rgba_buffer(&self) -> &wgpu::Buffer {
        self.resources[self.plan.rgba].buffer()
    }

    /// (height, width) of the image.
    pub fn size(&self) -> (usize, usize) {
        (self.tape.spec.height, self.tape.spec.width)
    }

    /// Elements of the image tensor (height x width x 4).
    pub fn image_len(&self) -> usize {
        self.tape.tensors[self.tape.image].len
    }

    /// Reads the RGBA8 buffer back (after a conversion into it).
    pub fn read_rgba(&self) -> Result<Vec<u32>> {
        let bytes = self.gpu.read_buffers(&[self.rgba_buffer()])?;
        Ok(bytemuck::cast_slice(&bytes[0]).to_vec())
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

    /// Every command of one iteration followed by `tail` (an optimiser's step), in order, each
    /// submitted alone and timed with a device wait: where an iteration's time goes. Returns
    /// (command name, seconds).
    pub fn profile_iteration(&self, tail: &[&Command]) -> Result<Vec<(String, f64)>> {
        let mut out = Vec::new();
        for command in self.forward.iter().chain(&self.backward).chain(tail.iter().copied()) {
            let start = std::time::Instant::now();
            submit_commands(self.gpu, command.name(), &[command])?;
            self.gpu.wait("profiling an iteration")?;
            out.push((command.name().to_string(), start.elapsed().as_secs_f64()));
        }
        Ok(out)
    }

    fn read_losses(&self) -> Result<Vec<f32>> {
        Ok(self.read_losses_and(&[])?.0)
    }

    fn read_losses_and(&self, reads: &[&wgpu::Buffer]) -> Result<(Vec<f32>, Vec<Vec<u8>>)> {
        let buffers: Vec<&wgpu::Buffer> =
            std::iter::once(self.resources[self.plan.losses].buffer()).chain(reads.iter().copied()).collect();
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
