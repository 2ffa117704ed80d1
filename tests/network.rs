//! VGG19 with the real weights: the GPU engine against the CPU reference executing the same tape,
//! layer by layer and for the gradient of a full style-transfer loss; the CPU gradient against
//! finite differences; the memory report against what the engine allocates.

mod common;

use std::sync::OnceLock;

use common::{assert_close, to_f64, Rng};
use nst::net::cpu::{capture_targets, new_values, CpuNet};
use nst::net::plan::ConvChoice;
use nst::net::tape::BackOp;
use nst::net::{vgg, Capabilities, Engine, LossKind, LossSpec, Plan, Pooling, Tape, Vgg19Weights};
use nst::ops::image::{self, ImageParams};

fn weights() -> &'static Vgg19Weights {
    static W: OnceLock<Vgg19Weights> = OnceLock::new();
    W.get_or_init(|| Vgg19Weights::embedded().expect("the embedded weights load"))
}

/// A deterministic test picture: smooth gradients, a few edges, and noise, as packed RGBA8.
fn picture(h: usize, w: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let phase = rng.uniform(0.0, 6.0);
    (0..h * w)
        .map(|i| {
            let (y, x) = ((i / w) as f64 / h as f64, (i % w) as f64 / w as f64);
            let wave = |f: f64, p: f64| 127.5 + 100.0 * (f * (x + 0.7 * y) + p + phase).sin();
            let edge = if (x - 0.5).abs() < 0.1 { 60.0 } else { 0.0 };
            let mut c = |base: f64| (base + edge + rng.uniform(-20.0, 20.0)).clamp(0.0, 255.0) as u8;
            image::pack_rgba([c(wave(7.0, 0.0)), c(wave(11.0, 1.0)), c(wave(5.0, 2.0)), 255])
        })
        .collect()
}

fn network_image<T: nst::Real>(rgba: &[u32]) -> Vec<T> {
    let p = ImageParams::new(rgba.len());
    let mut out = vec![T::zero(); p.network_len()];
    image::to_network(&p, rgba, &mut out);
    out
}

fn style_spec(h: usize, w: usize, pooling: Pooling) -> LossSpec {
    let style = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"];
    LossSpec {
        height: h,
        width: w,
        pooling,
        content: vec![("relu4_2".into(), 1.0)],
        style: style.iter().map(|l| (l.to_string(), 1e-6 / 5.0)).collect(),
        tv: 1e-2,
    }
}

#[test]
fn every_layer_output_matches_the_cpu_reference_with_the_real_weights() {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    let (h, w) = (40, 56);
    for pooling in [Pooling::Max, Pooling::Avg] {
        // A content loss on every layer keeps every output in its own buffer, readable afterwards.
        let spec = LossSpec {
            height: h,
            width: w,
            pooling,
            content: vgg::layer_names().into_iter().map(|n| (n, 1.0)).collect(),
            style: vec![],
            tv: 0.0,
        };
        let tape = Tape::build(&spec).unwrap();
        let engine = Engine::new(gpu, lib, weights(), tape.clone()).unwrap();
        let rgba = picture(h, w, 1);
        engine.set_image_rgba(&rgba).unwrap();
        engine.forward().unwrap();

        let cpu = CpuNet::<f64>::new(weights(), &tape);
        let mut values = new_values::<f64>(&tape);
        values[tape.image] = network_image(&rgba);
        cpu.forward(&tape, &mut values);

        for (name, t) in &tape.outputs {
            let got = engine.read(*t).unwrap();
            let want = &values[*t];
            let (th, tw, tc) = tape.tensors[*t].shape;
            // f32 rounding compounds through up to 16 layers; relative to the layer's scale.
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert_close(
                &format!("{name} ({pooling:?} pooling) {th}x{tw}x{tc}"),
                &got,
                want,
                &[th, tw, tc],
                1e-5 * scale,
                1e-4,
            );
        }
    }
}

