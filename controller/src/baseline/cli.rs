//! `silo rollout`: a Baseline's rollout from a terminal or a CI job, as `kubectl argo rollouts`
//! gives Deployments. The binary installed as `kubectl-silo` on the PATH is the kubectl plugin
//! `kubectl silo rollout ...`.
//!
//! Each command reads or writes the Baseline alone (and reads its revisions): `pause` and
//! `resume` set `spec.rollout.paused`; `promote` annotates the Baseline with the revision whose
//! remaining bakes the controller skips ([`PROMOTE_ANNOTATION`]); `undo` writes a stored
//! revision's content back into the spec, which makes a revision with that content, rolled out
//! like any other. With GitOps, change the source instead: these commands patch the live
//! object, and the next sync puts the source's spec back.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};

use super::{Deployed, revisions, rollout};
use crate::{
    api::{Baseline, Tenant},
    contract::PROMOTE_ANNOTATION,
};

/// The field manager of the command line's writes.
const FIELD_MANAGER: &str = "silo-cli";

#[derive(Args, Debug)]
pub struct RolloutArgs {
    #[command(subcommand)]
    pub command: RolloutCommand,
    /// The namespace the controller runs in, where the Baselines' revisions are kept.
    #[arg(long, global = true, env = "POD_NAMESPACE", default_value = "silo-system")]
    pub namespace: String,
}

#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Where the Baseline's rollout stands. Exit status: 0 complete; 2 halted or rolled back;
    /// 3 paused or previewing (a person must act); 4 not complete yet (with --watch: not
    /// within --timeout).
    Status {
        baseline: String,
        /// Wait until the rollout is complete, halted or paused, printing each change.
        #[arg(long, short)]
        watch: bool,
        /// With --watch, how long to wait (like 90s, 10m, 1h); 0 waits for ever.
        #[arg(long, value_parser = parse_duration, default_value = "0s")]
        timeout: Duration,
    },
    /// Admit nobody else to the new revision; tenants in flight finish.
    Pause { baseline: String },
    /// Go on after a pause.
    Resume { baseline: String },
    /// Skip the bakes left in the rollout of the Baseline's newest revision.
    Promote { baseline: String },
    /// Roll out a stored revision's content again: by default the last revision that
    /// completed (or, when the newest is complete, the one before it).
    Undo {
        baseline: String,
        /// The revision number, as `history` lists it.
        #[arg(long)]
        to_revision: Option<i64>,
    },
    /// The Baseline's stored revisions, oldest first, with how many tenants run each.
    History { baseline: String },
}

/// Where a rollout stands for `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Complete,
    /// Halted, rolling back, or rolled back.
    Halted,
    /// Paused or previewing: a person must act.
    Paused,
    InProgress,
}

impl Verdict {
    /// The exit status `silo rollout status` ends with.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Complete => 0,
            Verdict::Halted => 2,
            Verdict::Paused => 3,
            Verdict::InProgress => 4,
        }
    }
}

/// Judges a Baseline's status: a status that has not seen the latest spec is in progress. Pure.
pub fn verdict(baseline: &Baseline) -> Verdict {
    let Some(status) = &baseline.status else { return Verdict::InProgress };
    let Some(rollout) = status.rollout.as_ref().filter(|_| status.observed_generation == baseline.metadata.generation)
    else {
        return Verdict::InProgress;
    };
    match rollout::Phase::of(rollout) {
        Some(rollout::Phase::Complete) => Verdict::Complete,
        Some(rollout::Phase::Halted | rollout::Phase::RollingBack | rollout::Phase::RolledBack) => Verdict::Halted,
        Some(rollout::Phase::Paused | rollout::Phase::Previewing) => Verdict::Paused,
        _ => Verdict::InProgress,
    }
}

