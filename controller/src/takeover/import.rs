//! `silo import`: Tenant manifests that adopt the accounts an organization already has.
//!
//! For each account that passes the filters (`--ou`, `--tag`, `--name-pattern`), and is not
//! skipped ([`judge`]), import writes a Tenant with `spec.accountId`, `spec.email`,
//! `spec.accountName`, `spec.organizationalUnit` (where the account is now, so nothing
//! moves), `spec.deletionPolicy: Retain` and the consent `silo.dev/adopt-account`. Tags on
//! the account stay on the account and out of `spec.tags`: Silo removes only tags it applied,
//! so foreign tags are never Silo's to change. An account tagged with the UID of a Tenant
//! that no longer exists gets `silo.dev/previous-uid` with that UID, which lets the new Tenant
//! take the tag over (see [`crate::tenant::account::judge_account`]).
//!
//! ## Names
//! The account name made DNS-1123-safe ([`base_name`]); when two accounts (or an account and
//! an existing Tenant) would share a name, each of them gets `-` and the last 4 digits of its
//! account id, then 6, 8 or all 12 when that is still taken ([`assign_names`]). The names
//! depend only on the accounts and the existing Tenants, never on listing order.
//!
//! ## Cost
//! One walk of the organization (a few requests per OU), then ListTagsForResource once per
//! account that passes the OU and name filters and is active: about one request per account,
//! paced by `--aws-requests-per-second`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use kube::{Api, ResourceExt};

use super::{OrgTree, Pacing};
use crate::{
    Tenant, TenantSpec,
    api::DeletionPolicy,
    aws::{Priority, organizations::Account},
    contract::{
        annotations::{ADOPT_ACCOUNT, PREVIOUS_UID},
        ownership::{Holder, TenantClaims, tagged_uid},
    },
};

/// `silo import`.
#[derive(clap::Args, Clone, Debug)]
pub struct ImportArgs {
    /// Only accounts in this OU or below it: a path from the root like /Tenants, or an OU id.
    /// Repeat for several.
    #[arg(long = "ou")]
    pub ous: Vec<String>,

    /// Only accounts carrying this tag (KEY=VALUE). Repeat: an account must carry all of them.
    #[arg(long = "tag", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,

    /// Only accounts whose name matches: a glob (`acme-*`, `*prod*`), or a regular
    /// expression after `regex:` (`regex:^tenant-[0-9]+$`). Case-sensitive.
    #[arg(long)]
    pub name_pattern: Option<String>,

    /// Write one file per Tenant (`<name>.yaml`) here instead of one stream to stdout.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,

    /// Print what would be written, and why each skipped account is skipped; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Do not read the cluster's Tenants. Accounts tagged by Silo are then skipped, since
    /// nothing tells whether their Tenant exists, and names may collide with existing Tenants.
    #[arg(long)]
    pub no_cluster: bool,

    #[command(flatten)]
    pub pacing: Pacing,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// `--name-pattern`: a glob, or a regular expression after `regex:`.
#[derive(Clone, Debug)]
pub enum NamePattern {
    Glob(globset::GlobMatcher),
    Regex(regex::Regex),
}

impl NamePattern {
    pub fn parse(pattern: &str) -> anyhow::Result<Self> {
        match pattern.strip_prefix("regex:") {
            Some(re) => Ok(Self::Regex(regex::Regex::new(re).with_context(|| format!("--name-pattern {pattern}"))?)),
            None => Ok(Self::Glob(
                globset::Glob::new(pattern).with_context(|| format!("--name-pattern {pattern}"))?.compile_matcher(),
            )),
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Glob(glob) => glob.is_match(name),
            Self::Regex(re) => re.is_match(name),
        }
    }
}

/// Which accounts to import; an empty filter takes every account.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// OU ids (or the root id): the account must be at or below one of them.
    pub ous: Vec<String>,
    pub tags: Vec<(String, String)>,
    pub name: Option<NamePattern>,
}

impl Filter {
    /// The filters that need no tags: OU and name. Pure.
    pub fn takes_place(&self, account: &Account, ancestors: &[String]) -> bool {
        let in_ou = self.ous.is_empty() || self.ous.iter().any(|ou| ancestors.contains(ou));
        in_ou && self.name.as_ref().is_none_or(|p| p.matches(&account.name))
    }

