//! The servers the agent wants in a backend, and the reconciliation that makes HAProxy match.
//!
//! HAProxy keeps runtime changes (added servers, weights, states) in memory only: a reload
//! restarts from the file. The agent therefore records every change here first and calls
//! [`Desired::reconcile`] after it notices a reload (a new pid in `show info`) or
//! periodically. Planning ([`Desired::plan`]) is pure and unit-tested; `reconcile` only
//! executes the plan.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use super::{HaproxyClient, HaproxyError, HealthCheck, ServerOptions, ServerState, State};

/// How one server should look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DesiredServer {
    pub addr: SocketAddr,
    /// 0..=256.
    pub weight: u16,
    pub state: State,
}

/// One step towards the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The server is missing: add it with its weight, checks and state.
    Add { name: String, server: DesiredServer },
    /// The server exists at another address: delete and add it again.
    Readdress { name: String, server: DesiredServer },
    /// `set server … weight`.
    SetWeight { name: String, weight: u16 },
    /// `set server … state`.
    SetState { name: String, state: State },
    /// The server was removed from the desired state but is still there.
    Delete { name: String },
}

/// The servers the agent manages in one backend. Servers it does not know about (e.g. the
/// static ones from the file) are left alone, unless [`Desired::remove`]d explicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    backend: String,
    check: Option<HealthCheck>,
    servers: BTreeMap<String, DesiredServer>,
    removed: BTreeSet<String>,
}

impl Desired {
    /// Nothing desired yet in `backend`; servers are added without health checks.
    pub fn new(backend: impl Into<String>) -> Self {
        Self {
            backend: backend.into(),
            check: None,
            servers: BTreeMap::new(),
            removed: BTreeSet::new(),
        }
    }

    /// Servers this state adds get these health checks.
    pub fn with_health_check(mut self, check: HealthCheck) -> Self {
        self.check = Some(check);
        self
    }

    /// The backend.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Wants `name` to look like `server`.
    pub fn set(&mut self, name: impl Into<String>, server: DesiredServer) {
        let name = name.into();
        self.removed.remove(&name);
        self.servers.insert(name, server);
    }

    /// Changes the wanted weight; false if `name` is not managed.
    pub fn set_weight(&mut self, name: &str, weight: u16) -> bool {
        self.servers
            .get_mut(name)
            .map(|s| s.weight = weight)
            .is_some()
    }

    /// Changes the wanted state; false if `name` is not managed.
    pub fn set_state(&mut self, name: &str, state: State) -> bool {
        self.servers
            .get_mut(name)
            .map(|s| s.state = state)
            .is_some()
    }

    /// Wants `name` gone.
    pub fn remove(&mut self, name: &str) {
        self.servers.remove(name);
        self.removed.insert(name.to_owned());
    }

    /// The wanted look of `name`.
    pub fn get(&self, name: &str) -> Option<&DesiredServer> {
        self.servers.get(name)
    }

    /// The managed servers, by name.
    pub fn servers(&self) -> impl Iterator<Item = (&str, &DesiredServer)> {
        self.servers.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// The actions that turn `actual` (from `show servers state`) into the desired state.
    pub fn plan(&self, actual: &[ServerState]) -> Vec<Action> {
        let actual: BTreeMap<&str, &ServerState> =
            actual.iter().map(|s| (s.name.as_str(), s)).collect();
        let mut actions = Vec::new();
        for (name, want) in &self.servers {
            let name = name.clone();
            match actual.get(name.as_str()) {
                None => actions.push(Action::Add {
                    name,
                    server: *want,
                }),
                Some(have) if have.addr != want.addr => actions.push(Action::Readdress {
                    name,
                    server: *want,
                }),
                Some(have) => {
                    if have.weight != want.weight {
                        actions.push(Action::SetWeight {
                            name: name.clone(),
                            weight: want.weight,
                        });
                    }
                    if have.state() != want.state {
                        actions.push(Action::SetState {
                            name,
                            state: want.state,
                        });
                    }
                }
            }
        }
        for name in &self.removed {
            if actual.contains_key(name.as_str()) {
                actions.push(Action::Delete { name: name.clone() });
            }
        }
        actions
    }

    /// Reads the backend's servers, applies [`Desired::plan`] and returns what it did.
    pub async fn reconcile(&self, client: &HaproxyClient) -> Result<Vec<Action>, HaproxyError> {
        let actual = client.servers(&self.backend).await?;
        let actions = self.plan(&actual);
        for action in &actions {
            tracing::info!(backend = %self.backend, ?action, "reconciling haproxy");
            self.apply(client, action).await?;
        }
        Ok(actions)
    }

    async fn apply(&self, client: &HaproxyClient, action: &Action) -> Result<(), HaproxyError> {
        let backend = self.backend.as_str();
        match action {
            Action::Add { name, server } => self.add(client, name, server).await,
            Action::Readdress { name, server } => {
                client.del_server(backend, name).await?;
                self.add(client, name, server).await
            }
            Action::SetWeight { name, weight } => client.set_weight(backend, name, *weight).await,
            Action::SetState { name, state } => client.set_state(backend, name, *state).await,
            Action::Delete { name } => client.del_server(backend, name).await,
        }
    }

    async fn add(
        &self,
        client: &HaproxyClient,
        name: &str,
        server: &DesiredServer,
    ) -> Result<(), HaproxyError> {
        let options = ServerOptions {
            weight: server.weight,
            check: self.check.clone(),
        };
        client
            .add_server_with(&self.backend, name, server.addr, &options)
            .await?;
        if options.check.is_some() {
            client.enable_health(&self.backend, name).await?;
        }
        if server.state != State::Maint {
            client.set_state(&self.backend, name, server.state).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::OpState;
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn have(name: &str, port: u16, weight: u16, admin_flags: u32) -> ServerState {
        ServerState {
            backend: "app".into(),
            name: name.into(),
            addr: addr(port),
            op_state: OpState::Running,
            admin_flags,
            weight,
            initial_weight: weight,
        }
    }

    fn want(port: u16, weight: u16, state: State) -> DesiredServer {
        DesiredServer {
            addr: addr(port),
            weight,
            state,
        }
    }

    #[test]
    fn plan_adds_missing_and_fixes_drift() {
        let mut desired = Desired::new("app");
        desired.set("a", want(1, 10, State::Ready));
        desired.set("b", want(2, 20, State::Drain));
        desired.set("c", want(3, 5, State::Ready));
        desired.set("d", want(4, 5, State::Ready));
        desired.remove("old");
        let actual = [
            have("static", 9, 1, 0),
            have("b", 2, 7, 0),
            have("c", 33, 5, 0),
            have("d", 4, 5, 0),
            have("old", 8, 1, 0),
        ];
        assert_eq!(
            desired.plan(&actual),
            [
                Action::Add {
                    name: "a".into(),
                    server: want(1, 10, State::Ready)
                },
                Action::SetWeight {
                    name: "b".into(),
                    weight: 20
                },
                Action::SetState {
                    name: "b".into(),
                    state: State::Drain
                },
                Action::Readdress {
                    name: "c".into(),
                    server: want(3, 5, State::Ready)
                },
                Action::Delete { name: "old".into() },
            ]
        );
    }

    #[test]
    fn plan_is_empty_when_in_sync_and_re_adding_cancels_removal() {
        let mut desired = Desired::new("app");
        desired.remove("a");
        desired.set("a", want(1, 10, State::Maint));
        assert!(desired.plan(&[have("a", 1, 10, 0x01)]).is_empty());
        assert!(desired.set_weight("a", 3));
        assert!(!desired.set_state("zz", State::Drain));
    }
}
