//! The rollout scenario: one change to a Baseline that N Ready Tenants run, rolled across the
//! fleet in stages through a window of M, with stack updates as long-tailed as CloudFormation's.
//!
//! The fleet is made fast, outside the measurement: the simulator's quotas off, stack
//! operations of 0.1 s, roles assumable at once, and a controller with large budgets brings N
//! bare Tenants with a one-region Baseline (an SNS topic) to Ready. That controller is stopped;
//! the simulator goes back to the bench's AWS-like quotas (CloudFormation 20 and STS 50
//! requests per second, every other rate AWS's) with stack operations of median S and 99th
//! percentile 6 S (lognormal, the same draws after every reset), and a new `silo run` with
//! its default flags (and `BENCH_SILO_FLAGS`) starts. Once its start-up pass is over (no AWS
//! request for 5 s), one parameter of the Baseline changes, and the bench times the change to
//! `status.rollout.phase` Complete for the new revision.
//!
//! The bound is what a window of M always full would take: every stage's tenants times the
//! mean update time over M, plus a bake after every stage but the last. The mean is measured
//! from the simulator's record of this run's UpdateStack operations, not assumed, so the bound
//! follows the draws this run got.
//!
//! Then a second measured part, with the same controller and simulator: a revision that fails
//! in stage 2 and is rolled back. The simulator fails UpdateStack with `Version` v3 for two
//! tenants of stage 2 (picked by name: [`failing_positions`]), and the Baseline changes to v3
//! with `onFailure: Rollback` (the same stages, M and B; `failureTolerance` at its default
//! 0). The bench times the change to `status.rollout.phase` RolledBack and counts, from the
//! simulator's record, the tenants v3 touched, those that failed, those updated back and
//! those never touched. It fails unless every touched tenant runs v2 again, no tenant beyond
//! the rollback's reach was updated, and never more than M UpdateStacks were in flight. A
//! controller whose CRD does not declare `spec.rollout.onFailure` skips this part (`rollback`
//! says so in the JSON).

