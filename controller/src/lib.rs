//! Silo: a Kubernetes operator that gives every tenant its own AWS account.
//!
//! Where things live:
//! - [`api`]: the `Tenant` resource, its validation rules and the CRD generator.
//! - [`tenant`]: the Tenant controller, a pipeline of steps (account -> placement ->
//!   baseline -> status); [`tenant::account`] is where an account is created or adopted.
//! - [`aws`]: the one client layer every AWS call goes through, and the classification of
//!   AWS errors into throttled, transient and terminal.
//! - [`conditions`]: kstatus-style conditions that keep their transition times.

pub mod api;
pub mod aws;
pub mod conditions;
pub mod telemetry;
pub mod tenant;

pub use api::{Tenant, TenantSpec, TenantStatus};
