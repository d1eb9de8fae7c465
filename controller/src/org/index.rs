//! The organization index: Silo's in-memory view of the organization.
//!
//! Once the Lease is won, one paced sweep reads the whole organization (the OU tree, and the
//! accounts under each parent with their email and state); Silo's own successful writes
//! (a creation that succeeded, MoveAccount, TagResource, UntagResource, CloseAccount) update
//! it at once, and a refresh sweep runs on a period. Steps read the index instead of asking
//! AWS for each account on every reconcile; a miss reads through to AWS and fills it in.
//!
//! ## Guarantees
//! - It is a cache and never a reason to create or close an account: creation is made safe by
//!   the intent recorded in the Tenant's status, closure by a fresh look at AWS.
//! - A sweep never undoes a write Silo made while the sweep was running: each entry remembers
//!   the write that last touched it, and a sweep only replaces entries older than its start.
//! - A sweep of a different organization (a new organization id) replaces everything.
//!
//! All methods are synchronous and hold the lock only briefly; nothing here calls AWS (see
//! [`super::Organization`] for the sweeps and the read-throughs).

use std::{
    collections::{BTreeMap, HashMap},
    sync::RwLock,
};

use super::units::{self, PathLookup};
use crate::{
    aws::organizations::{Account, OrganizationInfo, OrganizationalUnit, Walk},
    contract::ownership::tagged_uid,
    metrics::METRICS,
};

/// What the index knows of one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedAccount {
    pub account: Account,
    /// The account's parent (the root or an OU id), when known.
    pub parent: Option<String>,
    /// The account's tags, when Silo set or read them since it last saw them change; `None`
    /// when unknown (the sweep does not list tags).
    pub tags: Option<BTreeMap<String, String>>,
}

/// What counts against the organization's account quota ([`OrgIndex::quota_usage`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaUsage {
    /// Accounts that count, the management account included.
    pub members: usize,
    /// Of those, accounts closed but not yet permanently (PENDING_CLOSURE, SUSPENDED).
    pub closed: usize,
}

#[derive(Clone, Debug)]
struct Entry<T> {
    value: T,
    /// The local write that last touched this entry.
    written: u64,
}

#[derive(Clone, Debug)]
struct Unit {
    name: String,
    parent: Option<String>,
}

/// A Tenant's claim on an account, in this process's memory.
#[derive(Clone, Debug)]
struct Claim {
    uid: String,
    /// The Tenant's status names the account: the claim outlives this process.
    recorded: bool,
}

#[derive(Default)]
struct View {
    /// Which Tenant claimed which account, as this process decided it: never swept away.
    claims: HashMap<String, Claim>,
    org: Option<OrganizationInfo>,
    root: Option<String>,
    accounts: HashMap<String, Entry<IndexedAccount>>,
    by_email: HashMap<String, String>,
    units: HashMap<String, Entry<Unit>>,
    complete: bool,
    /// Sweeps applied so far: what was read from AWS between two sweeps may be stale after.
    sweeps: u64,
    /// When the last sweep was applied.
    swept_at: Option<k8s_openapi::jiff::Timestamp>,
    writes: u64,
}

impl View {
    fn touch(&mut self) -> u64 {
        self.writes += 1;
        self.writes
    }

    fn put_account(&mut self, value: IndexedAccount) {
        let written = self.touch();
        self.by_email.insert(value.account.email.to_ascii_lowercase(), value.account.id.clone());
        self.accounts.insert(value.account.id.clone(), Entry { value, written });
    }

    /// Who holds the account: a claim `counts` accepts, else the UID tag the index knows.
    fn holder(&self, account_id: &str, counts: impl Fn(&Claim) -> bool) -> Option<String> {
        let claim = self.claims.get(account_id).filter(|claim| counts(claim)).map(|claim| claim.uid.clone());
        claim.or_else(|| {
            let tags = self.accounts.get(account_id)?.value.tags.as_ref()?;
            tagged_uid(tags).map(str::to_string)
        })
    }
}

