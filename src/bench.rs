//! Shader-level and end-to-end benchmarks, shared by `cargo bench` and `nst bench`: every kernel
//! family at VGG19's shapes, timed with a device wait after warm-up (lavapipe compiles a shader on
//! its first dispatch), and whole iterations at several sizes.

use std::time::Instant;

use crate::error::Result;
use crate::gpu::library::{COPY_BUFFER, COPY_TO_TEXTURE};
use crate::gpu::{bind_planned, submit_commands, Command, Gpu, Kernel, KernelLibrary, Planned, Resource, Step};
use crate::net::engine::Engine;
use crate::net::plan::{Capabilities, ConvChoice};
use crate::net::{LossSpec, Pooling, Tape, Vgg19Weights};
use crate::ops::adam::{self, AdamConfig, AdamParams};
use crate::ops::conv3x3::{self, Conv3x3Params};
use crate::ops::conv3x3_subgroup as fast;
use crate::ops::gram::{self, GramParams};
use crate::ops::gram_subgroup;
use crate::ops::maxpool2::{self, Pool2Params};
use crate::ops::relu::{self, ReluParams};
use crate::ops::sqdiff::{self, SqDiffParams};
use crate::ops::tv::{self, TvParams};
use crate::ops::winograd::{self, WinogradParams};
use crate::ops::{avgpool2, reduce};
use crate::optim::Optimiser;

/// What a kernel's speed is measured in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Work {
    /// Floating-point operations (multiply-adds count 2).
    Flops(u64),
    /// Bytes read and written.
    Bytes(u64),
}

/// One kernel at one shape.
#[derive(Clone, Debug)]
pub struct KernelResult {
    pub family: &'static str,
    pub kernel: String,
    pub shape: String,
    /// Median seconds per dispatch.
    pub seconds: f64,
    pub work: Work,
}

impl KernelResult {
    /// GFLOP/s or GB/s, with its unit.
    pub fn rate(&self) -> (f64, &'static str) {
        match self.work {
            Work::Flops(f) => (f as f64 / self.seconds / 1e9, "GFLOP/s"),
            Work::Bytes(b) => (b as f64 / self.seconds / 1e9, "GB/s"),
        }
    }
}

/// The median of `reps` timed runs of `commands` (one submission each, waited for), after one
/// untimed warm-up run.
pub fn time_commands(gpu: &Gpu, commands: &[&Command], reps: usize) -> Result<f64> {
    submit_commands(gpu, "warm-up", commands)?;
    gpu.wait("warming up")?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        submit_commands(gpu, "benchmark", commands)?;
        gpu.wait("benchmarking")?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

struct Bench<'a> {
    gpu: &'a Gpu,
    library: &'a KernelLibrary,
    reps: usize,
    results: Vec<KernelResult>,
}

impl Bench<'_> {
    fn buffer(&self, floats: usize) -> wgpu::Buffer {
        // Small non-zero values: no denormals, no NaN.
        let data: Vec<f32> = (0..floats).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
        self.gpu.buffer_from("benchmark data", bytemuck::cast_slice(&data))
    }

    fn run(
        &mut self,
        family: &'static str,
        kernel: &str,
        shape: String,
        work: Work,
        commands: Vec<Command>,
    ) -> Result<()> {
        let refs: Vec<&Command> = commands.iter().collect();
        let seconds = time_commands(self.gpu, &refs, self.reps)?;
        self.results.push(KernelResult { family, kernel: kernel.to_string(), shape, seconds, work });
        Ok(())
    }

    /// Buffers sized by the kernel's own shape arithmetic, one step.
    fn kernel<K: Kernel>(&mut self, family: &'static str, shape: String, params: &K::Params, work: Work) -> Result<()> {
        let buffers: Vec<wgpu::Buffer> = K::binding_lens(params).iter().map(|&n| self.buffer(n as usize)).collect();
        let refs: Vec<&wgpu::Buffer> = buffers.iter().collect();
        let step = Step::new::<K>(self.gpu, self.library, params, &refs)?;
        self.run(family, &K::ENTRY.name(), shape, work, vec![Command::Dispatch(step)])
    }

    /// The texture conv, with the copy of its input into the texture included in the time.
    fn texture_conv(&mut self, family: &'static str, shape: String, p: &Conv3x3Params) -> Result<()> {
        let wt = fast::weights_texture(self.gpu, "weights", p, &vec![0.01; p.weights_len()]);
        let it = fast::create_texture(self.gpu, "input", fast::input_texture_size(p));
        let (input, bias, output) =
            (self.buffer(p.input_len()), self.buffer(p.bias_len()), self.buffer(p.output_len()));
        let resources =
            [Resource::Texture(&wt), Resource::Buffer(&bias), Resource::Texture(&it), Resource::Buffer(&output)];
        let (step, name) = fast::bind_textured(self.gpu, self.library, p, &resources)?;
        let copy = fast::map_copy(&input, &it, p.height, p.width, p.in_channels);
        self.run(family, &name, shape, Work::Flops(p.flops()), vec![copy, Command::Dispatch(step)])
    }
}

