//! Settings layered flags > TOML file > environment > defaults, for any clap parser whose
//! arguments carry `env = …` and defaults: the file's keys (the long flag names, with `_` or
//! `-`) become flags placed before the command line's, so a flag given on the command line
//! wins (with `args_override_self`), and clap only falls back to the environment for what
//! neither gave.

use std::path::PathBuf;

/// The TOML file could not be read or parsed.
#[derive(Debug)]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config file {}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for FileError {}

/// `argv` with the settings of the file named by `--config F` (or the environment variable
/// `config_env`) inserted after the program name.
pub fn argv_with_file(argv: Vec<String>, config_env: &str) -> Result<Vec<String>, FileError> {
    let config_path = config_flag(&argv).or_else(|| {
        std::env::var_os(config_env)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let mut full = vec![argv.first().cloned().unwrap_or_default()];
    if let Some(path) = &config_path {
        let text = std::fs::read_to_string(path).map_err(|e| FileError {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        full.extend(toml_as_flags(&text).map_err(|reason| FileError {
            path: path.clone(),
            reason,
        })?);
    }
    full.extend(argv.into_iter().skip(1));
    Ok(full)
}

/// The value of `--config` on a command line.
pub fn config_flag(argv: &[String]) -> Option<PathBuf> {
    let mut iter = argv.iter();
    while let Some(a) = iter.next() {
        if a == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// A TOML table of scalars as `--key=value` flags.
pub fn toml_as_flags(text: &str) -> Result<Vec<String>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    let mut flags = Vec::new();
    for (key, value) in table {
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(format!(
                    "{key}: expected a string or number, found {}",
                    other.type_str()
                ));
            }
        };
        flags.push(format!("--{}={value}", key.replace('_', "-")));
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_keys_become_flags() {
        let flags = toml_as_flags("name = \"c1\"\nworker_timeout = \"5s\"\nport = 7\n").unwrap();
        assert_eq!(flags, ["--name=c1", "--port=7", "--worker-timeout=5s"]);
        assert!(
            toml_as_flags("x = [1]")
                .unwrap_err()
                .contains("x: expected")
        );
    }

    #[test]
    fn the_file_goes_before_the_command_line() {
        let dir = std::env::temp_dir().join(format!("oakestra-layered-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "name = \"from-file\"\n").unwrap();
        let argv = vec![
            "prog".to_owned(),
            format!("--config={}", file.display()),
            "--name=from-flag".to_owned(),
        ];
        let full = argv_with_file(argv, "OAKESTRA_TEST_NO_SUCH_VAR").unwrap();
        assert_eq!(full[1], "--name=from-file");
        assert_eq!(full[3], "--name=from-flag");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
