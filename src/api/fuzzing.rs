//! Generators for the parser property tests: arbitrary JSON, and bodies close to valid ones
//! (right field names, values of random types and edge values) so that the deep branches of
//! the parsers are reached. `QOD_PROPTEST_CASES` sets the number of cases (CI runs more).

use proptest::prelude::*;
use serde_json::{Map, Value, json};

pub fn cases() -> u32 {
    std::env::var("QOD_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Any JSON value, nested a few levels.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,20}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Strings a parser may trip on: edge numbers, addresses, prefixes, unicode, long runs.
fn tricky_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("+33612345678".to_owned()),
        Just("+0612345678".to_owned()),
        Just("198.51.100.1".to_owned()),
        Just("198.51.100.0/24".to_owned()),
        Just("198.51.100.0/33".to_owned()),
        Just("2001:db8::1".to_owned()),
        Just("2001:db8::/129".to_owned()),
        Just("::ffff:1.2.3.4".to_owned()),
        Just("https://sink.example/hook".to_owned()),
        Just("http://sink.example/hook".to_owned()),
        Just("https://".to_owned()),
        Just("QOS_E".to_owned()),
        Just("ACCESSTOKEN".to_owned()),
        Just("2026-11-26T12:00:00Z".to_owned()),
        Just("é".repeat(300)),
        "[0-9./:a-fA-F+]{0,45}",
        ".{0,300}",
    ]
}

fn tricky_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(1)),
        Just(json!(65535)),
        Just(json!(65536)),
        Just(json!(i64::from(i32::MAX))),
        Just(json!(i64::MAX)),
        Just(json!(u64::MAX)),
        Just(json!(1.5)),
        Just(json!(-1e308)),
        any::<i64>().prop_map(Value::from),
    ]
}

/// A value for a field: usually of a plausible type, sometimes anything.
fn field() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => tricky_string().prop_map(Value::from),
        3 => tricky_number(),
        1 => json_value(),
    ]
}

fn object(keys: &'static [&'static str], value: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop::collection::vec((prop::sample::select(keys), value), 0..=keys.len())
        .prop_map(|pairs| {
            Value::Object(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect::<Map<_, _>>(),
            )
        })
        .boxed()
}

fn ports() -> BoxedStrategy<Value> {
    let range = object(&["from", "to"], tricky_number().boxed());
    object(
        &["ranges", "ports"],
        prop_oneof![
            prop::collection::vec(range, 0..4).prop_map(Value::from),
            prop::collection::vec(tricky_number(), 0..4).prop_map(Value::from),
            field(),
        ]
        .boxed(),
    )
}

/// A create body (v1 or v0 field names) with each field present or not and near-valid values.
pub fn near_valid_create() -> impl Strategy<Value = Value> {
    let ipv4 = object(
        &["publicAddress", "privateAddress", "publicPort"],
        field().boxed(),
    );
    let device = object(
        &[
            "phoneNumber",
            "networkAccessIdentifier",
            "ipv4Address",
            "ipv6Address",
        ],
        prop_oneof![field(), ipv4].boxed(),
    );
    let server = object(&["ipv4Address", "ipv6Address"], field().boxed());
    let credential = object(
        &[
            "credentialType",
            "accessToken",
            "accessTokenExpiresUtc",
            "accessTokenType",
        ],
        field().boxed(),
    );
    let webhook = object(
        &["notificationUrl", "notificationAuthToken"],
        field().boxed(),
    );
    (
        prop::option::of(device),
        prop::option::of(server),
        prop::option::of(ports()),
        prop::option::of(ports()),
        prop::option::of(field()),
        prop::option::of(field()),
        prop::option::of(field()),
        prop::option::of(credential),
        prop::option::of(webhook),
    )
        .prop_map(
            |(device, server, dports, sports, profile, duration, sink, cred, webhook)| {
                let mut body = Map::new();
                let mut put = |k: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        body.insert(k.to_owned(), v);
                    }
                };
                put("device", device);
                put("applicationServer", server);
                put("devicePorts", dports);
                put("applicationServerPorts", sports);
                put("qosProfile", profile);
                put("duration", duration);
                put("sink", sink);
                put("sinkCredential", cred);
                put("webhook", webhook);
                Value::Object(body)
            },
        )
}
