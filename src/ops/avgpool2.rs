//! 2x2 average pooling, stride 2, and its gradient. GPU: `shaders/avgpool2.wgsl`.

use super::maxpool2::Pool2Params;
use super::store;
use crate::gpu::kernel::{groups_for, read, read_write, EntryPoint, Kernel};
use crate::Real;

/// `avgpool2.forward`: bindings input, output.
pub struct Forward;

impl Kernel for Forward {
    type Params = Pool2Params;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "avgpool2",
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

/// `avgpool2.backward`: bindings grad_output, grad_input.
pub struct Backward;

impl Kernel for Backward {
    type Params = Pool2Params;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "avgpool2",
        entry: "backward",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<Pool2Params>(),
        bindings: &[read(3, "grad_output"), read_write(4, "grad_input")],
    };
    fn workgroups(p: &Pool2Params) -> u64 {
        groups_for(p.input_len() as u64, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &Pool2Params) -> Vec<u64> {
        vec![p.output_len() as u64, p.input_len() as u64]
    }
}

/// CPU twin of `avgpool2.forward`: `0.25 * ((top-left + top-right) + (bottom-left + bottom-right))`.
pub fn forward<T: Real>(p: &Pool2Params, input: &[T], output: &mut [T]) {
    let (w, cn) = (p.width as usize, p.channels as usize);
    let quarter = T::from_f64(0.25);
    for oy in 0..p.out_height() {
        for ox in 0..p.out_width() {
            for c in 0..cn {
                let top = (2 * oy * w + 2 * ox) * cn + c;
                let bottom = top + w * cn;
                let sum = (input[top] + input[top + cn]) + (input[bottom] + input[bottom + cn]);
                output[(oy * p.out_width() + ox) * cn + c] = quarter * sum;
            }
        }
    }
}

/// CPU twin of `avgpool2.backward`.
pub fn backward<T: Real>(p: &Pool2Params, grad_output: &[T], grad_input: &mut [T]) {
    let (h, w, cn) = (p.height as usize, p.width as usize, p.channels as usize);
    let quarter = T::from_f64(0.25);
    for y in 0..h {
        for x in 0..w {
            for c in 0..cn {
                let (oy, ox) = (y / 2, x / 2);
                let mut g = T::zero();
                if oy < p.out_height() && ox < p.out_width() {
                    g = quarter * grad_output[(oy * p.out_width() + ox) * cn + c];
                }
                store(&mut grad_input[(y * w + x) * cn + c], g, p.accumulate);
            }
        }
    }
}
