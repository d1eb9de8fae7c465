//! `docs/iam-policy.json` (and `docs/iam-policy-reclaim.json`, attached only while
//! restoring) against the calls Silo makes and the ones it must never be able to make. Each
//! scenario is a sentence; a failure prints the sentence with what IAM would answer.
//!
//! The fixture organization: management account 111111111111 (Silo's own credentials), a
//! tenant account carrying `silo.dev/tenant-uid`, an account carrying no UID (one Silo could
//! adopt with consent, or the log-archive account), and another Tenant's account.

use std::collections::BTreeSet;

use silo_iam_policy_tests::{
    Call,
    Decision::{self, Allowed, DeniedExplicitly, DeniedImplicitly},
    NAME_TAG, PolicyDocument, Resource, UID_TAG, decide, repo_root,
};

const POLICY: &str = "docs/iam-policy.json";
const RECLAIM: &str = "docs/iam-policy-reclaim.json";

const UID: &str = "9f6c1a52-0b1e-4c1d-9a57-5d2f0c0f1a01";
const PREVIOUS_UID: &str = "3b0e9d7c-7a55-4f0e-8c2b-6f1d2e3c4b02";
const OTHER_UID: &str = "c1d2e3f4-1111-4222-8333-944455556603";

/// An account of this Tenant: created by Silo, or adopted and tagged.
fn tenant_account() -> Resource {
    Resource::account("222222222222").tagged(NAME_TAG, "acme").tagged(UID_TAG, UID).tagged("team", "payments")
}

/// This Tenant's account as AWS Account Management names it.
fn tenant_account_api() -> Resource {
    Resource::account_api("222222222222").tagged(NAME_TAG, "acme").tagged(UID_TAG, UID)
}

/// An account carrying no `silo.dev/tenant-uid`, as AWS Account Management names it.
fn account_api_without_uid() -> Resource {
    Resource::account_api("333333333333").tagged("purpose", "log-archive")
}

/// An account carrying no `silo.dev/tenant-uid`.
fn account_without_uid() -> Resource {
    Resource::account("333333333333").tagged("purpose", "log-archive")
}

/// Another Tenant's account (or this Tenant's from before a restore).
fn account_of(uid: &str) -> Resource {
    Resource::account("444444444444").tagged(NAME_TAG, "acme").tagged(UID_TAG, uid)
}

fn tenants_ou() -> Resource {
    Resource::ou("ou-ex1a-tenants1")
}

fn other_ou() -> Resource {
    Resource::ou("ou-ex1a-sandbox1")
}

fn baseline_role(account: &str) -> Resource {
    Resource::role(account, "OrganizationAccountAccessRole")
}

struct Scenario {
    says: &'static str,
    call: Call,
    expected: Decision,
}

fn scenario(says: &'static str, call: Call, expected: Decision) -> Scenario {
    Scenario { says, call, expected }
}

/// Runs every scenario and fails once, listing each one IAM would answer differently.
fn run(policies: &[&PolicyDocument], scenarios: Vec<Scenario>) {
    let names: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
    let failures: Vec<String> = scenarios
        .iter()
        .filter_map(|s| {
            let got = decide(policies, &s.call);
            (got != s.expected).then(|| format!("{}: expected {:?}, got {got:?}", s.says, s.expected))
        })
        .collect();
    assert!(failures.is_empty(), "with {}:\n{}", names.join(" + "), failures.join("\n"));
}

fn policy() -> PolicyDocument {
    PolicyDocument::load(POLICY)
}

fn reclaim() -> PolicyDocument {
    PolicyDocument::load(RECLAIM)
}

fn none(action: &str) -> Call {
    Call::new(action, vec![Resource::none()])
}

fn on(action: &str, resources: Vec<Resource>) -> Call {
    Call::new(action, resources)
}

