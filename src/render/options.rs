//! The options of a render and its schedule of scales: what `nst render`'s flags set, with their
//! defaults, their checks, the loss they make at each size, and the coarse-to-fine plan.

use image::RgbImage;

use crate::error::{Error, Result};
use crate::net::plan::ConvChoice;
use crate::net::tape::LossSpec;
use crate::net::vgg::{min_side, Pooling};
use crate::ops::adam::AdamConfig;
use crate::optim::LbfgsConfig;

/// The content layers of Gatys et al.
pub const DEFAULT_CONTENT_LAYERS: [&str; 1] = ["relu4_2"];
/// The style layers of Gatys et al.
pub const DEFAULT_STYLE_LAYERS: [&str; 5] = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"];

/// The working size of a render.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// The long edge in pixels; the other follows the content image's aspect ratio.
    LongEdge(usize),
    /// An exact width and height (the content image is stretched to it).
    Exact { width: usize, height: usize },
}

impl std::str::FromStr for Size {
    type Err = String;
    /// `512` (long edge) or `640x480` (width x height).
    fn from_str(s: &str) -> std::result::Result<Size, String> {
        let bad = || format!("invalid size {s:?}: write the long edge (512) or WIDTHxHEIGHT (640x480)");
        let number = |t: &str| t.trim().parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(bad);
        match s.split_once(['x', 'X']) {
            Some((w, h)) => Ok(Size::Exact { width: number(w)?, height: number(h)? }),
            None => number(s).map(Size::LongEdge),
        }
    }
}

impl std::fmt::Display for Size {
    /// The form [`Size::from_str`](std::str::FromStr) reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Size::LongEdge(edge) => write!(f, "{edge}"),
            Size::Exact { width, height } => write!(f, "{width}x{height}"),
        }
    }
}

impl Size {
    /// (width, height) of a render of an image of `width x height` pixels.
    pub fn of(&self, width: usize, height: usize) -> (usize, usize) {
        match *self {
            Size::Exact { width, height } => (width, height),
            Size::LongEdge(edge) => {
                let scale = edge as f64 / width.max(height) as f64;
                let side = |s: usize| ((s as f64 * scale).round() as usize).max(1);
                (side(width), side(height))
            }
        }
    }
}

/// Where the optimisation starts.
#[derive(Clone, Debug)]
pub enum Init {
    /// The content image (the default).
    Content,
    /// Uniform noise in 0..255 per channel from the render's seed.
    Noise,
    /// An image, stretched to the render's size.
    Image(RgbImage),
}

/// Everything a render computes, with the defaults of `nst render`.
#[derive(Clone, Debug)]
pub struct RenderOptions {
    pub size: Size,
    pub iterations: u32,
    pub adam: AdamConfig,
    /// Adam's learning rate falls along a half cosine from `adam.lr` at the first iteration of
    /// each scale to `lr_decay * adam.lr` at its last (1: constant).
    pub lr_decay: f64,
    /// Weight of the content term: the mean over content layers of mean((F - P)^2).
    pub content_weight: f64,
    /// Weight of the style term: the mean over style layers of mean((G - A)^2).
    pub style_weight: f64,
    /// Weight of the total-variation term: sum of |differences of neighbouring pixels|.
    pub tv_weight: f64,
    pub content_layers: Vec<String>,
    pub style_layers: Vec<String>,
    pub init: Init,
    pub pooling: Pooling,
    pub seed: u64,
    /// One weight per style image (normalised to sum 1); empty: equal weights.
    pub style_blend: Vec<f64>,
    /// Each style image is resized to this times the render's long edge before its Gram matrices
    /// are taken: above 1 its strokes come out larger; below 1 they shrink away and its larger
    /// forms become the texture.
    pub style_scale: f64,
    /// Recolour each style image to the content's channel means and covariance first.
    pub color_match: bool,
    pub optimizer: Optimizer,
    pub lbfgs: LbfgsConfig,
    /// Keep the exponential moving average of the iterates with this decay and output it.
    pub average: Option<f64>,
    pub style_layer_weights: StyleLayerWeights,
    /// Whether the content and style terms are Gatys et al.'s raw ones or relative to their
    /// targets' magnitudes (see [`LossScale`]).
    pub loss_scale: LossScale,
    pub scales: Scales,
    /// Iterations of each scale (one per scale); empty: the rule of [`RenderOptions::schedule`].
    pub scale_iterations: Vec<u32>,
    /// Which 3x3 conv kernels run: the engine's rule, the direct conv, or Winograd wherever it
    /// suits.
    pub conv: ConvChoice,
}

