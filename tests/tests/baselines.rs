//! Baselines end to end: a role assumed in each tenant's account, a CloudFormation stack per
//! region there, outputs in the Tenant's status, updates, failures and deletion.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_organizations::config::{Credentials, SharedCredentialsProvider};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;
use silo::{Baseline, Tenant, conditions};
use silo_testenv::{SimClient, Spawn, TestCase, checks::AFTERWARDS, test_case};

const WITHIN: Duration = Duration::from_secs(120);

use silo_testenv::BASELINE_TEMPLATE as TEMPLATE;

async fn apply_baseline(case: &TestCase, name: &str, spec: serde_json::Value) {
    let baseline: Baseline = serde_json::from_value(json!({
        "apiVersion": "silo.dev/v1alpha1", "kind": "Baseline", "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    Api::<Baseline>::all(case.client.clone())
        .patch(name, &PatchParams::apply("silo-tests").force(), &Patch::Apply(&baseline))
        .await
        .unwrap();
}

async fn apply_tenant(case: &TestCase, name: &str, baseline: serde_json::Value, extra: serde_json::Value) -> Tenant {
    let mut spec = json!({"baseline": baseline});
    spec.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    let yaml = serde_yaml::to_string(&json!({
        "apiVersion": "silo.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    case.apply(&yaml).await.unwrap()
}

/// Credentials inside a tenant's account, assumed like Silo does (through the management account).
async fn inside(sim: &SimClient, account_id: &str, region: &str) -> SdkConfig {
    let sts = aws_sdk_sts::Client::new(&sim.observer_config());
    let out = sts
        .assume_role()
        .role_arn(format!("arn:aws:iam::{account_id}:role/OrganizationAccountAccessRole"))
        .role_session_name("silo-tests")
        .send()
        .await
        .expect("AssumeRole into the tenant account");
    let c = out.credentials.unwrap();
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(&sim.endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            Some(c.session_token),
            None,
            "tests",
        )))
        .build()
}

async fn stack_names(config: &SdkConfig) -> Vec<(String, String)> {
    let cfn = aws_sdk_cloudformation::Client::new(config);
    let out = cfn.describe_stacks().send().await.unwrap();
    out.stacks()
        .iter()
        .map(|s| {
            (
                s.stack_name().unwrap_or_default().to_string(),
                s.stack_status().map(|x| x.as_str().to_string()).unwrap_or_default(),
            )
        })
        .collect()
}

async fn topics(config: &SdkConfig) -> Vec<String> {
    let sns = aws_sdk_sns::Client::new(config);
    let out = sns.list_topics().send().await.unwrap();
    out.topics().iter().filter_map(|t| t.topic_arn().map(str::to_string)).collect()
}

fn outputs(tenant: &Tenant, region: &str) -> std::collections::BTreeMap<String, String> {
    let baseline = tenant.status.as_ref().unwrap().baseline.as_ref().expect("status.baseline");
    baseline.stacks.iter().find(|s| s.region == region).expect("a stack per region").outputs.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_baseline_in_two_regions_runs_in_each_tenants_own_account_only() {
    let mut case = test_case().await;
    case.start_controller(TestCase::config());
    apply_baseline(&case, "standard", json!({"template": TEMPLATE, "regions": ["us-east-1", "eu-west-1"]})).await;
    apply_tenant(&case, "alpha", json!({"name": "standard"}), json!({})).await;
    apply_tenant(&case, "beta", json!({"name": "standard", "parameters": {"Env": "prod"}}), json!({})).await;

    let alpha = case.wait_for("alpha", conditions::READY, "True", WITHIN).await.unwrap();
    let beta = case.wait_for("beta", conditions::READY, "True", WITHIN).await.unwrap();
    let alpha_account = alpha.status.as_ref().unwrap().account_id.clone().unwrap();
    let beta_account = beta.status.as_ref().unwrap().account_id.clone().unwrap();
    for region in ["us-east-1", "eu-west-1"] {
        let out = outputs(&alpha, region);
        let topic = out.get("TopicArn").unwrap_or_else(|| panic!("{region}: {:?}", alpha.status));
        assert!(topic.contains(&alpha_account) && topic.contains(region), "{out:?}");
        assert!(out["TopicArn"].ends_with("alpha-events"));
        assert_eq!(out["Env"], "dev");
        assert_eq!(out["Account"], alpha_account, "AccountId is filled in by Silo");
        assert_eq!(outputs(&beta, region)["Env"], "prod", "the tenant's override wins");
    }

    // Isolation: each account holds its own stack and topic and nothing of the other's;
    // the management account holds none of them.
    for region in ["us-east-1", "eu-west-1"] {
        let a = inside(&case.sim, &alpha_account, region).await;
        let b = inside(&case.sim, &beta_account, region).await;
        assert_eq!(stack_names(&a).await, vec![("silo-baseline".to_string(), "CREATE_COMPLETE".to_string())]);
        assert_eq!(stack_names(&b).await, vec![("silo-baseline".to_string(), "CREATE_COMPLETE".to_string())]);
        let (ta, tb) = (topics(&a).await, topics(&b).await);
        assert!(
            ta.iter().all(|t| t.contains(&alpha_account) && t.ends_with("alpha-events")) && ta.len() == 1,
            "{ta:?}"
        );
        assert!(tb.iter().all(|t| t.contains(&beta_account) && t.ends_with("beta-events")) && tb.len() == 1, "{tb:?}");
        let mut management = case.sim.observer_config().to_builder();
        management.set_region(Some(Region::new(region)));
        let management = management.build();
        assert!(stack_names(&management).await.is_empty(), "no stack in the management account");
        assert!(topics(&management).await.is_empty(), "no topic in the management account");
    }

    let status = case
        .eventually(WITHIN, || async {
            let baseline = Api::<Baseline>::all(case.client.clone()).get("standard").await?;
            let status = baseline.status.unwrap_or_default();
            anyhow::ensure!(status.tenants.current == 2, "status: {status:?}");
            Ok(status)
        })
        .await
        .expect("the Baseline's status counts 2 current tenants");
    assert!(status.revision.is_some());
}

/// The revision tag of the tenant's stack.
async fn running_revision(case: &TestCase, account_id: &str) -> String {
    let config = inside(&case.sim, account_id, "us-east-1").await;
    let cfn = aws_sdk_cloudformation::Client::new(&config);
    let out = cfn.describe_stacks().stack_name("silo-baseline").send().await.unwrap();
    let stack = &out.stacks()[0];
    stack.tags().iter().find(|t| t.key() == Some("silo.dev/revision")).and_then(|t| t.value()).unwrap().to_string()
}

async fn wait_for_output(case: &TestCase, name: &str, key: &str, value: &str) -> Tenant {
    case.eventually(WITHIN, || async {
        let tenant = case.tenants().get(name).await?;
        let ready = tenant.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, conditions::READY));
        anyhow::ensure!(
            ready
                && tenant.status.as_ref().and_then(|s| s.baseline.as_ref()).is_some_and(|_| outputs(
                    &tenant,
                    "us-east-1"
                )
                .get(key)
                .map(String::as_str)
                    == Some(value)),
            "status: {:?}",
            tenant.status
        );
        Ok(tenant)
    })
    .await
    .unwrap_or_else(|err| panic!("{name}: output {key} never became {value}: {err:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_changes_update_every_tenant_and_parameter_changes_only_one() {
    let mut case = test_case().await;
    case.start_controller(TestCase::config());
    apply_baseline(&case, "standard", json!({"template": TEMPLATE})).await;
    apply_tenant(&case, "one", json!({"name": "standard"}), json!({})).await;
    apply_tenant(&case, "two", json!({"name": "standard"}), json!({})).await;
    let one = case.wait_for("one", conditions::READY, "True", WITHIN).await.unwrap();
    let two = case.wait_for("two", conditions::READY, "True", WITHIN).await.unwrap();
    let one_account = one.status.unwrap().account_id.unwrap();
    let two_account = two.status.unwrap().account_id.unwrap();

    // A new output in the template: both tenants' stacks are updated.
    let changed = format!("{TEMPLATE}  Version:\n    Value: v2\n");
    apply_baseline(&case, "standard", json!({"template": changed})).await;
    wait_for_output(&case, "one", "Version", "v2").await;
    wait_for_output(&case, "two", "Version", "v2").await;
    let two_revision = running_revision(&case, &two_account).await;

    // One tenant's parameter: only that tenant's stack changes.
    let patch = json!({"spec": {"baseline": {"name": "standard", "parameters": {"Env": "staging"}}}});
    case.tenants().patch("one", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for_output(&case, "one", "Env", "staging").await;
    assert_ne!(running_revision(&case, &one_account).await, two_revision);
    assert_eq!(running_revision(&case, &two_account).await, two_revision, "the other tenant's stack is untouched");
    assert_eq!(outputs(&case.tenants().get("two").await.unwrap(), "us-east-1")["Env"], "dev");

    // Drift: the topic of two's stack renamed in the console. A verification a person asks for
    // finds it (one is in sync); without spec.drift.repair it is reported, never changed.
    let renamed = json!({"PropertyPath": "/TopicName", "ExpectedValue": "two-events", "ActualValue": "renamed",
                         "DifferenceType": "NOT_EQUAL"});
    let drift = json!({"account": two_account, "region": "us-east-1", "stack": "silo-baseline",
                       "resource": "Events", "status": "MODIFIED", "differences": [renamed]});
    case.sim.drift(drift).await.unwrap();
    let verify = |value: &str| json!({"metadata": {"annotations": {"silo.dev/verify": value}}});
    for name in ["one", "two"] {
        case.tenants().patch(name, &PatchParams::default(), &Patch::Merge(&verify("drift-1"))).await.unwrap();
    }
    let drifted = case.wait_for("two", conditions::BASELINE_DRIFTED, "True", WITHIN).await.unwrap();
    let found = drifted.status.clone().unwrap().baseline.unwrap().drift.unwrap();
    assert_eq!(found.resources.len(), 1, "{found:?}");
    assert_eq!((found.resources[0].logical_id.as_str(), found.resources[0].status.as_str()), ("Events", "MODIFIED"));
    assert!(found.resources[0].differences[0].contains("renamed"), "{found:?}");
    let conditions_now = drifted.status.unwrap().conditions;
    let message = &conditions::find(&conditions_now, conditions::BASELINE_DRIFTED).unwrap().message;
    assert!(message.contains("Events (AWS::SNS::Topic) in us-east-1 is MODIFIED"), "{message}");
    assert_eq!(conditions::find(&drifted_status(&case, "two").await, conditions::READY).unwrap().status, "True");
    case.wait_for_reason("one", conditions::BASELINE_DRIFTED, "InSync", WITHIN).await.unwrap();
    case.eventually(WITHIN, || async {
        let baseline = Api::<Baseline>::all(case.client.clone()).get("standard").await?;
        let drifted = baseline.status.map(|s| s.tenants.drifted);
        anyhow::ensure!(drifted == Some(1), "the Baseline counts {drifted:?} drifted tenants");
        Ok(())
    })
    .await
    .unwrap();
    let executed = |case: &TestCase| {
        let (sim, account) = (case.sim.clone(), two_account.clone());
        async move {
            let ops = sim.stack_operations().await.unwrap();
            ops.iter().filter(|op| op.account == account && op.operation == "ExecuteChangeSet").count()
        }
    };
    case.consistently(Duration::from_secs(2), || async {
        anyhow::ensure!(executed(&case).await == 0, "drift is only reported without repair");
        Ok(())
    })
    .await
    .unwrap();

    // With repair, the next check puts the topic back (a REVERT_DRIFT change set) and checks
    // again: in sync.
    apply_baseline(&case, "standard", json!({"template": changed, "drift": {"repair": true}})).await;
    case.tenants().patch("two", &PatchParams::default(), &Patch::Merge(&verify("drift-2"))).await.unwrap();
    let repaired = case.wait_for_reason("two", conditions::BASELINE_DRIFTED, "InSync", WITHIN).await.unwrap();
    let drift = repaired.status.unwrap().baseline.unwrap().drift.unwrap();
    assert_eq!((drift.repairs, drift.resources.len()), (1, 0), "{drift:?}");
    assert_eq!(executed(&case).await, 1, "one REVERT_DRIFT change set executed");
}

/// A drift check goes at IfIdle priority: while user work queues for the CloudFormation
/// budget (one request in flight at a time here, each look at a stack answered after 1 s),
/// the check a person asked for is not sent; it goes once that work is done. Sent at user
/// priority, it would take its turn among the updates' looks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drift_check_waits_while_user_work_queues_for_cloudformation() {
    let mut case = test_case().await;
    let mut aws = TestCase::aws_config();
    aws.cloudformation_limits.max_in_flight = 1;
    case.start_controller_with_aws(TestCase::config(), aws);
    let busy_spec = |template: &str| json!({"template": template, "rollout": {"maxConcurrent": 4, "stages": ["100%"]}});
    apply_baseline(&case, "quiet", json!({"template": TEMPLATE})).await;
    apply_baseline(&case, "busy", busy_spec(TEMPLATE)).await;
    let busy: Vec<String> = (0..4).map(|i| format!("busy-{i}")).collect();
    for name in busy.iter().map(String::as_str).chain(["watched"]) {
        let baseline = if name == "watched" { "quiet" } else { "busy" };
        apply_tenant(&case, name, json!({"name": baseline}), json!({})).await;
    }
    for name in busy.iter().map(String::as_str).chain(["watched"]) {
        case.wait_for(name, conditions::READY, "True", WITHIN).await.unwrap();
    }
    let watched = case.tenants().get("watched").await.unwrap().status.unwrap().account_id.unwrap();
    let renamed = json!({"PropertyPath": "/TopicName", "ExpectedValue": "watched-events", "ActualValue": "renamed",
                         "DifferenceType": "NOT_EQUAL"});
    let drift = json!({"account": watched, "region": "us-east-1", "stack": "silo-baseline",
                       "resource": "Events", "status": "MODIFIED", "differences": [renamed]});
    case.sim.drift(drift).await.unwrap();

    // User work: the busy tenants' stacks update for 12 s each, and every look at them holds
    // the only CloudFormation slot for 1 s.
    case.sim
        .configure(
            json!({"stack_operation_seconds": 12, "response_delays_ms": {"cloudformation:DescribeStacks": 1000}}),
        )
        .await
        .unwrap();
    let log_start = case.sim.log_position().await.unwrap();
    let changed = format!("{TEMPLATE}  Version:\n    Value: v2\n");
    apply_baseline(&case, "busy", busy_spec(&changed)).await;
    case.eventually(WITHIN, || async {
        let updates = case.sim.stack_operations().await?.into_iter().filter(|op| op.operation == "UpdateStack").count();
        anyhow::ensure!(updates == busy.len(), "{updates} of the busy tenants' updates started");
        Ok(())
    })
    .await
    .unwrap();
    let verify = json!({"metadata": {"annotations": {"silo.dev/verify": "while-busy"}}});
    case.tenants().patch("watched", &PatchParams::default(), &Patch::Merge(&verify)).await.unwrap();
    case.wait_for("watched", conditions::BASELINE_DRIFTED, "True", Duration::from_secs(180)).await.unwrap();

    // From the simulator's record: the verification read the stack while the updates ran,
    // and its DetectStackDrift went only after the last of them ended.
    let operations = case.sim.stack_operations().await.unwrap();
    let busy_until = operations
        .iter()
        .filter(|op| op.operation == "UpdateStack")
        .map(|op| op.finished.expect("every update finished"))
        .fold(0.0, f64::max);
    let log = case.sim.read_log(log_start).await.unwrap();
    let by_watched = |key: &str| -> Vec<f64> {
        log.iter()
            .filter(|e| e.key == key && e.caller_account.as_deref() == Some(watched.as_str()))
            .map(|e| e.time)
            .collect()
    };
    let reads = by_watched("cloudformation:DescribeStacks");
    let detections = by_watched("cloudformation:DetectStackDrift");
    assert!(
        reads.iter().any(|&t| t < busy_until),
        "the verification ran while the updates did: {reads:?}, {busy_until}"
    );
    assert!(!detections.is_empty(), "the drift was found, so it was detected");
    assert!(
        detections.iter().all(|&t| t >= busy_until),
        "DetectStackDrift at {detections:?}, before the user work ended at {busy_until}"
    );
}

async fn drifted_status(case: &TestCase, name: &str) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    case.tenants().get(name).await.unwrap().status.unwrap().conditions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_template_is_recreated_then_stalls_and_recovers_when_fixed() {
    let mut case = test_case().await;
    case.sim
        .configure(json!({"failing_stacks": {"^silo-baseline$": "Topic name is not allowed by the SCP"}, "stack_failure_seconds": 1}))
        .await
        .unwrap();
    case.start_controller(TestCase::config());
    apply_baseline(&case, "standard", json!({"template": TEMPLATE})).await;
    apply_tenant(&case, "flaky", json!({"name": "standard"}), json!({})).await;

    let tenant = case.wait_for("flaky", conditions::STALLED, "True", Duration::from_secs(180)).await.unwrap();
    let status = tenant.status.clone().unwrap();
    let stalled = conditions::find(&status.conditions, conditions::STALLED).unwrap();
    assert_eq!(stalled.reason, "StackCreateFailed");
    assert!(
        stalled.message.contains("Topic name is not allowed by the SCP"),
        "the first failing resource's reason: {}",
        stalled.message
    );
    assert!(!conditions::is_true(&status.conditions, conditions::BASELINE_READY));
    assert!(conditions::is_true(&status.conditions, conditions::ACCOUNT_READY));
    let stats = case.sim.stats().await.unwrap();
    assert_eq!(
        stats["stacks_failed"],
        json!(1 + silo::tenant::bootstrap::MAX_CREATE_ATTEMPTS),
        "created, then recreated N times: {stats}"
    );

    // The template is fixed (here: the fault goes away and the Baseline changes).
    case.sim.configure(json!({"failing_stacks": {}})).await.unwrap();
    let fixed = format!("{TEMPLATE}  Fixed:\n    Value: 'yes'\n");
    apply_baseline(&case, "standard", json!({"template": fixed})).await;
    wait_for_output(&case, "flaky", "Fixed", "yes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_baseline_or_undeclared_parameter_applies_nothing() {
    let mut case = test_case().await;
    case.start_controller(TestCase::config());
    apply_tenant(&case, "orphan", json!({"name": "nope"}), json!({})).await;
    let tenant = case.wait_for("orphan", conditions::BASELINE_READY, "False", WITHIN).await.unwrap();
    let reason = |t: &Tenant| {
        conditions::find(&t.status.as_ref().unwrap().conditions, conditions::BASELINE_READY).unwrap().reason.clone()
    };
    let tenant = if reason(&tenant) == "BaselineNotFound" {
        tenant
    } else {
        case.wait_for("orphan", conditions::STALLED, "True", WITHIN).await.unwrap()
    };
    assert_eq!(reason(&tenant), "BaselineNotFound");

    apply_baseline(&case, "standard", json!({"template": TEMPLATE})).await;
    apply_tenant(&case, "typo", json!({"name": "standard", "parameters": {"Evn": "prod"}}), json!({})).await;
    let tenant = case.wait_for("typo", conditions::STALLED, "True", WITHIN).await.unwrap();
    assert_eq!(reason(&tenant), "UndeclaredParameter");
    case.consistently(AFTERWARDS, || async {
        let stats = case.sim.stats().await?;
        anyhow::ensure!(stats["requests"].get("cloudformation:CreateStack").is_none(), "a stack was created: {stats}");
        Ok(())
    })
    .await
    .expect("nothing applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_not_assumable_for_20_seconds_only_delays_ready() {
    let mut case = test_case().await;
    case.sim.configure(json!({"unassumable_roles_seconds": 20})).await.unwrap();
    case.start_controller(TestCase::config());
    apply_baseline(&case, "standard", json!({"template": TEMPLATE})).await;
    // Every status newborn goes through is seen on a watch: a Stalled that lasted one write
    // fails the test (sampling every 200 ms, as this test did, could miss it).
    let stalled = case.watch_stalled(&["newborn"]).await.unwrap();
    apply_tenant(&case, "newborn", json!({"name": "standard"}), json!({})).await;

    case.wait_for_reason("newborn", conditions::BASELINE_READY, "WaitingForRole", WITHIN)
        .await
        .expect("the tenant reports WaitingForRole while the role is not assumable");
    case.wait_for("newborn", conditions::READY, "True", WITHIN).await.unwrap();
    assert_eq!(stalled.transitions().await.unwrap(), Vec::<String>::new(), "never Stalled");
    assert!(case.sim.stats().await.unwrap()["assume_role_denied"].as_u64().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_close_tenant_deletes_its_stacks_before_closing_the_account() {
    let mut case = test_case().await;
    let mut settings = TestCase::config();
    settings.allow_account_closure = true;
    settings.max_stalled_retry = Some(Duration::from_secs(6));
    case.start_controller(settings);
    // Protected stacks: Silo turns termination protection off before it deletes them.
    let spec = json!({"template": TEMPLATE, "regions": ["us-east-1", "eu-west-1"], "terminationProtection": true});
    apply_baseline(&case, "standard", spec).await;
    apply_tenant(&case, "leaving", json!({"name": "standard"}), json!({"deletionPolicy": "Close"})).await;
    let tenant = case.wait_for("leaving", conditions::READY, "True", WITHIN).await.unwrap();
    let account_id = tenant.status.unwrap().account_id.unwrap();

    // First the stacks cannot be deleted (DELETE_FAILED, as with a bucket that is not empty):
    // the Tenant stalls naming them, Silo does not send DeleteStack again on every look, and
    // the account stays open.
    let refusal = json!({"stack_failures": [{"operations": ["DeleteStack"], "reason": "The bucket is not empty"}]});
    case.sim.configure(refusal).await.unwrap();
    case.tenants().delete("leaving", &DeleteParams::default()).await.unwrap();
    let tenant = case.wait_for_reason("leaving", conditions::STALLED, "BaselineDeleteFailed", WITHIN).await.unwrap();
    let message = &conditions::find(&tenant.status.as_ref().unwrap().conditions, conditions::STALLED).unwrap().message;
    assert!(message.contains("silo-baseline in") && message.contains(&account_id), "names the stack: {message}");
    let sent = case.sim.requests("cloudformation:DeleteStack").await.unwrap();
    assert_eq!(sent, 2, "one DeleteStack per region until the stalled recheck");
    let org = case.sim.organizations();
    case.consistently(Duration::from_secs(4), || async {
        let state = org.describe_account().account_id(&account_id).send().await?;
        anyhow::ensure!(state.account().and_then(|a| a.state()).map(|s| s.as_str()) == Some("ACTIVE"), "{state:?}");
        anyhow::ensure!(case.sim.requests("organizations:CloseAccount").await? == 0, "CloseAccount was sent");
        Ok(())
    })
    .await
    .expect("no account closure while its stacks are DELETE_FAILED");
    let ops = case.sim.stack_operations().await.unwrap();
    let failed = ops.iter().filter(|op| op.operation == "DeleteStack" && op.result.as_deref() == Some("DELETE_FAILED"));
    let regions: std::collections::BTreeSet<_> = failed.map(|op| op.region.as_str()).collect();
    assert_eq!(regions.len(), 2, "a deletion failed in each region: {regions:?}");

    // Once the stacks can go, the next recheck deletes them and the closure goes on.
    case.sim.configure(json!({"stack_failures": []})).await.unwrap();
    // Each Ready reason seen while the Tenant is deleted, with whether the account was active.
    let seen = std::sync::Mutex::new(Vec::<(String, bool)>::new());
    case.eventually_every(WITHIN, Duration::from_millis(100), || async {
        let Some(tenant) = case.tenants().get_opt("leaving").await.unwrap() else { return Ok(()) };
        if let Some(ready) = tenant.status.as_ref().and_then(|s| conditions::find(&s.conditions, conditions::READY)) {
            let state = org.describe_account().account_id(&account_id).send().await.unwrap();
            let active = state.account().and_then(|a| a.state()).map(|s| s.as_str()) == Some("ACTIVE");
            let mut seen = seen.lock().unwrap();
            if seen.last().is_none_or(|(r, _)| r != &ready.reason) {
                seen.push((ready.reason.clone(), active));
            }
        }
        anyhow::bail!("not deleted yet; seen {:?}", seen.lock().unwrap())
    })
    .await
    .expect("the Tenant is deleted");
    let reasons = seen.into_inner().unwrap();
    assert!(
        reasons.iter().any(|(r, active)| r == "DeletingBaseline" && *active),
        "stacks deleted while the account was active: {reasons:?}"
    );
    for region in ["us-east-1", "eu-west-1"] {
        let config = inside(&case.sim, &account_id, region).await;
        let remaining: Vec<_> =
            stack_names(&config).await.into_iter().filter(|(_, s)| s != "DELETE_COMPLETE").collect();
        assert!(remaining.is_empty(), "stacks left in {region}: {remaining:?}");
    }
    let state = org.describe_account().account_id(&account_id).send().await.unwrap();
    assert_ne!(state.account().and_then(|a| a.state()).map(|s| s.as_str()), Some("ACTIVE"), "the account is closed");
    let turned_off = case.sim.requests("cloudformation:UpdateTerminationProtection").await.unwrap();
    assert_eq!(turned_off, 2, "termination protection turned off once per region");
}

/// The whole chain, with `silo run --session-tags=true` as a process: its own identity -> the
/// management role -> the tenant role, with the session named and tagged after the tenant, the
/// external id from a Secret and the session policy passed along. Session tags need
/// `sts:TagSession` in the tenant role's trust policy: the OrganizationAccountAccessRole that
/// CreateAccount makes refuses them (the Tenant waits for the role, naming sts:TagSession) until
/// the test adds it, as docs/install.md says to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_named_and_tagged_after_the_tenant_and_carry_the_baselines_limits() {
    use k8s_openapi::api::core::v1::Secret;
    use silo_testenv::awssim::{MANAGEMENT_ACCOUNT, trust_policy, trust_policy_allowing_tags};
    let case = test_case().await;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "silo-external-ids", "namespace": silo_testenv::EXTERNAL_ID_NAMESPACE},
        "stringData": {"standard": "ext-1234"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(case.client.clone(), silo_testenv::EXTERNAL_ID_NAMESPACE)
        .patch("silo-external-ids", &PatchParams::apply("silo-tests").force(), &Patch::Apply(&secret))
        .await
        .unwrap();
    let policy =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"cloudformation:*","Resource":"*"}]}"#;
    apply_baseline(
        &case,
        "limited",
        json!({"template": TEMPLATE, "externalId": {"name": "silo-external-ids", "key": "standard"}, "sessionPolicy": policy}),
    )
    .await;
    apply_tenant(&case, "audited", json!({"name": "limited"}), json!({})).await;
    let management_role = "arn:aws:iam::123456789012:role/silo-management";
    // The simulator enforces trust policies, and Silo's own credentials are the management
    // account, not a role: the management role must exist and trust that account. Silo tags
    // only tenant sessions, so it needs no sts:TagSession.
    let management = format!("arn:aws:iam::{MANAGEMENT_ACCOUNT}:root");
    case.sim.create_role(MANAGEMENT_ACCOUNT, "silo-management", &trust_policy(&management, None)).await.unwrap();
    let metrics = format!("127.0.0.1:{}", silo_testenv::process::free_port().unwrap());
    // Its management sessions are named after the replica (POD_NAME), as CloudTrail shows it.
    let replica = Spawn { identity: Some("silo-7d9f-replica"), ..Spawn::default() };
    let mut controller = case
        .spawn_controller_with(
            &["--session-tags=true", "--management-role-arn", management_role, "--metrics-address", &metrics],
            "chain.log",
            replica,
        )
        .unwrap();

    // The tenant role trusts the management account for sts:AssumeRole only: tagged
    // sessions are refused, and the Tenant says why while it waits.
    let waiting = case
        .eventually(WITHIN, || async {
            let tenant = case.tenants().get("audited").await?;
            let status = tenant.status.as_ref();
            let condition = status.and_then(|s| conditions::find(&s.conditions, conditions::BASELINE_READY));
            anyhow::ensure!(
                condition.is_some_and(|c| c.reason == "WaitingForRole" && c.message.contains("sts:TagSession")),
                "BaselineReady is not WaitingForRole naming sts:TagSession: {condition:?}"
            );
            Ok(tenant)
        })
        .await
        .unwrap();
    let account_id = waiting.status.unwrap().account_id.unwrap();
    let tenant_role = format!("arn:aws:iam::{account_id}:role/OrganizationAccountAccessRole");
    let trust = trust_policy_allowing_tags(&management, None);
    case.sim.update_assume_role_policy(&account_id, "OrganizationAccountAccessRole", &trust).await.unwrap();

    let tenant = case.wait_for("audited", conditions::READY, "True", WITHIN).await;
    let scraped = reqwest::get(format!("http://{metrics}/metrics")).await.unwrap().text().await.unwrap();
    let ready = reqwest::get(format!("http://{metrics}/readyz")).await.unwrap().status();
    controller.kill();
    assert!(ready.is_success());
    assert!(scraped.contains("silo_reconciles_total{controller=\"tenant\",result=\"ok\"}"), "{scraped}");
    assert!(scraped.contains("silo_milestones_total{milestone=\"AccountCreated\"} 1"), "{scraped}");
    assert_eq!(tenant.unwrap().status.unwrap().account_id.unwrap(), account_id);

    let sessions = case.sim.stats().await.unwrap()["sessions"].as_array().cloned().unwrap();
    assert!(
        sessions.iter().any(|s| s["role"] == management_role
            && s["name"] == "silo-7d9f-replica"
            && s["tags"] == json!({})
            && s["denied"].is_null()),
        "the management role is assumed first, untagged: {sessions:?}"
    );
    let tenant_sessions: Vec<&serde_json::Value> =
        sessions.iter().filter(|s| s["role"] == tenant_role.as_str() && s["name"] == "silo-audited").collect();
    assert!(
        tenant_sessions.iter().any(|s| s["tags"]["silo-tenant"] == "audited" && s["denied"] == "tag session"),
        "the role refused the tagged session before it allowed sts:TagSession: {tenant_sessions:?}"
    );
    let tenant_session = tenant_sessions
        .iter()
        .find(|s| s["denied"].is_null())
        .unwrap_or_else(|| panic!("no session into the tenant's account: {sessions:?}"));
    assert_eq!(tenant_session["tags"]["silo-tenant"], "audited");
    // The role trusts the management account and requires no external id: one is accepted.
    assert_eq!(tenant_session["external_id"], "ext-1234");
    assert_eq!(tenant_session["policy"], policy);
}
