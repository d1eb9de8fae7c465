//! Account pools, end to end: a pool fills, a Tenant takes a ready account instead of waiting
//! for CreateAccount, the account becomes the Tenant's (name, OU, tags), and the pool refills.
//! One account is never handed to two Tenants, and an account that is not ACTIVE never is.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;
use silo::{Tenant, api::AccountPool, conditions};
use silo_testenv::{BASELINE_TEMPLATE, TenantFixture, TestCase, test_case};

const WITHIN: Duration = Duration::from_secs(120);

/// The controller as its ServiceAccount (the RBAC must be enough for pools), allowed to
/// create the OUs under /Tenants; with AWS Account Management trusted when `trusted` (a taken
/// account is renamed then).
async fn start(case: &mut TestCase, trusted: bool) {
    if trusted {
        let org = case.sim.organizations();
        org.enable_aws_service_access().service_principal("account.amazonaws.com").send().await.unwrap();
    }
    let mut settings = TestCase::config();
    settings.create_missing_ous = true;
    settings.tenant_ou_roots = vec!["/Tenants".into()];
    case.start_controller_as_service_account(settings).await.unwrap();
}

async fn apply_pool(case: &TestCase, size: u32, paused: bool) {
    let pool = json!({
        "apiVersion": "silo.dev/v1alpha1", "kind": "AccountPool", "metadata": {"name": "warm"},
        "spec": {"size": size, "organizationalUnit": "/Tenants/Pool", "emailTemplate": "aws+pool-{index}@example.com",
                 "tags": {"stage": "spare"}, "paused": paused},
    });
    Api::<AccountPool>::all(case.client.clone())
        .patch("warm", &PatchParams::apply("silo-tests").force(), &Patch::Apply(&pool))
        .await
        .unwrap();
}

/// Waits until the pool has `ready` accounts ready and none on the way; returns their ids.
async fn pool_with_ready(case: &TestCase, ready: usize) -> Vec<String> {
    case.eventually(WITHIN, || async {
        let pool = Api::<AccountPool>::all(case.client.clone()).get("warm").await?;
        let status = pool.status.unwrap_or_default();
        anyhow::ensure!(status.accounts.len() == ready && status.creations.is_empty(), "the pool: {status:?}");
        Ok(status.accounts.into_iter().map(|a| a.account_id).collect())
    })
    .await
    .unwrap_or_else(|err| panic!("the pool never held {ready} ready accounts: {err:#}"))
}

async fn tags_of(case: &TestCase, account_id: &str) -> std::collections::BTreeMap<String, String> {
    let out = case.sim.organizations().list_tags_for_resource().resource_id(account_id).send().await.unwrap();
    out.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect()
}

async fn events(case: &TestCase, tenant: &str, reason: &str) -> usize {
    let events = Api::<Event>::namespaced(case.client.clone(), "default").list(&Default::default()).await.unwrap();
    events
        .items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(tenant))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .count()
}

fn claimed_from(tenant: &Tenant) -> Option<String> {
    tenant.status.as_ref().and_then(|s| s.claimed_from_pool.clone())
}

