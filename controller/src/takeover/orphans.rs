//! Orphans: accounts no Tenant has. `silo orphans` lists them; the controller keeps the gauge
//! `silo_orphan_accounts{kind}` current ([`publish`]). Both classify with [`classify`].
//!
//! Three kinds:
//! - `tagged_without_tenant`: the account carries Silo's `silo.dev/tenant-uid` tag, and no
//!   Tenant has that UID (its Tenant was deleted with `deletionPolicy: Retain`, or was
//!   recreated and so has another UID). Import takes it back with `silo.dev/previous-uid`.
//! - `untracked_in_tenant_ou`: the account is in one of the tenant OU roots
//!   (`--tenant-ou-root`) or below, without Silo's tag and without a Tenant: made out of band.
//! - `pool_surplus`: the account carries an AccountPool's tags, and no pool keeps it: the
//!   pool was deleted, or shrank below the accounts it had ready. Silo never closes them; a
//!   person closes them, or adopts them with a Tenant.
//!
//! Only ACTIVE accounts are orphans: a closed account is nobody's to keep clean, and the
//! management account never is.
//!
//! ## Cost
//! An account a Tenant names (`status.accountId`, `spec.accountId`) needs no look at its tags.
//! Only the others, the *candidates*, do: one ListTagsForResource each. The controller reads
//! them at [`Priority::IfIdle`] (never ahead of user work) and keeps what it read until the
//! organization index's next sweep, so its steady cost is the number of candidates per sweep,
//! however large the fleet.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use kube::{Api, runtime::reflector::Store};
use serde::Serialize;

use super::{OrgTree, Pacing};
use crate::{
    Tenant,
    api::AccountPool,
    aws::{Priority, organizations::Account},
    contract::ownership::{Holder, TenantClaims},
    metrics::{METRICS, OrphanLabels},
    org::{Organization, units},
    pool::{PoolHold, PoolHolds},
};

/// `silo orphans`.
#[derive(clap::Args, Clone, Debug)]
pub struct OrphansArgs {
    /// An OU (path like /Tenants, or id) tenant accounts live in, with everything below it;
    /// repeat for several. Accounts there that no Tenant has are listed. The same as the
    /// controller's flag.
    #[arg(long = "tenant-ou-root", env = "SILO_TENANT_OU_ROOTS", value_delimiter = ',')]
    pub tenant_ou_roots: Vec<String>,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Format,

    #[command(flatten)]
    pub pacing: Pacing,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// The kinds of orphan, as the metric's `kind` label and the JSON's `kind` say them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrphanKind {
    TaggedWithoutTenant,
    UntrackedInTenantOu,
    PoolSurplus,
}

impl OrphanKind {
    pub const ALL: [OrphanKind; 3] =
        [OrphanKind::TaggedWithoutTenant, OrphanKind::UntrackedInTenantOu, OrphanKind::PoolSurplus];

    pub fn label(self) -> &'static str {
        match self {
            OrphanKind::TaggedWithoutTenant => "tagged_without_tenant",
            OrphanKind::UntrackedInTenantOu => "untracked_in_tenant_ou",
            OrphanKind::PoolSurplus => "pool_surplus",
        }
    }
}

/// What classification needs of one account.
#[derive(Clone, Debug)]
pub struct AccountFacts {
    pub account: Account,
    /// Its parent and the parent's parents up to the root.
    pub ancestors: Vec<String>,
    /// Its tags; `None` when not read (the account is then not classified).
    pub tags: Option<BTreeMap<String, String>>,
}

/// One orphan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Orphan {
    pub account_id: String,
    pub account_name: String,
    pub kind: OrphanKind,
    /// Its parent (OU id or root id).
    pub parent: String,
    /// What Silo's tags say of the Tenant that had it, for `tagged_without_tenant`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_name: Option<String>,
    /// The AccountPool its tags name, for `pool_surplus`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// Whether an account's tags must be read to classify it: it is active, not the management
