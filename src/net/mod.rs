//! VGG19: its weights, its layers, the tape of one iteration, and the two executors of a tape (the
//! GPU engine and the CPU reference).

pub mod cpu;
pub mod engine;
pub mod tape;
pub mod vgg;
pub mod weights;

pub use engine::Engine;
pub use tape::{LossKind, LossSpec, MemoryReport, Tape};
pub use vgg::Pooling;
pub use weights::Vgg19Weights;
