//! sira's own log lines on stderr, each prefixed with its syslog priority (`<4>` for a
//! warning) when stderr is the journal's stream: systemd reads the prefix (and strips it), so
//! `journalctl -u sira -p warning` shows sira's warnings and errors rather than nothing.
//!
//! systemd names the stream it connected in `JOURNAL_STREAM` (`<device>:<inode>`); a process
//! whose stderr was redirected since (a shell, a test) has another, and gets plain lines.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The log writer: stderr, with priority prefixes when it is the journal.
pub struct Stderr {
    journal: bool,
}

impl Stderr {
    pub fn detect() -> Stderr {
        let journal = std::env::var("JOURNAL_STREAM")
            .ok()
            .is_some_and(|stream| names_stderr(&stream));
        Stderr { journal }
    }
}

/// Whether `stream` (`JOURNAL_STREAM`'s value) is the device and inode of this process's
/// stderr.
fn names_stderr(stream: &str) -> bool {
    let Some((device, inode)) = stream.split_once(':') else {
        return false;
    };
    let Ok(fd) = io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    device.parse() == Ok(meta.dev()) && inode.parse() == Ok(meta.ino())
}

/// The syslog priority of a level, as sd-daemon(3)'s prefixes write it.
fn prefix(level: &Level) -> &'static [u8] {
    match *level {
        Level::ERROR => b"<3>",
        Level::WARN => b"<4>",
        Level::INFO => b"<6>",
        _ => b"<7>",
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { prefix: None }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line {
            prefix: self.journal.then(|| prefix(meta.level())),
        }
    }
}

/// One event's line.
pub struct Line {
    /// Written with the line's first bytes, in the same write: another thread's line cannot
    /// come between them.
    prefix: Option<&'static [u8]>,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut stderr = io::stderr().lock();
        match self.prefix.take() {
            Some(prefix) => {
                let mut line = Vec::with_capacity(prefix.len() + buf.len());
                line.extend_from_slice(prefix);
                line.extend_from_slice(buf);
                stderr.write_all(&line)?;
                Ok(buf.len())
            }
            None => stderr.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_that_is_not_stderr_is_not_the_journal() {
        assert!(!names_stderr(""));
        assert!(!names_stderr("not-a-pair"));
        assert!(!names_stderr("0:0"));
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(prefix(&Level::ERROR), b"<3>");
        assert_eq!(prefix(&Level::WARN), b"<4>");
        assert_eq!(prefix(&Level::INFO), b"<6>");
        assert_eq!(prefix(&Level::DEBUG), b"<7>");
    }
}
