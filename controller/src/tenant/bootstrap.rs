//! Step 4: the baseline. A role is assumed in the tenant's account and the Baseline's stack
//! is run there, one per region, and kept at the current revision.
//!
//! The stages: dereference (the Baseline, the external-id Secret) -> validate (parameters
//! the template declares) -> per region, observe the stack and carry out the pure
//! [`next_action`]. Nothing is applied when the Baseline is missing or a parameter is not
//! declared by the template.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use super::{Context, Error, status::Report};
use crate::{
    api::{Baseline, StackReport, Tenant, TenantBaselineStatus},
    aws::{
        AwsError, SessionKey,
        cloudformation::{Stack, StackSpec, Stacks, Update},
        tenant_access::is_access_denied,
    },
    baseline::{
        self, UndeclaredParameters,
        stack::{Limits, Memory, StackAction, next_action, request_token},
    },
    conditions::StepOutcome,
};

/// The tag that records which revision a stack runs.
pub const REVISION_TAG: &str = "silo.dev/revision";
const POLL: Duration = Duration::from_secs(5);
const RECHECK_STALLED: Duration = Duration::from_secs(600);
/// How often a failed create is deleted and created again before the tenant is Stalled.
pub const MAX_CREATE_ATTEMPTS: u32 = 2;
const IN_PROGRESS_TIMEOUT: Duration = Duration::from_secs(3600);

/// Runs the baseline step; returns when to come back if it is not done.
pub async fn run(tenant: &Tenant, report: &mut Report<'_>, ctx: &Context) -> Result<Duration, Error> {
    let Some(wanted) = tenant.spec.baseline.clone() else {
        report.status.baseline = None;
        report.baseline = Some(StepOutcome::done("NoBaseline", "No baseline requested"));
        return Ok(Duration::MAX);
    };
    let account_id = report.status.account_id.clone().unwrap_or_default();

    // Dereference and validate: nothing is applied unless everything is in order.
    let Some(baseline) = Api::<Baseline>::all(ctx.client.clone()).get_opt(&wanted.name).await? else {
        report.baseline = Some(StepOutcome::stalled(
            "BaselineNotFound",
            format!("Baseline {:?} does not exist: create it or fix spec.baseline.name", wanted.name),
        ));
        return Ok(RECHECK_STALLED);
    };
    let parameters = match baseline::resolve_parameters(
        &baseline.spec,
        &wanted.parameters,
        &tenant.name_any(),
        &account_id,
    ) {
        Ok(parameters) => parameters,
        Err(UndeclaredParameters(names)) => {
            report.baseline = Some(StepOutcome::stalled(
                "UndeclaredParameter",
                format!(
                    "The template of Baseline {:?} declares no parameter {}: fix the Tenant's or the Baseline's parameters",
                    wanted.name,
                    names.join(", ")
                ),
            ));
            return Ok(RECHECK_STALLED);
        }
    };
    let external_id = match &baseline.spec.external_id {
        None => None,
        Some(reference) => match read_secret(ctx, &reference.name, &reference.key).await? {
            Some(value) => Some(value),
            None => {
                report.baseline = Some(StepOutcome::stalled(
                    "ExternalIdNotFound",
                    format!(
                        "Secret {}/{} has no key {:?} with the external id of Baseline {:?}",
                        ctx.settings.namespace, reference.name, reference.key, wanted.name
                    ),
                ));
                return Ok(RECHECK_STALLED);
            }
        },
    };
    let revision = baseline::tenant_revision(&baseline::revision(&baseline.spec), &parameters);

    // A new revision starts with a clean slate of attempts.
    let previous = report.status.baseline.take().filter(|b| b.name == wanted.name && b.revision == revision);
    let mut state = TenantBaselineStatus { name: wanted.name.clone(), revision: revision.clone(), stacks: vec![] };
    let regions = baseline::regions(&baseline.spec, &ctx.aws.region());
    for region in &regions {
        let remembered = previous.as_ref().and_then(|p| p.stacks.iter().find(|s| &s.region == region)).cloned();
        state.stacks.push(StackReport { region: region.clone(), ..remembered.unwrap_or_default() });
    }
    report.status.baseline = Some(state);

    let key = SessionKey {
        account_id: account_id.clone(),
        role_name: baseline.spec.role_name.clone(),
        external_id,
        session_policy: baseline.spec.session_policy.clone(),
    };
    let credentials = match ctx.aws.tenants.credentials(&key, &tenant.name_any()).await {
        Ok(credentials) => credentials,
        Err(err) if is_access_denied(&err) => {
            report.baseline = Some(StepOutcome::in_progress(
                "WaitingForRole",
                format!(
                    "Role {} in account {account_id} cannot be assumed yet (new accounts take a while): {}",
                    baseline.spec.role_name, err.message
                ),
            ));
            return Ok(Duration::from_secs(10));
        }
        Err(err) => return Err(err.into()),
    };

    let spec = StackSpec {
        name: &baseline.spec.stack_name,
        template_body: baseline.spec.template.as_deref(),
        template_url: baseline.spec.template_url.as_deref(),
        parameters: &parameters,
        capabilities: baseline.spec.capabilities.iter().map(|c| c.as_str()).collect(),
        tags: BTreeMap::from([
            (REVISION_TAG.to_string(), revision.clone()),
            ("silo.dev/tenant".to_string(), tenant.name_any()),
            ("silo.dev/baseline".to_string(), wanted.name.clone()),
        ]),
        termination_protection: baseline.spec.termination_protection,
    };
    let mut outcomes = vec![];
    let mut next = Duration::MAX;
    for (index, region) in regions.iter().enumerate() {
        let stacks = ctx.aws.stacks(credentials.clone(), region);
        match converge(&stacks, &spec, &revision, index, report, ctx).await {
            Ok((outcome, after)) => {
                next = next.min(after);
                outcomes.push(outcome);
            }
            Err(Error::Aws(err)) if err.has_code("OptInRequired") => {
                next = next.min(Duration::from_secs(300));
                outcomes.push(StepOutcome::in_progress(
                    "RegionNotEnabled",
                    format!("Region {region} is not enabled in account {account_id}; retrying"),
                ));
            }
            Err(Error::Aws(err)) if is_access_denied(&err) || err.has_code("InvalidClientTokenId") => {
                // The session went stale (or the role changed): make a new one and retry soon.
                ctx.aws.tenants.forget(&key).await;
                return Err(Error::Aws(AwsError { kind: crate::aws::AwsErrorKind::Transient, ..err }));
            }
            Err(err) => return Err(err),
        }
    }

    report.baseline = Some(match outcomes.iter().find(|o| !o.is_done()) {
        Some(blocking) => blocking.clone(),
        None => StepOutcome::done(
            "BaselineApplied",
            format!("Baseline {:?} revision {revision} runs in {}", wanted.name, regions.join(", ")),
        ),
    });
    Ok(next)
}

