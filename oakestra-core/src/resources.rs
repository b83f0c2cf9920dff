//! Resources and identity of workers and clusters.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::{ClusterId, WorkerId};

/// A point on Earth, optionally with a radius: Oakestra's `"LAT,LON[,RADIUS]"` string.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoLocation {
    /// Degrees north, -90..=90.
    pub latitude: f64,
    /// Degrees east, -180..=180.
    pub longitude: f64,
    /// Radius of the area in km, if given.
    pub radius_km: Option<f64>,
}

/// A string that is not `"LAT,LON[,RADIUS]"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a location: expected \"LAT,LON\" or \"LAT,LON,RADIUS_KM\" with latitude -90..90 and longitude -180..180, e.g. \"48.26,11.67\""
)]
pub struct GeoLocationError(pub String);

impl GeoLocation {
    /// Great-circle distance in km (haversine, mean Earth radius 6371 km).
    pub fn distance_km(&self, other: &GeoLocation) -> f64 {
        const R: f64 = 6371.0;
        let (la1, la2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dla = la2 - la1;
        let dlo = (other.longitude - self.longitude).to_radians();
        let a = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
        2.0 * R * a.sqrt().min(1.0).asin()
    }
}

impl FromStr for GeoLocation {
    type Err = GeoLocationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || GeoLocationError(s.to_owned());
        let parts: Vec<f64> = s
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| err())?;
        let (latitude, longitude, radius_km) = match parts.as_slice() {
            [la, lo] => (*la, *lo, None),
            [la, lo, r] => (*la, *lo, Some(*r)),
            _ => return Err(err()),
        };
        let ok = (-90.0..=90.0).contains(&latitude)
            && (-180.0..=180.0).contains(&longitude)
            && radius_km.is_none_or(|r| r >= 0.0 && r.is_finite());
        if !ok {
            return Err(err());
        }
        Ok(Self {
            latitude,
            longitude,
            radius_km,
        })
    }
}

impl fmt::Display for GeoLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.latitude, self.longitude)?;
        if let Some(r) = self.radius_km {
            write!(f, ",{r}")?;
        }
        Ok(())
    }
}

impl Serialize for GeoLocation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GeoLocation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A CSI driver a worker offers. Oakestra sends either a bare name or
/// `{"csi_driver_name", "csi_driver_endpoint"}`; both are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CsiDriver {
    /// Driver name (what volumes refer to).
    pub csi_driver_name: String,
    /// Socket endpoint on the worker.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub csi_driver_endpoint: String,
}

impl<'de> Deserialize<'de> for CsiDriver {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Name(String),
            Full {
                csi_driver_name: String,
                #[serde(default)]
                csi_driver_endpoint: String,
            },
        }
        Ok(match Repr::deserialize(deserializer)? {
            Repr::Name(csi_driver_name) => CsiDriver {
                csi_driver_name,
                csi_driver_endpoint: String::new(),
            },
            Repr::Full {
                csi_driver_name,
                csi_driver_endpoint,
            } => CsiDriver {
                csi_driver_name,
                csi_driver_endpoint,
            },
        })
    }
}

/// What one worker offers, in our units.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerResources {
    /// Logical CPU cores.
    pub cpu_cores: u32,
    /// Current CPU use, 0-100.
    pub cpu_percent: f64,
    /// Total memory in MB.
    pub memory_total_mb: u64,
    /// Available memory in MB.
    pub memory_free_mb: u64,
    /// GPUs.
    pub gpus: u32,
    /// GPU driver names.
    pub gpu_drivers: Vec<String>,
    /// Total GPU memory in MB.
    pub vram_mb: u64,
    /// Runtimes the worker runs (`docker`, `unikernel`, …).
    pub virtualizations: Vec<String>,
    /// CPU architecture (Go's GOARCH names: `amd64`, `arm64`, …).
    pub arch: String,
    /// CSI drivers.
    pub csi_drivers: Vec<CsiDriver>,
    /// Addons the worker supports.
    pub supported_addons: Vec<String>,
    /// Where the worker is, if known.
    pub geo: Option<GeoLocation>,
}

