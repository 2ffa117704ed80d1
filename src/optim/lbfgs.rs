//! L-BFGS on the GPU (Nocedal's two-loop recursion): a sequence of `vector.wgsl` kernels over the
//! image, recorded once per image size; its scalars (dot products) stay on the GPU, summed in a
//! fixed order. Its CPU twin is [`two_loop`], the oracle of the tests.

use std::collections::VecDeque;

use super::{Carry, Optimiser};
use crate::error::Result;
use crate::gpu::{submit_commands, Command, Gpu, KernelLibrary, Step};
use crate::net::engine::Engine;
use crate::ops::reduce::{self, ReduceParams};
use crate::ops::vector::{self, VectorParams, ONE, ZERO};

/// L-BFGS's options.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LbfgsConfig {
    /// Correction pairs kept (`m`).
    pub history: usize,
    /// Step length along the quasi-Newton direction (1: the full step the curvature model asks for).
    pub step: f64,
    /// RMS change per value (0..255 scale) of a gradient step: the first step, and the step after
    /// the history was cleared.
    pub first_step: f64,
}

impl Default for LbfgsConfig {
    fn default() -> Self {
        LbfgsConfig { history: 10, step: 1.0, first_step: 1.0 }
    }
}

// Scalar slots: 0 holds 0, 1 holds 1, then y.y and g.g of the current iteration, then three per pair.
const YY: u32 = 2;
const GG: u32 = 3;
const fn ys(pair: usize) -> u32 {
    4 + 3 * pair as u32
}
const fn sq(pair: usize) -> u32 {
    5 + 3 * pair as u32
}
const fn yr(pair: usize) -> u32 {
    6 + 3 * pair as u32
}

/// What one L-BFGS iteration did.
#[derive(Clone, Debug, PartialEq)]
pub enum LbfgsOutcome {
    /// The losses of the image evaluated; a step was taken.
    Stepped(Vec<f32>),
    /// The image evaluated had a higher loss than the one before: it was undone, the history was
    /// cleared and a gradient step (halved after each such undo in a row) was taken instead.
    Undone(Vec<f32>),
    /// The losses were not finite: no step was taken ([`Optimiser::rollback`] puts back the last
    /// image whose losses were).
    Diverged(Vec<f32>),
}

/// L-BFGS on the GPU for one engine (one image size). One iteration is two submissions: the
/// engine's forward and backward with the new correction pair and its dot products (read back
/// with the losses, to decide on the host whether the pair satisfies the curvature condition),
/// then the two-loop recursion and the step.
pub struct Lbfgs {
    config: LbfgsConfig,
    /// Values per image that count for the RMS step size (3 per pixel; the fourth channel is 0).
    values: usize,
    scalars: wgpu::Buffer,
    form_pair: Vec<Vec<Command>>,
    grad_norm: Vec<Command>,
    gradient_to_q: Command,
    first_loop: Vec<Vec<Command>>,
    scale_q: Command,
    second_loop: Vec<Vec<Command>>,
    save_previous: Vec<Command>,
    take_step: Command,
    undo: Command,
    previous_gradient_to_q: Command,
    bounds: ([f32; 4], [f32; 4]),
    len: usize,
    /// Accepted pairs, oldest first, with their y.s and y.y.
    pairs: VecDeque<(usize, f64, f64)>,
    /// Whether x_prev and g_prev hold an evaluated image and its gradient.
    have_previous: bool,
    previous_loss: f64,
    previous_gg: f64,
    undone_in_a_row: i32,
    allocated: u64,
}

fn dot_steps(
    gpu: &Gpu,
    library: &KernelLibrary,
    len: usize,
    [a, b]: [&wgpu::Buffer; 2],
    partials: &wgpu::Buffer,
    scalars: &wgpu::Buffer,
    slot: u32,
) -> Result<Vec<Command>> {
    let p = VectorParams::literal(len, 1.0);
    let first = Step::new::<vector::DotPartials>(gpu, library, &p, &[a, b, partials])?;
    let sum = ReduceParams::new(p.partials(), slot as usize);
    let second = Step::new::<reduce::Sum>(gpu, library, &sum, &[partials, scalars])?;
    Ok(vec![Command::Dispatch(first), Command::Dispatch(second)])
}

