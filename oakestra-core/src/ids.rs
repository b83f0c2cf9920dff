//! Identifiers: MongoDB-style object ids for applications, services and users, and string ids
//! for clusters and workers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 12-byte object id, written as 24 lowercase hex digits.
///
/// Serialises as the plain hex string; use [`oid_format`] for the `{"$oid": "…"}` form of the
/// REST API. Deserialising accepts both forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId([u8; 12]);

/// A string that is not 24 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an object id: expected 24 hexadecimal digits")]
pub struct ObjectIdError(pub String);

impl ObjectId {
    /// From raw bytes.
    pub const fn from_bytes(bytes: [u8; 12]) -> Self {
        Self(bytes)
    }

    /// Builds an id the way MongoDB does, from its parts: seconds since the epoch, 5 bytes
    /// unique to the process, and a counter (low 3 bytes used). The caller supplies all three,
    /// so this stays deterministic.
    pub fn from_parts(timestamp_secs: u32, process_unique: [u8; 5], counter: u32) -> Self {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&timestamp_secs.to_be_bytes());
        b[4..9].copy_from_slice(&process_unique);
        b[9..].copy_from_slice(&counter.to_be_bytes()[1..]);
        Self(b)
    }

    /// The raw bytes.
    pub const fn bytes(&self) -> [u8; 12] {
        self.0
    }

    /// The creation time in seconds since the epoch (first 4 bytes).
    pub fn timestamp_secs(&self) -> u32 {
        u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for ObjectId {
    type Err = ObjectIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 24 {
            return Err(ObjectIdError(s.to_owned()));
        }
        let mut out = [0u8; 12];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16);
            let lo = (pair[1] as char).to_digit(16);
            match (hi, lo) {
                (Some(h), Some(l)) => out[i] = (h * 16 + l) as u8,
                _ => return Err(ObjectIdError(s.to_owned())),
            }
        }
        Ok(Self(out))
    }
}

impl Serialize for ObjectId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OidRepr {
    Plain(String),
    Extended {
        #[serde(rename = "$oid")]
        oid: String,
    },
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = match OidRepr::deserialize(deserializer)? {
            OidRepr::Plain(s) | OidRepr::Extended { oid: s } => s,
        };
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "oakestra_core::ids::oid_format")]`: an [`ObjectId`] as `{"$oid": "<hex>"}`.
pub mod oid_format {
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::ObjectId;

    /// Writes `{"$oid": "<hex>"}`.
    pub fn serialize<S: Serializer>(id: &ObjectId, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("$oid", &id.to_string())?;
        map.end()
    }

    /// Reads `{"$oid": "<hex>"}` or a plain hex string.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ObjectId, D::Error> {
        ObjectId::deserialize(deserializer)
    }
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

string_id! {
    /// Id of a cluster (a plain string `_id`, as Oakestra's REST API shows it).
    ClusterId
}

string_id! {
    /// Id of a worker node, as handed out at registration and used in `nodes/<id>/…` topics.
    WorkerId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_id_hex_round_trip_and_both_json_forms() {
        let id: ObjectId = "65f1a2b3c4d5e6f708192a3b".parse().unwrap();
        assert_eq!(id.to_string(), "65f1a2b3c4d5e6f708192a3b");
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"65f1a2b3c4d5e6f708192a3b\""
        );
        let a: ObjectId = serde_json::from_str("\"65f1a2b3c4d5e6f708192a3b\"").unwrap();
        let b: ObjectId = serde_json::from_str(r#"{"$oid":"65F1A2B3C4D5E6F708192A3B"}"#).unwrap();
        assert_eq!(a, id);
        assert_eq!(b, id);
        for bad in [
            "",
            "65f1",
            "zzf1a2b3c4d5e6f708192a3b",
            "65f1a2b3c4d5e6f708192a3bb",
        ] {
            assert!(bad.parse::<ObjectId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn from_parts_orders_by_time() {
        let a = ObjectId::from_parts(1_700_000_000, [1, 2, 3, 4, 5], 7);
        assert_eq!(a.timestamp_secs(), 1_700_000_000);
        assert!(a < ObjectId::from_parts(1_700_000_001, [0; 5], 0));
        assert_eq!(&a.to_string()[18..], "000007");
    }
}
