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

mod records;

use records::{
    PyCandidate, PyPlacement, PyPlacementRequest, extract_candidates, extract_request,
    extract_requests,
};

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
