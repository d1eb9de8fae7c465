//! The last stage of the pipeline: what one reconcile learned, written as the Tenant's status.
//!
//! Silo owns the whole status and writes it with server-side apply under one field manager,
//! only when it changed. Steps may also [`Report::write`] mid-way to record intent before an
//! AWS call that creates something; the final write then costs nothing if nothing moved.

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};

use super::{Context, Error, FIELD_MANAGER, identity::Identity};
use crate::{
    api::{Tenant, TenantStatus},
    conditions::{self, Conditions, StepOutcome},
};

/// The working copy of one Tenant's status during a reconcile.
pub struct Report<'t> {
    tenant: &'t Tenant,
    pub status: TenantStatus,
    /// `AccountReady`.
    pub account: StepOutcome,
    /// `PlacementReady`; `None` when the step was not evaluated in this reconcile.
    pub placement: Option<StepOutcome>,
    /// `BaselineReady`; `None` when the step was not evaluated in this reconcile.
    pub baseline: Option<StepOutcome>,
    /// Overrides the derived phase (used while deleting).
    pub phase: Option<&'static str>,
    paused: bool,
    written: Option<TenantStatus>,
}

impl<'t> Report<'t> {
    pub fn new(tenant: &'t Tenant) -> Self {
        Self {
            tenant,
            status: tenant.status.clone().unwrap_or_default(),
            account: StepOutcome::in_progress("Pending", "Waiting for the account to be created or adopted"),
            placement: None,
            baseline: None,
            phase: None,
            paused: false,
            written: tenant.status.clone(),
        }
    }

    /// Records the deterministic account name and email before any AWS call.
    pub fn record_identity(&mut self, identity: &Identity) {
        self.status.account_name = Some(identity.account_name.clone());
        self.status.email = Some(identity.email.clone());
    }

    /// The tenant is paused: nothing is done and the conditions say so.
    pub fn paused(&mut self) {
        self.paused = true;
    }

    /// Marks steps the pipeline did not reach as waiting for the one before them.
    pub fn fill_unreached(&mut self) {
        let waiting = StepOutcome::in_progress("WaitingForAccount", "Waits until the account is ready");
        self.placement.get_or_insert_with(|| waiting.clone());
        let waiting = StepOutcome::in_progress("WaitingForPlacement", "Waits until the account is placed");
        self.baseline.get_or_insert(waiting);
    }

    /// Whether every step is done.
    pub fn all_done(&self) -> bool {
        self.account.is_done()
            && self.placement.as_ref().is_some_and(StepOutcome::is_done)
            && self.baseline.as_ref().is_some_and(StepOutcome::is_done)
    }

    /// Computes the conditions and phase, and writes the status if it changed.
    pub async fn write(&mut self, ctx: &Context) -> Result<(), Error> {
        self.render(Timestamp::now());
        if self.written.as_ref() == Some(&self.status) {
            return Ok(());
        }
        let api = Api::<Tenant>::all(ctx.client.clone());
        let patch = serde_json::json!({
            "apiVersion": "silo.dev/v1alpha1",
            "kind": "Tenant",
            "status": self.status,
        });
        api.patch_status(&self.tenant.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await?;
        self.written = Some(self.status.clone());
        Ok(())
    }

    /// The pure part of [`Report::write`]: conditions and phase from the outcomes.
    pub fn render(&mut self, now: Timestamp) {
        let generation = self.tenant.metadata.generation;
        self.status.observed_generation = generation;
        let mut conds = Conditions::new(&mut self.status.conditions, generation, now);
        if self.paused {
            let message = "spec.paused is true: Silo makes no AWS calls for this tenant";
            conds.set(conditions::READY, false, "Paused", message);
            conds.set(conditions::RECONCILING, false, "Paused", "");
            conds.set(conditions::STALLED, false, "Paused", "");
            self.status.phase = Some(self.phase.unwrap_or("Paused").into());
            return;
        }
        conds.step(conditions::ACCOUNT_READY, &self.account);
        let mut steps = vec![&self.account];
        if let Some(placement) = &self.placement {
            conds.step(conditions::PLACEMENT_READY, placement);
            steps.push(placement);
        }
        if let Some(baseline) = &self.baseline {
            conds.step(conditions::BASELINE_READY, baseline);
            steps.push(baseline);
        }
        conds.summarize(&steps);
        let derived = match steps.iter().find(|s| !s.is_done()) {
            None => "Ready",
            Some(StepOutcome::Stalled { .. }) => "Stalled",
            Some(_) if self.status.account_id.is_none() => "Creating",
            Some(_) => "Provisioning",
        };
        self.status.phase = Some(self.phase.unwrap_or(derived).into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TenantSpec;

    #[test]
    fn a_step_that_has_not_run_keeps_ready_false() {
        let tenant = Tenant::new("acme", TenantSpec::default());
        let mut report = Report::new(&tenant);
        report.fill_unreached();
        report.account = StepOutcome::done("AccountCreated", "ok");
        report.placement = Some(StepOutcome::done("Placed", "ok"));
        // The baseline step is running: a write now (intent before CreateStack) is not Ready.
        report.render(Timestamp::now());
        assert!(!conditions::is_true(&report.status.conditions, conditions::READY));
        assert_eq!(conditions::find(&report.status.conditions, conditions::BASELINE_READY).unwrap().status, "False");

        report.baseline = Some(StepOutcome::done("BaselineApplied", "ok"));
        report.render(Timestamp::now());
        assert!(conditions::is_true(&report.status.conditions, conditions::READY));
        assert_eq!(report.status.phase.as_deref(), Some("Ready"));
    }
}
