//! The scenarios. Every figure comes from the simulator's counters, the Tenants' `Ready`
//! condition as seen from outside, or `/proc` of the controller process; none from Silo's
//! own metrics.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use kube::{Api, Client, api::DynamicObject};
use rand::Rng as _;
use serde_json::{Value, json};
use silo_testenv::{Env, SimClient, process::tail};

#[path = "organizations.rs"]
mod organizations;
#[path = "rollout.rs"]
mod rollout;
#[path = "signup.rs"]
mod signup;

use crate::{
    controller::{Controller, CpuReading, Usage, require_samples},
    fleet::{self, Counters, Org, of_service, sum_service},
    report::{Table, f, plot, series, vline, write_json},
    scaling,
    setup::{self, Params, Profile, RestartAt, Scenario, SiloHelp, flag_value, without_flags},
};

/// Organizations requests a created tenant needs at the least: CreateAccount and MoveAccount.
const MIN_ORG_REQUESTS: f64 = 2.0;

/// Organizations requests a created tenant of `profile` needs at the least: CreateAccount
/// and MoveAccount, and AttachPolicy for its service control policy when full.
fn min_org_requests(profile: Profile) -> f64 {
    match profile {
        Profile::Bare => MIN_ORG_REQUESTS,
        Profile::Full => MIN_ORG_REQUESTS + 1.0,
    }
}

/// Account Management requests a created tenant of `profile` needs at the least: one
/// PutAlternateContact per contact.
fn min_account_requests(profile: Profile) -> f64 {
    match profile {
        Profile::Bare => 0.0,
        Profile::Full => 3.0,
    }
}

/// Organizations operations that read the organization's shape: a controller with an
/// organization index makes them on its own period (`--index-refresh-seconds`), not per tenant.
const LIST_OPERATIONS: &[&str] = &[
    "ListAccounts",
    "ListAccountsForParent",
    "ListOrganizationalUnitsForParent",
    "ListRoots",
    "ListCreateAccountStatus",
    "DescribeOrganization",
    "ListChildren",
];

/// A tenant session: STS AssumeRole into the tenant's account.
const ASSUME_ROLE: &str = "sts:AssumeRole";

/// The services whose requests the bench reports.
const SERVICES: &[&str] = &["organizations", "account", "sts", "cloudformation"];

pub struct Bench {
    pub p: Params,
    env: Env,
    client: Client,
    sim: SimClient,
    help: SiloHelp,
    pub out: PathBuf,
    /// `git rev-parse --short HEAD` and whether the tree had changes, taken when the run
    /// started (the binaries were built from that tree just before).
    git: Value,
    /// Set while Kubernetes and the simulator hold this many Ready bench Tenants (and no
    /// controller runs): restart and steady reuse them.
    fleet: Option<usize>,
    /// Plots that failed (the JSON is written all the same); reported at the end.
    pub plot_failures: Vec<String>,
    /// One line per scenario for the closing summary.
    pub summary: Vec<String>,
}

/// How a run of `silo run` to "all Ready" went.
struct Rollout {
    /// Seconds from the controller's start until every Tenant was seen Ready.
    all_ready: f64,
    /// (seconds since start, Ready Tenants), one LIST a second.
    ready: Vec<[f64; 2]>,
    /// (seconds since start, Organizations requests since start).
    org_requests: Vec<[f64; 2]>,
}

impl Bench {
    pub async fn new(p: Params, out: PathBuf) -> Result<Self> {
        let help = SiloHelp::load(&p.silo)?;
        let git = setup::git_commit(&silo_testenv::repo_dir());
        let started = Instant::now();
        eprintln!("silo-bench: starting kube-apiserver, etcd and the AWS simulator");
        let env = Env::start().await?;
        eprintln!(
            "silo-bench: kube-apiserver {} and the simulator at {} up in {:.1} s (logs in {})",
            env.kube.version,
            env.aws.endpoint,
            started.elapsed().as_secs_f64(),
            env.dir.display()
        );
        let client = env.client().await?;
        let sim = env.sim();
        Ok(Self { p, env, client, sim, help, out, git, fleet: None, plot_failures: vec![], summary: vec![] })
    }

    pub fn env_dir(&self) -> PathBuf {
        self.env.dir.clone()
    }

    fn tenants(&self) -> Api<DynamicObject> {
        fleet::tenants(&self.client)
    }

    /// No Tenants, no Baselines, a fresh simulator (its config at defaults).
    async fn reset_world(&mut self) -> Result<()> {
        self.fleet = None;
        fleet::delete_all(&self.tenants(), self.p.apply_concurrency).await.context("delete the Tenants")?;
        fleet::delete_all(&fleet::baselines(&self.client), self.p.apply_concurrency)
            .await
            .context("delete the Baselines")?;
        self.sim.reset().await
    }

    /// CPU so far of the environment's processes (and of `named` ones), for a profile.
    fn cpu(&self, named: &[(u32, &str)]) -> CpuReading {
        let port = self.sim.endpoint.rsplit(':').next().unwrap_or_default().to_string();
        CpuReading::read(&self.env.dir, &port, named)
    }

    /// Configures the simulator and returns its whole config as it then stands. Request
    /// rates the profile sets replace the simulator's defaults (AWS's rates) for those keys
    /// only; an empty `rate_limits` turns every rate off.
    async fn configure(&self, mut config: Value) -> Result<Value> {
        if let Some(rates) = config.get("rate_limits").and_then(Value::as_object).filter(|r| !r.is_empty()) {
            let mut merged = self.sim.config().await?["rate_limits"].as_object().cloned().unwrap_or_default();
            merged.extend(rates.clone());
            config["rate_limits"] = Value::Object(merged);
        }
        self.sim.configure(config).await?;
        self.sim.config().await
    }

    /// Applies Tenants of the run's profile (with the profile's Baseline, or `baseline`).
    async fn apply_tenants(&self, names: &[String], baseline: Option<&str>) -> Result<f64> {
        let profile = self.p.profile;
        let baseline = baseline.or(profile.baseline());
        let docs = names.iter().map(|n| fleet::tenant(n, profile, baseline)).collect();
        let seconds = fleet::apply_all(&self.tenants(), docs, self.p.apply_concurrency).await?;
        eprintln!("silo-bench: applied {} Tenants in {seconds:.1} s", names.len());
        Ok(seconds)
    }

    /// What the profile needs in the organization and the cluster before its Tenants are
    /// applied (full: the policy, trusted access for Account Management, the two-region
    /// Baseline), and the Baseline `extra` when named.
    async fn prepare_profile(&self, extra: Option<&str>) -> Result<()> {
        let mut baselines = vec![];
        if self.p.profile == Profile::Full {
            fleet::prepare_full_profile(&self.sim).await?;
            baselines.push(fleet::FULL_BASELINE);
        }
        baselines.extend(extra.filter(|b| !baselines.contains(b)));
        let docs = baselines.iter().map(|b| fleet::baseline(b, fleet::baseline_regions(b))).collect();
        fleet::apply_all(&fleet::baselines(&self.client), docs, 1).await?;
        Ok(())
    }

    async fn start_controller(&self, args: &[String], log_name: &str) -> Result<Controller> {
        let log = self.out.join(log_name);
        let controller = Controller::start(&self.p.silo, args, &self.env.kube.kubeconfig, &self.sim, &log).await?;
        eprintln!(
            "silo-bench: silo run (pid {}) started; log {}; metrics http://{}/metrics",
            controller.pid(),
            log.display(),
            controller.metrics_address
        );
        Ok(controller)
    }

    /// Polls once a second until `n` Tenants are Ready; fails on the controller's death or
    /// after the timeout, with the log's tail.
    async fn wait_all_ready(&self, controller: &mut Controller, n: usize, what: &str) -> Result<Rollout> {
        let timeout = self.p.timeout(n).as_secs_f64();
        let api = self.tenants();
        let base = Counters::read(&self.sim).await?.total("organizations");
        let mut ready = vec![];
        let mut org_requests = vec![];
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_print = 0.0;
        let (mut last_count, mut last_progress) = (0, 0.0);
        loop {
            ticker.tick().await;
            controller.check()?;
            let (_, count) = fleet::count_ready(&api).await?;
            let t = controller.elapsed();
            if count != last_count {
                (last_count, last_progress) = (count, t);
            }
            ready.push([t, count as f64]);
            let org = Counters::read(&self.sim).await?.total("organizations");
            org_requests.push([t, org.saturating_sub(base) as f64]);
            if count >= n {
                eprintln!("silo-bench: {what}: {count}/{n} Ready after {t:.1} s");
                return Ok(Rollout { all_ready: t, ready, org_requests });
            }
            if t - last_print >= 15.0 {
                eprintln!("silo-bench: {what}: {count}/{n} Ready, {t:.0} s");
                last_print = t;
            }
            let stalled = t - last_progress > self.p.stall_seconds as f64;
            if t > timeout || stalled {
                let why = if stalled {
                    format!("no Tenant became Ready for {} s (BENCH_STALL_SECONDS)", self.p.stall_seconds)
                } else {
                    "BENCH_TIMEOUT_SECONDS; default 600 + 5 s per tenant".to_string()
                };
                bail!(
                    "{what}: only {count}/{n} Tenants Ready after {t:.0} s ({why}); not Ready: {}; last lines of {}:\n{}",
                    fleet::not_ready_reasons(&api).await,
                    controller.log().display(),
                    tail(&controller.log(), 30)
                );
            }
        }
    }

