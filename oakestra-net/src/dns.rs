//! The overlay's DNS messages (pure, no I/O): parse a query, build the answer, and map a
//! queried name to the job names it may stand for.
//!
//! Only what a resolver on the bridge needs (RFC 1035 §4): one question per query, names
//! without compression (a query has nothing to point back to), A and AAAA answers with a short
//! TTL, NXDOMAIN, NOERROR without answers (other types of a known name, or AAAA of a service
//! without an IPv6 round-robin address), NOTIMP (other
//! opcodes and classes), REFUSED (names that cannot be service names, so that a stub resolver
//! with a second `nameserver` asks that one) and FORMERR. The responder forwards names that
//! are not services to the host's resolvers instead of refusing them: [`forward`]. Trailing sections (an EDNS OPT record) are ignored.
//!
//! # Names
//!
//! A service is reached as `<service>.<servicens>.<app>.<appns>` (the order Oakestra's docs
//! use), and also by its full job name `<app>.<appns>.<service>.<servicens>`. Both are four
//! labels, so a four-label name is ambiguous; [`job_names_for`] gives both readings,
//! service-first one first, and the responder answers with the first that names a known
//! service. Names are case-insensitive and a trailing dot is allowed.
//!
//! ```
//! use oakestra_net::dns::{job_names_for, parse_query, response, Answer, TYPE_A};
//! use std::net::Ipv4Addr;
//!
//! // `nginx.test.clientsrvr.test`, type A, class IN, id 0x1234, recursion desired
//! let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
//! for label in ["nginx", "test", "clientsrvr", "test"] {
//!     q.push(label.len() as u8);
//!     q.extend_from_slice(label.as_bytes());
//! }
//! q.extend_from_slice(&[0, 0, 1, 0, 1]);
//! let query = parse_query(&q).unwrap();
//! assert_eq!(query.qtype, TYPE_A);
//! assert_eq!(
//!     job_names_for(&query.name),
//!     ["clientsrvr.test.nginx.test", "nginx.test.clientsrvr.test"]
//! );
//! let reply = response(&query, Answer::A(Ipv4Addr::new(10, 30, 55, 55)));
//! assert_eq!(&reply[reply.len() - 4..], &[10, 30, 55, 55]);
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

pub mod forward;

/// Type A (IPv4 address).
pub const TYPE_A: u16 = 1;
/// Type AAAA (IPv6 address).
pub const TYPE_AAAA: u16 = 28;
/// Class IN.
pub const CLASS_IN: u16 = 1;
/// TTL of the A answers, in seconds: short, since instances (and so a service) come and go.
pub const TTL_SECS: u32 = 5;

const HEADER: usize = 12;
const MAX_NAME: usize = 255;

/// Response codes this module produces.
const NOERROR: u8 = 0;
const FORMERR: u8 = 1;
const SERVFAIL: u8 = 2;
const NXDOMAIN: u8 = 3;
const NOTIMP: u8 = 4;
const REFUSED: u8 = 5;

/// Why a message is not a query this responder can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// Ends before its header or question does.
    #[error("DNS message truncated at byte {0} (header and one question expected)")]
    Truncated(usize),
    /// A response, not a query.
    #[error("DNS message is a response (QR set), not a query; dropped")]
    NotAQuery,
    /// Zero or several questions.
    #[error("DNS query has {0} questions; exactly one is answered")]
    QuestionCount(u16),
    /// A compression pointer (or a reserved label type) in the question.
    #[error(
        "DNS question name uses compression or a reserved label type at byte {0}; send it uncompressed"
    )]
    Compressed(usize),
    /// The name is longer than 255 bytes.
    #[error("DNS question name longer than 255 bytes")]
    NameTooLong,
    /// A label that is not UTF-8.
    #[error("DNS question label at byte {0} is not UTF-8")]
    Label(usize),
}

