//! Progressive Baseline rollouts across a fleet of 30 tenants: stages through a window never
//! above maxConcurrent (counted from the simulator's own record of stack operations),
//! canaries, halts, a fix, new tenants mid-rollout, SIGKILLs, and previews.

use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use silo::{Baseline, Tenant, api::RolledBack, conditions};
use silo_testenv::{
    TenantFixture, TestCase,
    awssim::{StackOperation, most_in_flight},
    silo_binary, test_case,
};

/// Enough tenants for a canary and several windows at every maxConcurrent the tests use (5,
/// 6, 10), and for a halt that leaves a third of the fleet untouched.
/// The largest fleet a test here needs; each test makes the smallest that shows its point.
const FLEET: usize = 30;
const WITHIN: Duration = Duration::from_secs(300);

const TEMPLATE: &str = "
Parameters:
  TenantName: {Type: String}
  Version: {Type: String, Default: v1}
Resources:
  Topic:
    Type: AWS::SNS::Topic
    Properties:
      TopicName: !Sub '${TenantName}-events'
Outputs:
  Version:
    Value: !Ref Version
";

fn names(size: usize) -> Vec<String> {
    (0..size).map(|i| format!("fleet-{i:02}")).collect()
}

async fn apply_baseline(case: &TestCase, spec: Value) {
    let baseline =
        json!({"apiVersion": "silo.dev/v1alpha1", "kind": "Baseline", "metadata": {"name": "fleet"}, "spec": spec});
    Api::<Baseline>::all(case.client.clone())
        .patch("fleet", &PatchParams::apply("silo-tests").force(), &Patch::Apply(&baseline))
        .await
        .unwrap();
}

/// The Baseline with `Version` and rollout settings; `size` tenants that use it, all Ready.
async fn fleet_on_v1(case: &TestCase, size: usize, rollout: Value) {
    let started = Instant::now();
    case.raise_account_quota(100).await;
    apply_baseline(case, json!({"template": TEMPLATE, "parameters": {"Version": "v1"}, "rollout": rollout})).await;
    for name in names(size) {
        case.create(&TenantFixture::named(&name).baseline("fleet")).await.unwrap();
    }
    case.wait_for_all(&names(size), conditions::READY, "True", WITHIN).await.unwrap();
    wait_for_phase(case, "Complete").await;
    eprintln!("{size} tenants on v1 in {:?}", started.elapsed());
}

async fn baseline(case: &TestCase) -> Baseline {
    Api::<Baseline>::all(case.client.clone()).get("fleet").await.unwrap()
}

fn phase(baseline: &Baseline) -> Option<String> {
    baseline.status.as_ref()?.rollout.as_ref().map(|r| r.phase.clone())
}

async fn wait_for_phase(case: &TestCase, wanted: &str) -> Baseline {
    case.eventually(WITHIN, || async {
        let baseline = baseline(case).await;
        anyhow::ensure!(
            phase(&baseline).as_deref() == Some(wanted)
                && baseline.status.as_ref().and_then(|s| s.observed_generation) == baseline.metadata.generation,
            "status: {:?}",
            baseline.status
        );
        Ok(baseline)
    })
    .await
    .unwrap_or_else(|err| panic!("the rollout never reached {wanted}: {err:#}"))
}

/// The `Version` output each tenant's stack shows in its status.
async fn versions(case: &TestCase) -> std::collections::BTreeMap<String, String> {
    case.tenants()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|t: Tenant| {
            let name = t.metadata.name.clone()?;
            let version = t.status?.baseline?.stacks.first()?.outputs.get("Version")?.clone();
            Some((name, version))
        })
        .collect()
}

/// Runs `silo rollout <args>` against the environment; returns its exit status and output.
async fn rollout_command(case: &TestCase, args: &[&str]) -> (i32, String) {
    let mut command = std::process::Command::new(silo_binary().unwrap());
    command.arg("rollout").args(args).env("KUBECONFIG", &case.info.kubeconfig);
    let out = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("silo rollout {args:?}: {:?}\n{output}", out.status.code());
    (out.status.code().expect("silo rollout exited by itself"), output)
}

