//! The tape: the ops of one iteration (VGG19 truncated after the deepest layer a loss reads, the
//! Gram matrices and the loss heads) recorded once per image size as data, and the backward ops
//! derived from it in reverse, with `=` for the first gradient written into a tensor and `+=` for
//! every later one. The GPU engine and the CPU reference both execute the same tape.

use std::collections::HashMap;

use super::vgg::{layer_position, layers, min_side, Layer, Pooling, CONVS};
use super::weights::Vgg19Weights;
use crate::error::{Error, Result};
use crate::ops::conv3x3::Conv3x3Params;
use crate::ops::gram::GramParams;
use crate::ops::image::NETWORK_CHANNELS;
use crate::ops::maxpool2::Pool2Params;
use crate::ops::relu::ReluParams;
use crate::ops::sqdiff::SqDiffParams;
use crate::ops::tv::TvParams;

/// The factor each average pool's output is multiplied by (pool1 to pool4), so that its root mean
/// square equals what max pooling gives on the same input. VGG19 was trained with max pooling;
/// without the factor every layer after an average pool sees smaller activations (the content
/// loss shrinks with their square and the Gram matrices with the square of the product of the
/// factors before them), and the loss weights tuned for max pooling no longer fit. The RMS, not
/// the mean, because the losses are quadratic in the features: with these factors a 128 px render
/// of the example starts at a loss of 8.75e5 with average pooling and 9.41e5 with max pooling,
/// and ends 60 iterations later at 3.27e5 and 3.25e5. Measured on the three sample images (the
/// test `average_pooling_gains_match_max_pooling_rms_on_the_sample_images` holds each within 15%).
/// The factor sits in the weights of the conv after the pool, so a loss on a pool layer itself
/// reads the unscaled average.
pub const AVG_POOL_GAINS: [f32; 4] = [1.23, 1.64, 1.42, 1.97];

/// Index of a tensor in [`Tape::tensors`].
pub type TensorId = usize;

/// What a tensor holds; decides whether it gets a buffer of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorKind {
    /// The image being optimised, in the network's input convention.
    Image,
    /// A layer output that backward reads (a ReLU output: its mask, a pool's or Gram's input, a
    /// content feature) or that a loss reads.
    Activation,
    /// A pool output that only the next conv reads: all of them share one buffer.
    Transient,
    /// A Gram matrix.
    Gram,
    /// A loss target (content features or style Gram), written once per render.
    Target,
    /// The gradient of another tensor.
    Grad,
    /// The ReLU-masked output gradient of a conv that a [`BackOp::Relu`] writes, consumed at once:
    /// those convs share one buffer.
    Masked,
}

/// One tensor of the tape.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// Elements (f32).
    pub len: usize,
    pub kind: TensorKind,
    /// Height, width and channels, for maps; `(channels, channels, 1)` for Gram matrices.
    pub shape: (usize, usize, usize),
}

/// A forward op.
#[derive(Clone, Debug)]
pub enum Op {
    /// Conv with fused ReLU; `conv` indexes [`CONVS`].
    Conv {
        conv: usize,
        input: TensorId,
        output: TensorId,
        params: Conv3x3Params,
    },
    MaxPool {
        input: TensorId,
        output: TensorId,
        params: Pool2Params,
    },
    AvgPool {
        input: TensorId,
        output: TensorId,
        params: Pool2Params,
    },
    Gram {
        input: TensorId,
        output: TensorId,
        params: GramParams,
    },
    /// A loss head: `losses[slot] = params.scale * sum (input - target)^2`.
    SqDiff {
        input: TensorId,
        target: TensorId,
        slot: usize,
        params: SqDiffParams,
    },
    /// The TV head on the image: `losses[slot] = params.scale * TV(input)`.
    Tv {
        input: TensorId,
        slot: usize,
        params: TvParams,
    },
}

