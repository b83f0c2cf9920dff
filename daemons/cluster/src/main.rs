//! The `oakestra-cluster` binary: parses the configuration and runs the library until
//! SIGINT/SIGTERM.

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let args = oakestra_cluster::config::args_from_env()?;
    oakestra_daemon::logging::init(args.log_format, "info,rumqttd=warn");
    let config = args.into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(oakestra_cluster::run(
        config,
        oakestra_daemon::shutdown_signal(),
    ))?;
    Ok(())
}
