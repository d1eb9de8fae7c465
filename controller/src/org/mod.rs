//! The one owner of the organization's AWS quotas: the Organizations request budget, the
//! creation slots ([`creations`]) and the organization index ([`index`]).
//!
//! Tenant steps never call AWS Organizations directly: they ask an [`Organization`], which
//! answers from the index when it can, reads through to AWS when it must, and keeps the
//! index and the slots in line with every request it sends. [`Organization::run`] (started
//! once the Lease is won) sweeps the organization, refreshes the index on a period, and
//! tracks the creations in flight.
//!
//! ## Guarantees
//! - Every Organizations request of the process goes through one budget (rate and in-flight
//!   limits, user work ahead of background work).
//! - No CreateAccount is sent without a slot ([`Organization::create_account`] takes the
//!   tenant's reservation), and a slot is freed by the request's state in AWS.
//! - The index is a cache: what would create or close an account is decided from the
//!   Tenant's recorded intent and from fresh reads ([`Organization::describe_account_fresh`]).

pub mod creations;
pub mod index;
pub mod neighbours;
pub mod policies;
pub mod units;

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use aws_sdk_organizations::types::CreateAccountState;
use tracing::{info, warn};

use crate::{
    aws::{
        AwsError, AwsErrorKind, Priority,
        organizations::{Account, CloseRefusal, CreateRequest, CreationState, OrganizationInfo, Organizations},
    },
    retry::Backoff,
};

/// The failure reason Silo gives a creation request AWS does not know.
pub const REQUEST_NOT_FOUND: &str = "REQUEST_NOT_FOUND";
pub use creations::{Applicant, Creations, NotYet};
pub use index::{IndexedAccount, OrgIndex};
pub use units::{PathLookup, Target};

/// How the organization is looked after; set from `silo run` flags.
#[derive(Clone, Debug)]
pub struct OrgConfig {
    /// How often the index is refreshed with a full sweep.
    pub refresh_period: Duration,
    /// CreateAccount requests AWS runs at once for the organization.
    pub creation_slots: usize,
    /// The organization, in metrics.
    pub label: crate::metrics::OrganizationLabels,
}

/// Where a placement target points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    Parent(String),
    NotFound,
}

/// What [`Organization::place`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placed {
    AlreadyThere,
    Moved { from: String },
}

/// The organization, as the fleet shares it.
pub struct Organization {
    api: Organizations,
    pub index: OrgIndex,
    pub creations: Creations,
    config: OrgConfig,
    /// When the requests in progress were last listed after AWS refused a CreateAccount.
    last_refusal_listing: Mutex<Option<Instant>>,
    /// Asks for a sweep before the period is over (a miss the index cannot answer).
    refresh_now: tokio::sync::Notify,
    /// The organization's service control policies, as last listed ([`policies`]).
    policies: policies::Kept<Vec<crate::aws::organizations::Policy>>,
    /// Whether AWS Account Management has trusted access, as last read ([`policies`]).
    account_trust: policies::Kept<bool>,
    /// Held while [`Organization::info`] reads the organization from AWS.
    info_read: tokio::sync::Mutex<()>,
}

/// How a failed sweep (or listing of the creations in flight) is retried.
const SWEEP_BACKOFF: Backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(600));
/// A sweep asked for by a miss comes at most this soon after the last one started.
const MISS_REFRESH_GAP: Duration = Duration::from_secs(30);
/// After AWS refused a CreateAccount, the requests in progress are listed at most this often
/// (someone else's creations may hold the slots).
const REFUSAL_LISTING_GAP: Duration = Duration::from_secs(10);

impl Organization {
    /// `wake` is called with a Tenant's name when it should be reconciled now (a creation
    /// ended, or a slot is its turn).
    pub fn new(api: Organizations, config: OrgConfig, wake: impl Fn(String) + Send + Sync + 'static) -> Self {
        Self {
            api,
            index: OrgIndex::labelled(config.label.clone()),
            creations: Creations::new(config.creation_slots, config.label.clone(), wake),
            config,
            last_refusal_listing: Mutex::default(),
            refresh_now: tokio::sync::Notify::new(),
            policies: Default::default(),
            account_trust: Default::default(),
            info_read: Default::default(),
        }
    }

