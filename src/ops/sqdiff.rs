//! Scaled sum of squared differences (content and style losses) and its gradient.
//! GPU: `shaders/sqdiff.wgsl`, followed by `shaders/reduce.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::{partial_count, store, REDUCE_BLOCK};
use crate::gpu::kernel::{groups_for, read, read_write, EntryPoint, Kernel};
use crate::Real;

/// Params of `sqdiff.wgsl`: `loss = scale * sum (a - b)^2` over `len` elements.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct SqDiffParams {
    pub len: u32,
    /// Backward only: add to the gradient when non-zero.
    pub accumulate: u32,
    pub scale: f32,
}

impl SqDiffParams {
    pub fn new(len: usize, scale: f32) -> Self {
        SqDiffParams { len: len as u32, accumulate: 0, scale }
    }
    /// `weight` times the mean squared difference: `scale = weight / len`.
    pub fn mean(len: usize, weight: f64) -> Self {
        Self::new(len, (weight / len as f64) as f32)
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
    pub fn partials(&self) -> usize {
        partial_count(self.len())
    }
}

/// `sqdiff.forward`: bindings a, b, partials.
pub struct Forward;

impl Kernel for Forward {
    type Params = SqDiffParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "sqdiff",
        entry: "forward",
        workgroup_size: super::REDUCE_WORKGROUP,
        params_bytes: std::mem::size_of::<SqDiffParams>(),
        bindings: &[read(1, "a"), read(2, "b"), read_write(3, "partials")],
    };
    fn workgroups(p: &SqDiffParams) -> u64 {
        p.partials() as u64
    }
    fn binding_lens(p: &SqDiffParams) -> Vec<u64> {
        vec![p.len as u64, p.len as u64, p.partials() as u64]
    }
}

/// `sqdiff.backward`: bindings a, b, grad_a.
pub struct Backward;

impl Kernel for Backward {
    type Params = SqDiffParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "sqdiff",
        entry: "backward",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<SqDiffParams>(),
        bindings: &[read(1, "a"), read(2, "b"), read_write(4, "grad_a")],
    };
    fn workgroups(p: &SqDiffParams) -> u64 {
        groups_for(p.len as u64, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &SqDiffParams) -> Vec<u64> {
        vec![p.len as u64; 3]
    }
}

/// CPU twin of `sqdiff.forward`: `partials[k] = scale * sum (a - b)^2` over block k of 1024 elements.
pub fn forward<T: Real>(p: &SqDiffParams, a: &[T], b: &[T], partials: &mut [T]) {
    for (k, partial) in partials.iter_mut().enumerate().take(p.partials()) {
        let mut s = T::zero();
        for i in k * REDUCE_BLOCK..((k + 1) * REDUCE_BLOCK).min(p.len()) {
            let d = a[i] - b[i];
            s += d * d;
        }
        *partial = T::from_f64(p.scale as f64) * s;
    }
}

/// CPU twin of `sqdiff.backward`: `grad_a = 2 * scale * (a - b)`.
pub fn backward<T: Real>(p: &SqDiffParams, a: &[T], b: &[T], grad_a: &mut [T]) {
    let two_scale = T::from_f64(2.0 * p.scale as f64);
    for i in 0..p.len() {
        store(&mut grad_a[i], two_scale * (a[i] - b[i]), p.accumulate);
    }
}

/// The whole loss on the CPU: forward, then the sum of the partials.
pub fn loss<T: Real>(p: &SqDiffParams, a: &[T], b: &[T]) -> T {
    let mut partials = vec![T::zero(); p.partials()];
    forward(p, a, b, &mut partials);
    let mut total = T::zero();
    for v in partials {
        total += v;
    }
    total
}
