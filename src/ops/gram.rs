//! Gram matrix of a feature map and its gradient. GPU: `shaders/gram.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::store;
use crate::gpu::kernel::{groups_for, read, read_write, EntryPoint, Kernel};
use crate::Real;

/// Params of `gram.wgsl`: features are `positions` rows of `channels` values (HWC flattened).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct GramParams {
    pub positions: u32,
    pub channels: u32,
    /// Add to the feature gradient (backward) or to the Gram matrix (forward: the bands of a map
    /// too large for one binding are summed in order) when non-zero.
    pub accumulate: u32,
    /// The normaliser: `gram = scale * Fᵀ F`.
    pub scale: f32,
}

impl GramParams {
    /// The Gram matrix of an `height x width x channels` map, normalised by the number of positions:
    /// `scale = 1 / (height * width)`.
    pub fn new(height: usize, width: usize, channels: usize) -> Self {
        let positions = height * width;
        GramParams {
            positions: positions as u32,
            channels: channels as u32,
            accumulate: 0,
            scale: (1.0 / positions as f64) as f32,
        }
    }
    pub fn with_accumulate(mut self, accumulate: bool) -> Self {
        self.accumulate = accumulate as u32;
        self
    }
    pub fn features_len(&self) -> usize {
        self.positions as usize * self.channels as usize
    }
    pub fn gram_len(&self) -> usize {
        self.channels as usize * self.channels as usize
    }
    /// Invocations that share one 4x4 block in `gram_blocked.forward`: a power of two near
    /// positions / 1024, from 1 to 64 (the shader's `split_for`).
    pub fn split(&self) -> usize {
        let n = (self.positions / 1024).max(1);
        (1usize << (31 - n.leading_zeros())).min(64)
    }

    /// Positions per chunk of the forward as a pointwise conv (see [`MAX_CHUNK_POSITIONS`]):
    /// equal chunks, each a multiple of 4 positions (the conv reads vec4s along them).
    pub fn chunk_len(&self, max_chunk: usize) -> usize {
        let positions = self.positions as usize;
        positions.div_ceil(positions.div_ceil(max_chunk).max(1)).next_multiple_of(4)
    }

    /// Multiply-adds times two of the forward (the backward costs the same).
    pub fn flops(&self) -> u64 {
        2 * self.positions as u64 * self.channels as u64 * self.channels as u64
    }
}

/// Most positions one pointwise-conv dispatch of the Gram forward sums: its loop over groups of 4
/// positions then stays at 32768 iterations, under the ~65535 at which lavapipe stops a loop.
pub const MAX_CHUNK_POSITIONS: usize = 131072;

/// `gram.forward`: bindings features, gram.
pub struct Forward;

impl Kernel for Forward {
    type Params = GramParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "gram",
        entry: "forward",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<GramParams>(),
        bindings: &[read(1, "features"), read_write(2, "gram")],
    };
    /// One workgroup per element of the Gram matrix.
    fn workgroups(p: &GramParams) -> u64 {
        p.gram_len() as u64
    }
    fn binding_lens(p: &GramParams) -> Vec<u64> {
        vec![p.features_len() as u64, p.gram_len() as u64]
    }
}

/// `gram_blocked.forward`: bindings features, gram; channels a multiple of 4. One workgroup per
/// 4x4 block of the Gram matrix.
pub struct ForwardBlocked;

impl Kernel for ForwardBlocked {
    type Params = GramParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "gram_blocked",
        entry: "forward",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<GramParams>(),
        bindings: &[read(1, "features"), read_write(2, "gram")],
    };
    fn workgroups(p: &GramParams) -> u64 {
        (p.gram_len() / 16).div_ceil(64 / p.split()) as u64
    }
    fn binding_lens(p: &GramParams) -> Vec<u64> {
        vec![p.features_len() as u64, p.gram_len() as u64]
    }
}

impl ForwardBlocked {
    /// Whether the blocked kernel takes this shape.
    pub fn suits(p: &GramParams) -> bool {
        p.channels.is_multiple_of(4)
    }
}

/// `gram.backward`: bindings features, grad_gram, grad_features.
pub struct Backward;

impl Kernel for Backward {
    type Params = GramParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "gram",
        entry: "backward",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<GramParams>(),
        bindings: &[read(1, "features"), read(3, "grad_gram"), read_write(4, "grad_features")],
    };
    fn workgroups(p: &GramParams) -> u64 {
        groups_for(p.features_len() as u64, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &GramParams) -> Vec<u64> {
        vec![p.features_len() as u64, p.gram_len() as u64, p.features_len() as u64]
    }
}

