//! Winograd convolution F(m x m, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016), m = 2 or 4: the 3x3 conv of `conv3x3` (stride 1, zero padding 1, bias,
//! optional fused ReLU, `=` or `+=`) in three kernels.
//!
//! The output map is cut into tiles of m x m pixels; tile (ty, tx) reads the alpha x alpha inputs
//! (alpha = m + 2) from map row ty * m - 1 and column tx * m - 1, zero outside the map. With the
//! transform matrices Bᵀ (alpha x alpha), G (alpha x 3) and Aᵀ (m x alpha) of [`Transform`]:
//!
//! ```text
//! V[t][tile][ci] = (Bᵀ d[tile][ci] B)[t]                 input transform   (shaders/winograd.wgsl.tmpl)
//! U[t][co][ci]   = (G w[co][ci] Gᵀ)[t]                   weight transform  (CPU, once, at load: weights are frozen)
//! M[t][tile][co] = sum_ci V[t][tile][ci] * U[t][co][ci]   alpha² independent products (shaders/winograd_gemm.wgsl.tmpl)
//! y[tile][co]    = act(bias[co] + (Aᵀ M[tile][co] A))      output transform  (shaders/winograd.wgsl.tmpl)
//! ```
//!
//! for t = 0..alpha² over the alpha x alpha positions, row by row. A 3x3 conv costs 9 multiply-adds
//! per output, input channel and output channel; the products cost alpha² / m², 4 for F(2x2)
//! (2.25x fewer) and 36 / 16 for F(4x4) (4x fewer). The input gradient is this conv run with flipped,
//! transposed weights (`conv3x3_subgroup::transpose_weights`), so it needs only its own U.
//!
//! Bands: the fields of [`Conv3x3Params`] carry over. A dispatch computes map rows `band_start..
//! band_start + band_rows` (`band_start` a multiple of m), reading its input binding from map row
//! `input_start` and writing its output binding from map row `output_start`; V and M hold the
//! band's tiles only, so a map of any size runs through scratch buffers that fit one binding.
//!
//! Rounding: see [`rounding_bound`], the a-priori bound the tests hold every kernel to.

use bytemuck::{Pod, Zeroable};

use super::conv3x3::Conv3x3Params;
use super::store;
use crate::gpu::kernel::{groups_for, read, read_write, texture, EntryPoint, Kernel};
use crate::gpu::Planned;
use crate::Real;

/// The transform matrices of F(m x m, 3x3), row-major.
#[derive(Clone, Copy, Debug)]
pub struct Transform {
    /// Output tile side m.
    pub m: usize,
    /// Bᵀ, alpha x alpha.
    pub bt: &'static [f64],
    /// G, alpha x 3.
    pub g: &'static [f64],
    /// Aᵀ, m x alpha.
    pub at: &'static [f64],
}

impl Transform {
    /// Input tile side: m + 2.
    pub const fn alpha(&self) -> usize {
        self.m + 2
    }
    /// Positions of a transformed tile: alpha².
    pub const fn points(&self) -> usize {
        self.alpha() * self.alpha()
    }
}

/// F(2x2, 3x3), interpolation points 0, 1, -1 and infinity.
pub const F2: Transform = Transform {
    m: 2,
    #[rustfmt::skip]
    bt: &[
        1.0, 0.0, -1.0, 0.0,
        0.0, 1.0, 1.0, 0.0,
        0.0, -1.0, 1.0, 0.0,
        0.0, 1.0, 0.0, -1.0,
    ],
    #[rustfmt::skip]
    g: &[
        1.0, 0.0, 0.0,
        0.5, 0.5, 0.5,
        0.5, -0.5, 0.5,
        0.0, 0.0, 1.0,
    ],
    #[rustfmt::skip]
    at: &[
        1.0, 1.0, 1.0, 0.0,
        0.0, 1.0, -1.0, -1.0,
    ],
};

/// F(4x4, 3x3), interpolation points 0, 1, -1, 2, -2 and infinity.
pub const F4: Transform = Transform {
    m: 4,
    #[rustfmt::skip]
    bt: &[
        4.0, 0.0, -5.0, 0.0, 1.0, 0.0,
        0.0, -4.0, -4.0, 1.0, 1.0, 0.0,
        0.0, 4.0, -4.0, -1.0, 1.0, 0.0,
        0.0, -2.0, -1.0, 2.0, 1.0, 0.0,
        0.0, 2.0, -1.0, -2.0, 1.0, 0.0,
        0.0, 4.0, 0.0, -5.0, 0.0, 1.0,
    ],
    #[rustfmt::skip]
    g: &[
        1.0 / 4.0, 0.0, 0.0,
        -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0,
        -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0,
        1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0,
        1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0,
        0.0, 0.0, 1.0,
    ],
    #[rustfmt::skip]
    at: &[
        1.0, 1.0, 1.0, 1.0, 1.0, 0.0,
        0.0, 1.0, -1.0, 2.0, -2.0, 0.0,
        0.0, 1.0, 1.0, 4.0, 4.0, 0.0,
        0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
    ],
};

/// The transform of tile side `m` (2 or 4).
pub fn transform(m: usize) -> &'static Transform {
    match m {
        2 => &F2,
        4 => &F4,
        _ => panic!("no Winograd transform F({m}x{m}, 3x3)"),
    }
}

/// Params of the three Winograd kernels: a [`Conv3x3Params`] (shape, ReLU, `+=`, band) and the tile.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct WinogradParams {
    pub height: u32,
    pub width: u32,
    pub in_channels: u32,
    pub out_channels: u32,
    pub relu: u32,
    pub accumulate: u32,
    pub band_start: u32,
    pub band_rows: u32,
    pub input_start: u32,
    pub output_start: u32,
    /// Output tile side m: 2 or 4.
    pub tile: u32,
    /// Tiles per row of the map: width / m, rounded up.
    pub tiles_x: u32,
}