    /// The organization, in metrics.
    pub fn label(&self) -> &crate::metrics::OrganizationLabels {
        &self.config.label
    }

    /// Asks for a sweep of the organization soon (at most one every 30 s): something the index
    /// should know is missing from it.
    pub fn request_refresh(&self) {
        self.refresh_now.notify_one();
    }

    /// Sweeps the organization, refreshes the index on its period, and tracks the creations
    /// in flight, until the future is dropped.
    pub async fn run(&self) {
        tokio::join!(self.keep_index(), self.track_creations());
    }

    /// First the requests in flight (so the slots in use are known before any is handed
    /// out), then the first sweep at user priority, then refreshes in the background.
    async fn keep_index(&self) {
        let mut failures = 0;
        loop {
            match self.api.create_requests(&[CreateAccountState::InProgress], Priority::User).await {
                Ok(requests) => {
                    self.creations.observe_in_progress(&requests);
                    self.creations.mark_ready();
                    info!(in_flight = requests.len(), "creation requests in flight are known");
                    break;
                }
                Err(err) => {
                    warn!(%err, "cannot list the creation requests in flight; retrying");
                    failures += 1;
                    tokio::time::sleep(SWEEP_BACKOFF.pause(failures)).await;
                }
            }
        }
        let mut priority = Priority::User;
        let mut failures = 0;
        loop {
            let started = Instant::now();
            match self.sweep(priority).await {
                Ok(()) => {
                    info!(
                        accounts = self.index.account_count(),
                        seconds = started.elapsed().as_secs_f64(),
                        ?priority,
                        "swept the organization"
                    );
                    crate::metrics::METRICS.index_sweeps.get_or_create(&self.config.label).inc();
                    priority = Priority::Background;
                    failures = 0;
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.refresh_period) => {}
                        _ = async {
                            self.refresh_now.notified().await;
                            tokio::time::sleep(MISS_REFRESH_GAP.saturating_sub(started.elapsed())).await;
                        } => {}
                    }
                }
                Err(err) => {
                    warn!(%err, "the organization sweep failed; retrying");
                    failures += 1;
                    tokio::time::sleep(SWEEP_BACKOFF.pause(failures)).await;
                }
            }
        }
    }

    /// One walk of the whole organization: the organization, its root, every OU and the
    /// accounts under each, then the creation requests in progress.
    async fn sweep(&self, priority: Priority) -> Result<(), AwsError> {
        let started = self.index.write_mark();
        self.index.apply_sweep(self.api.walk(priority).await?, started);
        let in_progress = self.api.create_requests(&[CreateAccountState::InProgress], priority).await?;
        self.creations.observe_in_progress(&in_progress);
        Ok(())
    }

    /// Asks AWS about each creation in flight when it should be done, and records what it
    /// says (which frees slots and wakes tenants).
    async fn track_creations(&self) {
        loop {
            let (due, next) = self.creations.due();
            if due.is_empty() {
                match next {
                    Some(at) => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(at.into()) => {}
                            _ = self.creations.changed.notified() => {}
                        }
                    }
                    None => self.creations.changed.notified().await,
                }
                continue;
            }
            futures::future::join_all(due.iter().map(|id| async move {
                match self.describe_request(id).await {
                    Ok(request) if request.state == CreationState::InProgress => {
                        self.creations.still_in_progress(id);
                    }
                    Ok(request) => self.creations.observe(&request),
                    Err(err) => {
                        warn!(request = %id, %err, "cannot read a creation request; looking again later");
                        self.creations.still_in_progress(id);
                    }
                }
            }))
            .await;
        }
    }

    /// The organization (its id and management account), from the index or AWS. Before the
    /// index has it, one reconcile asks AWS while the others wait for its answer.
    pub async fn info(&self) -> Result<OrganizationInfo, AwsError> {
        if let Some(info) = self.index.organization() {
            return Ok(info);
        }
        let _one_at_a_time = self.info_read.lock().await;
        if let Some(info) = self.index.organization() {
            return Ok(info);
        }
        let info = self.api.describe_organization(Priority::User).await?;
        let root = self.api.root_id(Priority::User).await?;
        self.index.record_organization(info.clone(), root);
        Ok(info)
    }

    /// An account as the index knows it; a miss reads through to AWS (DescribeAccount and
    /// ListParents). `None`: the account is not in the organization.
    pub async fn account(&self, id: &str, priority: Priority) -> Result<Option<IndexedAccount>, AwsError> {
        if let Some(known) = self.index.account(id) {
            return Ok(Some(known));
        }
        self.read_account(id, priority).await
    }

    /// An account read from AWS now (DescribeAccount and ListParents), recorded in the index.
    pub async fn read_account(&self, id: &str, priority: Priority) -> Result<Option<IndexedAccount>, AwsError> {
        let Some(account) = self.api.describe_account(id, priority).await? else {
            self.index.forget_account(id);
            return Ok(None);
        };
        let parent = self.api.parent_of(id, priority).await?;
        self.index.record_account(account, Some(parent), None);
        Ok(self.index.account(id))
    }

    /// The account as AWS describes it now (DescribeAccount only), for decisions that must
    /// not rest on a cache, like closing it.
    pub async fn describe_account_fresh(&self, id: &str) -> Result<Option<Account>, AwsError> {
        let account = self.api.describe_account(id, Priority::User).await?;
        match &account {
            Some(account) => self.index.record_account(account.clone(), None, None),
            None => self.index.forget_account(id),
        }
        Ok(account)
    }

    /// The account's tags, read from AWS (ListTagsForResource) and recorded in the index.
    pub async fn tags(&self, id: &str, priority: Priority) -> Result<BTreeMap<String, String>, AwsError> {
        let tags = self.api.list_tags(id, priority).await?;
        self.index.update_account(id, |a| a.tags = Some(tags.clone()));
        Ok(tags)
    }

    /// Sets and removes tags on an account (TagResource, UntagResource), and records them.
    pub async fn change_tags(
        &self,
        id: &str,
        to_set: &BTreeMap<String, String>,
        to_remove: &[String],
    ) -> Result<(), AwsError> {
        if !to_set.is_empty() {
            self.api.tag_account(id, to_set).await?;
        }
        if !to_remove.is_empty() {
            self.api.untag_account(id, to_remove).await?;
        }
        self.index.update_account(id, |a| {
            if let Some(tags) = &mut a.tags {
                tags.extend(to_set.iter().map(|(k, v)| (k.clone(), v.clone())));
                tags.retain(|k, _| !to_remove.contains(k));
            }
        });
        Ok(())
    }

    /// Resolves a placement target to a parent id: from the index, reading through to AWS
    /// (and creating OUs of a path when `create_missing`) for what it does not know.
    pub async fn resolve(&self, target: &Target, create_missing: bool) -> Result<Resolved, AwsError> {
        match target {
            Target::Id(id) => {
                if self.index.has_unit(id) {
                    return Ok(Resolved::Parent(id.clone()));
                }
                match self.api.describe_unit(id, Priority::User).await? {
                    Some(unit) => {
                        self.index.record_unit(unit, None);
                        Ok(Resolved::Parent(id.clone()))
                    }
                    None => Ok(Resolved::NotFound),
                }
            }
            Target::Path(names) => {
                // Each read-through teaches the index one more level; a path is at most five
                // levels deep, so this ends.
                let mut listed = std::collections::HashSet::new();
                loop {
                    match self.index.lookup_path(names) {
                        PathLookup::Found(id) => return Ok(Resolved::Parent(id)),
                        PathLookup::NoRoot => {
                            self.info().await?;
                        }
                        PathLookup::Missing { parent, depth } => {
                            if listed.insert(parent.clone()) {
                                let children = match self.api.child_units(&parent, Priority::User).await {
                                    Err(err) if err.has_code("ParentNotFoundException") => {
                                        // What the index knew is gone (even the root: another
                                        // organization?): sweep again, and try later.
                                        self.index.forget_unit(&parent);
                                        self.request_refresh();
                                        return Err(AwsError { kind: AwsErrorKind::Transient, ..err });
                                    }
                                    other => other?,
                                };
                                for unit in children {
                                    self.index.record_unit(unit, Some(parent.clone()));
                                }
                                continue;
                            }
                            if !create_missing {
                                return Ok(Resolved::NotFound);
                            }
                            let unit = self.api.create_unit(&parent, &names[depth]).await?;
                            info!(path = %format!("/{}", names[..=depth].join("/")), ou = %unit.id, "created organizational unit");
                            self.index.record_unit(unit, Some(parent));
                        }
                    }
                }
            }
        }
    }

    /// The path of OU names from the root to an OU (`None` when the OU does not exist), from
    /// the index, reading through to AWS for the parts it does not know.
    pub async fn path_of(&self, ou_id: &str) -> Result<Option<Vec<String>>, AwsError> {
        let root = match self.index.root() {
            Some(root) => root,
            None => {
                self.info().await?;
                self.index.root().unwrap_or_default()
            }
        };
        let mut names = vec![];
        let mut current = ou_id.to_string();
        // AWS nests OUs at most five deep.
        for _ in 0..6 {
            if current == root {
                names.reverse();
                return Ok(Some(names));
            }
            let (name, parent) = match self.index.unit(&current) {
                Some((name, Some(parent))) => (name, parent),
                _ => {
                    let Some(unit) = self.api.describe_unit(&current, Priority::User).await? else { return Ok(None) };
                    let Some(parent) = self.api.parent_of_unit(&current, Priority::User).await? else {
                        return Ok(None);
                    };
                    self.index.record_unit(unit.clone(), Some(parent.clone()));
                    (unit.name, parent)
                }
            };
            names.push(name);
            current = parent;
        }
        Err(AwsError::unexpected_answer("ListParents", format!("{ou_id} is deeper than AWS allows")))
    }

    /// Puts the account under `target`. The current parent comes from the index; when AWS
    /// says it moved since, it is read again once.
    pub async fn place(&self, id: &str, target: &str) -> Result<Placed, AwsError> {
        let mut current = match self.index.account(id).and_then(|a| a.parent) {
            Some(parent) => parent,
            None => self.api.parent_of(id, Priority::User).await?,
        };
        for attempt in 0..2 {
            if current == target {
                self.index.update_account(id, |a| a.parent = Some(target.to_string()));
                return Ok(Placed::AlreadyThere);
            }
            match self.api.move_account(id, &current, target).await {
                Ok(()) => {
                    self.index.update_account(id, |a| a.parent = Some(target.to_string()));
                    return Ok(Placed::Moved { from: current });
                }
                Err(err) if err.has_code("DuplicateAccountException") => {
                    self.index.update_account(id, |a| a.parent = Some(target.to_string()));
                    return Ok(Placed::AlreadyThere);
                }
                Err(err) if err.has_code("SourceParentNotFoundException") && attempt == 0 => {
                    current = self.api.parent_of(id, Priority::User).await?;
                }
                Err(err) if err.has_code("DestinationParentNotFoundException") => {
                    // The OU was deleted since the index learned it: forget it, and let the
                    // next reconcile resolve the target again.
                    self.index.forget_unit(target);
                    return Err(AwsError { kind: AwsErrorKind::Transient, ..err });
                }
                Err(err) if err.has_code("ConcurrentModificationException") => {
                    return Err(AwsError { kind: AwsErrorKind::Transient, ..err });
                }
                Err(err) => return Err(err),
            }
        }
        Err(AwsError::unexpected_answer("MoveAccount", format!("account {id} kept moving under Silo")))
    }

    /// Takes a creation slot for the tenant, or says why not yet.
    pub fn reserve(&self, applicant: &Applicant) -> Result<(), NotYet> {
        self.creations.reserve(applicant)
    }

    /// CreateAccount for a tenant holding a slot. The slot passes to the request (or is
    /// given back when AWS refused).
    pub async fn create_account(
        &self,
        applicant: &Applicant,
        name: &str,
        email: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<CreateRequest, AwsError> {
        match self.api.create_account(name, email, tags).await {
            Ok(request) => {
                self.creations.sent(&applicant.uid, &request);
                Ok(request)
            }
            Err(err) => {
                self.creations.release(&applicant.uid);
                if err.kind == AwsErrorKind::Throttled {
                    // Someone else's creations may hold AWS's slots: learn about them.
                    self.list_in_progress_after_refusal().await;
                }
                Err(err)
            }
        }
    }

    async fn list_in_progress_after_refusal(&self) {
        {
            let mut last = self.last_refusal_listing.lock().expect("listing lock");
            if last.is_some_and(|at| at.elapsed() < REFUSAL_LISTING_GAP) {
                return;
            }
            *last = Some(Instant::now());
        }
        match self.api.create_requests(&[CreateAccountState::InProgress], Priority::User).await {
            Ok(requests) => self.creations.observe_in_progress(&requests),
            Err(err) => warn!(%err, "cannot list the creation requests in flight"),
        }
    }

    /// The CreateAccount requests with this account name, for a tenant in the crash window
    /// (intent recorded, request id not): those this process tracks, and every IN_PROGRESS or
    /// SUCCEEDED request AWS lists (ListCreateAccountStatus, all pages). Account listings lag
    /// behind a creation, so the index can miss an account made just before a crash; the
    /// request that made it is listed at once. Only the crash window pays for this listing.
    pub async fn requests_named(&self, account_name: &str, priority: Priority) -> Result<Vec<CreateRequest>, AwsError> {
        let states = [CreateAccountState::InProgress, CreateAccountState::Succeeded];
        let listed = self.api.create_requests(&states, priority).await?;
        let mut requests = self.creations.named(account_name);
        for request in listed.into_iter().filter(|r| r.account_name == account_name) {
            if !requests.iter().any(|known| known.id == request.id) {
                self.creations.observe(&request);
                requests.push(request);
            }
        }
        Ok(requests)
    }

    /// Where a creation request stands: from the tracker when it knows, else from AWS
    /// (DescribeCreateAccountStatus), which the tracker then learns.
    pub async fn creation(&self, request_id: &str) -> Result<CreateRequest, AwsError> {
        if let Some(known) = self.creations.known(request_id) {
            return Ok(known);
        }
        let request = self.describe_request(request_id).await?;
        self.creations.observe(&request);
        Ok(request)
    }

    /// DescribeCreateAccountStatus; a request AWS does not know (another organization, after
    /// a reset) made no account: it is reported as failed with `REQUEST_NOT_FOUND`.
    async fn describe_request(&self, request_id: &str) -> Result<CreateRequest, AwsError> {
        match self.api.describe_create_request(request_id, Priority::User).await {
            Err(err) if err.has_code("CreateAccountStatusNotFoundException") => Ok(CreateRequest {
                id: request_id.to_string(),
                account_name: String::new(),
                state: CreationState::Failed { reason: REQUEST_NOT_FOUND.into(), failed_for: None },
                took: None,
            }),
            other => other,
        }
    }

    /// Records an account Silo just saw created with these tags; new accounts start in the root.
    pub async fn record_created(
        &self,
        account_id: &str,
        name: &str,
        email: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<Account, AwsError> {
        let info = self.info().await?;
        let account = Account {
            id: account_id.to_string(),
            arn: format!("arn:aws:organizations::{}:account/{}/{account_id}", info.management_account_id, info.id),
            name: name.to_string(),
            email: email.to_string(),
            state: "ACTIVE".into(),
        };
        let root = self.index.root();
        let parent = self.index.account(account_id).and_then(|a| a.parent).or(root);
        self.index.record_account(account.clone(), parent, Some(tags.clone()));
        Ok(account)
    }

    /// CloseAccount; the index records the account as closing.
    pub async fn close_account(&self, id: &str) -> Result<Result<(), CloseRefusal>, AwsError> {
        let result = self.api.close_account(id).await?;
        if result.is_ok() {
            self.index.update_account(id, |a| a.account.state = "PENDING_CLOSURE".into());
        }
        Ok(result)
    }
}
