//! Image files in and out. Inputs are decoded strictly: a truncated or corrupt file is refused with
//! a message naming it, never rendered from, and an image too large to decode within
//! [`MAX_DECODED_BYTES`] is refused before its pixels are allocated (the `image` crate's decoding
//! limits). Outputs are encoded in memory and written to a temporary file beside their path, then
//! renamed over it: a full disk or an interruption never leaves a partial file.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{ColorType, DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use crate::error::{Error, Result};

/// The most memory one input may take decoded, at its own depth and channels, and the largest
/// input file read: 1 GiB, an RGB photo of 357 megapixels (about 18,900 x 18,900) at 8 bits.
pub const MAX_DECODED_BYTES: u64 = 1 << 30;

/// The formats nst reads, as `image` names them.
pub const INPUT_FORMATS: [ImageFormat; 6] =
    [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP, ImageFormat::Tiff, ImageFormat::Bmp, ImageFormat::Gif];

/// A decoded input: 8-bit RGB with its EXIF orientation applied, and its ICC colour profile.
pub struct InputImage {
    pub image: RgbImage,
    pub icc_profile: Option<Vec<u8>>,
}

/// Reads and decodes the image file at `path` (see [`decode_image`]).
pub fn read_image(path: &Path) -> Result<InputImage> {
    let name = path.display().to_string();
    let err = |message: String| Error::Image { path: name.clone(), message };
    let size = std::fs::metadata(path).map_err(|e| err(format!("cannot open it ({e}); check the path")))?.len();
    if path.is_dir() {
        return Err(err("is a directory; give an image file".into()));
    }
    if size > MAX_DECODED_BYTES {
        return Err(err(format!(
            "the file is {} MiB, more than the {} MiB nst reads; scale the image down first",
            size >> 20,
            MAX_DECODED_BYTES >> 20
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read it ({e})")))?;
    decode_image(&bytes, &name)
}

/// Reads an image like [`read_image`], without its colour profile.
pub fn load_image(path: &Path) -> Result<RgbImage> {
    read_image(path).map(|input| input.image)
}

/// Decodes an image file's bytes (`name` says which file in errors): PNG, JPEG, WebP, TIFF, BMP or
/// GIF (its first frame), by content, not by name; applies its EXIF orientation and converts it to
/// 8-bit RGB (grayscale replicated, alpha dropped, 16-bit rounded).
///
/// Refused: a file in no known format; an image whose pixels would take more than
/// [`MAX_DECODED_BYTES`] (checked from the header, before any pixel is allocated); any error of the
/// decoder, including in the colour profile and the EXIF data; a JPEG decoded in strict mode
/// (entropy-coded data that ends early or holds invalid codes, markers where none belong) or whose
/// data ends before its end-of-image marker, which a lenient decoder would fill with grey; a PNG
/// that ends before its IEND chunk; a WebP shorter than its RIFF size or whose chunks do not add
/// up to it; a GIF without its trailer byte.
pub fn decode_image(bytes: &[u8], name: &str) -> Result<InputImage> {
    let err = |message: String| Error::Image { path: name.to_string(), message };
    let damaged = |what: String| err(format!("damaged or truncated image ({what}); copy, download or export it again"));
    let format = image::guess_format(bytes)
        .ok()
        .filter(|f| INPUT_FORMATS.contains(f))
        .ok_or_else(|| err("not an image nst can read (use PNG, JPEG, WebP, TIFF, BMP or GIF)".into()))?;
    let as_error = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => err(format!(
            "too large to decode ({e}); nst decodes at most {} MiB per image; scale it down first",
            MAX_DECODED_BYTES >> 20
        )),
        e => damaged(e.to_string()),
    };
    let mut limits = Limits::no_limits();
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits.clone());
    let mut decoder = reader.into_decoder().map_err(as_error)?;
    let (width, height) = decoder.dimensions();
    let needed = decoder.total_bytes();
    limits.reserve(needed).map_err(|_| {
        err(format!(
            "is {width}x{height} pixels, which take {} MiB decoded, more than the {} MiB nst decodes per image; \
             scale it down first",
            needed.div_ceil(1 << 20),
            MAX_DECODED_BYTES >> 20
        ))
    })?;
    let icc_profile = decoder.icc_profile().map_err(as_error)?;
    let orientation = decoder.orientation().map_err(as_error)?;
    let mut img = match format {
        ImageFormat::Jpeg => {
            let color = decoder.color_type();
            drop(decoder);
            decode_jpeg_strictly(bytes, color, width, height).map_err(damaged)?
        }
        _ => DynamicImage::from_decoder(decoder).map_err(as_error)?,
    };
    match format {
        ImageFormat::Jpeg if jpeg_end_of_image(bytes).is_none() => {
            return Err(damaged("the JPEG data ends before its end-of-image marker, or its markers are broken".into()));
        }
        ImageFormat::Png if png_end(bytes).is_none() => {
            return Err(damaged("the PNG data ends before its IEND chunk".into()));
        }
        ImageFormat::WebP if !riff_complete(bytes) => {
            return Err(damaged("the WebP data ends before its RIFF size, or its chunk sizes disagree".into()));
        }
        ImageFormat::Gif if bytes.last() != Some(&GIF_TRAILER) => {
            return Err(damaged("the GIF data ends before its trailer".into()));
        }
        _ => {}
    }
    img.apply_orientation(orientation);
    Ok(InputImage { image: img.to_rgb8(), icc_profile })
}

/// The offset just past a PNG's IEND chunk, walking its chunks by their lengths from the
/// signature: `None` when the data ends first. The decoder stops once the image data is complete,
/// so without this a PNG cut inside its last chunk would pass.
pub fn png_end(bytes: &[u8]) -> Option<usize> {
    const IEND: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];
    let mut at = 8;
    loop {
        let length = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
        let end = at.checked_add(12)?.checked_add(length)?;
        let chunk = bytes.get(at..end)?;
        if &chunk[4..8] == b"IEND" {
            return (chunk == IEND).then_some(end);
        }
        at = end;
    }
}

/// Whether a RIFF file (WebP) holds all the bytes its header announces, and its chunks, each
/// skipped by its size (and pad byte), end exactly there.
pub fn riff_complete(bytes: &[u8]) -> bool {
    let Some(size) = bytes.get(4..8).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize) else {
        return false;
    };
    let end = size + 8;
    if bytes.len() < end || end < 12 {
        return false;
    }
    let mut at = 12;
    while at < end {
        let Some(chunk) = bytes.get(at + 4..at + 8) else { return false };
        let chunk = u32::from_le_bytes(chunk.try_into().expect("4 bytes")) as usize;
        at += 8 + chunk + (chunk & 1);
    }
    at == end
}

