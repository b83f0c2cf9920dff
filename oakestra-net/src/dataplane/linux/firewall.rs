//! Our iptables and ip6tables rules, all in chains of our own so that set-up and removal never
//! touch anyone else's rules:
//!
//! | table | chain | jumped to from | holds |
//! |---|---|---|---|
//! | nat | `<TAG>-DNAT` | PREROUTING and OUTPUT, for local destinations | one DNAT per port mapping and IP version, commented `<tag>:<instance>` |
//! | nat | `<TAG>-POST` | POSTROUTING | RETURN for the overlay (10.16.0.0/12; IPv6 fc00::/7), then MASQUERADE of the worker subnet (/26 by default; IPv6 /120) leaving through another interface |
//! | filter | `<TAG>-FWD` | FORWARD (first) | ACCEPT in and out of the bridge |
//!
//! The IPv6 chains (ip6tables, same names) are best effort, like the rest of IPv6 on the
//! worker: a host without IPv6 (or without ip6tables' nat table) still runs IPv4.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::super::{DataPlaneError, InstanceKey, Naming, PortForward, Protocol};
use super::sys::{Family, Firewall};
use crate::ipam::{Ipv4Subnet, Ipv6Subnet};

/// The whole IPv4 overlay (worker subnets and service IPs), never masqueraded.
pub const OVERLAY_RANGE: &str = "10.16.0.0/12";
/// The whole IPv6 overlay (worker /120s in fc00::/7 and the fdff::/16 service IPs inside it),
/// never masqueraded.
pub const OVERLAY_RANGE_V6: &str = "fc00::/7";

/// Runs `iptables -w 10 <args>` (or `ip6tables`); `Ok(false)` when it exits non-zero and
/// `check` is set (for `-C` / `-L` probes), an error otherwise.
async fn run(
    fw: &dyn Firewall,
    family: Family,
    args: &[&str],
    check: bool,
) -> Result<(bool, String), DataPlaneError> {
    let output = fw
        .run(family, args)
        .await
        .map_err(|e| DataPlaneError::Firewall {
            args: format!("{} {}", family.binary(), args.join(" ")),
            reason: e.to_string(),
        })?;
    if output.success {
        return Ok((true, output.stdout));
    }
    if check {
        return Ok((false, output.stdout));
    }
    Err(DataPlaneError::Firewall {
        args: format!("{} {}", family.binary(), args.join(" ")),
        reason: output.stderr.trim().to_owned(),
    })
}

struct Chains {
    dnat: String,
    post: String,
    fwd: String,
}

fn chains(naming: &Naming) -> Chains {
    let p = naming.chain_prefix();
    Chains {
        dnat: format!("{p}-DNAT"),
        post: format!("{p}-POST"),
        fwd: format!("{p}-FWD"),
    }
}

/// The jumps into our chains: (table, built-in chain, rule).
fn jumps(c: &Chains) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let local = |chain: &str| {
        ["-m", "addrtype", "--dst-type", "LOCAL", "-j", chain]
            .map(String::from)
            .to_vec()
    };
    vec![
        ("nat", "PREROUTING", local(&c.dnat)),
        ("nat", "OUTPUT", local(&c.dnat)),
        ("nat", "POSTROUTING", vec!["-j".into(), c.post.clone()]),
        ("filter", "FORWARD", vec!["-j".into(), c.fwd.clone()]),
    ]
}

/// Our chains (the same for both IP versions): (table, chain).
fn our_chains(c: &Chains) -> Vec<(&'static str, &str)> {
    vec![
        ("nat", c.dnat.as_str()),
        ("nat", c.post.as_str()),
        ("filter", c.fwd.as_str()),
    ]
}

async fn ensure_chain(
    fw: &dyn Firewall,
    family: Family,
    table: &str,
    chain: &str,
) -> Result<(), DataPlaneError> {
    let (exists, _) = run(fw, family, &["-t", table, "-n", "-L", chain], true).await?;
    if !exists {
        let (made, _) = run(fw, family, &["-t", table, "-N", chain], true).await?;
        // Someone else (a parallel set-up) may have made it meanwhile.
        if !made {
            run(fw, family, &["-t", table, "-n", "-L", chain], false).await?;
        }
    }
    Ok(())
}

async fn ensure_rule(
    fw: &dyn Firewall,
    family: Family,
    table: &str,
    chain: &str,
    rule: &[String],
    first: bool,
) -> Result<(), DataPlaneError> {
    let mut check = vec!["-t", table, "-C", chain];
    check.extend(rule.iter().map(String::as_str));
    if run(fw, family, &check, true).await?.0 {
        return Ok(());
    }
    let mut add = vec!["-t", table, if first { "-I" } else { "-A" }, chain];
    if first {
        add.push("1");
    }
    add.extend(rule.iter().map(String::as_str));
    run(fw, family, &add, false).await?;
    Ok(())
}

