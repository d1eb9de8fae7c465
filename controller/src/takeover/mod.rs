//! Taking over an existing organization: `silo import` writes Tenants that adopt accounts
//! made by scripts or Control Tower, `silo orphans` lists the accounts no Tenant has, and the
//! controller keeps `silo_orphan_accounts{kind}` current ([`orphans::publish`]).
//!
//! ## Guarantees
//! - `silo import` and `silo orphans` only read: they never write to AWS or to the cluster.
//!   Import prints manifests; a person applies them (or commits them to GitOps).
//! - Who holds an account is decided by Silo's one ownership rule
//!   ([`crate::contract::ownership`]), for both commands, the metric and the controller: a
//!   Tenant holds an account it names in `status.accountId` or `spec.accountId`, or one that
//!   carries its UID in the `silo.dev/tenant-uid` tag.
//!
//! ## Shape
//! [`OrgTree::read`] walks the organization once (the OU tree, and the accounts under each
//! parent); tags are listed afterwards, only for the accounts a decision needs them for. The
//! decisions ([`import::judge`], [`import::assign_names`], [`orphans::classify`]) are pure and
//! table-tested.

pub mod import;
pub mod orphans;

use std::{collections::BTreeMap, num::NonZeroU32, time::Duration};

use crate::{
    aws::{AwsConfig, AwsError, BudgetLimits, Organizations, Priority, organizations::Account},
    org::units,
    retry::Backoff,
};

/// How the commands reach AWS: the same knobs as `silo run`'s, with the same defaults.
#[derive(clap::Args, Clone, Debug)]
pub struct Pacing {
    /// AWS Organizations requests started per second. This budget is not shared with a
    /// running controller: lower both while an import runs (AWS's own limit is per organization).
    #[arg(long, env = "SILO_AWS_REQUESTS_PER_SECOND", default_value_t = NonZeroU32::new(10).unwrap())]
    pub aws_requests_per_second: NonZeroU32,

    /// AWS Organizations requests in flight at once.
    #[arg(long, env = "SILO_AWS_MAX_IN_FLIGHT", default_value_t = 8)]
    pub aws_max_in_flight: usize,

    /// A role in the management account to assume before anything else.
    #[arg(long, env = "SILO_MANAGEMENT_ROLE_ARN")]
    pub management_role_arn: Option<String>,

    /// Read this Organization (`kubectl get organizations`): its management role, Region,
    /// external id and tenant OU roots, instead of the flags'. Left out: the default
    /// organization, the one the flags describe.
    #[arg(long)]
    pub organization: Option<String>,

    /// The namespace of the Organization's external-id Secret (the controller's flag).
    #[arg(long, env = "SILO_EXTERNAL_ID_NAMESPACE", default_value = "silo-external-ids")]
    pub external_id_namespace: String,
}

/// The organization a command reads: the default one, or an Organization object's.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// The Organization's name; `None`: the default organization.
    pub organization: Option<String>,
    /// The Organization's tenant OU roots (the default organization's are flags).
    pub tenant_ou_roots: Vec<String>,
}

impl Scope {
    /// Whether a Tenant's or pool's `spec.organization` names this organization.
    pub fn contains(&self, organization: Option<&str>) -> bool {
        organization.filter(|o| !o.is_empty()) == self.organization.as_deref()
    }
}

impl Pacing {
    /// The Organizations client of the organization to read (`--organization`, read from the
    /// cluster through `client`, else the flags'), paced by these flags, and that
    /// organization.
    pub async fn organizations(&self, client: Option<&kube::Client>) -> anyhow::Result<(Organizations, Scope)> {
        use anyhow::Context as _;
        let mut config = AwsConfig {
            limits: BudgetLimits {
                requests_per_second: self.aws_requests_per_second,
                max_in_flight: self.aws_max_in_flight.max(1),
            },
            management_role_arn: self.management_role_arn.clone(),
            ..AwsConfig::defaults()
        };
        let mut scope = Scope::default();
        if let Some(name) = &self.organization {
            let client = client.context("--organization reads the Organization from the cluster: drop --no-cluster")?;
            let org =
                kube::Api::<crate::api::Organization>::all(client.clone()).get(name).await.with_context(|| {
                    format!("--organization {name}: cannot read the Organization (kubectl get organizations)")
                })?;
            config.management_external_id = match &org.spec.external_id {
                Some(secret) => {
                    crate::baseline::external_id::read(client, &self.external_id_namespace, &secret.name, &secret.key)
                        .await
                        .with_context(|| {
                            format!(
                                "the external id of Organization {name} (Secret {}/{})",
                                self.external_id_namespace, secret.name
                            )
                        })?
                }
                None => None,
            };
            config.management_role_arn = Some(org.spec.management_role_arn.clone());
            config.region = org.spec.region.clone();
            scope = Scope { organization: Some(name.clone()), tenant_ou_roots: org.spec.tenant_ou_roots.clone() };
        }
        Ok((crate::aws::Aws::from_env(&config).await.organizations, scope))
    }
}

/// The organization as one walk saw it.
#[derive(Clone, Debug, Default)]
pub struct OrgTree {
    pub management_account: String,
    pub root: String,
    /// Every OU: its name and its parent (an OU id or the root id).
    pub units: BTreeMap<String, (String, String)>,
    /// Every account with its parent, in the order the walk found them.
    pub accounts: Vec<(Account, String)>,
}