impl WinogradParams {
    /// The conv `conv` (with its band, which must start at a multiple of `tile`) in tiles of `tile`.
    pub fn new(conv: &Conv3x3Params, tile: usize) -> Self {
        debug_assert!(tile == 2 || tile == 4, "tile {tile}");
        debug_assert!((conv.band_start as usize).is_multiple_of(tile), "band at row {}", conv.band_start);
        WinogradParams {
            height: conv.height,
            width: conv.width,
            in_channels: conv.in_channels,
            out_channels: conv.out_channels,
            relu: conv.relu,
            accumulate: conv.accumulate,
            band_start: conv.band_start,
            band_rows: conv.band_rows,
            input_start: conv.input_start,
            output_start: conv.output_start,
            tile: tile as u32,
            tiles_x: (conv.width as usize).div_ceil(tile) as u32,
        }
    }
    /// The conv these params compute.
    pub fn conv(&self) -> Conv3x3Params {
        Conv3x3Params {
            height: self.height,
            width: self.width,
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            relu: self.relu,
            accumulate: self.accumulate,
            band_start: self.band_start,
            band_rows: self.band_rows,
            input_start: self.input_start,
            output_start: self.output_start,
        }
    }
    pub fn transform(&self) -> &'static Transform {
        transform(self.tile as usize)
    }
    /// alpha²: the independent products.
    pub fn points(&self) -> usize {
        self.transform().points()
    }
    /// Rows of tiles in the band.
    pub fn tile_rows(&self) -> usize {
        (self.band_rows as usize).div_ceil(self.tile as usize)
    }
    /// Tiles in the band.
    pub fn tiles(&self) -> usize {
        self.tile_rows() * self.tiles_x as usize
    }
    /// Elements of V, the band's transformed input: `[points][tiles][in_channels]`.
    pub fn transformed_input_len(&self) -> usize {
        self.points() * self.tiles() * self.in_channels as usize
    }
    /// Elements of M, the band's products: `[points][tiles][out_channels]`.
    pub fn product_len(&self) -> usize {
        self.points() * self.tiles() * self.out_channels as usize
    }
    /// Elements of U, the transformed weights: `[points][out_channels][in_channels]`.
    pub fn transformed_weights_len(&self) -> usize {
        transformed_weights_len(self.tile as usize, self.in_channels as usize, self.out_channels as usize)
    }
    /// Floating-point operations the products really do (multiply-adds count 2), for the band.
    pub fn product_flops(&self) -> u64 {
        2 * self.points() as u64 * self.tiles() as u64 * self.in_channels as u64 * self.out_channels as u64
    }
}

/// Elements of the transformed weights of a conv `in_channels -> out_channels` in tiles of `tile`.
pub fn transformed_weights_len(tile: usize, in_channels: usize, out_channels: usize) -> usize {
    transform(tile).points() * out_channels * in_channels
}

/// `U[t][co][ci] = (G w[co][ci] Gᵀ)[t]` for weights `[out][3][3][in]`, computed in f64 and rounded
/// once.
pub fn transform_weights<T: Real>(tile: usize, in_channels: usize, out_channels: usize, weights: &[T]) -> Vec<T> {
    let tr = transform(tile);
    let a = tr.alpha();
    let mut u = vec![T::zero(); transformed_weights_len(tile, in_channels, out_channels)];
    for co in 0..out_channels {
        for ci in 0..in_channels {
            let g = |ky: usize, kx: usize| weights[((co * 3 + ky) * 3 + kx) * in_channels + ci].to_f64();
            for i in 0..a {
                for j in 0..a {
                    let mut s = 0.0;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            s += tr.g[i * 3 + ky] * g(ky, kx) * tr.g[j * 3 + kx];
                        }
                    }
                    u[((i * a + j) * out_channels + co) * in_channels + ci] = T::from_f64(s);
                }
            }
        }
    }
    u
}

/// The input tile of `tile` (index in the band) and channel `ci`: `d[i][j]` = input at map row
/// `band_start + ty * m - 1 + i`, column `tx * m - 1 + j`, zero outside the map.
fn input_tile<T: Real>(p: &WinogradParams, input: &[T], tile: usize, ci: usize) -> Vec<T> {
    let (m, a) = (p.tile as i64, p.transform().alpha());
    let (h, w, cin) = (p.height as i64, p.width as i64, p.in_channels as usize);
    let ty = (tile / p.tiles_x as usize) as i64;
    let tx = (tile % p.tiles_x as usize) as i64;
    let (y0, x0) = (p.band_start as i64 + ty * m - 1, tx * m - 1);
    let mut d = vec![T::zero(); a * a];
    for i in 0..a {
        for j in 0..a {
            let (y, x) = (y0 + i as i64, x0 + j as i64);
            if y >= 0 && y < h && x >= 0 && x < w {
                d[i * a + j] = input[((y - p.input_start as i64) * w + x) as usize * cin + ci];
            }
        }
    }
    d
}

/// `c = l d r` for an `rows x k` matrix `l`, a `k x k` matrix `d` and a `k x cols` matrix `r` given
/// transposed (`rt`, `cols x k`), in plain loops: `l d` first, then times `r`.
fn sandwich<T: Real>(l: &[f64], d: &[T], rt: &[f64], rows: usize, k: usize, cols: usize) -> Vec<T> {
    let mut ld = vec![T::zero(); rows * k];
    for i in 0..rows {
        for j in 0..k {
            let mut s = T::zero();
            for q in 0..k {
                s += T::from_f64(l[i * k + q]) * d[q * k + j];
            }
            ld[i * k + j] = s;
        }
    }
    let mut c = vec![T::zero(); rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            let mut s = T::zero();
            for q in 0..k {
                s += ld[i * k + q] * T::from_f64(rt[j * k + q]);
            }
            c[i * cols + j] = s;
        }
    }
    c
}

/// CPU twin of `winograd_fM.input_transform`: V of `p`'s band.
pub fn input_transform<T: Real>(p: &WinogradParams, input: &[T], v: &mut [T]) {
    let (tr, tiles, cin) = (p.transform(), p.tiles(), p.in_channels as usize);
    let a = tr.alpha();
    for tile in 0..tiles {
        for ci in 0..cin {
            let d = input_tile(p, input, tile, ci);
            let bd = sandwich(tr.bt, &d, tr.bt, a, a, a);
            for (t, x) in bd.into_iter().enumerate() {
                v[(t * tiles + tile) * cin + ci] = x;
            }
        }
    }
}

