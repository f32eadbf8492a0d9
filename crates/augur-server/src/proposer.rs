//! Group commit: concurrent writes are gathered into one Raft entry.
//!
//! openraft 0.9 flushes each append before starting the next, so one entry per client write
//! costs one fsync per write on every node. The proposer drains whatever writes queued up
//! while the previous entries were in flight and proposes them as one `Command::Batch`; each
//! caller still gets its own answer.

use std::sync::Arc;

use augur_proto::{not_leader_status, rejection_status};
use augur_store::Raft;
use augur_types::{Applied, Command, MAX_BATCH};
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::Status;

/// Writes waiting for a slot; beyond this callers wait (back-pressure, not an unbounded queue).
const QUEUE: usize = 4096;
/// Entries in flight at once: one being flushed, one gathering.
const IN_FLIGHT: usize = 2;
/// Payload gathered into one entry at most (state snapshots, models): past it the entry
/// closes, so one entry stays far below a Raft message's limit.
const MAX_ENTRY_PAYLOAD: usize = 4 << 20;

pub type WriteResult = Result<(u64, Applied), Status>;

struct Proposal {
    cmd: Command,
    reply: oneshot::Sender<WriteResult>,
}

/// A handle to the proposer task.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Proposal>,
}

impl Proposer {
    pub fn spawn(raft: Raft) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, rx));
        Self { tx }
    }

    /// Proposes `cmd`; answers the log index it was applied at and what it did.
    pub async fn write(&self, cmd: Command) -> WriteResult {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Proposal { cmd, reply })
            .await
            .map_err(|_| Status::unavailable("node is shutting down"))?;
        answer
            .await
            .map_err(|_| Status::unavailable("node is shutting down"))?
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Proposal>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // A proposal that is a batch itself goes alone (batches do not nest: the state machine
    // would refuse the whole entry, every caller in it); one met while gathering waits here
    // for the next entry.
    let mut held: Option<Proposal> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match held.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let batch = gather(first, &mut rx, &mut held);
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(slot);
        });
    }
}

/// One entry's proposals: `first`, then whatever is queued, up to [`MAX_BATCH`] commands and
/// [`MAX_ENTRY_PAYLOAD`] bytes of payload. A batch command goes alone; one met while
/// gathering, or one that would take the payload past the limit, is left in `held` for the
/// next entry.
fn gather(
    first: Proposal,
    rx: &mut mpsc::Receiver<Proposal>,
    held: &mut Option<Proposal>,
) -> Vec<Proposal> {
    let alone = matches!(first.cmd, Command::Batch(_));
    let mut payload = first.cmd.payload_bytes();
    let mut batch = vec![first];
    while !alone && batch.len() < MAX_BATCH && payload < MAX_ENTRY_PAYLOAD {
        match rx.try_recv() {
            Ok(p)
                if matches!(p.cmd, Command::Batch(_))
                    || payload + p.cmd.payload_bytes() > MAX_ENTRY_PAYLOAD =>
            {
                *held = Some(p);
                break;
            }
            Ok(p) => {
                payload += p.cmd.payload_bytes();
                batch.push(p);
            }
            Err(_) => break,
        }
    }
    batch
}

async fn commit(raft: &Raft, mut batch: Vec<Proposal>) {
    metrics::histogram!("augur_proposal_batch_size").record(batch.len() as f64);
    for p in &batch {
        metrics::counter!("augur_commands_total", "command" => p.cmd.name()).increment(1);
    }
    if batch.len() == 1 {
        let p = batch.pop().expect("one proposal");
        let res = raft.client_write(p.cmd).await;
        let reply = match res {
            Ok(resp) => answer(resp.log_id.index, resp.data),
            Err(e) => Err(raft_error_status(e)),
        };
        p.reply.send(reply).ok();
        return;
    }
    let (cmds, replies): (Vec<Command>, Vec<_>) =
        batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    match raft.client_write(Command::Batch(cmds)).await {
        Ok(resp) => match resp.data {
            Ok(Applied::Batch(results)) => {
                for (reply, res) in replies.into_iter().zip(results) {
                    reply.send(answer(resp.log_id.index, res)).ok();
                }
            }
            other => {
                let status = match other {
                    Err(r) => rejection_status(&r),
                    Ok(a) => Status::internal(format!("a batch answered {a:?}")),
                };
                for reply in replies {
                    reply.send(Err(status.clone())).ok();
                }
            }
        },
        Err(e) => {
            let status = raft_error_status(e);
            for reply in replies {
                reply.send(Err(status.clone())).ok();
            }
        }
    }
}

