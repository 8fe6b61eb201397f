//! The HTTP API (SPEC §5). The only module that knows HTTP and axum: handlers parse and
//! authorise a request, call one use case (`service`) or read the store, and turn every
//! failure into the one error shape.

pub mod configurations;
pub mod deployments;
pub mod edges;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod state;
pub mod system;
pub mod users;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use tower_http::catch_panic::CatchPanicLayer;

pub use error::ApiError;
pub use state::{ApiParts, ApiState};

/// Reads one object by id through `get`, answering 404 naming `what` when it is missing.
pub(crate) async fn find<T: Send + 'static>(
    state: &ApiState,
    what: &'static str,
    id: String,
    get: fn(&crate::store::Reader, &str) -> Result<Option<T>, crate::store::StoreError>,
) -> Result<T, ApiError> {
    let shown = id.clone();
    state
        .store()
        .read(move |reader| get(reader, &id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{what} '{shown}' not found")))
}

/// The whole API with its middleware, ready to serve.
pub fn router(state: ApiState) -> Router {
    let body_limit = state.settings().server.max_body_bytes;
    let timeout = state.settings().server.request_timeout;
    let api = Router::new()
        .route("/authentication/login", post(users::login))
        .route("/users", post(users::create).get(users::list))
        .route("/users/{username}", delete(users::delete))
        .route("/users/{username}/password", put(users::set_password))
        .route(
            "/configurations",
            post(configurations::create).get(configurations::list),
        )
        .route(
            "/configurations/validate",
            post(configurations::validate_unsaved),
        )
        .route(
            "/configurations/{id}",
            get(configurations::get)
                .put(configurations::update)
                .delete(configurations::delete),
        )
        .route(
            "/configurations/{id}/validate",
            post(configurations::validate_stored),
        )
        .route(
            "/configurations/{id}/approve",
            post(configurations::approve),
        )
        .route(
            "/configurations/{id}/versions",
            get(configurations::versions),
        )
        .route(
            "/configurations/{id}/versions/{version}",
            get(configurations::version),
        )
        .route(
            "/configurations/{id}/versions/{version}/tags/{tag}",
            put(configurations::tag),
        )
        .route("/configurations/{id}/diff", get(configurations::diff))
        .route(
            "/configurations/{id}/conflicts",
            get(configurations::conflicts),
        )
        .route("/schemas", get(system::schemas))
        .route("/schemas/{type}", get(configurations::schema))
        .route("/edge-locations", post(edges::create).get(edges::list))
        .route(
            "/edge-locations/{id}",
            get(edges::get).put(edges::update).delete(edges::delete),
        )
        .route("/edge-locations/{id}/heartbeat", post(edges::heartbeat))
        .route("/edge-locations/{id}/token", post(edges::rotate_token))
        .route(
            "/edge-locations/{id}/quarantine",
            delete(edges::clear_quarantine),
        )
        .route(
            "/configurations/{id}/versions/{version}/deploy",
            post(deployments::deploy_version),
        )
        .route(
            "/deployments",
            post(deployments::create).get(deployments::list),
        )
        .route("/deployments/{id}", get(deployments::get))
        .route(
            "/deployments/{id}/edge-locations",
            get(deployments::edge_locations),
        )
        .route("/deployments/{id}/events", get(deployments::events))
        .route("/deployments/{id}/promote", post(deployments::promote))
        .route("/deployments/{id}/pause", post(deployments::pause))
        .route("/deployments/{id}/resume", post(deployments::resume))
        .route("/deployments/{id}/rollback", post(deployments::rollback))
        .route(
            "/deployments/{id}/approve-next-region",
            post(deployments::approve_next_region),
        )
        .route(
            "/freeze",
            post(deployments::set_freeze)
                .get(deployments::get_freeze)
                .delete(deployments::lift_freeze),
        )
        .route("/edge-locations/{id}/metrics", get(metrics::edge))
        .route("/metrics/edge-locations/{id}", get(metrics::edge))
        .route("/metrics/configurations/{id}", get(metrics::configuration))
        .route("/metrics/regions/{region}", get(metrics::region))
        .route("/metrics/deployments/{id}", get(metrics::deployment))
        .route(
            "/metrics/thresholds",
            get(system::get_thresholds).put(system::set_thresholds),
        )
        .route("/audit", get(system::audit))
        .route("/openapi.json", get(openapi::document));

    Router::new()
        .nest("/api/v1", api)
        .route("/health", get(system::health))
        .route("/ready", get(system::ready))
        .route("/metrics", get(system::prometheus))
        .merge(crate::console::router())
        .fallback(system::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::guard,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::new())
        .with_state(state)
}
