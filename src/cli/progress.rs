//! The progress line of `run` and `ingest` on a terminal: one line on
//! standard error, redrawn in place (like curl or cargo) at most ten times
//! a second, cleared before a result is printed and when the command ends.
//! Not drawn when standard error is not a terminal, or with `--quiet`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::progress::{self, Tracker};

use super::output;

/// How often the line is redrawn.
const REDRAW: Duration = Duration::from_millis(100);
/// A file done sooner than this never shows a line: no flicker for small files.
const SHOW_AFTER: Duration = Duration::from_millis(300);

/// The line while it is drawn; dropping it stops the drawing and clears it.
pub struct ProgressLine {
    shared: Arc<Shared>,
    drawer: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    tracker: Arc<Tracker>,
    stop: AtomicBool,
    color: bool,
    /// Held while the line is written or cleared, so a result printed on
    /// standard output never lands in the middle of it.
    drawn: Mutex<Drawn>,
}

#[derive(Default)]
struct Drawn {
    /// What the terminal shows now, if anything.
    text: Option<String>,
}

impl ProgressLine {
    /// Starts the line when standard error is a terminal and `quiet` is
    /// off; `None` otherwise.
    pub fn start(quiet: bool, color: super::ColorChoice) -> Option<ProgressLine> {
        let stderr = std::io::stderr();
        if quiet || !std::io::IsTerminal::is_terminal(&stderr) {
            return None;
        }
        let tracker = Arc::new(Tracker::default());
        progress::install(tracker.clone());
        let shared = Arc::new(Shared {
            tracker,
            stop: AtomicBool::new(false),
            color: color.enabled(true),
            drawn: Mutex::new(Drawn::default()),
        });
        let drawing = shared.clone();
        let drawer = std::thread::Builder::new()
            .name("progress-line".into())
            .spawn(move || {
                while !drawing.stop.load(Ordering::Relaxed) {
                    drawing.redraw();
                    std::thread::sleep(REDRAW);
                }
            })
            .ok()?;
        Some(ProgressLine {
            shared,
            drawer: Some(drawer),
        })
    }

    /// Clears the line, so what comes next starts at the left margin. The
    /// file in flight, if any, draws it again at the next redraw.
    pub fn clear(&self) {
        self.shared.clear();
    }
}

impl Shared {
    fn redraw(&self) {
        let mut drawn = self.drawn.lock().unwrap_or_else(|e| e.into_inner());
        // Sampled under the lock: a file reported done before a result is
        // printed is never drawn again after it.
        let text = match self.tracker.snapshot() {
            Some(now) if now.elapsed >= SHOW_AFTER => Some(self.line(&now)),
            _ => None,
        };
        if text == drawn.text {
            return;
        }
        let mut stderr = std::io::stderr().lock();
        let _ = match &text {
            Some(line) => write!(stderr, "\r{line}\x1b[K"),
            None => write!(stderr, "\r\x1b[K"),
        };
        let _ = stderr.flush();
        drawn.text = text;
    }

    fn clear(&self) {
        let mut drawn = self.drawn.lock().unwrap_or_else(|e| e.into_inner());
        if drawn.text.take().is_some() {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[K");
            let _ = stderr.flush();
        }
    }

    /// "accounts_20261102.csv  parsing: 45.2 MB of 117.0 MB (38%), ...",
    /// cut to the terminal's width so it never wraps (a wrapped line could
    /// not be redrawn in place).
    fn line(&self, now: &progress::Snapshot) -> String {
        let name = output::term(&now.file);
        let summary = now.summary();
        let width = terminal_width().unwrap_or(80).saturating_sub(1);
        let plain = format!("{name}  {summary}");
        let cut: String = plain.chars().take(width).collect();
        if !self.color {
            return cut;
        }
        // The stage in bold, when the whole line fits and color is on.
        match cut.len() == plain.len() {
            true => {
                let (stage, rest) = summary.split_once(':').unwrap_or((&summary, ""));
                format!("{name}  \x1b[1m{stage}\x1b[0m:{rest}")
            }
            false => cut,
        }
    }
}

/// Columns of the terminal standard error writes to.
fn terminal_width() -> Option<usize> {
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills a winsize; `size` is a valid out-pointer.
    let r = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) };
    (r == 0 && size.ws_col > 0).then_some(size.ws_col as usize)
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(drawer) = self.drawer.take() {
            let _ = drawer.join();
        }
        self.shared.clear();
    }
}