impl OrgTree {
    /// Walks the whole organization at user priority ([`Organizations::walk`], the walk the
    /// controller's index sweep makes). A walk that fails after the SDK's retries starts again,
    /// [`patiently`].
    pub async fn read(api: &Organizations) -> Result<Self, AwsError> {
        let walk = patiently(|| api.walk(Priority::User)).await?;
        Ok(Self {
            management_account: walk.org.management_account_id,
            root: walk.root,
            units: walk.units.into_iter().map(|(unit, parent)| (unit.id, (unit.name, parent))).collect(),
            accounts: walk.accounts,
        })
    }

    /// The chain of parents from `parent` up to the root, both included.
    pub fn ancestors(&self, parent: &str) -> Vec<String> {
        units::ancestors(parent, |id| self.units.get(id).map(|(_, parent)| parent.clone()))
    }

    /// The OU path of a parent from the root (`/Tenants/Prod`); `None` for the root itself.
    /// An OU whose name holds a '/' cannot be written as a path: then its id is returned.
    pub fn path_of(&self, parent: &str) -> Option<String> {
        if parent == self.root {
            return None;
        }
        let mut names = vec![];
        let mut at = parent;
        while let Some((name, up)) = self.units.get(at) {
            if name.contains('/') {
                return Some(parent.to_string());
            }
            names.push(name.as_str());
            at = up;
        }
        names.reverse();
        Some(format!("/{}", names.join("/")))
    }

    /// The id of an OU named by id or by path from the root (`/` is the root); `None` when the
    /// organization has no such OU.
    pub fn resolve(&self, spec: &str) -> Option<String> {
        units::resolve(
            spec,
            &self.root,
            |id| self.units.contains_key(id),
            |parent, name| self.units.iter().find(|(_, (n, p))| p == parent && n == name).map(|(id, _)| id.clone()),
        )
    }
}

/// How often a command tries one AWS call that keeps being throttled or failing transiently.
const PATIENCE: u32 = 10;
/// The pause between those tries: 1 s doubling, at most a minute.
const PATIENT_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// Runs an AWS call until it succeeds, retrying throttled and transient errors with a doubling
/// pause ([`PATIENT_BACKOFF`]) beyond the SDK's own retries: throttling is weather, and a command
/// that reads a whole organization must outlast it (other automation shares the quota).
pub async fn patiently<T, F>(call: impl Fn() -> F) -> Result<T, AwsError>
where
    F: Future<Output = Result<T, AwsError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(err) if err.is_retryable() && attempt < PATIENCE => {
                tracing::debug!(%err, attempt, "retrying");
                tokio::time::sleep(PATIENT_BACKOFF.pause(attempt)).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Tenant;

    pub fn account(id: &str, name: &str, state: &str) -> Account {
        Account {
            id: id.into(),
            arn: format!("arn:aws:organizations::123456789012:account/o-1/{id}"),
            name: name.into(),
            email: format!("{}@example.com", name.to_lowercase().replace(' ', "-")),
            state: state.into(),
        }
    }

    pub fn tenant(name: &str, uid: &str, spec_account: Option<&str>, status_account: Option<&str>) -> Tenant {
        let mut tenant = Tenant::new(name, Default::default());
        tenant.metadata.uid = Some(uid.into());
        tenant.spec.account_id = spec_account.map(Into::into);
        tenant.status = Some(crate::TenantStatus { account_id: status_account.map(Into::into), ..Default::default() });
        tenant
    }

    pub fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// r-1 > Tenants (ou-t) > Prod (ou-p); r-1 > Sandbox (ou-s); r-1 > "a/b" (ou-x).
    pub fn tree() -> OrgTree {
        OrgTree {
            management_account: "123456789012".into(),
            root: "r-1".into(),
            units: BTreeMap::from([
                ("ou-t".into(), ("Tenants".into(), "r-1".into())),
                ("ou-p".into(), ("Prod".into(), "ou-t".into())),
                ("ou-s".into(), ("Sandbox".into(), "r-1".into())),
                ("ou-x".into(), ("a/b".into(), "r-1".into())),
            ]),
            accounts: vec![],
        }
    }

    /// The walk's tree answers through the one OU resolver (`org::units`, tested there): a
    /// path written back by `path_of` resolves to the OU it came from.
    #[test]
    fn paths_round_trip_through_the_resolver() {
        let tree = tree();
        let cases: [(&str, Option<&str>); 4] =
            [("r-1", None), ("ou-t", Some("/Tenants")), ("ou-p", Some("/Tenants/Prod")), ("ou-x", Some("ou-x"))];
        for (parent, path) in cases {
            assert_eq!(tree.path_of(parent).as_deref(), path, "path of {parent}");
            assert_eq!(tree.resolve(path.unwrap_or("/")).as_deref(), Some(parent), "resolve {path:?}");
        }
        assert_eq!(tree.resolve("/Tenants/Staging"), None);
        assert_eq!(tree.ancestors("ou-p"), ["ou-p", "ou-t", "r-1"]);
    }
}