/// A backward op; `params.accumulate` says `=` or `+=` into the gradient it writes.
#[derive(Clone, Debug)]
pub enum BackOp {
    SqDiff {
        input: TensorId,
        target: TensorId,
        grad: TensorId,
        params: SqDiffParams,
    },
    Tv {
        input: TensorId,
        grad: TensorId,
        params: TvParams,
    },
    Gram {
        features: TensorId,
        grad_gram: TensorId,
        grad_features: TensorId,
        params: GramParams,
    },
    MaxPool {
        input: TensorId,
        grad_output: TensorId,
        grad_input: TensorId,
        params: Pool2Params,
    },
    AvgPool {
        grad_output: TensorId,
        grad_input: TensorId,
        params: Pool2Params,
    },
    /// ReLU's mask from the conv output, into the shared masked-gradient tensor: only where the
    /// gradient's last writer cannot apply it (see [`BackOp::ConvInput`]'s `mask`).
    Relu {
        output: TensorId,
        grad_output: TensorId,
        masked: TensorId,
        params: ReluParams,
    },
    /// The input gradient of conv `conv` from `masked` (its output's gradient, ReLU's mask
    /// applied). With `mask`, it also applies the mask of the ReLU it flows back into: it is the
    /// last writer of `grad_input`, the gradient of that ReLU's output `mask`, which the conv
    /// before reads as its `masked`, so no ReLU backward op runs in between. (A max pool's
    /// backward does the same with `params.mask`.)
    ConvInput {
        conv: usize,
        masked: TensorId,
        grad_input: TensorId,
        mask: Option<TensorId>,
        params: Conv3x3Params,
    },
}

impl BackOp {
    /// The gradient this op writes (`=` or `+=`).
    pub fn writes(&self) -> TensorId {
        match *self {
            BackOp::SqDiff { grad, .. } | BackOp::Tv { grad, .. } => grad,
            BackOp::Gram { grad_features, .. } => grad_features,
            BackOp::MaxPool { grad_input, .. } | BackOp::AvgPool { grad_input, .. } => grad_input,
            BackOp::Relu { masked, .. } => masked,
            BackOp::ConvInput { grad_input, .. } => grad_input,
        }
    }
}

/// Which term of the loss a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    Content,
    Style,
    Tv,
}

impl LossKind {
    /// Every kind, in the order the total sums them.
    pub const ALL: [LossKind; 3] = [LossKind::Content, LossKind::Style, LossKind::Tv];

    /// The name of the term in progress lines and the `--log` JSON (`content`, `style`, `tv`).
    pub fn name(self) -> &'static str {
        match self {
            LossKind::Content => "content",
            LossKind::Style => "style",
            LossKind::Tv => "tv",
        }
    }

    /// The short label of its share of the loss on a terminal's progress line (`c`, `s`, `tv`).
    pub fn abbreviation(self) -> &'static str {
        match self {
            LossKind::Content => "c",
            LossKind::Style => "s",
            LossKind::Tv => "tv",
        }
    }

    /// Whether its terms each read one network layer (the TV term reads the image).
    pub fn per_layer(self) -> bool {
        !matches!(self, LossKind::Tv)
    }
}

/// One slot of the loss buffer.
#[derive(Clone, Debug)]
pub struct LossTerm {
    pub kind: LossKind,
    /// The layer it reads (`relu4_2`), or `image` for TV.
    pub layer: String,
    /// The target tensor (content features or style Gram), none for TV.
    pub target: Option<TensorId>,
    /// The tensor whose value becomes the target: the layer output or its Gram.
    pub source: TensorId,
}

/// What one iteration computes.
#[derive(Clone, Debug)]
pub struct LossSpec {
    pub height: usize,
    pub width: usize,
    pub pooling: Pooling,
    /// (layer, weight): `weight * mean((F - P)^2)` per layer.
    pub content: Vec<(String, f64)>,
    /// (layer, weight): `weight * mean((G - A)^2)` per layer, over the C x C Gram entries.
    pub style: Vec<(String, f64)>,
    /// Weight of the TV term: `tv * sum |neighbour differences|`.
    pub tv: f64,
}

/// The recorded iteration.
#[derive(Clone, Debug)]
pub struct Tape {
    pub spec: LossSpec,
    pub tensors: Vec<TensorInfo>,
    pub image: TensorId,
    pub forward: Vec<Op>,
    pub backward: Vec<BackOp>,
    /// The gradient of each tensor that receives one.
    pub grads: HashMap<TensorId, TensorId>,
    pub losses: Vec<LossTerm>,
    /// Layer outputs by name (`relu1_1`, `pool1`, ...), up to the deepest layer used.
    pub outputs: Vec<(String, TensorId)>,
}

impl Tape {
    fn add(&mut self, name: String, kind: TensorKind, shape: (usize, usize, usize)) -> TensorId {
        self.tensors.push(TensorInfo { name, len: shape.0 * shape.1 * shape.2, kind, shape });
        self.tensors.len() - 1
    }