async fn account_of(case: &TestCase, name: &str) -> String {
    case.tenants().get(name).await.unwrap().status.unwrap().account_id.unwrap()
}

async fn updates(case: &TestCase, since: f64) -> Vec<StackOperation> {
    let ops = case.sim.stack_operations().await.unwrap();
    ops.into_iter().filter(|op| op.operation == "UpdateStack" && op.started >= since).collect()
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A change rolls in stages, each finished and baked before the next opens, through a window
/// never above maxConcurrent in flight, counted from the simulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_rolls_in_stages_never_above_max_concurrent() {
    let mut case = test_case().await;
    case.sim.configure(json!({"stack_operation_seconds": 1})).await.unwrap();
    case.start_controller(TestCase::config());
    // A canary of two, a stage to six, then the other nine, three at a time.
    let fleet = 15;
    let rollout = json!({"maxConcurrent": 3, "stages": [2, 6, "100%"], "bakeSeconds": 2});
    fleet_on_v1(&case, fleet, rollout.clone()).await;

    let since = now();
    apply_baseline(&case, json!({"template": TEMPLATE, "parameters": {"Version": "v2"}, "rollout": rollout})).await;
    let done = wait_for_phase(&case, "Complete").await;
    case.wait_for_all(&names(fleet), conditions::READY, "True", WITHIN).await.unwrap();
    let versions = versions(&case).await;
    assert!(versions.values().all(|v| v == "v2"), "every tenant runs v2: {versions:?}");
    let ops = updates(&case, since).await;
    assert_eq!(ops.len(), fleet, "one update per tenant");
    let most = most_in_flight(&ops, "UpdateStack", since);
    eprintln!("{} updates, at most {most} in flight", ops.len());
    assert!(most <= 3, "at most maxConcurrent tenants in flight: {most}");
    assert!(most >= 2, "tenants really ran in parallel: {most}");
    // Each stage finished (and baked) before the next began: the canary (the first two by
    // name), then the next four, then the rest.
    let canary: Vec<String> = done.status.clone().unwrap().rollout.unwrap().canary;
    assert_eq!(canary, vec!["fleet-00", "fleet-01"]);
    let all = names(fleet);
    let mut accounts = vec![];
    for name in &all {
        accounts.push(account_of(&case, name).await);
    }
    let span = |stage: &[String]| {
        let of_stage: Vec<&StackOperation> = ops.iter().filter(|op| stage.contains(&op.account)).collect();
        let start = of_stage.iter().map(|op| op.started).fold(f64::MAX, f64::min);
        let end = of_stage.iter().filter_map(|op| op.finished).fold(0.0, f64::max);
        (start, end)
    };
    let stages = [&accounts[..2], &accounts[2..6], &accounts[6..]].map(span);
    eprintln!("stages (start, end): {stages:?}");
    for pair in stages.windows(2) {
        assert!(pair[0].1 + 2.0 <= pair[1].0, "a stage opens after the one before ended and baked 2 s: {stages:?}");
    }

    // An Event for each step, each with its own note: the start, the canary, every stage, the end.
    let rollout = done.status.unwrap().rollout.unwrap();
    let revision = &rollout.revision;
    let mut wanted = vec![
        ("RolloutStarted", format!("Rolling out revision {revision}")),
        ("CanaryPassed", format!("The canary of revision {revision} passed")),
        ("RolloutComplete", format!("Revision {revision} is complete")),
    ];
    wanted.extend((1..=2).map(|stage| ("StageStarted", format!("Stage {stage} of revision {revision}:"))));
    assert_eq!(rollout.stage, 2, "the canary, then two stages: {rollout:?}");
    case.eventually_every(WITHIN, Duration::from_millis(500), || async {
        let events = Api::<Event>::namespaced(case.client.clone(), "default").list(&Default::default()).await?;
        let seen: Vec<(String, String)> = events
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("fleet"))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect();
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(reason, note)| !seen.iter().any(|(r, n)| r == reason && n.starts_with(note)))
            .collect();
        anyhow::ensure!(missing.is_empty(), "missing Events {missing:?}; seen {seen:?}");
        Ok(())
    })
    .await
    .expect("an Event for each step of the rollout");
}

