//! Forwarding names that are not services to the host's resolvers (pure: what to ask, what to
//! keep, what to answer from memory; the node does the I/O).
//!
//! The overlay's responder answers service names itself. Every other name (and a four-label
//! name that turns out not to be a service) is forwarded as it came to the host's own
//! resolvers, read from the host's `resolv.conf`, loopback stubs included: the responder runs
//! in the host's network namespace, so `127.0.0.53` (systemd-resolved) and `127.0.0.1`
//! (dnsmasq, unbound) are reachable from it, though not from an instance. The answers are kept
//! in a [`ForwardCache`], bounded in entries and by each answer's TTL.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::{HEADER, Query, u16_at};

/// At most this many upstream resolvers are asked (as glibc's `MAXNS`).
pub const MAX_UPSTREAMS: usize = 3;
/// A cached answer is kept at most this long, whatever its TTL.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// A negative answer (NXDOMAIN, or no record of the type) is kept at most this long.
pub const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(300);
/// Answers kept by default.
pub const DEFAULT_CACHE_ENTRIES: usize = 4096;

const TYPE_SOA: u16 = 6;
const TYPE_OPT: u16 = 41;

/// The resolvers to forward to: the `nameserver` lines of the host's `resolv.conf`, in order,
/// at most [`MAX_UPSTREAMS`], without `bridge` (the responder itself).
///
/// ```
/// use oakestra_net::dns::forward::upstreams;
/// let host = "# systemd-resolved stub\nnameserver 127.0.0.53\noptions edns0\n";
/// assert_eq!(upstreams(host, "10.18.0.1".parse().unwrap()), ["127.0.0.53".parse::<std::net::IpAddr>().unwrap()]);
/// ```
pub fn upstreams(host_resolv_conf: &str, bridge: Ipv4Addr) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in host_resolv_conf.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        // `nameserver fe80::1%eth0` (a zone) is skipped: the address alone is not enough.
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        if ip != IpAddr::V4(bridge) && !ip.is_unspecified() && !out.contains(&ip) {
            out.push(ip);
        }
        if out.len() == MAX_UPSTREAMS {
            break;
        }
    }
    out
}

/// Whether `reply` answers `query`: a response with its id and its question (name compared
/// without case, type and class).
pub fn answers(query: &Query, reply: &[u8]) -> bool {
    if reply.len() < HEADER {
        return false;
    }
    let Ok(id) = u16_at(reply, 0) else {
        return false;
    };
    if id != query.id || reply[2] & 0x80 == 0 || u16_at(reply, 4) != Ok(1) {
        return false;
    }
    match read_name(reply, HEADER) {
        Some((name, at)) => {
            name == query.name
                && u16_at(reply, at) == Ok(query.qtype)
                && u16_at(reply, at + 2) == Ok(query.qclass)
        }
        None => false,
    }
}

/// How long `reply` may be kept: the smallest TTL of its answer records (an OPT record
/// excepted), or for a negative answer (NXDOMAIN, or NOERROR without answers) the SOA's
/// TTL capped by its MINIMUM (RFC 2308); capped by [`MAX_TTL`] / [`MAX_NEGATIVE_TTL`].
/// `None`: not to be kept (an error other than NXDOMAIN, a truncated answer, a negative
/// answer without SOA, a TTL of 0, or a message that cannot be read).
pub fn cache_ttl(reply: &[u8]) -> Option<Duration> {
    if reply.len() < HEADER || reply[2] & 0x80 == 0 {
        return None;
    }
    // TC: the full answer needs TCP; do not keep the part.
    if reply[2] & 0x02 != 0 {
        return None;
    }
    let rcode = reply[3] & 0x0F;
    if rcode != 0 && rcode != 3 {
        return None;
    }
    let qd = u16_at(reply, 4).ok()?;
    let an = u16_at(reply, 6).ok()?;
    let ns = u16_at(reply, 8).ok()?;
    let mut at = HEADER;
    for _ in 0..qd {
        at = skip_name(reply, at)? + 4;
    }
    let mut min: Option<u32> = None;
    for _ in 0..an {
        let (rtype, ttl, _, next) = record(reply, at)?;
        if rtype != TYPE_OPT {
            min = Some(min.map_or(ttl, |m| m.min(ttl)));
        }
        at = next;
    }
    let (ttl, cap) = match (rcode, min) {
        (0, Some(ttl)) => (ttl, MAX_TTL),
        _ => {
            let mut soa = None;
            for _ in 0..ns {
                let (rtype, ttl, rdata, next) = record(reply, at)?;
                if rtype == TYPE_SOA {
                    // MNAME, RNAME, then SERIAL REFRESH RETRY EXPIRE MINIMUM.
                    let after = skip_name(reply, skip_name(reply, rdata)?)?;
                    let minimum = u32_at(reply, after + 16)?;
                    soa = Some(ttl.min(minimum));
                }
                at = next;
            }
            (soa?, MAX_NEGATIVE_TTL)
        }
    };
    (ttl > 0).then(|| Duration::from_secs(u64::from(ttl)).min(cap))
}

