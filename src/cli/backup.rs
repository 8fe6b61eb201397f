//! `edgeplane backup` and `edgeplane restore` (SPEC §9): a consistent snapshot of the store
//! into a file, from a running server through the API or from a stopped one's data dir, and
//! a new data dir made from such a file.
//!
//! Snapshots never carry the at-rest encryption key: the edge tokens and TLS private keys in
//! them stay sealed, so a stolen backup alone does not give them away. A restored data dir
//! needs the key of the store it came from; `restore --secret-key FILE` checks that the key
//! opens the snapshot's sealed values and installs it as the new dir's `secret.key`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::client::http::Api;
use crate::secrets::SecretBox;
use crate::service::open::{SECRET_KEY_FILE, write_private_file};
use crate::store::{
    SnapshotMeta, Store, restore_snapshot, verify_snapshot, write_offline_snapshot,
};

/// The file being written, removed unless [`PrivateFile::commit`] renamed it into place.
struct PrivateFile {
    temp: PathBuf,
    target: PathBuf,
    file: Option<std::fs::File>,
}

impl PrivateFile {
    /// Creates a temporary file beside `target`, readable by its owner only.
    fn create(target: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let name = target
            .file_name()
            .with_context(|| format!("{} is not a file name", target.display()))?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}.partial", std::process::id()));
        let temp = target.with_file_name(temp_name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .with_context(|| format!("cannot create {}", temp.display()))?;
        Ok(Self {
            temp,
            target: target.to_path_buf(),
            file: Some(file),
        })
    }

    fn file(&mut self) -> anyhow::Result<&mut std::fs::File> {
        self.file.as_mut().context("backup file already closed")
    }

    /// Makes the file durable, checks it with `verify`, and renames it to its target.
    fn commit(
        mut self,
        verify: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<PathBuf> {
        if let Some(mut file) = self.file.take() {
            file.flush()
                .and_then(|_| file.sync_all())
                .with_context(|| format!("cannot write {}", self.temp.display()))?;
        }
        verify(&self.temp)?;
        std::fs::rename(&self.temp, &self.target)
            .with_context(|| format!("cannot rename into {}", self.target.display()))?;
        if let Some(parent) = self.target.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::File::open(parent)
                .and_then(|dir| dir.sync_all())
                .with_context(|| format!("cannot sync {}", parent.display()))?;
        }
        Ok(self.target.clone())
    }
}

