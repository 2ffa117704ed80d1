// vector: the vector arithmetic of the optimisers over the image (L-BFGS's two-loop recursion, the
// moving average of the iterates), with scalar coefficients that live on the GPU.
//
// Every coefficient is  coef = factor * (scalars[num] - scalars[sub]) / max(scalars[den], floor):
// a host literal (`factor`) times a ratio of values earlier kernels wrote into the scalar buffer
// (dot products summed by reduce.wgsl). Slot 0 of the scalar buffer holds 0 and slot 1 holds 1, so
// `num = 1, sub = 0, den = 1, floor = 0` makes coef = factor.
//
// dot_partials: partials[block] = sum of a[i] * b[i] over block `block` of 1024 elements (32
//               invocations x 32 elements, then a tree in workgroup memory: a fixed order, so the
//               sum is the same on every run). Writes `=`; reduce.wgsl then adds the partials into
//               one scalar slot.
// axpby:        y[i] = y_scale * y[i] + coef * x[i]; with y_scale = 0, y is not read (y = coef * x).
//               Writes `=` (in place on y).
// scale:        y[i] = coef * y[i]. Writes `=` (in place).
// step:         y[i] = clamp(y[i] + coef * x[i], lower[i % 4], upper[i % 4]): a step of the image,
//               kept in its valid range per channel. Writes `=` (in place).
//
// Bindings (group 0):
//   0 params     uniform
//   1 a          read        dot_partials
//   2 b          read        dot_partials
//   3 partials   read_write  dot_partials
//   4 scalars    read        axpby, scale, step
//   5 x          read        axpby, step
//   6 y          read_write  axpby, scale, step

struct Params {
    len: u32,
    num: u32,
    sub: u32,
    den: u32,
    factor: f32,
    floor: f32,
    y_scale: f32,
    _pad: u32,
    lower: vec4<f32>,
    upper: vec4<f32>,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;
@group(0) @binding(4) var<storage, read> scalars: array<f32>;
@group(0) @binding(5) var<storage, read> x: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

const REDUCE_WORKGROUP: u32 = 32u;
const PER_INVOCATION: u32 = 32u;
const WORKGROUP: u32 = 64u;

var<workgroup> scratch: array<f32, 32>;

fn coefficient() -> f32 {
    let ratio = (scalars[params.num] - scalars[params.sub]) / max(scalars[params.den], params.floor);
    return params.factor * ratio;
}

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
}

@compute @workgroup_size(REDUCE_WORKGROUP)
fn dot_partials(
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
            s = fma(a[i], b[i], s);
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
        partials[block] = scratch[0];
    }
}

@compute @workgroup_size(64)
fn axpby(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wid, nwg, lid);
    if (i >= params.len) {
        return;
    }
    var value = coefficient() * x[i];
    if (params.y_scale != 0.0) {
        value = fma(params.y_scale, y[i], value);
    }
    y[i] = value;
}

@compute @workgroup_size(64)
fn scale(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wid, nwg, lid);
    if (i >= params.len) {
        return;
    }
    y[i] = coefficient() * y[i];
}

@compute @workgroup_size(64)
fn step(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = flat_index(wid, nwg, lid);
    if (i >= params.len) {
        return;
    }
    let stepped = fma(coefficient(), x[i], y[i]);
    y[i] = clamp(stepped, params.lower[i % 4u], params.upper[i % 4u]);
}
