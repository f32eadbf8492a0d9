use thiserror::Error;

/// Why a graph operation was refused. Nothing is changed when one is returned.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum GraphError {
    #[error("component name {0:?} is empty or longer than 253 bytes")]
    BadName(String),
    #[error("edge {0} -> {0} is a self loop")]
    SelfLoop(String),
    #[error("edge {from} -> {to} has strength {strength}; it must be within [0, 1]")]
    BadStrength {
        from: String,
        to: String,
        strength: f64,
    },
    #[error("edge {from} -> {to}: {why}")]
    BadStats {
        from: String,
        to: String,
        why: String,
    },
    #[error("unknown edge source {0:?}; expected declared, trace, flow or causal")]
    UnknownSource(String),
    #[error("unknown component {0}")]
    UnknownComponent(String),
}
