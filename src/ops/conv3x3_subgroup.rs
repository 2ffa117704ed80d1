//! The fast 3x3 convolution with subgroup broadcasts, and its use as the input gradient with
//! flipped, transposed weights. GPU: `shaders/conv3x3_subgroup.wgsl.tmpl`, instantiated per adapter.
//! CPU twin: [`conv3x3::forward`](super::conv3x3::forward) (and `backward_input` through
//! [`transpose_weights`]), which this kernel must match.

use super::conv3x3::Conv3x3Params;
use crate::gpu::kernel::{read, read_write, texture, EntryPoint, Kernel};
use crate::gpu::{Command, KernelRef, Planned};
use crate::Real;

/// The template, with `{{SG}}`, `{{KSIZE}}`, `{{CO_TILE}}`, `{{WEIGHTS_BINDING}}`,
/// `{{INPUT_BINDING}}`, `{{ACC_DECL}}`, `{{POSITIONS}}`, `{{INNER}}` and `{{STORE}}` holes.
pub const TEMPLATE: &str = include_str!("../../shaders/conv3x3_subgroup.wgsl.tmpl");

/// Invocations per workgroup, each owning [`PX`] consecutive pixels of one row.
pub const INVOCATIONS: usize = 64;

/// Pixels per invocation. With 16 output channels per invocation ([`CO_TILES`]) that is 64
/// accumulators, and per row of taps and 4 input channels 6 input loads and 6 weight loads for 768
/// multiply-adds. On lavapipe, where those loads (gathers) set the speed, `nst bench` (median of 3,
/// 256 px shapes, texture operands, the two binaries run alternately twice) measured PX 4 x 16
/// channels at 21-38 GFLOP/s against 21-27 for PX 2 x 32, with iterations 5-10% shorter; PX 4 x 32
/// (128 accumulators, which spill) measured 19-29 and PX 8 x 8 25-42 in single runs, with a slower
/// iteration. At 256 bits (an Intel Xeon, 2026-12-06) PX 4 x 16 beat 2 x 16 and 8 x 16 at every
/// block-1 and block-2 shape (`docs/measurements.md`).
pub const PX: usize = 4;

/// Output-channel tiles nst instantiates: 16 for VGG's layers, 4 for the gradient into the image.
pub const CO_TILES: [usize; 2] = [16, 4];

/// The shader name of the instantiation with output-channel tile `co_tile` and `operands`.
pub const fn shader_name(co_tile: usize, operands: Operands) -> &'static str {
    match (co_tile, operands) {
        (16, Operands::Storage) => "conv3x3_subgroup_co16",
        (4, Operands::Storage) => "conv3x3_subgroup_co4",
        (16, Operands::Texture) => "conv3x3_subgroup_tex_co16",
        (4, Operands::Texture) => "conv3x3_subgroup_tex_co4",
        (1, Operands::Storage) => "conv1x1_subgroup_co32",
        (1, Operands::Texture) => "conv1x1_subgroup_tex_co32",
        _ => panic!("no such conv3x3_subgroup tile"),
    }
}

const COMPONENTS: [&str; 4] = ["x", "y", "z", "w"];

/// Where the kernel reads its input and weights from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operands {
    /// Storage buffers (`array<vec4<f32>>`).
    Storage,
    /// rgba32float textures.
    Texture,
}

/// The WGSL of the kernel for subgroup size `sg` (broadcasts use lanes 0..sg), tile `co_tile`, and
/// operands read from buffers or textures.
pub fn instantiate(sg: usize, co_tile: usize, operands: Operands) -> String {
    instantiate_sized(sg, co_tile, operands, 3)
}

/// [`instantiate`] for a `ksize` x `ksize` kernel: 3, or 1 for the pointwise conv.
pub fn instantiate_sized(sg: usize, co_tile: usize, operands: Operands, ksize: usize) -> String {
    instantiate_tiled(sg, co_tile, operands, ksize, PX)
}

