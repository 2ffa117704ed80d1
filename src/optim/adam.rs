//! Adam on the GPU (`shaders/adam.wgsl`, its CPU twin in [`crate::ops::adam`]): its moments, two
//! backups of the image taken alternately before each step (so the last image whose loss was
//! finite survives a step that produces NaN), and the step, recorded once per image size.

use super::{Carry, Optimiser};
use crate::error::{Error, Result};
use crate::gpu::{submit_commands, Command, Gpu, KernelLibrary, Step};
use crate::net::engine::Engine;
use crate::ops::adam::{self, AdamConfig, AdamParams};
use crate::ops::image::NETWORK_CHANNELS;

pub struct Adam {
    config: AdamConfig,
    /// The learning rate at the last step at this size, as a fraction of `config.lr`, and the
    /// steps at this size it falls over (see [`learning_rate`]).
    decay: f64,
    horizon: u32,
    bounds: ([f32; 4], [f32; 4]),
    len: usize,
    size: (usize, usize),
    moments: [wgpu::Buffer; 2],
    backup: [Command; 2],
    restore: [Command; 2],
    step: Command,
    /// Steps taken (carried across scales, for the bias correction).
    steps: u32,
    /// Steps taken at this size.
    here: u32,
}

impl Adam {
    /// Bytes of GPU memory Adam needs for an image of `len` values: two moments, two backups.
    pub fn bytes(len: usize) -> u64 {
        4 * 4 * len as u64
    }

    /// Adam's buffers and commands for `engine`'s image, clamping the image to `bounds`.
    pub fn new(
        gpu: &Gpu,
        library: &KernelLibrary,
        engine: &Engine,
        config: AdamConfig,
        bounds: ([f32; 4], [f32; 4]),
    ) -> Result<Adam> {
        let len = engine.image_len();
        let bytes = 4 * len as u64;
        let backups = [0, 1].map(|i| gpu.buffer_zeroed(&format!("image backup {i}"), bytes));
        let moments = ["adam m", "adam v"].map(|label| gpu.buffer_zeroed(label, bytes));
        let image = engine.image_buffer();
        let backup = backups.clone().map(|to| Command::CopyBuffer { from: image.clone(), to });
        let restore = backups.map(|from| Command::CopyBuffer { from, to: image.clone() });
        let params = AdamParams::at_step(len, &AdamConfig::default(), 1);
        let buffers = [engine.grad_buffer(), image, &moments[0], &moments[1]];
        let step = Command::Dispatch(Step::new::<adam::Step>(gpu, library, &params, &buffers)?);
        let size = engine.size();
        Ok(Adam {
            config,
            decay: 1.0,
            horizon: 1,
            bounds,
            len,
            size,
            moments,
            backup,
            restore,
            step,
            steps: 0,
            here: 0,
        })
    }

    /// The learning rate falls from `config.lr` at the first step at this size to `decay` times
    /// it at step `horizon` (see [`learning_rate`]); without this it is constant.
    pub fn with_decay(mut self, decay: f64, horizon: u32) -> Adam {
        self.decay = decay;
        self.horizon = horizon.max(1);
        self
    }

    /// Adam's first and second moments.
    pub fn moments(&self, gpu: &Gpu) -> Result<[Vec<f32>; 2]> {
        let bytes = gpu.read_buffers(&[&self.moments[0], &self.moments[1]])?;
        Ok([0, 1].map(|i| bytemuck::cast_slice(&bytes[i]).to_vec()))
    }

    /// The step alone (its params as last written): for profiling an iteration.
    pub fn step_command(&self) -> &Command {
        &self.step
    }

    /// Steps taken so far (across scales).
    pub fn steps(&self) -> u32 {
        self.steps
    }
}

