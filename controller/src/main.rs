//! The `silo` command: `silo run` runs the controller, `silo crd` prints its CRDs, `silo
//! import` and `silo orphans` take over an existing organization.

use std::{num::NonZeroU32, time::Duration};

use clap::{Parser, Subcommand};
use silo::{
    aws::{Aws, AwsSettings, BudgetLimits},
    leader::Leadership,
    metrics::METRICS,
    metrics::{self, Readiness},
    telemetry::{self, LogFormat},
    tenant::Settings,
};

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
}

#[derive(clap::Args)]
struct RunArgs {
    /// Email for Tenants without spec.email; {tenant} is replaced by the Tenant's name.
    #[arg(long, env = "SILO_EMAIL_TEMPLATE", default_value = "aws+{tenant}@example.com")]
    email_template: String,

    /// Create organizational units named in spec.organizationalUnit paths that do not exist.
    #[arg(long, env = "SILO_CREATE_MISSING_OUS")]
    create_missing_ous: bool,

    /// An OU (path like /Tenants, or id) tenant accounts may be placed in, with everything
    /// below it; repeat for several. Without it, anywhere but the root: set it in production.
    #[arg(long = "tenant-ou-root", env = "SILO_TENANT_OU_ROOTS", value_delimiter = ',')]
    tenant_ou_roots: Vec<String>,

    /// How often a Ready tenant is verified against AWS, in seconds. Each tenant has its own
    /// moment in the period, so a fleet is spread evenly over it.
    #[arg(long, env = "SILO_RESYNC_SECONDS", default_value_t = 3 * 3600)]
    resync_seconds: u64,

    /// How often the organization index (accounts, their OUs and state) is refreshed with a
    /// full sweep of the organization, in seconds.
    #[arg(long, env = "SILO_INDEX_REFRESH_SECONDS", default_value_t = 3600)]
    index_refresh_seconds: u64,

    /// CreateAccount requests AWS runs at once for the organization (AWS's quota is 5).
    #[arg(long, env = "SILO_MAX_CONCURRENT_CREATIONS", default_value_t = 5)]
    max_concurrent_creations: usize,

    /// How many Tenants are reconciled at once.
    #[arg(long, env = "SILO_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,

    /// Close the AWS account of a deleted Tenant whose deletionPolicy is Close. Without this
    /// flag such Tenants wait, Stalled with AccountClosureDisabled, and nothing is closed.
    #[arg(long, env = "SILO_ALLOW_ACCOUNT_CLOSURE")]
    allow_account_closure: bool,

    /// Close at most this many accounts in any 24 hours; further closures wait in a queue.
    /// A guard against a GitOps prune deleting many Tenants at once.
    #[arg(long, env = "SILO_MAX_ACCOUNT_CLOSURES_PER_DAY", default_value_t = 10)]
    max_account_closures_per_day: u32,

    /// Look again at a Stalled tenant at least this often, in seconds. Each Stalled reason has
    /// its own period (10 minutes for most, see docs/api-reference.md); this only shortens them.
    #[arg(long, env = "SILO_MAX_STALLED_RETRY_SECONDS")]
    max_stalled_retry_seconds: Option<u64>,

    /// How long the role of a tenant's baseline may stay unassumable (a brand-new account's
    /// role takes a few minutes) before the tenant is Stalled with RoleNotAssumable, in seconds.
    #[arg(long, env = "SILO_ROLE_PATIENCE_SECONDS", default_value_t = 15 * 60)]
    role_patience_seconds: u64,

    /// Namespace Silo runs in; the closure ledger ConfigMap lives there.
    #[arg(long, env = "POD_NAMESPACE", default_value = "silo-system")]
    namespace: String,

    /// Namespace of the Secrets holding Baselines' external ids. Silo's RBAC lets it read
    /// Secrets there and nowhere else: keep nothing else in it.
    #[arg(long, env = "SILO_EXTERNAL_ID_NAMESPACE", default_value = "silo-external-ids")]
    external_id_namespace: String,

    /// AWS Organizations requests started per second, for the whole fleet.
    #[arg(long, env = "SILO_AWS_REQUESTS_PER_SECOND", default_value_t = NonZeroU32::new(10).unwrap())]
    aws_requests_per_second: NonZeroU32,

    /// AWS Organizations requests in flight at once, for the whole fleet.
    #[arg(long, env = "SILO_AWS_MAX_IN_FLIGHT", default_value_t = 8)]
    aws_max_in_flight: usize,

    /// STS requests (AssumeRole into tenant accounts) started per second.
    #[arg(long, env = "SILO_STS_REQUESTS_PER_SECOND", default_value_t = NonZeroU32::new(20).unwrap())]
    sts_requests_per_second: NonZeroU32,

    /// CloudFormation requests started per second in each tenant account and region.
    #[arg(long, env = "SILO_CLOUDFORMATION_REQUESTS_PER_SECOND", default_value_t = NonZeroU32::new(5).unwrap())]
    cloudformation_requests_per_second: NonZeroU32,

    /// AWS Account Management requests (account names, alternate contacts) started per second.
    #[arg(long, env = "SILO_ACCOUNT_REQUESTS_PER_SECOND", default_value_t = NonZeroU32::new(5).unwrap())]
    account_requests_per_second: NonZeroU32,

