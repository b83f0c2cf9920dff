//! The port syntax of a microservice: `host[:container][/tcp|udp]` entries joined by `;`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The syntax accepted for the `port` field, quoted in every error message.
pub const PORT_SYNTAX: &str = "`host[:container][/tcp|udp]` entries joined by `;`, ports 1-65535 (e.g. \"80\", \"8080:80/tcp;53:53/udp\")";

/// Transport protocol of a port mapping. TCP is the default when an entry names none.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `tcp` (the default).
    #[default]
    Tcp,
    /// `udp`.
    Udp,
}

impl Protocol {
    /// The lowercase name used in port strings and iptables rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One published port: traffic to `host` on the worker goes to `container` inside the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// Port on the worker's host network.
    pub host: u16,
    /// Port inside the instance (defaults to `host` when the entry names only one port).
    pub container: u16,
    /// Transport protocol.
    pub protocol: Protocol,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.host, self.container, self.protocol)
    }
}

/// Why a port string was rejected. Every message names the offending entry and the allowed syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortSpecError {
    /// An entry between two `;` is empty (e.g. `"80;;81"` or a trailing `;`).
    #[error("entry {index} is empty; expected {PORT_SYNTAX}")]
    EmptyEntry {
        /// 0-based position of the entry.
        index: usize,
    },
    /// A port is not a decimal number.
    #[error("entry \"{entry}\": \"{value}\" is not a port number; expected {PORT_SYNTAX}")]
    NotANumber {
        /// The whole entry.
        entry: String,
        /// The offending part.
        value: String,
    },
    /// A port is 0 or above 65535.
    #[error("entry \"{entry}\": port {value} is out of range; ports must be 1-65535")]
    OutOfRange {
        /// The whole entry.
        entry: String,
        /// The offending number.
        value: String,
    },
    /// The protocol suffix is neither `tcp` nor `udp`.
    #[error("entry \"{entry}\": unknown protocol \"{protocol}\"; allowed: tcp, udp")]
    UnknownProtocol {
        /// The whole entry.
        entry: String,
        /// The offending suffix.
        protocol: String,
    },
    /// An entry has more than one `:` or more than one `/`.
    #[error("entry \"{entry}\" is malformed; expected {PORT_SYNTAX}")]
    Malformed {
        /// The whole entry.
        entry: String,
    },
    /// The same host port and protocol appear twice.
    #[error(
        "host port {host}/{protocol} is mapped more than once; each host port may be published once per protocol"
    )]
    DuplicateHostPort {
        /// The repeated host port.
        host: u16,
        /// Its protocol.
        protocol: Protocol,
    },
}

fn parse_port(entry: &str, text: &str) -> Result<u16, PortSpecError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortSpecError::NotANumber {
            entry: entry.to_owned(),
            value: text.to_owned(),
        });
    }
    let trimmed = text.trim_start_matches('0');
    // More than 5 significant digits is certainly out of range; avoid overflow on huge inputs.
    let value = if trimmed.len() > 5 {
        None
    } else {
        trimmed.parse::<u32>().ok().or(Some(0))
    };
    match value {
        Some(v @ 1..=65535) => Ok(v as u16),
        _ => Err(PortSpecError::OutOfRange {
            entry: entry.to_owned(),
            value: text.to_owned(),
        }),
    }
}

fn parse_entry(entry: &str) -> Result<PortMapping, PortSpecError> {
    let malformed = || PortSpecError::Malformed {
        entry: entry.to_owned(),
    };
    let (ports, protocol) = match entry.split_once('/') {
        None => (entry, Protocol::Tcp),
        Some((_, rest)) if rest.contains('/') => return Err(malformed()),
        Some((ports, "tcp")) => (ports, Protocol::Tcp),
        Some((ports, "udp")) => (ports, Protocol::Udp),
        Some((_, other)) => {
            return Err(PortSpecError::UnknownProtocol {
                entry: entry.to_owned(),
                protocol: other.to_owned(),
            });
        }
    };
    let (host, container) = match ports.split_once(':') {
        None => {
            let p = parse_port(entry, ports)?;
            (p, p)
        }
        Some((_, rest)) if rest.contains(':') => return Err(malformed()),
        Some((h, c)) => (parse_port(entry, h)?, parse_port(entry, c)?),
    };
    Ok(PortMapping {
        host,
        container,
        protocol,
    })
}

