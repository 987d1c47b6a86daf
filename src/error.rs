//! The engine's typed errors. Each one prints as a single line that names the problem.

use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// A file could not be read or written.
    Io {
        path: String,
        source: std::io::Error,
    },
    /// `config.json` is missing a field, has a wrong type, or names something unsupported.
    Config(String),
    /// A checkpoint tensor is missing, has the wrong shape or an unsupported dtype.
    Weights(String),
    /// A forward input is missing or inconsistent with the model.
    Input(String),
    /// The requested backend cannot run here.
    Backend(String),
    /// Command-line usage error.
    Usage(String),
    /// An image could not be used: the message names it and says why.
    Image(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{path}: {source}"),
            Error::Config(msg) => write!(f, "config: {msg}"),
            Error::Weights(msg) => write!(f, "weights: {msg}"),
            Error::Input(msg) => write!(f, "input: {msg}"),
            Error::Backend(msg) => write!(f, "backend: {msg}"),
            Error::Usage(msg) => write!(f, "usage: {msg}"),
            Error::Image(msg) => write!(f, "image: {msg}"),
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