impl Bench<'_> {
    /// The Winograd conv F(m x m, 3x3) as the engine runs it: input transform, products, output
    /// transform, one band, U and V read from `operands`. Rated in direct-equivalent GFLOP/s (the
    /// direct conv's arithmetic over the time); the name gives each stage's time alone and the
    /// products' own rate (the arithmetic really done).
    fn winograd_conv(
        &mut self,
        family: &'static str,
        shape: String,
        p: &Conv3x3Params,
        m: usize,
        operands: winograd::Operands,
        subgroup: bool,
    ) -> Result<()> {
        let wp = WinogradParams::new(p, m);
        // One band here: skip what the engine would split into bands.
        let max = self.gpu.limits.max_texture_dimension_2d;
        // V and M are buffers in either flavour; U too with storage operands.
        let binds = |floats: usize| 4 * floats as u64 <= self.gpu.limits.max_storage_buffer_binding_size;
        let fits = binds(wp.transformed_input_len().max(wp.product_len()))
            && match operands {
                winograd::Operands::Storage => binds(wp.transformed_weights_len()),
                winograd::Operands::Texture => {
                    let height = winograd::transformed_texture_size(&wp).1;
                    winograd::textures_fit(&wp, max) && height <= max
                }
            };
        if !fits {
            return Ok(());
        }
        let (input, bias, output) =
            (self.buffer(p.input_len()), self.buffer(p.bias_len()), self.buffer(p.output_len()));
        let (v, product) = (self.buffer(wp.transformed_input_len()), self.buffer(wp.product_len()));
        let (u, textures);
        let (weights, transformed_texture) = match operands {
            winograd::Operands::Storage => {
                u = self.buffer(wp.transformed_weights_len());
                (Resource::Buffer(&u), None)
            }
            winograd::Operands::Texture => {
                textures = [
                    fast::create_texture(self.gpu, "winograd weights", winograd::weights_texture_size(&wp)),
                    fast::create_texture(self.gpu, "winograd transformed", winograd::transformed_texture_size(&wp)),
                ];
                (Resource::Texture(&textures[0]), Some(Resource::Texture(&textures[1])))
            }
        };
        // The input from its map texture where the engine would read it so (the copy counts).
        let map_input = operands == winograd::Operands::Texture && winograd::map_input_fits(p, max);
        let map = fast::create_texture(
            self.gpu,
            "winograd input map",
            if map_input { fast::input_texture_size(p) } else { (1, 1) },
        );
        let resources = winograd::ConvOperands {
            input: if map_input { Resource::Texture(&map) } else { Resource::Buffer(&input) },
            weights,
            transformed: Resource::Buffer(&v),
            transformed_texture,
            product: Resource::Buffer(&product),
            bias: Resource::Buffer(&bias),
            output: Resource::Buffer(&output),
            mask: None,
        };
        let mut commands = winograd::plan(&wp, operands, subgroup, map_input, resources)
            .iter()
            .map(|c| bind_planned(self.gpu, self.library, c))
            .collect::<Result<Vec<Command>>>()?;
        if map_input {
            commands.insert(0, fast::map_copy(&input, &map, p.height, p.width, p.in_channels));
        }
        let refs: Vec<&Command> = commands.iter().collect();
        let seconds = time_commands(self.gpu, &refs, self.reps)?;
        // Each stage alone (the copy with the input transform), for the share of the transforms
        // and the products' own rate.
        let n = refs.len();
        let stages = [&refs[..n - 2], &refs[n - 2..n - 1], &refs[n - 1..]]
            .map(|stage| time_commands(self.gpu, stage, self.reps))
            .into_iter()
            .collect::<Result<Vec<f64>>>()?;
        let name = format!(
            "winograd F({m}x{m}) {}{} (ms in, products, out: {:.1}, {:.1}, {:.1}; products {:.1} GFLOP/s)",
            if subgroup { "subgroup" } else { "portable" },
            match (operands, map_input) {
                (winograd::Operands::Texture, true) => " tex, map input",
                (winograd::Operands::Texture, false) => " tex",
                _ => "",
            },
            stages[0] * 1e3,
            stages[1] * 1e3,
            stages[2] * 1e3,
            wp.product_flops() as f64 / stages[1] / 1e9
        );
        self.results.push(KernelResult { family, kernel: name, shape, seconds, work: Work::Flops(p.flops()) });
        Ok(())
    }

    /// The Gram forward as the engine runs it with subgroups: transposed chunks of positions, a
    /// pointwise conv over each, the normaliser (`gram::pointwise_forward_steps`).
    fn gram_forward_pointwise(&mut self, side: usize, c: usize) -> Result<()> {
        let g = GramParams::new(side, side, c);
        let max = gram::MAX_CHUNK_POSITIONS;
        let (features, out) = (self.buffer(g.features_len()), self.buffer(g.gram_len()));
        let (scratch, zero) = (self.buffer(gram::pointwise_scratch_len(&g, max)), self.buffer(c));
        let steps = gram::pointwise_forward_steps(self.gpu, self.library, &g, max, [&features, &out, &scratch, &zero])?;
        let commands = steps.into_iter().map(Command::Dispatch).collect();
        self.run("gram", "gram_pointwise.forward", format!("{side}x{side}x{c}"), Work::Flops(g.flops()), commands)
    }

    /// The fast Gram forward as the engine runs it: the copy of the features into their texture,
    /// the partials over slices of positions, their sum (`gram_subgroup::forward_commands`).
    fn gram_forward_subgroup(&mut self, side: usize, c: usize) -> Result<()> {
        let g = gram_subgroup::GramSliceParams::new(side, side, c);
        if !gram_subgroup::available(self.gpu, self.library, &g) {
            return Ok(());
        }
        let (features, out) = (self.buffer(g.features_len()), self.buffer(g.gram_len()));
        let partials = self.buffer(g.partials_len());
        let texture = fast::create_texture(self.gpu, "gram features", g.texture_size());
        let commands =
            gram_subgroup::forward_commands(self.gpu, self.library, &g, &features, &texture, &partials, &out)?;
        let name = format!("gram_subgroup.partials + sum ({} slices)", g.slices);
        self.run("gram", &name, format!("{side}x{side}x{c}"), Work::Flops(g.flops()), commands)
    }

    /// The Gram backward as the engine runs it with subgroups: symmetrize, then a pointwise conv.
    fn gram_backward_pointwise(&mut self, side: usize, c: usize) -> Result<()> {
        let g = GramParams::new(side, side, c);
        let (grad_gram, sym, zero) = (self.buffer(g.gram_len()), self.buffer(g.gram_len()), self.buffer(c));
        let (features, grad_features) = (self.buffer(g.features_len()), self.buffer(g.features_len()));
        let first = Step::new::<gram::Symmetrize>(self.gpu, self.library, &g, &[&grad_gram, &sym])?;
        let conv = Conv3x3Params::new(side, side, c, c);
        let buffers = [&sym, &zero, &features, &grad_features];
        let second = Step::new::<fast::Pointwise32>(self.gpu, self.library, &conv, &buffers)?;
        let commands = vec![Command::Dispatch(first), Command::Dispatch(second)];
        self.run(
            "gram",
            "gram.symmetrize + conv1x1_subgroup",
            format!("{side}x{side}x{c}"),
            Work::Flops(2 * g.flops()),
            commands,
        )
    }

    /// The Gram backward as the engine runs it where the textures fit: `gram.symmetrize_tiled`, the
    /// copies of sym and of the features into their textures, the pointwise conv reading both.
    fn gram_backward_textured(&mut self, side: usize, c: usize) -> Result<()> {
        let g = GramParams::new(side, side, c);
        let conv = Conv3x3Params::new(side, side, c, c);
        let max = self.gpu.limits.max_texture_dimension_2d;
        if !fast::texture_kernels_built(self.library) || !fast::pointwise_textures_fit(&conv, max) {
            return Ok(());
        }
        let (grad_gram, sym, zero) = (self.buffer(g.gram_len()), self.buffer(g.gram_len()), self.buffer(c));
        let (features, grad_features) = (self.buffer(g.features_len()), self.buffer(g.features_len()));
        let (w, h) = gram::tiled_weights_texture_size(c);
        let weights = fast::create_texture(self.gpu, "gram sym texture", (w, h));
        let map = fast::create_texture(self.gpu, "gram features map", fast::input_texture_size(&conv));
        let (b, t) = (Resource::Buffer, Resource::Texture);
        let planned = [
            Planned::dispatch::<gram::SymmetrizeTiled>(&g, vec![b(&grad_gram), b(&sym)]),
            Planned::CopyToTexture { buffer: b(&sym), texture: t(&weights), origin: [0, 0], extent: [w, h] },
            fast::planned_map_copy(b(&features), t(&map), conv.height, conv.width, conv.in_channels),
            Planned::dispatch::<fast::Pointwise32Tex>(&conv, vec![t(&weights), b(&zero), t(&map), b(&grad_features)]),
        ];
        let commands = planned.iter().map(|c| bind_planned(self.gpu, self.library, c)).collect::<Result<Vec<_>>>()?;
        let name = "gram.symmetrize_tiled + copies + conv1x1_subgroup_tex";
        self.run("gram", name, format!("{side}x{side}x{c}"), Work::Flops(2 * g.flops()), commands)
    }
}

