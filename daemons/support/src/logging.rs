//! Logging of every daemon: human-readable text (the default) or JSON lines
//! (`--log-format json`), one object per event on stderr:
//!
//! ```json
//! {"time":"2026-12-07T07:20:01.123Z","level":"INFO","target":"oakestra_root","fields":{"port":10000},"message":"listening"}
//! ```
//!
//! `fields` holds the event's own key-values and those of the spans it is in (innermost wins).
//! The filter is `RUST_LOG` when set, else the daemon's default.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: `2026-12-07T07:20:01Z  INFO target: message key=value`.
    #[default]
    Text,
    /// One JSON object per line (time, level, target, fields, message), for Loki or any shipper.
    Json,
}

/// Installs the global subscriber writing to stderr; `default_filter` applies when `RUST_LOG`
/// is not set. A second call (tests starting several daemons) keeps the first subscriber.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.with_ansi(false).event_format(JsonLines).try_init(),
    };
}

/// The JSON-lines event format.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Map::new();
        // Span fields as the default formatter rendered them (`key=value …`), outermost first
        // so the inner spans and the event override them.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(rendered) = span.extensions().get::<FormattedFields<N>>() {
                    for (k, v) in split_rendered(rendered.as_str()) {
                        fields.insert(k, v);
                    }
                }
            }
        }
        let mut visitor = JsonVisitor {
            fields: &mut fields,
            message: None,
        };
        event.record(&mut visitor);
        let message = visitor.message.take().unwrap_or_default();
        let meta = event.metadata();
        let line = serde_json::json!({
            "time": rfc3339_millis(SystemTime::now()),
            "level": meta.level().as_str(),
            "target": meta.target(),
            "fields": Value::Object(fields),
            "message": message,
        });
        writeln!(writer, "{line}")
    }
}

struct JsonVisitor<'a> {
    fields: &'a mut Map<String, Value>,
    message: Option<String>,
}

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.fields.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
}

/// `a=1 b="x y"` (the default field formatter's rendering of a span) as key-values; values
/// stay strings.
fn split_rendered(rendered: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut rest = rendered.trim();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().to_owned();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.push((key, Value::String(value.to_owned())));
        rest = next.trim_start();
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = crate::calendar::civil_from_days(days as i64);
    let mut out = String::with_capacity(24);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[test]
    fn times_are_utc_rfc3339_with_millis() {
        let at = |s: u64, ms: u64| {
            rfc3339_millis(UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_796_541_601, 123), "2026-12-06T07:20:01.123Z");
    }

    #[test]
    fn span_renderings_split_into_fields() {
        assert_eq!(
            split_rendered(r#"id=3 name="a b" ok=true"#),
            vec![
                ("id".into(), Value::from("3")),
                ("name".into(), Value::from("a b")),
                ("ok".into(), Value::from("true")),
            ]
        );
        assert!(split_rendered("").is_empty());
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_level_target_fields_and_message() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("deploy", service = "s1");
            let _guard = span.enter();
            tracing::warn!(target: "oakestra_test", worker = 3, ok = false, "worker {} silent", "w3");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let v: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "oakestra_test");
        assert_eq!(v["message"], "worker w3 silent");
        assert_eq!(v["fields"]["worker"], 3);
        assert_eq!(v["fields"]["ok"], false);
        assert_eq!(v["fields"]["service"], "s1");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }
}
