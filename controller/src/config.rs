//! Process configuration: `silo run`'s flags ([`RunArgs`], each with its environment
//! variable) and what they become: the controllers' [`Config`] and the AWS clients'
//! [`AwsConfig`]. Nothing else in Silo reads flags or the environment for configuration.
//!
//! Every flag is documented in docs/configuration.md (`make docs-check` fails when one is
//! missing there).

use std::{num::NonZeroU32, time::Duration};

use kube::ResourceExt;

use crate::{
    api::{AlternateContacts, Contact, ContactKind, Organization},
    aws::{AwsConfig, BudgetLimits},
    telemetry::LogFormat,
};

/// `silo run`'s flags.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Email for Tenants without spec.email; {tenant} is replaced by the Tenant's name.
    #[arg(long, env = "SILO_EMAIL_TEMPLATE", default_value = "aws+{tenant}@example.com")]
    pub email_template: String,

    /// Create organizational units named in spec.organizationalUnit paths that do not exist.
    #[arg(long, env = "SILO_CREATE_MISSING_OUS")]
    pub create_missing_ous: bool,

    /// An OU (path like /Tenants, or id) tenant accounts may be placed in, with everything
    /// below it; repeat for several. Without it, anywhere but the root: set it in production.
    #[arg(long = "tenant-ou-root", env = "SILO_TENANT_OU_ROOTS", value_delimiter = ',')]
    pub tenant_ou_roots: Vec<String>,

    /// How often a Ready tenant is verified against AWS, in seconds. Each tenant has its own
    /// moment in the period, so a fleet is spread evenly over it.
    #[arg(long, env = "SILO_RESYNC_SECONDS", default_value_t = 3 * 3600)]
    pub resync_seconds: u64,

    /// How often the organization index (accounts, their OUs and state) is refreshed with a
    /// full sweep of the organization, in seconds.
    #[arg(long, env = "SILO_INDEX_REFRESH_SECONDS", default_value_t = 3600)]
    pub index_refresh_seconds: u64,

    /// CreateAccount requests AWS runs at once for the organization (AWS's quota is 5).
    #[arg(long, env = "SILO_MAX_CONCURRENT_CREATIONS", default_value_t = 5)]
    pub max_concurrent_creations: usize,

    /// The organization's account quota ("Default maximum number of accounts" in Service
    /// Quotas, us-east-1; AWS's default is 10): with it, AccountPool refills stop
    /// --pool-account-headroom accounts short of it, so Tenants keep room to create accounts.
    /// Without it, refills stop only when AWS refuses one with ACCOUNT_LIMIT_EXCEEDED.
    #[arg(long, env = "SILO_ACCOUNT_LIMIT")]
    pub account_limit: Option<u32>,

    /// How many accounts below --account-limit AccountPool refills stop: the room kept for
    /// Tenants that create their own account. Closed accounts count against the limit for 90
    /// days after their closure, and so does every creation in flight.
    #[arg(long, env = "SILO_POOL_ACCOUNT_HEADROOM", default_value_t = 10)]
    pub pool_account_headroom: u32,

    /// How many Tenants are reconciled at once.
    #[arg(long, env = "SILO_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// Close the AWS account of a deleted Tenant whose deletionPolicy is Close. Without this
    /// flag such Tenants wait, Stalled with AccountClosureDisabled, and nothing is closed.
    #[arg(long, env = "SILO_ALLOW_ACCOUNT_CLOSURE")]
    pub allow_account_closure: bool,

    /// Close at most this many accounts in any 24 hours; further closures wait in a queue.
    /// A guard against a GitOps prune deleting many Tenants at once.
    #[arg(long, env = "SILO_MAX_ACCOUNT_CLOSURES_PER_DAY", default_value_t = 10)]
    pub max_account_closures_per_day: u32,

    /// Look again at a Stalled tenant at least this often, in seconds. Each Stalled reason has
    /// its own period (10 minutes for most, see docs/api-reference.md); this only shortens them.
    #[arg(long, env = "SILO_MAX_STALLED_RETRY_SECONDS")]
    pub max_stalled_retry_seconds: Option<u64>,

    /// How long the role of a tenant's baseline may stay unassumable (a brand-new account's
    /// role takes a few minutes) before the tenant is Stalled with RoleNotAssumable, in seconds.
    #[arg(long, env = "SILO_ROLE_PATIENCE_SECONDS", default_value_t = 15 * 60)]
    pub role_patience_seconds: u64,

    /// Namespace Silo runs in; the closure ledger ConfigMap lives there.
    #[arg(long, env = "POD_NAMESPACE", default_value = "silo-system")]
    pub namespace: String,

    /// Namespace of the Secrets holding Baselines' external ids. Silo's RBAC lets it read
    /// Secrets there and nowhere else: keep nothing else in it.
    #[arg(long, env = "SILO_EXTERNAL_ID_NAMESPACE", default_value = "silo-external-ids")]
    pub external_id_namespace: String,

    /// AWS Organizations requests started per second, for the whole fleet.
    #[arg(long, env = "SILO_AWS_REQUESTS_PER_SECOND", default_value_t = NonZeroU32::new(10).unwrap())]
    pub aws_requests_per_second: NonZeroU32,

    /// AWS Organizations requests in flight at once, for the whole fleet.
    #[arg(long, env = "SILO_AWS_MAX_IN_FLIGHT", default_value_t = 8)]
    pub aws_max_in_flight: usize,

    /// STS requests (AssumeRole into tenant accounts) started per second.
    #[arg(long, env = "SILO_STS_REQUESTS_PER_SECOND", default_value_t = NonZeroU32::new(20).unwrap())]
    pub sts_requests_per_second: NonZeroU32,

    /// CloudFormation requests started per second in each tenant account and region.
    #[arg(long, env = "SILO_CLOUDFORMATION_REQUESTS_PER_SECOND", default_value_t = NonZeroU32::new(5).unwrap())]
    pub cloudformation_requests_per_second: NonZeroU32,

    /// AWS Account Management requests (account names, alternate contacts) started per second.
    #[arg(long, env = "SILO_ACCOUNT_REQUESTS_PER_SECOND", default_value_t = NonZeroU32::new(5).unwrap())]
    pub account_requests_per_second: NonZeroU32,

    /// A YAML file of alternate contacts every tenant account gets where its spec.contacts sets
    /// none: `security`, `billing`, `operations`, each with name, title, email and phone
    /// (mount a ConfigMap there; read at start).
    #[arg(long, env = "SILO_DEFAULT_CONTACTS_FILE")]
    pub default_contacts_file: Option<std::path::PathBuf>,

    /// A role in the management account to assume before anything else (the controller's
    /// own identity comes from the standard AWS chain: environment, IRSA, EKS Pod Identity).
    #[arg(long, env = "SILO_MANAGEMENT_ROLE_ARN")]
    pub management_role_arn: Option<String>,

    /// Tag each tenant session with the tenant (`silo-tenant`; CloudTrail shows it). Off by
    /// default: with tags, AWS also requires sts:TagSession in the tenant role's trust policy,
    /// which the OrganizationAccountAccessRole that CreateAccount makes does not allow.
    #[arg(long, env = "SILO_SESSION_TAGS", default_value_t = false, action = clap::ArgAction::Set)]
    pub session_tags: bool,

    /// Run the controllers only while holding a Lease, so several replicas can run and only
    /// one acts. Turn off only for a single replica you start by hand.
    #[arg(long, env = "SILO_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader-election Lease, in --namespace.
    #[arg(long, env = "SILO_LEASE_NAME", default_value = "silo-controller")]
    pub lease_name: String,

    /// How long the Lease lasts without renewal: how soon a replica takes over from a dead leader.
    #[arg(long, env = "SILO_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,

    /// Where to serve /metrics (Prometheus), /healthz and /readyz.
    #[arg(long, env = "SILO_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    pub metrics_address: std::net::SocketAddr,

    /// Log format.
    #[arg(long, env = "SILO_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// How the controllers behave: built from `silo run`'s flags ([`RunArgs::config`]), or by a