/// VGG19's conv shapes (side, channels) at an image of `side` pixels: one per block.
pub fn vgg_conv_shapes(side: usize) -> [(usize, usize); 4] {
    [(side, 64), (side / 2, 128), (side / 4, 256), (side / 8, 512)]
}

/// Every kernel family at VGG19's shapes for `image_sides` (256 and 512 for the full set). The
/// portable conv kernels, 30 to 100 times slower on lavapipe, run at one small shape, as the
/// baseline every variant is also measured at.
pub fn kernel_benchmarks(
    gpu: &Gpu,
    library: &KernelLibrary,
    image_sides: &[usize],
    reps: usize,
) -> Result<Vec<KernelResult>> {
    // The smallest shapes are an eighth of the side (the fourth block's maps, the Gram at 512
    // channels).
    if let Some(&side) = image_sides.iter().find(|&&side| side < 8) {
        return Err(crate::Error::ImageSize {
            height: side,
            width: side,
            message: "the kernel benchmarks run at shapes down to 1/8 of the side; use 8 or more".into(),
        });
    }
    let mut b = Bench { gpu, library, reps, results: Vec::new() };
    let subgroups = library.has::<fast::Forward16>();
    let textures = Capabilities::of(gpu, library).texture_conv;

    // Baseline shape: 64 channels at 64x64.
    let base = Conv3x3Params::new(64, 64, 64, 64).with_relu(true);
    let shape = |p: &Conv3x3Params| format!("{}x{}x{}->{}", p.height, p.width, p.in_channels, p.out_channels);
    b.kernel::<conv3x3::Forward>("conv3x3 forward", shape(&base), &base, Work::Flops(base.flops()))?;
    b.kernel::<conv3x3::BackwardInput>("conv3x3 input gradient", shape(&base), &base, Work::Flops(base.flops()))?;
    let mut conv_shapes = vec![base];
    for &side in image_sides {
        conv_shapes.extend(vgg_conv_shapes(side).map(|(s, c)| Conv3x3Params::new(s, s, c, c).with_relu(true)));
    }
    // The first conv and its gradient into the 4-channel image.
    let first = image_sides.first().copied().unwrap_or(256);
    let conv1_1 = Conv3x3Params::new(first, first, 4, 64).with_relu(true);
    let conv1_1_grad = Conv3x3Params::new(first, first, 64, 4);
    for p in conv_shapes.iter().chain([&conv1_1, &conv1_1_grad]) {
        let family = if p.relu != 0 { "conv3x3 forward" } else { "conv3x3 input gradient" };
        if subgroups {
            match fast::tile_for(p) {
                Some(16) => b.kernel::<fast::Forward16>(family, shape(p), p, Work::Flops(p.flops()))?,
                Some(4) => b.kernel::<fast::Forward4>(family, shape(p), p, Work::Flops(p.flops()))?,
                _ => {}
            }
        }
        if textures.is_some_and(|max| fast::textures_fit(p, max)) {
            b.texture_conv(family, shape(p), p)?;
        }
        if crate::ops::winograd::suits(p) {
            // Every tile and operand kind with this adapter's products kernel; the portable
            // products (no subgroups) beside them at F(4x4).
            let own = library.has::<winograd::GemmSubgroup>();
            for m in [2, 4] {
                for operands in [winograd::Operands::Storage, winograd::Operands::Texture] {
                    b.winograd_conv(family, shape(p), p, m, operands, own)?;
                    if own && m == 4 {
                        b.winograd_conv(family, shape(p), p, m, operands, false)?;
                    }
                }
            }
        }
    }

    for &side in image_sides {
        let (s, c) = (side, 64);
        let map = |s: usize, c: usize| format!("{s}x{s}x{c}");
        let pool = Pool2Params::new(s, s, c);
        let pool_bytes = 4 * (pool.input_len() + pool.output_len()) as u64;
        b.kernel::<maxpool2::Forward>("pooling", map(s, c), &pool, Work::Bytes(pool_bytes))?;
        b.kernel::<maxpool2::Forward4>("pooling", map(s, c), &pool, Work::Bytes(pool_bytes))?;
        let back_bytes = Work::Bytes(pool_bytes + 8 * pool.input_len() as u64);
        b.kernel::<maxpool2::Backward>("pooling", map(s, c), &pool, back_bytes)?;
        b.kernel::<maxpool2::Backward4>("pooling", map(s, c), &pool, back_bytes)?;
        b.kernel::<avgpool2::Forward>("pooling", map(s, c), &pool, Work::Bytes(pool_bytes))?;
        b.kernel::<avgpool2::Backward>("pooling", map(s, c), &pool, Work::Bytes(pool_bytes))?;

        let relu = ReluParams::new(s * s * c);
        b.kernel::<relu::Backward>("relu", map(s, c), &relu, Work::Bytes(16 * relu.len() as u64))?;
        b.kernel::<relu::Backward4>("relu", map(s, c), &relu, Work::Bytes(16 * relu.len() as u64))?;

        for (gs, gc) in [(s, 64), (s / 8, 512)] {
            let g = GramParams::new(gs, gs, gc);
            // The portable Gram kernels (10 to 100 times slower) only at the first size.
            let baseline = Some(&side) == image_sides.first();
            if baseline {
                b.kernel::<gram::Forward>("gram", map(gs, gc), &g, Work::Flops(g.flops()))?;
            }
            b.kernel::<gram::ForwardBlocked>("gram", map(gs, gc), &g, Work::Flops(g.flops()))?;
            if baseline {
                b.kernel::<gram::Backward>("gram", map(gs, gc), &g, Work::Flops(2 * g.flops()))?;
            }
            if subgroups {
                b.gram_forward_pointwise(gs, gc)?;
                b.gram_forward_subgroup(gs, gc)?;
                b.gram_backward_pointwise(gs, gc)?;
                b.gram_backward_textured(gs, gc)?;
            }
        }

        let loss = SqDiffParams::mean(s * s * c, 1.0);
        b.kernel::<sqdiff::Forward>("losses", map(s, c), &loss, Work::Bytes(8 * loss.len() as u64))?;
        let sum = reduce::ReduceParams::new(loss.partials(), 0);
        b.kernel::<reduce::Sum>(
            "losses",
            format!("{} partials", loss.partials()),
            &sum,
            Work::Bytes(4 * loss.partials() as u64),
        )?;
        b.kernel::<sqdiff::Backward>("losses", map(s, c), &loss, Work::Bytes(12 * loss.len() as u64))?;

        let t = TvParams::new(s, s, 4, 1.0);
        b.kernel::<tv::Forward>("tv", map(s, 4), &t, Work::Bytes(4 * t.len() as u64))?;
        b.kernel::<tv::Backward>("tv", map(s, 4), &t, Work::Bytes(8 * t.len() as u64))?;

        let a = AdamParams::at_step(s * s * 4, &AdamConfig::default(), 1);
        b.kernel::<adam::Step>("adam", map(s, 4), &a, Work::Bytes(28 * (s * s * 4) as u64))?;
    }
    Ok(b.results)
}

