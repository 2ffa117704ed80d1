//! 2x2 max pooling, stride 2, and its gradient (ties to the first maximum). GPU: `shaders/maxpool2.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::store;
use crate::gpu::kernel::{groups_for, read, read_write, EntryPoint, Kernel};
use crate::Real;

/// Params of `maxpool2.wgsl` and `avgpool2.wgsl`: the *input* shape, HWC. The output is
/// `(height / 2) x (width / 2)`, rounded down as in VGG.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Pool2Params {
    pub height: u32,
    pub width: u32,
    pub channels: u32,
    /// Backward only: add to the input gradient when non-zero.
    pub accumulate: u32,
    /// Max pooling's backward only: when non-zero, also apply the gradient of the ReLU that made
    /// the input to what it writes (zero where the input is not positive), so no ReLU backward
    /// pass follows. The average pool ignores it.
    pub mask: u32,
}

impl Pool2Params {
    pub fn new(height: usize, width: usize, channels: usize) -> Self {
        Pool2Params { height: height as u32, width: width as u32, channels: channels as u32, accumulate: 0, mask: 0 }
    }
    pub fn with_accumulate(mut self, accumulate: bool) -> Self {
        self.accumulate = accumulate as u32;
        self
    }
    pub fn with_mask(mut self, mask: bool) -> Self {
        self.mask = mask as u32;
        self
    }
    pub fn out_height(&self) -> usize {
        self.height as usize / 2
    }
    pub fn out_width(&self) -> usize {
        self.width as usize / 2
    }
    pub fn input_len(&self) -> usize {
        self.height as usize * self.width as usize * self.channels as usize
    }
    pub fn output_len(&self) -> usize {
        self.out_height() * self.out_width() * self.channels as usize
    }
}

/// `maxpool2.forward`: bindings input, output.
pub struct Forward;

impl Kernel for Forward {
    type Params = Pool2Params;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "maxpool2",
        entry: "forward",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<Pool2Params>(),
        bindings: &[read(1, "input"), read_write(2, "output")],
    };
    fn workgroups(p: &Pool2Params) -> u64 {
        groups_for(p.output_len() as u64, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &Pool2Params) -> Vec<u64> {
        vec![p.input_len() as u64, p.output_len() as u64]
    }
}

/// `maxpool2.backward`: bindings input (of the forward), grad_output, grad_input.
pub struct Backward;

impl Kernel for Backward {
    type Params = Pool2Params;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "maxpool2",
        entry: "backward",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<Pool2Params>(),
        bindings: &[read(1, "input"), read(3, "grad_output"), read_write(4, "grad_input")],
    };
    fn workgroups(p: &Pool2Params) -> u64 {
        groups_for(p.input_len() as u64, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &Pool2Params) -> Vec<u64> {
        vec![p.input_len() as u64, p.output_len() as u64, p.input_len() as u64]
    }
}

/// `maxpool2.forward4`: `maxpool2.forward` four channels per invocation, for channels a multiple of
/// 4; bindings input, output. CPU twin: [`forward`].
pub struct Forward4;

impl Kernel for Forward4 {
    type Params = Pool2Params;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "maxpool2",
        entry: "forward4",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<Pool2Params>(),
        bindings: &[read(5, "input"), read_write(6, "output")],
    };
    fn workgroups(p: &Pool2Params) -> u64 {
        groups_for(p.output_len() as u64 / 4, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &Pool2Params) -> Vec<u64> {
        Forward::binding_lens(p)
    }
}

/// `maxpool2.backward4`: `maxpool2.backward` for channels a multiple of 4, one invocation per 2x2
/// window and 4 channels, which writes the window's elements; bindings input (of the forward),
/// grad_output, grad_input. CPU twin: [`backward`].
pub struct Backward4;

impl Kernel for Backward4 {
    type Params = Pool2Params;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "maxpool2",
        entry: "backward4",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<Pool2Params>(),
        bindings: &[read(5, "input"), read(7, "grad_output"), read_write(8, "grad_input")],
    };
    fn workgroups(p: &Pool2Params) -> u64 {
        // One invocation per 2x2 window (the last row or column of windows half outside an odd map).
        let windows = p.height.div_ceil(2) as u64 * p.width.div_ceil(2) as u64;
        groups_for(windows * p.channels as u64 / 4, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &Pool2Params) -> Vec<u64> {
        Backward::binding_lens(p)
    }
}

/// Whether the vec4 entries (`forward4`, `backward4`) take `p`: channels a multiple of 4.
pub fn vec4_suits(p: &Pool2Params) -> bool {
    p.channels.is_multiple_of(4)
}

/// The window position (0..4, raster order) of the first maximum of output element (oy, ox, c).
fn argmax<T: Real>(p: &Pool2Params, input: &[T], oy: usize, ox: usize, c: usize) -> usize {
    let (w, cn) = (p.width as usize, p.channels as usize);
    let at = |k: usize| input[((2 * oy + k / 2) * w + 2 * ox + k % 2) * cn + c];
    let mut which = 0;
    for k in 1..4 {
        if at(k) > at(which) {
            which = k;
        }
    }
    which
}

/// CPU twin of `maxpool2.forward`.
pub fn forward<T: Real>(p: &Pool2Params, input: &[T], output: &mut [T]) {
    let (w, cn) = (p.width as usize, p.channels as usize);
    for oy in 0..p.out_height() {
        for ox in 0..p.out_width() {
            for c in 0..cn {
                let k = argmax(p, input, oy, ox, c);
                output[(oy * p.out_width() + ox) * cn + c] = input[((2 * oy + k / 2) * w + 2 * ox + k % 2) * cn + c];
            }
        }
    }
}

/// CPU twin of `maxpool2.backward`: the gradient goes to the first maximum of each window; with
/// `p.mask`, what it writes (the sum, when accumulating) is zeroed where the input is not positive.
pub fn backward<T: Real>(p: &Pool2Params, input: &[T], grad_output: &[T], grad_input: &mut [T]) {
    let (h, w, cn) = (p.height as usize, p.width as usize, p.channels as usize);
    for y in 0..h {
        for x in 0..w {
            for c in 0..cn {
                let (oy, ox) = (y / 2, x / 2);
                let mut g = T::zero();
                if oy < p.out_height() && ox < p.out_width() && argmax(p, input, oy, ox, c) == (y % 2) * 2 + x % 2 {
                    g = grad_output[(oy * p.out_width() + ox) * cn + c];
                }
                let i = (y * w + x) * cn + c;
                store(&mut grad_input[i], g, p.accumulate);
                if p.mask != 0 && !super::relu_passes(input[i]) {
                    grad_input[i] = T::zero();
                }
            }
        }
    }
}
