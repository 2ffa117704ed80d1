//! Refactoring guard: seeded 64 px renders (Adam, L-BFGS, two scales with averaging) must give the
//! output files and the per-iteration losses recorded before the architecture changed, byte for
//! byte. The hashes depend on the adapter (its kernels' rounding), so they are recorded per
//! adapter name; the name includes lavapipe's vector width, which changes its subgroup size.
//!
//! On an adapter with no recorded hashes the test still checks that two runs agree, prints the
//! hashes to record, and fails in CI (where the adapter is always lavapipe).

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

const CONTENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/tubingen.jpg");
const STYLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/starry_night.jpg");
const STYLE2: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/shipwreck.jpg");

/// The loss and optimiser options these renders were recorded with, given to every case, so that a
/// change of `nst render`'s defaults does not change them: the raw Gatys terms with the weights of
/// that time, a constant learning rate, and the direct conv (the default became Winograd from 128
/// input channels on 2026-12-03, other rounding by design; tests/winograd.rs and the trajectory
/// test of tests/render.rs hold it).
const RECORDED_WITH: &[&str] =
    &["--loss-scale", "raw", "--style-weight", "1e-5", "--tv-weight", "1e-5", "--lr-decay", "1", "--conv", "direct"];

/// One seeded render: a name and the options after the inputs and `-o`.
struct Case {
    name: &'static str,
    styles: &'static [&'static str],
    options: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "adam-from-content",
        styles: &[STYLE],
        options: &["--size", "64", "--iterations", "10", "--depth", "16"],
    },
    Case {
        name: "adam-noise-two-styles",
        styles: &[STYLE, STYLE2],
        options: &[
            "--size",
            "64",
            "--iterations",
            "10",
            "--init",
            "noise",
            "--seed",
            "3",
            "--style-blend",
            "0.7,0.3",
            "--content-layers",
            "relu3_2,relu4_2",
            "--depth",
            "16",
        ],
    },
    Case {
        name: "lbfgs-noise",
        styles: &[STYLE],
        options: &[
            "--size",
            "64",
            "--iterations",
            "10",
            "--init",
            "noise",
            "--seed",
            "4",
            "--optimizer",
            "lbfgs",
            "--depth",
            "16",
        ],
    },
    Case {
        name: "two-scales-averaged",
        styles: &[STYLE],
        options: &[
            "--size",
            "64",
            "--scales",
            "32,64",
            "--scale-iterations",
            "8,6",
            "--average",
            "0.9",
            "--init",
            "noise",
            "--seed",
            "5",
            "--depth",
            "16",
        ],
    },
    Case {
        name: "lbfgs-two-scales-averaged",
        styles: &[STYLE],
        options: &[
            "--size",
            "64",
            "--scales",
            "32,64",
            "--scale-iterations",
            "6,5",
            "--average",
            "0.8",
            "--optimizer",
            "lbfgs",
            "--seed",
            "6",
            "--depth",
            "16",
        ],
    },
];

/// (adapter, case, SHA-256 of the output file, SHA-256 of the losses of every iteration).
/// Recorded on a 2-core AMD EPYC (AVX-512) with Mesa 22.3.6, before `src/net/plan.rs` existed (the
/// same bytes on an Intel Xeon model 167). The losses, and the L-BFGS cases' images, re-recorded on
/// that Intel machine on 2026-12-06 when the first reduction stage went from 256 to 32 invocations
/// per 1024 elements (`ops::REDUCE_WORKGROUP`): losses and dot products summed in another order, by
/// design; the Adam cases' images, which no loss value reaches, kept their bytes.
const RECORDED: &[(&str, &str, &str, &str)] = &[
    (
        "llvmpipe (LLVM 15.0.6, 256 bits) (Cpu, Vulkan), subgroups of 8+",
        "adam-from-content",
        "226d098310232293b532ec9bfbe880b60f3fb12fecc65ab29448917dd45ecae7",
        "d5098707f5ea8b7d54f039b6b0dbad75ec4d96f2a94a9c83a5932c84a21c89de",
    ),
    (
        "llvmpipe (LLVM 15.0.6, 256 bits) (Cpu, Vulkan), subgroups of 8+",
        "adam-noise-two-styles",
        "732bb747c8d8fc1a0a869c3267e1ee1fa2aba52bf6ee7c88461ac68eb347f773",
        "e84dc8e7e18cf18a43b539cffd017ecb7baa82dffa056482874b24d74f55e417",
    ),
    (
        "llvmpipe (LLVM 15.0.6, 256 bits) (Cpu, Vulkan), subgroups of 8+",
        "lbfgs-noise",
        "ff5c34c93a14c0458c6e78b7860d18c83e17278eb3411707258fd36684ad07c8",
        "e556c401fc9cdafccabde35ba6d5401e8a0d9ca9bc101e8e0a6d9a5df111a995",
    ),
    (
        "llvmpipe (LLVM 15.0.6, 256 bits) (Cpu, Vulkan), subgroups of 8+",
        "two-scales-averaged",
        "cffbb4ec0536fccaea95933d3c650f357ec4b74c4ca979f7567052808499521f",
        "926be1acb9dc533ecc3676b2804bbb283cbbf7682e327a99ad3ead5344796a2b",
    ),
    (
        "llvmpipe (LLVM 15.0.6, 256 bits) (Cpu, Vulkan), subgroups of 8+",
        "lbfgs-two-scales-averaged",
        "7a8f0449ee7d757292ca32464e2755b5b6eb3848b58fb65a7a3a07133763f71a",
        "bedb40c9f977c5c19f59641626a09acf1843c43cd9f7e6549a77aeb2bdbccf79",
    ),
];

