// tv: total-variation loss against grain, and its gradient. Channels-last (HWC).
//
// loss = scale * sum_{y, x, c} ( |v[y, x + 1, c] - v[y, x, c]|   (where x + 1 < width)
//                              + |v[y + 1, x, c] - v[y, x, c]| ) (where y + 1 < height)
// forward:  element (y, x, c) contributes its right and lower differences; one workgroup of 32
//           invocations (32 elements each) per block of 1024 elements, tree-reduced in workgroup
//           memory.
//           partials[block] = scale * block sum. Writes `=`; reduce.wgsl adds the partials.
// backward: grad[y, x, c] = scale * ( sign(v[y,x] - v[y,x-1]) - sign(v[y,x+1] - v[y,x])
//                                   + sign(v[y,x] - v[y-1,x]) - sign(v[y+1,x] - v[y,x]) ),
//           each term present only where that neighbour exists. sign(0) = 0: the gradient of |d| at
//           d = 0 is taken as 0. Writes `=`, or `+=` when params.accumulate != 0.
//
// Bindings (group 0):
//   0 params     uniform
//   1 image      read        forward, backward
//   2 partials   read_write  forward
//   3 grad       read_write  backward

struct Params {
    height: u32,
    width: u32,
    channels: u32,
    accumulate: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> image: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;

const REDUCE_WORKGROUP: u32 = 32u;
const PER_INVOCATION: u32 = 32u;
const WORKGROUP: u32 = 64u;

var<workgroup> scratch: array<f32, 32>;

fn variation(i: u32) -> f32 {
    let c_n = params.channels;
    let pixel = i / c_n;
    let x = pixel % params.width;
    let y = pixel / params.width;
    let v = image[i];
    var s = 0.0;
    if (x + 1u < params.width) {
        s += abs(image[i + c_n] - v);
    }
    if (y + 1u < params.height) {
        s += abs(image[i + params.width * c_n] - v);
    }
    return s;
}

@compute @workgroup_size(REDUCE_WORKGROUP)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let len = params.height * params.width * params.channels;
    let block = wid.x + wid.y * nwg.x;
    let base = block * REDUCE_WORKGROUP * PER_INVOCATION;
    if (base >= len) {
        return;
    }
    var s = 0.0;
    for (var k = 0u; k < PER_INVOCATION; k++) {
        let i = base + k * REDUCE_WORKGROUP + lid;
        if (i < len) {
            s += variation(i);
        }
    }
    scratch[lid] = s;
    workgroupBarrier();
    for (var stride = REDUCE_WORKGROUP / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            scratch[lid] += scratch[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        partials[block] = params.scale * scratch[0];
    }
}

@compute @workgroup_size(64)
fn backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    let c_n = params.channels;
    if (i >= params.height * params.width * c_n) {
        return;
    }
    let pixel = i / c_n;
    let x = pixel % params.width;
    let y = pixel / params.width;
    let row = params.width * c_n;
    let v = image[i];
    var g = 0.0;
    if (x > 0u) {
        g += sign(v - image[i - c_n]);
    }
    if (x + 1u < params.width) {
        g -= sign(image[i + c_n] - v);
    }
    if (y > 0u) {
        g += sign(v - image[i - row]);
    }
    if (y + 1u < params.height) {
        g -= sign(image[i + row] - v);
    }
    g *= params.scale;
    if (params.accumulate != 0u) {
        g += grad[i];
    }
    grad[i] = g;
}
