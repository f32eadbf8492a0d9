use std::io::Cursor;

use augur_types::{Applied, Command, Rejection};

/// What applying a command answered: typed, and the same on every replica.
pub type CommandResult = Result<Applied, Rejection>;

openraft::declare_raft_types!(
    /// Augur's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
);

/// An Augur Raft node.
pub type Raft = openraft::Raft<TypeConfig>;
