//! `sira-mock`: the mock provider as a process, for the README demo and the benchmarks.
//!
//! Prints exactly one line, `sira-mock listening on http://ADDR`, once bound (harnesses wait
//! for it and read the real port when `--listen` asked for port 0), then serves until SIGTERM
//! or SIGINT.

use sira_mock::{Hang, MockConfig, Split};
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: sira-mock [--listen 127.0.0.1:9000] [--threads T] [--events N] [--delay-ms D]
                 [--hang-ms H|forever] [--status S] [--error NAME|JSON] [--fixture PATH]
                 [--fail-after N] [--error-event-after N] [--split whole|bytes]
                 [--tool-call NAME] [--tool-args JSON] [--input-tokens N] [--output-tokens N]
                 [--cached-tokens N] [--cache-write-tokens N] [--retry-after S]
Every flag but --listen/--threads sets the default of the x-mock-* request header of the same name.";

struct Args {
    listen: SocketAddr,
    threads: usize,
    config: MockConfig,
}

fn parse_args() -> Result<Args, String> {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 9000).into();
    let mut threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    // No request is recorded: nothing could read the records and memory would grow with load.
    let mut config = MockConfig {
        disable_recording: true,
        ..MockConfig::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (flag, None),
        };
        let value = match inline.or_else(|| args.next()) {
            Some(v) => v,
            None => return Err(format!("{flag} needs a value")),
        };
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: expected a non-negative integer, got {v:?}"))
        };
        match flag.as_str() {
            "--listen" => {
                listen = value
                    .parse()
                    .map_err(|_| format!("--listen: expected HOST:PORT, got {value:?}"))?
            }
            "--threads" => threads = (num(&value)? as usize).max(1),
            "--events" => config.events = Some(num(&value)? as usize),
            "--delay-ms" => config.delay = Some(Duration::from_millis(num(&value)?)),
            "--hang-ms" if value == "forever" => config.hang = Some(Hang::Forever),
            "--hang-ms" => config.hang = Some(Hang::For(Duration::from_millis(num(&value)?))),
            "--status" => {
                config.status = Some(
                    u16::try_from(num(&value)?)
                        .map_err(|_| format!("--status: {value} is not a status"))?,
                )
            }
            "--error" => config.error = Some(value),
            "--fixture" => config.fixture = Some(value),
            "--fail-after" => config.fail_after = Some(num(&value)? as usize),
            "--error-event-after" => config.error_event_after = Some(num(&value)? as usize),
            "--split" => {
                config.split = Some(match value.as_str() {
                    "whole" => Split::Whole,
                    "bytes" => Split::Bytes,
                    _ => return Err(format!("--split: expected whole or bytes, got {value:?}")),
                })
            }
            "--tool-call" => config.tool_call = Some(value),
            "--tool-args" => config.tool_args = Some(value),
            "--input-tokens" => config.input_tokens = Some(num(&value)?),
            "--output-tokens" => config.output_tokens = Some(num(&value)?),
            "--cached-tokens" => config.cached_tokens = Some(num(&value)?),
            "--cache-write-tokens" => config.cache_write_tokens = Some(num(&value)?),
            "--retry-after" => config.retry_after = Some(num(&value)?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(Args {
        listen,
        threads,
        config,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            eprintln!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sira-mock: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sira-mock: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("sira-mock: cannot listen on {}: {e}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().unwrap_or(args.listen);
        // The one line harnesses wait for; flushed because stdout is a pipe there.
        let mut out = std::io::stdout().lock();
        if writeln!(out, "sira-mock listening on http://{addr}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return ExitCode::FAILURE;
        }
        drop(out);
        sira_mock::serve(listener, args.config, shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// Resolves on SIGINT or SIGTERM (the benchmark harness stops the mock with SIGTERM).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
