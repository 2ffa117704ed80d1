//! The optimisers beside Adam and the coarse-to-fine render on the GPU, with the real weights:
//! L-BFGS's steps against its CPU twin and against plain gradient steps, the moving average of
//! the iterates against the CPU average, and the state carried between scales at odd sizes.

mod common;

use std::sync::OnceLock;

use image::RgbImage;
use nst::image_io::load_image;
use nst::net::{LossKind, Pooling, Vgg19Weights};
use nst::optim::{average_of, two_loop, LbfgsConfig};
use nst::render::{resize, Optimizer, Render, RenderOptions, Size};

fn weights() -> &'static Vgg19Weights {
    static W: OnceLock<Vgg19Weights> = OnceLock::new();
    W.get_or_init(|| Vgg19Weights::embedded().unwrap())
}

fn example(name: &str, edge: usize) -> RgbImage {
    let img = load_image(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)).unwrap();
    let (w, h) = Size::LongEdge(edge).of(img.width() as usize, img.height() as usize);
    resize(&img, w, h)
}

/// A small, cheap render: two style layers and one content layer, 32 px, with the raw terms and
/// weights these properties were stated for. (With the relative default weights, this loss is
/// almost all style of the two shallow layers, quartic in the features: measured, every
/// quasi-Newton step from a single pair overshoots, 3.41 to 28.5 with no TV term, and is undone,
/// so the history never fills. At 64 px with the default layers the relative defaults lower the
/// loss at every L-BFGS step.)
fn small(optimizer: Optimizer) -> RenderOptions {
    RenderOptions {
        size: Size::LongEdge(32),
        iterations: 1,
        optimizer,
        content_layers: vec!["relu2_1".into()],
        style_layers: vec!["relu1_1".into(), "relu2_1".into()],
        loss_scale: nst::render::LossScale::Raw,
        style_weight: 1e-5,
        tv_weight: 1e-5,
        ..RenderOptions::default()
    }
}

fn render(options: &RenderOptions) -> Render<'static> {
    let (gpu, lib) = common::gpu().expect("a GPU adapter");
    let (content, style) = (example("tubingen.jpg", 48), example("starry_night.jpg", 40));
    Render::new(gpu, lib, weights(), &content, &[style], &options.clone().check(1).unwrap()).unwrap()
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn total(l: &nst::render::Losses) -> f64 {
    l.total()
}

#[test]
fn every_lbfgs_step_is_the_cpu_two_loop_recursion_of_the_pairs_it_kept() {
    if common::gpu().is_none() {
        return;
    }
    let config = LbfgsConfig { history: 3, ..LbfgsConfig::default() };
    let mut r = render(&RenderOptions { lbfgs: config, ..small(Optimizer::Lbfgs) });
    let grad_id = r.engine().tape.image_grad().unwrap();
    let (lower, upper) = nst::ops::image::network_bounds();
    let clamp = |i: usize, v: f64| v.clamp(lower[i % 4] as f64, upper[i % 4] as f64);
    let values = (r.width * r.height * 3) as f64;
    let mut pairs: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
    let mut previous: Option<(Vec<f64>, Vec<f64>, f64)> = None;
    let mut undone = 0;
    for k in 1..=8 {
        let x = wide(&r.iterate_net().unwrap());
        let losses = r.step().unwrap().unwrap();
        let g = wide(&r.engine().read(grad_id).unwrap());
        let f = total(&losses);
        let after = r.iterate_net().unwrap();
        let dot = nst::ops::vector::dot::<f64>;
        // What the step should have been, on the CPU in f64.
        let want: Vec<f64> = match &previous {
            Some((xp, gp, fp)) if f > *fp => {
                // Undone: back to the previous image, a halved gradient step from it.
                undone += 1;
                pairs.clear();
                let gamma = config.first_step * 0.5f64.powi(undone) * (values / dot(gp, gp)).sqrt();
                xp.iter().zip(gp).enumerate().map(|(i, (x, g))| clamp(i, x - gamma * g)).collect()
            }
            _ => {
                undone = 0;
                if let Some((xp, gp, _)) = &previous {
                    // The new pair takes the oldest one's buffers when the history is full.
                    if pairs.len() == config.history {
                        pairs.remove(0);
                    }
                    let s: Vec<f64> = x.iter().zip(xp).map(|(a, b)| a - b).collect();
                    let y: Vec<f64> = g.iter().zip(gp).map(|(a, b)| a - b).collect();
                    if dot(&y, &s) > 1e-10 * dot(&y, &y) {
                        pairs.push((s, y));
                    }
                }
                let gamma0 = config.first_step * (values / dot(&g, &g)).sqrt();
                let d = two_loop(&pairs, &g, gamma0);
                let t = if pairs.is_empty() { 1.0 } else { config.step };
                previous = Some((x.clone(), g.clone(), f));
                x.iter().zip(&d).enumerate().map(|(i, (x, d))| clamp(i, x - t * d)).collect()
            }
        };
        assert_eq!(r.lbfgs_pairs(), pairs.len(), "iteration {k}: pairs kept");
        // Compare the step (the change of the image), with a tolerance on the step's scale.
        let start = match &previous {
            Some((xp, _, _)) if undone > 0 => xp.clone(),
            _ => x.clone(),
        };
        let got_step: Vec<f32> = after.iter().zip(&start).map(|(a, b)| (*a as f64 - b) as f32).collect();
        let want_step: Vec<f64> = want.iter().zip(&start).map(|(a, b)| a - b).collect();
        let scale = want_step.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "iteration {k}: the step moved nothing");
        let what = format!("L-BFGS step {k} ({} pairs)", pairs.len());
        common::assert_close(&what, &got_step, &want_step, &[r.height, r.width, 4], 2e-3 * scale + 1e-4, 1e-3);
    }
    assert!(pairs.len() >= 2, "the history filled ({} pairs)", pairs.len());
}