/// A parsed query: the header fields a response echoes and its one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Message id, echoed.
    pub id: u16,
    /// Opcode (0 = standard query; others are answered NOTIMP).
    pub opcode: u8,
    /// RD flag, echoed.
    pub recursion_desired: bool,
    /// The question's name labels, as sent (case kept, for the echo).
    pub labels: Vec<String>,
    /// The name in lowercase, labels joined by dots, no trailing dot.
    pub name: String,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
}

/// What to answer a query with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// One A record.
    A(Ipv4Addr),
    /// One AAAA record.
    Aaaa(Ipv6Addr),
    /// The name exists, but has no record of the asked type (NOERROR, no answers).
    NoData,
    /// No such name.
    NxDomain,
    /// Could not find out in time.
    ServFail,
    /// Opcode or class not supported.
    NotImp,
    /// Not a name this responder is the authority for (glibc and musl then ask the next
    /// `nameserver`).
    Refused,
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16, DnsError> {
    match bytes.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(DnsError::Truncated(bytes.len())),
    }
}

/// Parses a query message. Never panics, whatever the bytes.
pub fn parse_query(bytes: &[u8]) -> Result<Query, DnsError> {
    if bytes.len() < HEADER {
        return Err(DnsError::Truncated(bytes.len()));
    }
    let id = u16_at(bytes, 0)?;
    let flags = u16_at(bytes, 2)?;
    if flags & 0x8000 != 0 {
        return Err(DnsError::NotAQuery);
    }
    let qdcount = u16_at(bytes, 4)?;
    if qdcount != 1 {
        return Err(DnsError::QuestionCount(qdcount));
    }
    let mut at = HEADER;
    let mut labels = Vec::new();
    let mut name_len = 0usize;
    loop {
        let len = *bytes.get(at).ok_or(DnsError::Truncated(bytes.len()))? as usize;
        if len & 0xC0 != 0 {
            return Err(DnsError::Compressed(at));
        }
        at += 1;
        if len == 0 {
            break;
        }
        name_len += len + 1;
        if name_len > MAX_NAME {
            return Err(DnsError::NameTooLong);
        }
        let raw = bytes
            .get(at..at + len)
            .ok_or(DnsError::Truncated(bytes.len()))?;
        let label = std::str::from_utf8(raw).map_err(|_| DnsError::Label(at))?;
        labels.push(label.to_owned());
        at += len;
    }
    let qtype = u16_at(bytes, at)?;
    let qclass = u16_at(bytes, at + 2)?;
    let name = labels.join(".").to_ascii_lowercase();
    Ok(Query {
        id,
        opcode: ((flags >> 11) & 0x0F) as u8,
        recursion_desired: flags & 0x0100 != 0,
        labels,
        name,
        qtype,
        qclass,
    })
}

fn header(id: u16, opcode: u8, rd: bool, rcode: u8, qd: u16, an: u16) -> Vec<u8> {
    // QR, AA (we are the authority for service names), the query's opcode and RD; no RA.
    let flags: u16 = 0x8000 | 0x0400 | (u16::from(opcode & 0x0F) << 11) | u16::from(rd) << 8;
    let flags = flags | u16::from(rcode & 0x0F);
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    for count in [qd, an, 0, 0] {
        out.extend_from_slice(&count.to_be_bytes());
    }
    out
}

