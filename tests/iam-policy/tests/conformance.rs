//! Pins the behaviour of the evaluator (the `iam-rs` crate, wrapped by this package's
//! `decide`) to AWS's documented policy evaluation logic, for every operator and element the
//! policy tests rely on. If an upgrade of the crate changes any of these, the policy tests
//! would no longer say what AWS would do, and this file fails first.
//!
//! Sources, in the IAM User Guide: "Policy evaluation logic" (an explicit deny in any policy
//! wins, otherwise an allow is needed), "Condition operators" (a missing key makes a condition
//! false, except for negated operators, `...IfExists` and `Null`; several values for one key are
//! ORed, keys and operators are ANDed), "Set operators for multivalued context keys"
//! (`ForAllValues` is true when every request value matches one policy value, and also when the
//! key is missing or empty; `ForAnyValue` needs at least one match and is false when the key is
//! missing), "Variables and tags" (variables in the resource part of an ARN), and "Resource"
//! (wildcards within a segment match any characters, `/` included).

use serde_json::{Value, json};
use silo_iam_policy_tests::{Call, Decision, PolicyDocument, Resource, decide};

const ACCOUNT: &str = "arn:aws:organizations::*:account/o-*/*";

fn policy(statements: Value) -> PolicyDocument {
    PolicyDocument::new("conformance", json!({"Version": "2012-10-17", "Statement": statements}))
        .unwrap_or_else(|problems| panic!("{problems:?}"))
}

/// A policy allowing TagResource on accounts under one condition.
fn tag_if(condition: Value) -> PolicyDocument {
    policy(json!([{"Sid": "Under", "Effect": "Allow", "Action": "organizations:TagResource",
        "Resource": ACCOUNT, "Condition": condition}]))
}

fn account() -> Resource {
    Resource::account("222222222222")
}