/// CPU twin of `winograd_gemm.forward`: `M[t][tile][co] = sum_ci V[t][tile][ci] * U[t][co][ci]`.
pub fn products<T: Real>(p: &WinogradParams, u: &[T], v: &[T], product: &mut [T]) {
    let (tiles, cin, cout) = (p.tiles(), p.in_channels as usize, p.out_channels as usize);
    for t in 0..p.points() {
        for tile in 0..tiles {
            for co in 0..cout {
                let mut s = T::zero();
                for ci in 0..cin {
                    s += v[(t * tiles + tile) * cin + ci] * u[(t * cout + co) * cin + ci];
                }
                product[(t * tiles + tile) * cout + co] = s;
            }
        }
    }
}

/// CPU twin of `winograd_fM.output_transform`: `act(bias + Aᵀ M A)` into the band's output rows
/// (`=` or `+=`), pixels past the map's right edge or the band's last row left alone. With a
/// `mask` (laid out as the output), the twin of `output_transform_masked`: each written value
/// (the sum, when accumulating) is zeroed where the mask is not positive.
pub fn output_transform<T: Real>(p: &WinogradParams, product: &[T], bias: &[T], output: &mut [T], mask: Option<&[T]>) {
    let (tr, tiles, cout) = (p.transform(), p.tiles(), p.out_channels as usize);
    let (m, a) = (tr.m, tr.alpha());
    let end = (p.band_start + p.band_rows) as usize;
    for tile in 0..tiles {
        let (ty, tx) = (tile / p.tiles_x as usize, tile % p.tiles_x as usize);
        for co in 0..cout {
            let mm: Vec<T> = (0..a * a).map(|t| product[(t * tiles + tile) * cout + co]).collect();
            let y = sandwich(tr.at, &mm, tr.at, m, a, m);
            for i in 0..m {
                for j in 0..m {
                    let (row, col) = (p.band_start as usize + ty * m + i, tx * m + j);
                    if row >= end || col >= p.width as usize {
                        continue;
                    }
                    let mut v = y[i * m + j] + bias[co];
                    if p.relu != 0 {
                        v = v.max(T::zero());
                    }
                    let o = ((row - p.output_start as usize) * p.width as usize + col) * cout + co;
                    store(&mut output[o], v, p.accumulate);
                    if mask.is_some_and(|mask| !super::relu_passes(mask[o])) {
                        output[o] = T::zero();
                    }
                }
            }
        }
    }
}

/// The three twins in order: the Winograd conv of `p`'s band with transformed weights `u`.
pub fn forward<T: Real>(p: &WinogradParams, u: &[T], bias: &[T], input: &[T], output: &mut [T]) {
    let mut v = vec![T::zero(); p.transformed_input_len()];
    let mut product = vec![T::zero(); p.product_len()];
    input_transform(p, input, &mut v);
    products(p, u, &v, &mut product);
    output_transform(p, &product, bias, output, None);
}

/// The unit roundoff of f32.
pub const F32_UNIT_ROUNDOFF: f64 = 1.0 / (1u64 << 24) as f64;

/// Roundings on the longest path from an input to an output of the f32 Winograd conv with
/// `in_channels` inputs: the input transform's two passes (a multiply and alpha - 1 adds each),
/// the weights' one rounding, the products (a multiply and `in_channels` adds, fused or not), the
/// output transform's two passes, the bias and the `+=`.
pub fn rounding_steps(tile: usize, in_channels: usize) -> usize {
    let a = transform(tile).alpha();
    2 * a + 1 + (in_channels + 1) + 2 * a + 2
}

/// The a-priori bound on `|y - y_exact|` of every output of the f32 Winograd conv of `p` on
/// `input` with `weights` (`[out][3][3][in]`, untransformed) and `bias`, where `y_exact` is the conv
/// in exact arithmetic of the same f32 inputs.
///
/// Derivation (standard forward error analysis, Higham, "Accuracy and Stability of Numerical
/// Algorithms", ch. 3): expanding the three stages, every output is a sum of terms
/// `Aᵀ[i][k] Aᵀ[j][l] U[kl][co][ci] Bᵀ[k][q] Bᵀ[l][r] d[q][r][ci]` plus the bias (and the previous
/// value with `+=`). Each term passes through at most `n` = [`rounding_steps`] roundings, each a
/// relative error of at most u = 2^-24, so the computed output is off by at most
/// `γ_n = n u / (1 - n u)` times the same sum with every factor replaced by its absolute value:
///
/// `|y - y_exact| <= γ_n (sum_ci sum_kl |Aᵀ[i][k] Aᵀ[j][l]| |U[kl][co][ci]| (|Bᵀ| |d[ci]| |B|)[kl] + |bias| + |y_before|)`
///
/// with U the exactly transformed weights. The bound grows with the transforms' coefficients (up
/// to 8 in F(4x4)'s Aᵀ, 5 in its Bᵀ) and with cancellation, which is why F(4x4) is less accurate
/// than F(2x2), and both less than the direct conv (whose bound is `γ_{9 cin + 2}` times
/// `sum |w| |x| + |bias|`). Returns one bound per element of the band's output binding.
pub fn rounding_bound(p: &WinogradParams, weights: &[f32], bias: &[f32], input: &[f32], before: &[f32]) -> Vec<f64> {
    let tr = p.transform();
    let (m, a, tiles) = (tr.m, tr.alpha(), p.tiles());
    let (cin, cout) = (p.in_channels as usize, p.out_channels as usize);
    let n = rounding_steps(m, cin) as f64;
    let gamma = n * F32_UNIT_ROUNDOFF / (1.0 - n * F32_UNIT_ROUNDOFF);
    let w64: Vec<f64> = weights.iter().map(|&x| x as f64).collect();
    let u = transform_weights(m, cin, cout, &w64);
    let abs = |xs: &[f64]| xs.iter().map(|x| x.abs()).collect::<Vec<f64>>();
    let (bt_abs, at_abs) = (abs(tr.bt), abs(tr.at));
    let input64: Vec<f64> = input.iter().map(|&x| x as f64).collect();
    let mut bound = vec![0.0; p.conv().band_output_len()];
    let end = (p.band_start + p.band_rows) as usize;
    for tile in 0..tiles {
        // |Bᵀ| |d| |B| for every input channel of the tile.
        let vabs: Vec<Vec<f64>> =
            (0..cin).map(|ci| sandwich(&bt_abs, &abs(&input_tile(p, &input64, tile, ci)), &bt_abs, a, a, a)).collect();
        let (ty, tx) = (tile / p.tiles_x as usize, tile % p.tiles_x as usize);
        for co in 0..cout {
            let mut mabs = vec![0.0; a * a];
            for (t, s) in mabs.iter_mut().enumerate() {
                for (ci, v) in vabs.iter().enumerate() {
                    *s += u[(t * cout + co) * cin + ci].abs() * v[t];
                }
            }
            let yabs = sandwich(&at_abs, &mabs, &at_abs, m, a, m);
            for i in 0..m {
                for j in 0..m {
                    let (row, col) = (p.band_start as usize + ty * m + i, tx * m + j);
                    if row >= end || col >= p.width as usize {
                        continue;
                    }
                    let o = ((row - p.output_start as usize) * p.width as usize + col) * cout + co;
                    let prior = if p.accumulate != 0 { (before[o] as f64).abs() } else { 0.0 };
                    bound[o] = gamma * (yabs[i * m + j] + (bias[co] as f64).abs() + prior);
                }
            }
        }
    }
    bound
}

