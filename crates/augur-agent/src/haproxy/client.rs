//! The runtime API client: one unix-socket connection per command, `cmd\n` written, the
//! answer read to EOF (HAProxy closes a non-interactive session after one command), the
//! whole exchange under a deadline. Names are validated before anything is sent, so a
//! crafted name cannot smuggle a second command (`;`, newline) or address another server
//! (`/`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::parse::{parse_info, parse_servers_state, parse_show_stat, parse_weight};
use super::{HaproxyError, HealthCheck, Info, ServerStat, ServerState, State, Weight};

/// How a server is added at runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// 0..=256.
    pub weight: u16,
    /// Health checks for this server; the backend must have `option httpchk` for HTTP ones.
    pub check: Option<HealthCheck>,
}

impl ServerOptions {
    /// A server with `weight` and no health checks.
    pub fn weight(weight: u16) -> Self {
        Self {
            weight,
            check: None,
        }
    }
}

/// A client for HAProxy's admin socket. Cheap to clone; holds no connection.
#[derive(Debug, Clone)]
pub struct HaproxyClient {
    socket: PathBuf,
    timeout: Duration,
}

/// Names HAProxy accepts for proxies and servers: ASCII letters, digits, `-_.:`.
pub(crate) fn validate_name(what: &'static str, name: &str) -> Result<(), HaproxyError> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > 64 {
        Some("must be at most 64 bytes")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        Some("only ASCII letters, digits, '-', '_', '.' and ':' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(HaproxyError::InvalidName {
            what,
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn server_ref(backend: &str, server: &str) -> Result<String, HaproxyError> {
    validate_name("backend", backend)?;
    validate_name("server", server)?;
    Ok(format!("{backend}/{server}"))
}

fn check_weight(backend: &str, server: &str, weight: u16) -> Result<(), HaproxyError> {
    if weight > 256 {
        return Err(HaproxyError::InvalidWeight {
            backend: backend.to_owned(),
            server: server.to_owned(),
            weight,
        });
    }
    Ok(())
}

/// Accepts `answer` if, trimmed, it is one of `ok` (the empty string for the many commands
/// that answer nothing on success); otherwise HAProxy's message becomes the error.
fn expect(command: &str, answer: &str, ok: &[&str]) -> Result<(), HaproxyError> {
    let message = answer.trim();
    if ok.contains(&message) {
        Ok(())
    } else {
        Err(HaproxyError::Rejected {
            command: command.to_owned(),
            message: message.to_owned(),
        })
    }
}

impl HaproxyClient {
    /// A client for the admin socket at `socket`, with a 5 s deadline per command.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: Duration::from_secs(5),
        }
    }

    /// Replaces the per-command deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The admin socket's path.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Sends one command and returns HAProxy's raw answer. The command must be one line.
    pub async fn raw(&self, command: &str) -> Result<String, HaproxyError> {
        if command.contains(['\n', '\r']) {
            return Err(HaproxyError::InvalidName {
                what: "command",
                name: command.to_owned(),
                reason: "must be a single line",
            });
        }
        let io = |source| HaproxyError::Io {
            path: self.socket.clone(),
            command: command.to_owned(),
            source,
        };
        let exchange = async {
            let mut stream = UnixStream::connect(&self.socket).await.map_err(io)?;
            stream
                .write_all(format!("{command}\n").as_bytes())
                .await
                .map_err(io)?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.map_err(io)?;
            Ok(String::from_utf8_lossy(&answer).into_owned())
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(HaproxyError::Timeout {
                path: self.socket.clone(),
                command: command.to_owned(),
                timeout: self.timeout,
            }),
        }
    }

    async fn run_expecting(&self, command: &str, ok: &[&str]) -> Result<(), HaproxyError> {
        let answer = self.raw(command).await?;
        tracing::debug!(command, answer = answer.trim(), "haproxy runtime api");
        expect(command, &answer, ok)
    }

    /// `add server B/S ADDR weight W`: the server starts in maintenance (HAProxy 2.6).
    pub async fn add_server(
        &self,
        backend: &str,
        server: &str,
        addr: SocketAddr,
        weight: u16,
    ) -> Result<(), HaproxyError> {
        self.add_server_with(backend, server, addr, &ServerOptions::weight(weight))
            .await
    }

    /// `add server` with health checks when `options.check` is set. The server starts in
    /// maintenance with its checks disabled.
    pub async fn add_server_with(
        &self,
        backend: &str,
        server: &str,
        addr: SocketAddr,
        options: &ServerOptions,
    ) -> Result<(), HaproxyError> {
        let target = server_ref(backend, server)?;
        check_weight(backend, server, options.weight)?;
        let mut command = format!("add server {target} {addr} weight {}", options.weight);
        if let Some(check) = &options.check {
            command.push(' ');
            command.push_str(&check.keywords());
        }
        self.run_expecting(&command, &["New server registered."])
            .await
    }

    /// Adds a server and puts it in rotation: `add server`, `enable health` when checks are
    /// configured, then `set server … state ready`.
    pub async fn add_ready_server(
        &self,
        backend: &str,
        server: &str,
        addr: SocketAddr,
        options: &ServerOptions,
    ) -> Result<(), HaproxyError> {
        self.add_server_with(backend, server, addr, options).await?;
        if options.check.is_some() {
            self.enable_health(backend, server).await?;
        }
        self.set_state(backend, server, State::Ready).await
    }

    /// `enable health B/S`: starts the health checks of a server that has them configured.
    pub async fn enable_health(&self, backend: &str, server: &str) -> Result<(), HaproxyError> {
        let target = server_ref(backend, server)?;
        self.run_expecting(&format!("enable health {target}"), &[""])
            .await
    }

    /// Puts the server in maintenance, then `del server B/S`.
    pub async fn del_server(&self, backend: &str, server: &str) -> Result<(), HaproxyError> {
        self.set_state(backend, server, State::Maint).await?;
        let target = server_ref(backend, server)?;
        self.run_expecting(&format!("del server {target}"), &["Server deleted."])
            .await
    }

    /// `set server B/S weight W`, W within 0..=256.
    pub async fn set_weight(
        &self,
        backend: &str,
        server: &str,
        weight: u16,
    ) -> Result<(), HaproxyError> {
        let target = server_ref(backend, server)?;
        check_weight(backend, server, weight)?;
        self.run_expecting(&format!("set server {target} weight {weight}"), &[""])
            .await
    }

    /// `get weight B/S`.
    pub async fn get_weight(&self, backend: &str, server: &str) -> Result<Weight, HaproxyError> {
        let command = format!("get weight {}", server_ref(backend, server)?);
        let answer = self.raw(&command).await?;
        parse_weight(&command, &answer)
    }

    /// `set server B/S state ready|drain|maint`.
    pub async fn set_state(
        &self,
        backend: &str,
        server: &str,
        state: State,
    ) -> Result<(), HaproxyError> {
        let target = server_ref(backend, server)?;
        self.run_expecting(&format!("set server {target} state {state}"), &[""])
            .await
    }

    /// `show stat`: every frontend, backend and server row.
    pub async fn show_stat(&self) -> Result<Vec<ServerStat>, HaproxyError> {
        let command = "show stat";
        let answer = self.raw(command).await?;
        parse_show_stat(command, &answer)
    }

    /// `show info`: pid and uptime, to notice a reload.
    pub async fn show_info(&self) -> Result<Info, HaproxyError> {
        let command = "show info";
        let answer = self.raw(command).await?;
        parse_info(command, &answer)
    }

    /// `show servers state B`: the servers of a backend with address, weight and state.
    pub async fn servers(&self, backend: &str) -> Result<Vec<ServerState>, HaproxyError> {
        validate_name("backend", backend)?;
        let command = format!("show servers state {backend}");
        let answer = self.raw(&command).await?;
        parse_servers_state(&command, &answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_name("server", "web-1_a.b:c").is_ok());
        for bad in ["", "a b", "a/b", "a\nb", "a;b", "é"] {
            let err = validate_name("server", bad).unwrap_err();
            assert!(matches!(err, HaproxyError::InvalidName { .. }), "{bad:?}");
        }
        assert_eq!(
            validate_name("server", "a b").unwrap_err().to_string(),
            "invalid server name \"a b\": only ASCII letters, digits, '-', '_', '.' and ':' are allowed"
        );
    }

    #[test]
    fn answers_are_classified() {
        assert!(expect("set server app/s1 weight 3", "\n", &[""]).is_ok());
        assert!(expect(
            "add server app/x 1.2.3.4:5",
            "New server registered.\n\n",
            &["New server registered."]
        )
        .is_ok());
        let err = expect("set server app/nope weight 3", "No such server.\n\n", &[""]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "haproxy rejected `set server app/nope weight 3`: No such server."
        );
    }

    #[tokio::test]
    async fn bad_input_is_refused_before_connecting() {
        let client = HaproxyClient::new("/nonexistent/admin.sock");
        let err = client.set_weight("app", "s1", 257).await.unwrap_err();
        assert!(matches!(
            err,
            HaproxyError::InvalidWeight { weight: 257, .. }
        ));
        let err = client
            .set_state("app", "s 1", State::Ready)
            .await
            .unwrap_err();
        assert!(matches!(err, HaproxyError::InvalidName { .. }));
        let err = client.raw("show info\nshow stat").await.unwrap_err();
        assert!(matches!(
            err,
            HaproxyError::InvalidName {
                what: "command",
                ..
            }
        ));
        let err = client.show_info().await.unwrap_err();
        assert!(err.is_retriable(), "{err}");
    }
}
