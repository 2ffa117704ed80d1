// conv3x3: 3x3 convolution, stride 1, zero padding 1, with bias and optional fused ReLU.
//
// Layout: activations are channels-last (HWC): element (y, x, c) is at (y * width + x) * channels + c.
// Weights are [out_channels][3][3][in_channels].
//
// forward:        output[y, x, co] = act(bias[co] + sum_{ky, kx, ci} input[y + ky - 1, x + kx - 1, ci]
//                                                               * weights[co, ky, kx, ci])
//                 act is ReLU when params.relu != 0, else the identity. Writes `=`, or `+=` when
//                 params.accumulate != 0 (the engine computes input gradients as this forward with
//                 flipped, transposed weights).
// backward_input: grad_input[y, x, ci] = sum_{ky, kx, co} grad_output[y - ky + 1, x - kx + 1, co]
//                                                        * weights[co, ky, kx, ci]
//                 (a convolution with the weights flipped and transposed). The weights are frozen, so
//                 there is no weight gradient. Writes `=`, or `+=` when params.accumulate != 0.
//                 ReLU's gradient is not applied here: relu.wgsl's backward does it.
// Out-of-image taps read zero. One invocation per output element (gather; no atomics).
//
// Bands (forward only): a map too large for one binding is computed in bands of output rows.
// This dispatch computes rows band_start..band_start + band_rows; its input binding starts at map
// row input_start (the band less its halo row, or 0 for a whole map) and its output binding at map
// row output_start (band_start, or 0). Unbanded: all three starts 0, band_rows = height.
// backward_input takes no bands.
//
// Bindings (group 0):
//   0 params                     uniform
//   1 weights                    read        forward, backward_input
//   2 bias                       read        forward
//   3 input / grad_output        read        forward reads the input, backward_input the output gradient
//   4 output / grad_input        read_write  forward writes the output, backward_input the input gradient

struct Params {
    height: u32,
    width: u32,
    in_channels: u32,
    out_channels: u32,
    relu: u32,
    accumulate: u32,
    band_start: u32,
    band_rows: u32,
    input_start: u32,
    output_start: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> weights: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> src: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

const WORKGROUP: u32 = 64u;

@compute @workgroup_size(64)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let index = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    let cin = params.in_channels;
    let cout = params.out_channels;
    if (index >= params.band_rows * params.width * cout) {
        return;
    }
    let co = index % cout;
    let pixel = index / cout;
    let x = i32(pixel % params.width);
    // The map row; `index` counts from the band's first row.
    let y = i32(params.band_start + pixel / params.width);
    let out = index + (params.band_start - params.output_start) * params.width * cout;
    var acc = 0.0;
    for (var ky = 0; ky < 3; ky++) {
        let sy = y + ky - 1;
        if (sy < 0 || sy >= i32(params.height)) {
            continue;
        }
        for (var kx = 0; kx < 3; kx++) {
            let sx = x + kx - 1;
            if (sx < 0 || sx >= i32(params.width)) {
                continue;
            }
            let s = ((u32(sy) - params.input_start) * params.width + u32(sx)) * cin;
            let w = ((co * 3u + u32(ky)) * 3u + u32(kx)) * cin;
            for (var ci = 0u; ci < cin; ci++) {
                acc += src[s + ci] * weights[w + ci];
            }
        }
    }
    acc += bias[co];
    if (params.relu != 0u) {
        acc = max(acc, 0.0);
    }
    if (params.accumulate != 0u) {
        acc += dst[out];
    }
    dst[out] = acc;
}

@compute @workgroup_size(64)
fn backward_input(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let index = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    let cin = params.in_channels;
    let cout = params.out_channels;
    if (index >= params.height * params.width * cin) {
        return;
    }
    let ci = index % cin;
    let pixel = index / cin;
    let x = i32(pixel % params.width);
    let y = i32(pixel / params.width);
    var acc = 0.0;
    for (var ky = 0; ky < 3; ky++) {
        let oy = y - ky + 1;
        if (oy < 0 || oy >= i32(params.height)) {
            continue;
        }
        for (var kx = 0; kx < 3; kx++) {
            let ox = x - kx + 1;
            if (ox < 0 || ox >= i32(params.width)) {
                continue;
            }
            let g = (u32(oy) * params.width + u32(ox)) * cout;
            for (var co = 0u; co < cout; co++) {
                acc += src[g + co] * weights[((co * 3u + u32(ky)) * 3u + u32(kx)) * cin + ci];
            }
        }
    }
    if (params.accumulate != 0u) {
        acc += dst[index];
    }
    dst[index] = acc;
}
