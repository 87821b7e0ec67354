//! One JSON line per request, written off the request path.
//!
//! Requests hand finished lines to a dedicated writer thread through a bounded channel with
//! `try_send`: a slow disk or a blocked stdout never stalls a request; lines dropped because
//! the writer fell behind are counted in `sira_access_log_dropped_total`. The writer drains
//! the channel in batches (at most every 50 ms), flushing after each. A file target is
//! reopened on SIGHUP (log rotation).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::Duration;

use crate::config::AccessLogTarget;
use crate::metrics::metrics;

mod line;

pub use line::JsonLine;

const QUEUE: usize = 16 * 1024;

enum Message {
    Line(Vec<u8>),
    /// Reopen the file (after rotation) and switch to this target.
    Retarget(AccessLogTarget),
    /// Write out everything queued before this, then answer.
    Flush(SyncSender<()>),
}

/// Handle to the writer thread; cheap to share.
pub struct AccessLog {
    tx: SyncSender<Message>,
}

impl AccessLog {
    pub fn start(target: AccessLogTarget) -> io::Result<AccessLog> {
        let (tx, rx) = sync_channel(QUEUE);
        let sink = Sink::open(&target)?;
        std::thread::Builder::new()
            .name("sira-access-log".into())
            .spawn(move || run(rx, sink))?;
        Ok(AccessLog { tx })
    }

    /// Queues one line (without its newline); never blocks.
    pub fn write(&self, line: Vec<u8>) {
        match self.tx.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                metrics().access_log_dropped.inc()
            }
        }
    }

    /// Waits, at most `within`, until every line queued so far is written out: before the
    /// process exits.
    pub fn flush(&self, within: Duration) {
        let (done, wait) = sync_channel(1);
        // Never blocks: with the queue full (a stalled stdout) the lines are lost anyway.
        if self.tx.try_send(Message::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(within);
        }
    }

    /// Reopens the log (SIGHUP) with a possibly new target. Blocks only if the queue is
    /// full, and runs on the reload path, never on a request.
    pub fn retarget(&self, target: AccessLogTarget) {
        if self.tx.send(Message::Retarget(target)).is_err() {
            tracing::error!("access log writer is gone; access log lines are lost");
        }
    }
}

enum Sink {
    Off,
    Stdout(io::Stdout),
    File(BufWriter<File>),
}

impl Sink {
    fn open(target: &AccessLogTarget) -> io::Result<Sink> {
        Ok(match target {
            AccessLogTarget::Off => Sink::Off,
            AccessLogTarget::Stdout => Sink::Stdout(io::stdout()),
            AccessLogTarget::File(path) => Sink::File(BufWriter::with_capacity(
                64 * 1024,
                OpenOptions::new().create(true).append(true).open(path)?,
            )),
        })
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        match self {
            Sink::Off => Ok(()),
            Sink::Stdout(out) => {
                let mut out = out.lock();
                out.write_all(line)?;
                out.write_all(b"\n")
            }
            Sink::File(file) => {
                file.write_all(line)?;
                file.write_all(b"\n")
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Off => Ok(()),
            Sink::Stdout(out) => out.flush(),
            Sink::File(file) => file.flush(),
        }
    }
}

/// How long the writer sleeps after draining the queue. Requests enqueue lines without
/// waking it while it sleeps, so under load it costs one wake-up per interval instead of a
/// futex wake and two context switches per request.
const DRAIN_EVERY: Duration = Duration::from_millis(50);

fn run(rx: Receiver<Message>, mut sink: Sink) {
    // Block while idle, so a quiet gateway costs nothing; then drain, flush and nap.
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            handle(&mut sink, message);
            next = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => {
                    let _ = sink.flush();
                    return;
                }
            };
        }
        if let Err(e) = sink.flush() {
            tracing::warn!("access log flush failed: {e}");
        }
        std::thread::sleep(DRAIN_EVERY);
    }
    let _ = sink.flush();
}

fn handle(sink: &mut Sink, message: Message) {
    match message {
        Message::Line(line) => {
            if let Err(e) = sink.write_line(&line) {
                tracing::warn!("access log write failed: {e}");
            }
        }
        Message::Flush(done) => {
            if let Err(e) = sink.flush() {
                tracing::warn!("access log flush failed: {e}");
            }
            let _ = done.send(());
        }
        Message::Retarget(target) => {
            let _ = sink.flush();
            match Sink::open(&target) {
                Ok(new_sink) => *sink = new_sink,
                Err(e) => tracing::error!(
                    "cannot reopen access log {target:?}: {e}; keeping the previous one"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn wait_for(path: &std::path::Path, lines: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= lines || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn writes_lines_and_reopens_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::start(AccessLogTarget::File(path.clone())).unwrap();
        log.write(b"{\"n\":1}".to_vec());
        assert_eq!(wait_for(&path, 1), "{\"n\":1}\n");
        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.retarget(AccessLogTarget::File(path.clone()));
        log.write(b"{\"n\":2}".to_vec());
        assert_eq!(wait_for(&path, 1), "{\"n\":2}\n");
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "{\"n\":1}\n");
    }
}