/// Answers of the host's resolvers, by question, until their TTL runs out; at most `capacity`
/// of them (when full, expired answers go first, then those closest to expiry).
///
/// Time is a [`Duration`] since any fixed instant of the caller's choosing.
#[derive(Debug)]
pub struct ForwardCache {
    capacity: usize,
    entries: HashMap<(String, u16, u16), Entry>,
}

#[derive(Debug)]
struct Entry {
    reply: Vec<u8>,
    expires: Duration,
}

impl Default for ForwardCache {
    fn default() -> Self {
        ForwardCache::new(DEFAULT_CACHE_ENTRIES)
    }
}

impl ForwardCache {
    /// An empty cache of at most `capacity` answers (0 keeps nothing).
    pub fn new(capacity: usize) -> Self {
        ForwardCache {
            capacity,
            entries: HashMap::new(),
        }
    }

    /// Answers kept (expired ones included until they are replaced or evicted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The kept answer to `query` if it has not expired at `now`: the stored reply with the
    /// query's id, and its TTLs as they were (a resolver that asks again within them gets the
    /// same answer, at most [`MAX_TTL`] old).
    pub fn get(&self, query: &Query, now: Duration) -> Option<Vec<u8>> {
        let entry = self.entries.get(&key(query))?;
        if entry.expires <= now {
            return None;
        }
        let mut reply = entry.reply.clone();
        reply[..2].copy_from_slice(&query.id.to_be_bytes());
        Some(reply)
    }

    /// Keeps `reply` to `query` for [`cache_ttl`], if it may be kept.
    pub fn put(&mut self, query: &Query, reply: &[u8], now: Duration) {
        if self.capacity == 0 {
            return;
        }
        let Some(ttl) = cache_ttl(reply) else { return };
        let key = key(query);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, e| e.expires > now);
            if self.entries.len() >= self.capacity
                && let Some(first) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone())
            {
                self.entries.remove(&first);
            }
        }
        self.entries.insert(
            key,
            Entry {
                reply: reply.to_vec(),
                expires: now + ttl,
            },
        );
    }
}

fn key(query: &Query) -> (String, u16, u16) {
    (query.name.clone(), query.qtype, query.qclass)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The offset after the name at `at` (a compression pointer ends it).
fn skip_name(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *bytes.get(at)? as usize;
        match len & 0xC0 {
            0xC0 => return Some(at + 2).filter(|&end| end <= bytes.len()),
            0 if len == 0 => return Some(at + 1),
            0 => at += 1 + len,
            _ => return None,
        }
    }
}

/// The lowercase dotted name at `at` (following compression pointers, at most 16 of them)
/// and the offset after it.
fn read_name(bytes: &[u8], start: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut at = start;
    let mut end = None;
    for _ in 0..128 {
        let len = *bytes.get(at)? as usize;
        match len & 0xC0 {
            0xC0 => {
                let target = (usize::from(bytes[at] & 0x3F) << 8) | *bytes.get(at + 1)? as usize;
                end.get_or_insert(at + 2);
                if target >= at {
                    return None; // pointers only point back
                }
                at = target;
            }
            0 if len == 0 => {
                let end = end.unwrap_or(at + 1);
                return Some((labels.join(".").to_ascii_lowercase(), end));
            }
            0 => {
                let raw = bytes.get(at + 1..at + 1 + len)?;
                labels.push(String::from_utf8_lossy(raw).into_owned());
                at += 1 + len;
            }
            _ => return None,
        }
    }
    None
}

