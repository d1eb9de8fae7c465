//! The fleet engine: creation slots taken in turn, the organization index, and crash safety
//! while both are being built, against a real kube-apiserver and the AWS simulator.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use rand::Rng;
use serde_json::json;
use silo::{Tenant, conditions};
use silo_testenv::{TenantFixture, TestCase, metric, process::free_port, scrape, test_case};

const WITHIN: Duration = Duration::from_secs(120);

fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i:02}")).collect()
}

async fn create_all(case: &TestCase, names: &[String], ou: Option<&str>) {
    for name in names {
        let fixture = TenantFixture::named(name);
        let fixture = match ou {
            Some(ou) => fixture.in_ou(ou),
            None => fixture,
        };
        case.create(&fixture).await.unwrap();
    }
}

/// Event reasons recorded for each tenant, by tenant name.
async fn events_by_tenant(case: &TestCase) -> std::collections::BTreeMap<String, Vec<String>> {
    let events = Api::<Event>::all(case.client.clone()).list(&Default::default()).await.unwrap();
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for event in events.items {
        if let (Some(regarding), Some(reason)) = (&event.regarding, &event.reason) {
            out.entry(regarding.name.clone().unwrap_or_default()).or_default().push(reason.clone());
        }
    }
    out
}

/// Every tenant has exactly one account. Tests that assert it turn the simulator's email
/// uniqueness off ([`accept_duplicate_emails`]): with it on, a second CreateAccount for a
/// tenant would be refused by the simulator and never counted here.
fn assert_one_account_each(counts: &std::collections::BTreeMap<String, usize>, names: &[String]) {
    for name in names {
        assert_eq!(counts.get(&format!("aws+{name}@example.com")), Some(&1), "exactly one account for {name}");
    }
}

/// Lets the simulator make a second account with an email already in use, so that a duplicate
/// made by Silo is counted by [`assert_one_account_each`] instead of refused.
async fn accept_duplicate_emails(case: &TestCase) {
    case.sim.configure(json!({"unique_emails": false})).await.unwrap();
}

/// Creations that finish at once free their slot at once, and a tenant never adopts the
/// account it created itself (a reconcile on a cached Tenant from before its own request-id
/// write used to find its finished request in a listing and "adopt" it, leaking the slot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_instant_creations_each_get_their_own_account_and_no_slot_leaks() {
    let mut case = test_case().await;
    accept_duplicate_emails(&case).await;
    case.raise_account_quota(100).await;
    case.start_controller(TestCase::config());
    let names = names("instant", 50);
    create_all(&case, &names, None).await;
    case.wait_for_all(&names, conditions::READY, "True", WITHIN).await.unwrap();

    assert_one_account_each(&case.sim.accounts_by_email().await.unwrap(), &names);
    let events = events_by_tenant(&case).await;
    for name in &names {
        let reasons = events.get(name).cloned().unwrap_or_default();
        assert!(reasons.contains(&"AccountCreated".to_string()), "{name}: {reasons:?}");
        assert!(!reasons.contains(&"AccountAdopted".to_string()), "{name} adopted its own account: {reasons:?}");
    }
    assert_eq!(case.sim.requests("organizations:CreateAccount").await.unwrap(), 50, "one CreateAccount each");
}

/// With creations that take time, tenants wait their turn for one of the five slots and no
/// CreateAccount is ever sent into a full quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creations_wait_for_a_slot_and_never_meet_a_full_quota() {
    let mut case = test_case().await;
    case.sim.configure(json!({"create_account_delay_seconds": 2, "max_concurrent_creations": 5})).await.unwrap();
    accept_duplicate_emails(&case).await;
    case.raise_account_quota(100).await;
    case.start_controller(TestCase::config());
    let names = names("queued", 20);
    create_all(&case, &names, None).await;

    // The queue is visible while it is long.
    let waiting = case
        .eventually(WITHIN, || async {
            let tenants = case.tenants().list(&Default::default()).await.unwrap().items;
            tenants.into_iter().find(|t| {
                t.status.as_ref().is_some_and(|s| {
                    conditions::find(&s.conditions, conditions::READY)
                        .is_some_and(|c| c.reason == "WaitingForCreationSlot")
                })
            })
        })
        .await
        .expect("a tenant is seen waiting for a creation slot");
    let status = waiting.status.unwrap();
    let message = &conditions::find(&status.conditions, conditions::READY).unwrap().message;
    assert!(message.contains("in line"), "the condition says where the tenant stands: {message}");

    case.wait_for_all(&names, conditions::READY, "True", WITHIN).await.unwrap();
    let stats = case.sim.stats().await.unwrap();
    assert_eq!(
        stats["throttled"].get("organizations:CreateAccount"),
        None,
        "no CreateAccount met a full quota: {stats}"
    );
    assert_eq!(stats["requests"]["organizations:CreateAccount"], json!(20), "{stats}");
    assert_one_account_each(&case.sim.accounts_by_email().await.unwrap(), &names);
}

