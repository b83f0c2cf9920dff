//! A stub DNS server for the overlay tests: plays the host's resolver (systemd-resolved's
//! 127.0.0.53) that the overlay's responder forwards names that are not services to.
#![allow(dead_code)]

use std::sync::Arc;

/// A host resolver for the test: answers the names it knows with an A record (TTL 60) and
/// everything else with NXDOMAIN (SOA minimum 30 s); counts the queries it got.
pub struct Upstream {
    queries: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(at: &str, known: &[(&str, [u8; 4])]) -> Upstream {
        // Two tests of different binaries may want the same stub address: wait for it.
        let mut tries = 0;
        let socket = loop {
            match tokio::net::UdpSocket::bind(at).await {
                Ok(socket) => break socket,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 120 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => panic!(
                    "the test's upstream resolver on udp {at}: {e} (is a DNS server bound there?)"
                ),
            }
        };
        let known: std::collections::HashMap<String, [u8; 4]> =
            known.iter().map(|(n, ip)| (n.to_string(), *ip)).collect();
        let queries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&queries);
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let q = &buf[..n];
                let Ok(query) = oakestra_net::dns::parse_query(q) else {
                    continue;
                };
                // The question, as asked.
                let question_end = n - query_trailer(q);
                let mut r = q[..question_end].to_vec();
                r[2] = 0x81;
                let ip = known.get(&query.name).filter(|_| query.qtype == 1);
                r[3] = if ip.is_some() || known.contains_key(&query.name) {
                    0x80
                } else {
                    0x83
                };
                r[6..12].copy_from_slice(&[
                    0,
                    u8::from(ip.is_some()),
                    0,
                    u8::from(ip.is_none()),
                    0,
                    0,
                ]);
                match ip {
                    Some(ip) => {
                        r.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                        r.extend_from_slice(ip);
                    }
                    None => {
                        let mut rdata = vec![0, 0];
                        for v in [1u32, 2, 3, 4, 30] {
                            rdata.extend_from_slice(&v.to_be_bytes());
                        }
                        r.extend_from_slice(&[0xC0, 12, 0, 6, 0, 1, 0, 0, 0x0e, 0x10]);
                        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                        r.extend_from_slice(&rdata);
                    }
                }
                let _ = socket.send_to(&r, from).await;
            }
        });
        Upstream { queries, task }
    }

    pub fn queries(&self) -> usize {
        self.queries.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Bytes after the question of a query (an EDNS OPT record a resolver may add): none here
/// unless ARCOUNT says so; the test's own queries have none, busybox's none either.
fn query_trailer(q: &[u8]) -> usize {
    let mut at = 12;
    while q[at] != 0 {
        at += 1 + q[at] as usize;
    }
    q.len() - (at + 5)
}
