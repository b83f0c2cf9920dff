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
    InstanceAddressRange, MAX_REPLICAS, Microservice, MicroserviceList, RestartPolicy, Sla,
    SlaVersion, Virtualization, Volume,
};
use super::{SlaErrors, Violation, max_entries};
use crate::naming::{check_name, is_valid_name};

mod addresses;
mod constraints;
mod document;
mod microservice;
mod probe;

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
            // `u64::MAX as f64` is 2^64, one more than the largest u64: excluded.
            if f.fract() == 0.0 && f >= 0.0 && f < u64::MAX as f64 {
                return Some(f as u64);
            }
            let reason = if f < 0.0 {
                "must not be negative"
            } else if f.fract() == 0.0 {
                "is too large"
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

    /// Reports an array longer than [`max_entries`] allows for `key`; true when it fits.
    fn fits(&mut self, key: &'static str, len: usize) -> bool {
        match max_entries(key) {
            Some(max) if len > max => {
                self.report(
                    Some(key),
                    format!(
                        "has {len} entries; at most {max} are accepted (see the README's \
                         descriptor limits)"
                    ),
                );
                false
            }
            _ => true,
        }
    }

    fn string_array(
        &mut self,
        key: &'static str,
        v: Option<Value>,
        what: &str,
    ) -> Option<Vec<String>> {
        let items = match v? {
            Value::Array(items) if !self.fits(key, items.len()) => return None,
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
            Value::Array(items) if !self.fits(key, items.len()) => return None,
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
