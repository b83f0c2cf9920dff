//! Default data directories under the XDG base directories.

use std::path::PathBuf;

/// Which XDG base directory holds a daemon's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// `$XDG_DATA_HOME`, else `$HOME/.local/share` (root, cluster, `oak up`).
    Data,
    /// `$XDG_STATE_HOME`, else `$HOME/.local/state` (worker, `oak sim`).
    State,
}

/// `<base>/<leaf>`, or `./<fallback>` when neither the XDG variable nor `HOME` is set.
pub fn default_data_dir(base: Base, leaf: &str, fallback: &str) -> PathBuf {
    let (var, under_home) = match base {
        Base::Data => ("XDG_DATA_HOME", ".local/share"),
        Base::State => ("XDG_STATE_HOME", ".local/state"),
    };
    resolve(
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
        under_home,
        leaf,
        fallback,
    )
}

fn resolve(
    xdg: Option<PathBuf>,
    home: Option<PathBuf>,
    under_home: &str,
    leaf: &str,
    fallback: &str,
) -> PathBuf {
    if let Some(xdg) = xdg {
        return xdg.join(leaf);
    }
    if let Some(home) = home {
        return home.join(under_home).join(leaf);
    }
    PathBuf::from(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdg_wins_then_home_then_the_fallback() {
        let p = |x: Option<&str>, h: Option<&str>| {
            resolve(
                x.map(PathBuf::from),
                h.map(PathBuf::from),
                ".local/state",
                "oakestra-node",
                "oakestra-node-data",
            )
        };
        assert_eq!(p(Some("/x"), Some("/h")), PathBuf::from("/x/oakestra-node"));
        assert_eq!(
            p(None, Some("/h")),
            PathBuf::from("/h/.local/state/oakestra-node")
        );
        assert_eq!(p(None, None), PathBuf::from("oakestra-node-data"));
    }
}