    /// The tag filter. Pure.
    pub fn takes_tags(&self, tags: &BTreeMap<String, String>) -> bool {
        self.tags.iter().all(|(k, v)| tags.get(k) == Some(v))
    }
}

/// Why an account that passed the filters is not imported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The organization's management account is never a tenant's.
    ManagementAccount,
    /// Suspended, pending closure, closed: nothing to adopt.
    NotActive { state: String },
    /// A Tenant in the cluster has it already.
    ClaimedBy { tenant: String },
    /// `--no-cluster`: it carries Silo's UID tag, and without the cluster nothing tells
    /// whether that Tenant still exists.
    TaggedByUnknownTenant { uid: String },
    /// Every name it could get is taken (by existing Tenants).
    NoFreeName,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::ManagementAccount => write!(f, "the organization's management account is never a tenant's"),
            Skip::NotActive { state } => write!(f, "the account is {state}, not ACTIVE"),
            Skip::ClaimedBy { tenant } => write!(f, "Tenant {tenant} already has it"),
            Skip::TaggedByUnknownTenant { uid } => write!(
                f,
                "it carries silo.dev/tenant-uid {uid}, and with --no-cluster nothing tells whether that Tenant exists"
            ),
            Skip::NoFreeName => write!(f, "every name it could get is taken by an existing Tenant"),
        }
    }
}

/// What to do with an account that passed the filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write a Tenant; with `previous_uid` when it carries the tag of a Tenant that is gone.
    Import {
        previous_uid: Option<String>,
    },
    Skip(Skip),
}

/// Whether an account needs its tags read before [`judge`] can decide: the management account
/// and inactive accounts are skipped without them. Pure.
pub fn skip_untagged(account: &Account, management_account: &str) -> Option<Skip> {
    if account.id == management_account {
        return Some(Skip::ManagementAccount);
    }
    if !account.is_active() {
        return Some(Skip::NotActive { state: account.state.clone() });
    }
    None
}

/// Decides about one account and its tags. `claims` is `None` under `--no-cluster`. Pure.
pub fn judge(
    account: &Account,
    tags: &BTreeMap<String, String>,
    management_account: &str,
    claims: Option<&TenantClaims>,
) -> Verdict {
    if let Some(skip) = skip_untagged(account, management_account) {
        return Verdict::Skip(skip);
    }
    let Some(claims) = claims else {
        return match tagged_uid(tags) {
            Some(uid) => Verdict::Skip(Skip::TaggedByUnknownTenant { uid: uid.to_string() }),
            None => Verdict::Import { previous_uid: None },
        };
    };
    match claims.holder(&account.id, tags) {
        Holder::Tenant(tenant) => Verdict::Skip(Skip::ClaimedBy { tenant }),
        Holder::Gone { uid, .. } => Verdict::Import { previous_uid: Some(uid) },
        Holder::Nobody => Verdict::Import { previous_uid: None },
    }
}

/// Longest Kubernetes name import writes (a DNS-1123 label).
const MAX_NAME: usize = 63;

/// The account name as a DNS-1123 label: lowercase ASCII letters and digits, every run of
/// other characters one '-', no '-' at either end, at most 63 characters. An account name
/// with no letter or digit becomes `account-<id>`. Pure.
pub fn base_name(account_name: &str, account_id: &str) -> String {
    let mut out = String::with_capacity(account_name.len());
    for c in account_name.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let name = trim_to(out.trim_matches('-'), MAX_NAME);
    if name.is_empty() { format!("account-{account_id}") } else { name }
}

fn trim_to(name: &str, max: usize) -> String {
    name[..name.len().min(max)].trim_end_matches('-').to_string()
}

/// `base` with `-` and the last `digits` digits of the account id, within 63 characters.
fn suffixed(base: &str, account_id: &str, digits: usize) -> String {
    let tail = &account_id[account_id.len().saturating_sub(digits)..];
    format!("{}-{tail}", trim_to(base, MAX_NAME - 1 - tail.len()))
}

