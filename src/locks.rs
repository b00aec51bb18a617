//! Locking a mutex whose holder panicked: the data it guards stays usable (counters, caches,
//! queues of work), and a panic elsewhere must not take every later caller down with it.

use std::sync::{Mutex, MutexGuard};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
