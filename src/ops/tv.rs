//! Total-variation loss and its gradient. GPU: `shaders/tv.wgsl`, followed by `shaders/reduce.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::{partial_count, store, REDUCE_BLOCK};
use crate::gpu::kernel::{groups_for, read, read_write, EntryPoint, Kernel};
use crate::Real;

/// Params of `tv.wgsl`: an HWC image; `loss = scale * sum of |differences of neighbours|`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct TvParams {
    pub height: u32,
    pub width: u32,
    pub channels: u32,
    /// Backward only: add to the gradient when non-zero.
    pub accumulate: u32,
    pub scale: f32,
}

impl TvParams {
    pub fn new(height: usize, width: usize, channels: usize, scale: f32) -> Self {
        TvParams { height: height as u32, width: width as u32, channels: channels as u32, accumulate: 0, scale }
    }
    pub fn with_accumulate(mut self, accumulate: bool) -> Self {
        self.accumulate = accumulate as u32;
        self
    }
    pub fn len(&self) -> usize {
        self.height as usize * self.width as usize * self.channels as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn partials(&self) -> usize {
        partial_count(self.len())
    }
}

/// `tv.forward`: bindings image, partials.
pub struct Forward;

impl Kernel for Forward {
    type Params = TvParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "tv",
        entry: "forward",
        workgroup_size: super::REDUCE_WORKGROUP,
        params_bytes: std::mem::size_of::<TvParams>(),
        bindings: &[read(1, "image"), read_write(2, "partials")],
    };
    fn workgroups(p: &TvParams) -> u64 {
        p.partials() as u64
    }
    fn binding_lens(p: &TvParams) -> Vec<u64> {
        vec![p.len() as u64, p.partials() as u64]
    }
}

/// `tv.backward`: bindings image, grad.
pub struct Backward;

impl Kernel for Backward {
    type Params = TvParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "tv",
        entry: "backward",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<TvParams>(),
        bindings: &[read(1, "image"), read_write(3, "grad")],
    };
    fn workgroups(p: &TvParams) -> u64 {
        groups_for(p.len() as u64, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &TvParams) -> Vec<u64> {
        vec![p.len() as u64; 2]
    }
}

/// The right and lower absolute differences of element `i`.
fn variation<T: Real>(p: &TvParams, image: &[T], i: usize) -> T {
    let (w, cn) = (p.width as usize, p.channels as usize);
    let (x, y) = ((i / cn) % w, (i / cn) / w);
    let mut s = T::zero();
    if x + 1 < w {
        s += (image[i + cn] - image[i]).abs();
    }
    if y + 1 < p.height as usize {
        s += (image[i + w * cn] - image[i]).abs();
    }
    s
}

/// CPU twin of `tv.forward`: `partials[k] = scale * sum of variation` over block k of 1024 elements.
pub fn forward<T: Real>(p: &TvParams, image: &[T], partials: &mut [T]) {
    for (k, partial) in partials.iter_mut().enumerate().take(p.partials()) {
        let mut s = T::zero();
        for i in k * REDUCE_BLOCK..((k + 1) * REDUCE_BLOCK).min(p.len()) {
            s += variation(p, image, i);
        }
        *partial = T::from_f64(p.scale as f64) * s;
    }
}

/// CPU twin of `tv.backward`. `sign(0) = 0`: equal neighbours contribute no gradient.
pub fn backward<T: Real>(p: &TvParams, image: &[T], grad: &mut [T]) {
    let (h, w, cn) = (p.height as usize, p.width as usize, p.channels as usize);
    let row = w * cn;
    for i in 0..p.len() {
        let (x, y) = ((i / cn) % w, (i / cn) / w);
        let v = image[i];
        let mut g = T::zero();
        if x > 0 {
            g += (v - image[i - cn]).sign();
        }
        if x + 1 < w {
            g += -(image[i + cn] - v).sign();
        }
        if y > 0 {
            g += (v - image[i - row]).sign();
        }
        if y + 1 < h {
            g += -(image[i + row] - v).sign();
        }
        store(&mut grad[i], T::from_f64(p.scale as f64) * g, p.accumulate);
    }
}

/// The whole loss on the CPU: forward, then the sum of the partials.
pub fn loss<T: Real>(p: &TvParams, image: &[T]) -> T {
    let mut partials = vec![T::zero(); p.partials()];
    forward(p, image, &mut partials);
    let mut total = T::zero();
    for v in partials {
        total += v;
    }
    total
}
