// transpose: one chunk of positions of a channels-last feature map, transposed to channels-first,
// zero past the last position. The Gram forward with subgroups runs on it: gram = Fᵀ F is a
// pointwise conv whose "pixels" are the channels and whose "input channels" are the positions, and
// the transposed chunk is both its input and its weights.
//
// forward: transposed[i * params.len + q] = features[(params.start + q) * params.channels + i]
//          if params.start + q < params.positions, else 0; for i < channels, q < len.
//          One invocation per element of `transposed` (a gather). Writes `=`.
//
// Bindings (group 0):
//   0 params       uniform
//   1 features     read        positions x channels (HWC flattened)
//   2 transposed   read_write  channels x len

struct Params {
    positions: u32,
    channels: u32,
    start: u32,
    len: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> features: array<f32>;
@group(0) @binding(2) var<storage, read_write> transposed: array<f32>;

const WORKGROUP: u32 = 64u;

@compute @workgroup_size(64)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let index = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    if (index >= params.channels * params.len) {
        return;
    }
    let i = index / params.len;
    let p = params.start + index % params.len;
    var v = 0.0;
    if (p < params.positions) {
        v = features[p * params.channels + i];
    }
    transposed[index] = v;
}
