//! The config of the HTTP API source: what the user wrote ([`RawConfig`], whose JSON Schema
//! is the source's `spec`) and the validated form ([`SourceConfig`]).

use std::collections::BTreeMap;

use ingest_sdk::{config, Error, Result};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::rows::ColumnType;
use crate::url::Url;
use http_client::Method;

/// The config as written in pipeline.toml.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "http source config")]
pub struct RawConfig {
    /// The first page's URL, `http://` or `https://`. Grant its prefix in the source's
    /// `http`; every page the pagination leads to must lie under a grant too.
    pub url: String,
    /// `GET` or `POST`.
    #[serde(default)]
    #[schemars(extend("default" = "GET"))]
    pub method: Option<String>,
    /// Headers sent with every request (credentials go in `auth`, from secrets).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Query parameters added to the first page's URL.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// For `POST`: the JSON body sent with every request.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// How requests authenticate, with a granted secret.
    #[serde(default)]
    pub auth: Option<RawAuth>,
    /// Where the records are in a page: a dotted path to an array (`data.items`); empty for
    /// a page that is the array itself.
    #[serde(default)]
    pub records: Option<String>,
    /// How the next page is found (default: there is one page).
    #[serde(default)]
    pub pagination: Option<RawPagination>,
    /// Pages read in one pass at most; a pagination that goes on longer is an error (it is
    /// most likely a loop).
    #[serde(default)]
    #[schemars(range(min = 1), extend("default" = 10000))]
    pub max_pages: Option<u64>,
    /// Read only records newer than the last run's: the largest `cursor_field` value read
    /// is kept in the pipeline's state and sent as query parameter `param` on the next
    /// pass's first page.
    #[serde(default)]
    pub incremental: Option<RawIncremental>,
    /// Column types (`int64`, `float64`, `boolean`, `utf8`, `timestamp`, `json`) that
    /// override or add to those inferred from the first page.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Infer the columns from the first page's records (default); `false` keeps only the
    /// declared `columns`.
    #[serde(default)]
    #[schemars(extend("default" = true))]
    pub infer: Option<bool>,
    /// The columns that identify a record, for `builtin:dedupe` or an upsert downstream.
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// Milliseconds a request may take to connect, to its first byte, and between bytes.
    #[serde(default)]
    #[schemars(range(min = 100), extend("default" = 30000))]
    pub timeout_ms: Option<u64>,
    /// Attempts at a page that is answered 429 or 5xx, or not at all, before the run's
    /// retry from its last checkpoint takes over.
    #[serde(default)]
    #[schemars(range(min = 1, max = 20), extend("default" = 6))]
    pub attempts: Option<u32>,
    /// Largest page accepted, in bytes.
    #[serde(default)]
    #[schemars(range(min = 1024), extend("default" = 67108864))]
    pub max_page_bytes: Option<u64>,
    /// The name of the stream the pipeline sees.
    pub name: String,
}

/// Authentication, with the secret's name (never its value).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "kebab-case")]
pub enum RawAuth {
    /// `Authorization: Bearer <secret>`.
    Bearer { secret: String },
    /// The secret in header `header` (default `X-Api-Key`), or in query parameter `query`.
    ApiKey {
        secret: String,
        #[serde(default)]
        header: Option<String>,
        #[serde(default)]
        query: Option<String>,
    },
    /// `Authorization: Basic` with `user` and the secret as password.
    Basic {
        user: String,
        password_secret: String,
    },
}

/// How the next page is found.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, tag = "style", rename_all = "kebab-case")]
pub enum RawPagination {
    /// One page only.
    None,
    /// The `Link` header's `rel="next"` URL.
    LinkHeader,
    /// A URL at a dotted path in the page (`links.next`); null or missing on the last.
    NextUrl { path: String },
    /// A token at a dotted path in the page (`meta.next_cursor`), sent as query parameter
    /// `param`; null, empty or missing on the last page.
    Cursor { path: String, param: String },
    /// Page numbers in query parameter `param`, from `start` (default 1); `size` records a
    /// page, asked for in `size_param` when given. A page with fewer records is the last.
    Page {
        param: String,
        #[serde(default)]
        start: Option<u64>,
        #[serde(default)]
        size: Option<u64>,
        #[serde(default)]
        size_param: Option<String>,
    },
    /// Record offsets in query parameter `param`, `limit` records a page asked for in
    /// `limit_param`. A page with fewer records is the last.
    Offset {
        param: String,
        limit_param: String,
        limit: u64,
    },
}

