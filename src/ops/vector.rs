//! Vector arithmetic over the image for the optimisers (L-BFGS's two-loop recursion, the moving
//! average of the iterates), with coefficients read from a scalar buffer on the GPU.
//! GPU: `shaders/vector.wgsl`; a dot product is `dot_partials` followed by `reduce.sum`.

use bytemuck::{Pod, Zeroable};

use super::{partial_count, REDUCE_BLOCK};
use crate::gpu::kernel::{groups_for, read, read_write, EntryPoint, Kernel};
use crate::Real;

/// Slot of the scalar buffer that always holds 0.
pub const ZERO: u32 = 0;
/// Slot of the scalar buffer that always holds 1.
pub const ONE: u32 = 1;

/// Params of `vector.wgsl`. The coefficient of `axpby`, `scale` and `step` is
/// `factor * (scalars[num] - scalars[sub]) / max(scalars[den], floor)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct VectorParams {
    pub len: u32,
    pub num: u32,
    pub sub: u32,
    pub den: u32,
    pub factor: f32,
    pub floor: f32,
    /// `axpby` only: the factor on the old `y`; 0 means `y` is not read.
    pub y_scale: f32,
    pub _pad: u32,
    /// `step` only: element `i` is clamped to `lower[i % 4] ..= upper[i % 4]`.
    pub lower: [f32; 4],
    pub upper: [f32; 4],
}

impl VectorParams {
    /// Over `len` elements with the literal coefficient `factor` (`num = ONE, sub = ZERO, den = ONE`).
    pub fn literal(len: usize, factor: f64) -> Self {
        VectorParams {
            len: len as u32,
            num: ONE,
            sub: ZERO,
            den: ONE,
            factor: factor as f32,
            floor: 0.0,
            y_scale: 0.0,
            _pad: 0,
            lower: [f32::MIN; 4],
            upper: [f32::MAX; 4],
        }
    }

    /// The coefficient `factor * (scalars[num] - scalars[sub]) / max(scalars[den], floor)`.
    pub fn ratio(len: usize, factor: f64, num: u32, sub: u32, den: u32, floor: f32) -> Self {
        VectorParams { num, sub, den, floor, ..Self::literal(len, factor) }
    }

    pub fn with_y_scale(mut self, y_scale: f64) -> Self {
        self.y_scale = y_scale as f32;
        self
    }

    pub fn with_bounds(mut self, lower: [f32; 4], upper: [f32; 4]) -> Self {
        self.lower = lower;
        self.upper = upper;
        self
    }

    pub fn partials(&self) -> usize {
        partial_count(self.len as usize)
    }

    /// The scalar slots the coefficient reads.
    fn scalar_len(&self) -> u64 {
        self.num.max(self.sub).max(self.den) as u64 + 1
    }
}

/// `vector.dot_partials`: bindings a, b, partials.
pub struct DotPartials;

impl Kernel for DotPartials {
    type Params = VectorParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "vector",
        entry: "dot_partials",
        workgroup_size: super::REDUCE_WORKGROUP,
        params_bytes: std::mem::size_of::<VectorParams>(),
        bindings: &[read(1, "a"), read(2, "b"), read_write(3, "partials")],
    };
    fn workgroups(p: &VectorParams) -> u64 {
        p.partials() as u64
    }
    fn binding_lens(p: &VectorParams) -> Vec<u64> {
        vec![p.len as u64, p.len as u64, p.partials() as u64]
    }
}

macro_rules! elementwise {
    ($name:ident, $entry:literal, $doc:literal, [$($binding:expr),*]) => {
        #[doc = $doc]
        pub struct $name;

        impl Kernel for $name {
            type Params = VectorParams;
            const ENTRY: EntryPoint = EntryPoint {
                shader: "vector",
                entry: $entry,
                workgroup_size: 64,
                params_bytes: std::mem::size_of::<VectorParams>(),
                bindings: &[$($binding),*],
            };
            fn workgroups(p: &VectorParams) -> u64 {
                groups_for(p.len as u64, Self::ENTRY.workgroup_size)
            }
            fn binding_lens(p: &VectorParams) -> Vec<u64> {
                let mut lens = vec![p.scalar_len()];
                lens.resize(Self::ENTRY.bindings.len(), p.len as u64);
                lens
            }
        }
    };
}

elementwise!(
    Axpby,
    "axpby",
    "`vector.axpby`: bindings scalars, x, y.",
    [read(4, "scalars"), read(5, "x"), read_write(6, "y")]
);
elementwise!(Scale, "scale", "`vector.scale`: bindings scalars, y.", [read(4, "scalars"), read_write(6, "y")]);
elementwise!(
    StepClamped,
    "step",
    "`vector.step`: bindings scalars, x, y.",
    [read(4, "scalars"), read(5, "x"), read_write(6, "y")]
);

/// The coefficient `factor * (scalars[num] - scalars[sub]) / max(scalars[den], floor)`.
pub fn coefficient<T: Real>(p: &VectorParams, scalars: &[T]) -> T {
    let f = |v: f32| T::from_f64(v as f64);
    let den = scalars[p.den as usize];
    let den = if den > f(p.floor) { den } else { f(p.floor) };
    f(p.factor) * ((scalars[p.num as usize] - scalars[p.sub as usize]) / den)
}

/// CPU twin of `vector.dot_partials`: `partials[k]` = sum of `a[i] * b[i]` over block k of 1024.
pub fn dot_partials<T: Real>(p: &VectorParams, a: &[T], b: &[T], partials: &mut [T]) {
    let len = p.len as usize;
    for (k, partial) in partials.iter_mut().enumerate().take(p.partials()) {
        let mut s = T::zero();
        for i in k * REDUCE_BLOCK..((k + 1) * REDUCE_BLOCK).min(len) {
            s += a[i] * b[i];
        }
        *partial = s;
    }
}

/// CPU twin of `vector.axpby`: `y = y_scale * y + coef * x` (`y` unread when `y_scale == 0`).
pub fn axpby<T: Real>(p: &VectorParams, scalars: &[T], x: &[T], y: &mut [T]) {
    let c = coefficient(p, scalars);
    let y_scale = T::from_f64(p.y_scale as f64);
    for i in 0..p.len as usize {
        y[i] = if p.y_scale != 0.0 { y_scale * y[i] + c * x[i] } else { c * x[i] };
    }
}

/// CPU twin of `vector.scale`: `y = coef * y`.
pub fn scale<T: Real>(p: &VectorParams, scalars: &[T], y: &mut [T]) {
    let c = coefficient(p, scalars);
    for v in &mut y[..p.len as usize] {
        *v = c * *v;
    }
}

/// CPU twin of `vector.step`: `y = clamp(y + coef * x, lower[i % 4], upper[i % 4])`.
pub fn step<T: Real>(p: &VectorParams, scalars: &[T], x: &[T], y: &mut [T]) {
    let c = coefficient(p, scalars);
    for i in 0..p.len as usize {
        let stepped = y[i] + c * x[i];
        let (lo, hi) = (T::from_f64(p.lower[i % 4] as f64), T::from_f64(p.upper[i % 4] as f64));
        y[i] = if stepped < lo {
            lo
        } else if stepped > hi {
            hi
        } else {
            stepped
        };
    }
}

/// The dot product on the CPU as the GPU computes it: block partials, then their sum.
pub fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let p = VectorParams::literal(a.len(), 1.0);
    let mut partials = vec![T::zero(); p.partials()];
    dot_partials(&p, a, b, &mut partials);
    let mut total = T::zero();
    for v in partials {
        total += v;
    }
    total
}
