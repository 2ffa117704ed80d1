//! The GPU side: context, kernel descriptions, dispatch limits and the kernel library.

pub mod context;
pub mod dispatch;
pub mod kernel;
pub mod library;

pub use context::{Gpu, GpuOptions};
pub use kernel::{Access, Binding, EntryPoint, Kernel};
pub use library::{
    bind_all, bind_planned, run_once, submit, submit_commands, Command, KernelLibrary, KernelRef, KernelSources,
    Planned, Resource, ShaderSource, Step,
};