    /// A YAML file of alternate contacts every tenant account gets where its spec.contacts sets
    /// none: `security`, `billing`, `operations`, each with name, title, email and phone
    /// (mount a ConfigMap there; read at start).
    #[arg(long, env = "SILO_DEFAULT_CONTACTS_FILE")]
    default_contacts_file: Option<std::path::PathBuf>,

    /// A role in the management account to assume before anything else (the controller's
    /// own identity comes from the standard AWS chain: environment, IRSA, EKS Pod Identity).
    #[arg(long, env = "SILO_MANAGEMENT_ROLE_ARN")]
    management_role_arn: Option<String>,

    /// Tag each tenant session with the tenant (CloudTrail shows it). The role's trust policy
    /// must allow sts:TagSession; set to false for roles that do not.
    #[arg(long, env = "SILO_SESSION_TAGS", default_value_t = true, action = clap::ArgAction::Set)]
    session_tags: bool,

    /// Run the controllers only while holding a Lease, so several replicas can run and only
    /// one acts. Turn off only for a single replica you start by hand.
    #[arg(long, env = "SILO_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,

    /// Name of the leader-election Lease, in --namespace.
    #[arg(long, env = "SILO_LEASE_NAME", default_value = "silo-controller")]
    lease_name: String,

    /// How long the Lease lasts without renewal: how soon a replica takes over from a dead leader.
    #[arg(long, env = "SILO_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,

    /// Where to serve /metrics (Prometheus), /healthz and /readyz.
    #[arg(long, env = "SILO_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    metrics_address: std::net::SocketAddr,

    /// Log format.
    #[arg(long, env = "SILO_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", silo::api::crds_yaml()?);
            Ok(())
        }
        Command::Import(args) => {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            silo::takeover::import::run(*args).await
        }
        Command::Orphans(args) => {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            silo::takeover::orphans::run(*args).await
        }
        Command::Run(args) => {
            telemetry::init(args.log_format);
            // kube and the AWS SDK both use rustls; pick its crypto provider once, explicitly,
            // so a build that links more than one provider cannot panic at the first request.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let settings = Settings {
                email_template: args.email_template,
                create_missing_ous: args.create_missing_ous,
                tenant_ou_roots: args.tenant_ou_roots,
                resync_period: Duration::from_secs(args.resync_seconds.max(1)),
                index_refresh_period: Duration::from_secs(args.index_refresh_seconds.max(1)),
                creation_slots: args.max_concurrent_creations.max(1),
                concurrency: args.concurrency,
                allow_account_closure: args.allow_account_closure,
                max_account_closures_per_day: args.max_account_closures_per_day,
                max_stalled_retry: args.max_stalled_retry_seconds.map(|s| Duration::from_secs(s.max(1))),
                role_patience: Duration::from_secs(args.role_patience_seconds),
                namespace: args.namespace,
                external_id_namespace: args.external_id_namespace,
                default_contacts: match &args.default_contacts_file {
                    Some(path) => silo::tenant::settings::read_default_contacts(path)?,
                    None => Default::default(),
                },
            };
            let defaults = AwsSettings::defaults();
            let aws_settings = AwsSettings {
                limits: BudgetLimits {
                    requests_per_second: args.aws_requests_per_second,
                    max_in_flight: args.aws_max_in_flight,
                },
                sts_limits: BudgetLimits { requests_per_second: args.sts_requests_per_second, ..defaults.sts_limits },
                cloudformation_limits: BudgetLimits {
                    requests_per_second: args.cloudformation_requests_per_second,
                    ..defaults.cloudformation_limits
                },
                account_limits: BudgetLimits {
                    requests_per_second: args.account_requests_per_second,
                    ..defaults.account_limits
                },
                management_role_arn: args.management_role_arn,
                tag_sessions: args.session_tags,
            };
            let readiness = Readiness::default();
            let server = tokio::spawn(metrics::serve(args.metrics_address, readiness.clone()));
            let client = silo::preflight::kube_client().await?;
            let role = aws_settings.management_role_arn.as_deref();
            silo::preflight::check(&client, &settings.namespace, &args.lease_name, role).await?;
            let aws = Aws::from_env(&aws_settings).await;
            readiness.set_ready();
            let result = if args.leader_election {
                let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("silo-{}", std::process::id()));
                let namespace = settings.namespace.clone();
                let leadership = tokio::select! {
                    leadership = Leadership::acquire(client.clone(), &namespace, &args.lease_name, &identity, args.lease_seconds) => leadership?,
                    _ = shutdown_signal() => return Ok(()),
                };
                let aws = aws.fenced(leadership.fence());
                let stop = async move {
                    tokio::select! {
                        _ = shutdown_signal() => {}
                        _ = leadership.lost() => {}
                    }
                };
                silo::run(client, aws, settings, stop).await
            } else {
                METRICS.leader.set(1);
                silo::run(client, aws, settings, shutdown_signal()).await
            };
            METRICS.leader.set(0);
            server.abort();
            result
        }
    }
}

/// Completes on SIGINT or SIGTERM (what Kubernetes sends before killing a pod).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
