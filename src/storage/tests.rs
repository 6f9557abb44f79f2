//! The backend test suite, written once and run against every backend.
