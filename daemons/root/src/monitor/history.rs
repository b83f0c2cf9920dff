//! Bounded usage history of every instance (the service record's `cpu_history` and
//! `memory_history`, and `GET /api/service/<id>/usage`).
//!
//! **Where it lives.** At the root, in memory: the root already receives every instance's
//! usage (the cluster forwards CPU and memory percent when they move by a point or more, at
//! most every 5 s per instance), so the history costs no extra message and no store write.
//! It is lost when the root restarts.
//!
//! **What is kept.** Each report is one raw sample (4-byte time, two 4-byte values: 12
//! bytes). Raw samples of the last [`RECENT_SPAN_SECS`] (one hour, at most
//! [`RECENT_MAX`] = 720, one per 5 s) are kept as they are; older ones are folded into
//! [`OLDER_STEP_SECS`] (5-minute) means for [`OLDER_SPAN_SECS`] (24 h, at most
//! [`OLDER_MAX`] = 288). So one instance costs at most (720 + 288) × 12 B ≈ 12 KiB, plus the
//! map entry (≈ 120 B); an instance whose usage is steady costs a few samples.
//!
//! **How it is read.** Because the cluster only forwards changes, a reading is sample-and-hold
//! on a grid: for the last hour, one point per `step` (default [`DEFAULT_STEP_SECS`]) holding
//! the last reported value, from the first sample until the instance stopped running; before
//! that, the 5-minute means. So N report intervals after the first report a running instance
//! has N + 1 points.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use oakestra_core::ids::ObjectId;
use oakestra_core::model::{HISTORY_LEN, MetricSample, ServiceRecord};

/// Raw samples newer than this many seconds are kept as they are.
pub const RECENT_SPAN_SECS: u32 = 3600;
/// At most this many raw samples per instance (one hour at one per 5 s).
pub const RECENT_MAX: usize = 720;
/// Width of a downsampled bucket.
pub const OLDER_STEP_SECS: u32 = 300;
/// Downsampled buckets are kept this long.
pub const OLDER_SPAN_SECS: u32 = 24 * 3600;
/// At most this many downsampled buckets per instance.
pub const OLDER_MAX: usize = (OLDER_SPAN_SECS / OLDER_STEP_SECS) as usize;
/// Default grid step of a reading: the cluster's shortest forwarding interval.
pub const DEFAULT_STEP_SECS: u32 = 5;
/// Upper bound of one instance's history in bytes (samples only, see the module docs).
pub const MAX_BYTES_PER_INSTANCE: usize =
    (RECENT_MAX + OLDER_MAX) * std::mem::size_of::<Sample>() + 128;

/// One sample: seconds since the epoch, CPU percent, memory percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds since the epoch.
    pub t: u32,
    /// CPU, percent.
    pub cpu: f32,
    /// Memory, percent of the worker's memory.
    pub mem: f32,
}

/// One point of a reading.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct UsagePoint {
    /// Seconds since the epoch.
    pub t: u32,
    /// CPU, percent.
    pub cpu_percent: f32,
    /// Memory, percent of the worker's memory.
    pub memory_percent: f32,
}

#[derive(Debug, Default)]
struct InstanceHistory {
    recent: VecDeque<Sample>,
    /// 5-minute means, oldest first, with how many samples the last one averages.
    older: VecDeque<Sample>,
    last_bucket_count: u32,
    /// When the instance stopped running (no points are held past it).
    ended: Option<u32>,
}

impl InstanceHistory {
    fn record(&mut self, s: Sample) {
        self.ended = None;
        match self.recent.back_mut() {
            Some(last) if last.t >= s.t => *last = Sample { t: last.t, ..s },
            _ => self.recent.push_back(s),
        }
        let horizon = s.t.saturating_sub(RECENT_SPAN_SECS);
        // Keep the newest sample before the horizon as the anchor of the grid.
        while self.recent.len() > RECENT_MAX
            || (self.recent.len() > 1 && self.recent[1].t <= horizon)
        {
            let Some(old) = self.recent.pop_front() else {
                break;
            };
            self.fold(old);
        }
        let oldest = s.t.saturating_sub(OLDER_SPAN_SECS);
        while self.older.len() > OLDER_MAX || self.older.front().is_some_and(|b| b.t < oldest) {
            self.older.pop_front();
        }
    }

    fn fold(&mut self, s: Sample) {
        let bucket = s.t - s.t % OLDER_STEP_SECS;
        match self.older.back_mut() {
            Some(b) if b.t == bucket => {
                let n = self.last_bucket_count as f32;
                b.cpu = (b.cpu * n + s.cpu) / (n + 1.0);
                b.mem = (b.mem * n + s.mem) / (n + 1.0);
                self.last_bucket_count += 1;
            }
            _ => {
                self.older.push_back(Sample { t: bucket, ..s });
                self.last_bucket_count = 1;
            }
        }
    }