/// One whole iteration at one size.
#[derive(Clone, Debug)]
pub struct IterationResult {
    pub side: usize,
    /// The 3x3 conv choice it ran with.
    pub conv: ConvChoice,
    /// Median seconds per iteration (forward, losses, backward, Adam; one submission).
    pub seconds: f64,
    /// GPU memory the engine allocated.
    pub memory_bytes: u64,
    /// Seconds per kernel family when each command runs alone (sums to more than `seconds`: each
    /// submission pays its own start-up).
    pub breakdown: Vec<(String, f64)>,
    /// The same by kernel: (name, commands, seconds), slowest first.
    pub kernels: Vec<(String, usize, f64)>,
}

/// The default render's loss spec at a square of `side` pixels: content `relu4_2`, style
/// `relu1_1`...`relu5_1`, TV.
pub fn default_spec(side: usize) -> LossSpec {
    LossSpec {
        height: side,
        width: side,
        pooling: Pooling::Max,
        content: vec![("relu4_2".into(), 1.0)],
        style: ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"].iter().map(|l| (l.to_string(), 1.0)).collect(),
        tv: 1.0,
    }
}

/// Seconds per iteration at each side, with the memory and a per-family breakdown.
pub fn iteration_benchmarks(
    gpu: &Gpu,
    library: &KernelLibrary,
    weights: &Vgg19Weights,
    sides: &[usize],
    convs: &[ConvChoice],
    reps: usize,
) -> Result<Vec<IterationResult>> {
    let mut out = Vec::new();
    for &side in sides {
        for &conv in convs {
            out.push(iteration_benchmark(gpu, library, weights, side, conv, reps)?);
        }
    }
    Ok(out)
}

