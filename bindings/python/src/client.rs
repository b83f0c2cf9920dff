//! `oakestra.Client`: the typed REST client of `oakestra-client`, blocking from Python's point
//! of view, with the GIL released for as long as a call waits on the network.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use oakestra_client::ClientError;
use oakestra_core::model::{InstanceRecord, ServiceRecord};
use oakestra_core::status::Status;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::Value;

use crate::convert::{json_document, python_str, to_py, to_value};
use crate::errors::{client_error, raise};

/// The runtime every client shares: two worker threads are plenty for a client, and one
/// runtime per process keeps connection pools alive between calls.
pub(crate) fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("oakestra-client")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the tokio runtime: {e}")))
}

/// Runs `future` to completion with the GIL released; a client error becomes its Python
/// exception.
fn block<T, F>(py: Python<'_>, future: F) -> PyResult<T>
where
    T: Send,
    F: Future<Output = Result<T, ClientError>> + Send,
{
    let runtime = runtime()?;
    py.detach(|| runtime.block_on(future))
        .map_err(|e| client_error(py, e))
}

/// Sleeps with the GIL released, then lets Python handle pending signals (Ctrl-C).
fn pause(py: Python<'_>, duration: Duration) -> PyResult<()> {
    let runtime = runtime()?;
    py.detach(|| runtime.block_on(async move { tokio::time::sleep(duration).await }));
    py.check_signals()
}

/// An id as the API shows it: a string, or Oakestra's `{"$oid": "<24 hex>"}`.
pub struct Id(String);

impl<'a, 'py> FromPyObject<'a, 'py> for Id {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(text) = obj.extract::<String>() {
            return Ok(Id(text));
        }
        if let Ok(dict) = obj.cast::<PyDict>()
            && let Some(oid) = dict.get_item("$oid")?
        {
            return Ok(Id(oid.extract()?));
        }
        Err(pyo3::exceptions::PyTypeError::new_err(
            "an id is a string or {\"$oid\": \"<24 hex digits>\"}",
        ))
    }
}