/// One region: observe the stack, decide, act, and record what happened.
async fn converge(
    stacks: &Stacks,
    spec: &StackSpec<'_>,
    revision: &str,
    index: usize,
    report: &mut Report<'_>,
    ctx: &Context,
) -> Result<(StepOutcome, Duration), Error> {
    let observed = stacks.describe(spec.name, REVISION_TAG).await?;
    let region = stack_report(report, index).region.clone();
    if let Some(stack) = &observed {
        let e = stack_report(report, index);
        e.stack_id = Some(stack.id.clone());
        e.stack_status = Some(stack.observed.status.clone());
        e.revision = stack.observed.revision.clone();
    }
    let memory = Memory {
        create_attempts: stack_report(report, index).create_attempts,
        attempted: stack_report(report, index).attempted_revision.clone(),
    };
    let limits = Limits { max_create_attempts: MAX_CREATE_ATTEMPTS, in_progress_timeout: IN_PROGRESS_TIMEOUT };
    let action = next_action(observed.as_ref().map(|s| &s.observed), revision, &memory, limits);
    let in_region = |what: String| format!("{what} in {region}");

    let outcome = match action {
        StackAction::Ready => {
            let stack = observed.as_ref().expect("Ready needs a stack");
            stack_report(report, index).outputs = stack.outputs.clone();
            (
                StepOutcome::done("StackReady", in_region(format!("Stack {} is at revision {revision}", spec.name))),
                Duration::MAX,
            )
        }
        StackAction::Create => {
            stack_report(report, index).attempted_revision = Some(revision.to_string());
            report.write(ctx).await?;
            let token = request_token("create", revision, i64::from(memory.create_attempts));
            match stacks.create(spec, &token).await {
                Ok(id) => {
                    stack_report(report, index).stack_id = Some(id);
                    stack_report(report, index).stack_status = Some("CREATE_IN_PROGRESS".into());
                    (
                        StepOutcome::in_progress("CreatingStack", in_region(format!("Creating stack {}", spec.name))),
                        POLL,
                    )
                }
                Err(err) if !err.is_retryable() => (refused(&err, &in_region), RECHECK_STALLED),
                Err(err) => return Err(err.into()),
            }
        }
        StackAction::Update => {
            stack_report(report, index).attempted_revision = Some(revision.to_string());
            report.write(ctx).await?;
            let changed_at = observed.as_ref().map_or(0, |s| s.changed_at);
            match stacks.update(spec, &request_token("update", revision, changed_at)).await {
                Ok(Update::Started) => {
                    let message = in_region(format!("Updating stack {} to revision {revision}", spec.name));
                    (StepOutcome::in_progress("UpdatingStack", message), POLL)
                }
                Ok(Update::NothingToDo) => {
                    (StepOutcome::in_progress("UpdatingStack", in_region("The stack already matches".into())), POLL)
                }
                Err(err) if !err.is_retryable() => (refused(&err, &in_region), RECHECK_STALLED),
                Err(err) => return Err(err.into()),
            }
        }
        StackAction::Wait => {
            let status = observed.as_ref().map(|s| s.observed.status.clone()).unwrap_or_default();
            (StepOutcome::in_progress("StackInProgress", in_region(format!("Stack {} is {status}", spec.name))), POLL)
        }
        StackAction::DeleteAndRecreate => {
            let stack = observed.as_ref().expect("a failed stack exists");
            let why = failure_of(stacks, stack).await?;
            // Intent first: the attempt counts even if the controller dies during the delete.
            stack_report(report, index).create_attempts += 1;
            report.write(ctx).await?;
            stacks.delete(stack, &request_token("delete", revision, stack.changed_at)).await?;
            let message = format!(
                "Stack {} failed to create ({why}); deleting it to create it again (attempt {} of {MAX_CREATE_ATTEMPTS})",
                spec.name,
                memory.create_attempts + 1
            );
            (StepOutcome::in_progress("RecreatingStack", in_region(message)), POLL)
        }
        StackAction::ContinueRollback => {
            let changed_at = observed.as_ref().map_or(0, |s| s.changed_at);
            match stacks.continue_rollback(spec.name, &request_token("continue-rollback", revision, changed_at)).await {
                Err(err) if !err.is_retryable() => return Ok((refused(&err, &in_region), RECHECK_STALLED)),
                other => other?,
            }
            (
                StepOutcome::in_progress(
                    "ContinuingRollback",
                    in_region(format!("Continuing the rollback of stack {}", spec.name)),
                ),
                POLL,
            )
        }
        StackAction::Failed { reason } => {
            let stack = observed.as_ref().expect("a failed stack exists");
            let why = failure_of(stacks, stack).await?;
            let message = in_region(format!(
                "Stack {} is {}: {why}; fix the Baseline (or the Tenant's parameters) and Silo tries again",
                spec.name, stack.observed.status
            ));
            (StepOutcome::stalled(reason, message), RECHECK_STALLED)
        }
    };
    Ok(outcome)
}

