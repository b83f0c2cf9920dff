//! Unikernel images: the `.tar.gz` URL for this worker's arch, downloaded once and unpacked
//! into a cache directory keyed by the URL's hash.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::RuntimeError;

/// The SLA spelling of this worker's architecture (`amd64`, `arm64`, or Rust's own name).
pub fn worker_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Whether an SLA `arch` entry names `arch` (accepting the Rust/uname spellings too).
fn arch_matches(entry: &str, arch: &str) -> bool {
    let canonical = |a: &str| match a.trim().to_ascii_lowercase().as_str() {
        "x86_64" | "x86-64" | "amd64" => "amd64".to_owned(),
        "aarch64" | "arm64" => "arm64".to_owned(),
        other => other.to_owned(),
    };
    canonical(entry) == canonical(arch)
}

/// The URL in `code` (comma-separated, parallel to `arches`) for `arch`. With no `arch`
/// list, a single URL is taken as built for this worker.
pub fn select_url(code: &str, arches: &[String], arch: &str) -> Result<String, RuntimeError> {
    let urls: Vec<&str> = code
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let fail = |reason: String| RuntimeError::Image {
        image: code.to_owned(),
        reason,
    };
    if urls.is_empty() {
        return Err(fail(
            "code is empty; it must hold one .tar.gz URL per arch entry".into(),
        ));
    }
    if arches.is_empty() {
        return match urls.as_slice() {
            [one] => Ok((*one).to_owned()),
            _ => Err(fail(format!(
                "code lists {} URLs but arch is empty; give one arch entry per URL",
                urls.len()
            ))),
        };
    }
    if urls.len() != arches.len() {
        return Err(fail(format!(
            "code lists {} URLs but arch has {} entries ({}); they must be parallel",
            urls.len(),
            arches.len(),
            arches.join(", ")
        )));
    }
    arches
        .iter()
        .position(|a| arch_matches(a, arch))
        .map(|i| urls[i].to_owned())
        .ok_or_else(|| {
            fail(format!(
                "code has no entry for arch {arch}; it lists {}",
                arches.join(", ")
            ))
        })
}

/// An unpacked image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The kernel.
    pub kernel: PathBuf,
    /// The initrd (`initrd` or `initramfs.cpio` in the archive), if any.
    pub initrd: Option<PathBuf>,
    /// Directories shared with the guest over virtio-9p, as (mount tag, directory):
    /// `files/` → `fs0`, `files1/` → `fs1` (Oakestra's layout).
    pub shares: Vec<(String, PathBuf)>,
}

impl Image {
    fn in_dir(dir: &Path) -> Option<Self> {
        let kernel = dir.join("kernel");
        if !kernel.is_file() {
            return None;
        }
        let initrd = ["initrd", "initramfs.cpio"]
            .iter()
            .map(|name| dir.join(name))
            .find(|p| p.is_file());
        let shares = [("fs0", "files"), ("fs1", "files1")]
            .iter()
            .map(|(tag, name)| ((*tag).to_owned(), dir.join(name)))
            .filter(|(_, p)| p.is_dir())
            .collect();
        Some(Self {
            kernel,
            initrd,
            shares,
        })
    }
}

/// The download cache. Concurrent requests for one URL download it once.
#[derive(Debug)]
pub struct ImageCache {
    dir: PathBuf,
    client: reqwest::Client,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    downloads: AtomicU64,
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The error's message with its sources, so "error sending request" says why.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

impl ImageCache {
    /// A cache in `dir` (created on first use).
    pub fn new(dir: PathBuf, connect_timeout: Duration, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        Self {
            dir,
            client,
            locks: Mutex::new(HashMap::new()),
            downloads: AtomicU64::new(0),
        }
    }

    /// How many archives were downloaded (not served from the cache) since creation.
    pub fn downloads(&self) -> u64 {
        self.downloads.load(Ordering::Relaxed)
    }

