//! `oakestra.sched`: `oakestra-sched`'s candidates, requests and placements as Python classes,
//! the built-in schedulers, batch simulation, and Python functions as schedulers (in a
//! simulation, or behind `oakestra.sched.serve` as a cluster's external scheduler).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Instant;

use oakestra_sched::{
    Algorithm, Candidate, Level, NegativeSchedulingStatus, NoPlacement, Placement, PlacementInput,
    PlacementRequest, Scheduler,
};
use pyo3::exceptions::{PyAttributeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::convert::{python_str, to_py, to_value};
use crate::errors::raise;

/// A serde struct shown to Python as a class whose attributes are its JSON fields.
trait Record: Serialize + DeserializeOwned + Clone {
    /// The Python class name.
    const NAME: &'static str;
    /// The field a single positional constructor argument sets (`""`: none).
    const POSITIONAL: &'static str;
    /// The value of a record built with no fields.
    fn empty() -> Self;
}

impl Record for Candidate {
    const NAME: &'static str = "Candidate";
    const POSITIONAL: &'static str = "name";
    fn empty() -> Self {
        Candidate::default()
    }
}

impl Record for PlacementRequest {
    const NAME: &'static str = "PlacementRequest";
    const POSITIONAL: &'static str = "";
    fn empty() -> Self {
        PlacementRequest::default()
    }
}

impl Record for Placement {
    const NAME: &'static str = "Placement";
    const POSITIONAL: &'static str = "candidate";
    fn empty() -> Self {
        Placement {
            candidate: String::new(),
            index: None,
            expected_latency_ms: None,
            distance_km: None,
        }
    }
}

fn fields_of<T: Record>(record: &T) -> PyResult<Map<String, Value>> {
    match serde_json::to_value(record) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(PyTypeError::new_err(format!(
            "{} is not an object",
            T::NAME
        ))),
        Err(e) => Err(PyValueError::new_err(e.to_string())),
    }
}

fn from_fields<T: Record>(fields: Map<String, Value>) -> Result<T, String> {
    serde_json::from_value(Value::Object(fields)).map_err(|e| e.to_string())
}