/// A canary that fails halts the rollout: no other tenant is touched, the Baseline says
/// which tenant failed and why, and `silo rollout status` exits 2 (0 while complete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_halts_the_rollout_with_no_other_tenant_touched() {
    let mut case = test_case().await;
    case.start_controller(TestCase::config());
    fleet_on_v1(&case, 10, json!({"maxConcurrent": 10})).await;
    assert_eq!(rollout_command(&case, &["status", "fleet"]).await.0, 0, "complete");
    case.sim
        .configure(json!({"stack_failures": [{"operations": ["UpdateStack"], "parameters": {"TenantName": "^fleet-00$"}, "reason": "Topic policy refused by an SCP"}]}))
        .await
        .unwrap();
    let since = now();
    apply_baseline(
        &case,
        json!({"template": TEMPLATE, "parameters": {"Version": "v2"}, "rollout": {"maxConcurrent": 10}}),
    )
    .await;
    let halted = wait_for_phase(&case, "Halted").await;
    let status = halted.status.unwrap();
    let stalled = conditions::find(&status.conditions, conditions::STALLED).unwrap();
    assert_eq!(stalled.status, "True");
    assert_eq!(stalled.reason, "RolloutHalted");
    assert!(
        stalled.message.contains("fleet-00") && stalled.message.contains("Topic policy refused by an SCP"),
        "{}",
        stalled.message
    );
    let canary = account_of(&case, "fleet-00").await;
    case.consistently(Duration::from_secs(5), || async {
        let ops = updates(&case, since).await;
        anyhow::ensure!(!ops.is_empty() && ops.iter().all(|op| op.account == canary), "updates: {ops:?}");
        let phase = phase(&baseline(&case).await);
        anyhow::ensure!(phase.as_deref() == Some("Halted"), "the phase is {phase:?}");
        Ok(())
    })
    .await
    .expect("a halt holds, with only the canary updated");
    let (code, output) = rollout_command(&case, &["status", "fleet", "--watch", "--timeout", "60s"]).await;
    assert_eq!(code, 2, "halted");
    assert!(output.contains("Halted") && output.contains("failed: fleet-00"), "{output}");
}

