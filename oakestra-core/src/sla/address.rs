//! Rules for user-given round-robin service addresses.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The IPv4 service network: round-robin and instance IPs live in 10.30.0.0/16.
pub const RR_IPV4_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 30, 0, 0), 16);
/// The IPv6 round-robin network, fdff:2000::/21.
pub const RR_IPV6_NET: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfdff, 0x2000, 0, 0, 0, 0, 0, 0), 21);

/// Why a round-robin address was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not an IPv4 address in dotted-decimal form.
    #[error(
        "\"{0}\" is not a valid IPv4 address; use a dotted address inside 10.30.0.0/16, e.g. \"10.30.55.55\""
    )]
    NotIpv4(String),
    /// A valid IPv4 address outside 10.30.0.0/16.
    #[error("{0} is outside the service network; rr_ip must be inside 10.30.0.0/16 (10.30.x.y)")]
    Ipv4OutOfRange(Ipv4Addr),
    /// Not an IPv6 address.
    #[error(
        "\"{0}\" is not a valid IPv6 address; use an address inside fdff:2000::/21, e.g. \"fdff:2000::1337\""
    )]
    NotIpv6(String),
    /// A valid IPv6 address outside fdff:2000::/21.
    #[error(
        "{0} is outside the round-robin network; rr_ip_v6 must be inside fdff:2000::/21 (fdff:2000::1 to fdff:27ff:ffff:ffff:ffff:ffff:ffff:ffff)"
    )]
    Ipv6OutOfRange(Ipv6Addr),
    /// Inside 10.30.0.0/16 but the network or broadcast address, which the IPAM never hands out.
    #[error(
        "{ip} is {reason}, which is never used as a service address; rr_ip must be inside 10.30.0.1–10.30.255.254"
    )]
    Ipv4Reserved {
        /// The address given.
        ip: Ipv4Addr,
        /// Which reserved address it is.
        reason: &'static str,
    },
    /// Inside fdff:2000::/21 but its subnet-router anycast address, which the IPAM never hands out.
    #[error(
        "{ip} is {reason}, which is never used as a service address; rr_ip_v6 must be inside fdff:2000::1–fdff:27ff:ffff:ffff:ffff:ffff:ffff:ffff"
    )]
    Ipv6Reserved {
        /// The address given.
        ip: Ipv6Addr,
        /// Which reserved address it is.
        reason: &'static str,
    },
}

/// `true` when `ip` lies in 10.30.0.0/16.
pub fn in_rr_ipv4_net(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    a == 10 && b == 30
}

/// `true` when `ip` lies in fdff:2000::/21.
pub fn in_rr_ipv6_net(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    s[0] == 0xfdff && (s[1] & 0xf800) == 0x2000
}

/// Parses and checks a user-given `rr_ip`.
///
/// Accepts exactly what the root's IPAM (`oakestra-net`) can reserve, so that a descriptor
/// `oak validate` calls valid is not refused by the root: 10.30.0.0/16 without its network
/// address 10.30.0.0 and its broadcast address 10.30.255.255.
pub fn check_rr_ip(text: &str) -> Result<Ipv4Addr, AddressError> {
    let ip: Ipv4Addr = text
        .parse()
        .map_err(|_| AddressError::NotIpv4(text.to_owned()))?;
    if !in_rr_ipv4_net(ip) {
        return Err(AddressError::Ipv4OutOfRange(ip));
    }
    let reason = match ip.octets() {
        [_, _, 0, 0] => "the network address of 10.30.0.0/16",
        [_, _, 255, 255] => "the broadcast address of 10.30.0.0/16",
        _ => return Ok(ip),
    };
    Err(AddressError::Ipv4Reserved { ip, reason })
}