/// `record` with `changes` applied, each checked on its own so that an error names the field.
/// Unknown fields are a `TypeError` listing the known ones.
fn with_changes<T: Record>(record: &T, changes: &[(String, Bound<'_, PyAny>)]) -> PyResult<T> {
    let mut fields = fields_of(record)?;
    for (key, value) in changes {
        if !fields.contains_key(key) {
            let known: Vec<&str> = fields.keys().map(String::as_str).collect();
            return Err(PyTypeError::new_err(format!(
                "{} has no field {key:?}; its fields are {}",
                T::NAME,
                known.join(", ")
            )));
        }
        let value =
            to_value(value).map_err(|e| PyTypeError::new_err(format!("{}.{key}: {e}", T::NAME)))?;
        let mut trial = fields.clone();
        trial.insert(key.clone(), value.clone());
        let parsed = from_fields::<T>(trial)
            .map_err(|e| PyValueError::new_err(format!("{}.{key}: {e}", T::NAME)))?;
        let known = fields_of(&parsed)?;
        if let Some(known) = known.get(key)
            && let Some(path) = unknown_key(&value, known, &format!("{}.{key}", T::NAME))
        {
            return Err(unknown_key_error(&path));
        }
        fields.insert(key.clone(), value);
    }
    from_fields(fields).map_err(|e| PyValueError::new_err(format!("{}: {e}", T::NAME)))
}

fn kwargs_list<'py>(
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
    kwargs
        .map(|d| {
            d.iter()
                .map(|(k, v)| Ok((k.extract::<String>()?, v)))
                .collect::<PyResult<Vec<_>>>()
        })
        .transpose()
        .map(Option::unwrap_or_default)
}

/// Builds a record from a dict. `strict`: unknown keys are an error (catches typos); else
/// they are ignored (a newer orchestrator may send more fields).
fn record_from_dict<T: Record>(data: &Bound<'_, PyAny>, strict: bool) -> PyResult<T> {
    let value = to_value(data)?;
    let Value::Object(map) = value else {
        return Err(PyTypeError::new_err(format!(
            "{} data must be a dict, not {}",
            T::NAME,
            data.get_type().name()?
        )));
    };
    if strict {
        let known = fields_of(&T::empty())?;
        if let Some(key) = map.keys().find(|k| !known.contains_key(*k)) {
            let names: Vec<&str> = known.keys().map(String::as_str).collect();
            return Err(PyTypeError::new_err(format!(
                "{} has no field {key:?}; its fields are {}",
                T::NAME,
                names.join(", ")
            )));
        }
    }
    let input = Value::Object(map.clone());
    let record: T =
        from_fields(map).map_err(|e| PyValueError::new_err(format!("{}: {e}", T::NAME)))?;
    if strict && let Some(path) = unknown_key(&input, &Value::Object(fields_of(&record)?), T::NAME)
    {
        return Err(unknown_key_error(&path));
    }
    Ok(record)
}

/// The first key of `input` (at any depth) that the parsed record does not have: a typo such
/// as `constraints={"node": [...]}` that serde would otherwise drop without a word. Every field
/// is always serialised, so the record's JSON lists every known key; map fields (`rtt_ms`)
/// keep the user's keys and never count as unknown.
fn unknown_key(input: &Value, known: &Value, path: &str) -> Option<String> {
    match (input, known) {
        (Value::Object(given), Value::Object(known)) => given.iter().find_map(|(key, value)| {
            let path = format!("{path}.{key}");
            match known.get(key) {
                None => Some(path),
                Some(known) => unknown_key(value, known, &path),
            }
        }),
        (Value::Array(given), Value::Array(known)) => given
            .iter()
            .zip(known)
            .enumerate()
            .find_map(|(i, (value, known))| unknown_key(value, known, &format!("{path}[{i}]"))),
        _ => None,
    }
}

fn unknown_key_error(path: &str) -> PyErr {
    PyTypeError::new_err(format!(
        "{path} is not a field (see the JSON shapes in oakestra-sched/README.md)"
    ))
}

/// `Name(field=value, …)` with the fields that differ from an empty record.
fn record_repr<T: Record>(record: &T) -> String {
    let empty = fields_of(&T::empty()).unwrap_or_default();
    let fields = fields_of(record).unwrap_or_default();
    let shown: Vec<String> = fields
        .iter()
        .filter(|(k, v)| empty.get(*k) != Some(*v) || k.as_str() == T::POSITIONAL)
        .map(|(k, v)| format!("{k}={}", python_literal(v)))
        .collect();
    format!("{}({})", T::NAME, shown.join(", "))
}

fn python_literal(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::String(s) => python_str(s),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(python_literal)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", python_str(k), python_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Number(n) => n.to_string(),
    }
}