/// Failures beyond the tolerance mid-rollout halt it; a fixed revision completes it. With
/// `onFailure: Rollback`, the same failure sends the tenants the revision reached back to the
/// last complete revision, through the window, and touches nobody else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_beyond_tolerance_halt_mid_rollout_or_roll_back_exactly_the_tenants_reached() {
    let mut case = test_case().await;
    case.start_controller(TestCase::config());
    let rollout = json!({"maxConcurrent": 5, "failureTolerance": 1});
    fleet_on_v1(&case, FLEET, rollout.clone()).await;
    case.sim
        .configure(json!({"stack_failures": [{"operations": ["UpdateStack"], "parameters": {"TenantName": "^fleet-1[0-3]$", "Version": "^v2$"}, "reason": "quota of topics reached"}]}))
        .await
        .unwrap();
    apply_baseline(&case, json!({"template": TEMPLATE, "parameters": {"Version": "v2"}, "rollout": rollout})).await;
    let halted = wait_for_phase(&case, "Halted").await;
    let failed: Vec<String> = halted.status.unwrap().rollout.unwrap().failed.into_iter().map(|f| f.name).collect();
    assert!(failed.len() >= 2 && failed.iter().all(|n| n.starts_with("fleet-1")), "{failed:?}");
    let versions_now = versions(&case).await;
    let beyond: Vec<&String> =
        versions_now.iter().filter(|(name, _)| name.as_str() >= "fleet-20").map(|(_, v)| v).collect();
    assert!(beyond.len() == 10 && beyond.iter().all(|v| *v == "v1"), "it stopped mid-way: {versions_now:?}");

    // The fix: a new revision (v3, which the injected failure does not match).
    apply_baseline(&case, json!({"template": TEMPLATE, "parameters": {"Version": "v3"}, "rollout": rollout})).await;
    let v3 = wait_for_phase(&case, "Complete").await.status.unwrap().revision;
    case.wait_for_all(&names(FLEET), conditions::READY, "True", WITHIN).await.unwrap();
    let versions_now = versions(&case).await;
    assert!(versions_now.values().all(|v| v == "v3"), "{versions_now:?}");

    // v4 fails the same way, and this rollout rolls back.
    case.sim
        .configure(json!({"stack_failures": [{"operations": ["UpdateStack"], "parameters": {"TenantName": "^fleet-1[0-3]$", "Version": "^v4$"}, "reason": "quota of topics reached"}]}))
        .await
        .unwrap();
    let rolling_back = json!({"maxConcurrent": 5, "failureTolerance": 1, "onFailure": "Rollback"});
    let since = now();
    apply_baseline(&case, json!({"template": TEMPLATE, "parameters": {"Version": "v4"}, "rollout": rolling_back}))
        .await;
    let rolled_back = wait_for_phase(&case, "RolledBack").await.status.unwrap();
    assert_eq!(rolled_back.last_complete_revision, v3, "v3 is the last complete revision");
    let rollout = rolled_back.rollout.unwrap();
    let (v4, rollback) = (rollout.revision, rollout.rollback.unwrap());
    assert_eq!(Some(rollback.to), v3);
    case.wait_for_all(&names(FLEET), conditions::READY, "True", WITHIN).await.unwrap();
    case.eventually(WITHIN, || async {
        let versions = versions(&case).await;
        anyhow::ensure!(versions.values().all(|v| v == "v3"), "every tenant runs v3 again: {versions:?}");
        Ok(())
    })
    .await
    .unwrap();
    // From the simulator's record: the tenants v4 reached are the first ones by name, each
    // updated there and back (a failed update rolled back by CloudFormation may need no update
    // back), never more than maxConcurrent at once; every other tenant untouched.
    let ops = updates(&case, since).await;
    assert!(most_in_flight(&ops, "UpdateStack", since) <= 5, "the window holds while rolling back");
    let mut touched = vec![];
    for name in names(FLEET) {
        let account = account_of(&case, &name).await;
        let count = ops.iter().filter(|op| op.account == account).count();
        let failing = ["fleet-10", "fleet-11", "fleet-12", "fleet-13"].contains(&name.as_str());
        match count {
            0 => {}
            2 => touched.push(name),
            1 if failing => touched.push(name),
            n => panic!("{name}: {n} updates since v4"),
        }
    }
    eprintln!("v4 reached {} tenants and rolled back: {touched:?}", touched.len());
    assert_eq!(touched, names(touched.len()), "the tenants reached are the first by name: {touched:?}");
    assert_eq!(touched.len(), rollback.tenants as usize, "the rollback counts the tenants it returned");
    // Each tenant sent back records this rollback, and no other tenant does.
    let this_rollback = Some(RolledBack { from: v4, started_at: rollback.started_at.clone().unwrap() });
    let tenants = case.tenants().list(&Default::default()).await.unwrap().items;
    let mut recorded: Vec<String> = tenants
        .iter()
        .filter(|t| t.status.as_ref().and_then(|s| s.baseline.as_ref()?.rolled_back.clone()) == this_rollback)
        .map(|t| t.name_any())
        .collect();
    recorded.sort();
    assert_eq!(recorded, touched, "status.baseline.rolledBack");
    assert!(touched.len() >= 12 && touched.len() < FLEET, "it stopped mid-way: {touched:?}");

    // `silo rollout history` shows where things stand; `undo` writes v3's content back into the
    // spec: the revision v3 again, which every tenant already runs.
    let (code, history) = rollout_command(&case, &["history", "fleet"]).await;
    assert_eq!(code, 0);
    assert!(history.contains("newest (RolledBack)") && history.contains("30  last complete"), "{history}");
    assert_eq!(rollout_command(&case, &["undo", "fleet"]).await.0, 0);
    assert_eq!(rollout_command(&case, &["status", "fleet", "--watch", "--timeout", "120s"]).await.0, 0, "complete");
    let undone = baseline(&case).await;
    assert_eq!(undone.spec.parameters.get("Version").map(String::as_str), Some("v3"));
    assert_eq!(undone.status.unwrap().revision, v3, "the content of v3 is revision v3 again");
    let (_, history) = rollout_command(&case, &["history", "fleet"]).await;
    assert!(history.contains("30  newest (Complete), last complete"), "{history}");
}

