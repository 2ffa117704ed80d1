//! A render: a content photo and a style painting in, the optimised picture out. Loads and converts
//! the images (any format the `image` crate reads, EXIF orientation applied), computes the targets
//! (content features of the photo, Gram matrices of the painting at its own aspect ratio), then
//! steps Adam on the GPU one iteration at a time, keeping the last image whose loss was finite.

use std::path::{Path, PathBuf};

use image::{ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::color::color_match;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, KernelLibrary};
use crate::net::engine::Engine;
use crate::net::tape::{LossKind, LossSpec, Tape};
use crate::net::vgg::{min_side, Pooling};
use crate::net::weights::Vgg19Weights;
use crate::ops::adam::{AdamConfig, AdamParams};
use crate::ops::image::{network_bounds, pack_rgba};

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
}

/// Defaults of `nst render` (see the README for how they were chosen).
pub mod defaults {
    pub const SIZE: usize = 512;
    pub const ITERATIONS: u32 = 100;
    pub const LR: f64 = 8.0;
    pub const CONTENT_WEIGHT: f64 = 1.0;
    pub const STYLE_WEIGHT: f64 = 1e-5;
    pub const TV_WEIGHT: f64 = 1e-5;
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            size: Size::LongEdge(defaults::SIZE),
            iterations: defaults::ITERATIONS,
            adam: AdamConfig { lr: defaults::LR, ..AdamConfig::default() },
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
        }
    }
}

impl RenderOptions {
    /// The loss of a render of `width x height`: each content layer weighted
    /// `content_weight / layers`, each style layer `style_weight / layers` (the means over layers).
    pub fn loss_spec(&self, width: usize, height: usize) -> LossSpec {
        let per_layer = |layers: &[String], weight: f64| -> Vec<(String, f64)> {
            layers.iter().map(|l| (l.clone(), weight / layers.len() as f64)).collect()
        };
        LossSpec {
            height,
            width,
            pooling: self.pooling,
            content: per_layer(&self.content_layers, self.content_weight),
            style: per_layer(&self.style_layers, self.style_weight),
            tv: self.tv_weight,
        }
    }

    /// Refuses options no render can use, before any work: no layers, weights that are negative,
    /// not finite, or too large for f32 once divided over the elements, no iterations.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, message: String| Err(Error::Options(format!("{what}: {message}")));
        if self.iterations == 0 {
            return bad("--iterations", "must be at least 1".into());
        }
        for (name, w) in [
            ("--content-weight", self.content_weight),
            ("--style-weight", self.style_weight),
            ("--tv-weight", self.tv_weight),
            ("--lr", self.adam.lr),
        ] {
            if !(0.0..=1e30).contains(&w) {
                return bad(name, format!("{w} is not a number between 0 and 1e30"));
            }
        }
        if !self.style_scale.is_finite() || self.style_scale <= 0.0 || self.style_scale > 16.0 {
            return bad("--style-scale", format!("{} is not a number above 0 and at most 16", self.style_scale));
        }
        if self.adam.lr == 0.0 {
            return bad("--lr", "must be greater than 0".into());
        }
        if self.content_layers.is_empty() && self.style_layers.is_empty() {
            return bad("--content-layers/--style-layers", "at least one layer is needed".into());
        }
        for layer in self.content_layers.iter().chain(&self.style_layers) {
            crate::net::vgg::layer_position(layer)?;
        }
        Ok(())
    }

    /// The blend weight of each of `styles` style images, normalised to sum 1.
    pub fn blend_weights(&self, styles: usize) -> Result<Vec<f64>> {
        if styles == 0 {
            return Err(Error::Options("at least one style image is needed".into()));
        }
        if self.style_blend.is_empty() {
            return Ok(vec![1.0 / styles as f64; styles]);
        }
        let bad = |m: String| Err(Error::Options(format!("--style-blend: {m}")));
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

/// Reads an image in any format the `image` crate knows, applies its EXIF orientation and
/// converts it to 8-bit RGB (grayscale is replicated, alpha dropped, 16-bit rounded).
pub fn load_image(path: &Path) -> Result<RgbImage> {
    let err = |message: String| Error::Image { path: path.display().to_string(), message };
    let reader = ImageReader::open(path).map_err(|e| err(format!("cannot open it ({e}); check the path")))?;
    let reader = reader.with_guessed_format().map_err(|e| err(format!("cannot read it ({e})")))?;
    if reader.format().is_none() {
        return Err(err("not an image nst can read (use PNG, JPEG, WebP, TIFF, BMP or GIF)".into()));
    }
    let mut decoder = reader.into_decoder().map_err(|e| err(format!("not a readable image ({e})")))?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder)
        .map_err(|e| err(format!("damaged or truncated image ({e}); re-export or re-download it")))?;
    img.apply_orientation(orientation);
    Ok(img.to_rgb8())
}