/// The index. Shared by every reconcile; the sweeps and Silo's own writes are its writers.
#[derive(Default)]
pub struct OrgIndex {
    view: RwLock<View>,
    /// The organization, in metrics.
    label: crate::metrics::OrganizationLabels,
}

impl OrgIndex {
    /// An empty index of the organization `label` names.
    pub fn labelled(label: crate::metrics::OrganizationLabels) -> Self {
        Self { label, ..Self::default() }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().expect("index lock")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view.write().expect("index lock")
    }

    /// Whether a sweep has completed: until then, a missing account or email proves nothing.
    pub fn is_complete(&self) -> bool {
        self.read().complete
    }

    /// The organization, once a sweep or a read-through has seen it.
    pub fn organization(&self) -> Option<OrganizationInfo> {
        self.read().org.clone()
    }

    pub fn root(&self) -> Option<String> {
        self.read().root.clone()
    }

    /// Marks the start of a sweep: writes after this mark survive it.
    pub fn write_mark(&self) -> u64 {
        self.read().writes
    }

    pub fn account(&self, id: &str) -> Option<IndexedAccount> {
        self.read().accounts.get(id).map(|e| e.value.clone())
    }

    /// The account with this email (AWS compares emails without case).
    pub fn account_by_email(&self, email: &str) -> Option<IndexedAccount> {
        let view = self.read();
        let id = view.by_email.get(&email.to_ascii_lowercase())?;
        view.accounts.get(id).map(|e| e.value.clone())
    }

    pub fn account_count(&self) -> usize {
        self.read().accounts.len()
    }

    /// Every account the index knows with this name (names are not unique).
    pub fn accounts_named(&self, name: &str) -> Vec<IndexedAccount> {
        self.read().accounts.values().map(|e| &e.value).filter(|a| a.account.name == name).cloned().collect()
    }

    /// How many accounts count against the organization's account quota, as far as the index
    /// knows: every member but those AWS closed permanently (State CLOSED). A closed account
    /// (PENDING_CLOSURE, SUSPENDED) still counts until then, for 90 days after its closure.
    pub fn quota_usage(&self) -> QuotaUsage {
        let view = self.read();
        let counted = view.accounts.values().map(|e| &e.value.account).filter(|a| a.state != "CLOSED");
        let (mut members, mut closed) = (0, 0);
        for account in counted {
            members += 1;
            if account.is_closing_or_closed() {
                closed += 1;
            }
        }
        QuotaUsage { members, closed }
    }

    /// Every account the index knows, in no particular order.
    pub fn accounts(&self) -> Vec<IndexedAccount> {
        self.read().accounts.values().map(|e| e.value.clone()).collect()
    }

    /// How many sweeps the index has applied: a change means the organization was read anew.
    pub fn sweeps(&self) -> u64 {
        self.read().sweeps
    }

    /// When the last sweep was applied (`None` before the first).
    pub fn swept_at(&self) -> Option<k8s_openapi::jiff::Timestamp> {
        self.read().swept_at
    }

    /// An OU's name and parent (when known), if the index knows the OU.
    pub fn unit(&self, id: &str) -> Option<(String, Option<String>)> {
        self.read().units.get(id).map(|u| (u.value.name.clone(), u.value.parent.clone()))
    }

    /// Whether `id` is an OU the index knows.
    pub fn has_unit(&self, id: &str) -> bool {
        self.read().units.contains_key(id)
    }

    /// The OU named `name` directly under `parent`, if the index knows it.
    pub fn child_named(&self, parent: &str, name: &str) -> Option<String> {
        let view = self.read();
        let child =
            view.units.iter().find(|(_, unit)| unit.value.parent.as_deref() == Some(parent) && unit.value.name == name);
        child.map(|(id, _)| id.clone())
    }

    /// Follows a path of OU names from the root as far as the index knows it.
    pub fn lookup_path(&self, names: &[String]) -> PathLookup {
        units::walk(self.root().as_deref(), names, |parent, name| self.child_named(parent, name))
    }

