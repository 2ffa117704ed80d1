//! A render: a content photo and style paintings in (decoded by [`crate::image_io`]), the optimised
//! picture out. Computes the targets (content features of the photo, Gram matrices of each painting
//! at its own aspect ratio), then steps the chosen optimiser (Adam or L-BFGS) on the GPU one
//! iteration at a time, scale by scale, keeping the last image whose loss was finite. The options
//! and the schedule of scales are in [`options`].

use image::RgbImage;

pub mod options;

pub use crate::resample::resize;
pub use options::{
    balanced_factors, defaults, total_variation, CheckedOptions, Init, LossScale, Optimizer, RenderOptions, Scales,
    Size, StyleLayerWeights, AUTO_ONE_SCALE_UP_TO, AUTO_SCALES_ABOVE, DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS,
};

use crate::color::color_match;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, KernelLibrary};
use crate::net::engine::Engine;
use crate::net::tape::{LossKind, LossSpec, Tape};
use crate::net::weights::Vgg19Weights;
use crate::ops::image::{network_bounds, pack_rgba, NETWORK_CHANNELS};
use crate::optim::{Adam, Average, Averaged, Lbfgs, Optimiser};
use crate::rng::splitmix64;

/// Refuses input images smaller than the layers need.
fn check_inputs(content: &RgbImage, styles: &[RgbImage], options: &RenderOptions) -> Result<()> {
    let need = options.min_side()?;
    let style_name = |i: usize| match styles.len() {
        1 => "style image".to_string(),
        _ => format!("style image {}", i + 1),
    };
    let named = std::iter::once(("content image".to_string(), content))
        .chain(styles.iter().enumerate().map(|(i, s)| (style_name(i), s)));
    for (what, img) in named {
        if (img.width() as usize) < need || (img.height() as usize) < need {
            return Err(Error::ImageSize {
                height: img.height() as usize,
                width: img.width() as usize,
                message: format!("the {what} is smaller than the {need}x{need} pixels its layers need"),
            });
        }
    }
    Ok(())
}

/// Refuses, before any work, inputs smaller than the layers need and an output size the adapter
/// cannot take (the first scale of a coarse-to-fine render is smaller, so [`Render::new`] alone
/// would find out only at the last).
pub fn check_output_size(
    gpu: &Gpu,
    library: &KernelLibrary,
    options: &RenderOptions,
    content: &RgbImage,
    styles: &[RgbImage],
) -> Result<()> {
    check_inputs(content, styles, options)?;
    let (width, height) = options.size.of(content.width() as usize, content.height() as usize);
    check_fits(gpu, library, options, &Tape::build(&options.loss_spec(width, height))?)
}

/// [`Plan::check_fits_with`](crate::net::plan::Plan::check_fits_with) for `tape` on this device
/// with the optimiser's buffers, with the largest size of the same aspect ratio that fits in the
/// refusal.
fn check_fits(gpu: &Gpu, library: &KernelLibrary, options: &RenderOptions, tape: &Tape) -> Result<()> {
    let plan = crate::net::plan::Plan::new(tape, &capabilities(gpu, library, options));
    match plan.check_fits_with(options.optimiser_bytes(tape.spec.height * tape.spec.width)) {
        Ok(_) => Ok(()),
        Err(Error::ImageSize { height, width, message }) => {
            let largest = match largest_fitting_size(gpu, library, options, (width, height)) {
                Some((w, h)) => format!("the largest of this aspect ratio that fits is {w}x{h}"),
                None => "no size of this aspect ratio fits".to_string(),
            };
            let message = match message.strip_suffix("; use a smaller size") {
                Some(m) => format!("{m}; {largest}: use a smaller size"),
                None => format!("{message}; {largest}"),
            };
            Err(Error::ImageSize { height, width, message })
        }
        Err(e) => Err(e),
    }
}