    /// N Ready bench Tenants and no controller running: reused from onboard when it ran,
    /// else onboarded here the way onboard does it, with the AWS-like quotas.
    async fn ensure_fleet(&mut self) -> Result<usize> {
        if let Some(n) = self.fleet {
            return Ok(n);
        }
        let n = self.p.tenants;
        eprintln!("silo-bench: onboarding {n} Tenants for the scenarios that need them Ready");
        self.reset_world().await?;
        self.configure(self.p.quotas()).await?;
        fleet::create_ou(&self.sim).await?;
        self.prepare_profile(None).await?;
        self.apply_tenants(&fleet::names("bench", n), None).await?;
        let mut controller = self.start_controller(&self.p.user_flags(), "setup.silo.log").await?;
        self.wait_all_ready(&mut controller, n, "setup").await?;
        controller.stop();
        self.fleet = Some(n);
        Ok(n)
    }

    /// A numeric `silo run` setting as the controller ran: from BENCH_SILO_FLAGS when given
    /// there, else the default `silo run --help` states, else `fallback`.
    fn setting(&self, flags: &[String], flag: &str, fallback: u64) -> Result<(u64, &'static str)> {
        match flag_value(flags, flag) {
            Some(v) => Ok((v.parse().with_context(|| format!("{flag} {v} in BENCH_SILO_FLAGS"))?, "BENCH_SILO_FLAGS")),
            None => Ok(self.help.number(flag, fallback)),
        }
    }

    /// Writes `<scenario>.json` (with the commit, machine, parameters and Silo's flags) and
    /// draws `<scenario>.png`.
    async fn write(
        &mut self,
        scenario: Scenario,
        silo_args: &[String],
        results: Value,
        plot_spec: Value,
    ) -> Result<()> {
        self.write_as(scenario.name(), silo_args, results, plot_spec).await
    }

    /// [`Bench::write`] to `<name>.json` (a scenario with variants writes one file each).
    async fn write_as(&mut self, name: &str, silo_args: &[String], results: Value, plot_spec: Value) -> Result<()> {
        let doc = json!({
            "scenario": name,
            "profile": self.p.profile.name(),
            "git": &self.git,
            "machine": setup::machine(),
            "params": &self.p,
            "silo": {
                "binary": &self.p.silo,
                "args": silo_args,
                "help_defaults": {
                    "resync_seconds": self.help.default_of("--resync-seconds"),
                    "concurrency": self.help.default_of("--concurrency"),
                    "aws_requests_per_second": self.help.default_of("--aws-requests-per-second"),
                    "aws_max_in_flight": self.help.default_of("--aws-max-in-flight"),
                    "index_refresh_seconds": self.help.default_of("--index-refresh-seconds"),
                },
            },
            "environment": {"kube_version": &self.env.kube.version},
            "results": results,
            "plot": plot_spec,
        });
        let path = write_json(&self.out, name, &doc)?;
        if !self.p.plots {
            println!("wrote {}\n", path.display());
            return Ok(());
        }
        match plot(&self.p.python, &path) {
            Ok(png) => println!("wrote {} and {}\n", path.display(), png.display()),
            Err(err) => {
                println!("wrote {}; the plot failed: {err:#}\n", path.display());
                self.plot_failures.push(format!("{name}: {err:#}"));
            }
        }
        Ok(())
    }

    // ---- onboard ------------------------------------------------------------------------

    /// N Tenants applied first, then Silo started; time to all Ready from the start.
    pub async fn onboard(&mut self) -> Result<()> {
        let p = self.p.clone();
        let n = p.tenants;
        self.reset_world().await?;
        let sim_config = self.configure(p.quotas()).await?;
        fleet::create_ou(&self.sim).await?;
        self.prepare_profile(None).await?;
        let apply_seconds = self.apply_tenants(&fleet::names("bench", n), None).await?;
        let loadavg_start = setup::loadavg();
        let before = Counters::read(&self.sim).await?;
        let mut controller = self.start_controller(&p.user_flags(), "onboard.silo.log").await?;
        let args = controller.args.clone();
        let rollout = self.wait_all_ready(&mut controller, n, "onboard").await?;
        let usage = controller.stop();
        require_samples(&usage)?;
        let d = Counters::read(&self.sim).await?.since(&before);
        self.fleet = Some(n);

        let c = min_org_requests(p.profile);
        let bound = setup::onboard_bound(n, p.creation_slots, p.create_seconds, p.org_rps, c);
        let efficiency = bound / rollout.all_ready;
        // AWS meters the Account API per account, so only Silo's own budget limits a fleet.
        let (account_rps, _) = self.setting(&p.user_flags(), "--account-requests-per-second", 5)?;
        let account_budget_seconds = n as f64 * min_account_requests(p.profile) / account_rps as f64;
        let org = of_service(&d.requests, "organizations");
        let org_throttled = of_service(&d.throttled, "organizations");
        let org_total = sum_service(&d.requests, "organizations");
        let refused = org_throttled.get("CreateAccount").copied().unwrap_or(0);
        let (budget, _) = self.setting(&p.user_flags(), "--aws-requests-per-second", 8)?;
        let org_answered = org_total.saturating_sub(sum_service(&d.throttled, "organizations"));

        let mut summary = Table::new(
            format!("onboard: {n} {} Tenants, D = {} s, R = {} rps", p.profile.name(), p.create_seconds, p.org_rps),
            &["", "value"],
        );
        summary
            .row(vec!["time to all Ready (s, from the controller's start)".into(), f(rollout.all_ready, 1)])
            .row(vec![format!("bound (s): max(ceil(N/5) x D, {c} N / R)"), f(bound, 1)])
            .row(vec!["efficiency (bound / time)".into(), f(efficiency, 3)]);
        if p.profile == Profile::Full {
            summary.row(vec![
                format!("3 contacts per tenant at Silo's Account API budget of {account_rps}/s (s)"),
                f(account_budget_seconds, 1),
            ]);
        }
        summary
            .row(vec!["Organizations requests per tenant".into(), f(org_total as f64 / n as f64, 2)])
            .row(vec![
                "throttled Organizations requests".into(),
                sum_service(&d.throttled, "organizations").to_string(),
            ])
            .row(vec!["CreateAccount requests refused (throttled)".into(), refused.to_string()])
            .row(vec!["accounts created".into(), d.accounts_created.to_string()])
            .row(vec!["peak RSS of the controller (MiB)".into(), f(usage.peak_rss_mib(), 1)])
            .row(vec!["CPU seconds of the controller".into(), f(usage.cpu_seconds, 1)])
            .row(vec!["applying the Tenants took (s, before the start)".into(), f(apply_seconds, 1)])
            .row(vec![
                format!("Silo's own budget: unthrottled requests / --aws-requests-per-second {budget} (s)"),
                f(org_answered as f64 / budget as f64, 1),
            ]);
        println!("{}", summary.render());
        println!("{}", op_table("Organizations requests by operation", &org, &org_throttled, n).render());
        println!("{}", op_table("AWS requests by operation, every service", &d.requests, &d.throttled, n).render());
        self.summary.push(format!(
            "onboard ({}): {n} Tenants Ready in {:.1} s, bound {bound:.1} s, efficiency {efficiency:.3}, {:.2} Organizations requests per tenant",
            p.profile.name(),
            rollout.all_ready,
            org_total as f64 / n as f64
        ));

        let results = json!({
            "tenants": n,
            "measured_from": "the controller process's start; all Tenants were applied before it started",
            "apply_seconds": apply_seconds,
            "time_to_all_ready_seconds": rollout.all_ready,
            "bound_seconds": bound,
            "bound": {
                "formula": "max(ceil(N / slots) * D, N * c / R), c = 2 (CreateAccount + MoveAccount), 3 for the full profile (+ AttachPolicy)",
                "c": c,
                "creation_slots_seconds": (n as f64 / p.creation_slots as f64).ceil() * p.create_seconds,
                "organizations_requests_seconds": n as f64 * c / p.org_rps,
            },
            "account_budget_seconds": account_budget_seconds,
            "account_budget_note": "N * (PutAlternateContact per tenant: 3 for the full profile, 0 bare) / Silo's --account-requests-per-second: AWS meters the Account API per account, so only Silo's own budget limits a fleet's contacts; not part of the bound",
            "requests_per_tenant_by_operation": per_tenant(&d.requests, n),
            "efficiency": efficiency,
            "silo_aws_requests_per_second": budget,
            "silo_budget_seconds": org_answered as f64 / budget as f64,
            "silo_budget_note": "the Organizations requests Silo made that were not throttled, divided by its own --aws-requests-per-second: the least time its budget allows for them (throttled requests are left out because the AWS SDK's own retries re-send them)",
            "organizations_requests_total": org_total,
            "organizations_requests_per_tenant": org_total as f64 / n as f64,
            "organizations_requests_per_tenant_by_operation": per_tenant(&org, n),
            "organizations_requests_by_operation": org,
            "throttled_by_operation": d.throttled,
            "create_account_refused": refused,
            "create_account_refused_note": "throttled answers to CreateAccount: a full creation quota (5 in progress) or the Organizations rate limit; the simulator counts both as throttled",
            "accounts_created": d.accounts_created,
            "requests_by_operation": d.requests,
            "controller": usage_json(&usage, "sampled once a second until all Tenants were Ready"),
            "loadavg_start": loadavg_start,
            "simulator_config": sim_config,
            "ready_over_time": rollout.ready,
            "organizations_requests_over_time": rollout.org_requests,
        });
        let plot_spec = json!({
            "title": format!("onboard: {n} Tenants (D = {} s, R = {} rps); efficiency {efficiency:.2}", p.create_seconds, p.org_rps),
            "xlabel": "seconds since the controller started",
            "ylabel": "Ready Tenants",
            "series": [
                series("Ready Tenants (silo run)", &rollout.ready, "step", "left"),
                series(&format!("bound: 5 creations per D, R/{c} tenants per second"), &setup::ideal_curve(n, p.creation_slots, p.create_seconds, p.org_rps, c), "dashed", "left"),
            ],
            "vlines": [vline(bound, &format!("bound {bound:.0} s")), vline(rollout.all_ready, &format!("all Ready {:.0} s", rollout.all_ready))],
        });
        self.write(Scenario::Onboard, &args, results, plot_spec).await
    }

