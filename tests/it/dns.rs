//! Provider host names are resolved in the background, on the answer's TTL, and never on a
//! request's path: a small DNS server here answers for `api.sira.test` and counts the
//! questions it gets.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{keys_section, post_chat, Sira};

/// Answers A questions for one name with an address and TTL the test can change.
struct DnsServer {
    port: u16,
    address: Arc<Mutex<Ipv4Addr>>,
    ttl: Arc<AtomicU32>,
    questions: Arc<AtomicUsize>,
    /// The TTL of the last answer sent.
    last_ttl: Arc<AtomicU32>,
}

impl DnsServer {
    fn start(name: &str, address: Ipv4Addr, ttl: u32) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let server = DnsServer {
            port,
            address: Arc::new(Mutex::new(address)),
            ttl: Arc::new(AtomicU32::new(ttl)),
            questions: Arc::new(AtomicUsize::new(0)),
            last_ttl: Arc::new(AtomicU32::new(0)),
        };
        let (address, ttl, questions, last_ttl) = (
            server.address.clone(),
            server.ttl.clone(),
            server.questions.clone(),
            server.last_ttl.clone(),
        );
        let name = name.to_owned();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let ttl = ttl.load(Ordering::SeqCst);
                let Some(reply) =
                    answer(&buf[..n], &name, *address.lock().unwrap(), ttl, &questions)
                else {
                    continue;
                };
                let _ = socket.send_to(&reply, from);
                last_ttl.store(ttl, Ordering::SeqCst);
            }
        });
        server
    }

    fn questions(&self) -> usize {
        self.questions.load(Ordering::SeqCst)
    }
}

/// A reply to one query (RFC 1035 §4.1): the A record for `name`, nothing for anything else.
fn answer(
    query: &[u8],
    name: &str,
    address: Ipv4Addr,
    ttl: u32,
    questions: &AtomicUsize,
) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels, then type and class.
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question_end = at + 4;
    // Names under `silent.` get no answer at all, like a server that is down.
    if labels.first().is_some_and(|l| l.starts_with("silent")) {
        return None;
    }
    let matches = labels.join(".") == name;
    let is_a = qtype == 1;
    if matches && is_a {
        questions.fetch_add(1, Ordering::SeqCst);
    }
    let mut reply = Vec::with_capacity(64);
    reply.extend_from_slice(&query[..2]);
    // Response, recursion desired and available; NXDOMAIN for other names.
    let rcode = if matches { 0 } else { 3 };
    reply.extend_from_slice(&[0x81, 0x80 | rcode]);
    reply.extend_from_slice(&[0, 1]);
    reply.extend_from_slice(&[0, u8::from(matches && is_a)]);
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(query.get(12..question_end)?);
    if matches && is_a {
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        reply.extend_from_slice(&ttl.to_be_bytes());
        reply.extend_from_slice(&[0, 4]);
        reply.extend_from_slice(&address.octets());
    }
    Some(reply)
}

/// Two providers on the same port of two loopback addresses, each answering with its name.
fn twin_upstreams() -> u16 {
    for _ in 0..20 {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        let Ok(second) = TcpListener::bind(("127.0.0.2", port)) else {
            continue;
        };
        for (listener, who) in [(first, "one"), (second, "two")] {
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { return };
                    std::thread::spawn(move || answer_chat(stream, who));
                }
            });
        }
        return port;
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

