//! Logging: `tracing` to stderr, plain or JSON.
//!
//! A line is formatted on the thread that logs it and appended to a buffer in
//! memory; a thread of its own writes the buffer to stderr every
//! [`FLUSH_INTERVAL`], or sooner once [`FLUSH_AT`] bytes wait. A review's line
//! costs its formatting and a copy, not a `write(2)` (nor a wake-up of another
//! thread) on the admission's path. At most [`BUFFERED_BYTES`] wait; past that
//! (stderr not read) lines are dropped, counted and said in a `log lines
//! dropped` warning, never waited for. [`Logs`] is held until `serve` returns:
//! dropping it writes out every line logged before.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use super::LogFormat;

/// Bytes of log lines held for stderr at most (some 20,000 review lines).
pub const BUFFERED_BYTES: usize = 8 << 20;

/// How long a line waits for stderr at most, when stderr keeps up.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Bytes waiting that make the writer thread write at once.
pub const FLUSH_AT: usize = 256 << 10;

/// How often dropped lines are looked for and reported while serving.
pub(super) const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The writer thread was asked to write now.
    woken: bool,
    /// [`Logs`] was dropped: the writer thread writes what is left and stops.
    closed: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    dropped: AtomicUsize,
    limit: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where `serve`'s subscriber writes: the buffer the writer thread empties.
#[derive(Clone)]
pub struct LogWriter(Arc<Shared>);

impl Write for &LogWriter {
    /// One call per line (the subscriber writes a formatted line at once): the
    /// line is taken whole or, when the buffer is full, dropped and counted.
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let shared = &*self.0;
        let mut p = shared.lock();
        if p.closed || p.bytes.len() + line.len() > shared.limit {
            drop(p);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(line.len());
        }
        p.bytes.extend_from_slice(line);
        if p.bytes.len() >= FLUSH_AT && !p.woken {
            p.woken = true;
            drop(p);
            shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = &'a LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

/// The writer thread of the log: writes out what is buffered when dropped,
/// and counts the lines a full buffer dropped.
pub struct Logs {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    reported: AtomicUsize,
}

impl Logs {
    /// Logs a `log lines dropped` warning with how many were dropped since the
    /// last call (and in all) when there are any; returns that number.
    pub fn report_dropped(&self) -> usize {
        let total = self.shared.dropped.load(Ordering::Relaxed);
        let before = self.reported.swap(total, Ordering::Relaxed);
        let new = total.saturating_sub(before);
        if new > 0 {
            tracing::warn!(
                dropped = new,
                dropped_total = total,
                buffered_bytes = self.shared.limit,
                "log lines dropped: stderr was not read fast enough"
            );
        }
        new
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A writer for [`subscriber`] whose lines a thread of its own writes to
/// `out`; at most `limit` bytes wait, more lines are dropped and counted by
/// the returned [`Logs`].
pub fn buffered<W: Write + Send + 'static>(out: W, limit: usize) -> (LogWriter, Logs) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        wake: Condvar::new(),
        dropped: AtomicUsize::new(0),
        limit,
    });
    let for_thread = shared.clone();
    let thread = std::thread::Builder::new()
        .name("runner-fence-log".into())
        .spawn(move || write_out(&for_thread, out))
        .ok();
    if thread.is_none() {
        // No thread to write them: every line would only be counted.
        shared.lock().closed = true;
    }
    let logs = Logs {
        shared: shared.clone(),
        thread,
        reported: AtomicUsize::new(0),
    };
    (LogWriter(shared), logs)
}

/// The writer thread: takes what is buffered (swapping in an empty buffer, so
/// loggers wait only for that) and writes it, until closed and empty.
fn write_out<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        let closed = {
            let mut p = shared.lock();
            if !p.closed && !p.woken {
                p = shared
                    .wake
                    .wait_timeout(p, FLUSH_INTERVAL)
                    .map(|(p, _)| p)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            std::mem::swap(&mut p.bytes, &mut batch);
            p.woken = false;
            p.closed
        };
        if !batch.is_empty() && out.write_all(&batch).and_then(|()| out.flush()).is_err() {
            let lost = batch.iter().filter(|&&b| b == b'\n').count();
            shared.dropped.fetch_add(lost, Ordering::Relaxed);
        }
        batch.clear();
        batch.shrink_to(FLUSH_AT * 4);
        if closed {
            return;
        }
    }
}

/// Sets up `tracing` in the chosen format (RUST_LOG filters, default info);
/// plain lines are coloured only when stderr is a terminal, never in a file
/// or a container log. Keep the returned [`Logs`] until exit.
pub(super) fn init_logging(format: LogFormat) -> Logs {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let (writer, logs) = buffered(std::io::stderr(), BUFFERED_BYTES);
    let _ = tracing::subscriber::set_global_default(subscriber(format, filter, ansi, writer));
    logs
}

