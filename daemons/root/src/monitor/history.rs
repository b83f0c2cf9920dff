//! Bounded usage history of every instance (the service record's `cpu_history` and
//! `memory_history`, and `GET /api/service/<id>/usage`).
//!
//! **Where it lives.** At the root, in memory: the root already receives every instance's
//! usage (the cluster forwards CPU and memory percent when they move by a point or more, at
//! most every 5 s per instance), so the history costs no extra message. The instances whose
//! history changed are written to the store once a minute and when the root stops
//! ([`super::persist`]), and read back when it starts, so a restart loses at most a minute.
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
    /// Changed since it was last written to the store.
    dirty: bool,
}

/// Pushes `s`, growing the queue's buffer by doubling but never beyond `max + 1` samples (the
/// queue holds one more than its bound for a moment before the oldest is folded away), so
/// the bytes per instance stay within [`MAX_BYTES_PER_INSTANCE`].
fn push_bounded(q: &mut VecDeque<Sample>, s: Sample, max: usize) {
    if q.len() == q.capacity() {
        let want = (q.capacity().max(4) * 2).min(max + 1).max(q.len() + 1);
        q.reserve_exact(want - q.len());
    }
    q.push_back(s);
}

impl InstanceHistory {
    fn record(&mut self, s: Sample) {
        self.ended = None;
        self.dirty = true;
        match self.recent.back_mut() {
            Some(last) if last.t >= s.t => *last = Sample { t: last.t, ..s },
            _ => push_bounded(&mut self.recent, s, RECENT_MAX),
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
                push_bounded(&mut self.older, Sample { t: bucket, ..s }, OLDER_MAX);
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

/// One instance's history as the store keeps it (samples as `[t, cpu, mem]`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedHistory {
    /// The service.
    pub service: ObjectId,
    /// The instance number.
    pub instance: u32,
    recent: Vec<(u32, f32, f32)>,
    older: Vec<(u32, f32, f32)>,
    last_bucket_count: u32,
    ended: Option<u32>,
}

impl SavedHistory {
    /// Time of the newest sample (0 when there is none).
    pub fn newest(&self) -> u32 {
        let last = |v: &[(u32, f32, f32)]| v.last().map_or(0, |s| s.0);
        last(&self.recent).max(last(&self.older))
    }

    /// The store id: `<service id>/<instance number>`.
    pub fn doc_id(service: ObjectId, n: u32) -> String {
        format!("{service}/{n}")
    }
}

/// The usage history of every instance.
#[derive(Debug)]
pub struct UsageHistory {
    instances: Mutex<HashMap<(ObjectId, u32), InstanceHistory>>,
    /// Instances forgotten since the store was last written.
    removed: Mutex<Vec<(ObjectId, u32)>>,
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
            removed: Mutex::new(Vec::new()),
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
            h.dirty = true;
        }
    }

    /// Forgets instance `n` of `service`, or every instance of it with `None`.
    pub fn forget(&self, service: ObjectId, n: Option<u32>) {
        let mut gone = Vec::new();
        self.lock().retain(|&(s, i), _| {
            let keep = s != service || n.is_some_and(|n| n != i);
            if !keep {
                gone.push((s, i));
            }
            keep
        });
        self.removed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(gone);
    }

    /// The histories changed since the last call, and the instances forgotten since then
    /// (for the store).
    pub fn take_changes(&self) -> (Vec<SavedHistory>, Vec<(ObjectId, u32)>) {
        let removed = std::mem::take(&mut *self.removed.lock().unwrap_or_else(|p| p.into_inner()));
        let mut changed = Vec::new();
        for (&(service, instance), h) in self.lock().iter_mut().filter(|(_, h)| h.dirty) {
            h.dirty = false;
            let tuples = |q: &VecDeque<Sample>| q.iter().map(|s| (s.t, s.cpu, s.mem)).collect();
            changed.push(SavedHistory {
                service,
                instance,
                recent: tuples(&h.recent),
                older: tuples(&h.older),
                last_bucket_count: h.last_bucket_count,
                ended: h.ended,
            });
        }
        (changed, removed)
    }

    /// Puts back a history read from the store (bounds applied as when recording).
    pub fn restore(&self, saved: SavedHistory) {
        let mut h = InstanceHistory {
            last_bucket_count: saved.last_bucket_count,
            ended: saved.ended,
            ..InstanceHistory::default()
        };
        for (t, cpu, mem) in saved.older.into_iter().rev().take(OLDER_MAX).rev() {
            push_bounded(&mut h.older, Sample { t, cpu, mem }, OLDER_MAX);
        }
        for (t, cpu, mem) in saved.recent.into_iter().rev().take(RECENT_MAX).rev() {
            push_bounded(&mut h.recent, Sample { t, cpu, mem }, RECENT_MAX);
        }
        self.lock().insert((saved.service, saved.instance), h);
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
    let (y, m, d) = oakestra_daemon::calendar::civil_from_days(days);
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
        assert!(h.bytes() <= MAX_BYTES_PER_INSTANCE, "{}", h.bytes());
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

    /// The bound the README states (≈12 KiB per instance) holds over a long run: 100
    /// instances reporting every 5 s for two days, with usage that keeps moving (the worst
    /// case: every report is a new sample), some of them restarting (a gap, then reports
    /// again). Checked every simulated hour, not only at the end.
    #[test]
    fn many_instances_over_two_days_stay_within_the_stated_bound() {
        const _: () = assert!(MAX_BYTES_PER_INSTANCE <= 12 * 1024 + 128);
        const INSTANCES: u32 = 100;
        let h = UsageHistory::with_step(5);
        let mut max_per_instance = 0;
        for tick in 0..(2 * 24 * 720u32) {
            let t = T0 + tick * 5;
            for n in 0..INSTANCES {
                // Every tenth instance is down for the first ten minutes of each hour.
                if n % 10 == 0 && tick % 720 < 120 {
                    continue;
                }
                let v = f64::from((tick + n) % 97);
                h.record(id(), n, t, v, 100.0 - v);
            }
            if tick % 720 == 719 {
                assert_eq!(h.len(), INSTANCES as usize);
                let per_instance = h.bytes() / INSTANCES as usize;
                assert!(
                    per_instance <= MAX_BYTES_PER_INSTANCE,
                    "hour {}: {per_instance} B per instance > {MAX_BYTES_PER_INSTANCE}",
                    tick / 720
                );
                max_per_instance = max_per_instance.max(per_instance);
            }
        }
        // The bound is tight: a moving instance does fill its hour and its day.
        assert!(
            max_per_instance > MAX_BYTES_PER_INSTANCE * 9 / 10,
            "{max_per_instance}"
        );
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
