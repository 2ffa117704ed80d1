//! Every kernel on the GPU against its CPU twin evaluated in f64 from the same f32 inputs, on seeded
//! random data: odd shapes (1x1, 3 channels, sizes that are not multiples of the workgroup) and
//! VGG19-like shapes, with edge cases on purpose (pooling ties, ReLU at exactly 0, equal TV
//! neighbours).

mod common;

use common::{assert_close, assert_close_bound, assert_same_u32, bytes, floats, to_f64, Rng};
use nst::gpu::{run_once, submit, submit_commands, Command, Step};
use nst::ops::{
    adam, avgpool2, conv3x3, conv3x3_subgroup, gram, gram_subgroup, image, maxpool2, reduce, relu, sqdiff, transpose,
    tv,
};
use nst::ops::{adam::AdamParams, conv3x3::Conv3x3Params, gram::GramParams, maxpool2::Pool2Params};

/// A dot product of K f32 terms of magnitude ~1 is off by a few units of 1e-7 * sqrt(K); 1e-4 leaves
/// room for K up to 512 * 9 with fused multiply-adds in any order.
const DOT_ATOL: f64 = 1e-4;
const DOT_RTOL: f64 = 1e-4;
/// Elementwise kernels do one or two roundings.
const ELEM_TOL: f64 = 1e-6;

fn zeros(n: usize) -> Vec<u8> {
    vec![0; 4 * n]
}

/// Weights scaled like He initialisation, so activations stay of order 1 through deep stacks.
fn conv_weights(rng: &mut Rng, p: &Conv3x3Params) -> (Vec<f32>, Vec<f32>) {
    let a = (6.0 / (9.0 * p.in_channels as f64)).sqrt();
    (rng.vec_f32(p.weights_len(), -a, a), rng.vec_f32(p.bias_len(), -0.1, 0.1))
}

fn check_conv_forward(h: usize, w: usize, cin: usize, cout: usize, relu: bool, seed: u64) {
    check_conv_forward_into(h, w, cin, cout, relu, false, seed);
}

fn check_conv_forward_into(h: usize, w: usize, cin: usize, cout: usize, relu: bool, accumulate: bool, seed: u64) {
    let Some((gpu, lib)) = common::gpu() else { return };
    let p = Conv3x3Params::new(h, w, cin, cout).with_relu(relu).with_accumulate(accumulate);
    let mut rng = Rng::new(seed);
    let (weights, bias) = conv_weights(&mut rng, &p);
    let input = rng.vec_f32(p.input_len(), -1.0, 1.0);
    let initial = if accumulate { rng.vec_f32(p.output_len(), -1.0, 1.0) } else { vec![0.0; p.output_len()] };
    let out =
        run_once::<conv3x3::Forward>(gpu, lib, &p, &[bytes(&weights), bytes(&bias), bytes(&input), bytes(&initial)])
            .unwrap();
    let mut want = to_f64(&initial);
    conv3x3::forward(&p, &to_f64(&weights), &to_f64(&bias), &to_f64(&input), &mut want);
    let what = format!("conv3x3.forward {h}x{w} {cin}->{cout} relu={relu} accumulate={accumulate}");
    assert_close(&what, &floats(&out[0]), &want, &[h, w, cout], DOT_ATOL, DOT_RTOL);
}

fn check_conv_backward(h: usize, w: usize, cin: usize, cout: usize, accumulate: bool, seed: u64) {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    let p = Conv3x3Params::new(h, w, cin, cout).with_accumulate(accumulate);
    let mut rng = Rng::new(seed);
    let (weights, _) = conv_weights(&mut rng, &p);
    let grad_output = rng.vec_f32(p.output_len(), -1.0, 1.0);
    let initial = rng.vec_f32(p.input_len(), -1.0, 1.0);
    let out =
        run_once::<conv3x3::BackwardInput>(gpu, lib, &p, &[bytes(&weights), bytes(&grad_output), bytes(&initial)])
            .unwrap();
    let mut want = to_f64(&initial);
    conv3x3::backward_input(&p, &to_f64(&weights), &to_f64(&grad_output), &mut want);
    let what = format!("conv3x3.backward_input {h}x{w} {cin}<-{cout} accumulate={accumulate}");
    assert_close(&what, &floats(&out[0]), &want, &[h, w, cin], DOT_ATOL, DOT_RTOL);
}

#[test]
fn conv3x3_forward_matches_cpu_at_odd_shapes() {
    check_conv_forward(1, 1, 3, 1, false, 1);
    check_conv_forward(1, 1, 3, 64, true, 2);
    check_conv_forward(7, 5, 3, 64, true, 3);
    check_conv_forward(13, 11, 5, 7, false, 4);
    check_conv_forward(3, 70, 4, 9, true, 5);
    check_conv_forward(40, 56, 3, 64, true, 6);
    check_conv_forward_into(9, 7, 5, 6, true, true, 7);
}

#[test]
fn conv3x3_forward_matches_cpu_at_vgg_shapes() {
    check_conv_forward(64, 64, 64, 64, true, 10);
    check_conv_forward(8, 8, 512, 512, true, 11);
    check_conv_forward(17, 19, 256, 128, false, 12);
}

#[test]
fn conv3x3_input_gradient_matches_cpu_at_odd_shapes() {
    check_conv_backward(1, 1, 3, 1, false, 20);
    check_conv_backward(1, 1, 3, 64, false, 21);
    check_conv_backward(7, 5, 3, 64, false, 22);
    check_conv_backward(13, 11, 5, 7, true, 23);
    check_conv_backward(3, 70, 4, 9, false, 24);
}

#[test]
fn conv3x3_input_gradient_matches_cpu_at_vgg_shapes() {
    check_conv_backward(64, 64, 64, 64, false, 30);
    check_conv_backward(8, 8, 512, 512, true, 31);
    check_conv_backward(17, 19, 128, 256, false, 32);
}

#[test]
fn relu_forward_and_backward_match_cpu_with_exact_zeros() {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    // 1000 and 64^3 elements also run four to an invocation (relu.backward4).
    for (n, seed) in [(1usize, 40u64), (3, 41), (1000, 42), (64 * 64 * 64, 43)] {
        let mut rng = Rng::new(seed);
        // Integers in -3..=3: about a seventh of the inputs are exactly 0.
        let input = rng.vec_ties(n, -3, 3);
        let p = relu::ReluParams::new(n);
        let out = run_once::<relu::Forward>(gpu, lib, &p, &[bytes(&input), &zeros(n)]).unwrap();
        let mut want = vec![0.0; n];
        relu::forward(&p, &to_f64(&input), &mut want);
        assert_close(&format!("relu.forward {n}"), &floats(&out[0]), &want, &[n], 0.0, 0.0);

        for accumulate in [false, true] {
            let p = p.with_accumulate(accumulate);
            let output = floats(&out[0]);
            let grad_output = rng.vec_f32(n, -1.0, 1.0);
            let initial = rng.vec_f32(n, -1.0, 1.0);
            let got = run_once::<relu::Backward>(gpu, lib, &p, &[bytes(&output), bytes(&grad_output), bytes(&initial)])
                .unwrap();
            let mut want = to_f64(&initial);
            relu::backward(&p, &to_f64(&output), &to_f64(&grad_output), &mut want);
            let got = floats(&got[0]);
            assert_close(&format!("relu.backward {n} accumulate={accumulate}"), &got, &want, &[n], ELEM_TOL, ELEM_TOL);
            if relu::Backward4::suits(&p) {
                let inputs: [&[u8]; 3] = [bytes(&output), bytes(&grad_output), bytes(&initial)];
                let got4 = floats(&run_once::<relu::Backward4>(gpu, lib, &p, &inputs).unwrap()[0]);
                assert_eq!(got4, got, "relu.backward4 and relu.backward differ ({n} elements)");
            }
            if !accumulate {
                // The mask in place is the backward into a fresh gradient, bit for bit.
                let got_mask =
                    floats(&run_once::<relu::Mask>(gpu, lib, &p, &[bytes(&output), bytes(&grad_output)]).unwrap()[0]);
                assert_eq!(got_mask, got, "relu.mask and relu.backward differ ({n} elements)");
                let mut twin = to_f64(&grad_output);
                relu::mask(&p, &to_f64(&output), &mut twin);
                assert_eq!(twin, want, "the twins of relu.mask and relu.backward differ ({n} elements)");
                if relu::Mask4::suits(&p) {
                    let inputs: [&[u8]; 2] = [bytes(&output), bytes(&grad_output)];
                    let got4 = floats(&run_once::<relu::Mask4>(gpu, lib, &p, &inputs).unwrap()[0]);
                    assert_eq!(got4, got, "relu.mask4 and relu.backward differ ({n} elements)");
                }
            }
            if !accumulate {
                for i in 0..n {
                    if output[i] == 0.0 {
                        assert_eq!(got[i], 0.0, "ReLU's gradient at 0 must be 0 (element {i})");
                    }
                }
            }
        }
    }
}

