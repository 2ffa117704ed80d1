//! The GPU engine: one tape's buffers, pipelines and bind groups, made once per image size, and
//! one iteration recorded into one command encoder whose only readback is the loss values.

use super::tape::{BackOp, LossKind, Op, Tape, TensorId};
use super::weights::{ConvWeights, Vgg19Weights};
use crate::error::{Error, Result};
use crate::gpu::library::submit;
use crate::gpu::{Gpu, KernelLibrary, Step};
use crate::ops::adam::{self, AdamParams};
use crate::ops::conv3x3::Conv3x3Params;
use crate::ops::image::{self, ImageParams};
use crate::ops::{avgpool2, conv3x3, conv3x3_subgroup, gram, maxpool2, reduce, relu, sqdiff, tv};

/// One conv's parameters on the GPU: weights (padded to the input's channels), their flipped
/// transpose for the input gradient, the bias, and a zero bias for the gradient conv.
struct ConvBuffers {
    weights: wgpu::Buffer,
    transposed: wgpu::Buffer,
    bias: wgpu::Buffer,
    zero_bias: wgpu::Buffer,
}

impl ConvBuffers {
    fn new(gpu: &Gpu, conv: &ConvWeights, params: &Conv3x3Params) -> ConvBuffers {
        let (cin, cout) = (params.in_channels as usize, params.out_channels as usize);
        let padded = conv.padded(cin);
        let transposed = conv3x3_subgroup::transpose_weights(cin, cout, &padded);
        ConvBuffers {
            weights: gpu.buffer_from(&format!("{} weights", conv.name), bytemuck::cast_slice(&padded)),
            transposed: gpu
                .buffer_from(&format!("{} weights transposed", conv.name), bytemuck::cast_slice(&transposed)),
            bias: gpu.buffer_from(&format!("{} bias", conv.name), bytemuck::cast_slice(&conv.bias)),
            zero_bias: gpu.buffer_zeroed(&format!("{} zero bias", conv.name), 4 * cin as u64),
        }
    }
}

/// A conv step with the fastest kernel this device has for its shape: the subgroup kernel where the
/// adapter has subgroups and the channels suit its tiles, else the portable one.
pub fn conv_step(
    gpu: &Gpu,
    library: &KernelLibrary,
    params: &Conv3x3Params,
    buffers: [&wgpu::Buffer; 4],
) -> Result<Step> {
    let fast = library.has::<conv3x3_subgroup::Forward32>();
    match conv3x3_subgroup::tile_for(params) {
        Some(32) if fast => Step::new::<conv3x3_subgroup::Forward32>(gpu, library, params, &buffers),
        Some(4) if fast => Step::new::<conv3x3_subgroup::Forward4>(gpu, library, params, &buffers),
        _ => Step::new::<conv3x3::Forward>(gpu, library, params, &buffers),
    }
}

/// A tape on the GPU.
pub struct Engine<'g> {
    gpu: &'g Gpu,
    pub tape: Tape,
    of_tensor: Vec<usize>,
    buffers: Vec<wgpu::Buffer>,
    losses: wgpu::Buffer,
    rgba: wgpu::Buffer,
    forward: Vec<Step>,
    backward: Vec<Step>,
    to_network: Step,
    from_network: Step,
    adam: Step,
    /// Kept alive for the bind groups that read them.
    _weights: Vec<ConvBuffers>,
    _moments: (wgpu::Buffer, wgpu::Buffer),
    _partials: wgpu::Buffer,
    allocated: u64,
}

