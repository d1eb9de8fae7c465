//! The organizations scenario: N bare Tenants spread evenly over three organizations with the
//! same simulated quotas (each its own management account, five creation slots, creations of
//! D seconds and R Organizations requests per second), onboarded three times, each from a
//! fresh simulator and cluster:
//!
//! 1. `one`: one `silo run` (no leader election) acts for all three organizations;
//! 2. `three`: three replicas under leader election share them (one organization each, once
//!    their Leases settle);
//! 3. `kill`: three replicas again, and once a third of the Tenants are Ready, the replica
//!    leading `org-b` is killed (SIGKILL): the bench times the gap from the kill to the next
//!    Organizations write made for `org-b` (the survivors wait for its Lease to expire, then
//!    half a lease more before a new leader writes), and counts every organization's accounts
//!    by email: none may be made twice.
//!
//! The bound is the single-organization onboarding bound for the same N
//! ([`setup::onboard_bound`]) divided by three: what three organizations working at once, each
//! at its own quota, would take. Every time is measured from the controllers' start, so the
//! three-replica runs include the Leases settling (a new leader writes half a lease after it
//! takes a Lease); the time from the first Organizations write of the last organization to
//! start is reported beside it. Organizations requests are counted per organization from the
//! simulator's request log (the management account each request acted as).
//!
//! What it leaves out: the organizations' management roles are assumed without IAM trust
//! policies (the simulator's `enforce_trust_policies` off: moto would need each role set up),
//! and no Baseline runs (the rollout scenario measures stacks).

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, api::PostParams};
use serde_json::{Value, json};
use silo::api::{Organization, OrganizationSpec};
use silo_testenv::{CONTROLLER_NAMESPACE, process::tail};

use super::{Bench, min_org_requests, usage_json};
use crate::{
    controller::{Controller, Usage, require_samples},
    fleet::{self, Counters},
    report::{Table, f, series, vline},
    setup::{self, Scenario},
};

/// The organizations besides the default one: name and management account.
const OTHERS: [(&str, &str); 2] = [("org-b", "222222222222"), ("org-c", "333333333333")];
/// The role Silo assumes in their management accounts.
const ROLE: &str = "silo-management";
/// The default organization's management account (moto's).
const DEFAULT_ACCOUNT: &str = "123456789012";
/// The default organization's name in the tables.
const DEFAULT: &str = "default";
const REPLICAS: [&str; 3] = ["replica-0", "replica-1", "replica-2"];
/// The organization whose leader the `kill` run kills.
const KILLED: &str = "org-b";
/// `silo run`'s default `--lease-seconds`.
const LEASE_SECONDS: f64 = 15.0;

/// How one of the three runs went.
struct Run {
    label: &'static str,
    replicas: usize,
    all_ready: f64,
    /// When the last organization to start sent its first Organizations write.
    last_started: f64,
    ready: Vec<[f64; 2]>,
    /// Organizations requests per organization.
    requests: BTreeMap<String, u64>,
    throttled: u64,
    accounts_created: u64,
    /// Accounts made more than once, over every organization.
    duplicates: usize,
    /// For `kill`: seconds from the kill, and from it to the next write for the organization.
    kill: Option<(f64, f64)>,
    usage: Vec<Usage>,
}

