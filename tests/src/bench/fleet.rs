//! The bench's side of the Tenant API and the simulator: Tenants as plain JSON (only the
//! API's shape, none of the controller's Rust types, so the harness survives a rewrite of the
//! controller), and the simulator's counters.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
};
use serde::Serialize;
use serde_json::{Value, json};
use silo_testenv::SimClient;

use crate::setup::Profile;

/// The OU every bench Tenant is placed in.
pub const OU_PATH: &str = "/Tenants";
const FIELD_MANAGER: &str = "silo-bench";

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("silo.dev", "v1alpha1", kind), plural)
}

pub fn tenants(client: &Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &resource("Tenant", "tenants"))
}

pub fn baselines(client: &Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &resource("Baseline", "baselines"))
}

/// A bench Tenant of `profile` (see [`Profile`]), with `baseline` when named.
pub fn tenant(name: &str, profile: Profile, baseline: Option<&str>) -> Value {
    let mut spec = json!({"organizationalUnit": OU_PATH});
    if profile == Profile::Full {
        let contact = |kind: &str| json!({"name": format!("{name} {kind}"), "title": "On call", "email": format!("{kind}+{name}@example.com"), "phone": "+1 555 0100"});
        spec["accountName"] = json!(format!("Bench customer {name}"));
        spec["tags"] = json!({
            "cost-center": "4711",
            "tier": "standard",
            "environment": "production",
            "owner": "team-platform",
            "customer": name,
        });
        spec["policies"] = json!([BENCH_POLICY]);
        spec["contacts"] = json!({
            "security": contact("security"),
            "billing": contact("billing"),
            "operations": contact("operations"),
        });
    }
    if let Some(baseline) = baseline {
        spec["baseline"] = json!({"name": baseline});
    }
    json!({"apiVersion": "silo.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name}, "spec": spec})
}

/// The service control policy every full-profile Tenant names in `spec.policies`.
pub const BENCH_POLICY: &str = "bench-guardrail";
const BENCH_POLICY_CONTENT: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"ec2:*","Resource":"*"}]}"#;

/// The Baseline every full-profile Tenant has: two regions.
pub const FULL_BASELINE: &str = "bench-full";
/// The Baseline of the baseline scenario's bare Tenants: one region.
pub const BARE_BASELINE: &str = "bench";

impl Profile {
    /// The Baseline every Tenant of the profile has (the baseline scenario gives bare
    /// Tenants [`BARE_BASELINE`]).
    pub fn baseline(self) -> Option<&'static str> {
        match self {
            Profile::Bare => None,
            Profile::Full => Some(FULL_BASELINE),
        }
    }
}

/// The Baseline template: like examples/baseline-standard.yaml, the SNS topic only.
pub const BASELINE_TEMPLATE: &str = "Parameters:
  TenantName: {Type: String}
  AccountId: {Type: String}
Resources:
  Events:
    Type: AWS::SNS::Topic
    Properties:
      TopicName: !Sub \"${TenantName}-events\"
Outputs:
  EventsTopicArn:
    Value: !Ref Events
";

/// A Baseline of [`BASELINE_TEMPLATE`] in `regions`.
pub fn baseline(name: &str, regions: &[&str]) -> Value {
    json!({
        "apiVersion": "silo.dev/v1alpha1",
        "kind": "Baseline",
        "metadata": {"name": name},
        "spec": {"regions": regions, "template": BASELINE_TEMPLATE},
    })
}

/// The regions of a bench Baseline.
pub fn baseline_regions(name: &str) -> &'static [&'static str] {
    if name == FULL_BASELINE { &["us-east-1", "eu-west-1"] } else { &["us-east-1"] }
}

/// What a full-profile fleet needs in the organization before its Tenants are applied, as
/// an owner would have it: the service control policy its Tenants name, and trusted access
/// for AWS Account Management (alternate contacts). The Baseline is applied by the caller.
pub async fn prepare_full_profile(sim: &SimClient) -> Result<()> {
    let org = sim.organizations();
    let scp = aws_sdk_organizations::types::PolicyType::ServiceControlPolicy;
    let listed = org.list_policies().filter(scp.clone()).send().await.context("ListPolicies")?;
    if !listed.policies().iter().any(|p| p.name() == Some(BENCH_POLICY)) {
        let create = org.create_policy().name(BENCH_POLICY).description("silo-bench").content(BENCH_POLICY_CONTENT);
        create.r#type(scp).send().await.context("CreatePolicy")?;
    }
    org.enable_aws_service_access()
        .service_principal("account.amazonaws.com")
        .send()
        .await
        .context("EnableAWSServiceAccess")?;
    Ok(())
}

/// `bench-00001` ... : names that sort in creation order.
pub fn names(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}-{i:05}")).collect()
}

