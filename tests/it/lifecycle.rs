//! Starting and stopping: a taken address fails startup at once; SIGTERM exits as soon as
//! nothing is in flight, lets what is in flight finish within the grace period, and ends
//! what is left after it with the surface's error event (after a binary upgrade's hand-over
//! too).

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sira_mock::MockProvider;

use crate::support::{
    client, post_chat, receive, request, standard_config, Received, Sira, KEY_A, SIRA,
};

#[test]
fn an_address_in_use_fails_startup_at_once_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sira.yaml");
    std::fs::write(
        &config,
        format!("server:\n  listen: [\"{addr}\"]\n  admin: off\nlogging: {{ access_log: off }}\n"),
    )
    .unwrap();
    let started = Instant::now();
    let out = Command::new(SIRA)
        .args(["run", "-c"])
        .arg(&config)
        .env("SIRA_UPGRADE_SOCK", dir.path().join("upgrade.sock"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(stderr.contains(&addr.to_string()), "{stderr}");
    assert!(stderr.to_lowercase().contains("in use"), "{stderr}");
    drop(taken);
}

#[tokio::test]
async fn sigterm_on_an_idle_gateway_exits_at_once() {
    let mock = MockProvider::start();
    let mut sira =
        Sira::start_with_server(&standard_config(), &mock.url(), "  grace_period: 30s\n");
    // A kept-alive client connection that is idle does not hold the exit up.
    let c = client();
    let resp = c
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.bytes().await.unwrap();
    let started = Instant::now();
    sira.sigterm();
    let status = sira
        .wait_exit(Duration::from_secs(10))
        .expect("still running");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "an idle gateway took {:?} to exit",
        started.elapsed()
    );
    // Its access log was written out before it left.
    assert_eq!(sira.access_log().len(), 1);
}

#[tokio::test]
async fn sigterm_lets_a_running_stream_finish_then_exits() {
    let mock = MockProvider::start();
    let mut sira =
        Sira::start_with_server(&standard_config(), &mock.url(), "  grace_period: 30s\n");
    let stream = request(&sira, "/v1/chat/completions")
        .header("x-mock-events", "8")
        .header("x-mock-delay-ms", "400")
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    sira.sigterm();
    // New connections are no longer accepted, while the stream still runs.
    let deadline = Instant::now() + Duration::from_millis(2500);
    while std::net::TcpStream::connect(sira.addr).is_ok() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        std::net::TcpStream::connect(sira.addr).is_err(),
        "still accepting after SIGTERM"
    );
    assert!(
        sira.wait_exit(Duration::ZERO).is_none(),
        "refused only once it had exited"
    );
    let received = receive(stream).await;
    assert!(received.complete, "{}", received.text);
    assert!(
        received.text.ends_with("data: [DONE]\n\n"),
        "{}",
        received.text
    );
    let status = sira
        .wait_exit(Duration::from_secs(10))
        .expect("still running");
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "exited {:?} after SIGTERM for a 3 s stream",
        started.elapsed()
    );
}

