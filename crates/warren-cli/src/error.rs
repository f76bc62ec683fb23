//! What can go wrong, as one line and an exit code scripts can test.

/// warrenctl's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// Anything not listed below (a server error, an unhealthy `status`).
    Failure = 1,
    /// The command line is wrong (also clap's own usage errors).
    Usage = 2,
    /// The server cannot be reached.
    Unreachable = 3,
    /// Wrong credentials, or not allowed (HTTP 401/403).
    Auth = 4,
    /// The object does not exist (HTTP 404).
    NotFound = 5,
    /// The server refused the request as invalid or conflicting (HTTP
    /// 400/409/412): a precondition failed.
    Precondition = 6,
}

/// A failure: what to print and how to exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// The exit code.
    pub exit: Exit,
    /// One line saying what failed.
    pub message: String,
}

impl CliError {
    /// A failure with this exit code.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        CliError {
            exit,
            message: message.into(),
        }
    }

    /// A usage error.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}
