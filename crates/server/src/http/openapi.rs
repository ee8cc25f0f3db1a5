//! `GET /api/v1/openapi.json`: the API described from the handlers' own annotations
//! (`#[utoipa::path]` beside each handler), so the document changes with the code. The property-
//! based API test (schemathesis, in `scripts/test.sh`) generates its requests from it.

use super::{alerts, cdrs, charts, dto, events, live, metrics, webhooks};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "callpulse",
        description = "Telephony monitoring for LiveKit: CDRs, metrics, live state and alerts. \
                       Reading needs an API token (`Authorization: Bearer`) unless the server \
                       listens on loopback only; webhooks take LiveKit's signature and \
                       application events their own token. Every error is \
                       `{\"error\", \"detail\"}`."
    ),
    paths(
        cdrs::list_cdrs,
        cdrs::get_cdr,
        metrics::get_metrics,
        metrics::get_summary,
        charts::get_chart,
        alerts::get_alerts,
        live::get_live,
        super::ingest_stats,
        super::healthz,
        webhooks::receive_livekit_webhook,
        events::receive_app_events,
    ),
    components(schemas(dto::CdrDto, super::ErrorBody)),
    modifiers(&ApiToken),
    security(("api_token" = []))
)]
pub struct ApiDoc;

struct ApiToken;

impl Modify for ApiToken {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_read_and_ingest_route_is_described() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for path in [
            "/api/v1/cdrs",
            "/api/v1/cdrs/{call_id}",
            "/api/v1/metrics",
            "/api/v1/summary",
            "/api/v1/charts/{file}",
            "/api/v1/alerts",
            "/api/v1/live",
            "/api/v1/ingest",
            "/healthz",
            "/webhooks/livekit",
            "/api/v1/events",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} is missing");
        }
        assert_eq!(
            doc["components"]["schemas"]["ErrorBody"]["required"],
            serde_json::json!(["error", "detail"])
        );
        let list = &doc["paths"]["/api/v1/cdrs"]["get"]["parameters"];
        assert!(
            list.as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "cursor"),
            "{list}"
        );
    }
}