/// A controller killed over and over during a queued onboarding, while its organization index
/// is slow to build (the sweep's listings are held back), leaves exactly one account per
/// Tenant. A third of the kills land after AWS created an account and before the controller
/// could record the request (CreateAccount's answer is held back). The simulator accepts
/// duplicate emails here, so only Silo's own crash safety prevents a second account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_during_a_queued_onboarding_while_the_index_is_built_leave_one_account_per_tenant() {
    const TENANTS: usize = 50;
    const KILLS: usize = 15;
    const AFTER_CREATE_KILLS: usize = 5;
    let case = test_case().await;
    case.sim
        .configure(json!({
            "create_account_delay_seconds": 2,
            "response_delays_ms": {
                "organizations:CreateAccount": 1500,
                "organizations:ListAccountsForParent": 2500,
            },
            "unique_emails": false,
        }))
        .await
        .unwrap();
    case.raise_account_quota(200).await;
    let names = names("crowd", TENANTS);
    create_all(&case, &names, None).await;
    let flags = ["--concurrency", "8", "--leader-election", "false"];

    let mut rng = rand::rng();
    let (mut kills, mut after_create) = (0, 0);
    while kills < KILLS {
        let mut controller = case.spawn_controller(&flags, "crowd-controller.log").unwrap();
        let created_before = case.accounts_created().await;
        if after_create < AFTER_CREATE_KILLS {
            // Kill as soon as AWS has made an account: its answer is still held back. Within
            // 30 s, else the kill lands at that moment instead.
            if case.an_account_beyond(created_before, &controller).await {
                after_create += 1;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(rng.random_range(300..4000))).await;
        }
        controller.kill();
        kills += 1;
    }

    let mut controller = case.spawn_controller(&flags, "crowd-controller.log").unwrap();
    case.wait_for_all(&names, conditions::READY, "True", Duration::from_secs(300))
        .await
        .expect("every tenant Ready after the final restart");
    controller.kill();
    let counts = case.sim.accounts_by_email().await.unwrap();
    assert_one_account_each(&counts, &names);
    assert_eq!(counts.values().sum::<usize>(), TENANTS + 1, "one account per tenant plus the management account");
    eprintln!("{kills} SIGKILLs, {after_create} between CreateAccount and its answer");
    assert!(after_create >= 3, "enough kills hit the window between CreateAccount and the status write");
}

/// A tenant in the crash window (its intent recorded, no request id) whose account exists in
/// AWS but not in the index (listings lag) adopts that account and never makes a second one.
///
/// The email uniqueness of the simulator (as of AWS) stays on here, so the count below cannot
/// fail by itself: it is AWS's EMAIL_ALREADY_EXISTS that keeps the second account from being
/// made. With uniqueness off, Silo does make a second account in this situation (seen on
/// 2026-12-05: Ready with another account id than the one made before), so Silo's own crash
/// safety does not cover an account that is missing from the listings; see the report on
/// issue 18 before turning uniqueness off here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_missing_from_the_index_is_adopted_not_duplicated() {
    let mut case = test_case().await;
    let tenant = case.create(&TenantFixture::named("lagging").paused()).await.unwrap();
    let uid = tenant.uid().unwrap();
    // As if a controller recorded the intent, sent CreateAccount and died.
    let intent = json!({"status": {"accountName": "lagging", "email": "aws+lagging@example.com"}});
    case.tenants().patch_status("lagging", &PatchParams::default(), &Patch::Merge(&intent)).await.unwrap();
    case.sim.configure(json!({"list_accounts_lag_seconds": 20})).await.unwrap();
    let tags = [("silo.dev/tenant", "lagging"), ("silo.dev/tenant-uid", uid.as_str())];
    let existing = case.sim.create_account("lagging", "aws+lagging@example.com", &tags).await.unwrap();

    case.start_controller(TestCase::config());
    let patch = json!({"spec": {"paused": false}});
    case.tenants().patch("lagging", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let tenant = case.wait_for("lagging", conditions::READY, "True", Duration::from_secs(180)).await.unwrap();
    assert_eq!(tenant.status.unwrap().account_id.as_deref(), Some(existing.as_str()));
    let counts = case.sim.accounts_by_email().await.unwrap();
    assert_eq!(counts.get("aws+lagging@example.com"), Some(&1), "never duplicated");
}

