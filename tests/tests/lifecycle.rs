//! The first slice of the account lifecycle, end to end: a real kube-apiserver, the Tenant
//! controller in this process, and the AWS simulator behind its fault layer.

use std::time::Duration;

use aws_sdk_organizations::Client as Organizations;
use k8s_openapi::api::events::v1::Event;
use kube::{Api, ResourceExt, api::DeleteParams};
use serde_json::json;
use silo::{Tenant, conditions};
use silo_testenv::{TestCase, test_case};

const READY_WITHIN: Duration = Duration::from_secs(90);

/// Every account of the simulated organization, with its tags.
async fn accounts(org: &Organizations) -> Vec<(aws_sdk_organizations::types::Account, Vec<(String, String)>)> {
    let listed = org.list_accounts().send().await.expect("ListAccounts").accounts.unwrap_or_default();
    let mut out = vec![];
    for account in listed {
        let id = account.id().unwrap_or_default().to_string();
        let tags = org.list_tags_for_resource().resource_id(&id).send().await.expect("ListTagsForResource");
        out.push((account, tags.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect()));
    }
    out
}

async fn accounts_with_email(case: &TestCase, email: &str) -> usize {
    accounts(&case.sim.organizations()).await.iter().filter(|(a, _)| a.email() == Some(email)).count()
}

