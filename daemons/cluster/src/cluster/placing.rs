//! Placement in the actor: due instances placed by the built-in or an external scheduler.

use super::*;

/// Due instances from which one tick places them through a [`oakestra_sched::PlacementIndex`]
/// built from the candidates (`O(n log n)` once) instead of scanning the candidates for each
/// (`O(n)` per instance); both give the same answers.
const INDEX_FROM: usize = 16;

impl Actor {
    pub(super) async fn place_due(&mut self, now: Instant) {
        if self.external_batch.is_some() {
            // One external batch at a time; its answers come back as `Command::Placed`.
            return;
        }
        let due = self.state.due_for_placement(now);
        if due.is_empty() {
            return;
        }
        let mut candidates = self.state.candidates();
        let batch: Vec<(InstanceKey, PlacementRequest)> = due
            .into_iter()
            .filter_map(|key| self.state.request(&key).map(|r| (key, r)))
            .collect();
        if matches!(self.placer.choice(), SchedulerChoice::External(_))
            && let Some(commands) = self.commands.clone()
        {
            // An external scheduler may be slow or gone: ask it off the actor, so worker
            // reports and root commands keep flowing meanwhile.
            self.external_batch = Some(batch.iter().map(|(k, _)| k.clone()).collect());
            let placer = self.placer.clone();
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                for (key, request) in batch {
                    let started = Instant::now();
                    let outcome = placer.place(&request, &candidates).await;
                    metrics
                        .placement_seconds
                        .observe(started.elapsed().as_secs_f64());
                    if let Ok(worker) = &outcome
                        && let Some(c) = candidates.iter_mut().find(|c| &c.name == worker)
                    {
                        oakestra_sched::commit(&request, c);
                    }
                    if commands
                        .send(Command::Placed { key, outcome })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let _ = commands.send(Command::PlacedAll).await;
            });
            return;
        }
        // A built-in algorithm places the whole batch through one placement index: the same
        // answers as scanning the candidates for each instance, without the scan per instance.
        if let SchedulerChoice::Builtin(algorithm) = self.placer.choice()
            && batch.len() >= INDEX_FROM
        {
            let algorithm = *algorithm;
            let mut index = oakestra_sched::PlacementIndex::new(candidates);
            for (key, request) in batch {
                let started = Instant::now();
                let outcome = index
                    .place_and_commit(algorithm, &request)
                    .map(|p| p.candidate);
                self.metrics
                    .placement_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.record_placement(&key, outcome, now);
            }
            return;
        }
        // A few instances (or an external scheduler without the actor's command channel,
        // asked inline): one scan each costs less than building the index.
        for (key, request) in batch {
            let started = Instant::now();
            let outcome = self.placer.place(&request, &candidates).await;
            self.metrics
                .placement_seconds
                .observe(started.elapsed().as_secs_f64());
            if let Ok(worker) = &outcome
                && let Some(c) = candidates.iter_mut().find(|c| &c.name == worker)
            {
                oakestra_sched::commit(&request, c);
            }
            self.record_placement(&key, outcome, now);
        }
    }

    pub(super) fn record_placement(
        &mut self,
        key: &InstanceKey,
        outcome: Result<String, oakestra_sched::NoPlacement>,
        now: Instant,
    ) {
        match &outcome {
            Ok(_) => {
                self.metrics.placements_ok.inc();
            }
            Err(no) => {
                self.metrics.placement_failed(no);
                tracing::debug!(job = %key.0, instance = key.1, "not placed: {no}");
            }
        }
        self.state.placed(key, outcome, now);
    }

    /// An external scheduler's answer, checked again against the current workers (they may
    /// have changed while it decided).
    pub(super) fn external_answer(
        &mut self,
        key: &InstanceKey,
        outcome: Result<String, oakestra_sched::NoPlacement>,
        now: Instant,
    ) {
        let outcome = match outcome {
            Ok(worker) => {
                let request = self.state.request(key);
                let candidates = self.state.candidates();
                let still_fits = request.as_ref().is_some_and(|r| {
                    candidates
                        .iter()
                        .find(|c| c.name == worker)
                        .is_some_and(|c| oakestra_sched::check(r, c).is_ok())
                });
                if still_fits {
                    Ok(worker)
                } else {
                    Err(oakestra_sched::NoPlacement {
                        status: oakestra_sched::NegativeSchedulingStatus::NoWorkerCapacity,
                        detail: format!(
                            "the external scheduler chose {worker}, which no longer fits"
                        ),
                    })
                }
            }
            Err(no) => Err(no),
        };
        self.record_placement(key, outcome, now);
    }
}
