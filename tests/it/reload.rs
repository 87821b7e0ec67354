//! Reload by SIGHUP and POST /admin/reload: atomic, per-request snapshots, invalid files
//! change nothing.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sira_mock::MockProvider;

use crate::support::{client, keys_section, post_chat, Sira, KEY_A};

fn config(models: &str) -> String {
    format!(
        "providers:\n  oai: {{ kind: openai, endpoints: [\"{{mock}}\"], api_key: sk-up }}\nmodels:\n{models}{}",
        keys_section()
    )
}

async fn wait_reloads(sira: &Sira, result: &str, n: f64) {
    let series = format!("sira_config_reloads_total{{result=\"{result}\"}}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while sira.metric(&series).await < n {
        assert!(Instant::now() < deadline, "no reload {result} counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn chat(sira: &Sira, model: &str) -> u16 {
    post_chat(sira, model).await.status().as_u16()
}

#[tokio::test]
async fn a_model_added_by_sighup_is_served_right_after() {
    let mock = MockProvider::start();
    let sira = Sira::start(
        &config("  old: { targets: [{ provider: oai }] }\n"),
        &mock.url(),
    );
    assert_eq!(chat(&sira, "new").await, 404);
    sira.rewrite_config(
        &config(
            "  old: { targets: [{ provider: oai }] }\n  new: { targets: [{ provider: oai }] }\n",
        ),
        &mock.url(),
    );
    sira.sighup();
    wait_reloads(&sira, "ok", 1.0).await;
    assert_eq!(chat(&sira, "new").await, 200);
}

#[tokio::test]
async fn a_broken_file_leaves_the_old_config_serving() {
    let mock = MockProvider::start();
    let sira = Sira::start(
        &config("  m: { targets: [{ provider: oai }] }\n"),
        &mock.url(),
    );
    let before: Value = client()
        .get(sira.admin_url("/admin/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    sira.write_raw_config("models:\n  m: { targets: [{ provider: nowhere }] }\n");
    let resp = client()
        .post(sira.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["problems"][0],
        "models.m.targets[0].provider: unknown provider \"nowhere\""
    );
    assert_eq!(
        sira.metric("sira_config_reloads_total{result=\"error\"}")
            .await,
        1.0
    );
    // SIGHUP with the same broken file: also refused, also counted.
    sira.sighup();
    wait_reloads(&sira, "error", 2.0).await;
    assert_eq!(chat(&sira, "m").await, 200);
    let after: Value = client()
        .get(sira.admin_url("/admin/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(before["sha256"], after["sha256"]);
}

#[tokio::test]
async fn a_stream_open_across_a_reload_completes_on_its_config() {
    let mock = MockProvider::start();
    let sira = Sira::start(
        &config("  m: { targets: [{ provider: oai, model: first }] }\n"),
        &mock.url(),
    );
    let mut stream = client()
        .post(sira.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .header("x-mock-events", "8")
        .header("x-mock-delay-ms", "100")
        .json(
            &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
        )
        .send()
        .await
        .unwrap();
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    // Mid-stream: the model now points elsewhere, under another name.
    sira.rewrite_config(
        &config("  m2: { targets: [{ provider: oai, model: second }] }\n"),
        &mock.url(),
    );
    let resp = client()
        .post(sira.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut rest = String::from_utf8(first.to_vec()).unwrap();
    while let Some(chunk) = stream.chunk().await.unwrap() {
        rest.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(rest.ends_with("data: [DONE]\n\n"), "{rest}");
    assert_eq!(sira_mock::answer_text(8), collect_text(&rest));
    // New requests see the new config at once.
    assert_eq!(chat(&sira, "m").await, 404);
    assert_eq!(chat(&sira, "m2").await, 200);
    assert_eq!(mock.requests()[1].json()["model"], "second");
}

fn collect_text(sse: &str) -> String {
    crate::streaming::data_events(sse)
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn sighup_reopens_the_access_log_file() {
    let mock = MockProvider::start();
    let sira = Sira::start(
        &config("  m: { targets: [{ provider: oai }] }\n"),
        &mock.url(),
    );
    assert_eq!(chat(&sira, "m").await, 200);
    sira.wait_access_log(1);
    let path = sira.dir.path().join("access.log");
    let rotated = sira.dir.path().join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    sira.sighup();
    wait_reloads(&sira, "ok", 1.0).await;
    assert_eq!(chat(&sira, "m").await, 200);
    assert_eq!(
        sira.wait_access_log(1).len(),
        1,
        "the new file has the new line only"
    );
    assert_eq!(std::fs::read_to_string(rotated).unwrap().lines().count(), 1);
}

/// `needs_restart` names what the file changes against what the process bound at start:
/// still named by a second reload of the same file, gone once the file is back.
#[tokio::test]
async fn needs_restart_compares_with_what_is_bound() {
    let mock = MockProvider::start();
    let sira = Sira::start(
        &config("  m: { targets: [{ provider: oai }] }\n"),
        &mock.url(),
    );
    let original = std::fs::read_to_string(&sira.config_path).unwrap();
    assert!(original.contains("threads: 2"), "{original}");
    let reload = || async {
        client()
            .post(sira.admin_url("/admin/reload"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    sira.write_raw_config(&original.replace("threads: 2", "threads: 3"));
    assert_eq!(reload().await["needs_restart"], json!(["server.threads"]));
    assert_eq!(reload().await["needs_restart"], json!(["server.threads"]));
    sira.write_raw_config(&original);
    assert_eq!(reload().await["needs_restart"], json!([]));
}