/// [`instantiate_sized`] with `px` pixels per invocation.
pub fn instantiate_tiled(sg: usize, co_tile: usize, operands: Operands, ksize: usize, px: usize) -> String {
    assert!(sg >= 1 && co_tile.is_multiple_of(4), "co_tile must be a multiple of 4");
    let rows = co_tile.div_ceil(sg);
    let mut decl = String::new();
    for p in 0..px {
        for c in 0..co_tile / 4 {
            decl += &format!("    var a{p}_{c} = vec4<f32>(0.0);\n");
        }
    }
    // Input positions of one row of taps: x = tx - KSIZE/2 + j for j < PX + KSIZE - 1, rows
    // y = ty - KSIZE/2 + ky (in the map texture, one position further for its border).
    let positions = px + ksize - 1;
    let mut pos = String::new();
    for ky in 0..ksize {
        pos += &match operands {
            Operands::Storage => format!(
                "    let sy{ky} = ty + {ky} - i32(KSIZE / 2u);\n    let row_in{ky} = sy{ky} >= 0 && sy{ky} < h;\n\
                 \x20   let iy{ky} = select(0, sy{ky} - i32(params.input_start), row_in{ky});\n"
            ),
            Operands::Texture => format!("    let iy{ky} = ty + {ky} + 1 - i32(KSIZE / 2u);\n"),
        };
    }
    for j in 0..positions {
        pos += &match operands {
            Operands::Storage => format!(
                "    let sx{j} = tx + {j} - i32(KSIZE / 2u);\n    let col_in{j} = sx{j} >= 0 && sx{j} < w;\n\
                 \x20   let ix{j} = select(0, sx{j} * i32(cin4), col_in{j});\n"
            ),
            Operands::Texture => format!("    let ix{j} = (tx + {j} + 1 - i32(KSIZE / 2u)) * i32(cin4);\n"),
        };
        if operands == Operands::Storage {
            for ky in 0..ksize {
                pos += &format!("    let v{ky}_{j} = select(0.0, 1.0, row_in{ky} && col_in{j});\n");
            }
        }
    }
    let mut inner = String::new();
    for ky in 0..ksize {
        for j in 0..positions {
            inner += &match operands {
                Operands::Storage => format!(
                    "        let x{ky}_{j} = input[u32(iy{ky}) * params.width * cin4 + u32(ix{j}) + c4] * v{ky}_{j};\n"
                ),
                Operands::Texture => {
                    format!("        let x{ky}_{j} = textureLoad(input, vec2<i32>(ix{j} + i32(c4), iy{ky}));\n")
                }
            };
        }
        for kx in 0..ksize {
            let tap = ky * ksize + kx;
            for r in 0..rows {
                let k = format!("min({r}u * SG + row_lane, CO_TILE - 1u)");
                inner += &match operands {
                    Operands::Storage => {
                        format!("        let w{tap}_{r} = weights[((co_base + {k}) * TAPS + {tap}u) * cin4 + c4];\n")
                    }
                    Operands::Texture => format!(
                        "        let w{tap}_{r} = textureLoad(weights, vec2<i32>(i32({tap}u * CO_TILE + {k}), i32(co_base / CO_TILE * cin4 + c4)));\n"
                    ),
                };
            }
            for co in 0..co_tile {
                let (r, i) = (co / sg, co % sg);
                inner += &format!("        let b{tap}_{co} = subgroupBroadcast(w{tap}_{r}, {i}u);\n");
                for p in 0..px {
                    let x = format!("x{ky}_{}", p + kx);
                    let a = format!("a{p}_{}.{}", co / 4, COMPONENTS[co % 4]);
                    let b = format!("b{tap}_{co}");
                    inner += &format!(
                        "        {a} = fma({x}.w, {b}.w, fma({x}.z, {b}.z, fma({x}.y, {b}.y, fma({x}.x, {b}.x, {a}))));\n"
                    );
                }
            }
        }
    }
    // Bias and output as vec4s (out_channels and co_base are multiples of 4), the bias loaded once
    // per invocation, not once per pixel: on lavapipe a store or a load from a buffer is a loop over
    // the lanes, one per scalar.
    let mut store = String::new();
    for c in 0..co_tile / 4 {
        store += &format!("    let bias{c} = bias[co_base / 4u + {c}u];\n");
    }
    for p in 0..px {
        store += &format!(
            "    if (live && tx + {p} < w) {{\n        let o = (((u32(ty) - params.output_start) * params.width + u32(tx) + {p}u) * params.out_channels + co_base) / 4u;\n"
        );
        for c in 0..co_tile / 4 {
            store += &format!(
                "        {{\n            var v = a{p}_{c} + bias{c};\n\
                 \x20           if (params.relu != 0u) {{ v = max(v, vec4<f32>(0.0)); }}\n\
                 \x20           if (params.accumulate != 0u) {{ v += output[o + {c}u]; }}\n\
                 \x20           output[o + {c}u] = v;\n        }}\n"
            );
        }
        store += "    }\n";
    }
    let (weights_binding, input_binding) = match operands {
        Operands::Storage => (
            "@group(0) @binding(1) var<storage, read> weights: array<vec4<f32>>;",
            "@group(0) @binding(3) var<storage, read> input: array<vec4<f32>>;",
        ),
        Operands::Texture => (
            "@group(0) @binding(1) var weights: texture_storage_2d<rgba32float, read>;",
            "@group(0) @binding(3) var input: texture_storage_2d<rgba32float, read>;",
        ),
    };
    TEMPLATE
        .replace("{{WEIGHTS_BINDING}}", weights_binding)
        .replace("{{INPUT_BINDING}}", input_binding)
        .replace("{{SG}}", &sg.to_string())
        .replace("{{KSIZE}}", &ksize.to_string())
        .replace("{{PX}}", &px.to_string())
        .replace("{{CO_TILE}}", &co_tile.to_string())
        .replace("{{ACC_DECL}}", decl.trim_end())
        .replace("{{POSITIONS}}", pos.trim_end())
        .replace("{{INNER}}", inner.trim_end())
        .replace("{{STORE}}", store.trim_end())
}

