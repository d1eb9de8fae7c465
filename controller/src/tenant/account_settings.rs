//! Step 4: the account's settings (`SettingsReady`): its name, its alternate contacts and the
//! service control policies attached to it.
//!
//! - **Name.** `spec.accountName`, when set, is the account's name: a changed name is applied
//!   with the Account API's PutAccountName. Without it the account keeps its name, but for an
//!   account taken from a pool, which gets the Tenant's name (metadata.name) where AWS Account
//!   Management has trusted access.
//! - **Contacts.** `spec.contacts`, each kind falling back to the controller's defaults
//!   (`--default-contacts-file`), set with PutAlternateContact. Silo records a fingerprint of
//!   each contact it set (`status.appliedContacts`) and removes a contact only when it still
//!   is the one Silo set.
//! - **Policies.** `spec.policies` (ids or names) attached with AttachPolicy. Silo records what
//!   it attached (`status.attachedPolicyIds`, before the call) and detaches only those: a
//!   policy someone else attached, like an organization's guardrail, is never detached.
//!
//! Names and contacts need trusted access for AWS Account Management in the organization; when
//! it is off the step is `Stalled` with `TrustedAccessDisabled` and nothing is changed.
//!
//! Observe (the index for the name; AWS for policies and contacts only when the spec changed
//! them or a verification reads them, see [`super::schedule::reads`]) -> decide
//! ([`plan_contact`], [`plan_policies`], pure) -> act.

use std::collections::BTreeSet;

use kube::{ResourceExt, runtime::events::EventType};
use sha2::{Digest, Sha256};

use super::{
    Context, Error, RECHECK_STALLED,
    schedule::{DriftCheck, Mode, drift_checks, priority, reads},
    status::{Progress, StatusWriter, trusted},
};
use crate::{
    api::{Contact, ContactKind, Tenant},
    aws::{Priority, organizations::AttachRefusal},
    conditions::{self, StepOutcome},
};

/// What to do with one kind of alternate contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContactPlan {
    /// Nothing to change; the recorded fingerprint (if Silo manages it) stays.
    Keep,
    /// Set it (it is missing, changed, or was never set by Silo).
    Set,
    /// Silo set it and it is no longer wanted: read it, and delete it if it is still Silo's.
    Remove,
}

/// Decides one contact kind from what is wanted, the fingerprint of what Silo set, and what
/// AWS has (`observed`: `None` when not read in this reconcile). Pure.
pub fn plan_contact(
    wanted: Option<&Contact>,
    applied: Option<&str>,
    observed: Option<Option<&Contact>>,
) -> ContactPlan {
    match (wanted, observed) {
        (Some(wanted), Some(observed)) if observed == Some(wanted) => ContactPlan::Keep,
        (Some(_), Some(_)) => ContactPlan::Set,
        (Some(wanted), None) if applied == Some(fingerprint(wanted).as_str()) => ContactPlan::Keep,
        (Some(_), None) => ContactPlan::Set,
        (None, _) if applied.is_some() => ContactPlan::Remove,
        (None, _) => ContactPlan::Keep,
    }
}

/// A short, stable fingerprint of a contact, recorded in the status.
pub fn fingerprint(contact: &Contact) -> String {
    let digest = Sha256::digest(format!("{}\n{}\n{}\n{}", contact.name, contact.title, contact.email, contact.phone));
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// What to do with the account's service control policies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyPlan {
    /// Policies to attach (wanted, not attached).
    pub attach: Vec<String>,
    /// Policies to detach (Silo attached them, no longer wanted, still attached).
    pub detach: Vec<String>,
    /// What Silo has attached once the plan is carried out.
    pub silo_attached: Vec<String>,
}

/// Decides the policies from the wanted ids, those Silo attached, and those attached now.
/// A wanted policy someone else attached is left to them: Silo does not record it as its own,
/// so it never detaches it. Pure.
pub fn plan_policies(wanted: &BTreeSet<String>, silo: &BTreeSet<String>, attached: &BTreeSet<String>) -> PolicyPlan {
    let attach: Vec<String> = wanted.difference(attached).cloned().collect();
    let detach: Vec<String> = silo.difference(wanted).filter(|id| attached.contains(*id)).cloned().collect();
    let silo_attached = wanted.iter().filter(|id| silo.contains(*id) || !attached.contains(*id)).cloned().collect();
    PolicyPlan { attach, detach, silo_attached }
}

