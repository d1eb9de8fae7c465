//! The Baseline controller: records each Baseline's revisions, rolls the newest one across
//! its tenants ([`super::rollout`]), and publishes where they stand. It changes nothing in
//! AWS itself (but for reading a templateURL's content); tenants apply what they are
//! admitted to.
//!
//! One reconcile of a Baseline:
//! 1. what its spec deploys now ([`Deployed`]: the content behind a templateURL read from S3);
//! 2. that content recorded as a revision (a ControllerRevision, before anyone uses it);
//! 3. the rollout's next step, from what the tenants report in their status (read from the
//!    Tenant controller's watch cache, never a LIST);
//! 4. the Baseline's status written, **then** the tenants it admitted woken, so a restarted
//!    controller resumes from the status and never admits a tenant twice;
//! 5. history beyond `revisionHistoryLimit` pruned, but never a revision in use.
//!
//! A tenant whose baseline state changed asks for a recount of its Baseline ([`super::recount`]),
//! at once but at most every [`RECOUNT_SPACING`], so a rollout of thousands of tenants does not
//! write the Baseline's status thousands of times a minute; a tenant whose stack work ended
//! asks at once, so the slot it frees is taken without waiting for that spacing. A recount
//! reads the Baseline's members from the [`Roster`] the Tenant watch keeps: what it costs grows
//! with the Baseline's tenants, never with copies of their status. A bake ends with a timer.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use futures::{
    StreamExt,
    channel::mpsc::{UnboundedReceiver, UnboundedSender},
};
use k8s_openapi::{api::apps::v1::ControllerRevision, jiff::Timestamp};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller, Predicate, PredicateConfig, WatchStreamExt,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        predicates,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::{info, warn};

use super::{
    Deployed, content_hash,
    recount::{Ask, Member, Roster},
    revisions::{self, DEFAULT_HISTORY_LIMIT},
    rollout::{self, CanaryRule, Rollouts, State, TenantView},
};
use crate::{
    api::{Baseline, BaselineStatus, PreviewReport, RolloutStatus, Tenant, TenantCounts},
    aws::{AwsError, templates::Templates},
    caches::{CacheGone, Ready},
    conditions::{self, Conditions},
    contract::FIELD_MANAGER,
    metrics::{BaselineLabels, BaselineNameLabels, METRICS, RolloutLabels},
};

/// What the Baseline controller shares with the Tenant controller.
#[derive(Clone)]
pub struct Shared {
    /// Every Tenant, from the Tenant controller's watch.
    pub tenants: Store<Tenant>,
    /// Every Baseline's tenants as its count reads them, kept by the same watch.
    pub roster: Roster,
    /// Every Baseline revision, from a watch of Silo's namespace.
    pub revisions: Store<ControllerRevision>,
    /// The two caches above hold their first listing (await these, never the stores).
    pub tenants_ready: Ready,
    pub revisions_ready: Ready,
    /// The rollouts as this process last decided them.
    pub rollouts: Arc<Rollouts>,
    /// Wakes a Tenant (the rollout admitted it).
    pub wake: UnboundedSender<ObjectRef<Tenant>>,
}

struct Context {
    client: Client,
    namespace: String,
    templates: Templates,
    shared: Shared,
    recorder: Recorder,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("spec.templateURL {0} is not an S3 URL (s3://bucket/key, or https://bucket.s3.amazonaws.com/key)")]
    NotS3(String),
    #[error(transparent)]
    CacheGone(#[from] CacheGone),
}

/// How often a Baseline is looked at without being asked (a templateURL is read again then).
const RECOUNT: Duration = Duration::from_secs(300);

/// The least time between two recounts of one Baseline that tenants asked for.
pub const RECOUNT_SPACING: Duration = Duration::from_millis(200);