#[test]
fn relu_dispatch_beyond_65535_workgroups_folds_and_covers_every_element() {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    let n = 65536 * 64 + 5;
    let input: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { -(i as f32) } else { i as f32 }).collect();
    let p = relu::ReluParams::new(n);
    let out = floats(&run_once::<relu::Forward>(gpu, lib, &p, &[bytes(&input), &zeros(n)]).unwrap()[0]);
    let mut want = vec![0.0; n];
    relu::forward(&p, &to_f64(&input), &mut want);
    assert_close("relu.forward folded dispatch", &out, &want, &[n], 0.0, 0.0);
}

/// Pooling inputs: integers in a narrow range (ties in most windows) or continuous values.
fn pool_input(rng: &mut Rng, n: usize, ties: bool) -> Vec<f32> {
    if ties {
        rng.vec_ties(n, -2, 2)
    } else {
        rng.vec_f32(n, -1.0, 1.0)
    }
}

fn check_pools(h: usize, w: usize, c: usize, ties: bool, seed: u64) {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    let mut rng = Rng::new(seed);
    let p = Pool2Params::new(h, w, c);
    let input = pool_input(&mut rng, p.input_len(), ties);
    let (oh, ow) = (p.out_height(), p.out_width());

    let out = run_once::<maxpool2::Forward>(gpu, lib, &p, &[bytes(&input), &zeros(p.output_len())]).unwrap();
    let mut want = vec![0.0; p.output_len()];
    maxpool2::forward(&p, &to_f64(&input), &mut want);
    assert_close(&format!("maxpool2.forward {h}x{w}x{c} ties={ties}"), &floats(&out[0]), &want, &[oh, ow, c], 0.0, 0.0);
    if maxpool2::vec4_suits(&p) {
        let out4 = run_once::<maxpool2::Forward4>(gpu, lib, &p, &[bytes(&input), &zeros(p.output_len())]).unwrap();
        let what = format!("maxpool2.forward4 {h}x{w}x{c} ties={ties}");
        assert_close(&what, &floats(&out4[0]), &want, &[oh, ow, c], 0.0, 0.0);
    }

    let out = run_once::<avgpool2::Forward>(gpu, lib, &p, &[bytes(&input), &zeros(p.output_len())]).unwrap();
    let mut want = vec![0.0; p.output_len()];
    avgpool2::forward(&p, &to_f64(&input), &mut want);
    assert_close(&format!("avgpool2.forward {h}x{w}x{c}"), &floats(&out[0]), &want, &[oh, ow, c], ELEM_TOL, ELEM_TOL);

    for (accumulate, mask) in [(false, false), (true, false), (false, true), (true, true)] {
        let p = p.with_accumulate(accumulate).with_mask(mask);
        let grad_output = rng.vec_f32(p.output_len(), -1.0, 1.0);
        let initial = rng.vec_f32(p.input_len(), -1.0, 1.0);
        let got = run_once::<maxpool2::Backward>(gpu, lib, &p, &[bytes(&input), bytes(&grad_output), bytes(&initial)])
            .unwrap();
        let mut want = to_f64(&initial);
        maxpool2::backward(&p, &to_f64(&input), &to_f64(&grad_output), &mut want);
        let what = format!("maxpool2.backward {h}x{w}x{c} ties={ties} accumulate={accumulate} mask={mask}");
        assert_close(&what, &floats(&got[0]), &want, &[h, w, c], ELEM_TOL, ELEM_TOL);
        if maxpool2::vec4_suits(&p) {
            let inputs: [&[u8]; 3] = [bytes(&input), bytes(&grad_output), bytes(&initial)];
            let got4 = run_once::<maxpool2::Backward4>(gpu, lib, &p, &inputs).unwrap();
            assert_eq!(floats(&got4[0]), floats(&got[0]), "maxpool2.backward4 and backward differ: {what}");
        }
        if mask {
            // The fused mask is the pool's backward followed by ReLU's, on the pool's input.
            let mut unmasked = to_f64(&initial);
            maxpool2::backward(&p.with_mask(false), &to_f64(&input), &to_f64(&grad_output), &mut unmasked);
            let mut then_relu = vec![0.0; p.input_len()];
            let r = relu::ReluParams::new(p.input_len());
            relu::backward(&r, &to_f64(&input), &unmasked, &mut then_relu);
            assert_eq!(want, then_relu, "{what}: the twin's mask differs from ReLU's backward");
        }

        let got = run_once::<avgpool2::Backward>(gpu, lib, &p, &[bytes(&grad_output), bytes(&initial)]).unwrap();
        let mut want = to_f64(&initial);
        avgpool2::backward(&p, &to_f64(&grad_output), &mut want);
        let what = format!("avgpool2.backward {h}x{w}x{c} accumulate={accumulate}");
        assert_close(&what, &floats(&got[0]), &want, &[h, w, c], ELEM_TOL, ELEM_TOL);
    }
}

#[test]
fn pooling_matches_cpu_at_odd_shapes_with_ties() {
    check_pools(2, 2, 1, true, 50);
    check_pools(3, 3, 3, true, 51);
    check_pools(7, 5, 3, true, 52);
    check_pools(9, 13, 64, true, 53);
    check_pools(9, 13, 5, false, 54);
    // Four channels with ties, odd sides: the vec4 entries and their dropped row and column.
    check_pools(7, 5, 4, true, 58);
}

#[test]
fn pooling_matches_cpu_at_vgg_shapes() {
    check_pools(64, 64, 64, false, 55);
    check_pools(16, 16, 512, true, 56);
    check_pools(31, 33, 128, false, 57);
}

#[test]
fn pooling_a_one_pixel_map_is_refused_with_a_shape_error() {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    let p = Pool2Params::new(1, 1, 3);
    let err = run_once::<maxpool2::Forward>(gpu, lib, &p, &[&zeros(3), &zeros(1)]).unwrap_err();
    assert!(matches!(err, nst::Error::Shape { .. }), "{err}");
    assert!(err.to_string().contains("maxpool2.forward"), "{err}");
}

