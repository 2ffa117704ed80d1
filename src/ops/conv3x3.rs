//! 3x3 convolution, stride 1, zero padding 1, bias, optional fused ReLU; and its input gradient.
//! GPU: `shaders/conv3x3.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::store;
use crate::gpu::kernel::{groups_for, read, read_write, EntryPoint, Kernel};
use crate::Real;

/// Params of `conv3x3.wgsl`. Activations are HWC; weights `[out_channels][3][3][in_channels]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Conv3x3Params {
    pub height: u32,
    pub width: u32,
    pub in_channels: u32,
    pub out_channels: u32,
    /// Forward only: apply ReLU to the output when non-zero.
    pub relu: u32,
    /// Add to the output (forward) or input gradient (backward) instead of overwriting it when
    /// non-zero.
    pub accumulate: u32,
    /// Forward only: the band of output rows this dispatch computes, `band_start..band_start +
    /// band_rows` of the `height` rows (all of them unless the map is too large for one binding).
    pub band_start: u32,
    pub band_rows: u32,
    /// Forward only: the map row the input binding starts at (0 when it holds the whole map; else
    /// `band_start` less the halo rows a band reads above it). Taps outside `0..height` read zero.
    pub input_start: u32,
    /// Forward only: the map row the output binding starts at (0 when it holds the whole map, else
    /// `band_start`).
    pub output_start: u32,
}

impl Conv3x3Params {
    pub fn new(height: usize, width: usize, in_channels: usize, out_channels: usize) -> Self {
        Conv3x3Params {
            height: height as u32,
            width: width as u32,
            in_channels: in_channels as u32,
            out_channels: out_channels as u32,
            relu: 0,
            accumulate: 0,
            band_start: 0,
            band_rows: height as u32,
            input_start: 0,
            output_start: 0,
        }
    }
    /// The band of output rows `start..start + rows`, for a kernel whose taps reach `halo` rows
    /// above and below (1 for the 3x3 conv, 0 for the pointwise one), with input and output
    /// bindings that hold just the rows the band reads and writes. [`Self::with_whole_input`] and
    /// [`Self::with_whole_output`] bind a map whole instead.
    pub fn with_band(mut self, start: usize, rows: usize, halo: usize) -> Self {
        debug_assert!(rows > 0 && start + rows <= self.height as usize, "band {start}+{rows} of {}", self.height);
        self.band_start = start as u32;
        self.band_rows = rows as u32;
        self.input_start = start.saturating_sub(halo) as u32;
        self.output_start = start as u32;
        self
    }
    /// The input binding holds the whole map.
    pub fn with_whole_input(mut self) -> Self {
        self.input_start = 0;
        self
    }
    /// The output binding holds the whole map.
    pub fn with_whole_output(mut self) -> Self {
        self.output_start = 0;
        self
    }
    /// Whether this dispatch computes every row.
    pub fn is_whole(&self) -> bool {
        self.band_start == 0 && self.band_rows == self.height
    }
    /// Input rows the band's binding holds: from `input_start` to the band's last row plus `halo`
    /// (inside the map).
    pub fn band_input_rows(&self, halo: usize) -> usize {
        let end = (self.band_start as usize + self.band_rows as usize + halo).min(self.height as usize);
        end - self.input_start as usize
    }
    /// Elements of the band's input binding.
    pub fn band_input_len(&self, halo: usize) -> usize {
        self.band_input_rows(halo) * self.width as usize * self.in_channels as usize
    }
    /// Elements of the band's output binding: from `output_start` to the band's last row.
    pub fn band_output_len(&self) -> usize {
        let rows = (self.band_start + self.band_rows - self.output_start) as usize;
        rows * self.width as usize * self.out_channels as usize
    }
    pub fn with_relu(mut self, relu: bool) -> Self {
        self.relu = relu as u32;
        self
    }
    pub fn with_accumulate(mut self, accumulate: bool) -> Self {
        self.accumulate = accumulate as u32;
        self
    }
    pub fn pixels(&self) -> usize {
        self.height as usize * self.width as usize
    }
    pub fn input_len(&self) -> usize {
        self.pixels() * self.in_channels as usize
    }
    pub fn output_len(&self) -> usize {
        self.pixels() * self.out_channels as usize
    }
    pub fn weights_len(&self) -> usize {
        self.out_channels as usize * 9 * self.in_channels as usize
    }
    pub fn bias_len(&self) -> usize {
        self.out_channels as usize
    }
    /// The params of this conv's input gradient run as a forward conv with flipped, transposed
    /// weights: in and out channels swapped, no ReLU, the same `accumulate`.
    pub fn input_gradient(&self) -> Self {
        Conv3x3Params { in_channels: self.out_channels, out_channels: self.in_channels, relu: 0, ..*self }
    }
    /// The bands of at most `rows` output rows each that cover the map, in order (the last one
    /// shorter when `rows` does not divide the height), for taps reaching `halo` rows.
    pub fn bands(&self, rows: usize, halo: usize) -> Vec<Self> {
        let (h, rows) = (self.height as usize, rows.max(1));
        (0..h).step_by(rows).map(|start| self.with_band(start, rows.min(h - start), halo)).collect()
    }