#[test]
fn the_first_layer_sees_the_image_as_vgg19_expects_bgr_minus_the_mean() {
    let Some((gpu, lib)) = common::gpu() else { return };
    // Independent of the tape: conv1_1 with the file's 3-channel weights on the 3-channel BGR image.
    let (h, w) = (9, 16);
    let spec = LossSpec {
        height: h,
        width: w,
        pooling: Pooling::Max,
        content: vec![("relu1_1".into(), 1.0)],
        style: vec![],
        tv: 0.0,
    };
    let tape = Tape::build(&spec).unwrap();
    let engine = Engine::new(gpu, lib, weights(), tape.clone()).unwrap();
    let rgba = picture(h, w, 9);
    engine.set_image_rgba(&rgba).unwrap();
    engine.forward().unwrap();
    let got = engine.read(tape.output("relu1_1").unwrap()).unwrap();

    let bgr: Vec<f64> = network_image::<f64>(&rgba).chunks(4).flat_map(|p| p[..3].to_vec()).collect();
    let c = &weights().convs[0];
    let p = nst::ops::conv3x3::Conv3x3Params::new(h, w, 3, 64).with_relu(true);
    let mut want = vec![0.0; p.output_len()];
    nst::ops::conv3x3::forward(&p, &to_f64(&c.weights), &to_f64(&c.bias), &bgr, &mut want);
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert_close("relu1_1 from the 3-channel image", &got, &want, &[h, w, 64], 1e-5 * scale, 1e-4);
}

/// Targets from a style and a content picture, then the loss and its gradient at a third.
fn gpu_loss_and_gradient(
    engine: &Engine,
    tape: &Tape,
    style: &[u32],
    content: &[u32],
    x: &[u32],
) -> (Vec<f32>, Vec<f32>) {
    engine.set_image_rgba(style).unwrap();
    engine.forward().unwrap();
    engine.capture_targets(LossKind::Style).unwrap();
    engine.set_image_rgba(content).unwrap();
    engine.forward().unwrap();
    engine.capture_targets(LossKind::Content).unwrap();
    engine.set_image_rgba(x).unwrap();
    let losses = engine.iterate().unwrap();
    (losses, engine.read(tape.image_grad().unwrap()).unwrap())
}

fn cpu_setup(tape: &Tape, style: &[u32], content: &[u32]) -> (CpuNet<f64>, Vec<Vec<f64>>) {
    let cpu = CpuNet::<f64>::new(weights(), tape);
    let mut values = new_values::<f64>(tape);
    values[tape.image] = network_image(style);
    cpu.forward(tape, &mut values);
    capture_targets(tape, &mut values, LossKind::Style);
    values[tape.image] = network_image(content);
    cpu.forward(tape, &mut values);
    capture_targets(tape, &mut values, LossKind::Content);
    (cpu, values)
}

/// Runs `engine` on seeded pictures of its tape's size and holds its losses and d loss / d image to
/// the CPU reference executing the same tape in f64; returns the largest gradient error over the
/// largest gradient.
fn assert_matches_cpu(engine: &Engine, what: &str) -> f64 {
    let tape = &engine.tape;
    let (h, w) = engine.size();
    let (style, content, x) = (picture(h, w, 2), picture(h, w, 3), picture(h, w, 4));
    let (losses, grad) = gpu_loss_and_gradient(engine, tape, &style, &content, &x);

    let (cpu, mut values) = cpu_setup(tape, &style, &content);
    values[tape.image] = network_image(&x);
    let want_losses = cpu.forward(tape, &mut values);
    cpu.backward(tape, &mut values);
    let want = &values[tape.image_grad().unwrap()];

    for (i, term) in tape.losses.iter().enumerate() {
        let which = format!("loss {:?} {} ({what})", term.kind, term.layer);
        assert_close(&which, &losses[i..=i], &want_losses[i..=i], &[1], 0.0, 1e-4);
    }
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0);
    assert_close(&format!("d loss / d image ({what}) {h}x{w}"), &grad, want, &[h, w, 4], 1e-4 * scale, 1e-3);
    grad.iter().zip(want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max) / scale
}