/// The watch of Baseline revisions in Silo's namespace: a cache, and the stream that fills it
/// (poll it for the cache to stay current).
pub fn watch_revisions(
    client: &Client,
    namespace: &str,
) -> (Store<ControllerRevision>, impl futures::Stream<Item = ()> + Send + use<>) {
    let (store, writer) = reflector::store();
    let config = watcher::Config::default().labels(revisions::BASELINE_LABEL);
    let stream = watcher(Api::<ControllerRevision>::namespaced(client.clone(), namespace), config)
        .default_backoff()
        .reflect(writer)
        .map(|_| ());
    (store, stream)
}

/// Runs the Baseline controller until `shutdown` completes. `recounts` names Baselines whose
/// tenants changed.
pub async fn run(
    client: Client,
    config: aws_config::SdkConfig,
    namespace: String,
    shared: Shared,
    recounts: UnboundedReceiver<Ask>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let reporter = Reporter { controller: "silo-baseline".into(), instance: std::env::var("POD_NAME").ok() };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        namespace,
        templates: Templates::new(&config),
        shared,
    });
    let (store, writer) = reflector::store();
    // Its own status writes do not trigger it: only spec changes, annotations (a promotion),
    // tenants and timers do.
    let changes = watcher(Api::<Baseline>::all(client), watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation.combine(predicates::annotations), PredicateConfig::default());
    // No debounce: kube's debounce postpones a reconcile for as long as asks keep coming, and
    // during a rollout they always do. `paced` bounds the rate instead.
    Controller::for_stream(changes, store)
        .reconcile_on(paced(recounts, RECOUNT_SPACING))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, |_, _: &Error, _| Action::requeue(Duration::from_secs(10)), ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                warn!(%err, "baseline reconcile failed");
            }
        })
        .await;
}

/// The asks for recounts, at most one per Baseline every `spacing`: an ask is passed on at once
/// when the Baseline's last recount is `spacing` old, else held until it is (asks meanwhile
/// join it). No ask waits longer than `spacing`, and one that frees a slot ([`Ask::now`])
/// does not wait at all.
fn paced(
    asks: impl futures::Stream<Item = Ask> + Unpin,
    spacing: Duration,
) -> impl futures::Stream<Item = ObjectRef<Baseline>> {
    use tokio::time::{Instant, sleep_until};
    struct Pacer<S> {
        asks: S,
        /// When each Baseline's last recount was passed on.
        last: BTreeMap<String, Instant>,
        /// Asks held, and when they go.
        held: BTreeMap<String, Instant>,
    }
    let pacer = Pacer { asks, last: BTreeMap::new(), held: BTreeMap::new() };
    futures::stream::unfold(pacer, move |mut p| async move {
        loop {
            let due = p.held.iter().min_by_key(|(_, at)| **at).map(|(name, at)| (name.clone(), *at));
            let held = async {
                match &due {
                    Some((_, at)) => sleep_until(*at).await,
                    None => std::future::pending().await,
                }
            };
            let name = tokio::select! {
                ask = p.asks.next() => {
                    let ask = ask?;
                    let name = ask.baseline.name;
                    let now = Instant::now();
                    match p.last.get(&name) {
                        _ if ask.now => {
                            p.held.remove(&name);
                            name
                        }
                        _ if p.held.contains_key(&name) => continue,
                        Some(last) if now < *last + spacing => {
                            p.held.insert(name, *last + spacing);
                            continue;
                        }
                        _ => name,
                    }
                }
                () = held => {
                    let (name, _) = due.expect("a held ask is due");
                    p.held.remove(&name);
                    name
                }
            };
            p.last.insert(name.clone(), Instant::now());
            return Some((ObjectRef::new(&name), p));
        }
    })
}

async fn reconcile(baseline: Arc<Baseline>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = roll(&baseline, &ctx).await;
    let label = match &result {
        Ok(_) => "ok",
        Err(Error::Aws(_)) => "aws_retryable",
        Err(_) => "kube",
    };
    METRICS.reconciled("baseline", label, started.elapsed().as_secs_f64());
    result
}

