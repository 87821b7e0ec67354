//! `sira reload --pid PID`: what `systemctl reload` runs. When the binary on disk is the one
//! PID runs, a SIGHUP reloads its config. When a package replaced it, the new binary takes
//! the listening sockets over without refusing a connection: it is started with `--upgrade`
//! (inside the unit, so it may become the unit's main process), and once it waits on the
//! hand-over socket the old process gets SIGQUIT, hands the sockets over and drains. The new
//! process tells systemd `MAINPID=` when it serves (`crate::notify`).

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the new process may take to open the hand-over socket.
const SOCKET_WAIT: Duration = Duration::from_secs(10);

/// What `sira reload` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Done {
    Reloaded,
    Upgraded { new_pid: u32 },
}

/// Reloads PID's config, or upgrades it to this binary when it runs another (`force`:
/// upgrade regardless).
pub fn reload_or_upgrade(
    pid: u32,
    config: Option<&Path>,
    upgrade_socket: &Path,
    force: bool,
) -> Result<Done, String> {
    let running = Path::new("/proc").join(pid.to_string()).join("exe");
    let running =
        std::fs::metadata(&running).map_err(|e| format!("no process {pid} to reload: {e}"))?;
    let this = std::env::current_exe().map_err(|e| format!("which binary is this: {e}"))?;
    let installed = std::fs::metadata(&this).map_err(|e| format!("{}: {e}", this.display()))?;
    let same = running.dev() == installed.dev() && running.ino() == installed.ino();
    if same && !force {
        signal(pid, "-HUP")?;
        return Ok(Done::Reloaded);
    }
    // A socket left by an earlier hand-over would make the old process hand its sockets to
    // nobody.
    match std::fs::remove_file(upgrade_socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", upgrade_socket.display())),
    }
    let mut command = Command::new(&this);
    command.args(["run", "--upgrade"]);
    if let Some(config) = config {
        command.arg("-c").arg(config);
    }
    let mut child = command
        .env("SIRA_UPGRADE_SOCK", upgrade_socket)
        .stdin(Stdio::null())
        // Its own process group: it outlives this command, which systemd waits for.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", this.display()))?;
    let new_pid = child.id();
    let deadline = Instant::now() + SOCKET_WAIT;
    while !upgrade_socket.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the new process exited ({status}): nothing changed"
            ));
        }
        if Instant::now() > deadline {
            let _ = signal(new_pid, "-KILL");
            return Err(format!(
                "the new process did not open {} within {}s: nothing changed",
                upgrade_socket.display(),
                SOCKET_WAIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(pid, "-QUIT")?;
    Ok(Done::Upgraded { new_pid })
}

fn signal(pid: u32, which: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .map_err(|e| format!("kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill {which} {pid} failed"))
    }
}

/// Where the hand-over socket is (`$SIRA_UPGRADE_SOCK`, else `/tmp/sira_upgrade.sock`).
pub fn socket_path() -> PathBuf {
    std::env::var_os("SIRA_UPGRADE_SOCK")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/sira_upgrade.sock"))
}