    /// The id of an OU given as an id or a path, as far as the index knows the tree.
    pub fn resolve(&self, spec: &str) -> Option<String> {
        let root = self.root()?;
        units::resolve(spec, &root, |id| self.has_unit(id), |parent, name| self.child_named(parent, name))
    }

    /// The Tenant (UID) that holds the account: from this process's claims, else from the
    /// account's `silo.dev/tenant-uid` tag when the index knows its tags.
    pub fn claimant(&self, account_id: &str) -> Option<String> {
        self.read().holder(account_id, |_| true)
    }

    /// The Tenant (UID) that holds the account by what outlives this process: a claim its
    /// status records ([`OrgIndex::claim_recorded`]), or the account's `silo.dev/tenant-uid`
    /// tag. A claim only in memory is left out: the Tenant may never record it (stopped, or
    /// taking another account), and whoever acts on it would lose the account.
    pub fn recorded_claimant(&self, account_id: &str) -> Option<String> {
        self.read().holder(account_id, |claim| claim.recorded)
    }

    /// Drops the Tenant `uid`'s claim on the account unless its status records it: the Tenant
    /// did not take the account after all.
    pub fn release_unrecorded(&self, account_id: &str, uid: &str) {
        let mut view = self.write();
        if view.claims.get(account_id).is_some_and(|claim| claim.uid == uid && !claim.recorded) {
            view.claims.remove(account_id);
        }
    }

    /// Says that the Tenant `uid`'s status now names the account it claimed.
    pub fn claim_recorded(&self, account_id: &str, uid: &str) {
        if let Some(claim) = self.write().claims.get_mut(account_id).filter(|claim| claim.uid == uid) {
            claim.recorded = true;
        }
    }

    /// Claims an account for a Tenant, atomically: two Tenants taking one account at once
    /// cannot both succeed. `replacing`: the UID a reclaim takes the account from. Returns
    /// the UID of the Tenant that holds it otherwise.
    pub fn claim(&self, account_id: &str, uid: &str, replacing: Option<&str>) -> Result<(), String> {
        let mut view = self.write();
        match view.holder(account_id, |_| true) {
            Some(holder) if holder != uid && Some(holder.as_str()) != replacing => Err(holder),
            Some(holder) if holder == uid && view.claims.contains_key(account_id) => Ok(()),
            _ => {
                view.claims.insert(account_id.to_string(), Claim { uid: uid.to_string(), recorded: false });
                Ok(())
            }
        }
    }

    /// Records the organization and its root, as a read-through saw them.
    pub fn record_organization(&self, org: OrganizationInfo, root: String) {
        let mut view = self.write();
        view.touch();
        view.org = Some(org);
        view.root = Some(root);
    }

    /// Records an account (a creation that succeeded, or a read-through); fields given as
    /// `None` keep what the index knew.
    pub fn record_account(&self, account: Account, parent: Option<String>, tags: Option<BTreeMap<String, String>>) {
        let mut view = self.write();
        let known = view.accounts.get(&account.id).map(|e| e.value.clone());
        let value = IndexedAccount {
            parent: parent.or_else(|| known.as_ref().and_then(|k| k.parent.clone())),
            tags: tags.or_else(|| known.as_ref().and_then(|k| k.tags.clone())),
            account,
        };
        view.put_account(value);
        publish(&self.label, &view);
    }

    /// An account is gone from the organization (AWS said it does not know it).
    pub fn forget_account(&self, id: &str) {
        let mut view = self.write();
        view.touch();
        if let Some(entry) = view.accounts.remove(id) {
            view.by_email.remove(&entry.value.account.email.to_ascii_lowercase());
        }
        publish(&self.label, &view);
    }

    /// Applies a change to a known account (MoveAccount, tags, CloseAccount succeeded).
    pub fn update_account(&self, id: &str, change: impl FnOnce(&mut IndexedAccount)) {
        let mut view = self.write();
        if let Some(mut value) = view.accounts.get(id).map(|e| e.value.clone()) {
            change(&mut value);
            view.put_account(value);
        }
    }

