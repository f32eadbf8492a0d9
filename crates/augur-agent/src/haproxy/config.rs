//! The small HAProxy configuration [`super::HaproxyProcess`] runs: one HTTP frontend on
//! 127.0.0.1, one `balance roundrobin` backend (a dynamic algorithm, so servers can be added
//! and re-weighted at runtime), an admin stats socket, and optional HTTP health checks.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::client::validate_name;
use super::HaproxyError;

/// HTTP health-check settings, for static servers and for servers added at runtime (which
/// in HAProxy 2.6 ignore `default-server`, so these are written out on every `add server`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Interval between checks (`inter`).
    pub inter: Duration,
    /// Consecutive failures before DOWN (`fall`).
    pub fall: u32,
    /// Consecutive successes before UP (`rise`).
    pub rise: u32,
}

impl Default for HealthCheck {
    /// `check inter 1s fall 3 rise 2`: the reactive baseline Augur is compared with.
    fn default() -> Self {
        Self {
            inter: Duration::from_secs(1),
            fall: 3,
            rise: 2,
        }
    }
}

impl HealthCheck {
    /// The server keywords, e.g. `check inter 1000ms fall 3 rise 2`.
    pub fn keywords(&self) -> String {
        format!(
            "check inter {}ms fall {} rise {}",
            self.inter.as_millis().max(1),
            self.fall.max(1),
            self.rise.max(1)
        )
    }
}

/// A server written into the configuration file (survives reloads, unlike runtime ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticServer {
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u16,
}

/// What [`super::HaproxyProcess`] writes to `haproxy.cfg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyConfig {
    /// Where the HTTP frontend listens.
    pub frontend: SocketAddr,
    /// The backend's name (`app` by default).
    pub backend: String,
    /// Servers in the file.
    pub servers: Vec<StaticServer>,
    /// Health checks on every server (`option httpchk GET <health_path>`), or none.
    pub health_check: Option<HealthCheck>,
    /// Path the health check requests.
    pub health_path: String,
    /// `retries N`; `None` leaves HAProxy's default (3 connection retries, same server).
    pub retries: Option<u32>,
    /// `option redispatch`: retry a failed connection on another server. Off by default, so
    /// a dying server's failures are visible to clients, as in the reactive baseline.
    pub redispatch: bool,
    pub timeout_connect: Duration,
    pub timeout_client: Duration,
    pub timeout_server: Duration,
}

impl HaproxyConfig {
    /// Frontend on `127.0.0.1:frontend_port`, backend `app`, no servers, no checks.
    pub fn new(frontend_port: u16) -> Self {
        Self {
            frontend: SocketAddr::from(([127, 0, 0, 1], frontend_port)),
            backend: "app".to_owned(),
            servers: Vec::new(),
            health_check: None,
            health_path: "/health".to_owned(),
            retries: None,
            redispatch: false,
            timeout_connect: Duration::from_secs(2),
            timeout_client: Duration::from_secs(30),
            timeout_server: Duration::from_secs(30),
        }
    }

    /// Adds a static server.
    pub fn server(mut self, name: impl Into<String>, addr: SocketAddr, weight: u16) -> Self {
        self.servers.push(StaticServer {
            name: name.into(),
            addr,
            weight,
        });
        self
    }

    /// Enables HTTP health checks on every server.
    pub fn with_health_check(mut self, check: HealthCheck) -> Self {
        self.health_check = Some(check);
        self
    }

    /// Renders the file, with the admin socket at `socket`. Every bad name or weight is
    /// reported at once.
    pub fn render(&self, socket: &Path) -> Result<String, Vec<HaproxyError>> {
        let mut errors = Vec::new();
        if let Err(e) = validate_name("backend", &self.backend) {
            errors.push(e);
        }
        for s in &self.servers {
            if let Err(e) = validate_name("server", &s.name) {
                errors.push(e);
            }
            if s.weight > 256 {
                errors.push(HaproxyError::InvalidWeight {
                    backend: self.backend.clone(),
                    server: s.name.clone(),
                    weight: s.weight,
                });
            }
        }
        if self.health_path.is_empty()
            || !self.health_path.starts_with('/')
            || self
                .health_path
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            errors.push(HaproxyError::InvalidName {
                what: "health path",
                name: self.health_path.clone(),
                reason: "must start with '/' and contain no whitespace",
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let ms = |d: Duration| d.as_millis().max(1);
        let mut cfg = String::new();
        // `write!` to a String cannot fail.
        let _ = write!(
            cfg,
            "# Written by augur-agent's HaproxyProcess.\n\
             global\n    stats socket {socket} level admin\n    stats timeout 30s\n\n\
             defaults\n    mode http\n    timeout connect {connect}ms\n    \
             timeout client {client}ms\n    timeout server {server}ms\n",
            socket = socket.display(),
            connect = ms(self.timeout_connect),
            client = ms(self.timeout_client),
            server = ms(self.timeout_server),
        );
        if let Some(retries) = self.retries {
            let _ = writeln!(cfg, "    retries {retries}");
        }
        if self.redispatch {
            cfg.push_str("    option redispatch\n");
        }
        let _ = write!(
            cfg,
            "\nfrontend fe\n    bind {frontend}\n    default_backend {backend}\n\n\
             backend {backend}\n    balance roundrobin\n",
            frontend = self.frontend,
            backend = self.backend,
        );
        if self.health_check.is_some() {
            let _ = writeln!(cfg, "    option httpchk GET {}", self.health_path);
        }
        for s in &self.servers {
            let _ = write!(cfg, "    server {} {} weight {}", s.name, s.addr, s.weight);
            if let Some(check) = &self.health_check {
                let _ = write!(cfg, " {}", check.keywords());
            }
            cfg.push('\n');
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_checks_and_servers() {
        let cfg = HaproxyConfig::new(8080)
            .server("s1", "127.0.0.1:9001".parse().unwrap(), 10)
            .with_health_check(HealthCheck::default())
            .render(Path::new("/tmp/x/admin.sock"))
            .unwrap();
        assert!(cfg.contains("stats socket /tmp/x/admin.sock level admin"));
        assert!(cfg.contains("bind 127.0.0.1:8080"));
        assert!(cfg.contains("balance roundrobin"));
        assert!(cfg.contains("option httpchk GET /health"));
        assert!(cfg.contains("server s1 127.0.0.1:9001 weight 10 check inter 1000ms fall 3 rise 2"));
        assert!(!cfg.contains("redispatch"));
        assert!(!cfg.contains("retries"));
    }

    #[test]
    fn reports_every_bad_name_at_once() {
        let mut cfg = HaproxyConfig::new(8080)
            .server("bad name", "127.0.0.1:9001".parse().unwrap(), 10)
            .server("ok", "127.0.0.1:9002".parse().unwrap(), 300);
        cfg.backend = "a/b".to_owned();
        let errors = cfg.render(Path::new("/tmp/s")).unwrap_err();
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(messages[0].starts_with("invalid backend name \"a/b\""));
        assert!(messages[1].starts_with("invalid server name \"bad name\""));
        assert_eq!(
            messages[2],
            "invalid weight 300 for a/b/ok: must be within 0..=256"
        );
    }
}