/// Parses and checks a user-given `rr_ip_v6`.
///
/// Accepts exactly what the root's IPAM can reserve: fdff:2000::/21 without its subnet-router
/// anycast address fdff:2000:: (all-zero host part, RFC 4291 §2.6.1).
pub fn check_rr_ip_v6(text: &str) -> Result<Ipv6Addr, AddressError> {
    let ip: Ipv6Addr = text
        .parse()
        .map_err(|_| AddressError::NotIpv6(text.to_owned()))?;
    if !in_rr_ipv6_net(ip) {
        return Err(AddressError::Ipv6OutOfRange(ip));
    }
    if ip == RR_IPV6_NET.0 {
        return Err(AddressError::Ipv6Reserved {
            ip,
            reason: "the subnet-router anycast address of fdff:2000::/21",
        });
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_cases_of_the_network_tests() {
        assert!(check_rr_ip("10.30.0.1").is_ok());
        assert!(check_rr_ip("10.30.55.55").is_ok());
        assert!(check_rr_ip("10.30.255.254").is_ok());
        assert!(check_rr_ip("10.30.0.255").is_ok());
        assert!(check_rr_ip("10.30.255.0").is_ok());
        // The network and broadcast addresses, which the IPAM never hands out.
        let err = check_rr_ip("10.30.0.0").unwrap_err();
        assert!(matches!(err, AddressError::Ipv4Reserved { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "10.30.0.0 is the network address of 10.30.0.0/16, which is never used as a \
             service address; rr_ip must be inside 10.30.0.1–10.30.255.254"
        );
        let err = check_rr_ip("10.30.255.255").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("10.30.255.255 is the broadcast address of 10.30.0.0/16"),
            "{err}"
        );
        assert_eq!(
            check_rr_ip("10.20.0.1"),
            Err(AddressError::Ipv4OutOfRange(Ipv4Addr::new(10, 20, 0, 1)))
        );
        assert!(matches!(
            check_rr_ip("173.30.0.1"),
            Err(AddressError::Ipv4OutOfRange(_))
        ));
        assert!(matches!(
            check_rr_ip("192.168.178.4"),
            Err(AddressError::Ipv4OutOfRange(_))
        ));
        // Oakestra's prefix check lets these through; real parsing does not.
        for bad in [
            "10.30.x.y",
            "10.30.1",
            "10.30.1.256",
            "10.30.1.1.1",
            "10.30.01.1",
            "",
            " 10.30.1.1",
        ] {
            assert!(
                matches!(check_rr_ip(bad), Err(AddressError::NotIpv4(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn ipv6_cases_of_the_network_tests() {
        assert!(check_rr_ip_v6("fdff:2000::1337").is_ok());
        assert!(check_rr_ip_v6("fdff:2000::1").is_ok());
        // The subnet-router anycast address, however it is spelt.
        for anycast in ["fdff:2000::", "FDFF:2000:0:0:0:0:0:0"] {
            let err = check_rr_ip_v6(anycast).unwrap_err();
            assert!(matches!(err, AddressError::Ipv6Reserved { .. }), "{err:?}");
            assert_eq!(
                err.to_string(),
                "fdff:2000:: is the subnet-router anycast address of fdff:2000::/21, which is \
                 never used as a service address; rr_ip_v6 must be inside \
                 fdff:2000::1–fdff:27ff:ffff:ffff:ffff:ffff:ffff:ffff"
            );
        }
        // The whole /21, wider than Oakestra's "second group starts with 20" check.
        assert!(check_rr_ip_v6("fdff:27ff:ffff:ffff:ffff:ffff:ffff:ffff").is_ok());
        assert!(check_rr_ip_v6("FDFF:2000:0000::1").is_ok());
        for out in [
            "fdff:1000::1337",
            "2001:db80::1337",
            "fdff:2800::",
            "fdff::1",
        ] {
            assert!(
                matches!(check_rr_ip_v6(out), Err(AddressError::Ipv6OutOfRange(_))),
                "{out}"
            );
        }
        for bad in [
            "fdff:2000::g",
            "fdff:2000",
            "10.30.0.1",
            "",
            "fdff:2000:::1",
        ] {
            assert!(
                matches!(check_rr_ip_v6(bad), Err(AddressError::NotIpv6(_))),
                "{bad}"
            );
        }
    }
}