async fn delete_rule_everywhere(
    fw: &dyn Firewall,
    family: Family,
    table: &str,
    chain: &str,
    rule: &[String],
) -> Result<(), DataPlaneError> {
    let mut delete = vec!["-t", table, "-D", chain];
    delete.extend(rule.iter().map(String::as_str));
    // Each -D removes one copy; stop when none is left (or the chain is gone).
    for _ in 0..16 {
        if !run(fw, family, &delete, true).await?.0 {
            break;
        }
    }
    Ok(())
}

/// Creates (or repairs) our IPv4 chains, their fixed rules and the jumps into them.
pub async fn setup(
    fw: &dyn Firewall,
    naming: &Naming,
    bridge: &str,
    subnet: Ipv4Subnet,
) -> Result<(), DataPlaneError> {
    let source = format!("{}/{}", subnet.base(), subnet.prefix_len());
    setup_family(fw, Family::V4, naming, bridge, &source, OVERLAY_RANGE).await
}

/// Creates (or repairs) our IPv6 chains (ip6tables): the worker's /120 masqueraded when it
/// leaves through another interface than the bridge, the overlay (fc00::/7) not, forwarding
/// in and out of the bridge accepted.
pub async fn setup_v6(
    fw: &dyn Firewall,
    naming: &Naming,
    bridge: &str,
    subnet: Ipv6Subnet,
) -> Result<(), DataPlaneError> {
    let source = format!("{}/{}", subnet.base(), subnet.prefix_len());
    setup_family(fw, Family::V6, naming, bridge, &source, OVERLAY_RANGE_V6).await
}

async fn setup_family(
    fw: &dyn Firewall,
    family: Family,
    naming: &Naming,
    bridge: &str,
    source: &str,
    overlay_range: &str,
) -> Result<(), DataPlaneError> {
    let c = chains(naming);
    for (table, chain) in our_chains(&c) {
        ensure_chain(fw, family, table, chain).await?;
    }
    // Rebuilt on every set-up: it holds fixed rules only, and their order matters.
    run(fw, family, &["-t", "nat", "-F", &c.post], false).await?;
    // Overlay traffic (service IPs through the TUN device) keeps its addresses.
    let overlay: Vec<String> = ["-d", overlay_range, "-j", "RETURN"]
        .map(String::from)
        .to_vec();
    ensure_rule(fw, family, "nat", &c.post, &overlay, false).await?;
    let masquerade: Vec<String> = ["-s", source, "!", "-o", bridge, "-j", "MASQUERADE"]
        .map(String::from)
        .to_vec();
    ensure_rule(fw, family, "nat", &c.post, &masquerade, false).await?;
    for rule in [
        ["-i", bridge, "-j", "ACCEPT"],
        ["-o", bridge, "-j", "ACCEPT"],
    ] {
        ensure_rule(fw, family, "filter", &c.fwd, &rule.map(String::from), false).await?;
    }
    for (table, builtin, rule) in jumps(&c) {
        ensure_rule(fw, family, table, builtin, &rule, true).await?;
    }
    Ok(())
}

/// Removes the IPv4 jumps and chains. Missing pieces are fine.
pub async fn teardown(fw: &dyn Firewall, naming: &Naming) -> Result<(), DataPlaneError> {
    teardown_family(fw, Family::V4, naming).await
}

/// Removes the IPv6 jumps and chains. Missing pieces are fine.
pub async fn teardown_v6(fw: &dyn Firewall, naming: &Naming) -> Result<(), DataPlaneError> {
    teardown_family(fw, Family::V6, naming).await
}

async fn teardown_family(
    fw: &dyn Firewall,
    family: Family,
    naming: &Naming,
) -> Result<(), DataPlaneError> {
    let c = chains(naming);
    for (table, builtin, rule) in jumps(&c) {
        delete_rule_everywhere(fw, family, table, builtin, &rule).await?;
    }
    for (table, chain) in our_chains(&c) {
        run(fw, family, &["-t", table, "-F", chain], true).await?;
        run(fw, family, &["-t", table, "-X", chain], true).await?;
    }
    Ok(())
}

fn dnat_rule(
    naming: &Naming,
    key: &InstanceKey,
    address: IpAddr,
    port: &PortForward,
) -> Vec<String> {
    let to = match address {
        IpAddr::V4(a) => format!("{a}:{}", port.container),
        IpAddr::V6(a) => format!("[{a}]:{}", port.container),
    };
    vec![
        "-p".into(),
        port.protocol.as_str().into(),
        "--dport".into(),
        port.host.to_string(),
        "-m".into(),
        "comment".into(),
        "--comment".into(),
        naming.rule_comment(key),
        "-j".into(),
        "DNAT".into(),
        "--to-destination".into(),
        to,
    ]
}

