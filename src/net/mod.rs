//! VGG19: its weights, its layers, the tape of one iteration (device-neutral), its plan on one
//! device, and the two executors: the GPU engine (of a plan) and the CPU reference (of a tape).

pub mod cpu;
pub mod engine;
pub mod plan;
pub mod tape;
pub mod vgg;
pub mod weights;

pub use engine::Engine;
pub use plan::{Capabilities, MemoryReport, Plan};
pub use tape::{LossKind, LossSpec, Tape};
pub use vgg::Pooling;
pub use weights::Vgg19Weights;
