//! The Winograd conv F(2x2, 3x3) and F(4x4, 3x3): its CPU twins against the direct conv, each GPU
//! kernel against its twin, and the whole GPU conv against the direct conv in f64, every
//! comparison within the rounding bound derived in `nst::ops::winograd::rounding_bound` (the
//! tolerance follows from that bound; each test prints the largest measured error as a fraction
//! of it).

mod common;

use common::{bytes, floats, to_f64, Rng};
use nst::gpu::run_once;
use nst::ops::conv3x3::{self, Conv3x3Params};
use nst::ops::conv3x3_subgroup::transpose_weights;
use nst::ops::winograd::{self, WinogradParams, F32_UNIT_ROUNDOFF};

fn gamma(n: usize) -> f64 {
    let nu = n as f64 * F32_UNIT_ROUNDOFF;
    nu / (1.0 - nu)
}

/// Weights scaled like He initialisation, so activations stay of order 1.
fn conv_weights(rng: &mut Rng, p: &Conv3x3Params) -> (Vec<f32>, Vec<f32>) {
    let a = (6.0 / (9.0 * p.in_channels as f64)).sqrt();
    (rng.vec_f32(p.weights_len(), -a, a), rng.vec_f32(p.bias_len(), -0.1, 0.1))
}

/// Checks `|got - want| <= bound` everywhere; names the worst element; returns the largest
/// `|got - want| / bound`.
fn assert_within(what: &str, got: &[f32], want: &[f64], bound: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    assert_eq!(bound.len(), want.len(), "{what}: bound length differs");
    let mut worst = (0, 0.0f64);
    for i in 0..want.len() {
        let err = (got[i] as f64 - want[i]).abs();
        // A zero bound (an exact zero input) allows no error; NaN fails.
        let ratio = if err == 0.0 { 0.0 } else { err / bound[i] };
        assert!(
            ratio <= 1.0,
            "{what}: element {i} is off by {err:e}, over its rounding bound {:e} (got {}, want {})",
            bound[i],
            got[i],
            want[i]
        );
        if ratio > worst.1 {
            worst = (i, ratio);
        }
    }
    println!("{what}: largest error {:.3} of the rounding bound (element {})", worst.1, worst.0);
    worst.1
}

/// The direct conv in f64 of the f32 inputs (accumulating into `initial` when `p` says so): exact
/// to far below any f32 rounding bound.
fn direct_f64(p: &Conv3x3Params, weights: &[f32], bias: &[f32], input: &[f32], initial: &[f32]) -> Vec<f64> {
    let mut out = to_f64(initial);
    conv3x3::forward(p, &to_f64(weights), &to_f64(bias), &to_f64(input), &mut out);
    out
}

#[test]
fn the_winograd_twin_in_f64_equals_the_direct_conv_at_odd_shapes() {
    let mut rng = Rng::new(11);
    for m in [2, 4] {
        for &(h, w, cin, cout, relu) in
            &[(1, 1, 3, 2, false), (5, 7, 4, 3, true), (6, 6, 2, 5, false), (9, 4, 8, 16, true), (4, 13, 1, 1, false)]
        {
            let p = Conv3x3Params::new(h, w, cin, cout).with_relu(relu);
            let (weights, bias) = conv_weights(&mut rng, &p);
            let input = rng.vec_f32(p.input_len(), -1.0, 1.0);
            let want = direct_f64(&p, &weights, &bias, &input, &vec![0.0; p.output_len()]);
            let wp = WinogradParams::new(&p, m);
            let u = winograd::transform_weights(m, cin, cout, &to_f64(&weights));
            let mut got = vec![0.0f64; p.output_len()];
            winograd::forward(&wp, &u, &to_f64(&bias), &to_f64(&input), &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
                    "F({m}) {h}x{w} {cin}->{cout}: element {i}: {g} vs {w}"
                );
            }
        }
    }
}