/// An Anthropic stream of `events` events, one every 300 ms.
async fn slow_stream(sira: &Sira, events: usize) -> reqwest::Response {
    request(sira, "/v1/messages")
        .header("x-mock-events", events.to_string())
        .header("x-mock-delay-ms", "300")
        .json(&json!({"model": "claude", "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap()
}

/// Fails unless `received` was ended by a shutdown: the surface's error event, saying so.
#[track_caller]
fn assert_ended_by_shutdown(received: &Received) {
    assert!(!received.complete, "{}", received.text);
    received.expect("event: error\ndata: {\"type\":\"error\"");
    received.expect("shutting down");
}

#[tokio::test]
async fn what_outlasts_the_grace_period_ends_with_the_surface_error_event() {
    let mock = MockProvider::start();
    let mut sira = Sira::start_with_server(&standard_config(), &mock.url(), "  grace_period: 1s\n");
    let stream = slow_stream(&sira, 30).await;
    // A request still waiting for its answer at the end is ended with the process.
    let waiting = tokio::spawn({
        let url = sira.url("/v1/chat/completions");
        async move {
            client()
                .post(url)
                .bearer_auth(KEY_A)
                .header("x-mock-hang-ms", "10000")
                .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Instant::now();
    sira.sigterm();
    let received = receive(stream).await;
    assert_ended_by_shutdown(&received);
    assert!(
        waiting.await.unwrap().is_err(),
        "answered after the grace period"
    );
    let status = sira
        .wait_exit(Duration::from_secs(10))
        .expect("still running");
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

/// The same end for a process that handed its sockets to a new binary (SIGQUIT): its stream
/// that outlasts the grace period ends with the surface's error event, the process exits, and
/// the new one serves on the same address.
#[tokio::test]
async fn after_an_upgrade_the_old_process_ends_what_outlasts_the_grace_period() {
    let mock = MockProvider::start();
    let mut old = Sira::start_with_server(&standard_config(), &mock.url(), "  grace_period: 1s\n");
    // 18 s of events: longer than the hand-over, Pingora's 5 s and the grace period together,
    // even on a loaded machine.
    let stream = slow_stream(&old, 60).await;
    let upgraded = Command::new(SIRA)
        .args(["run", "--upgrade", "-c"])
        .arg(&old.config_path)
        .env("SIRA_UPGRADE_SOCK", old.dir.path().join("upgrade.sock"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _upgraded = crate::support::Reaped(upgraded);
    // The new process waits on the upgrade socket before the old one is told to hand over.
    let socket = old.dir.path().join("upgrade.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "the new process never waited for the sockets"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let quit = Command::new("kill")
        .args(["-QUIT", &old.pid().to_string()])
        .status()
        .unwrap();
    assert!(quit.success());
    let handed_over = Instant::now();

    let received = receive(stream).await;
    let ended = handed_over.elapsed();
    assert_ended_by_shutdown(&received);
    // The old process goes on accepting for Pingora's 5 s after handing the sockets over
    // (the new one may still be starting); the grace period counts from then.
    assert!(
        ended < Duration::from_secs(9),
        "ended {ended:?} after the hand-over"
    );
    let status = old
        .wait_exit(Duration::from_secs(15))
        .expect("the old process still runs");
    assert!(status.success());
    // The new process answers on the address.
    assert_eq!(post_chat(&old, "gpt-4o").await.status(), 200);
}

#[tokio::test]
async fn a_request_whose_header_is_arriving_at_sigterm_is_served() {
    let mock = MockProvider::start();
    let mut sira =
        Sira::start_with_server(&standard_config(), &mock.url(), "  grace_period: 10s\n");
    let body = crate::raw::chat_body("gpt-4o");
    let head = crate::raw::chat_head("", body.len());
    let (first, rest) = head.as_bytes().split_at(20);
    let addr = sira.addr;
    let client = std::thread::spawn({
        let (first, rest, body) = (first.to_vec(), rest.to_vec(), body.clone());
        move || {
            crate::raw::exchange(
                addr,
                &[
                    (&first, Duration::ZERO),
                    (&rest, Duration::from_millis(600)),
                    (body.as_bytes(), Duration::ZERO),
                ],
                Duration::from_secs(5),
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    sira.sigterm();
    let reply = tokio::task::spawn_blocking(move || client.join().unwrap())
        .await
        .unwrap();
    assert_eq!(reply.status(), 200, "{}", reply.text);
    let status = sira
        .wait_exit(Duration::from_secs(10))
        .expect("still running");
    assert!(status.success());
}

/// Under systemd (`Type=notify`): `READY=1` only once the listeners accept, `RELOADING=1` then
/// `READY=1` around a reload, `STOPPING=1` when a shutdown begins — datagrams to the socket
/// named by `NOTIFY_SOCKET`, here one the test listens on.
#[tokio::test]
async fn systemd_hears_ready_reloading_and_stopping() {
    let mock = sira_mock::MockProvider::start();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let next = |socket: &std::os::unix::net::UnixDatagram| {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut sira = crate::support::Sira::start_with_env(
        &crate::support::standard_config(),
        &mock.url(),
        "",
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    let ready = next(&socket);
    assert!(ready.starts_with("READY=1\nSTATUS=serving on "), "{ready}");
    assert!(ready.contains(&sira.addr.to_string()), "{ready}");
    assert!(std::net::TcpStream::connect(sira.addr).is_ok());

    sira.sighup();
    assert_eq!(next(&socket), "RELOADING=1");
    assert_eq!(next(&socket), "READY=1");
    // A refused file: still ready, on the old config.
    sira.write_raw_config("server: [not, a, mapping]\n");
    sira.sighup();
    assert_eq!(next(&socket), "RELOADING=1");
    assert_eq!(next(&socket), "READY=1");

    sira.sigterm();
    assert_eq!(next(&socket), "STOPPING=1");
    assert!(sira.wait_exit(std::time::Duration::from_secs(10)).is_some());
}

/// `sira reload --pid` (what the unit's ExecReload runs): with the binary the process runs,
/// a SIGHUP; asked to upgrade (as when a package replaced the binary), a new process takes
/// the sockets over, tells systemd it is the main process, and the old one exits.
#[tokio::test]
async fn sira_reload_reloads_or_hands_the_sockets_to_a_new_process() {
    let mock = sira_mock::MockProvider::start();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let next = |socket: &std::os::unix::net::UnixDatagram| {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let notify = socket_path.to_str().unwrap();
    let mut old = Sira::start_with_env(
        &standard_config(),
        &mock.url(),
        "",
        &[("NOTIFY_SOCKET", notify)],
    );
    assert!(next(&socket).starts_with("READY=1"));
    // Its output to a file: the new process it starts keeps the inherited descriptors (under
    // systemd, the journal), so a pipe would never close.
    let said_path = dir.path().join("reload.out");
    let reload = |upgrade: bool| {
        let mut command = Command::new(SIRA);
        command
            .args(["reload", "--pid", &old.pid().to_string(), "-c"])
            .arg(&old.config_path)
            .env("SIRA_UPGRADE_SOCK", old.dir.path().join("upgrade.sock"))
            .env("NOTIFY_SOCKET", notify)
            .env_remove("RUST_LOG")
            .stdout(std::fs::File::create(&said_path).unwrap())
            .stderr(Stdio::null());
        if upgrade {
            command.arg("--upgrade");
        }
        let status = command.status().unwrap();
        (status, std::fs::read_to_string(&said_path).unwrap())
    };

    let (status, said) = reload(false);
    assert!(status.success(), "{said}");
    assert!(said.contains("SIGHUP"), "{said}");
    assert_eq!(next(&socket), "RELOADING=1");
    assert_eq!(next(&socket), "READY=1");

    let (status, said) = reload(true);
    assert!(status.success(), "{said}");
    let new_pid: u32 = said
        .split_whitespace()
        .find_map(|w| w.parse().ok().filter(|p| *p != old.pid()))
        .expect("the new pid");
    let _new = Reaper(new_pid);
    let mut messages = Vec::new();
    let ready = loop {
        let message = next(&socket);
        if message.contains("READY=1") && message.contains("MAINPID=") {
            break message;
        }
        messages.push(message);
    };
    assert!(
        ready.starts_with(&format!("MAINPID={new_pid}\nREADY=1")),
        "{ready}"
    );
    assert!(
        old.wait_exit(Duration::from_secs(10)).is_some(),
        "the old process never exited"
    );
    // Nothing from the old process may tell systemd the unit is stopping: the unit goes on.
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 512];
    while let Ok(n) = socket.recv(&mut buf) {
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        !messages.iter().any(|m| m.contains("STOPPING=1")),
        "{messages:?}"
    );
    let resp = request(&old, "/v1/chat/completions")
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the new process serves on the same address"
    );
}

/// Kills a process by pid when the test ends.
struct Reaper(u32);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}
