//! The last stage of the pipeline: what one reconcile learned, written as the Tenant's status.
//!
//! [`Progress`] is the working copy: the status fields the steps record, and each step's
//! [`StepOutcome`]. [`Progress::render`] turns it into conditions and a phase (pure).
//! [`StatusWriter`] is the only code that writes a Tenant's status: with server-side apply
//! under one field manager, once at the end of a reconcile ([`StatusWriter::write`]), plus
//! the crash-safety writes a step makes before an AWS call that creates something
//! ([`StatusWriter::save_intent`]). Both skip the write when nothing changed.

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};

use super::{Error, schedule::Mode};
use crate::{
    api::{DriftedResource, Tenant, TenantStatus},
    conditions::{self, Conditions, StepOutcome},
    contract::FIELD_MANAGER,
};

/// The working copy of one Tenant's status during a reconcile.
pub struct Progress {
    generation: Option<i64>,
    pub status: TenantStatus,
    /// `AccountReady`; `None` until the step has run.
    pub account: Option<StepOutcome>,
    /// `PlacementReady`; `None` until the step has run.
    pub placement: Option<StepOutcome>,
    /// `SettingsReady`; `None` until the step has run.
    pub settings: Option<StepOutcome>,
    /// `BaselineReady`; `None` until the step has run.
    pub baseline: Option<StepOutcome>,
    /// Overrides the derived phase (while deleting).
    pub phase: Option<&'static str>,
    pub paused: bool,
    /// Work after the steps (a drift check) wants a look sooner than the next verification.
    pub look_again: Option<std::time::Duration>,
}

impl Progress {
    pub fn new(tenant: &Tenant) -> Self {
        Self {
            generation: tenant.metadata.generation,
            status: tenant.status.clone().unwrap_or_default(),
            account: None,
            placement: None,
            settings: None,
            baseline: None,
            phase: None,
            paused: false,
            look_again: None,
        }
    }

    /// The status as it would be written now: conditions and phase from the outcomes of the
    /// steps that have one (see [`Progress::start_steps`]).
    pub fn render(&self, now: Timestamp) -> TenantStatus {
        let mut status = self.status.clone();
        status.observed_generation = self.generation;
        let mut conds = Conditions::new(&mut status.conditions, self.generation, now);
        if self.paused {
            let message = "spec.paused is true: Silo makes no AWS calls for this tenant";
            conds.set(conditions::READY, false, "Paused", message);
            conds.set(conditions::RECONCILING, false, "Paused", "");
            conds.set(conditions::STALLED, false, "Paused", "");
            status.phase = Some(self.phase.unwrap_or("Paused").into());
            return status;
        }
        let steps: Vec<(&str, &StepOutcome)> = [
            (conditions::ACCOUNT_READY, &self.account),
            (conditions::PLACEMENT_READY, &self.placement),
            (conditions::SETTINGS_READY, &self.settings),
            (conditions::BASELINE_READY, &self.baseline),
        ]
        .into_iter()
        .filter_map(|(type_, outcome)| Some((type_, outcome.as_ref()?)))
        .collect();
        for (type_, outcome) in &steps {
            conds.step(type_, outcome);
        }
        let outcomes: Vec<&StepOutcome> = steps.iter().map(|(_, outcome)| *outcome).collect();
        conds.summarize(&outcomes);
        // What the last drift check found; no check yet (or no Baseline), no condition.
        let drift = status.baseline.as_ref().and_then(|b| b.drift.as_ref()).filter(|d| d.checked_at.is_some());
        if let Some(drift) = drift {
            match drift.resources.as_slice() {
                [] => conds.set(conditions::BASELINE_DRIFTED, false, "InSync", "The last drift check found no drift"),
                resources => {
                    let message = format!(
                        "Changed outside CloudFormation: {}{}",
                        describe(resources),
                        if drift.recheck { "; being put back (spec.drift.repair)" } else { "" }
                    );
                    conds.set(conditions::BASELINE_DRIFTED, true, "Drifted", &message);
                }
            }
        }
        let derived = match outcomes.iter().find(|s| !s.is_done()) {
            None => "Ready",
            Some(StepOutcome::Stalled { .. }) => "Stalled",
            Some(_) if status.account_id.is_none() => "Creating",
            Some(_) => "Provisioning",
        };
        status.phase = Some(self.phase.unwrap_or(derived).into());
        if drift.is_none() {
            status.conditions.retain(|c| c.type_ != conditions::BASELINE_DRIFTED);
        }
        status
    }

    /// Marks every step as not done until it has run: a write in the middle of a step (intent
    /// before an AWS call) must never report Ready.
    pub fn start_steps(&mut self) {
        let waiting = |reason, message| Some(StepOutcome::wait(reason, message, std::time::Duration::MAX));
        self.account = waiting("Pending", "Waiting for the account to be created or adopted");
        self.placement = waiting("WaitingForAccount", "Waits until the account is ready");
        self.settings = waiting("WaitingForPlacement", "Waits until the account is placed");
        self.baseline = waiting("WaitingForSettings", "Waits until the account's settings are applied");
    }

