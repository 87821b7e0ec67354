//! `sira check`, `sira key`, `sira version`.

use crate::support::{run_cli, KEY_A};

#[test]
fn check_accepts_every_shipped_config() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(root.join("conf"))
        .unwrap()
        .chain(std::fs::read_dir(root.join("conf/examples")).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    for file in files {
        let out = std::process::Command::new(crate::support::SIRA)
            .args(["check", "-c"])
            .arg(&file)
            .env("OPENAI_API_KEY", "x")
            .env("ANTHROPIC_API_KEY", "x")
            .env("AZURE_OPENAI_KEY", "x")
            .env("OPENAI_BACKUP_KEY", "x")
            .env("SIRA_ADMIN_TOKEN", "x")
            .env("SIRA_REASONING_KEY", "a-reasoning-key-for-the-test")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn check_reports_every_problem_with_its_path_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "providers:\n  openai: { kind: openai, api_key: sk-very-secret }\nmodels:\n  gpt-4o:\n    targets: [{ provider: opneai }]\nserver:\n  threads: sk-very-secret\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run_cli(&["check", "-c", file.to_str().unwrap()], "", dir.path());
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("models.gpt-4o.targets[0].provider: unknown provider \"opneai\""),
        "{stdout}"
    );
    assert!(stdout.contains("server.threads:"), "{stdout}");
    assert!(
        !stdout.contains("sk-very-secret") && !stderr.contains("sk-very-secret"),
        "{stdout}"
    );
}

#[test]
fn check_without_a_file_validates_the_builtin_default() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = run_cli(&["check"], "", dir.path());
    assert_eq!(code, 0);
    assert!(stdout.starts_with("built-in default: ok"), "{stdout}");
}

#[test]
fn run_refuses_an_invalid_file_without_listening() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "sever: {}\n").unwrap();
    let (code, _, stderr) = run_cli(&["run", "-c", file.to_str().unwrap()], "", dir.path());
    assert_eq!(code, 1);
    assert!(stderr.contains("sever: unknown field `sever`"), "{stderr}");
}

#[test]
fn key_new_and_hash_agree() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = run_cli(&["key", "new"], "", dir.path());
    assert_eq!(code, 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("sk-sira-"));
    let (code, hashed, _) = run_cli(&["key", "hash"], &format!("{}\n", lines[0]), dir.path());
    assert_eq!(code, 0);
    assert_eq!(hashed.trim(), lines[1]);
    let (_, known, _) = run_cli(&["key", "hash"], KEY_A, dir.path());
    assert_eq!(known.trim(), sira::auth::hash_key(KEY_A));
}

#[test]
fn version_prints() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = run_cli(&["version"], "", dir.path());
    assert_eq!(code, 0);
    assert!(stdout.starts_with("sira "), "{stdout}");
}
