//! The binary's subcommands that need more than a few lines, and the command line's wording of the
//! library's errors (its flags, what to do next).

pub mod progress;
pub mod render;

/// The flag that sets a render option, given its field of `RenderOptions` (`style_scale`,
/// `adam.lr`, `lbfgs.first_step`).
pub fn flag(option: &str) -> String {
    match option {
        "adam.lr" => "--lr".to_string(),
        option => format!("--{}", option.replace(['_', '.'], "-")),
    }
}

/// A library error as the command line says it: options named by their flags, and for a weight
/// file that cannot be read, the way back to the built-in weights.
pub fn message(e: &nst::Error) -> String {
    match e {
        nst::Error::Option { option, message } => {
            let flags: Vec<String> = option.split('/').map(flag).collect();
            format!("{}: {message}", flags.join("/"))
        }
        nst::Error::Weights { .. } if e.to_string().contains("cannot read it") => {
            format!("{e}, or leave out --weights for the built-in weights")
        }
        e => e.to_string(),
    }
}