/// Gives each account (id, base name) a Tenant name no other account and no `taken` name
/// has. A base name shared by several accounts, or already a Tenant's, is suffixed for every
/// account that has it with `-` and the last 4 digits of the account id, else 6, 8 or 12.
/// Accounts whose every candidate is taken get no name. Deterministic. Pure.
pub fn assign_names(accounts: &[(String, String)], taken: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut sharing: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, base) in accounts {
        *sharing.entry(base.as_str()).or_default() += 1;
    }
    let mut used: BTreeSet<String> = taken.clone();
    let mut names = BTreeMap::new();
    // First every base name only one account wants, so no suffixed name can take it.
    let mut contested = vec![];
    for (id, base) in accounts {
        if sharing[base.as_str()] == 1 && !taken.contains(base) {
            used.insert(base.clone());
            names.insert(id.clone(), base.clone());
        } else {
            contested.push((id, base));
        }
    }
    contested.sort();
    for (id, base) in contested {
        let free = [4, 6, 8, 12].into_iter().map(|digits| suffixed(base, id, digits)).find(|n| !used.contains(n));
        if let Some(name) = free {
            used.insert(name.clone());
            names.insert(id.clone(), name);
        }
    }
    names
}

/// The Tenant that adopts an account where it is. Pure.
pub fn manifest(account: &Account, name: &str, ou_path: Option<String>, previous_uid: Option<String>) -> Tenant {
    let spec = TenantSpec {
        account_id: Some(account.id.clone()),
        email: Some(account.email.clone()),
        account_name: Some(account.name.clone()),
        organizational_unit: ou_path,
        deletion_policy: DeletionPolicy::Retain,
        ..TenantSpec::default()
    };
    let mut tenant = Tenant::new(name, spec);
    let annotations = tenant.annotations_mut();
    annotations.insert(ADOPT_ACCOUNT.into(), account.id.clone());
    if let Some(uid) = previous_uid {
        annotations.insert(PREVIOUS_UID.into(), uid);
    }
    tenant
}

/// One account's outcome, for the report.
#[derive(Clone, Debug)]
pub enum Outcome {
    Import { account: Account, tenant: Box<Tenant> },
    Skip { account: Account, skip: Skip },
}

/// Decides every account of the tree: filters, reads the tags of those that need them (one
/// ListTagsForResource each, paced by the budget), judges and names them.
pub async fn plan(
    api: &crate::aws::Organizations,
    tree: &OrgTree,
    filter: &Filter,
    claims: Option<&TenantClaims>,
    in_flight: usize,
) -> anyhow::Result<Vec<Outcome>> {
    let management = tree.management_account.as_str();
    let mut outcomes = vec![];
    let mut to_read = vec![];
    for (account, parent) in &tree.accounts {
        if !filter.takes_place(account, &tree.ancestors(parent)) {
            continue;
        }
        match skip_untagged(account, management) {
            Some(skip) => outcomes.push(Outcome::Skip { account: account.clone(), skip }),
            None => to_read.push((account, parent)),
        }
    }
    let tagged: Vec<_> = futures::stream::iter(to_read)
        .map(|(account, parent)| async move {
            let tags = super::patiently(|| api.list_tags(&account.id, Priority::User)).await?;
            Ok::<_, crate::aws::AwsError>((account, parent, tags))
        })
        .buffered(in_flight.max(1))
        .try_collect()
        .await
        .context("list the accounts' tags")?;
    let mut chosen = vec![];
    for (account, parent, tags) in tagged {
        if !filter.takes_tags(&tags) {
            continue;
        }
        match judge(account, &tags, management, claims) {
            Verdict::Import { previous_uid } => chosen.push((account, parent, previous_uid)),
            Verdict::Skip(skip) => outcomes.push(Outcome::Skip { account: account.clone(), skip }),
        }
    }
    let bases: Vec<(String, String)> =
        chosen.iter().map(|(a, _, _)| (a.id.clone(), base_name(&a.name, &a.id))).collect();
    let names = assign_names(&bases, &claims.map(|c| c.names.clone()).unwrap_or_default());
    for (account, parent, previous_uid) in chosen {
        match names.get(&account.id) {
            Some(name) => {
                let tenant = Box::new(manifest(account, name, tree.path_of(parent), previous_uid));
                outcomes.push(Outcome::Import { account: account.clone(), tenant });
            }
            None => outcomes.push(Outcome::Skip { account: account.clone(), skip: Skip::NoFreeName }),
        }
    }
    outcomes.sort_by(|a, b| account_of(a).id.cmp(&account_of(b).id));
    Ok(outcomes)
}