/// account, and no Tenant names it. Pure.
pub fn is_candidate(account: &Account, claims: &TenantClaims, management_account: &str) -> bool {
    account.is_active() && account.id != management_account && claims.naming(&account.id).is_none()
}

/// The orphans among `accounts`, given the Tenants, the pools and the tenant OU roots (ids).
/// Accounts whose tags were not read are left out. Pure.
pub fn classify(
    accounts: &[AccountFacts],
    claims: &TenantClaims,
    pools: &PoolHolds,
    roots: &[String],
    management_account: &str,
) -> Vec<Orphan> {
    let mut orphans = vec![];
    for facts in accounts {
        let account = &facts.account;
        if !is_candidate(account, claims, management_account) {
            continue;
        }
        let Some(tags) = &facts.tags else { continue };
        let (kind, tenant_uid, tenant_name, pool) =
            match (pools.judge(&account.id, tags), claims.holder(&account.id, tags)) {
                (_, Holder::Tenant(_)) | (PoolHold::Kept, _) => continue,
                (PoolHold::Surplus { pool }, _) => (OrphanKind::PoolSurplus, None, None, Some(pool)),
                (PoolHold::NotPooled, Holder::Gone { uid, tenant }) => {
                    (OrphanKind::TaggedWithoutTenant, Some(uid), tenant, None)
                }
                (PoolHold::NotPooled, Holder::Nobody) if roots.iter().any(|root| facts.ancestors.contains(root)) => {
                    (OrphanKind::UntrackedInTenantOu, None, None, None)
                }
                (PoolHold::NotPooled, Holder::Nobody) => continue,
            };
        orphans.push(Orphan {
            account_id: account.id.clone(),
            account_name: account.name.clone(),
            kind,
            parent: facts.ancestors.first().cloned().unwrap_or_default(),
            tenant_uid,
            tenant_name,
            pool,
        });
    }
    orphans.sort_by(|a, b| (a.kind, &a.account_id).cmp(&(b.kind, &b.account_id)));
    orphans
}

/// Counts per kind, every kind present. Pure.
pub fn count(orphans: &[Orphan]) -> BTreeMap<OrphanKind, i64> {
    let mut counts: BTreeMap<OrphanKind, i64> = OrphanKind::ALL.into_iter().map(|k| (k, 0)).collect();
    for orphan in orphans {
        *counts.entry(orphan.kind).or_default() += 1;
    }
    counts
}

/// Runs `silo orphans`: reads the organization, the Tenants, and the tags of the candidates.
pub async fn run(args: OrphansArgs) -> anyhow::Result<()> {
    let client = crate::preflight::kube_client().await?;
    let tenants = Api::<Tenant>::all(client.clone()).list(&Default::default()).await.map_err(|err| {
        anyhow::anyhow!("cannot list the cluster's Tenants ({err}): check KUBECONFIG and that the CRDs are installed")
    })?;
    let claims = TenantClaims::of(&tenants.items);
    let pools = Api::<AccountPool>::all(client.clone()).list(&Default::default()).await.map_err(|err| {
        anyhow::anyhow!("cannot list the cluster's AccountPools ({err}): check that the CRDs are installed")
    })?;
    let (api, scope) = args.pacing.organizations(Some(&client)).await?;
    // The organization's pools; every Tenant's claims count (an account some Tenant has is
    // nobody's orphan).
    let pools: Vec<AccountPool> =
        pools.items.into_iter().filter(|p| scope.contains(p.spec.organization.as_deref())).collect();
    let pools = PoolHolds::of(&pools);
    let tree = OrgTree::read(&api).await.context("read the organization")?;
    let mut roots = vec![];
    // An Organization's tenant OU roots are its own; the flag's are the default organization's.
    let wanted_roots = if args.tenant_ou_roots.is_empty() { &scope.tenant_ou_roots } else { &args.tenant_ou_roots };
    for root in wanted_roots {
        roots.push(tree.resolve(root).with_context(|| format!("--tenant-ou-root {root}: no such OU"))?);
    }
    let mut facts = vec![];
    for (account, parent) in &tree.accounts {
        let tags = if is_candidate(account, &claims, &tree.management_account) {
            let tags = super::patiently(|| api.list_tags(&account.id, Priority::User)).await;
            Some(tags.with_context(|| format!("tags of {}", account.id))?)
        } else {
            None
        };
        facts.push(AccountFacts { account: account.clone(), ancestors: tree.ancestors(parent), tags });
    }
    let orphans = classify(&facts, &claims, &pools, &roots, &tree.management_account);
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&orphans)?),
        Format::Table => print!("{}", table(&orphans, &tree)),
    }
    Ok(())
}

