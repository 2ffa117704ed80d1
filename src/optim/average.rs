//! The exponential moving average of the iterates, on the GPU, wrapped around any optimiser
//! ([`Averaged`]). Its CPU twin is [`average_of`], the oracle of the tests.

use super::{Carry, Optimiser};
use crate::error::Result;
use crate::gpu::{submit_commands, Command, Gpu, KernelLibrary, Step};
use crate::net::engine::Engine;
use crate::ops::image::{self, ImageParams};
use crate::ops::vector::{self, VectorParams, ONE};

/// The exponential moving average of the iterates on the GPU: after each step
/// `a = decay * a + (1 - decay) * x` (from `a = 0`), and the averaged image is the bias-corrected
/// `a / (1 - decay^t)` after `t` steps.
pub struct Average {
    decay: f64,
    steps: u32,
    len: usize,
    corrected: wgpu::Buffer,
    update: Command,
    output: Command,
    to_rgba: Step,
    allocated: u64,
}

impl Average {
    pub fn new(gpu: &Gpu, library: &KernelLibrary, engine: &Engine, decay: f64) -> Result<Average> {
        let len = engine.image_len();
        let bytes = 4 * len as u64;
        let average = gpu.buffer_zeroed("average of the iterates", bytes);
        let corrected = gpu.buffer_zeroed("averaged image", bytes);
        let mut initial = vec![0f32; 2];
        initial[ONE as usize] = 1.0;
        let scalars = gpu.buffer_from("average scalars", bytemuck::cast_slice(&initial));
        let p = VectorParams::literal(len, 1.0 - decay).with_y_scale(decay);
        let update = Step::new::<vector::Axpby>(gpu, library, &p, &[&scalars, engine.image_buffer(), &average])?;
        let p = VectorParams::literal(len, 1.0);
        let output = Step::new::<vector::Axpby>(gpu, library, &p, &[&scalars, &average, &corrected])?;
        let pixels = len / 4;
        let to_rgba = Step::new::<image::FromNetwork>(
            gpu,
            library,
            &ImageParams::new(pixels),
            &[&corrected, engine.rgba_buffer()],
        )?;
        Ok(Average {
            decay,
            steps: 0,
            len,
            allocated: 2 * bytes + scalars.size(),
            corrected,
            update: Command::Dispatch(update),
            output: Command::Dispatch(output),
            to_rgba,
        })
    }

    /// The update to run after each step (in the step's submission); call [`Average::counted`] once per step run.
    pub fn update(&self) -> &Command {
        &self.update
    }

    /// Records that the update ran once more.
    pub fn counted(&mut self) {
        self.steps += 1;
    }

    /// Steps averaged so far.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    pub fn allocated_bytes(&self) -> u64 {
        self.allocated
    }

    fn write_output(&self, gpu: &Gpu) -> Result<()> {
        let correction = 1.0 - self.decay.powi(self.steps as i32);
        let p = VectorParams::literal(self.len, 1.0 / correction);
        if let Command::Dispatch(step) = &self.output {
            step.write_params(gpu, &p);
        }
        submit_commands(gpu, "averaged image", &[&self.output])
    }

    /// The averaged image in the network's convention (needs at least one step).
    pub fn image_net(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        self.write_output(gpu)?;
        let bytes = gpu.read_buffers(&[&self.corrected])?;
        Ok(bytemuck::cast_slice(&bytes[0]).to_vec())
    }

    /// The averaged image as RGBA8, converted on the GPU into the engine's RGBA buffer.
    pub fn image_rgba(&self, gpu: &Gpu, engine: &Engine) -> Result<Vec<u32>> {
        self.write_output(gpu)?;
        crate::gpu::library::submit(gpu, "averaged image to rgba", &[&self.to_rgba])?;
        engine.read_rgba()
    }
}

/// CPU twin of [`Average`]: the bias-corrected exponential moving average of `iterates`.
pub fn average_of(iterates: &[Vec<f64>], decay: f64) -> Vec<f64> {
    let mut a = vec![0.0; iterates[0].len()];
    for x in iterates {
        for (ai, xi) in a.iter_mut().zip(x) {
            *ai = decay * *ai + (1.0 - decay) * xi;
        }
    }
    let correction = 1.0 - decay.powi(iterates.len() as i32);
    a.iter().map(|v| v / correction).collect()
}

/// `inner`, with the moving average of its iterates as the output: the average's update runs
/// after each of its steps, in the step's submission. After a rollback the output is the restored
/// image, not the average.
pub struct Averaged {
    inner: Box<dyn Optimiser>,
    average: Average,
    diverged: bool,
}

impl Averaged {
    pub fn new(inner: Box<dyn Optimiser>, average: Average) -> Averaged {
        Averaged { inner, average, diverged: false }
    }

    /// The average, when there is one to output (at least one step, no rollback).
    fn output(&self) -> Option<&Average> {
        Some(&self.average).filter(|a| a.steps() > 0 && !self.diverged)
    }
}

impl Optimiser for Averaged {
    fn iterate(&mut self, gpu: &Gpu, engine: &Engine, after_step: &[&Command]) -> Result<Vec<f32>> {
        let tail: Vec<&Command> = std::iter::once(self.average.update()).chain(after_step.iter().copied()).collect();
        let values = self.inner.iterate(gpu, engine, &tail)?;
        if values.iter().all(|v| v.is_finite()) {
            self.average.counted();
        }
        Ok(values)
    }

    fn rollback(&mut self, gpu: &Gpu, engine: &Engine) -> Result<()> {
        self.diverged = true;
        self.inner.rollback(gpu, engine)
    }

    fn allocated_bytes(&self) -> u64 {
        self.inner.allocated_bytes() + self.average.allocated_bytes()
    }

    /// The inner optimiser's state; the next scale's average starts again from its first image.
    fn carry(&self, gpu: &Gpu) -> Result<Carry> {
        self.inner.carry(gpu)
    }

    fn resume(&mut self, gpu: &Gpu, carry: Carry) -> Result<()> {
        self.inner.resume(gpu, carry)
    }

    fn history(&self) -> usize {
        self.inner.history()
    }

    fn image_net(&self, gpu: &Gpu, engine: &Engine) -> Result<Vec<f32>> {
        match self.output() {
            Some(a) => a.image_net(gpu),
            None => self.inner.image_net(gpu, engine),
        }
    }

    fn image_rgba(&self, gpu: &Gpu, engine: &Engine) -> Result<Vec<u32>> {
        match self.output() {
            Some(a) => a.image_rgba(gpu, engine),
            None => self.inner.image_rgba(gpu, engine),
        }
    }
}