/// The learning rate of step `k` (0-based) of `horizon` steps at one size: a half cosine from `lr`
/// at the first to `decay * lr` at the last, `decay * lr` after it. Constant for `decay = 1` or
/// a single step.
pub fn learning_rate(lr: f64, decay: f64, k: u32, horizon: u32) -> f64 {
    if horizon <= 1 || decay == 1.0 {
        return lr;
    }
    let progress = (k as f64 / (horizon - 1) as f64).min(1.0);
    lr * (decay + (1.0 - decay) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
}

impl Optimiser for Adam {
    /// Copies the image (the one whose losses it returns) into backup `t % 2` before step `t`.
    fn iterate(&mut self, gpu: &Gpu, engine: &Engine, after_step: &[&Command]) -> Result<Vec<f32>> {
        let t = self.steps + 1;
        let lr = learning_rate(self.config.lr, self.decay, self.here, self.horizon);
        let config = AdamConfig { lr, ..self.config };
        let params = AdamParams::at_step(self.len, &config, t).with_bounds(self.bounds.0, self.bounds.1);
        if let Command::Dispatch(step) = &self.step {
            step.write_params(gpu, &params);
        }
        let tail: Vec<&Command> =
            [&self.backup[(t % 2) as usize], &self.step].into_iter().chain(after_step.iter().copied()).collect();
        let (losses, _) = engine.iterate_then(&tail, &[])?;
        self.steps = t;
        self.here += 1;
        Ok(losses)
    }

    /// Backup `t % 2` holds the failed step's input; the other holds the previous step's input,
    /// whose losses were finite. At the first step at this size only backup `t % 2` was written:
    /// the starting image, which the step overwrote.
    fn rollback(&mut self, gpu: &Gpu, _engine: &Engine) -> Result<()> {
        let t = self.steps;
        let slot = if self.here > 1 { (t + 1) % 2 } else { t % 2 };
        submit_commands(gpu, "restoring the image", &[&self.restore[slot as usize]])
    }

    fn allocated_bytes(&self) -> u64 {
        Adam::bytes(self.len)
    }

    fn carry(&self, gpu: &Gpu) -> Result<Carry> {
        let [m, v] = self.moments(gpu)?;
        Ok(Carry::Moments { m, v, size: self.size, steps: self.steps })
    }

    /// The moments are resized bilinearly and scaled for the new pixel count (the content and
    /// style gradients per pixel scale with 1 / pixels, so m by the ratio of pixel counts and v by
    /// its square), and the step count carries on, so the new scale does not start with a burst
    /// of large steps.
    fn resume(&mut self, gpu: &Gpu, carry: Carry) -> Result<()> {
        let Carry::Moments { m, v, size: (h, w), steps } = carry else {
            return Ok(());
        };
        let to = self.size;
        if m.len() != h * w * NETWORK_CHANNELS || v.len() != m.len() {
            return Err(Error::Shape {
                kernel: "adam.step".into(),
                message: format!("moments of {} and {} elements for a {h}x{w} image", m.len(), v.len()),
            });
        }
        let ratio = (h * w) as f32 / (to.0 * to.1) as f32;
        let mut m = crate::resample::bilinear(&m, (h, w), NETWORK_CHANNELS, to);
        let mut v = crate::resample::bilinear(&v, (h, w), NETWORK_CHANNELS, to);
        m.iter_mut().for_each(|x| *x *= ratio);
        v.iter_mut().for_each(|x| *x *= ratio * ratio);
        gpu.queue.write_buffer(&self.moments[0], 0, bytemuck::cast_slice(&m));
        gpu.queue.write_buffer(&self.moments[1], 0, bytemuck::cast_slice(&v));
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::learning_rate;

    #[test]
    fn the_learning_rate_falls_along_a_half_cosine_from_lr_to_its_decayed_value() {
        let rate: Vec<f64> = (0..12).map(|k| learning_rate(8.0, 0.1, k, 11)).collect();
        assert_eq!(rate[0], 8.0);
        assert!((rate[10] - 0.8).abs() < 1e-12, "{}", rate[10]);
        assert!((rate[5] - 4.4).abs() < 1e-12, "half way is the mean of the ends: {}", rate[5]);
        assert!(rate.windows(2).take(10).all(|w| w[1] < w[0]), "{rate:?}");
        assert_eq!(rate[11], rate[10], "past the horizon it stays at the end");
        assert!((0..5).all(|k| learning_rate(8.0, 1.0, k, 5) == 8.0), "decay 1 is constant");
        assert_eq!(learning_rate(8.0, 0.1, 0, 1), 8.0, "one step keeps the rate");
    }
}