/// Everything the settings step works with in one reconcile.
pub struct SettingsStep<'a> {
    pub tenant: &'a Tenant,
    pub mode: Mode,
    pub ctx: &'a Context,
}

impl SettingsStep<'_> {
    /// Runs the settings step; the account is ready and placed.
    pub async fn run(&self, progress: &mut Progress, writer: &mut StatusWriter) -> Result<StepOutcome, Error> {
        if let Some(trusted) = trusted(self.tenant, self.mode, conditions::SETTINGS_READY) {
            return Ok(trusted);
        }
        let account_id = progress.status.account_id.clone().unwrap_or_default();
        if let Some(stalled) = self.policies(&account_id, progress, writer).await? {
            return Ok(stalled);
        }
        if let Some(stalled) = self.name_and_contacts(&account_id, progress).await? {
            return Ok(stalled);
        }
        let status = &progress.status;
        let mut parts = vec![format!("named {:?}", status.account_name.as_deref().unwrap_or_default())];
        if !status.attached_policy_ids.is_empty() {
            parts.push(format!("policies {}", status.attached_policy_ids.join(", ")));
        }
        if !status.applied_contacts.is_empty() {
            let kinds: Vec<&str> = status.applied_contacts.keys().map(String::as_str).collect();
            parts.push(format!("{} contacts", kinds.join(", ")));
        }
        Ok(StepOutcome::done("SettingsApplied", format!("Account {account_id} is {}", parts.join("; "))))
    }

    /// Whether this reconcile reads `check` from AWS.
    fn reads(&self, progress: &Progress, check: DriftCheck) -> bool {
        let checks = drift_checks(self.tenant, &self.ctx.config.default_contacts);
        reads(self.mode, &checks, progress.status.verification_count, check)
    }

    /// Attaches and detaches service control policies; `Some` when the step is stalled.
    async fn policies(
        &self,
        account_id: &str,
        progress: &mut Progress,
        writer: &mut StatusWriter,
    ) -> Result<Option<StepOutcome>, Error> {
        let org = &self.ctx.org;
        let mut wanted = BTreeSet::new();
        for named in &self.tenant.spec.policies {
            match org.policy(named).await? {
                Some(policy) => wanted.insert(policy.id),
                None => return Ok(Some(policy_not_found(named))),
            };
        }
        let silo: BTreeSet<String> = progress.status.attached_policy_ids.iter().cloned().collect();
        if wanted == silo && !self.reads(progress, DriftCheck::Policies) {
            return Ok(None);
        }
        let priority = priority(self.mode);
        let attached: BTreeSet<String> = org.policies_of(account_id, priority).await?.into_iter().collect();
        let plan = plan_policies(&wanted, &silo, &attached);
        if plan.attach.is_empty() && plan.detach.is_empty() {
            progress.status.attached_policy_ids = plan.silo_attached;
            return Ok(None);
        }
        // What Silo attaches is recorded as its own before the call.
        let mut recorded: BTreeSet<String> = silo.union(&plan.attach.iter().cloned().collect()).cloned().collect();
        progress.status.attached_policy_ids = recorded.iter().cloned().collect();
        writer.save_intent(progress, "AttachPolicy").await?;
        for id in &plan.attach {
            match org.attach_policy(id, account_id).await? {
                Ok(()) | Err(AttachRefusal::AlreadyAttached) => {}
                Err(refusal) => {
                    recorded.remove(id);
                    progress.status.attached_policy_ids = recorded.iter().cloned().collect();
                    return Ok(Some(match refusal {
                        AttachRefusal::LimitReached(message) => StepOutcome::stalled(
                            "PolicyLimitExceeded",
                            format!(
                                "AWS refused to attach {id} to account {account_id}: it has as many service control \
                                 policies as AWS allows (5, FullAWSAccess included; {message}); detach one, or list \
                                 fewer in spec.policies"
                            ),
                            RECHECK_STALLED,
                        ),
                        _ => policy_not_found(id),
                    }));
                }
            }
        }
        for id in &plan.detach {
            org.detach_policy(id, account_id).await?;
        }
        progress.status.attached_policy_ids = plan.silo_attached;
        let note = format!("Attached {:?} and detached {:?} on account {account_id}", plan.attach, plan.detach);
        self.ctx.event(self.tenant, EventType::Normal, "PoliciesChanged", note).await;
        Ok(None)
    }

    /// Renames the account and sets its alternate contacts; `Some` when the step is stalled.
    async fn name_and_contacts(&self, account_id: &str, progress: &mut Progress) -> Result<Option<StepOutcome>, Error> {
        let org = &self.ctx.org;
        let accounts = &self.ctx.aws.accounts;
        let current = org.account(account_id, Priority::User).await?.map(|a| a.account.name).unwrap_or_default();
        // An account taken from a pool still has the pool's name: it gets the Tenant's.
        let wanted = self
            .tenant
            .spec
            .account_name
            .clone()
            .or_else(|| progress.status.claimed_from_pool.as_ref().map(|_| self.tenant.name_any()));
        let rename = wanted.as_ref().filter(|wanted| **wanted != current);
        let defaults = &self.ctx.config.default_contacts;
        let wanted = |kind: ContactKind| {
            self.tenant.spec.contacts.as_ref().and_then(|c| c.get(kind)).or(defaults.get(kind)).cloned()
        };
        let touched: Vec<ContactKind> = ContactKind::ALL
            .into_iter()
            .filter(|kind| {
                let applied = progress.status.applied_contacts.get(kind.as_str()).map(String::as_str);
                self.reads(progress, DriftCheck::Contact(*kind))
                    || plan_contact(wanted(*kind).as_ref(), applied, None) != ContactPlan::Keep
            })
            .collect();
        if rename.is_none() && touched.is_empty() {
            progress.status.account_name = Some(current);
            return Ok(None);
        }
        let trusted = org.account_management_trusted().await?;
        // The pool's name on a taken account is only a default: without trusted access it
        // stays (a name the spec asks for, or contacts, still need it).
        if !trusted && self.tenant.spec.account_name.is_none() && touched.is_empty() {
            progress.status.account_name = Some(current);
            return Ok(None);
        }
        if !trusted {
            return Ok(Some(StepOutcome::stalled(
                "TrustedAccessDisabled",
                "Setting an account's name or alternate contacts needs trusted access for AWS Account Management \
                 in the organization: run `aws organizations enable-aws-service-access --service-principal \
                 account.amazonaws.com` in the management account; nothing was changed",
                RECHECK_STALLED,
            )));
        }
        if let Some(name) = rename {
            accounts.rename(account_id, name).await?;
            org.index.update_account(account_id, |a| a.account.name = name.clone());
            let note = format!("Renamed account {account_id} from {current:?} to {name:?}");
            self.ctx.event(self.tenant, EventType::Normal, "AccountRenamed", note).await;
        }
        progress.status.account_name = Some(rename.cloned().unwrap_or(current));

        let priority = priority(self.mode);
        let mut changed = vec![];
        for kind in touched {
            let want = wanted(kind);
            let applied = progress.status.applied_contacts.get(kind.as_str()).cloned();
            let observed = if self.reads(progress, DriftCheck::Contact(kind)) {
                Some(accounts.contact(account_id, kind, priority).await?)
            } else {
                None
            };
            match plan_contact(want.as_ref(), applied.as_deref(), observed.as_ref().map(Option::as_ref)) {
                ContactPlan::Keep => {}
                ContactPlan::Set => {
                    let want = want.expect("only a wanted contact is set");
                    accounts.set_contact(account_id, kind, &want).await?;
                    progress.status.applied_contacts.insert(kind.as_str().into(), fingerprint(&want));
                    changed.push(kind.as_str());
                }
                ContactPlan::Remove => {
                    let now = match observed {
                        Some(now) => now,
                        None => accounts.contact(account_id, kind, Priority::User).await?,
                    };
                    // Someone else changed it since: it is theirs now, and stays.
                    if now.as_ref().map(fingerprint) == applied {
                        accounts.delete_contact(account_id, kind).await?;
                        changed.push(kind.as_str());
                    }
                    progress.status.applied_contacts.remove(kind.as_str());
                }
            }
        }
        if !changed.is_empty() {
            let note = format!("Set or removed the {} contacts of account {account_id}", changed.join(", "));
            self.ctx.event(self.tenant, EventType::Normal, "ContactsChanged", note).await;
        }
        Ok(None)
    }
}