fn answer_chat(mut stream: std::net::TcpStream, who: &str) {
    use std::io::{BufRead, BufReader, Read};
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut length = 0;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let answer = serde_json::json!({
            "id": "c", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": who}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        })
        .to_string();
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

async fn who_answers(sira: &Sira) -> String {
    let resp = post_chat(sira, "gpt-4o").await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn host_names_follow_their_dns_answers_in_the_background() {
    let port = twin_upstreams();
    let dns = DnsServer::start("api.sira.test", Ipv4Addr::new(127, 0, 0, 1), 1);
    let config = format!(
        "providers:\n  oai: {{ kind: openai, endpoints: [\"http://api.sira.test:{port}\"], api_key: sk-upstream }}\nmodels:\n  gpt-4o:\n    targets: [{{ provider: oai }}]\n{}",
        keys_section()
    );
    let sira = Sira::start_with_server(
        &config,
        "",
        &format!("  resolver: [\"127.0.0.1:{}\"]\n", dns.port),
    );
    assert_eq!(who_answers(&sira).await, "one");

    // Requests never ask: a burst well within one TTL costs at most the one refresh that
    // falls due meanwhile.
    let before = dns.questions();
    let started = Instant::now();
    for _ in 0..30 {
        assert_eq!(who_answers(&sira).await, "one");
    }
    let burst = started.elapsed();
    assert!(
        dns.questions() - before <= 1 + burst.as_secs() as usize,
        "{} questions during a {burst:?} burst",
        dns.questions() - before
    );

    // The provider moves: within a TTL or two, without a restart, requests follow it.
    *dns.address.lock().unwrap() = Ipv4Addr::new(127, 0, 0, 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if who_answers(&sira).await == "two" {
            break;
        }
        assert!(Instant::now() < deadline, "still on the old address");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A long TTL is honoured: the name is not asked again for as long as it holds.
    // Waited for rather than slept on: the refresh that fetches the long TTL may come late on
    // a loaded machine.
    dns.ttl.store(3600, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while dns.last_ttl.load(Ordering::SeqCst) != 3600 {
        assert!(Instant::now() < deadline, "the name was not asked again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = dns.questions();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(dns.questions(), settled, "asked again within its TTL");
    assert_eq!(who_answers(&sira).await, "two");

    // A reload keeps what the endpoint learnt: the same host, in a changed provider
    // definition, is served at once from the answer it already has.
    let text = std::fs::read_to_string(&sira.config_path).unwrap();
    sira.write_raw_config(&text.replace("api_key: sk-upstream", "api_key: sk-upstream-2"));
    sira.sighup();
    let deadline = Instant::now() + Duration::from_secs(5);
    while sira
        .metric("sira_config_reloads_total{result=\"ok\"}")
        .await
        < 1.0
    {
        assert!(Instant::now() < deadline, "the reload did not happen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(who_answers(&sira).await, "two");
    assert_eq!(dns.questions(), settled, "the reload forgot the answer");
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_a_502_naming_it() {
    let dns = DnsServer::start("api.sira.test", Ipv4Addr::new(127, 0, 0, 1), 1);
    let config = format!(
        "providers:\n  oai: {{ kind: openai, endpoints: [\"http://nowhere.sira.test:9\"], api_key: sk-upstream }}\nmodels:\n  gpt-4o:\n    targets: [{{ provider: oai }}]\n{}",
        keys_section()
    );
    let sira = Sira::start_with_server(
        &config,
        "",
        &format!("  resolver: [\"127.0.0.1:{}\"]\n", dns.port),
    );
    // The failed lookup answers the request; it does not wait out the connect timeout (5 s).
    let started = Instant::now();
    let resp = post_chat(&sira, "gpt-4o").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("nowhere.sira.test"), "{message}");
}

#[tokio::test]
async fn a_name_whose_server_is_silent_holds_up_no_other() {
    let port = twin_upstreams();
    let dns = DnsServer::start("api.sira.test", Ipv4Addr::new(127, 0, 0, 1), 60);
    let config = format!(
        "providers:\n  oai: {{ kind: openai, endpoints: [\"http://api.sira.test:{port}\"], api_key: sk-upstream }}\n  s1: {{ kind: openai, endpoints: [\"http://silent1.sira.test:9\"], api_key: sk-upstream }}\n  s2: {{ kind: openai, endpoints: [\"http://silent2.sira.test:9\"], api_key: sk-upstream }}\n  s3: {{ kind: openai, endpoints: [\"http://silent3.sira.test:9\"], api_key: sk-upstream }}\nmodels:\n  gpt-4o:\n    targets: [{{ provider: oai }}]\n  other:\n    targets: [{{ provider: s1 }}, {{ provider: s2 }}, {{ provider: s3 }}]\n{}",
        keys_section()
    );
    let sira = Sira::start_with_server(
        &config,
        "",
        &format!("  resolver: [\"127.0.0.1:{}\"]\n", dns.port),
    );
    let started = Instant::now();
    assert_eq!(who_answers(&sira).await, "one");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?} behind the silent names",
        started.elapsed()
    );
}