/// Tiles of [`PX`] consecutive pixels of one row of the band: an invocation's share.
fn tiles(p: &Conv3x3Params) -> usize {
    p.band_rows as usize * (p.width as usize).div_ceil(PX)
}

fn workgroups(p: &Conv3x3Params, co_tile: usize) -> u64 {
    (tiles(p).div_ceil(INVOCATIONS) * (p.out_channels as usize / co_tile)) as u64
}

/// Binding lengths of the 3x3 kernels for `p`'s band: its input with the halo rows, its output rows.
fn lens(p: &Conv3x3Params) -> Vec<u64> {
    [p.weights_len(), p.bias_len(), p.band_input_len(1), p.band_output_len()].map(|n| n as u64).to_vec()
}

const BINDINGS: &[crate::gpu::Binding] =
    &[read(1, "weights"), read(2, "bias"), read(3, "input"), read_write(4, "output")];
const TEXTURE_BINDINGS: &[crate::gpu::Binding] =
    &[texture(1, "weights"), read(2, "bias"), texture(3, "input"), read_write(4, "output")];

macro_rules! conv_kernel {
    ($name:ident, $tile:literal, $operands:expr, $bindings:expr, $doc:literal) => {
        #[doc = $doc]
        pub struct $name;

        impl Kernel for $name {
            type Params = Conv3x3Params;
            const ENTRY: EntryPoint = EntryPoint {
                shader: shader_name($tile, $operands),
                entry: "forward",
                workgroup_size: 64,
                params_bytes: std::mem::size_of::<Conv3x3Params>(),
                bindings: $bindings,
            };
            fn workgroups(p: &Conv3x3Params) -> u64 {
                workgroups(p, $tile)
            }
            fn binding_lens(p: &Conv3x3Params) -> Vec<u64> {
                lens(p)
            }
        }
    };
}

