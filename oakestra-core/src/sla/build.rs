//! One pass over a raw JSON value that checks every rule and builds the typed descriptor.
//!
//! Working on the raw [`Value`] (rather than deserialising with serde first) lets every
//! violation carry the JSON pointer of the offending field, and lets one pass report all of
//! them. Each object's map is consumed: known keys are taken out, the rest become `extra`.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value};

use super::address::{check_rr_ip, check_rr_ip_v6};
use super::ports::PortSpec;
use super::types::{
    Addresses, Application, ConConstraint, Connectivity, Constraint, ConstraintKind,
    InstanceAddressRange, Microservice, MicroserviceList, Sla, SlaVersion, Virtualization, Volume,
};
use super::{SlaErrors, Violation};
use crate::naming::{check_name, is_valid_name};

#[derive(Debug, Clone, Copy)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

fn push_escaped(out: &mut String, key: &str) {
    for c in key.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
}

fn render(path: &[Seg], field: Option<&str>) -> String {
    let mut s = String::with_capacity(48);
    for seg in path {
        s.push('/');
        match seg {
            Seg::Key(k) => push_escaped(&mut s, k),
            Seg::Index(i) => {
                let _ = write!(s, "{i}");
            }
        }
    }
    if let Some(f) = field {
        s.push('/');
        push_escaped(&mut s, f);
    }
    s
}

/// Short description of a JSON value for "found …" messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => {
            let mut shown: String = s.chars().take(40).collect();
            if shown.len() < s.len() {
                shown.push('…');
            }
            format!("the string {shown:?}")
        }
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// The entries of one JSON object, taken out one known key at a time; what is left is `extra`.
///
/// A linear scan over a small vector beats hashing plus `shift_remove` on the order-preserving
/// map, which re-indexes every later entry on each removal.
struct Fields(Vec<(String, Option<Value>)>);

impl Fields {
    fn new(map: Map<String, Value>) -> Self {
        Self(map.into_iter().map(|(k, v)| (k, Some(v))).collect())
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.0
            .iter_mut()
            .find(|(k, v)| v.is_some() && k == key)
            .and_then(|(_, v)| v.take())
    }

    fn into_extra(self) -> Map<String, Value> {
        self.0
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect()
    }
}

const NAME_EXPECTED: &str = "a string of 1-30 ASCII letters or digits (^[a-zA-Z0-9]{1,30}$)";

struct Checker {
    path: Vec<Seg>,
    violations: Vec<Violation>,
    rr_v4: Vec<(Ipv4Addr, String)>,
    rr_v6: Vec<(Ipv6Addr, String)>,
}

impl Checker {
    fn new() -> Self {
        Self {
            path: Vec::with_capacity(8),
            violations: Vec::new(),
            rr_v4: Vec::new(),
            rr_v6: Vec::new(),
        }
    }

    fn report(&mut self, field: Option<&str>, message: impl Into<String>) {
        let path = render(&self.path, field);
        self.violations.push(Violation {
            path,
            message: message.into(),
        });
    }

    fn at<T>(&mut self, seg: Seg, f: impl FnOnce(&mut Self) -> T) -> T {
        self.path.push(seg);
        let out = f(self);
        self.path.pop();
        out
    }

    fn finish<T>(self, built: Option<T>) -> Result<T, SlaErrors> {
        match built {
            Some(v) if self.violations.is_empty() => Ok(v),
            _ => {
                debug_assert!(!self.violations.is_empty(), "a field was lost silently");
                let mut violations = self.violations;
                if violations.is_empty() {
                    violations.push(Violation {
                        path: String::new(),
                        message: "the descriptor could not be built".to_owned(),
                    });
                }
                Err(SlaErrors(violations))
            }
        }
    }

    // ---- scalar fields --------------------------------------------------------------------

    fn require(&mut self, key: &'static str, v: Option<Value>, expected: &str) -> Option<Value> {
        if v.is_none() {
            self.report(Some(key), format!("is required: {expected}"));
        }
        v
    }

    fn string(&mut self, key: &'static str, v: Option<Value>, expected: &str) -> Option<String> {
        match v? {
            Value::String(s) => Some(s),
            other => {
                self.report(
                    Some(key),
                    format!("must be {expected}, found {}", describe(&other)),
                );
                None
            }
        }
    }