/// The output format for a path's extension.
pub fn output_format(path: &Path) -> Result<ImageFormat> {
    let err = |message: &str| Error::Output { path: path.display().to_string(), message: message.into() };
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("png") => Ok(ImageFormat::Png),
        Some("jpg" | "jpeg") => Ok(ImageFormat::Jpeg),
        Some("webp") => Ok(ImageFormat::WebP),
        Some("tif" | "tiff") => Ok(ImageFormat::Tiff),
        Some("bmp") => Ok(ImageFormat::Bmp),
        _ => Err(err("unknown output format; end the name with .png, .jpg, .webp, .tiff or .bmp")),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    let absolute = |p: &Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Some(parent.canonicalize().ok()?.join(p.file_name()?))
    };
    matches!((absolute(a), absolute(b)), (Some(x), Some(y)) if x == y)
}

/// Checks, before any work, that `path` can be written as an image: a known extension, not one
/// of the inputs, and a directory that accepts a new file (tried by creating and removing one).
pub fn check_output(path: &Path, inputs: &[&Path]) -> Result<ImageFormat> {
    let err = |message: String| Error::Output { path: path.display().to_string(), message };
    let format = output_format(path)?;
    if let Some(input) = inputs.iter().find(|i| same_file(path, i)) {
        return Err(err(format!("is the input {}; choose another output name", input.display())));
    }
    if path.is_dir() {
        return Err(err("is a directory; give a file name such as out.png".into()));
    }
    check_writable(path)?;
    Ok(format)
}

/// Checks that a file can be created at `path` by creating and removing a temporary file beside it.
pub fn check_writable(path: &Path) -> Result<()> {
    let probe = temporary_path(path);
    std::fs::File::create(&probe).map_err(|e| Error::Output {
        path: path.display().to_string(),
        message: format!("cannot write there ({e}); choose a writable directory"),
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn temporary_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.nst-{}.tmp", std::process::id()))
}

/// Bits per channel of the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    Eight,
    Sixteen,
}

/// RGB values on the 0..255 scale to an image of `depth` bits: clamped, then rounded half up
/// (8 bits, as the GPU's conversion) or scaled by 257 and rounded (16 bits).
pub fn quantize(pixels: &[[f64; 3]], width: usize, height: usize, depth: Depth) -> image::DynamicImage {
    let (w, h) = (width as u32, height as u32);
    match depth {
        Depth::Eight => {
            let bytes = pixels.iter().flat_map(|p| p.map(|v| (v.clamp(0.0, 255.0) + 0.5).floor() as u8)).collect();
            image::DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, bytes).expect("one triple per pixel"))
        }
        Depth::Sixteen => {
            let words = pixels.iter().flat_map(|p| p.map(|v| (v.clamp(0.0, 255.0) * 257.0).round() as u16)).collect();
            image::DynamicImage::ImageRgb16(image::ImageBuffer::from_raw(w, h, words).expect("one triple per pixel"))
        }
    }
}

