// image: conversion between 8-bit RGBA pixels and VGG19's input convention.
//
// The network sees BGR values in 0..255 minus the mean pixel (Caffe's convention; nst's defaults are
// mean_r = 123.68, mean_g = 116.779, mean_b = 103.939), channels-last with 4 channels: B, G, R and a
// fourth that is always 0, so that the first conv reads vec4s like every other (its weights for the
// fourth channel are 0).
// Pixels are packed RGBA8, one u32 each, red in the low byte (the byte order of an RGBA8 image in
// memory on a little-endian machine).
// to_network:   net[p] = (b - mean_b, g - mean_g, r - mean_r, 0); alpha is ignored. Writes `=`.
// from_network: rgba[p] = pack(round(clamp(net + mean, 0, 255))) in RGB order, alpha 255; round is
//               floor(v + 0.5). Writes `=`.
//
// Bindings (group 0):
//   0 params     uniform
//   1 rgba_in    read        to_network
//   2 net_out    read_write  to_network
//   3 net_in     read        from_network
//   4 rgba_out   read_write  from_network

struct Params {
    pixels: u32,
    mean_r: f32,
    mean_g: f32,
    mean_b: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> rgba_in: array<u32>;
@group(0) @binding(2) var<storage, read_write> net_out: array<f32>;
@group(0) @binding(3) var<storage, read> net_in: array<f32>;
@group(0) @binding(4) var<storage, read_write> rgba_out: array<u32>;

const WORKGROUP: u32 = 64u;

@compute @workgroup_size(64)
fn to_network(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let p = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    if (p >= params.pixels) {
        return;
    }
    let v = rgba_in[p];
    let r = f32(v & 0xffu);
    let g = f32((v >> 8u) & 0xffu);
    let b = f32((v >> 16u) & 0xffu);
    net_out[4u * p] = b - params.mean_b;
    net_out[4u * p + 1u] = g - params.mean_g;
    net_out[4u * p + 2u] = r - params.mean_r;
    net_out[4u * p + 3u] = 0.0;
}

fn to_byte(v: f32) -> u32 {
    return u32(floor(clamp(v, 0.0, 255.0) + 0.5));
}

@compute @workgroup_size(64)
fn from_network(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let p = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    if (p >= params.pixels) {
        return;
    }
    let r = to_byte(net_in[4u * p + 2u] + params.mean_r);
    let g = to_byte(net_in[4u * p + 1u] + params.mean_g);
    let b = to_byte(net_in[4u * p] + params.mean_b);
    rgba_out[p] = r | (g << 8u) | (b << 16u) | (255u << 24u);
}