fn check(policy: &PolicyDocument, cases: &[(&str, Call, Decision)]) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(says, call, expected)| {
            let got = decide(&[policy], call);
            (got != *expected).then(|| format!("{says}: expected {expected:?}, got {got:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn null_tests_whether_a_key_is_in_the_request() {
    let absent = tag_if(json!({"Null": {"aws:ResourceTag/owner": "true"}}));
    let present = tag_if(json!({"Null": {"aws:ResourceTag/owner": "false"}}));
    let untagged = || Call::tag(account(), &[("k", "v")]);
    let tagged = || Call::tag(account().tagged("owner", "x"), &[("k", "v")]);
    check(
        &absent,
        &[
            ("Null true holds when the key is missing", untagged(), Decision::Allowed),
            ("Null true fails when the key is there", tagged(), Decision::DeniedImplicitly),
        ],
    );
    check(
        &present,
        &[
            ("Null false fails when the key is missing", untagged(), Decision::DeniedImplicitly),
            ("Null false holds when the key is there", tagged(), Decision::Allowed),
        ],
    );
}

#[test]
fn string_operators_or_their_values_and_fail_on_a_missing_key() {
    let equals = tag_if(json!({"StringEquals": {"aws:ResourceTag/owner": ["a", "b"]}}));
    let like = tag_if(json!({"StringLike": {"aws:ResourceTag/owner": "team-*"}}));
    check(
        &equals,
        &[
            (
                "StringEquals matches any of its values",
                Call::tag(account().tagged("owner", "b"), &[("k", "v")]),
                Decision::Allowed,
            ),
            (
                "StringEquals is case-sensitive",
                Call::tag(account().tagged("owner", "B"), &[("k", "v")]),
                Decision::DeniedImplicitly,
            ),
            ("StringEquals on a missing key is false", Call::tag(account(), &[("k", "v")]), Decision::DeniedImplicitly),
        ],
    );
    check(
        &like,
        &[
            (
                "StringLike * matches any characters",
                Call::tag(account().tagged("owner", "team-a/b"), &[("k", "v")]),
                Decision::Allowed,
            ),
            (
                "StringLike anchors the whole value",
                Call::tag(account().tagged("owner", "x-team-a"), &[("k", "v")]),
                Decision::DeniedImplicitly,
            ),
            ("StringLike on a missing key is false", Call::tag(account(), &[("k", "v")]), Decision::DeniedImplicitly),
        ],
    );
}

#[test]
fn keys_and_operators_of_a_condition_are_anded() {
    let both = tag_if(json!({
        "Null": {"aws:ResourceTag/owner": "false", "aws:RequestTag/team": "false"},
        "StringEquals": {"aws:ResourceTag/owner": "a"}
    }));
    check(
        &both,
        &[
            ("all three hold", Call::tag(account().tagged("owner", "a"), &[("team", "x")]), Decision::Allowed),
            (
                "one key of Null fails",
                Call::tag(account().tagged("owner", "a"), &[("k", "v")]),
                Decision::DeniedImplicitly,
            ),
            (
                "the other operator fails",
                Call::tag(account().tagged("owner", "b"), &[("team", "x")]),
                Decision::DeniedImplicitly,
            ),
        ],
    );
}

#[test]
fn for_all_values_needs_every_request_value_and_holds_when_there_is_none() {
    let not_equals = tag_if(json!({"ForAllValues:StringNotEquals": {"aws:TagKeys": ["secret", "owner"]}}));
    let not_like = tag_if(json!({"ForAllValues:StringNotLike": {"aws:TagKeys": ["silo.dev/*", "aws:*"]}}));
    check(
        &not_equals,
        &[
            ("no request key is one of the values", Call::tag(account(), &[("a", "1"), ("b", "2")]), Decision::Allowed),
            (
                "one request key among several is a value",
                Call::tag(account(), &[("a", "1"), ("owner", "2")]),
                Decision::DeniedImplicitly,
            ),
            (
                "the second policy value counts too (NOR)",
                Call::tag(account(), &[("secret", "1")]),
                Decision::DeniedImplicitly,
            ),
            (
                "a missing aws:TagKeys makes ForAllValues true (why the policy pairs it with Null)",
                Call::new("organizations:TagResource", vec![account()]),
                Decision::Allowed,
            ),
        ],
    );
    check(
        &not_like,
        &[
            (
                "no request key matches a pattern",
                Call::tag(account(), &[("team", "1"), ("silo.dev", "2")]),
                Decision::Allowed,
            ),
            (
                "one request key matches the first pattern",
                Call::tag(account(), &[("team", "1"), ("silo.dev/x", "2")]),
                Decision::DeniedImplicitly,
            ),
            (
                "one request key matches the second pattern",
                Call::tag(account(), &[("aws:x", "1")]),
                Decision::DeniedImplicitly,
            ),
        ],
    );
}

#[test]
fn for_any_value_needs_one_request_value_and_fails_when_there_is_none() {
    let any = tag_if(json!({"ForAnyValue:StringEquals": {"aws:TagKeys": ["owner", "secret"]}}));
    check(
        &any,
        &[
            (
                "one request key among several is a value",
                Call::tag(account(), &[("a", "1"), ("secret", "2")]),
                Decision::Allowed,
            ),
            ("no request key is a value", Call::tag(account(), &[("a", "1"), ("b", "2")]), Decision::DeniedImplicitly),
            (
                "a missing aws:TagKeys makes ForAnyValue false",
                Call::new("organizations:TagResource", vec![account()]),
                Decision::DeniedImplicitly,
            ),
        ],
    );
}

#[test]
fn an_explicit_deny_wins_wherever_it_is() {
    let allow = json!({"Sid": "Allow", "Effect": "Allow", "Action": "organizations:TagResource", "Resource": "*"});
    let deny = json!({"Sid": "Deny", "Effect": "Deny", "Action": "organizations:TagResource", "Resource": ACCOUNT});
    let deny_first = policy(json!([deny.clone(), allow.clone()]));
    let deny_last = policy(json!([allow.clone(), deny.clone()]));
    let call = || Call::tag(account(), &[("k", "v")]);
    assert_eq!(decide(&[&deny_first], &call()), Decision::DeniedExplicitly, "a Deny before the Allow");
    assert_eq!(decide(&[&deny_last], &call()), Decision::DeniedExplicitly, "a Deny after the Allow");
    let (allows, denies) = (policy(json!([allow])), policy(json!([deny])));
    assert_eq!(decide(&[&allows, &denies], &call()), Decision::DeniedExplicitly, "a Deny in another policy");
    assert_eq!(decide(&[&allows], &call()), Decision::Allowed, "the Allow alone");
    assert_eq!(decide(&[&denies], &call()), Decision::DeniedExplicitly, "the Deny alone");
}

#[test]
fn a_variable_in_the_resource_part_is_the_request_s_value() {
    let own = policy(json!([{"Sid": "Own", "Effect": "Deny", "Action": "organizations:TagResource",
        "Resource": "arn:aws:organizations::*:account/o-*/${aws:PrincipalAccount}"}]));
    // Every request's aws:PrincipalAccount is the management account.
    assert_eq!(decide(&[&own], &Call::tag(Resource::management_account(), &[("k", "v")])), Decision::DeniedExplicitly);
    assert_eq!(decide(&[&own], &Call::tag(account(), &[("k", "v")])), Decision::DeniedImplicitly);
}

#[test]
fn resource_wildcards_stay_within_their_segment_kind() {
    let accounts = policy(json!([{"Sid": "Accounts", "Effect": "Allow", "Action": "organizations:TagResource",
        "Resource": ACCOUNT}]));
    assert_eq!(decide(&[&accounts], &Call::tag(account(), &[("k", "v")])), Decision::Allowed, "an account");
    for other in [Resource::ou("ou-ex1a-tenants1"), Resource::root(), Resource::service_control_policy()] {
        let arn = other.arn.clone();
        assert_eq!(decide(&[&accounts], &Call::tag(other, &[("k", "v")])), Decision::DeniedImplicitly, "{arn:?}");
    }
}

#[test]
fn a_call_on_several_resources_needs_each_of_them_allowed() {
    let moves = policy(json!([
        {"Sid": "Account", "Effect": "Allow", "Action": "organizations:MoveAccount", "Resource": ACCOUNT,
         "Condition": {"Null": {"aws:ResourceTag/owner": "false"}}},
        {"Sid": "Parents", "Effect": "Allow", "Action": "organizations:MoveAccount",
         "Resource": "arn:aws:organizations::*:ou/o-*/ou-*"}
    ]));
    let r#move = |account: Resource, from: Resource| {
        Call::new("organizations:MoveAccount", vec![account, from, Resource::ou("ou-ex1a-tenants1")])
    };
    let tagged = || account().tagged("owner", "x");
    assert_eq!(decide(&[&moves], &r#move(tagged(), Resource::ou("ou-ex1a-other111"))), Decision::Allowed);
    assert_eq!(decide(&[&moves], &r#move(account(), Resource::ou("ou-ex1a-other111"))), Decision::DeniedImplicitly);
    assert_eq!(
        decide(&[&moves], &r#move(tagged(), Resource::root())),
        Decision::DeniedImplicitly,
        "the root is not allowed"
    );
}

#[test]
fn an_action_without_resources_takes_only_statements_on_star() {
    let create = |resource: &str| {
        policy(
            json!([{"Sid": "Create", "Effect": "Allow", "Action": "organizations:CreateAccount", "Resource": resource}]),
        )
    };
    let call = || Call::new("organizations:CreateAccount", vec![Resource::none()]);
    assert_eq!(decide(&[&create("*")], &call()), Decision::Allowed);
    let arn = PolicyDocument::new(
        "arn",
        json!({"Version": "2012-10-17", "Statement": [{"Sid": "Create", "Effect": "Allow",
            "Action": "organizations:CreateAccount", "Resource": ACCOUNT}]}),
    );
    assert!(arn.is_err(), "the subset guard refuses an ARN for an action that takes none");
}