#[test]
fn the_gradient_of_the_full_loss_through_vgg19_matches_the_cpu_reference() {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    for pooling in [Pooling::Max, Pooling::Avg] {
        let tape = Tape::build(&style_spec(32, 44, pooling)).unwrap();
        let engine = Engine::new(gpu, lib, weights(), tape).unwrap();
        let worst = assert_matches_cpu(&engine, &format!("{pooling:?} pooling"));
        println!("gradient ({pooling:?} pooling): largest error / largest gradient = {worst:.3e}");
    }
}

/// A band limit that splits every map of a 32x44 render from relu1_1 to relu3_4 into bands of
/// uneven height (conv bands of 3 rows, the last of 2; pool bands of 2 output rows), the Gram
/// forwards into chunks, and the style losses over 512-channel Grams into blocks.
const SMALL_BANDS: u64 = 60_000;

/// The kernel choices whose banding differs: this device's own (Gram forward through a texture,
/// which bands need not split), the Gram forward as pointwise-conv chunks, and the portable
/// kernels (banded plain Gram forward and backward).
fn kernel_variants(gpu: &nst::gpu::Gpu, lib: &nst::gpu::KernelLibrary) -> Vec<(&'static str, Capabilities)> {
    let own = Capabilities::of(gpu, lib);
    let pointwise = Capabilities { subgroup_gram: false, ..own };
    // Without subgroups and textures: every conv that suits it runs as the portable Winograd conv
    // (storage operands, no broadcasts), the gradient into the image as the portable direct conv.
    let portable = Capabilities {
        texture_conv: None,
        subgroup_conv: false,
        pointwise_gram: false,
        subgroup_gram: false,
        winograd_subgroup: false,
        winograd_textures: None,
        ..own
    };
    // No subgroups, but textures: the portable Winograd products read textures.
    let no_subgroups = Capabilities { winograd_textures: own.winograd_textures, ..portable };
    vec![
        ("this device's kernels", own),
        ("pointwise Gram forward", pointwise),
        ("portable kernels", portable),
        ("Winograd wherever it suits", own.with_conv(ConvChoice::Winograd)),
        ("portable kernels, direct conv", portable.with_conv(ConvChoice::Direct)),
        ("no subgroups, Winograd in textures", no_subgroups),
    ]
}

#[test]
fn the_gradient_of_a_network_run_in_small_bands_matches_the_cpu_reference() {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    for ((name, caps), pooling) in kernel_variants(gpu, lib).into_iter().zip([
        Pooling::Max,
        Pooling::Avg,
        Pooling::Max,
        Pooling::Avg,
        Pooling::Max,
    ]) {
        let tape = Tape::build(&style_spec(32, 44, pooling)).unwrap();
        let caps = caps.with_band_limit(SMALL_BANDS);
        let plan = Plan::new(&tape, &caps);
        assert!(plan.banded_ops() >= 20, "only {} ops banded", plan.banded_ops());
        plan.check_fits().unwrap();
        let engine = Engine::with_capabilities(gpu, lib, weights(), tape, &caps).unwrap();
        // The tolerances of the unbanded test above.
        assert_matches_cpu(&engine, &format!("in bands, {pooling:?} pooling, {name}"));
    }
}

#[test]
fn a_plan_in_bands_binds_every_map_in_pieces_within_the_limit_at_aligned_offsets() {
    // No GPU: the portable kernels' plan, with a band limit a tenth of relu1_1.
    let tape = Tape::build(&style_spec(32, 44, Pooling::Max)).unwrap();
    let caps = Capabilities::portable().with_band_limit(SMALL_BANDS);
    let plan = Plan::new(&tape, &caps);
    plan.check_fits().unwrap();
    assert!(plan.banded_ops() >= 20, "only {} ops banded", plan.banded_ops());
    let maps: std::collections::HashSet<usize> = tape
        .tensors
        .iter()
        .enumerate()
        .filter(|(_, t)| t.shape.2 > 1 || t.kind == nst::net::tape::TensorKind::Masked)
        .map(|(i, _)| plan.tensors[i])
        .collect();
    let mut ranges = 0;
    for command in plan.forward.iter().chain(&plan.backward) {
        let nst::gpu::Planned::Dispatch { kernel, operands, .. } = command else { continue };
        for o in operands {
            let bytes = match o.range {
                Some((offset, size)) => {
                    assert!(offset.is_multiple_of(caps.offset_alignment), "{kernel:?} binds {o:?} unaligned");
                    assert!(offset + size <= plan.resources[o.id].bytes(), "{kernel:?} binds {o:?} past its end");
                    ranges += 1;
                    size
                }
                None => plan.resources[o.id].bytes(),
            };
            if maps.contains(&o.id) {
                assert!(bytes <= SMALL_BANDS, "{kernel:?} binds {bytes} bytes of {}", plan.resources[o.id].label);
            }
        }
    }
    assert!(ranges > 100, "{ranges} ranges");
}

