//! One bias-corrected Adam step, in place, then a clamp to per-channel bounds. GPU: `shaders/adam.wgsl`.

use bytemuck::{Pod, Zeroable};

use crate::gpu::kernel::{groups_for, read, read_write, EntryPoint, Kernel};
use crate::Real;

/// Params of `adam.wgsl`. Build with [`AdamParams::at_step`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct AdamParams {
    pub len: u32,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    /// `1 - beta1^t`.
    pub bias_correction1: f32,
    /// `1 - beta2^t`.
    pub bias_correction2: f32,
    pub _pad: u32,
    /// After the step, element `i` is clamped to `lower[i % 4] ..= upper[i % 4]`: the image's
    /// valid range per channel (B, G, R, 0 minus the mean), so no effort goes into invisible values.
    pub lower: [f32; 4],
    pub upper: [f32; 4],
}

/// Adam's hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
}

impl Default for AdamConfig {
    /// Kingma and Ba's defaults for the betas and epsilon, with a learning rate for images in 0..255.
    fn default() -> Self {
        AdamConfig { lr: 1.0, beta1: 0.9, beta2: 0.999, epsilon: 1e-8 }
    }
}

impl AdamParams {
    /// The params of step `t` (1-based) over `len` elements; the bias corrections are computed in f64.
    pub fn at_step(len: usize, config: &AdamConfig, t: u32) -> Self {
        assert!(t >= 1, "Adam steps count from 1");
        AdamParams {
            len: len as u32,
            lr: config.lr as f32,
            beta1: config.beta1 as f32,
            beta2: config.beta2 as f32,
            epsilon: config.epsilon as f32,
            bias_correction1: (1.0 - config.beta1.powi(t as i32)) as f32,
            bias_correction2: (1.0 - config.beta2.powi(t as i32)) as f32,
            _pad: 0,
            lower: [f32::MIN; 4],
            upper: [f32::MAX; 4],
        }
    }

    /// Clamps element `i` to `lower[i % 4] ..= upper[i % 4]` after each step (default: unbounded).
    pub fn with_bounds(mut self, lower: [f32; 4], upper: [f32; 4]) -> Self {
        self.lower = lower;
        self.upper = upper;
        self
    }
}

/// `adam.step`: bindings grad, x, m, v.
pub struct Step;

impl Kernel for Step {
    type Params = AdamParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "adam",
        entry: "step",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<AdamParams>(),
        bindings: &[read(1, "grad"), read_write(2, "x"), read_write(3, "m"), read_write(4, "v")],
    };
    fn workgroups(p: &AdamParams) -> u64 {
        groups_for(p.len as u64, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &AdamParams) -> Vec<u64> {
        vec![p.len as u64; 4]
    }
}

/// CPU twin of `adam.step`.
pub fn step<T: Real>(p: &AdamParams, grad: &[T], x: &mut [T], m: &mut [T], v: &mut [T]) {
    let f = |v: f32| T::from_f64(v as f64);
    let one = T::from_f64(1.0);
    for i in 0..p.len as usize {
        let g = grad[i];
        m[i] = f(p.beta1) * m[i] + (one - f(p.beta1)) * g;
        v[i] = f(p.beta2) * v[i] + (one - f(p.beta2)) * g * g;
        let m_hat = m[i] / f(p.bias_correction1);
        let v_hat = v[i] / f(p.bias_correction2);
        let stepped = x[i] - f(p.lr) * m_hat / (v_hat.sqrt() + f(p.epsilon));
        let (lo, hi) = (f(p.lower[i % 4]), f(p.upper[i % 4]));
        x[i] = if stepped < lo {
            lo
        } else if stepped > hi {
            hi
        } else {
            stepped
        };
    }
}