#[test]
fn the_winograd_twin_in_f32_stays_within_its_rounding_bound() {
    let mut rng = Rng::new(12);
    for m in [2, 4] {
        for &(h, w, cin, cout) in &[(7, 9, 4, 16), (16, 16, 64, 16), (8, 8, 512, 16)] {
            let p = Conv3x3Params::new(h, w, cin, cout).with_relu(true);
            let (weights, bias) = conv_weights(&mut rng, &p);
            let input = rng.vec_f32(p.input_len(), -1.0, 1.0);
            let want = direct_f64(&p, &weights, &bias, &input, &vec![0.0; p.output_len()]);
            let wp = WinogradParams::new(&p, m);
            let u = winograd::transform_weights(m, cin, cout, &weights);
            let mut got = vec![0.0f32; p.output_len()];
            winograd::forward(&wp, &u, &bias, &input, &mut got);
            let bound = winograd::rounding_bound(&wp, &weights, &bias, &input, &[]);
            assert_within(&format!("F({m}) twin {h}x{w} {cin}->{cout}"), &got, &want, &bound);
        }
    }
}

fn gpu_runs_winograd() -> bool {
    let Some((_, lib)) = common::gpu() else { return false };
    assert!(
        lib.has::<winograd::InputF2>() && lib.has::<winograd::InputF4>() && lib.has::<winograd::Gemm>(),
        "the Winograd transforms and the portable products need no subgroups: every adapter builds them"
    );
    true
}

/// The three Winograd kernels on the GPU, one dispatch each: V, M and the output.
fn run_gpu(
    wp: &WinogradParams,
    subgroup: bool,
    u: &[f32],
    bias: &[f32],
    input: &[f32],
    initial: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (gpu, lib) = common::gpu().unwrap();
    assert!(winograd::suits(&wp.conv()), "{wp:?} does not suit the Winograd kernels");
    let zeros = |n: usize| vec![0u8; 4 * n];
    let v = match wp.tile {
        2 => run_once::<winograd::InputF2>(gpu, lib, wp, &[bytes(input), &zeros(wp.transformed_input_len())]),
        _ => run_once::<winograd::InputF4>(gpu, lib, wp, &[bytes(input), &zeros(wp.transformed_input_len())]),
    };
    let v = floats(&v.unwrap()[0]);
    let gemm_inputs: [&[u8]; 3] = [bytes(u), bytes(&v), &zeros(wp.product_len())];
    let product = match subgroup {
        true => run_once::<winograd::GemmSubgroup>(gpu, lib, wp, &gemm_inputs),
        false => run_once::<winograd::Gemm>(gpu, lib, wp, &gemm_inputs),
    };
    let product = floats(&product.unwrap()[0]);
    if subgroup {
        // The narrow kernel (fewer tiles per invocation) does each product's arithmetic in the same
        // order: the same bits.
        let narrow = run_once::<winograd::GemmSubgroupNarrow>(gpu, lib, wp, &gemm_inputs).unwrap();
        assert!(floats(&narrow[0]) == product, "{wp:?}: the narrow products differ from the wide ones");
    }
    let out_inputs: [&[u8]; 3] = [bytes(&product), bytes(bias), bytes(initial)];
    let out = match wp.tile {
        2 => run_once::<winograd::OutputF2>(gpu, lib, wp, &out_inputs),
        _ => run_once::<winograd::OutputF4>(gpu, lib, wp, &out_inputs),
    };
    (v, product, floats(&out.unwrap()[0]))
}

