//! The instance's console log, bounded: qemu appends to `console.log` (opened with O_APPEND),
//! and when it grows past the limit its content moves to `console.log.1` and it is truncated
//! in place (qemu keeps its descriptor and goes on appending at the new end). Output written
//! between the copy and the truncation (a few ms) is lost. The size is checked every 2 s, so
//! the current part can pass the limit by what the guest writes in that time.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The file qemu writes.
pub const CURRENT: &str = "console.log";
/// The previous part.
pub const PREVIOUS: &str = "console.log.1";

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Bytes kept for the instance's log.
pub fn size(dir: &Path) -> u64 {
    file_len(&dir.join(CURRENT)) + file_len(&dir.join(PREVIOUS))
}

/// The last `max` bytes of `path`.
fn read_tail(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(max);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The last `max_bytes` of the log (both parts), lossily decoded and cut at a character
/// boundary.
pub fn tail(dir: &Path, max_bytes: usize) -> std::io::Result<String> {
    let max = max_bytes as u64;
    let current = read_tail(&dir.join(CURRENT), max)?;
    let mut bytes = read_tail(
        &dir.join(PREVIOUS),
        max.saturating_sub(current.len() as u64),
    )?;
    bytes.extend_from_slice(&current);
    let text = String::from_utf8_lossy(&bytes);
    Ok(crate::tail(&text, max_bytes).to_owned())
}

/// Moves the log to its previous part when it is longer than `limit` bytes; true if it did.
pub fn rotate_if_needed(dir: &Path, limit: u64) -> std::io::Result<bool> {
    let current = dir.join(CURRENT);
    if limit == 0 || file_len(&current) <= limit {
        return Ok(false);
    }
    std::fs::copy(&current, dir.join(PREVIOUS))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&current)?
        .set_len(0)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn rotates_past_the_limit_and_tails_across_both_parts() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join(CURRENT))
            .unwrap();
        writer.write_all(b"first line\n").unwrap();
        assert!(!rotate_if_needed(dir.path(), 100).unwrap());
        writer.write_all(&[b'x'; 100]).unwrap();
        writer.write_all(b"\nend of part one\n").unwrap();
        assert!(rotate_if_needed(dir.path(), 100).unwrap());
        // The writer's O_APPEND descriptor continues at the start of the truncated file.
        writer.write_all(b"part two\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CURRENT)).unwrap(),
            "part two\n"
        );
        assert_eq!(
            tail(dir.path(), 26).unwrap(),
            "\nend of part one\npart two\n"
        );
        assert_eq!(tail(dir.path(), 4).unwrap(), "two\n");
        assert!(
            tail(dir.path(), 10_000)
                .unwrap()
                .starts_with("first line\n")
        );
        assert_eq!(size(dir.path()), 11 + 100 + 17 + 9);
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(tail(empty.path(), 10).unwrap(), "");
    }
}
