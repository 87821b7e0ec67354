//! One JSON line per request, written off the request path.
//!
//! Requests append finished lines to a shared buffer and never wait for a disk or a
//! blocked stdout; a dedicated writer thread takes the whole buffer at most every 50 ms and
//! writes it in one go. The buffer is bounded: lines that would overflow it (the writer
//! fell behind) are dropped and counted in `sira_access_log_dropped_total`. A file target is
//! reopened on SIGHUP (log rotation).
//!
//! A line costs a request an uncontended lock and a copy. Handing each line over as a
//! message of its own (a channel) cost a send, a free on the writer's thread and a
//! receive per line: together more than building the line.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::config::AccessLogTarget;
use crate::metrics::metrics;

mod line;

pub use line::JsonLine;

/// Bytes of lines waiting for the writer, at most (some 16,000 lines). The writer may hold
/// as much again while it writes a batch out.
const MAX_PENDING: usize = 16 * 1024 * 1024;

enum Message {
    /// Lines were appended to an empty buffer, or a switch was asked for: the writer may be
    /// idle.
    Wake,
    /// Write out everything queued before this, then answer.
    Flush(SyncSender<()>),
}

/// What requests and the reload path leave for the writer.
#[derive(Default)]
struct Pending {
    /// Whole lines, each with its newline.
    lines: Vec<u8>,
    /// A switch of target (rotation, SIGHUP): the lines before this offset go to the old
    /// one. Recorded under the same lock as the lines, so that none written after the
    /// switch was asked for reaches the old file, nor any before it the new one.
    switch: Option<(usize, AccessLogTarget)>,
}

/// Handle to the writer thread; cheap to share.
pub struct AccessLog {
    pending: Arc<Mutex<Pending>>,
    tx: SyncSender<Message>,
}