/// One line about a Baseline's rollout. Pure.
pub fn summary(baseline: &Baseline) -> String {
    let name = baseline.name_any();
    let Some(status) = &baseline.status else { return format!("{name}: no status yet") };
    let Some(rollout) = &status.rollout else { return format!("{name}: no rollout recorded yet") };
    let counts = &status.tenants;
    let mut line = format!(
        "{name}: revision {} {} (stage {}): {} updated, {} in progress, {} failed, {} waiting",
        rollout.revision,
        rollout.phase,
        rollout.stage,
        counts.current,
        counts.in_progress,
        counts.failed,
        counts.waiting
    );
    if let Some(back) = &rollout.rollback {
        line.push_str(&format!("; rolling back {} tenants to revision {}", back.tenants, back.to));
    }
    for failed in &rollout.failed {
        line.push_str(&format!("\n  failed: {} ({})", failed.name, failed.reason));
    }
    line
}

/// Parses durations like `90s`, `10m`, `1h` or `30` (seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 90s, 10m or 1h"))?;
    let seconds = match unit {
        "" | "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        _ => return Err(format!("{text:?} is not a duration like 90s, 10m or 1h")),
    };
    Ok(Duration::from_secs(seconds))
}

/// Runs one `silo rollout` command; returns the exit status.
pub async fn run(args: RolloutArgs) -> anyhow::Result<i32> {
    let client = Client::try_default().await.context("no Kubernetes client configuration")?;
    let baselines = Api::<Baseline>::all(client.clone());
    let get = |name: &str| {
        let api = baselines.clone();
        let name = name.to_string();
        async move { api.get(&name).await.with_context(|| format!("Baseline {name}")) }
    };
    let revisions = Api::<ControllerRevision>::namespaced(client.clone(), &args.namespace);
    match args.command {
        RolloutCommand::Status { baseline, watch, timeout } => {
            let current = get(&baseline).await?;
            println!("{}", summary(&current));
            let verdict = verdict(&current);
            if !watch || verdict != Verdict::InProgress {
                return Ok(verdict.exit_code());
            }
            let waited = wait(&baselines, &baseline);
            let verdict = if timeout.is_zero() {
                waited.await?
            } else {
                match tokio::time::timeout(timeout, waited).await {
                    Ok(verdict) => verdict?,
                    Err(_) => {
                        eprintln!("not complete within {}s", timeout.as_secs());
                        Verdict::InProgress
                    }
                }
            };
            Ok(verdict.exit_code())
        }
        RolloutCommand::Pause { baseline } => {
            patch(&baselines, &baseline, serde_json::json!({"spec": {"rollout": {"paused": true}}})).await?;
            println!("{baseline}: paused; tenants in flight finish");
            Ok(0)
        }
        RolloutCommand::Resume { baseline } => {
            patch(&baselines, &baseline, serde_json::json!({"spec": {"rollout": {"paused": false}}})).await?;
            println!("{baseline}: resumed");
            Ok(0)
        }
        RolloutCommand::Promote { baseline } => {
            let current = get(&baseline).await?;
            let Some(revision) = current.status.as_ref().and_then(|s| s.revision.clone()) else {
                bail!("Baseline {baseline} has no revision recorded yet");
            };
            let annotation = serde_json::json!({"metadata": {"annotations": {PROMOTE_ANNOTATION: revision}}});
            patch(&baselines, &baseline, annotation).await?;
            println!("{baseline}: revision {revision} promoted: the bakes left in its rollout are skipped");
            Ok(0)
        }
        RolloutCommand::Undo { baseline, to_revision } => {
            let current = get(&baseline).await?;
            let stored = stored(&revisions, &baseline).await?;
            let (number, deployed) = undo_target(&current, &stored, to_revision)?;
            patch(&baselines, &baseline, serde_json::json!({"spec": spec_of(&deployed)})).await?;
            println!("{baseline}: rolling out the content of revision {number} again");
            Ok(0)
        }
        RolloutCommand::History { baseline } => {
            let current = get(&baseline).await?;
            let stored = stored(&revisions, &baseline).await?;
            let tenants = Api::<Tenant>::all(client).list(&ListParams::default()).await?.items;
            print!("{}", history(&current, &stored, &tenants));
            Ok(0)
        }
    }
}

