//! The safety model, end to end: Silo never takes, tags or closes an account it cannot prove
//! is its tenant's, and recovers where a retry would do.

use std::time::Duration;

use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;
use silo::{Tenant, conditions};
use silo_testenv::{TenantFixture, TestCase, checks::AFTERWARDS, test_case};

const WITHIN: Duration = Duration::from_secs(90);
const MANAGEMENT: &str = silo_testenv::awssim::MANAGEMENT_ACCOUNT;

fn reason(tenant: &Tenant, condition: &str) -> String {
    conditions::find(&tenant.status.as_ref().unwrap().conditions, condition).unwrap().reason.clone()
}

fn message(tenant: &Tenant, condition: &str) -> String {
    conditions::find(&tenant.status.as_ref().unwrap().conditions, condition).unwrap().message.clone()
}

async fn tags_of(case: &TestCase, account_id: &str) -> Vec<(String, String)> {
    let out = case.sim.organizations().list_tags_for_resource().resource_id(account_id).send().await.unwrap();
    out.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect()
}

fn silo_tags(tags: &[(String, String)]) -> Vec<&(String, String)> {
    tags.iter().filter(|(k, _)| k.starts_with("silo.dev/")).collect()
}

/// An account made outside Silo, with the given tags.
async fn account_outside_silo(case: &TestCase, name: &str, tags: &[(&str, &str)]) -> String {
    case.sim.create_account(name, &format!("{name}@example.com"), tags).await.unwrap()
}

async fn annotate(case: &TestCase, name: &str, key: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    case.tenants().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

async fn account_state(case: &TestCase, account_id: &str) -> String {
    let out = case.sim.organizations().describe_account().account_id(account_id).send().await.unwrap();
    out.account().and_then(|a| a.state()).map(|s| s.as_str().to_string()).unwrap_or_default()
}

/// The management account is never adopted, consent or not, and never tagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_account_is_never_adopted() {
    let mut case = test_case().await;
    case.start_controller(TestCase::config());
    case.create(&TenantFixture::named("usurper").adopting(MANAGEMENT)).await.unwrap();
    annotate(&case, "usurper", "silo.dev/adopt-account", MANAGEMENT).await;
    let tenant = case.wait_for("usurper", conditions::STALLED, "True", WITHIN).await.unwrap();
    assert_eq!(reason(&tenant, conditions::STALLED), "AccountIsManagementAccount");
    case.consistently(AFTERWARDS, || async {
        let status = case.tenants().get("usurper").await?.status.unwrap_or_default();
        anyhow::ensure!(status.account_id.is_none(), "the management account was adopted: {status:?}");
        let tags = tags_of(&case, MANAGEMENT).await;
        anyhow::ensure!(silo_tags(&tags).is_empty(), "Silo tagged the management account: {tags:?}");
        Ok(())
    })
    .await
    .expect("not adopted, no Silo tag on the management account");
}

/// Adopting an account that does not carry this Tenant's UID needs the owner's consent,
/// naming that very account; with it, the account is adopted and recorded as adopted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoption_needs_consent_naming_the_account() {
    let mut case = test_case().await;
    let account = account_outside_silo(&case, "log-archive", &[("owner", "platform")]).await;
    case.start_controller(TestCase::config());
    case.create(&TenantFixture::named("newcomer").adopting(&account)).await.unwrap();
    let tenant = case.wait_for("newcomer", conditions::STALLED, "True", WITHIN).await.unwrap();
    assert_eq!(reason(&tenant, conditions::STALLED), "AdoptionNeedsConsent");
    assert!(message(&tenant, conditions::STALLED).contains(&format!("silo.dev/adopt-account: \"{account}\"")));
    case.consistently(AFTERWARDS, || async { silo_tags(&tags_of(&case, &account).await).is_empty() })
        .await
        .expect("nothing written without consent");

    annotate(&case, "newcomer", "silo.dev/adopt-account", "999999999999").await;
    case.consistently(AFTERWARDS, || async { silo_tags(&tags_of(&case, &account).await).is_empty() })
        .await
        .expect("consent for another account is not consent: no Silo tag is written");

    annotate(&case, "newcomer", "silo.dev/adopt-account", &account).await;
    let tenant = case.wait_for("newcomer", conditions::READY, "True", WITHIN).await.unwrap();
    let status = tenant.status.clone().unwrap();
    assert_eq!(status.account_id.as_deref(), Some(account.as_str()));
    assert!(status.adopted, "recorded as adopted");
    let tags = tags_of(&case, &account).await;
    assert!(tags.iter().any(|(k, v)| k == "silo.dev/tenant-uid" && Some(v) == tenant.uid().as_ref()));
    assert!(tags.iter().any(|(k, v)| k == "owner" && v == "platform"), "foreign tags stay");
}

