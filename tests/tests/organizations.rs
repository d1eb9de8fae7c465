//! Several AWS organizations from one controller: every Organization object gets controllers
//! of its own, with its own management role and quotas, and each Tenant's account is made in
//! the organization it names. A real kube-apiserver, the controller in this process as Silo's
//! ServiceAccount, and the AWS simulator serving two organizations.

use std::time::Duration;

use aws_sdk_organizations::Client as Organizations;
use kube::{Api, api::PostParams};
use serde_json::json;
use silo::{
    api::{Organization, OrganizationBudgets, OrganizationSpec},
    conditions,
};
use silo_testenv::{TestCase, test_case};

const READY_WITHIN: Duration = Duration::from_secs(90);
/// The second organization's management account, and the role Silo assumes there.
const SECOND: &str = "222222222222";
const ROLE: &str = "silo-management";

async fn emails(org: &Organizations) -> Vec<String> {
    let listed = org.list_accounts().send().await.expect("ListAccounts").accounts.unwrap_or_default();
    let mut emails: Vec<String> = listed.iter().filter_map(|a| a.email().map(str::to_string)).collect();
    emails.sort();
    emails
}

/// The default organization's only creation slot stays taken (`org-held`'s CreateAccount
/// never finishes during the test), and still a Tenant of the second organization gets its
/// account, in the second organization: each has its own slots. `org-waits`, of the default
/// organization, waits for a slot all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_organization_makes_its_own_tenants_accounts_with_its_own_creation_slots() {
    let mut case = test_case().await;
    // Trust policies off: the second management account's role needs no IAM set-up there.
    let knobs = json!({"enforce_trust_policies": false, "create_account_delay_seconds": 1,
                       "create_account_delays": {"^aws\\+org-held@": 3600}});
    case.sim.configure(knobs).await.unwrap();
    let second = case.sim.another_organization(SECOND, ROLE).await.unwrap();
    // As the `silo` ServiceAccount: what it reads and writes of Organizations and Tenants
    // must be granted by Silo's RBAC.
    let mut config = TestCase::config();
    config.creation_slots = 1;
    case.start_controller_as_service_account(config).await.unwrap();
    let organizations = Api::<Organization>::all(case.client.clone());
    let spec = OrganizationSpec {
        management_role_arn: format!("arn:aws:iam::{SECOND}:role/{ROLE}"),
        budgets: OrganizationBudgets { creation_slots: Some(1), ..Default::default() },
        ..Default::default()
    };
    organizations.create(&PostParams::default(), &Organization::new("second", spec)).await.unwrap();

    case.apply("apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {name: org-held}\nspec: {}").await.unwrap();
    case.wait_for("org-held", conditions::ACCOUNT_READY, "False", READY_WITHIN).await.unwrap();
    case.apply("apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {name: org-waits}\nspec: {}").await.unwrap();
    case.apply("apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {name: org-away}\nspec: {organization: second}")
        .await
        .unwrap();

    let away = case.wait_for("org-away", conditions::READY, "True", READY_WITHIN).await.unwrap();
    let account_id = away.status.as_ref().and_then(|s| s.account_id.clone()).expect("status.accountId");
    let waits = case.tenants().get("org-waits").await.unwrap();
    let waits_status = waits.status.unwrap_or_default();
    let account = conditions::find(&waits_status.conditions, conditions::ACCOUNT_READY).expect("AccountReady");
    assert_eq!(account.reason, "WaitingForCreationSlot", "the default organization's slot is still taken");
    assert!(waits_status.create_account_request_id.is_none(), "no CreateAccount for org-waits");

    let in_second = emails(&second).await;
    assert!(in_second.contains(&"aws+org-away@example.com".to_string()), "made in the second: {in_second:?}");
    let in_default = emails(&case.sim.organizations()).await;
    assert!(!in_default.contains(&"aws+org-away@example.com".to_string()), "not in the default: {in_default:?}");
    let described = second.describe_account().account_id(&account_id).send().await.expect("DescribeAccount");
    assert_eq!(described.account.and_then(|a| a.email), Some("aws+org-away@example.com".into()));

    // The second Organization's status: what its controllers know of it.
    let published = case
        .eventually(READY_WITHIN, || async {
            let org = organizations.get("second").await.ok()?;
            let status = org.status?;
            let ready = conditions::is_true(&status.conditions, conditions::READY);
            (ready && status.members.is_some() && status.creations.in_flight == 0).then_some(status)
        })
        .await
        .unwrap();
    assert!(published.members >= Some(1), "at least org-away's account: {published:?}");
    assert!(published.leader.is_some() && published.index_refreshed_time.is_some(), "{published:?}");

    // A Tenant naming an Organization that does not exist: Stalled, and nothing in AWS.
    let before = case.sim.requests("organizations:CreateAccount").await.unwrap();
    case.apply(
        "apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {name: org-nowhere}\nspec: {organization: nowhere}",
    )
    .await
    .unwrap();
    let nowhere = case.wait_for("org-nowhere", conditions::STALLED, "True", READY_WITHIN).await.unwrap();
    let stalled = conditions::find(&nowhere.status.unwrap().conditions, conditions::STALLED).cloned().unwrap();
    assert_eq!(stalled.reason, "OrganizationNotFound");
    assert!(stalled.message.contains("Organization nowhere, which does not exist"), "{}", stalled.message);
    assert_eq!(case.sim.requests("organizations:CreateAccount").await.unwrap(), before, "no CreateAccount for it");
}