    fn grad_of(&mut self, t: TensorId) -> TensorId {
        if let Some(&g) = self.grads.get(&t) {
            return g;
        }
        let info = self.tensors[t].clone();
        let g = self.add(format!("d {}", info.name), TensorKind::Grad, info.shape);
        self.grads.insert(t, g);
        g
    }

    /// Records the iteration `spec` describes.
    pub fn build(spec: &LossSpec) -> Result<Tape> {
        let (h, w) = (spec.height, spec.width);
        let mut used: Vec<(&str, usize)> = Vec::new();
        for (name, _) in spec.content.iter().chain(&spec.style) {
            used.push((name, layer_position(name)?));
        }
        for (name, _) in &used {
            let side = min_side(name)?;
            if h < side || w < side {
                return Err(Error::ImageSize {
                    height: h,
                    width: w,
                    message: format!("layer {name} needs at least {side}x{side} pixels; use a larger size"),
                });
            }
        }
        if h == 0 || w == 0 {
            return Err(Error::ImageSize { height: h, width: w, message: "the image is empty".into() });
        }
        let deepest = used.iter().map(|&(_, p)| p).max();

        let mut tape = Tape {
            spec: spec.clone(),
            tensors: Vec::new(),
            image: 0,
            forward: Vec::new(),
            backward: Vec::new(),
            grads: HashMap::new(),
            losses: Vec::new(),
            outputs: Vec::new(),
        };
        tape.image = tape.add("image".into(), TensorKind::Image, (h, w, NETWORK_CHANNELS));

        // The network, truncated after the deepest layer a loss reads.
        let loss_layers: Vec<&str> = used.iter().map(|&(n, _)| n).collect();
        let (mut current, mut ch, mut cw, mut cc) = (tape.image, h, w, NETWORK_CHANNELS);
        for (position, layer) in layers().into_iter().enumerate() {
            if deepest.is_none_or(|d| position > d) {
                break;
            }
            let name = layer.output_name();
            match layer {
                Layer::Conv(i) => {
                    let c = CONVS[i];
                    let output = tape.add(name.clone(), TensorKind::Activation, (ch, cw, c.out_channels));
                    // conv1_1 reads the 4-channel network image: its weights are padded with zeros.
                    let params = Conv3x3Params::new(ch, cw, cc, c.out_channels).with_relu(true);
                    tape.forward.push(Op::Conv { conv: i, input: current, output, params });
                    current = output;
                    cc = c.out_channels;
                }
                Layer::Pool(_) => {
                    let params = Pool2Params::new(ch, cw, cc);
                    let (oh, ow) = (params.out_height(), params.out_width());
                    let kind = if loss_layers.contains(&name.as_str()) {
                        TensorKind::Activation
                    } else {
                        TensorKind::Transient
                    };
                    let output = tape.add(name.clone(), kind, (oh, ow, cc));
                    tape.forward.push(match spec.pooling {
                        Pooling::Max => Op::MaxPool { input: current, output, params },
                        Pooling::Avg => Op::AvgPool { input: current, output, params },
                    });
                    current = output;
                    (ch, cw) = (oh, ow);
                }
            }
            tape.outputs.push((name, current));
        }
        let output = |tape: &Tape, name: &str| tape.outputs.iter().find(|(n, _)| n == name).map(|&(_, t)| t).unwrap();

        // Loss heads.
        for (name, weight) in &spec.content {
            let input = output(&tape, name);
            let info = tape.tensors[input].clone();
            let target = tape.add(format!("content target {name}"), TensorKind::Target, info.shape);
            let slot = tape.losses.len();
            let params = SqDiffParams::mean(info.len, *weight);
            tape.forward.push(Op::SqDiff { input, target, slot, params });
            tape.losses.push(LossTerm {
                kind: LossKind::Content,
                layer: name.clone(),
                target: Some(target),
                source: input,
            });
        }
        for (name, weight) in &spec.style {
            let input = output(&tape, name);
            let (fh, fw, c) = tape.tensors[input].shape;
            let gram = tape.add(format!("gram {name}"), TensorKind::Gram, (c, c, 1));
            tape.forward.push(Op::Gram { input, output: gram, params: GramParams::new(fh, fw, c) });
            let target = tape.add(format!("style target {name}"), TensorKind::Target, (c, c, 1));
            let slot = tape.losses.len();
            let params = SqDiffParams::mean(c * c, *weight);
            tape.forward.push(Op::SqDiff { input: gram, target, slot, params });
            tape.losses.push(LossTerm {
                kind: LossKind::Style,
                layer: name.clone(),
                target: Some(target),
                source: gram,
            });
        }
        if spec.tv != 0.0 {
            let slot = tape.losses.len();
            let params = TvParams::new(h, w, NETWORK_CHANNELS, spec.tv as f32);
            tape.forward.push(Op::Tv { input: tape.image, slot, params });
            tape.losses.push(LossTerm { kind: LossKind::Tv, layer: "image".into(), target: None, source: tape.image });
        }

        tape.record_backward();
        Ok(tape)
    }

