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
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(slot);
        });
    }
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
