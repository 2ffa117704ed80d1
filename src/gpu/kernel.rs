//! How a WGSL entry point is described to the Rust side: its file, its bindings, its params struct and
//! the shape arithmetic that sizes its dispatch and its buffers.

use bytemuck::Pod;

/// How a kernel uses a binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A read-only storage buffer.
    Read,
    /// A read-write storage buffer.
    ReadWrite,
    /// A read-only rgba32float storage texture (`texture_storage_2d<rgba32float, read>`), read with
    /// `textureLoad`; its binding length counts floats (4 per texel).
    Texture,
    /// A write-only rgba32float storage texture (`texture_storage_2d<rgba32float, write>`), written
    /// with `textureStore`; its binding length counts floats (4 per texel).
    TextureWrite,
}

/// One storage binding of an entry point. Binding 0 is always the params uniform and is not listed.
#[derive(Clone, Copy, Debug)]
pub struct Binding {
    pub slot: u32,
    pub name: &'static str,
    pub access: Access,
}

/// Shorthand for a read-only storage binding.
pub const fn read(slot: u32, name: &'static str) -> Binding {
    Binding { slot, name, access: Access::Read }
}

/// Shorthand for a read-write storage binding.
pub const fn read_write(slot: u32, name: &'static str) -> Binding {
    Binding { slot, name, access: Access::ReadWrite }
}

/// Shorthand for a write-only rgba32float texture binding.
pub const fn texture_write(slot: u32, name: &'static str) -> Binding {
    Binding { slot, name, access: Access::TextureWrite }
}

/// Shorthand for an rgba32float texture binding.
pub const fn texture(slot: u32, name: &'static str) -> Binding {
    Binding { slot, name, access: Access::Texture }
}

/// One compute entry point of one file in `shaders/`.
#[derive(Clone, Copy, Debug)]
pub struct EntryPoint {
    /// File stem in `shaders/` (`conv3x3` for `shaders/conv3x3.wgsl`).
    pub shader: &'static str,
    /// Entry point name inside that file.
    pub entry: &'static str,
    /// `@workgroup_size` of the entry point (one-dimensional).
    pub workgroup_size: u32,
    /// Size in bytes of the params struct, as the Rust side lays it out.
    pub params_bytes: usize,
    /// Storage bindings in the order buffers are passed to a step.
    pub bindings: &'static [Binding],
}

impl EntryPoint {
    /// `shader.entry`, the name used in labels and error messages.
    pub fn name(&self) -> String {
        format!("{}.{}", self.shader, self.entry)
    }
}

/// A kernel: an entry point with a typed params struct and its shape arithmetic.
pub trait Kernel {
    /// The `#[repr(C)]` params struct, mirrored field by field by the WGSL `Params` struct.
    type Params: Pod;
    /// The entry point this kernel runs.
    const ENTRY: EntryPoint;
    /// How many workgroups one dispatch needs (one-dimensional; the dispatch helper folds it).
    fn workgroups(params: &Self::Params) -> u64;
    /// How many 4-byte elements each binding needs, in the order of `ENTRY.bindings`.
    fn binding_lens(params: &Self::Params) -> Vec<u64>;
}

/// Workgroups of `workgroup_size` invocations needed for one invocation per element.
pub fn groups_for(elements: u64, workgroup_size: u32) -> u64 {
    elements.div_ceil(workgroup_size as u64)
}