/// The largest size of the aspect ratio of `(width, height)` whose plan, with the layers of
/// `options`, fits this adapter's limits (found by bisecting the long edge; the tape and plan are
/// only recorded, nothing is allocated). None if not even the smallest size the layers take fits.
pub fn largest_fitting_size(
    gpu: &Gpu,
    library: &KernelLibrary,
    options: &RenderOptions,
    (width, height): (usize, usize),
) -> Option<(usize, usize)> {
    let caps = capabilities(gpu, library, options);
    let at = |edge: usize| Size::LongEdge(edge).of(width, height);
    let fits = |edge: usize| {
        let (w, h) = at(edge);
        Tape::build(&options.loss_spec(w, h)).is_ok_and(|tape| {
            let extra = options.optimiser_bytes(w * h);
            crate::net::plan::Plan::new(&tape, &caps).check_fits_with(extra).is_ok()
        })
    };
    // The smallest long edge whose short side the layers take.
    let need = options.min_side().ok()?;
    let mut low = (need * width.max(height)).div_ceil(width.min(height).max(1)).max(need);
    if !fits(low) {
        return None;
    }
    let mut high = low.max(1) * 2;
    while fits(high) {
        low = high;
        high *= 2;
        if high > 1 << 20 {
            return Some(at(low));
        }
    }
    while high - low > 1 {
        let mid = (low + high) / 2;
        if fits(mid) {
            low = mid;
        } else {
            high = mid;
        }
    }
    Some(at(low))
}

fn packed(img: &RgbImage) -> Vec<u32> {
    img.pixels().map(|p| pack_rgba([p[0], p[1], p[2], 255])).collect()
}

/// One term of an iteration's loss, weighted as it enters the total.
#[derive(Clone, Debug, PartialEq)]
pub struct Term {
    pub kind: LossKind,
    /// The layer it reads (`relu4_2`), or `image` for TV.
    pub layer: String,
    pub value: f64,
}

/// The losses of one iteration: a list of named terms, in the order of the tape's loss slots.
#[derive(Clone, Debug, PartialEq)]
pub struct Losses {
    pub terms: Vec<Term>,
}

impl Losses {
    /// The sum of the `kind` terms (0 where there are none).
    pub fn of(&self, kind: LossKind) -> f64 {
        self.terms.iter().filter(|t| t.kind == kind).map(|t| t.value).sum()
    }

    /// The total: the sum of each kind's sum, in the order of [`LossKind::ALL`].
    pub fn total(&self) -> f64 {
        LossKind::ALL.iter().map(|&k| self.of(k)).sum()
    }

    pub fn is_finite(&self) -> bool {
        self.terms.iter().all(|t| t.value.is_finite())
    }
}

/// A render in progress: the engine with its targets set, the image being optimised and the
/// optimiser's state.
pub struct Render<'g> {
    gpu: &'g Gpu,
    engine: Engine<'g>,
    /// Adam or L-BFGS, wrapped in the moving average when averaging.
    optimiser: Box<dyn Optimiser>,
    /// Optimiser steps taken by the whole render (across scales).
    steps: u32,
    /// Steps taken at this scale.
    scale_steps: u32,
    pub width: usize,
    pub height: usize,
    /// The content image at the render size.
    content: RgbImage,
    /// The factor of each style layer (see [`StyleLayerWeights`]).
    pub style_factors: Vec<f64>,
}

/// A non-finite loss, with the iteration of this render (this scale) it appeared at (1-based);
/// the render's image is the last one whose loss was finite, from iteration `last_good` (0: the
/// starting image).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Diverged {
    pub iteration: u32,
    pub last_good: u32,
}