    /// Derives the backward ops from the forward ones, in reverse. A gradient's first writer
    /// overwrites it; later writers add to it (a style layer's features get the Gram loss's
    /// gradient and the next conv's). The loss heads come last in the forward ops, so the last
    /// writer of a conv's output gradient is the network op that reads that output (the next conv
    /// or a max pool): it applies the conv's ReLU mask to what it writes, and the conv's input
    /// gradient reads that gradient directly. Where the last writer is a loss head or an average
    /// pool (the deepest layer, or average pooling), a [`BackOp::Relu`] masks it into a scratch.
    fn record_backward(&mut self) {
        let mut written: HashMap<TensorId, bool> = HashMap::new();
        let mut first = |t: TensorId| written.insert(t, true).is_none();
        let has = |grads: &HashMap<TensorId, TensorId>, t: TensorId| grads.contains_key(&t);
        let mut masked = None;
        let mut backward = Vec::new();
        for op in self.forward.clone().iter().rev() {
            match *op {
                Op::SqDiff { input, target, params, .. } => {
                    let grad = self.grad_of(input);
                    let params = params.with_accumulate(!first(grad));
                    backward.push(BackOp::SqDiff { input, target, grad, params });
                }
                Op::Tv { input, params, .. } => {
                    let grad = self.grad_of(input);
                    let params = params.with_accumulate(!first(grad));
                    backward.push(BackOp::Tv { input, grad, params });
                }
                Op::Gram { input, output, params } if has(&self.grads, output) => {
                    let grad_gram = self.grads[&output];
                    let grad_features = self.grad_of(input);
                    let params = params.with_accumulate(!first(grad_features));
                    backward.push(BackOp::Gram { features: input, grad_gram, grad_features, params });
                }
                Op::MaxPool { input, output, params } if has(&self.grads, output) => {
                    let grad_output = self.grads[&output];
                    let grad_input = self.grad_of(input);
                    let params = params.with_accumulate(!first(grad_input));
                    backward.push(BackOp::MaxPool { input, grad_output, grad_input, params });
                }
                Op::AvgPool { input, output, params } if has(&self.grads, output) => {
                    let grad_output = self.grads[&output];
                    let grad_input = self.grad_of(input);
                    let params = params.with_accumulate(!first(grad_input));
                    backward.push(BackOp::AvgPool { grad_output, grad_input, params });
                }
                Op::Conv { conv, input, output, params } if has(&self.grads, output) => {
                    let grad_output = self.grads[&output];
                    let last_writer = backward.iter_mut().rev().find(|op| op.writes() == grad_output);
                    let m = match last_writer {
                        Some(BackOp::ConvInput { mask, .. }) => {
                            *mask = Some(output);
                            grad_output
                        }
                        Some(BackOp::MaxPool { params, .. }) => {
                            *params = params.with_mask(true);
                            grad_output
                        }
                        _ => {
                            let len = self.tensors[output].len;
                            let m = *masked.get_or_insert_with(|| {
                                self.add("masked gradient".into(), TensorKind::Masked, (len, 1, 1))
                            });
                            if self.tensors[m].len < len {
                                self.tensors[m].len = len;
                                self.tensors[m].shape = (len, 1, 1);
                            }
                            let params = ReluParams::new(len);
                            backward.push(BackOp::Relu { output, grad_output, masked: m, params });
                            m
                        }
                    };
                    let grad_input = self.grad_of(input);
                    let params = params.with_relu(false).with_accumulate(!first(grad_input));
                    backward.push(BackOp::ConvInput { conv, masked: m, grad_input, mask: None, params });
                }
                _ => {}
            }
        }
        self.backward = backward;
    }