    /// Points in `[since, until]`: the buckets, then the grid over the raw samples.
    fn read(&self, since: u32, until: u32, step: u32) -> Vec<UsagePoint> {
        let point = |t, s: &Sample| UsagePoint {
            t,
            cpu_percent: s.cpu,
            memory_percent: s.mem,
        };
        let first_raw = self.recent.front().map_or(u32::MAX, |s| s.t);
        let mut out: Vec<UsagePoint> = self
            .older
            .iter()
            .filter(|b| b.t >= since && b.t <= until && b.t < first_raw)
            .map(|b| point(b.t, b))
            .collect();
        let Some(first) = self.recent.front() else {
            return out;
        };
        let end = self.ended.map_or(until, |e| e.min(until));
        let step = step.max(1);
        // Grid anchored at the first raw sample, starting at the first point ≥ since.
        let mut t = if since > first.t {
            first.t + (since - first.t).div_ceil(step) * step
        } else {
            first.t
        };
        let mut i = 0;
        while t <= end {
            while i + 1 < self.recent.len() && self.recent[i + 1].t <= t {
                i += 1;
            }
            out.push(point(t, &self.recent[i]));
            t = match t.checked_add(step) {
                Some(next) => next,
                None => break,
            };
        }
        out
    }
}

/// The usage history of every instance.
#[derive(Debug)]
pub struct UsageHistory {
    instances: Mutex<HashMap<(ObjectId, u32), InstanceHistory>>,
    step: u32,
}

impl Default for UsageHistory {
    fn default() -> Self {
        Self::with_step(DEFAULT_STEP_SECS)
    }
}

impl UsageHistory {
    /// A history read on a grid of `step_secs`.
    pub fn with_step(step_secs: u32) -> Self {
        Self {
            instances: Mutex::new(HashMap::new()),
            step: step_secs.max(1),
        }
    }

