//! A journal in front of an embedded database, for stores whose writes must be durable before
//! they return and come in a steady stream (the executor's and the client's receipt stores).
//!
//! A write is durable once it is in the journal ([`Journal`], one `pwrite` and one
//! `fdatasync` per batch). The journal's records are also held in memory by [`Staged`], which
//! answers lookups until the owner's checkpoint moves them into the database in one
//! transaction: when the journal is full, and whenever the owner asks (before queries over the
//! whole store, and when it closes). Each checkpoint bumps the journal's generation, which the
//! owner records in the same transaction; opening a store recovers the records of the
//! generation it recorded and moves them into the database. Should the journal fail to write,
//! [`Staged`] has the owner checkpoint what it holds and write every later batch directly.

mod file;
mod staged;

pub use file::{CAPACITY, Journal, damaged};
pub use staged::{Record, Staged, recover};
