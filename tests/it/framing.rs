//! How sira frames a provider's HTTP/1 answers (RFC 9112 §6.3) and when it keeps the
//! connection for the next request: chunk extensions and trailers, a length beside chunked,
//! `connection: close`, transfer codings it did not ask for. Raw sockets on the provider's
//! side.

use crate::raw::{chat_json, send, RawUpstream};
use crate::support::{receive, Sira};
use crate::wire::{chat, config};

/// `body` as chunks of at most `size` bytes, with an extension on each and trailers.
fn chunked(body: &str, size: usize) -> String {
    let mut out = String::new();
    for piece in body.as_bytes().chunks(size) {
        out += &format!("{:x};ext=\"v\"\r\n", piece.len());
        out += std::str::from_utf8(piece).unwrap();
        out += "\r\n";
    }
    out + "0\r\nx-trailer: t\r\n\r\n"
}

#[tokio::test]
async fn chunk_extensions_and_trailers_are_read_and_the_connection_kept() {
    let upstream = RawUpstream::start(|stream, _| {
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{}",
            chunked(&chat_json(), 7)
        );
        send(stream, reply.as_bytes())
    });
    let sira = Sira::start(&config(), &upstream.url);
    for _ in 0..3 {
        let received = receive(chat(&sira).await).await;
        assert!(received.complete, "{}", received.text);
        assert_eq!(received.text, chat_json());
    }
    assert_eq!(
        upstream.connections(),
        1,
        "each body ended where its framing said"
    );
    assert_eq!(sira.wait_access_log(3)[2]["input_tokens"], 3);
}

#[tokio::test]
async fn a_length_beside_chunked_never_frames_the_client_answer_nor_keeps_the_connection() {
    // RFC 9112 §6.3: chunked wins, and an intermediary drops the length before passing the
    // message on. Passed on, `content-length: 2` would cut the client's copy to two bytes.
    let upstream = RawUpstream::start(|stream, _| {
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n{}",
            chunked(&chat_json(), 64)
        );
        send(stream, reply.as_bytes())
    });
    let sira = Sira::start(&config(), &upstream.url);
    for _ in 0..2 {
        let resp = chat(&sira).await;
        assert_eq!(resp.status(), 200);
        assert_ne!(
            resp.headers().get("content-length").map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
        let received = receive(resp).await;
        assert!(received.complete, "{}", received.text);
        assert_eq!(received.text, chat_json());
    }
    assert_eq!(
        upstream.connections(),
        2,
        "a connection with both is not reused"
    );
}

#[tokio::test]
async fn a_provider_that_says_close_gets_a_new_connection_next_time() {
    // The provider says `connection: close` but leaves the socket open: sira must not send
    // the next request on it.
    let upstream = RawUpstream::start(|stream, _| {
        let body = chat_json();
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        send(stream, reply.as_bytes())
    });
    let sira = Sira::start(&config(), &upstream.url);
    for _ in 0..2 {
        let received = receive(chat(&sira).await).await;
        assert!(received.complete, "{}", received.text);
    }
    assert_eq!(upstream.connections(), 2);
    assert_eq!(upstream.requests(), 2);
}

#[tokio::test]
async fn transfer_codings_other_than_chunked_and_conflicting_lengths_are_refused() {
    let upstream = RawUpstream::start(|stream, index| {
        let framing = match index {
            0 => "transfer-encoding: gzip, chunked",
            _ => "content-length: 5\r\ncontent-length: 6",
        };
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{framing}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        send(stream, reply.as_bytes());
        false
    });
    let sira = Sira::start(&config(), &upstream.url);
    for _ in 0..2 {
        let resp = chat(&sira).await;
        assert_eq!(resp.status(), 502);
        let text = resp.text().await.unwrap();
        assert!(!text.contains("hello") && !text.contains("gzip"), "{text}");
    }
    assert_eq!(upstream.requests(), 2, "neither was sent again");
}
