//! Our iptables rules (IPv4), all in chains of our own so that set-up and removal never touch
//! anyone else's rules:
//!
//! | table | chain | jumped to from | holds |
//! |---|---|---|---|
//! | nat | `<TAG>-DNAT` | PREROUTING and OUTPUT, for local destinations | one DNAT per port mapping, commented `<tag>:<instance>` |
//! | nat | `<TAG>-POST` | POSTROUTING | RETURN for the overlay (10.16.0.0/12), then MASQUERADE of the worker subnet leaving through another interface |
//! | filter | `<TAG>-FWD` | FORWARD (first) | ACCEPT in and out of the bridge |

use std::net::Ipv4Addr;

use super::super::{DataPlaneError, InstanceKey, Naming, PortForward, Protocol};
use crate::ipam::Ipv4Subnet;

/// The whole IPv4 overlay (worker subnets and service IPs), never masqueraded.
pub const OVERLAY_RANGE: &str = "10.16.0.0/12";

/// Runs `iptables -w 10 <args>`; `Ok(false)` when it exits non-zero and `check` is set (for
/// `-C` / `-L` probes), an error otherwise.
async fn iptables(args: &[&str], check: bool) -> Result<(bool, String), DataPlaneError> {
    let output = tokio::process::Command::new("iptables")
        .arg("-w")
        .arg("10")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| DataPlaneError::Firewall {
            args: args.join(" "),
            reason: e.to_string(),
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok((true, stdout));
    }
    if check {
        return Ok((false, stdout));
    }
    Err(DataPlaneError::Firewall {
        args: args.join(" "),
        reason: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
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

async fn ensure_chain(table: &str, chain: &str) -> Result<(), DataPlaneError> {
    let (exists, _) = iptables(&["-t", table, "-n", "-L", chain], true).await?;
    if !exists {
        let (made, _) = iptables(&["-t", table, "-N", chain], true).await?;
        // Someone else (a parallel set-up) may have made it meanwhile.
        if !made {
            iptables(&["-t", table, "-n", "-L", chain], false).await?;
        }
    }
    Ok(())
}

async fn ensure_rule(
    table: &str,
    chain: &str,
    rule: &[String],
    first: bool,
) -> Result<(), DataPlaneError> {
    let mut check = vec!["-t", table, "-C", chain];
    check.extend(rule.iter().map(String::as_str));
    if iptables(&check, true).await?.0 {
        return Ok(());
    }
    let mut add = vec!["-t", table, if first { "-I" } else { "-A" }, chain];
    if first {
        add.push("1");
    }
    add.extend(rule.iter().map(String::as_str));
    iptables(&add, false).await?;
    Ok(())
}

async fn delete_rule_everywhere(
    table: &str,
    chain: &str,
    rule: &[String],
) -> Result<(), DataPlaneError> {
    let mut delete = vec!["-t", table, "-D", chain];
    delete.extend(rule.iter().map(String::as_str));
    // Each -D removes one copy; stop when none is left (or the chain is gone).
    for _ in 0..16 {
        if !iptables(&delete, true).await?.0 {
            break;
        }
    }
    Ok(())
}

/// Creates (or repairs) our chains, their fixed rules and the jumps into them.
pub async fn setup(
    naming: &Naming,
    bridge: &str,
    subnet: Ipv4Subnet,
) -> Result<(), DataPlaneError> {
    let c = chains(naming);
    ensure_chain("nat", &c.dnat).await?;
    ensure_chain("nat", &c.post).await?;
    ensure_chain("filter", &c.fwd).await?;
    let source = format!("{}/{}", subnet.base(), subnet.prefix_len());
    // Rebuilt on every set-up: it holds fixed rules only, and their order matters.
    iptables(&["-t", "nat", "-F", &c.post], false).await?;
    // Overlay traffic (service IPs through the TUN device) keeps its addresses.
    let overlay: Vec<String> = ["-d", OVERLAY_RANGE, "-j", "RETURN"]
        .map(String::from)
        .to_vec();
    ensure_rule("nat", &c.post, &overlay, false).await?;
    let masquerade: Vec<String> = ["-s", &source, "!", "-o", bridge, "-j", "MASQUERADE"]
        .map(String::from)
        .to_vec();
    ensure_rule("nat", &c.post, &masquerade, false).await?;
    for rule in [
        ["-i", bridge, "-j", "ACCEPT"],
        ["-o", bridge, "-j", "ACCEPT"],
    ] {
        ensure_rule("filter", &c.fwd, &rule.map(String::from), false).await?;
    }
    for (table, builtin, rule) in jumps(&c) {
        ensure_rule(table, builtin, &rule, true).await?;
    }
    Ok(())
}

/// Removes the jumps and our chains. Missing pieces are fine.
pub async fn teardown(naming: &Naming) -> Result<(), DataPlaneError> {
    let c = chains(naming);
    for (table, builtin, rule) in jumps(&c) {
        delete_rule_everywhere(table, builtin, &rule).await?;
    }
    for (table, chain) in [("nat", &c.dnat), ("nat", &c.post), ("filter", &c.fwd)] {
        iptables(&["-t", table, "-F", chain], true).await?;
        iptables(&["-t", table, "-X", chain], true).await?;
    }
    Ok(())
}

fn dnat_rule(
    naming: &Naming,
    key: &InstanceKey,
    address: Ipv4Addr,
    port: &PortForward,
) -> Vec<String> {
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
        format!("{address}:{}", port.container),
    ]
}

/// Adds the DNAT rules of an instance's port mappings.
pub async fn add_ports(
    naming: &Naming,
    key: &InstanceKey,
    address: Ipv4Addr,
    ports: &[PortForward],
) -> Result<(), DataPlaneError> {
    let chain = chains(naming).dnat;
    for port in ports {
        ensure_rule("nat", &chain, &dnat_rule(naming, key, address, port), false).await?;
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
    /// Where it goes.
    pub address: Ipv4Addr,
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
        .and_then(|(a, p)| Some((a.parse().ok()?, p.parse().ok()?)))?;
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

/// Our DNAT rules, as the kernel holds them.
pub async fn list_ports(naming: &Naming) -> Result<Vec<FoundRule>, DataPlaneError> {
    let chain = chains(naming).dnat;
    let (exists, text) = iptables(&["-t", "nat", "-S", &chain], true).await?;
    if !exists {
        return Ok(Vec::new());
    }
    Ok(text.lines().filter_map(|l| parse_rule(naming, l)).collect())
}

/// Removes the DNAT rules of `key` (all of them, also ones this process did not add).
pub async fn remove_ports(naming: &Naming, key: &InstanceKey) -> Result<(), DataPlaneError> {
    let chain = chains(naming).dnat;
    for rule in list_ports(naming)
        .await?
        .into_iter()
        .filter(|r| r.key == *key)
    {
        delete_rule_everywhere("nat", &chain, &rule.spec).await?;
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
        assert_eq!(r.address, "10.18.0.5".parse::<Ipv4Addr>().unwrap());
        assert_eq!(r.spec[0], "-p");
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
