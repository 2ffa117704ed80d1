//! The fast Gram forward: partial Gram matrices over slices of positions, read from the features'
//! texture with subgroup broadcasts, then their sum. GPU: `shaders/gram_subgroup.wgsl.tmpl`, built
//! where the adapter has subgroups. CPU twins: [`partials`] and [`sum`], whose composition is
//! [`gram::forward`](super::gram::forward).

use bytemuck::{Pod, Zeroable};

use crate::gpu::kernel::{groups_for, read, read_write, texture, EntryPoint, Kernel};
use crate::Real;

/// The template, with `{{ACC_DECL}}`, `{{INNER}}` and `{{STORE}}` holes.
pub const TEMPLATE: &str = include_str!("../../shaders/gram_subgroup.wgsl.tmpl");

/// The name entry points refer to.
pub const SHADER: &str = "gram_subgroup";

/// Invocations per workgroup of `partials`.
pub const INVOCATIONS: usize = 64;

/// Workgroups `partials` aims at, so that every core of a CPU adapter (and every unit of a GPU) has
/// work even for a 64-channel map, whose Gram matrix has only 4 column blocks.
pub const TARGET_WORKGROUPS: usize = 64;

/// Most positions one slice sums: its loop stays under the ~65535 iterations at which lavapipe stops
/// a loop.
pub const MAX_SLICE_LEN: usize = 32768;

/// Params of both entry points.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct GramSliceParams {
    /// Positions per row of the map (the texture's rows are the map's rows).
    pub width: u32,
    /// height x width.
    pub positions: u32,
    /// A multiple of [`COLS`].
    pub channels: u32,
    /// Positions per slice; the last slice may be shorter.
    pub slice_len: u32,
    pub slices: u32,
    /// The normaliser `sum` applies: `1 / positions`.
    pub scale: f32,
    pub _pad0: u32,
    pub _pad1: u32,
}

impl GramSliceParams {
    /// The Gram matrix of a `height x width x channels` map normalised by its positions, with enough
    /// slices for [`TARGET_WORKGROUPS`] (none shorter than 256 positions, none longer than
    /// [`MAX_SLICE_LEN`]).
    pub fn new(height: usize, width: usize, channels: usize) -> Self {
        let positions = height * width;
        // (At least one block: a map whose channels do not suit the kernel still gets params.)
        let blocks = Self::blocks(channels).max(1);
        let wanted = TARGET_WORKGROUPS.div_ceil(blocks).min(positions.div_ceil(256)).max(1);
        let slices = wanted.max(positions.div_ceil(MAX_SLICE_LEN));
        let slice_len = positions.div_ceil(slices);
        let slices = positions.div_ceil(slice_len);
        GramSliceParams {
            width: width as u32,
            positions: positions as u32,
            channels: channels as u32,
            slice_len: slice_len as u32,
            slices: slices as u32,
            scale: (1.0 / positions as f64) as f32,
            _pad0: 0,
            _pad1: 0,
        }
    }

    /// The same map cut into slices of `slice_len` positions instead (at least 1).
    pub fn with_slice_len(mut self, slice_len: usize) -> Self {
        let len = slice_len.clamp(1, self.positions.max(1) as usize);
        self.slice_len = len as u32;
        self.slices = (self.positions as usize).div_ceil(len) as u32;
        self
    }

    /// Workgroups per slice: [`COLS`]-column blocks times blocks of 4 [`ROW_TEXELS`]
    /// [`INVOCATIONS`] rows.
    fn blocks(channels: usize) -> usize {
        (channels / COLS) * (channels / 4).div_ceil(INVOCATIONS * ROW_TEXELS)
    }

    /// Whether the kernel takes this map: channels a multiple of [`COLS`] (so of 4 [`ROW_TEXELS`]).
    pub fn suits(channels: usize) -> bool {
        channels > 0 && channels.is_multiple_of(COLS) && channels.is_multiple_of(4 * ROW_TEXELS)
    }

