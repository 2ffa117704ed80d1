// avgpool2: 2x2 average pooling, stride 2, and its gradient. Channels-last (HWC).
//
// The output is (height / 2) x (width / 2), rounded down like VGG's pooling.
// forward:  output[oy, ox, c] = 0.25 * sum of input[2oy + dy, 2ox + dx, c] over dy, dx in {0, 1}.
//           Writes `=`.
// backward: grad_input[y, x, c] = 0.25 * grad_output[y / 2, x / 2, c], or 0 in a dropped odd last row
//           or column. Writes `=`, or `+=` when params.accumulate != 0.
//
// Bindings (group 0):
//   0 params        uniform
//   1 input         read        forward
//   2 output        read_write  forward
//   3 grad_output   read        backward
//   4 grad_input    read_write  backward

struct Params {
    height: u32,
    width: u32,
    channels: u32,
    accumulate: u32,
    // Pool2Params.mask: max pooling's; ignored here.
    mask: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
@group(0) @binding(3) var<storage, read> grad_output: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad_input: array<f32>;

const WORKGROUP: u32 = 64u;

@compute @workgroup_size(64)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let index = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    let c_n = params.channels;
    let out_w = params.width / 2u;
    let out_h = params.height / 2u;
    if (index >= out_h * out_w * c_n) {
        return;
    }
    let c = index % c_n;
    let pixel = index / c_n;
    let ox = pixel % out_w;
    let oy = pixel / out_w;
    let top = (2u * oy * params.width + 2u * ox) * c_n + c;
    let bottom = top + params.width * c_n;
    output[index] = 0.25 * ((input[top] + input[top + c_n]) + (input[bottom] + input[bottom + c_n]));
}

@compute @workgroup_size(64)
fn backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let index = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    let c_n = params.channels;
    if (index >= params.height * params.width * c_n) {
        return;
    }
    let c = index % c_n;
    let pixel = index / c_n;
    let ox = (pixel % params.width) / 2u;
    let oy = (pixel / params.width) / 2u;
    let out_w = params.width / 2u;
    let out_h = params.height / 2u;
    var g = 0.0;
    if (oy < out_h && ox < out_w) {
        g = 0.25 * grad_output[(oy * out_w + ox) * c_n + c];
    }
    if (params.accumulate != 0u) {
        g += grad_input[index];
    }
    grad_input[index] = g;
}
