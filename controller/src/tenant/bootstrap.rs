//! Step 4: the baseline. A role is assumed in the tenant's account and the Baseline's stack
//! is run there, one per region, and kept at the current revision.
//!
//! The stages: dereference (the Baseline from the watch cache, the external-id Secret) ->
//! validate (parameters the template declares) -> per region, observe the stack and carry
//! out the pure [`next_action`]. Nothing is applied when the Baseline is missing or a
//! parameter is not declared by the template. While converging, a tenant whose stacks are
//! recorded at the desired revision is not looked at again until its next verification.
//!
//! ## Shape
//! Observe, decide, act, as in the closure: `decide` (pure, table-tested) reads the facts
//! gathered so far and names either the one call whose answer it needs next (read the
//! external id, open the session, preview, converge a region) or the step's outcome; `run`
//! makes that call and asks again. AWS's refusals reach the step as typed answers
//! ([`crate::aws::stack_answers`]), never as error codes.

pub mod drift;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use aws_credential_types::Credentials;
use kube::{ResourceExt, runtime::reflector::ObjectRef};

use super::{
    Context, Error, RECHECK_STALLED,
    schedule::{Mode, Verification},
    status::{Progress, StatusWriter},
};
use crate::{
    api::{
        Baseline, ResourceChange, RolledBack, RolloutStatus, StackReport, Tenant, TenantBaselineStatus, TenantPreview,
    },
    aws::{
        AwsError, AwsErrorKind, Priority, SessionKey,
        cloudformation::{Stack, StackSpec, Stacks, Update},
        stack_answers::{RegionFailure, SessionRefusal, StackRefusal, region_failure, session_refusal, stack_refusal},
    },
    baseline::{
        self, Deployed, UndeclaredParameters, revisions, rollout,
        stack::{Limits, Memory, Observed, POLL_BOUNDS, StackAction, next_action, poll_after, request_token},
    },
    conditions::{self, StepOutcome},
};

/// The tag that records which revision a stack runs.
pub const REVISION_TAG: &str = "silo.dev/revision";
/// The first look at a stack after an operation was started on it.
const POLL: Duration = POLL_BOUNDS.0;
/// How soon a role that cannot be assumed yet is tried again: a quarter of the time the
/// tenant has waited for it, between these bounds. A role that propagates in seconds is used
/// within seconds; one that takes AWS's few minutes is tried every 10 s.
const ROLE_RETRY: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(10));

/// When to try a role again after `waited` without it. Pure.
fn role_retry(waited: Duration) -> Duration {
    (waited / 4).clamp(ROLE_RETRY.0, ROLE_RETRY.1)
}

/// How often a failed create is deleted and created again before the tenant is Stalled.
pub const MAX_CREATE_ATTEMPTS: u32 = 2;
/// How long a stack may stay in progress before a person is told.
pub const IN_PROGRESS_TIMEOUT: Duration = Duration::from_secs(3600);

/// Everything the baseline step works with in one reconcile.
pub struct BaselineStep<'a> {
    pub tenant: &'a Tenant,
    pub mode: Mode,
    pub ctx: &'a Context,
}

/// What the baseline step works towards in one reconcile: the revision the tenant runs (the
/// one the rollout admits it to) and what that revision deploys for it.
#[derive(Clone, Debug, Default, PartialEq)]
struct Target {
    /// The Baseline revision.
    admitted: String,
    deployed: Deployed,
    parameters: BTreeMap<String, String>,
    /// What the stacks must run: the revision and this tenant's parameters.
    revision: String,
    regions: Vec<String>,
    /// The rollback that sends the tenant back to `admitted`, when one does.
    rolled_back: Option<RolledBack>,
}

/// The external id the Baseline names, as its Secret holds it.
#[derive(Clone, Debug, PartialEq)]
enum ExternalId {
    Value(String),
    /// The Secret, or its key, is not there.
    Missing,
}

/// The session in the tenant account, or why there is none.
#[derive(Clone, Debug)]
enum Session {
    Open {
        key: SessionKey,
        credentials: Credentials,
    },
    /// The role refused Silo: AWS's words, and how long `BaselineReady` has been False.
    RoleRefused {
        message: String,
        not_ready_for: Duration,
    },
}

/// How converging one region went.
#[derive(Clone, Debug)]
enum RegionAnswer {
    Converged(StepOutcome),
    /// The region is not enabled in the account.
    NotEnabled,
    /// The session went stale: this is AWS's error.
    StaleSession(AwsError),
}

/// What the baseline step knows in one reconcile. The first fields come from the watch
/// caches and the status, before any call; each answer after them is `None` (or empty) until
/// [`decide`] asks for it, and it asks only when the answers before it do not settle the step.
#[derive(Clone, Debug)]
struct BaselineFacts {
    account_id: String,
    /// `spec.baseline.name`; `None`: no baseline requested.
    wanted: Option<String>,
    /// The Baseline, from the watch cache.
    baseline: Option<Arc<Baseline>>,
    /// Its rollout, as this process last decided it, else as its status records it.
    rollout: Option<RolloutStatus>,
    /// What to run, or why there is nothing to run yet; `None` while the Baseline has no
    /// rollout recorded.
    target: Option<Result<Target, StepOutcome>>,
    /// The step's outcome recorded earlier, when the stacks are recorded at the target and
    /// trusted until the next verification (see [`BaselineStep::already_applied`]).
    applied: Option<StepOutcome>,
    /// This tenant owes the rollout a preview.
    previewing: bool,
    /// Where the external-id Secrets live, for the message when one is missing.
    external_id_namespace: String,
    /// `--role-patience-seconds`.
    role_patience: Duration,

