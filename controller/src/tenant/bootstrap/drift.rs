//! After the baseline step: drift, the resources of a tenant's stacks changed outside
//! CloudFormation (a person in the console), which a stack's status never shows.
//!
//! A tenant's stacks are checked once per `spec.drift.intervalSeconds` of its Baseline (daily
//! by default), at the tenant's own phase of the interval, during a periodic verification
//! (or at once when a person asks for a verification): DetectStackDrift in each region, the
//! detection ids recorded in `status.baseline.drift`, and a few seconds later their results
//! read (DescribeStackDriftDetectionStatus, then DescribeStackResourceDrifts where a stack
//! drifted). Everything goes at the `IfIdle` priority: only when no user work waits for the
//! account's CloudFormation and STS budgets. The `BaselineDrifted` condition says what the
//! last check found; it does not touch `Ready`.
//!
//! With `spec.drift.repair`, a drifted stack is put back with a change set in CloudFormation's
//! REVERT_DRIFT deployment mode (at `Background` priority), and checked again once that update
//! is done. A detection reads and changes nothing, so one started by a controller that died
//! before recording it costs a request and nothing else.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use tracing::warn;

use super::{BaselineStep, rollout_of, stack_spec};
use crate::{
    api::{Baseline, DriftDetectionRef, DriftedResource, TenantDrift},
    aws::{
        Priority, SessionKey,
        cloudformation::Detection,
        stack_answers::{SessionRefusal, session_refusal},
    },
    tenant::{
        Error,
        schedule::{Mode, Verification, next_verification},
        status::{Progress, describe},
    },
};

/// Daily, unless the Baseline says otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(86_400);
/// How soon detections in flight are read.
const DETECTION_POLL: Duration = Duration::from_secs(5);
/// How soon a check that could not start (a stack busy, a repair in flight) is tried again.
const RECHECK: Duration = Duration::from_secs(10);

/// What the drift pass does in this reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    Nothing,
    /// Read the detections recorded in the status.
    Read,
    /// Start a detection in each region.
    Start,
}

/// Decides the drift pass from what the status records and what this reconcile is for. Pure.
fn plan(drift: &TenantDrift, mode: Mode, interval: Duration, uid: &str, now: Timestamp) -> Plan {
    if !drift.detections.is_empty() {
        return Plan::Read;
    }
    if drift.recheck {
        return Plan::Start;
    }
    match mode {
        Mode::Verify(Verification::Requested) => Plan::Start,
        Mode::Verify(Verification::Periodic) => {
            let last = drift.checked_at.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
            match last {
                Some(last) if next_verification(uid, last, interval) > now => Plan::Nothing,
                _ => Plan::Start,
            }
        }
        Mode::Converge | Mode::Idle(_) => Plan::Nothing,
    }
}

