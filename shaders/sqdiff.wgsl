// sqdiff: the scaled sum of squared differences behind the content loss (feature maps) and the style
// loss (Gram matrices), and its gradient with respect to `a`.
//
// loss = scale * sum_i (a[i] - b[i])^2. With scale = weight / len this is a weighted mean squared error.
// forward:  one workgroup of 32 invocations per block of 1024 elements: each invocation adds 32
//           elements (strided by 32), then a tree reduction in workgroup memory (few invocations:
//           on lavapipe each barrier switches between the workgroup's SIMD groups).
//           partials[block] = scale * block sum. Writes `=`. reduce.wgsl then adds the partials
//           with another tree: no long serial loop.
// backward: grad_a[i] = 2 * scale * (a[i] - b[i]) (the loss's own gradient is taken as 1; the caller
//           folds loss weights into scale). Writes `=`, or `+=` when params.accumulate != 0.
//
// Bindings (group 0):
//   0 params     uniform
//   1 a          read        forward, backward
//   2 b          read        forward, backward (the target)
//   3 partials   read_write  forward (one value per block of 1024)
//   4 grad_a     read_write  backward

struct Params {
    len: u32,
    accumulate: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad_a: array<f32>;

const REDUCE_WORKGROUP: u32 = 32u;
const PER_INVOCATION: u32 = 32u;
const WORKGROUP: u32 = 64u;

var<workgroup> scratch: array<f32, 32>;

@compute @workgroup_size(REDUCE_WORKGROUP)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let block = wid.x + wid.y * nwg.x;
    let base = block * REDUCE_WORKGROUP * PER_INVOCATION;
    if (base >= params.len) {
        return;
    }
    var s = 0.0;
    for (var k = 0u; k < PER_INVOCATION; k++) {
        let i = base + k * REDUCE_WORKGROUP + lid;
        if (i < params.len) {
            let d = a[i] - b[i];
            s += d * d;
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
    if (i >= params.len) {
        return;
    }
    var g = 2.0 * params.scale * (a[i] - b[i]);
    if (params.accumulate != 0u) {
        g += grad_a[i];
    }
    grad_a[i] = g;
}
