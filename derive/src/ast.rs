//! The derive input turned into a [`Machine`]: one [`State`] per variant, each keeping its
//! `syn` nodes so that every later error can be spanned on the exact token.

use proc_macro2::Ident;
use syn::{Data, DeriveInput, Fields, Visibility};

use crate::attr::{self, StateAttrs};
use crate::case::RenameRule;
use crate::ctxt::Ctxt;

/// A fieldless enum declared as a state machine.
pub(crate) struct Machine<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) vis: &'a Visibility,
    /// Whether the enum declares generics (an error; the fallback then emits nothing).
    pub(crate) has_generics: bool,
    pub(crate) states: Vec<State<'a>>,
}

/// One variant of the enum.
pub(crate) struct State<'a> {
    pub(crate) ident: &'a Ident,
    /// Whether the variant is fieldless, as it must be.
    pub(crate) unit: bool,
    /// The serialized name, as serde writes it.
    pub(crate) name: String,
    pub(crate) attrs: StateAttrs,
}

impl<'a> Machine<'a> {
    /// Builds the IR, reporting shape errors (not an enum, generics, fields) into `cx`.
    /// Returns `None` when the input is not an enum at all.
    pub(crate) fn from_ast(cx: &Ctxt, input: &'a DeriveInput) -> Option<Self> {
        let data = match &input.data {
            Data::Enum(data) => data,
            Data::Struct(data) => {
                cx.syn_error(syn::Error::new(
                    data.struct_token.span,
                    "#[derive(StateMachine)] works on enums only: declare each state as a fieldless enum variant",
                ));
                return None;
            }
            Data::Union(data) => {
                cx.syn_error(syn::Error::new(
                    data.union_token.span,
                    "#[derive(StateMachine)] works on enums only: declare each state as a fieldless enum variant",
                ));
                return None;
            }
        };
        let has_generics =
            !input.generics.params.is_empty() || input.generics.where_clause.is_some();
        if has_generics {
            cx.error_spanned_by(
                &input.generics,
                "#[derive(StateMachine)] does not support generic parameters: states are plain values; remove the generics",
            );
        }
        attr::reject_on_container(cx, &input.attrs);
        let rename_all = attr::serde_string(&input.attrs, "rename_all")
            .and_then(|rule| RenameRule::from_str(&rule));

        let states = data
            .variants
            .iter()
            .map(|variant| {
                if !matches!(variant.fields, Fields::Unit) {
                    cx.error_spanned_by(
                        &variant.fields,
                        format!(
                            "state `{}` has fields; states are fieldless: keep data in the run, not in its state, and remove the fields",
                            variant.ident
                        ),
                    );
                }
                let name = attr::serde_string(&variant.attrs, "rename").unwrap_or_else(|| {
                    let ident = variant.ident.to_string();
                    match rename_all {
                        Some(rule) => rule.apply(&ident),
                        None => ident,
                    }
                });
                State {
                    ident: &variant.ident,
                    unit: matches!(variant.fields, Fields::Unit),
                    name,
                    attrs: StateAttrs::from_attrs(cx, &variant.attrs),
                }
            })
            .collect();
        Some(Machine { ident: &input.ident, vis: &input.vis, has_generics, states })
    }

    /// The state with this identifier, if any.
    pub(crate) fn state(&self, ident: &Ident) -> Option<&State<'a>> {
        self.states.iter().find(|s| s.ident == ident)
    }

    /// The single `initial` state, once `valid` has checked there is exactly one.
    pub(crate) fn initial(&self) -> Option<&State<'a>> {
        let mut initials = self.states.iter().filter(|s| s.attrs.initial.is_some());
        match (initials.next(), initials.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }

    /// Every declared move, in declaration order, without duplicates.
    pub(crate) fn edges(&self) -> Vec<(&Ident, &Ident)> {
        let mut edges: Vec<(&Ident, &Ident)> = Vec::new();
        for state in &self.states {
            for target in &state.attrs.targets {
                if self.state(target).is_some() && !edges.contains(&(state.ident, target)) {
                    edges.push((state.ident, target));
                }
            }
        }
        edges
    }
}