/// Generates a Python class around a [`Record`]: keyword constructor (one positional for
/// `POSITIONAL`), attribute access and assignment by field name, `from_dict`, `to_dict`,
/// `replace`, `==` and a readable `repr`.
macro_rules! record_class {
    ($class:ident, $inner:ty, $pyname:literal, $doc:literal) => {
        #[doc = $doc]
        #[pyclass(module = "oakestra.sched", name = $pyname, eq)]
        #[derive(Debug, Clone, PartialEq)]
        pub struct $class {
            pub inner: $inner,
        }

        #[pymethods]
        impl $class {
            #[new]
            #[pyo3(signature = (*args, **fields))]
            fn new(
                args: Vec<Bound<'_, PyAny>>,
                fields: Option<&Bound<'_, PyDict>>,
            ) -> PyResult<Self> {
                let mut changes = kwargs_list(fields)?;
                let positional = <$inner as Record>::POSITIONAL;
                match (args.len(), positional) {
                    (0, _) => {}
                    (1, p) if !p.is_empty() => {
                        if changes.iter().any(|(k, _)| k == p) {
                            return Err(PyTypeError::new_err(format!(
                                "{}() got {p:?} twice",
                                <$inner as Record>::NAME
                            )));
                        }
                        changes.insert(0, (p.to_owned(), args[0].clone()));
                    }
                    (n, _) => {
                        return Err(PyTypeError::new_err(format!(
                            "{}() takes {} positional argument(s), {n} given; pass fields by keyword",
                            <$inner as Record>::NAME,
                            usize::from(!positional.is_empty())
                        )));
                    }
                }
                if !positional.is_empty() {
                    let given = changes.iter().find(|(k, _)| k == positional);
                    let ok = match given {
                        Some((_, v)) => v.extract::<String>().is_ok_and(|s| !s.is_empty()),
                        None => false,
                    };
                    if !ok {
                        return Err(PyTypeError::new_err(format!(
                            "{}() needs {positional:?}, a non-empty string",
                            <$inner as Record>::NAME
                        )));
                    }
                }
                Ok($class {
                    inner: with_changes(&<$inner as Record>::empty(), &changes)?,
                })
            }

            /// Builds one from a dict of fields (the JSON shape). `strict=False` ignores unknown
            /// keys instead of raising `TypeError`.
            #[staticmethod]
            #[pyo3(signature = (data, *, strict = true))]
            fn from_dict(data: &Bound<'_, PyAny>, strict: bool) -> PyResult<Self> {
                Ok($class {
                    inner: record_from_dict(data, strict)?,
                })
            }

            /// Every field as a dict (the JSON shape external schedulers exchange).
            fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
                to_py(py, &self.inner)
            }

            /// A copy with some fields changed.
            #[pyo3(signature = (**changes))]
            fn replace(&self, changes: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
                Ok($class {
                    inner: with_changes(&self.inner, &kwargs_list(changes)?)?,
                })
            }

            fn __getattr__(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
                let fields = fields_of(&self.inner)?;
                match fields.get(name) {
                    Some(value) => to_py(py, value),
                    None => Err(PyAttributeError::new_err(format!(
                        "{} has no attribute {name:?}",
                        <$inner as Record>::NAME
                    ))),
                }
            }

            fn __setattr__(&mut self, name: String, value: Bound<'_, PyAny>) -> PyResult<()> {
                self.inner = with_changes(&self.inner, &[(name, value)])?;
                Ok(())
            }

            fn __dir__(&self) -> PyResult<Vec<String>> {
                let mut names: Vec<String> = fields_of(&self.inner)?.keys().cloned().collect();
                names.extend(["from_dict", "to_dict", "replace"].map(String::from));
                Ok(names)
            }

            fn __repr__(&self) -> String {
                record_repr(&self.inner)
            }
        }
    };
}

record_class!(
    PyCandidate,
    Candidate,
    "Candidate",
    "Something an instance can be placed on: a worker, or a cluster with aggregated resources."
);
record_class!(
    PyPlacementRequest,
    PlacementRequest,
    "PlacementRequest",
    "What to place: one instance of a service, with its resources and constraints."
);
record_class!(
    PyPlacement,
    Placement,
    "Placement",
    "A scheduler's choice: the candidate's name, and what it expects of it."
);

/// A request from a `PlacementRequest` or a dict.
fn extract_request(obj: &Bound<'_, PyAny>) -> PyResult<PlacementRequest> {
    match obj.cast::<PyPlacementRequest>() {
        Ok(request) => Ok(request.borrow().inner.clone()),
        Err(_) => record_from_dict(obj, true),
    }
}

/// Candidates from an iterable of `Candidate`s or dicts.
fn extract_candidates(obj: &Bound<'_, PyAny>) -> PyResult<Vec<Candidate>> {
    obj.try_iter()?
        .map(|item| {
            let item = item?;
            match item.cast::<PyCandidate>() {
                Ok(c) => Ok(c.borrow().inner.clone()),
                Err(_) => record_from_dict(&item, true),
            }
        })
        .collect()
}

fn extract_requests(obj: &Bound<'_, PyAny>) -> PyResult<Vec<PlacementRequest>> {
    if obj.cast::<PyPlacementRequest>().is_ok() || obj.is_instance_of::<PyDict>() {
        return Err(PyTypeError::new_err(
            "requests must be a list of PlacementRequests (or dicts), not a single one",
        ));
    }
    obj.try_iter()?
        .map(|item| extract_request(&item?))
        .collect()
}

/// The status a scheduler that declines uses by default at this level.
fn default_refusal(level: Level) -> NegativeSchedulingStatus {
    match level {
        Level::Root => NegativeSchedulingStatus::NoActiveClusterWithCapacity,
        Level::Cluster => NegativeSchedulingStatus::NoWorkerCapacity,
    }
}

