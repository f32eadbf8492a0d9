/// Errors of opening or restoring the store; failures inside openraft's traits are reported
/// as openraft `StorageError`s instead.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store in {dir}: {reason}")]
    Open { dir: String, reason: String },
    #[error("stored snapshot is unreadable: {reason}")]
    CorruptSnapshot { reason: String },
}
