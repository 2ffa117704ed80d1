//! `nst check`: every kernel on the user's adapter against its CPU twin (evaluated in f64 from the
//! same f32 inputs) at small seeded shapes that are not tile multiples, with the largest error and
//! pass or fail per kernel. The test suite checks the same kernels far more thoroughly; this is a
//! minute's assurance that a new GPU or driver computes what the oracle does.

use crate::error::Result;
use crate::gpu::{run_once, submit, submit_commands, Command, Gpu, KernelLibrary, Resource, Step};
use crate::ops::adam::{AdamConfig, AdamParams};
use crate::ops::conv3x3::Conv3x3Params;
use crate::ops::gram::GramParams;
use crate::ops::image::{pack_rgba, ImageParams};
use crate::ops::maxpool2::Pool2Params;
use crate::ops::reduce::ReduceParams;
use crate::ops::relu::ReluParams;
use crate::ops::sqdiff::SqDiffParams;
use crate::ops::tv::TvParams;
use crate::ops::{
    adam, avgpool2, conv3x3, conv3x3_subgroup, gram, gram_subgroup, image, maxpool2, reduce, relu, sqdiff, transpose,
    tv, vector,
};

/// Dot products of up to a few thousand f32 terms of order 1.
const DOT: (f64, f64) = (1e-4, 1e-4);
/// One or two roundings.
const ELEMENTWISE: (f64, f64) = (1e-6, 1e-6);

/// One kernel's result.
#[derive(Clone, Debug)]
pub struct Checked {
    pub kernel: String,
    pub shape: String,
    /// Largest |GPU - CPU| over the elements.
    pub max_error: f64,
    /// Largest |CPU| (the scale of the values).
    pub max_value: f64,
    /// Every element within `atol + rtol * |CPU|`.
    pub passed: bool,
}

fn compare(kernel: &str, shape: String, got: &[f32], want: &[f64], (atol, rtol): (f64, f64)) -> Checked {
    let mut c =
        Checked { kernel: kernel.into(), shape, max_error: 0.0, max_value: 0.0, passed: got.len() == want.len() };
    for (&g, &w) in got.iter().zip(want) {
        let err = (g as f64 - w).abs();
        // NaN fails.
        c.passed &= err <= atol + rtol * w.abs();
        c.max_error = if err.is_nan() { f64::NAN } else { c.max_error.max(err) };
        c.max_value = c.max_value.max(w.abs());
    }
    c
}

struct Rng(u64);

impl Rng {
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let x = crate::rng::splitmix64(&mut self.0);
        lo + (hi - lo) * (x >> 11) as f64 / (1u64 << 53) as f64
    }
    fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi) as f32).collect()
    }
    /// Small integers: exact ties and zeros.
    fn ties(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| (self.uniform(0.0, 5.0).floor() - 2.0) as f32).collect()
    }
}