fn no_placement_error(py: Python<'_>, failure: &NoPlacement) -> PyErr {
    raise(
        py,
        "NoPlacementError",
        (failure.status.as_str(), failure.detail.as_str()),
        None,
    )
}

/// The name under which a Python scheduler function is reported.
fn function_name(func: &Bound<'_, PyAny>) -> String {
    func.getattr("__name__")
        .and_then(|n| n.extract::<String>())
        .unwrap_or_else(|_| "python".to_owned())
}

/// Calls a Python scheduler `func(request, candidates)` and reads its answer: a candidate name,
/// a `Candidate`, an index into the candidates, a `Placement`, a dict (`{"candidate": …}` or
/// `{"status": …, "detail": …}`), or `None` to decline; raising `NoPlacementError` declines
/// with its status and detail. Any other exception is returned as the outer error.
fn call_python_scheduler(
    func: &Bound<'_, PyAny>,
    request: &PlacementRequest,
    candidates: &[Candidate],
) -> PyResult<Result<Placement, NoPlacement>> {
    let py = func.py();
    let name = function_name(func);
    let request_obj = Bound::new(
        py,
        PyPlacementRequest {
            inner: request.clone(),
        },
    )?;
    let candidate_objs = candidates
        .iter()
        .map(|c| Bound::new(py, PyCandidate { inner: c.clone() }))
        .collect::<PyResult<Vec<_>>>()?;
    let answer = match func.call1((request_obj, PyList::new(py, candidate_objs)?)) {
        Ok(answer) => answer,
        Err(e) => {
            let declined = py.import("oakestra.errors")?.getattr("NoPlacementError")?;
            if e.is_instance(py, &declined) {
                let value = e.value(py);
                let status: String = value.getattr("status")?.extract()?;
                let detail: String = value.getattr("detail")?.extract()?;
                return Ok(Err(NoPlacement {
                    status: parse_negative(&status)?,
                    detail,
                }));
            }
            return Err(e);
        }
    };
    let by_name = |name: String| {
        let index = candidates.iter().position(|c| c.name == name);
        Placement {
            candidate: name,
            index,
            expected_latency_ms: None,
            distance_km: None,
        }
    };
    if answer.is_none() {
        return Ok(Err(NoPlacement {
            status: default_refusal(request.level),
            detail: format!("scheduler {name} chose no candidate"),
        }));
    }
    if let Ok(text) = answer.cast::<PyString>() {
        return Ok(Ok(by_name(text.to_str()?.to_owned())));
    }
    if let Ok(candidate) = answer.cast::<PyCandidate>() {
        return Ok(Ok(by_name(candidate.borrow().inner.name.clone())));
    }
    if let Ok(placement) = answer.cast::<PyPlacement>() {
        return Ok(Ok(placement.borrow().inner.clone()));
    }
    if answer.is_instance_of::<pyo3::types::PyInt>()
        && !answer.is_instance_of::<pyo3::types::PyBool>()
    {
        let index: i64 = answer.extract()?;
        let candidate = usize::try_from(index)
            .ok()
            .and_then(|i| candidates.get(i))
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "scheduler {name} returned index {index}, but there are {} candidates",
                    candidates.len()
                ))
            })?;
        return Ok(Ok(by_name(candidate.name.clone())));
    }
    if answer.is_instance_of::<PyDict>() {
        let value = to_value(&answer)?;
        if value.get("candidate").is_some() {
            return serde_json::from_value(value)
                .map(Ok)
                .map_err(|e| PyValueError::new_err(format!("scheduler {name}: placement: {e}")));
        }
        if value.get("status").is_some() {
            return serde_json::from_value(value)
                .map(Err)
                .map_err(|e| PyValueError::new_err(format!("scheduler {name}: refusal: {e}")));
        }
        return Err(PyValueError::new_err(format!(
            "scheduler {name} returned a dict with neither \"candidate\" nor \"status\""
        )));
    }
    Err(PyTypeError::new_err(format!(
        "scheduler {name} returned {}; expected a candidate name, Candidate, index, Placement, \
         dict or None",
        answer.get_type().name()?
    )))
}