/// Steepest descent with a step of RMS size `size` per value: `x -= size * g / rms(g)`.
fn gradient_descent(size: f64, iterations: usize) -> f64 {
    let r = render(&small(Optimizer::Adam));
    let engine = r.engine();
    let grad_id = engine.tape.image_grad().unwrap();
    let (lower, upper) = nst::ops::image::network_bounds();
    let values = (r.width * r.height * 3) as f64;
    let mut last = f64::INFINITY;
    for _ in 0..=iterations {
        let losses = engine.iterate().unwrap();
        last = losses.iter().map(|&v| v as f64).sum();
        let g = engine.read(grad_id).unwrap();
        let rms = (g.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / values).sqrt();
        let x = r.iterate_net().unwrap();
        let stepped: Vec<f32> = x
            .iter()
            .zip(&g)
            .enumerate()
            .map(|(i, (&x, &g))| {
                (x as f64 - size * g as f64 / rms).clamp(lower[i % 4] as f64, upper[i % 4] as f64) as f32
            })
            .collect();
        engine.set_image(&stepped).unwrap();
    }
    last
}

#[test]
fn lbfgs_lowers_the_loss_faster_per_iteration_than_the_best_plain_gradient_steps() {
    if common::gpu().is_none() {
        return;
    }
    let n = 10;
    let mut r = render(&small(Optimizer::Lbfgs));
    let mut first = 0.0;
    for k in 0..=n {
        let l = total(&r.step().unwrap().unwrap());
        if k == 0 {
            first = l;
        }
    }
    // Loss after n steps: the losses of iteration n + 1 are those of the image after n steps.
    let lbfgs = {
        let l = r.engine().forward().unwrap();
        l.iter().map(|&v| v as f64).sum::<f64>()
    };
    // Plain gradient steps with the best of a range of step sizes, given three times as many
    // iterations.
    let best =
        [0.25, 0.5, 1.0, 2.0, 4.0, 8.0].iter().map(|&size| gradient_descent(size, 3 * n)).fold(f64::INFINITY, f64::min);
    println!(
        "start {first:.4e}; L-BFGS after {n} steps {lbfgs:.4e}; best gradient descent after {} steps {best:.4e}",
        3 * n
    );
    assert!(lbfgs < first, "L-BFGS lowered the loss");
    assert!(lbfgs < best, "L-BFGS in {n} steps ({lbfgs:.4e}) is not below gradient descent in {} ({best:.4e})", 3 * n);
}

#[test]
fn the_averaged_image_equals_the_cpu_average_of_the_iterates() {
    if common::gpu().is_none() {
        return;
    }
    for optimizer in [Optimizer::Adam, Optimizer::Lbfgs] {
        let decay = 0.8;
        let mut r = render(&RenderOptions { average: Some(decay), ..small(optimizer) });
        let mut iterates = Vec::new();
        for _ in 0..6 {
            r.step().unwrap().unwrap();
            iterates.push(wide(&r.iterate_net().unwrap()));
        }
        let want = average_of(&iterates, decay);
        let got = r.image_net().unwrap();
        assert!(got != r.iterate_net().unwrap(), "the output is the average, not the last iterate");
        common::assert_close(&format!("average ({optimizer:?})"), &got, &want, &[r.height, r.width, 4], 1e-3, 1e-5);
    }
}