/// Every call Silo makes, shaped as Silo makes it.
fn silo_calls() -> Vec<Scenario> {
    vec![
        scenario("Silo may describe its organization", none("organizations:DescribeOrganization"), Allowed),
        scenario("Silo may list the roots", none("organizations:ListRoots"), Allowed),
        scenario("Silo may list creation requests", none("organizations:ListCreateAccountStatus"), Allowed),
        scenario("Silo may follow a creation request", none("organizations:DescribeCreateAccountStatus"), Allowed),
        scenario(
            "Silo may describe any account",
            on("organizations:DescribeAccount", vec![account_without_uid()]),
            Allowed,
        ),
        scenario(
            "Silo may describe the management account (reads are not writes)",
            on("organizations:DescribeAccount", vec![Resource::management_account()]),
            Allowed,
        ),
        scenario(
            "Silo may read any account's tags",
            on("organizations:ListTagsForResource", vec![account_without_uid()]),
            Allowed,
        ),
        scenario("Silo may list the service control policies", none("organizations:ListPolicies"), Allowed),
        scenario(
            "Silo may list the policies on a tenant account",
            on("organizations:ListPoliciesForTarget", vec![tenant_account()]),
            Allowed,
        ),
        scenario(
            "Silo may ask which services have trusted access",
            none("organizations:ListAWSServiceAccessForOrganization"),
            Allowed,
        ),
        scenario(
            "Silo may attach a service control policy to a tenant account",
            on("organizations:AttachPolicy", vec![Resource::service_control_policy(), tenant_account()]),
            Allowed,
        ),
        scenario(
            "Silo may detach a service control policy from a tenant account",
            on("organizations:DetachPolicy", vec![Resource::service_control_policy(), tenant_account()]),
            Allowed,
        ),
        scenario("Silo may rename a tenant account", on("account:PutAccountName", vec![tenant_account_api()]), Allowed),
        scenario(
            "Silo may read a tenant account's alternate contact",
            on("account:GetAlternateContact", vec![tenant_account_api()]),
            Allowed,
        ),
        scenario(
            "Silo may set a tenant account's alternate contact",
            on("account:PutAlternateContact", vec![tenant_account_api()]),
            Allowed,
        ),
        scenario(
            "Silo may remove a tenant account's alternate contact",
            on("account:DeleteAlternateContact", vec![tenant_account_api()]),
            Allowed,
        ),
        scenario("Silo may read an account's parent", on("organizations:ListParents", vec![tenant_account()]), Allowed),
        scenario("Silo may read an OU's parent", on("organizations:ListParents", vec![tenants_ou()]), Allowed),
        scenario(
            "Silo may list the accounts under the root",
            on("organizations:ListAccountsForParent", vec![Resource::root()]),
            Allowed,
        ),
        scenario(
            "Silo may list the accounts under an OU",
            on("organizations:ListAccountsForParent", vec![tenants_ou()]),
            Allowed,
        ),
        scenario(
            "Silo may list the OUs under the root",
            on("organizations:ListOrganizationalUnitsForParent", vec![Resource::root()]),
            Allowed,
        ),
        scenario(
            "Silo may list the OUs under an OU",
            on("organizations:ListOrganizationalUnitsForParent", vec![tenants_ou()]),
            Allowed,
        ),
        scenario(
            "Silo may describe an OU",
            on("organizations:DescribeOrganizationalUnit", vec![tenants_ou()]),
            Allowed,
        ),
        scenario(
            "Silo may create an account tagged with its Tenant's name and UID and the Tenant's tags",
            none("organizations:CreateAccount").setting(&[(NAME_TAG, "acme"), (UID_TAG, UID), ("team", "payments")]),
            Allowed,
        ),
        scenario(
            "Silo may claim an account that carries no UID (adoption with the owner's consent)",
            Call::tag(account_without_uid(), &[(NAME_TAG, "acme"), (UID_TAG, UID), ("team", "payments")]),
            Allowed,
        ),
        scenario(
            "Silo may claim an account that carries no UID but already has the Tenant's name tag",
            Call::tag(account_without_uid().tagged(NAME_TAG, "acme"), &[(UID_TAG, UID)]),
            Allowed,
        ),
        scenario(
            "Silo may set a tenant account's spec.tags",
            Call::tag(tenant_account(), &[("team", "checkout"), ("cost-center", "42")]),
            Allowed,
        ),
        scenario(
            "Silo may put back a tenant account's silo.dev/tenant tag with spec.tags",
            Call::tag(tenant_account(), &[(NAME_TAG, "acme"), ("team", "checkout")]),
            Allowed,
        ),
        scenario(
            "Silo may remove spec.tags keys it applied from a tenant account",
            Call::untag(tenant_account(), &["team", "cost-center"]),
            Allowed,
        ),
        scenario(
            "Silo may move a new tenant account from the root into an OU",
            on("organizations:MoveAccount", vec![tenant_account(), Resource::root(), tenants_ou()]),
            Allowed,
        ),
        scenario(
            "Silo may move a tenant account back into its OU",
            on("organizations:MoveAccount", vec![tenant_account(), other_ou(), tenants_ou()]),
            Allowed,
        ),
        scenario(
            "Silo may create an OU under the root (--create-missing-ous)",
            on("organizations:CreateOrganizationalUnit", vec![Resource::root()]),
            Allowed,
        ),
        scenario(
            "Silo may create an OU under an OU (--create-missing-ous)",
            on("organizations:CreateOrganizationalUnit", vec![tenants_ou()]),
            Allowed,
        ),
        scenario(
            "Silo may close a tenant account (--allow-account-closure)",
            on("organizations:CloseAccount", vec![tenant_account()]),
            Allowed,
        ),
        scenario(
            "Silo may assume the Baseline role in a tenant account",
            on("sts:AssumeRole", vec![baseline_role("222222222222")]),
            Allowed,
        ),
        scenario(
            "Silo may tag the session it opens in a tenant account",
            on("sts:TagSession", vec![baseline_role("222222222222")]),
            Allowed,
        ),
    ]
}

