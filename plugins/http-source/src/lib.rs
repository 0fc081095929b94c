//! The built-in `http` source: records pulled from a JSON API over wasi:http, page by page,
//! every URL checked by the host against the plugin's `http` grant.
//!
//! - **A pass** reads the pagination from the first page to the last; a run is one pass.
//!   Each page is one chunk.
//! - **Position.** The next page of the pass in progress (its URL and the pages read before
//!   it), and the largest `incremental.cursor_field` value read. A run killed in the middle
//!   of a pass resumes at the page after the last committed one; a pass that ended leaves
//!   only the cursor, which the next pass's first page sends as `incremental.param`.
//! - **Retries.** A page answered 429 or 5xx, or not at all within `timeout_ms`, is asked
//!   for again, after `Retry-After` when the API sends one (up to two minutes) or an
//!   exponential backoff from 250 ms, up to `attempts` times; then the run's own retry, from
//!   its last checkpoint, takes over. 401 and 403 are access errors; other 4xx end the run.
//! - **Bad pages.** A page that is not JSON, or has no array where `records` says, goes to
//!   the dead-letter queue whole, with its URL and the reason. Page numbers, offsets and
//!   Link headers still lead on; a next URL or cursor that was in the page cannot, and the
//!   pass ends there with a warning.
//! - **Loops.** A pass longer than `max_pages`, or a page that leads to itself, is an
//!   error naming the URL.

pub mod config;
pub mod rows;
pub mod url;

use std::time::Duration;

