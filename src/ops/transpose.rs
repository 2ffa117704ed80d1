//! A chunk of positions of a channels-last map, transposed to channels-first (zero past the last
//! position): the operand of the Gram forward as a pointwise conv. GPU: `shaders/transpose.wgsl`.

use bytemuck::{Pod, Zeroable};

use crate::gpu::kernel::{groups_for, read, read_write, EntryPoint, Kernel};
use crate::Real;

/// Params of `transpose.wgsl`: positions `start..start + len` of a `positions x channels` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct TransposeParams {
    pub positions: u32,
    pub channels: u32,
    /// First position of the chunk.
    pub start: u32,
    /// Positions in the chunk; those past `positions` read as 0.
    pub len: u32,
}

impl TransposeParams {
    pub fn new(positions: usize, channels: usize, start: usize, len: usize) -> Self {
        TransposeParams { positions: positions as u32, channels: channels as u32, start: start as u32, len: len as u32 }
    }
    pub fn features_len(&self) -> usize {
        self.positions as usize * self.channels as usize
    }
    pub fn transposed_len(&self) -> usize {
        self.channels as usize * self.len as usize
    }
}

/// `transpose.forward`: bindings features, transposed.
pub struct Forward;

impl Kernel for Forward {
    type Params = TransposeParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "transpose",
        entry: "forward",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<TransposeParams>(),
        bindings: &[read(1, "features"), read_write(2, "transposed")],
    };
    fn workgroups(p: &TransposeParams) -> u64 {
        groups_for(p.transposed_len() as u64, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &TransposeParams) -> Vec<u64> {
        vec![p.features_len() as u64, p.transposed_len() as u64]
    }
}

/// CPU twin of `transpose.forward`.
pub fn forward<T: Real>(p: &TransposeParams, features: &[T], transposed: &mut [T]) {
    let (c, len) = (p.channels as usize, p.len as usize);
    for i in 0..c {
        for q in 0..len {
            let pos = p.start as usize + q;
            transposed[i * len + q] = if pos < p.positions as usize { features[pos * c + i] } else { T::zero() };
        }
    }
}