#[test]
fn every_call_silo_makes_is_allowed() {
    run(&[&policy()], silo_calls());
    run(&[&policy(), &reclaim()], silo_calls());
}

/// Every Organizations operation `controller/src/aws/organizations.rs` sends has a scenario
/// above, so a new call cannot ship without the policy being checked for it.
#[test]
fn every_organizations_operation_in_the_client_has_a_scenario() {
    let mut operations = BTreeSet::new();
    for (client, service) in [("organizations.rs", "organizations"), ("account_management.rs", "account")] {
        let path = repo_root().join("controller/src/aws").join(client);
        let source = std::fs::read_to_string(path).expect("the client");
        // Each request goes through the client's gate, naming its operation once:
        // `gate.read(priority, "Operation", ..)` or `gate.write("Operation", ..)`; each paginated
        // listing through `all_pages!(self, priority, "Operation", ..)`; maybe wrapped over lines.
        let source = source.split_whitespace().collect::<Vec<_>>().join(" ");
        operations.extend(
            [
                "gate.read(priority, \"",
                "gate.read( priority, \"",
                "gate.write(\"",
                "gate.write( \"",
                "all_pages!(self, priority, \"",
                "all_pages!( self, priority, \"",
            ]
            .iter()
            .flat_map(|marker| source.split(marker).skip(1).collect::<Vec<_>>())
            .filter_map(|rest| rest.split('"').next())
            .map(|operation| format!("{service}:{operation}")),
        );
    }
    assert!(operations.len() >= 22, "found only {operations:?} in the clients: has their shape changed?");
    let covered: BTreeSet<String> =
        silo_calls().into_iter().filter(|s| s.expected == Allowed).map(|s| s.call.action).collect();
    let missing: Vec<&String> = operations.difference(&covered).collect();
    assert!(missing.is_empty(), "operations Silo sends without an allowed scenario: {missing:?}");
}

#[test]
fn a_tenant_uid_is_never_replaced_without_the_reclaim_statement() {
    run(
        &[&policy()],
        vec![
            scenario(
                "tagging silo.dev/tenant-uid over another Tenant's UID is denied",
                Call::tag(account_of(OTHER_UID), &[(UID_TAG, UID)]),
                DeniedImplicitly,
            ),
            scenario(
                "tagging silo.dev/tenant-uid over this Tenant's previous UID (a restore) is denied",
                Call::tag(account_of(PREVIOUS_UID), &[(NAME_TAG, "acme"), (UID_TAG, UID), ("team", "payments")]),
                DeniedImplicitly,
            ),
            scenario(
                "rewriting a UID tag with its own value is denied (Silo never sends an unchanged tag)",
                Call::tag(tenant_account(), &[(UID_TAG, UID)]),
                DeniedImplicitly,
            ),
            scenario(
                "creating an account without silo.dev/tenant-uid is denied",
                none("organizations:CreateAccount").setting(&[(NAME_TAG, "acme"), ("team", "payments")]),
                DeniedImplicitly,
            ),
            scenario(
                "creating an account without silo.dev/tenant is denied",
                none("organizations:CreateAccount").setting(&[(UID_TAG, UID)]),
                DeniedImplicitly,
            ),
        ],
    );
}