#[test]
fn max_pool_ties_send_the_gradient_to_the_first_maximum_only() {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    // One 2x2 window, one channel, all four equal: only (0, 0) receives the gradient.
    let p = Pool2Params::new(2, 2, 1);
    let got = run_once::<maxpool2::Backward>(gpu, lib, &p, &[bytes(&[1.0; 4]), bytes(&[5.0]), &zeros(4)]).unwrap();
    assert_eq!(floats(&got[0]), vec![5.0, 0.0, 0.0, 0.0]);
    // The last three equal and larger than the first: (0, 1) wins.
    let got = run_once::<maxpool2::Backward>(gpu, lib, &p, &[bytes(&[0.0, 2.0, 2.0, 2.0]), bytes(&[5.0]), &zeros(4)])
        .unwrap();
    assert_eq!(floats(&got[0]), vec![0.0, 5.0, 0.0, 0.0]);
}

fn check_gram(h: usize, w: usize, c: usize, seed: u64) {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    let mut rng = Rng::new(seed);
    let p = GramParams::new(h, w, c);
    // Post-ReLU features: non-negative, a quarter of them exactly 0.
    let features: Vec<f32> = rng.vec_f32(p.features_len(), -0.5, 1.5).into_iter().map(|v| v.max(0.0)).collect();
    let out = run_once::<gram::Forward>(gpu, lib, &p, &[bytes(&features), &zeros(p.gram_len())]).unwrap();
    let mut want = vec![0.0; p.gram_len()];
    gram::forward(&p, &to_f64(&features), &mut want);
    assert_close(&format!("gram.forward {h}x{w}x{c}"), &floats(&out[0]), &want, &[c, c], DOT_ATOL, DOT_RTOL);
    if gram::ForwardBlocked::suits(&p) {
        let out = run_once::<gram::ForwardBlocked>(gpu, lib, &p, &[bytes(&features), &zeros(p.gram_len())]).unwrap();
        let what = format!("gram_blocked.forward {h}x{w}x{c}");
        assert_close(&what, &floats(&out[0]), &want, &[c, c], DOT_ATOL, DOT_RTOL);
    }

    // As the engine runs it where the adapter has subgroups: transposed chunks + pointwise conv +
    // scale, with the engine's chunk size and with chunks of 8 positions (several chunks, the last
    // one padded with zeros).
    if lib.has::<conv3x3_subgroup::Pointwise32>() && c.is_multiple_of(32) {
        for max_chunk in [gram::MAX_CHUNK_POSITIONS, 8] {
            check_gram_pointwise(&p, &features, &want, max_chunk);
        }
    }

    for accumulate in [false, true] {
        let p = p.with_accumulate(accumulate);
        let grad_gram = rng.vec_f32(p.gram_len(), -1.0, 1.0);
        let initial = rng.vec_f32(p.features_len(), -1.0, 1.0);
        let got =
            run_once::<gram::Backward>(gpu, lib, &p, &[bytes(&features), bytes(&grad_gram), bytes(&initial)]).unwrap();
        let mut want = to_f64(&initial);
        gram::backward(&p, &to_f64(&features), &to_f64(&grad_gram), &mut want);
        let what = format!("gram.backward {h}x{w}x{c} accumulate={accumulate}");
        assert_close(&what, &floats(&got[0]), &want, &[h * w, c], DOT_ATOL, DOT_RTOL);

        // As the engine runs it where the adapter has subgroups: symmetrize, then a pointwise conv.
        if lib.has::<conv3x3_subgroup::Pointwise32>() && c.is_multiple_of(32) {
            let sym = gpu.buffer_zeroed("sym", 4 * p.gram_len() as u64);
            let (gb, fb) =
                (gpu.buffer_from("grad gram", bytes(&grad_gram)), gpu.buffer_from("features", bytes(&features)));
            let (zero, out) = (gpu.buffer_zeroed("zero bias", 4 * c as u64), gpu.buffer_from("out", bytes(&initial)));
            let first = Step::new::<gram::Symmetrize>(gpu, lib, &p, &[&gb, &sym]).unwrap();
            let conv = Conv3x3Params::new(h, w, c, c).with_accumulate(accumulate);
            let second =
                Step::new::<conv3x3_subgroup::Pointwise32>(gpu, lib, &conv, &[&sym, &zero, &fb, &out]).unwrap();
            submit(gpu, "gram backward as pointwise conv", &[&first, &second]).unwrap();
            let got = floats(&gpu.read_buffers(&[&out]).unwrap()[0]);
            let what = format!("gram.symmetrize + conv1x1_subgroup {h}x{w}x{c} accumulate={accumulate}");
            assert_close(&what, &got, &want, &[h * w, c], DOT_ATOL, DOT_RTOL);
            // Through textures where the engine takes them: the same arithmetic, bit for bit.
            let max = gpu.limits.max_texture_dimension_2d;
            if conv3x3_subgroup::texture_kernels_built(lib) && conv3x3_subgroup::pointwise_textures_fit(&conv, max) {
                let textured = gram_backward_textured(&p, &conv, &grad_gram, &features, &initial);
                assert_eq!(textured, got, "{what}: the texture flavour differs from the storage flavour");
            }
        }
    }
}

/// The Gram backward as the engine runs it through textures: `gram.symmetrize_tiled`, copies of
/// sym into its texture and of the features into their map texture, the pointwise conv.
fn gram_backward_textured(
    p: &GramParams,
    conv: &Conv3x3Params,
    grad_gram: &[f32],
    features: &[f32],
    initial: &[f32],
) -> Vec<f32> {
    use nst::gpu::{bind_planned, submit_commands, Planned, Resource};
    let (gpu, lib) = common::gpu().unwrap();
    let c = p.channels as usize;
    let sym = gpu.buffer_zeroed("sym", 4 * p.gram_len() as u64);
    let (gb, fb) = (gpu.buffer_from("grad gram", bytes(grad_gram)), gpu.buffer_from("features", bytes(features)));
    let (zero, out) = (gpu.buffer_zeroed("zero bias", 4 * c as u64), gpu.buffer_from("out", bytes(initial)));
    let (w, h) = gram::tiled_weights_texture_size(c);
    let weights = conv3x3_subgroup::create_texture(gpu, "sym texture", (w, h));
    let map = conv3x3_subgroup::create_texture(gpu, "features map", conv3x3_subgroup::input_texture_size(conv));
    let (b, t) = (Resource::Buffer, Resource::Texture);
    let planned = [
        Planned::dispatch::<gram::SymmetrizeTiled>(p, vec![b(&gb), b(&sym)]),
        Planned::CopyToTexture { buffer: b(&sym), texture: t(&weights), origin: [0, 0], extent: [w, h] },
        conv3x3_subgroup::planned_map_copy(b(&fb), t(&map), conv.height, conv.width, conv.in_channels),
        Planned::dispatch::<conv3x3_subgroup::Pointwise32Tex>(conv, vec![t(&weights), b(&zero), t(&map), b(&out)]),
    ];
    let commands: Vec<_> = planned.iter().map(|c| bind_planned(gpu, lib, c).unwrap()).collect();
    submit_commands(gpu, "gram backward through textures", &commands.iter().collect::<Vec<_>>()).unwrap();
    floats(&gpu.read_buffers(&[&out]).unwrap()[0])
}

