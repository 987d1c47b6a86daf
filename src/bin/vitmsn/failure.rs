//! What the command-line tool reports: the engine's errors, and misuse of its options.

use vitmsn::Error;

/// A command's failure.
#[derive(Debug)]
pub enum Failure {
    /// The options, taken together, ask for something the tool does not do.
    Usage(String),
    /// The engine failed.
    Engine(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Engine(e)
    }
}

impl Failure {
    /// The one line the tool prints: usage problems and bad option values without a
    /// prefix, as clap prints its own, the engine's other errors with their kind.
    pub fn message(&self) -> String {
        match self {
            Failure::Usage(msg) | Failure::Engine(Error::InvalidOption(msg)) => msg.clone(),
            Failure::Engine(e) => e.to_string(),
        }
    }
}

/// The tool's result type.
pub type Result<T, E = Failure> = std::result::Result<T, E>;