#[test]
fn the_reclaim_statement_replaces_a_uid_and_nothing_more() {
    run(
        &[&policy(), &reclaim()],
        vec![
            scenario(
                "with the reclaim statement, a restored Tenant may move its previous UID tag to its new UID",
                Call::tag(account_of(PREVIOUS_UID), &[(NAME_TAG, "acme"), (UID_TAG, UID), ("team", "payments")]),
                Allowed,
            ),
            scenario(
                "with the reclaim statement, the UID tag still cannot be removed",
                Call::untag(account_of(PREVIOUS_UID), &[UID_TAG]),
                DeniedExplicitly,
            ),
            scenario(
                "with the reclaim statement, the management account still cannot be tagged",
                Call::tag(Resource::management_account().tagged(UID_TAG, PREVIOUS_UID), &[(UID_TAG, UID)]),
                DeniedExplicitly,
            ),
            scenario(
                "with the reclaim statement, an account without a UID still cannot get only other tags",
                Call::tag(account_without_uid(), &[("team", "payments")]),
                DeniedImplicitly,
            ),
        ],
    );

    // Narrowed as docs/install.md says, to the UIDs being restored.
    let narrowed = reclaim().with_statement("OnlyWhileRestoringReplaceATenantUid", |statement| {
        statement["Condition"]["StringEquals"] =
            serde_json::json!({"aws:ResourceTag/silo.dev/tenant-uid": [PREVIOUS_UID]});
    });
    run(
        &[&policy(), &narrowed],
        vec![
            scenario(
                "with the reclaim statement narrowed to the restored UIDs, a listed UID may be replaced",
                Call::tag(account_of(PREVIOUS_UID), &[(UID_TAG, UID)]),
                Allowed,
            ),
            scenario(
                "with the reclaim statement narrowed to the restored UIDs, another Tenant's UID may not",
                Call::tag(account_of(OTHER_UID), &[(UID_TAG, UID)]),
                DeniedImplicitly,
            ),
        ],
    );
}

#[test]
fn a_tenant_uid_is_never_removed() {
    run(
        &[&policy()],
        vec![
            scenario(
                "untagging silo.dev/tenant-uid is denied explicitly",
                Call::untag(tenant_account(), &[UID_TAG]),
                DeniedExplicitly,
            ),
            scenario(
                "untagging silo.dev/tenant-uid together with spec.tags keys is denied explicitly",
                Call::untag(tenant_account(), &["team", UID_TAG]),
                DeniedExplicitly,
            ),
            scenario(
                "untagging silo.dev/tenant-uid from an account without one is denied explicitly",
                Call::untag(account_without_uid(), &[UID_TAG]),
                DeniedExplicitly,
            ),
            scenario(
                "untagging silo.dev/tenant is denied",
                Call::untag(tenant_account(), &[NAME_TAG]),
                DeniedImplicitly,
            ),
            scenario(
                "untagging anything from an account without a UID is denied",
                Call::untag(account_without_uid(), &["purpose"]),
                DeniedImplicitly,
            ),
        ],
    );
}

#[test]
fn accounts_without_a_tenant_uid_are_neither_moved_nor_closed() {
    run(
        &[&policy()],
        vec![
            scenario(
                "closing an account without a UID is denied",
                on("organizations:CloseAccount", vec![account_without_uid()]),
                DeniedImplicitly,
            ),
            scenario(
                "moving an account without a UID is denied",
                on("organizations:MoveAccount", vec![account_without_uid(), Resource::root(), tenants_ou()]),
                DeniedImplicitly,
            ),
            scenario(
                "attaching a policy to an account without a UID is denied",
                on("organizations:AttachPolicy", vec![Resource::service_control_policy(), account_without_uid()]),
                DeniedImplicitly,
            ),
            scenario(
                "detaching a policy from an account without a UID (a guardrail, say) is denied",
                on("organizations:DetachPolicy", vec![Resource::service_control_policy(), account_without_uid()]),
                DeniedImplicitly,
            ),
            scenario(
                "renaming an account without a UID is denied",
                on("account:PutAccountName", vec![account_api_without_uid()]),
                DeniedImplicitly,
            ),
            scenario(
                "setting a contact of an account without a UID is denied",
                on("account:PutAlternateContact", vec![account_api_without_uid()]),
                DeniedImplicitly,
            ),
            scenario(
                "closing an account whose silo.dev/tenant tag is all it has is denied",
                on("organizations:CloseAccount", vec![Resource::account("555555555555").tagged(NAME_TAG, "acme")]),
                DeniedImplicitly,
            ),
        ],
    );
}