fn table(orphans: &[Orphan], tree: &OrgTree) -> String {
    let mut rows = vec![["ACCOUNT", "NAME", "KIND", "OU", "TENANT OR POOL (FROM ITS TAGS)"].map(String::from)];
    for o in orphans {
        let tenant = match (&o.tenant_name, &o.tenant_uid, &o.pool) {
            (Some(name), Some(uid), _) => format!("{name} (UID {uid})"),
            (None, Some(uid), _) => format!("UID {uid}"),
            (_, None, Some(pool)) => format!("pool {pool}"),
            _ => String::new(),
        };
        let ou = tree.path_of(&o.parent).unwrap_or_else(|| "/".into());
        rows.push([o.account_id.clone(), o.account_name.clone(), o.kind.label().into(), ou, tenant]);
    }
    let widths: Vec<usize> = (0..5).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&format!("{} orphan accounts\n", orphans.len()));
    out
}

/// How often the controller classifies the organization again (no AWS request unless a
/// candidate's tags are not known since the last sweep).
const PUBLISH_PERIOD: Duration = Duration::from_secs(15);

/// Removes an organization's orphan series, on a replica that stops leading it.
pub fn forget(organization: &str) {
    for kind in OrphanKind::ALL {
        METRICS.orphan_accounts.remove(&OrphanLabels { organization: organization.to_string(), kind: kind.label() });
    }
}

