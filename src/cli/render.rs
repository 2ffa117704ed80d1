//! `nst render`: the command that turns a photo and a painting into a picture.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;
use nst::gpu::{Gpu, GpuOptions};
use nst::image_io::{self, Depth};
use nst::net::{LossKind, Pooling, Vgg19Weights};
use nst::render::{self, CheckedOptions, Init, Losses, Optimizer, Render, RenderOptions, Size};

use super::progress::Progress;

/// What `nst render` failed with, and the exit code it leaves.
pub enum Failure {
    /// A library error: exit code 1.
    Error(nst::Error),
    /// The loss stopped being finite: the last good image was written; exit code 3.
    Diverged(String),
    /// Ctrl-C: the current image was written; exit code 130.
    Interrupted(String),
}

impl From<nst::Error> for Failure {
    fn from(e: nst::Error) -> Self {
        Failure::Error(e)
    }
}

/// The library's defaults, which every flag's default is read from: one place for them.
fn d() -> RenderOptions {
    RenderOptions::default()
}

#[derive(Args)]
pub struct RenderArgs {
    /// The photo whose content the picture keeps (any format the image crate reads).
    #[arg(help_heading = "Inputs")]
    pub content: PathBuf,
    /// The painting(s) whose style the picture takes; several are blended (--style-blend).
    #[arg(help_heading = "Inputs", required = true, num_args = 1..)]
    pub styles: Vec<PathBuf>,
    /// Where the optimisation starts: content, noise, or an image file.
    #[arg(long, default_value = "content", value_name = "content|noise|PATH", help_heading = "Inputs")]
    pub init: String,

