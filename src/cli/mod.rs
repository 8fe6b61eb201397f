//! Commands beside the server: the command-line client of the HTTP API, offline ones that
//! work on the data dir with the server stopped, and the self-contained demo.

pub mod backup;
pub mod client;
pub mod demo;
pub mod users;

/// `edgeplane promote --data-dir DIR`: makes the stopped node at the data dir the primary
/// at its term + 1; it starts as primary from then on.
pub fn promote(settings: &crate::config::Settings) -> anyhow::Result<crate::cluster::Promoted> {
    let data_dir = &settings.server.data_dir;
    if !data_dir.join(crate::store::STORE_FILE).exists() {
        anyhow::bail!("{} holds no store", data_dir.display());
    }
    let store = crate::store::Store::open(data_dir)?;
    Ok(crate::cluster::promote_offline(
        &store,
        &settings.cluster,
        data_dir,
    )?)
}
