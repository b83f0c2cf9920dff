//! Names of applications and services, and the identifiers derived from them.
//!
//! Application names, application namespaces, microservice names and microservice namespaces must
//! all match `^[a-zA-Z0-9]{1,30}$`. Four of them joined by dots form the `job_name`
//! (`app.appns.service.servicens`), the key the network layer and the workers use.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Human-readable form of the name rule, used in error messages.
pub const NAME_RULE: &str = "1-30 ASCII letters or digits (^[a-zA-Z0-9]{1,30}$)";

/// Longest allowed name.
pub const MAX_NAME_LEN: usize = 30;

/// Why a name is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is the empty string.
    #[error("must not be empty; use {NAME_RULE}")]
    Empty,
    /// The name is longer than 30 characters.
    #[error("\"{name}\" has {len} characters, at most {MAX_NAME_LEN} are allowed; use {NAME_RULE}")]
    TooLong {
        /// The name.
        name: String,
        /// Its length in characters.
        len: usize,
    },
    /// The name contains a character other than an ASCII letter or digit.
    #[error("\"{name}\" contains {found:?}, which is not allowed; use {NAME_RULE}")]
    BadCharacter {
        /// The name.
        name: String,
        /// The first offending character.
        found: char,
    },
}

/// Checks a name against `^[a-zA-Z0-9]{1,30}$`.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if let Some(found) = name.chars().find(|c| !c.is_ascii_alphanumeric()) {
        return Err(NameError::BadCharacter {
            name: name.to_owned(),
            found,
        });
    }
    // Only ASCII is left, so bytes == characters.
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            name: name.to_owned(),
            len: name.len(),
        });
    }
    Ok(())
}

/// `true` when `name` matches `^[a-zA-Z0-9]{1,30}$`.
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Builds `app.appns.service.servicens` without checking the parts (see [`JobName`] for a checked form).
pub fn job_name(app: &str, app_ns: &str, service: &str, service_ns: &str) -> String {
    let mut s =
        String::with_capacity(app.len() + app_ns.len() + service.len() + service_ns.len() + 3);
    for (i, part) in [app, app_ns, service, service_ns].into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        s.push_str(part);
    }
    s
}

/// Identity of a task on a worker: `<job_name>.instance.<n>` (the NodeEngine's task id).
pub fn task_id(job_name: &str, instance_number: u32) -> String {
    format!("{job_name}.instance.{instance_number}")
}

/// Why a string is not a valid job name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobNameError {
    /// Not exactly four dot-separated parts.
    #[error(
        "job name \"{0}\" must have exactly 4 dot-separated parts: app.appns.service.servicens"
    )]
    PartCount(String),
    /// One part breaks the name rule.
    #[error("job name \"{job}\": part {part} ({which}) {source}")]
    BadPart {
        /// The whole job name.
        job: String,
        /// 1-based index of the part.
        part: usize,
        /// What the part is (`application name`, …).
        which: &'static str,
        /// The rule it breaks.
        #[source]
        source: NameError,
    },
}

/// A checked `app.appns.service.servicens` name. Serialises as the dotted string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobName {
    app: String,
    app_ns: String,
    service: String,
    service_ns: String,
}

const PART_NAMES: [&str; 4] = [
    "application name",
    "application namespace",
    "microservice name",
    "microservice namespace",
];

impl JobName {
    /// Builds a job name, checking every part against the name rule.
    pub fn new(
        app: &str,
        app_ns: &str,
        service: &str,
        service_ns: &str,
    ) -> Result<Self, JobNameError> {
        let parts = [app, app_ns, service, service_ns];
        for (i, part) in parts.iter().enumerate() {
            check_name(part).map_err(|source| JobNameError::BadPart {
                job: job_name(app, app_ns, service, service_ns),
                part: i + 1,
                which: PART_NAMES[i],
                source,
            })?;
        }
        Ok(Self {
            app: app.to_owned(),
            app_ns: app_ns.to_owned(),
            service: service.to_owned(),
            service_ns: service_ns.to_owned(),
        })
    }

    /// Application name.
    pub fn app(&self) -> &str {
        &self.app
    }
    /// Application namespace.
    pub fn app_namespace(&self) -> &str {
        &self.app_ns
    }
    /// Microservice name.
    pub fn service(&self) -> &str {
        &self.service
    }
    /// Microservice namespace.
    pub fn service_namespace(&self) -> &str {
        &self.service_ns
    }
    /// The task id of instance `n` of this job on a worker.
    pub fn task_id(&self, instance_number: u32) -> String {
        task_id(&self.to_string(), instance_number)
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}",
            self.app, self.app_ns, self.service, self.service_ns
        )
    }
}

impl FromStr for JobName {
    type Err = JobNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('.').collect();
        match parts.as_slice() {
            [a, b, c, d] => Self::new(a, b, c, d),
            _ => Err(JobNameError::PartCount(s.to_owned())),
        }
    }
}

impl Serialize for JobName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for JobName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rule_matches_the_regex() {
        for ok in ["a", "A1", "clientsrvr", &"x".repeat(30)] {
            assert!(is_valid_name(ok), "{ok}");
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        // The cases pinned by oakestra-net's sla_validation_test and the root's tests.
        for bad in [
            "",
            "app-",
            "app_",
            "service!",
            "service.",
            "badname!",
            "THIS.NAMESPACE.has.dots",
            "test.special.char",
            "with space",
            "é",
            &"x".repeat(31),
        ] {
            assert!(!is_valid_name(bad), "{bad}");
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_errors_say_what_is_allowed() {
        let e = check_name("a.b").unwrap_err().to_string();
        assert!(
            e.contains("'.'") && e.contains("^[a-zA-Z0-9]{1,30}$"),
            "{e}"
        );
        let e = check_name(&"y".repeat(31)).unwrap_err().to_string();
        assert!(e.contains("31 characters"), "{e}");
    }

    #[test]
    fn job_name_joins_and_splits() {
        assert_eq!(
            job_name("clientsrvr", "test", "nginx", "test"),
            "clientsrvr.test.nginx.test"
        );
        let j: JobName = "clientsrvr.test.nginx.test".parse().unwrap();
        assert_eq!(j.service(), "nginx");
        assert_eq!(j.to_string(), "clientsrvr.test.nginx.test");
        assert_eq!(j.task_id(2), "clientsrvr.test.nginx.test.instance.2");
        assert!(matches!(
            "a.b.c".parse::<JobName>(),
            Err(JobNameError::PartCount(_))
        ));
        assert!(matches!(
            "a.b.c!.d".parse::<JobName>(),
            Err(JobNameError::BadPart { part: 3, .. })
        ));
        let json = serde_json::to_string(&j).unwrap();
        assert_eq!(json, "\"clientsrvr.test.nginx.test\"");
        assert_eq!(serde_json::from_str::<JobName>(&json).unwrap(), j);
    }
}
