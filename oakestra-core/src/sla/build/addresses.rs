//! A microservice's `addresses`: rr and closest IPs in their networks, unique across the
//! descriptor.

use super::*;

impl Checker {
    pub(super) fn addresses(&mut self, m: Map<String, Value>) -> Option<Addresses> {
        let mut m = Fields::new(m);
        let rr_ip = m.take("rr_ip");
        let rr_ip = self
            .string(
                "rr_ip",
                rr_ip,
                "a string holding an IPv4 address inside 10.30.0.0/16",
            )
            .filter(|s| !s.is_empty())
            .and_then(|s| match check_rr_ip(&s) {
                Ok(ip) => {
                    self.unique_rr_v4(ip);
                    Some(ip)
                }
                Err(e) => {
                    self.report(Some("rr_ip"), e.to_string());
                    None
                }
            });
        let rr_ip_v6 = m.take("rr_ip_v6");
        let rr_ip_v6 = self
            .string(
                "rr_ip_v6",
                rr_ip_v6,
                "a string holding an IPv6 address inside fdff:2000::/21",
            )
            .filter(|s| !s.is_empty())
            .and_then(|s| match check_rr_ip_v6(&s) {
                Ok(ip) => {
                    self.unique_rr_v6(ip);
                    Some(ip)
                }
                Err(e) => {
                    self.report(Some("rr_ip_v6"), e.to_string());
                    None
                }
            });
        // The closest addresses stay text (the root's IPAM reserves them), but are checked
        // like rr_ip / rr_ip_v6: same networks, unique across the descriptor's service IPs.
        let closest_ip = m.take("closest_ip");
        let closest_ip = self.string(
            "closest_ip",
            closest_ip,
            "a string holding an IPv4 address inside 10.30.0.0/16",
        );
        if let Some(text) = closest_ip
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            match check_rr_ip(text) {
                Ok(ip) => self.unique_service_v4(ip, "closest_ip"),
                Err(_) => self.report(
                    Some("closest_ip"),
                    format!(
                        "\"{text}\" is not an IPv4 address inside 10.30.0.0/16; closest_ip must be one (10.30.x.y), like rr_ip"
                    ),
                ),
            }
        }
        let closest_ip_v6 = m.take("closest_ip_v6");
        let closest_ip_v6 = self.string(
            "closest_ip_v6",
            closest_ip_v6,
            "a string holding an IPv6 address inside fdff:2000::/21",
        );
        if let Some(text) = closest_ip_v6
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            match check_rr_ip_v6(text) {
                Ok(ip) => self.unique_service_v6(ip, "closest_ip_v6"),
                Err(_) => self.report(
                    Some("closest_ip_v6"),
                    format!(
                        "\"{text}\" is not an IPv6 address inside fdff:2000::/21; closest_ip_v6 must be one, like rr_ip_v6"
                    ),
                ),
            }
        }
        let instances = m.take("instances");
        let instances = self.object_array("instances", instances, "an address range", |c, _, m| {
            let mut m = Fields::new(m);
            let from = m.take("from");
            let from = c.string("from", from, "a string");
            let to = m.take("to");
            let to = c.string("to", to, "a string");
            let start = m.take("start");
            let start = c.string("start", start, "a string");
            Some(InstanceAddressRange {
                from,
                to,
                start,
                extra: m.into_extra(),
            })
        });
        Some(Addresses {
            rr_ip,
            rr_ip_v6,
            closest_ip,
            closest_ip_v6,
            instances,
            extra: m.into_extra(),
        })
    }

    /// A closest address must differ from every rr and closest address of the descriptor.
    pub(super) fn unique_service_v4(&mut self, ip: Ipv4Addr, field: &str) {
        let here = render(&self.path, Some(field));
        if let Some((_, first)) = self.rr_v4.iter().find(|(seen, _)| *seen == ip) {
            let message = format!(
                "{ip} is already used at {first}; every service needs its own round-robin and closest addresses"
            );
            self.violations.push(Violation {
                path: here,
                message,
            });
        } else {
            self.rr_v4.push((ip, here));
        }
    }

    /// Like [`Self::unique_service_v4`], for IPv6.
    pub(super) fn unique_service_v6(&mut self, ip: Ipv6Addr, field: &str) {
        let here = render(&self.path, Some(field));
        if let Some((_, first)) = self.rr_v6.iter().find(|(seen, _)| *seen == ip) {
            let message = format!(
                "{ip} is already used at {first}; every service needs its own round-robin and closest addresses"
            );
            self.violations.push(Violation {
                path: here,
                message,
            });
        } else {
            self.rr_v6.push((ip, here));
        }
    }

    pub(super) fn unique_rr_v4(&mut self, ip: Ipv4Addr) {
        let here = render(&self.path, Some("rr_ip"));
        if let Some((_, first)) = self.rr_v4.iter().find(|(seen, _)| *seen == ip) {
            let message = if first.ends_with("/closest_ip") {
                format!(
                    "{ip} is already used at {first}; every service needs its own round-robin and closest addresses"
                )
            } else {
                format!(
                    "{ip} is already the rr_ip of {first}; every service needs its own round-robin address"
                )
            };
            self.violations.push(Violation {
                path: here,
                message,
            });
        } else {
            self.rr_v4.push((ip, here));
        }
    }

    pub(super) fn unique_rr_v6(&mut self, ip: Ipv6Addr) {
        let here = render(&self.path, Some("rr_ip_v6"));
        if let Some((_, first)) = self.rr_v6.iter().find(|(seen, _)| *seen == ip) {
            let message = if first.ends_with("/closest_ip_v6") {
                format!(
                    "{ip} is already used at {first}; every service needs its own round-robin and closest addresses"
                )
            } else {
                format!(
                    "{ip} is already the rr_ip_v6 of {first}; every service needs its own round-robin address"
                )
            };
            self.violations.push(Violation {
                path: here,
                message,
            });
        } else {
            self.rr_v6.push((ip, here));
        }
    }
}