use ingest_sdk::source::{Chunk, Reader, Source, Split, StreamInfo, SyncMode};
use ingest_sdk::{Error, Reject, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{Auth, Pagination, SourceConfig};
use crate::rows::{ColumnType, Rows};
use crate::url::Url;
use http_client::{Failure, Method, Request, Response};

/// Where reading resumes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPosition {
    /// The next page of the pass in progress; `None` between passes.
    #[serde(default)]
    pub next: Option<NextPage>,
    /// The largest cursor value read (incremental reads).
    #[serde(default)]
    pub cursor: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextPage {
    pub url: String,
    /// Pages the pass read before this one.
    pub pages: u64,
}

/// Longest wait a `Retry-After` is honoured for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// The first backoff; each further attempt doubles it, up to 30 s.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Bytes of a bad page kept in its dead letter.
const DEAD_LETTER_BYTES: usize = 64 * 1024;

pub struct HttpSource;

impl Source for HttpSource {
    type Reader = HttpReader;

    fn spec() -> String {
        config::spec()
    }

    fn check(config: &str) -> Result<()> {
        let cfg = SourceConfig::parse(config)?;
        // The first page, as a pass would ask for it: the grant, the credentials and the
        // page's shape are all checked.
        let page = fetch(&cfg, &cfg.first)?;
        parse_page(&page.body)
            .and_then(|page| records(&cfg, &page).map(|_| ()))
            .map_err(|why| Error::config(format!("{}: {why}", cfg.first)))?;
        Ok(())
    }

    fn discover(config: &str) -> Result<Vec<StreamInfo>> {
        let cfg = SourceConfig::parse(config)?;
        let columns = columns(&cfg, config)?;
        Ok(vec![StreamInfo {
            name: cfg.name.clone(),
            schema: Rows::new(&columns).schema(),
            primary_key: cfg.primary_key.clone(),
            cursor_field: cfg.incremental.as_ref().map(|i| i.cursor_field.clone()),
            sync_modes: vec![SyncMode::FullRefresh, SyncMode::Incremental],
        }])
    }

    fn splits(config: &str, stream: &str) -> Result<Vec<Split>> {
        let cfg = SourceConfig::parse(config)?;
        check_name(&cfg, stream)?;
        Ok(vec![Split {
            id: "pages".into(),
            descriptor: Vec::new(),
        }])
    }

    fn open(
        config: &str,
        stream: &str,
        _split: Split,
        position: Option<Vec<u8>>,
    ) -> Result<HttpReader> {
        let cfg = SourceConfig::parse(config)?;
        check_name(&cfg, stream)?;
        let at: HttpPosition = ingest_sdk::source::resume_at(stream, position)?;
        let columns = columns(&cfg, config)?;
        let next = match &at.next {
            Some(next) => Some((
                Url::parse(&next.url).map_err(|why| {
                    Error::fatal(format!(
                        "stream `{stream}`: the saved next page {:?}: {why}",
                        next.url
                    ))
                })?,
                next.pages,
            )),
            None => {
                // A new pass, from the kept cursor.
                let mut first = cfg.first.clone();
                if let Some(inc) = &cfg.incremental {
                    let from = at
                        .cursor
                        .as_ref()
                        .map(cursor_text)
                        .or_else(|| inc.start.clone());
                    if let Some(from) = from {
                        first.set_query(&inc.param, &from);
                    }
                }
                Some((first, 0))
            }
        };
        Ok(HttpReader {
            rows: Rows::new(&columns),
            cfg,
            next,
            cursor: at.cursor,
        })
    }
}

fn check_name(cfg: &SourceConfig, stream: &str) -> Result<()> {
    ingest_sdk::source::check_stream("http", &cfg.name, stream)
}

/// A stream's columns and their types.
type Columns = Vec<(String, ColumnType)>;

thread_local! {
    /// The columns inferred last, with the config they were inferred for: `discover` and
    /// `open` in the same instance ask for them in turn, and the first page is fetched once.
    static INFERRED: std::cell::RefCell<Option<(String, Columns)>> =
        const { std::cell::RefCell::new(None) };
}

/// The stream's columns: those declared, over those inferred from the first page of a new
/// pass when `infer`.
fn columns(cfg: &SourceConfig, config: &str) -> Result<Columns> {
    if !cfg.infer {
        return Ok(rows::columns(&[], &cfg.columns, false));
    }
    if let Some(columns) = INFERRED.with_borrow(|last| {
        last.as_ref()
            .filter(|(c, _)| c == config)
            .map(|(_, columns)| columns.clone())
    }) {
        return Ok(columns);
    }
    let page = fetch(cfg, &cfg.first)?;
    let page = parse_page(&page.body);
    let sample = page
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|page| records(cfg, page))
        .map_err(|why| {
            Error::data(format!(
                "{}: the columns are inferred from the first page, and {why}; declare them in `columns` with `infer = false`",
                cfg.first
            ))
        })?;
    let columns = rows::columns(sample, &cfg.columns, true);
    INFERRED.set(Some((config.to_string(), columns.clone())));
    Ok(columns)
}

/// A page's body as JSON.
fn parse_page(body: &[u8]) -> std::result::Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| {
        format!(
            "the page is not JSON ({e}): {}",
            rows::shortened(&String::from_utf8_lossy(body))
        )
    })
}

/// The records of a page: the array at the config's `records` path.
fn records<'a>(cfg: &SourceConfig, page: &'a Value) -> std::result::Result<&'a [Value], String> {
    match at_path(page, &cfg.records) {
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(format!(
            "`records = {:?}` is {} in the page, not an array",
            cfg.records.join("."),
            kind(other)
        )),
        None => Err(format!(
            "the page has nothing at `records = {:?}`",
            cfg.records.join(".")
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The value at a dotted path.
fn at_path<'a>(mut v: &'a Value, path: &[String]) -> Option<&'a Value> {
    for key in path {
        v = v.as_object()?.get(key)?;
    }
    Some(v)
}

/// A cursor value as sent in a query parameter.
fn cursor_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether cursor value `a` is after `b`: as numbers when both are, as text otherwise.
fn after(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x > y,
        _ => cursor_text(a) > cursor_text(b),
    }
}

