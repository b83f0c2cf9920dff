//! The `oakestra-root` binary: parses the command line and runs the library.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use oakestra_root::config::{Cli, Command, TokenAction};

/// glibc's malloc keeps freed memory in one arena per thread (the store and password hashing
/// run on blocking threads), so the footprint after a burst stayed at 10x the idle size;
/// mimalloc gives it back.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    oakestra_daemon::logging::init(cli.settings.log_format, "info");
    let config = cli.settings.resolve()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            None => oakestra_root::run(config).await.map_err(Into::into),
            Some(Command::Token { action }) => {
                let store = oakestra_root::open_store(&config).await?;
                match action {
                    TokenAction::Create { name } => {
                        println!(
                            "{}",
                            oakestra_root::tokens::create_cli(Arc::clone(&store), name).await?
                        );
                    }
                    TokenAction::List => {
                        for t in oakestra_root::tokens::list(store.as_ref()).await? {
                            println!("{}\t{}\t{}", t.id, t.name, t.created_at);
                        }
                    }
                    TokenAction::Revoke { id } => {
                        oakestra_root::tokens::revoke(store.as_ref(), &id).await?;
                        println!("revoked join token {id}");
                    }
                }
                Ok(())
            }
        }
    })
}
