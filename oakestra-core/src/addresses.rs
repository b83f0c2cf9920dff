//! The service addresses of one instance, typed from the SLA to the worker's proxy.
//!
//! A service has a round-robin pair (`RR_ip`, `RR_ip_v6`) and a closest pair (`Closest_ip`,
//! `Closest_ip_v6`); each instance has its own pair (`instance_ip`, `instance_ip_v6`). The
//! root's IPAM assigns them; the cluster hands them to the worker in the deploy command
//! (under these JSON names, Oakestra's) and answers table queries with them; the worker's
//! proxy routes by them. [`ServiceAddresses`] carries all six, so no hop parses text again.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::lenient;

/// Every service address an instance answers on (absent ones are `None`).
///
/// Serialized with Oakestra's keys (`instance_ip`, `instance_ip_v6`, `RR_ip`, `RR_ip_v6`,
/// `Closest_ip`, `Closest_ip_v6`, in this order), absent ones omitted; reading accepts `""`, `null` and
/// unparsable text as absent.
///
/// ```
/// use oakestra_core::addresses::ServiceAddresses;
///
/// let a: ServiceAddresses =
///     serde_json::from_str(r#"{"RR_ip": "10.30.0.1", "instance_ip": "10.30.0.2", "Closest_ip": ""}"#)
///         .unwrap();
/// assert_eq!(a.rr_ip, Some("10.30.0.1".parse().unwrap()));
/// assert!(a.contains("10.30.0.2".parse().unwrap()));
/// assert_eq!(a.closest_ip, None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceAddresses {
    /// The instance's own service IPv4.
    #[serde(
        default,
        deserialize_with = "lenient::option_ip",
        skip_serializing_if = "Option::is_none"
    )]
    pub instance_ip: Option<Ipv4Addr>,
    /// The instance's own service IPv6.
    #[serde(
        default,
        deserialize_with = "lenient::option_ip",
        skip_serializing_if = "Option::is_none"
    )]
    pub instance_ip_v6: Option<Ipv6Addr>,
    /// Round-robin service IPv4 (10.30.0.0/16).
    #[serde(
        rename = "RR_ip",
        default,
        deserialize_with = "lenient::option_ip",
        skip_serializing_if = "Option::is_none"
    )]
    pub rr_ip: Option<Ipv4Addr>,
    /// Round-robin service IPv6 (fdff:2000::/21).
    #[serde(
        rename = "RR_ip_v6",
        default,
        deserialize_with = "lenient::option_ip",
        skip_serializing_if = "Option::is_none"
    )]
    pub rr_ip_v6: Option<Ipv6Addr>,
    /// Closest service IPv4 (same pool as `rr_ip`).
    #[serde(
        rename = "Closest_ip",
        default,
        deserialize_with = "lenient::option_ip",
        skip_serializing_if = "Option::is_none"
    )]
    pub closest_ip: Option<Ipv4Addr>,
    /// Closest service IPv6 (same pool as `rr_ip_v6`).
    #[serde(
        rename = "Closest_ip_v6",
        default,
        deserialize_with = "lenient::option_ip",
        skip_serializing_if = "Option::is_none"
    )]
    pub closest_ip_v6: Option<Ipv6Addr>,
}

impl ServiceAddresses {
    /// Every address present, in the order instance, RR, closest (IPv4 before IPv6).
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        [
            self.instance_ip.map(IpAddr::V4),
            self.instance_ip_v6.map(IpAddr::V6),
            self.rr_ip.map(IpAddr::V4),
            self.rr_ip_v6.map(IpAddr::V6),
            self.closest_ip.map(IpAddr::V4),
            self.closest_ip_v6.map(IpAddr::V6),
        ]
        .into_iter()
        .flatten()
    }

    /// Whether `ip` is one of these addresses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.iter().any(|a| a == ip)
    }

    /// Whether the service has a closest address (IPv4 or IPv6).
    pub fn has_closest(&self) -> bool {
        self.closest_ip.is_some() || self.closest_ip_v6.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn oakestra_keys_round_trip_and_absent_ones_are_omitted() {
        let a = ServiceAddresses {
            rr_ip: Some(Ipv4Addr::new(10, 30, 0, 1)),
            rr_ip_v6: Some("fdff:2000::1".parse().unwrap()),
            instance_ip: Some(Ipv4Addr::new(10, 30, 0, 2)),
            ..ServiceAddresses::default()
        };
        let v = serde_json::to_value(a).unwrap();
        assert_eq!(
            v,
            json!({"instance_ip": "10.30.0.2", "RR_ip": "10.30.0.1", "RR_ip_v6": "fdff:2000::1"})
        );
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"instance_ip":"10.30.0.2","RR_ip":"10.30.0.1","RR_ip_v6":"fdff:2000::1"}"#,
            "Oakestra's key order"
        );
        assert_eq!(serde_json::from_value::<ServiceAddresses>(v).unwrap(), a);
    }

    #[test]
    fn empty_null_and_garbage_read_as_absent() {
        let a: ServiceAddresses = serde_json::from_value(json!({
            "RR_ip": "", "RR_ip_v6": null, "Closest_ip": "not an ip",
            "Closest_ip_v6": "10.30.0.1", "instance_ip": " 10.30.0.9 "
        }))
        .unwrap();
        assert_eq!(
            a,
            ServiceAddresses {
                instance_ip: Some(Ipv4Addr::new(10, 30, 0, 9)),
                ..ServiceAddresses::default()
            }
        );
    }

    #[test]
    fn contains_compares_addresses_not_spellings() {
        let a = ServiceAddresses {
            closest_ip_v6: Some("fdff:2000::5".parse().unwrap()),
            ..ServiceAddresses::default()
        };
        assert!(a.contains("fdff:2000:0:0::5".parse().unwrap()));
        assert!(!a.contains("fdff:2000::6".parse().unwrap()));
        assert!(a.has_closest());
        assert!(!ServiceAddresses::default().has_closest());
    }
}