// ---- The GPU kernels -------------------------------------------------------------------------

pub use super::conv3x3_subgroup::Operands;

/// The transforms' template (`{{M}}` and the generated transform code).
pub const TRANSFORMS_TEMPLATE: &str = include_str!("../../shaders/winograd.wgsl.tmpl");
/// The products' template.
pub const GEMM_TEMPLATE: &str = include_str!("../../shaders/winograd_gemm.wgsl.tmpl");

/// The shader name of the transforms of tile `m`.
pub const fn transforms_shader(m: usize) -> &'static str {
    match m {
        2 => "winograd_f2",
        4 => "winograd_f4",
        _ => panic!("no such Winograd tile"),
    }
}

/// `sum_q coeffs[q] * terms[q]` as WGSL, zero coefficients left out and ±1 written as a sign.
fn combination(coeffs: &[f64], terms: &[String]) -> String {
    let mut out = String::new();
    for (c, t) in coeffs.iter().zip(terms) {
        if *c == 0.0 {
            continue;
        }
        let sign = if *c < 0.0 { "-" } else { "+" };
        let mag = c.abs();
        let term = if mag == 1.0 { t.clone() } else { format!("{mag:?} * {t}") };
        out += &match out.is_empty() {
            true if *c < 0.0 => format!("-{term}"),
            true => term,
            false => format!(" {sign} {term}"),
        };
    }
    if out.is_empty() {
        "vec4<f32>(0.0)".into()
    } else {
        out
    }
}

/// The WGSL of the transforms of tile `m`: `input_transform` (and `input_transform_map`) and
/// `output_transform` (and `output_transform_masked`), their arithmetic unrolled from the matrices
/// of [`transform`].
pub fn instantiate_transforms(m: usize) -> String {
    let tr = transform(m);
    let a = tr.alpha();
    let mut load = String::new();
    for i in 0..a {
        for j in 0..a {
            load += &format!("    let d{i}_{j} = load_input(y0 + {i}, x0 + {j}, c4, cin4);\n");
        }
    }
    // Bᵀ d: rows r{i}_{j} = sum_q Bᵀ[i][q] d[q][j]; then (Bᵀ d) B: v = sum_q r[i][q] Bᵀ[j][q].
    let mut input = String::new();
    for i in 0..a {
        for j in 0..a {
            let terms: Vec<String> = (0..a).map(|q| format!("d{q}_{j}")).collect();
            input += &format!("    let r{i}_{j} = {};\n", combination(&tr.bt[i * a..(i + 1) * a], &terms));
        }
    }
    for i in 0..a {
        for j in 0..a {
            let terms: Vec<String> = (0..a).map(|q| format!("r{i}_{q}")).collect();
            input += &format!(
                "    store_transformed({}u, tile, tiles, c4, cin4, {});\n",
                i * a + j,
                combination(&tr.bt[j * a..(j + 1) * a], &terms)
            );
        }
    }
    // The same entry reading the map texture.
    let map_entry = format!(
        "\n@group(0) @binding(1) var map: texture_storage_2d<rgba32float, read>;\n\n\
             fn load_map(y: i32, x: i32, c4: u32, cin4: u32) -> vec4<f32> {{\n\
             \x20   // The border holds the zero padding at -1 and at height / width; tiles past the map\n\
             \x20   // read further, which is zero too.\n\
             \x20   if (y > i32(params.height) || x > i32(params.width)) {{\n        return vec4<f32>(0.0);\n    }}\n\
             \x20   return textureLoad(map, vec2<i32>((x + 1) * i32(cin4) + i32(c4), y + 1));\n}}\n\n\
             @compute @workgroup_size(64)\n\
             fn input_transform_map(\n\
             \x20   @builtin(workgroup_id) wid: vec3<u32>,\n\
             \x20   @builtin(num_workgroups) nwg: vec3<u32>,\n\
             \x20   @builtin(local_invocation_index) lid: u32,\n) {{\n\
             \x20   let index = (wid.x + wid.y * nwg.x) * 64u + lid;\n\
             \x20   let cin4 = params.in_channels / 4u;\n\
             \x20   let tiles = band_tiles();\n\
             \x20   if (index >= tiles * cin4) {{\n        return;\n    }}\n\
             \x20   let c4 = index % cin4;\n\
             \x20   let tile = index / cin4;\n\
             \x20   let y0 = i32(params.band_start + (tile / params.tiles_x) * M) - 1;\n\
             \x20   let x0 = i32((tile % params.tiles_x) * M) - 1;\n{}\n{}\n}}\n",
        load.trim_end().replace("load_input(", "load_map("),
        input.trim_end()
    );
    let mut gather = String::new();
    for t in 0..a * a {
        gather += &format!("    let p{}_{} = load_product({t}u, tile, tiles, co4, cout4);\n", t / a, t % a);
    }
    let mut output = String::new();
    for i in 0..m {
        for j in 0..a {
            let terms: Vec<String> = (0..a).map(|q| format!("p{q}_{j}")).collect();
            output += &format!("    let s{i}_{j} = {};\n", combination(&tr.at[i * a..(i + 1) * a], &terms));
        }
    }
    for i in 0..m {
        for j in 0..m {
            let terms: Vec<String> = (0..a).map(|q| format!("s{i}_{q}")).collect();
            output += &format!(
                "    store_output(row0 + {i}u, col0 + {j}u, co4, cout4, b, {});\n",
                combination(&tr.at[j * a..(j + 1) * a], &terms)
            );
        }
    }
    let entries: String = [("output_transform", "store_output"), ("output_transform_masked", "store_output_masked")]
        .map(|(name, store)| {
            format!(
                "@compute @workgroup_size(64)\n\
                 fn {name}(\n\
                 \x20   @builtin(workgroup_id) wid: vec3<u32>,\n\
                 \x20   @builtin(num_workgroups) nwg: vec3<u32>,\n\
                 \x20   @builtin(local_invocation_index) lid: u32,\n) {{\n\
                 \x20   let index = (wid.x + wid.y * nwg.x) * 64u + lid;\n\
                 \x20   let cout4 = params.out_channels / 4u;\n\
                 \x20   let tiles = band_tiles();\n\
                 \x20   if (index >= tiles * cout4) {{\n        return;\n    }}\n\
                 \x20   let co4 = index % cout4;\n\
                 \x20   let tile = index / cout4;\n\
                 \x20   let row0 = params.band_start + (tile / params.tiles_x) * M;\n\
                 \x20   let col0 = (tile % params.tiles_x) * M;\n\
                 \x20   let b = bias[co4];\n{}\n{}\n}}\n",
                gather.trim_end(),
                output.trim_end().replace("store_output(", &format!("{store}("))
            )
        })
        .join("\n");
    TRANSFORMS_TEMPLATE
        .replace("{{M}}", &m.to_string())
        .replace("{{MAP_ENTRY}}", &map_entry)
        .replace("{{LOAD}}", load.trim_end())
        .replace("{{INPUT}}", input.trim_end())
        .replace("{{OUTPUT_ENTRIES}}", entries.trim_end())
}

