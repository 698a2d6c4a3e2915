//! serde's `rename_all` rules, applied to variant names, so that `StateMachine::name` returns
//! exactly the string serde writes.

/// A `#[serde(rename_all = "...")]` rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RenameRule {
    Lower,
    Upper,
    Pascal,
    Camel,
    Snake,
    ScreamingSnake,
    Kebab,
    ScreamingKebab,
}

impl RenameRule {
    /// Parses a rule as serde spells it; `None` for an unknown rule (serde reports those).
    pub(crate) fn from_str(rule: &str) -> Option<Self> {
        Some(match rule {
            "lowercase" => RenameRule::Lower,
            "UPPERCASE" => RenameRule::Upper,
            "PascalCase" => RenameRule::Pascal,
            "camelCase" => RenameRule::Camel,
            "snake_case" => RenameRule::Snake,
            "SCREAMING_SNAKE_CASE" => RenameRule::ScreamingSnake,
            "kebab-case" => RenameRule::Kebab,
            "SCREAMING-KEBAB-CASE" => RenameRule::ScreamingKebab,
            _ => return None,
        })
    }

    /// Renames a `PascalCase` variant identifier the way serde does.
    pub(crate) fn apply(self, variant: &str) -> String {
        match self {
            RenameRule::Lower => variant.to_ascii_lowercase(),
            RenameRule::Upper => variant.to_ascii_uppercase(),
            RenameRule::Pascal => variant.to_owned(),
            RenameRule::Camel => {
                let mut chars = variant.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
                    None => String::new(),
                }
            }
            RenameRule::Snake => snake(variant),
            RenameRule::ScreamingSnake => snake(variant).to_ascii_uppercase(),
            RenameRule::Kebab => snake(variant).replace('_', "-"),
            RenameRule::ScreamingKebab => snake(variant).to_ascii_uppercase().replace('_', "-"),
        }
    }
}

fn snake(variant: &str) -> String {
    let mut out = String::with_capacity(variant.len() + 4);
    for (i, ch) in variant.char_indices() {
        if i > 0 && ch.is_uppercase() {
            out.push('_');
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::RenameRule::{self, *};

    #[test]
    fn matches_serde_for_every_rule() {
        let cases: &[(RenameRule, &str)] = &[
            (Lower, "waitingexternal"),
            (Upper, "WAITINGEXTERNAL"),
            (Pascal, "WaitingExternal"),
            (Camel, "waitingExternal"),
            (Snake, "waiting_external"),
            (ScreamingSnake, "WAITING_EXTERNAL"),
            (Kebab, "waiting-external"),
            (ScreamingKebab, "WAITING-EXTERNAL"),
        ];
        for &(rule, expected) in cases {
            assert_eq!(rule.apply("WaitingExternal"), expected, "{rule:?}");
        }
        assert_eq!(Snake.apply("A"), "a");
        assert_eq!(RenameRule::from_str("snake_case"), Some(Snake));
        assert_eq!(RenameRule::from_str("Snake_Case"), None);
    }
}