/// Render options that passed every check for a number of style images ([`RenderOptions::check`]),
/// with the blend weights of those images: a render checks its options once.
#[derive(Clone, Debug)]
pub struct CheckedOptions {
    options: RenderOptions,
    blend: Vec<f64>,
}

impl std::ops::Deref for CheckedOptions {
    type Target = RenderOptions;
    fn deref(&self) -> &RenderOptions {
        &self.options
    }
}

impl CheckedOptions {
    /// The blend weight of each style image, summing to 1.
    pub fn blend(&self) -> &[f64] {
        &self.blend
    }

    /// The same options for one scale of a render: its size (which takes part in no check) and its
    /// iterations (the horizon of the learning rate's decay).
    pub fn at(&self, size: Size, iterations: u32) -> CheckedOptions {
        let options = RenderOptions { size, iterations: iterations.max(1), ..self.options.clone() };
        CheckedOptions { options, blend: self.blend.clone() }
    }
}

/// The optimiser of a render.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Optimizer {
    #[default]
    Adam,
    Lbfgs,
}

impl std::fmt::Display for Optimizer {
    /// `adam` or `lbfgs`, as `--optimizer` takes them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Optimizer::Adam => "adam",
            Optimizer::Lbfgs => "lbfgs",
        })
    }
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",")
}

/// How the style layers are weighted against each other.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum StyleLayerWeights {
    /// Each layer's term divided by the mean square of its target Gram matrix (a relative error),
    /// times the mean of those mean squares over the style layers: when every layer is off by the
    /// same relative error, the style loss is what uniform weights give, so `--style-weight` keeps
    /// its scale, but no layer outweighs the others by orders of magnitude.
    #[default]
    Balanced,
    /// Every layer weighs the same (the mean over layers).
    Uniform,
    /// One factor per style layer, on top of the mean over layers.
    Explicit(Vec<f64>),
}

impl std::str::FromStr for StyleLayerWeights {
    type Err = String;
    /// `balanced`, `uniform` or `W1,W2,...`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "balanced" => Ok(StyleLayerWeights::Balanced),
            "uniform" => Ok(StyleLayerWeights::Uniform),
            list => list
                .split(',')
                .map(|w| w.trim().parse::<f64>().ok().filter(|w| w.is_finite() && *w >= 0.0))
                .collect::<Option<Vec<f64>>>()
                .map(StyleLayerWeights::Explicit)
                .ok_or_else(|| {
                    format!("invalid style layer weights {s:?}: write balanced, uniform or numbers such as 1,1,0.5,1,1")
                }),
        }
    }
}

impl std::fmt::Display for StyleLayerWeights {
    /// The form [`StyleLayerWeights::from_str`](std::str::FromStr) reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StyleLayerWeights::Balanced => f.write_str("balanced"),
            StyleLayerWeights::Uniform => f.write_str("uniform"),
            StyleLayerWeights::Explicit(w) => f.write_str(&list(w)),
        }
    }
}

/// How the content and style terms are scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LossScale {
    /// Gatys et al.'s terms as they are: mean squared differences of features and of Gram
    /// matrices. Their size depends on the painting and the photo: a painting of strong contrasts
    /// has Gram matrices orders of magnitude larger than a soft one, so one `--style-weight` is a
    /// different strength for each painting.
    Raw,
    /// Each term relative to its target's magnitude: a content layer's mean squared difference
    /// divided by `mean(P_l²)` of its target, and the whole style term divided by `M`, the mean
    /// over the style layers of `mean(A_l²)` of their targets (with balanced layer weights each
    /// style layer's term is then its relative error `mean((G - A)²) / mean(A²)`). The weights
    /// then mean the same strength for every photo, painting and size. The default.
    #[default]
    Relative,
}

impl std::fmt::Display for LossScale {
    /// `raw` or `relative`, as `--loss-scale` takes them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LossScale::Raw => "raw",
            LossScale::Relative => "relative",
        })
    }
}

/// The sizes a render runs at, smallest first; the last is always the output size.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Scales {
    /// Coarse-to-fine above [`AUTO_ONE_SCALE_UP_TO`] px (long edge): up to [`AUTO_SCALES_ABOVE`]
    /// px two scales, half the output's long edge and then the output; above it from
    /// [`AUTO_SCALES_ABOVE`] px up by factors of √2 to the output size. Smaller: one scale.
    #[default]
    Auto,
    /// One scale, the output size.
    Off,
    /// These long edges, then the output size if it is not the last.
    List(Vec<usize>),
    /// From a long edge, times a factor, up to the output size.
    Geometric { start: usize, factor: f64 },
}

/// Above this long edge the default scales start at this size and grow by √2: every iteration at
/// a larger size costs (pixels / 512²) times an iteration at 512, and the large forms of a
/// painting's style are the ones the network sees at 512 px.
pub const AUTO_SCALES_ABOVE: usize = 512;

