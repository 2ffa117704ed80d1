//! Every CPU backward against central finite differences in f64. Each test builds a scalar
//! L(x) = sum(r * forward(x)) with seeded random r (or the loss itself), takes dL/dx from the
//! backward twin, and compares it at sampled points x_k with (L(x + h e_k) - L(x - h e_k)) / 2h.
//! Points next to a kink (ReLU at 0, a max-pool near-tie, a TV difference near 0) are skipped: there
//! the derivative is one-sided and the convention (gradient 0, first maximum) is tested on the GPU
//! side with exact ties.

mod common;

use common::Rng;
use nst::ops::{avgpool2, conv3x3, gram, maxpool2, relu, sqdiff, tv};
use nst::ops::{conv3x3::Conv3x3Params, gram::GramParams, maxpool2::Pool2Params};

const H: f64 = 1e-5;
/// L is linear or quadratic in each x_k for every op here, so the central difference is exact up to
/// rounding: about 1e-16 * |L| / h.
const TOL: f64 = 1e-7;

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Compares `grad` with central differences of `loss` at up to `samples` points that `safe` accepts.
/// Returns the number of points checked; fails naming the worst point.
fn check(
    what: &str,
    x: &[f64],
    grad: &[f64],
    loss: impl Fn(&[f64]) -> f64,
    safe: impl Fn(usize) -> bool,
    samples: usize,
    rng: &mut Rng,
) -> usize {
    assert_eq!(x.len(), grad.len());
    let mut points: Vec<usize> = if x.len() <= samples {
        (0..x.len()).collect()
    } else {
        (0..samples * 4).map(|_| rng.below(x.len())).collect()
    };
    points.retain(|&k| safe(k));
    points.truncate(samples);
    assert!(!points.is_empty(), "{what}: no sample point away from kinks");
    let mut worst = (0usize, 0.0f64, 0.0f64, 0.0f64);
    for &k in &points {
        let mut xp = x.to_vec();
        let mut xm = x.to_vec();
        xp[k] += H;
        xm[k] -= H;
        let fd = (loss(&xp) - loss(&xm)) / (2.0 * H);
        let err = (fd - grad[k]).abs() / grad[k].abs().max(1.0);
        if err > worst.1 {
            worst = (k, err, fd, grad[k]);
        }
    }
    let (k, err, fd, g) = worst;
    assert!(
        err <= TOL,
        "{what}: at element {k} the backward gives {g}, finite differences {fd} (relative error {err:e})"
    );
    println!("finite differences {what}: {} points, worst relative error {err:.2e}", points.len());
    points.len()
}

fn conv_case(h: usize, w: usize, cin: usize, cout: usize, relu: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let p = Conv3x3Params::new(h, w, cin, cout).with_relu(relu);
    let a = (6.0 / (9.0 * cin as f64)).sqrt();
    let weights = rng.vec_f64(p.weights_len(), -a, a);
    let bias = rng.vec_f64(p.bias_len(), -0.1, 0.1);
    let x = rng.vec_f64(p.input_len(), -1.0, 1.0);
    let r = rng.vec_f64(p.output_len(), -1.0, 1.0);
    let forward = |x: &[f64]| {
        let mut out = vec![0.0; p.output_len()];
        conv3x3::forward(&p, &weights, &bias, x, &mut out);
        out
    };
    let out = forward(&x);
    // With fused ReLU the upstream gradient is masked first, as the tape will do with relu.backward.
    let mut grad_out = r.clone();
    if relu {
        relu::backward(&relu::ReluParams::new(out.len()), &out, &r, &mut grad_out);
    }
    let mut grad = vec![0.0; p.input_len()];
    conv3x3::backward_input(&p, &weights, &grad_out, &mut grad);
    // Away from kinks: no pre-activation that x_k reaches may cross 0 within the step.
    let mask = |o: &[f64]| o.iter().map(|&v| v > 0.0).collect::<Vec<_>>();
    let safe = |k: usize| {
        if !relu {
            return true;
        }
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[k] += 10.0 * H;
        xm[k] -= 10.0 * H;
        let m = mask(&out);
        mask(&forward(&xp)) == m && mask(&forward(&xm)) == m
    };
    check(
        &format!("conv3x3 {h}x{w} {cin}->{cout} relu={relu}"),
        &x,
        &grad,
        |x| dot(&r, &forward(x)),
        safe,
        24,
        &mut rng,
    );
}

#[test]
fn conv3x3_input_gradient_matches_finite_differences() {
    conv_case(1, 1, 3, 2, false, 1);
    conv_case(5, 7, 3, 4, false, 2);
    conv_case(6, 5, 8, 16, true, 3);
    conv_case(4, 4, 64, 8, true, 4);
}

#[test]
fn relu_gradient_matches_finite_differences_away_from_zero() {
    let mut rng = Rng::new(10);
    let n = 500;
    let p = relu::ReluParams::new(n);
    let x = rng.vec_f64(n, -1.0, 1.0);
    let r = rng.vec_f64(n, -1.0, 1.0);
    let forward = |x: &[f64]| {
        let mut out = vec![0.0; n];
        relu::forward(&p, x, &mut out);
        out
    };
    let out = forward(&x);
    let mut grad = vec![0.0; n];
    relu::backward(&p, &out, &r, &mut grad);
    check("relu", &x, &grad, |x| dot(&r, &forward(x)), |k| x[k].abs() > 10.0 * H, 50, &mut rng);
}