/// The Winograd conv with texture operands (U and V read through textures, V copied into its
/// texture), through `winograd::plan` as the engine runs it (the input from its map texture,
/// filled by a copy, when `map_input`).
#[allow(clippy::too_many_arguments)]
fn run_gpu_textured(
    wp: &WinogradParams,
    subgroup: bool,
    map_input: bool,
    u: &[f32],
    bias: &[f32],
    input: &[f32],
    initial: &[f32],
    mask: Option<&[f32]>,
) -> Vec<f32> {
    use nst::gpu::{bind_planned, submit_commands, Command, Resource};
    use nst::ops::conv3x3_subgroup as fast;
    let (gpu, lib) = common::gpu().unwrap();
    let p = wp.conv();
    let (cin, cout) = (wp.in_channels as usize, wp.out_channels as usize);
    let weights = fast::create_texture(gpu, "u", winograd::weights_texture_size(wp));
    fast::write_texture(gpu, &weights, &winograd::weights_texture_data(wp.tile as usize, cin, cout, u));
    let v_texture = fast::create_texture(gpu, "v", winograd::transformed_texture_size(wp));
    let map = fast::create_texture(gpu, "map", fast::input_texture_size(&p));
    let (input_buffer, bias, out) = (
        gpu.buffer_from("input", bytes(input)),
        gpu.buffer_from("bias", bytes(bias)),
        gpu.buffer_from("output", bytes(initial)),
    );
    let (v, product) = (
        gpu.buffer_zeroed("v", 4 * wp.transformed_input_len() as u64),
        gpu.buffer_zeroed("m", 4 * wp.product_len() as u64),
    );
    let mask = mask.map(|m| gpu.buffer_from("mask", bytes(m)));
    let resources = winograd::ConvOperands {
        input: if map_input { Resource::Texture(&map) } else { Resource::Buffer(&input_buffer) },
        weights: Resource::Texture(&weights),
        transformed: Resource::Buffer(&v),
        transformed_texture: Some(Resource::Texture(&v_texture)),
        product: Resource::Buffer(&product),
        bias: Resource::Buffer(&bias),
        output: Resource::Buffer(&out),
        mask: mask.as_ref().map(Resource::Buffer),
    };
    let mut commands: Vec<Command> = winograd::plan(wp, winograd::Operands::Texture, subgroup, map_input, resources)
        .iter()
        .map(|c| bind_planned(gpu, lib, c).unwrap())
        .collect();
    if map_input {
        commands.insert(0, fast::map_copy(&input_buffer, &map, p.height, p.width, p.in_channels));
    }
    submit_commands(gpu, "winograd textured", &commands.iter().collect::<Vec<_>>()).unwrap();
    floats(&gpu.read_buffers(&[&out]).unwrap()[0])
}

/// Whether the texture flavour can run `wp` here (V's rows suit the copy into its texture).
fn textures_fit(wp: &WinogradParams) -> bool {
    winograd::textures_fit(wp, common::gpu().unwrap().0.limits.max_texture_dimension_2d)
}

/// The flavours of the products kernel this adapter built: portable always, subgroups where it
/// has them.
fn flavours() -> Vec<bool> {
    let (gpu, lib) = common::gpu().unwrap();
    let subgroups = lib.has::<winograd::GemmSubgroup>();
    assert_eq!(subgroups, gpu.subgroup_size.is_some(), "the subgroup products exist exactly where subgroups do");
    if subgroups {
        vec![false, true]
    } else {
        eprintln!("NOTE: {} has no subgroups: the subgroup products are not tested here", gpu.describe());
        vec![false]
    }
}