use std::{
    collections::BTreeMap,
    ops::Range,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use kube::{
    ResourceExt as _,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use silo_testenv::{
    awssim::{StackOperation, most_in_flight},
    process::tail,
};

use super::{Bench, SERVICES, op_table, per_tenant, usage_json};
use crate::{
    controller::{Controller, require_samples},
    fleet::{self, Counters, of_service, sum_service},
    report::{Table, f, series, vline},
    setup::{self, Profile, Scenario, without_flags},
};

/// The Baseline every Tenant of the scenario runs.
const BASELINE: &str = "bench-rollout";
const REGION: &str = "us-east-1";
/// The change: `Version` from the first value to the second.
const VERSIONS: [&str; 2] = ["v1", "v2"];
/// The rollback part's change: `Version` v2 to this, which fails for two tenants of stage 2.
const FAILING_VERSION: &str = "v3";
/// Why the simulator fails their UpdateStack (CloudFormation then rolls the stack back).
const FAILURE_REASON: &str = "quota of topics reached";
/// How long the bench reads the tenants again after RolledBack before it says one is not
/// back: a tenant's status may trail the Baseline's by a moment.
const SETTLE: Duration = Duration::from_secs(120);
/// Like the rollouts suite's: an SNS topic, and a parameter whose change is the new revision.
const TEMPLATE: &str = "Parameters:
  TenantName: {Type: String}
  Version: {Type: String, Default: v1}
Resources:
  Events:
    Type: AWS::SNS::Topic
    Properties:
      TopicName: !Sub \"${TenantName}-events\"
Outputs:
  Version:
    Value: !Ref Version
";
/// The 99th percentile of a stack operation, in medians (S).
const P99_IN_MEDIANS: f64 = 6.0;
/// The start-up pass is over after this long without an AWS request.
const QUIET_SECONDS: f64 = 5.0;
/// At the latest this long after the controller's start, the change is made all the same.
const QUIET_AT_MOST_SECONDS: f64 = 300.0;
/// The plot's UpdateStacks in flight: a mean over this many seconds.
const WINDOW_SECONDS: f64 = 10.0;
/// How often the bench reads the Baseline's status during the rollout.
const POLL: Duration = Duration::from_millis(250);
/// The flags of the controller that makes the fleet (the simulator's quotas are off then):
/// large budgets, so that 1,000 Tenants are Ready in about a minute.
const SETUP_FLAGS: [(&str, &str); 5] = [
    ("--aws-requests-per-second", "1000"),
    ("--aws-max-in-flight", "16"),
    ("--max-concurrent-creations", "16"),
    ("--sts-requests-per-second", "1000"),
    ("--concurrency", "32"),
];

/// The Baseline at `version`, with the run's rollout settings (`stages` left out when the
/// installed CRD does not declare them: a controller from before stages).
fn baseline_doc(version: &str, stages: Option<&[Value]>, max_concurrent: usize, bake: u32) -> Value {
    let mut doc = json!({
        "apiVersion": "silo.dev/v1alpha1",
        "kind": "Baseline",
        "metadata": {"name": BASELINE},
        "spec": {
            "regions": [REGION],
            "template": TEMPLATE,
            "parameters": {"Version": version},
            "rollout": {"maxConcurrent": max_concurrent, "bakeSeconds": bake},
        },
    });
    if let Some(stages) = stages {
        doc["spec"]["rollout"]["stages"] = json!(stages);
    }
    doc
}

/// Whether the installed Baseline CRD declares `spec.rollout.<field>` (`stages`, `onFailure`):
/// the API server refuses an apply with a field its schema does not declare.
async fn crd_declares(client: &kube::Client, field: &str) -> Result<bool> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crd = kube::Api::<CustomResourceDefinition>::all(client.clone()).get("baselines.silo.dev").await?;
    let spec = serde_json::to_value(&crd.spec)?;
    Ok(spec["versions"].as_array().into_iter().flatten().any(|version| {
        !version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["rollout"]["properties"][field]
            .is_null()
    }))
}

/// `BENCH_ROLLOUT_STAGES` as the API takes them: numbers, or percentages like "10%".
fn stages_json(stages: &[String]) -> Result<Vec<Value>> {
    stages
        .iter()
        .map(|s| {
            let s = s.trim();
            if s.ends_with('%') {
                Ok(json!(s))
            } else {
                Ok(json!(s.parse::<u64>().with_context(|| format!("BENCH_ROLLOUT_STAGES: {s} is no number"))?))
            }
        })
        .collect()
}

/// The cumulative sizes of the stages for `n` tenants, as `spec.rollout.stages` documents
/// them: a percentage rounded up, at least 1, never fewer than the stage before, the last
/// stage every tenant (implied when missing). The first is the canary.
fn stage_sizes(stages: &[Value], n: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = stages
        .iter()
        .map(|s| match s.as_str() {
            Some(p) => (n * p.trim_end_matches('%').parse::<usize>().unwrap_or(0)).div_ceil(100).max(1),
            None => s.as_u64().unwrap_or(1).max(1) as usize,
        })
        .collect();
    for i in 1..sizes.len() {
        sizes[i] = sizes[i].max(sizes[i - 1]);
    }
    if sizes.is_empty() {
        sizes.push(1);
    }
    let canary = sizes.remove(0);
    sizes.retain(|&size| size < n);
    sizes.push(n);
    let mut all = vec![canary.min(n)];
    all.extend(sizes);
    all
}

/// The bound: each stage's tenants x `mean` / `m`, and `bake` after every stage but the last.
fn bound(sizes: &[usize], mean: f64, m: usize, bake: f64) -> f64 {
    let n = sizes.last().copied().unwrap_or(0);
    n as f64 * mean / m.max(1) as f64 + sizes.len().saturating_sub(1) as f64 * bake
}

/// Updates finished over time if the bound were met: each stage at `m` / `mean` tenants a
/// second, then a bake.
fn ideal_curve(sizes: &[usize], mean: f64, m: usize, bake: f64) -> Vec<[f64; 2]> {
    let (mut t, mut done) = (0.0, 0usize);
    let mut points = vec![[0.0, 0.0]];
    for (i, &size) in sizes.iter().enumerate() {
        t += (size - done.min(size)) as f64 * mean / m.max(1) as f64;
        done = size;
        points.push([t, done as f64]);
        if i + 1 < sizes.len() {
            t += bake;
            points.push([t, done as f64]);
        }
    }
    points
}

/// The `q` quantile of sorted `values` (nearest rank); `None` when empty.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

fn wall_clock() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// One reading of the Baseline's rollout, seconds after the change.
#[derive(Clone, Debug)]
struct Sample {
    t: f64,
    phase: String,
    /// `status.rollout.stage` (the sliding window) or `status.rollout.wave` (the waves before it).
    step: Option<u64>,
    current: u64,
}

/// A stretch of the rollout: a bake, or the work between two bakes (a stage, or a wave).
#[derive(Clone, Debug, PartialEq)]
struct Stretch {
    baking: bool,
    /// Seconds after the change, as the bench saw the status (read every [`POLL`]).
    start: f64,
    end: f64,
    /// `status.rollout.stage` (or `.wave`) last seen in it.
    step: Option<u64>,
}

/// The stretches of a rollout from its samples: each bake (a Baking phase of one stage or
/// wave), and the work between them. The first starts at the change, the last ends at `end`.
fn stretches(samples: &[Sample], end: f64) -> Vec<Stretch> {
    let mut out: Vec<Stretch> = vec![];
    for s in samples.iter().filter(|s| s.phase != "Complete") {
        let baking = s.phase == "Baking";
        match out.last_mut() {
            Some(last) if last.baking == baking && (!baking || last.step == s.step) => {
                last.step = s.step.or(last.step);
            }
            last => {
                let start = if last.is_none() { 0.0 } else { s.t };
                if let Some(last) = last {
                    last.end = s.t;
                }
                out.push(Stretch { baking, start, end, step: s.step });
            }
        }
    }
    if let Some(last) = out.last_mut() {
        last.end = end;
    }
    out
}

/// How many of `starts` (seconds after the change) fall in each stretch's work: nothing starts
/// during a bake, and an operation started just before the bench saw a stretch begin (the
/// status is read every [`POLL`]) belongs to it, so the bakes' starts are the boundaries.
fn starts_per_stretch(stretches: &[Stretch], starts: &[f64]) -> Vec<usize> {
    stretches
        .iter()
        .enumerate()
        .map(|(i, stretch)| {
            if stretch.baking {
                return 0;
            }
            let from = stretches[..i].iter().rev().find(|s| s.baking).map_or(f64::NEG_INFINITY, |s| s.start);
            let to = stretches[i + 1..].iter().find(|s| s.baking).map_or(f64::INFINITY, |s| s.start);
            starts.iter().filter(|t| **t >= from && **t < to).count()
        })
        .collect()
}

/// The mean number of `spans` (start, end) in flight between `from` and `to`: their time
/// inside it over its length.
fn mean_in_flight(spans: &[(f64, f64)], from: f64, to: f64) -> f64 {
    if to <= from {
        return 0.0;
    }
    spans.iter().map(|(a, b)| (b.min(to) - a.max(from)).max(0.0)).sum::<f64>() / (to - from)
}

/// (seconds, the mean of `spans` in flight over the [`WINDOW_SECONDS`] before it), every
/// second from the change to `end`: the raw count swings between 0 and M too fast to read.
fn in_flight_curve(spans: &[(f64, f64)], end: f64) -> Vec<[f64; 2]> {
    (0..=end.ceil() as usize)
        .map(|t| {
            let t = t as f64;
            [t, mean_in_flight(spans, (t - WINDOW_SECONDS).max(0.0), t.max(1.0))]
        })
        .collect()
}

/// How long after the k-th UpdateStack finished (the simulator's record) the Baseline's
/// `status.tenants.current` first showed k, for every k it showed: seconds, in order of k.
fn current_lags(samples: &[Sample], finished: &[f64]) -> Vec<f64> {
    let mut lags = vec![];
    let mut shown = 0;
    for sample in samples {
        let current = usize::try_from(sample.current).unwrap_or(usize::MAX).min(finished.len());
        while shown < current {
            lags.push(sample.t - finished[shown]);
            shown += 1;
        }
    }
    lags
}

/// How long after the Baseline's `status.tenants.current` first showed k - M the k-th
/// UpdateStack started, for the k of the last stage past its first M (`first_k` on): the time
/// from a slot freeing in the controller's view to the next tenant's update. Seconds.
fn admission_lags(samples: &[Sample], starts: &[f64], first_k: usize, m: usize) -> Vec<f64> {
    let mut first_seen: Vec<Option<f64>> = vec![None; starts.len() + 1];
    for sample in samples {
        let current = usize::try_from(sample.current).unwrap_or(usize::MAX).min(starts.len());
        for seen in first_seen.iter_mut().take(current + 1) {
            seen.get_or_insert(sample.t);
        }
    }
    (first_k.max(m + 1)..=starts.len()).filter_map(|k| Some(starts[k - 1] - first_seen[k - m]?)).collect()
}

/// Count, mean, median, p90 and max of `values`.
fn stats(mut values: Vec<f64>) -> Value {
    values.sort_by(f64::total_cmp);
    let mean = if values.is_empty() { None } else { Some(values.iter().sum::<f64>() / values.len() as f64) };
    json!({
        "count": values.len(),
        "mean": mean,
        "median": quantile(&values, 0.5),
        "p90": quantile(&values, 0.9),
        "max": values.last(),
    })
}

/// Which stage the rollback part's failure is in, and the positions (in name order) of the
/// tenants whose update fails there: two of stage 2 (the stage after stage 1), its 4th and
/// 5th tenants when it takes that many, else its last two, so that a small fleet still
/// fails in stage 2 (N = 30 resolves the default stages to [1, 1, 3, 30]: stage 2 takes
/// the 2nd and 3rd tenants, and both fail). When stage 2 takes nobody new, the next stage
/// that does (stage 1 when there are only two stages); `None` when no stage after the canary
/// takes anyone (N = 1).
fn failing_positions(sizes: &[usize]) -> Option<(usize, Range<usize>)> {
    let stage = (2..sizes.len()).chain(1..2.min(sizes.len())).find(|&i| sizes[i] > sizes[i - 1])?;
    let (first, end) = (sizes[stage - 1], sizes[stage]);
    let to = (first + 5).min(end);
    Some((stage, to.saturating_sub(2).max(first)..to))
}

/// What the failing revision did to the fleet, tenant by tenant, from the simulator's record
/// of UpdateStacks after its change. The record holds no parameters, but every tenant ran the
/// last complete revision then, so its first UpdateStack is towards the failing revision and
/// a later one is back.
#[derive(Debug, Default, PartialEq)]
struct Touched {
    /// The tenants with an UpdateStack after the change, by name.
    touched: Vec<String>,
    /// Of them, those whose first UpdateStack failed (CloudFormation rolled it back).
    failed: Vec<String>,
    /// Of them, those updated again: back to the last complete revision.
    sent_back: Vec<String>,
    /// Of them, those updated more than there and back.
    more_than_twice: Vec<String>,
    /// The fleet's other tenants.
    never: usize,
}

/// [`Touched`] from `updates` (UpdateStacks after the change, any order), the tenant of
/// each account, and the fleet's size. An account no tenant reports is named by its id.
fn touched(updates: &[&StackOperation], tenant_of: &BTreeMap<String, String>, fleet: usize) -> Touched {
    let mut by_tenant: BTreeMap<String, Vec<&StackOperation>> = BTreeMap::new();
    for op in updates {
        let name = tenant_of.get(&op.account).cloned().unwrap_or_else(|| format!("account {}", op.account));
        by_tenant.entry(name).or_default().push(op);
    }
    let mut out = Touched::default();
    for (name, mut ops) in by_tenant {
        ops.sort_by(|a, b| a.started.total_cmp(&b.started));
        let result = ops[0].result.as_deref().unwrap_or_default();
        if result.contains("ROLLBACK") || result.contains("FAILED") {
            out.failed.push(name.clone());
        }
        if ops.len() >= 2 {
            out.sent_back.push(name.clone());
        }
        if ops.len() > 2 {
            out.more_than_twice.push(name.clone());
        }
        out.touched.push(name);
    }
    out.never = fleet.saturating_sub(out.touched.len());
    out
}

/// Why a Tenant (its JSON, `status` included) is not back on the Baseline's `revision` with
/// `Version` `version`: admitted to another revision, a stack on another revision or version,
/// or not Ready. `None` when it is back.
fn not_back(tenant: &Value, revision: &str, version: &str) -> Option<String> {
    let status = &tenant["status"];
    let baseline = &status["baseline"];
    let admitted = baseline["admittedRevision"].as_str().unwrap_or("none");
    if admitted != revision {
        return Some(format!("admitted to revision {admitted}"));
    }
    let stacks = baseline["stacks"].as_array().map(Vec::as_slice).unwrap_or_default();
    if stacks.is_empty() {
        return Some("no stack in its status".into());
    }
    for stack in stacks {
        let runs = stack["outputs"]["Version"].as_str().unwrap_or("none");
        if runs != version || stack["revision"] != baseline["revision"] {
            return Some(format!(
                "its stack in {} runs Version {runs}, revision {} (the tenant's: {})",
                stack["region"].as_str().unwrap_or("?"),
                stack["revision"].as_str().unwrap_or("none"),
                baseline["revision"].as_str().unwrap_or("none")
            ));
        }
    }
    let ready =
        status["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True");
    (!ready).then(|| "not Ready".into())
}

/// The touched tenants a rollback should never have reached: past the stage the revision
/// failed in (the first `stage_end` of `names`, which are in name order), or past the last
/// tenant the Baseline's `status.rollout.rollback.through` says it sent back.
fn beyond_reach<'a>(touched: &'a [String], names: &[String], stage_end: usize, through: Option<&str>) -> Vec<&'a str> {
    touched
        .iter()
        .filter(|name| {
            let past_stage = names.binary_search(name).map_or(true, |position| position >= stage_end);
            past_stage || through.is_some_and(|last| name.as_str() > last)
        })
        .map(String::as_str)
        .collect()
}

