//! Between Python objects and serde types. JSON is the common ground: the API's and the
//! scheduler's types are serde types already, and Python's `json` module maps them onto
//! dicts, lists, strings, numbers, booleans and `None` exactly as users expect.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use serde::Serialize;
use serde_json::Value;

/// A serde value as plain Python objects (dicts, lists, str, int, float, bool, None).
pub fn to_py<T: Serialize + ?Sized>(py: Python<'_>, value: &T) -> PyResult<Py<PyAny>> {
    let text = serde_json::to_string(value)
        .map_err(|e| PyValueError::new_err(format!("cannot convert to Python: {e}")))?;
    Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
}

/// A Python object made of JSON types as a serde value (NaN and infinities are refused).
pub fn to_value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    let py = obj.py();
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("allow_nan", false)?;
    let text: String = py
        .import("json")?
        .call_method("dumps", (obj,), Some(&kwargs))
        .map_err(|e| {
            PyTypeError::new_err(format!(
                "expected JSON-compatible data (dict, list, str, number, bool, None): {e}"
            ))
        })?
        .extract()?;
    serde_json::from_str(&text).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Where a JSON document comes from: Python data, or a file named by a `str` or `os.PathLike`.
pub enum JsonSource {
    /// Already parsed (a dict or list from Python).
    Value(Value),
    /// The text of a file.
    File {
        /// The file's path, for messages.
        path: String,
        /// Its content.
        text: String,
    },
}

/// A dict/list is taken as the document, a `str` or `os.PathLike` as the path of a JSON file.
pub fn json_source(obj: &Bound<'_, PyAny>) -> PyResult<JsonSource> {
    let py = obj.py();
    let is_path = obj.is_instance_of::<pyo3::types::PyString>()
        || obj.is_instance(&py.import("os")?.getattr("PathLike")?)?;
    if !is_path {
        return Ok(JsonSource::Value(to_value(obj)?));
    }
    let path: String = py.import("os")?.call_method1("fspath", (obj,))?.extract()?;
    let text = std::fs::read_to_string(&path).map_err(|e| {
        let message = format!("cannot read the descriptor {path}: {e}");
        match e.kind() {
            std::io::ErrorKind::NotFound => pyo3::exceptions::PyFileNotFoundError::new_err(message),
            std::io::ErrorKind::PermissionDenied => {
                pyo3::exceptions::PyPermissionError::new_err(message)
            }
            _ => pyo3::exceptions::PyOSError::new_err(message),
        }
    })?;
    Ok(JsonSource::File { path, text })
}

/// The parsed document of a [`JsonSource`]; invalid JSON in a file is a `ValueError` naming
/// the file, line and column.
pub fn json_document(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    match json_source(obj)? {
        JsonSource::Value(value) => Ok(value),
        JsonSource::File { path, text } => serde_json::from_str(&text)
            .map_err(|e| PyValueError::new_err(format!("{path} is not valid JSON: {e}"))),
    }
}

/// A string as Python's `repr` writes it (single quotes).
pub fn python_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}
