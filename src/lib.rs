//! Frontdesk: an API gateway and edge proxy on Pingora.
//!
//! The request's walk (see the README's "Request lifecycle"): `proxy` takes
//! a snapshot of the compiled config (`gateway`), matches a route (`router`),
//! identifies the caller (`auth`), meters it (`ratelimit`), applies CORS and header transforms
//! (`transform`), picks a healthy target
//! (`upstream`) and records the outcome (`observe`). `config` parses the TOML
//! file; `tls` serves certificates by SNI; `admin` answers operators;
//! `server` assembles the Pingora server; `demo` holds the built-in demo
//! services. Policy rooms take plain data and return verdicts; only `proxy`,
//! `admin` and `server` know Pingora's session and services.

pub mod admin;
pub mod auth;
pub mod cache;
pub mod config;
pub mod demo;
pub mod drain;
pub mod gateway;
pub mod observe;
pub mod proxy;
pub mod ratelimit;
pub mod router;
pub mod server;
pub mod slow_clients;
pub mod tls;
pub mod transform;
pub mod upstream;
pub mod waf;
