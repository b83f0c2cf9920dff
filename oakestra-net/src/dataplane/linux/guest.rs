//! The network of a virtual machine inside an instance's namespace ([`GuestNetwork`]), set up
//! on a thread that joined the namespace.

use super::super::{DataPlaneError, GuestNetwork};
use super::real::RtNetlink;
use super::sys::{EEXIST, Netlink};
use super::{io, netlink};

/// Inside an instance's namespace (on a thread that joined it): the persistent TAP with the
/// gateway address, forwarding on, every connection to the instance address (arriving on
/// `eth0`) sent on to the guest, and the guest's traffic leaving from the instance address.
/// Each step is skipped when already done.
pub(super) async fn inside(guest: GuestNetwork, mtu: u32) -> Result<(), DataPlaneError> {
    let handle = RtNetlink::connect().map_err(io("open a netlink socket in the namespace"))?;
    let tap_index = handle
        .link_index(&guest.tap)
        .await
        .map_err(netlink(format!("look up link {}", guest.tap)))?;
    if tap_index.is_none() {
        // Persistent: it outlives this descriptor, and qemu opens it by name.
        let tap = tokio_tun::Tun::builder()
            .name(&guest.tap)
            .tap()
            .persist()
            .mtu(mtu as i32)
            .build()
            .map_err(|e| io(format!("create TAP {}", guest.tap))(std::io::Error::other(e)))?;
        drop(tap);
    }
    let index = handle
        .link_index(&guest.tap)
        .await
        .map_err(netlink(format!("look up link {}", guest.tap)))?
        .ok_or_else(|| DataPlaneError::Netlink {
            what: format!("TAP {}", guest.tap),
            reason: "missing after its creation".into(),
        })?;
    match handle
        .add_address(index, guest.gateway.into(), guest.prefix_len)
        .await
    {
        Ok(()) => {}
        Err(e) if e.errno == Some(EEXIST) => {}
        Err(e) => {
            return Err(netlink(format!("add {} to {}", guest.gateway, guest.tap))(
                e,
            ));
        }
    }
    handle
        .set_up(index, None, None, None)
        .await
        .map_err(netlink(format!("set {} up", guest.tap)))?;
    // Per namespace: this thread's namespace is the one /proc/sys/net shows it.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(io("enable forwarding in the namespace"))?;
    let guest_ip = guest.guest.to_string();
    let rules: [&[&str]; 2] = [
        &[
            "PREROUTING",
            "-i",
            "eth0",
            "-j",
            "DNAT",
            "--to-destination",
            &guest_ip,
        ],
        &[
            "POSTROUTING",
            "-o",
            "eth0",
            "-s",
            &guest_ip,
            "-j",
            "MASQUERADE",
        ],
    ];
    for rule in rules {
        // std's Command on this thread: the child must inherit the namespace the thread joined.
        let run = |op: &str| {
            std::process::Command::new("iptables")
                .args(["-w", "10", "-t", "nat", op])
                .args(rule)
                .output()
        };
        let present = run("-C").map_err(io("run iptables"))?.status.success();
        if !present {
            let out = run("-A").map_err(io("run iptables"))?;
            if !out.status.success() {
                return Err(DataPlaneError::Firewall {
                    args: format!("-t nat -A {} (in the instance namespace)", rule.join(" ")),
                    reason: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
        }
    }
    Ok(())
}
