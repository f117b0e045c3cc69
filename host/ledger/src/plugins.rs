//! The plugin registry: merchants' component bytes (by SHA-256), numbered
//! versions with their configuration, which version is active, and the
//! precompiled-code cache. It lives in the ledger's file so that one file
//! holds everything a restart needs.
//!
//! Activations form a stack per merchant: activating pushes, rolling back
//! pops back to the version active before. Every change is one transaction.

use std::collections::BTreeMap;
use std::fmt;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmpay_domain::{MerchantId, PluginRef};

use crate::{Ledger, LedgerError, Reader};

/// One stored version of a merchant's plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginVersionInfo {
    pub merchant: MerchantId,
    /// Per merchant, from 1.
    pub version: u32,
    /// Lower-case hex SHA-256 of the component bytes.
    pub sha256: String,
    pub size_bytes: u64,
    pub config: BTreeMap<String, String>,
    pub uploaded_at_ms: i64,
    pub active: bool,
}

impl PluginVersionInfo {
    /// The reference recorded with every ledger entry this version decides.
    pub fn plugin_ref(&self) -> PluginRef {
        PluginRef {
            version: self.version,
            sha256: self.sha256.clone(),
        }
    }
}

impl fmt::Display for PluginVersionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} v{} {} ({} bytes, uploaded {}){}",
            self.merchant,
            self.version,
            self.sha256,
            self.size_bytes,
            self.uploaded_at_ms,
            if self.active { " active" } else { "" }
        )
    }
}

impl Ledger {
    /// Stores a component as the merchant's next version (not active yet).
    /// `sha256` must be the bytes' hash: a mismatch is refused, so the hash
    /// recorded with ledger entries always names these exact bytes.
    pub fn plugin_store(
        &mut self,
        merchant: &MerchantId,
        wasm: &[u8],
        sha256: &str,
        config: &BTreeMap<String, String>,
        at_ms: i64,
    ) -> Result<PluginVersionInfo, LedgerError> {
        let computed = hex::encode(Sha256::digest(wasm));
        if !computed.eq_ignore_ascii_case(sha256) {
            return Err(LedgerError::PluginHashMismatch {
                given: sha256.to_owned(),
                computed,
            });
        }
        let config_json = serde_json::to_string(config).map_err(LedgerError::corrupt)?;
        let tx = self
            .conn_mut()
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT OR IGNORE INTO plugin_blobs (sha256, wasm) VALUES (?1, ?2)",
            params![computed, wasm],
        )?;
        let version: i64 = tx.query_row(
            "SELECT coalesce(max(version), 0) + 1 FROM plugin_versions WHERE merchant = ?1",
            params![merchant.as_str()],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO plugin_versions (merchant, version, sha256, size, config, uploaded_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                merchant.as_str(),
                version,
                computed,
                wasm.len() as i64,
                config_json,
                at_ms
            ],
        )?;
        let info = version_info(&tx, merchant, version)?;
        tx.commit()?;
        info.ok_or_else(|| LedgerError::corrupt("stored plugin version vanished"))
    }

    /// Caches precompiled code for a component under an engine's
    /// compatibility hash (replacing an older entry for the same pair).
    pub fn plugin_store_artifact(
        &mut self,
        sha256: &str,
        engine_hash: &str,
        artifact: &[u8],
    ) -> Result<(), LedgerError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO plugin_artifacts (sha256, engine_hash, artifact) VALUES (?1, ?2, ?3)",
            params![sha256, engine_hash, artifact],
        )?;
        Ok(())
    }

    /// Makes `version` the merchant's active plugin, atomically; the version
    /// active before stays on the stack for [`Ledger::plugin_rollback`].
    /// Activating the active version changes nothing.
    pub fn plugin_activate(
        &mut self,
        merchant: &MerchantId,
        version: u32,
        at_ms: i64,
    ) -> Result<PluginVersionInfo, LedgerError> {
        let tx = self
            .conn_mut()
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if version_info(&tx, merchant, i64::from(version))?.is_none() {
            return Err(LedgerError::PluginVersionNotFound {
                merchant: merchant.clone(),
                version,
            });
        }
        if active_version(&tx, merchant)? != Some(i64::from(version)) {
            tx.execute(
                "INSERT INTO plugin_activations (merchant, version, activated_at_ms) VALUES (?1, ?2, ?3)",
                params![merchant.as_str(), version, at_ms],
            )?;
        }
        let info = version_info(&tx, merchant, i64::from(version))?;
        tx.commit()?;
        info.ok_or_else(|| LedgerError::corrupt("activated plugin version vanished"))
    }

    /// Re-activates the version that was active before the current one.
    pub fn plugin_rollback(
        &mut self,
        merchant: &MerchantId,
        at_ms: i64,
    ) -> Result<PluginVersionInfo, LedgerError> {
        let tx = self
            .conn_mut()
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let live: Vec<(i64, i64)> = {
            let mut stmt = tx.prepare(
                "SELECT id, version FROM plugin_activations
                 WHERE merchant = ?1 AND rolled_back_at_ms IS NULL ORDER BY id DESC LIMIT 2",
            )?;
            let rows =
                stmt.query_map(params![merchant.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let [(current, _), (_, previous)] = live[..] else {
            return Err(LedgerError::NoPluginToRollBackTo {
                merchant: merchant.clone(),
            });
        };
        tx.execute(
            "UPDATE plugin_activations SET rolled_back_at_ms = ?1 WHERE id = ?2",
            params![at_ms, current],
        )?;
        let info = version_info(&tx, merchant, previous)?;
        tx.commit()?;
        info.ok_or_else(|| LedgerError::corrupt("rolled-back plugin version vanished"))
    }

    pub fn plugin_list(
        &self,
        merchant: &MerchantId,
    ) -> Result<Vec<PluginVersionInfo>, LedgerError> {
        plugin_list(self.conn(), merchant)
    }

    pub fn plugin_active_all(&self) -> Result<Vec<(MerchantId, PluginVersionInfo)>, LedgerError> {
        plugin_active_all(self.conn())
    }

    pub fn plugin_wasm(&self, sha256: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        plugin_wasm(self.conn(), sha256)
    }

    pub fn plugin_artifact(
        &self,
        sha256: &str,
        engine_hash: &str,
    ) -> Result<Option<Vec<u8>>, LedgerError> {
        plugin_artifact(self.conn(), sha256, engine_hash)
    }
}

impl Reader {
    pub fn plugin_list(
        &self,
        merchant: &MerchantId,
    ) -> Result<Vec<PluginVersionInfo>, LedgerError> {
        plugin_list(self.conn(), merchant)
    }

    pub fn plugin_active_all(&self) -> Result<Vec<(MerchantId, PluginVersionInfo)>, LedgerError> {
        plugin_active_all(self.conn())
    }

    pub fn plugin_wasm(&self, sha256: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        plugin_wasm(self.conn(), sha256)
    }

    pub fn plugin_artifact(
        &self,
        sha256: &str,
        engine_hash: &str,
    ) -> Result<Option<Vec<u8>>, LedgerError> {
        plugin_artifact(self.conn(), sha256, engine_hash)
    }
}

fn active_version(conn: &Connection, merchant: &MerchantId) -> Result<Option<i64>, LedgerError> {
    Ok(conn
        .prepare_cached(
            "SELECT version FROM plugin_activations
             WHERE merchant = ?1 AND rolled_back_at_ms IS NULL ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![merchant.as_str()], |r| r.get(0))
        .optional()?)
}

const VERSION_COLUMNS: &str = "version, sha256, size, config, uploaded_at_ms";

fn read_version(
    merchant: &MerchantId,
    active: Option<i64>,
    r: &rusqlite::Row<'_>,
) -> Result<PluginVersionInfo, LedgerError> {
    let version: i64 = r.get(0)?;
    let config: String = r.get(3)?;
    Ok(PluginVersionInfo {
        merchant: merchant.clone(),
        version: u32::try_from(version).map_err(LedgerError::corrupt)?,
        sha256: r.get(1)?,
        size_bytes: u64::try_from(r.get::<_, i64>(2)?).map_err(LedgerError::corrupt)?,
        config: serde_json::from_str(&config).map_err(LedgerError::corrupt)?,
        uploaded_at_ms: r.get(4)?,
        active: active == Some(version),
    })
}

fn version_info(
    conn: &Connection,
    merchant: &MerchantId,
    version: i64,
) -> Result<Option<PluginVersionInfo>, LedgerError> {
    let active = active_version(conn, merchant)?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {VERSION_COLUMNS} FROM plugin_versions WHERE merchant = ?1 AND version = ?2"
    ))?;
    let mut rows = stmt.query(params![merchant.as_str(), version])?;
    match rows.next()? {
        Some(r) => Ok(Some(read_version(merchant, active, r)?)),
        None => Ok(None),
    }
}