    /// [`Call::ReadExternalId`].
    external_id: Option<ExternalId>,
    /// [`Call::OpenSession`].
    session: Option<Session>,
    /// [`Call::Preview`] was made.
    previewed: bool,
    /// [`Call::Converge`], one answer per region, in the target's order.
    regions: Vec<RegionAnswer>,
}

/// The one call [`decide`] needs made before it can say more; its answer joins the facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    /// Read the external id from its Secret.
    ReadExternalId,
    /// Record the admission to the target revision, then assume the Baseline's role.
    OpenSession,
    /// Preview the rollout's revision: a change set per region, never executed.
    Preview,
    /// Observe the stack of the target's region at this index, decide ([`next_action`]), act.
    Converge(usize),
}

/// What [`decide`] says of the facts so far.
#[derive(Clone, Debug)]
enum BaselineDecision {
    Next(Call),
    /// No baseline requested: forget the one recorded; the step is done.
    NoBaseline(StepOutcome),
    /// The step's outcome in this reconcile.
    Report(StepOutcome),
    /// The session went stale (or the role changed): make a new one and retry soon, as this
    /// error made transient.
    RenewSession(AwsError),
}

/// Decides the baseline step from the facts so far: the next call, or how the step ends in
/// this reconcile. Pure. Dereference and validate come first, so nothing is applied unless
/// everything is in order.
fn decide(facts: &BaselineFacts) -> BaselineDecision {
    use BaselineDecision::{Next, Report};
    let Some(wanted) = &facts.wanted else {
        return BaselineDecision::NoBaseline(StepOutcome::done("NoBaseline", "No baseline requested"));
    };
    let Some(baseline) = &facts.baseline else {
        return Report(StepOutcome::stalled(
            "BaselineNotFound",
            format!("Baseline {wanted:?} does not exist: create it or fix spec.baseline.name"),
            RECHECK_STALLED,
        ));
    };
    let target = match &facts.target {
        None => {
            return Report(StepOutcome::wait(
                "WaitingForRevision",
                format!("Baseline {wanted:?} has no revision recorded yet"),
                Duration::from_secs(5),
            ));
        }
        Some(Err(no_target)) => return Report(no_target.clone()),
        Some(Ok(target)) => target,
    };
    if !facts.previewing
        && let Some(done) = &facts.applied
    {
        return Report(done.clone());
    }
    if let Some(reference) = &baseline.spec.external_id {
        match &facts.external_id {
            None => return Next(Call::ReadExternalId),
            Some(ExternalId::Missing) => {
                return Report(StepOutcome::stalled(
                    "ExternalIdNotFound",
                    format!(
                        "Secret {}/{} has no key {:?} with the external id of Baseline {wanted:?}",
                        facts.external_id_namespace, reference.name, reference.key
                    ),
                    RECHECK_STALLED,
                ));
            }
            Some(ExternalId::Value(_)) => {}
        }
    }
    match &facts.session {
        None => return Next(Call::OpenSession),
        Some(Session::RoleRefused { message, not_ready_for }) => {
            let role = &baseline.spec.role_name;
            return Report(role_refused(role, &facts.account_id, message, *not_ready_for, facts.role_patience));
        }
        Some(Session::Open { .. }) => {}
    }
    if facts.previewing && !facts.previewed {
        return Next(Call::Preview);
    }
    let mut outcomes = vec![];
    for (region, answer) in target.regions.iter().zip(&facts.regions) {
        outcomes.push(match answer {
            RegionAnswer::Converged(outcome) => outcome.clone(),
            RegionAnswer::NotEnabled => StepOutcome::wait(
                "RegionNotEnabled",
                format!("Region {region} is not enabled in account {}; retrying", facts.account_id),
                Duration::from_secs(300),
            ),
            RegionAnswer::StaleSession(err) => return BaselineDecision::RenewSession(err.clone()),
        });
    }
    if facts.regions.len() < target.regions.len() {
        return Next(Call::Converge(facts.regions.len()));
    }
    Report(summarize(outcomes, wanted, target))
}

/// The first region not done speaks for the step, with the soonest time to look again. Pure.
fn summarize(outcomes: Vec<StepOutcome>, wanted: &str, target: &Target) -> StepOutcome {
    let soonest = outcomes.iter().filter_map(StepOutcome::look_again).min();
    match outcomes.into_iter().find(|o| !o.is_done()) {
        Some(StepOutcome::Wait { reason, message, .. }) => {
            StepOutcome::Wait { reason, message, after: soonest.unwrap_or(POLL) }
        }
        Some(StepOutcome::Stalled { reason, message, .. }) => {
            StepOutcome::Stalled { reason, message, retry_after: soonest.unwrap_or(RECHECK_STALLED) }
        }
        Some(done @ StepOutcome::Done { .. }) => done,
        None => StepOutcome::done(
            "BaselineApplied",
            format!("Baseline {wanted:?} revision {} runs in {}", target.admitted, target.regions.join(", ")),
        ),
    }
}