impl<'g> Render<'g> {
    /// Builds the engine for `options.size` of `content`, computes the style targets from
    /// `styles` (each resized so that its long edge is `style_scale` times the render's, keeping
    /// its aspect ratio; with `color_match`, recoloured to the content's colour statistics first;
    /// blended by `style_blend`), the style layer factors from them, and the content targets, and
    /// sets the starting image. Sizes are checked against the layers and the adapter before
    /// anything large is allocated.
    pub fn new(
        gpu: &'g Gpu,
        library: &KernelLibrary,
        weights: &Vgg19Weights,
        content: &RgbImage,
        styles: &[RgbImage],
        options: &CheckedOptions,
    ) -> Result<Render<'g>> {
        let blend = options.blend();
        if blend.len() != styles.len() {
            let message = format!("options checked for {} style images, given {}", blend.len(), styles.len());
            return Err(Error::Options(message));
        }
        check_inputs(content, styles, options)?;
        let (width, height) = options.size.of(content.width() as usize, content.height() as usize);
        // Before resizing anything to a size the adapter cannot take (the factors change no shape).
        let tape = Tape::build(&options.loss_spec(width, height))?;
        check_fits(gpu, library, options, &tape)?;
        let content_img = resize(content, width, height);
        let style_grams = if options.style_layers.is_empty() {
            Vec::new()
        } else {
            let mut blended: Vec<Vec<f64>> = Vec::new();
            for (style, &weight) in styles.iter().zip(blend) {
                let style = if options.color_match { color_match(style, &content_img) } else { style.clone() };
                let grams = style_grams(gpu, library, weights, &style, width.max(height), options)?;
                blended.resize_with(grams.len(), Vec::new);
                for (acc, gram) in blended.iter_mut().zip(grams) {
                    acc.resize(gram.len(), 0.0);
                    for (a, g) in acc.iter_mut().zip(gram) {
                        *a += weight * g as f64;
                    }
                }
            }
            blended.into_iter().map(|g| g.into_iter().map(|v| v as f32).collect()).collect()
        };
        let style_factors = options.style_layer_factors(&style_grams);
        let content_factors = match options.loss_scale {
            LossScale::Raw => vec![1.0; options.content_layers.len()],
            // The content features' magnitudes, from an engine of their own before the render's.
            LossScale::Relative => {
                options.content_layer_factors(&content_features(gpu, library, weights, &content_img, options)?)
            }
        };
        let tv_factor = options.tv_factor(&content_img);
        let spec = options.loss_spec_with(width, height, &style_factors, &content_factors, tv_factor);
        let tape = tape.with_loss_weights(&spec)?;

