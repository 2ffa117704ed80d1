//! Progress of a render on stderr: one redrawn line on a terminal, plain lines (at most one a
//! second) otherwise, nothing with `--quiet`.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use nst::net::LossKind;
use nst::render::Losses;

pub struct Progress {
    total: u32,
    /// The relative cost of each iteration (its scale's pixels), for the time left.
    cost: Vec<f64>,
    start: Instant,
    last_line: Option<Instant>,
    terminal: bool,
    quiet: bool,
}

fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

impl Progress {
    /// Progress over iterations of different costs (a coarse-to-fine render: each iteration's
    /// pixels), so that the time left counts the larger scales' iterations as the longer ones.
    pub fn with_costs(cost: Vec<f64>, quiet: bool) -> Progress {
        Progress {
            total: cost.len() as u32,
            cost,
            start: Instant::now(),
            last_line: None,
            terminal: std::io::stderr().is_terminal(),
            quiet,
        }
    }

    /// Seconds since the first iteration started.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Reports iteration `done` (1-based) with its losses.
    pub fn update(&mut self, done: u32, losses: &Losses) {
        if self.quiet {
            return;
        }
        let elapsed = self.elapsed();
        let rate = done as f64 / elapsed.max(1e-9);
        let (spent, left) = self.cost.split_at((done as usize).min(self.cost.len()));
        let eta = elapsed * left.iter().sum::<f64>() / spent.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        let speed = if rate >= 1.0 { format!("{rate:.2} it/s") } else { format!("{:.2} s/it", 1.0 / rate) };
        let each: Vec<String> = LossKind::ALL.iter().map(|&k| format!("{} {:.3e}", k.name(), losses.of(k))).collect();
        let terms = format!("loss {:.4e} ({})", losses.total(), each.join(", "));
        let width = self.total.to_string().len();
        if self.terminal {
            // Short enough for an 80-column terminal: the share of each term instead of its value.
            let filled = (12 * done / self.total.max(1)) as usize;
            let bar = format!("{}{}", "#".repeat(filled), "-".repeat(12 - filled));
            let share = |k: LossKind| 100.0 * losses.of(k) / losses.total().max(f64::MIN_POSITIVE);
            let shares: Vec<String> =
                LossKind::ALL.iter().map(|&k| format!("{}{:.0}%", k.abbreviation(), share(k))).collect();
            eprint!(
                "\r\x1b[2K{done:>width$}/{} [{bar}] {speed} ETA {} loss {:.3e} {}",
                self.total,
                duration(eta),
                losses.total(),
                shares.join(" "),
            );
            if done == self.total {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        } else {
            let due = self.last_line.is_none_or(|t| t.elapsed().as_secs_f64() >= 1.0);
            if due || done == self.total || done == 1 {
                eprintln!(
                    "iteration {done:>width$}/{} {speed} elapsed {} ETA {} {terms}",
                    self.total,
                    duration(elapsed),
                    duration(eta)
                );
                self.last_line = Some(Instant::now());
            }
        }
    }

    /// Ends a redrawn line before other output.
    pub fn finish_line(&self) {
        if self.terminal && !self.quiet {
            eprintln!();
        }
    }

    pub fn say(&self, message: &str) {
        if !self.quiet {
            eprintln!("{message}");
        }
    }
}