struct Run {
    adapter: String,
    image: String,
    losses: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The losses of every log line in a canonical form: keys sorted, seconds left out (they are the
/// one thing that changes from run to run), numbers written as their f64 bits.
fn canonical_losses(log: &str) -> String {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                for k in keys {
                    if prefix.is_empty() && k == "seconds" {
                        continue;
                    }
                    walk(&format!("{prefix}/{k}"), &map[k], out);
                }
            }
            serde_json::Value::Number(n) => out.push(format!("{prefix}={:016x}", n.as_f64().unwrap().to_bits())),
            other => out.push(format!("{prefix}={other}")),
        }
    }
    let mut out = Vec::new();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("log line {line:?}: {e}"));
        walk("", &v, &mut out);
        out.push(String::new());
    }
    out.join("\n")
}

fn render(dir: &Path, case: &Case, tag: &str) -> Run {
    let out: PathBuf = dir.join(format!("{}-{tag}.png", case.name));
    let log: PathBuf = dir.join(format!("{}-{tag}.jsonl", case.name));
    let mut args: Vec<&str> = vec!["render", CONTENT];
    args.extend(case.styles);
    args.extend(["-o", out.to_str().unwrap(), "--log", log.to_str().unwrap()]);
    args.extend(RECORDED_WITH);
    args.extend(case.options);
    let run = Command::new(env!("CARGO_BIN_EXE_nst"))
        .args(&args)
        .env_remove("NST_ADAPTER")
        .env_remove("NST_BACKEND")
        .env_remove("NST_INJECT_NAN_AT")
        .output()
        .expect("nst runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{}: {stderr}", case.name);
    // "nst: 64x48 px, 10 iterations (Adam) on ADAPTER, subgroups of 8+; ..."
    let adapter = stderr
        .lines()
        .find_map(|l| l.strip_prefix("nst: ").and_then(|l| l.split_once(") on ")).map(|(_, rest)| rest))
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no adapter line in {stderr}"))
        .to_string();
    let image = hex(&Sha256::digest(std::fs::read(&out).unwrap()));
    let losses = hex(&Sha256::digest(canonical_losses(&std::fs::read_to_string(&log).unwrap()).as_bytes()));
    Run { adapter, image, losses }
}

#[test]
fn seeded_renders_with_adam_lbfgs_and_averaged_scales_give_the_recorded_bytes() {
    let dir = std::env::temp_dir().join(format!("nst-unchanged-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut unrecorded = Vec::new();
    let mut mismatched = Vec::new();
    for case in CASES {
        let a = render(&dir, case, "a");
        match RECORDED.iter().find(|r| r.0 == a.adapter && r.1 == case.name) {
            Some(&(_, _, image, losses)) => {
                if (image, losses) != (a.image.as_str(), a.losses.as_str()) {
                    mismatched.push(format!(
                        "{}: image {} (recorded {image}), losses {} (recorded {losses})",
                        case.name, a.image, a.losses
                    ));
                }
            }
            None => {
                let b = render(&dir, case, "b");
                assert_eq!((&a.image, &a.losses), (&b.image, &b.losses), "{}: two runs differ", case.name);
                unrecorded.push(format!("    ({:?}, {:?}, {:?}, {:?}),", a.adapter, case.name, a.image, a.losses))
            }
        }
    }
    assert!(mismatched.is_empty(), "behaviour changed:\n{}", mismatched.join("\n"));
    if !unrecorded.is_empty() {
        let table = unrecorded.join("\n");
        let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
        assert!(!in_ci, "no recorded hashes for this adapter in CI; record:\n{table}");
        eprintln!("NOT COMPARED: no recorded hashes for this adapter; two runs agree. Record:\n{table}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
