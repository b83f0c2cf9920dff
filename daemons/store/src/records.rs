//! Records the store keeps that `oakestra-core` does not define: users, organizations,
//! clusters, join tokens and signing keys. All are plain serde documents, so every backend
//! stores them the same way.

use oakestra_core::ids::{ClusterId, ObjectId, oid_format};
use oakestra_core::resources::ClusterResources;
/// A member of an organization with its roles there: the same document the REST API shows.
pub use oakestra_proto::rest::Member;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A user account (Oakestra's `users.user` document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Own id, shown as `{"$oid": …}`.
    #[serde(rename = "_id", with = "oid_format")]
    pub id: ObjectId,
    /// User name (unique; the JWT `sub`).
    pub name: String,
    /// E-mail address (may be empty).
    #[serde(default)]
    pub email: String,
    /// Argon2 password hash as a PHC string (`$argon2id$v=19$…`). Oakestra calls it `password`.
    #[serde(rename = "password")]
    pub password_hash: String,
    /// Creation time as the caller formatted it (Oakestra: `"dd/mm/YYYY HH:MM"`).
    #[serde(default)]
    pub created_at: String,
    /// Raised whenever the user's roles or password change: access and refresh tokens carry
    /// the version they were issued under, and older ones are refused (revocation).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub token_version: u64,
    /// Other fields set through the user API, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// An organization (Oakestra's `users.organization` document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrganizationRecord {
    /// Own id, shown as `{"$oid": …}`.
    #[serde(rename = "_id", with = "oid_format")]
    pub id: ObjectId,
    /// Name (unique; `root` is the default organization).
    pub name: String,
    /// Members with their roles (Oakestra's field name is `member`).
    #[serde(rename = "member", default)]
    pub members: Vec<Member>,
    /// Other keys, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl OrganizationRecord {
    /// The roles of `user_id` in this organization (empty if not a member).
    pub fn roles_of(&self, user_id: &str) -> &[String] {
        self.members
            .iter()
            .find(|m| m.user_id == user_id)
            .map_or(&[], |m| m.roles.as_slice())
    }
}

/// A cluster registered with the root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// Own id (a plain string `_id`).
    #[serde(rename = "_id")]
    pub id: ClusterId,
    /// Cluster name (unique: re-registering with the same name keeps the id).
    pub name: String,
    /// Location as the cluster gave it (free text or `"LAT,LON[,RADIUS]"`).
    #[serde(default)]
    pub location: String,
    /// Address the cluster registered from or advertises, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Port the cluster advertises, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Latest aggregated resources.
    #[serde(default)]
    pub resources: ClusterResources,
    /// Whether the cluster's link is up (the root sets this from its link timeout).
    #[serde(default)]
    pub active: bool,
    /// Seconds since the epoch of the last message from the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<f64>,
    /// Seconds since the epoch of the first registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<f64>,
    /// Id of the join token the cluster registered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token_id: Option<String>,
    /// Other keys, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A join token clusters present when they register. Only a hash of the secret is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    /// Token id (the public part the cluster sends next to the secret).
    #[serde(rename = "_id")]
    pub id: String,
    /// Human-readable name given at creation.
    #[serde(default)]
    pub name: String,
    /// Hash of the secret (format chosen by the root, e.g. a PHC string or hex SHA-256).
    pub hash: String,
    /// Creation time as the caller formatted it.
    #[serde(default)]
    pub created_at: String,
}

/// Key material the root signs tokens with, stored as opaque bytes (hex in the document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    /// Algorithm or purpose tag chosen by the caller (e.g. `"HS256"`).
    pub algorithm: String,
    /// The key bytes.
    #[serde(with = "hex_bytes")]
    pub key: Vec<u8>,
    /// Creation time as the caller formatted it.
    #[serde(default)]
    pub created_at: String,
}

/// Bytes as a lowercase hex string.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            s.push_str(&format!("{b:02x}"));
        }
        serializer.serialize_str(&s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(deserializer)?;
        if s.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd number of hex digits"));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(s.get(i..i + 2).unwrap_or("x"), 16)
                    .map_err(|_| serde::de::Error::custom(format!("bad hex at offset {i}")))
            })
            .collect()
    }
}

/// Makes fresh object ids: current time, 5 random bytes per process, and a counter that starts
/// at a random value — the way MongoDB drivers do, so ids sort by creation time.
pub fn new_object_id() -> ObjectId {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};

    fn random_u64() -> u64 {
        // std's RandomState is seeded from the OS; hashing nothing yields a random value.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(u64::from(std::process::id()));
        h.finish()
    }

    static PROCESS: OnceLock<([u8; 5], AtomicU32)> = OnceLock::new();
    let (unique, counter) = PROCESS.get_or_init(|| {
        let r = random_u64().to_be_bytes();
        (
            [r[0], r[1], r[2], r[3], r[4]],
            AtomicU32::new(random_u64() as u32),
        )
    });
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as u32;
    ObjectId::from_parts(secs, *unique, counter.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_key_bytes_round_trip_as_hex() {
        let k = SigningKey {
            algorithm: "HS256".into(),
            key: vec![0, 1, 0xab, 0xff],
            created_at: String::new(),
        };
        let v = serde_json::to_value(&k).unwrap();
        assert_eq!(v["key"], "0001abff");
        assert_eq!(serde_json::from_value::<SigningKey>(v).unwrap(), k);
    }

    #[test]
    fn object_ids_are_unique_and_ordered_within_a_second() {
        let a = new_object_id();
        let b = new_object_id();
        assert_ne!(a, b);
    }

    #[test]
    fn user_keeps_oakestra_field_names() {
        let u = UserRecord {
            id: new_object_id(),
            name: "Admin".into(),
            email: String::new(),
            password_hash: "$argon2id$x".into(),
            created_at: "01/01/2026 10:00".into(),
            token_version: 0,
            extra: Map::new(),
        };
        let v = serde_json::to_value(&u).unwrap();
        assert!(v["_id"]["$oid"].is_string());
        assert_eq!(v["password"], "$argon2id$x");
        assert_eq!(serde_json::from_value::<UserRecord>(v).unwrap(), u);
    }
}