    /// Whether the kernel takes this map on a device whose 2D textures are at most `max_dim` texels
    /// wide: channels a multiple of [`COLS`], the map texture fits, its rows suit a buffer-to-texture copy.
    pub fn fits(&self, max_dim: u32) -> bool {
        let (w, h) = self.texture_size();
        Self::suits(self.channels as usize)
            && w.max(h) <= max_dim
            && super::conv3x3_subgroup::map_rows_copyable(self.width, self.channels)
    }

    pub fn gram_len(&self) -> usize {
        self.channels as usize * self.channels as usize
    }
    pub fn partials_len(&self) -> usize {
        self.slices as usize * self.gram_len()
    }
    /// Floats of the features texture: 4 per texel.
    pub fn features_len(&self) -> usize {
        self.positions as usize * self.channels as usize
    }
    /// Size (width, height) of the features' map texture
    /// ([`map_texture_size`](super::conv3x3_subgroup::map_texture_size)).
    pub fn texture_size(&self) -> (u32, u32) {
        super::conv3x3_subgroup::map_texture_size(self.positions / self.width, self.width, self.channels)
    }
    /// Multiply-adds times two.
    pub fn flops(&self) -> u64 {
        2 * self.positions as u64 * self.channels as u64 * self.channels as u64
    }
}

const COMPONENTS: [&str; 4] = ["x", "y", "z", "w"];

/// Texels (4 rows each) per invocation of `partials`.
pub const ROW_TEXELS: usize = 1;
/// Columns per workgroup of `partials`: channels must be a multiple of it. At 512 px (Intel Xeon
/// model 167, lavapipe 256 bits, the five style layers' partials and sums) 4 x 32 (rows x columns
/// per invocation) took 158-162 ms, 4 x 16 (the tile before) 217, 8 x 32 169, 4 x 64 178, 8 x 64
/// 177, 16 x 32 219.
pub const COLS: usize = 32;

/// Positions per iteration of `partials`' loop (a remainder runs one at a time). The five style
/// layers' partials at 512 px (same machine): 1 (before) 140 ms, 2 99, 4 84, 8 79, 16 84; with 8 x
/// 32 accumulators per invocation 87 (8) and 91 (4).
pub const POSITION_UNROLL: usize = 8;