/// Tiles per invocation of the products kernel. With [`GEMM_CO_TILE`] 32 that is 256
/// accumulators per invocation (most of them spilled: lavapipe keeps one vector register per
/// value of a lane). On lavapipe at 512 bits (Zen 4, 2026-12-04) 2 x 32 measured best of 4 x 16,
/// 3 x 32, 4 x 32, 2 x 64 and 1 x 64. At 256 bits (an Intel Xeon, 2026-12-06, the products
/// alone at the four 256 px shapes, alternated runs) 8 x 32 and 4 x 64 were 5-15% faster than
/// 2 x 32 (which beat 4 x 16, 3 x 16, 2 x 16, 1 x 32 and 1 x 16), and the whole 512 px iteration
/// 3.25-3.28 s against 3.43-3.45; the portable flavour, which loads every weight row in every
/// invocation, gained most: 34.7 against 61.6 ms at 256x256x64 (`docs/measurements.md`).
pub const GEMM_PX: usize = 8;
/// Tiles per invocation of the narrow products kernels (the subgroup flavours), which the plan
/// takes where a position has fewer than [`GEMM_WIDE_FROM`] tiles: a subgroup costs the same
/// whether its lanes' tiles exist or not, so on a 16x16 map (16 tiles of F(4x4)) the 8-tile lanes
/// of a subgroup of 8 hold 16 live tiles of 64. Measured (`nst bench --kernel-sides 64,128`, the
/// whole conv, lavapipe 256 bits): 16x16x512 9.9 ms with 2 tiles against 20.9 with 8, 8x8x512 8.9
/// against 19.2.
pub const GEMM_PX_NARROW: usize = 2;
/// Tiles per position from which the plan takes the wide products kernel: a subgroup of 8 lanes
/// full of 8-tile lanes.
pub const GEMM_WIDE_FROM: usize = 64;
/// Output channels per invocation of the products kernel: out_channels must be a multiple of it.
pub const GEMM_CO_TILE: usize = 32;
/// Invocations per workgroup of every Winograd kernel.
pub const INVOCATIONS: usize = 64;

/// The products kernel: with subgroup broadcasts of the weights (each lane loads one row), or
/// with every invocation loading every weight row (the same address across the workgroup).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmFlavour {
    Subgroup,
    /// The subgroup kernel with [`GEMM_PX_NARROW`] tiles per invocation, for small maps.
    SubgroupNarrow,
    Portable,
}

/// Tiles per invocation of a products kernel.
pub const fn gemm_px(flavour: GemmFlavour) -> usize {
    match flavour {
        GemmFlavour::SubgroupNarrow => GEMM_PX_NARROW,
        GemmFlavour::Subgroup | GemmFlavour::Portable => GEMM_PX,
    }
}

/// The shader name of the products kernel.
pub const fn gemm_shader(flavour: GemmFlavour, operands: Operands) -> &'static str {
    match (flavour, operands) {
        (GemmFlavour::Subgroup, Operands::Storage) => "winograd_gemm_subgroup",
        (GemmFlavour::SubgroupNarrow, Operands::Storage) => "winograd_gemm_subgroup_narrow",
        (GemmFlavour::Portable, Operands::Storage) => "winograd_gemm",
        (GemmFlavour::Subgroup, Operands::Texture) => "winograd_gemm_subgroup_tex",
        (GemmFlavour::SubgroupNarrow, Operands::Texture) => "winograd_gemm_subgroup_tex_narrow",
        (GemmFlavour::Portable, Operands::Texture) => "winograd_gemm_tex",
    }
}

const COMPONENTS: [&str; 4] = ["x", "y", "z", "w"];