    /// The unpacked image of `url`, downloading it if it is not cached.
    pub async fn get(&self, url: &str) -> Result<Image, RuntimeError> {
        let key = sha256_hex(url);
        let target = self.dir.join(&key);
        if let Some(image) = Image::in_dir(&target) {
            return Ok(image);
        }
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let _guard = lock.lock().await;
        if let Some(image) = Image::in_dir(&target) {
            return Ok(image);
        }
        let fail = |reason: String| RuntimeError::Image {
            image: url.to_owned(),
            reason,
        };
        let io = |what: &str, e: std::io::Error| fail(format!("{what}: {e}"));
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| io(&format!("creating {}", self.dir.display()), e))?;
        let archive = self.dir.join(format!("{key}.tar.gz.part"));
        self.download(url, &archive).await?;
        self.downloads.fetch_add(1, Ordering::Relaxed);
        let staging = self.dir.join(format!("{key}.unpacking"));
        let (archive2, staging2) = (archive.clone(), staging.clone());
        let unpacked = tokio::task::spawn_blocking(move || unpack(&archive2, &staging2))
            .await
            .map_err(|e| fail(format!("unpacking task failed: {e}")))?;
        let _ = tokio::fs::remove_file(&archive).await;
        if let Err(reason) = unpacked {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return Err(fail(reason));
        }
        let _ = tokio::fs::remove_dir_all(&target).await;
        tokio::fs::rename(&staging, &target)
            .await
            .map_err(|e| io("moving the unpacked image into the cache", e))?;
        Image::in_dir(&target).ok_or_else(|| fail("the unpacked image has no kernel".into()))
    }

    async fn download(&self, url: &str, to: &Path) -> Result<(), RuntimeError> {
        let fail = |reason: String| RuntimeError::Image {
            image: url.to_owned(),
            reason,
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(fail(
                "not an http:// or https:// URL of a .tar.gz archive".into(),
            ));
        }
        let mut response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| fail(format!("cannot download: {}", chain(&e))))?;
        if !response.status().is_success() {
            return Err(fail(format!(
                "download answered HTTP {}",
                response.status()
            )));
        }
        let mut file = tokio::fs::File::create(to)
            .await
            .map_err(|e| fail(format!("creating {}: {e}", to.display())))?;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| fail(format!("download interrupted: {}", chain(&e))))?
        {
            file.write_all(&chunk)
                .await
                .map_err(|e| fail(format!("writing {}: {e}", to.display())))?;
        }
        file.flush()
            .await
            .map_err(|e| fail(format!("writing {}: {e}", to.display())))?;
        Ok(())
    }
}

/// Unpacks a `.tar.gz` into `dir` (entries escaping `dir` are skipped by `tar`) and checks
/// that it holds a `kernel`.
fn unpack(archive: &Path, dir: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let file = std::fs::File::open(archive).map_err(|e| format!("opening the archive: {e}"))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    tar.unpack(dir)
        .map_err(|e| format!("not a valid .tar.gz archive: {e}"))?;
    if dir.join("kernel").is_file() {
        return Ok(());
    }
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    Err(format!(
        "the archive has no `kernel` file at its top level (it holds: {})",
        if names.is_empty() {
            "nothing".to_owned()
        } else {
            names.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arches(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn picks_the_url_of_this_arch() {
        let code = "http://a/x86.tar.gz, http://a/arm.tar.gz";
        let list = arches(&["amd64", "arm64"]);
        assert_eq!(
            select_url(code, &list, "amd64").unwrap(),
            "http://a/x86.tar.gz"
        );
        assert_eq!(
            select_url(code, &list, "arm64").unwrap(),
            "http://a/arm.tar.gz"
        );
        assert_eq!(
            select_url(code, &arches(&["x86_64", "aarch64"]), "amd64").unwrap(),
            "http://a/x86.tar.gz"
        );
    }

    #[test]
    fn explains_a_missing_arch_and_mismatched_lists() {
        let err = select_url("http://a/arm.tar.gz", &arches(&["arm64"]), "amd64").unwrap_err();
        assert!(
            err.to_string()
                .contains("code has no entry for arch amd64; it lists arm64"),
            "{err}"
        );
        let err = select_url("http://a/1,http://a/2", &arches(&["amd64"]), "amd64").unwrap_err();
        assert!(err.to_string().contains("2 URLs but arch has 1"), "{err}");
        let err = select_url("http://a/1,http://a/2", &[], "amd64").unwrap_err();
        assert!(err.to_string().contains("arch is empty"), "{err}");
        assert_eq!(
            select_url("http://a/1", &[], "amd64").unwrap(),
            "http://a/1"
        );
        assert!(select_url(" , ", &[], "amd64").is_err());
    }
}
