//! Taking over an existing organization: `silo import` writes Tenants that adopt accounts
//! made by scripts or Control Tower, `silo orphans` lists the accounts no Tenant has, and the
//! controller keeps `silo_orphan_accounts{kind}` current ([`orphans::publish`]).
//!
//! ## Guarantees
//! - `silo import` and `silo orphans` only read: they never write to AWS or to the cluster.
//!   Import prints manifests; a person applies them (or commits them to GitOps).
//! - Who holds an account is decided in one place, [`TenantClaims`], for both commands and the
//!   metric: a Tenant holds an account it names in `status.accountId` or `spec.accountId`,
//!   or one that carries its UID in the `silo.dev/tenant-uid` tag.
//!
//! ## Shape
//! [`OrgTree::read`] walks the organization once (the OU tree, and the accounts under each
//! parent); tags are listed afterwards, only for the accounts a decision needs them for. The
//! decisions ([`import::judge`], [`import::assign_names`], [`orphans::classify`]) are pure and
//! table-tested.

pub mod import;
pub mod orphans;

use std::{collections::BTreeMap, num::NonZeroU32};

use kube::ResourceExt;

use crate::{
    Tenant,
    aws::{AwsError, AwsSettings, BudgetLimits, Organizations, Priority, organizations::Account},
    tenant::account::{TENANT_TAG, TENANT_UID_TAG},
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
}

impl Pacing {
    /// The Organizations client of the management account, paced by these flags.
    pub async fn organizations(&self) -> Organizations {
        let settings = AwsSettings {
            limits: BudgetLimits {
                requests_per_second: self.aws_requests_per_second,
                max_in_flight: self.aws_max_in_flight.max(1),
            },
            management_role_arn: self.management_role_arn.clone(),
            ..AwsSettings::defaults()
        };
        crate::aws::Aws::from_env(&settings).await.organizations
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
        ancestors(parent, |id| self.units.get(id).map(|(_, parent)| parent.clone()))
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
        resolve(
            spec,
            &self.root,
            |id| self.units.contains_key(id),
            |parent, name| self.units.iter().find(|(_, (n, p))| p == parent && n == name).map(|(id, _)| id.clone()),
        )
    }
}

/// How often a command tries one AWS call that keeps being throttled or failing transiently.
const PATIENCE: u32 = 10;

/// Runs an AWS call until it succeeds, retrying throttled and transient errors with a doubling
/// pause (1 s to 30 s) beyond the SDK's own retries: throttling is weather, and a command
/// that reads a whole organization must outlast it (other automation shares the quota).
pub async fn patiently<T, F>(call: impl Fn() -> F) -> Result<T, AwsError>
where
    F: Future<Output = Result<T, AwsError>>,
{
    let mut pause = std::time::Duration::from_secs(1);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(err) if err.is_retryable() && attempt < PATIENCE => {
                tracing::debug!(%err, attempt, "retrying");
                tokio::time::sleep(crate::tenant::jittered(pause)).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(30));
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// The chain of parents from `parent` up to the root, both included, by `parent_of` (which
/// answers `None` at the root, or for an OU it does not know).
pub fn ancestors(parent: &str, parent_of: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut chain = vec![parent.to_string()];
    while let Some(up) = parent_of(chain.last().expect("never empty")) {
        if chain.contains(&up) || chain.len() > 8 {
            break;
        }
        chain.push(up);
    }
    chain
}

/// The id of an OU given as an id (`ou-...`) or a path from the root, as `--tenant-ou-root`
/// and `spec.organizationalUnit` take them.
pub fn resolve(
    spec: &str,
    root: &str,
    has_unit: impl Fn(&str) -> bool,
    child_named: impl Fn(&str, &str) -> Option<String>,
) -> Option<String> {
    match crate::org::Target::parse(spec) {
        crate::org::Target::Id(id) => (id == root || has_unit(&id)).then_some(id),
        crate::org::Target::Path(names) => {
            let mut at = root.to_string();
            for name in &names {
                at = child_named(&at, name)?;
            }
            Some(at)
        }
    }
}

/// Which Tenant holds which account, from the Tenants in the cluster.
#[derive(Clone, Debug, Default)]
pub struct TenantClaims {
    /// Account id -> the Tenant naming it in `status.accountId` or `spec.accountId`.
    by_account: BTreeMap<String, String>,
    /// UID -> Tenant name.
    by_uid: BTreeMap<String, String>,
    /// Tenant names, for the import's names.
    pub names: std::collections::BTreeSet<String>,
}

/// Who holds an account, judged by the Tenants and the account's tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// A Tenant names it, or carries the UID it is tagged with.
    Tenant(String),
    /// It carries a `silo.dev/tenant-uid` tag of no Tenant: the Tenant that had it is gone.
    Gone {
        uid: String,
        tenant: Option<String>,
    },
    Nobody,
}