/// The byte that ends every GIF file.
const GIF_TRAILER: u8 = 0x3B;

/// Decodes a JPEG with the decoder `image` uses (zune-jpeg), in strict mode, which `image` turns
/// off: there, entropy-coded data that ends early or holds an invalid code is filled with grey.
/// `color` is the colour type `image` reports for the file, whose conversion this keeps.
fn decode_jpeg_strictly(
    bytes: &[u8],
    color: ColorType,
    width: u32,
    height: u32,
) -> std::result::Result<DynamicImage, String> {
    use zune_core::colorspace::ColorSpace;
    let out = match color {
        ColorType::L8 => ColorSpace::Luma,
        ColorType::La8 => ColorSpace::LumaA,
        ColorType::Rgba8 => ColorSpace::RGBA,
        _ => ColorSpace::RGB,
    };
    let options = zune_core::options::DecoderOptions::default()
        .set_strict_mode(true)
        .jpeg_set_out_colorspace(out)
        .set_max_width(width as usize)
        .set_max_height(height as usize);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(bytes), options);
    let pixels = decoder.decode().map_err(|e| format!("JPEG: {e}"))?;
    if pixels.len() != width as usize * height as usize * out.num_components() {
        return Err(format!("JPEG: {} bytes of pixels for {width}x{height}", pixels.len()));
    }
    let whole = "the length was checked";
    Ok(match out {
        ColorSpace::Luma => DynamicImage::ImageLuma8(image::ImageBuffer::from_raw(width, height, pixels).expect(whole)),
        ColorSpace::LumaA => {
            DynamicImage::ImageLumaA8(image::ImageBuffer::from_raw(width, height, pixels).expect(whole))
        }
        ColorSpace::RGBA => DynamicImage::ImageRgba8(image::ImageBuffer::from_raw(width, height, pixels).expect(whole)),
        _ => DynamicImage::ImageRgb8(image::ImageBuffer::from_raw(width, height, pixels).expect(whole)),
    })
}

/// The offset of a JPEG's end-of-image marker, found by walking its segments from the
/// start-of-image marker (skipping each segment by its length, and each scan's entropy-coded data
/// up to the next marker that is neither a stuffed byte nor a restart): `None` when the data ends
/// first or holds something other than a marker where one belongs. Markers inside a segment (an
/// EXIF thumbnail's) are skipped with it, so only the main image's end counts.
pub fn jpeg_end_of_image(bytes: &[u8]) -> Option<usize> {
    if bytes.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut at = 2;
    let mut in_scan = false;
    loop {
        if in_scan {
            loop {
                at += bytes.get(at..)?.iter().position(|&b| b == 0xFF)?;
                match *bytes.get(at + 1)? {
                    0x00 | 0xD0..=0xD7 | 0xFF => at += 1,
                    _ => break,
                }
            }
            in_scan = false;
        }
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        while *bytes.get(at + 1)? == 0xFF {
            at += 1;
        }
        let marker = bytes[at + 1];
        match marker {
            0xD9 => return Some(at),
            0x01 | 0xD0..=0xD7 => at += 2,
            _ => {
                let length = u16::from_be_bytes([*bytes.get(at + 2)?, *bytes.get(at + 3)?]) as usize;
                if length < 2 || at + 2 + length > bytes.len() {
                    return None;
                }
                at += 2 + length;
                in_scan = marker == 0xDA;
            }
        }
    }
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
        Error::Output {
            path: path.display().to_string(),
            message: format!("cannot write it ({e}); {}", write_advice(&e)),
        }
    })
}

/// What to do about a failed write, for a message.
pub fn write_advice(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded | std::io::ErrorKind::FileTooLarge => {
            "free some space there or choose another directory"
        }
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => "choose a writable directory",
        _ => "check the disk and the directory",
    }
}