/// Applies every object with server-side apply, `concurrency` in flight; returns how long it took.
pub async fn apply_all(api: &Api<DynamicObject>, objects: Vec<Value>, concurrency: usize) -> Result<f64> {
    let started = Instant::now();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    futures::stream::iter(objects)
        .map(|object| {
            let params = params.clone();
            async move {
                let name = object["metadata"]["name"].as_str().context("object without a name")?.to_string();
                api.patch(&name, &params, &Patch::Apply(&object)).await.with_context(|| format!("apply {name}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<()>()
        .await?;
    Ok(started.elapsed().as_secs_f64())
}

/// True when the Tenant's `Ready` condition is `True`.
pub fn is_ready(tenant: &DynamicObject) -> bool {
    tenant.data["status"]["conditions"]
        .as_array()
        .is_some_and(|conds| conds.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// (Tenants, Ready Tenants), from one LIST.
pub async fn count_ready(api: &Api<DynamicObject>) -> Result<(usize, usize)> {
    let list = api.list(&ListParams::default()).await.context("list Tenants")?;
    Ok((list.items.len(), list.items.iter().filter(|t| is_ready(t)).count()))
}

/// Reasons of the Tenants that are not Ready, counted: what a timeout message should say.
pub async fn not_ready_reasons(api: &Api<DynamicObject>) -> String {
    let Ok(list) = api.list(&ListParams::default()).await else { return "(could not list Tenants)".into() };
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for tenant in list.items.iter().filter(|t| !is_ready(t)) {
        let reason = tenant.data["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .and_then(|c| c["reason"].as_str())
            .unwrap_or("no Ready condition")
            .to_string();
        *reasons.entry(reason).or_default() += 1;
    }
    reasons.iter().map(|(r, n)| format!("{n} {r}")).collect::<Vec<_>>().join(", ")
}

/// Deletes every object of `api`, removing finalizers first (no controller runs then), and
/// waits until they are gone.
pub async fn delete_all(api: &Api<DynamicObject>, concurrency: usize) -> Result<()> {
    let list = api.list(&ListParams::default()).await?;
    futures::stream::iter(list.items)
        .map(|object| async move {
            let name = object.name_any();
            if !object.finalizers().is_empty() {
                let patch = json!({"metadata": {"finalizers": null}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            }
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => anyhow::Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                Err(err) => Err(err.into()),
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<()>()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !api.list(&ListParams::default()).await?.items.is_empty() {
        if Instant::now() > deadline {
            bail!("objects were not deleted within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The organization's root and the OU `/Tenants`, which the bench creates with the
/// Organizations SDK before Silo starts.
pub struct Org {
    pub root_id: String,
    pub ou_id: String,
}

pub async fn create_ou(sim: &SimClient) -> Result<Org> {
    create_ou_in(&sim.organizations()).await
}

/// [`create_ou`] in the organization `org` manages.
pub async fn create_ou_in(org: &aws_sdk_organizations::Client) -> Result<Org> {
    let roots = org.list_roots().send().await.context("ListRoots")?;
    let root_id = roots.roots().first().and_then(|r| r.id()).context("the organization has no root")?.to_string();
    let ou = org
        .create_organizational_unit()
        .parent_id(&root_id)
        .name(OU_PATH.trim_start_matches('/'))
        .send()
        .await
        .context("CreateOrganizationalUnit /Tenants")?;
    let ou_id =
        ou.organizational_unit().and_then(|o| o.id()).context("CreateOrganizationalUnit gave no id")?.to_string();
    Ok(Org { root_id, ou_id })
}

/// The simulator's counters (`GET /_silo/stats`), per `service:Operation`.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Counters {
    pub requests: BTreeMap<String, u64>,
    pub answered: BTreeMap<String, u64>,
    pub throttled: BTreeMap<String, u64>,
    pub injected_errors: BTreeMap<String, u64>,
    pub accounts_created: u64,
}

fn table(stats: &Value, key: &str) -> BTreeMap<String, u64> {
    stats[key]
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).collect())
        .unwrap_or_default()
}

fn minus(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(before.get(k).copied().unwrap_or(0))))
        .filter(|(_, v)| *v > 0)
        .collect()
}

impl Counters {
    pub async fn read(sim: &SimClient) -> Result<Self> {
        let stats = sim.stats().await.context("GET /_silo/stats")?;
        Ok(Self {
            requests: table(&stats, "requests"),
            answered: table(&stats, "answered"),
            throttled: table(&stats, "throttled"),
            injected_errors: table(&stats, "injected_errors"),
            accounts_created: stats["accounts_created"].as_u64().unwrap_or(0),
        })
    }

    /// What happened between `before` and `self`.
    pub fn since(&self, before: &Counters) -> Counters {
        Counters {
            requests: minus(&self.requests, &before.requests),
            answered: minus(&self.answered, &before.answered),
            throttled: minus(&self.throttled, &before.throttled),
            injected_errors: minus(&self.injected_errors, &before.injected_errors),
            accounts_created: self.accounts_created.saturating_sub(before.accounts_created),
        }
    }

    /// Requests of one service (`organizations`, `sts`, `cloudformation`), or all with "".
    pub fn total(&self, service: &str) -> u64 {
        sum_service(&self.requests, service)
    }
}

/// The sum of a per-operation table over one service ("" for all).
pub fn sum_service(table: &BTreeMap<String, u64>, service: &str) -> u64 {
    table.iter().filter(|(k, _)| service.is_empty() || k.split(':').next() == Some(service)).map(|(_, v)| v).sum()
}

/// The operations of one service, without the `service:` prefix.
pub fn of_service(table: &BTreeMap<String, u64>, service: &str) -> BTreeMap<String, u64> {
    table
        .iter()
        .filter_map(|(k, v)| {
            let (s, op) = k.split_once(':')?;
            (s == service).then(|| (op.to_string(), *v))
        })
        .collect()
}