/// Follows the Baseline until its rollout is no longer in progress, printing each change.
async fn wait(api: &Api<Baseline>, name: &str) -> anyhow::Result<Verdict> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut changes = watcher(api.clone(), config).default_backoff().applied_objects().boxed();
    let mut last = String::new();
    while let Some(baseline) = changes.try_next().await? {
        let line = summary(&baseline);
        if line != last {
            println!("{line}");
            last = line;
        }
        let verdict = verdict(&baseline);
        if verdict != Verdict::InProgress {
            return Ok(verdict);
        }
    }
    bail!("the watch of Baseline {name} ended")
}

async fn patch(api: &Api<Baseline>, name: &str, patch: serde_json::Value) -> anyhow::Result<()> {
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    api.patch(name, &params, &Patch::Merge(&patch)).await.with_context(|| format!("Baseline {name}"))?;
    Ok(())
}

/// A Baseline's stored revisions, oldest first: number, hash, content.
async fn stored(api: &Api<ControllerRevision>, baseline: &str) -> anyhow::Result<Vec<(i64, String, Deployed)>> {
    let selector = format!("{}={baseline}", revisions::BASELINE_LABEL);
    let mut stored: Vec<(i64, String, Deployed)> = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter_map(|object| {
            let hash = object.name_any().strip_prefix(&format!("{baseline}-"))?.to_string();
            Some((object.revision.unwrap_or_default(), hash, revisions::deployed(&object)?))
        })
        .collect();
    stored.sort_by_key(|(number, _, _)| *number);
    Ok(stored)
}

/// The revision `undo` rolls out again: `--to-revision`, else the last complete one, else
/// (the newest is complete) the one stored before the newest. Pure.
fn undo_target(
    baseline: &Baseline,
    stored: &[(i64, String, Deployed)],
    to_revision: Option<i64>,
) -> anyhow::Result<(i64, Deployed)> {
    let status = baseline.status.clone().unwrap_or_default();
    let newest = status.revision.unwrap_or_default();
    let found = match to_revision {
        Some(number) => stored.iter().find(|(n, _, _)| *n == number),
        None => match status.last_complete_revision.filter(|last| *last != newest) {
            Some(last) => stored.iter().find(|(_, hash, _)| *hash == last),
            None => stored.iter().rev().find(|(_, hash, _)| *hash != newest),
        },
    };
    let Some((number, _, deployed)) = found else {
        bail!("no such revision of Baseline {} is stored: see `silo rollout history`", baseline.name_any());
    };
    Ok((*number, deployed.clone()))
}

/// The spec fields (a merge patch) that deploy `deployed`. Pure.
fn spec_of(deployed: &Deployed) -> serde_json::Value {
    serde_json::json!({
        "template": deployed.template,
        "templateURL": deployed.template_url,
        "parameters": deployed.parameters,
        "regions": deployed.regions,
        "stackName": deployed.stack_name,
        "capabilities": deployed.capabilities,
        "terminationProtection": deployed.termination_protection,
    })
}

