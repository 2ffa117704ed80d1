//! The second stage of the loss reductions: partial sums into one slot of the loss buffer.
//! GPU: `shaders/reduce.wgsl`.

use bytemuck::{Pod, Zeroable};

use crate::gpu::kernel::{read, read_write, EntryPoint, Kernel};
use crate::Real;

/// Params of `reduce.wgsl`: `losses[slot] = sum of partials[0..len]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct ReduceParams {
    pub len: u32,
    pub slot: u32,
}

impl ReduceParams {
    pub fn new(len: usize, slot: usize) -> Self {
        ReduceParams { len: len as u32, slot: slot as u32 }
    }
}

/// `reduce.sum`: bindings partials, losses. One workgroup.
pub struct Sum;

impl Kernel for Sum {
    type Params = ReduceParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "reduce",
        entry: "sum",
        workgroup_size: 256,
        params_bytes: std::mem::size_of::<ReduceParams>(),
        bindings: &[read(1, "partials"), read_write(2, "losses")],
    };
    fn workgroups(_: &ReduceParams) -> u64 {
        1
    }
    fn binding_lens(p: &ReduceParams) -> Vec<u64> {
        vec![p.len as u64, p.slot as u64 + 1]
    }
}

/// CPU twin of `reduce.sum`.
pub fn sum<T: Real>(p: &ReduceParams, partials: &[T], losses: &mut [T]) {
    let mut total = T::zero();
    for &v in &partials[..p.len as usize] {
        total += v;
    }
    losses[p.slot as usize] = total;
}