/// At or below this long edge the default is one scale; above it (up to [`AUTO_SCALES_ABOVE`])
/// the picture is first composed at half the size, where the painting's forms are twice as large
/// against the network's receptive fields: measured at 512 px, half-size-first renders had the
/// larger forms, lower style terms and took 75% of the single-scale time (README, "Choosing the
/// defaults").
pub const AUTO_ONE_SCALE_UP_TO: usize = 256;

impl std::str::FromStr for LossScale {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "raw" => Ok(LossScale::Raw),
            "relative" => Ok(LossScale::Relative),
            _ => Err(format!("invalid loss scale {s:?}: write raw or relative")),
        }
    }
}

impl std::str::FromStr for Scales {
    type Err = String;
    /// `auto`, `off`, `128,256,512` or `START*FACTOR` (`256*1.414`).
    fn from_str(s: &str) -> std::result::Result<Scales, String> {
        let bad = || {
            format!("invalid scales {s:?}: write auto, off, long edges such as 128,256,512, or START*FACTOR such as 256*1.414")
        };
        match s.trim() {
            "auto" => Ok(Scales::Auto),
            "off" => Ok(Scales::Off),
            t if t.contains('*') => {
                let (a, b) = t.split_once('*').ok_or_else(bad)?;
                let start = a.trim().parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(bad)?;
                let factor = b.trim().parse::<f64>().ok().filter(|f| f.is_finite() && *f >= 1.05).ok_or_else(bad)?;
                Ok(Scales::Geometric { start, factor })
            }
            t => t
                .split(',')
                .map(|e| e.trim().parse::<usize>().ok().filter(|&n| n > 0))
                .collect::<Option<Vec<_>>>()
                .map(Scales::List)
                .ok_or_else(bad),
        }
    }
}

impl std::fmt::Display for Scales {
    /// The form [`Scales::from_str`](std::str::FromStr) reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scales::Auto => f.write_str("auto"),
            Scales::Off => f.write_str("off"),
            Scales::List(edges) => f.write_str(&list(edges)),
            Scales::Geometric { start, factor } => write!(f, "{start}*{factor}"),
        }
    }
}

/// Defaults of `nst render` (see the README for how they were chosen).
pub mod defaults {
    pub const SIZE: usize = 512;
    pub const ITERATIONS: u32 = 100;
    pub const LR: f64 = 8.0;
    pub const LR_DECAY: f64 = 1.0;
    pub const CONTENT_WEIGHT: f64 = 1.0;
    pub const STYLE_WEIGHT: f64 = 13.0;
    pub const TV_WEIGHT: f64 = 0.3;
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            size: Size::LongEdge(defaults::SIZE),
            iterations: defaults::ITERATIONS,
            adam: AdamConfig { lr: defaults::LR, ..AdamConfig::default() },
            lr_decay: defaults::LR_DECAY,
            content_weight: defaults::CONTENT_WEIGHT,
            style_weight: defaults::STYLE_WEIGHT,
            tv_weight: defaults::TV_WEIGHT,
            content_layers: DEFAULT_CONTENT_LAYERS.iter().map(|s| s.to_string()).collect(),
            style_layers: DEFAULT_STYLE_LAYERS.iter().map(|s| s.to_string()).collect(),
            init: Init::Content,
            pooling: Pooling::Max,
            seed: 0,
            style_blend: Vec::new(),
            style_scale: 1.0,
            color_match: false,
            optimizer: Optimizer::Adam,
            lbfgs: LbfgsConfig::default(),
            average: None,
            style_layer_weights: StyleLayerWeights::Balanced,
            loss_scale: LossScale::Relative,
            scales: Scales::Auto,
            scale_iterations: Vec::new(),
            conv: ConvChoice::Auto,
        }
    }
}

impl RenderOptions {
    /// Bytes of GPU memory the optimiser needs for an image of `pixels` pixels.
    pub fn optimiser_bytes(&self, pixels: usize) -> u64 {
        let len = crate::ops::image::NETWORK_CHANNELS * pixels;
        match self.optimizer {
            Optimizer::Adam => crate::optim::Adam::bytes(len),
            Optimizer::Lbfgs => crate::optim::Lbfgs::bytes(&self.lbfgs, len),
        }
    }

    /// The loss of a render of `width x height` with every layer's factor 1: each content layer
    /// weighted `content_weight / layers`, each style layer `style_weight / layers` (the means
    /// over layers).
    pub fn loss_spec(&self, width: usize, height: usize) -> LossSpec {
        self.loss_spec_with(
            width,
            height,
            &vec![1.0; self.style_layers.len()],
            &vec![1.0; self.content_layers.len()],
            1.0,
        )
    }