/// Reads an image like [`load_image`] and also returns its embedded ICC colour profile, if any.
pub fn load_image_with_profile(path: &Path) -> Result<(RgbImage, Option<Vec<u8>>)> {
    let profile = ImageReader::open(path)
        .ok()
        .and_then(|r| r.with_guessed_format().ok())
        .and_then(|r| r.into_decoder().ok())
        .and_then(|mut d| d.icc_profile().ok().flatten());
    Ok((load_image(path)?, profile))
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Inserts an sRGB chunk (rendering intent perceptual) after a PNG's header chunk.
fn tag_png_srgb(png: &mut Vec<u8>) {
    // 8-byte signature, then IHDR: 4 length + 4 type + 13 data + 4 CRC.
    let at = 8 + 25;
    let mut chunk = vec![0, 0, 0, 1];
    chunk.extend(b"sRGB\0");
    let crc = crc32(&chunk[4..]);
    chunk.extend(crc.to_be_bytes());
    png.splice(at..at, chunk);
}

/// Encodes `img` by `path`'s extension at its own depth (16 bits only as PNG or TIFF), with the
/// ICC profile `icc` when given (a PNG without one is tagged sRGB), into a temporary file beside
/// `path`, then renames it over `path`: an interrupted write never leaves a broken image.
pub fn save_output(img: &image::DynamicImage, path: &Path, icc: Option<&[u8]>) -> Result<()> {
    use image::ImageEncoder;
    let err = |message: String| Error::Output { path: path.display().to_string(), message };
    let format = output_format(path)?;
    let sixteen = matches!(img, image::DynamicImage::ImageRgb16(_));
    if sixteen && !matches!(format, ImageFormat::Png | ImageFormat::Tiff) {
        return Err(err("16-bit output needs a .png or .tiff name".into()));
    }
    let mut bytes = std::io::Cursor::new(Vec::new());
    let (w, h, color) = (img.width(), img.height(), img.color().into());
    let encoded = match format {
        ImageFormat::Png => {
            use image::codecs::png::{CompressionType, FilterType, PngEncoder};
            let mut e = PngEncoder::new_with_quality(&mut bytes, CompressionType::Best, FilterType::Adaptive);
            if let Some(icc) = icc {
                let _ = e.set_icc_profile(icc.to_vec());
            }
            e.write_image(img.as_bytes(), w, h, color)
        }
        ImageFormat::Jpeg => {
            let mut e = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95);
            if let Some(icc) = icc {
                let _ = e.set_icc_profile(icc.to_vec());
            }
            e.write_image(img.as_bytes(), w, h, color)
        }
        ImageFormat::Tiff => {
            let mut e = image::codecs::tiff::TiffEncoder::new(&mut bytes);
            if let Some(icc) = icc {
                let _ = e.set_icc_profile(icc.to_vec());
            }
            e.write_image(img.as_bytes(), w, h, color)
        }
        ImageFormat::WebP => {
            let mut e = image::codecs::webp::WebPEncoder::new_lossless(&mut bytes);
            if let Some(icc) = icc {
                let _ = e.set_icc_profile(icc.to_vec());
            }
            e.write_image(img.as_bytes(), w, h, color)
        }
        _ => img.write_to(&mut bytes, format),
    };
    encoded.map_err(|e| err(format!("encoding failed ({e})")))?;
    let mut bytes = bytes.into_inner();
    if format == ImageFormat::Png && icc.is_none() {
        tag_png_srgb(&mut bytes);
    }
    write_atomically(path, &bytes)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = temporary_path(path);
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        Error::Output { path: path.display().to_string(), message: format!("cannot write it ({e})") }
    })
}

/// Resizes with a Lanczos filter (a no-op at the same size).
pub fn resize(img: &RgbImage, width: usize, height: usize) -> RgbImage {
    if img.width() as usize == width && img.height() as usize == height {
        return img.clone();
    }
    image::imageops::resize(img, width as u32, height as u32, image::imageops::FilterType::Lanczos3)
}

fn packed(img: &RgbImage) -> Vec<u32> {
    img.pixels().map(|p| pack_rgba([p[0], p[1], p[2], 255])).collect()
}

/// The losses of one iteration, weighted as they enter the total.
#[derive(Clone, Debug, PartialEq)]
pub struct Losses {
    pub content: f64,
    pub style: f64,
    pub tv: f64,
    /// Each term: (kind, layer, weighted loss).
    pub terms: Vec<(LossKind, String, f64)>,
}

impl Losses {
    pub fn total(&self) -> f64 {
        self.content + self.style + self.tv
    }
    pub fn is_finite(&self) -> bool {
        self.terms.iter().all(|t| t.2.is_finite())
    }
}

/// A render in progress: the engine with its targets set and the image being optimised.
pub struct Render<'g> {
    engine: Engine<'g>,
    adam: AdamConfig,
    bounds: ([f32; 4], [f32; 4]),
    /// Adam steps taken.
    steps: u32,
    pub width: usize,
    pub height: usize,
    /// The content image at the render size.
    content: RgbImage,
}

/// A non-finite loss, with the iteration it appeared at (1-based); the render's image is the last
/// one whose loss was finite, from iteration `last_good` (0: the starting image).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Diverged {
    pub iteration: u32,
    pub last_good: u32,
}

