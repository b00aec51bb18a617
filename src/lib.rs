//! qod: a CAMARA Quality-On-Demand orchestrator. Requests become durable jobs; workers
//! provision, expire, release and purge sessions against a network port.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod api;
pub mod app;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod core;
pub mod dashboards;
pub mod directory;
pub mod domain;
pub mod fake_nef;
pub mod jobs;
pub mod leader;
pub mod lifecycle;
pub mod locks;
pub mod metrics;
pub mod network;
pub mod notify;
pub mod otlp;
pub mod panics;
pub mod pools;
pub mod queue;
pub mod random;
pub mod recording;
pub mod replay;
pub mod retention;
pub mod secrets;
pub mod service;
pub mod span;
pub mod store;
pub mod trace;

pub use app::{Application, Ports};
pub use config::Settings;