    /// [`RenderOptions::loss_spec`] with style layer `l` weighted
    /// `style_factors[l] * style_weight / layers` and content layer `l`
    /// `content_factors[l] * content_weight / layers`.
    pub fn loss_spec_with(
        &self,
        width: usize,
        height: usize,
        style_factors: &[f64],
        content_factors: &[f64],
        tv_factor: f64,
    ) -> LossSpec {
        let per_layer = |layers: &[String], weight: f64, factors: &[f64]| -> Vec<(String, f64)> {
            layers.iter().zip(factors).map(|(l, f)| (l.clone(), weight / layers.len() as f64 * f)).collect()
        };
        LossSpec {
            height,
            width,
            pooling: self.pooling,
            content: per_layer(&self.content_layers, self.content_weight, content_factors),
            style: per_layer(&self.style_layers, self.style_weight, style_factors),
            tv: self.tv_weight * tv_factor,
        }
    }

    /// The factor of each style layer, given its target Gram matrices (see [`StyleLayerWeights`]
    /// and [`LossScale`]).
    pub fn style_layer_factors(&self, targets: &[Vec<f32>]) -> Vec<f64> {
        let factors = match &self.style_layer_weights {
            StyleLayerWeights::Uniform => vec![1.0; targets.len()],
            StyleLayerWeights::Explicit(w) => w.clone(),
            StyleLayerWeights::Balanced => balanced_factors(targets),
        };
        match self.loss_scale {
            LossScale::Raw => factors,
            LossScale::Relative => {
                let m = mean_energy(targets);
                factors.into_iter().map(|f| f / m).collect()
            }
        }
    }

    /// The factor of each content layer, given its target features: 1 with raw terms, with
    /// relative ones `1 / mean(P_l²)` (1 for a target that is all zero).
    pub fn content_layer_factors(&self, targets: &[Vec<f32>]) -> Vec<f64> {
        match self.loss_scale {
            LossScale::Raw => vec![1.0; targets.len()],
            LossScale::Relative => targets
                .iter()
                .map(|t| energy(t))
                .map(|e| if e > 0.0 && e.is_finite() { 1.0 / e } else { 1.0 })
                .collect(),
        }
    }

    /// The factor of the total-variation term, given the content image at the render size: 1 with
    /// raw terms, with relative ones `1 / TV(p)`, the photo's own total variation (so the term is
    /// the image's variation as a fraction of the photo's, whatever the size; 1 for a flat photo).
    pub fn tv_factor(&self, content: &image::RgbImage) -> f64 {
        match self.loss_scale {
            LossScale::Raw => 1.0,
            LossScale::Relative => match total_variation(content) {
                tv if tv > 0.0 => 1.0 / tv,
                _ => 1.0,
            },
        }
    }

    /// The scales of a render of a `width x height` content image: (size, iterations) per scale,
    /// smallest first, the last the output size. Without `scale_iterations`, scale k of n gets
    /// its share of a budget of `iterations` iterations at the reference size (the output's long
    /// edge, at most 512): half for the first scale and the rest split equally over the others,
    /// converted to iterations at scale k by the ratio of pixels, and kept between
    /// `max(1, iterations / 10)` and `iterations`. One scale runs `iterations`. A 1024 px render with the default
    /// scales (512, 724, 1024) and 100 iterations runs 50, 13 and 10: the cost of about 116
    /// iterations at 512 px.
    pub fn schedule(&self, width: usize, height: usize) -> Result<Vec<(Size, u32)>> {
        let (fw, fh) = self.size.of(width, height);
        let edge = fw.max(fh);
        let bad = |message: String| Err(Error::Option { option: "scales", message });
        let mut edges: Vec<usize> = match &self.scales {
            Scales::Off => vec![],
            Scales::Auto if edge <= AUTO_ONE_SCALE_UP_TO => vec![],
            Scales::Auto if edge <= AUTO_SCALES_ABOVE => vec![(edge as f64 / 2.0).round() as usize],
            Scales::Auto => geometric(AUTO_SCALES_ABOVE, std::f64::consts::SQRT_2, edge),
            Scales::Geometric { start, factor } => geometric(*start, *factor, edge),
            Scales::List(list) => {
                if list.windows(2).any(|w| w[0] >= w[1]) {
                    return bad(format!("{list:?} must grow from scale to scale"));
                }
                if list.last().is_some_and(|&l| l > edge) {
                    return bad(format!("{list:?} go past the output's long edge of {edge} px"));
                }
                list.clone()
            }
        };
        if edges.last() != Some(&edge) {
            edges.push(edge);
        }
        let sizes: Vec<Size> = edges
            .iter()
            .map(|&e| match self.size {
                Size::LongEdge(_) => Size::LongEdge(e),
                Size::Exact { width, height } => {
                    let side = |s: usize| ((s as f64 * e as f64 / edge as f64).round() as usize).max(1);
                    Size::Exact { width: side(width), height: side(height) }
                }
            })
            .collect();
        let n = sizes.len();
        let iterations: Vec<u32> = if self.scale_iterations.is_empty() && n == 1 {
            vec![self.iterations]
        } else if self.scale_iterations.is_empty() {
            let reference = edge.min(AUTO_SCALES_ABOVE) as f64;
            let budget = self.iterations as f64;
            edges
                .iter()
                .enumerate()
                .map(|(k, &e)| {
                    let share = if k == 0 { 0.5 } else { 0.5 / (n - 1) as f64 };
                    let its = (budget * share * (reference / e as f64).powi(2)).round();
                    its.clamp((budget / 10.0).ceil().max(1.0), budget) as u32
                })
                .collect()
        } else if self.scale_iterations.len() == n {
            self.scale_iterations.clone()
        } else {
            return Err(Error::Option {
                option: "scale_iterations",
                message: format!(
                    "{} counts for {n} scale{} ({}); give one per scale",
                    self.scale_iterations.len(),
                    if n == 1 { "" } else { "s" },
                    edges.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ")
                ),
            });
        };
        if iterations.contains(&0) {
            let message = "every scale needs at least 1 iteration".into();
            return Err(Error::Option { option: "scale_iterations", message });
        }
        Ok(sizes.into_iter().zip(iterations).collect())
    }

