//! The native half of the `oakestra` Python package (`oakestra._native`), built with pyo3 and
//! maturin. The Python half (`python/oakestra/`) re-exports it, defines the exception classes
//! and serves Python functions as external schedulers.
//!
//! * `client::Client` wraps `oakestra-client` on a private tokio runtime; every network call
//!   releases the GIL, so other Python threads run while it waits.
//! * `validate_sla` runs `oakestra-core`'s SLA validator.
//! * `sched` exposes `oakestra-sched`: candidates, requests, the built-in schedulers, batch
//!   simulation, and the JSON answer an external scheduler gives the cluster.

mod client;
mod convert;
mod errors;
mod events;
mod sched;

use pyo3::prelude::*;
use pyo3::types::PyList;

/// Every violation of an SLA (deployment descriptor) as `oakestra.Violation(path, message)`;
/// empty when it is valid. `sla` is a dict (the parsed JSON) or the path of a JSON file.
#[pyfunction]
fn validate_sla<'py>(sla: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
    let py = sla.py();
    let result = match convert::json_source(sla)? {
        convert::JsonSource::Value(value) => oakestra_core::sla::validate_owned(value),
        convert::JsonSource::File { text, .. } => oakestra_core::sla::parse_and_validate(&text),
    };
    let violations = match result {
        Ok(_) => Vec::new(),
        Err(errors) => errors.into_violations(),
    };
    errors::violations(py, &violations)
}

#[pymodule]
#[pyo3(name = "_native")]
fn oakestra_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<client::Client>()?;
    m.add_class::<events::EventIterator>()?;
    m.add_function(wrap_pyfunction!(validate_sla, m)?)?;
    sched::register(m)?;
    Ok(())
}