/// Each GPU kernel against its twin in f64 from the same f32 inputs, within the rounding bound of
/// that kernel alone; then the whole conv against the direct conv within [`winograd::rounding_bound`].
fn check_gpu(m: usize, p: &Conv3x3Params, seed: u64) -> f64 {
    let mut rng = Rng::new(seed);
    let (weights, bias) = conv_weights(&mut rng, p);
    let input = rng.vec_f32(p.input_len(), -1.0, 1.0);
    let initial = if p.accumulate != 0 { rng.vec_f32(p.output_len(), -1.0, 1.0) } else { vec![0.0; p.output_len()] };
    let wp = WinogradParams::new(p, m);
    let (cin, cout) = (p.in_channels as usize, p.out_channels as usize);
    let tr = winograd::transform(m);
    let a = tr.alpha();
    let u = winograd::transform_weights(m, cin, cout, &weights);
    let mut worst: f64 = 0.0;
    for subgroup in flavours() {
        let name = format!(
            "F({m}) {}x{} {cin}->{cout} relu={} +={} subgroup={subgroup}",
            p.height, p.width, p.relu, p.accumulate
        );
        let (v, product, out) = run_gpu(&wp, subgroup, &u, &bias, &input, &initial);
        // The texture flavour does the same arithmetic: the same bits, with the input from its
        // buffer and from its map texture.
        let max = common::gpu().unwrap().0.limits.max_texture_dimension_2d;
        let map_fits = winograd::map_input_fits(p, max);
        let textured = textures_fit(&wp);
        for map_input in [false, true].into_iter().filter(|&m| textured && (!m || map_fits)) {
            let textured = run_gpu_textured(&wp, subgroup, map_input, &u, &bias, &input, &initial, None);
            assert!(
                textured == out,
                "{name}: the texture flavour (map input {map_input}) differs from the storage flavour"
            );
        }

        // Input transform: two passes of at most alpha terms, each a multiply and an add.
        let mut want_v = vec![0.0; wp.transformed_input_len()];
        winograd::input_transform(&wp, &to_f64(&input), &mut want_v);
        let abs_input: Vec<f64> = input.iter().map(|x| (*x as f64).abs()).collect();
        let abs_tr = winograd::Transform {
            bt: Box::leak(tr.bt.iter().map(|x| x.abs()).collect::<Vec<_>>().into_boxed_slice()),
            ..*tr
        };
        let abs_wp = WinogradParams { tile: m as u32, ..wp };
        let mut v_abs = vec![0.0; wp.transformed_input_len()];
        input_transform_with(&abs_tr, &abs_wp, &abs_input, &mut v_abs);
        let bound: Vec<f64> = v_abs.iter().map(|x| gamma(2 * a) * x).collect();
        assert_within(&format!("{name} input transform"), &v, &want_v, &bound);

        // Products: a multiply and cin adds per output.
        let mut want_m = vec![0.0; wp.product_len()];
        winograd::products(&wp, &to_f64(&u), &to_f64(&v), &mut want_m);
        let abs = |x: &[f32]| x.iter().map(|v| (*v as f64).abs()).collect::<Vec<f64>>();
        let mut m_abs = vec![0.0; wp.product_len()];
        winograd::products(&wp, &abs(&u), &abs(&v), &mut m_abs);
        let bound: Vec<f64> = m_abs.iter().map(|x| gamma(cin + 1) * x).collect();
        assert_within(&format!("{name} products"), &product, &want_m, &bound);

        // Output transform: two passes, the bias and the `+=`.
        let mut want_out = to_f64(&initial);
        winograd::output_transform(&wp, &to_f64(&product), &to_f64(&bias), &mut want_out, None);
        let mut out_abs = abs(&initial);
        let abs_at = winograd::Transform {
            at: Box::leak(tr.at.iter().map(|x| x.abs()).collect::<Vec<_>>().into_boxed_slice()),
            ..*tr
        };
        output_transform_abs(&abs_at, &wp, &abs(&product), &abs(&bias), &mut out_abs);
        let bound: Vec<f64> = out_abs.iter().map(|x| gamma(2 * a + 2) * x).collect();
        assert_within(&format!("{name} output transform"), &out, &want_out, &bound);

        // The whole conv against the direct conv.
        let want = direct_f64(p, &weights, &bias, &input, &initial);
        let bound = winograd::rounding_bound(&wp, &weights, &bias, &input, &initial);
        worst = worst.max(assert_within(&format!("{name} against the direct conv"), &out, &want, &bound));
    }
    worst
}

