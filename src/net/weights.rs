//! VGG19's conv weights: the file format (see `weights/README.md`), its checks, and the copy embedded
//! in the binary.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use super::vgg::CONVS;
use crate::error::{Error, Result};

/// The weights shipped with nst, embedded in the binary so that a render needs no file, no network
/// and no particular working directory.
pub const EMBEDDED: &[u8] = include_bytes!("../../weights/vgg19-q8.safetensors");
/// SHA-256 of [`EMBEDDED`], as recorded in `weights/README.md`.
pub const EMBEDDED_SHA256: &str = "c1665f9c3d6715dc121733fa23e009e0f425bf02b41a355b61b55019b089fe76";
/// The `format` metadata value of an nst weight file.
pub const FORMAT: &str = "nst-vgg19";
/// The format version this build reads.
pub const VERSION: &str = "1";

/// One conv layer's parameters, in nst's layout: weights `[out][3][3][in]`.
#[derive(Clone, Debug)]
pub struct ConvWeights {
    /// `conv1_1` ... `conv5_4`.
    pub name: &'static str,
    pub in_channels: usize,
    pub out_channels: usize,
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
}

impl ConvWeights {
    /// The weights with the input channels padded with zeros to `in_channels` (conv1_1 reads the
    /// 4-channel network image).
    pub fn padded(&self, in_channels: usize) -> Vec<f32> {
        assert!(in_channels >= self.in_channels);
        let mut out = vec![0.0; self.out_channels * 9 * in_channels];
        for (k, row) in self.weights.chunks_exact(self.in_channels).enumerate() {
            out[k * in_channels..k * in_channels + self.in_channels].copy_from_slice(row);
        }
        out
    }
}

/// The 16 conv layers of VGG19, in order.
#[derive(Clone, Debug)]
pub struct Vgg19Weights {
    pub convs: Vec<ConvWeights>,
}

/// SHA-256 as lowercase hex: the checksum a weight file's `data_sha256` holds for its data section.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

impl Vgg19Weights {
    /// The weights embedded in the binary.
    pub fn embedded() -> Result<Vgg19Weights> {
        let digest = sha256_hex(EMBEDDED);
        if digest != EMBEDDED_SHA256 {
            return Err(Error::Weights {
                origin: "embedded weights".into(),
                message: format!("SHA-256 {digest}, expected {EMBEDDED_SHA256}: the binary is damaged"),
            });
        }
        Self::from_bytes(EMBEDDED, "embedded weights")
    }

    /// The weights of `path`, or the built-in ones without a path; with where they came from, in
    /// words.
    pub fn load(path: Option<&Path>) -> Result<(Vgg19Weights, String)> {
        match path {
            Some(p) => Ok((Vgg19Weights::from_file(p)?, p.display().to_string())),
            None => Ok((Vgg19Weights::embedded()?, "built in (VGG19, 8-bit quantised)".to_string())),
        }
    }

    /// Reads a weight file (`--weights PATH`): quantised or full precision.
    pub fn from_file(path: &Path) -> Result<Vgg19Weights> {
        let bytes = std::fs::read(path).map_err(|e| Error::Weights {
            origin: path.display().to_string(),
            message: format!("cannot read it ({e}); check the path"),
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses and checks a weight file: container, format and version, the checksum of the data,
    /// and every tensor's name, dtype and shape. `origin` names the file in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Vgg19Weights> {
        let fail = |message: String| Error::Weights { origin: origin.to_string(), message };
        let (header_len, metadata) =
            SafeTensors::read_metadata(bytes).map_err(|e| fail(format!("not a safetensors file ({e})")))?;
        let meta = |key: &str| metadata.metadata().as_ref().and_then(|m| m.get(key)).map(String::as_str);
        match meta("format") {
            Some(FORMAT) => {}
            Some(other) => return Err(fail(format!("format is {other:?}, expected {FORMAT:?}"))),
            None => return Err(fail(format!("no \"format\" metadata; expected {FORMAT:?}"))),
        }
        match meta("version") {
            Some(VERSION) => {}
            Some(other) => return Err(fail(format!("format version {other:?}; this nst reads version {VERSION}"))),
            None => return Err(fail("no \"version\" metadata".into())),
        }
        let data = &bytes[8 + header_len..];
        let Some(expected) = meta("data_sha256") else {
            return Err(fail("no \"data_sha256\" metadata (the SHA-256 of the tensor data)".into()));
        };
        let digest = sha256_hex(data);
        if digest != expected {
            return Err(fail(format!(
                "the tensor data's SHA-256 is {digest}, the header says {expected}: the file is corrupt"
            )));
        }
        let file = SafeTensors::deserialize(bytes).map_err(|e| fail(format!("bad tensor table ({e})")))?;

        let tensor = |name: &str, dtype: Dtype, shape: &[usize]| {
            let view = file.tensor(name).map_err(|_| fail(format!("missing tensor {name}")))?;
            if view.dtype() != dtype {
                return Err(fail(format!("tensor {name} is {:?}, expected {dtype:?}", view.dtype())));
            }
            if view.shape() != shape {
                return Err(fail(format!("tensor {name} has shape {:?}, expected {shape:?}", view.shape())));
            }
            Ok(view.data())
        };

        let mut convs = Vec::with_capacity(CONVS.len());
        for conv in CONVS {
            let (name, cin, cout) = (conv.name, conv.in_channels, conv.out_channels);
            let shape = [cout, 3, 3, cin];
            let weights = if file.names().contains(&format!("{name}.weight").as_str()) {
                f32s(tensor(&format!("{name}.weight"), Dtype::F32, &shape)?)
            } else {
                let table = f32s(tensor(&format!("{name}.weight_table"), Dtype::F32, &[256])?);
                let q = tensor(&format!("{name}.weight_q"), Dtype::U8, &shape)?;
                q.iter().map(|&i| table[i as usize]).collect()
            };
            let bias = f32s(tensor(&format!("{name}.bias"), Dtype::F32, &[cout])?);
            if let Some(i) = weights.iter().chain(&bias).position(|v| !v.is_finite()) {
                return Err(fail(format!("{name} holds a non-finite value (element {i})")));
            }
            convs.push(ConvWeights { name, in_channels: cin, out_channels: cout, weights, bias });
        }
        Ok(Vgg19Weights { convs })
    }
}
