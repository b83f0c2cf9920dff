//! An instance's log file, bounded, as both runtimes keep it: a writer outside this process
//! (the containerd shim's logger, or qemu) appends to `<name>` (opened with O_APPEND), and when
//! it grows past the limit its content moves to `<name>.1` and it is truncated in place (the
//! writer keeps its descriptor and goes on appending at the new end). Output written between
//! the copy and the truncation (a few ms) is lost.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A log file and its previous part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogFile {
    path: PathBuf,
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The last `max` bytes of `path`.
fn read_tail(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(max);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

impl LogFile {
    /// The log at `path`.
    pub(crate) fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The current part.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The previous part, `<path>.1`.
    pub(crate) fn previous(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    /// Bytes kept in both parts.
    pub(crate) fn size(&self) -> u64 {
        file_len(&self.path) + file_len(&self.previous())
    }

    /// Moves the log to its previous part when it is longer than `limit` bytes; true if it
    /// did.
    pub(crate) fn rotate_if_larger(&self, limit: u64) -> io::Result<bool> {
        if file_len(&self.path) <= limit {
            return Ok(false);
        }
        std::fs::copy(&self.path, self.previous())?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)?
            .set_len(0)?;
        Ok(true)
    }

    /// The last `max_bytes` of the log (both parts), lossily decoded and cut at a character
    /// boundary; `None` when there is no current part.
    pub(crate) fn tail(&self, max_bytes: usize) -> io::Result<Option<String>> {
        let max = max_bytes as u64;
        let current = match read_tail(&self.path, max) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let rest = max.saturating_sub(current.len() as u64);
        let mut bytes = match read_tail(&self.previous(), rest) {
            Ok(bytes) if rest > 0 => bytes,
            Ok(_) => Vec::new(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        bytes.extend_from_slice(&current);
        let text = String::from_utf8_lossy(&bytes);
        Ok(Some(crate::tail(&text, max_bytes).to_owned()))
    }

    /// Appends `text` (a note of ours between the writer's lines), creating the file.
    pub(crate) fn append(&self, text: &str) -> io::Result<()> {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)?
            .write_all(text.as_bytes())
    }

    /// Starts an empty log: the current part empty, no previous part.
    pub(crate) fn reset(&self) -> io::Result<()> {
        std::fs::write(&self.path, b"")?;
        self.remove_previous();
        Ok(())
    }

    fn remove_previous(&self) {
        let _ = std::fs::remove_file(self.previous());
    }

    /// Removes both parts; missing ones are fine.
    pub(crate) fn remove(&self) {
        self.remove_previous();
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_past_the_limit_and_tails_across_both_parts() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::new(dir.path().join("console.log"));
        assert_eq!(log.previous(), dir.path().join("console.log.1"));
        assert_eq!(log.tail(10).unwrap(), None);
        let mut writer = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log.path())
            .unwrap();
        writer.write_all(b"first line\n").unwrap();
        assert!(!log.rotate_if_larger(100).unwrap());
        writer.write_all(&[b'x'; 100]).unwrap();
        writer.write_all(b"\nend of part one\n").unwrap();
        assert!(log.rotate_if_larger(100).unwrap());
        // The writer's O_APPEND descriptor continues at the start of the truncated file.
        writer.write_all(b"part two\n").unwrap();
        assert_eq!(std::fs::read_to_string(log.path()).unwrap(), "part two\n");
        assert_eq!(
            log.tail(26).unwrap().unwrap(),
            "\nend of part one\npart two\n"
        );
        assert_eq!(log.tail(4).unwrap().unwrap(), "two\n");
        assert!(
            log.tail(10_000)
                .unwrap()
                .unwrap()
                .starts_with("first line\n")
        );
        assert_eq!(log.size(), 11 + 100 + 17 + 9);

        log.append("[note]\n").unwrap();
        assert!(log.tail(100).unwrap().unwrap().ends_with("two\n[note]\n"));
        log.reset().unwrap();
        assert_eq!(log.tail(100).unwrap().unwrap(), "");
        assert!(!log.previous().exists());
        log.remove();
        assert!(!log.path().exists());
        assert_eq!(log.size(), 0);
    }
}