fn parse_negative(status: &str) -> PyResult<NegativeSchedulingStatus> {
    status
        .parse()
        .map_err(|e| PyValueError::new_err(format!("NoPlacementError status: {e}")))
}

/// A Python function as an `oakestra_sched::Scheduler`. The first exception it raises is kept
/// and stops the batch (every later call declines at once).
struct PythonScheduler<'py> {
    func: Bound<'py, PyAny>,
    name: String,
    error: RefCell<Option<PyErr>>,
}

impl Scheduler for PythonScheduler<'_> {
    fn name(&self) -> &str {
        &self.name
    }

    fn place(
        &self,
        request: &PlacementRequest,
        candidates: &[Candidate],
    ) -> Result<Placement, NoPlacement> {
        let aborted = || NoPlacement {
            status: default_refusal(request.level),
            detail: format!("scheduler {} raised an exception", self.name),
        };
        if self.error.borrow().is_some() {
            return Err(aborted());
        }
        match call_python_scheduler(&self.func, request, candidates) {
            Ok(answer) => answer,
            Err(e) => {
                *self.error.borrow_mut() = Some(e);
                Err(aborted())
            }
        }
    }
}

/// One scheduler given to `place`/`simulate`: a built-in name or a Python function.
enum Choice<'py> {
    Builtin(Algorithm),
    Python(Bound<'py, PyAny>),
}

impl<'py> Choice<'py> {
    fn extract(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(name) = obj.extract::<String>() {
            return name.parse().map(Choice::Builtin).map_err(
                |e: oakestra_sched::UnknownAlgorithm| PyValueError::new_err(e.to_string()),
            );
        }
        if obj.is_callable() {
            return Ok(Choice::Python(obj.clone()));
        }
        Err(PyTypeError::new_err(format!(
            "a scheduler is a name (first_fit, best_fit, least_loaded, ldp) or a function \
             f(request, candidates), not {}",
            obj.get_type().name()?
        )))
    }

    fn name(&self) -> String {
        match self {
            Choice::Builtin(a) => a.as_str().to_owned(),
            Choice::Python(f) => function_name(f),
        }
    }
}