/// The WGSL of the products kernel with U, V and M in `operands`; `sg` is the adapter's smallest
/// subgroup size (ignored by the portable flavour).
pub fn instantiate_gemm(flavour: GemmFlavour, operands: Operands, sg: usize) -> String {
    let (px, co_tile) = (gemm_px(flavour), GEMM_CO_TILE);
    let subgroup = flavour != GemmFlavour::Portable;
    let rows = co_tile.div_ceil(sg.max(1));
    let tex = operands == Operands::Texture;
    let mut decl = String::new();
    for p in 0..px {
        decl += &format!("    let tile{p} = min(first + {p}u, tiles - 1u);\n");
        decl += &match tex {
            false => format!("    let vbase{p} = (t * tiles + tile{p}) * cin4;\n"),
            true => format!(
                "    let vx{p} = i32((tile{p} % params.tiles_x) * cin4);\n    let vy{p} = i32(t * tile_rows + tile{p} / params.tiles_x);\n"
            ),
        };
        for c in 0..co_tile / 4 {
            decl += &format!("    var a{p}_{c} = vec4<f32>(0.0);\n");
        }
    }
    let mut inner = String::new();
    for p in 0..px {
        inner += &match tex {
            false => format!("        let x{p} = transformed[vbase{p} + c4];\n"),
            true => format!("        let x{p} = textureLoad(transformed, vec2<i32>(vx{p} + i32(c4), vy{p}));\n"),
        };
    }
    // Row k of the tile's weights: output channel co_base + k at input channels 4 c4...
    let weight = |k: &str| match tex {
        false => format!("weights[ubase + ({k}) * cin4 + c4]"),
        true => format!("textureLoad(weights, vec2<i32>(i32(co_base + {k}), i32(t * cin4 + c4)))"),
    };
    if subgroup {
        for r in 0..rows {
            inner += &format!("        let w{r} = {};\n", weight(&format!("min({r}u * SG + row_lane, CO_TILE - 1u)")));
        }
    }
    for co in 0..co_tile {
        inner += &match subgroup {
            true => format!("        let b{co} = subgroupBroadcast(w{}, {}u);\n", co / sg, co % sg),
            false => format!("        let b{co} = {};\n", weight(&format!("{co}u"))),
        };
        for p in 0..px {
            let (a, x, b) = (format!("a{p}_{}.{}", co / 4, COMPONENTS[co % 4]), format!("x{p}"), format!("b{co}"));
            inner += &format!(
                "        {a} = fma({x}.w, {b}.w, fma({x}.z, {b}.z, fma({x}.y, {b}.y, fma({x}.x, {b}.x, {a}))));\n"
            );
        }
    }
    // M goes to a buffer in either flavour (on lavapipe a texel store costs several vec4 buffer
    // stores).
    let mut out = String::new();
    for p in 0..px {
        out += &format!("    if (first + {p}u < tiles) {{\n");
        for c in 0..co_tile / 4 {
            out += &format!("        product[((t * tiles + first + {p}u) * cout + co_base) / 4u + {c}u] = a{p}_{c};\n");
        }
        out += "    }\n";
    }
    let (lane_arg, lane_decl, leave) = match subgroup {
        true => (
            ",\n    @builtin(subgroup_invocation_id) lane: u32",
            "    let row_lane = lane % SG;",
            // A subgroup with no live lane leaves as a whole (every lane of the others runs every broadcast).
            "    if (subgroupAll(!live)) {\n        return;\n    }",
        ),
        false => ("", "", "    if (!live) {\n        return;\n    }"),
    };
    let bindings = match tex {
        false => {
            "@group(0) @binding(1) var<storage, read> weights: array<vec4<f32>>;\n\
                  @group(0) @binding(2) var<storage, read> transformed: array<vec4<f32>>;\n\
                  @group(0) @binding(3) var<storage, read_write> product: array<vec4<f32>>;"
        }
        true => {
            "@group(0) @binding(1) var weights: texture_storage_2d<rgba32float, read>;\n\
                 @group(0) @binding(2) var transformed: texture_storage_2d<rgba32float, read>;\n\
                 @group(0) @binding(3) var<storage, read_write> product: array<vec4<f32>>;"
        }
    };
    GEMM_TEMPLATE
        .replace("{{BINDINGS}}", bindings)
        .replace("{{SG}}", &sg.max(1).to_string())
        .replace("{{PX}}", &px.to_string())
        .replace("{{CO_TILE}}", &co_tile.to_string())
        .replace("{{LANE_ARG}}", lane_arg)
        .replace("{{LANE_DECL}}", lane_decl)
        .replace("{{LEAVE}}", leave)
        .replace("{{DECL}}", decl.trim_end())
        .replace("{{INNER}}", inner.trim_end())
        .replace("{{STORE}}", out.trim_end())
}

/// Size (width, height) in texels of V's texture for `p`'s band: texel `((tile % tiles_x) *
/// in_channels / 4 + c4, t * tile_rows + tile / tiles_x)` holds channels `4c4..4c4+3` of position
/// `t` of the tile, the layout of V in its buffer, so that one copy fills it.
pub fn transformed_texture_size(p: &WinogradParams) -> (u32, u32) {
    (p.tiles_x * p.in_channels / 4, (p.points() * p.tile_rows()) as u32)
}

/// Size (width, height) in texels of the U texture: texel `(co, t * in_channels / 4 + c4)`.
pub fn weights_texture_size(p: &WinogradParams) -> (u32, u32) {
    (p.out_channels, p.points() as u32 * p.in_channels / 4)
}

/// U (`[T][out][in]`, tile `tile`) in the order of the U texture ([`weights_texture_size`]).
pub fn weights_texture_data(tile: usize, in_channels: usize, out_channels: usize, u: &[f32]) -> Vec<f32> {
    let (cin4, cout) = (in_channels / 4, out_channels);
    let mut out = vec![0.0; u.len()];
    for t in 0..transform(tile).points() {
        for co in 0..cout {
            for c4 in 0..cin4 {
                let texel = (t * cin4 + c4) * cout + co;
                let from = (t * cout + co) * cin4 + c4;
                out[4 * texel..4 * texel + 4].copy_from_slice(&u[4 * from..4 * from + 4]);
            }
        }
    }
    out
}

fn input_lens(p: &WinogradParams) -> Vec<u64> {
    [p.conv().band_input_len(1), p.transformed_input_len()].map(|n| n as u64).to_vec()
}

fn output_lens(p: &WinogradParams) -> Vec<u64> {
    [p.product_len(), p.out_channels as usize, p.conv().band_output_len()].map(|n| n as u64).to_vec()
}