/// `gram.symmetrize`: bindings grad_gram, sym.
pub struct Symmetrize;

impl Kernel for Symmetrize {
    type Params = GramParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "gram",
        entry: "symmetrize",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<GramParams>(),
        bindings: &[read(3, "grad_gram"), read_write(5, "sym")],
    };
    fn workgroups(p: &GramParams) -> u64 {
        groups_for(p.gram_len() as u64, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &GramParams) -> Vec<u64> {
        vec![p.gram_len() as u64; 2]
    }
}

/// `gram.symmetrize_tiled`: bindings grad_gram, sym (in the order of the pointwise conv's weights
/// texture, [`tiled_weights_texture_size`]).
pub struct SymmetrizeTiled;

impl Kernel for SymmetrizeTiled {
    type Params = GramParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "gram",
        entry: "symmetrize_tiled",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<GramParams>(),
        bindings: &[read(3, "grad_gram"), read_write(5, "sym")],
    };
    fn workgroups(p: &GramParams) -> u64 {
        Symmetrize::workgroups(p)
    }
    fn binding_lens(p: &GramParams) -> Vec<u64> {
        Symmetrize::binding_lens(p)
    }
}

/// Output channels per workgroup of the pointwise conv that runs the Gram backward
/// (`conv3x3_subgroup::Pointwise32` and `Pointwise32Tex`).
pub const POINTWISE_TILE: usize = 32;

/// Size (width, height) in texels of the weights texture of the Gram backward's pointwise conv
/// over `channels` channels: texel `(k, (i / 32) * channels / 4 + c4)` holds `sym[i][4c4..4c4+3]`
/// for `i = 32 (i / 32) + k`.
pub fn tiled_weights_texture_size(channels: usize) -> (u32, u32) {
    (POINTWISE_TILE as u32, (channels / POINTWISE_TILE * channels / 4) as u32)
}

/// `gram.scale`: binding gram, scaled in place.
pub struct Scale;

impl Kernel for Scale {
    type Params = GramParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "gram",
        entry: "scale",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<GramParams>(),
        bindings: &[read_write(2, "gram")],
    };
    fn workgroups(p: &GramParams) -> u64 {
        groups_for(p.gram_len() as u64, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &GramParams) -> Vec<u64> {
        vec![p.gram_len() as u64]
    }
}

/// CPU twin of `gram.scale`: `gram *= scale`.
pub fn scale<T: Real>(p: &GramParams, gram: &mut [T]) {
    for g in gram.iter_mut().take(p.gram_len()) {
        *g = T::from_f64(p.scale as f64) * *g;
    }
}

/// CPU twin of `gram.symmetrize`: `sym = scale * (dG + dGᵀ)`.
pub fn symmetrize<T: Real>(p: &GramParams, grad_gram: &[T], sym: &mut [T]) {
    let c = p.channels as usize;
    for i in 0..c {
        for j in 0..c {
            sym[i * c + j] = T::from_f64(p.scale as f64) * (grad_gram[i * c + j] + grad_gram[j * c + i]);
        }
    }
}

/// CPU twin of `gram.symmetrize_tiled`: [`symmetrize`]'s values in the order of the pointwise conv's
/// weights texture ([`tiled_weights_texture_size`]), texel by texel, row by row.
pub fn symmetrize_tiled<T: Real>(p: &GramParams, grad_gram: &[T], sym: &mut [T]) {
    let (c, t) = (p.channels as usize, POINTWISE_TILE);
    for i in 0..c {
        for j in 0..c {
            let row = (i / t) * (c / 4) + j / 4;
            let o = (row * t + i % t) * 4 + j % 4;
            sym[o] = T::from_f64(p.scale as f64) * (grad_gram[i * c + j] + grad_gram[j * c + i]);
        }
    }
}

/// Length of the scratch buffer [`pointwise_forward_steps`] needs: one transposed chunk.
pub fn pointwise_scratch_len(p: &GramParams, max_chunk: usize) -> usize {
    p.channels as usize * p.chunk_len(max_chunk)
}

