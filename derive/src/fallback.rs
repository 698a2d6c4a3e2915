//! The stub impl emitted next to the errors of an invalid declaration, so the user sees our
//! message alone and not a cascade of "`StateMachine` is not implemented" errors from every
//! place that uses the enum (after thiserror's `fallback.rs`).

use proc_macro2::TokenStream;
use quote::quote;

use crate::ast::Machine;

pub(crate) fn expand(machine: &Machine<'_>) -> TokenStream {
    if machine.has_generics {
        return TokenStream::new();
    }
    let ident = machine.ident;
    let vis = machine.vis;
    let initial = match machine.states.iter().find(|s| s.unit) {
        Some(state) => {
            let variant = state.ident;
            quote!(Self::#variant)
        }
        None => quote!(::core::panic!("invalid #[derive(StateMachine)]")),
    };
    // `self` by value in a `const fn` is only allowed for types without destructors, which a
    // fieldless enum is; with fields, leave the inherent method out rather than add an error.
    let inherent = machine.states.iter().all(|s| s.unit).then(|| {
        quote! {
            #[automatically_derived]
            impl #ident {
                #[allow(missing_docs)]
                #vis const fn can_transition(self, _: Self) -> bool {
                    false
                }
            }
        }
    });
    quote! {
        const _: () = {
            #[automatically_derived]
            impl ::steadfast::machine::StateMachine for #ident {
                const INITIAL: Self = #initial;
                const STATES: &'static [Self] = &[];
                const TRANSITIONS: &'static [(Self, Self)] = &[];
                fn can_transition(self, _: Self) -> bool {
                    ::core::unreachable!("invalid #[derive(StateMachine)]")
                }
                fn name(self) -> &'static str {
                    ::core::unreachable!("invalid #[derive(StateMachine)]")
                }
                fn is_terminal(self) -> bool {
                    ::core::unreachable!("invalid #[derive(StateMachine)]")
                }
            }

            #inherent
        };
    }
}