/// test harness directly.
#[derive(Clone, Debug)]
pub struct Config {
    /// Email for tenants without `spec.email`; `{tenant}` is replaced by metadata.name.
    pub email_template: String,
    /// Create OUs named in a path that do not exist yet.
    pub create_missing_ous: bool,
    /// Where tenant accounts may go: OU paths or ids, and everything below them. Empty:
    /// anywhere but the root.
    pub tenant_ou_roots: Vec<String>,
    /// How often a Ready tenant is verified against AWS.
    pub resync_period: Duration,
    /// How often the organization index is refreshed with a full sweep.
    pub index_refresh_period: Duration,
    /// CreateAccount requests AWS runs at once for the organization.
    pub creation_slots: usize,
    /// The organization's account quota, when known: refills stop `pool_account_headroom`
    /// short of it.
    pub account_limit: Option<u32>,
    /// The room below `account_limit` kept for Tenants' own creations.
    pub pool_account_headroom: u32,
    /// Tenants reconciled at once.
    pub concurrency: u16,
    /// Close accounts of deleted `Close` Tenants. Off by default: see `tenant::closure`.
    pub allow_account_closure: bool,
    /// At most this many closures in any 24 hours.
    pub max_account_closures_per_day: u32,
    /// Look again at a Stalled tenant at least this often (each reason has its own period;
    /// this only shortens it). `None`: the reasons' own periods.
    pub max_stalled_retry: Option<Duration>,
    /// How long a tenant's baseline role may stay unassumable before the tenant is Stalled.
    pub role_patience: Duration,
    /// The controller's namespace, where the closure ledger lives.
    pub namespace: String,
    /// The namespace of the Secrets holding Baselines' external ids: the only Secrets Silo
    /// can read.
    pub external_id_namespace: String,
    /// Alternate contacts for every tenant account, by kind, where `spec.contacts` sets none.
    pub default_contacts: crate::api::AlternateContacts,
    /// The Organization (silo.dev) these controllers act for; `None`: the default
    /// organization, which the flags describe and Tenants without `spec.organization` use.
    pub organization: Option<String>,
}

