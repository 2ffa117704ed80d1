// gram_blocked: the Gram matrix forward of gram.wgsl, blocked for speed. Requires channels % 4 == 0.
//
// forward: gram[i, j] = scale * sum_p F[p, i] * F[p, j], F channels-last (positions x channels).
//          Each 4x4 block of the Gram matrix is summed by `split` invocations (a power of two,
//          1..64, about positions / 1024, so small maps use one invocation per block and large ones
//          split the positions): invocation t of a block takes positions t, t + split, ... and per
//          position two vec4 loads (channels i0..i0+3 and j0..j0+3) feed 16 multiply-adds. A tree
//          reduction in workgroup memory adds the `split` partial blocks. A workgroup of 64
//          invocations holds 64 / split blocks. No invocation loops more than positions / split
//          times (at most 4096 up to 1024x1024). Writes `=`, or `+=` when params.accumulate != 0
//          (a map too large for one binding is summed band by band of positions, in order).
//
// Bindings (group 0):
//   0 params     uniform     (the GramParams of gram.wgsl)
//   1 features   read        vec4 along channels
//   2 gram       read_write

struct Params {
    positions: u32,
    channels: u32,
    accumulate: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> features: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> gram: array<f32>;

const WORKGROUP: u32 = 64u;

var<workgroup> scratch: array<mat4x4<f32>, 64>;

// Invocations per block: the Rust side's GramParams::split computes the same.
fn split_for(positions: u32) -> u32 {
    return min(1u << firstLeadingBit(max(positions / 1024u, 1u)), 64u);
}

@compute @workgroup_size(64)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let blocks = params.channels / 4u;
    let split = split_for(params.positions);
    let group = wid.x + wid.y * nwg.x;
    if (group * (WORKGROUP / split) >= blocks * blocks) {
        return;
    }
    let phase = lid % split;
    let block = group * (WORKGROUP / split) + lid / split;
    // Invocations past the last block still run the reduction's barriers; they add zeros.
    let live = block < blocks * blocks;
    let bi = select(0u, block / blocks, live);
    let bj = select(0u, block % blocks, live);
    // acc[jj][ii] = sum_p F[p, 4bi + ii] * F[p, 4bj + jj]
    var acc = mat4x4<f32>();
    if (live) {
        for (var p = phase; p < params.positions; p += split) {
            let fi = features[p * blocks + bi];
            let fj = features[p * blocks + bj];
            acc[0] += fi * fj.x;
            acc[1] += fi * fj.y;
            acc[2] += fi * fj.z;
            acc[3] += fi * fj.w;
        }
    }
    scratch[lid] = acc;
    workgroupBarrier();
    for (var stride = split / 2u; stride > 0u; stride /= 2u) {
        if (phase < stride) {
            scratch[lid] = scratch[lid] + scratch[lid + stride];
        }
        workgroupBarrier();
    }
    if (live && phase == 0u) {
        let c = params.channels;
        let sum = scratch[lid];
        for (var jj = 0u; jj < 4u; jj++) {
            for (var ii = 0u; ii < 4u; ii++) {
                let at = (4u * bi + ii) * c + 4u * bj + jj;
                var g = params.scale * sum[jj][ii];
                if (params.accumulate != 0u) {
                    g += gram[at];
                }
                gram[at] = g;
            }
        }
    }
}