    /// Records an OU (created, or found by a read-through) under `parent`.
    pub fn record_unit(&self, unit: OrganizationalUnit, parent: Option<String>) {
        let mut view = self.write();
        let written = view.touch();
        let parent = parent.or_else(|| view.units.get(&unit.id).and_then(|u| u.value.parent.clone()));
        view.units.insert(unit.id, Entry { value: Unit { name: unit.name, parent }, written });
    }

    /// An OU is gone (AWS said so): forgets it and everything known under it.
    pub fn forget_unit(&self, id: &str) {
        let mut view = self.write();
        view.touch();
        let mut gone = vec![id.to_string()];
        while let Some(unit) = gone.pop() {
            view.units.remove(&unit);
            let children: Vec<String> = view
                .units
                .iter()
                .filter(|(_, u)| u.value.parent.as_deref() == Some(unit.as_str()))
                .map(|(id, _)| id.clone())
                .collect();
            gone.extend(children);
        }
    }

    /// Replaces the view with what a walk of the organization saw, keeping Silo's own writes
    /// made since the walk started (`started` is [`OrgIndex::write_mark`] from then). Tags are
    /// kept for accounts the walk still sees (it does not list them).
    pub fn apply_sweep(&self, walk: Walk, started: u64) {
        let mut view = self.write();
        let same_org = view.org.as_ref().is_none_or(|known| known.id == walk.org.id);
        if !same_org {
            tracing::warn!(
                before = ?view.org.as_ref().map(|o| &o.id),
                now = %walk.org.id,
                "the organization changed: the index starts again"
            );
            *view = View {
                writes: view.writes,
                sweeps: view.sweeps,
                claims: std::mem::take(&mut view.claims),
                ..View::default()
            };
        }
        let old_accounts = std::mem::take(&mut view.accounts);
        let mut accounts: HashMap<String, Entry<IndexedAccount>> = HashMap::with_capacity(walk.accounts.len());
        for (account, parent) in walk.accounts {
            let tags = old_accounts.get(&account.id).and_then(|e| e.value.tags.clone());
            let entry = Entry { value: IndexedAccount { account, parent: Some(parent), tags }, written: 0 };
            accounts.insert(entry.value.account.id.clone(), entry);
        }
        // Silo's writes during the sweep are newer than what the sweep read.
        for (id, entry) in old_accounts {
            if entry.written > started {
                accounts.insert(id, entry);
            }
        }
        let old_units = std::mem::take(&mut view.units);
        let mut units: HashMap<String, Entry<Unit>> = walk
            .units
            .into_iter()
            .map(|(unit, parent)| {
                (unit.id, Entry { value: Unit { name: unit.name, parent: Some(parent) }, written: 0 })
            })
            .collect();
        for (id, entry) in old_units {
            if entry.written > started {
                units.insert(id, entry);
            }
        }
        view.by_email = accounts
            .values()
            .map(|e| (e.value.account.email.to_ascii_lowercase(), e.value.account.id.clone()))
            .collect();
        view.accounts = accounts;
        view.units = units;
        view.root = Some(walk.root);
        view.org = Some(walk.org);
        view.complete = true;
        view.sweeps += 1;
        view.swept_at = Some(k8s_openapi::jiff::Timestamp::now());
        publish(&self.label, &view);
    }
}

