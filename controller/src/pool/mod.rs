//! Account pools: accounts created in advance, waiting in an OU, for Tenants that name the
//! pool in `spec.pool` to take at once instead of waiting minutes for CreateAccount.
//!
//! This module is the pure part, shared by the pool controller ([`controller`]: refilling;
//! [`bootstrap`]: a pool's Baseline, made before an account is ready) and the Tenant's account
//! step (claiming):
//! - the names, emails and tags of a pool's accounts ([`identity`], [`pool_tags`]);
//! - which ready account a Tenant may take ([`candidate`]), which of the pool's stacks it
//!   deletes once it runs its own baseline ([`leftover_regions`]), and which Tenants are still
//!   deciding, ahead of a refill ([`tenants_deciding`]);
//! - what a refill does next ([`plan_refill`]), within the room the organization's account
//!   limit leaves ([`room_below_headroom`]).
//!
//! ## One account, one Tenant
//! A pool account carries the pool's [`POOL_UID_TAG`] and no [`TENANT_UID_TAG`]. A Tenant
//! takes one only after the organization index's claim (the one owner of claims in the
//! process) gave it the account and no other Tenant names it in its status; it records the
//! account (`status.accountId`, `status.claimedFromPool`) before any AWS write, then puts its
//! own UID tag on and the pool's tags off. A controller stopped anywhere in between resumes
//! the same claim from the status; the pool drops an account from its ready list once a
//! Tenant's status names it (or its UID tag is on it). A claim only in the index's memory
//! never drops it, and the Tenant releases it on every way out short of recording it: a
//! Tenant stopped, or whose reads failed, before recording it leaves the account ready.

pub mod bootstrap;
pub mod controller;

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;

use crate::{
    api::{AccountPool, PoolAccount, Tenant},
    conditions,
    contract::{POOL_TAG, POOL_UID_TAG, TENANT_UID_TAG},
    org::IndexedAccount,
};

/// What stops a pool reconcile (and a pool account's bootstrap); it is retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Aws(#[from] crate::aws::AwsError),
    #[error(transparent)]
    CacheGone(#[from] crate::caches::CacheGone),
}

/// The name and email of the pool's account number `index`.
pub fn identity(pool: &AccountPool, index: u64) -> (String, String) {
    let name = pool.name_any();
    let fill = |template: &str| template.replace("{index}", &index.to_string()).replace("{pool}", &name);
    let account_name = fill(pool.spec.name_template.as_deref().unwrap_or("{pool}-{index}"));
    (account_name, fill(&pool.spec.email_template))
}

/// The tags a pool's account carries while it waits: the pool's own, its name and its UID.
pub fn pool_tags(pool: &AccountPool) -> BTreeMap<String, String> {
    let mut tags = pool.spec.tags.clone();
    tags.insert(POOL_TAG.into(), pool.name_any());
    tags.insert(POOL_UID_TAG.into(), pool.uid().unwrap_or_default());
    tags
}

/// Whether an account's tags say it waits in this pool (the pool's UID, and no Tenant's).
pub fn waits_in(tags: &BTreeMap<String, String>, pool_uid: &str) -> bool {
    tags.get(POOL_UID_TAG).is_some_and(|uid| uid == pool_uid) && !tags.contains_key(TENANT_UID_TAG)
}

/// Whether a ready account can no longer be handed out, by what the organization index
/// knows of it: not ACTIVE (closed or suspended out of band), or tags last read or written
/// that no longer say it waits in the pool whose UID is `pool_uid`. Pure.
pub fn unusable(known: &IndexedAccount, pool_uid: &str) -> bool {
    !known.account.is_active() || known.tags.as_ref().is_some_and(|tags| !waits_in(tags, pool_uid))
}

/// The first ready account no Tenant holds, oldest first. `held` says whether a Tenant holds
/// an account (the index's claims, the Tenants' statuses). Pure.
pub fn candidate(ready: &[PoolAccount], held: impl Fn(&str) -> bool) -> Option<&PoolAccount> {
    ready.iter().find(|account| !held(&account.account_id))
}

/// The Regions where the stack a pool's Baseline made in its accounts (`pool`: stack name and
/// Regions) stays behind when a Tenant takes one: those where the Tenant's own Baseline
/// (`tenant`, `None` without one) runs no stack of the same name, which its bootstrap would
/// update in place. The Tenant deletes the stacks in these Regions once its own baseline
/// runs. Pure.
pub fn leftover_regions(pool: (&str, &[String]), tenant: Option<(&str, &[String])>) -> Vec<String> {
    let (pool_stack, pool_regions) = pool;
    let replaced =
        |region: &String| tenant.is_some_and(|(stack, regions)| stack == pool_stack && regions.contains(region));
    pool_regions.iter().filter(|region| !replaced(region)).cloned().collect()
}