fn transform_groups(p: &WinogradParams, channels: u32) -> u64 {
    groups_for((p.tiles() * channels as usize / 4) as u64, INVOCATIONS as u32)
}

macro_rules! transform_kernels {
    ($input:ident, $map:ident, $output:ident, $masked:ident, $m:literal) => {
        #[doc = concat!("`winograd_f", $m, ".input_transform`: bindings input (the band's rows with a halo row either side), transformed (V). Writes `=`.")]
        pub struct $input;

        impl Kernel for $input {
            type Params = WinogradParams;
            const ENTRY: EntryPoint = EntryPoint {
                shader: transforms_shader($m),
                entry: "input_transform",
                workgroup_size: INVOCATIONS as u32,
                params_bytes: std::mem::size_of::<WinogradParams>(),
                bindings: &[read(1, "input"), read_write(2, "transformed")],
            };
            fn workgroups(p: &WinogradParams) -> u64 {
                transform_groups(p, p.in_channels)
            }
            fn binding_lens(p: &WinogradParams) -> Vec<u64> {
                input_lens(p)
            }
        }

        #[doc = concat!("`winograd_f", $m, ".input_transform_map`: bindings input (the map texture), transformed (V). Writes `=`.")]
        pub struct $map;

        impl Kernel for $map {
            type Params = WinogradParams;
            const ENTRY: EntryPoint = EntryPoint {
                shader: transforms_shader($m),
                entry: "input_transform_map",
                workgroup_size: INVOCATIONS as u32,
                params_bytes: std::mem::size_of::<WinogradParams>(),
                bindings: &[texture(1, "input"), read_write(2, "transformed")],
            };
            fn workgroups(p: &WinogradParams) -> u64 {
                transform_groups(p, p.in_channels)
            }
            fn binding_lens(p: &WinogradParams) -> Vec<u64> {
                let (w, h) = super::conv3x3_subgroup::map_texture_size(p.height, p.width, p.in_channels);
                vec![4 * w as u64 * h as u64, p.transformed_input_len() as u64]
            }
        }

        #[doc = concat!("`winograd_f", $m, ".output_transform`: bindings product (M), bias, output (the band's rows). Writes `=` or `+=`.")]
        pub struct $output;

        impl Kernel for $output {
            type Params = WinogradParams;
            const ENTRY: EntryPoint = EntryPoint {
                shader: transforms_shader($m),
                entry: "output_transform",
                workgroup_size: INVOCATIONS as u32,
                params_bytes: std::mem::size_of::<WinogradParams>(),
                bindings: &[read(1, "product"), read(2, "bias"), read_write(3, "output")],
            };
            fn workgroups(p: &WinogradParams) -> u64 {
                transform_groups(p, p.out_channels)
            }
            fn binding_lens(p: &WinogradParams) -> Vec<u64> {
                output_lens(p)
            }
        }

        #[doc = concat!("`winograd_f", $m, ".output_transform_masked`: the output transform, then ReLU's gradient. Bindings product (M), bias, output (the band's rows), mask (laid out as the output). Writes `=` or `+=`.")]
        pub struct $masked;

        impl Kernel for $masked {
            type Params = WinogradParams;
            const ENTRY: EntryPoint = EntryPoint {
                shader: transforms_shader($m),
                entry: "output_transform_masked",
                workgroup_size: INVOCATIONS as u32,
                params_bytes: std::mem::size_of::<WinogradParams>(),
                bindings: &[read(1, "product"), read(2, "bias"), read_write(3, "output"), read(4, "mask")],
            };
            fn workgroups(p: &WinogradParams) -> u64 {
                transform_groups(p, p.out_channels)
            }
            fn binding_lens(p: &WinogradParams) -> Vec<u64> {
                let mut lens = output_lens(p);
                lens.push(p.conv().band_output_len() as u64);
                lens
            }
        }
    };
}

transform_kernels!(InputF2, InputF2Map, OutputF2, OutputF2Masked, 2);
transform_kernels!(InputF4, InputF4Map, OutputF4, OutputF4Masked, 4);

fn gemm_workgroups(p: &WinogradParams, px: usize) -> u64 {
    let blocks = p.tiles().div_ceil(px * INVOCATIONS);
    (p.points() * blocks * (p.out_channels as usize / GEMM_CO_TILE)) as u64
}

fn gemm_lens(p: &WinogradParams) -> Vec<u64> {
    [p.transformed_weights_len(), p.transformed_input_len(), p.product_len()].map(|n| n as u64).to_vec()
}

macro_rules! gemm_kernel {
    ($name:ident, $shader:literal, $flavour:expr, $operands:expr, $read:expr) => {
        #[doc = concat!("`", $shader, ".forward`: the products. Bindings weights (U), transformed (V), product (M). Writes `=`.")]
        pub struct $name;

        impl Kernel for $name {
            type Params = WinogradParams;
            const ENTRY: EntryPoint = EntryPoint {
                shader: gemm_shader($flavour, $operands),
                entry: "forward",
                workgroup_size: INVOCATIONS as u32,
                params_bytes: std::mem::size_of::<WinogradParams>(),
                bindings: &[$read(1, "weights"), $read(2, "transformed"), read_write(3, "product")],
            };
            fn workgroups(p: &WinogradParams) -> u64 {
                gemm_workgroups(p, gemm_px($flavour))
            }
            fn binding_lens(p: &WinogradParams) -> Vec<u64> {
                gemm_lens(p)
            }
        }
    };
}

gemm_kernel!(GemmSubgroup, "winograd_gemm_subgroup", GemmFlavour::Subgroup, Operands::Storage, read);
gemm_kernel!(Gemm, "winograd_gemm", GemmFlavour::Portable, Operands::Storage, read);
gemm_kernel!(GemmSubgroupTex, "winograd_gemm_subgroup_tex", GemmFlavour::Subgroup, Operands::Texture, texture);
gemm_kernel!(GemmTex, "winograd_gemm_tex", GemmFlavour::Portable, Operands::Texture, texture);
gemm_kernel!(GemmSubgroupNarrow, "winograd_gemm_subgroup_narrow", GemmFlavour::SubgroupNarrow, Operands::Storage, read);
gemm_kernel!(
    GemmSubgroupTexNarrow,
    "winograd_gemm_subgroup_tex_narrow",
    GemmFlavour::SubgroupNarrow,
    Operands::Texture,
    texture
);

