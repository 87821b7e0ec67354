//! `sira`: wiring only. Parse the command line, load the config, start the server.

use std::io::Read;
use std::process::ExitCode;

use clap::Parser;
use sira::cli::{default_config_path, Cli, Command, KeyAction};
use sira::config::{self, ConfigError, LogFormat, ProcessSource, Snapshot};
use sira::server::{self, RunOptions};

// glibc's malloc spent ~19 % of sira's instructions per request (bench/RESULTS.md, callgrind),
// much of it in `malloc_consolidate` and arena bookkeeping for the many short-lived
// allocations of one request; mimalloc's thread-local free lists make those a few
// instructions each. `sira-alloc` calls it without an alignment where none is needed.
#[global_allocator]
static ALLOCATOR: sira_alloc::MiMalloc = sira_alloc::MiMalloc;

#[allow(clippy::print_stdout)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, upgrade } => {
            let path = config.or_else(default_config_path);
            let snapshot = match load(path.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("sira: invalid config {}:\n{e}", describe(path.as_deref()));
                    return ExitCode::FAILURE;
                }
            };
            init_logging(&snapshot);
            match server::run(
                snapshot,
                RunOptions {
                    config_path: path,
                    upgrade,
                },
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sira: cannot start: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Reload {
            pid,
            config,
            upgrade,
        } => {
            let path = config.or_else(default_config_path);
            let socket = sira::upgrade::socket_path();
            match sira::upgrade::reload_or_upgrade(pid, path.as_deref(), &socket, upgrade) {
                Ok(sira::upgrade::Done::Reloaded) => {
                    println!("sent SIGHUP to {pid}: config reloaded");
                    ExitCode::SUCCESS
                }
                Ok(sira::upgrade::Done::Upgraded { new_pid }) => {
                    println!("{pid} hands its sockets to {new_pid} and drains");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sira: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config } => {
            let path = config.or_else(default_config_path);
            match load(path.as_deref()) {
                Ok(snapshot) => {
                    println!(
                        "{}: ok ({}, {}, {})",
                        describe(path.as_deref()),
                        count(snapshot.providers.len(), "provider"),
                        count(snapshot.models.len(), "model"),
                        count(snapshot.keys.len(), "key")
                    );
                    for note in &snapshot.notes {
                        println!("  note: {note}");
                    }
                    ExitCode::SUCCESS
                }
                Err(ConfigError::Invalid(problems)) => {
                    println!(
                        "{}: {}:",
                        describe(path.as_deref()),
                        count(problems.len(), "problem")
                    );
                    for problem in &problems {
                        println!("  {problem}");
                    }
                    ExitCode::FAILURE
                }
                Err(e) => {
                    println!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Key {
            action: KeyAction::New,
        } => match sira::auth::new_key() {
            Ok(key) => {
                println!("{key}");
                println!("{}", sira::auth::hash_key(&key));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sira: no randomness available: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Key {
            action: KeyAction::Hash,
        } => {
            let mut secret = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut secret) {
                eprintln!("sira: cannot read stdin: {e}");
                return ExitCode::FAILURE;
            }
            let secret = secret.trim_end_matches(['\n', '\r']);
            if secret.is_empty() {
                eprintln!("sira: expected a key on stdin");
                return ExitCode::FAILURE;
            }
            println!("{}", sira::auth::hash_key(secret));
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("sira {}", sira::cli::LONG_VERSION);
            ExitCode::SUCCESS
        }
    }
}

fn load(path: Option<&std::path::Path>) -> Result<Snapshot, ConfigError> {
    match path {
        Some(path) => config::load(path),
        None => config::builtin_default(&ProcessSource),
    }
}

/// `1 key`, `2 keys`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn describe(path: Option<&std::path::Path>) -> String {
    path.map_or_else(
        || "built-in default".to_owned(),
        |p| p.display().to_string(),
    )
}

/// Logs go to stderr (stdout belongs to the access log by default), with priorities the
/// journal reads when it is the journal's (`sira::journal`). `RUST_LOG` overrides the
/// configured level for debugging.
fn init_logging(snapshot: &Snapshot) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&snapshot.logging.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: the journal and log files get plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(sira::journal::Stderr::detect());
    let result = match snapshot.logging.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("sira: cannot initialise logging: {e}");
    }
}