fn policy_not_found(named: &str) -> StepOutcome {
    StepOutcome::stalled(
        "PolicyNotFound",
        format!(
            "spec.policies names {named}, which is not a service control policy of the organization: create it, or \
             fix spec.policies (an id like p-abcd1234 or the policy's name); nothing was attached"
        ),
        RECHECK_STALLED,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(name: &str) -> Contact {
        Contact {
            name: name.into(),
            title: "CISO".into(),
            email: "sec@example.com".into(),
            phone: "+1 555 0100".into(),
        }
    }

    /// (case, wanted, fingerprint Silo recorded, what AWS has if read, plan)
    type ContactCase<'a> = (&'a str, Option<&'a Contact>, Option<&'a str>, Option<Option<&'a Contact>>, ContactPlan);
    /// (case, wanted, Silo's, attached now, attach, detach, Silo's afterwards)
    type PolicyCase<'a> =
        (&'a str, &'a [&'a str], &'a [&'a str], &'a [&'a str], &'a [&'a str], &'a [&'a str], &'a [&'a str]);

    #[test]
    fn every_contact_case() {
        let alice = contact("Alice");
        let bob = contact("Bob");
        let fp = fingerprint(&alice);
        let table: &[ContactCase] = &[
            ("wanted, set by Silo, not read", Some(&alice), Some(&fp), None, ContactPlan::Keep),
            ("wanted, never set", Some(&alice), None, None, ContactPlan::Set),
            ("wanted changed in the spec", Some(&bob), Some(&fp), None, ContactPlan::Set),
            ("read: as wanted", Some(&alice), Some(&fp), Some(Some(&alice)), ContactPlan::Keep),
            ("read: someone changed it", Some(&alice), Some(&fp), Some(Some(&bob)), ContactPlan::Set),
            ("read: someone deleted it", Some(&alice), Some(&fp), Some(None), ContactPlan::Set),
            ("read: someone else's, now wanted", Some(&alice), None, Some(Some(&bob)), ContactPlan::Set),
            ("no longer wanted, Silo set it", None, Some(&fp), None, ContactPlan::Remove),
            ("not wanted, not Silo's", None, None, Some(Some(&bob)), ContactPlan::Keep),
            ("not wanted, never set", None, None, None, ContactPlan::Keep),
        ];
        for (case, wanted, applied, observed, expected) in table {
            assert_eq!(&plan_contact(*wanted, *applied, *observed), expected, "{case}");
        }
    }

    #[test]
    fn only_what_silo_attached_is_ever_detached() {
        let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let v = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let table: &[PolicyCase] = &[
            ("attach a new one", &["p-a"], &[], &["p-full"], &["p-a"], &[], &["p-a"]),
            ("in place", &["p-a"], &["p-a"], &["p-full", "p-a"], &[], &[], &["p-a"]),
            ("detached out of band: attach again", &["p-a"], &["p-a"], &["p-full"], &["p-a"], &[], &["p-a"]),
            ("no longer wanted: detach", &[], &["p-a"], &["p-full", "p-a"], &[], &["p-a"], &[]),
            ("no longer wanted, already gone", &[], &["p-a"], &["p-full"], &[], &[], &[]),
            ("a guardrail wanted too stays theirs", &["p-g"], &[], &["p-full", "p-g"], &[], &[], &[]),
            ("a guardrail no longer wanted stays", &[], &[], &["p-full", "p-g"], &[], &[], &[]),
            ("the guardrail is never detached", &["p-a"], &["p-a"], &["p-full", "p-g", "p-a"], &[], &[], &["p-a"]),
        ];
        for (case, wanted, silo, attached, attach, detach, after) in table {
            let plan = plan_policies(&set(wanted), &set(silo), &set(attached));
            assert_eq!(plan, PolicyPlan { attach: v(attach), detach: v(detach), silo_attached: v(after) }, "{case}");
        }
    }

    #[test]
    fn fingerprints_change_with_any_field() {
        let a = contact("Alice");
        let mut b = a.clone();
        b.phone = "+1 555 0101".into();
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert_eq!(fingerprint(&a).len(), 16);
    }
}
