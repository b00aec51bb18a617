//! The OpenAPI documents this server serves: the official files, amended to describe what the
//! server really answers. Every operation also documents the statuses the layers in front of
//! the handlers produce (400 for a bad `x-correlator`, 401, 403, 413, 414, 415, 429, 500; 406 on
//! v0), and the v0 document's errors use the seed's error model `{code, message, description}`
//! that the v0 facade answers with. The official files in `openapi/` stay untouched.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

const QOD_V1: &str = include_str!("../../openapi/quality-on-demand_v1.1.0.yaml");
const PROFILES_V1: &str = include_str!("../../openapi/qos-profiles_v1.1.0.yaml");
const QOD_V0: &str = include_str!("../../openapi/qod-api_v0.10.1.yaml");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    QodV1,
    ProfilesV1,
    QodV0,
}

/// The served YAML text, built once.
pub fn served(doc: Document) -> &'static str {
    static CACHE: [OnceLock<String>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let (slot, official) = match doc {
        Document::QodV1 => (&CACHE[0], QOD_V1),
        Document::ProfilesV1 => (&CACHE[1], PROFILES_V1),
        Document::QodV0 => (&CACHE[2], QOD_V0),
    };
    slot.get_or_init(|| {
        let mut value: Value =
            serde_norway::from_str(official).expect("the bundled OpenAPI files are valid YAML");
        amend(&mut value, doc == Document::QodV0);
        serde_norway::to_string(&value).expect("a JSON value serialises as YAML")
    })
}

const ERROR_REF: &str = "#/components/schemas/ErrorInfo";
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Adds what the server answers to the document `doc` (the v0 one when `v0`).
pub fn amend(doc: &mut Value, v0: bool) {
    if v0 {
        doc["components"]["schemas"]["ErrorInfo"] = seed_error_model();
        if let Some(responses) = doc["components"]["responses"].as_object_mut() {
            for response in responses.values_mut() {
                use_seed_errors(response);
            }
        }
    }
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        for method in METHODS {
            let Some(operation) = item.get_mut(method).and_then(Value::as_object_mut) else {
                continue;
            };
            let mut statuses = vec![400, 401, 403, 414, 429, 500];
            if operation.contains_key("requestBody") {
                statuses.extend([413, 415]);
            }
            // A path with an id, and v0's create (an unknown device: code 60).
            if path.contains('{') || (v0 && path == "/sessions" && method == "post") {
                statuses.push(404);
            }
            if v0 {
                statuses.push(406);
            }
            let responses = operation
                .entry("responses")
                .or_insert_with(|| Value::Object(Map::new()));
            let Some(responses) = responses.as_object_mut() else {
                continue;
            };
            for (status, response) in responses.iter_mut() {
                if v0 && status.as_str() >= "400" {
                    use_seed_errors(response);
                }
            }
            for status in statuses {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| error_response(status));
            }
            if operation.get("operationId").and_then(Value::as_str) == Some("createSession")
                && let Some(created) = operation
                    .get_mut("responses")
                    .and_then(|r| r.get_mut("201"))
                    .and_then(Value::as_object_mut)
            {
                created.insert("links".into(), session_links());
            }
        }
    }
}

/// Where a created session's id leads: what clients (and stateful API testers) follow.
fn session_links() -> Value {
    let to = |operation: &str| json!({"operationId": operation, "parameters": {"sessionId": "$response.body#/sessionId"}});
    json!({
        "GetSession": to("getSession"),
        "ExtendSession": to("extendQosSessionDuration"),
        "DeleteSession": to("deleteSession"),
    })
}

/// The seed's error body (Orange QoD 0.10.1).
fn seed_error_model() -> Value {
    json!({
        "type": "object",
        "description": "Error body of this server's v0 API: a numeric code, its message and a description of the case.",
        "properties": {
            "code": {"type": "integer", "description": "Numeric error code"},
            "message": {"type": "string", "description": "Message of the code"},
            "description": {"type": "string", "description": "What went wrong in this case"}
        },
        "required": ["code", "message", "description"]
    })
}

/// A v0 error response (inline, not a reference) whose body is the seed's error model.
fn use_seed_errors(response: &mut Value) {
    if response.get("$ref").is_some() {
        return;
    }
    if let Some(content) = response.get_mut("content").and_then(Value::as_object_mut) {
        content.clear();
        content.insert(
            "application/json".into(),
            json!({"schema": {"$ref": ERROR_REF}}),
        );
    }
}

fn error_response(status: u16) -> Value {
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut response = json!({
        "description": format!("{reason} (answered by this server before or around the operation)"),
        "content": {"application/json": {"schema": {"$ref": ERROR_REF}}}
    });
    if status == 429 {
        response["headers"] = json!({"Retry-After": {
            "description": "Seconds to wait before trying again",
            "schema": {"type": "integer"}
        }});
    }
    if status == 401 {
        response["headers"] = json!({"WWW-Authenticate": {
            "description": "Bearer challenge (RFC 6750)",
            "schema": {"type": "string"}
        }});
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(doc: Document) -> Value {
        serde_norway::from_str(served(doc)).unwrap()
    }

    #[test]
    fn served_documents_keep_every_official_answer_and_add_the_servers_own() {
        for (doc, official) in [
            (Document::QodV1, QOD_V1),
            (Document::ProfilesV1, PROFILES_V1),
            (Document::QodV0, QOD_V0),
        ] {
            let before: Value = serde_norway::from_str(official).unwrap();
            let after = load(doc);
            for (path, item) in before["paths"].as_object().unwrap() {
                for method in METHODS {
                    let Some(op) = item.get(method) else { continue };
                    let served = &after["paths"][path][method]["responses"];
                    for status in op["responses"].as_object().unwrap().keys() {
                        assert!(served.get(status).is_some(), "{path} {method} {status}");
                    }
                    for status in ["401", "403", "414", "429", "500"] {
                        assert!(served.get(status).is_some(), "{path} {method} {status}");
                    }
                    if op.get("requestBody").is_some() {
                        assert!(served.get("415").is_some(), "{path} {method}");
                        assert!(served.get("413").is_some(), "{path} {method}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_v0_document_describes_the_seed_error_model() {
        let v0 = load(Document::QodV0);
        let error = &v0["components"]["schemas"]["ErrorInfo"];
        assert_eq!(error["properties"]["code"]["type"], "integer");
        assert!(error["required"].to_string().contains("description"));
        assert!(!served(Document::QodV0).contains("PERMISSION_DENIED"));
        for doc in [&v0, &load(Document::QodV1)] {
            let created = &doc["paths"]["/sessions"]["post"]["responses"]["201"];
            assert_eq!(
                created["links"]["GetSession"]["parameters"]["sessionId"],
                "$response.body#/sessionId"
            );
        }
        let v1 = load(Document::QodV1);
        assert_eq!(
            v1["components"]["schemas"]["ErrorInfo"]["properties"]["code"]["type"],
            "string"
        );
    }
}
