//! `silo-bench`: Silo's benchmarks (`make bench`).
//!
//! Starts the project's test environment (a real kube-apiserver and etcd, and the AWS
//! simulator), sets the simulator to AWS-like quotas, and runs `silo run` as a separate
//! process through the scenarios selected by `BENCH_SCENARIOS`: onboard, restart, steady,
//! baseline, unthrottled, import, signup, rollout, organizations. Each prints its tables and writes `<scenario>.json`
//! and `<scenario>.png` under `BENCH_OUT` (`restart` one pair per point of the verification
//! schedule: `restart-random`, `restart-outage`). `BENCH_PROFILE` says what the Tenants carry
//! (`bare`, `full`). `silo-bench --help` lists every knob and its variable.
//!
//! The harness drives the controller only through `silo run`'s flags, the Tenant API and the
//! simulator. Its scaling and the restart's schedule state follow the verification schedule
//! of the `silo` crate it is built with (`scaling`), so measure a controller with the bench of
//! the same tree.

#[path = "../bench/check.rs"]
mod check;
#[path = "../bench/controller.rs"]
mod controller;
#[path = "../bench/fleet.rs"]
mod fleet;
#[path = "../bench/report.rs"]
mod report;
#[path = "../bench/scaling.rs"]
mod scaling;
#[path = "../bench/scenarios.rs"]
mod scenarios;
#[path = "../bench/setup.rs"]
mod setup;

use std::{process::ExitCode, time::Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser as _;

use crate::{
    scenarios::Bench,
    setup::{Params, Scenario},
};

#[tokio::main]
async fn main() -> ExitCode {
    let params = Params::parse();
    silo_testenv::install_crypto_provider();
    let result = tokio::select! {
        result = run(params) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // Everything started (controller, kube-apiserver, etcd, simulator) was dropped and
    // killed by now.
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("silo-bench failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(params: Params) -> Result<()> {
    if !params.silo.exists() {
        bail!("{} is missing: build it (`cargo build --release -p silo`) or run `make bench`", params.silo.display());
    }
    if params.scenarios.is_empty() {
        bail!("BENCH_SCENARIOS selects no scenario");
    }
    let out =
        params.out.clone().unwrap_or_else(|| silo_testenv::cache_dir().join("bench").join(setup::utc_timestamp()));
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let started = Instant::now();
    println!("silo-bench: results in {}", out.display());
    let mut bench = Bench::new(params.clone(), out.clone()).await?;
    for scenario in [
        Scenario::Onboard,
        Scenario::Restart,
        Scenario::Steady,
        Scenario::Baseline,
        Scenario::Unthrottled,
        Scenario::Import,
        Scenario::Signup,
        Scenario::Rollout,
        Scenario::Organizations,
    ] {
        if !params.selected(scenario) {
            continue;
        }
        let t = Instant::now();
        eprintln!("silo-bench: == {} ==", scenario.name());
        let result = match scenario {
            Scenario::Onboard => bench.onboard().await,
            Scenario::Restart => bench.restart().await,
            Scenario::Steady => bench.steady().await,
            Scenario::Baseline => bench.baseline().await,
            Scenario::Unthrottled => bench.unthrottled().await,
            Scenario::Import => bench.import().await,
            Scenario::Signup => bench.signup().await,
            Scenario::Rollout => bench.rollout().await,
            Scenario::Organizations => bench.organizations().await,
        };
        result.with_context(|| format!("scenario {}", scenario.name()))?;
        eprintln!("silo-bench: {} took {:.0} s", scenario.name(), t.elapsed().as_secs_f64());
    }
    println!("silo-bench: done in {:.0} s; results in {}", started.elapsed().as_secs_f64(), out.display());
    for line in &bench.summary {
        println!("  {line}");
    }
    if !bench.plot_failures.is_empty() {
        bail!("some plots failed (the JSON files are written):\n{}", bench.plot_failures.join("\n"));
    }
    // The environment's logs are only worth keeping when something failed.
    let env_dir = bench.env_dir();
    drop(bench);
    let _ = std::fs::remove_dir_all(env_dir);
    if let Some(ceilings) = &params.check {
        let excess = check::check(ceilings, &out)?;
        if !excess.is_empty() {
            bail!("the results break the ceilings of {}:\n{}", ceilings.display(), excess.join("\n"));
        }
        println!("silo-bench: every count is within the ceilings of {}", ceilings.display());
    }
    Ok(())
}