/// A status pointing at another account (restored from a backup, or edited through the
/// status subresource) takes nothing over: another Tenant's account keeps its tag and is not
/// closed; an untagged account is not tagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_pointing_at_another_account_takes_nothing_over() {
    let mut case = test_case().await;
    let mut settings = TestCase::config();
    settings.allow_account_closure = true;
    case.start_controller(settings);
    case.create(&TenantFixture::named("victim")).await.unwrap();
    case.create(&TenantFixture::named("thief").close()).await.unwrap();
    let victim = case.wait_for("victim", conditions::READY, "True", WITHIN).await.unwrap();
    case.wait_for("thief", conditions::READY, "True", WITHIN).await.unwrap();
    let victims_account = victim.status.clone().unwrap().account_id.unwrap();

    let edit = json!({"status": {"accountId": victims_account}});
    case.tenants().patch_status("thief", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    annotate(&case, "thief", "silo.dev/verify", "1").await;
    let thief = case.wait_for("thief", conditions::STALLED, "True", WITHIN).await.unwrap();
    assert_eq!(reason(&thief, conditions::STALLED), "AccountClaimedByAnotherTenant");
    case.consistently(AFTERWARDS, || async {
        let tags = tags_of(&case, &victims_account).await;
        anyhow::ensure!(
            tags.iter().any(|(k, v)| k == "silo.dev/tenant-uid" && Some(v) == victim.uid().as_ref()),
            "the victim's UID tag was overwritten: {tags:?}"
        );
        Ok(())
    })
    .await
    .expect("the victim's UID tag is never overwritten");
    case.tenants().delete("thief", &DeleteParams::default()).await.unwrap();
    case.wait_for_reason("thief", conditions::READY, "AccountNotOwned", WITHIN)
        .await
        .expect("the thief's deletion is refused as AccountNotOwned");
    case.consistently(AFTERWARDS, || async {
        let stats = case.sim.stats().await?;
        anyhow::ensure!(stats["requests"].get("organizations:CloseAccount").is_none(), "CloseAccount sent: {stats}");
        let state = account_state(&case, &victims_account).await;
        anyhow::ensure!(state == "ACTIVE", "the victim's account is {state}");
        Ok(())
    })
    .await
    .expect("the victim's account is never closed");

    // An account without any UID tag is not tagged either.
    let untagged = account_outside_silo(&case, "bystander", &[]).await;
    case.create(&TenantFixture::named("drifter")).await.unwrap();
    case.wait_for("drifter", conditions::READY, "True", WITHIN).await.unwrap();
    let edit = json!({"status": {"accountId": untagged}});
    case.tenants().patch_status("drifter", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    annotate(&case, "drifter", "silo.dev/verify", "1").await;
    let drifter = case.wait_for("drifter", conditions::STALLED, "True", WITHIN).await.unwrap();
    assert_eq!(reason(&drifter, conditions::STALLED), "AccountOwnershipUnproven");
    case.consistently(AFTERWARDS, || async { silo_tags(&tags_of(&case, &untagged).await).is_empty() })
        .await
        .expect("the missing tag is not silently added");
}

/// Two Tenants adopting one account at once: exactly one wins, the other is told, and the
/// account's tags do not flip-flop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_adopting_one_account_at_once_one_wins() {
    let mut case = test_case().await;
    let account = account_outside_silo(&case, "contested", &[]).await;
    case.start_controller(TestCase::config());
    for name in ["claimant-a", "claimant-b"] {
        let mut tenant = TenantFixture::named(name).adopting(&account).tenant();
        tenant.annotations_mut().insert("silo.dev/adopt-account".into(), account.clone());
        case.tenants().patch(name, &PatchParams::apply("silo-tests").force(), &Patch::Apply(&tenant)).await.unwrap();
    }
    let (winner, loser) = case
        .eventually(WITHIN, || async {
            let tenants = case.tenants().list(&Default::default()).await.unwrap().items;
            let with = |condition| -> Vec<Tenant> {
                tenants
                    .iter()
                    .filter(|t| t.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, condition)))
                    .cloned()
                    .collect()
            };
            let (ready, stalled) = (with(conditions::READY), with(conditions::STALLED));
            assert!(ready.len() <= 1, "both Tenants took the account: {ready:?}");
            anyhow::ensure!(ready.len() == 1 && stalled.len() == 1, "not one winner and one loser: {tenants:?}");
            Ok((ready[0].clone(), stalled[0].clone()))
        })
        .await
        .expect("one winner and one loser");
    assert_eq!(reason(&loser, conditions::STALLED), "AccountClaimedByAnotherTenant");
    case.consistently(Duration::from_secs(4), || async {
        let tags = tags_of(&case, &account).await;
        let uid = tags.iter().find(|(k, _)| k == "silo.dev/tenant-uid").map(|(_, v)| v.clone());
        anyhow::ensure!(uid == winner.uid(), "the UID tag is {uid:?}, not the winner's {:?}", winner.uid());
        Ok(())
    })
    .await
    .expect("the UID tag stays the winner's");
}