    /// Weight of the content term (mean over content layers of mean((F - P)^2); with relative
    /// terms, each over mean(P^2)).
    #[arg(long, default_value_t = d().content_weight, allow_hyphen_values = true, help_heading = "Loss")]
    pub content_weight: f64,
    /// Weight of the style term (mean over style layers of mean((G - A)^2), G = FᵀF / positions;
    /// with relative terms, the mean relative error of the Gram matrices). 13 stylises about as
    /// strongly as the reference gallery; raise it for bolder pictures, lower it for subtler ones.
    #[arg(long, default_value_t = d().style_weight, allow_hyphen_values = true, help_heading = "Loss")]
    pub style_weight: f64,
    /// Weight of the total variation (sum of |differences of neighbouring pixels|, 0..255 scale;
    /// with relative terms, over the photo's own, so 0.3 keeps the picture about as smooth as it).
    #[arg(long, default_value_t = d().tv_weight, allow_hyphen_values = true, help_heading = "Loss")]
    pub tv_weight: f64,
    /// Content layers, comma-separated.
    #[arg(long, default_value_t = d().content_layers.join(","), help_heading = "Loss")]
    pub content_layers: String,
    /// Style layers, comma-separated.
    #[arg(
        long,
        default_value_t = d().style_layers.join(","),
        help_heading = "Loss"
    )]
    pub style_layers: String,
    /// Blend weights of the style images, comma-separated, one per style (normalised to sum 1).
    /// Default: equal.
    #[arg(long, value_delimiter = ',', value_name = "W1,W2,...", allow_hyphen_values = true, help_heading = "Style")]
    pub style_blend: Vec<f64>,
    /// Resize each style image to F times the output's long edge before taking its Gram
    /// matrices: above 1 larger strokes; below 1 the strokes shrink away and the painting's
    /// larger forms become the texture.
    #[arg(long, default_value_t = d().style_scale, value_name = "F", allow_hyphen_values = true, help_heading = "Style")]
    pub style_scale: f64,
    /// Recolour the style images to the content's channel means and covariance before
    /// optimising: the strokes stay, the palette is the photo's.
    #[arg(long, help_heading = "Style")]
    pub color_match: bool,
    /// Keep the content's colours: the output takes the result's luma (Y) and the content's
    /// chroma (Cb, Cr) in full-range YCbCr (BT.601).
    #[arg(long, help_heading = "Style")]
    pub preserve_colors: bool,

    /// How the style layers weigh against each other: balanced (each layer's term divided by the
    /// mean square of its target Gram matrix, times the mean of those over the layers),
    /// uniform, or one factor per style layer (W1,W2,...).
    #[arg(long, default_value_t = d().style_layer_weights.to_string(), value_name = "balanced|uniform|W1,W2,...", help_heading = "Loss")]
    pub style_layer_weights: String,
    /// How the content and style terms are scaled: raw (Gatys et al.'s mean squared differences,
    /// whose size depends on the painting), or relative (each content layer's term divided by the
    /// mean square of its target, the style term by the mean over style layers of the mean square
    /// of their target Gram matrices, the TV term by the photo's own total variation), where the
    /// weights mean the same strength for every photo, painting and size.
    #[arg(long, default_value_t = d().loss_scale.to_string(), value_parser = ["raw", "relative"], help_heading = "Loss")]
    pub loss_scale: String,
    /// Pooling between VGG19's blocks: max, or avg (each average pool's output rescaled so that
    /// its mean matches max pooling's, so the same loss weights fit).
    #[arg(long, default_value_t = d().pooling.to_string(), value_parser = ["max", "avg"], help_heading = "Loss")]
    pub pooling: String,

    /// Iterations (one gradient each). With several scales, the budget the scales share (see
    /// --scales); --scale-iterations sets each scale's count instead.
    #[arg(long, default_value_t = d().iterations, value_parser = positive, allow_hyphen_values = true,
          help_heading = "Optimisation")]
    pub iterations: u32,
    /// The optimiser: adam, or lbfgs (the quasi-Newton method of the original paper).
    #[arg(long, default_value_t = d().optimizer.to_string(), value_parser = ["adam", "lbfgs"], help_heading = "Optimisation")]
    pub optimizer: String,
    /// Adam's learning rate, in pixel values (0..255).
    #[arg(long, default_value_t = d().adam.lr, allow_hyphen_values = true, help_heading = "Optimisation")]
    pub lr: f64,
    /// Adam's learning rate falls along a half cosine to this fraction of --lr at the last
    /// iteration of each scale (1: constant).
    #[arg(long, default_value_t = d().lr_decay, value_name = "F", allow_hyphen_values = true,
          help_heading = "Optimisation")]
    pub lr_decay: f64,
    /// L-BFGS: correction pairs kept.
    #[arg(long, default_value_t = d().lbfgs.history, value_name = "M", help_heading = "Optimisation")]
    pub lbfgs_history: usize,
    /// L-BFGS: step length along the quasi-Newton direction (a step that raises the loss is undone).
    #[arg(long, default_value_t = d().lbfgs.step, value_name = "T", help_heading = "Optimisation")]
    pub lbfgs_step: f64,
    /// L-BFGS: RMS change of the pixel values (0..255) of the first step, a gradient step.
    #[arg(long, default_value_t = d().lbfgs.first_step, value_name = "RMS", help_heading = "Optimisation")]
    pub lbfgs_first_step: f64,
    /// Output the exponential moving average of the iterates (bias-corrected) with this decay
    /// (such as 0.95) instead of the last iterate; each scale starts from its predecessor's average.
    #[arg(long, value_name = "DECAY", help_heading = "Optimisation")]
    pub average: Option<f64>,
    /// Coarse-to-fine: auto (one scale up to 256 px; up to 512 px half the size first; above,
    /// 512, then times √2 up to --size), off, long edges
    /// (128,256,512), or START*FACTOR (256*1.414). Each scale starts from the previous result
    /// upsampled, with its own style targets.
    #[arg(long, default_value_t = d().scales.to_string(), value_name = "auto|off|E1,E2,...|START*FACTOR", help_heading = "Optimisation")]
    pub scales: String,
    /// Iterations of each scale, one per scale. Default: scale k gets its share of --iterations
    /// at min(size, 512) px (half for the first scale, the rest split equally), converted by the
    /// ratio of pixels and kept between iterations/10 and iterations.
    #[arg(long, value_delimiter = ',', value_name = "N1,N2,...", help_heading = "Optimisation")]
    pub scale_iterations: Vec<u32>,
    /// The 3x3 conv kernels: auto (Winograd F(4x4, 3x3), or F(2x2) on the smallest maps, for every
    /// forward conv with at least 128 input channels and every input gradient from 64, the direct
    /// conv for the first block's forward; on an adapter without subgroups Winograd wherever it
    /// takes the shape), direct (the direct conv everywhere), or winograd (wherever its kernels
    /// take the shape).
    #[arg(long, default_value_t = d().conv.to_string(), value_parser = ["auto", "direct", "winograd"], help_heading = "Optimisation")]
    pub conv: String,
    /// Seed of the noise start (`--init noise`); a render is deterministic for a seed and adapter.
    #[arg(long, default_value_t = d().seed, help_heading = "Optimisation")]
    pub seed: u64,

    /// Output image; the extension chooses the format (.png, .jpg, .webp, .tiff, .bmp).
    #[arg(short, long, help_heading = "Output")]
    pub output: PathBuf,
    /// Working size: the long edge (512) or WIDTHxHEIGHT (512x512).
    #[arg(long, default_value_t = d().size.to_string(), help_heading = "Output")]
    pub size: String,
    /// Also write the image every N iterations, as OUT.NNNN.ext.
    #[arg(long, value_name = "N", value_parser = positive, help_heading = "Output")]
    pub save_every: Option<u32>,
    /// Write one JSON line per iteration to FILE: iteration, seconds, each loss term, total.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub log: Option<PathBuf>,
    /// Bits per channel of the output: 8, or 16 (PNG or TIFF).
    #[arg(long, default_value = "8", value_parser = ["8", "16"], help_heading = "Output")]
    pub depth: String,
    /// Print nothing but errors.
    #[arg(short, long, help_heading = "Output")]
    pub quiet: bool,
}

