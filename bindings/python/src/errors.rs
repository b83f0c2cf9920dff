//! Raising the exception classes of `oakestra.errors` (defined in Python, so that they are
//! ordinary classes users can subclass, pickle and catch) from Rust.

use oakestra_client::ClientError;
use oakestra_core::sla::Violation;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// An instance of `oakestra.errors.<class>` built with `args` and `kwargs`, as a `PyErr`.
pub fn raise<'py>(
    py: Python<'py>,
    class: &str,
    args: impl pyo3::call::PyCallArgs<'py>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyErr {
    let built = py
        .import("oakestra.errors")
        .and_then(|module| module.getattr(class))
        .and_then(|class| class.call(args, kwargs));
    match built {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => e,
    }
}

/// `[oakestra.Violation(path, message), …]`.
pub fn violations<'py>(py: Python<'py>, list: &[Violation]) -> PyResult<Bound<'py, PyList>> {
    let class = py.import("oakestra.errors")?.getattr("Violation")?;
    let items = list
        .iter()
        .map(|v| class.call1((v.path.as_str(), v.message.as_str())))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

/// The Python exception for a client error: `ApiError` (or its subclasses by status) with the
/// root's status and message, `TransportError` when the root is unreachable.
pub fn client_error(py: Python<'_>, error: ClientError) -> PyErr {
    let text = error.to_string();
    match error {
        ClientError::Api {
            method,
            path,
            status,
            message,
            violations: list,
        } => {
            let class = match status {
                _ if !list.is_empty() => "InvalidSlaError",
                401 | 403 => "AuthError",
                404 => "NotFoundError",
                _ => "ApiError",
            };
            let kwargs = || -> PyResult<Bound<'_, PyDict>> {
                let kwargs = PyDict::new(py);
                kwargs.set_item("status", status)?;
                kwargs.set_item("server_message", message)?;
                kwargs.set_item("method", method)?;
                kwargs.set_item("path", path)?;
                kwargs.set_item("violations", violations(py, &list)?)?;
                Ok(kwargs)
            };
            match kwargs() {
                Ok(kwargs) => raise(py, class, (text,), Some(&kwargs)),
                Err(e) => e,
            }
        }
        ClientError::Transport { .. } => raise(py, "TransportError", (text,), None),
        ClientError::BadUrl(_) => PyValueError::new_err(text),
        // An unexpected answer, a call before login, and whatever the client adds later.
        _ => raise(py, "OakestraError", (text,), None),
    }
}