#[test]
fn the_tiled_symmetrized_gram_gradient_is_the_symmetrized_one_reordered() {
    // (That the order is the pointwise conv's weights texture's is checked end to end: the Gram
    // backward through textures equals the storage flavour bit for bit, in `check_gram`.)
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    for (c, seed) in [(32usize, 70u64), (64, 71), (512, 72)] {
        let p = GramParams::new(3, 5, c);
        let grad_gram = Rng::new(seed).vec_f32(p.gram_len(), -1.0, 1.0);
        let mut plain = vec![0.0f32; p.gram_len()];
        gram::symmetrize(&p, &grad_gram, &mut plain);
        let mut tiled = vec![0.0f32; p.gram_len()];
        gram::symmetrize_tiled(&p, &grad_gram, &mut tiled);
        let sorted = |v: &[f32]| {
            let mut v = v.to_vec();
            v.sort_by(f32::total_cmp);
            v
        };
        assert_eq!(sorted(&tiled), sorted(&plain), "c = {c}: not a reordering");
        assert_ne!(tiled, plain, "c = {c}: the order is the texture's, not row-major");
        let (w, h) = gram::tiled_weights_texture_size(c);
        assert_eq!(4 * w as usize * h as usize, p.gram_len());
        let got = run_once::<gram::SymmetrizeTiled>(gpu, lib, &p, &[bytes(&grad_gram), &zeros(p.gram_len())]).unwrap();
        assert_eq!(floats(&got[0]), tiled, "c = {c}: gram.symmetrize_tiled against its twin");
    }
}

/// The fast Gram forward (`gram_subgroup`: a copy into the features' texture, partials over slices of
/// `slice_len` positions, their sum) against `want`; the partials against their CPU twin too.
fn check_gram_subgroup(h: usize, w: usize, c: usize, slice_len: Option<usize>, seed: u64) {
    let (gpu, lib) = common::gpu().unwrap();
    let p = gram_subgroup::GramSliceParams::new(h, w, c);
    let p = slice_len.map_or(p, |n| p.with_slice_len(n));
    let what = format!("gram_subgroup {h}x{w}x{c}, {} slices of {}", p.slices, p.slice_len);
    assert!(gram_subgroup::available(gpu, lib, &p), "{what} does not suit the kernel here");
    let mut rng = Rng::new(seed);
    let features: Vec<f32> = rng.vec_f32(p.features_len(), -0.5, 1.5).into_iter().map(|v| v.max(0.0)).collect();
    let fb = gpu.buffer_from("features", bytes(&features));
    let texture = conv3x3_subgroup::create_texture(gpu, "gram features", p.texture_size());
    // Both outputs start as garbage: every element must be overwritten.
    let partials = gpu.buffer_from("partials", bytes(&vec![7.0f32; p.partials_len()]));
    let out = gpu.buffer_from("gram", bytes(&vec![7.0f32; p.gram_len()]));
    let commands = gram_subgroup::forward_commands(gpu, lib, &p, &fb, &texture, &partials, &out).unwrap();
    let refs: Vec<&Command> = commands.iter().collect();
    submit_commands(gpu, "gram_subgroup forward", &refs).unwrap();
    let read = gpu.read_buffers(&[&partials, &out]).unwrap();
    let mut want_partials = vec![0.0; p.partials_len()];
    gram_subgroup::partials(&p, &to_f64(&features), &mut want_partials);
    // The kernel may skip the mirrored entries (the sum reads their partners): compare the others.
    let mut got_partials = floats(&read[0]);
    let mut skippable = 0;
    for (e, (got, want)) in got_partials.iter_mut().zip(&want_partials).enumerate() {
        let e = e % (c * c);
        if gram_subgroup::mirrored(e / c, e % c) {
            *got = *want as f32;
            skippable += 1;
        }
    }
    assert!(c <= gram_subgroup::COLS || skippable > 0, "{what}: no entry below the diagonal's blocks");
    let shape = [p.slices as usize, c, c];
    assert_close(&format!("{what}: partials"), &got_partials, &want_partials, &shape, DOT_ATOL, DOT_RTOL);
    let mut want = vec![0.0; p.gram_len()];
    gram::forward(&GramParams::new(h, w, c), &to_f64(&features), &mut want);
    assert_close(&format!("{what}: gram"), &floats(&read[1]), &want, &[c, c], DOT_ATOL, DOT_RTOL);
}

#[test]
fn fast_gram_forward_matches_cpu_with_uneven_slices_and_row_wraps() {
    if common::gpu().is_none() || !fast_conv_available() {
        return;
    }
    // One position; rows of 2 (the smallest copyable width at 32 channels); slices that end mid-row
    // and a last slice shorter than the rest; 288 channels: a second, partly dead block of rows.
    // Slices of 13 positions in rows of 4: a group of POSITION_UNROLL positions crossing two row
    // ends, then a remainder taken one position at a time.
    check_gram_subgroup(1, 2, 32, None, 300);
    check_gram_subgroup(1, 2, 32, Some(1), 301);
    check_gram_subgroup(7, 4, 64, Some(5), 302);
    check_gram_subgroup(7, 4, 64, Some(13), 306);
    check_gram_subgroup(9, 16, 32, Some(23), 303);
    check_gram_subgroup(3, 16, 288, Some(7), 304);
    check_gram_subgroup(13, 12, 96, None, 305);
}

#[test]
fn fast_gram_forward_matches_cpu_at_vgg_channel_counts() {
    if common::gpu().is_none() || !fast_conv_available() {
        return;
    }
    // The engine's own slicing at VGG19's channel counts, at small maps.
    check_gram_subgroup(32, 32, 64, None, 310);
    check_gram_subgroup(16, 16, 128, None, 311);
    check_gram_subgroup(8, 8, 256, None, 312);
    check_gram_subgroup(4, 4, 512, None, 313);
}

/// `gram::pointwise_forward_steps` with chunks of at most `max_chunk` positions against `want`.
fn check_gram_pointwise(p: &GramParams, features: &[f32], want: &[f64], max_chunk: usize) {
    let (gpu, lib) = common::gpu().unwrap();
    let c = p.channels as usize;
    let fb = gpu.buffer_from("features", bytes(features));
    // The Gram buffer starts as garbage: the first chunk must overwrite it.
    let out = gpu.buffer_from("gram", bytes(&vec![7.0f32; p.gram_len()]));
    let scratch = gpu.buffer_zeroed("scratch", 4 * gram::pointwise_scratch_len(p, max_chunk) as u64);
    let zero = gpu.buffer_zeroed("zero bias", 4 * c as u64);
    let steps = gram::pointwise_forward_steps(gpu, lib, p, max_chunk, [&fb, &out, &scratch, &zero]).unwrap();
    let chunks = (p.positions as usize).div_ceil(p.chunk_len(max_chunk));
    assert_eq!(steps.len(), 2 * chunks + 1, "a transpose and a conv per chunk, then the scale");
    let refs: Vec<&Step> = steps.iter().collect();
    submit(gpu, "gram forward as pointwise conv", &refs).unwrap();
    let got = floats(&gpu.read_buffers(&[&out]).unwrap()[0]);
    let what = format!("gram_pointwise.forward {} positions x {c}, {chunks} chunks", p.positions);
    assert_close(&what, &got, want, &[c, c], DOT_ATOL, DOT_RTOL);
}