#[test]
fn at_print_sizes_every_binding_of_the_plan_fits_a_128_mib_binding_limit() {
    // No GPU: lavapipe's limits with each kernel choice, at sizes up to the strongest peer's.
    let limit = 128 << 20;
    let base =
        Capabilities { binding_limit: limit, band_limit: limit, offset_alignment: 32, ..Capabilities::portable() };
    let subgroups = Capabilities { subgroup_conv: true, pointwise_gram: true, ..base };
    let textures = Capabilities { texture_conv: Some(16384), subgroup_gram: true, ..subgroups };
    let options = nst::render::RenderOptions::default();
    for (w, h) in [(1448, 1448), (2048, 2048), (2896, 2172)] {
        let tape = Tape::build(&options.loss_spec(w, h)).unwrap();
        for caps in [base, subgroups, textures] {
            let plan = Plan::new(&tape, &caps);
            plan.check_fits().unwrap();
            for command in plan.forward.iter().chain(&plan.backward).chain([&plan.to_network, &plan.from_network]) {
                let nst::gpu::Planned::Dispatch { kernel, operands, .. } = command else { continue };
                for o in operands {
                    let r = &plan.resources[o.id];
                    if matches!(r.shape, nst::net::plan::Shape::Texture(..)) {
                        continue;
                    }
                    let bytes = o.range.map_or(r.bytes(), |(_, size)| size);
                    assert!(bytes <= limit, "{w}x{h}: {kernel:?} binds {} MiB of {}", bytes >> 20, r.label);
                }
            }
        }
    }
}

#[test]
fn banded_and_unbanded_runs_give_the_same_losses_and_a_banded_run_repeats_bit_for_bit() {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    let (h, w) = (32, 44);
    let tape = Tape::build(&style_spec(h, w, Pooling::Max)).unwrap();
    let (style, content, x) = (picture(h, w, 5), picture(h, w, 6), picture(h, w, 7));
    for (name, caps) in kernel_variants(gpu, lib) {
        let run = |caps: &Capabilities| {
            let engine = Engine::with_capabilities(gpu, lib, weights(), tape.clone(), caps).unwrap();
            (engine.plan().banded_ops(), gpu_loss_and_gradient(&engine, &tape, &style, &content, &x))
        };
        let (unbanded, (whole_losses, whole_grad)) = run(&caps);
        assert_eq!(unbanded, 0);
        let small = caps.with_band_limit(SMALL_BANDS);
        let (banded, (losses, grad)) = run(&small);
        assert!(banded > 0);
        let (_, again) = run(&small);
        assert_eq!(losses, again.0, "banded losses differ between runs ({name})");
        assert_eq!(grad, again.1, "banded gradients differ between runs ({name})");
        // Bands change only the order in which a Gram forward sums its positions (convs, pools
        // and losses do the same arithmetic in bands, and agree bit for bit): f32 rounding, held
        // to the tolerances of the GPU against the f64 CPU reference, which allow for the same.
        // (A style loss is a sum of squared differences of Gram entries, so a reordered sum's
        // rounding reaches it amplified: 1.1e-5 relative on relu1_1 was measured.)
        let want: Vec<f64> = whole_losses.iter().map(|&v| v as f64).collect();
        assert_close(&format!("losses, banded against unbanded ({name})"), &losses, &want, &[want.len()], 0.0, 1e-4);
        let want: Vec<f64> = whole_grad.iter().map(|&v| v as f64).collect();
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let what = format!("d loss / d image, banded against unbanded ({name})");
        assert_close(&what, &grad, &want, &[h, w, 4], 1e-4 * scale, 1e-3);
        if name == "this device's kernels" {
            // With the direct conv, bands change no bit here. (With Winograd a band that holds
            // fewer than 4 rows takes F(2x2) for F(4x4), other rounding, held by the tolerances
            // above; a Winograd conv in bands of one tile equals its whole map bit for bit:
            // tests/winograd.rs.)
            let direct = caps.with_conv(ConvChoice::Direct);
            let (_, (whole_losses, whole_grad)) = run(&direct);
            let (_, (losses, grad)) = run(&direct.with_band_limit(SMALL_BANDS));
            assert_eq!(losses, whole_losses, "without a chunked Gram forward, bands change no bit");
            assert_eq!(grad, whole_grad, "without a chunked Gram forward, bands change no bit");
        }
    }
}

