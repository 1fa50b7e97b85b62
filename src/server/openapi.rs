//! The OpenAPI document of `serve`, generated from the handlers' own
//! `#[utoipa::path]` descriptions (routes and documented statuses cannot
//! drift from the code), completed with what every admin route shares:
//! bearer tokens, the JSON error body, and the statuses the shared layers
//! add (401 and 403 from the token check, 500 from the error path).

use serde_json::{json, Value};
use utoipa::openapi::OpenApi;

/// The document as served at `/api/v1/openapi.json`.
pub(crate) fn document(api: OpenApi, inbound: OpenApi) -> String {
    let mut doc = serde_json::to_value(api.merge_from(inbound)).unwrap_or_else(|_| json!({}));
    doc["openapi"] = json!("3.1.0");
    doc["info"] = json!({
        "title": "segsync",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "The admin REST API of segsync serve (/api/v1, bearer tokens once any exists) and the inbound endpoints (/v1: Cohort Sync with workspace Basic auth, Personas with a write key). Generated from the handlers."
    });
    let error = json!({"$ref": "#/components/responses/error"});
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(ops) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in ops.iter_mut() {
                let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                    continue;
                };
                // Handlers list their statuses with a description; the error
                // ones carry the shared JSON body.
                for (status, r) in responses.iter_mut() {
                    if status.as_str() >= "400" {
                        if let Some(desc) = r.get("description").cloned() {
                            *r = json!({
                                "description": desc,
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                            });
                        }
                    }
                }
                if path.starts_with("/api/v1") {
                    responses.entry("401").or_insert(error.clone());
                    if method != "get" {
                        responses.entry("403").or_insert(error.clone());
                    }
                    responses.entry("500").or_insert(error.clone());
                }
            }
        }
    }
    let components = doc
        .as_object_mut()
        .map(|d| d.entry("components").or_insert(json!({})));
    if let Some(c) = components {
        c["responses"]["error"] = json!({
            "description": "an error, its reason in words",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        });
        c["schemas"]["Error"] = json!({
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}}
        });
        c["securitySchemes"]["bearer"] = json!({
            "type": "http",
            "scheme": "bearer",
            "description": "`ssk_…` tokens from `segsync token create`; required once any token exists"
        });
    }
    doc["security"] = json!([{"bearer": []}, {}]);
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}