/// One [`IterationResult`].
fn iteration_benchmark(
    gpu: &Gpu,
    library: &KernelLibrary,
    weights: &Vgg19Weights,
    side: usize,
    conv: ConvChoice,
    reps: usize,
) -> Result<IterationResult> {
    {
        let caps = Capabilities::of(gpu, library).with_conv(conv);
        let engine = Engine::with_capabilities(gpu, library, weights, Tape::build(&default_spec(side))?, &caps)?;
        let bounds = crate::ops::image::network_bounds();
        let mut adam = crate::optim::Adam::new(gpu, library, &engine, AdamConfig::default(), bounds)?;
        adam.iterate(gpu, &engine, &[])?; // warm-up: compiles every pipeline
        let mut times = Vec::new();
        for _ in 0..reps {
            let start = Instant::now();
            adam.iterate(gpu, &engine, &[])?;
            times.push(start.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let mut breakdown: Vec<(String, f64)> = Vec::new();
        let mut by_kernel: Vec<(String, usize, f64)> = Vec::new();
        for (name, seconds) in engine.profile_iteration(&[adam.step_command()])? {
            match by_kernel.iter_mut().find(|(k, _, _)| *k == name) {
                Some((_, n, s)) => {
                    *n += 1;
                    *s += seconds;
                }
                None => by_kernel.push((name.clone(), 1, seconds)),
            }
            let family = family_of(&name);
            match breakdown.iter_mut().find(|(f, _)| *f == family) {
                Some((_, s)) => *s += seconds,
                None => breakdown.push((family.to_string(), seconds)),
            }
        }
        by_kernel.sort_by(|a, b| b.2.total_cmp(&a.2));
        Ok(IterationResult {
            side,
            conv,
            seconds: times[times.len() / 2],
            memory_bytes: engine.allocated_bytes() + adam.allocated_bytes(),
            breakdown,
            kernels: by_kernel,
        })
    }
}

/// The kernel family of a command name (`conv3x3_subgroup_tex_co16.forward` -> `conv3x3`).
pub fn family_of(name: &str) -> &'static str {
    let shader = name.split('.').next().unwrap_or(name);
    match shader {
        s if s.starts_with("conv3x3") => "conv3x3",
        s if s.starts_with("winograd_gemm") => "winograd products",
        s if s.starts_with("winograd") => "winograd transforms",
        // The Gram forward and backward run as pointwise convs (the forward over transposed chunks).
        s if s.starts_with("conv1x1") => "gram",
        "transpose" => "gram",
        COPY_TO_TEXTURE => "copies to textures",
        COPY_BUFFER => "copies of buffers",
        "maxpool2" | "avgpool2" => "pooling",
        "relu" => "relu",
        "gram" | "gram_blocked" | "gram_subgroup" => "gram",
        "sqdiff" | "reduce" => "losses",
        "tv" => "tv",
        "adam" => "adam",
        _ => "other",
    }
}

/// The kernel results as a Markdown table: family, kernel, shape, time, rate, and the speed-up over
/// the portable kernel of the same family at the same shape where both ran.
pub fn kernel_table(results: &[KernelResult]) -> String {
    let mut out = String::from("| family | kernel | shape | ms | rate | vs portable |\n|---|---|---|---|---|---|\n");
    for r in results {
        let (rate, unit) = r.rate();
        let baseline = results.iter().find(|b| {
            b.family == r.family
                && b.shape == r.shape
                && (b.kernel.starts_with("conv3x3.") || b.kernel == "gram.forward")
                && b.kernel != r.kernel
                && r.kernel.split('.').nth(1) == b.kernel.split('.').nth(1)
        });
        let speedup = baseline.map(|b| format!("{:.1}x", b.seconds / r.seconds)).unwrap_or_default();
        out += &format!(
            "| {} | {} | {} | {:.2} | {:.1} {unit} | {speedup} |\n",
            r.family,
            r.kernel,
            r.shape,
            r.seconds * 1e3,
            rate
        );
    }
    out
}

/// The iteration results as a Markdown table, then each size's breakdown by kernel family.
pub fn iteration_table(results: &[IterationResult]) -> String {
    let mut out = String::from("| size | --conv | s / iteration | GPU memory |\n|---|---|---|---|\n");
    for r in results {
        out += &format!(
            "| {0}x{0} | {1} | {2:.2} | {3:.0} MiB |\n",
            r.side,
            r.conv,
            r.seconds,
            r.memory_bytes as f64 / 1048576.0
        );
    }
    for r in results {
        let total: f64 = r.breakdown.iter().map(|(_, s)| s).sum();
        out +=
            &format!("\nshare of one iteration at {0}x{0}, --conv {1} (each command timed alone):\n", r.side, r.conv);
        for (family, s) in &r.breakdown {
            out += &format!("  {family:<20} {:>8.1} ms  {:>5.1}%\n", s * 1e3, 100.0 * s / total);
        }
        out += "the slowest kernels (commands, total):\n";
        for (kernel, n, s) in r.kernels.iter().take(10) {
            out += &format!("  {kernel:<44} {n:>3} {:>8.1} ms\n", s * 1e3);
        }
    }
    out
}

fn json_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Everything as one JSON object, for machines.
pub fn to_json(adapter: &str, kernels: &[KernelResult], iterations: &[IterationResult]) -> String {
    let kernels: Vec<String> = kernels
        .iter()
        .map(|r| {
            let (rate, unit) = r.rate();
            format!(
                "{{\"family\":{},\"kernel\":{},\"shape\":{},\"seconds\":{:e},\"rate\":{rate:.3},\"unit\":{}}}",
                json_string(r.family),
                json_string(&r.kernel),
                json_string(&r.shape),
                r.seconds,
                json_string(unit)
            )
        })
        .collect();
    let iterations: Vec<String> = iterations
        .iter()
        .map(|r| {
            let breakdown: Vec<String> = r
                .breakdown
                .iter()
                .map(|(f, s)| format!("{{\"family\":{},\"seconds\":{s:e}}}", json_string(f)))
                .collect();
            format!(
                "{{\"side\":{},\"conv\":\"{}\",\"seconds\":{:e},\"memory_bytes\":{},\"breakdown\":[{}]}}",
                r.side,
                r.conv,
                r.seconds,
                r.memory_bytes,
                breakdown.join(",")
            )
        })
        .collect();
    format!(
        "{{\"adapter\":{},\"kernels\":[{}],\"iterations\":[{}]}}",
        json_string(adapter),
        kernels.join(","),
        iterations.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::family_of;
    use crate::gpu::library::{COPY_BUFFER, COPY_TO_TEXTURE};

    #[test]
    fn every_kernel_of_an_iteration_counts_in_its_own_family() {
        // "other" is left to the image conversions and the optimisers' vector arithmetic.
        for entry in crate::ops::ENTRY_POINTS {
            let name = entry.name();
            let family = family_of(&name);
            let expected_other = entry.shader == "image" || entry.shader == "vector";
            assert_eq!(family == "other", expected_other, "{name} counts in {family}");
        }
        assert_eq!(family_of(COPY_TO_TEXTURE), "copies to textures");
        assert_eq!(family_of(COPY_BUFFER), "copies of buffers");
    }
}