        let engine = Engine::with_capabilities(gpu, library, weights, tape, &capabilities(gpu, library, options))?;
        engine.set_image_rgba(&packed(&content_img))?;
        engine.forward()?;
        engine.capture_targets(LossKind::Content)?;
        engine.set_targets(LossKind::Style, &style_grams)?;
        match &options.init {
            Init::Content => {}
            Init::Noise => {
                let mut state = options.seed;
                let noise = RgbImage::from_fn(width as u32, height as u32, |_, _| {
                    image::Rgb([0, 1, 2].map(|_| (splitmix64(&mut state) >> 56) as u8))
                });
                engine.set_image_rgba(&packed(&noise))?;
            }
            Init::Image(img) => engine.set_image_rgba(&packed(&resize(img, width, height)))?,
        }
        let bounds = network_bounds();
        let mut optimiser: Box<dyn Optimiser> = match options.optimizer {
            Optimizer::Adam => {
                let adam = Adam::new(gpu, library, &engine, options.adam, bounds)?;
                Box::new(adam.with_decay(options.lr_decay, options.iterations))
            }
            Optimizer::Lbfgs => Box::new(Lbfgs::new(gpu, library, &engine, options.lbfgs, bounds)?),
        };
        if let Some(decay) = options.average {
            optimiser = Box::new(Averaged::new(optimiser, Average::new(gpu, library, &engine, decay)?));
        }
        Ok(Render {
            gpu,
            engine,
            optimiser,
            steps: 0,
            scale_steps: 0,
            width,
            height,
            content: content_img,
            style_factors,
        })
    }

    /// The next scale of a coarse-to-fine render: a render of `options` (at its size) whose
    /// starting image is this one's output (the average when averaging) resized bilinearly, and
    /// whose optimiser takes over this one's state ([`Optimiser::carry`]: Adam's moments, resized;
    /// L-BFGS starts a fresh history; the average starts again from the new image).
    pub fn next_scale(
        &self,
        library: &KernelLibrary,
        weights: &Vgg19Weights,
        content: &RgbImage,
        styles: &[RgbImage],
        options: &CheckedOptions,
    ) -> Result<Render<'g>> {
        let (h, w) = (self.height, self.width);
        let image = self.image_net()?;
        let carry = self.optimiser.carry(self.gpu)?;
        let mut next = Render::new(self.gpu, library, weights, content, styles, options)?;
        let to = (next.height, next.width);
        next.engine.set_image(&crate::resample::bilinear(&image, (h, w), NETWORK_CHANNELS, to))?;
        next.optimiser.resume(self.gpu, carry)?;
        next.steps = self.steps;
        Ok(next)
    }

    /// The engine (its tape, memory, kernel profile).
    pub fn engine(&self) -> &Engine<'g> {
        &self.engine
    }

    /// The optimiser (Adam or L-BFGS, maybe averaged).
    pub fn optimiser(&self) -> &dyn Optimiser {
        self.optimiser.as_ref()
    }

    /// Bytes of GPU memory this render allocated: the engine's and the optimiser's.
    pub fn allocated_bytes(&self) -> u64 {
        self.engine.allocated_bytes() + self.optimiser.allocated_bytes()
    }

    /// Optimiser steps taken so far.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// L-BFGS correction pairs held (0 with Adam).
    pub fn lbfgs_pairs(&self) -> usize {
        self.optimiser.history()
    }

    /// One iteration: the losses of the current image, then one optimiser step (and the
    /// average's update). When the losses are not finite, the image goes back to the last one
    /// whose losses were (the step count with it), and the result is `Ok(Err(Diverged))`; the
    /// optimiser's state is spoilt, so the render ends. The one place a non-finite loss is handled.
    pub fn step(&mut self) -> Result<std::result::Result<Losses, Diverged>> {
        let values = self.optimiser.iterate(self.gpu, &self.engine, &[])?;
        let losses = self.losses(&values);
        if !losses.is_finite() {
            self.optimiser.rollback(self.gpu, &self.engine)?;
            return Ok(Err(self.diverge()));
        }
        self.steps += 1;
        self.scale_steps += 1;
        Ok(Ok(losses))
    }

    /// The image was restored to the last one whose loss was finite: one step back (at the first
    /// step of a scale, none).
    fn diverge(&mut self) -> Diverged {
        let k = self.scale_steps + 1;
        let back = self.scale_steps.min(1);
        self.steps -= back;
        self.scale_steps -= back;
        Diverged { iteration: k, last_good: k.saturating_sub(2) }
    }

    fn losses(&self, values: &[f32]) -> Losses {
        let terms = self.engine.tape.losses.iter().zip(values);
        Losses { terms: terms.map(|(t, &v)| Term { kind: t.kind, layer: t.layer.clone(), value: v as f64 }).collect() }
    }

    /// The output image, read back from the GPU: the current image, or with averaging the
    /// averaged one.
    pub fn image(&self) -> Result<RgbImage> {
        let rgba = self.optimiser.image_rgba(self.gpu, &self.engine)?;
        let bytes: Vec<u8> = rgba
            .iter()
            .flat_map(|p| {
                let [r, g, b, _] = p.to_le_bytes();
                [r, g, b]
            })
            .collect();
        Ok(RgbImage::from_raw(self.width as u32, self.height as u32, bytes).expect("one RGB triple per pixel"))
    }

    /// The output image in the network's convention (HWC, BGR minus the mean, 4 channels).
    pub fn image_net(&self) -> Result<Vec<f32>> {
        self.optimiser.image_net(self.gpu, &self.engine)
    }

    /// The image being optimised (not the average), in the network's convention.
    pub fn iterate_net(&self) -> Result<Vec<f32>> {
        self.engine.read(self.engine.tape.image)
    }

    /// The content image at the render size.
    pub fn content(&self) -> &RgbImage {
        &self.content
    }

    /// The output image as RGB values on the 0..255 scale, unclamped and unrounded: for 16-bit
    /// output and colour preservation.
    pub fn image_rgb(&self) -> Result<Vec<[f64; 3]>> {
        let net = self.image_net()?;
        let [mr, mg, mb] = crate::ops::image::VGG_MEAN_RGB.map(f64::from);
        Ok(net.chunks_exact(4).map(|p| [p[2] as f64 + mr, p[1] as f64 + mg, p[0] as f64 + mb]).collect())
    }

    /// The current targets of the `kind` losses (content features or blended style Gram matrices).
    pub fn targets(&self, kind: LossKind) -> Result<Vec<Vec<f32>>> {
        self.engine.targets(kind)
    }

    /// Fills the image with NaN (for tests of the divergence path; see `NST_INJECT_NAN_AT`).
    pub fn poison_image(&self) {
        self.engine.poison_image();
    }
}