impl Bench {
    pub async fn organizations(&mut self) -> Result<()> {
        let p = self.p.clone();
        let n = p.organizations_tenants;
        let c = min_org_requests(p.profile);
        let single = setup::onboard_bound(n, p.creation_slots, p.create_seconds, p.org_rps, c);
        let bound = single / 3.0;
        let mut runs = vec![];
        for (label, replicas, kill) in [("one", 1, false), ("three", 3, false), ("kill", 3, true)] {
            eprintln!("silo-bench: organizations: {label}: {n} Tenants, {replicas} replica(s)");
            runs.push(self.organizations_run(n, label, replicas, kill).await?);
        }

        let mut summary = Table::new(
            format!(
                "organizations: {n} bare Tenants over 3 organizations, D = {} s, R = {} rps each",
                p.create_seconds, p.org_rps
            ),
            &["", "one replica", "three replicas", "three, one killed"],
        );
        let row = |label: &str, value: &dyn Fn(&Run) -> String| -> Vec<String> {
            std::iter::once(label.to_string()).chain(runs.iter().map(value)).collect()
        };
        summary
            .row(row("time to all Ready (s, from the start)", &|r| f(r.all_ready, 1)))
            .row(row(&format!("bound (s): single-organization bound {single:.0} / 3"), &|_| f(bound, 1)))
            .row(row("efficiency (bound / time)", &|r| f(bound / r.all_ready, 3)))
            .row(row("last organization's first write (s)", &|r| f(r.last_started, 1)))
            .row(row("efficiency from it", &|r| f(bound / (r.all_ready - r.last_started), 3)));
        for org in std::iter::once(DEFAULT).chain(OTHERS.iter().map(|(name, _)| *name)) {
            summary.row(row(&format!("Organizations requests per tenant, {org}"), &|r| {
                f(r.requests.get(org).copied().unwrap_or(0) as f64 / (n as f64 / 3.0), 2)
            }));
        }
        summary
            .row(row("throttled Organizations requests", &|r| r.throttled.to_string()))
            .row(row("accounts created", &|r| r.accounts_created.to_string()))
            .row(row("accounts made twice", &|r| r.duplicates.to_string()))
            .row(row(&format!("{KILLED} resumed after the kill (s)"), &|r| {
                r.kill.map_or("-".into(), |(_, gap)| f(gap, 1))
            }))
            .row(row("CPU seconds of the controllers", &|r| f(r.usage.iter().map(|u| u.cpu_seconds).sum(), 1)))
            .row(row("peak RSS of the largest controller (MiB)", &|r| {
                f(r.usage.iter().map(Usage::peak_rss_mib).fold(0.0, f64::max), 1)
            }));
        println!("{}", summary.render());
        let duplicates: usize = runs.iter().map(|r| r.duplicates).sum();
        let killed = runs.iter().find_map(|r| r.kill).map(|(_, gap)| gap);
        self.summary.push(format!(
            "organizations: {n} Tenants over 3 organizations Ready in {} s (bound {bound:.1} s; efficiency {}), {KILLED} resumed {} s after its leader was killed, {duplicates} accounts made twice",
            runs.iter().map(|r| format!("{:.1}", r.all_ready)).collect::<Vec<_>>().join(" / "),
            runs.iter().map(|r| format!("{:.3}", bound / r.all_ready)).collect::<Vec<_>>().join(" / "),
            killed.map_or("-".into(), |g| format!("{g:.1}")),
        ));

        let results = json!({
            "tenants": n,
            "organizations": 3,
            "bound_seconds": bound,
            "bound": {
                "formula": "onboard_bound(N) / 3, onboard_bound(N) = max(ceil(N / slots) * D, N * c / R): the single-organization bound for the same N over three organizations with the same quotas",
                "single_organization_seconds": single,
                "c": c,
            },
            "lease_seconds": LEASE_SECONDS,
            "resume_target_seconds": LEASE_SECONDS + 10.0,
            "left_out": "the management roles are assumed without IAM trust policies (enforce_trust_policies off); no Baseline",
            "runs": runs.iter().map(|r| json!({
                "label": r.label,
                "replicas": r.replicas,
                "time_to_all_ready_seconds": r.all_ready,
                "efficiency": bound / r.all_ready,
                "last_organization_first_write_seconds": r.last_started,
                "organizations_requests_by_organization": r.requests,
                "organizations_requests_per_tenant_by_organization": r.requests.iter().map(|(k, v)| (k.clone(), *v as f64 / (n as f64 / 3.0))).collect::<BTreeMap<_, _>>(),
                "throttled_organizations_requests": r.throttled,
                "accounts_created": r.accounts_created,
                "accounts_made_twice": r.duplicates,
                "killed_at_seconds": r.kill.map(|(at, _)| at),
                "resumed_after_seconds": r.kill.map(|(_, gap)| gap),
                "controllers": r.usage.iter().map(|u| usage_json(u, "sampled once a second until all Tenants were Ready")).collect::<Vec<_>>(),
                "ready_over_time": r.ready,
            })).collect::<Vec<_>>(),
        });
        let mut vlines = vec![vline(bound, &format!("bound {bound:.0} s"))];
        if let Some((at, gap)) = runs.iter().find_map(|r| r.kill) {
            vlines.push(vline(at, &format!("{KILLED}'s leader killed; resumed {gap:.0} s later")));
        }
        let plot_spec = json!({
            "title": format!("organizations: {n} Tenants over 3 organizations; bound {bound:.0} s"),
            "xlabel": "seconds since the controllers started",
            "ylabel": "Ready Tenants",
            "series": runs.iter().map(|r| series(&format!("{} ({} s)", r.label, r.all_ready.round()), &r.ready, "step", "left")).collect::<Vec<_>>(),
            "vlines": vlines,
        });
        let args = p.user_flags();
        self.write(Scenario::Organizations, &args, results, plot_spec).await?;
        if duplicates > 0 {
            bail!("{duplicates} accounts were made twice");
        }
        Ok(())
    }