/// The role cannot be assumed: a brand-new account's role takes a while (`WaitingForRole`),
/// but after `--role-patience-seconds` of `BaselineReady` being False it is a person's problem
/// (`RoleNotAssumable`), still tried every five minutes. Pure.
fn role_refused(role: &str, account_id: &str, message: &str, waited: Duration, patience: Duration) -> StepOutcome {
    if waited > patience {
        return StepOutcome::stalled(
            "RoleNotAssumable",
            format!(
                "Role {role} in account {account_id} could not be assumed for {} minutes: {message}; check the \
                 Baseline's roleName, the role's trust policy (it must trust Silo's identity, and allow \
                 sts:TagSession too when Silo runs with --session-tags=true) and the external id; Silo tries again \
                 every 5 minutes",
                waited.as_secs() / 60,
            ),
            Duration::from_secs(300),
        );
    }
    StepOutcome::wait(
        "WaitingForRole",
        format!("Role {role} in account {account_id} cannot be assumed yet (new accounts take a while): {message}"),
        role_retry(waited),
    )
}

impl BaselineStep<'_> {
    /// Periodic verification waits for an idle budget; a rollout waits behind user work; a
    /// person's change goes first.
    fn priority(&self, rolled: bool) -> Priority {
        match self.mode {
            Mode::Verify(Verification::Periodic) => Priority::IfIdle,
            _ if rolled => Priority::Background,
            _ => Priority::User,
        }
    }

    /// The revision this tenant should run and its content; no AWS call.
    fn target(&self, rollout: &RolloutStatus, account_id: &str) -> Result<Target, StepOutcome> {
        let (tenant, ctx) = (self.tenant, self.ctx);
        let wanted = tenant.spec.baseline.as_ref().expect("the step has a baseline");
        let admitted_before = admitted(tenant, &wanted.name);
        let admitted = rollout::target(rollout, &tenant.name_any(), admitted_before.as_deref());
        if admitted_before.is_none() && rollout.revision != baseline_revision_pending(ctx, &wanted.name) {
            // The Baseline changed and its controller has not recorded the new revision yet:
            // a new tenant waits for it rather than start on one about to be superseded.
            return Err(StepOutcome::wait(
                "WaitingForRevision",
                format!("Baseline {:?} changed; waiting for its new revision to be recorded", wanted.name),
                Duration::from_secs(2),
            ));
        }
        let Some(deployed) = revisions::find(&ctx.revisions, &ctx.config.namespace, &wanted.name, &admitted) else {
            return Err(StepOutcome::wait(
                "WaitingForRevision",
                format!("Revision {admitted} of Baseline {:?} is not recorded yet", wanted.name),
                Duration::from_secs(5),
            ));
        };
        let parameters =
            match baseline::resolve_parameters(&deployed, &wanted.parameters, &tenant.name_any(), account_id) {
                Ok(parameters) => parameters,
                Err(UndeclaredParameters(names)) => {
                    return Err(StepOutcome::stalled(
                        "UndeclaredParameter",
                        format!(
                            "The template of Baseline {:?} (revision {admitted}) declares no parameter {}: fix the \
                             Tenant's or the Baseline's parameters",
                            wanted.name,
                            names.join(", ")
                        ),
                        RECHECK_STALLED,
                    ));
                }
            };
        let revision = baseline::tenant_revision(&admitted, &parameters);
        let regions = baseline::regions(&deployed.regions, &ctx.aws.region());
        let rolled_back = rollout::rolled_back(rollout, admitted_before.as_deref(), &admitted);
        Ok(Target { admitted, deployed, parameters, revision, regions, rolled_back })
    }

    /// What the step knows before any call: the spec, the status, the watch caches and the
    /// controller's flags.
    fn observe(&self, account_id: String) -> BaselineFacts {
        let (tenant, ctx) = (self.tenant, self.ctx);
        let wanted = tenant.spec.baseline.as_ref().map(|b| b.name.clone());
        let baseline = wanted.as_ref().and_then(|name| ctx.baselines.get(&ObjectRef::new(name)));
        let rollout = baseline.as_ref().and_then(|b| rollout_of(ctx, b));
        let target = rollout.as_ref().map(|rollout| self.target(rollout, &account_id));
        let applied = match (&wanted, &target) {
            (Some(name), Some(Ok(target))) => self.already_applied(name, &target.revision, &target.regions),
            _ => None,
        };
        BaselineFacts {
            account_id,
            previewing: rollout.as_ref().is_some_and(|rollout| rollout::tenant_wants_preview(rollout, tenant)),
            wanted,
            baseline,
            rollout,
            target,
            applied,
            external_id_namespace: ctx.config.external_id_namespace.clone(),
            role_patience: ctx.config.role_patience,
            external_id: None,
            session: None,
            previewed: false,
            regions: vec![],
        }
    }

    /// Runs the baseline step; the account is placed, so its id is recorded. Observe, decide,
    /// act: makes the calls `decide` asks for, one at a time, until it says how the step ends.
    pub async fn run(&self, progress: &mut Progress, writer: &mut StatusWriter) -> Result<StepOutcome, Error> {
        let mut facts = self.observe(progress.status.account_id.clone().unwrap_or_default());
        loop {
            match decide(&facts) {
                BaselineDecision::Next(call) => self.learn(call, &mut facts, progress, writer).await?,
                BaselineDecision::NoBaseline(outcome) => {
                    progress.status.baseline = None;
                    return Ok(outcome);
                }
                BaselineDecision::Report(outcome) => return Ok(outcome),
                BaselineDecision::RenewSession(err) => {
                    if let Some(Session::Open { key, .. }) = &facts.session {
                        self.ctx.aws.tenants.forget(key).await;
                    }
                    return Err(Error::Aws(AwsError { kind: AwsErrorKind::Transient, ..err }));
                }
            }
        }
    }

    /// Makes one call and records its answer.
    async fn learn(
        &self,
        call: Call,
        facts: &mut BaselineFacts,
        progress: &mut Progress,
        writer: &mut StatusWriter,
    ) -> Result<(), Error> {
        let (tenant, ctx) = (self.tenant, self.ctx);
        let baseline = facts.baseline.clone().expect("decide calls out only once the Baseline is found");
        let Some(Ok(target)) = &facts.target else { unreachable!("decide calls out only once there is a target") };
        let wanted = &baseline.name_any();
        let rolled = admitted(tenant, wanted).is_some_and(|before| before != target.admitted);
        let priority = self.priority(rolled);
        let account_id = &facts.account_id;
        match call {
            Call::ReadExternalId => {
                let reference = baseline.spec.external_id.as_ref().expect("decide reads a named external id");
                facts.external_id = Some(match ctx.external_id(&reference.name, &reference.key).await? {
                    Some(value) => ExternalId::Value(value),
                    None => ExternalId::Missing,
                });
            }
            Call::OpenSession => {
                self.admit(wanted, target, progress, writer).await?;
                let external_id = match &facts.external_id {
                    Some(ExternalId::Value(value)) => Some(value.clone()),
                    _ => None,
                };
                let key = SessionKey {
                    tenant_uid: tenant.uid().unwrap_or_default(),
                    account_id: account_id.clone(),
                    role_name: baseline.spec.role_name.clone(),
                    external_id,
                    session_policy: baseline.spec.session_policy.clone(),
                };
                facts.session = Some(match ctx.aws.tenants.credentials(&key, &tenant.name_any(), priority).await {
                    Ok(credentials) => Session::Open { key, credentials },
                    Err(err) => match session_refusal(&err) {
                        SessionRefusal::RoleRefused => {
                            Session::RoleRefused { message: err.message, not_ready_for: self.not_ready_for() }
                        }
                        SessionRefusal::Other => return Err(err.into()),
                    },
                });
            }
            Call::Preview => {
                let Some(Session::Open { credentials, .. }) = &facts.session else {
                    unreachable!("decide previews once the session is open")
                };
                let rollout = facts.rollout.as_ref().expect("a target comes from a rollout");
                let preview = self.preview(rollout, account_id, credentials, priority).await?;
                if let Some(state) = progress.status.baseline.as_mut() {
                    state.preview = Some(preview);
                }
                facts.previewed = true;
            }
            Call::Converge(index) => {
                let Some(Session::Open { credentials, .. }) = &facts.session else {
                    unreachable!("decide converges once the session is open")
                };
                let spec = stack_spec(&baseline, target, tenant);
                let stacks = ctx.aws.stacks(account_id, credentials.clone(), &target.regions[index], priority);
                let region = Region { stacks: &stacks, spec: &spec, revision: &target.revision, index };
                let answer = match region.converge(progress, writer).await {
                    Ok(outcome) => RegionAnswer::Converged(outcome),
                    Err(Error::Aws(err)) => match region_failure(&err) {
                        RegionFailure::NotEnabled => RegionAnswer::NotEnabled,
                        RegionFailure::StaleSession => RegionAnswer::StaleSession(err),
                        RegionFailure::Other => return Err(Error::Aws(err)),
                    },
                    Err(err) => return Err(err),
                };
                facts.regions.push(answer);
            }
        }
        Ok(())
    }

    /// Records the admission to the target revision before any stack call; a new revision
    /// starts with a clean slate of attempts.
    async fn admit(
        &self,
        wanted: &str,
        target: &Target,
        progress: &mut Progress,
        writer: &mut StatusWriter,
    ) -> Result<(), Error> {
        let previous = progress.status.baseline.take().filter(|b| b.name == wanted);
        let remembered = previous.clone().filter(|b| b.revision == target.revision);
        let mut state = TenantBaselineStatus {
            name: wanted.to_string(),
            admitted_revision: Some(target.admitted.clone()),
            revision: target.revision.clone(),
            stacks: vec![],
            drift: previous.as_ref().and_then(|p| p.drift.clone()),
            // Kept while the admission stands; a new admission records its own rollback, or none.
            rolled_back: match &previous {
                Some(p) if p.admitted_revision.as_ref() == Some(&target.admitted) => p.rolled_back.clone(),
                _ => target.rolled_back.clone(),
            },
            preview: previous.and_then(|p| p.preview),
        };
        for region in &target.regions {
            let known = remembered.as_ref().and_then(|p| p.stacks.iter().find(|s| &s.region == region)).cloned();
            state.stacks.push(StackReport { region: region.clone(), ..known.unwrap_or_default() });
        }
        progress.status.baseline = Some(state);
        if admitted(self.tenant, wanted).as_deref() != Some(target.admitted.as_str()) {
            writer.save_intent(progress, "admission to a Baseline revision").await?;
        }
        Ok(())
    }

    /// How long `BaselineReady` has been False (zero when it is not).
    fn not_ready_for(&self) -> Duration {
        let not_ready_since =
            self.tenant.status.as_ref().and_then(|s| {
                conditions::find(&s.conditions, conditions::BASELINE_READY).filter(|c| c.status == "False")
            });
        not_ready_since
            .and_then(|c| {
                Duration::try_from(k8s_openapi::jiff::Timestamp::now().duration_since(c.last_transition_time.0)).ok()
            })
            .unwrap_or_default()
    }

    /// A preview of the rollout's revision for a canary tenant: a change set per region,
    /// described and deleted, never executed.
    async fn preview(
        &self,
        rollout: &RolloutStatus,
        account_id: &str,
        credentials: &aws_credential_types::Credentials,
        priority: Priority,
    ) -> Result<TenantPreview, Error> {
        let (tenant, ctx) = (self.tenant, self.ctx);
        let wanted = tenant.spec.baseline.as_ref().expect("the step has a baseline");
        let Some(deployed) = revisions::find(&ctx.revisions, &ctx.config.namespace, &wanted.name, &rollout.revision)
        else {
            return Ok(TenantPreview { revision: rollout.revision.clone(), changes: vec![] });
        };
        let parameters = baseline::resolve_parameters(&deployed, &wanted.parameters, &tenant.name_any(), account_id)
            .unwrap_or_default();
        let revision = baseline::tenant_revision(&rollout.revision, &parameters);
        let regions = baseline::regions(&deployed.regions, &ctx.aws.region());
        let target =
            Target { admitted: rollout.revision.clone(), deployed, parameters, revision, regions, rolled_back: None };
        let baseline = ctx.baselines.get(&ObjectRef::new(&wanted.name)).expect("the step found the Baseline");
        let spec = stack_spec(&baseline, &target, tenant);
        let mut changes = vec![];
        for region in &target.regions {
            let stacks = ctx.aws.stacks(account_id, credentials.clone(), region, priority);
            let name = format!("silo-preview-{}", target.revision);
            for change in stacks.preview(&spec, &name).await? {
                changes.push(ResourceChange { region: region.clone(), ..change });
            }
        }
        changes.sort();
        Ok(TenantPreview { revision: rollout.revision.clone(), changes })
    }

    /// While converging, stacks recorded at the desired revision, with `BaselineReady` True,
    /// are trusted until the next verification.
    fn already_applied(&self, name: &str, revision: &str, regions: &[String]) -> Option<StepOutcome> {
        if self.mode != Mode::Converge {
            return None;
        }
        let status = self.tenant.status.as_ref()?;
        let applied = status.baseline.as_ref()?;
        let ready = conditions::find(&status.conditions, conditions::BASELINE_READY)?;
        let current = applied.name == name
            && applied.revision == revision
            && applied.stacks.len() == regions.len()
            && applied.stacks.iter().all(|s| regions.contains(&s.region) && s.revision.as_deref() == Some(revision));
        (current && ready.status == "True").then(|| StepOutcome::recorded_done(&ready.reason, &ready.message))
    }
}