impl Bench {
    pub async fn rollout(&mut self) -> Result<()> {
        let p = self.p.clone();
        let n = p.rollout_tenants;
        let (m, bake, s) = (p.rollout_max_concurrent, p.rollout_bake_seconds, p.rollout_stack_seconds);
        let stages = stages_json(&p.rollout_stages)?;
        let sizes = stage_sizes(&stages, n);
        let declared = crd_declares(&self.client, "stages").await?;
        if !declared {
            eprintln!(
                "silo-bench: rollout: the installed Baseline CRD has no spec.rollout.stages (a controller from before stages): the Baseline is applied without them"
            );
        }
        let applied_stages = declared.then_some(stages.as_slice());
        let planned_bakes = sizes.len().saturating_sub(1);

        let defaults = self.rollout_fleet(n, applied_stages).await?;
        // Back to the bench's AWS-like quotas (every rate at AWS's, CloudFormation and STS at
        // the bench's), with long-tailed stack operations.
        self.sim
            .configure(json!({
                "rate_limits": defaults["rate_limits"],
                "unassumable_roles_seconds": defaults["unassumable_roles_seconds"],
            }))
            .await?;
        let mut config = p.quotas();
        config["stack_operation_seconds"] = json!(s);
        config["stack_operation_p99_seconds"] = json!(P99_IN_MEDIANS * s);
        let sim_config = self.configure(config).await?;

        let mut controller = self.start_controller(&p.user_flags(), "rollout.silo.log").await?;
        let args = controller.args.clone();
        let (warmup, warmup_capped) = self.rollout_quiet(&mut controller).await?;
        let baselines = fleet::baselines(&self.client);
        let before_status = baselines.get(BASELINE).await?.data["status"].clone();
        let old_revision = before_status["revision"].as_str().unwrap_or_default().to_string();
        let (_, ready) = fleet::count_ready(&self.tenants()).await?;
        if ready != n || before_status["rollout"]["phase"] != "Complete" {
            bail!("rollout: before the change {ready}/{n} Tenants are Ready; the Baseline's status: {before_status}");
        }
        eprintln!(
            "silo-bench: rollout: start-up pass over after {warmup:.0} s; changing {BASELINE} (revision {old_revision}) for {n} Tenants"
        );

        // The change.
        let loadavg_start = setup::loadavg();
        let before = Counters::read(&self.sim).await?;
        let t0 = wall_clock();
        let started = Instant::now();
        let doc = baseline_doc(VERSIONS[1], applied_stages, m, bake);
        let patched = baselines.patch(BASELINE, &PatchParams::apply("silo-bench").force(), &Patch::Apply(&doc)).await?;
        let generation = patched.metadata.generation.unwrap_or(0);

        let mut samples: Vec<Sample> = vec![];
        let timeout = p.timeout(n).as_secs_f64();
        let (mut last_print, mut last_current, mut last_progress) = (0.0, 0, 0.0);
        let (took, new_revision) = loop {
            controller.check()?;
            let status = baselines.get(BASELINE).await?.data["status"].clone();
            let t = started.elapsed().as_secs_f64();
            let rollout = &status["rollout"];
            let revision = status["revision"].as_str().unwrap_or_default();
            let observed = status["observedGeneration"].as_i64().unwrap_or(0) >= generation;
            let new = observed && !revision.is_empty() && revision != old_revision;
            let current = status["tenants"]["current"].as_u64().unwrap_or(0);
            if new {
                samples.push(Sample {
                    t,
                    phase: rollout["phase"].as_str().unwrap_or("-").to_string(),
                    step: rollout["stage"].as_u64().or(rollout["wave"].as_u64()),
                    current,
                });
                if rollout["phase"] == "Complete" && rollout["revision"].as_str() == Some(revision) {
                    break (t, revision.to_string());
                }
            }
            if current != last_current {
                (last_current, last_progress) = (current, t);
            }
            if t - last_print >= 15.0 {
                eprintln!(
                    "silo-bench: rollout: {t:.0} s: {} {} (step {}), {current}/{n} Tenants current",
                    revision,
                    rollout["phase"].as_str().unwrap_or("-"),
                    rollout["stage"].as_u64().or(rollout["wave"].as_u64()).unwrap_or(0),
                );
                last_print = t;
            }
            let stalled = t - last_progress > p.stall_seconds as f64;
            if t > timeout || stalled {
                bail!(
                    "rollout: not Complete after {t:.0} s ({}); the Baseline's status: {status}; last lines of {}:\n{}",
                    if stalled {
                        "no Tenant reached the new revision for BENCH_STALL_SECONDS"
                    } else {
                        "BENCH_TIMEOUT_SECONDS"
                    },
                    controller.log().display(),
                    tail(&controller.log(), 30)
                );
            }
            tokio::time::sleep(POLL).await;
        };
        let d = Counters::read(&self.sim).await?.since(&before);
        let loadavg_end = setup::loadavg();
        // The controller goes on for the rollback part: its usage so far is the rollout's.
        let usage = controller.usage();
        require_samples(&usage)?;
        eprintln!("silo-bench: rollout: revision {new_revision} Complete {took:.1} s after the change");

        // The simulator's record of this run's stack operations.
        let ops: Vec<StackOperation> =
            self.sim.stack_operations().await?.into_iter().filter(|op| op.started >= t0).collect();
        let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
        for op in &ops {
            *kinds.entry(op.operation.clone()).or_default() += 1;
        }
        let updates: Vec<&StackOperation> = ops.iter().filter(|op| op.operation == "UpdateStack").collect();
        let mut seconds: Vec<f64> = updates.iter().filter_map(|op| Some(op.finished? - op.started)).collect();
        seconds.sort_by(f64::total_cmp);
        let unfinished = updates.len() - seconds.len();
        let failed = updates.iter().filter(|op| op.result.as_deref().is_some_and(|r| !r.contains("COMPLETE"))).count();
        if seconds.is_empty() {
            bail!("rollout: the simulator recorded no finished UpdateStack after the change");
        }
        let mean = seconds.iter().sum::<f64>() / seconds.len() as f64;
        let accounts: std::collections::BTreeSet<&str> = updates.iter().map(|op| op.account.as_str()).collect();
        let peak = most_in_flight(&ops, "UpdateStack", t0);
        let bound_seconds = bound(&sizes, mean, m, f64::from(bake));
        // Each update's (start, end) after the change; an unfinished one runs to the end.
        let update_spans: Vec<(f64, f64)> =
            updates.iter().map(|op| (op.started - t0, op.finished.map_or(took, |t| t - t0))).collect();
        let mean_flight = mean_in_flight(&update_spans, 0.0, took);
        let last_finished = update_spans.iter().map(|s| s.1).fold(0.0, f64::max);
        let mut finished_sorted: Vec<f64> = update_spans.iter().map(|s| s.1).collect();
        finished_sorted.sort_by(f64::total_cmp);
        let mut starts_sorted: Vec<f64> = update_spans.iter().map(|s| s.0).collect();
        starts_sorted.sort_by(f64::total_cmp);
        let current_lag = stats(current_lags(&samples, &finished_sorted));
        let last_stage_from = sizes.len().checked_sub(2).map_or(0, |i| sizes[i]) + m + 1;
        let admission_lag = stats(admission_lags(&samples, &starts_sorted, last_stage_from, m));
        let efficiency = bound_seconds / took;
        // The rollout's stretches: the work of each stage (or wave), and each bake.
        let spans = stretches(&samples, took);
        let observed_bakes = spans.iter().filter(|s| s.baking).count();
        let starts: Vec<f64> = updates.iter().map(|op| op.started - t0).collect();
        let stretch_json: Vec<Value> = spans
            .iter()
            .zip(starts_per_stretch(&spans, &starts))
            .map(|(span, started_in)| {
                json!({
                    "phase": if span.baking { "Baking" } else { "work" },
                    "step": span.step,
                    "from_seconds": span.start,
                    "to_seconds": span.end,
                    "seconds": span.end - span.start,
                    "mean_update_stacks_in_flight": mean_in_flight(&update_spans, span.start, span.end),
                    "updates_started": started_in,
                    "bound_seconds": if span.baking { f64::from(bake) } else { started_in as f64 * mean / m.max(1) as f64 },
                })
            })
            .collect();

        let mut table = Table::new(
            format!(
                "rollout: {n} Tenants, stages {} ({} stages: {:?}), maxConcurrent M = {m}, bakeSeconds B = {bake}, stack operations S = {s} s median, {} s p99",
                p.rollout_stages.join(","),
                sizes.len(),
                sizes,
                P99_IN_MEDIANS * s
            ),
            &["", "value"],
        );
        table
            .row(vec!["time from the change to rollout phase Complete (s)".into(), f(took, 1)])
            .row(vec![format!("bound: N x mean / M + {planned_bakes} x B (s)"), f(bound_seconds, 1)])
            .row(vec!["efficiency (bound / time)".into(), f(efficiency, 3)])
            .row(vec!["UpdateStack operations (tenants)".into(), format!("{} ({})", updates.len(), accounts.len())])
            .row(vec![
                "UpdateStack seconds: mean / median / p99 / max".into(),
                format!(
                    "{} / {} / {} / {}",
                    f(mean, 2),
                    f(quantile(&seconds, 0.5).unwrap_or(0.0), 2),
                    f(quantile(&seconds, 0.99).unwrap_or(0.0), 2),
                    f(seconds.last().copied().unwrap_or(0.0), 2)
                ),
            ])
            .row(vec![format!("peak UpdateStacks in flight (M = {m})"), peak.to_string()])
            .row(vec!["mean UpdateStacks in flight, change to Complete".into(), f(mean_flight, 2)])
            .row(vec!["last UpdateStack finished to Complete seen (s)".into(), f(took - last_finished, 1)])
            .row(vec![
                "k-th UpdateStack finished to status.tenants.current = k (s): median / mean".into(),
                format!(
                    "{} / {}",
                    f(current_lag["median"].as_f64().unwrap_or(f64::NAN), 2),
                    f(current_lag["mean"].as_f64().unwrap_or(f64::NAN), 2)
                ),
            ])
            .row(vec![
                "last stage: current = k - M to k-th UpdateStack started (s): median / mean".into(),
                format!(
                    "{} / {}",
                    f(admission_lag["median"].as_f64().unwrap_or(f64::NAN), 2),
                    f(admission_lag["mean"].as_f64().unwrap_or(f64::NAN), 2)
                ),
            ])
            .row(vec!["bakes: planned / seen".into(), format!("{planned_bakes} / {observed_bakes}")]);
        for service in SERVICES {
            table.row(vec![format!("{service} requests per tenant"), f(d.total(service) as f64 / n as f64, 2)]);
        }
        table
            .row(vec!["throttled requests".into(), sum_service(&d.throttled, "").to_string()])
            .row(vec!["peak RSS of the controller (MiB)".into(), f(usage.peak_rss_mib(), 1)])
            .row(vec!["CPU seconds of the controller".into(), f(usage.cpu_seconds, 1)]);
        println!("{}", table.render());
        if spans.len() <= 16 {
            let mut table = Table::new(
                "rollout: its stretches",
                &["stretch", "from (s)", "seconds", "updates", "bound (s)", "mean in flight"],
            );
            for seg in &stretch_json {
                table.row(vec![
                    format!(
                        "{} {}",
                        seg["phase"].as_str().unwrap_or("-"),
                        seg["step"].as_u64().map_or(String::new(), |s| s.to_string())
                    ),
                    f(seg["from_seconds"].as_f64().unwrap_or(0.0), 1),
                    f(seg["seconds"].as_f64().unwrap_or(0.0), 1),
                    seg["updates_started"].to_string(),
                    f(seg["bound_seconds"].as_f64().unwrap_or(0.0), 1),
                    f(seg["mean_update_stacks_in_flight"].as_f64().unwrap_or(0.0), 2),
                ]);
            }
            println!("{}", table.render());
        }
        for service in ["cloudformation", "sts"] {
            let ops = of_service(&d.requests, service);
            let throttled = of_service(&d.throttled, service);
            println!(
                "{}",
                op_table(&format!("rollout: {service} requests by operation"), &ops, &throttled, n).render()
            );
        }
        self.summary.push(format!(
            "rollout: {n} Tenants, M = {m}, B = {bake} s, S = {s} s: Complete {took:.1} s after the change against a bound of {bound_seconds:.1} s (efficiency {efficiency:.3}; mean update {mean:.2} s); peak {peak} UpdateStacks in flight; per tenant {:.2} CloudFormation and {:.2} STS requests",
            d.total("cloudformation") as f64 / n as f64,
            d.total("sts") as f64 / n as f64,
        ));

        let finished: Vec<f64> = {
            let mut ends: Vec<f64> = updates.iter().filter_map(|op| Some(op.finished? - t0)).collect();
            ends.sort_by(f64::total_cmp);
            ends
        };
        let finished_curve: Vec<[f64; 2]> =
            std::iter::once([0.0, 0.0]).chain(finished.iter().enumerate().map(|(i, t)| [*t, (i + 1) as f64])).collect();
        let per_service = |service: &str| per_tenant(&of_service(&d.requests, service), n);
        let mut results = json!({
            "tenants": n,
            "baseline": {"name": BASELINE, "regions": [REGION], "template": TEMPLATE, "change": format!("parameters.Version {} -> {}", VERSIONS[0], VERSIONS[1])},
            "rollout_spec": {"stages": stages, "maxConcurrent": m, "bakeSeconds": bake},
            "stages_applied": declared,
            "stages_note": if declared { "spec.rollout.stages as given" } else { "the installed CRD (the controller's own) does not declare spec.rollout.stages: the Baseline was applied without them; the bound still counts the stages' bakes" },
            "stage_sizes": sizes,
            "stack_operation_seconds": s,
            "stack_operation_p99_seconds": P99_IN_MEDIANS * s,
            "old_revision": old_revision,
            "new_revision": new_revision,
            "measured_from": "just before the Baseline's server-side apply to the first read of status.rollout.phase Complete for the new revision (the status read every 250 ms)",
            "time_to_complete_seconds": took,
            "bound_seconds": bound_seconds,
            "bound_formula": "sum over stages of (stage tenants x mean UpdateStack seconds / maxConcurrent) + bakeSeconds after every stage but the last; the mean measured from the simulator's record of this run's UpdateStack operations",
            "planned_bakes": planned_bakes,
            "observed_bakes": observed_bakes,
            "efficiency": efficiency,
            "update_stack": {
                "count": updates.len(),
                "tenants": accounts.len(),
                "unfinished": unfinished,
                "not_complete": failed,
                "mean_seconds": mean,
                "median_seconds": quantile(&seconds, 0.5),
                "p99_seconds": quantile(&seconds, 0.99),
                "max_seconds": seconds.last(),
                "how": "finished - started of every UpdateStack the simulator accepted after the change (GET /_silo/stack_operations)",
            },
            "update_stack_operations": {
                "columns": ["seconds after the change it started", "seconds after the change it finished", "account"],
                "rows": updates.iter().map(|op| json!([op.started - t0, op.finished.map(|t| t - t0), op.account])).collect::<Vec<_>>(),
            },
            "stack_operations_by_kind": kinds,
            "peak_update_stacks_in_flight": peak,
            "max_concurrent": m,
            "peak_within_max_concurrent": peak <= m,
            "requests_per_tenant_by_service": SERVICES.iter().map(|s| (s.to_string(), d.total(s) as f64 / n as f64)).collect::<BTreeMap<_, _>>(),
            "cloudformation_requests_per_tenant_by_operation": per_service("cloudformation"),
            "sts_requests_per_tenant_by_operation": per_service("sts"),
            "organizations_requests_per_tenant_by_operation": per_service("organizations"),
            "requests_by_operation": d.requests,
            "throttled_by_operation": d.throttled,
            "stretches": stretch_json,
            "phases": samples.iter().map(|s| json!([s.t, s.phase, s.step, s.current])).collect::<Vec<_>>(),
            "phases_columns": ["seconds after the change", "status.rollout.phase", "status.rollout.stage (or .wave)", "status.tenants.current"],
            "startup_pass_seconds": warmup,
            "startup_pass_capped": warmup_capped,
            "controller": usage_json(&usage, "sampled once a second from the controller's start to the end of the rollout"),
            "loadavg_start": loadavg_start,
            "loadavg_end": loadavg_end,
            "simulator_config": sim_config,
            "fleet_setup": "quotas off, stack operations of 0.1 s, roles assumable at once; a controller with the flags setup_flags made the fleet Ready and was stopped before the measured one started",
            "setup_flags": self.rollout_setup_flags(),
        });
        // Apart: one json! of everything is beyond the macro's recursion limit.
        results["mean_update_stacks_in_flight"] = json!(mean_flight);
        results["mean_update_stacks_in_flight_how"] = json!(
            "the UpdateStacks' seconds between the change and Complete over the time between them (the simulator's record)"
        );
        results["last_update_finished_seconds"] = json!(last_finished);
        results["complete_after_last_update_seconds"] = json!(took - last_finished);
        results["current_lag_seconds"] = current_lag;
        results["current_lag_how"] = json!(
            "for each k, the first read of the Baseline's status.tenants.current >= k minus the k-th UpdateStack's end in the simulator's record: how long a finished update takes to count in the controller's status (the status read every 250 ms)"
        );
        results["admission_lag_seconds"] = admission_lag;
        results["admission_lag_how"] = json!(
            "for the k of the last stage past its first maxConcurrent: the k-th UpdateStack's start minus the first read of status.tenants.current >= k - maxConcurrent: how soon the next tenant's update starts once the controller counts a slot free (meaningful for a sliding window, not for waves)"
        );
        let in_flight = in_flight_curve(&update_spans, took);
        let plot_spec = json!({
            "title": format!("rollout: {n} Tenants, M = {m}, B = {bake} s, S = {s} s (p99 {} s): Complete in {took:.0} s, bound {bound_seconds:.0} s", P99_IN_MEDIANS * s),
            "xlabel": "seconds since the change to the Baseline",
            "ylabel": "UpdateStack operations finished",
            "ylabel_right": "UpdateStack operations in flight",
            "series": [
                series("UpdateStacks finished", &finished_curve, "step", "left"),
                series(&format!("bound: stages at M / mean ({mean:.2} s), B per bake"), &ideal_curve(&sizes, mean, m, f64::from(bake)), "dashed", "left"),
                series(&format!("in flight (simulator), mean over {WINDOW_SECONDS} s"), &in_flight, "line", "right"),
            ],
            "vlines": [vline(bound_seconds, &format!("bound {bound_seconds:.0} s")), vline(took, &format!("Complete {took:.0} s"))],
        });

        // The second part, with the same controller: a revision that fails in stage 2 is
        // rolled back. Its results go into the JSON even when it fails.
        let rollback = self.rollout_rollback(&mut controller, &sizes, applied_stages, &new_revision).await;
        controller.stop();
        results["rollback"] = match &rollback {
            Ok(rollback) => rollback.clone(),
            Err(err) => json!({"applicable": true, "error": format!("{err:#}")}),
        };
        self.write(Scenario::Rollout, &args, results, plot_spec).await?;
        if peak > m {
            bail!("rollout: {peak} UpdateStacks were in flight at once, more than maxConcurrent {m}");
        }
        let problems: Vec<String> = rollback?["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(String::from))
            .collect();
        if !problems.is_empty() {
            bail!("rollout: the rollback of {FAILING_VERSION}: {}", problems.join("; "));
        }
        Ok(())
    }

    /// The rollback part (see the module's doc): after `complete` (v2's revision) is Complete,
    /// v3 fails for two tenants of stage 2 and is rolled back. Prints its table and summary
    /// line, and returns its results, with the checks that failed as `problems`. Not
    /// applicable when the installed CRD does not declare `spec.rollout.onFailure` (a
    /// controller from before rollbacks) or no stage after the canary takes a tenant.
    async fn rollout_rollback(
        &mut self,
        controller: &mut Controller,
        sizes: &[usize],
        stages: Option<&[Value]>,
        complete: &str,
    ) -> Result<Value> {
        let p = self.p.clone();
        let (n, m, bake) = (p.rollout_tenants, p.rollout_max_concurrent, p.rollout_bake_seconds);
        let not_applicable = |why: &str| json!({"applicable": false, "note": why});
        if !crd_declares(&self.client, "onFailure").await? {
            let why =
                "the installed CRD (the controller's own) does not declare spec.rollout.onFailure: no rollback part";
            eprintln!("silo-bench: rollout: {why}");
            self.summary.push(format!("rollout rollback: not applicable ({why})"));
            return Ok(not_applicable(why));
        }
        let Some((stage, positions)) = failing_positions(sizes) else {
            let why = "no stage after the canary takes a tenant of its own: no rollback part";
            self.summary.push(format!("rollout rollback: not applicable ({why})"));
            return Ok(not_applicable(why));
        };
        let names = fleet::names("ro", n);
        let failing = names[positions.clone()].to_vec();
        let rule = json!({
            "operations": ["UpdateStack"],
            "parameters": {"TenantName": format!("^({})$", failing.join("|")), "Version": format!("^{FAILING_VERSION}$")},
            "reason": FAILURE_REASON,
        });
        self.sim.configure(json!({"stack_failures": [rule]})).await?;
        eprintln!(
            "silo-bench: rollout: changing {BASELINE} to {FAILING_VERSION} with onFailure Rollback; its UpdateStack fails for {} (stage {stage})",
            failing.join(", ")
        );

        // The change.
        let baselines = fleet::baselines(&self.client);
        let usage_before = controller.usage();
        let before = Counters::read(&self.sim).await?;
        let t0 = wall_clock();
        let started = Instant::now();
        let mut doc = baseline_doc(FAILING_VERSION, stages, m, bake);
        doc["spec"]["rollout"]["onFailure"] = json!("Rollback");
        let patched = baselines.patch(BASELINE, &PatchParams::apply("silo-bench").force(), &Patch::Apply(&doc)).await?;
        let generation = patched.metadata.generation.unwrap_or(0);

        // Until RolledBack for the new revision; each change of the phase (or of how far the
        // rollback sent tenants back) is kept.
        let mut phases: Vec<Value> = vec![];
        let mut rolling_back: Option<f64> = None;
        let timeout = p.timeout(n).as_secs_f64();
        let mut last_print = 0.0;
        let (took, status) = loop {
            controller.check()?;
            let status = baselines.get(BASELINE).await?.data["status"].clone();
            let t = started.elapsed().as_secs_f64();
            let rollout = &status["rollout"];
            let revision = status["revision"].as_str().unwrap_or_default();
            let observed = status["observedGeneration"].as_i64().unwrap_or(0) >= generation;
            let phase = rollout["phase"].as_str().unwrap_or("-");
            let current = status["tenants"]["current"].as_u64().unwrap_or(0);
            if observed
                && !revision.is_empty()
                && revision != complete
                && rollout["revision"].as_str() == Some(revision)
            {
                let through = &rollout["rollback"]["through"];
                if phases.last().is_none_or(|last| last[1] != phase || last[3] != *through) {
                    phases.push(json!([t, phase, rollout["stage"], through, current]));
                }
                match phase {
                    "RollingBack" => {
                        rolling_back.get_or_insert(t);
                    }
                    "RolledBack" => break (t, status),
                    "Complete" | "Halted" => bail!(
                        "rollout: revision {revision} ({FAILING_VERSION}) is {phase}, not rolled back: the simulator was to fail its UpdateStack for {}; the Baseline's status: {status}",
                        failing.join(", ")
                    ),
                    _ => {}
                }
            }
            if t - last_print >= 15.0 {
                eprintln!(
                    "silo-bench: rollout: {t:.0} s after the {FAILING_VERSION} change: {revision} {phase}, {current}/{n} Tenants current"
                );
                last_print = t;
            }
            if t > timeout {
                bail!(
                    "rollout: {FAILING_VERSION} not RolledBack after {t:.0} s (BENCH_TIMEOUT_SECONDS); the Baseline's status: {status}; last lines of {}:\n{}",
                    controller.log().display(),
                    tail(&controller.log(), 30)
                );
            }
            tokio::time::sleep(POLL).await;
        };
        let d = Counters::read(&self.sim).await?.since(&before);
        let cpu_seconds = controller.usage().cpu_seconds - usage_before.cpu_seconds;
        let failing_revision = status["revision"].as_str().unwrap_or_default().to_string();
        let rollback = status["rollout"]["rollback"].clone();
        eprintln!(
            "silo-bench: rollout: revision {failing_revision} ({FAILING_VERSION}) RolledBack {took:.1} s after the change"
        );

        // The simulator's record since the change: who was touched, who failed, who came back.
        let ops: Vec<StackOperation> =
            self.sim.stack_operations().await?.into_iter().filter(|op| op.started >= t0).collect();
        let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
        for op in &ops {
            *kinds.entry(op.operation.clone()).or_default() += 1;
        }
        let updates: Vec<&StackOperation> = ops.iter().filter(|op| op.operation == "UpdateStack").collect();
        let peak = most_in_flight(&ops, "UpdateStack", t0);
        // Every touched tenant back on v2, as its status reports its stacks (read again for up
        // to SETTLE); every other one still admitted to v2 (v3 may admit a tenant that is sent
        // back before it sends any update).
        let deadline = Instant::now() + SETTLE;
        let (counts, tenant_of, not_back_now) = loop {
            let tenants = self.tenants().list(&Default::default()).await?.items;
            let tenant_of: BTreeMap<String, String> = tenants
                .iter()
                .filter_map(|t| Some((t.data["status"]["accountId"].as_str()?.to_string(), t.name_any())))
                .collect();
            let counts = touched(&updates, &tenant_of, n);
            // (name, touched, why not back)
            let not_back_now: Vec<(String, bool, String)> = tenants
                .iter()
                .filter_map(|t| {
                    let name = t.name_any();
                    if counts.touched.contains(&name) {
                        return Some((name, true, not_back(&t.data, complete, VERSIONS[1])?));
                    }
                    let admitted = t.data["status"]["baseline"]["admittedRevision"].as_str().unwrap_or("none");
                    (admitted != complete)
                        .then(|| (name, false, format!("never updated, admitted to revision {admitted}")))
                })
                .collect();
            if not_back_now.is_empty() || Instant::now() > deadline {
                break (counts, tenant_of, not_back_now);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        let restored_by_cloudformation: Vec<&String> =
            counts.failed.iter().filter(|name| !counts.sent_back.contains(name)).collect();
        let through = rollback["through"].as_str();
        let beyond = beyond_reach(&counts.touched, &names, sizes[stage], through);
        let baseline_tenants = rollback["tenants"].as_u64();
        let touched_back = counts.touched.len() - not_back_now.iter().filter(|(_, touched, _)| *touched).count();
        let not_back_now: Vec<String> = not_back_now.iter().map(|(name, _, why)| format!("{name} ({why})")).collect();
        let mut problems: Vec<String> = vec![];
        if !not_back_now.is_empty() {
            problems.push(format!(
                "{} Tenants do not run {} (revision {complete}) again {} s after RolledBack: {}",
                not_back_now.len(),
                VERSIONS[1],
                SETTLE.as_secs(),
                not_back_now.join(", ")
            ));
        }
        for (field, value) in
            [("lastCompleteRevision", &status["lastCompleteRevision"]), ("rollout.rollback.to", &rollback["to"])]
        {
            if value.as_str() != Some(complete) {
                problems.push(format!(
                    "the Baseline's status.{field} is {value}, not {}'s revision {complete}",
                    VERSIONS[1]
                ));
            }
        }
        if !beyond.is_empty() {
            problems.push(format!(
                "{} Tenants were updated beyond the rollback's reach (past stage {stage}, or past rollback.through {}): {}",
                beyond.len(),
                through.unwrap_or("-"),
                beyond.join(", ")
            ));
        }
        if peak > m {
            problems.push(format!("{peak} UpdateStacks were in flight at once, more than maxConcurrent {m}"));
        }

        let mut table = Table::new(
            format!(
                "rollout: rollback of a revision failing in stage {stage} ({} -> {FAILING_VERSION} with onFailure Rollback; UpdateStack fails for {})",
                VERSIONS[1],
                failing.join(", ")
            ),
            &["", "value"],
        );
        table
            .row(vec!["tenants touched (an UpdateStack after the change)".into(), counts.touched.len().to_string()])
            .row(vec!["failed (UpdateStack rolled back by CloudFormation)".into(), counts.failed.len().to_string()])
            .row(vec![format!("sent back (updated back to {})", VERSIONS[1]), counts.sent_back.len().to_string()])
            .row(vec![
                "failed, back by CloudFormation's rollback alone".into(),
                restored_by_cloudformation.len().to_string(),
            ])
            .row(vec!["never touched".into(), counts.never.to_string()])
            .row(vec![
                "status.rollout.rollback.tenants (the Baseline's count)".into(),
                baseline_tenants.map_or("-".into(), |t| t.to_string()),
            ])
            .row(vec![
                format!("touched tenants on {} again", VERSIONS[1]),
                format!("{touched_back} / {}", counts.touched.len()),
            ])
            .row(vec![
                "time from the change to rollout phase RollingBack (s)".into(),
                rolling_back.map_or("-".into(), |t| f(t, 1)),
            ])
            .row(vec!["time from the change to rollout phase RolledBack (s)".into(), f(took, 1)])
            .row(vec!["UpdateStack operations".into(), updates.len().to_string()])
            .row(vec![format!("peak UpdateStacks in flight (M = {m})"), peak.to_string()])
            .row(vec!["cloudformation requests".into(), d.total("cloudformation").to_string()])
            .row(vec!["CPU seconds of the controller".into(), f(cpu_seconds, 1)]);
        println!("{}", table.render());
        self.summary.push(format!(
            "rollout rollback: {FAILING_VERSION} failing for {} of stage {stage}: RolledBack {took:.1} s after the change; {} tenants touched ({} failed, {} sent back), {} never touched, the Baseline counts {}; peak {peak} UpdateStacks in flight; {}",
            failing.len(),
            counts.touched.len(),
            counts.failed.len(),
            counts.sent_back.len(),
            counts.never,
            baseline_tenants.map_or("-".into(), |t| t.to_string()),
            if problems.is_empty() { format!("every touched tenant on {} again", VERSIONS[1]) } else { "FAILED".into() },
        ));

        let mut results = json!({
            "applicable": true,
            "change": format!("parameters.Version {} -> {FAILING_VERSION} with spec.rollout.onFailure Rollback (failureTolerance at its default 0; stages, maxConcurrent and bakeSeconds as for the rollout)", VERSIONS[1]),
            "failing_stage": stage,
            "failing_stage_tenants": [sizes[stage - 1] + 1, sizes[stage]],
            "failing_tenants": failing,
            "failing_tenants_how": "two tenants of stage 2 by name: its 4th and 5th when it takes that many, else its last two (the next stage that takes anyone when stage 2 takes nobody new)",
            "simulator_rule": rule,
            "revision": failing_revision,
            "back_to": complete,
            "last_complete_revision": status["lastCompleteRevision"],
            "measured_from": "just before the Baseline's server-side apply to the first read of status.rollout.phase RolledBack for the new revision (the status read every 250 ms)",
            "time_to_rolling_back_seconds": rolling_back,
            "time_to_rolled_back_seconds": took,
            "tenants_touched": counts.touched.len(),
            "tenants_failed": counts.failed.len(),
            "tenants_sent_back": counts.sent_back.len(),
            "tenants_failed_back_by_cloudformation_alone": restored_by_cloudformation.len(),
            "tenants_never_touched": counts.never,
            "tenants_updated_more_than_twice": counts.more_than_twice,
            "baseline_rollback_tenants": baseline_tenants,
            "baseline_rollback": rollback,
            "baseline_failed": status["rollout"]["failed"],
            "touched": counts.touched,
            "failed": counts.failed,
            "sent_back": counts.sent_back,
            "how_counted": "from the simulator's record of UpdateStacks since the change (it holds no parameters): every tenant ran the last complete revision then, so a tenant's first UpdateStack is towards the failing revision and a later one is back; failed: the first ended in a CloudFormation rollback",
            "not_back": not_back_now,
            "beyond_reach": beyond,
            "peak_update_stacks_in_flight": peak,
            "max_concurrent": m,
            "peak_within_max_concurrent": peak <= m,
        });
        // Apart: one json! of everything is beyond the macro's recursion limit.
        results["update_stack_operations"] = json!({
            "columns": ["seconds after the change it started", "seconds after the change it finished", "tenant", "result"],
            "rows": updates.iter().map(|op| json!([op.started - t0, op.finished.map(|t| t - t0), tenant_of.get(&op.account).unwrap_or(&op.account), op.result])).collect::<Vec<_>>(),
        });
        results["stack_operations_by_kind"] = json!(kinds);
        results["requests_by_operation"] = json!(d.requests);
        results["throttled_by_operation"] = json!(d.throttled);
        results["phases"] = json!(phases);
        results["phases_columns"] = json!([
            "seconds after the change",
            "status.rollout.phase",
            "status.rollout.stage",
            "status.rollout.rollback.through",
            "status.tenants.current"
        ]);
        results["controller_cpu_seconds"] = json!(cpu_seconds);
        results["problems"] = json!(problems);
        Ok(results)
    }

    /// `silo run`'s flags for making the fleet: the user's, with large budgets.
    fn rollout_setup_flags(&self) -> Vec<String> {
        let names: Vec<&str> = SETUP_FLAGS.iter().map(|(flag, _)| *flag).collect();
        let mut args = without_flags(&self.p.user_flags(), &names);
        for (flag, value) in SETUP_FLAGS {
            if self.help.has_flag(flag) {
                args.extend([flag.to_string(), value.to_string()]);
            }
        }
        args
    }

    /// N Ready Tenants on the Baseline at its first version, and no controller running.
    /// Returns the simulator's default configuration, read before the fleet's.
    async fn rollout_fleet(&mut self, n: usize, stages: Option<&[Value]>) -> Result<Value> {
        let p = self.p.clone();
        self.reset_world().await?;
        let defaults = self.sim.config().await?;
        let mut config = setup::no_quotas(0.0);
        config["unassumable_roles_seconds"] = json!(0);
        config["stack_operation_seconds"] = json!(0.1);
        self.configure(config).await?;
        fleet::create_ou(&self.sim).await?;
        let doc = baseline_doc(VERSIONS[0], stages, p.rollout_max_concurrent, p.rollout_bake_seconds);
        fleet::apply_all(&fleet::baselines(&self.client), vec![doc], 1).await?;
        let names = fleet::names("ro", n);
        let docs = names.iter().map(|name| fleet::tenant(name, Profile::Bare, Some(BASELINE))).collect();
        fleet::apply_all(&self.tenants(), docs, p.apply_concurrency).await?;
        let started = Instant::now();
        let mut controller = self.start_controller(&self.rollout_setup_flags(), "rollout-setup.silo.log").await?;
        self.wait_all_ready(&mut controller, n, "rollout setup").await?;
        // Every Tenant on the first revision, the Baseline's rollout Complete.
        let baselines = fleet::baselines(&self.client);
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            controller.check()?;
            let status = baselines.get(BASELINE).await?.data["status"].clone();
            if status["rollout"]["phase"] == "Complete" && status["tenants"]["current"].as_u64() == Some(n as u64) {
                break;
            }
            if Instant::now() > deadline {
                bail!("rollout setup: the Baseline is not Complete with {n} Tenants current: {status}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        controller.stop();
        eprintln!("silo-bench: rollout: {n} Tenants Ready on {BASELINE} in {:.0} s", started.elapsed().as_secs_f64());
        Ok(defaults)
    }

    /// Waits until the controller's start-up pass is over: no AWS request for
    /// [`QUIET_SECONDS`], at least 10 s after its start, at the latest
    /// [`QUIET_AT_MOST_SECONDS`]. Returns the seconds since its start, and whether the cap cut
    /// the wait short.
    async fn rollout_quiet(&self, controller: &mut Controller) -> Result<(f64, bool)> {
        let start = Counters::read(&self.sim).await?;
        let (mut last_total, mut last_change) = (0, 0.0);
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            controller.check()?;
            let t = controller.elapsed();
            let total = Counters::read(&self.sim).await?.since(&start).total("");
            if total != last_total {
                (last_total, last_change) = (total, t);
            }
            if t >= 10.0 && t - last_change >= QUIET_SECONDS {
                return Ok((t, false));
            }
            if t >= QUIET_AT_MOST_SECONDS {
                return Ok((t, true));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use std::collections::BTreeMap;

    use silo_testenv::awssim::StackOperation;

    use super::{
        Sample, admission_lags, beyond_reach, bound, current_lags, failing_positions, ideal_curve, mean_in_flight,
        not_back, quantile, stage_sizes, starts_per_stretch, stretches, touched,
    };

    #[test]
    fn stages_resolve_as_the_api_documents() {
        let stages = [json!(1), json!("1%"), json!("10%"), json!("100%")];
        assert_eq!(stage_sizes(&stages, 1000), vec![1, 10, 100, 1000]);
        assert_eq!(stage_sizes(&stages, 200), vec![1, 2, 20, 200]);
        // A stage no larger than the one before still bakes; the last is everyone.
        assert_eq!(stage_sizes(&stages, 30), vec![1, 1, 3, 30]);
        assert_eq!(stage_sizes(&[json!(5)], 30), vec![5, 30], "the last stage is implied");
    }

    #[test]
    fn the_bound_is_the_window_full_plus_the_bakes() {
        // 1,000 tenants at 4 s each, 10 at a time: 400 s; three bakes of 10 s.
        assert_eq!(bound(&[1, 10, 100, 1000], 4.0, 10, 10.0), 430.0);
        let curve = ideal_curve(&[1, 10, 100, 1000], 4.0, 10, 10.0);
        let last = curve.last().copied().unwrap_or_default();
        assert!((last[0] - 430.0).abs() < 1e-9 && last[1] == 1000.0, "{last:?}");
        assert_eq!(curve.len(), 1 + 4 + 3);
    }

    #[test]
    fn stretches_are_the_work_between_bakes() {
        let sample = |t: f64, phase: &str, step: u64| Sample { t, phase: phase.into(), step: Some(step), current: 0 };
        let samples = [
            sample(2.0, "Progressing", 0),
            sample(10.0, "Baking", 0),
            sample(20.0, "Baking", 1), // an empty stage bakes too
            sample(30.0, "Progressing", 2),
            sample(31.0, "Progressing", 3),
            sample(40.0, "Baking", 3),
            sample(50.0, "Progressing", 4),
            sample(60.0, "Complete", 4),
        ];
        let spans = stretches(&samples, 60.0);
        let shape: Vec<(bool, f64, f64)> = spans.iter().map(|s| (s.baking, s.start, s.end)).collect();
        assert_eq!(
            shape,
            [
                (false, 0.0, 10.0),
                (true, 10.0, 20.0),
                (true, 20.0, 30.0),
                (false, 30.0, 40.0),
                (true, 40.0, 50.0),
                (false, 50.0, 60.0)
            ]
        );
        // An update seen to start just before the bench saw its stage open belongs to it.
        let starts = [0.5, 29.9, 30.5, 35.0, 49.8, 51.0];
        assert_eq!(starts_per_stretch(&spans, &starts), [1, 0, 0, 3, 0, 2]);
    }

    #[test]
    fn in_flight_is_time_inside_over_length() {
        let spans = [(0.0, 4.0), (2.0, 6.0), (8.0, 20.0)];
        assert!((mean_in_flight(&spans, 0.0, 10.0) - 1.0).abs() < 1e-9);
        assert!((mean_in_flight(&spans, 2.0, 4.0) - 2.0).abs() < 1e-9);
        assert_eq!(mean_in_flight(&spans, 5.0, 5.0), 0.0);
    }

    #[test]
    fn lags_follow_the_status_behind_the_simulator() {
        let sample = |t: f64, current: u64| Sample { t, phase: "Progressing".into(), step: Some(1), current };
        let samples = [sample(1.0, 0), sample(5.0, 2), sample(9.0, 3), sample(12.0, 4)];
        // Updates finished at 2, 3, 6 and 10; started at 0, 0.5, 5.1 and 9.2 (M = 2).
        assert_eq!(current_lags(&samples, &[2.0, 3.0, 6.0, 10.0]), [3.0, 2.0, 3.0, 2.0]);
        let lags = admission_lags(&samples, &[0.0, 0.5, 5.1, 9.2], 3, 2);
        assert_eq!(lags.len(), 2);
        // The third started 0.1 s after the status showed the first current; the fourth 4.2 s.
        assert!((lags[0] - 0.1).abs() < 1e-9 && (lags[1] - 4.2).abs() < 1e-9, "{lags:?}");
    }

    #[test]
    fn the_failing_tenants_are_two_of_stage_2() {
        let stages = [json!(1), json!("1%"), json!("10%"), json!("100%")];
        // Stage 2 of 1,000 is the 11th to the 100th tenant: its 4th and 5th fail.
        assert_eq!(failing_positions(&stage_sizes(&stages, 1000)), Some((2, 13..15)));
        assert_eq!(failing_positions(&stage_sizes(&stages, 200)), Some((2, 5..7)));
        // [1, 1, 3, 30]: stage 2 is the 2nd and 3rd tenants, its last two.
        assert_eq!(failing_positions(&stage_sizes(&stages, 30)), Some((2, 1..3)));
        // A stage 2 of one tenant: that one.
        assert_eq!(failing_positions(&[1, 1, 2, 30]), Some((2, 1..2)));
        // A stage 2 with nobody new: the next stage that has someone.
        assert_eq!(failing_positions(&[1, 2, 2, 30]), Some((3, 5..7)));
        // Two stages: the one after the canary.
        assert_eq!(failing_positions(&stage_sizes(&[json!(5)], 30)), Some((1, 8..10)));
        assert_eq!(failing_positions(&[1, 1]), None, "one tenant: nobody after the canary");
    }

    fn update(account: &str, started: f64, result: &str) -> StackOperation {
        StackOperation {
            account: account.into(),
            region: "us-east-1".into(),
            stack_name: "silo-baseline".into(),
            operation: "UpdateStack".into(),
            started,
            finished: Some(started + 1.0),
            result: Some(result.into()),
        }
    }

    #[test]
    fn the_first_update_is_there_and_a_later_one_back() {
        let tenant_of: BTreeMap<String, String> =
            [("111", "ro-00001"), ("222", "ro-00002"), ("333", "ro-00003"), ("444", "ro-00004")]
                .into_iter()
                .map(|(a, n)| (a.to_string(), n.to_string()))
                .collect();
        let ops = [
            update("222", 5.0, "UPDATE_ROLLBACK_COMPLETE"),
            update("111", 4.0, "UPDATE_COMPLETE"), // out of order: sorted by start
            update("111", 1.0, "UPDATE_COMPLETE"),
            update("333", 5.0, "UPDATE_ROLLBACK_COMPLETE"),
            update("333", 9.0, "UPDATE_COMPLETE"),
            update("444", 2.0, "UPDATE_COMPLETE"),
            update("444", 3.0, "UPDATE_COMPLETE"),
            update("444", 8.0, "UPDATE_COMPLETE"),
        ];
        let refs: Vec<&StackOperation> = ops.iter().collect();
        let counts = touched(&refs, &tenant_of, 30);
        assert_eq!(counts.touched, ["ro-00001", "ro-00002", "ro-00003", "ro-00004"]);
        assert_eq!(counts.failed, ["ro-00002", "ro-00003"]);
        assert_eq!(counts.sent_back, ["ro-00001", "ro-00003", "ro-00004"]);
        assert_eq!(counts.more_than_twice, ["ro-00004"]);
        assert_eq!(counts.never, 26);
        // A later update that failed does not make the tenant a failed one: only its first.
        let ops = [update("111", 1.0, "UPDATE_COMPLETE"), update("111", 2.0, "UPDATE_ROLLBACK_COMPLETE")];
        let refs: Vec<&StackOperation> = ops.iter().collect();
        assert!(touched(&refs, &tenant_of, 4).failed.is_empty());
        // An account no tenant reports is named by its id.
        let ops = [update("999", 1.0, "UPDATE_COMPLETE")];
        let refs: Vec<&StackOperation> = ops.iter().collect();
        assert_eq!(touched(&refs, &tenant_of, 4).touched, ["account 999"]);
    }

    #[test]
    fn a_tenant_is_back_when_admitted_to_and_running_the_revision_and_ready() {
        let tenant = |admitted: &str, version: &str, stack_revision: &str, ready: &str| {
            json!({"status": {
                "baseline": {
                    "admittedRevision": admitted,
                    "revision": "t-v2",
                    "stacks": [{"region": "us-east-1", "revision": stack_revision, "outputs": {"Version": version}}],
                },
                "conditions": [{"type": "Ready", "status": ready}],
            }})
        };
        assert_eq!(not_back(&tenant("r2", "v2", "t-v2", "True"), "r2", "v2"), None);
        let why = |t: serde_json::Value| not_back(&t, "r2", "v2").unwrap_or_default();
        assert!(why(tenant("r3", "v2", "t-v2", "True")).contains("admitted to revision r3"));
        assert!(why(tenant("r2", "v3", "t-v2", "True")).contains("runs Version v3"));
        assert!(why(tenant("r2", "v2", "t-v3", "True")).contains("revision t-v3"));
        assert_eq!(why(tenant("r2", "v2", "t-v2", "False")), "not Ready");
        assert_eq!(why(json!({"status": {"baseline": {"admittedRevision": "r2"}}})), "no stack in its status");
        assert!(why(json!({})).contains("admitted to revision none"));
    }

    #[test]
    fn beyond_reach_is_past_the_failing_stage_or_rollback_through() {
        let names: Vec<String> = (1..=30).map(|i| format!("ro-{i:05}")).collect();
        let touched: Vec<String> = ["ro-00001", "ro-00002", "ro-00003"].map(String::from).to_vec();
        assert!(beyond_reach(&touched, &names, 3, Some("ro-00003")).is_empty());
        assert!(beyond_reach(&touched, &names, 3, None).is_empty());
        assert_eq!(beyond_reach(&touched, &names, 2, Some("ro-00003")), ["ro-00003"], "past the stage");
        assert_eq!(beyond_reach(&touched, &names, 3, Some("ro-00002")), ["ro-00003"], "past through");
        let stranger = vec!["account 999".to_string()];
        assert_eq!(beyond_reach(&stranger, &names, 3, None), ["account 999"], "not a tenant of the fleet");
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), Some(50.0));
        assert_eq!(quantile(&values, 0.99), Some(99.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
