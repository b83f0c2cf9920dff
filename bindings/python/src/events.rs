//! `Client.events`, `Client.follow_events` (an iterator over the server-sent events stream)
//! and `Client.usage`: the root's event log and usage history.

use std::sync::Arc;
use std::time::Duration;

use oakestra_client::{EventQuery, EventStream};
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

use crate::convert::to_py;
use crate::errors::client_error;

/// The query of `events` / `follow_events`.
#[allow(clippy::too_many_arguments)]
pub fn query(
    service: Option<String>,
    application: Option<String>,
    cluster: Option<String>,
    kind: Option<String>,
    object: Option<String>,
    since: Option<f64>,
    after: Option<u64>,
    limit: Option<usize>,
) -> EventQuery {
    EventQuery {
        service,
        application,
        cluster,
        kind,
        object,
        since,
        after,
        limit,
    }
}

/// Live events: `for event in client.follow_events(service=...)` yields each event (a dict)
/// as it happens; it blocks with the GIL released and stops on Ctrl-C or when the root
/// closes the stream.
#[pyclass(module = "oakestra")]
#[derive(Debug)]
pub struct EventIterator {
    stream: Arc<tokio::sync::Mutex<EventStream>>,
}

impl EventIterator {
    pub fn new(stream: EventStream) -> Self {
        Self {
            stream: Arc::new(tokio::sync::Mutex::new(stream)),
        }
    }
}

#[pymethods]
impl EventIterator {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let runtime = crate::client::runtime()?;
        loop {
            let stream = Arc::clone(&self.stream);
            // Wait in slices so that Ctrl-C is handled between them.
            let next = py.detach(|| {
                runtime.block_on(async move {
                    let mut stream = stream.lock().await;
                    tokio::time::timeout(Duration::from_millis(500), stream.next()).await
                })
            });
            match next {
                Ok(Some(Ok(event))) => return to_py(py, &event),
                Ok(Some(Err(e))) => return Err(client_error(py, e)),
                Ok(None) => return Err(PyStopIteration::new_err("the root closed the stream")),
                Err(_) => py.check_signals()?,
            }
        }
    }
}