#[test]
fn the_cpu_gradient_through_vgg19_matches_finite_differences() {
    check_finite_differences(&style_spec(24, 20, Pooling::Max));
}

#[test]
fn the_cpu_gradient_matches_finite_differences_where_pools_add_to_a_loss_gradient_before_the_mask() {
    // Losses on the layers the pools read: each max pool's backward adds to a loss's gradient and
    // applies ReLU's mask to the sum.
    let spec = LossSpec {
        content: vec![("relu3_4".into(), 1.0)],
        style: ["relu1_2", "relu2_2", "relu4_1"].iter().map(|l| (l.to_string(), 1e-6 / 3.0)).collect(),
        ..style_spec(24, 20, Pooling::Max)
    };
    let tape = Tape::build(&spec).unwrap();
    let masked_sums = tape
        .backward
        .iter()
        .filter(|op| matches!(op, BackOp::MaxPool { params, .. } if params.mask != 0 && params.accumulate != 0))
        .count();
    assert_eq!(masked_sums, 3, "relu1_2, relu2_2 and relu3_4 get a loss's gradient and the pool's");
    check_finite_differences(&spec);
}

fn check_finite_differences(spec: &LossSpec) {
    let (h, w) = (spec.height, spec.width);
    let tape = Tape::build(spec).unwrap();
    let (style, content, x) = (picture(h, w, 5), picture(h, w, 6), picture(h, w, 7));
    let (cpu, mut values) = cpu_setup(&tape, &style, &content);
    let x: Vec<f64> = network_image(&x);
    values[tape.image] = x.clone();
    cpu.forward(&tape, &mut values);
    cpu.backward(&tape, &mut values);
    let grad = values[tape.image_grad().unwrap()].clone();
    let scale = grad.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let loss_at = |x: &[f64], values: &mut Vec<Vec<f64>>| {
        values[tape.image] = x.to_vec();
        cpu.forward(&tape, values).iter().sum::<f64>()
    };
    let mut rng = Rng::new(8);
    let hstep = 1e-3;
    let mut worst = 0.0f64;
    for _ in 0..6 {
        // Channels 0..3 are B, G, R; the fourth is the constant zero padding, not a variable.
        let k = 4 * rng.below(x.len() / 4) + rng.below(3);
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[k] += hstep;
        xm[k] -= hstep;
        let fd = (loss_at(&xp, &mut values) - loss_at(&xm, &mut values)) / (2.0 * hstep);
        let err = (fd - grad[k]).abs() / scale;
        assert!(
            err < 1e-6,
            "pixel element {k}: backward {} vs finite differences {fd} (error {err:e} of the largest gradient {scale})",
            grad[k]
        );
        worst = worst.max(err);
    }
    println!("finite differences through VGG19 {h}x{w}: worst error / largest gradient = {worst:.2e}");
}