    /// Checks the options for a render of `styles` style images, once, before any work: what
    /// [`Render::new`](super::Render::new) takes.
    pub fn check(self, styles: usize) -> Result<CheckedOptions> {
        self.validate()?;
        let blend = self.blend_weights(styles)?;
        Ok(CheckedOptions { options: self, blend })
    }

    /// Refuses options no render can use: no layers, weights that are negative, not finite, or
    /// too large for f32 once divided over the elements, no iterations.
    fn validate(&self) -> Result<()> {
        let bad = |option: &'static str, message: String| Err(Error::Option { option, message });
        if self.iterations == 0 {
            return bad("iterations", "must be at least 1".into());
        }
        for (name, w) in [
            ("content_weight", self.content_weight),
            ("style_weight", self.style_weight),
            ("tv_weight", self.tv_weight),
            ("adam.lr", self.adam.lr),
        ] {
            if !(0.0..=1e30).contains(&w) {
                return bad(name, format!("{w} is not a number between 0 and 1e30"));
            }
        }
        if !self.style_scale.is_finite() || self.style_scale <= 0.0 || self.style_scale > 16.0 {
            return bad("style_scale", format!("{} is not a number above 0 and at most 16", self.style_scale));
        }
        if self.adam.lr == 0.0 {
            return bad("adam.lr", "must be greater than 0".into());
        }
        if !(0.0..=1.0).contains(&self.lr_decay) {
            return bad("lr_decay", format!("{} is not a fraction in 0..=1 (1: a constant rate)", self.lr_decay));
        }
        if self.content_layers.is_empty() && self.style_layers.is_empty() {
            return bad("content_layers/style_layers", "at least one layer is needed".into());
        }
        for layer in self.content_layers.iter().chain(&self.style_layers) {
            crate::net::vgg::layer_position(layer)?;
        }
        if let StyleLayerWeights::Explicit(w) = &self.style_layer_weights {
            if w.len() != self.style_layers.len() {
                return bad(
                    "style_layer_weights",
                    format!(
                        "{} weights for {} style layers; give one per style layer",
                        w.len(),
                        self.style_layers.len()
                    ),
                );
            }
        }
        if let Some(decay) = self.average {
            if !(0.0..1.0).contains(&decay) {
                return bad("average", format!("{decay} is not a decay in 0..1 (such as 0.95)"));
            }
        }
        if self.lbfgs.history == 0 || self.lbfgs.history > 100 {
            return bad("lbfgs.history", format!("{} is not a count in 1..=100", self.lbfgs.history));
        }
        for (name, v) in [("lbfgs.step", self.lbfgs.step), ("lbfgs.first_step", self.lbfgs.first_step)] {
            if !v.is_finite() || v <= 0.0 || v > 1e6 {
                return bad(name, format!("{v} is not a number above 0"));
            }
        }
        Ok(())
    }