conv_kernel!(Forward16, 16, Operands::Storage, BINDINGS, "Storage operands, out_channels a multiple of 16.");
conv_kernel!(Forward4, 4, Operands::Storage, BINDINGS, "Storage operands, out_channels a multiple of 4.");
conv_kernel!(Forward16Tex, 16, Operands::Texture, TEXTURE_BINDINGS, "Texture operands, out_channels a multiple of 16.");
conv_kernel!(Forward4Tex, 4, Operands::Texture, TEXTURE_BINDINGS, "Texture operands, out_channels a multiple of 4.");

/// Size (width, height) of the map texture of a `height x width x channels` map (channels a
/// multiple of 4): the map with a zero border of one position on every side, texel
/// `((x + 1) * channels / 4 + c4, y + 1)` holding channels `4c4..4c4+3` of position `(y, x)`. The
/// fast conv reads its input from one, the fast Gram forward its features; the engine shares one
/// per shape.
pub fn map_texture_size(height: u32, width: u32, channels: u32) -> (u32, u32) {
    ((width + 2) * channels / 4, height + 2)
}

/// The copy of a channels-last `height x width x channels` map in `buffer` into the inside of its
/// map texture (the border stays as it was made: zero), as a planned command.
pub fn planned_map_copy<R>(buffer: R, texture: R, height: u32, width: u32, channels: u32) -> Planned<R> {
    let c4 = channels / 4;
    Planned::CopyToTexture { buffer, texture, origin: [c4, 1], extent: [width * c4, height] }
}

/// [`planned_map_copy`] as a command.
pub fn map_copy(buffer: &wgpu::Buffer, texture: &wgpu::Texture, height: u32, width: u32, channels: u32) -> Command {
    let Planned::CopyToTexture { origin, extent, .. } = planned_map_copy((), (), height, width, channels) else {
        unreachable!("planned_map_copy plans a copy to a texture")
    };
    Command::CopyToTexture { buffer: buffer.clone(), texture: texture.clone(), origin, extent }
}

/// Whether a map's rows suit a buffer-to-texture copy: a multiple of 256 bytes.
pub fn map_rows_copyable(width: u32, channels: u32) -> bool {
    (4 * width * channels).is_multiple_of(256)
}

/// Map texture size of a conv input.
pub fn input_texture_size(p: &Conv3x3Params) -> (u32, u32) {
    map_texture_size(p.height, p.width, p.in_channels)
}

/// Texture size (width, height) of conv weights for the output-channel tile of `p`
/// ([`tile_for`]): texel `(tap * tile + k, (co / tile) * in_channels / 4 + c4)` holds
/// `weights[co][tap][4c4..4c4+3]` for `co = tile * (co / tile) + k`.
pub fn weights_texture_size(p: &Conv3x3Params) -> (u32, u32) {
    let tile = tile_for(p).unwrap_or(4) as u32;
    (9 * tile, p.out_channels / tile * p.in_channels / 4)
}

/// `weights` (`[out][3][3][in]`) in the order of the weights texture ([`weights_texture_size`]).
pub fn weights_texture_data(p: &Conv3x3Params, weights: &[f32]) -> Vec<f32> {
    let tile = tile_for(p).unwrap_or(4);
    let (cin4, cout) = (p.in_channels as usize / 4, p.out_channels as usize);
    let mut out = vec![0.0; weights.len()];
    for co in 0..cout {
        for tap in 0..9 {
            for c4 in 0..cin4 {
                let texel = ((co / tile) * cin4 + c4) * 9 * tile + tap * tile + co % tile;
                let from = (co * 9 + tap) * cin4 + c4;
                out[4 * texel..4 * texel + 4].copy_from_slice(&weights[4 * from..4 * from + 4]);
            }
        }
    }
    out
}