/// Closure order under a budget of one a day: the queued Tenant keeps its baseline and its
/// account; nothing is destroyed before the closure is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_closure_leaves_everything_in_place() {
    let mut case = test_case().await;
    let mut settings = TestCase::config();
    settings.allow_account_closure = true;
    settings.max_account_closures_per_day = 1;
    case.start_controller(settings);
    let baseline = json!({
        "apiVersion": "silo.dev/v1alpha1", "kind": "Baseline", "metadata": {"name": "kept"},
        "spec": {"template": "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n"},
    });
    Api::<silo::Baseline>::all(case.client.clone())
        .patch("kept", &PatchParams::apply("silo-tests").force(), &Patch::Apply(&baseline))
        .await
        .unwrap();
    for name in ["first", "second"] {
        case.create(&TenantFixture::named(name).close().baseline("kept")).await.unwrap();
    }
    let first = case.wait_for("first", conditions::READY, "True", WITHIN).await.unwrap();
    let second = case.wait_for("second", conditions::READY, "True", WITHIN).await.unwrap();
    case.tenants().delete("first", &DeleteParams::default()).await.unwrap();
    case.wait_deleted("first", WITHIN).await.unwrap();
    case.tenants().delete("second", &DeleteParams::default()).await.unwrap();
    case.wait_for_reason("second", conditions::READY, "ClosureQueued", WITHIN).await.expect("second is queued");
    let first_account = first.status.unwrap().account_id.unwrap();
    let second_account = second.status.unwrap().account_id.unwrap();
    assert_ne!(account_state(&case, &first_account).await, "ACTIVE");
    assert_eq!(account_state(&case, &second_account).await, "ACTIVE");
    let stats = case.sim.stats().await.unwrap();
    assert_eq!(stats["requests"]["cloudformation:DeleteStack"], json!(1), "only the closed tenant's stack: {stats}");
}

/// A Tenant deleted in the crash window (intent recorded, request id not) applies its
/// deletion policy to the account it finds instead of leaving an orphan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_tenant_in_the_crash_window_closes_the_account_it_made() {
    let mut case = test_case().await;
    let tenant = case.create(&TenantFixture::named("hasty").close().paused()).await.unwrap();
    let intent = json!({"status": {"accountName": "hasty", "email": "hasty@example.com"}});
    case.tenants().patch_status("hasty", &PatchParams::default(), &Patch::Merge(&intent)).await.unwrap();
    let uid = tenant.uid().unwrap();
    let account =
        account_outside_silo(&case, "hasty", &[("silo.dev/tenant", "hasty"), ("silo.dev/tenant-uid", &uid)]).await;
    let mut settings = TestCase::config();
    settings.allow_account_closure = true;
    case.start_controller(settings);
    // The controller has seen the Tenant (its finalizer is on) before it is unpaused and deleted.
    case.wait_for("hasty", conditions::READY, "False", WITHIN).await.unwrap();
    let patch = json!({"spec": {"paused": false}});
    case.tenants().patch("hasty", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    case.tenants().delete("hasty", &DeleteParams::default()).await.unwrap();
    case.wait_deleted("hasty", WITHIN).await.unwrap();
    assert_ne!(account_state(&case, &account).await, "ACTIVE", "the account it made is closed, not orphaned");
}