fn family_of(address: IpAddr) -> Family {
    if address.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

/// Adds the DNAT rules of an instance's port mappings: to its IPv4 address, and (best effort,
/// like the rest of IPv6 on the worker) to its IPv6 address for connections to the worker's
/// IPv6 addresses.
pub async fn add_ports(
    fw: &dyn Firewall,
    naming: &Naming,
    key: &InstanceKey,
    address: Ipv4Addr,
    address_v6: Ipv6Addr,
    ports: &[PortForward],
) -> Result<(), DataPlaneError> {
    let chain = chains(naming).dnat;
    for port in ports {
        let rule = dnat_rule(naming, key, address.into(), port);
        ensure_rule(fw, Family::V4, "nat", &chain, &rule, false).await?;
    }
    for port in ports {
        let rule = dnat_rule(naming, key, address_v6.into(), port);
        if let Err(e) = ensure_rule(fw, Family::V6, "nat", &chain, &rule, false).await {
            tracing::warn!(instance = %key, "port mapping without IPv6: {e}");
            break;
        }
    }
    Ok(())
}

/// A DNAT rule of ours as found in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRule {
    /// Whose.
    pub key: InstanceKey,
    /// The mapping.
    pub port: PortForward,
    /// Where it goes (the instance's IPv4 or IPv6 address).
    pub address: IpAddr,
    /// The rule as `iptables -S` prints it, without `-A <chain>`.
    spec: Vec<String>,
}

/// Parses one `-A <chain> …` line of `iptables -S`.
fn parse_rule(naming: &Naming, line: &str) -> Option<FoundRule> {
    let tokens: Vec<String> = line
        .split_whitespace()
        .map(|t| t.trim_matches('"').to_owned())
        .collect();
    if tokens.first().map(String::as_str) != Some("-A") {
        return None;
    }
    let value = |flag: &str| {
        tokens
            .iter()
            .position(|t| t == flag)
            .and_then(|i| tokens.get(i + 1))
            .cloned()
    };
    let comment = value("--comment")?;
    let key = InstanceKey::parse(comment.strip_prefix(&format!("{}:", naming.tag()))?)?;
    let protocol = match value("-p")?.as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    let host = value("--dport")?.parse().ok()?;
    let (address, container) = value("--to-destination")?
        .rsplit_once(':')
        .and_then(|(a, p)| {
            let a = a.trim_start_matches('[').trim_end_matches(']');
            Some((a.parse().ok()?, p.parse().ok()?))
        })?;
    Some(FoundRule {
        key,
        port: PortForward {
            host,
            container,
            protocol,
        },
        address,
        spec: tokens[2..].to_vec(),
    })
}

/// Our DNAT rules (IPv4, then IPv6), as the kernel holds them.
pub async fn list_ports(
    fw: &dyn Firewall,
    naming: &Naming,
) -> Result<Vec<FoundRule>, DataPlaneError> {
    let chain = chains(naming).dnat;
    let mut found = Vec::new();
    for family in [Family::V4, Family::V6] {
        let (exists, text) = match run(fw, family, &["-t", "nat", "-S", &chain], true).await {
            Ok(r) => r,
            // No ip6tables at all: no IPv6 rules either.
            Err(_) if family == Family::V6 => continue,
            Err(e) => return Err(e),
        };
        if exists {
            found.extend(text.lines().filter_map(|l| parse_rule(naming, l)));
        }
    }
    Ok(found)
}

/// Removes the DNAT rules of `key` (all of them, also ones this process did not add).
pub async fn remove_ports(
    fw: &dyn Firewall,
    naming: &Naming,
    key: &InstanceKey,
) -> Result<(), DataPlaneError> {
    let chain = chains(naming).dnat;
    for rule in list_ports(fw, naming)
        .await?
        .into_iter()
        .filter(|r| r.key == *key)
    {
        delete_rule_everywhere(fw, family_of(rule.address), "nat", &chain, &rule.spec).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_rules_it_writes() {
        let naming = Naming::new("oakrs").unwrap();
        let line = "-A OAKRS-DNAT -p udp -m udp --dport 5353 -m comment --comment \"oakrs:app.ns.s.ns.2\" -j DNAT --to-destination 10.18.0.5:53";
        let r = parse_rule(&naming, line).unwrap();
        assert_eq!(r.key, InstanceKey::new("app.ns.s.ns", 2).unwrap());
        assert_eq!(
            r.port,
            PortForward {
                host: 5353,
                container: 53,
                protocol: Protocol::Udp
            }
        );
        assert_eq!(r.address, "10.18.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(r.spec[0], "-p");
        // ip6tables writes the address in brackets.
        let v6 = "-A OAKRS-DNAT -p tcp -m tcp --dport 8080 -m comment --comment \"oakrs:app.ns.s.ns.2\" -j DNAT --to-destination [fc00::102]:80";
        let r = parse_rule(&naming, v6).unwrap();
        assert_eq!(r.address, "fc00::102".parse::<IpAddr>().unwrap());
        assert_eq!(r.port.container, 80);
        assert_eq!(
            dnat_rule(&naming, &r.key, r.address, &r.port)
                .last()
                .unwrap(),
            "[fc00::102]:80"
        );
        // Someone else's rule, or another tag's: not ours.
        assert!(
            parse_rule(
                &naming,
                "-A OAKRS-DNAT -p tcp --dport 1 -j DNAT --to-destination 1.2.3.4:1"
            )
            .is_none()
        );
        let other = line.replace("oakrs:", "other:");
        assert!(parse_rule(&naming, &other).is_none());
        assert!(parse_rule(&naming, "-N OAKRS-DNAT").is_none());
    }
}