#[test]
fn gram_forward_as_pointwise_conv_splits_positions_past_the_loop_limit_into_chunks() {
    let Some((_, lib)) = common::gpu() else { return };
    if !fast_conv_available() || !lib.has::<conv3x3_subgroup::Pointwise32>() {
        return;
    }
    // 131406 positions: more than one chunk of MAX_CHUNK_POSITIONS, so two chunks of 65704.
    let p = GramParams::new(363, 362, 32);
    assert_eq!(p.chunk_len(gram::MAX_CHUNK_POSITIONS), 65704);
    let mut rng = Rng::new(72);
    let features: Vec<f32> = rng.vec_f32(p.features_len(), -0.5, 1.5).into_iter().map(|v| v.max(0.0)).collect();
    let mut want = vec![0.0; p.gram_len()];
    gram::forward(&p, &to_f64(&features), &mut want);
    check_gram_pointwise(&p, &features, &want, gram::MAX_CHUNK_POSITIONS);
}

#[test]
fn transpose_matches_cpu_with_chunks_past_the_last_position() {
    let Some((gpu, lib)) = common::gpu() else { return };
    let mut rng = Rng::new(73);
    // (positions, channels, start, len): whole maps, middle chunks, and chunks running past the end.
    for (positions, channels, start, len) in
        [(1, 1, 0, 4), (35, 3, 0, 36), (63, 64, 8, 24), (63, 64, 48, 24), (1000, 5, 996, 8)]
    {
        let p = transpose::TransposeParams::new(positions, channels, start, len);
        let features = rng.vec_f32(p.features_len(), -1.0, 1.0);
        let got =
            run_once::<transpose::Forward>(gpu, lib, &p, &[bytes(&features), &zeros(p.transposed_len())]).unwrap();
        let mut want = vec![0.0; p.transposed_len()];
        transpose::forward(&p, &to_f64(&features), &mut want);
        let what = format!("transpose.forward {positions}x{channels} from {start}, {len}");
        assert_close(&what, &floats(&got[0]), &want, &[channels, len], 0.0, 0.0);
        let past = (start + len).saturating_sub(positions);
        assert!(past == 0 || want[len - 1] == 0.0, "{what}: positions past the end read as 0");
    }
}

#[test]
fn gram_scale_multiplies_every_element_in_place() {
    let Some((gpu, lib)) = common::gpu() else { return };
    let mut rng = Rng::new(74);
    for (h, w, c) in [(1, 1, 1), (7, 9, 3), (13, 11, 65)] {
        let p = GramParams::new(h, w, c);
        let gram_in = rng.vec_f32(p.gram_len(), -100.0, 100.0);
        let got = run_once::<gram::Scale>(gpu, lib, &p, &[bytes(&gram_in)]).unwrap();
        let mut want = to_f64(&gram_in);
        // The twin in f32, as the kernel rounds: one multiplication.
        let mut want32 = gram_in.clone();
        gram::scale(&p, &mut want32);
        gram::scale(&p, &mut want);
        assert_close(&format!("gram.scale {h}x{w}x{c}"), &floats(&got[0]), &want, &[c, c], 0.0, ELEM_TOL);
        assert_eq!(floats(&got[0]), want32, "gram.scale {h}x{w}x{c}: one f32 multiplication per element");
    }
}

#[test]
fn gram_matches_cpu_at_odd_shapes() {
    check_gram(1, 1, 1, 60);
    check_gram(1, 1, 3, 61);
    check_gram(7, 5, 3, 62);
    check_gram(13, 11, 65, 63);
    check_gram(1, 1, 4, 68);
    check_gram(7, 9, 12, 69);
    check_gram(7, 9, 32, 71);
}

#[test]
fn gram_matches_cpu_at_vgg_shapes() {
    // At these two the Gram backward also runs through textures where the adapter has the
    // texture kernels (and is compared with the storage flavour bit for bit).
    if let Some((gpu, lib)) = common::gpu() {
        if conv3x3_subgroup::texture_kernels_built(lib) {
            let max = gpu.limits.max_texture_dimension_2d;
            for (s, c) in [(64, 64), (8, 512)] {
                let conv = Conv3x3Params::new(s, s, c, c);
                assert!(conv3x3_subgroup::pointwise_textures_fit(&conv, max), "{s}x{s}x{c}");
            }
        }
    }
    check_gram(64, 64, 64, 64);
    check_gram(8, 8, 512, 65);
    check_gram(256, 256, 3, 66);
    // More positions than lavapipe lets one loop run: the reduction must be split.
    check_gram(300, 301, 3, 67);
    check_gram(181, 183, 8, 70);
}

/// Runs a loss's first stage and `reduce.sum` in one command encoder, as an iteration does, and
/// returns the partials and the loss slot.
fn run_loss(first: Step, partials: &nst::wgpu::Buffer, count: usize, slot: usize) -> (Vec<f32>, f32) {
    let (gpu, lib) = common::gpu().unwrap();
    let losses = gpu.buffer_zeroed("losses", 4 * (slot as u64 + 1));
    let sum =
        Step::new::<reduce::Sum>(gpu, lib, &reduce::ReduceParams::new(count, slot), &[partials, &losses]).unwrap();
    submit(gpu, "loss", &[&first, &sum]).unwrap();
    let out = gpu.read_buffers(&[partials, &losses]).unwrap();
    (floats(&out[0])[..count].to_vec(), floats(&out[1])[slot])
}

#[test]
fn squared_difference_loss_and_gradient_match_cpu() {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    for (n, seed) in
        [(1usize, 70u64), (3, 71), (1023, 72), (1025, 73), (64 * 64 * 64, 74), (512 * 512, 75), (700_001, 76)]
    {
        let mut rng = Rng::new(seed);
        let a = rng.vec_f32(n, -2.0, 2.0);
        let b = rng.vec_f32(n, -2.0, 2.0);
        let p = sqdiff::SqDiffParams::mean(n, 3.0);
        let (ab, bb) = (gpu.buffer_from("a", bytes(&a)), gpu.buffer_from("b", bytes(&b)));
        let partials = gpu.buffer_zeroed("partials", 4 * p.partials() as u64);
        let first = Step::new::<sqdiff::Forward>(gpu, lib, &p, &[&ab, &bb, &partials]).unwrap();
        let (got_partials, got_loss) = run_loss(first, &partials, p.partials(), 1);
        let mut want_partials = vec![0.0; p.partials()];
        sqdiff::forward(&p, &to_f64(&a), &to_f64(&b), &mut want_partials);
        assert_close(
            &format!("sqdiff.forward partials {n}"),
            &got_partials,
            &want_partials,
            &[p.partials()],
            1e-6,
            1e-5,
        );
        let want_loss = sqdiff::loss(&p, &to_f64(&a), &to_f64(&b));
        assert_close(&format!("sqdiff + reduce.sum loss {n}"), &[got_loss], &[want_loss], &[1], 0.0, 1e-5);

        for accumulate in [false, true] {
            let p = p.with_accumulate(accumulate);
            let initial = rng.vec_f32(n, -1.0, 1.0);
            let got = run_once::<sqdiff::Backward>(gpu, lib, &p, &[bytes(&a), bytes(&b), bytes(&initial)]).unwrap();
            let mut want = to_f64(&initial);
            sqdiff::backward(&p, &to_f64(&a), &to_f64(&b), &mut want);
            let what = format!("sqdiff.backward {n} accumulate={accumulate}");
            assert_close(&what, &floats(&got[0]), &want, &[n], ELEM_TOL, ELEM_TOL);
        }
    }
}

