//! The CAMARA 1.1 facades.

pub mod profiles;
pub mod sessions;
pub mod wire;