/// The weights texture of a conv pass, made and filled.
pub fn weights_texture(gpu: &crate::gpu::Gpu, label: &str, p: &Conv3x3Params, weights: &[f32]) -> wgpu::Texture {
    let texture = create_texture(gpu, label, weights_texture_size(p));
    write_texture(gpu, &texture, &weights_texture_data(p, weights));
    texture
}

/// Whether the texture kernels can run `p` on a device whose 2D textures are at most `max_dim`
/// texels wide: both textures fit, and the input's rows suit a buffer-to-texture copy.
pub fn textures_fit(p: &Conv3x3Params, max_dim: u32) -> bool {
    let (iw, ih) = input_texture_size(p);
    let (ww, wh) = weights_texture_size(p);
    p.in_channels.is_multiple_of(4)
        && iw.max(ih).max(ww).max(wh) <= max_dim
        && map_rows_copyable(p.width, p.in_channels)
}

/// An rgba32float texture for the texture kernels, filled by copies or [`write_texture`].
pub fn create_texture(gpu: &crate::gpu::Gpu, label: &str, (width, height): (u32, u32)) -> wgpu::Texture {
    gpu.device.create_texture(&wgpu::TextureDescriptor {
        label: Some(label),
        size: wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Float,
        usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    })
}

/// Writes `data` (rows of `width * 4` floats) into a texture made by [`create_texture`].
pub fn write_texture(gpu: &crate::gpu::Gpu, texture: &wgpu::Texture, data: &[f32]) {
    gpu.queue.write_texture(
        texture.as_image_copy(),
        bytemuck::cast_slice(data),
        wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(16 * texture.width()), rows_per_image: None },
        texture.size(),
    );
}

/// Whether `library` built the texture variants (it does when the adapter has subgroups).
pub fn texture_kernels_built(library: &crate::gpu::KernelLibrary) -> bool {
    library.has::<Forward16Tex>() && library.has::<Forward4Tex>() && library.has::<Pointwise32Tex>()
}

/// The texture kernel for `p`'s output-channel tile: 16 where it divides, else 4.
pub fn textured_kernel(p: &Conv3x3Params) -> KernelRef {
    match tile_for(p) {
        Some(16) => KernelRef::of::<Forward16Tex>(),
        _ => KernelRef::of::<Forward4Tex>(),
    }
}

/// The storage-operand subgroup kernel for `p`'s output-channel tile, if the shape suits one.
pub fn storage_kernel(p: &Conv3x3Params) -> Option<KernelRef> {
    match tile_for(p) {
        Some(16) => Some(KernelRef::of::<Forward16>()),
        Some(4) => Some(KernelRef::of::<Forward4>()),
        _ => None,
    }
}

/// A conv pass with texture operands as planned commands: the copy of `input` (a buffer) into
/// `input_texture` (its map texture, [`input_texture_size`]), then [`textured_kernel`] on
/// `[weights texture, bias, input texture, output]`.
pub fn textured_plan<R: Clone>(
    p: &Conv3x3Params,
    [weights, bias, input, input_texture, output]: [R; 5],
) -> Vec<Planned<R>> {
    let copy = planned_map_copy(input, input_texture.clone(), p.height, p.width, p.in_channels);
    let kernel = textured_kernel(p);
    let params = bytemuck::bytes_of(p).to_vec();
    vec![copy, Planned::Dispatch { kernel, params, operands: vec![weights, bias, input_texture, output] }]
}

/// [`textured_kernel`] bound to `[weights texture, bias, input texture, output]`; returns the step
/// and the kernel's name.
pub fn bind_textured(
    gpu: &crate::gpu::Gpu,
    library: &crate::gpu::KernelLibrary,
    p: &Conv3x3Params,
    resources: &[crate::gpu::Resource; 4],
) -> crate::Result<(crate::gpu::Step, String)> {
    let kernel = textured_kernel(p);
    let planned = Planned::Dispatch { kernel, params: bytemuck::bytes_of(p).to_vec(), operands: resources.to_vec() };
    match crate::gpu::bind_planned(gpu, library, &planned)? {
        Command::Dispatch(step) => Ok((step, kernel.entry.name())),
        _ => unreachable!("a planned dispatch binds to a dispatch"),
    }
}

