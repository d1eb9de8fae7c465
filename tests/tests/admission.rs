//! The API server itself refuses bad Tenants: OpenAPI schema bounds plus CEL rules from
//! `crds/`, judged by a real kube-apiserver. No controller runs here.

use kube::{
    Api,
    api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams},
    core::GroupVersionKind,
};
use serde_json::{Value, json};
use silo::Tenant;
use silo_testenv::{TestCase, test_case};

/// Tenants as raw JSON, the way kubectl sends them, so the API server judges every value.
fn raw_tenants(case: &TestCase) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("silo.dev", "v1alpha1", "Tenant");
    Api::all_with(case.client.clone(), &ApiResource::from_gvk_with_plural(&gvk, "tenants"))
}

fn tenant(name: &str, spec: Value) -> DynamicObject {
    object("Tenant", name, spec)
}

/// A Silo object as raw JSON.
fn object(kind: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "silo.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("test object is well-formed JSON")
}

fn tags(count: usize, key_len: usize, value_len: usize) -> Value {
    let map: serde_json::Map<String, Value> = (0..count)
        .map(|i| {
            let key = format!("{i:03}{}", "k".repeat(key_len.saturating_sub(3)));
            (key, Value::String("v".repeat(value_len)))
        })
        .collect();
    Value::Object(map)
}

/// What the API server must say when it refuses a Tenant: every fragment must appear.
struct Refusal {
    case: &'static str,
    tenant: DynamicObject,
    says: &'static [&'static str],
}

