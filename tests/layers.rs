//! The library's layers point one way: each module of `src/` names (`crate::x`) only modules of
//! the layers below its own. Needs no GPU; reads the sources.
//!
//! From the top: render (and the commands beside it, `check` and `bench`), the optimisers, the
//! network (tape, plan, engine), the kernel registry (`shaders`), the kernels (`ops`), the GPU
//! layer beside the image helpers (resizing, colour, decoding and writing files), and at the
//! bottom the error type, the float trait and the seeded generator. The binary (`main.rs`, `cli/`) sits above them all
//! and reaches the library as `nst::`.

use std::collections::BTreeMap;
use std::path::Path;

/// (module, layer): a higher layer may name a lower one, never the reverse.
const LAYERS: &[(&str, u32)] = &[
    ("render", 6),
    ("check", 6),
    ("bench", 6),
    ("optim", 5),
    ("net", 4),
    ("shaders", 3),
    ("ops", 2),
    ("gpu", 1),
    ("resample", 1),
    ("color", 1),
    ("image_io", 1),
    ("error", 0),
    ("real", 0),
    ("rng", 0),
];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|&(_, l)| l)
}

/// The top module of a file under `src/`: `net` for `src/net/plan.rs`, `color` for `src/color.rs`.
fn module_of(relative: &Path) -> String {
    let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.strip_suffix(".rs").unwrap_or(&first).to_string()
}

/// Every `crate::name` a source names outside comments, with its line.
fn named_modules(source: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                out.push((n + 1, name));
            }
            rest = after;
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_of_the_library_names_a_module_of_its_own_layer_or_above() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut edges: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let module = module_of(relative);
        if matches!(module.as_str(), "lib" | "main" | "cli") {
            continue;
        }
        let own =
            layer(&module).unwrap_or_else(|| panic!("src/{} is in no layer; add it to LAYERS", relative.display()));
        let source = std::fs::read_to_string(file).unwrap();
        for (line, named) in named_modules(&source) {
            if named == module {
                continue;
            }
            let Some(theirs) = layer(&named) else {
                violations
                    .push(format!("src/{}:{line} names crate::{named}, which is in no layer", relative.display()));
                continue;
            };
            edges.entry(module.clone()).or_default().insert(named.clone());
            if theirs >= own {
                violations.push(format!(
                    "src/{}:{line}: {module} (layer {own}) names crate::{named} (layer {theirs})",
                    relative.display()
                ));
            }
        }
    }
    for (module, named) in &edges {
        println!("{module} -> {}", named.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    assert!(violations.is_empty(), "imports that point up or sideways:\n{}", violations.join("\n"));
}

#[test]
fn the_binary_reaches_the_library_only_through_its_public_api() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![root.join("main.rs")];
    sources(&root.join("cli"), &mut files);
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        let named = named_modules(&source);
        assert!(named.is_empty(), "{} names crate:: modules: {named:?}", file.display());
    }
}
