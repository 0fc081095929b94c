//! Webhooks a source receives through the host: the host listens (at the address of the
//! source's `listen` grant) and holds each request open; the source takes the requests,
//! turns them into rows, and answers them: a refusal at once, 2xx once the epoch holding
//! the request has committed (from its reader's `ack`).

use std::time::Duration;

use crate::bindings::source::ingest::plugin::webhook as wit;
use crate::{Error, Result};

pub use wit::{Limits, Request};

/// The requests of some paths of the pipeline's listener.
pub struct Endpoint(wit::Endpoint);

impl Endpoint {
    /// Serve `paths` (each starting with `/`). Requests an earlier endpoint on the same
    /// paths had taken without answering come first.
    pub fn open(paths: &[String], limits: Limits) -> Result<Endpoint> {
        wit::Endpoint::open(paths, limits)
            .map(Endpoint)
            .map_err(Error::from)
    }

    /// Up to `max` requests in the order received, waiting at most `wait` (100 ms at most)
    /// for the first.
    pub fn take(&self, max: u32, wait: Duration) -> Vec<Request> {
        self.0
            .take(max, wait.as_millis().min(u32::MAX as u128) as u32)
    }

    /// Answer request `id` with `status` (4xx or 5xx) and `reason`.
    pub fn reject(&self, id: u64, status: u16, reason: &str) {
        self.0.reject(id, status, reason);
    }

    /// Answer `status` (2xx) to every request taken with an id up to `up_to` and not
    /// answered yet.
    pub fn accept(&self, up_to: u64, status: u16) {
        self.0.accept(up_to, status);
    }
}
