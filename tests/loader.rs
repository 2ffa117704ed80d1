//! The image loader against damaged files, without a GPU: a small image in each format nst reads,
//! cut at every length and corrupted at every byte (seeded), and with many bytes at once.
//!
//! Never a panic: every decode runs under `catch_unwind` and a panic names the case. Memory stays
//! bounded: a header may claim any size, and the loader refuses what would take more than
//! `MAX_DECODED_BYTES` before allocating it (tested with huge headers below). No hang: the whole
//! run takes well under a second.
//!
//! Every truncation is refused, in every format. A corruption is refused wherever the format can
//! tell; where it cannot, the test says so per format (see `Sample::may_pass`) instead of
//! pretending: a format without a checksum has bytes whose every value is a valid image.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use common::Rng;
use image::{DynamicImage, ImageFormat, RgbImage};
use nst::image_io::{decode_image, MAX_DECODED_BYTES};

/// A small picture with detail in every channel, so every format's encoder has work to do.
fn picture(width: u32, height: u32, seed: u64) -> RgbImage {
    let mut rng = Rng::new(seed);
    RgbImage::from_fn(width, height, |x, y| {
        let n = rng.below(32) as u32;
        image::Rgb([((x * 8) ^ n) as u8, (y * 13) as u8, ((x + y) * 5 + n) as u8])
    })
}

fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img.clone()).write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

/// Decodes under `catch_unwind`: `Ok(true)` accepted, `Ok(false)` refused, `Err` for a panic.
fn accepted(bytes: &[u8], what: &str) -> bool {
    match catch_unwind(AssertUnwindSafe(|| decode_image(bytes, "sample").map(|_| ()))) {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            let message = e.to_string();
            assert!(message.contains("sample"), "{what}: the message does not name the file: {message}");
            false
        }
        Err(_) => panic!("{what}: the loader panicked"),
    }
}

/// One encoded sample and, for each of its bytes, whether a change there may decode to a valid
/// image (`may_pass`): what the format cannot tell. Every other byte must be refused when changed.
struct Sample {
    format: ImageFormat,
    bytes: Vec<u8>,
    may_pass: Vec<bool>,
    /// Why the bytes that may pass cannot be told from a valid image.
    blind: &'static str,
}

impl Sample {
    fn new(format: ImageFormat, img: &RgbImage) -> Sample {
        let bytes = encode(img, format);
        let n = bytes.len();
        let mut may_pass = vec![false; n];
        let mut mark = |range: std::ops::Range<usize>| may_pass[range].iter_mut().for_each(|m| *m = true);
        let blind = match format {
            ImageFormat::Png => "nothing: every chunk has a CRC, and the IEND chunk must end the file",
            ImageFormat::Jpeg => {
                for segment in jpeg_segments(&bytes) {
                    // APPn, COM and SOFn marker types have valid neighbours (APP0 -> APP1, SOF0 -> SOF1).
                    if matches!(segment.marker, 0xE0..=0xEF | 0xFE | 0xC0 | 0xC1) {
                        mark(segment.at + 1..segment.at + 2);
                    }
                    mark(segment.payload.clone());
                    mark(segment.scan_data.clone());
                }
                "segment payloads (an APPn's contents, quantisation and Huffman tables, the frame's \
                 sizes where the MCU count stays, the baseline scan's unused spectral fields) and the \
                 entropy-coded data: JPEG has no checksum, and a changed bit often decodes to another \
                 valid coefficient. Markers, segment lengths and the end-of-image marker are checked"
            }
            ImageFormat::WebP => {
                // RIFF header, size, WEBP, the VP8L chunk's header and its signature byte are checked.
                mark(21..n);
                "the VP8L bitstream after its signature byte (sizes, transforms, entropy-coded pixels): \
                 it has no checksum. The RIFF header and chunk sizes are checked"
            }
            ImageFormat::Tiff => {
                mark(8..n);
                "everything after the 8-byte header: uncompressed strips hold any pixel values, and \
                 many tag values (resolution, strip sizes that still fit) are not redundant"
            }
            ImageFormat::Bmp => {
                // Signature, the pixel offset's high bytes, the header size's high bytes, the width's
                // and height's high bytes, planes and compression are checked.
                mark(2..11);
                mark(14..15);
                mark(18..19);
                mark(22..23);
                mark(28..29);
                mark(34..n);
                "the file-size and reserved fields (readers ignore them), the pixel offset's low byte (an \
                 earlier start reads shifted pixels), the header size (40, 52, 56, 108 and 124 are all \
                 valid), the width's and height's low bytes and the bit depth (1, 2, 4, 8, 16) while the \
                 data still covers the image, and from byte 34 on: image-size, \
                 resolution and palette-count fields and the uncompressed pixels"
            }
            ImageFormat::Gif => {
                mark(4..5);
                mark(6..n - 1);
                "the version (87a or 89a), everything between the signature and the trailer: the screen size, the palette's \
                 colours and LZW codes that still decode; GIF has no checksum"
            }
            _ => unreachable!(),
        };
        Sample { format, bytes, may_pass, blind }
    }
}