impl Config {
    /// The configuration of the controllers acting for `organization`: its spec where it says
    /// something, the flags' values (`self`, `aws`) where it does not. `external_id`: the
    /// management role's external id, read from the Secret the spec names. Pure.
    pub fn for_organization(
        &self,
        aws: &AwsConfig,
        organization: &Organization,
        external_id: Option<String>,
    ) -> (Config, AwsConfig) {
        let spec = &organization.spec;
        let budgets = &spec.budgets;
        let rate = |value: Option<u32>, flag: NonZeroU32| value.and_then(NonZeroU32::new).unwrap_or(flag);
        let config = Config {
            organization: Some(organization.name_any()),
            tenant_ou_roots: spec.tenant_ou_roots.clone(),
            account_limit: spec.account_limit.or(self.account_limit),
            creation_slots: budgets.creation_slots.map_or(self.creation_slots, |n| n.max(1) as usize),
            allow_account_closure: spec.closure.allowed.unwrap_or(self.allow_account_closure),
            max_account_closures_per_day: spec.closure.max_per_day.unwrap_or(self.max_account_closures_per_day),
            default_contacts: spec.default_contacts.clone().unwrap_or_else(|| self.default_contacts.clone()),
            ..self.clone()
        };
        let aws = AwsConfig {
            limits: BudgetLimits {
                requests_per_second: rate(budgets.organizations_requests_per_second, aws.limits.requests_per_second),
                max_in_flight: budgets.organizations_max_in_flight.map_or(aws.limits.max_in_flight, |n| n as usize),
            },
            sts_limits: BudgetLimits {
                requests_per_second: rate(budgets.sts_requests_per_second, aws.sts_limits.requests_per_second),
                ..aws.sts_limits
            },
            management_role_arn: Some(spec.management_role_arn.clone()),
            management_external_id: external_id,
            organization: Some(organization.name_any()),
            region: spec.region.clone().or_else(|| aws.region.clone()),
            ..aws.clone()
        };
        (config, aws)
    }
}

impl RunArgs {
    /// The controllers' configuration; reads `--default-contacts-file` when given.
    pub fn config(&self) -> anyhow::Result<Config> {
        Ok(Config {
            email_template: self.email_template.clone(),
            create_missing_ous: self.create_missing_ous,
            tenant_ou_roots: self.tenant_ou_roots.clone(),
            resync_period: Duration::from_secs(self.resync_seconds.max(1)),
            index_refresh_period: Duration::from_secs(self.index_refresh_seconds.max(1)),
            creation_slots: self.max_concurrent_creations.max(1),
            account_limit: self.account_limit,
            pool_account_headroom: self.pool_account_headroom,
            concurrency: self.concurrency,
            allow_account_closure: self.allow_account_closure,
            max_account_closures_per_day: self.max_account_closures_per_day,
            max_stalled_retry: self.max_stalled_retry_seconds.map(|s| Duration::from_secs(s.max(1))),
            role_patience: Duration::from_secs(self.role_patience_seconds),
            namespace: self.namespace.clone(),
            external_id_namespace: self.external_id_namespace.clone(),
            default_contacts: match &self.default_contacts_file {
                Some(path) => read_default_contacts(path)?,
                None => Default::default(),
            },
            organization: None,
        })
    }

    /// How the AWS clients are paced, and which identity they use.
    pub fn aws(&self) -> AwsConfig {
        let defaults = AwsConfig::defaults();
        AwsConfig {
            limits: BudgetLimits {
                requests_per_second: self.aws_requests_per_second,
                max_in_flight: self.aws_max_in_flight,
            },
            sts_limits: BudgetLimits { requests_per_second: self.sts_requests_per_second, ..defaults.sts_limits },
            cloudformation_limits: BudgetLimits {
                requests_per_second: self.cloudformation_requests_per_second,
                ..defaults.cloudformation_limits
            },
            account_limits: BudgetLimits {
                requests_per_second: self.account_requests_per_second,
                ..defaults.account_limits
            },
            management_role_arn: self.management_role_arn.clone(),
            management_external_id: None,
            region: None,
            organization: None,
            session_name: replica_identity(),
            tag_sessions: self.session_tags,
        }
    }
}

