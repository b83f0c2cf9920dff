//! `oak sim`: N simulated workers in one process against a real cluster. Each is a full
//! `oakestra-node` (registration, MQTT session, desired state, reports) on the fake runtime,
//! advertising the resources and location it is given instead of measuring the host.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use oakestra_node::{ClusterAddress, SimulatedResources};

/// Flags of `oak sim`.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// The cluster orchestrator: HOST or HOST:PORT of its worker API [default port: 10100].
    #[arg(long, env = "OAK_SIM_CLUSTER", value_parser = ClusterAddress::parse)]
    pub cluster: ClusterAddress,
    /// The cluster's worker join token.
    #[arg(long, env = "OAK_SIM_TOKEN", hide_env_values = true)]
    pub token: String,
    /// How many workers to simulate.
    #[arg(long, default_value_t = 10)]
    pub workers: u32,
    /// Worker names are PREFIX-0, PREFIX-1, …
    #[arg(long, default_value = "sim")]
    pub name_prefix: String,
    /// State of the workers (one subdirectory each; identities survive a restart of the
    /// simulator) [default: $XDG_STATE_HOME/oakestra-sim, else ~/.local/state/oakestra-sim].
    #[arg(long, env = "OAK_SIM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Cores each worker advertises.
    #[arg(long, default_value_t = 4)]
    pub cpus: u32,
    /// Memory each worker advertises, MB.
    #[arg(long, default_value_t = 8192)]
    pub memory_mb: u64,
    /// CPU use each worker reports, percent.
    #[arg(long, default_value_t = 5.0)]
    pub cpu_percent: f64,
    /// Locations "LAT,LON", separated by ';', given to the workers in turn.
    #[arg(long)]
    pub locations: Option<String>,
    /// Interval of the information and resources reports.
    #[arg(long, default_value = "2s", value_parser = oakestra_node::config::parse_duration)]
    pub report_interval: Duration,
    /// Time each instance start takes.
    #[arg(long, default_value = "0ms", value_parser = oakestra_node::config::parse_duration)]
    pub start_latency: Duration,
    /// Every N-th start on a worker fails (0 = never).
    #[arg(long, default_value_t = 0)]
    pub fail_every: u32,
    /// Every instance exits this long after it started (with --exit-code).
    #[arg(long, value_parser = oakestra_node::config::parse_duration)]
    pub exit_after: Option<Duration>,
    /// Exit code of the injected exits.
    #[arg(long, default_value_t = 0)]
    pub exit_code: i32,
    /// Print a summary this often.
    #[arg(long, default_value = "10s", value_parser = oakestra_node::config::parse_duration)]
    pub summary_every: Duration,
}

fn default_data_dir() -> PathBuf {
    oakestra_daemon::default_data_dir(
        oakestra_daemon::data_dir::Base::State,
        "oakestra-sim",
        "oakestra-sim-data",
    )
}

/// The configuration of simulated worker `i`.
pub fn worker_config(args: &SimArgs, i: u32) -> Result<oakestra_node::Config> {
    let data = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let mut config = oakestra_node::Config::new(
        args.cluster.clone(),
        args.token.clone(),
        data.join(format!("{}-{i}", args.name_prefix)),
    );
    config.name = format!("{}-{i}", args.name_prefix);
    config.report_interval = args.report_interval;
    config.simulated = Some(SimulatedResources {
        vcpus: args.cpus,
        memory_mb: args.memory_mb,
        cpu_percent: args.cpu_percent,
    });
    if let Some(list) = &args.locations {
        let locations: Vec<&str> = list
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if !locations.is_empty() {
            let location = locations[i as usize % locations.len()];
            oakestra_node::config::validate_location(location).map_err(anyhow::Error::msg)?;
            config.location = Some(location.to_owned());
        }
    }
    config.fake.start_latency = args.start_latency;
    config.fake.fail_every_nth_start = args.fail_every;
    config.fake.exit_after = args.exit_after.map(|d| (d, args.exit_code));
    Ok(config)
}