/// The Gram forward as the engine runs it with subgroups (channels a multiple of 32), as planned
/// commands: for each chunk of at most `max_chunk` positions, `transpose.forward` writes the chunk
/// channels-first into `scratch` and the pointwise conv (`conv1x1_subgroup_co32`, its "pixels" the
/// channels and its "input channels" the chunk's positions, `scratch` as both input and weights)
/// adds `Fᵀ F` over the chunk into `gram` (`=` for the first chunk); then `gram.scale` applies the
/// normaliser. `scratch` holds at least [`pointwise_scratch_len`] floats, `zero_bias` at least
/// `channels` zeros. `chunk(start, len)` gives the features operand of the chunk of `len`
/// positions from `start` and the transpose's params ([`whole_features`] for features bound whole;
/// a map too large for one binding binds each chunk's positions alone).
pub fn pointwise_forward_plan<R: Clone>(
    p: &GramParams,
    max_chunk: usize,
    mut chunk: impl FnMut(usize, usize) -> (R, super::transpose::TransposeParams),
    [gram, scratch, zero_bias]: [R; 3],
) -> Vec<crate::gpu::Planned<R>> {
    use super::conv3x3::Conv3x3Params;
    use super::conv3x3_subgroup::Pointwise32;
    use super::transpose;
    use crate::gpu::Planned;
    let (positions, c) = (p.positions as usize, p.channels as usize);
    let len = p.chunk_len(max_chunk);
    let mut plan = Vec::new();
    for (k, start) in (0..positions).step_by(len).enumerate() {
        let (features, t) = chunk(start, len);
        plan.push(Planned::dispatch::<transpose::Forward>(&t, vec![features, scratch.clone()]));
        let conv = Conv3x3Params::new(1, c, len, c).with_accumulate(k > 0);
        let operands = vec![scratch.clone(), zero_bias.clone(), scratch.clone(), gram.clone()];
        plan.push(Planned::dispatch::<Pointwise32>(&conv, operands));
    }
    plan.push(Planned::dispatch::<Scale>(p, vec![gram]));
    plan
}

/// The chunks of [`pointwise_forward_plan`] from `features` bound whole.
pub fn whole_features<R: Clone>(
    p: &GramParams,
    features: R,
) -> impl FnMut(usize, usize) -> (R, super::transpose::TransposeParams) {
    let (positions, c) = (p.positions as usize, p.channels as usize);
    move |start, len| (features.clone(), super::transpose::TransposeParams::new(positions, c, start, len))
}

/// [`pointwise_forward_plan`] bound to buffers.
pub fn pointwise_forward_steps(
    gpu: &crate::gpu::Gpu,
    library: &crate::gpu::KernelLibrary,
    p: &GramParams,
    max_chunk: usize,
    buffers: [&wgpu::Buffer; 4],
) -> crate::Result<Vec<crate::gpu::Step>> {
    use crate::gpu::{Command, Resource};
    let [features, gram, scratch, zero_bias] = buffers.map(Resource::Buffer);
    let plan = pointwise_forward_plan(p, max_chunk, whole_features(p, features), [gram, scratch, zero_bias]);
    let commands = crate::gpu::bind_all(gpu, library, plan)?;
    Ok(commands
        .into_iter()
        .map(|c| match c {
            Command::Dispatch(step) => step,
            _ => unreachable!("the pointwise Gram forward plans only dispatches"),
        })
        .collect())
}

/// CPU twin of `gram.forward` (and `gram_blocked.forward`): `gram[i][j] (= or +=) scale * sum_p
/// F[p][i] F[p][j]`.
pub fn forward<T: Real>(p: &GramParams, features: &[T], gram: &mut [T]) {
    let c = p.channels as usize;
    for i in 0..c {
        for j in 0..c {
            let mut acc = T::zero();
            for q in 0..p.positions as usize {
                acc += features[q * c + i] * features[q * c + j];
            }
            store(&mut gram[i * c + j], T::from_f64(p.scale as f64) * acc, p.accumulate);
        }
    }
}

/// CPU twin of `gram.backward`: `dF[p][i] = scale * sum_j (dG[i][j] + dG[j][i]) F[p][j]`.
pub fn backward<T: Real>(p: &GramParams, features: &[T], grad_gram: &[T], grad_features: &mut [T]) {
    let c = p.channels as usize;
    for q in 0..p.positions as usize {
        for i in 0..c {
            let mut acc = T::zero();
            for j in 0..c {
                acc += (grad_gram[i * c + j] + grad_gram[j * c + i]) * features[q * c + j];
            }
            store(&mut grad_features[q * c + i], T::from_f64(p.scale as f64) * acc, p.accumulate);
        }
    }
}