fn b(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}
fn f(bytes: &[u8]) -> Vec<f32> {
    bytemuck::cast_slice(bytes).to_vec()
}
fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Runs every kernel this adapter has compiled and compares it with its CPU twin.
pub fn run(gpu: &Gpu, library: &KernelLibrary) -> Result<Vec<Checked>> {
    let mut out = Vec::new();
    let mut rng = Rng(0x006e_7374_5f63_686b);

    // Convolutions: 7x9 pixels, channel counts that are not tile multiples, ReLU and accumulate.
    let p = Conv3x3Params::new(7, 9, 12, 20).with_relu(true).with_accumulate(true);
    let shape = "7x9, 12->20 channels, relu, +=".to_string();
    let a = (6.0 / 108.0f64).sqrt();
    let (weights, bias) = (rng.vec(p.weights_len(), -a, a), rng.vec(p.bias_len(), -0.1, 0.1));
    let (input, initial) = (rng.vec(p.input_len(), -1.0, 1.0), rng.vec(p.output_len(), -1.0, 1.0));
    let got = run_once::<conv3x3::Forward>(gpu, library, &p, &[b(&weights), b(&bias), b(&input), b(&initial)])?;
    let mut want = wide(&initial);
    conv3x3::forward(&p, &wide(&weights), &wide(&bias), &wide(&input), &mut want);
    out.push(compare("conv3x3.forward", shape.clone(), &f(&got[0]), &want, DOT));

    let g = Conv3x3Params::new(7, 9, 12, 20).with_accumulate(true);
    let (grad_output, grad_initial) = (rng.vec(g.output_len(), -1.0, 1.0), rng.vec(g.input_len(), -1.0, 1.0));
    let got = run_once::<conv3x3::BackwardInput>(gpu, library, &g, &[b(&weights), b(&grad_output), b(&grad_initial)])?;
    let mut want_grad = wide(&grad_initial);
    conv3x3::backward_input(&g, &wide(&weights), &wide(&grad_output), &mut want_grad);
    let grad_shape = "7x9, 12<-20 channels, +=".to_string();
    out.push(compare("conv3x3.backward_input", grad_shape.clone(), &f(&got[0]), &want_grad, DOT));

    // The subgroup convs, as the engine runs them: 32 and 4 output channels per invocation, buffers
    // or textures, and the input gradient as a forward conv with flipped, transposed weights.
    if library.has::<conv3x3_subgroup::Forward16>() {
        // 7x9 runs on buffers only; 7x16 also on textures (their rows must be 256-byte multiples).
        for (h, w, cin, cout) in [(7, 9, 12, 20), (7, 16, 8, 64), (7, 16, 12, 20)] {
            let p = Conv3x3Params::new(h, w, cin, cout).with_relu(true).with_accumulate(true);
            let a = (6.0 / (9.0 * cin as f64)).sqrt();
            let (weights, bias) = (rng.vec(p.weights_len(), -a, a), rng.vec(p.bias_len(), -0.1, 0.1));
            let (input, initial) = (rng.vec(p.input_len(), -1.0, 1.0), rng.vec(p.output_len(), -1.0, 1.0));
            let mut want = wide(&initial);
            conv3x3::forward(&p, &wide(&weights), &wide(&bias), &wide(&input), &mut want);
            let shape = format!("{h}x{w}, {cin}->{cout} channels, relu, +=");
            for (name, got) in fast_conv(gpu, library, &p, &weights, &bias, &input, &initial)? {
                out.push(compare(&name, shape.clone(), &got, &want, DOT));
            }
            if cin % 4 == 0 {
                let g = Conv3x3Params::new(h, w, cin, cout);
                let grad_output = rng.vec(g.output_len(), -1.0, 1.0);
                let mut want = vec![0.0; g.input_len()];
                conv3x3::backward_input(&g, &wide(&weights), &wide(&grad_output), &mut want);
                let t = conv3x3_subgroup::transpose_weights(cin, cout, &weights);
                let gp = g.input_gradient();
                let zero = vec![0.0; gp.bias_len()];
                let shape = format!("{h}x{w}, {cin}<-{cout} channels (input gradient)");
                let start = vec![0.0; gp.output_len()];
                for (name, got) in fast_conv(gpu, library, &gp, &t, &zero, &grad_output, &start)? {
                    out.push(compare(&name, shape.clone(), &got, &want, DOT));
                }
            }
        }
    }

    // ReLU, with exact zeros.
    let r = ReluParams::new(1001);
    let x = rng.ties(1001);
    let got = run_once::<relu::Forward>(gpu, library, &r, &[b(&x), b(&vec![0.0; 1001])])?;
    let mut want = vec![0.0; 1001];
    relu::forward(&r, &wide(&x), &mut want);
    out.push(compare("relu.forward", "1001, exact zeros".into(), &f(&got[0]), &want, ELEMENTWISE));
    let y: Vec<f32> = x.iter().map(|v| v.max(0.0)).collect();
    let dy = rng.vec(1001, -1.0, 1.0);
    let got = run_once::<relu::Backward>(gpu, library, &r, &[b(&y), b(&dy), b(&vec![0.0; 1001])])?;
    let mut want = vec![0.0; 1001];
    relu::backward(&r, &wide(&y), &wide(&dy), &mut want);
    out.push(compare("relu.backward", "1001, exact zeros".into(), &f(&got[0]), &want, ELEMENTWISE));
    let r4 = ReluParams::new(1000);
    let got = run_once::<relu::Backward4>(gpu, library, &r4, &[b(&y[..1000]), b(&dy[..1000]), b(&vec![0.0; 1000])])?;
    out.push(compare("relu.backward4", "1000, exact zeros".into(), &f(&got[0]), &want[..1000], ELEMENTWISE));

    // Pooling on odd sizes, with ties.
    let p = Pool2Params::new(7, 9, 12);
    let shape = "7x9x12, ties".to_string();
    let x = rng.ties(p.input_len());
    let dy = rng.vec(p.output_len(), -1.0, 1.0);
    let initial = rng.vec(p.input_len(), -1.0, 1.0);
    let pa = p.with_accumulate(true);
    let got = run_once::<maxpool2::Forward>(gpu, library, &p, &[b(&x), b(&vec![0.0; p.output_len()])])?;
    let mut want = vec![0.0; p.output_len()];
    maxpool2::forward(&p, &wide(&x), &mut want);
    out.push(compare("maxpool2.forward", shape.clone(), &f(&got[0]), &want, ELEMENTWISE));
    let got = run_once::<maxpool2::Backward>(gpu, library, &pa, &[b(&x), b(&dy), b(&initial)])?;
    let mut want = wide(&initial);
    maxpool2::backward(&pa, &wide(&x), &wide(&dy), &mut want);
    out.push(compare("maxpool2.backward", format!("{shape}, +="), &f(&got[0]), &want, ELEMENTWISE));
    let got = run_once::<maxpool2::Backward4>(gpu, library, &pa, &[b(&x), b(&dy), b(&initial)])?;
    out.push(compare("maxpool2.backward4", format!("{shape}, +="), &f(&got[0]), &want, ELEMENTWISE));
    let got = run_once::<maxpool2::Forward4>(gpu, library, &p, &[b(&x), b(&vec![0.0; p.output_len()])])?;
    let mut want = vec![0.0; p.output_len()];
    maxpool2::forward(&p, &wide(&x), &mut want);
    out.push(compare("maxpool2.forward4", shape.clone(), &f(&got[0]), &want, ELEMENTWISE));
    let got = run_once::<avgpool2::Forward>(gpu, library, &p, &[b(&x), b(&vec![0.0; p.output_len()])])?;
    let mut want = vec![0.0; p.output_len()];
    avgpool2::forward(&p, &wide(&x), &mut want);
    out.push(compare("avgpool2.forward", shape.clone(), &f(&got[0]), &want, ELEMENTWISE));
    let got = run_once::<avgpool2::Backward>(gpu, library, &pa, &[b(&dy), b(&initial)])?;
    let mut want = wide(&initial);
    avgpool2::backward(&pa, &wide(&dy), &mut want);
    out.push(compare("avgpool2.backward", format!("{shape}, +="), &f(&got[0]), &want, ELEMENTWISE));

    // Gram matrices, forward and backward, as the engine runs them.
    for (h, w, c) in [(9, 7, 20), (33, 31, 64)] {
        let p = GramParams::new(h, w, c);
        let shape = format!("{h}x{w}x{c}");
        let x: Vec<f32> = rng.vec(p.features_len(), -0.5, 1.5).into_iter().map(|v| v.max(0.0)).collect();
        let mut want = vec![0.0; p.gram_len()];
        gram::forward(&p, &wide(&x), &mut want);
        let got = run_once::<gram::Forward>(gpu, library, &p, &[b(&x), b(&vec![0.0; p.gram_len()])])?;
        out.push(compare("gram.forward", shape.clone(), &f(&got[0]), &want, DOT));
        if gram::ForwardBlocked::suits(&p) {
            let got = run_once::<gram::ForwardBlocked>(gpu, library, &p, &[b(&x), b(&vec![0.0; p.gram_len()])])?;
            out.push(compare("gram_blocked.forward", shape.clone(), &f(&got[0]), &want, DOT));
        }
        if library.has::<conv3x3_subgroup::Pointwise32>() && c % 32 == 0 {
            // Chunks of 256 positions: several chunks, the last one padded.
            let max_chunk = 256;
            let fb = gpu.buffer_from("check features", b(&x));
            let result = gpu.buffer_zeroed("check gram", 4 * p.gram_len() as u64);
            let scratch = gpu.buffer_zeroed("check scratch", 4 * gram::pointwise_scratch_len(&p, max_chunk) as u64);
            let zero = gpu.buffer_zeroed("check zero bias", 4 * c as u64);
            let steps = gram::pointwise_forward_steps(gpu, library, &p, max_chunk, [&fb, &result, &scratch, &zero])?;
            submit(gpu, "check gram forward", &steps.iter().collect::<Vec<_>>())?;
            let got = f(&gpu.read_buffers(&[&result])?[0]);
            let chunks = (p.positions as usize).div_ceil(p.chunk_len(max_chunk));
            out.push(compare("gram_pointwise.forward", format!("{shape}, {chunks} chunks"), &got, &want, DOT));
        }
        let gs = gram_subgroup::GramSliceParams::new(h, w, c).with_slice_len(200);
        if gram_subgroup::available(gpu, library, &gs) {
            let fb = gpu.buffer_from("check features", b(&x));
            let texture = conv3x3_subgroup::create_texture(gpu, "check gram features", gs.texture_size());
            let partials = gpu.buffer_zeroed("check gram partials", 4 * gs.partials_len() as u64);
            let result = gpu.buffer_zeroed("check gram", 4 * p.gram_len() as u64);
            let commands = gram_subgroup::forward_commands(gpu, library, &gs, &fb, &texture, &partials, &result)?;
            submit_commands(gpu, "check fast gram forward", &commands.iter().collect::<Vec<_>>())?;
            let got = f(&gpu.read_buffers(&[&result])?[0]);
            out.push(compare("gram_subgroup.forward", format!("{shape}, {} slices", gs.slices), &got, &want, DOT));
        }
        let pa = p.with_accumulate(true);
        let (dg, initial) = (rng.vec(p.gram_len(), -1.0, 1.0), rng.vec(p.features_len(), -1.0, 1.0));
        let mut want = wide(&initial);
        gram::backward(&pa, &wide(&x), &wide(&dg), &mut want);
        let got = run_once::<gram::Backward>(gpu, library, &pa, &[b(&x), b(&dg), b(&initial)])?;
        out.push(compare("gram.backward", format!("{shape}, +="), &f(&got[0]), &want, DOT));
        if library.has::<conv3x3_subgroup::Pointwise32>() && c % 32 == 0 {
            let sym = gpu.buffer_zeroed("check sym", 4 * p.gram_len() as u64);
            let (gb, fb) = (gpu.buffer_from("check grad gram", b(&dg)), gpu.buffer_from("check features", b(&x)));
            let zero = gpu.buffer_zeroed("check zero bias", 4 * c as u64);
            let result = gpu.buffer_from("check grad features", b(&initial));
            let first = Step::new::<gram::Symmetrize>(gpu, library, &pa, &[&gb, &sym])?;
            let conv = Conv3x3Params::new(h, w, c, c).with_accumulate(true);
            let second = Step::new::<conv3x3_subgroup::Pointwise32>(gpu, library, &conv, &[&sym, &zero, &fb, &result])?;
            submit(gpu, "check gram backward", &[&first, &second])?;
            let got = f(&gpu.read_buffers(&[&result])?[0]);
            out.push(compare("gram.symmetrize + conv1x1_subgroup", format!("{shape}, +="), &got, &want, DOT));
        }
    }

    // The two pieces of the pointwise Gram forward on their own: a transposed chunk running past
    // the last position, and the in-place scale.
    let t = transpose::TransposeParams::new(37, 12, 24, 16);
    let x = rng.vec(t.features_len(), -1.0, 1.0);
    let mut want = vec![0.0; t.transposed_len()];
    transpose::forward(&t, &wide(&x), &mut want);
    let got = run_once::<transpose::Forward>(gpu, library, &t, &[b(&x), b(&vec![0.0; t.transposed_len()])])?;
    out.push(compare("transpose.forward", "37x12, positions 24..40".into(), &f(&got[0]), &want, ELEMENTWISE));
    let p = GramParams::new(9, 7, 20);
    let g = rng.vec(p.gram_len(), -100.0, 100.0);
    let mut want = wide(&g);
    gram::scale(&p, &mut want);
    let got = run_once::<gram::Scale>(gpu, library, &p, &[b(&g)])?;
    out.push(compare("gram.scale", "20x20".into(), &f(&got[0]), &want, ELEMENTWISE));

    // Loss heads: squared difference (partials, then the reduction) and total variation.
    let n = 5000;
    let s = SqDiffParams::new(n, 0.25);
    let (x, y) = (rng.vec(n, -2.0, 2.0), rng.vec(n, -2.0, 2.0));
    let got = run_once::<sqdiff::Forward>(gpu, library, &s, &[b(&x), b(&y), b(&vec![0.0; s.partials()])])?;
    let mut want = vec![0.0; s.partials()];
    sqdiff::forward(&s, &wide(&x), &wide(&y), &mut want);
    let partials = f(&got[0]);
    out.push(compare("sqdiff.forward", format!("{n}"), &partials, &want, DOT));
    let rp = ReduceParams::new(s.partials(), 1);
    let got = run_once::<reduce::Sum>(gpu, library, &rp, &[b(&partials), b(&[0.0; 2])])?;
    let mut want = vec![0.0; 2];
    reduce::sum(&rp, &wide(&partials), &mut want);
    out.push(compare("reduce.sum", format!("{} partials", s.partials()), &f(&got[0]), &want, DOT));
    let sa = s.with_accumulate(true);
    let initial = rng.vec(n, -1.0, 1.0);
    let got = run_once::<sqdiff::Backward>(gpu, library, &sa, &[b(&x), b(&y), b(&initial)])?;
    let mut want = wide(&initial);
    sqdiff::backward(&sa, &wide(&x), &wide(&y), &mut want);
    out.push(compare("sqdiff.backward", format!("{n}, +="), &f(&got[0]), &want, ELEMENTWISE));

    let t = TvParams::new(9, 11, 4, 0.5);
    let x = rng.ties(t.len());
    let got = run_once::<tv::Forward>(gpu, library, &t, &[b(&x), b(&vec![0.0; t.partials()])])?;
    let mut want = vec![0.0; t.partials()];
    tv::forward(&t, &wide(&x), &mut want);
    out.push(compare("tv.forward", "9x11x4, equal neighbours".into(), &f(&got[0]), &want, DOT));
    let ta = t.with_accumulate(true);
    let initial = rng.vec(t.len(), -1.0, 1.0);
    let got = run_once::<tv::Backward>(gpu, library, &ta, &[b(&x), b(&initial)])?;
    let mut want = wide(&initial);
    tv::backward(&ta, &wide(&x), &mut want);
    out.push(compare("tv.backward", "9x11x4, equal neighbours, +=".into(), &f(&got[0]), &want, ELEMENTWISE));

    // Adam, one step with bounds.
    let n = 1003;
    let config = AdamConfig { lr: 0.5, ..AdamConfig::default() };
    let p = AdamParams::at_step(n, &config, 3).with_bounds([-1.0, -2.0, -3.0, 0.0], [1.0, 2.0, 3.0, 0.0]);
    let (grad, x) = (rng.vec(n, -1.0, 1.0), rng.vec(n, -3.0, 3.0));
    let (m, v) = (rng.vec(n, -0.1, 0.1), rng.vec(n, 0.0, 0.01));
    let got = run_once::<adam::Step>(gpu, library, &p, &[b(&grad), b(&x), b(&m), b(&v)])?;
    let (mut wx, mut wm, mut wv) = (wide(&x), wide(&m), wide(&v));
    adam::step(&p, &wide(&grad), &mut wx, &mut wm, &mut wv);
    out.push(compare("adam.step", format!("{n}, step 3, bounds"), &f(&got[0]), &wx, (1e-5, 1e-5)));

    // The optimisers' vector kernels: a dot product over several blocks, and the coefficient
    // read from the scalar buffer (a ratio with a difference, and a literal).
    let n = 2501;
    let (va, vb) = (rng.vec(n, -1.0, 1.0), rng.vec(n, -1.0, 1.0));
    let dp = vector::VectorParams::literal(n, 1.0);
    let got = run_once::<vector::DotPartials>(gpu, library, &dp, &[b(&va), b(&vb), b(&vec![0.0; dp.partials()])])?;
    let mut want = vec![0.0; dp.partials()];
    vector::dot_partials(&dp, &wide(&va), &wide(&vb), &mut want);
    out.push(compare("vector.dot_partials", format!("{n}, 3 blocks"), &f(&got[0]), &want, DOT));
    let scalars = [0.0f32, 1.0, 2.5, -0.5, 4.0];
    let ratio = vector::VectorParams::ratio(n, -0.75, 2, 3, 4, 1e-30).with_y_scale(0.5);
    let got = run_once::<vector::Axpby>(gpu, library, &ratio, &[b(&scalars), b(&va), b(&vb)])?;
    let mut want = wide(&vb);
    vector::axpby(&ratio, &wide(&scalars), &wide(&va), &mut want);
    out.push(compare("vector.axpby", format!("{n}, ratio coefficient"), &f(&got[0]), &want, ELEMENTWISE));
    let got = run_once::<vector::Scale>(gpu, library, &ratio, &[b(&scalars), b(&vb)])?;
    let mut want = wide(&vb);
    vector::scale(&ratio, &wide(&scalars), &mut want);
    out.push(compare("vector.scale", format!("{n}, ratio coefficient"), &f(&got[0]), &want, ELEMENTWISE));
    let sp = vector::VectorParams::literal(n, -1.5).with_bounds([-1.0, -0.5, -0.25, 0.0], [1.0, 0.5, 0.25, 0.0]);
    let got = run_once::<vector::StepClamped>(gpu, library, &sp, &[b(&scalars), b(&va), b(&vb)])?;
    let mut want = wide(&vb);
    vector::step(&sp, &wide(&scalars), &wide(&va), &mut want);
    out.push(compare("vector.step", format!("{n}, bounds"), &f(&got[0]), &want, ELEMENTWISE));

    // Image conversion both ways.
    let pixels = 257;
    let ip = ImageParams::new(pixels);
    let rgba: Vec<u32> =
        (0..pixels).map(|_| pack_rgba([0, 1, 2, 3].map(|_| rng.uniform(0.0, 256.0).floor() as u8))).collect();
    let got =
        run_once::<image::ToNetwork>(gpu, library, &ip, &[b(bytemuck::cast_slice(&rgba)), b(&vec![0.0; 4 * pixels])])?;
    let mut want = vec![0.0; 4 * pixels];
    image::to_network(&ip, &rgba, &mut want);
    let net = f(&got[0]);
    out.push(compare("image.to_network", format!("{pixels} pixels"), &net, &want, (1e-5, 1e-6)));
    let got = run_once::<image::FromNetwork>(gpu, library, &ip, &[b(&net), &vec![0u8; 4 * pixels]])?;
    let mut want = vec![0u32; pixels];
    image::from_network(&ip, &wide(&net), &mut want);
    let got: Vec<f32> =
        bytemuck::cast_slice::<u8, u32>(&got[0]).iter().flat_map(|p| p.to_le_bytes().map(f32::from)).collect();
    let want: Vec<f64> = want.iter().flat_map(|p| p.to_le_bytes().map(f64::from)).collect();
    out.push(compare("image.from_network", format!("{pixels} pixels"), &got, &want, (0.0, 0.0)));
    Ok(out)
}