    /// The blend weight of each of `styles` style images, normalised to sum 1.
    fn blend_weights(&self, styles: usize) -> Result<Vec<f64>> {
        if styles == 0 {
            return Err(Error::Options("at least one style image is needed".into()));
        }
        if self.style_blend.is_empty() {
            return Ok(vec![1.0 / styles as f64; styles]);
        }
        let bad = |message: String| Err(Error::Option { option: "style_blend", message });
        if self.style_blend.len() != styles {
            return bad(format!("{} weights for {styles} style images; give one per style", self.style_blend.len()));
        }
        if self.style_blend.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return bad("weights must be numbers of at least 0".into());
        }
        let sum: f64 = self.style_blend.iter().sum();
        if sum <= 0.0 {
            return bad("at least one weight must be above 0".into());
        }
        Ok(self.style_blend.iter().map(|w| w / sum).collect())
    }

    /// The smallest image side the layers of this render need.
    pub fn min_side(&self) -> Result<usize> {
        let mut side = 1;
        for layer in self.content_layers.iter().chain(&self.style_layers) {
            side = side.max(min_side(layer)?);
        }
        Ok(side)
    }
}

/// Long edges from `start` times `factor` per scale while below `edge` (the caller appends `edge`).
fn geometric(start: usize, factor: f64, edge: usize) -> Vec<usize> {
    let mut edges = Vec::new();
    let mut e = start as f64;
    // A scale within 5% of the output size would be a second output-size scale.
    while (e.round() as usize) < edge && e < edge as f64 * 0.95 {
        edges.push(e.round() as usize);
        e *= factor;
    }
    edges
}

/// The balanced style layer factors: `M / mean(A_l^2)` for each layer's target Gram matrix `A_l`,
/// with `M` the mean of the `mean(A_l^2)` over the layers (so the factors times the layers' energies
/// sum to what uniform weights give). A layer whose target is all zero keeps 1.
pub fn balanced_factors(targets: &[Vec<f32>]) -> Vec<f64> {
    let energy: Vec<f64> = targets.iter().map(|t| energy(t)).collect();
    let positive: Vec<f64> = energy.iter().copied().filter(|&e| e > 0.0 && e.is_finite()).collect();
    if positive.is_empty() {
        return vec![1.0; targets.len()];
    }
    let mean = positive.iter().sum::<f64>() / positive.len() as f64;
    energy.iter().map(|&e| if e > 0.0 && e.is_finite() { mean / e } else { 1.0 }).collect()
}

/// `mean(t²)`, in f64.
fn energy(t: &[f32]) -> f64 {
    t.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / t.len().max(1) as f64
}

/// `M`: the mean of the targets' energies over the layers whose energy is positive and finite (1
/// if none is).
fn mean_energy(targets: &[Vec<f32>]) -> f64 {
    let positive: Vec<f64> = targets.iter().map(|t| energy(t)).filter(|&e| e > 0.0 && e.is_finite()).collect();
    if positive.is_empty() {
        1.0
    } else {
        positive.iter().sum::<f64>() / positive.len() as f64
    }
}

/// The total variation the render's TV term takes of `image` (`L_tv` of its network image), from
/// the CPU twins of `image.to_network` and `tv.forward`, in f64.
pub fn total_variation(image: &image::RgbImage) -> f64 {
    use crate::ops::image::{pack_rgba, to_network, ImageParams, NETWORK_CHANNELS};
    use crate::ops::tv::{forward, TvParams};
    let (w, h) = (image.width() as usize, image.height() as usize);
    let rgba: Vec<u32> = image.pixels().map(|p| pack_rgba([p[0], p[1], p[2], 255])).collect();
    let params = ImageParams::new(w * h);
    let mut net = vec![0.0f64; params.network_len()];
    to_network(&params, &rgba, &mut net);
    let tv = TvParams::new(h, w, NETWORK_CHANNELS, 1.0);
    let mut partials = vec![0.0f64; tv.partials()];
    forward(&tv, &net, &mut partials);
    partials.iter().sum()
}

#[cfg(test)]
mod schedule_tests {
    use super::*;

    fn options(size: Size, iterations: u32, scales: Scales) -> RenderOptions {
        RenderOptions { size, iterations, scales, ..RenderOptions::default() }
    }

    /// Cost of a schedule in iterations at 512x512 (an iteration's cost is proportional to pixels).
    fn cost(schedule: &[(Size, u32)], width: usize, height: usize) -> f64 {
        schedule
            .iter()
            .map(|&(size, n)| {
                let (w, h) = size.of(width, height);
                n as f64 * (w * h) as f64 / (512.0 * 512.0)
            })
            .sum()
    }

