//! The engine's typed errors. Each one prints as a single line that names the problem.

use std::fmt;

/// Everything that can go wrong in the engine. Match on [`Error::kind`] to tell a bad
/// checkpoint from bad input, a file problem or a backend that cannot run; new variants
/// may appear in minor releases.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    Io {
        /// The file, as the caller named it.
        path: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// `config.json` is missing a field, has a wrong type, or names something unsupported.
    Config(String),
    /// A checkpoint tensor is missing, has the wrong shape or an unsupported dtype.
    Weights(String),
    /// A forward input is missing or inconsistent with the model.
    Input(String),
    /// An image could not be used: the message names it and says why.
    Image(String),
    /// The requested backend cannot run here, or failed while running.
    Backend(String),
    /// An option has a value the engine does not accept: an unknown backend, precision,
    /// instruction set or architecture name, or a thread count out of range.
    InvalidOption(String),
}

/// The broad class of an [`Error`], for callers that handle classes rather than variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The checkpoint (`config.json`, the weights) is unusable.
    Checkpoint,
    /// The inputs (tensors, images) do not fit the model, or cannot be decoded.
    Input,
    /// A file could not be read or written.
    Io,
    /// The backend cannot run here, or failed.
    Backend,
    /// An option's value is not one the engine knows.
    InvalidOption,
}

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } => ErrorKind::Io,
            Error::Config(_) | Error::Weights(_) => ErrorKind::Checkpoint,
            Error::Input(_) | Error::Image(_) => ErrorKind::Input,
            Error::Backend(_) => ErrorKind::Backend,
            Error::InvalidOption(_) => ErrorKind::InvalidOption,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{path}: {source}"),
            Error::Config(msg) => write!(f, "config: {msg}"),
            Error::Weights(msg) => write!(f, "weights: {msg}"),
            Error::Input(msg) => write!(f, "input: {msg}"),
            Error::Image(msg) => write!(f, "image: {msg}"),
            Error::Backend(msg) => write!(f, "backend: {msg}"),
            Error::InvalidOption(msg) => write!(f, "option: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an I/O error with the path it concerns.
pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `text` as one line of at most [`MAX_DETAIL_CHARS`] characters: line breaks become
/// spaces and anything longer is cut with an ellipsis.
pub(crate) fn one_line(text: &str) -> String {
    let mut line: String = text
        .chars()
        .take(MAX_DETAIL_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(MAX_DETAIL_CHARS).is_some() {
        line.push('…');
    }
    line
}

/// The most characters of a quoted detail (a parser's message, a shape) in an error.
pub(crate) const MAX_DETAIL_CHARS: usize = 200;

/// A tensor shape as `[2, 3]`; a shape of more than eight dimensions shows its first
/// eight and its rank, so that an error line stays readable.
pub(crate) fn shape_text(shape: &[usize]) -> String {
    const SHOWN: usize = 8;
    let dims: Vec<String> = shape.iter().take(SHOWN).map(usize::to_string).collect();
    if shape.len() <= SHOWN {
        format!("[{}]", dims.join(", "))
    } else {
        format!("[{}, …] ({} dimensions)", dims.join(", "), shape.len())
    }
}
