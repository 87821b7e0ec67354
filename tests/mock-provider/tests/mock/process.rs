//! The `sira-mock` binary: one "listening" line, serves, exits cleanly on SIGTERM.

use crate::client::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test]
async fn binary_prints_its_address_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sira-mock"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--events",
            "2",
            "--delay-ms",
            "0",
            "--threads",
            "1",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("sira-mock listening on http://")
        .unwrap_or_else(|| panic!("{line:?}"));
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    assert_ne!(addr.port(), 0, "the real port is printed");
    let r = post(
        addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"m","stream":true}"#,
    )
    .await;
    assert_eq!(sse_data(&r.body).len(), 4, "--events applies");
    let r = post(
        addr,
        "/v1/chat/completions",
        &[("x-mock-events", "1")],
        r#"{"model":"m"}"#,
    )
    .await;
    assert_eq!(r.json()["choices"][0]["message"]["content"], "Hello");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn binary_rejects_bad_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_sira-mock"))
        .args(["--fixture", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("x-mock-fixture"));
}
