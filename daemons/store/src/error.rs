//! The one error type of every store operation.

/// What went wrong in a store operation. Every message names the record kind and id, and says
/// what the caller can do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The record does not exist (or is not visible, e.g. a service whose application is gone).
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// Record kind ("application", "service", …).
        kind: &'static str,
        /// The id that was looked up.
        id: String,
    },
    /// The write would break a uniqueness rule: the id or a unique name is already taken.
    #[error("{kind} conflict: {what}")]
    Conflict {
        /// Record kind.
        kind: &'static str,
        /// What is taken, e.g. `name "Admin" is already used by user 65f1…`.
        what: String,
    },
    /// A revision-checked write lost against a concurrent writer. The typed update methods
    /// retry these themselves; it only surfaces when the document kept changing.
    #[error("{kind} {id:?} was changed concurrently by another writer; re-read it and try again")]
    Stale {
        /// Record kind.
        kind: &'static str,
        /// Id of the contended document.
        id: String,
    },
    /// The request itself is inconsistent (e.g. an update closure changed a record's id).
    #[error("invalid {kind} write: {what}")]
    Invalid {
        /// Record kind.
        kind: &'static str,
        /// What is wrong.
        what: String,
    },
    /// A stored document cannot be decoded into its record type.
    #[error(
        "stored {kind} {id:?} is unreadable: {reason}; the store was written by an incompatible version or edited by hand — restore a backup or delete that document"
    )]
    Corrupt {
        /// Record kind.
        kind: &'static str,
        /// Id of the broken document.
        id: String,
        /// Decoder message.
        reason: String,
    },
    /// The backend failed (I/O error, connection lost, …). The message says what to check.
    #[error("store backend failed: {0}")]
    Backend(String),
    /// The store could not be opened.
    #[error("cannot open store {location:?}: {reason}; {hint}")]
    Open {
        /// The path or URL that was given.
        location: String,
        /// Why it failed.
        reason: String,
        /// What to do about it.
        hint: String,
    },
}

impl StoreError {
    /// True for a lost optimistic-concurrency race ([`StoreError::Stale`]).
    pub fn is_stale(&self) -> bool {
        matches!(self, StoreError::Stale { .. })
    }

    /// True for [`StoreError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// True for [`StoreError::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}