/// The WGSL of both entry points: 4 [`ROW_TEXELS`] rows x [`COLS`] columns of accumulators per
/// invocation; `sg` is the adapter's smallest subgroup size.
pub fn instantiate(sg: usize) -> String {
    let sg = sg.max(1);
    let col_texels = COLS / 4;
    let loads = col_texels.div_ceil(sg);
    // The loads, broadcasts and products of one position at (x{q}, y{q}), then the step to the
    // next position (x past the row's last position wraps to the next row).
    let position = |q: usize, acc: &mut Vec<String>| {
        let mut code = format!("        let base{q} = x{q} * c4;\n");
        for r in 0..ROW_TEXELS {
            code += &format!(
                "        let vi{q}_{r} = textureLoad(features, vec2<i32>(i32(base{q} + ti + {r}u), i32(y{q})));\n"
            );
        }
        for l in 0..loads {
            code += &format!(
                "        let vj{q}_{l} = textureLoad(features, vec2<i32>(i32(base{q} + jb * {col_texels}u + min({l}u * SG + lane_texel, {}u)), i32(y{q})));\n",
                col_texels - 1
            );
        }
        for k in 0..col_texels {
            code += &format!("        let b{q}_{k} = subgroupBroadcast(vj{q}_{}, {}u);\n", k / sg, k % sg);
        }
        let mut n = 0;
        for r in 0..ROW_TEXELS {
            for row in COMPONENTS {
                for k in 0..col_texels {
                    acc[n] = format!("{} + vi{q}_{r}.{row} * b{q}_{k}", acc[n]);
                    n += 1;
                }
            }
        }
        code += &format!(
            "        let wrap{q} = x{q} == params.width;\n        let x{} = select(x{q} + 1u, 1u, wrap{q});\n        let y{} = select(y{q}, y{q} + 1u, wrap{q});\n",
            q + 1,
            q + 1
        );
        code
    };
    // The accumulators, in the order `position` extends them: a{texel}_{row in it}_{column texel}.
    let names: Vec<String> = (0..ROW_TEXELS)
        .flat_map(|r| (0..4).flat_map(move |q| (0..col_texels).map(move |k| format!("a{r}_{q}_{k}"))))
        .collect();
    // A loop body of `count` positions: the positions' loads and products, the accumulators'
    // updates, the coordinates of the next position.
    let body = |count: usize| {
        let mut code = String::from("        let x0 = x;\n        let y0 = y;\n");
        let mut acc = names.clone();
        for q in 0..count {
            code += &position(q, &mut acc);
        }
        for (name, value) in names.iter().zip(&acc) {
            code += &format!("        {name} = {value};\n");
        }
        code += &format!("        x = x{count};\n        y = y{count};\n");
        code
    };
    let decl: String = names.iter().map(|name| format!("    var {name} = vec4<f32>(0.0);\n")).collect();
    let mut store = String::new();
    for r in 0..ROW_TEXELS {
        for q in 0..4 {
            for k in 0..col_texels {
                store += &format!(
                    "        {{\n            let o = (s * c + 4u * (ti + {r}u) + {q}u) * c + COLS * jb + {col}u;\n\
                     \x20           partials_out[o] = a{r}_{q}_{k}.x;\n            partials_out[o + 1u] = a{r}_{q}_{k}.y;\n\
                     \x20           partials_out[o + 2u] = a{r}_{q}_{k}.z;\n            partials_out[o + 3u] = a{r}_{q}_{k}.w;\n        }}\n",
                    col = 4 * k
                );
            }
        }
    }
    let (inner, unrolled) = (body(1), body(POSITION_UNROLL));
    TEMPLATE
        .replace("{{SG}}", &sg.to_string())
        .replace("{{ROW_TEXELS}}", &ROW_TEXELS.to_string())
        .replace("{{COLS}}", &COLS.to_string())
        .replace("{{ACC_DECL}}", decl.trim_end())
        .replace("{{UNROLL}}", &POSITION_UNROLL.to_string())
        .replace("{{INNER_UNROLLED}}", unrolled.trim_end())
        .replace("{{INNER}}", inner.trim_end())
        .replace("{{STORE}}", store.trim_end())
}

/// `gram_subgroup.partials`: bindings features (texture), partials.
pub struct Partials;

impl Kernel for Partials {
    type Params = GramSliceParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: SHADER,
        entry: "partials",
        workgroup_size: INVOCATIONS as u32,
        params_bytes: std::mem::size_of::<GramSliceParams>(),
        bindings: &[texture(1, "features"), read_write(2, "partials")],
    };
    fn workgroups(p: &GramSliceParams) -> u64 {
        (p.slices as usize * GramSliceParams::blocks(p.channels as usize)) as u64
    }
    fn binding_lens(p: &GramSliceParams) -> Vec<u64> {
        vec![p.features_len() as u64, p.partials_len() as u64]
    }
}

/// `gram_subgroup.sum`: bindings partials, gram.
pub struct Sum;

impl Kernel for Sum {
    type Params = GramSliceParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: SHADER,
        entry: "sum",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<GramSliceParams>(),
        bindings: &[read(3, "partials"), read_write(4, "gram")],
    };
    fn workgroups(p: &GramSliceParams) -> u64 {
        groups_for(p.gram_len() as u64, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &GramSliceParams) -> Vec<u64> {
        vec![p.partials_len() as u64, p.gram_len() as u64]
    }
}