/// The largest tile of [`CO_TILES`] that divides `out_channels`, if the shape suits the kernel.
pub fn tile_for(p: &Conv3x3Params) -> Option<usize> {
    if !p.in_channels.is_multiple_of(4) {
        return None;
    }
    CO_TILES.into_iter().find(|t| (p.out_channels as usize).is_multiple_of(*t))
}

/// The weights of the input gradient: `w'[ci][ky][kx][co] = w[co][2 - ky][2 - kx][ci]`, so that
/// `backward_input(w) = forward(w')` with in and out channels swapped and no bias.
pub fn transpose_weights<T: Real>(in_channels: usize, out_channels: usize, weights: &[T]) -> Vec<T> {
    let mut out = vec![T::zero(); weights.len()];
    for co in 0..out_channels {
        for ky in 0..3 {
            for kx in 0..3 {
                for ci in 0..in_channels {
                    out[((ci * 3 + (2 - ky)) * 3 + (2 - kx)) * out_channels + co] =
                        weights[((co * 3 + ky) * 3 + kx) * in_channels + ci];
                }
            }
        }
    }
    out
}

/// `conv1x1_subgroup_co32.forward`: the pointwise conv (`output[p, co] (= or +=) act(bias[co] +
/// sum_ci input[p, ci] * weights[co, ci])`), storage operands, out_channels a multiple of 32. The
/// engine runs the Gram backward with it. Params as for the 3x3 conv; weights `[out][in]`.
pub struct Pointwise32;

impl Kernel for Pointwise32 {
    type Params = Conv3x3Params;
    const ENTRY: EntryPoint = EntryPoint {
        shader: shader_name(1, Operands::Storage),
        entry: "forward",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<Conv3x3Params>(),
        bindings: BINDINGS,
    };
    fn workgroups(p: &Conv3x3Params) -> u64 {
        workgroups(p, 32)
    }
    fn binding_lens(p: &Conv3x3Params) -> Vec<u64> {
        let weights = p.out_channels as usize * p.in_channels as usize;
        [weights, p.bias_len(), p.band_input_len(0), p.band_output_len()].map(|n| n as u64).to_vec()
    }
}

/// `conv1x1_subgroup_tex_co32.forward`: [`Pointwise32`] reading its input from the map's map texture
/// ([`map_texture_size`]) and its weights from a texture of `gram::tiled_weights_texture_size`
/// (`gram.symmetrize_tiled`'s order, moved in by a copy), out_channels a multiple of 32. The
/// engine runs the Gram backward with it where the textures fit.
pub struct Pointwise32Tex;

impl Kernel for Pointwise32Tex {
    type Params = Conv3x3Params;
    const ENTRY: EntryPoint = EntryPoint {
        shader: shader_name(1, Operands::Texture),
        entry: "forward",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<Conv3x3Params>(),
        bindings: TEXTURE_BINDINGS,
    };
    fn workgroups(p: &Conv3x3Params) -> u64 {
        workgroups(p, 32)
    }
    fn binding_lens(p: &Conv3x3Params) -> Vec<u64> {
        Pointwise32::binding_lens(p)
    }
}

/// Whether [`Pointwise32Tex`] can run `p` on a device whose 2D textures are at most `max_dim` texels
/// a side: the map texture and the weights texture fit, and the map's rows suit a copy.
pub fn pointwise_textures_fit(p: &Conv3x3Params, max_dim: u32) -> bool {
    let (mw, mh) = map_texture_size(p.height, p.width, p.in_channels);
    let (ww, wh) = crate::ops::gram::tiled_weights_texture_size(p.in_channels as usize);
    p.in_channels.is_multiple_of(32)
        && p.in_channels == p.out_channels
        && mw.max(mh).max(ww).max(wh) <= max_dim
        && map_rows_copyable(p.width, p.in_channels)
}