/// Which accounts the AccountPools keep (ready, or created and being placed), by pool UID.
#[derive(Clone, Debug, Default)]
pub struct PoolHolds {
    by_uid: BTreeMap<String, BTreeSet<String>>,
}

/// What a pool's tag on an account means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolHold {
    /// No pool tag.
    NotPooled,
    /// Its pool keeps it: ready, or on its way.
    Kept,
    /// Tagged as pool `pool`'s, but no pool keeps it (the pool was deleted, or shrank).
    Surplus { pool: String },
}

impl PoolHolds {
    pub fn of<'a>(pools: impl IntoIterator<Item = &'a AccountPool>) -> Self {
        let mut holds = Self::default();
        for pool in pools {
            let status = pool.status.clone().unwrap_or_default();
            let kept = status.accounts.into_iter().map(|a| a.account_id);
            let on_the_way = status.creations.into_iter().filter_map(|c| c.account_id);
            holds.by_uid.entry(pool.uid().unwrap_or_default()).or_default().extend(kept.chain(on_the_way));
        }
        holds
    }

    /// Judges an account by its tags (a Tenant's UID tag is judged elsewhere). Pure.
    pub fn judge(&self, account_id: &str, tags: &BTreeMap<String, String>) -> PoolHold {
        let Some(uid) = tags.get(POOL_UID_TAG) else { return PoolHold::NotPooled };
        if tags.contains_key(TENANT_UID_TAG) {
            return PoolHold::NotPooled;
        }
        match self.by_uid.get(uid) {
            Some(kept) if kept.contains(account_id) => PoolHold::Kept,
            _ => PoolHold::Surplus { pool: tags.get(POOL_TAG).cloned().unwrap_or_else(|| format!("UID {uid}")) },
        }
    }
}

/// How many Tenants that name the pool `pool` are still deciding where their account comes
/// from: no account and no creation of their own recorded yet, neither paused, Stalled nor
/// being deleted. They are looking at the pool's ready accounts, or are in line for a creation
/// slot; a refill waits for them, so that it never takes a slot one of them is about to ask
/// for. Pure.
pub fn tenants_deciding<'a>(tenants: impl IntoIterator<Item = &'a Tenant>, pool: &str) -> usize {
    tenants
        .into_iter()
        .filter(|t| t.spec.pool.as_deref() == Some(pool) && !t.spec.paused && t.metadata.deletion_timestamp.is_none())
        .filter(|t| {
            let status = t.status.as_ref();
            let started = status.is_some_and(|s| s.account_id.is_some() || s.email.is_some());
            let stalled = status
                .and_then(|s| conditions::find(&s.conditions, conditions::STALLED))
                .is_some_and(|c| c.status == "True");
            !started && !stalled
        })
        .count()
}

/// What a refill does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refill {
    /// The pool holds `size` accounts, ready or on their way.
    Full,
    /// Paused: nothing is created.
    Paused,
    /// The organization is at the account limit less the headroom kept for Tenants.
    AtHeadroom,
    /// Create this many more.
    Create(u32),
}

/// How many more accounts refills may add to the organization: its account limit, less the
/// headroom kept for Tenants, less what counts already (`counted`: members, closed ones within
/// their 90 days included) and what is on its way (`in_flight`: creation slots in use).
/// `None`: the limit is not known, and AWS's ACCOUNT_LIMIT_EXCEEDED is the only stop. Pure.
pub fn room_below_headroom(limit: Option<u32>, headroom: u32, counted: usize, in_flight: usize) -> Option<usize> {
    let limit = usize::try_from(limit?).unwrap_or(usize::MAX);
    let headroom = usize::try_from(headroom).unwrap_or(usize::MAX);
    Some(limit.saturating_sub(headroom).saturating_sub(counted + in_flight))
}

