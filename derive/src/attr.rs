//! `#[machine(...)]` on a variant: `initial`, `terminal` and `to(A, B, ...)`.
//!
//! Keys are parsed as identifiers and matched by name so that an unknown key gets our own
//! message, spanned on that key, instead of a generic parse error.

use proc_macro2::Ident;
use syn::punctuated::Punctuated;
use syn::{Attribute, Token, parenthesized};

use crate::ctxt::Ctxt;

/// The `#[machine(...)]` keys of one variant, merged over all its `machine` attributes.
#[derive(Default)]
pub(crate) struct StateAttrs {
    /// The `initial` keyword, kept for its span.
    pub(crate) initial: Option<Ident>,
    /// The `terminal` keyword.
    pub(crate) terminal: Option<Ident>,
    /// The first `to` keyword.
    pub(crate) to: Option<Ident>,
    /// Every target of every `to(...)`, in declaration order (duplicates kept for `valid`).
    pub(crate) targets: Vec<Ident>,
    /// Whether a `machine` attribute failed to parse; graph rules then stay quiet about this
    /// state rather than report follow-on errors.
    pub(crate) malformed: bool,
}

impl StateAttrs {
    /// Parses every `#[machine(...)]` among `attrs`, reporting malformed ones into `cx`.
    pub(crate) fn from_attrs(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut out = StateAttrs::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("machine")) {
            if let Err(error) = out.parse_one(cx, attr) {
                out.malformed = true;
                cx.syn_error(error);
            }
        }
        out
    }

    fn parse_one(&mut self, cx: &Ctxt, attr: &Attribute) -> syn::Result<()> {
        let list = match &attr.meta {
            syn::Meta::List(list) => list,
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "expected `#[machine(...)]` with `initial`, `terminal` or `to(...)` inside",
                ));
            }
        };
        list.parse_args_with(|input: syn::parse::ParseStream<'_>| {
            while !input.is_empty() {
                let key: Ident = input.call(syn::ext::IdentExt::parse_any)?;
                match key.to_string().as_str() {
                    "initial" => set_flag(cx, &mut self.initial, key),
                    "terminal" => set_flag(cx, &mut self.terminal, key),
                    "to" => {
                        if !input.peek(syn::token::Paren) {
                            return Err(syn::Error::new_spanned(
                                &key,
                                "`to` lists the states this one may move to: write `to(A, B)`",
                            ));
                        }
                        let content;
                        let parens = parenthesized!(content in input);
                        let targets: Punctuated<Ident, Token![,]> =
                            content.parse_terminated(Ident::parse_target, Token![,])?;
                        if targets.is_empty() {
                            self.malformed = true;
                            cx.syn_error(syn::Error::new(
                                parens.span.join(),
                                "`to()` is empty; list at least one state, or mark the variant `terminal`",
                            ));
                        }
                        self.to.get_or_insert(key);
                        self.targets.extend(targets);
                    }
                    _ => {
                        return Err(syn::Error::new_spanned(
                            &key,
                            format!(
                                "unknown `machine` key `{key}`; expected `initial`, `terminal` or `to(...)`"
                            ),
                        ));
                    }
                }
                if input.is_empty() {
                    break;
                }
                input.parse::<Token![,]>()?;
            }
            Ok(())
        })
    }
}

/// Parses one `to(...)` target: a bare variant name, so `to(Self::A)` or `to("a")` get a
/// message that says what to write.
trait ParseTarget: Sized {
    fn parse_target(input: syn::parse::ParseStream<'_>) -> syn::Result<Self>;
}

impl ParseTarget for Ident {
    fn parse_target(input: syn::parse::ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(syn::Ident) && !input.peek2(Token![::]) {
            return input.parse();
        }
        let tt: proc_macro2::TokenTree = input.parse()?;
        Err(syn::Error::new_spanned(
            tt,
            "`to(...)` takes bare variant names of this enum, such as `to(Processing, Failed)`",
        ))
    }
}

fn set_flag(cx: &Ctxt, slot: &mut Option<Ident>, key: Ident) {
    if slot.is_some() {
        cx.error_spanned_by(&key, format!("duplicate `{key}`; remove one of them"));
    } else {
        *slot = Some(key);
    }
}

/// Rejects `#[machine(...)]` placed on the enum itself.
pub(crate) fn reject_on_container(cx: &Ctxt, attrs: &[Attribute]) {
    for attr in attrs.iter().filter(|a| a.path().is_ident("machine")) {
        cx.error_spanned_by(
            attr,
            "`#[machine(...)]` goes on the variants, not on the enum: mark one variant `initial`",
        );
    }
}

/// Reads the serde name settings: `rename_all` on the enum, `rename` on a variant. Either may
/// be `= "..."` or `(serialize = "...", ...)`. Malformed serde attributes are left for serde
/// to report.
pub(crate) fn serde_string(attrs: &[Attribute], wanted: &str) -> Option<String> {
    let mut found = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(wanted) {
                if meta.input.peek(Token![=]) {
                    let lit: syn::LitStr = meta.value()?.parse()?;
                    found = Some(lit.value());
                } else {
                    meta.parse_nested_meta(|inner| {
                        if inner.path.is_ident("serialize") {
                            let lit: syn::LitStr = inner.value()?.parse()?;
                            found = Some(lit.value());
                        } else {
                            skip(&inner)?;
                        }
                        Ok(())
                    })?;
                }
            } else {
                skip(&meta)?;
            }
            Ok(())
        });
    }
    found
}

/// Skips the value of a serde key we do not read (`= expr` or `(...)`).
fn skip(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        parenthesized!(content in meta.input);
        content.parse::<proc_macro2::TokenStream>()?;
    }
    Ok(())
}
