//! A progress line on stderr while an ingest runs, when stderr is a terminal.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use cellar_store::Progress;
use indicatif::{ProgressBar, ProgressStyle};

use crate::output::human_bytes;

pub struct IngestBar {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl IngestBar {
    pub fn start(progress: Arc<Progress>) -> IngestBar {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                        .expect("valid template"),
                );
                let start = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let read = progress.read.load(Ordering::Relaxed);
                    let rate = read as f64 / start.elapsed().as_secs_f64().max(0.001);
                    bar.set_message(format!(
                        "{} read, {}/s; new {}, already stored {}",
                        human_bytes(read),
                        human_bytes(rate as u64),
                        human_bytes(progress.new_bytes.load(Ordering::Relaxed)),
                        human_bytes(progress.known_bytes.load(Ordering::Relaxed)),
                    ));
                    bar.tick();
                    std::thread::sleep(Duration::from_millis(100));
                }
                bar.finish_and_clear();
            })
        });
        IngestBar { stop, thread }
    }
}

impl Drop for IngestBar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
