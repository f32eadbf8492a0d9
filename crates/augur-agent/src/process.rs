//! Service instances as child processes: the agent starts a shadow before shifting traffic
//! to it and stops the instances it retires.
//!
//! An instance is started from an [`InstanceSpec`] (argv with `{port}` and `{name}`
//! substituted), on a free port from the spec's range, in its own process group, and is
//! only handed back once `GET <health_path>` answers 200. Stopping sends SIGTERM to the
//! group, waits for a grace period, then SIGKILLs. A failed start names the instance, the
//! port and the last failure, or the exit status if the child died.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::http::{self, HttpResponse};

/// Poll interval of the health probe during a start (bounded by `start_timeout`).
const HEALTH_POLL: Duration = Duration::from_millis(25);

/// How to run one kind of service instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    /// argv; `{port}` and `{name}` are substituted in every element.
    pub command: Vec<String>,
    /// Extra environment variables (same substitution).
    pub env: Vec<(String, String)>,
    /// Inclusive range the port is picked from.
    pub port_range: (u16, u16),
    /// Path that answers 200 once the instance serves, e.g. `/health`.
    pub health_path: String,
    /// How long a start may take before it is abandoned.
    pub start_timeout: Duration,
    /// How long `stop` waits after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
}

impl InstanceSpec {
    /// A spec with `/health`, a 10 s start timeout, a 5 s stop grace and ports 20000..=29999.
    pub fn new(command: Vec<String>) -> Self {
        Self {
            command,
            env: Vec::new(),
            port_range: (20000, 29999),
            health_path: "/health".to_owned(),
            start_timeout: Duration::from_secs(10),
            stop_grace: Duration::from_secs(5),
        }
    }
}

/// A started instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub name: String,
    pub port: u16,
    pub pid: u32,
}

impl Instance {
    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `GET path` on the instance.
    pub async fn get(&self, path: &str) -> Result<HttpResponse, http::HttpError> {
        http::get(self.addr(), path).await
    }

    /// `POST path` on the instance.
    pub async fn post(
        &self,
        path: &str,
        body: impl Into<hyper::body::Bytes>,
    ) -> Result<HttpResponse, http::HttpError> {
        http::post(self.addr(), path, body).await
    }
}

/// Why an instance could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("invalid instance name {name:?}: only ASCII letters, digits, '-', '_' and '.'")]
    InvalidName { name: String },
    #[error("instance {name} already exists")]
    AlreadyExists { name: String },
    #[error("no instance named {name}")]
    NotFound { name: String },
    #[error("instance spec has an empty command")]
    EmptyCommand,
    #[error("instance {name}: no free port in {}..={}", .range.0, .range.1)]
    NoFreePort { name: String, range: (u16, u16) },
    #[error("instance {name}: cannot spawn {program:?}: {source}")]
    Spawn {
        name: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("instance {name} (port {port}) exited during start with {status}")]
    ExitedDuringStart {
        name: String,
        port: u16,
        status: ExitStatus,
    },
    #[error(
        "instance {name} (port {port}) not healthy after {timeout:?}; last failure: {last_failure}"
    )]
    StartTimeout {
        name: String,
        port: u16,
        timeout: Duration,
        last_failure: String,
    },
    #[error("instance {name}: waiting for exit: {source}")]
    Wait {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("instance {name} still running after {timeout:?}")]
    StillRunning { name: String, timeout: Duration },
}

/// A port on 127.0.0.1 for a listener another process opens later, reserved to this
/// process until it exits ([`crate::ports::reserve_local_ports`]).
pub fn free_local_port() -> std::io::Result<u16> {
    Ok(crate::ports::reserve_local_ports(1)?[0])
}

#[derive(Debug)]
struct Running {
    instance: Instance,
    child: Child,
}

/// The instances of one spec, by name. Every child is killed (with its process group) when
/// this is dropped.
#[derive(Debug)]
pub struct Instances {
    spec: InstanceSpec,
    running: BTreeMap<String, Running>,
    next_port: u16,
}

