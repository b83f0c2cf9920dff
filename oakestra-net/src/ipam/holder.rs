//! Who holds an address: the identity the caller passes, named in every collision.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The identity that holds an address or subnet. Each holder holds at most one slot per pool.
///
/// Serialised compactly as `"service:<job name>"`, `"closest:<job name>"`,
/// `"instance:<job name>#<number>"` or `"worker:<id>"`, because a store keeps tens of thousands
/// of them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Holder {
    /// A service, by its job name (`app.appns.service.servicens`); holds the RR IPs.
    Service(String),
    /// A service's closest IPs (a second holder, because a holder holds one slot per pool).
    Closest(String),
    /// One instance of a service; holds the instance IPs and, on its worker, the container IPs.
    Instance {
        /// The job name of the instance's service.
        service: String,
        /// The instance number.
        number: u32,
    },
    /// A worker node, by its id; holds the worker subnets.
    Worker(String),
}

impl Holder {
    /// A service holder.
    pub fn service(job_name: impl Into<String>) -> Self {
        Self::Service(job_name.into())
    }

    /// The holder of a service's closest IPs.
    pub fn closest(job_name: impl Into<String>) -> Self {
        Self::Closest(job_name.into())
    }

    /// An instance holder.
    pub fn instance(service: impl Into<String>, number: u32) -> Self {
        Self::Instance {
            service: service.into(),
            number,
        }
    }

    /// A worker holder.
    pub fn worker(id: impl Into<String>) -> Self {
        Self::Worker(id.into())
    }

    /// The compact key form used in the serialised state.
    pub fn key(&self) -> String {
        Key(self).to_string()
    }
}

/// Writes the key form without building a `String` (serialising 30,000 holders adds up).
struct Key<'a>(&'a Holder);

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Holder::Service(name) => write!(f, "service:{name}"),
            Holder::Closest(name) => write!(f, "closest:{name}"),
            Holder::Instance { service, number } => write!(f, "instance:{service}#{number}"),
            Holder::Worker(id) => write!(f, "worker:{id}"),
        }
    }
}

impl Serialize for Holder {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&Key(self))
    }
}

impl<'de> Deserialize<'de> for Holder {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl de::Visitor<'_> for KeyVisitor {
            type Value = Holder;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a holder key such as \"service:app.ns.svc.ns\"")
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<Holder, E> {
                key.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Human form for messages: `service app.ns.svc.ns`, `instance 2 of service …`, `worker w1`.
impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Service(name) => write!(f, "service {name}"),
            Self::Closest(name) => write!(f, "the closest IP of service {name}"),
            Self::Instance { service, number } => {
                write!(f, "instance {number} of service {service}")
            }
            Self::Worker(id) => write!(f, "worker {id}"),
        }
    }
}

/// The key form does not parse as a holder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a holder key; expected \"service:<job name>\", \"closest:<job name>\", \
     \"instance:<job name>#<number>\" or \"worker:<id>\" (the state was not written by oakestra-net or was edited by hand)"
)]
pub struct HolderKeyError(String);

impl FromStr for Holder {
    type Err = HolderKeyError;

    fn from_str(key: &str) -> Result<Self, Self::Err> {
        let bad = || HolderKeyError(key.to_owned());
        let (kind, rest) = key.split_once(':').ok_or_else(bad)?;
        match kind {
            "service" => Ok(Self::Service(rest.to_owned())),
            "closest" => Ok(Self::Closest(rest.to_owned())),
            "worker" => Ok(Self::Worker(rest.to_owned())),
            "instance" => {
                let (service, number) = rest.rsplit_once('#').ok_or_else(bad)?;
                let number = number.parse().map_err(|_| bad())?;
                Ok(Self::Instance {
                    service: service.to_owned(),
                    number,
                })
            }
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_form_round_trips_even_with_separators_in_names() {
        for holder in [
            Holder::service("app.ns.svc.ns"),
            Holder::instance("a#b:c", 7),
            Holder::worker("w:1"),
            Holder::service(""),
            Holder::closest("app.ns.svc.ns"),
        ] {
            assert_eq!(holder.key().parse::<Holder>().unwrap(), holder);
            let json = serde_json::to_string(&holder).unwrap();
            assert_eq!(serde_json::from_str::<Holder>(&json).unwrap(), holder);
        }
        assert_eq!(Holder::instance("s", 2).key(), "instance:s#2");
        assert_eq!(
            Holder::instance("s", 2).to_string(),
            "instance 2 of service s"
        );
    }

    #[test]
    fn bad_keys_are_rejected() {
        for key in [
            "",
            "service",
            "pod:x",
            "instance:s",
            "instance:s#-1",
            "instance:s#x",
        ] {
            assert!(key.parse::<Holder>().is_err(), "{key}");
        }
    }
}