/// The subgroup conv of `p`'s tile on buffers, and on textures where they fit: (kernel, output).
#[allow(clippy::too_many_arguments)]
fn fast_conv(
    gpu: &Gpu,
    library: &KernelLibrary,
    p: &Conv3x3Params,
    weights: &[f32],
    bias: &[f32],
    input: &[f32],
    initial: &[f32],
) -> Result<Vec<(String, Vec<f32>)>> {
    let mut out = Vec::new();
    let Some(tile) = conv3x3_subgroup::tile_for(p) else {
        return Ok(out);
    };
    let inputs = [b(weights), b(bias), b(input), b(initial)];
    let got = match tile {
        16 => run_once::<conv3x3_subgroup::Forward16>(gpu, library, p, &inputs)?,
        _ => run_once::<conv3x3_subgroup::Forward4>(gpu, library, p, &inputs)?,
    };
    out.push((format!("conv3x3_subgroup_co{tile}"), f(&got[0])));
    if conv3x3_subgroup::texture_kernels_built(library)
        && conv3x3_subgroup::textures_fit(p, gpu.limits.max_texture_dimension_2d)
    {
        let wt = conv3x3_subgroup::weights_texture(gpu, "check weights", p, weights);
        let it = conv3x3_subgroup::create_texture(gpu, "check input", conv3x3_subgroup::input_texture_size(p));
        let input_buffer = gpu.buffer_from("check input", b(input));
        let bias = gpu.buffer_from("check bias", b(bias));
        let result = gpu.buffer_from("check output", b(initial));
        let resources =
            [Resource::Texture(&wt), Resource::Buffer(&bias), Resource::Texture(&it), Resource::Buffer(&result)];
        let (step, _) = conv3x3_subgroup::bind_textured(gpu, library, p, &resources)?;
        let copy = conv3x3_subgroup::map_copy(&input_buffer, &it, p.height, p.width, p.in_channels);
        submit_commands(gpu, "check texture conv", &[&copy, &Command::Dispatch(step)])?;
        out.push((format!("conv3x3_subgroup_tex_co{tile}"), f(&gpu.read_buffers(&[&result])?[0])));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_or_nan_element_fails_the_comparison() {
        let want = [1.0, 2.0, -3.0];
        assert!(compare("k", String::new(), &[1.0, 2.0, -3.0], &want, (1e-6, 1e-6)).passed);
        let wrong = compare("k", String::new(), &[1.0, 2.001, -3.0], &want, (1e-6, 1e-6));
        assert!(!wrong.passed);
        assert!((wrong.max_error - 1e-3).abs() < 1e-6);
        assert!(!compare("k", String::new(), &[1.0, f32::NAN, -3.0], &want, (1e-6, 1e-6)).passed);
        assert!(!compare("k", String::new(), &[1.0, 2.0], &want, (1e-6, 1e-6)).passed, "missing elements");
    }
}