/// The request for `url`, with the config's headers and credentials.
fn request(cfg: &SourceConfig, url: &Url) -> Result<Request> {
    let mut url = url.clone();
    let mut headers = cfg.headers.clone();
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
    {
        headers.push(("Accept".into(), "application/json".into()));
    }
    if cfg.body.is_some() {
        headers.push(("Content-Type".into(), "application/json".into()));
    }
    match &cfg.auth {
        Auth::None => {}
        Auth::Bearer { secret } => headers.push((
            "Authorization".into(),
            format!("Bearer {}", ingest_sdk::host::secret(secret)?),
        )),
        Auth::Header { name, secret } => {
            headers.push((name.clone(), ingest_sdk::host::secret(secret)?))
        }
        Auth::Query { param, secret } => url.set_query(param, &ingest_sdk::host::secret(secret)?),
        Auth::Basic { user, secret } => {
            use base64::Engine as _;
            let pair = format!("{user}:{}", ingest_sdk::host::secret(secret)?);
            headers.push((
                "Authorization".into(),
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ),
            ));
        }
    }
    Ok(Request {
        method: cfg.method,
        url: url.to_string(),
        headers,
        body: (cfg.method == Method::Post).then(|| cfg.body.clone().unwrap_or_default()),
        timeout_ms: cfg.timeout_ms,
    })
}

/// How long to wait before attempt `attempt` (from 1) after `response`.
fn wait_before(attempt: u32, response: Option<&Response>) -> Duration {
    let retry_after = response
        .and_then(|r| r.header("retry-after"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    retry_after.map_or_else(
        || (FIRST_BACKOFF * 2u32.saturating_pow(attempt - 1)).min(Duration::from_secs(30)),
        |d| d.min(MAX_RETRY_AFTER),
    )
}

/// The page at `url`, retried while it is answered 429 or 5xx or not at all. The URL in
/// messages carries no credentials (an API key in the query is added only to the request).
fn fetch(cfg: &SourceConfig, url: &Url) -> Result<Response> {
    let req = request(cfg, url)?;
    let mut last = String::new();
    let mut wait = Duration::ZERO;
    for attempt in 1..=cfg.attempts {
        if attempt > 1 {
            std::thread::sleep(wait);
        }
        match http_client::send(&req, cfg.max_page_bytes) {
            Ok(r) if (200..300).contains(&r.status) => return Ok(r),
            Ok(r) if r.status == 429 || (500..600).contains(&r.status) => {
                last = format!("answered {}", r.status);
                wait = wait_before(attempt, Some(&r));
            }
            Ok(r) if r.status == 401 || r.status == 403 => {
                return Err(Error::AccessDenied(format!(
                    "{url}: the API answered {}: {}",
                    r.status,
                    rows::shortened(&String::from_utf8_lossy(&r.body))
                )))
            }
            Ok(r) => {
                return Err(Error::fatal(format!(
                    "{url}: the API answered {}: {}",
                    r.status,
                    rows::shortened(&String::from_utf8_lossy(&r.body))
                )))
            }
            Err(Failure::Denied(why)) => {
                return Err(Error::AccessDenied(format!(
                    "{url}: {why} (grant its prefix in the source's `http`)"
                )))
            }
            Err(Failure::TooLarge(limit)) => {
                return Err(Error::data(format!(
                    "{url}: the page is over {limit} bytes; raise `max_page_bytes` or ask for smaller pages"
                )))
            }
            Err(Failure::Transport(why)) => {
                last = why;
                wait = wait_before(attempt, None);
            }
        }
    }
    Err(Error::Transient {
        message: format!("{url}: {last} ({} attempts)", cfg.attempts),
        retry_after_ms: Some(wait.as_millis() as u64),
    })
}

/// The URL in a `Link` header with `rel="next"`.
fn link_next(header: &str) -> Option<&str> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let rel_next = params.split(';').any(|p| {
            let p = p.trim().to_ascii_lowercase();
            p == "rel=\"next\"" || p == "rel=next"
        });
        rel_next.then(|| target.trim().trim_start_matches('<').trim_end_matches('>'))
    })
}