/// Whether the fast Gram forward can run `p` here: the kernels were built (the adapter has subgroups
/// of at least 4 lanes), the channels suit it, and the features' texture fits the adapter and a
/// buffer-to-texture copy.
pub fn available(gpu: &crate::gpu::Gpu, library: &crate::gpu::KernelLibrary, p: &GramSliceParams) -> bool {
    built(gpu, library) && p.fits(gpu.limits.max_texture_dimension_2d)
}

/// Whether the kernels were built here: the adapter has subgroups of at least 4 lanes.
pub fn built(gpu: &crate::gpu::Gpu, library: &crate::gpu::KernelLibrary) -> bool {
    gpu.subgroup_size.is_some_and(|sg| sg >= 4) && library.has::<Partials>() && library.has::<Sum>()
}

/// The Gram forward as planned commands: copy `features` (channels-last) into the inside of their
/// map texture `texture` (made with [`texture_size`](GramSliceParams::texture_size) by
/// [`create_texture`](super::conv3x3_subgroup::create_texture), its border zero), the partials,
/// their sum into `gram`. Operands `[features, texture, partials, gram]`.
pub fn forward_plan<R: Clone>(
    p: &GramSliceParams,
    [features, texture, partials, gram]: [R; 4],
) -> Vec<crate::gpu::Planned<R>> {
    use crate::gpu::Planned;
    debug_assert!(p.positions.is_multiple_of(p.width), "a map of whole rows");
    let copy = super::conv3x3_subgroup::planned_map_copy(
        features,
        texture.clone(),
        p.positions / p.width,
        p.width,
        p.channels,
    );
    let first = Planned::dispatch::<Partials>(p, vec![texture, partials.clone()]);
    let second = Planned::dispatch::<Sum>(p, vec![partials, gram]);
    vec![copy, first, second]
}

/// [`forward_plan`] bound to buffers and the texture.
pub fn forward_commands(
    gpu: &crate::gpu::Gpu,
    library: &crate::gpu::KernelLibrary,
    p: &GramSliceParams,
    features: &wgpu::Buffer,
    texture: &wgpu::Texture,
    partials: &wgpu::Buffer,
    gram: &wgpu::Buffer,
) -> crate::Result<Vec<crate::gpu::Command>> {
    use crate::gpu::Resource;
    let operands =
        [Resource::Buffer(features), Resource::Texture(texture), Resource::Buffer(partials), Resource::Buffer(gram)];
    crate::gpu::bind_all(gpu, library, forward_plan(p, operands))
}

/// Whether `partials` may skip entry `(i, j)` of the Gram matrix, whose value `sum` takes from its
/// transposed partner `(j, i)`: the rows of i's invocation (4 [`ROW_TEXELS`] of them) all lie below
/// the [`COLS`] columns of j's block.
pub fn mirrored(i: usize, j: usize) -> bool {
    let rows = 4 * ROW_TEXELS;
    rows * (i / rows) > COLS * (j / COLS) + COLS - 1
}

/// CPU twin of `gram_subgroup.partials`: `partials[s][i][j] = sum_{p in slice s} F[p][i] F[p][j]`,
/// `features` channels-last. It computes every entry; the kernel may leave the [`mirrored`] ones
/// unwritten.
pub fn partials<T: Real>(p: &GramSliceParams, features: &[T], partials: &mut [T]) {
    let c = p.channels as usize;
    for s in 0..p.slices as usize {
        let start = s * p.slice_len as usize;
        let end = (start + p.slice_len as usize).min(p.positions as usize);
        for i in 0..c {
            for j in 0..c {
                let mut acc = T::zero();
                for q in start..end {
                    acc += features[q * c + i] * features[q * c + j];
                }
                partials[(s * c + i) * c + j] = acc;
            }
        }
    }
}