/// spec.accountId set on a Tenant whose creation is already under way never yields two
/// accounts: the creation is followed to its end and the mismatch is reported. The simulator
/// accepts duplicate emails, so a second CreateAccount would make a second account and be
/// counted, not be refused with EMAIL_ALREADY_EXISTS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_id_added_during_a_creation_never_yields_two_accounts() {
    let mut case = test_case().await;
    case.sim.configure(json!({"unique_emails": false})).await.unwrap();
    let other = account_outside_silo(&case, "elsewhere", &[]).await;
    // As if the controller recorded the intent and sent CreateAccount, and then spec.accountId
    // was set before the status write landed (CEL refuses it once the intent is recorded).
    let mut tenant = TenantFixture::named("torn").adopting(&other).paused().tenant();
    tenant.annotations_mut().insert("silo.dev/adopt-account".into(), other.clone());
    let tenant =
        case.tenants().patch("torn", &PatchParams::apply("silo-tests").force(), &Patch::Apply(&tenant)).await.unwrap();
    let intent = json!({"status": {"accountName": "torn", "email": "torn@example.com"}});
    case.tenants().patch_status("torn", &PatchParams::default(), &Patch::Merge(&intent)).await.unwrap();
    let uid = tenant.uid().unwrap();
    let made = account_outside_silo(&case, "torn", &[("silo.dev/tenant", "torn"), ("silo.dev/tenant-uid", &uid)]).await;

    case.start_controller(TestCase::config());
    let patch = json!({"spec": {"paused": false}});
    case.tenants().patch("torn", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let tenant = case.wait_for("torn", conditions::STALLED, "True", WITHIN).await.unwrap();
    assert_eq!(reason(&tenant, conditions::STALLED), "AccountIdMismatch");
    assert_eq!(tenant.status.unwrap().account_id.as_deref(), Some(made.as_str()), "the account it made is its own");
    case.consistently(AFTERWARDS, || async { silo_tags(&tags_of(&case, &other).await).is_empty() })
        .await
        .expect("the other account is untouched");
    assert_eq!(case.sim.accounts_by_email().await.unwrap().get("torn@example.com"), Some(&1));
}

/// A refused MoveAccount is Stalled and retried on its period; ConcurrentModification is weather.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_placement_is_retried_and_concurrent_modification_is_weather() {
    let mut case = test_case().await;
    case.sim
        .configure(json!({"refusals": {"organizations:MoveAccount": {"code": "AccessDeniedException", "times": 1}}}))
        .await
        .unwrap();
    let mut settings = TestCase::config();
    settings.create_missing_ous = true;
    settings.max_stalled_retry = Some(Duration::from_secs(3));
    case.start_controller(settings);
    case.create(&TenantFixture::named("mover").in_ou("/Tenants")).await.unwrap();
    let tenant = case.wait_for("mover", conditions::STALLED, "True", WITHIN).await.unwrap();
    assert_eq!(reason(&tenant, conditions::STALLED), "AwsRequestRefused");
    assert!(message(&tenant, conditions::STALLED).contains("MoveAccount"));
    // The refusal is lifted (only one was configured): the retry places the account.
    case.wait_for("mover", conditions::READY, "True", WITHIN).await.unwrap();

    case.sim
        .configure(
            json!({"refusals": {"organizations:MoveAccount": {"code": "ConcurrentModificationException", "times": 2}}}),
        )
        .await
        .unwrap();
    // Every status jostled goes through is seen on a watch: a Stalled that lasted one write
    // would be seen too.
    let stalled = case.watch_stalled(&["jostled"]).await.unwrap();
    case.create(&TenantFixture::named("jostled").in_ou("/Tenants")).await.unwrap();
    case.wait_for("jostled", conditions::READY, "True", WITHIN).await.unwrap();
    assert_eq!(stalled.transitions().await.unwrap(), Vec::<String>::new(), "ConcurrentModification is not Stalled");
}

