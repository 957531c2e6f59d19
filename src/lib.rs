//! Suroga Stream: the control plane for booked one-to-one video sessions on Janus.
//!
//! The map of the crate:
//! - [`domain`]: pure rules (time slots, overlap, booking status, passwords); no I/O.
//! - [`store`]: the [`store::Store`] trait and its contract; SQLite (embedded) and Cosmos DB backends.
//! - [`janus`]: the Janus HTTP API client and signed client tokens.
//! - [`fleet`]: Janus hosts: which host serves a room, materialization, power control, planning.
//! - [`api`]: the HTTP API (axum): auth, validation, problem+json errors, OpenAPI.
//! - [`functions`]: the Azure Functions custom-handler contract: function.json, timer envelopes.
//! - [`sessions`]: the one layer that keeps the store and Janus in step: bookings, rooms,
//!   invitations, per-booking session rooms and credentials, opening and closing sessions.
//! - [`jobs`]: the timer jobs (`fleet-reconcile`, `purge-keys`, `deliver-webhooks`) for the host and standalone.
//! - [`webhooks`]: signed webhooks out of the store's outbox (Standard Webhooks).
//! - [`auth`]: bearer JWT verification (Entra ID RS256, local HS256) and the caller extractors.
//! - [`app`]: wiring from [`config::Config`] and the server loop; [`clock`]: time as a dependency.
//! - [`config`]: settings from the environment; [`telemetry`]: JSON logs on stdout.
//! - [`files`]: the data folder (`0700`) and the files holding secrets and data (`0600`).
//! - [`web`]: the browser app at `/app/` (embedded build of `web/`), its CSP and client settings.

pub mod allocator;
pub mod api;
pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod domain;
pub mod files;
pub mod fleet;
pub mod functions;
pub mod janus;
pub mod jobs;
pub mod sessions;
pub mod store;
pub mod telemetry;
pub mod web;
pub mod webhooks;
