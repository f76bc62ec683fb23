//! The one error type of the store, and the mapping from sled's errors.

/// Why a store operation failed.
///
/// Every variant is fatal for the operation that returned it; none of them
/// is a protocol error. The server logs it at `error` and, when it happens
/// at startup, refuses to start rather than serve a partial state.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled or the file system failed; the text says what was being done.
    #[error("store i/o failed: {0}")]
    Io(String),
    /// The data directory was written by a newer Warren whose format this
    /// build cannot read. Nothing was written to it.
    #[error(
        "the data directory was written in store format {found}, but this Warren reads \
         formats up to {supported}; refusing to open it"
    )]
    NewerFormat {
        /// The format version found on disk.
        found: u8,
        /// The newest format this build reads ([`crate::FORMAT_VERSION`]).
        supported: u8,
    },
    /// A record that does not decode. `what` names the key and the problem.
    #[error("corrupt store record: {what}")]
    Corrupt {
        /// The key (in readable form) and what was wrong with its value.
        what: String,
    },
}

/// Turns a sled error into a [`StoreError`], with `context` saying what the
/// store was doing. sled's own checksum failures become
/// [`StoreError::Corrupt`], everything else [`StoreError::Io`].
pub(crate) fn sled_error(
    context: impl FnOnce() -> String,
) -> impl FnOnce(sled::Error) -> StoreError {
    move |e| match e {
        sled::Error::Corruption { .. } => StoreError::Corrupt {
            what: format!("{}: {e}", context()),
        },
        other => StoreError::Io(format!("{}: {other}", context())),
    }
}
