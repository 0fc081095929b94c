//! Which files `path` names: a plain path or a glob (`*`, `?` within a name, `**` for any
//! number of directories), expanded with `std::fs` inside the sandbox, how an I/O error on
//! a path becomes an error the host acts on, and the refill step of the readers that keep
//! their own buffer.
//!
//! Wildcards do not match a leading `.`, as in a shell, so hidden files and directories are
//! left out unless the pattern spells the dot.

use std::fs;
use std::io::{self, Read, Seek};

use ingest_sdk::Error;

/// Whether `pattern` holds a wildcard.
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// The files `pattern` names, sorted by path. An empty list means nothing matched.
pub fn expand(pattern: &str) -> Result<Vec<String>, Error> {
    if !is_glob(pattern) {
        let meta = fs::metadata(pattern).map_err(|e| io_error(pattern, "open", e))?;
        if meta.is_dir() {
            return Err(Error::config(format!(
                "`path` names the directory `{pattern}`; name a file or a glob such as \
                 `{}/*.csv`",
                pattern.trim_end_matches('/')
            )));
        }
        return Ok(vec![pattern.to_string()]);
    }
    // The directory part before the first wildcard is walked from; the rest is matched.
    let first_wild = pattern.find(['*', '?']).unwrap_or(pattern.len());
    let (base, rest) = match pattern[..first_wild].rfind('/') {
        Some(slash) => (&pattern[..=slash], &pattern[slash + 1..]),
        None => ("", pattern),
    };
    let dir = match base.trim_end_matches('/') {
        "" if base.is_empty() => ".",
        "" => "/",
        d => d,
    };
    let meta = fs::metadata(dir).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::config(format!(
            "no file matches `{pattern}`: the directory `{dir}` does not exist (if it \
             exists on the host, grant it in the plugin's `fs` list)"
        )),
        _ => io_error(dir, "list", e),
    })?;
    if !meta.is_dir() {
        return Err(Error::config(format!(
            "no file matches `{pattern}`: `{dir}` is not a directory"
        )));
    }
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let mut found = Vec::new();
    walk(dir, base, &parts, &mut found, 0)?;
    found.sort();
    found.dedup();
    Ok(found)
}

// Symlinked directories can form loops; no sane layout is this deep.
const MAX_DEPTH: usize = 64;

/// Match `parts` below `dir`; `shown` is how `dir` is spelled in the paths returned.
fn walk(
    dir: &str,
    shown: &str,
    parts: &[&str],
    found: &mut Vec<String>,
    depth: usize,
) -> Result<(), Error> {
    let Some((&part, rest)) = parts.split_first() else {
        return Ok(());
    };
    if depth > MAX_DEPTH {
        return Ok(());
    }
    if part == "**" {
        // A trailing `**` means every file below.
        let rest_or_all: &[&str] = if rest.is_empty() { &["*"] } else { rest };
        walk(dir, shown, rest_or_all, found, depth + 1)?;
        for (name, path) in entries(dir)? {
            if !name.starts_with('.') && is_dir(&path) {
                walk(&path, &join(shown, &name), parts, found, depth + 1)?;
            }
        }
        return Ok(());
    }
    if !is_glob(part) {
        let path = join_fs(dir, part);
        let shown = join(shown, part);
        if rest.is_empty() {
            if is_file(&path) {
                found.push(shown);
            }
        } else if is_dir(&path) {
            walk(&path, &shown, rest, found, depth + 1)?;
        }
        return Ok(());
    }
    for (name, path) in entries(dir)? {
        if (name.starts_with('.') && !part.starts_with('.')) || !wildcard_match(part, &name) {
            continue;
        }
        if rest.is_empty() {
            if is_file(&path) {
                found.push(join(shown, &name));
            }
        } else if is_dir(&path) {
            walk(&path, &join(shown, &name), rest, found, depth + 1)?;
        }
    }
    Ok(())
}

/// The entries of `dir` as (name, path to open). Names that are not UTF-8 cannot match a
/// UTF-8 pattern and are left out.
fn entries(dir: &str) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    let list = fs::read_dir(dir).map_err(|e| io_error(dir, "list", e))?;
    for entry in list {
        let entry = entry.map_err(|e| io_error(dir, "list", e))?;
        if let Ok(name) = entry.file_name().into_string() {
            let path = join_fs(dir, &name);
            out.push((name, path));
        }
    }
    Ok(out)
}

fn is_file(path: &str) -> bool {
    fs::metadata(path).map(|m| m.is_file()).unwrap_or(false)
}

fn is_dir(path: &str) -> bool {
    fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false)
}

