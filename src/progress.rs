//! Progress bars for long stages (epochs, batches, rows).
//!
//! One [`Progress`] per run wraps an `indicatif::MultiProgress`, so that
//! stages running in parallel each get their own line. Bars draw only on a
//! terminal; in CI or when piped they stay silent and the stage's `tracing`
//! lines carry the information instead.
//!
//! A stage running in a worker process (see [`crate::worker`]) gets a
//! [`Progress`] that draws nothing and instead writes each bar's changes as
//! JSON lines to its stdout; the parent turns them back into real bars. The
//! stage code is the same either way: it only sees [`Bar`].

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::worker::WorkerEvent;

/// `println!` for the commands' own output, except that a closed stdout
/// (`seqpipe run … | head -1`) drops the line instead of panicking: the
/// command finishes its work — a run is not abandoned half-way because its
/// reader went away — and exits as it would have.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::progress::write_line(false, format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::progress::write_line(false, format_args!($($arg)*))
    };
}

/// `eprintln!` that a closed stderr does not turn into a panic (see [`outln!`]).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::progress::write_line(true, format_args!($($arg)*))
    };
}

/// Writes one line to stdout or stderr, ignoring a failed write (a closed
/// pipe); what [`outln!`] and [`errln!`] call.
pub fn write_line(stderr: bool, line: fmt::Arguments<'_>) {
    let _ = if stderr {
        writeln!(std::io::stderr().lock(), "{line}")
    } else {
        writeln!(std::io::stdout().lock(), "{line}")
    };
}

/// The run's progress display.
#[derive(Clone)]
pub struct Progress {
    sink: Sink,
}

#[derive(Clone)]
enum Sink {
    Terminal(MultiProgress),
    /// Worker mode: events go to the parent over this writer.
    Events(Arc<EventWriter>),
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Progress {
    /// Draws on stderr when it is a terminal, nowhere otherwise.
    pub fn new() -> Progress {
        Progress::terminal(ProgressDrawTarget::stderr())
    }

    /// A progress display that never draws (tests, `--quiet`).
    pub fn hidden() -> Progress {
        Progress::terminal(ProgressDrawTarget::hidden())
    }

    fn terminal(target: ProgressDrawTarget) -> Progress {
        Progress {
            sink: Sink::Terminal(MultiProgress::with_draw_target(target)),
        }
    }

    /// Worker mode: bars and lines become [`WorkerEvent`]s on `out`.
    pub fn events(out: Box<dyn Write + Send>) -> Progress {
        Progress {
            sink: Sink::Events(Arc::new(EventWriter {
                out: Mutex::new(out),
                next_id: AtomicU64::new(0),
            })),
        }
    }

    /// A bar of `len` steps labelled `stage: what`.
    pub fn bar(&self, stage: &str, what: &str, len: u64) -> Bar {
        match &self.sink {
            Sink::Terminal(multi) => Bar::Local(local_bar(multi, stage, what, len)),
            Sink::Events(events) => {
                let id = events.next_id.fetch_add(1, Ordering::Relaxed);
                events.send(&WorkerEvent::Bar {
                    id,
                    what: what.to_string(),
                    len,
                });
                Bar::Remote(RemoteBar {
                    id,
                    events: events.clone(),
                    state: Mutex::new(RemoteState {
                        pos: 0,
                        message: String::new(),
                        sent: None,
                    }),
                })
            }
        }
    }

    /// Worker mode: sends `event` to the parent; elsewhere does nothing.
    pub(crate) fn emit(&self, event: &WorkerEvent) {
        if let Sink::Events(events) = &self.sink {
            events.send(event);
        }
    }

    /// Prints a line above the bars without tearing them.
    pub fn println(&self, line: &str) {
        match &self.sink {
            Sink::Terminal(multi) if !multi.is_hidden() => {
                let _ = multi.println(line);
            }
            Sink::Terminal(_) => crate::errln!("{line}"),
            Sink::Events(events) => events.send(&WorkerEvent::Line {
                line: line.to_string(),
            }),
        }
    }
}

fn local_bar(multi: &MultiProgress, stage: &str, what: &str, len: u64) -> ProgressBar {
    let bar = multi.add(ProgressBar::new(len));
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

/// One progress bar, drawn here or in the parent of a worker process.
pub enum Bar {
    Local(ProgressBar),
    Remote(RemoteBar),
}

impl Bar {
    pub fn inc(&self, delta: u64) {
        match self {
            Bar::Local(b) => b.inc(delta),
            Bar::Remote(r) => r.update(|s| s.pos += delta, false),
        }
    }

    pub fn set_position(&self, pos: u64) {
        match self {
            Bar::Local(b) => b.set_position(pos),
            Bar::Remote(r) => r.update(|s| s.pos = pos, false),
        }
    }

    pub fn set_message(&self, message: impl Into<String>) {
        let message = message.into();
        match self {
            Bar::Local(b) => b.set_message(message),
            Bar::Remote(r) => r.update(|s| s.message = message, false),
        }
    }

    pub fn finish_and_clear(&self) {
        match self {
            Bar::Local(b) => b.finish_and_clear(),
            Bar::Remote(r) => {
                r.update(|_| {}, true);
                r.events.send(&WorkerEvent::Finish { id: r.id });
            }
        }
    }
}

/// The worker side of a bar: sends its position at most every
/// [`REMOTE_THROTTLE`], so a per-batch `inc` does not flood the pipe.
pub struct RemoteBar {
    id: u64,
    events: Arc<EventWriter>,
    state: Mutex<RemoteState>,
}

struct RemoteState {
    pos: u64,
    message: String,
    sent: Option<Instant>,
}

const REMOTE_THROTTLE: Duration = Duration::from_millis(100);

impl RemoteBar {
    fn update(&self, change: impl FnOnce(&mut RemoteState), force: bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut s);
        let due = s.sent.is_none_or(|t| t.elapsed() >= REMOTE_THROTTLE);
        if force || due {
            s.sent = Some(Instant::now());
            self.events.send(&WorkerEvent::Position {
                id: self.id,
                pos: s.pos,
                message: s.message.clone(),
            });
        }
    }
}

/// A worker's stdout, shared by its bars.
struct EventWriter {
    out: Mutex<Box<dyn Write + Send>>,
    next_id: AtomicU64,
}

impl EventWriter {
    fn send(&self, event: &WorkerEvent) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // A parent that went away cannot be told anything; the stage goes on.
        let _ = writeln!(out, "{}", event.to_line());
        let _ = out.flush();
    }
}