/// A Tenant takes a ready account: no CreateAccount of its own; the account gets the Tenant's
/// name, OU and tags (the pool's go, foreign ones stay); the pool refills behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_takes_a_ready_account_which_becomes_its_own_and_the_pool_refills() {
    let mut case = test_case().await;
    start(&mut case, true).await;
    apply_pool(&case, 2, false).await;
    let ready = pool_with_ready(&case, 2).await;
    let org = case.sim.organizations();
    let first = &ready[0];
    org.tag_resource()
        .resource_id(first)
        .tags(aws_sdk_organizations::types::Tag::builder().key("owner").value("finance").build().unwrap())
        .send()
        .await
        .unwrap();
    let created_before = case.accounts_created().await;
    let requests_before = case.sim.stats().await.unwrap()["requests"].clone();

    case.create(&TenantFixture::named("acme").from_pool("warm").in_ou("/Tenants/Prod").tag("team", "a")).await.unwrap();
    let tenant = case.wait_for("acme", conditions::READY, "True", WITHIN).await.unwrap();
    // What the claim cost (the pool's refill runs at the same time and is counted too).
    let requests = case.sim.stats().await.unwrap()["requests"].clone();
    let spent: std::collections::BTreeMap<&String, i64> = requests
        .as_object()
        .unwrap()
        .iter()
        .map(|(op, n)| (op, n.as_i64().unwrap_or(0) - requests_before[op].as_i64().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    eprintln!("AWS requests from the claim to Ready (the refill included): {spent:?}");
    let status = tenant.status.clone().unwrap();
    assert_eq!(status.account_id.as_ref(), Some(first), "the oldest ready account");
    assert_eq!(claimed_from(&tenant).as_deref(), Some("warm"));
    assert_eq!(status.email.as_deref(), Some("aws+pool-0@example.com"), "the pool's root email stays");
    assert_eq!(conditions::find(&status.conditions, conditions::ACCOUNT_READY).unwrap().reason, "AccountClaimed");
    assert_eq!(events(&case, "acme", "AccountClaimed").await, 1);

    let tags = tags_of(&case, first).await;
    assert_eq!(tags.get("silo.dev/tenant-uid"), tenant.uid().as_ref(), "{tags:?}");
    assert_eq!(tags.get("team").map(String::as_str), Some("a"), "{tags:?}");
    assert_eq!(tags.get("owner").map(String::as_str), Some("finance"), "a foreign tag stays: {tags:?}");
    for pools in ["silo.dev/pool", "silo.dev/pool-uid", "stage"] {
        assert!(!tags.contains_key(pools), "the pool's tag {pools} is gone: {tags:?}");
    }
    let described = org.describe_account().account_id(first).send().await.unwrap();
    assert_eq!(described.account().and_then(|a| a.name()), Some("acme"), "renamed to the Tenant's name");
    let parent = org.list_parents().child_id(first).send().await.unwrap().parents()[0].id().unwrap().to_string();
    assert_eq!(Some(parent), status.organizational_unit_id, "moved to the Tenant's OU");

    // The pool refills: the Tenant's account came from it, the pool made a new one.
    let refilled = pool_with_ready(&case, 2).await;
    assert!(!refilled.contains(first), "the taken account left the pool: {refilled:?}");
    assert_eq!(case.accounts_created().await, created_before + 1, "one CreateAccount: the refill");
    let pool = Api::<AccountPool>::all(case.client.clone()).get("warm").await.unwrap();
    assert_eq!(pool.status.unwrap().claimed, 1);

    // A restore: the Tenant is gone (deletionPolicy Retain), and comes back from a backup with
    // its previous UID. It takes its account back (found by the name it gave it: the email is
    // the pool's), not a ready one, and creates nothing.
    let old_uid = tenant.uid().unwrap();
    case.tenants().delete("acme", &Default::default()).await.unwrap();
    case.wait_deleted("acme", WITHIN).await.unwrap();
    let created_before = case.accounts_created().await;
    let mut restored = TenantFixture::named("acme").from_pool("warm").in_ou("/Tenants/Prod").tag("team", "a").tenant();
    restored.annotations_mut().insert("silo.dev/previous-uid".into(), old_uid);
    case.tenants().create(&Default::default(), &restored).await.unwrap();
    let restored = case.wait_for("acme", conditions::READY, "True", WITHIN).await.unwrap();
    assert_eq!(restored.status.as_ref().unwrap().account_id.as_ref(), Some(first), "its own account, taken back");
    assert_eq!(restored.status.as_ref().unwrap().email.as_deref(), Some("aws+pool-0@example.com"));
    assert_eq!(tags_of(&case, first).await.get("silo.dev/tenant-uid"), restored.uid().as_ref());
    assert_eq!(case.accounts_created().await, created_before, "nothing created");
    assert_eq!(pool_with_ready(&case, 2).await, refilled, "no ready account taken");

    // A deleted pool's series go (the in-process controller's registry).
    let series = r#"silo_pool_size{pool="warm"}"#;
    assert!(silo::metrics::METRICS.render().contains(series), "the pool is published");
    Api::<AccountPool>::all(case.client.clone()).delete("warm", &Default::default()).await.unwrap();
    case.eventually(WITHIN, || async {
        let rendered = silo::metrics::METRICS.render();
        let left: Vec<&str> = rendered.lines().filter(|l| l.contains(r#"pool="warm""#)).collect();
        anyhow::ensure!(left.is_empty(), "series of the deleted pool: {left:?}");
        Ok(())
    })
    .await
    .expect("the deleted pool's series are gone");
}

/// Two Tenants race for the pool's last account: one takes it, the other gets an account
/// created for it (an Event says the pool was empty), and they never share one. Without
/// trusted access for AWS Account Management, the taken account keeps the pool's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_racing_for_the_last_account_one_takes_it_and_the_other_gets_a_new_one() {
    let mut case = test_case().await;
    start(&mut case, false).await;
    apply_pool(&case, 1, false).await;
    let ready = pool_with_ready(&case, 1).await;
    // No refill from here on: the second Tenant cannot be served by a new pool account.
    apply_pool(&case, 1, true).await;

    for name in ["left", "right"] {
        case.create(&TenantFixture::named(name).from_pool("warm")).await.unwrap();
    }
    let left = case.wait_for("left", conditions::READY, "True", WITHIN).await.unwrap();
    let right = case.wait_for("right", conditions::READY, "True", WITHIN).await.unwrap();
    let (winner, loser) = if claimed_from(&left).is_some() { (left, right) } else { (right, left) };
    assert_eq!(claimed_from(&winner).as_deref(), Some("warm"));
    assert_eq!(winner.status.as_ref().unwrap().account_id.as_ref(), Some(&ready[0]));
    assert_eq!(winner.status.as_ref().unwrap().account_name.as_deref(), Some("warm-0"), "no trusted access: no rename");
    assert_eq!(claimed_from(&loser), None, "{:?}", loser.status);
    let loser_account = loser.status.as_ref().unwrap().account_id.clone().unwrap();
    assert_ne!(&loser_account, &ready[0], "one account, one Tenant");
    assert_eq!(
        loser.status.as_ref().unwrap().email.as_deref(),
        Some(format!("aws+{}@example.com", loser.name_any()).as_str()),
        "created with the Tenant's own email"
    );
    assert_eq!(events(&case, &loser.name_any(), "PoolEmpty").await, 1);
    let by_email = case.sim.accounts_by_email().await.unwrap();
    assert!(by_email.values().all(|n| *n == 1), "{by_email:?}");
}

/// A ready account closed out of band is never taken: the Tenant gets a new account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_account_closed_out_of_band_is_never_taken() {
    let mut case = test_case().await;
    start(&mut case, true).await;
    apply_pool(&case, 1, false).await;
    let ready = pool_with_ready(&case, 1).await;
    apply_pool(&case, 1, true).await;
    case.sim.organizations().close_account().account_id(&ready[0]).send().await.unwrap();

    case.create(&TenantFixture::named("careful").from_pool("warm")).await.unwrap();
    let tenant = case.wait_for("careful", conditions::READY, "True", WITHIN).await.unwrap();
    assert_eq!(claimed_from(&tenant), None);
    assert_ne!(tenant.status.as_ref().unwrap().account_id.as_ref(), Some(&ready[0]));
    let tags = tags_of(&case, &ready[0]).await;
    assert!(!tags.contains_key("silo.dev/tenant-uid"), "the closed account was not tagged: {tags:?}");
}

/// A refill never takes a creation slot a Tenant is waiting for: with one slot, the Tenants
/// that arrive while the pool's first account is being created get the slot before its second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_get_creation_slots_before_a_refill() {
    let mut case = test_case().await;
    // Long enough for both Tenants to be in line before the pool's first account is made.
    case.sim.configure(json!({"create_account_delay_seconds": 4})).await.unwrap();
    let org = case.sim.organizations();
    org.enable_aws_service_access().service_principal("account.amazonaws.com").send().await.unwrap();
    let mut settings = TestCase::config();
    settings.create_missing_ous = true;
    settings.tenant_ou_roots = vec!["/Tenants".into()];
    settings.creation_slots = 1;
    case.start_controller(settings);
    apply_pool(&case, 2, false).await;
    // The pool's first creation holds the only slot.
    case.eventually(WITHIN, || async {
        let pool = Api::<AccountPool>::all(case.client.clone()).get("warm").await?;
        let creations = pool.status.unwrap_or_default().creations;
        anyhow::ensure!(creations.iter().any(|c| c.request_id.is_some()), "no creation in flight: {creations:?}");
        Ok(())
    })
    .await
    .expect("the pool starts refilling");
    for name in ["first", "second"] {
        case.create(&TenantFixture::named(name)).await.unwrap();
    }
    case.wait_for_all(&["first".into(), "second".into()], conditions::READY, "True", WITHIN).await.unwrap();
    pool_with_ready(&case, 2).await;

    // The order AWS made the accounts in.
    let mut joined = vec![];
    let mut pages = org.list_accounts().into_paginator().send();
    while let Some(page) = pages.next().await {
        for account in page.unwrap().accounts() {
            let email = account.email().unwrap_or_default().to_string();
            joined.push((account.joined_timestamp().map(|t| t.as_nanos()).unwrap_or_default(), email));
        }
    }
    joined.sort();
    let order: Vec<&str> = joined.iter().map(|(_, email)| email.as_str()).filter(|e| e.starts_with("aws+")).collect();
    eprintln!("creation order: {order:?}");
    let position = |email: &str| order.iter().position(|e| *e == email).unwrap_or_else(|| panic!("{email}: {order:?}"));
    assert!(position("aws+pool-0@example.com") < position("aws+first@example.com"), "{order:?}");
    assert!(position("aws+first@example.com") < position("aws+pool-1@example.com"), "{order:?}");
    assert!(position("aws+second@example.com") < position("aws+pool-1@example.com"), "{order:?}");
}