/// The Baseline revision a tenant was admitted to, as its status records it.
fn admitted(tenant: &Tenant, baseline: &str) -> Option<String> {
    tenant.status.as_ref()?.baseline.as_ref().filter(|b| b.name == baseline)?.admitted_revision.clone()
}

/// The revision a Baseline's rollout should be at: its current one, or an empty string
/// when its spec changed since its controller last looked (a new revision is coming).
fn baseline_revision_pending(ctx: &Context, name: &str) -> String {
    let Some(baseline) = ctx.baselines.get(&ObjectRef::new(name)) else { return String::new() };
    let status = baseline.status.clone().unwrap_or_default();
    if status.observed_generation != baseline.metadata.generation {
        return String::new();
    }
    rollout_of(ctx, &baseline).map(|r| r.revision).unwrap_or_default()
}

/// The rollout of a Baseline: as this process last decided it, else as its status records it.
fn rollout_of(ctx: &Context, baseline: &Baseline) -> Option<RolloutStatus> {
    ctx.rollouts.get(&baseline.name_any()).or_else(|| baseline.status.as_ref()?.rollout.clone())
}

/// What the stacks of a target run, in CloudFormation's terms.
fn stack_spec<'t>(baseline: &Baseline, target: &'t Target, tenant: &Tenant) -> StackSpec<'t> {
    StackSpec {
        name: &target.deployed.stack_name,
        template_body: target.deployed.template.as_deref(),
        template_url: target.deployed.template_url.as_deref(),
        parameters: &target.parameters,
        capabilities: target.deployed.capabilities.iter().map(|c| c.as_str()).collect(),
        tags: BTreeMap::from([
            (REVISION_TAG.to_string(), target.revision.clone()),
            ("silo.dev/tenant".to_string(), tenant.name_any()),
            ("silo.dev/baseline".to_string(), baseline.name_any()),
        ]),
        termination_protection: target.deployed.termination_protection,
    }
}