/// The input transform's twin with the matrices of `tr` (here: their absolute values).
fn input_transform_with(tr: &winograd::Transform, p: &WinogradParams, input: &[f64], v: &mut [f64]) {
    let (a, m, tiles, cin) = (tr.alpha(), tr.m as i64, p.tiles(), p.in_channels as usize);
    let (h, w) = (p.height as i64, p.width as i64);
    for tile in 0..tiles {
        let (ty, tx) = ((tile / p.tiles_x as usize) as i64, (tile % p.tiles_x as usize) as i64);
        for ci in 0..cin {
            for i in 0..a {
                for j in 0..a {
                    let mut s = 0.0;
                    for q in 0..a {
                        for r in 0..a {
                            let (y, x) = (p.band_start as i64 + ty * m - 1 + q as i64, tx * m - 1 + r as i64);
                            if y >= 0 && y < h && x >= 0 && x < w {
                                let d = input[((y - p.input_start as i64) * w + x) as usize * cin + ci];
                                s += tr.bt[i * a + q] * tr.bt[j * a + r] * d;
                            }
                        }
                    }
                    v[((i * a + j) * tiles + tile) * cin + ci] = s;
                }
            }
        }
    }
}

/// `|Aᵀ| |M| |A| + |bias| + |before|` per output (no ReLU: the bound of the sum before it).
fn output_transform_abs(tr: &winograd::Transform, p: &WinogradParams, product: &[f64], bias: &[f64], out: &mut [f64]) {
    // The twin with |Aᵀ| in place of Aᵀ: the sandwich of absolute values, added to |before|.
    let (a, m, tiles, cout) = (tr.alpha(), tr.m, p.tiles(), p.out_channels as usize);
    let end = (p.band_start + p.band_rows) as usize;
    for tile in 0..tiles {
        let (ty, tx) = (tile / p.tiles_x as usize, tile % p.tiles_x as usize);
        for co in 0..cout {
            for i in 0..m {
                for j in 0..m {
                    let (row, col) = (p.band_start as usize + ty * m + i, tx * m + j);
                    if row >= end || col >= p.width as usize {
                        continue;
                    }
                    let mut s = 0.0;
                    for k in 0..a {
                        for l in 0..a {
                            s +=
                                tr.at[i * a + k] * tr.at[j * a + l] * product[((k * a + l) * tiles + tile) * cout + co];
                        }
                    }
                    let o = ((row - p.output_start as usize) * p.width as usize + col) * cout + co;
                    out[o] = if p.accumulate != 0 { out[o] } else { 0.0 } + s + bias[co];
                }
            }
        }
    }
}

#[test]
fn winograd_kernels_match_their_twins_and_the_direct_conv_at_odd_shapes() {
    if !gpu_runs_winograd() {
        return;
    }
    for m in [2, 4] {
        for (k, &(h, w, cin, cout, relu, acc)) in [
            (1, 1, 4, 32, false, false),
            (5, 7, 4, 32, true, false),
            // Rows of V a multiple of 256 bytes: the texture flavour runs too.
            (5, 7, 32, 32, true, true),
            (9, 13, 8, 32, false, true),
            (17, 3, 12, 32, true, true),
        ]
        .iter()
        .enumerate()
        {
            let p = Conv3x3Params::new(h, w, cin, cout).with_relu(relu).with_accumulate(acc);
            check_gpu(m, &p, 100 + k as u64);
        }
    }
}

#[test]
fn winograd_kernels_match_the_direct_conv_at_vgg_channel_counts() {
    // (Rows of 64 x 64 channels and wider suit a copy into the map texture: the map-input
    // flavour runs at these shapes.)
    if !gpu_runs_winograd() {
        return;
    }
    let mut worst = [0.0f64; 2];
    for (i, m) in [2, 4].into_iter().enumerate() {
        for (k, &(s, cin, cout)) in
            [(32, 64, 64), (16, 128, 256), (8, 512, 512), (12, 4, 64), (8, 256, 32)].iter().enumerate()
        {
            let p = Conv3x3Params::new(s, s, cin, cout).with_relu(true);
            // From 64 channels V's rows suit the copy into its texture: the texture flavour runs.
            assert!(cin < 64 || textures_fit(&WinogradParams::new(&p, m)), "F({m}) {s}x{s}x{cin}");
            worst[i] = worst[i].max(check_gpu(m, &p, 200 + k as u64));
        }
    }
    println!("largest error as a fraction of the rounding bound: F(2x2) {:.3}, F(4x4) {:.3}", worst[0], worst[1]);
}