/// One step of a Baseline: record its revision, move its rollout, publish.
async fn roll(baseline: &Baseline, ctx: &Context) -> Result<Action, Error> {
    let name = baseline.name_any();
    // A rollout counted from an empty cache would see no tenants: wait for the first listings.
    ctx.shared.tenants_ready.wait().await?;
    ctx.shared.revisions_ready.wait().await?;
    let now = Timestamp::now();

    // 1. What the spec deploys now.
    let template_content = match &baseline.spec.template_url {
        Some(url) => {
            let location = crate::aws::templates::location(url).ok_or_else(|| Error::NotS3(url.clone()))?;
            Some(content_hash(&ctx.templates.read(&location).await?))
        }
        None => None,
    };
    let deployed = Deployed::of(&baseline.spec, template_content);
    let newest = deployed.revision();

    // 2. Recorded before any tenant may be admitted to it.
    let api = Api::<ControllerRevision>::namespaced(ctx.client.clone(), &ctx.namespace);
    let existing = revisions::of_baseline(&ctx.shared.revisions, &name);
    revisions::record(&api, baseline, &existing, &newest, &deployed).await?;

    // 3. The rollout's next step.
    let members = ctx.shared.roster.of(&name);
    let views = || members.iter().map(|m| &m.view);
    let mut settings = rollout::ResolvedSpec::of(&baseline.spec.rollout, members.len());
    settings.promoted = baseline.annotations().get(crate::contract::PROMOTE_ANNOTATION).cloned();
    let recorded = baseline.status.as_ref().and_then(|s| s.rollout.clone());
    let current = recorded.or_else(|| ctx.shared.rollouts.get(&name));
    let step = rollout::step(
        current.as_ref(),
        &newest,
        &settings,
        &CanaryRule::of(&baseline.spec.rollout, &settings),
        views(),
        now,
    );

    // 4. The status first, then the tenants it admitted.
    let canaries = canaries(&ctx.shared.tenants, &name, &step.status);
    let status = render(baseline, &newest, &step.status, &members, &canaries, now);
    if baseline.status.as_ref() != Some(&status) {
        let patch = serde_json::json!({"apiVersion": "silo.dev/v1alpha1", "kind": "Baseline", "status": status});
        Api::<Baseline>::all(ctx.client.clone())
            .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await?;
    }
    ctx.shared.rollouts.set(&name, step.status.clone());
    // Woken: the tenants it admitted now, those admitted before that have not taken it up (a
    // process killed between recording the status and waking them), and the canaries that still
    // owe a preview.
    let lagging =
        views().filter(|v| v.admitted.as_deref().is_some_and(|a| rollout::target(&step.status, &v.name, Some(a)) != a));
    let previewers = canaries.iter().filter(|t| rollout::tenant_wants_preview(&step.status, t)).map(|t| t.name_any());
    let woken: BTreeSet<String> =
        step.admitted.iter().cloned().chain(lagging.map(|v| v.name.clone())).chain(previewers).collect();
    for tenant in woken {
        let _ = ctx.shared.wake.unbounded_send(ObjectRef::new(&tenant));
    }
    if let Some(rollback) = step.news.iter().find(|n| n.reason == "RollbackStarted") {
        info!(baseline = %name, note = %rollback.note, "rolling back");
        let labels = BaselineLabels { baseline: name.clone(), revision: step.status.revision.clone() };
        METRICS.rollout_rollbacks.get_or_create(&labels).inc();
    }
    for news in &step.news {
        // kube's Recorder folds Events with the same reason and action into one series that
        // keeps the first note: the action names the revision and stage, so each is its own.
        let type_ = if news.is_halt() { EventType::Warning } else { EventType::Normal };
        let action = format!("{}/{}", step.status.revision, step.status.stage);
        let event = Event { type_, reason: news.reason.into(), note: Some(news.note.clone()), action, secondary: None };
        if let Err(err) = ctx.recorder.publish(&event, &baseline.object_ref(&())).await {
            warn!(baseline = %name, %err, "could not publish event");
        }
    }
    publish_metrics(&name, &step.status, views(), status.tenants.drifted);

    // 5. History, never a revision in use.
    let mut in_use: BTreeSet<&str> = views().filter_map(|v| v.admitted.as_deref()).collect();
    in_use.insert(&newest);
    in_use.extend(step.status.previous.as_deref());
    let limit = baseline.spec.revision_history_limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
    revisions::prune(&api, &revisions::to_prune(&existing, &in_use, limit)).await?;

    let wait = rollout::wake_at(&step.status)
        .and_then(|at| Duration::try_from(at.duration_since(now)).ok())
        .map_or(RECOUNT, |d| d.min(RECOUNT).max(Duration::from_secs(1)));
    Ok(Action::requeue(wait))
}

