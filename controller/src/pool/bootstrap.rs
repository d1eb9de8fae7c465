//! A pool account's Baseline, made before the account is ready (`spec.baseline` of an
//! AccountPool): the new account's role is waited for and the Baseline's stacks are created
//! while nobody waits for them, so that a Tenant taking the account only updates the stacks
//! to its own parameters.
//!
//! The stacks run the revision a new Tenant would get (the newest that passed its canary),
//! with the pool's parameters; `TenantName` is the account's name in the pool. Nothing is
//! recorded in the pool's status before a stack call: the stack itself, found by its name, is
//! the record, and each call carries a ClientRequestToken, so a controller stopped anywhere
//! repeats nothing. The pool's accounts are never updated to a Baseline's later revisions: a
//! Tenant that takes one converges it to its own revision anyway.
//!
//! Everything goes at the `Background` priority: behind every Tenant's work.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::{
    Client, ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};

use super::Error;
use crate::{
    api::{AccountPool, Baseline, BaselineRef},
    aws::{
        Aws, Priority, SessionKey,
        cloudformation::{Stack, StackSpec, Update},
        stack_answers::{SessionRefusal, StackRefusal, session_refusal, stack_refusal},
    },
    baseline::{
        self, UndeclaredParameters, revisions,
        rollout::{self, Rollouts},
        stack::{Limits, Memory, StackAction, next_action, request_token},
    },
    caches::Ready,
    contract::POOL_TAG,
    tenant::bootstrap::{IN_PROGRESS_TIMEOUT, MAX_CREATE_ATTEMPTS, REVISION_TAG, observed},
};

/// What a pool's Baseline is made with: the Tenant controller's AWS clients and caches.
pub struct Sources {
    pub client: Client,
    pub aws: Aws,
    /// Baselines and their revisions (content), from the watch caches, and their first listing.
    pub baselines: Store<Baseline>,
    pub revisions: Store<ControllerRevision>,
    pub caches_ready: [Ready; 2],
    /// The Baseline rollouts as this process last decided them.
    pub rollouts: Arc<Rollouts>,
    /// The controller's namespace, where the revisions live.
    pub namespace: String,
    /// Where the Baselines' external-id Secrets live.
    pub external_id_namespace: String,
}