/// Whether `rollout` (of the tenant's Baseline `baseline`) sends the tenant to another
/// revision than the one it was admitted to, or wants its preview. Pure.
pub fn rollout_moves(tenant: &Tenant, baseline: &str, rollout: &RolloutStatus) -> bool {
    let admitted_before = admitted(tenant, baseline);
    let target = rollout::target(rollout, &tenant.name_any(), admitted_before.as_deref());
    admitted_before.as_deref() != Some(target.as_str()) || rollout::tenant_wants_preview(rollout, tenant)
}

/// Whether the tenant's baseline has work to do that no spec change of the Tenant announced:
/// its Baseline's rollout admits it to another revision, or wants its preview. No AWS call.
pub fn baseline_changed(tenant: &Tenant, ctx: &Context) -> bool {
    let (Some(wanted), Some(status)) = (&tenant.spec.baseline, &tenant.status) else { return false };
    let Some(baseline) = ctx.baselines.get(&ObjectRef::new(&wanted.name)) else { return false };
    let Some(rollout) = rollout_of(ctx, &baseline) else { return false };
    if rollout_moves(tenant, &wanted.name, &rollout) {
        return true;
    }
    let target = rollout::target(&rollout, &tenant.name_any(), admitted(tenant, &wanted.name).as_deref());
    let Some(deployed) = revisions::find(&ctx.revisions, &ctx.config.namespace, &wanted.name, &target) else {
        return false;
    };
    let account_id = status.account_id.clone().unwrap_or_default();
    let Ok(parameters) = baseline::resolve_parameters(&deployed, &wanted.parameters, &tenant.name_any(), &account_id)
    else {
        return true;
    };
    let revision = baseline::tenant_revision(&target, &parameters);
    status.baseline.as_ref().is_none_or(|applied| applied.name != wanted.name || applied.revision != revision)
}

