//! Image references: `busybox`, `nginx:1.25`, `ghcr.io/org/app@sha256:…`, `127.0.0.1:5000/test:v1`,
//! normalised the way Docker does (short names live in `docker.io/library/`).

use std::fmt;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry as written (`docker.io`, `127.0.0.1:5000`).
    pub domain: String,
    /// Repository path (`library/busybox`).
    pub repository: String,
    /// Tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// Digest (`sha256:…`) when pinned.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses `reference`; the error says what is wrong with it.
    pub fn parse(reference: &str) -> Result<Self, String> {
        let reference = reference.trim();
        if reference.is_empty() {
            return Err("empty image reference".into());
        }
        if reference
            .chars()
            .any(|c| c.is_whitespace() || c.is_ascii_uppercase())
        {
            return Err(format!(
                "invalid image reference {reference:?}: no spaces or upper-case letters allowed"
            ));
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => {
                let valid = digest
                    .split_once(':')
                    .is_some_and(|(alg, hex)| !alg.is_empty() && !hex.is_empty());
                if !valid {
                    return Err(format!(
                        "invalid digest {digest:?} in {reference:?}; expected sha256:<hex>"
                    ));
                }
                (rest, Some(digest.to_string()))
            }
            None => (reference, None),
        };
        let (domain, path) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => ("docker.io".to_string(), rest.to_string()),
        };
        let (path, tag) = match path.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p.to_string(), Some(t.to_string())),
            _ => (path, None),
        };
        if path.is_empty() || path.split('/').any(str::is_empty) {
            return Err(format!(
                "invalid image reference {reference:?}: empty repository"
            ));
        }
        if tag.as_deref() == Some("") {
            return Err(format!("invalid image reference {reference:?}: empty tag"));
        }
        let repository = if domain == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (tag, _) => tag,
        };
        Ok(Self {
            domain,
            repository,
            tag,
            digest,
        })
    }

    /// The host the registry API lives on (`registry-1.docker.io` for Docker Hub).
    pub fn registry_host(&self) -> &str {
        if self.domain == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.domain
        }
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_hub_short_names_are_normalised() {
        assert_eq!(canonical("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(canonical("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(canonical("org/app"), "docker.io/org/app:latest");
        assert_eq!(
            ImageRef::parse("busybox").unwrap().registry_host(),
            "registry-1.docker.io"
        );
    }

    #[test]
    fn registries_with_ports_and_digests() {
        let r = ImageRef::parse("127.0.0.1:5000/test/busybox:v1").unwrap();
        assert_eq!(r.domain, "127.0.0.1:5000");
        assert_eq!(r.repository, "test/busybox");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        let r = ImageRef::parse("localhost/app@sha256:abc").unwrap();
        assert_eq!(r.domain, "localhost");
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), "sha256:abc");
        assert_eq!(
            canonical("ghcr.io/a/b:t@sha256:ff"),
            "ghcr.io/a/b:t@sha256:ff"
        );
        assert_eq!(canonical("localhost:5000/x"), "localhost:5000/x:latest");
    }

    #[test]
    fn bad_references_say_why() {
        assert!(ImageRef::parse("").unwrap_err().contains("empty"));
        assert!(
            ImageRef::parse("Busybox")
                .unwrap_err()
                .contains("upper-case")
        );
        assert!(ImageRef::parse("a@nope").unwrap_err().contains("digest"));
        assert!(ImageRef::parse("a:").unwrap_err().contains("empty tag"));
        assert!(ImageRef::parse("a//b").unwrap_err().contains("repository"));
    }
}
