//! The rectifier and its gradient. GPU: `shaders/relu.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::store;
use crate::gpu::kernel::{groups_for, read, read_write, EntryPoint, Kernel};
use crate::Real;

/// Params of `relu.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct ReluParams {
    pub len: u32,
    /// Backward only: add to the input gradient when non-zero.
    pub accumulate: u32,
}

impl ReluParams {
    pub fn new(len: usize) -> Self {
        ReluParams { len: len as u32, accumulate: 0 }
    }
    pub fn with_accumulate(mut self, accumulate: bool) -> Self {
        self.accumulate = accumulate as u32;
        self
    }
    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `relu.forward`: bindings input, output.
pub struct Forward;

impl Kernel for Forward {
    type Params = ReluParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "relu",
        entry: "forward",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<ReluParams>(),
        bindings: &[read(1, "input"), read_write(2, "output")],
    };
    fn workgroups(p: &ReluParams) -> u64 {
        groups_for(p.len as u64, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &ReluParams) -> Vec<u64> {
        vec![p.len as u64; 2]
    }
}

/// `relu.backward`: bindings output (of the forward), grad_output, grad_input.
pub struct Backward;

impl Kernel for Backward {
    type Params = ReluParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "relu",
        entry: "backward",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<ReluParams>(),
        bindings: &[read(3, "output"), read(4, "grad_output"), read_write(5, "grad_input")],
    };
    fn workgroups(p: &ReluParams) -> u64 {
        groups_for(p.len as u64, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &ReluParams) -> Vec<u64> {
        vec![p.len as u64; 3]
    }
}

/// `relu.backward4`: `relu.backward` four elements per invocation, for `len` a multiple of 4;
/// bindings output (of the forward), grad_output, grad_input. CPU twin: [`backward`].
pub struct Backward4;

impl Kernel for Backward4 {
    type Params = ReluParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "relu",
        entry: "backward4",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<ReluParams>(),
        bindings: &[read(6, "output"), read(7, "grad_output"), read_write(8, "grad_input")],
    };
    fn workgroups(p: &ReluParams) -> u64 {
        groups_for(p.len as u64 / 4, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &ReluParams) -> Vec<u64> {
        vec![p.len as u64; 3]
    }
}

impl Backward4 {
    /// Whether `relu.backward4` takes `p`: a multiple of 4 elements.
    pub fn suits(p: &ReluParams) -> bool {
        p.len.is_multiple_of(4)
    }
}

/// `relu.mask`: ReLU's gradient applied in place to a gradient already written whole; bindings
/// output (of the forward), grad. Writes `=`.
pub struct Mask;

impl Kernel for Mask {
    type Params = ReluParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "relu",
        entry: "mask",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<ReluParams>(),
        bindings: &[read(9, "output"), read_write(10, "grad")],
    };
    fn workgroups(p: &ReluParams) -> u64 {
        groups_for(p.len as u64, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &ReluParams) -> Vec<u64> {
        vec![p.len as u64; 2]
    }
}

/// `relu.mask4`: `relu.mask` four elements per invocation, for `len` a multiple of 4; bindings
/// output (of the forward), grad. CPU twin: [`mask`].
pub struct Mask4;

impl Kernel for Mask4 {
    type Params = ReluParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "relu",
        entry: "mask4",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<ReluParams>(),
        bindings: &[read(11, "output"), read_write(12, "grad")],
    };
    fn workgroups(p: &ReluParams) -> u64 {
        groups_for(p.len as u64 / 4, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &ReluParams) -> Vec<u64> {
        vec![p.len as u64; 2]
    }
}

impl Mask4 {
    /// Whether `relu.mask4` takes `p`: a multiple of 4 elements.
    pub fn suits(p: &ReluParams) -> bool {
        p.len.is_multiple_of(4)
    }
}

/// CPU twin of `relu.forward`.
pub fn forward<T: Real>(p: &ReluParams, input: &[T], output: &mut [T]) {
    for i in 0..p.len() {
        output[i] = input[i].max(T::zero());
    }
}

/// CPU twin of `relu.backward`: the gradient passes where the forward output is positive; at 0 it is 0.
pub fn backward<T: Real>(p: &ReluParams, output: &[T], grad_output: &[T], grad_input: &mut [T]) {
    for i in 0..p.len() {
        let g = if output[i] > T::zero() { grad_output[i] } else { T::zero() };
        store(&mut grad_input[i], g, p.accumulate);
    }
}

/// CPU twin of `relu.mask` (and `mask4`): `backward` in place, the gradient zeroed where the
/// forward output is not positive.
pub fn mask<T: Real>(p: &ReluParams, output: &[T], grad: &mut [T]) {
    for i in 0..p.len() {
        if !super::relu_passes(output[i]) {
            grad[i] = T::zero();
        }
    }
}