    // ---- restart ------------------------------------------------------------------------

    /// With N Ready Tenants, once per point of the verification schedule in
    /// `BENCH_RESTART_AT`: the schedule state set as a controller left it there, the controller
    /// started again (the previous one was killed), one new Tenant applied a second later, and
    /// the AWS requests counted over the window. Each point writes `restart-<point>.json`.
    pub async fn restart(&mut self) -> Result<()> {
        let points = self.p.restart_at.clone();
        if points.is_empty() {
            bail!("BENCH_RESTART_AT names no point of the schedule");
        }
        for at in points {
            eprintln!("silo-bench: restart at {}", at.name());
            self.restart_at(at).await.with_context(|| format!("restart at {}", at.name()))?;
        }
        Ok(())
    }

    /// Writes each Ready Tenant's `status.lastVerifiedTime` as a controller that verified the
    /// fleet on its schedule (at `period`) until `until`, then stopped, left it: the tenant's
    /// last turn before `until` ([`scaling::last_turn_before`]). Returns, for the restart at
    /// `now`, how many tenants the schedule makes overdue and due within `window`.
    async fn set_schedule_state(
        &self,
        until: k8s_openapi::jiff::Timestamp,
        now: k8s_openapi::jiff::Timestamp,
        period: Duration,
        window: Duration,
    ) -> Result<Value> {
        use kube::api::{ListParams, Patch, PatchParams};
        let api = self.tenants();
        let list = api.list(&ListParams::default()).await.context("list Tenants")?;
        let end = now + k8s_openapi::jiff::SignedDuration::try_from(window)?;
        let (mut overdue, mut due_in_window) = (0usize, 0usize);
        let mut patches = vec![];
        for tenant in list.items.iter().filter(|t| fleet::is_ready(t)) {
            let (Some(name), Some(uid)) = (tenant.metadata.name.clone(), tenant.metadata.uid.clone()) else { continue };
            let last = scaling::last_turn_before(&uid, until, period);
            let due = scaling::next_verification(&uid, last, period);
            overdue += usize::from(due <= now);
            due_in_window += usize::from(due <= end);
            patches.push((name, json!({"status": {"lastVerifiedTime": last.to_string()}})));
        }
        let written = patches.len();
        futures::stream::iter(patches)
            .map(|(name, patch)| {
                let api = api.clone();
                async move {
                    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .with_context(|| format!("write the schedule state of {name}"))?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(self.p.apply_concurrency.max(1))
            .try_collect::<()>()
            .await?;
        Ok(json!({
            "tenants_written": written,
            "verified_until": until.to_string(),
            "restart_at": now.to_string(),
            "overdue_at_restart": overdue,
            "due_within_window_overdue_included": due_in_window,
            "how": "status.lastVerifiedTime of each Ready Tenant set to its last turn before verified_until under silo::tenant::schedule at the controller's --resync-seconds (what a controller that ran on the schedule until then leaves); the counts follow next_verification from it",
        }))
    }

    async fn restart_at(&mut self, at: RestartAt) -> Result<()> {
        let p = self.p.clone();
        let n = self.ensure_fleet().await?;
        let window = p.restart_window_seconds as f64;
        let sim_config = self.configure(p.quotas()).await?;
        let api = self.tenants();
        let new_name = format!("bench-restart-{}", at.name());
        let flags = p.user_flags();
        let (period_seconds, period_source) = self.setting(&flags, "--resync-seconds", 3 * 3600)?;
        let period = Duration::from_secs(period_seconds);
        let outage = match at {
            RestartAt::Random => 0,
            RestartAt::Outage => p.restart_outage_seconds,
        };
        let now = k8s_openapi::jiff::Timestamp::now();
        let until = now - k8s_openapi::jiff::SignedDuration::from_secs(i64::try_from(outage)?);
        let schedule = self.set_schedule_state(until, now, period, Duration::from_secs_f64(window)).await?;
        eprintln!(
            "silo-bench: restart: schedule state written ({} overdue, {} due within the window)",
            schedule["overdue_at_restart"], schedule["due_within_window_overdue_included"]
        );
        let verifications = Verifications::watch(self.client.clone()).await?;
        let loadavg_start = setup::loadavg();
        // The controller that brought the Tenants to Ready was stopped with SIGKILL.
        let before = Counters::read(&self.sim).await?;
        let mut controller = self.start_controller(&flags, &format!("restart-{}.silo.log", at.name())).await?;
        verifications.start_counting();
        let args = controller.args.clone();
        tokio::time::sleep_until((controller.started + Duration::from_secs(1)).into()).await;
        fleet::apply_all(&api, vec![fleet::tenant(&new_name, p.profile, p.profile.baseline())], 1).await?;
        let applied_at = controller.elapsed();

        let timeout = window + p.timeout(1).as_secs_f64();
        let mut new_ready_at: Option<f64> = None;
        let mut in_window: Option<(Counters, u64)> = None;
        let mut requests_over_time: BTreeMap<&str, Vec<[f64; 2]>> =
            SERVICES.iter().map(|s| (*s, vec![[0.0, 0.0]])).collect();
        let mut ready_over_time = vec![];
        let mut next_sample = 0.0;
        loop {
            controller.check()?;
            let t = controller.elapsed();
            if new_ready_at.is_none() && api.get_opt(&new_name).await?.is_some_and(|tenant| fleet::is_ready(&tenant)) {
                new_ready_at = Some(t);
                eprintln!("silo-bench: restart: the new Tenant is Ready {:.1} s after it was applied", t - applied_at);
            }
            if t >= next_sample {
                next_sample = t.floor() + 1.0;
                let now = Counters::read(&self.sim).await?.since(&before);
                for service in SERVICES {
                    requests_over_time.entry(*service).or_default().push([t, now.total(service) as f64]);
                }
                let (_, ready) = fleet::count_ready(&api).await?;
                ready_over_time.push([t, ready as f64]);
                if (t as u64).is_multiple_of(30) {
                    eprintln!("silo-bench: restart: {t:.0} s of {window:.0} s, {} AWS requests so far", now.total(""));
                }
                if in_window.is_none() && t >= window {
                    in_window = Some((now, verifications.count()));
                }
            }
            if in_window.is_some() && new_ready_at.is_some() {
                break;
            }
            if t > timeout {
                bail!(
                    "restart: the new Tenant was not Ready {t:.0} s after the start; last lines of {}:\n{}",
                    controller.log().display(),
                    tail(&controller.log(), 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        verifications.stop();
        let usage = controller.stop();
        require_samples(&usage)?;
        let (d, verified) = in_window.expect("set before the loop ends");
        let new_ready_at = new_ready_at.expect("set before the loop ends");
        let latency = new_ready_at - applied_at;
        self.fleet = Some(n + 1);

        let point = match at {
            RestartAt::Random => "at a random point of the schedule".to_string(),
            RestartAt::Outage => format!("after an outage of {outage} s"),
        };
        let mut summary = Table::new(
            format!("restart {point}: {n} Ready {} Tenants, one new Tenant 1 s after the start", p.profile.name()),
            &["", "value"],
        );
        summary
            .row(vec![format!("verification period (--resync-seconds, {period_source})"), period_seconds.to_string()])
            .row(vec!["tenants overdue at the restart (schedule)".into(), schedule["overdue_at_restart"].to_string()])
            .row(vec![
                format!("tenants due within {window:.0} s, overdue included (schedule)"),
                schedule["due_within_window_overdue_included"].to_string(),
            ])
            .row(vec![format!("verifications counted in the first {window:.0} s"), verified.to_string()])
            .row(vec!["new Tenant Ready after (s, from its apply)".into(), f(latency, 1)])
            .row(vec!["new Tenant Ready after (s, from the controller's start)".into(), f(new_ready_at, 1)])
            .row(vec![format!("AWS requests in the first {window:.0} s"), d.total("").to_string()]);
        for service in SERVICES {
            summary.row(vec![format!("  {service}"), d.total(service).to_string()]);
        }
        summary
            .row(vec!["throttled requests in the window".into(), sum_service(&d.throttled, "").to_string()])
            .row(vec!["peak RSS of the controller (MiB)".into(), f(usage.peak_rss_mib(), 1)])
            .row(vec!["CPU seconds of the controller".into(), f(usage.cpu_seconds, 1)]);
        println!("{}", summary.render());
        println!(
            "{}",
            op_table(&format!("AWS requests in the first {window:.0} s by operation"), &d.requests, &d.throttled, n)
                .render()
        );
        self.summary.push(format!(
            "restart {point} ({}): new Tenant Ready {latency:.1} s after its apply; {} AWS requests in the first {window:.0} s ({:.2} per Ready tenant), {verified} verifications",
            p.profile.name(),
            d.total(""),
            d.total("") as f64 / n as f64
        ));

        let results = json!({
            "point_of_schedule": at.name(),
            "outage_seconds": outage,
            "ready_tenants_before": n,
            "tenants": n,
            "resync_seconds": period_seconds,
            "resync_source": period_source,
            "schedule_state": schedule,
            "verifications_in_window": verified,
            "previous_controller_stopped_with": "SIGKILL",
            "new_tenant_applied_at_seconds": applied_at,
            "new_tenant_ready_at_seconds": new_ready_at,
            "new_tenant_latency_seconds": latency,
            "window_seconds": window,
            "requests_total": d.total(""),
            "requests_by_service": SERVICES.iter().map(|s| (s.to_string(), d.total(s))).collect::<BTreeMap<_, _>>(),
            "requests_by_operation": d.requests,
            "requests_per_ready_tenant": d.total("") as f64 / n as f64,
            "throttled_by_operation": d.throttled,
            "controller": usage_json(&usage, "sampled once a second over the window (and until the new Tenant was Ready)"),
            "loadavg_start": loadavg_start,
            "simulator_config": sim_config,
            "requests_over_time": requests_over_time,
            "ready_over_time": ready_over_time,
        });
        let mut plot_series: Vec<Value> = requests_over_time
            .iter()
            .map(|(s, points)| series(&format!("{s} requests (cumulative)"), points, "line", "left"))
            .collect();
        plot_series.push(series("Ready Tenants", &ready_over_time, "step", "right"));
        let plot_spec = json!({
            "title": format!("restart {point} with {n} Ready Tenants: new Tenant Ready {latency:.0} s after its apply"),
            "xlabel": "seconds since the controller started",
            "ylabel": "AWS requests since the start",
            "ylabel_right": "Ready Tenants",
            "series": plot_series,
            "vlines": [vline(applied_at, "new Tenant applied"), vline(new_ready_at, "new Tenant Ready")],
        });
        self.write_as(&format!("restart-{}", at.name()), &args, results, plot_spec).await
    }

    // ---- steady -------------------------------------------------------------------------

    /// With N Ready Tenants: the controller with a short resync and index refresh; requests
    /// counted over a window that starts when the start-up pass is over, scaled to the default
    /// periods by [`scaling`].
    pub async fn steady(&mut self) -> Result<()> {
        let p = self.p.clone();
        let n = self.ensure_fleet().await?;
        let sim_config = self.configure(p.quotas()).await?;
        let resync = p.steady_resync_seconds as f64;
        let window = p.steady_window() as f64;
        let (default_resync, resync_source) = self.help.number("--resync-seconds", 3 * 3600);
        let default_period = Duration::from_secs(default_resync);
        let index_flag = self.help.has_flag("--index-refresh-seconds");
        let index_default = self.help.default_of("--index-refresh-seconds").and_then(|v| v.parse::<u64>().ok());
        if index_flag && index_default.is_none() {
            bail!("silo run --help lists --index-refresh-seconds without a default; cannot scale index refreshes");
        }
        let index_period = p.steady_index_refresh_seconds as f64;
        let mut args = without_flags(&p.user_flags(), &["--resync-seconds", "--index-refresh-seconds"]);
        args.extend(["--resync-seconds".into(), p.steady_resync_seconds.to_string()]);
        if index_flag {
            args.extend(["--index-refresh-seconds".into(), p.steady_index_refresh_seconds.to_string()]);
        }
        let loadavg_start = setup::loadavg();
        let start = Counters::read(&self.sim).await?;
        let verifications = Verifications::watch(self.client.clone()).await?;
        let mut controller = self.start_controller(&args, "steady.silo.log").await?;
        let args = controller.args.clone();

        // Warm-up: the start-up pass (the first sweep, the tenants overdue after the restart).
        // It is over at the first moment, at least 10 s in, after which no AWS request came
        // for 5 s; at the latest at one resync, when every tenant verified in it has its next
        // turn on its phase.
        const QUIET: f64 = 5.0;
        let mut requests_over_time: BTreeMap<&str, Vec<[f64; 2]>> =
            SERVICES.iter().map(|s| (*s, vec![[0.0, 0.0]])).collect();
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut last_total, mut last_change) = (0, 0.0);
        let (window_start, at_start, log_start, warmup_capped) = loop {
            ticker.tick().await;
            controller.check()?;
            let t = controller.elapsed();
            let log_at = self.sim.log_position().await?;
            let now = Counters::read(&self.sim).await?;
            let since = now.since(&start);
            for service in SERVICES {
                requests_over_time.entry(*service).or_default().push([t, since.total(service) as f64]);
            }
            if since.total("") != last_total {
                (last_total, last_change) = (since.total(""), t);
            }
            let quiet = t >= 10.0 && t - last_change >= QUIET;
            if quiet || t >= resync {
                verifications.start_counting();
                break (t, now, log_at, !quiet);
            }
        };
        let warmup = at_start.since(&start);
        eprintln!(
            "silo-bench: steady: start-up pass over after {window_start:.0} s ({} AWS requests); counting for {window:.0} s",
            warmup.total("")
        );
        let mut last_print = window_start;
        let end = loop {
            ticker.tick().await;
            controller.check()?;
            let t = controller.elapsed();
            let now = Counters::read(&self.sim).await?;
            let since = now.since(&start);
            for service in SERVICES {
                requests_over_time.entry(*service).or_default().push([t, since.total(service) as f64]);
            }
            if t - last_print >= 30.0 {
                eprintln!("silo-bench: steady: {:.0} s of {window:.0} s counted", t - window_start);
                last_print = t;
            }
            if t >= window_start + window {
                break now;
            }
        };
        let verified = verifications.stop();
        let usage = controller.stop();
        require_samples(&usage)?;
        let d = end.since(&at_start);
        if verified == 0 {
            bail!("no Tenant recorded a verification (status.lastVerifiedTime) in the window: nothing to scale");
        }
        let log = self.sim.read_log(log_start).await?;
        let sweeps = Sweeps::of(&log);

        // Scaling (the "scaling" text of the results says the same).
        let is_index_op = |key: &str| index_flag && is_list_key(key);
        let verification_interval = scaling::verification_interval(default_period);
        let mut rows = BTreeMap::new();
        // At the default period a tenant's session has expired by its next verification, so
        // each verification that reads a Baseline's stacks assumes the role again; the short
        // resync reuses sessions. The profile's Tenants all have a Baseline or none.
        let sessions_expire = p.profile.baseline().is_some() && default_resync > scaling::SESSION_REUSE_SECONDS;
        let measured_assume_role = d.requests.get(ASSUME_ROLE).copied().unwrap_or(0);
        let at_default = |key: &str, count: u64| if sessions_expire && key == ASSUME_ROLE { verified } else { count };
        let (mut resync_total, mut index_total) = (0u64, 0u64);
        for (key, count) in &d.requests {
            if is_index_op(key) {
                index_total += count;
            } else {
                resync_total += at_default(key, *count);
            }
        }
        if sessions_expire && !d.requests.contains_key(ASSUME_ROLE) {
            resync_total += verified;
        }
        let index_refresh = Duration::from_secs(index_default.unwrap_or(0));
        let per_hour_index = |requests: f64| match (index_flag, sweeps.complete) {
            (true, complete) if complete > 0 => {
                scaling::index_per_tenant_per_hour(requests / complete as f64, sweeps.mean_seconds(), index_refresh, n)
            }
            _ => 0.0,
        };
        let mut counted = d.requests.clone();
        if sessions_expire {
            counted.entry(ASSUME_ROLE.to_string()).or_default();
        }
        for (key, count) in &counted {
            let index = is_index_op(key);
            let hourly = if index {
                per_hour_index(sweeps.by_operation.get(key).copied().unwrap_or(0) as f64)
            } else {
                scaling::resync_per_tenant_per_hour(at_default(key, *count), verified, default_period)
            };
            rows.insert(key.clone(), json!({
                "requests_in_window": count,
                "counted_at_the_default_period": if index { None } else { Some(at_default(key, *count)) },
                "throttled_in_window": d.throttled.get(key).copied().unwrap_or(0),
                "in_complete_sweeps": if index { sweeps.by_operation.get(key).copied() } else { None },
                "class": if index { "index refresh" } else if is_list_key(key) { "resync (list operation)" } else { "resync" },
                "per_tenant_per_hour": hourly,
            }));
        }
        if index_flag && sweeps.complete == 0 {
            bail!(
                "no complete index sweep in the window ({} index requests): raise BENCH_STEADY_WINDOW_SECONDS or lower BENCH_STEADY_INDEX_REFRESH_SECONDS",
                index_total
            );
        }
        let resync_hourly = scaling::resync_per_tenant_per_hour(resync_total, verified, default_period);
        let index_hourly = per_hour_index(sweeps.requests as f64);
        let total_hourly = resync_hourly + index_hourly;
        let list_in_resync: u64 =
            d.requests.iter().filter(|(k, _)| is_list_key(k) && !is_index_op(k)).map(|(_, v)| v).sum();
        let org_rate = d.total("organizations") as f64 / window;
        let (budget, _) = self.setting(&args, "--aws-requests-per-second", 8)?;
        let saturated = org_rate > 0.8 * p.org_rps.min(budget as f64);

        let mut summary = Table::new(
            format!(
                "steady: {n} Ready {} Tenants, --resync-seconds {resync:.0}, window {window:.0} s, scaled to the default resync {default_resync} s",
                p.profile.name()
            ),
            &["", "value"],
        );
        summary
            .row(vec!["start-up pass (s, excluded)".into(), f(window_start, 0)])
            .row(vec!["AWS requests in the start-up pass (excluded)".into(), warmup.total("").to_string()])
            .row(vec!["AWS requests in the window".into(), d.total("").to_string()]);
        for service in SERVICES {
            summary.row(vec![format!("  {service}"), d.total(service).to_string()]);
        }
        summary
            .row(vec!["throttled in the window".into(), sum_service(&d.throttled, "").to_string()])
            .row(vec!["verifications counted in the window".into(), verified.to_string()])
            .row(vec![
                if sessions_expire {
                    format!(
                        "requests per verification (resync part; {ASSUME_ROLE} one per verification at the default period, {measured_assume_role} in the window)"
                    )
                } else {
                    "requests per verification (resync part)".into()
                },
                f(resync_total as f64 / verified as f64, 2),
            ])
            .row(vec![
                "verification interval at the default resync (s, silo::tenant::schedule)".into(),
                verification_interval.as_secs().to_string(),
            ])
            .row(vec!["resync part: requests per tenant per hour".into(), f(resync_hourly, 4)])
            .row(vec![
                "complete index sweeps in the window; requests, seconds each".into(),
                format!("{}; {}, {}", sweeps.complete, f(sweeps.mean_requests(), 1), f(sweeps.mean_seconds(), 2)),
            ])
            .row(vec![
                format!("index sweeps start every (s, measured; --index-refresh-seconds {index_period:.0} + a sweep)"),
                f(sweeps.mean_start_interval(), 2),
            ])
            .row(vec![
                if index_flag {
                    format!(
                        "index part: requests per tenant per hour (a sweep every {} + {} s)",
                        index_refresh.as_secs(),
                        f(sweeps.mean_seconds(), 1)
                    )
                } else {
                    "index part: (no --index-refresh-seconds in this silo)".into()
                },
                f(index_hourly, 4),
            ])
            .row(vec!["sum: requests per tenant per hour".into(), f(total_hourly, 4)])
            .row(vec!["Organizations rate in the window (rps)".into(), f(org_rate, 2)])
            .row(vec!["peak RSS of the controller (MiB)".into(), f(usage.peak_rss_mib(), 1)])
            .row(vec!["CPU seconds of the controller".into(), f(usage.cpu_seconds, 1)]);
        println!("{}", summary.render());
        let mut by_op = Table::new(
            "steady: requests by operation",
            &["operation", "in window", "throttled", "class", "per tenant per hour"],
        );
        for (key, row) in &rows {
            by_op.row(vec![
                key.clone(),
                row["requests_in_window"].to_string(),
                row["throttled_in_window"].to_string(),
                row["class"].as_str().unwrap_or("").into(),
                f(row["per_tenant_per_hour"].as_f64().unwrap_or(0.0), 4),
            ]);
        }
        println!("{}", by_op.render());
        if warmup_capped {
            println!(
                "note: no 5 s without AWS requests came in the first resync; the window starts at one resync ({resync:.0} s), when every tenant verified at the start has its next turn on its phase"
            );
        }
        if saturated {
            println!(
                "WARNING: Organizations requests ran at over 80% of min(R, --aws-requests-per-second) in the window: the controller is rate-bound, the figure is a lower bound; use a longer BENCH_STEADY_RESYNC_SECONDS"
            );
        }
        self.summary.push(format!(
            "steady ({}): {total_hourly:.4} AWS requests per tenant per hour at the default resync ({resync_hourly:.4} resync + {index_hourly:.4} index)",
            p.profile.name()
        ));

        let results = json!({
            "ready_tenants": n,
            "tenants": n,
            "resync_seconds": resync,
            "window_seconds": window,
            "default_resync_seconds": default_resync,
            "default_resync_source": resync_source,
            "verification_interval_at_default_seconds": verification_interval.as_secs(),
            "index_refresh_flag": index_flag,
            "index_refresh_seconds": if index_flag { Some(index_period) } else { None },
            "default_index_refresh_seconds": index_default,
            "index_sweeps": sweeps.json(),
            "startup_pass_seconds": window_start,
            "startup_pass_capped_at_one_resync": warmup_capped,
            "startup_pass_requests_by_operation": warmup.requests,
            "window_requests_by_operation": d.requests,
            "window_throttled_by_operation": d.throttled,
            "window_requests_by_service": SERVICES.iter().map(|s| (s.to_string(), d.total(s))).collect::<BTreeMap<_, _>>(),
            "by_operation": rows,
            "resync_requests_counted": resync_total,
            "sessions_expire_between_verifications": sessions_expire,
            "assume_role_in_window": measured_assume_role,
            "verifications_in_window": verified,
            "list_operations_in_resync_part": list_in_resync,
            "index_requests_in_window": index_total,
            "per_tenant_per_hour": {"resync": resync_hourly, "index": index_hourly, "sum": total_hourly},
            "organizations_rps_in_window": org_rate,
            "silo_aws_requests_per_second": budget,
            "rate_bound_warning": saturated,
            "scaling": format!(
                "The window starts when the start-up pass is over (no AWS request for 5 s, at least 10 s after the start; at the latest one resync S in) and lasts W (default 2 S). \
                 Resync part: silo::tenant::schedule verifies a Ready tenant once per period, at a phase of the period fixed by its UID (next_verification: the first time on its phase at least half a period after the last verification). \
                 The bench counts the verifications in the window (changes of status.lastVerifiedTime, watched), so requests per verification = resync requests / verifications; \
                 per tenant per hour = requests per verification * 3600 / the mean interval between two verifications of a tenant under next_verification at the default period P (from `silo run --help`), {} s for P = {default_resync} s (bench scaling::resync_per_tenant_per_hour; a unit test pins the interval to P). \
                 A tenant session (AssumeRole) is reused for {} s (controller/src/aws/tenant_access.rs: one hour, dropped five minutes early): when P is longer and the Tenants have a Baseline, whose stacks each verification reads, every verification assumes the role again, so sts:AssumeRole is counted once per verification instead of as measured (the short resync reuses sessions). \
                 Index part, only when `silo run --help` lists --index-refresh-seconds: the controller sweeps the organization, then sleeps the refresh period (controller/src/org/mod.rs, keep_index: no jitter; the sleep starts when the sweep ends), so a sweep starts every I + s, s the time a sweep takes. \
                 From the simulator's request log the bench takes the sweeps that start (DescribeOrganization) and end (ListCreateAccountStatus) in the window: requests per sweep and s; per tenant per hour at the default I_d = requests per sweep * 3600 / (I_d + s) / N (bench scaling::index_per_tenant_per_hour). \
                 Without the flag, list operations are counted in the resync part.",
                verification_interval.as_secs(),
                scaling::SESSION_REUSE_SECONDS
            ),
            "controller": usage_json(&usage, "sampled once a second from the start to the end of the window"),
            "loadavg_start": loadavg_start,
            "simulator_config": sim_config,
            "requests_over_time": requests_over_time,
        });
        let plot_series: Vec<Value> = requests_over_time
            .iter()
            .map(|(s, points)| series(&format!("{s} requests (cumulative)"), points, "line", "left"))
            .collect();
        let plot_spec = json!({
            "title": format!("steady: {n} Ready Tenants, resync {resync:.0} s: {total_hourly:.3} requests per tenant per hour at {default_resync} s"),
            "xlabel": "seconds since the controller started",
            "ylabel": "AWS requests since the start",
            "series": plot_series,
            "vlines": [vline(window_start, "window starts"), vline(window_start + window, "window ends")],
        });
        self.write(Scenario::Steady, &args, results, plot_spec).await
    }

    // ---- baseline -----------------------------------------------------------------------

    /// M Tenants of the profile with a Baseline (an SNS topic; one region for bare Tenants,
    /// the full profile's two): STS and CloudFormation requests per tenant, time to all Ready.
    pub async fn baseline(&mut self) -> Result<()> {
        let p = self.p.clone();
        let m = p.baseline_tenants;
        self.reset_world().await?;
        let sim_config = self.configure(p.quotas()).await?;
        fleet::create_ou(&self.sim).await?;
        let baseline_name = p.profile.baseline().unwrap_or(fleet::BARE_BASELINE);
        let regions = fleet::baseline_regions(baseline_name);
        self.prepare_profile(Some(baseline_name)).await?;
        let apply_seconds = self.apply_tenants(&fleet::names("bl", m), Some(baseline_name)).await?;
        let loadavg_start = setup::loadavg();
        let before = Counters::read(&self.sim).await?;
        let mut controller = self.start_controller(&p.user_flags(), "baseline.silo.log").await?;
        let args = controller.args.clone();
        let rollout = self.wait_all_ready(&mut controller, m, "baseline").await?;
        let usage = controller.stop();
        require_samples(&usage)?;
        let d = Counters::read(&self.sim).await?.since(&before);

        let c = min_org_requests(p.profile);
        let bound = setup::onboard_bound(m, p.creation_slots, p.create_seconds, p.org_rps, c);
        let mut summary = Table::new(
            format!("baseline: {m} {} Tenants with a Baseline in {} region(s)", p.profile.name(), regions.len()),
            &["", "value"],
        );
        summary
            .row(vec!["time to all Ready (s, from the controller's start)".into(), f(rollout.all_ready, 1)])
            .row(vec!["Organizations bound without the Baseline (s)".into(), f(bound, 1)]);
        for service in SERVICES {
            summary.row(vec![format!("{service} requests per tenant"), f(d.total(service) as f64 / m as f64, 2)]);
        }
        summary
            .row(vec!["throttled requests".into(), sum_service(&d.throttled, "").to_string()])
            .row(vec!["peak RSS of the controller (MiB)".into(), f(usage.peak_rss_mib(), 1)])
            .row(vec!["CPU seconds of the controller".into(), f(usage.cpu_seconds, 1)]);
        println!("{}", summary.render());
        for service in SERVICES {
            let ops = of_service(&d.requests, service);
            println!(
                "{}",
                op_table(&format!("{service} requests by operation"), &ops, &of_service(&d.throttled, service), m)
                    .render()
            );
        }
        self.summary.push(format!(
            "baseline ({}, {} region(s)): {m} Tenants Ready in {:.1} s; per tenant {:.2} STS and {:.2} CloudFormation requests",
            p.profile.name(),
            regions.len(),
            rollout.all_ready,
            d.total("sts") as f64 / m as f64,
            d.total("cloudformation") as f64 / m as f64
        ));

        let per_service = |service: &str| per_tenant(&of_service(&d.requests, service), m);
        let results = json!({
            "tenants": m,
            "baseline": {"name": baseline_name, "regions": regions, "template": fleet::BASELINE_TEMPLATE},
            "measured_from": "the controller process's start; the Baseline and all Tenants were applied before it started",
            "apply_seconds": apply_seconds,
            "time_to_all_ready_seconds": rollout.all_ready,
            "organizations_bound_seconds": bound,
            "requests_per_tenant_by_service": SERVICES.iter().map(|s| (s.to_string(), d.total(s) as f64 / m as f64)).collect::<BTreeMap<_, _>>(),
            "sts_requests_per_tenant_by_operation": per_service("sts"),
            "cloudformation_requests_per_tenant_by_operation": per_service("cloudformation"),
            "organizations_requests_per_tenant_by_operation": per_service("organizations"),
            "account_requests_per_tenant_by_operation": per_service("account"),
            "requests_per_tenant_by_operation": per_tenant(&d.requests, m),
            "requests_by_operation": d.requests,
            "throttled_by_operation": d.throttled,
            "accounts_created": d.accounts_created,
            "controller": usage_json(&usage, "sampled once a second until all Tenants were Ready"),
            "loadavg_start": loadavg_start,
            "simulator_config": sim_config,
            "ready_over_time": rollout.ready,
        });
        let plot_spec = json!({
            "title": format!("baseline: {m} {} Tenants, Baseline in {} region(s), all Ready in {:.0} s", p.profile.name(), regions.len(), rollout.all_ready),
            "xlabel": "seconds since the controller started",
            "ylabel": "Ready Tenants",
            "series": [
                series("Ready Tenants (silo run)", &rollout.ready, "step", "left"),
                series("Organizations bound (no Baseline)", &setup::ideal_curve(m, p.creation_slots, p.create_seconds, p.org_rps, c), "dashed", "left"),
            ],
            "vlines": [vline(bound, &format!("bound {bound:.0} s")), vline(rollout.all_ready, &format!("all Ready {:.0} s", rollout.all_ready))],
        });
        self.write(Scenario::Baseline, &args, results, plot_spec).await
    }

    // ---- unthrottled --------------------------------------------------------------------

    /// Quotas off: Silo's tenants per second against a direct client making the same
    /// Organizations requests with the same concurrency and no Kubernetes writes.
    pub async fn unthrottled(&mut self) -> Result<()> {
        let p = self.p.clone();
        let n = p.tenants;
        self.reset_world().await?;
        let sim_config = self.configure(setup::no_quotas(p.unthrottled_create_seconds)).await?;
        fleet::create_ou(&self.sim).await?;
        // Bare Tenants whatever the profile: the direct client makes only the Organizations
        // requests a bare tenant needs.
        let docs = fleet::names("bench", n).iter().map(|name| fleet::tenant(name, Profile::Bare, None)).collect();
        fleet::apply_all(&self.tenants(), docs, p.apply_concurrency).await?;
        let loadavg_start = setup::loadavg();
        let before = Counters::read(&self.sim).await?;
        let cpu_before = self.cpu(&[]);
        let mut controller = self.start_controller(&p.user_flags(), "unthrottled.silo.log").await?;
        let args = controller.args.clone();
        let rollout = self.wait_all_ready(&mut controller, n, "unthrottled").await?;
        let silo_cpu =
            self.cpu(&[(controller.pid(), "silo run"), (std::process::id(), "silo-bench")]).since(&cpu_before);
        let usage = controller.stop();
        require_samples(&usage)?;
        let silo_counters = Counters::read(&self.sim).await?.since(&before);
        let silo_rate = n as f64 / rollout.all_ready;

        let (concurrency, concurrency_source) = self.setting(&p.user_flags(), "--concurrency", 16)?;
        let concurrency = concurrency as usize;
        let (budget, _) = self.setting(&p.user_flags(), "--aws-requests-per-second", 8)?;
        let silo_answered =
            silo_counters.total("organizations").saturating_sub(sum_service(&silo_counters.throttled, "organizations"));
        let silo_budget_seconds = silo_answered as f64 / budget as f64;
        // The second half starts from nothing too: no Tenants, a fresh simulator.
        self.reset_world().await?;
        self.configure(setup::no_quotas(p.unthrottled_create_seconds)).await?;
        let org = fleet::create_ou(&self.sim).await?;
        let before = Counters::read(&self.sim).await?;
        eprintln!("silo-bench: unthrottled: the direct client onboards {n} fake tenants, {concurrency} at once");
        let bench = [(std::process::id(), "silo-bench")];
        let cpu_before = self.cpu(&bench);
        let completions = direct_client(&self.sim, &org, n, concurrency).await?;
        let direct_cpu = self.cpu(&bench).since(&cpu_before);
        let direct_seconds = completions.iter().copied().fold(0.0, f64::max);
        let direct_counters = Counters::read(&self.sim).await?.since(&before);
        let direct_rate = n as f64 / direct_seconds;
        let ratio = silo_rate / direct_rate;

        let mut summary =
            Table::new(format!("unthrottled: {n} tenants, simulator quotas off"), &["", "silo run", "direct client"]);
        summary
            .row(vec!["seconds to all done".into(), f(rollout.all_ready, 1), f(direct_seconds, 1)])
            .row(vec!["tenants per second".into(), f(silo_rate, 2), f(direct_rate, 2)])
            .row(vec![
                "Organizations requests per tenant".into(),
                f(silo_counters.total("organizations") as f64 / n as f64, 2),
                f(direct_counters.total("organizations") as f64 / n as f64, 2),
            ])
            .row(vec!["concurrency".into(), concurrency.to_string(), concurrency.to_string()])
            .row(vec!["ratio silo / direct".into(), f(ratio, 3), String::new()])
            .row(vec![
                format!("Silo's unthrottled requests / --aws-requests-per-second {budget} (s)"),
                f(silo_budget_seconds, 1),
                String::new(),
            ])
            .row(vec!["peak RSS of the controller (MiB)".into(), f(usage.peak_rss_mib(), 1), String::new()]);
        // The profile: where the CPU went in each half, per tenant.
        let components: std::collections::BTreeSet<&String> = silo_cpu.keys().chain(direct_cpu.keys()).collect();
        for component in components {
            let share = component.starts_with("machine busy");
            let cell = |cpu: &BTreeMap<String, f64>| match cpu.get(component) {
                Some(v) if share => f(*v, 2),
                Some(v) => format!("{} ms/tenant", f(v * 1000.0 / n as f64, 1)),
                None => String::new(),
            };
            let label = if share { component.clone() } else { format!("CPU: {component}") };
            summary.row(vec![label, cell(&silo_cpu), cell(&direct_cpu)]);
        }
        println!("{}", summary.render());
        self.summary.push(format!(
            "unthrottled: silo run {silo_rate:.2} tenants/s, direct client {direct_rate:.2} tenants/s, ratio {ratio:.3}"
        ));

        let mut sorted = completions.clone();
        sorted.sort_by(f64::total_cmp);
        let direct_curve: Vec<[f64; 2]> =
            std::iter::once([0.0, 0.0]).chain(sorted.iter().enumerate().map(|(i, t)| [*t, (i + 1) as f64])).collect();
        let results = json!({
            "tenants": n,
            "silo": {
                "seconds_to_all_ready": rollout.all_ready,
                "measured_from": "the controller process's start; all Tenants were applied before it started",
                "tenants_per_second": silo_rate,
                "aws_requests_per_second_flag": budget,
                "budget_seconds": silo_budget_seconds,
                "budget_note": "the Organizations requests Silo made (not throttled) divided by its own --aws-requests-per-second: the least time its budget allows for them (the direct client has no such budget)",
                "requests_by_operation": silo_counters.requests,
                "organizations_requests_per_tenant": silo_counters.total("organizations") as f64 / n as f64,
                "controller": usage_json(&usage, "sampled once a second until all Tenants were Ready"),
                "cpu_seconds_by_component": silo_cpu,
                "ready_over_time": rollout.ready,
            },
            "direct": {
                "what": "CreateAccount with the tags silo.dev/tenant and silo.dev/tenant-uid, DescribeCreateAccountStatus until it leaves IN_PROGRESS (at least once; every 1 s), MoveAccount root -> /Tenants; no TagResource, no Kubernetes writes",
                "concurrency": concurrency,
                "concurrency_source": concurrency_source,
                "seconds_to_all_done": direct_seconds,
                "tenants_per_second": direct_rate,
                "requests_by_operation": direct_counters.requests,
                "organizations_requests_per_tenant": direct_counters.total("organizations") as f64 / n as f64,
                "done_over_time": direct_curve,
                "cpu_seconds_by_component": direct_cpu,
            },
            "ratio_silo_over_direct": ratio,
            "reset_between_halves": true,
            "loadavg_start": loadavg_start,
            "simulator_config": sim_config,
        });
        let plot_spec = json!({
            "title": format!("unthrottled: {n} tenants; silo run {silo_rate:.1}/s, direct client {direct_rate:.1}/s (ratio {ratio:.2})"),
            "xlabel": "seconds since the start",
            "ylabel": "tenants done",
            "series": [
                series("silo run: Ready Tenants", &rollout.ready, "step", "left"),
                series(&format!("direct client ({concurrency} at once): tenants done"), &direct_curve, "step", "left"),
            ],
            "vlines": [],
        });
        self.fleet = None;
        self.write(Scenario::Unthrottled, &args, results, plot_spec).await
    }

    // ---- import -------------------------------------------------------------------------

    /// M accounts made directly in the simulator (quotas off while they are made), then under
    /// the AWS-like quotas: `silo import` to a directory, the manifests applied, `silo run`
    /// started; time to the manifests, and to all imported Tenants Ready.
    pub async fn import(&mut self) -> Result<()> {
        let p = self.p.clone();
        let n = p.import_accounts;
        self.reset_world().await?;
        self.configure(setup::no_quotas(0.0)).await?;
        let org = fleet::create_ou(&self.sim).await?;
        let made = Instant::now();
        let api = self.sim.organizations();
        futures::stream::iter(0..n)
            .map(|i| {
                let (api, org) = (api.clone(), &org);
                async move {
                    let created = api
                        .create_account()
                        .account_name(format!("Customer {i:05}"))
                        .email(format!("customer-{i}@example.com"))
                        .send()
                        .await
                        .context("CreateAccount")?;
                    let id = created.create_account_status().and_then(|s| s.account_id()).context("no id")?;
                    api.move_account()
                        .account_id(id)
                        .source_parent_id(&org.root_id)
                        .destination_parent_id(&org.ou_id)
                        .send()
                        .await
                        .context("MoveAccount")?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(16)
            .try_collect::<()>()
            .await?;
        eprintln!("silo-bench: import: {n} accounts made in /Tenants in {:.1} s", made.elapsed().as_secs_f64());
        let sim_config = self.configure(p.quotas()).await?;

        // silo import, with its own budget at the controller's defaults.
        let dir = self.out.join("import-manifests");
        let _ = std::fs::remove_dir_all(&dir);
        let before_import = Counters::read(&self.sim).await?;
        let started = Instant::now();
        let mut command = std::process::Command::new(&p.silo);
        command.args(["import", "--ou", fleet::OU_PATH, "--output-dir"]).arg(&dir);
        setup::scrub_env(&mut command);
        command.env("KUBECONFIG", &self.env.kube.kubeconfig).envs(self.sim.env());
        let out = tokio::task::spawn_blocking(move || command.output()).await??;
        let import_seconds = started.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("silo import failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        let d_import = Counters::read(&self.sim).await?.since(&before_import);
        let mut docs = vec![];
        for entry in std::fs::read_dir(&dir)? {
            let text = std::fs::read_to_string(entry?.path())?;
            docs.push(serde_yaml::from_str::<Value>(&text)?);
        }
        if docs.len() != n {
            bail!(
                "silo import wrote {} Tenants for {n} accounts: {}",
                docs.len(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        eprintln!("silo-bench: import: silo import wrote {n} manifests in {import_seconds:.1} s");
        let apply_seconds = fleet::apply_all(&self.tenants(), docs, p.apply_concurrency).await?;

        let before_run = Counters::read(&self.sim).await?;
        let mut controller = self.start_controller(&p.user_flags(), "import.silo.log").await?;
        let args = controller.args.clone();
        let rollout = self.wait_all_ready(&mut controller, n, "import").await?;
        let usage = controller.stop();
        require_samples(&usage)?;
        let d_run = Counters::read(&self.sim).await?.since(&before_run);
        // Imported Tenants are not the bench Tenants the other scenarios reuse.
        self.fleet = None;

        let import_org = of_service(&d_import.requests, "organizations");
        let run_org = of_service(&d_run.requests, "organizations");
        let (import_total, run_total) = (d_import.total("organizations"), d_run.total("organizations"));
        let total_minutes = (import_seconds + apply_seconds + rollout.all_ready) / 60.0;
        let mut summary =
            Table::new(format!("import: {n} accounts made outside Silo, R = {} rps", p.org_rps), &["", "value"]);
        summary
            .row(vec!["silo import (min)".into(), f(import_seconds / 60.0, 2)])
            .row(vec!["applying the manifests (min)".into(), f(apply_seconds / 60.0, 2)])
            .row(vec![
                "silo run: all imported Tenants Ready (min, from its start)".into(),
                f(rollout.all_ready / 60.0, 2),
            ])
            .row(vec!["total, import to all Ready (min)".into(), f(total_minutes, 2)])
            .row(vec!["Organizations requests per tenant, silo import".into(), f(import_total as f64 / n as f64, 2)])
            .row(vec!["Organizations requests per tenant, silo run".into(), f(run_total as f64 / n as f64, 2)])
            .row(vec![
                "CreateAccount requests".into(),
                (import_org.get("CreateAccount").copied().unwrap_or(0)
                    + run_org.get("CreateAccount").copied().unwrap_or(0))
                .to_string(),
            ])
            .row(vec![
                "throttled Organizations requests (import, run)".into(),
                format!(
                    "{}, {}",
                    sum_service(&d_import.throttled, "organizations"),
                    sum_service(&d_run.throttled, "organizations")
                ),
            ])
            .row(vec!["peak RSS of the controller (MiB)".into(), f(usage.peak_rss_mib(), 1)]);
        println!("{}", summary.render());
        let import_throttled = of_service(&d_import.throttled, "organizations");
        println!(
            "{}",
            op_table("silo import: Organizations requests by operation", &import_org, &import_throttled, n).render()
        );
        let run_throttled = of_service(&d_run.throttled, "organizations");
        println!("{}", op_table("silo run: Organizations requests by operation", &run_org, &run_throttled, n).render());
        self.summary.push(format!(
            "import: {n} accounts: silo import {:.2} min ({:.2} Organizations requests per tenant), all Ready {:.2} min after silo run started ({:.2} per tenant)",
            import_seconds / 60.0,
            import_total as f64 / n as f64,
            rollout.all_ready / 60.0,
            run_total as f64 / n as f64
        ));
        let results = json!({
            "accounts": n,
            "import_seconds": import_seconds,
            "apply_seconds": apply_seconds,
            "time_to_all_ready_seconds": rollout.all_ready,
            "time_to_all_ready_measured_from": "the controller process's start, after the manifests were applied",
            "total_minutes": total_minutes,
            "import_organizations_requests_by_operation": import_org,
            "import_organizations_requests_per_tenant": import_total as f64 / n as f64,
            "run_organizations_requests_by_operation": run_org,
            "run_organizations_requests_per_tenant": run_total as f64 / n as f64,
            "import_throttled_by_operation": d_import.throttled,
            "run_throttled_by_operation": d_run.throttled,
            "run_requests_by_operation": d_run.requests,
            "accounts_created_during_import_and_run": d_import.accounts_created + d_run.accounts_created,
            "controller": usage_json(&usage, "sampled once a second until all Tenants were Ready"),
            "simulator_config": sim_config,
            "ready_over_time": rollout.ready,
            "organizations_requests_over_time": rollout.org_requests,
        });
        let plot_spec = json!({
            "title": format!("import: {n} accounts; silo import {:.1} min, all Ready {:.1} min later", import_seconds / 60.0, rollout.all_ready / 60.0),
            "xlabel": "seconds since the controller started",
            "ylabel": "Ready Tenants",
            "series": [series("Ready Tenants (silo run)", &rollout.ready, "step", "left")],
            "vlines": [vline(rollout.all_ready, &format!("all Ready {:.0} s", rollout.all_ready))],
        });
        self.write(Scenario::Import, &args, results, plot_spec).await
    }
}

/// The direct client: for each of `n` fake tenants, the Organizations requests Silo needs at
/// the least, `concurrency` tenants at once. Returns each tenant's completion time (seconds
/// since the first request).
async fn direct_client(sim: &SimClient, org: &Org, n: usize, concurrency: usize) -> Result<Vec<f64>> {
    use aws_sdk_organizations::types::{CreateAccountState, Tag};
    let client = sim.organizations();
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            async move {
                let name = format!("direct-{:05}", i + 1);
                let uid = format!("{:032x}", rand::rng().random::<u128>());
                let created = client
                    .create_account()
                    .account_name(&name)
                    .email(format!("aws+{name}@example.com"))
                    .tags(Tag::builder().key("silo.dev/tenant").value(&name).build()?)
                    .tags(Tag::builder().key("silo.dev/tenant-uid").value(uid).build()?)
                    .send()
                    .await
                    .with_context(|| format!("CreateAccount {name}"))?;
                let request =
                    created.create_account_status().and_then(|s| s.id()).context("CreateAccount gave no id")?;
                let status = loop {
                    let out = client
                        .describe_create_account_status()
                        .create_account_request_id(request)
                        .send()
                        .await
                        .with_context(|| format!("DescribeCreateAccountStatus {name}"))?;
                    let status = out.create_account_status().cloned().context("no CreateAccountStatus")?;
                    if status.state() != Some(&CreateAccountState::InProgress) {
                        break status;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                };
                if status.state() != Some(&CreateAccountState::Succeeded) {
                    bail!("the creation of {name} ended {:?}: {:?}", status.state(), status.failure_reason());
                }
                let account = status.account_id().context("SUCCEEDED without an AccountId")?;
                client
                    .move_account()
                    .account_id(account)
                    .source_parent_id(&org.root_id)
                    .destination_parent_id(&org.ou_id)
                    .send()
                    .await
                    .with_context(|| format!("MoveAccount {name}"))?;
                anyhow::Ok(started.elapsed().as_secs_f64())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

/// Requests, requests per tenant and throttled answers, per operation.
fn op_table(title: &str, requests: &BTreeMap<String, u64>, throttled: &BTreeMap<String, u64>, n: usize) -> Table {
    let mut table = Table::new(title, &["operation", "requests", "per tenant", "throttled"]);
    for (op, count) in requests {
        table.row(vec![
            op.clone(),
            count.to_string(),
            f(*count as f64 / n as f64, 2),
            throttled.get(op).copied().unwrap_or(0).to_string(),
        ]);
    }
    let total: u64 = requests.values().sum();
    table.row(vec![
        "total".into(),
        total.to_string(),
        f(total as f64 / n as f64, 2),
        throttled.values().sum::<u64>().to_string(),
    ]);
    table
}

fn per_tenant(table: &BTreeMap<String, u64>, n: usize) -> BTreeMap<String, f64> {
    table.iter().map(|(k, v)| (k.clone(), *v as f64 / n as f64)).collect()
}

fn usage_json(usage: &Usage, how: &str) -> Value {
    json!({
        "peak_rss_bytes": usage.peak_rss_bytes,
        "peak_rss_mib": usage.peak_rss_mib(),
        "cpu_seconds": usage.cpu_seconds,
        "samples": usage.samples,
        "how": format!("VmHWM of /proc/<pid>/status and utime+stime of /proc/<pid>/stat, {how}"),
    })
}

/// Counts verifications: changes of a Tenant's `status.lastVerifiedTime` from one value to
/// another (a new Tenant's first one is not a verification), seen through a watch, from
/// [`Verifications::start_counting`] to [`Verifications::stop`].
struct Verifications {
    counting: std::sync::Arc<std::sync::atomic::AtomicBool>,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Verifications {
    /// Starts the watch and waits until it holds every Tenant as it is now, so that a
    /// verification right after a controller's start is not missed.
    async fn watch(client: Client) -> Result<Self> {
        use std::sync::atomic::Ordering;

        use kube::runtime::watcher::Event;
        let counting = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (synced_tx, mut synced) = tokio::sync::watch::channel(false);
        let (c, n) = (counting.clone(), count.clone());
        let task = tokio::spawn(async move {
            let mut last: std::collections::HashMap<String, Option<String>> = Default::default();
            let stream = kube::runtime::watcher(Api::<silo::Tenant>::all(client), Default::default());
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let tenant = match event {
                    Ok(Event::Apply(tenant) | Event::InitApply(tenant)) => tenant,
                    Ok(Event::InitDone) => {
                        let _ = synced_tx.send(true);
                        continue;
                    }
                    _ => continue,
                };
                let name = kube::ResourceExt::name_any(&tenant);
                let verified = tenant.status.and_then(|s| s.last_verified_time);
                let previous = last.insert(name, verified.clone());
                let changed = matches!((&previous, &verified), (Some(Some(p)), Some(v)) if p != v);
                if c.load(Ordering::Acquire) && changed {
                    n.fetch_add(1, Ordering::AcqRel);
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(120), synced.wait_for(|s| *s))
            .await
            .context("the Tenant watch did not list the Tenants within 120 s")?
            .context("the Tenant watch ended")?;
        Ok(Self { counting, count, task })
    }

    fn start_counting(&self) {
        self.counting.store(true, std::sync::atomic::Ordering::Release);
    }

    fn count(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::Acquire)
    }

    fn stop(self) -> u64 {
        self.task.abort();
        self.count()
    }
}

/// Whether `key` (`service:Operation`) is one of the organization's listings ([`LIST_OPERATIONS`]).
fn is_list_key(key: &str) -> bool {
    key.split_once(':').is_some_and(|(s, op)| s == "organizations" && LIST_OPERATIONS.contains(&op))
}

/// The index sweeps in a stretch of the simulator's request log. A sweep
/// (`Organization::sweep`) sends DescribeOrganization first and ListCreateAccountStatus last,
/// the listings of the organization between them, one after the other.
#[derive(Default, Debug)]
struct Sweeps {
    /// Sweeps that started and ended in the stretch.
    complete: u64,
    /// Their requests, in all and by operation.
    requests: u64,
    by_operation: BTreeMap<String, u64>,
    /// Their durations (first request's arrival to the last one's answer) and start times.
    seconds: Vec<f64>,
    starts: Vec<f64>,
}

impl Sweeps {
    fn of(log: &[silo_testenv::awssim::LogEntry]) -> Self {
        let mut sweeps = Sweeps::default();
        let mut open: Option<(f64, BTreeMap<String, u64>)> = None;
        for entry in log.iter().filter(|e| is_list_key(&e.key)) {
            if entry.key == "organizations:DescribeOrganization" {
                open = Some((entry.time, BTreeMap::new()));
            }
            let Some((started, ops)) = open.as_mut() else { continue };
            *ops.entry(entry.key.clone()).or_default() += 1;
            if entry.key == "organizations:ListCreateAccountStatus" {
                let started = *started;
                let (_, ops) = open.take().expect("a sweep is open");
                sweeps.complete += 1;
                sweeps.requests += ops.values().sum::<u64>();
                for (op, count) in ops {
                    *sweeps.by_operation.entry(op).or_default() += count;
                }
                sweeps.seconds.push(entry.time + entry.duration - started);
                sweeps.starts.push(started);
            }
        }
        sweeps
    }

    fn mean_seconds(&self) -> f64 {
        if self.seconds.is_empty() { 0.0 } else { self.seconds.iter().sum::<f64>() / self.seconds.len() as f64 }
    }

    fn mean_requests(&self) -> f64 {
        if self.complete == 0 { 0.0 } else { self.requests as f64 / self.complete as f64 }
    }

    /// The mean time between the starts of consecutive sweeps (0 with fewer than two).
    fn mean_start_interval(&self) -> f64 {
        match (self.starts.first(), self.starts.last()) {
            (Some(first), Some(last)) if self.starts.len() > 1 => (last - first) / (self.starts.len() - 1) as f64,
            _ => 0.0,
        }
    }

    fn json(&self) -> Value {
        json!({
            "complete_in_window": self.complete,
            "requests": self.requests,
            "requests_per_sweep": self.mean_requests(),
            "requests_by_operation": self.by_operation,
            "sweep_seconds_mean": self.mean_seconds(),
            "sweep_seconds": self.seconds,
            "start_interval_seconds_mean": self.mean_start_interval(),
            "how": "from the simulator's request log (GET /_silo/log): a sweep is the listings from a DescribeOrganization to the next ListCreateAccountStatus; its time runs from the first request's arrival to the last one's answer",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(time: f64, op: &str) -> silo_testenv::awssim::LogEntry {
        silo_testenv::awssim::LogEntry {
            time,
            duration: 0.01,
            key: format!("organizations:{op}"),
            access_key: None,
            caller_account: None,
        }
    }

    #[test]
    fn sweeps_are_found_in_the_log() {
        let log = vec![
            entry(0.0, "ListAccountsForParent"), // the end of a sweep that started before
            entry(0.1, "ListCreateAccountStatus"),
            entry(30.0, "DescribeOrganization"),
            entry(30.1, "ListRoots"),
            silo_testenv::awssim::LogEntry {
                time: 30.2,
                duration: 0.01,
                key: "organizations:ListTagsForResource".into(),
                access_key: None,
                caller_account: None,
            },
            entry(30.3, "ListAccountsForParent"),
            entry(30.5, "ListCreateAccountStatus"),
            entry(61.0, "DescribeOrganization"),
            entry(61.5, "ListCreateAccountStatus"),
            entry(92.0, "DescribeOrganization"), // still going when the window ended
        ];
        let sweeps = Sweeps::of(&log);
        assert_eq!(sweeps.complete, 2);
        assert_eq!(sweeps.requests, 6);
        assert_eq!(sweeps.by_operation["organizations:DescribeOrganization"], 2);
        assert!((sweeps.mean_seconds() - 0.51).abs() < 1e-9, "{}", sweeps.mean_seconds());
        assert!((sweeps.mean_start_interval() - 31.0).abs() < 1e-9);
    }
}
