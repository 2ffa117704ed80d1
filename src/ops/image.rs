//! Conversion between packed RGBA8 pixels and VGG19's input convention. GPU: `shaders/image.wgsl`.

use bytemuck::{Pod, Zeroable};

use crate::gpu::kernel::{groups_for, read, read_write, EntryPoint, Kernel};
use crate::Real;

/// The mean pixel of the original (Caffe) VGG19 weights, in R, G, B order.
pub const VGG_MEAN_RGB: [f32; 3] = [123.68, 116.779, 103.939];

/// Channels of the network-side image: B, G, R and a zero channel that keeps every conv input a
/// multiple of 4 channels.
pub const NETWORK_CHANNELS: usize = 4;

/// The valid range of each network channel (B, G, R, 0): 0..255 minus the mean; the fourth
/// channel stays 0. Adam clamps the image to it after each step.
pub fn network_bounds() -> ([f32; 4], [f32; 4]) {
    let [r, g, b] = VGG_MEAN_RGB;
    ([-b, -g, -r, 0.0], [255.0 - b, 255.0 - g, 255.0 - r, 0.0])
}

/// Params of `image.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct ImageParams {
    pub pixels: u32,
    pub mean_r: f32,
    pub mean_g: f32,
    pub mean_b: f32,
}

impl ImageParams {
    /// `pixels` pixels with VGG19's mean.
    pub fn new(pixels: usize) -> Self {
        let [mean_r, mean_g, mean_b] = VGG_MEAN_RGB;
        ImageParams { pixels: pixels as u32, mean_r, mean_g, mean_b }
    }
    /// Elements of the network-side image: 4 per pixel, B, G, R and 0.
    pub fn network_len(&self) -> usize {
        NETWORK_CHANNELS * self.pixels as usize
    }
}

/// `image.to_network`: bindings rgba_in (packed u32), net_out.
pub struct ToNetwork;

impl Kernel for ToNetwork {
    type Params = ImageParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "image",
        entry: "to_network",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<ImageParams>(),
        bindings: &[read(1, "rgba_in"), read_write(2, "net_out")],
    };
    fn workgroups(p: &ImageParams) -> u64 {
        groups_for(p.pixels as u64, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &ImageParams) -> Vec<u64> {
        vec![p.pixels as u64, p.network_len() as u64]
    }
}

/// `image.from_network`: bindings net_in, rgba_out (packed u32).
pub struct FromNetwork;

impl Kernel for FromNetwork {
    type Params = ImageParams;
    const ENTRY: EntryPoint = EntryPoint {
        shader: "image",
        entry: "from_network",
        workgroup_size: 64,
        params_bytes: std::mem::size_of::<ImageParams>(),
        bindings: &[read(3, "net_in"), read_write(4, "rgba_out")],
    };
    fn workgroups(p: &ImageParams) -> u64 {
        groups_for(p.pixels as u64, Self::ENTRY.workgroup_size)
    }
    fn binding_lens(p: &ImageParams) -> Vec<u64> {
        vec![p.network_len() as u64, p.pixels as u64]
    }
}

/// Packs 8-bit R, G, B, A into one u32, red in the low byte.
pub fn pack_rgba(rgba: [u8; 4]) -> u32 {
    u32::from_le_bytes(rgba)
}

/// CPU twin of `image.to_network`: RGBA8 to BGR minus the mean, and a zero fourth channel.
pub fn to_network<T: Real>(p: &ImageParams, rgba_in: &[u32], net_out: &mut [T]) {
    for (px, &v) in rgba_in.iter().enumerate().take(p.pixels as usize) {
        let [r, g, b, _] = v.to_le_bytes();
        net_out[4 * px] = T::from_f64(b as f64) - T::from_f64(p.mean_b as f64);
        net_out[4 * px + 1] = T::from_f64(g as f64) - T::from_f64(p.mean_g as f64);
        net_out[4 * px + 2] = T::from_f64(r as f64) - T::from_f64(p.mean_r as f64);
        net_out[4 * px + 3] = T::zero();
    }
}

fn to_byte<T: Real>(v: T) -> u8 {
    let clamped = if v > T::from_f64(255.0) {
        T::from_f64(255.0)
    } else if v > T::zero() {
        v
    } else {
        T::zero()
    };
    (clamped + T::from_f64(0.5)).floor().to_f64() as u8
}

/// CPU twin of `image.from_network`: add the mean, clamp to 0..255, round half up, alpha 255.
pub fn from_network<T: Real>(p: &ImageParams, net_in: &[T], rgba_out: &mut [u32]) {
    let mean = |m: f32| T::from_f64(m as f64);
    for (px, out) in rgba_out.iter_mut().enumerate().take(p.pixels as usize) {
        let r = to_byte(net_in[4 * px + 2] + mean(p.mean_r));
        let g = to_byte(net_in[4 * px + 1] + mean(p.mean_g));
        let b = to_byte(net_in[4 * px] + mean(p.mean_b));
        *out = pack_rgba([r, g, b, 255]);
    }
}