fn plugin_list(
    conn: &Connection,
    merchant: &MerchantId,
) -> Result<Vec<PluginVersionInfo>, LedgerError> {
    let active = active_version(conn, merchant)?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {VERSION_COLUMNS} FROM plugin_versions WHERE merchant = ?1 ORDER BY version"
    ))?;
    let mut rows = stmt.query(params![merchant.as_str()])?;
    let mut versions = Vec::new();
    while let Some(r) = rows.next()? {
        versions.push(read_version(merchant, active, r)?);
    }
    Ok(versions)
}

fn plugin_active_all(
    conn: &Connection,
) -> Result<Vec<(MerchantId, PluginVersionInfo)>, LedgerError> {
    let mut stmt = conn.prepare(
        "SELECT merchant FROM plugin_activations WHERE rolled_back_at_ms IS NULL
         GROUP BY merchant ORDER BY merchant",
    )?;
    let merchants: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut active = Vec::with_capacity(merchants.len());
    for merchant in merchants {
        let merchant = MerchantId::new(merchant).map_err(LedgerError::corrupt)?;
        if let Some(version) = active_version(conn, &merchant)?
            && let Some(info) = version_info(conn, &merchant, version)?
        {
            active.push((merchant, info));
        }
    }
    Ok(active)
}

fn plugin_wasm(conn: &Connection, sha256: &str) -> Result<Option<Vec<u8>>, LedgerError> {
    Ok(conn
        .prepare_cached("SELECT wasm FROM plugin_blobs WHERE sha256 = ?1")?
        .query_row(params![sha256], |r| r.get(0))
        .optional()?)
}

fn plugin_artifact(
    conn: &Connection,
    sha256: &str,
    engine_hash: &str,
) -> Result<Option<Vec<u8>>, LedgerError> {
    Ok(conn
        .prepare_cached(
            "SELECT artifact FROM plugin_artifacts WHERE sha256 = ?1 AND engine_hash = ?2",
        )?
        .query_row(params![sha256, engine_hash], |r| r.get(0))
        .optional()?)
}
