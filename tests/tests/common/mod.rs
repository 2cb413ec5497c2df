//! Helpers shared by several test files (each test file is its own crate,
//! so they include this module). Not every file uses every helper.
#![allow(dead_code)]

pub mod chromium;
pub mod parley_web;