/// A resource record at `at`: (type, TTL, offset of its RDATA, offset after it).
fn record(bytes: &[u8], at: usize) -> Option<(u16, u32, usize, usize)> {
    let at = skip_name(bytes, at)?;
    let rtype = u16_at(bytes, at).ok()?;
    let ttl = u32_at(bytes, at + 4)?;
    let rdlength = u16_at(bytes, at + 8).ok()? as usize;
    let rdata = at + 10;
    let next = rdata + rdlength;
    (next <= bytes.len()).then_some((rtype, ttl, rdata, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::parse_query;

    /// A query for `name` of `qtype` with id `id`.
    fn query(id: u16, name: &str, qtype: u16) -> Query {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0]);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        parse_query(&q).unwrap()
    }

    /// An upstream's reply to `q`: rcode, answers as (ttl, ipv4), and an optional SOA
    /// (ttl, minimum) in the authority section.
    fn reply(q: &Query, rcode: u8, answers: &[(u32, [u8; 4])], soa: Option<(u32, u32)>) -> Vec<u8> {
        let mut r = q.id.to_be_bytes().to_vec();
        r.extend_from_slice(&[0x81, 0x80 | rcode]);
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
        r.extend_from_slice(&u16::from(soa.is_some()).to_be_bytes());
        r.extend_from_slice(&[0, 0]);
        for label in &q.labels {
            r.push(label.len() as u8);
            r.extend_from_slice(label.as_bytes());
        }
        r.push(0);
        r.extend_from_slice(&q.qtype.to_be_bytes());
        r.extend_from_slice(&q.qclass.to_be_bytes());
        for (ttl, ip) in answers {
            r.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
            r.extend_from_slice(&ttl.to_be_bytes());
            r.extend_from_slice(&[0, 4]);
            r.extend_from_slice(ip);
        }
        if let Some((ttl, minimum)) = soa {
            r.extend_from_slice(&[0xC0, 12, 0, 6, 0, 1]);
            r.extend_from_slice(&ttl.to_be_bytes());
            let mut rdata = vec![2, b'n', b's', 0xC0, 12, 4, b'h', b'o', b's', b't', 0xC0, 12];
            for v in [1u32, 2, 3, 4, minimum] {
                rdata.extend_from_slice(&v.to_be_bytes());
            }
            r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            r.extend_from_slice(&rdata);
        }
        r
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn upstreams_keep_loopback_stubs_order_and_at_most_three() {
        let bridge = "10.18.0.1".parse().unwrap();
        let host = "nameserver 127.0.0.53\nnameserver 10.18.0.1\nnameserver ::1\n\
                    nameserver bogus\nnameserver 192.168.1.1\nnameserver 127.0.0.53\nnameserver 9.9.9.9\n";
        let ips: Vec<String> = upstreams(host, bridge)
            .iter()
            .map(|i| i.to_string())
            .collect();
        assert_eq!(ips, ["127.0.0.53", "::1", "192.168.1.1"]);
        assert!(upstreams("search lan\n", bridge).is_empty());
    }

    #[test]
    fn ttl_is_the_smallest_answer_ttl_or_the_negative_soa_minimum_capped() {
        let q = query(7, "www.example.com", 1);
        assert_eq!(
            cache_ttl(&reply(
                &q,
                0,
                &[(300, [1, 2, 3, 4]), (60, [5, 6, 7, 8])],
                None
            )),
            Some(S(60))
        );
        assert_eq!(
            cache_ttl(&reply(&q, 0, &[(86_400, [1, 2, 3, 4])], None)),
            Some(MAX_TTL)
        );
        // NXDOMAIN and NODATA: the SOA's TTL capped by its MINIMUM, then by the negative cap.
        assert_eq!(cache_ttl(&reply(&q, 3, &[], Some((900, 30)))), Some(S(30)));
        assert_eq!(cache_ttl(&reply(&q, 0, &[], Some((20, 600)))), Some(S(20)));
        assert_eq!(
            cache_ttl(&reply(&q, 3, &[], Some((7200, 7200)))),
            Some(MAX_NEGATIVE_TTL)
        );
        // Not kept: no SOA, SERVFAIL, REFUSED, TTL 0, truncated, a query, garbage.
        assert_eq!(cache_ttl(&reply(&q, 3, &[], None)), None);
        assert_eq!(cache_ttl(&reply(&q, 2, &[], None)), None);
        assert_eq!(cache_ttl(&reply(&q, 5, &[], None)), None);
        assert_eq!(cache_ttl(&reply(&q, 0, &[(0, [1, 2, 3, 4])], None)), None);
        let mut tc = reply(&q, 0, &[(60, [1, 2, 3, 4])], None);
        tc[2] |= 0x02;
        assert_eq!(cache_ttl(&tc), None);
        let mut short = reply(&q, 0, &[(60, [1, 2, 3, 4])], None);
        short.truncate(short.len() - 2);
        assert_eq!(cache_ttl(&short), None);
        assert_eq!(cache_ttl(&[0; 5]), None);
    }

    #[test]
    fn a_reply_answers_only_its_query() {
        let q = query(7, "www.Example.com", 1);
        let r = reply(&q, 0, &[(60, [1, 2, 3, 4])], None);
        assert!(answers(&q, &r));
        assert!(!answers(&query(8, "www.example.com", 1), &r), "another id");
        assert!(
            !answers(&query(7, "www.example.org", 1), &r),
            "another name"
        );
        assert!(
            !answers(&query(7, "www.example.com", 28), &r),
            "another type"
        );
        assert!(!answers(&q, &r[..14]));
    }

    #[test]
    fn the_cache_answers_with_the_new_id_until_the_ttl_runs_out() {
        let mut cache = ForwardCache::default();
        let q = query(7, "www.example.com", 1);
        let r = reply(&q, 0, &[(60, [1, 2, 3, 4])], None);
        cache.put(&q, &r, S(100));
        let again = query(99, "WWW.example.com", 1);
        let hit = cache.get(&again, S(159)).expect("within the TTL");
        assert_eq!(&hit[..2], &99u16.to_be_bytes());
        assert_eq!(&hit[2..], &r[2..]);
        assert_eq!(cache.get(&again, S(160)), None, "expired");
        assert_eq!(
            cache.get(&query(99, "www.example.com", 28), S(120)),
            None,
            "AAAA is another question"
        );
        // SERVFAIL is not kept.
        let other = query(1, "down.example", 1);
        cache.put(&other, &reply(&other, 2, &[], None), S(100));
        assert_eq!(cache.get(&other, S(100)), None);
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_expired_then_nearest_expiry() {
        let mut cache = ForwardCache::new(2);
        let (a, b, c) = (
            query(1, "a.example", 1),
            query(2, "b.example", 1),
            query(3, "c.example", 1),
        );
        cache.put(&a, &reply(&a, 0, &[(10, [1, 1, 1, 1])], None), S(0));
        cache.put(&b, &reply(&b, 0, &[(100, [2, 2, 2, 2])], None), S(0));
        cache.put(&c, &reply(&c, 0, &[(50, [3, 3, 3, 3])], None), S(1));
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&a, S(2)).is_none(), "a expires first: evicted");
        assert!(cache.get(&b, S(2)).is_some() && cache.get(&c, S(2)).is_some());
        // Full of live entries: the one nearest its expiry (c, at 51 s) goes.
        let d = query(4, "d.example", 1);
        cache.put(&d, &reply(&d, 0, &[(500, [4, 4, 4, 4])], None), S(2));
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&c, S(3)).is_none() && cache.get(&b, S(3)).is_some());
        assert!(ForwardCache::new(0).get(&d, S(0)).is_none());
        let mut none = ForwardCache::new(0);
        none.put(&d, &reply(&d, 0, &[(500, [4, 4, 4, 4])], None), S(2));
        assert!(none.is_empty());
    }

    #[test]
    fn compressed_names_loops_and_garbage_do_not_panic() {
        let q = query(7, "x.example", 1);
        let mut r = reply(&q, 0, &[(60, [1, 2, 3, 4])], None);
        // Make the answer's name point at itself.
        let at = r.len() - 16;
        r[at] = 0xC0;
        r[at + 1] = at as u8;
        let _ = cache_ttl(&r);
        for len in 0..r.len() {
            let _ = cache_ttl(&r[..len]);
            let _ = answers(&q, &r[..len]);
        }
    }
}