    /// The grid step of readings, seconds.
    pub fn step(&self) -> u32 {
        self.step
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(ObjectId, u32), InstanceHistory>> {
        self.instances.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a usage report of instance `n` of `service` at `t` (seconds since the epoch).
    pub fn record(&self, service: ObjectId, n: u32, t: u32, cpu_percent: f64, memory_percent: f64) {
        self.lock().entry((service, n)).or_default().record(Sample {
            t,
            cpu: cpu_percent as f32,
            mem: memory_percent as f32,
        });
    }

    /// The instance stopped running at `t`: its values are no longer held after it.
    pub fn end(&self, service: ObjectId, n: u32, t: u32) {
        if let Some(h) = self.lock().get_mut(&(service, n))
            && h.ended.is_none()
        {
            h.ended = Some(t);
        }
    }

    /// Forgets instance `n` of `service`, or every instance of it with `None`.
    pub fn forget(&self, service: ObjectId, n: Option<u32>) {
        self.lock()
            .retain(|(s, i), _| *s != service || n.is_some_and(|n| n != *i));
    }

    /// Points of instance `n` of `service` in `[since, until]` on a grid of `step` seconds.
    pub fn read(
        &self,
        service: ObjectId,
        n: u32,
        since: u32,
        until: u32,
        step: u32,
    ) -> Vec<UsagePoint> {
        self.lock()
            .get(&(service, n))
            .map(|h| h.read(since, until, step))
            .unwrap_or_default()
    }

    /// How many instances have a history.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no instance has a history.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the samples of every instance (capacity, not length).
    pub fn bytes(&self) -> usize {
        self.lock()
            .values()
            .map(|h| {
                (h.recent.capacity() + h.older.capacity()) * std::mem::size_of::<Sample>()
                    + std::mem::size_of::<InstanceHistory>()
            })
            .sum()
    }

    /// Fills `cpu_history` / `memory_history` of every instance of `service` with its last
    /// [`HISTORY_LEN`] points up to `now` (Oakestra's shape: `[{value, timestamp}]`).
    pub fn fill(&self, service: &mut ServiceRecord, now: u32) {
        let since = now.saturating_sub(self.step * HISTORY_LEN as u32);
        let id = service.id;
        for inst in &mut service.instance_list {
            let points = self.read(id, inst.instance_number, since, now, self.step);
            let tail = &points[points.len().saturating_sub(HISTORY_LEN)..];
            inst.cpu_history = tail
                .iter()
                .map(|p| MetricSample {
                    value: round2(p.cpu_percent),
                    timestamp: iso_time(p.t),
                })
                .collect();
            inst.memory_history = tail
                .iter()
                .map(|p| MetricSample {
                    value: round2(p.memory_percent),
                    timestamp: iso_time(p.t),
                })
                .collect();
        }
    }
}

fn round2(v: f32) -> f64 {
    (f64::from(v) * 100.0).round() / 100.0
}

/// `YYYY-MM-DDTHH:MM:SSZ` of seconds since the epoch.
pub fn iso_time(t: u32) -> String {
    let days = i64::from(t / 86_400);
    let (y, m, d) = crate::api::auth::civil_from_days(days);
    let rem = t % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Now, seconds since the epoch.
pub fn now_secs() -> u32 {
    u32::try_from(crate::tokens::now_secs_f64() as u64).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u32 = 1_800_000_000;

    fn id() -> ObjectId {
        ObjectId::from_parts(1, [0; 5], 1)
    }

    #[test]
    fn n_intervals_after_the_first_report_give_n_plus_one_points() {
        let h = UsageHistory::with_step(5);
        h.record(id(), 0, T0, 10.0, 1.0);
        // The usage moved once, at the 3rd interval; the others held.
        h.record(id(), 0, T0 + 15, 20.0, 2.0);
        for n in [0u32, 1, 4, 10] {
            let points = h.read(id(), 0, 0, T0 + n * 5, 5);
            assert_eq!(points.len(), n as usize + 1, "after {n} intervals");
        }
        let points = h.read(id(), 0, 0, T0 + 25, 5);
        let cpu: Vec<f32> = points.iter().map(|p| p.cpu_percent).collect();
        assert_eq!(cpu, [10.0, 10.0, 10.0, 20.0, 20.0, 20.0]);
        assert_eq!(points[3].t, T0 + 15);
    }

    #[test]
    fn a_stopped_instance_holds_no_value_past_its_end() {
        let h = UsageHistory::with_step(5);
        h.record(id(), 0, T0, 10.0, 1.0);
        h.end(id(), 0, T0 + 10);
        assert_eq!(h.read(id(), 0, 0, T0 + 100, 5).len(), 3);
        // Running again: held once more.
        h.record(id(), 0, T0 + 100, 5.0, 1.0);
        assert_eq!(h.read(id(), 0, 0, T0 + 110, 5).len(), 23);
    }

    #[test]
    fn range_and_record_filling() {
        let h = UsageHistory::with_step(5);
        h.record(id(), 1, T0, 1.0, 2.0);
        let points = h.read(id(), 1, T0 + 12, T0 + 30, 5);
        assert_eq!(
            points.iter().map(|p| p.t).collect::<Vec<_>>(),
            [T0 + 15, T0 + 20, T0 + 25, T0 + 30]
        );
        let sla = oakestra_core::sla::parse_and_validate(include_str!(
            "../../../../examples/sla-clientsrvr-container.json"
        ))
        .unwrap();
        let app = &sla.applications[0];
        let mut rec = ServiceRecord::new(id(), id(), app, &app.microservices[0]);
        rec.instance_list
            .push(oakestra_core::model::InstanceRecord::new(
                1,
                oakestra_core::status::Status::RUNNING,
            ));
        // 1000 s later: the last HISTORY_LEN points only.
        h.fill(&mut rec, T0 + 1000);
        let inst = rec.instance(1).unwrap();
        assert_eq!(inst.cpu_history.len(), HISTORY_LEN);
        assert_eq!(inst.memory_history.len(), HISTORY_LEN);
        assert_eq!(inst.memory_history[0].value, 2.0);
        assert_eq!(
            inst.cpu_history.last().unwrap().timestamp,
            iso_time(T0 + 1000)
        );
        assert_eq!(iso_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_time(1_800_000_000), "2027-01-15T08:00:00Z");
    }

    #[test]
    fn a_day_of_reports_stays_within_the_bound() {
        let h = UsageHistory::with_step(5);
        // A report every 5 s with moving usage for 30 hours.
        for i in 0..(30 * 720) {
            let v = f64::from(i % 100);
            h.record(id(), 0, T0 + i * 5, v, v);
        }
        assert!(h.bytes() <= MAX_BYTES_PER_INSTANCE * 2, "{}", h.bytes());
        let guard = h.lock();
        let inst = guard.get(&(id(), 0)).unwrap();
        assert!(inst.recent.len() <= RECENT_MAX + 1);
        assert!(inst.older.len() <= OLDER_MAX + 1);
        drop(guard);
        let end = T0 + (30 * 720 - 1) * 5;
        let points = h.read(id(), 0, end - 2 * 3600, end, 5);
        // One hour of grid points (721) plus the 5-minute means of the hour before (12).
        assert!((720..=740).contains(&points.len()), "{}", points.len());
        assert!(points.windows(2).all(|w| w[0].t < w[1].t));
    }

    #[test]
    fn forget_removes_one_or_all() {
        let h = UsageHistory::default();
        h.record(id(), 0, T0, 1.0, 1.0);
        h.record(id(), 1, T0, 1.0, 1.0);
        h.forget(id(), Some(0));
        assert_eq!(h.len(), 1);
        h.forget(id(), None);
        assert!(h.is_empty());
    }
}
