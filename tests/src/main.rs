//! `silo-testenv`: the test environment as a command, for `make demo` and for poking around.
//!
//! - `silo-testenv up` starts the control plane and the AWS simulator and prints how to reach
//!   them, until Ctrl-C.
//! - `silo-testenv demo` also runs `silo run`, applies `examples/`, and shows the tenants
//!   progressing to Ready in a live table, until Ctrl-C tears everything down.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};
use silo::{Baseline, Tenant, conditions};
use silo_testenv::{Env, SimClient, control_plane, process::Process};

#[derive(Parser)]
#[command(name = "silo-testenv", about = "Silo's local control plane and AWS simulator")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a kube-apiserver, etcd and the AWS simulator, and wait for Ctrl-C.
    Up,
    /// Run Silo against a local environment (or a given one), apply examples/, and watch.
    Demo(DemoArgs),
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Use the current kubeconfig context instead of starting a local control plane.
    #[arg(long, env = "SILO_DEMO_USE_CURRENT_CONTEXT")]
    use_current_context: bool,

    /// Use this AWS endpoint instead of starting the simulator ("aws" for real AWS, with
    /// credentials from the environment).
    #[arg(long, env = "SILO_DEMO_AWS_ENDPOINT")]
    aws_endpoint: Option<String>,

    /// The `silo` binary to run.
    #[arg(long, env = "SILO_BIN")]
    silo: PathBuf,

    /// Directory of Tenant YAMLs to apply.
    #[arg(long, default_value = "examples")]
    examples: PathBuf,

    /// With the local simulator: how long AWS takes to create an account, as in real life
    /// (where it takes a minute or more).
    #[arg(long, default_value_t = 5)]
    creation_delay_seconds: u64,

    /// Exit (successfully) once every example tenant is Ready; for scripted checks.
    #[arg(long)]
    exit_when_ready: bool,

    /// With --exit-when-ready: fail after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_seconds: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Up => {
            let env = Env::start().await?;
            print_access(&env);
            println!("Ctrl-C stops everything.");
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
        Cmd::Demo(args) => demo(args).await,
    }
}

fn print_access(env: &Env) {
    println!("kube-apiserver {} at {}", env.kube.version, env.kube.server);
    println!("AWS simulator at {}", env.aws.endpoint);
    println!();
    println!("In a second shell:");
    println!("  export KUBECONFIG={}", env.kube.kubeconfig.display());
    println!("  kubectl get tenants");
    println!("(kubectl is in {})", control_plane::kube_bin_dir().display());
    println!();
}

async fn demo(args: DemoArgs) -> Result<()> {
    // A local environment unless told otherwise; dropped (and stopped) on exit.
    let local = if args.use_current_context && args.aws_endpoint.is_some() { None } else { Some(Env::start().await?) };
    let kubeconfig: Option<PathBuf> = match (&local, args.use_current_context) {
        (Some(env), false) => Some(env.kube.kubeconfig.clone()),
        _ => None,
    };
    let client = match &kubeconfig {
        Some(path) => control_plane::client_from(path).await?,
        None => {
            let client = Client::try_default().await?;
            silo_testenv::install_crds(&client).await?;
            client
        }
    };
    let aws_env: Vec<(&str, String)> = match (&args.aws_endpoint, &local) {
        (Some(endpoint), _) if endpoint == "aws" => vec![],
        (Some(endpoint), _) => vec![("AWS_ENDPOINT_URL", endpoint.clone())],
        (None, Some(env)) => {
            let sim = SimClient::new(&env.aws.endpoint);
            sim.configure(serde_json::json!({"create_account_delay_seconds": args.creation_delay_seconds})).await?;
            sim.env()
        }
        (None, None) => bail!("no AWS endpoint: pass --aws-endpoint"),
    };
    if let Some(env) = &local {
        print_access(env);
    }

    let dir = local.as_ref().map(|e| e.dir.clone()).unwrap_or_else(|| silo_testenv::cache_dir().join("run"));
    std::fs::create_dir_all(&dir)?;
    let metrics = format!("127.0.0.1:{}", silo_testenv::process::free_port()?);
    let mut command = Command::new(&args.silo);
    command.arg("run").arg("--create-missing-ous").args(["--metrics-address", &metrics]).envs(aws_env);
    if let Some(path) = &kubeconfig {
        command.env("KUBECONFIG", path);
    }
    let controller = Process::start("silo run", command, &dir.join("silo.log"))?;
    println!("silo run is running; its log: {}; its metrics: http://{metrics}/metrics", controller.log.display());

    let names = apply_examples(&client, &args.examples).await?;
    println!("Applied {} tenants from {}: {}", names.len(), args.examples.display(), names.join(", "));
    println!();

    let tenants = Api::<Tenant>::all(client);
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                println!("\nStopping.");
                return Ok(());
            }
            _ = ticker.tick() => {}
        }
        controller.check_running()?;
        let list = tenants.list(&Default::default()).await?.items;
        let ready = list.iter().filter(|t| names.contains(&t.name_any()) && is_ready(t)).count();
        let outputs: Vec<String> = list.iter().filter_map(stack_outputs).collect();
        if !args.exit_when_ready {
            // Redraw in place: clear the screen, home the cursor.
            print!("\x1b[2J\x1b[H");
        }
        print_table(&list, started.elapsed());
        for line in &outputs {
            println!("{line}");
        }
        println!(
            "{ready}/{} example tenants Ready{}",
            names.len(),
            if args.exit_when_ready { "" } else { "; Ctrl-C stops everything" }
        );
        std::io::stdout().flush()?;
        if ready == names.len() {
            if args.exit_when_ready {
                return Ok(());
            }
        } else if args.exit_when_ready && started.elapsed() > Duration::from_secs(args.timeout_seconds) {
            bail!(
                "not every example tenant was Ready after {} s; see {}",
                args.timeout_seconds,
                controller.log.display()
            );
        }
    }
}