struct Segment {
    at: usize,
    marker: u8,
    payload: std::ops::Range<usize>,
    scan_data: std::ops::Range<usize>,
}

/// The segments of a JPEG written by `image` (no restart markers), listed independently of the
/// loader's own walker.
fn jpeg_segments(bytes: &[u8]) -> Vec<Segment> {
    let mut segments = vec![];
    let mut at = 2;
    while bytes[at + 1] != 0xD9 {
        let marker = bytes[at + 1];
        let length = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
        let payload = at + 4..at + 2 + length;
        let mut next = payload.end;
        if marker == 0xDA {
            while !(bytes[next] == 0xFF && bytes[next + 1] != 0x00) {
                next += 1;
            }
        }
        segments.push(Segment { at, marker, payload: payload.clone(), scan_data: payload.end..next });
        at = next;
    }
    segments
}

const FORMATS: [ImageFormat; 6] =
    [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP, ImageFormat::Tiff, ImageFormat::Bmp, ImageFormat::Gif];

/// Cuts `sample` at every length and changes every byte `changes_per_byte` times (seeded XOR
/// values), then `bursts` times several bytes at once; asserts what the module header says and
/// returns (corruptions tried, corruptions accepted).
fn damage(sample: &Sample, seed: u64, changes_per_byte: usize, bursts: usize) -> (usize, usize) {
    let name = format!("{:?}", sample.format);
    let bytes = &sample.bytes;
    assert!(accepted(bytes, &name), "{name}: the undamaged sample is refused");
    for length in 0..bytes.len() {
        assert!(
            !accepted(&bytes[..length], &name),
            "{name}: cut to {length} of {} bytes, it was accepted",
            bytes.len()
        );
    }
    let mut rng = Rng::new(seed);
    let (mut tried, mut passed) = (0, 0);
    for at in 0..bytes.len() {
        // Where the format can tell, every other value is tried (for PNG, whose every byte is
        // checked, seeded values as elsewhere).
        let exhaustive = !sample.may_pass[at] && sample.format != ImageFormat::Png;
        let changes: Vec<u8> = match exhaustive {
            true => (1..=255).collect(),
            false => (0..changes_per_byte).map(|_| 1 + rng.below(255) as u8).collect(),
        };
        for change in changes {
            let mut damaged = bytes.clone();
            damaged[at] ^= change;
            let what = format!("{name}: byte {at} changed from {:#04x} to {:#04x}", bytes[at], damaged[at]);
            tried += 1;
            if accepted(&damaged, &what) {
                passed += 1;
                assert!(sample.may_pass[at], "{what}: accepted, but the format can tell");
            }
        }
    }
    for burst in 0..bursts {
        let mut damaged = bytes.clone();
        let count = 2 + rng.below(8);
        let places: Vec<usize> = (0..count).map(|_| rng.below(bytes.len())).collect();
        for &at in &places {
            damaged[at] ^= 1 + rng.below(255) as u8;
        }
        let what = format!("{name}: burst {burst}, bytes {places:?} changed");
        tried += 1;
        if accepted(&damaged, &what) {
            passed += 1;
            let told = places.iter().filter(|&&at| !sample.may_pass[at] && damaged[at] != bytes[at]).count();
            assert_eq!(told, 0, "{what}: accepted, but the format can tell");
        }
    }
    (tried, passed)
}