/// A tenant created during the canary gets the last complete revision; one created after
/// the canary passed gets the new one. The rollout is steered with `silo rollout`: a watch
/// that times out during the bake (exit 4), pause and promote (the bake skipped, then exit 3),
/// resume, and a watch to the end (exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_tenants_mid_rollout_get_the_newest_revision_that_passed_its_canary() {
    let mut case = test_case().await;
    case.start_controller(TestCase::config());
    // early-bird must be Ready within the canary's bake: once the canary passes, it is rolled
    // forward with everyone else. One window after the canary keeps the test's length with a
    // bake long enough for a loaded machine.
    // The bake is far longer than the test: only the promotion ends it.
    let rollout = json!({"maxConcurrent": 100, "bakeSeconds": 3600});
    fleet_on_v1(&case, 10, rollout.clone()).await;
    apply_baseline(&case, json!({"template": TEMPLATE, "parameters": {"Version": "v2"}, "rollout": rollout})).await;
    wait_for_phase(&case, "Baking").await;
    assert_eq!(rollout_command(&case, &["status", "fleet", "--watch", "--timeout", "2s"]).await.0, 4, "timed out");
    case.create(&TenantFixture::named("early-bird").baseline("fleet")).await.unwrap();
    case.wait_for("early-bird", conditions::READY, "True", WITHIN).await.unwrap();
    assert_eq!(versions(&case).await.get("early-bird").map(String::as_str), Some("v1"), "during the canary: v1");

    assert_eq!(rollout_command(&case, &["pause", "fleet"]).await.0, 0);
    assert_eq!(rollout_command(&case, &["promote", "fleet"]).await.0, 0);
    case.eventually(WITHIN, || async { baseline(&case).await.status.unwrap().rollout.unwrap().canary_passed })
        .await
        .expect("the promoted canary passes without its bake");
    wait_for_phase(&case, "Paused").await;
    assert_eq!(rollout_command(&case, &["status", "fleet"]).await.0, 3, "paused");
    case.create(&TenantFixture::named("late-bird").baseline("fleet")).await.unwrap();
    case.wait_for("late-bird", conditions::READY, "True", WITHIN).await.unwrap();
    assert_eq!(versions(&case).await.get("late-bird").map(String::as_str), Some("v2"), "after the canary: v2");
    assert_eq!(versions(&case).await.get("fleet-05").map(String::as_str), Some("v1"), "paused: nobody admitted");
    assert_eq!(rollout_command(&case, &["resume", "fleet"]).await.0, 0);
    assert_eq!(rollout_command(&case, &["status", "fleet", "--watch", "--timeout", "300s"]).await.0, 0, "complete");
    wait_for_phase(&case, "Complete").await;
    case.eventually_every(WITHIN, Duration::from_millis(500), || async {
        versions(&case).await.get("early-bird").map(String::as_str) == Some("v2")
    })
    .await
    .expect("the early tenant is rolled forward with the others");
}