/// The resources of one band's Winograd conv.
#[derive(Clone, Debug)]
pub struct ConvOperands<R> {
    /// The band's input rows (a buffer), or with `map_input` the input's map texture
    /// ([`map_texture_size`](super::conv3x3_subgroup::map_texture_size)), filled by the caller.
    pub input: R,
    /// U, the transformed weights: a buffer, or with texture operands a texture of
    /// [`weights_texture_size`].
    pub weights: R,
    /// V as the input transform writes it: a buffer.
    pub transformed: R,
    /// With texture operands, V's texture ([`transformed_texture_size`] or larger), which a copy
    /// fills from `transformed` for the products to read.
    pub transformed_texture: Option<R>,
    /// M: a buffer.
    pub product: R,
    pub bias: R,
    /// The band's output rows.
    pub output: R,
    /// The band's rows of a map laid out as the output: the output transform then applies ReLU's
    /// gradient ([`OutputF4Masked`] and the like).
    pub mask: Option<R>,
}

/// The Winograd conv of `p`'s band as planned commands: the input transform (from the input's
/// map texture with `map_input`), with texture operands the copy of V into its texture, the
/// products (with subgroup broadcasts when `subgroup`; U and V read from textures with texture
/// operands), the output transform.
pub fn plan<R: Clone>(
    p: &WinogradParams,
    operands: Operands,
    subgroup: bool,
    map_input: bool,
    r: ConvOperands<R>,
) -> Vec<Planned<R>> {
    use Planned as P;
    debug_assert!(suits(&p.conv()), "{p:?} does not suit the Winograd kernels");
    let texture = operands == Operands::Texture;
    debug_assert!(!map_input || texture, "a map texture input needs texture operands");
    debug_assert_eq!(r.transformed_texture.is_some(), texture, "V's texture goes with texture operands");
    let first = vec![r.input, r.transformed.clone()];
    let input = match (p.tile, map_input) {
        (2, false) => P::dispatch::<InputF2>(p, first),
        (2, true) => P::dispatch::<InputF2Map>(p, first),
        (4, false) => P::dispatch::<InputF4>(p, first),
        (4, true) => P::dispatch::<InputF4Map>(p, first),
        (m, _) => panic!("no Winograd tile {m}"),
    };
    let mut plan = vec![input];
    let v = match r.transformed_texture {
        Some(v) => {
            let (w, h) = transformed_texture_size(p);
            plan.push(P::CopyToTexture { buffer: r.transformed, texture: v.clone(), origin: [0, 0], extent: [w, h] });
            v
        }
        None => r.transformed,
    };
    let gemm = vec![r.weights, v, r.product.clone()];
    // Few tiles per position: the narrow subgroup kernel keeps a subgroup's lanes busy.
    let narrow = p.tiles() < GEMM_WIDE_FROM;
    plan.push(match (subgroup, narrow, operands) {
        (true, false, Operands::Storage) => P::dispatch::<GemmSubgroup>(p, gemm),
        (true, true, Operands::Storage) => P::dispatch::<GemmSubgroupNarrow>(p, gemm),
        (false, _, Operands::Storage) => P::dispatch::<Gemm>(p, gemm),
        (true, false, Operands::Texture) => P::dispatch::<GemmSubgroupTex>(p, gemm),
        (true, true, Operands::Texture) => P::dispatch::<GemmSubgroupTexNarrow>(p, gemm),
        (false, _, Operands::Texture) => P::dispatch::<GemmTex>(p, gemm),
    });
    let masked = r.mask.is_some();
    let last: Vec<R> = [r.product, r.bias, r.output].into_iter().chain(r.mask).collect();
    plan.push(match (p.tile, masked) {
        (2, false) => P::dispatch::<OutputF2>(p, last),
        (2, true) => P::dispatch::<OutputF2Masked>(p, last),
        (4, false) => P::dispatch::<OutputF4>(p, last),
        (4, true) => P::dispatch::<OutputF4Masked>(p, last),
        (m, _) => panic!("no Winograd tile {m}"),
    });
    plan
}

/// The tile with fewer products over the map padded to whole tiles (F(2x2) on a tie: it rounds
/// less): F(4x4) on every map of at least 8 x 8, F(2x2) on the smallest.
pub fn tile_for(p: &Conv3x3Params) -> usize {
    let cost = |m: usize| {
        let tiles = (p.height as usize).div_ceil(m) * (p.width as usize).div_ceil(m);
        tiles * transform(m).points()
    };
    if cost(4) < cost(2) {
        4
    } else {
        2
    }
}

/// Whether the texture flavour can run `p` on a device whose 2D textures are at most `max_dim`
/// texels a side: the width of V's texture and the sides of U's fit (V's height is split in
/// bands), and V's rows suit a buffer-to-texture copy (a multiple of 256 bytes).
pub fn textures_fit(p: &WinogradParams, max_dim: u32) -> bool {
    let (uw, uh) = weights_texture_size(p);
    let (vw, _) = transformed_texture_size(p);
    vw.max(uw).max(uh) <= max_dim && (p.points() as u32) <= max_dim && (16 * vw).is_multiple_of(256)
}

/// Whether the texture flavour can read `p`'s input from its map texture on a device whose 2D
/// textures are at most `max_dim` texels a side: the map texture fits, and the map's rows suit a
/// buffer-to-texture copy.
pub fn map_input_fits(p: &Conv3x3Params, max_dim: u32) -> bool {
    let (w, h) = super::conv3x3_subgroup::map_texture_size(p.height, p.width, p.in_channels);
    p.in_channels.is_multiple_of(4)
        && w.max(h) <= max_dim
        && super::conv3x3_subgroup::map_rows_copyable(p.width, p.in_channels)
}

/// Whether the Winograd kernels can run a conv `in_channels -> out_channels`: vec4 loads along
/// input channels, whole products tiles of output channels.
pub fn suits(p: &Conv3x3Params) -> bool {
    p.in_channels.is_multiple_of(4) && (p.out_channels as usize).is_multiple_of(GEMM_CO_TILE)
}
