// reduce: adds the partial sums of a loss (from sqdiff.wgsl or tv.wgsl) into one slot of the loss buffer.
//
// sum:      losses[params.slot] = sum_i partials[i], i < params.len. One workgroup of 256 invocations:
//           invocation t adds partials t, t + 256, t + 512, ... (a few dozen at VGG sizes), then a tree
//           reduction in workgroup memory. Writes `=`.
//
// Bindings (group 0):
//   0 params     uniform
//   1 partials   read
//   2 losses     read_write

struct Params {
    len: u32,
    slot: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> losses: array<f32>;

const WORKGROUP: u32 = 256u;

var<workgroup> scratch: array<f32, 256>;

@compute @workgroup_size(256)
fn sum(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < params.len; i += WORKGROUP) {
        s += partials[i];
    }
    scratch[lid] = s;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            scratch[lid] += scratch[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        losses[params.slot] = scratch[0];
    }
}