    #[test]
    fn total_variation_sums_the_differences_to_the_right_and_lower_neighbours_and_relative_terms_divide_by_it() {
        let img = image::RgbImage::from_fn(3, 2, |x, y| image::Rgb([(10 * x + 100 * y) as u8, 0, (5 * x) as u8]));
        // Right neighbours: 10 + 5 for each of 2 pairs in 2 rows; lower ones: 100 for each of 3 columns.
        assert_eq!(total_variation(&img), 360.0);
        let relative = RenderOptions { loss_scale: LossScale::Relative, ..RenderOptions::default() };
        assert_eq!(relative.tv_factor(&img), 1.0 / 360.0);
        let raw = RenderOptions { loss_scale: LossScale::Raw, ..RenderOptions::default() };
        assert_eq!(raw.tv_factor(&img), 1.0);
        let flat = image::RgbImage::from_pixel(4, 4, image::Rgb([7, 7, 7]));
        assert_eq!(relative.tv_factor(&flat), 1.0, "a flat photo keeps the weight as it is");
    }

    #[test]
    fn up_to_256_px_the_default_is_one_scale_and_up_to_512_px_half_the_size_first() {
        let s = options(Size::LongEdge(256), 100, Scales::Auto).schedule(1024, 768).unwrap();
        assert_eq!(s, vec![(Size::LongEdge(256), 100)]);
        let s = options(Size::LongEdge(512), 100, Scales::Auto).schedule(1024, 768).unwrap();
        assert_eq!(s, vec![(Size::LongEdge(256), 100), (Size::LongEdge(512), 50)]);
        let square = options(Size::LongEdge(512), 100, Scales::Auto).schedule(1024, 1024).unwrap();
        assert!((cost(&square, 1024, 1024) - 75.0).abs() < 1e-9, "the cost of 75 iterations at 512 px");
        let s = options(Size::LongEdge(301), 100, Scales::Auto).schedule(1024, 768).unwrap();
        assert_eq!(s.iter().map(|&(e, _)| e).collect::<Vec<_>>(), vec![Size::LongEdge(151), Size::LongEdge(301)]);
        let s = options(Size::LongEdge(700), 100, Scales::Off).schedule(1024, 768).unwrap();
        assert_eq!(s, vec![(Size::LongEdge(700), 100)]);
    }

    #[test]
    fn a_1024_px_render_costs_not_much_more_than_a_single_scale_512_px_render() {
        let s = options(Size::LongEdge(1024), 100, Scales::Auto).schedule(1024, 1024).unwrap();
        let edges: Vec<Size> = s.iter().map(|&(e, _)| e).collect();
        assert_eq!(edges, vec![Size::LongEdge(512), Size::LongEdge(724), Size::LongEdge(1024)]);
        assert_eq!(s.iter().map(|&(_, n)| n).collect::<Vec<_>>(), vec![50, 13, 10]);
        let single = cost(&options(Size::LongEdge(512), 100, Scales::Off).schedule(1024, 1024).unwrap(), 1024, 1024);
        let coarse_to_fine = cost(&s, 1024, 1024);
        assert!((single - 100.0).abs() < 1e-9);
        assert!(coarse_to_fine <= 1.2 * single, "{coarse_to_fine} vs {single}");
    }

    #[test]
    fn listed_and_geometric_scales_end_at_the_output_size() {
        let s = options(Size::LongEdge(512), 100, Scales::List(vec![128, 256])).schedule(640, 480).unwrap();
        assert_eq!(s, vec![(Size::LongEdge(128), 100), (Size::LongEdge(256), 100), (Size::LongEdge(512), 25)]);
        let s =
            options(Size::LongEdge(500), 40, Scales::Geometric { start: 125, factor: 2.0 }).schedule(10, 10).unwrap();
        let edges: Vec<Size> = s.iter().map(|&(e, _)| e).collect();
        assert_eq!(edges, vec![Size::LongEdge(125), Size::LongEdge(250), Size::LongEdge(500)]);
        // An exact size keeps its aspect ratio at every scale.
        let exact = Size::Exact { width: 427, height: 281 };
        let s = options(exact, 10, Scales::List(vec![301])).schedule(1, 1).unwrap();
        assert_eq!(s[0].0, Size::Exact { width: 301, height: 198 });
        assert_eq!(s[1].0, exact);
    }

    #[test]
    fn explicit_scale_iterations_need_one_count_per_scale() {
        let mut o = options(Size::LongEdge(512), 100, Scales::List(vec![128, 256]));
        o.scale_iterations = vec![10, 20, 30];
        assert_eq!(o.schedule(512, 512).unwrap().iter().map(|s| s.1).collect::<Vec<_>>(), vec![10, 20, 30]);
        o.scale_iterations = vec![10, 20];
        let e = o.schedule(512, 512).unwrap_err().to_string();
        assert!(e.contains("scale_iterations") && e.contains("3 scales"), "{e}");
        let o = options(Size::LongEdge(512), 100, Scales::List(vec![256, 128]));
        assert!(o.schedule(512, 512).unwrap_err().to_string().contains("must grow"));
        let o = options(Size::LongEdge(256), 100, Scales::List(vec![128, 512]));
        assert!(o.schedule(512, 512).unwrap_err().to_string().contains("go past"));
    }