#[test]
fn nothing_is_written_to_the_management_account() {
    let management = Resource::management_account;
    // As in the issue: a management account that was once tagged like a tenant account.
    let tagged_management = || management().tagged(NAME_TAG, "acme").tagged(UID_TAG, UID);
    let policy = policy();
    let reclaim = reclaim();
    for policies in [vec![&policy], vec![&policy, &reclaim]] {
        run(
            &policies,
            vec![
                scenario(
                    "claiming the management account is denied explicitly",
                    Call::tag(management(), &[(NAME_TAG, "acme"), (UID_TAG, UID)]),
                    DeniedExplicitly,
                ),
                scenario(
                    "tagging a management account that carries a UID is denied explicitly",
                    Call::tag(tagged_management(), &[("team", "payments")]),
                    DeniedExplicitly,
                ),
                scenario(
                    "untagging the management account is denied explicitly",
                    Call::untag(tagged_management(), &["team"]),
                    DeniedExplicitly,
                ),
                scenario(
                    "moving the management account is denied explicitly",
                    on("organizations:MoveAccount", vec![tagged_management(), Resource::root(), tenants_ou()]),
                    DeniedExplicitly,
                ),
                scenario(
                    "attaching a policy to the management account is denied explicitly",
                    on("organizations:AttachPolicy", vec![Resource::service_control_policy(), tagged_management()]),
                    DeniedExplicitly,
                ),
                scenario(
                    "closing the management account is denied explicitly",
                    on("organizations:CloseAccount", vec![tagged_management()]),
                    DeniedExplicitly,
                ),
            ],
        );
    }
}

#[test]
fn an_account_without_a_uid_gets_no_tag_but_a_claim() {
    run(
        &[&policy()],
        vec![
            scenario(
                "a non-silo tag alone on an account without a UID is denied",
                Call::tag(account_without_uid(), &[("team", "payments")]),
                DeniedImplicitly,
            ),
            scenario(
                "silo.dev/tenant alone on an account without a UID is denied",
                Call::tag(account_without_uid(), &[(NAME_TAG, "acme")]),
                DeniedImplicitly,
            ),
            // What IAM cannot express: whether the claim was consented to. Silo requires the
            // `silo.dev/adopt-account` annotation naming the account before it sends this.
            scenario(
                "a claim (silo.dev/tenant-uid) with other tags on an account without a UID is allowed",
                Call::tag(account_without_uid(), &[(UID_TAG, UID), ("team", "payments")]),
                Allowed,
            ),
        ],
    );
}

#[test]
fn tag_writes_reach_accounts_only() {
    run(
        &[&policy()],
        vec![
            scenario("tagging an OU is denied", Call::tag(tenants_ou(), &[(UID_TAG, UID)]), DeniedImplicitly),
            scenario("tagging a root is denied", Call::tag(Resource::root(), &[(UID_TAG, UID)]), DeniedImplicitly),
            scenario(
                "tagging a policy is denied",
                Call::tag(Resource::service_control_policy(), &[(UID_TAG, UID)]),
                DeniedImplicitly,
            ),
            scenario(
                "assuming another role in a tenant account is denied",
                on("sts:AssumeRole", vec![Resource::role("222222222222", "Admin")]),
                DeniedImplicitly,
            ),
        ],
    );
}

#[test]
fn actions_silo_never_takes_are_denied() {
    run(
        &[&policy()],
        vec![
            scenario("leaving the organization is denied", none("organizations:LeaveOrganization"), DeniedImplicitly),
            scenario("deleting the organization is denied", none("organizations:DeleteOrganization"), DeniedImplicitly),
            scenario(
                "attaching a policy to an OU is denied",
                on("organizations:AttachPolicy", vec![Resource::service_control_policy(), tenants_ou()]),
                DeniedImplicitly,
            ),
            scenario(
                "attaching a policy to the root is denied",
                on("organizations:AttachPolicy", vec![Resource::service_control_policy(), Resource::root()]),
                DeniedImplicitly,
            ),
            scenario(
                "removing a tenant account from the organization is denied",
                on("organizations:RemoveAccountFromOrganization", vec![tenant_account()]),
                DeniedImplicitly,
            ),
            scenario(
                "inviting an account into the organization is denied",
                on("organizations:InviteAccountToOrganization", vec![tenant_account()]),
                DeniedImplicitly,
            ),
        ],
    );
}