    fn req_string(
        &mut self,
        key: &'static str,
        v: Option<Value>,
        expected: &str,
    ) -> Option<String> {
        let v = self.require(key, v, expected);
        self.string(key, v, expected)
    }

    fn name(&mut self, key: &'static str, v: Option<Value>) -> Option<String> {
        let s = self.req_string(key, v, NAME_EXPECTED)?;
        match check_name(&s) {
            Ok(()) => Some(s),
            Err(e) => {
                self.report(Some(key), e.to_string());
                None
            }
        }
    }

    fn boolean(&mut self, key: &'static str, v: Option<Value>) -> Option<bool> {
        match v? {
            Value::Bool(b) => Some(b),
            other => {
                self.report(
                    Some(key),
                    format!(
                        "must be a boolean (true or false), found {}",
                        describe(&other)
                    ),
                );
                None
            }
        }
    }

    /// A JSON-schema `integer` that must be ≥ 0. Like the schema, `5.0` counts as an integer.
    fn uint(&mut self, key: &'static str, v: Option<Value>, what: &str) -> Option<u64> {
        let v = v?;
        if let Value::Number(n) = &v {
            if let Some(u) = n.as_u64() {
                return Some(u);
            }
            if n.is_i64() {
                self.report(
                    Some(key),
                    format!("must not be negative: {what} is a whole number ≥ 0, found {n}"),
                );
                return None;
            }
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&f) {
                return Some(f as u64);
            }
            let reason = if f < 0.0 {
                "must not be negative"
            } else {
                "must be a whole number"
            };
            self.report(
                Some(key),
                format!("{reason}: {what} is a whole number ≥ 0, found {n}"),
            );
            return None;
        }
        self.report(
            Some(key),
            format!(
                "must be a whole number ≥ 0 ({what}), found {}",
                describe(&v)
            ),
        );
        None
    }

    /// A JSON-schema `number` that must be ≥ 0.
    fn number(&mut self, key: &'static str, v: Option<Value>, what: &str) -> Option<f64> {
        let v = v?;
        if let Value::Number(n) = &v {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f >= 0.0 {
                return Some(f);
            }
            self.report(
                Some(key),
                format!("must not be negative: {what} is a number ≥ 0, found {n}"),
            );
            return None;
        }
        self.report(
            Some(key),
            format!("must be a number ≥ 0 ({what}), found {}", describe(&v)),
        );
        None
    }

    fn string_array(
        &mut self,
        key: &'static str,
        v: Option<Value>,
        what: &str,
    ) -> Option<Vec<String>> {
        let items = match v? {
            Value::Array(items) => items,
            other => {
                self.report(
                    Some(key),
                    format!(
                        "must be an array of strings ({what}), found {}",
                        describe(&other)
                    ),
                );
                return None;
            }
        };
        self.at(Seg::Key(key), |c| {
            let mut out = Vec::with_capacity(items.len());
            let mut ok = true;
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(s) => out.push(s),
                    other => {
                        ok = false;
                        c.at(Seg::Index(i), |c| {
                            c.report(
                                None,
                                format!("must be a string ({what}), found {}", describe(&other)),
                            )
                        });
                    }
                }
            }
            ok.then_some(out)
        })
    }

    fn object(
        &mut self,
        key: &'static str,
        v: Option<Value>,
        what: &str,
    ) -> Option<Map<String, Value>> {
        match v? {
            Value::Object(m) => Some(m),
            other => {
                self.report(
                    Some(key),
                    format!("must be an object ({what}), found {}", describe(&other)),
                );
                None
            }
        }
    }

    fn object_array<T>(
        &mut self,
        key: &'static str,
        v: Option<Value>,
        what: &str,
        mut build: impl FnMut(&mut Self, usize, Map<String, Value>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let items = match v? {
            Value::Array(items) => items,
            other => {
                self.report(
                    Some(key),
                    format!(
                        "must be an array of {what} objects, found {}",
                        describe(&other)
                    ),
                );
                return None;
            }
        };
        self.at(Seg::Key(key), |c| {
            let mut out = Vec::with_capacity(items.len());
            let mut ok = true;
            for (i, item) in items.into_iter().enumerate() {
                let built = c.at(Seg::Index(i), |c| match item {
                    Value::Object(m) => build(c, i, m),
                    other => {
                        c.report(
                            None,
                            format!("must be {what} object, found {}", describe(&other)),
                        );
                        None
                    }
                });
                match built {
                    Some(b) if ok => out.push(b),
                    Some(_) => {}
                    None => ok = false,
                }
            }
            ok.then_some(out)
        })
    }

    // ---- descriptor objects ---------------------------------------------------------------

    fn sla(&mut self, m: Map<String, Value>) -> Option<Sla> {
        let mut m = Fields::new(m);
        let customer_id = m.take("customerID");
        let customer_id = self.req_string("customerID", customer_id, "a string (the customer id)");
        let applications = m.take("applications");
        let applications = self.require(
            "applications",
            applications,
            "an array of application objects",
        );
        let applications =
            self.object_array("applications", applications, "an application", |c, _, m| {
                c.application(m)
            });
        let args = m.take("args");
        let args = self.string_array("args", args, "arguments");
        Some(Sla {
            sla_version: SlaVersion::V2,
            customer_id: customer_id?,
            applications: applications?,
            args,
            extra: m.into_extra(),
        })
    }

    fn application(&mut self, m: Map<String, Value>) -> Option<Application> {
        let mut m = Fields::new(m);
        let application_id = m.take("applicationID");
        let application_id = self.string(
            "applicationID",
            application_id,
            "a string (an application id)",
        );
        let name = m.take("application_name");
        let name = self.name("application_name", name);
        let namespace = m.take("application_namespace");
        let namespace = self.name("application_namespace", namespace);
        let desc = m.take("application_desc");
        let desc = self.string("application_desc", desc, "a string (a description)");
        let microservices = m.take("microservices");
        let microservices = self.microservices(microservices);
        Some(Application {
            application_id,
            application_name: name?,
            application_namespace: namespace?,
            application_desc: desc,
            microservices: microservices?,
            extra: m.into_extra(),
        })
    }

    fn microservice_list(&mut self, m: Map<String, Value>) -> Option<MicroserviceList> {
        let mut m = Fields::new(m);
        let microservices = m.take("microservices");
        let microservices = self.microservices(microservices);
        Some(MicroserviceList {
            microservices: microservices?,
            extra: m.into_extra(),
        })
    }

    /// The `microservices` array, including the check for repeated names.
    fn microservices(&mut self, v: Option<Value>) -> Option<Vec<Microservice>> {
        let v = self.require(
            "microservices",
            v,
            "an array of microservice objects (it may be empty)",
        );
        let mut seen: Vec<(String, usize)> = Vec::new();
        self.object_array("microservices", v, "a microservice", |c, i, m| {
            if let Some(name) = m.get("microservice_name").and_then(Value::as_str)
                && is_valid_name(name)
            {
                if let Some((_, first)) = seen.iter().find(|(n, _)| n == name) {
                    let mut first_path = c.path.clone();
                    if let Some(last) = first_path.last_mut() {
                        *last = Seg::Index(*first);
                    }
                    let first_path = render(&first_path, None);
                    c.report(
                        Some("microservice_name"),
                        format!(
                            "\"{name}\" is already the name of {first_path}; microservice names must be unique within an application"
                        ),
                    );
                } else {
                    seen.push((name.to_owned(), i));
                }
            }
            c.microservice(m)
        })
    }

    fn microservice(&mut self, m: Map<String, Value>) -> Option<Microservice> {
        let mut m = Fields::new(m);
        let id = m.take("microserviceID");
        let microservice_id = self.string("microserviceID", id, "an empty string");
        if let Some(id) = &microservice_id
            && !id.is_empty()
        {
            self.report(
                Some("microserviceID"),
                format!(
                    "must be empty (\"\") or absent: the orchestrator assigns service ids, found {id:?}"
                ),
            );
        }
        let name = m.take("microservice_name");
        let name = self.name("microservice_name", name);
        let namespace = m.take("microservice_namespace");
        let namespace = self.name("microservice_namespace", namespace);

        let virtualization = m.take("virtualization");
        let virtualization = self
            .req_string(
                "virtualization",
                virtualization,
                "a string such as \"container\", \"unikernel\" or \"crosvm\"",
            )
            .and_then(|s| {
                if s.is_empty() {
                    self.report(
                        Some("virtualization"),
                        "must not be empty: use \"container\", \"unikernel\" or \"crosvm\"",
                    );
                    None
                } else {
                    Some(Virtualization::from_name(&s))
                }
            });

        let code = m.take("code");
        let code = self
            .req_string(
                "code",
                code,
                "a string: the container image, or comma-separated kernel URLs for unikernels",
            )
            .and_then(|s| {
                if s.trim().is_empty() {
                    self.report(
                        Some("code"),
                        "must not be empty: give the container image (e.g. \"docker.io/library/nginx:latest\") or, for unikernels, the kernel URLs",
                    );
                    None
                } else {
                    Some(s)
                }
            });

        let memory = m.take("memory");
        let memory = self.uint("memory", memory, "memory in MB");
        let vcpus = m.take("vcpus");
        let vcpus = self.uint("vcpus", vcpus, "the number of CPU cores");
        let vgpus = m.take("vgpus");
        let vgpus = self.uint("vgpus", vgpus, "the number of GPUs");
        let vtpus = m.take("vtpus");
        let vtpus = self.uint("vtpus", vtpus, "the number of TPUs");
        let bandwidth_in = m.take("bandwidth_in");
        let bandwidth_in = self.uint("bandwidth_in", bandwidth_in, "inbound bandwidth");
        let bandwidth_out = m.take("bandwidth_out");
        let bandwidth_out = self.uint("bandwidth_out", bandwidth_out, "outbound bandwidth");
        let storage = m.take("storage");
        let storage = self.uint("storage", storage, "storage in MiB");
        let state = m.take("state");
        let state = self.string("state", state, "a string");

        let port = m.take("port");
        let port = self
            .string(
                "port",
                port,
                "a string of `host[:container][/tcp|udp]` entries joined by `;` (e.g. \"80:8080/tcp\")",
            )
            .and_then(|s| match s.parse::<PortSpec>() {
                Ok(spec) => Some(spec),
                Err(e) => {
                    self.report(Some("port"), e.to_string());
                    None
                }
            });

        let one_shot = m.take("one_shot");
        let one_shot = self.boolean("one_shot", one_shot);
        let privileged = m.take("privileged");
        let privileged = self.boolean("privileged", privileged);
        let cmd = m.take("cmd");
        let cmd = self.string_array("cmd", cmd, "the command and its arguments");
        let environment = m.take("environment");
        let environment = self.string_array("environment", environment, "\"KEY=VALUE\" entries");
        if let Some(env) = &environment {
            self.at(Seg::Key("environment"), |c| {
                for (i, entry) in env.iter().enumerate() {
                    let key = entry.split_once('=').map(|(k, _)| k);
                    if key.is_none_or(str::is_empty) {
                        c.at(Seg::Index(i), |c| {
                            c.report(
                                None,
                                format!(
                                    "{entry:?} is not an environment entry: use \"KEY=VALUE\" with a non-empty KEY"
                                ),
                            )
                        });
                    }
                }
            });
        }
        let args = m.take("args");
        let args = self.string_array("args", args, "arguments");
        let added_files = m.take("added_files");
        let added_files = self.string_array("added_files", added_files, "file names");
        let strategy = m.take("sla_violation_strategy");
        let sla_violation_strategy = self.string("sla_violation_strategy", strategy, "a string");
        let target_node = m.take("target_node");
        let target_node = self.string("target_node", target_node, "a string");

        let addresses = m.take("addresses");
        let addresses = self
            .object("addresses", addresses, "with rr_ip and/or rr_ip_v6")
            .map(|a| self.at(Seg::Key("addresses"), |c| c.addresses(a)));
        let volumes = m.take("volumes");
        let volumes = self.object_array("volumes", volumes, "a volume", |c, _, m| c.volume(m));
        let constraints = m.take("constraints");
        let constraints =
            self.object_array("constraints", constraints, "a constraint", |c, _, m| {
                c.constraint(m)
            });
        let connectivity = m.take("connectivity");
        let connectivity =
            self.object_array("connectivity", connectivity, "a connectivity", |c, _, m| {
                c.connectivity(m)
            });

        let arch_value = m.take("arch");
        let arch_given = arch_value.is_some();
        let arch = self.string_array("arch", arch_value, "CPU architectures such as \"amd64\"");
        if let Some(arch) = &arch {
            self.at(Seg::Key("arch"), |c| {
                for (i, a) in arch.iter().enumerate() {
                    if a.trim().is_empty() {
                        c.at(Seg::Index(i), |c| {
                            c.report(None, "must not be empty: name a CPU architecture such as \"amd64\" or \"arm64\"")
                        });
                    }
                }
            });
        }
        if virtualization == Some(Virtualization::Unikernel) {
            self.unikernel_rules(arch_given, arch.as_deref(), code.as_deref());
        }

        Some(Microservice {
            microservice_id,
            microservice_name: name?,
            microservice_namespace: namespace?,
            virtualization: virtualization?,
            code: code?,
            memory,
            vcpus,
            vgpus,
            vtpus,
            bandwidth_in,
            bandwidth_out,
            storage,
            state,
            port,
            one_shot,
            privileged,
            cmd,
            environment,
            args,
            added_files,
            sla_violation_strategy,
            target_node,
            addresses: addresses.flatten(),
            volumes,
            constraints,
            connectivity,
            arch,
            extra: m.into_extra(),
        })
    }

    fn unikernel_rules(&mut self, arch_given: bool, arch: Option<&[String]>, code: Option<&str>) {
        if !arch_given {
            self.report(
                Some("arch"),
                "is required for unikernel services: a list of CPU architectures (e.g. [\"amd64\"]), one per comma-separated kernel URL in code",
            );
            return;
        }
        let (Some(arch), Some(code)) = (arch, code) else {
            return;
        };
        if arch.is_empty() {
            self.report(
                Some("arch"),
                "must name at least one CPU architecture for a unikernel service (e.g. [\"amd64\"])",
            );
            return;
        }
        let urls: Vec<&str> = code.split(',').map(str::trim).collect();
        if let Some(i) = urls.iter().position(|u| u.is_empty()) {
            self.report(
                Some("code"),
                format!(
                    "entry {i} of the comma-separated kernel URLs is empty; give one URL per architecture"
                ),
            );
        } else if urls.len() != arch.len() {
            self.report(
                Some("arch"),
                format!(
                    "has {} entr{} but code has {} comma-separated kernel URL{}; a unikernel service needs exactly one URL per architecture, in the same order",
                    arch.len(),
                    if arch.len() == 1 { "y" } else { "ies" },
                    urls.len(),
                    if urls.len() == 1 { "" } else { "s" },
                ),
            );
        }
    }

    fn addresses(&mut self, m: Map<String, Value>) -> Option<Addresses> {
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
    fn unique_service_v4(&mut self, ip: Ipv4Addr, field: &str) {
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
    fn unique_service_v6(&mut self, ip: Ipv6Addr, field: &str) {
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

    fn unique_rr_v4(&mut self, ip: Ipv4Addr) {
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

    fn unique_rr_v6(&mut self, ip: Ipv6Addr) {
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

    fn volume(&mut self, m: Map<String, Value>) -> Option<Volume> {
        let mut m = Fields::new(m);
        let volume_id = m.take("volume_id");
        let volume_id = self.req_string("volume_id", volume_id, "a string (the volume id)");
        let csi_driver = m.take("csi_driver");
        let csi_driver =
            self.req_string("csi_driver", csi_driver, "a string (the CSI driver name)");
        let mount_path = m.take("mount_path");
        let mount_path = self.string("mount_path", mount_path, "a string (a path)");
        let config = m.take("config");
        let config = self.object("config", config, "driver configuration");
        Some(Volume {
            volume_id: volume_id?,
            csi_driver: csi_driver?,
            mount_path,
            config,
            extra: m.into_extra(),
        })
    }

    fn constraint(&mut self, m: Map<String, Value>) -> Option<Constraint> {
        let mut m = Fields::new(m);
        let kind = m.take("type");
        let kind = self
            .req_string(
                "type",
                kind,
                "a string such as \"direct\", \"clusters\", \"geo\" or \"latency\"",
            )
            .map(|s| ConstraintKind::from_name(&s));
        let area = m.take("area");
        let area = self.string("area", area, "a string");
        let cluster = m.take("cluster");
        let cluster = self.string("cluster", cluster, "a string (a cluster name)");
        let node = m.take("node");
        let node = self.string("node", node, "a string (worker hostnames joined by `;`)");
        let location = m.take("location");
        let location = self.string("location", location, "a string (\"lat,lon\")");
        let threshold = m.take("threshold");
        let threshold = self.number("threshold", threshold, "the threshold");
        let rigidness = m.take("rigidness");
        let rigidness = self.number("rigidness", rigidness, "the rigidness");
        let convergence_time = m.take("convergence_time");
        let convergence_time =
            self.uint("convergence_time", convergence_time, "the convergence time");
        let needs = m.take("needs");
        let needs = self.string_array("needs", needs, "addon names");
        let allowed = m.take("allowed");
        let allowed = self.string_array("allowed", allowed, "cluster names");
        Some(Constraint {
            kind: kind?,
            area,
            cluster,
            node,
            location,
            threshold,
            rigidness,
            convergence_time,
            needs,
            allowed,
            extra: m.into_extra(),
        })
    }

    fn connectivity(&mut self, m: Map<String, Value>) -> Option<Connectivity> {
        let mut m = Fields::new(m);
        let target = m.take("target_microservice_id");
        let target = self.req_string(
            "target_microservice_id",
            target,
            "a string (the target microservice)",
        );
        let cons = m.take("con_constraints");
        let cons = self.require(
            "con_constraints",
            cons,
            "an array of {type, threshold, rigidness, convergence_time} objects",
        );
        let cons = self.object_array(
            "con_constraints",
            cons,
            "a connection constraint",
            |c, _, m| {
                let mut m = Fields::new(m);
                let kind = m.take("type");
                let kind = c.req_string("type", kind, "a string (e.g. \"latency\")");
                let threshold = m.take("threshold");
                let threshold = c.require("threshold", threshold, "a number ≥ 0");
                let threshold = c.number("threshold", threshold, "the threshold");
                let rigidness = m.take("rigidness");
                let rigidness = c.require("rigidness", rigidness, "a number ≥ 0");
                let rigidness = c.number("rigidness", rigidness, "the rigidness");
                let convergence = m.take("convergence_time");
                let convergence = c.require("convergence_time", convergence, "a whole number ≥ 0");
                let convergence = c.uint("convergence_time", convergence, "the convergence time");
                Some(ConConstraint {
                    kind: kind?,
                    threshold: threshold?,
                    rigidness: rigidness?,
                    convergence_time: convergence?,
                    extra: m.into_extra(),
                })
            },
        );
        Some(Connectivity {
            target_microservice_id: target?,
            con_constraints: cons?,
            extra: m.into_extra(),
        })
    }
}

fn single(path: &str, message: impl Into<String>) -> SlaErrors {
    SlaErrors(vec![Violation {
        path: path.to_owned(),
        message: message.into(),
    }])
}

/// Checks `sla_version` before anything else: an unknown version has unknown rules.
fn check_version(m: &mut Map<String, Value>) -> Result<SlaVersion, SlaErrors> {
    const SUPPORTED: &str = "the supported version is \"v2.0\"";
    match m.shift_remove("sla_version") {
        None => Err(single(
            "/sla_version",
            format!("is missing: every descriptor must declare its sla_version; {SUPPORTED}"),
        )),
        Some(Value::String(s)) if s == "v2.0" => Ok(SlaVersion::V2),
        Some(Value::String(s)) if s == "v1.0" => Err(single(
            "/sla_version",
            format!("\"v1.0\" is deprecated and no longer accepted; {SUPPORTED}"),
        )),
        Some(Value::String(s)) => Err(single(
            "/sla_version",
            format!("unknown version {s:?}; {SUPPORTED}"),
        )),
        Some(other) => Err(single(
            "/sla_version",
            format!("must be a string; {SUPPORTED}, found {}", describe(&other)),
        )),
    }
}

pub(super) fn build_sla(value: Value) -> Result<Sla, SlaErrors> {
    let mut m = match value {
        Value::Object(m) => m,
        other => {
            return Err(single(
                "",
                format!(
                    "the descriptor must be a JSON object with sla_version, customerID and applications, found {}",
                    describe(&other)
                ),
            ));
        }
    };
    check_version(&mut m)?;
    let mut checker = Checker::new();
    let sla = checker.sla(m);
    checker.finish(sla)
}

pub(super) fn build_microservice_list(value: Value) -> Result<MicroserviceList, SlaErrors> {
    let m = match value {
        Value::Object(m) => m,
        other => {
            return Err(single(
                "",
                format!(
                    "the descriptor must be a JSON object with a microservices array, found {}",
                    describe(&other)
                ),
            ));
        }
    };
    let mut checker = Checker::new();
    let list = checker.microservice_list(m);
    checker.finish(list)
}
