//! VGG19's layer structure and names, as in the literature: `conv1_1`, `relu1_1`, ..., `pool1`, ...
//! nst fuses each ReLU into its convolution, so the layers a loss can read are the `reluB_K` and
//! `poolB` outputs.

use crate::error::{Error, Result};

/// One conv layer of VGG19.
#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    pub name: &'static str,
    /// The name of its (fused) ReLU output.
    pub relu: &'static str,
    /// The block, 1..=5; block B ends with `poolB`.
    pub block: usize,
    pub in_channels: usize,
    pub out_channels: usize,
}

const fn conv(name: &'static str, relu: &'static str, block: usize, cin: usize, cout: usize) -> ConvSpec {
    ConvSpec { name, relu, block, in_channels: cin, out_channels: cout }
}

/// VGG19's 16 conv layers, in order.
pub const CONVS: [ConvSpec; 16] = [
    conv("conv1_1", "relu1_1", 1, 3, 64),
    conv("conv1_2", "relu1_2", 1, 64, 64),
    conv("conv2_1", "relu2_1", 2, 64, 128),
    conv("conv2_2", "relu2_2", 2, 128, 128),
    conv("conv3_1", "relu3_1", 3, 128, 256),
    conv("conv3_2", "relu3_2", 3, 256, 256),
    conv("conv3_3", "relu3_3", 3, 256, 256),
    conv("conv3_4", "relu3_4", 3, 256, 256),
    conv("conv4_1", "relu4_1", 4, 256, 512),
    conv("conv4_2", "relu4_2", 4, 512, 512),
    conv("conv4_3", "relu4_3", 4, 512, 512),
    conv("conv4_4", "relu4_4", 4, 512, 512),
    conv("conv5_1", "relu5_1", 5, 512, 512),
    conv("conv5_2", "relu5_2", 5, 512, 512),
    conv("conv5_3", "relu5_3", 5, 512, 512),
    conv("conv5_4", "relu5_4", 5, 512, 512),
];

/// The pooling after each block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Pooling {
    #[default]
    Max,
    Avg,
}

impl std::fmt::Display for Pooling {
    /// `max` or `avg`, as `--pooling` takes them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pooling::Max => "max",
            Pooling::Avg => "avg",
        })
    }
}

/// One layer in VGG19's order: a conv with its fused ReLU (index into [`CONVS`]) or the pool that
/// ends a block (1..=5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    Conv(usize),
    Pool(usize),
}

impl Layer {
    /// The name of the layer's output: `reluB_K` or `poolB`.
    pub fn output_name(&self) -> String {
        match *self {
            Layer::Conv(i) => CONVS[i].relu.to_string(),
            Layer::Pool(b) => format!("pool{b}"),
        }
    }
}

/// All 21 layers of VGG19's feature extractor, in order.
pub fn layers() -> Vec<Layer> {
    let mut out = Vec::new();
    for (i, c) in CONVS.iter().enumerate() {
        out.push(Layer::Conv(i));
        if CONVS.get(i + 1).is_none_or(|next| next.block != c.block) {
            out.push(Layer::Pool(c.block));
        }
    }
    out
}

/// Every name a loss may read, in order.
pub fn layer_names() -> Vec<String> {
    layers().iter().map(Layer::output_name).collect()
}

/// The position in [`layers`] of the layer whose output is `name`, or an error that says which names
/// exist.
pub fn layer_position(name: &str) -> Result<usize> {
    if let Some(p) = layers().iter().position(|l| l.output_name() == name) {
        return Ok(p);
    }
    let hint = match CONVS.iter().find(|c| c.name == name) {
        Some(c) => format!("nst fuses ReLU into each convolution; use {}", c.relu),
        None => format!("the layers are {}", layer_names().join(", ")),
    };
    Err(Error::UnknownLayer { name: name.to_string(), hint })
}

/// The smallest image side for which `name`'s output is at least 1x1: 2^(pools up to it).
pub fn min_side(name: &str) -> Result<usize> {
    let position = layer_position(name)?;
    let pools = layers()[..=position].iter().filter(|l| matches!(l, Layer::Pool(_))).count();
    Ok(1 << pools)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vgg19_has_sixteen_convs_and_five_pools_in_order() {
        let names = layer_names();
        assert_eq!(names.len(), 21);
        assert_eq!(&names[..3], ["relu1_1", "relu1_2", "pool1"]);
        assert_eq!(names[names.len() - 1], "pool5");
        assert_eq!(names.iter().filter(|n| n.starts_with("pool")).count(), 5);
    }

    #[test]
    fn unknown_and_conv_layer_names_get_a_hint() {
        let err = layer_position("conv4_2").unwrap_err().to_string();
        assert!(err.contains("use relu4_2"), "{err}");
        let err = layer_position("relu9_9").unwrap_err().to_string();
        assert!(err.contains("relu1_1"), "{err}");
    }

    #[test]
    fn deeper_layers_need_larger_images() {
        assert_eq!(min_side("relu1_1").unwrap(), 1);
        assert_eq!(min_side("relu5_1").unwrap(), 16);
        assert_eq!(min_side("pool1").unwrap(), 2);
        assert_eq!(min_side("pool5").unwrap(), 32);
    }
}
