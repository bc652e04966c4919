//! Locks that outlive a panic: one way to take them.
//!
//! A lock is poisoned when a thread panicked while holding it. Every lock in sealgate guards
//! a value that is whole after each write (a replaced `Arc`, a map entry), so a poisoned
//! lock still holds a usable value: taking it beats turning one panic into failures on every
//! later request. Sits below everything and imports nothing of the crate.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Reads `lock`, poisoned or not.
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

/// Writes `lock`, poisoned or not.
pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// Locks `mutex`, poisoned or not.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
