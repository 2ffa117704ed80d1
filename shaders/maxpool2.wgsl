// maxpool2: 2x2 max pooling, stride 2, and its gradient. Channels-last (HWC).
//
// The output is (height / 2) x (width / 2), rounded down like VGG's pooling: an odd last row or
// column of the input is dropped.
// forward:  output[oy, ox, c] = max of input[2oy + dy, 2ox + dx, c] over dy, dx in {0, 1}. Writes `=`.
// backward: each input element gathers: grad_input[y, x, c] = grad_output[y / 2, x / 2, c] if (y, x)
//           is the window's first maximum in the order (0,0), (0,1), (1,0), (1,1), else 0 (also 0 in a
//           dropped row or column). Ties go to the first maximum. Writes `=`, or `+=` when
//           params.accumulate != 0.
//
// Bindings (group 0):
//   0 params        uniform
//   1 input         read        forward, backward (the forward input, to find the maximum)
//   2 output        read_write  forward
//   3 grad_output   read        backward
//   4 grad_input    read_write  backward

struct Params {
    height: u32,
    width: u32,
    channels: u32,
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
@group(0) @binding(3) var<storage, read> grad_output: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad_input: array<f32>;

const WORKGROUP: u32 = 64u;

fn at(y: u32, x: u32, c: u32) -> f32 {
    return input[(y * params.width + x) * params.channels + c];
}

// Index 0..3 of the first maximum of the window whose top-left input element is (2oy, 2ox).
fn argmax(oy: u32, ox: u32, c: u32) -> u32 {
    var best = at(2u * oy, 2u * ox, c);
    var which = 0u;
    for (var k = 1u; k < 4u; k++) {
        let v = at(2u * oy + k / 2u, 2u * ox + k % 2u, c);
        if (v > best) {
            best = v;
            which = k;
        }
    }
    return which;
}

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
    let k = argmax(oy, ox, c);
    output[index] = at(2u * oy + k / 2u, 2u * ox + k % 2u, c);
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
    let x = pixel % params.width;
    let y = pixel / params.width;
    let out_w = params.width / 2u;
    let out_h = params.height / 2u;
    var g = 0.0;
    let oy = y / 2u;
    let ox = x / 2u;
    if (oy < out_h && ox < out_w && argmax(oy, ox, c) == (y % 2u) * 2u + x % 2u) {
        g = grad_output[(oy * out_w + ox) * c_n + c];
    }
    if (params.accumulate != 0u) {
        g += grad_input[index];
    }
    grad_input[index] = g;
}