    /// Multiply-adds times two, for GFLOP/s (the same for forward and input gradient).
    pub fn flops(&self) -> u64 {
        2 * 9 * self.pixels() as u64 * self.in_channels as u64 * self.out_channels as u64
    }
}

/// `conv3x3.forward`: bindings weights, bias, input, output.
pub struct Forward;

impl Kernel for Forward {
    type Params = Conv3x3Params;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "conv3x3",
        entry: "forward",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<Conv3x3Params>(),
        bindings: &[read(1, "weights"), read(2, "bias"), read(3, "input"), read_write(4, "output")],
    };
    fn workgroups(p: &Conv3x3Params) -> u64 {
        groups_for(p.band_output_len() as u64, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &Conv3x3Params) -> Vec<u64> {
        [p.weights_len(), p.bias_len(), p.band_input_len(1), p.band_output_len()].map(|n| n as u64).to_vec()
    }
}

/// `conv3x3.backward_input`: bindings weights, grad_output, grad_input.
pub struct BackwardInput;

impl Kernel for BackwardInput {
    type Params = Conv3x3Params;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "conv3x3",
        entry: "backward_input",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<Conv3x3Params>(),
        bindings: &[read(1, "weights"), read(3, "grad_output"), read_write(4, "grad_input")],
    };
    fn workgroups(p: &Conv3x3Params) -> u64 {
        groups_for(p.input_len() as u64, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &Conv3x3Params) -> Vec<u64> {
        [p.weights_len(), p.output_len(), p.input_len()].map(|n| n as u64).to_vec()
    }
}

/// CPU twin of `conv3x3.forward`: the output rows of `p`'s band, from an input that starts at map
/// row `p.input_start` into an output that starts at map row `p.output_start`.
pub fn forward<T: Real>(p: &Conv3x3Params, weights: &[T], bias: &[T], input: &[T], output: &mut [T]) {
    let (h, w) = (p.height as i64, p.width as i64);
    let (cin, cout) = (p.in_channels as usize, p.out_channels as usize);
    let (start, first_input, first_output) = (p.band_start as i64, p.input_start as i64, p.output_start as i64);
    for y in start..start + p.band_rows as i64 {
        for x in 0..w {
            for co in 0..cout {
                let mut acc = T::zero();
                for ky in 0..3 {
                    let sy = y + ky - 1;
                    if sy < 0 || sy >= h {
                        continue;
                    }
                    for kx in 0..3 {
                        let sx = x + kx - 1;
                        if sx < 0 || sx >= w {
                            continue;
                        }
                        let s = ((sy - first_input) * w + sx) as usize * cin;
                        let k = ((co * 3 + ky as usize) * 3 + kx as usize) * cin;
                        for ci in 0..cin {
                            acc += input[s + ci] * weights[k + ci];
                        }
                    }
                }
                acc += bias[co];
                if p.relu != 0 {
                    acc = acc.max(T::zero());
                }
                store(&mut output[((y - first_output) * w + x) as usize * cout + co], acc, p.accumulate);
            }
        }
    }
}

/// CPU twin of `conv3x3.backward_input`, over the whole map (the engine runs input gradients as
/// the forward with flipped, transposed weights; only the forward takes bands).
pub fn backward_input<T: Real>(p: &Conv3x3Params, weights: &[T], grad_output: &[T], grad_input: &mut [T]) {
    let (h, w) = (p.height as i64, p.width as i64);
    let (cin, cout) = (p.in_channels as usize, p.out_channels as usize);
    for y in 0..h {
        for x in 0..w {
            for ci in 0..cin {
                let mut acc = T::zero();
                for ky in 0..3 {
                    let oy = y - ky + 1;
                    if oy < 0 || oy >= h {
                        continue;
                    }
                    for kx in 0..3 {
                        let ox = x - kx + 1;
                        if ox < 0 || ox >= w {
                            continue;
                        }
                        let g = (oy * w + ox) as usize * cout;
                        for co in 0..cout {
                            let k = ((co * 3 + ky as usize) * 3 + kx as usize) * cin + ci;
                            acc += grad_output[g + co] * weights[k];
                        }
                    }
                }
                store(&mut grad_input[(y * w + x) as usize * cin + ci], acc, p.accumulate);
            }
        }
    }
}
