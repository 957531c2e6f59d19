//! Shared test support: each test crate includes what it uses.
#![allow(dead_code)]

pub mod app;
pub mod cosmos;
pub mod participant;
pub mod proxy;