fn substitute(s: &str, name: &str, port: u16) -> String {
    s.replace("{port}", &port.to_string())
        .replace("{name}", name)
}

fn validate_name(name: &str) -> Result<(), ProcessError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ProcessError::InvalidName {
            name: name.to_owned(),
        })
    }
}

fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        // ESRCH (group already gone) is the expected race; nothing to do about others either.
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

impl Instances {
    /// No instances yet.
    pub fn new(spec: InstanceSpec) -> Self {
        let next_port = spec.port_range.0;
        Self {
            spec,
            running: BTreeMap::new(),
            next_port,
        }
    }

    /// The spec instances are started from.
    pub fn spec(&self) -> &InstanceSpec {
        &self.spec
    }

    /// A port in the range that no instance of ours holds and that binds right now. The
    /// search starts after the last port handed out, so a just-stopped instance's port is
    /// not reused at once.
    fn pick_port(&mut self, name: &str) -> Result<u16, ProcessError> {
        let (lo, hi) = self.spec.port_range;
        let span = u32::from(hi.saturating_sub(lo)) + 1;
        let start = self.next_port.clamp(lo, hi);
        for offset in 0..span {
            let port = lo + ((u32::from(start - lo) + offset) % span) as u16;
            if self.running.values().any(|r| r.instance.port == port) {
                continue;
            }
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                self.next_port = if port == hi { lo } else { port + 1 };
                return Ok(port);
            }
        }
        Err(ProcessError::NoFreePort {
            name: name.to_owned(),
            range: self.spec.port_range,
        })
    }

    /// Starts instance `name` and waits until its health path answers 200.
    pub async fn start(&mut self, name: &str) -> Result<Instance, ProcessError> {
        validate_name(name)?;
        if self.running.contains_key(name) {
            return Err(ProcessError::AlreadyExists {
                name: name.to_owned(),
            });
        }
        if self.spec.command.is_empty() {
            return Err(ProcessError::EmptyCommand);
        }
        let port = self.pick_port(name)?;
        let (program, args) = self
            .spec
            .command
            .split_first()
            .ok_or(ProcessError::EmptyCommand)?;
        let program = substitute(program, name, port);
        let mut command = Command::new(&program);
        command
            .args(args.iter().map(|a| substitute(a, name, port)))
            .envs(
                self.spec
                    .env
                    .iter()
                    .map(|(k, v)| (k, substitute(v, name, port))),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .process_group(0);
        let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
            name: name.to_owned(),
            program: program.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        let instance = Instance {
            name: name.to_owned(),
            port,
            pid,
        };
        tracing::info!(name, port, pid, "instance spawned");
        if let Err(error) = self.wait_healthy(&instance, &mut child).await {
            signal_group(pid, Signal::SIGKILL);
            let _ = child.kill().await;
            return Err(error);
        }
        self.running.insert(
            name.to_owned(),
            Running {
                instance: instance.clone(),
                child,
            },
        );
        Ok(instance)
    }

    async fn wait_healthy(
        &self,
        instance: &Instance,
        child: &mut Child,
    ) -> Result<(), ProcessError> {
        let timeout = self.spec.start_timeout;
        let deadline = Instant::now() + timeout;
        let mut last_failure = String::from("no probe answered yet");
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(ProcessError::ExitedDuringStart {
                    name: instance.name.clone(),
                    port: instance.port,
                    status,
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ProcessError::StartTimeout {
                    name: instance.name.clone(),
                    port: instance.port,
                    timeout,
                    last_failure,
                });
            }
            let probe = http::request(
                instance.addr(),
                hyper::Method::GET,
                &self.spec.health_path,
                hyper::body::Bytes::new(),
                left.min(Duration::from_secs(1)),
            )
            .await;
            match probe {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => last_failure = format!("{} answered {}", self.spec.health_path, r.status),
                Err(e) => last_failure = e.to_string(),
            }
            tokio::time::sleep(HEALTH_POLL.min(deadline.saturating_duration_since(Instant::now())))
                .await;
        }
    }

    /// SIGTERM to the instance's process group, up to `stop_grace` for it to exit, then
    /// SIGKILL. Returns how it exited.
    pub async fn stop(&mut self, name: &str) -> Result<ExitStatus, ProcessError> {
        let mut running = self
            .running
            .remove(name)
            .ok_or_else(|| ProcessError::NotFound {
                name: name.to_owned(),
            })?;
        let pid = running.instance.pid;
        signal_group(pid, Signal::SIGTERM);
        let wait = |source| ProcessError::Wait {
            name: name.to_owned(),
            source,
        };
        let status = match tokio::time::timeout(self.spec.stop_grace, running.child.wait()).await {
            Ok(status) => status.map_err(wait)?,
            Err(_) => {
                tracing::warn!(name, pid, grace = ?self.spec.stop_grace, "instance ignored SIGTERM; killing");
                running.child.kill().await.map_err(wait)?;
                running.child.wait().await.map_err(wait)?
            }
        };
        // Whatever the instance left behind in its group goes too.
        signal_group(pid, Signal::SIGKILL);
        tracing::info!(name, pid, %status, "instance stopped");
        Ok(status)
    }

    /// Waits up to `timeout` for instance `name` to exit by itself (e.g. after a crash fault)
    /// and forgets it.
    pub async fn wait_exit(
        &mut self,
        name: &str,
        timeout: Duration,
    ) -> Result<ExitStatus, ProcessError> {
        let running = self
            .running
            .get_mut(name)
            .ok_or_else(|| ProcessError::NotFound {
                name: name.to_owned(),
            })?;
        let status = match tokio::time::timeout(timeout, running.child.wait()).await {
            Ok(status) => status.map_err(|source| ProcessError::Wait {
                name: name.to_owned(),
                source,
            })?,
            Err(_) => {
                return Err(ProcessError::StillRunning {
                    name: name.to_owned(),
                    timeout,
                })
            }
        };
        if let Some(r) = self.running.remove(name) {
            signal_group(r.instance.pid, Signal::SIGKILL);
        }
        Ok(status)
    }

    /// Whether instance `name` is known and its process has not exited.
    pub fn is_alive(&mut self, name: &str) -> bool {
        self.running
            .get_mut(name)
            .is_some_and(|r| matches!(r.child.try_wait(), Ok(None)))
    }

    /// The instance named `name`, alive or not.
    pub fn get(&self, name: &str) -> Option<&Instance> {
        self.running.get(name).map(|r| &r.instance)
    }

    /// All known instances, by name.
    pub fn list(&self) -> Vec<Instance> {
        self.running.values().map(|r| r.instance.clone()).collect()
    }

    /// Stops every instance (SIGTERM, grace, SIGKILL), returning the first error.
    pub async fn stop_all(&mut self) -> Result<(), ProcessError> {
        let names: Vec<String> = self.running.keys().cloned().collect();
        let mut first = Ok(());
        for name in names {
            if let Err(e) = self.stop(&name).await {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

impl Drop for Instances {
    fn drop(&mut self) {
        // `kill_on_drop` kills each child; this also reaches anything it forked.
        for r in self.running.values() {
            signal_group(r.instance.pid, Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_name_and_port() {
        assert_eq!(
            substitute("--listen=127.0.0.1:{port}/{name}", "web-1", 8080),
            "--listen=127.0.0.1:8080/web-1"
        );
    }

    #[test]
    fn rejects_bad_names() {
        for bad in ["", "a b", "a/b", "{port}"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name("shadow-1.a_b").is_ok());
    }

    #[test]
    fn picks_ports_in_range_and_skips_taken_ones() {
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        let mut only_taken = Instances::new(InstanceSpec {
            port_range: (port, port),
            ..InstanceSpec::new(vec!["true".into()])
        });
        let err = only_taken.pick_port("x").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("instance x: no free port in {port}..={port}")
        );
        drop(held);
        assert_eq!(only_taken.pick_port("x").unwrap(), port);
    }
}