/// Parses a `port` string into its mappings. The empty string means "no published ports".
///
/// ```
/// use oakestra_core::sla::{parse_port_mappings, PortMapping, Protocol};
/// let m = parse_port_mappings("8080:80;53/udp").unwrap();
/// assert_eq!(m[0], PortMapping { host: 8080, container: 80, protocol: Protocol::Tcp });
/// assert_eq!(m[1], PortMapping { host: 53, container: 53, protocol: Protocol::Udp });
/// ```
pub fn parse_port_mappings(spec: &str) -> Result<Vec<PortMapping>, PortSpecError> {
    if spec.is_empty() {
        return Ok(Vec::new());
    }
    let mut out: Vec<PortMapping> = Vec::new();
    for (index, entry) in spec.split(';').enumerate() {
        if entry.is_empty() {
            return Err(PortSpecError::EmptyEntry { index });
        }
        let mapping = parse_entry(entry)?;
        if out
            .iter()
            .any(|m| m.host == mapping.host && m.protocol == mapping.protocol)
        {
            return Err(PortSpecError::DuplicateHostPort {
                host: mapping.host,
                protocol: mapping.protocol,
            });
        }
        out.push(mapping);
    }
    Ok(out)
}

/// The `port` field: the text as the user wrote it plus its parsed mappings.
///
/// It serialises back to the original text, so a descriptor round-trips unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortSpec {
    raw: String,
    mappings: Vec<PortMapping>,
}

impl PortSpec {
    /// The text as written in the descriptor.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The parsed mappings (empty when the text is empty).
    pub fn mappings(&self) -> &[PortMapping] {
        &self.mappings
    }

    /// Builds the canonical text for a list of mappings.
    pub fn from_mappings(mappings: Vec<PortMapping>) -> Result<Self, PortSpecError> {
        let raw = mappings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(";");
        // Re-parse to apply the duplicate check.
        parse_port_mappings(&raw)?;
        Ok(Self { raw, mappings })
    }
}

impl FromStr for PortSpec {
    type Err = PortSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self {
            mappings: parse_port_mappings(s)?,
            raw: s.to_owned(),
        })
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl Serialize for PortSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(host: u16, container: u16, protocol: Protocol) -> PortMapping {
        PortMapping {
            host,
            container,
            protocol,
        }
    }

    #[test]
    fn accepts_every_documented_form() {
        assert_eq!(parse_port_mappings("").unwrap(), vec![]);
        assert_eq!(
            parse_port_mappings("80").unwrap(),
            vec![m(80, 80, Protocol::Tcp)]
        );
        assert_eq!(
            parse_port_mappings("80:80").unwrap(),
            vec![m(80, 80, Protocol::Tcp)]
        );
        assert_eq!(
            parse_port_mappings("6080:60/tcp").unwrap(),
            vec![m(6080, 60, Protocol::Tcp)]
        );
        assert_eq!(
            parse_port_mappings("53/udp;8080:80;53:5353/tcp").unwrap(),
            vec![
                m(53, 53, Protocol::Udp),
                m(8080, 80, Protocol::Tcp),
                m(53, 5353, Protocol::Tcp)
            ]
        );
        assert_eq!(
            parse_port_mappings("65535:1").unwrap(),
            vec![m(65535, 1, Protocol::Tcp)]
        );
    }

    #[test]
    fn rejects_bad_entries_with_a_reason() {
        let cases = [
            ("0", "out of range"),
            ("65536", "out of range"),
            ("99999999999999999999", "out of range"),
            ("80:0", "out of range"),
            ("http", "not a port number"),
            ("-1", "not a port number"),
            ("80 ", "not a port number"),
            ("80/sctp", "unknown protocol"),
            ("80/TCP", "unknown protocol"),
            ("80:81:82", "malformed"),
            ("80/tcp/udp", "malformed"),
            ("80;", "empty"),
            (";80", "empty"),
            ("80;80", "more than once"),
            (":80", "not a port number"),
        ];
        for (spec, reason) in cases {
            let err = parse_port_mappings(spec).unwrap_err().to_string();
            assert!(err.contains(reason), "{spec:?}: {err}");
        }
    }

    #[test]
    fn same_port_on_both_protocols_is_fine() {
        assert_eq!(parse_port_mappings("53/udp;53/tcp").unwrap().len(), 2);
    }

    #[test]
    fn spec_round_trips_its_text() {
        let spec: PortSpec = "80".parse().unwrap();
        assert_eq!(serde_json::to_string(&spec).unwrap(), "\"80\"");
        let back: PortSpec = serde_json::from_str("\"80\"").unwrap();
        assert_eq!(back, spec);
        assert!(serde_json::from_str::<PortSpec>("\"x\"").is_err());
        let built = PortSpec::from_mappings(vec![m(1, 2, Protocol::Udp)]).unwrap();
        assert_eq!(built.as_str(), "1:2/udp");
    }
}
