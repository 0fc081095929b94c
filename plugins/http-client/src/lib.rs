//! One HTTP exchange over wasi:http, blocking: the host sends the request if the plugin's
//! `http` grant allows its URL, with the timeouts asked for, and hands the response back.
//! Natively (unit tests) there is no wasi:http; [`send`] says so.

/// A request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    Head,
}

/// A response, read whole (up to the limit given to [`send`]).
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (names compare without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why no response came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The host refused the URL: it is outside the plugin's `http` grant.
    Denied(String),
    /// The connection or the exchange failed (refused, reset, timed out): worth a retry.
    Transport(String),
    /// The response body is over the limit.
    TooLarge(usize),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Denied(why) => write!(f, "denied by the sandbox: {why}"),
            Failure::Transport(why) => f.write_str(why),
            Failure::TooLarge(limit) => write!(f, "the response body is over {limit} bytes"),
        }
    }
}

/// Send `request` and read the response body, up to `max_body` bytes.
pub fn send(request: &Request, max_body: usize) -> Result<Response, Failure> {
    send_into(request, max_body, None)
}

/// Send `request`; a 2xx response's body is written to `into` as it arrives, whatever its
/// length (the response returned has none), any other body is read into the response, up
/// to `max_body` bytes. Without `into`, as [`send`].
#[cfg(target_family = "wasm")]
pub fn send_into(
    request: &Request,
    max_body: usize,
    mut into: Option<&mut dyn std::io::Write>,
) -> Result<Response, Failure> {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        ErrorCode, Fields, Method as WasiMethod, OutgoingBody, OutgoingRequest, RequestOptions,
        Scheme,
    };
    use wasip2::io::streams::StreamError;

    let (scheme, rest) = if let Some(rest) = request.url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = request.url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else {
        return Err(Failure::Transport(format!(
            "{} is not an http:// or https:// URL",
            request.url
        )));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => rest.split_at(i),
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    let headers = Fields::new();
    for (name, value) in &request.headers {
        headers
            .append(name, value.as_bytes())
            .map_err(|e| Failure::Transport(format!("header `{name}`: {e:?}")))?;
    }
    let outgoing = OutgoingRequest::new(headers);
    let bad = |what: &str| Failure::Transport(format!("{}: bad {what}", request.url));
    outgoing
        .set_method(match request.method {
            Method::Get => &WasiMethod::Get,
            Method::Post => &WasiMethod::Post,
            Method::Put => &WasiMethod::Put,
            Method::Delete => &WasiMethod::Delete,
            Method::Head => &WasiMethod::Head,
        })
        .map_err(|()| bad("method"))?;
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| bad("scheme"))?;
    outgoing
        .set_authority(Some(authority))
        .map_err(|()| bad("authority"))?;
    outgoing
        .set_path_with_query(Some(&path))
        .map_err(|()| bad("path"))?;
    let options = RequestOptions::new();
    let timeout_ns = request.timeout_ms.saturating_mul(1_000_000);
    let _ = options.set_connect_timeout(Some(timeout_ns));
    let _ = options.set_first_byte_timeout(Some(timeout_ns));
    let _ = options.set_between_bytes_timeout(Some(timeout_ns));
    let body = outgoing.body().map_err(|()| bad("body"))?;
    let pending = outgoing_handler::handle(outgoing, Some(options)).map_err(|e| match e {
        ErrorCode::HttpRequestDenied => Failure::Denied(format!(
            "{} is outside the plugin's `http` grant",
            request.url
        )),
        e => Failure::Transport(format!("{}: {e:?}", request.url)),
    })?;
    if let Some(bytes) = &request.body {
        let stream = body.write().map_err(|()| bad("body stream"))?;
        let failed = |e| Failure::Transport(format!("{}: sending the body: {e:?}", request.url));
        // As much as the stream takes at a time (one host call per write, not per 4 KiB),
        // waiting for room when it has none; one flush at the end.
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let room = stream.check_write().map_err(failed)? as usize;
            if room == 0 {
                stream.subscribe().block();
                continue;
            }
            let (now, later) = rest.split_at(room.min(rest.len()));
            stream.write(now).map_err(failed)?;
            rest = later;
        }
        stream.blocking_flush().map_err(failed)?;
        drop(stream);
    }
    OutgoingBody::finish(body, None)
        .map_err(|e| Failure::Transport(format!("{}: {e:?}", request.url)))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or_else(|| Failure::Transport(format!("{}: no response", request.url)))?
        .map_err(|()| bad("response"))?
        .map_err(|e| match e {
            ErrorCode::HttpRequestDenied => Failure::Denied(format!(
                "{} is outside the plugin's `http` grant",
                request.url
            )),
            e => Failure::Transport(format!("{}: {e:?}", request.url)),
        })?;
    let mut out = Response {
        status: response.status(),
        headers: response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect(),
        body: Vec::new(),
    };
    let mut into = into.take().filter(|_| (200..300).contains(&out.status));
    // Room for the whole body at once when its length is given and it is kept.
    let length = out
        .header("content-length")
        .and_then(|v| v.trim().parse::<usize>().ok());
    if let (None, Some(length)) = (&into, length) {
        out.body.reserve_exact(length.min(max_body));
    }
    let incoming = response.consume().map_err(|()| bad("response body"))?;
    let stream = incoming.stream().map_err(|()| bad("response stream"))?;
    loop {
        match stream.blocking_read(1 << 20) {
            Ok(chunk) => {
                if let Some(into) = into.as_mut() {
                    into.write_all(&chunk).map_err(|e| {
                        Failure::Transport(format!("{}: writing the body: {e}", request.url))
                    })?;
                    continue;
                }
                if out.body.len() + chunk.len() > max_body {
                    return Err(Failure::TooLarge(max_body));
                }
                out.body.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => break,
            Err(e) => {
                return Err(Failure::Transport(format!(
                    "{}: reading the response: {e:?}",
                    request.url
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(not(target_family = "wasm"))]
pub fn send_into(
    request: &Request,
    _max_body: usize,
    _into: Option<&mut dyn std::io::Write>,
) -> Result<Response, Failure> {
    Err(Failure::Transport(format!(
        "{}: wasi:http exists only in the component",
        request.url
    )))
}