impl TenantClaims {
    pub fn of<'a>(tenants: impl IntoIterator<Item = &'a Tenant>) -> Self {
        let mut claims = Self::default();
        for tenant in tenants {
            let name = tenant.name_any();
            let status = tenant.status.as_ref().and_then(|s| s.account_id.clone());
            for account in [status, tenant.spec.account_id.clone()].into_iter().flatten() {
                claims.by_account.entry(account).or_insert_with(|| name.clone());
            }
            if let Some(uid) = tenant.uid() {
                claims.by_uid.insert(uid, name.clone());
            }
            claims.names.insert(name);
        }
        claims
    }

    /// The Tenant naming this account in its spec or status, if any (no tags needed).
    pub fn naming(&self, account_id: &str) -> Option<&str> {
        self.by_account.get(account_id).map(String::as_str)
    }

    /// Who holds an account with these tags.
    pub fn holder(&self, account_id: &str, tags: &BTreeMap<String, String>) -> Holder {
        if let Some(name) = self.naming(account_id) {
            return Holder::Tenant(name.to_string());
        }
        match tags.get(TENANT_UID_TAG) {
            Some(uid) => match self.by_uid.get(uid) {
                Some(name) => Holder::Tenant(name.clone()),
                None => Holder::Gone { uid: uid.clone(), tenant: tags.get(TENANT_TAG).cloned() },
            },
            None => Holder::Nobody,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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

    #[test]
    fn paths_ancestors_and_resolution() {
        let tree = tree();
        let cases: [(&str, Option<&str>); 4] =
            [("r-1", None), ("ou-t", Some("/Tenants")), ("ou-p", Some("/Tenants/Prod")), ("ou-x", Some("ou-x"))];
        for (parent, path) in cases {
            assert_eq!(tree.path_of(parent).as_deref(), path, "path of {parent}");
        }
        assert_eq!(tree.ancestors("ou-p"), ["ou-p", "ou-t", "r-1"]);
        assert_eq!(tree.ancestors("r-1"), ["r-1"]);
        let resolved: [(&str, Option<&str>); 6] = [
            ("/", Some("r-1")),
            ("/Tenants/Prod", Some("ou-p")),
            ("/Tenants/Staging", None),
            ("ou-s", Some("ou-s")),
            ("ou-nope-12345678", None),
            ("r-1", Some("r-1")),
        ];
        for (spec, id) in resolved {
            assert_eq!(tree.resolve(spec).as_deref(), id, "resolve {spec}");
        }
    }

    #[test]
    fn who_holds_an_account() {
        let tenants = [
            tenant("by-status", "uid-1", None, Some("111111111111")),
            tenant("by-spec", "uid-2", Some("222222222222"), None),
            tenant("by-tag", "uid-3", None, None),
        ];
        let claims = TenantClaims::of(&tenants);
        let uid = |u: &str| tags(&[(TENANT_UID_TAG, u), (TENANT_TAG, "old")]);
        let cases = [
            ("111111111111", tags(&[]), Holder::Tenant("by-status".into())),
            ("222222222222", tags(&[]), Holder::Tenant("by-spec".into())),
            ("333333333333", uid("uid-3"), Holder::Tenant("by-tag".into())),
            ("444444444444", uid("uid-gone"), Holder::Gone { uid: "uid-gone".into(), tenant: Some("old".into()) }),
            ("555555555555", tags(&[("team", "x")]), Holder::Nobody),
            // A Tenant naming the account wins over a stale tag on it (a restore in progress).
            ("111111111111", uid("uid-gone"), Holder::Tenant("by-status".into())),
        ];
        for (account, tags, want) in cases {
            assert_eq!(claims.holder(account, &tags), want, "{account} {tags:?}");
        }
    }
}