impl Lbfgs {
    /// Bytes of GPU memory L-BFGS needs for an image of `len` values: `2 * history` correction
    /// vectors, the direction, the previous image and gradient (the scalars are a few bytes).
    pub fn bytes(config: &LbfgsConfig, len: usize) -> u64 {
        (2 * config.history.max(1) as u64 + 3) * 4 * len as u64
    }

    /// Buffers and commands for `engine`'s image: `2 * history` correction vectors, the direction,
    /// the previous image and gradient, the scalars.
    pub fn new(
        gpu: &Gpu,
        library: &KernelLibrary,
        engine: &Engine,
        config: LbfgsConfig,
        bounds: ([f32; 4], [f32; 4]),
    ) -> Result<Lbfgs> {
        let len = engine.image_len();
        let m = config.history.max(1);
        let bytes = 4 * len as u64;
        let vectors = |name: &str| -> Vec<wgpu::Buffer> {
            (0..m).map(|i| gpu.buffer_zeroed(&format!("lbfgs {name} {i}"), bytes)).collect()
        };
        let (s, y) = (vectors("s"), vectors("y"));
        let q = gpu.buffer_zeroed("lbfgs direction", bytes);
        let x_prev = gpu.buffer_zeroed("lbfgs previous image", bytes);
        let g_prev = gpu.buffer_zeroed("lbfgs previous gradient", bytes);
        let slots = yr(m - 1) as usize + 1;
        let mut initial = vec![0f32; slots];
        initial[ONE as usize] = 1.0;
        let scalars = gpu.buffer_from("lbfgs scalars", bytemuck::cast_slice(&initial));
        let partials =
            gpu.buffer_zeroed("lbfgs partials", 4 * vector::VectorParams::literal(len, 1.0).partials() as u64);
        let allocated = (2 * m as u64 + 3) * bytes + scalars.size() + partials.size();
        let (x, g) = (engine.image_buffer(), engine.grad_buffer());
        let dot = |a: &wgpu::Buffer, b: &wgpu::Buffer, slot: u32| {
            dot_steps(gpu, library, len, [a, b], &partials, &scalars, slot)
        };
        let axpby = |p: VectorParams, x: &wgpu::Buffer, y: &wgpu::Buffer| -> Result<Command> {
            Ok(Command::Dispatch(Step::new::<vector::Axpby>(gpu, library, &p, &[&scalars, x, y])?))
        };
        let copy = |from: &wgpu::Buffer, to: &wgpu::Buffer| Command::CopyBuffer { from: from.clone(), to: to.clone() };
        let minus_one = VectorParams::literal(len, -1.0).with_y_scale(1.0);

        let mut form_pair = Vec::new();
        let mut first_loop = Vec::new();
        let mut second_loop = Vec::new();
        for p in 0..m {
            // s = x - x_prev, y = g - g_prev, then y.s and y.y.
            let mut c = vec![
                copy(x, &s[p]),
                axpby(minus_one, &x_prev, &s[p])?,
                copy(g, &y[p]),
                axpby(minus_one, &g_prev, &y[p])?,
            ];
            c.extend(dot(&y[p], &s[p], ys(p))?);
            c.extend(dot(&y[p], &y[p], YY)?);
            form_pair.push(c);
            // alpha = s.q / y.s; q -= alpha y.
            let mut c = dot(&s[p], &q, sq(p))?;
            c.push(axpby(
                VectorParams::ratio(len, -1.0, sq(p), ZERO, ys(p), f32::MIN_POSITIVE).with_y_scale(1.0),
                &y[p],
                &q,
            )?);
            first_loop.push(c);
            // beta = y.r / y.s; r += (alpha - beta) s.
            let mut c = dot(&y[p], &q, yr(p))?;
            c.push(axpby(
                VectorParams::ratio(len, 1.0, sq(p), yr(p), ys(p), f32::MIN_POSITIVE).with_y_scale(1.0),
                &s[p],
                &q,
            )?);
            second_loop.push(c);
        }
        let literal = VectorParams::literal(len, 1.0);
        let scale_q = Command::Dispatch(Step::new::<vector::Scale>(gpu, library, &literal, &[&scalars, &q])?);
        let step_params = literal.with_bounds(bounds.0, bounds.1);
        let take_step =
            Command::Dispatch(Step::new::<vector::StepClamped>(gpu, library, &step_params, &[&scalars, &q, x])?);
        Ok(Lbfgs {
            config,
            values: len / 4 * 3,
            form_pair,
            grad_norm: dot(g, g, GG)?,
            gradient_to_q: copy(g, &q),
            first_loop,
            scale_q,
            second_loop,
            save_previous: vec![copy(x, &x_prev), copy(g, &g_prev)],
            take_step,
            undo: copy(&x_prev, x),
            previous_gradient_to_q: axpby(literal, &g_prev, &q)?,
            scalars,
            bounds,
            len,
            pairs: VecDeque::new(),
            have_previous: false,
            previous_loss: f64::INFINITY,
            previous_gg: 0.0,
            undone_in_a_row: 0,
            allocated,
        })
    }

