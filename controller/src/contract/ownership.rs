//! Who owns an AWS account: the one rule, used by the account step (creating, adopting and
//! keeping an account), by closure, by the organization index's claims, by `silo import` and
//! by `silo orphans`.
//!
//! ## The rule
//! - An account belongs to the Tenant whose UID it carries in the [`TENANT_UID_TAG`] tag.
//!   Nothing else proves ownership to the controller: an untagged account is taken only with
//!   the owner's consent (see `tenant::account`), and a tag is never overwritten except by a
//!   restore naming exactly that UID.
//! - Seen from the cluster ([`TenantClaims`]), a Tenant also holds the account it names in
//!   `status.accountId` or `spec.accountId`, tagged yet or not: an adoption in progress, or a
//!   restore that has not moved the tag yet, is not an orphan and is not imported again.
//!
//! Every function here is pure.

use std::collections::BTreeMap;

use kube::ResourceExt;

use super::{TENANT_TAG, TENANT_UID_TAG};
use crate::api::Tenant;

/// The Tenant UID an account's tags name, if any.
pub fn tagged_uid(tags: &BTreeMap<String, String>) -> Option<&str> {
    tags.get(TENANT_UID_TAG).map(String::as_str)
}

/// Who an account belongs to, judged by its tags, as one Tenant sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    ThisTenant,
    /// Another Tenant's UID is on it; the name is that Tenant's name tag ("unknown" without one).
    OtherTenant(String),
    Nobody,
}

/// Reads the Silo claim on an account from its tags, for the Tenant with `tenant_uid`.
pub fn claim(tags: &BTreeMap<String, String>, tenant_uid: &str) -> Claim {
    match tagged_uid(tags) {
        Some(uid) if uid == tenant_uid => Claim::ThisTenant,
        Some(_) => Claim::OtherTenant(tags.get(TENANT_TAG).cloned().unwrap_or_else(|| "unknown".into())),
        None => Claim::Nobody,
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
        match tagged_uid(tags) {
            Some(uid) => match self.by_uid.get(uid) {
                Some(name) => Holder::Tenant(name.clone()),
                None => Holder::Gone { uid: uid.to_string(), tenant: tags.get(TENANT_TAG).cloned() },
            },
            None => Holder::Nobody,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn tenant(name: &str, uid: &str, spec_account: Option<&str>, status_account: Option<&str>) -> Tenant {
        let mut tenant = Tenant::new(name, Default::default());
        tenant.metadata.uid = Some(uid.into());
        tenant.spec.account_id = spec_account.map(Into::into);
        tenant.status =
            Some(crate::api::TenantStatus { account_id: status_account.map(Into::into), ..Default::default() });
        tenant
    }

    #[test]
    fn a_claim_is_read_from_the_uid_tag_only() {
        let cases = [
            ("this tenant's uid", tags(&[(TENANT_UID_TAG, "uid-1")]), Claim::ThisTenant),
            (
                "another tenant's uid, named",
                tags(&[(TENANT_UID_TAG, "uid-2"), (TENANT_TAG, "globex")]),
                Claim::OtherTenant("globex".into()),
            ),
            ("another tenant's uid, no name", tags(&[(TENANT_UID_TAG, "uid-2")]), Claim::OtherTenant("unknown".into())),
            ("a name tag alone proves nothing", tags(&[(TENANT_TAG, "acme")]), Claim::Nobody),
            ("untagged", tags(&[("team", "a")]), Claim::Nobody),
        ];
        for (case, tags, want) in cases {
            assert_eq!(claim(&tags, "uid-1"), want, "{case}");
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
