//! The `silo` command: `silo run` runs the controller, `silo crd` prints its CRDs, `silo
//! import` and `silo orphans` take over an existing organization, `silo rollout` follows and
//! steers a Baseline's rollout (also as the kubectl plugin `kubectl-silo`).

use clap::{Parser, Subcommand};
use silo::config::RunArgs;

/// `silo --version`: the version and the commit it was built from (controller/build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SILO_GIT_COMMIT"), ")");

#[derive(Parser)]
#[command(name = "silo", version = VERSION, about = "Gives every tenant of a SaaS platform its own AWS account")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller. Kubernetes access comes from the usual places (KUBECONFIG,
    /// ~/.kube/config, in-cluster); AWS credentials, region and endpoint from the standard
    /// AWS SDK chain (AWS_ENDPOINT_URL points Silo at a simulator).
    Run(Box<RunArgs>),
    /// Print every CRD Silo owns, as YAML, for `kubectl apply -f -`.
    Crd,
    /// Print Tenants (YAML) that adopt the organization's existing accounts where they are.
    /// Reads AWS and the cluster; writes to neither.
    Import(Box<silo::takeover::import::ImportArgs>),
    /// List active accounts no Tenant has: tagged by Silo for a Tenant that is gone, or in a
    /// tenant OU root without a Tenant. Reads AWS and the cluster; writes to neither.
    Orphans(Box<silo::takeover::orphans::OrphansArgs>),
    /// Follow and steer a Baseline's rollout: status (exit 0 complete, 2 halted or rolled
    /// back, 3 paused, 4 not complete yet), pause, resume, promote, undo, history.
    Rollout(Box<silo::baseline::cli::RolloutArgs>),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    // kube and the AWS SDK both use rustls; pick its crypto provider once, explicitly, so a
    // build that links more than one provider cannot panic at the first request.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match command {
        Command::Run(args) => silo::run::silo_run(*args).await,
        Command::Crd => {
            print!("{}", silo::api::crds_yaml()?);
            Ok(())
        }
        Command::Import(args) => silo::takeover::import::run(*args).await,
        Command::Orphans(args) => silo::takeover::orphans::run(*args).await,
        Command::Rollout(args) => std::process::exit(silo::baseline::cli::run(*args).await?),
    }
}
