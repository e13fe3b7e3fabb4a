//! The progress bar on stderr: shown for runs longer than about two seconds, and only when
//! stderr is a terminal, so logs and pipes get no control characters.

use std::cell::Cell;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Runs shorter than this finish before a bar would tell anything.
const SHOW_AFTER: Duration = Duration::from_secs(2);

/// The bar's message (a rate) is rebuilt at most this often: the event loop turns thousands
/// of times a second, and formatting on every turn would cost the client CPU it needs.
const UPDATE_EVERY: Duration = Duration::from_millis(250);

/// A progress bar over a timed run, or nothing.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    last_update: Cell<Duration>,
}

impl Progress {
    /// A bar for a run of `duration` named `what`; hidden when the run is short or stderr is
    /// not a terminal.
    pub fn new(what: &str, duration: Duration) -> Progress {
        if duration < SHOW_AFTER || !std::io::stderr().is_terminal() {
            return Progress::hidden();
        }
        let bar = ProgressBar::with_draw_target(
            Some(duration.as_millis() as u64),
            ProgressDrawTarget::stderr_with_hz(4),
        );
        // The template is a constant; if indicatif ever refuses it, a plain bar will do.
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed}/{duration} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(what.to_string());
        Progress {
            bar: Some(bar),
            last_update: Cell::new(Duration::ZERO),
        }
    }

    /// No bar: for the client processes of a `--procs` run, whose parent shows one for all.
    pub fn hidden() -> Progress {
        Progress {
            bar: None,
            last_update: Cell::new(Duration::ZERO),
        }
    }

    /// Moves the bar to `elapsed` and shows `message` (e.g. the current rate).
    pub fn update(&self, elapsed: Duration, message: impl FnOnce() -> String) {
        let Some(bar) = &self.bar else {
            return;
        };
        if elapsed.saturating_sub(self.last_update.get()) < UPDATE_EVERY {
            return;
        }
        self.last_update.set(elapsed);
        bar.set_position(elapsed.as_millis() as u64);
        bar.set_message(message());
    }

    /// Moves the bar to `elapsed` and shows the rate of `count` `things` so far, then the
    /// `problems` counted, e.g. "5000 round trips/s, 0 errors".
    pub fn rate(&self, elapsed: Duration, count: u64, things: &str, problems: (u64, &str)) {
        self.update(elapsed, || {
            let rate = count as f64 / elapsed.as_secs_f64().max(1e-3);
            format!("{rate:.0} {things}/s, {} {}", problems.0, problems.1)
        });
    }

    /// Removes the bar, leaving the terminal as it was.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
