//! `oakestra-sched`'s records (candidates, requests, placements) as Python classes whose
//! attributes are their JSON fields, and their extraction from Python arguments.

use super::*;

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
pub(super) fn extract_request(obj: &Bound<'_, PyAny>) -> PyResult<PlacementRequest> {
    match obj.cast::<PyPlacementRequest>() {
        Ok(request) => Ok(request.borrow().inner.clone()),
        Err(_) => record_from_dict(obj, true),
    }
}

/// Candidates from an iterable of `Candidate`s or dicts.
pub(super) fn extract_candidates(obj: &Bound<'_, PyAny>) -> PyResult<Vec<Candidate>> {
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

pub(super) fn extract_requests(obj: &Bound<'_, PyAny>) -> PyResult<Vec<PlacementRequest>> {
    if obj.cast::<PyPlacementRequest>().is_ok() || obj.is_instance_of::<PyDict>() {
        return Err(PyTypeError::new_err(
            "requests must be a list of PlacementRequests (or dicts), not a single one",
        ));
    }
    obj.try_iter()?
        .map(|item| extract_request(&item?))
        .collect()
}