/// `UNAVAILABLE` naming the leader openraft says to forward to.
pub fn forward_status(f: &ForwardToLeader<u64, openraft::BasicNode>) -> Status {
    not_leader_status(
        f.leader_id
            .zip(f.leader_node.as_ref().map(|n| n.addr.as_str())),
    )
}

/// A command's answer from the state machine, as its caller sees it.
fn answer(index: u64, res: augur_store::CommandResult) -> WriteResult {
    res.map(|a| (index, a)).map_err(|r| rejection_status(&r))
}

/// A Raft write error as the client should see it.
pub fn raft_error_status(e: RaftError<u64, ClientWriteError<u64, openraft::BasicNode>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader_status(
            f.leader_id
                .zip(f.leader_node.as_ref().map(|n| n.addr.as_str())),
        ),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Status::failed_precondition(e.to_string())
        }
        RaftError::Fatal(e) => Status::unavailable(format!("raft stopped: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_types::ComponentId;

    fn proposal(cmd: Command) -> Proposal {
        Proposal {
            cmd,
            reply: oneshot::channel().0,
        }
    }

    fn remove(id: &str) -> Command {
        Command::RemoveComponent {
            id: ComponentId::new(id).unwrap(),
        }
    }

    fn names(batch: &[Proposal]) -> Vec<&'static str> {
        batch.iter().map(|p| p.cmd.name()).collect()
    }

    /// A batch command (the planner's scale step) never shares an entry: nested, the state
    /// machine would refuse the whole entry and every write grouped with it.
    #[test]
    fn a_batch_command_goes_alone_and_the_rest_group_around_it() {
        let (tx, mut rx) = mpsc::channel(16);
        for cmd in [
            remove("b"),
            Command::Batch(vec![remove("c")]),
            remove("d"),
            remove("e"),
        ] {
            tx.try_send(proposal(cmd)).unwrap();
        }
        let mut held = None;
        let first = proposal(remove("a"));
        assert_eq!(
            names(&gather(first, &mut rx, &mut held)),
            ["remove_component", "remove_component"]
        );
        let next = held.take().expect("the batch waits for the next entry");
        assert_eq!(names(&gather(next, &mut rx, &mut held)), ["batch"]);
        assert!(held.is_none());
        let first = rx.try_recv().unwrap();
        assert_eq!(
            names(&gather(first, &mut rx, &mut held)),
            ["remove_component", "remove_component"]
        );
    }

    /// Commands whose size is in their fields (a component's labels) count too: a thousand
    /// 1 MiB components would otherwise make one entry larger than any Raft message.
    #[test]
    fn large_components_close_an_entry_too() {
        let big = |i: usize| {
            Command::UpsertComponent(augur_types::Component {
                id: ComponentId::new(format!("c{i}")).unwrap(),
                class: "web".into(),
                group: "web".into(),
                criticality: 3,
                placement: augur_types::Placement {
                    host: "h".into(),
                    rack: "r".into(),
                    zone: "z".into(),
                },
                labels: [("blob".to_owned(), "x".repeat(1 << 20))].into(),
            })
        };
        let (tx, mut rx) = mpsc::channel(16);
        for i in 0..6 {
            tx.try_send(proposal(big(i))).unwrap();
        }
        let mut held = None;
        assert!(gather(proposal(big(99)), &mut rx, &mut held).len() <= 4);
    }

    /// Near-limit state snapshots are not gathered into one entry past 4 MiB of payload.
    #[test]
    fn an_entry_closes_at_its_payload_limit() {
        let put = |n: usize| Command::PutComponentState {
            component: ComponentId::new("a").unwrap(),
            state: augur_types::ComponentState {
                version: 1,
                bytes: vec![0; n],
                orchestrator: "o".into(),
                at_ms: 0,
            },
        };
        let (tx, mut rx) = mpsc::channel(16);
        for _ in 0..6 {
            tx.try_send(proposal(put(1 << 20))).unwrap();
        }
        let mut held = None;
        let first = proposal(put(1 << 20));
        assert_eq!(gather(first, &mut rx, &mut held).len(), 4, "4 MiB");
        let next = held.take().unwrap_or_else(|| rx.try_recv().unwrap());
        assert_eq!(gather(next, &mut rx, &mut held).len(), 3);
        // One more byte than fits: the next one waits.
        tx.try_send(proposal(put(1))).unwrap();
        let first = proposal(put(4 << 20));
        assert_eq!(gather(first, &mut rx, &mut held).len(), 1);
        assert!(held.take().or_else(|| rx.try_recv().ok()).is_some());
    }
}