fn publish(label: &crate::metrics::OrganizationLabels, view: &View) {
    METRICS.index_accounts.get_or_create(label).set(i64::try_from(view.accounts.len()).unwrap_or(i64::MAX));
    METRICS.index_complete.get_or_create(label).set(i64::from(view.complete));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: &str, email: &str) -> Account {
        Account {
            id: id.into(),
            arn: format!("arn:{id}"),
            name: id.into(),
            email: email.into(),
            state: "ACTIVE".into(),
        }
    }

    fn unit(id: &str, name: &str) -> OrganizationalUnit {
        OrganizationalUnit { id: id.into(), name: name.into() }
    }

    /// A walk of organization `org_id`: two OUs, and the accounts in the first.
    fn walk(org_id: &str, accounts: &[(&str, &str)]) -> Walk {
        Walk {
            org: OrganizationInfo { id: org_id.into(), management_account_id: "123456789012".into() },
            root: "r-1".into(),
            units: vec![(unit("ou-t", "Tenants"), "r-1".into()), (unit("ou-p", "Prod"), "ou-t".into())],
            accounts: accounts.iter().map(|(id, email)| (account(id, email), "ou-t".to_string())).collect(),
        }
    }

    /// Applies a walk that started now, with nothing written during it.
    fn sweep(index: &OrgIndex, org_id: &str, accounts: &[(&str, &str)]) {
        index.apply_sweep(walk(org_id, accounts), index.write_mark());
    }

    #[test]
    fn the_quota_counts_closed_accounts_until_they_are_closed_for_good() {
        let index = OrgIndex::default();
        sweep(&index, "o-1", &[("1", "a@x"), ("2", "b@x"), ("3", "c@x"), ("4", "d@x")]);
        for (id, state) in [("2", "PENDING_CLOSURE"), ("3", "SUSPENDED"), ("4", "CLOSED")] {
            index.update_account(id, |a| a.account.state = state.into());
        }
        assert_eq!(index.quota_usage(), QuotaUsage { members: 3, closed: 2 });
    }

    #[test]
    fn a_sweep_fills_the_index_and_paths_resolve() {
        let index = OrgIndex::default();
        assert!(!index.is_complete());
        assert_eq!(index.lookup_path(&["Tenants".into()]), PathLookup::NoRoot);
        sweep(&index, "o-1", &[("111", "A@example.com")]);
        assert!(index.is_complete());
        assert_eq!(index.account_by_email("a@EXAMPLE.com").unwrap().account.id, "111", "emails match without case");
        assert_eq!(index.account("111").unwrap().parent.as_deref(), Some("ou-t"));
        assert_eq!(index.lookup_path(&[]), PathLookup::Found("r-1".into()));
        assert_eq!(index.lookup_path(&["Tenants".into(), "Prod".into()]), PathLookup::Found("ou-p".into()));
        assert_eq!(
            index.lookup_path(&["Tenants".into(), "Staging".into()]),
            PathLookup::Missing { parent: "ou-t".into(), depth: 1 }
        );
    }

    #[test]
    fn a_write_made_during_a_sweep_survives_it() {
        let index = OrgIndex::default();
        sweep(&index, "o-1", &[("111", "a@example.com")]);
        let started = index.write_mark();
        // While the sweep runs, Silo creates an account and moves another.
        index.record_account(account("222", "b@example.com"), Some("r-1".into()), None);
        index.update_account("111", |a| a.parent = Some("ou-p".into()));
        index.apply_sweep(walk("o-1", &[("111", "a@example.com")]), started);
        assert_eq!(index.account("222").unwrap().parent.as_deref(), Some("r-1"), "the new account stays");
        assert_eq!(index.account("111").unwrap().parent.as_deref(), Some("ou-p"), "the move is not undone");
        // The next sweep sees the world as it is now.
        sweep(&index, "o-1", &[("111", "a@example.com")]);
        assert!(index.account("222").is_none(), "an account gone from AWS leaves the index");
        assert_eq!(index.account("111").unwrap().parent.as_deref(), Some("ou-t"));
    }

    #[test]
    fn tags_survive_a_sweep_of_the_same_account() {
        let index = OrgIndex::default();
        sweep(&index, "o-1", &[("111", "a@example.com")]);
        index.update_account("111", |a| a.tags = Some(BTreeMap::from([("k".into(), "v".into())])));
        sweep(&index, "o-1", &[("111", "a@example.com")]);
        assert_eq!(index.account("111").unwrap().tags.unwrap()["k"], "v");
    }

    #[test]
    fn another_organization_replaces_everything() {
        let index = OrgIndex::default();
        sweep(&index, "o-1", &[("111", "a@example.com")]);
        let mark = index.write_mark();
        index.record_account(account("222", "b@example.com"), None, None);
        index.apply_sweep(walk("o-2", &[("333", "c@example.com")]), mark);
        assert!(index.account("111").is_none() && index.account("222").is_none());
        assert!(index.account("333").is_some());
        assert_eq!(index.organization().unwrap().id, "o-2");
    }

    #[test]
    fn one_account_is_claimed_by_one_tenant() {
        let index = OrgIndex::default();
        sweep(&index, "o-1", &[("111", "a@example.com")]);
        assert_eq!(index.claim("111", "uid-a", None), Ok(()));
        assert_eq!(index.claim("111", "uid-a", None), Ok(()), "claiming again is fine");
        assert_eq!(index.claim("111", "uid-b", None), Err("uid-a".into()), "the second Tenant loses");
        assert_eq!(index.claim("111", "uid-b", Some("uid-a")), Ok(()), "a reclaim takes it from the named UID");
        assert_eq!(index.claimant("111").as_deref(), Some("uid-b"));
        sweep(&index, "o-1", &[("111", "a@example.com")]);
        assert_eq!(index.claimant("111").as_deref(), Some("uid-b"), "claims survive sweeps");
        // A UID tag the index knows counts as a claim.
        index.record_account(
            account("222", "b@example.com"),
            None,
            Some(BTreeMap::from([(crate::contract::TENANT_UID_TAG.to_string(), "uid-c".to_string())])),
        );
        assert_eq!(index.claim("222", "uid-d", None), Err("uid-c".into()));
    }

    #[test]
    fn a_claim_counts_as_recorded_once_the_tenant_says_its_status_names_the_account() {
        let index = OrgIndex::default();
        sweep(&index, "o-1", &[("111", "a@example.com")]);
        index.claim("111", "uid-a", None).unwrap();
        assert_eq!(index.claimant("111").as_deref(), Some("uid-a"));
        assert_eq!(index.recorded_claimant("111"), None, "only in memory: it may never be recorded");
        index.claim_recorded("111", "uid-b");
        assert_eq!(index.recorded_claimant("111"), None, "another Tenant cannot record it");
        index.claim_recorded("111", "uid-a");
        assert_eq!(index.recorded_claimant("111").as_deref(), Some("uid-a"));
        index.claim("111", "uid-a", None).unwrap();
        assert_eq!(index.recorded_claimant("111").as_deref(), Some("uid-a"), "claiming again keeps it recorded");
        index.release_unrecorded("111", "uid-a");
        assert_eq!(index.claimant("111").as_deref(), Some("uid-a"), "a recorded claim is never released");
        index.claim("111", "uid-b", Some("uid-a")).unwrap();
        assert_eq!(index.recorded_claimant("111"), None, "a reclaim starts unrecorded");
        index.release_unrecorded("111", "uid-a");
        assert_eq!(index.claimant("111").as_deref(), Some("uid-b"), "only its own claim is released");
        index.release_unrecorded("111", "uid-b");
        assert_eq!(index.claimant("111"), None, "an unrecorded claim is released");
        // A UID tag is on the account in AWS: it outlives the process.
        index.record_account(
            account("222", "b@example.com"),
            None,
            Some(BTreeMap::from([(crate::contract::TENANT_UID_TAG.to_string(), "uid-c".to_string())])),
        );
        assert_eq!(index.recorded_claimant("222").as_deref(), Some("uid-c"));
    }

    #[test]
    fn a_forgotten_unit_takes_its_subtree_along() {
        let index = OrgIndex::default();
        sweep(&index, "o-1", &[]);
        index.forget_unit("ou-t");
        assert!(!index.has_unit("ou-t") && !index.has_unit("ou-p"));
        assert_eq!(index.lookup_path(&["Tenants".into()]), PathLookup::Missing { parent: "r-1".into(), depth: 0 });
    }
}