/// Sums over a set of workers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceTotals {
    /// Workers counted.
    pub workers: u32,
    /// Sum of cores.
    pub cpu_cores: u64,
    /// Mean CPU use of the workers that report a non-zero value (0 if none).
    pub cpu_percent: f64,
    /// Sum of total memory (MB).
    pub memory_total_mb: u64,
    /// Sum of available memory (MB).
    pub memory_free_mb: u64,
    /// Sum of GPUs.
    pub gpus: u64,
    /// Most cores on a single worker: an instance cannot span workers.
    pub max_worker_cpu_cores: u32,
    /// Most available memory on a single worker (MB).
    pub max_worker_memory_free_mb: u64,
}

impl ResourceTotals {
    fn add(&mut self, w: &WorkerResources, nonzero_cpu: &mut (f64, u32)) {
        self.workers += 1;
        self.cpu_cores += u64::from(w.cpu_cores);
        self.memory_total_mb = self.memory_total_mb.saturating_add(w.memory_total_mb);
        self.memory_free_mb = self.memory_free_mb.saturating_add(w.memory_free_mb);
        self.gpus += u64::from(w.gpus);
        self.max_worker_cpu_cores = self.max_worker_cpu_cores.max(w.cpu_cores);
        self.max_worker_memory_free_mb = self.max_worker_memory_free_mb.max(w.memory_free_mb);
        if w.cpu_percent > 0.0 {
            nonzero_cpu.0 += w.cpu_percent;
            nonzero_cpu.1 += 1;
        }
        self.cpu_percent = if nonzero_cpu.1 == 0 {
            0.0
        } else {
            nonzero_cpu.0 / f64::from(nonzero_cpu.1)
        };
    }
}

/// What a cluster offers: the aggregate of its active workers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterResources {
    /// Totals over all active workers.
    #[serde(flatten)]
    pub totals: ResourceTotals,
    /// Union of runtimes, sorted, no duplicates.
    pub virtualizations: Vec<String>,
    /// Union of architectures, sorted.
    pub archs: Vec<String>,
    /// Union of CSI driver names, sorted.
    pub csi_drivers: Vec<String>,
    /// Union of addons, sorted.
    pub supported_addons: Vec<String>,
    /// Union of GPU drivers, sorted.
    pub gpu_drivers: Vec<String>,
    /// Totals per architecture (for unikernels, which need a kernel per arch).
    pub per_arch: BTreeMap<String, ResourceTotals>,
}

fn union_into(target: &mut Vec<String>, items: impl IntoIterator<Item = impl AsRef<str>>) {
    for item in items {
        let item = item.as_ref();
        if let Err(pos) = target.binary_search_by(|t| t.as_str().cmp(item)) {
            target.insert(pos, item.to_owned());
        }
    }
}

impl ClusterResources {
    /// Aggregates the resources of a cluster's active workers. Unlike Oakestra, lists are
    /// de-duplicated and the largest single worker is kept, so a scheduler can tell whether
    /// any one worker fits a request.
    pub fn aggregate<'a>(workers: impl IntoIterator<Item = &'a WorkerResources>) -> Self {
        let mut out = Self::default();
        let mut cpu = (0.0, 0);
        let mut per_arch_cpu: BTreeMap<String, (f64, u32)> = BTreeMap::new();
        for w in workers {
            out.totals.add(w, &mut cpu);
            union_into(&mut out.virtualizations, &w.virtualizations);
            union_into(
                &mut out.csi_drivers,
                w.csi_drivers.iter().map(|d| &d.csi_driver_name),
            );
            union_into(&mut out.supported_addons, &w.supported_addons);
            union_into(&mut out.gpu_drivers, &w.gpu_drivers);
            if !w.arch.is_empty() {
                union_into(&mut out.archs, [&w.arch]);
                let acc = per_arch_cpu.entry(w.arch.clone()).or_default();
                out.per_arch.entry(w.arch.clone()).or_default().add(w, acc);
            }
        }
        out
    }
}

