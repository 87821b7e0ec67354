//! Command line (CONTRACT.md, "Command line").

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

/// `0.1.0 (git 1a2b3c4d5e6f, features: rustls)`: the revision is the build's (build.rs).
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("SIRA_GIT_REVISION"),
    ", features: rustls)"
);

#[derive(Debug, Parser)]
#[command(
    name = "sira",
    about = "An AI API gateway on Pingora",
    version = LONG_VERSION
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway in the foreground (what systemd starts).
    Run {
        /// Config file. Default: $SIRA_CONFIG, else /etc/sira/sira.yaml, else conf/sira.yaml,
        /// else the built-in default.
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// Take the listening sockets over from the running instance (graceful upgrade).
        #[arg(long)]
        upgrade: bool,
    },
    /// Reload a running instance's config (SIGHUP), or, when this binary is not the one it
    /// runs (a package replaced it), hand its sockets to this binary without refusing a
    /// connection: what `systemctl reload` runs.
    Reload {
        /// The running instance (systemd: $MAINPID).
        #[arg(long)]
        pid: u32,
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// Hand the sockets over even to the same binary.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a config file and exit: 0 if valid, else print every problem and exit 1.
    Check {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Manage client API keys.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Print version, git revision and features.
    Version,
}

#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Print a fresh random key and, on a second line, its sha256 hash for the config.
    New,
    /// Read a key from stdin and print its `sha256:<hex>` form.
    Hash,
}

/// The config file `sira run`/`sira check` use when none is given; `None` means the
/// built-in default.
pub fn default_config_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SIRA_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    ["/etc/sira/sira.yaml", "conf/sira.yaml"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
}