fn refusals() -> Vec<Refusal> {
    let long_name = "a".repeat(51);
    vec![
        Refusal {
            case: "empty account name",
            tenant: tenant("t1", json!({"accountName": ""})),
            says: &["spec.accountName", "at least 1 chars long"],
        },
        Refusal {
            case: "account name of 51 characters",
            tenant: tenant("t2", json!({"accountName": "n".repeat(51)})),
            says: &["spec.accountName", "may not be more than 50"],
        },
        Refusal {
            case: "non-ASCII account name",
            tenant: tenant("t3", json!({"accountName": "Acmé"})),
            says: &["spec.accountName may contain only printable ASCII characters"],
        },
        Refusal {
            case: "account name with a tab",
            tenant: tenant("t4", json!({"accountName": "a\tb"})),
            says: &["spec.accountName may contain only printable ASCII characters"],
        },
        Refusal {
            case: "email of 5 characters",
            tenant: tenant("t5", json!({"email": "a@b.c"})),
            says: &["spec.email", "at least 6 chars long"],
        },
        Refusal {
            case: "email of 65 characters",
            tenant: tenant("t6", json!({"email": format!("{}@example.com", "e".repeat(53))})),
            says: &["spec.email", "may not be more than 64"],
        },
        Refusal {
            case: "email without @",
            tenant: tenant("t7", json!({"email": "tenant.example.com"})),
            says: &["spec.email must be one local part, one '@' and a domain with a dot"],
        },
        Refusal {
            case: "email with two @",
            tenant: tenant("t8", json!({"email": "a@b@example.com"})),
            says: &["spec.email must be one local part, one '@'"],
        },
        Refusal {
            case: "email with a space",
            tenant: tenant("t9", json!({"email": "a b@example.com"})),
            says: &["spec.email must be one local part", "without spaces"],
        },
        Refusal {
            case: "email domain without a dot",
            tenant: tenant("t9b", json!({"email": "tenant@localhost"})),
            says: &["spec.email must be one local part, one '@' and a domain with a dot"],
        },
        Refusal {
            case: "long metadata.name without accountName",
            tenant: tenant(&long_name, json!({})),
            says: &["metadata.name is longer than 50 characters", "set spec.accountName"],
        },
        Refusal {
            case: "account id of 5 digits",
            tenant: tenant("t11", json!({"accountId": "12345"})),
            says: &["spec.accountId must be a 12-digit AWS account id"],
        },
        Refusal {
            case: "account id with letters",
            tenant: tenant("t12", json!({"accountId": "abcdefghijkl"})),
            says: &["spec.accountId must be a 12-digit AWS account id"],
        },
        Refusal {
            case: "OU path without leading slash",
            tenant: tenant("t13", json!({"organizationalUnit": "Tenants/Production"})),
            says: &["spec.organizationalUnit must be an OU id like ou-ab12-cdef3456 or a path"],
        },
        Refusal {
            case: "malformed OU id",
            tenant: tenant("t14", json!({"organizationalUnit": "ou-XY"})),
            says: &["spec.organizationalUnit must be an OU id"],
        },
        Refusal {
            case: "OU path with an empty segment",
            tenant: tenant("t15", json!({"organizationalUnit": "/Tenants//Production"})),
            says: &["spec.organizationalUnit must be an OU id"],
        },
        Refusal {
            case: "OU path 6 levels deep",
            tenant: tenant("t15b", json!({"organizationalUnit": "/a/b/c/d/e/f"})),
            says: &["spec.organizationalUnit is more than 5 levels below the root"],
        },
        Refusal {
            case: "49 tags (Silo adds 2 of AWS's 50)",
            tenant: tenant("t16", json!({"tags": tags(49, 8, 8)})),
            says: &["spec.tags", "must have at most 48 items"],
        },
        Refusal {
            case: "tag key with a character AWS refuses",
            tenant: tenant("t16b", json!({"tags": {"cost#center": "x"}})),
            says: &["spec.tags keys and values may contain only letters, digits, spaces and _ . : / = + - @"],
        },
        Refusal {
            case: "tag value with a character AWS refuses",
            tenant: tenant("t16c", json!({"tags": {"team": "a;b"}})),
            says: &["spec.tags keys and values may contain only"],
        },
        Refusal {
            case: "baseline parameter TenantName",
            tenant: tenant("t16d", json!({"baseline": {"name": "std", "parameters": {"TenantName": "other"}}})),
            says: &["spec.baseline.parameters must not set TenantName or AccountId"],
        },
        Refusal {
            case: "baseline parameter AccountId",
            tenant: tenant("t16e", json!({"baseline": {"name": "std", "parameters": {"AccountId": "111122223333"}}})),
            says: &["spec.baseline.parameters must not set TenantName or AccountId"],
        },
        Refusal {
            case: "tag key starting with aws:",
            tenant: tenant("t17", json!({"tags": {"aws:cost-center": "x"}})),
            says: &["spec.tags keys must not start with 'aws:'"],
        },
        Refusal {
            case: "tag key of 129 characters",
            tenant: tenant("t18", json!({"tags": tags(1, 129, 1)})),
            says: &["spec.tags keys must be 1 to 128 characters long"],
        },
        Refusal {
            case: "tag value of 257 characters",
            tenant: tenant("t19", json!({"tags": tags(1, 8, 257)})),
            says: &["spec.tags", "may not be more than 256"],
        },
        Refusal {
            case: "tag key in Silo's namespace",
            tenant: tenant("t20", json!({"tags": {"silo.dev/tenant": "x"}})),
            says: &["spec.tags keys must not start with 'silo.dev/'"],
        },
        Refusal {
            case: "five service control policies",
            tenant: tenant("t22", json!({"policies": ["p-1", "p-2", "p-3", "p-4", "p-5"]})),
            says: &["spec.policies", "must have at most 4 items"],
        },
        Refusal {
            case: "a policy listed twice",
            tenant: tenant("t23", json!({"policies": ["guardrail", "guardrail"]})),
            says: &["spec.policies[1]", "Duplicate value"],
        },
        Refusal {
            case: "contact without a phone",
            tenant: tenant(
                "t24",
                json!({"contacts": {"security": {"name": "A", "title": "CISO", "email": "a@example.com"}}}),
            ),
            says: &["spec.contacts.security.phone", "Required value"],
        },
        Refusal {
            case: "contact with letters in the phone",
            tenant: tenant(
                "t25",
                json!({"contacts": {"billing": {"name": "A", "title": "T", "email": "a@example.com", "phone": "call me"}}}),
            ),
            says: &["contact phone may contain only digits, spaces and ( ) + -"],
        },
        Refusal {
            case: "contact email without a domain",
            tenant: tenant(
                "t26",
                json!({"contacts": {"operations": {"name": "A", "title": "T", "email": "ops", "phone": "+1 555"}}}),
            ),
            says: &["contact email must look like name@example.com"],
        },
        Refusal {
            case: "a pool and an email",
            tenant: tenant("t27", json!({"pool": "warm", "email": "root@acme.example"})),
            says: &["spec.email cannot be set with spec.pool", "status.email shows it"],
        },
        Refusal {
            case: "a pool and an account id",
            tenant: tenant("t28", json!({"pool": "warm", "accountId": "111122223333"})),
            says: &["spec.pool and spec.accountId exclude each other"],
        },
        Refusal {
            case: "unknown deletion policy",
            tenant: tenant("t21", json!({"deletionPolicy": "Delete"})),
            says: &["spec.deletionPolicy", "Unsupported value: \"Delete\"", "\"Retain\"", "\"Close\""],
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tenants_are_refused_with_a_message_naming_the_rule() {
    let case = test_case().await;
    eprintln!("admission checks against kube-apiserver {}", case.info.kube_version);
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    let mut failures = vec![];
    let refusals = refusals();
    assert!(refusals.len() >= 15);
    for refusal in &refusals {
        match raw_tenants(&case).create(&dry_run, &refusal.tenant).await {
            Ok(_) => failures.push(format!("{}: accepted", refusal.case)),
            Err(kube::Error::Api(status)) => {
                let missing: Vec<_> = refusal.says.iter().filter(|s| !status.message.contains(**s)).collect();
                if !missing.is_empty() {
                    failures.push(format!("{}: message {:?} lacks {missing:?}", refusal.case, status.message));
                }
            }
            Err(other) => failures.push(format!("{}: unexpected error {other}", refusal.case)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} refusals were wrong:\n{}",
        failures.len(),
        refusals.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_edge_cases_are_accepted() {
    let case = test_case().await;
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    let accepted = [
        ("50-character name", tenant(&"a".repeat(50), json!({}))),
        (
            "long name with accountName",
            tenant(&"b".repeat(63), json!({"accountName": "Acme Corp. (EU) #1 ~ all printable!"})),
        ),
        ("50-character account name", tenant("e2", json!({"accountName": "x".repeat(50)}))),
        ("64-character email", tenant("e3", json!({"email": format!("{}@example.com", "e".repeat(52))}))),
        ("6-character email", tenant("e4", json!({"email": "a@b.co"}))),
        ("48 tags at the size limits", tenant("e5", json!({"tags": tags(48, 128, 256)}))),
        (
            "tags with every character AWS allows",
            tenant("e5b", json!({"tags": {"Cost Center_1.a:b/c=d+e-f@g": "Équipe 42 _.:/=+-@"}})),
        ),
        ("OU path 5 levels deep", tenant("e7b", json!({"organizationalUnit": "/a/b/c/d/e"}))),
        ("OU id", tenant("e6", json!({"organizationalUnit": "ou-ab12-cdef3456"}))),
        ("OU path", tenant("e7", json!({"organizationalUnit": "/Tenants/Production"}))),
        ("the root", tenant("e8", json!({"organizationalUnit": "/"}))),
        ("adoption by id", tenant("e9", json!({"accountId": "111122223333"}))),
        ("four policies, by id and name", tenant("e11", json!({"policies": ["p-abcd1234", "Deny Regions", "c", "d"]}))),
        (
            "all three contacts",
            tenant(
                "e12",
                json!({"contacts": {
                    "security": {"name": "Sam Sec", "title": "CISO", "email": "sec+acme@example.com", "phone": "+1 (555) 010-0100"},
                    "billing": {"name": "B", "title": "CFO", "email": "b@example.co.uk", "phone": "0"},
                    "operations": {"name": "O", "title": "SRE", "email": "o.p-s@example.com", "phone": "555 0100"}
                }}),
            ),
        ),
        (
            "Close policy, paused, baseline",
            tenant(
                "e10",
                json!({"deletionPolicy": "Close", "paused": true, "baseline": {"name": "standard", "parameters": {"Env": "prod"}}}),
            ),
        ),
    ];
    let mut failures = vec![];
    for (what, tenant) in &accepted {
        if let Err(err) = raw_tenants(&case).create(&dry_run, tenant).await {
            failures.push(format!("{what}: {err}"));
        }
    }
    assert!(failures.is_empty(), "valid Tenants were refused:\n{}", failures.join("\n"));

    raw_tenants(&case).create(&PostParams::default(), &tenant("defaults", json!({}))).await.unwrap();
    let created: Tenant = case.tenants().get("defaults").await.unwrap();
    assert_eq!(created.spec.deletion_policy, silo::api::DeletionPolicy::Retain, "deletionPolicy defaults to Retain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_and_account_id_cannot_change_once_set() {
    let case = test_case().await;
    let original = tenant("fixed", json!({"email": "fixed@example.com", "accountId": "111122223333"}));
    raw_tenants(&case).create(&PostParams::default(), &original).await.unwrap();

    let changes = [
        ("email changed", json!({"spec": {"email": "other@example.com"}}), "spec.email cannot change once set"),
        ("email removed", json!({"spec": {"email": null}}), "spec.email cannot change once set"),
        ("account id changed", json!({"spec": {"accountId": "444455556666"}}), "spec.accountId cannot change once set"),
    ];
    for (what, patch, says) in changes {
        match case.tenants().patch("fixed", &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => panic!("{what}: accepted"),
            Err(kube::Error::Api(status)) => {
                assert!(status.message.contains(says), "{what}: {:?} lacks {says:?}", status.message)
            }
            Err(other) => panic!("{what}: {other}"),
        }
    }
    // Setting a field that was unset is allowed.
    let unset = tenant("settable", json!({}));
    raw_tenants(&case).create(&PostParams::default(), &unset).await.unwrap();
    let patch = json!({"spec": {"email": "late@example.com"}});
    case.tenants()
        .patch("settable", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("email may be set once");
    let patch = json!({"spec": {"accountId": "111122223333"}});
    case.tenants()
        .patch("settable", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("accountId may be set while no creation has started");

    // Once Silo recorded the intent to create an account, spec.accountId cannot be added:
    // the creation may be in flight, and adopting another account would make two.
    raw_tenants(&case).create(&PostParams::default(), &tenant("creating", json!({}))).await.unwrap();
    let intent = json!({"status": {"accountName": "creating", "email": "aws+creating@example.com"}});
    case.tenants().patch_status("creating", &PatchParams::default(), &Patch::Merge(&intent)).await.unwrap();
    let patch = json!({"spec": {"accountId": "111122223333"}});
    match case.tenants().patch("creating", &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => panic!("spec.accountId was added while a creation may be in flight"),
        Err(kube::Error::Api(status)) => assert!(
            status.message.contains("spec.accountId cannot be added once Silo has started creating an account"),
            "{:?}",
            status.message
        ),
        Err(other) => panic!("{other}"),
    }
}

/// Creates each object with a dry run: every refused one must be refused with its words, the
/// valid one accepted. Returns what went wrong.
async fn judge(
    api: &Api<DynamicObject>,
    refused: &[(&str, DynamicObject, &str)],
    valid: &DynamicObject,
) -> Vec<String> {
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    let mut failures = vec![];
    for (what, object, says) in refused {
        match api.create(&dry_run, object).await {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(kube::Error::Api(status)) if status.message.contains(says) => {}
            Err(other) => failures.push(format!("{what}: {other} lacks {says:?}")),
        }
    }
    if let Err(err) = api.create(&dry_run, valid).await {
        failures
            .push(format!("a valid {} was refused: {err}", valid.types.as_ref().map_or("object", |t| t.kind.as_str())));
    }
    failures
}

fn baseline(name: &str, spec: Value) -> DynamicObject {
    object("Baseline", name, spec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_baselines_are_refused_and_valid_ones_accepted() {
    let case = test_case().await;
    let gvk = GroupVersionKind::gvk("silo.dev", "v1alpha1", "Baseline");
    let api: Api<DynamicObject> =
        Api::all_with(case.client.clone(), &ApiResource::from_gvk_with_plural(&gvk, "baselines"));
    let template = "Resources: {}";
    let refused = [
        ("no template", baseline("b1", json!({})), "set exactly one of spec.template"),
        (
            "template and templateURL",
            baseline("b2", json!({"template": template, "templateURL": "https://example.com/t.yaml"})),
            "set exactly one of spec.template",
        ),
        (
            "template over 51,200 bytes",
            baseline("b3", json!({"template": "#".repeat(51_201)})),
            "may not be more than 51200",
        ),
        (
            "templateURL over http",
            baseline("b4", json!({"templateURL": "http://example.com/t.yaml"})),
            "must start with https:// or s3://",
        ),
        (
            "bad region",
            baseline("b5", json!({"template": template, "regions": ["mars-1"]})),
            "spec.regions must be AWS region names",
        ),
        (
            "bad stack name",
            baseline("b6", json!({"template": template, "stackName": "1-stack"})),
            "spec.stackName must start with a letter",
        ),
        (
            "unknown capability",
            baseline("b7", json!({"template": template, "capabilities": ["CAPABILITY_ALL"]})),
            "Unsupported value",
        ),
        (
            "a default for TenantName",
            baseline("b8", json!({"template": template, "parameters": {"TenantName": "x"}})),
            "spec.parameters must not set TenantName or AccountId",
        ),
        (
            "a stage of no tenants",
            baseline("b9", json!({"template": template, "rollout": {"stages": [1, 0, "100%"]}})),
            "spec.rollout.stages are numbers of tenants (at least 1) or percentages",
        ),
        (
            "a stage of 0%",
            baseline("b10", json!({"template": template, "rollout": {"stages": [1, "0%"]}})),
            "spec.rollout.stages are numbers of tenants (at least 1) or percentages",
        ),
        (
            "a stage that is no percentage",
            baseline("b11", json!({"template": template, "rollout": {"stages": ["half"]}})),
            "spec.rollout.stages are numbers of tenants (at least 1) or percentages",
        ),
    ];
    let valid = baseline(
        "ok",
        json!({"template": "#".repeat(51_200), "regions": ["us-east-1", "eu-west-1"], "capabilities": ["CAPABILITY_NAMED_IAM"],
               "externalId": {"name": "silo-external-id", "key": "id"}, "sessionPolicy": "{}",
               "rollout": {"stages": [1, "1%", "10%", "100%"], "maxConcurrent": 5}}),
    );
    let failures = judge(&api, &refused, &valid).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn pool(name: &str, spec: Value) -> DynamicObject {
    object("AccountPool", name, spec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_account_pools_are_refused_and_valid_ones_accepted() {
    let case = test_case().await;
    let gvk = GroupVersionKind::gvk("silo.dev", "v1alpha1", "AccountPool");
    let api: Api<DynamicObject> =
        Api::all_with(case.client.clone(), &ApiResource::from_gvk_with_plural(&gvk, "accountpools"));
    let spec = |changes: Value| {
        let mut spec =
            json!({"size": 2, "organizationalUnit": "/Tenants/Pool", "emailTemplate": "aws+pool-{index}@example.com"});
        spec.as_object_mut().unwrap().extend(changes.as_object().unwrap().clone());
        spec
    };
    let refused = [
        (
            "an email template without {index}",
            pool("p1", spec(json!({"emailTemplate": "pool@example.com"}))),
            "spec.emailTemplate must contain {index}",
        ),
        (
            "an email template that makes no email",
            pool("p2", spec(json!({"emailTemplate": "pool-{index}"}))),
            "spec.emailTemplate must make an email",
        ),
        (
            "a name template without {index}",
            pool("p3", spec(json!({"nameTemplate": "spare"}))),
            "spec.nameTemplate must contain {index}",
        ),
        (
            "the root as the pool's OU",
            pool("p4", spec(json!({"organizationalUnit": "/"}))),
            "spec.organizationalUnit must be an OU id",
        ),
        ("a size over 100", pool("p5", spec(json!({"size": 101}))), "should be less than or equal to 100"),
        (
            "a tag in Silo's namespace",
            pool("p6", spec(json!({"tags": {"silo.dev/pool": "x"}}))),
            "must not start with 'aws:' (AWS's) or 'silo.dev/'",
        ),
    ];
    let valid = pool("ok", spec(json!({"nameTemplate": "Spare {index}", "tags": {"stage": "spare"}, "paused": true})));
    let failures = judge(&api, &refused, &valid).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A Tenant or an AccountPool stays in the organization it was created in, and each
/// organization's objects can be listed alone (the controller watches them that way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_pools_cannot_move_between_organizations() {
    let case = test_case().await;
    let tenants = raw_tenants(&case);
    let gvk = GroupVersionKind::gvk("silo.dev", "v1alpha1", "AccountPool");
    let pools: Api<DynamicObject> =
        Api::all_with(case.client.clone(), &ApiResource::from_gvk_with_plural(&gvk, "accountpools"));
    let pool_spec = |organization: Value| json!({"size": 1, "organizationalUnit": "/Tenants/Pool", "emailTemplate": "aws+p-{index}@example.com", "organization": organization});
    tenants.create(&PostParams::default(), &tenant("in-prod", json!({"organization": "prod"}))).await.unwrap();
    tenants.create(&PostParams::default(), &tenant("in-default", json!({}))).await.unwrap();
    pools.create(&PostParams::default(), &pool("prod-pool", pool_spec(json!("prod")))).await.unwrap();

    let moves = [
        (&tenants, "in-prod", json!({"spec": {"organization": "staging"}}), "moved to another organization"),
        (&tenants, "in-prod", json!({"spec": {"organization": null}}), "moved to the default organization"),
        (&tenants, "in-default", json!({"spec": {"organization": "prod"}}), "moved from the default organization"),
        (&pools, "prod-pool", json!({"spec": {"organization": "staging"}}), "a pool moved"),
    ];
    for (api, name, patch, what) in moves {
        match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => panic!("{what}: accepted"),
            Err(kube::Error::Api(status)) => {
                assert!(status.message.contains("spec.organization cannot change"), "{what}: {:?}", status.message)
            }
            Err(other) => panic!("{what}: {other}"),
        }
    }
    let refused = [(
        "an organization name with capitals",
        tenant("t-org", json!({"organization": "Prod"})),
        "spec.organization must be the name of an Organization",
    )];
    let failures = judge(&tenants, &refused, &tenant("t-ok", json!({"organization": "eu-payer-2"}))).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The field selector the controller's watches use: an organization's Tenants, and the
    // default organization's (no spec.organization reads as the empty value).
    let names = |list: kube::core::ObjectList<DynamicObject>| -> Vec<String> {
        list.items.into_iter().filter_map(|o| o.metadata.name).collect()
    };
    let of = |selector: &str| kube::api::ListParams::default().fields(selector).to_owned();
    assert_eq!(names(tenants.list(&of("spec.organization=prod")).await.unwrap()), ["in-prod"]);
    assert_eq!(names(tenants.list(&of("spec.organization=")).await.unwrap()), ["in-default"]);
    assert_eq!(names(pools.list(&of("spec.organization=prod")).await.unwrap()), ["prod-pool"]);
}

fn organization(name: &str, spec: Value) -> DynamicObject {
    object("Organization", name, spec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_organizations_are_refused_and_valid_ones_accepted() {
    let case = test_case().await;
    let gvk = GroupVersionKind::gvk("silo.dev", "v1alpha1", "Organization");
    let api: Api<DynamicObject> =
        Api::all_with(case.client.clone(), &ApiResource::from_gvk_with_plural(&gvk, "organizations"));
    let role = "arn:aws:iam::111122223333:role/silo-management";
    let refused = [
        ("no management role", organization("o1", json!({})), "managementRoleArn: Required value"),
        (
            "a user rather than a role",
            organization("o2", json!({"managementRoleArn": "arn:aws:iam::111122223333:user/silo"})),
            "spec.managementRoleArn must be an IAM role ARN",
        ),
        (
            "a region that is none",
            organization("o3", json!({"managementRoleArn": role, "region": "europe-west"})),
            "spec.region must be an AWS Region",
        ),
        (
            "the root as a tenant OU root",
            organization("o4", json!({"managementRoleArn": role, "tenantOURoots": ["/"]})),
            "spec.tenantOURoots entries must be OU ids",
        ),
        (
            "the default organization's name",
            organization("default", json!({"managementRoleArn": role})),
            "metadata.name cannot be default",
        ),
        (
            "no creation slot",
            organization("o5", json!({"managementRoleArn": role, "budgets": {"creationSlots": 0}})),
            "should be greater than or equal to 1",
        ),
    ];
    let valid = organization(
        "eu-payer",
        json!({"managementRoleArn": role, "externalId": {"name": "eu-payer", "key": "id"}, "region": "eu-west-1",
               "tenantOURoots": ["/Tenants", "ou-ab12-cdef3456"], "accountLimit": 5000,
               "budgets": {"organizationsRequestsPerSecond": 10, "creationSlots": 5},
               "closure": {"allowed": true, "maxPerDay": 10}}),
    );
    let failures = judge(&api, &refused, &valid).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
