//! The instance's console log, bounded ([`LogFile`]): qemu appends to `console.log` (opened
//! with O_APPEND) and its content moves to `console.log.1` past the limit. The size is checked
//! every 2 s, so the current part can pass the limit by what the guest writes in that time.

use std::path::Path;

use crate::logfile::LogFile;

/// The file qemu writes.
pub const CURRENT: &str = "console.log";

fn console(dir: &Path) -> LogFile {
    LogFile::new(dir.join(CURRENT))
}

/// Bytes kept for the instance's log.
pub fn size(dir: &Path) -> u64 {
    console(dir).size()
}

/// The last `max_bytes` of the log (both parts), lossily decoded and cut at a character
/// boundary; empty when there is none.
pub fn tail(dir: &Path, max_bytes: usize) -> std::io::Result<String> {
    Ok(console(dir).tail(max_bytes)?.unwrap_or_default())
}

/// Moves the log to its previous part when it is longer than `limit` bytes (0: unbounded);
/// true if it did.
pub fn rotate_if_needed(dir: &Path, limit: u64) -> std::io::Result<bool> {
    if limit == 0 {
        return Ok(false);
    }
    console(dir).rotate_if_larger(limit)
}
