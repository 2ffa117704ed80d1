// gram: the Gram matrix of a feature map and its gradient.
//
// The feature map F is channels-last: `positions` rows (height * width) of `channels` values.
// forward:  gram[i, j] = scale * sum_p F[p, i] * F[p, j]   (a channels x channels matrix).
//           The normaliser is params.scale; nst uses scale = 1 / (height * width), so the Gram matrix is
//           the mean over positions of the channel outer products and does not grow with image size.
//           One workgroup of 64 invocations per element (i, j): invocation t adds positions t, t + 64,
//           t + 128, ..., then a tree reduction in workgroup memory. No invocation loops more than
//           positions / 64 times (lavapipe stops any loop after about 65535 iterations). Writes `=`,
//           or `+=` when params.accumulate != 0 (a map too large for one binding is summed band by
//           band of positions, in order: scale * F₁ᵀF₁ + scale * F₂ᵀF₂ + ...).
// backward: grad_features[p, i] = scale * sum_j (grad_gram[i, j] + grad_gram[j, i]) * F[p, j].
//           Writes `=`, or `+=` when params.accumulate != 0 (a style layer's features also feed the
//           next convolution, whose input gradient is summed with this one).
//
// Bindings (group 0):
//   0 params          uniform
//   1 features        read        forward, backward
//   2 gram            read_write  forward, scale
//   3 grad_gram       read        backward
//   4 grad_features   read_write  backward
//   5 sym             read_write  symmetrize, symmetrize_tiled
//
// symmetrize: sym[i, j] = scale * (grad_gram[i, j] + grad_gram[j, i]), the weights with which the
//           engine runs the backward as a pointwise conv (conv3x3_subgroup with KSIZE 1):
//           grad_features[p, :] = sym x F[p, :]. Writes `=`.
// symmetrize_tiled: the same values in the order of the pointwise conv's weights texture
//           (conv3x3_subgroup.wgsl.tmpl with KSIZE 1 and CO_TILE 32, read through textures): texel
//           (k, (co / 32) * channels / 4 + c4) of a texture 32 texels wide holds sym[co, 4 c4 ..
//           4 c4 + 3] for co = 32 (co / 32) + k, and sym is that texture's texels row by row, which a
//           buffer-to-texture copy moves into it. channels must be a multiple of 32. Writes `=`.
// scale:    gram[i, j] = scale * gram[i, j], in place (`*=`): the last step of the forward as the
//           engine runs it with subgroups, where a pointwise conv over the transposed features
//           (transpose.wgsl) sums Fᵀ F chunk by chunk of positions.

struct Params {
    positions: u32,
    channels: u32,
    accumulate: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> features: array<f32>;
@group(0) @binding(2) var<storage, read_write> gram: array<f32>;
@group(0) @binding(3) var<storage, read> grad_gram: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad_features: array<f32>;
@group(0) @binding(5) var<storage, read_write> sym: array<f32>;

const WORKGROUP: u32 = 64u;

var<workgroup> scratch: array<f32, 64>;

@compute @workgroup_size(64)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let index = wid.x + wid.y * nwg.x;
    let c = params.channels;
    if (index >= c * c) {
        return;
    }
    let i = index / c;
    let j = index % c;
    var s = 0.0;
    for (var p = lid; p < params.positions; p += WORKGROUP) {
        s += features[p * c + i] * features[p * c + j];
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
        var g = params.scale * scratch[0];
        if (params.accumulate != 0u) {
            g += gram[index];
        }
        gram[index] = g;
    }
}

@compute @workgroup_size(64)
fn backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let index = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    let c = params.channels;
    if (index >= params.positions * c) {
        return;
    }
    let i = index % c;
    let row = index - i;
    var acc = 0.0;
    for (var j = 0u; j < c; j++) {
        acc += (grad_gram[i * c + j] + grad_gram[j * c + i]) * features[row + j];
    }
    var g = params.scale * acc;
    if (params.accumulate != 0u) {
        g += grad_features[index];
    }
    grad_features[index] = g;
}

// Entry (i, j) of sym = scale * (grad_gram + grad_gramᵀ), which both symmetrize entries write.
fn symmetrized(i: u32, j: u32) -> f32 {
    let c = params.channels;
    return params.scale * (grad_gram[i * c + j] + grad_gram[j * c + i]);
}

@compute @workgroup_size(64)
fn symmetrize(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let index = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    let c = params.channels;
    if (index >= c * c) {
        return;
    }
    sym[index] = symmetrized(index / c, index % c);
}

@compute @workgroup_size(64)
fn symmetrize_tiled(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let index = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    let c = params.channels;
    if (index >= c * c) {
        return;
    }
    let c4 = c / 4u;
    let texel = index / 4u;
    let row = texel / 32u;
    let i = (row / c4) * 32u + texel % 32u;
    let j = (row % c4) * 4u + index % 4u;
    sym[index] = symmetrized(i, j);
}

@compute @workgroup_size(64)
fn scale(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let index = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    if (index >= params.channels * params.channels) {
        return;
    }
    gram[index] = params.scale * gram[index];
}