async fn event_reasons(case: &TestCase, tenant: &Tenant) -> Vec<String> {
    let events = Api::<Event>::all(case.client.clone()).list(&Default::default()).await.expect("list events");
    events
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == tenant.uid().as_deref())
        .filter_map(|e| e.reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_gets_one_tagged_account_and_retain_keeps_it_after_deletion() {
    let mut case = test_case().await;
    // The simulator accepts duplicate emails here, so "exactly one account" below would see a
    // second account made by Silo instead of the simulator refusing it.
    case.sim.configure(json!({"unique_emails": false})).await.unwrap();
    eprintln!(
        "lifecycle against kube-apiserver {} and the AWS simulator at {}",
        case.info.kube_version, case.sim.endpoint
    );
    case.start_controller(TestCase::config());
    case.apply(
        "apiVersion: silo.dev/v1alpha1
kind: Tenant
metadata: {name: acme}
spec:
  tags: {cost-center: '1042'}",
    )
    .await
    .unwrap();

    let tenant = case.wait_for("acme", conditions::READY, "True", READY_WITHIN).await.unwrap();
    let status = tenant.status.clone().unwrap();
    let account_id = status.account_id.clone().expect("status.accountId");
    assert_eq!(account_id.len(), 12, "an AWS account id has 12 digits: {account_id}");
    assert_eq!(status.email.as_deref(), Some("aws+acme@example.com"));
    assert_eq!(status.account_name.as_deref(), Some("acme"));
    assert!(status.create_account_request_id.is_some(), "the request id is recorded");
    assert_eq!(status.phase.as_deref(), Some("Ready"));
    assert_eq!(status.observed_generation, tenant.metadata.generation);
    for condition in
        [conditions::ACCOUNT_READY, conditions::PLACEMENT_READY, conditions::SETTINGS_READY, conditions::BASELINE_READY]
    {
        assert!(conditions::is_true(&status.conditions, condition), "{condition} is True");
    }
    assert!(!conditions::is_true(&status.conditions, conditions::RECONCILING));
    assert!(!conditions::is_true(&status.conditions, conditions::STALLED));
    assert!(tenant.finalizers().contains(&silo::contract::FINALIZER.to_string()));

    let all = accounts(&case.sim.organizations()).await;
    let mine: Vec<_> = all.iter().filter(|(a, _)| a.email() == Some("aws+acme@example.com")).collect();
    assert_eq!(mine.len(), 1, "exactly one account for the tenant");
    let (account, tags) = mine[0];
    assert_eq!(account.id(), Some(account_id.as_str()));
    let tag = |k: &str| tags.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(tag("silo.dev/tenant").as_deref(), Some("acme"));
    assert_eq!(tag("silo.dev/tenant-uid"), tenant.uid());
    assert_eq!(tag("cost-center").as_deref(), Some("1042"));

    let reasons = event_reasons(&case, &tenant).await;
    assert!(reasons.contains(&"AccountCreationRequested".to_string()), "events: {reasons:?}");
    assert!(reasons.contains(&"AccountCreated".to_string()), "events: {reasons:?}");

    case.tenants().delete("acme", &DeleteParams::default()).await.unwrap();
    case.wait_deleted("acme", Duration::from_secs(30)).await.unwrap();
    let org = case.sim.organizations();
    let kept = org.describe_account().account_id(&account_id).send().await.expect("the account still exists");
    assert_eq!(kept.account().and_then(|a| a.state()).map(|s| s.as_str()), Some("ACTIVE"), "Retain keeps the account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_account_is_adopted_by_id_without_creating_anything() {
    let mut case = test_case().await;
    let org = case.sim.organizations();
    let account_id = case.sim.create_account("legacy", "legacy@example.com", &[]).await.unwrap();

    case.start_controller(TestCase::config());
    case.apply(&format!(
        "apiVersion: silo.dev/v1alpha1
kind: Tenant
metadata: {{name: legacy, annotations: {{silo.dev/adopt-account: '{account_id}'}}}}
spec: {{accountId: '{account_id}'}}"
    ))
    .await
    .unwrap();
    let tenant = case.wait_for("legacy", conditions::READY, "True", READY_WITHIN).await.unwrap();
    let status = tenant.status.clone().unwrap();
    assert_eq!(status.account_id.as_deref(), Some(account_id.as_str()));
    assert!(status.create_account_request_id.is_none(), "nothing was created");
    assert_eq!(accounts(&org).await.len(), 2, "the management account and the adopted one, nothing more");
    let stats = case.sim.stats().await.unwrap();
    assert_eq!(
        stats["requests"]["organizations:CreateAccount"],
        json!(1),
        "only the test's own CreateAccount: {stats}"
    );
    let tags = org.list_tags_for_resource().resource_id(&account_id).send().await.unwrap();
    assert!(tags.tags().iter().any(|t| t.key() == "silo.dev/tenant-uid" && Some(t.value()) == tenant.uid().as_deref()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_placed_by_ou_path_and_missing_ous_are_created_when_allowed() {
    let mut case = test_case().await;
    let mut settings = TestCase::config();
    settings.create_missing_ous = true;
    case.start_controller(settings);
    case.apply(
        "apiVersion: silo.dev/v1alpha1
kind: Tenant
metadata: {name: globex}
spec: {organizationalUnit: /Tenants/Production}",
    )
    .await
    .unwrap();
    let tenant = case.wait_for("globex", conditions::READY, "True", READY_WITHIN).await.unwrap();
    let status = tenant.status.unwrap();
    let ou = status.organizational_unit_id.expect("status records the parent");
    assert!(ou.starts_with("ou-"), "placed in an OU, not the root: {ou}");

    let org = case.sim.organizations();
    let parents = org.list_parents().child_id(status.account_id.unwrap()).send().await.unwrap();
    assert_eq!(parents.parents()[0].id(), Some(ou.as_str()));
    let described = org.describe_organizational_unit().organizational_unit_id(&ou).send().await.unwrap();
    assert_eq!(described.organizational_unit().and_then(|u| u.name()), Some("Production"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_ou_stalls_the_tenant_with_a_message_saying_what_to_do() {
    let mut case = test_case().await;
    case.start_controller(TestCase::config());
    case.apply(
        "apiVersion: silo.dev/v1alpha1
kind: Tenant
metadata: {name: nowhere}
spec: {organizationalUnit: /Does/Not/Exist}",
    )
    .await
    .unwrap();
    let tenant = case.wait_for("nowhere", conditions::STALLED, "True", READY_WITHIN).await.unwrap();
    let status = tenant.status.unwrap();
    let stalled = conditions::find(&status.conditions, conditions::STALLED).unwrap();
    assert_eq!(stalled.reason, "OrganizationalUnitNotFound");
    assert!(stalled.message.contains("/Does/Not/Exist") && stalled.message.contains("--create-missing-ous"));
    assert!(conditions::is_true(&status.conditions, conditions::ACCOUNT_READY), "the account itself is fine");
    assert_eq!(status.phase.as_deref(), Some("Stalled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_tenant_makes_no_aws_calls() {
    let mut case = test_case().await;
    case.start_controller(TestCase::config());
    case.apply(
        "apiVersion: silo.dev/v1alpha1
kind: Tenant
metadata: {name: sleepy}
spec: {paused: true}",
    )
    .await
    .unwrap();
    let tenant = case.wait_for("sleepy", conditions::READY, "False", READY_WITHIN).await.unwrap();
    let status = tenant.status.unwrap();
    assert_eq!(conditions::find(&status.conditions, conditions::READY).unwrap().reason, "Paused");
    assert_eq!(status.phase.as_deref(), Some("Paused"));
    // The controller reads the whole organization once at start (its index); nothing else,
    // then or in the seconds after.
    case.consistently(Duration::from_secs(2), || async {
        let tenant_calls = case.sim.per_account_requests().await?;
        anyhow::ensure!(tenant_calls == 0, "{tenant_calls} calls: {}", case.sim.stats().await?);
        Ok(())
    })
    .await
    .expect("a paused tenant makes no AWS calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_without_allow_account_closure_waits_for_a_person() {
    let mut case = test_case().await;
    case.start_controller(TestCase::config());
    case.apply(
        "apiVersion: silo.dev/v1alpha1
kind: Tenant
metadata: {name: doomed}
spec: {deletionPolicy: Close}",
    )
    .await
    .unwrap();
    let tenant = case.wait_for("doomed", conditions::READY, "True", READY_WITHIN).await.unwrap();
    let account_id = tenant.status.unwrap().account_id.unwrap();

    case.tenants().delete("doomed", &DeleteParams::default()).await.unwrap();
    let tenant = case.wait_for("doomed", conditions::STALLED, "True", READY_WITHIN).await.unwrap();
    let stalled = conditions::find(&tenant.status.as_ref().unwrap().conditions, conditions::STALLED).unwrap().clone();
    assert_eq!(stalled.reason, "AccountClosureDisabled");
    assert!(tenant.finalizers().contains(&silo::contract::FINALIZER.to_string()), "the finalizer holds the Tenant");
    let org = case.sim.organizations();
    let account = org.describe_account().account_id(&account_id).send().await.unwrap();
    assert_eq!(account.account().and_then(|a| a.state()).map(|s| s.as_str()), Some("ACTIVE"));
    assert_eq!(case.sim.stats().await.unwrap()["requests"].get("organizations:CloseAccount"), None);

    // The documented way out: switch to Retain.
    let patch = json!({"spec": {"deletionPolicy": "Retain"}});
    case.tenants().patch("doomed", &Default::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    case.wait_deleted("doomed", Duration::from_secs(60)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_creations_are_polled_and_reported_as_reconciling() {
    let mut case = test_case().await;
    // Duplicate emails are accepted, so a CreateAccount sent again while the first is still
    // in progress would make a second account and be counted at the end, not refused.
    case.sim.configure(json!({"create_account_delay_seconds": 8, "unique_emails": false})).await.unwrap();
    case.start_controller(TestCase::config());
    case.apply(
        "apiVersion: silo.dev/v1alpha1
kind: Tenant
metadata: {name: patient}
spec: {}",
    )
    .await
    .unwrap();
    // Reconciling comes first with WaitingForCreationSlot while the creation slots are counted
    // at start-up, then with CreatingAccount while AWS creates the account.
    let tenant = case.wait_for_reason("patient", conditions::READY, "CreatingAccount", READY_WITHIN).await.unwrap();
    let status = tenant.status.unwrap();
    assert!(conditions::is_true(&status.conditions, conditions::RECONCILING), "{status:?}");
    assert_eq!(status.phase.as_deref(), Some("Creating"));
    assert!(status.account_id.is_none());
    case.wait_for("patient", conditions::READY, "True", READY_WITHIN).await.unwrap();
    assert_eq!(accounts_with_email(&case, "aws+patient@example.com").await, 1);
}