/// With the organization's account quota given to the controller (`--account-limit`), refills
/// stop the headroom short of it (`--pool-account-headroom`) and the pool says why; Tenants
/// still create accounts in the headroom, up to the quota, where AWS refuses the next one and
/// its Tenant is Stalled with OrganizationAccountLimit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refills_stop_at_the_headroom_below_the_account_limit_and_tenants_use_it() {
    let mut case = test_case().await;
    // Six accounts: the management account, three for the pool (6 less a headroom of 2), then
    // two for Tenants.
    case.raise_account_quota(6).await;
    let mut settings = TestCase::config();
    settings.create_missing_ous = true;
    settings.tenant_ou_roots = vec!["/Tenants".into()];
    settings.account_limit = Some(6);
    settings.pool_account_headroom = 2;
    case.start_controller(settings);
    apply_pool(&case, 5, false).await;
    pool_with_ready(&case, 3).await;
    let pool = case
        .eventually(WITHIN, || async {
            let pool = Api::<AccountPool>::all(case.client.clone()).get("warm").await?;
            let status = pool.status.clone().unwrap_or_default();
            let stalled = conditions::find(&status.conditions, conditions::STALLED).cloned();
            anyhow::ensure!(
                stalled.as_ref().is_some_and(|c| c.status == "True" && c.reason == "AccountLimitHeadroom"),
                "{stalled:?}"
            );
            Ok(pool)
        })
        .await
        .expect("the pool says it stopped at the headroom");
    let message = conditions::find(&pool.status.unwrap().conditions, conditions::STALLED).unwrap().message.clone();
    assert!(message.contains("4 accounts count against it"), "the message counts the accounts: {message}");

    let names: Vec<String> = ["inside-1", "inside-2", "beyond"].map(String::from).into();
    for name in &names[..2] {
        case.create(&TenantFixture::named(name)).await.unwrap();
    }
    case.wait_for_all(&names[..2], conditions::READY, "True", WITHIN).await.unwrap();
    case.create(&TenantFixture::named("beyond")).await.unwrap();
    let beyond = case.wait_for_reason("beyond", conditions::STALLED, "OrganizationAccountLimit", WITHIN).await.unwrap();
    assert_eq!(beyond.status.unwrap().account_id, None);
    let stats = case.sim.stats().await.unwrap();
    assert_eq!(stats["requests"]["organizations:CreateAccount"], json!(6), "3 refills, 3 Tenants: {stats}");
    assert_eq!(case.accounts_created().await, 5, "the refused one made nothing");
    let pool = Api::<AccountPool>::all(case.client.clone()).get("warm").await.unwrap();
    assert_eq!(pool.status.unwrap().ready, 3, "no refill into the headroom");
}

