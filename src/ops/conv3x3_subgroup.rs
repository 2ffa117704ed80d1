//! The fast 3x3 convolution with subgroup broadcasts, and its use as the input gradient with
//! flipped, transposed weights. GPU: `shaders/conv3x3_subgroup.wgsl.tmpl`, instantiated per adapter.
//! CPU twin: [`conv3x3::forward`](super::conv3x3::forward) (and `backward_input` through
//! [`transpose_weights`]), which this kernel must match.

use super::conv3x3::Conv3x3Params;
use crate::gpu::kernel::{read, read_write, EntryPoint, Kernel};
use crate::Real;

/// The template, with `{{SG}}`, `{{CO_TILE}}`, `{{ACC_DECL}}`, `{{INNER}}` and `{{STORE}}` holes.
pub const TEMPLATE: &str = include_str!("../../shaders/conv3x3_subgroup.wgsl.tmpl");

/// Pixels per workgroup (64 invocations x 4 pixels).
pub const PIXELS_PER_GROUP: usize = 256;

/// Output-channel tiles nst instantiates: 32 for VGG's layers, 4 for the gradient into the image.
pub const CO_TILES: [usize; 2] = [32, 4];

/// The shader name of the instantiation with output-channel tile `co_tile`.
pub const fn shader_name(co_tile: usize) -> &'static str {
    match co_tile {
        32 => "conv3x3_subgroup_co32",
        4 => "conv3x3_subgroup_co4",
        _ => panic!("no such conv3x3_subgroup tile"),
    }
}

const COMPONENTS: [&str; 4] = ["x", "y", "z", "w"];

/// The WGSL of the kernel for subgroup size `sg` (broadcasts use lanes 0..sg) and tile `co_tile`.
pub fn instantiate(sg: usize, co_tile: usize) -> String {
    assert!(sg >= 1 && co_tile % 4 == 0, "co_tile must be a multiple of 4");
    let rows = co_tile.div_ceil(sg);
    let mut decl = String::new();
    for p in 0..4 {
        for c in 0..co_tile / 4 {
            decl += &format!("    var a{p}_{c} = vec4<f32>(0.0);\n");
        }
    }
    let mut inner = String::new();
    for r in 0..rows {
        inner += &format!(
            "            let w{r} = weights[((co_base + min({r}u * SG + row_lane, CO_TILE - 1u)) * 9u + tap) * cin4 + c4];\n"
        );
    }
    for co in 0..co_tile {
        let (r, i) = (co / sg, co % sg);
        inner += &format!("            let b{co} = subgroupBroadcast(w{r}, {i}u);\n");
        for p in 0..4 {
            inner += &format!("            a{p}_{}.{} += dot(x{p}, b{co});\n", co / 4, COMPONENTS[co % 4]);
        }
    }
    let mut store = String::new();
    for p in 0..4 {
        store += &format!(
            "    if (pixel0 + {p}u < pixels) {{\n        let o = (pixel0 + {p}u) * params.out_channels + co_base;\n"
        );
        for c in 0..co_tile / 4 {
            store += &format!(
                "        {{\n            var v = a{p}_{c} + vec4<f32>(bias[co_base + {b}u], bias[co_base + {b1}u], bias[co_base + {b2}u], bias[co_base + {b3}u]);\n\
                 \x20           if (params.relu != 0u) {{ v = max(v, vec4<f32>(0.0)); }}\n\
                 \x20           if (params.accumulate != 0u) {{ v += vec4<f32>(output[o + {b}u], output[o + {b1}u], output[o + {b2}u], output[o + {b3}u]); }}\n\
                 \x20           output[o + {b}u] = v.x; output[o + {b1}u] = v.y; output[o + {b2}u] = v.z; output[o + {b3}u] = v.w;\n        }}\n",
                b = 4 * c,
                b1 = 4 * c + 1,
                b2 = 4 * c + 2,
                b3 = 4 * c + 3
            );
        }
        store += "    }\n";
    }
    TEMPLATE
        .replace("{{SG}}", &sg.to_string())
        .replace("{{CO_TILE}}", &co_tile.to_string())
        .replace("{{ACC_DECL}}", decl.trim_end())
        .replace("{{INNER}}", inner.trim_end())
        .replace("{{STORE}}", store.trim_end())
}

fn workgroups(p: &Conv3x3Params, co_tile: usize) -> u64 {
    (p.pixels().div_ceil(PIXELS_PER_GROUP) * (p.out_channels as usize / co_tile)) as u64
}

fn lens(p: &Conv3x3Params) -> Vec<u64> {
    [p.weights_len(), p.bias_len(), p.input_len(), p.output_len()].map(|n| n as u64).to_vec()
}

const BINDINGS: &[crate::gpu::Binding] =
    &[read(1, "weights"), read(2, "bias"), read(3, "input"), read_write(4, "output")];

/// `conv3x3_subgroup_co32.forward`: for out_channels a multiple of 32.
pub struct Forward32;

impl Kernel for Forward32 {
    type Params = Conv3x3Params;
    const ENTRY: EntryPoint = EntryPoint {
        shader: shader_name(32),
        entry: "forward",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<Conv3x3Params>(),
        bindings: BINDINGS,
    };
    fn workgroups(p: &Conv3x3Params) -> u64 {
        workgroups(p, 32)
    }
    fn binding_lens(p: &Conv3x3Params) -> Vec<u64> {
        lens(p)
    }
}

/// `conv3x3_subgroup_co4.forward`: for out_channels a multiple of 4.
pub struct Forward4;

impl Kernel for Forward4 {
    type Params = Conv3x3Params;
    const ENTRY: EntryPoint = EntryPoint {
        shader: shader_name(4),
        entry: "forward",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<Conv3x3Params>(),
        bindings: BINDINGS,
    };
    fn workgroups(p: &Conv3x3Params) -> u64 {
        workgroups(p, 4)
    }
    fn binding_lens(p: &Conv3x3Params) -> Vec<u64> {
        lens(p)
    }
}

/// The largest tile of [`CO_TILES`] that divides `out_channels`, if the shape suits the kernel.
pub fn tile_for(p: &Conv3x3Params) -> Option<usize> {
    if p.in_channels % 4 != 0 {
        return None;
    }
    CO_TILES.into_iter().find(|t| p.out_channels as usize % t == 0)
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