/// Keeps `silo_orphan_accounts{kind}` current, from the organization index and the Tenant
/// watch cache, until the future is dropped. Tags are read only for candidates, at
/// [`Priority::IfIdle`], and kept until the index's next sweep.
pub async fn publish(
    org: Arc<Organization>,
    tenants: Store<Tenant>,
    tenants_ready: crate::caches::Ready,
    pools: Store<AccountPool>,
    pools_ready: crate::caches::Ready,
    tenant_ou_roots: Vec<String>,
) {
    for kind in OrphanKind::ALL {
        let organization = org.label().organization.clone();
        METRICS.orphan_accounts.get_or_create(&OrphanLabels { organization, kind: kind.label() }).set(0);
    }
    if tenants_ready.wait().await.is_err() || pools_ready.wait().await.is_err() {
        return;
    }
    let mut known_tags: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    let mut as_of_sweep = 0;
    loop {
        tokio::time::sleep(crate::retry::jittered(PUBLISH_PERIOD)).await;
        let index = &org.index;
        let Some(info) = index.organization().filter(|_| index.is_complete()) else { continue };
        if index.root().is_none() {
            continue;
        }
        if index.sweeps() != as_of_sweep {
            known_tags.clear();
            as_of_sweep = index.sweeps();
        }
        let claims = TenantClaims::of(tenants.state().iter().map(|t| t.as_ref()));
        let holds = PoolHolds::of(pools.state().iter().map(|p| p.as_ref()));
        let roots: Vec<String> = tenant_ou_roots.iter().filter_map(|spec| index.resolve(spec)).collect();
        let mut facts = vec![];
        for indexed in index.accounts() {
            let account = indexed.account;
            let Some(parent) = indexed.parent else { continue };
            if is_candidate(&account, &claims, &info.management_account_id) && !known_tags.contains_key(&account.id) {
                match org.tags(&account.id, Priority::IfIdle).await {
                    Ok(tags) => drop(known_tags.insert(account.id.clone(), tags)),
                    // Busy (user work comes first) or failed: the next round asks again.
                    Err(err) => tracing::debug!(account = %account.id, %err, "orphans: tags not read this round"),
                }
            }
            let ancestors = units::ancestors(&parent, |id| index.unit(id).and_then(|(_, up)| up));
            let tags = known_tags.get(&account.id).cloned();
            facts.push(AccountFacts { account, ancestors, tags });
        }
        for (kind, n) in count(&classify(&facts, &claims, &holds, &roots, &info.management_account_id)) {
            let organization = org.label().organization.clone();
            METRICS.orphan_accounts.get_or_create(&OrphanLabels { organization, kind: kind.label() }).set(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        super::tests::{account, tags, tenant, tree},
        *,
    };
    use crate::contract::{TENANT_TAG, TENANT_UID_TAG};

    #[test]
    fn classification() {
        let tree = tree();
        let tenants = [
            tenant("alive", "uid-alive", None, Some("111111111111")),
            tenant("creating", "uid-creating", None, None),
            tenant("recreated", "uid-new", None, None),
        ];
        let claims = TenantClaims::of(&tenants);
        let roots = vec!["ou-t".to_string()];
        let facts = |id: &str, state: &str, parent: &str, t: Option<&[(&str, &str)]>| AccountFacts {
            account: account(id, &format!("acct-{id}"), state),
            ancestors: tree.ancestors(parent),
            tags: t.map(tags),
        };
        let uid = |u: &'static str, name: &'static str| -> [(&'static str, &'static str); 2] {
            [(TENANT_UID_TAG, u), (TENANT_TAG, name)]
        };
        // (account, expected kind or None)
        let cases: Vec<(AccountFacts, Option<OrphanKind>)> = vec![
            // A Tenant names it in its status: no tags needed, never an orphan.
            (facts("111111111111", "ACTIVE", "ou-t", None), None),
            // Tagged with a UID no Tenant has: anywhere in the organization.
            (
                facts("222222222222", "ACTIVE", "ou-s", Some(&uid("uid-deleted", "gone"))),
                Some(OrphanKind::TaggedWithoutTenant),
            ),
            // Its Tenant was recreated under the same name: another UID.
            (
                facts("333333333333", "ACTIVE", "ou-p", Some(&uid("uid-old", "recreated"))),
                Some(OrphanKind::TaggedWithoutTenant),
            ),
            // Tagged with a live Tenant's UID (its status is not written yet).
            (facts("444444444444", "ACTIVE", "ou-p", Some(&uid("uid-creating", "creating"))), None),
            // Untagged, below a tenant OU root.
            (facts("555555555555", "ACTIVE", "ou-p", Some(&[("owner", "x")])), Some(OrphanKind::UntrackedInTenantOu)),
            // Untagged, outside the roots: not Silo's business.
            (facts("666666666666", "ACTIVE", "ou-s", Some(&[])), None),
            (facts("777777777777", "ACTIVE", "r-1", Some(&[])), None),
            // Closed or closing accounts are nobody's to keep clean.
            (facts("888888888888", "SUSPENDED", "ou-t", Some(&uid("uid-deleted", "gone"))), None),
            // The management account never is an orphan.
            (facts("123456789012", "ACTIVE", "ou-t", Some(&[])), None),
            // Tags not read yet: not classified.
            (facts("999999999999", "ACTIVE", "ou-t", None), None),
        ];
        for (facts, want) in &cases {
            let got = classify(std::slice::from_ref(facts), &claims, &PoolHolds::default(), &roots, "123456789012");
            assert_eq!(got.first().map(|o| o.kind), *want, "{}", facts.account.id);
        }
        let all: Vec<AccountFacts> = cases.into_iter().map(|(f, _)| f).collect();
        let orphans = classify(&all, &claims, &PoolHolds::default(), &roots, "123456789012");
        assert_eq!(
            orphans.iter().map(|o| o.account_id.as_str()).collect::<Vec<_>>(),
            ["222222222222", "333333333333", "555555555555"]
        );
        assert_eq!(orphans[0].tenant_uid.as_deref(), Some("uid-deleted"));
        assert_eq!(orphans[0].tenant_name.as_deref(), Some("gone"));
        assert_eq!(
            count(&orphans),
            BTreeMap::from([
                (OrphanKind::TaggedWithoutTenant, 2),
                (OrphanKind::UntrackedInTenantOu, 1),
                (OrphanKind::PoolSurplus, 0)
            ])
        );
        assert_eq!(
            count(&[]),
            BTreeMap::from([
                (OrphanKind::TaggedWithoutTenant, 0),
                (OrphanKind::UntrackedInTenantOu, 0),
                (OrphanKind::PoolSurplus, 0)
            ])
        );
        // Without roots, only the tagged ones.
        assert_eq!(classify(&all, &claims, &PoolHolds::default(), &[], "123456789012").len(), 2);
    }

    #[test]
    fn a_pools_ready_account_is_no_orphan_and_its_surplus_is() {
        use crate::{
            api::{AccountPool, AccountPoolSpec, AccountPoolStatus, PoolAccount},
            contract::{POOL_TAG, POOL_UID_TAG},
        };
        let tree = tree();
        let mut pool = AccountPool::new("warm", AccountPoolSpec::default());
        pool.metadata.uid = Some("uid-pool".into());
        let kept = PoolAccount { account_id: "111111111111".into(), ..Default::default() };
        pool.status = Some(AccountPoolStatus { accounts: vec![kept], ..Default::default() });
        let pooled = |id: &str| AccountFacts {
            account: account(id, "warm-0", "ACTIVE"),
            ancestors: tree.ancestors("ou-p"),
            tags: Some(tags(&[(POOL_TAG, "warm"), (POOL_UID_TAG, "uid-pool")])),
        };
        let facts = [pooled("111111111111"), pooled("222222222222")];
        let orphans =
            classify(&facts, &TenantClaims::default(), &PoolHolds::of([&pool]), &["ou-t".into()], "123456789012");
        assert_eq!(orphans.len(), 1, "{orphans:?}");
        assert_eq!((orphans[0].account_id.as_str(), orphans[0].kind), ("222222222222", OrphanKind::PoolSurplus));
        assert_eq!(orphans[0].pool.as_deref(), Some("warm"));
    }

    #[test]
    fn only_accounts_no_tenant_names_are_candidates() {
        let claims = TenantClaims::of(&[tenant("a", "uid-a", Some("111111111111"), None)]);
        let cases = [
            (account("111111111111", "a", "ACTIVE"), false),
            (account("222222222222", "b", "ACTIVE"), true),
            (account("333333333333", "c", "SUSPENDED"), false),
            (account("123456789012", "m", "ACTIVE"), false),
        ];
        for (account, want) in cases {
            assert_eq!(is_candidate(&account, &claims, "123456789012"), want, "{}", account.id);
        }
    }

    #[test]
    fn the_table_names_the_ou() {
        let orphans = [Orphan {
            account_id: "222222222222".into(),
            account_name: "gone".into(),
            kind: OrphanKind::TaggedWithoutTenant,
            parent: "ou-p".into(),
            tenant_uid: Some("uid-1".into()),
            tenant_name: Some("old".into()),
            pool: None,
        }];
        let text = table(&orphans, &tree());
        assert!(text.contains("222222222222  gone  tagged_without_tenant  /Tenants/Prod  old (UID uid-1)"), "{text}");
        assert!(text.ends_with("1 orphan accounts\n"));
    }
}