/// Who a worker is and where the cluster reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerIdentity {
    /// Id handed out by the cluster at registration.
    pub id: WorkerId,
    /// Hostname (what `direct` constraints name).
    pub hostname: String,
    /// Address other workers reach it on.
    pub ip: String,
    /// Port of its tunnel / API.
    pub port: u16,
}

/// Who a cluster is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    /// Id handed out by the root (stable across re-registration with the same name).
    pub id: ClusterId,
    /// Unique name (what `direct` constraints name).
    pub name: String,
    /// Free text or `"LAT,LON,RADIUS"`.
    #[serde(default)]
    pub location: String,
}

impl ClusterIdentity {
    /// The location as coordinates, when it is written as `"LAT,LON[,RADIUS]"`.
    pub fn geo(&self) -> Option<GeoLocation> {
        self.location.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(arch: &str, cores: u32, cpu: f64, free: u64, virt: &[&str]) -> WorkerResources {
        WorkerResources {
            cpu_cores: cores,
            cpu_percent: cpu,
            memory_total_mb: free * 2,
            memory_free_mb: free,
            arch: arch.into(),
            virtualizations: virt.iter().map(|s| s.to_string()).collect(),
            csi_drivers: vec![CsiDriver {
                csi_driver_name: "csi.a".into(),
                csi_driver_endpoint: String::new(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn aggregation_sums_dedups_and_keeps_the_largest_worker() {
        let ws = [
            worker("amd64", 4, 10.0, 1000, &["docker"]),
            worker("arm64", 2, 0.0, 3000, &["docker", "unikernel"]),
            worker("amd64", 8, 30.0, 500, &["docker"]),
        ];
        let c = ClusterResources::aggregate(&ws);
        assert_eq!(c.totals.workers, 3);
        assert_eq!(c.totals.cpu_cores, 14);
        assert_eq!(c.totals.memory_free_mb, 4500);
        assert_eq!(c.totals.cpu_percent, 20.0); // mean of the non-zero values
        assert_eq!(c.totals.max_worker_memory_free_mb, 3000);
        assert_eq!(c.totals.max_worker_cpu_cores, 8);
        assert_eq!(c.virtualizations, ["docker", "unikernel"]);
        assert_eq!(c.archs, ["amd64", "arm64"]);
        assert_eq!(c.csi_drivers, ["csi.a"]);
        assert_eq!(c.per_arch["amd64"].workers, 2);
        assert_eq!(c.per_arch["amd64"].cpu_percent, 20.0);
        assert_eq!(c.per_arch["arm64"].memory_free_mb, 3000);
        assert_eq!(
            ClusterResources::aggregate(&[]),
            ClusterResources::default()
        );
    }

    #[test]
    fn geo_location_parses_oakestra_strings() {
        let g: GeoLocation = "48.26,11.67,1000".parse().unwrap();
        assert_eq!(g.radius_km, Some(1000.0));
        assert_eq!(g.to_string(), "48.26,11.67,1000");
        let munich: GeoLocation = "48.137,11.575".parse().unwrap();
        let berlin: GeoLocation = "52.52,13.405".parse().unwrap();
        let d = munich.distance_km(&berlin);
        assert!((d - 504.0).abs() < 5.0, "{d}");
        for bad in ["", "48", "91,0", "0,181", "a,b", "1,2,3,4", "1,2,-1"] {
            assert!(bad.parse::<GeoLocation>().is_err(), "{bad}");
        }
        let c = ClusterIdentity {
            id: "c1".into(),
            name: "edge".into(),
            location: "Munich".into(),
        };
        assert_eq!(c.geo(), None);
    }

    #[test]
    fn csi_drivers_accept_both_forms() {
        let v: Vec<CsiDriver> = serde_json::from_str(
            r#"["a", {"csi_driver_name":"b","csi_driver_endpoint":"/run/b.sock"}]"#,
        )
        .unwrap();
        assert_eq!(v[0].csi_driver_name, "a");
        assert_eq!(v[1].csi_driver_endpoint, "/run/b.sock");
    }
}