/// A Tenant applied while the index is still being built is not held back by it: it is
/// Ready before the first sweep completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_applied_while_the_index_is_built_does_not_wait_for_it() {
    let case = test_case().await;
    // The sweep's listing of each parent's accounts takes a minute: the Tenant has that long
    // to be Ready, which is many times what it needs even on a loaded machine.
    case.sim.configure(json!({"response_delays_ms": {"organizations:ListAccountsForParent": 60000}})).await.unwrap();
    let metrics = format!("127.0.0.1:{}", free_port().unwrap());
    let mut controller = case
        .spawn_controller(
            &["--leader-election", "false", "--create-missing-ous", "--metrics-address", &metrics],
            "early-controller.log",
        )
        .unwrap();
    case.create(&TenantFixture::named("early").in_ou("/Tenants/Early")).await.unwrap();
    case.wait_for("early", conditions::READY, "True", WITHIN).await.unwrap();
    let exposition = scrape(&metrics).await.unwrap();
    assert_eq!(
        metric(&exposition, "silo_index_complete{organization=\"default\"}"),
        Some(0.0),
        "Ready before the index was built"
    );

    // The index does get built (a listing per parent, a minute each).
    case.eventually(3 * WITHIN, || async {
        metric(&scrape(&metrics).await.unwrap(), "silo_index_complete{organization=\"default\"}") == Some(1.0)
    })
    .await
    .expect("the index is built");
    let exposition = scrape(&metrics).await.unwrap();
    assert_eq!(
        metric(&exposition, "silo_index_accounts{organization=\"default\"}"),
        Some(2.0),
        "the management account and early's"
    );
    controller.kill();
}

/// The organization under a running controller is replaced (the simulator is reset and
/// creates a new organization; its process keeps running): the index notices, is rebuilt, and
/// new work happens in the new organization; a tenant whose account vanished says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_is_rebuilt_when_the_organization_is_replaced() {
    let mut case = test_case().await;
    let mut settings = TestCase::config();
    settings.create_missing_ous = true;
    case.start_controller(settings);
    case.create(&TenantFixture::named("before").in_ou("/Tenants/A")).await.unwrap();
    case.wait_for("before", conditions::READY, "True", WITHIN).await.unwrap();

    case.sim.reset().await.unwrap();
    case.create(&TenantFixture::named("after").in_ou("/Tenants/B")).await.unwrap();
    let tenant = case.wait_for("after", conditions::READY, "True", WITHIN).await.unwrap();
    let status = tenant.status.unwrap();
    let org = case.sim.organizations();
    let parents = org.list_parents().child_id(status.account_id.clone().unwrap()).send().await.unwrap();
    let parent = parents.parents()[0].id().unwrap().to_string();
    assert_eq!(status.organizational_unit_id.as_deref(), Some(parent.as_str()));
    let ou = org.describe_organizational_unit().organizational_unit_id(&parent).send().await.unwrap();
    assert_eq!(ou.organizational_unit().and_then(|u| u.name()), Some("B"), "placed in the new organization's OU");

    // The first tenant's account is gone with the old organization: a spec change shows it.
    case.create(&TenantFixture::named("before").in_ou("/Tenants/A").tag("touched", "yes")).await.unwrap();
    let tenant: Tenant = case.wait_for("before", conditions::STALLED, "True", WITHIN).await.unwrap();
    let reason = conditions::find(&tenant.status.unwrap().conditions, conditions::STALLED).unwrap().reason.clone();
    assert_eq!(reason, "AccountNotInOrganization");
}

