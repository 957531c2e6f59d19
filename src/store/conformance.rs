//! The store conformance suite: plain async functions over `&dyn Store`, run by every backend.
