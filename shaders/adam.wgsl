// adam: one bias-corrected Adam step (Kingma and Ba, Algorithm 1), in place on the image.
//
// step:  m[i] = beta1 * m[i] + (1 - beta1) * g[i]
//        v[i] = beta2 * v[i] + (1 - beta2) * g[i]^2
//        x[i] = x[i] - lr * (m[i] / bias_correction1) / (sqrt(v[i] / bias_correction2) + epsilon)
//        with bias_correction1 = 1 - beta1^t and bias_correction2 = 1 - beta2^t at step t = 1, 2, ...
//        (computed on the host in f64), then x[i] = clamp(x[i], lower[i % 4], upper[i % 4]): the
//        image's valid range per channel (unbounded: -f32::MAX..f32::MAX). x, m and v are updated
//        in place (`=`).
//
// Bindings (group 0):
//   0 params   uniform
//   1 grad     read
//   2 x        read_write  (the image being optimised)
//   3 m        read_write  (first moment, zero at t = 1)
//   4 v        read_write  (second moment, zero at t = 1)

struct Params {
    len: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    epsilon: f32,
    bias_correction1: f32,
    bias_correction2: f32,
    _pad: u32,
    lower: vec4<f32>,
    upper: vec4<f32>,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

const WORKGROUP: u32 = 64u;

@compute @workgroup_size(64)
fn step(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    if (i >= params.len) {
        return;
    }
    let g = grad[i];
    let m_new = params.beta1 * m[i] + (1.0 - params.beta1) * g;
    let v_new = params.beta2 * v[i] + (1.0 - params.beta2) * g * g;
    m[i] = m_new;
    v[i] = v_new;
    let m_hat = m_new / params.bias_correction1;
    let v_hat = v_new / params.bias_correction2;
    let stepped = x[i] - params.lr * m_hat / (sqrt(v_hat) + params.epsilon);
    x[i] = clamp(stepped, params.lower[i % 4u], params.upper[i % 4u]);
}