/// The rollout's canary tenants that still use `baseline`, from the cache (their previews are
/// read from their status).
fn canaries(tenants: &Store<Tenant>, baseline: &str, rollout: &RolloutStatus) -> Vec<Arc<Tenant>> {
    rollout
        .canary
        .iter()
        .filter_map(|name| tenants.get(&ObjectRef::new(name)))
        .filter(|t| t.spec.baseline.as_ref().is_some_and(|b| b.name == baseline))
        .collect()
}

/// The Baseline's status after a step. Pure.
fn render(
    baseline: &Baseline,
    newest: &str,
    rollout: &RolloutStatus,
    members: &[Arc<Member>],
    canaries: &[Arc<Tenant>],
    now: Timestamp,
) -> BaselineStatus {
    let drifted = members.iter().filter(|m| m.drifted).count();
    let mut counts = TenantCounts { drifted: u32::try_from(drifted).unwrap_or(u32::MAX), ..Default::default() };
    for view in members.iter().map(|m| &m.view) {
        // A new tenant counts on the newest revision when the rollout gives it that one.
        let arriving = view.admitted.is_none() && rollout::target(rollout, &view.name, None) == newest;
        let on_newest = arriving || view.admitted.as_deref() == Some(newest);
        match (&view.state, on_newest || rollout::is_admitted(rollout, &view.name)) {
            (_, false) => counts.waiting += 1,
            (State::Current, true) if on_newest => counts.current += 1,
            (State::Failed { .. }, true) if on_newest => counts.failed += 1,
            _ => counts.in_progress += 1,
        }
    }
    let preview: Vec<PreviewReport> = canaries
        .iter()
        .filter_map(|t| {
            let preview = t.status.as_ref()?.baseline.as_ref()?.preview.as_ref()?;
            (preview.revision == newest)
                .then(|| PreviewReport { tenant: t.name_any(), changes: preview.changes.clone() })
        })
        .collect();
    let mut status = baseline.status.clone().unwrap_or_default();
    status.revision = Some(newest.to_string());
    status.observed_generation = baseline.metadata.generation;
    status.tenants = counts.clone();
    status.rollout = Some(rollout.clone());
    status.preview = preview;
    let generation = baseline.metadata.generation;
    let mut conds = Conditions::new(&mut status.conditions, generation, now);
    let summary = format!(
        "Revision {newest}: {} tenants updated, {} in progress, {} failed, {} waiting",
        counts.current, counts.in_progress, counts.failed, counts.waiting
    );
    status.last_complete_revision =
        if rollout.phase == rollout::COMPLETE { Some(rollout.revision.clone()) } else { rollout.previous.clone() };
    let failed: Vec<String> = rollout.failed.iter().map(|f| format!("{} ({})", f.name, f.reason)).collect();
    match rollout.phase.as_str() {
        rollout::ROLLING_BACK | rollout::ROLLED_BACK => {
            let back = rollout.rollback.clone().unwrap_or_default();
            let message = format!(
                "The rollout of revision {newest} failed: {} tenants failed, more than spec.rollout.failureTolerance: \
                 {}. spec.rollout.onFailure is Rollback: the {} tenants it reached {} revision {}; fix the Baseline \
                 (a new revision)",
                rollout.failed.len(),
                failed.join("; "),
                back.tenants,
                if rollout.phase == rollout::ROLLED_BACK { "run again" } else { "are going back to" },
                back.to,
            );
            let reason = if rollout.phase == rollout::ROLLED_BACK { "RolledBack" } else { "RollingBack" };
            let rolled_back = rollout.phase == rollout::ROLLED_BACK;
            conds.set(conditions::READY, false, reason, &message);
            conds.set(conditions::RECONCILING, !rolled_back, reason, if rolled_back { "" } else { &message });
            conds.set(conditions::STALLED, rolled_back, reason, if rolled_back { &message } else { "" });
        }
        rollout::HALTED => {
            let message = format!(
                "The rollout of revision {newest} halted: {} tenants failed, more than spec.rollout.failureTolerance: \
                 {}. Nothing rolls back on its own: fix the Baseline (a new revision) or raise failureTolerance",
                rollout.failed.len(),
                failed.join("; ")
            );
            conds.set(conditions::READY, false, "RolloutHalted", &message);
            conds.set(conditions::RECONCILING, false, "RolloutHalted", "");
            conds.set(conditions::STALLED, true, "RolloutHalted", &message);
        }
        // Ready: every tenant runs the newest revision (a new tenant still on its way keeps the
        // Baseline Reconciling, so a GitOps tool waits for it).
        rollout::COMPLETE if counts.failed == 0 && counts.in_progress == 0 && counts.waiting == 0 => {
            conds.set(conditions::READY, true, "AllCurrent", &summary);
            conds.set(conditions::RECONCILING, false, "AllCurrent", "");
            conds.set(conditions::STALLED, false, "AllCurrent", "");
        }
        phase => {
            let reason = match phase {
                rollout::COMPLETE if counts.failed > 0 => "TenantsFailed",
                rollout::BAKING => "Baking",
                rollout::PAUSED => "Paused",
                rollout::PREVIEWING => "Previewing",
                _ => "RollingOut",
            };
            conds.set(conditions::READY, false, reason, &summary);
            conds.set(conditions::RECONCILING, phase != rollout::PAUSED, reason, &summary);
            conds.set(conditions::STALLED, false, reason, "");
        }
    }
    status
}