/// The controller SIGKILLed mid-rollout resumes where it stopped, never above maxConcurrent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_resumes_after_sigkills_without_exceeding_max_concurrent() {
    let case = test_case().await;
    case.sim.configure(json!({"stack_operation_seconds": 3})).await.unwrap();
    let flags = ["--leader-election", "false"];
    let mut controller = case.spawn_controller(&flags, "rollout-controller.log").unwrap();
    let rollout = json!({"maxConcurrent": 6});
    fleet_on_v1(&case, FLEET, rollout.clone()).await;
    let since = now();
    apply_baseline(&case, json!({"template": TEMPLATE, "parameters": {"Version": "v2"}, "rollout": rollout})).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        controller.kill();
        controller = case.spawn_controller(&flags, "rollout-controller.log").unwrap();
    }
    case.eventually(WITHIN, || async {
        let status = baseline(&case).await.status;
        let complete = status.as_ref().and_then(|s| s.rollout.as_ref()).is_some_and(|r| r.phase == "Complete");
        anyhow::ensure!(complete, "status: {status:?}");
        Ok(())
    })
    .await
    .expect("the rollout completes after the restarts");
    case.wait_for_all(&names(FLEET), conditions::READY, "True", WITHIN).await.unwrap();
    controller.kill();
    let ops = updates(&case, since).await;
    let most = most_in_flight(&ops, "UpdateStack", since);
    eprintln!("{} updates across 5 controller processes, at most {most} in flight", ops.len());
    assert!(most <= 6, "never above maxConcurrent across restarts: {most}");
    assert!(versions(&case).await.values().all(|v| v == "v2"));
}

/// A preview makes change sets for the canary tenants, shows what they would change, and
/// executes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_shows_the_changes_and_executes_nothing() {
    let mut case = test_case().await;
    case.start_controller(TestCase::config());
    fleet_on_v1(&case, 6, json!({"canary": {"count": 2}})).await;
    let since = now();
    let with_parameter = format!(
        "{TEMPLATE}  Name:\n    Value: !Ref Setting\n"
    )
    .replace(
        "Resources:\n",
        "Resources:\n  Setting:\n    Type: AWS::SSM::Parameter\n    Properties:\n      Type: String\n      Value: !Ref Version\n",
    );
    apply_baseline(&case, json!({"template": with_parameter, "parameters": {"Version": "v1"}, "rollout": {"canary": {"count": 2}, "preview": true}})).await;
    let preview = case
        .eventually(WITHIN, || async {
            let status = baseline(&case).await.status.unwrap();
            anyhow::ensure!(status.preview.len() == 2, "no preview of 2 tenants: {status:?}");
            Ok(status.preview)
        })
        .await
        .expect("a preview for the 2 canary tenants");
    for report in &preview {
        assert!(
            report
                .changes
                .iter()
                .any(|c| c.action == "Add" && c.logical_id == "Setting" && c.resource_type == "AWS::SSM::Parameter"),
            "{}: {:?}",
            report.tenant,
            report.changes
        );
    }
    assert_eq!(phase(&baseline(&case).await).as_deref(), Some("Previewing"));
    case.consistently(Duration::from_secs(3), || async {
        let stats = case.sim.stats().await?;
        let executed = case.sim.stack_operations().await?.into_iter().filter(|op| op.started >= since).count();
        anyhow::ensure!(executed == 0, "{executed} stack operations: {stats}");
        anyhow::ensure!(stats["requests"].get("cloudformation:ExecuteChangeSet").is_none(), "{stats}");
        Ok(())
    })
    .await
    .expect("a preview executes nothing");
}