/// Decides the refill from the spec, what the pool holds, and the `room` refills have in the
/// organization ([`room_below_headroom`]). Pure.
pub fn plan_refill(size: u32, paused: bool, ready: usize, creating: usize, room: Option<usize>) -> Refill {
    let have = u32::try_from(ready + creating).unwrap_or(u32::MAX);
    match size.saturating_sub(have) {
        0 => Refill::Full,
        _ if paused => Refill::Paused,
        missing => match room.map(|room| u32::try_from(room).unwrap_or(u32::MAX)) {
            Some(0) => Refill::AtHeadroom,
            Some(room) => Refill::Create(missing.min(room)),
            None => Refill::Create(missing),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{api::AccountPoolSpec, conditions::Conditions};

    fn pool() -> AccountPool {
        let mut pool = AccountPool::new(
            "warm",
            AccountPoolSpec {
                size: 3,
                organizational_unit: "/Tenants/Pool".into(),
                email_template: "aws+pool-{index}@example.com".into(),
                ..Default::default()
            },
        );
        pool.metadata.uid = Some("pool-uid".into());
        pool
    }

    fn ready(id: &str) -> PoolAccount {
        PoolAccount { account_id: id.into(), ..Default::default() }
    }

    #[test]
    fn names_and_emails_come_from_the_templates_and_the_index() {
        let mut pool = pool();
        assert_eq!(identity(&pool, 7), ("warm-7".to_string(), "aws+pool-7@example.com".to_string()));
        pool.spec.name_template = Some("Spare {index}".into());
        assert_eq!(identity(&pool, 0).0, "Spare 0");
    }

    #[test]
    fn a_pool_account_carries_the_pools_name_and_uid_beside_its_tags() {
        let mut pool = pool();
        pool.spec.tags.insert("team".into(), "platform".into());
        let tags = pool_tags(&pool);
        assert_eq!(tags.get(POOL_TAG).map(String::as_str), Some("warm"));
        assert_eq!(tags.get(POOL_UID_TAG).map(String::as_str), Some("pool-uid"));
        assert_eq!(tags.get("team").map(String::as_str), Some("platform"));
        assert!(waits_in(&tags, "pool-uid"));
        assert!(!waits_in(&tags, "another-pool"));
        let mut taken = tags.clone();
        taken.insert(TENANT_UID_TAG.into(), "tenant".into());
        assert!(!waits_in(&taken, "pool-uid"), "an account a Tenant tagged is no longer the pool's");
    }

    #[test]
    fn an_account_closed_or_no_longer_tagged_as_the_pools_is_unusable() {
        let known = |state: &str, tags: Option<BTreeMap<String, String>>| IndexedAccount {
            account: crate::aws::organizations::Account {
                id: "1".into(),
                arn: String::new(),
                name: "warm-1".into(),
                email: "aws+pool-1@example.com".into(),
                state: state.into(),
            },
            parent: None,
            tags,
        };
        let pool_tags = pool_tags(&pool());
        assert!(!unusable(&known("ACTIVE", None), "pool-uid"), "tags not read: the claim reads them");
        assert!(!unusable(&known("ACTIVE", Some(pool_tags.clone())), "pool-uid"));
        assert!(unusable(&known("SUSPENDED", Some(pool_tags.clone())), "pool-uid"));
        assert!(unusable(&known("ACTIVE", Some(pool_tags.clone())), "another-pool"));
        let mut taken = pool_tags;
        taken.insert(TENANT_UID_TAG.into(), "tenant".into());
        assert!(unusable(&known("ACTIVE", Some(taken)), "pool-uid"), "a Tenant tagged it");
    }

    #[test]
    fn a_tenant_takes_the_oldest_account_nobody_holds() {
        let accounts = [ready("1"), ready("2"), ready("3")];
        assert_eq!(candidate(&accounts, |_| false).map(|a| a.account_id.as_str()), Some("1"));
        assert_eq!(candidate(&accounts, |id| id != "3").map(|a| a.account_id.as_str()), Some("3"));
        assert_eq!(candidate(&accounts, |_| true), None);
    }

    #[test]
    fn an_account_tagged_as_a_pools_that_no_pool_keeps_is_surplus() {
        let mut pool = pool();
        pool.status = Some(crate::api::AccountPoolStatus { accounts: vec![ready("1")], ..Default::default() });
        let holds = PoolHolds::of([&pool]);
        let tags = pool_tags(&pool);
        assert_eq!(holds.judge("1", &tags), PoolHold::Kept);
        assert_eq!(holds.judge("2", &tags), PoolHold::Surplus { pool: "warm".into() }, "dropped when the pool shrank");
        assert_eq!(PoolHolds::default().judge("1", &tags), PoolHold::Surplus { pool: "warm".into() }, "pool deleted");
        assert_eq!(holds.judge("3", &BTreeMap::new()), PoolHold::NotPooled);
    }

    #[test]
    fn a_refill_creates_what_is_missing_unless_paused() {
        assert_eq!(plan_refill(5, false, 2, 1, None), Refill::Create(2));
        assert_eq!(plan_refill(5, true, 2, 1, None), Refill::Paused);
        assert_eq!(plan_refill(5, false, 4, 1, None), Refill::Full);
        assert_eq!(plan_refill(2, true, 4, 0, None), Refill::Full, "a shrunk pool keeps its surplus, creates nothing");
    }

    #[test]
    fn tenants_that_name_the_pool_and_have_not_started_are_deciding() {
        use crate::api::{TenantSpec, TenantStatus};
        let tenant = |pool: Option<&str>, status: Option<TenantStatus>| {
            let mut tenant = Tenant::new("t", TenantSpec { pool: pool.map(String::from), ..Default::default() });
            tenant.status = status;
            tenant
        };
        let deciding = tenant(Some("warm"), None);
        let other_pool = tenant(Some("cold"), None);
        let no_pool = tenant(None, None);
        let claimed = tenant(Some("warm"), Some(TenantStatus { account_id: Some("1".into()), ..Default::default() }));
        let creating = tenant(Some("warm"), Some(TenantStatus { email: Some("a@x".into()), ..Default::default() }));
        let mut stalled = TenantStatus::default();
        let mut stalled_conditions =
            Conditions::new(&mut stalled.conditions, Some(1), k8s_openapi::jiff::Timestamp::now());
        stalled_conditions.set(conditions::STALLED, true, "OrganizationalUnitNotFound", "fix it");
        let stalled = tenant(Some("warm"), Some(stalled));
        let mut paused = tenant(Some("warm"), None);
        paused.spec.paused = true;
        let all = [&deciding, &other_pool, &no_pool, &claimed, &creating, &stalled, &paused];
        assert_eq!(tenants_deciding(all, "warm"), 1, "only the one that has neither an account nor a creation");
        assert_eq!(tenants_deciding([&deciding, &deciding], "warm"), 2);
    }

    #[test]
    fn the_pools_stacks_stay_where_the_tenants_baseline_runs_no_stack_of_their_name() {
        let regions = |names: &[&str]| names.iter().map(|r| r.to_string()).collect::<Vec<_>>();
        let (both, east) = (regions(&["us-east-1", "eu-west-1"]), regions(&["us-east-1"]));
        let pool = ("silo-baseline", both.as_slice());
        assert_eq!(leftover_regions(pool, Some(("silo-baseline", &both))), Vec::<String>::new(), "updated in place");
        assert_eq!(leftover_regions(pool, Some(("silo-baseline", &east))), ["eu-west-1"], "fewer Regions");
        assert_eq!(leftover_regions(pool, Some(("other-stack", &both))), both, "another stack name");
        assert_eq!(leftover_regions(pool, None), both, "no Baseline");
        let more = regions(&["us-east-1", "eu-west-1", "ap-south-1"]);
        assert!(leftover_regions(("silo-baseline", &east), Some(("silo-baseline", &more))).is_empty());
    }

    #[test]
    fn refills_stop_at_the_headroom_kept_below_the_account_limit() {
        // A limit of 100 with 10 kept for Tenants: 88 counted and 1 in flight leave room for 1.
        assert_eq!(room_below_headroom(Some(100), 10, 88, 1), Some(1));
        assert_eq!(room_below_headroom(Some(100), 10, 85, 10), Some(0), "creations in flight count");
        assert_eq!(room_below_headroom(Some(100), 10, 99, 0), Some(0), "Tenants used the headroom");
        assert_eq!(room_below_headroom(Some(5), 10, 1, 0), Some(0), "a headroom above the limit: no refill at all");
        assert_eq!(room_below_headroom(None, 10, 5000, 5), None, "no limit known");
        assert_eq!(plan_refill(5, false, 0, 0, Some(2)), Refill::Create(2), "only what fits");
        assert_eq!(plan_refill(5, false, 0, 0, Some(0)), Refill::AtHeadroom);
        assert_eq!(plan_refill(5, false, 5, 0, Some(0)), Refill::Full, "a full pool is full, whatever the room");
        assert_eq!(plan_refill(5, true, 0, 0, Some(0)), Refill::Paused);
    }
}