/// This replica's name in Leases and in AWS session names: its pod's (`POD_NAME`), else
/// `silo-<process id>`.
pub fn replica_identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| format!("silo-{}", std::process::id()))
}

/// Reads the controller's default contacts (`--default-contacts-file`): YAML with the keys
/// `security`, `billing` and `operations`, each optional; checked against AWS's limits.
pub fn read_default_contacts(path: &std::path::Path) -> anyhow::Result<AlternateContacts> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let contacts: AlternateContacts =
        serde_yaml::from_str(&text).with_context(|| format!("{} is not a contacts file", path.display()))?;
    for kind in ContactKind::ALL {
        if let Some(contact) = contacts.get(kind) {
            check_contact(contact).with_context(|| format!("{}: the {} contact", path.display(), kind.as_str()))?;
        }
    }
    Ok(contacts)
}

/// AWS's limits on a contact, the same the Tenant schema enforces at admission.
fn check_contact(contact: &Contact) -> anyhow::Result<()> {
    let fields = [("name", &contact.name, 64), ("title", &contact.title, 50), ("email", &contact.email, 254)];
    for (field, value, max) in fields {
        anyhow::ensure!((1..=max).contains(&value.chars().count()), "{field} must be 1 to {max} characters");
    }
    anyhow::ensure!(
        (1..=25).contains(&contact.phone.len())
            && contact.phone.chars().all(|c| c.is_ascii_digit() || " ()+-".contains(c)),
        "phone must be 1 to 25 digits, spaces and ( ) + -"
    );
    let (local, domain) = contact.email.split_once('@').unwrap_or_default();
    anyhow::ensure!(!local.is_empty() && domain.contains('.'), "email must look like name@example.com");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ClosureSpec, OrganizationBudgets, OrganizationSpec};

    #[derive(clap::Parser)]
    struct Run {
        #[command(flatten)]
        args: RunArgs,
    }

    fn flags() -> (Config, AwsConfig) {
        let run = <Run as clap::Parser>::parse_from(["silo", "--tenant-ou-root", "/Tenants", "--account-limit", "10"]);
        (run.args.config().unwrap(), run.args.aws())
    }

    #[test]
    fn an_organization_takes_its_spec_where_it_says_something_and_the_flags_elsewhere() {
        let (config, aws) = flags();
        let bare = Organization::new(
            "eu",
            OrganizationSpec { management_role_arn: "arn:aws:iam::111122223333:role/m".into(), ..Default::default() },
        );
        let (c, a) = config.for_organization(&aws, &bare, None);
        assert_eq!(c.organization.as_deref(), Some("eu"));
        assert_eq!((c.creation_slots, c.account_limit, c.allow_account_closure), (5, Some(10), false), "the flags'");
        assert!(c.tenant_ou_roots.is_empty(), "OU roots are the organization's own: the flags' name another's OUs");
        assert_eq!(a.management_role_arn.as_deref(), Some("arn:aws:iam::111122223333:role/m"));
        assert_eq!(a.organization.as_deref(), Some("eu"), "its requests count for it");
        assert_eq!((a.limits.requests_per_second.get(), a.limits.max_in_flight), (10, 8));

        let full = Organization::new(
            "us",
            OrganizationSpec {
                management_role_arn: "arn:aws:iam::444455556666:role/m".into(),
                region: Some("us-west-2".into()),
                tenant_ou_roots: vec!["/Customers".into()],
                account_limit: Some(5000),
                budgets: OrganizationBudgets {
                    organizations_requests_per_second: Some(3),
                    organizations_max_in_flight: Some(2),
                    sts_requests_per_second: Some(7),
                    creation_slots: Some(2),
                },
                closure: ClosureSpec { allowed: Some(true), max_per_day: Some(1) },
                ..Default::default()
            },
        );
        let (c, a) = config.for_organization(&aws, &full, Some("secret".into()));
        assert_eq!(c.tenant_ou_roots, ["/Customers"]);
        assert_eq!((c.creation_slots, c.account_limit), (2, Some(5000)));
        assert_eq!((c.allow_account_closure, c.max_account_closures_per_day), (true, 1));
        assert_eq!((a.limits.requests_per_second.get(), a.limits.max_in_flight), (3, 2));
        assert_eq!(a.sts_limits.requests_per_second.get(), 7);
        assert_eq!((a.region.as_deref(), a.management_external_id.as_deref()), (Some("us-west-2"), Some("secret")));
        assert_eq!(c.namespace, config.namespace, "what is not the organization's stays the flags'");
    }
}