fn account_of(outcome: &Outcome) -> &Account {
    match outcome {
        Outcome::Import { account, .. } | Outcome::Skip { account, .. } => account,
    }
}

/// Runs `silo import`.
pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let client = if args.no_cluster { None } else { Some(crate::preflight::kube_client().await?) };
    // Every Tenant's claims count, whatever its organization: an account some Tenant has is
    // never imported again.
    let claims = if let Some(client) = &client {
        let tenants = Api::<Tenant>::all(client.clone()).list(&Default::default()).await.map_err(|err| {
            anyhow::anyhow!(
                "cannot list the cluster's Tenants ({err}): import must know which accounts Tenants have. Check \
                 KUBECONFIG and that the CRDs are installed, or pass --no-cluster to import without looking"
            )
        })?;
        Some(TenantClaims::of(&tenants.items))
    } else {
        eprintln!("silo import: --no-cluster: existing Tenants are not looked at");
        None
    };
    let (api, scope) = args.pacing.organizations(client.as_ref()).await?;
    let tree = OrgTree::read(&api).await.context("read the organization")?;
    let mut filter = Filter { tags: args.tags.clone(), ..Filter::default() };
    for ou in &args.ous {
        let id = tree.resolve(ou).with_context(|| format!("--ou {ou}: the organization has no such OU"))?;
        filter.ous.push(id);
    }
    filter.name = args.name_pattern.as_deref().map(NamePattern::parse).transpose()?;
    let mut outcomes = plan(&api, &tree, &filter, claims.as_ref(), args.pacing.aws_max_in_flight).await?;
    // The Tenants belong to the organization read.
    for outcome in &mut outcomes {
        if let Outcome::Import { tenant, .. } = outcome {
            tenant.spec.organization = scope.organization.clone();
        }
    }
    let imported = outcomes.iter().filter(|o| matches!(o, Outcome::Import { .. })).count();
    let skipped = outcomes.len() - imported;
    for outcome in &outcomes {
        match outcome {
            Outcome::Skip { account, skip } => {
                let line = format!("skip {} {:?}: {skip}", account.id, account.name);
                if args.dry_run { println!("{line}") } else { eprintln!("{line}") }
            }
            Outcome::Import { account, tenant } if args.dry_run => {
                let ou = tenant.spec.organizational_unit.as_deref().unwrap_or("the root");
                let reclaim = match tenant.annotations().get(PREVIOUS_UID) {
                    Some(uid) => format!(", taking over the tag of the deleted Tenant with UID {uid}"),
                    None => String::new(),
                };
                println!("import {} {:?} as Tenant {} (in {ou}{reclaim})", account.id, account.name, tenant.name_any());
            }
            Outcome::Import { tenant, .. } => write_tenant(tenant, args.output_dir.as_deref())?,
        }
    }
    let verb = if args.dry_run { "would write" } else { "wrote" };
    eprintln!("silo import: {verb} {imported} Tenants; skipped {skipped} accounts");
    Ok(())
}