/// Applies every AccountPool, Baseline and Tenant in `dir`; returns the Tenants' names.
async fn apply_examples(client: &Client, dir: &std::path::Path) -> Result<Vec<String>> {
    let api = Api::<Tenant>::all(client.clone());
    let baselines = Api::<Baseline>::all(client.clone());
    let mut names = vec![];
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value = serde::Deserialize::deserialize(doc)?;
            if value["kind"] == "AccountPool" {
                let pool: silo::api::AccountPool =
                    serde_json::from_value(value).with_context(|| format!("parse {}", file.display()))?;
                let name = pool.name_any();
                Api::<silo::api::AccountPool>::all(client.clone())
                    .patch(&name, &PatchParams::apply("silo-demo").force(), &Patch::Apply(&pool))
                    .await?;
                continue;
            }
            if value["kind"] == "Baseline" {
                let baseline: Baseline =
                    serde_json::from_value(value).with_context(|| format!("parse {}", file.display()))?;
                let name = baseline.name_any();
                baselines.patch(&name, &PatchParams::apply("silo-demo").force(), &Patch::Apply(&baseline)).await?;
                continue;
            }
            let tenant: Tenant = serde_json::from_value(value).with_context(|| format!("parse {}", file.display()))?;
            let name = tenant.name_any();
            api.patch(&name, &PatchParams::apply("silo-demo").force(), &Patch::Apply(&tenant))
                .await
                .with_context(|| format!("apply {} from {}", name, file.display()))?;
            names.push(name);
        }
    }
    Ok(names)
}

/// "globex: us-east-1 EventsTopicArn=arn:..." lines for tenants whose baseline is applied.
fn stack_outputs(tenant: &Tenant) -> Option<String> {
    let baseline = tenant.status.as_ref()?.baseline.as_ref()?;
    let stacks: Vec<String> = baseline
        .stacks
        .iter()
        .filter(|s| !s.outputs.is_empty())
        .map(|s| {
            let outputs: Vec<String> = s.outputs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("  {} {}", s.region, outputs.join(" "))
        })
        .collect();
    (!stacks.is_empty()).then(|| format!("{} (baseline {}):\n{}", tenant.name_any(), baseline.name, stacks.join("\n")))
}

fn is_ready(tenant: &Tenant) -> bool {
    tenant.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, conditions::READY))
}

fn print_table(tenants: &[Tenant], elapsed: Duration) {
    let rows: Vec<BTreeMap<&str, String>> = tenants
        .iter()
        .map(|t| {
            let status = t.status.clone().unwrap_or_default();
            let ready = conditions::find(&status.conditions, conditions::READY);
            BTreeMap::from([
                ("NAME", t.name_any()),
                ("ACCOUNT", status.account_id.unwrap_or_default()),
                ("READY", ready.map(|c| c.status.clone()).unwrap_or_default()),
                ("PHASE", status.phase.unwrap_or_default()),
                ("REASON", ready.map(|c| c.reason.clone()).unwrap_or_default()),
                ("OU", t.spec.organizational_unit.clone().unwrap_or_default()),
            ])
        })
        .collect();
    let columns = ["NAME", "ACCOUNT", "READY", "PHASE", "REASON", "OU"];
    let width = |c: &str| rows.iter().map(|r| r[c].len()).chain([c.len()]).max().unwrap_or(0);
    let widths: Vec<usize> = columns.iter().map(|c| width(c)).collect();
    println!("Silo demo, {:.0} s in", elapsed.as_secs_f64());
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("   ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(columns.to_vec()));
    for row in &rows {
        println!("{}", line(columns.iter().map(|c| row[c].as_str()).collect()));
    }
}