fn join_fs(dir: &str, name: &str) -> String {
    if dir == "." {
        name.to_string()
    } else {
        join(dir, name)
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// `*` matches any run of characters, `?` exactly one; everything else matches itself.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was and how much of the name it has swallowed so far.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The stream name `path` implies: the file stem of a plain path; for a glob, the literal
/// start of its last part (`orders_*.csv` → `orders`), or `default` when it has none.
pub fn default_stream_name(pattern: &str) -> String {
    let last = pattern.rsplit('/').next().unwrap_or(pattern);
    let stem = if is_glob(last) {
        let literal = &last[..last.find(['*', '?']).unwrap_or(last.len())];
        literal.trim_end_matches(['_', '-', '.', ' '])
    } else {
        match last.rfind('.') {
            Some(dot) if dot > 0 => &last[..dot],
            _ => last,
        }
    };
    if stem.is_empty() {
        "default".to_string()
    } else {
        stem.to_string()
    }
}

/// Open `path` for reading at byte `offset`, which a saved position named; a file now
/// shorter than that was truncated or replaced, and reading on would skip or repeat data.
pub fn open_at(path: &str, offset: u64) -> Result<fs::File, Error> {
    let mut file = fs::File::open(path).map_err(|e| io_error(path, "open", e))?;
    if offset > 0 {
        let len = file
            .metadata()
            .map_err(|e| io_error(path, "read", e))?
            .len();
        if len < offset {
            return Err(Error::data(format!(
                "`{path}` has {len} bytes but the saved position is at byte {offset}: the \
                 file was truncated or replaced since; reset the stream's state to read it \
                 again from the start"
            )));
        }
        file.seek(io::SeekFrom::Start(offset))
            .map_err(|e| io_error(path, "read", e))?;
    }
    Ok(file)
}

/// Turn an I/O error on `path` into the error the host acts on: a missing file is a
/// config problem, a refused one a missing grant, anything else fatal.
pub fn io_error(path: &str, action: &str, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        return Error::config(format!(
            "cannot {action} `{path}`: it does not exist (if it exists on the host, grant \
             its directory in the plugin's `fs` list)"
        ));
    }
    if e.kind() == io::ErrorKind::PermissionDenied || not_capable(&e) {
        return Error::AccessDenied(format!(
            "cannot {action} `{path}`: {e}; grant its directory in the plugin's `fs` list"
        ));
    }
    Error::fatal(format!("cannot {action} `{path}`: {e}"))
}

// WASI reports a path outside every preopened directory as ENOTCAPABLE (76 in wasi-libc),
// which std does not map to PermissionDenied.
#[cfg(target_os = "wasi")]
fn not_capable(e: &io::Error) -> bool {
    e.raw_os_error() == Some(76)
}

#[cfg(not(target_os = "wasi"))]
fn not_capable(_: &io::Error) -> bool {
    false
}

/// Read more of `src` into `buf` after its first `*hi` bytes, advancing `*hi`; at the end of
/// the input, set `*eof`. An interrupted read reads nothing and is not an error.
pub fn read_more(
    src: &mut impl Read,
    buf: &mut [u8],
    hi: &mut usize,
    eof: &mut bool,
) -> io::Result<()> {
    match src.read(&mut buf[*hi..]) {
        Ok(0) => *eof = true,
        Ok(n) => *hi += n,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn wildcards_match_within_a_name() {
        assert!(wildcard_match("*.csv", "orders.csv"));
        assert!(wildcard_match("orders_??.csv", "orders_01.csv"));
        assert!(!wildcard_match("orders_??.csv", "orders_1.csv"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(!wildcard_match("a*b*c", "aXXbYY"));
        assert!(wildcard_match("*", ""));
    }

    #[test]
    fn stream_name_defaults_to_the_stem_or_the_literal_glob_prefix() {
        assert_eq!(default_stream_name("data/orders.csv"), "orders");
        assert_eq!(default_stream_name("data/orders_*.csv"), "orders");
        assert_eq!(default_stream_name("data/**/events.jsonl"), "events");
        assert_eq!(default_stream_name("data/*.csv"), "default");
        assert_eq!(default_stream_name(".hidden"), ".hidden");
    }

    #[test]
    fn a_glob_expands_to_matching_files_sorted_and_skips_hidden_ones() {
        let dir = TempDir::new("glob");
        dir.write("b.csv", "x");
        dir.write("a.csv", "x");
        dir.write(".hidden.csv", "x");
        dir.write("notes.txt", "x");
        dir.write("sub/c.csv", "x");
        dir.write("sub/deeper/d.csv", "x");
        let root = dir.path();
        assert_eq!(
            expand(&format!("{root}/*.csv")).unwrap(),
            vec![format!("{root}/a.csv"), format!("{root}/b.csv")]
        );
        assert_eq!(
            expand(&format!("{root}/**/*.csv")).unwrap(),
            vec![
                format!("{root}/a.csv"),
                format!("{root}/b.csv"),
                format!("{root}/sub/c.csv"),
                format!("{root}/sub/deeper/d.csv"),
            ]
        );
        assert_eq!(
            expand(&format!("{root}/s?b/*.csv")).unwrap(),
            vec![format!("{root}/sub/c.csv")]
        );
        assert!(expand(&format!("{root}/*.parquet")).unwrap().is_empty());
    }

    #[test]
    fn a_missing_path_is_a_config_error_naming_it() {
        let dir = TempDir::new("missing");
        let path = format!("{}/nope/orders.csv", dir.path());
        match expand(&path) {
            Err(Error::InvalidConfig(m)) => assert!(m.contains(&path), "{m}"),
            other => panic!("{other:?}"),
        }
        let glob = format!("{}/nope/*.csv", dir.path());
        match expand(&glob) {
            Err(Error::InvalidConfig(m)) => {
                assert!(m.contains(&format!("no file matches `{glob}`")), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_directory_is_not_a_file() {
        let dir = TempDir::new("isdir");
        match expand(dir.path()) {
            Err(Error::InvalidConfig(m)) => assert!(m.contains("directory"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