#[test]
fn reduce_sum_matches_cpu_for_many_partials() {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    for (n, seed) in [(1usize, 80u64), (255, 81), (257, 82), (40_000, 83)] {
        let mut rng = Rng::new(seed);
        let partials = rng.vec_f32(n, 0.0, 10.0);
        let p = reduce::ReduceParams::new(n, 2);
        let got = run_once::<reduce::Sum>(gpu, lib, &p, &[bytes(&partials), &zeros(3)]).unwrap();
        let mut want = vec![0.0; 3];
        reduce::sum(&p, &to_f64(&partials), &mut want);
        assert_close(&format!("reduce.sum {n}"), &floats(&got[0]), &want, &[3], 0.0, 1e-6);
    }
}

#[test]
fn total_variation_loss_and_gradient_match_cpu_with_equal_neighbours() {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    for (h, w, c, ties, seed) in [
        (1usize, 1usize, 3usize, false, 90u64),
        (1, 7, 3, true, 91),
        (7, 5, 3, true, 92),
        (13, 11, 4, false, 93),
        (64, 64, 3, true, 94),
        (256, 256, 3, false, 95),
    ] {
        let mut rng = Rng::new(seed);
        let p = tv::TvParams::new(h, w, c, 0.5);
        let image = if ties { rng.vec_ties(p.len(), 0, 2) } else { rng.vec_f32(p.len(), -100.0, 100.0) };
        let ib = gpu.buffer_from("image", bytes(&image));
        let partials = gpu.buffer_zeroed("partials", 4 * p.partials() as u64);
        let first = Step::new::<tv::Forward>(gpu, lib, &p, &[&ib, &partials]).unwrap();
        let (got_partials, got_loss) = run_loss(first, &partials, p.partials(), 0);
        let mut want_partials = vec![0.0; p.partials()];
        tv::forward(&p, &to_f64(&image), &mut want_partials);
        let what = format!("tv.forward partials {h}x{w}x{c} ties={ties}");
        assert_close(&what, &got_partials, &want_partials, &[p.partials()], 1e-6, 1e-5);
        let want_loss = tv::loss(&p, &to_f64(&image));
        assert_close(&format!("tv + reduce.sum loss {h}x{w}x{c}"), &[got_loss], &[want_loss], &[1], 1e-6, 1e-5);

        for accumulate in [false, true] {
            let p = p.with_accumulate(accumulate);
            let initial = rng.vec_f32(p.len(), -1.0, 1.0);
            let got = run_once::<tv::Backward>(gpu, lib, &p, &[bytes(&image), bytes(&initial)]).unwrap();
            let mut want = to_f64(&initial);
            tv::backward(&p, &to_f64(&image), &mut want);
            let what = format!("tv.backward {h}x{w}x{c} ties={ties} accumulate={accumulate}");
            assert_close(&what, &floats(&got[0]), &want, &[h, w, c], ELEM_TOL, ELEM_TOL);
        }
    }
}

#[test]
fn total_variation_gradient_is_zero_on_a_flat_image() {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    let p = tv::TvParams::new(5, 6, 3, 1.0);
    let flat = vec![42.0f32; p.len()];
    let got = run_once::<tv::Backward>(gpu, lib, &p, &[bytes(&flat), &zeros(p.len())]).unwrap();
    assert!(floats(&got[0]).iter().all(|&g| g == 0.0), "equal neighbours must give gradient 0");
}

#[test]
fn adam_steps_match_cpu_over_several_iterations() {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    for (n, seed) in [(1usize, 100u64), (3, 101), (1000, 102), (256 * 256 * 3, 103)] {
        let mut rng = Rng::new(seed);
        let config = adam::AdamConfig { lr: 0.5, ..Default::default() };
        let mut x = rng.vec_f32(n, -100.0, 100.0);
        let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
        let (mut x64, mut m64, mut v64) = (to_f64(&x), vec![0.0f64; n], vec![0.0f64; n]);
        for t in 1..=3 {
            // Some gradients exactly 0, some tiny, some large.
            let grad: Vec<f32> = rng
                .vec_f32(n, -1.0, 1.0)
                .iter()
                .enumerate()
                .map(|(i, g)| match i % 4 {
                    0 => 0.0,
                    1 => g * 1e-6,
                    2 => g * 1e3,
                    _ => *g,
                })
                .collect();
            // Bounds on the larger runs: some elements land on them, some stay inside.
            let p = match n {
                1000.. => {
                    AdamParams::at_step(n, &config, t).with_bounds([-99.5, -50.0, -1.0, 0.0], [99.0, 40.0, 1.0, 0.0])
                }
                _ => AdamParams::at_step(n, &config, t),
            };
            // m and v are differences of terms that can be far larger than the result: f32 rounds
            // each term to within eps of its own size, so the bound scales with the terms.
            let eps = f32::EPSILON as f64;
            let m_bound: Vec<f64> =
                (0..n).map(|i| 2.0 * eps * (0.9 * m64[i].abs() + 0.1 * (grad[i] as f64).abs())).collect();
            let out = run_once::<adam::Step>(gpu, lib, &p, &[bytes(&grad), bytes(&x), bytes(&m), bytes(&v)]).unwrap();
            adam::step(&p, &to_f64(&grad), &mut x64, &mut m64, &mut v64);
            // Compare, then continue both from the GPU state so that errors do not compound.
            x = floats(&out[0]);
            m = floats(&out[1]);
            v = floats(&out[2]);
            assert_close(&format!("adam.step x {n} t={t}"), &x, &x64, &[n], 1e-5, 1e-6);
            assert_close_bound(&format!("adam.step m {n} t={t}"), &m, &m64, &[n], |i| m_bound[i], 1e-6);
            assert_close(&format!("adam.step v {n} t={t}"), &v, &v64, &[n], 1e-12, 1e-6);
            x64 = to_f64(&x);
            m64 = to_f64(&m);
            v64 = to_f64(&v);
        }
    }
}

#[test]
fn image_conversion_to_the_network_and_back_matches_cpu() {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    for (pixels, seed) in [(1usize, 110u64), (3, 111), (1000, 112), (256 * 256, 113)] {
        let mut rng = Rng::new(seed);
        let rgba: Vec<u32> = (0..pixels).map(|_| rng.next_u64() as u32).collect();
        let p = image::ImageParams::new(pixels);
        let got = run_once::<image::ToNetwork>(gpu, lib, &p, &[bytemuck::cast_slice(&rgba), &zeros(p.network_len())])
            .unwrap();
        let net = floats(&got[0]);
        let mut want = vec![0.0f64; p.network_len()];
        image::to_network(&p, &rgba, &mut want);
        assert_close(&format!("image.to_network {pixels}"), &net, &want, &[pixels, 4], ELEM_TOL, ELEM_TOL);

        // Back, including values far outside 0..255 and exact halves.
        let mut net_in = net.clone();
        for (i, v) in net_in.iter_mut().enumerate() {
            match i % 5 {
                0 => *v += 400.0,
                1 => *v -= 400.0,
                2 => *v += 0.5,
                3 => *v += rng.uniform(-0.49, 0.49) as f32,
                _ => {}
            }
        }
        let got = run_once::<image::FromNetwork>(gpu, lib, &p, &[bytes(&net_in), &zeros(pixels)]).unwrap();
        let got: Vec<u32> = bytemuck::cast_slice(&got[0]).to_vec();
        let mut want = vec![0u32; pixels];
        image::from_network(&p, &net_in, &mut want);
        assert_same_u32(&format!("image.from_network {pixels}"), &got, &want);
    }
}

