//! `oakestra-node` binary: parses the configuration and runs the worker.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = oakestra_node::Cli::parse();
    let log_format = cli.log_format;
    let config = match cli.resolve() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("oakestra-node: {message}");
            return ExitCode::from(2);
        }
    };
    oakestra_daemon::logging::init(log_format, "info,rumqttc=warn");
    // One thread is plenty for a worker agent and keeps its idle footprint small.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oakestra-node: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(oakestra_node::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oakestra-node: {e}");
            ExitCode::FAILURE
        }
    }
}
