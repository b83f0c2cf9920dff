//! The worker's disk and network, for `/metrics`: bytes read and written by its disks
//! (`/proc/diskstats`), bytes received and sent by its network interfaces (`/proc/net/dev`)
//! and the size and free space of the file system of its data directory (`statvfs`). The
//! parsing is pure and tested here; [`render`] reads the files when scraped.

use std::fmt::Write as _;
use std::path::Path;

/// Network bytes of every interface but loopback, since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkBytes {
    /// Bytes received.
    pub received: u64,
    /// Bytes sent.
    pub transmitted: u64,
}

/// Disk bytes of every whole disk, since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskBytes {
    /// Bytes read from the disks.
    pub read: u64,
    /// Bytes written to the disks.
    pub written: u64,
}

/// Sums `/proc/net/dev` over the interfaces except `lo`. Lines that do not parse are skipped.
pub fn parse_net_dev(text: &str) -> NetworkBytes {
    let mut total = NetworkBytes::default();
    // Two header lines, then `iface: rx_bytes rx_packets … (8 rx fields) tx_bytes …`.
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let fields: Vec<u64> = counters
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        if fields.len() >= 16 {
            total.received = total.received.saturating_add(fields[0]);
            total.transmitted = total.transmitted.saturating_add(fields[8]);
        }
    }
    total
}

/// Sums `/proc/diskstats` over whole disks (partitions, loop, RAM and device-mapper devices
/// would count the same bytes twice or are not disks). Sectors are 512 bytes there, whatever
/// the device's sector size.
pub fn parse_diskstats(text: &str) -> DiskBytes {
    let mut total = DiskBytes::default();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // major minor name reads merged sectors_read ms writes merged sectors_written …
        if fields.len() < 10 || !is_whole_disk(fields[2]) {
            continue;
        }
        let (Ok(read), Ok(written)) = (fields[5].parse::<u64>(), fields[9].parse::<u64>()) else {
            continue;
        };
        total.read = total.read.saturating_add(read.saturating_mul(512));
        total.written = total.written.saturating_add(written.saturating_mul(512));
    }
    total
}

/// Whether a block device name is a whole disk: `sda`, `vdb`, `xvda`, `nvme0n1`, `mmcblk0`,
/// but not `sda1`, `nvme0n1p2`, `mmcblk0p1`, `loop0`, `ram0`, `zram0`, `dm-0`, `sr0`, `md0`.
pub fn is_whole_disk(name: &str) -> bool {
    const NOT_DISKS: [&str; 7] = ["loop", "ram", "zram", "dm-", "sr", "md", "fd"];
    if NOT_DISKS.iter().any(|p| name.starts_with(p)) {
        return false;
    }
    if name.starts_with("nvme") || name.starts_with("mmcblk") {
        // Partitions are `<disk ending in a digit>p<N>`.
        let partition = name.rfind('p').is_some_and(|p| {
            let after = &name[p + 1..];
            name[..p].ends_with(|c: char| c.is_ascii_digit())
                && !after.is_empty()
                && after.bytes().all(|b| b.is_ascii_digit())
        });
        return !partition;
    }
    // sd*, vd*, xvd*, hd*: letters only; a trailing number is a partition.
    !name.ends_with(|c: char| c.is_ascii_digit())
}

/// The Prometheus text of the worker's disk and network, measured now; series whose source
/// cannot be read are left out.
pub fn render(data_dir: &Path) -> String {
    let mut out = String::with_capacity(1024);
    let mut series = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    if let Ok(text) = std::fs::read_to_string("/proc/net/dev") {
        let net = parse_net_dev(&text);
        series(
            "oakestra_node_network_receive_bytes_total",
            "counter",
            "Bytes received by the worker's network interfaces (all but loopback).",
            net.received,
        );
        series(
            "oakestra_node_network_transmit_bytes_total",
            "counter",
            "Bytes sent by the worker's network interfaces (all but loopback).",
            net.transmitted,
        );
    }
    if let Ok(text) = std::fs::read_to_string("/proc/diskstats") {
        let disk = parse_diskstats(&text);
        series(
            "oakestra_node_disk_read_bytes_total",
            "counter",
            "Bytes read from the worker's disks.",
            disk.read,
        );
        series(
            "oakestra_node_disk_written_bytes_total",
            "counter",
            "Bytes written to the worker's disks.",
            disk.written,
        );
    }
    // The data dir may not exist yet on a first start; its parent's file system is the same.
    let probe = data_dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    // The casts widen on 32-bit targets, where the block counts are 32 bits.
    #[allow(clippy::unnecessary_cast)]
    if let Ok(fs) = nix::sys::statvfs::statvfs(probe) {
        let block = fs.fragment_size() as u64;
        series(
            "oakestra_node_filesystem_size_bytes",
            "gauge",
            "Size of the file system holding the worker's data directory.",
            (fs.blocks() as u64).saturating_mul(block),
        );
        series(
            "oakestra_node_filesystem_avail_bytes",
            "gauge",
            "Space available to the worker on the file system of its data directory.",
            (fs.blocks_available() as u64).saturating_mul(block),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 9000      10    0    0    0     0          0         0     9000      10    0    0    0     0       0          0
  eth0: 1500      20    0    0    0     0          0         0      700       7    0    0    0     0       0          0
oakrsbr:  25       1    0    0    0     0          0         0       75       1    0    0    0     0       0          0
";

    #[test]
    fn net_dev_sums_all_but_loopback() {
        assert_eq!(
            parse_net_dev(NET_DEV),
            NetworkBytes {
                received: 1525,
                transmitted: 775
            }
        );
        assert_eq!(parse_net_dev(""), NetworkBytes::default());
        assert_eq!(
            parse_net_dev("h\nh\neth0: 1 2 3\n"),
            NetworkBytes::default()
        );
    }

    #[test]
    fn diskstats_counts_whole_disks_in_bytes() {
        let text = "\
 253       0 vda 100 0 8 0 50 0 16 0 0 0 0
 253       1 vda1 90 0 6 0 40 0 12 0 0 0 0
   7       0 loop0 5 0 1000 0 0 0 0 0 0 0 0
 259       0 nvme0n1 1 0 2 0 3 0 4 0 0 0 0
 259       1 nvme0n1p1 1 0 2 0 3 0 4 0 0 0 0
";
        assert_eq!(
            parse_diskstats(text),
            DiskBytes {
                read: (8 + 2) * 512,
                written: (16 + 4) * 512
            }
        );
    }

    #[test]
    fn whole_disks_and_partitions() {
        for disk in ["sda", "vdb", "xvda", "hdc", "nvme0n1", "mmcblk0"] {
            assert!(is_whole_disk(disk), "{disk}");
        }
        for not in [
            "sda1",
            "vdb12",
            "nvme0n1p2",
            "mmcblk0p1",
            "loop0",
            "ram1",
            "zram0",
            "dm-0",
            "sr0",
            "md127",
        ] {
            assert!(!is_whole_disk(not), "{not}");
        }
    }

    #[test]
    fn rendering_on_this_host_names_the_series() {
        let text = render(Path::new("/nonexistent/oakestra-node"));
        for name in [
            "oakestra_node_network_receive_bytes_total",
            "oakestra_node_disk_read_bytes_total",
            "oakestra_node_filesystem_size_bytes",
        ] {
            assert!(text.contains(&format!("\n{name} ")), "{name} in {text}");
        }
    }
}