/// A controller SIGKILLed every 2 s while 40 Tenants claim from a pool of 20 leaves every
/// account with exactly one Tenant: no account claimed twice, every claimed account gone from
/// the pool, every Tenant Ready. The simulator accepts duplicate emails here, so an account
/// created twice for a Tenant would be counted, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_while_forty_tenants_claim_from_a_pool_of_twenty_leave_each_account_with_one_tenant() {
    const TENANTS: usize = 40;
    const POOL: usize = 20;
    const KILLS: usize = 15;
    let case = test_case().await;
    case.raise_account_quota(100).await;
    case.sim.configure(json!({"unique_emails": false})).await.unwrap();
    let org = case.sim.organizations();
    org.enable_aws_service_access().service_principal("account.amazonaws.com").send().await.unwrap();
    let flags =
        ["--create-missing-ous", "--tenant-ou-root", "/Tenants", "--leader-election", "false", "--concurrency", "8"];
    let log = "claims-controller.log";
    let mut controller = case.spawn_controller(&flags, log).unwrap();
    apply_pool(&case, POOL as u32, false).await;
    let pooled = pool_with_ready(&case, POOL).await;
    // No refill from here on: every account a Tenant gets is one of these 20 or its own.
    apply_pool(&case, POOL as u32, true).await;
    controller.kill();

    let names: Vec<String> = (0..TENANTS).map(|i| format!("signup-{i:02}")).collect();
    for name in &names {
        case.create(&TenantFixture::named(name).from_pool("warm").in_ou("/Tenants/Prod")).await.unwrap();
    }
    for _ in 0..KILLS {
        let mut controller = case.spawn_controller(&flags, log).unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        controller.kill();
    }
    let mut controller = case.spawn_controller(&flags, log).unwrap();
    case.wait_for_all(&names, conditions::READY, "True", Duration::from_secs(300))
        .await
        .expect("every Tenant Ready after the last restart");

    let tenants = case.tenants().list(&Default::default()).await.unwrap().items;
    let mut holders: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut claimed = 0;
    for tenant in &tenants {
        let status = tenant.status.as_ref().unwrap();
        let account = status.account_id.clone().unwrap();
        holders.entry(account.clone()).or_default().push(tenant.name_any());
        assert_eq!(tags_of(&case, &account).await.get("silo.dev/tenant-uid"), tenant.uid().as_ref(), "{account}");
        if claimed_from(tenant).is_some() {
            claimed += 1;
            assert!(pooled.contains(&account), "{} claimed {account}, not one of the pool's", tenant.name_any());
        } else {
            assert!(!pooled.contains(&account), "{} holds pool account {account} unclaimed", tenant.name_any());
        }
    }
    let shared: Vec<_> = holders.iter().filter(|(_, names)| names.len() > 1).collect();
    assert!(shared.is_empty(), "accounts held by more than one Tenant: {shared:?}");
    // The pool drops what Tenants hold as each claim wakes it.
    case.eventually(WITHIN, || async {
        let pool = Api::<AccountPool>::all(case.client.clone()).get("warm").await?.status.unwrap_or_default();
        let held: Vec<_> = pool.accounts.iter().filter(|a| holders.contains_key(&a.account_id)).collect();
        anyhow::ensure!(held.is_empty(), "held and still ready in the pool: {held:?}");
        anyhow::ensure!(claimed + pool.accounts.len() == POOL, "each pool account claimed or still ready: {pool:?}");
        Ok(())
    })
    .await
    .expect("every claimed account gone from the pool, every other one still in it");
    controller.kill();
    let counts = case.sim.accounts_by_email().await.unwrap();
    assert!(counts.values().all(|n| *n == 1), "one account per email: {counts:?}");
    assert_eq!(counts.len(), 1 + POOL + (TENANTS - claimed), "the management account, the pool's, the created ones");
    eprintln!(
        "{KILLS} SIGKILLs: {claimed} Tenants claimed from the pool, {} had an account created",
        TENANTS - claimed
    );
    assert!(claimed >= POOL / 2, "the pool served Tenants under the kills: {claimed} of {POOL}");
}