    #[test]
    fn every_size_scales_and_layer_weights_value_prints_as_the_form_that_parses_back_to_it() {
        for size in [Size::LongEdge(512), Size::Exact { width: 640, height: 480 }] {
            assert_eq!(size.to_string().parse::<Size>(), Ok(size));
        }
        let scales =
            [Scales::Auto, Scales::Off, Scales::List(vec![128, 256]), Scales::Geometric { start: 256, factor: 1.5 }];
        for s in scales {
            assert_eq!(s.to_string().parse::<Scales>(), Ok(s));
        }
        let weights =
            [StyleLayerWeights::Balanced, StyleLayerWeights::Uniform, StyleLayerWeights::Explicit(vec![1.0, 0.5])];
        for w in weights {
            assert_eq!(w.to_string().parse::<StyleLayerWeights>(), Ok(w));
        }
    }

    #[test]
    fn scales_and_layer_weights_parse_from_the_command_line_forms() {
        assert_eq!("auto".parse::<Scales>().unwrap(), Scales::Auto);
        assert_eq!("128,256,512".parse::<Scales>().unwrap(), Scales::List(vec![128, 256, 512]));
        assert_eq!("256*1.5".parse::<Scales>().unwrap(), Scales::Geometric { start: 256, factor: 1.5 });
        assert!("256*1.01".parse::<Scales>().is_err());
        assert!("128,x".parse::<Scales>().is_err());
        assert_eq!("uniform".parse::<StyleLayerWeights>().unwrap(), StyleLayerWeights::Uniform);
        assert_eq!("1,0.5".parse::<StyleLayerWeights>().unwrap(), StyleLayerWeights::Explicit(vec![1.0, 0.5]));
        assert!("1,-2".parse::<StyleLayerWeights>().is_err());
    }

    #[test]
    fn relative_factors_are_the_raw_ones_over_the_mean_energy_so_scaling_a_painting_changes_nothing() {
        let targets = vec![vec![1.0f32, -3.0, 2.0], vec![40.0, 0.5], vec![0.0, 0.0]];
        let raw =
            RenderOptions { loss_scale: LossScale::Raw, ..RenderOptions::default() }.style_layer_factors(&targets);
        let relative = RenderOptions { loss_scale: LossScale::Relative, ..RenderOptions::default() };
        let m = (14.0 / 3.0 + 1600.25 / 2.0) / 2.0;
        for (r, f) in relative.style_layer_factors(&targets).iter().zip(&raw) {
            assert!((r - f / m).abs() <= 1e-12 * (f / m), "{r} vs {}", f / m);
        }
        // Targets k times larger have k² times the energy; the relative loss of k times larger
        // Gram matrices is the same.
        let k = 7.0f32;
        let scaled: Vec<Vec<f32>> = targets.iter().map(|t| t.iter().map(|v| v * k).collect()).collect();
        for (a, b) in relative.style_layer_factors(&targets).iter().zip(relative.style_layer_factors(&scaled)) {
            assert!((a / b - (k * k) as f64).abs() < 1e-9, "{a} / {b}");
        }
        let content = relative.content_layer_factors(&[vec![2.0, 2.0], vec![0.0]]);
        assert_eq!(content, vec![0.25, 1.0]);
        let raw = RenderOptions { loss_scale: LossScale::Raw, ..RenderOptions::default() };
        assert_eq!(raw.content_layer_factors(&[vec![2.0, 2.0]]), vec![1.0]);
    }

    #[test]
    fn balanced_factors_equalise_the_layers_and_keep_the_uniform_total() {
        // Targets whose mean squares differ by six orders of magnitude.
        let targets: Vec<Vec<f32>> = vec![vec![0.001; 16], vec![1.0, -1.0, 1.0, -1.0], vec![0.0; 9], vec![30.0; 4]];
        let f = balanced_factors(&targets);
        let energy: Vec<f64> =
            targets.iter().map(|t| t.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / t.len() as f64).collect();
        assert_eq!(f[2], 1.0, "an all-zero target keeps factor 1");
        let weighted: Vec<f64> = [0, 1, 3].iter().map(|&l| f[l] * energy[l]).collect();
        for w in &weighted {
            assert!((w / weighted[0] - 1.0).abs() < 1e-5, "{weighted:?}");
        }
        let uniform: f64 = [0, 1, 3].iter().map(|&l| energy[l]).sum();
        assert!((weighted.iter().sum::<f64>() / uniform - 1.0).abs() < 1e-5);
    }
}