/// The buffer, even if a thread panicked holding it: it holds only whole lines.
fn lock(pending: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    pending
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl AccessLog {
    pub fn start(target: AccessLogTarget) -> io::Result<AccessLog> {
        let (tx, rx) = sync_channel(64);
        let sink = Sink::open(&target)?;
        let pending = Arc::new(Mutex::new(Pending::default()));
        let shared = pending.clone();
        std::thread::Builder::new()
            .name("sira-access-log".into())
            .spawn(move || run(&shared, rx, sink))?;
        Ok(AccessLog { pending, tx })
    }

    /// Queues one line (without its newline); never blocks on the writer.
    pub fn write(&self, line: &[u8]) {
        let was_empty = {
            let mut pending = lock(&self.pending);
            let lines = &mut pending.lines;
            if lines.len() + line.len() + 1 > MAX_PENDING {
                drop(pending);
                metrics().access_log_dropped.inc();
                return;
            }
            let was_empty = lines.is_empty();
            lines.extend_from_slice(line);
            lines.push(b'\n');
            was_empty
        };
        // Under load the buffer is rarely empty, and the writer is napping, not waiting:
        // this is about once per nap, and wakes no one. A full channel already holds a wake.
        if was_empty {
            let _ = self.tx.try_send(Message::Wake);
        }
    }

    /// Waits, at most `within`, until every line queued so far is written out: before the
    /// process exits.
    pub fn flush(&self, within: Duration) {
        let (done, wait) = sync_channel(1);
        // Never blocks: with the channel full (a stalled stdout) the lines are lost anyway.
        if self.tx.try_send(Message::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(within);
        }
    }

    /// Reopens the log (SIGHUP) with a possibly new target: the lines queued so far go to
    /// the old one, every later line to the new one. Never blocks.
    pub fn retarget(&self, target: AccessLogTarget) {
        {
            let mut pending = lock(&self.pending);
            let at = pending.lines.len();
            // Two switches before the writer saw the first: the lines between them go to
            // the newer target, the older one is never opened.
            let at = pending.switch.as_ref().map_or(at, |(first, _)| *first);
            pending.switch = Some((at, target));
        }
        // A full channel already holds a wake.
        let _ = self.tx.try_send(Message::Wake);
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

    fn write_all(&mut self, lines: &[u8]) -> io::Result<()> {
        match self {
            Sink::Off => Ok(()),
            Sink::Stdout(out) => out.lock().write_all(lines),
            Sink::File(file) => file.write_all(lines),
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

/// How long the writer naps after writing a batch. Requests append lines without waking
/// it, so under load it costs one wake-up per interval instead of a futex wake and two
/// context switches per request.
const DRAIN_EVERY: Duration = Duration::from_millis(50);

/// A batch buffer larger than this is not kept for the next one, after a burst.
const KEEP_CAPACITY: usize = 1024 * 1024;

fn run(pending: &Mutex<Pending>, rx: Receiver<Message>, mut sink: Sink) {
    let mut batch = Vec::new();
    // Block while idle, so a quiet gateway costs nothing; then write, nap, and go again
    // while lines keep coming.
    while let Ok(first) = rx.recv() {
        let mut message = Some(first);
        loop {
            loop {
                let next = match message.take() {
                    Some(m) => m,
                    None => match rx.try_recv() {
                        Ok(m) => m,
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            write_pending(pending, &mut batch, &mut sink);
                            return;
                        }
                    },
                };
                match next {
                    Message::Wake => {}
                    Message::Flush(done) => {
                        // Lines queued before this message go out first.
                        write_pending(pending, &mut batch, &mut sink);
                        let _ = done.send(());
                    }
                }
            }
            write_pending(pending, &mut batch, &mut sink);
            std::thread::sleep(DRAIN_EVERY);
            // Empty: back to waiting. A line appended after this look sends a wake, which
            // the `recv` above then finds.
            let idle = {
                let pending = lock(pending);
                pending.lines.is_empty() && pending.switch.is_none()
            };
            if idle {
                break;
            }
        }
    }
    write_pending(pending, &mut batch, &mut sink);
}

/// Writes out every line queued so far (switching target where a switch was asked for),
/// and flushes.
fn write_pending(pending: &Mutex<Pending>, batch: &mut Vec<u8>, sink: &mut Sink) {
    // Swapped, not copied: the request path gets the emptied buffer of the last batch.
    let switch = {
        let mut pending = lock(pending);
        std::mem::swap(batch, &mut pending.lines);
        pending.switch.take()
    };
    let (before, after) = match &switch {
        Some((at, _)) => batch.split_at((*at).min(batch.len())),
        None => (&batch[..], &[][..]),
    };
    write_out(sink, before);
    if let Some((_, target)) = &switch {
        match Sink::open(target) {
            Ok(new_sink) => *sink = new_sink,
            Err(e) => tracing::error!(
                "cannot reopen access log {target:?}: {e}; keeping the previous one"
            ),
        }
    }
    write_out(sink, after);
    batch.clear();
    if batch.capacity() > KEEP_CAPACITY {
        *batch = Vec::new();
    }
}

fn write_out(sink: &mut Sink, lines: &[u8]) {
    if let Err(e) = sink.write_all(lines).and_then(|()| sink.flush()) {
        tracing::warn!("access log write failed: {e}");
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
        log.write(b"{\"n\":1}");
        assert_eq!(wait_for(&path, 1), "{\"n\":1}\n");
        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.retarget(AccessLogTarget::File(path.clone()));
        log.write(b"{\"n\":2}");
        assert_eq!(wait_for(&path, 1), "{\"n\":2}\n");
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "{\"n\":1}\n");
    }

    #[test]
    fn no_line_is_lost_or_doubled_across_a_rotation_under_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = Arc::new(AccessLog::start(AccessLogTarget::File(path.clone())).unwrap());
        let writer = {
            let log = log.clone();
            std::thread::spawn(move || {
                for n in 0..20_000 {
                    log.write(format!("{{\"n\":{n}}}").as_bytes());
                }
            })
        };
        std::thread::sleep(Duration::from_millis(5));
        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.retarget(AccessLogTarget::File(path.clone()));
        writer.join().unwrap();
        log.flush(Duration::from_secs(5));
        let numbers = |p: &std::path::Path| -> Vec<u32> {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| l[5..l.len() - 1].parse::<u32>().unwrap())
                .collect()
        };
        let (old, new) = (numbers(&rotated), numbers(&path));
        // In order, the old file's lines all before the new file's: the switch is exact.
        let mut both = old.clone();
        both.extend(&new);
        assert_eq!(
            both,
            (0..20_000).collect::<Vec<_>>(),
            "old {} new {}",
            old.len(),
            new.len()
        );
    }

    #[test]
    fn flush_writes_what_was_queued_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::start(AccessLogTarget::File(path.clone())).unwrap();
        for n in 0..3 {
            log.write(format!("{{\"n\":{n}}}").as_bytes());
        }
        log.flush(Duration::from_secs(5));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n"
        );
    }
}