/// A claim the controller holds only in memory never takes the account out of the pool: with
/// the claim's read of the account (DescribeAccount) held back, the pool looks at its list
/// (its spec changed), and the controller is SIGKILLed before the Tenant's status names the
/// account. The pool still lists it, and after the restart the Tenant takes that same account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_cut_short_by_a_sigkill_leaves_its_account_in_the_pool() {
    let case = test_case().await;
    let flags = ["--create-missing-ous", "--tenant-ou-root", "/Tenants", "--leader-election", "false"];
    let log = "cut-claim-controller.log";
    let mut controller = case.spawn_controller(&flags, log).unwrap();
    apply_pool(&case, 2, false).await;
    let pooled = pool_with_ready(&case, 2).await;
    apply_pool(&case, 2, true).await;

    let held_back = json!({"response_delays_ms": {"organizations:DescribeAccount": 120_000}});
    case.sim.configure(held_back).await.unwrap();
    case.create(&TenantFixture::named("cut").from_pool("warm")).await.unwrap();
    case.eventually(WITHIN, || async {
        let stats = case.sim.stats().await?;
        let held = stats["response_delayed"]["organizations:DescribeAccount"].as_u64().unwrap_or(0);
        anyhow::ensure!(held > 0, "no DescribeAccount held back yet: {}", stats["response_delayed"]);
        Ok(())
    })
    .await
    .expect("the claim reads its account from AWS");
    // A new generation: the pool reconciles while the claim is in memory only.
    apply_pool(&case, 3, true).await;
    let pools = Api::<AccountPool>::all(case.client.clone());
    let looked = case
        .eventually(WITHIN, || async {
            let pool = pools.get("warm").await?;
            let status = pool.status.unwrap_or_default();
            anyhow::ensure!(status.observed_generation == pool.metadata.generation, "not looked at yet: {status:?}");
            Ok(status)
        })
        .await
        .expect("the pool looks at its new spec");
    let tenant = case.tenants().get("cut").await.unwrap();
    assert_eq!(tenant.status.and_then(|s| s.account_id), None, "the claim is not recorded yet");
    controller.kill();
    let listed: Vec<_> = looked.accounts.iter().map(|a| a.account_id.clone()).collect();
    assert_eq!(listed, pooled, "an unrecorded claim took nothing from the pool");

    case.sim.configure(json!({"response_delays_ms": {}})).await.unwrap();
    let mut controller = case.spawn_controller(&flags, log).unwrap();
    let tenant = case.wait_for("cut", conditions::READY, "True", WITHIN).await.unwrap();
    assert_eq!(claimed_from(&tenant).as_deref(), Some("warm"));
    assert_eq!(tenant.status.as_ref().unwrap().account_id.as_ref(), Some(&pooled[0]), "the same, oldest, account");
    assert_eq!(pool_with_ready(&case, 1).await, pooled[1..], "the other one is still ready");
    controller.kill();
}