#[test]
fn image_round_trip_restores_every_rgb_byte_and_sets_alpha_opaque() {
    let Some((gpu, lib)) = common::gpu() else {
        return;
    };
    let rgba: Vec<u32> = (0..=255u32).map(|v| image::pack_rgba([v as u8, (255 - v) as u8, (v * 7) as u8, 3])).collect();
    let p = image::ImageParams::new(rgba.len());
    let net =
        run_once::<image::ToNetwork>(gpu, lib, &p, &[bytemuck::cast_slice(&rgba), &zeros(p.network_len())]).unwrap();
    let back = run_once::<image::FromNetwork>(gpu, lib, &p, &[&net[0], &zeros(rgba.len())]).unwrap();
    let back: Vec<u32> = bytemuck::cast_slice(&back[0]).to_vec();
    let want: Vec<u32> = rgba.iter().map(|v| v | 0xff00_0000).collect();
    assert_same_u32("image round trip", &back, &want);
}

/// The fast conv on this adapter, or None (loudly) where the adapter has no subgroups.
fn fast_conv_available() -> bool {
    let (gpu, lib) = common::gpu().unwrap();
    let built = lib.has::<conv3x3_subgroup::Forward16>()
        && lib.has::<conv3x3_subgroup::Forward4>()
        && conv3x3_subgroup::texture_kernels_built(lib);
    assert_eq!(
        built,
        gpu.subgroup_size.is_some(),
        "subgroup kernels must be built exactly when the device has subgroups"
    );
    if !built {
        eprintln!("NOTE: {} has no subgroups: the fast conv is not tested here", gpu.describe());
    }
    built
}

fn run_fast_conv(p: &Conv3x3Params, weights: &[f32], bias: &[f32], input: &[f32], initial: &[f32]) -> Vec<f32> {
    let storage = run_fast_conv_storage(p, weights, bias, input, initial);
    let (gpu, _) = common::gpu().unwrap();
    if conv3x3_subgroup::textures_fit(p, gpu.limits.max_texture_dimension_2d) {
        // The texture variant must agree with the storage variant bit for bit: same arithmetic.
        let textured = run_fast_conv_texture(p, weights, bias, input, initial);
        assert_eq!(textured, storage, "texture and storage variants differ for {p:?}");
    }
    storage
}

fn run_fast_conv_texture(p: &Conv3x3Params, weights: &[f32], bias: &[f32], input: &[f32], initial: &[f32]) -> Vec<f32> {
    use nst::gpu::Resource;
    let (gpu, lib) = common::gpu().unwrap();
    let wt = conv3x3_subgroup::weights_texture(gpu, "weights", p, weights);
    let it = conv3x3_subgroup::create_texture(gpu, "input", conv3x3_subgroup::input_texture_size(p));
    let input_buffer = gpu.buffer_from("input", bytes(input));
    let bias = gpu.buffer_from("bias", bytes(bias));
    let out = gpu.buffer_from("output", bytes(initial));
    let resources = [Resource::Texture(&wt), Resource::Buffer(&bias), Resource::Texture(&it), Resource::Buffer(&out)];
    assert!(conv3x3_subgroup::tile_for(p).is_some(), "shape {p:?} does not suit the fast conv");
    let (step, _) = conv3x3_subgroup::bind_textured(gpu, lib, p, &resources).unwrap();
    // The input reaches its texture by a copy in the same encoder, as in an iteration.
    let copy = conv3x3_subgroup::map_copy(&input_buffer, &it, p.height, p.width, p.in_channels);
    submit_commands(gpu, "texture conv", &[&copy, &Command::Dispatch(step)]).unwrap();
    floats(&gpu.read_buffers(&[&out]).unwrap()[0])
}

fn run_fast_conv_storage(p: &Conv3x3Params, weights: &[f32], bias: &[f32], input: &[f32], initial: &[f32]) -> Vec<f32> {
    let (gpu, lib) = common::gpu().unwrap();
    let inputs: [&[u8]; 4] = [bytes(weights), bytes(bias), bytes(input), bytes(initial)];
    let out = match conv3x3_subgroup::tile_for(p) {
        Some(16) => run_once::<conv3x3_subgroup::Forward16>(gpu, lib, p, &inputs),
        Some(4) => run_once::<conv3x3_subgroup::Forward4>(gpu, lib, p, &inputs),
        _ => panic!("shape {p:?} does not suit the fast conv"),
    };
    floats(&out.unwrap()[0])
}

fn check_fast_conv(h: usize, w: usize, cin: usize, cout: usize, relu: bool, accumulate: bool, seed: u64) {
    let p = Conv3x3Params::new(h, w, cin, cout).with_relu(relu).with_accumulate(accumulate);
    let mut rng = Rng::new(seed);
    let (weights, bias) = conv_weights(&mut rng, &p);
    let input = rng.vec_f32(p.input_len(), -1.0, 1.0);
    let initial = if accumulate { rng.vec_f32(p.output_len(), -1.0, 1.0) } else { vec![0.0; p.output_len()] };
    let got = run_fast_conv(&p, &weights, &bias, &input, &initial);
    let mut want = to_f64(&initial);
    conv3x3::forward(&p, &to_f64(&weights), &to_f64(&bias), &to_f64(&input), &mut want);
    let what = format!("conv3x3_subgroup.forward {h}x{w} {cin}->{cout} relu={relu} accumulate={accumulate}");
    assert_close(&what, &got, &want, &[h, w, cout], DOT_ATOL, DOT_RTOL);
}

/// The input gradient as the engine computes it: the fast forward with flipped, transposed weights.
fn check_fast_conv_gradient(h: usize, w: usize, cin: usize, cout: usize, accumulate: bool, seed: u64) {
    let p = Conv3x3Params::new(h, w, cin, cout).with_accumulate(accumulate);
    let mut rng = Rng::new(seed);
    let (weights, _) = conv_weights(&mut rng, &p);
    let grad_output = rng.vec_f32(p.output_len(), -1.0, 1.0);
    let initial = rng.vec_f32(p.input_len(), -1.0, 1.0);
    let transposed = conv3x3_subgroup::transpose_weights(cin, cout, &weights);
    let gp = Conv3x3Params::new(h, w, cout, cin).with_accumulate(accumulate);
    let got = run_fast_conv(&gp, &transposed, &vec![0.0; cin], &grad_output, &initial);
    let mut want = to_f64(&initial);
    conv3x3::backward_input(&p, &to_f64(&weights), &to_f64(&grad_output), &mut want);
    let what = format!("conv3x3_subgroup as input gradient {h}x{w} {cin}<-{cout} accumulate={accumulate}");
    assert_close(&what, &got, &want, &[h, w, cin], DOT_ATOL, DOT_RTOL);
}

#[test]
fn fast_conv3x3_matches_cpu_at_odd_shapes() {
    if common::gpu().is_none() || !fast_conv_available() {
        return;
    }
    check_fast_conv(1, 1, 4, 32, false, false, 200);
    check_fast_conv(1, 1, 4, 4, true, false, 201);
    check_fast_conv(7, 5, 4, 64, true, false, 202);
    check_fast_conv(13, 11, 8, 32, false, true, 203);
    check_fast_conv(3, 70, 12, 4, true, true, 204);
    check_fast_conv(40, 56, 4, 64, true, false, 205);
    check_fast_conv(17, 19, 64, 32, true, false, 206);
    // Widths whose input rows suit a buffer-to-texture copy, so the texture variant runs too.
    check_fast_conv(5, 16, 4, 4, true, true, 207);
    check_fast_conv(3, 33, 64, 64, false, false, 208);
}