/// A role that stays unassumable is Stalled after the controller's patience, and still tried:
/// a role that does not exist, and a role whose trust policy wants another external id than
/// the Baseline's. Once the Secret holds the id the role wants, the next try gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_stays_unassumable_is_stalled_not_waited_on_forever() {
    let mut case = test_case().await;
    let mut settings = TestCase::config();
    settings.role_patience = Duration::from_secs(5);
    // Stalled tenants are tried again every 2 s rather than every 10 minutes.
    settings.max_stalled_retry = Some(Duration::from_secs(2));
    case.start_controller(settings);
    put_external_id(&case, "wrong-id").await;
    let template = "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n";
    for (name, spec) in [
        ("locked", json!({"template": template, "roleName": "MissingRole"})),
        (
            "guarded",
            json!({"template": template, "roleName": "Guarded",
                   "externalId": {"name": "silo-external-ids", "key": "guarded"}}),
        ),
    ] {
        let baseline =
            json!({"apiVersion": "silo.dev/v1alpha1", "kind": "Baseline", "metadata": {"name": name}, "spec": spec});
        Api::<silo::Baseline>::all(case.client.clone())
            .patch(name, &PatchParams::apply("silo-tests").force(), &Patch::Apply(&baseline))
            .await
            .unwrap();
    }
    case.create(&TenantFixture::named("locked-out").baseline("locked")).await.unwrap();
    case.create(&TenantFixture::named("wrong-id").baseline("guarded")).await.unwrap();
    // Once its account exists, the role Guarded is made there: it trusts the management
    // account, only with the external id right-id.
    let account = case
        .eventually(WITHIN, || async {
            let tenant = case.tenants().get("wrong-id").await.ok()?;
            tenant.status.and_then(|s| s.account_id)
        })
        .await
        .unwrap();
    let trust = silo_testenv::awssim::trust_policy(&format!("arn:aws:iam::{MANAGEMENT}:root"), Some("right-id"));
    case.sim.create_role(&account, "Guarded", &trust).await.unwrap();

    // (locked-out may already be Stalled by now: its patience is 5 s.)
    let tenant = case.wait_for("locked-out", conditions::STALLED, "True", WITHIN).await.unwrap();
    assert_eq!(reason(&tenant, conditions::STALLED), "RoleNotAssumable");
    assert!(message(&tenant, conditions::STALLED).contains("MissingRole"));
    let tenant = case.wait_for("wrong-id", conditions::STALLED, "True", WITHIN).await.unwrap();
    assert_eq!(reason(&tenant, conditions::STALLED), "RoleNotAssumable");
    assert!(message(&tenant, conditions::STALLED).contains("Guarded"));
    // The role exists: what refused Silo is its trust policy, given the Baseline's id.
    let guarded = format!("arn:aws:iam::{account}:role/Guarded");
    case.eventually(WITHIN, || async {
        let stats = case.sim.stats().await.unwrap();
        let sessions = stats["sessions"].as_array().cloned().unwrap_or_default();
        sessions.iter().any(|s| s["role"] == guarded && s["external_id"] == "wrong-id" && s["denied"] == "trust policy")
    })
    .await
    .expect("Silo's AssumeRole with the wrong external id is refused by the role's trust policy");

    put_external_id(&case, "right-id").await;
    case.wait_for("wrong-id", conditions::READY, "True", WITHIN).await.unwrap();
    let tenant = case.tenants().get("locked-out").await.unwrap();
    assert_eq!(reason(&tenant, conditions::STALLED), "RoleNotAssumable", "a missing role stays refused");
}

/// The external id Baseline "guarded" names: key `guarded` of Secret silo-external-ids.
async fn put_external_id(case: &TestCase, value: &str) {
    use k8s_openapi::api::core::v1::Secret;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "silo-external-ids", "namespace": silo_testenv::EXTERNAL_ID_NAMESPACE},
        "stringData": {"guarded": value},
    }))
    .unwrap();
    Api::<Secret>::namespaced(case.client.clone(), silo_testenv::EXTERNAL_ID_NAMESPACE)
        .patch("silo-external-ids", &PatchParams::apply("silo-tests").force(), &Patch::Apply(&secret))
        .await
        .unwrap();
}

