//! Writes the `StateMachine` impl for a validated [`Machine`].

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

use crate::ast::Machine;
use crate::ctxt::Ctxt;
use crate::{fallback, valid};

/// The whole derive: parse, validate, then expand, or report every error with a stub impl.
pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let machine = Machine::from_ast(&cx, input);
    if let Some(machine) = &machine {
        valid::check(&cx, machine);
    }
    match (cx.check(), machine) {
        (Ok(()), Some(machine)) => expand(&machine),
        (Err(errors), machine) => {
            let errors = errors.to_compile_error();
            let stub = machine.map(|m| fallback::expand(&m));
            quote! { #errors #stub }
        }
        (Ok(()), None) => unreachable!("a non-enum input always records an error"),
    }
}

fn expand(machine: &Machine<'_>) -> TokenStream {
    let ident = machine.ident;
    let vis = machine.vis;
    let initial = machine.initial().expect("validated: exactly one initial").ident;
    let states = machine.states.iter().map(|s| s.ident);
    let edges = machine.edges();
    let transitions = edges.iter().map(|(a, b)| quote!((Self::#a, Self::#b)));
    let pairs = edges.iter().map(|(a, b)| quote!((Self::#a, Self::#b)));
    let name_arms = machine.states.iter().map(|s| {
        let (variant, name) = (s.ident, &s.name);
        quote!(Self::#variant => #name)
    });
    let terminals: Vec<_> =
        machine.states.iter().filter(|s| s.attrs.terminal.is_some()).map(|s| s.ident).collect();
    let is_terminal = if terminals.is_empty() {
        quote!(false)
    } else {
        quote!(::core::matches!(self, #(Self::#terminals)|*))
    };
    let can_transition = if edges.is_empty() {
        quote!(false)
    } else {
        quote!(::core::matches!((self, to), #(#pairs)|*))
    };
    let doc = format!(
        "Whether `{ident}` may move from `self` to `to`. A `const fn`, so a move can be proven at \
         compile time: `const _: () = assert!({ident}::A.can_transition({ident}::B));`."
    );

    quote! {
        const _: () = {
            #[automatically_derived]
            impl ::steadfast::machine::StateMachine for #ident {
                const INITIAL: Self = Self::#initial;
                const STATES: &'static [Self] = &[#(Self::#states),*];
                const TRANSITIONS: &'static [(Self, Self)] = &[#(#transitions),*];

                #[inline]
                fn can_transition(self, to: Self) -> bool {
                    <#ident>::can_transition(self, to)
                }

                fn name(self) -> &'static str {
                    match self {
                        #(#name_arms,)*
                    }
                }

                #[inline]
                fn is_terminal(self) -> bool {
                    #is_terminal
                }
            }

            #[automatically_derived]
            impl #ident {
                #[doc = #doc]
                #[inline]
                #[must_use]
                #vis const fn can_transition(self, to: Self) -> bool {
                    #can_transition
                }
            }
        };
    }
}