impl Drop for PrivateFile {
    fn drop(&mut self) {
        if self.temp.exists() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

fn verify_file(path: &Path) -> anyhow::Result<SnapshotMeta> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(verify_snapshot(&mut file)?)
}

/// Offline backup of the store in `data_dir`; refuses while a server holds it.
pub fn backup_offline(data_dir: &Path, out: &Path) -> anyhow::Result<SnapshotMeta> {
    let mut file = PrivateFile::create(out)?;
    let meta = write_offline_snapshot(data_dir, &mut std::io::BufWriter::new(file.file()?))?;
    file.commit(|_| Ok(()))?;
    Ok(meta)
}

/// Online backup through `GET /api/v1/cluster/snapshot`; the file is checked whole (checksum
/// and content digest) before it takes its name, so a cut-off transfer leaves nothing.
pub async fn backup_online(
    url: &str,
    token: &str,
    ca_file: Option<&Path>,
    out: &Path,
) -> anyhow::Result<SnapshotMeta> {
    let api = Api::new(url, Some(token.to_string()), ca_file)?;
    let mut response = api.get_stream(&["cluster", "snapshot"]).await?;
    let mut file = PrivateFile::create(out)?;
    {
        let mut writer = std::io::BufWriter::new(file.file()?);
        while let Some(chunk) = response
            .chunk()
            .await
            .with_context(|| format!("the snapshot transfer from {} broke off", api.base()))?
        {
            writer
                .write_all(&chunk)
                .with_context(|| format!("cannot write {}", out.display()))?;
        }
        writer
            .flush()
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    let mut meta = None;
    file.commit(|path| {
        meta = Some(verify_file(path).context("the snapshot received is not whole")?);
        Ok(())
    })?;
    meta.context("snapshot not verified")
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub meta: SnapshotMeta,
    /// Whether the snapshot holds sealed values (edge tokens, TLS keys).
    pub has_sealed_values: bool,
    /// Whether a key checked against them was installed as the dir's `secret.key`.
    pub key_installed: bool,
}

/// Makes `data_dir` (absent or empty) from the snapshot in `file`. With `secret_key` (a file
/// holding the source's base64 key), the key must open the snapshot's sealed values and is
/// installed beside the store; a key that does not leaves nothing behind.
pub fn restore(
    data_dir: &Path,
    file: &Path,
    secret_key: Option<&Path>,
) -> anyhow::Result<Restored> {
    let key = secret_key
        .map(|path| -> anyhow::Result<(String, SecretBox)> {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let key = SecretBox::from_base64(text.trim())
                .with_context(|| format!("{} is not an encryption key", path.display()))?;
            Ok((text.trim().to_string(), key))
        })
        .transpose()?;
    let mut input = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?,
    );
    let existed = data_dir.exists();
    let meta = restore_snapshot(data_dir, &mut input)?;
    let checked = (|| -> anyhow::Result<(bool, bool)> {
        let sealed = {
            let store = Store::open(data_dir)?;
            first_sealed_value(&store)?
        };
        let Some((text, key)) = &key else {
            return Ok((sealed.is_some(), false));
        };
        if let Some(sealed) = &sealed
            && key.open(sealed).is_err()
        {
            bail!(
                "the key in {} does not open the snapshot's sealed values: \
                 give the key of the store the snapshot was taken from",
                secret_key
                    .map(Path::display)
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            );
        }
        write_private_file(&data_dir.join(SECRET_KEY_FILE), text)?;
        Ok((sealed.is_some(), true))
    })();
    match checked {
        Ok((has_sealed_values, key_installed)) => Ok(Restored {
            meta,
            has_sealed_values,
            key_installed,
        }),
        Err(error) => {
            remove_restored(data_dir, existed);
            Err(error)
        }
    }
}

/// Takes a refused restore back out of the directory it was made in.
fn remove_restored(data_dir: &Path, existed: bool) {
    if existed {
        if let Ok(entries) = std::fs::read_dir(data_dir) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    } else {
        let _ = std::fs::remove_dir_all(data_dir);
    }
}

/// One sealed value of the store, if it holds any: an edge's agent token, or a TLS key in a
/// configuration version.
fn first_sealed_value(store: &Store) -> anyhow::Result<Option<String>> {
    let reader = store.reader()?;
    if let Some(edge) = reader
        .edges()?
        .into_iter()
        .find(|e| SecretBox::is_sealed(&e.token_sealed))
    {
        return Ok(Some(edge.token_sealed));
    }
    for configuration in reader.configurations()? {
        for version in reader.versions(&configuration.configuration_id)? {
            if let Some(sealed) = sealed_in(&version.content) {
                return Ok(Some(sealed));
            }
        }
    }
    Ok(None)
}

fn sealed_in(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(text) if SecretBox::is_sealed(text) => Some(text.clone()),
        serde_json::Value::Array(items) => items.iter().find_map(sealed_in),
        serde_json::Value::Object(fields) => fields.values().find_map(sealed_in),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_no_file_and_a_committed_one_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("backup.snapshot");
        {
            let mut file = PrivateFile::create(&target).unwrap();
            file.file().unwrap().write_all(b"partial").unwrap();
            let refused = file.commit(|_| bail!("not whole"));
            assert!(refused.is_err());
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let mut file = PrivateFile::create(&target).unwrap();
        file.file().unwrap().write_all(b"whole").unwrap();
        file.commit(|_| Ok(())).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"whole");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