    fn set(&self, gpu: &Gpu, command: &Command, params: &VectorParams) {
        if let Command::Dispatch(step) = command {
            step.write_params(gpu, params);
        }
    }

    /// One iteration: evaluates the current image (losses and gradient), then, when its losses are
    /// finite, steps. `after_step` (the moving average's update) runs after the step in the same
    /// submission.
    pub fn step(&mut self, gpu: &Gpu, engine: &Engine, after_step: &[&Command]) -> Result<LbfgsOutcome> {
        // The slot the new pair goes into: a free one, else the oldest pair's.
        let slot = self.have_previous.then(|| {
            if self.pairs.len() < self.form_pair.len() {
                (0..self.form_pair.len()).find(|p| !self.pairs.iter().any(|q| q.0 == *p)).expect("a free slot")
            } else {
                self.pairs.pop_front().expect("a full history").0
            }
        });
        let mut tail: Vec<&Command> = slot.map(|p| self.form_pair[p].iter().collect()).unwrap_or_default();
        tail.extend(&self.grad_norm);
        let (losses, reads) = engine.iterate_then(&tail, &[&self.scalars])?;
        let scalars: &[f32] = bytemuck::cast_slice(&reads[0]);
        let total: f64 = losses.iter().map(|&v| v as f64).sum();
        if !total.is_finite() {
            return Ok(LbfgsOutcome::Diverged(losses));
        }
        let mut commands: Vec<&Command> = Vec::new();
        let outcome = if self.have_previous && total > self.previous_loss {
            // The step raised the loss: back to the previous image, a smaller gradient step from it.
            self.pairs.clear();
            self.undone_in_a_row += 1;
            let size = self.config.first_step * 0.5f64.powi(self.undone_in_a_row);
            let gamma = size * (self.values as f64 / self.previous_gg.max(f64::MIN_POSITIVE)).sqrt();
            self.set(gpu, &self.previous_gradient_to_q, &VectorParams::literal(self.len, gamma));
            commands.extend([&self.undo, &self.previous_gradient_to_q]);
            self.set_step(gpu, -1.0);
            commands.push(&self.take_step);
            LbfgsOutcome::Undone(losses)
        } else {
            self.undone_in_a_row = 0;
            self.previous_loss = total;
            let gg = scalars[GG as usize] as f64;
            self.previous_gg = gg;
            if let Some(p) = slot {
                let (ys, yy) = (scalars[ys(p) as usize] as f64, scalars[YY as usize] as f64);
                // The curvature condition; a pair without it would make the model indefinite.
                if ys.is_finite() && yy.is_finite() && ys > 1e-10 * yy && yy > 0.0 {
                    self.pairs.push_back((p, ys, yy));
                }
            }
            commands.push(&self.gradient_to_q);
            for &(p, _, _) in self.pairs.iter().rev() {
                commands.extend(&self.first_loop[p]);
            }
            let gamma = match self.pairs.back() {
                Some(&(_, ys, yy)) => ys / yy,
                None => self.config.first_step * (self.values as f64 / gg.max(f64::MIN_POSITIVE)).sqrt(),
            };
            self.set(gpu, &self.scale_q, &VectorParams::literal(self.len, gamma));
            commands.push(&self.scale_q);
            for &(p, _, _) in &self.pairs {
                commands.extend(&self.second_loop[p]);
            }
            commands.extend(&self.save_previous);
            let t = if self.pairs.is_empty() { 1.0 } else { self.config.step };
            self.set_step(gpu, -t);
            commands.push(&self.take_step);
            self.have_previous = true;
            LbfgsOutcome::Stepped(losses)
        };
        commands.extend(after_step.iter().copied());
        submit_commands(gpu, "lbfgs step", &commands)?;
        Ok(outcome)
    }