/// OU roots: a target outside them is Stalled and nothing is created or moved; without the
/// flag, the root itself is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_accounts_go_only_under_the_allowed_ou_roots() {
    let mut case = test_case().await;
    let mut settings = TestCase::config();
    settings.create_missing_ous = true;
    settings.tenant_ou_roots = vec!["/Tenants".into()];
    case.start_controller(settings);
    case.create(&TenantFixture::named("inside").in_ou("/Tenants/Prod")).await.unwrap();
    case.create(&TenantFixture::named("outside").in_ou("/Security/Audit")).await.unwrap();
    case.wait_for("inside", conditions::READY, "True", WITHIN).await.unwrap();
    let outside = case.wait_for("outside", conditions::STALLED, "True", WITHIN).await.unwrap();
    assert_eq!(reason(&outside, conditions::STALLED), "OrganizationalUnitNotAllowed");
    assert!(message(&outside, conditions::STALLED).contains("/Tenants"));
    let org = case.sim.organizations();
    let root = org.list_roots().send().await.unwrap().roots()[0].id().unwrap().to_string();
    let account = outside.status.unwrap().account_id.unwrap();
    case.consistently(AFTERWARDS, || async {
        let units = org.list_organizational_units_for_parent().parent_id(&root).send().await?;
        let names: Vec<&str> = units.organizational_units().iter().filter_map(|u| u.name()).collect();
        anyhow::ensure!(!names.contains(&"Security"), "an OU was created outside the roots: {names:?}");
        let parent = org.list_parents().child_id(&account).send().await?;
        anyhow::ensure!(parent.parents()[0].id() == Some(root.as_str()), "the account was moved: {parent:?}");
        Ok(())
    })
    .await
    .expect("no OU is created outside the roots, and the account is not moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ou_roots_the_root_itself_is_refused() {
    let mut case = test_case().await;
    case.start_controller(TestCase::config());
    case.create(&TenantFixture::named("rooted").in_ou("/")).await.unwrap();
    let tenant = case.wait_for("rooted", conditions::STALLED, "True", WITHIN).await.unwrap();
    assert_eq!(reason(&tenant, conditions::STALLED), "OrganizationalUnitNotAllowed");
}

/// Restores: Tenants re-created with new UIDs take their old accounts back only with the
/// annotation naming their previous UID, and create nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_tenants_reclaim_their_accounts_only_with_their_previous_uid() {
    let mut case = test_case().await;
    case.start_controller(TestCase::config());
    let names = ["restored-a", "restored-b", "restored-c"];
    let mut before = vec![];
    for name in names {
        case.create(&TenantFixture::named(name).tag("team", "core")).await.unwrap();
    }
    for name in names {
        let tenant = case.wait_for(name, conditions::READY, "True", WITHIN).await.unwrap();
        before.push((tenant.uid().unwrap(), tenant.status.unwrap().account_id.unwrap()));
    }
    // The cluster is lost (Retain keeps the accounts); the manifests are applied again.
    for name in names {
        case.tenants().delete(name, &DeleteParams::default()).await.unwrap();
        case.wait_deleted(name, WITHIN).await.unwrap();
    }
    let creations_before = case.sim.requests("organizations:CreateAccount").await.unwrap();

    // restored-c without the annotation: nothing is claimed.
    case.create(&TenantFixture::named("restored-c").tag("team", "core")).await.unwrap();
    let tenant = case.wait_for("restored-c", conditions::STALLED, "True", WITHIN).await.unwrap();
    assert!(message(&tenant, conditions::STALLED).contains("silo.dev/previous-uid"), "says how to reclaim");
    let (old_uid, old_account) = &before[2];
    let tags = tags_of(&case, old_account).await;
    assert!(tags.iter().any(|(k, v)| k == "silo.dev/tenant-uid" && v == old_uid), "not claimed without the annotation");

    for (name, (old_uid, _)) in names.iter().zip(&before).take(2) {
        let mut tenant = TenantFixture::named(name).tag("team", "core").tenant();
        tenant.annotations_mut().insert("silo.dev/previous-uid".into(), old_uid.clone());
        case.tenants().patch(name, &PatchParams::apply("silo-tests").force(), &Patch::Apply(&tenant)).await.unwrap();
    }
    for (name, (_, old_account)) in names.iter().zip(&before).take(2) {
        let tenant = case.wait_for(name, conditions::READY, "True", WITHIN).await.unwrap();
        assert_eq!(tenant.status.as_ref().unwrap().account_id.as_ref(), Some(old_account), "{name}: its old account");
        let tags = tags_of(&case, old_account).await;
        assert!(
            tags.iter().any(|(k, v)| k == "silo.dev/tenant-uid" && Some(v) == tenant.uid().as_ref()),
            "{name}: the tag moved to the new UID"
        );
    }
    let created = case.sim.requests("organizations:CreateAccount").await.unwrap() - creations_before;
    assert!(created <= 1, "only restored-c (no annotation) tried to create: {created}");
}

