//! Stamps the binary with the git revision it was built from (`sira --version`), or with
//! `SIRA_GIT_REVISION` when set (a build from a source archive), else "unknown".

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

/// Watched only if it exists: cargo reruns a build script whose watched path is missing on
/// every build, and so rebuilds sira each time.
fn watch(path: &str) {
    if Path::new(path).exists() {
        println!("cargo:rerun-if-changed={path}");
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=SIRA_GIT_REVISION");
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    // Only this checkout's own history: a source archive unpacked inside another
    // repository must not take that repository's revision.
    let own_checkout = git(&["rev-parse", "--show-toplevel"]).is_some_and(|top| {
        Path::new(&top).canonicalize().ok() == Path::new(&manifest).canonicalize().ok()
    });
    let revision = std::env::var("SIRA_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            own_checkout
                .then(|| git(&["rev-parse", "--short=12", "HEAD"]))
                .flatten()
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=SIRA_GIT_REVISION={revision}");
    if own_checkout {
        // Built again when HEAD moves (a commit, a checkout), not on every source change.
        // The branch's loose ref may appear only with the next commit (after a `git gc`
        // packed it): its directory is watched too.
        for name in ["HEAD", "packed-refs", "refs/heads"] {
            if let Some(path) = git(&["rev-parse", "--git-path", name]) {
                watch(&path);
            }
        }
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            if let Some(path) = git(&["rev-parse", "--git-path", &branch]) {
                watch(&path);
            }
        }
    }
}