/// One region's stack of the baseline step.
struct Region<'a> {
    stacks: &'a Stacks,
    spec: &'a StackSpec<'a>,
    revision: &'a str,
    index: usize,
}

impl Region<'_> {
    fn name(&self, progress: &Progress) -> String {
        baseline_status(progress).stacks[self.index].region.clone()
    }

    fn report<'p>(&self, progress: &'p mut Progress) -> &'p mut StackReport {
        &mut progress.status.baseline.as_mut().expect("the baseline status is set before converging").stacks[self.index]
    }

    /// Observe the stack, decide, act, and record what happened.
    async fn converge(&self, progress: &mut Progress, writer: &mut StatusWriter) -> Result<StepOutcome, Error> {
        let (stacks, spec, revision) = (self.stacks, self.spec, self.revision);
        let stack = stacks.describe(spec.name).await?;
        let region = self.name(progress);
        let observed = stack.as_ref().map(observed);
        if let (Some(stack), Some(observed)) = (&stack, &observed) {
            let report = self.report(progress);
            report.stack_id = Some(stack.id.clone());
            report.stack_status = Some(stack.status.clone());
            report.revision = observed.revision.clone();
        }
        let report = self.report(progress);
        let memory = Memory { create_attempts: report.create_attempts, attempted: report.attempted_revision.clone() };
        let limits = Limits { max_create_attempts: MAX_CREATE_ATTEMPTS, in_progress_timeout: IN_PROGRESS_TIMEOUT };
        let in_region = |what: String| format!("{what} in {region}");

        Ok(match next_action(observed.as_ref(), revision, &memory, limits) {
            StackAction::Ready => {
                let stack = stack.as_ref().expect("Ready needs a stack");
                self.report(progress).outputs = stack.outputs.clone();
                StepOutcome::done("StackReady", in_region(format!("Stack {} is at revision {revision}", spec.name)))
            }
            StackAction::Create => {
                self.report(progress).attempted_revision = Some(revision.to_string());
                writer.save_intent(progress, "CreateStack").await?;
                let token = request_token("create", revision, i64::from(memory.create_attempts));
                match stacks.create(spec, &token).await {
                    Ok(id) => {
                        let report = self.report(progress);
                        report.stack_id = Some(id);
                        report.stack_status = Some("CREATE_IN_PROGRESS".into());
                        StepOutcome::wait("CreatingStack", in_region(format!("Creating stack {}", spec.name)), POLL)
                    }
                    Err(err) if stack_refusal(&err) == StackRefusal::Rejected => refused(&err, &in_region),
                    Err(err) => return Err(err.into()),
                }
            }
            StackAction::Update => {
                self.report(progress).attempted_revision = Some(revision.to_string());
                writer.save_intent(progress, "UpdateStack").await?;
                let changed_at = stack.as_ref().map_or(0, |s| s.changed_at);
                match stacks.update(spec, &request_token("update", revision, changed_at)).await {
                    Ok(Update::Started) => {
                        let message = in_region(format!("Updating stack {} to revision {revision}", spec.name));
                        StepOutcome::wait("UpdatingStack", message, POLL)
                    }
                    Ok(Update::NothingToDo) => {
                        StepOutcome::wait("UpdatingStack", in_region("The stack already matches".into()), POLL)
                    }
                    Err(err) if stack_refusal(&err) == StackRefusal::Rejected => refused(&err, &in_region),
                    Err(err) => return Err(err.into()),
                }
            }
            StackAction::Wait => {
                let status = stack.as_ref().map(|s| s.status.clone()).unwrap_or_default();
                let after = stack.as_ref().map_or(POLL, |s| poll_after(s.since));
                StepOutcome::wait("StackInProgress", in_region(format!("Stack {} is {status}", spec.name)), after)
            }
            StackAction::DeleteAndRecreate => {
                let stack = stack.as_ref().expect("a failed stack exists");
                let why = failure_of(stacks, stack).await?;
                // Intent first: the attempt counts even if the controller dies during the delete.
                self.report(progress).create_attempts += 1;
                writer.save_intent(progress, "DeleteStack").await?;
                stacks.delete(stack, &request_token("delete", revision, stack.changed_at)).await?;
                let message = format!(
                    "Stack {} failed to create ({why}); deleting it to create it again (attempt {} of \
                     {MAX_CREATE_ATTEMPTS})",
                    spec.name,
                    memory.create_attempts + 1
                );
                StepOutcome::wait("RecreatingStack", in_region(message), POLL)
            }
            StackAction::ContinueRollback => {
                let changed_at = stack.as_ref().map_or(0, |s| s.changed_at);
                let token = request_token("continue-rollback", revision, changed_at);
                match stacks.continue_rollback(spec.name, &token).await {
                    Err(err) if stack_refusal(&err) == StackRefusal::Rejected => return Ok(refused(&err, &in_region)),
                    other => other?,
                }
                let message = in_region(format!("Continuing the rollback of stack {}", spec.name));
                StepOutcome::wait("ContinuingRollback", message, POLL)
            }
            StackAction::Failed { reason } => {
                let stack = stack.as_ref().expect("a failed stack exists");
                let why = failure_of(stacks, stack).await?;
                let message = in_region(format!(
                    "Stack {} is {}: {why}; fix the Baseline (or the Tenant's parameters) and Silo tries again",
                    spec.name, stack.status
                ));
                StepOutcome::stalled(reason, message, RECHECK_STALLED)
            }
        })
    }
}