/// Where an account's bootstrap stands after one look.
#[derive(Clone, Debug, PartialEq)]
pub enum Bootstrap {
    /// Every stack runs the revision: the account may be claimed.
    Done,
    /// On its way (the role is not assumable yet, a stack is being made): the words say what.
    Waiting(String),
    /// A person must act (the Baseline is missing, a stack failed): reason and words.
    Stalled { reason: &'static str, message: String },
}

/// Looks at the account's stacks and takes the next step on each. `account_name` is the
/// account's name in the pool, the stacks' `TenantName`.
pub async fn bootstrap(
    pool: &AccountPool,
    wanted: &BaselineRef,
    account_id: &str,
    account_name: &str,
    ctx: &Sources,
) -> Result<Bootstrap, Error> {
    for ready in &ctx.caches_ready {
        ready.wait().await?;
    }
    let stalled = |reason, message: String| Ok(Bootstrap::Stalled { reason, message });
    let Some(baseline) = ctx.baselines.get(&ObjectRef::new(&wanted.name)) else {
        return stalled(
            "BaselineNotFound",
            format!("Baseline {:?} does not exist: create it or fix spec.baseline.name", wanted.name),
        );
    };
    let rollout = ctx.rollouts.get(&wanted.name).or_else(|| baseline.status.as_ref()?.rollout.clone());
    let Some(rollout) = rollout else {
        return Ok(Bootstrap::Waiting(format!("Baseline {:?} has no revision recorded yet", wanted.name)));
    };
    let admitted = rollout::target(&rollout, account_name, None);
    let Some(deployed) = revisions::find(&ctx.revisions, &ctx.namespace, &wanted.name, &admitted) else {
        return Ok(Bootstrap::Waiting(format!(
            "Revision {admitted} of Baseline {:?} is not recorded yet",
            wanted.name
        )));
    };
    let parameters = match baseline::resolve_parameters(&deployed, &wanted.parameters, account_name, account_id) {
        Ok(parameters) => parameters,
        Err(UndeclaredParameters(names)) => {
            return stalled(
                "UndeclaredParameter",
                format!(
                    "The template of Baseline {:?} declares no parameter {}: fix spec.baseline.parameters",
                    wanted.name,
                    names.join(", ")
                ),
            );
        }
    };
    let revision = baseline::tenant_revision(&admitted, &parameters);

    let external_id = match &baseline.spec.external_id {
        None => None,
        Some(reference) => {
            match baseline::external_id::read(&ctx.client, &ctx.external_id_namespace, &reference.name, &reference.key)
                .await?
            {
                Some(value) => Some(value),
                None => {
                    return stalled(
                        "ExternalIdNotFound",
                        format!(
                            "Secret {}/{} has no key {:?} with the external id of Baseline {:?}",
                            ctx.external_id_namespace, reference.name, reference.key, wanted.name
                        ),
                    );
                }
            }
        }
    };
    let key = SessionKey {
        tenant_uid: format!("pool/{}/{account_id}", pool.uid().unwrap_or_default()),
        account_id: account_id.to_string(),
        role_name: baseline.spec.role_name.clone(),
        external_id,
        session_policy: baseline.spec.session_policy.clone(),
    };
    let credentials = match ctx.aws.tenants.credentials(&key, &pool.name_any(), Priority::Background).await {
        Ok(credentials) => credentials,
        Err(err) if session_refusal(&err) == SessionRefusal::RoleRefused => {
            return Ok(Bootstrap::Waiting(format!(
                "Role {} in account {account_id} cannot be assumed yet (new accounts take a while): {}",
                baseline.spec.role_name, err.message
            )));
        }
        Err(err) => return Err(err.into()),
    };

    let spec = StackSpec {
        name: &deployed.stack_name,
        template_body: deployed.template.as_deref(),
        template_url: deployed.template_url.as_deref(),
        parameters: &parameters,
        capabilities: deployed.capabilities.iter().map(|c| c.as_str()).collect(),
        tags: BTreeMap::from([
            (REVISION_TAG.to_string(), revision.clone()),
            (POOL_TAG.to_string(), pool.name_any()),
            ("silo.dev/baseline".to_string(), wanted.name.clone()),
        ]),
        termination_protection: deployed.termination_protection,
    };
    for region in &baseline::regions(&deployed.regions, &ctx.aws.region()) {
        let stacks = ctx.aws.stacks(account_id, credentials.clone(), region, Priority::Background);
        let stack = stacks.describe(spec.name).await?;
        let in_region = |what: String| format!("{what} in {region} of account {account_id}");
        let step = match next_step(stack.as_ref(), &revision) {
            StackAction::Ready => continue,
            StackAction::Create => match stacks.create(&spec, &request_token("create", &revision, 0)).await {
                Ok(_) => Bootstrap::Waiting(in_region(format!("Creating stack {}", spec.name))),
                Err(err) if stack_refusal(&err) == StackRefusal::Rejected => {
                    Bootstrap::Stalled { reason: "StackRefused", message: in_region(err.message) }
                }
                Err(err) => return Err(err.into()),
            },
            StackAction::Update => {
                let changed_at = stack.as_ref().map_or(0, |s| s.changed_at);
                match stacks.update(&spec, &request_token("update", &revision, changed_at)).await {
                    Ok(Update::Started | Update::NothingToDo) => {
                        Bootstrap::Waiting(in_region(format!("Updating stack {}", spec.name)))
                    }
                    Err(err) if stack_refusal(&err) == StackRefusal::Rejected => {
                        Bootstrap::Stalled { reason: "StackRefused", message: in_region(err.message) }
                    }
                    Err(err) => return Err(err.into()),
                }
            }
            StackAction::Wait | StackAction::ContinueRollback => {
                let status = stack.as_ref().map(|s| s.status.clone()).unwrap_or_default();
                Bootstrap::Waiting(in_region(format!("Stack {} is {status}", spec.name)))
            }
            StackAction::DeleteAndRecreate | StackAction::Failed { .. } => {
                let stack = stack.as_ref().expect("a failed stack exists");
                let why = stacks.first_failure(&stack.id).await?.or_else(|| stack.reason.clone()).unwrap_or_default();
                // Deleted, so that the next look (after a person fixed the Baseline, or the
                // pool's parameters) creates it again.
                if stack.status != "DELETE_FAILED" {
                    stacks.delete(stack, &request_token("delete", &revision, stack.changed_at)).await?;
                }
                let message = format!(
                    "Stack {} is {} ({why}): deleted, created again in 10 minutes; fix the Baseline or \
                     spec.baseline.parameters",
                    spec.name, stack.status
                );
                Bootstrap::Stalled { reason: "PoolBaselineFailed", message: in_region(message) }
            }
        };
        return Ok(step);
    }
    Ok(Bootstrap::Done)
}

/// The next step on a pool account's stack towards `revision`. A failed create is never
/// retried in place: the pool deletes the stack and says so. Pure.
fn next_step(stack: Option<&Stack>, revision: &str) -> StackAction {
    let limits = Limits { max_create_attempts: MAX_CREATE_ATTEMPTS, in_progress_timeout: IN_PROGRESS_TIMEOUT };
    next_action(stack.map(observed).as_ref(), revision, &Memory::default(), limits)
}
