//! Validation of response bodies against the QoD 0.10.1 OpenAPI file the server ships, and
//! against the seed's error model (which replaces that file's ErrorInfo for v0).
#![allow(dead_code)]

use serde_json::{Value, json};

pub struct V0Contract {
    document: Value,
}

impl V0Contract {
    pub fn load() -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/qod-api_v0.10.1.yaml");
        let text = std::fs::read_to_string(path).expect("the v0 OpenAPI file");
        let document: Value = serde_norway::from_str(&text).expect("valid YAML");
        Self { document }
    }

    /// Panics with every violation if `body` does not match `#/components/schemas/{schema}`.
    pub fn assert_schema(&self, schema: &str, body: &Value) {
        self.assert_ref(
            &json!({ "$ref": format!("#/components/schemas/{schema}") }),
            body,
        );
    }

    /// Same, for a schema that refers into the document (e.g. an array of a component).
    pub fn assert_ref(&self, schema: &Value, body: &Value) {
        // The whole document is the root, so that its `#/components/...` references resolve;
        // its other top-level members are not schema keywords and are ignored.
        let mut root = self.document.clone();
        for (k, v) in schema.as_object().expect("a schema object") {
            root[k] = v.clone();
        }
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .build(&root)
            .expect("the contract compiles as a JSON schema");
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "body does not match {schema}: {errors:?}\n{body:#}"
        );
    }
}

/// The seed's error body: `{code: integer, message, description}` and nothing else.
pub fn assert_seed_error(body: &Value, code: i64) {
    let schema = json!({
        "type": "object",
        "required": ["code", "message", "description"],
        "additionalProperties": false,
        "properties": {
            "code": {"type": "integer"},
            "message": {"type": "string", "minLength": 1},
            "description": {"type": "string", "minLength": 1}
        }
    });
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(body), "not a seed error body: {body}");
    assert_eq!(body["code"], code, "{body}");
}