/// The features of `content`'s content layers (at its size), from an engine without gradients,
/// dropped afterwards.
fn content_features(
    gpu: &Gpu,
    library: &KernelLibrary,
    weights: &Vgg19Weights,
    content: &RgbImage,
    options: &RenderOptions,
) -> Result<Vec<Vec<f32>>> {
    if options.content_layers.is_empty() {
        return Ok(Vec::new());
    }
    let (w, h) = (content.width() as usize, content.height() as usize);
    let spec = LossSpec { style: Vec::new(), tv: 0.0, ..options.loss_spec(w, h) };
    loss_sources(gpu, library, weights, Tape::build(&spec)?, content, LossKind::Content, options)
}

/// What this device runs, with the 3x3 convs `options` chose (`--conv`).
fn capabilities(gpu: &Gpu, library: &KernelLibrary, options: &RenderOptions) -> crate::net::plan::Capabilities {
    crate::net::plan::Capabilities::of(gpu, library).with_conv(options.conv)
}

/// What the `kind` losses of `tape` compare with their targets, for `image` (of the tape's size),
/// from an engine of that tape without gradients, dropped afterwards.
fn loss_sources(
    gpu: &Gpu,
    library: &KernelLibrary,
    weights: &Vgg19Weights,
    tape: Tape,
    image: &RgbImage,
    kind: LossKind,
    options: &RenderOptions,
) -> Result<Vec<Vec<f32>>> {
    let caps = capabilities(gpu, library, options);
    let engine = Engine::with_capabilities(gpu, library, weights, tape.without_backward(), &caps)?;
    engine.set_image_rgba(&packed(image))?;
    engine.forward()?;
    engine.loss_sources(kind)
}

/// The Gram matrices of `style`'s style layers, from an engine of the style image's own size
/// (long edge `style_scale * render_edge`, aspect kept) without gradients, dropped afterwards.
fn style_grams(
    gpu: &Gpu,
    library: &KernelLibrary,
    weights: &Vgg19Weights,
    style: &RgbImage,
    render_edge: usize,
    options: &RenderOptions,
) -> Result<Vec<Vec<f32>>> {
    let edge = ((render_edge as f64 * options.style_scale).round() as usize).max(1);
    let (sw, sh) = Size::LongEdge(edge).of(style.width() as usize, style.height() as usize);
    let scaled = |e: Error| match e {
        Error::ImageSize { height, width, message } if options.style_scale != 1.0 => Error::Option {
            option: "style_scale",
            message: format!("at {} a style image is {width}x{height} pixels: {message}", options.style_scale),
        },
        e => e,
    };
    let spec = LossSpec { content: Vec::new(), tv: 0.0, ..options.loss_spec(sw, sh) };
    let tape = Tape::build(&spec).map_err(scaled)?;
    loss_sources(gpu, library, weights, tape, &resize(style, sw, sh), LossKind::Style, options).map_err(scaled)
}