fn damage_every_format(width: u32, height: u32, changes_per_byte: usize, bursts: usize) {
    let img = picture(width, height, 7);
    for (i, format) in FORMATS.into_iter().enumerate() {
        let sample = Sample::new(format, &img);
        let (tried, passed) = damage(&sample, 100 + i as u64, changes_per_byte, bursts);
        eprintln!(
            "{format:?} ({} bytes): {} truncations refused; {} of {tried} corruptions refused; may pass: {}",
            sample.bytes.len(),
            sample.bytes.len(),
            tried - passed,
            sample.blind
        );
        if format == ImageFormat::Png {
            assert_eq!(passed, 0, "a PNG corruption passed its CRCs");
        }
    }
}

#[test]
fn every_truncation_is_refused_and_corruptions_wherever_the_format_can_tell() {
    let start = std::time::Instant::now();
    damage_every_format(29, 19, 3, 2000);
    eprintln!("in {:.2} s", start.elapsed().as_secs_f64());
}

/// A longer run of the same: `cargo test --release --test loader -- --ignored`.
#[test]
#[ignore = "about a minute; the short run above covers every byte of each format"]
fn a_longer_fuzz_run_finds_nothing_either() {
    damage_every_format(67, 45, 16, 200_000);
}

#[test]
fn data_after_the_end_of_a_jpeg_or_png_is_accepted_as_cameras_append_it() {
    let img = picture(29, 19, 3);
    for format in [ImageFormat::Jpeg, ImageFormat::Png] {
        let mut bytes = encode(&img, format);
        bytes.extend(b"trailing data a camera or editor appended");
        assert!(accepted(&bytes, "with trailing data"), "{format:?} with trailing data was refused");
    }
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend(kind);
    chunk.extend(data);
    let mut crc = !0u32;
    for &b in &chunk[4..] {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    chunk.extend((!crc).to_be_bytes());
    chunk
}

/// A header claiming more pixels than the loader decodes is refused from the header, with the size
/// and the limit in the message, before the pixels are allocated: in moments, whatever it claims.
#[test]
fn an_image_too_large_to_decode_is_refused_from_its_header_with_the_limit() {
    let limit = format!("{} MiB", MAX_DECODED_BYTES >> 20);
    let start = std::time::Instant::now();

    // PNG: a valid IHDR of 60000x60000 RGB (10 GiB decoded), a little data, IEND.
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = 60000u32.to_be_bytes().to_vec();
    ihdr.extend(60000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    png.extend(png_chunk(b"IEND", &[]));

    // JPEG: the small sample with its frame header claiming 65000x65000.
    let mut jpeg = encode(&picture(29, 19, 5), ImageFormat::Jpeg);
    let sof = jpeg_segments(&jpeg).into_iter().find(|s| s.marker == 0xC0).unwrap().payload.start;
    jpeg[sof + 1..sof + 5].copy_from_slice(&[0xFD, 0xE8, 0xFD, 0xE8]);

    // BMP: the small sample with its header claiming 40000x40000.
    let mut bmp = encode(&picture(29, 19, 5), ImageFormat::Bmp);
    bmp[18..22].copy_from_slice(&40000i32.to_le_bytes());
    bmp[22..26].copy_from_slice(&40000i32.to_le_bytes());

    for (name, bytes, size) in [("PNG", png, "60000x60000"), ("JPEG", jpeg, "65000x65000"), ("BMP", bmp, "40000x40000")]
    {
        let message = match decode_image(&bytes, "huge") {
            Ok(_) => panic!("a {name} of {size} was decoded"),
            Err(e) => e.to_string(),
        };
        for needle in ["huge", size, &limit, "scale it down"] {
            assert!(message.contains(needle), "{name}: {needle:?} not in {message:?}");
        }
    }
    assert!(start.elapsed().as_secs_f64() < 1.0, "took {:?}: decoded before refusing", start.elapsed());
}