fn pool_case(h: usize, w: usize, c: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let p = Pool2Params::new(h, w, c);
    let x = rng.vec_f64(p.input_len(), -1.0, 1.0);
    let r = rng.vec_f64(p.output_len(), -1.0, 1.0);

    let max_forward = |x: &[f64]| {
        let mut out = vec![0.0; p.output_len()];
        maxpool2::forward(&p, x, &mut out);
        out
    };
    let mut grad = vec![0.0; p.input_len()];
    maxpool2::backward(&p, &x, &r, &mut grad);
    // Away from kinks: x_k differs from every other element of its window by more than the step.
    let window_gap = |k: usize| {
        let (wd, cn) = (w, c);
        let (ch, px) = (k % cn, k / cn);
        let (yy, xx) = (px / wd, px % wd);
        let (oy, ox) = (yy / 2, xx / 2);
        if oy >= p.out_height() || ox >= p.out_width() {
            return true;
        }
        (0..4).all(|q| {
            let j = ((2 * oy + q / 2) * wd + 2 * ox + q % 2) * cn + ch;
            j == k || (x[j] - x[k]).abs() > 10.0 * H
        })
    };
    check(&format!("maxpool2 {h}x{w}x{c}"), &x, &grad, |x| dot(&r, &max_forward(x)), window_gap, 40, &mut rng);

    let avg_forward = |x: &[f64]| {
        let mut out = vec![0.0; p.output_len()];
        avgpool2::forward(&p, x, &mut out);
        out
    };
    let mut grad = vec![0.0; p.input_len()];
    avgpool2::backward(&p, &r, &mut grad);
    check(&format!("avgpool2 {h}x{w}x{c}"), &x, &grad, |x| dot(&r, &avg_forward(x)), |_| true, 40, &mut rng);
}

#[test]
fn pooling_gradients_match_finite_differences_including_dropped_odd_rows() {
    pool_case(2, 2, 1, 20);
    pool_case(7, 5, 3, 21);
    pool_case(8, 6, 16, 22);
}

#[test]
fn gram_gradient_matches_finite_differences() {
    for (h, w, c, seed) in [(1usize, 1usize, 3usize, 30u64), (5, 7, 3, 31), (6, 6, 32, 32)] {
        let mut rng = Rng::new(seed);
        let p = GramParams::new(h, w, c);
        let f = rng.vec_f64(p.features_len(), 0.0, 2.0);
        let r = rng.vec_f64(p.gram_len(), -1.0, 1.0);
        let forward = |f: &[f64]| {
            let mut g = vec![0.0; p.gram_len()];
            gram::forward(&p, f, &mut g);
            g
        };
        let mut grad = vec![0.0; p.features_len()];
        gram::backward(&p, &f, &r, &mut grad);
        check(&format!("gram {h}x{w}x{c}"), &f, &grad, |f| dot(&r, &forward(f)), |_| true, 40, &mut rng);
    }
}

#[test]
fn squared_difference_gradient_matches_finite_differences() {
    for (n, seed) in [(1usize, 40u64), (3, 41), (3000, 42)] {
        let mut rng = Rng::new(seed);
        let a = rng.vec_f64(n, -2.0, 2.0);
        let b = rng.vec_f64(n, -2.0, 2.0);
        let p = sqdiff::SqDiffParams::mean(n, 7.0);
        let mut grad = vec![0.0; n];
        sqdiff::backward(&p, &a, &b, &mut grad);
        check(&format!("sqdiff {n}"), &a, &grad, |a| sqdiff::loss(&p, a, &b), |_| true, 40, &mut rng);
    }
}

#[test]
fn total_variation_gradient_matches_finite_differences_away_from_equal_neighbours() {
    for (h, w, c, seed) in [(1usize, 1usize, 3usize, 50u64), (1, 6, 3, 51), (7, 5, 3, 52), (9, 8, 4, 53)] {
        let mut rng = Rng::new(seed);
        let p = tv::TvParams::new(h, w, c, 0.5);
        let x = rng.vec_f64(p.len(), -1.0, 1.0);
        let mut grad = vec![0.0; p.len()];
        tv::backward(&p, &x, &mut grad);
        let (row, cn) = (w * c, c);
        let safe = |k: usize| {
            let (px, xx, yy) = (k / cn, (k / cn) % w, (k / cn) / w);
            let _ = px;
            let mut neighbours = Vec::new();
            if xx > 0 {
                neighbours.push(k - cn);
            }
            if xx + 1 < w {
                neighbours.push(k + cn);
            }
            if yy > 0 {
                neighbours.push(k - row);
            }
            if yy + 1 < h {
                neighbours.push(k + row);
            }
            neighbours.iter().all(|&j| (x[j] - x[k]).abs() > 10.0 * H)
        };
        check(&format!("tv {h}x{w}x{c}"), &x, &grad, |x| tv::loss(&p, x), safe, 40, &mut rng);
    }
}