impl<'g> Render<'g> {
    /// Builds the engine for `options.size` of `content`, computes the style targets from
    /// `styles` (each resized so that its long edge is `style_scale` times the render's, keeping
    /// its aspect ratio; with `color_match`, recoloured to the content's colour statistics first;
    /// blended by `style_blend`) and the content targets, and sets the starting image. Sizes are
    /// checked against the layers and the adapter before anything large is allocated.
    pub fn new(
        gpu: &'g Gpu,
        library: &KernelLibrary,
        weights: &Vgg19Weights,
        content: &RgbImage,
        styles: &[RgbImage],
        options: &RenderOptions,
    ) -> Result<Render<'g>> {
        options.validate()?;
        let blend = options.blend_weights(styles.len())?;
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
        let (width, height) = options.size.of(content.width() as usize, content.height() as usize);
        let tape = Tape::build(&options.loss_spec(width, height))?;
        // Before resizing anything to a size the adapter cannot take.
        Engine::check_fits(gpu, library, &tape)?;
        let content_img = resize(content, width, height);
        let style_grams = if options.style_layers.is_empty() {
            Vec::new()
        } else {
            let mut blended: Vec<Vec<f64>> = Vec::new();
            for (style, &weight) in styles.iter().zip(&blend) {
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

        let engine = Engine::new(gpu, library, weights, tape)?;
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
        Ok(Render {
            engine,
            adam: options.adam,
            bounds: network_bounds(),
            steps: 0,
            width,
            height,
            content: content_img,
        })
    }

    /// The engine (its tape, memory, kernel profile).
    pub fn engine(&self) -> &Engine<'g> {
        &self.engine
    }

    /// Adam steps taken so far.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// One iteration: the losses of the current image, then one Adam step. When the losses are
    /// not finite, the image goes back to the last one whose losses were (the step count with
    /// it), and the result is `Ok(Err(Diverged))`; Adam's moments are spoilt, so the render ends.
    pub fn step(&mut self) -> Result<std::result::Result<Losses, Diverged>> {
        let t = self.steps + 1;
        let len = self.engine.tape.tensors[self.engine.tape.image].len;
        let params = AdamParams::at_step(len, &self.adam, t).with_bounds(self.bounds.0, self.bounds.1);
        let values = self.engine.iterate_with_backup(&params, (t % 2) as usize)?;
        let losses = self.losses(&values);
        if !losses.is_finite() {
            // Backup t % 2 holds this step's (bad) input; the other holds the previous step's input,
            // whose losses were finite. At the first step the starting image itself failed.
            // At the first step, backup 1 holds the starting image, which the step overwrote.
            let slot = if t > 1 { (t + 1) % 2 } else { t % 2 };
            self.engine.restore_backup(slot as usize)?;
            self.steps = t.saturating_sub(2);
            return Ok(Err(Diverged { iteration: t, last_good: t.saturating_sub(2) }));
        }
        self.steps = t;
        Ok(Ok(losses))
    }

    fn losses(&self, values: &[f32]) -> Losses {
        let mut l = Losses { content: 0.0, style: 0.0, tv: 0.0, terms: Vec::new() };
        for (term, &v) in self.engine.tape.losses.iter().zip(values) {
            let v = v as f64;
            match term.kind {
                LossKind::Content => l.content += v,
                LossKind::Style => l.style += v,
                LossKind::Tv => l.tv += v,
            }
            l.terms.push((term.kind, term.layer.clone(), v));
        }
        l
    }

    /// The current image, read back from the GPU.
    pub fn image(&self) -> Result<RgbImage> {
        let rgba = self.engine.image_rgba()?;
        let bytes: Vec<u8> = rgba
            .iter()
            .flat_map(|p| {
                let [r, g, b, _] = p.to_le_bytes();
                [r, g, b]
            })
            .collect();
        Ok(RgbImage::from_raw(self.width as u32, self.height as u32, bytes).expect("one RGB triple per pixel"))
    }

    /// The content image at the render size.
    pub fn content(&self) -> &RgbImage {
        &self.content
    }

    /// The current image as RGB values on the 0..255 scale, unclamped and unrounded: for 16-bit
    /// output and colour preservation.
    pub fn image_rgb(&self) -> Result<Vec<[f64; 3]>> {
        let net = self.engine.read(self.engine.tape.image)?;
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
        Error::ImageSize { height, width, message } if options.style_scale != 1.0 => Error::ImageSize {
            height,
            width,
            message: format!("{message} (a style image at --style-scale {})", options.style_scale),
        },
        e => e,
    };
    let spec = LossSpec { content: Vec::new(), tv: 0.0, ..options.loss_spec(sw, sh) };
    let engine =
        Engine::new(gpu, library, weights, Tape::build(&spec).map_err(scaled)?.without_backward()).map_err(scaled)?;
    engine.set_image_rgba(&packed(&resize(style, sw, sh)))?;
    engine.forward()?;
    engine.loss_sources(LossKind::Style)
}

/// SplitMix64: the seeded generator of the noise start.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
