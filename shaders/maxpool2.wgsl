// maxpool2: 2x2 max pooling, stride 2, and its gradient. Channels-last (HWC).
//
// The output is (height / 2) x (width / 2), rounded down like VGG's pooling: an odd last row or
// column of the input is dropped.
// forward:  output[oy, ox, c] = max of input[2oy + dy, 2ox + dx, c] over dy, dx in {0, 1}. Writes `=`.
// backward: each input element gathers: grad_input[y, x, c] = grad_output[y / 2, x / 2, c] if (y, x)
//           is the window's first maximum in the order (0,0), (0,1), (1,0), (1,1), else 0 (also 0 in a
//           dropped row or column). Ties go to the first maximum. Writes `=`, or `+=` when
//           params.accumulate != 0. With params.mask != 0 it then applies the gradient of the ReLU
//           that made the input to what it writes (the sum, when accumulating: this op is that
//           gradient's last writer): zero where input[y, x, c] is not positive, so no ReLU
//           backward pass follows.
//
// Bindings (group 0):
//   0 params        uniform
//   1 input         read        forward, backward (the forward input, to find the maximum)
//   2 output        read_write  forward
//   3 grad_output   read        backward
//   4 grad_input    read_write  backward
//   5..8            the same four buffers seen as vec4s, for forward4 and backward4
//
// forward4 and backward4 are forward and backward for channels a multiple of 4, one invocation per 4
// consecutive channels of one output element (forward4) or of one 2x2 window of the input
// (backward4, which writes the window's elements) (on lavapipe a vec4 load costs about what a
// scalar one does). Ties go to the first maximum in each channel, as above.

struct Params {
    height: u32,
    width: u32,
    channels: u32,
    accumulate: u32,
    mask: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
@group(0) @binding(3) var<storage, read> grad_output: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad_input: array<f32>;
@group(0) @binding(5) var<storage, read> input4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> output4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> grad_output4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> grad_input4: array<vec4<f32>>;

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
    if (params.mask != 0u && !(at(y, x, c) > 0.0)) {
        g = 0.0;
    }
    grad_input[index] = g;
}

fn at4(y: u32, x: u32, c4: u32) -> vec4<f32> {
    return input4[(y * params.width + x) * (params.channels / 4u) + c4];
}

// Per channel, the index 0..3 of the window's first maximum, and the maximum.
struct Max4 {
    which: vec4<u32>,
    value: vec4<f32>,
}

// The same for a window's 4 values, in raster order.
fn first_max4(values: array<vec4<f32>, 4>) -> Max4 {
    var v = values;
    var best = v[0];
    var which = vec4<u32>(0u);
    for (var k = 1u; k < 4u; k++) {
        let greater = v[k] > best;
        best = select(best, v[k], greater);
        which = select(which, vec4<u32>(k), greater);
    }
    return Max4(which, best);
}

fn argmax4(oy: u32, ox: u32, c4: u32) -> Max4 {
    var v: array<vec4<f32>, 4>;
    for (var k = 0u; k < 4u; k++) {
        v[k] = at4(2u * oy + k / 2u, 2u * ox + k % 2u, c4);
    }
    return first_max4(v);
}

@compute @workgroup_size(64)
fn forward4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let index = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    let c4_n = params.channels / 4u;
    let out_w = params.width / 2u;
    let out_h = params.height / 2u;
    if (index >= out_h * out_w * c4_n) {
        return;
    }
    let c4 = index % c4_n;
    let pixel = index / c4_n;
    output4[index] = argmax4(pixel / out_w, pixel % out_w, c4).value;
}

// One invocation per 2x2 window of the input and 4 channels (rounded up: a window of the dropped
// last row or column has no maximum): it finds the window's first maxima once and writes the
// window's 4 (or fewer) elements, each of them by this invocation alone.
@compute @workgroup_size(64)
fn backward4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let index = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    let c4_n = params.channels / 4u;
    let win_w = (params.width + 1u) / 2u;
    let win_h = (params.height + 1u) / 2u;
    if (index >= win_h * win_w * c4_n) {
        return;
    }
    let c4 = index % c4_n;
    let window = index / c4_n;
    let ox = window % win_w;
    let oy = window / win_w;
    let out_w = params.width / 2u;
    let out_h = params.height / 2u;
    // The window's elements inside the map, each loaded once: for the maxima and for the mask.
    var e: array<u32, 4>;
    var inside: array<bool, 4>;
    var v: array<vec4<f32>, 4>;
    for (var k = 0u; k < 4u; k++) {
        let y = 2u * oy + k / 2u;
        let x = 2u * ox + k % 2u;
        inside[k] = y < params.height && x < params.width;
        e[k] = (y * params.width + x) * c4_n + c4;
        v[k] = vec4<f32>(0.0);
        if (inside[k]) {
            v[k] = input4[e[k]];
        }
    }
    // Which of the 4 elements is the first maximum, per channel (none in a dropped row or column).
    var which = vec4<u32>(4u);
    var grad = vec4<f32>(0.0);
    if (oy < out_h && ox < out_w) {
        which = first_max4(v).which;
        grad = grad_output4[(oy * out_w + ox) * c4_n + c4];
    }
    for (var k = 0u; k < 4u; k++) {
        if (inside[k]) {
            var g = select(vec4<f32>(0.0), grad, which == vec4<u32>(k));
            if (params.accumulate != 0u) {
                g += grad_input4[e[k]];
            }
            if (params.mask != 0u) {
                g = select(vec4<f32>(0.0), g, v[k] > vec4<f32>(0.0));
            }
            grad_input4[e[k]] = g;
        }
    }
}