/// `relu1_1,relu2_1`: the names, an empty list for `""`.
fn layer_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

fn positive(s: &str) -> Result<u32, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if n >= 1 && n <= u32::MAX as i64 => Ok(n as u32),
        Ok(n) => Err(format!("{n} is not a positive count; give a whole number such as 300")),
        Err(_) => Err(format!("{s:?} is not a whole number; give one such as 300")),
    }
}

impl RenderArgs {
    fn options(&self) -> nst::Result<CheckedOptions> {
        let size: Size = self.size.parse().map_err(nst::Error::Options)?;
        let init = match self.init.as_str() {
            "content" => Init::Content,
            "noise" => Init::Noise,
            path => Init::Image(image_io::load_image(Path::new(path))?),
        };
        let options = RenderOptions {
            size,
            iterations: self.iterations,
            adam: nst::ops::adam::AdamConfig { lr: self.lr, ..Default::default() },
            lr_decay: self.lr_decay,
            content_weight: self.content_weight,
            style_weight: self.style_weight,
            tv_weight: self.tv_weight,
            content_layers: layer_list(&self.content_layers),
            style_layers: layer_list(&self.style_layers),
            init,
            pooling: if self.pooling == "avg" { Pooling::Avg } else { Pooling::Max },
            seed: self.seed,
            style_blend: self.style_blend.clone(),
            style_scale: self.style_scale,
            color_match: self.color_match,
            optimizer: if self.optimizer == "lbfgs" { Optimizer::Lbfgs } else { Optimizer::Adam },
            lbfgs: nst::optim::LbfgsConfig {
                history: self.lbfgs_history,
                step: self.lbfgs_step,
                first_step: self.lbfgs_first_step,
            },
            average: self.average,
            style_layer_weights: self.style_layer_weights.parse().map_err(nst::Error::Options)?,
            loss_scale: self.loss_scale.parse().map_err(nst::Error::Options)?,
            scales: self.scales.parse().map_err(nst::Error::Options)?,
            scale_iterations: self.scale_iterations.clone(),
            conv: self.conv.parse().map_err(nst::Error::Options)?,
        };
        options.check(self.styles.len())
    }

    fn snapshot_path(&self, iteration: u32) -> PathBuf {
        let stem = self.output.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let ext = self.output.extension().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        self.output.with_file_name(format!("{stem}.{iteration:04}.{ext}"))
    }
}

/// The `--log` file: one JSON line per iteration, created at the first (a failed start leaves no
/// file). A write that fails, on a full disk say, is undone: the file is cut back to its last
/// complete line, or removed when it has none, so it never ends in half a line.
struct Log {
    path: PathBuf,
    file: Option<std::fs::File>,
    complete: u64,
}

impl Log {
    fn new(path: &Path) -> Log {
        Log { path: path.to_path_buf(), file: None, complete: 0 }
    }

