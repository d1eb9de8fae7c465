//! Silo: a Kubernetes operator that gives every tenant its own AWS account.
//!
//! Where things live, from the top down (each module uses only those below it; the layers
//! are written down in `controller/layers.txt` and `make lint` checks them):
//! - [`run`]: the wiring of `silo run` (AWS clients and fence, leadership, the organization,
//!   the caches, both controllers, the gauges); [`config`]: its flags and what they become.
//! - [`takeover`]: `silo import`, `silo orphans` and the orphan gauge; [`preflight`]: the
//!   first-run checks.
//! - [`tenant`]: the Tenant controller, a pipeline of steps (identity -> account -> placement
//!   -> account settings -> baseline -> status); [`tenant::account`] is where an account is
//!   created or adopted, [`tenant::closure`] where one is closed.
//! - [`baseline`]: revisions, parameters, the stack state machine, rollouts, and the Baseline
//!   controller; [`pool`]: account pools (what a pool account is, and the pool controller
//!   that refills them).
//! - [`org`]: the one owner of the organization's quotas: the Organizations budget, the
//!   creation slots, the organization index, OU resolution and service control policies.
//! - [`leader`]: the Leases (the main one and each organization's), which open and close the
//!   AWS write fences, and how replicas share the organizations ([`leader::share`]).
//! - [`aws`]: the one client layer every AWS call goes through: budgets, the write fence, and
//!   the classification of AWS errors.
//! - The ground floor, usable from anywhere: [`contract`] (the names Silo shares with its users,
//!   and who owns an account), [`api`] (the CRDs), [`conditions`], [`metrics`], [`retry`],
//!   [`caches`], [`telemetry`].

pub mod api;
pub mod aws;
pub mod baseline;
pub mod caches;
pub mod conditions;
pub mod config;
pub mod contract;
pub mod leader;
pub mod metrics;
pub mod org;
pub mod pool;
pub mod preflight;
pub mod retry;
pub mod run;
pub mod takeover;
pub mod telemetry;
pub mod tenant;

pub use api::{Baseline, Tenant, TenantSpec, TenantStatus};