    /// Whether every step ran and is done.
    pub fn all_done(&self) -> bool {
        [&self.account, &self.placement, &self.settings, &self.baseline]
            .iter()
            .all(|s| s.as_ref().is_some_and(StepOutcome::is_done))
    }

    /// The first step that is not done, if any.
    pub fn blocking(&self) -> Option<&StepOutcome> {
        [&self.account, &self.placement, &self.settings, &self.baseline].into_iter().flatten().find(|s| !s.is_done())
    }
}

/// In [`Mode::Converge`], a step whose condition is already True for this generation is not
/// looked at again: its recorded outcome stands until the next verification.
pub fn trusted(tenant: &Tenant, mode: Mode, condition: &str) -> Option<StepOutcome> {
    if mode != Mode::Converge {
        return None;
    }
    let recorded = conditions::find(&tenant.status.as_ref()?.conditions, condition)?;
    let current = recorded.status == "True"
        && recorded.observed_generation.is_some()
        && recorded.observed_generation == tenant.metadata.generation;
    current.then(|| StepOutcome::recorded_done(&recorded.reason, &recorded.message))
}

/// Writes one Tenant's status; remembers what it wrote, so an unchanged status costs nothing.
pub struct StatusWriter {
    api: Api<Tenant>,
    name: String,
    written: Option<TenantStatus>,
}

impl StatusWriter {
    pub fn new(tenant: &Tenant, client: kube::Client) -> Self {
        Self { api: Api::all(client), name: tenant.name_any(), written: tenant.status.clone() }
    }

    /// A crash-safety write: records the progress so far before an AWS call that creates
    /// something (`before` names the call, for the logs), so a controller killed during the
    /// call finds the intent on its next look.
    pub async fn save_intent(&mut self, progress: &Progress, before: &'static str) -> Result<(), Error> {
        tracing::debug!(tenant = %self.name, before, "recording intent");
        self.write(progress).await
    }

    /// Writes the status if it changed since it was read or last written.
    pub async fn write(&mut self, progress: &Progress) -> Result<(), Error> {
        let status = progress.render(Timestamp::now());
        if self.written.as_ref() == Some(&status) {
            return Ok(());
        }
        let patch = serde_json::json!({
            "apiVersion": "silo.dev/v1alpha1",
            "kind": "Tenant",
            "status": status,
        });
        self.api.patch_status(&self.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
        self.written = Some(status);
        Ok(())
    }

    /// The status last written (or read), with its conditions.
    pub fn written(&self) -> Option<&TenantStatus> {
        self.written.as_ref()
    }
}

/// The drifted resources in a few words, for Events and the condition. Pure.
pub fn describe(resources: &[DriftedResource]) -> String {
    let each: Vec<String> = resources
        .iter()
        .map(|r| {
            let what = if r.differences.is_empty() { String::new() } else { format!(": {}", r.differences.join("; ")) };
            format!("{} ({}) in {} is {}{what}", r.logical_id, r.resource_type, r.region, r.status)
        })
        .collect();
    each.join(", ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api::TenantSpec;

    #[test]
    fn a_step_that_has_not_run_keeps_ready_false() {
        let tenant = Tenant::new("acme", TenantSpec::default());
        let mut progress = Progress::new(&tenant);
        progress.start_steps();
        progress.account = Some(StepOutcome::done("AccountCreated", "ok"));
        progress.placement = Some(StepOutcome::done("Placed", "ok"));
        progress.settings = Some(StepOutcome::done("SettingsApplied", "ok"));
        // The baseline step is running: a write now (intent before CreateStack) is not Ready.
        let status = progress.render(Timestamp::now());
        assert!(!conditions::is_true(&status.conditions, conditions::READY));
        assert_eq!(conditions::find(&status.conditions, conditions::BASELINE_READY).unwrap().status, "False");

        progress.baseline = Some(StepOutcome::done("BaselineApplied", "ok"));
        let status = progress.render(Timestamp::now());
        assert!(conditions::is_true(&status.conditions, conditions::READY));
        assert_eq!(status.phase.as_deref(), Some("Ready"));
        assert!(progress.all_done());
    }

    #[test]
    fn the_first_step_not_done_blocks() {
        let tenant = Tenant::new("acme", TenantSpec::default());
        let mut progress = Progress::new(&tenant);
        progress.account = Some(StepOutcome::done("AccountCreated", "ok"));
        progress.placement =
            Some(StepOutcome::stalled("OrganizationalUnitNotFound", "create it", Duration::from_secs(600)));
        assert_eq!(progress.blocking().unwrap().reason(), "OrganizationalUnitNotFound");
        let status = progress.render(Timestamp::now());
        assert_eq!(status.phase.as_deref(), Some("Stalled"));
    }

    #[test]
    fn the_description_names_each_resource_and_what_differs() {
        let resources = [DriftedResource {
            region: "us-east-1".into(),
            logical_id: "Topic".into(),
            resource_type: "AWS::SNS::Topic".into(),
            status: "MODIFIED".into(),
            differences: vec!["/TopicName: a -> b".into()],
        }];
        assert_eq!(describe(&resources), "Topic (AWS::SNS::Topic) in us-east-1 is MODIFIED: /TopicName: a -> b");
    }
}