    /// Appends `line` and a newline; on failure, says why and what the log keeps.
    fn append(&mut self, line: &str) -> Result<(), String> {
        let line = format!("{line}\n");
        let written = (|| -> std::io::Result<()> {
            if self.file.is_none() {
                self.file = Some(std::fs::File::create(&self.path)?);
            }
            self.file.as_mut().expect("created above").write_all(line.as_bytes())
        })();
        let Err(e) = written else {
            self.complete += line.len() as u64;
            return Ok(());
        };
        let kept = match self.file.take() {
            Some(file) if self.complete > 0 && file.set_len(self.complete).is_ok() => {
                self.file = Some(file);
                "it keeps the lines of the iterations before"
            }
            Some(_) => {
                let _ = std::fs::remove_file(&self.path);
                "it was removed"
            }
            None => "no log was written",
        };
        Err(format!("cannot write the log ({e}); {kept}; {}", image_io::write_advice(&e)))
    }
}

/// One `--log` line: the iteration, the seconds since the first began, each kind's sum, the total,
/// and each per-layer kind's terms by layer (`content_layers`, `style_layers`).
fn json_line(iteration: u32, seconds: f64, l: &Losses) -> String {
    use serde_json::{Map, Value};
    let mut line = Map::new();
    line.insert("iteration".into(), iteration.into());
    line.insert("seconds".into(), seconds.into());
    for kind in LossKind::ALL {
        line.insert(kind.name().into(), l.of(kind).into());
    }
    line.insert("total".into(), l.total().into());
    for kind in LossKind::ALL.into_iter().filter(|k| k.per_layer()) {
        let layers: Map<String, Value> =
            l.terms.iter().filter(|t| t.kind == kind).map(|t| (t.layer.clone(), t.value.into())).collect();
        line.insert(format!("{}_layers", kind.name()), layers.into());
    }
    Value::Object(line).to_string()
}