/// The response to `query`: its question echoed, and `answer`.
pub fn response(query: &Query, answer: Answer) -> Vec<u8> {
    let rcode = match answer {
        Answer::A(_) | Answer::Aaaa(_) | Answer::NoData => NOERROR,
        Answer::NxDomain => NXDOMAIN,
        Answer::ServFail => SERVFAIL,
        Answer::NotImp => NOTIMP,
        Answer::Refused => REFUSED,
    };
    let an = u16::from(matches!(answer, Answer::A(_) | Answer::Aaaa(_)));
    let mut out = header(
        query.id,
        query.opcode,
        query.recursion_desired,
        rcode,
        1,
        an,
    );
    for label in &query.labels {
        // Labels came from a parsed message: at most 63 bytes each.
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&query.qtype.to_be_bytes());
    out.extend_from_slice(&query.qclass.to_be_bytes());
    let record: Option<(u16, Vec<u8>)> = match answer {
        Answer::A(ip) => Some((TYPE_A, ip.octets().to_vec())),
        Answer::Aaaa(ip) => Some((TYPE_AAAA, ip.octets().to_vec())),
        _ => None,
    };
    if let Some((rtype, data)) = record {
        out.extend_from_slice(&[0xC0, HEADER as u8]); // the question's name
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL_SECS.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    out
}

/// The FORMERR answer to a message that could not be parsed, when it has a header to answer
/// (and is not itself a response); `None` means drop it.
pub fn format_error(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < HEADER || bytes[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    let opcode = (bytes[2] >> 3) & 0x0F;
    Some(header(id, opcode, bytes[2] & 1 != 0, FORMERR, 0, 0))
}

/// The answer for a query before any lookup: NOTIMP for other opcodes and classes, `None`
/// when the name has to be looked up.
pub fn unsupported(query: &Query) -> Option<Answer> {
    (query.opcode != 0 || query.qclass != CLASS_IN).then_some(Answer::NotImp)
}

fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The job names (`app.appns.service.servicens`) a queried name may stand for, in the order
/// to try them: for `a.b.c.d` the service-first reading `c.d.a.b` (service `a` in namespace
/// `b` of app `c` in namespace `d`), then the name itself as a job name. Empty (so NXDOMAIN)
/// for anything but four non-empty labels of letters, digits, `-` and `_`. `name` is a
/// lowercase dotted name, as [`Query::name`]; a trailing dot is ignored.
pub fn job_names_for(name: &str) -> Vec<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let labels: Vec<&str> = name.split('.').collect();
    let [service, servicens, app, appns] = labels[..] else {
        return Vec::new();
    };
    if !labels.iter().all(|l| valid_label(l)) {
        return Vec::new();
    }
    let service_first = format!("{app}.{appns}.{service}.{servicens}");
    let mut names = vec![service_first];
    if names[0] != name {
        names.push(name.to_owned());
    }
    names
}

/// Most `nameserver` lines a glibc or musl stub resolver reads.
const MAX_NAMESERVERS: usize = 3;

/// The `resolv.conf` of an instance whose namespace hangs off the bridge at `bridge`, where the
/// responder listens on port 53: the responder first (it answers service names and refuses
/// every other name, so the resolver goes on to the next server), then the host's own
/// nameservers from `host_resolv_conf` (the host's file) that an instance can reach — not
/// loopback ones such as systemd-resolved's 127.0.0.53, which lives in the host's namespace —
/// and the host's `search` / `domain` line. `instance` names the instance in the comment.
///
/// ```
/// use oakestra_net::dns::resolv_conf;
/// let host = "nameserver 127.0.0.53\nnameserver 192.168.1.1\nsearch lan\n";
/// let file = resolv_conf("10.18.0.1".parse().unwrap(), host, "app.ns.web.ns.0");
/// let lines: Vec<&str> = file.lines().filter(|l| !l.starts_with('#')).collect();
/// assert_eq!(lines, ["nameserver 10.18.0.1", "nameserver 192.168.1.1", "search lan", "options timeout:2 attempts:2"]);
/// ```
pub fn resolv_conf(bridge: Ipv4Addr, host_resolv_conf: &str, instance: &str) -> String {
    let mut out = format!(
        "# Written by oakestra-node for instance {instance}. The first nameserver is the\n\
         # overlay's DNS responder: it answers <service>.<servicens>.<app>.<appns> with the\n\
         # service's rr_ip and forwards other names to the host's resolvers; those below are\n\
         # the host's reachable from here, asked if the responder does not answer.\n\
         nameserver {bridge}\n"
    );
    let mut servers = 1;
    let mut search = None;
    for line in host_resolv_conf.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                let Some(Ok(ip)) = words.next().map(str::parse::<std::net::IpAddr>) else {
                    continue;
                };
                if servers < MAX_NAMESERVERS
                    && !ip.is_loopback()
                    && ip != std::net::IpAddr::V4(bridge)
                {
                    out.push_str(&format!("nameserver {ip}\n"));
                    servers += 1;
                }
            }
            // The last `search` or `domain` line wins, as in the resolvers.
            Some("search") | Some("domain") => search = Some(line.trim().to_owned()),
            _ => {}
        }
    }
    if let Some(search) = search {
        out.push_str(&search);
        out.push('\n');
    }
    out.push_str("options timeout:2 attempts:2\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn query_bytes(id: u16, flags: u16, name: &str, qtype: u16, qclass: u16) -> Vec<u8> {
        let mut q = Vec::new();
        q.extend_from_slice(&id.to_be_bytes());
        q.extend_from_slice(&flags.to_be_bytes());
        q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&qclass.to_be_bytes());
        q
    }

    #[test]
    fn parses_a_query_and_answers_an_a_record() {
        let bytes = query_bytes(0xBEEF, 0x0100, "Web.NS.app.ns", TYPE_A, CLASS_IN);
        let q = parse_query(&bytes).unwrap();
        assert_eq!(q.id, 0xBEEF);
        assert!(q.recursion_desired);
        assert_eq!(q.name, "web.ns.app.ns");
        assert_eq!(q.labels, ["Web", "NS", "app", "ns"]);
        assert_eq!(unsupported(&q), None);

        let r = response(&q, Answer::A(Ipv4Addr::new(10, 30, 0, 7)));
        assert_eq!(&r[0..2], &[0xBE, 0xEF]);
        assert_eq!(r[2] & 0x80, 0x80, "QR");
        assert_eq!(r[2] & 0x01, 0x01, "RD echoed");
        assert_eq!(r[3] & 0x0F, NOERROR);
        assert_eq!(&r[4..12], &[0, 1, 0, 1, 0, 0, 0, 0]);
        // The question echoed as sent.
        assert_eq!(&r[12..bytes.len()], &bytes[12..]);
        let answer = &r[bytes.len()..];
        assert_eq!(
            answer,
            &[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 30, 0, 7]
        );
    }

    #[test]
    fn answers_an_aaaa_record() {
        let bytes = query_bytes(0x0102, 0x0100, "web.ns.app.ns", TYPE_AAAA, CLASS_IN);
        let q = parse_query(&bytes).unwrap();
        let ip: Ipv6Addr = "fdff:2000::55".parse().unwrap();
        let r = response(&q, Answer::Aaaa(ip));
        assert_eq!(r[3] & 0x0F, NOERROR);
        assert_eq!(&r[4..12], &[0, 1, 0, 1, 0, 0, 0, 0]);
        let answer = &r[bytes.len()..];
        assert_eq!(&answer[..12], &[0xC0, 12, 0, 28, 0, 1, 0, 0, 0, 5, 0, 16]);
        assert_eq!(&answer[12..], &ip.octets());
    }

    #[test]
    fn nxdomain_nodata_servfail_and_notimp() {
        let q = parse_query(&query_bytes(1, 0, "x.y.z.w", TYPE_AAAA, CLASS_IN)).unwrap();
        for (answer, rcode) in [
            (Answer::NxDomain, NXDOMAIN),
            (Answer::NoData, NOERROR),
            (Answer::ServFail, SERVFAIL),
            (Answer::NotImp, NOTIMP),
            (Answer::Refused, REFUSED),
        ] {
            let r = response(&q, answer);
            assert_eq!(r[3] & 0x0F, rcode, "{answer:?}");
            assert_eq!(&r[6..8], &[0, 0], "no answers for {answer:?}");
        }
        let chaos = parse_query(&query_bytes(1, 0, "version.bind", 16, 3)).unwrap();
        assert_eq!(unsupported(&chaos), Some(Answer::NotImp));
        let status = parse_query(&query_bytes(1, 2 << 11, "a.b.c.d", TYPE_A, CLASS_IN)).unwrap();
        assert_eq!(status.opcode, 2);
        assert_eq!(unsupported(&status), Some(Answer::NotImp));
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert_eq!(parse_query(&[0; 5]), Err(DnsError::Truncated(5)));
        let good = query_bytes(7, 0, "a.b.c.d", TYPE_A, CLASS_IN);
        assert!(matches!(
            parse_query(&good[..good.len() - 1]),
            Err(DnsError::Truncated(_))
        ));
        let mut response_flag = good.clone();
        response_flag[2] |= 0x80;
        assert_eq!(parse_query(&response_flag), Err(DnsError::NotAQuery));
        assert_eq!(format_error(&response_flag), None);
        let mut two = good.clone();
        two[5] = 2;
        assert_eq!(parse_query(&two), Err(DnsError::QuestionCount(2)));
        let formerr = format_error(&two).unwrap();
        assert_eq!(&formerr[0..2], &[0, 7]);
        assert_eq!(formerr[3] & 0x0F, FORMERR);
        let mut pointer = good[..HEADER].to_vec();
        pointer.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert_eq!(parse_query(&pointer), Err(DnsError::Compressed(12)));
        let mut long = good[..HEADER].to_vec();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(parse_query(&long), Err(DnsError::NameTooLong));
        // Trailing records (EDNS OPT) are ignored.
        let mut edns = good.clone();
        edns[11] = 1;
        edns.extend_from_slice(&[0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_query(&edns).unwrap().name, "a.b.c.d");
    }

    #[test]
    fn names_map_to_job_names() {
        assert_eq!(
            job_names_for("nginx.test.clientsrvr.test"),
            ["clientsrvr.test.nginx.test", "nginx.test.clientsrvr.test"]
        );
        assert_eq!(
            job_names_for("web.ns.app.ns."),
            ["app.ns.web.ns", "web.ns.app.ns"]
        );
        // Both readings the same: asked once.
        assert_eq!(job_names_for("a.b.a.b"), ["a.b.a.b"]);
        for bad in ["", "a.b.c", "a.b.c.d.e", "a..c.d", "a.b.c.d e", "localhost"] {
            assert!(job_names_for(bad).is_empty(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(q) = parse_query(&bytes) {
                let r = response(&q, Answer::A(Ipv4Addr::LOCALHOST));
                prop_assert_eq!(parse_query(&{ let mut r = r.clone(); r[2] &= 0x7F; r }).map(|p| p.name), Ok(q.name.clone()));
                let _ = job_names_for(&q.name);
            }
            let _ = format_error(&bytes);
        }

        #[test]
        fn built_queries_round_trip(labels in proptest::collection::vec("[a-z0-9-]{1,20}", 1..6), qtype in any::<u16>()) {
            let name = labels.join(".");
            let q = parse_query(&query_bytes(3, 0x0100, &name, qtype, CLASS_IN)).unwrap();
            prop_assert_eq!(&q.name, &name);
            prop_assert_eq!(q.qtype, qtype);
        }
    }

    #[test]
    fn resolv_conf_puts_the_responder_first_and_keeps_reachable_host_servers() {
        let host = "# comment\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 9.9.9.9\n\
                    nameserver 2001:db8::1\nnameserver 1.1.1.1\nnameserver 8.8.8.8\n\
                    domain old\nsearch corp.example lan\noptions edns0\n";
        let file = resolv_conf(Ipv4Addr::new(10, 18, 0, 65), host, "a.b.c.d.3");
        let lines: Vec<&str> = file.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "nameserver 10.18.0.65",
                "nameserver 9.9.9.9",
                "nameserver 2001:db8::1",
                "search corp.example lan",
                "options timeout:2 attempts:2",
            ]
        );
        assert!(file.contains("instance a.b.c.d.3"));
    }

    #[test]
    fn resolv_conf_without_host_servers_has_only_the_responder() {
        let file = resolv_conf(
            Ipv4Addr::new(10, 18, 0, 1),
            "garbage\nnameserver nope\n",
            "x",
        );
        let lines: Vec<&str> = file.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            ["nameserver 10.18.0.1", "options timeout:2 attempts:2"]
        );
    }
}
