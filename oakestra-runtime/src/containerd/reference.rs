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

/// The platform of an image to pull, as the SLA's `platform` writes it: `os/arch[/variant]`
/// (`linux/arm64`, `linux/arm/v7`), or just `arch`. Architecture names are normalised to OCI's
/// (`x86_64` → `amd64`, `aarch64` → `arm64`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlatformSpec {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `v7`, `v8`, … when given.
    pub variant: Option<String>,
}

/// OCI's name of an architecture (what `uname -m` and Go may call otherwise).
fn oci_arch(arch: &str) -> String {
    match arch {
        "x86_64" | "x86-64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        "armhf" | "armel" => "arm".into(),
        "i386" | "i686" => "386".into(),
        other => other.into(),
    }
}

impl PlatformSpec {
    /// Linux on `arch` (this machine's platform when pulling with no SLA `platform`).
    pub fn linux(arch: &str) -> Self {
        Self {
            os: "linux".into(),
            architecture: oci_arch(arch),
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]` or `arch`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let parts: Vec<&str> = text.split('/').collect();
        if parts.iter().any(|p| p.trim().is_empty()) || parts.len() > 3 {
            return Err(format!(
                "invalid platform {text:?}: expected os/arch[/variant], e.g. linux/arm64 or linux/arm/v7"
            ));
        }
        let lower = |s: &str| s.trim().to_ascii_lowercase();
        Ok(match parts.as_slice() {
            [arch] => Self::linux(&lower(arch)),
            [os, arch] => Self {
                os: lower(os),
                architecture: oci_arch(&lower(arch)),
                variant: None,
            },
            [os, arch, variant] => Self {
                os: lower(os),
                architecture: oci_arch(&lower(arch)),
                variant: Some(lower(variant)),
            },
            _ => unreachable!("1 to 3 parts"),
        })
    }

    /// The variant an entry without one stands for (`arm64` images are `v8`, `arm` ones `v7`).
    fn default_variant(arch: &str) -> Option<&'static str> {
        match arch {
            "arm64" => Some("v8"),
            "arm" => Some("v7"),
            _ => None,
        }
    }

    /// How well an index entry of `os`/`arch`/`variant` fits: `None` when it does not; higher
    /// is better (an exact variant beats the architecture's default one).
    pub fn fit(&self, os: &str, arch: &str, variant: Option<&str>) -> Option<u8> {
        if os != self.os || arch != self.architecture {
            return None;
        }
        let default = Self::default_variant(arch);
        let entry = variant.or(default);
        match self.variant.as_deref() {
            // No variant asked: the architecture's default variant first, then any.
            None if entry == default => Some(2),
            None => Some(1),
            Some(want) if variant == Some(want) => Some(3),
            Some(want) if entry == Some(want) => Some(2),
            Some(_) => None,
        }
    }

    /// Index of the best fitting entry of `entries` (`(os, arch, variant)` each), the first
    /// of equally good ones.
    pub fn select<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a str, &'a str, Option<&'a str>)>,
    ) -> Option<usize> {
        let mut best: Option<(u8, usize)> = None;
        for (i, (os, arch, variant)) in entries.into_iter().enumerate() {
            if let Some(score) = self.fit(os, arch, variant)
                && best.is_none_or(|(b, _)| score > b)
            {
                best = Some((score, i));
            }
        }
        best.map(|(_, i)| i)
    }
}

impl fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
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

    #[test]
    fn platforms_parse_and_normalise() {
        let p = PlatformSpec::parse("linux/arm64").unwrap();
        assert_eq!((p.os.as_str(), p.architecture.as_str()), ("linux", "arm64"));
        assert_eq!(p.variant, None);
        assert_eq!(
            PlatformSpec::parse("Linux/ARM/v7").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            PlatformSpec::parse("x86_64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            PlatformSpec::parse("linux/aarch64").unwrap().architecture,
            "arm64"
        );
        for bad in ["", "linux/", "/amd64", "linux/arm/v7/x", "linux//v7"] {
            let err = PlatformSpec::parse(bad).unwrap_err();
            assert!(err.contains("os/arch"), "{bad:?}: {err}");
        }
    }

    /// A typical multi-arch index (nginx, busybox): entries as (os, arch, variant).
    const INDEX: &[(&str, &str, Option<&str>)] = &[
        ("linux", "amd64", None),
        ("linux", "arm", Some("v5")),
        ("linux", "arm", Some("v6")),
        ("linux", "arm", Some("v7")),
        ("linux", "arm64", Some("v8")),
        ("linux", "386", None),
        ("windows", "amd64", None),
        ("unknown", "unknown", None),
    ];

    fn pick(platform: &str) -> Option<usize> {
        PlatformSpec::parse(platform)
            .unwrap()
            .select(INDEX.iter().copied())
    }

    #[test]
    fn manifest_selection_picks_the_asked_platform() {
        assert_eq!(pick("linux/amd64"), Some(0));
        assert_eq!(pick("linux/arm64"), Some(4), "arm64 entries say v8");
        assert_eq!(pick("linux/arm64/v8"), Some(4));
        assert_eq!(pick("linux/arm/v6"), Some(2));
        assert_eq!(pick("linux/arm"), Some(3), "no variant: arm's default v7");
        assert_eq!(pick("windows/amd64"), Some(6));
        assert_eq!(pick("linux/386"), Some(5));
        assert_eq!(pick("linux/riscv64"), None);
        assert_eq!(pick("linux/arm/v9"), None);
        // An arm64 entry without a variant is v8 too; with no default variant, any matches.
        let plain = [("linux", "arm64", None), ("linux", "ppc64le", Some("x"))];
        let p = |s: &str| {
            PlatformSpec::parse(s)
                .unwrap()
                .select(plain.iter().copied())
        };
        assert_eq!(p("linux/arm64/v8"), Some(0));
        assert_eq!(p("linux/ppc64le"), Some(1));
        // Equally good entries: the first wins.
        let twice = [("linux", "amd64", None), ("linux", "amd64", None)];
        assert_eq!(
            PlatformSpec::linux("x86_64").select(twice.iter().copied()),
            Some(0)
        );
    }
}