    /// The same tape with the loss weights of `spec`, which must describe the same iteration but
    /// for its weights (size, pooling, layers, whether there is a TV term): the weights live only
    /// in the loss heads' params, so nothing is recorded again. A render records its tape with
    /// unit style layer factors to check the size, then sets the factors its targets give.
    pub fn with_loss_weights(mut self, spec: &LossSpec) -> Result<Tape> {
        let names = |l: &[(String, f64)]| l.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        let same = spec.height == self.spec.height
            && spec.width == self.spec.width
            && spec.pooling == self.spec.pooling
            && names(&spec.content) == names(&self.spec.content)
            && names(&spec.style) == names(&self.spec.style)
            && (spec.tv != 0.0) == (self.spec.tv != 0.0);
        if !same {
            return Err(Error::Shape {
                kernel: "tape".into(),
                message: "new loss weights must keep the size, pooling, layers and TV term of the tape".into(),
            });
        }
        // A loss head's weight by its target tensor (content terms first, then style, as built).
        let weights: HashMap<TensorId, f64> = self
            .losses
            .iter()
            .filter_map(|t| t.target)
            .zip(spec.content.iter().chain(&spec.style).map(|&(_, w)| w))
            .collect();
        for op in &mut self.forward {
            match op {
                Op::SqDiff { target, params, .. } => {
                    *params = SqDiffParams::mean(params.len(), weights[target]).with_accumulate(params.accumulate != 0)
                }
                Op::Tv { params, .. } => params.scale = spec.tv as f32,
                _ => {}
            }
        }
        for op in &mut self.backward {
            match op {
                BackOp::SqDiff { target, params, .. } => {
                    *params = SqDiffParams::mean(params.len(), weights[target]).with_accumulate(params.accumulate != 0)
                }
                BackOp::Tv { params, .. } => params.scale = spec.tv as f32,
                _ => {}
            }
        }
        self.spec = spec.clone();
        Ok(self)
    }

    /// The same tape without its backward: for computing targets (a style image's Gram
    /// matrices), which needs no gradient buffers. Gradient tensors keep their ids with no elements.
    pub fn without_backward(mut self) -> Tape {
        self.backward.clear();
        self.grads.clear();
        for t in &mut self.tensors {
            if matches!(t.kind, TensorKind::Grad | TensorKind::Masked) {
                t.len = 0;
            }
        }
        self
    }

    /// The gradient of the total loss with respect to the image, if any loss reaches it.
    pub fn image_grad(&self) -> Option<TensorId> {
        self.grads.get(&self.image).copied()
    }

    /// The tensor holding layer `name`'s output.
    pub fn output(&self, name: &str) -> Option<TensorId> {
        self.outputs.iter().find(|(n, _)| n == name).map(|&(_, t)| t)
    }

    /// Elements of the loss-partials scratch buffer: the most partial sums any head writes.
    pub fn partials_len(&self) -> usize {
        self.forward
            .iter()
            .filter_map(|op| match op {
                Op::SqDiff { params, .. } => Some(params.partials()),
                Op::Tv { params, .. } => Some(params.partials()),
                _ => None,
            })
            .max()
            .unwrap_or(1)
    }

    /// The factor on conv `conv`'s weights: [`AVG_POOL_GAINS`] for the first conv after an average
    /// pool (blocks 2 to 5), else 1. Scaling the weights of the conv that reads a pool's output
    /// is the same as scaling the pool's output (the conv is linear before its bias), so the
    /// pooling kernels stay as they are and the CPU reference and the GPU agree by construction.
    pub fn conv_gain(&self, conv: usize) -> f32 {
        let c = CONVS[conv];
        let first_of_block = conv == 0 || CONVS[conv - 1].block != c.block;
        match self.spec.pooling {
            Pooling::Avg if first_of_block && c.block >= 2 => AVG_POOL_GAINS[c.block - 2],
            _ => 1.0,
        }
    }

    /// Conv `conv`'s weights as this tape runs them: input channels padded with zeros to
    /// `in_channels` (conv1_1 reads the 4-channel network image), times [`Tape::conv_gain`].
    pub fn conv_weights(&self, weights: &Vgg19Weights, conv: usize, in_channels: usize) -> Vec<f32> {
        let mut w = weights.convs[conv].padded(in_channels);
        let gain = self.conv_gain(conv);
        if gain != 1.0 {
            w.iter_mut().for_each(|v| *v *= gain);
        }
        w
    }

    /// Each conv the tape runs, in order, with its params.
    pub fn conv_params(&self) -> impl Iterator<Item = (usize, Conv3x3Params)> + '_ {
        self.forward.iter().filter_map(|op| match *op {
            Op::Conv { conv, params, .. } => Some((conv, params)),
            _ => None,
        })
    }
}
