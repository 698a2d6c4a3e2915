//! Compile-fail tests for `#[derive(StateMachine)]`: every invalid declaration is a compile
//! error, spanned on the offending token, with the message in the `.stderr` beside it.
//!
//! The `.stderr` files depend on the compiler version pinned in `rust-toolchain.toml`;
//! regenerate them with `TRYBUILD=overwrite cargo test --test compiletest` and review the diff.

#[test]
fn derive_rejects_invalid_machines() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*/*.rs");
}