#[test]
fn the_memory_report_predicts_what_the_engine_allocates() {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    for (h, w) in [(40, 56), (33, 17), (32, 48)] {
        let tape = Tape::build(&style_spec(h, w, Pooling::Max)).unwrap();
        let engine = Engine::new(gpu, lib, weights(), tape.clone()).unwrap();
        let plan = Plan::new(&tape, &Capabilities::of(gpu, lib));
        let predicted = plan.memory().total();
        assert_eq!(engine.allocated_bytes(), predicted, "{h}x{w} with {:?}", plan.capabilities);
        assert_eq!(engine.plan().memory(), plan.memory(), "the engine's plan is the one planned here");
    }
    let here = Capabilities::of(gpu, lib);
    for side in [256, 512, 1024] {
        let tape = Tape::build(&style_spec(side, side, Pooling::Max)).unwrap();
        let memory = |caps: &Capabilities| Plan::new(&tape, caps).memory();
        for (what, m) in
            [("portable kernels", memory(&Capabilities::portable())), ("this adapter's kernels", memory(&here))]
        {
            let mib = |b: u64| b as f64 / 1048576.0;
            println!(
                "memory at {side}x{side} with {what}: total {:.1} MiB (weights {:.1}, activations {:.1}, gradients {:.1}, targets {:.1}, other {:.1}); largest buffer {:.1} MiB",
                mib(m.total()),
                mib(m.weights),
                mib(m.activations),
                mib(m.gradients),
                mib(m.targets),
                mib(m.other),
                mib(m.largest_buffer)
            );
        }
    }
}

#[test]
fn a_size_whose_maps_exceed_one_binding_is_planned_in_bands_and_one_past_the_buffer_limit_is_refused() {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    let caps = Capabilities::of(gpu, lib);
    // relu1_1 holds 64 channels, 256 bytes a pixel: a square just past the binding limit is
    // banded (and fits), one past the buffer limit is refused before anything is allocated.
    let side = |bytes: u64| ((bytes / 256) as f64).sqrt() as usize + 1;
    let banded = Tape::build(&style_spec(side(caps.binding_limit), side(caps.binding_limit), Pooling::Max)).unwrap();
    let plan = Plan::new(&banded, &caps);
    assert!(plan.memory().largest_buffer > caps.binding_limit);
    assert!(plan.banded_ops() > 0);
    if caps.memory_limit.is_none_or(|m| plan.memory().total() < m) {
        plan.check_fits().unwrap();
    }
    let n = side(caps.buffer_limit);
    let tape = Tape::build(&style_spec(n, n, Pooling::Max)).unwrap();
    let err = Engine::new(gpu, lib, weights(), tape).err().expect("refused");
    assert!(matches!(err, nst::Error::ImageSize { .. }), "{err}");
    assert!(err.to_string().contains("use a smaller size"), "{err}");
}

#[test]
fn a_size_beyond_the_adapters_memory_is_refused_with_both_numbers() {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    let tape = Tape::build(&style_spec(256, 256, Pooling::Max)).unwrap();
    let caps = Capabilities::of(gpu, lib);
    let need = Plan::new(&tape, &caps).memory().total();
    let small = Capabilities { memory_limit: Some(need - (1 << 20)), ..caps };
    let err = Plan::new(&tape, &small).check_fits().unwrap_err().to_string();
    let (need, have) = (format!("{} MiB", need >> 20), format!("{} MiB", (need - (1 << 20)) >> 20));
    assert!(err.contains(&need) && err.contains(&have), "{err}");
    assert!(err.contains("use a smaller size"), "{err}");
}

#[test]
fn an_image_smaller_than_the_deepest_layer_needs_is_refused() {
    let err = Tape::build(&style_spec(15, 40, Pooling::Max)).unwrap_err();
    assert!(err.to_string().contains("relu5_1 needs at least 16x16"), "{err}");
}