impl BaselineStep<'_> {
    /// The drift pass, once the baseline step is done. Returns how soon to look again when
    /// it has work in flight.
    pub async fn check_drift(&self, progress: &mut Progress) -> Result<Option<Duration>, Error> {
        let (tenant, ctx) = (self.tenant, self.ctx);
        let Some(wanted) = &tenant.spec.baseline else { return Ok(None) };
        let Some(baseline) = ctx.baselines.get(&kube::runtime::reflector::ObjectRef::new(&wanted.name)) else {
            return Ok(None);
        };
        let interval = baseline.spec.drift.interval_seconds.map_or(DEFAULT_INTERVAL, |s| Duration::from_secs(s.into()));
        let account_id = progress.status.account_id.clone().unwrap_or_default();
        let Some(applied) = progress.status.baseline.as_mut().filter(|b| b.name == wanted.name) else {
            return Ok(None);
        };
        if interval.is_zero() {
            applied.drift = None;
            return Ok(None);
        }
        let mut drift = applied.drift.clone().unwrap_or_default();
        let regions: Vec<String> = applied.stacks.iter().map(|s| s.region.clone()).collect();
        let now = Timestamp::now();
        let uid = kube::ResourceExt::uid(tenant).unwrap_or_default();
        let planned = plan(&drift, self.mode, interval, &uid, now);
        if planned == Plan::Nothing {
            return Ok(None);
        }
        let Some(credentials) = self.drift_session(&baseline, &account_id).await? else { return Ok(None) };
        let stack_name = &baseline.spec.stack_name;
        let look_again = match planned {
            Plan::Nothing => None,
            Plan::Start => {
                for region in &regions {
                    let stacks = ctx.aws.stacks(&account_id, credentials.clone(), region, Priority::IfIdle);
                    if let Some(id) = stacks.detect_drift(stack_name).await? {
                        drift.detections.push(DriftDetectionRef { region: region.clone(), id });
                    }
                }
                // A stack with an operation in progress cannot be checked: again soon.
                drift.recheck = drift.detections.len() < regions.len();
                Some(if drift.recheck { RECHECK } else { DETECTION_POLL })
            }
            Plan::Read => {
                let (mut still, mut found) = (vec![], vec![]);
                for detection in std::mem::take(&mut drift.detections) {
                    let stacks = ctx.aws.stacks(&account_id, credentials.clone(), &detection.region, Priority::IfIdle);
                    match stacks.detection(&detection.id).await? {
                        Detection::InProgress => still.push(detection),
                        Detection::InSync => {}
                        Detection::Drifted => {
                            for resource in stacks.resource_drifts(stack_name).await? {
                                found.push(DriftedResource {
                                    region: detection.region.clone(),
                                    logical_id: resource.logical_id,
                                    resource_type: resource.resource_type,
                                    status: resource.status,
                                    differences: resource.differences,
                                });
                            }
                        }
                        Detection::Failed(reason) => {
                            warn!(tenant = %kube::ResourceExt::name_any(tenant), region = %detection.region, %reason,
                                  "drift detection failed");
                        }
                    }
                }
                if !still.is_empty() {
                    drift.detections = still;
                    Some(DETECTION_POLL)
                } else {
                    self.found(&baseline, &account_id, &credentials, &mut drift, found, now).await?
                }
            }
        };
        if let Some(applied) = progress.status.baseline.as_mut() {
            applied.drift = Some(drift);
        }
        Ok(look_again)
    }

    /// Records what a completed check found, says so in an Event when it changed, and puts
    /// the resources back when the Baseline asks for repair.
    async fn found(
        &self,
        baseline: &Baseline,
        account_id: &str,
        credentials: &aws_credential_types::Credentials,
        drift: &mut TenantDrift,
        found: Vec<DriftedResource>,
        now: Timestamp,
    ) -> Result<Option<Duration>, Error> {
        let (tenant, ctx) = (self.tenant, self.ctx);
        drift.checked_at = Some(now.to_string());
        drift.recheck = false;
        let changed = drift.resources != found;
        drift.resources = found;
        if drift.resources.is_empty() {
            return Ok(None);
        }
        if changed {
            ctx.event(tenant, EventType::Warning, "BaselineDrifted", describe(&drift.resources)).await;
        }
        if !baseline.spec.drift.repair {
            return Ok(None);
        }
        let Some(rollout) = rollout_of(ctx, baseline) else { return Ok(None) };
        let Ok(target) = self.target(&rollout, account_id) else { return Ok(None) };
        let spec = stack_spec(baseline, &target, tenant);
        let mut regions: Vec<&str> = drift.resources.iter().map(|r| r.region.as_str()).collect();
        regions.dedup();
        for region in regions {
            let stacks = ctx.aws.stacks(account_id, credentials.clone(), region, Priority::Background);
            stacks.revert_drift(&spec, &format!("silo-revert-drift-{}", now.as_second())).await?;
        }
        drift.repairs += 1;
        drift.repaired_at = Some(now.to_string());
        // Checked again once the revert is done, to confirm it.
        drift.recheck = true;
        let note = format!("Putting back what drifted: {}", describe(&drift.resources));
        ctx.event(tenant, EventType::Normal, "BaselineDriftRepairing", note).await;
        Ok(Some(RECHECK))
    }

    /// The Baseline's session in the tenant's account, at the priority of a check; `None`
    /// when the role refuses (the baseline step says so; the check waits for its next turn).
    async fn drift_session(
        &self,
        baseline: &Baseline,
        account_id: &str,
    ) -> Result<Option<aws_credential_types::Credentials>, Error> {
        let (tenant, ctx) = (self.tenant, self.ctx);
        let external_id = match &baseline.spec.external_id {
            Some(reference) => ctx.external_id(&reference.name, &reference.key).await?,
            None => None,
        };
        let key = SessionKey {
            tenant_uid: kube::ResourceExt::uid(tenant).unwrap_or_default(),
            account_id: account_id.to_string(),
            role_name: baseline.spec.role_name.clone(),
            external_id,
            session_policy: baseline.spec.session_policy.clone(),
        };
        match ctx.aws.tenants.credentials(&key, &kube::ResourceExt::name_any(tenant), Priority::IfIdle).await {
            Ok(credentials) => Ok(Some(credentials)),
            Err(err) if session_refusal(&err) == SessionRefusal::RoleRefused => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::schedule::drift_pending;

    const DAY: Duration = Duration::from_secs(86_400);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn a_check_starts_at_the_tenants_turn_of_the_interval_and_only_when_verifying() {
        let never = TenantDrift::default();
        let periodic = Mode::Verify(Verification::Periodic);
        assert_eq!(plan(&never, periodic, DAY, "uid", at(0)), Plan::Start, "never checked");
        assert_eq!(plan(&never, Mode::Converge, DAY, "uid", at(0)), Plan::Nothing, "converging checks nothing");
        let checked = TenantDrift { checked_at: Some(at(0).to_string()), ..Default::default() };
        assert_eq!(plan(&checked, periodic, DAY, "uid", at(3600)), Plan::Nothing, "checked an hour ago");
        assert_eq!(plan(&checked, periodic, DAY, "uid", at(2 * 86_400)), Plan::Start, "two days later");
        let asked = Mode::Verify(Verification::Requested);
        assert_eq!(plan(&checked, asked, DAY, "uid", at(3600)), Plan::Start, "a person asked");
        // Tenants checked at the same moment come due at their own phase of the interval.
        let due = |uid: &str| next_verification(uid, at(0), DAY);
        assert_ne!(due("tenant-a"), due("tenant-b"));
    }

    #[test]
    fn detections_in_flight_are_read_and_a_recheck_starts_again_whatever_the_mode() {
        let reading = TenantDrift {
            detections: vec![DriftDetectionRef { region: "us-east-1".into(), id: "d".into() }],
            ..Default::default()
        };
        assert_eq!(plan(&reading, Mode::Converge, DAY, "uid", at(0)), Plan::Read);
        assert!(drift_pending(Some(&reading)));
        let recheck = TenantDrift { recheck: true, checked_at: Some(at(0).to_string()), ..Default::default() };
        assert_eq!(plan(&recheck, Mode::Converge, DAY, "uid", at(1)), Plan::Start);
        assert!(drift_pending(Some(&recheck)));
        assert!(!drift_pending(Some(&TenantDrift::default())) && !drift_pending(None));
    }
}
