//! Serde helpers for Oakestra's loose JSON: numbers that arrive as strings (`"12.345678"`,
//! `"50103"`) and lists that arrive as `null`. We accept both on input and emit numbers, except where Oakestra's clients decode a string ([`f64_as_string`]).
//!
//! Use with `#[serde(deserialize_with = "oakestra_core::lenient::number")]`,
//! `#[serde(default, deserialize_with = "oakestra_core::lenient::option_number")]` or
//! `#[serde(default, deserialize_with = "oakestra_core::lenient::null_as_default")]`.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A numeric type that can be read from a JSON number or a numeric string.
pub trait LenientNumber: Sized {
    /// What the type holds, for error messages.
    const EXPECTED: &'static str;
    /// From an unsigned integer, if in range.
    fn from_u64(v: u64) -> Option<Self>;
    /// From a signed integer, if in range.
    fn from_i64(v: i64) -> Option<Self>;
    /// From a float, if representable (integers need a zero fraction).
    fn from_f64(v: f64) -> Option<Self>;
}

macro_rules! lenient_int {
    ($($t:ty),*) => {$(
        impl LenientNumber for $t {
            const EXPECTED: &'static str = concat!("an integer (", stringify!($t), "), as a number or a numeric string");
            fn from_u64(v: u64) -> Option<Self> { <$t>::try_from(v).ok() }
            fn from_i64(v: i64) -> Option<Self> { <$t>::try_from(v).ok() }
            fn from_f64(v: f64) -> Option<Self> {
                if v.fract() == 0.0 && v >= <$t>::MIN as f64 && v <= <$t>::MAX as f64 {
                    Some(v as $t)
                } else {
                    None
                }
            }
        }
    )*};
}
lenient_int!(u8, u16, u32, u64, i32, i64);

impl LenientNumber for f64 {
    const EXPECTED: &'static str = "a number, or a numeric string";
    fn from_u64(v: u64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_i64(v: i64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_f64(v: f64) -> Option<Self> {
        v.is_finite().then_some(v)
    }
}

struct NumberVisitor<T>(PhantomData<T>);

impl<T: LenientNumber> NumberVisitor<T> {
    fn out_of_range<E: de::Error>(shown: impl fmt::Display) -> E {
        E::custom(format!("{shown} is not {}", T::EXPECTED))
    }
}

impl<T: LenientNumber> Visitor<'_> for NumberVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTED)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::from_u64(v).ok_or_else(|| Self::out_of_range(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::from_i64(v).ok_or_else(|| Self::out_of_range(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        T::from_f64(v).ok_or_else(|| Self::out_of_range(v))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        let t = s.trim();
        if let Ok(v) = t.parse::<u64>() {
            return self.visit_u64(v);
        }
        if let Ok(v) = t.parse::<i64>() {
            return self.visit_i64(v);
        }
        match t.parse::<f64>() {
            Ok(v) => self.visit_f64(v),
            Err(_) => Err(Self::out_of_range(format_args!("{s:?}"))),
        }
    }
}

/// Writes a number as a JSON string (`12.5` → `"12.5"`). Only for the few REST fields that
/// Oakestra's clients decode as strings (an instance's `cpu_percent`, `memory_percent` and its
/// metric history values: the Go `oak` CLI declares them `string`); reading stays lenient.
pub fn f64_as_string<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// [`f64_as_string`] for an optional value (`None` is skipped by the field's attributes).
pub fn option_f64_as_string<S: serde::Serializer>(
    v: &Option<f64>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// Reads a number given as a JSON number or a numeric string.
pub fn number<'de, D: Deserializer<'de>, T: LenientNumber>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(NumberVisitor(PhantomData))
}

/// Like [`number`], but `null`, `""` and a missing field (with `#[serde(default)]`) give `None`.
pub fn option_number<'de, D: Deserializer<'de>, T: LenientNumber>(
    d: D,
) -> Result<Option<T>, D::Error> {
    struct OptVisitor<T>(PhantomData<T>);
    impl<'de, T: LenientNumber> Visitor<'de> for OptVisitor<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "null or {}", T::EXPECTED)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            option_number(d)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            NumberVisitor::<T>(PhantomData).visit_u64(v).map(Some)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            NumberVisitor::<T>(PhantomData).visit_i64(v).map(Some)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            NumberVisitor::<T>(PhantomData).visit_f64(v).map(Some)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            if s.trim().is_empty() {
                return Ok(None);
            }
            NumberVisitor::<T>(PhantomData).visit_str(s).map(Some)
        }
    }
    d.deserialize_any(OptVisitor(PhantomData))
}

/// Reads `null` as the type's default (Go marshals empty slices and maps as `null`).
pub fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Reads an optional IP address (`Ipv4Addr`, `Ipv6Addr` or `IpAddr`) as Oakestra sends it:
/// `null`, `""`, a missing field (with `#[serde(default)]`) and text that is no address of that
/// family give `None` (Oakestra fills unknown addresses with `""`; a worker routes what it can).
pub fn option_ip<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
{
    let text: Option<String> = Option::deserialize(d)?;
    Ok(text.and_then(|t| t.trim().parse().ok()))
}

/// Writes an optional address as text, `None` as `""` (Oakestra's spelling of "no address").
pub fn ip_or_empty<S, T>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error>
where
    S: serde::Serializer,
    T: fmt::Display,
{
    match v {
        Some(ip) => s.collect_str(ip),
        None => s.serialize_str(""),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Probe {
        #[serde(deserialize_with = "super::number")]
        port: u16,
        #[serde(deserialize_with = "super::number")]
        cpu: f64,
        #[serde(default, deserialize_with = "super::option_number")]
        disk: Option<u64>,
        #[serde(default, deserialize_with = "super::null_as_default")]
        list: Vec<String>,
    }

    fn probe(json: &str) -> Result<Probe, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn numbers_and_numeric_strings_are_both_accepted() {
        let a = probe(r#"{"port":50103,"cpu":12.5,"disk":7,"list":["a"]}"#).unwrap();
        let b = probe(r#"{"port":"50103","cpu":"12.500000","disk":"7","list":["a"]}"#).unwrap();
        assert_eq!(a, b);
        let c = probe(r#"{"port":50103.0,"cpu":1,"list":null}"#).unwrap();
        assert_eq!(c.disk, None);
        assert!(c.list.is_empty());
        assert_eq!(
            probe(r#"{"port":1,"cpu":1,"disk":null}"#).unwrap().disk,
            None
        );
        assert_eq!(probe(r#"{"port":1,"cpu":1,"disk":""}"#).unwrap().disk, None);
    }

    #[test]
    fn bad_numbers_are_rejected_with_a_reason() {
        for bad in [
            r#"{"port":70000,"cpu":1}"#,
            r#"{"port":"-1","cpu":1}"#,
            r#"{"port":"http","cpu":1}"#,
            r#"{"port":1.5,"cpu":1}"#,
            r#"{"port":1,"cpu":"NaNx"}"#,
            r#"{"port":true,"cpu":1}"#,
        ] {
            let e = probe(bad).unwrap_err().to_string();
            assert!(e.contains("is not") || e.contains("expected"), "{bad}: {e}");
        }
    }
}
