//! The account lifecycle against AWS's less happy paths: emails already taken, out-of-band
//! changes, OU moves, account quotas, and deletion with closure and its budget.

use std::time::Duration;

use aws_sdk_organizations::{Client as Organizations, types::Tag};
use k8s_openapi::api::{core::v1::ConfigMap, events::v1::Event};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::json;
use silo::{Tenant, conditions, tenant::closure::LEDGER_NAME};
use silo_testenv::{CONTROLLER_NAMESPACE, TestCase, checks::AFTERWARDS, test_case};

const WITHIN: Duration = Duration::from_secs(90);

async fn tags_of(org: &Organizations, account_id: &str) -> Vec<(String, String)> {
    let out = org.list_tags_for_resource().resource_id(account_id).send().await.expect("ListTagsForResource");
    out.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect()
}

async fn parent_of(org: &Organizations, account_id: &str) -> String {
    let out = org.list_parents().child_id(account_id).send().await.expect("ListParents");
    out.parents()[0].id().unwrap().to_string()
}

/// How often an event was recorded for the tenant (repeats are folded into a series).
async fn event_count(case: &TestCase, tenant: &Tenant, reason: &str) -> usize {
    let events = Api::<Event>::all(case.client.clone()).list(&Default::default()).await.expect("list events");
    events
        .items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == tenant.uid().as_deref())
        .filter(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.series.as_ref().map_or(1, |s| s.count as usize))
        .sum()
}

/// [`TestCase::eventually`] for a probe and a check of what it saw: waits until `check`
/// holds, or fails with what it last saw.
async fn eventually_sees<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    case: &TestCase,
    what: &str,
    mut probe: impl FnMut() -> F,
    check: impl Fn(&T) -> bool,
) -> T {
    let check = &check;
    case.eventually(WITHIN, || {
        let seen = probe();
        async move {
            let seen = seen.await;
            anyhow::ensure!(check(&seen), "last saw {seen:?}");
            Ok(seen)
        }
    })
    .await
    .unwrap_or_else(|err| panic!("{what}: {err:#}"))
}

fn reason_of(tenant: &Tenant, condition: &str) -> String {
    conditions::find(&tenant.status.as_ref().unwrap().conditions, condition).unwrap().reason.clone()
}

/// Creates an account out of band, as if by an earlier controller, carrying the given UID.
async fn create_account_outside_silo(case: &TestCase, name: &str, email: &str, uid: &str) -> String {
    let tags = [("silo.dev/tenant", name), ("silo.dev/tenant-uid", uid)];
    case.sim.create_account(&format!("{name}-from-before"), email, &tags).await.unwrap()
}

async fn paused_tenant(case: &TestCase, name: &str) -> Tenant {
    case.apply(&format!(
        "apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {name}}}\nspec: {{paused: true}}"
    ))
    .await
    .unwrap()
}

