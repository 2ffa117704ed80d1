//! The binary's adapter selection, through the real executable.

use std::process::Command;

fn nst(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nst"))
        .args(args)
        .env_remove("NST_ADAPTER")
        .env_remove("NST_BACKEND")
        .output()
        .expect("nst runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn info_lists_the_adapters_and_compiles_every_kernel_on_the_chosen_one() {
    let (ok, stdout, stderr) = nst(&["info"]);
    assert!(ok, "nst info failed: {stderr}");
    assert!(stdout.contains("adapters found"), "{stdout}");
    assert!(stdout.contains("chosen: "), "{stdout}");
    assert!(stdout.contains(&format!("kernels: {} compiled", nst::ops::ENTRY_POINTS.len())), "{stdout}");
}

#[test]
fn an_adapter_name_that_matches_nothing_fails_with_the_adapters_found() {
    let (ok, _, stderr) = nst(&["info", "--adapter", "no-such-adapter-anywhere"]);
    assert!(!ok);
    assert!(stderr.contains("no GPU adapter found matching \"no-such-adapter-anywhere\""), "{stderr}");
    assert!(stderr.contains("adapters found:"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_unknown_backend_is_refused_with_the_choices() {
    let (ok, _, stderr) = nst(&["info", "--backend", "glide"]);
    assert!(!ok);
    assert!(stderr.contains("unknown backend \"glide\": use vulkan, metal, dx12 or gl"), "{stderr}");
}

#[test]
fn the_vulkan_backend_can_be_chosen_by_name() {
    let (ok, stdout, stderr) = nst(&["info", "--backend", "vulkan"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("Vulkan"), "{stdout}");
}

#[test]
fn info_reports_the_memory_a_size_needs_and_refuses_a_bad_size() {
    let (ok, stdout, stderr) = nst(&["info", "--size", "256"]);
    assert!(ok, "{stderr}");
    // The number itself is checked against the engine's allocation in tests/network.rs.
    let line = stdout.lines().find(|l| l.starts_with("memory for 256x256 with the default layers: ")).expect(&stdout);
    let mib: f64 = line.split(": ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(mib > 100.0 && mib < 1000.0, "{line}");
    let (ok, _, stderr) = nst(&["info", "--size", "12xq"]);
    assert!(!ok);
    assert!(stderr.contains("invalid size \"12xq\""), "{stderr}");
}

#[test]
fn bench_refuses_kernel_sides_too_small_for_the_deepest_shapes_and_says_what_to_use() {
    for side in ["0", "4"] {
        let (ok, _, stderr) = nst(&["bench", "--kernel-sides", side, "--sides", "64", "--reps", "1"]);
        assert!(!ok, "--kernel-sides {side} ran");
        assert!(
            stderr.contains(&format!(
                "image of {side}x{side} pixels: the kernel benchmarks run at shapes down to 1/8 of the side; use 8 or more"
            )),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_corrupt_weights_file_is_refused_with_its_path() {
    let path = std::env::temp_dir().join(format!("nst-cli-corrupt-{}.safetensors", std::process::id()));
    std::fs::write(&path, b"definitely not weights").unwrap();
    let (ok, _, stderr) = nst(&["info", "--weights", path.to_str().unwrap()]);
    std::fs::remove_file(&path).ok();
    assert!(!ok);
    assert!(stderr.contains(&format!("weights {}: not a safetensors file", path.display())), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn check_runs_every_kernel_against_its_cpu_twin_and_all_pass() {
    let (ok, stdout, stderr) = nst(&["check"]);
    assert!(ok, "nst check failed:\n{stdout}\n{stderr}");
    let families = [
        "conv3x3.forward",
        "conv3x3.backward_input",
        "relu.forward",
        "relu.backward",
        "maxpool2.forward",
        "maxpool2.backward",
        "avgpool2.forward",
        "avgpool2.backward",
        "gram.forward",
        "gram_blocked.forward",
        "gram.backward",
        "sqdiff.forward",
        "sqdiff.backward",
        "reduce.sum",
        "tv.forward",
        "tv.backward",
        "adam.step",
        "image.to_network",
        "image.from_network",
    ];
    for family in families {
        assert!(stdout.contains(&format!("  {family} ")), "{family} missing from:\n{stdout}");
    }
    assert!(stdout.contains(", 0 failed"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}