/// Reads one pass of the pagination.
pub struct HttpReader {
    cfg: SourceConfig,
    rows: Rows,
    /// The next page and the pages read before it; `None` once the pass ended.
    next: Option<(Url, u64)>,
    cursor: Option<Value>,
}

impl HttpReader {
    /// The page after `url`, which held `count` records (`None` when it was not readable).
    fn following(
        &self,
        url: &Url,
        response: &Response,
        page: Option<&Value>,
        count: Option<usize>,
    ) -> Result<Option<Url>> {
        let bad = |why: String| Error::data(format!("{url}: {why}"));
        let number = |param: &str| -> Result<u64> {
            url.query(param)
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| bad(format!("no number in query parameter `{param}`")))
        };
        Ok(match &self.cfg.pagination {
            Pagination::None => None,
            Pagination::LinkHeader => match response.header("link").and_then(link_next) {
                Some(next) => Some(url.join(next).map_err(bad)?),
                None => None,
            },
            Pagination::NextUrl { path } => match page.and_then(|p| at_path(p, path)) {
                Some(Value::String(next)) if !next.is_empty() => Some(url.join(next).map_err(bad)?),
                _ => None,
            },
            Pagination::Cursor { path, param } => match page.and_then(|p| at_path(p, path)) {
                Some(Value::Null) | None => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(token) => {
                    let mut next = url.clone();
                    next.set_query(param, &cursor_text(token));
                    Some(next)
                }
            },
            Pagination::Page { param, size, .. } => match count {
                Some(0) => None,
                Some(n) if size.is_some_and(|s| (n as u64) < s) => None,
                _ => {
                    let mut next = url.clone();
                    next.set_query(param, &(number(param)? + 1).to_string());
                    Some(next)
                }
            },
            Pagination::Offset { param, limit } => match count {
                Some(n) if (n as u64) < *limit => None,
                n => {
                    let mut next = url.clone();
                    let step = n.map_or(*limit, |n| n as u64);
                    next.set_query(param, &(number(param)? + step).to_string());
                    Some(next)
                }
            },
        })
    }
}

impl Reader for HttpReader {
    fn next(&mut self, _max_rows: usize) -> Result<Option<Chunk>> {
        let Some((url, pages)) = self.next.take() else {
            return Ok(None);
        };
        if pages >= self.cfg.max_pages {
            return Err(Error::fatal(format!(
                "{url}: the pass has read `max_pages = {}` pages and goes on; a pagination that never ends is most likely a loop (raise `max_pages` if the API really has more)",
                self.cfg.max_pages
            )));
        }
        let response = fetch(&self.cfg, &url)?;
        let mut rejects = Vec::new();
        let parsed = parse_page(&response.body);
        let items = parsed
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|page| records(&self.cfg, page));
        let count = match &items {
            Ok(items) => {
                for (i, record) in items.iter().enumerate() {
                    match self.rows.push(record) {
                        Ok(()) => {
                            if let Some(inc) = &self.cfg.incremental {
                                if let Some(v) =
                                    record.get(&inc.cursor_field).filter(|v| !v.is_null())
                                {
                                    if self.cursor.as_ref().is_none_or(|c| after(v, c)) {
                                        self.cursor = Some(v.clone());
                                    }
                                }
                            }
                        }
                        Err(reason) => rejects.push(Reject {
                            row: None,
                            original: Some(record.to_string()),
                            location: Some(format!("{url} record {i}")),
                            reason,
                        }),
                    }
                }
                Some(items.len())
            }
            Err(reason) => {
                let body = &response.body[..response.body.len().min(DEAD_LETTER_BYTES)];
                rejects.push(Reject {
                    row: None,
                    original: Some(String::from_utf8_lossy(body).into_owned()),
                    location: Some(url.to_string()),
                    reason: reason.clone(),
                });
                None
            }
        };
        let next = self.following(&url, &response, parsed.as_ref().ok(), count)?;
        if next.is_none()
            && items.is_err()
            && matches!(
                self.cfg.pagination,
                Pagination::NextUrl { .. } | Pagination::Cursor { .. }
            )
        {
            ingest_sdk::host::log(
                ingest_sdk::host::Level::Warn,
                &format!(
                    "{url}: the page could not be read, and the next page's address was in it: this pass ends here (the page is in the dead-letter queue)"
                ),
            );
        }
        if let Some(next) = &next {
            if next.to_string() == url.to_string() {
                return Err(Error::fatal(format!(
                    "{url}: the page leads to itself as the next page"
                )));
            }
        }
        let position = HttpPosition {
            next: next.as_ref().map(|u| NextPage {
                url: u.to_string(),
                pages: pages + 1,
            }),
            cursor: self.cursor.clone(),
        };
        self.next = next.map(|u| (u, pages + 1));
        Ok(Some(Chunk {
            batch: self.rows.finish()?,
            position: serde_json::to_vec(&position).expect("a position serializes"),
            rejects,
        }))
    }
}

