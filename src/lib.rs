//! `nst`: neural style transfer as a hand-written GPU compute engine.
//!
//! WGSL compute shaders in `shaders/` implement every operation of VGG19 forward and backward, the
//! losses and Adam; [`ops`] describes each one to Rust and holds its CPU twin, the oracle of the
//! tests; [`gpu`] opens a device, compiles the kernel library once and records dispatches.

pub mod bench;
pub mod check;
pub mod color;
pub mod error;
pub mod gpu;
pub mod image_io;
pub mod net;
pub mod ops;
pub mod optim;
pub mod real;
pub mod render;
pub mod resample;
pub mod rng;
pub mod shaders;

pub use error::{Error, Result};
pub use real::Real;
/// The wgpu version `nst` is built with; its types appear in [`gpu`]'s API.
pub use wgpu;