impl<'g> Engine<'g> {
    /// Allocates every buffer and builds every step for `tape`. Refuses, before allocating, a size
    /// whose largest buffer exceeds the adapter's storage binding limit.
    pub fn new(gpu: &'g Gpu, library: &KernelLibrary, weights: &Vgg19Weights, tape: Tape) -> Result<Engine<'g>> {
        let memory = tape.memory();
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

        let conv_weights: Vec<ConvBuffers> =
            tape.conv_params().map(|(conv, params)| ConvBuffers::new(gpu, &weights.convs[conv], &params)).collect();
        let partials = gpu.buffer_zeroed("loss partials", 4 * tape.partials_len() as u64);
        let losses = gpu.buffer_zeroed("losses", 4 * tape.losses.len().max(1) as u64);

        let mut forward = Vec::new();
        for op in &tape.forward {
            match *op {
                Op::Conv { conv, input, output, params } => {
                    let c = &conv_weights[conv];
                    forward.push(conv_step(gpu, library, &params, [&c.weights, &c.bias, buf(input), buf(output)])?);
                }
                Op::MaxPool { input, output, params } => {
                    forward.push(Step::new::<maxpool2::Forward>(gpu, library, &params, &[buf(input), buf(output)])?);
                }
                Op::AvgPool { input, output, params } => {
                    forward.push(Step::new::<avgpool2::Forward>(gpu, library, &params, &[buf(input), buf(output)])?);
                }
                Op::Gram { input, output, params } => {
                    forward.push(Step::new::<gram::Forward>(gpu, library, &params, &[buf(input), buf(output)])?);
                }
                Op::SqDiff { input, target, slot, params } => {
                    forward.push(Step::new::<sqdiff::Forward>(
                        gpu,
                        library,
                        &params,
                        &[buf(input), buf(target), &partials],
                    )?);
                    let sum = reduce::ReduceParams::new(params.partials(), slot);
                    forward.push(Step::new::<reduce::Sum>(gpu, library, &sum, &[&partials, &losses])?);
                }
                Op::Tv { input, slot, params } => {
                    forward.push(Step::new::<tv::Forward>(gpu, library, &params, &[buf(input), &partials])?);
                    let sum = reduce::ReduceParams::new(params.partials(), slot);
                    forward.push(Step::new::<reduce::Sum>(gpu, library, &sum, &[&partials, &losses])?);
                }
            }
        }

        let mut backward = Vec::new();
        for op in &tape.backward {
            backward.push(match *op {
                BackOp::SqDiff { input, target, grad, params } => {
                    Step::new::<sqdiff::Backward>(gpu, library, &params, &[buf(input), buf(target), buf(grad)])?
                }
                BackOp::Tv { input, grad, params } => {
                    Step::new::<tv::Backward>(gpu, library, &params, &[buf(input), buf(grad)])?
                }
                BackOp::Gram { features, grad_gram, grad_features, params } => Step::new::<gram::Backward>(
                    gpu,
                    library,
                    &params,
                    &[buf(features), buf(grad_gram), buf(grad_features)],
                )?,
                BackOp::MaxPool { input, grad_output, grad_input, params } => Step::new::<maxpool2::Backward>(
                    gpu,
                    library,
                    &params,
                    &[buf(input), buf(grad_output), buf(grad_input)],
                )?,
                BackOp::AvgPool { grad_output, grad_input, params } => {
                    Step::new::<avgpool2::Backward>(gpu, library, &params, &[buf(grad_output), buf(grad_input)])?
                }
                BackOp::Relu { output, grad_output, masked, params } => {
                    Step::new::<relu::Backward>(gpu, library, &params, &[buf(output), buf(grad_output), buf(masked)])?
                }
                BackOp::ConvInput { conv, masked, grad_input, params } => {
                    // The input gradient is a forward conv with flipped, transposed weights.
                    let c = &conv_weights[conv];
                    let gradient = Conv3x3Params::new(
                        params.height as usize,
                        params.width as usize,
                        params.out_channels as usize,
                        params.in_channels as usize,
                    )
                    .with_accumulate(params.accumulate != 0);
                    conv_step(gpu, library, &gradient, [&c.transposed, &c.zero_bias, buf(masked), buf(grad_input)])?
                }
            });
        }

        let pixels = tape.spec.height * tape.spec.width;
        let rgba = gpu.buffer_zeroed("image rgba", 4 * pixels as u64);
        let image_params = ImageParams::new(pixels);
        let to_network = Step::new::<image::ToNetwork>(gpu, library, &image_params, &[&rgba, buf(tape.image)])?;
        let from_network = Step::new::<image::FromNetwork>(gpu, library, &image_params, &[buf(tape.image), &rgba])?;

        let image_len = tape.tensors[tape.image].len;
        let m = gpu.buffer_zeroed("adam m", 4 * image_len as u64);
        let v = gpu.buffer_zeroed("adam v", 4 * image_len as u64);
        // The image gradient exists when any loss reaches the image; otherwise Adam reads a zero buffer.
        let mut allocated: u64 = buffers.iter().map(|b| b.size()).sum::<u64>()
            + conv_weights
                .iter()
                .map(|c| c.weights.size() + c.transposed.size() + c.bias.size() + c.zero_bias.size())
                .sum::<u64>();
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
        let adam = Step::new::<adam::Step>(gpu, library, &adam_params, &[&grad_buffer, buf(tape.image), &m, &v])?;

        Ok(Engine {
            gpu,
            tape,
            of_tensor,
            buffers,
            losses,
            rgba,
            forward,
            backward,
            to_network,
            from_network,
            adam,
            _weights: conv_weights,
            _moments: (m, v),
            _partials: partials,
            allocated,
        })
    }

    /// Bytes of every buffer this engine created; [`Tape::memory`] predicts it.
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
        self.check_pixels(net.len() / 3)?;
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
        let steps: Vec<&Step> = self.forward.iter().collect();
        submit(self.gpu, "forward", &steps)?;
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
        let mut steps: Vec<&Step> = self.forward.iter().chain(&self.backward).collect();
        if let Some(params) = adam {
            self.adam.write_params(self.gpu, params);
            steps.push(&self.adam);
        }
        submit(self.gpu, "iteration", &steps)?;
        self.read_losses()
    }

    fn read_losses(&self) -> Result<Vec<f32>> {
        let bytes = self.gpu.read_buffers(&[&self.losses])?;
        let all: &[f32] = bytemuck::cast_slice(&bytes[0]);
        Ok(all[..self.tape.losses.len()].to_vec())
    }

    /// Reads a tensor back (tests and diagnostics; an iteration never does this).
    pub fn read(&self, t: TensorId) -> Result<Vec<f32>> {
        let bytes = self.gpu.read_buffers(&[self.buffer(t)])?;
        let all: &[f32] = bytemuck::cast_slice(&bytes[0]);
        Ok(all[..self.tape.tensors[t].len].to_vec())
    }
}
