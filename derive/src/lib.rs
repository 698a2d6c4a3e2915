//! `#[derive(StateMachine)]` for [steadfast](https://docs.rs/steadfast).
//!
//! Use it through the `steadfast` crate, which re-exports it next to the trait it implements:
//! `use steadfast::StateMachine;`. The derive is a small compiler: `ast` turns the enum into
//! an IR that keeps every token for error spans, `attr` parses `#[machine(...)]`, `valid`
//! checks the graph (one function per rule), and `expand` writes the impl. Invalid
//! declarations never reach `expand`: every error is collected, reported together at its
//! token, and a stub impl from `fallback` keeps the rest of the user's crate compiling.

mod ast;
mod attr;
mod case;
mod ctxt;
mod expand;
mod fallback;
mod valid;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Derives `steadfast::machine::StateMachine` for a fieldless enum.
///
/// Every variant carries `#[machine(...)]`: exactly one `initial`, each non-terminal variant a
/// `to(...)` listing the states it may move to, and each end state `terminal`. The graph is
/// checked at compile time; see the `steadfast::machine` docs for the rules and the generated
/// items.
#[proc_macro_derive(StateMachine, attributes(machine))]
pub fn derive_state_machine(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}