#[test]
fn fast_conv3x3_matches_cpu_at_vgg_shapes() {
    if common::gpu().is_none() || !fast_conv_available() {
        return;
    }
    check_fast_conv(64, 64, 64, 64, true, false, 210);
    check_fast_conv(8, 8, 512, 512, true, false, 211);
    check_fast_conv(17, 19, 256, 128, false, true, 212);
}

#[test]
fn fast_conv3x3_with_transposed_weights_matches_the_cpu_input_gradient() {
    if common::gpu().is_none() || !fast_conv_available() {
        return;
    }
    check_fast_conv_gradient(1, 1, 4, 32, false, 220);
    check_fast_conv_gradient(7, 5, 4, 64, true, 221);
    check_fast_conv_gradient(13, 11, 32, 8, false, 222);
    check_fast_conv_gradient(64, 64, 64, 64, false, 223);
    check_fast_conv_gradient(8, 8, 512, 512, true, 224);
}

#[test]
fn transposing_weights_twice_gives_them_back() {
    let mut rng = Rng::new(230);
    let w = rng.vec_f32(5 * 9 * 3, -1.0, 1.0);
    let t = conv3x3_subgroup::transpose_weights(3, 5, &w);
    assert_eq!(conv3x3_subgroup::transpose_weights(5, 3, &t), w);
}

/// The bands of `p`'s rows that `rows` gives (the last one shorter when it does not divide), as
/// the plan makes them for a map too large for one binding.
fn conv_bands(p: &Conv3x3Params, rows: usize) -> Vec<Conv3x3Params> {
    let bands = p.bands(rows, 1);
    assert!(bands.len() > 1, "{rows} rows of {} make one band", p.height);
    bands
}

/// Runs a conv band by band, each band's input binding holding the rows it reads (with the halo)
/// unless `whole_input`, its output binding the rows it writes unless `whole_output`, and stitches
/// the output rows together.
fn run_banded(
    bands: &[Conv3x3Params],
    (whole_input, whole_output): (bool, bool),
    input: &[f32],
    initial: &[f32],
    run: impl Fn(&Conv3x3Params, &[f32], &[f32]) -> Vec<f32>,
) -> Vec<f32> {
    let mut out = initial.to_vec();
    for band in bands {
        let b = if whole_input { band.with_whole_input() } else { *band };
        let b = if whole_output { b.with_whole_output() } else { b };
        let row_in = b.width as usize * b.in_channels as usize;
        let row_out = b.width as usize * b.out_channels as usize;
        let from = b.input_start as usize * row_in;
        let input = &input[from..from + b.band_input_len(1)];
        let (first, last) = (b.output_start as usize * row_out, (b.band_start + b.band_rows) as usize * row_out);
        let written = run(&b, input, &out[first..last]);
        // Only the band's rows may change.
        let band_first = b.band_start as usize * row_out;
        assert_eq!(written.len(), last - first, "{b:?}");
        out[band_first..last].copy_from_slice(&written[band_first - first..]);
        assert_eq!(&written[..band_first - first], &out[first..band_first], "{b:?} wrote outside its band");
    }
    out
}

#[test]
fn conv3x3_computed_band_by_band_equals_the_whole_map_on_the_cpu_and_the_gpu() {
    // Uneven bands (4, 4, 3 rows of 11; 1-row bands; 5 + 2 of 7), bound to their rows only or to
    // the whole map; every kernel variant the plan can band. A band does each output element's
    // arithmetic in the same order as the whole map, so the results are equal, not just close.
    let cases = [(11, 9, 4, 16, 4, true, false), (7, 5, 8, 32, 5, false, true), (6, 16, 4, 4, 1, true, true)];
    for (seed, &(h, w, cin, cout, rows, relu, accumulate)) in (240..).zip(&cases) {
        let p = Conv3x3Params::new(h, w, cin, cout).with_relu(relu).with_accumulate(accumulate);
        let mut rng = Rng::new(seed);
        let (weights, bias) = conv_weights(&mut rng, &p);
        let input = rng.vec_f32(p.input_len(), -1.0, 1.0);
        let initial = if accumulate { rng.vec_f32(p.output_len(), -1.0, 1.0) } else { vec![0.0; p.output_len()] };
        let bands = conv_bands(&p, rows);

        // The CPU twin, in f64: banded equals whole, exactly.
        let (w64, b64) = (to_f64(&weights), to_f64(&bias));
        let mut want = to_f64(&initial);
        conv3x3::forward(&p, &w64, &b64, &to_f64(&input), &mut want);
        for whole in [(false, false), (true, false), (false, true), (true, true)] {
            let banded = run_banded(&bands, whole, &input, &initial, |b, input, initial| {
                let mut out = to_f64(initial);
                conv3x3::forward(b, &w64, &b64, &to_f64(input), &mut out);
                out.iter().map(|&v| v as f32).collect()
            });
            let rounded: Vec<f32> = want.iter().map(|&v| v as f32).collect();
            assert_eq!(banded, rounded, "CPU twin, bands of {rows} rows, whole {whole:?}, {p:?}");
        }

        let Some((gpu, lib)) = common::gpu() else { continue };
        let inputs = |input: &[f32], initial: &[f32]| {
            [bytes(&weights).to_vec(), bytes(&bias).to_vec(), bytes(input).to_vec(), bytes(initial).to_vec()]
        };
        let portable = |b: &Conv3x3Params, input: &[f32], initial: &[f32]| {
            let i = inputs(input, initial);
            let refs: Vec<&[u8]> = i.iter().map(|v| v.as_slice()).collect();
            floats(&run_once::<conv3x3::Forward>(gpu, lib, b, &refs).unwrap()[0])
        };
        let whole_gpu = portable(&p, &input, &initial);
        let what = format!("conv3x3.forward {h}x{w} {cin}->{cout}");
        assert_close(&what, &whole_gpu, &want, &[h, w, cout], DOT_ATOL, DOT_RTOL);
        for whole in [(false, false), (true, true)] {
            let banded = run_banded(&bands, whole, &input, &initial, portable);
            assert_eq!(banded, whole_gpu, "conv3x3.forward in bands of {rows} rows, whole {whole:?}, {p:?}");
        }
        if !fast_conv_available() {
            continue;
        }
        let storage = |b: &Conv3x3Params, input: &[f32], initial: &[f32]| {
            run_fast_conv_storage(b, &weights, &bias, input, initial)
        };
        let whole_fast = storage(&p, &input, &initial);
        assert_close(&format!("fast {what}"), &whole_fast, &want, &[h, w, cout], DOT_ATOL, DOT_RTOL);
        for whole in [(false, false), (true, false), (false, true)] {
            let banded = run_banded(&bands, whole, &input, &initial, storage);
            assert_eq!(banded, whole_fast, "fast conv in bands of {rows} rows, whole {whole:?}, {p:?}");
        }
        if conv3x3_subgroup::textures_fit(&p, gpu.limits.max_texture_dimension_2d) {
            // The input texture always holds the whole map; the output binding holds the band.
            let textured = |b: &Conv3x3Params, _: &[f32], initial: &[f32]| {
                run_fast_conv_texture(b, &weights, &bias, &input, initial)
            };
            let banded = run_banded(&bands, (true, false), &input, &initial, textured);
            assert_eq!(banded, whole_fast, "texture conv in bands of {rows} rows, {p:?}");
        }
    }
}