/// Places one instance: the chosen `Placement`, or `NoPlacementError` (with Oakestra's
/// negative status and a detail naming what excluded how many candidates).
#[pyfunction]
#[pyo3(signature = (request, candidates, scheduler = None))]
fn place(
    py: Python<'_>,
    request: &Bound<'_, PyAny>,
    candidates: &Bound<'_, PyAny>,
    scheduler: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyPlacement> {
    let request = extract_request(request)?;
    let candidates = extract_candidates(candidates)?;
    let choice = match scheduler {
        Some(s) => Choice::extract(s)?,
        None => Choice::Builtin(Algorithm::BestFit),
    };
    let result = match &choice {
        Choice::Builtin(algorithm) => py.detach(|| algorithm.place(&request, &candidates)),
        // Checked as the cluster checks an external scheduler's answer.
        Choice::Python(func) => call_python_scheduler(func, &request, &candidates)?.and_then(|p| {
            match oakestra_sched::validate(&request, &candidates, &p) {
                Ok(index) => Ok(Placement {
                    index: Some(index),
                    ..p
                }),
                Err(why) => {
                    let mut failure = oakestra_sched::diagnose(&request, &candidates);
                    failure.detail = format!(
                        "scheduler {} {why}; {}",
                        function_name(func),
                        failure.detail
                    );
                    Err(failure)
                }
            }
        }),
    };
    result
        .map(|inner| PyPlacement { inner })
        .map_err(|failure| no_placement_error(py, &failure))
}

/// A cluster as the root sees it: one candidate whose resources aggregate those of `workers`
/// (for root-level placement, `PlacementRequest(level="root")`).
#[pyfunction]
fn cluster_of(name: String, workers: &Bound<'_, PyAny>) -> PyResult<PyCandidate> {
    let workers = extract_candidates(workers)?;
    Ok(PyCandidate {
        inner: Candidate::cluster_of(name, &workers),
    })
}

/// Why one request of a simulation was not placed.
#[pyclass(module = "oakestra.sched", frozen, get_all)]
#[derive(Debug, Clone)]
pub struct Failure {
    /// Position of the request in the simulated list.
    index: usize,
    /// Oakestra's negative scheduling status.
    status: String,
    /// Which constraint excluded how many candidates.
    detail: String,
}

#[pymethods]
impl Failure {
    fn __repr__(&self) -> String {
        format!(
            "Failure(index={}, status={}, detail={})",
            self.index,
            python_str(&self.status),
            python_str(&self.detail)
        )
    }
}

/// One scheduler's run over a list of requests.
#[pyclass(module = "oakestra.sched", frozen, get_all)]
#[derive(Debug)]
pub struct Simulation {
    /// The scheduler's name.
    scheduler: String,
    /// One entry per request: its `Placement`, or `None` when it failed.
    placements: Py<PyList>,
    /// The requests that were not placed.
    failures: Py<PyList>,
    /// How many requests were placed.
    placed: usize,
    /// How many were not.
    failed: usize,
    /// Wall-clock seconds the scheduler took for the whole list.
    seconds: f64,
    /// The candidates after every placement took its resources.
    candidates: Py<PyList>,
    /// Instances placed per candidate name (every candidate listed, 0 included).
    counts: Py<PyDict>,
}

#[pymethods]
impl Simulation {
    fn __repr__(&self) -> String {
        format!(
            "Simulation(scheduler={}, placed={}, failed={}, seconds={:.6})",
            python_str(&self.scheduler),
            self.placed,
            self.failed,
            self.seconds
        )
    }
}

/// Runs each scheduler over the same requests on its own copy of the candidates, committing
/// every placement's resources before the next request (capacity runs out as it would in a
/// cluster). A failure does not stop the run. Returns `{scheduler name: Simulation}`.
#[pyfunction]
#[pyo3(signature = (requests, candidates, schedulers = None))]
fn simulate<'py>(
    py: Python<'py>,
    requests: &Bound<'py, PyAny>,
    candidates: &Bound<'py, PyAny>,
    schedulers: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let requests = extract_requests(requests)?;
    let candidates = extract_candidates(candidates)?;
    let choices: Vec<Choice<'py>> = match schedulers {
        Some(list) => {
            if list.is_instance_of::<PyString>() || list.is_callable() {
                vec![Choice::extract(list)?]
            } else {
                list.try_iter()?
                    .map(|s| Choice::extract(&s?))
                    .collect::<PyResult<_>>()?
            }
        }
        None => Algorithm::ALL.into_iter().map(Choice::Builtin).collect(),
    };
    let out = PyDict::new(py);
    for choice in choices {
        let mut name = choice.name();
        let mut n = 2;
        while out.contains(&name)? {
            name = format!("{}#{n}", choice.name());
            n += 1;
        }
        let mut state = candidates.clone();
        let (results, seconds) = match &choice {
            Choice::Builtin(algorithm) => py.detach(|| {
                let start = Instant::now();
                let results = oakestra_sched::place_each(algorithm, &requests, &mut state);
                (results, start.elapsed().as_secs_f64())
            }),
            Choice::Python(func) => {
                let scheduler = PythonScheduler {
                    func: func.clone(),
                    name: name.clone(),
                    error: RefCell::new(None),
                };
                let start = Instant::now();
                let results = oakestra_sched::place_each(&scheduler, &requests, &mut state);
                let seconds = start.elapsed().as_secs_f64();
                if let Some(e) = scheduler.error.into_inner() {
                    return Err(e);
                }
                (results, seconds)
            }
        };
        out.set_item(
            &name,
            simulation(py, name.clone(), &results, seconds, state)?,
        )?;
    }
    Ok(out)
}