/// The status entry of the stack in the `index`-th region.
fn stack_report<'r>(report: &'r mut Report<'_>, index: usize) -> &'r mut StackReport {
    &mut report.status.baseline.as_mut().expect("the baseline status is set before converging").stacks[index]
}

/// The reason a stack failed, in words: the first failed resource, else the stack's reason.
async fn failure_of(stacks: &Stacks, stack: &Stack) -> Result<String, Error> {
    Ok(stacks
        .first_failure(&stack.id)
        .await?
        .or_else(|| stack.observed.reason.clone())
        .unwrap_or_else(|| "no reason given".into()))
}

/// CloudFormation refused the template or its parameters: a person must fix the Baseline.
fn refused(err: &AwsError, in_region: &dyn Fn(String) -> String) -> StepOutcome {
    StepOutcome::stalled(
        "StackRequestRejected",
        in_region(format!("CloudFormation refused the stack: {}; fix the Baseline", err.message)),
    )
}

async fn read_secret(ctx: &Context, name: &str, key: &str) -> Result<Option<String>, Error> {
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), &ctx.settings.namespace).get_opt(name).await?;
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
    let baseline = Api::<Baseline>::all(ctx.client.clone()).get_opt(&applied.name).await?;
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
    let key = SessionKey { account_id: account_id.clone(), role_name, external_id, session_policy };
    let credentials = match ctx.aws.tenants.credentials(&key, &tenant.name_any()).await {
        Ok(credentials) => credentials,
        Err(err) if is_access_denied(&err) => {
            return Ok(Some(StepOutcome::stalled(
                "BaselineDeletionBlocked",
                format!(
                    "Cannot assume {} in account {account_id} to delete the baseline stacks: {}",
                    key.role_name, err.message
                ),
            )));
        }
        Err(err) => return Err(err.into()),
    };
    let mut remaining = vec![];
    for entry in &applied.stacks {
        let stacks = ctx.aws.stacks(credentials.clone(), &entry.region);
        let name = entry.stack_id.clone().unwrap_or_else(|| stack_name.clone());
        let Some(stack) = stacks.describe(&name, REVISION_TAG).await? else { continue };
        match stack.observed.status.as_str() {
            "DELETE_COMPLETE" => continue,
            "DELETE_IN_PROGRESS" => {}
            _ => stacks.delete(&stack, &request_token("delete", &applied.revision, stack.changed_at)).await?,
        }
        remaining.push(entry.region.clone());
    }
    if remaining.is_empty() {
        return Ok(None);
    }
    Ok(Some(StepOutcome::in_progress(
        "DeletingBaseline",
        format!("Deleting the baseline stacks in {} before the account is closed", remaining.join(", ")),
    )))
}