fn write_tenant(tenant: &Tenant, dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    let yaml = serde_yaml::to_string(tenant)?;
    match dir {
        None => print!("---\n{yaml}"),
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            let path = dir.join(format!("{}.yaml", tenant.name_any()));
            std::fs::write(&path, yaml).with_context(|| format!("write {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{
        super::tests::{account, tags, tenant, tree},
        *,
    };
    use crate::{
        contract::{TENANT_TAG, TENANT_UID_TAG},
        tenant::account::{AccountVerdict, Ownership, Title, desired_tags, judge_account},
    };

    #[test]
    fn names_are_dns_labels() {
        let cases = [
            ("Acme Corp.", "acme-corp"),
            ("ACME_prod--eu", "acme-prod-eu"),
            ("  spaced  ", "spaced"),
            ("tenant-42", "tenant-42"),
            ("Zürich", "z-rich"),
            ("!!!", "account-000000001234"),
            (&"x".repeat(70), &"x".repeat(63)),
            (&format!("{}-tail", "y".repeat(62)), &"y".repeat(62)),
        ];
        for (name, want) in cases {
            assert_eq!(base_name(name, "000000001234"), want, "{name:?}");
        }
    }

    #[test]
    fn collisions_get_the_end_of_the_account_id() {
        let ids = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(i, b)| (i.to_string(), b.to_string())).collect()
        };
        let taken = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a [(&'a str, &'a str)]);
        let cases: [Case; 5] = [
            // Unique names stay as they are.
            (&[("111111111111", "a"), ("222222222222", "b")], &[], &[("111111111111", "a"), ("222222222222", "b")]),
            // Two accounts sharing a name: both get a suffix.
            (
                &[("111111111234", "a"), ("222222225678", "a")],
                &[],
                &[("111111111234", "a-1234"), ("222222225678", "a-5678")],
            ),
            // A name an existing Tenant has.
            (&[("111111111234", "a")], &["a"], &[("111111111234", "a-1234")]),
            // Same last four digits: more digits.
            (
                &[("111111001234", "a"), ("222222001234", "a")],
                &[],
                &[("111111001234", "a-1234"), ("222222001234", "a-001234")],
            ),
            // A suffixed name never takes the plain name another account has.
            (
                &[("111111111234", "a"), ("222222221234", "a-1234"), ("333333333333", "a")],
                &[],
                &[("111111111234", "a-111234"), ("222222221234", "a-1234"), ("333333333333", "a-3333")],
            ),
        ];
        for (accounts, existing, want) in cases {
            let want: BTreeMap<String, String> = want.iter().map(|(i, n)| (i.to_string(), n.to_string())).collect();
            assert_eq!(assign_names(&ids(accounts), &taken(existing)), want, "{accounts:?} with {existing:?}");
            // The listing order does not matter.
            let mut reversed = ids(accounts);
            reversed.reverse();
            assert_eq!(assign_names(&reversed, &taken(existing)), want, "reversed {accounts:?}");
        }
        let long = "z".repeat(63);
        let named = assign_names(&ids(&[("111111111234", &long), ("222222225678", &long)]), &taken(&[]));
        assert_eq!(named["111111111234"], format!("{}-1234", "z".repeat(58)));
        assert!(named.values().all(|n| n.len() <= 63));
    }

    #[test]
    fn filters() {
        let tree = tree();
        let acme = account("111111111111", "acme-prod", "ACTIVE");
        let glob = |p: &str| Some(NamePattern::parse(p).unwrap());
        let cases = [
            (Filter::default(), "ou-s", true),
            (Filter { ous: vec!["ou-t".into()], ..Filter::default() }, "ou-p", true),
            (Filter { ous: vec!["ou-t".into()], ..Filter::default() }, "ou-s", false),
            (Filter { ous: vec!["ou-p".into(), "ou-s".into()], ..Filter::default() }, "ou-s", true),
            (Filter { ous: vec!["r-1".into()], ..Filter::default() }, "r-1", true),
            (Filter { name: glob("acme-*"), ..Filter::default() }, "r-1", true),
            (Filter { name: glob("*-dev"), ..Filter::default() }, "r-1", false),
            (Filter { name: glob("regex:^acme-(prod|dev)$"), ..Filter::default() }, "r-1", true),
            (Filter { name: glob("regex:^prod"), ..Filter::default() }, "r-1", false),
        ];
        for (filter, parent, want) in cases {
            assert_eq!(filter.takes_place(&acme, &tree.ancestors(parent)), want, "{filter:?} in {parent}");
        }
        let filter =
            Filter { tags: vec![("team".into(), "a".into()), ("env".into(), "prod".into())], ..Filter::default() };
        assert!(filter.takes_tags(&tags(&[("team", "a"), ("env", "prod"), ("x", "y")])));
        assert!(!filter.takes_tags(&tags(&[("team", "a")])));
        assert!(!filter.takes_tags(&tags(&[("team", "b"), ("env", "prod")])));
        assert!(NamePattern::parse("regex:(").is_err(), "a bad regex is refused");
        assert_eq!(parse_tag("k=v=w"), Ok(("k".into(), "v=w".into())));
        assert!(parse_tag("novalue").is_err() && parse_tag("=v").is_err());
    }

    #[test]
    fn skip_reasons() {
        let tenants = [tenant("has-it", "uid-1", None, Some("222222222222")), tenant("tagged", "uid-2", None, None)];
        let claims = TenantClaims::of(&tenants);
        let active = |id: &str| account(id, "a", "ACTIVE");
        let uid = |u: &str| tags(&[(TENANT_UID_TAG, u), (TENANT_TAG, "old")]);
        let none = tags(&[("owner", "platform")]);
        let import = Verdict::Import { previous_uid: None };
        let cases = [
            (active("123456789012"), none.clone(), Some(&claims), Verdict::Skip(Skip::ManagementAccount)),
            (
                account("111111111111", "a", "SUSPENDED"),
                none.clone(),
                Some(&claims),
                Verdict::Skip(Skip::NotActive { state: "SUSPENDED".into() }),
            ),
            (
                account("111111111111", "a", "PENDING_CLOSURE"),
                none.clone(),
                Some(&claims),
                Verdict::Skip(Skip::NotActive { state: "PENDING_CLOSURE".into() }),
            ),
            (
                active("222222222222"),
                none.clone(),
                Some(&claims),
                Verdict::Skip(Skip::ClaimedBy { tenant: "has-it".into() }),
            ),
            (
                active("333333333333"),
                uid("uid-2"),
                Some(&claims),
                Verdict::Skip(Skip::ClaimedBy { tenant: "tagged".into() }),
            ),
            (
                active("444444444444"),
                uid("uid-gone"),
                Some(&claims),
                Verdict::Import { previous_uid: Some("uid-gone".into()) },
            ),
            (active("555555555555"), none.clone(), Some(&claims), import.clone()),
            (active("555555555555"), none.clone(), None, import.clone()),
            (
                active("444444444444"),
                uid("uid-gone"),
                None,
                Verdict::Skip(Skip::TaggedByUnknownTenant { uid: "uid-gone".into() }),
            ),
        ];
        for (account, tags, claims, want) in cases {
            assert_eq!(judge(&account, &tags, "123456789012", claims), want, "{} {tags:?}", account.id);
        }
    }

    /// What import writes is what the account step accepts: with the consent for an untagged
    /// account, with the previous UID for one a deleted Tenant left tagged; foreign tags stay.
    #[test]
    fn the_manifest_adopts_and_takes_back() {
        let account = account("444444444444", "Acme Corp", "ACTIVE");
        let cases = [
            (tags(&[("owner", "platform")]), None, Title::Consented),
            (
                tags(&[("owner", "platform"), (TENANT_UID_TAG, "uid-gone"), (TENANT_TAG, "old")]),
                Some("uid-gone"),
                Title::Reclaimed,
            ),
        ];
        for (tags, previous_uid, title) in cases {
            let mut tenant = manifest(&account, "acme-corp", Some("/Tenants".into()), previous_uid.map(Into::into));
            assert!(tenant.spec.tags.is_empty(), "foreign tags are not Silo's");
            assert_eq!(tenant.spec.account_name.as_deref(), Some("Acme Corp"));
            assert_eq!(tenant.spec.email.as_deref(), Some(account.email.as_str()));
            assert_eq!(tenant.spec.deletion_policy, DeletionPolicy::Retain);
            tenant.metadata.uid = Some("uid-new".into());
            let annotation = |key: &str| tenant.annotations().get(key).cloned();
            let ownership = Ownership {
                uid: "uid-new".into(),
                management_account: "123456789012".into(),
                consent: annotation(ADOPT_ACCOUNT),
                previous_uid: annotation(PREVIOUS_UID),
                claimed_by: None,
                from_pool: None,
            };
            let verdict = judge_account(Some(&account), &tags, &desired_tags(&tenant), &[], &ownership);
            let AccountVerdict::Fine { title: got, to_set, to_remove } = verdict else {
                panic!("{tags:?}: {verdict:?}")
            };
            assert_eq!(got, title);
            assert_eq!(to_set[TENANT_UID_TAG], "uid-new");
            assert!(!to_set.contains_key("owner") && to_remove.is_empty(), "foreign tags untouched");
        }
    }

    #[test]
    fn manifests_serialise_without_status() {
        let account = account("444444444444", "Acme", "ACTIVE");
        let yaml = serde_yaml::to_string(&manifest(&account, "acme", None, None)).unwrap();
        let want = "apiVersion: silo.dev/v1alpha1
kind: Tenant
metadata:
  annotations:
    silo.dev/adopt-account: '444444444444'
  name: acme
spec:
  accountName: Acme
  email: acme@example.com
  accountId: '444444444444'
  deletionPolicy: Retain
";
        assert_eq!(yaml, want);
    }
}