fn publish_metrics<'v>(
    baseline: &str,
    rollout: &RolloutStatus,
    views: impl Iterator<Item = &'v TenantView>,
    drifted: u32,
) {
    let labels = BaselineNameLabels { baseline: baseline.into() };
    METRICS.baseline_drifted_tenants.get_or_create(&labels).set(i64::from(drifted));
    let mut per_revision: BTreeMap<&str, i64> = BTreeMap::new();
    for view in views {
        *per_revision.entry(view.admitted.as_deref().unwrap_or("none")).or_default() += 1;
    }
    let per_revision = per_revision.into_iter().map(|(revision, n)| (revision.to_string(), n)).collect();
    METRICS.baseline_tenants.replace(baseline, per_revision);
    for phase in rollout::PHASES {
        let labels = RolloutLabels { baseline: baseline.into(), phase };
        METRICS.rollout_phase.get_or_create(&labels).set(i64::from(rollout.phase == phase));
    }
    let failures = BaselineLabels { baseline: baseline.into(), revision: rollout.revision.clone() };
    METRICS.rollout_failures.get_or_create(&failures).set(i64::try_from(rollout.failed.len()).unwrap_or(i64::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::{BaselineRef, TenantBaselineStatus, TenantSpec, TenantStatus},
        baseline::recount::tests::condition,
    };

    fn tenant(name: &str, admitted: &str, conditions: &[(&str, &str, &str)]) -> Tenant {
        let mut t = Tenant::new(name, uses_std());
        t.status = Some(TenantStatus {
            baseline: Some(TenantBaselineStatus {
                name: "std".into(),
                admitted_revision: Some(admitted.into()),
                ..Default::default()
            }),
            conditions: conditions.iter().map(|(type_, status, reason)| condition(type_, status, reason)).collect(),
            ..Default::default()
        });
        t
    }

    fn uses_std() -> TenantSpec {
        TenantSpec { baseline: Some(BaselineRef { name: "std".into(), ..Default::default() }), ..Default::default() }
    }

    #[tokio::test(start_paused = true)]
    async fn a_recount_goes_at_once_and_at_most_once_per_spacing() {
        use tokio::time::Instant;
        let spacing = Duration::from_millis(200);
        let (asks, receiver) = futures::channel::mpsc::unbounded();
        let mut paced = std::pin::pin!(paced(receiver, spacing));
        let start = Instant::now();
        let send = |name: &str, now: bool| asks.unbounded_send(Ask { baseline: ObjectRef::new(name), now }).unwrap();
        let ask = |name: &str| send(name, false);
        let mut next = async || {
            let name = paced.next().await.map(|r| r.name);
            (name, start.elapsed())
        };

        ask("std");
        assert_eq!(next().await, (Some("std".into()), Duration::ZERO), "the first ask goes at once");
        for name in ["std", "std", "std", "edge"] {
            ask(name);
        }
        assert_eq!(next().await, (Some("edge".into()), Duration::ZERO), "another Baseline is not held");
        assert_eq!(next().await, (Some("std".into()), spacing), "three asks, one recount, one spacing later");
        tokio::time::sleep(Duration::from_secs(1)).await;
        ask("std");
        let quiet = spacing + Duration::from_secs(1);
        assert_eq!(next().await, (Some("std".into()), quiet), "after a quiet spell, at once again");
        // Within the spacing, an ask that frees a slot goes at once, and takes the held one along.
        ask("std");
        send("std", true);
        assert_eq!(next().await, (Some("std".into()), quiet), "a freed slot is counted at once");
        drop(asks);
        assert_eq!(next().await.0, None, "nothing held: the stream ends with the asks");
    }

    #[test]
    fn a_baseline_is_ready_only_when_every_tenant_runs_its_newest_revision() {
        let mut baseline = Baseline::new("std", Default::default());
        baseline.metadata.generation = Some(1);
        let rollout = RolloutStatus {
            revision: "r1".into(),
            phase: rollout::COMPLETE.into(),
            canary_passed: true,
            ..Default::default()
        };
        let ready = |users: &[Tenant]| {
            let members: Vec<Arc<Member>> = users.iter().map(|t| Arc::new(Member::of(t).unwrap().1)).collect();
            let status = render(&baseline, "r1", &rollout, &members, &[], Timestamp::now());
            let ready = conditions::find(&status.conditions, conditions::READY).unwrap().clone();
            (ready.status, ready.reason, status.tenants.in_progress)
        };
        let current = tenant("a", "r1", &[("BaselineReady", "True", "BaselineApplied")]);
        assert_eq!(ready(std::slice::from_ref(&current)), ("True".into(), "AllCurrent".into(), 0));
        // A new tenant, still creating its account: on its way to r1.
        let new = Tenant::new("b", uses_std());
        assert_eq!(ready(&[current, new]), ("False".into(), "RollingOut".into(), 1));
        // A new tenant whose first apply failed (a parameter its template lacks) failed it.
        let mut typo = tenant(
            "c",
            "r1",
            &[("BaselineReady", "False", "UndeclaredParameter"), ("Stalled", "True", "UndeclaredParameter")],
        );
        typo.status.as_mut().unwrap().baseline = None;
        assert_eq!(ready(&[typo]), ("False".into(), "TenantsFailed".into(), 0));
    }
}