/// The stack operations the simulator ran in one account, in order.
async fn stack_operations_in(case: &TestCase, account_id: &str) -> Vec<String> {
    let operations = case.sim.stack_operations().await.unwrap();
    operations.into_iter().filter(|op| op.account == account_id).map(|op| op.operation).collect()
}

/// The operations on one stack of an account, in order, from the simulator's record.
async fn operations_on(case: &TestCase, account_id: &str, stack_name: &str) -> Vec<String> {
    let operations = case.sim.stack_operations().await.unwrap();
    let on_the_stack = operations.into_iter().filter(|op| op.account == account_id && op.stack_name == stack_name);
    on_the_stack.map(|op| op.operation).collect()
}

/// A pool with a Baseline readies an account only once its stack runs (the new account's
/// role was waited for while nobody waited). A Tenant with the same Baseline takes it and
/// updates the stack to its own parameters, creating nothing; a Tenant with another Baseline,
/// or none, takes one too, and the pool's stack is deleted once its own baseline runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_with_a_baseline_readies_bootstrapped_accounts_that_a_tenant_only_updates() {
    let mut case = test_case().await;
    start(&mut case, false).await;
    let baseline = json!({
        "apiVersion": "silo.dev/v1alpha1", "kind": "Baseline", "metadata": {"name": "standard"},
        "spec": {"template": BASELINE_TEMPLATE, "regions": ["us-east-1"]},
    });
    Api::<silo::api::Baseline>::all(case.client.clone())
        .patch("standard", &PatchParams::apply("silo-tests").force(), &Patch::Apply(&baseline))
        .await
        .unwrap();
    let pool = json!({
        "apiVersion": "silo.dev/v1alpha1", "kind": "AccountPool", "metadata": {"name": "warm"},
        "spec": {"size": 3, "organizationalUnit": "/Tenants/Pool", "emailTemplate": "aws+pool-{index}@example.com",
                 "baseline": {"name": "standard", "parameters": {"Env": "spare"}}},
    });
    let pools = Api::<AccountPool>::all(case.client.clone());
    pools.patch("warm", &PatchParams::apply("silo-tests").force(), &Patch::Apply(&pool)).await.unwrap();
    let other = json!({
        "apiVersion": "silo.dev/v1alpha1", "kind": "Baseline", "metadata": {"name": "other"},
        "spec": {"template": BASELINE_TEMPLATE, "stackName": "other-stack", "regions": ["us-east-1"]},
    });
    Api::<silo::api::Baseline>::all(case.client.clone())
        .patch("other", &PatchParams::apply("silo-tests").force(), &Patch::Apply(&other))
        .await
        .unwrap();
    let ready = pool_with_ready(&case, 3).await;
    for account in &ready {
        assert_eq!(stack_operations_in(&case, account).await, ["CreateStack"], "bootstrapped before ready: {account}");
    }
    // No refill from here on.
    let paused = json!({"spec": {"paused": true}});
    pools.patch("warm", &PatchParams::default(), &Patch::Merge(&paused)).await.unwrap();

    case.create(&TenantFixture::named("globex").from_pool("warm").baseline("standard")).await.unwrap();
    let globex = case.wait_for("globex", conditions::READY, "True", WITHIN).await.unwrap();
    let status = globex.status.clone().unwrap();
    let taken = status.account_id.clone().unwrap();
    assert_eq!(claimed_from(&globex).as_deref(), Some("warm"));
    assert!(ready.contains(&taken));
    assert_eq!(stack_operations_in(&case, &taken).await, ["CreateStack", "UpdateStack"], "updated, not created again");
    let outputs = &status.baseline.as_ref().unwrap().stacks[0].outputs;
    assert_eq!(outputs.get("Env").map(String::as_str), Some("dev"), "the Tenant's parameters: {outputs:?}");

    let created_before = case.accounts_created().await;
    case.create(&TenantFixture::named("unbaselined").from_pool("warm")).await.unwrap();
    case.create(&TenantFixture::named("otherbaselined").from_pool("warm").baseline("other")).await.unwrap();
    for name in ["unbaselined", "otherbaselined"] {
        let tenant = case.wait_for(name, conditions::READY, "True", WITHIN).await.unwrap();
        let status = tenant.status.clone().unwrap();
        assert_eq!(claimed_from(&tenant).as_deref(), Some("warm"), "{name} took a bootstrapped account");
        assert_eq!(status.pool_stacks, None, "{name}: nothing of the pool's is left to delete");
        let taken = status.account_id.clone().unwrap();
        assert!(ready.contains(&taken));
        let pools_stack = operations_on(&case, &taken, "silo-baseline").await;
        assert_eq!(pools_stack, ["CreateStack", "DeleteStack"], "{name}: the pool's stack is deleted");
        let own = operations_on(&case, &taken, "other-stack").await;
        let expected: &[&str] = if name == "otherbaselined" { &["CreateStack"] } else { &[] };
        assert_eq!(own, expected, "{name}: its own Baseline's stack");
    }
    assert_eq!(case.accounts_created().await, created_before, "no account created for either");
    assert_eq!(events(&case, "unbaselined", "PoolEmpty").await + events(&case, "otherbaselined", "PoolEmpty").await, 0);
}