/// Starts the workers and runs until Ctrl-C, printing a summary now and then.
pub async fn run(args: SimArgs) -> Result<()> {
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let started = Instant::now();
    let mut workers = Vec::with_capacity(args.workers as usize);
    for i in 0..args.workers {
        let config = worker_config(&args, i)?;
        let node = oakestra_node::start(config)
            .await
            .with_context(|| format!("starting simulated worker {i}"))?;
        workers.push(node);
    }
    println!(
        "oak sim: {} workers started against {}; waiting for their registration…",
        workers.len(),
        args.cluster
    );
    let mut summary = tokio::time::interval(args.summary_every);
    summary.tick().await;
    let mut last_usage = own_usage().map(|u| (u, Instant::now()));
    let mut all_registered = false;
    let stop = oakestra_daemon::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(Duration::from_millis(200)), if !all_registered => {
                let registered = workers.iter().filter(|w| w.id.borrow().is_some()).count();
                if registered == workers.len() {
                    all_registered = true;
                    println!("oak sim: all {registered} workers registered in {:.1?}", started.elapsed());
                }
            }
            _ = summary.tick() => {
                let registered = workers.iter().filter(|w| w.id.borrow().is_some()).count();
                let mut counts = std::collections::BTreeMap::<String, usize>::new();
                for w in &workers {
                    for (_, status) in w.engine.statuses() {
                        *counts.entry(status.to_string()).or_default() += 1;
                    }
                }
                let now_usage = own_usage().map(|u| (u, Instant::now()));
                let cost = match (last_usage, now_usage) {
                    (Some(((cpu0, _), t0)), Some(((cpu1, rss), t1))) => {
                        sim_cost(cpu1 - cpu0, t1.duration_since(t0), rss, workers.len())
                    }
                    _ => String::new(),
                };
                last_usage = now_usage;
                println!("oak sim: {registered}/{} registered; instances {counts:?}{cost}", workers.len());
            }
        }
    }
    println!("oak sim: stopping");
    for w in workers {
        w.stop().await;
    }
    Ok(())
}

/// This process's CPU time so far (seconds, all threads) and resident memory (bytes), from
/// `/proc/self` (`None` where there is no procfs). `/proc` counts CPU time in USER_HZ ticks,
/// which Linux fixes at 100 per second on every architecture.
fn own_usage() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((ticks as f64 / 100.0, rss_kb * 1024))
}

/// `"; sim process: CPU …"` for the summary: the simulator's own CPU over `elapsed` and its
/// RSS, in total and per simulated worker.
fn sim_cost(cpu_seconds: f64, elapsed: Duration, rss_bytes: u64, workers: usize) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 || workers == 0 {
        return String::new();
    }
    let percent = 100.0 * cpu_seconds / secs;
    let n = workers as f64;
    format!(
        "; sim process: CPU {percent:.1} % of a core ({:.3} % per worker), RSS {:.1} MB ({:.1} KB per worker)",
        percent / n,
        rss_bytes as f64 / 1e6,
        rss_bytes as f64 / 1e3 / n
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_usage_reads_this_process() {
        let (cpu, rss) = own_usage().expect("procfs on Linux");
        // Burn a little CPU: the counter must not go back, and RSS is at least a megabyte.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        let (cpu2, _) = own_usage().unwrap();
        assert!(cpu2 >= cpu && cpu >= 0.0);
        assert!(rss > 1_000_000, "{rss}");
    }

    #[test]
    fn cost_is_split_per_worker() {
        let line = sim_cost(1.0, Duration::from_secs(10), 50_000_000, 1000);
        assert_eq!(
            line,
            "; sim process: CPU 10.0 % of a core (0.010 % per worker), RSS 50.0 MB (50.0 KB per worker)"
        );
        assert_eq!(sim_cost(1.0, Duration::ZERO, 1, 1), "");
    }
}
