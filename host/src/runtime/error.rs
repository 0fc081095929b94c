//! Why a run, a check or a replay failed: one error type whose cases the driver acts on
//! (retry, fail fast, exit code), each naming the plugin involved.

use std::time::Duration;

use crate::checkpoint::StateError;
use crate::dlq::DlqError;
use crate::plugin::bindings::types::Error as WitError;
use crate::plugin::LoadError;
use crate::sandbox::SandboxError;

use super::channel;

/// Why a run (or a check) failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{plugin}: invalid config: {message}")]
    InvalidConfig { plugin: String, message: String },
    #[error("{plugin}: access denied: {message}")]
    AccessDenied { plugin: String, message: String },
    #[error("{plugin}: {message} (transient)")]
    Transient {
        plugin: String,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{plugin}: bad data: {message}")]
    Data { plugin: String, message: String },
    #[error("{plugin}: {message}")]
    Fatal { plugin: String, message: String },
    #[error("{plugin} {what}")]
    Trapped { plugin: String, what: String },
    #[error("{plugin} broke the plugin contract: {message}")]
    Contract { plugin: String, message: String },
    #[error("{plugin} rejected a record{}: {reason} (on_error = \"fail\"; set on_error = \"dlq\" or \"skip\" to go on past bad records)", .location.as_ref().map(|l| format!(" at {l}")).unwrap_or_default())]
    Rejected {
        plugin: String,
        location: Option<String>,
        reason: String,
    },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Dlq(#[from] DlqError),
    #[error(transparent)]
    Schema(#[from] crate::schema::Refused),
    #[error("{0}")]
    Secrets(String),
    /// A signal stopped the run; `plugin` was inside a call at that moment, if any.
    #[error("the run was cancelled{}; the open epoch was aborted and the state stays at the last commit", .plugin.as_ref().map(|p| format!(" while {p} was running")).unwrap_or_default())]
    Cancelled { plugin: Option<String> },
    /// A stage stopped because a neighbouring stage failed; never the cause itself.
    #[error("a neighbouring stage stopped")]
    Stopped,
}

impl RunError {
    /// The plugin's own error, as the contract's variant names it.
    pub(super) fn from_plugin(plugin: &str, error: WitError) -> Self {
        let plugin = plugin.to_string();
        match error {
            WitError::InvalidConfig(message) => RunError::InvalidConfig { plugin, message },
            WitError::AccessDenied(message) => RunError::AccessDenied { plugin, message },
            WitError::Transient(t) => RunError::Transient {
                plugin,
                message: t.message,
                retry_after: t.retry_after_ms.map(Duration::from_millis),
            },
            WitError::Data(message) => RunError::Data { plugin, message },
            WitError::Fatal(message) => RunError::Fatal { plugin, message },
        }
    }

    /// Worth another attempt from the last checkpoint on fresh instances.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RunError::Trapped { .. } | RunError::Transient { .. })
    }

    /// A problem with the pipeline's configuration or grants, found before data moved.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            RunError::InvalidConfig { .. }
                | RunError::AccessDenied { .. }
                | RunError::Load(_)
                | RunError::Sandbox(_)
                | RunError::Secrets(_)
        ) || matches!(self, RunError::Dlq(e) if e.is_key_problem())
    }
}

impl From<channel::Closed> for RunError {
    /// The stage on the other side of a channel stopped; it reports why.
    fn from(_: channel::Closed) -> Self {
        RunError::Stopped
    }
}
