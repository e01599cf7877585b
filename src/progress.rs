//! Progress bars for long stages (epochs, batches, rows).
//!
//! One [`Progress`] per run wraps an `indicatif::MultiProgress`, so that
//! stages running in parallel each get their own line. Bars draw only on a
//! terminal; in CI or when piped they stay silent and the stage's `tracing`
//! lines carry the information instead.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The run's progress display.
#[derive(Clone)]
pub struct Progress {
    multi: MultiProgress,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Progress {
    /// Draws on stderr when it is a terminal, nowhere otherwise.
    pub fn new() -> Progress {
        Progress {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
        }
    }

    /// A progress display that never draws (tests, `--quiet`).
    pub fn hidden() -> Progress {
        Progress {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
        }
    }

    /// A bar of `len` steps labelled `stage: what`.
    pub fn bar(&self, stage: &str, what: &str, len: u64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(len));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>14.bold} {bar:30.cyan/blue} {pos}/{len} {msg} [{elapsed_precise}<{eta}]",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{stage}: {what}"));
        bar
    }

    /// Prints a line above the bars without tearing them.
    pub fn println(&self, line: &str) {
        if self.multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }
}
