//! The HTTP API (SPEC §5). The only module that knows HTTP and axum: handlers parse and
//! authorise a request, call one use case (`service`) or read the store, and turn every
//! failure into the one error shape.

pub mod backup;
pub mod cluster;
pub mod configurations;
mod connections;
pub mod deployments;
pub mod edges;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod state;
pub mod streams;
pub mod system;
pub mod users;
pub mod views;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

/// Every route of the API with its documentation: each handler's `#[utoipa::path]` gives
/// both its place in the router and its operation in the OpenAPI document.
pub fn routes() -> OpenApiRouter<ApiState> {
    let api = OpenApiRouter::new()
        .routes(routes!(users::login))
        .routes(routes!(users::create, users::list))
        .routes(routes!(users::delete))
        .routes(routes!(users::set_password))
        .routes(routes!(configurations::create, configurations::list))
        .routes(routes!(configurations::validate_unsaved))
        .routes(routes!(
            configurations::get,
            configurations::update,
            configurations::delete
        ))
        .routes(routes!(configurations::validate_stored))
        .routes(routes!(configurations::approve))
        .routes(routes!(configurations::versions))
        .routes(routes!(configurations::version))
        .routes(routes!(configurations::tag))
        .routes(routes!(configurations::diff))
        .routes(routes!(configurations::conflicts))
        .routes(routes!(system::schemas))
        .routes(routes!(configurations::schema))
        .routes(routes!(edges::create, edges::list))
        .routes(routes!(edges::get, edges::update, edges::delete))
        .routes(routes!(edges::heartbeat))
        .routes(routes!(edges::rotate_token))
        .routes(routes!(edges::clear_quarantine))
        .routes(routes!(deployments::deploy_version))
        .routes(routes!(deployments::create, deployments::list))
        .routes(routes!(deployments::get))
        .routes(routes!(deployments::edge_locations))
        .routes(routes!(deployments::events))
        .routes(routes!(deployments::promote))
        .routes(routes!(deployments::pause))
        .routes(routes!(deployments::resume))
        .routes(routes!(deployments::rollback))
        .routes(routes!(deployments::approve_next_region))
        .routes(routes!(
            deployments::set_freeze,
            deployments::get_freeze,
            deployments::lift_freeze
        ))
        .routes(routes!(metrics::edge_of_location))
        .routes(routes!(metrics::edge))
        .routes(routes!(metrics::configuration))
        .routes(routes!(metrics::region))
        .routes(routes!(metrics::deployment))
        .routes(routes!(system::get_thresholds, system::set_thresholds))
        .routes(routes!(system::audit))
        .routes(routes!(cluster::view))
        .routes(routes!(cluster::promote))
        .routes(routes!(cluster::log))
        .routes(routes!(cluster::status))
        .routes(routes!(cluster::copy))
        .routes(routes!(cluster::secret_key))
        .routes(routes!(backup::snapshot))
        .routes(routes!(openapi::document));

    OpenApiRouter::with_openapi(openapi::base())
        .nest("/api/v1", api)
        .routes(routes!(system::health))
        .routes(routes!(system::ready))
        .routes(routes!(system::prometheus))
}

/// Serves the API (with the console) on `listener` until `shutdown` resolves, then lets the
/// requests in flight finish. Each request sees its client's address. Connections are
/// capped and timed out by `[server]` (see `connections`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = connections::Limits::of(&state.settings().server);
    connections::serve(
        listener,
        router(state),
        connections::Transport::Plain,
        limits,
        shutdown,
    )
    .await
}

/// What a TLS connection's client proved: whether it presented a certificate signed by
/// `server.tls_client_ca`, and whether edges must. Absent on plain HTTP.
#[derive(Clone, Copy, Debug)]
pub struct PeerCertificate {
    pub presented: bool,
    pub required_for_edges: bool,
}

/// [`serve`] over TLS: handshakes are done by `acceptor` (which SIGHUP reloads) and each
/// request also sees its connection's [`PeerCertificate`].
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: crate::protocol::tls::Acceptor,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = connections::Limits::of(&state.settings().server);
    connections::serve(
        listener,
        router(state),
        connections::Transport::Tls(acceptor),
        limits,
        shutdown,
    )
    .await
}

/// The whole API with its middleware, ready to serve.
pub fn router(state: ApiState) -> Router {
    let body_limit = state.settings().server.max_body_bytes;
    let timeout = state.settings().server.request_timeout;
    let (router, _) = routes().split_for_parts();
    router
        .merge(crate::console::router())
        // Before the fallback, so that only matched routes record their template.
        .layer(axum::middleware::from_fn(middleware::record_route))
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
