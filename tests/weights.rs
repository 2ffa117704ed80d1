//! The weight loader: the embedded file loads and is what weights/README.md says; damaged or foreign
//! files are refused with a message naming the problem, never a panic; a full-precision file in the
//! same container is accepted.

use nst::net::weights::{sha256_hex, EMBEDDED, EMBEDDED_SHA256};
use nst::net::{vgg, Vgg19Weights};

fn header(bytes: &[u8]) -> (String, &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (String::from_utf8(bytes[8..8 + n].to_vec()).unwrap(), &bytes[8 + n..])
}

fn with_header(text: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(data);
    out
}

/// The embedded file with `from` replaced by `to` in the entry of tensor `name` in its header.
fn edit_entry(name: &str, from: &str, to: &str) -> Vec<u8> {
    let (text, data) = header(EMBEDDED);
    let start = text.find(&format!("\"{name}\":")).unwrap_or_else(|| panic!("{name} in header"));
    let end = start + text[start..].find('}').unwrap();
    let entry = text[start..end].replacen(from, to, 1);
    assert_ne!(entry, text[start..end], "{from} not found in {name}'s entry");
    with_header(&format!("{}{}{}", &text[..start], entry, &text[end..]), data)
}

fn refused(bytes: &[u8], expect: &str) {
    let err = Vgg19Weights::from_bytes(bytes, "test.safetensors")
        .err()
        .unwrap_or_else(|| panic!("accepted; expected {expect:?}"));
    let message = err.to_string();
    assert!(message.contains("test.safetensors"), "{message}");
    assert!(message.contains(expect), "expected {expect:?} in: {message}");
}

#[test]
fn the_embedded_weights_load_and_match_their_recorded_checksum_and_layers() {
    assert_eq!(sha256_hex(EMBEDDED), EMBEDDED_SHA256);
    let w = Vgg19Weights::embedded().unwrap();
    assert_eq!(w.convs.len(), 16);
    for (c, spec) in w.convs.iter().zip(vgg::CONVS) {
        assert_eq!((c.name, c.in_channels, c.out_channels), (spec.name, spec.in_channels, spec.out_channels));
        assert_eq!(c.weights.len(), spec.out_channels * 9 * spec.in_channels);
        assert_eq!(c.bias.len(), spec.out_channels);
    }
    // conv1_1's first biases, as published with the Keras conversion of the authors' weights.
    let b = &w.convs[0].bias;
    assert!((b[0] - 0.730_177_6).abs() < 1e-6 && (b[3] - 0.826_038_6).abs() < 1e-6, "{:?}", &b[..4]);
}

#[test]
fn a_truncated_file_is_refused() {
    refused(&EMBEDDED[..EMBEDDED.len() / 2], "");
    refused(&EMBEDDED[..100], "not a safetensors file");
    refused(&EMBEDDED[..4], "not a safetensors file");
    refused(&[], "not a safetensors file");
}

#[test]
fn random_bytes_are_refused() {
    let mut x = 0x1234_5678_9abc_def0u64;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    refused(&bytes, "not a safetensors file");
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    refused(&huge, "not a safetensors file");
}

#[test]
fn a_tensor_with_the_wrong_shape_is_refused_with_its_name() {
    refused(
        &edit_entry("conv1_1.bias", "\"shape\":[64]", "\"shape\":[8,8]"),
        "tensor conv1_1.bias has shape [8, 8], expected [64]",
    );
}

#[test]
fn a_tensor_with_the_wrong_dtype_is_refused_with_its_name() {
    refused(
        &edit_entry("conv2_1.bias", "\"dtype\":\"F32\"", "\"dtype\":\"I32\""),
        "tensor conv2_1.bias is I32, expected F32",
    );
}

#[test]
fn a_missing_tensor_is_refused_with_its_name() {
    let (text, data) = header(EMBEDDED);
    let renamed = text.replace("\"conv5_4.bias\":", "\"conv5_4.bias_renamed\":");
    refused(&with_header(&renamed, data), "missing tensor conv5_4.bias");
}

#[test]
fn a_damaged_byte_in_the_tensor_data_fails_the_checksum() {
    let mut bytes = EMBEDDED.to_vec();
    let n = bytes.len();
    bytes[n - 1000] ^= 0x40;
    refused(&bytes, "the file is corrupt");
}

#[test]
fn a_foreign_format_or_a_newer_version_is_refused() {
    let (text, data) = header(EMBEDDED);
    refused(
        &with_header(&text.replace("\"format\":\"nst-vgg19\"", "\"format\":\"other\""), data),
        "format is \"other\"",
    );
    refused(&with_header(&text.replace("\"version\":\"1\"", "\"version\":\"2\""), data), "format version \"2\"");
    refused(&with_header(&text.replace("\"data_sha256\"", "\"data_sha\""), data), "no \"data_sha256\" metadata");
}

#[test]
fn a_missing_file_is_refused_with_its_path() {
    let err = Vgg19Weights::from_file(std::path::Path::new("/nonexistent/vgg19.safetensors")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/vgg19.safetensors: cannot read it"), "{err}");
}

#[test]
fn a_full_precision_file_in_the_same_container_is_accepted() {
    let q = Vgg19Weights::embedded().unwrap();
    let mut entries = Vec::new();
    let mut data = Vec::new();
    for c in &q.convs {
        for (suffix, values, shape) in [
            ("weight", &c.weights, format!("[{},3,3,{}]", c.out_channels, c.in_channels)),
            ("bias", &c.bias, format!("[{}]", c.out_channels)),
        ] {
            let start = data.len();
            data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            entries.push(format!(
                "\"{}.{suffix}\":{{\"dtype\":\"F32\",\"shape\":{shape},\"data_offsets\":[{start},{}]}}",
                c.name,
                data.len()
            ));
        }
    }
    let text = format!(
        "{{\"__metadata__\":{{\"format\":\"nst-vgg19\",\"version\":\"1\",\"data_sha256\":\"{}\"}},{}}}",
        sha256_hex(&data),
        entries.join(",")
    );
    let full = Vgg19Weights::from_bytes(&with_header(&text, &data), "full.safetensors").unwrap();
    for (a, b) in full.convs.iter().zip(&q.convs) {
        assert_eq!(a.weights, b.weights, "{}", a.name);
        assert_eq!(a.bias, b.bias, "{}", a.name);
    }
}