/// Incremental reads by a cursor field.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIncremental {
    /// The record field whose largest value is kept (e.g. `updated_at`); values compare as
    /// numbers when both are, as text otherwise (ISO 8601 timestamps compare correctly).
    pub cursor_field: String,
    /// The query parameter the kept value is sent in (e.g. `updated_since`).
    pub param: String,
    /// The value sent on the very first pass, if any.
    #[serde(default)]
    pub start: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    Bearer { secret: String },
    Header { name: String, secret: String },
    Query { param: String, secret: String },
    Basic { user: String, secret: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pagination {
    None,
    LinkHeader,
    NextUrl {
        path: Vec<String>,
    },
    Cursor {
        path: Vec<String>,
        param: String,
    },
    Page {
        param: String,
        start: u64,
        size: Option<u64>,
    },
    Offset {
        param: String,
        limit: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incremental {
    pub cursor_field: String,
    pub param: String,
    pub start: Option<String>,
}

/// The validated config.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The first page's URL, with `query` and the pagination's first parameters set.
    pub first: Url,
    pub method: Method,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub auth: Auth,
    pub records: Vec<String>,
    pub pagination: Pagination,
    pub max_pages: u64,
    pub incremental: Option<Incremental>,
    pub columns: Vec<(String, ColumnType)>,
    pub infer: bool,
    pub primary_key: Vec<String>,
    pub timeout_ms: u64,
    pub attempts: u32,
    pub max_page_bytes: usize,
    pub name: String,
}

/// A dotted path, split; empty for the page itself.
fn path(p: &str) -> Vec<String> {
    p.split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl SourceConfig {
    /// Parse and check the config, reporting every problem at once.
    pub fn parse(json: &str) -> Result<SourceConfig> {
        let raw: RawConfig = config::parse(json)?;
        let mut problems = Vec::new();
        let mut first = match Url::parse(&raw.url) {
            Ok(u) => u,
            Err(why) => {
                problems.push(format!("`url = {:?}`: {why}", raw.url));
                Url::parse("http://invalid/").expect("a valid URL")
            }
        };
        let method = match raw.method.as_deref().unwrap_or("GET") {
            m if m.eq_ignore_ascii_case("get") => Method::Get,
            m if m.eq_ignore_ascii_case("post") => Method::Post,
            other => {
                problems.push(format!("`method = {other:?}`; accepted: GET, POST"));
                Method::Get
            }
        };
        if raw.body.is_some() && method == Method::Get {
            problems.push("`body` is sent with `method = \"POST\"` only".into());
        }
        for name in raw.headers.keys() {
            if ["authorization", "cookie", "proxy-authorization"]
                .contains(&name.to_ascii_lowercase().as_str())
            {
                problems.push(format!(
                    "`headers.{name}`: credentials are not written in the config; use `auth` with a granted secret"
                ));
            }
        }
        for (k, v) in &raw.query {
            first.set_query(k, v);
        }
        let auth = match raw.auth {
            None => Auth::None,
            Some(RawAuth::Bearer { secret }) => Auth::Bearer { secret },
            Some(RawAuth::ApiKey {
                secret,
                header,
                query,
            }) => match (header, query) {
                (Some(_), Some(_)) => {
                    problems
                        .push("`auth`: give `header` or `query` for the API key, not both".into());
                    Auth::None
                }
                (_, Some(param)) => Auth::Query { param, secret },
                (header, None) => Auth::Header {
                    name: header.unwrap_or_else(|| "X-Api-Key".into()),
                    secret,
                },
            },
            Some(RawAuth::Basic {
                user,
                password_secret,
            }) => Auth::Basic {
                user,
                secret: password_secret,
            },
        };
        let pagination = match raw.pagination.unwrap_or(RawPagination::None) {
            RawPagination::None => Pagination::None,
            RawPagination::LinkHeader => Pagination::LinkHeader,
            RawPagination::NextUrl { path: p } => Pagination::NextUrl { path: path(&p) },
            RawPagination::Cursor { path: p, param } => Pagination::Cursor {
                path: path(&p),
                param,
            },
            RawPagination::Page {
                param,
                start,
                size,
                size_param,
            } => {
                let start = start.unwrap_or(1);
                first.set_query(&param, &start.to_string());
                match (size, size_param) {
                    (Some(size), Some(size_param)) => {
                        first.set_query(&size_param, &size.to_string())
                    }
                    (None, Some(_)) => problems.push("`pagination.size_param` needs `size`".into()),
                    _ => {}
                }
                if size == Some(0) {
                    problems.push("`pagination.size = 0`: a page holds at least 1 record".into());
                }
                Pagination::Page { param, start, size }
            }
            RawPagination::Offset {
                param,
                limit_param,
                limit,
            } => {
                if limit == 0 {
                    problems.push("`pagination.limit = 0`: ask for at least 1 record".into());
                }
                first.set_query(&param, "0");
                first.set_query(&limit_param, &limit.to_string());
                Pagination::Offset { param, limit }
            }
        };
        let mut columns = Vec::new();
        for (name, ty) in &raw.columns {
            match ColumnType::parse(ty) {
                Some(t) => columns.push((name.clone(), t)),
                None => problems.push(format!(
                    "`columns.{name} = {ty:?}`; accepted: int64, float64, boolean, utf8, timestamp, json"
                )),
            }
        }
        let infer = raw.infer.unwrap_or(true);
        if !infer && columns.is_empty() {
            problems.push("`infer = false` needs `columns`: the columns to keep".into());
        }
        let incremental = raw.incremental.map(|i| Incremental {
            cursor_field: i.cursor_field,
            param: i.param,
            start: i.start,
        });
        if let (Some(inc), false) = (&incremental, infer) {
            if !columns.iter().any(|(n, _)| *n == inc.cursor_field) {
                problems.push(format!(
                    "`incremental.cursor_field = {:?}` is not among `columns`",
                    inc.cursor_field
                ));
            }
        }
        let max_pages = raw.max_pages.unwrap_or(10_000);
        if max_pages == 0 {
            problems.push("`max_pages = 0`: read at least one page".into());
        }
        let timeout_ms = raw.timeout_ms.unwrap_or(30_000);
        if timeout_ms < 100 {
            problems.push(format!("`timeout_ms = {timeout_ms}`: give at least 100"));
        }
        let attempts = raw.attempts.unwrap_or(6);
        if !(1..=20).contains(&attempts) {
            problems.push(format!("`attempts = {attempts}`: give 1 to 20"));
        }
        let max_page_bytes = raw.max_page_bytes.unwrap_or(64 << 20);
        if max_page_bytes < 1024 {
            problems.push(format!(
                "`max_page_bytes = {max_page_bytes}`: give at least 1024"
            ));
        }
        if raw.name.is_empty() {
            problems.push("`name` is empty".into());
        }
        if !problems.is_empty() {
            return Err(Error::config(problems.join("; ")));
        }
        Ok(SourceConfig {
            first,
            method,
            headers: raw.headers.into_iter().collect(),
            body: raw.body.map(|b| b.to_string().into_bytes()),
            auth,
            records: path(raw.records.as_deref().unwrap_or("")),
            pagination,
            max_pages,
            incremental,
            columns,
            infer,
            primary_key: raw.primary_key,
            timeout_ms,
            attempts,
            max_page_bytes: max_page_bytes as usize,
            name: raw.name,
        })
    }
}

/// The JSON Schema of the config.
pub fn spec() -> String {
    config::spec::<RawConfig>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(json: &str) -> String {
        match SourceConfig::parse(json) {
            Err(Error::InvalidConfig(m)) => m,
            other => panic!("expected invalid-config, got {other:?}"),
        }
    }

    #[test]
    fn the_first_url_carries_the_query_and_the_pagination_start() {
        let c = SourceConfig::parse(
            r#"{"url":"http://api.test/v1/orders?status=open","name":"orders","query":{"sort":"id"},
                "pagination":{"style":"offset","param":"offset","limit_param":"limit","limit":50}}"#,
        )
        .unwrap();
        assert_eq!(
            c.first.to_string(),
            "http://api.test/v1/orders?status=open&sort=id&offset=0&limit=50"
        );
        assert_eq!(
            c.pagination,
            Pagination::Offset {
                param: "offset".into(),
                limit: 50
            }
        );
        assert_eq!((c.max_pages, c.attempts, c.timeout_ms), (10_000, 6, 30_000));
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let m = problems(
            r#"{"url":"ftp://x","name":"o","method":"PUT","headers":{"Authorization":"x"},
                "columns":{"a":"int32"},"max_pages":0,"attempts":50,
                "auth":{"type":"api-key","secret":"k","header":"X","query":"q"}}"#,
        );
        for part in [
            "`url = \"ftp://x\"`",
            "`method = \"PUT\"`",
            "`headers.Authorization`",
            "`columns.a = \"int32\"`",
            "`max_pages = 0`",
            "`attempts = 50`",
            "not both",
        ] {
            assert!(m.contains(part), "{part} missing from: {m}");
        }
        assert!(problems(r#"{"url":"http://x/","name":"o","pages":1}"#).contains("pages"));
    }
}