/// The subscriber `serve` logs through, writing to `writer` (tests capture it).
/// JSON lines carry the event's fields at the top level next to `timestamp`,
/// `level`, `target` and the one `message`.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
        LogFormat::Plain => Box::new(builder.with_ansi(ansi).finish()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// What the writer thread wrote; `open` false makes it wait (stderr not
    /// read), `waiting` says it does; `fail` makes every write fail.
    #[derive(Clone, Default)]
    struct Sink {
        text: Arc<Mutex<Vec<u8>>>,
        gate: Arc<(Mutex<bool>, Condvar)>,
        waiting: Arc<std::sync::atomic::AtomicBool>,
        fail: bool,
    }

    impl Sink {
        fn open() -> Self {
            let s = Sink::default();
            s.set_open(true);
            s
        }
        fn set_open(&self, open: bool) {
            *self.gate.0.lock().unwrap_or_else(|e| e.into_inner()) = open;
            self.gate.1.notify_all();
        }
        fn lines(&self) -> Vec<String> {
            let v = self.text.lock().unwrap_or_else(|e| e.into_inner());
            String::from_utf8_lossy(&v)
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.fail {
                return Err(std::io::Error::other("stderr is gone"));
            }
            let (lock, cv) = &*self.gate;
            let mut open = lock.lock().unwrap_or_else(|e| e.into_inner());
            while !*open {
                self.waiting.store(true, Ordering::SeqCst);
                open = cv.wait(open).unwrap_or_else(|e| e.into_inner());
            }
            drop(open);
            self.text
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn json_subscriber(writer: LogWriter) -> Box<dyn tracing::Subscriber + Send + Sync> {
        subscriber(LogFormat::Json, EnvFilter::new("info"), false, writer)
    }

    /// Waits (10 s at most) for `done`.
    fn until(mut done: impl FnMut() -> bool) -> bool {
        let since = Instant::now();
        while !done() {
            if since.elapsed() > Duration::from_secs(10) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    #[test]
    fn a_line_reaches_stderr_without_more_lines_or_a_shutdown() {
        let sink = Sink::open();
        let (writer, _logs) = buffered(sink.clone(), BUFFERED_BYTES);
        let since = Instant::now();
        tracing::subscriber::with_default(json_subscriber(writer), || {
            tracing::info!(uid = "a", "review");
        });
        assert!(until(|| sink.lines().len() == 1), "{:?}", sink.lines());
        // Within the flush interval (and the scheduling of a loaded machine).
        assert!(
            since.elapsed() < FLUSH_INTERVAL * 20,
            "{:?}",
            since.elapsed()
        );
        assert!(
            sink.lines()[0].contains("\"uid\":\"a\""),
            "{:?}",
            sink.lines()
        );
    }

    #[test]
    fn every_line_logged_is_written_when_the_logs_are_dropped() {
        let sink = Sink::open();
        let (writer, logs) = buffered(sink.clone(), BUFFERED_BYTES);
        tracing::subscriber::with_default(json_subscriber(writer), || {
            // More than FLUSH_AT: written while logging, the rest on drop.
            for i in 0..5_000 {
                tracing::info!(i, "review");
            }
        });
        drop(logs);
        let lines = sink.lines();
        assert_eq!(lines.len(), 5_000, "lines written: {}", lines.len());
        // In order, each one whole.
        for (i, line) in lines.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            assert_eq!(v["i"], i, "line {i}: {line}");
        }
    }

    #[test]
    fn a_full_buffer_drops_lines_counts_them_and_says_how_many() {
        let sink = Sink::default();
        // Room for a few lines of ~100 bytes.
        let (writer, logs) = buffered(sink.clone(), 400);
        let sent = 50;
        let dropped = tracing::subscriber::with_default(json_subscriber(writer), || {
            // The first line reaches the writer thread, which then waits on stderr...
            tracing::info!(i = 0, "review");
            assert!(
                until(|| sink.waiting.load(Ordering::SeqCst)),
                "the writer thread never wrote"
            );
            // ...so a few of the next 49 are held and the rest dropped.
            for i in 1..sent {
                tracing::info!(i, "review");
            }
            // stderr is read again: once the held lines are out, the warning has room.
            sink.set_open(true);
            assert!(until(|| logs.shared.lock().bytes.is_empty()));
            let n = logs.report_dropped();
            // Nothing new since: no second warning.
            assert_eq!(logs.report_dropped(), 0);
            n
        });
        drop(logs);
        let lines = sink.lines();
        let reviews = lines.iter().filter(|l| l.contains("\"review\"")).count();
        assert!(reviews > 1 && reviews < 6, "{lines:#?}");
        assert_eq!(reviews + dropped, sent, "{lines:#?}");
        let warning: Vec<serde_json::Value> = lines
            .iter()
            .filter(|l| l.contains("log lines dropped"))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert_eq!(warning.len(), 1, "{lines:#?}");
        assert_eq!(warning[0]["level"], "WARN");
        assert_eq!(warning[0]["dropped"], dropped);
        assert_eq!(warning[0]["dropped_total"], dropped);
    }

    #[test]
    fn lines_stderr_refused_are_counted_as_dropped() {
        let sink = Sink {
            fail: true,
            ..Sink::open()
        };
        let (writer, logs) = buffered(sink, BUFFERED_BYTES);
        tracing::subscriber::with_default(json_subscriber(writer), || {
            for i in 0..3 {
                tracing::info!(i, "review");
            }
        });
        let shared = logs.shared.clone();
        drop(logs);
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 3);
    }
}