#[test]
fn the_input_gradient_as_a_winograd_conv_with_transposed_weights_matches_the_cpu_input_gradient() {
    if !gpu_runs_winograd() {
        return;
    }
    for m in [2, 4] {
        // The layer 32 -> 16; its gradient is a conv 16 -> 32 with flipped, transposed weights.
        let layer = Conv3x3Params::new(10, 11, 32, 16);
        let mut rng = Rng::new(300 + m as u64);
        let (weights, _) = conv_weights(&mut rng, &layer);
        let grad_output = rng.vec_f32(layer.output_len(), -1.0, 1.0);
        let mut want = vec![0.0; layer.input_len()];
        conv3x3::backward_input(&layer, &to_f64(&weights), &to_f64(&grad_output), &mut want);
        let g = layer.input_gradient();
        let transposed = transpose_weights(32, 16, &weights);
        let wp = WinogradParams::new(&g, m);
        let u = winograd::transform_weights(m, 16, 32, &transposed);
        let zero = vec![0.0; 32];
        for subgroup in flavours() {
            let (_, _, got) = run_gpu(&wp, subgroup, &u, &zero, &grad_output, &vec![0.0; layer.input_len()]);
            let bound = winograd::rounding_bound(&wp, &transposed, &zero, &grad_output, &[]);
            assert_within(&format!("F({m}) input gradient subgroup={subgroup}"), &got, &want, &bound);
        }
    }
}

#[test]
fn a_winograd_conv_computed_band_by_band_equals_the_whole_map_bit_for_bit() {
    if !gpu_runs_winograd() {
        return;
    }
    let (h, w, cin, cout) = (23, 9, 8, 32);
    let p = Conv3x3Params::new(h, w, cin, cout).with_relu(true);
    let mut rng = Rng::new(400);
    let (weights, bias) = conv_weights(&mut rng, &p);
    let input = rng.vec_f32(p.input_len(), -1.0, 1.0);
    let row = w * cin;
    // Bands of 2m rows (the last one shorter), each bound to just the rows it reads and writes.
    let band_input = |b: &Conv3x3Params| {
        let first = b.input_start as usize;
        &input[first * row..(first + b.band_input_rows(1)) * row]
    };
    for m in [2, 4] {
        let u = winograd::transform_weights(m, cin, cout, &weights);
        let bands = p.bands(2 * m, 1);
        assert!(bands.len() > 2 && !(bands.last().unwrap().band_rows as usize).is_multiple_of(m), "uneven bands");
        let mut cpu_whole = vec![0.0f32; p.output_len()];
        winograd::forward(&WinogradParams::new(&p, m), &u, &bias, &input, &mut cpu_whole);
        let mut cpu_banded = vec![0.0f32; p.output_len()];
        for b in &bands {
            let start = b.band_start as usize * w * cout;
            let out = &mut cpu_banded[start..start + b.band_output_len()];
            winograd::forward(&WinogradParams::new(b, m), &u, &bias, band_input(b), out);
        }
        assert_eq!(cpu_banded, cpu_whole, "F({m}) twin: bands differ from the whole map");
        for subgroup in flavours() {
            let (_, _, whole) =
                run_gpu(&WinogradParams::new(&p, m), subgroup, &u, &bias, &input, &vec![0.0; p.output_len()]);
            let mut banded = vec![0.0f32; p.output_len()];
            for b in &bands {
                let (_, _, out) = run_gpu(
                    &WinogradParams::new(b, m),
                    subgroup,
                    &u,
                    &bias,
                    band_input(b),
                    &vec![0.0; b.band_output_len()],
                );
                let start = b.band_start as usize * w * cout;
                banded[start..start + out.len()].copy_from_slice(&out);
            }
            assert_eq!(banded, whole, "F({m}) subgroup={subgroup}: bands differ from the whole map");
            let want = direct_f64(&p, &weights, &bias, &input, &vec![0.0; p.output_len()]);
            let bound = winograd::rounding_bound(&WinogradParams::new(&p, m), &weights, &bias, &input, &[]);
            assert_within(&format!("F({m}) subgroup={subgroup} whole map"), &whole, &want, &bound);
        }
    }
}