/// Closing an adopted account needs a second consent naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_an_adopted_account_needs_a_second_consent() {
    let mut case = test_case().await;
    let account = account_outside_silo(&case, "inherited", &[]).await;
    let mut settings = TestCase::config();
    settings.allow_account_closure = true;
    case.start_controller(settings);
    let mut tenant = TenantFixture::named("heir").adopting(&account).close().tenant();
    tenant.annotations_mut().insert("silo.dev/adopt-account".into(), account.clone());
    case.tenants().patch("heir", &PatchParams::apply("silo-tests").force(), &Patch::Apply(&tenant)).await.unwrap();
    case.wait_for("heir", conditions::READY, "True", WITHIN).await.unwrap();
    case.tenants().delete("heir", &DeleteParams::default()).await.unwrap();
    case.wait_for_reason("heir", conditions::READY, "AdoptedAccountCloseNeedsConsent", WITHIN)
        .await
        .expect("an adopted account is held back from closing");
    assert_eq!(account_state(&case, &account).await, "ACTIVE");
    annotate(&case, "heir", "silo.dev/close-adopted-account", &account).await;
    case.wait_deleted("heir", WITHIN).await.unwrap();
    assert_ne!(account_state(&case, &account).await, "ACTIVE", "closed once its owner said so twice");
}

/// AWS lets an organization close 10% of its member accounts (at least 10) in 30 days: Silo
/// queues the eleventh instead of sending CloseAccount into a refusal. The simulator holds
/// that quota too (10 closures): an eleventh CloseAccount would be refused there, and the
/// tenant would show ClosureQuotaExceeded instead of ClosureQueued. Silo's own daily budget
/// is far above it, so it is not what queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closures_beyond_the_aws_quota_are_queued_not_refused() {
    let mut case = test_case().await;
    // The simulator's default closure quota is AWS's: 10% of the members, at least 10, in 30 days.
    case.raise_account_quota(20).await;
    let mut settings = TestCase::config();
    settings.allow_account_closure = true;
    settings.max_account_closures_per_day = 100;
    case.start_controller(settings);
    let names: Vec<String> = (0..11).map(|i| format!("closing-{i:02}")).collect();
    for name in &names {
        case.create(&TenantFixture::named(name).close()).await.unwrap();
    }
    case.wait_for_all(&names, conditions::READY, "True", WITHIN).await.unwrap();
    for name in &names {
        case.tenants().delete(name, &DeleteParams::default()).await.unwrap();
    }
    let queued = case
        .eventually(Duration::from_secs(120), || async {
            let left = case.tenants().list(&Default::default()).await.unwrap().items;
            let [tenant] = left.as_slice() else { anyhow::bail!("not 10 closed and 1 queued: {} left", left.len()) };
            let why = reason(tenant, conditions::READY);
            anyhow::ensure!(why == "ClosureQueued", "{} is {why}, not ClosureQueued", tenant.name_any());
            Ok(tenant.clone())
        })
        .await
        .expect("10 closed and 1 queued");
    assert!(message(&queued, conditions::READY).contains("at most 10 accounts in 30 days"));
    let stats = case.sim.stats().await.unwrap();
    assert_eq!(
        stats["requests"]["organizations:CloseAccount"],
        json!(10),
        "no CloseAccount sent into a refusal: {stats}"
    );
}
