//! The active plugin version of every merchant, swapped without a restart.
//!
//! A call takes an `Arc` of the merchant's active [`LoadedPlugin`] and runs
//! on it to the end, so activating a new version never disturbs a call in
//! flight: the old version lives until its last call drops it, and every
//! call that starts after [`PluginSet::activate`] gets the new one. Which
//! version is active is stored by the ledger; this is its in-memory mirror.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use wasmpay_domain::MerchantId;

use crate::runtime::LoadedPlugin;

/// Merchant → active plugin version.
#[derive(Debug, Default)]
pub struct PluginSet {
    // The lock is held only to clone or swap an `Arc`, never during a call.
    active: RwLock<HashMap<MerchantId, Arc<LoadedPlugin>>>,
}

impl PluginSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `plugin` the merchant's active version; returns the one it
    /// replaced, which calls already running keep using.
    ///
    /// # Panics
    /// If `plugin` belongs to another merchant: routing one merchant's
    /// payments through another's rules is a bug, not an input error.
    pub fn activate(
        &self,
        merchant: MerchantId,
        plugin: Arc<LoadedPlugin>,
    ) -> Option<Arc<LoadedPlugin>> {
        assert_eq!(
            plugin.merchant(),
            &merchant,
            "a merchant can only activate its own plugin"
        );
        // A panic while the lock is held cannot leave the map half-updated
        // (insert and remove are atomic with respect to it), so a poisoned
        // lock is still a consistent map.
        let mut active = self.active.write().unwrap_or_else(PoisonError::into_inner);
        active.insert(merchant, plugin)
    }

    /// The merchant's active version, if any.
    pub fn get(&self, merchant: &MerchantId) -> Option<Arc<LoadedPlugin>> {
        let active = self.active.read().unwrap_or_else(PoisonError::into_inner);
        active.get(merchant).cloned()
    }

    /// Deactivates the merchant's plugin; calls in flight finish on it.
    pub fn remove(&self, merchant: &MerchantId) -> Option<Arc<LoadedPlugin>> {
        let mut active = self.active.write().unwrap_or_else(PoisonError::into_inner);
        active.remove(merchant)
    }

    /// How many merchants have an active plugin.
    pub fn len(&self) -> usize {
        self.active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