/// The (name, namespace) pairs of a descriptor's applications.
fn descriptor_apps(sla: &Value) -> Vec<(String, String)> {
    let field = |app: &Value, key: &str| {
        app.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    sla.get("applications")
        .and_then(Value::as_array)
        .map(|apps| {
            apps.iter()
                .map(|app| {
                    (
                        field(app, "application_name"),
                        field(app, "application_namespace"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A logged-in connection to a root orchestrator.
///
/// Every method blocks until the root answers, with the GIL released, so other Python threads
/// (an external scheduler served by `oakestra.sched.serve`, a progress bar) keep running. For
/// asyncio use `oakestra.AsyncClient`.
#[pyclass(module = "oakestra", frozen)]
#[derive(Debug)]
pub struct Client {
    inner: Arc<oakestra_client::Client>,
    username: String,
}

#[pymethods]
impl Client {
    /// Connects to the root at `url` and logs in (raises `AuthError` on bad credentials,
    /// `TransportError` when nothing answers).
    #[new]
    #[pyo3(signature = (url = "http://127.0.0.1:10000", username = "Admin", password = "Admin", *, organization = None))]
    fn new(
        py: Python<'_>,
        url: &str,
        username: &str,
        password: &str,
        organization: Option<&str>,
    ) -> PyResult<Self> {
        let inner = Arc::new(oakestra_client::Client::new(url).map_err(|e| client_error(py, e))?);
        block(py, inner.login_to(username, password, organization))?;
        Ok(Client {
            inner,
            username: username.to_owned(),
        })
    }

    /// The root's base URL.
    #[getter]
    fn url(&self) -> &str {
        self.inner.base_url()
    }

    /// The user this client is logged in as.
    #[getter]
    fn username(&self) -> &str {
        &self.username
    }

    /// The current access token (refreshed by the client when it is about to expire).
    #[getter]
    fn token(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let inner = self.inner.clone();
        block(py, async move { Ok(inner.access_token().await) })
    }

    fn __repr__(&self) -> String {
        format!(
            "Client(url={}, username={})",
            python_str(self.inner.base_url()),
            python_str(&self.username)
        )
    }

    // ------------------------------------------------------------ applications

    /// Creates every application of a descriptor (a dict, or the path of a JSON file) with its
    /// services, all or nothing. Returns the created applications, in descriptor order.
    /// An invalid descriptor raises `InvalidSlaError` with every violation.
    fn create_applications(&self, py: Python<'_>, sla: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let document = json_document(sla)?;
        let wanted = descriptor_apps(&document);
        let inner = self.inner.clone();
        let all = block(
            py,
            async move { inner.create_applications(&document).await },
        )?;
        let created: Vec<_> = wanted
            .iter()
            .filter_map(|(name, namespace)| {
                all.iter().rev().find(|app| {
                    &app.application_name == name && &app.application_namespace == namespace
                })
            })
            .collect();
        if created.is_empty() {
            to_py(py, &all)
        } else {
            to_py(py, &created)
        }
    }

    /// Like `create_applications` for a descriptor holding exactly one application; returns it.
    fn create_application(&self, py: Python<'_>, sla: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let document = json_document(sla)?;
        let count = descriptor_apps(&document).len();
        if count != 1 {
            return Err(PyValueError::new_err(format!(
                "the descriptor holds {count} applications; create_application takes exactly \
                 one (use create_applications for several)"
            )));
        }
        let doc = crate::convert::to_py(py, &document)?;
        let created = self.create_applications(py, doc.bind(py))?;
        Ok(created.bind(py).get_item(0)?.unbind())
    }

    /// Every application (Admin), or those of the user with id `user_id`.
    #[pyo3(signature = (user_id = None))]
    fn applications(&self, py: Python<'_>, user_id: Option<String>) -> PyResult<Py<PyAny>> {
        let inner = self.inner.clone();
        let apps = block(py, async move {
            match user_id {
                Some(id) => inner.user_applications(&id).await,
                None => inner.applications().await,
            }
        })?;
        to_py(py, &apps)
    }

    /// One application by id (`NotFoundError` if it is unknown or not the caller's).
    fn application(&self, py: Python<'_>, application_id: Id) -> PyResult<Py<PyAny>> {
        let inner = self.inner.clone();
        let app = block(
            py,
            async move { inner.application(&application_id.0).await },
        )?;
        to_py(py, &app)
    }

    /// Undeploys and deletes an application with its services; returns the root's message.
    fn delete_application(&self, py: Python<'_>, application_id: Id) -> PyResult<String> {
        let inner = self.inner.clone();
        let answer = block(py, async move {
            inner.delete_application(&application_id.0).await
        })?;
        Ok(answer.message)
    }

    // ------------------------------------------------------------ services

    /// Every service (Admin), or those of one application.
    #[pyo3(signature = (application_id = None))]
    fn services(&self, py: Python<'_>, application_id: Option<Id>) -> PyResult<Py<PyAny>> {
        let inner = self.inner.clone();
        let services = block(py, async move {
            match application_id {
                Some(Id(id)) => inner.application_services(&id).await,
                None => inner.services().await,
            }
        })?;
        to_py(py, &services)
    }

    /// One service by id, with its `instance_list`.
    fn service(&self, py: Python<'_>, service_id: Id) -> PyResult<Py<PyAny>> {
        let inner = self.inner.clone();
        let service = block(py, async move { inner.service(&service_id.0).await })?;
        to_py(py, &service)
    }

    /// The instances of a service (its `instance_list`).
    fn instances(&self, py: Python<'_>, service_id: Id) -> PyResult<Py<PyAny>> {
        let inner = self.inner.clone();
        let service = block(py, async move { inner.service(&service_id.0).await })?;
        to_py(py, &service.instance_list)
    }

    /// Undeploys a service's instances and deletes it; returns the root's message.
    fn delete_service(&self, py: Python<'_>, service_id: Id) -> PyResult<String> {
        let inner = self.inner.clone();
        let answer = block(py, async move { inner.delete_service(&service_id.0).await })?;
        Ok(answer.message)
    }

    /// Deploys one more instance of a service; returns the new instance (with its
    /// `instance_number` and scheduling status). With `count`, deploys that many in one
    /// request (the root's batch path, `?count=N`, at most 10,000) and returns the list of
    /// new instances. Use `wait_for_status` to wait for RUNNING.
    #[pyo3(signature = (service_id, count = None))]
    fn deploy(&self, py: Python<'_>, service_id: Id, count: Option<u32>) -> PyResult<Py<PyAny>> {
        let inner = self.inner.clone();
        if let Some(count) = count {
            let instances = block(py, async move {
                inner.deploy_instances(&service_id.0, count).await
            })?;
            return to_py(py, &instances);
        }
        let answer = block(
            py,
            async move { inner.deploy_instance(&service_id.0).await },
        )?;
        match &answer.instance {
            Some(instance) => to_py(py, instance),
            None => to_py(py, &answer),
        }
    }

    /// Sets a service's desired number of instances (0 to 10,000); the root deploys or
    /// undeploys at once and keeps that many. Returns `{replicas, instances, deployed,
    /// removed}`.
    fn scale(&self, py: Python<'_>, service_id: Id, replicas: u32) -> PyResult<Py<PyAny>> {
        let inner = self.inner.clone();
        let answer = block(py, async move {
            inner.scale_service(&service_id.0, replicas).await
        })?;
        to_py(py, &answer)
    }

    /// Undeploys instance number `instance` of a service, or every instance when `None`;
    /// returns the root's message.
    #[pyo3(signature = (service_id, instance = None))]
    fn undeploy(&self, py: Python<'_>, service_id: Id, instance: Option<u32>) -> PyResult<String> {
        let inner = self.inner.clone();
        let answer = block(py, async move {
            inner.undeploy_instance(&service_id.0, instance).await
        })?;
        Ok(answer.message)
    }

    /// Polls a service until its instance `instance` (or, when `None`, every instance, and at
    /// least one) has `status`; returns the service. `UNDEPLOYED` is also reached when the
    /// instance is gone. Raises `DeployFailed` as soon as an instance shows one of `fail_on`,
    /// and `WaitTimeout` (naming each instance's last status and detail) after `timeout`
    /// seconds. The GIL is released while waiting, and Ctrl-C interrupts the wait.
    #[pyo3(signature = (service_id, status = "RUNNING", *, instance = None, timeout = 60.0, interval = 0.25, fail_on = Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn wait_for_status(
        &self,
        py: Python<'_>,
        service_id: Id,
        status: &str,
        instance: Option<u32>,
        timeout: f64,
        interval: f64,
        fail_on: Vec<String>,
    ) -> PyResult<Py<PyAny>> {
        let target: Status = status
            .parse()
            .map_err(|e| PyValueError::new_err(format!("status: {e}")))?;
        for s in &fail_on {
            s.parse::<Status>()
                .map_err(|e| PyValueError::new_err(format!("fail_on: {e}")))?;
        }
        let fail_on: HashSet<String> = fail_on.into_iter().collect();
        if !(timeout >= 0.0 && timeout.is_finite() && interval > 0.0 && interval.is_finite()) {
            return Err(PyValueError::new_err(
                "timeout must be >= 0 and interval > 0 seconds",
            ));
        }
        let deadline = Instant::now() + Duration::from_secs_f64(timeout);
        let interval = Duration::from_secs_f64(interval);
        loop {
            let inner = self.inner.clone();
            let id = service_id.0.clone();
            let service = block(py, async move { inner.service(&id).await })?;
            let watched: Vec<&InstanceRecord> = service
                .instance_list
                .iter()
                .filter(|i| instance.is_none_or(|n| i.instance_number == n))
                .collect();
            if let Some(failed) = watched.iter().find(|i| {
                i.status
                    .is_some_and(|s| s != target && fail_on.contains(s.as_str()))
            }) {
                return Err(deploy_failed(py, &service, failed));
            }
            let reached = if target
                == Status::Deployment(oakestra_core::status::DeploymentStatus::Undeployed)
            {
                watched.iter().all(|i| i.status == Some(target))
            } else {
                !watched.is_empty() && watched.iter().all(|i| i.status == Some(target))
            };
            if reached {
                return to_py(py, &service);
            }
            if Instant::now() >= deadline {
                return Err(wait_timeout(py, &service, instance, target, timeout));
            }
            pause(
                py,
                interval.min(deadline.saturating_duration_since(Instant::now())),
            )?;
        }
    }

    /// The log of instance `instance` of a service (its last `tail` lines), as text.
    /// With the fake runtime of `oak up` there is little to show; a 503 (instance not
    /// placed yet, cluster disconnected) raises `ApiError` with the reason.
    #[pyo3(signature = (service_id, instance = 0, *, tail = None))]
    fn logs(
        &self,
        py: Python<'_>,
        service_id: Id,
        instance: u32,
        tail: Option<u32>,
    ) -> PyResult<String> {
        let inner = self.inner.clone();
        block(py, async move {
            inner.logs(&service_id.0, instance, tail).await
        })
    }

    // ------------------------------------------------------------ events and usage

    /// Events (what happened to which object, and why), oldest first: the newest `limit`
    /// (default 100) matching every filter given. `since` is seconds since the epoch; `kind`
    /// one kind or several comma-separated (`placed,running,failed`).
    #[pyo3(signature = (*, service = None, application = None, cluster = None, kind = None, object = None, since = None, after = None, limit = None))]
    #[allow(clippy::too_many_arguments)]
    fn events(
        &self,
        py: Python<'_>,
        service: Option<Id>,
        application: Option<Id>,
        cluster: Option<String>,
        kind: Option<String>,
        object: Option<String>,
        since: Option<f64>,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> PyResult<Py<PyAny>> {
        let q = crate::events::query(
            service.map(|i| i.0),
            application.map(|i| i.0),
            cluster,
            kind,
            object,
            since,
            after,
            limit,
        );
        let inner = self.inner.clone();
        let events = block(py, async move { inner.events(&q).await })?;
        to_py(py, &events)
    }

    /// Like `events`, then every new event as it happens: an iterator of dicts that blocks
    /// (GIL released) until the next one.
    #[pyo3(signature = (*, service = None, application = None, cluster = None, kind = None, object = None, since = None, after = None, limit = None))]
    #[allow(clippy::too_many_arguments)]
    fn follow_events(
        &self,
        py: Python<'_>,
        service: Option<Id>,
        application: Option<Id>,
        cluster: Option<String>,
        kind: Option<String>,
        object: Option<String>,
        since: Option<f64>,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> PyResult<crate::events::EventIterator> {
        let q = crate::events::query(
            service.map(|i| i.0),
            application.map(|i| i.0),
            cluster,
            kind,
            object,
            since,
            after,
            limit,
        );
        let inner = self.inner.clone();
        let stream = block(py, async move { inner.follow_events(&q).await })?;
        Ok(crate::events::EventIterator::new(stream))
    }

    /// CPU and memory history of a service's instances (or of `instance`) between `since`
    /// and `until` (seconds since the epoch; default the last hour):
    /// `{"service_id", "since", "until", "step", "instances": [{"instance_number",
    /// "cpu_history": [{"value", "timestamp"}], "memory_history": [...]}]}`.
    #[pyo3(signature = (service_id, instance = None, *, since = None, until = None))]
    fn usage(
        &self,
        py: Python<'_>,
        service_id: Id,
        instance: Option<u32>,
        since: Option<u32>,
        until: Option<u32>,
    ) -> PyResult<Py<PyAny>> {
        let inner = self.inner.clone();
        let usage = block(py, async move {
            inner.usage(&service_id.0, instance, since, until).await
        })?;
        to_py(py, &usage)
    }

    // ------------------------------------------------------------ clusters and others

    /// The clusters the root knows (`active=True`: only those whose link is up). Needs no
    /// login.
    #[pyo3(signature = (active = false))]
    fn clusters(&self, py: Python<'_>, active: bool) -> PyResult<Py<PyAny>> {
        let inner = self.inner.clone();
        let clusters = block(py, async move {
            if active {
                inner.active_clusters().await
            } else {
                inner.clusters().await
            }
        })?;
        to_py(py, &clusters)
    }

    /// The root's `/health` answer.
    fn health(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let inner = self.inner.clone();
        let health = block(py, async move { inner.health().await })?;
        to_py(py, &health)
    }

    /// Any endpoint, authenticated: `method` (`GET`, `POST`, …), `path` (e.g.
    /// `/api/users`), an optional JSON body. Returns the decoded answer.
    #[pyo3(signature = (method, path, body = None))]
    fn call(
        &self,
        py: Python<'_>,
        method: &str,
        path: String,
        body: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| PyValueError::new_err(format!("{method:?} is not an HTTP method")))?;
        if !path.starts_with('/') {
            return Err(PyValueError::new_err(format!(
                "path {path:?} must start with '/', e.g. /api/users"
            )));
        }
        let body = body.map(to_value).transpose()?;
        let inner = self.inner.clone();
        let answer: Value = block(
            py,
            async move { inner.call(method, &path, body.as_ref()).await },
        )?;
        to_py(py, &answer)
    }
}

fn instance_summary(instance: &InstanceRecord) -> String {
    let status = instance.status.map_or("no status", Status::as_str);
    match instance.status_detail.as_deref().filter(|d| !d.is_empty()) {
        Some(detail) => format!("instance {}: {status} ({detail})", instance.instance_number),
        None => format!("instance {}: {status}", instance.instance_number),
    }
}

fn deploy_failed(py: Python<'_>, service: &ServiceRecord, instance: &InstanceRecord) -> PyErr {
    let status = instance.status.map_or("", Status::as_str);
    let detail = instance.status_detail.clone().unwrap_or_default();
    let message = format!(
        "service {} ({}) {}",
        service.id,
        service.job_name,
        instance_summary(instance)
    );
    let kwargs = || -> PyResult<Bound<'_, PyDict>> {
        let kwargs = PyDict::new(py);
        kwargs.set_item("service_id", service.id.to_string())?;
        kwargs.set_item("instance", instance.instance_number)?;
        kwargs.set_item("status", status)?;
        kwargs.set_item("detail", detail)?;
        Ok(kwargs)
    };
    match kwargs() {
        Ok(kwargs) => raise(py, "DeployFailed", (message,), Some(&kwargs)),
        Err(e) => e,
    }
}

fn wait_timeout(
    py: Python<'_>,
    service: &ServiceRecord,
    instance: Option<u32>,
    target: Status,
    timeout: f64,
) -> PyErr {
    let watched: Vec<String> = service
        .instance_list
        .iter()
        .filter(|i| instance.is_none_or(|n| i.instance_number == n))
        .map(instance_summary)
        .collect();
    let now = if watched.is_empty() {
        match instance {
            Some(n) => format!("instance {n} does not exist"),
            None => "the service has no instances (deploy one first)".to_owned(),
        }
    } else {
        watched.join("; ")
    };
    let message = format!(
        "service {} ({}) did not reach {target} within {timeout} s: {now}",
        service.id, service.job_name
    );
    let kwargs = || -> PyResult<Bound<'_, PyDict>> {
        let kwargs = PyDict::new(py);
        kwargs.set_item("service_id", service.id.to_string())?;
        kwargs.set_item("status", target.as_str())?;
        kwargs.set_item("service", to_py(py, service)?)?;
        Ok(kwargs)
    };
    match kwargs() {
        Ok(kwargs) => raise(py, "WaitTimeout", (message,), Some(&kwargs)),
        Err(e) => e,
    }
}