/// `history`'s table. Pure.
fn history(baseline: &Baseline, stored: &[(i64, String, Deployed)], tenants: &[Tenant]) -> String {
    let name = baseline.name_any();
    let status = baseline.status.clone().unwrap_or_default();
    let mut running: BTreeMap<String, usize> = BTreeMap::new();
    for tenant in tenants {
        let on = tenant.status.as_ref().and_then(|s| s.baseline.as_ref()).filter(|b| b.name == name);
        if let Some(revision) = on.and_then(|b| b.admitted_revision.clone()) {
            *running.entry(revision).or_default() += 1;
        }
    }
    let mut table = format!("{:<9} {:<14} {:>8}  NOTE\n", "REVISION", "HASH", "TENANTS");
    for (number, hash, _) in stored {
        let mut notes = vec![];
        if status.revision.as_deref() == Some(hash.as_str()) {
            let phase = status.rollout.as_ref().map(|r| r.phase.clone()).unwrap_or_default();
            notes.push(format!("newest ({phase})"));
        }
        if status.last_complete_revision.as_deref() == Some(hash.as_str()) {
            notes.push("last complete".to_string());
        }
        let count = running.get(hash).copied().unwrap_or(0);
        table.push_str(&format!("{number:<9} {hash:<14} {count:>8}  {}\n", notes.join(", ")));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BaselineStatus, RolloutStatus};

    fn baseline(phase: &str, observed: i64) -> Baseline {
        let mut baseline = Baseline::new("std", Default::default());
        baseline.metadata.generation = Some(2);
        baseline.status = Some(BaselineStatus {
            revision: Some("r2".into()),
            observed_generation: Some(observed),
            last_complete_revision: Some("r1".into()),
            rollout: Some(RolloutStatus { revision: "r2".into(), phase: phase.into(), ..Default::default() }),
            ..Default::default()
        });
        baseline
    }

    #[test]
    fn the_exit_status_says_complete_halted_paused_or_not_yet() {
        let cases = [
            (rollout::COMPLETE, 0),
            (rollout::HALTED, 2),
            (rollout::ROLLING_BACK, 2),
            (rollout::ROLLED_BACK, 2),
            (rollout::PAUSED, 3),
            (rollout::PREVIEWING, 3),
            (rollout::PROGRESSING, 4),
            (rollout::BAKING, 4),
        ];
        for (phase, code) in cases {
            assert_eq!(verdict(&baseline(phase, 2)).exit_code(), code, "{phase}");
        }
        assert_eq!(verdict(&baseline(rollout::COMPLETE, 1)), Verdict::InProgress, "a status behind the spec");
        assert_eq!(verdict(&Baseline::new("new", Default::default())), Verdict::InProgress);
    }

    #[test]
    fn undo_goes_back_to_the_last_complete_revision_unless_told_otherwise() {
        let content = |version: &str| Deployed {
            parameters: BTreeMap::from([("Version".to_string(), version.to_string())]),
            stack_name: "silo-baseline".into(),
            ..Default::default()
        };
        let stored = vec![
            (1, "r0".to_string(), content("v0")),
            (2, "r1".into(), content("v1")),
            (3, "r2".into(), content("v2")),
        ];
        let halted = baseline(rollout::HALTED, 2);
        assert_eq!(undo_target(&halted, &stored, None).unwrap().0, 2, "the last complete revision");
        let complete = {
            let mut b = baseline(rollout::COMPLETE, 2);
            b.status.as_mut().unwrap().last_complete_revision = Some("r2".into());
            b
        };
        assert_eq!(undo_target(&complete, &stored, None).unwrap().0, 2, "the one before a complete newest");
        assert_eq!(undo_target(&halted, &stored, Some(1)).unwrap().1, content("v0"));
        assert!(undo_target(&halted, &stored, Some(9)).is_err());
        let spec = spec_of(&content("v1"));
        assert_eq!(spec["parameters"]["Version"], "v1");
        assert_eq!(spec["templateURL"], serde_json::Value::Null, "a merge patch removes the field the revision lacks");
    }

    #[test]
    fn durations_take_seconds_minutes_and_hours() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn history_marks_the_newest_and_the_last_complete_revision_and_counts_tenants() {
        let stored = vec![(1, "r1".to_string(), Deployed::default()), (2, "r2".into(), Deployed::default())];
        let mut tenant = Tenant::new("a", Default::default());
        tenant.status = Some(crate::api::TenantStatus {
            baseline: Some(crate::api::TenantBaselineStatus {
                name: "std".into(),
                admitted_revision: Some("r1".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let table = history(&baseline(rollout::PROGRESSING, 2), &stored, &[tenant]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].starts_with("1") && lines[1].contains(" 1  last complete"), "{table}");
        assert!(lines[2].contains(" 0  newest (Progressing)"), "{table}");
    }
}