fn simulation(
    py: Python<'_>,
    scheduler: String,
    results: &[Result<Placement, NoPlacement>],
    seconds: f64,
    state: Vec<Candidate>,
) -> PyResult<Simulation> {
    let placements = PyList::empty(py);
    let failures = PyList::empty(py);
    let mut counts: BTreeMap<&str, usize> = state.iter().map(|c| (c.name.as_str(), 0)).collect();
    for (index, result) in results.iter().enumerate() {
        match result {
            Ok(p) => {
                *counts.entry(p.candidate.as_str()).or_default() += 1;
                placements.append(Bound::new(py, PyPlacement { inner: p.clone() })?)?;
            }
            Err(no) => {
                placements.append(py.None())?;
                failures.append(Failure {
                    index,
                    status: no.status.as_str().to_owned(),
                    detail: no.detail.clone(),
                })?;
            }
        }
    }
    let count_dict = PyDict::new(py);
    for (name, count) in &counts {
        count_dict.set_item(*name, *count)?;
    }
    let placed = results.iter().filter(|r| r.is_ok()).count();
    let candidates = state
        .into_iter()
        .map(|inner| Bound::new(py, PyCandidate { inner }))
        .collect::<PyResult<Vec<_>>>()?;
    Ok(Simulation {
        scheduler,
        placements: placements.unbind(),
        failures: failures.unbind(),
        placed,
        failed: results.len() - placed,
        seconds,
        candidates: PyList::new(py, candidates)?.unbind(),
        counts: count_dict.unbind(),
    })
}

/// The external-scheduler exchange for `oakestra.sched.serve`: reads the cluster's JSON
/// `PlacementInput`, calls `func`, and returns `(http_status, answer_json, placement_or_none)`.
/// The answer is `{"candidate": …}` or `{"status": …, "detail": …}`; malformed input answers
/// 400 and an exception in `func` answers 500, both with a refusal the cluster understands.
#[pyfunction]
fn external_answer<'py>(
    py: Python<'py>,
    func: &Bound<'py, PyAny>,
    body: &[u8],
) -> PyResult<(u16, String, Py<PyAny>)> {
    let refusal = |status: NegativeSchedulingStatus, detail: String| {
        serde_json::to_string(&NoPlacement { status, detail }).unwrap_or_default()
    };
    let input: PlacementInput = match serde_json::from_slice(body) {
        Ok(input) => input,
        Err(e) => {
            return Ok((
                400,
                refusal(
                    NegativeSchedulingStatus::NoWorkerCapacity,
                    format!("the external scheduler could not read the request: {e}"),
                ),
                py.None(),
            ));
        }
    };
    match call_python_scheduler(func, &input.request, &input.candidates) {
        Ok(Ok(placement)) => {
            let json = serde_json::to_string(&placement)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            let obj = Bound::new(py, PyPlacement { inner: placement })?;
            Ok((200, json, obj.into_any().unbind()))
        }
        Ok(Err(no)) => {
            let json =
                serde_json::to_string(&no).map_err(|e| PyValueError::new_err(e.to_string()))?;
            Ok((200, json, py.None()))
        }
        Err(e) => {
            let detail = format!("scheduler {} raised {e}", function_name(func));
            e.print(py);
            Ok((
                500,
                refusal(default_refusal(input.request.level), detail),
                py.None(),
            ))
        }
    }
}

/// Parses the JSON the cluster sends an external scheduler into `(PlacementRequest,
/// [Candidate])` (unknown fields ignored).
#[pyfunction]
fn parse_input(py: Python<'_>, body: &[u8]) -> PyResult<(PyPlacementRequest, Py<PyList>)> {
    let input: PlacementInput = serde_json::from_slice(body)
        .map_err(|e| PyValueError::new_err(format!("not a placement input: {e}")))?;
    let candidates = input
        .candidates
        .into_iter()
        .map(|inner| Bound::new(py, PyCandidate { inner }))
        .collect::<PyResult<Vec<_>>>()?;
    Ok((
        PyPlacementRequest {
            inner: input.request,
        },
        PyList::new(py, candidates)?.unbind(),
    ))
}

/// Adds the scheduling classes and functions to the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCandidate>()?;
    m.add_class::<PyPlacementRequest>()?;
    m.add_class::<PyPlacement>()?;
    m.add_class::<Failure>()?;
    m.add_class::<Simulation>()?;
    m.add_function(wrap_pyfunction!(place, m)?)?;
    m.add_function(wrap_pyfunction!(simulate, m)?)?;
    m.add_function(wrap_pyfunction!(cluster_of, m)?)?;
    m.add_function(wrap_pyfunction!(external_answer, m)?)?;
    m.add_function(wrap_pyfunction!(parse_input, m)?)?;
    let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
    m.add("SCHEDULERS", names)?;
    Ok(())
}
