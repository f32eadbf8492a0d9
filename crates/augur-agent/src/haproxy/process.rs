//! A real HAProxy as a child process, for tests, the demo and benches.
//!
//! `haproxy -f <dir>/haproxy.cfg -db` (foreground, no master-worker), stdout and stderr
//! appended to `<dir>/haproxy.log`, ready once the admin socket answers `show info` with the
//! child's own pid. [`HaproxyProcess::reload`] restarts it from the same file, which is
//! exactly what makes runtime-added servers vanish; the child is killed on drop.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::{HaproxyClient, HaproxyConfig, HaproxyError};

/// How long [`HaproxyProcess::start`] and [`HaproxyProcess::reload`] wait for the socket.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval while waiting for readiness (a bounded poll, not a guess at a duration).
const READY_POLL: Duration = Duration::from_millis(20);

/// Finds the haproxy binary: `$HAPROXY_BIN`, then `$PATH`, then `/usr/sbin/haproxy` and
/// `/usr/local/sbin/haproxy` (Debian installs it in `sbin`, often not in a user's `$PATH`).
pub fn find_haproxy() -> Result<PathBuf, HaproxyError> {
    if let Some(path) = std::env::var_os("HAPROXY_BIN") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
    }
    let in_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    in_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("haproxy"))
        .find(|p| p.is_file())
        .ok_or(HaproxyError::BinaryNotFound)
}

/// A running HAProxy owned by this process.
#[derive(Debug)]
pub struct HaproxyProcess {
    binary: PathBuf,
    config: HaproxyConfig,
    dir: PathBuf,
    cfg_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    client: HaproxyClient,
}

impl HaproxyProcess {
    /// Writes `<dir>/haproxy.cfg` from `config` (admin socket `<dir>/admin.sock`), starts
    /// HAProxy and waits until its socket answers.
    pub async fn start(config: HaproxyConfig, dir: &Path) -> Result<Self, HaproxyError> {
        let binary = find_haproxy()?;
        let socket = dir.join("admin.sock");
        let text = config
            .render(&socket)
            .map_err(HaproxyError::InvalidConfig)?;
        let cfg_path = dir.join("haproxy.cfg");
        std::fs::write(&cfg_path, text).map_err(|source| HaproxyError::Files {
            dir: dir.to_owned(),
            source,
        })?;
        let mut process = Self {
            binary,
            config,
            dir: dir.to_owned(),
            cfg_path,
            log_path: dir.join("haproxy.log"),
            child: None,
            client: HaproxyClient::new(socket),
        };
        process.spawn_and_wait().await?;
        Ok(process)
    }

    /// A client for this HAProxy's admin socket.
    pub fn client(&self) -> HaproxyClient {
        self.client.clone()
    }

    /// Where the HTTP frontend listens.
    pub fn frontend_addr(&self) -> SocketAddr {
        self.config.frontend
    }

    /// The configuration it runs.
    pub fn config(&self) -> &HaproxyConfig {
        &self.config
    }

    /// The running process's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Where HAProxy's output goes.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Stops HAProxy and starts it again from the same file: every runtime change is lost,
    /// as on a real reload. Returns once the new process answers on the socket.
    pub async fn reload(&mut self) -> Result<(), HaproxyError> {
        self.stop().await;
        self.spawn_and_wait().await
    }

    /// Kills HAProxy and waits for it to exit. Idempotent.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Err(error) = child.kill().await {
                tracing::warn!(%error, "killing haproxy");
            }
        }
        // A stale socket file would let a readiness probe reach nothing; HAProxy rebinds it.
        let _ = std::fs::remove_file(self.client.socket_path());
    }

    async fn spawn_and_wait(&mut self) -> Result<(), HaproxyError> {
        let files = |source| HaproxyError::Files {
            dir: self.dir.clone(),
            source,
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(files)?;
        let log_err = log.try_clone().map_err(files)?;
        let mut child = Command::new(&self.binary)
            .arg("-f")
            .arg(&self.cfg_path)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| self.start_error(format!("cannot run {}: {e}", self.binary.display())))?;
        let pid = child.id();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(self.start_error(format!("haproxy exited with {status}")));
            }
            match self.client.show_info().await {
                Ok(info) if Some(info.pid) == pid => break,
                Ok(_) | Err(_) if Instant::now() >= deadline => {
                    let _ = child.kill().await;
                    return Err(self.start_error(format!(
                        "admin socket {} did not answer within {READY_TIMEOUT:?}",
                        self.client.socket_path().display()
                    )));
                }
                Ok(_) | Err(_) => tokio::time::sleep(READY_POLL).await,
            }
        }
        tracing::info!(pid, frontend = %self.config.frontend, "haproxy started");
        self.child = Some(child);
        Ok(())
    }

    fn start_error(&self, reason: String) -> HaproxyError {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut text);
        }
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let log_tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        HaproxyError::Start {
            reason,
            log: self.log_path.clone(),
            log_tail,
        }
    }
}
