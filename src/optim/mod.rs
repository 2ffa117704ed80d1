//! The optimisers of the image, on the GPU, as peers: Adam, L-BFGS, and the moving average of the
//! iterates wrapped around either. Each implements [`Optimiser`]; the render loop calls them alike
//! and handles a non-finite loss in one place (it asks the optimiser to [`Optimiser::rollback`]).
//!
//! Adding an optimiser: a file here with its buffers and commands (recorded once per image size,
//! bound to the engine's image and gradient buffers), its CPU twin, an [`Optimiser`] impl, and one
//! arm where `render` makes it.

pub mod adam;
pub mod average;
pub mod lbfgs;

pub use adam::Adam;
pub use average::{average_of, Average, Averaged};
pub use lbfgs::{two_loop, Lbfgs, LbfgsConfig, LbfgsOutcome};

use crate::error::Result;
use crate::gpu::{Command, Gpu};
use crate::net::engine::Engine;

/// What an optimiser hands to its successor at the next scale of a coarse-to-fine render.
pub enum Carry {
    Nothing,
    /// Adam's moments (the image's layout, `size` = (height, width)) and its step count.
    Moments {
        m: Vec<f32>,
        v: Vec<f32>,
        size: (usize, usize),
        steps: u32,
    },
}

/// An optimiser of one engine's image (one image size).
pub trait Optimiser {
    /// One iteration: the engine's forward and backward on the current image, then one step,
    /// followed in the same submission by `after_step`. Returns the loss of each slot of the image
    /// it evaluated. When they are not finite the image may have moved already;
    /// [`Optimiser::rollback`] puts back the last one whose losses were.
    fn iterate(&mut self, gpu: &Gpu, engine: &Engine, after_step: &[&Command]) -> Result<Vec<f32>>;

    /// After an iteration whose losses were not finite: the image goes back to the last one whose
    /// losses were (the starting image at the first iteration). The optimiser's state is spoilt;
    /// the render ends.
    fn rollback(&mut self, gpu: &Gpu, engine: &Engine) -> Result<()>;

    /// Bytes of GPU memory it allocated.
    fn allocated_bytes(&self) -> u64;

    /// Its state for the next scale.
    fn carry(&self, gpu: &Gpu) -> Result<Carry>;

    /// Takes over a predecessor's state (from [`Optimiser::carry`] at another size), before the
    /// first iteration.
    fn resume(&mut self, gpu: &Gpu, carry: Carry) -> Result<()>;

    /// Correction pairs held (L-BFGS); 0 for an optimiser without a history.
    fn history(&self) -> usize {
        0
    }

    /// The output image in the network's convention: the engine's image, or what the optimiser
    /// outputs instead (the average).
    fn image_net(&self, _gpu: &Gpu, engine: &Engine) -> Result<Vec<f32>> {
        engine.read(engine.tape.image)
    }

    /// The output image as RGBA8.
    fn image_rgba(&self, _gpu: &Gpu, engine: &Engine) -> Result<Vec<u32>> {
        engine.image_rgba()
    }
}
