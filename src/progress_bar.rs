//! The command line's progress bar: what the engine's work under way says of itself (its board),
//! read ten times a second and drawn on stderr — only when stdout and stderr are a terminal and
//! no `--json` was asked for. A new bar starts whenever the work moves on (the next volume, the
//! restore after its safety backup); it is cleared at the end, before the summary lines.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::oneshot;
use vardo_actors::engine::Engine;
use vardo_actors::progress::Snapshot;

/// The bar on the screen now, which log lines are written around (see [`LogWriter`]).
static ON_SCREEN: std::sync::Mutex<Option<ProgressBar>> = std::sync::Mutex::new(None);

fn on_screen(bar: Option<&ProgressBar>) {
    *ON_SCREEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = bar.cloned();
}

/// stderr for the log: a line logged while a bar is drawn is written above it (the bar is
/// hidden, the line written, the bar drawn again), never into it.
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = ON_SCREEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Whether a bar is drawn: a person at a terminal, not a script.
fn wanted(json: bool) -> bool {
    !json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

/// A bar following the engine's work until [`Shown::clear`].
struct Shown {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Starts following the engine's board, if `wanted`.
fn show(engine: &Engine, wanted: bool) -> Shown {
    if !wanted {
        return Shown {
            stop: None,
            task: None,
        };
    }
    let (stop, mut stopped) = oneshot::channel();
    let engine = engine.clone();
    let task = actix::spawn(async move {
        let mut drawn: Option<(String, ProgressBar)> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick.tick() => {}
            }
            let Some(now) = engine.board().current() else {
                continue;
            };
            match &drawn {
                Some((label, bar)) if *label == now.label => update(bar, &now),
                _ => {
                    if let Some((_, bar)) = drawn.take() {
                        bar.finish_and_clear();
                    }
                    let bar = bar_for(&now);
                    update(&bar, &now);
                    on_screen(Some(&bar));
                    drawn = Some((now.label.clone(), bar));
                }
            }
        }
        on_screen(None);
        if let Some((_, bar)) = drawn {
            bar.finish_and_clear();
        }
    });
    Shown {
        stop: Some(stop),
        task: Some(task),
    }
}

impl Shown {
    /// Clears the bar (the command prints its summary next).
    async fn clear(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Awaits `work` with a bar following it when [`wanted`] (not `json`), cleared once it ends.
pub async fn around<T>(
    engine: &Engine,
    json: bool,
    work: impl std::future::Future<Output = T>,
) -> T {
    let bar = show(engine, wanted(json));
    let done = work.await;
    bar.clear().await;
    done
}

/// A bar with the size (and so an ETA) where the source's size is known, a spinner where not.
fn bar_for(now: &Snapshot) -> ProgressBar {
    let (bar, template) = match now.total {
        Some(total) => (
            ProgressBar::new(total),
            "{msg} [{bar:24}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} \
             {elapsed} ETA {eta}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} {msg} {binary_bytes} {binary_bytes_per_sec} {elapsed}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn update(bar: &ProgressBar, now: &Snapshot) {
    let stage = now.stage.map(|s| format!(" ({s})")).unwrap_or_default();
    bar.set_message(format!("{}{stage}", now.label));
    bar.set_position(now.bytes);
    bar.tick();
}
