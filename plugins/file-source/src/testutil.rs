//! For the tests: temporary directories, unique per test and removed when dropped, and a
//! small seeded random generator, so that a failing input can be replayed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub struct TempDir {
    root: String,
}

impl TempDir {
    pub fn new(label: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root: PathBuf =
            std::env::temp_dir().join(format!("file-source-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        TempDir {
            root: root.to_str().unwrap().to_string(),
        }
    }

    pub fn path(&self) -> &str {
        &self.root
    }

    /// The path of `name` inside the directory.
    pub fn file(&self, name: &str) -> String {
        format!("{}/{name}", self.root)
    }

    /// Write `name` (creating parent directories) and return its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        let path = self.file(name);
        if let Some(parent) = std::path::Path::new(&path).parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Append to `name`.
    pub fn append(&self, name: &str, contents: impl AsRef<[u8]>) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.file(name))
            .unwrap();
        f.write_all(contents.as_ref()).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A xorshift generator: the same seed gives the same numbers.
pub struct Rng(pub u64);

impl Rng {
    /// A number below `n` (at least 1).
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}
