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
        // As on a fresh clone: none of the variables the files name is set.
        let mut check = std::process::Command::new(crate::support::SIRA);
        check.args(["check", "-c"]).arg(&file);
        for name in [
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "AZURE_OPENAI_KEY",
            "OPENAI_BACKUP_KEY",
            "GEMINI_API_KEY",
            "SIRA_ADMIN_TOKEN",
            "SIRA_REASONING_KEY",
        ] {
            check.env_remove(name);
        }
        let out = check.output().unwrap();
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
fn version_prints_the_revision_it_was_built_from() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = run_cli(&["version"], "", dir.path());
    assert_eq!(code, 0);
    let (code, flag, _) = run_cli(&["--version"], "", dir.path());
    assert_eq!(code, 0);
    assert_eq!(stdout, flag);
    assert!(
        stdout.starts_with(concat!("sira ", env!("CARGO_PKG_VERSION"), " (git ")),
        "{stdout}"
    );
    // Built from a git checkout (as every test run is): the revision is the checkout's.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if let Some(head) = head {
        assert!(
            stdout.contains(&format!("(git {head}")),
            "{stdout} vs {head}"
        );
    }
}

#[test]
fn check_names_the_file_of_a_syntax_error_and_counts_in_english() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, "models: {a: [\n").unwrap();
    let (code, stdout, _) = run_cli(&["check", "-c", file.to_str().unwrap()], "", dir.path());
    assert_eq!(code, 1);
    assert!(
        stdout.starts_with(&format!("{}: 1 problem:", file.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{}:2:1: invalid YAML", file.display())),
        "{stdout}"
    );

    // A broken provider is one problem, not also an unknown provider where it is used.
    std::fs::write(
        &file,
        "providers:\n  p: { kind: nope }\n  q: { kind: openai, endpoints: [\"http://127.0.0.1:9\"] }\nmodels:\n  m: { targets: [{ provider: p }] }\n  n: { targets: [{ provider: zz }] }\n",
    )
    .unwrap();
    let (_, stdout, _) = run_cli(&["check", "-c", file.to_str().unwrap()], "", dir.path());
    assert!(stdout.contains(": 2 problems:"), "{stdout}");
    assert!(stdout.contains("providers.p.kind"), "{stdout}");
    assert!(!stdout.contains("unknown provider \"p\""), "{stdout}");
    assert!(stdout.contains("unknown provider \"zz\""), "{stdout}");

    std::fs::write(
        &file,
        "providers:\n  q: { kind: openai, api_key: \"${SIRA_TEST_UNSET:-}\" }\nmodels:\n  m: { targets: [{ provider: q }] }\n",
    )
    .unwrap();
    let (code, stdout, _) = run_cli(&["check", "-c", file.to_str().unwrap()], "", dir.path());
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("ok (1 provider, 1 model, 0 keys)"),
        "{stdout}"
    );
    assert!(stdout.contains("note: providers.q: no api_key"), "{stdout}");
}

/// A config on free ports with text logs and a provider without a key, which sira warns of
/// as it starts (`no api_key`).
fn config_that_warns(dir: &std::path::Path) -> std::path::PathBuf {
    let file = dir.join("sira.yaml");
    let (port, admin) = (crate::support::free_port(), crate::support::free_port());
    std::fs::write(
        &file,
        format!("server:\n  listen: [\"127.0.0.1:{port}\"]\n  admin: \"127.0.0.1:{admin}\"\nlogging: {{ format: text }}\nproviders:\n  q: {{ kind: openai, api_key: \"${{SIRA_TEST_UNSET:-}}\" }}\nmodels:\n  m: {{ targets: [{{ provider: q }}] }}\n"),
    )
    .unwrap();
    file
}

/// Runs `command` with its stderr appended to `log` until `needle` is in it (a loaded machine
/// may take a while to start it) or ten seconds pass; the log.
fn logged_until(mut command: std::process::Command, log: &std::path::Path, needle: &str) -> String {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = crate::support::Reaped(
        command
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    let read = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !read().contains(needle) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(child);
    read()
}

/// `sira run -c file`, with `RUST_LOG` and `JOURNAL_STREAM` unset.
fn run_config(file: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(crate::support::SIRA);
    command
        .args(["run", "-c"])
        .arg(file)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM");
    command
}

#[test]
fn text_logs_carry_no_colour_codes_when_not_at_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_that_warns(dir.path());
    let log = logged_until(
        run_config(&file),
        &dir.path().join("stderr.log"),
        "no api_key",
    );
    assert!(log.contains("no api_key"), "{log}");
    assert!(!log.contains('\u{1b}'), "{log}");
}

/// `sira run` in a directory with no config file, with `env` as its whole environment: its
/// log until `needle` appears (or ten seconds pass).
fn run_without_config(env: &[(&str, &str)], needle: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(crate::support::SIRA);
    command
        .arg("run")
        .current_dir(dir.path())
        .env_clear()
        .envs(env.iter().copied());
    logged_until(command, &dir.path().join("stderr.log"), needle)
}

#[test]
fn without_a_config_file_the_log_names_the_providers_found_or_warns_of_none() {
    // The built-in default listens on fixed ports, and a host with sira installed has a
    // config file it would read instead: this test needs a host without either.
    let taken = ["127.0.0.1:8080", "127.0.0.1:9901"]
        .into_iter()
        .find(|addr| std::net::TcpListener::bind(addr).is_err());
    if let Some(addr) = taken {
        eprintln!("skipped: {addr} is taken, and sira without a config file listens there");
        return;
    }
    if std::path::Path::new("/etc/sira/sira.yaml").exists() {
        eprintln!("skipped: /etc/sira/sira.yaml exists, and sira would read it");
        return;
    }
    let log = run_without_config(
        &[("OPENAI_API_KEY", "sk-test"), ("GEMINI_API_KEY", "g-test")],
        "no config file:",
    );
    // JSON lines: the quotes in the list are escaped.
    assert!(log.contains("built-in default"), "{log}");
    assert!(log.contains(r#"openai (as \"openai/<model>\")"#), "{log}");
    assert!(log.contains(r#"gemini (as \"gemini/<model>\")"#), "{log}");
    assert!(!log.contains("anthropic (as"), "{log}");
    assert!(!log.contains("sk-test") && !log.contains("g-test"), "{log}");

    let log = run_without_config(&[], "no provider key in the environment");
    assert!(log.contains("no provider key in the environment"), "{log}");
    let warning = log
        .lines()
        .find(|line| line.contains("no provider key in the environment"))
        .unwrap();
    assert!(warning.contains(r#""level":"WARN""#), "{warning}");
}

/// Under systemd, stderr is the journal's stream (`JOURNAL_STREAM` names it): each line
/// carries its priority, so `journalctl -p warning` finds sira's warnings.
#[test]
fn lines_to_the_journal_carry_their_priority() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let file = config_that_warns(dir.path());
    let run = |journal: bool| {
        let log = dir.path().join(format!("stderr-{journal}.log"));
        let meta = std::fs::File::create(&log).unwrap().metadata().unwrap();
        let mut command = run_config(&file);
        if journal {
            command.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        }
        logged_until(command, &log, "no api_key")
    };
    let log = run(true);
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {log}"))
            .to_owned()
    };
    assert!(line("no api_key").starts_with("<4>"), "{log}");
    assert!(line("sira starting").starts_with("<6>"), "{log}");
    // Anywhere else (a shell's redirect, a file), plain lines.
    let log = run(false);
    assert!(log.contains("no api_key"), "{log}");
    assert!(log.lines().all(|l| !l.starts_with('<')), "{log}");
}