pub fn run(args: &RenderArgs, gpu_options: &GpuOptions, weights_path: Option<&Path>) -> Result<(), Failure> {
    // Everything that needs no GPU is checked first, so that a mistake costs nothing.
    let mut inputs = vec![args.content.as_path()];
    inputs.extend(args.styles.iter().map(PathBuf::as_path));
    if !matches!(args.init.as_str(), "content" | "noise") {
        inputs.push(Path::new(&args.init));
    }
    if let Some(log) = &args.log {
        inputs.push(log);
    }
    let format = image_io::check_output(&args.output, &inputs)?;
    let depth = if args.depth == "16" { Depth::Sixteen } else { Depth::Eight };
    if depth == Depth::Sixteen && !matches!(format, image::ImageFormat::Png | image::ImageFormat::Tiff) {
        let message = "16-bit output needs a .png or .tiff name".to_string();
        return Err(nst::Error::Output { path: args.output.display().to_string(), message }.into());
    }
    let options = args.options()?;
    let image_io::InputImage { image: content, icc_profile: profile } = image_io::read_image(&args.content)?;
    let styles = args.styles.iter().map(|s| image_io::load_image(s)).collect::<nst::Result<Vec<_>>>()?;
    // The output keeps the content's colour profile; without one, a PNG is tagged sRGB.
    let save = |render: &Render, path: &Path| -> nst::Result<()> {
        if depth == Depth::Eight && !args.preserve_colors {
            return image_io::save_output(&image::DynamicImage::ImageRgb8(render.image()?), path, profile.as_deref());
        }
        let mut pixels = render.image_rgb()?;
        if args.preserve_colors {
            nst::color::preserve_colors(&mut pixels, render.content());
        }
        image_io::save_output(
            &image_io::quantize(&pixels, render.width, render.height, depth),
            path,
            profile.as_deref(),
        )
    };
    if let Some(log) = &args.log {
        if log.is_dir() {
            let message = "is a directory; give a file name such as render.jsonl".to_string();
            return Err(nst::Error::Output { path: log.display().to_string(), message }.into());
        }
        image_io::check_writable(log)?;
    }
    let mut log = args.log.as_deref().map(Log::new);

    let gpu = Gpu::new(gpu_options)?;
    let library = nst::shaders::library(&gpu)?;
    let (weights, _) = Vgg19Weights::load(weights_path)?;
    let schedule = options.schedule(content.width() as usize, content.height() as usize)?;
    if schedule.len() > 1 {
        // The first scale is smaller: find out now, not at the last, if the output size is too large.
        render::check_output_size(&gpu, &library, &options, &content, &styles)?;
    }
    let total: u32 = schedule.iter().map(|&(_, n)| n).sum();
    let at_scale = |size: Size, iterations: u32| options.at(size, iterations);
    let setup = std::time::Instant::now();
    let mut render = Render::new(&gpu, &library, &weights, &content, &styles, &at_scale(schedule[0].0, schedule[0].1))?;
    let cost: Vec<f64> = schedule
        .iter()
        .flat_map(|&(size, n)| {
            let (w, h) = size.of(content.width() as usize, content.height() as usize);
            std::iter::repeat_n((w * h) as f64, n as usize)
        })
        .collect();
    let mut progress = Progress::with_costs(cost, args.quiet);
    let (out_w, out_h) = options.size.of(content.width() as usize, content.height() as usize);
    let optimizer = match options.optimizer {
        Optimizer::Adam => "Adam",
        Optimizer::Lbfgs => "L-BFGS",
    };
    progress.say(&format!(
        "nst: {out_w}x{out_h} px, {total} iterations ({optimizer}) on {}; {} MiB of GPU memory at the first scale; \
         targets ready in {:.1} s",
        gpu.describe(),
        render.allocated_bytes() >> 20,
        setup.elapsed().as_secs_f64()
    ));
    if schedule.len() > 1 {
        let scales: Vec<String> = schedule
            .iter()
            .map(|&(size, n)| {
                let (w, h) = size.of(content.width() as usize, content.height() as usize);
                format!("{w}x{h} x {n}")
            })
            .collect();
        progress.say(&format!("nst: scales {}", scales.join(", ")));
    }

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        // A second Ctrl-C ends at once; the output is only ever renamed into place whole.
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!(
                "\nnst: interrupted; finishing this iteration and writing the current image (Ctrl-C again to quit now)"
            );
        });
    }
    // Test hook: fill the image with NaN before iteration N, to exercise the divergence path.
    let inject_nan_at: Option<u32> = std::env::var("NST_INJECT_NAN_AT").ok().and_then(|v| v.parse().ok());
    let mut t = 0;
    for (scale, &(size, iterations)) in schedule.iter().enumerate() {
        if scale > 0 {
            render = render.next_scale(&library, &weights, &content, &styles, &at_scale(size, iterations))?;
        }
        for _ in 0..iterations {
            t += 1;
            if interrupted.load(Ordering::SeqCst) {
                progress.finish_line();
                save(&render, &args.output)?;
                return Err(Failure::Interrupted(format!(
                    "interrupted after {} iterations; wrote {}",
                    t - 1,
                    args.output.display()
                )));
            }
            if inject_nan_at == Some(t) {
                render.poison_image();
            }
            let losses = match render.step()? {
                Ok(losses) => losses,
                Err(diverged) => {
                    progress.finish_line();
                    let advice = "try a lower --lr or smaller loss weights";
                    // Counted from the first iteration of the whole render, not of this scale.
                    let last_good = t - diverged.iteration + diverged.last_good;
                    if t == 1 {
                        return Err(Failure::Diverged(format!(
                            "the loss of the starting image is not finite; nothing written; {advice}"
                        )));
                    }
                    save(&render, &args.output)?;
                    return Err(Failure::Diverged(format!(
                        "the loss became NaN or infinite at iteration {}; wrote the last good image (after {} \
                     iterations) to {}; {advice}",
                        t,
                        last_good,
                        args.output.display()
                    )));
                }
            };
            let elapsed = progress.elapsed();
            if let Some(log) = log.as_mut() {
                if let Err(e) = log.append(&json_line(t, elapsed, &losses)) {
                    // The render ends, as the log asked for is incomplete; the image is kept if it can be.
                    progress.finish_line();
                    let image = match save(&render, &args.output) {
                        Ok(()) => format!("wrote the image after {t} iterations to {}", args.output.display()),
                        Err(_) => "the image could not be written either".into(),
                    };
                    return Err(nst::Error::Output {
                        path: log.path.display().to_string(),
                        message: format!("{e}; {image}"),
                    }
                    .into());
                }
            }
            progress.update(t, &losses);
            if args.save_every.is_some_and(|n| t % n == 0 && t < total) {
                save(&render, &args.snapshot_path(t))?;
            }
        }
    }
    save(&render, &args.output)?;
    progress.say(&format!(
        "nst: wrote {} ({}x{}, {} iterations, {:.1} s)",
        args.output.display(),
        render.width,
        render.height,
        total,
        setup.elapsed().as_secs_f64()
    ));
    Ok(())
}