#[test]
fn resizing_between_scales_keeps_every_buffer_consistent_at_odd_sizes() {
    if common::gpu().is_none() {
        return;
    }
    let (gpu, lib) = common::gpu().unwrap();
    let (content, style) = (example("tubingen.jpg", 64), example("starry_night.jpg", 48));
    let styles = [style];
    for optimizer in [Optimizer::Adam, Optimizer::Lbfgs] {
        let base = RenderOptions {
            style_layers: vec!["relu1_1".into()],
            content_layers: vec!["relu1_1".into()],
            average: Some(0.9),
            ..small(optimizer)
        };
        let at = |width, height| RenderOptions { size: Size::Exact { width, height }, ..base.clone() };
        let mut r =
            Render::new(gpu, lib, weights(), &content, &styles, &at(301, 199).check(styles.len()).unwrap()).unwrap();
        for _ in 0..3 {
            r.step().unwrap().unwrap();
        }
        let before = r.image_net().unwrap();
        let mut next =
            r.next_scale(lib, weights(), &content, &styles, &at(427, 281).check(styles.len()).unwrap()).unwrap();
        assert_eq!((next.width, next.height), (427, 281));
        let len = 427 * 281 * 4;
        assert_eq!(next.engine().image_len(), len);
        assert_eq!(next.iterate_net().unwrap().len(), len);
        let start = next.iterate_net().unwrap();
        assert_eq!(
            start,
            nst::resample::bilinear(&before, (199, 301), 4, (281, 427)),
            "starts from the upsampled output"
        );
        if optimizer == Optimizer::Adam {
            let gpu = &common::gpu().unwrap().0;
            let nst::optim::Carry::Moments { m, v, steps, .. } = next.optimiser().carry(gpu).unwrap() else {
                panic!("Adam carries its moments")
            };
            assert_eq!((m.len(), v.len(), steps), (len, len, 3));
            assert!(m.iter().any(|&x| x != 0.0) && v.iter().all(|&x| x >= 0.0), "moments carried");
            assert_eq!(next.steps(), 3, "Adam's step count carries on");
        } else {
            assert_eq!(next.lbfgs_pairs(), 0, "a fresh history");
        }
        // The targets are the new size's.
        let content_target = next.targets(LossKind::Content).unwrap();
        assert_eq!(content_target[0].len(), 427 * 281 * 64);
        for _ in 0..2 {
            let l = next.step().unwrap().unwrap();
            assert!(l.is_finite());
        }
        assert_eq!(next.image_net().unwrap().len(), len);
        assert_eq!(next.image().unwrap().dimensions(), (427, 281));
    }
}

#[test]
fn average_pooling_gains_match_max_pooling_rms_on_the_sample_images() {
    if common::gpu().is_none() {
        return;
    }
    let (gpu, lib) = common::gpu().unwrap();
    let pools = ["relu1_2", "relu2_2", "relu3_4", "relu4_4"];
    let mut ratios = vec![Vec::new(); 4];
    for name in ["tubingen.jpg", "starry_night.jpg", "shipwreck.jpg"] {
        let img = example(name, 128);
        let spec = nst::net::LossSpec {
            height: img.height() as usize,
            width: img.width() as usize,
            pooling: Pooling::Avg,
            content: vec![("relu5_1".into(), 1.0)],
            style: Vec::new(),
            tv: 0.0,
        };
        let tape = nst::net::Tape::build(&spec).unwrap().without_backward();
        let engine = nst::net::engine::Engine::new(gpu, lib, weights(), tape).unwrap();
        let packed: Vec<u32> = img.pixels().map(|p| nst::ops::image::pack_rgba([p[0], p[1], p[2], 255])).collect();
        engine.set_image_rgba(&packed).unwrap();
        engine.forward().unwrap();
        for (l, input) in pools.iter().enumerate() {
            let x = engine.read(engine.tape.output(input).unwrap()).unwrap();
            let (h, w, c) = engine.tape.tensors[engine.tape.output(input).unwrap()].shape;
            let p = nst::ops::maxpool2::Pool2Params::new(h, w, c);
            let mut max = vec![0f64; p.output_len()];
            nst::ops::maxpool2::forward(&p, &wide(&x), &mut max);
            // (The pool outputs themselves share one buffer, so both pools run on the CPU.)
            let mut avg = vec![0f64; p.output_len()];
            nst::ops::avgpool2::forward(&p, &wide(&x), &mut avg);
            let rms = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
            // With the gain, the next conv sees gain * avg; the gain is right when it equals
            // rms(max) / rms(avg) on the same input.
            ratios[l].push(rms(&max) / rms(&avg));
        }
    }
    let gains = nst::net::tape::AVG_POOL_GAINS;
    for (l, r) in ratios.iter().enumerate() {
        println!("pool{}: rms(max) / rms(avg) = {r:.3?}, gain {}", l + 1, gains[l]);
    }
    for (l, r) in ratios.iter().enumerate() {
        let gain = gains[l] as f64;
        for v in r {
            assert!((v / gain - 1.0).abs() < 0.15, "pool{}: ratio {v:.3} is more than 15% from the gain {gain}", l + 1);
        }
    }
}
