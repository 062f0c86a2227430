//! Liveness and readiness for orchestrators.

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::telemetry::RequestId;
use crate::upstream::QpienClient;

/// Health report.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok` for liveness, `ready` for readiness.
    #[schema(example = "ready")]
    status: &'static str,
    /// `service` (the facade holds its own Qpien credentials) or `pass-through`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "service")]
    mode: Option<&'static str>,
}

/// Liveness
///
/// Answers 200 as long as the process serves HTTP. It does not call Qpien.
#[utoipa::path(
    tag = "Operations",
    operation_id = "checkLiveness",
    responses((status = 200, description = "The process is alive.", body = Health))
)]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok",
        mode: None,
    })
}

/// Readiness
///
/// Answers 200 when Qpien answers GraphQL and, in service mode, the facade holds a valid
/// access token (it fetches one if needed); 503 otherwise.
#[utoipa::path(
    tag = "Operations",
    operation_id = "checkReadiness",
    responses((status = 200, description = "Ready to serve.", body = Health))
)]
#[get("/readyz")]
pub async fn readyz(
    client: web::Data<QpienClient>,
    request_id: web::ReqData<RequestId>,
) -> Result<HttpResponse, ApiError> {
    client
        .check_ready(&request_id.0)
        .await
        .map_err(|e| ApiError::NotReady(format!("Qpien is not usable: {e}")))?;
    let mode = if client.is_service_mode() {
        "service"
    } else {
        "pass-through"
    };
    if client.holds_token() == Some(false) {
        return Err(ApiError::NotReady(
            "no valid Qpien access token is held".into(),
        ));
    }
    Ok(HttpResponse::Ok().json(Health {
        status: "ready",
        mode: Some(mode),
    }))
}