async fn unpause(case: &TestCase, name: &str) {
    let patch = json!({"spec": {"paused": false}});
    case.tenants().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_already_exists_with_this_tenants_uid_is_adopted() {
    let mut case = test_case().await;
    let tenant = paused_tenant(&case, "phoenix").await;
    let uid = tenant.uid().unwrap();
    // ListAccounts lags (eventual consistency), so Silo's look for earlier work misses the
    // account and CreateAccount fails with EMAIL_ALREADY_EXISTS.
    case.sim.configure(json!({"list_accounts_lag_seconds": 20})).await.unwrap();
    let existing = create_account_outside_silo(&case, "phoenix", "aws+phoenix@example.com", &uid).await;

    case.start_controller(TestCase::config());
    unpause(&case, "phoenix").await;
    let tenant = case.wait_for("phoenix", conditions::READY, "True", WITHIN).await.unwrap();
    assert_eq!(tenant.status.as_ref().unwrap().account_id.as_deref(), Some(existing.as_str()));
    let stats = case.sim.stats().await.unwrap();
    assert_eq!(stats["create_account_failures"]["EMAIL_ALREADY_EXISTS"], json!(1), "{stats}");
    assert_eq!(stats["accounts_created"], json!(1), "only the out-of-band account exists: {stats}");
    assert_eq!(event_count(&case, &tenant, "AccountAdopted").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_already_exists_with_another_uid_is_refused() {
    let mut case = test_case().await;
    paused_tenant(&case, "icarus").await;
    case.sim.configure(json!({"list_accounts_lag_seconds": 5})).await.unwrap();
    let existing = create_account_outside_silo(&case, "someone-else", "aws+icarus@example.com", "another-uid").await;

    case.start_controller(TestCase::config());
    unpause(&case, "icarus").await;
    let tenant = case.wait_for("icarus", conditions::STALLED, "True", WITHIN).await.unwrap();
    assert_eq!(reason_of(&tenant, conditions::STALLED), "EmailInUse");
    let message = &conditions::find(&tenant.status.as_ref().unwrap().conditions, conditions::STALLED).unwrap().message;
    assert!(message.contains(&existing) && message.contains("spec.email"), "says whose and what to do: {message}");
    let org = case.sim.organizations();
    case.consistently(AFTERWARDS, || async {
        let status = case.tenants().get("icarus").await?.status.unwrap_or_default();
        anyhow::ensure!(status.account_id.is_none(), "an account was adopted: {status:?}");
        let tags = tags_of(&org, &existing).await;
        anyhow::ensure!(!tags.iter().any(|(_, v)| v == &tenant.uid().unwrap()), "the account was tagged: {tags:?}");
        Ok(())
    })
    .await
    .expect("nothing adopted, the account untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopting_an_account_claimed_by_another_tenant_is_refused() {
    let mut case = test_case().await;
    let existing = create_account_outside_silo(&case, "owner", "owner@example.com", "owner-uid").await;
    case.start_controller(TestCase::config());
    case.apply(&format!(
        "apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: thief}}\nspec: {{accountId: '{existing}'}}"
    ))
    .await
    .unwrap();
    let tenant = case.wait_for("thief", conditions::STALLED, "True", WITHIN).await.unwrap();
    assert_eq!(reason_of(&tenant, conditions::STALLED), "AccountClaimedByAnotherTenant");
    let org = case.sim.organizations();
    case.consistently(AFTERWARDS, || async {
        let status = case.tenants().get("thief").await?.status.unwrap_or_default();
        anyhow::ensure!(status.account_id.is_none(), "the account was adopted: {status:?}");
        let tags = tags_of(&org, &existing).await;
        let owner =
            tags.iter().filter(|(k, _)| k == "silo.dev/tenant-uid").map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        anyhow::ensure!(owner == ["owner-uid"], "the owner's tag changed: {tags:?}");
        Ok(())
    })
    .await
    .expect("nothing adopted, the owner's tag untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_ou_moves_the_account_and_moves_out_of_band_are_undone() {
    let mut case = test_case().await;
    let mut settings = TestCase::config();
    settings.create_missing_ous = true;
    settings.resync_period = Duration::from_secs(2);
    settings.index_refresh_period = Duration::from_secs(2);
    case.start_controller(settings);
    case.apply(
        "apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {name: nomad}\nspec: {organizationalUnit: /Tenants/A}",
    )
    .await
    .unwrap();
    let tenant = case.wait_for("nomad", conditions::READY, "True", WITHIN).await.unwrap();
    let status = tenant.status.clone().unwrap();
    let account_id = status.account_id.unwrap();
    let in_a = status.organizational_unit_id.unwrap();
    let org = case.sim.organizations();
    assert_eq!(parent_of(&org, &account_id).await, in_a);

    // The spec changes: the account moves.
    let patch = json!({"spec": {"organizationalUnit": "/Tenants/B"}});
    case.tenants().patch("nomad", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let in_b = case
        .eventually(WITHIN, || async {
            let tenant = case.tenants().get("nomad").await?;
            let status = tenant.status.clone().unwrap();
            anyhow::ensure!(
                status.observed_generation == tenant.metadata.generation
                    && conditions::is_true(&status.conditions, conditions::READY)
                    && status.organizational_unit_id.as_deref() != Some(in_a.as_str()),
                "not moved to /Tenants/B: {status:?}"
            );
            Ok(status.organizational_unit_id.unwrap())
        })
        .await
        .expect("the account moves to /Tenants/B");
    assert_eq!(parent_of(&org, &account_id).await, in_b);

    // Someone moves it back to A by hand: drift is repaired on the next verification.
    org.move_account()
        .account_id(&account_id)
        .source_parent_id(&in_b)
        .destination_parent_id(&in_a)
        .send()
        .await
        .unwrap();
    case.eventually(WITHIN, || async { parent_of(&org, &account_id).await == in_b })
        .await
        .expect("the out-of-band move is undone");
    // The event follows the move, so it may be recorded a moment after the move is seen.
    let tenant = case.tenants().get("nomad").await.unwrap();
    let moves = || event_count(&case, &tenant, "AccountMoved");
    eventually_sees(&case, "initial placement, spec change and repair recorded", moves, |n| *n >= 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_drift_is_repaired_without_touching_foreign_tags() {
    let mut case = test_case().await;
    let mut settings = TestCase::config();
    settings.resync_period = Duration::from_secs(2);
    settings.index_refresh_period = Duration::from_secs(2);
    case.start_controller(settings);
    case.apply(
        "apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {name: tidy}\nspec: {tags: {team: core, tier: gold}}",
    )
    .await
    .unwrap();
    let tenant = case.wait_for("tidy", conditions::READY, "True", WITHIN).await.unwrap();
    let account_id = tenant.status.clone().unwrap().account_id.unwrap();
    let org = case.sim.organizations();

    // Out of band: a Silo tag is removed, one of the tenant's tags changed, a foreign tag added.
    org.untag_resource().resource_id(&account_id).tag_keys("silo.dev/tenant").send().await.unwrap();
    let foreign = [
        Tag::builder().key("team").value("hijacked").build().unwrap(),
        Tag::builder().key("owner").value("finance").build().unwrap(),
    ];
    org.tag_resource().resource_id(&account_id).set_tags(Some(foreign.to_vec())).send().await.unwrap();

    let tags = eventually_sees(
        &case,
        "tags repaired",
        || tags_of(&org, &account_id),
        |tags| {
            let has = |k: &str, v: &str| tags.iter().any(|(key, val)| key == k && val == v);
            has("team", "core") && has("silo.dev/tenant", "tidy")
        },
    )
    .await;
    assert!(tags.iter().any(|(k, v)| k == "owner" && v == "finance"), "the foreign tag stays: {tags:?}");
    eventually_sees(&case, "the repair recorded", || event_count(&case, &tenant, "TagsRepaired"), |n| *n >= 1).await;

    // A key leaves the spec: Silo removes it, because Silo applied it; the foreign tag stays.
    let patch = json!({"spec": {"tags": {"team": "core", "tier": null}}});
    case.tenants().patch("tidy", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let tags = eventually_sees(
        &case,
        "tier removed",
        || tags_of(&org, &account_id),
        |tags| !tags.iter().any(|(k, _)| k == "tier"),
    )
    .await;
    assert!(tags.iter().any(|(k, v)| k == "owner" && v == "finance"), "the foreign tag stays: {tags:?}");
    // The status forgets the key too (it is written right after the AWS calls).
    let applied = eventually_sees(
        &case,
        "status forgets tier",
        || async { case.tenants().get("tidy").await.unwrap().status.unwrap().applied_tag_keys },
        |keys| !keys.contains(&"tier".to_string()),
    )
    .await;
    assert!(applied.contains(&"team".to_string()), "{applied:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_suspended_out_of_band_stalls_the_tenant() {
    let mut case = test_case().await;
    let mut settings = TestCase::config();
    settings.resync_period = Duration::from_secs(2);
    settings.index_refresh_period = Duration::from_secs(2);
    case.start_controller(settings);
    case.apply("apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {name: frozen}\nspec: {}").await.unwrap();
    let tenant = case.wait_for("frozen", conditions::READY, "True", WITHIN).await.unwrap();
    let account_id = tenant.status.unwrap().account_id.unwrap();
    case.sim.organizations().close_account().account_id(&account_id).send().await.unwrap();
    let tenant = case.wait_for("frozen", conditions::STALLED, "True", WITHIN).await.unwrap();
    assert_eq!(reason_of(&tenant, conditions::STALLED), "AccountNotActive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_that_fails_internally_or_concurrently_is_sent_again_and_makes_one_account() {
    let mut case = test_case().await;
    // Email uniqueness off: a second account for the same Tenant would show.
    case.sim
        .configure(json!({"unique_emails": false, "create_account_failures": [
            {"reason": "INTERNAL_FAILURE", "email": "^aws\\+hiccup@", "times": 1},
            {"reason": "CONCURRENT_ACCOUNT_MODIFICATION", "email": "^aws\\+jostle@", "times": 1},
        ]}))
        .await
        .unwrap();
    case.start_controller(TestCase::config());
    let names = ["hiccup", "jostle"];
    let stalled = case.watch_stalled(&names).await.unwrap();
    for name in names {
        case.apply(&format!("apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {name}}}\nspec: {{}}"))
            .await
            .unwrap();
    }
    for name in names {
        case.wait_for(name, conditions::READY, "True", WITHIN).await.unwrap();
    }
    assert_eq!(stalled.transitions().await.unwrap(), Vec::<String>::new(), "a failed creation is weather");
    let stats = case.sim.stats().await.unwrap();
    assert_eq!(
        stats["create_account_failures"],
        json!({"INTERNAL_FAILURE": 1, "CONCURRENT_ACCOUNT_MODIFICATION": 1}),
        "{stats}"
    );
    assert_eq!(stats["requests"]["organizations:CreateAccount"], json!(4), "one retry each: {stats}");
    let by_email = case.sim.accounts_by_email().await.unwrap();
    for name in names {
        assert_eq!(by_email.get(&format!("aws+{name}@example.com")), Some(&1), "{by_email:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_organizations_account_limit_stalls_creation_and_counts_closed_accounts() {
    let mut case = test_case().await;
    // The organization: the management account and one closed account, which still counts
    // against a quota of 2. (No listing lag: the controller's first sweep sees the closed one.)
    case.sim.configure(json!({"account_limit": 2, "list_accounts_lag_seconds": 0})).await.unwrap();
    let closed = case.sim.create_account("gone", "gone@example.com", &[]).await.unwrap();
    let org = case.sim.organizations();
    org.close_account().account_id(&closed).send().await.unwrap();
    assert_eq!(account_state(&org, &closed).await, "PENDING_CLOSURE");
    case.start_controller(TestCase::config());
    case.apply("apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {name: overflow}\nspec: {}").await.unwrap();
    let tenant = case.wait_for("overflow", conditions::STALLED, "True", WITHIN).await.unwrap();
    assert_eq!(reason_of(&tenant, conditions::STALLED), "OrganizationAccountLimit");
    let message = &conditions::find(&tenant.status.as_ref().unwrap().conditions, conditions::STALLED).unwrap().message;
    assert!(message.contains("holds 2 accounts, 1 of them closed"), "what fills the quota: {message}");
    assert!(message.contains("\"Default maximum number of accounts\" in Service Quotas"), "what to raise: {message}");
}

async fn ready_close_tenant(case: &TestCase, name: &str) -> String {
    case.apply(&format!(
        "apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {name}}}\nspec: {{deletionPolicy: Close}}"
    ))
    .await
    .unwrap();
    let tenant = case.wait_for(name, conditions::READY, "True", WITHIN).await.unwrap();
    tenant.status.unwrap().account_id.unwrap()
}

async fn account_state(org: &Organizations, account_id: &str) -> String {
    let out = org.describe_account().account_id(account_id).send().await.unwrap();
    out.account().and_then(|a| a.state()).map(|s| s.as_str().to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_with_allow_account_closure_closes_and_then_lets_the_tenant_go() {
    let mut case = test_case().await;
    case.sim.configure(json!({"close_pending_seconds": 600})).await.unwrap();
    let mut settings = TestCase::config();
    settings.allow_account_closure = true;
    case.start_controller(settings);
    let account_id = ready_close_tenant(&case, "sunset").await;
    let retained = ready_close_tenant(&case, "keeper").await;

    case.tenants().delete("sunset", &DeleteParams::default()).await.unwrap();
    case.wait_deleted("sunset", WITHIN).await.unwrap();
    let org = case.sim.organizations();
    assert_eq!(account_state(&org, &account_id).await, "PENDING_CLOSURE");
    assert_eq!(account_state(&org, &retained).await, "ACTIVE", "only the deleted tenant's account is closed");
    let stats = case.sim.stats().await.unwrap();
    assert_eq!(stats["requests"]["organizations:CloseAccount"], json!(1), "{stats}");

    let ledger =
        Api::<ConfigMap>::namespaced(case.client.clone(), CONTROLLER_NAMESPACE).get(LEDGER_NAME).await.unwrap();
    assert!(ledger.data.unwrap().contains_key(&account_id), "the closure is recorded in the ledger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_closure_budget_queues_closures_beyond_it() {
    let mut case = test_case().await;
    let mut settings = TestCase::config();
    settings.allow_account_closure = true;
    settings.max_account_closures_per_day = 1;
    case.start_controller(settings);
    let first = ready_close_tenant(&case, "gone-1").await;
    let second = ready_close_tenant(&case, "gone-2").await;

    for name in ["gone-1", "gone-2"] {
        case.tenants().delete(name, &DeleteParams::default()).await.unwrap();
    }
    // One of the two is closed; the other waits in the queue with a condition that says so.
    let (queued, queued_account) = case
        .eventually(WITHIN, || async {
            let remaining: Vec<Tenant> = case.tenants().list(&Default::default()).await?.items;
            let queued = |t: &Tenant| {
                t.status.as_ref().is_some_and(|s| {
                    conditions::find(&s.conditions, conditions::READY).is_some_and(|c| c.reason == "ClosureQueued")
                })
            };
            let [t] = remaining.as_slice() else { anyhow::bail!("{} Tenants left, not 1", remaining.len()) };
            anyhow::ensure!(queued(t), "{} is not ClosureQueued: {:?}", t.name_any(), t.status);
            let account = if t.name_any() == "gone-1" { first.clone() } else { second.clone() };
            Ok((t.clone(), account))
        })
        .await
        .expect("one tenant closed and one queued");
    let status = queued.status.unwrap();
    let ready = conditions::find(&status.conditions, conditions::READY).unwrap();
    assert!(ready.message.contains("--max-account-closures-per-day"), "{}", ready.message);
    assert!(conditions::is_true(&status.conditions, conditions::RECONCILING), "queued is progress, not a failure");
    let org = case.sim.organizations();
    assert_eq!(account_state(&org, &queued_account).await, "ACTIVE", "the queued account is not closed");
    let stats = case.sim.stats().await.unwrap();
    assert_eq!(stats["requests"]["organizations:CloseAccount"], json!(1), "{stats}");
}

/// The RBAC in manifests/ is enough for the whole lifecycle, including events and the
/// closure ledger: the controller runs with a token of the `silo` ServiceAccount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_rbac_is_enough_for_create_place_tag_and_close() {
    let mut case = test_case().await;
    let mut settings = TestCase::config();
    settings.allow_account_closure = true;
    settings.create_missing_ous = true;
    case.start_controller_as_service_account(settings).await.unwrap();
    case.apply(
        "apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {name: least-privilege}\n\
         spec: {deletionPolicy: Close, organizationalUnit: /Tenants/RBAC, tags: {team: security}}",
    )
    .await
    .unwrap();
    let tenant = case.wait_for("least-privilege", conditions::READY, "True", WITHIN).await.unwrap();
    assert!(event_count(&case, &tenant, "AccountCreated").await >= 1, "events are allowed");
    let account_id = tenant.status.unwrap().account_id.unwrap();
    case.tenants().delete("least-privilege", &DeleteParams::default()).await.unwrap();
    case.wait_deleted("least-privilege", WITHIN).await.unwrap();
    let org = case.sim.organizations();
    assert_ne!(account_state(&org, &account_id).await, "ACTIVE", "closed through the ledger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_closure_quota_backs_off_for_hours_and_says_when() {
    let mut case = test_case().await;
    case.sim.configure(json!({"close_quota": 0})).await.unwrap();
    let mut settings = TestCase::config();
    settings.allow_account_closure = true;
    case.start_controller(settings);
    let account_id = ready_close_tenant(&case, "quota").await;
    case.tenants().delete("quota", &DeleteParams::default()).await.unwrap();
    let condition = eventually_sees(
        &case,
        "ClosureQuotaExceeded",
        || async {
            let tenant = case.tenants().get("quota").await.unwrap();
            tenant.status.as_ref().and_then(|s| conditions::find(&s.conditions, conditions::READY)).cloned()
        },
        |ready| ready.as_ref().is_some_and(|c| c.reason == "ClosureQuotaExceeded"),
    )
    .await
    .unwrap();
    assert!(condition.message.contains("CLOSE_ACCOUNT_QUOTA_EXCEEDED"), "{}", condition.message);
    assert!(condition.message.contains("next try is at"), "{}", condition.message);
    // For hours: the next attempt the status records is hours away, not a quick retry.
    let status = case.tenants().get("quota").await.unwrap().status.unwrap();
    let next: k8s_openapi::jiff::Timestamp =
        status.next_closure_attempt.as_deref().expect("status.nextClosureAttempt").parse().unwrap();
    let wait = next.as_second() - k8s_openapi::jiff::Timestamp::now().as_second();
    assert!(wait >= 3 * 3600, "the next attempt is {wait} s away, not hours");
    // No hot loop: one refused CloseAccount, and nothing more while the back-off runs.
    case.consistently(Duration::from_secs(5), || async {
        let stats = case.sim.stats().await?;
        anyhow::ensure!(stats["requests"]["organizations:CloseAccount"] == json!(1), "{stats}");
        Ok(())
    })
    .await
    .expect("one CloseAccount, and no retry while the back-off runs");
    assert_eq!(account_state(&case.sim.organizations(), &account_id).await, "ACTIVE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_without_this_tenants_uid_is_never_closed() {
    let mut case = test_case().await;
    let mut settings = TestCase::config();
    settings.allow_account_closure = true;
    case.start_controller(settings);
    let account_id = ready_close_tenant(&case, "disowned").await;
    // Someone strips Silo's ownership tag: Silo can no longer prove the account is this Tenant's.
    let org = case.sim.organizations();
    org.untag_resource().resource_id(&account_id).tag_keys("silo.dev/tenant-uid").send().await.unwrap();
    case.tenants().delete("disowned", &DeleteParams::default()).await.unwrap();
    let tenant = case.wait_for("disowned", conditions::STALLED, "True", WITHIN).await.unwrap();
    assert_eq!(reason_of(&tenant, conditions::STALLED), "AccountNotOwned");
    case.consistently(AFTERWARDS, || async {
        let stats = case.sim.stats().await?;
        anyhow::ensure!(stats["requests"].get("organizations:CloseAccount").is_none(), "CloseAccount sent: {stats}");
        let state = account_state(&org, &account_id).await;
        anyhow::ensure!(state == "ACTIVE", "the account is {state}");
        Ok(())
    })
    .await
    .expect("no CloseAccount, the account ACTIVE");
}

/// The RBAC lets Silo read Secrets only in the external-id namespace: not its own namespace's,
/// not anyone else's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_rbac_reads_secrets_only_in_the_external_id_namespace() {
    use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
    let case = test_case().await;
    let silo = case.service_account_client().await.unwrap();
    let reviews = Api::<SelfSubjectAccessReview>::all(silo);
    let can = |verb: &str, namespace: &str| {
        let review: SelfSubjectAccessReview = serde_json::from_value(json!({
            "spec": {"resourceAttributes": {"verb": verb, "resource": "secrets", "namespace": namespace}}
        }))
        .unwrap();
        let reviews = reviews.clone();
        async move { reviews.create(&Default::default(), &review).await.unwrap().status.unwrap().allowed }
    };
    assert!(can("get", silo_testenv::EXTERNAL_ID_NAMESPACE).await, "external ids are readable");
    for namespace in [CONTROLLER_NAMESPACE, "default", "kube-system"] {
        for verb in ["get", "list", "watch"] {
            assert!(!can(verb, namespace).await, "{verb} secrets in {namespace} must be refused");
        }
    }
    assert!(!can("list", silo_testenv::EXTERNAL_ID_NAMESPACE).await, "only get, by name");
}

/// A service control policy made out of band, as an organization's own guardrail would be.
async fn create_scp(org: &Organizations, name: &str) -> String {
    let content = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"ec2:*","Resource":"*"}]}"#;
    let out = org
        .create_policy()
        .name(name)
        .description(name)
        .content(content)
        .r#type(aws_sdk_organizations::types::PolicyType::ServiceControlPolicy)
        .send()
        .await
        .expect("CreatePolicy");
    out.policy().and_then(|p| p.policy_summary()).and_then(|s| s.id()).expect("a policy id").to_string()
}

async fn policies_on(org: &Organizations, account_id: &str) -> Vec<String> {
    let filter = aws_sdk_organizations::types::PolicyType::ServiceControlPolicy;
    let out = org.list_policies_for_target().target_id(account_id).filter(filter).send().await.unwrap();
    let mut ids: Vec<String> = out.policies().iter().filter_map(|p| p.id().map(str::to_string)).collect();
    ids.sort();
    ids
}

/// The contact of a kind as (name, phone), `None` when not set.
async fn contact_on(case: &TestCase, account_id: &str, kind: &str) -> Option<(String, String)> {
    let kind = aws_sdk_account::types::AlternateContactType::from(kind);
    let answer = case
        .sim
        .account_management()
        .get_alternate_contact()
        .account_id(account_id)
        .alternate_contact_type(kind)
        .send()
        .await;
    match answer {
        Ok(out) => {
            out.alternate_contact().map(|c| (c.name().unwrap().to_string(), c.phone_number().unwrap().to_string()))
        }
        Err(err) if err.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => None,
        Err(err) => panic!("GetAlternateContact: {err:?}"),
    }
}

async fn set_contact(case: &TestCase, account_id: &str, kind: &str, name: &str) {
    case.sim
        .account_management()
        .put_alternate_contact()
        .account_id(account_id)
        .alternate_contact_type(aws_sdk_account::types::AlternateContactType::from(kind))
        .name(name)
        .title("Out of band")
        .email_address("oob@example.com")
        .phone_number("+1 555 0199")
        .send()
        .await
        .expect("PutAlternateContact");
}

async fn account_name(org: &Organizations, account_id: &str) -> String {
    let out = org.describe_account().account_id(account_id).send().await.unwrap();
    out.account().unwrap().name().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_contacts_and_policies_follow_the_spec_and_only_silos_are_undone() {
    let mut case = test_case().await;
    let org = case.sim.organizations();
    let baseline_scp = create_scp(&org, "tenant-baseline").await;
    let extra_scp = create_scp(&org, "extra").await;
    let guardrail = create_scp(&org, "guardrail").await;
    let mut settings = TestCase::config();
    settings.max_stalled_retry = Some(Duration::from_secs(1));
    settings.default_contacts = serde_yaml::from_str(
        "billing: {name: Bill Default, title: Finance, email: billing@example.com, phone: '+1 555 0100'}",
    )
    .unwrap();
    case.start_controller(settings);

    // Trusted access for AWS Account Management is off: policies are attached (they do not
    // need it), the name and contacts wait, and nothing is sent to the Account API.
    case.apply(&format!(
        "apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: acme}}\nspec:\n  \
         policies: [tenant-baseline, {extra_scp}]\n  contacts:\n    security: {{name: Sam Sec, title: CISO, email: \
         sec@example.com, phone: '+1 555 0101'}}\n"
    ))
    .await
    .unwrap();
    let tenant = case.wait_for("acme", conditions::STALLED, "True", WITHIN).await.unwrap();
    assert_eq!(reason_of(&tenant, conditions::SETTINGS_READY), "TrustedAccessDisabled");
    let account_id = tenant.status.clone().unwrap().account_id.unwrap();
    case.consistently(AFTERWARDS, || async {
        let sent = case.sim.requests("account:PutAccountName").await?
            + case.sim.requests("account:PutAlternateContact").await?;
        anyhow::ensure!(sent == 0, "{sent} requests sent to the Account API");
        Ok(())
    })
    .await
    .expect("nothing sent to the Account API");
    assert_eq!(account_name(&org, &account_id).await, "acme");

    org.enable_aws_service_access().service_principal("account.amazonaws.com").send().await.unwrap();
    let tenant = case.wait_for("acme", conditions::READY, "True", WITHIN).await.unwrap();
    let status = tenant.status.clone().unwrap();
    assert_eq!(status.account_name.as_deref(), Some("acme"));
    let mut ours = vec![baseline_scp.clone(), extra_scp.clone()];
    ours.sort();
    assert_eq!(status.attached_policy_ids, ours);
    assert!(policies_on(&org, &account_id).await.iter().filter(|p| ours.contains(p)).count() == 2);
    assert_eq!(contact_on(&case, &account_id, "SECURITY").await, Some(("Sam Sec".into(), "+1 555 0101".into())));
    assert_eq!(
        contact_on(&case, &account_id, "BILLING").await,
        Some(("Bill Default".into(), "+1 555 0100".into())),
        "a kind the spec leaves out takes the controller's default"
    );
    assert_eq!(contact_on(&case, &account_id, "OPERATIONS").await, None);

    // Out of band: the baseline policy is detached, the security contact changed, a guardrail
    // attached and an operations contact set. A verification puts back only what is Silo's.
    org.detach_policy().policy_id(&baseline_scp).target_id(&account_id).send().await.unwrap();
    org.attach_policy().policy_id(&guardrail).target_id(&account_id).send().await.unwrap();
    set_contact(&case, &account_id, "SECURITY", "Mallory").await;
    set_contact(&case, &account_id, "OPERATIONS", "Olga Ops").await;
    let patch = json!({"metadata": {"annotations": {"silo.dev/verify": "1"}}});
    case.tenants().patch("acme", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    eventually_sees(
        &case,
        "the baseline policy attached again",
        || policies_on(&org, &account_id),
        |p| p.contains(&baseline_scp),
    )
    .await;
    eventually_sees(
        &case,
        "the security contact restored",
        || contact_on(&case, &account_id, "SECURITY"),
        |c| c.as_ref().is_some_and(|(name, _)| name == "Sam Sec"),
    )
    .await;

    // The spec lets go of the policies and the security contact, and renames the account:
    // Silo detaches and removes only what it set; the guardrail and the operations contact
    // stay, and so does the default billing contact.
    let patch = json!({"spec": {"accountName": "Acme Corp", "policies": null, "contacts": null}});
    case.tenants().patch("acme", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let policies = eventually_sees(
        &case,
        "Silo's policies detached",
        || policies_on(&org, &account_id),
        |p| !p.contains(&baseline_scp) && !p.contains(&extra_scp),
    )
    .await;
    assert!(policies.contains(&guardrail), "the guardrail stays: {policies:?}");
    eventually_sees(
        &case,
        "the security contact removed",
        || contact_on(&case, &account_id, "SECURITY"),
        Option::is_none,
    )
    .await;
    eventually_sees(&case, "renamed", || account_name(&org, &account_id), |n| n == "Acme Corp").await;
    assert_eq!(contact_on(&case, &account_id, "OPERATIONS").await.map(|c| c.0).as_deref(), Some("Olga Ops"));
    assert_eq!(contact_on(&case, &account_id, "BILLING").await.map(|c| c.0).as_deref(), Some("Bill Default"));
    let tenant = case.wait_for("acme", conditions::READY, "True", WITHIN).await.unwrap();
    eventually_sees(&case, "the rename recorded", || event_count(&case, &tenant, "AccountRenamed"), |n| *n >= 1).await;
    let status = tenant.status.unwrap();
    assert_eq!(status.account_name.as_deref(), Some("Acme Corp"));
    assert!(status.attached_policy_ids.is_empty());
    assert_eq!(status.applied_contacts.keys().collect::<Vec<_>>(), vec!["billing"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_policy_or_a_full_account_stalls_without_attaching() {
    let mut case = test_case().await;
    let org = case.sim.organizations();
    let mut settings = TestCase::config();
    settings.max_stalled_retry = Some(Duration::from_secs(1));
    case.start_controller(settings);
    case.apply(
        "apiVersion: silo.dev/v1alpha1\nkind: Tenant\nmetadata: {name: strict}\nspec: {policies: [no-such-policy]}",
    )
    .await
    .unwrap();
    let tenant = case.wait_for("strict", conditions::STALLED, "True", WITHIN).await.unwrap();
    assert_eq!(reason_of(&tenant, conditions::SETTINGS_READY), "PolicyNotFound");
    assert!(
        conditions::find(&tenant.status.clone().unwrap().conditions, conditions::READY)
            .unwrap()
            .message
            .contains("no-such-policy")
    );
    case.consistently(AFTERWARDS, || async {
        case.sim.requests("organizations:AttachPolicy").await.is_ok_and(|n| n == 0)
    })
    .await
    .expect("no policy attached while one named is missing");

    // Four more policies out of band fill the account (FullAWSAccess is the fifth): the one the
    // spec names cannot be attached, and the status does not claim it.
    let account_id = tenant.status.unwrap().account_id.unwrap();
    for n in 0..4 {
        let id = create_scp(&org, &format!("filler-{n}")).await;
        org.attach_policy().policy_id(&id).target_id(&account_id).send().await.unwrap();
    }
    let wanted = create_scp(&org, "no-such-policy").await;
    let tenant = eventually_sees(
        &case,
        "PolicyLimitExceeded",
        || async { case.tenants().get("strict").await.unwrap() },
        |t| reason_of(t, conditions::SETTINGS_READY) == "PolicyLimitExceeded",
    )
    .await;
    assert!(tenant.status.unwrap().attached_policy_ids.is_empty());
    assert!(!policies_on(&org, &account_id).await.contains(&wanted));
}
