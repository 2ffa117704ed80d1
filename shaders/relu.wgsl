// relu: the rectifier and its gradient, elementwise (any layout).
//
// forward:  output[i] = max(input[i], 0). Writes `=`.
// backward: grad_input[i] = grad_output[i] if output[i] > 0, else 0. The mask is taken from the forward
//           *output* (positive exactly where the input was), so a conv with fused ReLU needs to keep only
//           its output. The gradient at 0 is 0. Writes `=`, or `+=` when params.accumulate != 0.
//
// Bindings (group 0):
//   0 params        uniform
//   1 input         read        forward
//   2 output        read_write  forward
//   3 output        read        backward (the forward output, for the mask)
//   4 grad_output   read        backward
//   5 grad_input    read_write  backward
//   6 output        read        backward4: bindings 3..5 seen as vec4s
//   7 grad_output   read        backward4
//   8 grad_input    read_write  backward4
//   9 output        read        mask
//  10 grad          read_write  mask
//  11 output        read        mask4: bindings 9 and 10 seen as vec4s
//  12 grad          read_write  mask4
//
// mask:     grad[i] = grad[i] if output[i] > 0, else 0: backward in place, for a gradient that an
//           op without a fused mask (the direct conv's input gradient) wrote whole. Writes `=`.
//
// backward4 and mask4 are backward and mask for len a multiple of 4, one invocation per 4
// consecutive elements (on lavapipe a vec4 load costs about what a scalar one does, so it moves
// about 4x the bytes).

struct Params {
    len: u32,
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
@group(0) @binding(3) var<storage, read> saved_output: array<f32>;
@group(0) @binding(4) var<storage, read> grad_output: array<f32>;
@group(0) @binding(5) var<storage, read_write> grad_input: array<f32>;
@group(0) @binding(6) var<storage, read> saved_output4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> grad_output4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> grad_input4: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read> mask_output: array<f32>;
@group(0) @binding(10) var<storage, read_write> mask_grad: array<f32>;
@group(0) @binding(11) var<storage, read> mask_output4: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read_write> mask_grad4: array<vec4<f32>>;

const WORKGROUP: u32 = 64u;

@compute @workgroup_size(64)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    if (i >= params.len) {
        return;
    }
    output[i] = max(input[i], 0.0);
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
    var g = select(0.0, grad_output[i], saved_output[i] > 0.0);
    if (params.accumulate != 0u) {
        g += grad_input[i];
    }
    grad_input[i] = g;
}

@compute @workgroup_size(64)
fn backward4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    if (i >= params.len / 4u) {
        return;
    }
    var g = select(vec4<f32>(0.0), grad_output4[i], saved_output4[i] > vec4<f32>(0.0));
    if (params.accumulate != 0u) {
        g += grad_input4[i];
    }
    grad_input4[i] = g;
}

@compute @workgroup_size(64)
fn mask(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    if (i >= params.len) {
        return;
    }
    mask_grad[i] = select(0.0, mask_grad[i], mask_output[i] > 0.0);
}

@compute @workgroup_size(64)
fn mask4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    if (i >= params.len / 4u) {
        return;
    }
    mask_grad4[i] = select(vec4<f32>(0.0), mask_grad4[i], mask_output4[i] > vec4<f32>(0.0));
}