    /// One run: a fresh world, three organizations, `n` Tenants spread over them, `replicas`
    /// controllers; with `kill`, the leader of [`KILLED`] is killed once a third are Ready.
    async fn organizations_run(&mut self, n: usize, label: &'static str, replicas: usize, kill: bool) -> Result<Run> {
        let p = self.p.clone();
        self.reset_world().await?;
        let organizations = Api::<Organization>::all(self.client.clone());
        organizations.delete_collection(&Default::default(), &Default::default()).await?;
        let leases = Api::<Lease>::namespaced(self.client.clone(), CONTROLLER_NAMESPACE);
        leases.delete_collection(&Default::default(), &Default::default()).await?;
        self.configure(p.quotas()).await?;
        self.sim.configure(json!({"enforce_trust_policies": false})).await?;
        fleet::create_ou(&self.sim).await?;
        let mut clients = vec![(DEFAULT.to_string(), self.sim.organizations())];
        for (name, account) in OTHERS {
            let org = self.sim.another_organization(account, ROLE).await?;
            fleet::create_ou_in(&org).await?;
            let spec = OrganizationSpec {
                management_role_arn: format!("arn:aws:iam::{account}:role/{ROLE}"),
                ..Default::default()
            };
            organizations.create(&PostParams::default(), &Organization::new(name, spec)).await?;
            clients.push((name.to_string(), org));
        }
        let docs: Vec<Value> = (0..n)
            .map(|i| {
                let (org, _) = &clients[i % 3];
                let mut doc = fleet::tenant(&format!("{label}-{org}-{i:05}"), p.profile, None);
                if org != DEFAULT {
                    doc["spec"]["organization"] = json!(org);
                }
                doc
            })
            .collect();
        fleet::apply_all(&self.tenants(), docs, p.apply_concurrency).await?;
        let log_start = self.sim.log_position().await?;
        let before = Counters::read(&self.sim).await?;

        let mut controllers: Vec<(String, Controller)> = vec![];
        for id in REPLICAS.into_iter().take(replicas) {
            let log = self.out.join(format!("organizations-{label}-{id}.silo.log"));
            let controller = if replicas == 1 {
                Controller::start(&p.silo, &p.user_flags(), &self.env.kube.kubeconfig, &self.sim, &log).await?
            } else {
                Controller::start_replica(&p.silo, &p.user_flags(), &self.env.kube.kubeconfig, &self.sim, &log, id)
                    .await?
            };
            controllers.push((id.to_string(), controller));
        }
        let started = controllers[0].1.started;
        let wall_start = wall_clock() - started.elapsed().as_secs_f64();
        let api = self.tenants();
        let mut ready = vec![];
        let mut killed_at: Option<f64> = None;
        let mut usage = vec![];
        let (mut last_count, mut last_progress) = (0, 0.0);
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let all_ready = loop {
            ticker.tick().await;
            for (_, controller) in &mut controllers {
                controller.check()?;
            }
            let (_, count) = fleet::count_ready(&api).await?;
            let t = started.elapsed().as_secs_f64();
            ready.push([t, count as f64]);
            if count != last_count {
                (last_count, last_progress) = (count, t);
            }
            if count >= n {
                break t;
            }
            if kill && killed_at.is_none() && count >= n / 3 {
                let lease = leases.get(&silo::leader::share::lease_name(KILLED)).await?;
                let holder = lease.spec.and_then(|s| s.holder_identity).context("nobody holds org-b's Lease")?;
                let at =
                    controllers.iter().position(|(id, _)| *id == holder).context("org-b's holder is no replica")?;
                let (_, victim) = controllers.remove(at);
                usage.push(victim.stop());
                eprintln!("silo-bench: organizations: killed {holder}, the leader of {KILLED}, at {t:.1} s");
                killed_at = Some(t);
            }
            if t - last_progress > p.stall_seconds as f64 || t > p.timeout(n).as_secs_f64() {
                let log = controllers[0].1.log();
                bail!(
                    "organizations {label}: only {count}/{n} Ready after {t:.0} s; not Ready: {}; last lines of {}:\n{}",
                    fleet::not_ready_reasons(&api).await,
                    log.display(),
                    tail(&log, 30)
                );
            }
        };
        for (_, controller) in controllers {
            usage.push(controller.stop());
        }
        for u in &usage {
            require_samples(u)?;
        }
        let d = Counters::read(&self.sim).await?.since(&before);

        // From the request log: Organizations requests per organization, when each started,
        // and when org-b was written to again after the kill.
        let owner = |account: &str| -> String {
            if account == DEFAULT_ACCOUNT {
                return DEFAULT.into();
            }
            OTHERS.iter().find(|(_, a)| *a == account).map_or(format!("account {account}"), |(n, _)| n.to_string())
        };
        let entries = self.sim.read_log(log_start).await?;
        let mut requests: BTreeMap<String, u64> = BTreeMap::new();
        let mut first_write: BTreeMap<String, f64> = BTreeMap::new();
        let mut resumed: Option<f64> = None;
        for entry in entries.iter().filter(|e| e.key.starts_with("organizations:")) {
            let org = owner(entry.caller_account.as_deref().unwrap_or_default());
            *requests.entry(org.clone()).or_default() += 1;
            let operation = entry.key.trim_start_matches("organizations:");
            let write = !["Describe", "List", "Get"].iter().any(|read| operation.starts_with(read));
            if write {
                first_write.entry(org.clone()).or_insert(entry.time - wall_start);
                if let Some(at) = killed_at
                    && org == KILLED
                    && entry.time - wall_start > at
                {
                    resumed.get_or_insert(entry.time - wall_start - at);
                }
            }
        }
        let last_started = first_write.values().copied().fold(0.0, f64::max);
        let kill = match (killed_at, resumed) {
            (Some(at), Some(gap)) => Some((at, gap)),
            (Some(_), None) => {
                bail!("organizations {label}: nothing was written for {KILLED} after its leader was killed")
            }
            _ => None,
        };
        let mut duplicates = 0;
        for (name, org) in &clients {
            let mut emails: BTreeMap<String, usize> = BTreeMap::new();
            let mut pages = org.list_accounts().into_paginator().send();
            while let Some(page) = pages.next().await {
                for account in page.with_context(|| format!("ListAccounts of {name}"))?.accounts() {
                    *emails.entry(account.email().unwrap_or_default().to_string()).or_default() += 1;
                }
            }
            duplicates += emails.values().filter(|count| **count > 1).map(|count| count - 1).sum::<usize>();
        }
        // Listings may still miss the newest accounts: every Tenant has one account, so any
        // creation beyond N made an account twice.
        let beyond = usize::try_from(d.accounts_created).unwrap_or(usize::MAX).saturating_sub(n);
        let duplicates = duplicates.max(beyond);
        let throttled = d.throttled.iter().filter(|(k, _)| k.starts_with("organizations:")).map(|(_, v)| v).sum();
        Ok(Run {
            label,
            replicas,
            all_ready,
            last_started,
            ready,
            requests,
            throttled,
            accounts_created: d.accounts_created,
            duplicates,
            kill,
            usage,
        })
    }
}

/// Seconds since the Unix epoch, as the simulator's request log tells time.
fn wall_clock() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
