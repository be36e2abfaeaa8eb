//! Errors that choose cellar's exit status (`main` maps them; anything else is 1).

/// An error in how cellar was called, found after parsing (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A snapshot recorded without some of what its source held, which could not be read (exit
/// status 3, restic's for the same case).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Incomplete(pub String);

/// A command stopped by an interrupt, having recorded nothing (exit status 128 + the signal).
#[derive(Debug, thiserror::Error)]
#[error("interrupted by signal {0}; nothing was recorded")]
pub struct Interrupted(pub i32);
