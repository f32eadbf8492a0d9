use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A controller node's Raft id.
pub type NodeId = u64;

/// Longest accepted identifier, in bytes (the rule is `augur_graph`'s, whose topology files
/// follow it too).
pub use augur_graph::MAX_ID_LEN;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} id is empty")]
    Empty { what: &'static str },
    #[error("{what} id is {len} bytes, longer than {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} id {id:?} has character {ch:?}; use letters, digits, '.', '_', ':' or '-'")]
    BadChar {
        what: &'static str,
        id: String,
        ch: char,
    },
}

/// Checks an identifier of the kind named by `what` (component, host, service…).
pub fn validate_id(what: &'static str, id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty { what });
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            what,
            len: id.len(),
            max: MAX_ID_LEN,
        });
    }
    if let Some(ch) = id.chars().find(|c| !augur_graph::is_id_char(*c)) {
        return Err(IdError::BadChar {
            what,
            id: id.to_string(),
            ch,
        });
    }
    Ok(())
}

/// The id of a monitored component (a service instance, a database replica, a queue…).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ComponentId(String);

impl ComponentId {
    pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
        let id = id.into();
        validate_id("component", &id)?;
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by id can be searched with a `&str` (the derived order and hash are the
/// string's).
impl std::borrow::Borrow<str> for ComponentId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ComponentId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl From<ComponentId> for String {
    fn from(id: ComponentId) -> String {
        id.0
    }
}

impl FromStr for ComponentId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An action's id: the Raft term of the entry that created it and its place in the action
/// log. The term fences ids: two leaders can never hand out the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ActionId {
    pub term: u64,
    pub seq: u64,
}

impl fmt::Display for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a-{}-{}", self.term, self.seq)
    }
}

impl FromStr for ActionId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("action id {s:?} is not of the form a-TERM-SEQ");
        let rest = s.strip_prefix("a-").ok_or_else(bad)?;
        let (term, seq) = rest.split_once('-').ok_or_else(bad)?;
        Ok(Self {
            term: term.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated_with_a_clear_message() {
        assert!(ComponentId::new("web-1.eu:a_b").is_ok());
        assert_eq!(
            ComponentId::new("").unwrap_err().to_string(),
            "component id is empty"
        );
        assert_eq!(
            ComponentId::new("a b").unwrap_err().to_string(),
            "component id \"a b\" has character ' '; use letters, digits, '.', '_', ':' or '-'"
        );
        assert!(matches!(
            ComponentId::new("x".repeat(129)),
            Err(IdError::TooLong { .. })
        ));
        assert!(serde_json::from_str::<ComponentId>("\"bad id\"").is_err());
    }

    #[test]
    fn action_ids_round_trip() {
        let id = ActionId { term: 3, seq: 17 };
        assert_eq!(id.to_string(), "a-3-17");
        assert_eq!("a-3-17".parse::<ActionId>().unwrap(), id);
        assert!("3-17".parse::<ActionId>().is_err());
    }
}
