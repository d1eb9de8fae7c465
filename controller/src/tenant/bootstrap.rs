//! Step 4: the baseline. A role is assumed in the tenant's account and the Baseline's stack
//! is run there, one per region, and kept at the current revision.
//!
//! The stages: dereference (the Baseline from the watch cache, the external-id Secret) ->
//! validate (parameters the template declares) -> per region, observe the stack and carry
//! out the pure [`next_action`]. Nothing is applied when the Baseline is missing or a
//! parameter is not declared by the template. While converging, a tenant whose stacks are
//! recorded at the desired revision is not looked at again until its next verification.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt, runtime::reflector::ObjectRef};

use super::{
    Context, Error,
    schedule::{Mode, Verification},
    status::{Progress, StatusWriter},
};
use crate::{
    api::{Baseline, ResourceChange, RolloutStatus, StackReport, Tenant, TenantBaselineStatus, TenantPreview},
    aws::{
        AwsError, AwsErrorKind, Priority, SessionKey,
        cloudformation::{Stack, StackSpec, Stacks, Update},
        tenant_access::is_access_denied,
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
const RECHECK_STALLED: Duration = Duration::from_secs(600);
/// How soon a role that cannot be assumed yet is tried again.
const ROLE_RETRY: Duration = Duration::from_secs(10);

/// How often a failed create is deleted and created again before the tenant is Stalled.
pub const MAX_CREATE_ATTEMPTS: u32 = 2;
const IN_PROGRESS_TIMEOUT: Duration = Duration::from_secs(3600);

/// Everything the baseline step works with in one reconcile.
pub struct BaselineStep<'a> {
    pub tenant: &'a Tenant,
    pub mode: Mode,
    pub ctx: &'a Context,
}

/// What the baseline step works towards in one reconcile: the revision the tenant runs (the
/// one the rollout admits it to) and what that revision deploys for it.
struct Target {
    /// The Baseline revision.
    admitted: String,
    deployed: Deployed,
    parameters: BTreeMap<String, String>,
    /// What the stacks must run: the revision and this tenant's parameters.
    revision: String,
    regions: Vec<String>,
}

/// Why the step has no target yet.
enum NoTarget {
    Outcome(StepOutcome),
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
    fn target(&self, rollout: &RolloutStatus, account_id: &str) -> Result<Target, NoTarget> {
        let (tenant, ctx) = (self.tenant, self.ctx);
        let wanted = tenant.spec.baseline.as_ref().expect("the step has a baseline");
        let admitted_before = admitted(tenant, &wanted.name);
        let admitted = rollout::target(rollout, &tenant.name_any(), admitted_before.as_deref());
        if admitted_before.is_none() && rollout.revision != baseline_revision_pending(ctx, &wanted.name) {
            // The Baseline changed and its controller has not recorded the new revision yet:
            // a new tenant waits for it rather than start on one about to be superseded.
            return Err(NoTarget::Outcome(StepOutcome::wait(
                "WaitingForRevision",
                format!("Baseline {:?} changed; waiting for its new revision to be recorded", wanted.name),
                Duration::from_secs(2),
            )));
        }
        let Some(deployed) = revisions::find(&ctx.revisions, &ctx.settings.namespace, &wanted.name, &admitted) else {
            return Err(NoTarget::Outcome(StepOutcome::wait(
                "WaitingForRevision",
                format!("Revision {admitted} of Baseline {:?} is not recorded yet", wanted.name),
                Duration::from_secs(5),
            )));
        };
        let parameters =
            match baseline::resolve_parameters(&deployed, &wanted.parameters, &tenant.name_any(), account_id) {
                Ok(parameters) => parameters,
                Err(UndeclaredParameters(names)) => {
                    return Err(NoTarget::Outcome(StepOutcome::stalled(
                        "UndeclaredParameter",
                        format!(
                            "The template of Baseline {:?} (revision {admitted}) declares no parameter {}: fix the \
                             Tenant's or the Baseline's parameters",
                            wanted.name,
                            names.join(", ")
                        ),
                        RECHECK_STALLED,
                    )));
                }
            };
        let revision = baseline::tenant_revision(&admitted, &parameters);
        let regions = baseline::regions(&deployed, &ctx.aws.region());
        Ok(Target { admitted, deployed, parameters, revision, regions })
    }

    /// Runs the baseline step; the account is placed, so its id is recorded.
    pub async fn run(&self, progress: &mut Progress, writer: &mut StatusWriter) -> Result<StepOutcome, Error> {
        let (tenant, ctx) = (self.tenant, self.ctx);
        let Some(wanted) = tenant.spec.baseline.clone() else {
            progress.status.baseline = None;
            return Ok(StepOutcome::done("NoBaseline", "No baseline requested"));
        };
        let account_id = progress.status.account_id.clone().unwrap_or_default();

        // Dereference and validate: nothing is applied unless everything is in order.
        let Some(baseline) = ctx.baselines.get(&ObjectRef::new(&wanted.name)) else {
            return Ok(StepOutcome::stalled(
                "BaselineNotFound",
                format!("Baseline {:?} does not exist: create it or fix spec.baseline.name", wanted.name),
                RECHECK_STALLED,
            ));
        };
        let Some(rollout) = rollout_of(ctx, &baseline) else {
            return Ok(StepOutcome::wait(
                "WaitingForRevision",
                format!("Baseline {:?} has no revision recorded yet", wanted.name),
                Duration::from_secs(5),
            ));
        };
        let target = match self.target(&rollout, &account_id) {
            Ok(target) => target,
            Err(NoTarget::Outcome(outcome)) => return Ok(outcome),
        };
        let admitted_before = admitted(tenant, &wanted.name);
        let rolled = admitted_before.as_ref().is_some_and(|a| a != &target.admitted);
        let previewing = wants_preview(tenant, &rollout);
        if !previewing && let Some(done) = self.already_applied(&wanted.name, &target.revision, &target.regions) {
            return Ok(done);
        }
        let external_id = match &baseline.spec.external_id {
            None => None,
            Some(reference) => match read_secret(ctx, &reference.name, &reference.key).await? {
                Some(value) => Some(value),
                None => {
                    return Ok(StepOutcome::stalled(
                        "ExternalIdNotFound",
                        format!(
                            "Secret {}/{} has no key {:?} with the external id of Baseline {:?}",
                            ctx.settings.external_id_namespace, reference.name, reference.key, wanted.name
                        ),
                        RECHECK_STALLED,
                    ));
                }
            },
        };

        // The admission is recorded before any stack call, and a new revision starts with a
        // clean slate of attempts.
        let previous = progress.status.baseline.take().filter(|b| b.name == wanted.name);
        let remembered = previous.clone().filter(|b| b.revision == target.revision);
        let mut state = TenantBaselineStatus {
            name: wanted.name.clone(),
            admitted_revision: Some(target.admitted.clone()),
            revision: target.revision.clone(),
            stacks: vec![],
            preview: previous.and_then(|p| p.preview),
        };
        for region in &target.regions {
            let known = remembered.as_ref().and_then(|p| p.stacks.iter().find(|s| &s.region == region)).cloned();
            state.stacks.push(StackReport { region: region.clone(), ..known.unwrap_or_default() });
        }
        progress.status.baseline = Some(state);
        if admitted_before.as_deref() != Some(target.admitted.as_str()) {
            writer.save_intent(progress, "admission to a Baseline revision").await?;
        }

        let key = SessionKey {
            tenant_uid: tenant.uid().unwrap_or_default(),
            account_id: account_id.clone(),
            role_name: baseline.spec.role_name.clone(),
            external_id,
            session_policy: baseline.spec.session_policy.clone(),
        };
        let priority = self.priority(rolled);
        let credentials = match ctx.aws.tenants.credentials(&key, &tenant.name_any(), priority).await {
            Ok(credentials) => credentials,
            Err(err) if is_access_denied(&err) => {
                return Ok(self.role_refused(&baseline.spec.role_name, &account_id, &err));
            }
            Err(err) => return Err(err.into()),
        };
        if previewing {
            let preview = self.preview(&rollout, &account_id, &credentials, priority).await?;
            if let Some(state) = progress.status.baseline.as_mut() {
                state.preview = Some(preview);
            }
        }

        let spec = stack_spec(&baseline, &target, tenant);
        let mut outcomes = vec![];
        for (index, region) in target.regions.iter().enumerate() {
            let stacks = ctx.aws.stacks(&account_id, credentials.clone(), region, priority);
            let region = Region { stacks: &stacks, spec: &spec, revision: &target.revision, index };
            match region.converge(progress, writer).await {
                Ok(outcome) => outcomes.push(outcome),
                Err(Error::Aws(err)) if err.has_code("OptInRequired") => {
                    outcomes.push(StepOutcome::wait(
                        "RegionNotEnabled",
                        format!("Region {} is not enabled in account {account_id}; retrying", region.name(progress)),
                        Duration::from_secs(300),
                    ));
                }
                Err(Error::Aws(err)) if is_access_denied(&err) || err.has_code("InvalidClientTokenId") => {
                    // The session went stale (or the role changed): make a new one and retry soon.
                    ctx.aws.tenants.forget(&key).await;
                    return Err(Error::Aws(AwsError { kind: AwsErrorKind::Transient, ..err }));
                }
                Err(err) => return Err(err),
            }
        }

        // The first region not done speaks for the step, with the soonest time to look again.
        let soonest = outcomes.iter().filter_map(StepOutcome::look_again).min();
        Ok(match outcomes.into_iter().find(|o| !o.is_done()) {
            Some(StepOutcome::Wait { reason, message, .. }) => {
                StepOutcome::Wait { reason, message, after: soonest.unwrap_or(POLL) }
            }
            Some(StepOutcome::Stalled { reason, message, .. }) => {
                StepOutcome::Stalled { reason, message, retry_after: soonest.unwrap_or(RECHECK_STALLED) }
            }
            Some(done @ StepOutcome::Done { .. }) => done,
            None => StepOutcome::done(
                "BaselineApplied",
                format!(
                    "Baseline {:?} revision {} runs in {}",
                    wanted.name,
                    target.admitted,
                    target.regions.join(", ")
                ),
            ),
        })
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
        let Some(deployed) = revisions::find(&ctx.revisions, &ctx.settings.namespace, &wanted.name, &rollout.revision)
        else {
            return Ok(TenantPreview { revision: rollout.revision.clone(), changes: vec![] });
        };
        let parameters = baseline::resolve_parameters(&deployed, &wanted.parameters, &tenant.name_any(), account_id)
            .unwrap_or_default();
        let revision = baseline::tenant_revision(&rollout.revision, &parameters);
        let regions = baseline::regions(&deployed, &ctx.aws.region());
        let target = Target { admitted: rollout.revision.clone(), deployed, parameters, revision, regions };
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

    /// The role cannot be assumed: a brand-new account's role takes a while (`WaitingForRole`),
    /// but after `--role-patience-seconds` of `BaselineReady` being False it is a person's problem
    /// (`RoleNotAssumable`), still tried every five minutes.
    fn role_refused(&self, role: &str, account_id: &str, err: &AwsError) -> StepOutcome {
        let not_ready_since =
            self.tenant.status.as_ref().and_then(|s| {
                conditions::find(&s.conditions, conditions::BASELINE_READY).filter(|c| c.status == "False")
            });
        let waited = not_ready_since
            .and_then(|c| {
                Duration::try_from(k8s_openapi::jiff::Timestamp::now().duration_since(c.last_transition_time.0)).ok()
            })
            .unwrap_or_default();
        if waited > self.ctx.settings.role_patience {
            return StepOutcome::stalled(
                "RoleNotAssumable",
                format!(
                    "Role {role} in account {account_id} could not be assumed for {} minutes: {}; check the Baseline's \
                     roleName, the role's trust policy (it must trust Silo's identity, and allow sts:TagSession unless \
                     Silo runs with --session-tags=false) and the external id; Silo tries again every 5 minutes",
                    waited.as_secs() / 60,
                    err.message
                ),
                Duration::from_secs(300),
            );
        }
        StepOutcome::wait(
            "WaitingForRole",
            format!(
                "Role {role} in account {account_id} cannot be assumed yet (new accounts take a while): {}",
                err.message
            ),
            ROLE_RETRY,
        )
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

/// Whether this tenant is a canary of a rollout in preview that has not shown its changes yet.
pub fn wants_preview(tenant: &Tenant, rollout: &RolloutStatus) -> bool {
    let previewed =
        tenant.status.as_ref().and_then(|s| s.baseline.as_ref()?.preview.as_ref()).map(|p| p.revision.as_str());
    rollout::wants_preview(rollout, &tenant.name_any(), previewed)
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

/// Whether the tenant's baseline has work to do that no spec change of the Tenant announced:
/// its Baseline's rollout admits it to another revision, or wants its preview. No AWS call.
pub fn baseline_changed(tenant: &Tenant, ctx: &Context) -> bool {
    let (Some(wanted), Some(status)) = (&tenant.spec.baseline, &tenant.status) else { return false };
    let Some(baseline) = ctx.baselines.get(&ObjectRef::new(&wanted.name)) else { return false };
    let Some(rollout) = rollout_of(ctx, &baseline) else { return false };
    let admitted_before = admitted(tenant, &wanted.name);
    let target = rollout::target(&rollout, &tenant.name_any(), admitted_before.as_deref());
    if admitted_before.as_deref() != Some(target.as_str()) || wants_preview(tenant, &rollout) {
        return true;
    }
    let Some(deployed) = revisions::find(&ctx.revisions, &ctx.settings.namespace, &wanted.name, &target) else {
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
                    Err(err) if err.kind == AwsErrorKind::Terminal => refused(&err, &in_region),
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
                    Err(err) if err.kind == AwsErrorKind::Terminal => refused(&err, &in_region),
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
                    Err(err) if err.kind == AwsErrorKind::Terminal => return Ok(refused(&err, &in_region)),
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
fn observed(stack: &Stack) -> Observed {
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

async fn read_secret(ctx: &Context, name: &str, key: &str) -> Result<Option<String>, Error> {
    let secret =
        Api::<Secret>::namespaced(ctx.client.clone(), &ctx.settings.external_id_namespace).get_opt(name).await?;
    Ok(secret
        .and_then(|s| s.data)
        .and_then(|data| data.get(key).cloned())
        .and_then(|bytes| String::from_utf8(bytes.0).ok()))
}

/// Deletes the tenant's baseline stacks in every region, before its account is closed.
/// Returns `None` once none is left, or what is going on while they are being deleted.
pub async fn delete_stacks(tenant: &Tenant, ctx: &Context) -> Result<Option<StepOutcome>, Error> {
    let Some(applied) = tenant.status.as_ref().and_then(|s| s.baseline.clone()) else { return Ok(None) };
    let Some(account_id) = tenant.status.as_ref().and_then(|s| s.account_id.clone()) else { return Ok(None) };
    let baseline = ctx.baselines.get(&ObjectRef::new(&applied.name));
    let (role_name, session_policy, external_id, stack_name) = match &baseline {
        Some(b) => {
            let external_id = match &b.spec.external_id {
                Some(r) => read_secret(ctx, &r.name, &r.key).await?,
                None => None,
            };
            (b.spec.role_name.clone(), b.spec.session_policy.clone(), external_id, b.spec.stack_name.clone())
        }
        None => ("OrganizationAccountAccessRole".to_string(), None, None, "silo-baseline".to_string()),
    };
    let key = SessionKey {
        tenant_uid: tenant.uid().unwrap_or_default(),
        account_id: account_id.clone(),
        role_name,
        external_id,
        session_policy,
    };
    let credentials = match ctx.aws.tenants.credentials(&key, &tenant.name_any(), Priority::User).await {
        Ok(credentials) => credentials,
        Err(err) if is_access_denied(&err) => {
            return Ok(Some(StepOutcome::stalled(
                "BaselineDeletionBlocked",
                format!(
                    "Cannot assume {} in account {account_id} to delete the baseline stacks: {}",
                    key.role_name, err.message
                ),
                RECHECK_STALLED,
            )));
        }
        Err(err) => return Err(err.into()),
    };
    let mut remaining = vec![];
    for entry in &applied.stacks {
        let stacks = ctx.aws.stacks(&account_id, credentials.clone(), &entry.region, Priority::User);
        let name = entry.stack_id.clone().unwrap_or_else(|| stack_name.clone());
        let Some(stack) = stacks.describe(&name).await? else { continue };
        match stack.status.as_str() {
            "DELETE_COMPLETE" => continue,
            "DELETE_IN_PROGRESS" => {}
            _ => stacks.delete(&stack, &request_token("delete", &applied.revision, stack.changed_at)).await?,
        }
        remaining.push(entry.region.clone());
    }
    if remaining.is_empty() {
        return Ok(None);
    }
    Ok(Some(StepOutcome::wait(
        "DeletingBaseline",
        format!("Deleting the baseline stacks in {} before the account is closed", remaining.join(", ")),
        POLL,
    )))
}
