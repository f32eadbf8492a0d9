//! `augur-sample`: the sample service as a process (see `augur_agent::serve`).
//!
//! Exits with the code a fault asks for (1 for `/crash` and `/degrade`), or 0 on SIGTERM
//! (unless `--ignore-sigterm`, which tests use to exercise the SIGKILL escalation).

use std::net::{Ipv4Addr, SocketAddr};

use augur_agent::{serve, SampleConfig};
use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

/// A stateful HTTP service with injectable faults, for exercising Augur's failover.
#[derive(Debug, Parser)]
#[command(name = "augur-sample", version)]
struct Args {
    /// Port to listen on, on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// Instance name, sent back in the `x-instance` header.
    #[arg(long)]
    name: String,
    /// Seed of the RNG that draws injected errors.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep running on SIGTERM (to test a supervisor's SIGKILL escalation).
    #[arg(long)]
    ignore_sigterm: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let listener = TcpListener::bind(addr).await?;
    let mut terminate = signal(SignalKind::terminate())?;
    let config = SampleConfig {
        name: args.name,
        seed: args.seed,
    };
    let server = serve(listener, config);
    tokio::pin!(server);
    loop {
        tokio::select! {
            code = &mut server => std::process::exit(code),
            _ = terminate.recv() => {
                if !args.ignore_sigterm {
                    std::process::exit(0);
                }
            }
        }
    }
}