    fn set_step(&self, gpu: &Gpu, factor: f64) {
        let p = VectorParams::literal(self.len, factor).with_bounds(self.bounds.0, self.bounds.1);
        self.set(gpu, &self.take_step, &p);
    }
}

/// CPU twin of L-BFGS's direction: the two-loop recursion over `pairs` (oldest first, each
/// `(s, y)`), `H g` with `H0 = gamma I`, `gamma = s.y / y.y` of the newest pair (`gamma0` when
/// there is none). The GPU computes the same with [`vector`]'s kernels; the step is `x - t H g`.
pub fn two_loop(pairs: &[(Vec<f64>, Vec<f64>)], g: &[f64], gamma0: f64) -> Vec<f64> {
    let dot = vector::dot::<f64>;
    let mut q = g.to_vec();
    let mut alpha = vec![0.0; pairs.len()];
    for (i, (s, y)) in pairs.iter().enumerate().rev() {
        alpha[i] = dot(s, &q) / dot(y, s);
        for (qk, yk) in q.iter_mut().zip(y) {
            *qk -= alpha[i] * yk;
        }
    }
    let gamma = pairs.last().map(|(s, y)| dot(s, y) / dot(y, y)).unwrap_or(gamma0);
    q.iter_mut().for_each(|v| *v *= gamma);
    for (i, (s, y)) in pairs.iter().enumerate() {
        let beta = dot(y, &q) / dot(y, s);
        for (qk, sk) in q.iter_mut().zip(s) {
            *qk += (alpha[i] - beta) * sk;
        }
    }
    q
}

impl Optimiser for Lbfgs {
    fn iterate(&mut self, gpu: &Gpu, engine: &Engine, after_step: &[&Command]) -> Result<Vec<f32>> {
        Ok(match self.step(gpu, engine, after_step)? {
            LbfgsOutcome::Stepped(v) | LbfgsOutcome::Undone(v) | LbfgsOutcome::Diverged(v) => v,
        })
    }

    /// Back to the previous image (the last one evaluated with finite losses), if there is one; at
    /// the first iteration no step was taken, and the image is the start.
    fn rollback(&mut self, gpu: &Gpu, _engine: &Engine) -> Result<()> {
        if self.have_previous {
            submit_commands(gpu, "lbfgs undo", &[&self.undo])?;
        }
        Ok(())
    }

    fn allocated_bytes(&self) -> u64 {
        self.allocated
    }

    /// A new scale starts a fresh history.
    fn carry(&self, _gpu: &Gpu) -> Result<Carry> {
        Ok(Carry::Nothing)
    }

    fn resume(&mut self, _gpu: &Gpu, _carry: Carry) -> Result<()> {
        Ok(())
    }

    fn history(&self) -> usize {
        self.pairs.len()
    }
}