/// CPU twin of `gram_subgroup.sum`: `gram[i][j] = scale * sum_s partials[s][m(i, j)]`, where m
/// swaps the indices of a [`mirrored`] entry.
pub fn sum<T: Real>(p: &GramSliceParams, partials: &[T], gram: &mut [T]) {
    let (n, c) = (p.gram_len(), p.channels as usize);
    for (e, g) in gram.iter_mut().enumerate().take(n) {
        let (i, j) = (e / c, e % c);
        let src = if mirrored(i, j) { j * c + i } else { e };
        let mut acc = T::zero();
        for s in 0..p.slices as usize {
            acc += partials[s * n + src];
        }
        *g = T::from_f64(p.scale as f64) * acc;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_fill_the_target_and_cover_every_position_once() {
        // (9 x 7 x 20 does not suit the kernel: its params must still exist, for `fits` to say so.)
        for (h, w, c) in [
            (256, 256, 64),
            (128, 128, 128),
            (64, 64, 256),
            (32, 32, 512),
            (1, 1, 32),
            (7, 5, 64),
            (1024, 1024, 64),
            (9, 7, 20),
        ] {
            let p = GramSliceParams::new(h, w, c);
            let (len, slices) = (p.slice_len as usize, p.slices as usize);
            assert!(len <= MAX_SLICE_LEN, "{h}x{w}x{c}: slice of {len}");
            assert!(slices * len >= h * w && (slices - 1) * len < h * w, "{h}x{w}x{c}: {slices} x {len}");
            let groups = Partials::workgroups(&p) as usize;
            assert!(
                groups >= TARGET_WORKGROUPS.min(GramSliceParams::blocks(c) * (h * w).div_ceil(256)),
                "{h}x{w}x{c}: {groups}"
            );
        }
    }

    #[test]
    fn the_sum_of_the_partials_is_the_gram_matrix() {
        let p = GramSliceParams::new(7, 5, 32).with_slice_len(8);
        assert_eq!(p.slices, 5);
        let f: Vec<f64> = (0..p.features_len()).map(|i| ((i * 37) % 11) as f64 - 5.0).collect();
        let mut parts = vec![0.0; p.partials_len()];
        partials(&p, &f, &mut parts);
        let mut g = vec![0.0; p.gram_len()];
        sum(&p, &parts, &mut g);
        let mut want = vec![0.0; p.gram_len()];
        super::super::gram::forward(&super::super::gram::GramParams::new(7, 5, 32), &f, &mut want);
        for (a, b) in g.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn the_sum_never_reads_a_mirrored_entry_and_every_mirrored_entrys_partner_is_not_mirrored() {
        for c in [32, 96, 64, 288, 512] {
            let mut count = 0;
            for i in 0..c {
                for j in 0..c {
                    if mirrored(i, j) {
                        count += 1;
                        assert!(i > j && !mirrored(j, i), "c = {c}: ({i}, {j})");
                    }
                }
            }
            // Below the diagonal's column blocks every entry is mirrored: at least the strictly
            // lower block triangle.
            let blocks = c / COLS;
            assert!(count >= COLS * COLS * blocks * (blocks - 1) / 2, "c = {c}: {count} mirrored");
        }
        // Partials garbage where mirrored: the sum does not change.
        let p = GramSliceParams::new(3, 4, 32).with_slice_len(5);
        let f: Vec<f64> = (0..p.features_len()).map(|i| ((i * 13) % 7) as f64 - 2.0).collect();
        let mut parts = vec![0.0; p.partials_len()];
        partials(&p, &f, &mut parts);
        let (mut g, mut g_garbage) = (vec![0.0; p.gram_len()], vec![0.0; p.gram_len()]);
        sum(&p, &parts, &mut g);
        for (e, v) in parts.iter_mut().enumerate() {
            let e = e % p.gram_len();
            if mirrored(e / 32, e % 32) {
                *v = f64::NAN;
            }
        }
        sum(&p, &parts, &mut g_garbage);
        assert_eq!(g, g_garbage);
    }
}