fn baseline_status(progress: &Progress) -> &TenantBaselineStatus {
    progress.status.baseline.as_ref().expect("the baseline status is set before converging")
}

/// What the state machine needs of a stack: its status and the revision its tag names.
pub fn observed(stack: &Stack) -> Observed {
    Observed {
        status: stack.status.clone(),
        reason: stack.reason.clone(),
        revision: stack.tags.get(REVISION_TAG).cloned(),
        since: stack.since,
    }
}

/// The reason a stack failed, in words: the first failed resource, else the stack's reason.
async fn failure_of(stacks: &Stacks, stack: &Stack) -> Result<String, Error> {
    Ok(stacks
        .first_failure(&stack.id)
        .await?
        .or_else(|| stack.reason.clone())
        .unwrap_or_else(|| "no reason given".into()))
}

/// CloudFormation refused the template or its parameters: a person must fix the Baseline.
fn refused(err: &AwsError, in_region: &dyn Fn(String) -> String) -> StepOutcome {
    StepOutcome::stalled(
        "StackRequestRejected",
        in_region(format!("CloudFormation refused the stack: {}; fix the Baseline", err.message)),
        RECHECK_STALLED,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BaselineSpec, SecretKeyRef};

    const ACCOUNT: &str = "111111111111";

    fn baseline(external_id: bool) -> Arc<Baseline> {
        let external_id = external_id.then(|| SecretKeyRef { name: "ids".into(), key: "acme".into() });
        Arc::new(Baseline::new(
            "web",
            BaselineSpec { role_name: "SiloBootstrap".into(), external_id, ..Default::default() },
        ))
    }

    /// A tenant whose Baseline `web` targets revision r2 in two regions; no call made yet.
    fn facts() -> BaselineFacts {
        BaselineFacts {
            account_id: ACCOUNT.into(),
            wanted: Some("web".into()),
            baseline: Some(baseline(false)),
            rollout: Some(RolloutStatus { revision: "r2".into(), ..Default::default() }),
            target: Some(Ok(Target {
                admitted: "r2".into(),
                revision: "r2-acme".into(),
                regions: vec!["eu-west-1".into(), "us-east-1".into()],
                ..Default::default()
            })),
            applied: None,
            previewing: false,
            external_id_namespace: "silo-system".into(),
            role_patience: Duration::from_secs(900),
            external_id: None,
            session: None,
            previewed: false,
            regions: vec![],
        }
    }

    fn open() -> Option<Session> {
        let key = SessionKey {
            tenant_uid: "uid-1".into(),
            account_id: ACCOUNT.into(),
            role_name: "SiloBootstrap".into(),
            external_id: None,
            session_policy: None,
        };
        Some(Session::Open { key, credentials: Credentials::new("id", "secret", None, None, "test") })
    }

    fn refused(minutes: u64) -> Option<Session> {
        Some(Session::RoleRefused {
            message: "not authorized".into(),
            not_ready_for: Duration::from_secs(minutes * 60),
        })
    }

    fn converged(outcome: StepOutcome) -> RegionAnswer {
        RegionAnswer::Converged(outcome)
    }

    fn ready() -> RegionAnswer {
        converged(StepOutcome::done("StackReady", "Stack silo-baseline is at revision r2-acme"))
    }

    /// A decision in a few words: the call, or the outcome's kind, reason and time to look again.
    fn summary(decision: &BaselineDecision) -> String {
        let outcome = |o: &StepOutcome| {
            let kind = match o {
                StepOutcome::Done { .. } => "done",
                StepOutcome::Wait { .. } => "wait",
                StepOutcome::Stalled { .. } => "stalled",
            };
            let after = o.look_again().map(|d| format!(" {}s", d.as_secs())).unwrap_or_default();
            format!("{kind} {}{after}", o.reason())
        };
        match decision {
            BaselineDecision::Next(call) => format!("call {call:?}"),
            BaselineDecision::NoBaseline(o) => format!("forget, {}", outcome(o)),
            BaselineDecision::Report(o) => outcome(o),
            BaselineDecision::RenewSession(err) => format!("renew the session ({})", err.code.as_deref().unwrap_or("")),
        }
    }

    #[test]
    fn each_baseline_step_is_decided_from_the_facts_in_order() {
        let with = |change: &dyn Fn(&mut BaselineFacts)| {
            let mut f = facts();
            change(&mut f);
            f
        };
        let stale = AwsError {
            operation: "DescribeStacks",
            kind: AwsErrorKind::Terminal,
            code: Some("ExpiredToken".into()),
            message: String::new(),
        };
        let recorded = StepOutcome::recorded_done("BaselineApplied", "Baseline \"web\" revision r2 runs in eu-west-1");
        let table: Vec<(&str, BaselineFacts, &str)> = vec![
            ("no baseline requested", with(&|f| f.wanted = None), "forget, done NoBaseline"),
            ("the Baseline does not exist", with(&|f| f.baseline = None), "stalled BaselineNotFound 600s"),
            ("no revision recorded yet", with(&|f| f.target = None), "wait WaitingForRevision 5s"),
            (
                "no target: its reason speaks",
                with(&|f| {
                    f.target = Some(Err(StepOutcome::stalled("UndeclaredParameter", "no Size", RECHECK_STALLED)))
                }),
                "stalled UndeclaredParameter 600s",
            ),
            ("recorded at the target: trusted", with(&|f| f.applied = Some(recorded.clone())), "done BaselineApplied"),
            (
                "recorded, but a preview is owed",
                with(&|f| (f.applied, f.previewing) = (Some(recorded.clone()), true)),
                "call OpenSession",
            ),
            ("an external id is named: read it", with(&|f| f.baseline = Some(baseline(true))), "call ReadExternalId"),
            (
                "its Secret has no such key",
                with(&|f| (f.baseline, f.external_id) = (Some(baseline(true)), Some(ExternalId::Missing))),
                "stalled ExternalIdNotFound 600s",
            ),
            (
                "the external id is read: assume the role",
                with(&|f| (f.baseline, f.external_id) = (Some(baseline(true)), Some(ExternalId::Value("x".into())))),
                "call OpenSession",
            ),
            ("no external id named: assume the role", facts(), "call OpenSession"),
            ("a new account's role refuses Silo", with(&|f| f.session = refused(3)), "wait WaitingForRole 10s"),
            ("for longer than the patience", with(&|f| f.session = refused(16)), "stalled RoleNotAssumable 300s"),
            ("a canary owes its preview", with(&|f| (f.session, f.previewing) = (open(), true)), "call Preview"),
            (
                "previewed: the first region",
                with(&|f| (f.session, f.previewing, f.previewed) = (open(), true, true)),
                "call Converge(0)",
            ),
            ("the first region", with(&|f| f.session = open()), "call Converge(0)"),
            ("then the next", with(&|f| (f.session, f.regions) = (open(), vec![ready()])), "call Converge(1)"),
            (
                "a region not enabled does not stop the others",
                with(&|f| (f.session, f.regions) = (open(), vec![RegionAnswer::NotEnabled])),
                "call Converge(1)",
            ),
            (
                "a stale session is renewed at once",
                with(&|f| (f.session, f.regions) = (open(), vec![RegionAnswer::StaleSession(stale.clone())])),
                "renew the session (ExpiredToken)",
            ),
            (
                "every region ready",
                with(&|f| (f.session, f.regions) = (open(), vec![ready(), ready()])),
                "done BaselineApplied",
            ),
            (
                "a region not enabled speaks for the step",
                with(&|f| (f.session, f.regions) = (open(), vec![ready(), RegionAnswer::NotEnabled])),
                "wait RegionNotEnabled 300s",
            ),
            (
                "the first region not done speaks, with the soonest time to look again",
                with(&|f| {
                    let stalled = StepOutcome::stalled("StackRollbackComplete", "fix it", RECHECK_STALLED);
                    let creating = StepOutcome::wait("CreatingStack", "Creating", Duration::from_secs(5));
                    (f.session, f.regions) = (open(), vec![converged(stalled), converged(creating)]);
                }),
                "stalled StackRollbackComplete 5s",
            ),
        ];
        for (case, facts, expected) in table {
            assert_eq!(summary(&decide(&facts)), expected, "{case}");
        }
    }

    #[test]
    fn a_role_is_tried_again_soon_at_first_and_every_10_seconds_later() {
        assert_eq!(role_retry(Duration::ZERO), Duration::from_secs(2), "a brand-new account");
        assert_eq!(role_retry(Duration::from_secs(20)), Duration::from_secs(5));
        assert_eq!(role_retry(Duration::from_secs(600)), Duration::from_secs(10), "AWS's few minutes");
    }

    #[test]
    fn messages_name_the_region_the_role_and_the_secret() {
        let not_enabled = BaselineFacts { session: open(), regions: vec![RegionAnswer::NotEnabled], ..facts() };
        let with_ready = BaselineFacts { regions: vec![RegionAnswer::NotEnabled, ready()], ..not_enabled };
        let BaselineDecision::Report(outcome) = decide(&with_ready) else { panic!("every region answered") };
        assert_eq!(outcome.message(), "Region eu-west-1 is not enabled in account 111111111111; retrying");

        let applied = BaselineFacts { session: open(), regions: vec![ready(), ready()], ..facts() };
        let BaselineDecision::Report(outcome) = decide(&applied) else { panic!("every region answered") };
        assert_eq!(outcome.message(), "Baseline \"web\" revision r2 runs in eu-west-1, us-east-1");

        let BaselineDecision::Report(outcome) = decide(&BaselineFacts { session: refused(20), ..facts() }) else {
            panic!("a refused role is reported")
        };
        assert!(
            outcome.message().starts_with(
                "Role SiloBootstrap in account 111111111111 could not be assumed for 20 minutes: not authorized;"
            ),
            "{}",
            outcome.message()
        );

        let missing =
            BaselineFacts { baseline: Some(baseline(true)), external_id: Some(ExternalId::Missing), ..facts() };
        let BaselineDecision::Report(outcome) = decide(&missing) else { panic!("a missing Secret is reported") };
        assert_eq!(
            outcome.message(),
            "Secret silo-system/ids has no key \"acme\" with the external id of Baseline \"web\""
        );
    }
}
