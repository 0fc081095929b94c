//! `host new plugin`: writes a ready plugin project — code, build script, test pipeline and
//! input — for a language and a kind, with the contract (`wit/plugin.wit`) and that
//! language's SDK copied in, so the project builds on its own with one command.

use std::path::{Path, PathBuf};

use crate::plugin::Kind;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/scaffold.rs"));
}

/// A language plugins can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl Lang {
    fn dir(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }

    /// The SDK, as (directory in the repository, directory in the project).
    fn sdk(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Lang::Rust => &[
                ("plugins/sdk/src/", "vendor/ingest-sdk/src/"),
                ("templates/rust/sdk/", "vendor/ingest-sdk/"),
            ],
            Lang::Python => &[("sdks/python/ingest_plugin/", "ingest_plugin/")],
            Lang::Js => &[("sdks/js/lib/", "lib/")],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("plugin name {0:?}: use lower-case letters, digits and dashes, starting with a letter (e.g. `orders-filter`)")]
    Name(String),
    #[error("{} already exists; choose another name or directory", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && name.len() <= 64
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'))
        && !name.ends_with('-')
}

/// The files of a new project, as (path in the project, contents).
pub fn files(lang: Lang, kind: Kind, name: &str) -> Result<Vec<(PathBuf, Vec<u8>)>, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::Name(name.to_string()));
    }
    let template = format!("templates/{}/{kind}/", lang.dir());
    let mut out = Vec::new();
    for (path, bytes) in embedded::FILES {
        let target = if *path == "wit/plugin.wit" {
            Some(path.to_string())
        } else if let Some(rest) = path.strip_prefix(template.as_str()) {
            Some(rest.to_string())
        } else {
            lang.sdk()
                .iter()
                .find_map(|(from, to)| path.strip_prefix(from).map(|rest| format!("{to}{rest}")))
        };
        let Some(target) = target else { continue };
        // Only the template itself is personalised; the SDK and the contract are copied
        // as they are.
        let bytes = if path.starts_with(template.as_str()) {
            String::from_utf8_lossy(bytes)
                .replace("{{name}}", name)
                .into_bytes()
        } else {
            bytes.to_vec()
        };
        out.push((PathBuf::from(target), bytes));
    }
    Ok(out)
}

/// Write a new project for a `kind` plugin in `lang` named `name` into `parent/name`;
/// returns the project's directory.
pub fn new_plugin(
    lang: Lang,
    kind: Kind,
    name: &str,
    parent: &Path,
) -> Result<PathBuf, ScaffoldError> {
    let files = files(lang, kind, name)?;
    let dir = parent.join(name);
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScaffoldError::Io { path, source }
    };
    for (relative, bytes) in files {
        let path = dir.join(&relative);
        std::fs::create_dir_all(path.parent().expect("files live in the project"))
            .map_err(io(&path))?;
        std::fs::write(&path, bytes).map_err(io(&path))?;
        if path.extension().is_some_and(|e| e == "sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(io(&path))?;
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_has_every_kind_with_a_build_script_and_a_pipeline() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            for kind in [Kind::Source, Kind::Transform, Kind::Sink] {
                let files = files(lang, kind, "my-plugin").unwrap();
                let has = |p: &str| files.iter().any(|(path, _)| path == Path::new(p));
                assert!(has("build.sh"), "{lang:?} {kind}");
                assert!(has("pipeline.toml"), "{lang:?} {kind}");
                assert!(has("wit/plugin.wit"), "{lang:?} {kind}");
                for (path, bytes) in &files {
                    let text = String::from_utf8_lossy(bytes);
                    assert!(
                        !text.contains("{{name}}"),
                        "{lang:?} {kind}: {} keeps a placeholder",
                        path.display()
                    );
                }
            }
        }
    }

    #[test]
    fn names_must_be_usable_as_pipeline_crate_and_file_names() {
        for bad in ["", "My", "1st", "a_b", "a b", "ends-", "../x"] {
            assert!(files(Lang::Rust, Kind::Transform, bad).is_err(), "{bad:?}");
        }
        assert!(files(Lang::Rust, Kind::Transform, "orders-filter2").is_ok());
    }
}