/// `plain` with ReLU's gradient applied: zero where `mask` is not positive.
fn masked(plain: &[f32], mask: &[f32]) -> Vec<f32> {
    plain.iter().zip(mask).map(|(&v, &m)| if m > 0.0 { v } else { 0.0 }).collect()
}

#[test]
fn the_masked_output_transform_is_the_output_transform_then_relus_gradient_bit_for_bit() {
    if !gpu_runs_winograd() {
        return;
    }
    let (gpu, lib) = common::gpu().unwrap();
    for m in [2, 4] {
        for (k, &(h, w, cin, cout, acc)) in
            [(5, 7, 8, 32, false), (9, 13, 4, 32, true), (7, 7, 64, 32, true), (16, 16, 64, 64, true)]
                .iter()
                .enumerate()
        {
            let p = Conv3x3Params::new(h, w, cin, cout).with_accumulate(acc);
            let mut rng = Rng::new(500 + k as u64);
            let (weights, bias) = conv_weights(&mut rng, &p);
            let input = rng.vec_f32(p.input_len(), -1.0, 1.0);
            let initial = rng.vec_f32(p.output_len(), -1.0, 1.0);
            // A ReLU's output: positive, exactly zero (the kink: no gradient), and a negative zero.
            let mask: Vec<f32> = (0..p.output_len())
                .map(|i| match i % 4 {
                    0 => 0.0,
                    1 => -0.0,
                    _ => rng.vec_f32(1, 0.0, 2.0)[0],
                })
                .collect();
            assert!(mask.iter().any(|&v| v > 0.0) && mask.contains(&0.0));
            let wp = WinogradParams::new(&p, m);
            let u = winograd::transform_weights(m, cin, cout, &weights);
            let name = format!("F({m}) {h}x{w} {cin}->{cout} +={acc}");

            // The twin.
            let mut product = vec![0.0f32; wp.product_len()];
            let mut v = vec![0.0f32; wp.transformed_input_len()];
            winograd::input_transform(&wp, &input, &mut v);
            winograd::products(&wp, &u, &v, &mut product);
            let (mut plain, mut with_mask) = (initial.clone(), initial.clone());
            winograd::output_transform(&wp, &product, &bias, &mut plain, None);
            winograd::output_transform(&wp, &product, &bias, &mut with_mask, Some(&mask));
            assert_eq!(with_mask, masked(&plain, &mask), "{name}: the twin");

            for subgroup in flavours() {
                // Storage operands, one kernel at a time.
                let (_, product, plain) = run_gpu(&wp, subgroup, &u, &bias, &input, &initial);
                let inputs: [&[u8]; 4] = [bytes(&product), bytes(&bias), bytes(&initial), bytes(&mask)];
                let got = match m {
                    2 => nst::gpu::run_once::<winograd::OutputF2Masked>(gpu, lib, &wp, &inputs),
                    _ => nst::gpu::run_once::<winograd::OutputF4Masked>(gpu, lib, &wp, &inputs),
                };
                let got = floats(&got.unwrap()[0]);
                assert!(got == masked(&plain, &mask), "{name} subgroup={subgroup}: storage flavour");
                // Texture operands, through the plan as the engine runs it.
                if textures_fit(&wp) {
                    let textured = run_gpu_textured(&wp, subgroup, false, &u, &bias, &input, &initial, Some(&mask));
                    assert!(textured == masked(&plain, &mask), "{name} subgroup={subgroup}: texture flavour");
                }
            }
        }
    }
}
