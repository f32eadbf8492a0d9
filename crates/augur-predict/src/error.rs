use std::path::PathBuf;

/// What can go wrong in this crate: bad input files, bad parameters, the tensor library.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    #[error("invalid parameter {name}: {message}")]
    Param { name: &'static str, message: String },
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl PredictError {
    pub(crate) fn input(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Input {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn param(name: &'static str, message: impl Into<String>) -> Self {
        Self::Param {
            name,
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
