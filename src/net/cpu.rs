//! The CPU reference of the whole network: the same tape, executed with the CPU twins in plain
//! loops, in f32 or f64. The oracle for the GPU engine, and itself checked against finite
//! differences.

use super::tape::{BackOp, LossKind, Op, Tape};
use super::weights::Vgg19Weights;
use crate::ops::{avgpool2, conv3x3, gram, maxpool2, relu, sqdiff, tv};
use crate::real::convert;
use crate::Real;

/// VGG19's weights converted to `T`, for the convs a tape uses.
pub struct CpuNet<T> {
    weights: Vec<(Vec<T>, Vec<T>)>,
}

/// One zeroed vector per tensor of `tape`.
pub fn new_values<T: Real>(tape: &Tape) -> Vec<Vec<T>> {
    tape.tensors.iter().map(|t| vec![T::zero(); t.len]).collect()
}

impl<T: Real> CpuNet<T> {
    pub fn new(weights: &Vgg19Weights, tape: &Tape) -> CpuNet<T> {
        // Weights as the tape runs them: padded to each conv's input channels, with its gain.
        let weights = tape
            .conv_params()
            .map(|(conv, p)| {
                (convert(&tape.conv_weights(weights, conv, p.in_channels as usize)), convert(&weights.convs[conv].bias))
            })
            .collect();
        CpuNet { weights }
    }

    /// Runs the forward ops, the loss heads included; returns the loss of each slot.
    pub fn forward(&self, tape: &Tape, values: &mut [Vec<T>]) -> Vec<T> {
        let mut losses = vec![T::zero(); tape.losses.len()];
        for op in &tape.forward {
            match *op {
                Op::Conv { conv, input, output, params } => {
                    let (w, b) = &self.weights[conv];
                    let mut out = std::mem::take(&mut values[output]);
                    conv3x3::forward(&params, w, b, &values[input], &mut out);
                    values[output] = out;
                }
                Op::MaxPool { input, output, params } => {
                    let mut out = std::mem::take(&mut values[output]);
                    maxpool2::forward(&params, &values[input], &mut out);
                    values[output] = out;
                }
                Op::AvgPool { input, output, params } => {
                    let mut out = std::mem::take(&mut values[output]);
                    avgpool2::forward(&params, &values[input], &mut out);
                    values[output] = out;
                }
                Op::Gram { input, output, params } => {
                    let mut out = std::mem::take(&mut values[output]);
                    gram::forward(&params, &values[input], &mut out);
                    values[output] = out;
                }
                Op::SqDiff { input, target, slot, params } => {
                    losses[slot] = sqdiff::loss(&params, &values[input], &values[target]);
                }
                Op::Tv { input, slot, params } => {
                    losses[slot] = tv::loss(&params, &values[input]);
                }
            }
        }
        losses
    }

    /// Runs the backward ops; afterwards `values[tape.image_grad()]` holds d loss / d image.
    /// Needs the values of a forward run.
    pub fn backward(&self, tape: &Tape, values: &mut [Vec<T>]) {
        for op in &tape.backward {
            match *op {
                BackOp::SqDiff { input, target, grad, params } => {
                    let mut g = std::mem::take(&mut values[grad]);
                    sqdiff::backward(&params, &values[input], &values[target], &mut g);
                    values[grad] = g;
                }
                BackOp::Tv { input, grad, params } => {
                    let mut g = std::mem::take(&mut values[grad]);
                    tv::backward(&params, &values[input], &mut g);
                    values[grad] = g;
                }
                BackOp::Gram { features, grad_gram, grad_features, params } => {
                    let mut g = std::mem::take(&mut values[grad_features]);
                    gram::backward(&params, &values[features], &values[grad_gram], &mut g);
                    values[grad_features] = g;
                }
                BackOp::MaxPool { input, grad_output, grad_input, params } => {
                    let mut g = std::mem::take(&mut values[grad_input]);
                    maxpool2::backward(&params, &values[input], &values[grad_output], &mut g);
                    values[grad_input] = g;
                }
                BackOp::AvgPool { grad_output, grad_input, params } => {
                    let mut g = std::mem::take(&mut values[grad_input]);
                    avgpool2::backward(&params, &values[grad_output], &mut g);
                    values[grad_input] = g;
                }
                BackOp::Relu { output, grad_output, masked, params } => {
                    let mut g = std::mem::take(&mut values[masked]);
                    relu::backward(&params, &values[output], &values[grad_output], &mut g);
                    values[masked] = g;
                }
                BackOp::ConvInput { conv, masked, grad_input, mask, params } => {
                    let mut g = std::mem::take(&mut values[grad_input]);
                    conv3x3::backward_input(&params, &self.weights[conv].0, &values[masked], &mut g);
                    if let Some(mask) = mask {
                        relu::mask(&relu::ReluParams::new(g.len()), &values[mask], &mut g);
                    }
                    values[grad_input] = g;
                }
            }
        }
    }
}

/// Copies each `kind` loss's source (layer output or Gram) into its target, after a forward run.
pub fn capture_targets<T: Real>(tape: &Tape, values: &mut [Vec<T>], kind: LossKind) {
    for term in tape.losses.iter().filter(|t| t.kind == kind) {
        if let Some(target) = term.target {
            values[target] = values[term.source].clone();
        }
    }
}