/// A Ready tenant is left alone until its verification is due: status writes (Silo's own,
/// the Baseline controller's) and metadata noise (labels a GitOps tool adds) trigger no
/// reconcile and no AWS request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_tenant_is_left_alone_until_its_verification_is_due() {
    let mut case = test_case().await;
    case.start_controller(TestCase::config());
    let baseline = json!({
        "apiVersion": "silo.dev/v1alpha1", "kind": "Baseline", "metadata": {"name": "quiet"},
        "spec": {"template": "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n"},
    });
    Api::<silo::Baseline>::all(case.client.clone())
        .patch("quiet", &PatchParams::apply("silo-tests").force(), &Patch::Apply(&baseline))
        .await
        .unwrap();
    let names = names("calm", 3);
    for name in &names {
        case.create(&TenantFixture::named(name).tag("team", "a").baseline("quiet")).await.unwrap();
    }
    case.wait_for_all(&names, conditions::READY, "True", WITHIN).await.unwrap();
    // The Baseline controller counts the tenants (it writes the Baseline's status).
    case.eventually(WITHIN, || async {
        let baseline = Api::<silo::Baseline>::all(case.client.clone()).get("quiet").await.unwrap();
        baseline.status.is_some_and(|s| s.tenants.current == 3)
    })
    .await
    .expect("the Baseline counts its 3 tenants");
    let before = case.sim.per_account_requests().await.unwrap();
    for name in &names {
        let labels = json!({"metadata": {"labels": {"argocd.argoproj.io/instance": "fleet"}}});
        case.tenants().patch(name, &PatchParams::default(), &Patch::Merge(&labels)).await.unwrap();
    }
    let recount = json!({"status": {"tenants": {"current": 0, "inProgress": 0, "failed": 0}}});
    Api::<silo::Baseline>::all(case.client.clone())
        .patch_status("quiet", &PatchParams::default(), &Patch::Merge(&recount))
        .await
        .unwrap();
    case.consistently(Duration::from_secs(10), || async {
        let after = case.sim.per_account_requests().await?;
        anyhow::ensure!(after == before, "{} AWS requests: {}", after - before, case.sim.stats().await?);
        Ok(())
    })
    .await
    .expect("no AWS request for Ready tenants between verifications");
}

/// A restarted controller does not verify the fleet again: each tenant waits for its turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_verify_the_fleet_again() {
    let case = test_case().await;
    let flags = ["--leader-election", "false"];
    case.raise_account_quota(20).await;
    let mut controller = case.spawn_controller(&flags, "restart-controller.log").unwrap();
    let names = names("steady", 10);
    create_all(&case, &names, None).await;
    case.wait_for_all(&names, conditions::READY, "True", WITHIN).await.unwrap();
    controller.kill();

    let before = case.sim.per_account_requests().await.unwrap();
    let mut controller = case.spawn_controller(&flags, "restart-controller.log").unwrap();
    // A new tenant after the restart is served at once...
    case.create(&TenantFixture::named("newcomer")).await.unwrap();
    case.wait_for("newcomer", conditions::READY, "True", WITHIN).await.unwrap();
    // ... with CreateAccount, DescribeCreateAccountStatus at most, and nothing for the others.
    case.consistently(Duration::from_secs(5), || async {
        let spent = case.sim.per_account_requests().await? - before;
        anyhow::ensure!(spent <= 2, "{spent} requests: {}", case.sim.stats().await?);
        Ok(())
    })
    .await
    .expect("only the newcomer's requests after a restart, not the fleet's");
    controller.kill();
}

/// The verify annotation has a tenant verified now (drift repaired at once), and is acted on
/// once: nobody has to remove it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verify_annotation_verifies_now_once() {
    let mut case = test_case().await;
    case.start_controller(TestCase::config());
    case.create(&TenantFixture::named("checked").tag("team", "core")).await.unwrap();
    let tenant = case.wait_for("checked", conditions::READY, "True", WITHIN).await.unwrap();
    let account_id = tenant.status.unwrap().account_id.unwrap();
    let org = case.sim.organizations();
    org.untag_resource().resource_id(&account_id).tag_keys("team").send().await.unwrap();

    let annotate = json!({"metadata": {"annotations": {"silo.dev/verify": "2026-12-01T12:00"}}});
    case.tenants().patch("checked", &PatchParams::default(), &Patch::Merge(&annotate)).await.unwrap();
    case.eventually(WITHIN, || async {
        let tags = org.list_tags_for_resource().resource_id(&account_id).send().await.unwrap();
        tags.tags().iter().any(|t| t.key() == "team" && t.value() == "core")
    })
    .await
    .expect("the requested verification repairs the tag");
    case.eventually(WITHIN, || async {
        case.tenants().get("checked").await.unwrap().status.unwrap().verified_request.as_deref()
            == Some("2026-12-01T12:00")
    })
    .await
    .expect("status.verifiedRequest records the request");
    let before = case.sim.requests("organizations:ListTagsForResource").await.unwrap();
    case.consistently(Duration::from_secs(5), || async {
        case.sim.requests("organizations:ListTagsForResource").await.unwrap() == before
    })
    .await
    .expect("the request is acted on once");
}