// Exported only in the component: natively (unit tests) the export names cannot link.
#[cfg(target_family = "wasm")]
ingest_sdk::export_source!(HttpSource);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_header_gives_the_next_page() {
        let h = r#"<https://api.test/items?page=3>; rel="next", <https://api.test/items?page=9>; rel="last""#;
        assert_eq!(link_next(h), Some("https://api.test/items?page=3"));
        assert_eq!(
            link_next(r#"<https://api.test/items?page=9>; rel="last""#),
            None
        );
    }

    #[test]
    fn retry_after_is_honoured_up_to_two_minutes_and_backoff_doubles() {
        let with = |v: &str| Response {
            status: 429,
            headers: vec![("Retry-After".into(), v.into())],
            body: Vec::new(),
        };
        assert_eq!(wait_before(1, Some(&with("3"))), Duration::from_secs(3));
        assert_eq!(wait_before(1, Some(&with("9999"))), MAX_RETRY_AFTER);
        assert_eq!(wait_before(1, None), Duration::from_millis(250));
        assert_eq!(wait_before(3, None), Duration::from_millis(1000));
        assert_eq!(wait_before(20, None), Duration::from_secs(30));
    }

    #[test]
    fn cursors_compare_as_numbers_or_as_text() {
        use serde_json::json;
        assert!(after(&json!(10), &json!(9)));
        assert!(after(
            &json!("2024-05-02T00:00:00Z"),
            &json!("2024-05-01T23:00:00Z")
        ));
        assert!(!after(&json!("a"), &json!("b")));
    }

    #[test]
    fn pages_numbers_and_offsets_lead_on_until_a_short_page() {
        let cfg = SourceConfig::parse(
            r#"{"url":"http://h/items","name":"items","pagination":{"style":"offset","param":"offset","limit_param":"limit","limit":2}}"#,
        )
        .unwrap();
        let reader = HttpReader {
            rows: Rows::new(&[]),
            next: None,
            cursor: None,
            cfg: cfg.clone(),
        };
        let r = Response::default();
        let next = reader
            .following(&cfg.first, &r, None, Some(2))
            .unwrap()
            .unwrap();
        assert_eq!(next.to_string(), "http://h/items?offset=2&limit=2");
        assert!(reader
            .following(&next, &r, None, Some(1))
            .unwrap()
            .is_none());
        // A page that could not be read still leads on, by the limit.
        let after_bad = reader.following(&next, &r, None, None).unwrap().unwrap();
        assert_eq!(after_bad.to_string(), "http://h/items?offset=4&limit=2");
    }
}