#[test]
fn the_tape_applies_each_relus_gradient_in_the_last_writer_of_its_output_gradient() {
    // With max pooling only the deepest layer, whose gradient comes from its Gram loss alone,
    // needs a ReLU backward op; every other conv's mask rides on the next conv's input gradient
    // or on the max pool's backward. An average pool cannot apply it: four more ReLU ops.
    for (pooling, relu_ops) in [(Pooling::Max, 1), (Pooling::Avg, 5)] {
        let tape = Tape::build(&style_spec(32, 32, pooling)).unwrap();
        let count = |f: &dyn Fn(&BackOp) -> bool| tape.backward.iter().filter(|op| f(op)).count();
        assert_eq!(count(&|op| matches!(op, BackOp::Relu { .. })), relu_ops, "{pooling:?} pooling");
        let convs = tape.conv_params().count();
        let masked_convs = count(&|op| matches!(op, BackOp::ConvInput { mask: Some(_), .. }));
        let masked_pools = count(&|op| matches!(op, BackOp::MaxPool { params, .. } if params.mask != 0));
        // 13 convs to relu5_1: conv1_1's input gradient reaches the image (no ReLU); of the other
        // 12 convs' ReLUs, 4 feed pools and 1 is the deepest.
        assert_eq!(convs, 13);
        match pooling {
            Pooling::Max => assert_eq!((masked_convs, masked_pools), (12 - 4, 4)),
            Pooling::Avg => assert_eq!((masked_convs, masked_pools), (12 - 4, 0)),
        }
        // Every masked gradient is what the conv before reads, written by its last writer.
        for (i, op) in tape.backward.iter().enumerate() {
            if let BackOp::ConvInput { masked, .. } = op {
                let last = tape.backward[..i].iter().rev().find(|w| w.writes() == *masked).unwrap();
                let fused = matches!(last, BackOp::ConvInput { mask: Some(_), .. })
                    || matches!(last, BackOp::MaxPool { params, .. } if params.mask != 0)
                    || matches!(last, BackOp::Relu { .. });
                assert!(fused, "op {i} reads a gradient whose ReLU mask nobody applied: {last:?}");
            }
        }
    }
}

#[test]
fn the_tape_sums_the_gradients_of_a_style_layer_from_its_gram_and_the_next_conv() {
    let tape = Tape::build(&style_spec(32, 32, Pooling::Max)).unwrap();
    let relu3_1 = tape.output("relu3_1").unwrap();
    let grad = tape.grads[&relu3_1];
    let writers: Vec<bool> = tape
        .backward
        .iter()
        .filter_map(|op| match op {
            BackOp::Gram { grad_features, params, .. } if *grad_features == grad => Some(params.accumulate != 0),
            BackOp::ConvInput { grad_input, params, .. } if *grad_input == grad => Some(params.accumulate != 0),
            _ => None,
        })
        .collect();
    assert_eq!(writers, vec![false, true], "first writer overwrites, the second adds");
}

#[test]
fn new_loss_weights_on_a_recorded_tape_equal_a_tape_recorded_with_them() {
    let first = style_spec(32, 48, Pooling::Max);
    let mut second = first.clone();
    second.content[0].1 = 3.5;
    for (k, (_, w)) in second.style.iter_mut().enumerate() {
        *w *= 0.25 + k as f64;
    }
    second.tv = 7e-3;
    let reweighted = Tape::build(&first).unwrap().with_loss_weights(&second).unwrap();
    let recorded = Tape::build(&second).unwrap();
    assert_eq!(format!("{:?}", reweighted.forward), format!("{:?}", recorded.forward));
    assert_eq!(format!("{:?}", reweighted.backward), format!("{:?}", recorded.backward));
    let mut other_layers = second.clone();
    other_layers.style.pop();
    assert!(Tape::build(&first).unwrap().with_loss_weights(&other_layers).is_err(), "the layers must be the same");
}

#[test]
fn the_largest_fitting_size_fits_and_one_pixel_more_on_the_long_edge_does_not() {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    let options = nst::render::RenderOptions::default();
    let caps = Capabilities::of(gpu, lib);
    // With the optimiser's buffers, as a render checks it.
    let fits = |(w, h): (usize, usize)| {
        Plan::new(&Tape::build(&options.loss_spec(w, h)).unwrap(), &caps)
            .check_fits_with(options.optimiser_bytes(w * h))
    };
    for shape in [(1024, 768), (512, 512), (300, 1000)] {
        let (w, h) = nst::render::largest_fitting_size(gpu, lib, &options, shape).expect("some size fits");
        assert!(fits((w, h)).is_ok(), "{w}x{h} for {shape:?}");
        let edge = w.max(h) + 1;
        let bigger = nst::render::Size::LongEdge(edge).of(shape.0, shape.1);
        assert!(fits(bigger).is_err(), "{bigger:?} fits too, for {shape:?}");
        println!("largest of {shape:?}: {w}x{h}");
    }
}
